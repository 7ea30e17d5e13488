// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The live monitor's hub: the agent reads `NETD_MONITOR_EVENTS`, decodes
//! each event once and hands it to every `GET /v1/monitor` stream.
//!
//! The programs emit only what some stream asks for: the hub keeps the
//! kernel's switch (`NETD_MONITOR`) at the union of what the streams want
//! and the rate at the highest any asked, and turns it off when the last
//! one leaves, so an unwatched datapath pays one array lookup per drop and
//! per new flow, nothing per forwarded packet.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Mutex as SyncMutex, PoisonError},
    time::{Duration, SystemTime},
};

use netd_common::{
    ct::CtKey,
    monitor::{DEFAULT_RATE, MonitorConfig, WANT_DROPS, WANT_FLOWS},
};
use tokio::{
    io::unix::AsyncFd,
    sync::{Mutex, broadcast, watch},
};
use tracing::warn;

use super::Agent;
use crate::{
    api::{MonitorDrop, MonitorEvent, MonitorFlow, MonitorLost},
    datapath::{
        DatapathError,
        conntrack::monotonic_ns,
        monitor::{Decoded, Lost, MonitorMaps, kind_name, proto_name},
    },
};

/// Events buffered for each stream: a stream further behind loses the
/// oldest, and is told how many.
const BACKLOG: usize = 4096;

/// How often the kernel's lost counts are read and the endpoint names
/// refreshed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Records read from the ring before the reader lets others run.
const READ_BATCH: usize = 1024;

/// The highest rate a stream may ask, per CPU: beyond it the agent could
/// not keep up anyway.
pub const MAX_RATE: u32 = 1_000_000;

/// How long a stream stays silent before an empty line.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// What a stream asks for.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub drops: bool,
    pub flows: bool,
    /// Events per second per CPU the kernel may emit.
    pub rate: u32,
}

impl Want {
    fn bits(self) -> u32 {
        (if self.drops { WANT_DROPS } else { 0 }) | (if self.flows { WANT_FLOWS } else { 0 })
    }
}

/// An event as the hub hands it out: the API's form, and what a stream's
/// filter matches on.
#[derive(Debug)]
pub struct Published {
    pub event: MonitorEvent,
    /// The interface a drop arrived on.
    pub ifindex: Option<u32>,
    /// Every address the event names.
    pub addrs: Vec<Ipv4Addr>,
}

/// A known endpoint, for naming events and filtering by endpoint.
#[derive(Clone, Debug)]
pub struct EndpointRef {
    pub name: String,
    pub id: String,
    pub ip: Ipv4Addr,
    /// Its host veth, or its LAN device inside its namespace.
    pub ifindex: Option<u32>,
}

struct Control {
    maps: MonitorMaps,
    /// The streams' wants, one entry per stream.
    streams: Vec<(u64, Want)>,
    next_id: u64,
    endpoints: Vec<EndpointRef>,
}

struct Inner {
    events: broadcast::Sender<Arc<Published>>,
    control: SyncMutex<Control>,
    /// Set once the agent stops: every stream ends.
    closed: watch::Sender<bool>,
}

/// The hub; clones share it.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

/// One stream's place at the hub; leaving is dropping it.
pub struct Subscription {
    pub events: broadcast::Receiver<Arc<Published>>,
    pub closed: watch::Receiver<bool>,
    id: u64,
    inner: Arc<Inner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        control.streams.retain(|(id, _)| *id != self.id);
        apply(&mut control);
    }
}

/// Tells the kernel what the streams want together.
fn apply(control: &mut Control) {
    let events = control
        .streams
        .iter()
        .fold(0, |bits, (_, want)| bits | want.bits());
    let rate = control
        .streams
        .iter()
        .map(|(_, want)| want.rate)
        .max()
        .unwrap_or(0);
    let config = MonitorConfig {
        events,
        rate,
        // A second's worth: a burst of drops shows whole.
        burst: rate,
        _pad: 0,
    };
    if let Err(err) = control.maps.configure(config) {
        warn!(error = %err, "monitor: setting what the programs emit");
    }
}

impl Monitor {
    /// Opens the pinned monitor maps and switches the programs' events
    /// off: a stream of an agent killed before is gone.
    pub fn new(bpffs: &Path) -> Result<Self, DatapathError> {
        let mut maps = MonitorMaps::open(bpffs)?;
        maps.configure(MonitorConfig::default())?;
        let (events, _) = broadcast::channel(BACKLOG);
        Ok(Self {
            inner: Arc::new(Inner {
                events,
                control: SyncMutex::new(Control {
                    maps,
                    streams: Vec::new(),
                    next_id: 0,
                    endpoints: Vec::new(),
                }),
                closed: watch::Sender::new(false),
            }),
        })
    }

