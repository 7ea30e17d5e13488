// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Conntrack in `NETD_CT`: lookups, the creation of a flow's two entries,
//! and per-packet bookkeeping. See `netd_common::ct` for the model.
//!
//! Concurrency: entries are updated in place by every CPU that sees a
//! packet of the flow, without atomics. `last_seen_ns` and `tcp_seen` are
//! only ever moved forward (a lost update delays garbage collection by one
//! packet at most); `packets` and `bytes` may undercount under contention;
//! `tcp_ack_be` may be left one packet behind (see `may_close`).
//! Exact per-mapping counters live in the per-CPU `NETD_MAPPING_STATS`.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use netd_common::{
    ct::{
        CT_AT_UPLINK, CT_NAT_DST, CT_NAT_SRC, CT_ORIGINAL, CT_TO_ENDPOINT, CtEntry, CtKey,
        NO_MAPPING, SEEN_ACK, SEEN_FIN, SEEN_RST, SEEN_SYN,
    },
    drop,
};

use crate::{maps::NETD_CT, monitor, nat::Action, parse::Flow, ports, stats};

/// TCP flag bits in the header's flags byte.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The key of a packet as it is.
#[inline(always)]
pub fn key_of(flow: &Flow) -> CtKey {
    CtKey {
        saddr_be: flow.saddr,
        daddr_be: flow.daddr,
        sport_be: flow.sport,
        dport_be: flow.dport,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// The entry for `key`, if there is one and its mapping (if any) is still
/// the one it was created for. A stale entry (its mapping was removed or
/// replaced) is deleted with its reverse, so the flow is evaluated afresh.
///
/// Returns a pointer into the map: valid until the program ends, possibly
/// written concurrently by other CPUs (see the module comment).
#[inline(always)]
pub fn lookup(key: &CtKey) -> Option<*mut CtEntry> {
    let entry = NETD_CT.get_ptr_mut(key)?;
    // SAFETY: a live map value; fields are read individually.
    let (mapping, generation, reverse) =
        unsafe { ((*entry).mapping, (*entry).generation, (*entry).reverse) };
    if mapping != NO_MAPPING && !ports::still_valid(mapping, generation) {
        let _ = NETD_CT.remove(key);
        let _ = NETD_CT.remove(reverse);
        return None;
    }
    Some(entry)
}

/// The `SEEN_*` bits for a TCP flags byte.
#[inline(always)]
fn seen_bits(tcp_flags: u8) -> u8 {
    let mut seen = 0;
    if tcp_flags & TCP_SYN != 0 {
        seen |= SEEN_SYN;
    }
    if tcp_flags & TCP_ACK != 0 {
        seen |= SEEN_ACK;
    }
    if tcp_flags & TCP_FIN != 0 {
        seen |= SEEN_FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        seen |= SEEN_RST;
    }
    seen
}

/// Records one packet of `len` bytes of `flow` on `entry` and on its
/// mapping's counters (`new_flow`: the entry was just created), and returns
/// what to do with the packet.
#[inline(always)]
pub fn account(entry: *mut CtEntry, flow: &Flow, len: u32, new_flow: bool) -> Action {
    // SAFETY: a live map value, copied out before anything else changes.
    let (action, mapping) = unsafe { (Action::of(&*entry), (*entry).mapping) };
    touch(entry, flow, len);
    if mapping != NO_MAPPING {
        stats::count_mapping(mapping, len, new_flow);
    }
    action
}

/// Whether `flow`'s packet may start a flow. TCP, as netfilter decides
/// (`tcp_conntracks`, state NONE): a SYN without ACK, FIN or RST, or
/// (picked up mid-stream, `nf_conntrack_tcp_loose`) a plain ACK. SYN+FIN,
/// SYN+RST, the null and Xmas scans, resets, FINs and SYN-ACKs start
/// nothing: netfilter calls them invalid and never translates them.
///
/// A later fragment starts nothing: it is translated only with the flow
/// its first fragment found or started.
#[inline(always)]
pub fn may_start(flow: &Flow) -> bool {
    if flow.frag == crate::parse::FRAG_LATER {
        return false;
    }
    if flow.proto != crate::parse::PROTO_TCP {
        return true;
    }
    let flags = flow.tcp_flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK);
    flags == TCP_SYN || flags == TCP_ACK
}

/// How far a reset's or FIN's sequence number may be from what its
/// receiver last acknowledged and still close the flow: ahead by what a
/// receive window holds (16 MiB, past Linux's default `tcp_rmem` maximum),
/// behind by 64 KiB (a retransmission of what was acknowledged already).
const CLOSE_AHEAD: u32 = 1 << 24;
const CLOSE_BEHIND: u32 = 1 << 16;

/// Whether a reset or FIN of `flow`, a segment of `entry`'s direction, is
/// near the sequence number the other direction last acknowledged, so that
/// it may close the flow. A reset forged with the flow's addresses and
/// ports but a blind sequence number is not: the receiving stack refuses
/// it (RFC 5961), and netd must not forget the flow because of it (which
/// would break the connection once it idles for the `close` timeout).
/// Also true while the other direction has acknowledged nothing (the reset
/// that refuses a SYN), and when it has no entry to ask.
#[inline(always)]
fn may_close(entry: *const CtEntry, flow: &Flow) -> bool {
    // SAFETY: a live map value, its key copied out.
    let reverse = unsafe { (*entry).reverse };
    let Some(other) = NETD_CT.get_ptr(reverse) else {
        return true;
    };
    // SAFETY: a live map value; another CPU may be updating the
    // acknowledgment as it is read, leaving it a packet behind at worst,
    // well within the window.
    let (seen, ack) = unsafe { ((*other).tcp_seen, (*other).tcp_ack_be) };
    if seen & SEEN_ACK == 0 {
        return true;
    }
    let ahead = u32::from_be_bytes(flow.tcp_seq).wrapping_sub(u32::from_be_bytes(ack));
    ahead < CLOSE_AHEAD || ahead.wrapping_neg() <= CLOSE_BEHIND
}

/// Records one packet of `len` bytes on `entry`.
#[inline(always)]
fn touch(entry: *mut CtEntry, flow: &Flow, len: u32) {
    // SAFETY: a live map value (see `lookup`).
    unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        (*entry).packets += 1;
        (*entry).bytes += u64::from(len);
        if flow.proto == crate::parse::PROTO_TCP {
            let seen = (*entry).tcp_seen;
            let closed = seen & (SEEN_FIN | SEEN_RST) != 0;
            let closing = flow.tcp_flags & (TCP_FIN | TCP_RST) != 0;
            // A fresh SYN on a closed tuple starts a new connection.
            if closed && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                (*entry).tcp_seen = SEEN_SYN;
            } else if closing && !may_close(entry, flow) {
                // Delivered (the receiver judges it) but not recorded:
                // neither its flags nor its acknowledgment.
            } else {
                (*entry).tcp_seen = seen | seen_bits(flow.tcp_flags);
                if flow.tcp_flags & (TCP_ACK | TCP_RST) == TCP_ACK {
                    (*entry).tcp_ack_be = flow.tcp_ack;
                }
            }
        }
    }
}

