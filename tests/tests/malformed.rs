// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Hostile and malformed packets through every netd packet program
//! (`netd_uplink_tc`, `netd_uplink_xdp`, `netd_endpoint_tc`) with
//! `BPF_PROG_TEST_RUN`: a corpus of named packet classes, each with the
//! verdict documented below, and a mutation fuzzer.
//!
//! # The rules
//!
//! netd translates a packet only when all of this holds; anything else is
//! passed to the kernel untouched (it validates and handles it as it would
//! without netd), unless a policy below drops it:
//!
//! - Ethernet II with type IPv4 (no VLAN tag), version 4, IHL >= 5, a
//!   total length from the header's length up to what the frame holds
//!   (Ethernet padding after it is fine), TTL >= 2 (a packet that would
//!   expire is the kernel's to answer);
//! - TCP with its whole header (data offset >= 5 and within the segment),
//!   UDP with its whole header (length field >= 8 and within the
//!   datagram, or only >= 8 in a first fragment, which holds the start of
//!   the datagram the field describes), ICMP echo request or reply (8
//!   bytes); a later fragment (offset > 0) of a TCP, UDP or ICMP datagram
//!   whose first fragment was translated (the datapath's fragment map has
//!   its ports; it starts no flow, and only its addresses are rewritten);
//!   or an ICMP error that is not itself a fragment,
//!   (destination unreachable, time exceeded, parameter problem) quoting at
//!   least an IPv4 header and 8 bytes of a TCP, UDP or ICMP echo packet
//!   that is not a later fragment (an error quoting an error is never
//!   translated, RFC 1122), and addressed to that packet's source;
//! - a conntrack entry for it, or a new flow: from outside, to a published
//!   port of a local address, from a unicast source that is not one of the
//!   host's own addresses; from a container, to the outside (masquerade)
//!   or to a published port through a host address (hairpin), to a
//!   unicast destination. Broadcast, multicast, 0.0.0.0/8, loopback and
//!   class E peers never start a flow: the kernel's route lookup never
//!   forwards them (martians) or keeps them on the link.
//!
//! netd validates no checksum: a translated packet keeps the checksum
//! error it came with (checksums are adjusted, RFC 1624, as netfilter does;
//! the receiving stack discards the packet), and a UDP checksum of 0 stays
//! 0. A TCP flow starts only with a SYN (or, picked up mid-stream, a
//! plain ACK), as in netfilter: SYN+FIN, Xmas and flagless segments start
//! nothing and go on untranslated. Segments of a tracked flow are
//! translated whatever their flags and sequence numbers (the receiving
//! stack applies RFC 9293 and RFC 5961); an RST or FIN far outside the
//! window does not close the flow in conntrack.
//!
//! Policies: from an uplink, a destination in 127.0.0.0/8 is dropped
//! (`martian_loopback`), a source inside the container network
//! (`source_in_network`), an untranslated destination inside it
//! (`direct_to_container`). On a container's veth, a frame whose source MAC,
//! or an IPv4 packet whose source address, is not the container's is
//! dropped (`spoofed`; also an IPv4 frame too short to hold its source
//! address, which cannot be checked). So every frame from the outside run
//! through
//! `netd_endpoint_tc` is `spoofed`, and every packet from a container that
//! parses as a flow run through the uplink programs is `source_in_network`
//! (or `martian_loopback` first, to 127.0.0.0/8). XDP translates flows
//! only; it passes every ICMP error and every fragment to TC.
//!
//! # The corpus
//!
//! Verdicts as (uplink TC / uplink XDP / endpoint TC): T = translated
//! (compared byte for byte with Scapy's translation), P = passed untouched,
//! the drop reason, or "refused": `BPF_PROG_TEST_RUN` itself refuses the
//! frame (EINVAL) before any program runs, as it does for skb programs
//! given an IPv4 frame without a whole 20-byte header (IPv6: 40); such
//! frames are run through XDP, which shares the parser with TC.
//! Established flows before each class: TCP
//! 10.250.0.2:40000 -> host:8080 (published, to 172.30.0.2:80), UDP
//! :40001 -> host:5353 (to :53), and the container's masqueraded TCP
//! :41000 -> client:80, UDP :41001 -> client:53 and ping id 7, each behind
//! host:61000.
//!
//! | class | uplink TC / XDP / endpoint TC |
//! |---|---|
//! | from outside, well formed: SYN or UDP to a published port (new flow), segment of a tracked flow, replies of masqueraded TCP, UDP and ping, IP options (record route, router alert), Ethernet padding, TTL 2 | T / T / spoofed |
//! | UDP checksum 0 (stays 0); bad IPv4, TCP or UDP checksum (error kept) | T / T / spoofed |
//! | RST outside the window of a tracked flow | T / T / spoofed |
//! | SYN+FIN, Xmas and flagless segments (new flows) | P / P / spoofed |
//! | to 127.0.0.1 | martian_loopback / martian_loopback / spoofed |
//! | to a container's address | direct_to_container / direct_to_container / spoofed |
//! | from inside the container network | source_in_network / source_in_network / spoofed |
//! | to an unpublished port, to a published port on another host's address, TTL 1 | P / P / spoofed |
//! | from 127.0.0.1, 0.0.0.0, 224.0.0.9, 255.255.255.255 or the host itself (LAND) to a published port | P / P / spoofed |
//! | Ethernet header only (type IPv4), IPv4 header truncated | refused / P / refused |
//! | first fragment of a SYN to a published port (new flow) | T / P / spoofed |
//! | IHL < 5, IHL past the packet, total length past the packet or below the header, version 6 in an IPv4 frame, a later fragment whose first was not translated | P / P / spoofed |
//! | TCP header truncated, data offset < 5 or past the segment; UDP header truncated, length past the datagram or below 8; ICMP header truncated; echo request to the host; timestamp request; IP protocol 253; SCTP to a published port number; VLAN-tagged SYN to a published port; IPv6; ARP | P / P / spoofed |
//! | ICMP errors about tracked flows: fragmentation needed (whole quote), port unreachable (8-byte quote), time exceeded quoting IP options, about a masqueraded ping, about a published flow's reply, quoting a first fragment | T / P / spoofed |
//! | ICMP errors: quote cut inside its IPv4 or transport header, quoting an ICMP error, quoted IHL < 5, quoting a later fragment, about an untracked flow, not addressed to the quoted packet's source, itself a fragment, TTL 1 | P / P / spoofed |
//! | from a container: SYN+FIN (new flow) | source_in_network / source_in_network / P |
//! | from a container: new TCP flows to the client and beyond the default route, ping (masqueraded); replies of published TCP and UDP flows; UDP checksum 0; RST outside the window and bad IPv4 checksum on a masqueraded flow; hairpin to a published port | source_in_network / source_in_network / T |
//! | from a container: to 255.255.255.255, 224.0.0.251, 0.0.0.0, a neighbour container | source_in_network / source_in_network / P |
//! | from a container: to 127.0.0.1 | martian_loopback / martian_loopback / P |
//! | from a container: another container's source address or MAC | source_in_network / source_in_network / spoofed |
//! | from a container: IPv4 cut before its source address | refused / P / refused |
//! | from a container: first fragment of a UDP datagram to the outside (masqueraded) | source_in_network / P / T |
//! | from a container: IHL < 5, TCP data offset past the segment, UDP length past the datagram, TTL 1, an ICMP error quoting an ICMP error or not addressed to the quoted packet's source, VLAN-tagged, IPv6, its own ARP | P / P / P |
//! | from a container: port unreachable about a published UDP flow | source_in_network / P / T |
//!
//! For every run: the verdict above, no `BPF_PROG_TEST_RUN` error (a
//! verifier rejection fails the load before; a refusal leaves every
//! counter and conntrack as they were), a passed or dropped packet
//! left byte for byte as it came, exactly one drop counted under the
//! documented reason (none otherwise), exactly one packet counted at the
//! program's hook, and no other map written: conntrack is unchanged for
//! everything not translated, and a translation touches only its own flow's
//! entry (or creates exactly its flow's two). The maps the programs only
//! read are compared at the start and the end. Every class also goes
//! through `netd observe`'s counting programs (`netd_observe_tc`,
//! `netd_observe_xdp`): passed untouched, counted once, nothing else
//! written.
//!
//! # The fuzzer
//!
//! `NETD_FUZZ_PACKETS` (default 1,000,000) frames mutated from the
//! corpus's frames with a fixed-seed SplitMix64 (bit flips, byte values,
//! truncation, length and header fields, insertions and deletions), each
//! run through all three programs, asserting for every run: no
//! `BPF_PROG_TEST_RUN` error but the refusal above, and that only for the
//! frames it applies to; a verdict of the hook's (TC: OK, SHOT,
//! REDIRECT; XDP: PASS, DROP); a pass or a drop leaves the frame and
//! conntrack as they were; a new conntrack entry only for a packet the
//! rules above let start a flow, and then exactly its flow's two; a
//! translated frame that follows the rules above, differs from what came
//! only in the fields a translation rewrites (MACs, TTL, addresses, ports
//! or echo identifier, checksums; for ICMP errors the quoted ones too),
//! carries the rewrite its conntrack entry names, has its TTL one lower,
//! and whose IPv4 header, transport and ICMP checksums (and quoted IPv4
//! header checksum) verify exactly when they did before (a later
//! fragment, judged with the ports the fragment map held for it before the
//! run, has only its IPv4 header's). Whole fragmented datagrams are
//! compared byte for byte in `datapath_test_run` and `outbound_test_run`.
//! At the end, the
//! drops counted equal the drops returned, no drop was a datapath failure
//! (`rewrite`, `fib_lookup`, `no_endpoint`, `redirect`), and every run was
//! counted at its hook once.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use netd::datapath::Maps;
use netd_common::{
    ct::{
        CT_NAT_DST, CT_NAT_SRC, CT_TO_ENDPOINT, CtEntry, CtKey, FRAG_TIMEOUT_NS, FragKey, FragPorts,
    },
    drop,
    endpoint::{UplinkInfo, XDP_MARK},
    map_names,
    ports::{MappingStats, SockRevKey, SockRevValue},
    stats::{ProtoStats, hook},
};
use netd_tests::{
    bpf::{Bpf, Hook, Run},
    fixture::*,
    netns::check,
    pktgen::{
        ETH_HLEN, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        Ipv4Packet, L4, arp_request, checksum, corrupt_ip_checksum, corrupt_l4_checksum, ethernet,
        ipv6_udp, tcp_flags,
    },
    require_root,
};
use serde::Serialize;

/// A router beyond the uplink, the default route's next hop in the test's
/// namespace, and an address only it leads to. No traffic is ever sent:
/// packets go through `BPF_PROG_TEST_RUN` only.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 254);
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfd];
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

const TCP_URG: u8 = 0x20;

/// Fixed, so that a failure names a packet that can be built again.
const FUZZ_SEED: u64 = 0x6e65_7464_2d66_757a;
const FUZZ_PACKETS_DEFAULT: usize = 1_000_000;
/// Room for insertions; far below what `BPF_PROG_TEST_RUN` accepts.
const FUZZ_MAX_FRAME: usize = 512;
/// Conntrack for the fuzzer: room for the established flows and a few new
/// ones, and a table small enough to read after every run.
const FUZZ_CT_MAX: u32 = 256;

// ---------------------------------------------------------------------------
// The programs and the fixture
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    UplinkTc,
    UplinkXdp,
    EndpointTc,
}

impl Program {
    /// In the order of [`Class::expect`].
    const ALL: [Self; 3] = [Self::UplinkTc, Self::UplinkXdp, Self::EndpointTc];

    fn name(self) -> &'static str {
        match self {
            Self::UplinkTc => UPLINK,
            Self::UplinkXdp => XDP,
            Self::EndpointTc => ENDPOINT,
        }
    }

    fn hook(self) -> u32 {
        match self {
            Self::UplinkTc => hook::UPLINK_TC,
            Self::UplinkXdp => hook::UPLINK_XDP,
            Self::EndpointTc => hook::ENDPOINT_TC,
        }
    }

    fn is_xdp(self) -> bool {
        self == Self::UplinkXdp
    }

    fn pass(self) -> i32 {
        if self.is_xdp() { XDP_PASS } else { TC_ACT_OK }
    }

    fn drop(self) -> i32 {
        if self.is_xdp() { XDP_DROP } else { TC_ACT_SHOT }
    }

    /// XDP passes a translated packet up with its mark; TC redirects it.
    fn translated(self) -> i32 {
        if self.is_xdp() {
            XDP_PASS
        } else {
            TC_ACT_REDIRECT
        }
    }

    fn valid_verdicts(self) -> &'static [i32] {
        if self.is_xdp() {
            &[XDP_PASS, XDP_DROP]
        } else {
            &[TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT]
        }
    }
}

/// What the tests need to know of the routed namespace, as plain data
/// (the namespace guard itself stays on the test's thread).
#[derive(Clone, Copy, Debug)]
struct Net {
    up0: u32,
    up0_mac: [u8; 6],
    hv1: u32,
    hv2: u32,
}

