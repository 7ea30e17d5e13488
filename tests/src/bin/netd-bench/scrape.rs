// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! B12: a metrics scrape at scale, and what it does to the API meanwhile.
//!
//! An agent (`--ct-max` 1,200,000) with one container and 10,000
//! published mappings (one `POST /v1/ports`), and 1,000,000 conntrack
//! entries written straight into its pinned `NETD_CT` (500,000
//! established masqueraded TCP flows, both directions, seen now: nothing
//! garbage collection removes). Each round, over the agent's unix socket
//! with a minimal HTTP/1.1 client:
//! - `GET /v1/status` 200 times on an idle agent: its median;
//! - `GET /metrics` alone: the scrape's time;
//! - `GET /metrics` again on a thread while `GET /v1/status` is asked
//!   back to back until it answers: their median and worst, and the
//!   median over the idle median (the API's slowdown during a scrape).
//!
//! The scrape is checked: status 200, the conntrack gauge at least the
//! entries written, every mapping's series there.

use std::{
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use netd_common::{
    ct::{
        CT_KIND_MASQUERADE, CT_NAT_DST, CT_NAT_SRC, CT_ORIGINAL, CtEntry, CtKey, NO_MAPPING,
        SEEN_ACK, SEEN_SYN,
    },
    map_names,
};
use netd_tests::{
    agent::Agent,
    netns::{Netns, veth},
};

use crate::{
    beds::{HOST_IP, OUT_IP},
    peers::{self, SUBNET},
    progs::median,
    publish::api_publish,
};

/// Published mappings and conntrack entries of B12.
pub const MAPPINGS: usize = 10_000;
pub const CT_ENTRIES: u32 = 1_000_000;
const CT_MAX: u32 = 1_200_000;
/// Idle status calls per round.
const IDLE_CALLS: usize = 200;
/// The API during a scrape answers within this factor of its idle time
/// (median over median), or the report says it missed.
pub const STATUS_FACTOR: f64 = 5.0;

/// What B12 measured.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Scrape {
    pub mappings: usize,
    pub ct_entries: u32,
    pub rounds: usize,
    /// Median over rounds of one scrape alone, ms.
    pub scrape_ms: f64,
    pub scrape_min_ms: f64,
    pub scrape_max_ms: f64,
    /// The scrape's size, bytes.
    pub body_bytes: usize,
    /// `GET /v1/status`: median idle, median and worst during scrapes, ms.
    pub status_idle_ms: f64,
    pub status_busy_ms: f64,
    pub status_busy_max_ms: f64,
    /// Calls answered during scrapes, over all rounds.
    pub status_busy_calls: usize,
    /// Median, min and max over rounds of busy median / idle median.
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// Setup: publishing the mappings, writing the entries, seconds.
    pub publish_s: f64,
    pub fill_s: f64,
}

/// The agent and its namespaces; dropping it stops the agent (`netd
/// down`) and removes them.
struct Bed {
    agent: Agent,
    _ctr: Netns,
    _host: Netns,
    _out: Netns,
}

