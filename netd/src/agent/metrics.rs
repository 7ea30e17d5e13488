// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What the agent exports for Prometheus: `GET /metrics` on the API socket,
//! and on `--metrics-address` if given.
//!
//! A scrape never holds the agent's lock while it reads the datapath: it
//! takes a [`Snapshot`] of labels and agent-side figures under the lock
//! (copies of a few small tables, no system call), then reads the counters
//! from the pinned maps on a blocking thread, each map in one batch. An API
//! call waits for the snapshot at most, however many mappings and flows
//! there are.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use netd_common::{
    ct::KIND_NAMES,
    drop, map_names as names,
    stats::{ProtoStats, hook},
};

use super::{Agent, datapath::Collected, state::Phase};
use crate::{
    datapath::{
        DatapathError,
        maps::{Maps, PinnedMaps},
    },
    metrics::{Exposition, Kind},
};

/// What conntrack garbage collection has done since the agent started.
#[derive(Clone, Copy, Debug, Default)]
pub struct GcRecord {
    pub runs: u64,
    pub last: Duration,
    pub expired: u64,
    pub stale: u64,
    pub early: u64,
    /// Ticks that found new flows refused because the table was full.
    pub pressure_events: u64,
}

impl GcRecord {
    pub fn record(&mut self, took: Duration, collected: &Collected) {
        self.runs += 1;
        self.last = took;
        self.expired += collected.expired as u64;
        self.stale += collected.stale as u64;
        self.early += collected.early as u64;
    }
}

/// Conntrack's size as a walk of the table (garbage collection, a sweep)
/// counted it, and the flows the datapath had created by then. A scrape
/// adds the two entries of each flow created since instead of walking a
/// table of up to millions of entries itself. Exact at each walk; flows the
/// datapath removes in between (stale ones, found on their next packet)
/// stay counted until the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtCensus {
    pub entries: usize,
    pub created: u64,
}

impl CtCensus {
    /// The table's size once `created` flows have been created in all.
    pub fn entries_at(&self, created: u64) -> u64 {
        self.entries as u64 + 2 * created.saturating_sub(self.created)
    }
}

/// API requests answered, by route, method and status: counted by a layer
/// around every route of the API socket.
#[derive(Clone, Default)]
pub struct ApiRequests(Arc<Mutex<RequestCounts>>);

/// Requests by (route pattern, method, status code).
type RequestCounts = BTreeMap<(String, String, u16), u64>;

impl ApiRequests {
    /// The layer's function (`axum::middleware::from_fn_with_state`).
    pub async fn count(
        axum::extract::State(requests): axum::extract::State<Self>,
        request: Request,
        next: Next,
    ) -> Response {
        // The route's pattern (`/v1/networks/{name}`), never the path
        // itself: a label per network name would be unbounded.
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str)
            .to_owned();
        let method = request.method().as_str().to_owned();
        let response = next.run(request).await;
        let status = response.status().as_u16();
        if let Ok(mut counts) = requests.0.lock() {
            *counts.entry((route, method, status)).or_default() += 1;
        }
        response
    }

    fn counts(&self) -> RequestCounts {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// One published mapping's labels, at its slot.
struct MappingLabels {
    slot: u32,
    network: String,
    endpoint: String,
    proto: &'static str,
    host_ip: Ipv4Addr,
    host_port: String,
}

/// What a scrape needs from the agent, taken under its lock.
pub struct Snapshot {
    version: &'static str,
    kernel: String,
    tc_attach: String,
    bpffs: PathBuf,
    xdp: bool,
    ct_max: u32,
    networks: usize,
    endpoints: usize,
    mappings: Vec<MappingLabels>,
    /// LAN endpoints: (device ifindex, network, endpoint).
    lan: Vec<(u32, String, String)>,
    gc: GcRecord,
    ct_census: Option<CtCensus>,
    degraded: usize,
}

impl Agent {
    pub fn metrics_snapshot(&self) -> Snapshot {
        let status = self.status();
        let mut mappings = Vec::new();
        let mut lan = Vec::new();
        for ep in self.state.endpoints.values() {
            if ep.phase == Phase::Removing {
                continue;
            }
            let network = &self.state.network_of(ep).name;
            for port in &ep.ports {
                mappings.push(MappingLabels {
                    slot: port.slot,
                    network: network.clone(),
                    endpoint: ep.name.clone(),
                    proto: port.proto.name(),
                    host_ip: port.host_ip,
                    host_port: port.host.to_string(),
                });
            }
            if let Some(ifindex) = ep.lan_ifindex
                && ep.phase == Phase::Ready
            {
                lan.push((ifindex, network.clone(), ep.name.clone()));
            }
        }
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            kernel: status.kernel,
            tc_attach: status.tc_attach,
            bpffs: self.config.bpffs.clone(),
            xdp: self.config.xdp,
            ct_max: self.config.ct_max,
            networks: self.state.networks.len() + 1,
            endpoints: self.state.endpoints.len(),
            mappings,
            lan,
            gc: self.gc,
            ct_census: self.ct_census,
            degraded: status.degraded.len(),
        }
    }
}

