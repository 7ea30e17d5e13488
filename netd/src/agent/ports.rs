// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Publishing: `-p` specs become mappings in state and in the datapath.
//!
//! A request is planned in full before anything changes (specs parsed, host
//! ports resolved, conflicts with other mappings and with the host's own
//! sockets checked, slots allocated): several specs in one call are all
//! applied or none. State is saved before the maps are written; the agent
//! reconciles the maps with the state on start, so a crash in between loses
//! nothing.

use std::{collections::BTreeSet, fs, net::Ipv4Addr};

use tracing::info;

use super::{
    Agent,
    error::AgentError,
    state::{EndpointState, PublishedPort},
};
use crate::{
    api,
    datapath::PortRule,
    listeners::{self, Listener},
    netns::{self, Netns},
    portspec::{PortRange, PortSpec, docker_form},
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

fn describe_port(proto: crate::portspec::Proto, host_ip: Ipv4Addr, host: PortRange) -> String {
    format!("{host}/{proto} on {host_ip}")
}

/// Whether two host bindings collide: same protocol, overlapping ports, and
/// the same address or either on "any address".
fn collides(a: &PublishedPort, b: &PublishedPort) -> bool {
    a.proto == b.proto
        && a.host.overlaps(&b.host)
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
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
    /// identity), or an endpoint's name or ID.
    pub(super) fn resolve_target(&self, target: &str) -> Result<String, AgentError> {
        let path = netns::resolve(target);
        let ident = Netns::open(target).ok().map(|ns| ns.ident());
        self.state
            .endpoints
            .values()
            .find(|ep| {
                ep.name == target
                    || ep.id == target
                    || ep.netns == path
                    || Some(ep.netns_ident) == ident
            })
            .map(|ep| ep.id.clone())
            .ok_or_else(|| AgentError::UnknownTarget(target.to_owned()))
    }

    /// Resolves `specs` for endpoint `id` into mappings, checking everything.
    /// Changes nothing.
    async fn plan(&mut self, specs: &[PortSpec]) -> Result<Vec<PublishedPort>, AgentError> {
        let local: BTreeSet<Ipv4Addr> = self.nl.addresses().await?.iter().map(|a| a.ip).collect();
        let host_sockets: Vec<Listener> = listeners::current();
        let mut taken: Vec<(PublishedPort, String)> = self
            .state
            .endpoints
            .values()
            .flat_map(|ep| ep.ports.iter().map(|p| (p.clone(), ep.name.clone())))
            .collect();
        let mut used_slots: BTreeSet<u32> = taken.iter().map(|(p, _)| p.slot).collect();
        let mut generation = self.state.next_generation;
        let mut planned = Vec::new();
        if self.state.network.internal {
            return Err(AgentError::InternalNetwork);
        }
        for spec in specs {
            let host_ip = spec.host_ip.unwrap_or(self.state.network.host_binding);
            if !host_ip.is_unspecified() && !host_ip.is_loopback() && !local.contains(&host_ip) {
                return Err(AgentError::HostIpNotLocal(host_ip));
            }
            let check = |port: &PublishedPort,
                         taken: &[(PublishedPort, String)]|
             -> Result<(), AgentError> {
                if let Some((holder, name)) = taken.iter().find(|(other, _)| collides(port, other))
                {
                    return Err(AgentError::PortTaken {
                        port: describe_port(port.proto, port.host_ip, port.host),
                        holder: name.clone(),
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
            port.slot = (0..MAX_MAPPINGS as u32)
                .find(|slot| !used_slots.contains(slot))
                .ok_or(AgentError::TooManyMappings(MAX_MAPPINGS))?;
            used_slots.insert(port.slot);
            generation = generation.wrapping_add(1).max(1);
            taken.push((port.clone(), "(this request)".to_owned()));
            planned.push(port);
        }
        Ok(planned)
    }

    /// Publishes `specs` for the endpoint `target` names; all or nothing.
    pub async fn publish(
        &mut self,
        target: &str,
        specs: &[String],
    ) -> Result<Vec<api::Port>, AgentError> {
        let id = self.resolve_target(target)?;
        let specs: Vec<PortSpec> = specs.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        self.publish_specs(&id, &specs).await
    }

    pub(super) async fn publish_specs(
        &mut self,
        id: &str,
        specs: &[PortSpec],
    ) -> Result<Vec<api::Port>, AgentError> {
        let planned = self.plan(specs).await?;
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let ep = self.state.endpoints.get_mut(id).expect("resolved above");
        ep.ports.extend(planned.iter().cloned());
        let ep = ep.clone();
        self.state.next_generation = planned.last().map_or(self.state.next_generation, |p| {
            p.generation.wrapping_add(1).max(1)
        });
        self.store.save(&self.state)?;
        let mut installed = Vec::new();
        for port in &planned {
            if let Err(err) = self.datapath.maps().install(&rule(&ep, port), true) {
                // Undo: the maps, then the record.
                for done in &installed {
                    let _ = self.datapath.maps().uninstall(&rule(&ep, done));
                }
                let ep = self.state.endpoints.get_mut(id).expect("still there");
                ep.ports.retain(|p| !planned.contains(p));
                self.store.save(&self.state)?;
                return Err(err.into());
            }
            installed.push(port.clone());
        }
        for port in &planned {
            info!(endpoint = %ep.name, mapping = %form(port), slot = port.slot, "published");
        }
        planned.iter().map(|p| self.port_view(&ep, p)).collect()
    }

    /// Unpublishes what `specs` name for the endpoint `target` names. Specs
    /// that name nothing published are not an error (unpublishing twice is
    /// fine).
    pub async fn unpublish(
        &mut self,
        target: &str,
        specs: &[String],
    ) -> Result<Vec<api::Port>, AgentError> {
        let id = self.resolve_target(target)?;
        let specs: Vec<PortSpec> = specs.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let ep = self
            .state
            .endpoints
            .get(&id)
            .expect("resolved above")
            .clone();
        let removed: Vec<PublishedPort> = ep
            .ports
            .iter()
            .filter(|p| {
                specs
                    .iter()
                    .any(|s| names(s, self.state.network.host_binding, p))
            })
            .cloned()
            .collect();
        self.unpublish_ports(&id, &removed).await
    }

    /// Removes `ports` of endpoint `id` from state, then from the datapath,
    /// then sweeps the flows they steered from conntrack.
    pub(super) async fn unpublish_ports(
        &mut self,
        id: &str,
        ports: &[PublishedPort],
    ) -> Result<Vec<api::Port>, AgentError> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let ep = self.state.endpoints.get_mut(id).expect("caller found it");
        ep.ports.retain(|p| !ports.contains(p));
        let ep = ep.clone();
        self.store.save(&self.state)?;
        let mut views = Vec::new();
        for port in ports {
            views.push(self.port_view(&ep, port)?);
            self.datapath.maps().uninstall(&rule(&ep, port))?;
            info!(endpoint = %ep.name, mapping = %form(port), "unpublished");
        }
        let slots: BTreeSet<(u32, u32)> = ports.iter().map(|p| (p.slot, p.generation)).collect();
        self.sweep_conntrack(|mapping| slots.contains(&mapping))?;
        Ok(views)
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

    /// Every published mapping with its counters.
    pub fn ports(&mut self) -> Result<Vec<api::Port>, AgentError> {
        let endpoints: Vec<EndpointState> = self.state.endpoints.values().cloned().collect();
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
    use crate::portspec::Proto;

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
