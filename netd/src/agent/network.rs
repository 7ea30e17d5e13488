// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Networks: the default one (`netd`, made from the agent's flags, as
//! Docker's `bridge`) and those made at run time (`netd network create`,
//! as Docker's user-defined networks). Each has its bridge, subnet,
//! gateway and options, and an index under which the datapath keeps its
//! settings (`NETD_NETWORKS`, `NETD_SUBNETS`).
//!
//! A network is recorded before its bridge exists and forgotten after its
//! bridge is gone: a crash in between leaves a record whose bridge the next
//! agent makes again (creation finished; a removal can be asked again).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;
use netd_common::endpoint::MAX_NETWORKS;
use tracing::{info, warn};

use super::{
    Agent,
    config::{NetworkOptions, contradiction, networks_in_use},
    ensure_bridge,
    error::AgentError,
    ipam,
    lan::{self, LanError},
    now_rfc3339, random_hex,
    state::{Change, Driver, NetworkState},
};
use crate::api;

/// Docker's rule for network names (`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`), with
/// netd's bound on their length.
fn check_network_name(name: &str) -> Result<(), AgentError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("at most 64 bytes")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or a digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("use letters, digits, '_', '.' and '-'")
    } else {
        None
    };
    match why {
        Some(why) => Err(AgentError::NetworkName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// `KEY=VALUE` labels.
fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, AgentError> {
    labels
        .iter()
        .map(|label| match label.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            // Docker takes a bare key as an empty value.
            None if !label.is_empty() => Ok((label.clone(), String::new())),
            _ => Err(AgentError::Label(label.clone())),
        })
        .collect()
}

/// The options of the default network as Docker shows its `bridge`: the
/// whole set, `default_bridge` included.
fn default_network_options(net: &NetworkState) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "com.docker.network.bridge.default_bridge".to_owned(),
            "true".to_owned(),
        ),
        (
            "com.docker.network.bridge.name".to_owned(),
            net.bridge.clone(),
        ),
        (
            "com.docker.network.bridge.enable_icc".to_owned(),
            net.icc.to_string(),
        ),
        (
            "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
            net.masquerade.to_string(),
        ),
        (
            "com.docker.network.bridge.host_binding_ipv4".to_owned(),
            net.host_binding.to_string(),
        ),
        (
            "com.docker.network.driver.mtu".to_owned(),
            net.mtu.to_string(),
        ),
    ])
}

impl Agent {
    /// The network `given` names (its name, its ID, or a unique prefix of
    /// its ID, as Docker takes them); the default network for `None`.
    pub(super) fn resolve_network(&self, given: Option<&str>) -> Result<&NetworkState, AgentError> {
        let Some(given) = given else {
            return Ok(&self.state.network);
        };
        if let Some(net) = self.state.network_named(given) {
            return Ok(net);
        }
        if given == "host" {
            return Err(LanError::HostNetwork.into());
        }
        let mut by_id = self
            .state
            .all_networks()
            .filter(|net| !given.is_empty() && net.id.starts_with(given));
        match (by_id.next(), by_id.next()) {
            (Some(net), None) => Ok(net),
            _ => Err(AgentError::UnknownNetwork(given.to_owned())),
        }
    }

    /// Creates a network as `netd network create` asks: checks everything,
    /// records it, then makes its bridge and its datapath entries.
    pub async fn create_network(
        &mut self,
        req: api::NetworkCreateRequest,
    ) -> Result<api::NetworkSummary, AgentError> {
        self.make_network(req, None).await
    }

