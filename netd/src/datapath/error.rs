// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The datapath's errors: loading, attaching, pinning and reading netd's
//! eBPF programs and maps.

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
    #[error("map {map}")]
    MapOp {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("counting CPUs")]
    Cpus(#[source] std::io::Error),
    #[error("pinning map {path}")]
    MapPin {
        path: std::path::PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not on a bpffs and could not be mounted: mount one there (`mount -t bpf bpf {path}`) or pass --bpffs"
    )]
    NoBpffs {
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(
        "pinned map {path} has {what} {found}, this netd expects {expected}: it was made by a different netd version; run `netd down` to remove the old datapath (its flows are lost) or run the matching netd"
    )]
    PinnedLayout {
        path: std::path::PathBuf,
        what: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("adding a clsact qdisc to {interface}")]
    Qdisc {
        interface: String,
        #[source]
        source: aya::programs::tc::TcError,
    },
    #[error("attaching {program} to {interface}")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinning {path}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "the kernel attached {program} to {interface} without a BPF link (no TCX?): it cannot be pinned"
    )]
    NotPinnable {
        program: &'static str,
        interface: String,
    },
    #[error("adopting a pinned link")]
    Adopt(#[source] aya::programs::links::LinkError),
    #[error("link {path}")]
    Link {
        path: std::path::PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
}
