// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Outbound through BPF_PROG_TEST_RUN: masquerade of TCP, UDP and ICMP echo
//! and their replies, hairpin, ICMP errors in both directions (outer and
//! quoted headers, every checksum, byte for byte against packets built from
//! scratch), source port allocation, anti-spoofing and the network's
//! options.

use std::net::{Ipv4Addr, TcpListener};

use netd_common::{
    ct::{CT_AT_UPLINK, CT_NAT_DST, CT_TO_ENDPOINT},
    drop,
    endpoint::{NET_INTERNAL, NET_NO_ICC, NET_NO_MASQUERADE},
};
use netd_tests::{
    fixture::*,
    pktgen::{Ipv4Packet, L4, arp_request, ethernet, fragments, tcp_flags},
    require_root,
};

/// A packet from container 1 (behind `hv1`), with its own MACs.
fn from_ctr(dst: Ipv4Addr, l4: L4) -> Ipv4Packet {
    Ipv4Packet::new(CTR, dst, l4).with_macs(GW_MAC, CTR_MAC)
}

/// A packet from the outside client to the host's uplink.
fn from_client(dst: Ipv4Addr, l4: L4) -> Ipv4Packet {
    Ipv4Packet::new(CLIENT, dst, l4).with_macs([2, 0, 0, 0, 0, 0xbb], CLIENT_MAC)
}

/// An ICMP error of `kind`/`code` quoting the first 28 bytes (header and 8
/// bytes of payload) of `quoted`'s IPv4 packet.
fn icmp_error(kind: u8, code: u8, rest: [u8; 4], quoted: &Ipv4Packet) -> L4 {
    let bytes = quoted.ip_bytes();
    L4::Icmp {
        kind,
        code,
        rest,
        payload: bytes[..28].to_vec(),
    }
}

#[test]
fn masquerade_tcp_and_its_replies_exact_bytes() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    let syn = from_ctr(CLIENT, L4::tcp(40000, 80, tcp_flags::SYN));
    let run = bpf.run_tc_on(ENDPOINT, &syn.build(), routed.hv1);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(
        run.data,
        translated(
            &syn,
            Some((HOST, 61000)),
            None,
            (CLIENT_MAC, routed.up0_mac)
        ),
        "source: the uplink's address and a port of the NAT range"
    );
    let entries = ct(&mut bpf);
    assert_eq!(entries.len(), 2);
    let (reply_key, reply) = entries
        .iter()
        .find(|(_, e)| e.flags & CT_AT_UPLINK != 0)
        .expect("reply entry");
    assert_eq!(
        (reply_key.saddr_be, reply_key.daddr_be),
        (CLIENT.octets(), HOST.octets())
    );
    assert_eq!(
        (reply_key.sport_be, reply_key.dport_be),
        (80u16.to_be_bytes(), 61000u16.to_be_bytes())
    );
    assert_eq!(
        reply.flags & (CT_NAT_DST | CT_TO_ENDPOINT),
        CT_NAT_DST | CT_TO_ENDPOINT
    );
    assert_eq!(reply.ifindex, routed.hv1);

    let synack = from_client(HOST, L4::tcp(80, 61000, tcp_flags::SYN | tcp_flags::ACK));
    let run = bpf.run_tc(UPLINK, &synack.build());
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(
        run.data,
        dnat(&synack, CTR, 40000, CTR_MAC),
        "the reply goes back into the container"
    );
}

#[test]
fn masquerade_udp_and_icmp_echo_exact_bytes() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    let query = from_ctr(CLIENT, L4::udp(40001, 53, b"query"));
    let run = bpf.run_tc_on(ENDPOINT, &query.build(), routed.hv1);
    assert_eq!(
        run.data,
        translated(
            &query,
            Some((HOST, 61000)),
            None,
            (CLIENT_MAC, routed.up0_mac)
        )
    );
    let answer = from_client(HOST, L4::udp(53, 61000, b"answer"));
    assert_eq!(
        bpf.run_tc(UPLINK, &answer.build()).data,
        dnat(&answer, CTR, 40001, CTR_MAC)
    );

    // Echo: the identifier is translated like a port.
    let ping = from_ctr(CLIENT, L4::icmp_echo(true, 7, 1));
    let run = bpf.run_tc_on(ENDPOINT, &ping.build(), routed.hv1);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    let mut expected = Ipv4Packet::new(HOST, CLIENT, L4::icmp_echo(true, 61000, 1))
        .with_macs(CLIENT_MAC, routed.up0_mac);
    expected.ttl -= 1;
    assert_eq!(run.data, expected.build());
    let pong = from_client(HOST, L4::icmp_echo(false, 61000, 1));
    let run = bpf.run_tc(UPLINK, &pong.build());
    let mut expected =
        Ipv4Packet::new(CLIENT, CTR, L4::icmp_echo(false, 7, 1)).with_macs(CTR_MAC, GW_MAC);
    expected.ttl -= 1;
    assert_eq!(run.data, expected.build());
}

