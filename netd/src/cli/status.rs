// SPDX-License-Identifier: MIT OR GPL-2.0-only
use clap::Args;

use super::{Context, output};

/// Show the agent's state: network, uplinks, endpoints, paths, and the
/// health of each part (the pinned maps, each uplink's and endpoint's
/// attachment, host-local access).
///
/// Exits 1 when a part is not ok, after printing, so that it serves as a
/// health check.
///
/// Example: `netd status`, `netd status >/dev/null || systemctl restart netd`
#[derive(Args)]
pub struct Status {}

impl Status {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let status: crate::api::Status = ctx.client.get("/v1/status").await?;
        if ctx.json {
            output::json(&status)?;
            if status.unhealthy().next().is_some() {
                // The answer is the JSON above: an error object after it
                // would make two documents of one output.
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                std::process::exit(1);
            }
            return Ok(());
        }
        println!("agent:     netd {} (pid {})", status.version, status.pid);
        println!("network:   {} on bridge {}", status.network, status.bridge);
        println!(
            "subnet:    {} (gateway {}, MTU {})",
            status.subnet, status.gateway, status.mtu
        );
        let uplinks = if status.uplinks.is_empty() {
            "none".to_owned()
        } else {
            status.uplinks.join(", ")
        };
        println!("uplinks:   {uplinks}");
        println!("endpoints: {}", status.endpoints);
        println!("state:     {}", status.state_dir);
        match (&status.state_error, status.state_full) {
            (Some(error), true) => println!(
                "state:     the state directory is full: additions are refused; reads, unpublish and detach are served ({error})"
            ),
            (Some(error), false) => {
                println!("state:     a write failed; retrying every second ({error})")
            }
            (None, _) => {}
        }
        println!("bpffs:     {}", status.bpffs);
        println!(
            "dns:       {}",
            status.dns.as_deref().unwrap_or("off (--no-dns)")
        );
        let tc = match status.tc_attach.as_str() {
            "netlink" => "clsact via netlink",
            "tcx" => "tcx (BPF links)",
            other => other,
        };
        println!(
            "kernel:    {} (tc: {tc}; redirect: {}; host-local access: {})",
            status.kernel,
            status.redirect,
            if status.host_local { "on" } else { "off" }
        );
        for (uplink, mode) in &status.xdp {
            println!("xdp:       {mode} on {uplink}");
        }
        for lack in &status.degraded {
            println!("degraded:  {lack}");
        }
        if status.health.is_empty() {
            // An agent older than the health list.
            return Ok(());
        }
        println!();
        let rows: Vec<Vec<String>> = status
            .health
            .iter()
            .map(|part| {
                let detail = match &part.hint {
                    Some(hint) => format!("{}; hint: {hint}", part.detail),
                    None => part.detail.clone(),
                };
                vec![part.name.clone(), part.state.as_str().to_owned(), detail]
            })
            .collect();
        output::table(&["PART", "STATE", "DETAIL"], &rows);
        let unhealthy: Vec<String> = status
            .unhealthy()
            .map(|part| format!("{} is {}", part.name, part.state.as_str()))
            .collect();
        if !unhealthy.is_empty() {
            anyhow::bail!("not healthy: {}", unhealthy.join(", "));
        }
        Ok(())
    }
}