    /// Joins a stream wanting `want`.
    pub fn subscribe(&self, want: Want) -> Subscription {
        let mut control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = control.next_id;
        control.next_id += 1;
        control.streams.push((id, want));
        apply(&mut control);
        Subscription {
            events: self.inner.events.subscribe(),
            closed: self.inner.closed.subscribe(),
            id,
            inner: self.inner.clone(),
        }
    }

    /// The endpoints events are named after (refreshed every
    /// [`HOUSEKEEPING`] while watched).
    pub fn set_endpoints(&self, endpoints: Vec<EndpointRef>) {
        self.inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .endpoints = endpoints;
    }

    /// Whether some stream wants flows (garbage collection then reports
    /// the flows it closes).
    pub fn wants_flows(&self) -> bool {
        let control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        control.streams.iter().any(|(_, want)| want.flows)
    }

    fn watched(&self) -> bool {
        !self
            .inner
            .control
            .lock()
            .expect("monitor lock")
            .streams
            .is_empty()
    }

    /// Ends every stream (the agent is stopping).
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    fn publish(&self, published: Published) {
        // No stream: nobody to tell.
        let _ = self.inner.events.send(Arc::new(published));
    }

    fn endpoint_of(&self, ifindex: Option<u32>, addrs: &[Ipv4Addr]) -> Option<String> {
        let control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let by_ifindex =
            ifindex.and_then(|i| control.endpoints.iter().find(|ep| ep.ifindex == Some(i)));
        by_ifindex
            .or_else(|| control.endpoints.iter().find(|ep| addrs.contains(&ep.ip)))
            .map(|ep| ep.name.clone())
    }

    /// A flow garbage collection removed, `why` as [`MonitorFlow::reason`].
    pub fn flow_closed(&self, tuple: &CtKey, reply: Option<&CtKey>, kind: u8, why: &str) {
        let published = flow_event(
            tuple,
            reply,
            kind_name(kind),
            monotonic_ns(),
            "closed",
            Some(why),
        );
        let endpoint = self.endpoint_of(None, &published.addrs);
        self.publish(with_endpoint(published, endpoint));
    }

