// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Header rewrites, one audited helper per field. For every field: store
//! the new value, then fix the IPv4 checksum (addresses), then the L4
//! checksum (with the pseudo-header flag for addresses under TCP and UDP;
//! ICMP's checksum covers no pseudo-header); each step's failure is its own
//! error. TC uses the kernel's checksum helpers, which also keep `skb->csum`
//! and CHECKSUM_PARTIAL packets right; XDP, which has none, updates
//! checksums incrementally (`netd_common::csum`). UDP's "no checksum" (0)
//! stays 0 in both.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::{TcContext, XdpContext},
};
use netd_common::{
    csum,
    ct::{CT_NAT_DST, CT_NAT_SRC, CtEntry},
    drop,
};

use crate::{
    packet::{read, write},
    parse::{ETH_HLEN, Flow, IP_CHECK, IP_DADDR, IP_SADDR, IP_TTL, PROTO_UDP},
};

/// The rewrite a conntrack entry asks for, copied out of the map.
#[derive(Clone, Copy)]
pub struct Rewrite {
    pub flags: u16,
    pub saddr: [u8; 4],
    pub sport: [u8; 2],
    pub daddr: [u8; 4],
    pub dport: [u8; 2],
}

/// What to do with one packet of a tracked flow: the rewrite and where to
/// deliver it, copied out of its conntrack entry.
#[derive(Clone, Copy)]
pub struct Action {
    pub rewrite: Rewrite,
    /// `CT_*` flags of the entry.
    pub flags: u16,
    /// With `CT_TO_ENDPOINT`: the container's host veth and MAC.
    pub ifindex: u32,
    pub dmac: [u8; 6],
}

impl Action {
    #[inline(always)]
    pub fn of(entry: &CtEntry) -> Self {
        Self {
            rewrite: Rewrite::of(entry),
            flags: entry.flags,
            ifindex: entry.ifindex,
            dmac: entry.dmac,
        }
    }
}

impl Rewrite {
    #[inline(always)]
    pub fn of(entry: &CtEntry) -> Self {
        Self {
            flags: entry.flags,
            saddr: entry.nat_saddr_be,
            sport: entry.nat_sport_be,
            daddr: entry.nat_daddr_be,
            dport: entry.nat_dport_be,
        }
    }

    /// The packet's addresses and ports after the rewrite.
    #[inline(always)]
    pub fn applied_to(&self, flow: &Flow) -> Flow {
        let mut out = *flow;
        if self.flags & CT_NAT_SRC != 0 {
            out.saddr = self.saddr;
            out.sport = self.sport;
        }
        if self.flags & CT_NAT_DST != 0 {
            out.daddr = self.daddr;
            out.dport = self.dport;
        }
        out
    }
}

/// `BPF_F_MARK_MANGLED_0` for UDP: leave a zero checksum alone and never
/// produce one.
#[inline(always)]
fn l4_extra(flow: &Flow) -> u64 {
    if flow.proto == PROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    }
}

/// Rewrites the address at `offset` in `flow`'s IPv4 header.
#[inline(always)]
pub fn tc_addr(
    ctx: &TcContext,
    flow: &Flow,
    offset: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    // The helpers take the raw 32-bit words as they sit in memory.
    let (from, to) = (
        u64::from(u32::from_ne_bytes(old)),
        u64::from(u32::from_ne_bytes(new)),
    );
    ctx.store(flow.l3 + offset, &new, 0)
        .map_err(|_| drop::REWRITE)?;
    ctx.l3_csum_replace(flow.l3 + IP_CHECK, from, to, 4)
        .map_err(|_| drop::REWRITE)?;
    if flow.pseudo_header() {
        ctx.l4_csum_replace(
            flow.l4_check(),
            from,
            to,
            u64::from(BPF_F_PSEUDO_HDR) | 4 | l4_extra(flow),
        )
        .map_err(|_| drop::REWRITE)?;
    }
    Ok(())
}

/// Rewrites the port (or ICMP identifier) at `offset`; `offset` 0: the
/// packet carries none (an echo's missing "port").
#[inline(always)]
pub fn tc_port(
    ctx: &TcContext,
    flow: &Flow,
    offset: usize,
    old: [u8; 2],
    new: [u8; 2],
) -> Result<(), u32> {
    if old == new || offset == 0 {
        return Ok(());
    }
    let (from, to) = (
        u64::from(u16::from_ne_bytes(old)),
        u64::from(u16::from_ne_bytes(new)),
    );
    ctx.store(offset, &new, 0).map_err(|_| drop::REWRITE)?;
    ctx.l4_csum_replace(flow.l4_check(), from, to, 2 | l4_extra(flow))
        .map_err(|_| drop::REWRITE)
}

/// Applies `rw` to the TC packet `flow` describes.
#[inline(always)]
pub fn tc_rewrite(ctx: &TcContext, flow: &Flow, rw: &Rewrite) -> Result<(), u32> {
    if rw.flags & CT_NAT_DST != 0 {
        tc_addr(ctx, flow, IP_DADDR, flow.daddr, rw.daddr)?;
        tc_port(ctx, flow, flow.dport_off, flow.dport, rw.dport)?;
    }
    if rw.flags & CT_NAT_SRC != 0 {
        tc_addr(ctx, flow, IP_SADDR, flow.saddr, rw.saddr)?;
        tc_port(ctx, flow, flow.sport_off, flow.sport, rw.sport)?;
    }
    Ok(())
}

