// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Conntrack as flows: pairing the two entries of each flow, deriving its
//! state and timeout, and deciding what garbage collection removes.

use std::collections::BTreeMap;

use netd_common::{
    ct::{CT_ORIGINAL, CT_TO_ENDPOINT, CtEntry, CtKey, NO_MAPPING, TcpState, Timeouts},
    ports::{PROTO_TCP, PROTO_UDP},
};

/// How long after its first packet a replied UDP flow must still be active
/// to be a stream (netfilter's 2 s, nf_conntrack_proto_udp.c).
const UDP_STREAM_AFTER_NS: u64 = 2_000_000_000;

/// Both directions of one flow (the reply may be missing: evicted, or not
/// created yet).
#[derive(Clone, Debug)]
pub struct FlowPair {
    pub original: (CtKey, CtEntry),
    pub reply: Option<(CtKey, CtEntry)>,
}

impl FlowPair {
    /// The connection state's name (TCP), or "UNREPLIED"/"REPLIED" (UDP).
    pub fn state(&self) -> String {
        let orig = &self.original.1;
        let reply = self.reply.as_ref().map(|(_, e)| e);
        match orig.proto {
            PROTO_TCP => TcpState::of(orig.tcp_seen, reply.map_or(0, |r| r.tcp_seen))
                .name()
                .to_owned(),
            _ if reply.is_some_and(|r| r.packets > 0) => "REPLIED".to_owned(),
            _ => "UNREPLIED".to_owned(),
        }
    }

    /// How long the flow may stay idle, in seconds.
    pub fn timeout_secs(&self, timeouts: &Timeouts) -> u64 {
        let orig = &self.original.1;
        let reply = self.reply.as_ref().map(|(_, e)| e);
        match orig.proto {
            PROTO_TCP => {
                TcpState::of(orig.tcp_seen, reply.map_or(0, |r| r.tcp_seen)).timeout_secs(timeouts)
            }
            PROTO_UDP if self.is_udp_stream() => timeouts.udp_stream,
            _ => timeouts.udp,
        }
    }

    /// Whether a UDP flow is a stream, as netfilter decides: replied, and
    /// still active [`UDP_STREAM_AFTER_NS`] after it began. A one-shot
    /// exchange (a DNS query and its answer) keeps the short timeout, so
    /// it does not hold its masquerade port for two minutes.
    fn is_udp_stream(&self) -> bool {
        let replied = self.reply.as_ref().is_some_and(|(_, r)| r.packets > 0);
        replied
            && self.last_seen_ns()
                > self
                    .original
                    .1
                    .created_ns
                    .saturating_add(UDP_STREAM_AFTER_NS)
    }

    /// Whether the flow is "assured", as netfilter says: TCP established,
    /// UDP with replies. Only other flows are evicted to make room.
    pub fn assured(&self) -> bool {
        let orig = &self.original.1;
        let reply = self.reply.as_ref().map(|(_, e)| e);
        match orig.proto {
            // A reply is required: a flow picked up mid-stream from one
            // side only (an ACK flood) is not assured.
            PROTO_TCP => {
                reply.is_some_and(|r| r.packets > 0)
                    && TcpState::of(orig.tcp_seen, reply.map_or(0, |r| r.tcp_seen))
                        == TcpState::Established
            }
            PROTO_UDP => reply.is_some_and(|r| r.packets > 0),
            _ => false,
        }
    }

    /// The host veth (ifindex) this flow delivers to in either direction,
    /// if it delivers to a container.
    pub fn endpoint_ifindex(&self) -> Option<u32> {
        std::iter::once(&self.original.1)
            .chain(self.reply.as_ref().map(|(_, e)| e))
            .find(|e| e.flags & CT_TO_ENDPOINT != 0)
            .map(|e| e.ifindex)
    }

    /// The last packet in either direction (CLOCK_MONOTONIC ns).
    pub fn last_seen_ns(&self) -> u64 {
        let reply = self.reply.as_ref().map_or(0, |(_, e)| e.last_seen_ns);
        self.original.1.last_seen_ns.max(reply)
    }

    /// Seconds until the flow expires at `now_ns` (0 if it has).
    pub fn expires_in_secs(&self, now_ns: u64, timeouts: &Timeouts) -> u64 {
        let idle = now_ns.saturating_sub(self.last_seen_ns()) / 1_000_000_000;
        self.timeout_secs(timeouts).saturating_sub(idle)
    }

    /// Both keys, for removal.
    pub fn keys(&self) -> Vec<CtKey> {
        let mut keys = vec![self.original.0];
        keys.push(self.original.1.reverse);
        keys
    }

    pub fn mapping(&self) -> Option<(u32, u32)> {
        let e = &self.original.1;
        (e.mapping != NO_MAPPING).then_some((e.mapping, e.generation))
    }
}

/// Groups entries into flows: each original-direction entry with the entry
/// its `reverse` names. Reply entries whose original is gone become flows of
/// their own (orphans), so that garbage collection sees them too.
pub fn pair_up(entries: Vec<(CtKey, CtEntry)>) -> Vec<FlowPair> {
    let mut by_key: BTreeMap<CtKey, CtEntry> = entries.into_iter().collect();
    let originals: Vec<CtKey> = by_key
        .iter()
        .filter(|(_, e)| e.flags & CT_ORIGINAL != 0)
        .map(|(k, _)| *k)
        .collect();
    let mut flows = Vec::new();
    for key in originals {
        let Some(original) = by_key.remove(&key) else {
            continue;
        };
        let reply = by_key
            .remove(&original.reverse)
            .map(|e| (original.reverse, e));
        flows.push(FlowPair {
            original: (key, original),
            reply,
        });
    }
    // What is left are replies without an original.
    flows.extend(by_key.into_iter().map(|(key, entry)| FlowPair {
        original: (key, entry),
        reply: None,
    }));
    flows
}

