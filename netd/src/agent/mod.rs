// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd agent`: owns the network's state and the kernel objects it makes,
//! and serves the API. One operation at a time: the server holds the agent
//! behind a mutex for the whole of each request, so concurrent clients see
//! the effects of each other's requests in some order, never interleaved.

pub mod config;
mod datapath;
/// Docker's remote network driver, on `--docker-plugin-socket`.
mod docker;
mod endpoint;
pub mod error;
mod health;
mod http;
pub mod ipam;
pub mod lan;
mod metrics;
mod monitor;
mod names;
mod network;
mod ports;
mod server;
pub mod state;
mod teardown;

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Read as _,
    path::Path,
};

use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

pub use self::teardown::{Teardown, TeardownError, down};
use self::{
    config::{Config, Flags},
    error::AgentError,
    state::{
        Change, EndpointState, FoldOutcome, NetworkState, Phase, STATE_VERSION, State, StateStore,
    },
};
use crate::{
    api,
    datapath::{Datapath, Options as DatapathOptions, TcMode},
    mac::MacAddr,
    netlink::Netlink,
};

/// `len` random bytes as lowercase hex.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Starts the agent with `flags` and serves until SIGTERM or SIGINT (or a
/// `down` request).
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let agent = Agent::start(&flags).await?;
    server::serve(agent).await
}

pub struct Agent {
    config: Config,
    store: StateStore,
    state: State,
    nl: Netlink,
    /// Each network's bridge, by network name.
    bridges: BTreeMap<String, u32>,
    datapath: Datapath,
    /// When conntrack was last garbage-collected.
    last_gc: std::time::Instant,
    /// How XDP runs on each uplink (`--xdp`): `native` or `generic`.
    xdp_modes: BTreeMap<String, &'static str>,
    /// The `ct_create` drop count at the last tick: when it grows, the
    /// table is full.
    ct_refused: u64,
    /// The table's size as the last walk of it counted (how full it is,
    /// for the collection's interval and the metrics); `None` before the
    /// first.
    ct_census: Option<metrics::CtCensus>,
    /// The `nat_exhausted` drop count at the last tick.
    nat_exhausted: u64,
    /// What garbage collection did, for the metrics.
    gc: metrics::GcRecord,
    /// The networks' DNS servers; `None` with `--no-dns`.
    dns: Option<crate::dns::Dns>,
    /// The kernel ID of each map the programs use, as pinned at start:
    /// what `netd status` expects to find at each pin.
    map_ids: BTreeMap<&'static str, u32>,
    /// The live monitor's hub.
    monitor: monitor::Monitor,
    /// Held for the agent's life: one agent per state directory.
    _lock: Flock<File>,
}

