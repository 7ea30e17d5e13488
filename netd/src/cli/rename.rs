// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};
use crate::api::Endpoint;

/// Rename a container's endpoints: the one named (or with the ID) ENDPOINT
/// and the others of its namespace, one per network, as `docker rename`
/// renames a container. Its name in DNS changes with it, at once.
///
/// Example: `netd rename web frontend`
#[derive(Args)]
pub struct Rename {
    /// The endpoint's name or ID.
    endpoint: String,
    /// Its new name.
    name: String,
}

impl Rename {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let renamed: Vec<Endpoint> = ctx
            .client
            .post(
                "/v1/rename",
                &crate::api::RenameRequest {
                    target: self.endpoint,
                    name: self.name,
                },
            )
            .await?;
        if ctx.json {
            return output::json(&renamed);
        }
        for ep in renamed {
            println!(
                "renamed {} ({}, network {}) to {}",
                ep.id, ep.ip, ep.network, ep.name
            );
        }
        Ok(())
    }
}
