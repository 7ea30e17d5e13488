// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Containers the datapath can deliver to, and the network's settings.

abi_type! {
    /// An attached container, by its address in `NETD_ENDPOINTS`.
    pub struct EndpointInfo {
        /// The host end of its veth (where its packets enter the host, and
        /// whose peer `bpf_redirect_peer` delivers into).
        pub ifindex: u32,
        /// Its interface's MAC.
        pub mac: [u8; 6],
        /// Its network's index in `NETD_NETWORKS`. Was padding before
        /// netd had many networks: endpoints pinned by an older netd read
        /// as the default network's (0).
        pub network: u16,
    }
    size = 12;
}

/// How many networks the datapath holds (`NETD_NETWORKS`' size).
pub const MAX_NETWORKS: u32 = 4096;

/// The default network's index: the agent's own network, the only one an
/// older netd knew.
pub const DEFAULT_NETWORK: u16 = 0;

abi_type! {
    /// One network's settings, in the array `NETD_NETWORKS` at the
    /// network's index.
    pub struct NetworkInfo {
        /// The network's subnet and mask (network order).
        pub subnet_be: [u8; 4],
        pub mask_be: [u8; 4],
        /// The gateway's address: hairpin flows to this network's
        /// containers come from it.
        pub gateway_be: [u8; 4],
        /// The bridge's MAC: the source MAC of packets netd delivers into
        /// this network's containers, as if the gateway had routed them.
        pub gateway_mac: [u8; 6],
        pub _pad: [u8; 2],
        /// `NET_NO_ICC`, `NET_NO_MASQUERADE`, `NET_INTERNAL`.
        pub flags: u32,
    }
    size = 24;
}

/// [`DatapathConfig::redirect`]: deliver into containers with
/// `bpf_redirect_peer` (kernel >= 5.10), straight into the container's
/// namespace, skipping the bridge and the host's backlog queue.
pub const REDIRECT_PEER: u32 = 0;
/// [`DatapathConfig::redirect`]: transmit on the container's host veth with
/// `bpf_redirect` (any kernel); the veth hands the packet to its peer.
pub const REDIRECT_EGRESS: u32 = 1;

/// The first word of the 8 bytes of XDP metadata `netd_uplink_xdp` leaves
/// in front of a packet it translated ("netd" in ASCII, host byte order);
/// the second is the container's host veth, for TC ingress to redirect to.
pub const XDP_MARK: u32 = 0x6e65_7464;

/// [`DatapathConfig::flags`]: containers may not reach each other
/// (`com.docker.network.bridge.enable_icc=false`).
pub const NET_NO_ICC: u32 = 1;
/// [`DatapathConfig::flags`]: no masquerade for traffic leaving the
/// network (`com.docker.network.bridge.enable_ip_masquerade=false`).
pub const NET_NO_MASQUERADE: u32 = 2;
/// [`DatapathConfig::flags`]: an internal network: no traffic to or from
/// outside at all.
pub const NET_INTERNAL: u32 = 4;
/// [`DatapathConfig::flags`]: refuse host processes binding a published
/// port (EADDRINUSE) instead of letting them shadow it (`--protect-ports`).
pub const NET_PROTECT_PORTS: u32 = 8;

abi_type! {
    /// The datapath's settings, the only entry of the array `NETD_CONFIG`.
    /// The fields of the default network (subnet, mask, gateway, its MAC
    /// and `NET_*` flags but `NET_PROTECT_PORTS`) are kept for the programs
    /// of an older netd, which run until the agent swaps its own in; this
    /// netd's programs read every network from `NETD_NETWORKS`.
    pub struct DatapathConfig {
        /// The default network's subnet and mask (network order).
        pub subnet_be: [u8; 4],
        pub mask_be: [u8; 4],
        /// The bridge's MAC: the source MAC of packets netd delivers into
        /// containers, as if the gateway had routed them.
        pub gateway_mac: [u8; 6],
        pub _pad: [u8; 2],
        /// `REDIRECT_*`.
        pub redirect: u32,
        /// The gateway's address: hairpin flows come from it.
        pub gateway_be: [u8; 4],
        /// The masquerade source address; 0.0.0.0: the address of the
        /// uplink the flow leaves by (`NETD_UPLINKS`).
        pub masquerade_be: [u8; 4],
        /// Masquerade source ports (host order, inclusive).
        pub nat_port_min: u16,
        pub nat_port_max: u16,
        /// `NET_*`.
        pub flags: u32,
        pub _pad2: u32,
        /// The agent's network namespace (`SO_NETNS_COOKIE`): the socket
        /// hooks translate only sockets of this namespace.
        pub netns_cookie: u64,
    }
    size = 48;
}

abi_type! {
    /// What a container's host veth (or LAN endpoint device) may send, in
    /// `NETD_VETHS` by the device's ifindex: anything else is spoofed.
    pub struct VethInfo {
        pub addr_be: [u8; 4],
        pub mac: [u8; 6],
        /// The container's network's index in `NETD_NETWORKS` (padding
        /// before netd had many networks: 0, the default network).
        pub network: u16,
    }
    size = 12;
}

/// The first ifindex netd gives a LAN endpoint's device (macvlan,
/// ipvlan). Such a device lives in its container's namespace, where
/// ifindexes are the namespace's own (every container's `eth0` may be 2):
/// netd creates it with an ifindex of its choosing, unique among its
/// endpoints and far above any a kernel hands out by itself, so that
/// `NETD_VETHS` and `NETD_ENDPOINT_STATS` can key it by ifindex as they
/// key host veths.
pub const LAN_IFINDEX_BASE: u32 = 0x4e44_0000;
/// How many LAN endpoint ifindexes netd gives out, from
/// [`LAN_IFINDEX_BASE`].
pub const LAN_IFINDEXES: u32 = 1 << 16;

abi_type! {
    /// What one LAN endpoint sent, in the per-CPU `NETD_ENDPOINT_STATS` by
    /// its device's ifindex; userspace sums CPUs.
    pub struct EndpointStats {
        pub packets: u64,
        pub bytes: u64,
        /// Of those, dropped (spoofed, or against its network's policy).
        pub dropped: u64,
    }
    size = 24;
}

abi_type! {
    /// An uplink, in `NETD_UPLINKS` by ifindex: the address flows leaving
    /// by it are masqueraded to.
    pub struct UplinkInfo {
        pub addr_be: [u8; 4],
    }
    size = 4;
}
