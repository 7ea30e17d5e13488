// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Developer tasks that cargo cannot do alone: installing the eBPF
//! toolchain, the privileged test suite, the demo, the benchmarks.
//!
//! Every task that needs a tool installs it first (see `setup`), so each
//! command works on a fresh machine.

mod bench;
mod cmd;
mod demo;
mod leftovers;
mod package;
mod previous;
mod setup;
mod soak;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "netd developer tasks", long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing netd needs (Debian packages,
    /// bpf-linker for LLVM 22, rust-src for nightly); skips what is present.
    Setup,
    /// Run every check: fmt, clippy (userspace and eBPF), unit tests, the
    /// privileged BPF and namespace tests, and the leftover check.
    Test(test::Options),
    /// Measure netd side by side with Docker's iptables rules, nftables,
    /// docker-proxy and no NAT; results in target/bench.
    Bench(bench::Options),
    /// Show netd's main job end to end, inside network namespaces it creates
    /// and removes.
    Demo(demo::Options),
    /// Attach, publish, unpublish and detach under traffic for minutes:
    /// conntrack must return to its baseline and the agent's memory stay
    /// flat; report in target/soak/report.json.
    Soak(soak::Options),
    /// Build netd's Debian package (cargo-deb): the agent, its systemd
    /// unit and /etc/default/netd, the CNI plugin link, man pages and
    /// completions; prints the .deb's path.
    Package,
    /// Build the previous release of netd (for the upgrade test; `cargo
    /// xtask test` does it first) and print its binary's path.
    Previous,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Test(options) => test::run(&options),
        Task::Demo(options) => demo::run(&options),
        Task::Bench(options) => bench::run(&options),
        Task::Soak(options) => soak::run(&options),
        Task::Package => package::build().map(|deb| println!("{}", deb.display())),
        Task::Previous => previous::build().map(|bin| println!("{}", bin.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
