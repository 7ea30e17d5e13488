// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd agent` and the CLI: bridge networking for namespaces, state that
//! survives the agent, and bad input that changes nothing.

use std::{collections::BTreeSet, process::Command, thread};

use netd_tests::{
    agent::Agent,
    netns::{Netns, check},
    require_root,
    topology::Scratch,
};
use serde_json::Value;

/// `ip -j link` of a namespace, as (name, ifindex) pairs.
fn links(ns: &Netns) -> BTreeSet<(String, u64)> {
    let out = ns.ip("-j link show");
    let links: Vec<Value> = serde_json::from_str(&out).expect("ip -j link");
    links
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().expect("ifname").to_owned(),
                l["ifindex"].as_u64().expect("ifindex"),
            )
        })
        .collect()
}

fn link_names(ns: &Netns) -> Vec<String> {
    links(ns).into_iter().map(|(name, _)| name).collect()
}

/// A namespace's links and their IPv4 addresses, one line each. (Not the
/// operational state or IPv6 link-local addresses: those change on their
/// own while a bridge settles.)
fn addresses(ns: &Netns) -> String {
    let out = ns.ip("-4 -j addr show");
    let links: Vec<Value> = serde_json::from_str(&out).expect("ip -j addr");
    let mut lines = Vec::new();
    for link in &links {
        let name = link["ifname"].as_str().unwrap_or("?");
        let addrs: Vec<String> = link["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| format!("{}/{}", i["local"], i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default();
        lines.push(format!("{name} {}", addrs.join(" ")));
    }
    lines.extend(link_names(ns));
    lines.join("\n")
}

/// Everything bad input must leave unchanged: the state file, the host's
/// and the target namespace's links and addresses, and what `ps` says.
fn snapshot(agent: &Agent, host: &Netns, target: Option<&Netns>) -> String {
    format!(
        "{:?}\n{}\n{}\n{}",
        agent.state(),
        addresses(host),
        target.map(addresses).unwrap_or_default(),
        agent.ok(&["ps", "--json"]),
    )
}

/// Asserts two snapshots are equal without printing them (they can be
/// thousands of lines), showing the first differing line instead.
fn assert_unchanged(before: &str, after: &str, what: &str) {
    if before != after {
        let diff = before
            .lines()
            .zip(after.lines())
            .find(|(a, b)| a != b)
            .map_or_else(
                || "(lengths differ)".to_owned(),
                |(a, b)| format!("{a}\n  became\n{b}"),
            );
        panic!("{what} changed something:\n{diff}");
    }
}

#[test]
fn two_containers_talk_through_the_bridge() {
    require_root!();
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "172.30.0.0/16"]);
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    let e1 = agent.json(&["attach", c1.name(), "--name", "one"]);
    let e2 = agent.json(&[
        "attach",
        &c2.path().display().to_string(),
        "--ip",
        "172.30.0.20",
    ]);
    assert_eq!(e1["ip"], "172.30.0.2");
    assert_eq!(e1["mac"], "02:42:ac:1e:00:02");
    assert_eq!(e2["ip"], "172.30.0.20");
    assert_eq!(e2["netns"], c2.path().display().to_string());

    // Inside the namespace: eth0 with the address, MAC and default route.
    let addr = c1.ip("-j addr show dev eth0");
    assert!(
        addr.contains("\"local\":\"172.30.0.2\"") && addr.contains("\"prefixlen\":16"),
        "{addr}"
    );
    assert!(addr.contains("02:42:ac:1e:00:02"), "{addr}");
    assert!(
        c1.ip("route show default")
            .contains("via 172.30.0.1 dev eth0")
    );

    // ICMP to the other container and to the gateway, TCP between them.
    c1.sh("ping -c 2 -i 0.2 -W 2 172.30.0.20");
    c1.sh("ping -c 1 -W 2 172.30.0.1");
    let _server = c2.spawn("python3 -m http.server 8000 --bind 172.30.0.20 --directory /proc/self");
    let page = c1.sh(
        "for i in $(seq 50); do curl -sf -m 2 -o /dev/null http://172.30.0.20:8000/ && echo fetched && exit 0; sleep 0.1; done; exit 1",
    );
    assert_eq!(page.trim(), "fetched");

    // Docker-shaped views.
    let inspect = agent.json(&["network", "inspect"]);
    let net = &inspect[0];
    assert_eq!(net["Name"], "netd");
    assert_eq!(net["Scope"], "local");
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "172.30.0.0/16");
    assert_eq!(net["IPAM"]["Config"][0]["Gateway"], "172.30.0.1");
    assert_eq!(net["Options"]["com.docker.network.bridge.name"], "netd0");
    assert_eq!(net["Id"].as_str().map(str::len), Some(64));
    let containers = net["Containers"].as_object().expect("Containers");
    assert_eq!(containers.len(), 2);
    let one = &containers[e1["id"].as_str().expect("id")];
    assert_eq!(one["Name"], "one");
    assert_eq!(one["EndpointID"], e1["id"]);
    assert_eq!(one["MacAddress"], "02:42:ac:1e:00:02");
    assert_eq!(one["IPv4Address"], "172.30.0.2/16");
    assert_eq!(one["IPv6Address"], "");

    let ps = agent.json(&["ps"]);
    let names: Vec<&str> = ps
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"one") && names.contains(&c2.name()),
        "{names:?}"
    );
    let table = agent.ok(&["ps"]);
    assert!(table.starts_with("ENDPOINT ID"), "{table}");
    assert!(
        table.contains("one")
            && table.contains("172.30.0.2 ")
            && table.contains("02:42:ac:1e:00:02"),
        "{table}"
    );
}

