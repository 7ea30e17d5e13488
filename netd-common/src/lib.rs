// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The ABI between netd's eBPF programs and its userspace.
//!
//! Every type here is a map key or value, or a code stored in one, and is read
//! by both sides (and by `bpftool map dump`). The rules that keep it an ABI:
//!
//! - `#[repr(C)]`, no implicit padding: holes are explicit `_pad` fields, and
//!   `bytemuck::Pod` (derived under the `user` feature) refuses to compile a
//!   type with padding;
//! - a compile-time size assertion per type, so a layout change is a
//!   deliberate edit of this file;
//! - no Rust enums, `bool` or `Option` in keys or values: codes are plain
//!   integers with `TryFrom` conversions for userspace;
//! - addresses and ports are in network byte order where their names end in
//!   `_be`, and in host byte order everywhere else.
#![no_std]

/// Declares an ABI type: `#[repr(C)]`, `Copy`, `Pod` for userspace, and a
/// compile-time check of its size.
macro_rules! abi_type {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
        size = $size:expr;
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        #[cfg_attr(
            feature = "user",
            derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable)
        )]
        pub struct $name { $($body)* }

        const _: () = assert!(core::mem::size_of::<$name>() == $size);

        // SAFETY: `repr(C)`, only integer fields and no padding (checked by
        // the `bytemuck::Pod` derive above).
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $name {}
    };
}

pub mod csum;
pub mod ct;
pub mod drop;
pub mod endpoint;
pub mod monitor;
pub mod ports;
pub mod stats;

/// The names of netd's maps, as the eBPF object declares them and as they
/// are pinned (`<bpffs>/<NAME>`).
pub mod map_names {
    pub const PROTO_STATS: &str = "NETD_PROTO_STATS";
    pub const DROPS: &str = "NETD_DROPS";
    pub const PORTS: &str = "NETD_PORTS";
    pub const MAPPINGS: &str = "NETD_MAPPINGS";
    pub const MAPPING_STATS: &str = "NETD_MAPPING_STATS";
    pub const CT: &str = "NETD_CT";
    pub const ENDPOINTS: &str = "NETD_ENDPOINTS";
    pub const LOCAL_ADDRS: &str = "NETD_LOCAL_ADDRS";
    pub const CONFIG: &str = "NETD_CONFIG";
    pub const VETHS: &str = "NETD_VETHS";
    pub const UPLINKS: &str = "NETD_UPLINKS";
    pub const SOCK_REVNAT: &str = "NETD_SOCK_REVNAT";
    pub const FRAGS: &str = "NETD_FRAGS";
    pub const NETWORKS: &str = "NETD_NETWORKS";
    pub const SUBNETS: &str = "NETD_SUBNETS";
    pub const ENDPOINT_STATS: &str = "NETD_ENDPOINT_STATS";
    pub const FLOWS_CREATED: &str = "NETD_FLOWS_CREATED";
    pub const MONITOR: &str = "NETD_MONITOR";
    pub const MONITOR_BUCKETS: &str = "NETD_MONITOR_BUCKETS";
    pub const MONITOR_EVENTS: &str = "NETD_MONITOR_EVENTS";

    /// Every map that is pinned.
    pub const PINNED: [&str; 20] = [
        PROTO_STATS,
        DROPS,
        PORTS,
        MAPPINGS,
        MAPPING_STATS,
        CT,
        ENDPOINTS,
        LOCAL_ADDRS,
        CONFIG,
        VETHS,
        UPLINKS,
        SOCK_REVNAT,
        FRAGS,
        NETWORKS,
        SUBNETS,
        ENDPOINT_STATS,
        FLOWS_CREATED,
        MONITOR,
        MONITOR_BUCKETS,
        MONITOR_EVENTS,
    ];
}
