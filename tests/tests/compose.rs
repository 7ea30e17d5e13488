// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Docker Compose (Debian's docker-compose 1.29) on netd networks: two
//! projects up at once, each with networks of `driver: netd`, a service on
//! two networks, published ports served by netd alone; the agent and dockerd
//! restarted mid-scenario under load with nothing lost; `docker-compose
//! down` leaving nothing in netd. How dockerd runs: `netd_tests::dockerd`.

use std::{fs, process::Command, thread, time::Duration};

use netd_tests::{
    agent::Agent,
    dockerd::{Dockerd, PAGE, docker_proxies, fetch_soon, nat_rules},
    hold::{BothWays, count},
    netns::Netns,
    require_root,
    topology::{HOST_IP, HttpServer, Scratch, Topology},
    within,
};
use serde_json::Value;

/// The shop project: `web` on `front` and `back`, publishing its page and
/// the load generator's port 7000; `db` on `back` only, whose address
/// Docker takes from a pool and gateway of the file's (a gateway other than
/// the one Docker would pick, so the test sees it passed through).
const SHOP: &str = r#"version: "2.4"
services:
  web:
    image: netd-test/busybox:latest
    command: ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
    # busybox httpd as PID 1 ignores SIGTERM.
    stop_signal: SIGKILL
    ports:
      - "8090:80"
      - "8080:7000"
      - "8080:7000/udp"
    networks: [front, back]
  db:
    image: netd-test/busybox:latest
    command: ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
    stop_signal: SIGKILL
    networks: [back]
networks:
  front:
    driver: netd
  back:
    driver: netd
    ipam:
      config:
        - subnet: 10.96.0.0/24
          gateway: 10.96.0.254
"#;

/// The blog project, up at the same time: one service on a network of its
/// own, also called `front` inside its project.
const BLOG: &str = r#"version: "2.4"
services:
  app:
    image: netd-test/busybox:latest
    command: ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
    stop_signal: SIGKILL
    ports:
      - "8091:80"
    networks: [front]
networks:
  front:
    driver: netd
"#;

/// A compose project: its file in a directory of its own.
struct Project {
    name: &'static str,
    dir: Scratch,
}

impl Project {
    fn new(name: &'static str, file: &str) -> Self {
        let dir = Scratch::new();
        fs::write(dir.0.join("docker-compose.yml"), file).expect("compose file");
        Self { name, dir }
    }

    /// Runs `docker-compose -p NAME ARGS`, asserting success; stdout.
    fn compose(&self, docker: &Dockerd, args: &[&str]) -> String {
        let out = Command::new("docker-compose")
            .current_dir(&self.dir.0)
            .envs(docker.client_env())
            .args(["--no-ansi", "-p", self.name])
            .args(args)
            .output()
            .expect("run docker-compose");
        assert!(
            out.status.success(),
            "docker-compose -p {} {args:?} failed: {}\n--- dockerd log ---\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            docker.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The ID of the container of `service` (its `index`th replica).
    fn container(&self, docker: &Dockerd, service: &str, index: usize) -> String {
        self.compose(docker, &["ps", "-q", service])
            .lines()
            .nth(index)
            .unwrap_or_else(|| panic!("{}: no container {index} of {service}", self.name))
            .to_owned()
    }

    /// The address of `container` on this project's network `network`.
    fn address(&self, docker: &Dockerd, container: &str, network: &str) -> String {
        let template = format!(
            "{{{{(index .NetworkSettings.Networks \"{}_{network}\").IPAddress}}}}",
            self.name
        );
        let ip = docker.ok(&["inspect", "--format", &template, container]);
        assert!(!ip.is_empty(), "{container} has no address on {network}");
        ip
    }

    /// The netd network Docker's network `network` of this project is.
    fn netd_network(&self, docker: &Dockerd, network: &str) -> String {
        let id = docker.ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("{}_{network}", self.name),
        ]);
        format!("docker-{}", &id[..12])
    }
}

/// What `container` fetches from `url` with busybox's wget (its `-T` option
/// crashes in busybox-static 1.35: `timeout` bounds it instead).
fn fetch_in(docker: &Dockerd, container: &str, url: &str) -> Option<String> {
    let out = docker.docker(&[
        "exec",
        container,
        "/bin/busybox",
        "timeout",
        "3",
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
        url,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`fetch_in`], retried for a few seconds: a new container's server takes
/// a moment to listen.
fn fetch_in_soon(docker: &Dockerd, container: &str, url: &str) -> Option<String> {
    within(Duration::from_secs(10), || fetch_in(docker, container, url))
}

/// netd's networks, by name, with their endpoint counts.
fn netd_networks(agent: &Agent) -> Vec<(String, u64)> {
    let mut networks: Vec<(String, u64)> = agent
        .json(&["network", "ls"])
        .as_array()
        .expect("network ls")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().expect("name").to_owned(),
                count(&n["endpoints"]),
            )
        })
        .collect();
    networks.sort();
    networks
}

