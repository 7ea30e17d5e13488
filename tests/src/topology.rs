// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The topology of the datapath tests, and the servers and clients that run
//! in it:
//!
//! ```text
//! out (10.250.0.2) <-veth-> up0 host (10.250.0.1, netd agent) netd0 <-> containers (172.30.0.0/16)
//! ```
//!
//! `out` has no route to the containers: only published ports reach them.

use std::{
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use crate::{
    agent::Agent,
    netns::{Netns, Process, unique_name, veth},
};

pub const OUT_IP: &str = "10.250.0.2";
pub const HOST_IP: &str = "10.250.0.1";
pub const SUBNET: &str = "172.30.0.0/16";

/// An outside client, a host running `netd agent` on uplink `up0`.
pub struct Topology {
    // Field order is drop order: the agent (and its `netd down`) goes
    // before the namespaces.
    pub agent: Agent,
    pub out: Netns,
    pub host: Netns,
}

impl Topology {
    /// Builds the namespaces and starts the agent with `args` added.
    pub fn new(args: &[&str]) -> Self {
        Self::build(args, |_| {})
    }

    /// [`Topology::new`], with `prepare` given the agent before it starts.
    pub fn build(args: &[&str], prepare: impl FnOnce(&mut Agent)) -> Self {
        let out = Netns::new("out");
        let host = Netns::new("hst");
        veth(&out, "eth0", &host, "up0");
        out.ip(&format!("addr add {OUT_IP}/24 dev eth0"));
        host.ip(&format!("addr add {HOST_IP}/24 dev up0"));
        let mut all = vec!["--uplink", "up0", "--subnet", SUBNET];
        all.extend_from_slice(args);
        let mut agent = Agent::new(&host, &all);
        prepare(&mut agent);
        agent.launch();
        Self { agent, out, host }
    }

    /// Adds `far` (10.251.0.2) behind `out`, which routes to it over a
    /// link of MTU 1400; the host's default route goes through `out`.
    pub fn far(&self) -> Netns {
        let far = Netns::new("far");
        veth(&self.out, "r1", &far, "eth0");
        self.out.ip("addr add 10.251.0.1/24 dev r1");
        self.out.ip("link set r1 mtu 1400");
        far.ip("addr add 10.251.0.2/24 dev eth0");
        far.ip("link set eth0 mtu 1400");
        far.ip("route add default via 10.251.0.1");
        self.out.sh("sysctl -qw net.ipv4.ip_forward=1");
        self.host.ip(&format!("route add default via {OUT_IP}"));
        far
    }

    /// A new namespace, attached (with `args` added to `netd attach`).
    pub fn container(&self, tag: &str, args: &[&str]) -> Netns {
        let ns = Netns::new(tag);
        let mut all = vec!["attach", ns.name()];
        all.extend_from_slice(args);
        self.agent.ok(&all);
        ns
    }

    /// `curl` from the outside client; the body, or `None` if it failed.
    pub fn fetch(&self, url: &str) -> Option<String> {
        fetch(&self.out, url)
    }
}

/// `curl` from `ns`; the body, or `None` if it failed.
pub fn fetch(ns: &Netns, url: &str) -> Option<String> {
    let out = ns.try_sh(&format!("curl -sS -m 3 {url}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until something listens on `port` (TCP, or UDP) in `ns`. A
/// readiness wait, not a speed bar: Python's start takes over 10 s under
/// emulation (the 6.1 VM) on a busy machine.
pub fn wait_listening(ns: &Netns, port: u16, udp: bool) {
    let flag = if udp { "-Huln" } else { "-Htln" };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ns
        .sh(&format!("ss {flag} sport = :{port}"))
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port} in {}",
            ns.name()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("tmp"));
        fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An HTTP server serving `body` on `port` in `ns`; it logs each request's
/// client address to `log`.
pub struct HttpServer {
    pub process: Process,
    pub log: PathBuf,
    _dir: Scratch,
}

impl HttpServer {
    pub fn start(ns: &Netns, port: u16, body: &str) -> Self {
        let dir = Scratch::new();
        let site = dir.0.join("site");
        fs::create_dir_all(&site).expect("site");
        fs::write(site.join("index.html"), body).expect("index");
        let log = dir.0.join("access.log");
        let process = ns.spawn(&format!(
            "python3 -m http.server {port} --directory {} 2>{}",
            site.display(),
            log.display()
        ));
        wait_listening(ns, port, false);
        Self {
            process,
            log,
            _dir: dir,
        }
    }

    /// What the server logged: one line per request, starting with the
    /// client's address.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A UDP server on `port` in `ns` answering each datagram with
/// `TAG:CLIENT_IP:CLIENT_PORT:PAYLOAD`.
pub fn udp_echo(ns: &Netns, port: u16, tag: &str) -> Process {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(b'{tag}:'+a[0].encode()+b':'+str(a[1]).encode()+b':'+d,a)\n"
    );
    let process = ns.spawn(&format!("python3 -c \"{script}\""));
    wait_listening(ns, port, true);
    process
}

/// A TCP server on each of `ports` in `ns` answering every connection with
/// the port it was accepted on, then closing.
pub fn port_echo(ns: &Netns, ports: &[u16]) -> Process {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "import socket,selectors\nsel=selectors.DefaultSelector()\nfor p in [{list}]:\n s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',p)); s.listen(64); sel.register(s,selectors.EVENT_READ,p)\nwhile True:\n for k,_ in sel.select():\n  c,_=k.fileobj.accept(); c.sendall(str(k.data).encode()); c.close()\n"
    );
    let process = ns.spawn(&format!("python3 -c \"{script}\""));
    for port in ports {
        wait_listening(ns, *port, false);
    }
    process
}

/// Sends `payload` from `ns` to `addr:port` over UDP from source port
/// `sport` (0: any) and returns `(reply, replying address:port)`, or `None`
/// after a 2 s timeout.
pub fn udp_query(
    ns: &Netns,
    sport: u16,
    addr: &str,
    port: u16,
    payload: &str,
) -> Option<(String, String)> {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',{sport}))\ns.settimeout(2)\ns.sendto(b'{payload}',('{addr}',{port}))\ntry:\n d,a=s.recvfrom(2048); print(d.decode()); print(a[0]+':'+str(a[1]))\nexcept socket.timeout:\n print('timeout')\n"
    );
    let out = ns.sh(&format!("python3 -c \"{script}\""));
    let mut lines = out.lines();
    match (lines.next(), lines.next()) {
        (Some(reply), Some(from)) => Some((reply.to_owned(), from.to_owned())),
        _ => None,
    }
}

/// The MAC address of `link` in `ns`.
pub fn mac_of(ns: &Netns, link: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&ns.ip(&format!("-j link show {link}"))).expect("ip -j link");
    json[0]["address"].as_str().expect("address").to_owned()
}

