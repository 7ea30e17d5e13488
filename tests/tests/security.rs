// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Security probes (issue 8, §5): 1,000 crafted packets or more per probe,
//! from the outside client (or from inside a container, for spoofing), and
//! none delivered where it must not be.
//!
//! Every probe is a raw frame built with `pktgen` and sent with
//! [`RawSender`] (an attacker on the link is not bound by its own kernel's
//! routing or source checks). Delivery is counted by [`ArrivalCounter`], in
//! the target namespace's own ingress hook. Each test then checks three
//! things, so that it cannot pass by accident:
//!
//! 1. nothing arrived where it must not;
//! 2. netd's program on the way saw every probe (its per-hook counters), so
//!    the probes were judged by netd and not lost before it;
//! 3. a positive control, through the same sender and the same counter,
//!    does arrive.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netd_common::map_names;
use netd_tests::{
    agent::{Agent, netd_bin},
    netns::{Netns, Process},
    pktgen::{Ipv4Packet, L4, tcp_flags},
    probe::{ArrivalCounter, RawSender, link_mac},
    require_root,
    topology::{
        HOST_IP, OUT_IP, Scratch, Topology, port_echo, udp_echo, udp_query, wait_listening,
    },
};
use serde_json::Value;

const PROBES: u16 = 1000;

fn addr(text: &str) -> Ipv4Addr {
    text.parse().expect("an IPv4 address")
}

fn host() -> Ipv4Addr {
    addr(HOST_IP)
}

fn outside() -> Ipv4Addr {
    addr(OUT_IP)
}

/// The first two containers' addresses and the gateway (the bridge).
const C1: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);

/// What the counters in containers count: the protocols of the probes
/// (and of everything else a container could be reached by). Not IGMP: the
/// host's bridge sends membership reports to the network on its own.
const PROBE_PROTOCOLS: &str = "ip protocol { tcp, udp, icmp }";

/// A TCP segment with `flags`, a sequence number and a payload.
fn segment(sport: u16, dport: u16, flags: u8, seq: u32, payload: &[u8]) -> L4 {
    L4::Tcp {
        sport,
        dport,
        seq,
        ack: 1,
        flags,
        payload: payload.to_vec(),
    }
}

/// IPv4 packets netd's program at `hook` has seen (TCP, UDP and ICMP).
fn hook_packets(agent: &Agent, hook: &str) -> u64 {
    let stats = agent.json(&["stats"]);
    ["ipv4_tcp", "ipv4_udp", "ipv4_icmp"]
        .iter()
        .map(|proto| stats["hooks"][hook][proto].as_u64().expect("hook counter"))
        .sum()
}

/// Asserts that netd's program at `hook` saw at least `sent` packets since
/// it had seen `before`: the probes reached netd and were judged by it.
fn assert_judged(agent: &Agent, hook: &str, before: u64, sent: u64) {
    let seen = hook_packets(agent, hook) - before;
    assert!(
        seen >= sent,
        "netd's {hook} program saw {seen} packets of the {sent} probes: probes were lost on the way"
    );
}

/// The outside client's raw sender, and the host's MAC on the uplink.
fn from_outside(t: &Topology) -> (RawSender, [u8; 6]) {
    (RawSender::open(&t.out, "eth0"), link_mac(&t.host, "up0"))
}

#[test]
fn unpublished_ports_of_a_container_are_unreachable_through_the_host() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80", "-p", "5353:53/udp"]);
    // The container serves on a published and on an unpublished port.
    let _servers = port_echo(&c1, &[80, 81]);
    let (sender, host_mac) = from_outside(&t);
    let arrived = ArrivalCounter::install(&c1, "eth0", PROBE_PROTOCOLS);
    let before = hook_packets(&t.agent, "uplink_tc");

    // Every port from 1 to 1000 of the host's address (80, 81 and 53, the
    // container's own port numbers, among them), TCP and UDP.
    let probes = (1..=PROBES).flat_map(|port| {
        [
            sender.frame(
                host_mac,
                outside(),
                host(),
                L4::tcp(40000 + port, port, tcp_flags::SYN),
            ),
            sender.frame(
                host_mac,
                outside(),
                host(),
                L4::udp(40000 + port, port, b"probe"),
            ),
        ]
    });
    let sent = sender.send_all(probes);
    assert_eq!(sent, 2 * u64::from(PROBES));
    assert_eq!(
        arrived.settled(),
        0,
        "probes to unpublished host ports reached the container"
    );
    assert_judged(&t.agent, "uplink_tc", before, sent);

    // Control: the published ports, same sender, same counter.
    sender.send(&sender.frame(
        host_mac,
        outside(),
        host(),
        L4::tcp(39000, 8080, tcp_flags::SYN),
    ));
    sender.send(&sender.frame(host_mac, outside(), host(), L4::udp(39000, 5353, b"ok")));
    assert!(arrived.wait_for(2) >= 2, "the published ports arrive");
}

