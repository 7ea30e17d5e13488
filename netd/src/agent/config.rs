// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd agent`'s flags and how they become the network's settings.
//!
//! Saved state wins over defaults: a restarted agent keeps its network. A
//! flag given explicitly that contradicts the saved network is refused
//! rather than silently ignored or applied half-way.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

use super::{error::AgentError, ipam, state::NetworkState};
use crate::{
    datapath::{
        TcMode,
        features::{CGROUP_SOCK_ADDR_SINCE, Features, REDIRECT_PEER_SINCE, TCX_SINCE},
    },
    netlink::Netlink,
    paths,
};

/// Flags of `netd agent`; each has an environment fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct Flags {
    /// The bridge containers attach to [default: netd0]
    #[arg(long, env = "NETD_BRIDGE")]
    pub bridge: Option<String>,
    /// The network's IPv4 subnet [default: the first of Docker's default
    /// pools (172.17-31.0.0/16, then 192.168.0.0/16 in /20s) that overlaps no
    /// route or address here]
    #[arg(long, env = "NETD_SUBNET")]
    pub subnet: Option<Ipv4Net>,
    /// The gateway address, assigned to the bridge [default: the subnet's
    /// first host address]
    #[arg(long, env = "NETD_GATEWAY")]
    pub gateway: Option<Ipv4Addr>,
    /// MTU of the bridge and the containers' interfaces [default: the
    /// uplink's MTU, else 1500]
    #[arg(long, env = "NETD_MTU")]
    pub mtu: Option<u32>,
    /// Interface(s) towards the outside world, where published ports are
    /// served; repeat or comma-separate [default: the interface of the
    /// default route]
    #[arg(long, env = "NETD_UPLINK", value_delimiter = ',')]
    pub uplink: Vec<String>,
    /// Where state is kept.
    #[arg(long, env = "NETD_STATE_DIR", default_value = paths::STATE_DIR)]
    pub state_dir: PathBuf,
    /// Bytes the state journal keeps preallocated, so that unpublish and
    /// detach still work when the state directory's filesystem is full
    /// (a detach takes about 220 bytes, an unpublish about 110); additions
    /// are refused once this much cannot be kept free. 0: none.
    #[arg(long, env = "NETD_STATE_RESERVE", default_value_t = crate::agent::state::DEFAULT_RESERVE)]
    pub state_reserve: u64,
    /// netd's directory on a bpffs, for pinned maps and programs.
    #[arg(long, env = "NETD_BPFFS", default_value = paths::BPFFS_DIR)]
    pub bpffs: PathBuf,
    /// The API socket.
    #[arg(long, env = "NETD_SOCKET", default_value = paths::SOCKET)]
    pub socket: PathBuf,
    /// Also translate published ports in XDP on the uplinks (the driver
    /// hook), before TC.
    #[arg(long, env = "NETD_XDP")]
    pub xdp: bool,
    /// How packets enter containers: `peer` (bpf_redirect_peer, straight
    /// into the container's namespace, kernel >= 5.10) or `egress`
    /// (bpf_redirect to the host veth, any kernel).
    #[arg(long, env = "NETD_REDIRECT", value_enum, default_value_t = RedirectFlag::Peer)]
    pub redirect: RedirectFlag,
    /// How the TC programs are attached: `auto` (TCX where the kernel has
    /// it, 6.6 and later, else a clsact filter through netlink), `tcx` or
    /// `netlink`.
    #[arg(long, env = "NETD_TC_ATTACH", value_enum, default_value_t = TcAttachFlag::Auto)]
    pub tc_attach: TcAttachFlag,
    /// Conntrack entries (two per flow), allocated up front: 168 bytes
    /// each, 84 MiB at the default, which holds as many flows as
    /// netfilter's nf_conntrack_max does on a host of a few GiB.
    #[arg(long, env = "NETD_CT_MAX", default_value_t = 524_288)]
    pub ct_max: u32,
    /// Seconds between conntrack garbage collections.
    #[arg(long, env = "NETD_CT_GC_INTERVAL", default_value_t = 10)]
    pub ct_gc_interval: u64,
    /// A network option, as Docker's `docker network create -o`, repeatable:
    /// com.docker.network.bridge.name, .enable_icc, .enable_ip_masquerade,
    /// .host_binding_ipv4, com.docker.network.driver.mtu
    #[arg(
        short = 'o',
        long = "opt",
        env = "NETD_OPT",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub options: Vec<String>,
    /// An internal network: no traffic to or from outside at all.
    #[arg(long, env = "NETD_INTERNAL")]
    pub internal: bool,
    /// The source address masqueraded flows leave with [default: the
    /// address of the uplink they leave by]
    #[arg(long, env = "NETD_MASQUERADE_ADDRESS")]
    pub masquerade_address: Option<Ipv4Addr>,
    /// Source ports masquerade and hairpin choose from; keep them out of the
    /// host's ephemeral range (ip_local_port_range).
    #[arg(
        long,
        env = "NETD_MASQUERADE_PORTS",
        default_value = "61000-65535",
        value_name = "FIRST-LAST"
    )]
    pub masquerade_ports: String,
    /// A conntrack timeout, STATE=SECONDS, repeatable; STATE is one of
    /// syn_sent, syn_recv, established, fin_wait, time_wait, close, udp,
    /// udp_stream [default: netfilter's]
    #[arg(
        long = "ct-timeout",
        env = "NETD_CT_TIMEOUT",
        value_delimiter = ',',
        value_name = "STATE=SECONDS"
    )]
    pub ct_timeouts: Vec<String>,
    /// The cgroup v2 whose processes reach published ports through the
    /// host's addresses (127.0.0.1, [::1], any local address) by socket-level
    /// translation, or `none` [default: the root of the cgroup2 hierarchy]
    #[arg(long, env = "NETD_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// Refuse host processes binding a published port (EADDRINUSE) instead
    /// of letting them shadow it.
    #[arg(long, env = "NETD_PROTECT_PORTS")]
    pub protect_ports: bool,
    /// Also serve Docker's remote network driver protocol on this Unix
    /// socket, so that `docker network create -d netd` uses this network:
    /// name it in /etc/docker/plugins/netd.spec (`unix://PATH`) or put it
    /// at /run/docker/plugins/netd.sock [default: off]
    #[arg(long, env = "NETD_DOCKER_PLUGIN_SOCKET", value_name = "PATH")]
    pub docker_plugin_socket: Option<PathBuf>,
    /// Where names that are not containers' are forwarded: resolver
    /// addresses (port 53), repeat or comma-separate [default: the
    /// nameservers of the agent's /etc/resolv.conf]
    #[arg(
        long,
        env = "NETD_DNS_UPSTREAM",
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub dns_upstream: Vec<std::net::IpAddr>,
    /// Serve no DNS on the networks' gateways (containers are then told no
    /// nameserver of netd's).
    #[arg(long, env = "NETD_NO_DNS", conflicts_with = "dns_upstream")]
    pub no_dns: bool,
    /// Also serve Prometheus metrics (`GET /metrics`) on this TCP address,
    /// e.g. 127.0.0.1:9462; they are always on the API socket [default:
    /// off]
    #[arg(long, env = "NETD_METRICS_ADDRESS", value_name = "ADDR:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// What the agent runs with, once flags, saved state and the namespace