/// A TCP server on `port` in `ns` that reads each connection to its end
/// and answers with the number of bytes it read.
pub fn byte_counter(ns: &Netns, port: u16) -> Process {
    let script = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',{port})); s.listen(8)\nwhile True:\n c,_=s.accept(); n=0\n while True:\n  d=c.recv(1<<20)\n  if not d: break\n  n+=len(d)\n c.sendall(str(n).encode()); c.close()\n"
    );
    let process = ns.spawn(&format!("python3 -c \"{script}\""));
    wait_listening(ns, port, false);
    process
}

/// Sends `bytes` bytes from `ns` to `addr:port` in one TCP stream and
/// returns what the peer says it read (see [`byte_counter`]).
pub fn send_bytes(ns: &Netns, addr: &str, port: u16, bytes: usize) -> Option<u64> {
    let script = format!(
        "import socket\ns=socket.create_connection(('{addr}',{port}),timeout=10)\nbuf=bytes(1<<20)\nleft={bytes}\nwhile left>0:\n n=min(left,len(buf)); s.sendall(buf[:n]); left-=n\ns.shutdown(socket.SHUT_WR)\nprint(s.recv(64).decode())\n"
    );
    let out = ns.try_sh(&format!("python3 -c \"{script}\""));
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Downloads `url` from `ns` with curl; the number of bytes received, or
/// `None` if it failed.
pub fn download_size(ns: &Netns, url: &str) -> Option<u64> {
    let out = ns.try_sh(&format!(
        "curl -sS -m 20 -o /dev/null -w '%{{size_download}}' {url}"
    ));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .flatten()
}
