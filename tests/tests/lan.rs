// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! LAN networks: macvlan and ipvlan containers on a "LAN" namespace that
//! holds a router, the host's parent interfaces wired to it; a VLAN
//! sub-interface; anti-spoofing; host access through the shim; the host
//! network; bad input; and `netd network rm` removing exactly what netd
//! made.

use netd_tests::{
    agent::Agent,
    netns::{Netns, veth},
    require_root,
    topology::{Topology, mac_of},
};
use serde_json::Value;

const ROUTER: &str = "192.168.77.1";
/// The host's own address on the LAN (on `lan0`).
const HOST_ON_LAN: &str = "192.168.77.2";

/// A LAN namespace with a router on `eth0` (192.168.77.1/24), wired to
/// the host's `lan0` (192.168.77.2/24).
fn lan(t: &Topology) -> Netns {
    let lan = Netns::new("lan");
    veth(&t.host, "lan0", &lan, "eth0");
    lan.ip(&format!("addr add {ROUTER}/24 dev eth0"));
    t.host.ip(&format!("addr add {HOST_ON_LAN}/24 dev lan0"));
    lan
}

/// Whether this kernel can make `kind` devices (`ipvlan`, `vlan`): the
/// kernel CI's host runs has neither built; the 6.1 VM (Debian's kernel,
/// `cargo xtask test` runs this file there) has both. Says so when not.
fn kernel_has(kind: &str) -> bool {
    let scratch = Netns::new("probe");
    scratch.ip("link add p0 type veth peer name p1");
    let args = match kind {
        "vlan" => "link add link p0 name p0.7 type vlan id 7".to_owned(),
        other => format!("link add link p0 name p2 type {other}"),
    };
    let made = scratch.try_sh(&format!("ip {args}")).status.success();
    if !made {
        eprintln!("test skipped, this kernel has no {kind} devices (the 6.1 VM runs it)");
    }
    made
}

fn pings(ns: &Netns, addr: &str) -> bool {
    ns.try_sh(&format!("ping -c1 -W1 -q {addr}"))
        .status
        .success()
}

/// The endpoint `name` as `netd ps` shows it.
fn endpoint(agent: &Agent, name: &str) -> Value {
    agent
        .json(&["ps"])
        .as_array()
        .expect("ps")
        .iter()
        .find(|ep| ep["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"))
        .clone()
}

/// The MAC `addr` has in `ns`'s neighbour table, if any.
fn neighbour(ns: &Netns, addr: &str) -> Option<String> {
    let out = ns.sh(&format!("ip neigh show {addr}"));
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "lladdr")
        .map(|i| words[i + 1].to_owned())
}

fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.try_sh(&format!("ip link show {name}")).status.success()
}

/// What the LAN endpoint `name` sent and had dropped (`netd stats`).
fn counters(agent: &Agent, name: &str) -> (u64, u64) {
    let stats = agent.json(&["stats"]);
    let ep = stats["endpoints"]
        .as_array()
        .expect("LAN endpoints")
        .iter()
        .find(|ep| ep["name"] == name)
        .unwrap_or_else(|| panic!("no counters for {name}: {stats}"))
        .clone();
    (
        ep["packets"].as_u64().expect("packets"),
        ep["dropped"].as_u64().expect("dropped"),
    )
}

fn create_macvlan(t: &Topology, name: &str, extra: &[&str]) {
    let mut args = vec![
        "network",
        "create",
        name,
        "--driver",
        "macvlan",
        "-o",
        "parent=lan0",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        ROUTER,
    ];
    args.extend_from_slice(extra);
    t.agent.ok(&args);
}

