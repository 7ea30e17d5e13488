// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! B10: name lookups from a container. netd's DNS server on the network's
//! gateway against dnsmasq serving the same 10,000 names on the same
//! address (port 5353), both in the agent's namespace and pinned to the
//! server CPU, interleaved in rounds; and what the 10,000 names cost the
//! agent's heap.
//!
//! The client is this binary's own: threads in the container's namespace,
//! pinned to the client CPU, each with one query in flight at a time, a
//! name picked at random among the 10,000 for each query. Its queries are
//! built byte by byte (RFC 1035's header and question); an answer counts
//! only if it has the query's ID, NOERROR and an answer record.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use netd_tests::{
    agent::Agent,
    netns::{NetNsGuard, Netns, Process},
    topology::{Scratch, wait_listening},
};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};
use serde_json::json;

use crate::{
    beds::{Kind, SERVER_CPU},
    measure::{CLIENT_CPU, Measure, busy_cpu_s},
    series::Series,
};

/// Names served, as 100 endpoints of a name and 99 aliases each.
pub const NAMES: usize = 10_000;
const PER_ENDPOINT: usize = 100;
/// dnsmasq's port on the gateway address.
const DNSMASQ_PORT: u16 = 5353;
/// The bed's subnet: a /16 holds the 101 endpoints.
const SUBNET: &str = "172.31.0.0/16";

/// The agent with 10,000 names, dnsmasq with the same, and a client
/// namespace on the network.
pub struct DnsBed {
    // Drop order: dnsmasq, the agent (its `netd down`), the namespaces.
    _dnsmasq: Process,
    _agent: Agent,
    client: Netns,
    _endpoints: Vec<Netns>,
    _host: Netns,
    _dir: Scratch,
    gateway: Ipv4Addr,
    names: Vec<String>,
    /// The agent's heap before and after the names.
    heap_bytes: (u64, u64),
}

fn heap(agent: &Agent) -> anyhow::Result<u64> {
    agent.json(&["stats"])["agent"]["heap_bytes"]
        .as_u64()
        .context("no heap_bytes in `netd stats`")
}

/// Pins every thread of process `pid` to `cpu`.
fn pin(pid: u32, cpu: u32) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("taskset")?;
    if !status.status.success() {
        bail!("taskset {pid}: {}", String::from_utf8_lossy(&status.stderr));
    }
    Ok(())
}

impl DnsBed {
    pub fn new() -> anyhow::Result<Self> {
        let host = Netns::new("dnh");
        // Upstream is nobody: every name asked is a container's.
        let agent = Agent::start(&host, &["--subnet", SUBNET, "--dns-upstream", "192.0.2.53"]);
        let before = heap(&agent)?;
        let mut endpoints = Vec::new();
        let mut names = Vec::new();
        let mut hosts = String::new();
        for e in 0..NAMES / PER_ENDPOINT {
            let ns = Netns::new(&format!("dn{e}"));
            let name = format!("svc{e}");
            let aliases: Vec<String> = (1..PER_ENDPOINT).map(|a| format!("svc{e}-{a}")).collect();
            let attached = agent.json(&[
                "attach",
                ns.name(),
                "--name",
                &name,
                "--alias",
                &aliases.join(","),
            ]);
            let ip = attached["ip"].as_str().context("attach: no ip")?.to_owned();
            for n in std::iter::once(&name).chain(&aliases) {
                hosts.push_str(&format!("{ip} {n}\n"));
                names.push(n.clone());
            }
            endpoints.push(ns);
        }
        let after = heap(&agent)?;
        let client = Netns::new("dnc");
        let attached = agent.json(&["attach", client.name(), "--name", "client"]);
        let gateway: Ipv4Addr = attached["gateway"]
            .as_str()
            .context("attach: no gateway")?
            .parse()
            .context("gateway")?;

        let dir = Scratch::new();
        let hosts_file = dir.0.join("hosts");
        fs::write(&hosts_file, hosts).context("dnsmasq's hosts file")?;
        let dnsmasq = host.spawn(&format!(
            "dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --bind-interfaces \
             --listen-address={gateway} --port={DNSMASQ_PORT} --user=root --pid-file= \
             --log-facility=/dev/null --addn-hosts={}",
            hosts_file.display()
        ));
        wait_listening(&host, DNSMASQ_PORT, true);
        let agent_pid = agent.pid().context("the agent's PID")?;
        pin(agent_pid, SERVER_CPU)?;
        pin(dnsmasq.pid(), SERVER_CPU)?;
        Ok(Self {
            _dnsmasq: dnsmasq,
            _agent: agent,
            client,
            _endpoints: endpoints,
            _host: host,
            _dir: dir,
            gateway,
            names,
            heap_bytes: (before, after),
        })
    }

