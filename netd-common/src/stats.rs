// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Per-hook traffic counters: what each netd program saw, by protocol.

/// The hooks netd counts at; the index into `NETD_PROTO_STATS`.
pub mod hook {
    /// TC ingress on an uplink.
    pub const UPLINK_TC: u32 = 0;
    /// XDP on an uplink.
    pub const UPLINK_XDP: u32 = 1;
    /// TC ingress on a container's host veth (packets from the container).
    pub const ENDPOINT_TC: u32 = 2;
    /// Number of hooks: the map's `max_entries`.
    pub const COUNT: u32 = 3;

    /// Stable names, in index order, for output and JSON.
    pub const NAMES: [&str; COUNT as usize] = ["uplink_tc", "uplink_xdp", "endpoint_tc"];
}

abi_type! {
    /// Packets a hook saw, by protocol, plus their bytes. One value per hook
    /// and CPU in the per-CPU array `NETD_PROTO_STATS`; userspace sums CPUs.
    pub struct ProtoStats {
        pub ipv4_tcp: u64,
        pub ipv4_udp: u64,
        pub ipv4_icmp: u64,
        /// IPv4 with any other protocol, and IPv4 too short to classify.
        pub ipv4_other: u64,
        pub ipv6: u64,
        pub arp: u64,
        /// Anything else, and frames too short for an Ethernet header.
        pub other: u64,
        /// Bytes of all the packets above, from the Ethernet header on.
        pub bytes: u64,
    }
    size = 64;
}

/// Which counter of [`ProtoStats`] a packet belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(Debug))]
pub enum ProtoClass {
    Ipv4Tcp,
    Ipv4Udp,
    Ipv4Icmp,
    Ipv4Other,
    Ipv6,
    Arp,
    Other,
}

impl ProtoStats {
    /// Adds one packet of `class` and `bytes` length.
    #[inline(always)]
    pub fn add(&mut self, class: ProtoClass, bytes: u64) {
        let counter = match class {
            ProtoClass::Ipv4Tcp => &mut self.ipv4_tcp,
            ProtoClass::Ipv4Udp => &mut self.ipv4_udp,
            ProtoClass::Ipv4Icmp => &mut self.ipv4_icmp,
            ProtoClass::Ipv4Other => &mut self.ipv4_other,
            ProtoClass::Ipv6 => &mut self.ipv6,
            ProtoClass::Arp => &mut self.arp,
            ProtoClass::Other => &mut self.other,
        };
        *counter += 1;
        self.bytes += bytes;
    }

    /// Sums two snapshots (userspace folds the per-CPU values with this).
    #[must_use]
    pub fn merged(self, other: Self) -> Self {
        Self {
            ipv4_tcp: self.ipv4_tcp + other.ipv4_tcp,
            ipv4_udp: self.ipv4_udp + other.ipv4_udp,
            ipv4_icmp: self.ipv4_icmp + other.ipv4_icmp,
            ipv4_other: self.ipv4_other + other.ipv4_other,
            ipv6: self.ipv6 + other.ipv6,
            arp: self.arp + other.arp,
            other: self.other + other.other,
            bytes: self.bytes + other.bytes,
        }
    }

    /// All packets counted, whatever their class.
    pub fn packets(&self) -> u64 {
        self.ipv4_tcp
            + self.ipv4_udp
            + self.ipv4_icmp
            + self.ipv4_other
            + self.ipv6
            + self.arp
            + self.other
    }
}
