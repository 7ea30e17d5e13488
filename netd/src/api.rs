// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's HTTP API: JSON bodies over a Unix socket, under versioned
//! paths. Shared by the server (agent) and the client (CLI); documented in
//! docs/cli.md.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// Every path starts with this.
pub const PREFIX: &str = "/v1";

/// The name of the network the agent's flags describe (as Docker names
/// its default network `bridge`).
pub const DEFAULT_NETWORK: &str = "netd";

/// `POST /v1/endpoints`: attach a namespace.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// A name under /run/netns, or a path to a namespace file.
    pub netns: String,
    /// The address to assign (default: the lowest free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The MAC address (default: derived from the IP, as Docker does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The interface name inside the namespace (default `eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The endpoint's name (default: the namespace's name, or
    /// `endpoint-<short id>` for a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ports to publish, as Docker's `-p` specs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Who attached it: `cni` or `docker` for the runtimes' plugins, so
    /// that their garbage collection touches only their own endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The runtime's ID of the container (CNI's `CNI_CONTAINERID`), when
    /// the endpoint's name is another (a Kubernetes pod's `NAMESPACE/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The network to attach to, by name or ID (default: the agent's
    /// default network, `netd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// More names the endpoint answers to in DNS, on its network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// `POST /v1/ports` (publish) and `POST /v1/ports/unpublish`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsRequest {
    /// The endpoint: its namespace (name or path) or its name.
    pub target: String,
    /// Docker `-p` specs.
    pub specs: Vec<String>,
    /// The network of the target's endpoint, when the target is on
    /// several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `POST /v1/networks`: create a network, with Docker's options.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreateRequest {
    pub name: String,
    /// Default: the next free pool, as Docker allocates them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Default: the subnet's first host address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `bridge` (the default), `macvlan` or `ipvlan`.
    #[serde(default = "bridge_driver")]
    pub driver: String,
    /// Endpoints get addresses from this part of the subnet only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// `NAME=IP`: addresses no endpoint gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux_addresses: Vec<String>,
    #[serde(default)]
    pub internal: bool,
    /// `KEY=VALUE`, the driver's options (Docker's names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// When a network of this name exists: answer it if it has every
    /// setting given (a runtime's configuration naming it), else refuse
    /// naming the first that differs. Otherwise an existing name is an
    /// error, as in Docker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exist_ok: bool,
}

fn bridge_driver() -> String {
    "bridge".to_owned()
}

/// One network, as `netd network ls` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Empty for a LAN network, which has its `parent` instead.
    pub bridge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub internal: bool,
    pub endpoints: usize,
    pub created: String,
}

/// A published mapping, with its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub endpoint: String,
    pub endpoint_id: String,
    /// The endpoint's network.
    #[serde(default)]
    pub network: String,
    pub proto: String,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    pub container_port_end: u16,
    /// Docker's form: `0.0.0.0:8080->80/tcp`.
    pub display: String,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

/// `POST /v1/ports` and `POST /v1/ports/unpublish` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortsResponse {
    pub ports: Vec<Port>,
}

/// One translated flow, as `netd conntrack` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flow {
    pub proto: String,
    /// The original direction, as it arrived: source and destination.
    pub src: String,
    pub dst: String,
    /// Where the destination was translated to (or the source, for flows
    /// netd originated).
    pub translated: String,
    pub state: String,
    pub age_secs: u64,
    pub expires_in_secs: u64,
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// The endpoint whose published port the flow uses, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `GET /v1/stats`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Drops by reason (stable names).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Packets seen per hook, by protocol.
    pub hooks: std::collections::BTreeMap<String, HookStats>,
    pub ports: Vec<Port>,
    /// What each LAN endpoint (macvlan, ipvlan) sent, by endpoint name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointCounters>,
    pub conntrack_entries: u64,
    pub conntrack_max: u32,
    pub xdp: bool,
    /// Each pinned map's capacity and kernel memory: what the datapath can
    /// ever take, however much traffic comes.
    pub maps: Vec<MapMemory>,
    /// The agent's own memory.
    #[serde(default)]
    pub agent: AgentMemory,
}

/// What one LAN endpoint sent, and how much of it was dropped (spoofed, or
/// against its network's policy).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EndpointCounters {
    pub name: String,
    pub network: String,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
}

