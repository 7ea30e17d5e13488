// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The soak: containers attached and detached, ports published and
//! unpublished, under traffic (connections to published ports, masqueraded
//! connections, UDP), cycle after cycle. What must not grow: map entries
//! (back to their baseline once flows expire and are collected), the
//! agent's live heap (back to its level after a warm-up) and its open file
//! descriptors. RSS is reported, not judged: glibc keeps the pages that
//! listing a large conntrack table took, so it steps up with the largest
//! table seen and says nothing about a leak.
//!
//! `cargo xtask test` runs it for `NETD_SOAK_SECONDS` (default 20);
//! `cargo xtask soak --minutes N` runs it for N minutes and keeps the
//! report (`NETD_SOAK_REPORT`).

use std::{
    fs,
    time::{Duration, Instant},
};

use netd_tests::{
    netns::Process,
    require_root,
    topology::{HOST_IP, OUT_IP, Topology, wait_listening},
};
use serde::Serialize;

/// Cycles before the agent's heap is taken as the baseline: tokio's and
/// the API server's buffers settle in the first ones.
const WARM_UP_CYCLES: usize = 3;
/// Growth of the agent's live heap, from the baseline (three containers
/// attached, the resident's two ports published) to the end (all
/// detached, conntrack empty), that counts as a leak. The end has less to hold than the
/// baseline, so a leak of 2 bytes per connection (100,000 in a 20-second
/// run on this machine) or of a kilobyte per API request crosses it; runs
/// here end within 2 KiB of the baseline, below it.
const HEAP_SLACK_BYTES: u64 = 128 * 1024;
/// Short timeouts, so that flows expire within seconds of the end.
const AGENT_FLAGS: &[&str] = &[
    "--ct-gc-interval",
    "1",
    "--ct-timeout",
    "syn_sent=2",
    "--ct-timeout",
    "close=2",
    "--ct-timeout",
    "fin_wait=2",
    "--ct-timeout",
    "time_wait=2",
    "--ct-timeout",
    "udp=2",
    "--ct-timeout",
    "udp_stream=2",
];

#[derive(Debug, Serialize)]
struct Sample {
    cycle: usize,
    seconds: f64,
    rss_kib: u64,
    heap_bytes: u64,
    fds: usize,
    conntrack_entries: u64,
    endpoints: usize,
    ports: usize,
}

#[derive(Debug, Serialize)]
struct SoakReport {
    seconds: f64,
    cycles: usize,
    connections: u64,
    datagrams: u64,
    conntrack_baseline: u64,
    conntrack_peak: u64,
    conntrack_end: u64,
    seconds_to_baseline: f64,
    heap_baseline_bytes: u64,
    heap_end_bytes: u64,
    fds_baseline: usize,
    fds_end: usize,
    rss_baseline_kib: u64,
    rss_peak_kib: u64,
    rss_end_kib: u64,
    samples: Vec<Sample>,
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The agent's open files, the fewest of five looks 50 ms apart: the
/// connection of the CLI call just made may still be open for a moment.
fn open_fds(pid: u32) -> usize {
    (0..5)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            fs::read_dir(format!("/proc/{pid}/fd"))
                .expect("agent fds")
                .count()
        })
        .min()
        .expect("five looks")
}

