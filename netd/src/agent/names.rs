// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's side of DNS ([`crate::dns`]): which networks are served, and
//! the table of names, rebuilt from the state whenever an endpoint or a
//! network changes.

use tracing::{info, warn};

use super::{
    Agent,
    state::{Change, NetworkState, Phase},
};
use crate::{
    api,
    dns::{self, Entry, Names},
};

/// What `net` is to the DNS service.
fn dns_network(net: &NetworkState) -> dns::Network {
    dns::Network {
        name: net.name.clone(),
        subnet: net.subnet,
        gateway: net.gateway,
        bridge: net.bridge.clone(),
        internal: net.internal,
    }
}

/// Whether `change` changes who has which name.
pub(super) fn changes_names(change: &Change) -> bool {
    matches!(
        change,
        Change::EndpointAdded { .. }
            | Change::EndpointPhase { .. }
            | Change::EndpointRemoved { .. }
            | Change::EndpointNetns { .. }
            | Change::EndpointsRenamed { .. }
            | Change::NetworkCreated { .. }
            | Change::NetworkRemoved { .. }
    )
}

impl Agent {
    /// Rebuilds the names every network's server answers from: ready
    /// endpoints only (a `creating` one has no interface yet, a `removing`
    /// one is going).
    pub(super) fn refresh_names(&self) {
        let Some(dns) = &self.dns else { return };
        let networks: Vec<dns::Network> = self.state.all_networks().map(dns_network).collect();
        let entries: Vec<Entry> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.phase == Phase::Ready)
            .map(|ep| Entry {
                network: self.state.network_of(ep).name.clone(),
                names: std::iter::once(ep.name.clone())
                    .chain(ep.aliases.iter().cloned())
                    .collect(),
                ip: ep.ip,
                sandbox: ep.sandbox(),
            })
            .collect();
        dns.set_names(Names::new(&networks, &entries));
    }

    /// Starts `net`'s DNS server. A failure costs names on that network
    /// only (port 53 taken on its gateway, say): it is logged, and its
    /// endpoints are told no nameserver.
    pub(super) fn serve_names(&mut self, net: &NetworkState) {
        let Some(dns) = &mut self.dns else { return };
        // A LAN network's gateway is the LAN's router, not the host: its
        // containers use the LAN's resolvers.
        if net.lan().is_some() {
            return;
        }
        match dns.serve(&dns_network(net)) {
            Ok(()) => info!(network = %net.name, nameserver = %net.gateway, "serving names"),
            Err(err) => {
                warn!(network = %net.name, error = %err, "no DNS on this network")
            }
        }
    }

    /// Tries again, quietly, each network whose server could not start
    /// (its port 53 was taken: the other server may have gone since).
    pub(super) fn retry_names(&mut self) {
        let Some(dns) = &mut self.dns else { return };
        for net in self.state.all_networks().filter(|net| net.lan().is_none()) {
            if !dns.serves(&net.name) && dns.serve(&dns_network(net)).is_ok() {
                info!(network = %net.name, "serving names (port 53 was taken until now)");
            }
        }
    }

    pub(super) async fn stop_names(&mut self, network: &str) {
        if let Some(dns) = &mut self.dns {
            dns.stop(network).await;
        }
    }

    /// The resolver an endpoint on `net` is told: the network's gateway,
    /// with the network's name to search (as Podman's networks do).
    pub(super) fn endpoint_dns(&self, net: &NetworkState) -> Option<api::EndpointDns> {
        self.dns
            .as_ref()
            .filter(|dns| dns.serves(&net.name))
            .map(|_| api::EndpointDns {
                nameservers: vec![net.gateway],
                search: vec![net.name.clone()],
            })
    }
}
