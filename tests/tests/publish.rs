// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Published ports with real traffic, in namespaces: an outside client
//! reaches containers only through `netd publish`, with no netfilter rule
//! and no proxy process in the host namespace.

use std::process::Command;

use netd_common::map_names;
use netd_tests::{
    require_root,
    topology::{HOST_IP, HttpServer, OUT_IP, Topology, mac_of, port_echo, udp_echo, udp_query},
};
use serde_json::Value;

/// The host namespace holds no netfilter rule and runs no process but the
/// agent.
fn assert_no_netfilter_no_proxy(t: &Topology) {
    let nft = t.host.sh("nft list ruleset");
    assert!(
        nft.trim().is_empty(),
        "nftables rules in the host namespace:\n{nft}"
    );
    for save in ["iptables-nft-save", "iptables-legacy-save"] {
        let rules = t.host.sh(save);
        let rules: Vec<&str> = rules.lines().filter(|l| l.starts_with('-')).collect();
        assert!(rules.is_empty(), "{save}: {rules:?}");
    }
    let pids = Command::new("ip")
        .args(["netns", "pids", t.host.name()])
        .output()
        .expect("ip netns pids");
    let pids: Vec<u32> = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(
        pids,
        vec![t.agent.pid().expect("agent running")],
        "only the agent runs in the host namespace"
    );
}

#[test]
fn published_http_reaches_the_container_and_sees_the_client() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let server = HttpServer::start(&c1, 80, "hello from c1\n");
    let out = t.agent.ok(&["publish", "8080:80", c1.name()]);
    assert_eq!(out.trim(), "0.0.0.0:8080->80/tcp");

    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("hello from c1\n")
    );
    assert!(
        server.log().starts_with(OUT_IP),
        "the container sees the client's address: {}",
        server.log()
    );

    let ports = t.agent.json(&["ports"]);
    let port = &ports[0];
    assert_eq!(port["display"], "0.0.0.0:8080->80/tcp");
    assert_eq!(port["container_ip"], "172.30.0.2");
    assert!(
        port["packets"].as_u64() > Some(5) && port["flows"].as_u64() == Some(1),
        "{port}"
    );
    let flows = t.agent.json(&["conntrack"]);
    let flow = flows
        .as_array()
        .expect("flows")
        .iter()
        .find(|f| f["proto"] == "tcp")
        .expect("the flow");
    assert!(flow["src"].as_str().expect("src").starts_with(OUT_IP));
    assert_eq!(flow["dst"], format!("{HOST_IP}:8080"));
    assert_eq!(flow["translated"], "172.30.0.2:80");
    assert_eq!(flow["endpoint"], c1.name());
    assert!(t.agent.ok(&["ps"]).contains("0.0.0.0:8080->80/tcp"));

    // Nothing else is reachable: the container's address, its other ports.
    t.out.ip(&format!(
        "route add {} via {HOST_IP}",
        netd_tests::topology::SUBNET
    ));
    let _other = HttpServer::start(&c1, 81, "unpublished\n");
    assert_eq!(
        t.fetch("http://172.30.0.2:80/"),
        None,
        "the container's address from outside"
    );
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:81/")),
        None,
        "an unpublished port"
    );
    assert!(t.agent.drops("direct_to_container") >= 1);

    // The maps read with field names in bpftool.
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(t.agent.map_pin(map_names::PORTS))
        .output()
        .expect("bpftool");
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("\"prefix_len\": 56") && dump.contains("\"port_be\""),
        "{dump}"
    );
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(t.agent.map_pin(map_names::CT))
        .output()
        .expect("bpftool");
    assert!(String::from_utf8_lossy(&dump.stdout).contains("\"nat_daddr_be\""));

    assert_no_netfilter_no_proxy(&t);
}

#[test]
fn published_udp_answers_from_the_published_address() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let _echo = udp_echo(&c1, 53, "c1");
    t.agent.ok(&["publish", "5353:53/udp", c1.name()]);
    let (reply, from) = udp_query(&t.out, 41000, HOST_IP, 5353, "hello").expect("a reply");
    assert_eq!(reply, format!("c1:{OUT_IP}:41000:hello"));
    assert_eq!(
        from,
        format!("{HOST_IP}:5353"),
        "the reply comes from the address and port the client used"
    );
    assert_no_netfilter_no_proxy(&t);
}