    /// Reads the ring until the agent stops: decodes, names, hands out;
    /// every [`HOUSEKEEPING`], the kernel's lost counts and the names.
    pub async fn read(self, bpffs: std::path::PathBuf, agent: Arc<Mutex<Agent>>) {
        let ring = match MonitorMaps::open(&bpffs).map(|maps| maps.events) {
            Ok(ring) => ring,
            Err(err) => {
                warn!(error = %err, "monitor: no events");
                return;
            }
        };
        // SAFETY: the ring owns its map's fd, open and the same until the
        // ring is dropped with the `AsyncFd`.
        let registered =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
        let mut ring = match registered {
            Ok(ring) => ring,
            Err(err) => {
                warn!(error = %err, "monitor: polling the event ring");
                return;
            }
        };
        let mut closed = self.inner.closed.subscribe();
        // Interface names by ifindex, forgotten every tick (a name can
        // change, an index be reused).
        let mut names = HashMap::new();
        let mut lost_before = self.lost();
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                readable = ring.readable_mut() => {
                    let Ok(mut guard) = readable else { return };
                    // A bounded batch: a kernel writing as fast as this
                    // reads must not keep the loop (and the lost counts'
                    // tick) from coming round.
                    let mut decoded = Vec::with_capacity(READ_BATCH);
                    while decoded.len() < READ_BATCH {
                        let Some(record) = guard.get_inner_mut().next() else {
                            guard.clear_ready();
                            break;
                        };
                        decoded.extend(Decoded::from_bytes(&record));
                    }
                    drop(guard);
                    for event in decoded {
                        self.publish_decoded(event, &mut names);
                    }
                    tokio::task::yield_now().await;
                }
                _ = tick.tick() => {
                    let lost = self.lost();
                    if lost.total() > lost_before.total() {
                        self.publish(Published {
                            event: MonitorEvent::Lost(MonitorLost {
                                time: wall_time(monotonic_ns()),
                                rate: lost.rate.saturating_sub(lost_before.rate),
                                full: lost.full.saturating_sub(lost_before.full),
                                slow: 0,
                            }),
                            ifindex: None,
                            addrs: Vec::new(),
                        });
                    }
                    lost_before = lost;
                    names.clear();
                    // Never waited for: while the agent is busy (a long
                    // garbage collection, a health check) the ring must
                    // still be read; the names are refreshed next time.
                    if self.watched()
                        && let Ok(agent) = agent.try_lock()
                    {
                        let endpoints = agent.monitor_endpoints();
                        drop(agent);
                        self.set_endpoints(endpoints);
                    }
                }
                // It only ever changes to closed.
                _ = closed.changed() => return,
            }
        }
    }

    fn lost(&self) -> Lost {
        let control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        control.maps.lost().unwrap_or_default()
    }

    fn publish_decoded(&self, decoded: Decoded, names: &mut HashMap<u32, Option<String>>) {
        let published = match decoded {
            Decoded::Drop {
                time_ns,
                hook,
                reason,
                ifindex,
                len,
                head,
                packet,
            } => {
                let addrs: Vec<Ipv4Addr> = [packet.src, packet.dst]
                    .into_iter()
                    .flatten()
                    .map(|(ip, _)| ip)
                    .collect();
                let endpoint = self.endpoint_of(Some(ifindex), &addrs);
                Published {
                    event: MonitorEvent::Drop(MonitorDrop {
                        time: wall_time(time_ns),
                        reason: reason.to_owned(),
                        hook: hook.to_owned(),
                        ifindex,
                        interface: names
                            .entry(ifindex)
                            .or_insert_with(|| interface_name(ifindex))
                            .clone(),
                        endpoint,
                        len,
                        protocol: packet.proto,
                        src: packet.src.map(|(ip, port)| addr_port(ip, port)),
                        dst: packet.dst.map(|(ip, port)| addr_port(ip, port)),
                        tcp_flags: packet.tcp_flags,
                        fragment: packet.fragment,
                        head: Some(hex(&head)),
                    }),
                    ifindex: Some(ifindex),
                    addrs,
                }
            }
            Decoded::Flow {
                time_ns,
                kind,
                tuple,
                reply,
            } => {
                let published = flow_event(&tuple, Some(&reply), kind, time_ns, "new", None);
                let endpoint = self.endpoint_of(None, &published.addrs);
                with_endpoint(published, endpoint)
            }
        };
        self.publish(published);
    }
}

fn with_endpoint(mut published: Published, endpoint: Option<String>) -> Published {
    if let MonitorEvent::Flow(flow) = &mut published.event {
        flow.endpoint = endpoint;
    }
    published
}

fn key_addr(addr_be: [u8; 4], port_be: [u8; 2]) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(addr_be), u16::from_be_bytes(port_be))
}

/// A flow whose first packet is `tuple` and whose replies are `reply`:
/// the packet became `reply` reversed.
fn flow_event(
    tuple: &CtKey,
    reply: Option<&CtKey>,
    kind: &str,
    time_ns: u64,
    event: &str,
    reason: Option<&str>,
) -> Published {
    let (src, sport) = key_addr(tuple.saddr_be, tuple.sport_be);
    let (dst, dport) = key_addr(tuple.daddr_be, tuple.dport_be);
    let ((to_src, to_sport), (to_dst, to_dport)) =
        reply.map_or(((src, sport), (dst, dport)), |reply| {
            (
                key_addr(reply.daddr_be, reply.dport_be),
                key_addr(reply.saddr_be, reply.sport_be),
            )
        });
    let mut addrs = vec![src, dst, to_src, to_dst];
    addrs.dedup();
    Published {
        event: MonitorEvent::Flow(MonitorFlow {
            time: wall_time(time_ns),
            event: event.to_owned(),
            kind: kind.to_owned(),
            protocol: proto_name(tuple.proto),
            src: format!("{src}:{sport}"),
            dst: format!("{dst}:{dport}"),
            translated_src: format!("{to_src}:{to_sport}"),
            translated_dst: format!("{to_dst}:{to_dport}"),
            endpoint: None,
            reason: reason.map(str::to_owned),
        }),
        ifindex: None,
        addrs,
    }
}

fn addr_port(ip: Ipv4Addr, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("{ip}:{port}"),
        None => ip.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `bpf_ktime_get_ns` time as wall-clock RFC 3339.
fn wall_time(time_ns: u64) -> String {
    let ago = Duration::from_nanos(monotonic_ns().saturating_sub(time_ns));
    let at = SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::now());
    humantime::format_rfc3339_micros(at).to_string()
}

