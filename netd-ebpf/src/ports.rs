// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Published-port lookup: the most specific binding wins (the packet's
//! destination address, then "any local address").

use aya_ebpf::maps::lpm_trie::Key;
use netd_common::ports::{Mapping, PORT_KEY_FIXED_BITS, PortKey};

use crate::{
    maps::{NETD_LOCAL_ADDRS, NETD_MAPPINGS, NETD_PORTS},
    parse::Flow,
};

/// The mapping slot and its translation for a packet to `flow.daddr`,
/// `flow.dport`, if that port is published on that address or on any
/// local address ("any address" bindings answer only on the host's own
/// addresses, as Docker's `--dst-type LOCAL` rule does).
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<(u32, Mapping)> {
    let local = NETD_LOCAL_ADDRS.get_ptr(flow.daddr).is_some();
    lookup_at(flow.proto, flow.daddr, flow.dport, local)
}

/// The mapping for `proto` `addr:port`: bound to `addr`, or (if `local`:
/// `addr` is the host's) to any address.
#[inline(always)]
pub fn lookup_at(
    proto: u8,
    addr: [u8; 4],
    port_be: [u8; 2],
    local: bool,
) -> Option<(u32, Mapping)> {
    let mut key = Key::new(
        PORT_KEY_FIXED_BITS + 16,
        PortKey {
            proto,
            addr_be: addr,
            port_be,
            _pad: 0,
        },
    );
    let slot = match NETD_PORTS.get(&key) {
        Some(value) => value.mapping,
        None if local => {
            key.data.addr_be = [0; 4];
            NETD_PORTS.get(&key)?.mapping
        }
        None => return None,
    };
    let mapping = *NETD_MAPPINGS.get(slot)?;
    mapping.is_active().then_some((slot, mapping))
}

/// Whether `proto` port `port_be` is published on `addr` (or on any
/// address): masquerade must not take it.
#[inline(always)]
pub fn published(proto: u8, addr: [u8; 4], port_be: [u8; 2]) -> bool {
    let mut key = Key::new(
        PORT_KEY_FIXED_BITS + 16,
        PortKey {
            proto,
            addr_be: addr,
            port_be,
            _pad: 0,
        },
    );
    if NETD_PORTS.get(&key).is_some() {
        return true;
    }
    key.data.addr_be = [0; 4];
    NETD_PORTS.get(&key).is_some()
}

/// Whether `(slot, generation)` still names a live mapping.
#[inline(always)]
pub fn still_valid(slot: u32, generation: u32) -> bool {
    NETD_MAPPINGS
        .get(slot)
        .is_some_and(|m| m.is_active() && m.generation == generation)
}
