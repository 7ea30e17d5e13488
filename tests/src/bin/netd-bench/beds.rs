// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Test beds: one copy of the benchmark topology per variant, each in
//! namespaces of its own, so that rounds can go from one variant to the
//! next without reconfiguring anything.
//!
//! ```text
//! out (10.250.0.2) <-veth-> up0 host (10.250.0.1) br0/netd0 (172.30.0.1) <-veth-> ctr (172.30.0.2)
//! ```
//!
//! `ctr` runs the load generator's server on TCP 80 and UDP 9000, `out` one
//! on TCP 7000 (the far end of container egress). Only no-NAT gives `out` a
//! route to the containers.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};
use netd_tests::{
    agent::Agent,
    netns::{Netns, Process, veth},
    topology::wait_listening,
};

use crate::peers::{self, BRIDGE, CTR_IP, GATEWAY, Port, SUBNET, TCP_PORT, UDP_PORT};

pub const OUT_IP: &str = "10.250.0.2";
pub const HOST_IP: &str = "10.250.0.1";
/// The server on `out` that container egress reaches.
pub const EGRESS_PORT: u16 = 7000;
/// CPU of the servers; clients run on CPU 0.
pub const SERVER_CPU: u32 = 1;

/// The datapaths compared.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    /// Routed straight to the container: the limit of this topology.
    NoNat,
    /// Docker 20.10's rules through iptables-legacy.
    IptLegacy,
    /// Docker 20.10's rules through iptables-nft.
    IptNft,
    /// An nftables DNAT map.
    NftMap,
    /// docker-proxy, no NAT rules (userland proxy).
    Proxy,
    /// netd, TC programs.
    Netd,
    /// netd with `--xdp`.
    NetdXdp,
    /// Docker's rules for `userland-proxy: false`: host-local clients are
    /// DNATed in OUTPUT (iptables-nft).
    IptOutput,
    /// dnsmasq serving the names netd's DNS serves (B10; no bed of its own).
    Dnsmasq,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::NoNat => "no NAT",
            Self::IptLegacy => "iptables-legacy",
            Self::IptNft => "iptables-nft",
            Self::NftMap => "nft map",
            Self::Proxy => "docker-proxy",
            Self::Netd => "netd",
            Self::NetdXdp => "netd --xdp",
            Self::IptOutput => "iptables OUTPUT DNAT",
            Self::Dnsmasq => "dnsmasq",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::NoNat => "nn",
            Self::IptLegacy => "il",
            Self::IptNft => "in",
            Self::NftMap => "nm",
            Self::Proxy => "px",
            Self::Netd => "nd",
            Self::NetdXdp => "nx",
            Self::IptOutput => "io",
            Self::Dnsmasq => "dq",
        }
    }

    pub fn is_netd(self) -> bool {
        matches!(self, Self::Netd | Self::NetdXdp)
    }

    fn iptables(self) -> Option<&'static str> {
        match self {
            Self::IptLegacy => Some("iptables-legacy"),
            Self::IptNft | Self::IptOutput => Some("iptables-nft"),
            _ => None,
        }
    }
}

/// One variant's topology, with its servers running. Dropping it stops
/// everything and removes the namespaces.
pub struct Bed {
    pub kind: Kind,
    /// What is published now.
    published: Vec<Port>,
    /// Networks a netd bed's agent has besides its default one (B9).
    networks: usize,
    /// Whether the netfilter ruleset was loaded once.
    loaded: bool,
    // Drop order: processes, then the agent (its `netd down`), then the
    // namespaces.
    servers: Vec<Process>,
    proxy: Option<Process>,
    pub agent: Option<Agent>,
    pub ctr: Netns,
    pub host: Netns,
    pub out: Netns,
}

