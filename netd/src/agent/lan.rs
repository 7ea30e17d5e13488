// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! LAN networks: Docker's macvlan and ipvlan drivers, under the same core
//! as bridge networks. A LAN network has no bridge: its endpoints are
//! devices on a parent interface of the host (`-o parent=eth0`, or
//! `eth0.30`, the 802.1Q sub-interface netd makes and removes), each
//! container a host of the LAN with the LAN's subnet and gateway.
//!
//! What changes against a bridge endpoint is only the device: a macvlan
//! (its own MAC, derived from its address as on a bridge) or ipvlan (the
//! parent's MAC) device made directly inside the container's namespace,
//! with an ifindex netd chooses (`LAN_IFINDEX_BASE`), because netd's
//! program on it (`netd_lan_tc`, TC egress) finds the endpoint by ifindex
//! and a container's namespace numbers its devices from 1. Nothing is
//! translated: published ports do not apply, and the network's subnet is
//! not in `NETD_SUBNETS` (its addresses are the LAN's, not behind the
//! host). What the datapath adds is what macvlan lacks: anti-spoofing of
//! MAC, address and ARP, the network's policy (internal, ICC), counters
//! per endpoint, and, with `-o host_access=true`, the host's own device on
//! the parent (the shim operators add by hand: macvlan forbids a host to
//! reach its own containers through the parent) with a route per
//! endpoint.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use netd_common::endpoint::{LAN_IFINDEX_BASE, LAN_IFINDEXES};
use netlink_packet_route::link::{IpVlanFlags, IpVlanMode, MacVlanMode};
use thiserror::Error;
use tracing::{info, warn};

use super::{
    Agent,
    config::check_mtu,
    error::{AgentError, ErrorKind},
    state::{Driver, EndpointState, LanLink, NetworkState, Shim},
};
use crate::{
    datapath::{LAN_TC, TcMode},
    mac::MacAddr,
    netlink::{LanDevice, Netlink, NewLanDevice},
    netns::Netns,
    paths::lan_endpoint_link,
};

/// What can be wrong with a LAN network or endpoint request.
#[derive(Debug, Error)]
pub enum LanError {
    #[error("unknown network driver {0:?}: netd's are bridge (the default), macvlan and ipvlan")]
    UnknownDriver(String),
    #[error(
        "the host network is not one netd makes: a container on it shares the host's stack and needs nothing from netd (run it with --network host)"
    )]
    HostDriver,
    #[error(
        "--network host needs nothing from netd: a host-networked container shares the host's stack, so its ports are the host's own (nothing to publish) and 127.0.0.1 reaches them without a proxy"
    )]
    HostNetwork,
    #[error("a {driver} network needs -o parent=IFACE: the host's interface on the LAN")]
    NoParent { driver: &'static str },
    #[error("a {driver} network needs --subnet: its LAN's (netd cannot guess a LAN's addresses)")]
    NoSubnet { driver: &'static str },
    #[error(
        "parent interface {0} does not exist (IFACE.VLAN makes the VLAN sub-interface of an existing IFACE)"
    )]
    UnknownParent(String),
    #[error("parent {parent} cannot carry a LAN network: {why}")]
    BadParent { parent: String, why: String },
    #[error(
        "parent {parent} carries {driver} network {network}: Linux puts macvlan or ipvlan devices on a parent, never both"
    )]
    ParentTaken {
        parent: String,
        driver: &'static str,
        network: String,
    },
    #[error(
        "subnet {subnet} is not on parent {parent} (its networks: {networks}): a {driver} network's subnet is its LAN's; give {parent} an address in it, or use ipvlan_mode=l3 for a routed subnet"
    )]
    SubnetNotOnParent {
        subnet: Ipv4Net,
        parent: String,
        networks: String,
        driver: &'static str,
    },
    #[error("invalid {key} {value:?}: Docker's are {known}")]
    Mode {
        key: &'static str,
        value: String,
        known: &'static str,
    },
    #[error("unsupported {driver} network option {key:?} (supported: {supported})")]
    UnknownOption {
        driver: &'static str,
        key: String,
        supported: &'static str,
    },
    #[error(
        "network {network} is a {driver} network: its containers are hosts of the LAN with their own addresses, so nothing is published; reach them at ADDRESS:PORT"
    )]
    NoPublish {
        network: String,
        driver: &'static str,
    },
    #[error("ipvlan endpoints have their parent's MAC: --mac does not apply on network {0}")]
    IpvlanMac(String),
    #[error("no LAN endpoint device number left: netd gives out {0}")]
    NoIfindex(u32),
    #[error(
        "a runtime's LAN endpoint (Docker's) needs TCX (Linux 6.6 or later): a clsact filter does not follow the device into its container"
    )]
    RuntimeNeedsTcx,
}

