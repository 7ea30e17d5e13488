// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The network's endpoints: the one place where an endpoint is created,
//! checked and removed. The API (`netd attach`, the CNI plugin through it)
//! and Docker's driver only translate their requests into a
//! [`NewEndpoint`] and call [`Agent::create_endpoint`].
//!
//! Creating an endpoint follows one rule: validate everything, record the
//! endpoint (phase `creating`), create its kernel objects, then settle:
//! mark it `ready` once they all exist, or remove what exists and the
//! record. A crash anywhere in between is finished by the next agent's
//! recovery, because the record came first.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use tracing::{info, warn};

use super::{
    Agent,
    config::check_ifname,
    error::{AgentError, BRIDGE_MAX_PORTS},
    ipam, now_rfc3339, random_hex,
    state::{Change, EndpointState, NetworkState, Phase},
};
use crate::{
    api, failpoint,
    mac::MacAddr,
    netlink::Netlink,
    netns::{self, Netns, NsIdent},
    portspec::PortSpec,
};

/// Where a new endpoint's interface goes.
pub(super) enum Placement {
    /// Inside the namespace `given` (a name or a path), as `ifname` (by
    /// default the first free `ethN`: `eth0` on the namespace's first
    /// network, `eth1` on its second, as `docker network connect` names
    /// them), configured: address, route, up.
    Netns {
        given: String,
        ifname: Option<String>,
    },
    /// Left in the agent's namespace, down and unconfigured, for a runtime
    /// to move into its container and configure (Docker does).
    Host,
}

/// An endpoint to create, as an adapter translated its request. Every
/// field left `None` is chosen by the network.
pub(super) struct NewEndpoint {
    /// The network, by name or ID; the default network for `None`.
    pub network: Option<String>,
    /// The runtime's own ID for it (Docker's endpoint ID); else a random one.
    pub id: Option<String>,
    pub name: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<MacAddr>,
    pub owner: Option<String>,
    pub container_id: Option<String>,
    /// More names for DNS on its network.
    pub aliases: Vec<String>,
    /// Published with the endpoint: all or nothing.
    pub ports: Vec<PortSpec>,
    pub placement: Placement,
}

/// How a new endpoint's interface is configured in its namespace.
struct Configure {
    /// Whether it carries the namespace's default route.
    default_route: bool,
}

/// The first `ethN` not in `taken`.
fn next_ifname(taken: &[String]) -> String {
    (0..)
        .map(|n| format!("eth{n}"))
        .find(|name| !taken.contains(name))
        .expect("some ethN is free")
}

/// The interface name Docker's endpoints have in the agent's namespace
/// until Docker moves them (and renames them `eth…`).
fn host_placed_ifname(id: &str) -> String {
    format!("dk{}", &id[..11])
}

/// The host end of an endpoint's veth, on the bridge.
fn host_ifname(id: &str) -> String {
    format!("veth{}", &id[..11])
}

impl Agent {
    /// Addresses in use on network `network`, by endpoint name.
    fn taken(&self, network: &str) -> BTreeMap<Ipv4Addr, String> {
        self.on_network(network)
            .map(|ep| (ep.ip, ep.name.clone()))
            .collect()
    }

    /// Addresses of `net` no endpoint gets, with what holds each: its aux
    /// addresses, and on a LAN network the host's own on the parent and
    /// the host's shim.
    async fn reserved_on(
        &self,
        net: &NetworkState,
    ) -> Result<BTreeMap<Ipv4Addr, String>, AgentError> {
        let Some(lan) = net.lan() else {
            return self.reserved(net.subnet, &net.aux_addresses, None).await;
        };
        let parent = self.nl.link(&lan.parent).await?.map(|link| link.index);
        let mut reserved = self
            .reserved(net.subnet, &net.aux_addresses, parent)
            .await?;
        if let Some(shim) = &lan.shim {
            reserved.insert(shim.ip, format!("the host's shim {}", shim.ifname));
        }
        Ok(reserved)
    }

    /// The endpoints on network `network`.
    fn on_network<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a EndpointState> {
        self.state
            .endpoints
            .values()
            .filter(move |ep| self.state.network_of(ep).name == network)
    }

