// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Upgrades and downgrades across releases. The previous release is built
//! from this repository's history by `cargo xtask previous` (which `cargo
//! xtask test` runs first) and named by `NETD_PREVIOUS_BIN`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use netd_common::map_names;
use netd_tests::{
    agent::{Agent, netd_bin},
    hold::BothWays,
    pins::{PinnedMap, pinned_map, tcx_programs},
    require_root,
    topology::{HOST_IP, OUT_IP, Topology, fetch, wait_listening},
};

/// The previous release's `netd`; `None` (the test says it is skipped)
/// when `cargo xtask test` could not get it from the checkout's history.
fn previous_bin() -> Option<PathBuf> {
    if let Some(why) = std::env::var_os("NETD_PREVIOUS_UNAVAILABLE") {
        eprintln!("test skipped, {}", why.to_string_lossy());
        return None;
    }
    let bin = std::env::var_os("NETD_PREVIOUS_BIN").map(PathBuf::from).expect(
        "NETD_PREVIOUS_BIN is not set: run under `cargo xtask test`, or set it to the output of `cargo xtask previous`",
    );
    assert!(bin.exists(), "{} does not exist", bin.display());
    Some(bin)
}

/// Every map pinned in `bpffs`, by name.
fn pinned_maps(bpffs: &Path) -> BTreeMap<String, PinnedMap> {
    fs::read_dir(bpffs)
        .expect("bpffs")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, pinned_map(&path))
        })
        .collect()
}

/// The drop counters `netd stats` reports, by reason.
fn drops(agent: &Agent) -> BTreeMap<String, u64> {
    let stats = agent.json(&["stats"]);
    stats["drops"]
        .as_object()
        .expect("drops")
        .iter()
        .map(|(reason, n)| (reason.clone(), n.as_u64().expect("count")))
        .collect()
}

/// Waits until `state.json` says `version`.
fn wait_state_version(agent: &Agent, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.state_value().map(|s| s["version"].clone()) != Some(version.into()) {
        assert!(
            Instant::now() < deadline,
            "state.json never reached version {version}: {:?}",
            agent.state()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The promise of the many-networks issue: an agent of this version,
/// started on the state directory and pins of the previous release (state
/// version 1, 12 drop counters, no network maps), adopts them while 1,000
/// connections through a published port and 1,000 masqueraded ones keep
/// echoing: none is reset, stalls or sees a wrong byte. The state is
/// migrated and written at once, the drop counters are carried into their
/// bigger map, the network maps are made, the other maps are the same
/// kernel objects, and the programs are swapped. Going back is refused by
/// the previous release, and changes nothing.
#[test]
fn the_previous_release_upgrades_without_a_dropped_flow_and_refuses_to_downgrade() {
    require_root!();
    let Some(previous) = previous_bin() else {
        return;
    };
    let mut t = Topology::build(&["--masquerade-ports", "10000-32767"], |agent| {
        agent.use_binary(&previous)
    });
    let c1 = t.container("c1", &["-p", "8080:7000", "-p", "8080:7000/udp"]);
    // A drop the counters must carry across: a spoofed source.
    c1.ip("addr add 10.66.0.9/32 dev eth0");
    let _ = c1.try_sh(&format!("ping -c1 -W1 -I 10.66.0.9 {OUT_IP}"));
    let drops_before = drops(&t.agent);
    assert!(drops_before["spoofed"] > 0, "{drops_before:?}");
    assert_eq!(t.agent.state_value().expect("state")["version"], 1);
    let bpffs = t.agent.bpffs();
    let maps_before = pinned_maps(&bpffs);
    assert!(
        !maps_before.contains_key(map_names::NETWORKS),
        "the previous release has no network map: {maps_before:?}"
    );
    let programs_before = tcx_programs(&t.host, "up0");
    assert!(!programs_before.is_empty(), "TCX on the uplink");

    let flows = BothWays::start(env!("CARGO_BIN_EXE_netd-loadgen"), &t, &c1);
    thread::sleep(Duration::from_secs(1));
    // The upgrade as a package does it: stop the old agent, start the new.
    flows.mark_down(true);
    assert_eq!(t.agent.terminate(), Some(0), "the old agent stops cleanly");
    // New connections while no agent runs, and through the swap.
    thread::sleep(Duration::from_secs(2));
    t.agent.use_binary(&netd_bin());
    t.agent.launch();
    flows.mark_down(false);
    thread::sleep(Duration::from_secs(5));
    eprintln!("{}", flows.finish());

    // State: migrated and written at start.
    wait_state_version(&t.agent, 3);
    let ps = t.agent.json(&["ps"]);
    assert_eq!(ps[0]["name"], c1.name(), "{ps}");
    assert_eq!(ps[0]["network"], "netd", "{ps}");
    let ports = t.agent.json(&["ports"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(2), "{ports}");
    let networks = t.agent.json(&["network", "ls"]);
    assert_eq!(networks[0]["name"], "netd", "{networks}");
    // Maps: the drop counters grown and carried, the network maps new,
    // every other map the same kernel object; no pin left over.
    let maps_after = pinned_maps(&bpffs);
    for (name, old) in &maps_before {
        let new = maps_after
            .get(name)
            .unwrap_or_else(|| panic!("{name} is gone: {maps_after:?}"));
        if name == map_names::DROPS {
            assert_ne!(new.id, old.id, "{name} made again at its new size");
            assert!(
                new.max_entries > old.max_entries,
                "{name}: {old:?} -> {new:?}"
            );
        } else {
            assert_eq!(new, old, "{name} adopted as it was");
        }
    }
    let added: Vec<&String> = maps_after
        .keys()
        .filter(|name| !maps_before.contains_key(*name))
        .collect();
    assert_eq!(
        added,
        [
            map_names::ENDPOINT_STATS,
            map_names::FLOWS_CREATED,
            map_names::MONITOR,
            map_names::MONITOR_BUCKETS,
            map_names::MONITOR_EVENTS,
            map_names::NETWORKS,
            map_names::SUBNETS
        ],
        "only the new maps: {maps_after:?}"
    );
    let drops_after = drops(&t.agent);
    for (reason, count) in &drops_before {
        assert!(
            drops_after[reason] >= *count,
            "{reason}: {count} before the upgrade, {} after",
            drops_after[reason]
        );
    }
    // The previous release counted by reason alone: its counts are under
    // the `unattributed` hook now.
    let (metrics, _) = netd_tests::curl_unix(&t.agent.socket(), &["http://netd/metrics"]);
    let unattributed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"netd_drops_total{reason="spoofed",hook="unattributed"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no unattributed spoofed drops in:\n{metrics}"));
    assert!(unattributed >= drops_before["spoofed"], "{unattributed}");
    // Programs: this release's, in place of the old ones.
    let programs_after = tcx_programs(&t.host, "up0");
    assert_eq!(programs_after.len(), programs_before.len());
    assert!(
        programs_after
            .iter()
            .all(|id| !programs_before.contains(id)),
        "swapped: {programs_before:?} -> {programs_after:?}"
    );
    // And it is this release: a second network works.
    t.agent
        .ok(&["network", "create", "after", "--subnet", "10.89.0.0/24"]);
    let c2 = t.container("c2", &["--network", "after", "-p", "8081:80"]);
    let _web = c2.spawn("busybox httpd -f -p 80 -h /etc");
    wait_listening(&c2, 80, false);
    assert!(
        fetch(&t.out, &format!("http://{HOST_IP}:8081/hostname")).is_some(),
        "a port published on the new network"
    );

    // Downgrade: the previous release refuses this state, one line, and
    // changes nothing (the datapath keeps forwarding meanwhile).
    assert_eq!(t.agent.terminate(), Some(0));
    let files = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .expect("state dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .map(|p| {
                (
                    p.file_name().expect("name").to_string_lossy().into_owned(),
                    fs::read(&p).expect("read"),
                )
            })
            .collect()
    };
    let state_before = files(&t.agent.state_dir());
    let maps_before = pinned_maps(&bpffs);
    let programs_before = tcx_programs(&t.host, "up0");
    t.agent.use_binary(&previous);
    t.agent
        .try_start()
        .assert_refused("the previous release's agent", "newer netd");
    assert_eq!(files(&t.agent.state_dir()), state_before, "state unchanged");
    assert_eq!(pinned_maps(&bpffs), maps_before, "pins unchanged");
    assert_eq!(tcx_programs(&t.host, "up0"), programs_before);
    assert!(
        fetch(&t.out, &format!("http://{HOST_IP}:8081/hostname")).is_some(),
        "still forwarding"
    );
    t.agent.use_binary(&netd_bin());
    t.agent.launch();
}

