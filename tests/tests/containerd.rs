// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Kubernetes' node path: Debian's containerd (1.6) and its CRI plugin
//! drive netd's CNI plugin, called over the CRI v1 gRPC API as a kubelet
//! calls it (`tests/cri/cri.py`, Debian's python3-grpcio). containerd runs
//! in the test's host namespace and in a mount namespace of its own, with
//! its own `/run` (where it mounts pod namespaces and keeps its shims'
//! sockets) and its root, state and socket in a scratch directory; the
//! agent runs in that mount namespace too, so that it can open the pod
//! namespaces containerd hands the plugin. The images (a pause image and a
//! web image, both busybox-static) are built and imported without any
//! registry.
//!
//! What go-cni sends is what this test checks netd against: capitalised
//! `portMappings` keys, the pod's name in `CNI_ARGS`, DEL at
//! StopPodSandbox (also while the agent is down).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netd_tests::{
    agent::netd_bin,
    netns::{Process, check},
    require_root,
    rootfs::{CgroupParent, HTTPD, busybox_tar},
    topology::{HOST_IP, OUT_IP, Scratch, Topology, udp_query},
};
use serde_json::{Value, json};

/// Debian's python3, which has python3-grpcio and python3-protobuf (a
/// `python3` earlier on PATH may be another).
const PYTHON: &str = "/usr/bin/python3";
const PAUSE_IMAGE: &str = "localhost/netd-test/pause:1";
const WEB_IMAGE: &str = "localhost/netd-test/web:1";
const PAGE: &str = "served through containerd and netd\n";

/// A process holding a private mount namespace with a tmpfs of its own on
/// `/run`: what containerd mounts there (pod namespaces, shim sockets)
/// stays there and goes with the namespace.
struct PrivateRun(Process);

