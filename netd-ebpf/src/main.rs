// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd's kernel programs. Entry points are thin: each calls one function
//! that does the work and maps its result to a verdict, so every verdict is
//! returned from one place.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod ct;
#[cfg(target_arch = "bpf")]
mod deliver;
#[cfg(target_arch = "bpf")]
mod endpoint;
#[cfg(target_arch = "bpf")]
mod frag;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod lan;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod monitor;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod observe;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod ports;
#[cfg(target_arch = "bpf")]
mod snat;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod uplink;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
        macros::{cgroup_sock_addr, classifier, xdp},
        programs::{SockAddrContext, TcContext, XdpContext},
    };
    use aya_log_ebpf::debug;
    use netd_common::{drop, stats::hook};

    use crate::{endpoint, lan, monitor, observe, sock, stats, uplink};

    /// Whether a drop reason is rare enough to log: failures of the
    /// datapath itself, not of the traffic (never per packet of a flood).
    #[inline(always)]
    fn worth_logging(reason: u32) -> bool {
        matches!(
            reason,
            drop::CT_CREATE | drop::REWRITE | drop::FIB_LOOKUP | drop::REDIRECT
        )
    }

    /// Published ports and replies, on TC ingress of an uplink.
    #[classifier]
    pub fn netd_uplink_tc(ctx: TcContext) -> i32 {
        match uplink::tc::try_uplink_tc(&ctx) {
            Ok(verdict) => verdict,
            Err(reason) => {
                stats::count_drop(drop::hook::UPLINK_TC, reason);
                monitor::dropped(&ctx, drop::hook::UPLINK_TC, reason);
                if worth_logging(reason) {
                    debug!(&ctx, "uplink tc: drop, reason {}", reason);
                }
                TC_ACT_SHOT
            }
        }
    }

    /// Published ports, on XDP of an uplink (`netd agent --xdp`).
    #[xdp]
    pub fn netd_uplink_xdp(ctx: XdpContext) -> u32 {
        match uplink::xdp::try_uplink_xdp(&ctx) {
            Ok(action) => action,
            Err(reason) => {
                stats::count_drop(drop::hook::UPLINK_XDP, reason);
                monitor::dropped(&ctx, drop::hook::UPLINK_XDP, reason);
                if worth_logging(reason) {
                    debug!(&ctx, "uplink xdp: drop, reason {}", reason);
                }
                xdp_action::XDP_DROP
            }
        }
    }

    /// Host-local access: connect() of TCP and UDP sockets (IPv4).
    #[cgroup_sock_addr(connect4)]
    pub fn netd_connect4(ctx: SockAddrContext) -> i32 {
        sock::to_container4(&ctx)
    }

    /// Host-local access: sendmsg() of unconnected UDP sockets (IPv4).
    #[cgroup_sock_addr(sendmsg4)]
    pub fn netd_sendmsg4(ctx: SockAddrContext) -> i32 {
        sock::to_container4(&ctx)
    }

    /// Host-local access: the source recvmsg() reports (UDP, IPv4).
    #[cgroup_sock_addr(recvmsg4)]
    pub fn netd_recvmsg4(ctx: SockAddrContext) -> i32 {
        sock::from_container4(&ctx)
    }

    /// Host-local access: the peer getpeername() reports (IPv4).
    #[cgroup_sock_addr(getpeername4)]
    pub fn netd_getpeername4(ctx: SockAddrContext) -> i32 {
        sock::from_container4(&ctx)
    }

    /// Host-local access from IPv6 sockets: [::1] and IPv4-mapped addresses.
    #[cgroup_sock_addr(connect6)]
    pub fn netd_connect6(ctx: SockAddrContext) -> i32 {
        sock::to_container6(&ctx)
    }

    #[cgroup_sock_addr(sendmsg6)]
    pub fn netd_sendmsg6(ctx: SockAddrContext) -> i32 {
        sock::to_container6(&ctx)
    }

    #[cgroup_sock_addr(recvmsg6)]
    pub fn netd_recvmsg6(ctx: SockAddrContext) -> i32 {
        sock::from_container6(&ctx)
    }

    #[cgroup_sock_addr(getpeername6)]
    pub fn netd_getpeername6(ctx: SockAddrContext) -> i32 {
        sock::from_container6(&ctx)
    }

    /// `--protect-ports`: host processes cannot bind a published port.
    #[cgroup_sock_addr(bind4)]
    pub fn netd_bind4(ctx: SockAddrContext) -> i32 {
        sock::bind4(&ctx)
    }

    #[cgroup_sock_addr(bind6)]
    pub fn netd_bind6(ctx: SockAddrContext) -> i32 {
        sock::bind6(&ctx)
    }

    /// Packets leaving a container, on TC ingress of its host veth.
    // Inlined into the section's entry: a separate frame would count
    // twice toward the 512-byte stack limit of a call chain (the entry's,
    // this one's, memset's), which 6.1 enforces on the frames rounded up.
    #[classifier]
    #[inline(always)]
    pub fn netd_endpoint_tc(ctx: TcContext) -> i32 {
        match endpoint::try_endpoint_tc(&ctx) {
            Ok(verdict) => verdict,
            Err(reason) => {
                stats::count_drop(drop::hook::ENDPOINT_TC, reason);
                monitor::dropped(&ctx, drop::hook::ENDPOINT_TC, reason);
                if worth_logging(reason) {
                    debug!(&ctx, "endpoint tc: drop, reason {}", reason);
                }
                TC_ACT_SHOT
            }
        }
    }

    /// Packets leaving a container, on TC egress of its LAN device
    /// (macvlan, ipvlan) in its namespace.
    #[classifier]
    pub fn netd_lan_tc(ctx: TcContext) -> i32 {
        match lan::try_lan_tc(&ctx) {
            Ok(verdict) => verdict,
            Err(reason) => {
                stats::count_drop(drop::hook::LAN_TC, reason);
                monitor::dropped(&ctx, drop::hook::LAN_TC, reason);
                TC_ACT_SHOT
            }
        }
    }

    /// Counts every packet on a TC ingress hook by protocol, and passes it.
    #[classifier]
    pub fn netd_observe_tc(ctx: TcContext) -> i32 {
        observe::count(&ctx, hook::UPLINK_TC);
        TC_ACT_OK
    }

    /// Counts every packet on an XDP hook by protocol, and passes it.
    #[xdp]
    pub fn netd_observe_xdp(ctx: XdpContext) -> u32 {
        observe::count(&ctx, hook::UPLINK_XDP);
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
