// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `cargo xtask test`: every quality gate, in the order a failure is
//! cheapest to find.

use std::{fs, process::Command};

use anyhow::bail;

use crate::{
    bench,
    cmd::{self, cargo, is_root, output, workspace_root},
    leftovers::{self, Snapshot},
    package, previous, setup, vm,
};

/// What the package test reads the Debian package's path from.
const PACKAGE_ENV: &str = "NETD_PACKAGE_DEB";

#[derive(clap::Args)]
pub struct Options {
    /// Do not install missing prerequisites first.
    #[arg(long)]
    no_setup: bool,
    /// Skip fmt and clippy (quicker iterations on tests).
    #[arg(long)]
    no_lint: bool,
    /// Skip the quick benchmark (`cargo xtask bench --quick`) that otherwise
    /// runs last, as root, when no filter is given.
    #[arg(long)]
    no_bench: bool,
    /// Skip the run on Debian 12's 6.1 kernel (in a VM: the published-
    /// ports, outbound, host-local and attach-mode tests) that otherwise
    /// comes last, as root, when no filter is given.
    #[arg(long)]
    no_vm: bool,
    /// Run the privileged tests (the netd-tests package) in a VM booting
    /// this kernel instead of on the running one: `6.1`, Debian 12's kernel
    /// under QEMU. Only the build and those tests run.
    #[arg(long, value_name = "VERSION")]
    kernel: Option<String>,
    /// Run only tests whose names match these filters (passed to the runner).
    filters: Vec<String>,
}

/// Runs cargo from the nightly toolchain (rustfmt options and the BPF
/// target need it).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"])
        .current_dir(workspace_root());
    cmd
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if let Some(series) = &options.kernel {
        return on_kernel(series, options);
    }
    if !options.no_setup {
        setup::run()?;
    }
    if !options.no_lint {
        lint()?;
    }

    cmd::build_workspace()?;
    // Kept once built: only a clean checkout pays for it.
    let previous = if previous::available() {
        Ok(previous::build()?)
    } else {
        let why = format!(
            "the previous release {} is not in this checkout's history and origin could not give it (a shallow clone?)",
            previous::COMMIT
        );
        eprintln!("\n*** {why}: the upgrade test will be skipped ***\n");
        Err(why)
    };
    // The Debian package, for the package test: the release build it packs
    // is the one the benchmark runs, so this costs cargo-deb's seconds.
    // Not for a filtered run that cannot reach that test.
    let deb = if options.filters.is_empty() || options.filters.iter().any(|f| f.contains("package"))
    {
        Some(package::build()?)
    } else {
        None
    };

    let ledger = workspace_root().join("target/netd-test-ledger");
    let _ = fs::remove_dir_all(&ledger);
    fs::create_dir_all(&ledger)?;
    let before = Snapshot::take();

    let privileged = is_root();
    if !privileged {
        eprintln!(
            "\n*** NOT ROOT: the privileged tests (BPF loading, namespaces) will say \"test skipped, requires root\" and pass without running. Run as root to run them. ***\n"
        );
    }
    let nextest = output(cargo().args(["nextest", "--version"])).is_some();
    let mut tests = cargo();
    if nextest {
        // One process per test: a test that enters a namespace cannot leak
        // it into another test.
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--exclude",
            "netd-ebpf",
            "--no-fail-fast",
        ]);
    } else {
        tests.args([
            "test",
            "--workspace",
            "--exclude",
            "netd-ebpf",
            "--no-fail-fast",
            "--",
        ]);
    }
    tests
        .args(&options.filters)
        .env("NETD_TEST_LEDGER", &ledger);
    match &previous {
        Ok(bin) => tests.env(previous::ENV, bin),
        Err(why) => tests.env(previous::UNAVAILABLE_ENV, why),
    };
    if let Some(deb) = &deb {
        tests.env(PACKAGE_ENV, deb);
    }
    let result = cmd::run(&mut tests);
    if nextest && options.filters.is_empty() {
        // nextest does not run doc tests.
        cmd::run(cargo().args(["test", "--workspace", "--exclude", "netd-ebpf", "--doc"]))?;
    }

    let after = Snapshot::take();
    let mut left = before.new_in(&after);
    left.extend(leftovers::live_processes(&ledger));
    if !left.is_empty() {
        eprintln!("leftover check: the test run left these behind:");
        for item in &left {
            eprintln!("  {item}");
        }
        bail!("leftover check failed: {} item(s) left behind", left.len());
    }
    eprintln!("leftover check: nothing left behind");
    result?;
    if privileged && options.filters.is_empty() && !options.no_bench {
        // Speed regressions, as ratios measured side by side.
        bench::run(&bench::Options {
            quick: true,
            no_setup: true,
            ..bench::Options::default()
        })?;
    }
    if privileged && options.filters.is_empty() && !options.no_vm {
        // The kernel users run (Debian 12's LTS), for the tests whose
        // paths differ there (clsact instead of TCX).
        let kernel = vm::Kernel::from_series(LTS_KERNEL)?;
        if !options.no_setup {
            setup::vm()?;
        }
        let subset: Vec<String> = LTS_SUBSET.iter().map(|s| (*s).to_owned()).collect();
        vm::run_tests(kernel, &subset)?;
    }
    if !privileged {
        eprintln!("*** privileged tests were SKIPPED (not root) ***");
    }
    Ok(())
}

/// The kernel `cargo xtask test` also runs on, and what it runs there: the
/// tests of the paths that differ by kernel, within CI's time (about 15
/// minutes under emulation here; the whole package takes hours).
const LTS_KERNEL: &str = "6.1";
const LTS_SUBSET: &[&str] = &[
    "netd-tests::publish",
    "netd-tests::outbound",
    "netd-tests::host_local",
    "netd-tests::attach_modes",
    "netd-tests::observe_netns",
    // ipvlan and 802.1Q, which the host's kernel may lack.
    "netd-tests::lan",
];

/// `--kernel`: the privileged tests on another kernel, in a VM. fmt,
/// clippy and the benchmark do not depend on the kernel and are not
/// repeated there.
fn on_kernel(series: &str, options: &Options) -> anyhow::Result<()> {
    // Refuses an unknown version before installing or building anything.
    let kernel = vm::Kernel::from_series(series)?;
    if !options.no_setup {
        setup::run()?;
        setup::vm()?;
    }
    cmd::build_workspace()?;
    vm::run_tests(kernel, &options.filters)
}

fn lint() -> anyhow::Result<()> {
    cmd::run(nightly_cargo().args(["fmt", "--all", "--check"]))?;
    cmd::run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "netd-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run(nightly_cargo().args([
        "clippy",
        "--package",
        "netd-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}
