// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What netd left in the kernel, seen from outside as an operator sees it:
//! its pinned maps (through bpftool) and the programs attached to an
//! interface.

use std::{path::Path, process::Command};

use aya::programs::{SchedClassifier, tc::TcAttachType};

use crate::netns::Netns;

/// A pinned map: its kernel ID (the same ID means the same kernel object,
/// which a restart or an upgrade must keep) and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedMap {
    pub id: u64,
    pub max_entries: u64,
}

/// The map pinned at `path`, as `bpftool map show pinned` reports it.
pub fn pinned_map(path: &Path) -> PinnedMap {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool");
    let map: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool json for {}: {e}", path.display()));
    let field = |key: &str| {
        map[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{} has no {key}: {map}", path.display()))
    };
    PinnedMap {
        id: field("id"),
        max_entries: field("max_entries"),
    }
}

/// The IDs of the programs attached with TCX to `dev` in `ns`, ingress
/// then egress (asked of the kernel: this bpftool predates TCX).
pub fn tcx_programs(ns: &Netns, dev: &str) -> Vec<u32> {
    let _inside = ns.enter();
    [TcAttachType::Ingress, TcAttachType::Egress]
        .into_iter()
        .flat_map(|direction| {
            SchedClassifier::query_tcx(dev, direction)
                .map(|(_, programs)| programs.iter().map(|p| p.id()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}
