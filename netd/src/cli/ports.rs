// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};
use crate::api::Port;

/// List published ports with their counters (packets and bytes translated,
/// flows created).
///
/// Example: `netd ports`, `netd ports --json`
#[derive(Args)]
pub struct Ports {}

impl Ports {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let ports: Vec<Port> = ctx.client.get("/v1/ports").await?;
        if ctx.json {
            return output::json(&ports);
        }
        let rows: Vec<Vec<String>> = ports
            .iter()
            .map(|p| {
                vec![
                    p.display.clone(),
                    p.endpoint.clone(),
                    format!("{}:{}", p.container_ip, p.container_port),
                    p.packets.to_string(),
                    p.bytes.to_string(),
                    p.flows.to_string(),
                ]
            })
            .collect();
        output::table(
            &["PORT", "ENDPOINT", "CONTAINER", "PACKETS", "BYTES", "FLOWS"],
            &rows,
        );
        Ok(())
    }
}
