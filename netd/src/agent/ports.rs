// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Publishing: `-p` specs become mappings in state and in the datapath.
//!
//! A request is planned in full before anything changes (specs parsed, host
//! ports resolved, conflicts with other mappings and with the host's own
//! sockets checked, slots allocated): several specs in one call are all
//! applied or none. A publish writes the maps first, then records the
//! mappings, then applies them to memory: if the record fails (a full or
//! failing state directory), the maps are undone and memory never had them.
//! An unpublish records first, then removes. The agent reconciles the maps
//! with the state on start, so a crash in between loses nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
};

use tracing::info;

use super::{
    Agent,
    error::AgentError,
    state::{Change, EndpointState, NetworkState, Phase, PublishedPort},
};
use crate::{
    api,
    datapath::PortRule,
    listeners::{self, Listener},
    netns::{self, Netns},
    portspec::{PortRange, PortSpec, Proto, docker_form},
};

/// How many mapping slots the datapath has (`NETD_MAPPINGS`).
pub const MAX_MAPPINGS: usize = 65536;

/// The ephemeral port range of this namespace (Docker allocates from it too).
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// The datapath rule for mapping `port` of endpoint `ep`.
pub fn rule(ep: &EndpointState, port: &PublishedPort) -> PortRule {
    PortRule {
        slot: port.slot,
        generation: port.generation,
        proto: port.proto.number(),
        host_ip: port.host_ip,
        host_port: port.host.first,
        host_port_end: port.host.last,
        ctr_ip: ep.ip,
        ctr_port: port.ctr.first,
        to_one: port.ctr.is_single() && !port.host.is_single(),
    }
}

pub fn form(port: &PublishedPort) -> String {
    docker_form(port.host_ip, port.host, port.ctr, port.proto)
}

fn describe_port(proto: Proto, host_ip: Ipv4Addr, host: PortRange) -> String {
    format!("{host}/{proto} on {host_ip}")
}

/// Whether two host bindings collide: same protocol, overlapping ports, and
/// the same address or either on "any address".
fn collides(a: &PublishedPort, b: &PublishedPort) -> bool {
    a.proto == b.proto
        && a.host.overlaps(&b.host)
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

/// The published ports, indexed by protocol and first host port, so that a
/// request checks each port against its neighbours only, not against every
/// port held: publishing stays cheap with tens of thousands published.
#[derive(Default)]
struct Taken<'a> {
    /// The endpoints, scanned directly for a small request.
    endpoints: Vec<&'a EndpointState>,
    /// What the endpoints hold, sorted, for a large request (empty for a
    /// small one).
    sorted: Vec<((Proto, u16), &'a PublishedPort, &'a str)>,
    /// What this request planned so far.
    planned: BTreeMap<(Proto, u16), Vec<PublishedPort>>,
    /// The longest host range in either: how far back a colliding range
    /// can start.
    longest: u16,
}

/// Shown as the holder of a port planned earlier in the same request.
const THIS_REQUEST: &str = "(this request)";

impl<'a> Taken<'a> {
    /// The index of what `endpoints` hold, for a request of `checks` port
    /// checks: a few are answered faster by a scan than by sorting first.
    fn new(endpoints: impl Iterator<Item = &'a EndpointState>, checks: usize) -> Self {
        let mut taken = Self {
            endpoints: endpoints.collect(),
            ..Self::default()
        };
        for ep in &taken.endpoints {
            for port in &ep.ports {
                taken.longest = taken.longest.max(port.host.last - port.host.first);
                if checks > 16 {
                    taken
                        .sorted
                        .push(((port.proto, port.host.first), port, ep.name.as_str()));
                }
            }
        }
        taken.sorted.sort_unstable_by_key(|(key, _, _)| *key);
        taken
    }

    fn plan(&mut self, port: PublishedPort) {
        self.longest = self.longest.max(port.host.last - port.host.first);
        self.planned
            .entry((port.proto, port.host.first))
            .or_default()
            .push(port);
    }

