// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};
use crate::api::Endpoint;

/// List attached endpoints, one per line, like `docker ps`.
///
/// Example: `netd ps`, `netd ps --json`
#[derive(Args)]
pub struct Ps {}

impl Ps {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let endpoints: Vec<Endpoint> = ctx.client.get("/v1/endpoints").await?;
        if ctx.json {
            return output::json(&endpoints);
        }
        let rows: Vec<Vec<String>> = endpoints
            .iter()
            .map(|ep| {
                vec![
                    ep.id[..12].to_owned(),
                    ep.name.clone(),
                    ep.network.clone(),
                    ep.netns.clone(),
                    ep.ip.to_string(),
                    ep.mac.to_string(),
                    ep.ports.join(", "),
                ]
            })
            .collect();
        output::table(
            &[
                "ENDPOINT ID",
                "NAME",
                "NETWORK",
                "NETNS",
                "IP",
                "MAC",
                "PORTS",
            ],
            &rows,
        );
        Ok(())
    }
}