impl Bed {
    pub fn new(kind: Kind, loadgen: &Path) -> anyhow::Result<Self> {
        let tag = kind.tag();
        let out = Netns::new(&format!("{tag}o"));
        let host = Netns::new(&format!("{tag}h"));
        veth(&out, "eth0", &host, "up0");
        out.ip(&format!("addr add {OUT_IP}/24 dev eth0"));
        host.ip(&format!("addr add {HOST_IP}/24 dev up0"));
        let mut agent = None;
        let ctr = if kind.is_netd() {
            let mut args = vec!["--uplink", "up0", "--subnet", SUBNET];
            if kind == Kind::NetdXdp {
                args.push("--xdp");
            }
            let netd = Agent::start(&host, &args);
            let ctr = Netns::new(&format!("{tag}c"));
            netd.ok(&["attach", ctr.name()]);
            let addr = ctr.sh("ip -4 -o addr show dev eth0");
            if !addr.contains(&format!("{CTR_IP}/")) {
                bail!("netd gave the container {addr:?}, not {CTR_IP}");
            }
            agent = Some(netd);
            ctr
        } else {
            let ctr = Netns::new(&format!("{tag}c"));
            host.ip(&format!("link add {BRIDGE} type bridge"));
            host.ip(&format!("addr add {GATEWAY}/16 dev {BRIDGE}"));
            host.ip(&format!("link set {BRIDGE} up"));
            veth(&ctr, "eth0", &host, "vctr");
            host.ip(&format!("link set vctr master {BRIDGE}"));
            ctr.ip(&format!("addr add {CTR_IP}/16 dev eth0"));
            ctr.ip(&format!("route add default via {GATEWAY}"));
            host.sh("sysctl -qw net.ipv4.ip_forward=1");
            ctr
        };
        let mut bed = Self {
            kind,
            published: Vec::new(),
            networks: 0,
            loaded: false,
            servers: Vec::new(),
            proxy: None,
            agent,
            ctr,
            host,
            out,
        };
        match kind {
            Kind::NoNat => {
                bed.out.ip(&format!("route add {SUBNET} via {HOST_IP}"));
            }
            Kind::Proxy => {
                // docker-proxy closes its listener unless fd 3 is open (it
                // reports readiness there).
                bed.proxy = Some(
                    bed.host
                        .spawn(&format!("{} 3>/dev/null", peers::docker_proxy(&TCP_PORT))),
                );
                wait_listening(&bed.host, TCP_PORT.host, false);
            }
            Kind::IptOutput => {
                bed.host.sh(&format!(
                    "sysctl -qw net.ipv4.conf.{BRIDGE}.route_localnet=1"
                ));
            }
            _ => {}
        }
        bed.set_ports(1)?;
        let server = |ns: &Netns, args: &str| {
            ns.spawn(&format!(
                "{} serve {args} --cpu {SERVER_CPU} >/dev/null",
                loadgen.display()
            ))
        };
        bed.servers.push(server(
            &bed.ctr,
            &format!(
                "--tcp 0.0.0.0:{} --udp 0.0.0.0:{}",
                TCP_PORT.ctr, UDP_PORT.ctr
            ),
        ));
        bed.servers
            .push(server(&bed.out, &format!("--tcp 0.0.0.0:{EGRESS_PORT}")));
        wait_listening(&bed.ctr, TCP_PORT.ctr, false);
        wait_listening(&bed.ctr, UDP_PORT.ctr, true);
        wait_listening(&bed.out, EGRESS_PORT, false);
        Ok(bed)
    }

    /// Where an outside client reaches the container's TCP server.
    pub fn inbound_tcp(&self) -> String {
        match self.kind {
            Kind::NoNat => format!("{CTR_IP}:{}", TCP_PORT.ctr),
            _ => format!("{HOST_IP}:{}", TCP_PORT.host),
        }
    }

    /// Where an outside client reaches the container's UDP server.
    pub fn inbound_udp(&self) -> String {
        match self.kind {
            Kind::NoNat => format!("{CTR_IP}:{}", UDP_PORT.ctr),
            _ => format!("{HOST_IP}:{}", UDP_PORT.host),
        }
    }

    /// Where a client on the host itself reaches the container: directly
    /// for no-NAT, else the published port on 127.0.0.1.
    pub fn host_local_tcp(&self) -> String {
        match self.kind {
            Kind::NoNat => format!("{CTR_IP}:{}", TCP_PORT.ctr),
            _ => format!("127.0.0.1:{}", TCP_PORT.host),
        }
    }

    /// The server container egress goes to.
    pub fn egress_tcp(&self) -> String {
        format!("{OUT_IP}:{EGRESS_PORT}")
    }

    /// Publishes `count` TCP ports in all (see [`peers::published`]).
    pub fn set_ports(&mut self, count: usize) -> anyhow::Result<()> {
        self.publish_set(&peers::published(count))
    }

    /// Makes `ports` exactly what is published: netfilter variants load
    /// the whole ruleset anew, netd unpublishes and publishes the
    /// difference.
    pub fn publish_set(&mut self, ports: &[Port]) -> anyhow::Result<()> {
        match self.kind {
            Kind::NoNat | Kind::Proxy | Kind::Dnsmasq => {}
            Kind::IptLegacy | Kind::IptNft | Kind::IptOutput => {
                let rules = peers::docker_rules(ports, self.kind == Kind::IptOutput);
                let tool = self.kind.iptables().expect("an iptables variant");
                self.restore(&format!("{tool}-restore"), &rules)?;
            }
            Kind::NftMap => {
                let mut text = String::new();
                if self.loaded {
                    text.push_str("delete table ip netbench\n");
                }
                text.push_str(&peers::nft_ruleset(ports));
                self.restore("nft -f -", &text)?;
            }
            Kind::Netd | Kind::NetdXdp => {
                let gone: Vec<Port> = self
                    .published
                    .iter()
                    .filter(|p| !ports.contains(p))
                    .copied()
                    .collect();
                let new: Vec<Port> = ports
                    .iter()
                    .filter(|p| !self.published.contains(p))
                    .copied()
                    .collect();
                self.netd_cli("unpublish", &gone)?;
                self.netd_cli("publish", &new)?;
            }
        }
        self.loaded = true;
        self.published = ports.to_vec();
        Ok(())
    }

