// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Typed access to netd's maps, for the agent and for tests that seed maps
//! before running a program.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
        lpm_trie::Key,
    },
    util::nr_cpus,
};
use ipnet::Ipv4Net;
use netd_common::{
    ct::{CtEntry, CtKey},
    drop,
    endpoint::{DatapathConfig, EndpointInfo, EndpointStats, NetworkInfo, UplinkInfo, VethInfo},
    map_names as names,
    ports::{
        MAPPING_ACTIVE, MAPPING_TO_ONE, Mapping, MappingStats, PORT_KEY_FIXED_BITS, PortKey,
        PortValue, range_prefixes,
    },
    stats::{ProtoStats, hook},
};

use super::{batch, error::DatapathError};

/// Drops by hook and reason, summed over CPUs (index `drop::slot`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts(Vec<u64>);

impl DropCounts {
    /// Drops of `code` at `hook`.
    pub fn at(&self, hook: u32, code: u32) -> u64 {
        self.0
            .get(drop::slot(hook, code) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Drops of `code`, at every hook.
    pub fn reason(&self, code: u32) -> u64 {
        (0..drop::hook::ROWS).map(|hook| self.at(hook, code)).sum()
    }
}

/// One published mapping, as the datapath sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRule {
    pub slot: u32,
    pub generation: u32,
    pub proto: u8,
    /// 0.0.0.0 for "any local address".
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub host_port_end: u16,
    pub ctr_ip: Ipv4Addr,
    pub ctr_port: u16,
    /// Every host port goes to `ctr_port` (Docker's `8080-8090:80`).
    pub to_one: bool,
}

impl PortRule {
    /// The LPM keys that tile the rule's host port range.
    pub fn keys(&self) -> impl Iterator<Item = Key<PortKey>> + '_ {
        range_prefixes(self.host_port, self.host_port_end).map(|(port, bits)| {
            Key::new(
                PORT_KEY_FIXED_BITS + bits,
                PortKey {
                    proto: self.proto,
                    addr_be: self.host_ip.octets(),
                    port_be: port.to_be_bytes(),
                    _pad: 0,
                },
            )
        })
    }