/// The key of the packet an ICMP error quotes, reversed: the direction of
/// the flow the error travels in.
#[inline(always)]
pub fn key_of_quoted(inner: &Flow) -> CtKey {
    CtKey {
        saddr_be: inner.daddr,
        daddr_be: inner.saddr,
        sport_be: inner.dport,
        dport_be: inner.sport,
        proto: inner.proto,
        _pad: [0; 3],
    }
}

/// Inserts a flow's two entries: the reply first (with `BPF_NOEXIST`: its
/// key is what a masquerade or hairpin port claims), then the original.
///
/// Returns the original entry. `Err(())` if the reply key is taken (the
/// caller may try another port). If the original exists already (another
/// CPU created the same flow first), the reply just inserted is removed and
/// the existing original is returned; if it cannot be inserted at all (the
/// table is full), the reply is removed and the flow refused with
/// `drop::CT_CREATE`.
#[inline(always)]
pub fn insert_pair(
    key: &CtKey,
    original: &CtEntry,
    reply_key: &CtKey,
    reply: &CtEntry,
) -> Result<Result<*mut CtEntry, u32>, ()> {
    match NETD_CT.insert(reply_key, reply, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(EEXIST) => return Err(()),
        // The table is full (E2BIG): no other port would help.
        Err(_) => return Ok(Err(drop::CT_CREATE)),
    }
    if NETD_CT
        .insert(key, original, u64::from(BPF_NOEXIST))
        .is_err()
    {
        let _ = NETD_CT.remove(reply_key);
        return Ok(NETD_CT.get_ptr_mut(key).ok_or(drop::CT_CREATE));
    }
    stats::count_flow_created(original.kind);
    monitor::flow_created(key, reply_key, original.kind);
    Ok(NETD_CT.get_ptr_mut(key).ok_or(drop::CT_CREATE))
}