/// Decrements the TTL of a routed TC packet (the caller checked it is > 1).
#[inline(always)]
pub fn tc_decrement_ttl(ctx: &TcContext, flow: &Flow) -> Result<(), u32> {
    // TTL shares its 16-bit checksum word with the protocol byte.
    let from = u64::from(u16::from_ne_bytes([flow.ttl, flow.proto]));
    let to = u64::from(u16::from_ne_bytes([flow.ttl - 1, flow.proto]));
    ctx.store(ETH_HLEN + IP_TTL, &(flow.ttl - 1), 0)
        .map_err(|_| drop::REWRITE)?;
    ctx.l3_csum_replace(ETH_HLEN + IP_CHECK, from, to, 2)
        .map_err(|_| drop::REWRITE)
}

/// Sets the Ethernet destination and source.
#[inline(always)]
pub fn tc_set_macs(ctx: &TcContext, dst: [u8; 6], src: [u8; 6]) -> Result<(), u32> {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&dst);
    macs[6..].copy_from_slice(&src);
    ctx.store(0, &macs, 0).map_err(|_| drop::REWRITE)
}

/// Reads the 16-bit checksum at `offset` (network order), updates it with
/// `update`, writes it back.
#[inline(always)]
fn xdp_fix_check(
    ctx: &XdpContext,
    offset: usize,
    update: impl FnOnce(u16) -> u16,
) -> Result<(), u32> {
    let check: [u8; 2] = read(ctx, offset).ok_or(drop::REWRITE)?;
    let new = update(u16::from_be_bytes(check));
    if write(ctx, offset, new.to_be_bytes()) {
        Ok(())
    } else {
        Err(drop::REWRITE)
    }
}

#[inline(always)]
fn xdp_addr(
    ctx: &XdpContext,
    flow: &Flow,
    offset: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    let (from, to) = (u32::from_be_bytes(old), u32::from_be_bytes(new));
    if !write(ctx, flow.l3 + offset, new) {
        return Err(drop::REWRITE);
    }
    xdp_fix_check(ctx, flow.l3 + IP_CHECK, |c| csum::replace32(c, from, to))?;
    if !flow.pseudo_header() {
        return Ok(());
    }
    if flow.proto == PROTO_UDP {
        xdp_fix_check(ctx, flow.l4_check(), |c| csum::replace32_udp(c, from, to))
    } else {
        xdp_fix_check(ctx, flow.l4_check(), |c| csum::replace32(c, from, to))
    }
}

#[inline(always)]
fn xdp_port(
    ctx: &XdpContext,
    flow: &Flow,
    offset: usize,
    old: [u8; 2],
    new: [u8; 2],
) -> Result<(), u32> {
    if old == new || offset == 0 {
        return Ok(());
    }
    let (from, to) = (u16::from_be_bytes(old), u16::from_be_bytes(new));
    if !write(ctx, offset, new) {
        return Err(drop::REWRITE);
    }
    if flow.proto == PROTO_UDP {
        xdp_fix_check(ctx, flow.l4_check(), |c| csum::replace16_udp(c, from, to))
    } else {
        xdp_fix_check(ctx, flow.l4_check(), |c| csum::replace16(c, from, to))
    }
}

/// Applies `rw` to the XDP packet `flow` describes.
#[inline(always)]
pub fn xdp_rewrite(ctx: &XdpContext, flow: &Flow, rw: &Rewrite) -> Result<(), u32> {
    if rw.flags & CT_NAT_DST != 0 {
        xdp_addr(ctx, flow, IP_DADDR, flow.daddr, rw.daddr)?;
        xdp_port(ctx, flow, flow.dport_off, flow.dport, rw.dport)?;
    }
    if rw.flags & CT_NAT_SRC != 0 {
        xdp_addr(ctx, flow, IP_SADDR, flow.saddr, rw.saddr)?;
        xdp_port(ctx, flow, flow.sport_off, flow.sport, rw.sport)?;
    }
    Ok(())
}

/// Decrements the TTL of an XDP packet (the caller checked it is > 1).
#[inline(always)]
pub fn xdp_decrement_ttl(ctx: &XdpContext, flow: &Flow) -> Result<(), u32> {
    let from = u16::from_be_bytes([flow.ttl, flow.proto]);
    let to = u16::from_be_bytes([flow.ttl - 1, flow.proto]);
    if !write(ctx, ETH_HLEN + IP_TTL, flow.ttl - 1) {
        return Err(drop::REWRITE);
    }
    xdp_fix_check(ctx, ETH_HLEN + IP_CHECK, |c| csum::replace16(c, from, to))
}

/// Sets the Ethernet destination and source of an XDP packet.
#[inline(always)]
pub fn xdp_set_macs(ctx: &XdpContext, dst: [u8; 6], src: [u8; 6]) -> Result<(), u32> {
    if write(ctx, 0, dst) && write(ctx, 6, src) {
        Ok(())
    } else {
        Err(drop::REWRITE)
    }
}
