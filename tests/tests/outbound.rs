// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Containers reaching out, with real traffic in namespaces: masquerade,
//! ICMP errors (traceroute, path MTU discovery, port unreachable), hairpin,
//! the network's options, anti-spoofing, conntrack hygiene and pressure.

use std::{
    thread,
    time::{Duration, Instant},
};

use netd_tests::{
    netns::Netns,
    require_root,
    topology::{
        HOST_IP, HttpServer, OUT_IP, Scratch, Topology, byte_counter, download_size, fetch,
        send_bytes, udp_echo, udp_query,
    },
};
use serde_json::Value;

fn assert_no_netfilter(t: &Topology) {
    assert!(
        t.host.sh("nft list ruleset").trim().is_empty(),
        "no nftables rule"
    );
    for save in ["iptables-nft-save", "iptables-legacy-save"] {
        assert!(
            !t.host.sh(save).lines().any(|l| l.starts_with('-')),
            "{save}: no rule"
        );
    }
}

/// The port of the `ADDR:PORT` a UDP echo reply names as its client.
fn client_of(reply: &str) -> (String, u16) {
    let mut parts = reply.split(':');
    let _tag = parts.next();
    let addr = parts.next().expect("address").to_owned();
    let port = parts.next().expect("port").parse().expect("port number");
    (addr, port)
}

#[test]
fn masquerade_reaches_the_outside_as_the_uplink() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let server = HttpServer::start(&t.out, 80, "outside\n");
    assert_eq!(
        fetch(&c1, &format!("http://{OUT_IP}/")).as_deref(),
        Some("outside\n")
    );
    assert!(
        server.log().starts_with(HOST_IP),
        "the server sees the uplink's address: {}",
        server.log()
    );

    let _echo = udp_echo(&t.out, 9000, "out");
    let (reply, from) = udp_query(&c1, 40000, OUT_IP, 9000, "q").expect("a UDP reply");
    let (addr, port) = client_of(&reply);
    assert_eq!(addr, HOST_IP);
    assert!((61000..=65535).contains(&port), "a masquerade port: {port}");
    assert_eq!(
        from,
        format!("{OUT_IP}:9000"),
        "the reply comes from the server as the container addressed it"
    );

    c1.sh(&format!("ping -c 2 -i 0.2 -W 2 {OUT_IP}"));
    let flows = t.agent.json(&["conntrack"]);
    let flows = flows.as_array().expect("flows");
    for proto in ["tcp", "udp", "icmp"] {
        let flow = flows
            .iter()
            .find(|f| f["proto"] == proto)
            .unwrap_or_else(|| panic!("a {proto} flow: {flows:?}"));
        assert!(
            flow["src"]
                .as_str()
                .expect("src")
                .starts_with("172.30.0.2:")
        );
        assert!(
            flow["translated"]
                .as_str()
                .expect("translated")
                .starts_with(&format!("{HOST_IP}:6")),
            "{flow}"
        );
    }
    assert_no_netfilter(&t);
}

#[test]
fn masquerade_address_and_port_range_are_configurable() {
    require_root!();
    let t = Topology::new(&[
        "--masquerade-address",
        "10.250.0.11",
        "--masquerade-ports",
        "62000-62009",
    ]);
    t.host.ip("addr add 10.250.0.11/24 dev up0");
    let c1 = t.container("c1", &[]);
    let _echo = udp_echo(&t.out, 9000, "out");
    let (reply, _) = udp_query(&c1, 40000, OUT_IP, 9000, "q").expect("a UDP reply");
    let (addr, port) = client_of(&reply);
    assert_eq!(addr, "10.250.0.11");
    assert!((62000..=62009).contains(&port), "{port}");
}

