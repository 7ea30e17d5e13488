// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Nothing lost when a write fails (issue 22): with the state directory
//! full, or a write or fsync of the store failing (injected through
//! `NETD_FAILPOINT_FILE`), every change is in the agent's memory, its
//! files and the kernel's maps, or in none of them.
//!
//! Each step ends with [`Bed::assert_agree`], which reads all three
//! independently: `netd ports` and `netd ps` (memory), `state.json` with
//! `state.journal` replayed here (files), and the pinned `NETD_PORTS`,
//! `NETD_MAPPINGS` and `NETD_ENDPOINTS` (kernel).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData, lpm_trie::LpmTrie};
use netd_common::{
    endpoint::EndpointInfo,
    map_names,
    ports::{Mapping, PortKey, PortValue},
};
use netd_tests::{
    agent::{Agent, Run},
    netns::{Netns, Tmpfs, veth},
    require_root,
    topology::{HOST_IP, OUT_IP, SUBNET, Scratch},
};
use serde_json::Value;

/// One published mapping, as memory, files and kernel can all tell it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Mapped {
    ctr_ip: Ipv4Addr,
    proto: String,
    host_ip: Ipv4Addr,
    host: (u16, u16),
    ctr_port: u16,
}

/// What one of the three holds.
#[derive(Debug, Default)]
struct View {
    /// By `(slot, generation)`, where the holder knows them.
    ports: BTreeMap<(u32, u32), Mapped>,
    /// Endpoint IDs (memory and files) or addresses (kernel, ready ones).
    endpoints: BTreeSet<String>,
}

/// The topology of the datapath tests (see `netd_tests::topology`), the
/// agent's state directory optionally on a small tmpfs, and a failpoint
/// file the agent reads at every write.
struct Bed {
    agent: Option<Agent>,
    tmpfs: Option<Tmpfs>,
    failpoints: PathBuf,
    host: Netns,
    _out: Netns,
}

impl Bed {
    fn new(tmpfs_bytes: Option<u64>, args: &[&str]) -> Self {
        let out = Netns::new("out");
        let host = Netns::new("hst");
        veth(&out, "eth0", &host, "up0");
        out.ip(&format!("addr add {OUT_IP}/24 dev eth0"));
        host.ip(&format!("addr add {HOST_IP}/24 dev up0"));
        let mut all = vec!["--uplink", "up0", "--subnet", SUBNET];
        all.extend_from_slice(args);
        let agent = Agent::new(&host, &all);
        let tmpfs = tmpfs_bytes.map(|bytes| Tmpfs::mount(&agent.state_dir(), bytes));
        let failpoints = agent
            .state_dir()
            .parent()
            .expect("the agent's directory")
            .join("failpoints");
        let mut bed = Self {
            agent: Some(agent),
            tmpfs,
            failpoints,
            host,
            _out: out,
        };
        bed.launch();
        bed
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent")
    }

    fn launch(&mut self) {
        let failpoints = self.failpoints.display().to_string();
        let agent = self.agent.as_mut().expect("agent");
        agent.next_launch_env("NETD_FAILPOINT_FILE", &failpoints);
        agent.launch();
    }

    /// `kill -9`, then a new agent on the same state and pins.
    fn restart(&mut self) {
        self.agent.as_mut().expect("agent").kill9();
        self.launch();
    }

    /// Arms the failpoints `points` (see netd's `failpoint` module), or
    /// none with "".
    fn arm(&self, points: &str) {
        fs::write(&self.failpoints, points).expect("failpoint file");
    }

    fn container(&self, tag: &str) -> Netns {
        let ns = Netns::new(tag);
        self.agent().ok(&["attach", ns.name()]);
        ns
    }

    fn status(&self) -> Value {
        self.agent().json(&["status"])
    }

