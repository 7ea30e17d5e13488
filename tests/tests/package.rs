// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The Debian package (`cargo xtask package`), named by `NETD_PACKAGE_DEB`
//! (`cargo xtask test` builds it and sets it): installed by dpkg into a
//! scratch root, its files checked, its unit verified by systemd, its
//! binary started the way the unit starts it (inside a network namespace,
//! with a bpffs, state and socket of the test's), ready by sd_notify, then
//! removed and purged.

use std::{
    collections::BTreeSet,
    fs,
    io::IoSliceMut,
    os::{
        fd::AsRawFd as _,
        unix::{fs::PermissionsExt as _, net::UnixDatagram},
    },
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use netd_tests::{
    agent::Agent,
    netns::{Netns, check, unique_name},
    require_root,
};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};

/// The package under test; `None` (the test says it is skipped) when
/// `NETD_PACKAGE_DEB` is unset.
fn package() -> Option<PathBuf> {
    let Some(deb) = std::env::var_os("NETD_PACKAGE_DEB") else {
        eprintln!("test skipped: NETD_PACKAGE_DEB unset");
        return None;
    };
    // A relative path is the workspace's (the runner starts tests in
    // their package's directory).
    let mut deb = PathBuf::from(deb);
    if deb.is_relative() && !deb.exists() {
        deb = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(deb);
    }
    assert!(
        deb.is_file(),
        "NETD_PACKAGE_DEB={}: no such file",
        deb.display()
    );
    Some(deb.canonicalize().expect("the package's path"))
}

/// A directory of the test's, removed on drop: the scratch root, the
/// notification socket.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("pkg"));
        fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `path` (absolute, as installed) inside `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A root dpkg installs into: an empty database.
fn make_root(root: &Path) {
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates"] {
        fs::create_dir_all(admin.join(dir)).expect("dpkg database directory");
    }
    for file in ["status", "available"] {
        fs::write(admin.join(file), "").expect("dpkg database file");
    }
}

/// `dpkg --root=ROOT ARGS`, which must succeed; its output.
fn dpkg(root: &Path, args: &[&str]) -> String {
    check(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-not-root", "--force-depends"])
            .args(args),
    )
}

/// `dpkg-query`'s `${field}` of netd in `root`'s database; `None` when
/// the database does not know netd.
fn query(root: &Path, field: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", &format!("-f=${{{field}}}"), "netd"])
        .output()
        .expect("dpkg-query");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `[Service]` settings of a unit file, in order (a key may repeat).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]"
            && let Some((key, value)) = line.split_once('=')
        {
            settings.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    settings
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    let values: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values.len(), 1, "the unit must set {key}= once: {values:?}");
    values[0]
}

/// The variables a systemd EnvironmentFile sets (`KEY=VALUE` lines, `#`
/// comments, optional quotes), and the names its commented-out lines
/// document.
fn environment_file(text: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut set = Vec::new();
    let mut documented = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        let (commented, line) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        documented.insert(key.to_owned());
        if !commented {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            set.push((key.to_owned(), value.to_owned()));
        }
    }
    (set, documented)
}

/// The environment variables `netd agent` reads (`[env: NAME=...]` in its
/// help).
fn agent_env_names(bin: &Path) -> BTreeSet<String> {
    let help = check(Command::new(bin).args(["agent", "--help"]));
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.split(['=', ']'])
                .next()
                .expect("a name")
                .trim()
                .to_owned()
        })
        .collect()
}

/// The pid of the sender of the first notification that says `READY=1`
/// within `timeout`, and everything that was notified.
fn wait_ready(socket: &UnixDatagram, timeout: Duration) -> (Option<i32>, Vec<String>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        let Ok(msg) = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) else {
            continue;
        };
        let pid = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                _ => None,
            })
        });
        let len = msg.bytes;
        let message = String::from_utf8_lossy(&buf[..len]).into_owned();
        let ready = message.lines().any(|l| l == "READY=1");
        seen.push(message);
        if ready {
            return (pid, seen);
        }
    }
    (None, seen)
}