#[test]
fn agent_restart_adopts_everything() {
    require_root!();
    let host = Netns::new("h");
    let mut agent = Agent::start(&host, &["--subnet", "10.88.0.0/24"]);
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    agent.ok(&["attach", c1.name()]);
    agent.ok(&["attach", c2.name()]);
    let before = (
        links(&host),
        links(&c1),
        links(&c2),
        agent.ok(&["ps", "--json"]),
        agent.state(),
    );

    agent.kill9();
    agent.launch();

    let after = (
        links(&host),
        links(&c1),
        links(&c2),
        agent.ok(&["ps", "--json"]),
        agent.state(),
    );
    assert_eq!(before, after, "nothing re-created, nothing lost");
    let log = agent.log();
    assert!(log.contains("adopted bridge"), "{log}");
    assert_eq!(log.matches("adopted endpoint").count(), 2, "{log}");
    c1.sh("ping -c 1 -W 2 10.88.0.3");
    // The restarted agent still serves requests on the adopted network.
    let c3 = Netns::new("c3");
    let e3 = agent.json(&["attach", c3.name()]);
    assert_eq!(e3["ip"], "10.88.0.4");
}

#[test]
fn sigterm_leaves_networking_in_place() {
    require_root!();
    let host = Netns::new("h");
    let mut agent = Agent::start(&host, &["--subnet", "10.89.0.0/24"]);
    let c1 = Netns::new("c1");
    agent.ok(&["attach", c1.name()]);
    let before = links(&host);
    assert_eq!(agent.terminate(), Some(0), "clean exit on SIGTERM");
    assert_eq!(links(&host), before);
    c1.sh("ping -c 1 -W 2 10.89.0.1");
    assert!(!agent.socket().exists(), "socket removed");
    let unreachable = agent.cli(&["ps"]);
    assert_eq!(unreachable.code, 3, "agent not running: exit 3");
    assert!(
        unreachable.stderr.contains("cannot reach the netd agent")
            && unreachable.stderr.contains("netd agent"),
        "{}",
        unreachable.stderr
    );
    assert_eq!(
        unreachable.stderr.lines().count(),
        1,
        "one line: {}",
        unreachable.stderr
    );
}

#[test]
fn detach_after_the_namespace_is_gone_and_twice() {
    require_root!();
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.90.0.0/24"]);
    let c1 = Netns::new("c1");
    let name = c1.name().to_owned();
    let ep = agent.json(&["attach", &name]);
    let veth = ep["host_ifname"].as_str().expect("host_ifname").to_owned();
    assert!(link_names(&host).contains(&veth));
    drop(c1);

    let first = agent.json(&["detach", &name]);
    assert_eq!(first.as_array().map(Vec::len), Some(1), "{first}");
    assert!(!link_names(&host).contains(&veth), "veth gone");
    let again = agent.cli(&["detach", &name]);
    assert!(again.success(), "{again:?}");
    assert_eq!(again.stdout.trim(), "nothing attached");
    assert_eq!(agent.json(&["ps"]), serde_json::json!([]));

    // The address is free again.
    let c2 = Netns::new("c2");
    assert_eq!(agent.json(&["attach", c2.name()])["ip"], "10.90.0.2");
}