    /// [`Self::create_network`], for the Docker network `docker_id` when
    /// Docker's driver asks.
    pub(super) async fn make_network(
        &mut self,
        req: api::NetworkCreateRequest,
        docker_id: Option<String>,
    ) -> Result<api::NetworkSummary, AgentError> {
        check_network_name(&req.name)?;
        // Docker's predefined host network: nothing netd makes.
        if req.name == "host" {
            return Err(LanError::HostNetwork.into());
        }
        let lan = lan::parse_request(&req.driver, &req.options)?;
        // A LAN network's options are its driver's (read above).
        let options = match lan {
            None => NetworkOptions::parse_given(&req.options)?,
            Some(_) => NetworkOptions::default(),
        };
        let labels = parse_labels(&req.labels)?;
        let subnet = req
            .subnet
            .as_deref()
            .map(|text| {
                text.parse::<Ipv4Net>()
                    .map(|net| net.trunc())
                    .map_err(|_| AgentError::SubnetSyntax(text.to_owned()))
            })
            .transpose()?;
        let gateway = req
            .gateway
            .as_deref()
            .map(|text| {
                text.parse()
                    .map_err(|_| AgentError::IpSyntax(text.to_owned()))
            })
            .transpose()?;
        if let Some(existing) = self.state.network_named(&req.name) {
            if !req.exist_ok {
                return Err(AgentError::NetworkExists(req.name));
            }
            let driver = lan.as_ref().map_or("bridge", |lan| lan.driver);
            if existing.driver.name() != driver {
                return Err(AgentError::NetworkContradiction {
                    name: req.name,
                    setting: "driver",
                    given: driver.to_owned(),
                    existing: existing.driver.name().to_owned(),
                });
            }
            if let (Some(lan), Some(had)) = (&lan, existing.lan())
                && (lan.parent != had.parent || lan.mode != had.mode)
            {
                return Err(AgentError::NetworkContradiction {
                    name: req.name,
                    setting: "parent and mode",
                    given: format!("{} {}", lan.parent, lan.mode),
                    existing: format!("{} {}", had.parent, had.mode),
                });
            }
            if let Some(c) = contradiction(existing, subnet, gateway, req.internal, &options) {
                return Err(AgentError::NetworkContradiction {
                    name: req.name,
                    setting: c.setting,
                    given: c.given,
                    existing: c.existing,
                });
            }
            return Ok(self.summary(existing));
        }
        let taken: BTreeSet<u16> = self.state.all_networks().map(|net| net.index).collect();
        let index = (1..MAX_NETWORKS as u16)
            .find(|i| !taken.contains(i))
            .ok_or(AgentError::TooManyNetworks(MAX_NETWORKS))?;

        // Subnets never overlap: not another network's, nor (for a bridge
        // network) a route or an address of the host, which include every
        // network's bridge. A LAN network's subnet is its LAN's, on the
        // host's routes by definition.
        let mut in_use = match &lan {
            None => networks_in_use(&self.nl, None).await?,
            Some(lan) if subnet.is_none() => {
                return Err(LanError::NoSubnet { driver: lan.driver }.into());
            }
            Some(_) => Vec::new(),
        };
        in_use.extend(self.state.all_networks().map(|net| net.subnet));
        let (subnet, gateway) = ipam::choose(subnet, gateway, &in_use)?;
        let ip_range = req
            .ip_range
            .as_deref()
            .map(|text| ipam::parse_range(text, subnet))
            .transpose()?;
        let aux_addresses = ipam::parse_aux(&req.aux_addresses, subnet, gateway)?;

        let id = random_hex(32);
        let (bridge, driver, mtu, icc) = match &lan {
            None => {
                let bridge = options
                    .bridge
                    .clone()
                    .unwrap_or_else(|| format!("nd-{}", &id[..12]));
                if self.nl.link(&bridge).await?.is_some() {
                    return Err(AgentError::BridgeExists(bridge));
                }
                let mtu = options.mtu.unwrap_or(self.state.network.mtu);
                (bridge, Driver::Bridge, mtu, options.icc)
            }
            Some(lan) => {
                let (driver, mtu) = self
                    .plan_lan(lan, subnet, gateway, &aux_addresses, &id)
                    .await?;
                (String::new(), driver, mtu, lan.icc)
            }
        };
        let network = NetworkState {
            id,
            name: req.name.clone(),
            created: now_rfc3339(),
            bridge,
            subnet,
            gateway,
            mtu,
            icc: icc.unwrap_or(true),
            masquerade: options.masquerade.unwrap_or(true),
            internal: req.internal,
            host_binding: options
                .host_binding
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            index,
            options: req
                .options
                .iter()
                .filter_map(|o| o.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            labels,
            docker_id,
            driver,
            ip_range,
            aux_addresses,
        };
        self.commit(Change::NetworkCreated {
            network: Box::new(network.clone()),
        })?;
        let made = match self.make_carrier(&network).await {
            Ok(()) => self.sync_network(&network).await,
            Err(err) => Err(err),
        };
        if let Err(err) = made {
            self.unmake_network(&network).await;
            if let Err(undo) = self.commit(Change::NetworkRemoved {
                name: network.name.clone(),
            }) {
                warn!(network = %network.name, error = %crate::error::one_line(&undo), "rolled back a network's creation, but could not record it; the next agent makes its bridge again");
            }
            return Err(err);
        }
        self.serve_names(&network);
        info!(network = %network.name, id = %network.id, bridge = %network.bridge, subnet = %network.subnet, gateway = %network.gateway, "network created");
        Ok(self.summary(&network))
    }

    /// Makes what carries `network`'s endpoints: its bridge, or what a LAN
    /// network needs on the host (see [`Self::make_lan`]).
    pub(super) async fn make_carrier(&mut self, network: &NetworkState) -> Result<(), AgentError> {
        if network.lan().is_some() {
            return self.make_lan(network).await;
        }
        let index = ensure_bridge(&self.nl, network).await?;
        self.bridges.insert(network.name.clone(), index);
        Ok(())
    }

    /// Removes what exists of `network` in the kernel: its datapath
    /// entries and its bridge (or a LAN network's own devices).
    async fn unmake_network(&mut self, network: &NetworkState) {
        self.stop_names(&network.name).await;
        if let Err(err) = self
            .datapath
            .maps()
            .remove_network(network.index, network.subnet)
        {
            warn!(network = %network.name, error = %err, "removing the network from the datapath");
        }
        if network.lan().is_some() {
            self.unmake_lan(network).await;
            return;
        }
        self.bridges.remove(&network.name);
        match self.nl.link(&network.bridge).await {
            Ok(Some(link)) => {
                if let Err(err) = self.nl.del_link(link.index, &network.bridge).await {
                    warn!(network = %network.name, error = %err, "deleting the bridge");
                }
            }
            Ok(None) => {}
            Err(err) => warn!(network = %network.name, error = %err, "looking up the bridge"),
        }
    }

    /// Removes the network `given` names, refused while endpoints are on
    /// it; the default network goes only with the agent (`netd down`).
    pub async fn remove_network(&mut self, given: &str) -> Result<api::NetworkSummary, AgentError> {
        let network = self.resolve_network(Some(given))?.clone();
        if network.name == self.state.network.name {
            return Err(AgentError::DefaultNetwork(network.name));
        }
        let attached: Vec<String> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.network.as_deref() == Some(network.name.as_str()))
            .map(|ep| ep.name.clone())
            .collect();
        if !attached.is_empty() {
            return Err(AgentError::NetworkInUse {
                name: network.name,
                endpoints: attached.join(", "),
            });
        }
        let summary = self.summary(&network);
        self.unmake_network(&network).await;
        if let Err(err) = self.commit(Change::NetworkRemoved {
            name: network.name.clone(),
        }) {
            // Still recorded: make it whole again, as the next agent would.
            if self.make_carrier(&network).await.is_ok() {
                let _ = self.sync_network(&network).await;
                self.serve_names(&network);
            }
            return Err(err);
        }
        info!(network = %network.name, id = %network.id, "network removed");
        Ok(summary)
    }

