// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Every path netd uses by default, in one place. Each has a flag and an
//! environment variable to override it.

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
