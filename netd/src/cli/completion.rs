// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd completion SHELL`, as `docker completion`: the shell's completion
//! script on standard output. The package installs bash's, zsh's and
//! fish's where those shells look.

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

/// Print the completion script of a shell (bash, zsh, fish, elvish,
/// powershell).
///
/// Example: `netd completion bash > /etc/bash_completion.d/netd`
#[derive(Args)]
pub struct Completion {
    shell: Shell,
}

impl Completion {
    pub fn execute(self) -> anyhow::Result<()> {
        // Into memory first: clap_complete panics on a failed write, and a
        // closed pipe (`| head`) is no reason to.
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut super::Cli::command(), "netd", &mut script);
        match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(anyhow::Error::new(err).context("writing the completion script"))
            }
            _ => Ok(()),
        }
    }
}