fn count(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// Runs a loadgen client in `ns`; its JSON report.
fn client(ns: &netd_tests::netns::Netns, args: &str) -> serde_json::Value {
    let loadgen = env!("CARGO_BIN_EXE_netd-loadgen");
    let out = ns.try_sh(&format!("{loadgen} {args}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args}: {e}: {stdout}"))
}

/// Timeout of each socket operation of the soak's crr clients. A client
/// on a machine busy with the rest of the suite (2 CPUs, emulation) can
/// be kept from running for more than the loadgen's default 2 s; a SYN or
/// reply lost there (a full backlog) is sent again after 1, 3 and 7 s.
/// With 2 s, one such connection failed the soak once (1 of 612), and
/// stretched its 0.2-s phase to 2.15 s, which is why that phase reported
/// 285 connections/s: the rate was the stall's effect, not its cause.
const CRR_TIMEOUT_SECS: u64 = 10;

/// A crr run's verdict, on what netd can cause. A reset or refusal, a
/// connection closed early or a wrong echo is what a datapath bug gives
/// (a packet not translated, or translated wrongly, reaches a socket that
/// does not know it, and the kernel answers RST), never load: none is
/// allowed. A timeout, with TCP retransmitting for 10 s, is what a path
/// that drops gives; one connection in a thousand is allowed for a machine
/// that stalls (a broken path fails them all).
fn check_crr(what: &str, crr: &serde_json::Value, drops: &serde_json::Value) {
    let ok = count(&crr["connections"]);
    let failures = &crr["failures"];
    let broken: u64 = ["resets", "closed", "mismatches", "other"]
        .iter()
        .map(|kind| count(&failures[kind]))
        .sum();
    let timeouts = count(&failures["timeouts"]);
    assert!(
        ok > 0 && broken == 0 && timeouts * 1000 <= ok,
        "{what}: {crr}; netd's drops during the run: {drops}"
    );
}

/// netd's drop counters that grew from `before` to `after` (`netd stats`),
/// by reason: what to look at when a connection failed.
fn drops_between(before: &serde_json::Value, after: &serde_json::Value) -> serde_json::Value {
    let grown: serde_json::Map<String, serde_json::Value> = after["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(reason, n)| {
            let delta = count(n).saturating_sub(before["drops"][reason].as_u64().unwrap_or(0));
            (delta > 0).then(|| (reason.clone(), delta.into()))
        })
        .collect();
    grown.into()
}

/// A crr client's arguments for `duration` seconds to `to`.
fn crr_args(to: &str, duration: f64) -> String {
    format!("crr --to {to} --duration {duration} --concurrency 2 --timeout {CRR_TIMEOUT_SECS}")
}

