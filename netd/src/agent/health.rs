// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The health of each part of the datapath, for `netd status` (and a
//! health check: `netd status` exits non-zero when a part is not ok).
//!
//! Each part is asked of the kernel as it is now, with the cheapest
//! question that answers it: the pins on the bpffs, the pinned links'
//! programs, and for a TC link what runs on its device (a BPF query, no
//! netlink dump). What the agent's tick puts back by itself (a removed
//! pin, netd's TC filter in netlink mode) shows as not ok for the second
//! until it does; what it cannot (a device gone under a link, a foreign
//! map at a pin) stays so, with what to do about it.

use std::{collections::BTreeMap, path::Path};

use aya::{
    maps::MapInfo,
    programs::{
        SchedClassifier,
        links::{FdLink, PinnedLink},
        tc::TcAttachType,
    },
};
use netd_common::map_names::PINNED;

use super::{Agent, datapath::endpoint_pin, state::Phase};
use crate::{
    api::{Health, HealthState},
    datapath::{SOCKET_PROGRAMS, TcMode, features::CGROUP_SOCK_ADDR_SINCE},
    paths::{self, cgroup_link, uplink_link},
};

/// The kernel ID of each map pinned under `bpffs`.
pub(super) fn pinned_map_ids(bpffs: &Path) -> BTreeMap<&'static str, u32> {
    PINNED
        .iter()
        .filter_map(|&name| {
            let info = MapInfo::from_pin(paths::map_pin(bpffs, name)).ok()?;
            Some((name, info.id()))
        })
        .collect()
}

/// What was found of one part.
struct Finding {
    state: HealthState,
    detail: String,
    hint: Option<String>,
}

impl Finding {
    fn ok(detail: String) -> Self {
        Self {
            state: HealthState::Ok,
            detail,
            hint: None,
        }
    }

    fn not_ok(state: HealthState, detail: String, hint: impl Into<Option<String>>) -> Self {
        Self {
            state,
            detail,
            hint: hint.into(),
        }
    }

    fn named(self, name: String) -> Health {
        Health {
            name,
            state: self.state,
            detail: self.detail,
            hint: self.hint,
        }
    }
}

/// The tick attaches again what lost its pin: said where that is the fix.
const REATTACHED: &str =
    "the agent attaches it again within a second; if it stays down, its log says why";

/// The program of the link pinned at `path`, or why there is none.
fn linked_program(path: &Path) -> Result<u32, Finding> {
    let down = |detail| Finding::not_ok(HealthState::Down, detail, REATTACHED.to_owned());
    if !path.exists() {
        return Err(down(format!(
            "not attached: its link pin {} is gone",
            path.display()
        )));
    }
    let link = PinnedLink::from_pin(path)
        .map_err(|err| down(format!("opening its link pin {}: {err}", path.display())))?;
    FdLink::from(link)
        .info()
        .map(|info| info.program_id())
        .map_err(|err| down(format!("reading its link {}: {err}", path.display())))
}

/// Whether `device` exists in the agent's namespace (an ioctl, not
/// netlink).
fn device_exists(device: &str) -> bool {
    nix::net::if_::if_nametoindex(device).is_ok()
}

