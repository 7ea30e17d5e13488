// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Throwaway network namespaces and what runs in them.
//!
//! Every object here removes what it created when dropped, also when the
//! test panics: [`Netns`] deletes its namespace after killing whatever still
//! runs in it (one made by [`Netns::of_process`] only names another's
//! namespace: dropping it removes the name alone), [`Process`] stops its process, [`BpfFs`] unmounts its private
//! bpffs. Names are unique per test process, so tests can run in parallel.
//! The harness never touches the root namespace's links, addresses or routes:
//! veths are created with both ends inside test namespaces.
//!
//! Processes are recorded in the ledger named by `NETD_TEST_LEDGER` (set by
//! `cargo xtask test`), which the leftover check reads after the suite.

use std::{
    ffi::OsStr,
    fs::{self, File, OpenOptions},
    io::Write as _,
    marker::PhantomData,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process: `nt<pid>x<seq><tag>`, short enough for
/// interface names when `tag` is at most 4 bytes.
pub fn unique_name(tag: &str) -> String {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("nt{}x{seq}{tag}", std::process::id())
}

/// Runs `cmd`, panicking with its stderr unless it succeeds; returns stdout.
pub fn check(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace under /run/netns, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Made by the test, so everything in it is the test's: dropping it
    /// kills what runs inside. False for a name given to another's
    /// namespace ([`Netns::of_process`]).
    owned: bool,
}

impl Netns {
    /// Creates a namespace with `lo` up.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        check(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name, owned: true };
        ns.ip("link set lo up");
        ns
    }

    /// A name under /run/netns for the network namespace of process `pid`
    /// (a container's), as `ip netns attach` gives it. Dropping it removes
    /// the name only: the namespace and what runs in it are its owner's.
    pub fn of_process(tag: &str, pid: u32) -> Self {
        let name = unique_name(tag);
        check(Command::new("ip").args(["netns", "attach", &name, &pid.to_string()]));
        Self { name, owned: false }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, as runtimes pass it.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside this namespace. It uses
    /// `nsenter --net`, which, unlike `ip netns exec`, keeps the mount
    /// namespace, so bpffs and cgroup mounts stay visible.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `ip -n NS ARGS...` (whitespace-separated), panicking on failure.
    pub fn ip(&self, args: &str) -> String {
        check(
            Command::new("ip")
                .args(["-n", &self.name])
                .args(args.split_whitespace()),
        )
    }

    /// Runs a shell script inside the namespace, panicking on failure;
    /// returns its stdout.
    pub fn sh(&self, script: &str) -> String {
        check(self.command("sh").args(["-c", script]))
    }

    /// Runs a shell script inside the namespace and returns its output,
    /// whatever its exit status.
    pub fn try_sh(&self, script: &str) -> Output {
        self.command("sh")
            .args(["-c", script])
            .output()
            .expect("starting sh")
    }

    /// Starts a long-running shell command inside the namespace.
    pub fn spawn(&self, script: &str) -> Process {
        let mut cmd = self.command("sh");
        // `exec` so the recorded PID is the program itself, not a shell.
        cmd.args(["-c", &format!("exec {script}")]);
        Process::spawn(cmd, script)
    }

    /// Enters the namespace on this thread until the guard drops.
    pub fn enter(&self) -> NetNsGuard {
        NetNsGuard::enter(&self.path())
    }

    /// PIDs of processes whose network namespace is this one.
    fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything still inside was started by this test (the namespace is
        // the test's own): stop it, or the namespace outlives its name.
        if self.owned {
            for pid in self.pids() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.pids().is_empty() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) && !thread::panicking() {
            panic!("could not delete network namespace {}", self.name);
        }
    }
}

/// Creates a veth pair with one end in each namespace, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&format!(
        "link add {a_if} type veth peer name {b_if} netns {}",
        b.name()
    ));
    a.ip(&format!("link set {a_if} up"));
    b.ip(&format!("link set {b_if} up"));
}

/// The calling thread's network namespace, moved into another one until
/// drop. Not `Send`: the namespace belongs to the thread that entered it.
pub struct NetNsGuard {
    original: File,
    _not_send: PhantomData<*const ()>,
}

impl NetNsGuard {
    pub fn enter(path: &Path) -> Self {
        let original = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let target = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
        Self {
            original,
            _not_send: PhantomData,
        }
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET).expect("restore netns");
    }
}

/// A process started by a test, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
}

impl Process {
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        record_in_ledger(child.id(), what);
        Self {
            child,
            what: what.to_owned(),
        }
    }

    /// Takes charge of an already spawned child (recorded in the ledger).
    pub fn adopt(child: Child, what: &str) -> Self {
        record_in_ledger(child.id(), what);
        Self {
            child,
            what: what.to_owned(),
        }
    }

    /// The captured stdout and stderr of an exited process spawned with
    /// piped output.
    pub fn take_output(&mut self) -> (String, String) {
        use std::io::Read as _;
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        (stdout, stderr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL after two seconds.
    pub fn stop(&mut self) {
        if self.has_exited() {
            return;
        }
        self.signal(Signal::SIGTERM);
        if self.wait_timeout(Duration::from_secs(2)).is_none() {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appends "PID START_TIME WHAT" to this test process's ledger file.
fn record_in_ledger(pid: u32, what: &str) {
    let Some(dir) = std::env::var_os("NETD_TEST_LEDGER") else {
        return;
    };
    let Some(start) = start_time(pid) else {
        return;
    };
    let path = Path::new(&dir).join(std::process::id().to_string());
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{pid} {start} {what}");
    }
}

/// Field 22 of /proc/PID/stat (start time since boot, in clock ticks).
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// A private bpffs instance mounted on a fresh directory, unmounted and
/// removed on drop. Tests pin here rather than under the machine's
/// /sys/fs/bpf.
#[derive(Debug)]
pub struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("bpf"));
        fs::create_dir_all(&path).expect("create bpffs mount point");
        mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mount bpffs on {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for BpfFs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.path);
    }
}

/// A tmpfs of a given size mounted on a directory the test owns, such as
/// an agent's state directory: a small filesystem to fill. Unmounted (and
/// its mount point removed) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Creates `path` and mounts a tmpfs of `bytes` (rounded up to pages by
    /// the kernel) on it, mode 0700.
    pub fn mount(path: &Path, bytes: u64) -> Self {
        fs::create_dir_all(path).expect("create tmpfs mount point");
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={bytes},mode=0700").as_str()),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", path.display()));
        Self {
            path: path.to_owned(),
        }
    }

    /// Changes the filesystem's size (what freeing space looks like).
    pub fn resize(&self, bytes: u64) {
        mount(
            None::<&str>,
            &self.path,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={bytes}").as_str()),
        )
        .unwrap_or_else(|e| panic!("resize tmpfs {}: {e}", self.path.display()));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A child cgroup v2 made for a test, under the hierarchy's root: the only
/// kind of cgroup tests attach socket programs to. Processes moved into it
/// are killed, and it is removed, on drop.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    pub fn new() -> Self {
        let root = netd::agent::config::cgroup2_root().expect("a cgroup2 hierarchy");
        let path = root.join(unique_name("cg"));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A shell command line that runs `script` inside this cgroup.
    pub fn wrap(&self, script: &str) -> String {
        format!("echo $$ > {}/cgroup.procs && {script}", self.path.display())
    }

    fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Default for Cgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(err) => {
                    if !thread::panicking() {
                        panic!("removing cgroup {}: {err}", self.path.display());
                    }
                    return;
                }
            }
        }
    }
}
