// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd as Docker's network driver, with a real dockerd (Debian's docker.io,
//! 20.10): `docker network create -d netd` and `docker run --network NET -p
//! 8080:80` get netd's bridge, address and eBPF publishing; Docker adds no
//! DNAT rule and runs no docker-proxy for them; `docker rm -f` removes the
//! endpoint and its mapping.
//!
//! dockerd runs inside the topology's host namespace and in a private mount
//! namespace of its own (`unshare --mount`), where tmpfs mounts hide the
//! machine's /run and /etc/docker: what dockerd, containerd and runc write
//! there (plugin spec, trust key, shim sockets) vanishes with that
//! namespace. Its data root, exec root and socket live in a scratch
//! directory; containers' cgroups under a cgroup parent of the test's own;
//! iptables stays on (Docker's default), in the host namespace only.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use netd_tests::{
    netns::{Netns, Process, unique_name},
    require_root,
    rootfs::{self, HTTPD},
    topology::{HOST_IP, SUBNET, Scratch, Topology},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client; /usr/local/bin/docker may be another one.
const DOCKER: &str = "/usr/bin/docker";
const IMAGE: &str = "netd-test/busybox:latest";
const PAGE: &str = "hello from a Docker container on netd\n";
const GATEWAY: &str = "172.30.0.1";

/// The network namespace or mount namespace a process is in, as the kernel
/// names it (`net:[4026532...]`).
fn ns_of(pid: &str, kind: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// PIDs of every process whose `kind` namespace is `ns`.
fn pids_in_ns(kind: &str, ns: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(pid) = name.parse::<i32>()
            && ns_of(&name, kind).as_deref() == Some(ns)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The mount points of every cgroup hierarchy, v1 and v2.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            matches!(fields.get(dash + 1), Some(&"cgroup" | &"cgroup2"))
                .then(|| PathBuf::from(fields[4]))
        })
        .collect()
}

/// Every cgroup directory at or under `dir`, deepest first.
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut tree = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                tree.extend(cgroup_tree(&entry.path()));
            }
        }
    }
    if dir.join("cgroup.procs").exists() {
        tree.push(dir.to_owned());
    }
    tree
}

/// dockerd in the topology's host namespace and a private mount namespace,
/// with everything it writes under a scratch directory. Dropping it stops
/// dockerd, then kills whatever it left (containerd, shims, containers) and
/// removes its cgroups.
struct Dockerd {
    process: Option<Process>,
    /// dockerd's mount namespace: every process in it was started by this
    /// dockerd (it is nobody else's).
    mount_ns: Option<String>,
    /// The cgroup parent of the containers, in every hierarchy.
    cgroup_parent: String,
    dir: PathBuf,
    // Dropped last: removed once every process is gone.
    _scratch: Scratch,
}