impl Agent {
    /// Reconciles flags, saved state and the namespace; creates or adopts
    /// the bridge; finishes what a killed agent left half-done.
    pub async fn start(flags: &Flags) -> Result<Self, AgentError> {
        let mut store = StateStore::new(&flags.state_dir).with_reserve(flags.state_reserve);
        fs::create_dir_all(store.dir()).map_err(|source| AgentError::Io {
            what: format!("creating the state directory {}", store.dir().display()),
            source,
        })?;
        let lock = lock_state_dir(store.dir())?;
        let saved = store.load()?;
        let fresh = saved.is_none();
        let nl = Netlink::connect()?;
        let config = Config::resolve(
            flags,
            saved.as_ref().map(|s| &s.network),
            &store.path(),
            &nl,
        )
        .await?;
        let state = saved.unwrap_or_else(|| State {
            version: STATE_VERSION,
            network: config.network.clone(),
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            next_generation: 1,
            journal_seq: 0,
            docker_network: None,
            tc_filters: BTreeMap::new(),
        });
        let datapath = Datapath::load(&DatapathOptions {
            bpffs: config.bpffs.clone(),
            xdp: config.xdp,
            ct_max: config.ct_max,
            sockets: config.cgroup.is_some(),
            tc_mode: config.tc_mode,
        })?;
        // The load reused each pin or pinned its own map: either way, what
        // is pinned now is what the programs use.
        let map_ids = health::pinned_map_ids(&config.bpffs);
        let monitor = monitor::Monitor::new(&config.bpffs)?;
        let why = match (config.tc_mode, config.features.tcx) {
            (TcMode::Netlink, false) => format!(
                " (no TCX before Linux {}; this is {})",
                crate::datapath::features::TCX_SINCE,
                config.features.release
            ),
            (TcMode::Netlink, true) => " (--tc-attach netlink)".to_owned(),
            (TcMode::Tcx, _) => String::new(),
        };
        info!(kernel = %config.features.release, "tc: {}{why}", config.tc_mode.describe());
        for lack in &config.degraded {
            warn!("{lack}");
        }
        let mut bridges = BTreeMap::new();
        for net in state.all_networks().filter(|net| net.lan().is_none()) {
            bridges.insert(net.name.clone(), ensure_bridge(&nl, net).await?);
        }
        enable_forwarding()?;
        raise_open_files();
        if config.uplinks.is_empty() {
            warn!("no uplink: no default route here and no --uplink given");
        } else {
            info!(uplinks = ?config.uplinks, "uplinks");
        }
        // Names are served even when the upstream cannot be read (no
        // resolv.conf on a minimal host): only forwarding is lost.
        let dns = config.dns_upstream.as_ref().map(|upstream| {
            crate::dns::Dns::new(upstream).unwrap_or_else(|err| {
                warn!(error = %err, "DNS: containers' names are answered, other names refused");
                crate::dns::Dns::without_forwarding()
            })
        });
        let mut agent = Self {
            config,
            store,
            state,
            nl,
            bridges,
            datapath,
            last_gc: std::time::Instant::now(),
            xdp_modes: BTreeMap::new(),
            ct_refused: 0,
            ct_census: None,
            nat_exhausted: 0,
            gc: metrics::GcRecord::default(),
            dns,
            map_ids,
            monitor,
            _lock: lock,
        };
        if fresh {
            agent.store.save(&mut agent.state)?;
        } else {
            // Folding needs space; a full disk must not keep the agent
            // from adopting what it has (see `state`'s module comment).
            agent.fold_journal();
        }
        let lans: Vec<NetworkState> = agent
            .state
            .all_networks()
            .filter(|net| net.lan().is_some())
            .cloned()
            .collect();
        // A parent gone (a NIC removed) costs its network only: its
        // endpoints went with it, and the rest of the agent serves.
        for net in &lans {
            if let Err(err) = agent.make_lan(net).await {
                warn!(network = %net.name, error = %crate::error::one_line(&err), "LAN network without its parent: its endpoints cannot be attached");
            }
        }
        agent.recover().await?;
        agent.sync_datapath().await?;
        agent.refresh_names();
        let networks: Vec<NetworkState> = agent.state.all_networks().cloned().collect();
        for net in &networks {
            agent.serve_names(net);
        }
        Ok(agent)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The live monitor's hub.
    pub fn monitor(&self) -> &monitor::Monitor {
        &self.monitor
    }

    /// Every endpoint as the monitor names and filters events by.
    pub fn monitor_endpoints(&self) -> Vec<monitor::EndpointRef> {
        self.state
            .endpoints
            .values()
            .map(|ep| monitor::EndpointRef {
                name: ep.name.clone(),
                id: ep.id.clone(),
                ip: ep.ip,
                ifindex: ep
                    .lan_ifindex
                    .or_else(|| nix::net::if_::if_nametoindex(ep.host_ifname.as_str()).ok()),
            })
            .collect()
    }

    /// Finishes operations a killed agent left half-done, and adopts or
    /// releases the rest: an attach caught in `creating` is rolled back, a
    /// detach caught in `removing` is completed, and a `ready` endpoint whose
    /// veth is gone (its namespace was deleted) is released.
    async fn recover(&mut self) -> Result<(), AgentError> {
        let endpoints: Vec<EndpointState> = self.state.endpoints.values().cloned().collect();
        for ep in endpoints {
            if ep.lan_ifindex.is_some() {
                self.recover_lan_endpoint(&ep).await?;
                continue;
            }
            let link = self.nl.link(&ep.host_ifname).await?;
            match (ep.phase, link) {
                (Phase::Creating, _) => {
                    self.unplumb(&ep).await;
                    info!(endpoint = %ep.name, "rolled back an attach the previous agent did not finish");
                    self.forget(&ep.id)?;
                }
                (Phase::Removing, _) => {
                    self.unplumb(&ep).await;
                    info!(endpoint = %ep.name, "completed a detach the previous agent did not finish");
                    self.forget(&ep.id)?;
                }
                (Phase::Ready, None) => {
                    warn!(endpoint = %ep.name, ip = %ep.ip, veth = %ep.host_ifname,
                        "veth gone (namespace deleted?): releasing the endpoint");
                    self.unplumb(&ep).await;
                    self.forget(&ep.id)?;
                }
                (Phase::Ready, Some(link)) => {
                    let bridge = self.bridge_of(&ep);
                    if link.controller != Some(bridge) {
                        self.nl
                            .set_controller(link.index, bridge, &ep.host_ifname)
                            .await?;
                    }
                    if !link.up {
                        self.nl.set_up(link.index, &ep.host_ifname).await?;
                    }
                    info!(endpoint = %ep.name, ip = %ep.ip, veth = %ep.host_ifname, "adopted endpoint");
                }
            }
        }
        Ok(())
    }

    /// [`Self::recover`] for a LAN endpoint, whose device is in its
    /// container's namespace: it is gone with that namespace.
    async fn recover_lan_endpoint(&mut self, ep: &EndpointState) -> Result<(), AgentError> {
        let why = match ep.phase {
            Phase::Creating => "rolled back an attach the previous agent did not finish",
            Phase::Removing => "completed a detach the previous agent did not finish",
            Phase::Ready if self.lan_endpoint_gone(ep) => "namespace gone: releasing the endpoint",
            Phase::Ready if !self.lan_device_present(ep).await => {
                "device gone from its namespace: releasing the endpoint"
            }
            Phase::Ready => {
                info!(endpoint = %ep.name, ip = %ep.ip, "adopted endpoint");
                return Ok(());
            }
        };
        self.unplumb(ep).await;
        info!(endpoint = %ep.name, "{why}");
        self.forget(&ep.id)
    }

    fn forget(&mut self, id: &str) -> Result<(), AgentError> {
        self.commit(Change::EndpointRemoved {
            endpoint: id.to_owned(),
        })
    }

    /// Makes `change` durable, then applies it to memory: what the agent
    /// holds is never ahead of its files. On failure nothing changed (the
    /// caller undoes what it did in the kernel). Folds the journal when
    /// it is due.
    pub(super) fn commit(&mut self, change: Change) -> Result<(), AgentError> {
        self.store.record(&change, &mut self.state)?;
        let changes_names = names::changes_names(&change);
        change.apply(&mut self.state);
        if changes_names {
            self.refresh_names();
        }
        self.state.journal_seq = self.store.seq();
        if self.store.trouble().is_none() {
            self.fold_journal();
        }
        Ok(())
    }

    /// Folds the journal into `state.json` if that is owed (a long
    /// journal, or a write failed since the last fold); logs what changed.
    pub(super) fn fold_journal(&mut self) {
        match self.store.fold_if_due(&mut self.state) {
            FoldOutcome::NotDue | FoldOutcome::Folded | FoldOutcome::StillFailing => {}
            FoldOutcome::Recovered => info!(
                dir = %self.store.dir().display(),
                "the state directory is writable again: journal folded into state.json"
            ),
            FoldOutcome::Failed(err) if err.is_full() => warn!(
                error = %crate::error::one_line(&err),
                "the state directory is full: folding the journal waits; additions are refused, reads, unpublish and detach are served"
            ),
            FoldOutcome::Failed(err) => warn!(
                error = %crate::error::one_line(&err),
                "folding the journal into state.json failed; retrying every second"
            ),
        }
    }

    /// Finishes, once the state can be written again, what a failed write
    /// left half-done: an endpoint still `creating` outside an attach (its
    /// rollback could not be recorded) is removed, one still `removing`
    /// (its end could not be recorded) is forgotten.
    async fn finish_interrupted(&mut self) {
        let stuck: Vec<EndpointState> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.phase != Phase::Ready)
            .cloned()
            .collect();
        for ep in stuck {
            self.unplumb(&ep).await;
            match self.forget(&ep.id) {
                Ok(()) => {
                    info!(endpoint = %ep.name, "finished an operation a failed write had interrupted")
                }
                Err(err) => {
                    warn!(endpoint = %ep.name, error = %crate::error::one_line(&err), "still cannot record the end of an interrupted operation");
                    return;
                }
            }
        }
    }