/// have been reconciled.
#[derive(Clone, Debug)]
pub struct Config {
    pub network: NetworkState,
    pub uplinks: Vec<String>,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    pub xdp: bool,
    pub redirect: u32,
    /// What the kernel offers, and the TC attach mode picked from it.
    pub features: Features,
    pub tc_mode: TcMode,
    /// Features the kernel lacks, each a one-line warning at start.
    pub degraded: Vec<String>,
    pub ct_max: u32,
    pub ct_gc_interval: std::time::Duration,
    pub ct_timeouts: netd_common::ct::Timeouts,
    pub masquerade_address: Option<Ipv4Addr>,
    pub masquerade_ports: (u16, u16),
    /// Where the socket programs attach; `None`: host-local access off (no
    /// cgroup2 here).
    pub cgroup: Option<PathBuf>,
    pub protect_ports: bool,
    /// Where Docker's network driver is served (`agent::docker`); `None`:
    /// not served.
    pub docker_plugin_socket: Option<PathBuf>,
    /// Where the networks' DNS servers forward; `None`: no DNS served.
    pub dns_upstream: Option<crate::dns::Upstream>,
    /// Where metrics are served over TCP; `None`: only on the API socket.
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// The agent's own resolvers, which its DNS servers forward to by default.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The root of the cgroup2 hierarchy, from /proc/self/mountinfo.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        // Field 4 is the mount's root inside the filesystem: "/" for the
        // hierarchy's root.
        let point = fields.get(4)?;
        (fields.get(dash + 1) == Some(&"cgroup2") && fields.get(3) == Some(&"/"))
            .then(|| PathBuf::from(point))
    })
}