    /// A port `port` collides with, and who holds it.
    fn colliding(&self, port: &PublishedPort) -> Option<(&PublishedPort, &str)> {
        let from = (port.proto, port.host.first.saturating_sub(self.longest));
        let to = (port.proto, port.host.last);
        let held: Box<dyn Iterator<Item = (&PublishedPort, &str)>> = if self.sorted.is_empty() {
            Box::new(
                self.endpoints
                    .iter()
                    .flat_map(|ep| ep.ports.iter().map(|p| (p, ep.name.as_str()))),
            )
        } else {
            let start = self.sorted.partition_point(|(key, _, _)| *key < from);
            let end = start + self.sorted[start..].partition_point(|(key, _, _)| *key <= to);
            Box::new(
                self.sorted[start..end]
                    .iter()
                    .map(|(_, p, holder)| (*p, *holder)),
            )
        };
        held.chain(
            self.planned
                .range(from..=to)
                .flat_map(|(_, ports)| ports.iter().map(|p| (p, THIS_REQUEST))),
        )
        .find(|(other, _)| collides(port, other))
    }
}

/// The mapping slots in use, one bit each.
struct Slots(Vec<u64>);

impl Slots {
    fn new(endpoints: &BTreeMap<String, EndpointState>) -> Self {
        let mut slots = Self(vec![0; MAX_MAPPINGS.div_ceil(64)]);
        for port in endpoints.values().flat_map(|ep| &ep.ports) {
            slots.take(port.slot);
        }
        slots
    }

    fn take(&mut self, slot: u32) {
        if let Some(word) = self.0.get_mut(slot as usize / 64) {
            *word |= 1 << (slot % 64);
        }
    }

    /// The lowest free slot at or after `from`.
    fn free_from(&self, from: u32) -> Option<u32> {
        (from..MAX_MAPPINGS as u32)
            .find(|&slot| self.0[slot as usize / 64] & (1 << (slot % 64)) == 0)
    }
}

/// Whether `spec` names `port` (for unpublish): same protocol and host
/// address (`default_ip` when the spec has none), and the same host range,
/// or, for a spec without host ports, the same container range.
fn names(spec: &PortSpec, default_ip: Ipv4Addr, port: &PublishedPort) -> bool {
    spec.proto == port.proto
        && spec.host_ip.unwrap_or(default_ip) == port.host_ip
        && match spec.host {
            Some(host) => host == port.host,
            None => spec.ctr == port.ctr,
        }
}

