// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The TC attach modes: TCX (BPF links, 6.6 and later) and what kernels
//! before it offer, a cls_bpf filter on a clsact qdisc through netlink. The
//! netlink mode is forced here (`--tc-attach netlink`) so that this kernel
//! tests the path a 6.1 kernel takes: translation both ways, a restart
//! that replaces the program in place, a deleted qdisc put back, and
//! `netd down` leaving the uplink as it found it.

use std::{
    thread,
    time::{Duration, Instant},
};

use netd::datapath::features::Features;
use netd_tests::{
    require_root,
    topology::{HOST_IP, HttpServer, OUT_IP, Topology, fetch},
};

/// netd's filters on ingress of `dev` in the host namespace.
fn netd_filters(t: &Topology, dev: &str) -> usize {
    t.host
        .sh(&format!("tc filter show dev {dev} ingress"))
        .lines()
        .filter(|l| l.contains("netd_") && l.contains("direct-action"))
        .count()
}

fn has_clsact(t: &Topology, dev: &str) -> bool {
    t.host
        .sh(&format!("tc qdisc show dev {dev}"))
        .contains("clsact")
}

#[test]
fn netlink_mode_translates_restarts_heals_and_cleans_up() {
    require_root!();
    let mut t = Topology::new(&["--tc-attach", "netlink"]);
    let status = t.agent.json(&["status"]);
    assert_eq!(status["tc_attach"], "netlink", "{status}");
    // Forced here; on a kernel without TCX it is the only choice, and
    // the log says why.
    let why = if Features::probe().tcx {
        "tc: clsact via netlink (--tc-attach netlink)"
    } else {
        "tc: clsact via netlink (no TCX before Linux 6.6.0"
    };
    assert!(t.agent.log().contains(why), "{}", t.agent.log());
    let text = t.agent.ok(&["status"]);
    assert!(text.contains("tc: clsact via netlink"), "{text}");
    assert!(has_clsact(&t, "up0"));
    assert_eq!(netd_filters(&t, "up0"), 1);
    assert!(
        t.host
            .sh("tc filter show dev up0 ingress")
            .contains("pref 20036"),
        "netd's fixed priority (0x4e44): {}",
        t.host.sh("tc filter show dev up0 ingress")
    );

    let c1 = t.container("c1", &["-p", "8080:80"]);
    let veth = t.agent.json(&["ps"])[0]["host_ifname"]
        .as_str()
        .expect("veth")
        .to_owned();
    assert_eq!(netd_filters(&t, &veth), 1, "the endpoint's filter");
    let _inside = HttpServer::start(&c1, 80, "netlink mode\n");
    let _outside = HttpServer::start(&t.out, 80, "outside\n");
    let url = format!("http://{HOST_IP}:8080/");
    assert_eq!(t.fetch(&url).as_deref(), Some("netlink mode\n"));
    assert_eq!(
        fetch(&c1, &format!("http://{OUT_IP}/")).as_deref(),
        Some("outside\n"),
        "masquerade"
    );

    // Filters outlive the agent, and a restarted agent replaces the
    // program in them: still one filter each.
    t.agent.kill9();
    assert_eq!(
        t.fetch(&url).as_deref(),
        Some("netlink mode\n"),
        "agent down"
    );
    t.agent.launch();
    assert!(
        t.agent
            .log()
            .contains("replaced the program of netd's TC filter"),
        "{}",
        t.agent.log()
    );
    assert_eq!(netd_filters(&t, "up0"), 1);
    assert_eq!(netd_filters(&t, &veth), 1);
    assert_eq!(t.fetch(&url).as_deref(), Some("netlink mode\n"));

    // A qdisc deleted with tc takes netd's filter with it: the agent puts
    // both back within seconds.
    t.host.sh("tc qdisc del dev up0 clsact");
    let deadline = Instant::now() + Duration::from_secs(5);
    while netd_filters(&t, "up0") == 0 {
        assert!(
            Instant::now() < deadline,
            "not put back:\n{}",
            t.agent.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t.agent.log_shows("TC attachment was removed"),
        "{}",
        t.agent.log()
    );
    assert_eq!(t.fetch(&url).as_deref(), Some("netlink mode\n"));

    // netd down: the uplink keeps nothing of netd, not even the qdisc it
    // added.
    let down = t.agent.ok(&["down"]);
    assert!(down.contains("TC filter on up0"), "{down}");
    assert!(down.contains("clsact qdisc of up0"), "{down}");
    assert_eq!(t.agent.wait_exit(), Some(0));
    assert!(
        !has_clsact(&t, "up0"),
        "{}",
        t.host.sh("tc qdisc show dev up0")
    );
}

/// A clsact qdisc that was there before netd (another tool's) stays after
/// `netd down`, with the other tool's filter; only netd's filter goes.
#[test]
fn netlink_mode_leaves_other_filters_and_qdiscs_alone() {
    require_root!();
    let mut t = Topology::new(&["--tc-attach", "netlink"]);
    t.agent.ok(&["down"]);
    assert_eq!(t.agent.wait_exit(), Some(0));
    // Another tool's qdisc and filter (classic BPF that matches nothing,
    // so netd's filter still sees every packet), then netd again.
    t.host.sh(
        "tc qdisc add dev up0 clsact && tc filter add dev up0 ingress pref 100 protocol ip bpf bytecode '1,6 0 0 0,' classid 1:1",
    );
    t.agent.launch();
    let filters = t.host.sh("tc filter show dev up0 ingress");
    assert!(filters.contains("pref 100 bpf"), "{filters}");
    assert_eq!(netd_filters(&t, "up0"), 1);
    let down = t.agent.ok(&["down"]);
    assert!(!down.contains("clsact qdisc of up0"), "{down}");
    assert_eq!(t.agent.wait_exit(), Some(0));
    let filters = t.host.sh("tc filter show dev up0 ingress");
    assert!(
        filters.contains("pref 100 bpf"),
        "the other filter stays: {filters}"
    );
    assert_eq!(netd_filters(&t, "up0"), 0);
    assert!(has_clsact(&t, "up0"), "the qdisc netd found stays");
}

#[test]
fn auto_picks_the_best_mode_and_bad_modes_are_refused() {
    require_root!();
    let t = Topology::new(&[]);
    let status = t.agent.json(&["status"]);
    // Auto picks TCX where the kernel has it (6.6 and later), clsact
    // through netlink before.
    let expected = if Features::probe().tcx {
        "tcx"
    } else {
        "netlink"
    };
    assert_eq!(status["tc_attach"], expected, "{status}");
    assert!(
        status["kernel"]
            .as_str()
            .is_some_and(|k| k.starts_with(|c: char| c.is_ascii_digit())),
        "{status}"
    );
    let bad = t.agent.cli(&["agent", "--tc-attach", "sometimes"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("sometimes"), "{}", bad.stderr);
}
