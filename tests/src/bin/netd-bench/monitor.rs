// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! B11: what the live monitor costs the datapath, in nanoseconds per
//! packet as the kernel measures it in `BPF_PROG_TEST_RUN`: each case with
//! the monitor off (`events` 0, what every packet pays while no `netd
//! monitor` runs) and on (drops asked, at a rate no run reaches, so every
//! drop is written into the ring), interleaved, and the per-round ratio on
//! / off.
//!
//! Cases, in the namespace of [`Routed`], whose FIB knows the outside:
//! - `netd_endpoint_tc` dropping a packet with a spoofed source: every
//!   repetition is a drop, and with the monitor on an event of 192 bytes
//!   with the packet's head. Timed at a repeat count below the ring's room
//!   (about 5,000 events), the ring drained between test runs (untimed) as
//!   the agent drains it: what an emitted event costs, not what a full
//!   ring's refusal costs (checked: nothing lost);
//! - `netd_uplink_tc` on a packet it leaves to the kernel (a host
//!   connection), at a large repeat count;
//! - `netd_uplink_tc` on an established published flow's packet (DNAT),
//!   one test run per packet (it rewrites the packet), minus nothing: the
//!   timer overhead is the same on both sides of the ratio.
//!
//! Every run's verdict is checked, and the event count of the drop case
//! with the monitor on and off.

use std::time::Instant;

use anyhow::{Context as _, ensure};
use netd::datapath::monitor::MonitorMaps;
use netd_common::monitor::{MonitorConfig, WANT_DROPS};
use netd_tests::{
    bpf::{Bpf, Hook},
    fixture::{
        CLIENT, CTR2, ENDPOINT, HOST, Routed, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, UPLINK,
    },
    pktgen::{Ipv4Packet, L4, tcp_flags},
};

use crate::{
    progs::{PinnedCpu, from_ctr, median},
    series::rotation,
};

/// One case's figures.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct MonitorCost {
    pub program: String,
    pub case: String,
    /// "repeat N" or "single".
    pub mode: String,
    /// Median ns per packet, monitor off / on.
    pub off_ns: f64,
    pub on_ns: f64,
    /// Median, min and max over rounds of on / off (above 1: the monitor
    /// costs).
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    pub rounds: usize,
    /// Events the monitor-on runs wrote (drops only).
    pub events: u64,
}

/// The two states measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Off,
    On,
}

struct Case {
    program: &'static str,
    name: &'static str,
    ifindex: Option<u32>,
    frame: Vec<u8>,
    verdict: i32,
    /// `None`: single runs (the packet is rewritten).
    repeat: Option<u32>,
    /// Test runs per state per round.
    runs: u32,
    /// Whether every repetition is a drop (an event each, monitor on).
    drops: bool,
    /// Per round, per state: the median ns per packet of that round.
    figures: Vec<[f64; 2]>,
    events: u64,
}

