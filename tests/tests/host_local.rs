// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Host-local clients reach published ports with no proxy: socket-level
//! translation for 127.0.0.1, the host's addresses and [::1], in a child
//! cgroup each test makes (never the machine's own).

use std::process::Command;

use netd_tests::{
    require_root,
    topology::{HOST_IP, HttpServer, Topology, udp_echo},
};

/// `curl URL` run in the host namespace, inside the agent's cgroup; the
/// body, or `None` if it failed.
fn local_fetch(t: &Topology, url: &str) -> Option<String> {
    let out = t
        .host
        .try_sh(&t.agent.cgroup().wrap(&format!("curl -sS -m 3 -g '{url}'")));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Python run in the host namespace, inside the agent's cgroup.
fn local_python(t: &Topology, script: &str) -> String {
    t.host
        .sh(&t.agent.cgroup().wrap(&format!("python3 -c \"{script}\"")))
        .trim()
        .to_owned()
}

#[test]
fn loopback_host_addresses_and_ipv6_loopback_reach_the_container() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let server = HttpServer::start(&c1, 80, "local\n");
    for url in [
        "http://127.0.0.1:8080/",
        &format!("http://{HOST_IP}:8080/"),
        "http://172.30.0.1:8080/",
        "http://[::1]:8080/",
    ] {
        assert_eq!(local_fetch(&t, url).as_deref(), Some("local\n"), "{url}");
    }
    // The container sees host-local clients come from the gateway: the
    // host's address on the container network.
    let log = server.log();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("172.30.0.1 ")).count(),
        4,
        "{log}"
    );

    // No proxy process, no netfilter rule, no route_localnet.
    let pids = Command::new("ip")
        .args(["netns", "pids", t.host.name()])
        .output()
        .expect("pids");
    assert_eq!(
        String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .count(),
        1,
        "only the agent"
    );
    assert!(t.host.sh("nft list ruleset").trim().is_empty());
    assert_eq!(
        t.host
            .sh("sysctl -n net.ipv4.conf.all.route_localnet")
            .trim(),
        "0"
    );
}

#[test]
fn the_client_sees_the_address_it_used() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80", "-p", "5353:53/udp"]);
    let _server = HttpServer::start(&c1, 80, "x");
    let _echo = udp_echo(&c1, 53, "c1");
    // TCP: getpeername reports 127.0.0.1:8080, not the container.
    assert_eq!(
        local_python(
            &t,
            "import socket\ns=socket.create_connection(('127.0.0.1',8080),timeout=3)\nprint(s.getpeername())"
        ),
        "('127.0.0.1', 8080)"
    );
    assert_eq!(
        local_python(
            &t,
            "import socket\ns=socket.create_connection(('::1',8080),timeout=3)\nprint(s.getpeername()[:2])"
        ),
        "('::1', 8080)"
    );
    // UDP, unconnected: the reply comes from the address the client used.
    // (Not over IPv6: the kernel refuses a cgroup hook that turns an
    // unconnected IPv6 sendto into IPv4, ENOTSUPP; connected below.)
    for (family, addr) in [("AF_INET", "127.0.0.1"), ("AF_INET", HOST_IP)] {
        let script = format!(
            "import socket\ns=socket.socket(socket.{family},socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(b'hi',('{addr}',5353))\nd,a=s.recvfrom(100)\nprint(d.decode().split(':')[0], a[0], a[1])"
        );
        assert_eq!(
            local_python(&t, &script),
            format!("c1 {addr} 5353"),
            "{family} {addr}"
        );
    }
    // UDP, connected, IPv4 and IPv6.
    assert_eq!(
        local_python(
            &t,
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('127.0.0.1',5353))\ns.send(b'hi')\nprint(s.recv(100).decode().split(':')[0], s.getpeername())"
        ),
        "c1 ('127.0.0.1', 5353)"
    );
    assert_eq!(
        local_python(
            &t,
            "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('::1',5353))\ns.send(b'hi')\nprint(s.recv(100).decode().split(':')[0], s.getpeername()[:2])"
        ),
        "c1 ('::1', 5353)"
    );
}

