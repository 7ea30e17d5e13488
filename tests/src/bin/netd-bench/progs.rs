// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! B6: the per-packet cost of each netd program, in nanoseconds, as the
//! kernel measures it in `BPF_PROG_TEST_RUN`.
//!
//! Programs and cases: `netd_uplink_tc` and `netd_uplink_xdp` on a packet
//! they leave to the kernel (pass-through: a host connection), on the first
//! packet of a new published flow and on a packet of an established
//! published flow (DNAT); `netd_endpoint_tc` on a packet of the container
//! to the host (pass-through), on the reply of an established published
//! flow (reverse NAT, routed out by the FIB) and on a packet of an
//! established flow of the container to the outside (masquerade). Each at
//! 1 and 10,000 published ports (9,999 extra single-port rules, installed
//! with `Maps::install` as the agent does, besides the measured 8080) and
//! with 1,000 and 1,000,000 conntrack entries pre-filled from userspace
//! (the two entries of established published flows from unrelated
//! clients, shaped as the datapath creates them), each scale in netd's
//! object loaded with maps of its own, in the namespace of
//! [`Routed`](netd_tests::fixture::Routed), whose FIB knows the outside.
//!
//! # Method
//!
//! With `repeat > 1` the kernel runs the program over and over on the same
//! buffer: a program that rewrites the packet sees its own output from the
//! second repetition on. So:
//!
//! - pass-through, which leaves the packet as it is, is timed with a large
//!   repeat count (the kernel's average per repetition), and the median of
//!   several such test runs is reported;
//! - cases that rewrite are timed one test run at a time (`repeat = 1`),
//!   each on a fresh copy of the packet, many times, and the median of the
//!   kernel-reported durations is reported. A new published flow is a flow
//!   never seen before in every run (a source address and port of its own),
//!   so that every run really creates the flow's two conntrack entries; the
//!   table has room for the pre-filled entries and all the new ones of a
//!   round, which are removed after it (proving that each run created its
//!   flow) so that the table stays at its scale.
//!
//! The duration of a single test run includes what the kernel's timer costs
//! once per test run (reading the clock twice, setting the run up), which
//! a large repeat count amortizes away. That overhead is measured as the
//! median duration of the program's pass-through packet at `repeat = 1`
//! minus its time per packet at the large repeat count; those pass-through
//! runs alternate with the case's own runs, one each, so that both see the
//! same conditions. Every case is reported twice: `raw_ns`, the median as
//! the kernel reported it, and `net_ns`, raw minus that overhead, floored
//! at 0 (pass-through, timed at the large repeat count, has net = raw).
//!
//! The runs of every case are spread over rounds, each round going through
//! every scale and every case, so that a change in the machine's load
//! during the benchmark weighs on every scale alike instead of on the one
//! measured at that moment; the medians are over all rounds.
//!
//! Every run's verdict is checked (`TC_ACT_REDIRECT` where netd delivers,
//! `XDP_PASS` with the packet rewritten for XDP, `TC_ACT_OK` or `XDP_PASS`
//! with the packet untouched for pass-through), the first run of each case
//! and the packets that create the measured flows byte for byte against
//! the packets they must become, and every other rewriting run for having
//! changed its packet: a benchmark that timed a drop or pass path by
//! mistake is an error, not a result.
//!
//! The thread is pinned to one CPU while it measures (and unpinned after),
//! so that the caches the programs warm stay theirs.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use netd::datapath::PortRule;
use netd_common::{
    ct::{
        CT_AT_UPLINK, CT_KIND_PUBLISHED, CT_NAT_DST, CT_NAT_SRC, CT_ORIGINAL, CT_TO_ENDPOINT,
        CtEntry, CtKey, SEEN_ACK, SEEN_SYN,
    },
    endpoint::XDP_MARK,
    map_names,
};
use netd_tests::{
    bpf::{Bpf, Hook},
    fixture::{
        CLIENT, CLIENT_MAC, CTR, CTR_MAC, CTR2, ENDPOINT, GATEWAY, GW_MAC, HOST, NAT_PORT, Routed,
        TC_ACT_OK, TC_ACT_REDIRECT, TCP, UPLINK, XDP, XDP_PASS, dnat, rule, translated,
    },
    pktgen::{Ipv4Packet, L4, tcp_flags},
};
use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};

