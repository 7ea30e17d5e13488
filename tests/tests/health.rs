// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Errors a person can act on: `netd status` names the health of each part
//! and exits non-zero when one is not ok (a health check), and a refusal
//! says, on its one line, what to do instead.

use std::{fs, process::Command, time::Duration};

use netd_common::map_names;
use netd_tests::{
    agent::{Agent, Run},
    curl_unix,
    netns::Netns,
    require_root,
    topology::Topology,
    within,
};
use serde_json::Value;

/// `netd --json status`: how it exited, and the answer.
fn status(agent: &Agent) -> (Run, Value) {
    let run = agent.cli(&["--json", "status"]);
    let value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("netd status: not JSON ({e}): {run:?}"));
    (run, value)
}

/// The parts of a status answer, by name.
fn parts(status: &Value) -> Vec<(String, String)> {
    status["health"]
        .as_array()
        .expect("a health list")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

/// The part named `name`.
fn part<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["health"]
        .as_array()
        .expect("a health list")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no part {name}: {status}"))
}

/// Asserts that every part is ok and `netd status` exits 0, both ways.
fn assert_healthy(agent: &Agent, what: &str) {
    let (run, value) = status(agent);
    let unhealthy: Vec<_> = parts(&value)
        .into_iter()
        .filter(|(_, state)| state != "ok")
        .collect();
    assert!(unhealthy.is_empty(), "{what}: {unhealthy:?} in {value}");
    assert_eq!(run.code, 0, "{what}: {run:?}");
    let text = agent.cli(&["status"]);
    assert_eq!(text.code, 0, "{what}: {text:?}");
}

/// Waits (the agent's tick may be putting something back) until `netd
/// status` exits with `code`; its JSON answer.
fn wait_status(agent: &Agent, code: i32, what: &str) -> Value {
    within(Duration::from_secs(5), || {
        let (run, value) = status(agent);
        (run.code == code).then_some(value)
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: netd status never exited {code}: {:?}",
            status(agent)
        )
    })
}

#[test]
fn status_names_each_part_and_fails_while_one_is_broken() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let endpoint = format!("endpoint {} (netd)", c1.name());

    // A healthy agent: every part listed, each ok, exit 0.
    let (_, value) = status(&t.agent);
    let names: Vec<String> = parts(&value).into_iter().map(|(name, _)| name).collect();
    for want in ["maps", "host-local", "uplink up0 tc", endpoint.as_str()] {
        assert!(names.iter().any(|n| n == want), "no part {want}: {names:?}");
    }
    assert_healthy(&t.agent, "a fresh agent");
    let text = t.agent.ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("PART") && l.contains("STATE") && l.contains("DETAIL")),
        "a table of parts: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&endpoint) && l.contains(" ok ")),
        "the endpoint's row: {text}"
    );

    // A foreign map put in the place of a pin, atomically (a rename over
    // it, so the agent never sees the pin missing and pins its own again).
    let drops = t.agent.map_pin(map_names::DROPS);
    let foreign = t.agent.bpffs().join("foreign");
    let created = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&foreign)
        .args([
            "type", "array", "key", "4", "value", "8", "entries", "4", "name", "foreign",
        ])
        .status()
        .expect("bpftool");
    assert!(created.success());
    fs::rename(&foreign, &drops).expect("the foreign map over NETD_DROPS");
    let value = wait_status(&t.agent, 1, "a foreign map pinned");
    let maps = part(&value, "maps");
    assert_eq!(maps["state"], "degraded", "{maps}");
    let detail = maps["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&drops.display().to_string()) && detail.contains("not the programs'"),
        "names the pin: {maps}"
    );
    assert!(
        maps["hint"]
            .as_str()
            .is_some_and(|h| h.contains("remove what is pinned")),
        "{maps}"
    );
    // The text form: the table, then one line naming the part, exit 1.
    let text = t.agent.cli(&["status"]);
    assert_eq!(text.code, 1, "{text:?}");
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("maps") && l.contains("degraded") && l.contains("hint: ")),
        "{text:?}"
    );
    text.assert_refused(
        "netd status with a foreign map",
        "not healthy: maps is degraded",
    );
    // The hint's fix: the pin removed, the agent pins its own map again.
    fs::remove_file(&drops).expect("remove the foreign pin");
    wait_status(&t.agent, 0, "the foreign pin removed");
    assert_healthy(&t.agent, "the agent's own map pinned again");

    // The endpoint's host veth deleted behind the agent's back: its
    // program has nothing to run on, and nothing puts it back.
    let ps = t.agent.json(&["ps"]);
    let ep = &ps.as_array().expect("endpoints")[0];
    let veth = ep["host_ifname"].as_str().expect("host_ifname");
    let id = ep["id"].as_str().expect("id");
    t.host.ip(&format!("link del {veth}"));
    let value = wait_status(&t.agent, 1, "the endpoint's veth deleted");
    let broken = part(&value, &endpoint);
    assert_eq!(broken["state"], "down", "{broken}");
    assert!(
        broken["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("{veth} is gone"))),
        "{broken}"
    );
    let hint = broken["hint"].as_str().expect("a hint");
    assert!(
        hint.contains(&format!("`netd detach --name {id}`")),
        "{hint}"
    );
    // The other parts are not blamed.
    for (name, state) in parts(&value) {
        if name != endpoint {
            assert_eq!(state, "ok", "{name} in {value}");
        }
    }
    t.agent.cli(&["status"]).assert_refused(
        "netd status with a veth gone",
        &format!("not healthy: {endpoint} is down"),
    );
    // The hint's command releases it, and the agent is healthy again.
    t.agent.ok(&["detach", "--name", id]);
    assert_healthy(&t.agent, "the broken endpoint detached");
    let (_, value) = status(&t.agent);
    assert!(
        parts(&value).iter().all(|(name, _)| *name != endpoint),
        "{value}"
    );
}

