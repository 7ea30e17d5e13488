// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What can go wrong in an agent operation, each with a specific message and
//! a stable class the API reports.

use std::{io, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use thiserror::Error;

use crate::{
    agent::state::StateError,
    mac::MacError,
    netlink::{ConnectError, NetlinkError},
    netns::NetnsError,
};

/// The Linux bridge's port limit: port numbers are 10 bits and 0 is
/// reserved (BR_MAX_PORTS in net/bridge/br_private.h).
pub const BRIDGE_MAX_PORTS: usize = 1023;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("invalid IP address {0:?}")]
    IpSyntax(String),
    #[error("{ip} is outside the network's subnet {subnet}")]
    IpOutsideSubnet { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("{ip} is the network's gateway address")]
    IpIsGateway { ip: Ipv4Addr },
    #[error("{ip} is the {which} address of the subnet {subnet}")]
    IpReserved {
        ip: Ipv4Addr,
        which: &'static str,
        subnet: Ipv4Net,
    },
    #[error("{ip} is already assigned to endpoint {name}")]
    IpTaken { ip: Ipv4Addr, name: String },
    #[error("{ip} is reserved: it is {by}")]
    IpHeld { ip: Ipv4Addr, by: String },
    #[error("the subnet {subnet} is full: no free address left")]
    SubnetFull { subnet: Ipv4Net },
    #[error(transparent)]
    Mac(#[from] MacError),
    #[error("invalid interface name {name:?}: {why}")]
    Ifname { name: String, why: &'static str },
    #[error("invalid endpoint name {name:?}: {why}")]
    Name { name: String, why: String },
    #[error("invalid container ID {id:?}: {why}")]
    ContainerId { id: String, why: String },
    #[error("endpoint {name} is broken: {what}")]
    Broken { name: String, what: String },
    #[error("invalid owner {0:?}: use up to 32 lowercase letters, digits and '-'")]
    Owner(String),
    #[error("the name {name} is already used by endpoint {id}")]
    NameTaken { name: String, id: String },
    #[error("the alias {alias} is already a name of endpoint {holder} on network {network}")]
    AliasTaken {
        alias: String,
        holder: String,
        network: String,
    },
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error(
        "{name} names two containers (endpoints {first} and {second}, on different networks): rename by endpoint ID"
    )]
    NameAmbiguous {
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "invalid alias {alias:?}: use DNS labels (letters, digits, '-' and '_', at most 63 bytes each) joined by '.'"
    )]
    Alias { alias: String },
    #[error("namespace {netns} is already attached to network {network} as endpoint {name} ({ip})")]
    AlreadyAttached {
        netns: String,
        name: String,
        ip: Ipv4Addr,
        network: String,
    },
    #[error("no endpoint named {0}")]
    UnknownEndpoint(String),
    #[error("endpoint {0} exists already")]
    EndpointExists(String),
    #[error("invalid network name {name:?}: {why}")]
    NetworkName { name: String, why: &'static str },
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    #[error("no such network: {0}")]
    UnknownNetwork(String),
    #[error("network {name} exists with {setting} {existing}, not {given}")]
    NetworkContradiction {
        name: String,
        setting: &'static str,
        given: String,
        existing: String,
    },
    #[error("network {name} has active endpoints ({endpoints}): detach them first")]
    NetworkInUse { name: String, endpoints: String },
    #[error("{0} is the default network: it goes only with the agent (`netd down`)")]
    DefaultNetwork(String),
    #[error("no network left: the datapath holds {0}")]
    TooManyNetworks(u32),
    #[error("invalid subnet {0:?}: expected ADDRESS/PREFIX, e.g. 10.89.0.0/24")]
    SubnetSyntax(String),
    #[error("invalid label {0:?}: expected KEY=VALUE")]
    Label(String),
    #[error("a link named {0} exists already: pick another bridge name")]
    BridgeExists(String),
    #[error("{target} has endpoints on networks {networks}: name one with --network")]
    AmbiguousTarget { target: String, networks: String },
    #[error("bridge {bridge} is full: Linux allows at most {BRIDGE_MAX_PORTS} ports on a bridge")]
    BridgeFull { bridge: String },
    #[error("{path} exists inside the namespace already: interface {ifname} is taken")]
    IfnameTaken { path: PathBuf, ifname: String },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("invalid bridge name {name:?}: {why}")]
    BridgeName { name: String, why: &'static str },
    #[error("{name} exists and is not a bridge (it is a {kind} link)")]
    NotABridge { name: String, kind: String },
    #[error("subnet {subnet} overlaps {existing}, already in use in this namespace")]
    SubnetOverlap { subnet: Ipv4Net, existing: Ipv4Net },
    #[error(
        "no free subnet: every Docker default pool (172.17-31.0.0/16, 192.168.0.0/16 in /20s) overlaps a route or address; pass --subnet"
    )]
    NoFreeSubnet,
    #[error("gateway {gateway} is not a host address of the subnet {subnet}")]
    GatewayOutsideSubnet { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("invalid MTU {0}: it must be between 68 and 65535")]
    Mtu(u32),
    #[error("invalid --ct-max {0}: a flow takes two entries")]
    CtMax(u32),
    #[error(
        "invalid --ct-timeout {0:?}: expected STATE=SECONDS (SECONDS > 0) with STATE one of syn_sent, syn_recv, established, fin_wait, time_wait, close, udp, udp_stream"
    )]
    CtTimeout(String),
    #[error("{feature} needs Linux {since} or later; this kernel is {release}")]
    KernelLacks {
        feature: &'static str,
        since: crate::datapath::features::KernelVersion,
        release: String,
    },
    #[error("uplink {0} does not exist in this namespace")]
    UnknownUplink(String),
    #[error(
        "--{flag} {given} differs from the saved network's {saved} in {path}; run `netd down` to start over with new settings"
    )]
    ConfigMismatch {
        flag: &'static str,
        given: String,
        saved: String,
        path: PathBuf,
    },
    #[error("another netd agent is serving {0}")]
    SocketInUse(PathBuf),
    #[error("another netd agent holds {0}")]
    Locked(PathBuf),
    #[error(transparent)]
    Spec(#[from] crate::portspec::SpecError),
    #[error("host address {0} is not an address of this host")]
    HostIpNotLocal(Ipv4Addr),
    #[error(
        "the network is internal: nothing reaches it from outside, so no port can be published"
    )]
    InternalNetwork,
    #[error(
        "unsupported network option {0:?} (supported: com.docker.network.bridge.name, .enable_icc, .enable_ip_masquerade, .host_binding_ipv4, com.docker.network.driver.mtu)"
    )]
    UnknownOption(String),
    #[error("invalid value {value:?} for network option {key}: {why}")]
    OptionValue {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("invalid --masquerade-ports {0:?}: expected FIRST-LAST within 1-65535")]
    MasqueradePorts(String),
    #[error("--cgroup {0} is not a cgroup v2 directory")]
    NotACgroup(PathBuf),
    #[error("{port} is already published by endpoint {holder} ({display})")]
    PortTaken {
        port: String,
        holder: String,
        display: String,
    },
    #[error("{port} is in use on the host: a process has {listener} bound")]
    PortInUse { port: String, listener: String },
    #[error(
        "no free host port range of {len} port(s) for {spec} in {first}-{last} (ip_local_port_range)"
    )]
    NoEphemeralPorts {
        spec: String,
        len: u32,
        first: u16,
        last: u16,
    },
    #[error("no free mapping slot: {0} mappings are published, the most the datapath holds")]
    TooManyMappings(usize),
    #[error("no endpoint for {0}: it is neither an attached namespace nor an endpoint name")]
    UnknownTarget(String),
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    #[error(transparent)]
    Lan(#[from] super::lan::LanError),
    #[error("invalid --ip-range {range}: it is not inside the subnet {subnet}")]
    IpRange { range: Ipv4Net, subnet: Ipv4Net },
    #[error("invalid --aux-address {0:?}: expected NAME=IP, the IP inside the subnet")]
    AuxAddress(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The stable class of an error, as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    Conflict,
    Exhausted,
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Exhausted => "exhausted",
            Self::Internal => "internal",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::NotFound => 404,
            Self::Conflict | Self::Exhausted => 409,
            Self::Internal => 500,
        }
    }
}