impl LanError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownParent(_) => ErrorKind::NotFound,
            Self::ParentTaken { .. } => ErrorKind::Conflict,
            Self::NoIfindex(_) => ErrorKind::Exhausted,
            Self::RuntimeNeedsTcx => ErrorKind::Internal,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

const MACVLAN_MODES: &str = "bridge, private, vepa, passthru";
const IPVLAN_MODES: &str = "l2, l3, l3s";
const IPVLAN_FLAGS: &str = "bridge, private, vepa";

/// A LAN network's request, its options read.
pub(super) struct LanRequest {
    pub driver: &'static str,
    pub parent: String,
    pub mode: String,
    pub flag: Option<String>,
    pub host_access: bool,
    pub icc: Option<bool>,
    pub mtu: Option<u32>,
}

/// The LAN request `driver` and `options` make; `None` for a bridge
/// network (whose options are read elsewhere).
pub(super) fn parse_request(
    driver: &str,
    options: &[String],
) -> Result<Option<LanRequest>, LanError> {
    let driver = match driver {
        "" | "bridge" => return Ok(None),
        "macvlan" => "macvlan",
        "ipvlan" => "ipvlan",
        "host" => return Err(LanError::HostDriver),
        other => return Err(LanError::UnknownDriver(other.to_owned())),
    };
    let supported = if driver == "macvlan" {
        "parent, macvlan_mode, host_access, com.docker.network.driver.mtu, com.docker.network.bridge.enable_icc"
    } else {
        "parent, ipvlan_mode, ipvlan_flag, host_access, com.docker.network.driver.mtu, com.docker.network.bridge.enable_icc"
    };
    let mut req = LanRequest {
        driver,
        parent: String::new(),
        mode: if driver == "macvlan" { "bridge" } else { "l2" }.to_owned(),
        flag: None,
        host_access: false,
        icc: None,
        mtu: None,
    };
    for option in options {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        let known = |key: &'static str, known: &'static str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(value.to_owned())
            } else {
                Err(LanError::Mode {
                    key,
                    value: value.to_owned(),
                    known,
                })
            }
        };
        match (driver, key) {
            (_, "parent") => req.parent = value.to_owned(),
            ("macvlan", "macvlan_mode") => {
                req.mode = known(
                    "macvlan_mode",
                    MACVLAN_MODES,
                    &["bridge", "private", "vepa", "passthru"],
                )?;
            }
            ("ipvlan", "ipvlan_mode") => {
                req.mode = known("ipvlan_mode", IPVLAN_MODES, &["l2", "l3", "l3s"])?;
            }
            ("ipvlan", "ipvlan_flag") => {
                req.flag = Some(known(
                    "ipvlan_flag",
                    IPVLAN_FLAGS,
                    &["bridge", "private", "vepa"],
                )?);
            }
            (_, "host_access") => {
                req.host_access = parse_flag("host_access", value)?;
            }
            (_, "com.docker.network.bridge.enable_icc") => {
                req.icc = Some(parse_flag("com.docker.network.bridge.enable_icc", value)?);
            }
            (_, "com.docker.network.driver.mtu") => {
                req.mtu = Some(value.parse().map_err(|_| LanError::Mode {
                    key: "com.docker.network.driver.mtu",
                    value: value.to_owned(),
                    known: "a number",
                })?);
            }
            _ => {
                return Err(LanError::UnknownOption {
                    driver,
                    key: key.to_owned(),
                    supported,
                });
            }
        }
    }
    if req.parent.is_empty() {
        return Err(LanError::NoParent { driver });
    }
    Ok(Some(req))
}

