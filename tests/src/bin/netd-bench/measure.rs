// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! One measurement: the load generator run in a namespace, pinned to the
//! client CPU, with the machine's CPU time read from /proc/stat around it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use netd_tests::netns::{Cgroup, Netns, Process};
use serde_json::Value;

/// CPU of the clients.
pub const CLIENT_CPU: u32 = 0;

/// What one run of a client measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Measure {
    /// The benchmark's figure (transactions/s, Gbit/s, ...).
    pub value: f64,
    /// Busy CPU time of the whole machine during the run, in seconds.
    pub cpu_s: f64,
    /// Operations (transactions, connections, datagrams, bytes) done, for
    /// CPU time per operation.
    pub ops: f64,
    /// Latency percentiles, where the client measures them.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// The client's own report.
    pub detail: Value,
}

/// Runs the load generator's clients.
pub struct Loadgen {
    bin: PathBuf,
}

impl Loadgen {
    pub fn new(bin: PathBuf) -> Self {
        Self { bin }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Runs `netd-loadgen ARGS` in `ns` (inside `cgroup` if given), pinned to
    /// the client CPU, and returns its JSON report with the CPU time spent.
    /// `seconds` bounds the run; the process is killed if it overstays.
    pub fn run(
        &self,
        ns: &Netns,
        cgroup: Option<&Cgroup>,
        args: &[String],
        seconds: f64,
    ) -> anyhow::Result<(Value, f64)> {
        let line = format!(
            "exec {} {} --cpu {CLIENT_CPU}",
            self.bin.display(),
            args.join(" ")
        );
        let script = match cgroup {
            Some(cgroup) => cgroup.wrap(&line),
            None => line,
        };
        let mut cmd = ns.command("sh");
        cmd.args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let before = busy_cpu_s()?;
        let mut process = Process::spawn(cmd, "netd-loadgen client");
        let status = process
            .wait_timeout(Duration::from_secs_f64(seconds + 20.0))
            .with_context(|| format!("netd-loadgen {} did not finish", args.join(" ")))?;
        let cpu = busy_cpu_s()? - before;
        let (stdout, stderr) = process.take_output();
        let report: Value = serde_json::from_str(stdout.trim()).with_context(|| {
            format!(
                "netd-loadgen {}: no report ({status}): {}",
                args.join(" "),
                stderr.trim()
            )
        })?;
        if !status.success() {
            bail!(
                "netd-loadgen {} failed ({status}): {report} {}",
                args.join(" "),
                stderr.trim()
            );
        }
        Ok((report, cpu))
    }
}

/// Busy time of all CPUs since boot, in seconds: everything in /proc/stat's
/// `cpu` line but idle, iowait and steal (time the hypervisor gave to
/// someone else is not ours).
pub fn busy_cpu_s() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user.
    let busy: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Ok(busy as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// A field of a client report as f64.
pub fn field(report: &Value, name: &str) -> anyhow::Result<f64> {
    report[name]
        .as_f64()
        .with_context(|| format!("no {name} in {report}"))
}
