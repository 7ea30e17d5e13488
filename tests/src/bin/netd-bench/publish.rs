// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! B4: how long publishing takes, each system asked the way its users ask
//! it.
//!
//! - iptables: the three `iptables -A` commands dockerd runs per port (it
//!   also runs a `-C` check before each, left out here in iptables' favour);
//!   10,000 ports as one `iptables-restore --noflush`.
//! - nftables: `nft add element` into the DNAT map; 10,000 ports as one
//!   `nft -f`.
//! - netd: one `POST /v1/ports` to the agent (what a runtime does), and,
//!   reported beside it, the `netd publish` command (process start
//!   included); 10,000 ports as one request.
//!
//! Commands run from a thread inside the bed's host namespace, so the
//! figures hold no `nsenter`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    beds::{Bed, Kind, feed},
    measure::Measure,
    peers::{self, Port, Proto},
    series::{Series, rotation, stopped},
};

/// The variants of B4.
pub const KINDS: [Kind; 4] = [Kind::IptLegacy, Kind::IptNft, Kind::NftMap, Kind::Netd];
/// The port published one at a time (outside the fillers' range).
const ONE: Port = Port {
    proto: Proto::Tcp,
    host: 19999,
    ctr: 19999,
};

/// Runs B4: three series (one port at 0 and at `existing`, `existing` in
/// one call), interleaved over `rounds` rounds.
pub fn b4(beds: &mut BTreeMap<Kind, Bed>, rounds: usize, existing: usize) -> Vec<Series> {
    let mut at_zero = series("publish 1 port, none published");
    let mut at_many = series(&format!("publish 1 port, {existing} published"));
    let mut many = series(&format!("publish {existing} ports in one call"));
    let kinds: Vec<Kind> = KINDS.into_iter().filter(|k| beds.contains_key(k)).collect();
    for (round, index) in rotation(rounds, kinds.len()) {
        if stopped() {
            break;
        }
        let kind = kinds[index];
        let bed = beds.get_mut(&kind).expect("filtered above");
        match one_round(bed, existing) {
            Ok([a, b, c]) => {
                eprintln!(
                    "  B4 round {}: {:<16} 1 at 0: {:.2} ms, 1 at {existing}: {:.2} ms, {existing} at once: {:.1} ms",
                    round + 1,
                    kind.label(),
                    a.value,
                    b.value,
                    c.value
                );
                for (s, m) in [(&mut at_zero, a), (&mut at_many, b), (&mut many, c)] {
                    s.samples.push(crate::series::Sample {
                        kind,
                        round,
                        measure: m,
                    });
                }
            }
            Err(err) => {
                eprintln!("  B4 round {}: {} FAILED: {err:#}", round + 1, kind.label());
                for s in [&mut at_zero, &mut at_many, &mut many] {
                    s.failures.push((kind, round, format!("{err:#}")));
                }
            }
        }
        // Back to the bed's usual configuration, whatever happened.
        if let Err(err) = bed.set_ports(1) {
            eprintln!("  B4: restoring {}: {err:#}", kind.label());
        }
    }
    vec![at_zero, at_many, many]
}

fn series(case: &str) -> Series {
    // Whole-machine CPU time has 10 ms ticks: too coarse to show here.
    Series::new("B4", case, "ms", false, &[Kind::IptNft]).cpu("", 0.0)
}

/// One variant's three timings, from an empty configuration.
fn one_round(bed: &mut Bed, existing: usize) -> anyhow::Result<[Measure; 3]> {
    bed.publish_set(&[])?;
    let at_zero = publish_one(bed)?;
    bed.publish_set(&[])?;
    let fillers: Vec<Port> = peers::fillers(existing).collect();
    let many = timed(|| publish_many(bed, &fillers))?;
    for port in &fillers {
        bed.note_published(*port);
    }
    let at_many = publish_one(bed)?;
    Ok([at_zero, at_many, many])
}

