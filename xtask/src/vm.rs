// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `cargo xtask test --kernel 6.1`: netd's privileged tests on a kernel
//! other than the running one, in a QEMU VM.
//!
//! The VM boots Debian's kernel package (downloaded, checked against a
//! pinned SHA-256 and unpacked under target/vm, never installed) with an
//! initramfs made here: busybox-static, an `/init` script and the kernel's
//! networking modules. `/init` mounts the host's root read-only over 9p and
//! runs the host-built test binaries in a chroot of it, so nothing is built
//! for the guest; a second, writable 9p share (target/vm/work, mounted at
//! the same path in the guest) takes the results back. The guest has no
//! network device: the tests make their own namespaces, as on the host.
//!
//! The guest's console is streamed to stderr (and kept in
//! target/vm/work/console.log); the guest powers itself off when the tests
//! are done, and a host-side watchdog kills QEMU if its console falls
//! silent for longer than a test may take.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    fs,
    io::{self, BufRead as _, BufReader, BufWriter, Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::cmd::{self, cargo, workspace_root};

/// A kernel the tests can run on: a Debian package pinned by version and
/// checksum, so that every run boots the same kernel.
pub struct Kernel {
    /// What `--kernel` accepts.
    series: &'static str,
    /// The Debian package holding the kernel image and its modules.
    package: &'static str,
    /// The package's exact version: `apt-get download PACKAGE=VERSION`.
    version: &'static str,
    /// SHA-256 of the .deb (`apt-cache show PACKAGE=VERSION`).
    sha256: &'static str,
}

/// Debian 12's kernel, from bookworm-security. When Debian stops serving
/// this build, pin the current one: `apt-cache policy
/// 'linux-image-6.1.0-*-amd64'` names it, `apt-cache show PACKAGE=VERSION`
/// gives its SHA256.
const KERNELS: &[Kernel] = &[Kernel {
    series: "6.1",
    package: "linux-image-6.1.0-56-amd64",
    version: "6.1.192-2",
    sha256: "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1",
}];

impl Kernel {
    /// The kernel `--kernel SERIES` names; anything else is refused in one
    /// line before anything is installed or built.
    pub fn from_series(series: &str) -> anyhow::Result<&'static Self> {
        KERNELS
            .iter()
            .find(|kernel| kernel.series == series)
            .with_context(|| {
                let known: Vec<String> = KERNELS
                    .iter()
                    .map(|k| format!("{} (Debian's {})", k.series, k.package))
                    .collect();
                format!(
                    "--kernel {series}: no VM image for that kernel; --kernel accepts {}",
                    known.join(", ")
                )
            })
    }

    /// `uname -r` of the booted kernel: the package name without its prefix.
    fn release(&self) -> &'static str {
        self.package
            .strip_prefix("linux-image-")
            .expect("kernel packages are named linux-image-RELEASE")
    }

    fn deb_name(&self) -> String {
        format!("{}_{}_amd64.deb", self.package, self.version)
    }
}

/// Where everything about the VM lives: the downloaded package, the
/// unpacked kernel, the initramfs and the work directory the guest writes.
fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

/// The package whose test binaries run in the VM: netd's privileged tests
/// and their harnesses. The other crates' unit tests do not depend on the
/// kernel and run on the host.
const TEST_PACKAGE: &str = "netd-tests";

/// How long one test may take in the guest. Under software emulation a
/// test takes 3 to 40 times as long as on the host: the slowest seen,
/// bad_input::api_requests (CPU-bound, 18 s on the host), took 12 minutes.
const TEST_TIMEOUT: Duration = Duration::from_secs(900);

/// Booting to `/init`'s first line takes about 5 s under software
/// emulation; the watchdog allows that much silence before it, for a
/// loaded machine.
const BOOT_SILENCE_LIMIT: Duration = Duration::from_secs(180);

/// The guest prints a line as each test starts and ends, and kills a test
/// after [`TEST_TIMEOUT`]: a longer silence means the guest hangs.
const TEST_SILENCE_LIMIT: Duration = TEST_TIMEOUT.saturating_add(Duration::from_secs(60));

/// Guest memory: the agent preallocates its conntrack table (84 MiB by
/// default) and tests run several agents.
const GUEST_MEMORY_MIB: u32 = 2048;
const GUEST_CPUS: u32 = 2;

/// 9p mount tags of the two shares.
const ROOT_TAG: &str = "hostroot";
const WORK_TAG: &str = "work";
/// The workspace, shared again on its own: a checkout under /tmp, /var/tmp
/// or /run would be hidden by the guest's tmpfs mounts there.
const WORKSPACE_TAG: &str = "workspace";

/// Starts the lines the guest's scripts print on the console, apart from
/// the kernel's and the tests' own.
const CONSOLE_PREFIX: &str = "netd-vm:";

