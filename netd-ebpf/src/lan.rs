// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! TC egress on a LAN endpoint's device (macvlan, ipvlan), in its
//! container's namespace: what the container sends onto the LAN.
//!
//! A LAN endpoint has no host side: its frames go from the device to the
//! parent's wire (or to a sibling on the same parent) without crossing
//! anything of the host's. This is the one place netd sees them, so it
//! checks here what a bridge endpoint's veth program checks first: the
//! source MAC of every frame, the source address of IPv4 and the sender of
//! ARP (what poisons a LAN's caches), then the network's policy
//! (`enable_icc=false`: not to the network's other containers; internal:
//! to nothing but them). No translation: LAN endpoints are on the LAN with
//! their own addresses. Every packet and drop is counted per endpoint.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netd_common::{
    drop,
    endpoint::{NET_INTERNAL, NET_NO_ICC},
    stats::hook,
};

use crate::{
    deliver, endpoint,
    maps::{NETD_ENDPOINT_STATS, NETD_ENDPOINTS, NETD_VETHS},
    observe,
    packet::read,
    parse,
};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Offsets in an Ethernet ARP packet: sender hardware and protocol address.
const ARP_SHA: usize = parse::ETH_HLEN + 8;
const ARP_SPA: usize = parse::ETH_HLEN + 14;

/// The verdict for one frame a LAN endpoint sends, counted per endpoint.
#[inline(always)]
pub fn try_lan_tc(ctx: &TcContext) -> Result<i32, u32> {
    observe::count(ctx, hook::ENDPOINT_TC);
    // SAFETY: the context's skb pointer is valid for the program's life.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let verdict = check(ctx, ifindex);
    if let Some(stats) = NETD_ENDPOINT_STATS.get_ptr_mut(ifindex) {
        // SAFETY: this CPU's value; programs on one CPU do not interleave.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += u64::from(ctx.len());
            if verdict.is_err() {
                (*stats).dropped += 1;
            }
        }
    }
    verdict
}

#[inline(always)]
fn check(ctx: &TcContext, ifindex: u32) -> Result<i32, u32> {
    // A device netd does not know (being attached or detached): not netd's
    // to police.
    let Some(device) = NETD_VETHS.get_ptr(ifindex) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: a live map value, copied out.
    let device = unsafe { *device };
    let ether_type = endpoint::check_sender(ctx, &device)?;
    if ether_type == ETH_P_ARP {
        let sha: [u8; 6] = read(ctx, ARP_SHA).ok_or(drop::SPOOFED)?;
        let spa: [u8; 4] = read(ctx, ARP_SPA).ok_or(drop::SPOOFED)?;
        // 0.0.0.0: an address probe (RFC 5227), which claims nothing.
        if sha != device.mac || (spa != device.addr_be && spa != [0; 4]) {
            return Err(drop::SPOOFED);
        }
        return Ok(TC_ACT_OK);
    }
    // A frame carrying its own VLAN tag would put the container on
    // another LAN than its network's: never its to send.
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(drop::SPOOFED);
    }
    if ether_type != parse::ETH_P_IP {
        return Ok(TC_ACT_OK);
    }
    let daddr: [u8; 4] = read(ctx, parse::ETH_HLEN + parse::IP_DADDR).ok_or(drop::SPOOFED)?;
    let net = deliver::network(device.network);
    if net.flags & (NET_NO_ICC | NET_INTERNAL) == 0 {
        return Ok(TC_ACT_OK);
    }
    // SAFETY: a live map value, read once.
    let sibling = NETD_ENDPOINTS
        .get_ptr(daddr)
        .is_some_and(|ep| unsafe { (*ep).network } == device.network);
    if sibling && net.flags & NET_NO_ICC != 0 {
        return Err(drop::ICC_DENIED);
    }
    // Internal: the network's containers among themselves, and the link's
    // broadcast and multicast, nothing else.
    if !sibling && net.flags & NET_INTERNAL != 0 && deliver::unicast_peer(daddr) {
        return Err(drop::INTERNAL_NETWORK);
    }
    Ok(TC_ACT_OK)
}