fn parse_flag(key: &'static str, value: &str) -> Result<bool, LanError> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(LanError::Mode {
            key,
            value: value.to_owned(),
            known: "true, false",
        }),
    }
}

/// The interface and VLAN ID a parent `IFACE.VLAN` names, if it has that
/// form.
fn vlan_of(parent: &str) -> Option<(&str, &str)> {
    parent
        .rsplit_once('.')
        .filter(|(base, id)| !base.is_empty() && !id.is_empty())
}

/// The device kind of `net`'s endpoints.
fn device_kind(net: &NetworkState) -> Option<LanDevice> {
    let (macvlan, lan) = match &net.driver {
        Driver::Bridge => return None,
        Driver::Macvlan(lan) => (true, lan),
        Driver::Ipvlan(lan) => (false, lan),
    };
    Some(if macvlan {
        LanDevice::Macvlan(match lan.mode.as_str() {
            "private" => MacVlanMode::Private,
            "vepa" => MacVlanMode::Vepa,
            "passthru" => MacVlanMode::Passthrough,
            _ => MacVlanMode::Bridge,
        })
    } else {
        LanDevice::Ipvlan(
            match lan.mode.as_str() {
                "l3" => IpVlanMode::L3,
                "l3s" => IpVlanMode::L3S,
                _ => IpVlanMode::L2,
            },
            match lan.flag.as_deref() {
                Some("private") => IpVlanFlags::Private,
                Some("vepa") => IpVlanFlags::Vepa,
                _ => IpVlanFlags::empty(),
            },
        )
    })
}

/// Whether `lan` puts its endpoints on the parent's link (they share its
/// subnet), rather than routing a subnet of their own (ipvlan L3).
fn on_link(driver: &'static str, mode: &str) -> bool {
    driver == "macvlan" || mode == "l2"
}

impl Agent {
    /// Checks `req` against the host (its parent, or the VLAN sub-interface
    /// to make, and `subnet` on it) and the other networks; returns the
    /// driver to record and the MTU. `id` is the new network's.
    pub(super) async fn plan_lan(
        &self,
        req: &LanRequest,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        aux: &BTreeMap<String, Ipv4Addr>,
        id: &str,
    ) -> Result<(Driver, u32), AgentError> {
        let bad = |why: String| LanError::BadParent {
            parent: req.parent.clone(),
            why,
        };
        let (parent, made_parent) = match self.nl.link(&req.parent).await? {
            Some(link) => (link, false),
            None => {
                let Some((base, vlan)) = vlan_of(&req.parent) else {
                    return Err(LanError::UnknownParent(req.parent.clone()).into());
                };
                match vlan.parse::<u16>() {
                    Ok(1..=4094) => {}
                    _ => return Err(bad(format!("VLAN ID {vlan:?} is not 1-4094")).into()),
                }
                if req.parent.len() > 15 {
                    return Err(bad("longer than an interface name's 15 bytes".to_owned()).into());
                }
                let base = self
                    .nl
                    .link(base)
                    .await?
                    .ok_or_else(|| LanError::UnknownParent(base.to_owned()))?;
                (base, true)
            }
        };
        // A sub-interface another netd network made is netd's still: it
        // goes with the last network on it.
        let made_parent = made_parent
            || self.state.all_networks().any(|n| {
                n.lan()
                    .is_some_and(|l| l.parent == req.parent && l.made_parent)
            });
        if let Some(why) = self.netd_device(&parent.name) {
            return Err(bad(why).into());
        }
        for other in self.state.all_networks() {
            let (Some(lan), true) = (other.lan(), other.driver.name() != req.driver) else {
                continue;
            };
            if lan.parent == req.parent {
                return Err(LanError::ParentTaken {
                    parent: req.parent.clone(),
                    driver: other.driver.name(),
                    network: other.name.clone(),
                }
                .into());
            }
        }
        // A LAN's subnet is on its parent: an address or an on-link route
        // of the parent within it. A parent without any (an unaddressed
        // NIC given to containers) is the administrator's to know, and
        // a sub-interface netd makes has none yet.
        if !made_parent && on_link(req.driver, &req.mode) {
            let mut networks: Vec<Ipv4Net> = self
                .nl
                .addresses()
                .await?
                .iter()
                .filter(|a| a.index == parent.index)
                .filter_map(|a| Ipv4Net::new(a.ip, a.prefix_len).ok().map(|n| n.trunc()))
                .collect();
            networks.extend(
                self.nl
                    .routes()
                    .await?
                    .iter()
                    .filter(|r| r.oif == Some(parent.index) && r.gateway.is_none())
                    .map(|r| r.destination),
            );
            if !networks.is_empty() && !networks.iter().any(|n| super::ipam::overlaps(n, &subnet)) {
                networks.sort();
                networks.dedup();
                return Err(LanError::SubnetNotOnParent {
                    subnet,
                    parent: req.parent.clone(),
                    networks: networks
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    driver: req.driver,
                }
                .into());
            }
        }
        let mtu = req.mtu.unwrap_or(parent.mtu);
        check_mtu(mtu)?;
        if mtu > parent.mtu {
            return Err(bad(format!(
                "its MTU is {}, below com.docker.network.driver.mtu={mtu}",
                parent.mtu
            ))
            .into());
        }
        let shim = if req.host_access {
            let ip = match aux.get("host") {
                Some(ip) => *ip,
                None => {
                    let taken = self.reserved(subnet, aux, Some(parent.index)).await?;
                    super::ipam::next_free(subnet, gateway, &taken)?
                }
            };
            Some(Shim {
                ifname: format!("nh-{}", &id[..12]),
                ip,
            })
        } else {
            None
        };
        let lan = LanLink {
            parent: req.parent.clone(),
            mode: req.mode.clone(),
            flag: req.flag.clone(),
            made_parent,
            shim,
        };
        let driver = if req.driver == "macvlan" {
            Driver::Macvlan(lan)
        } else {
            Driver::Ipvlan(lan)
        };
        Ok((driver, mtu))
    }

