// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The observe programs attached to a veth in a test namespace, counting
//! real traffic sent from another namespace.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use netd::datapath::{
    features::TcMode,
    observe::{Hook, Observer},
};
use netd_tests::{
    agent::netd_bin,
    netns::{Netns, Process, veth},
    require_root,
};
use nix::sys::signal::Signal;

/// Two namespaces joined by a veth: `client` 10.77.0.1 <-> `server`
/// 10.77.0.2, with a UDP sink and a TCP listener on the server side.
struct Pair {
    client: Netns,
    server: Netns,
}

fn pair() -> Pair {
    let client = Netns::new("cli");
    let server = Netns::new("srv");
    veth(&client, "eth0", &server, "eth0");
    client.ip("addr add 10.77.0.1/24 dev eth0");
    server.ip("addr add 10.77.0.2/24 dev eth0");
    Pair { client, server }
}

/// Sends 5 pings, 3 UDP datagrams and one TCP connection to the server.
fn send_traffic(pair: &Pair) {
    pair.client.sh("ping -c 5 -i 0.05 -W 1 10.77.0.2");
    pair.client.sh(
        "python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b\"x\", (\"10.77.0.2\", 9)) for _ in range(3)]'",
    );
    // A refused connection still sends a SYN the hook must count.
    let _ = pair.client.try_sh("curl -s -m 2 http://10.77.0.2:81/");
}

fn observe(hook: Hook) {
    let pair = pair();
    let mut observer = {
        let _in_server = pair.server.enter();
        Observer::attach("eth0", hook).expect("attach observe program")
    };
    send_traffic(&pair);
    std::thread::sleep(Duration::from_millis(100));
    let stats = observer.read().expect("read counters");
    assert!(stats.ipv4_icmp >= 5, "5 echo requests: {stats:?}");
    assert!(stats.ipv4_udp >= 3, "3 datagrams: {stats:?}");
    assert!(stats.ipv4_tcp >= 1, "a SYN: {stats:?}");
    assert!(stats.arp >= 1, "ARP resolution of the server: {stats:?}");
    assert!(stats.bytes >= 5 * 98, "bytes counted: {stats:?}");

    // Detaching stops the counting.
    drop(observer);
    let mut again = {
        let _in_server = pair.server.enter();
        Observer::attach("eth0", hook).expect("re-attach")
    };
    assert_eq!(
        again.read().expect("read").packets(),
        0,
        "fresh maps per load"
    );
}

#[test]
fn tc_observe_counts_real_traffic() {
    require_root!();
    observe(Hook::TcIngress);
}

#[test]
fn xdp_observe_counts_real_traffic() {
    require_root!();
    observe(Hook::Xdp);
}

/// `netd observe` on the netlink path, the only one before Linux 6.6:
/// Ctrl-C ends the count early and prints it, the program goes, and so
/// does the clsact qdisc it had to add; a qdisc that was there stays.
#[test]
fn cli_observe_leaves_the_interface_as_it_found_it() {
    require_root!();
    let pair = pair();
    let tc = |args: &str| pair.server.sh(&format!("tc {args}"));
    for preexisting in [false, true] {
        if preexisting {
            tc("qdisc add dev eth0 clsact");
        }
        let mut cmd = pair.server.command(netd_bin());
        cmd.args([
            "observe",
            "eth0",
            "--tc-attach",
            "netlink",
            "--seconds",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut observe = Process::spawn(cmd, "netd observe");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !tc("filter show dev eth0 ingress").contains("netd_observe_tc") {
            assert!(
                Instant::now() < deadline && !observe.has_exited(),
                "the observe filter never showed: {:?}",
                observe.take_output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        send_traffic(&pair);
        observe.signal(Signal::SIGINT);
        let status = observe
            .wait_timeout(Duration::from_secs(20))
            .expect("netd observe ends on Ctrl-C");
        let (stdout, stderr) = observe.take_output();
        assert!(status.success(), "{status}: {stderr}");
        let icmp: u64 = stdout
            .split_once("icmp ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no ICMP count in {stdout:?}"));
        assert!(icmp >= 5, "5 echo requests: {stdout}");
        let filters = tc("filter show dev eth0 ingress");
        assert!(filters.trim().is_empty(), "filters left: {filters}");
        let qdiscs = tc("qdisc show dev eth0");
        assert_eq!(
            qdiscs.contains("clsact"),
            preexisting,
            "preexisting {preexisting}: {qdiscs}"
        );
        if preexisting {
            tc("qdisc del dev eth0 clsact");
        }
    }
}

/// An observer attached in netlink mode inside a namespace and dropped
/// outside it removes its filter and qdisc from that namespace (they are
/// found by interface index and name, which mean other interfaces here).
#[test]
fn netlink_observer_dropped_elsewhere_cleans_up_where_it_attached() {
    require_root!();
    let pair = pair();
    let observer = {
        let _in_server = pair.server.enter();
        Observer::attach_with("eth0", Hook::TcIngress, TcMode::Netlink).expect("attach")
    };
    assert!(observer.added_clsact());
    let tc = |args: &str| pair.server.sh(&format!("tc {args}"));
    assert!(tc("filter show dev eth0 ingress").contains("netd_observe_tc"));
    drop(observer);
    let filters = tc("filter show dev eth0 ingress");
    assert!(filters.trim().is_empty(), "filters left: {filters}");
    let qdiscs = tc("qdisc show dev eth0");
    assert!(!qdiscs.contains("clsact"), "{qdiscs}");
}
