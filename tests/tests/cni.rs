// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd as a CNI plugin, driven the way a runtime drives it: the `netd`
//! binary with `CNI_*` in its environment and the network configuration on
//! stdin. Each command's result, error code and effect, as the
//! specification (1.1) says, including what the reference plugins get
//! wrong: DEL when the namespace is gone and when repeated, CHECK of what
//! broke, GC against the runtime's list, STATUS of the agent.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use netd_tests::{
    agent::{Agent, netd_bin},
    netns::Netns,
    require_root,
    topology::{HOST_IP, HttpServer, Scratch, Topology},
};
use serde_json::{Value, json};

/// What one plugin run answered.
#[derive(Debug)]
struct Answer {
    success: bool,
    stdout: Value,
}

impl Answer {
    /// The error code, for a failed run.
    fn code(&self) -> u64 {
        assert!(!self.success, "expected a failure: {:?}", self.stdout);
        self.stdout["code"].as_u64().expect("an error code")
    }

    fn msg(&self) -> &str {
        self.stdout["msg"].as_str().unwrap_or_default()
    }
}

/// Runs `netd` as a CNI plugin: `command`, `env` (`CNI_*`), `conf` on
/// stdin.
fn cni(command: &str, env: &[(&str, &str)], conf: &Value) -> Answer {
    let mut child = Command::new(netd_bin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netd as a CNI plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write the configuration");
    let out = child.wait_with_output().expect("plugin output");
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{command}: {e}: {text}"))
    };
    if !out.status.success() {
        // An error is one JSON object on stdout, and one line on stderr.
        assert!(stdout["code"].is_u64(), "{command}: {stdout}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1,
            "{command}"
        );
    }
    Answer {
        success: out.status.success(),
        stdout,
    }
}

fn conf(agent: &Agent, version: &str, mappings: Value) -> Value {
    json!({
        "cniVersion": version,
        "name": "netdnet",
        "type": "netd",
        "socket": agent.socket(),
        "runtimeConfig": { "portMappings": mappings },
    })
}

/// `CNI_*` for container `id` in `ns`.
fn env<'a>(id: &'a str, ns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", ns),
        ("CNI_IFNAME", "eth0"),
    ]
}

fn endpoints(agent: &Agent) -> Vec<String> {
    agent
        .json(&["ps"])
        .as_array()
        .expect("ps")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn add_check_del_follow_the_spec() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = Netns::new("c1");
    let c1_path = c1.path().display().to_string();
    let id = "3f1c0ffee0000000000000000000000000000000000000000000000000000001";
    let mappings = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let mut conf = conf(&t.agent, "1.1.0", mappings);
    // The `aliases` capability, as Podman passes it: by network name.
    conf["runtimeConfig"]["aliases"] = json!({"netdnet": ["shop-web"], "other": ["elsewhere"]});

    assert!(cni("STATUS", &[], &conf).success, "the agent runs");
    let add = cni("ADD", &env(id, &c1_path), &conf);
    assert!(add.success, "{:?}", add.stdout);
    let result = &add.stdout;
    assert_eq!(result["cniVersion"], "1.1.0");
    let address = result["ips"][0]["address"].as_str().expect("address");
    assert!(
        address.starts_with("172.30.") && address.ends_with("/16"),
        "{result}"
    );
    assert!(
        result["ips"][0].get("version").is_none(),
        "1.x has no version"
    );
    assert_eq!(result["ips"][0]["gateway"], "172.30.0.1");
    let index = result["ips"][0]["interface"].as_u64().expect("interface") as usize;
    assert_eq!(result["interfaces"][index]["name"], "eth0");
    assert_eq!(result["interfaces"][index]["sandbox"], c1_path.as_str());
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    // The agent's DNS on the network's gateway, the network to search.
    assert_eq!(
        result["dns"],
        json!({"nameservers": ["172.30.0.1"], "search": ["netd"]})
    );
    let ip = address.split('/').next().expect("ip");
    // The alias given for this configuration's network, and no other.
    let dig = |args: &str| {
        c1.sh(&format!(
            "dig +time=1 +tries=1 +noall +answer +comments @172.30.0.1 {args}"
        ))
    };
    assert!(
        dig("shop-web").contains(&format!("\t{ip}\n")),
        "{}",
        dig("shop-web")
    );
    let other = dig("elsewhere");
    assert!(other.contains("status: NXDOMAIN"), "{other}");
    assert!(
        c1.ip("-4 -o addr show dev eth0")
            .contains(&format!("{ip}/16"))
    );
    let ports = t.agent.json(&["ports"]);
    assert_eq!(ports[0]["display"], "0.0.0.0:8080->80/tcp", "{ports}");
    let _server = HttpServer::start(&c1, 80, "through cni\n");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("through cni\n")
    );

    // CHECK: fine as added; then each thing that can break, reported.
    let mut checked = conf.clone();
    checked["prevResult"] = result.clone();
    assert!(cni("CHECK", &env(id, &c1_path), &checked).success);
    let mut more = checked.clone();
    more["runtimeConfig"]["portMappings"] =
        json!([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 9090, "containerPort": 90}]);
    let missing = cni("CHECK", &env(id, &c1_path), &more);
    assert_eq!(missing.code(), 100);
    assert!(missing.msg().contains("9090:90"), "{}", missing.msg());
    let mut other = checked.clone();
    other["prevResult"]["ips"][0]["address"] = json!("172.30.9.9/16");
    assert_eq!(cni("CHECK", &env(id, &c1_path), &other).code(), 100);
    let unknown = cni("CHECK", &env("nobody", &c1_path), &checked);
    assert_eq!(unknown.code(), 3);
    c1.ip("addr flush dev eth0");
    let broken = cni("CHECK", &env(id, &c1_path), &checked);
    assert_eq!(broken.code(), 100);
    assert!(
        broken.msg().contains("lost its address"),
        "{}",
        broken.msg()
    );

    // DEL: removes, and succeeds again; the port is gone with it.
    assert!(cni("DEL", &env(id, &c1_path), &conf).success);
    assert!(endpoints(&t.agent).is_empty());
    assert_eq!(t.agent.json(&["ports"]), json!([]));
    assert!(!c1.ip("-o link show").contains("eth0"));
    assert!(cni("DEL", &env(id, &c1_path), &conf).success, "DEL twice");

    // DEL after the runtime removed the namespace.
    let c2 = Netns::new("c2");
    let c2_path = c2.path().display().to_string();
    assert!(cni("ADD", &env("ctr2", &c2_path), &conf).success);
    drop(c2);
    assert!(cni("DEL", &env("ctr2", &c2_path), &conf).success);
    assert!(endpoints(&t.agent).is_empty(), "{:?}", endpoints(&t.agent));
    assert!(cni("DEL", &env("ctr2", &c2_path), &conf).success);
}

