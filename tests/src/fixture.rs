// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The datapath fixture of the BPF tests: a network 172.30.0.0/16 with two
//! containers, a host with two local addresses, published ports, and (for
//! the programs that route) a namespace whose FIB knows the outside.

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::Context as _;
use ipnet::Ipv4Net;
use netd::datapath::{Maps, PortRule};
use netd_common::{
    ct::{CtEntry, CtKey},
    drop,
    endpoint::{
        DEFAULT_NETWORK, DatapathConfig, EndpointInfo, NET_PROTECT_PORTS, NetworkInfo,
        REDIRECT_PEER,
    },
};

use crate::{
    bpf::{Bpf, Run},
    netns::{NetNsGuard, Netns, veth},
    pktgen::{Ipv4Packet, L4, tcp_flags},
};

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;

pub const UPLINK: &str = "netd_uplink_tc";
pub const ENDPOINT: &str = "netd_endpoint_tc";
pub const XDP: &str = "netd_uplink_xdp";

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
pub const HOST2: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 11);
pub const NOT_LOCAL: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 99);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
pub const CTR: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
pub const CTR2: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
pub const CTR_MAC: [u8; 6] = [0x02, 0x42, 172, 30, 0, 2];
pub const CTR2_MAC: [u8; 6] = [0x02, 0x42, 172, 30, 0, 3];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

pub fn rule(
    slot: u32,
    proto: u8,
    host_ip: Ipv4Addr,
    host: (u16, u16),
    ctr: Ipv4Addr,
    ctr_port: u16,
    to_one: bool,
) -> PortRule {
    PortRule {
        slot,
        generation: slot + 100,
        proto,
        host_ip,
        host_port: host.0,
        host_port_end: host.1,
        ctr_ip: ctr,
        ctr_port,
        to_one,
    }
}

/// The published rules of every test.
pub fn rules() -> Vec<PortRule> {
    let any = Ipv4Addr::UNSPECIFIED;
    vec![
        rule(0, TCP, any, (8080, 8080), CTR, 80, false),
        rule(1, UDP, any, (5353, 5353), CTR, 53, false),
        rule(2, TCP, any, (9000, 9009), CTR, 9100, false),
        rule(3, TCP, any, (7000, 7005), CTR, 80, true),
        rule(4, TCP, HOST2, (8443, 8443), CTR, 443, false),
        rule(5, TCP, Ipv4Addr::LOCALHOST, (8082, 8082), CTR, 80, false),
        rule(6, TCP, any, (8090, 8090), CTR2, 80, false),
    ]
}

/// The one port of the fixture's NAT range: allocation is deterministic.
pub const NAT_PORT: u16 = 61000;

/// The network's settings: NAT ports [`NAT_PORT`] only, no `NET_*` flag.
pub fn config() -> DatapathConfig {
    DatapathConfig {
        subnet_be: [172, 30, 0, 0],
        mask_be: [255, 255, 0, 0],
        gateway_mac: GW_MAC,
        _pad: [0; 2],
        redirect: REDIRECT_PEER,
        gateway_be: GATEWAY.octets(),
        masquerade_be: [0; 4],
        nat_port_min: NAT_PORT,
        nat_port_max: NAT_PORT,
        flags: 0,
        _pad2: 0,
        netns_cookie: 0,
    }
}

/// The network of the fixture's containers, the default one.
pub fn network() -> NetworkInfo {
    network_of(&config())
}

/// The default network as the agent writes it beside `cfg`: its subnet,
/// gateway and `NET_*` flags (but `NET_PROTECT_PORTS`, the datapath's).
fn network_of(cfg: &DatapathConfig) -> NetworkInfo {
    NetworkInfo {
        subnet_be: cfg.subnet_be,
        mask_be: cfg.mask_be,
        gateway_be: cfg.gateway_be,
        gateway_mac: cfg.gateway_mac,
        _pad: [0; 2],
        flags: cfg.flags & !NET_PROTECT_PORTS,
    }
}