/// Boots `kernel` and runs the tests of [`TEST_PACKAGE`] matching
/// `filters` in it; prints one line per test and fails unless every test
/// passed. Expects the workspace built (`cmd::build_workspace`).
pub fn run_tests(kernel: &Kernel, filters: &[String]) -> anyhow::Result<()> {
    let tests = list_tests(filters)?;
    if tests.is_empty() {
        bail!("no test of {TEST_PACKAGE} matches {filters:?}");
    }
    let image = prepare_kernel(kernel)?;
    let work = vm_dir().join("work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    fs::create_dir_all(work.join("logs"))?;
    let script = work.join("guest.sh");
    fs::write(&script, guest_script(&work, &tests))?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let initramfs = vm_dir().join("initramfs.cpio");
    build_initramfs(&initramfs, &image, &work)
        .with_context(|| format!("building {}", initramfs.display()))?;

    eprintln!(
        "vm: booting {} {} to run {} test(s); the guest's console follows",
        kernel.package,
        kernel.version,
        tests.len()
    );
    let started = Instant::now();
    let outcome = boot(&image, &initramfs, &work)?;
    let elapsed = started.elapsed();

    let report = Report::read(&work, &tests)?;
    report.print(kernel, &tests, &work, elapsed);
    if let Outcome::Hung(silence) = outcome {
        bail!(
            "the VM's console was silent for {} s: killed it as hung",
            silence.as_secs()
        );
    }
    report.verdict(&tests)
}

/// One test in the VM: a test function in one of the package's test
/// binaries, named as cargo-nextest names it.
struct TestCase {
    /// `netd-tests` for the library's unit tests, `netd-tests::publish`
    /// for tests/publish.rs, `netd-tests::bin/netd-bench` for a binary's.
    binary_id: String,
    executable: PathBuf,
    /// The package's directory: cargo runs tests from there.
    cwd: PathBuf,
    name: String,
}

/// The tests of [`TEST_PACKAGE`], from cargo's list of its test binaries
/// and each binary's own list, that `filters` select: a test runs when a
/// filter is part of its binary id or of its name (none: all). Ignored
/// tests are left out, as on the host.
fn list_tests(filters: &[String]) -> anyhow::Result<Vec<TestCase>> {
    let out = cargo()
        .args([
            "test",
            "--no-run",
            "--message-format=json",
            "--package",
            TEST_PACKAGE,
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("asking cargo for the test binaries")?;
    ensure!(
        out.status.success(),
        "`cargo test --no-run --package {TEST_PACKAGE}` failed: {}",
        out.status
    );
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some((binary_id, executable, cwd)) = test_binary(&message) else {
            continue;
        };
        let ignored: BTreeSet<String> = list_binary(&executable, true)?.into_iter().collect();
        for name in list_binary(&executable, false)? {
            let selected = filters.is_empty()
                || filters
                    .iter()
                    .any(|f| binary_id.contains(f.as_str()) || name.contains(f.as_str()));
            if selected && !ignored.contains(&name) {
                tests.push(TestCase {
                    binary_id: binary_id.clone(),
                    executable: executable.clone(),
                    cwd: cwd.clone(),
                    name,
                });
            }
        }
    }
    tests.sort_by(|a, b| (&a.binary_id, &a.name).cmp(&(&b.binary_id, &b.name)));
    Ok(tests)
}

/// The binary id, executable and package directory of a test binary from
/// one line of `cargo test --no-run --message-format=json`; `None` for any
/// other message.
fn test_binary(message: &serde_json::Value) -> Option<(String, PathBuf, PathBuf)> {
    if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
        return None;
    }
    let executable = PathBuf::from(message["executable"].as_str()?);
    let cwd = Path::new(message["manifest_path"].as_str()?)
        .parent()?
        .to_path_buf();
    // "path+file:///work/main/tests#netd-tests@0.1.0", or without the name
    // when it is the directory's: "path+file:///work/main/netd#0.1.0".
    let (url, fragment) = message["package_id"].as_str()?.split_once('#')?;
    let package = match fragment.split_once('@') {
        Some((name, _version)) => name,
        None => url.rsplit('/').next()?,
    };
    let target = message["target"]["name"].as_str()?;
    let kinds = message["target"]["kind"].as_array()?;
    let kind = |k: &str| kinds.iter().any(|v| v == k);
    let binary_id = if kind("lib") {
        package.to_owned()
    } else if kind("bin") {
        format!("{package}::bin/{target}")
    } else {
        format!("{package}::{target}")
    };
    Some((binary_id, executable, cwd))
}

/// The test names a libtest binary lists (only its ignored ones with
/// `ignored`).
fn list_binary(executable: &Path, ignored: bool) -> anyhow::Result<Vec<String>> {
    let mut list = Command::new(executable);
    list.args(["--list", "--format", "terse"]);
    if ignored {
        list.arg("--ignored");
    }
    let out = list
        .output()
        .with_context(|| format!("listing the tests of {}", executable.display()))?;
    ensure!(
        out.status.success(),
        "{} --list failed: {}",
        executable.display(),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// The unpacked kernel: its image and the modules the initramfs carries.
struct KernelImage {
    release: &'static str,
    vmlinuz: PathBuf,
    /// A tree holding lib/modules/RELEASE, with busybox depmod's
    /// modules.dep and modules.alias for just these modules.
    modules_root: PathBuf,
}

/// Module directories, under lib/modules/RELEASE/kernel, whose every
/// module goes into the initramfs (with the modules they depend on): what
/// netd and its tests make the kernel load (veth, bridge, sch_ingress for
/// clsact, cls_bpf, netfilter for the tests that check netd adds no rule,
/// vxlan, ipvlan and 802.1Q for LAN networks, the socket diagnostics) and what mounting the host's root needs
/// (virtio, 9p). Wireless, storage and hardware drivers stay out.
const MODULE_TREES: &[&str] = &[
    // Algorithms modules ask for by name when they load, which modules.dep
    // does not list: nf_tables needs libcrc32c, which wants crc32c.
    "arch/x86/crypto",
    "crypto",
    "drivers/net/ipvlan",
    "drivers/net/vxlan",
    "drivers/virtio",
    "fs/9p",
    "net/802",
    "net/8021q",
    "net/9p",
    "net/bridge",
    "net/core",
    "net/ipv4",
    "net/ipv6",
    "net/llc",
    "net/netfilter",
    "net/netlink",
    "net/packet",
    "net/sched",
    "net/unix",
];

/// Directories whose modules directly in them go into the initramfs, not
/// their subdirectories': drivers/net has the virtual devices (veth,
/// dummy, macvlan, ipvlan, tun) and, below, the hardware drivers.
const MODULE_DIRS_SHALLOW: &[&str] = &["drivers/net"];

/// Downloads, checks and unpacks `kernel` once; later runs reuse
/// target/vm/PACKAGE_VERSION while its `ready` file names the module
/// selection this code makes (so a change to it unpacks again).
fn prepare_kernel(kernel: &Kernel) -> anyhow::Result<KernelImage> {
    let dir = vm_dir().join(format!("{}_{}", kernel.package, kernel.version));
    let image = KernelImage {
        release: kernel.release(),
        vmlinuz: dir.join("vmlinuz"),
        modules_root: dir.join("modules"),
    };
    let ready = dir.join("ready");
    let selection = format!(
        "modules from {} and directly in {}\n",
        MODULE_TREES.join(" "),
        MODULE_DIRS_SHALLOW.join(" ")
    );
    if fs::read_to_string(&ready).is_ok_and(|made| made == selection) {
        eprintln!("vm: {}: present", dir.display());
        return Ok(image);
    }
    let deb = fetch_package(kernel)?;
    eprintln!("vm: unpacking {} into {}", deb.display(), dir.display());
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let unpacked = dir.join("unpacked");
    fs::create_dir_all(&unpacked)?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    // Debian's package has no modules.dep: depmod makes it on installation.
    depmod(&unpacked, kernel.release())?;
    let release_dir = |root: &Path| root.join("lib/modules").join(kernel.release());
    let from = release_dir(&unpacked);
    let to = release_dir(&image.modules_root);
    let dependencies = read_modules_dep(&from.join("modules.dep"))?;
    let wanted = select_modules(&dependencies);
    for module in &wanted {
        let target = to.join(module);
        fs::create_dir_all(target.parent().expect("a module path has a directory"))?;
        fs::copy(from.join(module), &target).with_context(|| format!("copying module {module}"))?;
    }
    for meta in ["modules.builtin", "modules.order"] {
        fs::copy(from.join(meta), to.join(meta)).with_context(|| format!("copying {meta}"))?;
    }
    depmod(&image.modules_root, kernel.release())?;
    fs::copy(
        unpacked.join(format!("boot/vmlinuz-{}", kernel.release())),
        &image.vmlinuz,
    )
    .context("the package holds no kernel image")?;
    fs::remove_dir_all(&unpacked)?;
    fs::write(&ready, selection)?;
    Ok(image)
}

/// The pinned package in target/vm, downloaded unless a copy with the
/// right checksum is there.
fn fetch_package(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let dir = vm_dir();
    fs::create_dir_all(&dir)?;
    let deb = dir.join(kernel.deb_name());
    if deb.exists() && sha256(&deb)? == kernel.sha256 {
        return Ok(deb);
    }
    let spec = format!("{}={}", kernel.package, kernel.version);
    let download = || {
        cmd::run(
            Command::new("apt-get")
                .args(["download", "-q", &spec])
                .current_dir(&dir),
        )
    };
    if download().is_err() {
        // Package lists on a fresh machine may predate the pinned version.
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
        download().with_context(|| {
            format!(
                "downloading {spec}: if Debian no longer serves it, pin the current build in KERNELS (xtask/src/vm.rs)"
            )
        })?;
    }
    let actual = sha256(&deb)?;
    if actual != kernel.sha256 {
        let _ = fs::remove_file(&deb);
        bail!(
            "{} has SHA-256 {actual}, not the pinned {}: removed",
            deb.display(),
            kernel.sha256
        );
    }
    Ok(deb)
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    ensure!(out.status.success(), "sha256sum {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text.split_whitespace().next().unwrap_or_default();
    Ok(digest.to_owned())
}

/// busybox's depmod: writes modules.dep and modules.alias under
/// ROOT/lib/modules/RELEASE in the format busybox's modprobe reads in the
/// guest.
fn depmod(root: &Path, release: &str) -> anyhow::Result<()> {
    cmd::run(
        Command::new(BUSYBOX)
            .arg("depmod")
            .arg("-b")
            .arg(root)
            .arg(release),
    )
}

/// modules.dep as a map from each module (a path relative to
/// lib/modules/RELEASE) to the modules it needs.
fn read_modules_dep(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, needs)| {
            let needs = needs.split_whitespace().map(str::to_owned).collect();
            (module.to_owned(), needs)
        })
        .collect())
}

/// The modules of [`MODULE_TREES`] and [`MODULE_DIRS_SHALLOW`] and every
/// module they need.
fn select_modules(dependencies: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let chosen = |module: &str| {
        let Some(path) = module.strip_prefix("kernel/") else {
            return false;
        };
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        MODULE_TREES
            .iter()
            .any(|tree| dir == *tree || dir.starts_with(&format!("{tree}/")))
            || MODULE_DIRS_SHALLOW.contains(&dir)
    };
    let mut wanted = BTreeSet::new();
    let mut pending: Vec<&str> = dependencies
        .keys()
        .map(String::as_str)
        .filter(|m| chosen(m))
        .collect();
    while let Some(module) = pending.pop() {
        if wanted.insert(module.to_owned()) {
            pending.extend(
                dependencies
                    .get(module)
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            );
        }
    }
    wanted
}

/// The guest's `/init` (PID 1): mounts the host's root and the work
/// share, runs the test script in a chroot of the host's root, powers off.
///
/// The tests run in a chroot rather than after `switch_root` so that the
/// initramfs stays the root of PID 1 and of the kernel's threads: the
/// kernel resolves `/proc/sys/kernel/modprobe` there, where busybox's
/// modprobe and this kernel's modules are (the host has none for it).
fn init_script(work: &Path) -> String {
    let work = work.display();
    let workspace = workspace_root();
    let workspace = workspace.display();
    format!(
        r#"#!/bin/busybox sh
# PID 1 of netd's test VM; written by xtask/src/vm.rs.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
say() {{ echo "{CONSOLE_PREFIX} $*"; }}
halt() {{ sync; poweroff -f; }}
fatal() {{ say "$*"; halt; }}
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Modules the kernel asks for (a veth, a qdisc, a netfilter table) are
# loaded by busybox's modprobe from /lib/modules here.
echo /sbin/modprobe > /proc/sys/kernel/modprobe
modprobe -a virtio_pci 9pnet_virtio 9p || fatal "cannot load the 9p modules"
# 9p over virtio, 512 KiB per message: bigger messages are clamped by
# this kernel's transport.
opts=trans=virtio,version=9p2000.L,msize=512000
# The host's root changes under us only if someone rebuilds during the
# run: cache it, read-only.
mount -t 9p -o ro,cache=loose,$opts {ROOT_TAG} /newroot || fatal "cannot mount the host's root"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
# The workspace (the test binaries and netd) over whatever tmpfs above
# may hide it, then the work directory inside it, where results go
# straight to the host: no cache.
mkdir -p "/newroot{workspace}"
mount -t 9p -o ro,cache=loose,$opts {WORKSPACE_TAG} "/newroot{workspace}" || fatal "cannot mount the workspace"
mount -t 9p -o $opts {WORK_TAG} "/newroot{work}" || fatal "cannot mount the work share"
# A bpffs and a cgroup2 hierarchy of the guest's own, where netd and the
# tests look for them.
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
ip link set lo up
# What netd attaches with; loaded now so that a missing one shows here.
modprobe -a veth bridge sch_ingress cls_bpf || say "a module netd needs did not load"
say "kernel $(uname -r) up in $(cut -d' ' -f1 /proc/uptime) s; running the tests"
chroot /newroot /bin/sh "{work}/guest.sh"
say "tests done (exit $?); powering off"
halt
"#
    )
}

/// The script the guest runs in the chroot: a probe of what netd picks on
/// this kernel, then each test in a process of its own (as cargo-nextest
/// runs them), one result line each in `results`.
fn guest_script(work: &Path, tests: &[TestCase]) -> String {
    let netd = workspace_root().join("target/debug/netd");
    let mut script = format!(
        r#"#!/bin/sh
# Runs in netd's test VM, in a chroot of the host's root; written by
# xtask/src/vm.rs.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TMPDIR=/tmp RUST_BACKTRACE=1 NO_COLOR=1
export NETD_BIN='{netd}'
work='{work}'
results="$work/results"
say() {{ echo "{CONSOLE_PREFIX} $*"; }}
now_ms() {{ echo $(( $(date +%s%N) / 1000000 )); }}
echo "kernel $(uname -r)" > "$results"
echo "uptime $(cut -d' ' -f1 /proc/uptime)" >> "$results"

# What netd makes of this kernel (its TC attach mode, features it lacks):
# an agent in a namespace of its own, asked for its status.
probe() {{
    dir=$(mktemp -d /tmp/netd-probe.XXXXXX)
    ip netns add netd-probe
    mkdir "$dir/bpf" && mount -t bpf bpf "$dir/bpf"
    # A cgroup of its own, so that the status says whether host-local
    # access works on this kernel.
    cgroup=/sys/fs/cgroup/netd-probe
    mkdir "$cgroup"
    export NETD_SOCKET="$dir/netd.sock" NETD_STATE_DIR="$dir/state" NETD_BPFFS="$dir/bpf/netd" NETD_CGROUP="$cgroup"
    nsenter --net=/run/netns/netd-probe "$NETD_BIN" agent > "$work/probe-agent.log" 2>&1 &
    agent=$!
    tries=0
    until "$NETD_BIN" status > "$work/probe-status" 2>&1; do
        tries=$((tries + 1))
        if [ $tries -ge 300 ] || ! kill -0 $agent 2>/dev/null; then
            say "probe: the agent did not come up; its log:"
            cat "$work/probe-agent.log"
            break
        fi
        sleep 0.2
    done
    sed 's/^/probe /' "$work/probe-status" >> "$results"
    sed "s/^/{CONSOLE_PREFIX} probe: /" "$work/probe-status"
    "$NETD_BIN" down > /dev/null 2>&1
    kill $agent 2>/dev/null
    wait $agent
    umount "$dir/bpf"
    rmdir "$cgroup"
    ip netns delete netd-probe
    rm -rf "$dir"
    unset NETD_SOCKET NETD_STATE_DIR NETD_BPFFS NETD_CGROUP
}}
probe

# run INDEX TOTAL BINARY_ID DIRECTORY EXECUTABLE NAME
run() {{
    log="$work/logs/$1.log"
    say "[$1/$2] $3 $6"
    start=$(now_ms)
    (cd "$4" && timeout --kill-after=10 {timeout} "$5" --exact "$6" --nocapture --test-threads 1) > "$log" 2>&1
    code=$?
    took=$(( $(now_ms) - start ))
    case $code in
        0) verdict=PASS ;;
        124|137) verdict=TIMEOUT ;;
        *) verdict=FAIL ;;
    esac
    echo "result $1 $verdict $took" >> "$results"
    say "[$1/$2] $verdict in $took ms: $3 $6"
    if [ $verdict != PASS ]; then tail -n 40 "$log"; fi
}}
"#,
        netd = netd.display(),
        work = work.display(),
        timeout = TEST_TIMEOUT.as_secs(),
    );
    for (index, test) in tests.iter().enumerate() {
        let _ = writeln!(
            script,
            "run {} {} {} {} {} {}",
            index + 1,
            tests.len(),
            shell_quote(&test.binary_id),
            shell_quote(&test.cwd.display().to_string()),
            shell_quote(&test.executable.display().to_string()),
            shell_quote(&test.name),
        );
    }
    script.push_str("echo done >> \"$results\"\n");
    script
}

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Writes the initramfs: busybox, `/init`, and the selected modules with
/// their modules.dep. Uncompressed: QEMU hands it to the guest in memory,
/// and decompressing tens of megabytes under software emulation would cost
/// seconds of every boot.
fn build_initramfs(path: &Path, image: &KernelImage, work: &Path) -> anyhow::Result<()> {
    let busybox = fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX}"))?;
    // The initramfs has no C library: a dynamically linked busybox (Debian's
    // `busybox` rather than `busybox-static`) would leave the kernel with
    // no init it can run.
    ensure!(
        !needs_interpreter(&busybox),
        "{BUSYBOX} is dynamically linked: install busybox-static (cargo xtask setup does with --kernel)"
    );
    let mut cpio = Cpio::new(BufWriter::new(fs::File::create(path)?));
    for dir in ["bin", "sbin", "dev", "proc", "sys", "newroot", "tmp"] {
        cpio.directory(dir)?;
    }
    // The kernel opens the console for /init before devtmpfs is mounted.
    cpio.char_device("dev/console", 5, 1)?;
    cpio.file("bin/busybox", 0o755, &busybox)?;
    cpio.symlink("sbin/modprobe", "/bin/busybox")?;
    cpio.file("init", 0o755, init_script(work).as_bytes())?;
    add_tree(&mut cpio, &image.modules_root, Path::new(""))?;
    cpio.finish()?.flush()?;
    eprintln!(
        "vm: initramfs {} ({} MiB, modules for {})",
        path.display(),
        fs::metadata(path)?.len() >> 20,
        image.release
    );
    Ok(())
}