impl Agent {
    /// The endpoint `target` names: an attached namespace (by name, path or
    /// identity), or an endpoint's name or ID; on `network` if one is
    /// named. A target on several networks needs one named, but that its
    /// endpoint on the default network is meant when it has one.
    pub(super) fn resolve_target(
        &self,
        target: &str,
        network: Option<&str>,
    ) -> Result<String, AgentError> {
        let network = network
            .map(|name| self.resolve_network(Some(name)).map(|n| n.name.clone()))
            .transpose()?;
        let path = netns::resolve(target);
        let ident = Netns::open(target).ok().map(|ns| ns.ident());
        let found: Vec<&EndpointState> = self
            .state
            .endpoints
            .values()
            .filter(|ep| {
                ep.name == target
                    || ep.id == target
                    || ep.netns == path
                    || Some(ep.netns_ident) == ident
            })
            .filter(|ep| {
                network
                    .as_ref()
                    .is_none_or(|name| &self.state.network_of(ep).name == name)
            })
            .collect();
        match found.as_slice() {
            [] => Err(AgentError::UnknownTarget(target.to_owned())),
            [one] => Ok(one.id.clone()),
            many => match many.iter().find(|ep| ep.network.is_none()) {
                Some(on_default) => Ok(on_default.id.clone()),
                None => Err(AgentError::AmbiguousTarget {
                    target: target.to_owned(),
                    networks: many
                        .iter()
                        .map(|ep| self.state.network_of(ep).name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            },
        }
    }

    /// Resolves `specs` for an endpoint of network `net` into mappings,
    /// checking everything. Changes nothing.
    pub(super) async fn plan(
        &mut self,
        net: &NetworkState,
        specs: &[PortSpec],
    ) -> Result<Vec<PublishedPort>, AgentError> {
        if net.lan().is_some() {
            return Err(super::lan::LanError::NoPublish {
                network: net.name.clone(),
                driver: net.driver.name(),
            }
            .into());
        }
        // Only what the request needs is asked of the kernel: each query
        // is a netlink dump, and publishing one port should cost little.
        let default_ip = net.host_binding;
        let names_address = specs.iter().any(|s| {
            let ip = s.host_ip.unwrap_or(default_ip);
            !ip.is_unspecified() && !ip.is_loopback()
        });
        let local: BTreeSet<Ipv4Addr> = if names_address {
            self.nl.addresses().await?.iter().map(|a| a.ip).collect()
        } else {
            BTreeSet::new()
        };
        let protos: BTreeSet<Proto> = specs.iter().map(|s| s.proto).collect();
        let host_sockets: Vec<Listener> = listeners::current(&protos);
        // An ephemeral host port is searched for, port by port.
        let checks = specs
            .iter()
            .map(|s| {
                if s.host.is_some() {
                    1
                } else {
                    usize::from(u16::MAX)
                }
            })
            .fold(0, usize::saturating_add);
        let mut taken = Taken::new(self.state.endpoints.values(), checks);
        let mut slots = Slots::new(&self.state.endpoints);
        let mut next_slot = 0;
        let mut generation = self.state.next_generation;
        let mut planned = Vec::new();
        if net.internal {
            return Err(AgentError::InternalNetwork);
        }
        for spec in specs {
            let host_ip = spec.host_ip.unwrap_or(net.host_binding);
            if !host_ip.is_unspecified() && !host_ip.is_loopback() && !local.contains(&host_ip) {
                return Err(AgentError::HostIpNotLocal(host_ip));
            }
            let check = |port: &PublishedPort, taken: &Taken<'_>| -> Result<(), AgentError> {
                if let Some((holder, name)) = taken.colliding(port) {
                    return Err(AgentError::PortTaken {
                        port: describe_port(port.proto, port.host_ip, port.host),
                        holder: name.to_owned(),
                        display: form(holder),
                    });
                }
                for p in port.host.first..=port.host.last {
                    if let Some(socket) = host_sockets
                        .iter()
                        .find(|s| s.conflicts(port.proto, port.host_ip, p))
                    {
                        return Err(AgentError::PortInUse {
                            port: describe_port(port.proto, port.host_ip, PortRange::single(p)),
                            listener: socket.describe(),
                        });
                    }
                }
                Ok(())
            };
            let mut port = PublishedPort {
                slot: 0,
                generation,
                proto: spec.proto,
                host_ip,
                host: spec.host.unwrap_or(spec.ctr),
                ctr: spec.ctr,
            };
            match spec.host {
                Some(_) => check(&port, &taken)?,
                None => {
                    // The lowest free block of the ephemeral range.
                    let (first, last) = ephemeral_range();
                    let len = spec.ctr.count();
                    let found = (u32::from(first)..=u32::from(last).saturating_sub(len - 1))
                        .find_map(|start| {
                            port.host = PortRange {
                                first: start as u16,
                                last: (start + len - 1) as u16,
                            };
                            check(&port, &taken).is_ok().then_some(port.host)
                        });
                    port.host = found.ok_or_else(|| AgentError::NoEphemeralPorts {
                        spec: format!("{}/{}", spec.ctr, spec.proto),
                        len,
                        first,
                        last,
                    })?;
                }
            }
            // Slots are taken lowest first, so the search resumes where the
            // last one ended.
            port.slot = slots
                .free_from(next_slot)
                .ok_or(AgentError::TooManyMappings(MAX_MAPPINGS))?;
            next_slot = port.slot + 1;
            slots.take(port.slot);
            generation = generation.wrapping_add(1).max(1);
            taken.plan(port.clone());
            planned.push(port);
        }
        Ok(planned)
    }

    /// Publishes `specs` for the endpoint `target` names; all or nothing.
    pub async fn publish(
        &mut self,
        target: &str,
        specs: &[String],
        network: Option<&str>,
    ) -> Result<Vec<api::Port>, AgentError> {
        let id = self.resolve_target(target, network)?;
        let specs: Vec<PortSpec> = specs.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let net = self.state.network_of(&self.state.endpoints[&id]).clone();
        if net.lan().is_none() {
            self.require_veth(&id).await?;
        }
        self.publish_specs(&id, &specs).await
    }

    /// Refuses an endpoint whose host veth is gone (its namespace was
    /// deleted and nobody detached it yet): ports published to it would
    /// lead nowhere while holding the host's ports. One link lookup by
    /// name, not a dump.
    async fn require_veth(&self, id: &str) -> Result<(), AgentError> {
        let ep = &self.state.endpoints[id];
        if self.nl.link(&ep.host_ifname).await?.is_none() {
            return Err(AgentError::Broken {
                name: ep.name.clone(),
                what: format!("its host veth {} is missing", ep.host_ifname),
            });
        }
        Ok(())
    }

    pub(super) async fn publish_specs(
        &mut self,
        id: &str,
        specs: &[PortSpec],
    ) -> Result<Vec<api::Port>, AgentError> {
        let net = self.state.network_of(&self.state.endpoints[id]).clone();
        let planned = self.plan(&net, specs).await?;
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let ep = self.state.endpoints[id].without_ports();
        let next_generation = planned.last().map_or(self.state.next_generation, |p| {
            p.generation.wrapping_add(1).max(1)
        });
        let mut installed = Vec::new();
        for port in &planned {
            if let Err(err) = self.datapath.maps().install(&rule(&ep, port), true) {
                self.undo_install(&ep, &installed);
                return Err(err.into());
            }
            installed.push(port.clone());
        }
        let published = Change::Published {
            endpoint: id.to_owned(),
            ports: planned.clone(),
            next_generation,
        };
        if let Err(err) = self.commit(published) {
            // Not durable: not published. Memory never had the mappings;
            // the maps lose them again, with any flow they began.
            self.undo_install(&ep, &installed);
            return Err(err);
        }
        for port in &planned {
            info!(endpoint = %ep.name, mapping = %form(port), slot = port.slot, "published");
        }
        planned.iter().map(|p| self.port_view(&ep, p)).collect()
    }

    /// Removes mappings of `ep` from the maps (and their flows from
    /// conntrack) that a publish installed and could not record.
    fn undo_install(&mut self, ep: &EndpointState, installed: &[PublishedPort]) {
        for port in installed {
            if let Err(err) = self.datapath.maps().uninstall(&rule(ep, port)) {
                tracing::warn!(error = %err, endpoint = %ep.name, mapping = %form(port), "undoing a failed publish");
            }
        }
        let slots: BTreeSet<(u32, u32)> =
            installed.iter().map(|p| (p.slot, p.generation)).collect();
        if let Err(err) =
            self.sweep_conntrack(|flow| flow.mapping().is_some_and(|m| slots.contains(&m)))
        {
            tracing::warn!(error = %err, endpoint = %ep.name, "undoing a failed publish");
        }
    }

    /// Unpublishes what `specs` name for the endpoint `target` names. Specs
    /// that name nothing published are not an error (unpublishing twice is
    /// fine).
    pub async fn unpublish(
        &mut self,
        target: &str,
        specs: &[String],
        network: Option<&str>,
    ) -> Result<Vec<api::Port>, AgentError> {
        let id = self.resolve_target(target, network)?;
        let specs: Vec<PortSpec> = specs.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let ep = self.state.endpoints.get(&id).expect("resolved above");
        let default_ip = self.state.network_of(ep).host_binding;
        let removed: Vec<PublishedPort> = ep
            .ports
            .iter()
            .filter(|p| specs.iter().any(|s| names(s, default_ip, p)))
            .cloned()
            .collect();
        self.unpublish_ports(&id, &removed).await
    }

    /// Removes `ports` of endpoint `id` from state (recorded, then in
    /// memory), then from the datapath, then sweeps the flows they steered
    /// from conntrack.
    pub(super) async fn unpublish_ports(
        &mut self,
        id: &str,
        ports: &[PublishedPort],
    ) -> Result<Vec<api::Port>, AgentError> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        self.commit(Change::Unpublished {
            endpoint: id.to_owned(),
            mappings: ports.iter().map(|p| (p.slot, p.generation)).collect(),
        })?;
        let ep = self.state.endpoints[id].without_ports();
        let views = ports
            .iter()
            .map(|port| self.port_view(&ep, port))
            .collect::<Result<Vec<_>, _>>()?;
        self.withdraw(&ep, ports)?;
        for port in ports {
            info!(endpoint = %ep.name, mapping = %form(port), "unpublished");
        }
        Ok(views)
    }

    /// Takes `ports` of `ep` out of the kernel, their flows with them;
    /// their removal is recorded already (an unpublish, or the endpoint's
    /// `removing`).
    pub(super) fn withdraw(
        &mut self,
        ep: &EndpointState,
        ports: &[PublishedPort],
    ) -> Result<(), AgentError> {
        for port in ports {
            self.datapath.maps().uninstall(&rule(ep, port))?;
        }
        let slots: BTreeSet<(u32, u32)> = ports.iter().map(|p| (p.slot, p.generation)).collect();
        self.sweep_conntrack(|flow| flow.mapping().is_some_and(|m| slots.contains(&m)))
    }

    pub(super) fn port_view(
        &mut self,
        ep: &EndpointState,
        port: &PublishedPort,
    ) -> Result<api::Port, AgentError> {
        let stats = self.datapath.maps().mapping_stats(port.slot)?;
        let ctr_end = if port.ctr.is_single() {
            port.ctr.first
        } else {
            port.ctr.last
        };
        Ok(api::Port {
            endpoint: ep.name.clone(),
            endpoint_id: ep.id.clone(),
            network: self.state.network_of(ep).name.clone(),
            proto: port.proto.name().to_owned(),
            host_ip: port.host_ip,
            host_port: port.host.first,
            host_port_end: port.host.last,
            container_ip: ep.ip,
            container_port: port.ctr.first,
            container_port_end: ctr_end,
            display: form(port),
            packets: stats.packets,
            bytes: stats.bytes,
            flows: stats.flows,
        })
    }

    /// Every published mapping with its counters. An endpoint being
    /// removed has none: its mappings left the kernel once its removal
    /// was recorded.
    pub fn ports(&mut self) -> Result<Vec<api::Port>, AgentError> {
        let endpoints: Vec<EndpointState> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.phase != Phase::Removing)
            .cloned()
            .collect();
        let mut views = Vec::new();
        for ep in &endpoints {
            for port in &ep.ports {
                views.push(self.port_view(ep, port)?);
            }
        }
        views.sort_by_key(|p| (p.host_port, p.proto.clone(), p.host_ip));
        Ok(views)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: Ipv4Addr, first: u16, last: u16, proto: Proto) -> PublishedPort {
        PublishedPort {
            slot: 0,
            generation: 1,
            proto,
            host_ip: ip,
            host: PortRange { first, last },
            ctr: PortRange::single(80),
        }
    }

