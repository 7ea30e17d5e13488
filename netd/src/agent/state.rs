// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's persisted state: the network, its endpoints and their
//! addresses, and the ports they publish.
//!
//! # Files
//!
//! `state.json` is a snapshot, written atomically (write a temporary file,
//! fsync, rename, fsync the directory): after a crash it is the old
//! snapshot or the new one, never a mix. Every change after it (attach,
//! detach, publish, unpublish, Docker's network and join/leave, TC filters
//! recorded) is one JSON line of `state.journal`, fdatasync'd before the
//! agent applies the change to its memory and acknowledges it. Rewriting
//! the whole file per change would make publishing one port cost
//! milliseconds with tens of thousands published. The journal is folded
//! into `state.json` every [`COMPACT_AFTER`] lines, at start, and after a
//! write failed. `state.json` records the last journal sequence number it
//! includes; a load replays the newer lines. A torn last line (the agent
//! died writing it, before acknowledging anything) is ignored, and cut off
//! before the next append.
//!
//! # Failed writes
//!
//! Nothing is applied to memory before its line is durable: a write or
//! fsync that fails leaves memory as it was, and the store cuts the line
//! off the journal again (`ftruncate` to the last whole line: shrinking a
//! file needs no space, and the line's pages go with it even when fsync
//! failed and the kernel dropped them). Its sequence number is not reused.
//! If even the cut fails, the journal is not appended to again until it is
//! cut, or a new snapshot (with a higher sequence number, which makes the
//! line dead) has replaced it.
//!
//! # A full disk
//!
//! A full state directory must not keep anyone from removing things, and
//! removing must not need new blocks. The journal therefore keeps
//! [`DEFAULT_RESERVE`] bytes (`--state-reserve`) preallocated past its end
//! (`fallocate(FALLOC_FL_KEEP_SIZE)`: the blocks belong to the file, its
//! size does not change). An addition (an endpoint, published ports, a
//! Docker network) is admitted only if its line *and* a whole reserve can
//! be allocated first; otherwise it is refused with [`StateError::Full`]
//! and nothing changes. Everything else (unpublish, detach, the lines that
//! complete an admitted operation) is written into the reserve without
//! allocating, so it still succeeds on a full disk, for as many removals
//! as the reserve holds (about a hundred bytes each). Folding needs room
//! for a whole new `state.json` beside the old one: on a full disk it
//! waits, retried every second by the agent, and the journal grows into
//! its reserve meanwhile. A restarted agent loads without writing
//! anything, so it starts on a full disk too. Filesystems without
//! `fallocate` (EOPNOTSUPP) work without a reserve.
//!
//! # Phases
//!
//! An endpoint is recorded *before* its kernel objects are created (phase
//! `creating`) and marked `ready` after; removal records `removing` first.
//! A restarted agent that finds an endpoint in `creating` or `removing` was
//! killed half-way, and finishes the job (see `Agent::recover`).

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use nix::fcntl::{FallocateFlags, fallocate};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::warn;

use crate::{
    failpoint,
    mac::MacAddr,
    netns::NsIdent,
    paths::{JOURNAL_FILE, STATE_FILE},
    portspec::{PortRange, Proto},
};

/// The layout version of `state.json`. A state written by a newer netd is
/// refused rather than misread.
///
/// - 1: one network (`network`).
/// - 2: networks made at run time beside it (`networks`), endpoints naming
///   theirs. A version 1 state reads as a version 2 one with no other
///   network (every field 2 added has a default), and is written as
///   version 2 from then on: a netd of version 1 refuses it rather than
///   take another network's endpoints for its own.
/// - 3: networks of other drivers (`driver`: macvlan, ipvlan), address
///   ranges and reserved addresses (`ip_range`, `aux_addresses`), LAN
///   endpoints (`lan_ifindex`). A version 2 state reads as a version 3
///   one of bridge networks (every field 3 added has a default), and is
///   written as version 3 from then on: a netd of version 2 refuses it
///   rather than take a macvlan network for a bridge one.
pub const STATE_VERSION: u32 = 3;

/// Bytes the journal keeps preallocated for removals on a full disk: about
/// 300 detaches (two lines, ~220 bytes) or 600 single-spec unpublishes.
pub const DEFAULT_RESERVE: u64 = 64 * 1024;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid netd state: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} was written by a newer netd (state version {found}, this netd reads {STATE_VERSION} and older): run that netd again, or `netd down` with it to start over; nothing was changed"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the state directory {dir} is full: additions are refused until space is freed (reads, unpublish and detach still work)"
    )]
    Full {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StateError {
    /// Whether the error is the filesystem's lack of space or quota.
    pub fn is_full(&self) -> bool {
        match self {
            Self::Full { .. } => true,
            Self::Write { source, .. } => is_no_space(source),
            _ => false,
        }
    }
}

fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub version: u32,
    /// The default network (named `netd`), as the agent's flags made it.
    pub network: NetworkState,
    /// Networks made at run time (`netd network create`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkState>,
    /// Endpoints by ID.
    pub endpoints: BTreeMap<String, EndpointState>,
    /// The generation the next published mapping gets.
    #[serde(default = "first_generation")]
    pub next_generation: u32,
    /// The last journal change this state includes.
    #[serde(default)]
    pub journal_seq: u64,
    /// The ID of the Docker network the default network backs, once
    /// Docker's driver created one on its subnet (`agent::docker`; the
    /// networks made for Docker carry their own `docker_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_network: Option<String>,
    /// Uplinks carrying netd's cls_bpf filter (netlink attach mode), and
    /// whether netd added their clsact qdisc: what `netd down` removes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tc_filters: BTreeMap<String, bool>,
}

