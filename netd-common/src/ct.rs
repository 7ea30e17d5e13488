// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Connection tracking: one LRU hash entry per direction of a translated
//! flow, keyed by the packet's 5-tuple as it arrives at the hook that sees
//! that direction.
//!
//! A published-port flow has an *original* entry (client -> host:port, seen
//! on the uplink) that rewrites the destination to the container, and a
//! *reply* entry (container -> client, seen on the container's veth) that
//! rewrites the source back to host:port. Each entry names the other in
//! `reverse`, so either direction can remove both.
//!
//! The datapath records which TCP flags each direction has seen; the state
//! (SYN sent, established, closing...) and its timeout are derived from both
//! directions' flags by [`TcpState::of`], in userspace, when listing and
//! garbage-collecting. Timeouts follow netfilter's defaults.

abi_type! {
    /// A conntrack key: addresses and ports in network byte order, as in
    /// the packet.
    pub struct CtKey {
        pub saddr_be: [u8; 4],
        pub daddr_be: [u8; 4],
        pub sport_be: [u8; 2],
        pub dport_be: [u8; 2],
        pub proto: u8,
        pub _pad: [u8; 3],
    }
    size = 16;
}

abi_type! {
    /// A `NETD_FRAGS` key: one fragmented IPv4 datagram, as the IP layer
    /// identifies it (source, destination, protocol, identification; RFC
    /// 791), with the addresses as its fragments arrive at the hook.
    pub struct FragKey {
        pub saddr_be: [u8; 4],
        pub daddr_be: [u8; 4],
        pub id_be: [u8; 2],
        pub proto: u8,
        pub _pad: u8,
    }
    size = 12;
}

abi_type! {
    /// A `NETD_FRAGS` value: the ports (or ICMP echo identifier, as in
    /// [`CtKey`]) that the datagram's first fragment carried, and when.
    /// Later fragments carry none; with these they find their flow's
    /// entry, for [`FRAG_TIMEOUT_NS`] at most.
    pub struct FragPorts {
        pub sport_be: [u8; 2],
        pub dport_be: [u8; 2],
        pub _pad: [u8; 4],
        /// `bpf_ktime_get_ns` when the first fragment was translated.
        pub created_ns: u64,
    }
    size = 16;
}

/// How long a datagram's fragments may take to arrive: the kernel's
/// `ipfrag_time` default (30 s). An older [`FragPorts`] belongs to a
/// datagram long gone, whose identification a new one may reuse.
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;

/// [`CtEntry::flags`]: rewrite the source to `nat_saddr_be:nat_sport_be`.
pub const CT_NAT_SRC: u16 = 1;
/// [`CtEntry::flags`]: rewrite the destination to `nat_daddr_be:nat_dport_be`.
pub const CT_NAT_DST: u16 = 2;
/// [`CtEntry::flags`]: this entry is the flow's original direction.
pub const CT_ORIGINAL: u16 = 4;
/// [`CtEntry::flags`]: deliver to the container behind `ifindex` (its host
/// veth), instead of routing by the FIB.
pub const CT_TO_ENDPOINT: u16 = 8;

/// [`CtEntry::flags`]: the entry applies to packets arriving from an uplink
/// (else: to packets arriving from a container). A packet that matches an
/// entry at the other hook is not translated.
pub const CT_AT_UPLINK: u16 = 16;

/// [`CtEntry::kind`]: a published port reached from outside.
pub const CT_KIND_PUBLISHED: u8 = 1;
/// [`CtEntry::kind`]: a container's flow to the outside, masqueraded.
pub const CT_KIND_MASQUERADE: u8 = 2;
/// [`CtEntry::kind`]: a container reaching a published port through the
/// host's address (hairpin).
pub const CT_KIND_HAIRPIN: u8 = 3;
/// [`CtEntry::kind`]: a container's flow to the outside, routed without
/// NAT (masquerade off); tracked so that its replies, and only they, reach
/// the container.
pub const CT_KIND_ROUTED: u8 = 4;

/// `NETD_FLOWS_CREATED`' size: kinds are its index, with room to come.
pub const KINDS: u32 = 8;

/// Stable names of the kinds, for output and metrics.
pub const KIND_NAMES: [(u8, &str); 4] = [
    (CT_KIND_PUBLISHED, "published"),
    (CT_KIND_MASQUERADE, "masquerade"),
    (CT_KIND_HAIRPIN, "hairpin"),
    (CT_KIND_ROUTED, "routed"),
];
const _: () = assert!((CT_KIND_ROUTED as u32) < KINDS);

/// [`CtEntry::mapping`] when no mapping is involved.
pub const NO_MAPPING: u32 = u32::MAX;

/// TCP flags seen, per direction, in [`CtEntry::tcp_seen`].
pub const SEEN_SYN: u8 = 1;
pub const SEEN_ACK: u8 = 2;
pub const SEEN_FIN: u8 = 4;
pub const SEEN_RST: u8 = 8;

