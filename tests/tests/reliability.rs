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

use netd::paths;
use netd_common::map_names;
use netd_tests::{
    hold::{BothWays, Hold, count},
    netns::Netns,
    pins::{pinned_map, tcx_programs},
    require_root,
    topology::{HOST_IP, HttpServer, Topology, fetch, wait_listening},
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
    let uplink_pin = paths::link_pin(&bpffs, &paths::uplink_link("tc", "up0"));
    fs::remove_file(&uplink_pin).expect("remove the uplink pin");
    // The kernel releases the unpinned link asynchronously: the port may
    // still answer for a moment. The agent's tick pins a new link.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !uplink_pin.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(uplink_pin.exists(), "the uplink attached again within 5 s");
    let took = answers_within(&t, &url, "restored\n", Duration::from_secs(5));
    assert!(took.is_some(), "published port back within 5 s");

    // The endpoint's link: replies leave the container through it.
    let endpoint = fs::read_dir(paths::links_dir(&bpffs))
        .expect("links")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("endpoint-"))
        .expect("an endpoint pin");
    fs::remove_file(paths::link_pin(&bpffs, &endpoint)).expect("remove the endpoint pin");
    assert!(
        answers_within(&t, &url, "restored\n", Duration::from_secs(5)).is_some(),
        "replies translated again within 5 s"
    );

    // A map pin: the map lives on (the programs hold it), and the agent
    // pins the same map again, so a later restart keeps its entries.
    let ct = paths::map_pin(&bpffs, map_names::CT);
    let before = pinned_map(&ct).id;
    fs::remove_file(&ct).expect("remove the conntrack pin");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ct.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(ct.exists(), "conntrack pinned again within 5 s");
    assert_eq!(pinned_map(&ct).id, before, "the same map, not a new one");

    // Host-local access: the cgroup links.
    for pin in fs::read_dir(paths::links_dir(&bpffs))
        .expect("links")
        .flatten()
    {
        if pin.file_name().to_string_lossy().starts_with("cgroup-") {
            fs::remove_file(pin.path()).expect("remove a cgroup pin");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && !paths::link_pin(&bpffs, &paths::cgroup_link("netd_connect4")).exists()
    {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(paths::link_pin(&bpffs, &paths::cgroup_link("netd_connect4")).exists());
    let local = t.host.sh(&t
        .agent
        .cgroup()
        .wrap("curl -sS -m 2 http://127.0.0.1:8080/"));
    assert_eq!(local, "restored\n", "host-local access back");

    for what in [
        "the uplink's TC attachment was removed",
        "an endpoint's TC attachment was removed",
        "a map pin was removed",
        "a cgroup link was removed",
    ] {
        assert!(t.agent.log_shows(what), "logged: {what}");
    }
}

/// Issue 8's restart promise: 1,000 TCP connections to a published port,
/// 1,000 masqueraded ones and 100 UDP flows echo throughout 20 `kill -9`s
/// of the agent at random moments: none is reset, stalls or sees a wrong
/// byte, and new connections made while the agent is down succeed. The
/// restarted agent adopts the pinned maps: their kernel IDs never change.
#[test]
fn agent_killed_twenty_times_disturbs_no_flow() {
    require_root!();
    // Every closed masqueraded connection holds its NAT port for the
    // TIME_WAIT timeout (120 s), as in netfilter: 50 new connections a
    // second to one peer need more than the default 4,536 ports.
    let mut t = Topology::new(&["--masquerade-ports", "10000-32767"]);
    let c1 = t.container("c1", &["-p", "8080:7000", "-p", "8080:7000/udp"]);
    let bpffs = t.agent.bpffs();
    let ids = || -> Vec<u64> {
        let mut ids: Vec<u64> = fs::read_dir(&bpffs)
            .expect("pinned maps")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.is_file())
            .map(|path| pinned_map(&path).id)
            .collect();
        ids.sort();
        ids
    };
    let ids_before = ids();
    assert!(ids_before.len() > 5, "{ids_before:?}");

    let flows = BothWays::start(env!("CARGO_BIN_EXE_netd-loadgen"), &t, &c1);
    // A fixed seed: the same "random" moments on every run.
    let mut seed = 0x6e65_7464_u64;
    let mut random_ms = |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(lo + seed % (hi - lo))
    };
    for _ in 0..20 {
        thread::sleep(random_ms(300, 1500));
        flows.mark_down(true);
        t.agent.kill9();
        thread::sleep(random_ms(500, 2000));
        t.agent.launch();
        flows.mark_down(false);
    }
    thread::sleep(Duration::from_secs(1));
    eprintln!("{}", flows.finish());
    assert_eq!(ids(), ids_before, "no map re-created");
    let drops = t.agent.json(&["stats"])["drops"].clone();
    assert_eq!(drops["nat_exhausted"], 0, "{drops}");
    assert_eq!(drops["ct_create"], 0, "{drops}");
    assert_eq!(
        t.agent.log().matches("reused pinned maps").count(),
        20,
        "every restart adopted the maps"
    );
}

