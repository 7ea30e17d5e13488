// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The live monitor's maps and events, as userspace reads them: the switch
//! and rate in `NETD_MONITOR`, the lost counts in `NETD_MONITOR_BUCKETS`,
//! and the events of `NETD_MONITOR_EVENTS` decoded from the ABI (see
//! `netd_common::monitor`).

use std::{net::Ipv4Addr, path::Path};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, PerCpuArray, RingBuf},
};
use bytemuck::Zeroable as _;
use netd_common::{
    ct::CtKey,
    drop, map_names as names,
    monitor::{EVENT_DROP, EVENT_FLOW, Event, MonitorBucket, MonitorConfig},
};

use super::DatapathError;

/// The monitor's three maps.
pub struct MonitorMaps {
    config: Array<MapData, MonitorConfig>,
    buckets: PerCpuArray<MapData, MonitorBucket>,
    /// The events; a reader polls its fd for readability.
    pub events: RingBuf<MapData>,
}

/// Events the datapath could not hand over, summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Refused by the token bucket: over the rate.
    pub rate: u64,
    /// Refused by the ring: the reader fell behind.
    pub full: u64,
}

impl Lost {
    pub fn total(self) -> u64 {
        self.rate + self.full
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::MapOp { map, source }
}

impl MonitorMaps {
    /// Opens the maps pinned under `bpffs`.
    pub fn open(bpffs: &Path) -> Result<Self, DatapathError> {
        let open = |name: &'static str| -> Result<Map, DatapathError> {
            let data = MapData::from_pin(bpffs.join(name)).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        };
        Self::from_maps(
            open(names::MONITOR)?,
            open(names::MONITOR_BUCKETS)?,
            open(names::MONITOR_EVENTS)?,
        )
    }

    /// Takes the maps out of a loaded object (tests of the programs).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::MissingMap(name));
        Self::from_maps(
            take(names::MONITOR)?,
            take(names::MONITOR_BUCKETS)?,
            take(names::MONITOR_EVENTS)?,
        )
    }

    fn from_maps(config: Map, buckets: Map, events: Map) -> Result<Self, DatapathError> {
        Ok(Self {
            config: Array::try_from(config).map_err(map_err(names::MONITOR))?,
            buckets: PerCpuArray::try_from(buckets).map_err(map_err(names::MONITOR_BUCKETS))?,
            events: RingBuf::try_from(events).map_err(map_err(names::MONITOR_EVENTS))?,
        })
    }

    /// Tells the programs what to emit, and how fast (`events` 0: nothing).
    pub fn configure(&mut self, config: MonitorConfig) -> Result<(), DatapathError> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(names::MONITOR))
    }

    /// What the programs were told.
    pub fn config(&self) -> Result<MonitorConfig, DatapathError> {
        self.config.get(&0, 0).map_err(map_err(names::MONITOR))
    }

    /// Events lost so far, over all CPUs.
    pub fn lost(&self) -> Result<Lost, DatapathError> {
        let per_cpu = self
            .buckets
            .get(&0, 0)
            .map_err(map_err(names::MONITOR_BUCKETS))?;
        Ok(per_cpu.iter().fold(Lost::default(), |sum, b| Lost {
            rate: sum.rate + b.lost_rate,
            full: sum.full + b.lost_full,
        }))
    }
}

/// One event, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Drop {
        time_ns: u64,
        /// The `drop::hook` row's name.
        hook: &'static str,
        /// The drop reason's name.
        reason: &'static str,
        ifindex: u32,
        len: u32,
        /// The packet's first bytes.
        head: Vec<u8>,
        packet: Summary,
    },
    Flow {
        time_ns: u64,
        /// The conntrack kind's name.
        kind: &'static str,
        /// The first packet as it arrived.
        tuple: CtKey,
        /// What the replies carry; reversed, what the packet became.
        reply: CtKey,
    },
}

impl Decoded {
    /// Decodes one ring buffer record; `None` for a record of another
    /// layout (a newer netd's, or a torn one).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Event>() {
            return None;
        }
        let mut event = Event::zeroed();
        bytemuck::bytes_of_mut(&mut event).copy_from_slice(&bytes[..size_of::<Event>()]);
        match event.kind {
            EVENT_DROP => {
                let snap = bytemuck::bytes_of(&event.snap);
                let head = snap[..(event.snap_len as usize).min(snap.len())].to_vec();
                Some(Self::Drop {
                    time_ns: event.time_ns,
                    hook: hook_name(u32::from(event.hook)),
                    reason: reason_name(event.reason),
                    ifindex: event.ifindex,
                    len: event.len,
                    packet: Summary::of_frame(&head),
                    head,
                })
            }
            EVENT_FLOW => Some(Self::Flow {
                time_ns: event.time_ns,
                kind: kind_name(event.reason as u8),
                tuple: event.tuple,
                reply: event.reply,
            }),
            _ => None,
        }
    }
}

/// The name of a `drop::hook` row.
pub fn hook_name(row: u32) -> &'static str {
    drop::hook::NAMES
        .iter()
        .find(|(r, _)| *r == row)
        .map_or("unknown", |(_, name)| name)
}

/// The name of a drop code.
pub fn reason_name(code: u32) -> &'static str {
    code.checked_sub(drop::BASE)
        .and_then(|i| drop::NAMES.get(i as usize))
        .copied()
        .unwrap_or("unknown")
}

/// The name of a conntrack kind.
pub fn kind_name(kind: u8) -> &'static str {
    netd_common::ct::KIND_NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("unknown", |(_, name)| name)
}

