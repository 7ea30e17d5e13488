// SPDX-License-Identifier: MIT OR GPL-2.0-only
use std::path::PathBuf;

use clap::Args;

use super::{Context, output};
use crate::{
    agent::{self, state::StateStore},
    api::DownReport,
    client::ClientError,
    netlink::Netlink,
    paths,
};

/// Remove everything netd created in this namespace: endpoints' veths, the
/// bridge, pinned programs and maps, and the state. Idempotent.
///
/// With the agent running, the agent does it and then exits. Without it,
/// this command does it from the state directory.
///
/// Example: `netd down`
#[derive(Args)]
pub struct Down {
    /// The state directory (used when no agent is running).
    #[arg(long, env = "NETD_STATE_DIR", default_value = paths::STATE_DIR)]
    state_dir: PathBuf,
    /// netd's bpffs directory (used when no agent is running).
    #[arg(long, env = "NETD_BPFFS", default_value = paths::BPFFS_DIR)]
    bpffs: PathBuf,
}

impl Down {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let report: DownReport = match ctx.client.post("/v1/down", &()).await {
            Ok(report) => report,
            // Only when no agent listens (no socket, or a stale one):
            // a socket this user may not use (EACCES) has an agent behind
            // it, and going around it would tear its network down under it.
            Err(ClientError::Unreachable { cause, .. })
                if matches!(
                    cause.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                let mut store = StateStore::new(&self.state_dir);
                let state = store.load()?;
                let nl = Netlink::connect()?;
                agent::down(&nl, state.as_ref(), &store, &self.bpffs)
                    .await
                    .into()
            }
            Err(err) => return Err(err.into()),
        };
        if ctx.json {
            output::json(&report)?;
        } else {
            if report.removed.is_empty() && report.errors.is_empty() {
                println!("nothing to remove");
            }
            for line in &report.removed {
                println!("removed {line}");
            }
            for line in &report.errors {
                eprintln!("netd: could not remove: {line}");
            }
        }
        if !report.errors.is_empty() {
            anyhow::bail!("{} object(s) could not be removed", report.errors.len());
        }
        Ok(())
    }
}
