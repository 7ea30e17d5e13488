// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd's eBPF programs on crafted packets, through `BPF_PROG_TEST_RUN`.
//!
//! [`Bpf::load`] loads the object embedded in the `netd` binary with private,
//! unpinned maps, so each test starts from empty maps and sees only its own
//! side effects.

use std::time::Duration;

use aya::{
    Ebpf, EbpfError, EbpfLoader, Pod,
    maps::{MapData, PerCpuArray},
    programs::{Program, ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};

/// Room for the program to grow the packet (encapsulation, adjust_head).
const HEADROOM: usize = 256;

/// What a program did with one packet.
#[derive(Debug)]
pub struct Run {
    /// The program's return value (TC_ACT_* or XDP_*), as the program
    /// returned it.
    pub verdict: i32,
    /// The packet as the program left it.
    pub data: Vec<u8>,
    /// Average time per run, as the kernel measured it.
    pub duration: Duration,
}

/// The kind of hook a program is written for, for [`Bpf::try_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Tc,
    Xdp,
}

pub struct Bpf {
    ebpf: Ebpf,
}

impl Bpf {
    /// Loads netd's eBPF object with fresh maps. Programs are loaded into
    /// the kernel on first use.
    pub fn load() -> Self {
        let ebpf = EbpfLoader::new()
            .load(netd::ebpf::object())
            .unwrap_or_else(|e| panic!("loading netd's eBPF object: {e:?}"));
        Self { ebpf }
    }

    /// [`Bpf::load`] with room for `ct_max` entries in the conntrack table
    /// (`NETD_CT`), as `netd agent --ct-max` sizes it; the kernel's refusal
    /// (a table too large for the memory) is returned, not a panic.
    pub fn load_with_ct_max(ct_max: u32) -> Result<Self, EbpfError> {
        let ebpf = EbpfLoader::new()
            .map_max_entries(netd_common::map_names::CT, ct_max)
            .load(netd::ebpf::object())?;
        Ok(Self { ebpf })
    }

