// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The leftover check: what a test run created on the machine must be gone
//! when it ends. A snapshot before the run and one after; anything new fails
//! the run, named so it can be removed by hand.

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use crate::cmd::output;

/// Roots of the hierarchies where tests may create cgroups.
const CGROUP_ROOTS: &[&str] = &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

#[derive(Default, PartialEq, Eq)]
pub struct Snapshot {
    items: BTreeSet<String>,
}

impl Snapshot {
    pub fn take() -> Self {
        let mut items = BTreeSet::new();
        if let Some(list) = output(Command::new("ip").args(["netns", "list"])) {
            for line in list.lines() {
                if let Some(name) = line.split_whitespace().next() {
                    items.insert(format!("network namespace {name}"));
                }
            }
        }
        if let Some(list) = output(Command::new("ip").args(["-o", "link", "show"])) {
            for line in list.lines() {
                if let Some(name) = line.split(": ").nth(1) {
                    let name = name.split('@').next().unwrap_or(name);
                    items.insert(format!("link {name} in the root namespace"));
                }
            }
        }
        walk_bpffs(Path::new("/sys/fs/bpf"), &mut items);
        // Scratch files and directories: test helpers name them like their
        // namespaces (`nt<pid>x<seq><tag>`).
        if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_test_name(&name) {
                    items.insert(format!("temporary file {}", entry.path().display()));
                }
            }
        }
        for root in CGROUP_ROOTS {
            list_cgroups(Path::new(root), 0, &mut items);
        }
        if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
            for line in mounts.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                let fstype = fields
                    .iter()
                    .position(|f| *f == "-")
                    .and_then(|dash| fields.get(dash + 1));
                if let (Some(point), Some(fstype)) = (fields.get(4), fstype)
                    && matches!(*fstype, "bpf" | "cgroup2")
                {
                    items.insert(format!("{fstype} mount at {point}"));
                }
            }
        }
        Self { items }
    }

    /// What `after` has that `self` had not.
    pub fn new_in(&self, after: &Self) -> Vec<String> {
        after.items.difference(&self.items).cloned().collect()
    }
}

/// Whether `name` looks like `nt<pid>x<seq><tag>`, the tests' unique names.
fn is_test_name(name: &str) -> bool {
    name.strip_prefix("nt")
        .and_then(|rest| rest.split_once('x'))
        .is_some_and(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

fn walk_bpffs(dir: &Path, items: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        items.insert(format!("bpffs entry {}", path.display()));
        if path.is_dir() {
            walk_bpffs(&path, items);
        }
    }
}

fn list_cgroups(dir: &Path, depth: usize, items: &mut BTreeSet<String>) {
    // Two levels catch a test's cgroup and the agent's children of it
    // without walking the whole machine's hierarchy.
    if depth == 2 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_cgroup = path.join("cgroup.procs").exists();
        if path.is_dir() && is_cgroup {
            items.insert(format!("cgroup {}", path.display()));
            list_cgroups(&path, depth + 1, items);
        }
    }
}

/// Processes the test harness started (one "PID START_TIME" line each in the
/// ledger files under `ledger_dir`) that still run.
pub fn live_processes(ledger_dir: &Path) -> Vec<String> {
    let mut alive = Vec::new();
    let Ok(entries) = fs::read_dir(ledger_dir) else {
        return alive;
    };
    for entry in entries.flatten() {
        let Ok(ledger) = fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in ledger.lines() {
            let mut fields = line.split_whitespace();
            let (Some(pid), Some(start)) = (fields.next(), fields.next()) else {
                continue;
            };
            let command = fields.collect::<Vec<_>>().join(" ");
            // A PID is only the same process if its start time matches too.
            if process_start_time(pid).as_deref() == Some(start) {
                alive.push(format!("process {pid} ({command})"));
            }
        }
    }
    alive
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub fn process_start_time(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}