/// `bpf_map_update_elem`'s answer when `BPF_NOEXIST` finds the key taken.
const EEXIST: i32 = -17;

/// A new entry for one direction of a flow of `proto` created now.
#[inline(always)]
pub fn entry(proto: u8, flags: u16, kind: u8, mapping: u32, generation: u32) -> CtEntry {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    CtEntry {
        flags,
        mapping,
        generation,
        created_ns: now,
        last_seen_ns: now,
        kind,
        proto,
        ..CtEntry::default()
    }
}

/// What a new published-port flow becomes.
pub struct NewFlow {
    /// Where the original direction's destination goes (the container).
    pub to_addr: [u8; 4],
    pub to_port: [u8; 2],
    /// The container's host veth and MAC.
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub mapping: u32,
    pub generation: u32,
    pub kind: u8,
}

/// Creates both entries of a published-port flow arriving from an uplink,
/// whose first packet is `flow`: the original direction (at the uplink)
/// rewrites the destination to the container, the reply direction (at the
/// container's veth) rewrites the source back to what the client addressed.
/// A taken reply tuple (two host ports of one mapping reached from the same
/// client port) refuses the flow with `drop::CT_CREATE`, as netfilter
/// refuses a clashing conntrack entry.
#[inline(always)]
pub fn create(flow: &Flow, key: &CtKey, new: &NewFlow) -> Result<*mut CtEntry, u32> {
    let reply_key = CtKey {
        saddr_be: new.to_addr,
        daddr_be: flow.saddr,
        sport_be: new.to_port,
        dport_be: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let mut original = entry(
        flow.proto,
        CT_NAT_DST | CT_ORIGINAL | CT_TO_ENDPOINT | CT_AT_UPLINK,
        new.kind,
        new.mapping,
        new.generation,
    );
    original.reverse = reply_key;
    original.nat_daddr_be = new.to_addr;
    original.nat_dport_be = new.to_port;
    original.ifindex = new.ifindex;
    original.dmac = new.dmac;
    let mut reply = entry(
        flow.proto,
        CT_NAT_SRC,
        new.kind,
        new.mapping,
        new.generation,
    );
    reply.reverse = *key;
    reply.nat_saddr_be = flow.daddr;
    reply.nat_sport_be = flow.dport;
    match insert_pair(key, &original, &reply_key, &reply) {
        Ok(created) => created,
        // The reply tuple is another flow's: maybe this very flow, created
        // by another CPU a moment ago.
        Err(()) => NETD_CT.get_ptr_mut(key).ok_or(drop::CT_CREATE),
    }
}
