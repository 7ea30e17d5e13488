// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd down`: removing everything netd made, and saying what could not
//! go, each failure with its causes.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{
    config,
    state::{State, StateStore},
};
use crate::{
    api::DownReport,
    datapath::DatapathError,
    netlink::{Netlink, NetlinkError},
};

/// One object a teardown could not remove.
#[derive(Debug, Error)]
pub enum TeardownError {
    #[error("veth {veth} of endpoint {endpoint}")]
    Veth {
        veth: String,
        endpoint: String,
        #[source]
        source: NetlinkError,
    },
    #[error("bridge {bridge}")]
    Bridge {
        bridge: String,
        #[source]
        source: NetlinkError,
    },
    #[error("netd's TC hook on {uplink}")]
    Uplink {
        uplink: String,
        #[source]
        source: DatapathError,
    },
    #[error("pins under {path}")]
    Pins {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state {path}")]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a teardown removed (one line per object) and every error it met:
/// none stops the rest.
#[derive(Debug, Default)]
pub struct Teardown {
    pub removed: Vec<String>,
    pub errors: Vec<TeardownError>,
}

impl From<Teardown> for DownReport {
    fn from(teardown: Teardown) -> Self {
        Self {
            removed: teardown.removed,
            errors: teardown
                .errors
                .iter()
                .map(|err| crate::error::one_line(err))
                .collect(),
        }
    }
}

/// Removes everything netd created in this namespace, as recorded in
/// `state` (or found by the bridge name when there is no state): the
/// endpoints' veths, the TC hooks netd added to uplinks, every network's
/// bridge, the
/// pins under `bpffs`, and the state itself. Idempotent.
pub async fn down(
    nl: &Netlink,
    state: Option<&State>,
    store: &StateStore,
    bpffs: &Path,
) -> Teardown {
    let mut teardown = Teardown::default();
    for ep in state.iter().flat_map(|s| s.endpoints.values()) {
        if ep.lan_ifindex.is_some() {
            match super::lan::remove_lan_device(nl, ep).await {
                Ok(true) => teardown.removed.push(format!(
                    "device {} (endpoint {}, {})",
                    ep.ifname, ep.name, ep.ip
                )),
                Ok(false) => {}
                Err(source) => teardown.errors.push(TeardownError::Veth {
                    veth: ep.ifname.clone(),
                    endpoint: ep.name.clone(),
                    source,
                }),
            }
            continue;
        }
        let deleted = match nl.link(&ep.host_ifname).await {
            Ok(Some(link)) => nl
                .del_link(link.index, &ep.host_ifname)
                .await
                .map(|()| true),
            Ok(None) => Ok(false),
            Err(err) => Err(err),
        };
        match deleted {
            Ok(true) => teardown.removed.push(format!(
                "veth {} (endpoint {}, {})",
                ep.host_ifname, ep.name, ep.ip
            )),
            Ok(false) => {}
            Err(source) => teardown.errors.push(TeardownError::Veth {
                veth: ep.host_ifname.clone(),
                endpoint: ep.name.clone(),
                source,
            }),
        }
    }
    for (uplink, added_qdisc) in state.iter().flat_map(|s| &s.tc_filters) {
        let Ok(Some(_)) = nl.link(uplink).await else {
            continue;
        };
        let mut steps = vec![(
            crate::datapath::remove_filter(uplink),
            format!("TC filter on {uplink}"),
        )];
        if *added_qdisc {
            steps.push((
                crate::datapath::del_clsact(uplink),
                format!("clsact qdisc of {uplink}"),
            ));
        }
        for (result, what) in steps {
            match result {
                Ok(()) => teardown.removed.push(what),
                Err(source) => teardown.errors.push(TeardownError::Uplink {
                    uplink: uplink.clone(),
                    source,
                }),
            }
        }
    }
    // Bridges, and LAN networks' shims and the VLAN sub-interfaces netd
    // made, each with the kind it must have to be netd's.
    let links: Vec<(&str, &[&str])> = match state {
        Some(state) => state
            .all_networks()
            .flat_map(|n| match n.lan() {
                None => vec![(n.bridge.as_str(), &["bridge"][..])],
                Some(lan) => lan
                    .shim
                    .iter()
                    .map(|shim| (shim.ifname.as_str(), &["macvlan", "ipvlan"][..]))
                    .chain(
                        lan.made_parent
                            .then_some((lan.parent.as_str(), &["vlan"][..])),
                    )
                    .collect(),
            })
            .collect(),
        None => vec![(config::DEFAULT_BRIDGE, &["bridge"][..])],
    };
    for (bridge, kinds) in links {
        let deleted = match nl.link(bridge).await {
            Ok(Some(link)) if link.kind.as_deref().is_some_and(|k| kinds.contains(&k)) => {
                nl.del_link(link.index, bridge).await.map(|()| true)
            }
            Ok(_) => Ok(false),
            Err(err) => Err(err),
        };
        match deleted {
            Ok(true) => teardown.removed.push(format!("{} {bridge}", kinds[0])),
            Ok(false) => {}
            Err(source) => teardown.errors.push(TeardownError::Bridge {
                bridge: bridge.to_owned(),
                source,
            }),
        }
    }
    match fs::remove_dir_all(bpffs) {
        Ok(()) => teardown
            .removed
            .push(format!("pins under {}", bpffs.display())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => teardown.errors.push(TeardownError::Pins {
            path: bpffs.to_owned(),
            source,
        }),
    }
    match store.remove() {
        Ok(true) => teardown
            .removed
            .push(format!("state {}", store.path().display())),
        Ok(false) => {}
        Err(source) => teardown.errors.push(TeardownError::State {
            path: store.path(),
            source,
        }),
    }
    // The lock and the directory go too when nothing else is in it; a
    // running agent keeps its lock (an open file) until it exits.
    let _ = fs::remove_file(store.dir().join(crate::paths::LOCK_FILE));
    let _ = fs::remove_dir(store.dir());
    teardown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_line_carries_every_cause() {
        let teardown = Teardown {
            removed: vec!["bridge netd0".to_owned()],
            errors: vec![TeardownError::Pins {
                path: PathBuf::from("/sys/fs/bpf/netd"),
                source: io::Error::from_raw_os_error(libc::EBUSY),
            }],
        };
        let report = DownReport::from(teardown);
        assert_eq!(report.removed, ["bridge netd0"]);
        assert_eq!(report.errors.len(), 1);
        assert!(
            report.errors[0].starts_with("pins under /sys/fs/bpf/netd: "),
            "{:?}",
            report.errors
        );
        assert!(
            report.errors[0].contains("busy"),
            "the cause is kept: {:?}",
            report.errors
        );
    }
}
