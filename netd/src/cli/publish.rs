// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};
use crate::api::{PortsRequest, PortsResponse};

/// Publish container ports on the host, as Docker's `-p`: one map update
/// per spec, no iptables rule, no proxy process.
///
/// SPEC is [HOSTIP:]HOSTPORT[-END]:CTRPORT[-END][/tcp|/udp], HOSTIP::CTRPORT
/// or CTRPORT (ephemeral host ports, printed). A host range maps to a
/// container range of the same length, or every host port to one container
/// port. Several specs are all published or none. TARGET is the endpoint's
/// namespace (name or path) or its name.
///
/// Example: `netd publish 8080:80 127.0.0.1:8443:443 53:53/udp web`
#[derive(Args)]
pub struct Publish {
    /// Port specs, then the endpoint.
    #[arg(required = true, num_args = 2.., value_name = "SPEC... TARGET")]
    args: Vec<String>,
    /// The network of TARGET's endpoint, when TARGET is on several
    /// [default: its endpoint on the default network].
    #[arg(long)]
    network: Option<String>,
}

/// Unpublish ports: the same specs as `publish` (or `CTRPORT` for an
/// ephemeral one). Unpublishing what is not published succeeds.
///
/// Example: `netd unpublish 8080:80 web`
#[derive(Args)]
pub struct Unpublish {
    /// Port specs, then the endpoint.
    #[arg(required = true, num_args = 2.., value_name = "SPEC... TARGET")]
    args: Vec<String>,
    /// The network of TARGET's endpoint, when TARGET is on several.
    #[arg(long)]
    network: Option<String>,
}

fn request(mut args: Vec<String>, network: Option<String>) -> PortsRequest {
    let target = args.pop().expect("clap requires two arguments");
    PortsRequest {
        target,
        specs: args,
        network,
    }
}

impl Publish {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let response: PortsResponse = ctx
            .client
            .post("/v1/ports", &request(self.args, self.network))
            .await?;
        if ctx.json {
            return output::json(&response.ports);
        }
        for port in response.ports {
            println!("{}", port.display);
        }
        Ok(())
    }
}

impl Unpublish {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let response: PortsResponse = ctx
            .client
            .post("/v1/ports/unpublish", &request(self.args, self.network))
            .await?;
        if ctx.json {
            return output::json(&response.ports);
        }
        if response.ports.is_empty() {
            println!("nothing published matched");
        }
        for port in response.ports {
            println!("unpublished {}", port.display);
        }
        Ok(())
    }
}
