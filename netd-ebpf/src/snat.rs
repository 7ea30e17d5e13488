// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Source NAT for flows containers start: masquerade (to the outside,
//! behind the uplink's address) and hairpin (to a published port through
//! the host's address, behind the gateway's address).
//!
//! A source port (an identifier, for ICMP echo) is claimed by inserting the
//! flow's reply entry with `BPF_NOEXIST`: the reply key (peer, port, NAT
//! address, NAT port) is unique exactly when no other flow translated to
//! that NAT port talks to that peer, which is the only collision that
//! matters, as in netfilter. Before claiming, a port is skipped if it is
//! published on the NAT address, or if the host itself has a socket that
//! would receive the replies (`bpf_sk_lookup_*`: a listener on the port, or
//! a connection to the same peer). Tries are bounded: at most
//! `MAX_TRIES` ports, from a random start; then the flow is refused with
//! `drop::NAT_EXHAUSTED`.

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple},
    helpers::generated::{
        bpf_get_prandom_u32, bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release,
    },
    programs::TcContext,
};
use netd_common::{
    ct::{
        CT_AT_UPLINK, CT_KIND_HAIRPIN, CT_KIND_MASQUERADE, CT_KIND_ROUTED, CT_NAT_DST, CT_NAT_SRC,
        CT_ORIGINAL, CT_TO_ENDPOINT, CtEntry, CtKey, NO_MAPPING,
    },
    drop,
    endpoint::EndpointInfo,
    ports::Mapping,
};

use crate::{
    ct,
    parse::{Flow, PROTO_TCP, PROTO_UDP},
    ports,
};

/// How many source ports a new flow may try (Cilium and netfilter bound
/// their searches alike).
const MAX_TRIES: u32 = 32;

/// The IPv4 member of `struct bpf_sock_tuple`, filled whole (zeroing the
/// 36-byte union instead would cost a memset loop the verifier walks on
/// every try).
#[repr(C)]
struct Ipv4Tuple {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

/// Whether the host has a socket that would take packets from
/// `peer:peer_port` to `local:port`.
#[inline(always)]
fn host_socket(
    ctx: &TcContext,
    proto: u8,
    peer: [u8; 4],
    peer_port: [u8; 2],
    local: [u8; 4],
    port: [u8; 2],
) -> bool {
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return false;
    }
    let mut tuple = Ipv4Tuple {
        saddr: u32::from_ne_bytes(peer),
        daddr: u32::from_ne_bytes(local),
        sport: u16::from_ne_bytes(peer_port),
        dport: u16::from_ne_bytes(port),
    };
    let tuple_ptr = (&raw mut tuple).cast::<bpf_sock_tuple>();
    let size = size_of::<Ipv4Tuple>() as u32;
    let netns = u64::from(BPF_F_CURRENT_NETNS as u32);
    // SAFETY: the tuple lives on the stack for the call and the helper
    // reads `size` bytes of it; a socket returned is released at once.
    unsafe {
        let sk = if proto == PROTO_TCP {
            bpf_sk_lookup_tcp(ctx.skb.skb.cast(), tuple_ptr, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.skb.skb.cast(), tuple_ptr, size, netns, 0)
        };
        if sk.is_null() {
            false
        } else {
            bpf_sk_release(sk.cast());
            true
        }
    }
}

/// Where translated flows appear to come from: an address, and the source
/// ports (host order, inclusive) to choose from.
pub struct NatSource {
    pub addr: [u8; 4],
    pub ports: (u16, u16),
}

/// A published port a hairpin flow goes to.
pub struct HairpinTarget {
    pub slot: u32,
    pub mapping: Mapping,
    pub endpoint: EndpointInfo,
}

/// Claims a source port on `source` for `flow` and inserts the flow's two
/// entries: `original` (for `key`) and `reply` (for `reply_key`, whose
/// destination port is the port claimed). `first`: a port to try before the
/// range (hairpin keeps the client's port when it can).
#[inline(always)]
fn claim(
    ctx: &TcContext,
    flow: &Flow,
    key: &CtKey,
    source: &NatSource,
    first: Option<u16>,
    original: &mut CtEntry,
    (reply_key, reply): (&mut CtKey, &CtEntry),
) -> Result<*mut CtEntry, u32> {
    let nat_addr = source.addr;
    let (min, max) = source.ports;
    let size = u32::from(max.saturating_sub(min)) + 1;
    // SAFETY: a helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() } % size;
    original.nat_saddr_be = nat_addr;
    for i in 0..=MAX_TRIES {
        let port = match (i, first) {
            (0, Some(port)) => port,
            (0, None) => continue,
            _ if i > size => break,
            _ => min.wrapping_add(((start + i - 1) % size) as u16),
        };
        let port_be = port.to_be_bytes();
        if ports::published(flow.proto, nat_addr, port_be)
            || host_socket(ctx, flow.proto, flow.daddr, flow.dport, nat_addr, port_be)
        {
            continue;
        }
        reply_key.dport_be = port_be;
        original.reverse = *reply_key;
        original.nat_sport_be = port_be;
        if let Ok(created) = ct::insert_pair(key, original, reply_key, reply) {
            return created;
        }
    }
    Err(drop::NAT_EXHAUSTED)
}