/// The shell and tools of the initramfs, from Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";

/// Whether an x86-64 ELF executable names a program interpreter (the
/// dynamic linker): a PT_INTERP program header. Anything that is not such
/// an ELF file counts as needing one.
fn needs_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| elf.get(at..at + len);
    let le_u64 = |at| read(at, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let le_u16 = |at| read(at, 2).map(|b| u16::from_le_bytes(b.try_into().expect("2 bytes")));
    let le_u32 = |at| read(at, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    // ELF magic, 64-bit, little-endian.
    if read(0, 6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return true;
    }
    let (Some(table), Some(entry_size), Some(entries)) = (le_u64(0x20), le_u16(0x36), le_u16(0x38))
    else {
        return true;
    };
    let Ok(table) = usize::try_from(table) else {
        return true;
    };
    (0..usize::from(entries))
        .any(|i| le_u32(table + i * usize::from(entry_size)).is_none_or(|kind| kind == PT_INTERP))
}

/// Adds the directories and files below `root` (named relative to it).
fn add_tree<W: io::Write>(cpio: &mut Cpio<W>, root: &Path, relative: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(relative))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", root.join(relative).display()))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let name = relative.join(entry.file_name());
        let archived = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            cpio.directory(&archived)?;
            add_tree(cpio, root, &name)?;
        } else {
            cpio.file(&archived, 0o644, &fs::read(entry.path())?)?;
        }
    }
    Ok(())
}

