// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's side of the datapath: keeping the maps and attachments equal
//! to the state, and reading them back for `ports`, `conntrack` and `stats`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use netd_common::{
    drop,
    endpoint::{
        DatapathConfig, EndpointInfo, NET_INTERNAL, NET_NO_ICC, NET_NO_MASQUERADE,
        NET_PROTECT_PORTS, NetworkInfo,
    },
    map_names as names,
    stats::hook,
};
use tracing::{info, warn};

use super::{
    Agent,
    error::AgentError,
    metrics::CtCensus,
    ports,
    state::{Change, EndpointState, NetworkState, Phase},
};
use crate::{
    api,
    datapath::{
        DatapathError, ENDPOINT_TC, LAN_TC, SOCKET_PROGRAMS, TcMode, UPLINK_TC,
        conntrack::{self, Collect, FlowPair},
        maps::{Maps, PinnedMaps},
    },
    netns::Netns,
    paths::{cgroup_link, endpoint_link, uplink_link},
};

/// The cookie of the calling thread's network namespace: what the socket
/// programs compare a socket's namespace with.
fn netns_cookie() -> std::io::Result<u64> {
    use std::os::fd::AsRawFd as _;
    // Unbound: a namespace whose loopback is down has no address to bind.
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// A garbage collection the agent's tick found due.
pub struct GcDue {
    /// New flows were refused since the last tick: make room.
    pressure: bool,
    bpffs: std::path::PathBuf,
}

/// The conntrack table as read for a garbage collection.
pub struct CtRead {
    /// `CLOCK_MONOTONIC` before the read, in ns.
    now: u64,
    /// Flows created (`NETD_FLOWS_CREATED`, all kinds) before the read.
    created_before: u64,
    /// Entries read.
    entries: usize,
    flows: Vec<FlowPair>,
}

impl GcDue {
    /// Reads the table from its pin. Blocking, and without the agent: a
    /// million entries take most of a second to copy and pair up, and the
    /// API must not wait for them. What changes meanwhile is the caller's
    /// to handle: a flow touched since is kept, a mapping removed since is
    /// stale either way.
    pub fn read(&self) -> Result<CtRead, DatapathError> {
        let mut pinned = PinnedMaps::open(&self.bpffs, &[names::CT, names::FLOWS_CREATED])?;
        CtRead::from(&mut Maps::pinned(&mut pinned))
    }
}

impl CtRead {
    /// Reads the table, after the clock and the flows created.
    fn from(maps: &mut Maps<'_>) -> Result<Self, DatapathError> {
        let now = conntrack::monotonic_ns();
        let created_before = maps.flows_created()?.iter().sum();
        let entries = maps.ct_entries()?;
        Ok(Self {
            now,
            created_before,
            entries: entries.len(),
            flows: conntrack::pair_up(entries),
        })
    }

    /// The census of the table once `removed` of the entries read are gone.
    fn census(&self, removed: usize) -> CtCensus {
        CtCensus {
            entries: self.entries.saturating_sub(removed),
            created: self.created_before,
        }
    }
}

/// What one garbage collection removed, in flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub expired: usize,
    pub stale: usize,
    /// Not established, removed early to make room.
    pub early: usize,
    /// Entries left in the table.
    pub remaining: usize,
}

fn addr_port(addr: [u8; 4], port: [u8; 2]) -> String {
    format!("{}:{}", Ipv4Addr::from(addr), u16::from_be_bytes(port))
}

/// The pin of the link of `ep`'s program: on its host veth, or on its LAN
/// device.
pub(super) fn endpoint_pin(ep: &EndpointState) -> String {
    match ep.lan_ifindex {
        Some(index) => crate::paths::lan_endpoint_link(index),
        None => endpoint_link(&ep.host_ifname),
    }
}