    #[test]
    fn slots_are_the_lowest_free() {
        let mut ep = crate::agent::state::sample_endpoint();
        ep.ports = [0, 1, 3, 64, 65]
            .into_iter()
            .map(|slot| PublishedPort {
                slot,
                ..port(Ipv4Addr::UNSPECIFIED, 1, 1, Proto::Tcp)
            })
            .collect();
        let mut slots = Slots::new(&BTreeMap::from([("ep".to_owned(), ep)]));
        assert_eq!(slots.free_from(0), Some(2));
        slots.take(2);
        assert_eq!(slots.free_from(0), Some(4));
        assert_eq!(slots.free_from(64), Some(66));
        slots.take(MAX_MAPPINGS as u32 - 1);
        assert_eq!(slots.free_from(MAX_MAPPINGS as u32 - 1), None);
    }

    #[test]
    fn the_index_finds_what_a_linear_scan_finds() {
        let any = Ipv4Addr::UNSPECIFIED;
        let one = Ipv4Addr::new(10, 0, 0, 1);
        let held = [
            port(one, 1000, 1999, Proto::Tcp),
            port(any, 5000, 5000, Proto::Tcp),
            port(any, 5000, 5000, Proto::Udp),
            port(one, 6000, 6010, Proto::Udp),
        ];
        let ep = EndpointState {
            ports: held[..3].to_vec(),
            ..crate::agent::state::sample_endpoint()
        };
        let mut sorted = Taken::new([&ep].into_iter(), 1000);
        sorted.plan(held[3].clone());
        let mut scanned = Taken::new([&ep].into_iter(), 1);
        scanned.plan(held[3].clone());
        for ip in [any, one, Ipv4Addr::new(10, 0, 0, 2)] {
            for proto in [Proto::Tcp, Proto::Udp] {
                for (first, last) in [
                    (1999, 1999),
                    (999, 1000),
                    (1500, 2500),
                    (4990, 5010),
                    (6010, 6020),
                    (7000, 7000),
                ] {
                    let wanted = port(ip, first, last, proto);
                    let linear = held.iter().find(|h| collides(&wanted, h));
                    for taken in [&sorted, &scanned] {
                        assert_eq!(
                            taken.colliding(&wanted).map(|(p, _)| p),
                            linear,
                            "{wanted:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn collisions_follow_bind_semantics() {
        let any = Ipv4Addr::UNSPECIFIED;
        let one = Ipv4Addr::new(10, 0, 0, 1);
        let two = Ipv4Addr::new(10, 0, 0, 2);
        assert!(collides(
            &port(any, 8080, 8080, Proto::Tcp),
            &port(one, 8080, 8080, Proto::Tcp)
        ));
        assert!(collides(
            &port(one, 8000, 8100, Proto::Tcp),
            &port(one, 8080, 8080, Proto::Tcp)
        ));
        assert!(!collides(
            &port(one, 8080, 8080, Proto::Tcp),
            &port(two, 8080, 8080, Proto::Tcp)
        ));
        assert!(!collides(
            &port(any, 8080, 8080, Proto::Tcp),
            &port(any, 8080, 8080, Proto::Udp)
        ));
        assert!(!collides(
            &port(any, 8080, 8080, Proto::Tcp),
            &port(any, 8081, 8090, Proto::Tcp)
        ));
    }

    #[test]
    fn unpublish_specs_name_mappings() {
        let any = Ipv4Addr::UNSPECIFIED;
        let p = port(any, 8080, 8080, Proto::Tcp);
        let spec = |s: &str| s.parse::<PortSpec>().expect("spec");
        assert!(names(&spec("8080:80"), any, &p));
        let ephemeral = PublishedPort {
            host: PortRange::single(32768),
            ..p.clone()
        };
        assert!(names(&spec("80"), any, &ephemeral));
        assert!(!names(&spec("8080:80/udp"), any, &p));
        assert!(!names(&spec("127.0.0.1:8080:80"), any, &p));
        assert!(
            !names(&spec("8080:80"), Ipv4Addr::LOCALHOST, &p),
            "the network binds elsewhere by default"
        );
    }
}
