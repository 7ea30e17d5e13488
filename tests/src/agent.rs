// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd agent` running inside a test namespace, with its state, bpffs and
//! socket in places of its own, and the `netd` CLI pointed at it.
//!
//! On drop the agent is stopped and `netd down` removes what it created,
//! then its directory goes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use crate::netns::{BpfFs, Cgroup, Netns, Process, unique_name};

/// The `netd` binary under test: `NETD_BIN`, else the one next to this test
/// executable's directory (target/debug/netd), which `cargo xtask test`
/// builds first.
pub fn netd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NETD_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join("netd");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p netd), or set NETD_BIN",
        bin.display()
    );
    bin
}

/// What a `netd` command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Asserts that the command (`what`) failed with one line on stderr
    /// that contains `needle`, as netd refuses bad input.
    pub fn assert_refused(&self, what: &str, needle: &str) {
        assert_ne!(self.code, 0, "{what} must fail: {}", self.stdout);
        assert!(
            self.stderr.contains(needle),
            "{what}: expected {needle:?} in {:?}",
            self.stderr
        );
        assert_eq!(
            self.stderr.trim().lines().count(),
            1,
            "{what}: one line: {}",
            self.stderr
        );
    }
}

/// A `netd agent` in a test namespace.
pub struct Agent {
    /// The `netd` binary of the agent and its CLI ([`netd_bin`] unless a
    /// test runs another release).
    bin: PathBuf,
    ns_path: PathBuf,
    dir: PathBuf,
    bpffs: BpfFs,
    /// The agent's socket programs attach here, never to the machine's
    /// root cgroup. Dropped after the agent (field order).
    cgroup: Cgroup,
    args: Vec<String>,
    /// Extra environment for the next launch only (e.g. NETD_FAILPOINT).
    env: Vec<(String, String)>,
    /// A mount namespace to run in (`/proc/PID/ns/mnt`), where a runtime
    /// mounts the namespaces it hands netd.
    mounts: Option<PathBuf>,
    process: Option<Process>,
    starts: usize,
}