/// The `NET_*` flags of `net`'s own settings.
fn network_flags(net: &NetworkState) -> u32 {
    (if net.icc { 0 } else { NET_NO_ICC })
        | if net.masquerade { 0 } else { NET_NO_MASQUERADE }
        | if net.internal { NET_INTERNAL } else { 0 }
}

impl Agent {
    /// Makes the datapath match the state: configuration, uplink and
    /// endpoint attachments, endpoints, local addresses and published ports.
    /// Entries the state does not know (left by a crash between a map
    /// update and the state's) are removed.
    pub(super) async fn sync_datapath(&mut self) -> Result<(), AgentError> {
        let net = self.state.network.clone();
        let bridge = self.nl.link(&net.bridge).await?;
        let config = DatapathConfig {
            subnet_be: net.subnet.network().octets(),
            mask_be: net.subnet.netmask().octets(),
            gateway_mac: bridge.and_then(|b| b.mac).map(|m| m.0).unwrap_or_default(),
            _pad: [0; 2],
            redirect: self.config.redirect,
            gateway_be: net.gateway.octets(),
            masquerade_be: self
                .config
                .masquerade_address
                .map_or([0; 4], |addr| addr.octets()),
            nat_port_min: self.config.masquerade_ports.0,
            nat_port_max: self.config.masquerade_ports.1,
            flags: network_flags(&net)
                | if self.config.protect_ports {
                    NET_PROTECT_PORTS
                } else {
                    0
                },
            _pad2: 0,
            netns_cookie: netns_cookie().map_err(|source| AgentError::Io {
                what: "reading this namespace's cookie (SO_NETNS_COOKIE, kernel >= 5.14)"
                    .to_owned(),
                source,
            })?,
        };
        self.datapath.maps().set_config(&config)?;
        // Every network before any program is swapped in: this netd's
        // programs read them from NETD_NETWORKS (an older netd's read
        // NETD_CONFIG, written above), so a restart or an upgrade never
        // runs a program without its network's settings.
        let networks: Vec<NetworkState> = self.state.all_networks().cloned().collect();
        for net in &networks {
            self.sync_network(net).await?;
        }
        let wanted: BTreeSet<(Ipv4Net, u16)> = networks
            .iter()
            .filter(|net| net.lan().is_none())
            .map(|net| (net.subnet, net.index))
            .collect();
        for (subnet, index) in self.datapath.maps().subnets()? {
            if !wanted.contains(&(subnet, index)) {
                self.datapath.maps().remove_network(index, subnet)?;
            }
        }
        let mut wanted_pins = BTreeSet::new();
        match self.config.cgroup.clone() {
            Some(cgroup) => {
                self.datapath.attach_cgroup(&cgroup)?;
                wanted_pins.extend(SOCKET_PROGRAMS.iter().map(|p| cgroup_link(p)));
            }
            None => warn!(
                "no cgroup (--cgroup none, or no cgroup2 hierarchy): host-local access to published ports is off"
            ),
        }

        let uplinks = self.config.uplinks.clone();
        for uplink in &uplinks {
            let pin = uplink_link("tc", uplink);
            self.datapath.attach_tc(UPLINK_TC, uplink, &pin)?;
            self.note_tc_filter(uplink)?;
            wanted_pins.insert(pin);
            if self.config.xdp {
                let pin = uplink_link("xdp", uplink);
                self.datapath.attach_xdp(uplink, &pin)?;
                wanted_pins.insert(pin);
                // The kernel runs it in the driver when the driver has XDP,
                // else generically: same verdicts, less speed.
                let mode = self
                    .nl
                    .link(uplink)
                    .await?
                    .and_then(|l| l.xdp)
                    .unwrap_or("unknown");
                if mode == "generic" {
                    warn!(uplink = %uplink, "xdp: generic (this driver has no native XDP: same translation, after the skb is built)");
                } else {
                    info!(uplink = %uplink, "xdp: {mode}");
                }
                self.xdp_modes.insert(uplink.clone(), mode);
            }
        }

        let endpoints: Vec<EndpointState> = self.state.endpoints.values().cloned().collect();
        for ep in &endpoints {
            self.connect_endpoint(ep).await?;
            wanted_pins.insert(endpoint_pin(ep));
        }
        let known: BTreeSet<Ipv4Addr> = endpoints.iter().map(|ep| ep.ip).collect();
        for (ip, info) in self.datapath.maps().endpoints()? {
            if !known.contains(&ip) {
                self.datapath.maps().remove_endpoint(ip)?;
                self.datapath.maps().remove_veth(info.ifindex)?;
            }
        }
        let veths: BTreeSet<u32> = self
            .datapath
            .maps()
            .endpoints()?
            .iter()
            .map(|(_, i)| i.ifindex)
            .collect();
        for (ifindex, _) in self.datapath.maps().veths()? {
            if !veths.contains(&ifindex) {
                self.datapath.maps().remove_veth(ifindex)?;
            }
        }
        for pin in self.datapath.link_pins() {
            if !wanted_pins.contains(&pin) {
                info!(link = %pin, "detached a link the state does not know");
                self.datapath.detach(&pin)?;
            }
        }

        self.sync_local_addrs().await?;

        // Published ports: install every rule; remove keys and retire slots
        // that belong to no rule.
        let rules: Vec<_> = endpoints
            .iter()
            .flat_map(|ep| ep.ports.iter().map(|p| ports::rule(ep, p)))
            .collect();
        let mut wanted_keys = BTreeSet::new();
        for rule in &rules {
            self.datapath.maps().install(rule, false)?;
            for key in rule.keys() {
                wanted_keys.insert((key.prefix_len(), key.data(), rule.slot));
            }
        }
        for (key, slot) in self.datapath.maps().port_keys()? {
            if !wanted_keys.contains(&(key.prefix_len(), key.data(), slot)) {
                self.datapath.maps().remove_port_key(&key)?;
            }
        }
        let slots: BTreeSet<u32> = rules.iter().map(|r| r.slot).collect();
        for (slot, _) in self.datapath.maps().active_mappings()? {
            if !slots.contains(&slot) {
                self.datapath.maps().retire(slot)?;
            }
        }
        Ok(())
    }