impl Net {
    fn of(routed: &Routed) -> Self {
        Self {
            up0: routed.up0,
            up0_mac: routed.up0_mac,
            hv1: routed.hv1,
            hv2: routed.hv2,
        }
    }
}

/// The routed namespace of [`Routed`], entered by this thread, with a
/// default route via [`ROUTER`] (a permanent neighbour) so that the FIB
/// routes flows to anywhere, as on a real host.
fn routed_namespace() -> (Routed, Net) {
    let own_netns = || std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    let host = own_netns();
    let routed = Routed::new();
    // `ip` runs as a child of this thread and so in its namespace: make
    // sure that is the test's, never the host's.
    assert_ne!(
        own_netns(),
        host,
        "routes are only ever added inside the test's namespace"
    );
    let router = ROUTER.to_string();
    check(Command::new("ip").args([
        "neigh",
        "add",
        &router,
        "lladdr",
        &mac_text(ROUTER_MAC),
        "dev",
        "up0",
        "nud",
        "permanent",
    ]));
    check(Command::new("ip").args(["route", "add", "default", "via", &router, "dev", "up0"]));
    let net = Net::of(&routed);
    (routed, net)
}

/// The fixture with its established flows, ready to run packets.
struct Datapath {
    bpf: Bpf,
    net: Net,
    /// Conntrack with the established flows, before any class ran.
    baseline: BTreeMap<CtKey, CtEntry>,
}

impl Datapath {
    /// The routed fixture (conntrack of `ct_max` entries, or the default)
    /// with the flows the corpus's replies and ICMP errors belong to.
    fn new(net: Net, ct_max: Option<u32>) -> Self {
        let mut bpf = fixture_on_with((net.hv1, net.hv2), ct_max, &rules()).expect("the fixture");
        Maps::new(bpf.ebpf_mut())
            .sync_uplinks(&BTreeMap::from([(net.up0, HOST)]))
            .expect("uplinks");
        let mut datapath = Self {
            bpf,
            net,
            baseline: BTreeMap::new(),
        };
        let established: [(Program, Vec<u8>); 5] = [
            (
                Program::UplinkTc,
                from_client(&net, HOST, L4::tcp(40000, 8080, tcp_flags::SYN)).build(),
            ),
            (
                Program::UplinkTc,
                from_client(&net, HOST, L4::udp(40001, 5353, b"query")).build(),
            ),
            (
                Program::EndpointTc,
                from_ctr(CLIENT, L4::tcp(41000, 80, tcp_flags::SYN)).build(),
            ),
            (
                Program::EndpointTc,
                from_ctr(CLIENT, L4::udp(41001, 53, b"query")).build(),
            ),
            (
                Program::EndpointTc,
                from_ctr(CLIENT, L4::icmp_echo(true, 7, 1)).build(),
            ),
        ];
        for (program, frame) in established {
            let run = datapath.run(program, &frame).expect("BPF_PROG_TEST_RUN");
            assert_eq!(
                run.verdict,
                TC_ACT_REDIRECT,
                "establishing a flow with {}",
                hex(&frame)
            );
        }
        datapath.baseline = datapath.ct();
        assert_eq!(datapath.baseline.len(), 10, "five flows, two entries each");
        datapath
    }

    fn run(&mut self, program: Program, frame: &[u8]) -> Result<Run, aya::programs::ProgramError> {
        match program {
            Program::UplinkTc => self.bpf.try_run(Hook::Tc, UPLINK, frame, None, 1),
            Program::UplinkXdp => self.bpf.try_run(Hook::Xdp, XDP, frame, None, 1),
            // As if container 1 sent it: its host veth is the input.
            Program::EndpointTc => {
                self.bpf
                    .try_run(Hook::Tc, ENDPOINT, frame, Some(self.net.hv1), 1)
            }
        }
    }

    fn ct(&mut self) -> BTreeMap<CtKey, CtEntry> {
        Maps::new(self.bpf.ebpf_mut())
            .ct_entries()
            .expect("reading conntrack")
            .into_iter()
            .collect()
    }

    /// Puts conntrack back to `to`, from its state `now`.
    fn restore_ct(&mut self, now: &BTreeMap<CtKey, CtEntry>, to: &BTreeMap<CtKey, CtEntry>) {
        let mut maps = Maps::new(self.bpf.ebpf_mut());
        let extra: Vec<CtKey> = now
            .keys()
            .filter(|k| !to.contains_key(k))
            .copied()
            .collect();
        if !extra.is_empty() {
            maps.ct_remove_all(&extra).expect("removing entries");
        }
        for (key, entry) in to {
            if now.get(key) != Some(entry) {
                maps.ct_insert(key, entry).expect("restoring an entry");
            }
        }
    }

    fn counters(&mut self) -> Counters {
        let mut maps = Maps::new(self.bpf.ebpf_mut());
        Counters {
            drops: maps.drops().expect("drops"),
            hooks: maps.proto_stats().expect("hook counters"),
            mappings: (0..rules().len() as u32)
                .map(|slot| maps.mapping_stats(slot).expect("mapping counters"))
                .collect(),
        }
    }

    /// Everything in the maps the packet programs only read, as text.
    fn configuration(&mut self) -> String {
        let mut maps = Maps::new(self.bpf.ebpf_mut());
        let mut text = format!(
            "config {:?}\nendpoints {:?}\nveths {:?}\n",
            maps.config().expect("config"),
            maps.endpoints().expect("endpoints"),
            maps.veths().expect("veths"),
        );
        for (key, slot) in maps.port_keys().expect("port keys") {
            text += &format!("port /{} {:?} -> {slot}\n", key.prefix_len(), key.data());
        }
        for slot in 0..rules().len() as u32 {
            text += &format!(
                "mapping {slot} {:?}\n",
                maps.mapping(slot).expect("mapping")
            );
        }
        let local: BpfHashMap<&MapData, [u8; 4], u32> =
            BpfHashMap::try_from(&*self.bpf.map_mut(map_names::LOCAL_ADDRS))
                .expect("local addresses");
        let mut local: Vec<_> = local.iter().map(|e| e.expect("entry")).collect();
        local.sort();
        text += &format!("local {local:?}\n");
        let uplinks: BpfHashMap<&MapData, u32, UplinkInfo> =
            BpfHashMap::try_from(&*self.bpf.map_mut(map_names::UPLINKS)).expect("uplinks");
        let mut uplinks: Vec<_> = uplinks.iter().map(|e| e.expect("entry")).collect();
        uplinks.sort();
        text += &format!("uplinks {uplinks:?}\n");
        let revnat: BpfHashMap<&MapData, SockRevKey, SockRevValue> =
            BpfHashMap::try_from(&*self.bpf.map_mut(map_names::SOCK_REVNAT))
                .expect("socket reverse NAT");
        let mut revnat: Vec<_> = revnat.iter().map(|e| e.expect("entry")).collect();
        revnat.sort();
        text += &format!("sock revnat {revnat:?}\n");
        text
    }
}

/// The counters the programs keep: drops by reason, packets by hook,
/// traffic by mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Counters {
    drops: Vec<u64>,
    hooks: Vec<ProtoStats>,
    mappings: Vec<MappingStats>,
}

impl Counters {
    /// Exactly one more packet at `program`'s hook, and nothing else.
    fn one_packet_at(&self, after: &Self, program: Program) -> Result<(), String> {
        for (index, (was, is)) in self.hooks.iter().zip(&after.hooks).enumerate() {
            let more = u64::from(index as u32 == program.hook());
            if is.packets() != was.packets() + more {
                return Err(format!(
                    "hook {} counted {} packets for one run at {}",
                    hook::NAMES[index],
                    is.packets() - was.packets(),
                    program.name()
                ));
            }
        }
        Ok(())
    }