/// What the bench's command line asks of B6.
pub struct ProgOptions {
    /// Fewer runs: a smoke test, well under 30 s.
    pub quick: bool,
}

/// One program, case and scale.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct ProgCase {
    /// The program, e.g. "netd_uplink_tc".
    pub program: String,
    /// "pass-through", "new published flow", "established DNAT", "reverse
    /// NAT" or "masquerade".
    pub case: String,
    /// Published ports installed.
    pub ports: u32,
    /// Conntrack entries pre-filled.
    pub ct_entries: u32,
    /// Test runs at repeat 1, or in repeat mode the repeat count of each
    /// test run.
    pub runs: u32,
    /// The median kernel-reported ns per packet.
    pub raw_ns: f64,
    /// `raw_ns` minus the timer overhead of a single test run, floored at 0
    /// (= `raw_ns` in repeat mode).
    pub net_ns: f64,
    /// "single" (one test run per packet, repeat 1) or "repeat" (a large
    /// repeat count: pass-through, which leaves the packet as it is).
    pub mode: String,
    /// How many test runs the median is taken over.
    pub samples: u32,
    /// The timer overhead of a single test run: the median of this
    /// program's pass-through packet at repeat 1 (run alternately with the
    /// case's runs) minus its time per packet at the large repeat count,
    /// floored at 0. Subtracted from `raw_ns` in single mode; in repeat
    /// mode only shown.
    pub overhead_ns: f64,
    /// The conntrack table's size (`max_entries` of `NETD_CT`).
    pub ct_max: u32,
}

/// Runs B6: every case at every scale.
pub fn run(options: &ProgOptions) -> anyhow::Result<Vec<ProgCase>> {
    let params = Params::new(options.quick);
    let started = Instant::now();
    let _pinned = PinnedCpu::new()?;
    let routed = Routed::new();
    let mut scales = Vec::new();
    for (ports, ct_entries) in SCALES {
        scales.push(Scale::new(&routed, &params, ports, ct_entries)?);
    }
    for round in 0..params.rounds {
        for scale in &mut scales {
            scale.round(round)?;
        }
        eprintln!(
            "B6: round {}/{} done at {:.1} s",
            round + 1,
            params.rounds,
            started.elapsed().as_secs_f64()
        );
    }
    let cases = scales.iter_mut().flat_map(Scale::results).collect();
    eprintln!("B6: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(cases)
}

/// (published ports, pre-filled conntrack entries).
const SCALES: [(u32, u32); 4] = [
    (1, 1_000),
    (10_000, 1_000),
    (1, 1_000_000),
    (10_000, 1_000_000),
];

/// The published port measured, and where it leads.
const PORT: u16 = 8080;
const CTR_PORT: u16 = 80;
/// The measured published flow's client port.
const CLIENT_PORT: u16 = 40000;
/// The measured masqueraded flow's container port, and the NAT port the
/// fixture's one-port range (`NAT_PORT`) gives it.
const MASQ_PORT: u16 = 40001;

struct Params {
    rounds: u32,
    /// Test runs at repeat 1 of each case per round (and as many of its
    /// program's pass-through packet).
    chunk: u32,
    /// The repeat count of repeat mode: one such test run per round.
    repeat: u32,
    /// Unrecorded runs of each case per round before its recorded ones.
    warmup: u32,
}

impl Params {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 5,
                chunk: 1_000,
                repeat: 100_000,
                warmup: 100,
            }
        } else {
            Self {
                rounds: 10,
                chunk: 10_000,
                repeat: 500_000,
                warmup: 500,
            }
        }
    }
}

