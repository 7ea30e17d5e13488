// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! TC ingress on a container's host veth: packets leaving the container.
//! Replies of translated flows get their source rewritten back and are
//! routed straight out (FIB lookup and redirect), skipping the bridge and
//! the host's netfilter; everything else goes on to the bridge untouched.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netd_common::{
    ct::{CT_AT_UPLINK, CT_TO_ENDPOINT},
    stats::hook,
};

use crate::{ct, deliver, nat, observe, parse};

#[inline(always)]
pub fn try_endpoint_tc(ctx: &TcContext) -> Result<i32, u32> {
    observe::count(ctx, hook::ENDPOINT_TC);
    let Some(flow) = parse::forwardable(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let Some(entry) = ct::lookup(&ct::key_of(&flow)) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: a live map value.
    if unsafe { (*entry).flags } & CT_AT_UPLINK != 0 {
        return Ok(TC_ACT_OK);
    }
    let action = ct::account(entry, &flow, ctx.len(), false);
    nat::tc_rewrite(ctx, &flow, &action.rewrite)?;
    nat::tc_decrement_ttl(ctx, &flow)?;
    if action.flags & CT_TO_ENDPOINT != 0 {
        deliver::to_endpoint(ctx, action.ifindex, action.dmac)
    } else {
        deliver::by_fib(ctx, &action.rewrite.applied_to(&flow))
    }
}