/// A ping larger than the link (`ping -s 3000`) through masquerade, and
/// its fragmented reply: the identifier is translated in the first
/// fragment (whose ICMP checksum covers the whole message), addresses in
/// every fragment. Expected: the translated whole packets, cut the same
/// way.
#[test]
fn masquerade_fragmented_ping_exact_bytes() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();
    let echo = |request: bool, id: u16| L4::Icmp {
        kind: if request { 8 } else { 0 },
        code: 0,
        rest: [(id >> 8) as u8, id as u8, 0, 1],
        payload: data.clone(),
    };
    let mut ping = from_ctr(CLIENT, echo(true, 7));
    ping.frag = 0;
    let mut expected =
        Ipv4Packet::new(HOST, CLIENT, echo(true, 61000)).with_macs(CLIENT_MAC, routed.up0_mac);
    expected.frag = 0;
    expected.ttl -= 1;
    let expected = fragments(&expected.build(), 1480);
    for (i, (piece, want)) in fragments(&ping.build(), 1480)
        .iter()
        .zip(&expected)
        .enumerate()
    {
        let run = bpf.run_tc_on(ENDPOINT, piece, routed.hv1);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "ping fragment {i}");
        assert_eq!(&run.data, want, "ping fragment {i}");
    }

    let mut pong = from_client(HOST, echo(false, 61000));
    pong.frag = 0;
    pong.id = 0x7777;
    let mut expected = Ipv4Packet::new(CLIENT, CTR, echo(false, 7)).with_macs(CTR_MAC, GW_MAC);
    expected.frag = 0;
    expected.id = 0x7777;
    expected.ttl -= 1;
    let expected = fragments(&expected.build(), 1480);
    let pieces = fragments(&pong.build(), 1480);
    // Out of order: the last fragment first is passed on untouched (its
    // first has not been seen); the rest, first fragment first, are
    // translated.
    assert_eq!(bpf.run_tc(UPLINK, &pieces[2]).data, pieces[2]);
    for (i, (piece, want)) in pieces.iter().zip(&expected).enumerate() {
        let run = bpf.run_tc(UPLINK, piece);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "pong fragment {i}");
        assert_eq!(&run.data, want, "pong fragment {i}");
    }
    assert_eq!(ct(&mut bpf).len(), 2, "one flow");
}

#[test]
fn nat_ports_skip_published_ports_and_host_sockets_and_run_out() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    let mut config = config();
    (config.nat_port_min, config.nat_port_max) = (8080, 8081);
    set_config(&mut bpf, &config);
    // 8080/tcp is published on any address: the flow gets 8081.
    let syn = from_ctr(CLIENT, L4::tcp(40000, 80, tcp_flags::SYN));
    let run = bpf.run_tc_on(ENDPOINT, &syn.build(), routed.hv1);
    assert_eq!(
        run.data,
        translated(&syn, Some((HOST, 8081)), None, (CLIENT_MAC, routed.up0_mac))
    );
    // Another flow to the same peer: 8081 is taken for that peer, 8080 is
    // published: the range is exhausted, counted, nothing half-created.
    let before = ct(&mut bpf).len();
    let frame = from_ctr(CLIENT, L4::tcp(40002, 80, tcp_flags::SYN)).build();
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &frame, routed.hv1),
        &frame,
        TC_ACT_SHOT,
        "range exhausted",
    );
    assert_eq!(drops(&mut bpf, drop::NAT_EXHAUSTED), 1);
    assert_eq!(ct(&mut bpf).len(), before);
    // A port is unique per peer: a flow to another peer reuses 8081...
    let other_peer = Ipv4Addr::new(10, 250, 0, 3);
    let syn = from_ctr(other_peer, L4::tcp(40003, 80, tcp_flags::SYN));
    assert_eq!(
        bpf.run_tc_on(ENDPOINT, &syn.build(), routed.hv1).verdict,
        TC_ACT_REDIRECT
    );
    // ...unless the host has a socket on it.
    let _listener = TcpListener::bind("10.250.0.1:8081").expect("a host socket on 8081");
    let frame = from_ctr(
        Ipv4Addr::new(10, 250, 0, 4),
        L4::tcp(40004, 80, tcp_flags::SYN),
    )
    .build();
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &frame, routed.hv1),
        &frame,
        TC_ACT_SHOT,
        "8081 is the host's",
    );
    assert_eq!(drops(&mut bpf, drop::NAT_EXHAUSTED), 2);
}