/// The network settings that `-o` options give.
#[derive(Default)]
pub(super) struct NetworkOptions {
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    pub icc: Option<bool>,
    pub masquerade: Option<bool>,
    pub host_binding: Option<Ipv4Addr>,
}

fn parse_bool(key: &str, value: &str) -> Result<bool, AgentError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(AgentError::OptionValue {
            key: key.to_owned(),
            value: value.to_owned(),
            why: "expected true or false",
        }),
    }
}

impl NetworkOptions {
    /// Parses `-o KEY=VALUE` options, merged with the flags that say the
    /// same (`--bridge`, `--mtu`): both given and different is an error.
    fn parse(options: &[String], flags: &Flags) -> Result<Self, AgentError> {
        Self::parse_over(
            options,
            Self {
                bridge: flags.bridge.clone(),
                mtu: flags.mtu,
                ..Self::default()
            },
        )
    }

    /// Parses `-o KEY=VALUE` options alone (`netd network create`).
    pub(super) fn parse_given(options: &[String]) -> Result<Self, AgentError> {
        let parsed = Self::parse_over(options, Self::default())?;
        if let Some(bridge) = &parsed.bridge {
            check_ifname(bridge).map_err(|why| AgentError::BridgeName {
                name: bridge.clone(),
                why,
            })?;
        }
        if let Some(mtu) = parsed.mtu {
            check_mtu(mtu)?;
        }
        Ok(parsed)
    }

    fn parse_over(options: &[String], mut parsed: Self) -> Result<Self, AgentError> {
        for option in options {
            let Some((key, value)) = option.split_once('=') else {
                return Err(AgentError::UnknownOption(option.clone()));
            };
            let bad = |why| AgentError::OptionValue {
                key: key.to_owned(),
                value: value.to_owned(),
                why,
            };
            match key {
                "com.docker.network.bridge.name" => {
                    if parsed.bridge.as_deref().is_some_and(|b| b != value) {
                        return Err(bad("it differs from --bridge"));
                    }
                    parsed.bridge = Some(value.to_owned());
                }
                "com.docker.network.driver.mtu" => {
                    let mtu = value.parse().map_err(|_| bad("expected a number"))?;
                    if parsed.mtu.is_some_and(|m| m != mtu) {
                        return Err(bad("it differs from --mtu"));
                    }
                    parsed.mtu = Some(mtu);
                }
                "com.docker.network.bridge.enable_icc" => {
                    parsed.icc = Some(parse_bool(key, value)?)
                }
                "com.docker.network.bridge.enable_ip_masquerade" => {
                    parsed.masquerade = Some(parse_bool(key, value)?);
                }
                "com.docker.network.bridge.host_binding_ipv4" => {
                    parsed.host_binding =
                        Some(value.parse().map_err(|_| bad("expected an IPv4 address"))?);
                }
                _ => return Err(AgentError::UnknownOption(key.to_owned())),
            }
        }
        Ok(parsed)
    }
}

fn parse_port_range(text: &str) -> Result<(u16, u16), AgentError> {
    let bad = || AgentError::MasqueradePorts(text.to_owned());
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let (first, last): (u16, u16) = (
        first.parse().map_err(|_| bad())?,
        last.parse().map_err(|_| bad())?,
    );
    if first == 0 || last < first {
        return Err(bad());
    }
    Ok((first, last))
}