    /// The drops counted between `self` and `after`, by reason name.
    fn drops_since(&self, after: &Self) -> Vec<(&'static str, u64)> {
        self.drops
            .iter()
            .zip(&after.drops)
            .enumerate()
            .filter(|(_, (was, is))| is != was)
            .map(|(index, (was, is))| (drop::NAMES[index], is - was))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------

/// A packet from the outside client, as it reaches the uplink.
fn from_client(net: &Net, dst: Ipv4Addr, l4: L4) -> Ipv4Packet {
    from_outside(net, CLIENT, dst, l4)
}

/// A packet from anywhere outside, as it reaches the uplink.
fn from_outside(net: &Net, src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Ipv4Packet {
    Ipv4Packet::new(src, dst, l4).with_macs(net.up0_mac, CLIENT_MAC)
}

/// A packet container 1 sends (its own address and MAC, to the gateway).
fn from_ctr(dst: Ipv4Addr, l4: L4) -> Ipv4Packet {
    Ipv4Packet::new(CTR, dst, l4).with_macs(GW_MAC, CTR_MAC)
}

fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::tcp(sport, dport, flags)
}

/// A TCP segment with a sequence number and data.
fn tcp_segment(sport: u16, dport: u16, flags: u8, seq: u32, payload: &[u8]) -> L4 {
    L4::Tcp {
        sport,
        dport,
        seq,
        ack: 0x2000_0000,
        flags,
        payload: payload.to_vec(),
    }
}

fn udp_no_checksum(sport: u16, dport: u16, payload: &[u8]) -> L4 {
    L4::Udp {
        sport,
        dport,
        payload: payload.to_vec(),
        zero_checksum: true,
    }
}

/// An ICMP error of `kind`/`code` quoting the first `quote` bytes of
/// `quoted` (all of it when it is shorter).
fn icmp_error(kind: u8, code: u8, rest: [u8; 4], quoted: &Ipv4Packet, quote: usize) -> L4 {
    let bytes = quoted.ip_bytes();
    L4::Icmp {
        kind,
        code,
        rest,
        payload: bytes[..quote.min(bytes.len())].to_vec(),
    }
}

/// An ICMP error quoting raw bytes.
fn icmp_error_quoting(kind: u8, code: u8, quote: Vec<u8>) -> L4 {
    L4::Icmp {
        kind,
        code,
        rest: [0; 4],
        payload: quote,
    }
}

fn with_ttl(mut packet: Ipv4Packet, ttl: u8) -> Ipv4Packet {
    packet.ttl = ttl;
    packet
}

fn with_frag(mut packet: Ipv4Packet, frag: u16) -> Ipv4Packet {
    packet.frag = frag;
    packet
}

fn with_options(mut packet: Ipv4Packet, options: &[u8]) -> Ipv4Packet {
    packet.options = options.to_vec();
    packet
}

/// `frame` after `change`.
fn edited(mut frame: Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    change(&mut frame);
    frame
}

/// Recomputes the IPv4 header checksum of `frame` over the header its IHL
/// names (20 bytes when that is less), so that an edited header carries
/// only the defect it was edited for.
fn fix_ip_checksum(frame: &mut [u8]) {
    let ihl = (usize::from(frame[ETH_HLEN] & 0x0f) * 4).max(20);
    let end = (ETH_HLEN + ihl).min(frame.len());
    frame[ETH_HLEN + 10..ETH_HLEN + 12].fill(0);
    let sum = checksum(0, &frame[ETH_HLEN..end]);
    frame[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Sets the IPv4 total length and fixes the header checksum.
fn set_total_length(frame: &mut [u8], total: u16) {
    frame[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(frame);
}

/// Cuts the IP packet of `frame` to `ip_len` bytes, total length included.
fn cut_ip_packet(mut frame: Vec<u8>, ip_len: usize) -> Vec<u8> {
    frame.truncate(ETH_HLEN + ip_len);
    set_total_length(&mut frame, ip_len as u16);
    frame
}

/// Sets the TCP data offset (20-byte IPv4 header) and fixes the checksum.
fn set_tcp_data_offset(frame: &mut [u8], words: u8) {
    let l4 = ETH_HLEN + 20;
    frame[l4 + 12] = (words << 4) | (frame[l4 + 12] & 0x0f);
    let (src, dst) = (
        &frame[ETH_HLEN + 12..ETH_HLEN + 16],
        &frame[ETH_HLEN + 16..ETH_HLEN + 20],
    );
    let seed = pseudo_header_sum(
        src.try_into().expect("4 bytes"),
        dst.try_into().expect("4 bytes"),
        IPPROTO_TCP,
        frame.len() - l4,
    );
    frame[l4 + 16..l4 + 18].fill(0);
    let sum = checksum(seed, &frame[l4..]);
    frame[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
}

/// A VLAN tag (VID 5) after the MAC addresses.
fn vlan_tagged(mut frame: Vec<u8>) -> Vec<u8> {
    let tag = [ETH_P_8021Q.to_be_bytes(), [0x00, 0x05]].concat();
    frame.splice(12..12, tag);
    frame
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Where two frames first differ, and both in full.
fn difference(got: &[u8], want: &[u8]) -> String {
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| got.len().min(want.len()));
    format!(
        "{} bytes, {} expected, first difference at byte {first}\n      got  {}\n      want {}",
        got.len(),
        want.len(),
        hex(got),
        hex(want)
    )
}

// ---------------------------------------------------------------------------
// Expected verdicts
// ---------------------------------------------------------------------------

/// Addresses and ports a translation sets (what it leaves alone is `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
struct Fields {
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    echo_id: Option<u16>,
}

/// A translation as the documentation states it, for Scapy to carry out.
#[derive(Clone, Debug)]
struct Translation {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    outer: Fields,
    /// What an ICMP error quotes.
    quoted: Fields,
    /// The container's host veth when delivered into a container (XDP
    /// names it in its mark); `None` when routed out.
    into: Option<u32>,
    /// A new flow: exactly its two conntrack entries are created.
    creates_flow: bool,
}

impl Translation {
    fn into_container(mac: [u8; 6], veth: u32) -> Self {
        Self {
            eth_dst: mac,
            eth_src: GW_MAC,
            outer: Fields::default(),
            quoted: Fields::default(),
            into: Some(veth),
            creates_flow: false,
        }
    }

    fn routed_out(next_hop: [u8; 6], uplink_mac: [u8; 6]) -> Self {
        Self {
            eth_dst: next_hop,
            eth_src: uplink_mac,
            outer: Fields::default(),
            quoted: Fields::default(),
            into: None,
            creates_flow: false,
        }
    }

    fn src(mut self, addr: Ipv4Addr, port: u16) -> Self {
        self.outer.src = Some(addr);
        self.outer.sport = Some(port);
        self
    }

    fn src_addr(mut self, addr: Ipv4Addr) -> Self {
        self.outer.src = Some(addr);
        self
    }

    fn dst(mut self, addr: Ipv4Addr, port: u16) -> Self {
        self.outer.dst = Some(addr);
        self.outer.dport = Some(port);
        self
    }

    fn dst_addr(mut self, addr: Ipv4Addr) -> Self {
        self.outer.dst = Some(addr);
        self
    }

    fn echo_id(mut self, id: u16) -> Self {
        self.outer.echo_id = Some(id);
        self
    }

    fn quoted_src(mut self, addr: Ipv4Addr, port: u16) -> Self {
        self.quoted.src = Some(addr);
        self.quoted.sport = Some(port);
        self
    }

    fn quoted_dst(mut self, addr: Ipv4Addr, port: u16) -> Self {
        self.quoted.dst = Some(addr);
        self.quoted.dport = Some(port);
        self
    }

    fn quoted_src_echo(mut self, addr: Ipv4Addr, id: u16) -> Self {
        self.quoted.src = Some(addr);
        self.quoted.echo_id = Some(id);
        self
    }

    fn creates_flow(mut self) -> Self {
        self.creates_flow = true;
        self
    }
}

#[derive(Clone, Debug)]
enum Expect {
    /// Passed on untouched: TC_ACT_OK or XDP_PASS, the frame as it came.
    Pass,
    /// Dropped and counted under this reason: TC_ACT_SHOT or XDP_DROP, the
    /// frame as it came.
    Drop(u32),
    /// Translated as Scapy translates it, and delivered.
    Translate(Translation),
    /// Never run: `BPF_PROG_TEST_RUN` refuses the frame (EINVAL) before
    /// any program sees it (see [`test_run_refuses`]).
    Refused,
}

use Expect::{Drop as Dropped, Pass as Passed, Refused, Translate as T};

/// Whether the kernel refuses to run `program` on `frame`: for skb
/// programs (TC) it wants an IPv4 frame to hold at least a 20-byte header
/// and an IPv6 frame a 40-byte one (net/bpf/test_run.c, as measured on
/// 6.18); XDP takes any frame of an Ethernet header or more. Such frames do
/// reach TC in real life, where the datapath's bounds checks meet them;
/// here only XDP, which shares the parser, can be given them.
fn test_run_refuses(program: Program, frame: &[u8]) -> bool {
    if frame.len() < ETH_HLEN {
        return true;
    }
    if program.is_xdp() {
        return false;
    }
    match be16(frame, 12) {
        ETH_P_IP => frame.len() < ETH_HLEN + 20,
        ETH_P_IPV6 => frame.len() < ETH_HLEN + 40,
        _ => false,
    }
}

/// Whether `error` is the kernel refusing the frame (EINVAL).
fn is_refusal(error: &aya::programs::ProgramError) -> bool {
    matches!(error, aya::programs::ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EINVAL))
}

/// A named packet class and its documented verdict at each program, in
/// [`Program::ALL`] order.
struct Class {
    name: &'static str,
    frame: Vec<u8>,
    expect: [Expect; 3],
}

/// A class of packets from outside: the same verdict at uplink TC and XDP
/// (unless given apart), `spoofed` at the endpoint (not the container's
/// MAC).
fn inbound(name: &'static str, frame: Vec<u8>, uplink: Expect) -> Class {
    inbound_apart(name, frame, uplink.clone(), uplink)
}

fn inbound_apart(name: &'static str, frame: Vec<u8>, tc: Expect, xdp: Expect) -> Class {
    Class {
        name,
        frame,
        expect: [tc, xdp, Dropped(drop::SPOOFED)],
    }
}

impl Class {
    /// The endpoint program cannot be given this frame either.
    fn refused_at_endpoint(mut self) -> Self {
        self.expect[2] = Refused;
        self
    }
}

/// A class of packets from container 1.
fn outbound(
    name: &'static str,
    frame: Vec<u8>,
    uplink_tc: Expect,
    uplink_xdp: Expect,
    endpoint: Expect,
) -> Class {
    Class {
        name,
        frame,
        expect: [uplink_tc, uplink_xdp, endpoint],
    }
}

/// The corpus. See the module documentation for the verdicts at a glance.
fn corpus(net: &Net) -> Vec<Class> {
    let into_ctr = || Translation::into_container(CTR_MAC, net.hv1);
    let into_ctr2 = || Translation::into_container(CTR2_MAC, net.hv2);
    let out_to_client = || Translation::routed_out(CLIENT_MAC, net.up0_mac);
    let out_via_router = || Translation::routed_out(ROUTER_MAC, net.up0_mac);
    let from_client = |dst, l4| from_client(net, dst, l4);
    let from_outside = |src, dst, l4| from_outside(net, src, dst, l4);
    let syn_to_8080 = |sport| from_client(HOST, tcp(sport, 8080, tcp_flags::SYN));
    let in_network_source = Ipv4Addr::new(172, 30, 0, 9);
    let from_network = Dropped(drop::SOURCE_IN_NETWORK);

    // What left the host for the masqueraded flows, as a router down the
    // path quotes it.
    let masqueraded_tcp = with_ttl(
        Ipv4Packet::new(HOST, CLIENT, tcp(NAT_PORT, 80, tcp_flags::SYN)),
        63,
    );
    let masqueraded_udp = with_ttl(
        Ipv4Packet::new(HOST, CLIENT, L4::udp(NAT_PORT, 53, b"query")),
        63,
    );
    let masqueraded_ping = with_ttl(
        Ipv4Packet::new(HOST, CLIENT, L4::icmp_echo(true, NAT_PORT, 1)),
        63,
    );
    let published_reply = with_ttl(
        Ipv4Packet::new(
            HOST,
            CLIENT,
            tcp(8080, 40000, tcp_flags::SYN | tcp_flags::ACK),
        ),
        63,
    );
    // What container 1 received of the published UDP flow.
    let received_udp = with_ttl(
        Ipv4Packet::new(CLIENT, CTR, L4::udp(40001, 53, b"query")),
        63,
    );
    let port_unreachable = |quoted: &Ipv4Packet| icmp_error(3, 3, [0; 4], quoted, usize::MAX);
    let time_exceeded = |quoted: &Ipv4Packet| icmp_error(11, 0, [0; 4], quoted, usize::MAX);

    vec![
        // --- From outside, well formed ---
        inbound(
            "tcp_syn_new_flow_to_published_port",
            syn_to_8080(40100).build(),
            T(into_ctr().dst(CTR, 80).creates_flow()),
        ),
        inbound(
            "tcp_segment_with_data_of_tracked_flow",
            from_client(
                HOST,
                tcp_segment(
                    40000,
                    8080,
                    tcp_flags::ACK | tcp_flags::PSH,
                    0x1000_0001,
                    b"GET / HTTP/1.0\r\n\r\n",
                ),
            )
            .build(),
            T(into_ctr().dst(CTR, 80)),
        ),
        inbound(
            "udp_new_flow_to_published_port",
            from_client(HOST, L4::udp(40101, 5353, b"query")).build(),
            T(into_ctr().dst(CTR, 53).creates_flow()),
        ),
        inbound(
            "udp_checksum_zero_stays_zero",
            from_client(HOST, udp_no_checksum(40102, 5353, b"query")).build(),
            T(into_ctr().dst(CTR, 53).creates_flow()),
        ),
        inbound(
            "ip_options_record_route",
            // Record Route: type 7, length 7, pointer 4, one empty slot;
            // End of List.
            with_options(syn_to_8080(40103), &[7, 7, 4, 0, 0, 0, 0, 0]).build(),
            T(into_ctr().dst(CTR, 80).creates_flow()),
        ),
        inbound(
            "ip_options_router_alert",
            with_options(syn_to_8080(40104), &[148, 4, 0, 0]).build(),
            T(into_ctr().dst(CTR, 80).creates_flow()),
        ),
        inbound(
            "ethernet_padding_after_short_datagram",
            edited(
                from_client(HOST, L4::udp(40105, 5353, b"x")).build(),
                |frame| frame.resize(60, 0),
            ),
            T(into_ctr().dst(CTR, 53).creates_flow()),
        ),
        inbound(
            "ttl_two_is_forwarded",
            with_ttl(syn_to_8080(40106), 2).build(),
            T(into_ctr().dst(CTR, 80).creates_flow()),
        ),
        inbound(
            "icmp_echo_reply_of_masqueraded_ping",
            from_client(HOST, L4::icmp_echo(false, NAT_PORT, 1)).build(),
            T(into_ctr().dst_addr(CTR).echo_id(7)),
        ),
        inbound(
            "tcp_synack_of_masqueraded_flow",
            from_client(HOST, tcp(80, NAT_PORT, tcp_flags::SYN | tcp_flags::ACK)).build(),
            T(into_ctr().dst(CTR, 41000)),
        ),
        inbound(
            "udp_reply_of_masqueraded_flow",
            from_client(HOST, L4::udp(53, NAT_PORT, b"answer")).build(),
            T(into_ctr().dst(CTR, 41001)),
        ),
        // --- Checksums: never validated, errors kept ---
        inbound(
            "bad_ip_checksum_on_tracked_flow",
            edited(
                from_client(HOST, tcp(40000, 8080, tcp_flags::ACK)).build(),
                |frame| corrupt_ip_checksum(frame),
            ),
            T(into_ctr().dst(CTR, 80)),
        ),
        inbound(
            "bad_tcp_checksum_on_tracked_flow",
            edited(
                from_client(HOST, tcp(40000, 8080, tcp_flags::ACK)).build(),
                |frame| corrupt_l4_checksum(frame),
            ),
            T(into_ctr().dst(CTR, 80)),
        ),
        inbound(
            "bad_udp_checksum_on_new_flow",
            edited(
                from_client(HOST, L4::udp(40107, 5353, b"query")).build(),
                |frame| corrupt_l4_checksum(frame),
            ),
            T(into_ctr().dst(CTR, 53).creates_flow()),
        ),
        // --- TCP flags: only a SYN (or a plain ACK, picked up mid-stream)
        // starts a flow, as in netfilter; a tracked flow's segments are
        // translated whatever their flags ---
        inbound(
            "tcp_syn_fin_new_flow",
            from_client(HOST, tcp(40108, 8080, tcp_flags::SYN | tcp_flags::FIN)).build(),
            Passed,
        ),
        inbound(
            "tcp_rst_out_of_window_on_tracked_flow",
            from_client(
                HOST,
                tcp_segment(40000, 8080, tcp_flags::RST, 0xdead_beef, b""),
            )
            .build(),
            T(into_ctr().dst(CTR, 80)),
        ),
        inbound(
            "tcp_xmas_new_flow",
            from_client(
                HOST,
                tcp(40109, 8080, tcp_flags::FIN | tcp_flags::PSH | TCP_URG),
            )
            .build(),
            Passed,
        ),
        inbound(
            "tcp_no_flags_new_flow",
            from_client(HOST, tcp(40110, 8080, 0)).build(),
            Passed,
        ),
        // --- Policy ---
        inbound(
            "to_loopback_from_outside",
            from_client(Ipv4Addr::LOCALHOST, tcp(40111, 8082, tcp_flags::SYN)).build(),
            Dropped(drop::MARTIAN_LOOPBACK),
        ),
        inbound(
            "to_container_address_from_outside",
            from_client(CTR, tcp(40112, 80, tcp_flags::SYN)).build(),
            Dropped(drop::DIRECT_TO_CONTAINER),
        ),
        inbound(
            "source_inside_container_network",
            from_outside(in_network_source, HOST, tcp(40113, 8080, tcp_flags::SYN)).build(),
            from_network.clone(),
        ),
        inbound(
            "unpublished_port",
            from_client(HOST, tcp(40114, 22, tcp_flags::SYN)).build(),
            Passed,
        ),
        inbound(
            "published_port_on_a_foreign_address",
            from_client(NOT_LOCAL, tcp(40115, 8080, tcp_flags::SYN)).build(),
            Passed,
        ),
        inbound("ttl_one", with_ttl(syn_to_8080(40116), 1).build(), Passed),
        // --- Martian and local sources never start a flow ---
        inbound(
            "source_loopback",
            from_outside(Ipv4Addr::LOCALHOST, HOST, tcp(40117, 8080, tcp_flags::SYN)).build(),
            Passed,
        ),
        inbound(
            "source_zero_network",
            from_outside(
                Ipv4Addr::UNSPECIFIED,
                HOST,
                tcp(40118, 8080, tcp_flags::SYN),
            )
            .build(),
            Passed,
        ),
        inbound(
            "source_multicast",
            from_outside(
                Ipv4Addr::new(224, 0, 0, 9),
                HOST,
                L4::udp(520, 5353, b"rip"),
            )
            .build(),
            Passed,
        ),
        inbound(
            "source_limited_broadcast",
            from_outside(Ipv4Addr::BROADCAST, HOST, L4::udp(68, 5353, b"dhcp")).build(),
            Passed,
        ),
        inbound(
            "source_is_the_host_itself",
            from_outside(HOST, HOST, tcp(8080, 8080, tcp_flags::SYN)).build(),
            Passed,
        ),
        // --- Malformed Ethernet and IPv4 ---
        inbound_apart(
            "ethernet_header_only",
            ethernet(net.up0_mac, CLIENT_MAC, ETH_P_IP, &[]),
            Refused,
            Passed,
        )
        .refused_at_endpoint(),
        inbound_apart(
            "ipv4_header_truncated",
            edited(syn_to_8080(40119).build(), |frame| {
                frame.truncate(ETH_HLEN + 12)
            }),
            Refused,
            Passed,
        )
        .refused_at_endpoint(),
        inbound(
            "ihl_below_5",
            edited(syn_to_8080(40120).build(), |frame| {
                frame[ETH_HLEN] = 0x44;
                fix_ip_checksum(frame);
            }),
            Passed,
        ),
        inbound(
            "ihl_past_the_packet",
            edited(syn_to_8080(40121).build(), |frame| {
                frame.truncate(ETH_HLEN + 24);
                frame[ETH_HLEN] = 0x4f;
                set_total_length(frame, 24);
            }),
            Passed,
        ),
        inbound(
            "total_length_past_the_packet",
            edited(syn_to_8080(40122).build(), |frame| {
                let past = (frame.len() - ETH_HLEN + 100) as u16;
                set_total_length(frame, past);
            }),
            Passed,
        ),
        inbound(
            "total_length_below_the_header",
            edited(syn_to_8080(40123).build(), |frame| {
                set_total_length(frame, 16)
            }),
            Passed,
        ),
        inbound(
            "ip_version_6_in_an_ipv4_frame",
            edited(syn_to_8080(40124).build(), |frame| {
                frame[ETH_HLEN] = 0x65;
                fix_ip_checksum(frame);
            }),
            Passed,
        ),
        // A first fragment carries the transport header: translated as a
        // whole packet is, at TC (XDP leaves fragments to TC).
        inbound_apart(
            "first_fragment",
            with_frag(syn_to_8080(40125), 0x2000).build(),
            T(into_ctr().dst(CTR, 80).creates_flow()),
            Passed,
        ),
        // The same datagram identity as the class before, whose first
        // fragment was translated and left its ports; but that flow is
        // gone (conntrack is put back after each class): nothing to
        // deliver it with.
        inbound(
            "later_fragment",
            with_frag(syn_to_8080(40126), 185).build(),
            Passed,
        ),
        // --- Malformed transport headers ---
        inbound(
            "tcp_header_truncated",
            cut_ip_packet(syn_to_8080(40127).build(), 20 + 10),
            Passed,
        ),
        inbound(
            "tcp_data_offset_below_5",
            edited(syn_to_8080(40128).build(), |frame| {
                set_tcp_data_offset(frame, 4)
            }),
            Passed,
        ),
        inbound(
            "tcp_data_offset_past_the_segment",
            edited(syn_to_8080(40129).build(), |frame| {
                set_tcp_data_offset(frame, 15)
            }),
            Passed,
        ),
        inbound(
            "udp_header_truncated",
            cut_ip_packet(
                from_client(HOST, L4::udp(40130, 5353, b"query")).build(),
                20 + 6,
            ),
            Passed,
        ),
        inbound(
            "udp_length_past_the_datagram",
            edited(
                from_client(HOST, L4::udp(40131, 5353, b"query")).build(),
                |frame| frame[ETH_HLEN + 24..ETH_HLEN + 26].copy_from_slice(&200u16.to_be_bytes()),
            ),
            Passed,
        ),
        inbound(
            "udp_length_below_the_header",
            edited(
                from_client(HOST, L4::udp(40132, 5353, b"query")).build(),
                |frame| frame[ETH_HLEN + 24..ETH_HLEN + 26].copy_from_slice(&4u16.to_be_bytes()),
            ),
            Passed,
        ),
        inbound(
            "icmp_header_truncated",
            cut_ip_packet(from_client(HOST, L4::icmp_echo(true, 5, 1)).build(), 20 + 4),
            Passed,
        ),
        inbound(
            "icmp_echo_request_to_the_host",
            from_client(HOST, L4::icmp_echo(true, 5, 1)).build(),
            Passed,
        ),
        inbound(
            "icmp_timestamp_request",
            from_client(
                HOST,
                L4::Icmp {
                    kind: 13,
                    code: 0,
                    rest: [0, 5, 0, 1],
                    payload: vec![0; 12],
                },
            )
            .build(),
            Passed,
        ),
        inbound(
            "unknown_ip_protocol",
            from_client(
                HOST,
                L4::Raw {
                    proto: 253,
                    payload: vec![0x1f, 0x90, 0x1f, 0x90, 0, 0, 0, 0],
                },
            )
            .build(),
            Passed,
        ),
        inbound(
            "sctp_to_a_published_port_number",
            from_client(
                HOST,
                L4::Raw {
                    proto: 132,
                    payload: [&40133u16.to_be_bytes()[..], &8080u16.to_be_bytes(), &[0; 8]]
                        .concat(),
                },
            )
            .build(),
            Passed,
        ),
        inbound(
            "vlan_tagged_syn_to_published_port",
            vlan_tagged(syn_to_8080(40134).build()),
            Passed,
        ),
        inbound("ipv6", ipv6_udp(), Passed),
        inbound("arp_request", arp_request(CLIENT, HOST), Passed),
        // --- ICMP errors from outside ---
        inbound_apart(
            "icmp_fragmentation_needed_about_masqueraded_tcp",
            from_outside(
                ROUTER,
                HOST,
                icmp_error(3, 4, [0, 0, 0x05, 0x78], &masqueraded_tcp, usize::MAX),
            )
            .build(),
            T(into_ctr().dst_addr(CTR).quoted_src(CTR, 41000)),
            Passed,
        ),
        inbound_apart(
            "icmp_port_unreachable_with_8_byte_quote",
            from_client(HOST, icmp_error(3, 3, [0; 4], &masqueraded_udp, 28)).build(),
            T(into_ctr().dst_addr(CTR).quoted_src(CTR, 41001)),
            Passed,
        ),
        inbound_apart(
            "icmp_time_exceeded_quoting_ip_options",
            from_outside(
                ROUTER,
                HOST,
                icmp_error(
                    11,
                    0,
                    [0; 4],
                    &with_options(masqueraded_tcp.clone(), &[7, 7, 4, 0, 0, 0, 0, 0]),
                    28 + 8,
                ),
            )
            .build(),
            T(into_ctr().dst_addr(CTR).quoted_src(CTR, 41000)),
            Passed,
        ),
        inbound_apart(
            "icmp_time_exceeded_about_masqueraded_ping",
            from_outside(ROUTER, HOST, time_exceeded(&masqueraded_ping)).build(),
            T(into_ctr().dst_addr(CTR).quoted_src_echo(CTR, 7)),
            Passed,
        ),
        inbound_apart(
            "icmp_error_about_published_flow_reply",
            from_outside(ROUTER, HOST, time_exceeded(&published_reply)).build(),
            T(into_ctr().dst_addr(CTR).quoted_src(CTR, 80)),
            Passed,
        ),
        inbound(
            "icmp_error_quote_cut_in_ip_header",
            from_client(HOST, icmp_error(3, 3, [0; 4], &masqueraded_udp, 12)).build(),
            Passed,
        ),
        inbound(
            "icmp_error_quote_cut_in_transport_header",
            from_client(HOST, icmp_error(3, 3, [0; 4], &masqueraded_udp, 24)).build(),
            Passed,
        ),
        inbound(
            "icmp_error_about_an_icmp_error",
            from_outside(
                ROUTER,
                HOST,
                time_exceeded(&Ipv4Packet::new(
                    HOST,
                    CLIENT,
                    port_unreachable(&masqueraded_udp),
                )),
            )
            .build(),
            Passed,
        ),
        inbound(
            "icmp_error_quoted_ihl_below_5",
            from_client(
                HOST,
                icmp_error_quoting(3, 3, {
                    let mut quote = masqueraded_udp.ip_bytes();
                    quote[0] = 0x44;
                    quote
                }),
            )
            .build(),
            Passed,
        ),
        // A first fragment quoted (a reassembly timeout quotes one): its
        // transport header is there.
        inbound_apart(
            "icmp_error_quoting_a_first_fragment",
            from_client(
                HOST,
                port_unreachable(&with_frag(masqueraded_udp.clone(), 0x2000)),
            )
            .build(),
            T(into_ctr().dst_addr(CTR).quoted_src(CTR, 41001)),
            Passed,
        ),
        inbound(
            "icmp_error_quoting_a_later_fragment",
            from_client(
                HOST,
                port_unreachable(&with_frag(masqueraded_udp.clone(), 0x2001)),
            )
            .build(),
            Passed,
        ),
        inbound(
            "icmp_error_about_an_untracked_flow",
            from_client(
                HOST,
                port_unreachable(&Ipv4Packet::new(HOST, CLIENT, L4::udp(12345, 53, b"query"))),
            )
            .build(),
            Passed,
        ),
        inbound(
            "icmp_error_not_to_the_quoted_source",
            from_outside(ROUTER, HOST2, time_exceeded(&masqueraded_tcp)).build(),
            Passed,
        ),
        inbound(
            "icmp_error_itself_a_fragment",
            with_frag(
                from_client(HOST, port_unreachable(&masqueraded_udp)),
                0x2000,
            )
            .build(),
            Passed,
        ),
        inbound(
            "icmp_error_ttl_one",
            with_ttl(from_client(HOST, port_unreachable(&masqueraded_udp)), 1).build(),
            Passed,
        ),
        // --- From a container ---
        outbound(
            "ctr_tcp_syn_new_flow_masqueraded",
            from_ctr(CLIENT, tcp(42000, 81, tcp_flags::SYN)).build(),
            from_network.clone(),
            from_network.clone(),
            T(out_to_client().src(HOST, NAT_PORT).creates_flow()),
        ),
        outbound(
            "ctr_tcp_syn_beyond_the_default_route",
            from_ctr(FAR, tcp(42001, 443, tcp_flags::SYN)).build(),
            from_network.clone(),
            from_network.clone(),
            T(out_via_router().src(HOST, NAT_PORT).creates_flow()),
        ),
        outbound(
            "ctr_tcp_syn_fin_new_flow",
            from_ctr(FAR, tcp(42002, 443, tcp_flags::SYN | tcp_flags::FIN)).build(),
            from_network.clone(),
            from_network.clone(),
            Passed,
        ),
        outbound(
            "ctr_echo_request_masqueraded",
            from_ctr(FAR, L4::icmp_echo(true, 9, 1)).build(),
            from_network.clone(),
            from_network.clone(),
            T(out_via_router()
                .src_addr(HOST)
                .echo_id(NAT_PORT)
                .creates_flow()),
        ),
        outbound(
            "ctr_synack_of_published_flow",
            from_ctr(CLIENT, tcp(80, 40000, tcp_flags::SYN | tcp_flags::ACK)).build(),
            from_network.clone(),
            from_network.clone(),
            T(out_to_client().src(HOST, 8080)),
        ),
        outbound(
            "ctr_udp_reply_of_published_flow",
            from_ctr(CLIENT, L4::udp(53, 40001, b"answer")).build(),
            from_network.clone(),
            from_network.clone(),
            T(out_to_client().src(HOST, 5353)),
        ),
        outbound(
            "ctr_udp_checksum_zero_masqueraded",
            from_ctr(CLIENT, udp_no_checksum(42003, 54, b"query")).build(),
            from_network.clone(),
            from_network.clone(),
            T(out_to_client().src(HOST, NAT_PORT).creates_flow()),
        ),
        outbound(
            "ctr_rst_out_of_window_on_masqueraded_flow",
            from_ctr(
                CLIENT,
                tcp_segment(41000, 80, tcp_flags::RST, 0xdead_beef, b""),
            )
            .build(),
            from_network.clone(),
            from_network.clone(),
            T(out_to_client().src(HOST, NAT_PORT)),
        ),
        outbound(
            "ctr_bad_ip_checksum_on_masqueraded_flow",
            edited(
                from_ctr(CLIENT, tcp(41000, 80, tcp_flags::ACK)).build(),
                |frame| corrupt_ip_checksum(frame),
            ),
            from_network.clone(),
            from_network.clone(),
            T(out_to_client().src(HOST, NAT_PORT)),
        ),
        outbound(
            "ctr_hairpin_to_published_port",
            from_ctr(HOST, tcp(42004, 8090, tcp_flags::SYN)).build(),
            from_network.clone(),
            from_network.clone(),
            T(into_ctr2().src(GATEWAY, 42004).dst(CTR2, 80).creates_flow()),
        ),
        outbound(
            "ctr_to_limited_broadcast",
            from_ctr(Ipv4Addr::BROADCAST, L4::udp(68, 67, b"discover")).build(),
            from_network.clone(),
            from_network.clone(),
            Passed,
        ),
        outbound(
            "ctr_to_multicast",
            from_ctr(Ipv4Addr::new(224, 0, 0, 251), L4::udp(5353, 5353, b"mdns")).build(),
            from_network.clone(),
            from_network.clone(),
            Passed,
        ),
        outbound(
            "ctr_to_zero_address",
            from_ctr(Ipv4Addr::UNSPECIFIED, tcp(42005, 80, tcp_flags::SYN)).build(),
            from_network.clone(),
            from_network.clone(),
            Passed,
        ),
        outbound(
            "ctr_to_loopback",
            from_ctr(Ipv4Addr::LOCALHOST, tcp(42006, 80, tcp_flags::SYN)).build(),
            Dropped(drop::MARTIAN_LOOPBACK),
            Dropped(drop::MARTIAN_LOOPBACK),
            Passed,
        ),
        outbound(
            "ctr_to_a_neighbour_container",
            Ipv4Packet::new(CTR, CTR2, L4::udp(42007, 9, b"x"))
                .with_macs(CTR2_MAC, CTR_MAC)
                .build(),
            from_network.clone(),
            from_network.clone(),
            Passed,
        ),
        outbound(
            "ctr_spoofed_source_address",
            Ipv4Packet::new(CTR2, CLIENT, L4::udp(42008, 53, b"x"))
                .with_macs(GW_MAC, CTR_MAC)
                .build(),
            from_network.clone(),
            from_network.clone(),
            Dropped(drop::SPOOFED),
        ),
        outbound(
            "ctr_spoofed_source_mac",
            from_ctr(CLIENT, L4::udp(42009, 53, b"x"))
                .with_macs(GW_MAC, CTR2_MAC)
                .build(),
            from_network.clone(),
            from_network.clone(),
            Dropped(drop::SPOOFED),
        ),
        outbound(
            "ctr_ipv4_cut_before_its_source_address",
            edited(
                from_ctr(CLIENT, tcp(42010, 80, tcp_flags::SYN)).build(),
                |frame| frame.truncate(ETH_HLEN + 14),
            ),
            Refused,
            Passed,
            Refused,
        ),
        outbound(
            "ctr_ihl_below_5",
            edited(
                from_ctr(CLIENT, tcp(42011, 80, tcp_flags::SYN)).build(),
                |frame| {
                    frame[ETH_HLEN] = 0x44;
                    fix_ip_checksum(frame);
                },
            ),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_first_fragment",
            with_frag(from_ctr(CLIENT, L4::udp(42012, 55, b"query")), 0x2000).build(),
            from_network.clone(),
            Passed,
            T(out_to_client().src(HOST, NAT_PORT).creates_flow()),
        ),
        outbound(
            "ctr_tcp_data_offset_past_the_segment",
            edited(
                from_ctr(CLIENT, tcp(42013, 80, tcp_flags::SYN)).build(),
                |frame| set_tcp_data_offset(frame, 15),
            ),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_udp_length_past_the_datagram",
            edited(
                from_ctr(CLIENT, L4::udp(42014, 53, b"query")).build(),
                |frame| frame[ETH_HLEN + 24..ETH_HLEN + 26].copy_from_slice(&200u16.to_be_bytes()),
            ),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_ttl_one",
            with_ttl(from_ctr(CLIENT, tcp(42015, 80, tcp_flags::SYN)), 1).build(),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_port_unreachable_about_published_udp",
            from_ctr(CLIENT, port_unreachable(&received_udp)).build(),
            from_network.clone(),
            Passed,
            T(out_to_client().src_addr(HOST).quoted_dst(HOST, 5353)),
        ),
        outbound(
            "ctr_icmp_error_not_to_the_quoted_source",
            from_ctr(
                Ipv4Addr::new(10, 250, 0, 255),
                port_unreachable(&received_udp),
            )
            .build(),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_icmp_error_about_an_icmp_error",
            from_ctr(
                CLIENT,
                time_exceeded(&Ipv4Packet::new(
                    CLIENT,
                    CTR,
                    port_unreachable(&received_udp),
                )),
            )
            .build(),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_vlan_tagged",
            vlan_tagged(from_ctr(CLIENT, tcp(42016, 80, tcp_flags::SYN)).build()),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_ipv6",
            edited(ipv6_udp(), |frame| frame[6..12].copy_from_slice(&CTR_MAC)),
            Passed,
            Passed,
            Passed,
        ),
        outbound(
            "ctr_own_arp_request",
            edited(arp_request(CTR, GATEWAY), |frame| {
                frame[6..12].copy_from_slice(&CTR_MAC);
                frame[22..28].copy_from_slice(&CTR_MAC);
            }),
            Passed,
            Passed,
            Passed,
        ),
    ]
}

// ---------------------------------------------------------------------------
// Scapy
// ---------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The Python with Scapy that `cargo xtask setup` installs.
fn scapy_python() -> PathBuf {
    workspace_root().join("target/venv/bin/python3")
}

#[derive(Serialize)]
struct ScapyRequest<'a> {
    name: String,
    frame: String,
    eth_dst: String,
    eth_src: String,
    ttl: u8,
    outer: &'a Fields,
    quoted: &'a Fields,
}

impl<'a> ScapyRequest<'a> {
    fn new(name: String, frame: &[u8], translation: &'a Translation) -> Self {
        Self {
            name,
            frame: hex(frame),
            eth_dst: mac_text(translation.eth_dst),
            eth_src: mac_text(translation.eth_src),
            ttl: frame[ETH_HLEN + 8] - 1,
            outer: &translation.outer,
            quoted: &translation.quoted,
        }
    }
}

/// Scapy's translation of each request, from one run of
/// `tests/scapy/translate.py`. Fails, never skips, without Scapy.
fn scapy_translations(requests: &[ScapyRequest<'_>]) -> Vec<Vec<u8>> {
    let python = scapy_python();
    assert!(
        python.exists(),
        "Scapy is missing: {} does not exist. `cargo xtask setup` creates that venv and installs Scapy from PyPI into it; the malformed-packet tests compare netd's translations with Scapy's and cannot run without it",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scapy/translate.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {}: {e}", python.display(), script.display()));
    let input = serde_json::to_vec(requests).expect("requests as JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("writing the requests");
    let output = child.wait_with_output().expect("translate.py");
    assert!(
        output.status.success(),
        "translate.py failed ({}); is Scapy installed in {}? (`cargo xtask setup`)\n{}",
        output.status,
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<String> = serde_json::from_slice(&output.stdout).expect("translate.py's JSON");
    assert_eq!(answers.len(), requests.len(), "one answer per request");
    answers.iter().map(|answer| unhex(answer)).collect()
}

// ---------------------------------------------------------------------------
// The rules, from the frame's bytes (independent of netd's parser)
// ---------------------------------------------------------------------------

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn addr_at(bytes: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}

#[derive(Clone, Copy, Debug)]
struct Ipv4View {
    l3: usize,
    ihl: usize,
    tot_len: usize,
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// The more-fragments flag and the fragment offset.
    frag: u16,
}

impl Ipv4View {
    fn first_fragment(&self) -> bool {
        self.frag == 0x2000
    }

    fn later_fragment(&self) -> bool {
        self.frag & 0x1fff != 0
    }
}

/// A TCP, UDP or ICMP echo packet (or what an ICMP error quotes of one).
#[derive(Clone, Copy, Debug)]
struct FlowView {
    ip: Ipv4View,
    l4: usize,
    /// The transport bytes the packet (or the quote) holds.
    l4_len: usize,
    /// Ports, or for ICMP echo the identifier as the "port" of its side.
    sport: u16,
    dport: u16,
    sport_at: Option<usize>,
    dport_at: Option<usize>,
    check_at: usize,
    /// A later fragment: no transport header (no ports, no checksum of
    /// its own); its ports are its first fragment's, which only the
    /// datapath's fragment map knows.
    later: bool,
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Flow(FlowView),
    IcmpError {
        outer: Ipv4View,
        inner: FlowView,
        /// The quoted transport checksum, when the quote holds it.
        inner_check_at: Option<usize>,
    },
}

impl Shape {
    fn outer(&self) -> Ipv4View {
        match self {
            Self::Flow(flow) => flow.ip,
            Self::IcmpError { outer, .. } => *outer,
        }
    }
}

/// The IPv4 header at `l3` of `bytes` (a frame, or a frame up to the end
/// of an ICMP error's quote) and the transport bytes it has. `whole`: the
/// total length must fit (a quote is cut short by design), and it may be
/// a later fragment (a quote may be a first fragment, never a later one).
fn ipv4_view(bytes: &[u8], l3: usize, whole: bool) -> Option<(Ipv4View, usize)> {
    let head = bytes.get(l3..l3 + 20)?;
    let ihl = usize::from(head[0] & 0x0f) * 4;
    let tot_len = usize::from(be16(head, 2));
    let available = bytes.len() - l3;
    let frag = be16(head, 6) & 0x3fff;
    if head[0] >> 4 != 4
        || ihl < 20
        || tot_len < ihl
        || (!whole && frag & 0x1fff != 0)
        || (whole && tot_len > available)
    {
        return None;
    }
    let view = Ipv4View {
        l3,
        ihl,
        tot_len,
        ttl: head[8],
        proto: head[9],
        src: addr_at(head, 12),
        dst: addr_at(head, 16),
        frag,
    };
    Some((view, tot_len.min(available).saturating_sub(ihl)))
}

/// The transport of `ip`: its whole header, or (`quoted`) the 8 bytes an
/// ICMP error must quote.
fn transport_view(bytes: &[u8], ip: Ipv4View, l4_len: usize, quoted: bool) -> Option<FlowView> {
    let l4 = ip.l3 + ip.ihl;
    if l4_len < 8 {
        return None;
    }
    let head = bytes.get(l4..l4 + 8)?;
    let ports = (be16(head, 0), be16(head, 2), Some(l4), Some(l4 + 2));
    let (sport, dport, sport_at, dport_at, check_at) = match ip.proto {
        IPPROTO_TCP => {
            let data_offset = usize::from(*bytes.get(l4 + 12).unwrap_or(&0) >> 4) * 4;
            if !quoted && (l4_len < 20 || data_offset < 20 || data_offset > l4_len) {
                return None;
            }
            (ports.0, ports.1, ports.2, ports.3, l4 + 16)
        }
        IPPROTO_UDP => {
            // A first fragment holds only the start of the datagram its
            // length describes.
            let length = usize::from(be16(head, 4));
            let most = if ip.first_fragment() {
                usize::MAX
            } else {
                l4_len
            };
            if !quoted && !(8..=most).contains(&length) {
                return None;
            }
            (ports.0, ports.1, ports.2, ports.3, l4 + 6)
        }
        IPPROTO_ICMP => match head[0] {
            8 => (be16(head, 4), 0, Some(l4 + 4), None, l4 + 2),
            0 => (0, be16(head, 4), None, Some(l4 + 4), l4 + 2),
            _ => return None,
        },
        _ => return None,
    };
    Some(FlowView {
        ip,
        l4,
        l4_len,
        sport,
        dport,
        sport_at,
        dport_at,
        check_at,
        later: false,
    })
}

/// What the documented rules make of `frame`: `None` for a frame netd must
/// leave to the kernel, whatever its addresses.
fn shape(frame: &[u8]) -> Option<Shape> {
    shape_at_any_ttl(frame).filter(|shape| shape.outer().ttl >= 2)
}

/// [`shape`] whatever the TTL: what a translated frame (TTL 1 after a hop,
/// possibly) must still be.
fn shape_at_any_ttl(frame: &[u8]) -> Option<Shape> {
    if frame.len() < ETH_HLEN || be16(frame, 12) != ETH_P_IP {
        return None;
    }
    let (ip, l4_len) = ipv4_view(frame, ETH_HLEN, true)?;
    let l4 = ETH_HLEN + ip.ihl;
    if ip.later_fragment() {
        return matches!(ip.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP).then_some(
            Shape::Flow(FlowView {
                ip,
                l4,
                l4_len,
                sport: 0,
                dport: 0,
                sport_at: None,
                dport_at: None,
                check_at: 0,
                later: true,
            }),
        );
    }
    if ip.proto == IPPROTO_ICMP && l4_len >= 8 && matches!(frame[l4], 3 | 11 | 12) {
        // ICMP errors are small: a fragmented one is not translated.
        if ip.frag != 0 {
            return None;
        }
        // The quote ends where the outer packet does.
        let quote = &frame[..ETH_HLEN + ip.tot_len];
        let (inner_ip, inner_len) = ipv4_view(quote, l4 + 8, false)?;
        // An error goes to the source of what it quotes.
        if inner_ip.src != ip.dst {
            return None;
        }
        let inner = transport_view(quote, inner_ip, inner_len, true)?;
        let inner_check_at =
            (inner.check_at + 2 <= inner.l4 + inner.l4_len).then_some(inner.check_at);
        return Some(Shape::IcmpError {
            outer: ip,
            inner,
            inner_check_at,
        });
    }
    transport_view(frame, ip, l4_len, false).map(Shape::Flow)
}

fn key_of(flow: &FlowView) -> CtKey {
    CtKey {
        saddr_be: flow.ip.src.octets(),
        daddr_be: flow.ip.dst.octets(),
        sport_be: flow.sport.to_be_bytes(),
        dport_be: flow.dport.to_be_bytes(),
        proto: flow.ip.proto,
        _pad: [0; 3],
    }
}

/// The key of the flow an ICMP error travels with: its quote's, reversed.
fn key_of_quoted(inner: &FlowView) -> CtKey {
    CtKey {
        saddr_be: inner.ip.dst.octets(),
        daddr_be: inner.ip.src.octets(),
        sport_be: inner.dport.to_be_bytes(),
        dport_be: inner.sport.to_be_bytes(),
        proto: inner.ip.proto,
        _pad: [0; 3],
    }
}

fn in_network(addr: Ipv4Addr) -> bool {
    addr.octets()[..2] == [172, 30]
}

fn local(addr: Ipv4Addr) -> bool {
    [HOST, HOST2, GATEWAY].contains(&addr)
}

/// Neither 0.0.0.0/8, loopback, multicast nor class E (with the limited
/// broadcast).
fn unicast(addr: Ipv4Addr) -> bool {
    !matches!(addr.octets()[0], 0 | 127 | 224..=255)
}

/// Whether `proto` `dst:dport` is published, as the fixture's rules say.
fn published(proto: u8, dst: Ipv4Addr, dport: u16) -> bool {
    rules().iter().any(|rule| {
        rule.proto == proto
            && (rule.host_port..=rule.host_port_end).contains(&dport)
            && (rule.host_ip == dst || (rule.host_ip.is_unspecified() && local(dst)))
    })
}

/// Whether a TCP segment's flags may start a flow, as netfilter decides: a
/// SYN without ACK, FIN or RST, or a plain ACK (picked up mid-stream).
fn tcp_flags_may_start(flags: u8) -> bool {
    let flags = flags & (tcp_flags::FIN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::ACK);
    flags == tcp_flags::SYN || flags == tcp_flags::ACK
}

/// Whether the rules let `frame`, run through `program`, start a flow.
fn may_start_flow(program: Program, frame: &[u8]) -> bool {
    let Some(Shape::Flow(flow)) = shape(frame) else {
        return false;
    };
    // A later fragment only follows its first.
    if flow.later {
        return false;
    }
    let (src, dst, proto) = (flow.ip.src, flow.ip.dst, flow.ip.proto);
    if proto == IPPROTO_TCP && !tcp_flags_may_start(frame[flow.l4 + 13]) {
        return false;
    }
    match program {
        Program::UplinkTc | Program::UplinkXdp => {
            matches!(proto, IPPROTO_TCP | IPPROTO_UDP)
                && dst.octets()[0] != 127
                && !in_network(src)
                && unicast(src)
                && !local(src)
                && published(proto, dst, flow.dport)
        }
        Program::EndpointTc => {
            frame[6..12] == CTR_MAC
                && src == CTR
                && unicast(dst)
                && (!in_network(dst) || dst == GATEWAY)
                && (!local(dst) || (proto != IPPROTO_ICMP && published(proto, dst, flow.dport)))
        }
    }
}

fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let words = [
        u16::from_be_bytes([src[0], src[1]]),
        u16::from_be_bytes([src[2], src[3]]),
        u16::from_be_bytes([dst[0], dst[1]]),
        u16::from_be_bytes([dst[2], dst[3]]),
    ];
    words.iter().map(|&w| u32::from(w)).sum::<u32>() + u32::from(proto) + len as u32
}

/// What a checksum verification over `data` leaves: 0 when it verifies.
/// One's complement has two zeros; both count as one.
fn residual(seed: u32, data: &[u8]) -> u16 {
    match checksum(seed, data) {
        0xffff => 0,
        sum => sum,
    }
}

/// The residuals of every checksum a translation must keep as it was:
/// the IPv4 header's, the transport's (TCP, UDP unless 0, ICMP), and for
/// an ICMP error the quoted IPv4 header's. `None` for a UDP checksum of 0.
fn residuals(frame: &[u8], shape: &Shape) -> Vec<Option<u16>> {
    let outer = shape.outer();
    let ip_header = residual(0, &frame[outer.l3..outer.l3 + outer.ihl]);
    let l4 = outer.l3 + outer.ihl;
    let end = outer.l3 + outer.tot_len;
    let mut all = vec![Some(ip_header)];
    match shape {
        // Its datagram's transport checksum is in the first fragment.
        Shape::Flow(flow) if flow.later => {}
        Shape::Flow(flow) => {
            let segment = &frame[l4..end];
            let pseudo = pseudo_header_sum(
                flow.ip.src.octets(),
                flow.ip.dst.octets(),
                flow.ip.proto,
                segment.len(),
            );
            all.push(match flow.ip.proto {
                IPPROTO_TCP => Some(residual(pseudo, segment)),
                IPPROTO_UDP if be16(frame, flow.check_at) == 0 => None,
                IPPROTO_UDP => Some(residual(pseudo, segment)),
                _ => Some(residual(0, segment)),
            });
        }
        Shape::IcmpError { inner, .. } => {
            all.push(Some(residual(0, &frame[l4..end])));
            all.push(Some(residual(
                0,
                &frame[inner.ip.l3..inner.ip.l3 + inner.ip.ihl],
            )));
        }
    }
    all
}

/// The byte offsets a translation may change in a frame of `shape`.
fn rewritable(shape: &Shape) -> BTreeSet<usize> {
    // The MACs; an IPv4 header's TTL (outer only), checksum and
    // addresses; a transport's ports (or echo identifier) and checksum.
    let mut offsets: BTreeSet<usize> = (0..12).collect();
    let ip = |offsets: &mut BTreeSet<usize>, l3: usize, ttl: bool| {
        if ttl {
            offsets.insert(l3 + 8);
        }
        offsets.extend(l3 + 10..l3 + 20);
    };
    let transport = |offsets: &mut BTreeSet<usize>, flow: &FlowView, check: Option<usize>| {
        for at in [flow.sport_at, flow.dport_at, check].into_iter().flatten() {
            offsets.extend(at..at + 2);
        }
    };
    match shape {
        Shape::Flow(flow) => {
            ip(&mut offsets, flow.ip.l3, true);
            if !flow.later {
                transport(&mut offsets, flow, Some(flow.check_at));
            }
        }
        Shape::IcmpError {
            outer,
            inner,
            inner_check_at,
        } => {
            ip(&mut offsets, outer.l3, true);
            let icmp_check = outer.l3 + outer.ihl + 2;
            offsets.extend(icmp_check..icmp_check + 2);
            ip(&mut offsets, inner.ip.l3, false);
            transport(&mut offsets, inner, *inner_check_at);
        }
    }
    offsets
}

/// An address and, where the packet carries one there, a port (an ICMP
/// echo has its identifier on one side only; an ICMP error none).
type Side = (Ipv4Addr, Option<u16>);

/// The source and destination sides of `flow` as `frame` has them.
fn sides(frame: &[u8], flow: &FlowView) -> (Side, Side) {
    (
        (
            addr_at(frame, flow.ip.l3 + 12),
            flow.sport_at.map(|at| be16(frame, at)),
        ),
        (
            addr_at(frame, flow.ip.l3 + 16),
            flow.dport_at.map(|at| be16(frame, at)),
        ),
    )
}

/// `side` after a rewrite to `addr` and `port` if `rewrites`.
fn rewritten(side: Side, rewrites: bool, addr: [u8; 4], port: [u8; 2]) -> Side {
    if rewrites {
        (
            Ipv4Addr::from(addr),
            side.1.map(|_| u16::from_be_bytes(port)),
        )
    } else {
        side
    }
}

/// Checks `out`, what `program` made of `frame` when it translated it,
/// against the rules and the conntrack entry that translated it.
fn check_translation(
    program: Program,
    frame: &[u8],
    out: &[u8],
    ct: &[(CtKey, CtEntry)],
    recalled: Option<FragPorts>,
    net: &Net,
) -> Result<(), String> {
    let in_shape = shape(frame).ok_or("translated a frame the rules leave to the kernel")?;
    if out.len() != frame.len() {
        return Err(format!("{} bytes out of {}", out.len(), frame.len()));
    }
    let rewritable = rewritable(&in_shape);
    if let Some(at) = (0..frame.len()).find(|&at| frame[at] != out[at] && !rewritable.contains(&at))
    {
        return Err(format!(
            "byte {at} changed ({:#04x} -> {:#04x}), outside the fields a translation rewrites",
            frame[at], out[at]
        ));
    }
    let outer = in_shape.outer();
    if out[outer.l3 + 8] != outer.ttl - 1 {
        return Err(format!("TTL {} -> {}", outer.ttl, out[outer.l3 + 8]));
    }
    // A translated frame parses as the same kind of frame.
    let Some(out_shape) = shape_at_any_ttl(out) else {
        return Err("the translated frame no longer follows the rules".into());
    };
    let (before, after) = (residuals(frame, &in_shape), residuals(out, &out_shape));
    if before != after {
        return Err(format!(
            "checksums verify differently: residuals {before:?} before, {after:?} after (0: verifies, None: UDP without checksum)"
        ));
    }
    let (key, flow, out_flow, mirrored) = match (&in_shape, &out_shape) {
        (Shape::Flow(flow), Shape::Flow(out_flow)) => (key_of(flow), *flow, *out_flow, None),
        (
            Shape::IcmpError { outer, inner, .. },
            Shape::IcmpError {
                outer: out_outer,
                inner: out_inner,
                ..
            },
        ) => {
            // The outer header as a flow without ports.
            let as_flow = |ip: Ipv4View| FlowView {
                ip,
                l4: ip.l3 + ip.ihl,
                l4_len: 0,
                sport: 0,
                dport: 0,
                sport_at: None,
                dport_at: None,
                check_at: 0,
                later: false,
            };
            (
                key_of_quoted(inner),
                as_flow(*outer),
                as_flow(*out_outer),
                Some((*inner, *out_inner)),
            )
        }
        _ => return Err("the translated frame is of another kind".into()),
    };
    let key = if flow.later {
        // Found with the ports its first fragment left in the fragment map.
        let ports = recalled.ok_or("translated a later fragment whose first was not translated")?;
        CtKey {
            sport_be: ports.sport_be,
            dport_be: ports.dport_be,
            ..key
        }
    } else {
        key
    };
    let entry = ct_get(ct, &key)
        .ok_or_else(|| format!("translated without a conntrack entry for {key:?}"))?;
    let nat_src = entry.flags & CT_NAT_SRC != 0;
    let nat_dst = entry.flags & CT_NAT_DST != 0;
    let source = |end: Side| rewritten(end, nat_src, entry.nat_saddr_be, entry.nat_sport_be);
    let destination = |end: Side| rewritten(end, nat_dst, entry.nat_daddr_be, entry.nat_dport_be);
    let (src, dst) = sides(frame, &flow);
    let want = (source(src), destination(dst));
    let got = sides(out, &out_flow);
    if got != want {
        return Err(format!(
            "rewritten to {got:?}, its conntrack entry says {want:?}"
        ));
    }
    if let Some((inner, out_inner)) = mirrored {
        // The quote went the other way: its source is what the entry makes
        // the destination, and the other way round.
        let (src, dst) = sides(frame, &inner);
        let want = (destination(src), source(dst));
        let got = sides(out, &out_inner);
        if got != want {
            return Err(format!(
                "quote rewritten to {got:?}, its conntrack entry says {want:?}"
            ));
        }
    }
    let macs = (&out[0..6], &out[6..12]);
    if entry.flags & CT_TO_ENDPOINT != 0 {
        if macs != (&entry.dmac[..], &GW_MAC[..]) {
            return Err(format!("delivered into a container with MACs {macs:02x?}"));
        }
    } else if program.is_xdp() {
        return Err("XDP routed a packet out".into());
    } else {
        // Out of the uplink to a next hop the FIB knows, or with the MACs
        // as they came where `bpf_redirect_neigh` resolves it on the way.
        let next_hop =
            [&CLIENT_MAC[..], &ROUTER_MAC[..]].contains(&macs.0) && macs.1 == net.up0_mac;
        if !next_hop && macs != (&frame[0..6], &frame[6..12]) {
            return Err(format!("routed out with MACs {macs:02x?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

impl Datapath {
    /// Runs `frame` through `program` and checks the documented `expect`
    /// (`scapy`: Scapy's translation), then puts conntrack back as it was.
    fn check_class(
        &mut self,
        program: Program,
        frame: &[u8],
        expect: &Expect,
        scapy: Option<&[u8]>,
    ) -> Result<(), String> {
        let ct_before = self.ct();
        if ct_before != self.baseline {
            return Err("conntrack was not back to the established flows".into());
        }
        let counters_before = self.counters();
        let run = self.run(program, frame);
        let ct_after = self.ct();
        let counters_after = self.counters();
        let result = match (expect, run) {
            (Expect::Refused, Err(error)) if is_refusal(&error) => {
                if counters_after != counters_before || ct_after != ct_before {
                    Err("refused, yet the maps changed".into())
                } else if !test_run_refuses(program, frame) {
                    Err("refused, but not for the documented reason".into())
                } else {
                    Ok(())
                }
            }
            (Expect::Refused, Ok(run)) => Err(format!(
                "documented as refused by BPF_PROG_TEST_RUN, ran: verdict {}",
                verdict_name(program, run.verdict)
            )),
            (_, Err(error)) => Err(format!("BPF_PROG_TEST_RUN failed: {error:?}")),
            (_, Ok(run)) => check_documented(
                program,
                frame,
                expect,
                scapy,
                &run,
                (&ct_before, &ct_after),
                (&counters_before, &counters_after),
            ),
        };
        self.restore_ct(&ct_after, &ct_before);
        result
    }
}

impl Datapath {
    /// Runs `frame` through the counting program `name` (of `program`'s
    /// hook): passed untouched, one packet counted at that hook, nothing
    /// else written.
    fn check_observed(&mut self, name: &str, program: Program, frame: &[u8]) -> Result<(), String> {
        let hook = if program.is_xdp() {
            Hook::Xdp
        } else {
            Hook::Tc
        };
        let (ct_before, counters_before) = (self.ct(), self.counters());
        let run = self.bpf.try_run(hook, name, frame, None, 1);
        let (ct_after, counters_after) = (self.ct(), self.counters());
        if ct_after != ct_before {
            return Err("conntrack written".into());
        }
        match run {
            Err(error) if is_refusal(&error) && test_run_refuses(program, frame) => {
                if counters_after == counters_before {
                    Ok(())
                } else {
                    Err("refused, yet counted".into())
                }
            }
            Err(error) => Err(format!("BPF_PROG_TEST_RUN failed: {error:?}")),
            Ok(run) => {
                if run.verdict != program.pass() || run.data != frame {
                    return Err(format!(
                        "verdict {}, the frame {}",
                        verdict_name(program, run.verdict),
                        if run.data == frame {
                            "untouched"
                        } else {
                            "changed"
                        }
                    ));
                }
                counters_before.one_packet_at(&counters_after, program)?;
                if counters_after.drops != counters_before.drops
                    || counters_after.mappings != counters_before.mappings
                {
                    return Err("drop or mapping counters written".into());
                }
                Ok(())
            }
        }
    }
}

fn verdict_name(program: Program, verdict: i32) -> String {
    let name = match (program.is_xdp(), verdict) {
        (true, XDP_PASS) => "XDP_PASS",
        (true, XDP_DROP) => "XDP_DROP",
        (false, TC_ACT_OK) => "TC_ACT_OK",
        (false, TC_ACT_SHOT) => "TC_ACT_SHOT",
        (false, TC_ACT_REDIRECT) => "TC_ACT_REDIRECT",
        _ => "not a verdict of this hook",
    };
    format!("{verdict} ({name})")
}

fn check_documented(
    program: Program,
    frame: &[u8],
    expect: &Expect,
    scapy: Option<&[u8]>,
    run: &Run,
    (ct_before, ct_after): (&BTreeMap<CtKey, CtEntry>, &BTreeMap<CtKey, CtEntry>),
    (before, after): (&Counters, &Counters),
) -> Result<(), String> {
    let verdict = |want: i32| {
        if run.verdict == want {
            Ok(())
        } else {
            Err(format!(
                "verdict {}, documented {}",
                verdict_name(program, run.verdict),
                verdict_name(program, want)
            ))
        }
    };
    before.one_packet_at(after, program)?;
    let drops = before.drops_since(after);
    match expect {
        Expect::Pass | Expect::Drop(_) => {
            let reason = match expect {
                Expect::Drop(reason) => {
                    verdict(program.drop())?;
                    Some(drop::NAMES[drop::index(*reason) as usize])
                }
                _ => {
                    verdict(program.pass())?;
                    None
                }
            };
            if run.data != frame {
                return Err(format!(
                    "the frame must leave untouched: {}",
                    difference(&run.data, frame)
                ));
            }
            let want_drops: Vec<(&str, u64)> = reason.into_iter().map(|r| (r, 1)).collect();
            if drops != want_drops {
                return Err(format!(
                    "drops counted {drops:?}, documented {want_drops:?}"
                ));
            }
            if ct_after != ct_before {
                return Err("conntrack written for a packet netd did not translate".into());
            }
            if after.mappings != before.mappings {
                return Err("mapping counters written for a packet netd did not translate".into());
            }
        }
        Expect::Refused => return Err("refusals are checked without a run".into()),
        Expect::Translate(translation) => {
            verdict(program.translated())?;
            let scapy = scapy.expect("Scapy's translation of every translated class");
            let data = if program.is_xdp() {
                let veth = translation
                    .into
                    .ok_or("XDP only translates into containers")?;
                let mut mark = XDP_MARK.to_ne_bytes().to_vec();
                mark.extend_from_slice(&veth.to_ne_bytes());
                if run.data.get(..8) != Some(&mark[..]) {
                    return Err(format!("no mark for veth {veth} in the XDP metadata"));
                }
                &run.data[8..]
            } else {
                &run.data[..]
            };
            if data != scapy {
                return Err(format!(
                    "not Scapy's translation: {}",
                    difference(data, scapy)
                ));
            }
            if !drops.is_empty() {
                return Err(format!("drops counted for a translated packet: {drops:?}"));
            }
            let gone: Vec<_> = ct_before
                .keys()
                .filter(|k| !ct_after.contains_key(k))
                .collect();
            let new: Vec<_> = ct_after
                .keys()
                .filter(|k| !ct_before.contains_key(k))
                .collect();
            if !gone.is_empty() {
                return Err(format!("conntrack entries removed: {gone:?}"));
            }
            let changed: Vec<_> = ct_before
                .iter()
                .filter(|(k, v)| ct_after.get(k) != Some(v))
                .map(|(k, _)| *k)
                .collect();
            match shape(frame) {
                Some(Shape::Flow(flow)) => {
                    let key = key_of(&flow);
                    if translation.creates_flow {
                        if new.len() != 2 || !new.contains(&&key) {
                            return Err(format!(
                                "a new flow creates its two entries, {key:?} first; created {new:?}"
                            ));
                        }
                    } else if !new.is_empty() {
                        return Err(format!("entries created for a tracked flow: {new:?}"));
                    }
                    if changed.iter().any(|k| *k != key) {
                        return Err(format!(
                            "entries of other flows written: {changed:?} (the packet's is {key:?})"
                        ));
                    }
                }
                Some(Shape::IcmpError { .. }) => {
                    if ct_after != ct_before {
                        return Err("conntrack written for an ICMP error".into());
                    }
                }
                None => return Err("the rules do not consider this frame translatable".into()),
            }
        }
    }
    Ok(())
}

#[test]
fn malformed_corpus_documented_verdicts_through_every_program() {
    require_root!();
    let (_routed, net) = routed_namespace();
    let classes = corpus(&net);
    assert!(classes.len() >= 40, "{} classes", classes.len());
    let names: BTreeSet<_> = classes.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), classes.len(), "class names are unique");

    // Scapy's translation of every translated run, from one process.
    let mut requests = Vec::new();
    let mut request_of = BTreeMap::new();
    for (index, class) in classes.iter().enumerate() {
        for (program, expect) in Program::ALL.iter().zip(&class.expect) {
            if let Expect::Translate(translation) = expect {
                request_of.insert((index, program.name()), requests.len());
                requests.push(ScapyRequest::new(
                    format!("{} at {}", class.name, program.name()),
                    &class.frame,
                    translation,
                ));
            }
        }
    }
    let scapy = scapy_translations(&requests);

    let mut datapath = Datapath::new(net, None);
    let configuration = datapath.configuration();
    let mut failures = Vec::new();
    let mut runs = 0;
    for (index, class) in classes.iter().enumerate() {
        for (program, expect) in Program::ALL.iter().zip(&class.expect) {
            let translation = request_of
                .get(&(index, program.name()))
                .map(|&request| &scapy[request][..]);
            if let Err(failure) = datapath.check_class(*program, &class.frame, expect, translation)
            {
                failures.push(format!(
                    "{} at {}: {failure}\n      frame {}",
                    class.name,
                    program.name(),
                    hex(&class.frame)
                ));
            }
            runs += 1;
        }
    }
    // `netd observe`'s counters are packet programs too: every class
    // passes through them untouched, counted once at their hook.
    for class in &classes {
        for (name, program) in [
            ("netd_observe_tc", Program::UplinkTc),
            ("netd_observe_xdp", Program::UplinkXdp),
        ] {
            if let Err(failure) = datapath.check_observed(name, program, &class.frame) {
                failures.push(format!(
                    "{} at {name}: {failure}\n      frame {}",
                    class.name,
                    hex(&class.frame)
                ));
            }
            runs += 1;
        }
    }
    assert_eq!(
        datapath.configuration(),
        configuration,
        "the maps the packet programs only read were written"
    );
    eprintln!(
        "{} classes, {runs} runs, {} translations compared with Scapy",
        classes.len(),
        requests.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} runs broke their documented verdict:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The fuzzer
// ---------------------------------------------------------------------------

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, and every seed gives a
/// good stream, so each packet draws from a stream of its own and the run
/// is the same whatever the number of threads.
struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream of packet `index`.
    fn for_packet(index: u64) -> Self {
        let mut mixer = Self(FUZZ_SEED ^ index);
        Self(mixer.next())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    /// An offset into a frame of `len` bytes, three times in four inside
    /// its first 96 bytes, where the headers are.
    fn offset(&mut self, len: usize) -> usize {
        if self.below(4) == 0 {
            self.below(len)
        } else {
            self.below(len.min(96))
        }
    }
}

/// A 16-bit length: random, a boundary, or the old one a little off.
fn mutated_length(rng: &mut SplitMix64, old: u16) -> u16 {
    match rng.below(5) {
        0 => rng.next() as u16,
        1 => [0, 1, 7, 8, 19, 20, 0xffff][rng.below(7)],
        2 => old.wrapping_add(1 + rng.below(8) as u16),
        3 => old.wrapping_sub(1 + rng.below(8) as u16),
        _ => old ^ (1 << rng.below(16)),
    }
}

fn write16(frame: &mut [u8], at: usize, value: u16) {
    if at + 2 <= frame.len() {
        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }
}

/// Mutates one length field: the IHL, the total length, the TCP data
/// offset, the UDP length, or the quoted IHL and total length of an ICMP
/// error, found where the (possibly mutated) headers put them.
fn mutate_length_field(rng: &mut SplitMix64, frame: &mut [u8]) {
    if frame.len() < ETH_HLEN + 20 {
        return;
    }
    let l4 = ETH_HLEN + usize::from(frame[ETH_HLEN] & 0x0f) * 4;
    let old = |frame: &[u8], at: usize| {
        if at + 2 <= frame.len() {
            be16(frame, at)
        } else {
            0
        }
    };
    match rng.below(6) {
        0 => frame[ETH_HLEN] = (frame[ETH_HLEN] & 0xf0) | rng.below(16) as u8,
        1 => {
            let value = mutated_length(rng, old(frame, ETH_HLEN + 2));
            write16(frame, ETH_HLEN + 2, value);
        }
        2 if l4 + 12 < frame.len() => {
            frame[l4 + 12] = ((rng.below(16) as u8) << 4) | (frame[l4 + 12] & 0x0f);
        }
        3 => {
            let value = mutated_length(rng, old(frame, l4 + 4));
            write16(frame, l4 + 4, value);
        }
        4 if l4 + 8 < frame.len() => {
            frame[l4 + 8] = (frame[l4 + 8] & 0xf0) | rng.below(16) as u8;
        }
        _ => {
            let value = mutated_length(rng, old(frame, l4 + 10));
            write16(frame, l4 + 10, value);
        }
    }
}

/// Mutates a header field whose value decides the verdict: TTL, fragment
/// bits, protocol, ICMP type, TCP flags, a source or destination octet.
fn mutate_header_field(rng: &mut SplitMix64, frame: &mut [u8]) {
    if frame.len() < ETH_HLEN + 20 {
        return;
    }
    let l4 = ETH_HLEN + usize::from(frame[ETH_HLEN] & 0x0f) * 4;
    match rng.below(6) {
        0 => frame[ETH_HLEN + 8] = [0, 1, 2, 255][rng.below(4)],
        1 => write16(
            frame,
            ETH_HLEN + 6,
            [0x2000, 0x0001, 0x3fff, 0x8000][rng.below(4)],
        ),
        2 => frame[ETH_HLEN + 9] = [1, 6, 17, 47, 132, rng.byte()][rng.below(6)],
        3 if l4 < frame.len() => frame[l4] = [0, 3, 5, 8, 11, 12, 13, rng.byte()][rng.below(8)],
        4 if l4 + 13 < frame.len() => frame[l4 + 13] = rng.byte(),
        _ => {
            let at = ETH_HLEN + 12 + rng.below(8);
            frame[at] = [0, 127, 172, 224, 255, rng.byte()][rng.below(6)];
        }
    }
}

/// `seed` after one to three mutations; at least an Ethernet header long
/// (the kernel refuses shorter frames before any program runs).
fn mutate(rng: &mut SplitMix64, seed: &[u8]) -> Vec<u8> {
    let mut frame = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = frame.len();
        match rng.below(8) {
            0 | 1 => {
                let at = rng.offset(len);
                frame[at] ^= 1 << rng.below(8);
            }
            2 => {
                let at = rng.offset(len);
                frame[at] = [0, 1, 0x7f, 0x80, 0xff, rng.byte()][rng.below(6)];
            }
            3 => frame.truncate(ETH_HLEN + rng.below(len - ETH_HLEN + 1)),
            4 => mutate_length_field(rng, &mut frame),
            5 => {
                let at = ETH_HLEN + rng.below(len - ETH_HLEN + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.byte()).collect();
                frame.splice(at..at, bytes);
            }
            6 if len > ETH_HLEN => {
                let at = ETH_HLEN + rng.below(len - ETH_HLEN);
                let end = (at + 1 + rng.below(8)).min(len);
                frame.drain(at..end);
            }
            _ => mutate_header_field(rng, &mut frame),
        }
    }
    frame.truncate(FUZZ_MAX_FRAME);
    frame
}

/// What one fuzz thread saw.
#[derive(Default)]
struct FuzzReport {
    packets: usize,
    /// Per program: passed, dropped, translated, refused by the kernel.
    outcomes: [[usize; 4]; 3],
    new_flows: usize,
    failures: Vec<String>,
    failure_count: usize,
}

const PASSED: usize = 0;
const DROPPED: usize = 1;
const TRANSLATED: usize = 2;
const REFUSED: usize = 3;

/// One fuzzed run: what the program did, whether it created a flow, and
/// what was wrong with it.
struct FuzzRun {
    outcome: usize,
    new_flow: bool,
    failure: Option<String>,
}

/// Conntrack in the order the kernel walks it: the same order as long as
/// nothing changed, so that the usual run (nothing changed) costs one
/// comparison.
type CtInMapOrder = Vec<(CtKey, CtEntry)>;

fn ct_get<'a>(ct: &'a [(CtKey, CtEntry)], key: &CtKey) -> Option<&'a CtEntry> {
    ct.iter().find(|(k, _)| k == key).map(|(_, entry)| entry)
}

impl Datapath {
    fn ct_in_map_order(&mut self) -> CtInMapOrder {
        Maps::new(self.bpf.ebpf_mut())
            .ct_entries()
            .expect("reading conntrack")
    }

    /// The ports the fragment map holds for `frame`'s datagram, if it is a
    /// later fragment (and the entry is fresh): what the datapath will
    /// find its flow with.
    fn recalled(&mut self, frame: &[u8]) -> Option<FragPorts> {
        let Some(Shape::Flow(flow)) = shape_at_any_ttl(frame) else {
            return None;
        };
        if !flow.later {
            return None;
        }
        let key = FragKey {
            saddr_be: flow.ip.src.octets(),
            daddr_be: flow.ip.dst.octets(),
            id_be: [frame[flow.ip.l3 + 4], frame[flow.ip.l3 + 5]],
            proto: flow.ip.proto,
            _pad: 0,
        };
        let frags: BpfHashMap<&MapData, FragKey, FragPorts> =
            BpfHashMap::try_from(&*self.bpf.map_mut(map_names::FRAGS)).expect("fragment map");
        // The datapath ignores entries past the reassembly timeout.
        let now = netd::datapath::conntrack::monotonic_ns();
        frags
            .get(&key, 0)
            .ok()
            .filter(|ports| now.saturating_sub(ports.created_ns) <= FRAG_TIMEOUT_NS)
    }

    /// Runs one fuzzed frame through `program`, checks it, and takes the
    /// flow it created (if any) out of conntrack again. `ct` is conntrack
    /// before the run, and after it on return.
    fn fuzz_one(&mut self, program: Program, frame: &[u8], ct: &mut CtInMapOrder) -> FuzzRun {
        let refuses = test_run_refuses(program, frame);
        let recalled = self.recalled(frame);
        let run = match self.run(program, frame) {
            Ok(run) => run,
            Err(error) => {
                let failure = (!(refuses && is_refusal(&error)))
                    .then(|| format!("BPF_PROG_TEST_RUN failed: {error:?}"));
                return FuzzRun {
                    outcome: REFUSED,
                    new_flow: false,
                    failure,
                };
            }
        };
        let after = self.ct_in_map_order();
        let (gone, new) = if after == *ct {
            (Vec::new(), Vec::new())
        } else {
            let absent = |from: &CtInMapOrder, of: &CtInMapOrder| -> Vec<CtKey> {
                from.iter()
                    .filter(|(key, _)| ct_get(of, key).is_none())
                    .map(|(key, _)| *key)
                    .collect()
            };
            (absent(ct, &after), absent(&after, ct))
        };
        let translated = if program.is_xdp() {
            run.verdict == XDP_PASS && run.data != frame
        } else {
            run.verdict == TC_ACT_REDIRECT
        };
        let outcome = if translated {
            TRANSLATED
        } else if run.verdict == program.drop() {
            DROPPED
        } else {
            PASSED
        };
        let check = || {
            if refuses {
                return Err("the kernel ran a frame it is documented to refuse".into());
            }
            if !program.valid_verdicts().contains(&run.verdict) {
                return Err(format!("verdict {}", verdict_name(program, run.verdict)));
            }
            if !gone.is_empty() {
                return Err(format!("conntrack entries removed: {gone:?}"));
            }
            if outcome != TRANSLATED {
                if run.data != frame {
                    return Err(format!(
                        "{} but the frame changed: {}",
                        verdict_name(program, run.verdict),
                        difference(&run.data, frame)
                    ));
                }
                if after != *ct {
                    return Err(format!(
                        "conntrack written for a packet netd did not translate (new {new:?})"
                    ));
                }
                return Ok(());
            }
            if !new.is_empty() {
                let starts = may_start_flow(program, frame);
                let key = match shape(frame) {
                    Some(Shape::Flow(flow)) => Some(key_of(&flow)),
                    _ => None,
                };
                if !starts || new.len() != 2 || key.is_none_or(|key| !new.contains(&key)) {
                    return Err(format!(
                        "conntrack entries {new:?} created; the rules let this packet start a flow: {starts}"
                    ));
                }
            }
            let out = if program.is_xdp() {
                if run.data.len() != frame.len() + 8 || run.data[..4] != XDP_MARK.to_ne_bytes() {
                    return Err("changed by XDP without the mark".into());
                }
                let veth = u32::from_ne_bytes(run.data[4..8].try_into().expect("4 bytes"));
                if ![self.net.hv1, self.net.hv2].contains(&veth) {
                    return Err(format!("XDP marked for veth {veth}"));
                }
                &run.data[8..]
            } else {
                &run.data[..]
            };
            check_translation(program, frame, out, &after, recalled, &self.net)
        };
        let failure = check().err();
        if !new.is_empty() {
            Maps::new(self.bpf.ebpf_mut())
                .ct_remove_all(&new)
                .expect("removing the new flow");
        }
        *ct = after;
        ct.retain(|(key, _)| !new.contains(key));
        FuzzRun {
            outcome,
            new_flow: !new.is_empty(),
            failure,
        }
    }
}

/// Fuzzes packets `share`, `share + shares`, ... of `packets`, on a
/// datapath of its own.
fn fuzz_share(
    net: Net,
    seeds: &[Vec<u8>],
    share: usize,
    shares: usize,
    packets: usize,
) -> FuzzReport {
    let mut datapath = Datapath::new(net, Some(FUZZ_CT_MAX));
    let counters_before = datapath.counters();
    let mut ct = datapath.ct_in_map_order();
    let mut report = FuzzReport::default();
    for index in (share..packets).step_by(shares) {
        let mut rng = SplitMix64::for_packet(index as u64);
        let seed = &seeds[rng.below(seeds.len())];
        let frame = mutate(&mut rng, seed);
        report.packets += 1;
        for (slot, program) in Program::ALL.into_iter().enumerate() {
            let run = datapath.fuzz_one(program, &frame, &mut ct);
            report.outcomes[slot][run.outcome] += 1;
            report.new_flows += usize::from(run.new_flow);
            if let Some(failure) = run.failure {
                report.failure_count += 1;
                if report.failures.len() < 20 {
                    report.failures.push(format!(
                        "packet {index} at {}: {failure}\n      frame {}",
                        program.name(),
                        hex(&frame)
                    ));
                }
            }
        }
    }
    // What the counters must say of all these runs.
    let counters_after = datapath.counters();
    let dropped: usize = report.outcomes.iter().map(|o| o[DROPPED]).sum();
    let counted: u64 = counters_before
        .drops_since(&counters_after)
        .iter()
        .map(|(_, n)| n)
        .sum();
    if counted != dropped as u64 {
        report.failure_count += 1;
        report
            .failures
            .push(format!("{counted} drops counted, {dropped} returned"));
    }
    for (reason, n) in counters_before.drops_since(&counters_after) {
        if ["rewrite", "fib_lookup", "no_endpoint", "redirect"].contains(&reason) {
            report.failure_count += 1;
            report
                .failures
                .push(format!("{n} drops for a datapath failure: {reason}"));
        }
    }
    for program in Program::ALL {
        let index = program.hook() as usize;
        let seen = counters_after.hooks[index].packets() - counters_before.hooks[index].packets();
        let ran = report.packets - report.outcomes[index][REFUSED];
        if seen != ran as u64 {
            report.failure_count += 1;
            report.failures.push(format!(
                "{} counted {seen} packets of {ran} runs",
                program.name(),
            ));
        }
    }
    report
}

#[test]
fn malformed_fuzz_mutated_packets_through_every_program() {
    require_root!();
    let packets = match std::env::var("NETD_FUZZ_PACKETS") {
        Ok(count) => count
            .parse()
            .unwrap_or_else(|e| panic!("NETD_FUZZ_PACKETS={count}: {e}")),
        Err(_) => FUZZ_PACKETS_DEFAULT,
    };
    let (_routed, net) = routed_namespace();
    let seeds: Vec<Vec<u8>> = corpus(&net).into_iter().map(|class| class.frame).collect();
    // One datapath per thread; threads start in this thread's namespace.
    let shares = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let started = Instant::now();
    let reports: Vec<FuzzReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shares)
            .map(|share| {
                let seeds = &seeds;
                scope.spawn(move || fuzz_share(net, seeds, share, shares, packets))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a fuzz thread panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    let total: usize = reports.iter().map(|r| r.packets).sum();
    assert_eq!(total, packets, "every packet fuzzed");
    let mut summary = String::new();
    for (slot, program) in Program::ALL.into_iter().enumerate() {
        let sum =
            |outcome: usize| -> usize { reports.iter().map(|r| r.outcomes[slot][outcome]).sum() };
        summary += &format!(
            "\n  {}: {} passed, {} dropped, {} translated, {} refused by BPF_PROG_TEST_RUN",
            program.name(),
            sum(PASSED),
            sum(DROPPED),
            sum(TRANSLATED),
            sum(REFUSED)
        );
    }
    let new_flows: usize = reports.iter().map(|r| r.new_flows).sum();
    eprintln!(
        "fuzzed {packets} packets (seed {FUZZ_SEED:#x}) through 3 programs in {:.1} s on {shares} thread(s):{summary}\n  {new_flows} runs created a flow",
        elapsed.as_secs_f64()
    );
    let failures: usize = reports.iter().map(|r| r.failure_count).sum();
    let shown: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    assert!(
        failures == 0,
        "{failures} failures, the first ones:\n{}",
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
