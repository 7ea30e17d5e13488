// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Every map netd's programs use. All are BTF maps (`#[btf_map]`), so
//! `bpftool map dump` prints their keys and values with field names; netd
//! pins them under its bpffs directory by these names.

use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use netd_common::stats::{ProtoStats, hook};

/// Packets seen per hook (`netd_common::stats::hook`), by protocol.
#[btf_map]
pub static NETD_PROTO_STATS: PerCpuArray<ProtoStats, { hook::COUNT as usize }> = PerCpuArray::new();