    /// Records that `uplink` carries netd's cls_bpf filter (netlink mode),
    /// and whether netd added its qdisc, for `netd down` to remove them.
    fn note_tc_filter(&mut self, uplink: &str) -> Result<(), AgentError> {
        if self.datapath.tc_mode() != TcMode::Netlink {
            return Ok(());
        }
        let added = self.state.tc_filters.get(uplink).copied().unwrap_or(false)
            || self.datapath.added_qdisc(uplink);
        if self.state.tc_filters.get(uplink) != Some(&added) {
            self.commit(Change::TcFilter {
                uplink: uplink.to_owned(),
                added_qdisc: added,
            })?;
        }
        Ok(())
    }

    /// Puts back what was removed behind netd's back: a map pin (which a
    /// restarted agent needs to find its flows), a link pin (removing it
    /// detaches the program). A firewall flush, a `tc qdisc del` or a
    /// `tc filter del` cannot touch netd: its programs hang on BPF links
    /// (TCX, XDP, cgroup), not on qdiscs or netfilter.
    pub(super) fn heal_datapath(&mut self) -> Result<(), AgentError> {
        for map in self.datapath.repin_maps()? {
            warn!(map, "a map pin was removed; pinned it again");
        }
        if let Some(cgroup) = self.config.cgroup.clone()
            && SOCKET_PROGRAMS
                .iter()
                .any(|p| !self.datapath.has_link_pin(&cgroup_link(p)))
        {
            warn!(cgroup = %cgroup.display(), "a cgroup link was removed; attaching again");
            self.datapath.attach_cgroup(&cgroup)?;
        }
        for uplink in self.config.uplinks.clone() {
            let pin = uplink_link("tc", &uplink);
            if self
                .datapath
                .reattach_tc_if_missing(UPLINK_TC, &uplink, &pin)?
            {
                warn!(uplink = %uplink, "the uplink's TC attachment was removed; attached again");
                self.note_tc_filter(&uplink)?;
            }
            let pin = uplink_link("xdp", &uplink);
            if self.config.xdp && !self.datapath.has_link_pin(&pin) {
                warn!(uplink = %uplink, "the uplink's XDP link was removed; attaching again");
                self.datapath.attach_xdp(&uplink, &pin)?;
            }
        }
        let ready: Vec<String> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.phase == Phase::Ready && ep.lan_ifindex.is_none())
            .map(|ep| ep.host_ifname.clone())
            .collect();
        let lan: Vec<EndpointState> = self
            .state
            .endpoints
            .values()
            // Netlink mode has no pins to miss: a filter lives on its
            // device's qdisc, in the container's namespace.
            .filter(|_| self.datapath.tc_mode() == TcMode::Tcx)
            .filter(|ep| ep.phase == Phase::Ready && ep.netns_ident.ino != 0)
            .filter(|ep| ep.lan_ifindex.is_some() && !self.datapath.has_link_pin(&endpoint_pin(ep)))
            .cloned()
            .collect();
        for ep in lan {
            // Its device is in its container's namespace: attached from there.
            let Ok(ns) = Netns::open(&ep.netns.to_string_lossy()) else {
                continue;
            };
            let datapath = &mut self.datapath;
            match ns.run(|| datapath.attach_tc_egress(LAN_TC, &ep.ifname, &endpoint_pin(&ep))) {
                Ok(Ok(())) => {
                    warn!(endpoint = %ep.name, "a LAN endpoint's TC attachment was removed; attached again")
                }
                Ok(Err(err)) => {
                    warn!(endpoint = %ep.name, error = %err, "attaching a LAN endpoint again")
                }
                Err(err) => {
                    warn!(endpoint = %ep.name, error = %err, "attaching a LAN endpoint again")
                }
            }
        }
        for veth in ready {
            let pin = endpoint_link(&veth);
            if self
                .datapath
                .reattach_tc_if_missing(ENDPOINT_TC, &veth, &pin)?
            {
                warn!(veth = %veth, "an endpoint's TC attachment was removed; attached again");
            }
        }
        Ok(())
    }

    /// Keeps `NETD_LOCAL_ADDRS` equal to this namespace's IPv4 addresses
    /// (loopback excluded: never reachable through an uplink), and
    /// `NETD_UPLINKS` to each uplink's first address (what masquerade
    /// rewrites to).
    pub async fn sync_local_addrs(&mut self) -> Result<(), AgentError> {
        let addresses = self.nl.addresses().await?;
        let addrs: BTreeSet<Ipv4Addr> = addresses
            .iter()
            .map(|a| a.ip)
            .filter(|ip| !ip.is_loopback())
            .collect();
        if self.datapath.maps().sync_local_addrs(&addrs)? {
            info!(addresses = ?addrs, "local addresses");
        }
        // The uplinks by name: a dump of every link would cost as much as
        // there are networks (one bridge each) and endpoints.
        let mut uplinks = BTreeMap::new();
        for name in &self.config.uplinks {
            if let Some(link) = self.nl.link(name).await?
                && let Some(addr) = addresses.iter().find(|a| a.index == link.index)
            {
                uplinks.insert(link.index, addr.ip);
            }
        }
        if self.datapath.maps().sync_uplinks(&uplinks)? {
            info!(uplinks = ?uplinks, "masquerade addresses (uplink ifindex: address)");
        }
        Ok(())
    }

    /// Writes `net`'s settings into the datapath (`NETD_NETWORKS` and
    /// `NETD_SUBNETS`).
    pub(super) async fn sync_network(&mut self, net: &NetworkState) -> Result<(), AgentError> {
        let bridge = self.nl.link(&net.bridge).await?;
        let info = NetworkInfo {
            subnet_be: net.subnet.network().octets(),
            mask_be: net.subnet.netmask().octets(),
            gateway_be: net.gateway.octets(),
            gateway_mac: bridge.and_then(|b| b.mac).map(|m| m.0).unwrap_or_default(),
            _pad: [0; 2],
            flags: network_flags(net),
        };
        if net.lan().is_some() {
            self.datapath
                .maps()
                .set_network_settings(net.index, &info)?;
        } else {
            self.datapath
                .maps()
                .set_network(net.index, net.subnet, &info)?;
        }
        Ok(())
    }

    /// Attaches the endpoint program to `ep`'s host veth and records the
    /// endpoint in `NETD_ENDPOINTS`.
    pub(super) async fn connect_endpoint(&mut self, ep: &EndpointState) -> Result<(), AgentError> {
        if ep.lan_ifindex.is_some() {
            return self.connect_lan_endpoint(ep).await;
        }
        let link = self
            .nl
            .link(&ep.host_ifname)
            .await?
            .ok_or_else(|| AgentError::Io {
                what: format!("veth {} is missing", ep.host_ifname),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        let network = self.state.network_of(ep).index;
        // What the container may send is known before its program runs.
        self.datapath
            .maps()
            .set_veth(link.index, ep.ip, ep.mac.0, network)?;
        self.datapath.attach_tc(
            ENDPOINT_TC,
            &ep.host_ifname,
            &endpoint_link(&ep.host_ifname),
        )?;
        self.datapath.maps().set_endpoint(
            ep.ip,
            EndpointInfo {
                ifindex: link.index,
                mac: ep.mac.0,
                network,
            },
        )?;
        Ok(())
    }

    /// Undoes [`Self::connect_endpoint`].
    pub(super) fn disconnect_endpoint(&mut self, ep: &EndpointState) -> Result<(), AgentError> {
        let ifindex = self
            .datapath
            .maps()
            .endpoints()?
            .into_iter()
            .find(|(ip, _)| *ip == ep.ip)
            .map(|(_, info)| info.ifindex);
        if let Some(ifindex) = ifindex {
            self.datapath.maps().remove_veth(ifindex)?;
        }
        self.datapath.maps().remove_endpoint(ep.ip)?;
        self.datapath.detach(&endpoint_pin(ep))?;
        if let Some(index) = ep.lan_ifindex {
            self.datapath.maps().uncount_endpoint(index)?;
        }
        // Its flows go with it: a container attached next may get the same
        // address and open the same 5-tuples, and must not have its
        // replies steered to this veth. (Garbage collection catches what a
        // crash here leaves.)
        if let Some(ifindex) = ifindex {
            self.sweep_conntrack(|flow| flow.endpoint_ifindex() == Some(ifindex))?;
        }
        Ok(())
    }

    /// Removes whatever exists of `ep`, ignoring what does not: its rules,
    /// its datapath entries, its veth. For rollbacks and recovery.
    pub(super) async fn unplumb(&mut self, ep: &EndpointState) {
        for port in &ep.ports {
            if let Err(err) = self.datapath.maps().uninstall(&ports::rule(ep, port)) {
                warn!(error = %err, "removing a rule of {}", ep.name);
            }
        }
        if let Err(err) = self.disconnect_endpoint(ep) {
            warn!(error = %err, "disconnecting {}", ep.name);
        }
        if ep.lan_ifindex.is_some() {
            self.unroute_shim(ep).await;
            if let Err(err) = self.delete_lan_device(ep).await {
                warn!(error = %err, "deleting the device of {}", ep.name);
            }
            return;
        }
        match self.nl.link(&ep.host_ifname).await {
            Ok(Some(link)) => {
                if let Err(err) = self.nl.del_link(link.index, &ep.host_ifname).await {
                    warn!(error = %err, "deleting {}", ep.host_ifname);
                }
            }
            Ok(None) => {}
            Err(err) => warn!(error = %err, "looking up {}", ep.host_ifname),
        }
    }

    /// Periodic work: local addresses, and whether conntrack garbage
    /// collection is due, or due at once because the table refused new
    /// flows (full). A collection due is returned, for the caller to read
    /// the table without the agent's lock ([`GcDue::read`]) and hand it to
    /// [`Agent::collect_garbage`].
    pub async fn tick(&mut self) -> Option<GcDue> {
        self.tick_state().await;
        self.retry_names();
        if let Err(err) = self.sync_local_addrs().await {
            warn!(error = %err, "syncing local addresses");
        }
        if let Err(err) = self.heal_datapath() {
            warn!(error = %err, "restoring the datapath");
        }
        let drops = self.datapath.maps().drops().unwrap_or_default();
        let count = |code| {
            drops
                .get(drop::index(code) as usize)
                .copied()
                .unwrap_or_default()
        };
        let (refused, exhausted) = (count(drop::CT_CREATE), count(drop::NAT_EXHAUSTED));
        let pressure = refused > self.ct_refused;
        if pressure {
            self.gc.pressure_events += 1;
            warn!(
                refused = refused - self.ct_refused,
                "conntrack full: new flows refused; making room"
            );
        }
        if exhausted > self.nat_exhausted {
            warn!(
                refused = exhausted - self.nat_exhausted,
                ports = ?self.config.masquerade_ports,
                "masquerade ports exhausted for a peer: new flows refused; widen --masquerade-ports"
            );
        }
        self.ct_refused = refused;
        self.nat_exhausted = exhausted;
        // A table more than half full is collected every tick: flows that
        // come and go fast (a connection per request) must not fill it.
        let fill = self.ct_census.map_or(0, |census| census.entries);
        let interval = if fill > self.config.ct_max as usize / 2 {
            std::time::Duration::ZERO
        } else {
            self.config.ct_gc_interval
        };
        if pressure || self.last_gc.elapsed() >= interval {
            self.last_gc = std::time::Instant::now();
            return Some(GcDue {
                pressure,
                bpffs: self.config.bpffs.clone(),
            });
        }
        None
    }

    /// Collects the table `read` for `due`, and records what it did.
    pub fn collect_garbage(&mut self, due: &GcDue, read: Result<CtRead, DatapathError>) {
        let collected = read
            .map_err(AgentError::from)
            .and_then(|read| self.collect(due.pressure, read));
        match collected {
            Ok(c) => {
                self.gc.record(self.last_gc.elapsed(), &c);
                if c.expired + c.stale + c.early > 0 {
                    info!(
                        expired = c.expired,
                        stale = c.stale,
                        early = c.early,
                        "conntrack garbage collected"
                    );
                }
            }
            Err(err) => warn!(error = %err, "conntrack garbage collection"),
        }
    }

    /// Removes expired flows and flows of removed mappings; under
    /// `pressure`, also the least recently seen flows that are not
    /// established (TCP before ESTABLISHED or closing, UDP without reply,
    /// ICMP), as netfilter's early drop does, until the table is at most
    /// 80% full. Established flows are never evicted.
    fn collect(&mut self, pressure: bool, mut read: CtRead) -> Result<Collected, AgentError> {
        let live: BTreeSet<(u32, u32)> = self
            .state
            .endpoints
            .values()
            .flat_map(|ep| ep.ports.iter().map(|p| (p.slot, p.generation)))
            .collect();
        let veths: BTreeSet<u32> = self
            .datapath
            .maps()
            .veths()?
            .into_iter()
            .map(|(ifindex, _)| ifindex)
            .collect();
        let now = read.now;
        let mut remaining = read.entries;
        let mut collected = Collected::default();
        // A monitor watching flows sees each one closed.
        let monitor = self.monitor.wants_flows().then(|| self.monitor.clone());
        let closed = |flow: &FlowPair, why: &str| {
            if let Some(monitor) = &monitor {
                let (key, entry) = &flow.original;
                monitor.flow_closed(key, flow.reply.as_ref().map(|(k, _)| k), entry.kind, why);
            }
        };
        let mut doomed = Vec::new();
        let mut kept = Vec::new();
        for flow in std::mem::take(&mut read.flows) {
            match conntrack::collect(
                &flow,
                now,
                &self.config.ct_timeouts,
                |slot, generation| live.contains(&(slot, generation)),
                |ifindex| veths.contains(&ifindex),
            ) {
                // The table was read a moment ago: a packet since (a new
                // connection reusing a closed tuple, a late reply) makes
                // the flow live again, and deleting it now would break it.
                Some(Collect::Expired) if self.touched_since_read(&flow) => {
                    kept.push(flow);
                    continue;
                }
                Some(Collect::Expired) => {
                    // Removed at once, not with the batch at the end: a
                    // SYN reopening the tuple between this look and that
                    // batch (the scan takes tens of milliseconds with
                    // thousands of flows, more on a loaded machine) would
                    // lose its entries, its SYN-ACK would leave untracked
                    // and the tuple stay blocked. Two entries per call
                    // keep the window to microseconds.
                    self.datapath.maps().ct_remove_all(&flow.keys())?;
                    closed(&flow, "expired");
                    collected.expired += 1;
                    remaining = remaining.saturating_sub(2);
                    continue;
                }
                Some(Collect::Stale) => {
                    closed(&flow, "stale");
                    collected.stale += 1;
                }
                None => {
                    kept.push(flow);
                    continue;
                }
            }
            doomed.extend(flow.keys());
            remaining = remaining.saturating_sub(2);
        }
        let target = self.config.ct_max as usize / 5 * 4;
        if pressure && remaining > target {
            let mut candidates: Vec<_> = kept.iter().filter(|f| !f.assured()).collect();
            candidates.sort_by_key(|f| f.last_seen_ns());
            for flow in candidates {
                if remaining <= target {
                    break;
                }
                doomed.extend(flow.keys());
                closed(flow, "evicted");
                remaining = remaining.saturating_sub(2);
                collected.early += 1;
            }
        }
        self.datapath.maps().ct_remove_all(&doomed)?;
        collected.remaining = remaining;
        self.ct_census = Some(read.census(read.entries - remaining));
        Ok(collected)
    }

    /// Whether either entry of `flow` saw a packet after it was read.
    fn touched_since_read(&mut self, flow: &FlowPair) -> bool {
        std::iter::once(&flow.original)
            .chain(flow.reply.as_ref())
            .any(|(key, read)| {
                self.datapath
                    .maps()
                    .ct_get(key)
                    .ok()
                    .flatten()
                    .is_some_and(|now| now.last_seen_ns != read.last_seen_ns)
            })
    }

    /// Removes the flows `doomed` picks.
    pub(super) fn sweep_conntrack(
        &mut self,
        doomed: impl Fn(&FlowPair) -> bool,
    ) -> Result<(), AgentError> {
        let read = CtRead::from(&mut self.datapath.maps())?;
        let swept: Vec<&FlowPair> = read.flows.iter().filter(|f| doomed(f)).collect();
        let keys: Vec<_> = swept.iter().flat_map(|f| f.keys()).collect();
        self.datapath.maps().ct_remove_all(&keys)?;
        self.ct_census = Some(read.census(keys.len()));
        if self.monitor.wants_flows() {
            for flow in swept {
                let (key, entry) = &flow.original;
                let reply = flow.reply.as_ref().map(|(k, _)| k);
                self.monitor.flow_closed(key, reply, entry.kind, "stale");
            }
        }
        Ok(())
    }

    /// Every tracked flow.
    pub fn conntrack(&mut self) -> Result<Vec<api::Flow>, AgentError> {
        let by_slot: BTreeMap<u32, String> = self
            .state
            .endpoints
            .values()
            .flat_map(|ep| ep.ports.iter().map(|p| (p.slot, ep.name.clone())))
            .collect();
        let now = conntrack::monotonic_ns();
        let flows = conntrack::pair_up(self.datapath.maps().ct_entries()?);
        Ok(flows
            .iter()
            .map(|flow| {
                let (key, entry) = &flow.original;
                let (translated_addr, translated_port) =
                    if entry.flags & netd_common::ct::CT_NAT_DST != 0 {
                        (entry.nat_daddr_be, entry.nat_dport_be)
                    } else {
                        (entry.nat_saddr_be, entry.nat_sport_be)
                    };
                let reply = flow.reply.as_ref().map(|(_, e)| e);
                api::Flow {
                    proto: match key.proto {
                        1 => "icmp".to_owned(),
                        other => crate::portspec::Proto::from_number(other)
                            .map_or_else(|| other.to_string(), |p| p.name().to_owned()),
                    },
                    src: addr_port(key.saddr_be, key.sport_be),
                    dst: addr_port(key.daddr_be, key.dport_be),
                    translated: addr_port(translated_addr, translated_port),
                    state: flow.state(),
                    age_secs: now.saturating_sub(entry.created_ns) / 1_000_000_000,
                    expires_in_secs: flow.expires_in_secs(now, &self.config.ct_timeouts),
                    packets: entry.packets,
                    bytes: entry.bytes,
                    reply_packets: reply.map_or(0, |r| r.packets),
                    reply_bytes: reply.map_or(0, |r| r.bytes),
                    endpoint: flow
                        .mapping()
                        .and_then(|(slot, _)| by_slot.get(&slot).cloned()),
                }
            })
            .collect())
    }

    /// Counters: drops by reason, packets per hook, per mapping.
    pub fn stats(&mut self) -> Result<api::Stats, AgentError> {
        let drops = self.datapath.maps().drops()?;
        let hooks = self.datapath.maps().proto_stats()?;
        let ports = self.ports()?;
        let conntrack_entries = self.datapath.maps().ct_count()? as u64;
        let lan: Vec<EndpointState> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.lan_ifindex.is_some() && ep.phase == Phase::Ready)
            .cloned()
            .collect();
        let mut endpoints = Vec::new();
        for ep in lan {
            let index = ep.lan_ifindex.expect("filtered");
            let counted = self.datapath.maps().endpoint_stats(index)?;
            endpoints.push(api::EndpointCounters {
                network: self.state.network_of(&ep).name.clone(),
                name: ep.name,
                packets: counted.packets,
                bytes: counted.bytes,
                dropped: counted.dropped,
            });
        }
        Ok(api::Stats {
            endpoints,
            drops: drop::NAMES
                .iter()
                .map(|n| (*n).to_owned())
                .zip(drops)
                .collect(),
            hooks: hook::NAMES
                .iter()
                .zip(hooks)
                .map(|(name, s)| {
                    (
                        (*name).to_owned(),
                        api::HookStats {
                            ipv4_tcp: s.ipv4_tcp,
                            ipv4_udp: s.ipv4_udp,
                            ipv4_icmp: s.ipv4_icmp,
                            ipv4_other: s.ipv4_other,
                            ipv6: s.ipv6,
                            arp: s.arp,
                            other: s.other,
                            bytes: s.bytes,
                        },
                    )
                })
                .collect(),
            ports,
            conntrack_entries,
            conntrack_max: self.config.ct_max,
            xdp: self.config.xdp,
            maps: self
                .datapath
                .map_usage()
                .into_iter()
                .map(|m| api::MapMemory {
                    name: m.name.to_owned(),
                    max_entries: m.max_entries,
                    memory_bytes: m.memory_bytes,
                })
                .collect(),
            agent: api::AgentMemory {
                heap_bytes: crate::memory::heap_bytes(),
                rss_bytes: crate::memory::rss_bytes(),
            },
        })
    }
}
