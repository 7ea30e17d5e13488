// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! A real dockerd (Debian's docker.io, 20.10) for the Docker driver's and
//! Docker Compose's tests, with netd's driver discoverable as `netd`.
//!
//! dockerd runs inside the topology's host namespace and in a private mount
//! namespace of its own (`unshare --mount`), where tmpfs mounts hide the
//! machine's /run and /etc/docker: what dockerd, containerd and runc write
//! there (plugin spec, trust key, shim sockets) vanishes with that
//! namespace. Its data root, exec root and socket live in a scratch
//! directory; containers' cgroups under a cgroup parent of the test's own;
//! iptables stays on (Docker's default), in the host namespace only.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    netns::{Netns, Process, unique_name},
    rootfs,
    topology::{Scratch, Topology},
};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client; /usr/local/bin/docker may be another one.
pub const DOCKER: &str = "/usr/bin/docker";
/// The image [`Dockerd::import_busybox`] makes.
pub const IMAGE: &str = "netd-test/busybox:latest";
/// The page under /www in [`IMAGE`].
pub const PAGE: &str = "hello from a Docker container on netd\n";

/// The network namespace or mount namespace a process is in, as the kernel
/// names it (`net:[4026532...]`).
pub fn ns_of(pid: &str, kind: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// PIDs of every process whose `kind` namespace is `ns`.
fn pids_in_ns(kind: &str, ns: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(pid) = name.parse::<i32>()
            && ns_of(&name, kind).as_deref() == Some(ns)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The mount points of every cgroup hierarchy, v1 and v2.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            matches!(fields.get(dash + 1), Some(&"cgroup" | &"cgroup2"))
                .then(|| PathBuf::from(fields[4]))
        })
        .collect()
}

/// Every cgroup directory at or under `dir`, deepest first.
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut tree = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                tree.extend(cgroup_tree(&entry.path()));
            }
        }
    }
    if dir.join("cgroup.procs").exists() {
        tree.push(dir.to_owned());
    }
    tree
}

/// dockerd in the topology's host namespace and a private mount namespace,
/// with everything it writes under a scratch directory. Dropping it removes
/// its containers through Docker, stops dockerd, then kills whatever it left
/// (containerd, shims, containers) and removes its cgroups.
pub struct Dockerd {
    process: Option<Process>,
    /// A process that keeps dockerd's mount namespace (its /run, the shim
    /// sockets) alive across a restart of dockerd.
    keeper: Option<Process>,
    /// dockerd's mount namespace: every process in it is this dockerd's or
    /// the keeper (it is nobody else's, so the sweep may kill all of it).
    mount_ns: Option<String>,
    /// The host namespace dockerd runs in.
    host: PathBuf,
    /// dockerd's command line, the same at every (re)start.
    command: String,
    /// The cgroup parent of the containers, in every hierarchy.
    cgroup_parent: String,
    dir: PathBuf,
    // Dropped last: removed once every process is gone.
    _scratch: Scratch,
}

impl Dockerd {
    /// Starts dockerd in `host` with netd's driver discoverable as `netd`
    /// at `plugin_socket`, and waits until it answers.
    pub fn start(host: &Netns, plugin_socket: &Path) -> Self {
        Self::start_with(host, plugin_socket, &[])
    }

