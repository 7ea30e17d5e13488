// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! TC ingress on a container's host veth: packets leaving the container.
//!
//! In order: anything not sent from the container's own MAC and address is
//! dropped (anti-spoofing); packets of tracked flows are translated and
//! delivered (replies of published ports routed straight out, masqueraded
//! flows out, hairpin flows into their container); ICMP errors about
//! tracked flows are translated with them. A new flow meets its network's
//! policy: to another container of the network (unless `enable_icc=false`)
//! it goes on over the bridge; to another network's container it is
//! dropped (isolation); to a published port of the host it is hairpinned,
//! whatever network the target is on; to the host itself it goes on; to
//! the outside it is dropped on an internal network, else masqueraded
//! (unless masquerade is off).

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netd_common::{
    ct::{CT_AT_UPLINK, CT_TO_ENDPOINT},
    drop,
    endpoint::{DEFAULT_NETWORK, NET_INTERNAL, NET_NO_ICC, NET_NO_MASQUERADE, VethInfo},
    stats::hook,
};

use crate::{
    ct, deliver, frag, icmp,
    maps::{NETD_ENDPOINTS, NETD_LOCAL_ADDRS, NETD_UPLINKS, NETD_VETHS},
    nat::{self, Action},
    observe,
    packet::read,
    parse::{self, Flow, PROTO_ICMP, Packet},
    ports, snat,
};

/// Drops what the container may not send: a source MAC other than its
/// own (any frame), a source address other than its own (IPv4). Returns
/// the index of the container's network.
#[inline(always)]
fn check_source(ctx: &TcContext) -> Result<u16, u32> {
    // SAFETY: the context's skb pointer is valid for the program's life.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // A veth netd does not know (not attached yet, or being detached): its
    // packets are not netd's to police.
    let Some(veth) = NETD_VETHS.get_ptr(ifindex) else {
        return Ok(DEFAULT_NETWORK);
    };
    // SAFETY: a live map value, copied out.
    let veth = unsafe { *veth };
    check_sender(ctx, &veth)?;
    Ok(veth.network)
}

/// Drops a frame whose source MAC is not `device`'s, or an IPv4 packet
/// whose source address is not its address; returns the frame's Ethernet
/// type. The check of every container's frames, on a veth or a LAN device.
#[inline(always)]
pub fn check_sender(ctx: &TcContext, device: &VethInfo) -> Result<u16, u32> {
    let src_mac: [u8; 6] = read(ctx, 6).ok_or(drop::SPOOFED)?;
    if src_mac != device.mac {
        return Err(drop::SPOOFED);
    }
    let ether_type = u16::from_be_bytes(read(ctx, 12).ok_or(drop::SPOOFED)?);
    if ether_type == parse::ETH_P_IP {
        let saddr: [u8; 4] = read(ctx, parse::ETH_HLEN + parse::IP_SADDR).ok_or(drop::SPOOFED)?;
        if saddr != device.addr_be {
            return Err(drop::SPOOFED);
        }
    }
    Ok(ether_type)
}

/// Sends a translated packet on: into a container, or out by the FIB.
#[inline(always)]
fn deliver(ctx: &TcContext, flow: &Flow, action: &Action) -> Result<i32, u32> {
    if action.flags & CT_TO_ENDPOINT != 0 {
        deliver::to_endpoint(ctx, action.ifindex, action.dmac)
    } else {
        deliver::by_fib(ctx, &action.rewrite.applied_to(flow))
    }
}

