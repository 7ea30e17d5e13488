// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The live monitor's kernel side through BPF_PROG_TEST_RUN: nothing in the
//! ring while no monitor asks; one drop event per drop, with its reason,
//! hook, interface, length and first bytes, while drops are asked; one flow
//! event per new flow, with its tuple and its translated reply tuple, while
//! flows are asked (and no drop then); a flood of a million drops sampled
//! by the per-CPU token bucket, what it refused counted.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use netd::datapath::monitor::{Decoded, Lost, MonitorMaps, Summary};
use netd_common::{
    ct::CtKey,
    drop,
    monitor::{MonitorConfig, SNAP_BYTES, WANT_DROPS, WANT_FLOWS},
};
use netd_tests::{
    bpf::Bpf,
    fixture::*,
    pktgen::{Ipv4Packet, L4, tcp_flags},
    require_root,
};

/// The fixture in a namespace whose FIB knows the outside, with the
/// monitor's maps taken out of the object, told `events` at a rate no test
/// of one packet reaches.
fn monitored(routed: &Routed, events: u32) -> (Bpf, MonitorMaps) {
    let mut bpf = routed.fixture();
    // Loaded before the maps leave the object, as the agent loads them.
    bpf.tc(ENDPOINT);
    bpf.tc(UPLINK);
    let mut monitor = MonitorMaps::take(bpf.ebpf_mut()).expect("the monitor's maps");
    configure(&mut monitor, events, 1_000_000, 1_000);
    (bpf, monitor)
}

fn configure(monitor: &mut MonitorMaps, events: u32, rate: u32, burst: u32) {
    let config = MonitorConfig {
        events,
        rate,
        burst,
        _pad: 0,
    };
    monitor.configure(config).expect("configure the monitor");
    assert_eq!(monitor.config().expect("read back").events, events);
}

/// Every event in the ring now, decoded (a record that does not decode
/// fails the test).
fn drain(monitor: &mut MonitorMaps) -> Vec<Decoded> {
    let mut events = Vec::new();
    while let Some(item) = monitor.events.next() {
        let bytes = item.to_vec();
        events.push(
            Decoded::from_bytes(&bytes)
                .unwrap_or_else(|| panic!("a record that does not decode: {bytes:02x?}")),
        );
    }
    events
}

/// A packet container 1 sends claiming container 2's address: a spoofed
/// source, dropped by the endpoint hook. `payload` bytes of UDP payload.
fn spoofed(payload: usize) -> Ipv4Packet {
    let data: Vec<u8> = (0..payload).map(|i| (i * 13 % 251) as u8).collect();
    Ipv4Packet::new(CTR2, CLIENT, L4::udp(4242, 53, &data)).with_macs(GW_MAC, CTR_MAC)
}

fn key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> CtKey {
    CtKey {
        saddr_be: src.0.octets(),
        daddr_be: dst.0.octets(),
        sport_be: src.1.to_be_bytes(),
        dport_be: dst.1.to_be_bytes(),
        proto,
        _pad: [0; 3],
    }
}

#[test]
fn a_drop_with_the_monitor_off_writes_nothing() {
    require_root!();
    let routed = Routed::new();
    let (mut bpf, mut monitor) = monitored(&routed, 0);
    let frame = spoofed(20).build();
    assert_untouched(
        &bpf.run_tc_on(ENDPOINT, &frame, routed.hv1),
        &frame,
        TC_ACT_SHOT,
        "a spoofed source",
    );
    assert_eq!(drops(&mut bpf, drop::SPOOFED), 1, "the drop happened");
    // A new flow too: it writes nothing either.
    let syn = syn(HOST, 8080);
    assert_eq!(
        bpf.run_tc(UPLINK, &syn.build()).verdict,
        TC_ACT_REDIRECT,
        "a new published flow"
    );
    assert_eq!(ct(&mut bpf).len(), 2, "the flow was created");
    assert_eq!(drain(&mut monitor), [], "no event while no monitor asks");
    assert_eq!(
        monitor.lost().expect("lost"),
        Lost::default(),
        "nothing asked, so nothing refused: the bucket is not even looked at"
    );
}