/// The TC program netd attaches on ingress of `device` through the link
/// pinned as `pin`: the link is there and its program runs on `device`.
/// `gone` is what to do when `device` is not there at all.
fn tc_ingress(mode: TcMode, bpffs: &Path, pin: &str, device: &str, gone: String) -> Finding {
    if !device_exists(device) {
        return Finding::not_ok(HealthState::Down, format!("{device} is gone"), gone);
    }
    if mode == TcMode::Netlink {
        // A filter has no pin to look at. The tick adds netd's again within
        // a second of its removal (a request per device, every second):
        // asking netlink here too, per endpoint and per request, would
        // learn nothing the tick does not act on already.
        return Finding::ok(format!(
            "TC ingress of {device}: netd's clsact filter (netlink mode: added again within a second if removed)"
        ));
    }
    let path = paths::link_pin(bpffs, pin);
    let program = match linked_program(&path) {
        Ok(program) => program,
        Err(finding) => return finding,
    };
    match SchedClassifier::query_tcx(device, TcAttachType::Ingress) {
        Ok((_, programs)) if programs.iter().any(|p| p.id() == program) => Finding::ok(format!(
            "TC ingress of {device} (tcx link, program {program})"
        )),
        Ok(_) => Finding::not_ok(
            HealthState::Down,
            format!(
                "the pinned link's program {program} does not run on {device} (was it made anew?)"
            ),
            format!(
                "remove {}: the agent attaches to {device} anew within a second",
                path.display()
            ),
        ),
        Err(err) => Finding::not_ok(
            HealthState::Down,
            format!("asking the kernel what runs on {device}: {err}"),
            None,
        ),
    }
}

impl Agent {
    /// Each part of the datapath, checked now: the pinned maps, host-local
    /// access, each uplink's attachments, each endpoint's.
    pub(super) async fn health(&self) -> Vec<Health> {
        let bpffs = &self.config.bpffs;
        let mode = self.datapath.tc_mode();
        let mut parts = vec![
            self.maps_health().named("maps".to_owned()),
            self.host_local_health().named("host-local".to_owned()),
        ];
        for uplink in &self.config.uplinks {
            let gone = format!(
                "bring {uplink} back, then restart the agent (or restart it with another --uplink)"
            );
            parts.push(
                tc_ingress(mode, bpffs, &uplink_link("tc", uplink), uplink, gone)
                    .named(format!("uplink {uplink} tc")),
            );
            if self.config.xdp {
                parts.push(
                    self.xdp_health(uplink)
                        .await
                        .named(format!("uplink {uplink} xdp")),
                );
            }
        }
        let mut endpoints: Vec<_> = self
            .state
            .endpoints
            .values()
            // One caught between states waits for the state directory to
            // take its record (`state_error` says so); it serves nothing.
            .filter(|ep| ep.phase == Phase::Ready)
            .map(|ep| (self.state.network_of(ep).name.as_str(), ep))
            .collect();
        endpoints.sort_by(|a, b| a.0.cmp(b.0).then(a.1.name.cmp(&b.1.name)));
        for (network, ep) in endpoints {
            let pin = endpoint_pin(ep);
            let finding = if ep.lan_ifindex.is_some() {
                // Its device is in its container's namespace, where the
                // agent's threads are not: its link is what is seen here.
                match (mode, linked_program(&paths::link_pin(bpffs, &pin))) {
                    (TcMode::Netlink, _) => Finding::ok(format!(
                        "TC egress of {} in its namespace: netd's clsact filter (netlink mode: not checked from the agent's namespace)",
                        ep.ifname
                    )),
                    (TcMode::Tcx, Ok(program)) => Finding::ok(format!(
                        "TC egress of {} in its namespace (tcx link, program {program})",
                        ep.ifname
                    )),
                    (TcMode::Tcx, Err(finding)) => finding,
                }
            } else {
                let gone = format!(
                    "its namespace was deleted without a detach? `netd detach --name {}` releases it",
                    ep.id
                );
                tc_ingress(mode, bpffs, &pin, &ep.host_ifname, gone)
            };
            parts.push(finding.named(format!("endpoint {} ({network})", ep.name)));
        }
        parts
    }

