// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Host-local access to published ports at the socket layer, with no proxy
//! and no per-packet NAT: cgroup socket-address hooks rewrite where a host
//! process connects or sends to (`127.0.0.1:8080`, `[::1]:8080`, any
//! address of the host) into the published container's address and port,
//! and rewrite what `getpeername` and `recvmsg` report back into the address
//! the process used.
//!
//! The hooks see every socket of their cgroup, whatever its network
//! namespace: only sockets of the agent's namespace (compared by netns
//! cookie) are translated.
//!
//! IPv6 sockets are translated when they address `[::1]` (as 127.0.0.1) or an
//! IPv4-mapped address (as that IPv4 address): they are sent to the
//! container's IPv4-mapped address, which a dual-stack socket (the default,
//! `IPV6_V6ONLY` off) reaches over IPv4.

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use netd_common::{
    endpoint::NET_PROTECT_PORTS,
    ports::{SockRevKey, SockRevValue},
};

use crate::{
    deliver,
    maps::{NETD_LOCAL_ADDRS, NETD_SOCK_REVNAT},
    ports, stats,
};

/// What the hook lets the syscall do.
pub const ALLOW: i32 = 1;
pub const DENY: i32 = 0;

const EADDRINUSE: i32 = 98;

/// Whether the socket belongs to the namespace netd manages.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let cookie = deliver::config().netns_cookie;
    // SAFETY: the helper only reads the context's socket.
    cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } == cookie
}

/// The published mapping a host process reaches at `addr:port`: bound to
/// that address, or to any address of the host (127.0.0.0/8 included).
#[inline(always)]
fn published(
    proto: u8,
    addr: [u8; 4],
    port: [u8; 2],
) -> Option<(u32, netd_common::ports::Mapping)> {
    let local = addr[0] == 127 || NETD_LOCAL_ADDRS.get_ptr(addr).is_some();
    ports::lookup_at(proto, addr, port, local)
}

/// `user_port` holds the port in network order in its low 16 bits.
#[inline(always)]
fn port_of(user_port: u32) -> [u8; 2] {
    let bytes = user_port.to_ne_bytes();
    [bytes[0], bytes[1]]
}

#[inline(always)]
fn user_port(port: [u8; 2]) -> u32 {
    u32::from_ne_bytes([port[0], port[1], 0, 0])
}

/// Sends the socket to the container of the mapping `addr:port` is
/// published on, if any, and remembers what it addressed. Returns the
/// container's address and port.
#[inline(always)]
fn translate(
    ctx: &SockAddrContext,
    addr: [u8; 4],
    port: [u8; 2],
    original: SockRevValue,
) -> Option<([u8; 4], [u8; 2])> {
    // SAFETY: the context pointer is valid for the program's life.
    let proto = unsafe { (*ctx.sock_addr).protocol } as u8;
    let (slot, mapping) = published(proto, addr, port)?;
    let to_port = mapping.ctr_port_for(u16::from_be_bytes(port)).to_be_bytes();
    let key = SockRevKey {
        // SAFETY: the helper only reads the context's socket.
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        addr_be: mapping.ctr_addr_be,
        port_be: to_port,
        _pad: [0; 2],
    };
    // Best effort: if the table is full, the process sees the container's
    // address in getpeername/recvmsg, nothing worse.
    let _ = NETD_SOCK_REVNAT.insert(key, original, 0);
    stats::count_mapping(slot, 0, true);
    Some((mapping.ctr_addr_be, to_port))
}

/// What the socket addressed before it was translated to `addr:port`.
#[inline(always)]
fn original(ctx: &SockAddrContext, addr: [u8; 4], port: [u8; 2]) -> Option<SockRevValue> {
    let key = SockRevKey {
        // SAFETY: the helper only reads the context's socket.
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        addr_be: addr,
        port_be: port,
        _pad: [0; 2],
    };
    // SAFETY: copied out at once.
    NETD_SOCK_REVNAT.get_ptr(key).map(|v| unsafe { *v })
}

/// connect4 and sendmsg4.
#[inline(always)]
pub fn to_container4(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: the context pointer is valid; fields read and written
    // individually as the verifier allows.
    let (addr, port) = unsafe {
        (
            (*ctx.sock_addr).user_ip4.to_ne_bytes(),
            port_of((*ctx.sock_addr).user_port),
        )
    };
    let mut saved = SockRevValue {
        port_be: port,
        family: 4,
        ..SockRevValue::default()
    };
    saved.addr_be[..4].copy_from_slice(&addr);
    if let Some((to, to_port)) = translate(ctx, addr, port, saved) {
        // SAFETY: as above.
        unsafe {
            (*ctx.sock_addr).user_ip4 = u32::from_ne_bytes(to);
            (*ctx.sock_addr).user_port = user_port(to_port);
        }
    }
    ALLOW
}

