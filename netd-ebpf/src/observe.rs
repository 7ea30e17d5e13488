// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Per-protocol packet counting, shared by every hook.

use netd_common::stats::ProtoClass;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr},
};

use crate::{
    maps::NETD_PROTO_STATS,
    packet::{Frame, ptr_at},
};

/// Classifies a frame by its Ethernet type and, for IPv4, its protocol.
#[inline(always)]
fn classify<F: Frame>(frame: &F) -> ProtoClass {
    let Some(eth) = ptr_at::<EthHdr, _>(frame, 0) else {
        return ProtoClass::Other;
    };
    // SAFETY: `ptr_at` checked the header lies inside the packet.
    let ether_type = unsafe { core::ptr::addr_of!((*eth).ether_type).read_unaligned() };
    if ether_type == EtherType::Ipv6 as u16 {
        return ProtoClass::Ipv6;
    }
    if ether_type == EtherType::Arp as u16 {
        return ProtoClass::Arp;
    }
    if ether_type != EtherType::Ipv4 as u16 {
        return ProtoClass::Other;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr, _>(frame, EthHdr::LEN) else {
        return ProtoClass::Ipv4Other;
    };
    // SAFETY: as above.
    let proto = unsafe { (*ip).proto };
    match proto {
        p if p == IpProto::Tcp as u8 => ProtoClass::Ipv4Tcp,
        p if p == IpProto::Udp as u8 => ProtoClass::Ipv4Udp,
        p if p == IpProto::Icmp as u8 => ProtoClass::Ipv4Icmp,
        _ => ProtoClass::Ipv4Other,
    }
}

/// Counts one packet at `hook`.
#[inline(always)]
pub fn count<F: Frame>(frame: &F, hook: u32) {
    let class = classify(frame);
    if let Some(stats) = NETD_PROTO_STATS.get_ptr_mut(hook) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and BPF programs
        // are not preempted by another program on the same CPU for the same
        // slot in a way that matters for statistics.
        unsafe { (*stats).add(class, u64::from(frame.len())) };
    }
}