#[test]
fn traceroute_and_path_mtu_discovery_work_through_netd() {
    require_root!();
    let t = Topology::new(&[]);
    let far = t.far();
    let c1 = t.container("c1", &[]);
    c1.sh("ping -c 1 -W 2 10.251.0.2");
    // Two hops away: the host, then `out`, where the TTL runs out.
    let out = c1.try_sh("ping -c 1 -W 2 -t 2 10.251.0.2");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("From {OUT_IP}")) && text.contains("Time to live exceeded"),
        "{text}"
    );
    // 1478-byte packets with DF set do not fit the 1400-byte link behind
    // `out`: its "fragmentation needed" reaches the container, whose
    // kernel learns the path MTU.
    let out = c1.try_sh("ping -c 1 -W 2 -M do -s 1450 10.251.0.2");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Frag needed") && text.contains("mtu = 1400"),
        "{text}"
    );
    let route = c1.ip("route get 10.251.0.2");
    assert!(
        route.contains("mtu 1400"),
        "the container cached the path MTU: {route}"
    );
    // And TCP adapts: a large page crosses the small link.
    let body = "x".repeat(100_000);
    let _server = HttpServer::start(&far, 80, &body);
    assert_eq!(
        fetch(&c1, "http://10.251.0.2/").map(|b| b.len()),
        Some(100_000)
    );
}

#[test]
fn port_unreachable_reaches_the_sockets_both_ways() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "5353:53/udp"]);
    // A connected UDP socket learns of "port unreachable" as ECONNREFUSED:
    // the error must arrive translated back to the socket's own addresses.
    let probe = |ns: &Netns, addr: &str, port: u16| {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\ns.connect(('{addr}',{port}))\ns.send(b'x')\ntry:\n s.recv(100); print('answered')\nexcept ConnectionRefusedError:\n print('refused')\nexcept socket.timeout:\n print('timeout')\n"
        );
        ns.sh(&format!("python3 -c \"{script}\"")).trim().to_owned()
    };
    // Outbound from a masqueraded flow: `out` has nothing on port 9.
    assert_eq!(
        probe(&c1, OUT_IP, 9),
        "refused",
        "the outside's error reaches the container"
    );
    // Inbound through a published port: the container has nothing on 53.
    assert_eq!(
        probe(&t.out, HOST_IP, 5353),
        "refused",
        "the container's error reaches the client"
    );
}

#[test]
fn hairpin_to_own_and_other_published_ports() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let c2 = t.container("c2", &["-p", "8081:80"]);
    let _s1 = HttpServer::start(&c1, 80, "c1\n");
    let s2 = HttpServer::start(&c2, 80, "c2\n");
    assert_eq!(
        fetch(&c1, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("c1\n"),
        "its own port"
    );
    assert_eq!(
        fetch(&c1, &format!("http://{HOST_IP}:8081/")).as_deref(),
        Some("c2\n"),
        "another container's"
    );
    assert_eq!(
        fetch(&c1, "http://172.30.0.1:8081/").as_deref(),
        Some("c2\n"),
        "through the gateway's address"
    );
    assert!(
        s2.log().starts_with("172.30.0.1"),
        "hairpin comes from the gateway: {}",
        s2.log()
    );
    assert_no_netfilter(&t);
}

