// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Many networks on one agent: `netd network create/ls/inspect/rm`, the
//! isolation between networks (and the published ports that cross it),
//! per-network options, and namespaces on several networks.

use netd_tests::{
    agent::Agent,
    netns::Netns,
    require_root,
    topology::{HOST_IP, HttpServer, OUT_IP, Topology, fetch},
};
use serde_json::Value;

/// Whether `ns` gets an answer to one ping of `addr`.
fn pings(ns: &Netns, addr: &str) -> bool {
    ns.try_sh(&format!("ping -c1 -W1 -q {addr}"))
        .status
        .success()
}

/// The address of `ns`'s endpoint on `network`, from `netd ps`.
fn address_on(agent: &Agent, ns: &Netns, network: &str) -> String {
    agent
        .json(&["ps"])
        .as_array()
        .expect("ps")
        .iter()
        .find(|ep| ep["name"] == ns.name() && ep["network"] == network)
        .unwrap_or_else(|| panic!("{} has no endpoint on {network}", ns.name()))["ip"]
        .as_str()
        .expect("ip")
        .to_owned()
}

fn network_names(agent: &Agent) -> Vec<String> {
    agent
        .json(&["network", "ls"])
        .as_array()
        .expect("ls")
        .iter()
        .map(|n| n["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn networks_are_created_listed_inspected_and_removed() {
    require_root!();
    let t = Topology::new(&[]);
    let id = t.agent.ok(&[
        "network",
        "create",
        "backend",
        "--subnet",
        "10.89.0.0/24",
        "--label",
        "team=db",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "prints the ID: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    // Without --subnet: the next of Docker's pools that nothing here
    // overlaps (the default network has 172.30.0.0/16).
    t.agent.ok(&["network", "create", "front"]);

    let table = t.agent.ok(&["network", "ls"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(header, ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
    assert!(table.contains(&id[..12]), "{table}");
    assert_eq!(network_names(&t.agent), ["netd", "backend", "front"]);

    let inspect = t.agent.json(&["network", "inspect", "backend"]);
    let backend = &inspect[0];
    assert_eq!(backend["Name"], "backend");
    assert_eq!(backend["Id"], id);
    assert_eq!(backend["Driver"], "bridge");
    assert_eq!(backend["IPAM"]["Config"][0]["Subnet"], "10.89.0.0/24");
    assert_eq!(backend["IPAM"]["Config"][0]["Gateway"], "10.89.0.1");
    // As Docker shows a user-defined network: only the options given,
    // IPAM options an empty object.
    assert_eq!(
        backend["Options"],
        serde_json::json!({"com.docker.network.bridge.enable_icc": "false"})
    );
    assert_eq!(backend["IPAM"]["Options"], serde_json::json!({}));
    assert_eq!(backend["Labels"], serde_json::json!({"team": "db"}));
    // By a prefix of its ID too, as Docker takes it.
    assert_eq!(
        t.agent.json(&["network", "inspect", &id[..8]])[0]["Name"],
        "backend"
    );
    let all = t.agent.json(&["network", "inspect"]);
    assert_eq!(all.as_array().expect("all").len(), 3);
    assert_eq!(
        all[0]["IPAM"]["Options"],
        Value::Null,
        "the default network, as Docker's bridge"
    );
    let front_subnet = all[2]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .expect("subnet")
        .to_owned();
    assert_eq!(front_subnet, "172.17.0.0/16", "Docker's first pool");

    let bridge = format!("nd-{}", &id[..12]);
    assert!(t.host.ip("-br link show type bridge").contains(&bridge));

    let ns = t.container("c", &["--network", "backend"]);
    assert_eq!(address_on(&t.agent, &ns, "backend"), "10.89.0.2");

    // Bad input: one line each, nothing changed.
    let long = "n".repeat(65);
    let in_use = format!("has active endpoints ({})", ns.name());
    for (args, needle) in [
        (
            vec!["network", "create", "backend"],
            "network with name backend already exists",
        ),
        (
            vec!["network", "create", "netd"],
            "network with name netd already exists",
        ),
        (vec!["network", "create", ""], "it is empty"),
        (vec!["network", "create", &long], "at most 64 bytes"),
        (vec!["network", "create", "my net"], "use letters"),
        (
            vec!["network", "create", "x", "--subnet", "10.89.0.128/25"],
            "overlaps 10.89.0.0/24",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.250.0.0/16"],
            "overlaps 10.250.0.0/24",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.90.0.0/24",
                "--gateway",
                "10.91.0.1",
            ],
            "is not a host address of the subnet",
        ),
        (
            vec!["network", "create", "x", "--subnet", "bogus"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "x", "-o", "com.example.nope=1"],
            "unsupported network option",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "-o",
                "com.docker.network.driver.mtu=12",
            ],
            "invalid MTU",
        ),
        (vec!["network", "rm", "netd"], "is the default network"),
        (vec!["network", "rm", "backend"], &in_use),
        (vec!["network", "rm", "nope"], "no such network: nope"),
        (vec!["network", "inspect", "nope"], "no such network: nope"),
        (
            vec!["attach", ns.name(), "--network", "backend"],
            "already attached to network backend",
        ),
        (
            vec!["attach", ns.name(), "--network", "nope"],
            "no such network: nope",
        ),
        (
            vec!["publish", "8080:80", ns.name(), "--network", "front"],
            "no endpoint for",
        ),
    ] {
        t.agent.refuses(&args, needle);
    }

    t.agent.ok(&["detach", ns.name()]);
    assert_eq!(
        t.agent.ok(&["network", "rm", "backend", "front"]),
        "backend\nfront\n"
    );
    assert_eq!(network_names(&t.agent), ["netd"]);
    assert!(
        !t.host.ip("-br link show type bridge").contains(&bridge),
        "its bridge went with it"
    );
    // Removing twice says so, and changes nothing.
    t.agent
        .refuses(&["network", "rm", "backend"], "no such network: backend");
}

#[test]
fn networks_are_isolated_and_meet_through_published_ports() {
    require_root!();
    let mut t = Topology::new(&[]);
    t.agent
        .ok(&["network", "create", "backend", "--subnet", "10.89.0.0/24"]);
    t.agent.ok(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.88.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "-o",
        "com.docker.network.driver.mtu=1400",
    ]);
    t.agent.ok(&[
        "network",
        "create",
        "sealed",
        "--subnet",
        "10.87.0.0/24",
        "--internal",
    ]);

    let a = t.container("a", &[]);
    let b = t.container("b", &["--network", "backend"]);
    let a_ip = address_on(&t.agent, &a, "netd");
    let b_ip = address_on(&t.agent, &b, "backend");
    let _web = HttpServer::start(&b, 80, "backend page");
    let _out = HttpServer::start(&t.out, 8000, "outside page");
    t.agent.ok(&["publish", "8080:80", b.name()]);

    // Each reaches its own gateway and the outside (masqueraded).
    assert!(pings(&a, "172.30.0.1"));
    assert!(pings(&b, "10.89.0.1"));
    assert_eq!(
        fetch(&b, &format!("http://{OUT_IP}:8000/")).as_deref(),
        Some("outside page")
    );

    // Not each other's addresses: dropped, and counted as isolation.
    let isolated = t.agent.drops("isolated");
    assert!(!pings(&a, &b_ip), "the default network reached backend");
    assert!(!pings(&b, &a_ip), "backend reached the default network");
    assert_eq!(fetch(&a, &format!("http://{b_ip}/")), None);
    assert!(t.agent.drops("isolated") >= isolated + 3);

    // Published ports cross networks: from outside, and from another
    // network through the host's address (hairpin).
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("backend page")
    );
    assert_eq!(
        fetch(&a, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("backend page")
    );

    // Per network: ICC off and the MTU on `quiet`, no outside on `sealed`.
    let q1 = t.container("q1", &["--network", "quiet"]);
    let q2 = t.container("q2", &["--network", "quiet"]);
    assert!(q1.ip("link show eth0").contains("mtu 1400"));
    assert!(a.ip("link show eth0").contains("mtu 1500"));
    let icc = t.agent.drops("icc_denied");
    assert!(!pings(&q1, &address_on(&t.agent, &q2, "quiet")));
    assert!(t.agent.drops("icc_denied") > icc);
    assert_eq!(
        fetch(&q1, &format!("http://{OUT_IP}:8000/")).as_deref(),
        Some("outside page")
    );
    let s = t.container("s", &["--network", "sealed"]);
    let internal = t.agent.drops("internal_network");
    assert_eq!(fetch(&s, &format!("http://{OUT_IP}:8000/")), None);
    assert!(t.agent.drops("internal_network") > internal);
    // ICC stays on elsewhere: the default network's containers meet.
    let a2 = t.container("a2", &[]);
    assert!(pings(&a2, &a_ip));

    // A restarted agent keeps every network, and the datapath all along.
    t.agent.kill9();
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("backend page")
    );
    t.agent.launch();
    assert_eq!(
        network_names(&t.agent),
        ["netd", "backend", "quiet", "sealed"]
    );
    assert_eq!(
        fetch(&a, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("backend page")
    );
    assert!(!pings(&a, &b_ip));

    // `netd down` removes every network's bridge.
    let bridges = t.host.ip("-br link show type bridge");
    assert_eq!(bridges.lines().count(), 4, "{bridges}");
    t.agent.ok(&["down"]);
    assert_eq!(t.host.ip("-br link show type bridge").trim(), "");
}

#[test]
fn a_namespace_on_two_networks_has_eth0_eth1_and_one_default_route() {
    require_root!();
    let t = Topology::new(&[]);
    t.agent
        .ok(&["network", "create", "backend", "--subnet", "10.89.0.0/24"]);
    let peer = t.container("p", &["--network", "backend"]);
    let m = t.container("m", &[]);
    let attached = t.agent.json(&["attach", m.name(), "--network", "backend"]);
    assert_eq!(attached["ifname"], "eth1");
    assert_eq!(attached["network"], "backend");
    assert_eq!(attached["ip"], "10.89.0.3");

    let routes = m.ip("route show default");
    assert_eq!(routes.lines().count(), 1, "one default route: {routes}");
    assert!(routes.contains("via 172.30.0.1 dev eth0"), "{routes}");
    assert!(m.ip("-4 addr show eth1").contains("10.89.0.3/24"));
    // eth1's address answers by eth1: a rule of its own for it.
    let rules = m.ip("-4 rule show");
    assert!(rules.contains("from 10.89.0.3 lookup"), "{rules}");
    assert!(pings(&m, "10.89.0.2"), "m reaches backend over eth1");
    assert!(pings(&peer, "10.89.0.3"));

    let ps = t.agent.ok(&["ps"]);
    assert!(
        ps.lines().next().expect("header").contains("NETWORK"),
        "{ps}"
    );
    assert_eq!(
        ps.lines().filter(|l| l.contains(m.name())).count(),
        2,
        "{ps}"
    );

    // Publishing: the default network's endpoint unless one is named.
    let _web = HttpServer::start(&m, 80, "m's page");
    let port = t.agent.json(&["publish", "8080:80", m.name()]);
    assert_eq!(port[0]["network"], "netd");
    let port = t
        .agent
        .json(&["publish", "8081:80", m.name(), "--network", "backend"]);
    assert_eq!(port[0]["network"], "backend");
    assert_eq!(port[0]["container_ip"], "10.89.0.3");
    for host_port in [8080, 8081] {
        assert_eq!(
            t.fetch(&format!("http://{HOST_IP}:{host_port}/"))
                .as_deref(),
            Some("m's page"),
            "port {host_port}: the reply leaves by the interface it came in by"
        );
    }

    // Detaching from one network leaves the other.
    let gone = t.agent.json(&["detach", m.name(), "--network", "backend"]);
    assert_eq!(gone.as_array().expect("detached").len(), 1);
    assert!(!m.ip("-br link").contains("eth1"));
    assert!(m.ip("-br link").contains("eth0"));
    assert!(!m.ip("-4 rule show").contains("10.89.0.3"), "its rule went");
    assert_eq!(t.fetch(&format!("http://{HOST_IP}:8081/")), None);
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("m's page")
    );
    // Again, and this time the first network goes first: the default
    // route moves to the network that stays, as Docker moves it.
    t.agent.ok(&["attach", m.name(), "--network", "backend"]);
    t.agent.ok(&["detach", m.name(), "--network", "netd"]);
    let routes = m.ip("route show default");
    assert!(routes.contains("via 10.89.0.1 dev eth1"), "{routes}");
    assert!(pings(&m, OUT_IP), "out through backend's gateway");
    t.agent.ok(&["attach", m.name()]);
    assert!(m.ip("-br link").contains("eth0"), "eth0 is free again");
    // Every endpoint of the namespace, then nothing.
    let gone = t.agent.json(&["detach", m.name()]);
    assert_eq!(gone.as_array().expect("detached").len(), 2);
    assert_eq!(t.agent.json(&["detach", m.name()]), serde_json::json!([]));
}

/// The scale of the many-networks issue, as a function rather than a
/// figure (the bench times it): 1,000 networks on one agent, each with its
/// bridge; a container on the last one serves a published port to the
/// outside and, through the host's address, to a container on the first;
/// the two cannot reach each other's addresses; removing the 999 in one
/// command leaves the default network as it was.
#[test]
fn a_thousand_networks_on_one_agent() {
    require_root!();
    let t = Topology::new(&[]);
    let names: Vec<String> = (1..1000).map(|n| format!("n{n}")).collect();
    for (n, name) in names.iter().enumerate() {
        let subnet = format!("10.{}.{}.0/24", 100 + n / 256, n % 256);
        t.agent
            .ok(&["network", "create", name, "--subnet", &subnet]);
    }
    assert_eq!(network_names(&t.agent).len(), 1000);
    let bridges = || {
        t.host
            .sh("ip -o link show type bridge")
            .lines()
            .filter(|line| line.contains(": nd-"))
            .count()
    };
    assert_eq!(bridges(), 999, "one bridge per network");

    let first = t.container("first", &["--network", "n1"]);
    let last = t.container("last", &["--network", "n999", "-p", "8080:80"]);
    let last_ip = address_on(&t.agent, &last, "n999");
    assert!(last_ip.starts_with("10.103.230."), "{last_ip}");
    let _web = HttpServer::start(&last, 80, "page 999");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("page 999")
    );
    assert_eq!(
        fetch(&first, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("page 999"),
        "hairpin from the first network to the last"
    );
    let isolated = t.agent.drops("isolated");
    assert!(!pings(&first, &last_ip), "n1 reached n999");
    assert!(t.agent.drops("isolated") > isolated);

    t.agent.ok(&["detach", first.name()]);
    t.agent.ok(&["detach", last.name()]);
    let mut rm = vec!["network", "rm"];
    rm.extend(names.iter().map(String::as_str));
    t.agent.ok(&rm);
    assert_eq!(network_names(&t.agent), ["netd"]);
    assert_eq!(bridges(), 0, "every bridge of theirs removed");
    let c = t.container("c", &["-p", "8081:80"]);
    let _web = HttpServer::start(&c, 80, "default page");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8081/")).as_deref(),
        Some("default page")
    );
}
