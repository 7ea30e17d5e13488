// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Probes for the security tests: crafted frames sent raw from inside a
//! test namespace, and counters of what arrives at an interface.
//!
//! A probe test is only as good as its counter. [`ArrivalCounter`] counts
//! in the receiving namespace's own netfilter ingress hook (family
//! `netdev`), which runs for every frame the interface receives, before
//! routing, before the IP stack's checks and before any socket lookup: a
//! probe that reaches the interface is counted even when the receiving
//! kernel would drop it a moment later. Tests pair every "none arrived"
//! with a positive control through the same counter, so a counter that
//! never counts fails them.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    netns::Netns,
    pktgen::{Ipv4Packet, L4},
    topology::mac_of,
};

/// A MAC address as `ip -j link` prints it, as bytes.
pub fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad MAC {text:?}")))
        .collect();
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("bad MAC {text:?}"))
}

/// The MAC address of `link` in `ns`, as bytes.
pub fn link_mac(ns: &Netns, link: &str) -> [u8; 6] {
    parse_mac(&mac_of(ns, link))
}

/// An `AF_PACKET` socket that sends whole Ethernet frames out of one
/// interface of a namespace, bypassing that namespace's routing, ARP and
/// source address checks: what an attacker on the link can put on the wire.
/// It receives nothing (protocol 0).
pub struct RawSender {
    fd: OwnedFd,
    /// The interface's own MAC: the source of well-behaved frames.
    pub mac: [u8; 6],
}

impl RawSender {
    /// A sender on `ifname` inside `ns`. The socket belongs to the namespace
    /// it was created in, so it keeps sending there after this thread
    /// returns to its own.
    pub fn open(ns: &Netns, ifname: &str) -> Self {
        let mac = link_mac(ns, ifname);
        let _inside = ns.enter();
        let ifindex = nix::net::if_::if_nametoindex(ifname)
            .unwrap_or_else(|e| panic!("{ifname} in {}: {e}", ns.name()));
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(bound, 0, "bind to {ifname}: {}", io::Error::last_os_error());
        Self { fd, mac }
    }

    /// Sends one frame, retrying while the interface's queue is full.
    pub fn send(&self, frame: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // SAFETY: `frame` is valid for reads of its length.
            let sent =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if sent == frame.len() as isize {
                return;
            }
            let err = io::Error::last_os_error();
            let busy = err.raw_os_error() == Some(libc::ENOBUFS);
            assert!(busy && Instant::now() < deadline, "sending a probe: {err}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends every frame of `frames`; returns how many were sent.
    pub fn send_all(&self, frames: impl IntoIterator<Item = Vec<u8>>) -> u64 {
        let mut count = 0;
        for frame in frames {
            self.send(&frame);
            count += 1;
            // veth delivers in the sender's softirq; a short pause now and
            // then keeps the receiving CPU's backlog (netdev_max_backlog)
            // from overflowing, so every probe is really judged by netd.
            if count % 100 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        count
    }

    /// An IPv4 frame from this interface's MAC to `dst_mac`.
    pub fn frame(&self, dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Vec<u8> {
        Ipv4Packet::new(src, dst, l4)
            .with_macs(dst_mac, self.mac)
            .build()
    }
}

static COUNTERS: AtomicU32 = AtomicU32::new(0);

/// An nftables counter of the IPv4 frames arriving on one interface of a
/// namespace that match a filter, in that namespace's `netdev` ingress
/// hook (see the module comment). Its table is deleted on drop.
pub struct ArrivalCounter<'a> {
    ns: &'a Netns,
    table: String,
}

impl<'a> ArrivalCounter<'a> {
    /// Counts the IPv4 frames arriving on `dev` in `ns` that match `filter`
    /// (an nft match expression such as `udp dport 9999`; empty: all).
    pub fn install(ns: &'a Netns, dev: &str, filter: &str) -> Self {
        let table = format!("netd_probe{}", COUNTERS.fetch_add(1, Ordering::Relaxed));
        ns.sh(&format!(
            "nft -f - <<'EOF'\n\
             table netdev {table} {{\n\
             \tcounter arrived {{ }}\n\
             \tchain ingress {{\n\
             \t\ttype filter hook ingress device \"{dev}\" priority -500; policy accept;\n\
             \t\tmeta protocol ip {filter} counter name \"arrived\"\n\
             \t}}\n\
             }}\n\
             EOF"
        ));
        Self { ns, table }
    }

    /// The frames counted so far.
    pub fn packets(&self) -> u64 {
        let out = self.ns.sh(&format!(
            "nft -j list counter netdev {} arrived",
            self.table
        ));
        let json: Value = serde_json::from_str(&out).expect("nft -j");
        json["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .unwrap_or_else(|| panic!("no counter in {out}"))
    }

    /// The count once it has stopped moving: frames a sender has handed
    /// to the kernel may still be on their way (softirq, redirects).
    pub fn settled(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.packets();
        loop {
            thread::sleep(Duration::from_millis(200));
            let now = self.packets();
            if now == last {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the count in {} never settled: {now}",
                self.ns.name()
            );
            last = now;
        }
    }

    /// Waits up to two seconds for the count to reach `want`; the count.
    pub fn wait_for(&self, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let now = self.packets();
            if now >= want || Instant::now() > deadline {
                return now;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ArrivalCounter<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .try_sh(&format!("nft delete table netdev {}", self.table));
    }
}
