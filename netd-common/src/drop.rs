// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Why a netd program dropped a packet, and where. Every drop is counted by
//! hook and reason in the per-CPU array `NETD_DROPS` (index: [`slot`]), and
//! the names below are stable: they appear in `netd stats`, its JSON and the
//! metrics.
//!
//! The codes start at [`BASE`] so that they can never be mistaken for a TC
//! verdict (-1..=8) or an XDP action (0..=4) where a program returns
//! `Err(reason)` through its single exit path.

/// The first drop code.
pub const BASE: u32 = 128;

// TC_ACT_* run from -1 (UNSPEC) to 8 (TRAP); XDP_* from 0 to 4.
const _: () = assert!(BASE > 8);

/// A packet to 127.0.0.0/8 arrived from outside: loopback addresses are
/// never reachable through an uplink (CVE-2020-8558 class).
pub const MARTIAN_LOOPBACK: u32 = BASE;
/// A packet from outside was addressed straight to a container's IP:
/// containers are reachable from outside only through published ports.
pub const DIRECT_TO_CONTAINER: u32 = BASE + 1;
/// A conntrack entry could not be created: the table is full, or the
/// flow's reply tuple is taken by another flow.
pub const CT_CREATE: u32 = BASE + 2;
/// Rewriting a header field or its checksum failed.
pub const REWRITE: u32 = BASE + 3;
/// No route back to the client for a translated reply.
pub const FIB_LOOKUP: u32 = BASE + 4;
/// A published port points at a container with no endpoint.
pub const NO_ENDPOINT: u32 = BASE + 5;
/// The redirect helper refused the target interface.
pub const REDIRECT: u32 = BASE + 6;
/// A packet from outside claims a source address inside the container
/// network: forged (the network lives behind the bridge).
pub const SOURCE_IN_NETWORK: u32 = BASE + 7;
/// A container sent a packet with a source IP or MAC other than its own.
pub const SPOOFED: u32 = BASE + 8;
/// Container-to-container traffic on a network with
/// `com.docker.network.bridge.enable_icc=false`.
pub const ICC_DENIED: u32 = BASE + 9;
/// Traffic between a container of an internal network and the outside.
pub const INTERNAL_NETWORK: u32 = BASE + 10;
/// No masquerade port was free for a new flow (bounded retries).
pub const NAT_EXHAUSTED: u32 = BASE + 11;
/// A container sent to an address of another network: networks are
/// isolated from each other, as Docker's are (they meet only through
/// published ports).
pub const ISOLATED: u32 = BASE + 12;

/// Number of reasons.
pub const COUNT: u32 = 13;

/// Reasons per hook in `NETD_DROPS`: room for reasons to come, so that
/// adding one never changes the pinned map's layout (a resized map must be
/// migrated).
pub const SLOTS: u32 = 64;
const _: () = assert!(COUNT <= SLOTS);

/// The program that dropped: the row of `NETD_DROPS`.
pub mod hook {
    /// TC ingress on an uplink.
    pub const UPLINK_TC: u32 = 0;
    /// XDP on an uplink.
    pub const UPLINK_XDP: u32 = 1;
    /// TC ingress on a container's host veth.
    pub const ENDPOINT_TC: u32 = 2;
    /// TC egress on a LAN endpoint's device (macvlan, ipvlan).
    pub const LAN_TC: u32 = 3;
    /// Drops an earlier netd counted without their hook, kept across the
    /// upgrade.
    pub const UNATTRIBUTED: u32 = 7;
    /// Rows: room for hooks to come.
    pub const ROWS: u32 = 8;

    /// Every row in use, with its stable name.
    pub const NAMES: [(u32, &str); 5] = [
        (UPLINK_TC, "uplink_tc"),
        (UPLINK_XDP, "uplink_xdp"),
        (ENDPOINT_TC, "endpoint_tc"),
        (LAN_TC, "lan_tc"),
        (UNATTRIBUTED, "unattributed"),
    ];
}

/// `NETD_DROPS`' size.
pub const ENTRIES: u32 = hook::ROWS * SLOTS;

/// Stable names, in code order.
pub const NAMES: [&str; COUNT as usize] = [
    "martian_loopback",
    "direct_to_container",
    "ct_create",
    "rewrite",
    "fib_lookup",
    "no_endpoint",
    "redirect",
    "source_in_network",
    "spoofed",
    "icc_denied",
    "internal_network",
    "nat_exhausted",
    "isolated",
];

/// The index of a drop code among the reasons of one hook.
#[inline(always)]
pub const fn index(code: u32) -> u32 {
    code - BASE
}

/// The `NETD_DROPS` index of a drop of `code` at `hook`.
#[inline(always)]
pub const fn slot(hook: u32, code: u32) -> u32 {
    hook * SLOTS + index(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_name() {
        assert_eq!(NAMES.len() as u32, COUNT);
        assert_eq!(index(ISOLATED), COUNT - 1);
        assert!(hook::NAMES.iter().all(|(row, _)| *row < hook::ROWS));
        assert_eq!(slot(hook::UNATTRIBUTED, ISOLATED), 7 * SLOTS + COUNT - 1);
    }
}
