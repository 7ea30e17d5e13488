// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::{Args, Subcommand};

use super::{Context, output};
use crate::api::NetworkInspect;

/// Look at netd's network.
#[derive(Args)]
pub struct Network {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Print the network as JSON, shaped like `docker network inspect`.
    ///
    /// Example: `netd network inspect | jq '.[0].Containers'`
    Inspect,
}

impl Network {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        match self.command {
            NetworkCommand::Inspect => {
                let networks: Vec<NetworkInspect> = ctx.client.get("/v1/network").await?;
                output::json(&networks)
            }
        }
    }
}