/// A writer of the "newc" cpio format, the one the kernel unpacks as an
/// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
/// Entries are owned by root whoever builds the archive, and device nodes
/// need no privilege.
struct Cpio<W: io::Write> {
    out: W,
    next_inode: u32,
}

impl<W: io::Write> Cpio<W> {
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFLNK: u32 = 0o120_000;
    const S_IFCHR: u32 = 0o020_000;

    fn new(out: W) -> Self {
        Self { out, next_inode: 1 }
    }

    fn directory(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, Self::S_IFDIR | 0o755, (0, 0), &[])
    }

    fn file(&mut self, name: &str, permissions: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, Self::S_IFREG | permissions, (0, 0), data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, Self::S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, Self::S_IFCHR | 0o600, (major, minor), &[])
    }

    /// The trailer entry; returns the writer.
    fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let name_size = name.len() + 1;
        let fields = [
            inode,
            mode,
            0, // uid
            0, // gid
            if mode & Self::S_IFDIR == Self::S_IFDIR {
                2
            } else {
                1
            },
            0, // mtime
            u32::try_from(data.len()).map_err(|_| io::Error::other("file over 4 GiB"))?,
            0, // device major
            0, // device minor
            rdev.0,
            rdev.1,
            u32::try_from(name_size).map_err(|_| io::Error::other("name too long"))?,
            0, // checksum, unused by "newc"
        ];
        let mut header = String::from("070701");
        for field in fields {
            let _ = write!(header, "{field:08x}");
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(header.len() + name_size)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    /// Header plus name, and data, each end on a 4-byte boundary.
    fn pad(&mut self, written: usize) -> io::Result<()> {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..padding])
    }
}