#[test]
fn parallel_clients_end_consistent() {
    require_root!();
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.91.0.0/24"]);
    let namespaces: Vec<Netns> = (0..20).map(|i| Netns::new(&format!("p{i}"))).collect();
    thread::scope(|scope| {
        for (i, ns) in namespaces.iter().enumerate() {
            let agent = &agent;
            scope.spawn(move || {
                // Even clients attach, detach and attach again; odd ones
                // attach and detach.
                agent.ok(&["attach", ns.name()]);
                agent.ok(&["detach", ns.name()]);
                if i % 2 == 0 {
                    agent.ok(&["attach", ns.name()]);
                }
            });
        }
    });
    let ps = agent.json(&["ps"]);
    let endpoints = ps.as_array().expect("array");
    assert_eq!(endpoints.len(), 10, "{ps}");
    let ips: BTreeSet<&str> = endpoints
        .iter()
        .map(|e| e["ip"].as_str().expect("ip"))
        .collect();
    assert_eq!(ips.len(), 10, "unique addresses");
    for (i, ns) in namespaces.iter().enumerate() {
        let attached = endpoints.iter().any(|e| e["name"] == ns.name());
        assert_eq!(attached, i % 2 == 0, "{}", ns.name());
        assert_eq!(
            link_names(ns).contains(&"eth0".to_owned()),
            i % 2 == 0,
            "{}",
            ns.name()
        );
    }
    let veths = link_names(&host)
        .iter()
        .filter(|l| l.starts_with("veth"))
        .count();
    assert_eq!(veths, 10, "no leaked veth");
    let state: Value = serde_json::from_str(&agent.state().expect("state")).expect("json");
    assert_eq!(
        state["endpoints"].as_object().map(|m| m.len()),
        Some(10),
        "no leaked state entry"
    );
}

#[test]
fn bad_attach_requests_change_nothing() {
    require_root!();
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.92.0.0/24"]);
    let taken = Netns::new("tk");
    agent.ok(&["attach", taken.name(), "--name", "holder"]);
    let target = Netns::new("tg");
    let target_path = target.path().display().to_string();
    let scratch = Scratch::new();
    let not_netns = scratch.0.join("not-a-netns");
    std::fs::write(&not_netns, "not a namespace").expect("write");
    let not_netns = not_netns.display().to_string();
    let taken_name = taken.name().to_owned();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["attach", "no-such-netns-here"],
            "network namespace no-such-netns-here does not exist",
        ),
        (vec!["attach", &not_netns], "is not a network namespace"),
        (
            vec!["attach", "/proc/self/ns/mnt"],
            "is not a network namespace",
        ),
        (
            vec!["attach", &taken_name],
            "is already attached to network netd as endpoint holder",
        ),
        (
            vec!["attach", &target_path, "--ip", "10.1.2.3"],
            "outside the network's subnet 10.92.0.0/24",
        ),
        (
            vec!["attach", &target_path, "--ip", "10.92.0.1"],
            "is the network's gateway address",
        ),
        (
            vec!["attach", &target_path, "--ip", "10.92.0.2"],
            "already assigned to endpoint holder",
        ),
        (
            vec!["attach", &target_path, "--ip", "10.92.0.255"],
            "broadcast address",
        ),
        (
            vec!["attach", &target_path, "--ip", "10.92.0.300"],
            "invalid IP address",
        ),
        (
            vec!["attach", &target_path, "--mac", "02:42:zz:00:00:01"],
            "invalid MAC address",
        ),
        (
            vec!["attach", &target_path, "--mac", "01:00:5e:00:00:01"],
            "multicast",
        ),
        (
            vec!["attach", &target_path, "--ifname", "a-very-long-name0"],
            "at most 15 bytes",
        ),
        (
            vec!["attach", &target_path, "--name", "holder"],
            "already used by endpoint",
        ),
        (
            vec!["attach", &target_path, "--name", "bad name"],
            "invalid endpoint name",
        ),
        (vec!["detach", "--name", "ghost"], "no endpoint named ghost"),
    ];
    for (args, message) in cases {
        let before = snapshot(&agent, &host, Some(&target));
        agent
            .cli(&args)
            .assert_refused(&format!("{args:?}"), message);
        assert_unchanged(
            &before,
            &snapshot(&agent, &host, Some(&target)),
            &format!("{args:?}"),
        );

        // The same error as JSON with --json.
        let mut json_args = vec!["--json"];
        json_args.extend(&args);
        let run = agent.cli(&json_args);
        assert_ne!(run.code, 0);
        let err: Value = serde_json::from_str(&run.stdout).expect("JSON error");
        assert!(
            err["error"]["message"]
                .as_str()
                .expect("message")
                .contains(message)
        );
        assert!(err["error"]["kind"].is_string());
    }
    // An interface name already present in the namespace: refused by the
    // kernel when creating the veth, and rolled back.
    target.ip("link add eth0 type veth peer name eth0p");
    let before = snapshot(&agent, &host, Some(&target));
    let run = agent.cli(&["attach", &target_path]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("interface eth0 is taken"),
        "{}",
        run.stderr
    );
    assert_unchanged(
        &before,
        &snapshot(&agent, &host, Some(&target)),
        "attach onto a taken eth0",
    );
}