/// A program under test and how to run it.
#[derive(Clone, Copy)]
struct Prog {
    name: &'static str,
    hook: Hook,
    /// The interface packets arrive on (TC's `ingress_ifindex`).
    ifindex: Option<u32>,
}

/// What every run must do with its packet.
#[derive(Clone)]
enum Expect {
    /// This verdict, the packet untouched.
    Untouched(i32),
    /// This verdict, the packet rewritten: exactly into `first` on the
    /// first run, into anything but itself on the others.
    Rewritten { verdict: i32, first: Vec<u8> },
}

/// The packets of a case.
enum Packets {
    /// The same packet every run.
    Same(Vec<u8>),
    /// The SYN of new flow `i` in run `i`.
    NewFlows,
}

impl Packets {
    fn get(&self, i: u32) -> Vec<u8> {
        match self {
            Self::Same(frame) => frame.clone(),
            Self::NewFlows => new_flow(i).build(),
        }
    }
}

/// One case of one scale and what it measured so far.
struct Case {
    prog: Prog,
    name: &'static str,
    packets: Packets,
    expect: Expect,
    /// The index of this program's pass-through among the scale's cases
    /// (its own for pass-through).
    base: usize,
    /// Single mode: ns of each run. Repeat mode: ns per packet of each
    /// test run at the large repeat count.
    durations: Vec<f64>,
    /// ns of each run at repeat 1 of the pass-through packet.
    base_durations: Vec<f64>,
    /// Runs done (numbers the new flows).
    runs: u32,
}

impl Case {
    fn is_pass_through(&self, index: usize) -> bool {
        self.base == index
    }
}

/// One scale: netd's object loaded with maps of its own, seeded, and its
/// cases.
struct Scale<'a> {
    bpf: Bpf,
    params: &'a Params,
    ports: u32,
    ct_entries: u32,
    ct_max: u32,
    cases: Vec<Case>,
}

impl<'a> Scale<'a> {
    fn new(
        routed: &Routed,
        params: &'a Params,
        ports: u32,
        ct_entries: u32,
    ) -> anyhow::Result<Self> {
        let setup = Instant::now();
        // Room for the pre-filled entries, the measured flows and the new
        // flows of a round (removed after it), never less than the agent's
        // default.
        let ct_max = (ct_entries + 2 * params.chunk + 4096).max(65_536);
        let mut bpf = routed
            .fixture_with(Some(ct_max), &published(ports))
            .with_context(|| {
                format!("B6: the datapath with {ports} ports and {ct_max} conntrack entries")
            })?;
        prefill(&mut bpf, ct_entries, routed.hv1)?;
        let mut scale = Self {
            bpf,
            params,
            ports,
            ct_entries,
            ct_max,
            cases: Vec::new(),
        };
        scale.add_cases(routed)?;
        eprintln!(
            "B6: {ports} ports, {ct_entries} ct (table of {ct_max}): set up in {:.1} s",
            setup.elapsed().as_secs_f64()
        );
        Ok(scale)
    }

