// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The protocol counters on one interface, detached when dropped.

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{NlOptions, TcAttachOptions},
    },
};
use netd_common::stats::{ProtoStats, hook};

use super::{DatapathError, features::TcMode};
use crate::netns::Netns;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    TcIngress,
    Xdp,
}

impl Hook {
    fn index(self) -> u32 {
        match self {
            Self::TcIngress => hook::UPLINK_TC,
            Self::Xdp => hook::UPLINK_XDP,
        }
    }

    pub fn name(self) -> &'static str {
        hook::NAMES[self.index() as usize]
    }
}

/// The observe program attached to an interface. Dropping it detaches the
/// program (aya detaches links it owns on drop) and removes the clsact
/// qdisc if attaching added one: the interface is left as it was found.
pub struct Observer {
    /// Always `Some` but in `drop`, which drops it (detaching the program)
    /// before it removes the qdisc.
    ebpf: Option<Ebpf>,
    hook: Hook,
    /// The interface whose clsact qdisc attaching added.
    added_clsact: Option<String>,
    /// In netlink mode, the namespace attached in: the filter and the
    /// qdisc are found by interface index and name, so they are removed
    /// there, whichever namespace the observer is dropped in.
    netns: Option<Netns>,
}

impl Observer {
    /// Attaches as the kernel allows: TCX where it has it (6.6 and later),
    /// else a filter on a clsact qdisc through netlink.
    pub fn attach(interface: &str, hook: Hook) -> Result<Self, DatapathError> {
        let tc_mode = if super::features::Features::probe().tcx {
            TcMode::Tcx
        } else {
            TcMode::Netlink
        };
        Self::attach_with(interface, hook, tc_mode)
    }

    /// Attaches, with the TC hook in `tc_mode` (the XDP hook ignores it).
    pub fn attach_with(
        interface: &str,
        hook: Hook,
        tc_mode: TcMode,
    ) -> Result<Self, DatapathError> {
        let mut ebpf = EbpfLoader::new().load(crate::ebpf::object())?;
        let mut added_clsact = None;
        let mut netns = None;
        match hook {
            Hook::TcIngress => {
                let prog: &mut SchedClassifier =
                    program(&mut ebpf, "netd_observe_tc")?.try_into()?;
                prog.load()?;
                match tc_mode {
                    TcMode::Tcx => {
                        prog.attach(interface, TcAttachType::Ingress)?;
                    }
                    TcMode::Netlink => {
                        netns = Some(Netns::open("/proc/thread-self/ns/net").map_err(|err| {
                            DatapathError::Io {
                                what: "opening this thread's network namespace".to_owned(),
                                source: std::io::Error::other(err.to_string()),
                            }
                        })?);
                        let added = super::add_clsact(interface)?;
                        let options = TcAttachOptions::Netlink(NlOptions::default());
                        if let Err(err) =
                            prog.attach_with_options(interface, TcAttachType::Ingress, options)
                        {
                            if added {
                                let _ = super::del_clsact(interface);
                            }
                            return Err(err.into());
                        }
                        added_clsact = added.then(|| interface.to_owned());
                    }
                }
            }
            Hook::Xdp => {
                let prog: &mut Xdp = program(&mut ebpf, "netd_observe_xdp")?.try_into()?;
                prog.load()?;
                prog.attach(interface, XdpMode::default())?;
            }
        }
        Ok(Self {
            ebpf: Some(ebpf),
            hook,
            added_clsact,
            netns,
        })
    }

    /// Whether attaching added the interface's clsact qdisc (netlink mode,
    /// on an interface that had none).
    pub fn added_clsact(&self) -> bool {
        self.added_clsact.is_some()
    }

    /// The counters so far, summed over CPUs.
    pub fn read(&mut self) -> Result<ProtoStats, DatapathError> {
        let name = netd_common::map_names::PROTO_STATS;
        let map = self
            .ebpf
            .as_mut()
            .and_then(|ebpf| ebpf.map_mut(name))
            .ok_or(DatapathError::MissingMap(name))?;
        let stats: PerCpuArray<&mut MapData, ProtoStats> = PerCpuArray::try_from(map)?;
        let values = stats.get(&self.hook.index(), 0)?;
        Ok(values
            .iter()
            .copied()
            .fold(ProtoStats::default(), ProtoStats::merged))
    }

    pub fn detach(self) {
        drop(self);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let ebpf = self.ebpf.take();
        let added_clsact = self.added_clsact.take();
        // The program first (dropping the object detaches it), then the
        // qdisc it sat on.
        let teardown = move || {
            drop(ebpf);
            if let Some(interface) = added_clsact
                && let Err(err) = super::del_clsact(&interface)
            {
                tracing::warn!(error = %err, "leaving the clsact qdisc of {interface}");
            }
        };
        match &self.netns {
            Some(netns) => {
                if let Err(err) = netns.run(teardown) {
                    tracing::warn!(error = %err, "detaching the observer");
                }
            }
            None => teardown(),
        }
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))
}