#[test]
fn gc_status_version_and_errors_follow_the_spec() {
    require_root!();
    let mut t = Topology::new(&[]);
    let conf = conf(&t.agent, "1.1.0", json!([]));
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    let (a_path, b_path) = (
        a.path().display().to_string(),
        b.path().display().to_string(),
    );
    assert!(cni("ADD", &env("ctr-a", &a_path), &conf).success);
    assert!(cni("ADD", &env("ctr-b", &b_path), &conf).success);
    // Not the plugin's: GC must leave it.
    t.agent.ok(&["attach", c.name(), "--name", "by-hand"]);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-a", "ifname": "eth0"}]);
    assert!(cni("GC", &[], &gc).success);
    let mut left = endpoints(&t.agent);
    left.sort();
    assert_eq!(left, ["by-hand", "ctr-a"]);
    assert!(
        !b.ip("-o link show").contains("eth0"),
        "ctr-b's veth is gone"
    );

    // VERSION lists every version; results follow the one asked.
    let version = cni("VERSION", &[], &json!({"cniVersion": "1.1.0"}));
    assert!(version.success);
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(
            version.stdout["supportedVersions"]
                .as_array()
                .expect("versions")
                .contains(&json!(v)),
            "{v}"
        );
    }
    let old = Netns::new("old");
    let old_conf = self::conf(&t.agent, "0.4.0", json!([]));
    let add = cni(
        "ADD",
        &env("ctr-old", &old.path().display().to_string()),
        &old_conf,
    );
    assert_eq!(add.stdout["cniVersion"], "0.4.0");
    assert_eq!(add.stdout["ips"][0]["version"], "4", "0.x results carry it");

    // Errors: each with its code.
    let unsupported = self::conf(&t.agent, "0.2.0", json!([]));
    assert_eq!(cni("ADD", &env("x", &a_path), &unsupported).code(), 1);
    let no_netns = vec![("CNI_CONTAINERID", "x"), ("CNI_IFNAME", "eth0")];
    let missing = cni("ADD", &no_netns, &conf);
    assert_eq!(missing.code(), 4);
    assert!(missing.msg().contains("CNI_NETNS"), "{}", missing.msg());
    assert_eq!(
        cni("ADD", &env("x", &a_path), &json!("not a config")).code(),
        6
    );
    let v6 = self::conf(
        &t.agent,
        "1.1.0",
        json!([{"hostPort": 80, "containerPort": 80, "hostIP": "::"}]),
    );
    assert_eq!(cni("ADD", &env("x", &a_path), &v6).code(), 7);
    let gone = cni("ADD", &env("x", "/run/netns/no-such-namespace"), &conf);
    assert_eq!(gone.code(), 3, "{}", gone.msg());
    let taken = cni("ADD", &env("x", &a_path), &conf);
    assert_eq!(taken.code(), 101, "{}", taken.msg());
    let mut left_now = endpoints(&t.agent);
    left_now.sort();
    assert_eq!(
        left_now,
        ["by-hand", "ctr-a", "ctr-old"],
        "failed ADDs left nothing"
    );

    // The agent down: STATUS says not available, ADD says try again.
    t.agent.kill9();
    let status = cni("STATUS", &[], &conf);
    assert_eq!(status.code(), 50);
    assert!(status.msg().contains("not running"), "{}", status.msg());
    assert_eq!(cni("ADD", &env("y", &b_path), &conf).code(), 11);
    t.agent.launch();
    assert!(cni("STATUS", &[], &conf).success);
}