    /// The endpoint on `network` that answers to `name`, as its name or an
    /// alias: a name answers for one endpoint per network, and this is
    /// where that rule is checked.
    fn answering<'a>(
        &'a self,
        network: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a EndpointState> {
        self.on_network(network)
            .filter(move |ep| ep.answers_to(name))
    }

    /// Creates the endpoint `new` describes: validates everything first,
    /// then records it, then creates its veth, datapath entries and ports;
    /// on failure, removes what was created and the record. Returns the
    /// ready endpoint.
    pub(super) async fn create_endpoint(
        &mut self,
        new: NewEndpoint,
    ) -> Result<EndpointState, AgentError> {
        if let Some(name) = &new.name {
            check_name(name)?;
        }
        if let Some(owner) = &new.owner {
            check_owner(owner)?;
        }
        if let Some(id) = &new.container_id {
            check_container_id(id)?;
        }
        for alias in &new.aliases {
            check_alias(alias)?;
        }
        if let Placement::Netns {
            ifname: Some(ifname),
            ..
        } = &new.placement
        {
            check_ifname(ifname).map_err(|why| AgentError::Ifname {
                name: ifname.clone(),
                why,
            })?;
        }
        let net = self.resolve_network(new.network.as_deref())?.clone();
        // The namespace the interface goes into: the agent's own for a
        // runtime to move it from.
        let ns = match &new.placement {
            Placement::Netns { given, .. } => Netns::open(given)?,
            // All the agent's threads share its namespace.
            Placement::Host => Netns::open("/proc/self/ns/net")?,
        };
        self.release_stale().await?;
        if let Some(id) = &new.id
            && self.state.endpoints.contains_key(id)
        {
            return Err(AgentError::EndpointExists(id.clone()));
        }
        // The namespace's endpoints on other networks (multi-homing).
        let mut siblings = Vec::new();
        if let Placement::Netns { given, .. } = &new.placement {
            for ep in self
                .state
                .endpoints
                .values()
                .filter(|ep| ep.netns_ident == ns.ident())
            {
                if self.state.network_of(ep).name == net.name {
                    return Err(AgentError::AlreadyAttached {
                        netns: given.clone(),
                        name: ep.name.clone(),
                        ip: ep.ip,
                        network: net.name.clone(),
                    });
                }
                siblings.push(ep.ifname.clone());
            }
        }
        let mut taken = self.taken(&net.name);
        let reserved = self.reserved_on(&net).await?;
        let ip = match new.ip {
            Some(ip) => {
                if let Some(by) = reserved.get(&ip) {
                    return Err(AgentError::IpHeld { ip, by: by.clone() });
                }
                ipam::check_requested(ip, net.subnet, net.gateway, &taken)?;
                ip
            }
            None => {
                taken.extend(reserved);
                ipam::next_free_in(net.ip_range, net.subnet, net.gateway, &taken)?
            }
        };
        let id = new.id.clone().unwrap_or_else(|| random_hex(32));
        let name = match (&new.name, &new.placement) {
            (Some(name), _) => name.clone(),
            (None, Placement::Netns { given, .. }) => default_name(given, &id),
            (None, Placement::Host) => id.clone(),
        };
        // Names are unique within a network: a namespace on two networks
        // has the same default name on both. So are aliases, among names
        // and aliases: a name answers for one endpoint.
        let holder = self
            .answering(&net.name, &name)
            .next()
            .map(|ep| ep.id.clone());
        if let Some(id) = holder {
            return Err(AgentError::NameTaken { name, id });
        }
        for (i, alias) in new.aliases.iter().enumerate() {
            let holder = self
                .answering(&net.name, alias)
                .next()
                .map(|ep| ep.name.clone())
                .or_else(|| {
                    (alias.eq_ignore_ascii_case(&name)
                        || new.aliases[..i]
                            .iter()
                            .any(|a| a.eq_ignore_ascii_case(alias)))
                    .then(|| name.clone())
                });
            if let Some(holder) = holder {
                return Err(AgentError::AliasTaken {
                    alias: alias.clone(),
                    holder,
                    network: net.name.clone(),
                });
            }
        }
        if net.lan().is_none() {
            let bridge_index = self.bridges[&net.name];
            let ports = self.nl.ports_of(bridge_index).await?.len();
            if ports >= BRIDGE_MAX_PORTS {
                return Err(AgentError::BridgeFull {
                    bridge: net.bridge.clone(),
                });
            }
        }
        // The ports too are checked before anything is recorded or
        // created (they are planned again, under the same lock, once the
        // endpoint exists).
        if !new.ports.is_empty() {
            self.plan(&net, &new.ports).await?;
        }

        let (netns, netns_ident, ifname) = match &new.placement {
            Placement::Netns { ifname, .. } => (
                ns.path().to_owned(),
                ns.ident(),
                ifname.clone().unwrap_or_else(|| next_ifname(&siblings)),
            ),
            // The sandbox is unknown until the runtime names it; device 0
            // is never a real namespace's (nsfs has none), so no attach of
            // a namespace collides with it.
            Placement::Host => (
                Default::default(),
                NsIdent { dev: 0, ino: 0 },
                host_placed_ifname(&id),
            ),
        };
        // A LAN endpoint has no host side: a device with an ifindex of
        // netd's choosing instead (see `lan`).
        let (host_ifname, lan_ifindex, mac) = match net.lan() {
            None => (
                host_ifname(&id),
                None,
                new.mac.unwrap_or_else(|| MacAddr::from_ipv4(ip)),
            ),
            Some(_) => (
                String::new(),
                Some(self.free_lan_ifindex()?),
                self.lan_mac(&net, ip, new.mac).await?,
            ),
        };
        let endpoint = EndpointState {
            host_ifname,
            lan_ifindex,
            id: id.clone(),
            name,
            netns,
            netns_ident,
            ifname,
            ip,
            mac,
            created: now_rfc3339(),
            phase: Phase::Creating,
            ports: Vec::new(),
            owner: new.owner.clone(),
            container_id: new.container_id.clone(),
            network: (net.name != self.state.network.name).then(|| net.name.clone()),
            aliases: new.aliases.clone(),
        };
        self.commit(Change::EndpointAdded {
            endpoint: Box::new(endpoint.clone()),
        })?;
        failpoint::hit("attach:recorded");

        let configure = match new.placement {
            Placement::Netns { .. } => Some(Configure {
                // One default route per namespace: its first network's.
                default_route: siblings.is_empty(),
            }),
            Placement::Host => None,
        };
        let plumbed = match self.plumb(&endpoint, &ns, configure).await {
            Ok(()) => self.connect_endpoint(&endpoint).await,
            Err(err) => Err(err),
        };
        let ready = self.settle(&endpoint, plumbed).await?;
        info!(endpoint = %ready.name, netns = %ready.netns.display(), ip = %ready.ip, veth = %ready.host_ifname, "endpoint created");
        if !new.ports.is_empty()
            && let Err(err) = self.publish_specs(&id, &new.ports).await
        {
            // All or nothing: the endpoint goes too.
            let _ = self.remove_endpoint(&id).await;
            return Err(err);
        }
        Ok(self.state.endpoints[&id].clone())
    }

