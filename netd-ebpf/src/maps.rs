// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Every map netd's programs use. All are BTF maps (`#[btf_map]`), so
//! `bpftool map dump` prints their keys and values with field names; the
//! agent pins them under its bpffs directory by these names and may resize
//! them at load time (`max_entries` here are the defaults).

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    macros::btf_map,
};
use netd_common::{
    ct::{self, CtEntry, CtKey, FragKey, FragPorts},
    drop,
    endpoint::{
        DatapathConfig, EndpointInfo, EndpointStats, MAX_NETWORKS, NetworkInfo, UplinkInfo,
        VethInfo,
    },
    monitor::{self, Event, MonitorBucket, MonitorConfig},
    ports::{Mapping, MappingStats, PortKey, PortValue, SockRevKey, SockRevValue},
    stats::{ProtoStats, hook},
};

/// Packets seen per hook (`netd_common::stats::hook`), by protocol.
#[btf_map]
pub static NETD_PROTO_STATS: PerCpuArray<ProtoStats, { hook::COUNT as usize }> = PerCpuArray::new();

/// Drops by hook and reason (`netd_common::drop`, index `drop::slot`).
#[btf_map]
pub static NETD_DROPS: PerCpuArray<u64, { drop::ENTRIES as usize }> = PerCpuArray::new();

/// Flows created, by conntrack kind (`CtEntry::kind`).
#[btf_map]
pub static NETD_FLOWS_CREATED: PerCpuArray<u64, { ct::KINDS as usize }> = PerCpuArray::new();

/// Published ports: (protocol, host address, port prefix) -> mapping slot.
#[btf_map]
pub static NETD_PORTS: LpmTrie<PortKey, PortValue, 65536> = LpmTrie::new();

/// Mapping slots: the translation of each published mapping.
#[btf_map]
pub static NETD_MAPPINGS: Array<Mapping, 65536> = Array::new();

/// Per-mapping counters, at the mapping's slot.
#[btf_map]
pub static NETD_MAPPING_STATS: PerCpuArray<MappingStats, 65536> = PerCpuArray::new();

/// Conntrack: one entry per direction of each translated flow.
///
/// A plain (preallocated) hash, not an LRU: when it is full, new flows are
/// refused and counted (`ct_create`), and no live flow is ever evicted to
/// make room (an LRU evicts idle established flows: cilium#3239). The agent
/// removes expired flows, and under pressure the oldest not-established
/// ones first, as netfilter's early drop does.
#[btf_map]
pub static NETD_CT: HashMap<CtKey, CtEntry, 65536> = HashMap::new();

/// Attached containers by IPv4 address (network order).
#[btf_map]
pub static NETD_ENDPOINTS: HashMap<[u8; 4], EndpointInfo, 4096> = HashMap::new();

/// The host's own IPv4 addresses (network order): what "a local address"
/// means for a published port bound to any address.
#[btf_map]
pub static NETD_LOCAL_ADDRS: HashMap<[u8; 4], u32, 1024> = HashMap::new();

/// The datapath's settings (one entry).
#[btf_map]
pub static NETD_CONFIG: Array<DatapathConfig, 1> = Array::new();

/// Every network's settings, by network index (the default network is 0).
#[btf_map]
pub static NETD_NETWORKS: Array<NetworkInfo, { MAX_NETWORKS as usize }> = Array::new();

/// Every network's subnet -> its index: which network an address belongs
/// to, for isolation and for refusing forged sources.
#[btf_map]
pub static NETD_SUBNETS: LpmTrie<[u8; 4], u32, { MAX_NETWORKS as usize }> = LpmTrie::new();

/// Containers' host veths and LAN endpoints' devices by ifindex (see
/// `LAN_IFINDEX_BASE`): the only address and MAC each may send from.
#[btf_map]
pub static NETD_VETHS: HashMap<u32, VethInfo, 4096> = HashMap::new();

/// What each LAN endpoint sent and had dropped, by its device's ifindex.
#[btf_map]
pub static NETD_ENDPOINT_STATS: PerCpuHashMap<u32, EndpointStats, 4096> = PerCpuHashMap::new();

/// Uplinks by ifindex: the address masquerade uses for flows leaving by
/// each.
#[btf_map]
pub static NETD_UPLINKS: HashMap<u32, UplinkInfo, 64> = HashMap::new();

/// Sockets host-local translation sent to a container: what each addressed,
/// for `getpeername` and `recvmsg`. An LRU: closed sockets age out.
#[btf_map]
pub static NETD_SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue, 65536> = LruHashMap::new();

/// The ports of fragmented datagrams whose first fragment netd translated,
/// for their later fragments, which carry none (see `frag`). An LRU: an
/// entry is needed only while its datagram's fragments arrive, within
/// milliseconds; the oldest give way.
#[btf_map]
pub static NETD_FRAGS: LruHashMap<FragKey, FragPorts, 8192> = LruHashMap::new();

/// What the live monitor asks for (one entry, written by the agent).
#[btf_map]
pub static NETD_MONITOR: Array<MonitorConfig, 1> = Array::new();

/// Each CPU's monitor token bucket and lost-event counts (one entry).
#[btf_map]
pub static NETD_MONITOR_BUCKETS: PerCpuArray<MonitorBucket, 1> = PerCpuArray::new();

/// The monitor's events, read by the agent.
#[btf_map]
pub static NETD_MONITOR_EVENTS: RingBuf<Event, { monitor::RING_BYTES as usize }> = RingBuf::new();
