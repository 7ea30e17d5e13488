// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's persisted state: the network, its endpoints and their
//! addresses. Written atomically (write a temporary file, fsync, rename,
//! fsync the directory): after a crash the file is the old state or the new
//! one, never a mix.
//!
//! Published ports change far more often than anything else, and a host
//! may have tens of thousands of them: rewriting the whole file for each
//! would make publishing one port cost milliseconds. Port changes are
//! therefore appended to a journal (`state.journal`, one JSON line per
//! change, fdatasync'd before the change is acknowledged) and folded into
//! `state.json` every [`COMPACT_AFTER`] changes and on every other save.
//! `state.json` records the last journal sequence number it includes; a
//! load replays the newer lines. A torn last line (the agent died writing
//! it, before acknowledging anything) is ignored.
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
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    mac::MacAddr,
    netns::NsIdent,
    paths::{JOURNAL_FILE, STATE_FILE},
    portspec::{PortRange, Proto},
};

/// The layout version of `state.json`. A state written by a newer netd is
/// refused rather than misread.
pub const STATE_VERSION: u32 = 1;

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
        "{path} was written by a newer netd (state version {found}, this netd reads {STATE_VERSION}); refusing to misread it"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub version: u32,
    pub network: NetworkState,
    /// Endpoints by ID.
    pub endpoints: BTreeMap<String, EndpointState>,
    /// The generation the next published mapping gets.
    #[serde(default = "first_generation")]
    pub next_generation: u32,
    /// The last journal change this state includes.
    #[serde(default)]
    pub journal_seq: u64,
    /// The ID of the Docker network this network backs, once Docker's
    /// driver created one (`agent::docker`): Docker may have one only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_network: Option<String>,
    /// Uplinks carrying netd's cls_bpf filter (netlink attach mode), and
    /// whether netd added their clsact qdisc: what `netd down` removes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tc_filters: BTreeMap<String, bool>,
}

/// A change of published ports, as the journal records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PortChange {
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
}

impl PortChange {
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
        }
    }
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
struct JournalLine {
    seq: u64,
    #[serde(flatten)]
    change: PortChange,
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
}

impl EndpointState {
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
        }
    }
}

/// Reads and writes `state.json` and its journal in one directory.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// The last sequence number written or replayed.
    seq: u64,
    /// Lines in the journal.
    lines: usize,
    /// The journal, open for appending once something was appended.
    journal: Option<File>,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            seq: 0,
            lines: 0,
            journal: None,
        }
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

    /// The saved state with the journal replayed, or `None` if there is
    /// none yet.
    pub fn load(&mut self) -> Result<Option<State>, StateError> {
        let Some(mut state) = self.load_snapshot()? else {
            return Ok(None);
        };
        self.seq = state.journal_seq;
        self.lines = 0;
        let path = self.journal_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Some(state)),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let record: JournalLine = match serde_json::from_str(line) {
                Ok(record) => record,
                // Torn by a crash while it was written: never acknowledged.
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(source) => return Err(StateError::Parse { path, source }),
            };
            self.lines += 1;
            if record.seq > state.journal_seq {
                record.change.apply(&mut state);
                self.seq = record.seq;
            }
        }
        state.journal_seq = self.seq;
        Ok(Some(state))
    }

    /// Records `change`, which `state` already reflects: one journal line,
    /// or, every [`COMPACT_AFTER`] changes, a whole new `state.json`.
    pub fn record(&mut self, change: &PortChange, state: &mut State) -> Result<(), StateError> {
        if self.lines >= COMPACT_AFTER {
            return self.save(state);
        }
        let path = self.journal_path();
        let line = JournalLine {
            seq: self.seq + 1,
            change: change.clone(),
        };
        let append = |journal: &mut Option<File>| -> io::Result<()> {
            let mut text = serde_json::to_vec(&line)?;
            text.push(b'\n');
            if journal.is_none() {
                *journal = Some(
                    fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?,
                );
            }
            let file = journal.as_mut().expect("opened above");
            file.write_all(&text)?;
            file.sync_data()
        };
        append(&mut self.journal).map_err(|source| StateError::Write {
            path: path.clone(),
            source,
        })?;
        self.seq += 1;
        self.lines += 1;
        state.journal_seq = self.seq;
        Ok(())
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
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Parse { path, source })
    }

    /// Replaces the saved state with `state`, atomically, and empties the
    /// journal it now includes.
    pub fn save(&mut self, state: &mut State) -> Result<(), StateError> {
        state.journal_seq = self.seq;
        let path = self.path();
        let write = || -> io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
            // Serialized in memory first: one write, not one per token.
            let mut json = serde_json::to_vec_pretty(state)?;
            json.push(b'\n');
            let mut file = File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is.
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| StateError::Write { path, source })?;
        if self.lines > 0 {
            // Everything in the journal is in the file now. A crash before
            // this leaves lines the next load skips by their numbers.
            let path = self.journal_path();
            let truncate = || -> io::Result<()> {
                let file = File::create(&path)?;
                file.sync_all()
            };
            truncate().map_err(|source| StateError::Write { path, source })?;
            self.journal = None;
            self.lines = 0;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            version: STATE_VERSION,
            network: NetworkState {
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
            },
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

    /// Publishes `port(slot)` through `store` as the agent does.
    fn publish(store: &mut StateStore, state: &mut State, slot: u32) {
        let change = PortChange::Published {
            endpoint: "ep".into(),
            ports: vec![port(slot)],
            next_generation: slot + 2,
        };
        change.apply(state);
        store.record(&change, state).expect("record");
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
        let gone = PortChange::Unpublished {
            endpoint: "ep".into(),
            mappings: vec![(1, 2)],
        };
        gone.apply(&mut s);
        store.record(&gone, &mut s).expect("record");
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
        for slot in 0..=COMPACT_AFTER as u32 {
            publish(&mut store, &mut s, slot);
        }
        let lines = fs::read_to_string(store.journal_path())
            .expect("journal")
            .lines()
            .count();
        assert_eq!(lines, 0, "the change after {COMPACT_AFTER} lines compacted");
        let loaded = StateStore::new(dir.path())
            .load()
            .expect("load")
            .expect("state");
        assert_eq!(loaded.endpoints["ep"].ports.len(), COMPACT_AFTER + 1);
    }

    #[test]
    fn round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::new(dir.path());
        assert_eq!(store.load().expect("load"), None);
        store.save(&mut state()).expect("save");
        assert_eq!(store.load().expect("load"), Some(state()));
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![STATE_FILE]);
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
