// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The live monitor's kernel side: drops and new flows written into
//! `NETD_MONITOR_EVENTS` while a monitor asks for them, each CPU spending
//! from its own token bucket first (see `netd_common::monitor`).
//!
//! Nothing here runs on a packet that is neither dropped nor the first of
//! a flow, and those only look at `NETD_MONITOR` while no monitor is
//! attached.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    maps::ring_buf::RingBufEntry,
    programs::{TcContext, XdpContext},
};
use netd_common::{
    ct::CtKey,
    monitor::{
        EVENT_DROP, EVENT_FLOW, Event, MAX_REFILL_NS, MonitorBucket, SNAP_BYTES, TOKEN, WANT_DROPS,
        WANT_FLOWS,
    },
};

use crate::maps::{NETD_MONITOR, NETD_MONITOR_BUCKETS, NETD_MONITOR_EVENTS};

// The snapshot length is bounded by a mask in `dropped`.
const _: () = assert!(SNAP_BYTES.is_power_of_two());

/// [`Event::hook`] of a flow: it is created by the hook its kind implies.
const NO_HOOK: u8 = u8::MAX;

/// A packet a drop event can describe: where it arrived and its first
/// bytes.
pub trait Packet {
    fn ifindex(&self) -> u32;
    fn wire_len(&self) -> u32;
    /// Copies the packet's first `len` bytes (1..=`SNAP_BYTES`) to `to`.
    fn copy_head(&self, to: *mut u8, len: u32) -> bool;
}

impl Packet for TcContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context's skb is valid for the program's run.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn wire_len(&self) -> u32 {
        self.len()
    }

    #[inline(always)]
    fn copy_head(&self, to: *mut u8, len: u32) -> bool {
        // SAFETY: `to` has room for `SNAP_BYTES` >= `len` bytes.
        unsafe {
            aya_ebpf::helpers::generated::bpf_skb_load_bytes(self.skb.skb.cast(), 0, to.cast(), len)
                == 0
        }
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn wire_len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }

    #[inline(always)]
    fn copy_head(&self, to: *mut u8, len: u32) -> bool {
        // SAFETY: as above.
        unsafe { bpf_xdp_load_bytes(self.ctx, 0, to.cast(), len) == 0 }
    }
}

/// Whether a monitor wants events of `want` and this CPU's bucket holds a
/// token for one (spent then); an event refused by the bucket is counted.
#[inline(always)]
fn admit(want: u32) -> Option<*mut MonitorBucket> {
    let config = NETD_MONITOR.get(0)?;
    if config.events & want == 0 {
        return None;
    }
    let bucket = NETD_MONITOR_BUCKETS.get_ptr_mut(0)?;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's entry; programs on one CPU do not interleave.
    unsafe {
        let idle = now.saturating_sub((*bucket).refilled_ns).min(MAX_REFILL_NS);
        let full = u64::from(config.burst.max(1)) * TOKEN;
        (*bucket).tokens = ((*bucket).tokens + idle * u64::from(config.rate)).min(full);
        (*bucket).refilled_ns = now;
        if (*bucket).tokens < TOKEN {
            (*bucket).lost_rate += 1;
            return None;
        }
        (*bucket).tokens -= TOKEN;
    }
    Some(bucket)
}

/// Room for one event in the ring, or `None` (counted) when it is full.
#[inline(always)]
fn reserve(bucket: *mut MonitorBucket) -> Option<RingBufEntry<Event>> {
    let entry = NETD_MONITOR_EVENTS.reserve(0);
    if entry.is_none() {
        // SAFETY: as in `admit`.
        unsafe { (*bucket).lost_full += 1 };
    }
    entry
}

/// Writes the header every event has.
///
/// # Safety
/// `event` points at a reserved [`Event`].
#[inline(always)]
unsafe fn header(event: *mut Event, kind: u8, hook: u8, reason: u32) {
    // SAFETY: the caller's.
    unsafe {
        (*event).kind = kind;
        (*event).hook = hook;
        (*event)._pad = [0; 2];
        (*event).reason = reason;
        (*event).time_ns = bpf_ktime_get_ns();
        (*event).ifindex = 0;
        (*event).len = 0;
        (*event).tuple = CtKey::default();
        (*event).reply = CtKey::default();
        (*event).snap_len = 0;
        (*event)._pad2 = 0;
    }
}

/// Emits a drop of `reason` at `hook` (a `drop::hook` row), with the
/// packet's first bytes, if a monitor asks for drops.
#[inline(always)]
pub fn dropped(packet: &impl Packet, hook: u32, reason: u32) {
    let Some(bucket) = admit(WANT_DROPS) else {
        return;
    };
    let Some(mut entry) = reserve(bucket) else {
        return;
    };
    let event = entry.as_mut_ptr();
    let len = packet.wire_len();
    // The helpers refuse a length the verifier cannot bound to
    // 1..=SNAP_BYTES; a plain `min` and a zero test compile into a test the
    // verifier does not tie to the length (data == data_end), so the bound
    // is arithmetic. An empty packet asks for SNAP_BYTES and the helper
    // fails, which leaves `snap_len` at 0.
    let snap_len = (len.min(SNAP_BYTES as u32).wrapping_sub(1) & (SNAP_BYTES as u32 - 1)) + 1;
    // SAFETY: `event` is the reserved entry.
    unsafe {
        header(event, EVENT_DROP, hook as u8, reason);
        (*event).ifindex = packet.ifindex();
        (*event).len = len;
        if packet.copy_head((*event).snap.as_mut_ptr().cast(), snap_len) {
            (*event).snap_len = snap_len;
        }
    }
    entry.submit(0);
}

/// Emits a new flow of conntrack kind `kind` whose first packet is `tuple`
/// and whose replies will be `reply`, if a monitor asks for flows.
#[inline(always)]
pub fn flow_created(tuple: &CtKey, reply: &CtKey, kind: u8) {
    let Some(bucket) = admit(WANT_FLOWS) else {
        return;
    };
    let Some(mut entry) = reserve(bucket) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: as above.
    unsafe {
        header(event, EVENT_FLOW, NO_HOOK, u32::from(kind));
        (*event).tuple = *tuple;
        (*event).reply = *reply;
    }
    entry.submit(0);
}
