// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd: an eBPF container datapath. The binary is a thin CLI over this
//! library; tests use the library directly (the embedded eBPF object, the
//! datapath loader).

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod cni;
pub mod datapath;
pub mod dns;
pub mod ebpf;
pub mod error;
pub mod failpoint;
pub mod listeners;
pub mod logging;
pub mod mac;
pub mod memory;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod portspec;
