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
/// The agent answers the endpoint's name and aliases in DNS on the
/// network's gateway, to the namespaces on that network; `nameserver:`
/// says where (and `--resolv-conf` writes it for the container).
///
/// Examples: `netd attach web --ip 172.17.0.10`, `netd attach web --network backend --alias www,api`
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
    /// The endpoint's name, also its name in DNS [default: the namespace's
    /// name].
    #[arg(long)]
    name: Option<String>,
    /// More names it answers to in DNS on the network; repeat or
    /// comma-separate.
    #[arg(long = "alias", value_delimiter = ',', value_name = "NAME")]
    aliases: Vec<String>,
    /// Write a resolv.conf naming the network's nameserver (and the
    /// network as search domain) at PATH, for the container to mount as
    /// its /etc/resolv.conf.
    #[arg(long, value_name = "PATH")]
    resolv_conf: Option<std::path::PathBuf>,
    /// Publish a port, as Docker's -p: [HOSTIP:]HOSTPORT[-END]:CTRPORT[-END][/PROTO]
    /// (repeatable; all or none).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    ports: Vec<String>,
}

impl Attach {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        // Checked before the attach, which a bad path must not leave
        // behind.
        if let Some(path) = &self.resolv_conf {
            check_resolv_conf_path(path)?;
            let status: crate::api::Status = ctx.client.get("/v1/status").await?;
            if status.dns.is_none() {
                anyhow::bail!("--resolv-conf: the agent serves no DNS (it runs with --no-dns)");
            }
        }
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
            aliases: self.aliases,
        };
        let endpoint: Endpoint = ctx.client.post("/v1/endpoints", &request).await?;
        if let Some(path) = &self.resolv_conf {
            // All or nothing: an attach whose resolv.conf cannot be had is
            // undone.
            let written = match &endpoint.dns {
                Some(dns) => write_resolv_conf(path, dns),
                None => Err(anyhow::anyhow!(
                    "--resolv-conf: the agent serves no DNS on network {} (see its log)",
                    endpoint.network
                )),
            };
            if let Err(err) = written {
                let undo = format!("/v1/endpoints/{}", endpoint.id);
                if let Err(undo_err) = ctx.client.delete::<Endpoint>(&undo).await {
                    anyhow::bail!(
                        "{err:#}; and detaching {} failed: {undo_err:#}",
                        endpoint.name
                    );
                }
                return Err(err);
            }
        }
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
    if ep.host_ifname.is_empty() {
        println!("interface: {} (on the LAN)", ep.ifname);
    } else {
        println!("interface: {} (host side {})", ep.ifname, ep.host_ifname);
    }
    println!("ip:        {}/{} via {}", ep.ip, ep.prefix_len, ep.gateway);
    println!("mac:       {}", ep.mac);
    for port in &ep.ports {
        println!("port:      {port}");
    }
    if !ep.aliases.is_empty() {
        println!("aliases:   {}", ep.aliases.join(", "));
    }
    if let Some(dns) = &ep.dns {
        let servers: Vec<String> = dns.nameservers.iter().map(ToString::to_string).collect();
        println!(
            "nameserver: {} (search {})",
            servers.join(", "),
            dns.search.join(" ")
        );
    }
}

/// A resolv.conf path must be a file to be, in a directory that is.
fn check_resolv_conf_path(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "--resolv-conf {}: {} is not a directory",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        anyhow::bail!("--resolv-conf {}: is a directory", path.display());
    }
    Ok(())
}

/// The resolv.conf of a container on the endpoint's network, written
/// whole or not at all (a temporary file renamed over it).
fn write_resolv_conf(path: &std::path::Path, dns: &crate::api::EndpointDns) -> anyhow::Result<()> {
    let mut text = String::from("# written by netd attach: names are answered by the netd agent\n");
    text.push_str(&format!("search {}\n", dns.search.join(" ")));
    for server in &dns.nameservers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    let temporary = path.with_extension("netd-tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|err| {
            let _ = std::fs::remove_file(&temporary);
            anyhow::anyhow!("--resolv-conf {}: {err}", path.display())
        })
}