pub const DEFAULT_BRIDGE: &str = "netd0";
const DEFAULT_MTU: u32 = 1500;

/// Checks an interface name the kernel would accept (IFNAMSIZ - 1 bytes, no
/// '/', ':' or whitespace, not "." or "..").
pub fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 15 {
        return Err("Linux interface names are at most 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are not interface names");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("it contains '/', ':' or whitespace");
    }
    Ok(())
}

pub(super) fn check_mtu(mtu: u32) -> Result<u32, AgentError> {
    if (68..=65535).contains(&mtu) {
        Ok(mtu)
    } else {
        Err(AgentError::Mtu(mtu))
    }
}

/// A setting that a request for a network (the agent's flags for the
/// saved default network, a conflist, `exist_ok` creation) gives otherwise
/// than the network has it.
pub(super) struct Contradiction {
    /// As the agent's flag names it (`subnet`, `opt com.docker...`).
    pub setting: &'static str,
    pub given: String,
    pub existing: String,
}

/// The first setting given that `net` has otherwise; settings not given
/// (and `internal` false) agree with anything.
pub(super) fn contradiction(
    net: &NetworkState,
    subnet: Option<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
    internal: bool,
    options: &NetworkOptions,
) -> Option<Contradiction> {
    fn differs<T: PartialEq + ToString>(
        setting: &'static str,
        given: Option<T>,
        existing: &T,
    ) -> Option<Contradiction> {
        given
            .filter(|given| given != existing)
            .map(|given| Contradiction {
                setting,
                given: given.to_string(),
                existing: existing.to_string(),
            })
    }
    differs("bridge", options.bridge.clone(), &net.bridge)
        .or_else(|| differs("subnet", subnet.map(|s| s.trunc()), &net.subnet))
        .or_else(|| differs("gateway", gateway, &net.gateway))
        .or_else(|| differs("mtu", options.mtu, &net.mtu))
        .or_else(|| {
            differs(
                "opt com.docker.network.bridge.enable_icc",
                options.icc,
                &net.icc,
            )
        })
        .or_else(|| {
            differs(
                "opt com.docker.network.bridge.enable_ip_masquerade",
                options.masquerade,
                &net.masquerade,
            )
        })
        .or_else(|| {
            differs(
                "opt com.docker.network.bridge.host_binding_ipv4",
                options.host_binding,
                &net.host_binding,
            )
        })
        .or_else(|| differs("internal", internal.then_some(true), &net.internal))
}