    /// Waits up to 10 s for `netd status` to report no write trouble.
    fn wait_writable(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status();
            if status["state_error"].is_null() && status["state_full"] == false {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the state directory still reported in trouble: {status}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to 10 s for `netd ps` to stop listing `id`.
    fn wait_forgotten(&self, id: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.memory().endpoints.contains(id) {
            assert!(
                Instant::now() < deadline,
                "{what}: {id} still listed; the agent's log:\n{}",
                self.agent().log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the agent's memory holds: `netd ports` (no slots: numbered
    /// from 0 here) and `netd ps`.
    fn memory(&self) -> View {
        let ports = self.agent().json(&["ports"]);
        let mut mapped: Vec<Mapped> = ports
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| Mapped {
                ctr_ip: parse(&p["container_ip"]),
                proto: p["proto"].as_str().expect("proto").to_owned(),
                host_ip: parse(&p["host_ip"]),
                host: (port(&p["host_port"]), port(&p["host_port_end"])),
                ctr_port: port(&p["container_port"]),
            })
            .collect();
        mapped.sort();
        let endpoints = self
            .agent()
            .json(&["ps"])
            .as_array()
            .expect("ps")
            .iter()
            .map(|ep| ep["id"].as_str().expect("id").to_owned())
            .collect();
        View {
            ports: (0..).zip(mapped).map(|(i, m)| ((i, 0), m)).collect(),
            endpoints,
        }
    }

    /// What the files hold: `state.json` with the journal's newer lines
    /// replayed (a torn last line ignored), as a restarted agent reads it
    /// (replayed by the harness, not by netd).
    fn files(&self) -> (View, BTreeSet<String>) {
        let state = self.agent().state_value().expect("a state file");
        let mut view = View::default();
        let mut ready_ips = BTreeSet::new();
        for (id, ep) in state["endpoints"].as_object().expect("endpoints") {
            view.endpoints.insert(id.clone());
            let phase = ep["phase"].as_str().expect("phase");
            if phase == "ready" {
                ready_ips.insert(ep["ip"].as_str().expect("ip").to_owned());
            }
            if phase == "removing" {
                continue;
            }
            for p in ep["ports"].as_array().into_iter().flatten() {
                let key = (count(&p["slot"]), count(&p["generation"]));
                view.ports.insert(
                    key,
                    Mapped {
                        ctr_ip: parse(&ep["ip"]),
                        proto: p["proto"].as_str().expect("proto").to_owned(),
                        host_ip: parse(&p["host_ip"]),
                        host: (port(&p["host"]["first"]), port(&p["host"]["last"])),
                        ctr_port: port(&p["ctr"]["first"]),
                    },
                );
            }
        }
        (view, ready_ips)
    }

    /// What the kernel holds: every active slot of `NETD_MAPPINGS` with
    /// the host address its `NETD_PORTS` keys give it, and the addresses in
    /// `NETD_ENDPOINTS`.
    fn kernel(&self) -> View {
        let pinned = |name: &str| {
            let path = self.agent().map_pin(name);
            MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mappings =
            Array::<_, Mapping>::try_from(Map::Array(pinned(map_names::MAPPINGS))).expect("array");
        let mut active = BTreeMap::new();
        for (slot, mapping) in mappings.iter().enumerate() {
            let mapping = mapping.expect("a slot");
            if mapping.is_active() {
                active.insert(slot as u32, mapping);
            }
        }
        let ports =
            LpmTrie::<_, PortKey, PortValue>::try_from(Map::LpmTrie(pinned(map_names::PORTS)))
                .expect("lpm trie");
        let mut keyed: BTreeMap<u32, BTreeSet<(u8, Ipv4Addr)>> = BTreeMap::new();
        for entry in ports.iter() {
            let (key, value) = entry.expect("a key");
            let data = key.data();
            assert!(
                active.contains_key(&value.mapping),
                "a NETD_PORTS key points at slot {}, which is not active",
                value.mapping
            );
            let mapping = &active[&value.mapping];
            let first = u16::from_be_bytes(data.port_be);
            assert!(
                (mapping.host_port..=mapping.host_port_end).contains(&first),
                "a key of slot {} outside its range",
                value.mapping
            );
            keyed
                .entry(value.mapping)
                .or_default()
                .insert((data.proto, Ipv4Addr::from(data.addr_be)));
        }
        let mut view = View::default();
        for (slot, mapping) in &active {
            let keys = keyed
                .get(slot)
                .unwrap_or_else(|| panic!("active slot {slot} has no NETD_PORTS key"));
            assert_eq!(
                keys.len(),
                1,
                "slot {slot}'s keys name one protocol and address"
            );
            let (proto, host_ip) = *keys.first().expect("one");
            assert_eq!(proto, mapping.proto);
            view.ports.insert(
                (*slot, mapping.generation),
                Mapped {
                    ctr_ip: Ipv4Addr::from(mapping.ctr_addr_be),
                    proto: match proto {
                        6 => "tcp".to_owned(),
                        17 => "udp".to_owned(),
                        other => other.to_string(),
                    },
                    host_ip,
                    host: (mapping.host_port, mapping.host_port_end),
                    ctr_port: mapping.ctr_port,
                },
            );
        }
        let endpoints =
            HashMap::<_, u32, EndpointInfo>::try_from(Map::HashMap(pinned(map_names::ENDPOINTS)))
                .expect("hash map");
        view.endpoints = endpoints
            .keys()
            // The key holds the address's bytes in network order.
            .map(|ip| Ipv4Addr::from(ip.expect("a key").to_ne_bytes()).to_string())
            .collect();
        view
    }

    /// Memory, files and kernel agree: the same mappings (with the same
    /// slots and generations in files and kernel), the same endpoints in
    /// memory and files, the files' ready endpoints in the kernel. The
    /// number of mappings.
    fn assert_agree(&self, what: &str) -> usize {
        let memory = self.memory();
        let (files, ready_ips) = self.files();
        let kernel = self.kernel();
        let sorted = |view: &View| {
            let mut all: Vec<Mapped> = view.ports.values().cloned().collect();
            all.sort();
            all
        };
        assert_eq!(
            sorted(&memory),
            sorted(&files),
            "{what}: `netd ports` and the state files differ"
        );
        assert_eq!(
            files.ports, kernel.ports,
            "{what}: the state files and NETD_MAPPINGS/NETD_PORTS differ"
        );
        assert_eq!(
            memory.endpoints, files.endpoints,
            "{what}: `netd ps` and the state files differ"
        );
        assert_eq!(
            ready_ips, kernel.endpoints,
            "{what}: the files' ready endpoints and NETD_ENDPOINTS differ"
        );
        memory.ports.len()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let dir = self
            .agent
            .as_ref()
            .and_then(|a| a.state_dir().parent().map(ToOwned::to_owned));
        // The agent and its `netd down` first, then the filesystem it
        // wrote on, then what the agent's own cleanup could not remove
        // while the tmpfs was mounted in its directory.
        drop(self.agent.take());
        drop(self.tmpfs.take());
        if let Some(dir) = dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn parse(value: &Value) -> Ipv4Addr {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {value}"))
}

fn port(value: &Value) -> u16 {
    u16::try_from(count_u64(value)).expect("a port")
}

fn count(value: &Value) -> u32 {
    u32::try_from(count_u64(value)).expect("a u32")
}

fn count_u64(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// `netd publish` of host ports `first..first+n` to port 80 of `target`.
fn publish(agent: &Agent, first: u16, n: u16, target: &str) -> Run {
    let mut args = vec!["publish".to_owned()];
    args.extend((first..first + n).map(|p| format!("{p}:80")));
    args.push(target.to_owned());
    agent.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn unpublish(agent: &Agent, first: u16, n: u16, target: &str) -> Run {
    let mut args = vec!["unpublish".to_owned()];
    args.extend((first..first + n).map(|p| format!("{p}:80")));
    args.push(target.to_owned());
    agent.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A refused call: failed, with one line on stderr containing `needle`.
fn assert_refused(run: &Run, needle: &str, what: &str) {
    assert!(!run.success(), "{what}: succeeded: {}", run.stdout);
    let stderr = run.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    assert!(
        stderr.contains(needle),
        "{what}: {needle:?} not in: {stderr}"
    );
}

fn assert_ok(run: &Run, what: &str) {
    assert!(run.success(), "{what}: {}{}", run.stdout, run.stderr);
}

/// The ID `netd ps` gives the endpoint named `name`.
fn endpoint_id(agent: &Agent, name: &str) -> String {
    let ps = agent.json(&["ps"]);
    ps.as_array()
        .expect("ps")
        .iter()
        .find(|ep| ep["name"] == name)
        .and_then(|ep| ep["id"].as_str())
        .unwrap_or_else(|| panic!("no endpoint {name}: {ps}"))
        .to_owned()
}

#[test]
fn a_full_state_directory_loses_nothing_and_serves_removals() {
    require_root!();
    // 64 KiB: a few endpoints and a few hundred published ports. The
    // journal keeps 8 KiB for removals.
    let mut bed = Bed::new(Some(64 << 10), &["--state-reserve", "8192"]);
    let c1 = bed.container("c1");
    let c2 = bed.container("c2");
    assert_ok(&publish(bed.agent(), 7000, 5, c2.name()), "publish on c2");

    // Ten ports a call until the disk is full.
    let mut next = 10_000;
    let refused = loop {
        let run = publish(bed.agent(), next, 10, c1.name());
        if !run.success() {
            break run;
        }
        next += 10;
        assert!(next < 20_000, "the state directory never filled");
    };
    assert_refused(&refused, "is full", "a publish on a full disk");
    let published = bed.assert_agree("publish refused on a full disk");
    assert!(
        published > 50,
        "only {published} ports published before full"
    );
    let status = bed.agent().ok(&["status"]);
    assert!(status.contains("is full"), "netd status says so: {status}");
    assert_eq!(bed.status()["state_full"], true);

    // Nothing added: not an endpoint either, and a refusal takes nothing.
    let c3 = Netns::new("c3");
    assert_refused(
        &bed.agent().cli(&["attach", c3.name()]),
        "is full",
        "an attach on a full disk",
    );
    assert_refused(
        &publish(bed.agent(), next, 10, c1.name()),
        "is full",
        "the same publish again",
    );
    bed.assert_agree("attach refused on a full disk");

    // Removals work on the full disk.
    assert_ok(
        &unpublish(bed.agent(), 10_000, 10, c1.name()),
        "unpublish on a full disk",
    );
    assert_eq!(
        bed.assert_agree("unpublished on a full disk"),
        published - 10
    );
    bed.agent().ok(&["detach", c2.name()]);
    assert_eq!(bed.assert_agree("detached on a full disk"), published - 15);

    // A restarted agent adopts it all without free space.
    bed.restart();
    assert_eq!(bed.assert_agree("restarted on a full disk"), published - 15);
    assert_eq!(
        bed.status()["state_full"],
        true,
        "still full after the restart"
    );
    assert_refused(
        &publish(bed.agent(), next, 10, c1.name()),
        "is full",
        "a publish after the restart",
    );
    assert_ok(
        &unpublish(bed.agent(), 10_010, 10, c1.name()),
        "unpublish after the restart",
    );
    assert_eq!(
        bed.assert_agree("unpublished after the restart"),
        published - 25
    );

    // Space freed: the journal is folded within a tick, additions work.
    bed.tmpfs.as_ref().expect("tmpfs").resize(1 << 20);
    bed.wait_writable("after space was freed");
    let journal = bed.agent().state_dir().join("state.journal");
    assert_eq!(
        fs::metadata(&journal).map(|m| m.len()).unwrap_or(0),
        0,
        "the journal was folded into state.json"
    );
    assert_ok(
        &publish(bed.agent(), next, 10, c1.name()),
        "publish after space was freed",
    );
    bed.agent().ok(&["attach", c3.name()]);
    assert_eq!(bed.assert_agree("space freed"), published - 15);
    bed.restart();
    assert_eq!(bed.assert_agree("restarted with space"), published - 15);
}

/// The message of an injected errno, as the CLI prints it.
fn strerror(errno: &str) -> &'static str {
    match errno {
        "EIO" => "Input/output error",
        "ENOSPC" => "No space left on device",
        "EDQUOT" => "Disk quota exceeded",
        "EROFS" => "Read-only file system",
        other => panic!("no errno {other}"),
    }
}

#[test]
fn a_failing_journal_write_or_fsync_changes_nothing() {
    require_root!();
    let bed = Bed::new(None, &[]);
    let c1 = bed.container("c1");
    let state_dir = bed.agent().state_dir().display().to_string();
    let mut port = 7000;
    assert_ok(&publish(bed.agent(), port, 1, c1.name()), "publish");
    bed.assert_agree("before");
    for op in ["write", "fsync", "reserve"] {
        for errno in ["EIO", "ENOSPC", "EDQUOT", "EROFS"] {
            let what = format!("state.journal:{op}={errno}");
            // The fold the failure makes due fails too (a disk that fails
            // every write), so that `netd status` keeps reporting it.
            bed.arm(&format!("{what},state.json:write={errno}"));
            // The error names the file (the directory, for a reserve it
            // cannot make: it is full) and the cause.
            let named = if op == "reserve" {
                state_dir.as_str()
            } else {
                "state.journal"
            };
            let run = publish(bed.agent(), port + 1, 3, c1.name());
            assert_refused(&run, strerror(errno), &what);
            assert_refused(&run, named, &what);
            bed.assert_agree(&format!("{what}: publish"));
            let c2 = Netns::new("c2");
            assert_refused(
                &bed.agent().cli(&["attach", c2.name()]),
                strerror(errno),
                &format!("{what}: attach"),
            );
            bed.assert_agree(&format!("{what}: attach"));
            // A removal needs no reservation.
            let removal = unpublish(bed.agent(), port, 1, c1.name());
            if op == "reserve" {
                assert_ok(&removal, &format!("{what}: unpublish"));
                port += 1;
            } else {
                assert_refused(&removal, strerror(errno), &format!("{what}: unpublish"));
            }
            bed.assert_agree(&format!("{what}: unpublish"));
            assert!(
                !bed.status()["state_error"].is_null(),
                "{what}: netd status reports it"
            );
            bed.arm("");
            if op == "reserve" {
                assert_ok(&publish(bed.agent(), port, 1, c1.name()), &what);
            }
            assert_ok(&unpublish(bed.agent(), port, 1, c1.name()), &what);
            port += 1;
            assert_ok(&publish(bed.agent(), port, 1, c1.name()), &what);
            bed.assert_agree(&format!("{what}: disarmed"));
            bed.wait_writable(&what);
        }
    }
}

#[test]
fn a_failing_fold_leaves_the_journal_serving() {
    require_root!();
    let mut bed = Bed::new(None, &[]);
    let c1 = bed.container("c1");
    let mut port = 7000;
    for point in [
        "state.json:write",
        "state.json:fsync",
        "state.dir:rename",
        "state.dir:fsync",
        "state.journal:truncate",
    ] {
        for errno in ["EIO", "ENOSPC", "EDQUOT", "EROFS"] {
            let what = format!("{point}={errno}");
            // Something in the journal to fold.
            assert_ok(&publish(bed.agent(), port, 1, c1.name()), &what);
            port += 1;
            // A failed append makes a fold due, and the tick's fold fails.
            bed.arm(&format!("state.journal:write=EIO,{what}"));
            assert!(!publish(bed.agent(), port, 1, c1.name()).success());
            // The journal alone still takes changes.
            bed.arm(&what);
            assert_ok(&publish(bed.agent(), port, 1, c1.name()), &what);
            port += 1;
            bed.assert_agree(&format!("{what}: appended while folding fails"));
            // The tick's fold, retried every second, fails with the
            // injected error, and `netd status` says so.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = bed.status();
                if status["state_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(strerror(errno)))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: netd status reports the failing fold: {status}"
                );
                thread::sleep(Duration::from_millis(100));
            }
            if errno == "EIO" {
                // Started with the fold failing: the agent adopts its state
                // all the same.
                bed.restart();
                bed.assert_agree(&format!("{what}: restarted"));
                assert_ok(&publish(bed.agent(), port, 1, c1.name()), &what);
                port += 1;
            }
            bed.arm("");
            bed.wait_writable(&what);
            bed.assert_agree(&format!("{what}: folded"));
        }
    }
}

#[test]
fn an_operation_whose_end_cannot_be_recorded_is_finished_later() {
    require_root!();
    let bed = Bed::new(None, &[]);
    let c1 = bed.container("c1");
    assert_ok(&publish(bed.agent(), 7000, 3, c1.name()), "publish");

    // The attach's first line (the endpoint, creating) is written, its
    // second (ready) fails, and so does the third (the rollback).
    bed.arm("state.journal:write=EIO@2");
    let c2 = Netns::new("c2");
    assert_refused(
        &bed.agent().cli(&["attach", c2.name()]),
        strerror("EIO"),
        "attach with its ready line failing",
    );
    bed.assert_agree("attach interrupted");
    assert!(
        c2.ip("-j link show").matches("ifname").count() == 1,
        "only lo is left in c2: {}",
        c2.ip("link show")
    );
    let stuck = endpoint_id(bed.agent(), c2.name());
    bed.arm("");
    bed.wait_forgotten(&stuck, "the interrupted attach");
    bed.assert_agree("interrupted attach finished");
    bed.container("c3");
    bed.assert_agree("attached after");

    // The detach's first line (removing) is written, its last fails: the
    // endpoint's ports are gone from memory as from the kernel.
    let id = endpoint_id(bed.agent(), c1.name());
    bed.arm("state.journal:write=EIO@2");
    assert_refused(
        &bed.agent().cli(&["detach", c1.name()]),
        strerror("EIO"),
        "detach with its last line failing",
    );
    bed.assert_agree("detach interrupted");
    bed.arm("");
    bed.wait_forgotten(&id, "the interrupted detach");
    bed.assert_agree("interrupted detach finished");
    let _ = &bed.host;
}

/// The CNI plugin's calls through a failing journal: an ADD whose record
/// cannot be written fails with the cause and leaves nothing; a DEL whose
/// record cannot be written fails (the runtime retries it) and leaves the
/// pod as it was; both succeed once writes do, and memory, files and
/// kernel agree after each step.
#[test]
fn cni_calls_through_a_failing_journal_change_nothing() {
    require_root!();
    let bed = Bed::new(None, &[]);
    let pod = Netns::new("pod");
    let pod_path = pod.path().display().to_string();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "netd",
        "type": "netd",
        "socket": bed.agent().socket(),
        "runtimeConfig": {"portMappings": [
            {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}
        ]},
    })
    .to_string();
    let cni = |command: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(netd_tests::agent::netd_bin())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "c0ffee01")
            .env("CNI_NETNS", &pod_path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.as_bytes())
            .expect("configuration");
        let out = child.wait_with_output().expect("plugin output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    for errno in ["ENOSPC", "EIO"] {
        bed.arm(&format!("state.journal:write={errno}"));
        let (ok, answer) = cni("ADD");
        assert!(!ok, "ADD with a failing journal: {answer}");
        assert!(answer.contains("state.journal"), "names the file: {answer}");
        bed.arm("");
        bed.wait_writable("after a failed ADD");
        assert_eq!(bed.assert_agree(&format!("ADD, journal {errno}")), 0);
        assert!(
            bed.memory().endpoints.is_empty(),
            "no pod after a failed ADD"
        );
    }
    let (ok, answer) = cni("ADD");
    assert!(ok, "ADD: {answer}");
    assert_eq!(bed.assert_agree("ADD"), 1);

    bed.arm("state.journal:write=EIO");
    let (ok, answer) = cni("DEL");
    assert!(!ok, "DEL with a failing journal: {answer}");
    bed.arm("");
    bed.wait_writable("after a failed DEL");
    bed.assert_agree("DEL, journal EIO");
    let (ok, answer) = cni("DEL");
    assert!(ok, "DEL, retried: {answer}");
    assert_eq!(bed.assert_agree("DEL"), 0);
    assert!(bed.memory().endpoints.is_empty());
}

/// Posts `body` to the Docker driver's `call` (`NetworkDriver.X`) on
/// `socket`, as dockerd does; the HTTP status and the answer.
fn docker_call(socket: &str, call: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let url = format!("http://netd/{call}");
    let (answer, code) = netd_tests::curl_unix(
        Path::new(socket),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            &url,
        ],
    );
    let answer = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{call}: {e}: {answer}"));
    (code.parse().expect("a status code"), answer)
}

/// The networks made for Docker in memory (`netd network ls`) and in the
/// files, by name with the Docker ID the files give; every one has its
/// bridge in the host namespace and no other netd bridge exists there.
fn docker_networks_agree(bed: &Bed, what: &str) -> BTreeSet<String> {
    let listed = bed.agent().json(&["network", "ls"]);
    let state = bed.agent().state_value().expect("a state file");
    let default = state["network"]["name"]
        .as_str()
        .expect("the agent's network");
    let memory: BTreeSet<String> = listed
        .as_array()
        .expect("network ls")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .filter(|name| *name != default)
        .map(str::to_owned)
        .collect();
    let files: BTreeSet<String> = state["networks"]
        .as_object()
        .map(|networks| networks.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(
        memory, files,
        "{what}: `netd network ls` and the state files differ"
    );
    let links: Value =
        serde_json::from_str(&bed.host.sh("ip -j link show type bridge")).expect("ip -j link");
    let mut bridges: BTreeSet<String> = links
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    for n in listed.as_array().expect("network ls") {
        let bridge = n["bridge"].as_str().expect("bridge");
        assert!(bridges.remove(bridge), "{what}: no bridge {bridge}: {n}");
    }
    assert!(
        bridges.is_empty(),
        "{what}: bridges of no network: {bridges:?}"
    );
    memory
}

/// The Docker driver's calls through a failing journal, each as dockerd
/// makes it: a call whose record cannot be written answers Docker's error
/// (500, `Err` naming the file and the cause) and changes nothing; the
/// same call once writes work does what it should. Memory, files and
/// kernel agree after every step, networks and bridges included.
#[test]
fn docker_calls_through_a_failing_journal_change_nothing() {
    require_root!();
    // Dropped after the agent.
    let dir = Scratch::new();
    let socket = dir.0.join("netd-docker.sock").display().to_string();
    let bed = Bed::new(None, &["--docker-plugin-socket", &socket]);
    let network_id = "5e1ec7ed".repeat(8);
    let endpoint_id = "ba5eba11".repeat(8);
    let sandbox = Netns::new("sbx");
    let create_network = serde_json::json!({
        "NetworkID": network_id,
        "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.98.0.0/24", "Gateway": "10.98.0.1/24"}],
        "IPv6Data": [],
    });
    let endpoint = serde_json::json!({"NetworkID": network_id, "EndpointID": endpoint_id});
    let with = |extra: Value| {
        let mut body = endpoint.clone();
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let calls: [(&str, Value, &str); 8] = [
        (
            "NetworkDriver.CreateNetwork",
            create_network,
            "network made",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            with(serde_json::json!({"Interface": {"Address": "10.98.0.2/24"}, "Options": {}})),
            "endpoint made",
        ),
        (
            "NetworkDriver.Join",
            with(serde_json::json!({"SandboxKey": sandbox.path(), "Options": {}})),
            "joined",
        ),
        (
            "NetworkDriver.ProgramExternalConnectivity",
            with(serde_json::json!({"Options": {
                "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                "com.docker.network.portmap": [
                    {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}
                ],
            }})),
            "published",
        ),
        (
            "NetworkDriver.RevokeExternalConnectivity",
            endpoint.clone(),
            "unpublished",
        ),
        ("NetworkDriver.Leave", endpoint.clone(), "left"),
        (
            "NetworkDriver.DeleteEndpoint",
            endpoint.clone(),
            "endpoint removed",
        ),
        (
            "NetworkDriver.DeleteNetwork",
            serde_json::json!({"NetworkID": network_id}),
            "network removed",
        ),
    ];
    let netd_network = format!("docker-{}", &network_id[..12]);
    // What a refused call must leave as it was.
    let view = || {
        (
            bed.agent().ok(&["ps"]),
            bed.agent().ok(&["ports"]),
            bed.agent().ok(&["network", "ls"]),
            bed.agent().state_value(),
        )
    };
    for (call, body, done) in &calls {
        for errno in ["ENOSPC", "EIO"] {
            let what = format!("{call} with the journal's writes failing {errno}");
            let before = view();
            bed.arm(&format!("state.journal:write={errno}"));
            let (code, answer) = docker_call(&socket, call, body);
            bed.arm("");
            assert_eq!(code, 500, "{what}: {answer}");
            let err = answer["Err"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: {answer}"));
            assert!(
                err.contains("state.journal") && err.contains(strerror(errno)),
                "{what}: the error names the file and the cause: {err}"
            );
            assert!(!err.contains('\n'), "{what}: one line: {err}");
            bed.wait_writable(&what);
            assert_eq!(before, view(), "{what} changed something");
            bed.assert_agree(&what);
            docker_networks_agree(&bed, &what);
        }
        let (code, answer) = docker_call(&socket, call, body);
        assert_eq!(code, 200, "{call}: {answer}");
        let mapped = bed.assert_agree(done);
        let networks = docker_networks_agree(&bed, done);
        let endpoints = bed.memory().endpoints;
        let (has_network, has_endpoint, ports) = match *call {
            "NetworkDriver.CreateNetwork" => (true, false, 0),
            "NetworkDriver.ProgramExternalConnectivity" => (true, true, 1),
            "NetworkDriver.DeleteEndpoint" => (true, false, 0),
            "NetworkDriver.DeleteNetwork" => (false, false, 0),
            _ => (true, true, 0),
        };
        assert_eq!(
            networks.contains(&netd_network),
            has_network,
            "{done}: {networks:?}"
        );
        assert_eq!(
            endpoints.contains(&endpoint_id),
            has_endpoint,
            "{done}: {endpoints:?}"
        );
        assert_eq!(mapped, ports, "{done}");
    }
}