pub fn run(rounds: usize) -> anyhow::Result<Scrape> {
    let started = Instant::now();
    let out = Netns::new("mso");
    let host = Netns::new("msh");
    veth(&out, "eth0", &host, "up0");
    out.ip(&format!("addr add {OUT_IP}/24 dev eth0"));
    host.ip(&format!("addr add {HOST_IP}/24 dev up0"));
    let ct_max = CT_MAX.to_string();
    let agent = Agent::start(
        &host,
        &[
            "--uplink",
            "up0",
            "--subnet",
            SUBNET,
            "--ct-max",
            &ct_max,
            // The gauge counts entries written behind the datapath's back
            // from the next collection on.
            "--ct-gc-interval",
            "1",
        ],
    );
    let ctr = Netns::new("msc");
    agent.ok(&["attach", ctr.name()]);
    let bed = Bed {
        agent,
        _ctr: ctr,
        _host: host,
        _out: out,
    };
    let socket = bed.agent.socket();

    let t = Instant::now();
    let ports: Vec<peers::Port> = peers::fillers(MAPPINGS).collect();
    api_publish(&socket, bed._ctr.name(), &ports).context("B12: publishing")?;
    let publish_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    fill(&bed.agent.map_pin(map_names::CT), CT_ENTRIES)?;
    let fill_s = t.elapsed().as_secs_f64();
    eprintln!(
        "B12: {MAPPINGS} mappings published in {publish_s:.1} s, {CT_ENTRIES} conntrack entries written in {fill_s:.1} s"
    );

    // A first scrape, checked (and warming the agent's allocations), once
    // a collection has counted the entries.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let body = scrape(&socket)?;
        match check(&body) {
            Ok(()) => break body,
            Err(err) if Instant::now() > deadline => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let body_bytes = body.len();

    let mut scrapes = Vec::new();
    let mut idle = Vec::new();
    let mut busy = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        if crate::series::stopped() {
            bail!("interrupted");
        }
        let mut idle_round = Vec::new();
        for _ in 0..IDLE_CALLS {
            idle_round.push(status(&socket)?);
        }
        let t = Instant::now();
        scrape(&socket)?;
        let alone = ms(t.elapsed());
        let busy_round = during_scrape(&socket)?;
        let idle_median = median(&mut idle_round.clone());
        let busy_median = median(&mut busy_round.clone());
        eprintln!(
            "  B12 round {}: scrape {alone:.0} ms; status idle {idle_median:.2} ms, during a scrape {busy_median:.2} ms (worst {:.2}, {} calls)",
            round + 1,
            busy_round.iter().copied().fold(0.0, f64::max),
            busy_round.len()
        );
        scrapes.push(alone);
        ratios.push(busy_median / idle_median);
        idle.extend(idle_round);
        busy.extend(busy_round);
    }
    // The entries are still there: garbage collection did not take them
    // while the scrapes ran.
    check(&scrape(&socket)?)?;
    drop(bed);
    let result = Scrape {
        mappings: MAPPINGS,
        ct_entries: CT_ENTRIES,
        rounds,
        scrape_ms: median(&mut scrapes.clone()),
        scrape_min_ms: scrapes.iter().copied().fold(f64::INFINITY, f64::min),
        scrape_max_ms: scrapes.iter().copied().fold(0.0, f64::max),
        body_bytes,
        status_idle_ms: median(&mut idle),
        status_busy_ms: median(&mut busy.clone()),
        status_busy_max_ms: busy.iter().copied().fold(0.0, f64::max),
        status_busy_calls: busy.len(),
        ratio: median(&mut ratios.clone()),
        ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratio_max: ratios.iter().copied().fold(0.0, f64::max),
        publish_s,
        fill_s,
    };
    eprintln!(
        "B12: scrape {:.0} ms ({} bytes); status idle {:.2} ms, during scrapes {:.2} ms: {:.2}x; done in {:.1} s",
        result.scrape_ms,
        result.body_bytes,
        result.status_idle_ms,
        result.status_busy_ms,
        result.ratio,
        started.elapsed().as_secs_f64()
    );
    Ok(result)
}

/// `GET /v1/status` calls back to back while a scrape runs on another
/// thread: each call's ms.
fn during_scrape(socket: &Path) -> anyhow::Result<Vec<f64>> {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let scraper = s.spawn(|| {
            let result = scrape(socket);
            done.store(true, Ordering::Relaxed);
            result
        });
        let mut calls = Vec::new();
        // At least one call, started while the scrape is under way.
        while calls.is_empty() || !done.load(Ordering::Relaxed) {
            calls.push(status(socket)?);
        }
        scraper.join().expect("the scraping thread")?;
        Ok(calls)
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One `GET /v1/status`: its ms.
fn status(socket: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    get(socket, "/v1/status")?;
    Ok(ms(t.elapsed()))
}

/// One `GET /metrics`: the body.
fn scrape(socket: &Path) -> anyhow::Result<String> {
    get(socket, "/metrics")
}

/// A minimal HTTP/1.1 GET over the agent's socket: the body of a 200.
fn get(socket: &Path, path: &str) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("GET {path}"))?;
    let response = String::from_utf8(response).with_context(|| format!("GET {path}: not UTF-8"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no end of headers"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    ensure!(status == "200", "GET {path}: {head}");
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "GET {path}: a chunked answer this client does not read"
    );
    Ok(body.to_owned())
}