    /// B10's series: lookups with 1 and 4 clients, each ratio to dnsmasq;
    /// and the agent's heap per name.
    pub fn series(&self, rounds: usize, seconds: f64) -> Vec<Series> {
        let mut all = Vec::new();
        let items = [(Kind::Netd, 53), (Kind::Dnsmasq, DNSMASQ_PORT)];
        for clients in [1, 4] {
            let case = format!(
                "name lookups, {clients} client{}",
                if clients > 1 { "s" } else { "" }
            );
            let mut series = Series::new("B10", case, "queries/s", true, &[Kind::Dnsmasq])
                .cpu("CPU µs/query", 1e6);
            series.run(rounds, &items, |port| {
                self.lookups(SocketAddrV4::new(self.gateway, *port), clients, seconds)
            });
            all.push(series);
        }
        let (before, after) = self.heap_bytes;
        let mut memory = Series::new(
            "B10",
            format!("agent heap per name, {NAMES} names"),
            "bytes/name",
            false,
            &[],
        );
        memory.run(1, &[(Kind::Netd, ())], |()| {
            let per_name = after.saturating_sub(before) as f64 / NAMES as f64;
            Ok(Measure {
                value: per_name,
                cpu_s: 0.0,
                ops: 1.0,
                p50_us: None,
                p99_us: None,
                detail: json!({
                    "heap_before_bytes": before,
                    "heap_after_bytes": after,
                    "names": NAMES,
                    "endpoints": NAMES / PER_ENDPOINT,
                    "includes": "the endpoints' own state, veths and datapath entries",
                }),
            })
        });
        all.push(memory);
        all
    }

    /// `clients` threads asking `server` for random names for `seconds`.
    fn lookups(
        &self,
        server: SocketAddrV4,
        clients: usize,
        seconds: f64,
    ) -> anyhow::Result<Measure> {
        let cpu_before = busy_cpu_s()?;
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let path = self.client.path();
        let results: Vec<anyhow::Result<ClientRun>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let path = path.clone();
                    scope.spawn(move || {
                        let _ns = NetNsGuard::enter(&path);
                        let mut only = CpuSet::new();
                        only.set(CLIENT_CPU as usize).context("CPU set")?;
                        sched_setaffinity(Pid::from_raw(0), &only).context("sched_setaffinity")?;
                        ask(server, &self.names, c as u64 + 1, deadline)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a client panicked")))
                })
                .collect()
        });
        let cpu_s = busy_cpu_s()? - cpu_before;
        let mut latencies = Vec::new();
        let (mut answered, mut failed) = (0u64, 0u64);
        for run in results {
            let run = run?;
            answered += run.answered;
            failed += run.failed;
            latencies.extend(run.latencies_us);
        }
        if answered == 0 {
            bail!("no answer from {server}");
        }
        // More than one lost query in a thousand is a broken run, not a
        // slow one.
        if failed * 1000 > answered {
            bail!(
                "{failed} of {} queries to {server} failed",
                answered + failed
            );
        }
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        Ok(Measure {
            value: answered as f64 / seconds,
            cpu_s,
            ops: answered as f64,
            p50_us: Some(at(0.5)),
            p99_us: Some(at(0.99)),
            detail: json!({"answered": answered, "failed": failed, "clients": clients}),
        })
    }
}

/// What one client thread did.
struct ClientRun {
    answered: u64,
    failed: u64,
    latencies_us: Vec<f64>,
}

/// A standard query for `name`'s A record, recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// One client: queries one at a time until `deadline`.
fn ask(
    server: SocketAddrV4,
    names: &[String],
    seed: u64,
    deadline: Instant,
) -> anyhow::Result<ClientRun> {
    let socket = UdpSocket::bind("0.0.0.0:0").context("client socket")?;
    socket.connect(server).context("connect")?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .context("timeout")?;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut run = ClientRun {
        answered: 0,
        failed: 0,
        latencies_us: Vec::new(),
    };
    let mut buf = [0u8; 512];
    let mut id: u16 = (seed as u16).wrapping_mul(7919);
    while Instant::now() < deadline {
        // xorshift: a name at random, the same sequence for each server.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let name = &names[(state % names.len() as u64) as usize];
        id = id.wrapping_add(1);
        let started = Instant::now();
        socket.send(&query(id, name)).context("send")?;
        let good = loop {
            match socket.recv(&mut buf) {
                // An answer to an earlier, timed-out query: wait on.
                Ok(n) if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) != id => continue,
                Ok(n) => {
                    break n >= 12
                        && buf[3] & 0x0f == 0
                        && u16::from_be_bytes([buf[6], buf[7]]) >= 1;
                }
                Err(_) => break false,
            }
        };
        if good {
            run.answered += 1;
            run.latencies_us.push(started.elapsed().as_secs_f64() * 1e6);
        } else {
            run.failed += 1;
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_rfc_1035_questions() {
        assert_eq!(
            query(0x1234, "svc1-2"),
            [
                0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 6, b's', b'v', b'c', b'1', b'-',
                b'2', 0, 0, 1, 0, 1
            ]
        );
    }
}
