// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Long-lived flows across a disturbance (an agent killed, restarted,
//! upgraded; a flood): `netd-loadgen hold` keeps TCP and UDP flows echoing
//! and opens new connections, and its report says whether any of them was
//! reset, stalled or saw a wrong byte.

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use crate::{
    netns::{Netns, Process},
    topology::{HOST_IP, OUT_IP, Scratch, Topology, wait_listening},
};

/// A counter in a JSON report.
pub fn count(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// A `netd-loadgen hold` client running in a namespace, driven by files in
/// a scratch directory.
pub struct Hold {
    process: Process,
    dir: Scratch,
}

impl Hold {
    /// Starts `hold` (of the `loadgen` binary) in `ns` against `to` with
    /// `flags`, and waits until its long-lived flows are open.
    pub fn start(loadgen: &str, ns: &Netns, to: &str, flags: &str) -> Self {
        let dir = Scratch::new();
        let d = dir.0.display();
        let mut cmd = ns.command(loadgen);
        cmd.args(["hold", "--to", to])
            .args(flags.split_whitespace())
            .arg(format!("--ready-file={d}/ready"))
            .arg(format!("--stop-file={d}/stop"))
            .arg(format!("--mark-file={d}/down"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut process = Process::spawn(cmd, "netd-loadgen hold");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.0.join("ready").exists() {
            assert!(
                !process.has_exited(),
                "hold exited: {:?}",
                process.take_output()
            );
            assert!(Instant::now() < deadline, "hold never ready");
            thread::sleep(Duration::from_millis(50));
        }
        Self { process, dir }
    }

    /// Marks new connections from now on as attempted while the agent is
    /// down, or stops marking them.
    pub fn mark_down(&self, down: bool) {
        let mark = self.dir.0.join("down");
        if down {
            fs::write(mark, "").expect("mark file");
        } else {
            fs::remove_file(mark).expect("mark file");
        }
    }

    /// Stops the flows and returns the report.
    pub fn finish(mut self) -> serde_json::Value {
        fs::write(self.dir.0.join("stop"), "").expect("stop file");
        let status = self
            .process
            .wait_timeout(Duration::from_secs(30))
            .expect("hold stops");
        let (stdout, stderr) = self.process.take_output();
        assert!(status.success(), "hold failed: {stdout}{stderr}");
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

/// Asserts that no long-lived flow in `report` was disturbed and that new
/// connections made while the agent was down succeeded; returns a summary.
pub fn assert_undisturbed(what: &str, report: &serde_json::Value) -> String {
    for kind in ["tcp", "udp"] {
        let stats = &report[kind];
        for counter in ["open_failures", "resets", "mismatches", "stalls"] {
            assert_eq!(stats[counter], 0, "{what} {kind} {counter}: {report}");
        }
    }
    // A datagram may be lost when the agent dies (it never touches the
    // datapath, so this should be 0 too); 0.1% would be a broken path.
    let udp = &report["udp"];
    let (lost, trips) = (count(&udp["lost"]), count(&udp["round_trips"]));
    assert!(lost * 1000 <= trips, "{what}: UDP lost {lost} of {trips}");
    let new = &report["new"];
    let (tried, ok) = (
        count(&new["attempted_marked"]),
        count(&new["succeeded_marked"]),
    );
    assert!(
        tried >= 100,
        "{what}: only {tried} new connections while down"
    );
    assert!(
        ok * 1000 >= tried * 999,
        "{what}: {ok} of {tried} new connections while down: {report}"
    );
    format!(
        "{what}: tcp {} round trips, udp {} (lost {lost}, late {}), max gap {} ms; new while down {ok}/{tried}, in all {}/{}",
        report["tcp"]["round_trips"],
        udp["round_trips"],
        udp["late"],
        count(&report["tcp"]["max_gap_ms"]).max(count(&udp["max_gap_ms"])),
        new["succeeded"],
        new["attempted"],
    )
}

/// The long-lived flows of the restart and upgrade tests: 1,000 TCP and
/// 100 UDP flows from the outside client to a container's port 7000
/// published as the host's 8080 (TCP and UDP), as many masqueraded from the
/// container to the outside client's port 7001, and 50 new connections a
/// second each way.
pub struct BothWays {
    inbound: Hold,
    outbound: Hold,
    _servers: [Process; 2],
}

impl BothWays {
    /// Starts the echo servers and the flows; `ctr` must publish
    /// `8080:7000` and `8080:7000/udp`.
    pub fn start(loadgen: &str, t: &Topology, ctr: &Netns) -> Self {
        let servers = [
            ctr.spawn(&format!(
                "{loadgen} serve --tcp 0.0.0.0:7000 --udp 0.0.0.0:7000"
            )),
            t.out.spawn(&format!(
                "{loadgen} serve --tcp 0.0.0.0:7001 --udp 0.0.0.0:7001"
            )),
        ];
        wait_listening(ctr, 7000, false);
        wait_listening(&t.out, 7001, false);
        let flags = "--tcp 1000 --udp 100 --new-per-sec 50";
        Self {
            inbound: Hold::start(loadgen, &t.out, &format!("{HOST_IP}:8080"), flags),
            outbound: Hold::start(loadgen, ctr, &format!("{OUT_IP}:7001"), flags),
            _servers: servers,
        }
    }

    /// [`Hold::mark_down`] both ways.
    pub fn mark_down(&self, down: bool) {
        self.inbound.mark_down(down);
        self.outbound.mark_down(down);
    }

    /// Stops the flows and asserts that none was disturbed, both ways
    /// ([`assert_undisturbed`]); the two summaries.
    pub fn finish(self) -> String {
        let inbound = assert_undisturbed("published port", &self.inbound.finish());
        let outbound = assert_undisturbed("masquerade", &self.outbound.finish());
        format!("{inbound}\n{outbound}")
    }
}