#[test]
fn hairpin_to_another_container_exact_bytes() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    // Container 1 reaches container 2's published port 8090 by the host's
    // address: DNAT to container 2, source the gateway (keeping its port).
    let syn = from_ctr(HOST, L4::tcp(40000, 8090, tcp_flags::SYN));
    let run = bpf.run_tc_on(ENDPOINT, &syn.build(), routed.hv1);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(
        run.data,
        translated(
            &syn,
            Some((GATEWAY, 40000)),
            Some((CTR2, 80)),
            (CTR2_MAC, GW_MAC)
        )
    );
    // Container 2's reply comes back to container 1 from host:8090.
    let synack = Ipv4Packet::new(
        CTR2,
        GATEWAY,
        L4::tcp(80, 40000, tcp_flags::SYN | tcp_flags::ACK),
    )
    .with_macs(GW_MAC, CTR2_MAC);
    let run = bpf.run_tc_on(ENDPOINT, &synack.build(), routed.hv2);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(
        run.data,
        translated(
            &synack,
            Some((HOST, 8090)),
            Some((CTR, 40000)),
            (CTR_MAC, GW_MAC)
        )
    );
    // Its own published port works the same way (8080 -> container 1).
    let own = from_ctr(HOST, L4::tcp(40001, 8080, tcp_flags::SYN));
    let run = bpf.run_tc_on(ENDPOINT, &own.build(), routed.hv1);
    assert_eq!(
        run.data,
        translated(
            &own,
            Some((GATEWAY, 40001)),
            Some((CTR, 80)),
            (CTR_MAC, GW_MAC)
        )
    );
}

#[test]
fn icmp_errors_inbound_translate_outer_and_quoted_headers() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    for l4 in [
        L4::tcp(40000, 80, tcp_flags::SYN),
        L4::udp(40000, 53, b"query"),
    ] {
        let sent = from_ctr(CLIENT, l4.clone());
        assert_eq!(
            bpf.run_tc_on(ENDPOINT, &sent.build(), routed.hv1).verdict,
            TC_ACT_REDIRECT
        );
        // What left the host, as a router two hops on quotes it.
        let (_, dport) = l4.ports();
        let mut on_the_wire = Ipv4Packet::new(HOST, CLIENT, l4.clone().with_ports(61000, dport));
        on_the_wire.ttl = 63;
        // Fragmentation needed (MTU 1400), from a router.
        let router = Ipv4Addr::new(10, 250, 0, 254);
        let error = Ipv4Packet::new(
            router,
            HOST,
            icmp_error(3, 4, [0, 0, 0x05, 0x78], &on_the_wire),
        )
        .with_macs([2, 0, 0, 0, 0, 0xbb], CLIENT_MAC);
        let run = bpf.run_tc(UPLINK, &error.build());
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "{l4:?}");
        let mut quoted = Ipv4Packet::new(CTR, CLIENT, l4.clone());
        quoted.ttl = 63;
        let mut expected =
            Ipv4Packet::new(router, CTR, icmp_error(3, 4, [0, 0, 0x05, 0x78], &quoted))
                .with_macs(CTR_MAC, GW_MAC);
        expected.ttl -= 1;
        assert_eq!(
            run.data,
            expected.build(),
            "{l4:?}: outer destination, quoted source and every checksum"
        );
        // Start the next protocol from a clean table (the port is one).
        for (key, _) in ct(&mut bpf) {
            netd::datapath::Maps::new(bpf.ebpf_mut())
                .ct_remove(&key)
                .expect("remove");
        }
    }
}