#[test]
fn full_subnet_is_a_clear_error() {
    require_root!();
    let host = Netns::new("h");
    // A /30 has two host addresses: the gateway and one endpoint.
    let agent = Agent::start(&host, &["--subnet", "10.93.0.0/30"]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    agent.ok(&["attach", a.name()]);
    let before = snapshot(&agent, &host, Some(&b));
    let run = agent.cli(&["attach", b.name()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("the subnet 10.93.0.0/30 is full"),
        "{}",
        run.stderr
    );
    // What to do instead, on the same line.
    run.assert_refused(
        "attach to a full subnet",
        "no free address left; hint: make a network with a larger --subnet",
    );
    assert_unchanged(
        &before,
        &snapshot(&agent, &host, Some(&b)),
        "attach to a full subnet",
    );
}

#[test]
fn bridge_port_limit_is_a_clear_error() {
    require_root!();
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.94.0.0/16"]);
    // Fill the bridge with 1023 ports, the kernel's limit: VXLAN devices,
    // one link per port (this kernel has no dummy devices).
    let batch: String = (1..=1023)
        .map(|i| format!("link add vx{i} master netd0 type vxlan id {i} dstport 4789\n"))
        .collect();
    let scratch = Scratch::new();
    let file = scratch.0.join("batch");
    std::fs::write(&file, batch).expect("batch file");
    check(
        Command::new("ip")
            .args(["-n", host.name(), "-batch"])
            .arg(&file),
    );
    let c = Netns::new("c");
    let before = snapshot(&agent, &host, Some(&c));
    let run = agent.cli(&["attach", c.name()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("bridge netd0 is full: Linux allows at most 1023 ports"),
        "{}",
        run.stderr
    );
    assert_unchanged(
        &before,
        &snapshot(&agent, &host, Some(&c)),
        "attach to a full bridge",
    );
}

/// Bad agent flags: one line, non-zero exit, and nothing created.
#[test]
fn bad_agent_flags_change_nothing() {
    require_root!();
    let host = Netns::new("h");
    host.ip("link add up0 type veth peer name up0p");
    host.ip("addr add 192.168.77.1/24 dev up0");
    host.ip("link set up0 up");
    let cases: &[(&[&str], &str)] = &[
        (&["--subnet", "192.168.77.0/25"], "overlaps 192.168.77.0/24"),
        (&["--mtu", "20"], "invalid MTU 20"),
        (&["--mtu", "70000"], "invalid MTU 70000"),
        (&["--bridge", "a-bridge-name-too-long"], "at most 15 bytes"),
        (&["--bridge", "up0"], "up0 exists and is not a bridge"),
        (&["--uplink", "nope0"], "uplink nope0 does not exist"),
        (
            &["--subnet", "10.95.0.0/24", "--gateway", "10.96.0.1"],
            "not a host address of the subnet",
        ),
    ];
    for (args, message) in cases {
        let before = addresses(&host);
        let agent = Agent::new(&host, args);
        agent
            .try_start()
            .assert_refused(&format!("{args:?}"), message);
        assert_unchanged(&before, &addresses(&host), &format!("{args:?}"));
        assert!(
            !link_names(&host).contains(&"netd0".to_owned()) || args.contains(&"up0"),
            "{args:?} created the bridge"
        );
        assert!(agent.state().is_none(), "{args:?} wrote state");
    }
}

#[test]
fn saved_network_wins_and_contradicting_flags_are_refused() {
    require_root!();
    let host = Netns::new("h");
    let mut agent = Agent::start(&host, &["--subnet", "10.97.0.0/24"]);
    agent.terminate();
    // A second agent on the same state directory, with another subnet.
    let run = {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", host.path().display()))
            .arg("--")
            .arg(netd_tests::agent::netd_bin())
            .args(["agent", "--subnet", "10.98.0.0/24"])
            .env("NETD_STATE_DIR", agent.state_dir())
            .env("NETD_SOCKET", agent.socket())
            .env("NETD_BPFFS", agent.bpffs());
        cmd.output().expect("run agent")
    };
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("--subnet 10.98.0.0/24 differs from the saved network's 10.97.0.0/24"),
        "{stderr}"
    );
    // Without the flag, the saved subnet is used.
    agent.launch();
    assert!(agent.ok(&["status"]).contains("10.97.0.0/24"));
}

#[test]
fn down_removes_everything_and_is_idempotent() {
    require_root!();
    let host = Netns::new("h");
    let mut agent = Agent::start(&host, &["--subnet", "10.99.0.0/24"]);
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    agent.ok(&["attach", c1.name()]);
    agent.ok(&["attach", c2.name()]);
    std::fs::create_dir_all(agent.bpffs().join("maps")).expect("a pin directory");
    let out = agent.ok(&["down"]);
    assert_eq!(agent.wait_exit(), Some(0), "the agent exits after down");
    assert!(out.contains("removed bridge netd0"), "{out}");
    assert_eq!(out.matches("removed veth").count(), 2, "{out}");
    assert!(out.contains("removed pins under"), "{out}");
    assert!(out.contains("removed state"), "{out}");
    assert_eq!(link_names(&host), vec!["lo".to_owned()]);
    assert_eq!(link_names(&c1), vec!["lo".to_owned()]);
    assert!(!agent.state_dir().exists(), "state directory removed");
    assert!(!agent.bpffs().exists(), "pins removed");
    let again = agent.cli(&["down"]);
    assert!(again.success());
    assert_eq!(again.stdout.trim(), "nothing to remove");
}

/// Starts an agent that crashes at `point` during the next request, makes
/// that request with `request`, restarts the agent and returns it.
fn crash_at(point: &str, host: &Netns, subnet: &str, request: impl FnOnce(&Agent)) -> Agent {
    let mut agent = Agent::start(host, &["--subnet", subnet]);
    agent.terminate();
    agent.next_launch_env("NETD_FAILPOINT", point);
    agent.launch();
    request(&agent);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !agent.has_exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not crash at {point}"
        );
        thread::sleep(std::time::Duration::from_millis(10));
    }
    agent.reap();
    agent.launch();
    agent
}

