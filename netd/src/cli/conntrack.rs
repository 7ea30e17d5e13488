// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};
use crate::api::Flow;

/// List the flows netd translates (its BPF conntrack), with their state,
/// translated address, age and counters.
///
/// Example: `netd conntrack`
#[derive(Args)]
pub struct Conntrack {}

impl Conntrack {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let flows: Vec<Flow> = ctx.client.get("/v1/conntrack").await?;
        if ctx.json {
            return output::json(&flows);
        }
        let rows: Vec<Vec<String>> = flows
            .iter()
            .map(|f| {
                vec![
                    f.proto.clone(),
                    f.src.clone(),
                    f.dst.clone(),
                    f.translated.clone(),
                    f.state.clone(),
                    format!("{}s", f.expires_in_secs),
                    format!("{}/{}", f.packets, f.reply_packets),
                    f.endpoint.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &[
                "PROTO",
                "SOURCE",
                "DESTINATION",
                "TRANSLATED",
                "STATE",
                "EXPIRES",
                "PACKETS",
                "ENDPOINT",
            ],
            &rows,
        );
        Ok(())
    }
}
