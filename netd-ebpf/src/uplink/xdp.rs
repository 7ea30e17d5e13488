// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! XDP on an uplink: the same translation as TC ingress, at the driver
//! hook. The packet is then passed up with a mark in its metadata that tells
//! TC ingress where to deliver it; anything XDP does not translate (ICMP
//! errors, fragments) is passed to TC untouched.

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS, helpers::generated::bpf_xdp_adjust_meta, programs::XdpContext,
};
use netd_common::{drop, stats::hook};

use super::{XDP_MARK, classify};
use crate::{ct, deliver, nat, observe, packet::Frame, parse};

/// Leaves `[XDP_MARK, ifindex]` in the metadata area in front of the packet.
#[inline(always)]
fn mark(ctx: &XdpContext, ifindex: u32) -> Result<(), u32> {
    // SAFETY: the helper checks the room itself.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -8) } != 0 {
        return Err(drop::REDIRECT);
    }
    let meta = ctx.metadata();
    if meta + 8 > ctx.data() {
        return Err(drop::REDIRECT);
    }
    // SAFETY: in bounds of the metadata area (checked above).
    unsafe { (meta as *mut [u32; 2]).write_unaligned([XDP_MARK, ifindex]) };
    Ok(())
}

#[inline(always)]
pub fn try_uplink_xdp(ctx: &XdpContext) -> Result<u32, u32> {
    observe::count(ctx, hook::UPLINK_XDP);
    // ICMP errors and fragments are TC's to translate.
    let Some(parse::Packet::Flow(flow)) = parse::forwardable(ctx) else {
        return Ok(XDP_PASS);
    };
    if flow.frag != parse::FRAG_NONE {
        return Ok(XDP_PASS);
    }
    let Some((entry, new_flow)) = classify(&flow)? else {
        return Ok(XDP_PASS);
    };
    let action = ct::account(entry, &flow, ctx.len(), new_flow);
    nat::xdp_rewrite(ctx, &flow, &action.rewrite)?;
    nat::xdp_decrement_ttl(ctx, &flow)?;
    nat::xdp_set_macs(ctx, action.dmac, deliver::gateway_mac_for(action.ifindex))?;
    mark(ctx, action.ifindex)?;
    Ok(XDP_PASS)
}
