// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd-bench`: netd measured side by side with Docker's iptables rules
//! (legacy and nft), an nftables DNAT map, docker-proxy and no NAT at all,
//! each on its own copy of one namespace topology (see [`beds`]).
//!
//! Method (the machine is small and shared): variants are interleaved in
//! rounds whose order rotates, clients and servers are pinned to CPUs 0 and
//! 1, and only medians and per-round ratios are reported (see [`series`]).
//! `cargo xtask bench` builds this in release mode and runs it; `--quick`
//! is the regression check `cargo xtask test` runs, failing only when a
//! ratio falls far below where it should be.

mod beds;
mod dns;
mod measure;
mod monitor;
mod peers;
mod progs;
mod publish;
mod report;
mod scrape;
mod series;
mod traffic;

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, sync::atomic::Ordering};

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::{
    beds::{Bed, Kind},
    measure::Loadgen,
    report::Results,
    series::Series,
    traffic::{INBOUND, NETWORK_COUNTS, PORT_COUNTS, Traffic},
};

#[derive(Parser)]
#[command(about = "netd side by side with iptables, nftables, docker-proxy and no NAT")]
struct Options {
    /// The regression check: B2, B3 and B9 for netd and no-NAT only, failing
    /// on a gross regression of a ratio.
    #[arg(long)]
    quick: bool,
    /// Rounds of interleaved runs (default: 5).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per run (default: 2; quick: 1).
    #[arg(long)]
    seconds: Option<f64>,
    /// Only these benchmarks (B1..B12, comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where results.md, results.json and b3.svg go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Measure nothing: write the report of an earlier run's results.json
    /// anew (after a change to the report's form).
    #[arg(long, value_name = "RESULTS_JSON")]
    render: Option<PathBuf>,
}

/// The quick mode's floors: far below the targets, so only a real
/// regression trips them on a noisy machine.
const QUICK_CRR_VS_NO_NAT: f64 = 0.8;
const QUICK_PORTS_FLAT: f64 = 0.8;
/// Published ports at the top of B3 and B4.
const MANY_PORTS: usize = 10_000;

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netd-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> anyhow::Result<()> {
    if let Some(path) = &options.render {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a netd-bench results.json", path.display()))?;
        return report::write(&results, &options.out);
    }
    if !netd_tests::is_root() {
        bail!("benchmarks need root (namespaces, BPF, netfilter)");
    }
    let exe = std::env::current_exe().context("finding myself")?;
    let dir = exe.parent().context("the binary's directory")?;
    if std::env::var_os("NETD_BIN").is_none() {
        bail!("set NETD_BIN to the netd binary to measure (cargo xtask bench does)");
    }
    let loadgen = Loadgen::new(dir.join("netd-loadgen"));
    if !loadgen.bin().exists() {
        bail!(
            "{} not found: build it (cargo build --release -p netd-tests --bins)",
            loadgen.bin().display()
        );
    }
    on_interrupt_stop();

    let rounds = options.rounds.unwrap_or(5).max(1);
    let seconds = options
        .seconds
        .unwrap_or(if options.quick { 1.0 } else { 2.0 });
    let wanted = |bench: &str| {
        options.only.is_empty() || options.only.iter().any(|b| b.eq_ignore_ascii_case(bench))
    };

    let mut results = Results {
        quick: options.quick,
        rounds,
        seconds,
        facts: report::machine_facts(),
        series: Vec::new(),
        progs: Vec::new(),
        in_traffic: Vec::new(),
        monitor: Vec::new(),
        scrape: None,
    };

    if !options.quick && wanted("B6") {
        eprintln!("B6: netd's programs through BPF_PROG_TEST_RUN");
        results.progs = progs::run(&progs::ProgOptions { quick: false })?;
    }
    if !options.quick && wanted("B11") {
        eprintln!("B11: the live monitor's cost on netd's programs (BPF_PROG_TEST_RUN)");
        results.monitor = monitor::run(rounds)?;
    }
    if !options.quick && wanted("B12") && !series::stopped() {
        eprintln!(
            "B12: a metrics scrape with {} mappings and {} conntrack entries",
            scrape::MAPPINGS,
            scrape::CT_ENTRIES
        );
        results.scrape = Some(scrape::run(rounds)?);
    }

    let kinds = if options.quick {
        vec![Kind::NoNat, Kind::Netd]
    } else {
        beds_for(&wanted)
    };
    let mut beds = BTreeMap::new();
    for kind in kinds {
        if kind == Kind::Proxy && !beds::have_docker_proxy() {
            eprintln!(
                "docker-proxy is not there ({}): skipping it (cargo xtask bench provides it)",
                peers::docker_proxy_bin().display()
            );
            continue;
        }
        eprintln!("setting up {}", kind.label());
        beds.insert(kind, Bed::new(kind, loadgen.bin())?);
    }

    let mut traffic = Traffic {
        beds: &mut beds,
        loadgen: &loadgen,
        rounds,
        seconds,
    };
    if options.quick {
        let failed = quick(&mut traffic, &mut results)?;
        report::write(&results, &options.out)?;
        eprintln!("results: {}", options.out.join("results.md").display());
        if let Some(why) = failed {
            bail!("regression: {why}");
        }
        return Ok(());
    }

    if wanted("B1") {
        results.series.extend(traffic.b1());
    }
    if wanted("B2") {
        results.series.push(traffic.b2(&INBOUND));
    }
    if wanted("B3") {
        results.series.extend(traffic.b3(&INBOUND, &PORT_COUNTS)?);
    }
    if wanted("B5") {
        results.series.extend(traffic.b5());
    }
    if wanted("B7") {
        results.series.extend(traffic.b7());
    }
    if wanted("B8") {
        results.series.extend(traffic.b8());
    }
    if wanted("B9") {
        results
            .series
            .extend(traffic.b9(&[Kind::NoNat, Kind::Netd], &NETWORK_COUNTS)?);
    }
    if wanted("B6") && !series::stopped() {
        eprintln!("B6: netd's programs under traffic");
        results.in_traffic = traffic.in_traffic()?;
    }
    if wanted("B4") {
        results
            .series
            .extend(publish::b4(traffic.beds, rounds, MANY_PORTS));
    }
    if wanted("B10") && !series::stopped() {
        eprintln!("B10: {} names, netd's DNS and dnsmasq", dns::NAMES);
        let bed = dns::DnsBed::new()?;
        results.series.extend(bed.series(rounds, seconds));
    }
    // B1 ... B10 in their numbers' order.
    results
        .series
        .sort_by_key(|s| s.bench[1..].parse::<u32>().unwrap_or(u32::MAX));
    if series::stopped() {
        bail!("interrupted");
    }
    report::write(&results, &options.out)?;
    for series in &results.series {
        if let Some(noise) = series.noise() {
            eprintln!(
                "warning: {} {} is noisy ({noise}): the machine is too busy to conclude from it",
                series.bench, series.case
            );
        }
    }
    println!(
        "{}",
        std::fs::read_to_string(options.out.join("results.md"))?
    );
    Ok(())
}