#[test]
fn icmp_errors_outbound_translate_outer_and_quoted_headers() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    // A client's datagram to published 5353/udp reaches container 1:53...
    let query = from_client(HOST, L4::udp(40001, 5353, b"query"));
    assert_eq!(bpf.run_tc(UPLINK, &query.build()).verdict, TC_ACT_REDIRECT);
    // ...which answers "port unreachable", quoting what it received.
    let mut received = Ipv4Packet::new(CLIENT, CTR, L4::udp(40001, 53, b"query"));
    received.ttl = 63;
    let error = from_ctr(CLIENT, icmp_error(3, 3, [0; 4], &received));
    let run = bpf.run_tc_on(ENDPOINT, &error.build(), routed.hv1);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    let mut quoted = Ipv4Packet::new(CLIENT, HOST, L4::udp(40001, 5353, b"query"));
    quoted.ttl = 63;
    let mut expected = Ipv4Packet::new(HOST, CLIENT, icmp_error(3, 3, [0; 4], &quoted))
        .with_macs(CLIENT_MAC, routed.up0_mac);
    expected.ttl -= 1;
    assert_eq!(
        run.data,
        expected.build(),
        "the client sees the error about host:5353"
    );
}

#[test]
fn icmp_errors_netd_must_not_translate() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    let sent = from_ctr(CLIENT, L4::udp(40000, 53, b"q"));
    bpf.run_tc_on(ENDPOINT, &sent.build(), routed.hv1);
    let on_the_wire = Ipv4Packet::new(HOST, CLIENT, L4::udp(61000, 53, b"q"));
    // An error about an error (RFC 1122: never answered, never translated).
    let inner_error = Ipv4Packet::new(HOST, CLIENT, icmp_error(3, 3, [0; 4], &on_the_wire));
    let nested = from_client(HOST, icmp_error(11, 0, [0; 4], &inner_error)).build();
    assert_untouched(
        &bpf.run_tc(UPLINK, &nested),
        &nested,
        TC_ACT_OK,
        "nested error",
    );
    // A quote cut short inside its transport header.
    let mut cut = from_client(HOST, icmp_error(3, 3, [0; 4], &on_the_wire));
    if let L4::Icmp { payload, .. } = &mut cut.l4 {
        payload.truncate(24);
    }
    let cut = cut.build();
    assert_untouched(
        &bpf.run_tc(UPLINK, &cut),
        &cut,
        TC_ACT_OK,
        "truncated quote",
    );
    // An error about nothing netd tracks.
    let unknown = Ipv4Packet::new(HOST, CLIENT, L4::udp(12345, 53, b"q"));
    let stray = from_client(HOST, icmp_error(3, 3, [0; 4], &unknown)).build();
    assert_untouched(&bpf.run_tc(UPLINK, &stray), &stray, TC_ACT_OK, "untracked");
}

#[test]
fn spoofed_sources_are_dropped() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "another container's address",
            Ipv4Packet::new(CTR2, CLIENT, L4::udp(1, 2, b"x"))
                .with_macs(GW_MAC, CTR_MAC)
                .build(),
        ),
        (
            "the host's address",
            Ipv4Packet::new(HOST, CLIENT, L4::udp(1, 2, b"x"))
                .with_macs(GW_MAC, CTR_MAC)
                .build(),
        ),
        (
            "another MAC",
            Ipv4Packet::new(CTR, CLIENT, L4::udp(1, 2, b"x"))
                .with_macs(GW_MAC, CTR2_MAC)
                .build(),
        ),
        ("ARP from another MAC", {
            let mut arp = arp_request(CTR2, GATEWAY);
            arp[6..12].copy_from_slice(&CTR2_MAC);
            arp
        }),
        (
            "a non-IP frame from another MAC",
            ethernet(GW_MAC, [2, 0, 0, 0, 0, 9], 0x88cc, &[0; 46]),
        ),
    ];
    for (i, (what, frame)) in cases.iter().enumerate() {
        assert_untouched(
            &bpf.run_tc_on(ENDPOINT, frame, routed.hv1),
            frame,
            TC_ACT_SHOT,
            what,
        );
        assert_eq!(drops(&mut bpf, drop::SPOOFED), i as u64 + 1, "{what}");
    }
    // Its own ARP and its own packets go on.
    let mut arp = arp_request(CTR, GATEWAY);
    arp[6..12].copy_from_slice(&CTR_MAC);
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &arp, routed.hv1),
        &arp,
        TC_ACT_OK,
        "own ARP",
    );
    let own = Ipv4Packet::new(CTR, CTR2, L4::udp(1, 2, b"x"))
        .with_macs(CTR2_MAC, CTR_MAC)
        .build();
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &own, routed.hv1),
        &own,
        TC_ACT_OK,
        "own packet to a neighbour",
    );
}