    fn program(&mut self, name: &str) -> &mut Program {
        self.ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name} in netd's object"))
    }

    /// The TC program `name`, loaded.
    pub fn tc(&mut self, name: &str) -> &mut SchedClassifier {
        let prog: &mut SchedClassifier = self
            .program(name)
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not a TC program: {e}"));
        if prog.fd().is_err() {
            prog.load()
                .unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
        }
        prog
    }

    /// The XDP program `name`, loaded.
    pub fn xdp(&mut self, name: &str) -> &mut Xdp {
        let prog: &mut Xdp = self
            .program(name)
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"));
        if prog.fd().is_err() {
            prog.load()
                .unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
        }
        prog
    }

    /// Runs TC program `name` once on `frame`.
    pub fn run_tc(&mut self, name: &str, frame: &[u8]) -> Run {
        let prog = self.tc(name);
        run(|opts| prog.test_run(opts), frame, 1, None)
    }

    /// Runs TC program `name` once on `frame` as if it had arrived on
    /// interface `ifindex` (`__sk_buff.ingress_ifindex` and `ifindex`), so
    /// that FIB lookups have an input device.
    pub fn run_tc_on(&mut self, name: &str, frame: &[u8], ifindex: u32) -> Run {
        let prog = self.tc(name);
        let ctx = tc_ctx_on(ifindex);
        run(|opts| prog.test_run(opts), frame, 1, Some(&ctx))
    }

    /// The loaded object, to seed or read maps with `netd::datapath::Maps`.
    pub fn ebpf_mut(&mut self) -> &mut aya::Ebpf {
        &mut self.ebpf
    }

    /// Runs XDP program `name` once on `frame`.
    pub fn run_xdp(&mut self, name: &str, frame: &[u8]) -> Run {
        let prog = self.xdp(name);
        run(|opts| prog.test_run(opts), frame, 1, None)
    }

    /// Runs TC program `name` `repeat` times on `frame` (for timing).
    pub fn time_tc(&mut self, name: &str, frame: &[u8], repeat: u32) -> Run {
        let prog = self.tc(name);
        run(|opts| prog.test_run(opts), frame, repeat, None)
    }

    /// Runs TC program `name` `repeat` times on `frame` as if it had
    /// arrived on interface `ifindex` (see [`Bpf::run_tc_on`]), for timing.
    pub fn time_tc_on(&mut self, name: &str, frame: &[u8], ifindex: u32, repeat: u32) -> Run {
        self.try_run(Hook::Tc, name, frame, Some(ifindex), repeat)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e:?}"))
    }

    /// Runs XDP program `name` `repeat` times on `frame` (for timing).
    pub fn time_xdp(&mut self, name: &str, frame: &[u8], repeat: u32) -> Run {
        let prog = self.xdp(name);
        run(|opts| prog.test_run(opts), frame, repeat, None)
    }

    /// Runs program `name` of `hook` `repeat` times on `frame`, for TC as
    /// if it had arrived on `ifindex` when given (see [`Bpf::run_tc_on`];
    /// XDP takes no interface). The kernel runs every repetition on the
    /// same buffer, so a program that rewrites the packet sees its own
    /// output from the second repetition on. A failing `BPF_PROG_TEST_RUN`
    /// is returned, not a panic.
    pub fn try_run(
        &mut self,
        hook: Hook,
        name: &str,
        frame: &[u8],
        ifindex: Option<u32>,
        repeat: u32,
    ) -> Result<Run, ProgramError> {
        match hook {
            Hook::Tc => {
                let ctx = ifindex.map(tc_ctx_on);
                let prog = self.tc(name);
                try_run(
                    |opts| prog.test_run(opts),
                    frame,
                    repeat,
                    ctx.as_ref().map(|c| &c[..]),
                )
            }
            Hook::Xdp => {
                let prog = self.xdp(name);
                try_run(|opts| prog.test_run(opts), frame, repeat, None)
            }
        }
    }

    /// The map `name`, for reading and seeding.
    pub fn map_mut(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("no map {name} in netd's object"))
    }

    /// The sum over CPUs of entry `index` of the per-CPU array `name`,
    /// folded with `merge`.
    pub fn per_cpu_sum<V: Pod + Default>(
        &mut self,
        name: &str,
        index: u32,
        merge: impl Fn(V, V) -> V,
    ) -> V {
        let map: PerCpuArray<&mut MapData, V> = PerCpuArray::try_from(self.map_mut(name))
            .unwrap_or_else(|e| panic!("{name} is not a per-CPU array: {e}"));
        let values = map
            .get(&index, 0)
            .unwrap_or_else(|e| panic!("reading {name}[{index}]: {e}"));
        values.iter().copied().fold(V::default(), merge)
    }
}

/// A `struct __sk_buff` for a packet that arrived on `ifindex`:
/// `ingress_ifindex` at offset 36, `ifindex` at 40, everything else zero
/// (as the kernel requires).
fn tc_ctx_on(ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

fn run(
    test_run: impl FnOnce(TestRunOptions<'_>) -> Result<aya::programs::TestRunResult, ProgramError>,
    frame: &[u8],
    repeat: u32,
    ctx_in: Option<&[u8]>,
) -> Run {
    try_run(test_run, frame, repeat, ctx_in).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e:?}"))
}

fn try_run(
    test_run: impl FnOnce(TestRunOptions<'_>) -> Result<aya::programs::TestRunResult, ProgramError>,
    frame: &[u8],
    repeat: u32,
    ctx_in: Option<&[u8]>,
) -> Result<Run, ProgramError> {
    let mut out = vec![0u8; frame.len() + HEADROOM];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    opts.ctx_in = ctx_in;
    let result = test_run(opts)?;
    out.truncate(result.data_size_out as usize);
    Ok(Run {
        verdict: result.return_value as i32,
        data: out,
        duration: result.duration,
    })
}
