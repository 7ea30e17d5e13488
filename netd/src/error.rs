// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Typed errors at netd's library boundaries; the CLI adds context with
//! anyhow.

use thiserror::Error;

/// Loading, attaching or reading the eBPF datapath failed.
#[derive(Debug, Error)]
pub enum DatapathError {
    #[error("loading netd's eBPF object")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program")]
    Program(#[from] aya::programs::ProgramError),
    #[error("eBPF map")]
    Map(#[from] aya::maps::MapError),
    #[error("the eBPF object has no program {0} (netd built from mismatched sources?)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0} (netd built from mismatched sources?)")]
    MissingMap(&'static str),
}

/// An error and its causes in one line ("create veth vethab: File exists"),
/// skipping causes whose text the line already holds.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
