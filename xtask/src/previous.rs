// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The previous release of netd, built from this repository's history for
//! the upgrade test (`tests/tests/upgrade.rs`): an agent of this version
//! must adopt the state directory and pins an agent of that one left.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

use crate::cmd::{self, workspace_root};

/// The release before state version 2 (many networks): the last commit
/// whose agent writes state version 1 and pins 12 drop counters. Moved
/// forward when a release changes the state or a map's layout again.
pub const COMMIT: &str = "3cca6e81af0e2a0b09468f0597675e526f0a7c51";

/// What the tests read the previous release's binary from.
pub const ENV: &str = "NETD_PREVIOUS_BIN";

/// Set instead of [`ENV`] when the checkout cannot give the previous
/// release (a shallow clone whose origin is out of reach): why. The
/// upgrade test then says it is skipped, as the privileged tests do
/// without root.
pub const UNAVAILABLE_ENV: &str = "NETD_PREVIOUS_UNAVAILABLE";

/// Whether this checkout's history holds [`COMMIT`], fetching it from
/// `origin` once if not (a shallow clone).
pub fn available() -> bool {
    let root = workspace_root();
    let has = || {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["cat-file", "-e", &format!("{COMMIT}^{{commit}}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return true;
    }
    eprintln!("the previous release {COMMIT} is not in this checkout: fetching it from origin");
    let _ = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["fetch", "--quiet", "origin", COMMIT])
        .status();
    has()
}

/// Builds the previous release's `netd` (once: the binary is kept under
/// `target/previous/COMMIT/`) and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let dir = root.join("target/previous").join(COMMIT);
    let bin = dir.join("netd");
    if bin.exists() {
        return Ok(bin);
    }
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    extract(&root, &src).with_context(|| {
        format!(
            "the previous release {COMMIT} is not in this checkout's history (a shallow clone?): fetch it, or set {ENV}"
        )
    })?;
    eprintln!(
        "building the previous release {} for the upgrade test",
        &COMMIT[..12]
    );
    let target = dir.join("target");
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--locked", "-p", "netd", "--target-dir"])
            .arg(&target)
            .current_dir(&src),
    )?;
    std::fs::copy(target.join("debug/netd"), &bin)
        .with_context(|| format!("copying the previous release's binary to {}", bin.display()))?;
    // The sources and objects are only needed to make the binary.
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&target);
    Ok(bin)
}

/// Writes the tree of [`COMMIT`] into `into` (`git archive | tar -x`).
fn extract(root: &Path, into: &Path) -> anyhow::Result<()> {
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", COMMIT])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(archive.stdout.take().context("git archive's output")?)
        .status()
        .context("running tar")?;
    let archived = archive.wait_with_output()?;
    if !archived.status.success() {
        bail!(
            "git archive {COMMIT}: {}",
            String::from_utf8_lossy(&archived.stderr).trim()
        );
    }
    if !tar.success() {
        bail!("tar -x of the previous release failed");
    }
    Ok(())
}