/// A change of the state, as the journal records it. The agent applies a
/// change to its memory with [`Change::apply`] once it is durable, and a
/// load replays it the same way.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Published {
        endpoint: String,
        ports: Vec<PublishedPort>,
        next_generation: u32,
    },
    Unpublished {
        endpoint: String,
        /// `(slot, generation)` of each mapping removed.
        mappings: Vec<(u32, u32)>,
    },
    /// A new endpoint, in phase `creating`.
    EndpointAdded { endpoint: Box<EndpointState> },
    /// An endpoint moved to `phase`.
    EndpointPhase { endpoint: String, phase: Phase },
    /// An endpoint is gone, with its ports.
    EndpointRemoved { endpoint: String },
    /// Docker joined an endpoint to a sandbox (or left it: empty).
    EndpointNetns { endpoint: String, netns: PathBuf },
    /// A container's endpoints (one per network it is on) renamed at once.
    EndpointsRenamed {
        endpoints: Vec<String>,
        name: String,
    },
    /// Docker's network created (`Some`) or deleted (`None`).
    DockerNetwork { network: Option<String> },
    /// netd's filter is on `uplink`, and whether netd added its qdisc.
    TcFilter { uplink: String, added_qdisc: bool },
    /// A network made at run time, before its bridge exists.
    NetworkCreated { network: Box<NetworkState> },
    /// A network removed, after its bridge is gone.
    NetworkRemoved { name: String },
}

impl Change {
    /// Applies the change to `state`. Idempotent, like replaying must be.
    pub fn apply(&self, state: &mut State) {
        match self {
            Self::Published {
                endpoint,
                ports,
                next_generation,
            } => {
                if let Some(ep) = state.endpoints.get_mut(endpoint) {
                    for port in ports {
                        if !ep.ports.contains(port) {
                            ep.ports.push(port.clone());
                        }
                    }
                }
                state.next_generation = *next_generation;
            }
            Self::Unpublished { endpoint, mappings } => {
                if let Some(ep) = state.endpoints.get_mut(endpoint) {
                    ep.ports
                        .retain(|p| !mappings.contains(&(p.slot, p.generation)));
                }
            }
            Self::EndpointAdded { endpoint } => {
                state
                    .endpoints
                    .insert(endpoint.id.clone(), (**endpoint).clone());
            }
            Self::EndpointPhase { endpoint, phase } => {
                if let Some(ep) = state.endpoints.get_mut(endpoint) {
                    ep.phase = *phase;
                }
            }
            Self::EndpointRemoved { endpoint } => {
                state.endpoints.remove(endpoint);
            }
            Self::EndpointNetns { endpoint, netns } => {
                if let Some(ep) = state.endpoints.get_mut(endpoint) {
                    ep.netns.clone_from(netns);
                }
            }
            Self::EndpointsRenamed { endpoints, name } => {
                for id in endpoints {
                    if let Some(ep) = state.endpoints.get_mut(id) {
                        ep.name.clone_from(name);
                    }
                }
            }
            Self::DockerNetwork { network } => state.docker_network.clone_from(network),
            Self::TcFilter {
                uplink,
                added_qdisc,
            } => {
                state.tc_filters.insert(uplink.clone(), *added_qdisc);
            }
            Self::NetworkCreated { network } => {
                state
                    .networks
                    .insert(network.name.clone(), (**network).clone());
            }
            Self::NetworkRemoved { name } => {
                state.networks.remove(name);
            }
        }
    }

    /// Whether the change adds something that takes space in the state (and
    /// host resources): admitted only while the reserve can be kept whole.
    /// The others free something, or complete an operation admitted
    /// already, and may draw on the reserve.
    pub fn is_addition(&self) -> bool {
        matches!(
            self,
            Self::Published { .. }
                | Self::EndpointAdded { .. }
                | Self::DockerNetwork { network: Some(_) }
                | Self::NetworkCreated { .. }
        )
    }
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
struct JournalLine {
    seq: u64,
    #[serde(flatten)]
    change: Change,
}

/// Journal lines after which the next change compacts into `state.json`.
pub const COMPACT_AFTER: usize = 1024;

fn first_generation() -> u32 {
    1
}

/// One published mapping of an endpoint: a `-p` spec with its host ports
/// resolved, and the datapath slot it occupies.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedPort {
    pub slot: u32,
    pub generation: u32,
    pub proto: Proto,
    pub host_ip: Ipv4Addr,
    pub host: PortRange,
    pub ctr: PortRange,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkState {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// `com.docker.network.bridge.enable_icc`: containers may reach each
    /// other.
    #[serde(default = "yes")]
    pub icc: bool,
    /// `com.docker.network.bridge.enable_ip_masquerade`.
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// No traffic to or from outside at all.
    #[serde(default)]
    pub internal: bool,
    /// `com.docker.network.bridge.host_binding_ipv4`: the host address of
    /// published ports whose spec names none.
    #[serde(default = "any_address")]
    pub host_binding: Ipv4Addr,
    /// Its index in the datapath's `NETD_NETWORKS`: 0 for the default
    /// network, unique among networks.
    #[serde(default)]
    pub index: u16,
    /// The `-o` options it was created with, as given: what `network
    /// inspect` shows, as Docker shows a user-defined network's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The Docker network it was made for (`docker network create -d
    /// netd`), by Docker's ID: Docker's `DeleteNetwork` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_id: Option<String>,
    /// What carries its endpoints: a bridge (the default: `bridge` names
    /// it) or a parent interface on a LAN (`bridge` is then empty).
    #[serde(default, skip_serializing_if = "Driver::is_bridge")]
    pub driver: Driver,
    /// `--ip-range`: endpoints get addresses from it only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    /// `--aux-address NAME=IP`: addresses no endpoint gets (a LAN's
    /// router, printer, the host's shim).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

impl NetworkState {
    /// Its LAN link, for a macvlan or ipvlan network.
    pub fn lan(&self) -> Option<&LanLink> {
        match &self.driver {
            Driver::Bridge => None,
            Driver::Macvlan(lan) | Driver::Ipvlan(lan) => Some(lan),
        }
    }
}

/// What carries a network's endpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Driver {
    /// A Linux bridge netd owns, a veth per endpoint.
    #[default]
    Bridge,
    /// A macvlan device per endpoint, on a parent interface of the host:
    /// each container a host of the LAN, with its own MAC.
    Macvlan(LanLink),
    /// An ipvlan device per endpoint: the parent's MAC, an address each.
    Ipvlan(LanLink),
}

impl Driver {
    pub fn is_bridge(&self) -> bool {
        matches!(self, Self::Bridge)
    }

