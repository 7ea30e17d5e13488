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
        pub _pad: [u8; 2],
    }
    size = 12;
}

/// [`DatapathConfig::redirect`]: deliver into containers with
/// `bpf_redirect_peer` (kernel >= 5.10), straight into the container's
/// namespace, skipping the bridge and the host's backlog queue.
pub const REDIRECT_PEER: u32 = 0;
/// [`DatapathConfig::redirect`]: transmit on the container's host veth with
/// `bpf_redirect` (any kernel); the veth hands the packet to its peer.
pub const REDIRECT_EGRESS: u32 = 1;

abi_type! {
    /// The network's settings, the only entry of the array `NETD_CONFIG`.
    pub struct DatapathConfig {
        /// The network's subnet and mask (network order).
        pub subnet_be: [u8; 4],
        pub mask_be: [u8; 4],
        /// The bridge's MAC: the source MAC of packets netd delivers into
        /// containers, as if the gateway had routed them.
        pub gateway_mac: [u8; 6],
        pub _pad: [u8; 2],
        /// `REDIRECT_*`.
        pub redirect: u32,
    }
    size = 20;
}