    /// What netd made of `name`, if it is one of netd's own devices, which
    /// no LAN network stands on.
    fn netd_device(&self, name: &str) -> Option<String> {
        if name == "lo" {
            return Some("it is the loopback interface".to_owned());
        }
        for net in self.state.all_networks() {
            if net.lan().is_none() && net.bridge == name {
                return Some(format!("it is the bridge of netd network {}", net.name));
            }
            if net
                .lan()
                .and_then(|lan| lan.shim.as_ref())
                .is_some_and(|shim| shim.ifname == name)
            {
                return Some(format!("it is netd's host shim of network {}", net.name));
            }
        }
        self.state
            .endpoints
            .values()
            .find(|ep| ep.host_ifname == name)
            .map(|ep| format!("it is the host veth of endpoint {}", ep.name))
    }

    /// Addresses of `subnet` no endpoint gets besides the endpoints' own:
    /// the aux addresses, the host's own on `parent`, a shim's.
    pub(super) async fn reserved(
        &self,
        subnet: Ipv4Net,
        aux: &BTreeMap<String, Ipv4Addr>,
        parent: Option<u32>,
    ) -> Result<BTreeMap<Ipv4Addr, String>, AgentError> {
        let mut reserved: BTreeMap<Ipv4Addr, String> = aux
            .iter()
            .map(|(name, ip)| (*ip, format!("aux address {name}")))
            .collect();
        if let Some(parent) = parent {
            for address in self.nl.addresses().await? {
                if address.index == parent && subnet.contains(&address.ip) {
                    reserved.insert(address.ip, "the host's own".to_owned());
                }
            }
        }
        Ok(reserved)
    }

