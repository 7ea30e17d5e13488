// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Docker's remote network driver: libnetwork's plugin protocol (JSON POSTs
//! over HTTP/1.1 on a Unix socket), served by the agent on
//! `--docker-plugin-socket`, so that `docker network create -d netd` and
//! `docker run --network NET -p 8080:80` get netd's bridge, addresses and
//! eBPF publishing instead of Docker's bridge driver, iptables rules and
//! docker-proxy.
//!
//! A Docker network of driver `netd` is a netd network. How each call maps
//! onto them:
//!
//! - `CreateNetwork` with the default network's subnet as its pool
//!   (`--subnet`) is that network, seen by Docker: the gateway, `-o`
//!   options and `--internal` must agree with the agent's, and the
//!   network's ID is recorded. Any other pool (Docker's IPAM's choice), or
//!   the null IPAM's `0.0.0.0/0` (`--ipam-driver null`: netd's choice), is
//!   a netd network of its own, made through the core as `netd network
//!   create` makes one, with Docker's ID recorded on it.
//! - `CreateEndpoint` makes a veth pair in the agent's namespace: the host
//!   end on the bridge with netd's endpoint program and datapath entries,
//!   the other end (`dk…`) left for Docker to move into the container. The
//!   endpoint is recorded like any other (named by Docker's endpoint ID,
//!   owner `docker`), before its veth exists and ready after, so an agent
//!   killed half-way finishes or rolls back on restart and a restarted agent
//!   keeps Docker's endpoints.
//! - `Join` names that interface and the gateway; Docker moves it into the
//!   container, renames it `eth0`, assigns the address, MAC and default
//!   route. `Leave` only forgets the sandbox: Docker moves the interface out.
//! - `ProgramExternalConnectivity` publishes the container's `-p` bindings
//!   through netd's ports code (map updates; no iptables rule, no proxy);
//!   `RevokeExternalConnectivity` unpublishes them.
//! - `DeleteEndpoint` removes the endpoint as `netd detach` does;
//!   `DeleteNetwork` forgets the default network's ID, or removes the netd
//!   network made for Docker. Both succeed for what is gone already.
//!
//! Errors answer HTTP 500 with `{"Err": "one line"}`, which Docker prints.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use thiserror::Error;
use tokio::{net::UnixListener, sync::Mutex};
use tracing::{debug, info, warn};

use super::{
    Agent,
    endpoint::{NewEndpoint, Placement},
    error::AgentError,
    http::HeadTimeout,
    ports,
    state::{Change, EndpointState, NetworkState, Phase, PublishedPort},
};
use crate::{
    mac::MacAddr,
    portspec::{PortRange, PortSpec, Proto},
};

/// The media type of the plugin protocol, sent back on every answer.
const PLUGIN_MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Who the driver's endpoints belong to (`netd ps --json`'s `owner`).
pub const OWNER: &str = "docker";

/// Docker renames the interface it moves into the container to this prefix
/// followed by a number: `eth0` for the first network.
const CONTAINER_IFNAME_PREFIX: &str = "eth";

/// What the null IPAM (`--ipam-driver null`) gives a network: its address
/// space and its pool.
const NULL_IPAM_SPACE: &str = "null";
const NULL_IPAM_POOL: &str = "0.0.0.0/0";

/// Why a driver call failed. Each is one line, which Docker shows the user.
#[derive(Debug, Error)]
pub enum DockerError {
    #[error(
        "Docker asked for gateway {given}, but the netd network's gateway is {gateway}: pass `--gateway {gateway}`"
    )]
    GatewayMismatch { given: String, gateway: Ipv4Addr },
    #[error("a netd network has one IPv4 pool, Docker gave {0}: pass one --subnet")]
    PoolCount(usize),
    #[error("netd networks are IPv4 only: create the network without --ipv6")]
    Ipv6,
    #[error(
        "network option {key}={value} differs from the netd network's {actual}: set it on the agent (`netd agent -o {key}=...`), not on the Docker network"
    )]
    OptionMismatch {
        key: String,
        value: String,
        actual: String,
    },
    #[error(
        "unsupported network option {0:?} (the netd network's options are set on the agent: com.docker.network.bridge.name, .enable_icc, .enable_ip_masquerade, .host_binding_ipv4, com.docker.network.driver.mtu)"
    )]
    UnknownOption(String),
    #[error(
        "the Docker network is {docker} but the netd network is {netd}: they must agree (`netd agent --internal`, `docker network create --internal`)"
    )]
    InternalMismatch {
        docker: &'static str,
        netd: &'static str,
    },
    #[error(
        "the netd network already backs Docker network {0}, which has containers: another Docker network of this pool cannot share it (create it without --subnet for a netd network of its own)"
    )]
    NetworkTaken(String),
    #[error("invalid {what} {value:?} from Docker")]
    Malformed { what: &'static str, value: String },
    #[error(
        "no netd network backs Docker network {0}: it was created while the agent ran on another state directory; remove it with `docker network rm` and create it again"
    )]
    UnknownNetwork(String),
    #[error(
        "address {address} does not have the netd network's prefix length /{prefix_len}: create the Docker network with --subnet {subnet}"
    )]
    AddressPrefix {
        address: Ipv4Net,
        prefix_len: u8,
        subnet: Ipv4Net,
    },
    #[error("no endpoint {0}: Docker did not create it through this agent, or it was removed")]
    UnknownEndpoint(String),
    #[error(
        "interface {ifname} of endpoint {endpoint} is not in the agent's namespace: the endpoint has joined a container already"
    )]
    NotJoinable { endpoint: String, ifname: String },
    #[error("port binding with protocol number {0}: netd publishes tcp and udp")]
    Proto(u8),
    #[error("port binding on host address {0}: netd publishes on IPv4 host addresses")]
    HostIp(String),
    #[error("no free host port in {range} for {ctr}/{proto}: {last}")]
    RangeTaken {
        range: PortRange,
        ctr: u16,
        proto: Proto,
        /// Why the last port of the range could not be had.
        last: String,
    },
    #[error("request body of {method}: {source}")]
    Body {
        method: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("netd's Docker driver does not implement {0}")]
    UnknownMethod(String),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl From<crate::agent::state::StateError> for DockerError {
    fn from(err: crate::agent::state::StateError) -> Self {
        Self::Agent(err.into())
    }
}

