// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `cargo xtask demo`: netd's main job, end to end, entirely inside network
//! namespaces this command creates and removes.
//!
//! Topology: `out` (an outside client, 10.250.0.2) <-veth-> `host`
//! (10.250.0.1, runs `netd agent`) <-bridge, veth-> `ctr` (a container with
//! a real HTTP server). The client reaches the container only through the
//! port netd publishes. Nothing is attached to, or changed on, the machine's
//! own interfaces, routes or firewall; netd pins to a private bpffs.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, cargo, is_root, workspace_root},
    setup,
};

#[derive(clap::Args)]
pub struct Options {
    /// Do not install missing prerequisites first.
    #[arg(long)]
    no_setup: bool,
}

/// The namespaces, processes, mounts and files of one demo run; all removed
/// on drop.
struct Demo {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
    bpffs: Option<PathBuf>,
    cgroup: Option<PathBuf>,
}

impl Demo {
    fn new() -> anyhow::Result<Self> {
        let prefix = format!("netd-demo-{}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&dir)?;
        Ok(Self {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
            bpffs: None,
            cgroup: None,
        })
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn add_ns(&mut self, role: &str) -> anyhow::Result<String> {
        let name = self.ns(role);
        cmd::run(Command::new("ip").args(["netns", "add", &name]))?;
        self.namespaces.push(name.clone());
        self.ip(role, "link set lo up")?;
        Ok(name)
    }

    /// `ip -n NS ...` for the namespace of `role`.
    fn ip(&self, role: &str, args: &str) -> anyhow::Result<()> {
        cmd::run(
            Command::new("ip")
                .args(["-n", &self.ns(role)])
                .args(args.split_whitespace()),
        )
    }

    /// A command run inside the namespace of `role` (nsenter keeps bpffs
    /// visible, unlike `ip netns exec`).
    fn in_ns(&self, role: &str, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns(role)))
            .arg("--")
            .arg(program);
        cmd
    }

    fn spawn(&mut self, mut cmd: Command) -> anyhow::Result<()> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .context("starting a demo process")?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(bpffs) = &self.bpffs {
            let _ = Command::new("umount").arg(bpffs).status();
        }
        if let Some(cgroup) = &self.cgroup {
            // Its processes were the demo's own children, stopped above.
            let _ = fs::remove_dir(cgroup);
        }
        let _ = fs::remove_dir_all(&self.dir);
        eprintln!("demo: removed namespaces {}", self.namespaces.join(", "));
    }
}

/// The root of the cgroup2 hierarchy.
fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            (fields.get(dash + 1) == Some(&"cgroup2") && fields.get(3) == Some(&"/"))
                .then(|| PathBuf::from(fields[4]))
        })
        .ok_or_else(|| anyhow::anyhow!("no cgroup2 hierarchy is mounted"))
}

