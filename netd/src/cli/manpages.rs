// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd manpages DIR` (hidden; `cargo xtask package` runs it): netd(8)
//! and a page per command, netd-network-create(8) and so on, written from
//! the same definitions as `--help`, so that the two never disagree.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};

/// Write the man pages into a directory.
#[derive(Args)]
pub struct Manpages {
    dir: PathBuf,
}

impl Manpages {
    pub fn execute(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut cli = super::Cli::command();
        cli.build();
        write_pages(&cli, "netd", &self.dir)
    }
}

/// The page of `cmd` (named `name`), then its subcommands', recursively.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    // Section 8: the agent is a system administration daemon, and every
    // command needs root.
    // After `build`, a subcommand's display name is `netd-network-create`:
    // the page's title and NAME.
    let page = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("netd manual");
    let mut text = Vec::new();
    page.render(&mut text)?;
    let path = dir.join(format!("{name}.8"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
        }
    }
    Ok(())
}