    /// Docker's name for it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Macvlan(_) => "macvlan",
            Self::Ipvlan(_) => "ipvlan",
        }
    }
}

/// A LAN network's place on the host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LanLink {
    /// The parent interface (`eth0`, or `eth0.30` for VLAN 30).
    pub parent: String,
    /// `macvlan_mode` (bridge, private, vepa, passthru) or `ipvlan_mode`
    /// (l2, l3, l3s).
    pub mode: String,
    /// `ipvlan_flag` (bridge, private, vepa); none for macvlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// netd made the parent (an 802.1Q sub-interface of an existing
    /// interface): it goes with the network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub made_parent: bool,
    /// `host_access=true`: the host's own device on the parent, through
    /// which it reaches the network's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim: Option<Shim>,
}

/// The host's device on a LAN network's parent, and its address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shim {
    pub ifname: String,
    pub ip: Ipv4Addr,
}

fn yes() -> bool {
    true
}

fn any_address() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

/// Where an endpoint is in its life; see the module comment.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Creating,
    Ready,
    Removing,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointState {
    pub id: String,
    pub name: String,
    /// The namespace as the runtime named it, resolved to a path.
    pub netns: PathBuf,
    /// The namespace's identity when attached.
    pub netns_ident: NsIdent,
    /// The interface inside the namespace ("eth0").
    pub ifname: String,
    /// The host end of the veth, a port of the bridge.
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// RFC 3339.
    pub created: String,
    pub phase: Phase,
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// Who attached it (`cni`, `docker`), if a runtime's plugin did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The runtime's container ID, when the name is another (a pod's).
    /// Optional with no default, so state files written before it read as
    /// they were: the format is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The network it is on, when not the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// More names it answers to in DNS on its network (`--alias`). Empty
    /// by default and not written then: state files without it read as
    /// they were (no migration), and a file with it is still version 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// On a LAN network: the ifindex netd gave its device (see
    /// `LAN_IFINDEX_BASE`); `host_ifname` is then empty, there is no host
    /// side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_ifindex: Option<u32>,
}

impl State {
    /// The network named `name`: the default one or one made at run time.
    pub fn network_named(&self, name: &str) -> Option<&NetworkState> {
        if name == self.network.name {
            Some(&self.network)
        } else {
            self.networks.get(name)
        }
    }

    /// The network `ep` is on.
    pub fn network_of(&self, ep: &EndpointState) -> &NetworkState {
        ep.network
            .as_deref()
            .and_then(|name| self.networks.get(name))
            .unwrap_or(&self.network)
    }

    /// Every network, the default one first.
    pub fn all_networks(&self) -> impl Iterator<Item = &NetworkState> {
        std::iter::once(&self.network).chain(self.networks.values())
    }
}

impl EndpointState {
    /// What makes two endpoints one container: their namespace. Docker's
    /// endpoints have no namespace netd knows (device 0): each is its own.
    pub fn sandbox(&self) -> String {
        if self.netns_ident.dev == 0 {
            format!("endpoint:{}", self.id)
        } else {
            format!("netns:{}:{}", self.netns_ident.dev, self.netns_ident.ino)
        }
    }

    /// Whether `name` is this endpoint's name or one of its aliases (DNS
    /// names match without regard to case).
    pub fn answers_to(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// A copy without the published ports (which may be many), for the
    /// code that needs the endpoint's addresses and names only.
    pub fn without_ports(&self) -> Self {
        Self {
            id: self.id.clone(),
            name: self.name.clone(),
            netns: self.netns.clone(),
            netns_ident: self.netns_ident,
            ifname: self.ifname.clone(),
            host_ifname: self.host_ifname.clone(),
            ip: self.ip,
            mac: self.mac,
            created: self.created.clone(),
            phase: self.phase,
            ports: Vec::new(),
            owner: self.owner.clone(),
            container_id: self.container_id.clone(),
            network: self.network.clone(),
            aliases: self.aliases.clone(),
            lan_ifindex: self.lan_ifindex,
        }
    }
}

/// Injects errors into the store's file operations: the failpoints, or a
/// unit test's own.
type Fault = fn(&str, &str) -> io::Result<()>;

/// Reads and writes `state.json` and its journal in one directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// The last sequence number written, replayed or given up.
    seq: u64,
    /// Lines in the journal.
    lines: usize,
    /// The journal, open for appending once something was appended.
    journal: Option<File>,
    /// Bytes of the journal known to be whole lines: where the next line
    /// goes.
    journal_len: u64,
    /// The journal may hold bytes past `journal_len` (a torn line, or a
    /// failed append that could not be cut off): nothing is appended until
    /// they are gone.
    tail_dirty: bool,
    /// Bytes kept preallocated past the journal's end (0: none).
    reserve: u64,
    /// Whether a fold is owed: after a write failed, or when the journal
    /// is long.
    fold_due: bool,
    /// The last write failure, one line, until a fold succeeds.
    trouble: Option<Trouble>,
    fault: Fault,
}