#[test]
fn unpublished_ports_and_other_cgroups_and_namespaces_are_untouched() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let _server = HttpServer::start(&c1, 80, "local\n");
    assert!(local_fetch(&t, "http://127.0.0.1:8080/").is_some());
    // Outside the agent's cgroup: no translation (nothing listens on 8080:
    // curl's exit 7, "could not connect").
    let out = t.host.try_sh("curl -sS -m 3 http://127.0.0.1:8080/");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // Inside the cgroup but in another namespace: that namespace's own
    // loopback, untouched.
    let out = t.out.try_sh(
        &t.agent
            .cgroup()
            .wrap("curl -sS -m 3 http://127.0.0.1:8080/"),
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "another namespace is not translated: {out:?}"
    );
    // Unpublished: refused.
    t.agent.ok(&["unpublish", "8080:80", c1.name()]);
    let out = t.host.try_sh(
        &t.agent
            .cgroup()
            .wrap("curl -sS -m 3 http://127.0.0.1:8080/"),
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "refused once unpublished: {out:?}"
    );
}

#[test]
fn loopback_bindings_work_locally_and_nowhere_else() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "127.0.0.1:8082:80"]);
    let _server = HttpServer::start(&c1, 80, "loopback only\n");
    assert_eq!(
        local_fetch(&t, "http://127.0.0.1:8082/").as_deref(),
        Some("loopback only\n")
    );
    assert_eq!(
        local_fetch(&t, &format!("http://{HOST_IP}:8082/")),
        None,
        "not on the host's other addresses"
    );
    assert_eq!(
        t.fetch(&format!("http://{HOST_IP}:8082/")),
        None,
        "not from outside"
    );
}

#[test]
fn protect_ports_refuses_host_binds_on_published_ports() {
    require_root!();
    let t = Topology::new(&["--protect-ports"]);
    let _c1 = t.container("c1", &["-p", "8080:80", "-p", "5353:53/udp"]);
    let bind = |family: &str, kind: &str, addr: &str, port: u16| {
        local_python(
            &t,
            &format!(
                "import socket\ns=socket.socket(socket.{family},socket.{kind})\ntry:\n s.bind(('{addr}',{port})); print('bound')\nexcept OSError as e:\n print(e.errno)"
            ),
        )
    };
    assert_eq!(
        bind("AF_INET", "SOCK_STREAM", "0.0.0.0", 8080),
        "98",
        "EADDRINUSE"
    );
    assert_eq!(bind("AF_INET", "SOCK_STREAM", HOST_IP, 8080), "98");
    assert_eq!(
        bind("AF_INET6", "SOCK_STREAM", "::", 8080),
        "98",
        "dual-stack [::] takes IPv4 too"
    );
    assert_eq!(bind("AF_INET", "SOCK_DGRAM", "0.0.0.0", 5353), "98");
    assert_eq!(
        bind("AF_INET", "SOCK_STREAM", "0.0.0.0", 8081),
        "bound",
        "other ports are free"
    );
    assert_eq!(
        bind("AF_INET", "SOCK_DGRAM", "0.0.0.0", 8080),
        "bound",
        "8080/udp is not published"
    );
}

#[test]
fn without_protect_ports_binds_are_left_alone() {
    require_root!();
    let t = Topology::new(&[]);
    let _c1 = t.container("c1", &["-p", "8080:80"]);
    let bound = local_python(
        &t,
        "import socket\ns=socket.socket()\ntry:\n s.bind(('0.0.0.0',8080)); print('bound')\nexcept OSError as e:\n print(e.errno)",
    );
    assert_eq!(bound, "bound");
}

#[test]
fn down_leaves_no_cgroup_attachment() {
    require_root!();
    let mut t = Topology::new(&[]);
    let cgroup = t.agent.cgroup().path().to_owned();
    let attached = |path: &std::path::Path| {
        let out = Command::new("bpftool")
            .args(["-j", "cgroup", "show"])
            .arg(path)
            .output()
            .expect("bpftool");
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
        list.as_array().map_or(0, Vec::len)
    };
    assert_eq!(attached(&cgroup), 10, "the socket programs are attached");
    // A restart replaces the links, never doubles them.
    t.agent.kill9();
    t.agent.launch();
    assert_eq!(attached(&cgroup), 10, "replaced, not doubled");
    t.agent.ok(&["down"]);
    t.agent.wait_exit();
    assert_eq!(attached(&cgroup), 0, "nothing left attached");
}
