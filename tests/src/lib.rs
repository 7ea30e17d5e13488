// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The harnesses netd's privileged tests stand on.
//!
//! - [`netns`]: throwaway network namespaces, veths, bridges, addresses and
//!   processes, all removed on drop (also when a test panics) and recorded
//!   so `cargo xtask test` can prove nothing was left behind;
//! - [`bpf`]: netd's embedded eBPF object loaded with private maps, run on
//!   crafted packets through `BPF_PROG_TEST_RUN`;
//! - [`pktgen`]: those packets, built byte by byte with checksums from an
//!   implementation independent of netd's.
//!
//! Tests that need root start with [`require_root!`]; without root they say
//! "test skipped, requires root" and return.

pub mod agent;
pub mod bpf;
pub mod dockerd;
pub mod fixture;
pub mod hold;
pub mod netns;
pub mod pins;
pub mod pktgen;
pub mod probe;
pub mod rootfs;
pub mod topology;

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns from the calling test, loudly, unless it runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("test skipped, requires root");
            return;
        }
    };
}