impl Dockerd {
    /// Starts dockerd in `host` with netd's driver discoverable as `netd`
    /// at `plugin_socket`, and waits until it answers.
    fn start(host: &Netns, plugin_socket: &Path) -> Self {
        assert!(
            Path::new(DOCKERD).exists(),
            "{DOCKERD} not found: this test needs Debian's docker.io"
        );
        // tmpfs goes over existing directories only: nothing is created on
        // the machine's own filesystem.
        assert!(
            Path::new("/etc/docker").is_dir(),
            "/etc/docker is missing (docker.io ships it)"
        );
        let scratch = Scratch::new();
        let dir = scratch.0.clone();
        let cgroup_parent = unique_name("dk");
        let d = dir.display();
        // /run: shim sockets (/run/containerd/s), /run/docker. /etc/docker:
        // the plugin spec and dockerd's trust key (key.json).
        let script = format!(
            "set -e
mount -t tmpfs -o mode=0755 netd-test-run /run
mount -t tmpfs -o mode=0755 netd-test-etc-docker /etc/docker
mkdir /etc/docker/plugins
echo 'unix://{socket}' > /etc/docker/plugins/netd.spec
exec {DOCKERD} --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid \
  --host unix://{d}/docker.sock --storage-driver vfs \
  --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent /{cgroup_parent} \
  >{d}/dockerd.log 2>&1",
            socket = plugin_socket.display(),
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", host.path().display()))
            .args(["--", "unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", &script]);
        let mut dockerd = Self {
            // nsenter, unshare and sh exec each other: this is dockerd.
            process: Some(Process::spawn(cmd, "dockerd")),
            mount_ns: None,
            cgroup_parent,
            dir,
            _scratch: scratch,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.docker(&["info"]).status.success() {
            let exited = dockerd.process.as_mut().is_some_and(Process::has_exited);
            if exited || Instant::now() > deadline {
                panic!("dockerd did not come up:\n{}", dockerd.log());
            }
            thread::sleep(Duration::from_millis(200));
        }
        let pid = dockerd.pid().to_string();
        let mount_ns = ns_of(&pid, "mnt").expect("dockerd's mount namespace");
        assert_ne!(
            Some(&mount_ns),
            ns_of("self", "mnt").as_ref(),
            "dockerd must run in a mount namespace of its own"
        );
        dockerd.mount_ns = Some(mount_ns);
        dockerd
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().expect("dockerd running").pid()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker client against this dockerd.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            // The client's own files (config.json) stay in the scratch too.
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .arg("--host")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .output()
            .expect("run docker")
    }

    /// Runs `docker ARGS`, asserting success; returns stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n--- dockerd log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs `docker ARGS`, asserting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(!out.status.success(), "docker {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Imports a one-binary image: busybox-static and a page under /www.
    fn import_busybox(&self) {
        let tar = self.dir.join("rootfs.tar");
        rootfs::busybox_tar(&self.dir, &tar, PAGE);
        self.ok(&["import", &tar.to_string_lossy(), IMAGE]);
    }

    /// Stops dockerd (SIGTERM, then SIGKILL), then kills what it leaves:
    /// containers by their cgroups, containerd and shims by the mount
    /// namespace. Removes the containers' cgroups. Returns what it had to
    /// kill or could not remove, for the test to assert on.
    fn stop(&mut self) -> Vec<String> {
        let mut forced = Vec::new();
        if let Some(mut process) = self.process.take() {
            process.signal(Signal::SIGTERM);
            if process.wait_timeout(Duration::from_secs(30)).is_none() {
                forced.push("dockerd ignored SIGTERM for 30 s".to_owned());
            }
            // Drop: SIGKILL if it still runs.
        }
        let groups: Vec<PathBuf> = cgroup_mounts()
            .iter()
            .flat_map(|mount| cgroup_tree(&mount.join(&self.cgroup_parent)))
            .collect();
        for group in &groups {
            for pid in fs::read_to_string(group.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                forced.push(format!("container process {pid} in {}", group.display()));
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(ns) = &self.mount_ns {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = pids_in_ns("mnt", ns);
                if left.is_empty() {
                    break;
                }
                for pid in left {
                    if Instant::now() > deadline {
                        forced.push(format!("process {pid} left in dockerd's mount namespace"));
                    }
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if Instant::now() > deadline + Duration::from_secs(5) {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        for group in groups {
            let deadline = Instant::now() + Duration::from_secs(5);
            // A cgroup whose last process just died may be busy a moment.
            while let Err(err) = fs::remove_dir(&group) {
                if err.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() > deadline {
                    forced.push(format!("cgroup {} not removed: {err}", group.display()));
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        forced
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.process.is_some() {
            // Let Docker undo its containers first (Revoke, Leave,
            // DeleteEndpoint on netd), bounded in time.
            let _ = Command::new("timeout")
                .args(["30", DOCKER])
                .env("DOCKER_CONFIG", self.dir.join("client"))
                .arg("--host")
                .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
                .args(["rm", "-f", "web", "control", "nullweb"])
                .output();
        }
        let forced = self.stop();
        if !forced.is_empty() && !thread::panicking() {
            panic!("dockerd left things behind: {forced:?}");
        }
    }
}

/// The `-A` lines of the NAT table in the host namespace, from both
/// iptables backends (Docker uses whichever `iptables` is).
fn nat_rules(host: &Netns) -> Vec<String> {
    ["iptables-nft", "iptables-legacy"]
        .iter()
        .flat_map(|iptables| {
            let out = host.try_sh(&format!("{iptables} -t nat -S"));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A"))
                .map(|l| format!("{iptables}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The command lines of docker-proxy processes in the host namespace or
/// children of dockerd.
fn docker_proxies(host: &Netns, dockerd: u32) -> Vec<String> {
    let host_ns = format!(
        "net:[{}]",
        fs::metadata(host.path()).expect("host netns").ino()
    );
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args[0].ends_with("docker-proxy") {
            continue;
        }
        let parent = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if parent == Some(dockerd) || ns_of(&pid, "net").as_deref() == Some(&host_ns) {
            found.push(args.join(" "));
        }
    }
    found
}

/// Fetches `url` from the outside client until it answers (a container's
/// server takes a moment to listen), or `None` after 10 s.
fn fetch_soon(t: &Topology, url: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(body) = t.fetch(url) {
            return Some(body);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

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
    // busybox's ping (wget crashes in this minimal image).
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
    let isolated = || t.agent.json(&["stats"])["drops"]["isolated"].as_u64();
    let before = isolated();
    assert!(!pings("web"), "netdnet reached front's address");
    assert!(isolated() > before, "dropped as isolated");
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