    /// Makes what `net` needs on the host: its parent if netd makes it
    /// (the VLAN sub-interface), its shim. Idempotent: the agent calls it
    /// at start for every LAN network.
    pub(super) async fn make_lan(&self, net: &NetworkState) -> Result<(), AgentError> {
        let Some(lan) = net.lan() else { return Ok(()) };
        let parent = match self.nl.link(&lan.parent).await? {
            Some(parent) => parent,
            None if lan.made_parent => {
                let (base, vlan) = vlan_of(&lan.parent).expect("checked at creation");
                let base = self
                    .nl
                    .link(base)
                    .await?
                    .ok_or_else(|| LanError::UnknownParent(base.to_owned()))?;
                let id = vlan.parse().expect("checked at creation");
                self.nl.create_vlan(&lan.parent, base.index, id).await?;
                info!(network = %net.name, parent = %lan.parent, vlan = id, "created VLAN sub-interface");
                self.nl
                    .link(&lan.parent)
                    .await?
                    .ok_or_else(|| LanError::UnknownParent(lan.parent.clone()))?
            }
            None => return Err(LanError::UnknownParent(lan.parent.clone()).into()),
        };
        if let Some(shim) = &lan.shim
            && self.nl.link(&shim.ifname).await?.is_none()
        {
            // A macvlan shim reaches the containers only in bridge mode
            // (they forward locally only between bridge-mode devices).
            let kind = match device_kind(net).expect("a LAN network") {
                LanDevice::Macvlan(_) => LanDevice::Macvlan(MacVlanMode::Bridge),
                ipvlan => ipvlan,
            };
            self.nl
                .create_lan_device(&NewLanDevice {
                    name: &shim.ifname,
                    kind,
                    parent: parent.index,
                    // The kernel's choice: it lives in the agent's namespace.
                    index: 0,
                    netns: None,
                    mac: matches!(kind, LanDevice::Macvlan(_)).then(|| MacAddr::from_ipv4(shim.ip)),
                    mtu: net.mtu,
                })
                .await?;
            let link = self
                .nl
                .link(&shim.ifname)
                .await?
                .ok_or_else(|| LanError::UnknownParent(shim.ifname.clone()))?;
            self.nl
                .add_address(link.index, shim.ip, 32, &shim.ifname)
                .await?;
            self.nl.set_up(link.index, &shim.ifname).await?;
            info!(network = %net.name, shim = %shim.ifname, ip = %shim.ip, "host access: created the shim");
        }
        Ok(())
    }

    /// Removes what [`Self::make_lan`] made, best effort: the shim, and the
    /// parent if netd made it and no other network stands on it.
    pub(super) async fn unmake_lan(&self, net: &NetworkState) {
        let Some(lan) = net.lan() else { return };
        let mut doomed = Vec::new();
        if let Some(shim) = &lan.shim {
            doomed.push(shim.ifname.clone());
        }
        let shared = self.state.all_networks().any(|other| {
            other.name != net.name && other.lan().is_some_and(|o| o.parent == lan.parent)
        });
        if lan.made_parent && !shared {
            doomed.push(lan.parent.clone());
        }
        for name in doomed {
            match self.nl.link(&name).await {
                Ok(Some(link)) => {
                    if let Err(err) = self.nl.del_link(link.index, &name).await {
                        warn!(network = %net.name, error = %err, "deleting {name}");
                    }
                }
                Ok(None) => {}
                Err(err) => warn!(network = %net.name, error = %err, "looking up {name}"),
            }
        }
    }

    /// The lowest LAN device ifindex no endpoint has.
    pub(super) fn free_lan_ifindex(&self) -> Result<u32, LanError> {
        let taken: std::collections::BTreeSet<u32> = self
            .state
            .endpoints
            .values()
            .filter_map(|ep| ep.lan_ifindex)
            .collect();
        (LAN_IFINDEX_BASE..LAN_IFINDEX_BASE + LAN_IFINDEXES)
            .find(|index| !taken.contains(index))
            .ok_or(LanError::NoIfindex(LAN_IFINDEXES))
    }

    /// The MAC an endpoint on LAN network `net` gets: the one asked for or
    /// derived from its address on macvlan, the parent's on ipvlan.
    pub(super) async fn lan_mac(
        &self,
        net: &NetworkState,
        ip: Ipv4Addr,
        asked: Option<MacAddr>,
    ) -> Result<MacAddr, AgentError> {
        match &net.driver {
            Driver::Ipvlan(lan) => {
                if asked.is_some() {
                    return Err(LanError::IpvlanMac(net.name.clone()).into());
                }
                let parent = self
                    .nl
                    .link(&lan.parent)
                    .await?
                    .ok_or_else(|| LanError::UnknownParent(lan.parent.clone()))?;
                Ok(parent.mac.unwrap_or(MacAddr([0; 6])))
            }
            _ => Ok(asked.unwrap_or_else(|| MacAddr::from_ipv4(ip))),
        }
    }

