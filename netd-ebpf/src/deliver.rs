// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Sending a translated TC packet on: into a container, or out by the FIB.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, bpf_fib_lookup, bpf_redir_neigh},
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer,
    },
    maps::lpm_trie::Key,
    programs::TcContext,
};
use netd_common::{
    drop,
    endpoint::{DEFAULT_NETWORK, DatapathConfig, NetworkInfo, REDIRECT_PEER},
};

use crate::{
    maps::{NETD_CONFIG, NETD_NETWORKS, NETD_SUBNETS, NETD_VETHS},
    nat,
    parse::Flow,
};

const AF_INET: u8 = 2;
/// `BPF_FIB_LKUP_RET_*` (include/uapi/linux/bpf.h).
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

/// The datapath's settings; zeroes (peer redirect) if the agent has not
/// written them yet.
#[inline(always)]
pub fn config() -> DatapathConfig {
    NETD_CONFIG.get(0).copied().unwrap_or_default()
}

/// The settings of network `index`; zeroes (a network holding no
/// address) for an index the agent has not written.
#[inline(always)]
pub fn network(index: u16) -> NetworkInfo {
    NETD_NETWORKS
        .get(u32::from(index))
        .copied()
        .unwrap_or_default()
}

/// The index of the network behind host veth `ifindex`: the default
/// network's for a veth netd does not know.
#[inline(always)]
pub fn network_of_veth(ifindex: u32) -> u16 {
    match NETD_VETHS.get_ptr(ifindex) {
        // SAFETY: a live map value.
        Some(veth) => unsafe { (*veth).network },
        None => DEFAULT_NETWORK,
    }
}

/// The index of the network whose subnet holds `addr`, if one does.
#[inline(always)]
pub fn network_of_addr(addr: [u8; 4]) -> Option<u16> {
    NETD_SUBNETS
        .get(&Key::new(32, addr))
        .map(|index| *index as u16)
}

/// Redirects to the container behind host veth `ifindex`: into its
/// namespace with `bpf_redirect_peer`, or out of the host veth (which hands
/// it to the peer) with `bpf_redirect`, as configured.
#[inline(always)]
pub fn redirect_into(ifindex: u32, redirect: u32) -> Result<i32, u32> {
    // SAFETY: helpers with plain integer arguments.
    let ret = unsafe {
        if redirect == REDIRECT_PEER {
            bpf_redirect_peer(ifindex, 0)
        } else {
            bpf_redirect(ifindex, 0)
        }
    };
    if ret == i64::from(TC_ACT_REDIRECT) {
        Ok(TC_ACT_REDIRECT)
    } else {
        Err(drop::REDIRECT)
    }
}

/// The MAC packets delivered into the container behind host veth
/// `ifindex` come from: its network's gateway (the bridge).
#[inline(always)]
pub fn gateway_mac_for(ifindex: u32) -> [u8; 6] {
    network(network_of_veth(ifindex)).gateway_mac
}

/// Delivers into the container behind `ifindex` with MAC `dmac`, as if the
/// gateway had routed the packet.
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, ifindex: u32, dmac: [u8; 6]) -> Result<i32, u32> {
    nat::tc_set_macs(ctx, dmac, gateway_mac_for(ifindex))?;
    redirect_into(ifindex, config().redirect)
}

/// Whether `addr` is inside the network `net`.
#[inline(always)]
pub fn in_network(net: &NetworkInfo, addr: [u8; 4]) -> bool {
    let mask = u32::from_ne_bytes(net.mask_be);
    mask != 0 && u32::from_ne_bytes(addr) & mask == u32::from_ne_bytes(net.subnet_be)
}

/// Whether `addr` can be the far end of a flow netd creates: not
/// 0.0.0.0/8, loopback, multicast, or class E and the limited broadcast.
/// The kernel's input route lookup refuses those as sources and never
/// forwards to them (`ip_route_input_slow`: martians; broadcast and
/// multicast stay on the link or are delivered locally), so a flow with
/// such a peer would exist only because netd bypasses that lookup.
#[inline(always)]
pub fn unicast_peer(addr: [u8; 4]) -> bool {
    !matches!(addr[0], 0 | 127 | 224..=255)
}

/// Looks `flow` up in the FIB of the host's namespace, as if it arrived on
/// the interface the packet came in by. Returns the helper's verdict and the
/// filled parameters.
#[inline(always)]
fn route(ctx: &TcContext, flow: &Flow) -> (i64, bpf_fib_lookup) {
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) query.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = flow.proto;
    params.sport = u16::from_ne_bytes(flow.sport);
    params.dport = u16::from_ne_bytes(flow.dport);
    // tot_len stays 0: the kernel then checks the skb itself against the
    // egress MTU, which knows GSO (a 64 KiB TCP super-packet leaves as
    // MTU-sized segments). A tot_len of the skb's length would fail every
    // such packet with FRAG_NEEDED.
    // SAFETY: the context's skb pointer is valid for the program's life.
    params.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(flow.saddr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(flow.daddr);
    // SAFETY: params lives on the stack for the call; the size is exact.
    let ret = unsafe {
        fib_lookup(
            ctx.skb.skb.cast::<c_void>(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    (ret, params)
}

/// The interface the FIB sends `flow` out of, if it is routed.
#[inline(always)]
pub fn egress(ctx: &TcContext, flow: &Flow) -> Option<u32> {
    let (ret, params) = route(ctx, flow);
    (ret == FIB_SUCCESS || ret == FIB_NO_NEIGH).then_some(params.ifindex)
}

/// Routes the (already rewritten) packet `flow` by the FIB of the host's
/// namespace and redirects it out of the interface found, with the next
/// hop's MAC; `bpf_redirect_neigh` resolves the neighbour when the kernel
/// does not know it yet.
#[inline(always)]
pub fn by_fib(ctx: &TcContext, flow: &Flow) -> Result<i32, u32> {
    let (ret, params) = route(ctx, flow);
    match ret {
        FIB_SUCCESS => {
            nat::tc_set_macs(ctx, params.dmac, params.smac)?;
            // SAFETY: plain integer arguments.
            let ret = unsafe { bpf_redirect(params.ifindex, 0) };
            if ret == i64::from(TC_ACT_REDIRECT) {
                Ok(TC_ACT_REDIRECT)
            } else {
                Err(drop::REDIRECT)
            }
        }
        FIB_NO_NEIGH => {
            // The lookup left the next hop (gateway or destination) in
            // ipv4_dst.
            // SAFETY: an all-zero bpf_redir_neigh is valid; filled below.
            let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            nh.nh_family = u32::from(AF_INET);
            // SAFETY: union fields written by the kernel for AF_INET.
            nh.__bindgen_anon_1.ipv4_nh = unsafe { params.__bindgen_anon_4.ipv4_dst };
            // SAFETY: nh lives on the stack for the call; the size is exact.
            let ret = unsafe {
                bpf_redirect_neigh(
                    params.ifindex,
                    &mut nh,
                    size_of::<bpf_redir_neigh>() as i32,
                    0,
                )
            };
            if ret == i64::from(TC_ACT_REDIRECT) {
                Ok(TC_ACT_REDIRECT)
            } else {
                Err(drop::REDIRECT)
            }
        }
        _ => Err(drop::FIB_LOOKUP),
    }
}