#[test]
fn icc_disabled_separates_containers_but_not_published_ports() {
    require_root!();
    let t = Topology::new(&["-o", "com.docker.network.bridge.enable_icc=false"]);
    let c1 = t.container("c1", &[]);
    let c2 = t.container("c2", &["-p", "8081:80"]);
    let _s2 = HttpServer::start(&c2, 80, "c2\n");
    let inspect = t.agent.json(&["network", "inspect"]);
    assert_eq!(
        inspect[0]["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );
    assert!(
        !c1.try_sh("ping -c 1 -W 1 172.30.0.3").status.success(),
        "no ICMP between containers"
    );
    assert_eq!(
        fetch(&c1, "http://172.30.0.3/"),
        None,
        "no TCP between containers"
    );
    assert!(t.agent.drops("icc_denied") >= 1);
    c1.sh("ping -c 1 -W 2 172.30.0.1");
    assert_eq!(
        fetch(&c1, &format!("http://{HOST_IP}:8081/")).as_deref(),
        Some("c2\n"),
        "published ports still work"
    );
    let _out = HttpServer::start(&t.out, 80, "outside\n");
    assert_eq!(
        fetch(&c1, &format!("http://{OUT_IP}/")).as_deref(),
        Some("outside\n")
    );
}

#[test]
fn internal_network_has_no_outside() {
    require_root!();
    let t = Topology::new(&["--internal"]);
    let c1 = t.container("c1", &[]);
    let c2 = t.container("c2", &[]);
    let inspect = t.agent.json(&["network", "inspect"]);
    assert_eq!(inspect[0]["Internal"], true);
    assert!(
        !c1.try_sh(&format!("ping -c 1 -W 1 {OUT_IP}"))
            .status
            .success()
    );
    assert!(t.agent.drops("internal_network") >= 1);
    t.out.ip("route add 172.30.0.0/16 via 10.250.0.1");
    let _s = HttpServer::start(&c1, 80, "inside\n");
    assert_eq!(t.fetch("http://172.30.0.2/"), None, "nothing from outside");
    c2.sh("ping -c 1 -W 2 172.30.0.2");
    let run = t.agent.cli(&["publish", "8080:80", c1.name()]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("the network is internal"),
        "{}",
        run.stderr
    );
}

#[test]
fn masquerade_disabled_routes_containers_as_they_are() {
    require_root!();
    let t = Topology::new(&["-o", "com.docker.network.bridge.enable_ip_masquerade=false"]);
    let c1 = t.container("c1", &[]);
    // The outside routes the network back through the host, as it must
    // without masquerade.
    t.out.ip("route add 172.30.0.0/16 via 10.250.0.1");
    let server = HttpServer::start(&t.out, 80, "outside\n");
    assert_eq!(
        fetch(&c1, &format!("http://{OUT_IP}/")).as_deref(),
        Some("outside\n")
    );
    assert!(
        server.log().starts_with("172.30.0.2"),
        "no masquerade: {}",
        server.log()
    );
    // Only replies get in: the container's own services stay unreachable.
    let _s = HttpServer::start(&c1, 80, "inside\n");
    assert_eq!(t.fetch("http://172.30.0.2/"), None);
}

#[test]
fn spoofed_sources_from_a_container_are_dropped() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let _c2 = t.container("c2", &[]);
    let _echo = udp_echo(&t.out, 9000, "out");
    // Another container's address, added inside c1.
    c1.ip("addr add 172.30.0.3/32 dev eth0");
    let spoofed = c1.sh(&format!(
        "python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('172.30.0.3',0))\ns.settimeout(1)\ns.sendto(b'x',('{OUT_IP}',9000))\ntry:\n s.recv(100); print('answered')\nexcept socket.timeout:\n print('timeout')\n\""
    ));
    assert_eq!(spoofed.trim(), "timeout");
    assert!(t.agent.drops("spoofed") >= 1);
    // Another MAC: nothing gets through, not even to the gateway.
    let before = t.agent.drops("spoofed");
    c1.ip("link set eth0 address 02:42:de:ad:be:ef");
    assert!(!c1.try_sh("ping -c 1 -W 1 172.30.0.1").status.success());
    assert!(t.agent.drops("spoofed") > before);
}

#[test]
fn a_thousand_connections_leave_conntrack_at_its_baseline() {
    require_root!();
    let t = Topology::new(&[
        "--ct-gc-interval",
        "1",
        // Short, but long enough that the last connections are still
        // tracked when counted, also under emulation (--kernel 6.1).
        "--ct-timeout",
        "time_wait=5,close=5,fin_wait=5,udp=5,udp_stream=5",
    ]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let _server = HttpServer::start(&t.out, 80, "x");
    let _inner = HttpServer::start(&c1, 80, "y");
    let baseline = t.agent.json(&["stats"])["conntrack_entries"].as_u64();
    assert_eq!(baseline, Some(0));
    // 500 masqueraded connections out, 500 through the published port in.
    let client = "import socket\nimport sys\nfor i in range(500):\n s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n while s.recv(4096): pass\n s.close()\n";
    c1.sh(&format!("python3 -c \"{client}\" {OUT_IP} 80"));
    t.out.sh(&format!("python3 -c \"{client}\" {HOST_IP} 8080"));
    let stats = t.agent.json(&["stats"]);
    assert!(
        stats["conntrack_entries"].as_u64() > Some(100),
        "{}",
        stats["conntrack_entries"]
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.agent.json(&["stats"])["conntrack_entries"] != 0 {
        assert!(
            Instant::now() < deadline,
            "conntrack did not return to its baseline"
        );
        thread::sleep(Duration::from_millis(250));
    }
    let flows: Value = t.agent.json(&["conntrack"]);
    assert_eq!(flows, serde_json::json!([]));
}

#[test]
fn a_full_conntrack_refuses_new_flows_and_keeps_established_ones() {
    require_root!();
    let t = Topology::new(&["--ct-max", "40"]);
    let c1 = t.container("c1", &[]);
    // An established connection that echoes, kept open throughout.
    let echo = "import socket\nl=socket.socket(); l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); l.bind(('0.0.0.0',7000)); l.listen(8)\nwhile True:\n c,_=l.accept()\n while True:\n  d=c.recv(100)\n  if not d: break\n  c.sendall(d)\n";
    let _server = t.out.spawn(&format!("python3 -c \"{echo}\""));
    netd_tests::topology::wait_listening(&t.out, 7000, false);
    let scratch = Scratch::new();
    let out_file = scratch.0.join("client-out");
    let client = format!(
        "import socket,time\ns=socket.create_connection(('{OUT_IP}',7000),timeout=5)\nf=open('{}','w')\nfor i in range(60):\n s.sendall(b'ping%d' % i); f.write(s.recv(100).decode()+chr(10)); f.flush(); time.sleep(0.1)\n",
        out_file.display()
    );
    let mut long_lived = c1.spawn(&format!("python3 -c \"{client}\""));
    thread::sleep(Duration::from_millis(500));
    // Fill the table with unreplied UDP flows (a port nobody answers on).
    c1.sh(&format!(
        "python3 -c \"import socket\nfor p in range(40000,40060):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',p)); s.sendto(b'x',('{OUT_IP}',9)); s.close()\n\""
    ));
    assert!(
        t.agent.drops("ct_create") > 0,
        "the table filled up and refused flows"
    );
    // The agent makes room by dropping unreplied flows, never the
    // established one: new flows work again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let _web = HttpServer::start(&t.out, 80, "room\n");
    while fetch(&c1, &format!("http://{OUT_IP}/")).as_deref() != Some("room\n") {
        assert!(Instant::now() < deadline, "no room made");
        thread::sleep(Duration::from_millis(200));
    }
    assert!(t.agent.log_shows("conntrack full"), "{}", t.agent.log());
    let status = long_lived
        .wait_timeout(Duration::from_secs(15))
        .expect("the client finished");
    assert!(status.success(), "the established connection never broke");
    let echoed = std::fs::read_to_string(&out_file).expect("client output");
    assert_eq!(echoed.lines().count(), 60, "every ping echoed");
    assert!(
        echoed
            .lines()
            .enumerate()
            .all(|(i, l)| l == format!("ping{i}")),
        "in order, intact"
    );
}

/// Bulk streams, whose segments are far larger than the MTU (GSO/GRO), in
/// every translated direction: the container uploading through masquerade,
/// the outside downloading from a published port (reverse NAT), the
/// container downloading (masquerade replies). Every byte arrives.
#[test]
fn bulk_tcp_through_masquerade_and_reverse_nat() {
    require_root!();
    const SIZE: usize = 32 << 20;
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &[]);
    let _counter = byte_counter(&t.out, 7000);
    assert_eq!(
        send_bytes(&c1, OUT_IP, 7000, SIZE),
        Some(SIZE as u64),
        "upload through masquerade"
    );

    let body = "x".repeat(SIZE);
    let _inside = HttpServer::start(&c1, 80, &body);
    t.agent.ok(&["publish", "8080:80", c1.name()]);
    assert_eq!(
        download_size(&t.out, &format!("http://{HOST_IP}:8080/")),
        Some(SIZE as u64),
        "download from the published port"
    );

    let _outside = HttpServer::start(&t.out, 80, &body);
    assert_eq!(
        download_size(&c1, &format!("http://{OUT_IP}/")),
        Some(SIZE as u64),
        "download through masquerade"
    );
    assert_eq!(t.agent.drops("fib_lookup"), 0);
}

/// A container attached after another was detached gets its address (the
/// lowest free one) and may reuse its 5-tuples: a UDP flow of the old
/// container, still within its timeout, must not steer the newcomer's
/// replies to the old, deleted veth. Detach takes the flows with it.
#[test]
fn a_reused_address_does_not_inherit_the_old_containers_flows() {
    require_root!();
    let t = Topology::new(&[]);
    let _echo = udp_echo(&t.out, 9000, "out");
    let first = t.container("c1", &[]);
    assert!(udp_query(&first, 40000, OUT_IP, 9000, "old").is_some());
    let ip = |ns: &Netns| {
        t.agent
            .json(&["ps"])
            .as_array()
            .expect("ps")
            .iter()
            .find(|e| e["name"] == ns.name())
            .expect("attached")["ip"]
            .clone()
    };
    let old_ip = ip(&first);
    t.agent.ok(&["detach", first.name()]);
    let second = t.container("c2", &[]);
    assert_eq!(ip(&second), old_ip, "the address is reused");
    let reply = udp_query(&second, 40000, OUT_IP, 9000, "new").map(|(reply, _)| reply);
    assert!(
        reply
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("out:{HOST_IP}:")) && r.ends_with(":new")),
        "{reply:?}"
    );
}