/// Masquerades a new flow `flow` of the container `src` (its endpoint)
/// behind `source`.
#[inline(always)]
pub fn masquerade(
    ctx: &TcContext,
    flow: &Flow,
    key: &CtKey,
    src: &EndpointInfo,
    source: &NatSource,
) -> Result<*mut CtEntry, u32> {
    let mut original = ct::entry(
        flow.proto,
        CT_NAT_SRC | CT_ORIGINAL,
        CT_KIND_MASQUERADE,
        NO_MAPPING,
        0,
    );
    let mut reply_key = CtKey {
        saddr_be: flow.daddr,
        daddr_be: source.addr,
        sport_be: flow.dport,
        dport_be: [0; 2],
        proto: flow.proto,
        _pad: [0; 3],
    };
    let mut reply = ct::entry(
        flow.proto,
        CT_NAT_DST | CT_TO_ENDPOINT | CT_AT_UPLINK,
        CT_KIND_MASQUERADE,
        NO_MAPPING,
        0,
    );
    reply.reverse = *key;
    reply.nat_daddr_be = flow.saddr;
    reply.nat_dport_be = flow.sport;
    reply.ifindex = src.ifindex;
    reply.dmac = src.mac;
    claim(
        ctx,
        flow,
        key,
        source,
        None,
        &mut original,
        (&mut reply_key, &reply),
    )
}

/// Tracks a new flow `flow` of the container `src` that leaves without NAT
/// (masquerade off): its replies, addressed to the container itself, are
/// let in from the uplink and delivered; unsolicited packets to the
/// container's address stay dropped.
#[inline(always)]
pub fn routed(flow: &Flow, key: &CtKey, src: &EndpointInfo) -> Result<*mut CtEntry, u32> {
    let reply_key = CtKey {
        saddr_be: flow.daddr,
        daddr_be: flow.saddr,
        sport_be: flow.dport,
        dport_be: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let mut original = ct::entry(flow.proto, CT_ORIGINAL, CT_KIND_ROUTED, NO_MAPPING, 0);
    original.reverse = reply_key;
    let mut reply = ct::entry(
        flow.proto,
        CT_TO_ENDPOINT | CT_AT_UPLINK,
        CT_KIND_ROUTED,
        NO_MAPPING,
        0,
    );
    reply.reverse = *key;
    reply.ifindex = src.ifindex;
    reply.dmac = src.mac;
    match ct::insert_pair(key, &original, &reply_key, &reply) {
        Ok(created) => created,
        Err(()) => Err(drop::CT_CREATE),
    }
}

/// A container's new flow to a published port through the host's address:
/// translated to the published container (`target`), with the source
/// rewritten to `source` (the gateway's address) so that the reply comes
/// back through netd rather than straight over the bridge.
#[inline(always)]
pub fn hairpin(
    ctx: &TcContext,
    flow: &Flow,
    key: &CtKey,
    src: &EndpointInfo,
    target: &HairpinTarget,
    source: &NatSource,
) -> Result<*mut CtEntry, u32> {
    let mapping = &target.mapping;
    let to_port = mapping
        .ctr_port_for(u16::from_be_bytes(flow.dport))
        .to_be_bytes();
    let mut original = ct::entry(
        flow.proto,
        CT_NAT_SRC | CT_NAT_DST | CT_ORIGINAL | CT_TO_ENDPOINT,
        CT_KIND_HAIRPIN,
        target.slot,
        mapping.generation,
    );
    original.nat_daddr_be = mapping.ctr_addr_be;
    original.nat_dport_be = to_port;
    original.ifindex = target.endpoint.ifindex;
    original.dmac = target.endpoint.mac;
    let mut reply_key = CtKey {
        saddr_be: mapping.ctr_addr_be,
        daddr_be: source.addr,
        sport_be: to_port,
        dport_be: [0; 2],
        proto: flow.proto,
        _pad: [0; 3],
    };
    let mut reply = ct::entry(
        flow.proto,
        CT_NAT_SRC | CT_NAT_DST | CT_TO_ENDPOINT,
        CT_KIND_HAIRPIN,
        target.slot,
        mapping.generation,
    );
    reply.reverse = *key;
    reply.nat_saddr_be = flow.daddr;
    reply.nat_sport_be = flow.dport;
    reply.nat_daddr_be = flow.saddr;
    reply.nat_dport_be = flow.sport;
    reply.ifindex = src.ifindex;
    reply.dmac = src.mac;
    let first = Some(u16::from_be_bytes(flow.sport));
    claim(
        ctx,
        flow,
        key,
        source,
        first,
        &mut original,
        (&mut reply_key, &reply),
    )
}