    /// [`Dockerd::start`] with more of dockerd's flags (`--live-restore`).
    pub fn start_with(host: &Netns, plugin_socket: &Path, flags: &[&str]) -> Self {
        assert!(
            Path::new(DOCKERD).exists(),
            "{DOCKERD} not found: this test needs Debian's docker.io"
        );
        // tmpfs goes over existing directories only: nothing is created on
        // the machine's own filesystem.
        assert!(
            Path::new("/etc/docker").is_dir(),
            "/etc/docker is missing (docker.io ships it)"
        );
        let scratch = Scratch::new();
        let dir = scratch.0.clone();
        let cgroup_parent = unique_name("dk");
        let d = dir.display();
        let command = format!(
            "exec {DOCKERD} --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid \
  --host unix://{d}/docker.sock --storage-driver vfs \
  --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent /{cgroup_parent} {flags} \
  >>{d}/dockerd.log 2>&1",
            flags = flags.join(" "),
        );
        // /run: shim sockets (/run/containerd/s), /run/docker. /etc/docker:
        // the plugin spec and dockerd's trust key (key.json). /run/netns is
        // unmounted first: its copies in this namespace would hold other
        // tests' namespaces alive until dockerd exits.
        let script = format!(
            "set -e
umount -l /run/netns 2>/dev/null || true
mount -t tmpfs -o mode=0755 netd-test-run /run
mount -t tmpfs -o mode=0755 netd-test-etc-docker /etc/docker
mkdir /etc/docker/plugins
echo 'unix://{socket}' > /etc/docker/plugins/netd.spec
{command}",
            socket = plugin_socket.display(),
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", host.path().display()))
            .args(["--", "unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", &script]);
        let mut dockerd = Self {
            // nsenter, unshare and sh exec each other: this is dockerd.
            process: Some(Process::spawn(cmd, "dockerd")),
            keeper: None,
            mount_ns: None,
            host: host.path(),
            command,
            cgroup_parent,
            dir,
            _scratch: scratch,
        };
        // Known before dockerd is ready, so that a dockerd that fails to
        // come up is still swept by its mount namespace. Until unshare has
        // run, the process is in the test's own namespace: wait it out.
        let pid = dockerd.pid().to_string();
        let own = ns_of("self", "mnt");
        let mount_ns = crate::within(Duration::from_secs(10), || {
            ns_of(&pid, "mnt").filter(|ns| Some(ns) != own.as_ref())
        })
        .expect("dockerd must run in a mount namespace of its own");
        dockerd.mount_ns = Some(mount_ns);
        dockerd.wait_ready();
        let mut keeper = Command::new("nsenter");
        keeper
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            // Dies with the test even if the test is killed.
            .args([
                "--",
                "setpriv",
                "--pdeathsig",
                "KILL",
                "--",
                "sleep",
                "infinity",
            ]);
        dockerd.keeper = Some(Process::spawn(keeper, "dockerd's mount namespace keeper"));
        dockerd
    }

    /// Waits until dockerd answers, panicking with its log if it exits or
    /// takes over a minute.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker(&["info"]).status.success() {
            let exited = self.process.as_mut().is_some_and(Process::has_exited);
            if exited || Instant::now() > deadline {
                panic!("dockerd did not come up:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops dockerd with SIGTERM and starts it again, in the same mount
    /// namespace with the same flags, as `systemctl restart docker` would
    /// (with `--live-restore`, its containers keep running meanwhile).
    pub fn restart(&mut self) {
        let mut process = self.process.take().expect("dockerd running");
        process.signal(Signal::SIGTERM);
        assert!(
            process.wait_timeout(Duration::from_secs(30)).is_some(),
            "dockerd ignored SIGTERM for 30 s:\n{}",
            self.log()
        );
        let keeper = self.keeper.as_ref().expect("mount namespace keeper").pid();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.display()))
            .arg(format!("--mount=/proc/{keeper}/ns/mnt"))
            .args(["--", "sh", "-c", &self.command]);
        self.process = Some(Process::spawn(cmd, "dockerd"));
        self.wait_ready();
    }

    /// The environment of a Docker client (docker, docker-compose) talking
    /// to this dockerd, its own files (config.json) in the scratch too.
    pub fn client_env(&self) -> [(&'static str, String); 2] {
        [
            (
                "DOCKER_HOST",
                format!("unix://{}", self.dir.join("docker.sock").display()),
            ),
            (
                "DOCKER_CONFIG",
                self.dir.join("client").display().to_string(),
            ),
        ]
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("dockerd running").pid()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker client against this dockerd.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .envs(self.client_env())
            .args(args)
            .output()
            .expect("run docker")
    }

    /// Runs `docker ARGS`, asserting success; returns stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n--- dockerd log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs `docker ARGS`, asserting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(!out.status.success(), "docker {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Imports a one-binary image: busybox-static and a page under /www.
    pub fn import_busybox(&self) {
        let tar = self.dir.join("rootfs.tar");
        rootfs::busybox_tar(&self.dir, &tar, PAGE);
        self.ok(&["import", &tar.to_string_lossy(), IMAGE]);
    }

    /// Stops dockerd (SIGTERM, then SIGKILL), then kills what it leaves:
    /// containers by their cgroups, containerd and shims by the mount
    /// namespace. Removes the containers' cgroups. Returns what it had to
    /// kill or could not remove, for the test to assert on.
    pub fn stop(&mut self) -> Vec<String> {
        let mut forced = Vec::new();
        if let Some(mut process) = self.process.take() {
            process.signal(Signal::SIGTERM);
            if process.wait_timeout(Duration::from_secs(30)).is_none() {
                forced.push("dockerd ignored SIGTERM for 30 s".to_owned());
            }
            // Drop: SIGKILL if it still runs.
        }
        // Not something dockerd left: it only held the namespace.
        drop(self.keeper.take());
        let groups: Vec<PathBuf> = cgroup_mounts()
            .iter()
            .flat_map(|mount| cgroup_tree(&mount.join(&self.cgroup_parent)))
            .collect();
        for group in &groups {
            for pid in fs::read_to_string(group.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                forced.push(format!("container process {pid} in {}", group.display()));
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(ns) = &self.mount_ns {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = pids_in_ns("mnt", ns);
                if left.is_empty() {
                    break;
                }
                for pid in left {
                    if Instant::now() > deadline {
                        forced.push(format!("process {pid} left in dockerd's mount namespace"));
                    }
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if Instant::now() > deadline + Duration::from_secs(5) {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        for group in groups {
            let deadline = Instant::now() + Duration::from_secs(5);
            // A cgroup whose last process just died may be busy a moment.
            while let Err(err) = fs::remove_dir(&group) {
                if err.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() > deadline {
                    forced.push(format!("cgroup {} not removed: {err}", group.display()));
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        forced
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.process.is_some() {
            // Let Docker undo its containers first (Revoke, Leave,
            // DeleteEndpoint on netd), bounded in time.
            let listed = Command::new("timeout")
                .args(["30", DOCKER, "ps", "-aq"])
                .envs(self.client_env())
                .output();
            let ids = listed
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            if !ids.trim().is_empty() {
                let _ = Command::new("timeout")
                    .args(["60", DOCKER, "rm", "-f"])
                    .args(ids.split_whitespace())
                    .envs(self.client_env())
                    .output();
            }
        }
        let forced = self.stop();
        if !forced.is_empty() && !thread::panicking() {
            panic!("dockerd left things behind: {forced:?}");
        }
    }
}

/// The `-A` lines of the NAT table in the host namespace, from both
/// iptables backends (Docker uses whichever `iptables` is).
pub fn nat_rules(host: &Netns) -> Vec<String> {
    ["iptables-nft", "iptables-legacy"]
        .iter()
        .flat_map(|iptables| {
            let out = host.try_sh(&format!("{iptables} -t nat -S"));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A"))
                .map(|l| format!("{iptables}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The command lines of docker-proxy processes in the host namespace or
/// children of dockerd.
pub fn docker_proxies(host: &Netns, dockerd: u32) -> Vec<String> {
    let host_ns = format!(
        "net:[{}]",
        fs::metadata(host.path()).expect("host netns").ino()
    );
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args[0].ends_with("docker-proxy") {
            continue;
        }
        let parent = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if parent == Some(dockerd) || ns_of(&pid, "net").as_deref() == Some(&host_ns) {
            found.push(args.join(" "));
        }
    }
    found
}

/// Fetches `url` from the outside client until it answers (a container's
/// server takes a moment to listen), or `None` after 10 s.
pub fn fetch_soon(t: &Topology, url: &str) -> Option<String> {
    crate::within(Duration::from_secs(10), || t.fetch(url))
}
