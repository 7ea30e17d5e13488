// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What netd survives: the host's firewall flushed and its TC state
//! deleted (none of it is netd's), and pins removed behind its back (the
//! agent puts them back within seconds).

use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netd_tests::{
    require_root,
    topology::{HOST_IP, HttpServer, Topology, fetch},
};

/// Fetches `url` from the outside client until it answers `body`, for at
/// most `within`; how long it took, or `None`.
fn answers_within(t: &Topology, url: &str, body: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if fetch(&t.out, &format!("-m 1 {url}")).as_deref() == Some(body) {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The kernel ID of the map pinned at `path`.
fn map_id(path: &std::path::Path) -> String {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    json["id"].to_string()
}

#[test]
fn firewall_flushes_and_tc_deletions_change_nothing() {
    require_root!();
    for xdp in [false, true] {
        let args: &[&str] = if xdp { &["--xdp"] } else { &[] };
        let t = Topology::new(args);
        let c1 = t.container("c1", &["-p", "8080:80"]);
        let _server = HttpServer::start(&c1, 80, "still here\n");
        let url = format!("http://{HOST_IP}:8080/");
        assert_eq!(t.fetch(&url).as_deref(), Some("still here\n"));
        // What an operator (or another tool) may do to the host; some of it
        // fails because there is nothing of the kind to delete, which is
        // the point.
        for script in [
            "nft flush ruleset",
            "iptables-nft -F; iptables-nft -t nat -F; iptables-nft -X",
            "iptables-legacy -F; iptables-legacy -t nat -F",
            "tc qdisc del dev up0 clsact",
            "tc qdisc del dev up0 ingress",
            "tc filter del dev up0 ingress",
            "ip link set dev up0 xdp off",
            "ip link set dev up0 xdpgeneric off",
        ] {
            let _ = t.host.try_sh(script);
            assert_eq!(
                t.fetch(&url).as_deref(),
                Some("still here\n"),
                "after `{script}` (xdp: {xdp})"
            );
        }
    }
}

#[test]
fn removed_pins_are_restored_within_seconds() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let _server = HttpServer::start(&c1, 80, "restored\n");
    let url = format!("http://{HOST_IP}:8080/");
    assert_eq!(t.fetch(&url).as_deref(), Some("restored\n"));
    let bpffs = t.agent.bpffs();

    // The uplink's link: removing its pin detaches the program, so the
    // published port goes dark until the agent attaches it again.
    fs::remove_file(bpffs.join("links/uplink-tc-up0")).expect("remove the uplink pin");
    let took = answers_within(&t, &url, "restored\n", Duration::from_secs(5));
    assert!(took.is_some(), "published port back within 5 s");
    assert!(bpffs.join("links/uplink-tc-up0").exists());

    // The endpoint's link: replies leave the container through it.
    let endpoint = fs::read_dir(bpffs.join("links"))
        .expect("links")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("endpoint-"))
        .expect("an endpoint pin");
    fs::remove_file(bpffs.join("links").join(&endpoint)).expect("remove the endpoint pin");
    assert!(
        answers_within(&t, &url, "restored\n", Duration::from_secs(5)).is_some(),
        "replies translated again within 5 s"
    );

    // A map pin: the map lives on (the programs hold it), and the agent
    // pins the same map again, so a later restart keeps its entries.
    let ct = bpffs.join("NETD_CT");
    let before = map_id(&ct);
    fs::remove_file(&ct).expect("remove the conntrack pin");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ct.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(ct.exists(), "conntrack pinned again within 5 s");
    assert_eq!(map_id(&ct), before, "the same map, not a new one");

    // Host-local access: the cgroup links.
    for pin in fs::read_dir(bpffs.join("links")).expect("links").flatten() {
        if pin.file_name().to_string_lossy().starts_with("cgroup-") {
            fs::remove_file(pin.path()).expect("remove a cgroup pin");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !bpffs.join("links/cgroup-netd_connect4").exists() {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(bpffs.join("links/cgroup-netd_connect4").exists());
    let local = t.host.sh(&t
        .agent
        .cgroup()
        .wrap("curl -sS -m 2 http://127.0.0.1:8080/"));
    assert_eq!(local, "restored\n", "host-local access back");

    let log = t.agent.log();
    for what in [
        "the uplink's TC link was removed",
        "an endpoint's TC link was removed",
        "a map pin was removed",
        "a cgroup link was removed",
    ] {
        assert!(log.contains(what), "logged: {what}");
    }
}