/// The package installs into a scratch root with dpkg, holds the binary,
/// the unit, the default file (a conffile), the CNI plugin link, the man
/// pages and the completions; systemd accepts the unit; the binary started
/// as the unit's ExecStart says, with the default file's environment and
/// a NOTIFY_SOCKET, says READY=1 from its own pid, answers `netd status`,
/// stops on SIGTERM leaving its pins; removal keeps the conffile, purge
/// removes it.
#[test]
fn package_installs_and_its_unit_starts_netd() {
    let Some(deb) = package() else {
        return;
    };
    require_root!();
    let scratch = Scratch::new();
    let root = scratch.0.join("root");
    make_root(&root);

    let deb_arg = deb.display().to_string();
    dpkg(&root, &["-i", &deb_arg]);
    assert_eq!(
        query(&root, "Status").as_deref(),
        Some("install ok installed")
    );
    // No maintainer scripts: installing enables and starts nothing (the
    // uplinks are the administrator's to set first). Scripts added later
    // would run chrooted into this root, which has no shell: this test
    // must then give them one.
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        assert!(
            !root
                .join(format!("var/lib/dpkg/info/netd.{script}"))
                .exists(),
            "the package now has a {script}: see docs/packaging.md"
        );
    }

    // The file list, as dpkg recorded it.
    let listed: BTreeSet<String> = dpkg(&root, &["-L", "netd"])
        .lines()
        .map(str::to_owned)
        .collect();
    let bin_path = "/usr/bin/netd";
    let unit_path = "/usr/lib/systemd/system/netd.service";
    let default_path = "/etc/default/netd";
    let cni_path = "/usr/lib/cni/netd";
    let man = |name: &str| format!("/usr/share/man/man8/{name}.8.gz");
    let completions = [
        "/usr/share/bash-completion/completions/netd",
        "/usr/share/zsh/vendor-completions/_netd",
        "/usr/share/fish/vendor_completions.d/netd.fish",
    ];
    let mut expected: Vec<String> = [bin_path, unit_path, default_path, cni_path]
        .iter()
        .chain(completions.iter())
        .map(|p| (*p).to_owned())
        .collect();
    expected.extend(["netd", "netd-agent", "netd-publish", "netd-status"].map(man));
    for path in &expected {
        assert!(listed.contains(path), "{path} not installed: {listed:#?}");
    }
    for path in &listed {
        assert!(
            inside(&root, path).symlink_metadata().is_ok(),
            "dpkg lists {path}, which is not in the root"
        );
    }
    let conffiles = query(&root, "Conffiles").expect("conffiles");
    assert!(conffiles.contains(default_path), "conffiles: {conffiles}");

    // The binary: executable, of the package's version.
    let bin = inside(&root, bin_path);
    let mode = fs::metadata(&bin).expect("netd").permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "{bin_path} mode {mode:o}");
    let version = query(&root, "Version").expect("version");
    let upstream = version.rsplit_once('-').map_or(version.as_str(), |v| v.0);
    assert_eq!(
        check(Command::new(&bin).arg("--version")).trim(),
        format!("netd {upstream}")
    );

    // The CNI plugin: a link that resolves, inside the root, to the binary,
    // and answers as a plugin.
    let cni = inside(&root, cni_path);
    let target = fs::read_link(&cni).expect("the CNI plugin is a link");
    let resolved = if target.is_absolute() {
        inside(&root, &target.display().to_string())
    } else {
        cni.parent().expect("parent").join(&target)
    };
    assert_eq!(
        resolved.canonicalize().expect("the CNI link resolves"),
        bin.canonicalize().expect("netd"),
        "{cni_path} -> {}",
        target.display()
    );
    let version_answer = check(Command::new(&cni).env("CNI_COMMAND", "VERSION"));
    assert!(
        version_answer.contains("supportedVersions"),
        "{version_answer}"
    );

    // Man pages: gzip, roff with a title line.
    for path in listed
        .iter()
        .filter(|p| p.starts_with("/usr/share/man/") && p.ends_with(".gz"))
    {
        let page = check(Command::new("gzip").arg("-dc").arg(inside(&root, path)));
        assert!(page.contains(".TH "), "{path} is no man page:\n{page}");
    }
    // Completions: not empty; bash's registers for netd.
    for path in completions {
        let len = fs::metadata(inside(&root, path)).expect("completion").len();
        assert!(len > 0, "{path} is empty");
    }
    let bash = check(
        Command::new("bash")
            .arg("-c")
            .arg("source \"$1\" && complete -p netd")
            .arg("bash")
            .arg(inside(&root, completions[0])),
    );
    assert!(bash.contains("netd"), "{bash}");

    // The unit, as systemd reads it. verify only warns about a bad line:
    // any output fails the test. The man pages it names are checked here
    // (verify would look on this machine, not in the root).
    let unit = fs::read_to_string(inside(&root, unit_path)).expect("unit");
    let host_units = root.join("lib/systemd/system");
    fs::create_dir_all(&host_units).expect("unit directory");
    for entry in fs::read_dir("/lib/systemd/system").expect("systemd's units") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "target") {
            fs::copy(&path, host_units.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(unit_path)
        .output()
        .expect("systemd-analyze");
    let said = text(&verify);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {unit_path}: {}\n{said}",
        verify.status
    );
    for line in unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
    {
        for doc in line.split_whitespace() {
            if let Some(page) = doc.strip_prefix("man:") {
                let name = page.trim_end_matches("(8)");
                assert!(
                    listed.contains(&man(name)),
                    "the unit names {doc}, not installed"
                );
            }
        }
    }
    let service = service_settings(&unit);
    assert_eq!(setting(&service, "Type"), "notify");
    assert_eq!(setting(&service, "NotifyAccess"), "main");

    // The default file documents exactly the agent's variables, and the
    // unit reads it.
    let env_file = setting(&service, "EnvironmentFile");
    let env_file = env_file.strip_prefix('-').unwrap_or(env_file);
    assert_eq!(env_file, default_path);
    let (defaults, documented) =
        environment_file(&fs::read_to_string(inside(&root, env_file)).expect("default file"));
    assert_eq!(
        documented,
        agent_env_names(&bin),
        "{default_path} must document every variable of `netd agent`, and no other"
    );

    // ExecStart: the installed binary, then `agent` and its arguments.
    let exec = setting(&service, "ExecStart");
    let mut words = exec.split_whitespace();
    let program = words.next().expect("ExecStart's program");
    assert!(program.starts_with('/'), "ExecStart={exec}");
    let program = inside(&root, program);
    assert_eq!(program, bin, "ExecStart={exec} runs something else");
    let args: Vec<&str> = words.collect();
    assert_eq!(args.first(), Some(&"agent"), "ExecStart={exec}");

    // Started as systemd would, with the test's namespace, bpffs, state,
    // socket and cgroup in place of the machine's (the Agent sets those,
    // after the default file's variables).
    let notify_path = scratch.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    setsockopt(&notify, sockopt::PassCred, &true).expect("SO_PASSCRED");
    let ns = Netns::new("pkg");
    let mut agent = Agent::new(&ns, &args[1..]);
    agent.use_binary(&bin);
    let private = ["NETD_SOCKET", "NETD_STATE_DIR", "NETD_BPFFS", "NETD_CGROUP"];
    for (key, value) in defaults
        .iter()
        .filter(|(k, _)| !private.contains(&k.as_str()))
    {
        agent.next_launch_env(key, value);
    }
    agent.next_launch_env("NOTIFY_SOCKET", &notify_path.display().to_string());
    agent.launch();
    let pid = agent.pid().expect("agent running");
    let (sender, seen) = wait_ready(&notify, Duration::from_secs(10));
    let sender =
        sender.unwrap_or_else(|| panic!("no READY=1 on NOTIFY_SOCKET: {seen:?}\n{}", agent.log()));
    assert_eq!(
        sender, pid as i32,
        "READY=1 must come from the main process (NotifyAccess=main)"
    );
    let status = agent.ok(&["status"]);
    assert!(!status.trim().is_empty(), "netd status said nothing");

    // SIGTERM (systemctl stop, restart) stops the agent and leaves the
    // datapath pinned.
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
    let pins = fs::read_dir(agent.bpffs()).map_or(0, Iterator::count);
    assert!(pins > 0, "SIGTERM removed the pins");
    drop(agent);
    drop(ns);

    // Removal keeps the conffile; purge removes it.
    dpkg(&root, &["-r", "netd"]);
    for path in [bin_path, unit_path, cni_path, completions[0], &man("netd")] {
        assert!(
            inside(&root, path).symlink_metadata().is_err(),
            "{path} left after removal"
        );
    }
    assert!(
        inside(&root, default_path).exists(),
        "removal must keep the conffile {default_path}"
    );
    assert_eq!(
        query(&root, "Status").as_deref(),
        Some("deinstall ok config-files")
    );
    dpkg(&root, &["-P", "netd"]);
    assert!(
        !inside(&root, default_path).exists(),
        "purge must remove {default_path}"
    );
    assert!(
        query(&root, "Status").is_none_or(|s| s.contains("not-installed")),
        "netd still known after purge"
    );
}