#[test]
fn a_drop_with_drops_asked_is_one_event_with_its_head() {
    require_root!();
    let routed = Routed::new();
    let (mut bpf, mut monitor) = monitored(&routed, WANT_DROPS);
    // One frame shorter than the snapshot, one longer.
    for payload in [20, 300] {
        let packet = spoofed(payload);
        let frame = packet.build();
        assert_untouched(
            &bpf.run_tc_on(ENDPOINT, &frame, routed.hv1),
            &frame,
            TC_ACT_SHOT,
            "a spoofed source",
        );
        let events = drain(&mut monitor);
        assert_eq!(events.len(), 1, "one drop, one event: {events:?}");
        let Decoded::Drop {
            time_ns,
            hook,
            reason,
            ifindex,
            len,
            head,
            packet: summary,
        } = &events[0]
        else {
            panic!("not a drop event: {:?}", events[0]);
        };
        assert_eq!(
            (*hook, *reason, *ifindex, *len),
            ("endpoint_tc", "spoofed", routed.hv1, frame.len() as u32),
            "{payload}-byte payload"
        );
        let snap = frame.len().min(SNAP_BYTES);
        assert_eq!(head.len(), snap, "snap_len = min(len, {SNAP_BYTES})");
        assert_eq!(&head[..], &frame[..snap], "the frame's first bytes");
        assert_eq!(
            *summary,
            Summary {
                proto: "udp".to_owned(),
                src: Some((CTR2, Some(4242))),
                dst: Some((CLIENT, Some(53))),
                tcp_flags: None,
                fragment: false,
            }
        );
        let now = netd::datapath::conntrack::monotonic_ns();
        assert!(
            *time_ns > 0 && *time_ns <= now && now - time_ns < 60_000_000_000,
            "the event's time is the kernel's monotonic clock: {time_ns} vs {now}"
        );
    }
    // Packets that are not dropped write nothing, flows included (not
    // asked).
    let own = Ipv4Packet::new(CTR, CLIENT, L4::tcp(40000, 80, tcp_flags::SYN))
        .with_macs(GW_MAC, CTR_MAC)
        .build();
    assert_eq!(
        bpf.run_tc_on(ENDPOINT, &own, routed.hv1).verdict,
        TC_ACT_REDIRECT,
        "a masqueraded flow"
    );
    assert_eq!(ct(&mut bpf).len(), 2, "the flow was created");
    assert_eq!(drain(&mut monitor), [], "flows were not asked");
    assert_eq!(monitor.lost().expect("lost"), Lost::default());
    assert_eq!(drops(&mut bpf, drop::SPOOFED), 2);
}

#[test]
fn a_new_flow_with_flows_asked_is_one_event_with_both_tuples() {
    require_root!();
    let routed = Routed::new();
    let (mut bpf, mut monitor) = monitored(&routed, WANT_FLOWS);

    // A published port: the reply tuple is the container's.
    let run = bpf.run_tc(UPLINK, &syn(HOST, 8080).build());
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    let events = drain(&mut monitor);
    assert_eq!(events.len(), 1, "{events:?}");
    let Decoded::Flow {
        kind, tuple, reply, ..
    } = &events[0]
    else {
        panic!("not a flow event: {:?}", events[0]);
    };
    assert_eq!(*kind, "published");
    assert_eq!(*tuple, key((CLIENT, 40000), (HOST, 8080), TCP));
    assert_eq!(
        *reply,
        key((CTR, 80), (CLIENT, 40000), TCP),
        "replies come from the container's port: the packet became CLIENT -> CTR:80"
    );

    // The flow's next packet is no new flow.
    let ack = Ipv4Packet::new(CLIENT, HOST, L4::tcp(40000, 8080, tcp_flags::ACK));
    assert_eq!(bpf.run_tc(UPLINK, &ack.build()).verdict, TC_ACT_REDIRECT);
    assert_eq!(drain(&mut monitor), [], "an established flow's packet");

    // Masquerade: the reply tuple is the uplink's address and NAT port.
    let out = Ipv4Packet::new(CTR, CLIENT, L4::tcp(40001, 80, tcp_flags::SYN))
        .with_macs(GW_MAC, CTR_MAC)
        .build();
    assert_eq!(
        bpf.run_tc_on(ENDPOINT, &out, routed.hv1).verdict,
        TC_ACT_REDIRECT
    );
    let events = drain(&mut monitor);
    assert_eq!(events.len(), 1, "{events:?}");
    let Decoded::Flow {
        kind, tuple, reply, ..
    } = &events[0]
    else {
        panic!("not a flow event: {:?}", events[0]);
    };
    assert_eq!(*kind, "masquerade");
    assert_eq!(*tuple, key((CTR, 40001), (CLIENT, 80), TCP));
    assert_eq!(*reply, key((CLIENT, 80), (HOST, NAT_PORT), TCP));

    // A drop, with drops not asked: nothing.
    let frame = spoofed(20).build();
    assert_eq!(
        bpf.run_tc_on(ENDPOINT, &frame, routed.hv1).verdict,
        TC_ACT_SHOT
    );
    assert_eq!(drops(&mut bpf, drop::SPOOFED), 1);
    assert_eq!(drain(&mut monitor), [], "drops were not asked");
    assert_eq!(monitor.lost().expect("lost"), Lost::default());

    // Both asked: a drop and a flow each give theirs.
    configure(&mut monitor, WANT_DROPS | WANT_FLOWS, 1_000_000, 1_000);
    assert_eq!(
        bpf.run_tc_on(ENDPOINT, &frame, routed.hv1).verdict,
        TC_ACT_SHOT
    );
    assert_eq!(
        bpf.run_tc(UPLINK, &syn_from(40002, HOST, 8080).build())
            .verdict,
        TC_ACT_REDIRECT
    );
    let events = drain(&mut monitor);
    assert!(
        matches!(
            &events[..],
            [Decoded::Drop { reason: "spoofed", .. }, Decoded::Flow { kind: "published", tuple, .. }]
                if *tuple == key((CLIENT, 40002), (HOST, 8080), TCP)
        ),
        "{events:?}"
    );
}

