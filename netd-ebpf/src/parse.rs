// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Parsing what netd translates: Ethernet + IPv4 + TCP, UDP, ICMP echo, and
//! ICMP errors that quote a TCP, UDP or ICMP echo packet.
//!
//! Fragments: a first fragment (offset 0, more fragments) is parsed as a
//! whole packet whose transport header it carries (a UDP length may then
//! exceed what the fragment holds); a later fragment (offset > 0) parses
//! as a flow without ports, which `frag::recall` fills in from its first
//! fragment. ICMP errors are never fragments (they are small; a
//! fragmented one is not translated); they may quote a first fragment (a
//! reassembly timeout quotes one), whose transport header the quote holds,
//! but not a later one.
//!
//! Anything else is passed to the kernel untouched, which validates and
//! handles it as it would without netd: non-IPv4 (ARP, IPv6, VLAN-tagged),
//! malformed IPv4 (IHL < 5, total length shorter than the header or longer
//! than the packet), other protocols and ICMP types, truncated TCP/UDP/ICMP
//! headers (a TCP data offset < 5 or past the segment, a UDP length < 8 or
//! past the datagram: the kernel discards those, netfilter calls them
//! invalid), ICMP errors whose quoted packet is
//! truncated, malformed or itself an ICMP error (RFC 1122: never answer an
//! error with an error), or that is not addressed to the source of the
//! packet it quotes. IP options are fine: the L4 header is found after
//! them.
//!
//! ICMP echo takes part in conntrack like a port pair: an echo request's
//! identifier is its "source port" (destination port 0), an echo reply's its
//! "destination port" (source port 0), so that a request and its reply have
//! mirrored keys as TCP and UDP packets do.

use crate::packet::{Frame, read};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
/// Offsets inside the IPv4 header.
pub const IP_TTL: usize = 8;
pub const IP_CHECK: usize = 10;
pub const IP_SADDR: usize = 12;
pub const IP_DADDR: usize = 16;
/// Offsets inside TCP, UDP and ICMP headers.
pub const L4_SPORT: usize = 0;
pub const L4_DPORT: usize = 2;
pub const TCP_FLAGS: usize = 13;
pub const TCP_CHECK: usize = 16;
pub const UDP_CHECK: usize = 6;
pub const ICMP_CHECK: usize = 2;
pub const ICMP_ID: usize = 4;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// The longest headers netd reads: Ethernet, IPv4 with options, ICMP, and
/// the quoted IPv4 header with options and 8 bytes of its payload.
pub const MAX_HEADERS: u32 = (ETH_HLEN + 60 + 8 + 60 + 8) as u32;

/// A TCP, UDP or ICMP echo packet netd may translate, or the packet an ICMP
/// error quotes.
#[derive(Clone, Copy)]
pub struct Flow {
    /// Offset of the IPv4 header from the start of the frame.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    pub proto: u8,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// Where `sport` and `dport` sit in the packet; 0 when they are not
    /// there (the "ports" an ICMP echo does not carry).
    pub sport_off: usize,
    pub dport_off: usize,
    /// TCP flags (0 for others).
    pub tcp_flags: u8,
    /// TCP sequence and acknowledgment numbers, as in the packet (zero for
    /// others and for quoted segments).
    pub tcp_seq: [u8; 4],
    pub tcp_ack: [u8; 4],
    pub ttl: u8,
    /// `FRAG_NONE`, `FRAG_FIRST` or `FRAG_LATER`.
    pub frag: u8,
    /// The IPv4 identification, which names a fragment's datagram.
    pub ip_id: [u8; 2],
}

/// [`Flow::frag`]: a whole datagram.
pub const FRAG_NONE: u8 = 0;
/// [`Flow::frag`]: the first fragment of a datagram (offset 0, more
/// fragments), which carries its transport header.
pub const FRAG_FIRST: u8 = 1;
/// [`Flow::frag`]: a later fragment, without a transport header: its ports
/// are its first fragment's, if `frag::recall` knows them.
pub const FRAG_LATER: u8 = 2;

impl Flow {
    /// A flow of the IPv4 header `ip` at `l3`, its transport at `l4`,
    /// without ports yet.
    #[inline(always)]
    fn of(ip: &Ipv4Head, l3: usize, l4: usize) -> Self {
        Self {
            l3,
            l4,
            proto: ip.proto,
            saddr: ip.saddr,
            daddr: ip.daddr,
            sport: [0; 2],
            dport: [0; 2],
            sport_off: 0,
            dport_off: 0,
            tcp_flags: 0,
            tcp_seq: [0; 4],
            tcp_ack: [0; 4],
            ttl: ip.ttl,
            frag: match u16::from_be_bytes(ip.frag) {
                f if f & IP_OFFSET != 0 => FRAG_LATER,
                f if f & IP_MF != 0 => FRAG_FIRST,
                _ => FRAG_NONE,
            },
            ip_id: ip.id,
        }
    }