/// getpeername4 and recvmsg4.
#[inline(always)]
pub fn from_container4(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: as in `to_container4`.
    let (addr, port) = unsafe {
        (
            (*ctx.sock_addr).user_ip4.to_ne_bytes(),
            port_of((*ctx.sock_addr).user_port),
        )
    };
    if let Some(orig) = original(ctx, addr, port)
        && orig.family == 4
    {
        // SAFETY: as above.
        unsafe {
            (*ctx.sock_addr).user_ip4 = u32::from_ne_bytes([
                orig.addr_be[0],
                orig.addr_be[1],
                orig.addr_be[2],
                orig.addr_be[3],
            ]);
            (*ctx.sock_addr).user_port = user_port(orig.port_be);
        }
    }
    ALLOW
}

/// The IPv4 address an IPv6 socket address stands for here: `::1` is
/// 127.0.0.1, `::ffff:a.b.c.d` is a.b.c.d.
#[inline(always)]
fn as_ipv4(ip6: [u32; 4]) -> Option<[u8; 4]> {
    let words = [
        ip6[0].to_ne_bytes(),
        ip6[1].to_ne_bytes(),
        ip6[2].to_ne_bytes(),
        ip6[3].to_ne_bytes(),
    ];
    if words[0] != [0; 4] || words[1] != [0; 4] {
        return None;
    }
    match words[2] {
        [0, 0, 0, 0] if words[3] == [0, 0, 0, 1] => Some([127, 0, 0, 1]),
        [0, 0, 0xff, 0xff] => Some(words[3]),
        _ => None,
    }
}

/// connect6 and sendmsg6.
#[inline(always)]
pub fn to_container6(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: as in `to_container4`.
    let (ip6, port) = unsafe {
        (
            (*ctx.sock_addr).user_ip6,
            port_of((*ctx.sock_addr).user_port),
        )
    };
    let Some(addr) = as_ipv4(ip6) else {
        return ALLOW;
    };
    let mut saved = SockRevValue {
        port_be: port,
        family: 6,
        ..SockRevValue::default()
    };
    for (i, word) in ip6.iter().enumerate() {
        saved.addr_be[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    if let Some((to, to_port)) = translate(ctx, addr, port, saved) {
        // SAFETY: as above.
        unsafe {
            (*ctx.sock_addr).user_ip6[0] = 0;
            (*ctx.sock_addr).user_ip6[1] = 0;
            (*ctx.sock_addr).user_ip6[2] = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
            (*ctx.sock_addr).user_ip6[3] = u32::from_ne_bytes(to);
            (*ctx.sock_addr).user_port = user_port(to_port);
        }
    }
    ALLOW
}

/// getpeername6 and recvmsg6.
#[inline(always)]
pub fn from_container6(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: as in `to_container4`.
    let (ip6, port) = unsafe {
        (
            (*ctx.sock_addr).user_ip6,
            port_of((*ctx.sock_addr).user_port),
        )
    };
    let Some(addr) = as_ipv4(ip6) else {
        return ALLOW;
    };
    if let Some(orig) = original(ctx, addr, port)
        && orig.family == 6
    {
        let a = orig.addr_be;
        // SAFETY: as above.
        unsafe {
            (*ctx.sock_addr).user_ip6[0] = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
            (*ctx.sock_addr).user_ip6[1] = u32::from_ne_bytes([a[4], a[5], a[6], a[7]]);
            (*ctx.sock_addr).user_ip6[2] = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
            (*ctx.sock_addr).user_ip6[3] = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
            (*ctx.sock_addr).user_port = user_port(orig.port_be);
        }
    }
    ALLOW
}

/// Refuses a bind that would shadow a published port, with EADDRINUSE:
/// `addr` is the IPv4 address bound (0.0.0.0 for any).
#[inline(always)]
fn protect(ctx: &SockAddrContext, addr: [u8; 4]) -> i32 {
    if deliver::config().flags & NET_PROTECT_PORTS == 0 || !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: as in `to_container4`.
    let (proto, port) = unsafe {
        (
            (*ctx.sock_addr).protocol as u8,
            port_of((*ctx.sock_addr).user_port),
        )
    };
    if port == [0, 0] {
        return ALLOW;
    }
    let taken = if addr == [0; 4] {
        ports::published(proto, [0; 4], port) || ports::published(proto, [127, 0, 0, 1], port)
    } else {
        ports::published(proto, addr, port)
    };
    if taken {
        // SAFETY: a helper with a plain integer argument.
        unsafe { bpf_set_retval(-EADDRINUSE) };
        return DENY;
    }
    ALLOW
}

/// bind4.
#[inline(always)]
pub fn bind4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `to_container4`.
    let addr = unsafe { (*ctx.sock_addr).user_ip4.to_ne_bytes() };
    protect(ctx, addr)
}

/// bind6: `[::]` binds IPv4 too (dual stack), an IPv4-mapped address is
/// that IPv4 address; other IPv6 addresses take no IPv4 port.
#[inline(always)]
pub fn bind6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `to_container4`.
    let ip6 = unsafe { (*ctx.sock_addr).user_ip6 };
    if ip6 == [0; 4] {
        return protect(ctx, [0; 4]);
    }
    match as_ipv4(ip6) {
        Some(addr) if addr != [127, 0, 0, 1] || ip6[2] != 0 => protect(ctx, addr),
        _ => ALLOW,
    }
}