#[test]
fn macvlan_containers_are_hosts_of_the_lan_with_their_own_macs() {
    require_root!();
    let t = Topology::new(&[]);
    let lan = lan(&t);
    create_macvlan(&t, "lan", &[]);
    let inspect = &t.agent.json(&["network", "inspect", "lan"])[0];
    assert_eq!(inspect["Driver"], "macvlan");
    assert_eq!(inspect["Options"]["parent"], "lan0");
    assert_eq!(inspect["IPAM"]["Config"][0]["Gateway"], ROUTER);

    let a = t.container("a", &["--network", "lan"]);
    let b = t.container("b", &["--network", "lan"]);
    // The router's address and the host's own on the parent are skipped.
    assert_eq!(endpoint(&t.agent, a.name())["ip"], "192.168.77.3");
    assert_eq!(endpoint(&t.agent, b.name())["ip"], "192.168.77.4");
    assert!(pings(&a, ROUTER), "a reaches the LAN's router");
    assert!(pings(&b, ROUTER), "b reaches the LAN's router");
    assert!(pings(&a, "192.168.77.4"), "a reaches b over the parent");
    // Each is a host of the LAN with its own MAC, as the router sees it.
    let (mac_a, mac_b) = (mac_of(&a, "eth0"), mac_of(&b, "eth0"));
    assert_ne!(mac_a, mac_b);
    assert_ne!(mac_a, mac_of(&t.host, "lan0"));
    assert_eq!(neighbour(&lan, "192.168.77.3"), Some(mac_a.clone()));
    assert_eq!(neighbour(&lan, "192.168.77.4"), Some(mac_b));
    assert_eq!(endpoint(&t.agent, a.name())["mac"], mac_a.as_str());
    // The default route is the LAN's gateway.
    assert!(a.sh("ip route show default").contains(ROUTER));
    let (packets, dropped) = counters(&t.agent, a.name());
    assert!(
        packets > 0 && dropped == 0,
        "{packets} sent, {dropped} dropped"
    );

    // Nothing to publish on the LAN: refused, saying why.
    t.agent
        .refuses(&["publish", "8080:80", a.name()], "nothing is published");
    let c = Netns::new("c");
    t.agent.refuses(
        &["attach", c.name(), "--network", "lan", "-p", "8080:80"],
        "nothing is published",
    );
    assert!(!link_exists(&c, "eth0"), "a refused attach leaves nothing");

    // `network rm` removes exactly what netd made: not the parent.
    t.agent.ok(&["detach", a.name()]);
    t.agent.ok(&["detach", b.name()]);
    t.agent.ok(&["detach", a.name()]);
    assert!(!link_exists(&a, "eth0"), "detach removes the device");
    t.agent.ok(&["network", "rm", "lan"]);
    assert!(link_exists(&t.host, "lan0"), "the parent is not netd's");
}

#[test]
fn spoofed_sources_on_a_lan_are_dropped_counted_and_stay_dropped_across_a_restart() {
    require_root!();
    let mut t = Topology::new(&[]);
    let lan = lan(&t);
    create_macvlan(&t, "lan", &["--internal"]);
    let a = t.container("a", &["--network", "lan"]);
    let _b = t.container("b", &["--network", "lan"]);
    assert!(pings(&a, "192.168.77.4"), "the network's containers meet");

    // Internal: nothing but the network's own containers.
    let before = t.agent.drops("internal_network");
    assert!(!pings(&a, ROUTER), "internal: the router is out of reach");
    assert!(t.agent.drops("internal_network") > before);

    let spoofed = t.agent.drops("spoofed");
    let (_, dropped) = counters(&t.agent, a.name());
    // Another address than its own...
    a.ip("addr add 192.168.77.99/24 dev eth0");
    assert!(
        !pings(&a, "-I 192.168.77.99 192.168.77.4"),
        "a forged source reaches no one"
    );
    a.ip("addr del 192.168.77.99/24 dev eth0");
    let after_ip = t.agent.drops("spoofed");
    assert!(after_ip > spoofed, "counted as spoofed");
    // ...and another MAC.
    a.ip("link set eth0 address 02:00:00:00:00:99");
    assert!(!pings(&a, "192.168.77.4"), "a forged MAC reaches no one");
    assert!(t.agent.drops("spoofed") > after_ip, "counted as spoofed");
    assert!(counters(&t.agent, a.name()).1 > dropped, "and per endpoint");

    // The protection hangs on a pinned link: a restarted agent adopts it.
    // Counted by the program itself (a frame b's stale cache would make
    // fail anyway proves nothing): the pinned counters grow while the
    // agent is down, and after it is back.
    let down = t.agent.drops("spoofed");
    t.agent.kill9();
    assert!(!pings(&a, "192.168.77.4"));
    t.agent.launch();
    let restarted = t.agent.drops("spoofed");
    assert!(restarted > down, "dropped while the agent was down");
    let mac = endpoint(&t.agent, a.name())["mac"]
        .as_str()
        .expect("mac")
        .to_owned();
    a.ip(&format!("link set eth0 address {mac}"));
    assert!(pings(&a, "192.168.77.4"), "its own MAC passes again");
    let (_, dropped) = counters(&t.agent, a.name());
    a.ip("link set eth0 address 02:00:00:00:00:98");
    assert!(!pings(&a, "192.168.77.4"));
    assert!(
        t.agent.drops("spoofed") > restarted,
        "dropped after the restart"
    );
    assert!(counters(&t.agent, a.name()).1 > dropped, "and per endpoint");
    drop(lan);
}

