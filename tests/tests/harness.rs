// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The namespace harness cleans up after itself, also when a test panics.

use std::{path::Path, process::Command, thread};

use netd_tests::{
    netns::{BpfFs, Netns, veth},
    require_root,
};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn namespace_and_processes_go_when_a_test_panics() {
    require_root!();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = thread::spawn(move || {
        let ns = Netns::new("pan");
        // Not kept in a `Process`: the namespace itself must stop it.
        let child = ns.command("sleep").arg("600").spawn().expect("spawn sleep");
        tx.send((ns.name().to_owned(), child)).expect("send");
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let (name, mut child) = rx.recv().expect("namespace and child");
    assert!(!netns_exists(&name), "namespace {name} removed");
    let status = child
        .try_wait()
        .expect("wait")
        .expect("the process was stopped with its namespace");
    assert!(!status.success(), "killed, not finished: {status}");
}

#[test]
fn veth_ends_live_only_in_test_namespaces() {
    require_root!();
    let a = Netns::new("va");
    let b = Netns::new("vb");
    veth(&a, "eth0", &b, "eth1");
    a.ip("addr add 10.78.0.1/30 dev eth0");
    b.ip("addr add 10.78.0.2/30 dev eth1");
    a.sh("ping -c 1 -W 2 10.78.0.2");
    let root_links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .expect("ip link")
            .stdout,
    )
    .expect("utf8");
    assert!(
        !root_links.contains(": eth1@") && !root_links.contains(a.name()),
        "nothing of the test appears in the root namespace"
    );
}

#[test]
fn private_bpffs_is_unmounted_on_drop() {
    require_root!();
    let path = {
        let fs = BpfFs::new();
        std::fs::create_dir(fs.path().join("probe")).expect("bpffs is writable");
        fs.path().to_owned()
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(path.to_str().expect("utf8")), "unmounted");
    assert!(!path.exists(), "mount point removed");
}

#[test]
fn spawned_process_is_stopped_on_drop() {
    require_root!();
    let ns = Netns::new("sp");
    let pid = {
        let process = ns.spawn("sleep 600");
        process.pid()
    };
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.is_empty(), "process {pid} gone and reaped: {state}");
}