#[test]
fn refusals_print_their_hint_on_their_one_line() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["--ip", "172.30.0.5", "-p", "8080:80"]);
    let c2 = t.container("c2", &[]);
    let unattached = Netns::new("c4");

    // A taken address: the message, then what to do, on one line.
    let run = t
        .agent
        .cli(&["attach", unattached.name(), "--ip", "172.30.0.5"]);
    run.assert_refused(
        "attach to a taken --ip",
        &format!(
            "netd: 172.30.0.5 is already assigned to endpoint {}; hint: choose another address with --ip, or omit --ip to get a free one",
            c1.name()
        ),
    );
    // A taken host port: the hint's command shows who holds it.
    let run = t.agent.cli(&["publish", "8080:80", c2.name()]);
    run.assert_refused(
        "publish a taken host port",
        &format!(
            "hint: `netd ports` shows who holds it; unpublish it (`netd unpublish SPEC {}`) or choose another host port",
            c1.name()
        ),
    );
    let ports = t.agent.ok(&["ports"]);
    assert!(
        ports
            .lines()
            .any(|l| l.contains("0.0.0.0:8080->80/tcp") && l.contains(c1.name())),
        "{ports}"
    );
    // A network with endpoints: the hint's command lists them.
    t.agent
        .ok(&["network", "create", "backend", "--subnet", "10.99.0.0/24"]);
    let c3 = t.container("c3", &["--network", "backend"]);
    t.agent.cli(&["network", "rm", "backend"]).assert_refused(
        "remove a network with endpoints",
        "hint: `netd network inspect backend` lists them",
    );
    let inspect = t.agent.json(&["network", "inspect", "backend"]);
    assert!(
        inspect[0]["Containers"]
            .as_object()
            .expect("Containers")
            .values()
            .any(|c| c["Name"] == c3.name()),
        "{inspect}"
    );
    // An error without a fix has no hint.
    t.agent.cli(&["detach", "--name", "ghost"]).assert_refused(
        "detach an unknown name",
        "no endpoint named ghost; hint: `netd ps`",
    );
    let run = t.agent.cli(&["attach", unattached.name(), "--ip", "1.2.3"]);
    run.assert_refused("attach with a bad --ip", "invalid IP address \"1.2.3\"");
    assert!(!run.stderr.contains("hint"), "{run:?}");

    // The API: the hint as a field of its own, absent where there is none.
    let (body, code) = curl_unix(
        &t.agent.socket(),
        &[
            "-X",
            "POST",
            "-d",
            &format!(
                "{{\"netns\":\"{}\",\"ip\":\"172.30.0.5\"}}",
                unattached.name()
            ),
            "http://netd/v1/endpoints",
        ],
    );
    assert_eq!(code, "409", "{body}");
    let err: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(err["kind"], "conflict", "{body}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("is already assigned") && !m.contains("hint")),
        "the message is the fact alone: {body}"
    );
    assert_eq!(
        err["hint"], "choose another address with --ip, or omit --ip to get a free one",
        "{body}"
    );
    let (body, code) = curl_unix(&t.agent.socket(), &["http://netd/v1/nothing-here"]);
    assert_eq!(code, "404", "{body}");
    let err: Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(err.get("hint").is_none(), "{body}");
}

/// With `--xdp`, each uplink's XDP attachment is a part of its own, ok
/// while its link's program runs there.
#[test]
fn xdp_attachments_are_parts() {
    require_root!();
    let t = Topology::new(&["--xdp"]);
    assert_healthy(&t.agent, "an agent with --xdp");
    let (_, value) = status(&t.agent);
    let xdp = part(&value, "uplink up0 xdp");
    assert!(
        xdp["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("XDP native") || d.starts_with("XDP generic")),
        "{xdp}"
    );
}
