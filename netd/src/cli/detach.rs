// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};
use crate::api::{DetachRequest, DetachResponse, Endpoint};

/// Detach a network namespace (or a named endpoint) and free its address.
///
/// Detaching a namespace succeeds when nothing is attached for it, when it
/// was already deleted, and when called twice, as runtimes expect. Detaching
/// by --name fails if no endpoint has that name.
///
/// Without --network, every endpoint of the namespace is detached.
///
/// Examples: `netd detach web`, `netd detach web --network backend`,
/// `netd detach /proc/1234/ns/net`, `netd detach --name web`
#[derive(Args)]
pub struct Detach {
    /// The network namespace (name or path).
    #[arg(required_unless_present = "name", conflicts_with = "name")]
    netns: Option<String>,
    /// The endpoint's name or ID, instead of a namespace.
    #[arg(long)]
    name: Option<String>,
    /// Only the namespace's endpoint on this network (name or ID).
    #[arg(long, conflicts_with = "name")]
    network: Option<String>,
}

impl Detach {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let detached: Vec<Endpoint> = match (self.netns, self.name) {
            (_, Some(name)) => {
                let path = format!("/v1/endpoints/{}", url_escape(&name));
                vec![ctx.client.delete(&path).await?]
            }
            (Some(netns), None) => {
                let response: DetachResponse = ctx
                    .client
                    .post(
                        "/v1/detach",
                        &DetachRequest {
                            netns,
                            network: self.network,
                        },
                    )
                    .await?;
                response.detached
            }
            (None, None) => unreachable!("clap requires one of them"),
        };
        if ctx.json {
            return output::json(&detached);
        }
        if detached.is_empty() {
            println!("nothing attached");
        }
        for ep in detached {
            println!(
                "detached {} ({}, {}, network {})",
                ep.name, ep.ip, ep.netns, ep.network
            );
        }
        Ok(())
    }
}

/// Percent-encodes what is not safe in a URL path segment.
pub(super) fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
