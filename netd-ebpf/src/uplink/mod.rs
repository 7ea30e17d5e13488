// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Packets arriving from an uplink: published ports (DNAT into the
//! container), replies of masqueraded flows, ICMP errors about either, and
//! the rules that keep containers unreachable otherwise. Shared by the TC
//! and XDP hooks.

pub mod tc;
pub mod xdp;

use netd_common::{
    ct::{CT_AT_UPLINK, CT_KIND_PUBLISHED, CtEntry},
    drop,
    endpoint::{NET_INTERNAL, XDP_MARK},
};

use crate::{
    ct::{self, NewFlow},
    deliver,
    maps::{NETD_ENDPOINTS, NETD_LOCAL_ADDRS},
    parse::Flow,
    ports,
};

/// The checks every packet from outside passes first: nothing addressed to
/// loopback (never legitimate on an uplink; bindings to 127.0.0.1 must
/// never answer there), nothing claiming a source inside a container
/// network (forged: they live behind their bridges).
#[inline(always)]
fn check_outside(flow: &Flow) -> Result<(), u32> {
    if flow.daddr[0] == 127 {
        return Err(drop::MARTIAN_LOOPBACK);
    }
    if deliver::network_of_addr(flow.saddr).is_some() {
        return Err(drop::SOURCE_IN_NETWORK);
    }
    Ok(())
}

/// What happens to a packet from outside that no conntrack entry
/// translates: a container's address is not reachable (nor is anything of
/// an internal network); the rest is the kernel's.
#[inline(always)]
fn untranslated(flow: &Flow) -> Result<Option<(*mut CtEntry, bool)>, u32> {
    if let Some(index) = deliver::network_of_addr(flow.daddr) {
        return Err(if deliver::network(index).flags & NET_INTERNAL != 0 {
            drop::INTERNAL_NETWORK
        } else {
            drop::DIRECT_TO_CONTAINER
        });
    }
    Ok(None)
}

/// The conntrack entry that translates `flow` (and whether it was just
/// created), `None` for a packet netd leaves to the kernel, or the drop
/// reason.
#[inline(always)]
pub fn classify(flow: &Flow) -> Result<Option<(*mut CtEntry, bool)>, u32> {
    check_outside(flow)?;
    let key = ct::key_of(flow);
    if let Some(entry) = ct::lookup(&key) {
        // SAFETY: a live map value.
        if unsafe { (*entry).flags } & CT_AT_UPLINK != 0 {
            return Ok(Some((entry, false)));
        }
        return untranslated(flow);
    }
    // A new flow needs a source the kernel would route from: not a
    // martian (see `deliver::unicast_peer`), nor one of the host's own
    // addresses (`fib_validate_source` refuses those unless accept_local).
    // The kernel drops such a packet, and it must not leave a flow behind
    // here. Checked on new flows only: tracked flows never have such peers.
    if !deliver::unicast_peer(flow.saddr) || NETD_LOCAL_ADDRS.get_ptr(flow.saddr).is_some() {
        return untranslated(flow);
    }
    if !ct::may_start(flow) {
        return untranslated(flow);
    }
    let Some((slot, mapping)) = ports::lookup(flow) else {
        return untranslated(flow);
    };
    let endpoint = NETD_ENDPOINTS
        .get_ptr(mapping.ctr_addr_be)
        .ok_or(drop::NO_ENDPOINT)?;
    // SAFETY: a live map value, copied out.
    let endpoint = unsafe { *endpoint };
    let new = NewFlow {
        to_addr: mapping.ctr_addr_be,
        to_port: mapping
            .ctr_port_for(u16::from_be_bytes(flow.dport))
            .to_be_bytes(),
        ifindex: endpoint.ifindex,
        dmac: endpoint.mac,
        mapping: slot,
        generation: mapping.generation,
        kind: CT_KIND_PUBLISHED,
    };
    ct::create(flow, &key, &new).map(|entry| Some((entry, true)))
}