impl Config {
    /// Reconciles `flags` with the saved network (if any) and this
    /// namespace. Changes nothing.
    pub async fn resolve(
        flags: &Flags,
        saved: Option<&NetworkState>,
        state_path: &std::path::Path,
        nl: &Netlink,
    ) -> Result<Self, AgentError> {
        let options = NetworkOptions::parse(&flags.options, flags)?;
        if let Some(bridge) = &options.bridge {
            check_ifname(bridge).map_err(|why| AgentError::BridgeName {
                name: bridge.clone(),
                why,
            })?;
        }
        if let Some(mtu) = options.mtu {
            check_mtu(mtu)?;
        }
        let masquerade_ports = parse_port_range(&flags.masquerade_ports)?;
        let links = nl.links().await?;
        let uplinks = if flags.uplink.is_empty() {
            default_uplink(nl, &links).await?.into_iter().collect()
        } else {
            for uplink in &flags.uplink {
                if !links.iter().any(|l| &l.name == uplink) {
                    return Err(AgentError::UnknownUplink(uplink.clone()));
                }
            }
            flags.uplink.clone()
        };

        let network = match saved {
            Some(saved) => {
                if let Some(c) =
                    contradiction(saved, flags.subnet, flags.gateway, flags.internal, &options)
                {
                    return Err(AgentError::ConfigMismatch {
                        flag: c.setting,
                        given: c.given,
                        saved: c.existing,
                        path: state_path.to_owned(),
                    });
                }
                saved.clone()
            }
            None => {
                let bridge = options
                    .bridge
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
                let bridge_index = links.iter().find(|l| l.name == bridge).map(|l| l.index);
                let in_use = networks_in_use(nl, bridge_index).await?;
                let (subnet, gateway) = ipam::choose(flags.subnet, flags.gateway, &in_use)?;
                let uplink_mtu = uplinks
                    .first()
                    .and_then(|name| links.iter().find(|l| &l.name == name))
                    .map(|l| l.mtu);
                let mtu = check_mtu(options.mtu.or(uplink_mtu).unwrap_or(DEFAULT_MTU))?;
                NetworkState {
                    id: super::random_hex(32),
                    name: crate::api::DEFAULT_NETWORK.to_owned(),
                    created: humantime::format_rfc3339_nanos(std::time::SystemTime::now())
                        .to_string(),
                    bridge,
                    subnet,
                    gateway,
                    mtu,
                    icc: options.icc.unwrap_or(true),
                    masquerade: options.masquerade.unwrap_or(true),
                    internal: flags.internal,
                    host_binding: options.host_binding.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    index: netd_common::endpoint::DEFAULT_NETWORK,
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    docker_id: None,
                    driver: super::state::Driver::Bridge,
                    ip_range: None,
                    aux_addresses: BTreeMap::new(),
                }
            }
        };
        if let Some(link) = links.iter().find(|l| l.name == network.bridge)
            && link.kind.as_deref() != Some("bridge")
        {
            return Err(AgentError::NotABridge {
                name: network.bridge.clone(),
                kind: link.kind.clone().unwrap_or_else(|| "physical".to_owned()),
            });
        }
        if flags.ct_max < 2 {
            return Err(AgentError::CtMax(flags.ct_max));
        }
        let mut ct_timeouts = netd_common::ct::Timeouts::default();
        for setting in &flags.ct_timeouts {
            let parsed = setting
                .split_once('=')
                .and_then(|(name, secs)| Some((name, secs.parse::<u64>().ok()?)));
            match parsed {
                Some((name, secs)) if secs > 0 && ct_timeouts.set(name, secs) => {}
                _ => return Err(AgentError::CtTimeout(setting.clone())),
            }
        }
        let features = Features::probe();
        let mut degraded = Vec::new();
        let tc_mode = pick_tc_mode(flags.tc_attach, &features)?;
        let mut redirect = if flags.redirect == RedirectFlag::Egress {
            netd_common::endpoint::REDIRECT_EGRESS
        } else {
            netd_common::endpoint::REDIRECT_PEER
        };
        if redirect == netd_common::endpoint::REDIRECT_PEER && !features.redirect_peer {
            degraded.push(format!(
                "redirect: egress, not peer (bpf_redirect_peer needs Linux {REDIRECT_PEER_SINCE}, this is {})",
                features.release
            ));
            redirect = netd_common::endpoint::REDIRECT_EGRESS;
        }
        let mut cgroup = match &flags.cgroup {
            Some(path) if path.as_os_str() == "none" => None,
            Some(path) => {
                if !path.join("cgroup.procs").exists() {
                    return Err(AgentError::NotACgroup(path.clone()));
                }
                Some(path.clone())
            }
            None => cgroup2_root(),
        };
        if cgroup.is_some() && !features.cgroup_sock_addr {
            degraded.push(format!(
                "host-local access off: the cgroup socket hooks need Linux {CGROUP_SOCK_ADDR_SINCE}, this is {}",
                features.release
            ));
            cgroup = None;
        }
        if !features.btf {
            degraded.push(
                "no kernel BTF (/sys/kernel/btf/vmlinux): bpftool prints pinned maps without field names"
                    .to_owned(),
            );
        }
        Ok(Self {
            network,
            uplinks,
            state_dir: flags.state_dir.clone(),
            bpffs: flags.bpffs.clone(),
            socket: flags.socket.clone(),
            xdp: flags.xdp,
            redirect,
            features,
            tc_mode,
            degraded,
            ct_max: flags.ct_max,
            ct_gc_interval: std::time::Duration::from_secs(flags.ct_gc_interval.max(1)),
            ct_timeouts,
            masquerade_address: flags.masquerade_address,
            masquerade_ports,
            cgroup,
            protect_ports: flags.protect_ports,
            docker_plugin_socket: flags.docker_plugin_socket.clone(),
            dns_upstream: match (flags.no_dns, flags.dns_upstream.is_empty()) {
                (true, _) => None,
                (false, true) => Some(crate::dns::Upstream::ResolvConf(RESOLV_CONF.to_owned())),
                (false, false) => Some(crate::dns::Upstream::Servers(flags.dns_upstream.clone())),
            },
            metrics_address: flags.metrics_address,
        })
    }
}