/// An IPAM plugin named by the configuration assigns the address (here
/// the reference host-local), and gets it back on DEL.
#[test]
fn ipam_is_delegated_when_the_configuration_names_a_plugin() {
    require_root!();
    let t = Topology::new(&[]);
    let scratch = Scratch::new();
    let data_dir = scratch.0.join("host-local");
    let mut conf = conf(&t.agent, "1.0.0", json!([]));
    conf["ipam"] = json!({
        "type": "host-local",
        "dataDir": data_dir,
        "ranges": [[{
            "subnet": "172.30.0.0/16",
            "rangeStart": "172.30.5.10",
            "rangeEnd": "172.30.5.20",
            "gateway": "172.30.0.1",
        }]],
    });
    let ns = Netns::new("ipam");
    let path = ns.path().display().to_string();
    let add = cni("ADD", &env("ctr-ipam", &path), &conf);
    assert!(add.success, "{:?}", add.stdout);
    assert_eq!(add.stdout["ips"][0]["address"], "172.30.5.10/16");
    let reserved = data_dir.join("netdnet").join("172.30.5.10");
    assert!(reserved.exists(), "host-local recorded the address");
    assert!(cni("DEL", &env("ctr-ipam", &path), &conf).success);
    assert!(!reserved.exists(), "and released it on DEL");
    assert!(endpoints(&t.agent).is_empty());
}

/// What containerd's CRI plugin sends (go-cni: capitalised `portMappings`
/// keys, an empty `HostIP`, the pod's name in `CNI_ARGS`) is served; DEL
/// succeeds whatever the state of `runtimeConfig`, and says "try again"
/// while the agent is down, then removes the pod once it is back.
#[test]
fn containerd_input_names_pods_and_del_always_ends() {
    require_root!();
    let mut t = Topology::new(&[]);
    let pod = Netns::new("pod");
    let pod_path = pod.path().display().to_string();
    let id = "9d2ac0ffee000000000000000000000000000000000000000000000000000009";
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=9d2ac0ffee;K8S_POD_UID=1234";
    let mut env = env(id, &pod_path);
    env.push(("CNI_ARGS", args));
    let conf = conf(
        &t.agent,
        "1.0.0",
        json!([{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]),
    );

    let add = cni("ADD", &env, &conf);
    assert!(add.success, "{:?}", add.stdout);
    let ps = t.agent.json(&["ps"]);
    assert_eq!(ps[0]["name"], "shop/web-0", "{ps}");
    assert_eq!(ps[0]["container_id"], id, "{ps}");
    assert_eq!(
        t.agent.json(&["ports"])[0]["display"],
        "0.0.0.0:8080->80/tcp"
    );
    assert!(t.agent.ok(&["ps"]).contains("shop/web-0"));
    let _server = HttpServer::start(&pod, 80, "pod by name\n");
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8080/")).as_deref(),
        Some("pod by name\n")
    );
    // The pod's name is a target like any endpoint name.
    t.agent.ok(&["publish", "8081:80", "shop/web-0"]);
    let mut checked = conf.clone();
    checked["prevResult"] = add.stdout.clone();
    assert!(
        cni("CHECK", &env, &checked).success,
        "CHECK by container ID"
    );

    // DEL with a runtimeConfig ADD could not read: the pod still goes.
    let mut broken = conf.clone();
    broken["runtimeConfig"] = json!({"portMappings": "eighty"});
    assert_eq!(cni("ADD", &env, &broken).code(), 6, "ADD needs it");
    assert!(cni("DEL", &env, &broken).success);
    assert!(endpoints(&t.agent).is_empty());
    assert_eq!(t.agent.json(&["ports"]), json!([]));
    let mut none = conf.clone();
    none.as_object_mut()
        .expect("object")
        .remove("runtimeConfig");
    assert!(
        cni("DEL", &env, &none).success,
        "DEL twice, no runtimeConfig"
    );

    // DEL while the agent is down: retryable, then done once it is back.
    assert!(cni("ADD", &env, &conf).success);
    t.agent.kill9();
    let down = cni("DEL", &env, &conf);
    assert_eq!(down.code(), 11, "{}", down.msg());
    assert!(down.msg().contains("not running"), "{}", down.msg());
    t.agent.launch();
    assert!(cni("DEL", &env, &conf).success);
    assert!(endpoints(&t.agent).is_empty());
    assert!(!pod.ip("-o link show").contains("eth0"));
}