    /// The cases, and the flows the established ones need.
    fn add_cases(&mut self, routed: &Routed) -> anyhow::Result<()> {
        let uplink_tc = Prog {
            name: UPLINK,
            hook: Hook::Tc,
            ifindex: None,
        };
        let uplink_xdp = Prog {
            name: XDP,
            hook: Hook::Xdp,
            ifindex: None,
        };
        let endpoint_tc = Prog {
            name: ENDPOINT,
            hook: Hook::Tc,
            ifindex: Some(routed.hv1),
        };

        // Pass-through: a packet of a host connection from outside; a
        // packet of the container to a host service.
        let host_ack = Ipv4Packet::new(CLIENT, HOST, L4::tcp(50022, 22, tcp_flags::ACK)).build();
        let tc_base = self.add(
            uplink_tc,
            "pass-through",
            Packets::Same(host_ack.clone()),
            Expect::Untouched(TC_ACT_OK),
            None,
        );
        let xdp_base = self.add(
            uplink_xdp,
            "pass-through",
            Packets::Same(host_ack),
            Expect::Untouched(XDP_PASS),
            None,
        );
        let to_host = from_ctr(GATEWAY, L4::tcp(50053, 53, tcp_flags::ACK)).build();
        let endpoint_base = self.add(
            endpoint_tc,
            "pass-through",
            Packets::Same(to_host),
            Expect::Untouched(TC_ACT_OK),
            None,
        );

        // New published flows.
        let first_dnat = dnat(&new_flow(0), CTR, CTR_PORT, CTR_MAC);
        self.add(
            uplink_tc,
            "new published flow",
            Packets::NewFlows,
            Expect::Rewritten {
                verdict: TC_ACT_REDIRECT,
                first: first_dnat.clone(),
            },
            Some(tc_base),
        );
        self.add(
            uplink_xdp,
            "new published flow",
            Packets::NewFlows,
            Expect::Rewritten {
                verdict: XDP_PASS,
                first: xdp_output(routed.hv1, &first_dnat),
            },
            Some(xdp_base),
        );

        // An established published flow: its SYN creates it, its ACKs are
        // timed at both uplink hooks.
        let syn = Ipv4Packet::new(CLIENT, HOST, L4::tcp(CLIENT_PORT, PORT, tcp_flags::SYN));
        let created = Expect::Rewritten {
            verdict: TC_ACT_REDIRECT,
            first: dnat(&syn, CTR, CTR_PORT, CTR_MAC),
        };
        self.once(
            uplink_tc,
            &syn.build(),
            &created,
            "the published flow's SYN",
        )?;
        let ack = Ipv4Packet::new(CLIENT, HOST, L4::tcp(CLIENT_PORT, PORT, tcp_flags::ACK));
        let ack_dnat = dnat(&ack, CTR, CTR_PORT, CTR_MAC);
        self.add(
            uplink_tc,
            "established DNAT",
            Packets::Same(ack.build()),
            Expect::Rewritten {
                verdict: TC_ACT_REDIRECT,
                first: ack_dnat.clone(),
            },
            Some(tc_base),
        );
        self.add(
            uplink_xdp,
            "established DNAT",
            Packets::Same(ack.build()),
            Expect::Rewritten {
                verdict: XDP_PASS,
                first: xdp_output(routed.hv1, &ack_dnat),
            },
            Some(xdp_base),
        );

        // Its replies, from the container, routed out.
        let reply = from_ctr(CLIENT, L4::tcp(CTR_PORT, CLIENT_PORT, tcp_flags::ACK));
        let out_macs = (CLIENT_MAC, routed.up0_mac);
        self.add(
            endpoint_tc,
            "reverse NAT",
            Packets::Same(reply.build()),
            Expect::Rewritten {
                verdict: TC_ACT_REDIRECT,
                first: translated(&reply, Some((HOST, PORT)), None, out_macs),
            },
            Some(endpoint_base),
        );

        // A masqueraded flow of the container: its SYN creates it, its
        // ACKs are timed.
        let out_syn = from_ctr(CLIENT, L4::tcp(MASQ_PORT, 80, tcp_flags::SYN));
        let created = Expect::Rewritten {
            verdict: TC_ACT_REDIRECT,
            first: translated(&out_syn, Some((HOST, NAT_PORT)), None, out_macs),
        };
        self.once(
            endpoint_tc,
            &out_syn.build(),
            &created,
            "the masqueraded flow's SYN",
        )?;
        let out_ack = from_ctr(CLIENT, L4::tcp(MASQ_PORT, 80, tcp_flags::ACK));
        self.add(
            endpoint_tc,
            "masquerade",
            Packets::Same(out_ack.build()),
            Expect::Rewritten {
                verdict: TC_ACT_REDIRECT,
                first: translated(&out_ack, Some((HOST, NAT_PORT)), None, out_macs),
            },
            Some(endpoint_base),
        );
        Ok(())
    }