    /// `netd publish|unpublish SPEC... CTR`, unless there is nothing to do.
    pub fn netd_cli(&self, verb: &str, ports: &[Port]) -> anyhow::Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let specs: Vec<String> = ports.iter().map(Port::spec).collect();
        let mut args = vec![verb];
        args.extend(specs.iter().map(String::as_str));
        args.push(self.ctr.name());
        let run = self.netd()?.cli(&args);
        if !run.success() {
            bail!("netd {verb}: {}", run.stderr.trim());
        }
        Ok(())
    }

    /// Makes a netd bed's agent hold `count` networks in all, the default
    /// one included (empty networks `bench-N`, each with its bridge, of
    /// [`bench_subnet`]). Other beds have one network whatever is asked.
    pub fn set_networks(&mut self, count: usize) -> anyhow::Result<()> {
        let Some(agent) = &self.agent else {
            return Ok(());
        };
        let want = count.saturating_sub(1);
        while self.networks < want {
            let name = format!("bench-{}", self.networks);
            let subnet = bench_subnet(self.networks);
            let run = agent.cli(&["network", "create", &name, "--subnet", &subnet]);
            if !run.success() {
                bail!("netd network create {name}: {}", run.stderr.trim());
            }
            self.networks += 1;
        }
        if self.networks > want {
            let names: Vec<String> = (want..self.networks)
                .map(|n| format!("bench-{n}"))
                .collect();
            let mut args = vec!["network", "rm"];
            args.extend(names.iter().map(String::as_str));
            let run = agent.cli(&args);
            if !run.success() {
                bail!("netd network rm: {}", run.stderr.trim());
            }
            self.networks = want;
        }
        Ok(())
    }

    /// Records that `port` was published by other means (the timed
    /// operations of B4).
    pub fn note_published(&mut self, port: Port) {
        self.published.push(port);
    }

    /// Feeds `input` to `tool` (a shell command) in the host namespace.
    pub fn restore(&self, tool: &str, input: &str) -> anyhow::Result<()> {
        pipe(&self.host, tool, input)
    }

    /// The iptables binary of this bed.
    pub fn iptables(&self) -> Option<&'static str> {
        self.kind.iptables()
    }

    /// The agent of a netd bed.
    pub fn netd(&self) -> anyhow::Result<&Agent> {
        self.agent.as_ref().context("not a netd bed")
    }
}

impl Bed {
    /// Accumulated run time (ns) and run count of each of this bed's netd
    /// programs, by name, found through the links the agent pins (a program
    /// attached to many interfaces counts once).
    pub fn prog_stats(&self) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
        let links = netd::paths::links_dir(&self.netd()?.bpffs());
        let mut ids = BTreeSet::new();
        for entry in fs::read_dir(&links).with_context(|| format!("reading {}", links.display()))? {
            let path = entry?.path();
            let link = FdLink::from(
                PinnedLink::from_pin(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            );
            ids.insert(link.info()?.program_id());
        }
        let mut stats = BTreeMap::new();
        for info in loaded_programs().filter_map(Result::ok) {
            if ids.contains(&info.id()) {
                let name = full_name(info.name_as_str().unwrap_or("?"));
                let entry = stats.entry(name).or_insert((0, 0));
                entry.0 += info.run_time().as_nanos() as u64;
                entry.1 += info.run_count();
            }
        }
        Ok(stats)
    }
}

/// The kernel keeps 15 bytes of a program's name: the whole name of the
/// netd program it is the start of.
fn full_name(kernel_name: &str) -> String {
    const PROGRAMS: [&str; 3] = ["netd_uplink_tc", "netd_uplink_xdp", "netd_endpoint_tc"];
    PROGRAMS
        .iter()
        .find(|p| p.starts_with(kernel_name))
        .map_or(kernel_name, |p| p)
        .to_owned()
}

/// The subnet of B9's `n`th network: /24s from 10.128.0.0, clear of the
/// beds' own addresses (172.30.0.0/16, 10.250.0.0/24).
pub fn bench_subnet(n: usize) -> String {
    format!("10.{}.{}.0/24", 128 + n / 256, n % 256)
}

/// Runs `script` in `ns` with `input` on its stdin.
pub fn pipe(ns: &Netns, script: &str, input: &str) -> anyhow::Result<()> {
    feed(ns.command("sh").args(["-c", script]), input)
}

/// Runs `cmd` with `input` on its stdin; its stderr is the error if it
/// fails.
pub fn feed(cmd: &mut Command, input: &str) -> anyhow::Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())
        .with_context(|| format!("writing to {cmd:?}"))?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether docker-proxy is there (Debian's docker.io).
pub fn have_docker_proxy() -> bool {
    peers::docker_proxy_bin().exists()
}
