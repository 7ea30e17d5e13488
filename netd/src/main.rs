// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The `netd` binary: the agent and the CLI that talks to it.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    netd::cli::Cli::parse().execute()
}
