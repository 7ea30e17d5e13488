// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `syn-flood`: a bounded flood of TCP SYNs with spoofed sources, sent
//! through a raw socket, as fast as the socket takes them or at a set rate.
//! Sources are drawn from `--sources` and random ports by a fixed-seed
//! generator, so two runs send the same packets.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use netd_tests::pktgen::{Ipv4Packet, L4};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const TCP_SYN: u8 = 0x02;

#[derive(Debug, Args)]
pub struct FloodArgs {
    /// The target.
    #[arg(long, value_name = "IP:PORT")]
    to: SocketAddrV4,
    /// Spoofed sources: addresses of this /16 (its first two octets kept).
    #[arg(long, value_name = "IP")]
    sources: Ipv4Addr,
    /// SYNs to send.
    #[arg(long, value_name = "N")]
    count: u64,
    /// At most this many SYNs a second [default: as fast as possible].
    #[arg(long, value_name = "N")]
    pps: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct FloodReport {
    sent: u64,
    send_errors: u64,
    seconds: f64,
    pps: f64,
}

impl FloodReport {
    pub fn succeeded(&self) -> bool {
        self.sent > 0
    }
}

/// xorshift64*: enough randomness for sources, from a fixed seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub fn flood(args: &FloodArgs) -> Result<FloodReport> {
    ensure!(args.count > 0, "--count must be at least 1");
    // IPPROTO_RAW: the socket sends the IP header we build (IP_HDRINCL).
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .context("opening a raw socket (needs CAP_NET_RAW)")?;
    let to = SockAddr::from(SocketAddr::V4(args.to));
    let [a, b, _, _] = args.sources.octets();
    let mut random = Random(0x0073_796e_666c_6f6f);
    let gap = args
        .pps
        .map(|pps| Duration::from_secs(1) / pps.max(1) as u32);
    let start = Instant::now();
    let (mut sent, mut send_errors) = (0, 0);
    for n in 0..args.count {
        let r = random.next();
        let src = Ipv4Addr::new(a, b, (r >> 8) as u8, (r as u8).max(1));
        let sport = 1024 + (r >> 16) as u16 % 64_000;
        let mut packet = Ipv4Packet::new(
            *args.to.ip(),
            *args.to.ip(),
            L4::tcp(sport, args.to.port(), TCP_SYN),
        );
        packet.src = src;
        packet.id = n as u16;
        match socket.send_to(&packet.ip_bytes(), &to) {
            Ok(_) => sent += 1,
            // ENOBUFS: the device queue is full; the flood goes on.
            Err(_) => send_errors += 1,
        }
        if let Some(gap) = gap {
            let due = start + gap * (n as u32 + 1);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(FloodReport {
        sent,
        send_errors,
        seconds,
        pps: sent as f64 / seconds,
    })
}