/// The agent process's memory: `heap_bytes` is what is allocated now (it
/// returns to its level when the flows and endpoints that needed it are
/// gone; growth is a leak), `rss_bytes` what the kernel counts resident
/// (the allocator may keep freed memory there).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentMemory {
    pub heap_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapMemory {
    pub name: String,
    pub max_entries: u32,
    pub memory_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookStats {
    pub ipv4_tcp: u64,
    pub ipv4_udp: u64,
    pub ipv4_icmp: u64,
    pub ipv4_other: u64,
    pub ipv6: u64,
    pub arp: u64,
    pub other: u64,
    pub bytes: u64,
}

/// `POST /v1/detach`: detach whatever is attached for a namespace.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    pub netns: String,
    /// Only the endpoint on this network (default: every endpoint of the
    /// namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `POST /v1/rename`: a new name for a container's endpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// The endpoint, by name or ID.
    pub target: String,
    pub name: String,
}

/// An attached namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub name: String,
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: MacAddr,
    pub created: String,
    /// Published ports in Docker's form.
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The network's name.
    #[serde(default)]
    pub network: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Where the endpoint's names are answered (absent when the agent
    /// serves no DNS on its network), in CNI's form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<EndpointDns>,
}

/// The resolver a container is told to use, as a resolv.conf says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDns {
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
}

/// `POST /v1/detach`'s answer: what was detached (nothing, if the namespace
/// had no endpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachResponse {
    pub detached: Vec<Endpoint>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub network: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub uplinks: Vec<String>,
    pub endpoints: usize,
    pub state_dir: String,
    pub bpffs: String,
    /// The running kernel's release.
    #[serde(default)]
    pub kernel: String,
    /// How the TC programs are attached: `tcx` or `netlink`.
    #[serde(default)]
    pub tc_attach: String,
    /// How packets enter containers: `peer` or `egress`.
    #[serde(default)]
    pub redirect: String,
    /// Whether the cgroup socket programs serve host-local access.
    #[serde(default)]
    pub host_local: bool,
    /// What this kernel lacks and what netd does instead, one line each.
    #[serde(default)]
    pub degraded: Vec<String>,
    /// The state directory is full: additions are refused, reads and
    /// removals served, until a write succeeds again.
    #[serde(default)]
    pub state_full: bool,
    /// The last write to the state directory that failed, one line, until
    /// the journal could be folded into `state.json` again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
    /// With `--xdp`: how XDP runs on each uplink, `native` (in the
    /// driver) or `generic` (the driver has no XDP: after the skb is built).
    #[serde(default)]
    pub xdp: std::collections::BTreeMap<String, String>,
    /// Where names are served and forwarded; absent: no DNS (`--no-dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// Each part of the datapath as it is now: the pinned maps, each
    /// uplink's and each endpoint's attachment, host-local access. Empty
    /// from an agent older than the list.
    #[serde(default)]
    pub health: Vec<Health>,
}

impl Status {
    /// The parts that are not [`HealthState::Ok`].
    pub fn unhealthy(&self) -> impl Iterator<Item = &Health> {
        self.health.iter().filter(|h| h.state != HealthState::Ok)
    }
}

/// One part of the agent, as `netd status` checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Which part: `maps`, `uplink up0 tc`, `uplink up0 xdp`, `host-local`,
    /// `endpoint NAME (NETWORK)`.
    pub name: String,
    pub state: HealthState,
    /// What was found, one line.
    pub detail: String,
    /// What to do about it, when the part is not ok and something does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Ok,
    /// It works, with less: a fallback, or what a restart needs is gone.
    Degraded,
    /// It does not work: traffic through it is not handled by netd.
    Down,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// `POST /v1/down`'s answer, also printed by a local `netd down`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DownReport {
    /// One line per object removed.
    pub removed: Vec<String>,
    /// One line per object that could not be removed.
    pub errors: Vec<String>,
}

