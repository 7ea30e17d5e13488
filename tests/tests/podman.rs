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
use serde_json::json;

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
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "netdnet",
            "plugins": [{
                "type": "netd",
                "socket": socket,
                "capabilities": {"portMappings": true},
            }],
        });
        fs::write(networks.join("netdnet.conflist"), conflist.to_string()).expect("conflist");
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

#[test]
fn podman_publishes_through_netd() {
    require_root!();
    let t = Topology::new(&[]);
    let scratch = Scratch::new();
    fs::create_dir_all(scratch.0.join("tmp")).expect("tmp");
    Podman::configure(&t.host, &scratch.0, &t.agent.socket());
    let podman = Podman {
        host: &t.host,
        dir: &scratch.0,
    };
    let _machine_dirs = CreatedDirs::note(&["/var/lib/cni", "/var/lib/containers", "/run/runc"]);
    let cgroups = CgroupParent::new("pod");
    let tar = scratch.0.join("rootfs.tar");
    busybox_tar(&scratch.0, &tar, "served by podman through netd\n");
    podman.run(&[
        "import",
        &tar.display().to_string(),
        "localhost/netd-test:1",
    ]);

    let id = podman.run(
        &[
            &[
                "run",
                "-d",
                "--network",
                "netdnet",
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
    // Whatever happens next, the container goes (and with it conmon, the
    // namespace podman made, its mounts).
    struct Remove<'a>(&'a Podman<'a>, String);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = self.0.command(&["rm", "-f", "-t", "0", &self.1]).output();
        }
    }
    let container = Remove(&podman, id.clone());

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
    let url = format!("http://{HOST_IP}:8080/");
    let mut page = None;
    for _ in 0..50 {
        page = t.fetch(&url);
        if page.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(page.as_deref(), Some("served by podman through netd\n"));
    // No iptables rule and no proxy: netd's datapath did it.
    let nat = t
        .host
        .sh("iptables-nft -t nat -S; iptables-legacy -t nat -S");
    assert!(!nat.contains("8080"), "{nat}");

    podman.run(&["rm", "-f", "-t", "0", &id]);
    std::mem::forget(container);
    assert_eq!(t.agent.json(&["ps"]), json!([]));
    assert_eq!(t.agent.json(&["ports"]), json!([]));
    assert_eq!(t.fetch(&url), None);
    podman.run(&["rmi", "-f", "localhost/netd-test:1"]);
}