/// What a packet is, read from its first bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// "tcp", "udp", "icmp", another IP protocol's number, or the
    /// EtherType of a frame that is not IPv4 ("arp", "ipv6", "0x88cc").
    pub proto: String,
    /// Addresses and ports (ICMP: the echo identifier as both ports).
    pub src: Option<(Ipv4Addr, Option<u16>)>,
    pub dst: Option<(Ipv4Addr, Option<u16>)>,
    /// TCP flags as `tcpdump` spells them ("SYN", "ACK", "FIN", "RST",
    /// "PSH"), space-separated.
    pub tcp_flags: Option<String>,
    /// A later IPv4 fragment: no ports.
    pub fragment: bool,
}

impl Summary {
    /// Reads an Ethernet frame's head (802.1Q tags skipped).
    pub fn of_frame(frame: &[u8]) -> Self {
        let mut at = 12;
        let mut ethertype = None;
        while let Some(bytes) = frame.get(at..at + 2) {
            let value = u16::from_be_bytes([bytes[0], bytes[1]]);
            if matches!(value, 0x8100 | 0x88a8) {
                at += 4;
                continue;
            }
            ethertype = Some(value);
            break;
        }
        let Some(ethertype) = ethertype else {
            return Self {
                proto: "truncated".to_owned(),
                ..Self::default()
            };
        };
        match ethertype {
            0x0800 => Self::of_ipv4(&frame[at + 2..]),
            0x0806 => Self::named("arp"),
            0x86dd => Self::named("ipv6"),
            other => Self::named(&format!("{other:#06x}")),
        }
    }

    fn named(proto: &str) -> Self {
        Self {
            proto: proto.to_owned(),
            ..Self::default()
        }
    }

    fn of_ipv4(ip: &[u8]) -> Self {
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            return Self::named("ipv4");
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let proto = ip[9];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        // A later fragment's payload starts mid-datagram: no header there.
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
        let l4 = ip.get(ihl..).filter(|_| !fragment).unwrap_or_default();
        let be16 = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let (sport, dport) = match proto {
            6 | 17 | 132 => (be16(0), be16(2)),
            // Echo request or reply: the identifier stands for both ports,
            // as in conntrack.
            1 if l4.first().is_some_and(|t| matches!(t, 0 | 8)) => (be16(4), be16(4)),
            _ => (None, None),
        };
        let tcp_flags = (proto == 6)
            .then(|| l4.get(13).copied())
            .flatten()
            .map(|f| {
                [
                    (0x02, "SYN"),
                    (0x10, "ACK"),
                    (0x01, "FIN"),
                    (0x04, "RST"),
                    (0x08, "PSH"),
                ]
                .iter()
                .filter(|(bit, _)| f & bit != 0)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(" ")
            });
        Self {
            proto: proto_name(proto),
            src: Some((src, sport)),
            dst: Some((dst, dport)),
            tcp_flags,
            fragment,
        }
    }
}

/// A conntrack key's protocol name.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        132 => "sctp".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(l4: &[u8], proto: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 1];
        ip.extend(frag.to_be_bytes());
        ip.extend([64, proto, 0, 0, 172, 30, 0, 5, 10, 250, 0, 2]);
        f.extend(ip);
        f.extend(l4);
        f
    }

    #[test]
    fn a_tcp_syn_reads_as_its_tuple_and_flags() {
        let mut tcp = vec![0u8; 20];
        tcp[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        tcp[13] = 0x02;
        let s = Summary::of_frame(&frame(&tcp, 6, 0));
        assert_eq!(s.proto, "tcp");
        assert_eq!(s.src, Some((Ipv4Addr::new(172, 30, 0, 5), Some(40000))));
        assert_eq!(s.dst, Some((Ipv4Addr::new(10, 250, 0, 2), Some(80))));
        assert_eq!(s.tcp_flags.as_deref(), Some("SYN"));
    }

    #[test]
    fn fragments_icmp_vlan_and_others() {
        let later = Summary::of_frame(&frame(&[0, 53, 0, 53], 17, 10));
        assert!(later.fragment);
        assert_eq!(later.src, Some((Ipv4Addr::new(172, 30, 0, 5), None)));
        let echo = Summary::of_frame(&frame(&[8, 0, 0, 0, 0x12, 0x34, 0, 1], 1, 0));
        assert_eq!(echo.dst, Some((Ipv4Addr::new(10, 250, 0, 2), Some(0x1234))));
        let mut tagged = vec![0u8; 12];
        tagged.extend([0x81, 0x00, 0, 30, 0x08, 0x06]);
        assert_eq!(Summary::of_frame(&tagged).proto, "arp");
        assert_eq!(Summary::of_frame(&[0; 5]).proto, "truncated");
    }

    #[test]
    fn events_decode_and_foreign_records_do_not() {
        let mut event = Event::zeroed();
        event.kind = EVENT_DROP;
        event.hook = drop::hook::ENDPOINT_TC as u8;
        event.reason = drop::SPOOFED;
        event.ifindex = 9;
        event.len = 60;
        let head = frame(&[0u8; 20], 6, 0);
        event.snap_len = head.len() as u32;
        bytemuck::bytes_of_mut(&mut event.snap)[..head.len()].copy_from_slice(&head);
        match Decoded::from_bytes(bytemuck::bytes_of(&event)) {
            Some(Decoded::Drop {
                hook,
                reason,
                ifindex,
                head: got,
                packet,
                ..
            }) => {
                assert_eq!((hook, reason, ifindex), ("endpoint_tc", "spoofed", 9));
                assert_eq!(got, head);
                assert_eq!(packet.proto, "tcp");
            }
            other => panic!("not a drop: {other:?}"),
        }
        event.kind = 99;
        assert_eq!(Decoded::from_bytes(bytemuck::bytes_of(&event)), None);
        assert_eq!(Decoded::from_bytes(&[1, 2, 3]), None);
        assert_eq!(reason_name(3), "unknown");
    }
}
