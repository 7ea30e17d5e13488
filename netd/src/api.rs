// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's HTTP API: JSON bodies over a Unix socket, under versioned
//! paths. Shared by the server (agent) and the client (CLI); documented in
//! the README.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// Every path starts with this.
pub const PREFIX: &str = "/v1";

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
}

/// `POST /v1/detach`: detach whatever is attached for a namespace.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    pub netns: String,
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
    pub containers: std::collections::BTreeMap<String, ContainerInspect>,
    pub options: std::collections::BTreeMap<String, String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    pub options: std::collections::BTreeMap<String, String>,
    pub config: Vec<IpamConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
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
}
