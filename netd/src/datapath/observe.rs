// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The protocol counters on one interface, detached when dropped.

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use netd_common::stats::{ProtoStats, hook};

use crate::error::DatapathError;

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
/// program (aya detaches links it owns on drop).
pub struct Observer {
    ebpf: Ebpf,
    hook: Hook,
}

impl Observer {
    pub fn attach(interface: &str, hook: Hook) -> Result<Self, DatapathError> {
        let mut ebpf = EbpfLoader::new().load(crate::ebpf::object())?;
        match hook {
            Hook::TcIngress => {
                let prog: &mut SchedClassifier =
                    program(&mut ebpf, "netd_observe_tc")?.try_into()?;
                prog.load()?;
                // Before TCX (6.6) aya attaches through netlink, which
                // needs a clsact qdisc; it stays after the observer (an
                // empty qdisc changes nothing).
                if !super::features::Features::probe().tcx {
                    super::add_clsact(interface)?;
                }
                prog.attach(interface, TcAttachType::Ingress)?;
            }
            Hook::Xdp => {
                let prog: &mut Xdp = program(&mut ebpf, "netd_observe_xdp")?.try_into()?;
                prog.load()?;
                prog.attach(interface, XdpMode::default())?;
            }
        }
        Ok(Self { ebpf, hook })
    }

    /// The counters so far, summed over CPUs.
    pub fn read(&mut self) -> Result<ProtoStats, DatapathError> {
        let name = "NETD_PROTO_STATS";
        let map = self
            .ebpf
            .map_mut(name)
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

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))
}