/// The links in `host` that are netd's: bridges (netd's networks', and any
/// `nd-` one), host ends of veths (`veth`), Docker's ends before it moves
/// them (`dk`).
fn netd_links(agent: &Agent, host: &Netns) -> Vec<String> {
    let bridges: Vec<String> = agent
        .json(&["network", "ls"])
        .as_array()
        .expect("network ls")
        .iter()
        .map(|n| n["bridge"].as_str().expect("bridge").to_owned())
        .collect();
    let links: Value = serde_json::from_str(&host.sh("ip -j link show")).expect("ip -j link");
    links
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|name| {
            ["nd-", "veth", "dk"].iter().any(|p| name.starts_with(p))
                || bridges.iter().any(|b| b == name)
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn two_compose_projects_on_netd_networks_survive_restarts_and_leave_nothing() {
    require_root!();
    let plugin_dir = Scratch::new();
    let plugin_socket = plugin_dir.0.join("netd-docker.sock");
    let socket_arg = plugin_socket.to_string_lossy().into_owned();
    let mut t = Topology::new(&["--docker-plugin-socket", &socket_arg]);
    let before = netd_networks(&t.agent);
    let links_before = netd_links(&t.agent, &t.host);
    // --live-restore: what keeps containers running while dockerd restarts.
    let mut docker = Dockerd::start_with(&t.host, &plugin_socket, &["--live-restore"]);
    docker.import_busybox();

    let shop = Project::new("shop", SHOP);
    let blog = Project::new("blog", BLOG);
    shop.compose(&docker, &["up", "-d"]);
    blog.compose(&docker, &["up", "-d"]);

    // Three Docker networks, three netd networks of their own, with the
    // pool and gateway the file gave.
    let networks = netd_networks(&t.agent);
    for (project, network, endpoints) in
        [(&shop, "front", 1), (&shop, "back", 2), (&blog, "front", 1)]
    {
        let name = project.netd_network(&docker, network);
        assert!(
            networks.contains(&(name.clone(), endpoints)),
            "{}_{network} is {name} with {endpoints} endpoints: {networks:?}",
            project.name
        );
    }
    assert_eq!(networks.len(), before.len() + 3, "{networks:?}");
    let back_network = shop.netd_network(&docker, "back");
    let back = t.agent.json(&["network", "inspect", &back_network]);
    assert_eq!(back[0]["IPAM"]["Config"][0]["Subnet"], "10.96.0.0/24");
    assert_eq!(back[0]["IPAM"]["Config"][0]["Gateway"], "10.96.0.254");

    // Published ports, from the outside client, through netd alone.
    for port in [8090, 8091] {
        assert_eq!(
            fetch_soon(&t, &format!("http://{HOST_IP}:{port}/")).as_deref(),
            Some(PAGE),
            "port {port} from outside"
        );
    }
    let rules = nat_rules(&t.host);
    assert!(
        !rules
            .iter()
            .any(|r| r.contains("8090") || r.contains("8091") || r.contains("8080")),
        "Docker added NAT rules for netd's ports: {rules:?}"
    );
    let proxies = docker_proxies(&t.host, docker.pid());
    assert!(proxies.is_empty(), "docker-proxy runs: {proxies:?}");

    // The services reach each other by address, both ways on `back`.
    let web = shop.container(&docker, "web", 0);
    let db = shop.container(&docker, "db", 0);
    let app = blog.container(&docker, "app", 0);
    let db_ip = shop.address(&docker, &db, "back");
    let web_back = shop.address(&docker, &web, "back");
    let web_front = shop.address(&docker, &web, "front");
    let app_ip = blog.address(&docker, &app, "front");
    assert_eq!(
        fetch_in_soon(&docker, &web, &format!("http://{db_ip}/")).as_deref(),
        Some(PAGE),
        "web reaches db on back"
    );
    assert_eq!(
        fetch_in_soon(&docker, &db, &format!("http://{web_back}/")).as_deref(),
        Some(PAGE),
        "db reaches web on back"
    );
    // And by name: Docker's embedded resolver answers on a netd network as
    // on any user-defined one.
    assert_eq!(
        fetch_in_soon(&docker, &web, "http://db/").as_deref(),
        Some(PAGE),
        "web reaches db by name"
    );
    // A namespace attached by hand to a network Docker made: inspect lists
    // every runtime's endpoint there, with its owner; web reaches it.
    let by_hand = t.container("hand", &["--network", &back_network]);
    let server = HttpServer::start(&by_hand, 80, PAGE);
    let inspect = t.agent.json(&["network", "inspect", &back_network]);
    let mut owners: Vec<(&str, &str)> = inspect[0]["Containers"]
        .as_object()
        .expect("Containers")
        .values()
        .map(|c| {
            (
                c["Owner"].as_str().expect("Owner"),
                c["IPv4Address"].as_str().expect("IPv4Address"),
            )
        })
        .collect();
    owners.sort();
    let hand_ip = t
        .agent
        .json(&["ps"])
        .as_array()
        .expect("ps")
        .iter()
        .find(|ep| ep["netns"] == by_hand.path().to_str().expect("path"))
        .and_then(|ep| ep["ip"].as_str())
        .expect("the endpoint attached by hand")
        .to_owned();
    let mut want = [
        ("docker", format!("{db_ip}/24")),
        ("docker", format!("{web_back}/24")),
        ("netd", format!("{hand_ip}/24")),
    ];
    want.sort();
    let want: Vec<(&str, &str)> = want.iter().map(|(o, a)| (*o, a.as_str())).collect();
    assert_eq!(owners, want, "{inspect}");
    assert_eq!(
        fetch_in_soon(&docker, &web, &format!("http://{hand_ip}/")).as_deref(),
        Some(PAGE),
        "web reaches the endpoint attached by hand"
    );
    drop(server);
    t.agent.ok(&["detach", by_hand.name()]);
    drop(by_hand);

    // The projects are isolated from each other, and db from front.
    for (from, to) in [(&app, &web_front), (&web, &app_ip), (&db, &web_front)] {
        let dropped = t.agent.drops("isolated");
        assert_eq!(
            fetch_in(&docker, from, &format!("http://{to}/")),
            None,
            "{from} reached {to} across networks"
        );
        assert!(
            t.agent.drops("isolated") > dropped,
            "{from} -> {to}: not dropped as isolated"
        );
    }

    // Load through web's published port and from web outwards, while the
    // agent restarts and then dockerd does.
    let web_pid: u32 = docker
        .ok(&["inspect", "--format", "{{.State.Pid}}", &web])
        .parse()
        .expect("web's PID");
    let web_ns = Netns::of_process("web", web_pid);
    let flows = BothWays::start(env!("CARGO_BIN_EXE_netd-loadgen"), &t, &web_ns);
    flows.mark_down(true);
    assert_eq!(t.agent.terminate(), Some(0));
    thread::sleep(Duration::from_secs(2));
    t.agent.launch();
    docker.restart();
    flows.mark_down(false);
    thread::sleep(Duration::from_secs(1));
    let summary = flows.finish();
    eprintln!("{summary}");
    assert_eq!(
        docker.ok(&["inspect", "--format", "{{.State.Pid}}", &web]),
        web_pid.to_string(),
        "web kept running through dockerd's restart"
    );

    // After both restarts Docker drives netd as before: a second db on
    // back, reached from web; both projects still serve.
    shop.compose(&docker, &["up", "-d", "--scale", "db=2"]);
    let db2 = shop.container(&docker, "db", 1);
    let db2_ip = shop.address(&docker, &db2, "back");
    assert_eq!(
        fetch_in_soon(&docker, &web, &format!("http://{db2_ip}/")).as_deref(),
        Some(PAGE),
        "web reaches the new db"
    );
    for port in [8090, 8091] {
        assert_eq!(
            fetch_soon(&t, &format!("http://{HOST_IP}:{port}/")).as_deref(),
            Some(PAGE),
            "port {port} after the restarts"
        );
    }
    assert!(
        networks_hold(&t.agent, &back_network, 3),
        "{:?}",
        netd_networks(&t.agent)
    );

    // down: containers, endpoints, ports, networks, bridges and veths gone.
    drop(web_ns);
    shop.compose(&docker, &["down"]);
    assert_eq!(t.fetch(&format!("http://{HOST_IP}:8090/")), None);
    assert_eq!(
        fetch_soon(&t, &format!("http://{HOST_IP}:8091/")).as_deref(),
        Some(PAGE),
        "blog serves on after shop is down"
    );
    blog.compose(&docker, &["down"]);
    assert_eq!(netd_networks(&t.agent), before);
    assert_eq!(t.agent.json(&["ps"]), Value::Array(Vec::new()));
    assert_eq!(t.agent.json(&["ports"]), Value::Array(Vec::new()));
    assert_eq!(netd_links(&t.agent, &t.host), links_before);

    let forced = docker.stop();
    assert!(forced.is_empty(), "dockerd left things behind: {forced:?}");
}

/// Whether netd network `name` holds `endpoints` endpoints.
fn networks_hold(agent: &Agent, name: &str, endpoints: u64) -> bool {
    netd_networks(agent).contains(&(name.to_owned(), endpoints))
}