/// The name of an interface of the agent's namespace, if it is one.
fn interface_name(ifindex: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes the call writes at most.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// A stream's lines: the events `want` and `endpoint` select, as JSON,
/// one per line (`head` with `verbose` only), until the agent stops.
pub fn stream(
    subscription: Subscription,
    want: Want,
    endpoint: Option<EndpointRef>,
    verbose: bool,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send {
    // An empty line when nothing else was written for a while: HTTP/1
    // notices a client gone only when it writes, and a stream waiting for
    // events would keep the kernel emitting for nobody.
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(
        (subscription, keepalive),
        move |(mut sub, mut keepalive)| {
            let endpoint = endpoint.clone();
            async move {
                loop {
                    if *sub.closed.borrow_and_update() {
                        return None;
                    }
                    let received = tokio::select! {
                        received = sub.events.recv() => received,
                        _ = keepalive.tick() => {
                            return Some((Ok(bytes::Bytes::from_static(b"\n")), (sub, keepalive)));
                        }
                        _ = sub.closed.changed() => return None,
                    };
                    let event = match received {
                        Ok(published) => {
                            if !selected(&published, want, endpoint.as_ref()) {
                                continue;
                            }
                            let mut event = published.event.clone();
                            if let MonitorEvent::Drop(drop) = &mut event
                                && !verbose
                            {
                                drop.head = None;
                            }
                            event
                        }
                        Err(broadcast::error::RecvError::Lagged(slow)) => {
                            MonitorEvent::Lost(MonitorLost {
                                time: wall_time(monotonic_ns()),
                                rate: 0,
                                full: 0,
                                slow,
                            })
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    let mut line = serde_json::to_vec(&event).expect("events serialize");
                    line.push(b'\n');
                    keepalive.reset();
                    return Some((Ok(bytes::Bytes::from(line)), (sub, keepalive)));
                }
            }
        },
    )
}

/// Whether a stream wanting `want` about `endpoint` shows `published`.
fn selected(published: &Published, want: Want, endpoint: Option<&EndpointRef>) -> bool {
    let kind = match published.event {
        MonitorEvent::Drop(_) => want.drops,
        MonitorEvent::Flow(_) => want.flows,
        MonitorEvent::Lost(_) => return true,
    };
    kind && endpoint.is_none_or(|ep| {
        published.addrs.contains(&ep.ip)
            || (ep.ifindex.is_some() && published.ifindex == ep.ifindex)
    })
}

/// The rate a stream gets when it does not say.
pub const fn default_rate() -> u32 {
    DEFAULT_RATE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> CtKey {
        CtKey {
            saddr_be: src,
            daddr_be: dst,
            sport_be: sport.to_be_bytes(),
            dport_be: dport.to_be_bytes(),
            proto: 6,
            _pad: [0; 3],
        }
    }

    #[test]
    fn a_flow_shows_what_its_packet_became() {
        // A published port: 10.250.0.2:40000 -> 10.250.0.1:8080, DNATed to
        // 172.30.0.2:80, whose replies come from 172.30.0.2:80.
        let tuple = key([10, 250, 0, 2], 40000, [10, 250, 0, 1], 8080);
        let reply = key([172, 30, 0, 2], 80, [10, 250, 0, 2], 40000);
        let published = flow_event(
            &tuple,
            Some(&reply),
            "published",
            monotonic_ns(),
            "new",
            None,
        );
        let MonitorEvent::Flow(flow) = published.event else {
            panic!("not a flow: {published:?}");
        };
        assert_eq!(flow.src, "10.250.0.2:40000");
        assert_eq!(flow.dst, "10.250.0.1:8080");
        assert_eq!(flow.translated_src, "10.250.0.2:40000");
        assert_eq!(flow.translated_dst, "172.30.0.2:80");
        assert_eq!(flow.protocol, "tcp");
        assert!(published.addrs.contains(&Ipv4Addr::new(172, 30, 0, 2)));
    }

    #[test]
    fn wants_are_bits() {
        let both = Want {
            drops: true,
            flows: true,
            rate: 1,
        };
        assert_eq!(both.bits(), WANT_DROPS | WANT_FLOWS);
        let neither = Want {
            drops: false,
            flows: false,
            rate: 1,
        };
        assert_eq!(neither.bits(), 0);
    }
}