impl From<crate::netlink::NetlinkError> for DockerError {
    fn from(err: crate::netlink::NetlinkError) -> Self {
        Self::Agent(err.into())
    }
}

// The protocol's messages: the fields netd reads and writes, named as
// libnetwork's drivers/remote/api names them. Unknown fields are ignored:
// Docker adds some across versions.

/// The request of the calls that name an endpoint and nothing else
/// (`DeleteEndpoint`, `Leave`, `RevokeExternalConnectivity`,
/// `EndpointOperInfo`).
#[derive(Clone, Debug, Deserialize)]
pub struct EndpointRef {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `DeleteNetwork`'s request.
#[derive(Clone, Debug, Deserialize)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: Option<NetworkOptions>,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// The options libnetwork passes to `CreateNetwork`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetworkOptions {
    #[serde(rename = "com.docker.network.enable_ipv6", default)]
    pub enable_ipv6: bool,
    #[serde(rename = "com.docker.network.internal", default)]
    pub internal: bool,
    /// `docker network create -o KEY=VALUE`.
    #[serde(rename = "com.docker.network.generic", default)]
    pub generic: Option<BTreeMap<String, Value>>,
}

/// One pool of a network, as Docker's IPAM allocated it.
#[derive(Clone, Debug, Deserialize)]
pub struct IpamData {
    #[serde(rename = "AddressSpace", default)]
    pub address_space: String,
    #[serde(rename = "Pool", default)]
    pub pool: String,
    /// `ADDRESS/PREFIX`; absent with the null IPAM.
    #[serde(rename = "Gateway", default)]
    pub gateway: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

/// An endpoint's addresses: what Docker's IPAM (or `--ip`, `--mac-address`)
/// chose in a request, and in the answer what the driver chose where the
/// request had nothing (libnetwork refuses a driver changing what it set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's network namespace, as a path in dockerd's mount
    /// namespace (not necessarily visible to the agent).
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    #[serde(rename = "Gateway")]
    pub gateway: String,
}

/// The interface Docker moves into the container (`SrcName`, in the
/// agent's namespace), and the prefix of its name there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub src_name: String,
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProgramRequest {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default)]
    pub options: Option<ProgramOptions>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProgramOptions {
    /// The container's `-p` bindings.
    #[serde(rename = "com.docker.network.portmap", default)]
    pub portmap: Option<Vec<PortBinding>>,
}

/// One `-p` binding, as libnetwork's `types.PortBinding`: one container
/// port; `HostPort` 0 for an ephemeral host port; `HostPortEnd` above
/// `HostPort` for "any one free port of this range" (Docker's meaning of
/// `-p 8000-8010:80`); an empty `HostIP` for the network's default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PortBinding {
    #[serde(rename = "Proto")]
    pub proto: u8,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: Option<String>,
    #[serde(rename = "HostPort", default)]
    pub host_port: u16,
    #[serde(rename = "HostPortEnd", default)]
    pub host_port_end: u16,
}

/// Which host ports a binding accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostPorts {
    /// Any free port of the ephemeral range (`-p 80`).
    Ephemeral,
    Exactly(u16),
    /// The first free port of the range (`-p 8000-8010:80`).
    AnyOf(PortRange),
}

/// A port binding checked and in netd's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Binding {
    proto: Proto,
    /// `None`: the network's default host address.
    host_ip: Option<Ipv4Addr>,
    host: HostPorts,
    ctr: u16,
}