    /// Every map pinned, and each the one the programs use: a pin gone
    /// costs nothing now (the programs hold their maps) but a restarted
    /// agent would start from empty ones; a foreign map pinned in its
    /// place would be refused at the next start, or adopted.
    fn maps_health(&self) -> Finding {
        let bpffs = &self.config.bpffs;
        let mut missing = Vec::new();
        let mut foreign = Vec::new();
        for name in PINNED {
            let path = paths::map_pin(bpffs, name);
            if !path.exists() {
                missing.push(name);
                continue;
            }
            let expected = self.map_ids.get(name).copied();
            match MapInfo::from_pin(&path) {
                Ok(info) if Some(info.id()) == expected => {}
                Ok(info) => foreign.push(format!(
                    "{} is map {} (key size {}, value size {}), not the programs' {}",
                    path.display(),
                    info.id(),
                    info.key_size(),
                    info.value_size(),
                    expected.map_or_else(|| "(unknown)".to_owned(), |id| format!("map {id}"))
                )),
                Err(err) => foreign.push(format!("{}: {err}", path.display())),
            }
        }
        if missing.is_empty() && foreign.is_empty() {
            return Finding::ok(format!(
                "{} maps pinned in {}, each the one the programs use",
                PINNED.len(),
                bpffs.display()
            ));
        }
        let mut detail = Vec::new();
        if !missing.is_empty() {
            detail.push(format!("pin gone: {}", missing.join(", ")));
        }
        detail.extend(foreign.iter().cloned());
        let hint = if foreign.is_empty() {
            "the agent pins them again within a second; if not, its log says why"
        } else {
            "remove what is pinned in the map's place: the agent pins its own again within a second"
        };
        Finding::not_ok(HealthState::Degraded, detail.join("; "), hint.to_owned())
    }

    /// The cgroup socket programs, each through its pinned link; off is
    /// ok when asked for (`--cgroup none`), degraded when the kernel or
    /// the host has no way to it.
    fn host_local_health(&self) -> Finding {
        let Some(cgroup) = &self.config.cgroup else {
            if !self.config.features.cgroup_sock_addr {
                return Finding::not_ok(
                    HealthState::Degraded,
                    format!(
                        "off: the cgroup socket hooks need Linux {CGROUP_SOCK_ADDR_SINCE}, this is {}",
                        self.config.features.release
                    ),
                    format!("a kernel of Linux {CGROUP_SOCK_ADDR_SINCE} or later"),
                );
            }
            if super::config::cgroup2_root().is_none() {
                return Finding::not_ok(
                    HealthState::Degraded,
                    "off: no cgroup2 hierarchy is mounted here".to_owned(),
                    "mount one (`mount -t cgroup2 none /sys/fs/cgroup`) and restart the agent, or give it --cgroup DIR".to_owned(),
                );
            }
            return Finding::ok(
                "off (--cgroup none): host processes reach published ports through the uplinks only"
                    .to_owned(),
            );
        };
        for program in SOCKET_PROGRAMS {
            let path = paths::link_pin(&self.config.bpffs, &cgroup_link(program));
            if let Err(finding) = linked_program(&path) {
                return Finding {
                    detail: format!("{program}: {}", finding.detail),
                    ..finding
                };
            }
        }
        Finding::ok(format!(
            "{} socket programs attached to cgroup {}",
            SOCKET_PROGRAMS.len(),
            cgroup.display()
        ))
    }

    /// The XDP program on `uplink`, through its pinned link: the link is
    /// there and the uplink runs an XDP program (one link request by name;
    /// there are few uplinks).
    async fn xdp_health(&self, uplink: &str) -> Finding {
        let path = paths::link_pin(&self.config.bpffs, &uplink_link("xdp", uplink));
        let program = match linked_program(&path) {
            Ok(program) => program,
            Err(finding) => return finding,
        };
        match self.nl.link(uplink).await {
            Ok(Some(link)) => match link.xdp {
                Some(mode) => Finding::ok(format!("XDP {mode} (link, program {program})")),
                None => Finding::not_ok(
                    HealthState::Down,
                    format!("{uplink} runs no XDP program (was it made anew?)"),
                    format!(
                        "remove {}: the agent attaches to {uplink} anew within a second",
                        path.display()
                    ),
                ),
            },
            Ok(None) => Finding::not_ok(
                HealthState::Down,
                format!("{uplink} is gone"),
                format!("bring {uplink} back, then restart the agent"),
            ),
            Err(err) => Finding::not_ok(
                HealthState::Down,
                format!("asking netlink about {uplink}: {err}"),
                None,
            ),
        }
    }
}
