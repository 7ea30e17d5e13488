// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};

/// Show the datapath's counters: drops by reason, packets per hook and
/// protocol, traffic per published port, conntrack use.
///
/// Example: `netd stats`
#[derive(Args)]
pub struct Stats {}

impl Stats {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let stats: crate::api::Stats = ctx.client.get("/v1/stats").await?;
        if ctx.json {
            return output::json(&stats);
        }
        println!(
            "conntrack: {} of {} entries",
            stats.conntrack_entries, stats.conntrack_max
        );
        println!("xdp:       {}", if stats.xdp { "on" } else { "off" });
        let memory: u64 = stats.maps.iter().map(|m| m.memory_bytes).sum();
        println!(
            "maps:      {:.1} MiB in {} maps (fixed: preallocated or capped)",
            memory as f64 / f64::from(1 << 20),
            stats.maps.len()
        );
        let mib = |bytes: Option<u64>| {
            bytes.map_or("unknown".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
            })
        };
        println!(
            "agent:     {} heap in use, {} resident",
            mib(stats.agent.heap_bytes),
            mib(stats.agent.rss_bytes)
        );
        println!("\ndrops:");
        for (reason, count) in &stats.drops {
            println!("  {reason:<20} {count}");
        }
        println!("\npackets per hook:");
        let rows: Vec<Vec<String>> = stats
            .hooks
            .iter()
            .map(|(hook, s)| {
                vec![
                    hook.clone(),
                    s.ipv4_tcp.to_string(),
                    s.ipv4_udp.to_string(),
                    s.ipv4_icmp.to_string(),
                    s.ipv4_other.to_string(),
                    s.ipv6.to_string(),
                    s.arp.to_string(),
                    s.other.to_string(),
                    s.bytes.to_string(),
                ]
            })
            .collect();
        output::table(
            &[
                "HOOK",
                "TCP",
                "UDP",
                "ICMP",
                "IPV4-OTHER",
                "IPV6",
                "ARP",
                "OTHER",
                "BYTES",
            ],
            &rows,
        );
        if !stats.ports.is_empty() {
            println!("\nports:");
            for p in &stats.ports {
                println!(
                    "  {:<28} {} packets, {} bytes, {} flows",
                    p.display, p.packets, p.bytes, p.flows
                );
            }
        }
        if !stats.endpoints.is_empty() {
            println!("\nLAN endpoints:");
            for ep in &stats.endpoints {
                println!(
                    "  {:<28} {} packets, {} bytes, {} dropped ({})",
                    ep.name, ep.packets, ep.bytes, ep.dropped, ep.network
                );
            }
        }
        Ok(())
    }
}