/// The beds the wanted benchmarks use.
fn beds_for(wanted: &dyn Fn(&str) -> bool) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = Vec::new();
    let mut add = |list: &[Kind]| {
        for k in list {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
    };
    if ["B1", "B2", "B3", "B5", "B7"].iter().any(|b| wanted(b)) {
        add(&INBOUND);
    }
    if wanted("B5") {
        add(&[Kind::Proxy]);
    }
    if wanted("B8") {
        add(&traffic::HOST_LOCAL);
    }
    if wanted("B4") {
        add(&publish::KINDS);
    }
    if wanted("B9") {
        add(&[Kind::NoNat, Kind::Netd]);
    }
    kinds
}

/// The quick regression check. Returns why it failed, if it did; a failing
/// check is measured a second time before it counts (noise passes, a
/// regression stays).
fn quick(traffic: &mut Traffic<'_>, results: &mut Results) -> anyhow::Result<Option<String>> {
    let kinds = [Kind::NoNat, Kind::Netd];
    let mut why = None;
    for attempt in 1..=2 {
        let mut series: Vec<Series> = vec![traffic.b2(&kinds)];
        series.extend(traffic.b3(&kinds, &[1, MANY_PORTS])?);
        series.extend(traffic.b9(&kinds, &NETWORK_COUNTS)?);
        results.series = series;
        if series::stopped() {
            bail!("interrupted");
        }
        why = quick_verdict(results);
        match &why {
            None => {
                eprintln!("quick check passed (attempt {attempt})");
                break;
            }
            Some(reason) => eprintln!("quick check attempt {attempt}: {reason}"),
        }
    }
    Ok(why)
}

fn quick_verdict(results: &Results) -> Option<String> {
    let crr = results
        .find("B2", "CRR, 1 port")
        .and_then(|s| s.ratio(Kind::Netd, Kind::NoNat))
        .map(|r| r.median);
    let flat = results
        .b3_relative(Kind::Netd, MANY_PORTS)
        .zip(results.b3_relative(Kind::Netd, 1))
        .map(|(a, b)| a / b);
    let many = *NETWORK_COUNTS.last().expect("network counts");
    let networks_flat = results
        .b9_relative(Kind::Netd, many)
        .zip(results.b9_relative(Kind::Netd, 1))
        .map(|(a, b)| a / b);
    eprintln!(
        "quick: netd CRR {:.2}x no-NAT (floor {QUICK_CRR_VS_NO_NAT}), netd at {MANY_PORTS} ports {:.2}x netd at 1 (floor {QUICK_PORTS_FLAT}), netd with {many} networks {:.2}x with 1 (floor {QUICK_PORTS_FLAT})",
        crr.unwrap_or(f64::NAN),
        flat.unwrap_or(f64::NAN),
        networks_flat.unwrap_or(f64::NAN)
    );
    if let Some(f) = networks_flat
        && f < QUICK_PORTS_FLAT
    {
        return Some(format!(
            "netd CRR with {many} networks is {f:.2}x netd with 1, below {QUICK_PORTS_FLAT}x"
        ));
    }
    match (crr, flat) {
        (Some(c), _) if c < QUICK_CRR_VS_NO_NAT => Some(format!(
            "netd CRR is {c:.2}x no-NAT, below {QUICK_CRR_VS_NO_NAT}x"
        )),
        (_, Some(f)) if f < QUICK_PORTS_FLAT => Some(format!(
            "netd CRR at {MANY_PORTS} ports is {f:.2}x netd at 1 port, below {QUICK_PORTS_FLAT}x"
        )),
        (None, _) | (_, None) => Some("a quick benchmark did not produce figures".into()),
        _ if networks_flat.is_none() => Some("B9 did not produce figures".into()),
        _ => None,
    }
}

/// SIGINT sets [`series::STOP`]: the run ends after the current
/// measurement and everything is cleaned up on the way out.
fn on_interrupt_stop() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    extern "C" fn handler(_: libc::c_int) {
        series::STOP.store(true, Ordering::Relaxed);
    }
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    if let Err(err) = unsafe { sigaction(Signal::SIGINT, &action) } {
        eprintln!("netd-bench: cannot catch SIGINT ({err}); an interrupt will leave namespaces");
    }
}