    /// Offset of the L4 checksum.
    #[inline(always)]
    pub fn l4_check(&self) -> usize {
        self.l4
            + match self.proto {
                PROTO_TCP => TCP_CHECK,
                PROTO_UDP => UDP_CHECK,
                _ => ICMP_CHECK,
            }
    }

    /// Whether the packet has an L4 checksum that covers the addresses (a
    /// pseudo-header): TCP and UDP, but not a later fragment, which carries
    /// no transport header (its datagram's checksum is in the first).
    #[inline(always)]
    pub fn pseudo_header(&self) -> bool {
        self.proto != PROTO_ICMP && self.frag != FRAG_LATER
    }
}

/// An ICMP error about a packet netd may have translated.
#[derive(Clone, Copy)]
pub struct IcmpError {
    /// The error itself (its "ports" are 0).
    pub outer: Flow,
    /// The packet it quotes, as that packet was sent.
    pub inner: Flow,
    /// Offset of the quoted L4 checksum if the quote holds it, else 0.
    pub inner_check: usize,
}

/// What a frame is, for netd.
#[derive(Clone, Copy)]
pub enum Packet {
    Flow(Flow),
    IcmpError(IcmpError),
}

/// The IPv4 header fields the parser checks, read in one go.
#[derive(Clone, Copy)]
#[repr(C)]
struct Ipv4Head {
    vihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

/// The more-fragments flag and the fragment offset in the IPv4 header's
/// flags word.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

/// A checked IPv4 header at `l3`, with the length of data after it that
/// the header claims and the packet has: `(header, ihl, payload_len)`.
/// `later_fragments`: whether a later fragment is acceptable here (a first
/// fragment always is: it holds its transport header).
#[inline(always)]
fn ipv4<F: Frame>(
    frame: &F,
    l3: usize,
    available: usize,
    later_fragments: bool,
) -> Option<(Ipv4Head, usize, usize)> {
    let ip: Ipv4Head = read(frame, l3)?;
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if ip.vihl >> 4 != 4 || ihl < 20 || tot_len < ihl {
        return None;
    }
    if !later_fragments && u16::from_be_bytes(ip.frag) & IP_OFFSET != 0 {
        return None;
    }
    Some((ip, ihl, tot_len.min(available).saturating_sub(ihl)))
}

/// The transport part of a flow: TCP, UDP or ICMP echo at `l4`, with
/// `len` bytes of it available. `quoted`: only the first 8 bytes are
/// required (ICMP errors quote that much).
#[inline(always)]
fn transport<F: Frame>(
    frame: &F,
    ip: &Ipv4Head,
    l3: usize,
    l4: usize,
    len: usize,
    quoted: bool,
) -> Option<Flow> {
    let mut flow = Flow::of(ip, l3, l4);
    match ip.proto {
        PROTO_TCP => {
            let head: [u8; 8] = read(frame, l4)?;
            if !quoted {
                let rest: [u8; 6] = read(frame, l4 + 8)?;
                let header_len = usize::from(rest[4] >> 4) * 4;
                if len < 20 || header_len < 20 || header_len > len {
                    return None;
                }
                flow.tcp_flags = rest[TCP_FLAGS - 8];
                flow.tcp_seq = [head[4], head[5], head[6], head[7]];
                flow.tcp_ack = [rest[0], rest[1], rest[2], rest[3]];
            } else if len < 8 {
                return None;
            }
            flow.sport = [head[0], head[1]];
            flow.dport = [head[2], head[3]];
            flow.sport_off = l4 + L4_SPORT;
            flow.dport_off = l4 + L4_DPORT;
        }
        PROTO_UDP => {
            let head: [u8; 8] = read(frame, l4)?;
            // A quote holds the first 8 bytes, and a first fragment the
            // first part of the datagram: the length field describes the
            // whole datagram, which may be longer.
            let udp_len = usize::from(u16::from_be_bytes([head[4], head[5]]));
            let whole = !quoted && flow.frag == FRAG_NONE;
            if len < 8 || (!quoted && udp_len < 8) || (whole && udp_len > len) {
                return None;
            }
            flow.sport = [head[0], head[1]];
            flow.dport = [head[2], head[3]];
            flow.sport_off = l4 + L4_SPORT;
            flow.dport_off = l4 + L4_DPORT;
        }
        PROTO_ICMP => {
            let head: [u8; 8] = read(frame, l4)?;
            if len < 8 {
                return None;
            }
            let id = [head[ICMP_ID], head[ICMP_ID + 1]];
            match head[0] {
                ICMP_ECHO_REQUEST => {
                    flow.sport = id;
                    flow.sport_off = l4 + ICMP_ID;
                }
                ICMP_ECHO_REPLY => {
                    flow.dport = id;
                    flow.dport_off = l4 + ICMP_ID;
                }
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(flow)
}

/// Parses `frame`; `None` means "not for netd: pass it on".
#[inline(always)]
pub fn parse<F: Frame>(frame: &F) -> Option<Packet> {
    let ether_type: [u8; 2] = read(frame, 12)?;
    if u16::from_be_bytes(ether_type) != ETH_P_IP {
        return None;
    }
    let available = (frame.len() as usize).checked_sub(ETH_HLEN)?;
    let (ip, ihl, len) = ipv4(frame, ETH_HLEN, available, true)?;
    if usize::from(u16::from_be_bytes(ip.tot_len)) > available {
        return None;
    }
    let l4 = ETH_HLEN + ihl;
    let flags = u16::from_be_bytes(ip.frag);
    if flags & IP_OFFSET != 0 {
        return later_fragment(&ip, l4).map(Packet::Flow);
    }
    if ip.proto == PROTO_ICMP {
        let head: [u8; 8] = read(frame, l4)?;
        if matches!(
            head[0],
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
        ) {
            if flags & IP_MF != 0 {
                return None;
            }
            return icmp_error(frame, &ip, l4, len).map(Packet::IcmpError);
        }
    }
    transport(frame, &ip, ETH_HLEN, l4, len, false).map(Packet::Flow)
}

/// A later fragment of a TCP, UDP or ICMP datagram at `l4`: a flow whose
/// ports are unknown until `frag::recall` finds them.
#[inline(always)]
fn later_fragment(ip: &Ipv4Head, l4: usize) -> Option<Flow> {
    matches!(ip.proto, PROTO_TCP | PROTO_UDP | PROTO_ICMP).then(|| Flow::of(ip, ETH_HLEN, l4))
}

/// An ICMP error at `l4` and the packet it quotes.
#[inline(always)]
fn icmp_error<F: Frame>(frame: &F, ip: &Ipv4Head, l4: usize, len: usize) -> Option<IcmpError> {
    let outer = Flow::of(ip, ETH_HLEN, l4);
    let inner_l3 = l4 + 8;
    let quoted = len.checked_sub(8)?;
    let (inner_ip, inner_ihl, inner_len) = ipv4(frame, inner_l3, quoted, false)?;
    // An error is sent to the source of the datagram it quotes (RFC 792).
    // One addressed elsewhere is about no flow of this destination's,
    // whatever it quotes: translated with the quoted flow's entry, it would
    // leave with that flow's address for a peer that never was the flow's.
    if inner_ip.saddr != ip.daddr {
        return None;
    }
    let inner_l4 = inner_l3 + inner_ihl;
    if inner_ip.proto == PROTO_ICMP {
        // Quoting an error: never translated. (Two bytes read, not one:
        // LLVM turns a one-byte bounds check into `ptr >= end`, which the
        // verifier cannot use to prove the access.)
        let head: [u8; 2] = read(frame, inner_l4)?;
        if !matches!(head[0], ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) {
            return None;
        }
    }
    let inner = transport(frame, &inner_ip, inner_l3, inner_l4, inner_len, true)?;
    let check = inner.l4_check();
    let inner_check =
        if check + 2 <= inner_l4 + inner_len && read::<[u8; 2], F>(frame, check).is_some() {
            check
        } else {
            0
        };
    Some(IcmpError {
        outer,
        inner,
        inner_check,
    })
}

/// A packet netd may translate and forward: `frame` parsed (its headers
/// pulled into the directly accessible area first, where the hook can), with
/// a TTL that survives one more hop. A packet that would expire here is the
/// kernel's to answer (time exceeded). `None`: pass it on untouched.
#[inline(always)]
pub fn forwardable<F: Frame>(frame: &F) -> Option<Packet> {
    // Parse what is linear first, and pull only if that was not enough: a
    // pull linearizes (copying the payload a TCP segment carries in page
    // fragments) and makes the skb writable (copying the header of a
    // cloned skb), costs the usual packet, whose headers are all linear,
    // must not pay.
    let packet = match parse(frame) {
        Some(packet) => packet,
        None => {
            let wanted = frame.len().min(MAX_HEADERS);
            if frame.end() - frame.start() >= wanted as usize || !frame.pull(wanted) {
                return None;
            }
            parse(frame)?
        }
    };
    let ttl = match &packet {
        Packet::Flow(flow) => flow.ttl,
        Packet::IcmpError(err) => err.outer.ttl,
    };
    (ttl > 1).then_some(packet)
}
