// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};
use crate::api::{AttachRequest, Endpoint};

/// Attach a network namespace to a netd network: a veth pair on the
/// network's bridge, an address, a MAC, the MTU and, on the namespace's
/// first network, a default route via the gateway.
///
/// NETNS is a name under /run/netns or a path to a namespace file
/// (/proc/PID/ns/net or a bind mount). A namespace may be on several
/// networks: `eth0` on the first, `eth1` on the second, ...
///
/// Examples: `netd attach web --ip 172.17.0.10`, `netd attach web --network backend`
#[derive(Args)]
pub struct Attach {
    /// The network namespace (name or path).
    netns: String,
    /// The address to assign [default: the lowest free one].
    #[arg(long)]
    ip: Option<String>,
    /// The MAC address [default: 02:42 followed by the IP's bytes, as Docker].
    #[arg(long)]
    mac: Option<String>,
    /// The network (name or ID) [default: the default network, netd].
    #[arg(long)]
    network: Option<String>,
    /// The interface's name inside the namespace [default: the first free
    /// ethN].
    #[arg(long)]
    ifname: Option<String>,
    /// The endpoint's name [default: the namespace's name].
    #[arg(long)]
    name: Option<String>,
    /// Publish a port, as Docker's -p: [HOSTIP:]HOSTPORT[-END]:CTRPORT[-END][/PROTO]
    /// (repeatable; all or none).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    ports: Vec<String>,
}

impl Attach {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let request = AttachRequest {
            netns: self.netns,
            ip: self.ip,
            mac: self.mac,
            ifname: self.ifname,
            name: self.name,
            ports: self.ports,
            owner: None,
            container_id: None,
            network: self.network,
        };
        let endpoint: Endpoint = ctx.client.post("/v1/endpoints", &request).await?;
        if ctx.json {
            return output::json(&endpoint);
        }
        print_endpoint(&endpoint);
        Ok(())
    }
}

pub fn print_endpoint(ep: &Endpoint) {
    println!("name:      {}", ep.name);
    println!("network:   {}", ep.network);
    println!("endpoint:  {}", ep.id);
    println!("netns:     {}", ep.netns);
    println!("interface: {} (host side {})", ep.ifname, ep.host_ifname);
    println!("ip:        {}/{} via {}", ep.ip, ep.prefix_len, ep.gateway);
    println!("mac:       {}", ep.mac);
    for port in &ep.ports {
        println!("port:      {port}");
    }
}