abi_type! {
    /// What to do with the packets of one direction of a flow.
    pub struct CtEntry {
        /// The other direction's key.
        pub reverse: CtKey,
        pub nat_saddr_be: [u8; 4],
        pub nat_daddr_be: [u8; 4],
        pub nat_sport_be: [u8; 2],
        pub nat_dport_be: [u8; 2],
        /// With `CT_TO_ENDPOINT`: the container's host veth.
        pub ifindex: u32,
        /// With `CT_TO_ENDPOINT`: the container's MAC.
        pub dmac: [u8; 6],
        /// `CT_*` flags.
        pub flags: u16,
        /// The mapping's slot and generation when the flow was created.
        pub mapping: u32,
        pub generation: u32,
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at creation and at the last
        /// packet.
        pub created_ns: u64,
        pub last_seen_ns: u64,
        pub packets: u64,
        pub bytes: u64,
        pub tcp_seen: u8,
        pub kind: u8,
        pub proto: u8,
        /// TCP: the acknowledgment number of this direction's last segment
        /// with ACK (network order), i.e. the sequence number its sender
        /// expects next from the other direction. A reset or FIN of the
        /// other direction only closes the flow near it (see
        /// `netd-ebpf`'s `ct::touch`).
        pub tcp_ack_be: [u8; 4],
        pub _pad: [u8; 1],
    }
    size = 88;
}

/// A TCP connection's state, as netfilter names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    TimeWait,
    Close,
}

impl TcpState {
    /// The state of a connection from the flags its original and reply
    /// directions have seen.
    pub fn of(original: u8, reply: u8) -> Self {
        if (original | reply) & SEEN_RST != 0 {
            Self::Close
        } else if original & SEEN_FIN != 0 && reply & SEEN_FIN != 0 {
            Self::TimeWait
        } else if (original | reply) & SEEN_FIN != 0 {
            Self::FinWait
        } else if reply & SEEN_SYN != 0 && original & SEEN_ACK == 0 {
            Self::SynRecv
        } else if original & SEEN_SYN != 0 && reply == 0 {
            Self::SynSent
        } else {
            // Handshake done, or a flow picked up mid-stream (netfilter's
            // nf_conntrack_tcp_loose does the same).
            Self::Established
        }
    }

    /// The state's timeout in `timeouts`, in seconds.
    pub fn timeout_secs(self, timeouts: &Timeouts) -> u64 {
        match self {
            Self::SynSent => timeouts.syn_sent,
            Self::SynRecv => timeouts.syn_recv,
            Self::Established => timeouts.established,
            Self::FinWait => timeouts.fin_wait,
            Self::TimeWait => timeouts.time_wait,
            Self::Close => timeouts.close,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::Established => "ESTABLISHED",
            Self::FinWait => "FIN_WAIT",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
        }
    }
}

/// How long a flow may stay idle in each state, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub syn_sent: u64,
    pub syn_recv: u64,
    pub established: u64,
    pub fin_wait: u64,
    pub time_wait: u64,
    pub close: u64,
    /// UDP that has seen no reply.
    pub udp: u64,
    /// UDP that has seen replies.
    pub udp_stream: u64,
}

impl Default for Timeouts {
    /// netfilter's defaults (nf_conntrack_tcp_timeout_*,
    /// nf_conntrack_udp_timeout{,_stream}).
    fn default() -> Self {
        Self {
            syn_sent: 120,
            syn_recv: 60,
            established: 432_000,
            fin_wait: 120,
            time_wait: 120,
            close: 10,
            udp: 30,
            udp_stream: 120,
        }
    }
}

impl Timeouts {
    /// Sets the timeout named `name` (`syn_sent`, ..., `udp_stream`).
    /// Returns false for an unknown name.
    pub fn set(&mut self, name: &str, secs: u64) -> bool {
        let slot = match name {
            "syn_sent" => &mut self.syn_sent,
            "syn_recv" => &mut self.syn_recv,
            "established" => &mut self.established,
            "fin_wait" => &mut self.fin_wait,
            "time_wait" => &mut self.time_wait,
            "close" => &mut self.close,
            "udp" => &mut self.udp,
            "udp_stream" => &mut self.udp_stream,
            _ => return false,
        };
        *slot = secs;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_handshake_and_teardown() {
        assert_eq!(TcpState::of(SEEN_SYN, 0), TcpState::SynSent);
        assert_eq!(
            TcpState::of(SEEN_SYN, SEEN_SYN | SEEN_ACK),
            TcpState::SynRecv
        );
        assert_eq!(
            TcpState::of(SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK),
            TcpState::Established
        );
        assert_eq!(
            TcpState::of(SEEN_ACK, SEEN_ACK),
            TcpState::Established,
            "mid-stream pickup"
        );
        assert_eq!(
            TcpState::of(SEEN_SYN | SEEN_ACK | SEEN_FIN, SEEN_SYN | SEEN_ACK),
            TcpState::FinWait
        );
        assert_eq!(
            TcpState::of(
                SEEN_SYN | SEEN_ACK | SEEN_FIN,
                SEEN_SYN | SEEN_ACK | SEEN_FIN
            ),
            TcpState::TimeWait
        );
        assert_eq!(TcpState::of(SEEN_SYN, SEEN_RST), TcpState::Close);
    }

    #[test]
    fn timeouts_are_netfilters_and_settable() {
        let mut t = Timeouts::default();
        assert_eq!(TcpState::Established.timeout_secs(&t), 5 * 24 * 3600);
        assert_eq!(TcpState::SynSent.timeout_secs(&t), 120);
        assert_eq!(TcpState::Close.timeout_secs(&t), 10);
        assert!(t.set("time_wait", 1));
        assert_eq!(TcpState::TimeWait.timeout_secs(&t), 1);
        assert!(!t.set("nope", 1));
    }
}
