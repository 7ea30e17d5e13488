// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd as Docker's network driver, with a real dockerd (Debian's docker.io,
//! 20.10): `docker network create -d netd` and `docker run --network NET -p
//! 8080:80` get netd's bridge, address and eBPF publishing; Docker adds no
//! DNAT rule and runs no docker-proxy for them; `docker rm -f` removes the
//! endpoint and its mapping. How dockerd runs: `netd_tests::dockerd`.

use netd_tests::{
    dockerd::{Dockerd, IMAGE, PAGE, docker_proxies, fetch_soon, nat_rules},
    require_root,
    rootfs::HTTPD,
    topology::{HOST_IP, SUBNET, Scratch, Topology},
};
use serde_json::Value;

const GATEWAY: &str = "172.30.0.1";

fn endpoint<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|e| e["name"] == name || e["endpoint"] == name)
}

#[test]
fn docker_run_on_a_netd_network_is_published_by_netd_alone() {
    require_root!();
    let plugin_dir = Scratch::new();
    let plugin_socket = plugin_dir.0.join("netd-docker.sock");
    let socket_arg = plugin_socket.to_string_lossy().into_owned();
    // Drop order (reverse): dockerd and its containers, then the agent and
    // the namespaces, then the socket's directory.
    let mut t = Topology::new(&["--docker-plugin-socket", &socket_arg]);
    let docker = Dockerd::start(&t.host, &plugin_socket);
    docker.import_busybox();

    // Docker's default IPAM picks a pool of its own: a netd network of its
    // own, with that pool and gateway.
    docker.ok(&["network", "create", "-d", "netd", "front"]);
    let front_id = docker.ok(&["network", "inspect", "-f", "{{.Id}}", "front"]);
    let front_subnet = docker.ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "front",
    ]);
    let netd_front = format!("docker-{}", &front_id[..12]);
    let inspect = t.agent.json(&["network", "inspect", &netd_front]);
    assert_eq!(
        inspect[0]["IPAM"]["Config"][0]["Subnet"],
        front_subnet.as_str(),
        "{inspect}"
    );
    // A pool that overlaps another netd network: refused, naming it; a
    // second Docker network of netd's is no longer refused.
    t.agent
        .ok(&["network", "create", "taken", "--subnet", "10.94.0.0/24"]);
    let refused = docker.fails(&[
        "network",
        "create",
        "-d",
        "netd",
        "--subnet",
        "10.94.0.0/25",
        "clash",
    ]);
    assert!(
        refused.contains("subnet 10.94.0.0/25 overlaps 10.94.0.0/24"),
        "{refused}"
    );
    t.agent.ok(&["network", "rm", "taken"]);
    let refused = docker.fails(&[
        "network", "create", "-d", "netd", "--subnet", SUBNET, "-o", "foo=bar", "netdbad",
    ]);
    assert!(
        refused.contains("unsupported network option \"foo\""),
        "{refused}"
    );

    // Control: on Docker's own bridge, -p makes a DNAT rule and a
    // docker-proxy, and the checks below see them.
    docker.ok(&[
        &["run", "-d", "--name", "control", "-p", "8081:80", IMAGE][..],
        HTTPD,
    ]
    .concat());
    let rules = nat_rules(&t.host);
    assert!(
        rules
            .iter()
            .any(|r| r.contains("DNAT") && r.contains("--dport 8081")),
        "Docker's bridge publishes with DNAT: {rules:?}"
    );
    assert!(
        docker_proxies(&t.host, docker.pid())
            .iter()
            .any(|p| p.contains("-host-port 8081")),
        "Docker's bridge publishes with docker-proxy"
    );
    docker.ok(&["rm", "-f", "control"]);

    // netd's network, as Docker sees it.
    docker.ok(&[
        "network",
        "create",
        "-d",
        "netd",
        "--subnet",
        SUBNET,
        "--gateway",
        GATEWAY,
        "netdnet",
    ]);
    docker.ok(&[
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "netdnet",
            "-p",
            "8080:80",
            IMAGE,
        ][..],
        HTTPD,
    ]
    .concat());
    let settings: Value = serde_json::from_str(&docker.ok(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings}}",
        "web",
    ]))
    .expect("docker inspect");
    let net = &settings["Networks"]["netdnet"];
    let endpoint_id = net["EndpointID"].as_str().expect("EndpointID").to_owned();
    let ip = net["IPAddress"].as_str().expect("IPAddress").to_owned();
    assert_eq!(net["Gateway"], GATEWAY);
    assert_eq!(net["MacAddress"], "02:42:ac:1e:00:02", "{net}");

    assert_eq!(
        fetch_soon(&t, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some(PAGE),
        "the outside client reaches the container through netd"
    );

    // The endpoint and the mapping are netd's.
    let endpoints = t.agent.json(&["ps"]);
    let ep = endpoint(&endpoints, &endpoint_id).expect("Docker's endpoint in netd ps");
    assert_eq!(ep["owner"], "docker");
    assert_eq!(ep["ip"], ip.as_str());
    assert_eq!(ep["netns"], settings["SandboxKey"]);
    let veth = ep["host_ifname"].as_str().expect("host veth").to_owned();
    let ports = t.agent.json(&["ports"]);
    let port = endpoint(&ports, &endpoint_id).expect("the mapping in netd ports");
    assert_eq!(port["display"], "0.0.0.0:8080->80/tcp");
    assert_eq!(port["container_ip"], ip.as_str());
    assert!(port["packets"].as_u64() > Some(0), "{port}");

    // ... and Docker's nothing: no DNAT rule, no docker-proxy.
    let rules = nat_rules(&t.host);
    assert!(
        !rules
            .iter()
            .any(|r| r.contains("8080") || r.contains("172.30.")),
        "Docker added NAT rules for the netd network: {rules:?}"
    );
    let proxies = docker_proxies(&t.host, docker.pid());
    assert!(proxies.is_empty(), "docker-proxy runs: {proxies:?}");

    // A container on the network of its own; the networks are isolated
    // from each other until `docker network connect` joins web to front.
    docker.ok(&[
        &[
            "run",
            "-d",
            "--name",
            "web2",
            "--network",
            "front",
            "-p",
            "8083:80",
            IMAGE,
        ][..],
        HTTPD,
    ]
    .concat());
    let web2_ip = docker.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.front.IPAddress}}",
        "web2",
    ]);
    let on_front = |agent: &netd_tests::agent::Agent| -> usize {
        agent
            .json(&["ps"])
            .as_array()
            .expect("ps")
            .iter()
            .filter(|ep| ep["network"] == netd_front.as_str())
            .count()
    };
    assert_eq!(on_front(&t.agent), 1);
    assert_eq!(
        fetch_soon(&t, &format!("http://{HOST_IP}:8083/")).as_deref(),
        Some(PAGE)
    );
    // busybox's ping (its wget's `-T` crashes in busybox-static 1.35).
    let pings = |from: &str| {
        docker
            .docker(&[
                "exec",
                from,
                "/bin/busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                &web2_ip,
            ])
            .status
            .success()
    };
    let before = t.agent.drops("isolated");
    assert!(!pings("web"), "netdnet reached front's address");
    assert!(t.agent.drops("isolated") > before, "dropped as isolated");
    docker.ok(&["network", "connect", "front", "web"]);
    assert_eq!(on_front(&t.agent), 2, "connect adds an endpoint");
    assert!(
        (0..5).any(|_| pings("web")),
        "connected, web reaches web2 on front"
    );
    docker.ok(&["network", "disconnect", "front", "web"]);
    assert_eq!(on_front(&t.agent), 1, "disconnect removes it");
    assert_eq!(
        fetch_soon(&t, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some(PAGE),
        "web still serves on netdnet"
    );

    // Another driver's subnet: Docker's own bridge network `other`. No
    // container joins a netd network with an address of it, no netd
    // network takes it; each refusal is one line and changes nothing.
    docker.ok(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.97.0.0/24",
        "other",
    ]);
    let netd_view = || {
        (
            t.agent.ok(&["network", "ls"]),
            t.agent.ok(&["ps"]),
            t.agent.ok(&["ports"]),
            t.host.sh("ip -br link show | cut -d' ' -f1 | sort"),
        )
    };
    let unchanged = netd_view();
    let refusals = [
        docker.fails(&["network", "connect", "--ip", "10.97.0.5", "netdnet", "web2"]),
        docker.fails(&[
            "network",
            "create",
            "-d",
            "netd",
            "--subnet",
            "10.97.0.0/25",
            "clash",
        ]),
    ];
    for refused in &refusals {
        assert_eq!(refused.trim().lines().count(), 1, "{refused}");
    }
    // Docker's own check: the address is outside netdnet's subnet.
    assert!(
        refusals[0].contains("does not belong to any of this network's subnets"),
        "{}",
        refusals[0]
    );
    assert!(refusals[1].contains("overlaps"), "{}", refusals[1]);
    t.agent
        .cli(&["network", "create", "clash", "--subnet", "10.97.0.0/25"])
        .assert_refused("a netd network on Docker's bridge subnet", "overlaps");
    assert_eq!(netd_view(), unchanged, "a refusal changed netd");
    docker.ok(&["network", "rm", "other"]);

    // A restarted agent keeps Docker's endpoints and networks, and serves
    // Docker again.
    assert_eq!(t.agent.terminate(), Some(0));
    t.agent.launch();
    assert_eq!(
        fetch_soon(&t, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some(PAGE),
        "after an agent restart"
    );
    assert_eq!(
        fetch_soon(&t, &format!("http://{HOST_IP}:8083/")).as_deref(),
        Some(PAGE),
        "front after an agent restart"
    );
    docker.ok(&["rm", "-f", "web2"]);
    docker.ok(&["network", "rm", "front"]);
    assert!(
        t.agent.cli(&["network", "inspect", &netd_front]).code != 0,
        "docker network rm removes the netd network made for it"
    );

    // docker rm -f: Revoke, Leave, DeleteEndpoint; nothing of it is left.
    docker.ok(&["rm", "-f", "web"]);
    assert!(endpoint(&t.agent.json(&["ps"]), &endpoint_id).is_none());
    assert!(endpoint(&t.agent.json(&["ports"]), &endpoint_id).is_none());
    assert!(
        !t.host
            .try_sh(&format!("ip link show {veth}"))
            .status
            .success(),
        "{veth} removed"
    );
    assert_eq!(t.fetch(&format!("http://{HOST_IP}:8080/")), None);
    docker.ok(&["network", "rm", "netdnet"]);

    // The null IPAM: netd assigns the address.
    docker.ok(&[
        "network",
        "create",
        "-d",
        "netd",
        "--ipam-driver",
        "null",
        "netdnull",
    ]);
    docker.ok(&[
        &[
            "run",
            "-d",
            "--name",
            "nullweb",
            "--network",
            "netdnull",
            "-p",
            "8082:80",
            IMAGE,
        ][..],
        HTTPD,
    ]
    .concat());
    let address = docker.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.netdnull.IPAddress}}",
        "nullweb",
    ]);
    let endpoints = t.agent.json(&["ps"]);
    let ep = endpoints
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["owner"] == "docker")
        .expect("Docker's endpoint");
    assert_eq!(ep["ip"], address.as_str(), "Docker uses netd's address");
    assert_eq!(
        fetch_soon(&t, &format!("http://{HOST_IP}:8082/")).as_deref(),
        Some(PAGE)
    );
    docker.ok(&["rm", "-f", "nullweb"]);
    docker.ok(&["network", "rm", "netdnull"]);
    assert_eq!(t.agent.json(&["ps"]), Value::Array(Vec::new()));

    let mut docker = docker;
    let forced = docker.stop();
    assert!(forced.is_empty(), "dockerd left things behind: {forced:?}");
}

