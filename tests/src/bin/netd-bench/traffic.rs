// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The traffic benchmarks: B1 (request/response), B2 and B3 (new
//! connections, and their scaling with published ports), B5 (bulk), B7
//! (small UDP packets), B8 (host-local access), B9 (many networks).

use std::{collections::BTreeMap, time::Instant};

use anyhow::Context as _;
use netd_tests::netns::{Cgroup, Netns};

use crate::{
    beds::{Bed, Kind, bench_subnet},
    measure::{Loadgen, Measure, field},
    series::Series,
};

/// The variants compared on the path from outside.
pub const INBOUND: [Kind; 6] = [
    Kind::NoNat,
    Kind::IptLegacy,
    Kind::IptNft,
    Kind::NftMap,
    Kind::Netd,
    Kind::NetdXdp,
];
/// The variants compared for host-local clients.
pub const HOST_LOCAL: [Kind; 4] = [Kind::NoNat, Kind::Netd, Kind::Proxy, Kind::IptOutput];
/// The port counts of B3.
pub const PORT_COUNTS: [usize; 4] = [1, 100, 1_000, 10_000];

/// The network counts of B9.
pub const NETWORK_COUNTS: [usize; 2] = [1, 1_000];
/// Networks created (and removed) per B9 creation measurement.
const CREATES_PER_RUN: usize = 10;

/// The name of B9's connection series at `count` networks.
pub fn b9_case(count: usize) -> String {
    format!("CRR, {count} network{}", if count == 1 { "" } else { "s" })
}

/// The name of B9's creation series at `count` networks.
pub fn b9_create_case(count: usize) -> String {
    format!(
        "network create, {count} network{}",
        if count == 1 { "" } else { "s" }
    )
}

/// The name of B3's series at `count` ports.
pub fn b3_case(count: usize) -> String {
    format!("CRR, {count} port{}", if count == 1 { "" } else { "s" })
}

/// What every benchmark needs: the beds, the client and the method.
pub struct Traffic<'a> {
    pub beds: &'a mut BTreeMap<Kind, Bed>,
    pub loadgen: &'a Loadgen,
    pub rounds: usize,
    /// Length of one run.
    pub seconds: f64,
}

/// Which client runs, from where.
#[derive(Clone, Copy)]
enum Side {
    /// The outside client, to the published port.
    Outside,
    /// The container, to the server outside (masquerade).
    Container,
    /// The host itself, to 127.0.0.1 (no-NAT: to the container's address).
    HostLocal,
}

