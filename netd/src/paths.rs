// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Every path netd uses, in one place: the defaults (each has a flag and
//! an environment variable to override it) and the layout of netd's bpffs
//! directory, which the agent, `netd down` and the tests share.

use std::path::{Path, PathBuf};

/// Where the agent keeps its state (`state.json`) and its lock.
pub const STATE_DIR: &str = "/var/lib/netd";
/// netd's directory on a bpffs: pinned maps and links live below it.
pub const BPFFS_DIR: &str = "/sys/fs/bpf/netd";
/// The agent's API socket.
pub const SOCKET: &str = "/run/netd/netd.sock";
/// Where network namespaces given by name live (as `ip netns` makes them).
pub const NETNS_DIR: &str = "/run/netns";

/// The state file inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// Port changes since `state.json` was written (see `agent::state`).
pub const JOURNAL_FILE: &str = "state.journal";
/// The lock file inside the state directory: one agent per state.
pub const LOCK_FILE: &str = "agent.lock";

/// The pinned links, in netd's bpffs directory. Maps are pinned in the
/// directory itself, each under its name (`netd_common::map_names`).
pub const LINKS_DIR: &str = "links";

/// Where map `name` (`netd_common::map_names::CT`, ...) is pinned.
pub fn map_pin(bpffs: &Path, name: &str) -> PathBuf {
    bpffs.join(name)
}

/// The directory of the pinned links.
pub fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join(LINKS_DIR)
}

/// Where link `name` ([`endpoint_link`], [`uplink_link`], [`cgroup_link`])
/// is pinned.
pub fn link_pin(bpffs: &Path, name: &str) -> PathBuf {
    links_dir(bpffs).join(name)
}

/// The link of an endpoint's program on its host veth.
pub fn endpoint_link(veth: &str) -> String {
    format!("endpoint-{veth}")
}

/// The link of the program on LAN endpoint device `ifindex` (unique: netd
/// chooses LAN devices' ifindexes).
pub fn lan_endpoint_link(ifindex: u32) -> String {
    format!("endpoint-lan-{ifindex}")
}

/// The link of an uplink's program of `kind` (`tc`, `xdp`).
pub fn uplink_link(kind: &str, uplink: &str) -> String {
    format!("uplink-{kind}-{uplink}")
}

/// The link of cgroup socket program `program`.
pub fn cgroup_link(program: &str) -> String {
    format!("cgroup-{program}")
}
