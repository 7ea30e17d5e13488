// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Packets arriving from an uplink: published ports (DNAT into the
//! container), replies to translated flows, and the rules that keep
//! containers unreachable otherwise. Shared by the TC and XDP hooks.

pub mod tc;
pub mod xdp;

use netd_common::{
    ct::{CT_AT_UPLINK, CT_KIND_PUBLISHED, CtEntry},
    drop,
};

use crate::{
    ct::{self, NewFlow},
    deliver,
    maps::NETD_ENDPOINTS,
    parse::Flow,
    ports,
};

/// The metadata mark XDP leaves for TC: "netd" in ASCII.
const XDP_MARK: u32 = 0x6e65_7464;

/// The conntrack entry that translates `flow` (and whether it was just
/// created), `None` for a packet netd leaves to the kernel, or the drop
/// reason.
#[inline(always)]
pub fn classify(flow: &Flow) -> Result<Option<(*mut CtEntry, bool)>, u32> {
    // 127.0.0.0/8 never arrives legitimately on an uplink, and bindings to
    // 127.0.0.1 must never answer there.
    if flow.daddr[0] == 127 {
        return Err(drop::MARTIAN_LOOPBACK);
    }
    let cfg = deliver::config();
    let mask = u32::from_ne_bytes(cfg.mask_be);
    let subnet = u32::from_ne_bytes(cfg.subnet_be);
    let in_network = |addr: [u8; 4]| mask != 0 && u32::from_ne_bytes(addr) & mask == subnet;
    if in_network(flow.saddr) {
        return Err(drop::SOURCE_IN_NETWORK);
    }
    let key = ct::key_of(flow);
    if let Some(entry) = ct::lookup(&key) {
        // SAFETY: a live map value.
        if unsafe { (*entry).flags } & CT_AT_UPLINK != 0 {
            return Ok(Some((entry, false)));
        }
    } else if let Some((slot, mapping)) = ports::lookup(flow) {
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
        return ct::create(flow, &key, &new).map(|entry| Some((entry, true)));
    }
    // Not translated: a container's address is not reachable from outside.
    if in_network(flow.daddr) {
        return Err(drop::DIRECT_TO_CONTAINER);
    }
    Ok(None)
}