#[test]
fn port_ranges_and_many_to_one() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let _echo = port_echo(&c1, &[8000, 8001, 8002]);
    let out = t.agent.ok(&[
        "publish",
        "9000-9002:8000-8002",
        "7000-7001:8001",
        c1.name(),
    ]);
    assert_eq!(
        out,
        "0.0.0.0:9000-9002->8000-8002/tcp\n0.0.0.0:7000-7001->8001/tcp\n"
    );
    for (port, answer) in [
        (9000, "8000"),
        (9001, "8001"),
        (9002, "8002"),
        (7000, "8001"),
        (7001, "8001"),
    ] {
        assert_eq!(
            t.fetch(&format!("telnet://{HOST_IP}:{port}")).as_deref(),
            Some(answer),
            "port {port}"
        );
    }
    assert_eq!(t.fetch(&format!("telnet://{HOST_IP}:9003")), None);
}

#[test]
fn host_ip_and_loopback_bindings() {
    require_root!();
    let t = Topology::new(&[]);
    t.host.ip("addr add 10.250.0.11/24 dev up0");
    let c1 = t.container("c1", &[]);
    let _server = HttpServer::start(&c1, 80, "bound\n");
    t.agent.ok(&[
        "publish",
        "10.250.0.11:8081:80",
        "127.0.0.1:8082:80",
        c1.name(),
    ]);
    assert_eq!(
        t.fetch("http://10.250.0.11:8081/").as_deref(),
        Some("bound\n")
    );
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8081/")),
        None,
        "bound to another address"
    );
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8082/")),
        None,
        "a loopback binding is not on the uplink"
    );

    // A SYN to 127.0.0.1:8082 sent raw from outside (no stack would route
    // it) is dropped, never translated.
    let host_mac = mac_of(&t.host, "up0");
    let script = format!(
        "import socket,struct\ndef cs(b):\n s=sum(struct.unpack('!%dH'%(len(b)//2),b)); s=(s>>16)+(s&0xffff); s+=s>>16; return (~s)&0xffff\nsrc=socket.inet_aton('{OUT_IP}'); dst=socket.inet_aton('127.0.0.1')\ntcp=struct.pack('!HHIIBBHHH',40000,8082,1,0,0x50,2,64240,0,0)\nc=cs(src+dst+struct.pack('!BBH',0,6,len(tcp))+tcp)\ntcp=tcp[:16]+struct.pack('!H',c)+tcp[18:]\nip=struct.pack('!BBHHHBBH4s4s',0x45,0,40,1,0,64,6,0,src,dst)\nip=ip[:10]+struct.pack('!H',cs(ip))+ip[12:]\nmac=bytes.fromhex('{}')\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind(('eth0',0))\nfor _ in range(3): s.send(mac+b'\\x02\\x00\\x00\\x00\\x00\\x01'+b'\\x08\\x00'+ip+tcp)\n",
        host_mac.replace(':', "")
    );
    t.out.sh(&format!("python3 -c \"{script}\""));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(t.agent.drops("martian_loopback"), 3);
    let flows = t.agent.json(&["conntrack"]);
    let flows = flows.as_array().expect("flows");
    assert!(
        flows
            .iter()
            .all(|f| !f["dst"].as_str().expect("dst").starts_with("127.")),
        "no flow to the loopback binding: {flows:?}"
    );
}

#[test]
fn unpublish_stops_and_republish_moves_a_running_udp_flow_at_once() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let c2 = t.container("c2", &[]);
    let _e1 = udp_echo(&c1, 53, "c1");
    let _e2 = udp_echo(&c2, 53, "c2");
    let _h1 = HttpServer::start(&c1, 80, "c1\n");
    t.agent
        .ok(&["publish", "5353:53/udp", "8080:80", c1.name()]);
    // The same client socket (source port 41000) before and after: one flow.
    let (reply, _) = udp_query(&t.out, 41000, HOST_IP, 5353, "a").expect("reply");
    assert!(reply.starts_with("c1:"), "{reply}");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("c1\n")
    );

    let out = t
        .agent
        .ok(&["unpublish", "5353:53/udp", "8080:80", c1.name()]);
    assert!(out.contains("unpublished 0.0.0.0:5353->53/udp"), "{out}");
    assert_eq!(
        udp_query(&t.out, 41000, HOST_IP, 5353, "b"),
        None,
        "unpublished: nothing answers"
    );
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")),
        None,
        "unpublished: refused"
    );
    let again = t.agent.ok(&["unpublish", "5353:53/udp", c1.name()]);
    assert_eq!(
        again.trim(),
        "nothing published matched",
        "unpublishing twice is fine"
    );

    t.agent.ok(&["publish", "5353:53/udp", c2.name()]);
    let (reply, _) = udp_query(&t.out, 41000, HOST_IP, 5353, "c").expect("reply");
    assert!(
        reply.starts_with("c2:"),
        "the first datagram after re-publishing reaches c2: {reply}"
    );

    // Re-publish while the flow runs, without an unpublish gap: moving the
    // mapping is unpublish + publish in a row.
    t.agent.ok(&["unpublish", "5353:53/udp", c2.name()]);
    t.agent.ok(&["publish", "5353:53/udp", c1.name()]);
    let (reply, _) = udp_query(&t.out, 41000, HOST_IP, 5353, "d").expect("reply");
    assert!(reply.starts_with("c1:"), "{reply}");
}

