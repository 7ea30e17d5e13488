// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Names: the agent's DNS server on each network's gateway, asked with dig
//! and glibc (getent) from containers, forwarding to a dnsmasq upstream in
//! the outside namespace.

use std::{fs, time::Duration};

use netd_tests::{
    netns::{Netns, Process},
    require_root,
    topology::{OUT_IP, Scratch, Topology, wait_listening},
    within,
};
use serde_json::Value;

/// What dig said: the status (`NOERROR`, `NXDOMAIN`...), the header's
/// flags, and the answer section's data, sorted; `None` if no answer came.
#[derive(Debug, PartialEq, Eq)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<String>,
    /// dig's whole output, for failure messages.
    text: String,
}

/// `dig @SERVER ARGS` in `ns`, one try of one second.
fn dig(ns: &Netns, server: &str, args: &str) -> Option<Dig> {
    let out = ns.try_sh(&format!(
        "dig +time=1 +tries=1 +nocookie +nocmd +nostats @{server} {args}"
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split_once("status: "))
        .map(|(_, rest)| rest.split(',').next().unwrap_or("").to_owned())?;
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .map(|rest| {
            rest.split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut answers: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    answers.sort();
    Some(Dig {
        status,
        flags,
        answers,
        text,
    })
}

/// The A records `name` resolves to for `ns`, asking `server`.
fn addresses(ns: &Netns, server: &str, name: &str) -> Vec<String> {
    let answer = dig(ns, server, name).unwrap_or_else(|| panic!("no answer for {name}"));
    assert_eq!(answer.status, "NOERROR", "{name}: {}", answer.text);
    answer.answers
}

/// The status of `name`'s answer for `ns` (or `None`: none came).
fn status(ns: &Netns, server: &str, name: &str) -> Option<String> {
    dig(ns, server, name).map(|d| d.status)
}

/// An endpoint's address and its network's gateway, from `netd ps`.
fn endpoint(t: &Topology, ns: &Netns, network: &str) -> (String, String) {
    let ps = t.agent.json(&["ps"]);
    let ep = ps
        .as_array()
        .expect("ps")
        .iter()
        .find(|ep| {
            ep["netns"].as_str() == ns.path().to_str() && ep["network"].as_str() == Some(network)
        })
        .unwrap_or_else(|| panic!("{} has no endpoint on {network}: {ps}", ns.name()));
    (
        ep["ip"].as_str().expect("ip").to_owned(),
        ep["gateway"].as_str().expect("gateway").to_owned(),
    )
}

/// dnsmasq as the upstream resolver, in `ns` on `addr`: `www.example.test`
/// is 192.0.2.10, `big.example.test` has 60 addresses (an answer of about
/// 1,000 bytes, more than a 512-byte UDP answer holds).
fn upstream(ns: &Netns, addr: &str) -> (Process, Scratch) {
    let dir = Scratch::new();
    let hosts = dir.0.join("hosts");
    let lines: String = (1..=60)
        .map(|i| format!("198.51.100.{i} big.example.test\n"))
        .collect();
    fs::write(&hosts, lines).expect("hosts file");
    let process = ns.spawn(&format!(
        "dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --bind-interfaces \
         --listen-address={addr} --port=53 --user=root --pid-file= --log-facility=- \
         --local-ttl=600 --local=/example.test/ --address=/www.example.test/192.0.2.10 \
         --addn-hosts={}",
        hosts.display()
    ));
    wait_listening(ns, 53, true);
    (process, dir)
}

/// An agent forwarding to the outside namespace, and a container `web` on
/// its default network: the container, its address and gateway.
fn one_container() -> (Topology, Netns, String, String) {
    let t = Topology::new(&["--dns-upstream", OUT_IP]);
    let front = default_network(&t);
    let web = t.container("web", &["--name", "web"]);
    let (ip, gw) = endpoint(&t, &web, &front);
    (t, web, ip, gw)
}

/// The default network's name (`netd status`).
fn default_network(t: &Topology) -> String {
    t.agent.json(&["status"])["network"]
        .as_str()
        .expect("network")
        .to_owned()
}

#[test]
fn containers_find_each_other_by_name_on_their_networks_only() {
    require_root!();
    let t = Topology::new(&["--dns-upstream", OUT_IP]);
    let (mut dnsmasq, _hosts) = upstream(&t.out, OUT_IP);
    let front = default_network(&t);
    t.agent
        .ok(&["network", "create", "back", "--subnet", "10.77.0.0/24"]);
    let dir = Scratch::new();
    let resolv = dir.0.join("web.resolv.conf");
    let web = t.container(
        "web",
        &[
            "--name",
            "web",
            "--alias",
            "www,api",
            "--resolv-conf",
            resolv.to_str().expect("path"),
        ],
    );
    t.agent
        .ok(&["attach", web.name(), "--network", "back", "--name", "web"]);
    let cache = t.container("cache", &["--name", "cache"]);
    let db = t.container("db", &["--network", "back", "--name", "db"]);
    let (web_ip, gw) = endpoint(&t, &web, &front);
    let (web_back, back_gw) = endpoint(&t, &web, "back");
    let (cache_ip, _) = endpoint(&t, &cache, &front);
    let (db_ip, _) = endpoint(&t, &db, "back");

    // The resolv.conf attach wrote: the gateway, the network to search.
    let written = fs::read_to_string(&resolv).expect("resolv.conf");
    assert!(written.contains(&format!("nameserver {gw}\n")), "{written}");
    assert!(written.contains(&format!("search {front}\n")), "{written}");

    // Name and aliases, bare and in the network's domain, any case.
    for name in ["web", "www", "API", &format!("web.{front}")] {
        assert_eq!(addresses(&cache, &gw, name), vec![web_ip.clone()], "{name}");
    }
    // AAAA: the name exists, with no IPv6 address (NOERROR, no data).
    let aaaa = dig(&cache, &gw, "AAAA web").expect("AAAA answer");
    assert_eq!(
        (aaaa.status.as_str(), aaaa.answers.len()),
        ("NOERROR", 0),
        "{}",
        aaaa.text
    );
    // TCP too.
    assert_eq!(addresses(&cache, &gw, "+tcp www"), vec![web_ip.clone()]);
    // glibc through that resolv.conf, as a container that mounts it.
    let getent = |ns: &Netns, name: &str| {
        ns.try_sh(&format!(
            "unshare --mount sh -c 'mount --bind {} /etc/resolv.conf && getent ahostsv4 {name}'",
            resolv.display()
        ))
    };
    let out = getent(&cache, "api");
    assert!(out.status.success(), "getent api: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("{web_ip} ")),
        "{out:?}"
    );

    // Scope: db (back only) sees web's back address and not cache; web
    // (on both) sees both networks' names.
    assert_eq!(addresses(&db, &back_gw, "web"), vec![web_back.clone()]);
    assert_eq!(status(&db, &back_gw, "cache").as_deref(), Some("NXDOMAIN"));
    assert_eq!(status(&db, &back_gw, "www").as_deref(), Some("NXDOMAIN"));
    assert_eq!(addresses(&web, &back_gw, "cache"), vec![cache_ip.clone()]);
    assert_eq!(addresses(&web, &gw, "db"), vec![db_ip.clone()]);
    // Nor may db ask the other network's server: its socket is on the
    // other bridge.
    assert_eq!(status(&db, &gw, "web"), None, "db reached front's server");

    // PTR: the name of an address on the asker's networks, nobody's for
    // an address of a network it is not on.
    let ptr = dig(&cache, &gw, &format!("-x {web_ip}")).expect("PTR answer");
    assert_eq!(ptr.answers, vec![format!("web.{front}.")], "{}", ptr.text);
    let ptr = dig(&cache, &gw, &format!("-x {db_ip}")).expect("PTR answer");
    assert_eq!(ptr.status, "NXDOMAIN", "{}", ptr.text);

    // Everything else goes upstream.
    assert_eq!(
        addresses(&cache, &gw, "www.example.test"),
        vec!["192.0.2.10"]
    );
    assert_eq!(
        status(&cache, &gw, "nothing.example.test").as_deref(),
        Some("NXDOMAIN")
    );
    // A large answer: truncated over UDP (TC set), whole over TCP, and dig
    // falls back to TCP by itself.
    let udp = dig(&cache, &gw, "+noedns +ignore big.example.test").expect("UDP answer");
    assert!(udp.flags.contains(&"tc".to_owned()), "{}", udp.text);
    assert!(udp.answers.len() < 60, "{}", udp.text);
    let fallback = dig(&cache, &gw, "+noedns big.example.test").expect("answer");
    assert!(
        fallback.text.contains("Truncated, retrying in TCP mode"),
        "{}",
        fallback.text
    );
    assert_eq!(fallback.answers.len(), 60, "{}", fallback.text);

    // The bridge keeps its MAC (02:42 and the gateway's address) as ports
    // come and go, even one of a lower MAC (a bridge left to itself takes
    // its lowest port's): no container's neighbour entry for the gateway
    // goes stale.
    let bridge_mac = || -> String {
        let links: Value =
            serde_json::from_str(&t.host.sh("ip -j link show netd0")).expect("ip -j");
        links[0]["address"].as_str().expect("address").to_owned()
    };
    let octets: Vec<String> = gw
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().expect("octet")))
        .collect();
    assert_eq!(bridge_mac(), format!("02:42:{}", octets.join(":")));
    t.host
        .sh("ip link add ndlow type veth peer name ndlow-p && \
         ip link set ndlow address 02:00:00:00:00:01 && ip link set ndlow master netd0 up");
    assert_eq!(
        bridge_mac(),
        format!("02:42:{}", octets.join(":")),
        "with a port of a lower MAC"
    );
    t.host.sh("ip link del ndlow");
    // Names follow the endpoints: detach, and the name is gone at once;
    // attached again at another address, it answers with that one.
    t.agent.ok(&["detach", cache.name()]);
    assert_eq!(
        bridge_mac(),
        format!("02:42:{}", octets.join(":")),
        "after a port went"
    );
    let after = dig(&web, &gw, "cache");
    assert_eq!(
        after.as_ref().map(|d| d.status.as_str()),
        Some("NXDOMAIN"),
        "{after:?}\n{}",
        t.agent.log()
    );
    t.agent.ok(&[
        "attach",
        cache.name(),
        "--name",
        "cache",
        "--ip",
        "172.30.9.9",
    ]);
    assert_eq!(addresses(&web, &gw, "cache"), vec!["172.30.9.9"]);
    // A rename, at once; a container on two networks is renamed on both.
    t.agent.ok(&["rename", "cache", "store"]);
    assert_eq!(status(&web, &gw, "cache").as_deref(), Some("NXDOMAIN"));
    assert_eq!(addresses(&web, &gw, "store"), vec!["172.30.9.9"]);
    t.agent.ok(&["rename", "web", "shop"]);
    assert_eq!(addresses(&db, &back_gw, "shop"), vec![web_back.clone()]);
    assert_eq!(addresses(&cache, &gw, "shop"), vec![web_ip.clone()]);
    assert_eq!(status(&cache, &gw, "web").as_deref(), Some("NXDOMAIN"));
    // Its aliases stay.
    assert_eq!(addresses(&cache, &gw, "www"), vec![web_ip.clone()]);
    t.agent
        .cli(&["rename", "shop", "store"])
        .assert_refused("a name another endpoint has", "already used");
    t.agent
        .cli(&["rename", "nobody", "x1"])
        .assert_refused("an unknown endpoint", "nobody");
    // A name two containers have (on different networks) is no target.
    let twin = t.container("twin", &["--name", "db"]);
    t.agent
        .cli(&["rename", "db", "x1"])
        .assert_refused("a name of two containers", "names two containers");
    t.agent.ok(&["detach", twin.name()]);
    t.agent.ok(&["rename", "shop", "web"]);

    // Bad input changes nothing: an alias another endpoint answers to, a
    // name Docker refuses, an alias that is no DNS name.
    let before = (t.agent.ok(&["ps"]), t.agent.ok(&["network", "ls"]));
    let spare = Netns::new("spare");
    t.agent
        .cli(&["attach", spare.name(), "--alias", "www"])
        .assert_refused(
            "an alias web answers to",
            "alias www is already a name of endpoint web",
        );
    t.agent
        .cli(&["attach", spare.name(), "--name", "store"])
        .assert_refused("a name store has", "already used");
    t.agent
        .cli(&["attach", spare.name(), "--name=-web"])
        .assert_refused("a name Docker refuses", "invalid endpoint name");
    t.agent
        .cli(&["attach", spare.name(), "--alias", "no such name"])
        .assert_refused("an alias that is no DNS name", "invalid alias");
    t.agent
        .cli(&[
            "attach",
            spare.name(),
            "--resolv-conf",
            "/nonexistent/dir/resolv.conf",
        ])
        .assert_refused("a resolv.conf in no directory", "is not a directory");
    assert_eq!(
        (t.agent.ok(&["ps"]), t.agent.ok(&["network", "ls"])),
        before,
        "a refused attach changed something"
    );
    assert_eq!(
        spare.sh("ip -br link | wc -l").trim(),
        "1",
        "only lo in spare"
    );

    // The forwarder caches what upstream answered, for its TTL: with the
    // upstream gone, a name asked before still resolves; a new one fails
    // (SERVFAIL) once the forwarder's timeouts are spent.
    dnsmasq.stop();
    assert_eq!(
        addresses(&cache, &gw, "www.example.test"),
        vec!["192.0.2.10"]
    );
    assert_eq!(
        status(&cache, &gw, "+time=40 fresh.example.test").as_deref(),
        Some("SERVFAIL")
    );
}

#[test]
fn port_53_is_only_on_the_gateways_and_only_for_the_network() {
    require_root!();
    let (t, web, _, gw) = one_container();
    assert_eq!(status(&web, &gw, "web").as_deref(), Some("NOERROR"));
    t.agent
        .ok(&["network", "create", "back", "--subnet", "10.78.0.0/24"]);

    // Every listener on port 53 in the agent's namespace is a gateway's,
    // bound to its bridge.
    let networks = t.agent.json(&["network", "ls"]);
    let mut want: Vec<String> = networks
        .as_array()
        .expect("network ls")
        .iter()
        .map(|n| {
            format!(
                "{}%{}:53",
                n["gateway"].as_str().expect("gw"),
                n["bridge"].as_str().expect("bridge")
            )
        })
        .collect();
    want.sort();
    for proto in ["u", "t"] {
        let mut listening: Vec<String> = t
            .host
            .sh(&format!(
                "ss -Hln{proto} 'sport = :53' | awk '{{print $4}}'"
            ))
            .lines()
            .map(str::to_owned)
            .collect();
        listening.sort();
        assert_eq!(listening, want, "ss -ln{proto}");
    }

    // From outside: not on the uplink's address, not on a gateway's routed
    // through the uplink.
    t.out.ip(&format!(
        "route add 172.30.0.0/16 via {}",
        netd_tests::topology::HOST_IP
    ));
    assert_eq!(status(&t.out, netd_tests::topology::HOST_IP, "web"), None);
    assert_eq!(
        status(&t.out, &gw, "web"),
        None,
        "the gateway answered the outside"
    );
    assert_eq!(status(&web, &gw, "web").as_deref(), Some("NOERROR"));

    // An internal network's containers resolve each other, and nothing
    // else: no name goes out for them.
    t.agent.ok(&[
        "network",
        "create",
        "vault",
        "--subnet",
        "10.79.0.0/24",
        "--internal",
    ]);
    let secret = t.container("secret", &["--network", "vault", "--name", "secret"]);
    let (secret_ip, vault_gw) = endpoint(&t, &secret, "vault");
    assert_eq!(addresses(&secret, &vault_gw, "secret"), vec![secret_ip]);
    assert_eq!(
        status(&secret, &vault_gw, "www.example.test").as_deref(),
        Some("REFUSED")
    );
    t.agent.ok(&["detach", secret.name()]);
    t.agent.ok(&["network", "rm", "vault"]);

    // The host holds every gateway address: it may ask, from the gateway
    // itself; from another network's gateway address it is on that
    // network's bridge, where this server has no socket.
    assert_eq!(status(&t.host, &gw, "web").as_deref(), Some("NOERROR"));
    assert_eq!(status(&t.host, &gw, "-b 10.78.0.1 web"), None);
    // A container asking from an address outside the network is spoofing:
    // the datapath drops it before any server sees it (the server's own
    // access list, which refuses such sources, is the second line).
    web.ip("addr add 192.0.2.77/32 dev eth0");
    let spoofed = t.agent.drops("spoofed");
    assert_eq!(status(&web, &gw, "-b 192.0.2.77 web"), None);
    assert!(t.agent.drops("spoofed") > spoofed, "not dropped as spoofed");

    // Removing a network closes its server.
    t.agent.ok(&["network", "rm", "back"]);
    let tcp = t.host.sh("ss -Hlnt 'sport = :53' | awk '{print $4}'");
    assert!(
        !tcp.contains("10.78.0.1"),
        "back's TCP listener is still there: {tcp}"
    );
    let left = t.host.sh("ss -Hlnu 'sport = :53' | awk '{print $4}'");
    assert_eq!(
        left.trim(),
        format!(
            "{gw}%{}:53",
            networks[0]["bridge"].as_str().expect("bridge")
        )
    );
}

#[test]
fn names_stop_while_the_agent_is_down_and_answer_as_it_starts() {
    require_root!();
    let (mut t, web, web_ip, gw) = one_container();
    let cache = t.container("cache", &["--name", "cache"]);
    t.agent
        .ok(&["network", "create", "back", "--subnet", "10.76.0.0/24"]);
    let db = t.container("db", &["--network", "back", "--name", "db"]);
    let server = netd_tests::topology::HttpServer::start(&web, 80, "page\n");
    assert_eq!(addresses(&cache, &gw, "web"), vec![web_ip.clone()]);

    assert_eq!(t.agent.terminate(), Some(0));
    // Down: no names, but the packet path is the datapath's.
    assert_eq!(status(&cache, &gw, "web"), None, "names without an agent");
    assert_eq!(
        netd_tests::topology::fetch(&cache, &format!("http://{web_ip}/")).as_deref(),
        Some("page\n"),
        "cache reaches web while the agent is down"
    );
    // The servers are bound before the API answers: a started agent
    // answers names at once.
    t.agent.launch();
    assert_eq!(addresses(&cache, &gw, "web"), vec![web_ip.clone()]);
    assert_eq!(addresses(&cache, &gw, "+tcp web"), vec![web_ip]);
    // And on a network made at run time, as on the default one.
    let (db_ip, back_gw) = endpoint(&t, &db, "back");
    assert_eq!(addresses(&db, &back_gw, "db"), vec![db_ip]);
    drop(server);
}

/// Another server on the host's port 53 (bound to every address) keeps a
/// network's from starting: its endpoints are told no nameserver; once
/// that server goes, the agent serves the network within a tick or two.
#[test]
fn a_taken_port_53_is_retried_until_free() {
    require_root!();
    let mut squatter = None;
    let t = Topology::build(&["--dns-upstream", OUT_IP], |agent| {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", agent.netns_path().display()))
            .args(["--", "python3", "-c"])
            .arg("import socket, time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53)); time.sleep(60)");
        squatter = Some(Process::spawn(cmd, "a server on port 53"));
        let listening = || {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net={}", agent.netns_path().display()))
                .args(["--", "ss", "-Hlnu", "sport = :53"])
                .output()
                .expect("ss");
            (!out.stdout.is_empty()).then_some(())
        };
        assert!(
            within(Duration::from_secs(10), listening).is_some(),
            "the squatter did not bind"
        );
    });
    let web = t.container("web", &["--name", "web"]);
    let attached = t.agent.json(&["ps"]);
    assert!(
        attached[0].get("dns").is_none(),
        "a nameserver that is not there: {attached}"
    );
    let (web_ip, gw) = endpoint(&t, &web, &default_network(&t));
    assert_eq!(status(&web, &gw, "web"), None);
    drop(squatter);
    assert!(
        within(Duration::from_secs(10), || (status(&web, &gw, "web")
            .as_deref()
            == Some("NOERROR"))
        .then_some(()))
        .is_some(),
        "names not served after port 53 was freed: {}",
        t.agent.log()
    );
    assert_eq!(addresses(&web, &gw, "web"), vec![web_ip]);
    assert!(t.agent.json(&["ps"])[0].get("dns").is_some());
}

/// Raw datagrams from `ns` to `server`:53, then whether the agent still
/// answers a good query: the byte strings a broken or hostile client
/// sends.
#[test]
fn malformed_queries_are_answered_or_dropped_without_harm() {
    require_root!();
    let (t, web, web_ip, gw) = one_container();
    // Each case: a hex payload, and what a reply must be (None: no reply;
    // Some(rcode): a response with that code).
    let header = "abcd01000001000000000000";
    let cases: Vec<(&str, String, Option<u8>)> = vec![
        ("shorter than a header", "abcd0100".to_owned(), None),
        ("a question cut short", format!("{header}03776562"), Some(1)),
        // The name is a pointer to itself.
        (
            "a compression loop",
            format!("{header}c00c00010001"),
            Some(1),
        ),
        (
            "a response, not a query",
            "abcd81800001000000000000037765620000010001".to_owned(),
            None,
        ),
        (
            "oversized",
            format!("{header}{}", "3f".repeat(4000)),
            Some(1),
        ),
    ];
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 53))
try:
    data = s.recv(65535)
    print("reply", data[3] & 0x0f, data[2] >> 7)
