// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Failpoints for tests of recovery and of write errors.
//!
//! `NETD_FAILPOINT` holds a comma-separated list of points, and
//! `NETD_FAILPOINT_FILE` names a file holding such a list, read again at
//! every point reached, so that a test can arm and disarm points while the
//! agent runs. Two kinds of point:
//!
//! - `NAME` (e.g. `attach:recorded`): the agent kills itself with SIGKILL
//!   when it reaches the point NAME, leaving whatever it had half-done for
//!   a restarted agent to finish;
//! - `FILE:OP=ERRNO[@N]` (e.g. `state.journal:write=ENOSPC`): the store's
//!   operation OP on FILE fails with ERRNO instead of being done, from its
//!   N-th time on (default 1, the first) since the list last changed.
//!   FILE is `state.journal`, `state.json` or `state.dir` (the state
//!   directory); OP is `write`, `fsync`, `truncate`, `reserve` (the
//!   journal's preallocation) or `rename` (of `state.json`, a write of the
//!   directory); ERRNO is `EIO`, `ENOSPC`, `EDQUOT` or `EROFS`.
//!
//! Unset, a failpoint costs two environment lookups (and, in the store,
//! an uncontended lock).

use std::{collections::BTreeMap, io, sync::Mutex};

const ENV: &str = "NETD_FAILPOINT";
const FILE_ENV: &str = "NETD_FAILPOINT_FILE";

/// Kills the process if the failpoints name this point.
pub fn hit(name: &str) {
    if armed().iter().any(|point| point == name) {
        eprintln!("failpoint {name}: SIGKILL");
        // SIGKILL, not abort(): no unwinding, no destructor, no core file.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The error the failpoints inject into the store's `op` on `file`, if
/// any: call before doing the operation, and fail with it instead.
pub fn io_error(file: &str, op: &str) -> io::Result<()> {
    let points = armed();
    let site = format!("{file}:{op}");
    // Hits per point since the list last changed, for `@N`. An empty list
    // is a change too: the same point armed again counts from 1.
    static HITS: Mutex<(Vec<String>, BTreeMap<String, u32>)> =
        Mutex::new((Vec::new(), BTreeMap::new()));
    let mut hits = HITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if hits.0 != points {
        *hits = (points.clone(), BTreeMap::new());
    }
    for point in &points {
        let Some((at, errno, from)) = parse_io_point(point) else {
            continue;
        };
        if at != site {
            continue;
        }
        let count = hits.1.entry(point.clone()).or_default();
        *count += 1;
        if *count >= from {
            eprintln!("failpoint {point}: failing {site} with {errno}");
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    Ok(())
}

/// `FILE:OP=ERRNO[@N]` as (`FILE:OP`, errno, N).
fn parse_io_point(point: &str) -> Option<(&str, i32, u32)> {
    let (site, error) = point.split_once('=')?;
    let (name, from) = match error.split_once('@') {
        Some((name, from)) => (name, from.parse().ok()?),
        None => (error, 1),
    };
    let errno = match name {
        "EIO" => libc::EIO,
        "ENOSPC" => libc::ENOSPC,
        "EDQUOT" => libc::EDQUOT,
        "EROFS" => libc::EROFS,
        _ => return None,
    };
    Some((site, errno, from))
}

/// The points armed now, from the environment and the file it names.
fn armed() -> Vec<String> {
    let mut text = std::env::var(ENV).unwrap_or_default();
    if let Some(path) = std::env::var_os(FILE_ENV) {
        // Absent or unreadable: nothing armed from it.
        text.push(',');
        text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    }
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_points_parse() {
        assert_eq!(
            parse_io_point("state.journal:write=ENOSPC"),
            Some(("state.journal:write", libc::ENOSPC, 1))
        );
        assert_eq!(
            parse_io_point("state.dir:fsync=EIO@2"),
            Some(("state.dir:fsync", libc::EIO, 2))
        );
        assert_eq!(parse_io_point("state.json:write=EPERM"), None);
        assert_eq!(parse_io_point("attach:recorded"), None);
    }
}