impl Binding {
    fn parse(binding: &PortBinding) -> Result<Self, DockerError> {
        let proto = Proto::from_number(binding.proto).ok_or(DockerError::Proto(binding.proto))?;
        let host_ip = match binding.host_ip.as_deref().unwrap_or_default() {
            "" => None,
            text => Some(
                text.parse::<Ipv4Addr>()
                    .map_err(|_| DockerError::HostIp(text.to_owned()))?,
            ),
        };
        if binding.port == 0 {
            return Err(DockerError::Malformed {
                what: "container port",
                value: "0".to_owned(),
            });
        }
        let host = match (binding.host_port, binding.host_port_end) {
            (0, _) => HostPorts::Ephemeral,
            (first, last) if last <= first => HostPorts::Exactly(first),
            (first, last) => HostPorts::AnyOf(PortRange { first, last }),
        };
        Ok(Self {
            proto,
            host_ip,
            host,
            ctr: binding.port,
        })
    }

    /// The spec publishing this binding on host port `host` (`None`: an
    /// ephemeral one).
    fn spec(&self, host: Option<u16>) -> PortSpec {
        PortSpec {
            host_ip: self.host_ip,
            host: host.map(PortRange::single),
            ctr: PortRange::single(self.ctr),
            proto: self.proto,
        }
    }

    /// Whether `port`, published already, is this binding: Docker may
    /// program an endpoint again (when it becomes the container's gateway
    /// endpoint anew), and what is in place stays.
    fn is_published_as(&self, port: &PublishedPort, default_ip: Ipv4Addr) -> bool {
        port.proto == self.proto
            && port.ctr == PortRange::single(self.ctr)
            && port.host_ip == self.host_ip.unwrap_or(default_ip)
            && match self.host {
                HostPorts::Ephemeral => port.host.is_single(),
                HostPorts::Exactly(host) => port.host == PortRange::single(host),
                HostPorts::AnyOf(range) => {
                    port.host.is_single()
                        && range.first <= port.host.first
                        && port.host.last <= range.last
                }
            }
    }
}

/// Docker's addressing of a new network: its one IPv4 pool, and the
/// gateway Docker's IPAM chose, as given.
struct DockerPool<'a> {
    /// `None` with the null IPAM: netd chooses the subnet and addresses.
    subnet: Option<Ipv4Net>,
    /// `ADDRESS/PREFIX`; absent with the null IPAM.
    gateway: Option<&'a str>,
}

/// The pool of `req`: one IPv4 pool, no IPv6.
fn docker_pool<'a>(
    req: &'a CreateNetworkRequest,
    options: &NetworkOptions,
) -> Result<DockerPool<'a>, DockerError> {
    if options.enable_ipv6 || !req.ipv6_data.as_deref().unwrap_or_default().is_empty() {
        return Err(DockerError::Ipv6);
    }
    let ipv4 = req.ipv4_data.as_deref().unwrap_or_default();
    let [pool] = ipv4 else {
        return Err(DockerError::PoolCount(ipv4.len()));
    };
    if pool.address_space == NULL_IPAM_SPACE && pool.pool == NULL_IPAM_POOL {
        return Ok(DockerPool {
            subnet: None,
            gateway: None,
        });
    }
    let subnet = pool.pool.parse().map_err(|_| DockerError::Malformed {
        what: "pool",
        value: pool.pool.clone(),
    })?;
    Ok(DockerPool {
        subnet: Some(subnet),
        gateway: pool.gateway.as_deref().filter(|g| !g.is_empty()),
    })
}

/// An address as Docker gives a gateway: `ADDRESS/PREFIX`, or bare.
fn docker_address(given: &str) -> Option<Ipv4Addr> {
    given
        .parse::<Ipv4Net>()
        .map(|net| net.addr())
        .or_else(|_| given.parse::<Ipv4Addr>())
        .ok()
}

/// Checks the gateway Docker chose for the agent's network, when the
/// Docker network is that network.
fn check_gateway(net: &NetworkState, given: Option<&str>) -> Result<(), DockerError> {
    match given {
        Some(given) if docker_address(given) != Some(net.gateway) => {
            Err(DockerError::GatewayMismatch {
                given: given.to_owned(),
                gateway: net.gateway,
            })
        }
        _ => Ok(()),
    }
}

/// The `docker network create -o` option that picks netd's driver
/// (`netd.driver=macvlan`): Docker's `-d` names the plugin, netd.
const DRIVER_OPTION: &str = "netd.driver";