#[test]
fn attach_cut_short_is_rolled_back_on_restart() {
    require_root!();
    for point in ["attach:recorded", "attach:veth-created"] {
        let host = Netns::new("h");
        let c1 = Netns::new("c1");
        let agent = crash_at(point, &host, "10.100.0.0/24", |agent| {
            let run = agent.cli(&["attach", c1.name()]);
            assert_ne!(run.code, 0, "{point}: the attach cannot succeed");
        });
        let log = agent.log();
        assert!(log.contains("rolled back an attach"), "{point}: {log}");
        assert_eq!(agent.json(&["ps"]), serde_json::json!([]), "{point}");
        assert!(
            !link_names(&host).iter().any(|l| l.starts_with("veth")),
            "{point}: no veth left"
        );
        assert_eq!(
            link_names(&c1),
            vec!["lo".to_owned()],
            "{point}: no eth0 left"
        );
        // And the same attach works now, with the same address.
        assert_eq!(
            agent.json(&["attach", c1.name()])["ip"],
            "10.100.0.2",
            "{point}"
        );
    }
}

#[test]
fn detach_cut_short_is_completed_on_restart() {
    require_root!();
    let host = Netns::new("h");
    let c1 = Netns::new("c1");
    let agent = crash_at("detach:recorded", &host, "10.101.0.0/24", |agent| {
        agent.ok(&["attach", c1.name()]);
        let run = agent.cli(&["detach", c1.name()]);
        assert_ne!(run.code, 0, "the detach cannot succeed");
    });
    let log = agent.log();
    assert!(log.contains("completed a detach"), "{log}");
    assert_eq!(agent.json(&["ps"]), serde_json::json!([]));
    assert!(
        !link_names(&host).iter().any(|l| l.starts_with("veth")),
        "no veth left"
    );
    assert_eq!(link_names(&c1), vec!["lo".to_owned()], "no eth0 left");
}

