// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! TC ingress on an uplink.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netd_common::{ct::CT_AT_UPLINK, stats::hook};

use super::{XDP_MARK, check_outside, classify, untranslated};
use crate::{
    ct, deliver, frag, icmp,
    nat::{self, Action},
    observe,
    parse::{self, Packet},
};

/// The container the XDP program already translated this packet for, read
/// from the metadata it left in front of the packet. Packet bytes cannot
/// forge it: the metadata area is not part of what was received.
#[inline(always)]
fn xdp_translated(ctx: &TcContext) -> Option<u32> {
    // SAFETY: the context's skb pointer is valid for the program's life.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + 8 > data {
        return None;
    }
    // SAFETY: in bounds of the metadata area (checked above).
    let mark = unsafe { (meta as *const [u32; 2]).read_unaligned() };
    (mark[0] == XDP_MARK).then_some(mark[1])
}

#[inline(always)]
pub fn try_uplink_tc(ctx: &TcContext) -> Result<i32, u32> {
    observe::count(ctx, hook::UPLINK_TC);
    if let Some(ifindex) = xdp_translated(ctx) {
        return deliver::redirect_into(ifindex, deliver::config().redirect);
    }
    let mut flow = match parse::forwardable(ctx) {
        None => return Ok(TC_ACT_OK),
        Some(Packet::Flow(flow)) => flow,
        Some(Packet::IcmpError(err)) => {
            check_outside(&err.outer)?;
            let Some(entry) = ct::lookup(&ct::key_of_quoted(&err.inner)) else {
                return untranslated(&err.outer).map(|_| TC_ACT_OK);
            };
            // SAFETY: a live map value, copied out.
            let action = unsafe { Action::of(&*entry) };
            if action.flags & CT_AT_UPLINK == 0 {
                return untranslated(&err.outer).map(|_| TC_ACT_OK);
            }
            icmp::tc_translate(ctx, &err, &action.rewrite)?;
            nat::tc_decrement_ttl(ctx, &err.outer)?;
            return deliver::to_endpoint(ctx, action.ifindex, action.dmac);
        }
    };
    if !frag::recall(&mut flow) {
        // A later fragment of a datagram netd did not translate.
        check_outside(&flow)?;
        return untranslated(&flow).map(|_| TC_ACT_OK);
    }
    let Some((entry, new_flow)) = classify(&flow)? else {
        return Ok(TC_ACT_OK);
    };
    let action = ct::account(entry, &flow, ctx.len(), new_flow);
    nat::tc_rewrite(ctx, &flow, &action.rewrite)?;
    nat::tc_decrement_ttl(ctx, &flow)?;
    frag::remember(&flow);
    deliver::to_endpoint(ctx, action.ifindex, action.dmac)
}