#[test]
fn soak_attach_publish_detach_under_traffic() {
    require_root!();
    let seconds: u64 = std::env::var("NETD_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let t = Topology::new(AGENT_FLAGS);
    let loadgen = env!("CARGO_BIN_EXE_netd-loadgen");
    let _outside = t.out.spawn(&format!(
        "{loadgen} serve --tcp 0.0.0.0:7001 --udp 0.0.0.0:7001"
    ));
    wait_listening(&t.out, 7001, false);
    // A resident container, attached throughout: its flows leave conntrack
    // by expiring and being collected, not by a detach.
    let resident = t.container("r", &["-p", "8999:7000", "-p", "8999:7000/udp"]);
    let _resident_server = resident.spawn(&format!(
        "{loadgen} serve --tcp 0.0.0.0:7000 --udp 0.0.0.0:7000"
    ));
    wait_listening(&resident, 7000, false);
    let pid = t.agent.pid().expect("agent");
    let stats = || t.agent.json(&["stats"]);
    let conntrack_baseline = count(&stats()["conntrack_entries"]);

    let start = Instant::now();
    let mut samples = Vec::new();
    let (mut connections, mut datagrams) = (0, 0);
    let mut cycle = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        // Two containers per cycle, one published port each (TCP and UDP),
        // on host ports that move, so slots and addresses are reused.
        let port = 9000 + (cycle % 50) as u16 * 2;
        let containers: Vec<_> = (0..2)
            .map(|i| {
                let spec = format!("{}:7000", port + i);
                let udp = format!("{}:7000/udp", port + i);
                t.container(&format!("s{i}"), &["-p", &spec, "-p", &udp])
            })
            .collect();
        let _servers: Vec<Process> = containers
            .iter()
            .map(|c| {
                c.spawn(&format!(
                    "{loadgen} serve --tcp 0.0.0.0:7000 --udp 0.0.0.0:7000"
                ))
            })
            .collect();
        for c in &containers {
            wait_listening(c, 7000, false);
        }
        for i in 0..2 {
            let before = stats();
            let crr = client(&t.out, &crr_args(&format!("{HOST_IP}:{}", port + i), 0.4));
            check_crr("inbound", &crr, &drops_between(&before, &stats()));
            connections += count(&crr["connections"]);
            let udp = client(
                &t.out,
                &format!(
                    "udp --to {HOST_IP}:{} --duration 0.2 --flows 4 --max 2000",
                    port + i
                ),
            );
            datagrams += count(&udp["received"]);
        }
        let before = stats();
        let resident_crr = client(&t.out, &crr_args(&format!("{HOST_IP}:8999"), 0.2));
        check_crr("resident", &resident_crr, &drops_between(&before, &stats()));
        connections += count(&resident_crr["connections"]);
        let resident_udp = client(
            &resident,
            &format!("udp --to {OUT_IP}:7001 --duration 0.1 --flows 4 --max 500"),
        );
        datagrams += count(&resident_udp["received"]);
        let before = stats();
        let masq = client(&containers[0], &crr_args(&format!("{OUT_IP}:7001"), 0.4));
        check_crr("masquerade", &masq, &drops_between(&before, &stats()));
        connections += count(&masq["connections"]);
        // Half the cycles unpublish before detaching; detach removes the
        // ports of the others.
        if cycle % 2 == 0 {
            for (i, c) in containers.iter().enumerate() {
                let spec = format!("{}:7000", port + i as u16);
                t.agent.ok(&["unpublish", &spec, c.name()]);
            }
        }
        let s = stats();
        samples.push(Sample {
            cycle,
            seconds: start.elapsed().as_secs_f64(),
            rss_kib: rss_kib(pid),
            heap_bytes: count(&s["agent"]["heap_bytes"]),
            fds: open_fds(pid),
            conntrack_entries: count(&s["conntrack_entries"]),
            endpoints: t.agent.json(&["ps"]).as_array().map_or(0, Vec::len),
            ports: t.agent.json(&["ports"]).as_array().map_or(0, Vec::len),
        });
        for c in &containers {
            t.agent.ok(&["detach", c.name()]);
        }
        cycle += 1;
    }
    assert!(cycle > WARM_UP_CYCLES, "only {cycle} cycles in {seconds} s");
    let ps = t.agent.json(&["ps"]);
    assert_eq!(
        ps.as_array().map(Vec::len),
        Some(1),
        "the resident only: {ps}"
    );
    let ports = t.agent.json(&["ports"]);
    assert_eq!(
        ports.as_array().map(Vec::len),
        Some(2),
        "the resident's: {ports}"
    );

    // Every flow expires within seconds (short timeouts) and is collected.
    let end = Instant::now();
    let mut conntrack_end = count(&stats()["conntrack_entries"]);
    while conntrack_end > conntrack_baseline && end.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
        conntrack_end = count(&stats()["conntrack_entries"]);
    }
    let seconds_to_baseline = end.elapsed().as_secs_f64();
    t.agent.ok(&["detach", resident.name()]);
    let baseline = &samples[WARM_UP_CYCLES - 1];
    let (heap_baseline_bytes, fds_baseline) = (baseline.heap_bytes, baseline.fds);
    let rss_baseline_kib = baseline.rss_kib;
    let heap_end_bytes = count(&stats()["agent"]["heap_bytes"]);
    let fds_end = open_fds(pid);
    let rss_end_kib = rss_kib(pid);
    let report = SoakReport {
        seconds: start.elapsed().as_secs_f64(),
        cycles: cycle,
        connections,
        datagrams,
        conntrack_baseline,
        conntrack_peak: samples
            .iter()
            .map(|s| s.conntrack_entries)
            .max()
            .unwrap_or(0),
        conntrack_end,
        seconds_to_baseline,
        heap_baseline_bytes,
        heap_end_bytes,
        fds_baseline,
        fds_end,
        rss_baseline_kib,
        rss_peak_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rss_end_kib,
        samples,
    };
    let json = serde_json::to_string_pretty(&report).expect("report");
    if let Some(path) = std::env::var_os("NETD_SOAK_REPORT") {
        fs::write(path, &json).expect("soak report");
    }
    eprintln!(
        "soak: {} cycles in {:.0} s, {connections} connections, {datagrams} datagrams; conntrack peak {} -> {} ({:.1} s after the end, baseline {conntrack_baseline}); agent heap {heap_baseline_bytes} bytes after warm-up, {heap_end_bytes} at the end; fds {fds_baseline} -> {fds_end}; RSS {} KiB after warm-up, {} KiB peak, {} KiB at the end",
        report.cycles,
        report.seconds,
        report.conntrack_peak,
        report.conntrack_end,
        report.seconds_to_baseline,
        report.rss_baseline_kib,
        report.rss_peak_kib,
        report.rss_end_kib,
    );
    assert_eq!(
        conntrack_end, conntrack_baseline,
        "conntrack back to its baseline"
    );
    assert!(
        heap_end_bytes <= heap_baseline_bytes + HEAP_SLACK_BYTES,
        "the agent's live heap grew from {heap_baseline_bytes} to {heap_end_bytes} bytes"
    );
    assert!(
        fds_end <= fds_baseline,
        "the agent's open files grew from {fds_baseline} to {fds_end}"
    );
}