/// Docker's `-p` and netd's spec parser, side by side on the same specs:
/// what `docker create -p SPEC` records (its PortBindings) against what
/// `netd publish SPEC` publishes, compared per container port. Specs netd
/// refuses on purpose are listed with the reason its message gives.
#[test]
fn port_specs_read_as_dockers_are_published_as_docker_binds_them() {
    require_root!();
    let plugin_dir = Scratch::new();
    let t = Topology::new(&[]);
    let docker = Dockerd::start(&t.host, &plugin_dir.0.join("unused.sock"));
    docker.import_busybox();
    let c = t.container("c", &[]);

    /// `HOSTIP HOSTPORT->CTRPORT/PROTO` per container port; `*` for a host
    /// port Docker or netd chooses.
    fn docker_view(bindings: &Value) -> Vec<String> {
        let mut view = Vec::new();
        for (ctr, list) in bindings.as_object().into_iter().flatten() {
            for binding in list.as_array().into_iter().flatten() {
                let ip = binding["HostIp"].as_str().unwrap_or_default();
                let port = binding["HostPort"].as_str().unwrap_or_default();
                view.push(format!(
                    "{} {}->{ctr}",
                    if ip.is_empty() { "0.0.0.0" } else { ip },
                    if port.is_empty() || port == "0" {
                        "*"
                    } else {
                        port
                    }
                ));
            }
        }
        view.sort();
        view
    }
    fn netd_view(ports: &Value, ephemeral: bool) -> Vec<String> {
        let mut view = Vec::new();
        let list = ports.get("ports").unwrap_or(ports);
        for port in list.as_array().into_iter().flatten() {
            let field = |k: &str| port[k].as_u64().expect(k);
            let (host, host_end) = (field("host_port"), field("host_port_end"));
            let (ctr, ctr_end) = (field("container_port"), field("container_port_end"));
            let ip = port["host_ip"].as_str().expect("host_ip");
            let proto = port["proto"].as_str().expect("proto");
            if ctr == ctr_end && host != host_end {
                // Many host ports for one container port: Docker records
                // the range as one binding.
                view.push(format!("{ip} {host}-{host_end}->{ctr}/{proto}"));
                continue;
            }
            for offset in 0..=(ctr_end - ctr) {
                let shown = if ephemeral {
                    "*".to_owned()
                } else {
                    (host + offset).to_string()
                };
                view.push(format!("{ip} {shown}->{}/{proto}", ctr + offset));
            }
        }
        view.sort();
        view
    }

    // Accepted by both, and the same mappings.
    let same = [
        ("8080:80", false),
        ("8080:80/udp", false),
        ("8080:80/TCP", false),
        ("8080:80/Udp", false),
        ("8080:80/", false),
        ("0:80", true),
        ("127.0.0.1:0:80", true),
        (":80", true),
        ("::80", true),
        ("80", true),
        ("80/udp", true),
        ("127.0.0.1:8080:80", false),
        ("127.0.0.1::80", true),
        ("8080-8082:80-82", false),
        ("8080-8090:80", false),
        ("80-81", true),
        ("published=8080,target=80,protocol=udp", false),
        ("published=8080-8081,target=80-81", false),
        ("target=80", true),
        ("published=8080,target=80,mode=host", false),
    ];
    // Refused by both.
    let refused = [
        "-1:80",
        "8080:",
        "65536:80",
        "8080:80/icmp",
        "1.2.3:8080:80",
        "8090-8080:80",
        "8080-8082:80-81",
    ];
    // Accepted by Docker, refused by netd on purpose: what its message says.
    let stricter = [
        ("8080:80/tcp/udp", "one protocol per spec"),
        (
            "8000-8010-8020:80",
            "\"8000-8010-8020\" is not a port number",
        ),
        ("224.0.0.1:8080:80", "is a multicast address"),
        ("255.255.255.255:8080:80", "is a broadcast address"),
        (
            "[::1]:8080:80",
            "is an IPv6 address: netd publishes on IPv4",
        ),
    ];

    let create = |spec: &str| -> Result<Value, String> {
        let out = docker.docker(&["create", "-p", spec, IMAGE, "/bin/busybox", "true"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let bindings = docker.ok(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", &id]);
        docker.ok(&["rm", &id]);
        Ok(serde_json::from_str(&bindings).expect("PortBindings"))
    };
    let publish = |spec: &str| -> Result<Value, String> {
        let run = t.agent.cli(&["--json", "publish", "--", spec, c.name()]);
        if !run.success() {
            // With --json the error is one JSON object on stdout.
            let error: Value = serde_json::from_str(&run.stdout)
                .unwrap_or_else(|e| panic!("{spec}: {e}: {run:?}"));
            let message = error["error"]["message"].as_str().expect("message");
            assert_eq!(message.lines().count(), 1, "{spec}: one line");
            return Err(message.to_owned());
        }
        t.agent.ok(&["unpublish", "--", spec, c.name()]);
        assert_eq!(t.agent.json(&["ports"]), serde_json::json!([]), "{spec}");
        Ok(serde_json::from_str(&run.stdout).expect("publish JSON"))
    };

    let mut differences = Vec::new();
    for (spec, ephemeral) in same {
        match (create(spec), publish(spec)) {
            (Ok(bindings), Ok(ports)) => {
                let (d, n) = (docker_view(&bindings), netd_view(&ports, ephemeral));
                if d != n {
                    differences.push(format!("{spec}: Docker {d:?}, netd {n:?}"));
                }
            }
            (d, n) => differences.push(format!("{spec}: Docker {d:?}, netd {n:?}")),
        }
    }
    for spec in refused {
        match (create(spec), publish(spec)) {
            (Err(_), Err(message)) => assert!(
                message.contains(&format!("invalid port spec {spec:?}")),
                "{spec}: {message}"
            ),
            (d, n) => differences.push(format!("{spec}: Docker {d:?}, netd {n:?}")),
        }
    }
    for (spec, why) in stricter {
        match (create(spec), publish(spec)) {
            (Ok(_), Err(message)) if message.contains(why) => {}
            (d, n) => differences.push(format!("{spec} (stricter): Docker {d:?}, netd {n:?}")),
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
}

/// `netd network inspect` of the agent's network beside `docker network
/// inspect bridge` (Docker's default network, which it stands for): the
/// same keys at every level Docker prints, the same options, the same
/// values where they do not depend on the machine.
#[test]
fn network_inspect_prints_what_docker_prints_for_its_default_network() {
    require_root!();
    let plugin_dir = Scratch::new();
    let t = Topology::new(&[]);
    let docker = Dockerd::start(&t.host, &plugin_dir.0.join("unused.sock"));
    docker.import_busybox();
    let _c = t.container("c", &[]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "control",
        IMAGE,
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let theirs: Value =
        serde_json::from_str(&docker.ok(&["network", "inspect", "bridge"])).expect("JSON");
    let ours = t.agent.json(&["network", "inspect"]);
    let (theirs, ours) = (&theirs[0], &ours[0]);
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(ours), keys(theirs), "top-level keys");
    assert_eq!(keys(&ours["IPAM"]), keys(&theirs["IPAM"]), "IPAM keys");
    // Docker leaves the default bridge's Gateway out when it found
    // docker0 without one; netd always has one, which Docker prints for
    // the networks it creates.
    let config = keys(&ours["IPAM"]["Config"][0]);
    for key in keys(&theirs["IPAM"]["Config"][0]) {
        assert!(config.contains(&key), "IPAM.Config has {key}: {config:?}");
    }
    assert_eq!(keys(&ours["Options"]), keys(&theirs["Options"]), "Options");
    let (ours_ctr, theirs_ctr) = (
        ours["Containers"]
            .as_object()
            .expect("ours")
            .values()
            .next(),
        theirs["Containers"]
            .as_object()
            .expect("theirs")
            .values()
            .next(),
    );
    // Docker's keys, and netd's `Owner` (which runtime attached it).
    let mut ours_ctr = keys(ours_ctr.expect("our endpoint"));
    assert!(ours_ctr.contains(&"Owner".to_owned()), "{ours_ctr:?}");
    ours_ctr.retain(|key| key != "Owner");
    assert_eq!(
        ours_ctr,
        keys(theirs_ctr.expect("Docker's container")),
        "container keys"
    );
    for key in [
        "Scope",
        "Driver",
        "EnableIPv6",
        "Internal",
        "Attachable",
        "Ingress",
        "ConfigFrom",
        "ConfigOnly",
        "Labels",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    assert_eq!(ours["IPAM"]["Driver"], theirs["IPAM"]["Driver"]);
    assert_eq!(ours["IPAM"]["Options"], theirs["IPAM"]["Options"]);
    for option in [
        "com.docker.network.bridge.default_bridge",
        "com.docker.network.bridge.enable_icc",
        "com.docker.network.bridge.enable_ip_masquerade",
        "com.docker.network.bridge.host_binding_ipv4",
    ] {
        assert_eq!(
            ours["Options"][option], theirs["Options"][option],
            "{option}"
        );
    }
    assert_eq!(ours["Name"], "netd", "the network's own name");
    docker.ok(&["rm", "-f", "control"]);
}

#[test]
fn docker_macvlan_networks_are_netd_lan_networks_with_sources_checked() {
    require_root!();
    let plugin_dir = Scratch::new();
    let plugin_socket = plugin_dir.0.join("netd-docker.sock");
    let socket_arg = plugin_socket.to_string_lossy().into_owned();
    let t = Topology::new(&["--docker-plugin-socket", &socket_arg]);
    let lan = netd_tests::netns::Netns::new("lan");
    netd_tests::netns::veth(&t.host, "lan0", &lan, "eth0");
    lan.ip("addr add 192.168.77.1/24 dev eth0");
    t.host.ip("addr add 192.168.77.2/24 dev lan0");
    let docker = Dockerd::start(&t.host, &plugin_socket);
    docker.import_busybox();

    docker.ok(&[
        "network",
        "create",
        "-d",
        "netd",
        "-o",
        "netd.driver=macvlan",
        "-o",
        "parent=lan0",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        "192.168.77.1",
        // The host's own address: Docker's IPAM must not give it out.
        "--aux-address",
        "host=192.168.77.2",
        "lanet",
    ]);
    let id = docker.ok(&["network", "inspect", "-f", "{{.Id}}", "lanet"]);
    let netd_name = format!("docker-{}", &id[..12]);
    let inspect = t.agent.json(&["network", "inspect", &netd_name]);
    assert_eq!(inspect[0]["Driver"], "macvlan", "{inspect}");
    assert_eq!(inspect[0]["Options"]["parent"], "lan0", "{inspect}");

    // Docker moves netd's device into the container: the LAN is reached,
    // and netd's program, attached before the move, still checks sources.
    docker.ok(&[
        "run",
        "--rm",
        "--network",
        "lanet",
        IMAGE,
        "/bin/busybox",
        "ping",
        "-c1",
        "-W2",
        "192.168.77.1",
    ]);
    let spoofed = t.agent.drops("spoofed");
    let forged = docker.docker(&[
        "run",
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        "--network",
        "lanet",
        IMAGE,
        "sh",
        "-c",
        "/bin/busybox ip addr add 192.168.77.99/24 dev eth0 && /bin/busybox ping -c1 -W2 -I 192.168.77.99 192.168.77.1",
    ]);
    assert!(!forged.status.success(), "a forged source reaches nothing");
    assert!(t.agent.drops("spoofed") > spoofed, "counted as spoofed");
    assert!(
        t.agent.json(&["ps"]).as_array().expect("ps").is_empty(),
        "docker run --rm removed its endpoints"
    );
    docker.ok(&["network", "rm", "lanet"]);
    assert!(t.agent.cli(&["network", "inspect", &netd_name]).code != 0);
}
