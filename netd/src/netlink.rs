// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! rtnetlink behind typed calls. Every request says what it was doing
//! ("create veth vethab12"), so a failure reads as one clear line.
//!
//! A [`Netlink`] talks to the namespace its socket was opened in:
//! [`Netlink::connect`] for the agent's own, [`Netlink::connect_in`] for a
//! container's (the socket is created on a thread inside that namespace and
//! stays bound to it).

use std::{io, net::Ipv4Addr};

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use netlink_packet_route::{
    AddressFamily,
    address::AddressAttribute,
    link::{
        InfoData, InfoKind, InfoVeth, IpVlanFlags, IpVlanMode, LinkAttribute, LinkFlags, LinkInfo,
        LinkMessage, LinkXdp, MacVlanMode, XdpAttached,
    },
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
};
use rtnetlink::{
    Handle, IpVersion, LinkBridge, LinkIpVlan, LinkMacVlan, LinkMessageBuilder, LinkUnspec,
    LinkVlan, RouteMessageBuilder,
};
use thiserror::Error;

use crate::{
    mac::MacAddr,
    netns::{Netns, NetnsError},
};

/// A netlink request failed.
#[derive(Debug, Error)]
#[error("{op}: {}", describe(source))]
pub struct NetlinkError {
    pub op: String,
    #[source]
    pub source: rtnetlink::Error,
}

fn describe(err: &rtnetlink::Error) -> String {
    match err {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => {
            io::Error::from_raw_os_error(-msg.raw_code()).to_string()
        }
        other => other.to_string(),
    }
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => Some(-msg.raw_code()),
            _ => None,
        }
    }
}

/// Opening a netlink socket failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("opening a netlink socket")]
    Socket(#[source] io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// What netd needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// "bridge", "veth", ...; `None` for physical devices.
    pub kind: Option<String>,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    pub up: bool,
    /// The bridge this link is a port of.
    pub controller: Option<u32>,
    /// How an XDP program runs on it, if one is attached: `native` (in
    /// the driver), `generic` (after the skb is built: the driver has no
    /// XDP), `offload`.
    pub xdp: Option<&'static str>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Self {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mtu: 0,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            controller: None,
            xdp: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::Xdp(xdp) => {
                    link.xdp = xdp.iter().find_map(|attr| match attr {
                        LinkXdp::Attached(XdpAttached::Driver) => Some("native"),
                        LinkXdp::Attached(XdpAttached::SocketBuffer) => Some("generic"),
                        LinkXdp::Attached(XdpAttached::Hardware) => Some("offload"),
                        LinkXdp::Attached(XdpAttached::Multiple) => Some("multiple"),
                        _ => None,
                    });
                }
                LinkAttribute::Address(bytes) => {
                    link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// The kind of a LAN endpoint's device, with its mode.
#[derive(Clone, Copy, Debug)]
pub enum LanDevice {
    Macvlan(MacVlanMode),
    Ipvlan(IpVlanMode, IpVlanFlags),
}

/// A LAN endpoint's device to create.
pub struct NewLanDevice<'a> {
    pub name: &'a str,
    pub kind: LanDevice,
    /// The parent's index in this namespace.
    pub parent: u32,
    /// The ifindex it gets.
    pub index: u32,
    /// Where it is created: this namespace for `None`.
    pub netns: Option<&'a Netns>,
    /// macvlan only: ipvlan devices have their parent's.
    pub mac: Option<MacAddr>,
    pub mtu: u32,
}

/// An IPv4 route of the main table.
#[derive(Clone, Debug)]
pub struct Route {
    pub destination: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// An IPv4 address on a link.
#[derive(Clone, Copy, Debug)]
pub struct Address {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg) if msg.raw_code() == -errno)
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// A socket with strict checking (`NETLINK_GET_STRICT_CHK`, as `ip
    /// route show table main` uses), on which the kernel filters a route
    /// dump by table: the local table holds two routes per address, so
    /// with many networks a dump of every table costs three times more.
    filtered: Handle,
}

/// The two sockets of a [`Netlink`], made in the calling thread's
/// namespace; their connections are spawned on the current runtime.
fn open() -> io::Result<(Handle, Handle)> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    let (connection, filtered, _) = rtnetlink::new_connection_with_strict_check()?;
    tokio::spawn(connection);
    Ok((handle, filtered))
}