impl Traffic<'_> {
    fn items(&self, kinds: &[Kind]) -> Vec<(Kind, &Bed)> {
        kinds
            .iter()
            .filter_map(|k| self.beds.get(k).map(|bed| (*k, bed)))
            .collect()
    }

    /// Runs the client `mode ARGS` against each bed of `kinds` from `side`.
    fn series(&self, mut series: Series, kinds: &[Kind], side: Side, mode: Mode) -> Series {
        let items = self.items(kinds);
        let seconds = self.seconds;
        series.run(self.rounds, &items, |bed| {
            let (ns, cgroup, to) = endpoints(bed, side, mode);
            mode.run(self.loadgen, ns, cgroup, &to, seconds)
        });
        series
    }

    /// B1: transactions over kept-alive connections, 1 and 32 flows.
    pub fn b1(&self) -> Vec<Series> {
        [1, 32]
            .into_iter()
            .map(|flows| {
                let case = format!("RR, {flows} flow{}", if flows > 1 { "s" } else { "" });
                let series = Series::new("B1", case, "tx/s", true, &[Kind::NoNat, Kind::IptNft])
                    .cpu("CPU µs/tx", 1e6);
                self.series(series, &INBOUND, Side::Outside, Mode::Rr { flows })
            })
            .collect()
    }

    /// B2: new connections per second through the published port.
    pub fn b2(&self, kinds: &[Kind]) -> Series {
        let series = Series::new(
            "B2",
            "CRR, 1 port",
            "conn/s",
            true,
            &[Kind::NoNat, Kind::IptNft],
        )
        .cpu("CPU µs/conn", 1e6);
        self.series(series, kinds, Side::Outside, Mode::Crr)
    }

    /// B3: B2 with more and more published ports. The port count is a
    /// bed's configuration, so each count is a phase of interleaved rounds;
    /// no-NAT runs in every round, so phases compare through their ratio to
    /// it.
    pub fn b3(&mut self, kinds: &[Kind], counts: &[usize]) -> anyhow::Result<Vec<Series>> {
        let mut all = Vec::new();
        for &count in counts {
            for kind in kinds {
                if let Some(bed) = self.beds.get_mut(kind) {
                    eprintln!("B3: {} publishes {count} ports", kind.label());
                    bed.set_ports(count)
                        .with_context(|| format!("{} with {count} ports", kind.label()))?;
                }
            }
            let series = Series::new(
                "B3",
                b3_case(count),
                "conn/s",
                true,
                &[Kind::NoNat, Kind::IptNft],
            )
            .cpu("CPU µs/conn", 1e6);
            all.push(self.series(series, kinds, Side::Outside, Mode::Crr));
        }
        for kind in kinds {
            if let Some(bed) = self.beds.get_mut(kind) {
                bed.set_ports(1)?;
            }
        }
        Ok(all)
    }

    /// B9: B2 with 1 and with 1,000 networks on the agent (phases, compared
    /// through their ratio to no-NAT, as B3's), and how long `netd network
    /// create` takes at each count (median of [`CREATES_PER_RUN`] creates
    /// per run, the CLI's own start included; each removed again).
    pub fn b9(&mut self, kinds: &[Kind], counts: &[usize]) -> anyhow::Result<Vec<Series>> {
        let mut all = Vec::new();
        for &count in counts {
            for kind in kinds {
                if let Some(bed) = self.beds.get_mut(kind) {
                    eprintln!("B9: {} holds {count} networks", kind.label());
                    let started = Instant::now();
                    bed.set_networks(count)
                        .with_context(|| format!("{} with {count} networks", kind.label()))?;
                    if bed.agent.is_some() && count > 1 {
                        eprintln!(
                            "B9: {} networks created in {:.1} s",
                            count - 1,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            let series = Series::new("B9", b9_case(count), "conn/s", true, &[Kind::NoNat])
                .cpu("CPU µs/conn", 1e6);
            all.push(self.series(series, kinds, Side::Outside, Mode::Crr));

            let netd: Vec<(Kind, &Bed)> = self
                .items(kinds)
                .into_iter()
                .filter(|(_, bed)| bed.agent.is_some())
                .collect();
            let mut create =
                Series::new("B9", b9_create_case(count), "ms", false, &[]).cpu("", 1.0);
            create.run(self.rounds, &netd, |bed| time_creates(bed, count));
            all.push(create);
        }
        for kind in kinds {
            if let Some(bed) = self.beds.get_mut(kind) {
                bed.set_networks(1)?;
            }
        }
        Ok(all)
    }

    /// B5: one bulk stream, inbound to the published port and out through
    /// masquerade.
    pub fn b5(&self) -> Vec<Series> {
        let mut inbound = INBOUND.to_vec();
        inbound.push(Kind::Proxy);
        let gb = |case: &str| {
            Series::new("B5", case, "Gbit/s", true, &[Kind::NoNat, Kind::IptNft])
                .cpu("CPU s/GB", 1.0)
        };
        vec![
            self.series(gb("bulk inbound"), &inbound, Side::Outside, Mode::Bulk),
            self.series(
                gb("bulk through masquerade"),
                &INBOUND,
                Side::Container,
                Mode::Bulk,
            ),
        ]
    }

    /// B7: small UDP datagrams per second, one flow and many.
    pub fn b7(&self) -> Vec<Series> {
        [1, 64]
            .into_iter()
            .map(|flows| {
                let case = format!("UDP 18 B, {flows} flow{}", if flows > 1 { "s" } else { "" });
                let series = Series::new("B7", case, "pkt/s", true, &[Kind::NoNat, Kind::IptNft])
                    .cpu("CPU ns/pkt", 1e9);
                self.series(series, &INBOUND, Side::Outside, Mode::Udp { flows })
            })
            .collect()
    }

    /// B8: a client on the host itself, to 127.0.0.1:8080 (no-NAT: straight
    /// to the container), for B1, B2 and B5.
    pub fn b8(&self) -> Vec<Series> {
        let base = [Kind::NoNat, Kind::Proxy];
        vec![
            self.series(
                Series::new("B8", "host-local RR, 1 flow", "tx/s", true, &base)
                    .cpu("CPU µs/tx", 1e6),
                &HOST_LOCAL,
                Side::HostLocal,
                Mode::Rr { flows: 1 },
            ),
            self.series(
                Series::new("B8", "host-local CRR", "conn/s", true, &base).cpu("CPU µs/conn", 1e6),
                &HOST_LOCAL,
                Side::HostLocal,
                Mode::Crr,
            ),
            self.series(
                Series::new("B8", "host-local bulk", "Gbit/s", true, &base).cpu("CPU s/GB", 1.0),
                &HOST_LOCAL,
                Side::HostLocal,
                Mode::Bulk,
            ),
        ]
    }
}

/// The per-packet cost of netd's programs under real traffic, from the
/// kernel's run-time statistics (BPF_ENABLE_STATS: on only while the
/// returned descriptor lives, and only here, since it slows every program a
/// little and would tax netd in the comparisons).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct InTraffic {
    pub variant: String,
    pub traffic: String,
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

impl Traffic<'_> {
    /// Runs each kind of traffic once through the netd beds with run-time
    /// statistics on, and returns each program's average cost per run.
    pub fn in_traffic(&self) -> anyhow::Result<Vec<InTraffic>> {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics")?;
        let traffic = [
            (
                "RR, 32 flows (established DNAT, reverse NAT)",
                Side::Outside,
                Mode::Rr { flows: 32 },
            ),
            ("CRR (new flows)", Side::Outside, Mode::Crr),
            (
                "UDP, 64 flows (established DNAT)",
                Side::Outside,
                Mode::Udp { flows: 64 },
            ),
            ("bulk through masquerade", Side::Container, Mode::Bulk),
        ];
        let mut costs = Vec::new();
        for (kind, bed) in self.items(&[Kind::Netd, Kind::NetdXdp]) {
            for (what, side, mode) in traffic {
                let before = bed.prog_stats()?;
                let (ns, cgroup, to) = endpoints(bed, side, mode);
                mode.run(self.loadgen, ns, cgroup, &to, self.seconds)?;
                let after = bed.prog_stats()?;
                for (program, (time, count)) in after {
                    let (t0, c0) = before.get(&program).copied().unwrap_or_default();
                    let runs = count - c0;
                    // A program this traffic hardly touches (an ARP now and
                    // then) says nothing about its cost.
                    if runs >= 1000 {
                        costs.push(InTraffic {
                            variant: kind.label().to_owned(),
                            traffic: what.to_owned(),
                            program,
                            runs,
                            ns_per_run: (time - t0) as f64 / runs as f64,
                        });
                    }
                }
            }
        }
        Ok(costs)
    }
}

/// Where the client of `side` runs and what it connects to.
fn endpoints(bed: &Bed, side: Side, mode: Mode) -> (&Netns, Option<&Cgroup>, String) {
    match side {
        Side::Outside => (
            &bed.out,
            None,
            match mode {
                Mode::Udp { .. } => bed.inbound_udp(),
                _ => bed.inbound_tcp(),
            },
        ),
        Side::Container => (&bed.ctr, None, bed.egress_tcp()),
        // netd's socket programs act on its cgroup's processes.
        Side::HostLocal => (
            &bed.host,
            bed.agent.as_ref().map(|a| a.cgroup()),
            bed.host_local_tcp(),
        ),
    }
}

/// A client mode of the load generator.
#[derive(Clone, Copy)]
enum Mode {
    Rr { flows: u32 },
    Crr,
    Bulk,
    Udp { flows: u32 },
}

impl Mode {
    fn run(
        self,
        loadgen: &Loadgen,
        ns: &Netns,
        cgroup: Option<&Cgroup>,
        to: &str,
        seconds: f64,
    ) -> anyhow::Result<Measure> {
        let mut args: Vec<String> = match self {
            Self::Rr { flows } => vec!["rr".into(), "--flows".into(), flows.to_string()],
            Self::Crr => vec!["crr".into()],
            Self::Bulk => vec!["bulk".into(), "--direction".into(), "send".into()],
            Self::Udp { flows } => vec!["udp".into(), "--flows".into(), flows.to_string()],
        };
        args.extend([
            "--to".into(),
            to.into(),
            "--duration".into(),
            seconds.to_string(),
        ]);
        let (report, cpu_s) = loadgen.run(ns, cgroup, &args, seconds)?;
        let latency = |name| report[name].as_f64();
        let (value, ops) = match self {
            Self::Rr { .. } => (field(&report, "rate")?, field(&report, "transactions")?),
            Self::Crr => (field(&report, "rate")?, field(&report, "connections")?),
            Self::Bulk => (
                field(&report, "gbit_per_s")?,
                field(&report, "bytes")? / 1e9,
            ),
            Self::Udp { .. } => (field(&report, "pps")?, field(&report, "received")?),
        };
        Ok(Measure {
            value,
            cpu_s,
            ops,
            p50_us: latency("p50_us"),
            p99_us: latency("p99_us"),
            detail: report,
        })
    }
}

/// Creates [`CREATES_PER_RUN`] networks on `bed`'s agent, which holds
/// `count`, timing each, and removes them: the median in milliseconds.
fn time_creates(bed: &Bed, count: usize) -> anyhow::Result<Measure> {
    let agent = bed.netd()?;
    let names: Vec<String> = (0..CREATES_PER_RUN).map(|n| format!("probe-{n}")).collect();
    let mut times = Vec::new();
    let mut result = Ok(());
    for (n, name) in names.iter().enumerate() {
        // Past the networks the bed holds (at most `count`).
        let subnet = bench_subnet(count + n);
        let started = Instant::now();
        let run = agent.cli(&["network", "create", name, "--subnet", &subnet]);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        if !run.success() {
            result = Err(anyhow::anyhow!(
                "netd network create {name}: {}",
                run.stderr.trim()
            ));
            break;
        }
    }
    let created = &names[..times.len()];
    let mut args = vec!["network", "rm"];
    args.extend(created.iter().map(String::as_str));
    // Removes whichever were created; a name not created is reported and
    // the others go anyway.
    let _ = agent.cli(&args);
    result?;
    times.sort_by(f64::total_cmp);
    Ok(Measure {
        value: times[times.len() / 2],
        cpu_s: 0.0,
        ops: times.len() as f64,
        p50_us: None,
        p99_us: None,
        detail: serde_json::json!({ "create_ms": times }),
    })
}