/// Runs B11 over `rounds` rounds.
pub fn run(rounds: usize) -> anyhow::Result<Vec<MonitorCost>> {
    let started = Instant::now();
    let _pinned = PinnedCpu::new()?;
    let routed = Routed::new();
    let mut bpf = routed.fixture_with(None, &netd_tests::fixture::rules())?;
    bpf.tc(ENDPOINT);
    bpf.tc(UPLINK);
    let mut monitor = MonitorMaps::take(bpf.ebpf_mut()).context("B11: the monitor's maps")?;

    // The established flow the DNAT case times.
    let syn = Ipv4Packet::new(CLIENT, HOST, L4::tcp(40000, 8080, tcp_flags::SYN)).build();
    let run = bpf.run_tc(UPLINK, &syn);
    ensure!(
        run.verdict == TC_ACT_REDIRECT,
        "B11: the published flow's SYN was not translated"
    );
    // Container 1 claiming container 2's address.
    let mut spoofed = from_ctr(CLIENT, L4::udp(4242, 53, &[0x5a; 64]));
    spoofed.src = CTR2;
    let spoofed = spoofed.build();
    let mut cases = vec![
        Case {
            program: ENDPOINT,
            name: "drop (spoofed source)",
            ifindex: Some(routed.hv1),
            frame: spoofed,
            verdict: TC_ACT_SHOT,
            repeat: Some(4_000),
            runs: 100,
            drops: true,
            figures: Vec::new(),
            events: 0,
        },
        Case {
            program: UPLINK,
            name: "pass-through",
            ifindex: None,
            frame: Ipv4Packet::new(CLIENT, HOST, L4::tcp(50022, 22, tcp_flags::ACK)).build(),
            verdict: TC_ACT_OK,
            repeat: Some(200_000),
            runs: 3,
            drops: false,
            figures: Vec::new(),
            events: 0,
        },
        Case {
            program: UPLINK,
            name: "established DNAT",
            ifindex: None,
            frame: Ipv4Packet::new(CLIENT, HOST, L4::tcp(40000, 8080, tcp_flags::ACK)).build(),
            verdict: TC_ACT_REDIRECT,
            repeat: None,
            runs: 20_000,
            drops: false,
            figures: Vec::new(),
            events: 0,
        },
    ];
    for case in &mut cases {
        case.figures = vec![[f64::NAN; 2]; rounds];
        // Warm up, and prove the path: the verdict of both states.
        for state in [State::Off, State::On] {
            set(&mut monitor, state)?;
            measure(&mut bpf, &mut monitor, case, state, 200)?;
        }
    }
    let items = cases.len() * 2;
    for (i, (round, item)) in rotation(rounds, items).enumerate() {
        let case = &mut cases[item / 2];
        // Off and on in an order that alternates with the round.
        let state = if (item + round) % 2 == 0 {
            State::Off
        } else {
            State::On
        };
        set(&mut monitor, state)?;
        let runs = case.runs;
        let ns = measure(&mut bpf, &mut monitor, case, state, runs)?;
        case.figures[round][usize::from(state == State::On)] = ns;
        if (i + 1) % items == 0 {
            eprintln!(
                "B11: round {}/{rounds} done at {:.1} s",
                round + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    set(&mut monitor, State::Off)?;
    let lost = monitor.lost().context("B11: lost events")?;
    ensure!(
        lost.total() == 0,
        "B11: the monitor lost events ({lost:?}): a refusal would have been timed, not an event"
    );
    Ok(cases.iter().map(|c| result(c, rounds)).collect())
}

fn set(monitor: &mut MonitorMaps, state: State) -> anyhow::Result<()> {
    monitor
        .configure(MonitorConfig {
            events: if state == State::On { WANT_DROPS } else { 0 },
            rate: u32::MAX,
            burst: u32::MAX,
            _pad: 0,
        })
        .context("B11: configuring the monitor")
}

/// `runs` test runs of `case` in `state`; the median ns per packet.
fn measure(
    bpf: &mut Bpf,
    monitor: &mut MonitorMaps,
    case: &mut Case,
    state: State,
    runs: u32,
) -> anyhow::Result<f64> {
    let repeat = case.repeat.unwrap_or(1);
    let mut ns = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let run = bpf
            .try_run(Hook::Tc, case.program, &case.frame, case.ifindex, repeat)
            .with_context(|| format!("B11: {} {}", case.program, case.name))?;
        ensure!(
            run.verdict == case.verdict,
            "B11: {} {}: verdict {} instead of {}: the wrong path would be timed",
            case.program,
            case.name,
            run.verdict,
            case.verdict
        );
        ns.push(run.duration.as_nanos() as f64);
        let mut events = 0u64;
        while let Some(item) = monitor.events.next() {
            drop(item);
            events += 1;
        }
        let expected = if case.drops && state == State::On {
            u64::from(repeat)
        } else {
            0
        };
        ensure!(
            events == expected,
            "B11: {} {}: {events} events instead of {expected}",
            case.program,
            case.name
        );
        case.events += events;
    }
    Ok(median(&mut ns))
}

fn result(case: &Case, rounds: usize) -> MonitorCost {
    let mut off: Vec<f64> = case.figures.iter().map(|f| f[0]).collect();
    let mut on: Vec<f64> = case.figures.iter().map(|f| f[1]).collect();
    let mut ratios: Vec<f64> = case
        .figures
        .iter()
        .map(|[off, on]| on / off)
        .filter(|r| r.is_finite())
        .collect();
    let cost = MonitorCost {
        program: case.program.to_owned(),
        case: case.name.to_owned(),
        mode: case
            .repeat
            .map_or_else(|| "single".to_owned(), |r| format!("repeat {r}")),
        off_ns: median(&mut off),
        on_ns: median(&mut on),
        ratio: median(&mut ratios),
        ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratio_max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        rounds,
        events: case.events,
    };
    eprintln!(
        "B11: {} {}: off {:.0} ns, on {:.0} ns, on/off {:.2}x ({:.2}-{:.2})",
        cost.program,
        cost.case,
        cost.off_ns,
        cost.on_ns,
        cost.ratio,
        cost.ratio_min,
        cost.ratio_max
    );
    cost
}
