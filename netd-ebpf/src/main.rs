// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd's kernel programs. Entry points are thin: each calls one function
//! that does the work and maps its result to a verdict, so every verdict is
//! returned from one place.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod observe;
#[cfg(target_arch = "bpf")]
mod packet;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, xdp_action},
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };
    use netd_common::stats::hook;

    use crate::observe;

    /// Counts every packet on a TC ingress hook by protocol, and passes it.
    #[classifier]
    pub fn netd_observe_tc(ctx: TcContext) -> i32 {
        observe::count(&ctx, hook::TC_INGRESS);
        TC_ACT_OK
    }

    /// Counts every packet on an XDP hook by protocol, and passes it.
    #[xdp]
    pub fn netd_observe_xdp(ctx: XdpContext) -> u32 {
        observe::count(&ctx, hook::XDP);
        xdp_action::XDP_PASS
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach here; there is no
    // unwinding in BPF.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Host builds (clippy, `cargo build --workspace`) compile this crate for the
/// host, where it has nothing to do.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
