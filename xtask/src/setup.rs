// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Installs what building and testing netd needs, and nothing that is there
//! already: a second run prints only "present" lines.
//!
//! The toolchain facts behind the versions: bpf-linker loads libLLVM at run
//! time and its LLVM major must be at least the nightly rustc's (22 here);
//! Debian bookworm ships llvm-22-dev through bookworm-security.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, is_root, output, workspace_root};

/// Debian packages: the LLVM that bpf-linker links against, and the tools the
/// tests and the demo drive.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("libpolly-22-dev", "LLVM 22's link line names Polly"),
    ("bpftool", "tests read pinned maps with bpftool"),
    ("iproute2", "namespaces, veths and routes in tests"),
    ("curl", "HTTP client in tests and the demo"),
    ("iputils-ping", "ICMP in tests"),
    ("python3", "HTTP and UDP servers in tests and the demo"),
    (
        "python3-venv",
        "a venv for Scapy, the malformed-packet tests' reference",
    ),
    ("nftables", "tests check netd adds no nftables rule"),
    ("iptables", "tests check netd adds no iptables rule"),
    ("podman", "the CNI plugin's test with a real runtime"),
    (
        "crun",
        "Podman's runtime in tests: runs containers without cgroups",
    ),
    (
        "containernetworking-plugins",
        "host-local, the IPAM plugin the CNI tests delegate to",
    ),
    (
        "docker.io",
        "the Docker driver's tests run Debian's dockerd (never as the machine's service)",
    ),
    (
        "docker-compose",
        "the Docker Compose scenario: two projects on netd networks",
    ),
    (
        "containerd",
        "the CNI plugin's test under Kubernetes' CRI runtime (with runc)",
    ),
    (
        "python3-grpcio",
        "the CRI client of the containerd test (Debian's python3)",
    ),
    ("python3-protobuf", "the CRI client's messages"),
    (
        "protobuf-compiler",
        "generates the CRI client's messages from tests/cri/runtime_v1.proto",
    ),
    (
        "busybox-static",
        "the one-binary image the Docker and Podman tests import",
    ),
    ("bind9-dnsutils", "dig: the DNS tests' client"),
    (
        "dnsmasq-base",
        "the DNS tests' upstream resolver and the DNS benchmark's peer (no service)",
    ),
    (
        "prometheus",
        "promtool, the Prometheus project's checker of the metrics tests (its server is never started)",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_DEB_VERSION: &str = "3.8.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const NIGHTLY: &str = "nightly";

pub fn run() -> anyhow::Result<()> {
    debian_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    scapy_venv()?;
    cargo_deb()?;
    Ok(())
}

/// cargo-deb, pinned: `cargo xtask package` builds netd's Debian package
/// with it.
pub fn cargo_deb() -> anyhow::Result<()> {
    let version = output(Command::new("cargo").args(["deb", "--version"]));
    if version
        .as_deref()
        .is_some_and(|v| v.contains(CARGO_DEB_VERSION))
    {
        present(&format!("cargo-deb {CARGO_DEB_VERSION}"));
        return Ok(());
    }
    installing(
        &format!("cargo-deb {CARGO_DEB_VERSION}"),
        "builds the Debian package; about 1 minute",
    );
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
    .context("installing cargo-deb")
}

fn present(what: &str) {
    eprintln!("setup: {what}: present");
}

fn installing(what: &str, why: &str) {
    eprintln!("setup: {what}: missing ({why}), installing");
}

fn package_installed(name: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
        .is_some_and(|status| status.trim_end().ends_with(" installed"))
}

fn debian_packages() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (name, why) in DEBIAN_PACKAGES {
        if package_installed(name) {
            present(name);
        } else {
            installing(name, why);
            missing.push(*name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "setup: Debian packages {} are missing and installing them needs root: run as root or `apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    // Package lists on a fresh machine can predate llvm-22 (it reached
    // bookworm through bookworm-security): refresh them first.
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    let _no_services = ServicesHeld::hold()?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
    .context("installing Debian packages")
}

/// Debian's policy-rc.d hook, telling maintainer scripts not to start
/// services: docker.io's and containerd's would otherwise start dockerd and
/// containerd on the machine, and dockerd rewrites the host's firewall. The
/// tests start their own, in namespaces of their own. Removed after the
/// install unless it was there before.
struct ServicesHeld(Option<PathBuf>);

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl ServicesHeld {
    fn hold() -> anyhow::Result<Self> {
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(Self(None));
        }
        fs::write(
            path,
            "#!/bin/sh\n# netd's cargo xtask setup: no service starts while it installs.\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        Ok(Self(Some(path.to_owned())))
    }
}

impl Drop for ServicesHeld {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let Some(installed) = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ])) else {
        bail!(
            "setup: the {NIGHTLY} Rust toolchain is missing: netd's eBPF programs need it (`rustup toolchain install {NIGHTLY}`; this project is tested with nightly 1.97 2026-05-19, LLVM 22)"
        );
    };
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        present("rust-src for nightly");
        return Ok(());
    }
    installing(
        "rust-src for nightly",
        "-Z build-std=core for the BPF target",
    );
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version"));
    if version
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        present(&format!("bpf-linker {BPF_LINKER_VERSION}"));
        return Ok(());
    }
    installing(
        &format!("bpf-linker {BPF_LINKER_VERSION}"),
        "links the eBPF object; built against LLVM 22, about 1.5 minutes",
    );
    // The LLVM 22 tools must come first on PATH only while building it, so
    // its build script finds llvm-config-22.
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    cmd::run(
        Command::new("cargo")
            .env("PATH", path)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
    .context("installing bpf-linker")
}

