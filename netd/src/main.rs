// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The `netd` binary: the agent and the CLI that talks to it.

use std::process::ExitCode;

use clap::Parser as _;

/// Counts live heap bytes for `netd stats` (see `netd::memory`).
#[global_allocator]
static ALLOCATOR: netd::memory::CountingAllocator = netd::memory::CountingAllocator;

fn main() -> ExitCode {
    // A runtime runs netd as its CNI plugin with CNI_COMMAND set (and the
    // binary installed as its plugin directory's `netd`).
    if netd::cni::invoked_as_plugin() {
        return netd::cni::main();
    }
    netd::cli::Cli::parse().execute()
}