    /// Adds a case whose program's pass-through is case `base` (`None`: it
    /// is a pass-through itself); returns its index.
    fn add(
        &mut self,
        prog: Prog,
        name: &'static str,
        packets: Packets,
        expect: Expect,
        base: Option<usize>,
    ) -> usize {
        let index = self.cases.len();
        self.cases.push(Case {
            prog,
            name,
            packets,
            expect,
            base: base.unwrap_or(index),
            durations: Vec::new(),
            base_durations: Vec::new(),
            runs: 0,
        });
        index
    }

    /// One round: a share of the runs of every case.
    fn round(&mut self, round: u32) -> anyhow::Result<()> {
        for index in 0..self.cases.len() {
            if self.cases[index].is_pass_through(index) {
                self.pass_through(index)?;
            } else {
                self.single(index)?;
            }
        }
        if round == 0 {
            // After the first round the measured flows still exist: they
            // were translated all along.
            self.check_measured_flows()?;
        }
        Ok(())
    }

    /// A round of pass-through case `index`: one test run at the large
    /// repeat count, then runs at repeat 1 (shown, for comparison).
    fn pass_through(&mut self, index: usize) -> anyhow::Result<()> {
        let (prog, frame) = {
            let case = &self.cases[index];
            (case.prog, case.packets.get(0))
        };
        let what = format!("{} pass-through", prog.name);
        let expect = self.cases[index].expect.clone();
        ensure!(
            matches!(expect, Expect::Untouched(_)),
            "B6: {what} must leave its packet untouched"
        );
        self.once(prog, &frame, &expect, &what)?;
        self.timed(prog, &frame, self.params.repeat / 10, &expect, &what)?;
        let repeated = self.timed(prog, &frame, self.params.repeat, &expect, &what)?;
        for _ in 0..self.params.warmup {
            self.timed(prog, &frame, 1, &expect, &what)?;
        }
        let mut singles = Vec::with_capacity(self.params.chunk as usize);
        for _ in 0..self.params.chunk {
            singles.push(self.timed(prog, &frame, 1, &expect, &what)?);
        }
        let case = &mut self.cases[index];
        case.durations.push(repeated);
        case.base_durations.append(&mut singles);
        case.runs += 1;
        Ok(())
    }

    /// A round of single-mode case `index`: `chunk` test runs at repeat 1,
    /// each followed by one of its program's pass-through packet at
    /// repeat 1. New flows created are removed after the round.
    fn single(&mut self, index: usize) -> anyhow::Result<()> {
        let case = &self.cases[index];
        let prog = case.prog;
        let what = format!("{} {}", prog.name, case.name);
        let base = &self.cases[case.base];
        let base_frame = base.packets.get(0);
        let base_expect = base.expect.clone();
        ensure!(
            matches!(base_expect, Expect::Untouched(_)),
            "B6: {what}: its baseline must be a pass-through"
        );
        let base_what = format!("{} pass-through", prog.name);
        let first_run = case.runs;
        let creates = matches!(case.packets, Packets::NewFlows);
        let expect = case.expect.clone();
        if !creates {
            let frame = self.cases[index].packets.get(0);
            for _ in 0..self.params.warmup {
                self.timed(prog, &frame, 1, &expect, &what)?;
                self.timed(prog, &base_frame, 1, &base_expect, &base_what)?;
            }
        }
        let mut durations = Vec::with_capacity(self.params.chunk as usize);
        let mut base_durations = Vec::with_capacity(self.params.chunk as usize);
        for i in first_run..first_run + self.params.chunk {
            let frame = self.cases[index].packets.get(i);
            let run = self
                .bpf
                .try_run(prog.hook, prog.name, &frame, prog.ifindex, 1)
                .with_context(|| format!("B6: {what}, run {i}"))?;
            check(
                run.verdict,
                &run.data,
                &frame,
                &expect,
                i == 0,
                &format!("{what}, run {i}"),
            )?;
            durations.push(run.duration.as_nanos() as f64);
            base_durations.push(self.timed(prog, &base_frame, 1, &base_expect, &base_what)?);
        }
        if creates {
            self.remove_new_flows(first_run..first_run + self.params.chunk)?;
        }
        let case = &mut self.cases[index];
        case.durations.append(&mut durations);
        case.base_durations.append(&mut base_durations);
        case.runs += self.params.chunk;
        Ok(())
    }

