// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Packets built byte by byte, for `BPF_PROG_TEST_RUN` and assertions.
//!
//! Checksums here are computed from scratch over the whole header and
//! payload (RFC 1071), never incrementally: the datapath updates checksums
//! incrementally, so agreement between the two is a real check.

use std::net::Ipv4Addr;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The 16-bit one's complement of the one's complement sum of `data`
/// (RFC 1071), over `seed` (a partial sum, e.g. of a pseudo-header).
pub fn checksum(seed: u32, data: &[u8]) -> u16 {
    let mut sum = seed;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The partial sum of the IPv4 pseudo-header for an L4 segment.
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) -> u32 {
    let mut sum = 0u32;
    for word in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    sum + u32::from(proto) + l4_len as u32
}

/// What goes inside the IPv4 header.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    /// `zero_checksum`: send with checksum 0 ("none", allowed for UDP/IPv4).
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        zero_checksum: bool,
    },
    /// An ICMP message: type, code, the 4 "rest of header" bytes, payload.
    Icmp {
        kind: u8,
        code: u8,
        rest: [u8; 4],
        payload: Vec<u8>,
    },
    /// Any other protocol, carried as opaque bytes.
    Raw { proto: u8, payload: Vec<u8> },
}

impl L4 {
    pub fn tcp(sport: u16, dport: u16, flags: u8) -> Self {
        Self::Tcp {
            sport,
            dport,
            seq: 0x1000_0000,
            ack: 0,
            flags,
            payload: Vec::new(),
        }
    }

    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Self {
        Self::Udp {
            sport,
            dport,
            payload: payload.to_vec(),
            zero_checksum: false,
        }
    }

    pub fn icmp_echo(request: bool, id: u16, seq: u16) -> Self {
        let mut rest = [0; 4];
        rest[..2].copy_from_slice(&id.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        Self::Icmp {
            kind: if request { 8 } else { 0 },
            code: 0,
            rest,
            payload: b"netd-ping".to_vec(),
        }
    }

    /// The same segment with other ports (TCP and UDP only).
    #[must_use]
    pub fn with_ports(mut self, new_sport: u16, new_dport: u16) -> Self {
        match &mut self {
            Self::Tcp { sport, dport, .. } | Self::Udp { sport, dport, .. } => {
                *sport = new_sport;
                *dport = new_dport;
            }
            _ => panic!("with_ports on a segment without ports"),
        }
        self
    }

    /// The (source, destination) ports of a TCP or UDP segment.
    pub fn ports(&self) -> (u16, u16) {
        match self {
            Self::Tcp { sport, dport, .. } | Self::Udp { sport, dport, .. } => (*sport, *dport),
            _ => panic!("ports of a segment without ports"),
        }
    }

    fn proto(&self) -> u8 {
        match self {
            Self::Tcp { .. } => IPPROTO_TCP,
            Self::Udp { .. } => IPPROTO_UDP,
            Self::Icmp { .. } => IPPROTO_ICMP,
            Self::Raw { proto, .. } => *proto,
        }
    }

    /// The segment with its checksum filled in.
    fn bytes(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        match self {
            Self::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                payload,
            } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                b.push(5 << 4); // data offset: 5 words, no options
                b.push(*flags);
                b.extend_from_slice(&64240u16.to_be_bytes()); // window
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                b.extend_from_slice(payload);
                let sum = checksum(pseudo_header_sum(src, dst, IPPROTO_TCP, b.len()), &b);
                b[16..18].copy_from_slice(&sum.to_be_bytes());
                b
            }
            Self::Udp {
                sport,
                dport,
                payload,
                zero_checksum,
            } => {
                let len = 8 + payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                if !zero_checksum {
                    let mut sum = checksum(pseudo_header_sum(src, dst, IPPROTO_UDP, len), &b);
                    // RFC 768: a computed 0 is sent as all ones.
                    if sum == 0 {
                        sum = 0xffff;
                    }
                    b[6..8].copy_from_slice(&sum.to_be_bytes());
                }
                b
            }
            Self::Icmp {
                kind,
                code,
                rest,
                payload,
            } => {
                let mut b = vec![*kind, *code, 0, 0];
                b.extend_from_slice(rest);
                b.extend_from_slice(payload);
                let sum = checksum(0, &b);
                b[2..4].copy_from_slice(&sum.to_be_bytes());
                b
            }
            Self::Raw { payload, .. } => payload.clone(),
        }
    }
}

/// An Ethernet + IPv4 packet under construction.
#[derive(Clone, Debug)]
pub struct Ipv4Packet {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset, as on the wire (e.g. 0x4000 = DF).
    pub frag: u16,
    /// IP options, padded by the caller to a multiple of 4 bytes.
    pub options: Vec<u8>,
    pub l4: L4,
}

impl Ipv4Packet {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Self {
            eth_dst: [0x02, 0, 0, 0, 0, 0x02],
            eth_src: [0x02, 0, 0, 0, 0, 0x01],
            src,
            dst,
            ttl: 64,
            id: 0x1234,
            frag: 0x4000,
            options: Vec::new(),
            l4,
        }
    }

    /// The same packet with other Ethernet addresses.
    #[must_use]
    pub fn with_macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.eth_dst = dst;
        self.eth_src = src;
        self
    }

    /// The IPv4 header and everything after it (no Ethernet header).
    pub fn ip_bytes(&self) -> Vec<u8> {
        let l4 = self.l4.bytes(self.src, self.dst);
        let ihl = 20 + self.options.len();
        let total = ihl + l4.len();
        let mut b = Vec::with_capacity(total);
        b.push(0x40 | (ihl / 4) as u8);
        b.push(0); // TOS
        b.extend_from_slice(&(total as u16).to_be_bytes());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&self.frag.to_be_bytes());
        b.push(self.ttl);
        b.push(self.l4.proto());
        b.extend_from_slice(&[0, 0]); // checksum
        b.extend_from_slice(&self.src.octets());
        b.extend_from_slice(&self.dst.octets());
        b.extend_from_slice(&self.options);
        let sum = checksum(0, &b[..ihl]);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
        b.extend_from_slice(&l4);
        b
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        ethernet(self.eth_dst, self.eth_src, ETH_P_IP, &self.ip_bytes())
    }
}

