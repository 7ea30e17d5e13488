// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `cargo xtask bench`: builds netd and the benchmark in release mode and
//! runs it (see tests/src/bin/netd-bench), with the same leftover check as
//! the tests.

use std::{fs, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, cargo, is_root, workspace_root},
    leftovers::{self, Snapshot},
    setup,
};

#[derive(clap::Args, Clone, Default)]
pub struct Options {
    /// The regression check (under 3 minutes): B2 and B3 for netd and
    /// no-NAT, failing only on a gross regression of a ratio.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of interleaved runs (default 5).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds per run (default 2, quick 1).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Only these benchmarks (B1..B12, comma-separated).
    #[arg(long)]
    pub only: Option<String>,
    /// Also copy results.md and b3.svg to docs/bench/, which docs/benchmarks.md
    /// shows.
    #[arg(long)]
    pub docs: bool,
    /// Do not install missing prerequisites first.
    #[arg(long)]
    pub no_setup: bool,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("benchmarks need root: they build network namespaces, load BPF and netfilter rules");
    }
    if !options.no_setup {
        setup::run()?;
    }
    // The quick check compares netd with no NAT only.
    let docker_proxy = if options.quick {
        None
    } else {
        Some(setup::docker_proxy()?)
    };
    cmd::run(cargo().args([
        "build",
        "--release",
        "-p",
        "netd",
        "-p",
        "netd-tests",
        "--bins",
    ]))?;
    let root = workspace_root();
    let release = root.join("target/release");
    let out = root.join("target/bench");
    let ledger = root.join("target/netd-bench-ledger");
    let _ = fs::remove_dir_all(&ledger);
    fs::create_dir_all(&ledger)?;

    let mut bench = Command::new(release.join("netd-bench"));
    bench
        .current_dir(&root)
        .env("NETD_BIN", release.join("netd"))
        .env("NETD_TEST_LEDGER", &ledger)
        .arg("--out")
        .arg(&out);
    if let Some(path) = &docker_proxy {
        bench.env("NETD_DOCKER_PROXY", path);
    }
    if options.quick {
        bench.arg("--quick");
    }
    if let Some(rounds) = options.rounds {
        bench.arg(format!("--rounds={rounds}"));
    }
    if let Some(seconds) = options.seconds {
        bench.arg(format!("--seconds={seconds}"));
    }
    if let Some(only) = &options.only {
        bench.arg(format!("--only={only}"));
    }

    let before = Snapshot::take();
    let result = cmd::run(&mut bench);
    let left: Vec<String> = before
        .new_in(&Snapshot::take())
        .into_iter()
        .chain(leftovers::live_processes(&ledger))
        .collect();
    if !left.is_empty() {
        eprintln!("leftover check: the benchmark left these behind:");
        for item in &left {
            eprintln!("  {item}");
        }
        bail!("leftover check failed: {} item(s) left behind", left.len());
    }
    eprintln!("leftover check: nothing left behind");
    result?;
    if options.docs {
        let docs = root.join("docs/bench");
        fs::create_dir_all(&docs)?;
        for file in ["results.md", "b3.svg"] {
            let from = out.join(file);
            if from.exists() {
                fs::copy(&from, docs.join(file))
                    .with_context(|| format!("copying {}", from.display()))?;
                eprintln!("bench: {} updated", docs.join(file).display());
            }
        }
    }
    Ok(())
}