impl Netlink {
    /// A socket in the calling thread's namespace (the agent's). Must run
    /// inside a tokio runtime, which drives the connection.
    pub fn connect() -> Result<Self, ConnectError> {
        let (handle, filtered) = open().map_err(ConnectError::Socket)?;
        Ok(Self { handle, filtered })
    }

    /// A stream of notifications of IPv4 address and link changes in the
    /// calling thread's namespace (what `ip monitor address link` shows).
    pub fn watch_addresses_and_links() -> Result<
        futures::channel::mpsc::UnboundedReceiver<(
            netlink_packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
            netlink_sys::SocketAddr,
        )>,
        ConnectError,
    > {
        use rtnetlink::MulticastGroup;
        let (connection, _, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Link,
        ])
        .map_err(ConnectError::Socket)?;
        tokio::spawn(connection);
        Ok(messages)
    }

    /// A socket inside `ns`.
    pub fn connect_in(ns: &Netns) -> Result<Self, ConnectError> {
        let runtime = tokio::runtime::Handle::current();
        let (handle, filtered) = ns
            .run(move || {
                // The sockets register with this runtime's reactor, from the
                // namespace thread.
                let _guard = runtime.enter();
                open()
            })?
            .map_err(ConnectError::Socket)?;
        Ok(Self { handle, filtered })
    }

    fn error(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
        let op = op.into();
        move |source| NetlinkError { op, source }
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(Self::error("list links"))?;
        Ok(messages.iter().map(Link::from_message).collect())
    }

    /// The links whose controller is `controller` (a bridge's ports),
    /// chosen by the kernel: a dump of every link costs as much as there
    /// are networks and endpoints.
    pub async fn ports_of(&self, controller: u32) -> Result<Vec<Link>, NetlinkError> {
        let mut request = self.filtered.link().get();
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::Controller(controller));
        let messages: Vec<LinkMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(Self::error(format!("list the ports of link {controller}")))?;
        Ok(messages
            .iter()
            .map(Link::from_message)
            .filter(|link| link.controller == Some(controller))
            .collect())
    }

    /// The link named `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let request = self.handle.link().get().match_name(name.to_owned());
        Self::one_link(request, name).await
    }

    /// The link with index `index`, if there is one.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let request = self.handle.link().get().match_index(index);
        Self::one_link(request, &index.to_string()).await
    }

    /// The answer to a request for one link; `None` if there is none.
    async fn one_link(
        request: rtnetlink::LinkGetRequest,
        what: &str,
    ) -> Result<Option<Link>, NetlinkError> {
        let result: Result<Vec<LinkMessage>, _> = request.execute().try_collect().await;
        match result {
            Ok(messages) => Ok(messages.first().map(Link::from_message)),
            Err(err) if is_errno(&err, libc::ENODEV) => Ok(None),
            Err(err) => Err(Self::error(format!("look up link {what}"))(err)),
        }
    }

    /// Creates bridge `name` with `mtu` and the address `mac`: a bridge
    /// given none takes its lowest port's, and changes it when that port
    /// goes, leaving every container's neighbour entry for the gateway
    /// stale (traffic to the gateway itself, DNS, stalls until it is
    /// probed again).
    pub async fn create_bridge(
        &self,
        name: &str,
        mtu: u32,
        mac: MacAddr,
    ) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(
                LinkBridge::new(name)
                    .mtu(mtu)
                    .address(mac.0.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(Self::error(format!("create bridge {name}")))
    }

    /// Creates a veth pair: `host` here, its peer `peer_name` directly
    /// inside `peer_ns` with `peer_mac`, both with `mtu`. Creating the peer
    /// in place means it never appears in this namespace under a temporary
    /// name, and an existing interface of that name in the container fails
    /// the request before anything exists.
    pub async fn create_veth(
        &self,
        host: &str,
        peer_name: &str,
        peer_ns: &Netns,
        peer_mac: MacAddr,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd as _;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_owned())
            .setns_by_fd(peer_ns.file().as_raw_fd())
            .address(peer_mac.0.to_vec())
            .mtu(mtu)
            .build();
        let message = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_owned())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(Self::error(format!(
                "create veth {host} with peer {peer_name}"
            )))
    }

    /// Applies `change` to an existing link.
    /// Creates a macvlan or ipvlan device on a parent of this namespace,
    /// directly in its target namespace (as [`Self::create_veth`] creates
    /// a peer), with the ifindex asked for.
    pub async fn create_lan_device(&self, device: &NewLanDevice<'_>) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd as _;
        let mut message = match device.kind {
            LanDevice::Macvlan(mode) => LinkMacVlan::new(device.name, device.parent, mode)
                .index(device.index)
                .mtu(device.mtu),
            LanDevice::Ipvlan(mode, flags) => {
                let builder = LinkIpVlan::new(device.name, device.parent, mode)
                    .index(device.index)
                    .mtu(device.mtu);
                let builder = if flags.is_empty() {
                    builder
                } else {
                    builder.flag(flags)
                };
                // Same message, another builder type: build both the same.
                let mut message = builder.build();
                if let Some(ns) = device.netns {
                    message
                        .attributes
                        .push(LinkAttribute::NetNsFd(ns.file().as_raw_fd()));
                }
                return self
                    .handle
                    .link()
                    .add(message)
                    .execute()
                    .await
                    .map_err(Self::error(format!("create ipvlan {}", device.name)));
            }
        };
        if let Some(mac) = device.mac {
            message = message.address(mac.0.to_vec());
        }
        if let Some(ns) = device.netns {
            message = message.setns_by_fd(ns.file().as_raw_fd());
        }
        self.handle
            .link()
            .add(message.build())
            .execute()
            .await
            .map_err(Self::error(format!("create macvlan {}", device.name)))
    }

    /// Creates the 802.1Q sub-interface `name` of link `parent` for VLAN
    /// `id`, up.
    pub async fn create_vlan(&self, name: &str, parent: u32, id: u16) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(LinkVlan::new(name, parent, id).up().build())
            .execute()
            .await
            .map_err(Self::error(format!("create VLAN {id} link {name}")))
    }

    /// Routes `destination` on-link out of link `index`; already present
    /// is not an error.
    pub async fn add_link_route(
        &self,
        destination: Ipv4Net,
        index: u32,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        match self.handle.route().add(route).execute().await {
            Err(err) if is_errno(&err, libc::EEXIST) => Ok(()),
            other => other.map_err(Self::error(format!("add a route to {destination}"))),
        }
    }

    /// Removes what [`Self::add_link_route`] added; absent is not an error.
    pub async fn del_link_route(
        &self,
        destination: Ipv4Net,
        index: u32,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        match self.handle.route().del(route).execute().await {
            Err(err) if is_errno(&err, libc::ESRCH) || is_errno(&err, libc::ENODEV) => Ok(()),
            other => other.map_err(Self::error(format!("delete the route to {destination}"))),
        }
    }

    async fn set(&self, change: LinkMessage, op: String) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(change)
            .execute()
            .await
            .map_err(Self::error(op))
    }

    pub async fn set_up(&self, index: u32, what: &str) -> Result<(), NetlinkError> {
        self.set(
            LinkUnspec::new_with_index(index).up().build(),
            format!("set {what} up"),
        )
        .await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32, what: &str) -> Result<(), NetlinkError> {
        self.set(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            format!("set the MTU of {what} to {mtu}"),
        )
        .await
    }

    /// Makes link `index` a port of bridge `bridge`.
    pub async fn set_controller(
        &self,
        index: u32,
        bridge: u32,
        what: &str,
    ) -> Result<(), NetlinkError> {
        self.set(
            LinkUnspec::new_with_index(index).controller(bridge).build(),
            format!("add {what} to the bridge"),
        )
        .await
    }

    /// Deletes link `index`; a link already gone is not an error.
    pub async fn del_link(&self, index: u32, what: &str) -> Result<(), NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Err(err) if is_errno(&err, libc::ENODEV) => Ok(()),
            other => other.map_err(Self::error(format!("delete {what}"))),
        }
    }

    /// Adds `ip/prefix_len` to link `index`; already present is not an error.
    pub async fn add_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
        what: &str,
    ) -> Result<(), NetlinkError> {
        match self
            .handle
            .address()
            .add(index, ip.into(), prefix_len)
            .execute()
            .await
        {
            Err(err) if is_errno(&err, libc::EEXIST) => Ok(()),
            other => other.map_err(Self::error(format!("add {ip}/{prefix_len} to {what}"))),
        }
    }

    pub async fn addresses(&self) -> Result<Vec<Address>, NetlinkError> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(Self::error("list addresses"))?;
        let mut addresses = Vec::new();
        for msg in messages {
            if msg.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
            // peer on point-to-point links, and the same otherwise.
            let local = msg.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address) {
                addresses.push(Address {
                    index: msg.header.index,
                    ip,
                    prefix_len: msg.header.prefix_len,
                });
            }
        }
        Ok(addresses)
    }

    /// The IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<Route>, NetlinkError> {
        // A strict dump filters on every header field set: the table only
        // (any protocol, any type).
        let mut filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        filter.header.protocol = RouteProtocol::Unspec;
        filter.header.kind = RouteType::Unspec;
        let messages: Vec<RouteMessage> = self
            .filtered
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(Self::error("list routes"))?;
        let mut routes = Vec::new();
        for msg in messages {
            if msg.header.table != netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut destination = Ipv4Addr::UNSPECIFIED;
            let mut gateway = None;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                    RouteAttribute::Oif(index) => oif = Some(*index),
                    _ => {}
                }
            }
            if let Ok(destination) = Ipv4Net::new(destination, msg.header.destination_prefix_length)
            {
                routes.push(Route {
                    destination,
                    gateway,
                    oif,
                });
            }
        }
        Ok(routes)
    }

    /// Adds a default route via `gateway`; already present is not an error.
    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        match self.handle.route().add(route).execute().await {
            Err(err) if is_errno(&err, libc::EEXIST) => Ok(()),
            other => other.map_err(Self::error(format!("add a default route via {gateway}"))),
        }
    }

    /// Routes what `source` sends out of interface `index`, whatever the
    /// main table says: a routing table of the interface's own (its
    /// subnet on-link, a default route via `gateway`) and a rule sending
    /// packets from `source` to it. A namespace on several networks
    /// answers from each network's address by that network's interface,
    /// as the datapath's source check wants; new connections still
    /// follow the one default route. Already present is not an error.
    pub async fn add_source_routing(
        &self,
        index: u32,
        source: Ipv4Addr,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let table = SOURCE_TABLE_BASE + index;
        let on_link = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.network(), subnet.prefix_len())
            .output_interface(index)
            .scope(RouteScope::Link)
            .table_id(table)
            .build();
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .table_id(table)
            .build();
        for (route, what) in [(on_link, "its subnet"), (default, "a default route")] {
            match self.handle.route().add(route).execute().await {
                Err(err) if is_errno(&err, libc::EEXIST) => {}
                other => other.map_err(Self::error(format!("add {what} to table {table}")))?,
            }
        }
        let rule = self
            .handle
            .rule()
            .add()
            .v4()
            .source_prefix(source, 32)
            .table_id(table)
            .priority(SOURCE_RULE_PRIORITY)
            .action(RuleAction::ToTable);
        match rule.execute().await {
            Err(err) if is_errno(&err, libc::EEXIST) => Ok(()),
            other => other.map_err(Self::error(format!(
                "add a rule from {source} to table {table}"
            ))),
        }
    }

    /// Removes the rules [`Self::add_source_routing`] added for `source`
    /// (the table's routes went with the interface). None is not an error.
    pub async fn del_source_routing(&self, source: Ipv4Addr) -> Result<(), NetlinkError> {
        let rules: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(Self::error("list rules"))?;
        for rule in rules {
            let ours = rule.header.src_len == 32
                && rule
                    .attributes
                    .contains(&RuleAttribute::Source(source.into()))
                && rule
                    .attributes
                    .contains(&RuleAttribute::Priority(SOURCE_RULE_PRIORITY));
            if !ours {
                continue;
            }
            match self.handle.rule().del(rule).execute().await {
                Err(err) if is_errno(&err, libc::ENOENT) => {}
                other => other.map_err(Self::error(format!("delete the rule from {source}")))?,
            }
        }
        Ok(())
    }
}

/// Tables of [`Netlink::add_source_routing`]: this plus the interface's
/// index, clear of the kernel's own (253-255) and of small numbers an
/// administrator picks.
const SOURCE_TABLE_BASE: u32 = 10_000;
/// Before the main table's rule (32766), after the local table's (0).
const SOURCE_RULE_PRIORITY: u32 = 1000;
