// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What the running kernel offers netd, found once at start, and the way
//! each hook is attached as a result. Kernel versions are what the
//! features need upstream; distributions that backport them are told
//! apart by the `--tc-attach` flag, not guessed.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};

/// A kernel release's version numbers (`6.1.0-18-amd64` is 6.1.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Parses the leading `X.Y[.Z]` of a release string.
    pub fn parse(release: &str) -> Option<Self> {
        let numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        match numbers[..] {
            [major, minor, patch] => Some(Self(major, minor, patch)),
            [major, minor] => Some(Self(major, minor, 0)),
            _ => None,
        }
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// TCX (BPF links on the TC hooks): 6.6.
pub const TCX_SINCE: KernelVersion = KernelVersion(6, 6, 0);
/// `bpf_redirect_peer`: 5.10.
pub const REDIRECT_PEER_SINCE: KernelVersion = KernelVersion(5, 10, 0);
/// The cgroup socket-address hooks netd uses, `getpeername` and
/// `getsockname` the last of them: 5.8.
pub const CGROUP_SOCK_ADDR_SINCE: KernelVersion = KernelVersion(5, 8, 0);

/// How the TC programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcMode {
    /// BPF links (TCX), pinned: atomic replacement, nothing for `tc` to
    /// delete.
    Tcx,
    /// A cls_bpf filter on a clsact qdisc, through netlink: what kernels
    /// before 6.6 offer.
    Netlink,
}

impl TcMode {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Tcx => "tcx (BPF links)",
            Self::Netlink => "clsact via netlink",
        }
    }
}

/// What the kernel offers.
#[derive(Clone, Debug)]
pub struct Features {
    pub release: String,
    pub version: KernelVersion,
    pub tcx: bool,
    pub redirect_peer: bool,
    pub cgroup_sock_addr: bool,
    /// Kernel BTF, for `bpftool` to print pinned maps' types.
    pub btf: bool,
}

impl Features {
    /// This kernel's.
    pub fn probe() -> Self {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::of(&release, Path::new("/sys/kernel/btf/vmlinux").exists())
    }

    /// The features of kernel `release` (with kernel BTF or not).
    pub fn of(release: &str, btf: bool) -> Self {
        // An unparsable release is taken as a new kernel: netd then tries
        // the best modes, and the kernel's refusal says what is missing.
        let version = KernelVersion::parse(release).unwrap_or(KernelVersion(u32::MAX, 0, 0));
        Self {
            release: release.to_owned(),
            version,
            tcx: version >= TCX_SINCE,
            redirect_peer: version >= REDIRECT_PEER_SINCE,
            cgroup_sock_addr: version >= CGROUP_SOCK_ADDR_SINCE,
            btf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_and_decide() {
        assert_eq!(
            KernelVersion::parse("6.1.0-18-amd64"),
            Some(KernelVersion(6, 1, 0))
        );
        assert_eq!(KernelVersion::parse("6.18"), Some(KernelVersion(6, 18, 0)));
        assert_eq!(KernelVersion::parse("garbage"), None);
        let old = Features::of("6.1.0-18-amd64", true);
        assert!(!old.tcx && old.redirect_peer && old.cgroup_sock_addr);
        let new = Features::of("6.18.0", true);
        assert!(new.tcx);
        let ancient = Features::of("5.4.0", false);
        assert!(!ancient.redirect_peer && !ancient.cgroup_sock_addr);
    }
}