    fn mapping(&self) -> Mapping {
        Mapping {
            ctr_addr_be: self.ctr_ip.octets(),
            ctr_port: self.ctr_port,
            host_port: self.host_port,
            host_port_end: self.host_port_end,
            flags: MAPPING_ACTIVE | if self.to_one { MAPPING_TO_ONE } else { 0 },
            generation: self.generation,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// netd's maps inside a loaded object, or opened from their pins.
pub struct Maps<'a> {
    source: Source<'a>,
}

enum Source<'a> {
    Loaded(&'a mut Ebpf),
    Pinned(&'a mut PinnedMaps),
}

/// Some of netd's maps, opened from their pins under a bpffs directory:
/// what a reader that does not own the loaded object (a metrics scrape,
/// outside the agent's lock) reads the counters through.
pub struct PinnedMaps(BTreeMap<&'static str, Map>);

impl PinnedMaps {
    /// Opens the pins of `names` under `bpffs`; one that is missing or not
    /// a map fails the whole.
    pub fn open(bpffs: &std::path::Path, names: &[&'static str]) -> Result<Self, DatapathError> {
        let mut maps = BTreeMap::new();
        for &name in names {
            let data = MapData::from_pin(bpffs.join(name))
                .map_err(|source| DatapathError::MapOp { map: name, source })?;
            let map = Map::from_map_data(data)
                .map_err(|source| DatapathError::MapOp { map: name, source })?;
            maps.insert(name, map);
        }
        Ok(Self(maps))
    }
}

impl<'a> Maps<'a> {
    pub fn new(ebpf: &'a mut Ebpf) -> Self {
        Self {
            source: Source::Loaded(ebpf),
        }
    }

    pub fn pinned(maps: &'a mut PinnedMaps) -> Self {
        Self {
            source: Source::Pinned(maps),
        }
    }

    fn map(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        match &mut self.source {
            Source::Loaded(ebpf) => ebpf.map_mut(name),
            Source::Pinned(maps) => maps.0.get_mut(name),
        }
        .ok_or(DatapathError::MissingMap(name))
    }

    /// The map `name` itself, for what aya has no typed call for.
    fn map_data(&mut self, name: &'static str) -> Result<&MapData, DatapathError> {
        match self.map(name)? {
            Map::HashMap(data)
            | Map::LruHashMap(data)
            | Map::PerCpuArray(data)
            | Map::PerCpuHashMap(data) => Ok(data),
            _ => Err(DatapathError::MissingMap(name)),
        }
    }

    fn ctx(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
        move |source| DatapathError::MapOp { map: name, source }
    }

    pub fn set_config(&mut self, config: &DatapathConfig) -> Result<(), DatapathError> {
        let mut map: Array<&mut MapData, DatapathConfig> =
            Array::try_from(self.map(names::CONFIG)?).map_err(Self::ctx(names::CONFIG))?;
        map.set(0, config, 0).map_err(Self::ctx(names::CONFIG))
    }

    /// Writes network `index`'s settings and its subnet.
    pub fn set_network(
        &mut self,
        index: u16,
        subnet: Ipv4Net,
        info: &NetworkInfo,
    ) -> Result<(), DatapathError> {
        self.set_network_settings(index, info)?;
        let mut subnets: LpmTrie<&mut MapData, [u8; 4], u32> =
            LpmTrie::try_from(self.map(names::SUBNETS)?).map_err(Self::ctx(names::SUBNETS))?;
        subnets
            .insert(
                &Key::new(u32::from(subnet.prefix_len()), subnet.network().octets()),
                u32::from(index),
                0,
            )
            .map_err(Self::ctx(names::SUBNETS))
    }

    /// Writes network `index`'s settings only: a LAN network's subnet is
    /// the LAN's, whose addresses are not netd's to tell apart (its
    /// containers are peers of the LAN, not behind the host).
    pub fn set_network_settings(
        &mut self,
        index: u16,
        info: &NetworkInfo,
    ) -> Result<(), DatapathError> {
        let mut map: Array<&mut MapData, NetworkInfo> =
            Array::try_from(self.map(names::NETWORKS)?).map_err(Self::ctx(names::NETWORKS))?;
        map.set(u32::from(index), info, 0)
            .map_err(Self::ctx(names::NETWORKS))
    }

    /// Network `index`'s settings as the datapath has them (zeroes: none).
    pub fn network(&mut self, index: u16) -> Result<NetworkInfo, DatapathError> {
        let map: Array<&mut MapData, NetworkInfo> =
            Array::try_from(self.map(names::NETWORKS)?).map_err(Self::ctx(names::NETWORKS))?;
        map.get(&u32::from(index), 0)
            .map_err(Self::ctx(names::NETWORKS))
    }

    /// The subnets the datapath knows, with their network's index.
    pub fn subnets(&mut self) -> Result<Vec<(Ipv4Net, u16)>, DatapathError> {
        let map: LpmTrie<&mut MapData, [u8; 4], u32> =
            LpmTrie::try_from(self.map(names::SUBNETS)?).map_err(Self::ctx(names::SUBNETS))?;
        let keys: Vec<Key<[u8; 4]>> = map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(names::SUBNETS))?;
        keys.iter()
            .map(|key| {
                let index = map.get(key, 0).map_err(Self::ctx(names::SUBNETS))?;
                let subnet = Ipv4Net::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8)
                    .expect("an LPM key's prefix length is at most 32");
                Ok((subnet, index as u16))
            })
            .collect()
    }

    /// Forgets network `index` and its subnet; absent is fine.
    pub fn remove_network(&mut self, index: u16, subnet: Ipv4Net) -> Result<(), DatapathError> {
        let mut subnets: LpmTrie<&mut MapData, [u8; 4], u32> =
            LpmTrie::try_from(self.map(names::SUBNETS)?).map_err(Self::ctx(names::SUBNETS))?;
        match subnets.remove(&Key::new(
            u32::from(subnet.prefix_len()),
            subnet.network().octets(),
        )) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(err) => return Err(Self::ctx(names::SUBNETS)(err)),
        }
        let mut map: Array<&mut MapData, NetworkInfo> =
            Array::try_from(self.map(names::NETWORKS)?).map_err(Self::ctx(names::NETWORKS))?;
        map.set(u32::from(index), NetworkInfo::default(), 0)
            .map_err(Self::ctx(names::NETWORKS))
    }

    pub fn config(&mut self) -> Result<DatapathConfig, DatapathError> {
        let map: Array<&mut MapData, DatapathConfig> =
            Array::try_from(self.map(names::CONFIG)?).map_err(Self::ctx(names::CONFIG))?;
        map.get(&0, 0).map_err(Self::ctx(names::CONFIG))
    }

    fn endpoints_map(
        &mut self,
    ) -> Result<HashMap<&mut MapData, [u8; 4], EndpointInfo>, DatapathError> {
        HashMap::try_from(self.map(names::ENDPOINTS)?).map_err(Self::ctx(names::ENDPOINTS))
    }

    pub fn set_endpoint(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        self.endpoints_map()?
            .insert(ip.octets(), info, 0)
            .map_err(Self::ctx(names::ENDPOINTS))
    }

    /// Removes the endpoint `ip`; absent is fine.
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        match self.endpoints_map()?.remove(&ip.octets()) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(err) => Err(Self::ctx(names::ENDPOINTS)(err)),
        }
    }