impl Agent {
    /// Starts an agent in `ns` with `args` added to its flags, and waits
    /// until it answers.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let mut agent = Self::new(ns, args);
        agent.launch();
        agent
    }

    /// An agent not started yet (see [`Agent::try_start`]).
    pub fn new(ns: &Netns, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique_name("agt"));
        fs::create_dir_all(&dir).expect("agent directory");
        Self {
            bin: netd_bin(),
            ns_path: ns.path(),
            dir,
            bpffs: BpfFs::new(),
            cgroup: Cgroup::new(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            mounts: None,
            process: None,
            starts: 0,
        }
    }

    /// The network namespace the agent runs in.
    pub fn netns_path(&self) -> &Path {
        &self.ns_path
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("netd.sock")
    }

    /// netd's directory on the test's private bpffs.
    pub fn bpffs(&self) -> PathBuf {
        self.bpffs.path().join("netd")
    }

    /// Where the agent pins map `name` (`netd_common::map_names::CT`, ...).
    pub fn map_pin(&self, name: &str) -> PathBuf {
        netd::paths::map_pin(&self.bpffs(), name)
    }

    /// The cgroup host-local access applies to: run clients in it.
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Runs the agent (and the CLI) in the mount namespace of process
    /// `pid` from the next launch on. nsenter opens the network namespace's
    /// file before it enters, so a namespace mounted outside still works.
    pub fn use_mounts_of(&mut self, pid: u32) {
        self.mounts = Some(PathBuf::from(format!("/proc/{pid}/ns/mnt")));
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns_path.display()));
        if let Some(mounts) = &self.mounts {
            cmd.arg(format!("--mount={}", mounts.display()));
        }
        cmd.arg("--")
            .arg(&self.bin)
            .env("NETD_SOCKET", self.socket())
            .env("NETD_STATE_DIR", self.state_dir())
            .env("NETD_BPFFS", self.bpffs())
            .env("NETD_CGROUP", self.cgroup.path())
            .env_remove("RUST_LOG");
        cmd
    }

    fn agent_command(&self) -> Command {
        let mut cmd = self.command();
        cmd.arg("agent").args(&self.args);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs `bin` as the agent and the CLI from now on (an upgrade test
    /// starts the previous release, then this one).
    pub fn use_binary(&mut self, bin: &Path) {
        self.bin = bin.to_owned();
    }

    /// Sets `key=value` in the environment of the next launch only.
    pub fn next_launch_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Runs the agent to completion, expecting it to refuse to start.
    pub fn try_start(&self) -> Run {
        let mut cmd = self.agent_command();
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start netd agent");
        let mut process = Process::adopt(child, "netd agent (expected to fail)");
        let status = process
            .wait_timeout(Duration::from_secs(10))
            .expect("an agent with bad flags exits");
        let (stdout, stderr) = process.take_output();
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.join(format!("agent-{start}.log"))
    }

    /// Starts (or restarts) the agent process and waits for its API.
    pub fn launch(&mut self) {
        assert!(self.process.is_none(), "agent already running");
        self.starts += 1;
        let log = fs::File::create(self.log_path(self.starts)).expect("agent log");
        let mut cmd = self.agent_command();
        cmd.stdout(log.try_clone().expect("log fd")).stderr(log);
        self.env.clear();
        let mut process = Process::spawn(cmd, "netd agent");
        // Generous: under emulation (`cargo xtask test --kernel`) on a
        // loaded machine, a start takes many seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.cli(&["status"]).success() {
                break;
            }
            if process.has_exited() || Instant::now() > deadline {
                panic!("netd agent did not come up:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
    }

    /// Kills the agent with SIGKILL (no cleanup at all) and reaps it.
    pub fn kill9(&mut self) {
        let mut process = self.process.take().expect("agent running");
        process.signal(Signal::SIGKILL);
        process
            .wait_timeout(Duration::from_secs(5))
            .expect("killed");
    }

    /// Stops the agent with SIGTERM and returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut process = self.process.take()?;
        process.signal(Signal::SIGTERM);
        process
            .wait_timeout(Duration::from_secs(10))
            .and_then(|s| s.code())
    }

    /// Whether the agent process has exited (crashed or stopped).
    pub fn has_exited(&mut self) -> bool {
        self.process.as_mut().is_none_or(Process::has_exited)
    }

    /// Forgets an agent process that has exited on its own.
    pub fn reap(&mut self) {
        if let Some(mut process) = self.process.take() {
            assert!(
                process.wait_timeout(Duration::from_secs(10)).is_some(),
                "agent still running"
            );
        }
    }

    /// Waits for the agent to exit on its own (after `netd down`).
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut process = self.process.take()?;
        process
            .wait_timeout(Duration::from_secs(10))
            .and_then(|s| s.code())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Everything every agent process of this test logged.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Whether `needle` shows in the agent's log within 10 s. The agent
    /// writes a line after what it reports is done, so a test that saw
    /// the effect may read the log a moment before the line is there.
    pub fn log_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `netd ARGS` (in the agent's namespace, pointed at its socket).
    pub fn cli(&self, args: &[&str]) -> Run {
        Run::from(self.command().args(args).output().expect("run netd"))
    }

    /// Runs `netd ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.cli(args);
        assert!(
            run.success(),
            "netd {args:?} failed ({}): {}{}",
            run.code,
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Runs `netd --json ARGS`, asserting success; returns the JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("netd {args:?}: not JSON ({e}): {out}"))
    }

    /// Asserts that `netd ARGS` fails with one line containing `needle`,
    /// and that the networks, endpoints and state are as they were.
    pub fn refuses(&self, args: &[&str], needle: &str) {
        let before = (self.ok(&["network", "ls"]), self.ok(&["ps"]), self.state());
        self.cli(args)
            .assert_refused(&format!("netd {args:?}"), needle);
        let after = (self.ok(&["network", "ls"]), self.ok(&["ps"]), self.state());
        assert_eq!(before, after, "netd {args:?} changed something");
    }

    /// The count of packets dropped for `reason` (`netd stats`).
    pub fn drops(&self, reason: &str) -> u64 {
        self.json(&["stats"])["drops"][reason]
            .as_u64()
            .unwrap_or_else(|| panic!("no drop reason {reason} in `netd stats`"))
    }

    /// The saved state as a restarted agent would load it: `state.json`
    /// with the newer lines of `state.journal` replayed (a torn last line
    /// ignored), without the journal's bookkeeping (`journal_seq`), as
    /// pretty JSON; `None` if there is no state file.
    pub fn state(&self) -> Option<String> {
        self.state_value()
            .map(|state| serde_json::to_string_pretty(&state).expect("JSON"))
    }

    /// [`Agent::state`] as JSON.
    pub fn state_value(&self) -> Option<serde_json::Value> {
        let dir = self.state_dir();
        let text = fs::read_to_string(dir.join("state.json")).ok()?;
        let mut state: serde_json::Value = serde_json::from_str(&text).expect("state.json is JSON");
        let snapshot = state["journal_seq"].as_u64().unwrap_or(0);
        let journal = fs::read_to_string(dir.join("state.journal")).unwrap_or_default();
        let whole = journal.rfind('\n').map_or("", |end| &journal[..end]);
        for line in whole.lines() {
            let change: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a journal line that is not JSON ({e}): {line}"));
            if change["seq"].as_u64().expect("seq") > snapshot {
                replay(&mut state, &change);
            }
        }
        state
            .as_object_mut()
            .expect("an object")
            .remove("journal_seq");
        Some(state)
    }
}

/// Applies one journal line to `state`, as netd's journal format
/// (`agent::state::Change`) documents it: written here again, so that a
/// test checks netd's files against what they say, not against netd's
/// own reading of them.
fn replay(state: &mut serde_json::Value, change: &serde_json::Value) {
    use serde_json::Value;
    let endpoint = change["endpoint"].as_str().unwrap_or_default().to_owned();
    let op = change["op"].as_str().expect("op");
    let mut endpoints = state["endpoints"].as_object().expect("endpoints").clone();
    match op {
        "published" => {
            if let Some(ep) = endpoints.get_mut(&endpoint) {
                let ports = ep["ports"].as_array_mut().expect("ports");
                for p in change["ports"].as_array().expect("ports") {
                    if !ports.contains(p) {
                        ports.push(p.clone());
                    }
                }
            }
            state["next_generation"] = change["next_generation"].clone();
        }
        "unpublished" => {
            if let Some(ep) = endpoints.get_mut(&endpoint) {
                let gone = change["mappings"].as_array().expect("mappings");
                ep["ports"]
                    .as_array_mut()
                    .expect("ports")
                    .retain(|p| !gone.contains(&serde_json::json!([p["slot"], p["generation"]])));
            }
        }
        "endpoint_added" => {
            let ep = change["endpoint"].clone();
            let id = ep["id"].as_str().expect("id").to_owned();
            endpoints.insert(id, ep);
        }
        "endpoint_phase" => {
            if let Some(ep) = endpoints.get_mut(&endpoint) {
                ep["phase"] = change["phase"].clone();
            }
        }
        "endpoint_removed" => {
            endpoints.remove(&endpoint);
        }
        "endpoint_netns" => {
            if let Some(ep) = endpoints.get_mut(&endpoint) {
                ep["netns"] = change["netns"].clone();
            }
        }
        "docker_network" => match &change["network"] {
            Value::Null => {
                state
                    .as_object_mut()
                    .expect("object")
                    .remove("docker_network");
            }
            id => state["docker_network"] = id.clone(),
        },
        "tc_filter" => {
            let uplink = change["uplink"].as_str().expect("uplink").to_owned();
            let state = state.as_object_mut().expect("object");
            let filters = state
                .entry("tc_filters")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            filters[uplink] = change["added_qdisc"].clone();
        }
        "network_created" => {
            let network = change["network"].clone();
            let name = network["name"].as_str().expect("name").to_owned();
            let state = state.as_object_mut().expect("object");
            state
                .entry("networks")
                .or_insert_with(|| Value::Object(serde_json::Map::new()))[name] = network;
        }
        "network_removed" => {
            let name = change["name"].as_str().expect("name");
            if let Some(networks) = state["networks"].as_object_mut() {
                networks.remove(name);
                if networks.is_empty() {
                    state.as_object_mut().expect("object").remove("networks");
                }
            }
        }
        other => panic!("a journal line of an unknown op {other:?}: {change}"),
    }
    state["endpoints"] = Value::Object(endpoints);
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
        let down = self.cli(&["down"]);
        if !down.success() && !thread::panicking() {
            panic!("netd down failed: {}{}", down.stdout, down.stderr);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