/// `--redirect`: how packets enter containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RedirectFlag {
    /// bpf_redirect_peer: straight into the container's namespace.
    Peer,
    /// bpf_redirect to the host veth.
    Egress,
}

/// `--tc-attach`: how the TC programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcAttachFlag {
    /// TCX where the kernel has it, else netlink.
    Auto,
    Tcx,
    Netlink,
}

/// The TC attach mode `--tc-attach` asks for on a kernel with `features`.
pub(crate) fn pick_tc_mode(flag: TcAttachFlag, features: &Features) -> Result<TcMode, AgentError> {
    match flag {
        TcAttachFlag::Tcx if !features.tcx => Err(AgentError::KernelLacks {
            feature: "TCX (--tc-attach tcx)",
            since: TCX_SINCE,
            release: features.release.clone(),
        }),
        TcAttachFlag::Tcx => Ok(TcMode::Tcx),
        TcAttachFlag::Netlink => Ok(TcMode::Netlink),
        TcAttachFlag::Auto if features.tcx => Ok(TcMode::Tcx),
        TcAttachFlag::Auto => Ok(TcMode::Netlink),
    }
}

/// The interface of the IPv4 default route, if there is one.
async fn default_uplink(
    nl: &Netlink,
    links: &[crate::netlink::Link],
) -> Result<Option<String>, AgentError> {
    let routes = nl.routes().await?;
    Ok(routes
        .iter()
        .find(|r| r.destination.prefix_len() == 0)
        .and_then(|r| r.oif)
        .and_then(|oif| links.iter().find(|l| l.index == oif))
        .map(|l| l.name.clone()))
}

/// Networks already used here: routes (but the default route, and routes
/// through our own bridge, which we are adopting) and addresses' subnets.
pub(super) async fn networks_in_use(
    nl: &Netlink,
    bridge_index: Option<u32>,
) -> Result<Vec<Ipv4Net>, AgentError> {
    let mut in_use = Vec::new();
    for route in nl.routes().await? {
        if route.destination.prefix_len() > 0 && (route.oif.is_none() || route.oif != bridge_index)
        {
            in_use.push(route.destination);
        }
    }
    for address in nl.addresses().await? {
        if Some(address.index) != bridge_index
            && !address.ip.is_loopback()
            && let Ok(net) = Ipv4Net::new(address.ip, address.prefix_len)
        {
            in_use.push(net.trunc());
        }
    }
    Ok(in_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_attach_mode_follows_the_kernel_and_refuses_tcx_before_6_6() {
        let old = Features::of("6.1.0-18-amd64", true);
        let new = Features::of("6.18.0", true);
        assert_eq!(
            pick_tc_mode(TcAttachFlag::Auto, &old).ok(),
            Some(TcMode::Netlink)
        );
        assert_eq!(
            pick_tc_mode(TcAttachFlag::Auto, &new).ok(),
            Some(TcMode::Tcx)
        );
        assert_eq!(
            pick_tc_mode(TcAttachFlag::Netlink, &new).ok(),
            Some(TcMode::Netlink)
        );
        let refused = pick_tc_mode(TcAttachFlag::Tcx, &old).expect_err("no TCX on 6.1");
        assert_eq!(
            refused.to_string(),
            "TCX (--tc-attach tcx) needs Linux 6.6.0 or later; this kernel is 6.1.0-18-amd64"
        );
    }
}