/// A `-o` value as Docker passes it (a JSON string, or a bare JSON value),
/// as text.
fn option_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Checks `docker network create -o` options and `--internal` against the
/// agent's network: the network is the agent's, so Docker can name its
/// settings but not change them.
fn check_options(net: &NetworkState, options: &NetworkOptions) -> Result<(), DockerError> {
    let describe = |internal: bool| if internal { "internal" } else { "not internal" };
    if options.internal != net.internal {
        return Err(DockerError::InternalMismatch {
            docker: describe(options.internal),
            netd: describe(net.internal),
        });
    }
    for (key, value) in options.generic.iter().flatten() {
        let value = option_text(value);
        let actual = match key.as_str() {
            "com.docker.network.bridge.name" => net.bridge.clone(),
            "com.docker.network.driver.mtu" => net.mtu.to_string(),
            "com.docker.network.bridge.enable_icc" => net.icc.to_string(),
            "com.docker.network.bridge.enable_ip_masquerade" => net.masquerade.to_string(),
            "com.docker.network.bridge.host_binding_ipv4" => net.host_binding.to_string(),
            _ => return Err(DockerError::UnknownOption(key.clone())),
        };
        // Booleans as Docker accepts them ("1", "true"); the rest exactly.
        let same = match (value.as_str(), actual.as_str()) {
            ("1" | "true", "true") | ("0" | "false", "false") => true,
            (given, actual) => given == actual,
        };
        if !same {
            return Err(DockerError::OptionMismatch {
                key: key.clone(),
                value,
                actual,
            });
        }
    }
    Ok(())
}

/// Checks the form of an endpoint ID (Docker's are 64 hex digits): it
/// names the endpoint and its interfaces.
fn check_endpoint_id(id: &str) -> Result<(), DockerError> {
    if (12..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(DockerError::Malformed {
            what: "endpoint ID",
            value: id.to_owned(),
        })
    }
}

impl Agent {
    /// Docker's endpoints on the agent's (default) network: the ones that
    /// pin the Docker network recorded for it.
    fn docker_endpoints_on_default_network(&self) -> usize {
        self.state
            .endpoints
            .values()
            .filter(|ep| ep.owner.as_deref() == Some(OWNER) && ep.network.is_none())
            .count()
    }

    /// The netd network behind Docker network `id`.
    fn docker_network(&self, id: &str) -> Option<&NetworkState> {
        if self.state.docker_network.as_deref() == Some(id) {
            return Some(&self.state.network);
        }
        self.state
            .networks
            .values()
            .find(|net| net.docker_id.as_deref() == Some(id))
    }

    /// A Docker network of driver `netd`: the agent's default network when
    /// Docker's pool is its subnet (as before many networks), else a netd
    /// network of its own, with Docker's pool and gateway (or, with the
    /// null IPAM, netd's choice) and its `-o` options.
    async fn docker_create_network(
        &mut self,
        req: CreateNetworkRequest,
    ) -> Result<(), DockerError> {
        if self.docker_network(&req.network_id).is_some() {
            // Asked again (a dockerd restart): it exists.
            return Ok(());
        }
        let options = req.options.clone().unwrap_or_default();
        let pool = docker_pool(&req, &options)?;
        if pool.subnet != Some(self.state.network.subnet) {
            let (subnet, gateway) = (pool.subnet, pool.gateway.map(str::to_owned));
            return self
                .docker_own_network(&req.network_id, subnet, gateway, options)
                .await;
        }
        let net = &self.state.network;
        check_gateway(net, pool.gateway)?;
        check_options(net, &options)?;
        match self.state.docker_network.clone() {
            Some(existing) if self.docker_endpoints_on_default_network() > 0 => {
                return Err(DockerError::NetworkTaken(existing));
            }
            Some(existing) => {
                // No container uses it: Docker lost it (a new data root, a
                // network removed while the agent was down).
                warn!(old = %existing, new = %req.network_id, "replacing a Docker network that has no endpoints");
            }
            None => {}
        }
        self.commit(Change::DockerNetwork {
            network: Some(req.network_id.clone()),
        })?;
        info!(network = %req.network_id, subnet = %self.state.network.subnet, "Docker network created on the default network");
        Ok(())
    }

    /// A netd network made for Docker network `docker_id` (named `docker-` and
    /// its short ID: Docker does not tell a driver the network's name).
    async fn docker_own_network(
        &mut self,
        docker_id: &str,
        subnet: Option<Ipv4Net>,
        gateway: Option<String>,
        options: NetworkOptions,
    ) -> Result<(), DockerError> {
        let gateway = gateway
            .map(|given| {
                docker_address(&given).ok_or(DockerError::Malformed {
                    what: "gateway",
                    value: given,
                })
            })
            .transpose()?;
        // `-o netd.driver=macvlan` picks netd's driver; the rest are its
        // options.
        let mut driver = "bridge".to_owned();
        let mut driver_options = Vec::new();
        for (key, value) in options.generic.iter().flatten() {
            if key == DRIVER_OPTION {
                driver = option_text(value);
            } else {
                driver_options.push(format!("{key}={}", option_text(value)));
            }
        }
        let short = &docker_id[..docker_id.len().min(12)];
        let created = self
            .make_network(
                crate::api::NetworkCreateRequest {
                    name: format!("docker-{short}"),
                    subnet: subnet.map(|s| s.to_string()),
                    gateway: gateway.map(|g| g.to_string()),
                    driver,
                    ip_range: None,
                    aux_addresses: Vec::new(),
                    internal: options.internal,
                    options: driver_options,
                    labels: Vec::new(),
                    exist_ok: false,
                },
                Some(docker_id.to_owned()),
            )
            .await?;
        info!(network = %docker_id, netd = %created.name, subnet = %created.subnet, "Docker network created");
        Ok(())
    }

