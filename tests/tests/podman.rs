// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd under a real runtime: Podman 4.3 from Debian with its CNI backend
//! and a conflist of type `netd`, run in the test's host namespace with
//! every configuration and storage path in a scratch directory. A
//! container published with `-p 8080:80` serves the outside client through
//! netd's datapath; `podman rm` detaches it.

use std::{fs, os::unix::fs::symlink, path::Path, process::Command};

use netd_tests::{
    agent::netd_bin,
    netns::Netns,
    require_root,
    rootfs::{CgroupParent, HTTPD, busybox_tar},
    topology::{HOST_IP, Scratch, Topology},
};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

/// Podman pointed at `dir` for everything it writes, running in `host`.
struct Podman<'a> {
    host: &'a Netns,
    dir: &'a Path,
}

impl Podman<'_> {
    fn configure(host: &Netns, dir: &Path, socket: &Path) {
        let plugins = dir.join("cni-bin");
        let networks = dir.join("net.d");
        fs::create_dir_all(&plugins).expect("plugin dir");
        fs::create_dir_all(&networks).expect("network dir");
        // The plugin is the netd binary itself, under the name runtimes
        // look for.
        symlink(netd_bin(), plugins.join("netd")).expect("install the plugin");
        Self::add_conflist(
            dir,
            "netdnet",
            json!({
                "type": "netd",
                "socket": socket,
                "capabilities": {"portMappings": true},
            }),
        );
        let d = dir.display();
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\nnetns = \"bridge\"\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\nruntime = \"runc\"\ntmp_dir = \"{d}/tmp\"\nstatic_dir = \"{d}/static\"\nvolume_path = \"{d}/volumes\"\n\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{d}/cni-bin\"]\nnetwork_config_dir = \"{d}/net.d\"\n"
            ),
        )
        .expect("containers.conf");
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/run\"\ngraphroot = \"{d}/root\"\n"
            ),
        )
        .expect("storage.conf");
        let _ = host;
    }

    /// Writes the conflist of Podman's network `name`, of one `plugin`.
    fn add_conflist(dir: &Path, name: &str, plugin: serde_json::Value) {
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [plugin],
        });
        fs::write(
            dir.join("net.d").join(format!("{name}.conflist")),
            conflist.to_string(),
        )
        .expect("conflist");
    }

    /// Runs `podman ARGS` in the host namespace; stdout, or a panic with
    /// stderr.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `podman run -d -p 8080:80` of the test image's httpd on `networks`
    /// (Podman's `--network a,b`); removed on drop.
    fn run_httpd(&self, networks: &str, cgroups: &CgroupParent) -> Remove<'_> {
        let id = self.run(
            &[
                &[
                    "run",
                    "-d",
                    "--network",
                    networks,
                    "-p",
                    "8080:80",
                    "--cgroup-parent",
                    &cgroups.parent(),
                    "--ulimit",
                    "nofile=20000:20000",
                    "--ulimit",
                    "nproc=4096:4096",
                    "localhost/netd-test:1",
                ][..],
                HTTPD,
            ]
            .concat(),
        );
        Remove(self, id)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.path().display()))
            .args(["--", "podman"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("TMPDIR", self.dir.join("tmp"));
        cmd
    }
}

/// A container that goes whatever happens next (and with it conmon, the
/// namespace Podman made, its mounts).
struct Remove<'a>(&'a Podman<'a>, String);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = self.0.command(&["rm", "-f", "-t", "0", &self.1]).output();
    }
}

