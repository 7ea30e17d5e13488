// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `cargo xtask package`: netd's Debian package, with cargo-deb. The man
//! pages and completions come from the release binary itself (`netd
//! manpages`, `netd completion`), so they describe exactly what is packaged.

use std::{fs, os::unix::fs::symlink, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd::{self, cargo, workspace_root};

/// Where the package goes (`deb/`).
fn staging() -> PathBuf {
    workspace_root().join("target/package")
}

/// Where the generated assets go: under target/release, where cargo-deb
/// takes an asset path for a build product (found in the real target
/// directory, no warning that it "will not be built").
fn assets() -> PathBuf {
    workspace_root().join("target/release/deb-assets")
}

/// Builds the package; returns the .deb's path.
pub fn build() -> anyhow::Result<PathBuf> {
    crate::setup::cargo_deb()?;
    cmd::run(cargo().args(["build", "--release", "-p", "netd"]))?;
    let netd = workspace_root().join("target/release/netd");
    let dir = staging();
    let _ = fs::remove_dir_all(&dir);
    let generated = assets();
    let _ = fs::remove_dir_all(&generated);
    let (man, completions, cni) = (
        generated.join("man"),
        generated.join("completions"),
        generated.join("cni"),
    );
    for d in [&completions, &cni] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    cmd::run(Command::new(&netd).arg("manpages").arg(&man))?;
    // Compressed, as Debian's policy wants (cargo-deb compresses only the
    // man pages it does not take for build products).
    let pages: Vec<PathBuf> = fs::read_dir(&man)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "8"))
        .collect();
    if pages.is_empty() {
        bail!("netd manpages wrote no page into {}", man.display());
    }
    cmd::run(Command::new("gzip").arg("-9nf").args(&pages))?;
    for (shell, file) in [
        ("bash", "netd.bash"),
        ("zsh", "_netd"),
        ("fish", "netd.fish"),
    ] {
        let out = Command::new(&netd)
            .args(["completion", shell])
            .output()
            .context("running netd completion")?;
        if !out.status.success() {
            bail!("netd completion {shell} failed");
        }
        fs::write(completions.join(file), out.stdout)?;
    }
    // Runtimes look for CNI plugins in /usr/lib/cni; the binary is the
    // plugin when CNI_COMMAND is set.
    symlink("/usr/bin/netd", cni.join("netd")).context("making the CNI plugin link")?;
    let out = dir.join("deb");
    fs::create_dir_all(&out)?;
    cmd::run(
        cargo()
            .args(["deb", "-p", "netd", "--no-build", "--output"])
            .arg(&out),
    )
    .context("cargo deb")?;
    let deb = fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb made no .deb")?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}