#[test]
fn xdp_translates_published_ports() {
    require_root!();
    let t = Topology::new(&["--xdp"]);
    let c1 = t.container("c1", &["-p", "8080:80", "-p", "5353:53/udp"]);
    let _server = HttpServer::start(&c1, 80, "via xdp\n");
    let _echo = udp_echo(&c1, 53, "c1");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("via xdp\n")
    );
    let (reply, from) = udp_query(&t.out, 41001, HOST_IP, 5353, "x").expect("reply");
    assert_eq!(
        (reply.as_str(), from.as_str()),
        (
            format!("c1:{OUT_IP}:41001:x").as_str(),
            format!("{HOST_IP}:5353").as_str()
        )
    );
    // veth has native XDP: the kernel runs the program in the driver.
    let status = t.agent.json(&["status"]);
    assert_eq!(status["xdp"]["up0"], "native", "{status}");
    assert!(t.agent.ok(&["status"]).contains("xdp:       native on up0"));
    let stats = t.agent.json(&["stats"]);
    assert_eq!(stats["xdp"], true);
    assert!(
        stats["hooks"]["uplink_xdp"]["ipv4_tcp"].as_u64() > Some(0),
        "{stats}"
    );
    assert_no_netfilter_no_proxy(&t);
}

#[test]
fn egress_redirect_mode_works_too() {
    require_root!();
    let t = Topology::new(&["--redirect", "egress"]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let _server = HttpServer::start(&c1, 80, "via egress\n");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("via egress\n")
    );
}

#[test]
fn mappings_survive_the_agent_and_traffic_flows_while_it_is_down() {
    require_root!();
    let mut t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let _server = HttpServer::start(&c1, 80, "still here\n");
    let url = format!("http://{HOST_IP}:8080/");
    assert!(t.fetch(&url).is_some());
    let before = t.agent.json(&["ports"])[0]["packets"]
        .as_u64()
        .expect("packets");
    t.agent.kill9();
    for _ in 0..3 {
        assert_eq!(
            t.fetch(&url).as_deref(),
            Some("still here\n"),
            "served while the agent is down"
        );
    }
    t.agent.launch();
    assert!(t.agent.log().contains("reused pinned maps"));
    // TCX (6.6+): the pinned link is adopted; before, the program in
    // netd's clsact filter is replaced.
    let log = t.agent.log();
    assert!(
        log.contains("adopted pinned link")
            || log.contains("replaced the program of netd's TC filter"),
        "{log}"
    );
    let ports = t.agent.json(&["ports"]);
    assert_eq!(ports[0]["display"], "0.0.0.0:8080->80/tcp");
    assert!(
        ports[0]["packets"].as_u64().expect("packets") > before,
        "counters kept, and counted while down"
    );
    assert_eq!(t.fetch(&url).as_deref(), Some("still here\n"));
}

#[test]
fn ephemeral_host_ports_are_printed_and_work() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let _server = HttpServer::start(&c1, 80, "ephemeral\n");
    let out = t.agent.ok(&["publish", "80", c1.name()]);
    let port: u16 = out
        .trim()
        .strip_prefix("0.0.0.0:")
        .and_then(|rest| rest.strip_suffix("->80/tcp"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    assert!(port >= 1024, "{port}");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:{port}/")).as_deref(),
        Some("ephemeral\n")
    );
}