/// Why garbage collection removes a flow, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collect {
    /// Idle past its timeout.
    Expired,
    /// Its mapping was removed or replaced, or the container it delivers
    /// to was detached (a new one may get its address: the flow must not
    /// steer the newcomer's packets to the old veth).
    Stale,
}

/// Whether `flow` goes, at `now_ns`, given a way to tell whether a mapping
/// `(slot, generation)` is still live.
pub fn collect(
    flow: &FlowPair,
    now_ns: u64,
    timeouts: &Timeouts,
    live: impl Fn(u32, u32) -> bool,
    live_veth: impl Fn(u32) -> bool,
) -> Option<Collect> {
    if let Some((slot, generation)) = flow.mapping()
        && !live(slot, generation)
    {
        return Some(Collect::Stale);
    }
    if flow
        .endpoint_ifindex()
        .is_some_and(|ifindex| !live_veth(ifindex))
    {
        return Some(Collect::Stale);
    }
    (flow.expires_in_secs(now_ns, timeouts) == 0).then_some(Collect::Expired)
}

/// CLOCK_MONOTONIC now, in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use netd_common::ct::{CT_NAT_DST, CT_NAT_SRC, SEEN_ACK, SEEN_FIN, SEEN_SYN};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn key(a: u8, b: u8) -> CtKey {
        CtKey {
            saddr_be: [10, 0, 0, a],
            daddr_be: [10, 0, 0, b],
            sport_be: [0, a],
            dport_be: [0, b],
            proto: PROTO_TCP,
            _pad: [0; 3],
        }
    }

    fn flow(orig_seen: u8, reply_seen: u8, last_seen: u64) -> Vec<(CtKey, CtEntry)> {
        let (k1, k2) = (key(1, 2), key(3, 1));
        vec![
            (
                k1,
                CtEntry {
                    reverse: k2,
                    flags: CT_NAT_DST | CT_ORIGINAL,
                    tcp_seen: orig_seen,
                    last_seen_ns: last_seen,
                    proto: PROTO_TCP,
                    mapping: 7,
                    generation: 3,
                    packets: 1,
                    ..CtEntry::default()
                },
            ),
            (
                k2,
                CtEntry {
                    reverse: k1,
                    flags: CT_NAT_SRC,
                    tcp_seen: reply_seen,
                    last_seen_ns: last_seen,
                    proto: PROTO_TCP,
                    mapping: 7,
                    generation: 3,
                    packets: 1,
                    ..CtEntry::default()
                },
            ),
        ]
    }

    #[test]
    fn pairs_both_directions_and_keeps_orphans() {
        let mut entries = flow(SEEN_SYN, SEEN_SYN | SEEN_ACK, 0);
        let orphan_key = key(9, 8);
        entries.push((
            orphan_key,
            CtEntry {
                reverse: key(8, 9),
                proto: PROTO_TCP,
                ..CtEntry::default()
            },
        ));
        let flows = pair_up(entries);
        assert_eq!(flows.len(), 2);
        assert!(
            flows
                .iter()
                .any(|f| f.reply.is_some() && f.state() == "SYN_RECV")
        );
        assert!(
            flows
                .iter()
                .any(|f| f.original.0 == orphan_key && f.reply.is_none())
        );
    }

    #[test]
    fn collects_expired_and_stale_flows_only() {
        let now = 100_000 * S;
        let live = |slot, generation| slot == 7 && generation == 3;
        let t = Timeouts::default();
        let established = pair_up(flow(
            SEEN_SYN | SEEN_ACK,
            SEEN_SYN | SEEN_ACK,
            now - 3600 * S,
        ))
        .remove(0);
        assert_eq!(
            collect(&established, now, &t, live, |_| true),
            None,
            "an hour idle is fine when established"
        );
        let time_wait = pair_up(flow(
            SEEN_ACK | SEEN_FIN,
            SEEN_ACK | SEEN_FIN,
            now - 121 * S,
        ))
        .remove(0);
        assert_eq!(
            collect(&time_wait, now, &t, live, |_| true),
            Some(Collect::Expired)
        );
        let replaced = |_, _| false;
        assert_eq!(
            collect(&established, now, &t, replaced, |_| true),
            Some(Collect::Stale)
        );
        let mut delivering = flow(SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, now);
        delivering[0].1.flags |= CT_TO_ENDPOINT;
        delivering[0].1.ifindex = 42;
        let delivering = pair_up(delivering).remove(0);
        assert_eq!(delivering.endpoint_ifindex(), Some(42));
        assert_eq!(collect(&delivering, now, &t, live, |i| i == 42), None);
        assert_eq!(
            collect(&delivering, now, &t, live, |_| false),
            Some(Collect::Stale),
            "its container was detached"
        );
    }

    #[test]
    fn udp_is_a_stream_only_when_still_active_two_seconds_in() {
        let t = Timeouts::default();
        let udp = |last_seen: u64, reply_packets: u64| {
            let mut entries = flow(0, 0, last_seen);
            for (_, entry) in &mut entries {
                entry.proto = PROTO_UDP;
                entry.created_ns = 10 * S;
            }
            entries[1].1.packets = reply_packets;
            pair_up(entries).remove(0)
        };
        assert_eq!(udp(10 * S, 0).timeout_secs(&t), t.udp, "unreplied");
        assert_eq!(
            udp(11 * S, 1).timeout_secs(&t),
            t.udp,
            "a query and its answer"
        );
        assert_eq!(udp(13 * S, 1).timeout_secs(&t), t.udp_stream, "a stream");
        assert_eq!(udp(11 * S, 1).state(), "REPLIED");
    }
}