#[test]
fn container_addresses_are_unreachable_from_outside() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let _servers = port_echo(&c1, &[80, 81]);
    // The outside even routes the container network to the host, as a
    // neighbour on the uplink's link may.
    t.out.ip(&format!("route add 172.30.0.0/16 via {HOST_IP}"));
    let (sender, host_mac) = from_outside(&t);
    let arrived = ArrivalCounter::install(&c1, "eth0", PROBE_PROTOCOLS);
    let before = hook_packets(&t.agent, "uplink_tc");
    let dropped_before = t.agent.drops("direct_to_container");

    let probes = (1..=PROBES).flat_map(|i| {
        [
            sender.frame(
                host_mac,
                outside(),
                C1,
                L4::tcp(40000 + i, i, tcp_flags::SYN),
            ),
            sender.frame(host_mac, outside(), C1, L4::udp(40000 + i, i, b"probe")),
            sender.frame(host_mac, outside(), C1, L4::icmp_echo(true, 77, i)),
        ]
    });
    let sent = sender.send_all(probes);
    assert_eq!(sent, 3 * u64::from(PROBES));
    assert_eq!(
        arrived.settled(),
        0,
        "probes to the container's address reached it"
    );
    assert_judged(&t.agent, "uplink_tc", before, sent);
    assert_eq!(
        t.agent.drops("direct_to_container") - dropped_before,
        sent,
        "each probe dropped as addressed to a container"
    );
    // And a real client, with the route, gets nowhere either.
    assert_eq!(t.fetch("telnet://172.30.0.2:81"), None);

    sender.send(&sender.frame(
        host_mac,
        outside(),
        host(),
        L4::tcp(39000, 8080, tcp_flags::SYN),
    ));
    assert!(arrived.wait_for(1) >= 1, "the published port arrives");
}

#[test]
fn ports_published_on_loopback_are_unreachable_from_outside() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container(
        "c1",
        &[
            "-p",
            "127.0.0.1:8082:80",
            "-p",
            "127.0.0.1:5354:53/udp",
            "-p",
            "8080:80",
        ],
    );
    let (sender, host_mac) = from_outside(&t);
    let arrived = ArrivalCounter::install(&c1, "eth0", PROBE_PROTOCOLS);
    let before = hook_packets(&t.agent, "uplink_tc");
    let martians_before = t.agent.drops("martian_loopback");

    // The loopback binding through each address of the host a neighbour
    // could name: the uplink's, the bridge's, and 127.0.0.1 itself (which
    // no honest stack sends on a link, CVE-2020-8558).
    let mut sent = 0;
    for dst in [host(), GATEWAY, Ipv4Addr::LOCALHOST] {
        sent += sender.send_all((1..=PROBES).flat_map(|i| {
            [
                sender.frame(
                    host_mac,
                    outside(),
                    dst,
                    L4::tcp(40000 + i, 8082, tcp_flags::SYN),
                ),
                sender.frame(host_mac, outside(), dst, L4::udp(40000 + i, 5354, b"probe")),
            ]
        }));
    }
    assert_eq!(sent, 6 * u64::from(PROBES));
    assert_eq!(
        arrived.settled(),
        0,
        "probes to a loopback binding reached the container"
    );
    assert_judged(&t.agent, "uplink_tc", before, sent);
    assert_eq!(
        t.agent.drops("martian_loopback") - martians_before,
        2 * u64::from(PROBES),
        "each probe to 127.0.0.1 dropped as a martian"
    );
    assert_eq!(t.fetch(&format!("http://{HOST_IP}:8082/")), None);

    sender.send(&sender.frame(
        host_mac,
        outside(),
        host(),
        L4::tcp(39000, 8080, tcp_flags::SYN),
    ));
    assert!(
        arrived.wait_for(1) >= 1,
        "the port published on 0.0.0.0 arrives"
    );
}