/// Directories of the machine that Podman and libcni create on first use
/// (a result cache, a blob cache): removed at the end if this test made
/// them.
struct CreatedDirs(Vec<&'static str>);

impl CreatedDirs {
    fn note(dirs: &[&'static str]) -> Self {
        Self(
            dirs.iter()
                .copied()
                .filter(|d| !Path::new(d).exists())
                .collect(),
        )
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// An agent, Podman configured for it in a scratch directory, and the test
/// image imported.
struct Bed {
    t: Topology,
    scratch: Scratch,
    cgroups: CgroupParent,
    _machine_dirs: CreatedDirs,
    /// Held until the rest is dropped (fields drop in order): one Podman
    /// test at a time, since runc keeps every container's state under the
    /// machine's /run/runc, which the first test to create removes.
    _serial: Flock<fs::File>,
}

impl Bed {
    fn new() -> Self {
        // The tests run as processes of this one executable: its file is
        // the lock, and no lock file is left behind.
        let exe = fs::File::open(std::env::current_exe().expect("test executable"))
            .expect("open the test executable");
        let serial = Flock::lock(exe, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, err)| panic!("lock the test executable: {err}"));
        let t = Topology::new(&[]);
        let scratch = Scratch::new();
        fs::create_dir_all(scratch.0.join("tmp")).expect("tmp");
        Podman::configure(&t.host, &scratch.0, &t.agent.socket());
        let bed = Self {
            t,
            scratch,
            cgroups: CgroupParent::new("pod"),
            _machine_dirs: CreatedDirs::note(&["/var/lib/cni", "/var/lib/containers", "/run/runc"]),
            _serial: serial,
        };
        let tar = bed.scratch.0.join("rootfs.tar");
        busybox_tar(&bed.scratch.0, &tar, "served by podman through netd\n");
        bed.podman().run(&[
            "import",
            &tar.display().to_string(),
            "localhost/netd-test:1",
        ]);
        bed
    }

    fn podman(&self) -> Podman<'_> {
        Podman {
            host: &self.t.host,
            dir: &self.scratch.0,
        }
    }

    /// The page at the host's port 8080 from the outside client, once the
    /// container serves it (within 5 s).
    fn page(&self) -> Option<String> {
        let url = format!("http://{HOST_IP}:8080/");
        for _ in 0..50 {
            if let Some(page) = self.t.fetch(&url) {
                return Some(page);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self
            .podman()
            .command(&["rmi", "-f", "localhost/netd-test:1"])
            .output();
    }
}

#[test]
fn podman_publishes_through_netd() {
    require_root!();
    let bed = Bed::new();
    let (t, podman) = (&bed.t, bed.podman());
    let container = podman.run_httpd("netdnet", &bed.cgroups);
    let id = container.1.clone();

    let ps = t.agent.json(&["ps"]);
    let endpoints = ps.as_array().expect("ps");
    assert_eq!(endpoints.len(), 1, "{ps}");
    assert_eq!(
        endpoints[0]["name"],
        id.as_str(),
        "named after the container"
    );
    assert_eq!(endpoints[0]["owner"], "cni");
    assert_eq!(
        t.agent.json(&["ports"])[0]["display"],
        "0.0.0.0:8080->80/tcp"
    );
    assert_eq!(
        bed.page().as_deref(),
        Some("served by podman through netd\n")
    );
    // No iptables rule and no proxy: netd's datapath did it.
    let nat = t
        .host
        .sh("iptables-nft -t nat -S; iptables-legacy -t nat -S");
    assert!(!nat.contains("8080"), "{nat}");

    podman.run(&["rm", "-f", "-t", "0", &id]);
    std::mem::forget(container);
    assert_eq!(t.agent.json(&["ps"]), json!([]));
    assert_eq!(t.agent.json(&["ports"]), json!([]));
    assert_eq!(t.fetch(&format!("http://{HOST_IP}:8080/")), None);
    podman.run(&["rmi", "-f", "localhost/netd-test:1"]);
}

/// One container on two netd networks (`podman run --network front,back`,
/// each a conflist naming its netd network and subnet): an interface from
/// each network, the port published through the one whose conflist has
/// the portMappings capability; `podman rm` detaches both, and `podman
/// network rm` of a conflist leaves netd's network in place (it may hold
/// other runtimes' endpoints).
#[test]
fn podman_runs_a_container_on_two_netd_networks() {
    require_root!();
    let bed = Bed::new();
    let (t, podman) = (&bed.t, bed.podman());
    let socket = t.agent.socket();
    Podman::add_conflist(
        &bed.scratch.0,
        "front",
        json!({
            "type": "netd",
            "socket": socket,
            "network": "front",
            "subnet": "10.91.0.0/24",
            "capabilities": {"portMappings": true, "aliases": true},
        }),
    );
    Podman::add_conflist(
        &bed.scratch.0,
        "back",
        json!({
            "type": "netd",
            "socket": socket,
            "network": "back",
            "subnet": "10.92.0.0/24",
        }),
    );
    let container = podman.run_httpd("front,back", &bed.cgroups);
    let id = container.1.clone();

    let ps = t.agent.json(&["ps"]);
    let mut attached: Vec<(String, String, String)> = ps
        .as_array()
        .expect("ps")
        .iter()
        .map(|ep| {
            assert_eq!(ep["name"], id.as_str(), "{ps}");
            let text = |key: &str| ep[key].as_str().expect(key).to_owned();
            (text("network"), text("ip"), text("ifname"))
        })
        .collect();
    attached.sort();
    assert_eq!(attached.len(), 2, "{ps}");
    assert_eq!(attached[0].0, "back");
    assert!(attached[0].1.starts_with("10.92.0."), "{ps}");
    assert_eq!(attached[1].0, "front");
    assert!(attached[1].1.starts_with("10.91.0."), "{ps}");
    let mut ifnames = [attached[0].2.as_str(), attached[1].2.as_str()];
    ifnames.sort_unstable();
    assert_eq!(ifnames, ["eth0", "eth1"], "{ps}");
    let ports = t.agent.json(&["ports"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
    assert_eq!(ports[0]["network"], "front", "{ports}");
    assert_eq!(
        bed.page().as_deref(),
        Some("served by podman through netd\n")
    );

    // Names: Podman wrote each network's nameserver (netd's, on its
    // gateway) and search domain from the CNI results into resolv.conf,
    // and passed its alias for the container (its short ID) to the
    // network whose conflist has the aliases capability.
    let resolv = podman.run(&["exec", &id, "/bin/busybox", "cat", "/etc/resolv.conf"]);
    for line in ["nameserver 10.91.0.1", "nameserver 10.92.0.1"] {
        assert!(resolv.lines().any(|l| l == line), "{line}: {resolv}");
    }
    let search = resolv
        .lines()
        .find_map(|l| l.strip_prefix("search "))
        .unwrap_or_else(|| panic!("no search line: {resolv}"));
    let mut domains: Vec<&str> = search.split_whitespace().collect();
    domains.sort_unstable();
    assert_eq!(domains, ["back", "front"], "{resolv}");
    let lookup = podman.run(&[
        "exec",
        &id,
        "/bin/busybox",
        "nslookup",
        &id[..12],
        "10.91.0.1",
    ]);
    assert!(lookup.contains(&attached[1].1), "{lookup}");
    podman.run(&["rm", "-f", "-t", "0", &id]);
    std::mem::forget(container);
    assert_eq!(t.agent.json(&["ps"]), json!([]));
    podman.run(&["network", "rm", "back"]);
    let networks: Vec<Value> = t
        .agent
        .json(&["network", "ls"])
        .as_array()
        .expect("ls")
        .iter()
        .map(|n| n["name"].clone())
        .collect();
    assert_eq!(networks, [json!("netd"), json!("back"), json!("front")]);
}