/// The body of every error answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    /// A stable, machine-readable class: `invalid_argument`, `not_found`,
    /// `conflict`, `exhausted`, `internal`.
    pub kind: String,
    /// What fixes it, naming the CLI's flag or command, where one does.
    /// Absent otherwise, and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// One element of `GET /v1/network`, shaped like `docker network inspect`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: ConfigFrom,
    pub config_only: bool,
    pub containers: std::collections::BTreeMap<String, ContainerInspect>,
    pub options: std::collections::BTreeMap<String, String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Docker's configuration networks (`--config-from`): netd has none.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFrom {
    pub network: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    /// `null` for Docker's default bridge, `{}` or the options given for a
    /// user-defined network.
    pub options: Option<std::collections::BTreeMap<String, String>>,
    pub config: Vec<IpamConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    pub subnet: Ipv4Net,
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    pub gateway: Ipv4Addr,
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub mac_address: MacAddr,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
    /// Who attached it (not in Docker's output): `cni` or `docker` for a
    /// runtime's plugin, `netd` for the CLI and the API.
    pub owner: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint travels in the error body and back; a body without one (an
    /// older agent's) still reads, and none is written when there is none,
    /// so an older client sees the body it knows.
    #[test]
    fn error_bodies_round_trip_with_and_without_a_hint() {
        let with = ErrorBody {
            message: "10.0.0.5 is already assigned to endpoint web".to_owned(),
            kind: "conflict".to_owned(),
            hint: Some("choose another address with --ip".to_owned()),
        };
        let text = serde_json::to_string(&with).expect("JSON");
        let back: ErrorBody = serde_json::from_str(&text).expect("read back");
        assert_eq!(back.hint, with.hint);
        assert_eq!((back.message, back.kind), (with.message, with.kind));

        let without = ErrorBody {
            message: "no endpoint named x".to_owned(),
            kind: "not_found".to_owned(),
            hint: None,
        };
        let text = serde_json::to_string(&without).expect("JSON");
        assert!(!text.contains("hint"), "{text}");
        let old: ErrorBody =
            serde_json::from_str(r#"{"message":"m","kind":"internal"}"#).expect("an old body");
        assert_eq!(old.hint, None);
    }

    /// A part's state is written in lowercase; a status without `health`
    /// (an older agent's) reads as no part at all.
    #[test]
    fn health_states_are_lowercase_and_optional() {
        let part = Health {
            name: "maps".to_owned(),
            state: HealthState::Degraded,
            detail: "d".to_owned(),
            hint: None,
        };
        let value = serde_json::to_value(&part).expect("JSON");
        assert_eq!(value["state"], "degraded");
        assert!(value.get("hint").is_none());
        let back: Health = serde_json::from_value(value).expect("read back");
        assert_eq!(back, part);
        let old = serde_json::json!({
            "version": "0.1.0", "pid": 1, "network": "netd", "bridge": "netd0",
            "subnet": "172.17.0.0/16", "gateway": "172.17.0.1", "mtu": 1500,
            "uplinks": [], "endpoints": 0, "state_dir": "/var/lib/netd",
            "bpffs": "/sys/fs/bpf/netd"
        });
        let status: Status = serde_json::from_value(old).expect("an old status");
        assert!(status.health.is_empty());
        assert_eq!(status.unhealthy().count(), 0);
    }
}

/// One line of `GET /v1/monitor`'s stream (JSON, one event per line), and
/// of `netd monitor --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MonitorEvent {
    Drop(MonitorDrop),
    Flow(MonitorFlow),
    Lost(MonitorLost),
}

/// A packet a program dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorDrop {
    /// When, RFC 3339.
    pub time: String,
    /// The drop reason, as `netd stats` names it.
    pub reason: String,
    /// The program that dropped it (`endpoint_tc`, `uplink_xdp`, ...).
    pub hook: String,
    /// The interface it arrived on (for a LAN endpoint's hook, inside the
    /// container's namespace).
    pub ifindex: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The endpoint it came from or went to, when netd knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its length on the wire.
    pub len: u32,
    /// "tcp", "udp", "icmp", a protocol number, or what the frame is when
    /// it is not IPv4 ("arp", "ipv6", "0x88cc").
    pub protocol: String,
    /// `ADDR[:PORT]`, absent when the frame is not IPv4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// TCP flags, space-separated ("SYN ACK").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// A later IPv4 fragment (no ports).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fragment: bool,
    /// The packet's first bytes (up to 128) in hex, with `verbose`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

/// A flow conntrack created or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorFlow {
    pub time: String,
    /// "new" or "closed".
    pub event: String,
    /// The conntrack kind (`published`, `masquerade`, ...).
    pub kind: String,
    pub protocol: String,
    /// The first packet as it arrived: `ADDR:PORT`.
    pub src: String,
    pub dst: String,
    /// What the packet became after translation (equal to `src`/`dst`
    /// for a flow netd does not translate).
    pub translated_src: String,
    pub translated_dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Why a flow was closed: `expired` (idle past its timeout), `stale`
    /// (its mapping or endpoint is gone) or `evicted` (the table was
    /// under pressure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Events that could not be shown since the last such line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorLost {
    pub time: String,
    /// Refused in the kernel by the rate limit.
    pub rate: u64,
    /// Refused in the kernel because the ring was full.
    pub full: u64,
    /// Dropped by the agent because this monitor read too slowly.
    pub slow: u64,
}

impl MonitorLost {
    pub fn total(&self) -> u64 {
        self.rate + self.full + self.slow
    }
}