    /// One test run of `prog` on `frame`, checked exactly.
    fn once(
        &mut self,
        prog: Prog,
        frame: &[u8],
        expect: &Expect,
        what: &str,
    ) -> anyhow::Result<()> {
        let run = self
            .bpf
            .try_run(prog.hook, prog.name, frame, prog.ifindex, 1)
            .with_context(|| format!("B6: {what}"))?;
        check(run.verdict, &run.data, frame, expect, true, what)
    }

    /// One test run of `prog` on `frame` repeated `repeat` times, checked;
    /// the kernel's ns per repetition.
    fn timed(
        &mut self,
        prog: Prog,
        frame: &[u8],
        repeat: u32,
        expect: &Expect,
        what: &str,
    ) -> anyhow::Result<f64> {
        let run = self
            .bpf
            .try_run(prog.hook, prog.name, frame, prog.ifindex, repeat)
            .with_context(|| format!("B6: {what}"))?;
        check(run.verdict, &run.data, frame, expect, false, what)?;
        Ok(run.duration.as_nanos() as f64)
    }

    /// Removes the conntrack entries of new flows `flows`; an entry missing
    /// means a run did not create its flow.
    fn remove_new_flows(&mut self, flows: std::ops::Range<u32>) -> anyhow::Result<()> {
        let mut ct = ct_map(&mut self.bpf)?;
        for i in flows {
            let (addr, port) = new_flow_source(i);
            let (original, reply) = flow_keys(addr, port);
            for key in [original, reply] {
                match ct.remove(&key) {
                    Ok(()) => {}
                    Err(MapError::KeyNotFound) => {
                        bail!("B6: new flow {i} was not created (no conntrack entry {key:?})")
                    }
                    Err(err) => {
                        return Err(err).context("B6: removing a new flow's conntrack entry");
                    }
                }
            }
        }
        Ok(())
    }

    /// The measured published flow's entries are still there, and the
    /// original counted the packets translated.
    fn check_measured_flows(&mut self) -> anyhow::Result<()> {
        let ct = ct_map(&mut self.bpf)?;
        let (original, reply) = flow_keys(CLIENT, CLIENT_PORT);
        let entry = ct
            .get(&original, 0)
            .context("B6: the measured flow's conntrack entry")?;
        ensure!(
            entry.packets > u64::from(self.params.chunk),
            "B6: the measured flow counted {} packets",
            entry.packets
        );
        ct.get(&reply, 0)
            .context("B6: the measured flow's reply entry")?;
        Ok(())
    }

    /// The results of every case, each also shown on stderr.
    fn results(&mut self) -> Vec<ProgCase> {
        let mut results = Vec::new();
        for index in 0..self.cases.len() {
            let base = self.cases[index].base;
            let base_repeated = median(&mut self.cases[base].durations);
            let case = &mut self.cases[index];
            let what = format!("{} {}", case.prog.name, case.name);
            let base_single = median(&mut case.base_durations);
            let overhead = (base_single - base_repeated).max(0.0);
            let raw = median(&mut case.durations);
            let result = if case.is_pass_through(index) {
                eprintln!(
                    "B6: {what}, {} ports, {} ct: {raw:.0} ns (repeat {}; at repeat 1: {base_single:.0} ns, overhead {overhead:.0} ns)",
                    self.ports, self.ct_entries, self.params.repeat
                );
                ProgCase {
                    program: case.prog.name.to_owned(),
                    case: case.name.to_owned(),
                    ports: self.ports,
                    ct_entries: self.ct_entries,
                    runs: self.params.repeat,
                    raw_ns: raw,
                    net_ns: raw,
                    mode: "repeat".to_owned(),
                    samples: case.durations.len() as u32,
                    overhead_ns: overhead,
                    ct_max: self.ct_max,
                }
            } else {
                let net = (raw - overhead).max(0.0);
                eprintln!(
                    "B6: {what}, {} ports, {} ct: {net:.0} ns (raw {raw:.0} ns, overhead {overhead:.0} ns, {} runs)",
                    self.ports,
                    self.ct_entries,
                    case.durations.len()
                );
                ProgCase {
                    program: case.prog.name.to_owned(),
                    case: case.name.to_owned(),
                    ports: self.ports,
                    ct_entries: self.ct_entries,
                    runs: case.runs,
                    raw_ns: raw,
                    net_ns: net,
                    mode: "single".to_owned(),
                    samples: case.durations.len() as u32,
                    overhead_ns: overhead,
                    ct_max: self.ct_max,
                }
            };
            results.push(result);
        }
        results
    }
}