except socket.timeout:
    print("none")
"#;
    let dir = Scratch::new();
    let py = dir.0.join("send.py");
    fs::write(&py, script).expect("script");
    for (what, payload, want) in &cases {
        let out = web.sh(&format!("python3 {} {gw} {payload}", py.display()));
        let got: Vec<&str> = out.split_whitespace().collect();
        match want {
            None => assert_eq!(got, vec!["none"], "{what}"),
            Some(rcode) => assert_eq!(got, vec!["reply", &rcode.to_string(), "1"], "{what}"),
        }
        assert_eq!(
            addresses(&web, &gw, "web"),
            vec![web_ip.clone()],
            "after {what}"
        );
    }
    // TCP: a length prefix promising more than comes, then a close; a
    // connection that never speaks.
    web.sh(&format!(
        "python3 -c 'import socket; s=socket.create_connection((\"{gw}\", 53)); s.sendall(bytes.fromhex(\"ffff\" + \"00\" * 100)); s.close()'"
    ));
    let idle = web.spawn(&format!("python3 -c 'import socket, time; s=socket.create_connection((\"{gw}\", 53)); time.sleep(30)'"));
    assert_eq!(addresses(&web, &gw, "+tcp web"), vec![web_ip.clone()]);
    drop(idle);
    // A container opening 100 connections and holding them: the server
    // keeps 8 of them, closes the rest, and its neighbours' TCP queries
    // are answered meanwhile; the agent's open files stay few.
    let agent_files = || {
        let pid = t.agent.pid().expect("agent PID");
        fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .count()
    };
    let files_before = agent_files();
    let flood = t.container("flood", &["--name", "flood"]);
    let (flood_ip, _) = endpoint(&t, &flood, &default_network(&t));
    let _held = flood.spawn(&format!(
        "python3 -c 'import socket, time; s=[socket.create_connection((\"{gw}\", 53)) for _ in range(100)]; time.sleep(30)'"
    ));
    let held = || {
        t.host
            .sh(&format!(
                "ss -Htn state established '( sport = :53 and dst {flood_ip} )' | wc -l"
            ))
            .trim()
            .parse::<usize>()
            .expect("count")
    };
    assert!(
        within(Duration::from_secs(10), || (held() == 8).then_some(())).is_some(),
        "the server holds {} connections from one address: {}",
        held(),
        t.host.sh(&format!(
            "ss -Htn '( sport = :53 and dst {flood_ip} )' | awk '{{print $1}}' | sort | uniq -c"
        ))
    );
    assert_eq!(addresses(&web, &gw, "+tcp web"), vec![web_ip.clone()]);
    assert!(
        agent_files() < files_before + 20,
        "{} open files, {files_before} before",
        agent_files()
    );
    assert!(
        within(Duration::from_secs(5), || t
            .agent
            .cli(&["status"])
            .success()
            .then_some(()))
        .is_some(),
        "the agent died"
    );
    let _: Value = t.agent.json(&["status"]);
}
