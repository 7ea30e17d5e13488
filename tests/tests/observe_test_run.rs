// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The observe programs through BPF_PROG_TEST_RUN: each packet class lands
//! in its own counter, the verdict is "pass", the packet leaves unchanged.

use std::net::Ipv4Addr;

use netd_common::{
    map_names,
    stats::{ProtoStats, hook},
};
use netd_tests::{
    bpf::Bpf,
    pktgen::{self, IPPROTO_GRE, Ipv4Packet, L4, tcp_flags},
    require_root,
};

const TC_ACT_OK: i32 = 0;
const XDP_PASS: i32 = 2;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

/// Reads the counter a frame must land in.
type Counter = fn(&ProtoStats) -> u64;

/// One frame per counter, and the counter it must land in.
fn corpus() -> Vec<(Vec<u8>, Counter)> {
    vec![
        (
            Ipv4Packet::new(CLIENT, HOST, L4::tcp(40000, 80, tcp_flags::SYN)).build(),
            |s| s.ipv4_tcp,
        ),
        (
            Ipv4Packet::new(CLIENT, HOST, L4::udp(40000, 53, b"q")).build(),
            |s| s.ipv4_udp,
        ),
        (
            Ipv4Packet::new(CLIENT, HOST, L4::icmp_echo(true, 1, 1)).build(),
            |s| s.ipv4_icmp,
        ),
        (
            Ipv4Packet::new(
                CLIENT,
                HOST,
                L4::Raw {
                    proto: IPPROTO_GRE,
                    payload: vec![0; 8],
                },
            )
            .build(),
            |s| s.ipv4_other,
        ),
        (pktgen::ipv6_udp(), |s| s.ipv6),
        (pktgen::arp_request(CLIENT, HOST), |s| s.arp),
        // The TCP header cut short: classified by the IPv4 protocol field.
        (
            Ipv4Packet::new(CLIENT, HOST, L4::tcp(1, 2, tcp_flags::ACK)).build()[..38].to_vec(),
            |s| s.ipv4_tcp,
        ),
        (
            pktgen::ethernet([0xff; 6], [2, 0, 0, 0, 0, 1], 0x88cc, &[0; 46]),
            |s| s.other,
        ),
    ]
}

fn check_hook(run: impl Fn(&mut Bpf, &[u8]) -> i32, hook_index: u32, pass: i32) {
    let mut bpf = Bpf::load();
    let mut expected_bytes = 0;
    for (i, (frame, counter)) in corpus().into_iter().enumerate() {
        let before: ProtoStats =
            bpf.per_cpu_sum(map_names::PROTO_STATS, hook_index, ProtoStats::merged);
        assert_eq!(run(&mut bpf, &frame), pass, "verdict for frame {i}");
        let after: ProtoStats =
            bpf.per_cpu_sum(map_names::PROTO_STATS, hook_index, ProtoStats::merged);
        assert_eq!(
            counter(&after),
            counter(&before) + 1,
            "frame {i} counted in its class"
        );
        assert_eq!(
            after.packets(),
            before.packets() + 1,
            "frame {i} counted once"
        );
        expected_bytes += frame.len() as u64;
        assert_eq!(after.bytes, expected_bytes, "bytes after frame {i}");
    }
}

#[test]
fn tc_observe_counts_each_protocol() {
    require_root!();
    check_hook(
        |bpf, frame| {
            let run = bpf.run_tc("netd_observe_tc", frame);
            assert_eq!(run.data, frame, "TC observe must not change the packet");
            run.verdict
        },
        hook::UPLINK_TC,
        TC_ACT_OK,
    );
}

#[test]
fn xdp_observe_counts_each_protocol() {
    require_root!();
    check_hook(
        |bpf, frame| {
            let run = bpf.run_xdp("netd_observe_xdp", frame);
            assert_eq!(run.data, frame, "XDP observe must not change the packet");
            run.verdict
        },
        hook::UPLINK_XDP,
        XDP_PASS,
    );
}

/// An IPv4 ethertype with the IP header cut off is counted as "other IPv4",
/// not parsed. Only XDP can be shown it: the kernel's test_run for TC refuses
/// IPv4 frames shorter than an Ethernet and an IPv4 header (EINVAL).
#[test]
fn xdp_observe_counts_truncated_ipv4_as_other() {
    require_root!();
    let mut bpf = Bpf::load();
    let frame = Ipv4Packet::new(CLIENT, HOST, L4::tcp(1, 2, tcp_flags::ACK)).build()[..20].to_vec();
    let run = bpf.run_xdp("netd_observe_xdp", &frame);
    assert_eq!(run.verdict, XDP_PASS);
    let stats: ProtoStats =
        bpf.per_cpu_sum(map_names::PROTO_STATS, hook::UPLINK_XDP, ProtoStats::merged);
    assert_eq!((stats.ipv4_other, stats.packets()), (1, 1), "{stats:?}");
}

#[test]
fn hooks_count_separately() {
    require_root!();
    let mut bpf = Bpf::load();
    let frame = Ipv4Packet::new(CLIENT, HOST, L4::tcp(40000, 80, tcp_flags::SYN)).build();
    bpf.run_tc("netd_observe_tc", &frame);
    bpf.run_tc("netd_observe_tc", &frame);
    bpf.run_xdp("netd_observe_xdp", &frame);
    let tc: ProtoStats =
        bpf.per_cpu_sum(map_names::PROTO_STATS, hook::UPLINK_TC, ProtoStats::merged);
    let xdp: ProtoStats =
        bpf.per_cpu_sum(map_names::PROTO_STATS, hook::UPLINK_XDP, ProtoStats::merged);
    assert_eq!((tc.ipv4_tcp, xdp.ipv4_tcp), (2, 1));
}
