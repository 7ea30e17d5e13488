// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Fragmented datagrams. netfilter reassembles them before it translates;
//! netd translates each fragment as it comes, as Cilium does: the first
//! fragment carries the transport header, is translated like any packet
//! (the L4 checksum, which covers the whole datagram, is adjusted by the
//! same difference), and leaves its ports in `NETD_FRAGS` under the
//! datagram's identity. A later fragment recalls them, finds its flow's
//! conntrack entry with them, and has its addresses rewritten (it has no
//! transport header to rewrite). A later fragment that arrives before its
//! first, or whose first was not translated, is not translated: it meets
//! the policy an untranslated packet of its addresses meets (from outside
//! to a container's address: dropped, as a whole packet would be), else it
//! goes on to the kernel.
//!
//! An entry is good for one datagram: a first fragment with the same
//! identity (the 16-bit identification wraps) removes it before it is
//! translated or not, and an entry older than the kernel's reassembly
//! timeout is ignored.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use netd_common::ct::{FRAG_TIMEOUT_NS, FragKey, FragPorts};

use crate::{
    maps::NETD_FRAGS,
    parse::{FRAG_FIRST, FRAG_LATER, Flow},
};

#[inline(always)]
fn key_of(flow: &Flow) -> FragKey {
    FragKey {
        saddr_be: flow.saddr,
        daddr_be: flow.daddr,
        id_be: flow.ip_id,
        proto: flow.proto,
        _pad: 0,
    }
}

/// Fills in the ports of a later fragment from its datagram's first;
/// whether they are known. Other packets have theirs already; a first
/// fragment starts a datagram, so what an earlier one of the same identity
/// left is forgotten.
#[inline(always)]
pub fn recall(flow: &mut Flow) -> bool {
    match flow.frag {
        FRAG_LATER => {}
        FRAG_FIRST => {
            let _ = NETD_FRAGS.remove(key_of(flow));
            return true;
        }
        _ => return true,
    }
    let key = key_of(flow);
    let Some(ports) = NETD_FRAGS.get_ptr(key) else {
        return false;
    };
    // SAFETY: a live map value, copied out.
    let ports = unsafe { *ports };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(ports.created_ns) > FRAG_TIMEOUT_NS {
        let _ = NETD_FRAGS.remove(key);
        return false;
    }
    flow.sport = ports.sport_be;
    flow.dport = ports.dport_be;
    true
}

/// Records the ports of a translated first fragment for the rest of its
/// datagram. Best effort: if the map refuses, the later fragments go on
/// untranslated, as before netd knew fragments.
#[inline(always)]
pub fn remember(flow: &Flow) {
    if flow.frag != FRAG_FIRST {
        return;
    }
    let ports = FragPorts {
        sport_be: flow.sport,
        dport_be: flow.dport,
        _pad: [0; 4],
        // SAFETY: a helper without arguments.
        created_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = NETD_FRAGS.insert(key_of(flow), ports, 0);
}