    fn summary(&self, net: &NetworkState) -> api::NetworkSummary {
        api::NetworkSummary {
            id: net.id.clone(),
            name: net.name.clone(),
            driver: net.driver.name().to_owned(),
            scope: "local".to_owned(),
            subnet: net.subnet,
            gateway: net.gateway,
            bridge: net.bridge.clone(),
            parent: net.lan().map(|lan| lan.parent.clone()),
            internal: net.internal,
            endpoints: self
                .state
                .endpoints
                .values()
                .filter(|ep| self.state.network_of(ep).name == net.name)
                .count(),
            created: net.created.clone(),
        }
    }

    /// Every network, the default one first, as `netd network ls` lists
    /// them.
    pub fn networks(&self) -> Vec<api::NetworkSummary> {
        self.state
            .all_networks()
            .map(|net| self.summary(net))
            .collect()
    }

    /// The networks `names` name (all of them if none), shaped like
    /// `docker network inspect`.
    pub fn inspect(&self, names: &[String]) -> Result<Vec<api::NetworkInspect>, AgentError> {
        let nets: Vec<&NetworkState> = if names.is_empty() {
            self.state.all_networks().collect()
        } else {
            names
                .iter()
                .map(|name| self.resolve_network(Some(name)))
                .collect::<Result<_, _>>()?
        };
        Ok(nets.into_iter().map(|net| self.inspect_one(net)).collect())
    }