#[test]
fn network_options_in_the_datapath() {
    require_root!();
    let routed = Routed::new();
    let mut bpf = routed.fixture();
    let to_neighbour = Ipv4Packet::new(CTR, CTR2, L4::tcp(40000, 80, tcp_flags::SYN))
        .with_macs(CTR2_MAC, CTR_MAC)
        .build();
    let to_gateway = Ipv4Packet::new(CTR, GATEWAY, L4::tcp(40000, 22, tcp_flags::SYN))
        .with_macs(GW_MAC, CTR_MAC)
        .build();
    let to_outside = from_ctr(CLIENT, L4::tcp(40000, 80, tcp_flags::SYN));

    // enable_icc=false: containers cannot reach each other; the gateway and
    // published ports still work.
    let mut no_icc = config();
    no_icc.flags = NET_NO_ICC;
    set_config(&mut bpf, &no_icc);
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &to_neighbour, routed.hv1),
        &to_neighbour,
        TC_ACT_SHOT,
        "no icc",
    );
    assert_eq!(drops(&mut bpf, drop::ICC_DENIED), 1);
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &to_gateway, routed.hv1),
        &to_gateway,
        TC_ACT_OK,
        "the gateway",
    );
    let hairpin = from_ctr(HOST, L4::tcp(40005, 8090, tcp_flags::SYN)).build();
    assert_eq!(
        bpf.run_tc_on(ENDPOINT, &hairpin, routed.hv1).verdict,
        TC_ACT_REDIRECT,
        "published ports"
    );

    // Internal: nothing to or from outside.
    let mut internal = config();
    internal.flags = NET_INTERNAL;
    set_config(&mut bpf, &internal);
    let frame = to_outside.build();
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &frame, routed.hv1),
        &frame,
        TC_ACT_SHOT,
        "internal: out",
    );
    let inbound = from_client(CTR, L4::tcp(40000, 80, tcp_flags::SYN)).build();
    assert_untouched(
        &bpf.run_tc(UPLINK, &inbound),
        &inbound,
        TC_ACT_SHOT,
        "internal: in",
    );
    assert_eq!(drops(&mut bpf, drop::INTERNAL_NETWORK), 2);
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &to_neighbour, routed.hv1),
        &to_neighbour,
        TC_ACT_OK,
        "internal: neighbours",
    );

    // Masquerade off: routed as it is; its replies (only) come back in.
    let mut routed_only = config();
    routed_only.flags = NET_NO_MASQUERADE;
    set_config(&mut bpf, &routed_only);
    let run = bpf.run_tc_on(ENDPOINT, &to_outside.build(), routed.hv1);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(
        run.data,
        translated(&to_outside, None, None, (CLIENT_MAC, routed.up0_mac)),
        "no NAT"
    );
    let reply = from_client(CTR, L4::tcp(80, 40000, tcp_flags::SYN | tcp_flags::ACK));
    let run = bpf.run_tc(UPLINK, &reply.build());
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(
        run.data,
        translated(&reply, None, None, (CTR_MAC, GW_MAC)),
        "the reply is delivered"
    );
    let unsolicited = from_client(CTR, L4::tcp(80, 40001, tcp_flags::SYN)).build();
    assert_untouched(
        &bpf.run_tc(UPLINK, &unsolicited),
        &unsolicited,
        TC_ACT_SHOT,
        "not a reply",
    );
}