    /// Makes `ep`'s host veth, just created, a port of its network's
    /// bridge, up.
    async fn bridge_port(&self, ep: &EndpointState) -> Result<(), AgentError> {
        let bridge = self.bridge_of(ep);
        let host = self
            .nl
            .link(&ep.host_ifname)
            .await?
            .ok_or_else(|| AgentError::Io {
                what: format!("veth {} vanished right after its creation", ep.host_ifname),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        if let Err(err) = self
            .nl
            .set_controller(host.index, bridge, &ep.host_ifname)
            .await
        {
            // The kernel says EXFULL when the bridge has no port number left.
            if err.errno() == Some(libc::EXFULL) {
                return Err(AgentError::BridgeFull {
                    bridge: self.state.network_of(ep).bridge.clone(),
                });
            }
            return Err(err.into());
        }
        self.nl.set_up(host.index, &ep.host_ifname).await?;
        Ok(())
    }

    /// Ends the creation of `ep`, recorded as `Creating`: once `plumbed` is
    /// fine, marks it ready (saved); on failure, removes what was created
    /// and the record. Returns the ready endpoint.
    async fn settle(
        &mut self,
        ep: &EndpointState,
        plumbed: Result<(), AgentError>,
    ) -> Result<EndpointState, AgentError> {
        let ready = plumbed.and_then(|()| {
            self.commit(Change::EndpointPhase {
                endpoint: ep.id.clone(),
                phase: Phase::Ready,
            })
        });
        if let Err(err) = ready {
            // Not ready on disk: not ready at all.
            self.roll_back(ep).await;
            return Err(err);
        }
        Ok(self.state.endpoints[&ep.id].clone())
    }

    /// Removes what exists of `ep`, recorded as `Creating`, and its record.
    /// If the record cannot go, the endpoint stays `creating` in memory and
    /// on disk, and [`Self::finish_interrupted`] forgets it later (a
    /// restart would too).
    async fn roll_back(&mut self, ep: &EndpointState) {
        self.unplumb(ep).await;
        if let Err(err) = self.forget(&ep.id) {
            warn!(endpoint = %ep.name, error = %crate::error::one_line(&err), "rolled back an endpoint's creation, but could not record it; retrying");
        }
    }

    /// Creates the endpoint's veth with its other end in `ns` and joins it
    /// to its network's bridge. With `configure`, configures that end:
    /// address, MTU, `lo` and the interface up, and the default route via
    /// the gateway if asked; without, leaves it down, with the endpoint's
    /// MAC and the network's MTU, for a runtime to move.
    async fn plumb(
        &self,
        ep: &EndpointState,
        ns: &Netns,
        configure: Option<Configure>,
    ) -> Result<(), AgentError> {
        let net = self.state.network_of(ep);
        if ep.lan_ifindex.is_some() {
            self.create_lan_device(ep, configure.is_some().then_some(ns))
                .await?;
        } else {
            if let Err(err) = self
                .nl
                .create_veth(&ep.host_ifname, &ep.ifname, ns, ep.mac, net.mtu)
                .await
            {
                if err.errno() == Some(libc::EEXIST) {
                    return Err(AgentError::IfnameTaken {
                        path: ep.netns.clone(),
                        ifname: ep.ifname.clone(),
                    });
                }
                return Err(err.into());
            }
            self.bridge_port(ep).await?;
        }
        failpoint::hit("attach:veth-created");
        let Some(configure) = configure else {
            return Ok(());
        };

        let inside = Netlink::connect_in(ns)?;
        let lo = inside.link("lo").await?;
        if let Some(lo) = lo {
            inside.set_up(lo.index, "lo").await?;
        }
        let eth = inside
            .link(&ep.ifname)
            .await?
            .ok_or_else(|| AgentError::Io {
                what: format!("{} did not appear in {}", ep.ifname, ep.netns.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        inside
            .add_address(eth.index, ep.ip, net.subnet.prefix_len(), &ep.ifname)
            .await?;
        inside.set_up(eth.index, &ep.ifname).await?;
        if configure.default_route {
            inside.add_default_route(net.gateway).await?;
        } else {
            inside
                .add_source_routing(eth.index, ep.ip, net.subnet, net.gateway)
                .await?;
        }
        Ok(())
    }

    /// Releases endpoints whose veth is gone (their namespace was deleted):
    /// their addresses and names are free again.
    async fn release_stale(&mut self) -> Result<(), AgentError> {
        let links = self.nl.links().await?;
        let stale: Vec<EndpointState> = self
            .state
            .endpoints
            .values()
            .filter(|ep| {
                ep.phase == Phase::Ready
                    && if ep.lan_ifindex.is_some() {
                        self.lan_endpoint_gone(ep)
                    } else {
                        !links.iter().any(|l| l.name == ep.host_ifname)
                    }
            })
            .cloned()
            .collect();
        for ep in stale {
            warn!(endpoint = %ep.name, ip = %ep.ip, "veth gone (namespace deleted?): releasing the endpoint");
            self.unplumb(&ep).await;
            self.forget(&ep.id)?;
        }
        Ok(())
    }

    /// Removes one endpoint with its ports: recorded as `removing` first,
    /// so a crash in between is finished on restart. Two short journal
    /// lines whatever the endpoint publishes, so that a detach fits in the
    /// reserve of a full disk. From `removing` on, the endpoint's ports are
    /// gone for `ports` as they are from the kernel.
    pub(super) async fn remove_endpoint(&mut self, id: &str) -> Result<api::Endpoint, AgentError> {
        let view = self.view(self.state.endpoints.get(id).expect("caller found it"));
        self.commit(Change::EndpointPhase {
            endpoint: id.to_owned(),
            phase: Phase::Removing,
        })?;
        let ep = self.state.endpoints[id].clone();
        failpoint::hit("detach:recorded");
        self.withdraw(&ep, &ep.ports)?;
        self.disconnect_endpoint(&ep)?;
        if ep.lan_ifindex.is_some() {
            self.unroute_shim(&ep).await;
            self.delete_lan_device(&ep).await?;
        } else if let Some(link) = self.nl.link(&ep.host_ifname).await? {
            self.nl.del_link(link.index, &ep.host_ifname).await?;
        }
        self.forget(id)?;
        self.tidy_namespace(&ep).await;
        info!(endpoint = %ep.name, ip = %ep.ip, "endpoint removed");
        Ok(view)
    }

    /// What `ep`'s namespace keeps after `ep` went, when other endpoints
    /// stay in it: no rule for `ep`'s address, and a default route still,
    /// through the next network's gateway if `ep`'s was it (as Docker
    /// moves the gateway on `docker network disconnect`). Best effort: the
    /// endpoint is gone whatever happens here.
    async fn tidy_namespace(&self, ep: &EndpointState) {
        let Some(stays) = self
            .state
            .endpoints
            .values()
            .find(|other| other.netns_ident == ep.netns_ident && ep.netns_ident.ino != 0)
        else {
            return;
        };
        let Ok(ns) = Netns::open(&ep.netns.to_string_lossy()) else {
            return;
        };
        if ns.ident() != ep.netns_ident {
            return;
        }
        let gateway = self.state.network_of(stays).gateway;
        let tidied = async {
            let inside = Netlink::connect_in(&ns)?;
            inside.del_source_routing(ep.ip).await?;
            inside.add_default_route(gateway).await?;
            Ok::<_, AgentError>(())
        };
        if let Err(err) = tidied.await {
            warn!(error = %err, netns = %ep.netns.display(), "tidying routes after {}", ep.name);
        }
    }

    /// Removes whatever is attached for namespace `given`, on `network`
    /// only if one is named. Succeeds with nothing removed when nothing
    /// is: runtimes call this after deleting the namespace, and may call
    /// it twice.
    pub async fn detach_netns(
        &mut self,
        given: &str,
        network: Option<&str>,
    ) -> Result<Vec<api::Endpoint>, AgentError> {
        let network = network
            .map(|name| self.resolve_network(Some(name)).map(|n| n.name.clone()))
            .transpose()?;
        let path = netns::resolve(given);
        let ident = Netns::open(given).ok().map(|ns| ns.ident());
        let ids: Vec<String> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.netns == path || Some(ep.netns_ident) == ident)
            .filter(|ep| {
                network
                    .as_ref()
                    .is_none_or(|name| &self.state.network_of(ep).name == name)
            })
            .map(|ep| ep.id.clone())
            .collect();
        let mut detached = Vec::new();
        for id in ids {
            detached.push(self.remove_endpoint(&id).await?);
        }
        Ok(detached)
    }

    /// The endpoint named (or with the ID) `name`.
    fn named(&self, name: &str) -> Result<&EndpointState, AgentError> {
        self.state
            .endpoints
            .values()
            .find(|ep| ep.name == name || ep.id == name)
            .ok_or_else(|| AgentError::UnknownEndpoint(name.to_owned()))
    }

    /// Renames the container whose endpoint is named (or has the ID)
    /// `target`: every endpoint of its namespace (one per network), in one
    /// record, as `docker rename` renames a container on all its
    /// networks. The name must be free on each of those networks.
    pub async fn rename(
        &mut self,
        target: &str,
        name: &str,
    ) -> Result<Vec<api::Endpoint>, AgentError> {
        check_name(name)?;
        let named = self.named(target)?;
        let sandbox = named.sandbox();
        // Names are unique per network only: two containers may have one.
        if let Some(other) = self
            .state
            .endpoints
            .values()
            .find(|e| e.name == target && e.sandbox() != sandbox)
        {
            return Err(AgentError::NameAmbiguous {
                name: target.to_owned(),
                first: named.id.clone(),
                second: other.id.clone(),
            });
        }
        let ids: Vec<String> = self
            .state
            .endpoints
            .values()
            .filter(|e| e.sandbox() == sandbox)
            .map(|e| e.id.clone())
            .collect();
        for id in &ids {
            let net = self
                .state
                .network_of(&self.state.endpoints[id])
                .name
                .clone();
            if let Some(holder) = self
                .answering(&net, name)
                .find(|other| !ids.contains(&other.id))
            {
                return Err(AgentError::NameTaken {
                    name: name.to_owned(),
                    id: holder.id.clone(),
                });
            }
        }
        self.commit(Change::EndpointsRenamed {
            endpoints: ids.clone(),
            name: name.to_owned(),
        })?;
        info!(endpoint = %target, name, "renamed");
        Ok(ids
            .iter()
            .map(|id| self.view(&self.state.endpoints[id]))
            .collect())
    }

    /// Removes the endpoint named (or with the ID) `name`.
    pub async fn detach_name(&mut self, name: &str) -> Result<api::Endpoint, AgentError> {
        let id = self.named(name)?.id.clone();
        self.remove_endpoint(&id).await
    }

    /// The endpoint named (or with the ID) `name`, after checking that what
    /// it needs exists in the kernel: its host veth on the bridge, its
    /// datapath entry, its namespace and the interface with its address
    /// there. What a CNI CHECK asks.
    pub async fn check_endpoint(&mut self, name: &str) -> Result<api::Endpoint, AgentError> {
        let ep = self.named(name)?.clone();
        let broken = |what: String| AgentError::Broken {
            name: ep.name.clone(),
            what,
        };
        if ep.phase != Phase::Ready {
            return Err(broken("it is being attached or detached".to_owned()));
        }
        match self.nl.link(&ep.host_ifname).await? {
            // A LAN endpoint has no host side.
            _ if ep.lan_ifindex.is_some() => {}
            None => {
                return Err(broken(format!(
                    "its host veth {} is missing",
                    ep.host_ifname
                )));
            }
            Some(link) if link.controller != Some(self.bridge_of(&ep)) => {
                return Err(broken(format!(
                    "its host veth {} is not on the bridge",
                    ep.host_ifname
                )));
            }
            Some(_) => {}
        }
        if !self
            .datapath
            .maps()
            .endpoints()?
            .iter()
            .any(|(ip, _)| *ip == ep.ip)
        {
            return Err(broken(format!("{} is missing from the datapath", ep.ip)));
        }
        let ns = Netns::open(&ep.netns.to_string_lossy())
            .map_err(|_| broken(format!("its namespace {} is gone", ep.netns.display())))?;
        if ns.ident() != ep.netns_ident {
            return Err(broken(format!(
                "{} is another namespace now",
                ep.netns.display()
            )));
        }
        let inside = Netlink::connect_in(&ns)?;
        let Some(link) = inside.link(&ep.ifname).await? else {
            return Err(broken(format!("{} is missing in its namespace", ep.ifname)));
        };
        if !inside
            .addresses()
            .await?
            .iter()
            .any(|a| a.index == link.index && a.ip == ep.ip)
        {
            return Err(broken(format!(
                "{} has lost its address {}",
                ep.ifname, ep.ip
            )));
        }
        Ok(self.view(&ep))
    }
}

/// Default endpoint name: the namespace's name for `ip netns` namespaces
/// (given by name or by their /run/netns path), else `endpoint-<short id>`.
fn default_name(given: &str, id: &str) -> String {
    let path = netns::resolve(given);
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if dir == Path::new(crate::paths::NETNS_DIR) => {
            name.to_string_lossy().into_owned()
        }
        _ => format!("endpoint-{}", &id[..12]),
    }
}

fn check_name(name: &str) -> Result<(), AgentError> {
    let why = match name.split_once('/') {
        None => check_plain_name(name, 64).map(|why| {
            if why == NAME_CHARACTERS {
                format!("{why} (and one '/' in a pod's NAMESPACE/NAME)")
            } else {
                why
            }
        }),
        // Kubernetes names a pod within its namespace: a DNS label (63
        // bytes at most), then a DNS subdomain (253).
        Some((namespace, pod)) => check_plain_name(namespace, 63)
            .map(|why| format!("the namespace before '/': {why}"))
            .or_else(|| {
                check_plain_name(pod, 253).map(|why| format!("the pod name after '/': {why}"))
            }),
    };
    match why {
        Some(why) => Err(AgentError::Name {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// What [`check_plain_name`] says of a name with other characters.
const NAME_CHARACTERS: &str = "use letters, digits, '-', '_' and '.'";

/// Why `name` is not a name of at most `max` bytes, if it is not.
fn check_plain_name(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > max {
        Some(format!("at most {max} bytes"))
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some(NAME_CHARACTERS.to_owned())
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        // Docker's rule for container names, CNI's for container IDs.
        Some("start with a letter or a digit".to_owned())
    } else {
        None
    }
}

/// An alias is asked for in DNS: one or more labels of letters, digits,
/// '-' and '_', as a container's name would be.
fn check_alias(alias: &str) -> Result<(), AgentError> {
    if crate::dns::is_dns_name(alias) {
        Ok(())
    } else {
        Err(AgentError::Alias {
            alias: alias.to_owned(),
        })
    }
}

/// The CNI specification's container IDs: letters, digits, '_', '.', '-'.
fn check_container_id(id: &str) -> Result<(), AgentError> {
    match check_plain_name(id, 256) {
        Some(why) => Err(AgentError::ContainerId {
            id: id.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Owners are short tags a plugin sets; they are matched exactly.
fn check_owner(owner: &str) -> Result<(), AgentError> {
    let valid = !owner.is_empty()
        && owner.len() <= 32
        && owner
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(AgentError::Owner(owner.to_owned()))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_or_a_pods_namespace_and_name() {
        for good in [
            "web",
            "my_app-1.2",
            &"a".repeat(64),
            "default/web",
            "kube-system/coredns-5d78c9869d-x2x9q",
            &format!("{}/{}", "n".repeat(63), "p".repeat(253)),
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (&"a".repeat(65), "at most 64"),
            ("web app", "use letters"),
            ("-web", "start with a letter or a digit"),
            ("_web", "start with a letter or a digit"),
            ("/web", "the namespace before '/': it is empty"),
            ("default/", "the pod name after '/': it is empty"),
            ("a/b/c", "the pod name after '/': use letters"),
            (&format!("{}/web", "n".repeat(64)), "at most 63"),
            (&format!("ns/{}", "p".repeat(254)), "at most 253"),
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn interface_names_fit_the_kernels_limit() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(host_ifname(&id), "veth0123456789a");
        assert_eq!(host_placed_ifname(&id), "dk0123456789a");
        for name in [host_ifname(&id), host_placed_ifname(&id)] {
            assert!(check_ifname(&name).is_ok(), "{name}");
        }
    }

    #[test]
    fn container_ids_follow_the_cni_specification() {
        assert!(check_container_id(&"f".repeat(64)).is_ok());
        assert!(check_container_id("ctr_1.a-b").is_ok());
        for bad in ["", "a/b", "a b", &"f".repeat(257)] {
            assert!(check_container_id(bad).is_err(), "{bad}");
        }
    }
}