#[test]
fn a_vlan_parent_is_made_with_the_network_and_removed_with_it() {
    require_root!();
    if !kernel_has("vlan") {
        return;
    }
    let t = Topology::new(&[]);
    let lan = lan(&t);
    lan.ip("link add link eth0 name eth0.30 type vlan id 30");
    lan.ip("addr add 192.168.30.1/24 dev eth0.30");
    lan.ip("link set eth0.30 up");
    t.agent.ok(&[
        "network",
        "create",
        "vlan30",
        "-d",
        "macvlan",
        "-o",
        "parent=lan0.30",
        "--subnet",
        "192.168.30.0/24",
    ]);
    assert!(
        link_exists(&t.host, "lan0.30"),
        "netd made the sub-interface"
    );
    let a = t.container("a", &["--network", "vlan30"]);
    assert!(
        pings(&a, "192.168.30.1"),
        "tagged frames reach VLAN 30's router"
    );
    // The agent makes it again at start if it vanished.
    t.agent.ok(&["detach", a.name()]);
    t.agent.ok(&["network", "rm", "vlan30"]);
    assert!(!link_exists(&t.host, "lan0.30"), "gone with the network");
    assert!(link_exists(&t.host, "lan0"));
}

#[test]
fn ipvlan_l2_shares_the_parents_mac_and_l3_routes_a_subnet_of_its_own() {
    require_root!();
    if !kernel_has("ipvlan") {
        return;
    }
    let t = Topology::new(&[]);
    let lan = lan(&t);
    // ipvlan's mode is its parent's: one parent per mode.
    veth(&t.host, "lan1", &lan, "eth1");
    lan.ip("addr add 192.168.78.1/24 dev eth1");
    t.host.ip("addr add 192.168.78.2/24 dev lan1");
    veth(&t.host, "lan2", &lan, "eth2");
    lan.ip("addr add 192.168.79.1/24 dev eth2");
    t.host.ip("addr add 192.168.79.2/24 dev lan2");
    // The LAN routes the L3 network's subnet to the host.
    lan.ip("route add 10.77.0.0/24 via 192.168.79.2");

    t.agent.ok(&[
        "network",
        "create",
        "l2",
        "--driver",
        "ipvlan",
        "-o",
        "parent=lan1",
        "--subnet",
        "192.168.78.0/24",
        "--gateway",
        "192.168.78.1",
    ]);
    let a = t.container("a", &["--network", "l2"]);
    assert!(pings(&a, "192.168.78.1"), "ipvlan l2 reaches the router");
    assert_eq!(
        mac_of(&a, "eth0"),
        mac_of(&t.host, "lan1"),
        "the parent's MAC"
    );
    assert_eq!(
        neighbour(&lan, "192.168.78.3"),
        Some(mac_of(&t.host, "lan1"))
    );

    t.agent.ok(&[
        "network",
        "create",
        "l3",
        "--driver",
        "ipvlan",
        "-o",
        "parent=lan2",
        "-o",
        "ipvlan_mode=l3",
        "--subnet",
        "10.77.0.0/24",
    ]);
    let b = t.container("b", &["--network", "l3"]);
    assert_eq!(endpoint(&t.agent, b.name())["ip"], "10.77.0.2");
    assert!(pings(&b, "192.168.79.1"), "ipvlan l3 is routed to the LAN");
    assert!(
        pings(&lan, "10.77.0.2"),
        "the LAN reaches the routed subnet"
    );
    // Spoofing is dropped on ipvlan too.
    let spoofed = t.agent.drops("spoofed");
    b.ip("addr add 10.77.0.99/24 dev eth0");
    assert!(!pings(&b, "-I 10.77.0.99 192.168.79.1"));
    assert!(t.agent.drops("spoofed") > spoofed);
}