enum Outcome {
    /// QEMU exited: the guest powered off (or its kernel panicked).
    Exited,
    /// The console was silent past its limit and QEMU was killed.
    Hung(Duration),
}

/// Runs QEMU until the guest powers off or its console falls silent for
/// too long, the console copied to stderr and to work/console.log.
fn boot(image: &KernelImage, initramfs: &Path, work: &Path) -> anyhow::Result<Outcome> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
        .args(["-smp", &GUEST_CPUS.to_string()])
        .args(["-m", &GUEST_MEMORY_MIB.to_string()])
        // Only what is asked for below: no NIC, no VGA, no default drives.
        .args(["-nodefaults", "-nic", "none", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&image.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        // panic=-1: a guest kernel panic reboots, and -no-reboot turns that
        // into QEMU exiting. mitigations=off: speculation barriers cost
        // much under emulation and protect nothing in a test VM.
        .args([
            "-append",
            "console=ttyS0 panic=-1 mitigations=off loglevel=4 8250.nr_uarts=1",
        ])
        // The host's root, read-only; multidevs=remap keeps inode numbers
        // unique across the host's mounts under it.
        .arg("-fsdev")
        .arg(format!(
            "local,id={ROOT_TAG},path=/,security_model=none,readonly=on,multidevs=remap"
        ))
        .arg("-device")
        .arg(format!(
            "virtio-9p-pci,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}"
        ))
        .arg("-fsdev")
        .arg(format!(
            "local,id={WORKSPACE_TAG},path={},security_model=none,readonly=on,multidevs=remap",
            workspace_root().display()
        ))
        .arg("-device")
        .arg(format!(
            "virtio-9p-pci,fsdev={WORKSPACE_TAG},mount_tag={WORKSPACE_TAG}"
        ))
        .arg("-fsdev")
        .arg(format!(
            "local,id={WORK_TAG},path={},security_model=none",
            work.display()
        ))
        .arg("-device")
        .arg(format!(
            "virtio-9p-pci,fsdev={WORK_TAG},mount_tag={WORK_TAG}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("+ {qemu:?}");
    let child = qemu
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it with --kernel)")?;
    let mut qemu = Qemu(child);
    let console_out = qemu.0.stdout.take().expect("stdout is piped");
    let console_log = fs::File::create(work.join("console.log"))?;
    let last_output = Arc::new(Mutex::new(None));
    let copier = {
        let last_output = Arc::clone(&last_output);
        thread::spawn(move || copy_console(console_out, console_log, &last_output))
    };

    let started = Instant::now();
    let outcome = loop {
        if let Some(status) = qemu.0.try_wait()? {
            if !status.success() {
                eprintln!("vm: qemu exited with {status}");
            }
            break Outcome::Exited;
        }
        let last = *last_output
            .lock()
            .expect("the console copier does not panic");
        let (silence, limit) = match last {
            None => (started.elapsed(), BOOT_SILENCE_LIMIT),
            Some(at) => (at.elapsed(), TEST_SILENCE_LIMIT),
        };
        if silence > limit {
            eprintln!(
                "\nvm: no console output for {} s: killing qemu (pid {})",
                silence.as_secs(),
                qemu.0.id()
            );
            qemu.kill();
            break Outcome::Hung(silence);
        }
        thread::sleep(Duration::from_millis(200));
    };
    let _ = copier.join();
    Ok(outcome)
}

/// QEMU, killed (by its PID) if still running when dropped: an error or a
/// panic on the host side leaves no VM behind.
struct Qemu(Child);

impl Qemu {
    fn kill(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies the guest's console to stderr and `log` until QEMU closes it,
/// noting when it last printed.
fn copy_console(console: impl io::Read, mut log: fs::File, last_output: &Mutex<Option<Instant>>) {
    let mut console = BufReader::new(console);
    let mut buffer = [0; 4096];
    loop {
        match console.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                *last_output.lock().expect("the watchdog does not panic") = Some(Instant::now());
                let _ = io::stderr().write_all(&buffer[..n]);
                let _ = log.write_all(&buffer[..n]);
            }
        }
    }
}

/// What the guest wrote to work/results.
struct Report {
    kernel: Option<String>,
    /// Guest uptime when the first test started.
    boot_seconds: Option<f64>,
    /// `netd status` of the probe agent, line by line.
    probe: Vec<String>,
    /// By test index (from 1): verdict and duration.
    results: HashMap<usize, (String, Duration)>,
    /// Whether the guest got to the end of its list.
    finished: bool,
}

impl Report {
    fn read(work: &Path, tests: &[TestCase]) -> anyhow::Result<Self> {
        let mut report = Self {
            kernel: None,
            boot_seconds: None,
            probe: Vec::new(),
            results: HashMap::new(),
            finished: false,
        };
        let path = work.join("results");
        let Ok(file) = fs::File::open(&path) else {
            eprintln!(
                "vm: the guest wrote no {}: it did not get to the tests (see its console above)",
                path.display()
            );
            return Ok(report);
        };
        for line in BufReader::new(file).lines() {
            let line = line?;
            let (kind, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match kind {
                "kernel" => report.kernel = Some(rest.to_owned()),
                "uptime" => report.boot_seconds = rest.parse().ok(),
                "probe" => report.probe.push(rest.to_owned()),
                "done" => report.finished = true,
                "result" => {
                    let fields: Vec<&str> = rest.split(' ').collect();
                    if let [index, verdict, millis] = fields[..]
                        && let (Ok(index), Ok(millis)) = (index.parse(), millis.parse())
                        && (1..=tests.len()).contains(&index)
                    {
                        report
                            .results
                            .insert(index, (verdict.to_owned(), Duration::from_millis(millis)));
                    }
                }
                _ => {}
            }
        }
        Ok(report)
    }

    fn print(&self, kernel: &Kernel, tests: &[TestCase], work: &Path, elapsed: Duration) {
        let release = self.kernel.as_deref().unwrap_or("(did not boot)");
        println!();
        println!(
            "kernel {release}: Debian's {} {} under QEMU (software emulation)",
            kernel.package, kernel.version
        );
        if let Some(boot) = self.boot_seconds {
            println!("booted in {boot:.1} s (guest uptime when its test script started)");
        }
        if self.probe.is_empty() {
            println!(
                "netd on this kernel: the probe agent did not answer (see {})",
                work.join("probe-agent.log").display()
            );
        }
        // Of `netd status`, the lines about the kernel: the TC attach mode,
        // the features it lacks.
        let about_kernel: Vec<&String> = self
            .probe
            .iter()
            .filter(|line| line.starts_with("kernel:") || line.starts_with("degraded:"))
            .collect();
        for line in about_kernel {
            println!("netd status on this kernel: {line}");
        }
        let width = tests.iter().map(|t| t.binary_id.len()).max().unwrap_or(0);
        println!();
        for (index, test) in tests.iter().enumerate() {
            let index = index + 1;
            let (verdict, took) = match self.results.get(&index) {
                Some((verdict, took)) => {
                    (verdict.as_str(), format!("{:7.1} s", took.as_secs_f64()))
                }
                None => ("NOT RUN", String::from("      -  ")),
            };
            let log = work.join(format!("logs/{index}.log"));
            let attach = attach_modes(&log);
            print!(
                "{verdict:<8}{took}  {:<width$}  {}",
                test.binary_id, test.name
            );
            if !attach.is_empty() {
                print!("  [tc: {}]", attach.join(", "));
            }
            println!();
            if verdict != "PASS" && verdict != "NOT RUN" {
                if verdict == "TIMEOUT" {
                    println!("            killed after {} s", TEST_TIMEOUT.as_secs());
                } else if let Some(why) = failure_reason(&log) {
                    println!("            {why}");
                }
                println!("            log: {}", log.display());
            }
        }
        let count = |wanted: &str| self.results.values().filter(|(v, _)| v == wanted).count();
        println!();
        println!(
            "{} passed, {} failed, {} timed out, {} not run, on {release}; {:.0} s in all",
            count("PASS"),
            count("FAIL"),
            count("TIMEOUT"),
            tests.len() - self.results.len(),
            elapsed.as_secs_f64()
        );
    }

    /// Ok when every test ran and passed.
    fn verdict(&self, tests: &[TestCase]) -> anyhow::Result<()> {
        let failed = self.results.values().filter(|(v, _)| v != "PASS").count();
        let not_run = tests.len() - self.results.len();
        if failed > 0 || not_run > 0 {
            bail!(
                "on kernel {}: {failed} test(s) failed or timed out, {not_run} did not run{}",
                self.kernel.as_deref().unwrap_or("(did not boot)"),
                if self.finished || not_run == 0 {
                    ""
                } else {
                    " (the guest stopped before the end: see its console)"
                }
            );
        }
        Ok(())
    }
}

/// The TC attach modes a test's output names (an agent's "tc: ..." line),
/// in the order they first appear.
fn attach_modes(log: &Path) -> Vec<&'static str> {
    let Ok(text) = fs::read_to_string(log) else {
        return Vec::new();
    };
    let mut modes = Vec::new();
    for (marker, mode) in [
        ("tc: tcx", "tcx"),
        ("tc: clsact via netlink", "clsact via netlink"),
    ] {
        if text.contains(marker) {
            modes.push(mode);
        }
    }
    modes
}

/// The panic message of a failed test: "FILE:LINE:COL: message".
fn failure_reason(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((_, at)) = line.split_once("panicked at ") {
            let location = at.trim_end_matches(':');
            let message = lines.next().unwrap_or_default();
            return Some(format!("{location}: {message}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_end_on_four_byte_boundaries() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.file("a", 0o644, b"xyz").expect("in memory");
        let archive = cpio.finish().expect("in memory");
        // "a": 110-byte header + "a\0" = 112, then 3 bytes of data padded to
        // 4. The trailer: 110 + "TRAILER!!!\0" = 121, padded to 124.
        assert_eq!(archive.len(), 112 + 4 + 124);
        assert_eq!(&archive[..6], b"070701");
        assert_eq!(&archive[110..112], b"a\0");
        assert_eq!(&archive[112..116], b"xyz\0");
        assert_eq!(&archive[116..122], b"070701");
        // The file's size field (the seventh) says 3.
        assert_eq!(&archive[6 + 6 * 8..6 + 7 * 8], b"00000003");
    }

    #[test]
    fn a_static_executable_needs_no_interpreter() {
        // An ELF header whose one program header (at 64) is PT_LOAD.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(!needs_interpreter(&elf));
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(needs_interpreter(&elf), "PT_INTERP");
        assert!(needs_interpreter(b"#!/bin/sh\n"), "not ELF");
        assert!(needs_interpreter(&elf[..70]), "truncated");
    }

    #[test]
    fn binary_ids_are_named_as_nextest_names_them() {
        let message = |kind: &str, name: &str, package_id: &str| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "package_id": package_id,
                "manifest_path": "/w/tests/Cargo.toml",
                "target": {"kind": [kind], "name": name},
                "profile": {"test": true},
                "executable": "/w/target/debug/deps/x-0123",
            })
        };
        let id = |kind, name, package_id| {
            test_binary(&message(kind, name, package_id)).map(|(id, _, cwd)| (id, cwd))
        };
        let named = "path+file:///w/tests#netd-tests@0.1.0";
        assert_eq!(
            id("test", "publish", named),
            Some(("netd-tests::publish".to_owned(), PathBuf::from("/w/tests")))
        );
        assert_eq!(
            id("lib", "netd_tests", named).map(|(id, _)| id).as_deref(),
            Some("netd-tests")
        );
        assert_eq!(
            id("bin", "netd-bench", named).map(|(id, _)| id).as_deref(),
            Some("netd-tests::bin/netd-bench")
        );
        assert_eq!(
            id("lib", "netd", "path+file:///w/netd#0.1.0")
                .map(|(id, _)| id)
                .as_deref(),
            Some("netd")
        );
        let mut built = message("test", "publish", named);
        built["profile"]["test"] = false.into();
        assert_eq!(test_binary(&built), None, "not a test binary");
    }

    #[test]
    fn modules_come_with_what_they_need_and_nothing_else() {
        let dep = |m: &str, needs: &[&str]| {
            (
                m.to_owned(),
                needs.iter().map(|n| (*n).to_owned()).collect(),
            )
        };
        let dependencies = BTreeMap::from([
            dep(
                "kernel/net/bridge/bridge.ko",
                &["kernel/net/802/stp.ko", "kernel/lib/x.ko"],
            ),
            dep("kernel/net/802/stp.ko", &[]),
            dep("kernel/lib/x.ko", &[]),
            dep("kernel/drivers/net/veth.ko", &[]),
            dep("kernel/drivers/net/ethernet/intel/e1000.ko", &[]),
            dep("kernel/net/wireless/cfg80211.ko", &[]),
        ]);
        let selected = select_modules(&dependencies);
        let selected: Vec<&str> = selected.iter().map(String::as_str).collect();
        assert_eq!(
            selected,
            [
                "kernel/drivers/net/veth.ko",
                "kernel/lib/x.ko",
                "kernel/net/802/stp.ko",
                "kernel/net/bridge/bridge.ko",
            ]
        );
    }
}