/// A UDP server in `ns` on `port` that sends every datagram (up to 64 KiB)
/// back as it came.
fn big_udp_echo(ns: &Netns, port: u16) -> netd_tests::netns::Process {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nwhile True:\n d,a=s.recvfrom(65535)\n s.sendto(d,a)\n"
    );
    let process = ns.spawn(&format!("python3 -c \"{script}\""));
    netd_tests::topology::wait_listening(ns, port, true);
    process
}

/// Sends a `size`-byte datagram from `ns` to `addr:port` and returns the
/// length of the answer, whether it is the datagram sent, and whom it came
/// from; `None` after 3 s without one.
fn big_udp_exchange(
    ns: &Netns,
    addr: &str,
    port: u16,
    size: usize,
) -> Option<(usize, bool, String)> {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\nd=bytes(i*7%251 for i in range({size}))\ns.sendto(d,('{addr}',{port}))\ntry:\n r,a=s.recvfrom(65535); print(len(r), r==d, a[0]+':'+str(a[1]))\nexcept socket.timeout:\n print('timeout')\n"
    );
    let out = ns.sh(&format!("python3 -c \"{script}\""));
    let mut words = out.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(len), Some(same), Some(from)) => {
            Some((len.parse().ok()?, same == "True", from.to_owned()))
        }
        _ => None,
    }
}

/// Datagrams larger than the links' MTU (1500), so that they cross netd as
/// IPv4 fragments, both ways: to a published port and back, and from a
/// container to the outside (masquerade) and back, UDP and ping.
#[test]
fn datagrams_larger_than_the_mtu_cross_netd_as_fragments() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "5353:53/udp"]);
    let _inside = big_udp_echo(&c1, 53);
    let _outside = big_udp_echo(&t.out, 9001);

    let published = big_udp_exchange(&t.out, HOST_IP, 5353, 4000);
    assert_eq!(
        published,
        Some((4000, true, format!("{HOST_IP}:5353"))),
        "4,000 bytes to the published port, and back from where they went"
    );
    let masqueraded = big_udp_exchange(&c1, OUT_IP, 9001, 4000);
    assert_eq!(
        masqueraded,
        Some((4000, true, format!("{OUT_IP}:9001"))),
        "4,000 bytes out through masquerade, and back"
    );
    c1.sh(&format!("ping -c 2 -i 0.2 -W 2 -s 3000 {OUT_IP}"));
    assert_no_netfilter(&t);
}