/// A million drops in one test run: the bucket lets through its burst and
/// its rate, refuses (and counts) the rest, and the ring never fills.
#[test]
fn a_flood_of_drops_is_sampled_by_the_bucket_and_the_rest_counted() {
    require_root!();
    const RUNS: u32 = 1_000_000;
    const BURST: u32 = 5;
    const RATE: u32 = 50;
    let routed = Routed::new();
    let (mut bpf, mut monitor) = monitored(&routed, 0);
    configure(&mut monitor, WANT_DROPS, RATE, BURST);
    let frame = spoofed(20).build();
    let started = Instant::now();
    let run = bpf.time_tc_on(ENDPOINT, &frame, routed.hv1, RUNS);
    let elapsed = started.elapsed();
    assert_eq!(run.verdict, TC_ACT_SHOT);
    assert!(
        elapsed < Duration::from_secs(60),
        "a million monitored drops took {elapsed:?}"
    );
    assert_eq!(
        drops(&mut bpf, drop::SPOOFED),
        u64::from(RUNS),
        "every run dropped"
    );
    let events = drain(&mut monitor);
    let lost = monitor.lost().expect("lost");
    // The kernel may move a long test run to another CPU between its
    // chunks; each CPU has a bucket of its own.
    let cpus = aya::util::nr_cpus().expect("CPUs") as f64;
    let bound = cpus * (f64::from(BURST) + f64::from(RATE) * elapsed.as_secs_f64()) + 2.0;
    eprintln!(
        "{RUNS} drops in {elapsed:?} ({:?} per run): {} events, lost {lost:?}, bound {bound:.0}",
        run.duration,
        events.len()
    );
    assert!(
        events.len() >= BURST as usize,
        "at least the burst gets through: {} events",
        events.len()
    );
    assert!(
        events.len() as f64 <= bound,
        "{} events for burst {BURST} and rate {RATE}/s over {elapsed:?}: more than {bound:.0}",
        events.len()
    );
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Decoded::Drop { reason: "spoofed", head, .. } if *head == frame)),
        "every event is the flood's drop"
    );
    assert!(
        lost.rate >= u64::from(RUNS) - events.len() as u64 - lost.full,
        "refused by the bucket: {lost:?}"
    );
    assert_eq!(lost.full, 0, "the ring never filled: {lost:?}");
    assert_eq!(
        lost.total() + events.len() as u64,
        u64::from(RUNS),
        "every drop was either emitted or counted lost"
    );

    // Off again: the flood writes nothing and counts nothing more.
    configure(&mut monitor, 0, RATE, BURST);
    bpf.time_tc_on(ENDPOINT, &frame, routed.hv1, 10_000);
    assert_eq!(drain(&mut monitor), []);
    assert_eq!(monitor.lost().expect("lost"), lost);
}