/// The scrape counts the entries written and shows every mapping.
fn check(body: &str) -> anyhow::Result<()> {
    let entries: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("netd_conntrack_entries "))
        .context("B12: no netd_conntrack_entries in the scrape")?
        .trim()
        .parse()
        .context("B12: netd_conntrack_entries")?;
    ensure!(
        entries >= f64::from(CT_ENTRIES),
        "B12: the scrape counts {entries} conntrack entries, not {CT_ENTRIES}"
    );
    let mappings = body
        .lines()
        .filter(|l| l.starts_with("netd_published_packets_total{"))
        .count();
    ensure!(
        mappings >= MAPPINGS,
        "B12: the scrape shows {mappings} mappings, not {MAPPINGS}"
    );
    Ok(())
}

/// Writes `entries` conntrack entries into the pinned table at `pin`: the
/// two directions of `entries / 2` established masqueraded TCP flows of
/// the container to 198.18.0.0/15, seen now. One syscall per entry.
fn fill(pin: &Path, entries: u32) -> anyhow::Result<()> {
    let data = MapData::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
    let map = Map::from_map_data(data).context("NETD_CT")?;
    let mut ct: BpfHashMap<MapData, CtKey, CtEntry> =
        BpfHashMap::try_from(map).context("NETD_CT is not a hash map")?;
    let now = netd::datapath::conntrack::monotonic_ns();
    let ctr = Ipv4Addr::new(172, 30, 0, 2);
    let host: Ipv4Addr = HOST_IP.parse().expect("HOST_IP");
    const PER_ADDR: u32 = 50_000;
    for i in 0..entries / 2 {
        let peer = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i / PER_ADDR);
        let port = (10_000 + i % PER_ADDR) as u16;
        let original_key = CtKey {
            saddr_be: ctr.octets(),
            daddr_be: peer.octets(),
            sport_be: port.to_be_bytes(),
            dport_be: 80u16.to_be_bytes(),
            proto: 6,
            _pad: [0; 3],
        };
        let reply_key = CtKey {
            saddr_be: peer.octets(),
            daddr_be: host.octets(),
            sport_be: 80u16.to_be_bytes(),
            dport_be: port.to_be_bytes(),
            proto: 6,
            _pad: [0; 3],
        };
        let common = CtEntry {
            mapping: NO_MAPPING,
            created_ns: now,
            last_seen_ns: now,
            packets: 10,
            bytes: 1_000,
            tcp_seen: SEEN_SYN | SEEN_ACK,
            kind: CT_KIND_MASQUERADE,
            proto: 6,
            ..CtEntry::default()
        };
        let original = CtEntry {
            reverse: reply_key,
            nat_saddr_be: host.octets(),
            nat_sport_be: port.to_be_bytes(),
            flags: CT_NAT_SRC | CT_ORIGINAL,
            ..common
        };
        let reply = CtEntry {
            reverse: original_key,
            nat_daddr_be: ctr.octets(),
            nat_dport_be: port.to_be_bytes(),
            flags: CT_NAT_DST,
            ..common
        };
        ct.insert(reply_key, reply, 0)
            .context("B12: writing conntrack")?;
        ct.insert(original_key, original, 0)
            .context("B12: writing conntrack")?;
    }
    Ok(())
}