/// Publishes [`ONE`] the way the bed's system does, timed; for netd the
/// CLI's time goes into the detail.
fn publish_one(bed: &mut Bed) -> anyhow::Result<Measure> {
    let measure = match bed.kind {
        Kind::IptLegacy | Kind::IptNft => {
            let tool = bed.iptables().expect("an iptables bed");
            let _inside = bed.host.enter();
            timed(|| {
                for (table, rule) in peers::docker_port_rules(&ONE) {
                    let mut cmd = Command::new(tool);
                    cmd.args(["-t", table, "-A"]).args(rule.split_whitespace());
                    run(&mut cmd)?;
                }
                Ok(())
            })?
        }
        Kind::NftMap => {
            let _inside = bed.host.enter();
            let element = format!("{{ {} }}", peers::nft_element(&ONE));
            timed(|| {
                run(Command::new("nft")
                    .args(["add", "element", "ip", "netbench", "pubports", &element]))
            })?
        }
        Kind::Netd | Kind::NetdXdp => {
            let socket = bed.netd()?.socket();
            let target = bed.ctr.name().to_owned();
            let mut api = timed(|| api_publish(&socket, &target, &[ONE]))?;
            bed.netd_cli("unpublish", &[ONE])?;
            let cli = timed(|| bed.netd_cli("publish", &[ONE]))?;
            api.detail = serde_json::json!({ "cli_ms": cli.value });
            api
        }
        kind => bail!("{} has nothing to publish", kind.label()),
    };
    bed.note_published(ONE);
    Ok(measure)
}

/// Publishes `ports` in one call.
fn publish_many(bed: &Bed, ports: &[Port]) -> anyhow::Result<()> {
    match bed.kind {
        Kind::IptLegacy | Kind::IptNft => {
            let mut nat = String::from("*nat\n");
            let mut filter = String::from("*filter\n");
            for port in ports {
                for (table, rule) in peers::docker_port_rules(port) {
                    let text = if table == "nat" {
                        &mut nat
                    } else {
                        &mut filter
                    };
                    text.push_str("-A ");
                    text.push_str(&rule);
                    text.push('\n');
                }
            }
            let input = format!("{nat}COMMIT\n{filter}COMMIT\n");
            let tool = format!("{}-restore", bed.iptables().expect("an iptables bed"));
            let _inside = bed.host.enter();
            feed(Command::new(tool).arg("--noflush"), &input)
        }
        Kind::NftMap => {
            let elements: Vec<String> = ports.iter().map(peers::nft_element).collect();
            let input = format!(
                "add element ip netbench pubports {{ {} }}\n",
                elements.join(", ")
            );
            let _inside = bed.host.enter();
            feed(Command::new("nft").args(["-f", "-"]), &input)
        }
        Kind::Netd | Kind::NetdXdp => api_publish(&bed.netd()?.socket(), bed.ctr.name(), ports),
        kind => bail!("{} has nothing to publish", kind.label()),
    }
}

/// Times `f` as a measure in milliseconds.
fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Measure> {
    let cpu_before = crate::measure::busy_cpu_s()?;
    let started = Instant::now();
    f()?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(Measure {
        value: ms,
        cpu_s: crate::measure::busy_cpu_s()? - cpu_before,
        ops: 1.0,
        p50_us: None,
        p99_us: None,
        detail: serde_json::Value::Null,
    })
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `POST /v1/ports` over the agent's socket: a minimal HTTP/1.1 client, so
/// the figure is the agent's work and one round trip, nothing else.
pub(crate) fn api_publish(socket: &Path, target: &str, ports: &[Port]) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "target": target,
        "specs": ports.iter().map(Port::spec).collect::<Vec<_>>(),
    })
    .to_string();
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "POST /v1/ports HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status != "201" {
        bail!(
            "POST /v1/ports: {}",
            response.lines().last().unwrap_or_default()
        );
    }
    Ok(())
}