    /// Creates LAN endpoint `ep`'s device on its network's parent, inside
    /// `ns` (`None`: here, for a runtime to move), with its ifindex.
    pub(super) async fn create_lan_device(
        &self,
        ep: &EndpointState,
        ns: Option<&Netns>,
    ) -> Result<(), AgentError> {
        let net = self.state.network_of(ep);
        let lan = net.lan().expect("a LAN network");
        let parent = self
            .nl
            .link(&lan.parent)
            .await?
            .ok_or_else(|| LanError::UnknownParent(lan.parent.clone()))?;
        let kind = device_kind(net).expect("a LAN network");
        let index = ep.lan_ifindex.expect("a LAN endpoint");
        let created = self
            .nl
            .create_lan_device(&NewLanDevice {
                name: &ep.ifname,
                kind,
                parent: parent.index,
                index,
                netns: ns,
                mac: matches!(kind, LanDevice::Macvlan(_)).then_some(ep.mac),
                mtu: net.mtu,
            })
            .await;
        match created {
            Err(err) if err.errno() == Some(libc::EEXIST) => Err(AgentError::IfnameTaken {
                path: ep.netns.clone(),
                ifname: ep.ifname.clone(),
            }),
            // Another device of the parent's kind holds it (macvlan on an
            // ipvlan parent, a second passthru).
            Err(err) if err.errno() == Some(libc::EBUSY) => Err(LanError::BadParent {
                parent: lan.parent.clone(),
                why: crate::error::one_line(&err),
            }
            .into()),
            other => Ok(other?),
        }
    }

    /// Attaches netd's program to LAN endpoint `ep`'s device, records it in
    /// the datapath, and routes it through the host's shim if there is one.
    pub(super) async fn connect_lan_endpoint(
        &mut self,
        ep: &EndpointState,
    ) -> Result<(), AgentError> {
        let index = ep.lan_ifindex.expect("a LAN endpoint");
        let net = self.state.network_of(ep).clone();
        // What the container may send is known before its program runs.
        self.datapath
            .maps()
            .set_veth(index, ep.ip, ep.mac.0, net.index)?;
        self.datapath.maps().count_endpoint(index)?;
        let pin = lan_endpoint_link(index);
        if ep.netns_ident.ino == 0 {
            // A runtime's to move: attached here before the move (a TCX
            // link follows its device), adopted by its pin afterwards.
            if self.datapath.tc_mode() == TcMode::Netlink {
                return Err(LanError::RuntimeNeedsTcx.into());
            }
            self.datapath.attach_tc_egress(LAN_TC, &ep.ifname, &pin)?;
        } else {
            // In its namespace, never here: a defunct pin falls back to
            // attaching by name, which must find the container's device.
            let ns = Netns::open(&ep.netns.to_string_lossy())?;
            let datapath = &mut self.datapath;
            ns.run(|| datapath.attach_tc_egress(LAN_TC, &ep.ifname, &pin))??;
        }
        self.datapath.maps().set_endpoint(
            ep.ip,
            netd_common::endpoint::EndpointInfo {
                ifindex: index,
                mac: ep.mac.0,
                network: net.index,
            },
        )?;
        if let Some(shim) = net.lan().and_then(|lan| lan.shim.as_ref())
            && let Some(link) = self.nl.link(&shim.ifname).await?
        {
            self.nl
                .add_link_route(Ipv4Net::from(ep.ip), link.index)
                .await?;
        }
        Ok(())
    }

    /// Removes the shim's route to LAN endpoint `ep`, if it has one; best
    /// effort.
    pub(super) async fn unroute_shim(&self, ep: &EndpointState) {
        let net = self.state.network_of(ep);
        let Some(shim) = net.lan().and_then(|lan| lan.shim.as_ref()) else {
            return;
        };
        if let Ok(Some(link)) = self.nl.link(&shim.ifname).await
            && let Err(err) = self
                .nl
                .del_link_route(Ipv4Net::from(ep.ip), link.index)
                .await
        {
            warn!(endpoint = %ep.name, error = %err, "removing the shim's route");
        }
    }