fn step(text: &str) {
    println!("\n==> {text}");
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads eBPF programs: run it as root");
    }
    if !options.no_setup {
        setup::run()?;
    }
    step("building netd");
    cmd::run(cargo().args(["build", "--package", "netd"]))?;
    let netd = workspace_root().join("target/debug/netd");

    let mut demo = Demo::new()?;
    step(
        "creating namespaces: out (an outside client) <-> host (runs netd agent) ; ctr (a container)",
    );
    demo.add_ns("out")?;
    let host = demo.add_ns("host")?;
    let ctr = demo.add_ns("ctr")?;
    demo.ip(
        "out",
        &format!("link add eth0 type veth peer name up0 netns {host}"),
    )?;
    for (role, link, addr) in [
        ("out", "eth0", "10.250.0.2/24"),
        ("host", "up0", "10.250.0.1/24"),
    ] {
        demo.ip(role, &format!("addr add {addr} dev {link}"))?;
        demo.ip(role, &format!("link set {link} up"))?;
    }
    demo.ip("host", "route add default via 10.250.0.2")?;

    // A private bpffs for netd's pins: the machine's /sys/fs/bpf stays as is.
    let bpffs = demo.dir.join("bpffs");
    fs::create_dir_all(&bpffs)?;
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))?;
    demo.bpffs = Some(bpffs.clone());
    let pins = bpffs.join("netd");
    // A cgroup of the demo's own for host-local access: socket hooks never
    // go on the machine's root cgroup.
    let cgroup = cgroup2_root()?.join(&demo.prefix);
    fs::create_dir(&cgroup)?;
    demo.cgroup = Some(cgroup.clone());

    step("netd agent in the host namespace (uplink up0, bridge netd0, subnet 172.30.0.0/16)");
    let dir = demo.dir.clone();
    let netd_env = |cmd: &mut Command| {
        cmd.env("NETD_SOCKET", dir.join("netd.sock"))
            .env("NETD_STATE_DIR", dir.join("state"))
            .env("NETD_BPFFS", &pins)
            .env("NETD_CGROUP", &cgroup);
    };
    let mut agent = demo.in_ns("host", netd.to_str().unwrap_or("netd"));
    agent.args(["agent", "--subnet", "172.30.0.0/16", "--uplink", "up0"]);
    netd_env(&mut agent);
    demo.spawn(agent)?;
    // The CLI talks to the agent over its socket, from anywhere.
    let netd_cli = |args: &[&str]| -> anyhow::Result<String> {
        let mut cmd = Command::new(&netd);
        cmd.args(args);
        netd_env(&mut cmd);
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("netd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for _ in 0..100 {
        if netd_cli(&["status"]).is_ok() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    print!("{}", netd_cli(&["status"])?);

    step(&format!(
        "netd attach {ctr} --name web: a veth, an address and a route for the container"
    ));
    print!("{}", netd_cli(&["attach", &ctr, "--name", "web"])?);

    step("starting an HTTP server in the container (python3 -m http.server 80)");
    let site = demo.dir.join("site");
    fs::create_dir_all(&site)?;
    fs::write(
        site.join("index.html"),
        "Hello from the container, published by netd\n",
    )?;
    let mut server = demo.in_ns("ctr", "python3");
    server
        .args(["-m", "http.server", "80", "--directory"])
        .arg(&site)
        .stderr(Stdio::null())
        .stdout(Stdio::null());
    demo.spawn(server)?;
    thread::sleep(Duration::from_millis(700));

    step("netd publish 8080:80 web: one map update, no iptables rule, no proxy");
    print!("{}", netd_cli(&["publish", "8080:80", "web"])?);

    step("the outside client fetches the page through the host: curl http://10.250.0.1:8080/");
    let page = demo
        .in_ns("out", "curl")
        .args(["-sS", "-m", "5", "http://10.250.0.1:8080/"])
        .output()?;
    if !page.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&page.stderr));
    }
    print!("{}", String::from_utf8_lossy(&page.stdout));

    step(
        "a host process (in the demo's cgroup) uses the same port, no proxy: curl http://127.0.0.1:8080/ and [::1]",
    );
    for url in ["http://127.0.0.1:8080/", "http://[::1]:8080/"] {
        let page = demo
            .in_ns("host", "sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec curl -sS -m 5 -g '{url}'",
                cgroup.display()
            ))
            .output()?;
        if !page.status.success() {
            bail!(
                "curl {url} failed: {}",
                String::from_utf8_lossy(&page.stderr)
            );
        }
        print!("{url}: {}", String::from_utf8_lossy(&page.stdout));
    }

    step("the container reaches the outside, masqueraded: curl from ctr to a server in out");
    let outside = demo.dir.join("outside");
    fs::create_dir_all(&outside)?;
    fs::write(outside.join("index.html"), "Hello from the outside\n")?;
    let log = demo.dir.join("outside.log");
    let mut server = demo.in_ns("out", "python3");
    server
        .args(["-m", "http.server", "80", "--directory"])
        .arg(&outside)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?);
    demo.spawn(server)?;
    thread::sleep(Duration::from_millis(700));
    let page = demo
        .in_ns("ctr", "curl")
        .args(["-sS", "-m", "5", "http://10.250.0.2/"])
        .output()?;
    if !page.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&page.stderr));
    }
    print!("{}", String::from_utf8_lossy(&page.stdout));
    let seen = fs::read_to_string(&log)?;
    println!(
        "the server saw the request come from: {}",
        seen.lines()
            .find(|l| l.contains("GET"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("?")
    );

    step("netd ps and netd ports: the mapping and its counters");
    print!("{}", netd_cli(&["ps"])?);
    print!("{}", netd_cli(&["ports"])?);

    step("netd conntrack: the flow, translated in BPF (the client's address is kept)");
    print!("{}", netd_cli(&["conntrack"])?);

    let ports_pin = bpffs.join("netd/NETD_PORTS");
    step(&format!("bpftool map dump pinned {}", ports_pin.display()));
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(&ports_pin)
        .output()?;
    print!("{}", String::from_utf8_lossy(&dump.stdout));

    step("the host namespace's firewall: nft list ruleset (empty: netd adds no rule)");
    let nft = demo
        .in_ns("host", "nft")
        .args(["list", "ruleset"])
        .output()?;
    println!(
        "{}",
        if nft.stdout.is_empty() {
            "(no rules)".into()
        } else {
            String::from_utf8_lossy(&nft.stdout)
        }
    );

    step("netd down: removes the veth, the bridge, the programs, the pins and the state");
    print!("{}", netd_cli(&["down"])?);
    Ok(())
}
