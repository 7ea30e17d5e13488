// SPDX-License-Identifier: MIT OR GPL-2.0-only
use std::fmt::Write as _;

use clap::Args;

use super::Context;
use crate::api::{MonitorDrop, MonitorEvent, MonitorFlow, MonitorLost};

/// Watch the datapath live: every dropped packet (reason, hook, interface,
/// addresses) and every flow conntrack opens or closes, with its
/// translation.
///
/// The programs emit events only while a monitor runs, at most `--rate`
/// per second on each CPU; what the limit or a slow reader costs is shown
/// as a `Lost` line. Lines read like `cilium monitor`'s; `--json` prints one
/// JSON event per line. Runs until interrupted or the agent stops.
///
/// Example: `netd monitor --drops --endpoint web`
#[derive(Args)]
pub struct Monitor {
    /// Show drops (with neither --drops nor --flows: both).
    #[arg(long)]
    drops: bool,
    /// Show flows opened and closed.
    #[arg(long)]
    flows: bool,
    /// Only events to or from this endpoint (its name or container ID).
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,
    /// With each drop, the packet's first bytes (up to 128) in hex.
    #[arg(long, short)]
    verbose: bool,
    /// Events per second each CPU may emit (a token bucket in the kernel;
    /// 1 to 1000000) [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: Option<u32>,
}

impl Monitor {
    pub async fn execute(self, ctx: &Context) -> anyhow::Result<()> {
        let mut query = vec![];
        if self.drops {
            query.push("drops=true".to_owned());
        }
        if self.flows {
            query.push("flows=true".to_owned());
        }
        if let Some(endpoint) = &self.endpoint {
            query.push(format!("endpoint={}", percent_encode(endpoint)));
        }
        if self.verbose {
            query.push("verbose=true".to_owned());
        }
        if let Some(rate) = self.rate {
            query.push(format!("rate={rate}"));
        }
        let path = if query.is_empty() {
            "/v1/monitor".to_owned()
        } else {
            format!("/v1/monitor?{}", query.join("&"))
        };
        let mut lines = ctx.client.stream(&path).await?;
        let what = match (self.drops, self.flows) {
            (true, false) => "drops",
            (false, true) => "flows",
            _ => "drops and flows",
        };
        // On stderr: stdout is the events alone (`--json | jq`).
        eprintln!("Listening for {what}, press Ctrl-C to quit");
        while let Some(line) = lines.next().await? {
            if ctx.json {
                println!("{}", String::from_utf8_lossy(&line));
                continue;
            }
            match serde_json::from_slice::<MonitorEvent>(&line) {
                Ok(event) => print!("{}", render(&event)),
                // A newer agent's event: shown as it came.
                Err(_) => println!("{}", String::from_utf8_lossy(&line)),
            }
        }
        eprintln!("the agent ended the monitor (stopping)");
        Ok(())
    }
}

/// An event as `cilium monitor` would print it, newline included.
fn render(event: &MonitorEvent) -> String {
    match event {
        MonitorEvent::Drop(drop) => render_drop(drop),
        MonitorEvent::Flow(flow) => render_flow(flow),
        MonitorEvent::Lost(lost) => render_lost(lost),
    }
}

fn render_drop(drop: &MonitorDrop) -> String {
    let mut line = format!(
        "xx drop ({}) hook {} ifindex {}",
        drop.reason, drop.hook, drop.ifindex
    );
    if let Some(interface) = &drop.interface {
        let _ = write!(line, " ({interface})");
    }
    if let Some(endpoint) = &drop.endpoint {
        let _ = write!(line, " endpoint {endpoint}");
    }
    let _ = write!(line, " len {}: ", drop.len);
    match (&drop.src, &drop.dst) {
        (Some(src), Some(dst)) => {
            let _ = write!(line, "{src} -> {dst} {}", drop.protocol);
        }
        _ => line.push_str(&drop.protocol),
    }
    if let Some(flags) = &drop.tcp_flags {
        let _ = write!(line, " {flags}");
    }
    if drop.fragment {
        line.push_str(" fragment");
    }
    line.push('\n');
    if let Some(head) = &drop.head {
        line.push_str(&hex_dump(head));
    }
    line
}

