// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Published ports. A mapping is one `-p` spec: (protocol, host address,
//! host port range) -> (container address, container port or range).
//!
//! Lookup is range-native: the LPM trie `NETD_PORTS` is keyed by
//! (protocol, host address, port) with the port matched as a prefix, so a
//! range is covered by the few prefixes that tile it (one for a single port
//! or an aligned power-of-two range, at most 30 for any range) and lookup
//! cost does not depend on how many ports are published. Each prefix points
//! at the mapping's slot in the array `NETD_MAPPINGS`, which holds the
//! translation; per-mapping counters live in `NETD_MAPPING_STATS` at the
//! same index.
//!
//! Conntrack entries remember the slot and the mapping's generation: when a
//! mapping is removed or replaced, the generation changes and every flow it
//! steered is re-evaluated on its next packet, so a UDP "flow" moves to the
//! new container at once instead of being blackholed.

/// IANA protocol numbers netd translates.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Bits of [`PortKey`] data before the port: protocol (8) and address (32).
pub const PORT_KEY_FIXED_BITS: u32 = 40;

abi_type! {
    /// The data part of an `NETD_PORTS` LPM key, matched most significant
    /// bit first: the protocol and host address exactly, the port as a
    /// prefix. A host address of 0.0.0.0 means "any local address".
    pub struct PortKey {
        pub proto: u8,
        pub addr_be: [u8; 4],
        pub port_be: [u8; 2],
        pub _pad: u8,
    }
    size = 8;
}

abi_type! {
    /// The value of an `NETD_PORTS` entry: the mapping's slot.
    pub struct PortValue {
        pub mapping: u32,
    }
    size = 4;
}

/// [`Mapping::flags`]: every host port maps to `ctr_port` (Docker's
/// `8080-8090:80`), instead of port-for-port.
pub const MAPPING_TO_ONE: u16 = 1;
/// [`Mapping::flags`]: the slot holds a live mapping.
pub const MAPPING_ACTIVE: u16 = 2;

abi_type! {
    /// One published mapping, at its slot in `NETD_MAPPINGS`.
    pub struct Mapping {
        /// The container's address.
        pub ctr_addr_be: [u8; 4],
        /// First container port (host order).
        pub ctr_port: u16,
        /// First host port of the range (host order).
        pub host_port: u16,
        /// Last host port of the range (host order).
        pub host_port_end: u16,
        pub flags: u16,
        /// Changes whenever the slot's mapping does.
        pub generation: u32,
        pub proto: u8,
        pub _pad: [u8; 3],
    }
    size = 20;
}

impl Mapping {
    #[inline(always)]
    pub fn is_active(&self) -> bool {
        self.flags & MAPPING_ACTIVE != 0
    }

    /// The container port for host port `port` (host order), which must be
    /// inside the mapping's range.
    #[inline(always)]
    pub fn ctr_port_for(&self, port: u16) -> u16 {
        if self.flags & MAPPING_TO_ONE != 0 {
            self.ctr_port
        } else {
            self.ctr_port
                .wrapping_add(port.wrapping_sub(self.host_port))
        }
    }
}

abi_type! {
    /// Traffic through one mapping: per CPU in `NETD_MAPPING_STATS`.
    pub struct MappingStats {
        /// Packets translated, both directions.
        pub packets: u64,
        pub bytes: u64,
        /// Flows (conntrack pairs) created.
        pub flows: u64,
    }
    size = 24;
}

impl MappingStats {
    #[must_use]
    pub fn merged(self, other: Self) -> Self {
        Self {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
            flows: self.flows + other.flows,
        }
    }
}

/// The prefixes that tile the port range `first..=last`: `(port,
/// prefix_len)` pairs with prefix lengths of 0..=16 bits of port.
pub fn range_prefixes(first: u16, last: u16) -> impl Iterator<Item = (u16, u32)> {
    let mut next = u32::from(first);
    let end = u32::from(last);
    core::iter::from_fn(move || {
        if next > end {
            return None;
        }
        // The largest aligned block starting at `next` that fits.
        let mut size = if next == 0 {
            1 << 16
        } else {
            1 << next.trailing_zeros()
        };
        while next + size - 1 > end {
            size >>= 1;
        }
        let prefix = (next as u16, 16 - size.trailing_zeros());
        next += size;
        Some(prefix)
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn covered(prefixes: &[(u16, u32)]) -> Vec<u16> {
        let mut ports: Vec<u16> = prefixes
            .iter()
            .flat_map(|&(port, len)| {
                let size = 1u32 << (16 - len);
                (u32::from(port)..u32::from(port) + size).map(|p| p as u16)
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    #[test]
    fn single_ports_and_aligned_ranges_are_one_prefix() {
        assert_eq!(range_prefixes(8080, 8080).collect::<Vec<_>>(), [(8080, 16)]);
        assert_eq!(range_prefixes(8080, 8087).collect::<Vec<_>>(), [(8080, 13)]);
        assert_eq!(range_prefixes(0, 65535).collect::<Vec<_>>(), [(0, 0)]);
    }

    #[test]
    fn any_range_is_tiled_exactly_by_at_most_30_prefixes() {
        for (first, last) in [
            (1, 65535),
            (8080, 8090),
            (1000, 1999),
            (32768, 60999),
            (65535, 65535),
            (3, 4),
        ] {
            let prefixes: Vec<_> = range_prefixes(first, last).collect();
            assert!(prefixes.len() <= 30, "{first}-{last}: {}", prefixes.len());
            let expected: Vec<u16> = (first..=last).collect();
            assert_eq!(covered(&prefixes), expected, "{first}-{last}");
        }
    }

    #[test]
    fn container_port_follows_the_range() {
        let mut m = Mapping {
            ctr_port: 80,
            host_port: 8080,
            host_port_end: 8090,
            flags: MAPPING_ACTIVE,
            ..Mapping::default()
        };
        assert_eq!(m.ctr_port_for(8085), 85);
        m.flags |= MAPPING_TO_ONE;
        assert_eq!(m.ctr_port_for(8085), 80);
    }
}

abi_type! {
    /// A socket that host-local translation sent to a container, and the
    /// container's address it sees (`NETD_SOCK_REVNAT` key).
    pub struct SockRevKey {
        /// `bpf_get_socket_cookie`.
        pub cookie: u64,
        pub addr_be: [u8; 4],
        pub port_be: [u8; 2],
        pub _pad: [u8; 2],
    }
    size = 16;
}

abi_type! {
    /// What that socket addressed, to show it back (`getpeername`,
    /// `recvmsg`): an IPv4 address (`family` 4) in the first four bytes, or
    /// an IPv6 one (`family` 6).
    pub struct SockRevValue {
        pub addr_be: [u8; 16],
        pub port_be: [u8; 2],
        pub family: u8,
        pub _pad: [u8; 5],
    }
    size = 24;
}