impl AgentError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Netns(NetnsError::NotFound { .. })
            | Self::UnknownNetwork(_)
            | Self::UnknownEndpoint(_)
            | Self::UnknownTarget(_) => ErrorKind::NotFound,
            Self::Spec(_)
            | Self::HostIpNotLocal(_)
            | Self::InternalNetwork
            | Self::UnknownOption(_)
            | Self::OptionValue { .. }
            | Self::MasqueradePorts(_)
            | Self::NetworkName { .. }
            | Self::SubnetSyntax(_)
            | Self::Label(_)
            | Self::AmbiguousTarget { .. }
            | Self::DefaultNetwork(_)
            | Self::NotACgroup(_) => ErrorKind::InvalidArgument,
            Self::PortTaken { .. } | Self::PortInUse { .. } => ErrorKind::Conflict,
            Self::NoEphemeralPorts { .. }
            | Self::TooManyMappings(_)
            | Self::State(StateError::Full { .. }) => ErrorKind::Exhausted,
            Self::Datapath(_) | Self::Dns(_) => ErrorKind::Internal,
            Self::Lan(err) => err.kind(),
            Self::IpRange { .. } | Self::AuxAddress(_) => ErrorKind::InvalidArgument,
            Self::Netns(NetnsError::NotNetns { .. })
            | Self::IpSyntax(_)
            | Self::IpOutsideSubnet { .. }
            | Self::IpIsGateway { .. }
            | Self::IpReserved { .. }
            | Self::Mac(_)
            | Self::Ifname { .. }
            | Self::Name { .. }
            | Self::Alias { .. }
            | Self::ContainerId { .. }
            | Self::Owner(_)
            | Self::BridgeName { .. }
            | Self::GatewayOutsideSubnet { .. }
            | Self::Mtu(_)
            | Self::CtMax(_)
            | Self::CtTimeout(_)
            | Self::UnknownUplink(_)
            | Self::KernelLacks { .. }
            | Self::ConfigMismatch { .. }
            | Self::NetworkContradiction { .. } => ErrorKind::InvalidArgument,
            Self::IpTaken { .. }
            | Self::IpHeld { .. }
            | Self::NameTaken { .. }
            | Self::AliasTaken { .. }
            | Self::NameAmbiguous { .. }
            | Self::Broken { .. }
            | Self::AlreadyAttached { .. }
            | Self::EndpointExists(_)
            | Self::NetworkExists(_)
            | Self::NetworkInUse { .. }
            | Self::BridgeExists(_)
            | Self::IfnameTaken { .. }
            | Self::NotABridge { .. }
            | Self::SubnetOverlap { .. }
            | Self::SocketInUse(_)
            | Self::Locked(_) => ErrorKind::Conflict,
            Self::SubnetFull { .. }
            | Self::BridgeFull { .. }
            | Self::NoFreeSubnet
            | Self::TooManyNetworks(_) => ErrorKind::Exhausted,
            Self::Netns(_)
            | Self::Netlink(_)
            | Self::Connect(_)
            | Self::State(_)
            | Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

