// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd monitor` against a running agent: a drop and a flow shown with
//! their tuples within a second, the endpoint filter, the kernel's switch
//! off once no monitor is left, and a flood of drops that neither stalls
//! the agent nor floods the monitor.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use netd::datapath::monitor::MonitorMaps;
use netd_tests::{
    agent::Agent,
    require_root,
    topology::{HOST_IP, HttpServer, OUT_IP, Topology},
};
use serde_json::Value;

/// A `netd --json monitor ARGS` running in the background.
struct Monitor {
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Monitor {
    /// Starts it and waits until it listens.
    fn start(agent: &Agent, args: &[&str]) -> Self {
        let mut child = agent
            .command()
            .args(["--json", "monitor"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netd monitor");
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut first = String::new();
        stderr.read_line(&mut first).expect("monitor's stderr");
        assert!(first.starts_with("Listening for"), "netd monitor: {first}");
        Self { child, events }
    }

    /// The first event `matches` picks within `within`, the others seen
    /// before it skipped.
    fn expect(&self, within: Duration, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(event) if matches(&event) => return event,
                Ok(event) => seen.push(event),
                Err(_) => break,
            }
        }
        panic!("no {what} within {within:?}; seen: {seen:#?}");
    }

    /// Every event that arrives within `within`.
    fn drain(&self, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(event) => seen.push(event),
                Err(_) => break,
            }
        }
        seen
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the programs are told to emit (`events` 0: nothing).
fn kernel_wants(agent: &Agent) -> u32 {
    MonitorMaps::open(&agent.bpffs())
        .expect("the pinned monitor maps")
        .config()
        .expect("NETD_MONITOR")
        .events
}

fn wait_kernel_wants(agent: &Agent, want: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while kernel_wants(agent) != want {
        assert!(
            Instant::now() < deadline,
            "the programs still told to emit {} (expected {want})",
            kernel_wants(agent)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn ip_of(agent: &Agent, name: &str) -> String {
    let ps = agent.json(&["ps"]);
    ps.as_array()
        .and_then(|eps| eps.iter().find(|ep| ep["name"] == name))
        .map(|ep| ep["ip"].as_str().expect("ip").to_owned())
        .unwrap_or_else(|| panic!("no endpoint {name}: {ps}"))
}

#[test]
fn monitor_shows_drops_and_flows_with_their_tuples() {
    require_root!();
    let t = Topology::new(&[]);
    let web = t.container("web", &["--name", "web"]);
    let db = t.container("db", &["--name", "db"]);
    let web_ip = ip_of(&t.agent, "web");
    let _server = HttpServer::start(&web, 80, "hello");
    t.agent.ok(&["publish", "8080:80", "web"]);
    assert_eq!(kernel_wants(&t.agent), 0, "no monitor yet: nothing emitted");

    let all = Monitor::start(&t.agent, &[]);
    let db_drops = Monitor::start(&t.agent, &["--drops", "--endpoint", "db"]);
    wait_kernel_wants(&t.agent, 3);

    // A published port: the flow, with its translation.
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("hello")
    );
    let flow = all.expect(Duration::from_secs(1), "the published flow", |e| {
        e["type"] == "flow" && e["kind"] == "published"
    });
    assert_eq!(flow["event"], "new", "{flow}");
    assert_eq!(flow["protocol"], "tcp", "{flow}");
    assert!(
        flow["src"]
            .as_str()
            .expect("a string")
            .starts_with(&format!("{OUT_IP}:")),
        "{flow}"
    );
    assert_eq!(flow["dst"], format!("{HOST_IP}:8080"), "{flow}");
    assert_eq!(flow["translated_src"], flow["src"], "{flow}");
    assert_eq!(flow["translated_dst"], format!("{web_ip}:80"), "{flow}");
    assert_eq!(flow["endpoint"], "web", "{flow}");

    // A source that is not web's own: dropped at its veth.
    web.ip("addr add 172.30.9.9/16 dev eth0");
    let _ = web.try_sh(&format!("ping -c1 -W1 -q -I 172.30.9.9 {OUT_IP}"));
    let drop = all.expect(Duration::from_secs(1), "the spoofed drop", |e| {
        e["type"] == "drop"
    });
    assert_eq!(drop["reason"], "spoofed", "{drop}");
    assert_eq!(drop["hook"], "endpoint_tc", "{drop}");
    assert_eq!(drop["protocol"], "icmp", "{drop}");
    assert_eq!(
        drop["src"].as_str().expect("a string").split(':').next(),
        Some("172.30.9.9"),
        "{drop}"
    );
    assert_eq!(
        drop["dst"].as_str().expect("a string").split(':').next(),
        Some(OUT_IP),
        "{drop}"
    );
    assert_eq!(drop["endpoint"], "web", "{drop}");
    assert!(drop["len"].as_u64().expect("a number") >= 98, "{drop}");
    assert!(
        drop.get("head").is_none(),
        "head only with --verbose: {drop}"
    );
    // The monitor about db saw none of web's.
    let db_seen = db_drops.drain(Duration::from_millis(300));
    assert!(db_seen.iter().all(|e| e["type"] == "lost"), "{db_seen:#?}");
    // ... and sees db's own.
    db.ip("addr add 172.30.9.8/16 dev eth0");
    let _ = db.try_sh(&format!("ping -c1 -W1 -q -I 172.30.9.8 {OUT_IP}"));
    let own = db_drops.expect(Duration::from_secs(1), "db's spoofed drop", |e| {
        e["type"] == "drop"
    });
    assert_eq!(own["endpoint"], "db", "{own}");

    // Flows only, verbose: the kernel is told the union of what is asked.
    db_drops.stop();
    all.stop();
    wait_kernel_wants(&t.agent, 0);
    let verbose = Monitor::start(&t.agent, &["--drops", "--verbose"]);
    wait_kernel_wants(&t.agent, 1);
    let _ = web.try_sh(&format!("ping -c1 -W1 -q -I 172.30.9.9 {OUT_IP}"));
    let drop = verbose.expect(Duration::from_secs(1), "a drop with its head", |e| {
        e["type"] == "drop"
    });
    let head = drop["head"].as_str().expect("head");
    // 128 bytes of a 98-byte ping: the whole frame, from the Ethernet
    // header on (EtherType IPv4 at bytes 12-13, ICMP at 23).
    assert_eq!(head.len(), 2 * 98, "{drop}");
    assert_eq!(&head[24..28], "0800", "{drop}");
    assert_eq!(&head[46..48], "01", "{drop}");
    verbose.stop();
    wait_kernel_wants(&t.agent, 0);
}

#[test]
fn a_flood_of_drops_is_rate_limited_and_counted() {
    require_root!();
    let t = Topology::new(&[]);
    let web = t.container("web", &["--name", "web"]);
    web.ip("addr add 172.30.9.9/16 dev eth0");
    let rate = 200;
    let monitor = Monitor::start(&t.agent, &["--drops", "--rate", &rate.to_string()]);
    wait_kernel_wants(&t.agent, 1);
    let drops_before = t.agent.drops("spoofed");
    let started = Instant::now();
    // A million spoofed datagrams, each dropped at web's veth.
    web.sh(&format!(
        "python3 -c 'import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind((\"172.30.9.9\", 0))\n\
         for _ in range(1000000): s.sendto(b\"x\", (\"{OUT_IP}\", 9))'"
    ));
    // The agent answers while the flood's events arrive.
    t.agent.ok(&["status"]);
    let elapsed = started.elapsed();
    let events = monitor.drain(Duration::from_secs(3));
    let dropped = t.agent.drops("spoofed") - drops_before;
    assert!(dropped >= 1_000_000, "{dropped} spoofed drops counted");
    let shown = events.iter().filter(|e| e["type"] == "drop").count() as u64;
    let lost: u64 = events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["rate"].as_u64().expect("a number") + e["full"].as_u64().expect("a number"))
        .sum();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // Each CPU: a full bucket (a second's worth) and the rate after.
    let bound = cpus * rate * (elapsed.as_secs() + 2);
    assert!(shown > 0, "no drop shown");
    assert!(
        shown <= bound,
        "{shown} drops shown in {elapsed:?} (at most {bound})"
    );
    assert!(
        lost + shown >= 1_000_000,
        "{shown} shown and {lost} lost of 1000000 (the lost count is missing some)"
    );
    monitor.stop();
    wait_kernel_wants(&t.agent, 0);
}

#[test]
fn a_flow_is_shown_closed_when_it_expires() {
    require_root!();
    let t = Topology::new(&[
        "--ct-gc-interval",
        "1",
        "--ct-timeout",
        "fin_wait=1,time_wait=1,close=1",
    ]);
    let web = t.container("web", &["--name", "web"]);
    let _server = HttpServer::start(&web, 80, "hello");
    t.agent.ok(&["publish", "8080:80", "web"]);
    let flows = Monitor::start(&t.agent, &["--flows"]);
    wait_kernel_wants(&t.agent, 2);
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("hello")
    );
    let new = flows.expect(Duration::from_secs(1), "the new flow", |e| {
        e["type"] == "flow" && e["event"] == "new"
    });
    let closed = flows.expect(Duration::from_secs(5), "the flow closed", |e| {
        e["type"] == "flow" && e["event"] == "closed" && e["src"] == new["src"]
    });
    assert_eq!(closed["reason"], "expired", "{closed}");
    assert_eq!(closed["kind"], "published", "{closed}");
    assert_eq!(closed["translated_dst"], new["translated_dst"], "{closed}");
    assert_eq!(closed["endpoint"], "web", "{closed}");
    flows.stop();
}

#[test]
fn bad_monitor_requests_are_refused_and_change_nothing() {
    require_root!();
    let t = Topology::new(&[]);
    t.agent
        .refuses(&["monitor", "--endpoint", "nosuch"], "nosuch");
    let run = t.agent.cli(&["monitor", "--rate", "0"]);
    assert_eq!(run.code, 2, "a rate of 0 is bad usage: {}", run.stderr);
    let socket = t.agent.socket();
    for (query, needle) in [
        ("rate=2000000", "out of range"),
        ("rate=0", "out of range"),
        ("frobnicate=1", "invalid monitor query"),
        ("drops=maybe", "invalid monitor query"),
    ] {
        let (body, code) =
            netd_tests::curl_unix(&socket, &[&format!("http://netd/v1/monitor?{query}")]);
        assert_eq!(code, "400", "{query}: {body}");
        let error: Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{query}: {body}"
        );
    }
    assert_eq!(
        kernel_wants(&t.agent),
        0,
        "a refused monitor turned nothing on"
    );
}