#[test]
fn the_host_reaches_its_macvlan_containers_through_the_shim_only() {
    require_root!();
    let t = Topology::new(&[]);
    let _lan = lan(&t);
    create_macvlan(&t, "plain", &[]);
    let a = t.container("a", &["--network", "plain"]);
    // macvlan by design: the host cannot reach its own containers.
    assert!(!pings(&t.host, "192.168.77.3"));
    t.agent.ok(&["detach", a.name()]);
    t.agent.ok(&["network", "rm", "plain"]);

    create_macvlan(
        &t,
        "shimmed",
        &[
            "-o",
            "host_access=true",
            "--aux-address",
            "host=192.168.77.250",
        ],
    );
    let shim = t.host.sh("ip -br addr show to 192.168.77.250");
    let shim = shim.split_whitespace().next().expect("a shim").to_owned();
    assert!(shim.starts_with("nh-"), "{shim}");
    let b = t.container("b", &["--network", "shimmed"]);
    assert_eq!(
        endpoint(&t.agent, b.name())["ip"],
        "192.168.77.3",
        "the shim's aux address is not given out"
    );
    assert!(pings(&t.host, "192.168.77.3"), "through the shim");
    assert!(pings(&b, "192.168.77.250"), "and back");
    let c = Netns::new("c");
    t.agent.refuses(
        &[
            "attach",
            c.name(),
            "--network",
            "shimmed",
            "--ip",
            "192.168.77.250",
        ],
        "192.168.77.250 is reserved: it is the host's shim nh-",
    );
    t.agent.ok(&["detach", b.name()]);
    t.agent.ok(&["network", "rm", "shimmed"]);
    assert!(
        !link_exists(&t.host, &shim),
        "the shim goes with its network"
    );
}

#[test]
fn bad_lan_input_is_refused_with_one_line_and_changes_nothing() {
    require_root!();
    let t = Topology::new(&[]);
    let _lan = lan(&t);
    let mac = |extra: &[&'static str]| {
        let mut args = vec!["network", "create", "bad", "--driver", "macvlan"];
        args.extend_from_slice(extra);
        args
    };
    for (args, needle) in [
        (
            mac(&["-o", "parent=nope0", "--subnet", "192.168.77.0/24"]),
            "parent interface nope0 does not exist",
        ),
        (
            mac(&["-o", "parent=netd0", "--subnet", "192.168.77.0/24"]),
            "it is the bridge of netd network netd",
        ),
        (
            mac(&["-o", "parent=lan0", "--subnet", "10.66.0.0/24"]),
            "is not on parent lan0 (its networks: 192.168.77.0/24)",
        ),
        (
            mac(&[
                "-o",
                "parent=lan0",
                "-o",
                "macvlan_mode=l2",
                "--subnet",
                "192.168.77.0/24",
            ]),
            "invalid macvlan_mode \"l2\": Docker's are bridge, private, vepa, passthru",
        ),
        (
            mac(&["--subnet", "192.168.77.0/24"]),
            "needs -o parent=IFACE",
        ),
        (mac(&["-o", "parent=lan0"]), "needs --subnet"),
        (
            mac(&["-o", "parent=lan0.5000", "--subnet", "192.168.77.0/24"]),
            "VLAN ID \"5000\" is not 1-4094",
        ),
        (
            vec!["network", "create", "bad", "--driver", "overlay"],
            "unknown network driver \"overlay\"",
        ),
        (
            vec!["network", "create", "bad", "--driver", "host"],
            "shares the host's stack",
        ),
    ] {
        t.agent.refuses(&args, needle);
    }
    // The host network is not one to attach to.
    let ns = Netns::new("h");
    t.agent.refuses(
        &["attach", ns.name(), "--network", "host"],
        "--network host needs nothing from netd",
    );
    // macvlan and ipvlan never share a parent.
    create_macvlan(&t, "lan", &[]);
    t.agent.refuses(
        &[
            "network",
            "create",
            "ip",
            "--driver",
            "ipvlan",
            "-o",
            "parent=lan0",
            "-o",
            "ipvlan_mode=l3",
            "--subnet",
            "10.66.0.0/24",
        ],
        "never both",
    );
    // Nor do two networks overlap.
    t.agent.refuses(
        &[
            "network",
            "create",
            "again",
            "--driver",
            "macvlan",
            "-o",
            "parent=lan0",
            "--subnet",
            "192.168.77.0/25",
        ],
        "overlaps",
    );
}
