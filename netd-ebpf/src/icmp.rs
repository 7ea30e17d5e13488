// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! ICMP errors (destination unreachable, fragmentation needed, time
//! exceeded, parameter problem) about translated flows, translated too, so
//! that traceroute and path-MTU discovery work through netd as through
//! netfilter.
//!
//! An error quotes the packet it is about; that packet went the other way
//! of the flow the error travels with, so the error's conntrack entry is
//! found by the quoted packet's key reversed. The entry's rewrite applies to
//! the error's outer header (as to any packet of its direction) and,
//! mirrored, to the quoted header: where the entry rewrites the
//! destination, the quoted packet's source is rewritten, and the other way
//! round. Every checksum follows: the outer IPv4 header's, the quoted IPv4
//! header's, the quoted L4 checksum when the quote holds it, and the ICMP
//! checksum over all the quoted bytes that changed.

use aya_ebpf::programs::TcContext;
use netd_common::{
    csum,
    ct::{CT_NAT_DST, CT_NAT_SRC},
    drop,
};

use crate::{
    nat::{self, Rewrite},
    packet::read,
    parse::{ICMP_CHECK, IP_CHECK, IP_DADDR, IP_SADDR, IcmpError, PROTO_UDP},
};

/// Stores `new` over `old` at `offset` inside the ICMP payload, keeping the
/// ICMP checksum right.
#[inline(always)]
fn store_quoted<const N: usize>(
    ctx: &TcContext,
    err: &IcmpError,
    offset: usize,
    old: [u8; N],
    new: [u8; N],
) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    ctx.store(offset, &new, 0).map_err(|_| drop::REWRITE)?;
    let (from, to) = if N == 4 {
        (
            u64::from(u32::from_ne_bytes([old[0], old[1], old[2], old[3]])),
            u64::from(u32::from_ne_bytes([new[0], new[1], new[2], new[3]])),
        )
    } else {
        (
            u64::from(u16::from_ne_bytes([old[0], old[1]])),
            u64::from(u16::from_ne_bytes([new[0], new[1]])),
        )
    };
    ctx.l4_csum_replace(err.outer.l4 + ICMP_CHECK, from, to, N as u64)
        .map_err(|_| drop::REWRITE)
}

/// Updates the 16-bit checksum at `offset` inside the quote with `update`.
#[inline(always)]
fn fix_quoted_check(
    ctx: &TcContext,
    err: &IcmpError,
    offset: usize,
    update: impl FnOnce(u16) -> u16,
) -> Result<(), u32> {
    let old: [u8; 2] = read(ctx, offset).ok_or(drop::REWRITE)?;
    let new = update(u16::from_be_bytes(old)).to_be_bytes();
    store_quoted(ctx, err, offset, old, new)
}

/// Rewrites a quoted address (`field`: `IP_SADDR` or `IP_DADDR`).
#[inline(always)]
fn quoted_addr(
    ctx: &TcContext,
    err: &IcmpError,
    field: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    let inner = &err.inner;
    let (from, to) = (u32::from_be_bytes(old), u32::from_be_bytes(new));
    store_quoted(ctx, err, inner.l3 + field, old, new)?;
    fix_quoted_check(ctx, err, inner.l3 + IP_CHECK, |c| {
        csum::replace32(c, from, to)
    })?;
    if err.inner_check != 0 && inner.pseudo_header() {
        if inner.proto == PROTO_UDP {
            fix_quoted_check(ctx, err, err.inner_check, |c| {
                csum::replace32_udp(c, from, to)
            })?;
        } else {
            fix_quoted_check(ctx, err, err.inner_check, |c| csum::replace32(c, from, to))?;
        }
    }
    Ok(())
}

/// Rewrites a quoted port (or echo identifier) at `offset` (0: none).
#[inline(always)]
fn quoted_port(
    ctx: &TcContext,
    err: &IcmpError,
    offset: usize,
    old: [u8; 2],
    new: [u8; 2],
) -> Result<(), u32> {
    if old == new || offset == 0 {
        return Ok(());
    }
    let (from, to) = (u16::from_be_bytes(old), u16::from_be_bytes(new));
    store_quoted(ctx, err, offset, old, new)?;
    if err.inner_check != 0 {
        if err.inner.proto == PROTO_UDP {
            fix_quoted_check(ctx, err, err.inner_check, |c| {
                csum::replace16_udp(c, from, to)
            })?;
        } else {
            fix_quoted_check(ctx, err, err.inner_check, |c| csum::replace16(c, from, to))?;
        }
    }
    Ok(())
}

/// Translates the error `err` with the rewrite `rw` of its direction's
/// conntrack entry.
#[inline(always)]
pub fn tc_translate(ctx: &TcContext, err: &IcmpError, rw: &Rewrite) -> Result<(), u32> {
    let (outer, inner) = (&err.outer, &err.inner);
    if rw.flags & CT_NAT_DST != 0 {
        nat::tc_addr(ctx, outer, IP_DADDR, outer.daddr, rw.daddr)?;
        quoted_addr(ctx, err, IP_SADDR, inner.saddr, rw.daddr)?;
        quoted_port(ctx, err, inner.sport_off, inner.sport, rw.dport)?;
    }
    if rw.flags & CT_NAT_SRC != 0 {
        nat::tc_addr(ctx, outer, IP_SADDR, outer.saddr, rw.saddr)?;
        quoted_addr(ctx, err, IP_DADDR, inner.daddr, rw.saddr)?;
        quoted_port(ctx, err, inner.dport_off, inner.dport, rw.sport)?;
    }
    Ok(())
}