    /// The agent's periodic work on its state (see [`Self::tick`]).
    pub(super) async fn tick_state(&mut self) {
        self.fold_journal();
        self.finish_interrupted().await;
    }

    /// The ifindex of the bridge of `ep`'s network.
    fn bridge_of(&self, ep: &EndpointState) -> u32 {
        self.bridges[&self.state.network_of(ep).name]
    }

    pub(super) fn view(&self, ep: &EndpointState) -> api::Endpoint {
        let net = self.state.network_of(ep);
        api::Endpoint {
            id: ep.id.clone(),
            name: ep.name.clone(),
            netns: ep.netns.display().to_string(),
            ifname: ep.ifname.clone(),
            host_ifname: ep.host_ifname.clone(),
            ip: ep.ip,
            prefix_len: net.subnet.prefix_len(),
            gateway: net.gateway,
            mac: ep.mac,
            created: ep.created.clone(),
            ports: ep.ports.iter().map(ports::form).collect(),
            owner: ep.owner.clone(),
            container_id: ep.container_id.clone(),
            network: net.name.clone(),
            aliases: ep.aliases.clone(),
            dns: self.endpoint_dns(net),
        }
    }

    pub fn endpoints(&self) -> Vec<api::Endpoint> {
        let mut list: Vec<_> = self
            .state
            .endpoints
            .values()
            .map(|ep| self.view(ep))
            .collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        list
    }