impl PrivateRun {
    fn new() -> Self {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o mode=755,size=64m netd-cri /run && exec sleep infinity");
        let holder = Self(Process::spawn(cmd, "mount namespace holder"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(format!("/proc/{}/mountinfo", holder.pid()))
            .unwrap_or_default()
            .contains(" /run rw")
        {
            assert!(Instant::now() < deadline, "no private /run");
            thread::sleep(Duration::from_millis(20));
        }
        holder
    }

    fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// `nsenter` into the mount namespace (and `net`, when given).
    fn command(&self, net: Option<&Path>, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        if let Some(net) = net {
            cmd.arg(format!("--net={}", net.display()));
        }
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg("--")
            .arg(program);
        cmd
    }
}

/// containerd with its CRI plugin, configured to use netd as its only CNI
/// network.
struct Containerd<'a> {
    run: &'a PrivateRun,
    dir: PathBuf,
    /// The Python modules protoc generated from `tests/cri/runtime_v1.proto`.
    gen_dir: PathBuf,
    cgroups: CgroupParent,
    process: Option<Process>,
}

impl<'a> Containerd<'a> {
    fn start(run: &'a PrivateRun, t: &Topology, dir: &Path) -> Self {
        let cni_bin = dir.join("cni-bin");
        let net_d = dir.join("net.d");
        let gen_dir = dir.join("cri-gen");
        for d in [&cni_bin, &net_d, &gen_dir, &dir.join("logs")] {
            fs::create_dir_all(d).expect("containerd directories");
        }
        // The plugin is the netd binary under the name runtimes look for;
        // containerd also sets up each pod's loopback with the reference
        // plugin.
        std::os::unix::fs::symlink(netd_bin(), cni_bin.join("netd")).expect("install netd");
        std::os::unix::fs::symlink("/usr/lib/cni/loopback", cni_bin.join("loopback"))
            .expect("install loopback (containernetworking-plugins)");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "netd",
            "plugins": [{
                "type": "netd",
                "socket": t.agent.socket(),
                "capabilities": {"portMappings": true},
            }],
        });
        fs::write(net_d.join("10-netd.conflist"), conflist.to_string()).expect("conflist");
        let d = dir.display();
        // Root here lacks CAP_SYS_RESOURCE: containerd may not lower a
        // process's OOM score adjustment, only keep or raise it.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/net.d"
"#
        );
        fs::write(dir.join("config.toml"), config).expect("config.toml");
        let cri_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cri");
        check(
            Command::new("protoc")
                .arg(format!("-I{}", cri_dir.display()))
                .arg(format!("--python_out={}", gen_dir.display()))
                .arg(cri_dir.join("runtime_v1.proto")),
        );

        let log = fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let mut cmd = run.command(Some(&t.host.path()), "containerd");
        cmd.arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let mut containerd = Self {
            run,
            dir: dir.to_owned(),
            gen_dir,
            cgroups: CgroupParent::new("cri"),
            process: Some(Process::spawn(cmd, "containerd")),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while containerd.cri("Version", &json!({})).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up:\n{}",
                containerd.log()
            );
            if containerd.process.as_mut().is_some_and(Process::has_exited) {
                panic!("containerd exited:\n{}", containerd.log());
            }
            thread::sleep(Duration::from_millis(100));
        }
        containerd.import_images();
        containerd
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Builds the pause and web images and imports them where the CRI
    /// plugin looks (containerd's `k8s.io` namespace).
    fn import_images(&self) {
        let rootfs = self.dir.join("rootfs.tar");
        busybox_tar(&self.dir.join("image"), &rootfs, PAGE);
        let pause: &[&str] = &["/bin/busybox", "sleep", "2147483647"];
        for (name, entrypoint) in [(PAUSE_IMAGE, pause), (WEB_IMAGE, HTTPD)] {
            let archive = self
                .dir
                .join(format!("{}.tar", name.replace(['/', ':'], "_")));
            check(
                Command::new(PYTHON)
                    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("cri/cri.py"))
                    .arg("image")
                    .arg(&rootfs)
                    .arg(name)
                    .arg(&archive)
                    .args(entrypoint),
            );
            check(
                self.run
                    .command(None, "ctr")
                    .arg("--address")
                    .arg(self.dir.join("containerd.sock"))
                    .args([
                        "-n",
                        "k8s.io",
                        "images",
                        "import",
                        "--snapshotter",
                        "native",
                    ])
                    .arg(&archive),
            );
        }
    }

    /// One CRI call (`RunPodSandbox`, ...): the answer, or gRPC's error.
    fn cri(&self, call: &str, request: &Value) -> Result<Value, String> {
        let out = Command::new(PYTHON)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("cri/cri.py"))
            .arg(&self.gen_dir)
            .arg(self.dir.join("containerd.sock"))
            .arg(call)
            .arg(request.to_string())
            .output()
            .expect("run the CRI client");
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).expect("CRI answer"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn ok(&self, call: &str, request: &Value) -> Value {
        self.cri(call, request)
            .unwrap_or_else(|e| panic!("{call}: {e}\ncontainerd's log:\n{}", self.log()))
    }

    /// A pod's configuration as a kubelet writes it.
    fn pod_config(&self, namespace: &str, name: &str, ports: &Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "hostname": name,
            "log_directory": self.dir.join("logs").join(name),
            "port_mappings": ports,
            "linux": {"cgroup_parent": self.cgroups.parent()},
        })
    }

    /// RunPodSandbox: the sandbox's ID, or containerd's error.
    fn run_pod(&self, config: &Value) -> Result<String, String> {
        self.cri("RunPodSandbox", &json!({"config": config}))
            .map(|answer| answer["pod_sandbox_id"].as_str().expect("id").to_owned())
    }

    /// A container of `image` running `command` in pod `id`.
    fn start_container(&self, id: &str, config: &Value, name: &str, command: &[&str]) {
        let created = self.ok(
            "CreateContainer",
            &json!({
                "pod_sandbox_id": id,
                "config": {
                    "metadata": {"name": name},
                    "image": {"image": WEB_IMAGE},
                    "command": command,
                    "log_path": format!("{name}.log"),
                },
                "sandbox_config": config,
            }),
        );
        let container = created["container_id"].as_str().expect("container id");
        self.ok("StartContainer", &json!({"container_id": container}));
    }

    /// PodSandboxStatus, verbose: the status and the runtime's info.
    fn pod_status(&self, id: &str) -> (Value, Value) {
        let answer = self.ok(
            "PodSandboxStatus",
            &json!({"pod_sandbox_id": id, "verbose": true}),
        );
        let info = answer["info"]["info"]
            .as_str()
            .map(|text| serde_json::from_str(text).expect("info JSON"))
            .unwrap_or(Value::Null);
        (answer["status"].clone(), info)
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet removes a pod.
    fn remove_pod(&self, id: &str) -> Result<(), String> {
        self.cri("StopPodSandbox", &json!({"pod_sandbox_id": id}))?;
        self.cri("RemovePodSandbox", &json!({"pod_sandbox_id": id}))?;
        Ok(())
    }

    /// The pod namespaces containerd has mounted.
    fn pod_namespaces(&self) -> Vec<String> {
        let listing = check(self.run.command(None, "ls").arg("/run/netns"));
        listing.lines().map(str::to_owned).collect()
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        // Pods a failed test left: removed through containerd while the
        // agent still runs, so their endpoints go too.
        if let Ok(list) = self.cri("ListPodSandbox", &json!({})) {
            for pod in list["items"].as_array().into_iter().flatten() {
                if let Some(id) = pod["id"].as_str() {
                    let _ = self.remove_pod(id);
                }
            }
        }
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
        // Shims that outlived containerd are in the pods' cgroups.
        for hierarchy in ["unified", "pids", "memory"] {
            let procs = Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(self.cgroups.parent().trim_start_matches('/'));
            kill_cgroup(&procs);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Kills every process in cgroup `dir` and below.
fn kill_cgroup(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            kill_cgroup(&entry.path());
        }
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The endpoint `netd ps` lists under `name`.
fn endpoint(t: &Topology, name: &str) -> Option<Value> {
    t.agent
        .json(&["ps"])
        .as_array()
        .expect("ps")
        .iter()
        .find(|ep| ep["name"] == name)
        .cloned()
}

fn fetch_eventually(t: &Topology, url: &str) -> Option<String> {
    for _ in 0..50 {
        if let Some(page) = t.fetch(url) {
            return Some(page);
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn cri_pods_with_host_ports_are_served_and_removed() {
    require_root!();
    let run = PrivateRun::new();
    let mut t = Topology::build(&[], |agent| agent.use_mounts_of(run.pid()));
    let scratch = Scratch::new();
    let ctr = Containerd::start(&run, &t, &scratch.0);

    // A pod with a TCP, a UDP and a host-address-bound hostPort.
    let ports = json!([
        {"protocol": "TCP", "container_port": 80, "host_port": 8080},
        {"protocol": "UDP", "container_port": 9000, "host_port": 9000},
        {"protocol": "TCP", "container_port": 80, "host_port": 8081, "host_ip": HOST_IP},
    ]);
    let web = ctr.pod_config("shop", "web", &ports);
    let id = ctr
        .run_pod(&web)
        .unwrap_or_else(|e| panic!("{e}\n{}", ctr.log()));
    let mut httpd = HTTPD.to_vec();
    httpd.push("-v");
    ctr.start_container(&id, &web, "httpd", &httpd);

    // netd names the pod as Kubernetes does; containerd reports netd's
    // address as the pod's.
    let ep = endpoint(&t, "shop/web").expect("the pod's endpoint");
    assert_eq!(ep["container_id"], id.as_str(), "{ep}");
    assert_eq!(ep["owner"], "cni");
    let (status, info) = ctr.pod_status(&id);
    assert_eq!(status["network"]["ip"], ep["ip"], "{status}");
    assert_eq!(status.get("state"), None, "SANDBOX_READY (0): {status}");
    let mut listed: Vec<String> = t
        .agent
        .json(&["ports"])
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["display"].as_str().expect("display").to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "0.0.0.0:8080->80/tcp",
            "0.0.0.0:9000->9000/udp",
            format!("{HOST_IP}:8081->80/tcp").as_str()
        ]
    );

    // TCP from outside, the client's address kept (httpd's own log).
    assert_eq!(
        fetch_eventually(&t, &format!("http://{HOST_IP}:8080/")).as_deref(),
        Some(PAGE)
    );
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8081/")).as_deref(),
        Some(PAGE)
    );
    // Its flows carry the pod's name too.
    let flows = t.agent.json(&["conntrack"]);
    assert!(
        flows
            .as_array()
            .expect("flows")
            .iter()
            .any(|f| f["endpoint"] == "shop/web"
                && f["src"].as_str().is_some_and(|s| s.starts_with(OUT_IP))),
        "{flows}"
    );
    let log = fs::read_to_string(scratch.0.join("logs/web/httpd.log")).unwrap_or_default();
    assert!(log.contains(OUT_IP), "httpd saw the client as: {log}");
    // UDP to a server in the pod's namespace (entered through the pause
    // process): answered, the client's address kept.
    let pause = info["pid"].as_u64().expect("the pause process's PID");
    let net = PathBuf::from(format!("/proc/{pause}/ns/net"));
    let script = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',9000))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(b'pod:'+a[0].encode()+b':'+d,a)\n";
    let mut echo = Command::new("nsenter");
    echo.arg(format!("--net={}", net.display()))
        .args(["--", PYTHON, "-c", script]);
    let _echo = Process::spawn(echo, "UDP echo in the pod");
    let mut answer = None;
    for _ in 0..20 {
        answer = udp_query(&t.out, 0, HOST_IP, 9000, "ping");
        if answer.as_ref().is_some_and(|(reply, _)| reply != "timeout") {
            break;
        }
    }
    let (reply, from) = answer.expect("a UDP answer");
    assert_eq!(reply, format!("pod:{OUT_IP}:ping"));
    assert_eq!(from, format!("{HOST_IP}:9000"));
    // No netfilter rule and no proxy: netd's datapath did it.
    let nat = t
        .host
        .sh("iptables-nft -t nat -S; iptables-legacy -t nat -S; nft list ruleset");
    assert!(!nat.contains("8080") && !nat.contains("9000"), "{nat}");

    // A second pod on the same hostPort: refused with netd's reason, and
    // nothing of it left; the first still serves.
    let clash = ctr.pod_config(
        "shop",
        "clash",
        &json!([{"container_port": 80, "host_port": 8080}]),
    );
    let refused = ctr.run_pod(&clash).expect_err("hostPort 8080 is taken");
    assert!(
        refused.contains(r#"plugin type="netd" failed (add): 8080/tcp on 0.0.0.0 is already published by endpoint shop/web"#),
        "{refused}"
    );
    assert!(endpoint(&t, "shop/clash").is_none());
    assert_eq!(t.agent.json(&["ps"]).as_array().expect("ps").len(), 1);
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some(PAGE)
    );

    // Stop and Remove: nothing of the pod is left.
    ctr.remove_pod(&id).expect("the pod goes");
    assert_eq!(t.agent.json(&["ps"]), json!([]));
    assert_eq!(t.agent.json(&["ports"]), json!([]));
    assert!(!t.host.ip("-o link show").contains("veth"), "no veth left");
    assert_eq!(t.fetch(&format!("http://{HOST_IP}:8080/")), None);

    // DEL while the agent is down: StopPodSandbox fails with the plugin's
    // retryable error, and succeeds once the agent is back.
    let db = ctr.pod_config(
        "shop",
        "db",
        &json!([{"container_port": 80, "host_port": 8090}]),
    );
    let db_id = ctr.run_pod(&db).expect("the db pod");
    assert!(endpoint(&t, "shop/db").is_some());
    t.agent.kill9();
    let down = ctr
        .cri("StopPodSandbox", &json!({"pod_sandbox_id": db_id}))
        .expect_err("no agent, no teardown");
    assert!(
        down.contains(r#"plugin type="netd" failed (delete): the netd agent is not running"#),
        "{down}"
    );
    t.agent.launch();
    ctr.remove_pod(&db_id)
        .expect("removed once the agent is back");
    assert_eq!(t.agent.json(&["ps"]), json!([]));
    assert_eq!(t.agent.json(&["ports"]), json!([]));
    assert!(!t.host.ip("-o link show").contains("veth"), "no veth left");
    assert_eq!(
        ctr.pod_namespaces(),
        Vec::<String>::new(),
        "no pod namespace left"
    );
    assert_eq!(
        ctr.cri("ListPodSandbox", &json!({})).expect("list"),
        json!({}),
        "no sandbox left"
    );
}
