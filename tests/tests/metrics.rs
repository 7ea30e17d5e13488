// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Prometheus metrics: `GET /metrics` on the API socket and on
//! `--metrics-address`, checked by Prometheus's own `promtool`, with values
//! that follow traffic sent through the namespace topology, and every drop
//! reason at every hook under its own labels.

use std::{collections::BTreeMap, process::Command};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use netd_common::{drop, map_names};
use netd_tests::{
    curl_unix, require_root,
    topology::{HOST_IP, HttpServer, OUT_IP, Topology},
};

const METRICS: &str = "10.250.0.1:9462";

/// One scrape: every sample, keyed by its name and labels as written.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a sample line");
                (series.to_owned(), value.parse().expect("a number"))
            })
            .collect();
        Self { text, samples }
    }

    /// The sample `name{labels}` (labels as written, in order), if present.
    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no sample {series} in:\n{}", self.text))
    }

    /// The samples of family `name` whose labels contain `needle`.
    fn matching(&self, name: &str, needle: &str) -> Vec<(&str, f64)> {
        self.samples
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{name}{{")) && s.contains(needle))
            .map(|(s, v)| (s.as_str(), *v))
            .collect()
    }
}

fn scrape_socket(t: &Topology) -> Scrape {
    let (body, code) = curl_unix(&t.agent.socket(), &["http://netd/metrics"]);
    assert_eq!(code, "200", "{body}");
    Scrape::parse(body)
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs Debian's prometheus)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_follow_traffic_and_pass_promtool() {
    require_root!();
    // Collections every second: the conntrack gauge is counted from them.
    let t = Topology::new(&["--metrics-address", METRICS, "--ct-gc-interval", "1"]);
    let web = t.container("web", &["--name", "web"]);
    let _server = HttpServer::start(&web, 80, "hello");
    t.agent.ok(&["publish", "8080:80", "web"]);
    for _ in 0..3 {
        assert_eq!(
            t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
            Some("hello")
        );
    }
    // A container's flow to the outside, masqueraded.
    let _echo = HttpServer::start(&t.out, 8000, "outside");
    assert_eq!(
        netd_tests::topology::fetch(&web, &format!("http://{OUT_IP}:8000/")).as_deref(),
        Some("outside")
    );
    // Dropped at the uplink: the outside addressing a container directly.
    t.out.ip(&format!("route add 172.30.0.0/16 via {HOST_IP}"));
    let direct_before = t.agent.drops("direct_to_container");
    assert!(!t.out.try_sh("ping -c2 -W1 -q 172.30.0.2").status.success());
    // Dropped at the container's veth: a source that is not its own.
    web.ip("addr add 172.30.9.9/16 dev eth0");
    let _ = web.try_sh(&format!("ping -c2 -W1 -q -I 172.30.9.9 {OUT_IP}"));

    let m = scrape_socket(&t);
    promtool_check(&m.text);
    let labels = r#"network="netd",endpoint="web",proto="tcp",host_ip="0.0.0.0",host_port="8080""#;
    assert_eq!(
        m.value(&format!("netd_published_flows_total{{{labels}}}")),
        3.0
    );
    // Three requests and answers, each several packets.
    assert!(m.value(&format!("netd_published_packets_total{{{labels}}}")) >= 18.0);
    assert!(m.value(&format!("netd_published_bytes_total{{{labels}}}")) > 0.0);
    assert_eq!(
        m.value(r#"netd_flows_created_total{kind="published"}"#),
        3.0
    );
    assert!(m.value(r#"netd_flows_created_total{kind="masquerade"}"#) >= 1.0);
    let direct = m.value(r#"netd_drops_total{reason="direct_to_container",hook="uplink_tc"}"#);
    assert!(direct >= direct_before as f64 + 2.0, "{direct}");
    assert!(m.value(r#"netd_drops_total{reason="spoofed",hook="endpoint_tc"}"#) >= 2.0);
    assert_eq!(
        m.value(r#"netd_drops_total{reason="spoofed",hook="uplink_tc"}"#),
        0.0
    );
    assert!(m.value(r#"netd_packets_total{hook="uplink_tc",proto="tcp"}"#) >= 18.0);
    assert!(m.value(r#"netd_packets_total{hook="endpoint_tc",proto="icmp"}"#) >= 2.0);
    assert!(m.value("netd_conntrack_entries") >= 2.0);
    // The gauge (the last collection's count and the flows created since)
    // is the table's size, as a walk of it (`netd stats`) finds it.
    let walked = || t.agent.json(&["stats"])["conntrack_entries"].as_f64();
    let flow = |port: u16| {
        let _server = HttpServer::start(&t.out, port, "counted");
        netd_tests::topology::fetch(&web, &format!("http://{OUT_IP}:{port}/"))
    };
    assert_eq!(flow(8001).as_deref(), Some("counted"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(flow(8002).as_deref(), Some("counted"));
    let counted = (0..10).find_map(|_| {
        let before = walked();
        let gauge = scrape_socket(&t).value("netd_conntrack_entries");
        (walked() == before).then(|| (gauge, before.expect("conntrack_entries")))
    });
    let (gauge, walked) = counted.expect("the table changed under every scrape");
    assert_eq!(gauge, walked);
    let ct_max = t.agent.json(&["stats"])["conntrack_max"]
        .as_f64()
        .expect("conntrack_max");
    assert_eq!(m.value("netd_conntrack_max_entries"), ct_max);
    assert_eq!(m.value("netd_endpoints"), 1.0);
    assert_eq!(m.value("netd_networks"), 1.0);
    assert!(m.value(r#"netd_map_memory_bytes{map="NETD_CT"}"#) > 0.0);
    assert_eq!(m.value(r#"netd_map_max_entries{map="NETD_CT"}"#), ct_max);
    assert!(m.value("process_open_fds") > 0.0);
    assert!(m.value("netd_agent_heap_bytes") > 0.0);
    let build = m.matching("netd_build_info", "version=");
    assert_eq!(build.len(), 1, "{build:?}");
    assert!(
        build[0]
            .0
            .contains(concat!("version=\"", env!("CARGO_PKG_VERSION")))
    );
    // The API calls so far, by route pattern: attach, publish, the stats
    // the drop counts came from.
    assert!(
        m.value(r#"netd_api_requests_total{route="/v1/endpoints",method="POST",code="201"}"#)
            >= 1.0
    );
    assert!(
        m.value(r#"netd_api_requests_total{route="/v1/ports",method="POST",code="201"}"#) >= 1.0
    );
    assert!(
        m.value(r#"netd_api_requests_total{route="/v1/stats",method="GET",code="200"}"#) >= 1.0
    );

    // A refused call is counted with its status, under its pattern.
    let (_, code) = curl_unix(
        &t.agent.socket(),
        &["-X", "DELETE", "http://netd/v1/networks/nosuch"],
    );
    assert_eq!(code, "404");
    let m = scrape_socket(&t);
    assert_eq!(
        m.value(
            r#"netd_api_requests_total{route="/v1/networks/{name}",method="DELETE",code="404"}"#
        ),
        1.0
    );

    // The TCP listener: the same families, and nothing but /metrics.
    let tcp = t
        .host
        .sh(&format!("curl -sS -m 5 http://{METRICS}/metrics"));
    let over_tcp = Scrape::parse(tcp);
    assert_eq!(
        over_tcp.value(&format!("netd_published_flows_total{{{labels}}}")),
        3.0
    );
    let status = t.host.sh(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{METRICS}/v1/status"
    ));
    assert_eq!(status, "404", "the API must not be reachable over TCP");

    // A mapping's series go with it.
    t.agent.ok(&["unpublish", "8080:80", "web"]);
    let m = scrape_socket(&t);
    assert!(
        m.matching("netd_published_flows_total", "endpoint=\"web\"")
            .is_empty()
    );
    promtool_check(&m.text);
}

/// Every reason at every hook is its own series with its own count: each
/// slot of the pinned drop counters gets a distinct count, and the scrape
/// must show each under its reason and hook.
#[test]
fn every_drop_reason_and_hook_is_its_own_series() {
    require_root!();
    let t = Topology::new(&[]);
    let pin = t.agent.map_pin(map_names::DROPS);
    let data = MapData::from_pin(&pin).expect("the pinned drop counters");
    let mut map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).expect("a per-CPU array");
    let cpus = aya::util::nr_cpus().expect("CPUs");
    let count = |row: u32, reason: u32| u64::from(1000 * (row + 1) + reason);
    for (row, _) in drop::hook::NAMES {
        for reason in 0..drop::COUNT {
            // Split over CPUs: the scrape must sum them.
            let mut values = vec![0; cpus];
            values[0] = count(row, reason) - 1;
            values[cpus - 1] += 1;
            map.set(
                drop::slot(row, drop::BASE + reason),
                PerCpuValues::try_from(values).expect("values"),
                0,
            )
            .expect("setting a counter");
        }
    }
    let m = scrape_socket(&t);
    for (row, hook) in drop::hook::NAMES {
        for (reason, name) in drop::NAMES.iter().enumerate() {
            assert_eq!(
                m.value(&format!(
                    "netd_drops_total{{reason=\"{name}\",hook=\"{hook}\"}}"
                )),
                count(row, reason as u32) as f64,
                "{name} at {hook}"
            );
        }
    }
    let exhausted: u64 = drop::hook::NAMES
        .iter()
        .map(|(row, _)| count(*row, drop::index(drop::NAT_EXHAUSTED)))
        .sum();
    assert_eq!(
        m.value("netd_masquerade_port_exhaustion_total"),
        exhausted as f64
    );
    // `netd stats` sums the hooks.
    let spoofed: u64 = drop::hook::NAMES
        .iter()
        .map(|(row, _)| count(*row, drop::index(drop::SPOOFED)))
        .sum();
    assert_eq!(t.agent.drops("spoofed"), spoofed);
    promtool_check(&m.text);
}