/// A pinned map whose layout is not this netd's (left by another version)
/// is refused with an error that says what to do, and left as it is: never
/// silently re-created, which would drop every flow.
#[test]
fn a_pinned_map_of_another_layout_is_refused_and_left_alone() {
    require_root!();
    let mut t = Topology::new(&[]);
    assert_eq!(t.agent.terminate(), Some(0));
    let ct = t.agent.map_pin(map_names::CT);
    fs::remove_file(&ct).expect("remove the conntrack pin");
    let created = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&ct)
        .args([
            "type",
            "hash",
            "key",
            "8",
            "value",
            "8",
            "entries",
            "64",
            "name",
            map_names::CT,
        ])
        .status()
        .expect("bpftool");
    assert!(created.success());
    let id = pinned_map(&ct).id;
    let run = t.agent.try_start();
    assert_ne!(run.code, 0, "{run:?}");
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains("NETD_CT has key size 8, this netd expects")
            && output.contains("made by a different netd version"),
        "{output}"
    );
    assert_eq!(pinned_map(&ct).id, id, "the foreign map is left in place");
}

/// A SYN flood from spoofed sources against a published port, bounded
/// (200,000 SYNs as fast as a raw socket sends them) and big enough to
/// fill the conntrack table, while 1,000 connections echo: none of them is
/// reset or sees a wrong byte, the table refuses what does not fit and
/// counts it, and new connections succeed again right after the flood.
/// Map memory stays what it was: every map is preallocated or capped.
#[test]
fn a_syn_flood_resets_no_established_flow() {
    require_root!();
    let t = Topology::new(&["--ct-max", "65536"]);
    let c1 = t.container("c1", &["-p", "8080:7000"]);
    let loadgen = env!("CARGO_BIN_EXE_netd-loadgen");
    let _server = c1.spawn(&format!("{loadgen} serve --tcp 0.0.0.0:7000"));
    wait_listening(&c1, 7000, false);
    let memory = |stats: &serde_json::Value| -> u64 {
        stats["maps"]
            .as_array()
            .expect("maps")
            .iter()
            .map(|m| m["memory_bytes"].as_u64().expect("memory"))
            .sum()
    };
    let before = t.agent.json(&["stats"]);
    assert!(memory(&before) > 0, "{before}");

    let hold = Hold::start(
        loadgen,
        &t.out,
        &format!("{HOST_IP}:8080"),
        "--tcp 1000 --new-per-sec 50",
    );
    let flood = t.out.sh(&format!(
        "{loadgen} syn-flood --to {HOST_IP}:8080 --sources 10.253.0.0 --count 200000"
    ));
    let flood: serde_json::Value = serde_json::from_str(flood.trim()).expect("flood report");
    let during = t.agent.json(&["stats"]);
    // New connections from now on are counted apart: the flood is over.
    hold.mark_down(true);
    thread::sleep(Duration::from_secs(6));
    let report = hold.finish();
    let after = t.agent.json(&["stats"]);

    for counter in ["open_failures", "resets", "mismatches"] {
        assert_eq!(report["tcp"][counter], 0, "{counter}: {report}");
    }
    let new = &report["new"];
    let (tried, ok) = (
        count(&new["attempted_marked"]),
        count(&new["succeeded_marked"]),
    );
    assert!(tried >= 100, "{report}");
    assert!(
        ok * 100 >= tried * 99,
        "{ok} of {tried} after the flood: {report}"
    );
    let refused = during["drops"]["ct_create"].as_u64().unwrap_or(0);
    assert!(refused > 0, "the flood filled the table: {during}");
    assert!(count(&during["conntrack_entries"]) <= 65536, "{during}");
    assert_eq!(memory(&after), memory(&before), "map memory is fixed");
    eprintln!(
        "flood: {} SYNs at {:.0} pps, {refused} refused by a full table; established: {} round trips, max gap {} ms, {} stalls; new after the flood {ok}/{tried}",
        flood["sent"],
        flood["pps"].as_f64().unwrap_or(0.0),
        report["tcp"]["round_trips"],
        report["tcp"]["max_gap_ms"],
        report["tcp"]["stalls"],
    );
}