impl AgentError {
    /// What fixes the refusal, where one thing does: the flag or the
    /// command to use instead, for a person at the CLI. The API carries it
    /// apart from the message (`hint` in the error body), so that the
    /// message stays the fact and runtimes that relay it (CNI, Docker)
    /// are not told about flags they do not have.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Netns(NetnsError::NotFound { given, .. }) => format!(
                "create it first (`ip netns add {given}`), or give the path of a namespace file (/proc/PID/ns/net)"
            ),
            Self::IpOutsideSubnet { subnet, .. } => {
                format!("choose an address of {subnet} with --ip, or omit --ip to get a free one")
            }
            Self::IpIsGateway { .. }
            | Self::IpReserved { .. }
            | Self::IpTaken { .. }
            | Self::IpHeld { .. } => {
                "choose another address with --ip, or omit --ip to get a free one".to_owned()
            }
            Self::SubnetFull { .. } => "make a network with a larger --subnet (`netd network create NAME --subnet CIDR`) and attach to it with --network".to_owned(),
            Self::Mac(_) => "omit --mac to get the one derived from the address".to_owned(),
            Self::Ifname { .. } => "omit --ifname to get the first free ethN".to_owned(),
            Self::IfnameTaken { .. } => {
                "choose another with --ifname, or omit it to get the first free ethN".to_owned()
            }
            Self::Broken { name, .. } => format!(
                "detach it (`netd detach --name {name}`) and attach its namespace again"
            ),
            Self::NameTaken { .. } => "choose another name (--name of `netd attach`, NAME of `netd rename`); `netd ps` shows the names in use".to_owned(),
            Self::AliasTaken { .. } => "choose another --alias; `netd ps` shows the names in use".to_owned(),
            Self::NameAmbiguous { .. } => "`netd ps` shows the endpoints' IDs".to_owned(),
            Self::AlreadyAttached {
                netns, network, ..
            } => format!(
                "attach it to another network with --network, or detach it first (`netd detach {netns} --network {network}`)"
            ),
            Self::UnknownEndpoint(_) | Self::UnknownTarget(_) => {
                "`netd ps` lists the endpoints".to_owned()
            }
            Self::UnknownNetwork(_) => "`netd network ls` lists the networks".to_owned(),
            Self::NetworkExists(name) => format!(
                "choose another name, or remove it first (`netd network rm {name}`)"
            ),
            Self::NetworkContradiction { name, .. } => format!(
                "`netd network inspect {name}` shows its settings; remove it first (`netd network rm {name}`) to make it anew"
            ),
            Self::NetworkInUse { name, .. } => format!(
                "`netd network inspect {name}` lists them (Containers); `netd detach --name ID` detaches one"
            ),
            Self::TooManyNetworks(_) => {
                "remove networks no longer used (`netd network rm NAME`)".to_owned()
            }
            Self::BridgeExists(_) => {
                "name another with -o com.docker.network.bridge.name=NAME, or omit it".to_owned()
            }
            Self::BridgeFull { .. } => "make another network (`netd network create NAME`) and attach to it with --network".to_owned(),
            Self::SubnetOverlap { .. } => {
                "choose another --subnet, or omit --subnet to get a free one".to_owned()
            }
            Self::GatewayOutsideSubnet { subnet, .. } => format!(
                "choose a --gateway inside {subnet}, or omit --gateway to get its first host address"
            ),
            Self::HostIpNotLocal(_) => "use an address of this host (`ip -4 addr`), or omit HOSTIP to publish on all of them".to_owned(),
            Self::InternalNetwork => "attach the container to a network that is not --internal as well, and publish there with --network".to_owned(),
            Self::PortTaken { holder, .. } => format!(
                "`netd ports` shows who holds it; unpublish it (`netd unpublish SPEC {holder}`) or choose another host port"
            ),
            Self::PortInUse { .. } => {
                "choose another host port, or stop the process that has it bound".to_owned()
            }
            Self::NoEphemeralPorts { .. } => "give the host port (HOSTPORT:CTRPORT), or unpublish ephemeral ports no longer used (`netd ports` lists them)".to_owned(),
            Self::TooManyMappings(_) => {
                "unpublish ports no longer used (`netd ports` lists them)".to_owned()
            }
            Self::State(StateError::Full { dir, .. }) => format!(
                "free space on the filesystem of {}; unpublish and detach still work",
                dir.display()
            ),
            Self::SocketInUse(_) | Self::Locked(_) => "stop the other agent, or give this one its own --state-dir, --socket and --bpffs".to_owned(),
            Self::UnknownUplink(_) => {
                "`ip link` lists the interfaces; name one with --uplink".to_owned()
            }
            Self::NotACgroup(_) => "give a cgroup v2 directory (one with cgroup.procs), or --cgroup none for no host-local access".to_owned(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("subnet")
    }

    /// The refusals a person meets most each say what to do instead, and
    /// the flags and commands they name are the CLI's.
    #[test]
    fn refusals_with_a_fix_carry_a_hint() {
        let ip: Ipv4Addr = "10.0.0.5".parse().expect("ip");
        let cases: Vec<(AgentError, &str)> = vec![
            (
                AgentError::IpTaken {
                    ip,
                    name: "web".to_owned(),
                },
                "choose another address with --ip, or omit --ip to get a free one",
            ),
            (
                AgentError::IpOutsideSubnet {
                    ip,
                    subnet: net("10.1.0.0/24"),
                },
                "an address of 10.1.0.0/24 with --ip",
            ),
            (
                AgentError::SubnetFull {
                    subnet: net("10.0.0.0/30"),
                },
                "a larger --subnet",
            ),
            (
                AgentError::PortTaken {
                    port: "0.0.0.0:8080/tcp".to_owned(),
                    holder: "web".to_owned(),
                    display: "0.0.0.0:8080->80/tcp".to_owned(),
                },
                "`netd ports` shows who holds it; unpublish it (`netd unpublish SPEC web`)",
            ),
            (
                AgentError::NameTaken {
                    name: "web".to_owned(),
                    id: "ab".repeat(32),
                },
                "--name of `netd attach`",
            ),
            (
                AgentError::NetworkInUse {
                    name: "backend".to_owned(),
                    endpoints: "web".to_owned(),
                },
                "`netd network inspect backend` lists them",
            ),
            (
                AgentError::AlreadyAttached {
                    netns: "c1".to_owned(),
                    name: "c1".to_owned(),
                    ip,
                    network: "netd".to_owned(),
                },
                "`netd detach c1 --network netd`",
            ),
            (
                AgentError::UnknownNetwork("nope".to_owned()),
                "`netd network ls`",
            ),
            (AgentError::UnknownEndpoint("x".to_owned()), "`netd ps`"),
            (
                AgentError::Netns(NetnsError::NotFound {
                    given: "c9".to_owned(),
                    path: "/run/netns/c9".into(),
                }),
                "`ip netns add c9`",
            ),
        ];
        for (err, want) in cases {
            let hint = err.hint().unwrap_or_else(|| panic!("{err} has no hint"));
            assert!(hint.contains(want), "{err}: {hint:?} lacks {want:?}");
            // One line, as every refusal is.
            assert!(!hint.contains('\n'), "{hint:?}");
        }
    }

    /// A hint is what the message does not already say: an internal error
    /// has none to give, and a message that names its fix gets no second
    /// copy of it.
    #[test]
    fn errors_without_a_fix_have_no_hint() {
        for err in [
            AgentError::IpSyntax("1.2.3".to_owned()),
            AgentError::NoFreeSubnet,
            AgentError::DefaultNetwork("netd".to_owned()),
            AgentError::AmbiguousTarget {
                target: "c1".to_owned(),
                networks: "a, b".to_owned(),
            },
            AgentError::Io {
                what: "x".to_owned(),
                source: io::Error::from(io::ErrorKind::Other),
            },
        ] {
            assert_eq!(err.hint(), None, "{err}");
        }
    }
}