#[test]
fn bad_publish_requests_change_nothing() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let c2 = t.container("c2", &[]);
    let _listener = t.host.spawn("python3 -m http.server 8085 --bind 0.0.0.0");
    netd_tests::topology::wait_listening(&t.host, 8085, false);
    let ports_dump = || {
        let out = Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(t.agent.map_pin(map_names::PORTS))
            .output()
            .expect("bpftool");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let c2n = c2.name();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["publish", "--", "-1:80", c2n], "is not a port number"),
        (vec!["publish", "65536:80", c2n], "is not a port number"),
        (
            vec!["publish", "65535-65536:80", c2n],
            "is not a port number",
        ),
        (vec!["publish", "9000-9002:80-81", c2n], "different lengths"),
        (
            vec!["publish", "9002-9000:80", c2n],
            "ends before it starts",
        ),
        (vec!["publish", "9000:80/sctp", c2n], "unsupported protocol"),
        (
            vec!["publish", "300.1.1.1:9000:80", c2n],
            "is not an IP address",
        ),
        (
            vec!["publish", "192.0.2.1:9000:80", c2n],
            "is not an address of this host",
        ),
        (
            vec!["publish", "8080:80", c2n],
            "8080/tcp on 0.0.0.0 is already published by endpoint",
        ),
        (
            vec!["publish", "9100:80", "8080:81", c2n],
            "already published",
        ),
        (vec!["publish", "8085:80", c2n], "in use on the host"),
        (
            vec!["publish", "9000:80", "no-such-endpoint"],
            "no endpoint for no-such-endpoint",
        ),
        (
            vec!["unpublish", "9000:80", "no-such-endpoint"],
            "no endpoint for no-such-endpoint",
        ),
    ];
    for (args, message) in cases {
        let before = (
            t.agent.ok(&["ports", "--json"]),
            t.agent.state(),
            ports_dump(),
        );
        t.agent
            .cli(&args)
            .assert_refused(&format!("{args:?}"), message);
        let after = (
            t.agent.ok(&["ports", "--json"]),
            t.agent.state(),
            ports_dump(),
        );
        assert!(before == after, "{args:?} changed something");
    }
    // All or none: the valid 9100 was not published with the taken 8080.
    let ports: Value = t.agent.json(&["ports"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
    // A second publish on the same port is refused, naming the holder.
    let run = t.agent.cli(&["publish", "8080:80", c2.name()]);
    assert!(run.stderr.contains(c1.name()), "{}", run.stderr);
}

#[test]
fn conntrack_garbage_collection_empties_the_table() {
    require_root!();
    let t = Topology::new(&[
        "--ct-gc-interval",
        "1",
        // Short, but long enough that the flows are all still tracked
        // when listed, also under emulation (--kernel 6.1).
        "--ct-timeout",
        "time_wait=5,close=5,udp=5,udp_stream=5",
    ]);
    let c1 = t.container("c1", &["-p", "8080:80", "-p", "5353:53/udp"]);
    let _server = HttpServer::start(&c1, 80, "gc\n");
    let _echo = udp_echo(&c1, 53, "c1");
    for _ in 0..5 {
        assert!(t.fetch(&format!("http://{HOST_IP}:8080/")).is_some());
    }
    assert!(udp_query(&t.out, 0, HOST_IP, 5353, "q").is_some());
    let flows = t.agent.json(&["conntrack"]);
    assert_eq!(
        flows.as_array().map(Vec::len),
        Some(6),
        "5 TCP and 1 UDP flows: {flows}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stats = t.agent.json(&["stats"]);
        if stats["conntrack_entries"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "conntrack not collected: {stats}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        t.agent.log_shows("conntrack garbage collected"),
        "{}",
        t.agent.log()
    );
}

#[test]
fn host_binding_option_is_the_default_host_address() {
    require_root!();
    let t = Topology::new(&[
        "-o",
        "com.docker.network.bridge.host_binding_ipv4=10.250.0.1",
    ]);
    t.host.ip("addr add 10.250.0.11/24 dev up0");
    let c1 = t.container("c1", &[]);
    let _server = HttpServer::start(&c1, 80, "bound by default\n");
    let out = t.agent.ok(&["publish", "8080:80", c1.name()]);
    assert_eq!(out.trim(), format!("{HOST_IP}:8080->80/tcp"));
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("bound by default\n")
    );
    assert_eq!(
        t.fetch("http://10.250.0.11:8080/"),
        None,
        "not on the host's other address"
    );
    // An explicit address still wins, and unpublish finds the default one.
    t.agent.ok(&["publish", "0.0.0.0:8081:80", c1.name()]);
    assert_eq!(
        t.fetch("http://10.250.0.11:8081/").as_deref(),
        Some("bound by default\n")
    );
    assert!(
        t.agent
            .ok(&["unpublish", "8080:80", c1.name()])
            .contains("unpublished")
    );
}

#[test]
fn exhausted_masquerade_ports_are_logged_and_recovered() {
    require_root!();
    let t = Topology::new(&[
        "--masquerade-ports",
        "62000-62001",
        "--ct-timeout",
        "udp=2",
        "--ct-gc-interval",
        "1",
    ]);
    let c1 = t.container("c1", &[]);
    let _echo = udp_echo(&t.out, 9000, "out");
    for sport in [40000, 40001] {
        assert!(udp_query(&c1, sport, OUT_IP, 9000, "q").is_some());
    }
    assert_eq!(
        udp_query(&c1, 40002, OUT_IP, 9000, "q"),
        None,
        "two ports for this peer, both taken"
    );
    assert!(t.agent.drops("nat_exhausted") >= 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !t.agent.log().contains("masquerade ports exhausted") {
        assert!(std::time::Instant::now() < deadline, "{}", t.agent.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Once the two flows expire and are collected, their ports serve again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while udp_query(&c1, 40002, OUT_IP, 9000, "q").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "ports never freed:\n{}",
            t.agent.ok(&["conntrack"])
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
