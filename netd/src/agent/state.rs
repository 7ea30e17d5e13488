// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's persisted state: the network, its endpoints and their
//! addresses. Written atomically (write a temporary file, fsync, rename,
//! fsync the directory): after a crash the file is the old state or the new
//! one, never a mix.
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
    paths::STATE_FILE,
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
}

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
}

/// Reads and writes `state.json` in one directory.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
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

    /// Replaces the saved state with `state`, atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.path();
        let write = || -> io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
            let mut file = File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut file, state)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is.
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| StateError::Write { path, source })
    }

    /// Removes the state file; absent is fine.
    pub fn remove(&self) -> io::Result<bool> {
        match fs::remove_file(self.path()) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
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
        }
    }

    #[test]
    fn round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        assert_eq!(store.load().expect("load"), None);
        store.save(&state()).expect("save");
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
        let store = StateStore::new(dir.path());
        fs::write(store.path(), r#"{"version": 99, "future": true}"#).expect("write");
        assert!(matches!(
            store.load(),
            Err(StateError::Version { found: 99, .. })
        ));
        fs::write(store.path(), "{not json").expect("write");
        assert!(matches!(store.load(), Err(StateError::Parse { .. })));
    }
}
