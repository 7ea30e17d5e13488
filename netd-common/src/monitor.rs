// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The live monitor (`netd monitor`): events the programs write into the
//! ring buffer `NETD_MONITOR_EVENTS` while a monitor is attached.
//!
//! The programs emit nothing unless `MonitorConfig::events` asks for it,
//! so a detached monitor costs one array lookup on the paths that could
//! emit (a drop, a new flow) and nothing on the others. Each CPU spends
//! from a token bucket of its own (`NETD_MONITOR_BUCKETS`) before it
//! reserves room in the ring, so a flood of drops is sampled at the rate
//! the monitor asked for instead of filling the ring or the CPU; what the
//! bucket or a full ring refused is counted there, and the monitor shows it.

/// [`MonitorConfig::events`]: emit every drop.
pub const WANT_DROPS: u32 = 1;
/// [`MonitorConfig::events`]: emit every flow the datapath creates.
pub const WANT_FLOWS: u32 = 2;

/// Events per second per CPU when the monitor names no rate.
pub const DEFAULT_RATE: u32 = 10_000;
/// One token, in the bucket's unit (nanotokens: refilling is `elapsed_ns *
/// rate`, no division in the datapath).
pub const TOKEN: u64 = 1_000_000_000;
/// The longest idle time the bucket credits: bounds the refill product
/// (`elapsed_ns * rate` fits in a u64 for any u32 rate).
pub const MAX_REFILL_NS: u64 = 1_000_000_000;

/// The ring buffer's size in bytes (a power of two, a multiple of the page
/// size): about 5,000 events of [`Event`]'s size.
pub const RING_BYTES: u32 = 1 << 20;

abi_type! {
    /// The single entry of `NETD_MONITOR`, written by the agent.
    pub struct MonitorConfig {
        /// `WANT_*` bits; 0 while no monitor is attached.
        pub events: u32,
        /// Events per second each CPU may emit.
        pub rate: u32,
        /// How many events a CPU may emit at once after an idle time.
        pub burst: u32,
        pub _pad: u32,
    }
    size = 16;
}

abi_type! {
    /// One CPU's token bucket and what it refused, in the per-CPU array
    /// `NETD_MONITOR_BUCKETS` (one entry).
    pub struct MonitorBucket {
        /// Tokens left, in units of [`TOKEN`].
        pub tokens: u64,
        /// `bpf_ktime_get_ns` of the last refill.
        pub refilled_ns: u64,
        /// Events the bucket refused (the rate was spent).
        pub lost_rate: u64,
        /// Events the ring refused (the agent did not read fast enough).
        pub lost_full: u64,
    }
    size = 32;
}

/// [`Event::kind`]: a drop; `reason` is a `drop` code, `hook` a
/// `drop::hook` row, `snap` the packet's first bytes.
pub const EVENT_DROP: u8 = 1;
/// [`Event::kind`]: a flow was created; `reason` is its conntrack kind
/// (`CT_KIND_*`), `tuple` its first packet as it arrived and `reply` the
/// tuple its replies will carry (so the translated packet is `reply`
/// reversed); `snap` is empty (`snap_len` 0).
pub const EVENT_FLOW: u8 = 2;

/// How many of a packet's first bytes an event carries: Ethernet, IPv4
/// with the longest options and a TCP header fit.
pub const SNAP_BYTES: usize = 128;

abi_type! {
    /// One event in `NETD_MONITOR_EVENTS`.
    pub struct Event {
        /// `EVENT_*`.
        pub kind: u8,
        pub hook: u8,
        pub _pad: [u8; 2],
        /// A drop code, or a conntrack kind.
        pub reason: u32,
        /// The interface the packet arrived on, in the namespace of the
        /// hook (a container's for LAN endpoints).
        pub ifindex: u32,
        /// The packet's length.
        pub len: u32,
        /// `bpf_ktime_get_ns`.
        pub time_ns: u64,
        /// Flows: the first packet's tuple as it arrived.
        pub tuple: crate::ct::CtKey,
        /// Flows: the tuple of the replies.
        pub reply: crate::ct::CtKey,
        /// How many bytes of `snap` hold the packet.
        pub snap_len: u32,
        pub _pad2: u32,
        /// The packet's first bytes (u64s only for `Default`).
        pub snap: [u64; SNAP_BYTES / 8],
    }
    size = 192;
}