fn render_flow(flow: &MonitorFlow) -> String {
    let arrow = if flow.event == "new" { "->" } else { "<-" };
    let mut line = format!("{arrow} flow {}", flow.event);
    if let Some(reason) = &flow.reason {
        let _ = write!(line, " ({reason})");
    }
    let _ = write!(
        line,
        " {}: {} -> {} {}",
        flow.kind, flow.src, flow.dst, flow.protocol
    );
    if flow.translated_src != flow.src || flow.translated_dst != flow.dst {
        let _ = write!(
            line,
            " => {} -> {}",
            flow.translated_src, flow.translated_dst
        );
    }
    if let Some(endpoint) = &flow.endpoint {
        let _ = write!(line, " endpoint {endpoint}");
    }
    line.push('\n');
    line
}

fn render_lost(lost: &MonitorLost) -> String {
    format!(
        "Lost {} events (over the rate {}, ring full {}, slow reader {})\n",
        lost.total(),
        lost.rate,
        lost.full,
        lost.slow
    )
}

/// `hex` (two digits a byte) as `tcpdump -X` lays it out: 16 bytes a line.
fn hex_dump(hex: &str) -> String {
    let bytes: Vec<&str> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap_or("??"))
        .collect();
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let _ = writeln!(out, "\t0x{:04x}:  {}", row * 16, chunk.join(" "));
    }
    out
}

/// `value` as a URL query value.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_reads_like_cilium_monitor() {
        let drop = MonitorDrop {
            time: "2026-12-06T08:00:00Z".to_owned(),
            reason: "spoofed_source".to_owned(),
            hook: "endpoint_tc".to_owned(),
            ifindex: 9,
            interface: Some("vethab12".to_owned()),
            endpoint: Some("web".to_owned()),
            len: 74,
            protocol: "tcp".to_owned(),
            src: Some("172.30.9.9:40000".to_owned()),
            dst: Some("10.250.0.2:80".to_owned()),
            tcp_flags: Some("SYN".to_owned()),
            fragment: false,
            head: Some("00112233445566778899aabbccddeeff01".to_owned()),
        };
        assert_eq!(
            render(&MonitorEvent::Drop(drop)),
            "xx drop (spoofed_source) hook endpoint_tc ifindex 9 (vethab12) endpoint web len 74: \
             172.30.9.9:40000 -> 10.250.0.2:80 tcp SYN\n\
             \t0x0000:  00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff\n\
             \t0x0010:  01\n"
        );
    }

    #[test]
    fn a_flow_shows_its_translation_only_when_there_is_one() {
        let mut flow = MonitorFlow {
            time: String::new(),
            event: "new".to_owned(),
            kind: "published".to_owned(),
            protocol: "tcp".to_owned(),
            src: "10.250.0.2:40000".to_owned(),
            dst: "10.250.0.1:8080".to_owned(),
            translated_src: "10.250.0.2:40000".to_owned(),
            translated_dst: "172.30.0.2:80".to_owned(),
            endpoint: None,
            reason: None,
        };
        assert_eq!(
            render_flow(&flow),
            "-> flow new published: 10.250.0.2:40000 -> 10.250.0.1:8080 tcp => \
             10.250.0.2:40000 -> 172.30.0.2:80\n"
        );
        flow.event = "closed".to_owned();
        flow.reason = Some("expired".to_owned());
        flow.translated_dst = flow.dst.clone();
        assert_eq!(
            render_flow(&flow),
            "<- flow closed (expired) published: 10.250.0.2:40000 -> 10.250.0.1:8080 tcp\n"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(percent_encode("web-1.a_b"), "web-1.a_b");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