/// Why the store could not write, as `netd status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    /// Out of space or quota (as opposed to an I/O error, a read-only
    /// filesystem).
    pub full: bool,
    pub error: String,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            seq: 0,
            lines: 0,
            journal: None,
            journal_len: 0,
            tail_dirty: false,
            reserve: DEFAULT_RESERVE,
            fold_due: false,
            trouble: None,
            fault: failpoint::io_error,
        }
    }

    /// Keeps `bytes` preallocated past the journal's end (see the module
    /// comment).
    pub fn with_reserve(mut self, bytes: u64) -> Self {
        self.reserve = bytes;
        self
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The last sequence number recorded.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The last write failure, while no fold has succeeded since.
    pub fn trouble(&self) -> Option<&Trouble> {
        self.trouble.as_ref()
    }

    /// The saved state with the journal replayed, or `None` if there is
    /// none yet. Writes nothing, so that an agent starts on a full disk.
    pub fn load(&mut self) -> Result<Option<State>, StateError> {
        let Some(mut state) = self.load_snapshot()? else {
            return Ok(None);
        };
        // An older layout reads as this one (see STATE_VERSION). The
        // migrated snapshot is written at start: from then on an older
        // netd refuses the directory instead of misreading this version's
        // journal lines.
        let migrated = state.version < STATE_VERSION;
        state.version = STATE_VERSION;
        self.seq = state.journal_seq;
        self.lines = 0;
        self.journal_len = 0;
        self.tail_dirty = false;
        let path = self.journal_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.fold_due = migrated;
                return Ok(Some(state));
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let (line, after) = match rest.split_once('\n') {
                Some((line, after)) => (line, Some(after)),
                None => (rest, None),
            };
            let Some(after) = after else {
                // Torn by a crash while it was written (a line and its
                // newline are one write): never acknowledged.
                self.tail_dirty = true;
                break;
            };
            let record: JournalLine =
                serde_json::from_str(line).map_err(|source| StateError::Parse {
                    path: path.clone(),
                    source,
                })?;
            self.lines += 1;
            self.journal_len += line.len() as u64 + 1;
            if record.seq > state.journal_seq {
                record.change.apply(&mut state);
            }
            self.seq = self.seq.max(record.seq);
            rest = after;
        }
        state.journal_seq = self.seq;
        // Folded at start, as soon as a write can succeed.
        self.fold_due = migrated || self.lines > 0 || self.tail_dirty;
        Ok(Some(state))
    }

    /// Records `change` durably: one journal line, fdatasync'd. `state` is
    /// the state before the change (the caller applies the change once
    /// this succeeded), written whole if the journal must be repaired
    /// first. On failure nothing of the change remains in the files.
    pub fn record(&mut self, change: &Change, state: &mut State) -> Result<(), StateError> {
        let result = self.append(change, state);
        if let Err(err) = &result {
            self.note_failure(err);
        }
        result
    }

    fn append(&mut self, change: &Change, state: &mut State) -> Result<(), StateError> {
        let path = self.journal_path();
        let write_error = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        if self.tail_dirty && self.cut_back().is_err() {
            // The bytes past the last whole line will not go: a new
            // snapshot makes them dead, and empties the journal.
            self.save(state)?;
        }
        let seq = self.seq + 1;
        let line = JournalLine {
            seq,
            change: change.clone(),
        };
        let mut text = serde_json::to_vec(&line).map_err(|e| write_error(e.into()))?;
        text.push(b'\n');
        self.open_journal().map_err(write_error)?;
        if change.is_addition() {
            self.reserve_after(text.len() as u64)?;
        }
        let fault = self.fault;
        let file = self.journal.as_mut().expect("opened above");
        let written = fault(JOURNAL_FILE, "write")
            .and_then(|()| file.write_all(&text))
            .and_then(|()| fault(JOURNAL_FILE, "fsync"))
            .and_then(|()| file.sync_data());
        if let Err(source) = written {
            // The number is not reused: a line that stays (cut_back
            // failed) is superseded by the next snapshot, numbered past it.
            self.seq = seq;
            self.tail_dirty = true;
            let _ = self.cut_back();
            return Err(write_error(source));
        }
        self.seq = seq;
        self.lines += 1;
        self.journal_len += text.len() as u64;
        if self.lines >= COMPACT_AFTER {
            self.fold_due = true;
        }
        state.journal_seq = self.seq;
        Ok(())
    }

    /// Opens the journal for appending, if it is not open.
    fn open_journal(&mut self) -> io::Result<()> {
        if self.journal.is_none() {
            self.journal = Some(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.journal_path())?,
            );
        }
        Ok(())
    }

    /// Cuts the journal back to its last whole line.
    fn cut_back(&mut self) -> io::Result<()> {
        self.open_journal()?;
        let file = self.journal.as_ref().expect("opened above");
        if file.metadata()?.len() == self.journal_len {
            // Nothing reached the file (a write refused outright).
            self.tail_dirty = false;
            return Ok(());
        }
        (self.fault)(JOURNAL_FILE, "truncate")?;
        file.set_len(self.journal_len)?;
        self.tail_dirty = false;
        // Best effort: the next line's fdatasync makes the size durable
        // anyway, and a cut line that comes back after a crash was never
        // acknowledged.
        let _ = file.sync_data();
        Ok(())
    }

    /// Allocates the next `line` bytes of the journal and a whole reserve
    /// after them, or refuses: the disk is full.
    fn reserve_after(&mut self, line: u64) -> Result<(), StateError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let file = self.journal.as_ref().expect("opened by the caller");
        let allocated = (self.fault)(JOURNAL_FILE, "reserve").and_then(|()| {
            fallocate(
                file,
                FallocateFlags::FALLOC_FL_KEEP_SIZE,
                self.journal_len as libc::off_t,
                (line + self.reserve) as libc::off_t,
            )
            .map_err(io::Error::from)
        });
        match allocated {
            Ok(()) => Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                warn!(dir = %self.dir.display(), "this filesystem cannot preallocate (fallocate): no space is kept for removals on a full disk");
                self.reserve = 0;
                Ok(())
            }
            Err(source) if is_no_space(&source) => Err(StateError::Full {
                dir: self.dir.clone(),
                source,
            }),
            Err(source) => Err(StateError::Write {
                path: self.journal_path(),
                source,
            }),
        }
    }

    fn note_failure(&mut self, err: &StateError) {
        self.fold_due = true;
        self.trouble = Some(Trouble {
            full: err.is_full(),
            error: crate::error::one_line(err),
        });
    }

    /// Folds the journal into `state.json` if a fold is owed; a failure is
    /// kept (see [`Self::trouble`]) and the fold owed still, to be tried
    /// again. Whether the directory had trouble before and has none now.
    pub fn fold_if_due(&mut self, state: &mut State) -> FoldOutcome {
        let had = self.trouble.clone();
        if !self.fold_due {
            if had.is_none() {
                return FoldOutcome::NotDue;
            }
            // Folded, but the reserve could not be made again (see
            // `save`): try that alone.
            return match self.open_journal().map(|()| self.reserve_after(0)) {
                Ok(Ok(())) => {
                    self.trouble = None;
                    FoldOutcome::Recovered
                }
                _ => FoldOutcome::StillFailing,
            };
        }
        match self.save(state) {
            Ok(()) => match had {
                Some(_) => FoldOutcome::Recovered,
                None => FoldOutcome::Folded,
            },
            Err(err) => {
                self.note_failure(&err);
                if had.as_ref().map(|t| &t.error) == self.trouble.as_ref().map(|t| &t.error) {
                    FoldOutcome::StillFailing
                } else {
                    FoldOutcome::Failed(err)
                }
            }
        }
    }

    /// `state.json` alone, or `None` if there is none yet.
    fn load_snapshot(&self) -> Result<Option<State>, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        // Check the version before the layout, so a newer file is reported
        // as newer, not as malformed.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_str(&text).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        if version.version > STATE_VERSION {
            return Err(StateError::Version {
                path,
                found: version.version,
            });
        }
        let state: State =
            serde_json::from_str(&text).map_err(|source| StateError::Parse { path, source })?;
        Ok(Some(state))
    }

    /// Replaces the saved state with `state`, atomically, and empties the
    /// journal it now includes; then preallocates the journal's reserve
    /// again (best effort).
    pub fn save(&mut self, state: &mut State) -> Result<(), StateError> {
        state.journal_seq = self.seq;
        let path = self.path();
        let fault = self.fault;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let write = || -> io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            // Serialized in memory first: one write, not one per token.
            let mut json = serde_json::to_vec_pretty(state)?;
            json.push(b'\n');
            let mut file = File::create(&tmp)?;
            fault(STATE_FILE, "write")?;
            file.write_all(&json)?;
            fault(STATE_FILE, "fsync")?;
            file.sync_all()?;
            fault("state.dir", "rename")?;
            fs::rename(&tmp, &path)
        };
        if let Err(source) = write() {
            // A partial temporary holds the space a full disk lacks.
            let _ = fs::remove_file(&tmp);
            return Err(StateError::Write { path, source });
        }
        // The rename is durable only once the directory is. If this fails
        // the new file is in place, and the journal left as it is: its
        // lines are all in the new file, and skipped by their numbers.
        let synced = fault("state.dir", "fsync").and_then(|()| File::open(&self.dir)?.sync_all());
        synced.map_err(|source| StateError::Write {
            path: self.dir.clone(),
            source,
        })?;
        if self.lines > 0 || self.journal_len > 0 || self.tail_dirty {
            // Everything in the journal is in the file now. A crash before
            // this leaves lines the next load skips by their numbers.
            let journal = self.journal_path();
            let truncate = || -> io::Result<()> {
                fault(JOURNAL_FILE, "truncate")?;
                let file = File::create(&journal)?;
                // Best effort, as in cut_back: what comes back is dead.
                let _ = fault(JOURNAL_FILE, "fsync").and_then(|()| file.sync_data());
                Ok(())
            };
            truncate().map_err(|source| StateError::Write {
                path: journal,
                source,
            })?;
            self.journal = None;
            self.lines = 0;
            self.journal_len = 0;
            self.tail_dirty = false;
        }
        self.fold_due = false;
        self.trouble = None;
        // Emptying the journal freed its reserve: keep one again. On a
        // disk full now, the next addition is refused.
        if self.open_journal().is_ok()
            && let Err(err) = self.reserve_after(0)
        {
            self.trouble = Some(Trouble {
                full: err.is_full(),
                error: crate::error::one_line(&err),
            });
        }
        Ok(())
    }

    /// Removes the state file and its journal; absent is fine. Whether the
    /// state file was there.
    pub fn remove(&self) -> io::Result<bool> {
        match fs::remove_file(self.journal_path()) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        match fs::remove_file(self.path()) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// What [`StateStore::fold_if_due`] did.
#[derive(Debug)]
pub enum FoldOutcome {
    NotDue,
    Folded,
    /// Folded after a write had failed: the directory is writable again.
    Recovered,
    /// Failed, in a new way: worth a warning.
    Failed(StateError),
    /// Failed as the last time.
    StillFailing,
}

/// An endpoint "ep" (name "web") with no ports, for tests.
#[cfg(test)]
pub(crate) fn sample_endpoint() -> EndpointState {
    EndpointState {
        id: "ep".into(),
        name: "web".into(),
        netns: "/run/netns/web".into(),
        netns_ident: NsIdent {
            dev: 4,
            ino: 4026532000,
        },
        ifname: "eth0".into(),
        host_ifname: "veth0".into(),
        ip: Ipv4Addr::new(172, 17, 0, 2),
        mac: "02:42:ac:11:00:02".parse().expect("mac"),
        created: "2026-11-28T00:00:00Z".into(),
        phase: Phase::Ready,
        ports: Vec::new(),
        owner: None,
        container_id: None,
        network: None,
        aliases: Vec::new(),
        lan_ifindex: None,
    }
}

/// A default network "netd" on 172.17.0.0/16, for tests.
#[cfg(test)]
pub(crate) fn sample_network() -> NetworkState {
    NetworkState {
        id: "ab".repeat(32),
        name: "netd".into(),
        created: "2026-11-28T00:00:00Z".into(),
        bridge: "netd0".into(),
        subnet: "172.17.0.0/16".parse().expect("subnet"),
        gateway: Ipv4Addr::new(172, 17, 0, 1),
        mtu: 1500,
        icc: true,
        masquerade: true,
        internal: false,
        host_binding: Ipv4Addr::UNSPECIFIED,
        index: 0,
        options: BTreeMap::new(),
        labels: BTreeMap::new(),
        docker_id: None,
        driver: Driver::Bridge,
        ip_range: None,
        aux_addresses: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            version: STATE_VERSION,
            network: sample_network(),
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            next_generation: 1,
            journal_seq: 0,
            docker_network: None,
            tc_filters: BTreeMap::new(),
        }
    }

    /// A state with one endpoint, "ep", and no ports.
    fn with_endpoint() -> State {
        let mut s = state();
        s.endpoints.insert("ep".into(), sample_endpoint());
        s
    }

    fn port(slot: u32) -> PublishedPort {
        PublishedPort {
            slot,
            generation: slot + 1,
            proto: Proto::Tcp,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host: PortRange::single(8000 + slot as u16),
            ctr: PortRange::single(80),
        }
    }

    /// Publishes `port(slot)` through `store` as the agent does: recorded,
    /// then applied.
    fn publish(store: &mut StateStore, state: &mut State, slot: u32) {
        try_publish(store, state, slot).expect("record");
    }

    fn try_publish(store: &mut StateStore, state: &mut State, slot: u32) -> Result<(), StateError> {
        commit(
            store,
            state,
            Change::Published {
                endpoint: "ep".into(),
                ports: vec![port(slot)],
                next_generation: slot + 2,
            },
        )
    }

    fn commit(store: &mut StateStore, state: &mut State, change: Change) -> Result<(), StateError> {
        store.record(&change, state)?;
        change.apply(state);
        // As the agent does.
        if store.trouble().is_none() {
            store.fold_if_due(state);
        }
        Ok(())
    }

    thread_local! {
        /// The operations failing on this test's thread, `(file, op, errno)`.
        static FAULTS: std::cell::RefCell<Vec<(&'static str, &'static str, i32)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    fn test_fault(file: &str, op: &str) -> io::Result<()> {
        FAULTS.with_borrow(
            |faults| match faults.iter().find(|(f, o, _)| *f == file && *o == op) {
                Some((_, _, errno)) => Err(io::Error::from_raw_os_error(*errno)),
                None => Ok(()),
            },
        )
    }

    fn failing(faults: &[(&'static str, &'static str, i32)]) {
        FAULTS.with_borrow_mut(|f| *f = faults.to_vec());
    }

    /// A store in a new directory with faults injected by [`failing`], and
    /// a saved state with endpoint "ep".
    fn faulty_store() -> (tempfile::TempDir, StateStore, State) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path()).with_reserve(4096);
        store.fault = test_fault;
        let mut s = with_endpoint();
        store.save(&mut s).expect("save");
        (dir, store, s)
    }

    fn reload(dir: &Path) -> State {
        StateStore::new(dir).load().expect("load").expect("state")
    }

    /// What the files hold equals what memory holds, ignoring the journal
    /// bookkeeping.
    fn assert_files_hold(dir: &Path, memory: &State, what: &str) {
        let mut loaded = reload(dir);
        loaded.journal_seq = memory.journal_seq;
        assert_eq!(&loaded, memory, "{what}");
    }

    #[test]
    fn a_failed_append_changes_nothing_and_the_next_one_works() {
        for (op, errno) in [
            ("write", libc::ENOSPC),
            ("write", libc::EIO),
            ("write", libc::EDQUOT),
            ("write", libc::EROFS),
            ("fsync", libc::EIO),
            ("reserve", libc::ENOSPC),
            ("reserve", libc::EIO),
        ] {
            let (dir, mut store, mut s) = faulty_store();
            publish(&mut store, &mut s, 0);
            let journal = fs::read(store.journal_path()).expect("journal");
            failing(&[(JOURNAL_FILE, op, errno)]);
            let err = try_publish(&mut store, &mut s, 1).expect_err("injected");
            let line = crate::error::one_line(&err);
            assert!(
                line.contains("state"),
                "{op}: the error names the file: {line}"
            );
            assert_eq!(ports(&s), [0], "{op}={errno}: memory unchanged");
            assert_eq!(
                fs::read(store.journal_path()).expect("journal"),
                journal,
                "{op}={errno}: the journal as it was"
            );
            assert_files_hold(dir.path(), &s, op);
            assert!(store.trouble().is_some());
            failing(&[]);
            publish(&mut store, &mut s, 2);
            assert_files_hold(dir.path(), &s, "after the failure");
            assert!(matches!(store.fold_if_due(&mut s), FoldOutcome::Recovered));
            assert!(store.trouble().is_none());
            assert_files_hold(dir.path(), &s, "folded");
        }
    }

    #[test]
    fn a_full_reserve_refuses_additions_and_records_removals() {
        let (dir, mut store, mut s) = faulty_store();
        publish(&mut store, &mut s, 0);
        failing(&[(JOURNAL_FILE, "reserve", libc::ENOSPC)]);
        let err = try_publish(&mut store, &mut s, 1).expect_err("full");
        assert!(matches!(err, StateError::Full { .. }), "{err:?}");
        assert!(err.is_full());
        assert!(crate::error::one_line(&err).contains("is full"));
        commit(
            &mut store,
            &mut s,
            Change::Unpublished {
                endpoint: "ep".into(),
                mappings: vec![(0, 1)],
            },
        )
        .expect("a removal needs no new space");
        commit(
            &mut store,
            &mut s,
            Change::EndpointRemoved {
                endpoint: "ep".into(),
            },
        )
        .expect("a removal needs no new space");
        assert!(s.endpoints.is_empty());
        assert_files_hold(dir.path(), &s, "removals recorded");
        assert!(store.trouble().is_some_and(|t| t.full));
    }

    #[test]
    fn a_line_that_cannot_be_cut_off_is_superseded_by_a_snapshot() {
        let (dir, mut store, mut s) = faulty_store();
        publish(&mut store, &mut s, 0);
        // The line is written, its fsync fails, and so does the cut: it
        // stays in the file, complete.
        failing(&[
            (JOURNAL_FILE, "fsync", libc::EIO),
            (JOURNAL_FILE, "truncate", libc::EIO),
        ]);
        try_publish(&mut store, &mut s, 1).expect_err("injected");
        assert_eq!(ports(&s), [0]);
        failing(&[]);
        publish(&mut store, &mut s, 2);
        assert_eq!(ports(&s), [0, 2]);
        assert_files_hold(dir.path(), &s, "the failed line is dead");
    }

    #[test]
    fn a_failed_fold_leaves_loadable_files() {
        for (file, op) in [
            (STATE_FILE, "write"),
            (STATE_FILE, "fsync"),
            ("state.dir", "rename"),
            ("state.dir", "fsync"),
            (JOURNAL_FILE, "truncate"),
        ] {
            for errno in [libc::ENOSPC, libc::EIO, libc::EROFS] {
                let (dir, mut store, mut s) = faulty_store();
                publish(&mut store, &mut s, 0);
                publish(&mut store, &mut s, 1);
                failing(&[(file, op, errno)]);
                store.save(&mut s).expect_err("injected");
                assert_files_hold(dir.path(), &s, &format!("{file}:{op}"));
                assert!(
                    !dir.path().join(format!(".{STATE_FILE}.tmp")).exists(),
                    "no temporary left"
                );
                // Appending goes on, and loads the same.
                publish(&mut store, &mut s, 2);
                assert_files_hold(dir.path(), &s, &format!("{file}:{op}, then a publish"));
                failing(&[]);
                store.save(&mut s).expect("save");
                assert_files_hold(dir.path(), &s, "saved");
            }
        }
    }

    #[test]
    fn a_torn_tail_is_cut_before_the_next_append() {
        let (dir, mut store, mut s) = faulty_store();
        publish(&mut store, &mut s, 0);
        let mut journal = fs::read_to_string(store.journal_path()).expect("journal");
        journal.push_str("{\"seq\":2,\"op\":\"publ");
        fs::write(store.journal_path(), &journal).expect("tear");
        let mut store = StateStore::new(dir.path());
        let mut s = store.load().expect("load").expect("state");
        publish(&mut store, &mut s, 1);
        assert_files_hold(dir.path(), &s, "appended after the torn line");
        assert_eq!(ports(&reload(dir.path())), [0, 1]);
    }

    #[test]
    fn every_change_replays_as_it_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path());
        let mut s = state();
        store.save(&mut s).expect("save");
        let mut other = sample_endpoint();
        other.id = "other".into();
        other.phase = Phase::Creating;
        for change in [
            Change::EndpointAdded {
                endpoint: Box::new(sample_endpoint()),
            },
            Change::EndpointAdded {
                endpoint: Box::new(other),
            },
            Change::EndpointPhase {
                endpoint: "other".into(),
                phase: Phase::Ready,
            },
            Change::EndpointNetns {
                endpoint: "other".into(),
                netns: "/var/run/docker/netns/1".into(),
            },
            Change::EndpointsRenamed {
                endpoints: vec!["other".into()],
                name: "renamed".into(),
            },
            Change::DockerNetwork {
                network: Some("d0c".into()),
            },
            Change::TcFilter {
                uplink: "up0".into(),
                added_qdisc: true,
            },
            Change::EndpointPhase {
                endpoint: "ep".into(),
                phase: Phase::Removing,
            },
            Change::EndpointRemoved {
                endpoint: "ep".into(),
            },
        ] {
            commit(&mut store, &mut s, change).expect("record");
        }
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.docker_network.as_deref(), Some("d0c"));
        assert_eq!(reload(dir.path()), s);
    }

    fn ports(state: &State) -> Vec<u32> {
        state.endpoints["ep"].ports.iter().map(|p| p.slot).collect()
    }

    #[test]
    fn port_changes_go_to_the_journal_and_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path());
        let mut s = with_endpoint();
        store.save(&mut s).expect("save");
        let snapshot = fs::read_to_string(store.path()).expect("state.json");
        for slot in 0..3 {
            publish(&mut store, &mut s, slot);
        }
        commit(
            &mut store,
            &mut s,
            Change::Unpublished {
                endpoint: "ep".into(),
                mappings: vec![(1, 2)],
            },
        )
        .expect("record");
        assert_eq!(
            fs::read_to_string(store.path()).expect("state.json"),
            snapshot,
            "a port change does not rewrite state.json"
        );
        let mut again = StateStore::new(dir.path());
        let loaded = again.load().expect("load").expect("state");
        assert_eq!(ports(&loaded), [0, 2]);
        assert_eq!(loaded.next_generation, 4);
        assert_eq!(loaded, s, "what was recorded is what loads");

        // Saving folds the journal in and empties it; numbering goes on.
        let mut s = loaded;
        again.save(&mut s).expect("save");
        assert_eq!(
            fs::read_to_string(again.journal_path()).expect("journal"),
            ""
        );
        publish(&mut again, &mut s, 5);
        let loaded = StateStore::new(dir.path())
            .load()
            .expect("load")
            .expect("state");
        assert_eq!(ports(&loaded), [0, 2, 5]);
        assert_eq!(loaded.journal_seq, 5);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_old_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path());
        let mut s = with_endpoint();
        store.save(&mut s).expect("save");
        publish(&mut store, &mut s, 0);
        publish(&mut store, &mut s, 1);
        let journal = fs::read_to_string(store.journal_path()).expect("journal");
        // The agent died writing a third line.
        fs::write(
            store.journal_path(),
            format!("{journal}{{\"seq\":3,\"op\":\"publ"),
        )
        .expect("tear");
        let loaded = StateStore::new(dir.path())
            .load()
            .expect("load")
            .expect("state");
        assert_eq!(ports(&loaded), [0, 1]);

        // A snapshot written but the journal not yet emptied (a crash in
        // between): its lines are already in, and are not applied twice.
        fs::write(store.journal_path(), &journal).expect("restore");
        let mut replayed = loaded.clone();
        replayed.endpoints.get_mut("ep").expect("ep").ports.clear();
        replayed.journal_seq = 2;
        fs::write(store.path(), serde_json::to_vec(&replayed).expect("json")).expect("snapshot");
        let loaded = StateStore::new(dir.path())
            .load()
            .expect("load")
            .expect("state");
        assert!(
            ports(&loaded).is_empty(),
            "lines up to seq 2 are in the snapshot"
        );

        // Garbage before the last line is an error, not silently skipped.
        fs::write(store.journal_path(), format!("garbage\n{journal}")).expect("corrupt");
        assert!(matches!(
            StateStore::new(dir.path()).load(),
            Err(StateError::Parse { .. })
        ));
    }

    #[test]
    fn the_journal_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path());
        let mut s = with_endpoint();
        store.save(&mut s).expect("save");
        for slot in 0..COMPACT_AFTER as u32 {
            publish(&mut store, &mut s, slot);
        }
        let lines = fs::read_to_string(store.journal_path())
            .expect("journal")
            .lines()
            .count();
        assert_eq!(lines, 0, "{COMPACT_AFTER} lines compacted");
        let loaded = StateStore::new(dir.path())
            .load()
            .expect("load")
            .expect("state");
        assert_eq!(loaded.endpoints["ep"].ports.len(), COMPACT_AFTER);
    }

    #[test]
    fn round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path());
        assert_eq!(store.load().expect("load"), None);
        store.save(&mut state()).expect("save");
        assert_eq!(store.load().expect("load"), Some(state()));
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        // The journal is empty, with its reserve preallocated.
        assert_eq!(names, vec![JOURNAL_FILE, STATE_FILE]);
        assert_eq!(
            fs::metadata(store.journal_path()).expect("journal").len(),
            0
        );
    }

    /// A version 2 state (bridge networks only, no `driver`) reads as a
    /// version 3 one of bridge networks and is saved as version 3; a LAN
    /// network and endpoint read back as written.
    #[test]
    fn a_version_2_state_migrates_and_lan_networks_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v2 = with_endpoint();
        let mut other = sample_network();
        other.name = "backend".into();
        other.bridge = "nd-backend".into();
        other.index = 1;
        v2.networks.insert("backend".into(), other);
        let mut json = serde_json::to_value(&v2).expect("json");
        json["version"] = 2.into();
        assert!(json["networks"]["backend"].get("driver").is_none());
        fs::write(dir.path().join(STATE_FILE), json.to_string()).expect("write");
        let mut store = StateStore::new(dir.path());
        let mut loaded = store.load().expect("load").expect("state");
        assert_eq!(loaded.version, STATE_VERSION);
        assert_eq!(loaded.networks["backend"].driver, Driver::Bridge);
        assert_eq!(loaded.endpoints["ep"].lan_ifindex, None);
        store.save(&mut loaded).expect("save");
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(store.path()).expect("read")).expect("json");
        assert_eq!(saved["version"], 3);

        let mut lan = sample_network();
        lan.name = "lan".into();
        lan.bridge = String::new();
        lan.index = 2;
        lan.ip_range = Some("192.168.1.128/25".parse().expect("range"));
        lan.aux_addresses
            .insert("host".into(), Ipv4Addr::new(192, 168, 1, 250));
        lan.driver = Driver::Macvlan(LanLink {
            parent: "eth0.30".into(),
            mode: "bridge".into(),
            flag: None,
            made_parent: true,
            shim: Some(Shim {
                ifname: "nh-0123456789ab".into(),
                ip: Ipv4Addr::new(192, 168, 1, 250),
            }),
        });
        loaded.networks.insert("lan".into(), lan);
        let ep = loaded.endpoints.get_mut("ep").expect("ep");
        ep.network = Some("lan".into());
        ep.host_ifname = String::new();
        ep.lan_ifindex = Some(netd_common::endpoint::LAN_IFINDEX_BASE);
        store.save(&mut loaded).expect("save");
        let reloaded = StateStore::new(dir.path())
            .load()
            .expect("load")
            .expect("state");
        assert_eq!(reloaded, loaded);
        let saved = fs::read_to_string(store.path()).expect("read");
        assert!(saved.contains(r#""kind": "macvlan""#), "{saved}");
    }

    /// A state directory as netd 0.1 (state version 1, one network) left
    /// it, its journal included: it loads as this version's state with no
    /// other network, and is saved as this version.
    #[test]
    fn a_version_1_state_migrates() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(STATE_FILE),
            include_str!("testdata/state-v1.json"),
        )
        .expect("write");
        fs::write(
            dir.path().join(JOURNAL_FILE),
            include_str!("testdata/journal-v1.jsonl"),
        )
        .expect("write");
        let mut store = StateStore::new(dir.path());
        let mut state = store.load().expect("load").expect("state");
        assert_eq!(state.version, STATE_VERSION);
        assert!(
            matches!(store.fold_if_due(&mut state), FoldOutcome::Folded),
            "a migrated state is written at the first fold"
        );
        assert_eq!(state.network.name, "netd");
        assert_eq!(state.network.index, netd_common::endpoint::DEFAULT_NETWORK);
        assert!(state.network.options.is_empty() && state.network.labels.is_empty());
        assert!(state.networks.is_empty());
        assert_eq!(
            store.seq(),
            5,
            "the journal's lines after the snapshot's 3 replayed"
        );
        let web = &state.endpoints["0b4f6e2c9a1d"];
        assert_eq!(web.network, None);
        assert_eq!(state.network_of(web).name, "netd");
        assert_eq!(
            web.ports.len(),
            1,
            "seq 3 is in the snapshot: not applied twice"
        );
        let db = &state.endpoints["7d3a9c5e1f2b"];
        assert_eq!(db.phase, Phase::Ready);
        assert_eq!(db.ip, Ipv4Addr::new(172, 30, 0, 3));
        assert_eq!(
            state.docker_network.as_deref(),
            Some("e1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90")
        );

        // Saved, it is version 2 and reads back the same.
        store.save(&mut state).expect("save");
        let text = fs::read_to_string(store.path()).expect("state.json");
        let saved: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(saved["version"], STATE_VERSION);
        assert_eq!(
            StateStore::new(dir.path()).load().expect("load"),
            Some(state)
        );
    }

    /// Without a journal to fold, the migrated snapshot is written at
    /// start all the same: an older netd must refuse the directory then.
    #[test]
    fn a_version_1_snapshot_is_rewritten_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(STATE_FILE),
            include_str!("testdata/state-v1.json"),
        )
        .expect("write");
        let mut store = StateStore::new(dir.path());
        let mut state = store.load().expect("load").expect("state");
        assert!(matches!(store.fold_if_due(&mut state), FoldOutcome::Folded));
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(store.path()).expect("state.json"))
                .expect("json");
        assert_eq!(saved["version"], STATE_VERSION);
        // A current snapshot alone owes nothing.
        let mut store = StateStore::new(dir.path());
        let mut state = store.load().expect("load").expect("state");
        assert!(matches!(store.fold_if_due(&mut state), FoldOutcome::NotDue));
    }

    #[test]
    fn refuses_newer_versions_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path());
        fs::write(store.path(), r#"{"version": 99, "future": true}"#).expect("write");
        assert!(matches!(
            store.load(),
            Err(StateError::Version { found: 99, .. })
        ));
        fs::write(store.path(), "{not json").expect("write");
        assert!(matches!(store.load(), Err(StateError::Parse { .. })));
    }
}