/// Programs attached to `dev` in `ns`: TCX (both directions, asked of the
/// kernel: this bpftool predates TCX) and XDP (from `bpftool net show`).
fn attached_programs(ns: &Netns, dev: &str) -> usize {
    let tcx = tcx_programs(ns, dev).len();
    let out = ns.sh("bpftool -j net show");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("bpftool net json");
    let xdp = json[0]["xdp"].as_array().map_or(0, |list| {
        list.iter().filter(|a| a["devname"] == dev).count()
    });
    let clsact = json[0]["tc"].as_array().map_or(0, |list| {
        list.iter().filter(|a| a["devname"] == dev).count()
    });
    tcx + xdp + clsact
}

/// Issue 8's leak promise for `netd down`: with every feature in use (XDP
/// and TC on the uplink, TC on endpoints, cgroup socket programs, published
/// ports, flows in conntrack), nothing of netd is left: no link, qdisc, TC
/// or XDP or cgroup attachment, pin, state, or process.
#[test]
fn down_leaves_nothing_behind() {
    require_root!();
    let mut t = Topology::new(&["--xdp"]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let c2 = t.container("c2", &["-p", "127.0.0.1:8081:80"]);
    let _server = HttpServer::start(&c1, 80, "leak check\n");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("leak check\n")
    );
    let cgroup = t.agent.cgroup().path().to_owned();
    let cgroup_programs = || {
        let out = Command::new("bpftool")
            .args(["-j", "cgroup", "show"])
            .arg(&cgroup)
            .output()
            .expect("bpftool");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|list| list.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let veths: Vec<String> = t
        .agent
        .json(&["ps"])
        .as_array()
        .expect("ps")
        .iter()
        .map(|e| e["host_ifname"].as_str().expect("veth").to_owned())
        .collect();
    assert_eq!(attached_programs(&t.host, "up0"), 2, "uplink TC and XDP");
    for veth in &veths {
        assert_eq!(attached_programs(&t.host, veth), 1, "{veth}");
    }
    assert!(cgroup_programs() > 0);
    let qdiscs_before = t.out.sh("tc qdisc show dev eth0");
    let pid = t.agent.pid().expect("running");

    t.agent.ok(&["down"]);
    assert_eq!(t.agent.wait_exit(), Some(0));
    assert_eq!(
        attached_programs(&t.host, "up0"),
        0,
        "nothing on the uplink"
    );
    assert_eq!(cgroup_programs(), 0);
    let links = t.host.ip("-o link show");
    assert_eq!(
        links.lines().count(),
        2,
        "only lo and the uplink are left: {links}"
    );
    for ns in [&c1, &c2] {
        assert_eq!(
            ns.ip("-o link show").lines().count(),
            1,
            "only lo in {}",
            ns.name()
        );
    }
    for qdisc in t.host.sh("tc qdisc show").lines() {
        assert!(
            !qdisc.contains("clsact") && !qdisc.contains("ingress"),
            "{qdisc}"
        );
    }
    assert_eq!(t.out.sh("tc qdisc show dev eth0"), qdiscs_before);
    assert!(!t.agent.bpffs().exists(), "pins removed");
    assert!(!t.agent.state_dir().exists(), "state removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the agent is gone"
    );
    let children = fs::read_dir(&cgroup)
        .expect("cgroup")
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(children, 0, "no cgroup created under the test's");
}