#[inline(always)]
pub fn try_endpoint_tc(ctx: &TcContext) -> Result<i32, u32> {
    observe::count(ctx, hook::ENDPOINT_TC);
    let network = check_source(ctx)?;
    let Some(packet) = parse::forwardable(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let mut flow = match packet {
        Packet::Flow(flow) => flow,
        Packet::IcmpError(err) => {
            let Some(entry) = ct::lookup(&ct::key_of_quoted(&err.inner)) else {
                return policy_only(&err.outer, network);
            };
            // SAFETY: a live map value, copied out.
            let action = unsafe { Action::of(&*entry) };
            if action.flags & CT_AT_UPLINK != 0 {
                return Ok(TC_ACT_OK);
            }
            icmp::tc_translate(ctx, &err, &action.rewrite)?;
            nat::tc_decrement_ttl(ctx, &err.outer)?;
            return deliver(ctx, &err.outer, &action);
        }
    };
    if !frag::recall(&mut flow) {
        // A later fragment of a datagram netd did not translate.
        return policy_only(&flow, network);
    }
    let key = ct::key_of(&flow);
    let (entry, new_flow) = match ct::lookup(&key) {
        // SAFETY: a live map value.
        Some(entry) if unsafe { (*entry).flags } & CT_AT_UPLINK == 0 => (entry, false),
        Some(_) => return Ok(TC_ACT_OK),
        None => match new_flow(ctx, &flow, &key, network)? {
            Some(entry) => (entry, true),
            None => return Ok(TC_ACT_OK),
        },
    };
    let action = ct::account(entry, &flow, ctx.len(), new_flow);
    nat::tc_rewrite(ctx, &flow, &action.rewrite)?;
    nat::tc_decrement_ttl(ctx, &flow)?;
    frag::remember(&flow);
    deliver(ctx, &flow, &action)
}

/// The policy of network `network` for an untranslated packet from one of
/// its containers: `Ok` to let it go on, or the drop reason. Another
/// network's containers are out of reach (their gateways are the host's
/// addresses, which are not).
#[inline(always)]
fn policy_only(flow: &Flow, network: u16) -> Result<i32, u32> {
    let net = deliver::network(network);
    if deliver::in_network(&net, flow.daddr) {
        if net.flags & NET_NO_ICC != 0 && flow.daddr != net.gateway_be {
            return Err(drop::ICC_DENIED);
        }
        return Ok(TC_ACT_OK);
    }
    let local = NETD_LOCAL_ADDRS.get_ptr(flow.daddr).is_some();
    if !local && deliver::network_of_addr(flow.daddr).is_some() {
        return Err(drop::ISOLATED);
    }
    if net.flags & NET_INTERNAL != 0 && !local {
        return Err(drop::INTERNAL_NETWORK);
    }
    Ok(TC_ACT_OK)
}

/// A new flow from a container: the conntrack entry that translates it
/// (hairpin or masquerade), `None` to let it go on untranslated, or the
/// drop reason.
#[inline(always)]
fn new_flow(
    ctx: &TcContext,
    flow: &Flow,
    key: &netd_common::ct::CtKey,
    network: u16,
) -> Result<Option<*mut netd_common::ct::CtEntry>, u32> {
    policy_only(flow, network)?;
    let net = deliver::network(network);
    if deliver::in_network(&net, flow.daddr) && flow.daddr != net.gateway_be {
        return Ok(None);
    }
    let cfg = deliver::config();
    // Broadcast and multicast (DHCP, mDNS) are the link's and the host's,
    // 0.0.0.0/8 and loopback destinations are martians: none is a peer to
    // masquerade to (the FIB would hand them to the default route).
    if !deliver::unicast_peer(flow.daddr) {
        return Ok(None);
    }
    if !crate::ct::may_start(flow) {
        return Ok(None);
    }
    let src = NETD_ENDPOINTS.get_ptr(flow.saddr);
    let Some(src) = src else {
        return Ok(None);
    };
    // SAFETY: a live map value, copied out.
    let src = unsafe { *src };
    let ports = (cfg.nat_port_min, cfg.nat_port_max);
    if NETD_LOCAL_ADDRS.get_ptr(flow.daddr).is_some() || flow.daddr == net.gateway_be {
        // To the host: a published port is hairpinned, anything else is
        // the host's. The target may be on another network: it sees the
        // flow come from its own gateway, and answers there.
        if flow.proto == PROTO_ICMP {
            return Ok(None);
        }
        let Some((slot, mapping)) = ports::lookup(flow) else {
            return Ok(None);
        };
        let endpoint = NETD_ENDPOINTS
            .get_ptr(mapping.ctr_addr_be)
            .ok_or(drop::NO_ENDPOINT)?;
        // SAFETY: a live map value, copied out.
        let endpoint = unsafe { *endpoint };
        let source = snat::NatSource {
            addr: deliver::network(endpoint.network).gateway_be,
            ports,
        };
        let target = snat::HairpinTarget {
            slot,
            mapping,
            endpoint,
        };
        return snat::hairpin(ctx, flow, key, &src, &target, &source).map(Some);
    }
    // To the outside, by the uplink the FIB picks, behind its address (or
    // the configured masquerade address), or routed as it is when
    // masquerade is off.
    let Some(egress) = deliver::egress(ctx, flow) else {
        return Ok(None);
    };
    if net.flags & NET_NO_MASQUERADE != 0 {
        if NETD_UPLINKS.get_ptr(egress).is_none() {
            return Ok(None);
        }
        return snat::routed(flow, key, &src).map(Some);
    }
    let nat_addr = if cfg.masquerade_be != [0; 4] {
        cfg.masquerade_be
    } else {
        let Some(uplink) = NETD_UPLINKS.get_ptr(egress) else {
            // Not leaving by an uplink: the kernel's to route.
            return Ok(None);
        };
        // SAFETY: a live map value.
        unsafe { (*uplink).addr_be }
    };
    let source = snat::NatSource {
        addr: nat_addr,
        ports,
    };
    snat::masquerade(ctx, flow, key, &src, &source).map(Some)
}