    pub fn status(&self) -> api::Status {
        let net = &self.state.network;
        api::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            network: net.name.clone(),
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            gateway: net.gateway,
            mtu: net.mtu,
            uplinks: self.config.uplinks.clone(),
            endpoints: self.state.endpoints.len(),
            state_dir: self.config.state_dir.display().to_string(),
            bpffs: self.config.bpffs.display().to_string(),
            kernel: self.config.features.release.clone(),
            tc_attach: match self.datapath.tc_mode() {
                TcMode::Tcx => "tcx",
                TcMode::Netlink => "netlink",
            }
            .to_owned(),
            redirect: if self.config.redirect == netd_common::endpoint::REDIRECT_EGRESS {
                "egress"
            } else {
                "peer"
            }
            .to_owned(),
            host_local: self.config.cgroup.is_some(),
            degraded: self.config.degraded.clone(),
            state_full: self.store.trouble().is_some_and(|t| t.full),
            dns: self
                .config
                .dns_upstream
                .as_ref()
                .map(|upstream| match upstream {
                    crate::dns::Upstream::ResolvConf(path) => {
                        format!("on every gateway; forwarding to {path}'s nameservers")
                    }
                    crate::dns::Upstream::Servers(servers) => format!(
                        "on every gateway; forwarding to {}",
                        servers
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            state_error: self.store.trouble().map(|t| t.error.clone()),
            xdp: self
                .xdp_modes
                .iter()
                .map(|(uplink, mode)| (uplink.clone(), (*mode).to_owned()))
                .collect(),
            // Checked in the kernel, part by part: only `GET /v1/status`
            // asks (see `health`).
            health: Vec::new(),
        }
    }

    /// Removes everything this agent created: see [`down`].
    pub async fn down(&mut self) -> Teardown {
        let teardown = down(&self.nl, Some(&self.state), &self.store, &self.config.bpffs).await;
        self.state.endpoints.clear();
        teardown
    }
}

fn lock_state_dir(dir: &Path) -> Result<Flock<File>, AgentError> {
    let path = dir.join(crate::paths::LOCK_FILE);
    let file = File::create(&path).map_err(|source| AgentError::Io {
        what: format!("creating {}", path.display()),
        source,
    })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| AgentError::Locked(path))
}

/// Creates the bridge, or adopts an existing one; sets its MTU, gateway
/// address and state. Returns its index.
pub(super) async fn ensure_bridge(nl: &Netlink, net: &NetworkState) -> Result<u32, AgentError> {
    let bridge = match nl.link(&net.bridge).await? {
        Some(link) => {
            // Config::resolve refused a non-bridge of this name already.
            info!(bridge = %net.bridge, "adopted bridge");
            if link.mtu != net.mtu {
                nl.set_mtu(link.index, net.mtu, &net.bridge).await?;
            }
            link
        }
        None => {
            // The gateway's address as the bridge's MAC, as containers'
            // are made of theirs: unique on the network, the same after a
            // restart.
            nl.create_bridge(&net.bridge, net.mtu, MacAddr::from_ipv4(net.gateway))
                .await?;
            info!(bridge = %net.bridge, subnet = %net.subnet, gateway = %net.gateway, mtu = net.mtu, "created bridge");
            nl.link(&net.bridge).await?.ok_or_else(|| AgentError::Io {
                what: format!("bridge {} vanished right after its creation", net.bridge),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?
        }
    };
    nl.add_address(
        bridge.index,
        net.gateway,
        net.subnet.prefix_len(),
        &net.bridge,
    )
    .await?;
    nl.set_up(bridge.index, &net.bridge).await?;
    Ok(bridge.index)
}

/// Raises the agent's open-file limit to its hard limit, as a daemon that
/// holds two DNS sockets per network (and a netlink socket, the API's
/// clients, pinned maps) should: 1,000 networks need more than the soft
/// 1,024 a shell gives.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Enough for 4,096 networks many times over, and no more: a limit of
    // "infinity" would be refused, and the processes the agent starts
    // inherit it.
    const WANTED: u64 = 1 << 20;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard.min(WANTED) => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard.min(WANTED), hard) {
                warn!(error = %err, "raising the open-file limit");
            }
        }
        Ok(_) => {}
        Err(err) => warn!(error = %err, "reading the open-file limit"),
    }
}

/// IPv4 forwarding in the agent's namespace: containers' traffic is routed
/// through it.
fn enable_forwarding() -> Result<(), AgentError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let current = fs::read_to_string(PATH).unwrap_or_default();
    if current.trim() != "1" {
        fs::write(PATH, "1").map_err(|source| AgentError::Io {
            what: format!("enabling IPv4 forwarding ({PATH})"),
            source,
        })?;
        info!("enabled IPv4 forwarding in this namespace");
    }
    Ok(())
}
