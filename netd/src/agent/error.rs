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