    fn inspect_one(&self, net: &NetworkState) -> api::NetworkInspect {
        let containers = self
            .state
            .endpoints
            .values()
            .filter(|ep| self.state.network_of(ep).name == net.name)
            .map(|ep| {
                (
                    ep.id.clone(),
                    api::ContainerInspect {
                        name: ep.name.clone(),
                        endpoint_id: ep.id.clone(),
                        mac_address: ep.mac,
                        ipv4_address: format!("{}/{}", ep.ip, net.subnet.prefix_len()),
                        ipv6_address: String::new(),
                        owner: ep.owner.clone().unwrap_or_else(|| "netd".to_owned()),
                    },
                )
            })
            .collect();
        let default = net.name == self.state.network.name;
        api::NetworkInspect {
            name: net.name.clone(),
            id: net.id.clone(),
            created: net.created.clone(),
            scope: "local".to_owned(),
            driver: net.driver.name().to_owned(),
            enable_ipv6: false,
            ipam: api::Ipam {
                driver: "default".to_owned(),
                // Docker: null for its default bridge, {} for the others.
                options: (!default).then(BTreeMap::new),
                config: vec![api::IpamConfig {
                    subnet: net.subnet,
                    ip_range: net.ip_range,
                    gateway: net.gateway,
                    aux_addresses: net.aux_addresses.clone(),
                }],
            },
            internal: net.internal,
            // Attachable is a Swarm notion: false on a local network.
            attachable: false,
            ingress: false,
            config_from: api::ConfigFrom::default(),
            config_only: false,
            containers,
            // The default network shows the whole set, as Docker's
            // `bridge`; a user-defined one only what was set, as Docker.
            options: if default {
                default_network_options(net)
            } else {
                net.options.clone()
            },
            labels: net.labels.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_follow_dockers_rule() {
        for good in [
            "a",
            "front-end",
            "proj_default",
            "x.y",
            "9lives",
            &"n".repeat(64),
        ] {
            assert!(check_network_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (&"n".repeat(65) as &str, "at most 64"),
            ("-net", "start with"),
            (".net", "start with"),
            ("my net", "use letters"),
            ("a/b", "use letters"),
        ] {
            let err = check_network_name(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn labels_are_key_value_pairs() {
        let labels =
            parse_labels(&["a=1".to_owned(), "b".to_owned(), "c=x=y".to_owned()]).expect("labels");
        assert_eq!(labels["a"], "1");
        assert_eq!(labels["b"], "");
        assert_eq!(labels["c"], "x=y");
        assert!(parse_labels(&["=v".to_owned()]).is_err());
        assert!(parse_labels(&[String::new()]).is_err());
    }
}
