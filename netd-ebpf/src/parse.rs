// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Parsing what netd translates: Ethernet + IPv4 + TCP/UDP.
//!
//! Anything else is passed to the kernel untouched, which validates and
//! handles it as it would without netd: non-IPv4 (ARP, IPv6, VLAN-tagged),
//! malformed IPv4 (IHL < 5, total length shorter than the header or longer
//! than the packet), fragments (first and later), protocols other than TCP
//! and UDP, and truncated TCP/UDP headers (or a TCP data offset < 5). IP
//! options are fine: the L4 header is found after them.

use crate::packet::{Frame, read};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
/// Offsets inside the IPv4 header.
pub const IP_TTL: usize = 8;
pub const IP_CHECK: usize = 10;
pub const IP_SADDR: usize = 12;
pub const IP_DADDR: usize = 16;
/// Offsets inside TCP and UDP headers.
pub const L4_SPORT: usize = 0;
pub const L4_DPORT: usize = 2;
pub const TCP_FLAGS: usize = 13;
pub const TCP_CHECK: usize = 16;
pub const UDP_CHECK: usize = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// The longest headers netd reads: Ethernet, IPv4 with options, TCP.
pub const MAX_HEADERS: u32 = (ETH_HLEN + 60 + 20) as u32;

/// A TCP or UDP packet netd may translate.
#[derive(Clone, Copy)]
pub struct Flow {
    /// Offset of the L4 header from the start of the frame.
    pub l4: usize,
    pub proto: u8,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    pub ttl: u8,
}

impl Flow {
    /// Offset of the L4 checksum.
    #[inline(always)]
    pub fn l4_check(&self) -> usize {
        self.l4
            + if self.proto == PROTO_TCP {
                TCP_CHECK
            } else {
                UDP_CHECK
            }
    }
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

/// A flow netd may translate and forward: `frame` parsed (its headers
/// pulled into the directly accessible area first, where the hook can), with
/// a TTL that survives one more hop. A packet that would expire here is the
/// kernel's to answer (time exceeded). `None`: pass it on untouched.
#[inline(always)]
pub fn forwardable<F: Frame>(frame: &F) -> Option<Flow> {
    if frame.end() - frame.start() < MAX_HEADERS as usize {
        frame.pull(frame.len().min(MAX_HEADERS));
    }
    parse(frame).filter(|flow| flow.ttl > 1)
}

/// Parses `frame`; `None` means "not for netd: pass it on".
#[inline(always)]
pub fn parse<F: Frame>(frame: &F) -> Option<Flow> {
    let ether_type: [u8; 2] = read(frame, 12)?;
    if u16::from_be_bytes(ether_type) != ETH_P_IP {
        return None;
    }
    let ip: Ipv4Head = read(frame, ETH_HLEN)?;
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if ip.vihl >> 4 != 4 || ihl < 20 || tot_len < ihl || ETH_HLEN + tot_len > frame.len() as usize {
        return None;
    }
    // MF set, or a non-zero offset: a fragment.
    if u16::from_be_bytes(ip.frag) & 0x3fff != 0 {
        return None;
    }
    let l4 = ETH_HLEN + ihl;
    let (sport, dport, tcp_flags) = match ip.proto {
        PROTO_TCP => {
            if tot_len < ihl + 20 {
                return None;
            }
            let head: [u8; 14] = read(frame, l4)?;
            if head[12] >> 4 < 5 {
                return None;
            }
            ([head[0], head[1]], [head[2], head[3]], head[TCP_FLAGS])
        }
        PROTO_UDP => {
            if tot_len < ihl + 8 {
                return None;
            }
            let head: [u8; 8] = read(frame, l4)?;
            ([head[0], head[1]], [head[2], head[3]], 0)
        }
        _ => return None,
    };
    Some(Flow {
        l4,
        proto: ip.proto,
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport,
        dport,
        tcp_flags,
        ttl: ip.ttl,
    })
}