/// `frame` (Ethernet and a whole IPv4 datagram) cut into fragments of at
/// most `chunk` bytes of IP payload each (`chunk` a multiple of 8), as a
/// router fragments it (RFC 791): the header copied into each, DF cleared,
/// MF on all but the last, offsets in 8-byte units, lengths and header
/// checksums recomputed.
pub fn fragments(frame: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0, "fragment payloads are multiples of 8 bytes");
    let l3 = ETH_HLEN;
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
    let payload = &frame[l3 + ihl..l3 + total];
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut out = frame[..l3 + ihl].to_vec();
            let len = (ihl + piece.len()) as u16;
            out[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
            let more = if i + 1 < pieces.len() { 0x2000 } else { 0 };
            let flags = more | (i * chunk / 8) as u16;
            out[l3 + 6..l3 + 8].copy_from_slice(&flags.to_be_bytes());
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let sum = checksum(0, &out[l3..l3 + ihl]);
            out[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(piece);
            out
        })
        .collect()
}

/// An Ethernet frame around `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ETH_HLEN + payload.len());
    b.extend_from_slice(&dst);
    b.extend_from_slice(&src);
    b.extend_from_slice(&ether_type.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// An ARP request frame (who-has `target` tell `sender`).
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mac = [0x02, 0, 0, 0, 0, 0x01];
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    ethernet([0xff; 6], mac, ETH_P_ARP, &arp)
}

/// A minimal IPv6 frame (UDP, no checksum check intended).
pub fn ipv6_udp() -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, 0, 8, IPPROTO_UDP, 64];
    ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    ip.extend_from_slice(&[0x30, 0x39, 0x00, 0x50, 0, 8, 0, 0]);
    ethernet(
        [0x02, 0, 0, 0, 0, 2],
        [0x02, 0, 0, 0, 0, 1],
        ETH_P_IPV6,
        &ip,
    )
}

/// A frame parsed back into the fields tests assert on, with checksum
/// verification from scratch.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub ip_checksum_ok: bool,
    pub l4_checksum_ok: bool,
    /// The raw L4 checksum field (to check UDP's "0 stays 0").
    pub l4_checksum: u16,
}

/// Parses an Ethernet/IPv4/{TCP,UDP,ICMP} frame.
pub fn parse(frame: &[u8]) -> Parsed {
    assert!(frame.len() >= ETH_HLEN + 20, "frame too short to parse");
    let ip = &frame[ETH_HLEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let l4 = &ip[ihl..total];
    let ip_checksum_ok = checksum(0, &ip[..ihl]) == 0;
    let (sport, dport, l4_checksum, l4_checksum_ok) = match proto {
        IPPROTO_TCP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
            u16::from_be_bytes([l4[16], l4[17]]),
            checksum(pseudo_header_sum(src, dst, proto, l4.len()), l4) == 0,
        ),
        IPPROTO_UDP => {
            let field = u16::from_be_bytes([l4[6], l4[7]]);
            let ok = field == 0 || checksum(pseudo_header_sum(src, dst, proto, l4.len()), l4) == 0;
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
                field,
                ok,
            )
        }
        IPPROTO_ICMP => (
            0,
            0,
            u16::from_be_bytes([l4[2], l4[3]]),
            checksum(0, l4) == 0,
        ),
        _ => (0, 0, 0, true),
    };
    Parsed {
        src,
        dst,
        ttl: ip[8],
        proto,
        sport,
        dport,
        ip_checksum_ok,
        l4_checksum_ok,
        l4_checksum,
    }
}

/// Flips bits of the IPv4 header checksum.
pub fn corrupt_ip_checksum(frame: &mut [u8]) {
    frame[ETH_HLEN + 10] ^= 0x5a;
}

/// Flips bits of the L4 checksum of a TCP or UDP frame with a 20-byte IPv4
/// header.
pub fn corrupt_l4_checksum(frame: &mut [u8]) {
    let offset = match frame[ETH_HLEN + 9] {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 2,
    };
    frame[ETH_HLEN + 20 + offset] ^= 0x5a;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's worked example: the sum of 00 01 f2 03 f4 f5 f6 f7 is
    /// 0xddf2, so the checksum is its complement, 0x220d.
    #[test]
    fn checksum_matches_rfc1071_example() {
        assert_eq!(
            checksum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn built_packets_verify() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        for l4 in [
            L4::tcp(1234, 80, tcp_flags::SYN),
            L4::udp(1234, 53, b"query"),
            L4::icmp_echo(true, 7, 1),
        ] {
            let frame = Ipv4Packet::new(a, b, l4).build();
            let parsed = parse(&frame);
            assert!(parsed.ip_checksum_ok && parsed.l4_checksum_ok, "{parsed:?}");
        }
    }

    #[test]
    fn corruption_is_detected() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        let mut frame = Ipv4Packet::new(a, b, L4::tcp(1, 2, tcp_flags::ACK)).build();
        corrupt_ip_checksum(&mut frame);
        corrupt_l4_checksum(&mut frame);
        let parsed = parse(&frame);
        assert!(!parsed.ip_checksum_ok && !parsed.l4_checksum_ok);
    }
}