    pub fn endpoints(&mut self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        let map = self.endpoints_map()?;
        map.iter()
            .map(|entry| entry.map(|(ip, info)| (Ipv4Addr::from(ip), info)))
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(names::ENDPOINTS))
    }

    fn veths_map(&mut self) -> Result<HashMap<&mut MapData, u32, VethInfo>, DatapathError> {
        HashMap::try_from(self.map(names::VETHS)?).map_err(Self::ctx(names::VETHS))
    }

    /// Records what the container behind host veth `ifindex` may send from.
    pub fn set_veth(
        &mut self,
        ifindex: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
        network: u16,
    ) -> Result<(), DatapathError> {
        let info = VethInfo {
            addr_be: ip.octets(),
            mac,
            network,
        };
        self.veths_map()?
            .insert(ifindex, info, 0)
            .map_err(Self::ctx(names::VETHS))
    }

    /// Forgets host veth `ifindex`; absent is fine.
    pub fn remove_veth(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        match self.veths_map()?.remove(&ifindex) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(err) => Err(Self::ctx(names::VETHS)(err)),
        }
    }

    /// The host veths recorded, by ifindex.
    pub fn veths(&mut self) -> Result<Vec<(u32, VethInfo)>, DatapathError> {
        self.veths_map()?
            .iter()
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(names::VETHS))
    }

    /// Makes `NETD_UPLINKS` hold exactly `uplinks` (ifindex -> masquerade
    /// address). Returns whether it changed anything.
    pub fn sync_uplinks(
        &mut self,
        uplinks: &BTreeMap<u32, Ipv4Addr>,
    ) -> Result<bool, DatapathError> {
        let mut map: HashMap<&mut MapData, u32, UplinkInfo> =
            HashMap::try_from(self.map(names::UPLINKS)?).map_err(Self::ctx(names::UPLINKS))?;
        let present: BTreeMap<u32, Ipv4Addr> = map
            .iter()
            .map(|entry| entry.map(|(index, info)| (index, Ipv4Addr::from(info.addr_be))))
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(names::UPLINKS))?;
        if &present == uplinks {
            return Ok(false);
        }
        for index in present.keys().filter(|index| !uplinks.contains_key(index)) {
            map.remove(index).map_err(Self::ctx(names::UPLINKS))?;
        }
        for (index, addr) in uplinks {
            map.insert(
                index,
                UplinkInfo {
                    addr_be: addr.octets(),
                },
                0,
            )
            .map_err(Self::ctx(names::UPLINKS))?;
        }
        Ok(true)
    }

    /// Makes `NETD_LOCAL_ADDRS` hold exactly `addrs`. Returns whether it
    /// changed anything.
    pub fn sync_local_addrs(&mut self, addrs: &BTreeSet<Ipv4Addr>) -> Result<bool, DatapathError> {
        let mut map: HashMap<&mut MapData, [u8; 4], u32> =
            HashMap::try_from(self.map(names::LOCAL_ADDRS)?)
                .map_err(Self::ctx(names::LOCAL_ADDRS))?;
        let present: BTreeSet<Ipv4Addr> = map
            .keys()
            .map(|key| key.map(Ipv4Addr::from))
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(names::LOCAL_ADDRS))?;
        let mut changed = false;
        for gone in present.difference(addrs) {
            map.remove(&gone.octets())
                .map_err(Self::ctx(names::LOCAL_ADDRS))?;
            changed = true;
        }
        for new in addrs.difference(&present) {
            map.insert(new.octets(), 1, 0)
                .map_err(Self::ctx(names::LOCAL_ADDRS))?;
            changed = true;
        }
        Ok(changed)
    }

    fn mappings_map(&mut self) -> Result<Array<&mut MapData, Mapping>, DatapathError> {
        Array::try_from(self.map(names::MAPPINGS)?).map_err(Self::ctx(names::MAPPINGS))
    }

    fn ports_map(&mut self) -> Result<LpmTrie<&mut MapData, PortKey, PortValue>, DatapathError> {
        LpmTrie::try_from(self.map(names::PORTS)?).map_err(Self::ctx(names::PORTS))
    }

    /// Publishes `rule`: its slot first, then the LPM keys that point at
    /// it, so that a packet never finds a key whose slot is not ready.
    /// `fresh`: the slot is newly given to this rule; its counters start at
    /// zero (a re-install after a restart keeps them).
    pub fn install(&mut self, rule: &PortRule, fresh: bool) -> Result<(), DatapathError> {
        self.mappings_map()?
            .set(rule.slot, rule.mapping(), 0)
            .map_err(Self::ctx(names::MAPPINGS))?;
        if fresh {
            let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
            let zeroes = PerCpuValues::try_from(vec![MappingStats::default(); cpus])
                .map_err(DatapathError::Cpus)?;
            let mut stats: PerCpuArray<&mut MapData, MappingStats> =
                PerCpuArray::try_from(self.map(names::MAPPING_STATS)?)
                    .map_err(Self::ctx(names::MAPPING_STATS))?;
            stats
                .set(rule.slot, zeroes, 0)
                .map_err(Self::ctx(names::MAPPING_STATS))?;
        }
        let mut ports = self.ports_map()?;
        for key in rule.keys() {
            ports
                .insert(&key, PortValue { mapping: rule.slot }, 0)
                .map_err(Self::ctx(names::PORTS))?;
        }
        Ok(())
    }

    /// Unpublishes `rule`: its LPM keys first, then its slot (inactive), so
    /// flows it steered see a stale generation on their next packet.
    pub fn uninstall(&mut self, rule: &PortRule) -> Result<(), DatapathError> {
        let mut ports = self.ports_map()?;
        for key in rule.keys() {
            match ports.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(err) => return Err(Self::ctx(names::PORTS)(err)),
            }
        }
        let retired = Mapping {
            flags: 0,
            ..rule.mapping()
        };
        self.mappings_map()?
            .set(rule.slot, retired, 0)
            .map_err(Self::ctx(names::MAPPINGS))
    }

    /// Marks slot `slot` inactive, keeping its generation: flows it steered
    /// stop being translated on their next packet.
    pub fn retire(&mut self, slot: u32) -> Result<(), DatapathError> {
        let mut mappings = self.mappings_map()?;
        let mut mapping = mappings.get(&slot, 0).map_err(Self::ctx(names::MAPPINGS))?;
        mapping.flags = 0;
        mappings
            .set(slot, mapping, 0)
            .map_err(Self::ctx(names::MAPPINGS))
    }

    /// Every LPM key present and the slot it points at.
    pub fn port_keys(&mut self) -> Result<Vec<(Key<PortKey>, u32)>, DatapathError> {
        let ports = self.ports_map()?;
        ports
            .iter()
            .map(|entry| entry.map(|(key, value)| (key, value.mapping)))
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(names::PORTS))
    }

    pub fn remove_port_key(&mut self, key: &Key<PortKey>) -> Result<(), DatapathError> {
        match self.ports_map()?.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(Self::ctx(names::PORTS)(err)),
        }
    }

    pub fn mapping(&mut self, slot: u32) -> Result<Mapping, DatapathError> {
        self.mappings_map()?
            .get(&slot, 0)
            .map_err(Self::ctx(names::MAPPINGS))
    }

    /// The slots holding a live mapping, with their contents.
    pub fn active_mappings(&mut self) -> Result<Vec<(u32, Mapping)>, DatapathError> {
        let map = self.mappings_map()?;
        let mut active = Vec::new();
        for (slot, mapping) in map.iter().enumerate() {
            let mapping = mapping.map_err(Self::ctx(names::MAPPINGS))?;
            if mapping.is_active() {
                active.push((slot as u32, mapping));
            }
        }
        Ok(active)
    }

    pub fn mapping_stats(&mut self, slot: u32) -> Result<MappingStats, DatapathError> {
        let map: PerCpuArray<&mut MapData, MappingStats> =
            PerCpuArray::try_from(self.map(names::MAPPING_STATS)?)
                .map_err(Self::ctx(names::MAPPING_STATS))?;
        let values = map.get(&slot, 0).map_err(Self::ctx(names::MAPPING_STATS))?;
        Ok(values
            .iter()
            .copied()
            .fold(MappingStats::default(), MappingStats::merged))
    }

    fn endpoint_stats_map(
        &mut self,
    ) -> Result<PerCpuHashMap<&mut MapData, u32, EndpointStats>, DatapathError> {
        PerCpuHashMap::try_from(self.map(names::ENDPOINT_STATS)?)
            .map_err(Self::ctx(names::ENDPOINT_STATS))
    }

    /// Starts counting what LAN endpoint device `ifindex` sends, from zero
    /// unless it is counted already (an agent restarting).
    pub fn count_endpoint(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        let zeroes = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
            .map_err(DatapathError::Cpus)?;
        let mut map = self.endpoint_stats_map()?;
        if map.get(&ifindex, 0).is_ok() {
            return Ok(());
        }
        map.insert(ifindex, zeroes, 0)
            .map_err(Self::ctx(names::ENDPOINT_STATS))
    }

    /// Stops counting LAN endpoint device `ifindex`; absent is fine.
    pub fn uncount_endpoint(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        match self.endpoint_stats_map()?.remove(&ifindex) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(err) => Err(Self::ctx(names::ENDPOINT_STATS)(err)),
        }
    }

    /// What LAN endpoint device `ifindex` sent, summed over CPUs.
    pub fn endpoint_stats(&mut self, ifindex: u32) -> Result<EndpointStats, DatapathError> {
        let map = self.endpoint_stats_map()?;
        let values = map
            .get(&ifindex, 0)
            .map_err(Self::ctx(names::ENDPOINT_STATS))?;
        Ok(values
            .iter()
            .fold(EndpointStats::default(), |sum, v| EndpointStats {
                packets: sum.packets + v.packets,
                bytes: sum.bytes + v.bytes,
                dropped: sum.dropped + v.dropped,
            }))
    }

    /// Every slot of a per-CPU array summed over CPUs, in one batch where
    /// the kernel can, else slot by slot.
    fn percpu_sums<V: aya::Pod + Default>(
        &mut self,
        name: &'static str,
        entries: u32,
        fold: impl Fn(V, V) -> V,
    ) -> Result<Vec<V>, DatapathError> {
        let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        let batched = batch::percpu_array_sums(self.map_data(name)?.fd(), entries, cpus, &fold)
            .map_err(|source| DatapathError::Io {
                what: format!("reading {name} in batches"),
                source,
            })?;
        if let Some(sums) = batched {
            return Ok(sums);
        }
        let map: PerCpuArray<&mut MapData, V> =
            PerCpuArray::try_from(self.map(name)?).map_err(Self::ctx(name))?;
        (0..entries)
            .map(|i| {
                map.get(&i, 0)
                    .map(|values| values.iter().copied().fold(V::default(), &fold))
            })
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(name))
    }

    /// Drops by hook and reason, summed over CPUs.
    pub fn drop_counts(&mut self) -> Result<DropCounts, DatapathError> {
        self.percpu_sums(names::DROPS, drop::ENTRIES, |a: u64, b| a + b)
            .map(DropCounts)
    }

    /// Drops per reason over every hook, in `drop::NAMES` order.
    pub fn drops(&mut self) -> Result<Vec<u64>, DatapathError> {
        let counts = self.drop_counts()?;
        Ok((0..drop::COUNT)
            .map(|i| counts.reason(drop::BASE + i))
            .collect())
    }

    /// Flows created per conntrack kind (`CtEntry::kind`), summed over CPUs.
    pub fn flows_created(&mut self) -> Result<Vec<u64>, DatapathError> {
        self.percpu_sums(names::FLOWS_CREATED, netd_common::ct::KINDS, |a: u64, b| {
            a + b
        })
    }

    /// Every mapping slot's counters, summed over CPUs, in slot order.
    pub fn all_mapping_stats(&mut self) -> Result<Vec<MappingStats>, DatapathError> {
        let entries = self
            .map_data(names::MAPPING_STATS)?
            .info()
            .map_err(Self::ctx(names::MAPPING_STATS))?
            .max_entries();
        self.percpu_sums(names::MAPPING_STATS, entries, MappingStats::merged)
    }

    /// Packets per hook, by protocol, summed over CPUs, in `hook::NAMES`
    /// order.
    pub fn proto_stats(&mut self) -> Result<Vec<ProtoStats>, DatapathError> {
        let map: PerCpuArray<&mut MapData, ProtoStats> =
            PerCpuArray::try_from(self.map(names::PROTO_STATS)?)
                .map_err(Self::ctx(names::PROTO_STATS))?;
        (0..hook::COUNT)
            .map(|i| {
                map.get(&i, 0).map(|values| {
                    values
                        .iter()
                        .copied()
                        .fold(ProtoStats::default(), ProtoStats::merged)
                })
            })
            .collect::<Result<_, _>>()
            .map_err(Self::ctx(names::PROTO_STATS))
    }

    fn ct_map(&mut self) -> Result<HashMap<&mut MapData, CtKey, CtEntry>, DatapathError> {
        HashMap::try_from(self.map(names::CT)?).map_err(Self::ctx(names::CT))
    }

    /// Every conntrack entry, read in batches where the kernel can. Entries
    /// that vanish during the walk (the datapath deleting a stale flow) are
    /// skipped.
    pub fn ct_entries(&mut self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError> {
        if let Some(entries) =
            batch::lookup_all(self.map_data(names::CT)?.fd()).map_err(|source| {
                DatapathError::Io {
                    what: format!("reading {} in batches", names::CT),
                    source,
                }
            })?
        {
            return Ok(entries);
        }
        let map = self.ct_map()?;
        let mut entries = Vec::new();
        for entry in map.iter() {
            match entry {
                Ok(entry) => entries.push(entry),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(err) => return Err(Self::ctx(names::CT)(err)),
            }
        }
        Ok(entries)
    }

    /// How many conntrack entries there are, without copying the table.
    pub fn ct_count(&mut self) -> Result<usize, DatapathError> {
        let counted =
            batch::count::<CtKey, CtEntry>(self.map_data(names::CT)?.fd()).map_err(|source| {
                DatapathError::Io {
                    what: format!("counting {} in batches", names::CT),
                    source,
                }
            })?;
        if let Some(count) = counted {
            return Ok(count);
        }
        // Keys alone, one at a time: slow, but no copy of the table either.
        let map = self.ct_map()?;
        let mut count = 0;
        for key in map.keys() {
            match key {
                Ok(_) => count += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(err) => return Err(Self::ctx(names::CT)(err)),
            }
        }
        Ok(count)
    }

    /// Removes conntrack entries, in batches where the kernel can; absent
    /// ones are fine.
    pub fn ct_remove_all(&mut self, keys: &[CtKey]) -> Result<(), DatapathError> {
        let batched = batch::delete(self.map_data(names::CT)?.fd(), keys).map_err(|source| {
            DatapathError::Io {
                what: format!("deleting from {} in batches", names::CT),
                source,
            }
        })?;
        if !batched {
            for key in keys {
                self.ct_remove(key)?;
            }
        }
        Ok(())
    }

    pub fn ct_get(&mut self, key: &CtKey) -> Result<Option<CtEntry>, DatapathError> {
        match self.ct_map()?.get(key, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(err) => Err(Self::ctx(names::CT)(err)),
        }
    }

    /// Removes a conntrack entry; absent is fine.
    pub fn ct_remove(&mut self, key: &CtKey) -> Result<(), DatapathError> {
        match self.ct_map()?.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(Self::ctx(names::CT)(err)),
        }
    }

    pub fn ct_insert(&mut self, key: &CtKey, entry: &CtEntry) -> Result<(), DatapathError> {
        self.ct_map()?
            .insert(key, entry, 0)
            .map_err(Self::ctx(names::CT))
    }
}