/// A conflist names its netd network (`"network"`) and may give its
/// settings: ADD creates the network when it does not exist and checks it
/// when it does (a contradiction is code 7 and changes nothing). One
/// container on two networks has an interface from each; DEL, CHECK and
/// GC of one network's configuration touch only that network's
/// endpoints; the networks outlive the configurations (they may hold
/// other runtimes' endpoints).
#[test]
fn conflists_name_their_network_and_settings_are_checked() {
    require_root!();
    let t = Topology::new(&[]);
    let ctr = Netns::new("ctr");
    let path = ctr.path().display().to_string();
    let id = "4a1c0ffee0000000000000000000000000000000000000000000000000000002";
    let net_conf = |name: &str, network: &str, subnet: &str| {
        let mut conf = conf(&t.agent, "1.1.0", json!([]));
        conf["name"] = json!(name);
        conf["network"] = json!(network);
        conf["subnet"] = json!(subnet);
        conf
    };
    let front = net_conf("front-conf", "front", "10.91.0.0/24");
    let mut back = net_conf("back-conf", "back", "10.92.0.0/24");
    back["options"] = json!({"com.docker.network.bridge.enable_icc": "false"});
    let with_ifname = |ifname: &'static str| {
        let mut env = env(id, &path);
        env[2] = ("CNI_IFNAME", ifname);
        env
    };

    let add = cni("ADD", &with_ifname("eth0"), &front);
    assert!(add.success, "{:?}", add.stdout);
    assert_eq!(add.stdout["ips"][0]["gateway"], "10.91.0.1");
    let add = cni("ADD", &with_ifname("eth1"), &back);
    assert!(add.success, "{:?}", add.stdout);
    assert!(
        add.stdout["ips"][0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.92.0.")),
        "{}",
        add.stdout
    );
    assert!(ctr.ip("-4 -o addr show dev eth0").contains("10.91.0."));
    assert!(ctr.ip("-4 -o addr show dev eth1").contains("10.92.0."));
    let inspect = t.agent.json(&["network", "inspect", "back"]);
    assert_eq!(inspect[0]["Labels"]["netd.cni.conflist"], "back-conf");
    assert_eq!(
        inspect[0]["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );
    let owners: Vec<&Value> = inspect[0]["Containers"]
        .as_object()
        .expect("containers")
        .values()
        .map(|c| &c["Owner"])
        .collect();
    assert_eq!(owners, [&json!("cni")], "{inspect}");

    // The same network with other settings: refused, nothing changed.
    let before = (t.agent.ok(&["network", "ls"]), t.agent.ok(&["ps"]));
    let other = Netns::new("other");
    let other_path = other.path().display().to_string();
    for (setting, value, needle) in [
        (
            "subnet",
            json!("10.93.0.0/24"),
            "subnet 10.91.0.0/24, not 10.93.0.0/24",
        ),
        (
            "gateway",
            json!("10.91.0.254"),
            "gateway 10.91.0.1, not 10.91.0.254",
        ),
        ("internal", json!(true), "internal false, not true"),
    ] {
        let mut contradicting = front.clone();
        contradicting[setting] = value;
        let refused = cni("ADD", &env("other", &other_path), &contradicting);
        assert_eq!(refused.code(), 7, "{setting}: {:?}", refused.stdout);
        assert!(
            refused
                .msg()
                .contains(&format!("network front exists with {needle}")),
            "{}",
            refused.msg()
        );
    }
    let mut icc = back.clone();
    icc["options"] = json!({"com.docker.network.bridge.enable_icc": "true"});
    assert_eq!(cni("ADD", &env("other", &other_path), &icc).code(), 7);
    assert_eq!(
        (t.agent.ok(&["network", "ls"]), t.agent.ok(&["ps"])),
        before,
        "a refused ADD changes nothing"
    );
    assert!(!other.ip("-o link show").contains("eth0"));

    // The settings as they are (or none): the existing network, unchanged.
    let mut plain = conf(&t.agent, "1.1.0", json!([]));
    plain["network"] = json!("front");
    let second = cni("ADD", &env("other", &other_path), &plain);
    assert!(second.success, "{:?}", second.stdout);
    assert!(other.ip("-4 -o addr show dev eth0").contains("10.91.0."));

    // GC of front's configuration with nothing valid: front's endpoints
    // go, back's stays.
    let mut gc = front.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(cni("GC", &[], &gc).success);
    let left: Vec<(String, String)> = t
        .agent
        .json(&["ps"])
        .as_array()
        .expect("ps")
        .iter()
        .map(|e| {
            (
                e["ifname"].as_str().expect("ifname").to_owned(),
                e["network"].as_str().expect("network").to_owned(),
            )
        })
        .collect();
    assert_eq!(left, [("eth1".to_owned(), "back".to_owned())]);
    // DEL of front's configuration does not touch back's eth1.
    assert!(cni("DEL", &with_ifname("eth1"), &front).success);
    assert_eq!(endpoints(&t.agent).len(), 1, "back's endpoint stays");
    assert!(cni("DEL", &with_ifname("eth1"), &back).success);
    assert!(cni("DEL", &with_ifname("eth1"), &back).success, "DEL twice");
    assert!(endpoints(&t.agent).is_empty());
    // The networks stay: netd's, not the configuration's.
    let names: Vec<String> = t
        .agent
        .json(&["network", "ls"])
        .as_array()
        .expect("ls")
        .iter()
        .map(|n| n["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["netd", "back", "front"]);
}

#[test]
fn a_conflist_makes_a_macvlan_network_and_its_endpoints_are_on_the_lan() {
    require_root!();
    let t = Topology::new(&[]);
    let lan = Netns::new("lan");
    netd_tests::netns::veth(&t.host, "lan0", &lan, "eth0");
    lan.ip("addr add 192.168.77.1/24 dev eth0");
    t.host.ip("addr add 192.168.77.2/24 dev lan0");
    let ctr = Netns::new("ctr");
    let path = ctr.path().display().to_string();
    let id = "4a1c0ffee0000000000000000000000000000000000000000000000000000003";
    let mut conf = conf(&t.agent, "1.1.0", json!([]));
    conf["network"] = json!("lan");
    conf["driver"] = json!("macvlan");
    conf["subnet"] = json!("192.168.77.0/24");
    conf["gateway"] = json!("192.168.77.1");
    conf["options"] = json!({"parent": "lan0"});

    let add = cni("ADD", &env(id, &path), &conf);
    assert!(add.success, "{:?}", add.stdout);
    // One interface, the container's: a LAN endpoint has no host side.
    assert_eq!(add.stdout["interfaces"].as_array().map(Vec::len), Some(1));
    assert_eq!(add.stdout["ips"][0]["interface"], 0);
    assert_eq!(add.stdout["ips"][0]["address"], "192.168.77.3/24");
    let inspect = t.agent.json(&["network", "inspect", "lan"]);
    assert_eq!(inspect[0]["Driver"], "macvlan");
    assert!(
        ctr.try_sh("ping -c1 -W1 -q 192.168.77.1").status.success(),
        "the container reaches the LAN's router"
    );
    assert!(cni("CHECK", &env(id, &path), &conf).success);
    // The same network as a bridge one: a contradiction, refused.
    let mut bridge = conf.clone();
    bridge["driver"] = json!("bridge");
    let other = Netns::new("other");
    let other_path = other.path().display().to_string();
    let refused = cni("ADD", &env("other", &other_path), &bridge);
    assert!(!refused.success);
    assert!(
        refused.stdout["msg"]
            .as_str()
            .is_some_and(|m| m.contains("driver")),
        "{}",
        refused.stdout
    );
    assert!(cni("DEL", &env(id, &path), &conf).success);
    assert!(cni("DEL", &env(id, &path), &conf).success, "DEL twice");
    assert!(endpoints(&t.agent).is_empty());
    assert!(!ctr.try_sh("ip link show eth0").status.success());
}