/// The maps a scrape opens from their pins.
const SCRAPED: [&str; 6] = [
    names::DROPS,
    names::PROTO_STATS,
    names::MAPPING_STATS,
    names::FLOWS_CREATED,
    names::ENDPOINT_STATS,
    names::CT,
];

/// The text of one scrape. Blocking: it reads the pinned maps.
pub fn render(snapshot: &Snapshot, api: &ApiRequests) -> Result<String, DatapathError> {
    let mut pinned = PinnedMaps::open(&snapshot.bpffs, &SCRAPED)?;
    let mut maps = Maps::pinned(&mut pinned);
    let mut out = Exposition::default();

    out.family(
        "netd_build_info",
        Kind::Gauge,
        "netd's version, the kernel it runs on and how its TC programs attach; always 1.",
    )
    .sample(
        &[
            ("version", snapshot.version),
            ("kernel", &snapshot.kernel),
            ("tc_attach", &snapshot.tc_attach),
            ("xdp", if snapshot.xdp { "on" } else { "off" }),
        ],
        1u64,
    );
    out.family(
        "netd_degraded_features",
        Kind::Gauge,
        "Features this kernel lacks, each replaced by a fallback (netd status lists them).",
    )
    .sample(&[], snapshot.degraded);
    out.family(
        "netd_networks",
        Kind::Gauge,
        "Networks, the default one included.",
    )
    .sample(&[], snapshot.networks);
    out.family("netd_endpoints", Kind::Gauge, "Endpoints attached.")
        .sample(&[], snapshot.endpoints);

    let drops = maps.drop_counts()?;
    let mut family = out.family(
        "netd_drops_total",
        Kind::Counter,
        "Packets the datapath dropped, by reason and by the program that dropped them.",
    );
    for (row, hook_name) in drop::hook::NAMES {
        for (i, reason) in drop::NAMES.iter().enumerate() {
            family.sample(
                &[("reason", reason), ("hook", hook_name)],
                drops.at(row, drop::BASE + i as u32),
            );
        }
    }
    out.family(
        "netd_masquerade_port_exhaustion_total",
        Kind::Counter,
        "New masqueraded flows refused because no source port was free for their peer \
         (widen --masquerade-ports).",
    )
    .sample(&[], drops.reason(drop::NAT_EXHAUSTED));

    let protos = maps.proto_stats()?;
    let mut family = out.family(
        "netd_packets_total",
        Kind::Counter,
        "Packets each hook saw, by protocol.",
    );
    for (name, stats) in hook::NAMES.iter().zip(&protos) {
        for (proto, count) in by_proto(stats) {
            family.sample(&[("hook", name), ("proto", proto)], count);
        }
    }
    let mut family = out.family("netd_bytes_total", Kind::Counter, "Bytes each hook saw.");
    for (name, stats) in hook::NAMES.iter().zip(&protos) {
        family.sample(&[("hook", name)], stats.bytes);
    }

    let created = maps.flows_created()?;
    let mut family = out.family(
        "netd_flows_created_total",
        Kind::Counter,
        "Flows conntrack created, by kind.",
    );
    for (kind, name) in KIND_NAMES {
        family.sample(
            &[("kind", name)],
            created.get(usize::from(kind)).copied().unwrap_or_default(),
        );
    }
    let entries = match snapshot.ct_census {
        Some(census) => census.entries_at(created.iter().sum()),
        // No walk yet (the agent just started): count them once.
        None => maps.ct_count()? as u64,
    };
    out.family(
        "netd_conntrack_entries",
        Kind::Gauge,
        "Conntrack entries, one per direction of each flow: as the last walk of the table \
         (a collection, a sweep) counted them, plus two per flow created since.",
    )
    .sample(&[], entries);
    out.family(
        "netd_conntrack_max_entries",
        Kind::Gauge,
        "Conntrack's capacity (--ct-max).",
    )
    .sample(&[], snapshot.ct_max);
    out.family(
        "netd_conntrack_pressure_events_total",
        Kind::Counter,
        "Times the table was found full (new flows refused), each followed by an early collection.",
    )
    .sample(&[], snapshot.gc.pressure_events);
    out.family(
        "netd_conntrack_gc_runs_total",
        Kind::Counter,
        "Conntrack garbage collections.",
    )
    .sample(&[], snapshot.gc.runs);
    out.family(
        "netd_conntrack_gc_duration_seconds",
        Kind::Gauge,
        "How long the last conntrack garbage collection took.",
    )
    .sample(&[], snapshot.gc.last.as_secs_f64());
    out.family(
        "netd_conntrack_gc_removed_total",
        Kind::Counter,
        "Entries garbage collection removed, by why: expired, stale (their mapping or endpoint \
         went) or early (not established, under pressure).",
    )
    .sample(&[("why", "expired")], snapshot.gc.expired)
    .sample(&[("why", "stale")], snapshot.gc.stale)
    .sample(&[("why", "early")], snapshot.gc.early);

    let stats = maps.all_mapping_stats()?;
    let counted = |slot: u32| stats.get(slot as usize).copied().unwrap_or_default();
    for (name, help, value) in [
        (
            "netd_published_packets_total",
            "Packets translated for each published mapping.",
            (|s: netd_common::ports::MappingStats| s.packets) as fn(_) -> u64,
        ),
        (
            "netd_published_bytes_total",
            "Bytes translated for each published mapping.",
            |s| s.bytes,
        ),
        (
            "netd_published_flows_total",
            "Flows created for each published mapping.",
            |s| s.flows,
        ),
    ] {
        let mut family = out.family(name, Kind::Counter, help);
        for m in &snapshot.mappings {
            let host_ip = m.host_ip.to_string();
            family.sample(
                &[
                    ("network", &m.network),
                    ("endpoint", &m.endpoint),
                    ("proto", m.proto),
                    ("host_ip", &host_ip),
                    ("host_port", &m.host_port),
                ],
                value(counted(m.slot)),
            );
        }
    }

    let mut lan = Vec::with_capacity(snapshot.lan.len());
    for (ifindex, network, endpoint) in &snapshot.lan {
        // An endpoint detached since the snapshot has no counters left.
        if let Ok(counted) = maps.endpoint_stats(*ifindex) {
            lan.push((network, endpoint, counted));
        }
    }
    for (name, help, value) in [
        (
            "netd_lan_endpoint_packets_total",
            "Packets each LAN endpoint (macvlan, ipvlan) sent.",
            (|s: &netd_common::endpoint::EndpointStats| s.packets) as fn(&_) -> u64,
        ),
        (
            "netd_lan_endpoint_bytes_total",
            "Bytes each LAN endpoint sent.",
            |s| s.bytes,
        ),
        (
            "netd_lan_endpoint_dropped_total",
            "Packets of each LAN endpoint dropped (spoofed, or against its network's policy).",
            |s| s.dropped,
        ),
    ] {
        let mut family = out.family(name, Kind::Counter, help);
        for (network, endpoint, counted) in &lan {
            family.sample(
                &[("network", network), ("endpoint", endpoint)],
                value(counted),
            );
        }
    }
    // The pins' descriptors go before the rest is written.
    drop(pinned);

    let mut family = out.family(
        "netd_map_max_entries",
        Kind::Gauge,
        "Each pinned map's capacity.",
    );
    let usage = crate::datapath::map_usage(&snapshot.bpffs);
    for m in &usage {
        family.sample(&[("map", m.name)], m.max_entries);
    }
    let mut family = out.family(
        "netd_map_memory_bytes",
        Kind::Gauge,
        "Kernel memory each pinned map holds (fixed: preallocated or capped).",
    );
    for m in &usage {
        family.sample(&[("map", m.name)], m.memory_bytes);
    }

    if let Some(heap) = crate::memory::heap_bytes() {
        out.family(
            "netd_agent_heap_bytes",
            Kind::Gauge,
            "The agent's heap in use.",
        )
        .sample(&[], heap);
    }
    if let Some(rss) = crate::memory::rss_bytes() {
        out.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory of the agent process.",
        )
        .sample(&[], rss);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.family(
            "process_open_fds",
            Kind::Gauge,
            "Open file descriptors of the agent process.",
        )
        .sample(&[], fds.count().saturating_sub(1));
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        out.family(
            "process_max_fds",
            Kind::Gauge,
            "The agent process's open-file limit.",
        )
        .sample(&[], soft);
    }

    let mut family = out.family(
        "netd_api_requests_total",
        Kind::Counter,
        "API requests answered on the API socket, by route, method and status code.",
    );
    for ((route, method, status), count) in api.counts() {
        family.sample(
            &[
                ("route", &route),
                ("method", &method),
                ("code", &status.to_string()),
            ],
            count,
        );
    }
    Ok(out.finish())
}

fn by_proto(stats: &ProtoStats) -> [(&'static str, u64); 7] {
    [
        ("tcp", stats.ipv4_tcp),
        ("udp", stats.ipv4_udp),
        ("icmp", stats.ipv4_icmp),
        ("ipv4_other", stats.ipv4_other),
        ("ipv6", stats.ipv6),
        ("arp", stats.arp),
        ("other", stats.other),
    ]
}