#[test]
fn spoofed_sources_from_a_container_reach_nobody() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let c2 = t.container("c2", &[]);
    let sender = RawSender::open(&c1, "eth0");
    let gateway_mac = link_mac(&t.host, "netd0");
    let c2_mac = link_mac(&c2, "eth0");
    // What a spoofed packet would be, should netd let it through: on its
    // way out, masqueraded or not, it keeps its destination port.
    let at_outside = ArrivalCounter::install(&t.out, "eth0", "th dport { 9998, 9999 }");
    let at_c2 = ArrivalCounter::install(&c2, "eth0", PROBE_PROTOCOLS);
    let before = hook_packets(&t.agent, "endpoint_tc");
    let spoofed_before = t.agent.drops("spoofed");

    // Another container's address, the gateway's, the host's, the outside
    // client's own, an address of nobody outside, an unassigned address of
    // the container network: to the outside, TCP and UDP.
    let mut sent = 0;
    for source in [
        C2,
        GATEWAY,
        host(),
        outside(),
        addr("198.51.100.7"),
        addr("172.30.0.200"),
    ] {
        sent += sender.send_all((1..=PROBES / 2).flat_map(|i| {
            [
                sender.frame(
                    gateway_mac,
                    source,
                    outside(),
                    L4::udp(40000 + i, 9999, b"spoofed"),
                ),
                sender.frame(
                    gateway_mac,
                    source,
                    outside(),
                    L4::tcp(40000 + i, 9998, tcp_flags::SYN),
                ),
            ]
        }));
    }
    // The outside's address, straight to the other container over the
    // bridge.
    sent +=
        sender
            .send_all((1..=PROBES).map(|i| {
                sender.frame(c2_mac, outside(), C2, L4::udp(40000 + i, 9997, b"spoofed"))
            }));
    // Its own address from a MAC not its own.
    sent += sender.send_all((1..=PROBES).map(|i| {
        Ipv4Packet::new(C1, outside(), L4::udp(40000 + i, 9999, b"spoofed"))
            .with_macs(gateway_mac, [0x02, 0x42, 0xde, 0xad, 0xbe, 0xef])
            .build()
    }));
    assert_eq!(sent, 8 * u64::from(PROBES));
    assert_eq!(
        at_outside.settled(),
        0,
        "spoofed packets reached the outside"
    );
    assert_eq!(
        at_c2.settled(),
        0,
        "spoofed packets reached another container"
    );
    assert_judged(&t.agent, "endpoint_tc", before, sent);
    assert_eq!(
        t.agent.drops("spoofed") - spoofed_before,
        sent,
        "each probe dropped as spoofed"
    );

    // Control: the container's own MAC and address, to both.
    sender.send(&sender.frame(gateway_mac, C1, outside(), L4::udp(40000, 9999, b"own")));
    sender.send(&sender.frame(c2_mac, C1, C2, L4::udp(40000, 9997, b"own")));
    assert!(
        at_outside.wait_for(1) >= 1,
        "the container's own packet leaves"
    );
    assert!(at_c2.wait_for(1) >= 1, "and reaches the other container");
}

/// The port of the `TAG:ADDR:PORT:PAYLOAD` a UDP echo reply names as its
/// client: the masquerade port.
fn client_port(reply: &str) -> u16 {
    reply
        .split(':')
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no client port in {reply:?}"))
}

