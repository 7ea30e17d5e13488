// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::{Args, Subcommand};

use super::{Context, detach::url_escape, output};
use crate::api::{NetworkCreateRequest, NetworkInspect, NetworkSummary};

/// Manage networks, as `docker network` does.
#[derive(Args)]
pub struct Network {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Create a network: its own bridge (or a LAN's parent), subnet and
    /// gateway; prints its ID.
    ///
    /// Without --subnet, a bridge network takes the next pool no network,
    /// route or address of the host overlaps, as Docker allocates them
    /// (172.17-31.0.0/16, then 192.168.0.0/16 in /20s). Options (-o) are
    /// Docker's bridge driver's: com.docker.network.bridge.name, .enable_icc,
    /// .enable_ip_masquerade, .host_binding_ipv4 and
    /// com.docker.network.driver.mtu.
    ///
    /// --driver macvlan and --driver ipvlan put containers on the LAN of a
    /// host interface, with the LAN's --subnet and --gateway: -o parent=IFACE
    /// (IFACE.VLAN makes the 802.1Q sub-interface), -o
    /// macvlan_mode=bridge|private|vepa|passthru, -o ipvlan_mode=l2|l3|l3s,
    /// -o ipvlan_flag=bridge|private|vepa, and -o host_access=true for a
    /// host-side shim through which the host reaches its containers.
    ///
    /// Examples: `netd network create backend --subnet 10.89.0.0/24 -o com.docker.network.bridge.enable_icc=false`;
    /// `netd network create lan --driver macvlan -o parent=eth0 --subnet 192.168.1.0/24 --gateway 192.168.1.1 --ip-range 192.168.1.128/25`
    Create(Create),
    /// List networks, like `docker network ls`.
    #[command(visible_alias = "list")]
    Ls,
    /// Print networks as JSON, shaped like `docker network inspect` (every
    /// network without a NAME).
    ///
    /// Example: `netd network inspect backend | jq '.[0].Containers'`
    Inspect {
        /// Network names or IDs.
        names: Vec<String>,
    },
    /// Remove networks; refused while endpoints are attached to one.
    ///
    /// Example: `netd network rm backend`
    #[command(visible_alias = "remove")]
    Rm {
        /// Network names or IDs.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args)]
struct Create {
    name: String,
    /// The subnet, CIDR [default: the next free pool].
    #[arg(long)]
    subnet: Option<String>,
    /// The gateway [default: the subnet's first address].
    #[arg(long)]
    gateway: Option<String>,
    /// bridge, macvlan or ipvlan.
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Give endpoints addresses from this part of the subnet only, CIDR.
    #[arg(long, value_name = "CIDR")]
    ip_range: Option<String>,
    /// An address no endpoint gets, NAME=IP (repeatable).
    #[arg(long = "aux-address", value_name = "NAME=IP")]
    aux_addresses: Vec<String>,
    /// No traffic to or from outside the network.
    #[arg(long)]
    internal: bool,
    /// A driver option, KEY=VALUE (repeatable).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
}

impl Network {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        match self.command {
            NetworkCommand::Create(create) => {
                let request = NetworkCreateRequest {
                    name: create.name,
                    subnet: create.subnet,
                    gateway: create.gateway,
                    driver: create.driver,
                    ip_range: create.ip_range,
                    aux_addresses: create.aux_addresses,
                    internal: create.internal,
                    options: create.options,
                    labels: create.labels,
                    exist_ok: false,
                };
                let created: NetworkSummary = ctx.client.post("/v1/networks", &request).await?;
                if ctx.json {
                    return output::json(&created);
                }
                println!("{}", created.id);
                Ok(())
            }
            NetworkCommand::Ls => {
                let networks: Vec<NetworkSummary> = ctx.client.get("/v1/networks").await?;
                if ctx.json {
                    return output::json(&networks);
                }
                let rows: Vec<Vec<String>> = networks
                    .iter()
                    .map(|net| {
                        vec![
                            net.id[..12].to_owned(),
                            net.name.clone(),
                            net.driver.clone(),
                            net.scope.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows);
                Ok(())
            }
            NetworkCommand::Inspect { names } => {
                let networks: Vec<NetworkInspect> = if names.is_empty() {
                    ctx.client.get("/v1/network").await?
                } else {
                    let mut all = Vec::new();
                    for name in &names {
                        let path = format!("/v1/networks/{}", url_escape(name));
                        all.push(ctx.client.get(&path).await?);
                    }
                    all
                };
                output::json(&networks)
            }
            NetworkCommand::Rm { names } => {
                // As Docker: each name on its own, the failures reported
                // and counted in the exit status.
                let mut failed = 0;
                let mut removed = Vec::new();
                for name in &names {
                    let path = format!("/v1/networks/{}", url_escape(name));
                    match ctx.client.delete::<NetworkSummary>(&path).await {
                        Ok(net) => {
                            if !ctx.json {
                                println!("{name}");
                            }
                            removed.push(net);
                        }
                        // One name: its error is the command's.
                        Err(err) if names.len() == 1 => return Err(err.into()),
                        Err(err) => {
                            failed += 1;
                            eprintln!("netd: {}", crate::error::one_line(&err));
                        }
                    }
                }
                if ctx.json {
                    output::json(&removed)?;
                }
                if failed > 0 {
                    anyhow::bail!("{failed} of {} network(s) not removed", names.len());
                }
                Ok(())
            }
        }
    }
}