#[test]
fn api_speaks_http_and_json_on_a_root_only_socket() {
    require_root!();
    use std::os::unix::fs::PermissionsExt as _;
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.102.0.0/24"]);
    let socket = agent.socket();
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the API is root's");

    let curl = |args: &[&str]| netd_tests::curl_unix(&socket, args);
    let (body, code) = curl(&["http://netd/v1/status"]);
    assert_eq!(code, "200");
    let status: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["subnet"], "10.102.0.0/24");

    let c1 = Netns::new("c1");
    let (body, code) = curl(&[
        "-X",
        "POST",
        "-d",
        &format!("{{\"netns\":\"{}\"}}", c1.name()),
        "http://netd/v1/endpoints",
    ]);
    assert_eq!(code, "201", "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["ip"],
        "10.102.0.2"
    );

    let errors: &[(&[&str], &str, &str)] = &[
        (
            &[
                "-X",
                "POST",
                "-d",
                "{\"netns\":",
                "http://netd/v1/endpoints",
            ],
            "400",
            "invalid request body",
        ),
        (
            &[
                "-X",
                "POST",
                "-d",
                "{\"netns\":\"x\",\"bogus\":1}",
                "http://netd/v1/endpoints",
            ],
            "400",
            "unknown field",
        ),
        (
            &[
                "-X",
                "POST",
                "-d",
                "{\"netns\":\"no-such-ns\"}",
                "http://netd/v1/endpoints",
            ],
            "404",
            "does not exist",
        ),
        (&["http://netd/v1/nothing-here"], "404", "no such API path"),
        (
            &["-X", "DELETE", "http://netd/v1/endpoints/ghost"],
            "404",
            "no endpoint named ghost",
        ),
    ];
    for (args, want_code, message) in errors {
        let (body, code) = curl(args);
        assert_eq!(&code, want_code, "{args:?}: {body}");
        let err: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {body}"));
        assert!(
            err["message"].as_str().expect("message").contains(message),
            "{args:?}: {body}"
        );
        assert!(err["kind"].is_string());
    }
    // Bodies over 1 MiB are refused before parsing.
    let scratch = Scratch::new();
    let big = scratch.0.join("big.json");
    std::fs::write(&big, vec![b' '; 2 << 20]).expect("write");
    let (body, code) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", big.display()),
        "http://netd/v1/endpoints",
    ]);
    assert_eq!(code, "413", "{body}");
    assert_eq!(
        agent.json(&["ps"]).as_array().map(Vec::len),
        Some(1),
        "nothing changed"
    );
}

/// Reads from `stream` until the server closes it or `limit` passes;
/// what came, and whether it closed.
fn read_until_closed(
    stream: &mut std::os::unix::net::UnixStream,
    limit: std::time::Duration,
) -> (String, bool) {
    use std::io::Read as _;
    let start = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while start.elapsed() < limit {
        stream
            .set_read_timeout(Some(
                limit
                    .saturating_sub(start.elapsed())
                    .max(std::time::Duration::from_millis(1)),
            ))
            .expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&answer).into_owned(), true),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&answer).into_owned(), true);
            }
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), false)
}

