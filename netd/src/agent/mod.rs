// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd agent`: owns the network's state and the kernel objects it makes,
//! and serves the API. One operation at a time: the server holds the agent
//! behind a mutex for the whole of each request, so concurrent clients see
//! the effects of each other's requests in some order, never interleaved.

pub mod config;
mod datapath;
/// Docker's remote network driver, on `--docker-plugin-socket`.
mod docker;
pub mod error;
mod http;
pub mod ipam;
mod ports;
mod server;
pub mod state;

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Read as _,
    net::Ipv4Addr,
    path::Path,
};

use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use self::{
    config::{Config, Flags, check_ifname},
    error::{AgentError, BRIDGE_MAX_PORTS},
    state::{
        Change, EndpointState, FoldOutcome, NetworkState, Phase, STATE_VERSION, State, StateStore,
    },
};
use crate::{
    api::{self, AttachRequest, DownReport},
    datapath::{Datapath, Options as DatapathOptions, TcMode},
    failpoint,
    mac::MacAddr,
    netlink::Netlink,
    netns::{self, Netns},
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
    bridge_index: u32,
    datapath: Datapath,
    /// When conntrack was last garbage-collected.
    last_gc: std::time::Instant,
    /// How XDP runs on each uplink (`--xdp`): `native` or `generic`.
    xdp_modes: BTreeMap<String, &'static str>,
    /// The `ct_create` drop count at the last tick: when it grows, the
    /// table is full.
    ct_refused: u64,
    /// Conntrack entries after the last garbage collection.
    ct_fill: usize,
    /// The `nat_exhausted` drop count at the last tick.
    nat_exhausted: u64,
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
        let bridge_index = ensure_bridge(&nl, &state.network).await?;
        enable_forwarding()?;
        if config.uplinks.is_empty() {
            warn!("no uplink: no default route here and no --uplink given");
        } else {
            info!(uplinks = ?config.uplinks, "uplinks");
        }
        let mut agent = Self {
            config,
            store,
            state,
            nl,
            bridge_index,
            datapath,
            last_gc: std::time::Instant::now(),
            xdp_modes: BTreeMap::new(),
            ct_refused: 0,
            ct_fill: 0,
            nat_exhausted: 0,
            _lock: lock,
        };
        if fresh {
            agent.store.save(&mut agent.state)?;
        } else {
            // Folding needs space; a full disk must not keep the agent
            // from adopting what it has (see `state`'s module comment).
            agent.fold_journal();
        }
        agent.recover().await?;
        agent.sync_datapath().await?;
        Ok(agent)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Finishes operations a killed agent left half-done, and adopts or
    /// releases the rest: an attach caught in `creating` is rolled back, a
    /// detach caught in `removing` is completed, and a `ready` endpoint whose
    /// veth is gone (its namespace was deleted) is released.
    async fn recover(&mut self) -> Result<(), AgentError> {
        let endpoints: Vec<EndpointState> = self.state.endpoints.values().cloned().collect();
        for ep in endpoints {
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
                    if link.controller != Some(self.bridge_index) {
                        self.nl
                            .set_controller(link.index, self.bridge_index, &ep.host_ifname)
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
        change.apply(&mut self.state);
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

    fn view(&self, ep: &EndpointState) -> api::Endpoint {
        api::Endpoint {
            id: ep.id.clone(),
            name: ep.name.clone(),
            netns: ep.netns.display().to_string(),
            ifname: ep.ifname.clone(),
            host_ifname: ep.host_ifname.clone(),
            ip: ep.ip,
            prefix_len: self.state.network.subnet.prefix_len(),
            gateway: self.state.network.gateway,
            mac: ep.mac,
            created: ep.created.clone(),
            ports: ep.ports.iter().map(ports::form).collect(),
            owner: ep.owner.clone(),
            container_id: ep.container_id.clone(),
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
            state_error: self.store.trouble().map(|t| t.error.clone()),
            xdp: self
                .xdp_modes
                .iter()
                .map(|(uplink, mode)| (uplink.clone(), (*mode).to_owned()))
                .collect(),
        }
    }

    pub fn inspect(&self) -> Vec<api::NetworkInspect> {
        let net = &self.state.network;
        let containers = self
            .state
            .endpoints
            .values()
            .map(|ep| {
                (
                    ep.id.clone(),
                    api::ContainerInspect {
                        name: ep.name.clone(),
                        endpoint_id: ep.id.clone(),
                        mac_address: ep.mac,
                        ipv4_address: format!("{}/{}", ep.ip, net.subnet.prefix_len()),
                        ipv6_address: String::new(),
                    },
                )
            })
            .collect();
        // The agent's network is the host's default network, as Docker's
        // `bridge` is: Docker shows that one with its whole option set,
        // `default_bridge` included, and null IPAM options.
        let options = BTreeMap::from([
            (
                "com.docker.network.bridge.default_bridge".to_owned(),
                "true".to_owned(),
            ),
            (
                "com.docker.network.bridge.name".to_owned(),
                net.bridge.clone(),
            ),
            (
                "com.docker.network.bridge.enable_icc".to_owned(),
                net.icc.to_string(),
            ),
            (
                "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                net.masquerade.to_string(),
            ),
            (
                "com.docker.network.bridge.host_binding_ipv4".to_owned(),
                net.host_binding.to_string(),
            ),
            (
                "com.docker.network.driver.mtu".to_owned(),
                net.mtu.to_string(),
            ),
        ]);
        vec![api::NetworkInspect {
            name: net.name.clone(),
            id: net.id.clone(),
            created: net.created.clone(),
            scope: "local".to_owned(),
            // Docker's name for what this network is.
            driver: "bridge".to_owned(),
            enable_ipv6: false,
            ipam: api::Ipam {
                driver: "default".to_owned(),
                options: None,
                config: vec![api::IpamConfig {
                    subnet: net.subnet,
                    gateway: net.gateway,
                }],
            },
            internal: net.internal,
            // Docker's default bridge is not attachable (a Swarm notion).
            attachable: false,
            ingress: false,
            config_from: api::ConfigFrom::default(),
            config_only: false,
            containers,
            options,
            labels: BTreeMap::new(),
        }]
    }

    /// Addresses in use, by endpoint name.
    fn taken(&self) -> BTreeMap<Ipv4Addr, String> {
        self.state
            .endpoints
            .values()
            .map(|ep| (ep.ip, ep.name.clone()))
            .collect()
    }

    /// Attaches the namespace `req.netns`: validates everything first, then
    /// records the endpoint, then creates it; on failure, removes what was
    /// created and the record.
    pub async fn attach(&mut self, req: AttachRequest) -> Result<api::Endpoint, AgentError> {
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".to_owned());
        check_ifname(&ifname).map_err(|why| AgentError::Ifname {
            name: ifname.clone(),
            why,
        })?;
        let requested_ip = req
            .ip
            .as_deref()
            .map(|ip| {
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| AgentError::IpSyntax(ip.to_owned()))
            })
            .transpose()?;
        let requested_mac = req.mac.as_deref().map(str::parse::<MacAddr>).transpose()?;
        let specs: Vec<crate::portspec::PortSpec> = req
            .ports
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        if let Some(name) = &req.name {
            check_name(name)?;
        }
        if let Some(owner) = &req.owner {
            check_owner(owner)?;
        }
        if let Some(id) = &req.container_id {
            check_container_id(id)?;
        }
        let ns = Netns::open(&req.netns)?;
        self.release_stale().await?;
        if let Some(existing) = self
            .state
            .endpoints
            .values()
            .find(|ep| ep.netns_ident == ns.ident())
        {
            return Err(AgentError::AlreadyAttached {
                netns: req.netns.clone(),
                name: existing.name.clone(),
                ip: existing.ip,
            });
        }
        let net = self.state.network.clone();
        let taken = self.taken();
        let ip = match requested_ip {
            Some(ip) => {
                ipam::check_requested(ip, net.subnet, net.gateway, &taken)?;
                ip
            }
            None => ipam::next_free(net.subnet, net.gateway, &taken)?,
        };
        let id = random_hex(32);
        let name = match &req.name {
            Some(name) => name.clone(),
            None => default_name(&req.netns, &id),
        };
        if let Some(holder) = self.state.endpoints.values().find(|ep| ep.name == name) {
            return Err(AgentError::NameTaken {
                name,
                id: holder.id.clone(),
            });
        }
        let ports = self
            .nl
            .links()
            .await?
            .iter()
            .filter(|l| l.controller == Some(self.bridge_index))
            .count();
        if ports >= BRIDGE_MAX_PORTS {
            return Err(AgentError::BridgeFull { bridge: net.bridge });
        }

        // The ports too are checked before anything is recorded or
        // created (they are planned again, under the same lock, once the
        // endpoint exists).
        if !specs.is_empty() {
            self.plan(&specs).await?;
        }

        let endpoint = EndpointState {
            host_ifname: format!("veth{}", &id[..11]),
            id: id.clone(),
            name,
            netns: ns.path().to_owned(),
            netns_ident: ns.ident(),
            ifname,
            ip,
            mac: requested_mac.unwrap_or_else(|| MacAddr::from_ipv4(ip)),
            created: now_rfc3339(),
            phase: Phase::Creating,
            ports: Vec::new(),
            owner: req.owner.clone(),
            container_id: req.container_id.clone(),
        };
        self.commit(Change::EndpointAdded {
            endpoint: Box::new(endpoint.clone()),
        })?;
        failpoint::hit("attach:recorded");

        let plumbed = match self.plumb(&endpoint, &ns).await {
            Ok(()) => self.connect_endpoint(&endpoint).await,
            Err(err) => Err(err),
        };
        let ready = self.settle(&endpoint, plumbed).await?;
        info!(endpoint = %ready.name, netns = %ready.netns.display(), ip = %ready.ip, veth = %ready.host_ifname, "attached");
        if !specs.is_empty()
            && let Err(err) = self.publish_specs(&id, &specs).await
        {
            // All or nothing: the attach goes too.
            let _ = self.remove(&id).await;
            return Err(err);
        }
        let ready = self.state.endpoints.get(&id).expect("attached").clone();
        Ok(self.view(&ready))
    }

    /// Makes `ep`'s host veth, just created, a port of the bridge, up.
    pub(super) async fn bridge_port(&self, ep: &EndpointState) -> Result<(), AgentError> {
        let host = self
            .nl
            .link(&ep.host_ifname)
            .await?
            .ok_or_else(|| AgentError::Io {
                what: format!("veth {} vanished right after its creation", ep.host_ifname),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        if let Err(err) = self
            .nl
            .set_controller(host.index, self.bridge_index, &ep.host_ifname)
            .await
        {
            // The kernel says EXFULL when the bridge has no port number left.
            if err.errno() == Some(libc::EXFULL) {
                return Err(AgentError::BridgeFull {
                    bridge: self.state.network.bridge.clone(),
                });
            }
            return Err(err.into());
        }
        self.nl.set_up(host.index, &ep.host_ifname).await?;
        Ok(())
    }

    /// Ends the creation of `ep`, recorded as `Creating`: once `plumbed` is
    /// fine, marks it ready (saved); on failure, removes what was created
    /// and the record. Returns the ready endpoint.
    pub(super) async fn settle<E: From<AgentError>>(
        &mut self,
        ep: &EndpointState,
        plumbed: Result<(), E>,
    ) -> Result<EndpointState, E> {
        let ready = match plumbed {
            Ok(()) => self.commit(Change::EndpointPhase {
                endpoint: ep.id.clone(),
                phase: Phase::Ready,
            }),
            Err(err) => {
                self.roll_back(ep).await;
                return Err(err);
            }
        };
        if let Err(err) = ready {
            // Not ready on disk: not ready at all.
            self.roll_back(ep).await;
            return Err(err.into());
        }
        Ok(self.state.endpoints[&ep.id].clone())
    }

    /// Removes what exists of `ep`, recorded as `Creating`, and its record.
    /// If the record cannot go, the endpoint stays `creating` in memory and
    /// on disk, and [`Self::finish_interrupted`] forgets it later (a
    /// restart would too).
    async fn roll_back(&mut self, ep: &EndpointState) {
        self.unplumb(ep).await;
        if let Err(err) = self.forget(&ep.id) {
            warn!(endpoint = %ep.name, error = %crate::error::one_line(&err), "rolled back an attach, but could not record it; retrying");
        }
    }

    /// Creates the endpoint's veth, joins it to the bridge and configures
    /// the namespace side: address, MTU, `lo` and the interface up, default
    /// route via the gateway.
    async fn plumb(&self, ep: &EndpointState, ns: &Netns) -> Result<(), AgentError> {
        let net = &self.state.network;
        if let Err(err) = self
            .nl
            .create_veth(&ep.host_ifname, &ep.ifname, ns, ep.mac, net.mtu)
            .await
        {
            if err.errno() == Some(libc::EEXIST) {
                return Err(AgentError::IfnameTaken {
                    path: ep.netns.clone(),
                    ifname: ep.ifname.clone(),
                });
            }
            return Err(err.into());
        }
        self.bridge_port(ep).await?;
        failpoint::hit("attach:veth-created");

        let inside = Netlink::connect_in(ns)?;
        let lo = inside.link("lo").await?;
        if let Some(lo) = lo {
            inside.set_up(lo.index, "lo").await?;
        }
        let eth = inside
            .link(&ep.ifname)
            .await?
            .ok_or_else(|| AgentError::Io {
                what: format!("{} did not appear in {}", ep.ifname, ep.netns.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        inside
            .add_address(eth.index, ep.ip, net.subnet.prefix_len(), &ep.ifname)
            .await?;
        inside.set_up(eth.index, &ep.ifname).await?;
        inside.add_default_route(net.gateway).await?;
        Ok(())
    }

    /// Releases endpoints whose veth is gone (their namespace was deleted):
    /// their addresses and names are free again.
    async fn release_stale(&mut self) -> Result<(), AgentError> {
        let links = self.nl.links().await?;
        let stale: Vec<EndpointState> = self
            .state
            .endpoints
            .values()
            .filter(|ep| {
                ep.phase == Phase::Ready && !links.iter().any(|l| l.name == ep.host_ifname)
            })
            .cloned()
            .collect();
        for ep in stale {
            warn!(endpoint = %ep.name, ip = %ep.ip, "veth gone (namespace deleted?): releasing the endpoint");
            self.unplumb(&ep).await;
            self.forget(&ep.id)?;
        }
        Ok(())
    }

    /// Removes one endpoint with its ports: recorded as `removing` first,
    /// so a crash in between is finished on restart. Two short journal
    /// lines whatever the endpoint publishes, so that a detach fits in the
    /// reserve of a full disk. From `removing` on, the endpoint's ports are
    /// gone for `ports` as they are from the kernel.
    async fn remove(&mut self, id: &str) -> Result<api::Endpoint, AgentError> {
        let view = self.view(self.state.endpoints.get(id).expect("caller found it"));
        self.commit(Change::EndpointPhase {
            endpoint: id.to_owned(),
            phase: Phase::Removing,
        })?;
        let ep = self.state.endpoints[id].clone();
        failpoint::hit("detach:recorded");
        self.withdraw(&ep, &ep.ports)?;
        self.disconnect_endpoint(&ep)?;
        if let Some(link) = self.nl.link(&ep.host_ifname).await? {
            self.nl.del_link(link.index, &ep.host_ifname).await?;
        }
        self.forget(id)?;
        info!(endpoint = %ep.name, ip = %ep.ip, "detached");
        Ok(view)
    }

    /// Detaches whatever is attached for namespace `given`. Succeeds with
    /// nothing detached when nothing is: runtimes call this after deleting
    /// the namespace, and may call it twice.
    pub async fn detach_netns(&mut self, given: &str) -> Result<Vec<api::Endpoint>, AgentError> {
        let path = netns::resolve(given);
        let ident = Netns::open(given).ok().map(|ns| ns.ident());
        let ids: Vec<String> = self
            .state
            .endpoints
            .values()
            .filter(|ep| ep.netns == path || Some(ep.netns_ident) == ident)
            .map(|ep| ep.id.clone())
            .collect();
        let mut detached = Vec::new();
        for id in ids {
            detached.push(self.remove(&id).await?);
        }
        Ok(detached)
    }

    /// The endpoint named (or with the ID) `name`, after checking that what
    /// it needs exists in the kernel: its host veth on the bridge, its
    /// datapath entry, its namespace and the interface with its address
    /// there. What a CNI CHECK asks.
    pub async fn check_endpoint(&mut self, name: &str) -> Result<api::Endpoint, AgentError> {
        let ep = self
            .state
            .endpoints
            .values()
            .find(|ep| ep.name == name || ep.id == name)
            .cloned()
            .ok_or_else(|| AgentError::UnknownEndpoint(name.to_owned()))?;
        let broken = |what: String| AgentError::Broken {
            name: ep.name.clone(),
            what,
        };
        if ep.phase != Phase::Ready {
            return Err(broken("it is being attached or detached".to_owned()));
        }
        match self.nl.link(&ep.host_ifname).await? {
            None => {
                return Err(broken(format!(
                    "its host veth {} is missing",
                    ep.host_ifname
                )));
            }
            Some(link) if link.controller != Some(self.bridge_index) => {
                return Err(broken(format!(
                    "its host veth {} is not on the bridge",
                    ep.host_ifname
                )));
            }
            Some(_) => {}
        }
        if !self
            .datapath
            .maps()
            .endpoints()?
            .iter()
            .any(|(ip, _)| *ip == ep.ip)
        {
            return Err(broken(format!("{} is missing from the datapath", ep.ip)));
        }
        let ns = Netns::open(&ep.netns.to_string_lossy())
            .map_err(|_| broken(format!("its namespace {} is gone", ep.netns.display())))?;
        if ns.ident() != ep.netns_ident {
            return Err(broken(format!(
                "{} is another namespace now",
                ep.netns.display()
            )));
        }
        let inside = Netlink::connect_in(&ns)?;
        let Some(link) = inside.link(&ep.ifname).await? else {
            return Err(broken(format!("{} is missing in its namespace", ep.ifname)));
        };
        if !inside
            .addresses()
            .await?
            .iter()
            .any(|a| a.index == link.index && a.ip == ep.ip)
        {
            return Err(broken(format!(
                "{} has lost its address {}",
                ep.ifname, ep.ip
            )));
        }
        Ok(self.view(&ep))
    }

    /// Detaches the endpoint named (or with the ID) `name`.
    pub async fn detach_name(&mut self, name: &str) -> Result<api::Endpoint, AgentError> {
        let id = self
            .state
            .endpoints
            .values()
            .find(|ep| ep.name == name || ep.id == name)
            .map(|ep| ep.id.clone())
            .ok_or_else(|| AgentError::UnknownEndpoint(name.to_owned()))?;
        self.remove(&id).await
    }

    /// Removes everything this agent created: see [`down`].
    pub async fn down(&mut self) -> DownReport {
        let report = down(&self.nl, Some(&self.state), &self.store, &self.config.bpffs).await;
        self.state.endpoints.clear();
        report
    }
}

/// Default endpoint name: the namespace's name for `ip netns` namespaces
/// (given by name or by their /run/netns path), else `endpoint-<short id>`.
fn default_name(given: &str, id: &str) -> String {
    let path = netns::resolve(given);
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if dir == Path::new(crate::paths::NETNS_DIR) => {
            name.to_string_lossy().into_owned()
        }
        _ => format!("endpoint-{}", &id[..12]),
    }
}

fn check_name(name: &str) -> Result<(), AgentError> {
    let why = match name.split_once('/') {
        None => check_plain_name(name, 64).map(|why| {
            if why == NAME_CHARACTERS {
                format!("{why} (and one '/' in a pod's NAMESPACE/NAME)")
            } else {
                why
            }
        }),
        // Kubernetes names a pod within its namespace: a DNS label (63
        // bytes at most), then a DNS subdomain (253).
        Some((namespace, pod)) => check_plain_name(namespace, 63)
            .map(|why| format!("the namespace before '/': {why}"))
            .or_else(|| {
                check_plain_name(pod, 253).map(|why| format!("the pod name after '/': {why}"))
            }),
    };
    match why {
        Some(why) => Err(AgentError::Name {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// What [`check_plain_name`] says of a name with other characters.
const NAME_CHARACTERS: &str = "use letters, digits, '-', '_' and '.'";

/// Why `name` is not a name of at most `max` bytes, if it is not.
fn check_plain_name(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > max {
        Some(format!("at most {max} bytes"))
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some(NAME_CHARACTERS.to_owned())
    } else {
        None
    }
}

/// The CNI specification's container IDs: letters, digits, '_', '.', '-'.
fn check_container_id(id: &str) -> Result<(), AgentError> {
    match check_plain_name(id, 256) {
        Some(why) => Err(AgentError::ContainerId {
            id: id.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Owners are short tags a plugin sets; they are matched exactly.
fn check_owner(owner: &str) -> Result<(), AgentError> {
    let valid = !owner.is_empty()
        && owner.len() <= 32
        && owner
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(AgentError::Owner(owner.to_owned()))
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
async fn ensure_bridge(nl: &Netlink, net: &NetworkState) -> Result<u32, AgentError> {
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
            nl.create_bridge(&net.bridge, net.mtu).await?;
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

/// Removes everything netd created in this namespace, as recorded in
/// `state` (or found by the bridge name when there is no state): the
/// endpoints' veths, the bridge, the pins under `bpffs`, and the state
/// itself. Idempotent; every failure is reported, none stops the rest.
pub async fn down(
    nl: &Netlink,
    state: Option<&State>,
    store: &StateStore,
    bpffs: &Path,
) -> DownReport {
    let mut report = DownReport::default();
    let bridge = state.map_or(config::DEFAULT_BRIDGE, |s| s.network.bridge.as_str());
    if let Some(state) = state {
        for ep in state.endpoints.values() {
            match nl.link(&ep.host_ifname).await {
                Ok(Some(link)) => match nl.del_link(link.index, &ep.host_ifname).await {
                    Ok(()) => report.removed.push(format!(
                        "veth {} (endpoint {}, {})",
                        ep.host_ifname, ep.name, ep.ip
                    )),
                    Err(err) => report.errors.push(err.to_string()),
                },
                Ok(None) => {}
                Err(err) => report.errors.push(err.to_string()),
            }
        }
    }
    if let Some(state) = state {
        for (uplink, added_qdisc) in &state.tc_filters {
            let Ok(Some(_)) = nl.link(uplink).await else {
                continue;
            };
            match crate::datapath::remove_filter(uplink) {
                Ok(()) => report.removed.push(format!("TC filter on {uplink}")),
                Err(err) => report.errors.push(format!("{err:#}")),
            }
            if *added_qdisc {
                match crate::datapath::del_clsact(uplink) {
                    Ok(()) => report.removed.push(format!("clsact qdisc of {uplink}")),
                    Err(err) => report.errors.push(format!("{err:#}")),
                }
            }
        }
    }
    match nl.link(bridge).await {
        Ok(Some(link)) if link.kind.as_deref() == Some("bridge") => {
            match nl.del_link(link.index, bridge).await {
                Ok(()) => report.removed.push(format!("bridge {bridge}")),
                Err(err) => report.errors.push(err.to_string()),
            }
        }
        Ok(_) => {}
        Err(err) => report.errors.push(err.to_string()),
    }
    match fs::remove_dir_all(bpffs) {
        Ok(()) => report
            .removed
            .push(format!("pins under {}", bpffs.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => report
            .errors
            .push(format!("removing pins under {}: {err}", bpffs.display())),
    }
    match store.remove() {
        Ok(true) => report
            .removed
            .push(format!("state {}", store.path().display())),
        Ok(false) => {}
        Err(err) => report
            .errors
            .push(format!("removing {}: {err}", store.path().display())),
    }
    // The lock and the directory go too when nothing else is in it; a
    // running agent keeps its lock (an open file) until it exits.
    let _ = fs::remove_file(store.dir().join(crate::paths::LOCK_FILE));
    let _ = fs::remove_dir(store.dir());
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_or_a_pods_namespace_and_name() {
        for good in [
            "web",
            "my_app-1.2",
            &"a".repeat(64),
            "default/web",
            "kube-system/coredns-5d78c9869d-x2x9q",
            &format!("{}/{}", "n".repeat(63), "p".repeat(253)),
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (&"a".repeat(65), "at most 64"),
            ("web app", "use letters"),
            ("/web", "the namespace before '/': it is empty"),
            ("default/", "the pod name after '/': it is empty"),
            ("a/b/c", "the pod name after '/': use letters"),
            (&format!("{}/web", "n".repeat(64)), "at most 63"),
            (&format!("ns/{}", "p".repeat(254)), "at most 253"),
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn container_ids_follow_the_cni_specification() {
        assert!(check_container_id(&"f".repeat(64)).is_ok());
        assert!(check_container_id("ctr_1.a-b").is_ok());
        for bad in ["", "a/b", "a b", &"f".repeat(257)] {
            assert!(check_container_id(bad).is_err(), "{bad}");
        }
    }
}