/// Checks one run against `expect`; `exact`: the rewritten bytes too.
fn check(
    verdict: i32,
    data: &[u8],
    frame: &[u8],
    expect: &Expect,
    exact: bool,
    what: &str,
) -> anyhow::Result<()> {
    let expected = match expect {
        Expect::Untouched(expected)
        | Expect::Rewritten {
            verdict: expected, ..
        } => *expected,
    };
    ensure!(
        verdict == expected,
        "B6: {what}: verdict {verdict} instead of {expected}: the wrong path would be timed"
    );
    match expect {
        Expect::Untouched(_) => {
            ensure!(
                data == frame,
                "B6: {what}: the packet was changed, it must pass untouched"
            );
        }
        Expect::Rewritten { first, .. } if exact => {
            ensure!(
                data == &first[..],
                "B6: {what}: the packet is not what netd must make of it:\n got      {data:02x?}\n expected {first:02x?}"
            );
        }
        Expect::Rewritten { .. } => {
            ensure!(data != frame, "B6: {what}: the packet was not rewritten");
        }
    }
    Ok(())
}

/// The median of `values` (sorted in place); 0 for none.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// The published rules of a scale of `ports`: 8080 to the container's 80,
/// and for the rest single-port rules 20001 and up to the second container.
fn published(ports: u32) -> Vec<PortRule> {
    let any = Ipv4Addr::UNSPECIFIED;
    let mut rules = vec![rule(0, TCP, any, (PORT, PORT), CTR, CTR_PORT, false)];
    for slot in 1..ports {
        let port = 20_000 + slot as u16;
        rules.push(rule(slot, TCP, any, (port, port), CTR2, port, false));
    }
    rules
}

/// A packet from container 1 (behind `hv1`), with its own MACs.
pub(crate) fn from_ctr(dst: Ipv4Addr, l4: L4) -> Ipv4Packet {
    Ipv4Packet::new(CTR, dst, l4).with_macs(GW_MAC, CTR_MAC)
}

/// What `netd_uplink_xdp` makes of a packet it translates for the
/// container behind `ifindex`: `translated`, behind the 8-byte metadata
/// mark it leaves for TC.
fn xdp_output(ifindex: u32, translated: &[u8]) -> Vec<u8> {
    let mut out = XDP_MARK.to_ne_bytes().to_vec();
    out.extend_from_slice(&ifindex.to_ne_bytes());
    out.extend_from_slice(translated);
    out
}

/// Flows per client address (client ports 10000 to 59999).
const FLOWS_PER_ADDR: u32 = 50_000;

/// The client of new flow `i`: 198.18.0.1 and up (RFC 2544's benchmark
/// range), a port of its own.
fn new_flow_source(i: u32) -> (Ipv4Addr, u16) {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i / FLOWS_PER_ADDR);
    (addr, 10_000 + (i % FLOWS_PER_ADDR) as u16)
}

/// The SYN of new flow `i`, to the published port.
fn new_flow(i: u32) -> Ipv4Packet {
    let (addr, port) = new_flow_source(i);
    Ipv4Packet::new(addr, HOST, L4::tcp(port, PORT, tcp_flags::SYN))
}

