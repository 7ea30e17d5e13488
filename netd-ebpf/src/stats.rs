// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Counting: drops by hook and reason, flows created by kind, traffic per
//! mapping.

use netd_common::drop;

use crate::maps::{NETD_DROPS, NETD_FLOWS_CREATED, NETD_MAPPING_STATS};

/// Counts one drop of reason `code` (a `netd_common::drop` code) at `hook`
/// (a `netd_common::drop::hook` row).
#[inline(always)]
pub fn count_drop(hook: u32, code: u32) {
    if let Some(counter) = NETD_DROPS.get_ptr_mut(drop::slot(hook, code)) {
        // SAFETY: this CPU's slot; programs on one CPU do not interleave.
        unsafe { *counter += 1 };
    }
}

/// Counts one translated packet of `bytes` for mapping slot `mapping`, and
/// a new flow if `new_flow`.
#[inline(always)]
pub fn count_mapping(mapping: u32, bytes: u32, new_flow: bool) {
    if let Some(stats) = NETD_MAPPING_STATS.get_ptr_mut(mapping) {
        // SAFETY: as above.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += u64::from(bytes);
            if new_flow {
                (*stats).flows += 1;
            }
        }
    }
}

/// Counts one flow created, of conntrack kind `kind` (`CT_KIND_*`).
#[inline(always)]
pub fn count_flow_created(kind: u8) {
    if let Some(counter) = NETD_FLOWS_CREATED.get_ptr_mut(u32::from(kind)) {
        // SAFETY: as above.
        unsafe { *counter += 1 };
    }
}