/// The datapath with the network, its two containers behind host veths
/// `ifindexes`, both local addresses and the rules.
pub fn fixture_on(ifindexes: (u32, u32)) -> Bpf {
    fixture_on_with(ifindexes, None, &rules()).expect("the fixture")
}

/// [`fixture_on`] with `rules` instead of [`rules`] and, when `ct_max` is
/// given, a conntrack table of that many entries (else the object's
/// default); errors are returned, not panics (a large table may not fit).
pub fn fixture_on_with(
    ifindexes: (u32, u32),
    ct_max: Option<u32>,
    rules: &[PortRule],
) -> anyhow::Result<Bpf> {
    let mut bpf = match ct_max {
        Some(ct_max) => Bpf::load_with_ct_max(ct_max).with_context(|| {
            format!("loading netd's eBPF object with {ct_max} conntrack entries")
        })?,
        None => Bpf::load(),
    };
    let mut maps = Maps::new(bpf.ebpf_mut());
    maps.set_config(&config()).context("config")?;
    maps.set_network(
        DEFAULT_NETWORK,
        "172.30.0.0/16".parse().expect("subnet"),
        &network(),
    )
    .context("network")?;
    maps.sync_local_addrs(&BTreeSet::from([HOST, HOST2, GATEWAY]))
        .context("local addresses")?;
    for (ip, mac, ifindex) in [(CTR, CTR_MAC, ifindexes.0), (CTR2, CTR2_MAC, ifindexes.1)] {
        maps.set_endpoint(
            ip,
            EndpointInfo {
                ifindex,
                mac,
                network: DEFAULT_NETWORK,
            },
        )
        .context("endpoint")?;
        maps.set_veth(ifindex, ip, mac, DEFAULT_NETWORK)
            .context("veth")?;
    }
    for rule in rules {
        maps.install(rule, true)
            .with_context(|| format!("rule {rule:?}"))?;
    }
    Ok(bpf)
}

/// [`fixture_on`] with made-up ifindexes (for programs that do not route).
pub fn fixture() -> Bpf {
    fixture_on((7, 8))
}

/// Sets the datapath's settings and the default network's, as the agent
/// sets both.
pub fn set_config(bpf: &mut Bpf, config: &DatapathConfig) {
    let mut maps = Maps::new(bpf.ebpf_mut());
    maps.set_config(config).expect("config");
    let subnet = Ipv4Net::with_netmask(config.subnet_be.into(), config.mask_be.into())
        .expect("the config's subnet");
    maps.set_network(DEFAULT_NETWORK, subnet, &network_of(config))
        .expect("network");
}

pub fn ct(bpf: &mut Bpf) -> Vec<(CtKey, CtEntry)> {
    Maps::new(bpf.ebpf_mut()).ct_entries().expect("conntrack")
}

pub fn drops(bpf: &mut Bpf, code: u32) -> u64 {
    Maps::new(bpf.ebpf_mut()).drops().expect("drops")[drop::index(code) as usize]
}

pub fn syn(dst: Ipv4Addr, dport: u16) -> Ipv4Packet {
    Ipv4Packet::new(CLIENT, dst, L4::tcp(40000, dport, tcp_flags::SYN))
}

/// A SYN from its own source port, as separate connections have.
pub fn syn_from(sport: u16, dst: Ipv4Addr, dport: u16) -> Ipv4Packet {
    Ipv4Packet::new(CLIENT, dst, L4::tcp(sport, dport, tcp_flags::SYN))
}

/// `packet` after netd translated it: addresses and ports replaced where
/// given, TTL one less, the MACs of its next hop.
pub fn translated(
    packet: &Ipv4Packet,
    src: Option<(Ipv4Addr, u16)>,
    dst: Option<(Ipv4Addr, u16)>,
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut expected = packet.clone();
    let (mut sport, mut dport) = packet.l4.ports();
    if let Some((addr, port)) = src {
        expected.src = addr;
        sport = port;
    }
    if let Some((addr, port)) = dst {
        expected.dst = addr;
        dport = port;
    }
    expected.l4 = packet.l4.clone().with_ports(sport, dport);
    expected.ttl -= 1;
    expected.eth_dst = macs.0;
    expected.eth_src = macs.1;
    expected.build()
}