/// Scapy, pinned: the malformed-packet tests (tests/tests/malformed.rs)
/// compare netd's translations byte for byte with Scapy's, so a new Scapy
/// must not change the reference unnoticed.
const SCAPY_VERSION: &str = "2.8.0";

/// Scapy from PyPI in a venv of its own, `target/venv`, where the tests
/// look for it. Debian's Python builds the venv (a Python earlier on PATH,
/// such as pyenv's, may lack `venv`).
fn scapy_venv() -> anyhow::Result<()> {
    let venv = workspace_root().join("target/venv");
    let python = venv.join("bin/python3");
    let what = format!("Scapy {SCAPY_VERSION} in {}", venv.display());
    let installed =
        output(Command::new(&python).args(["-c", "import scapy; print(scapy.VERSION)"]));
    if installed.as_deref().map(str::trim) == Some(SCAPY_VERSION) {
        present(&what);
        return Ok(());
    }
    installing(
        &what,
        "the reference the malformed-packet tests compare netd's translations with",
    );
    if !python.exists() {
        cmd::run(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv"])
                .arg(&venv),
        )
        .context("creating the Scapy venv")?;
    }
    cmd::run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("scapy=={SCAPY_VERSION}"),
    ]))
    .context("installing Scapy from PyPI")
}

/// Where Debian's docker.io installs docker-proxy.
const DOCKER_PROXY: &str = "/usr/sbin/docker-proxy";

/// docker-proxy, the peer of host-local access in the benchmarks: the
/// installed one, else one unpacked from Debian's docker.io package into
/// target/bench-tools. Installing docker.io itself would start dockerd on
/// some machines, and dockerd rewrites the host's firewall: the benchmark
/// needs only the proxy binary.
pub fn docker_proxy() -> anyhow::Result<PathBuf> {
    if Path::new(DOCKER_PROXY).exists() {
        present(DOCKER_PROXY);
        return Ok(DOCKER_PROXY.into());
    }
    let tools = workspace_root().join("target/bench-tools");
    let unpacked = tools
        .join("root")
        .join(DOCKER_PROXY.trim_start_matches('/'));
    if unpacked.exists() {
        present(&unpacked.display().to_string());
        return Ok(unpacked);
    }
    installing(
        "docker-proxy",
        "the benchmarks compare host-local access with it",
    );
    fs::create_dir_all(&tools)?;
    let download = || {
        cmd::run(
            Command::new("apt-get")
                .args(["download", "-q", "docker.io"])
                .current_dir(&tools),
        )
    };
    if download().is_err() {
        // Stale package lists on a fresh machine.
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
        download().context("downloading Debian's docker.io package")?;
    }
    let deb = fs::read_dir(&tools)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("docker.io_"))
        })
        .context("apt-get download left no docker.io package")?;
    cmd::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(tools.join("root")),
    )?;
    let _ = fs::remove_file(&deb);
    if !unpacked.exists() {
        bail!("docker.io's package holds no {DOCKER_PROXY}");
    }
    Ok(unpacked)
}

/// Debian's backports suite, where QEMU for `cargo xtask test --kernel`
/// comes from: bookworm's own QEMU 7.2 cannot be installed next to the
/// qemu-utils 10.0 these machines carry from backports.
const BACKPORTS_SUITE: &str = "bookworm-backports";
/// Added only when no configured source names the backports suite.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/netd-bookworm-backports.sources";

/// What `cargo xtask test --kernel` needs to boot another kernel, installed
/// only when it is used so that plain `cargo xtask test` never pulls in
/// QEMU: qemu-system-x86 from bookworm-backports, and busybox-static for the
/// VM's initramfs.
pub fn vm() -> anyhow::Result<()> {
    const BUSYBOX: &str = "busybox-static";
    const QEMU: &str = "qemu-system-x86";
    let mut missing_main = Vec::new();
    if package_installed(BUSYBOX) {
        present(BUSYBOX);
    } else {
        installing(BUSYBOX, "the shell and tools of the VM's initramfs");
        missing_main.push(BUSYBOX);
    }
    let qemu_missing = !package_installed(QEMU);
    if qemu_missing {
        installing(QEMU, "boots the kernel under test, software-emulated");
    } else {
        present(QEMU);
    }
    if missing_main.is_empty() && !qemu_missing {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "setup: {QEMU} (from {BACKPORTS_SUITE}) and {BUSYBOX} are needed to test on another kernel, and installing them needs root"
        );
    }
    if qemu_missing && !backports_configured() {
        eprintln!("setup: no APT source names {BACKPORTS_SUITE}: adding {BACKPORTS_SOURCE}");
        fs::write(
            BACKPORTS_SOURCE,
            format!(
                "# Added by netd's `cargo xtask test --kernel`: QEMU for booting other kernels.\n\
                 Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {BACKPORTS_SUITE}\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        )
        .with_context(|| format!("writing {BACKPORTS_SOURCE}"))?;
    }
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    let apt_install = || {
        let mut apt = Command::new("apt-get");
        apt.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ]);
        apt
    };
    if !missing_main.is_empty() {
        cmd::run(apt_install().args(&missing_main)).context("installing busybox-static")?;
    }
    if qemu_missing {
        cmd::run(apt_install().args(["-t", BACKPORTS_SUITE, QEMU]))
            .with_context(|| format!("installing {QEMU} from {BACKPORTS_SUITE}"))?;
    }
    Ok(())
}

/// Whether APT already knows the backports suite (a configured source, not
/// necessarily ours).
fn backports_configured() -> bool {
    // Its lines read " 100 http://deb.debian.org/debian bookworm-backports/main amd64 Packages".
    output(Command::new("apt-cache").arg("policy"))
        .is_some_and(|policy| policy.contains(&format!(" {BACKPORTS_SUITE}/")))
}