/// The conntrack keys (original, reply) of a published flow from
/// `client:port` to the measured port.
fn flow_keys(client: Ipv4Addr, port: u16) -> (CtKey, CtKey) {
    let original = CtKey {
        saddr_be: client.octets(),
        daddr_be: HOST.octets(),
        sport_be: port.to_be_bytes(),
        dport_be: PORT.to_be_bytes(),
        proto: TCP,
        _pad: [0; 3],
    };
    let reply = CtKey {
        saddr_be: CTR.octets(),
        daddr_be: client.octets(),
        sport_be: CTR_PORT.to_be_bytes(),
        dport_be: port.to_be_bytes(),
        proto: TCP,
        _pad: [0; 3],
    };
    (original, reply)
}

fn ct_map(bpf: &mut Bpf) -> anyhow::Result<BpfHashMap<&mut MapData, CtKey, CtEntry>> {
    BpfHashMap::try_from(bpf.map_mut(map_names::CT)).context("B6: the conntrack map")
}

/// Fills the conntrack table with `entries` entries: the two entries of
/// `entries / 2` established published flows from clients 100.64.0.1 and
/// up (ports 10000 and up) to the measured port, shaped as the datapath
/// creates them (the container behind `ifindex`). aya has no batch
/// update: one syscall per entry.
fn prefill(bpf: &mut Bpf, entries: u32, ifindex: u32) -> anyhow::Result<()> {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).context("CLOCK_MONOTONIC")?;
    let now = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    let mut ct = ct_map(bpf)?;
    let started = Instant::now();
    for i in 0..entries / 2 {
        let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i / FLOWS_PER_ADDR);
        let port = 10_000 + (i % FLOWS_PER_ADDR) as u16;
        let (original_key, reply_key) = flow_keys(client, port);
        let common = CtEntry {
            mapping: 0,
            generation: published(1)[0].generation,
            created_ns: now,
            last_seen_ns: now,
            packets: 10,
            bytes: 1_000,
            tcp_seen: SEEN_SYN | SEEN_ACK,
            kind: CT_KIND_PUBLISHED,
            proto: TCP,
            ..CtEntry::default()
        };
        let original = CtEntry {
            reverse: reply_key,
            nat_daddr_be: CTR.octets(),
            nat_dport_be: CTR_PORT.to_be_bytes(),
            ifindex,
            dmac: CTR_MAC,
            flags: CT_NAT_DST | CT_ORIGINAL | CT_TO_ENDPOINT | CT_AT_UPLINK,
            ..common
        };
        let reply = CtEntry {
            reverse: original_key,
            nat_saddr_be: HOST.octets(),
            nat_sport_be: PORT.to_be_bytes(),
            flags: CT_NAT_SRC,
            ..common
        };
        ct.insert(reply_key, reply, 0)
            .context("B6: pre-filling conntrack")?;
        ct.insert(original_key, original, 0)
            .context("B6: pre-filling conntrack")?;
    }
    if entries >= 100_000 {
        eprintln!(
            "B6: {entries} conntrack entries inserted in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The calling thread pinned to one CPU of those it may run on, until
/// dropped.
pub(crate) struct PinnedCpu {
    previous: CpuSet,
}

impl PinnedCpu {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let this = Pid::from_raw(0);
        let previous = sched_getaffinity(this).context("sched_getaffinity")?;
        // The last CPU allowed: CPU 0 tends to take more interrupts.
        let cpu = (0..CpuSet::count())
            .rev()
            .find(|&cpu| previous.is_set(cpu).unwrap_or(false))
            .context("no CPU in this thread's affinity")?;
        let mut only = CpuSet::new();
        only.set(cpu).context("CPU set")?;
        sched_setaffinity(this, &only).context("sched_setaffinity")?;
        Ok(Self { previous })
    }
}

impl Drop for PinnedCpu {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.previous);
    }
}
