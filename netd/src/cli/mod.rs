// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The command line: one module per command; doc comments are the help.

mod observe;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// netd: an eBPF datapath for containers (bridge, published ports,
/// masquerade) with no iptables rule and no proxy process.
#[derive(Parser)]
#[command(name = "netd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Observe(observe::Observe),
}

impl Cli {
    pub fn execute(self) -> ExitCode {
        crate::logging::init();
        let result = match self.command {
            Command::Observe(cmd) => cmd.execute(),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("netd: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}
