// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The harnesses netd's privileged tests stand on.
//!
//! - [`netns`]: throwaway network namespaces, veths, bridges, addresses and
//!   processes, all removed on drop (also when a test panics) and recorded
//!   so `cargo xtask test` can prove nothing was left behind;
//! - [`bpf`]: netd's embedded eBPF object loaded with private maps, run on
//!   crafted packets through `BPF_PROG_TEST_RUN`;
//! - [`pktgen`]: those packets, built byte by byte with checksums from an
//!   implementation independent of netd's.
//!
//! Tests that need root start with [`require_root!`]; without root they say
//! "test skipped, requires root" and return.

pub mod agent;
pub mod bpf;
pub mod dockerd;
pub mod fixture;
pub mod hold;
pub mod netns;
pub mod pins;
pub mod pktgen;
pub mod probe;
pub mod rootfs;
pub mod topology;

/// The first `Some` that `attempt` gives within `timeout`, trying every
/// 200 ms (and once more at the deadline); `None` when it never does.
/// What a test waits for that the system does "soon": a server listening,
/// a route learned, a record written.
pub fn within<T>(
    timeout: std::time::Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let past_deadline = std::time::Instant::now() > deadline;
        if let Some(value) = attempt() {
            return Some(value);
        }
        if past_deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An HTTP request by curl to the server on unix socket `socket`, as a
/// client of the agent's API or dockerd posting to the Docker driver would
/// make it: `args` are curl's (method, body, URL); the body and the status
/// code of the answer.
pub fn curl_unix(socket: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(socket)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl {args:?}: no status line: {text}"));
    (body.to_owned(), code.to_owned())
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns from the calling test, loudly, unless it runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("test skipped, requires root");
            return;
        }
    };
}