#[test]
fn api_answers_half_closed_requests_and_closes_silent_connections() {
    require_root!();
    use std::{io::Write as _, net::Shutdown, os::unix::net::UnixStream, time::Duration};
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.103.0.0/24"]);
    let socket = agent.socket();

    // Connections that say nothing, or stop in the middle of a request's
    // head, are closed once the agent's head timeout (10 s) passes.
    let mut silent = UnixStream::connect(&socket).expect("connect");
    let mut trickle = UnixStream::connect(&socket).expect("connect");
    trickle
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: ne")
        .expect("write");
    let opened = std::time::Instant::now();
    let idle = thread::spawn(move || {
        let read = read_until_closed(&mut silent, Duration::from_secs(30));
        (read, opened.elapsed())
    });
    let partial = thread::spawn(move || {
        let read = read_until_closed(&mut trickle, Duration::from_secs(30));
        (read, opened.elapsed())
    });

    // Meanwhile the API answers, and a client that sends its request and
    // shuts down its writing half (`nc -N`, `socat`) gets the answer.
    let mut half = UnixStream::connect(&socket).expect("connect");
    half.write_all(b"GET /v1/status HTTP/1.1\r\nHost: netd\r\n\r\n")
        .expect("write");
    half.shutdown(Shutdown::Write).expect("shutdown");
    let (answer, closed) = read_until_closed(&mut half, Duration::from_secs(10));
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "half-closed: {answer:?}"
    );
    assert!(answer.contains("\"10.103.0.0/24\""), "{answer}");
    assert!(
        closed,
        "the agent closes after answering a half-closed request"
    );
    agent.ok(&["status"]);

    for (what, handle) in [("silent", idle), ("partial head", partial)] {
        let ((answer, closed), after) = handle.join().expect("reader");
        assert!(closed, "{what}: still open after 30 s ({answer:?})");
        // Not at once: a client has its 10 s to speak.
        assert!(
            after >= Duration::from_secs(9),
            "{what}: closed after {after:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{what}: {answer:?}"
        );
    }
    agent.ok(&["status"]);
}

/// Docker's driver socket is served by the same server: a half-closed
/// request is answered, a connection that says nothing (or stops in its
/// first head) is closed after the head timeout, and a connection that has
/// made a request may idle as long as dockerd keeps it (dockerd reuses its
/// plugin connections for POSTs).
#[test]
fn docker_socket_is_served_by_the_hardened_server() {
    require_root!();
    use std::{
        io::{Read as _, Write as _},
        net::Shutdown,
        os::unix::net::UnixStream,
        time::{Duration, Instant},
    };
    let host = Netns::new("h");
    let dir = netd_tests::topology::Scratch::new();
    let docker_socket = dir.0.join("docker.sock");
    let docker_arg = docker_socket.display().to_string();
    let agent = Agent::start(
        &host,
        &[
            "--subnet",
            "10.104.0.0/24",
            "--docker-plugin-socket",
            &docker_arg,
        ],
    );
    let activate = b"POST /Plugin.Activate HTTP/1.1\r\nHost: netd\r\nContent-Length: 2\r\n\r\n{}";

    let silent = UnixStream::connect(&docker_socket).expect("connect");
    let mut trickle = UnixStream::connect(&docker_socket).expect("connect");
    trickle
        .write_all(b"POST /Plugin.Activate HTTP/1.1\r\nHo")
        .expect("write");
    let opened = Instant::now();
    let closing = [
        ("silent", silent.try_clone()),
        ("partial head", trickle.try_clone()),
    ]
    .map(|(what, stream)| {
        let mut stream = stream.expect("clone");
        thread::spawn(move || {
            let read = read_until_closed(&mut stream, Duration::from_secs(30));
            (what, read, opened.elapsed())
        })
    });

    // Keep-alive: one request, then idle past the head timeout, then
    // another on the same connection.
    let mut kept = UnixStream::connect(&docker_socket).expect("connect");
    let mut answer = [0; 4096];
    kept.write_all(activate).expect("write");
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let n = kept.read(&mut answer).expect("first answer");
    let first = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(
        first.starts_with("HTTP/1.1 200") && first.contains("NetworkDriver"),
        "{first}"
    );

    let mut half = UnixStream::connect(&docker_socket).expect("connect");
    half.write_all(activate).expect("write");
    half.shutdown(Shutdown::Write).expect("shutdown");
    let (answer_half, closed) = read_until_closed(&mut half, Duration::from_secs(10));
    assert!(
        answer_half.contains("NetworkDriver"),
        "half-closed: {answer_half:?}"
    );
    assert!(closed, "closed after answering a half-closed request");

    for handle in closing {
        let (what, (answer, closed), after) = handle.join().expect("reader");
        assert!(closed, "{what}: still open after 30 s ({answer:?})");
        assert!(
            after >= Duration::from_secs(9),
            "{what}: closed after {after:?}"
        );
        assert!(answer.is_empty(), "{what}: {answer:?}");
    }
    assert!(opened.elapsed() >= Duration::from_secs(10));
    kept.write_all(activate)
        .expect("the idle connection is still open");
    let n = kept.read(&mut answer).expect("second answer");
    let second = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    drop((
        silent.shutdown(Shutdown::Both),
        trickle.shutdown(Shutdown::Both),
    ));
    agent.ok(&["status"]);
}
