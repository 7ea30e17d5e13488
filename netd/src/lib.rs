// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd: an eBPF container datapath. The binary is a thin CLI over this
//! library; tests use the library directly (the embedded eBPF object, the
//! datapath loader).

pub mod cli;
pub mod datapath;
pub mod ebpf;
pub mod error;
pub mod logging;