/// What a packet from the client must become on its way into a container.
pub fn dnat(packet: &Ipv4Packet, to: Ipv4Addr, to_port: u16, mac: [u8; 6]) -> Vec<u8> {
    translated(packet, None, Some((to, to_port)), (mac, GW_MAC))
}

pub fn assert_untouched(run: &Run, frame: &[u8], verdict: i32, what: &str) {
    assert_eq!(run.verdict, verdict, "{what}: verdict");
    assert_eq!(run.data, frame, "{what}: the packet must leave unchanged");
}

/// A namespace whose FIB knows the outside, entered by the test's thread:
/// uplink `up0` (10.250.0.1/24, the client 10.250.0.2 a permanent
/// neighbour at `CLIENT_MAC`), and two host veths `hv1`, `hv2` standing for
/// the containers'.
pub struct Routed {
    pub up0: u32,
    pub up0_mac: [u8; 6],
    pub hv1: u32,
    pub hv2: u32,
    _guard: NetNsGuard,
    _ns: Netns,
    _peer: Netns,
}

fn link(ns: &Netns, name: &str) -> (u32, [u8; 6]) {
    let json: serde_json::Value =
        serde_json::from_str(&ns.ip(&format!("-j link show {name}"))).expect("ip -j link");
    let mac: Vec<u8> = json[0]["address"]
        .as_str()
        .expect("address")
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("mac"))
        .collect();
    let index = u32::try_from(json[0]["ifindex"].as_u64().expect("ifindex")).expect("u32");
    (index, mac.try_into().expect("6 bytes"))
}

impl Routed {
    pub fn new() -> Self {
        let ns = Netns::new("fib");
        let peer = Netns::new("pr");
        veth(&ns, "up0", &peer, "eth0");
        ns.ip("addr add 10.250.0.1/24 dev up0");
        ns.ip("neigh add 10.250.0.2 lladdr 02:00:00:00:00:aa dev up0 nud permanent");
        for hv in ["hv1", "hv2"] {
            ns.ip(&format!("link add {hv} type veth peer name {hv}p"));
            ns.ip(&format!("link set {hv} up"));
            ns.ip(&format!("link set {hv}p up"));
        }
        ns.sh("sysctl -qw net.ipv4.ip_forward=1");
        let (up0, up0_mac) = link(&ns, "up0");
        let (hv1, _) = link(&ns, "hv1");
        let (hv2, _) = link(&ns, "hv2");
        let guard = ns.enter();
        Self {
            up0,
            up0_mac,
            hv1,
            hv2,
            _guard: guard,
            _ns: ns,
            _peer: peer,
        }
    }

    /// The fixture with the containers behind `hv1` and `hv2`, and `up0`
    /// as the uplink masquerade uses (address 10.250.0.1).
    pub fn fixture(&self) -> Bpf {
        self.fixture_with(None, &rules())
            .expect("the routed fixture")
    }

    /// [`Routed::fixture`] with `rules` and a conntrack table of `ct_max`
    /// entries, as [`fixture_on_with`].
    pub fn fixture_with(&self, ct_max: Option<u32>, rules: &[PortRule]) -> anyhow::Result<Bpf> {
        let mut bpf = fixture_on_with((self.hv1, self.hv2), ct_max, rules)?;
        Maps::new(bpf.ebpf_mut())
            .sync_uplinks(&std::collections::BTreeMap::from([(self.up0, HOST)]))
            .context("uplinks")?;
        Ok(bpf)
    }
}

impl Default for Routed {
    fn default() -> Self {
        Self::new()
    }
}