/// The masquerade port of the TCP connection the outside server on
/// `port` has accepted from the host's address.
fn masqueraded_tcp_port(out: &Netns, port: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listing = out.sh(&format!("ss -Htn state established '( sport = :{port} )'"));
        let peer = listing
            .split_whitespace()
            .find_map(|field| field.strip_prefix(&format!("{HOST_IP}:")))
            .and_then(|p| p.parse().ok());
        if let Some(peer) = peer {
            return peer;
        }
        assert!(
            Instant::now() < deadline,
            "no connection on {port}: {listing}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP server on `port` in `ns` that echoes every connection until it
/// closes.
fn tcp_echo(ns: &Netns, port: u16) -> Process {
    let script = format!(
        "import socket,threading\nl=socket.socket(); l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); l.bind(('0.0.0.0',{port})); l.listen(8)\ndef serve(c):\n while True:\n  d=c.recv(4096)\n  if not d: break\n  c.sendall(d)\nwhile True:\n c,_=l.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
    );
    let process = ns.spawn(&format!("python3 -c \"{script}\""));
    wait_listening(ns, port, false);
    process
}

/// A client in `ns` holding a TCP connection to an echo server, from a
/// source port of its own: it sends `hello` once connected and `again`
/// once the file `go` exists, and writes what comes back to `log`. Bytes
/// injected into the connection in between would show there.
struct HeldConnection {
    process: Process,
    log: PathBuf,
    go: PathBuf,
}

impl HeldConnection {
    fn open(ns: &Netns, scratch: &Scratch, tag: &str, sport: u16, addr: &str, port: u16) -> Self {
        let log = scratch.0.join(format!("{tag}.log"));
        let go = scratch.0.join(format!("{tag}.go"));
        let script = format!(
            "import socket,os,time,sys\ns=socket.socket(); s.bind(('0.0.0.0',{sport})); s.connect(('{addr}',{port})); s.settimeout(10)\nout=open('{log}','w')\ns.sendall(b'hello'); out.write(s.recv(100).decode()+chr(10)); out.flush()\nwhile not os.path.exists('{go}'): time.sleep(0.05)\ntry:\n s.sendall(b'again'); out.write(s.recv(100).decode()+chr(10))\nexcept OSError as e:\n out.write('error %d'%e.errno+chr(10))\nout.flush()\n",
            log = log.display(),
            go = go.display(),
        );
        let process = ns.spawn(&format!("python3 -c \"{script}\""));
        let held = Self { process, log, go };
        let deadline = Instant::now() + Duration::from_secs(5);
        while held.received() != "hello\n" {
            assert!(
                Instant::now() < deadline,
                "the connection did not come up: {:?}",
                held.received()
            );
            thread::sleep(Duration::from_millis(20));
        }
        held
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `again` and returns everything received, once the client is
    /// done.
    fn finish(mut self) -> String {
        std::fs::write(&self.go, "").expect("go file");
        self.process
            .wait_timeout(Duration::from_secs(15))
            .expect("the client finished");
        self.received()
    }
}

#[test]
fn crafted_replies_reach_no_masqueraded_flow() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let c2 = t.container("c2", &[]);
    let scratch = Scratch::new();
    // A masqueraded UDP flow of each container, and a masqueraded TCP
    // connection of c1, all to the outside client.
    let _udp = udp_echo(&t.out, 9000, "out");
    let (reply, _) = udp_query(&c1, 40000, OUT_IP, 9000, "flow").expect("c1's flow");
    let c1_udp = client_port(&reply);
    let (reply, _) = udp_query(&c2, 40000, OUT_IP, 9000, "flow").expect("c2's flow");
    let c2_udp = client_port(&reply);
    let _tcp = tcp_echo(&t.out, 7000);
    let held = HeldConnection::open(&c1, &scratch, "c1", 40001, OUT_IP, 7000);
    let c1_tcp = masqueraded_tcp_port(&t.out, 7000);

    let (sender, host_mac) = from_outside(&t);
    let at_c1 = ArrivalCounter::install(&c1, "eth0", PROBE_PROTOCOLS);
    let at_c2 = ArrivalCounter::install(&c2, "eth0", PROBE_PROTOCOLS);
    let before = hook_packets(&t.agent, "uplink_tc");
    let live = [c1_udp, c2_udp, c1_tcp];
    // 1000 masquerade ports that are not these flows', from the start of
    // netd's range.
    let guessed: Vec<u16> = (61000..=65535)
        .filter(|p| !live.contains(p))
        .take(usize::from(PROBES))
        .collect();
    let elsewhere = |i: u16| Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
    let reply = |src: Ipv4Addr, l4: L4| sender.frame(host_mac, src, host(), l4);
    let mut sent = 0;
    // The right peer, a guessed port.
    sent += sender.send_all(
        guessed
            .iter()
            .map(|&p| reply(outside(), L4::udp(9000, p, b"crafted"))),
    );
    sent += sender.send_all(guessed.iter().map(|&p| {
        reply(
            outside(),
            segment(7000, p, tcp_flags::PSH | tcp_flags::ACK, 1, b"crafted"),
        )
    }));
    // The right address, another port of the peer.
    sent += sender
        .send_all((1..=PROBES).map(|i| reply(outside(), L4::udp(9000 + i, c1_udp, b"crafted"))));
    sent += sender.send_all((1..=PROBES).map(|i| {
        reply(
            outside(),
            segment(
                7000 + i,
                c1_tcp,
                tcp_flags::PSH | tcp_flags::ACK,
                1,
                b"crafted",
            ),
        )
    }));
    // The right ports, from other addresses.
    sent += sender
        .send_all((1..=PROBES).map(|i| reply(elsewhere(i), L4::udp(9000, c1_udp, b"crafted"))));
    sent += sender.send_all((1..=PROBES).map(|i| {
        reply(
            elsewhere(i),
            segment(7000, c1_tcp, tcp_flags::PSH | tcp_flags::ACK, 1, b"crafted"),
        )
    }));
    assert_eq!(sent, 6 * u64::from(PROBES));
    assert_eq!(
        at_c1.settled(),
        0,
        "crafted replies reached the flows' container"
    );
    assert_eq!(
        at_c2.settled(),
        0,
        "crafted replies reached another container"
    );
    assert_judged(&t.agent, "uplink_tc", before, sent);

    // Control: each flow's exact reply tuple arrives, at its own container.
    sender.send(&reply(outside(), L4::udp(9000, c1_udp, b"real")));
    sender.send(&reply(outside(), L4::udp(9000, c2_udp, b"real")));
    assert!(at_c1.wait_for(1) >= 1, "c1's flow's reply arrives");
    assert!(at_c2.wait_for(1) >= 1, "c2's flow's reply arrives");
    // And the real connection never noticed.
    assert_eq!(held.finish(), "hello\nagain\n");
}

/// The translated address and TCP state of every flow netd tracks.
fn tcp_flows(agent: &Agent) -> Vec<(String, String)> {
    agent
        .json(&["conntrack"])
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["proto"] == "tcp")
        .map(|f| {
            (
                f["translated"].as_str().unwrap_or_default().to_owned(),
                f["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A sequence number for segments forged with the tuple `(sport -> dport)`
/// from the outside to the host: half the sequence space away from what
/// the flow's other side last acknowledged (read from the pinned
/// conntrack), so blind whatever the connection's random initial sequence
/// number. (Fixed numbers spread over 100 million fell within the window
/// netd lets a reset or FIN close a flow in for about one connection in
/// 35.)
fn blind_seq(agent: &Agent, sport: u16, dport: u16) -> u32 {
    use aya::maps::{HashMap, Map, MapData};
    use netd_common::ct::{CtEntry, CtKey};
    let path = agent.map_pin(map_names::CT);
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ct = HashMap::<_, CtKey, CtEntry>::try_from(Map::HashMap(data)).expect("a hash map");
    let key = CtKey {
        saddr_be: outside().octets(),
        daddr_be: host().octets(),
        sport_be: sport.to_be_bytes(),
        dport_be: dport.to_be_bytes(),
        proto: 6,
        _pad: [0; 3],
    };
    let entry = ct.get(&key, 0).expect("the flow's entry");
    let other = ct.get(&entry.reverse, 0).expect("its other direction");
    u32::from_be_bytes(other.tcp_ack_be).wrapping_add(0x8000_0000)
}

#[test]
fn forged_resets_fins_and_data_tear_down_or_hijack_no_connection() {
    require_root!();
    // Conntrack forgets closing and closed connections within seconds
    // here, so a forged reset or FIN that netd took for real would end the
    // flow (and the connection with it) at once.
    let t = Topology::new(&[
        "--ct-gc-interval",
        "1",
        "--ct-timeout",
        "close=1,fin_wait=1,time_wait=1",
    ]);
    let c1 = t.container("c1", &[]);
    let c2 = t.container("c2", &["-p", "8081:7000"]);
    let scratch = Scratch::new();
    // A masqueraded connection (c1 to the outside) and a published one
    // (the outside to c2), both idle.
    let _outside_echo = tcp_echo(&t.out, 7000);
    let _c2_echo = tcp_echo(&c2, 7000);
    let masqueraded = HeldConnection::open(&c1, &scratch, "c1", 40001, OUT_IP, 7000);
    let masq_port = masqueraded_tcp_port(&t.out, 7000);
    let published = HeldConnection::open(&t.out, &scratch, "out", 45000, HOST_IP, 8081);
    let (sender, host_mac) = from_outside(&t);
    let at_c1 = ArrivalCounter::install(&c1, "eth0", PROBE_PROTOCOLS);
    let at_c2 = ArrivalCounter::install(&c2, "eth0", PROBE_PROTOCOLS);
    let before = hook_packets(&t.agent, "uplink_tc");

    // Each connection's exact tuple as the outside sends it, with sequence
    // numbers the connection is nowhere near: resets, FINs, and data to
    // inject.
    let forged = |sport: u16, dport: u16| {
        let base = blind_seq(&t.agent, sport, dport);
        let seq = move |i: u16| base.wrapping_add(u32::from(i) * 101);
        [
            (tcp_flags::RST, &b""[..]),
            (tcp_flags::FIN | tcp_flags::ACK, &b""[..]),
            (tcp_flags::PSH | tcp_flags::ACK, &b"INJECTED"[..]),
        ]
        .into_iter()
        .flat_map(move |(flags, payload)| {
            (1..=PROBES).map(move |i| segment(sport, dport, flags, seq(i), payload))
        })
    };
    let sent = sender.send_all(
        forged(7000, masq_port)
            .chain(forged(45000, 8081))
            .map(|l4| sender.frame(host_mac, outside(), host(), l4)),
    );
    assert_eq!(sent, 6 * u64::from(PROBES));
    assert_judged(&t.agent, "uplink_tc", before, sent);
    // They are each flow's own tuple, so netd delivers them: the receiving
    // stack judges a segment's sequence number (RFC 9293, RFC 5961) and
    // drops these. What netd must not do is take them for the end of the
    // connection.
    assert_eq!(at_c1.settled(), sent / 2, "the masqueraded flow's tuple");
    assert_eq!(at_c2.settled(), sent / 2, "the published flow's tuple");
    thread::sleep(Duration::from_secs(3));
    let flows = tcp_flows(&t.agent);
    for translated in [
        format!("{HOST_IP}:{masq_port}"),
        "172.30.0.3:7000".to_owned(),
    ] {
        assert!(
            flows.contains(&(translated.clone(), "ESTABLISHED".to_owned())),
            "forged segments ended the flow to {translated} in netd: {flows:?}"
        );
    }
    assert_eq!(
        masqueraded.finish(),
        "hello\nagain\n",
        "the masqueraded connection survived, and nothing was injected into it"
    );
    assert_eq!(
        published.finish(),
        "hello\nagain\n",
        "the published connection survived, and nothing was injected into it"
    );
    // The real ends close both flows as before.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tcp_flows(&t.agent).is_empty() {
        assert!(
            Instant::now() < deadline,
            "real FINs no longer close flows: {:?}",
            tcp_flows(&t.agent)
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn crafted_replies_reach_no_container_through_a_published_flow() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let c2 = t.container("c2", &["-p", "8081:7000"]);
    let scratch = Scratch::new();
    // A live published flow: the outside client on port 45000 to
    // host:8081, which is c2:7000.
    let _tcp = tcp_echo(&c2, 7000);
    let held = HeldConnection::open(&t.out, &scratch, "out", 45000, HOST_IP, 8081);
    let (sender, host_mac) = from_outside(&t);
    let at_c1 = ArrivalCounter::install(&c1, "eth0", PROBE_PROTOCOLS);
    let at_c2 = ArrivalCounter::install(&c2, "eth0", PROBE_PROTOCOLS);
    let before = hook_packets(&t.agent, "uplink_tc");
    let ack = |sport: u16, dport: u16| {
        segment(sport, dport, tcp_flags::PSH | tcp_flags::ACK, 1, b"crafted")
    };
    let mut sent = 0;
    // The flow as it is after translation, sent as it is: to c2 directly,
    // and to the other container.
    for target in [C2, C1] {
        sent += sender.send_all(
            (1..=PROBES).map(|_| sender.frame(host_mac, outside(), target, ack(45000, 7000))),
        );
    }
    // The reply direction claimed from outside: from c2's address and port,
    // to the host's published port and to the client.
    sent += sender.send_all((1..=PROBES).map(|i| {
        let dst = if i % 2 == 0 { host() } else { outside() };
        sender.frame(
            host_mac,
            C2,
            dst,
            ack(7000, if i % 2 == 0 { 8081 } else { 45000 }),
        )
    }));
    // The client's tuple in the other protocol, and on the published port's
    // unpublished neighbours.
    sent += sender.send_all((1..=PROBES).map(|_| {
        sender.frame(
            host_mac,
            outside(),
            host(),
            L4::udp(45000, 8081, b"crafted"),
        )
    }));
    sent += sender.send_all(
        (1..=PROBES).map(|i| sender.frame(host_mac, outside(), host(), ack(45000, 8081 + i))),
    );
    assert_eq!(sent, 5 * u64::from(PROBES));
    assert_eq!(
        at_c1.settled(),
        0,
        "crafted packets reached another container"
    );
    assert_eq!(
        at_c2.settled(),
        0,
        "crafted packets went around the published port"
    );
    assert_judged(&t.agent, "uplink_tc", before, sent);

    // Control: the flow's own tuple arrives at c2 (c2's stack just
    // acknowledges a segment out of its window).
    sender.send(&sender.frame(host_mac, outside(), host(), ack(45000, 8081)));
    assert!(at_c2.wait_for(1) >= 1, "the published flow's tuple arrives");
    assert_eq!(held.finish(), "hello\nagain\n", "the real flow is intact");
}

#[test]
fn the_api_socket_refuses_non_root_users() {
    require_root!();
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.103.0.0/24"]);
    let c1 = Netns::new("c1");
    let socket = agent.socket();
    // Run inside the agent's namespace and pointed at its state and pins,
    // so that a command that wrongly went around the agent would act on
    // this test's objects (and be caught below), never the machine's.
    let as_nobody = |program: &Path, args: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net={}", host.path().display()))
            .args([
                "--",
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ])
            .arg(program)
            .args(args)
            .env("NETD_SOCKET", &socket)
            .env("NETD_STATE_DIR", agent.state_dir())
            .env("NETD_BPFFS", agent.bpffs())
            .output()
            .expect("setpriv")
    };
    let state = agent.state();
    // The CLI: the agent cannot be reached, for reading or for changing.
    for args in [
        vec!["status"],
        vec!["ps"],
        vec!["attach", c1.name()],
        vec!["down"],
    ] {
        let run = as_nobody(&netd_bin(), &args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            run.status.code(),
            Some(3),
            "netd {args:?} as nobody: {stderr}"
        );
        assert!(
            stderr.contains("Permission denied"),
            "netd {args:?} as nobody: {stderr}"
        );
    }
    // Raw HTTP: curl's "could not connect" (7), no answer.
    let run = as_nobody(
        Path::new("/usr/bin/curl"),
        &[
            "-sS",
            "--unix-socket",
            &socket.display().to_string(),
            "http://netd/v1/status",
        ],
    );
    assert_eq!(run.status.code(), Some(7), "{run:?}");
    assert!(run.stdout.is_empty(), "no answer to nobody: {run:?}");

    // Root is served, and nobody's attempts changed nothing.
    let status = agent.json(&["status"]);
    assert_eq!(status["endpoints"], 0);
    assert_eq!(agent.json(&["ps"]), Value::Array(Vec::new()));
    assert_eq!(agent.state(), state, "the state file is untouched");
    assert!(
        agent.map_pin(map_names::PORTS).exists(),
        "the pins are in place"
    );
    assert!(
        host.ip("-j link show").contains("\"netd0\""),
        "the bridge is in place"
    );
}
