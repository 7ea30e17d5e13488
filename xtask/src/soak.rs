// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `cargo xtask soak --minutes N`: the soak test (tests/tests/soak.rs) for N
//! minutes instead of the test suite's seconds: containers attached and
//! detached, ports published and unpublished, under traffic. It fails if
//! conntrack does not return to its baseline or the agent's live heap or
//! open files grow; all are reported (RSS too), with a sample per cycle, in target/soak/report.json.

use std::fs;

use anyhow::{Context as _, bail, ensure};

use crate::{
    cmd::{self, cargo, is_root, workspace_root},
    leftovers::{self, Snapshot},
    setup,
};

#[derive(clap::Args)]
pub struct Options {
    /// How long to soak.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Do not install missing prerequisites first.
    #[arg(long)]
    no_setup: bool,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    ensure!(is_root(), "the soak needs root (namespaces, BPF)");
    ensure!(options.minutes > 0, "--minutes must be at least 1");
    if !options.no_setup {
        setup::run()?;
    }
    cmd::build_workspace()?;
    let dir = workspace_root().join("target/soak");
    fs::create_dir_all(&dir)?;
    let report = dir.join("report.json");
    let _ = fs::remove_file(&report);
    let ledger = dir.join("ledger");
    let _ = fs::remove_dir_all(&ledger);
    fs::create_dir_all(&ledger)?;

    let before = Snapshot::take();
    let result = cmd::run(
        cargo()
            .args([
                "test",
                "--package",
                "netd-tests",
                "--test",
                "soak",
                "--",
                "--nocapture",
            ])
            .env("NETD_SOAK_SECONDS", (options.minutes * 60).to_string())
            .env("NETD_SOAK_REPORT", &report)
            .env("NETD_TEST_LEDGER", &ledger),
    );
    let mut left = before.new_in(&Snapshot::take());
    left.extend(leftovers::live_processes(&ledger));
    if !left.is_empty() {
        bail!("the soak left these behind: {}", left.join(", "));
    }
    result?;
    let json: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(&report).with_context(|| format!("reading {}", report.display()))?,
    )?;
    eprintln!(
        "soak report: {} (conntrack {} -> {} of baseline {}, agent heap {} -> {} bytes, fds {} -> {}, RSS {} -> {} KiB)",
        report.display(),
        json["conntrack_peak"],
        json["conntrack_end"],
        json["conntrack_baseline"],
        json["heap_baseline_bytes"],
        json["heap_end_bytes"],
        json["fds_baseline"],
        json["fds_end"],
        json["rss_baseline_kib"],
        json["rss_end_kib"],
    );
    Ok(())
}