    /// Forgets Docker network `req` and removes the netd network made for
    /// it (Docker deletes its endpoints first); nothing to do is fine.
    async fn docker_delete_network(&mut self, req: NetworkRef) -> Result<(), DockerError> {
        if self.state.docker_network.as_deref() == Some(req.network_id.as_str()) {
            self.commit(Change::DockerNetwork { network: None })?;
            info!(network = %req.network_id, "Docker network deleted");
        } else if let Some(net) = self.docker_network(&req.network_id) {
            let name = net.name.clone();
            self.remove_network(&name).await?;
            info!(network = %req.network_id, netd = %name, "Docker network deleted");
        }
        Ok(())
    }

    /// Creates endpoint `req.endpoint_id` in the agent's namespace, with
    /// Docker's address or the lowest free one, for Docker to move.
    async fn docker_create_endpoint(
        &mut self,
        req: CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, DockerError> {
        let id = req.endpoint_id;
        check_endpoint_id(&id)?;
        let given = req.interface.unwrap_or_default();
        if !given.address_ipv6.is_empty() {
            return Err(DockerError::Ipv6);
        }
        let net = self
            .docker_network(&req.network_id)
            .ok_or_else(|| DockerError::UnknownNetwork(req.network_id.clone()))?;
        let subnet = net.subnet;
        let network = (net.name != self.state.network.name).then(|| net.name.clone());
        let requested_ip = match given.address.as_str() {
            "" => None,
            text => {
                let address: Ipv4Net = text.parse().map_err(|_| DockerError::Malformed {
                    what: "interface address",
                    value: text.to_owned(),
                })?;
                if address.prefix_len() != subnet.prefix_len() {
                    return Err(DockerError::AddressPrefix {
                        address,
                        prefix_len: subnet.prefix_len(),
                        subnet,
                    });
                }
                Some(address.addr())
            }
        };
        let requested_mac = match given.mac_address.as_str() {
            "" => None,
            text => Some(text.parse::<MacAddr>().map_err(AgentError::from)?),
        };
        let endpoint = self
            .create_endpoint(NewEndpoint {
                network,
                // The ID is the endpoint's name too.
                id: Some(id),
                name: None,
                ip: requested_ip,
                mac: requested_mac,
                owner: Some(OWNER.to_owned()),
                container_id: None,
                // Docker's own resolver answers its containers' names.
                aliases: Vec::new(),
                ports: Vec::new(),
                placement: Placement::Host,
            })
            .await?;

        // libnetwork refuses an answer that changes what it chose.
        let chosen = EndpointInterface {
            address: if requested_ip.is_none() {
                format!("{}/{}", endpoint.ip, subnet.prefix_len())
            } else {
                String::new()
            },
            address_ipv6: String::new(),
            mac_address: if requested_mac.is_none() {
                endpoint.mac.to_string()
            } else {
                String::new()
            },
        };
        Ok(CreateEndpointResponse {
            interface: (chosen != EndpointInterface::default()).then_some(chosen),
        })
    }

    fn docker_endpoint(&self, id: &str) -> Result<&EndpointState, DockerError> {
        self.state
            .endpoints
            .get(id)
            .filter(|ep| ep.phase == Phase::Ready)
            .ok_or_else(|| DockerError::UnknownEndpoint(id.to_owned()))
    }

    async fn docker_delete_endpoint(&mut self, req: EndpointRef) -> Result<(), DockerError> {
        if !self.state.endpoints.contains_key(&req.endpoint_id) {
            // Removed already (`netd detach`, `netd down`, a deleted
            // namespace): what Docker wants is done.
            debug!(endpoint = %req.endpoint_id, "DeleteEndpoint of an unknown endpoint");
            return Ok(());
        }
        self.remove_endpoint(&req.endpoint_id).await?;
        Ok(())
    }

    async fn docker_join(&mut self, req: JoinRequest) -> Result<JoinResponse, DockerError> {
        let ep = self.docker_endpoint(&req.endpoint_id)?.clone();
        // Docker moves the interface out of this namespace: it must be here.
        if self.nl.link(&ep.ifname).await?.is_none() {
            return Err(DockerError::NotJoinable {
                endpoint: ep.id,
                ifname: ep.ifname,
            });
        }
        self.commit(Change::EndpointNetns {
            endpoint: ep.id.clone(),
            netns: PathBuf::from(&req.sandbox_key),
        })?;
        info!(endpoint = %ep.id, sandbox = %req.sandbox_key, "Docker endpoint joined");
        let gateway = self.state.network_of(&ep).gateway.to_string();
        Ok(JoinResponse {
            interface_name: InterfaceName {
                src_name: ep.ifname,
                dst_prefix: CONTAINER_IFNAME_PREFIX.to_owned(),
            },
            gateway,
        })
    }

    fn docker_leave(&mut self, req: EndpointRef) -> Result<(), DockerError> {
        if self.state.endpoints.contains_key(&req.endpoint_id) {
            self.commit(Change::EndpointNetns {
                endpoint: req.endpoint_id.clone(),
                netns: PathBuf::new(),
            })?;
        }
        Ok(())
    }

    /// Publishes the bindings of `req`: all or none. Each binding is
    /// published on its own, as Docker's host-range bindings try port after
    /// port; a failure unpublishes what this call published.
    async fn docker_program(&mut self, req: ProgramRequest) -> Result<(), DockerError> {
        let id = self.docker_endpoint(&req.endpoint_id)?.id.clone();
        let bindings: Vec<Binding> = req
            .options
            .unwrap_or_default()
            .portmap
            .unwrap_or_default()
            .iter()
            .map(Binding::parse)
            .collect::<Result<_, _>>()?;
        let before: Vec<(u32, u32)> = self.state.endpoints[&id]
            .ports
            .iter()
            .map(|p| (p.slot, p.generation))
            .collect();
        for binding in &bindings {
            if let Err(err) = self.publish_binding(&id, binding).await {
                let added: Vec<PublishedPort> = self.state.endpoints[&id]
                    .ports
                    .iter()
                    .filter(|p| !before.contains(&(p.slot, p.generation)))
                    .cloned()
                    .collect();
                if let Err(undo) = self.unpublish_ports(&id, &added).await {
                    warn!(error = %undo, endpoint = %id, "undoing a failed ProgramExternalConnectivity");
                }
                return Err(err);
            }
        }
        Ok(())
    }

    async fn publish_binding(&mut self, id: &str, binding: &Binding) -> Result<(), DockerError> {
        let default_ip = self.state.network.host_binding;
        if self.state.endpoints[id]
            .ports
            .iter()
            .any(|p| binding.is_published_as(p, default_ip))
        {
            return Ok(());
        }
        let range = match binding.host {
            HostPorts::Ephemeral => {
                self.publish_specs(id, &[binding.spec(None)]).await?;
                return Ok(());
            }
            HostPorts::Exactly(host) => {
                self.publish_specs(id, &[binding.spec(Some(host))]).await?;
                return Ok(());
            }
            HostPorts::AnyOf(range) => range,
        };
        let mut last = None;
        for host in range.first..=range.last {
            match self.publish_specs(id, &[binding.spec(Some(host))]).await {
                Ok(_) => return Ok(()),
                Err(err @ (AgentError::PortTaken { .. } | AgentError::PortInUse { .. })) => {
                    last = Some(err);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(DockerError::RangeTaken {
            range,
            ctr: binding.ctr,
            proto: binding.proto,
            last: last.map_or_else(String::new, |err| crate::error::one_line(&err)),
        })
    }

    async fn docker_revoke(&mut self, req: EndpointRef) -> Result<(), DockerError> {
        let Some(ep) = self.state.endpoints.get(&req.endpoint_id) else {
            return Ok(());
        };
        let published = ep.ports.clone();
        self.unpublish_ports(&req.endpoint_id, &published).await?;
        Ok(())
    }

    /// What Docker shows as the endpoint's driver information.
    fn docker_oper_info(&self, req: &EndpointRef) -> BTreeMap<String, Value> {
        let Some(ep) = self.state.endpoints.get(&req.endpoint_id) else {
            return BTreeMap::new();
        };
        BTreeMap::from([
            (
                "netd.host_veth".to_owned(),
                Value::from(ep.host_ifname.clone()),
            ),
            (
                "netd.ports".to_owned(),
                Value::from(ep.ports.iter().map(ports::form).collect::<Vec<_>>()),
            ),
        ])
    }
}

/// A request body; Docker sends none (not even `null`) to `Plugin.Activate`
/// and `GetCapabilities`.
fn parse<T: DeserializeOwned>(method: &str, body: &[u8]) -> Result<T, DockerError> {
    serde_json::from_slice(body).map_err(|source| DockerError::Body {
        method: method.to_owned(),
        source,
    })
}

fn reply(value: impl Serialize) -> Value {
    serde_json::to_value(value).expect("driver answers are plain JSON")
}

/// Answers one call. `Value::Object` answers are Docker's `{...}` bodies.
async fn dispatch(agent: &Mutex<Agent>, method: &str, body: &[u8]) -> Result<Value, DockerError> {
    let empty = || Value::Object(serde_json::Map::new());
    Ok(match method {
        "Plugin.Activate" => serde_json::json!({ "Implements": ["NetworkDriver"] }),
        // Local: the network exists on this host only, Docker keeps its
        // state in its local store and never asks other hosts.
        "NetworkDriver.GetCapabilities" => {
            serde_json::json!({ "Scope": "local", "ConnectivityScope": "local" })
        }
        "NetworkDriver.CreateNetwork" => {
            let req = parse(method, body)?;
            agent.lock().await.docker_create_network(req).await?;
            empty()
        }
        "NetworkDriver.DeleteNetwork" => {
            let req = parse(method, body)?;
            agent.lock().await.docker_delete_network(req).await?;
            empty()
        }
        "NetworkDriver.CreateEndpoint" => {
            let req = parse(method, body)?;
            reply(agent.lock().await.docker_create_endpoint(req).await?)
        }
        "NetworkDriver.DeleteEndpoint" => {
            let req = parse(method, body)?;
            agent.lock().await.docker_delete_endpoint(req).await?;
            empty()
        }
        "NetworkDriver.EndpointOperInfo" => {
            let req: EndpointRef = parse(method, body)?;
            serde_json::json!({ "Value": agent.lock().await.docker_oper_info(&req) })
        }
        "NetworkDriver.Join" => {
            let req = parse(method, body)?;
            reply(agent.lock().await.docker_join(req).await?)
        }
        "NetworkDriver.Leave" => {
            let req = parse(method, body)?;
            agent.lock().await.docker_leave(req)?;
            empty()
        }
        "NetworkDriver.ProgramExternalConnectivity" => {
            let req = parse(method, body)?;
            agent.lock().await.docker_program(req).await?;
            empty()
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            let req = parse(method, body)?;
            agent.lock().await.docker_revoke(req).await?;
            empty()
        }
        // Swarm's node discovery: nothing for a local network to do.
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => empty(),
        other => return Err(DockerError::UnknownMethod(other.to_owned())),
    })
}

fn answer(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, PLUGIN_MEDIA_TYPE)],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(agent): State<Arc<Mutex<Agent>>>,
    UrlPath(method): UrlPath<String>,
    body: Bytes,
) -> Response {
    debug!(method = %method, body = %String::from_utf8_lossy(&body), "Docker driver call");
    match dispatch(&agent, &method, &body).await {
        Ok(value) => answer(StatusCode::OK, &value),
        Err(err) => {
            let message = crate::error::one_line(&err);
            warn!(method = %method, error = %message, "Docker driver call failed");
            let status = if matches!(err, DockerError::UnknownMethod(_)) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            answer(status, &serde_json::json!({ "Err": message }))
        }
    }
}

/// Serves the driver on `listener` until `stop` completes, one call at a
/// time on the agent shared with the API.
pub(super) async fn serve(
    listener: UnixListener,
    agent: Arc<Mutex<Agent>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/{method}", post(handle))
        .with_state(agent);
    super::http::serve(listener, router, HeadTimeout::FirstRequest, "docker", stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> NetworkState {
        NetworkState {
            subnet: "172.30.0.0/16".parse().expect("subnet"),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            ..crate::agent::state::sample_network()
        }
    }

    /// What dockerd 20.10 sent for `docker network create -d netd --subnet
    /// 172.30.0.0/16 --gateway 172.30.0.1 netdnet`.
    const CREATE_NETWORK: &str = r#"{"NetworkID":"7ca88d22a6601eb193c03cb6f959da03d66a087b01c90c4b65f593ef1d3b22dd","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"172.30.0.1/16","Pool":"172.30.0.0/16"}],"IPv6Data":[]}"#;

    /// ... for `docker run --network netdnet -p 8080:80 -p 9000-9010:90/udp`.
    const PROGRAM: &str = r#"{"NetworkID":"7ca88d22a6601eb193c03cb6f959da03d66a087b01c90c4b65f593ef1d3b22dd","EndpointID":"182bf691c6dbd103a83c0ba2fd7c302bed9c74ddab48f6c950f2903e7b0cd8b0","Options":{"com.docker.network.endpoint.exposedports":[{"Proto":17,"Port":90},{"Proto":6,"Port":80}],"com.docker.network.portmap":[{"Proto":17,"IP":"","Port":90,"HostIP":"","HostPort":9000,"HostPortEnd":9010},{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}"#;

    /// What `CreateNetwork` of `body` decides beside the agent's network
    /// [`network`]: `Ok(true)` when it is that network (and agrees with
    /// it), `Ok(false)` when it gets a netd network of its own.
    fn create_network(body: &str) -> Result<bool, DockerError> {
        let req: CreateNetworkRequest = parse("NetworkDriver.CreateNetwork", body.as_bytes())?;
        let options = req.options.clone().unwrap_or_default();
        let pool = docker_pool(&req, &options)?;
        if pool.subnet != Some(network().subnet) {
            return Ok(false);
        }
        check_gateway(&network(), pool.gateway)?;
        check_options(&network(), &options)?;
        Ok(true)
    }

    #[test]
    fn docker_pools_are_checked_against_the_network() {
        assert!(create_network(CREATE_NETWORK).expect("netd's subnet and gateway"));
        // The null IPAM: a network of netd's choice.
        assert!(!create_network(r#"{"NetworkID":"n","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"null","Pool":"0.0.0.0/0"}],"IPv6Data":[]}"#)
            .expect("null IPAM"));
        // Docker's default pool, not netd's subnet: a network of its own.
        assert!(
            !create_network(&CREATE_NETWORK.replace("172.30.", "172.17.")).expect("another pool")
        );
        let err = create_network(&CREATE_NETWORK.replace("172.30.0.1/16", "172.30.0.254/16"))
            .expect_err("another gateway");
        assert!(matches!(err, DockerError::GatewayMismatch { .. }), "{err}");
        let err = create_network(&CREATE_NETWORK.replace(
            "\"com.docker.network.enable_ipv6\":false",
            "\"com.docker.network.enable_ipv6\":true",
        ))
        .expect_err("IPv6");
        assert!(matches!(err, DockerError::Ipv6), "{err}");
    }

    #[test]
    fn docker_options_must_agree_with_the_agent() {
        let with = |generic: &str, internal: bool| {
            create_network(&CREATE_NETWORK.replace(
                "\"com.docker.network.generic\":{}",
                &format!("\"com.docker.network.generic\":{{{generic}}},\"com.docker.network.internal\":{internal}"),
            ))
        };
        with(r#""com.docker.network.bridge.name":"netd0","com.docker.network.bridge.enable_icc":"1""#, false)
            .expect("the agent's own settings");
        let err =
            with(r#""com.docker.network.bridge.enable_icc":"false""#, false).expect_err("icc");
        assert!(matches!(err, DockerError::OptionMismatch { .. }), "{err}");
        let err = with(r#""foo":"bar""#, false).expect_err("unknown");
        assert!(
            matches!(err, DockerError::UnknownOption(ref k) if k == "foo"),
            "{err}"
        );
        let err = with("", true).expect_err("--internal");
        assert!(matches!(err, DockerError::InternalMismatch { .. }), "{err}");
    }

    #[test]
    fn port_bindings_become_specs() {
        let req: ProgramRequest = parse("p", PROGRAM.as_bytes()).expect("program request");
        let bindings: Vec<Binding> = req
            .options
            .expect("options")
            .portmap
            .expect("portmap")
            .iter()
            .map(Binding::parse)
            .collect::<Result<_, _>>()
            .expect("bindings");
        assert_eq!(
            bindings,
            [
                Binding {
                    proto: Proto::Udp,
                    host_ip: None,
                    host: HostPorts::AnyOf(PortRange {
                        first: 9000,
                        last: 9010
                    }),
                    ctr: 90,
                },
                Binding {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host: HostPorts::Exactly(8080),
                    ctr: 80,
                },
            ]
        );
        assert_eq!(
            bindings[1].spec(Some(8080)),
            "8080:80".parse::<PortSpec>().expect("spec")
        );
        let binding = |json: &str| Binding::parse(&serde_json::from_str(json).expect("binding"));
        assert_eq!(
            binding(r#"{"Proto":6,"Port":80,"HostIP":"127.0.0.1","HostPort":0,"HostPortEnd":0}"#)
                .expect("ephemeral on loopback")
                .spec(None),
            "127.0.0.1::80".parse::<PortSpec>().expect("spec")
        );
        assert!(matches!(
            binding(r#"{"Proto":132,"Port":80,"HostPort":80}"#),
            Err(DockerError::Proto(132))
        ));
        assert!(matches!(
            binding(r#"{"Proto":6,"Port":80,"HostIP":"::","HostPort":80}"#),
            Err(DockerError::HostIp(_))
        ));
    }

    #[test]
    fn a_binding_recognises_its_mapping() {
        let any = Ipv4Addr::UNSPECIFIED;
        let published = |host: u16| PublishedPort {
            slot: 0,
            generation: 1,
            proto: Proto::Udp,
            host_ip: any,
            host: PortRange::single(host),
            ctr: PortRange::single(90),
        };
        let range = Binding {
            proto: Proto::Udp,
            host_ip: None,
            host: HostPorts::AnyOf(PortRange {
                first: 9000,
                last: 9010,
            }),
            ctr: 90,
        };
        assert!(range.is_published_as(&published(9004), any));
        assert!(!range.is_published_as(&published(9011), any));
        assert!(!range.is_published_as(&published(9004), Ipv4Addr::LOCALHOST));
        let exact = Binding {
            host: HostPorts::Exactly(9004),
            ..range
        };
        assert!(exact.is_published_as(&published(9004), any));
        assert!(!exact.is_published_as(&published(9005), any));
    }

    #[test]
    fn create_endpoint_answers_only_what_docker_left_empty() {
        let answer = CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: "02:42:ac:1e:00:02".into(),
                ..EndpointInterface::default()
            }),
        };
        assert_eq!(
            reply(answer),
            serde_json::json!({ "Interface": { "MacAddress": "02:42:ac:1e:00:02" } })
        );
        assert_eq!(
            reply(CreateEndpointResponse::default()),
            serde_json::json!({})
        );
        assert!(check_endpoint_id(&"ab".repeat(32)).is_ok());
        assert!(check_endpoint_id("../../etc").is_err());
        assert!(check_endpoint_id("abc").is_err());
    }
}
