// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The eBPF object built by `build.rs`, embedded in the binary.

/// The compiled `netd-ebpf` object (ELF, with BTF), aligned for aya.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd-ebpf"))
}