/// A state directory written by a newer netd (here, version 4) is refused
/// by this one in one line saying what to do, and left as it was: files,
/// pins, programs and forwarding.
#[test]
fn a_state_of_a_newer_netd_is_refused_and_left_alone() {
    require_root!();
    let mut t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let _web = c1.spawn("busybox httpd -f -p 80 -h /etc");
    wait_listening(&c1, 80, false);
    let url = format!("http://{HOST_IP}:8080/hostname");
    assert!(fetch(&t.out, &url).is_some());
    assert_eq!(t.agent.terminate(), Some(0));
    let path = t.agent.state_dir().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("state.json")).expect("json");
    let written = state.clone();
    state["version"] = 4.into();
    state["from_the_future"] = true.into();
    let newer = serde_json::to_vec_pretty(&state).expect("json");
    fs::write(&path, &newer).expect("write");
    let bpffs = t.agent.bpffs();
    let maps = pinned_maps(&bpffs);
    let programs = tcx_programs(&t.host, "up0");

    let refused = t.agent.try_start();
    refused.assert_refused("an agent on a newer state", "newer netd");
    let line = refused.stderr.trim();
    for needle in [
        "newer netd",
        "state version 4",
        "run that netd again",
        "nothing was changed",
    ] {
        assert!(line.contains(needle), "{needle:?} in: {line}");
    }
    assert_eq!(
        fs::read(&path).expect("state.json"),
        newer,
        "left as it was"
    );
    assert_eq!(pinned_maps(&bpffs), maps, "pins unchanged");
    assert_eq!(tcx_programs(&t.host, "up0"), programs, "programs unchanged");
    assert!(fetch(&t.out, &url).is_some(), "still forwarding");

    fs::write(&path, serde_json::to_vec(&written).expect("json")).expect("restore");
    t.agent.launch();
    assert!(fetch(&t.out, &url).is_some());
}