    /// Deletes LAN endpoint `ep`'s device wherever it is (see
    /// [`remove_lan_device`]).
    pub(super) async fn delete_lan_device(&self, ep: &EndpointState) -> Result<(), AgentError> {
        remove_lan_device(&self.nl, ep).await?;
        Ok(())
    }

    /// Whether LAN endpoint `ep`'s device is in its namespace still (a
    /// runtime's, whose namespace netd does not know, is taken to be).
    pub(super) async fn lan_device_present(&self, ep: &EndpointState) -> bool {
        if ep.netns_ident.ino == 0 {
            return true;
        }
        let Ok(ns) = Netns::open(&ep.netns.to_string_lossy()) else {
            return false;
        };
        let Ok(inside) = Netlink::connect_in(&ns) else {
            return false;
        };
        let index = ep.lan_ifindex.expect("a LAN endpoint");
        matches!(inside.link_by_index(index).await, Ok(Some(_)))
    }

    /// Whether LAN endpoint `ep`'s device is gone with its namespace.
    pub(super) fn lan_endpoint_gone(&self, ep: &EndpointState) -> bool {
        if ep.netns_ident.ino == 0 {
            // A runtime's, moved where netd does not know.
            return false;
        }
        Netns::open(&ep.netns.to_string_lossy()).map_or(true, |ns| ns.ident() != ep.netns_ident)
    }
}

/// Deletes LAN endpoint `ep`'s device wherever it is: in its namespace,
/// or in `nl`'s (not moved yet, or given back by its runtime). A namespace
/// that is gone took it along. Whether there was one to delete.
pub(super) async fn remove_lan_device(
    nl: &Netlink,
    ep: &EndpointState,
) -> Result<bool, crate::netlink::NetlinkError> {
    let index = ep.lan_ifindex.expect("a LAN endpoint");
    if let Some(link) = nl.link_by_index(index).await? {
        nl.del_link(index, &link.name).await?;
        return Ok(true);
    }
    if ep.netns_ident.ino == 0 {
        return Ok(false);
    }
    let Ok(ns) = Netns::open(&ep.netns.to_string_lossy()) else {
        return Ok(false);
    };
    if ns.ident() != ep.netns_ident {
        return Ok(false);
    }
    let Ok(inside) = Netlink::connect_in(&ns) else {
        return Ok(false);
    };
    match inside.link_by_index(index).await? {
        Some(link) => {
            inside.del_link(index, &link.name).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_follow_dockers_names_and_defaults() {
        assert!(parse_request("bridge", &[]).expect("bridge").is_none());
        let req = parse_request("macvlan", &opts(&["parent=eth0"]))
            .expect("ok")
            .expect("lan");
        assert_eq!((req.driver, req.mode.as_str()), ("macvlan", "bridge"));
        let req = parse_request("ipvlan", &opts(&["parent=eth0.30", "ipvlan_mode=l3"]))
            .expect("ok")
            .expect("lan");
        assert_eq!((req.parent.as_str(), req.mode.as_str()), ("eth0.30", "l3"));
        for (driver, options, needle) in [
            ("macvlan", &[][..], "needs -o parent"),
            (
                "macvlan",
                &["parent=eth0", "macvlan_mode=l2"][..],
                "Docker's are bridge, private",
            ),
            (
                "ipvlan",
                &["parent=eth0", "ipvlan_mode=l4"][..],
                "Docker's are l2, l3, l3s",
            ),
            (
                "macvlan",
                &["parent=eth0", "ipvlan_mode=l2"][..],
                "unsupported macvlan network option",
            ),
            (
                "macvlan",
                &["parent=eth0", "host_access=maybe"][..],
                "true, false",
            ),
            ("overlay", &[][..], "unknown network driver"),
            ("host", &[][..], "shares the host's stack"),
        ] {
            let err = match parse_request(driver, &opts(options)) {
                Err(err) => err.to_string(),
                Ok(_) => panic!("{driver} {options:?} accepted"),
            };
            assert!(err.contains(needle), "{driver} {options:?}: {err}");
        }
    }

    #[test]
    fn vlan_parents_are_iface_dot_id() {
        assert_eq!(vlan_of("eth0.30"), Some(("eth0", "30")));
        assert_eq!(vlan_of("eth0"), None);
        assert_eq!(vlan_of(".30"), None);
    }
}
