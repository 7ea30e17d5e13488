// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Conntrack in `NETD_CT`: lookups, the creation of a flow's two entries,
//! and per-packet bookkeeping. See `netd_common::ct` for the model.
//!
//! Concurrency: entries are updated in place by every CPU that sees a
//! packet of the flow, without atomics. `last_seen_ns` and `tcp_seen` are
//! only ever moved forward (a lost update delays garbage collection by one
//! packet at most); `packets` and `bytes` may undercount under contention.
//! Exact per-mapping counters live in the per-CPU `NETD_MAPPING_STATS`.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use netd_common::{
    ct::{
        CT_AT_UPLINK, CT_NAT_DST, CT_NAT_SRC, CT_ORIGINAL, CT_TO_ENDPOINT, CtEntry, CtKey,
        NO_MAPPING, SEEN_ACK, SEEN_FIN, SEEN_RST, SEEN_SYN,
    },
    drop,
};

use crate::{
    maps::NETD_CT,
    nat::{Action, Rewrite},
    parse::Flow,
    ports, stats,
};

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
    let (action, mapping) = unsafe {
        (
            Action {
                rewrite: Rewrite::of(&*entry),
                flags: (*entry).flags,
                ifindex: (*entry).ifindex,
                dmac: (*entry).dmac,
            },
            (*entry).mapping,
        )
    };
    touch(entry, flow, len);
    if mapping != NO_MAPPING {
        stats::count_mapping(mapping, len, new_flow);
    }
    action
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
            // A fresh SYN on a closed tuple starts a new connection.
            if closed && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                (*entry).tcp_seen = SEEN_SYN;
            } else {
                (*entry).tcp_seen = seen | seen_bits(flow.tcp_flags);
            }
        }
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

/// Creates both entries of a new flow whose first packet is `flow`: the
/// original direction rewrites the destination to the container, the reply
/// direction rewrites the source back to what the client addressed.
///
/// Both are inserted with `BPF_NOEXIST`. If the original entry exists
/// already (another CPU created the flow first), that entry is returned. If
/// the reply entry cannot be inserted, the original is removed again and
/// the packet is dropped with `drop::CT_CREATE`.
#[inline(always)]
pub fn create(flow: &Flow, key: &CtKey, new: &NewFlow) -> Result<*mut CtEntry, u32> {
    let now = unsafe { bpf_ktime_get_ns() };
    let reply_key = CtKey {
        saddr_be: new.to_addr,
        daddr_be: flow.saddr,
        sport_be: new.to_port,
        dport_be: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let original = CtEntry {
        reverse: reply_key,
        nat_daddr_be: new.to_addr,
        nat_dport_be: new.to_port,
        ifindex: new.ifindex,
        dmac: new.dmac,
        flags: CT_NAT_DST | CT_ORIGINAL | CT_TO_ENDPOINT | CT_AT_UPLINK,
        mapping: new.mapping,
        generation: new.generation,
        created_ns: now,
        last_seen_ns: now,
        kind: new.kind,
        proto: flow.proto,
        ..CtEntry::default()
    };
    let reply = CtEntry {
        reverse: *key,
        nat_saddr_be: flow.daddr,
        nat_sport_be: flow.dport,
        flags: CT_NAT_SRC,
        mapping: new.mapping,
        generation: new.generation,
        created_ns: now,
        last_seen_ns: now,
        kind: new.kind,
        proto: flow.proto,
        ..CtEntry::default()
    };
    if NETD_CT
        .insert(key, original, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Lost a race with another CPU creating the same flow: use theirs.
        return NETD_CT.get_ptr_mut(key).ok_or(drop::CT_CREATE);
    }
    if NETD_CT
        .insert(reply_key, reply, u64::from(BPF_NOEXIST))
        .is_err()
    {
        let _ = NETD_CT.remove(key);
        return Err(drop::CT_CREATE);
    }
    NETD_CT.get_ptr_mut(key).ok_or(drop::CT_CREATE)
}
