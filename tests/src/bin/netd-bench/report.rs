// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What a bench run writes: results.md (tables, targets, machine facts),
//! results.json (every sample) and b3.svg (B3's scaling as lines over the
//! number of published ports).

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::Context as _;
use plotters::prelude::*;

use crate::{
    beds::Kind,
    monitor::MonitorCost,
    progs::ProgCase,
    scrape::Scrape,
    series::{Row, Series},
    traffic::{InTraffic, NETWORK_COUNTS, PORT_COUNTS, b3_case, b9_case, b9_create_case},
};

/// Everything one run measured.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub quick: bool,
    pub rounds: usize,
    pub seconds: f64,
    pub facts: Vec<(String, String)>,
    pub series: Vec<Series>,
    pub progs: Vec<ProgCase>,
    pub in_traffic: Vec<InTraffic>,
    /// B11 (absent from results of before it).
    #[serde(default)]
    pub monitor: Vec<MonitorCost>,
    /// B12.
    #[serde(default)]
    pub scrape: Option<Scrape>,
}

/// A target of issue 7 and whether this run met it.
pub struct Target {
    pub bench: &'static str,
    pub what: String,
    /// The measured figure, in words.
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

impl Results {
    pub fn find(&self, bench: &str, case: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.bench == bench && s.case == case)
    }

    /// `kind`'s median speed-up over `base` in a series.
    fn ratio(&self, bench: &str, case: &str, kind: Kind, base: Kind) -> Option<f64> {
        Some(self.find(bench, case)?.ratio(kind, base)?.median)
    }

    /// B9 at `count` networks relative to no-NAT of the same rounds.
    pub fn b9_relative(&self, kind: Kind, count: usize) -> Option<f64> {
        self.ratio("B9", &b9_case(count), kind, Kind::NoNat)
    }

    /// B3 at `count` ports relative to no-NAT of the same rounds.
    pub fn b3_relative(&self, kind: Kind, count: usize) -> Option<f64> {
        self.ratio("B3", &b3_case(count), kind, Kind::NoNat)
    }

    /// Evaluates the targets of the issue against this run.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let mut ratio_target = |bench, case: &str, base: Kind, want: f64| {
            let got = self.ratio(bench, case, Kind::Netd, base);
            targets.push(Target {
                bench,
                what: format!("{case}: netd >= {want}x {}", base.label()),
                measured: got.map_or("not measured".into(), |r| format!("{r:.2}x")),
                met: got.map(|r| r >= want),
            });
        };
        for case in ["RR, 1 flow", "RR, 32 flows"] {
            ratio_target("B1", case, Kind::NoNat, 1.0);
            ratio_target("B1", case, Kind::IptNft, 1.2);
        }
        ratio_target("B2", "CRR, 1 port", Kind::NoNat, 0.95);
        ratio_target("B2", "CRR, 1 port", Kind::IptNft, 1.35);
        ratio_target("B5", "bulk inbound", Kind::NoNat, 1.0);
        ratio_target("B5", "bulk inbound", Kind::Proxy, 1.3);
        ratio_target("B8", "host-local CRR", Kind::Proxy, 2.0);
        ratio_target("B8", "host-local CRR", Kind::NoNat, 0.98);
        ratio_target("B8", "host-local RR, 1 flow", Kind::NoNat, 0.98);
        ratio_target("B8", "host-local bulk", Kind::NoNat, 0.98);

        for case in ["RR, 1 flow", "RR, 32 flows"] {
            let p99 = |kind| {
                self.find("B1", case)?
                    .rows()
                    .into_iter()
                    .find(|r| r.kind == kind)?
                    .p99_us
            };
            let (ours, theirs) = (p99(Kind::Netd), p99(Kind::NoNat));
            targets.push(Target {
                bench: "B1",
                what: format!("{case}: netd p99 no worse than no NAT"),
                measured: match (ours, theirs) {
                    (Some(a), Some(b)) => format!("{a:.0} µs vs {b:.0} µs"),
                    _ => "not measured".into(),
                },
                met: ours.zip(theirs).map(|(a, b)| a <= b),
            });
        }

        let last = *PORT_COUNTS.last().expect("port counts");
        let flat = self
            .b3_relative(Kind::Netd, last)
            .zip(self.b3_relative(Kind::Netd, 1))
            .map(|(a, b)| a / b);
        targets.push(Target {
            bench: "B3",
            what: format!("netd at {last} ports >= 0.95x netd at 1"),
            measured: flat.map_or("not measured".into(), |r| format!("{r:.2}x")),
            met: flat.map(|r| r >= 0.95),
        });
        for (base, want) in [(Kind::IptNft, 10.0), (Kind::IptLegacy, 5.0)] {
            let got = self.ratio("B3", &b3_case(last), Kind::Netd, base);
            targets.push(Target {
                bench: "B3",
                what: format!("at {last} ports: netd >= {want}x {}", base.label()),
                measured: got.map_or("not measured".into(), |r| format!("{r:.2}x")),
                met: got.map(|r| r >= want),
            });
        }

        let many = *NETWORK_COUNTS.last().expect("network counts");
        let flat = self
            .b9_relative(Kind::Netd, many)
            .zip(self.b9_relative(Kind::Netd, 1))
            .map(|(a, b)| a / b);
        targets.push(Target {
            bench: "B9",
            what: format!("CRR with {many} networks >= 0.95x with 1"),
            measured: flat.map_or("not measured".into(), |r| format!("{r:.2}x")),
            met: flat.map(|r| r >= 0.95),
        });
        let create = |count| self.find("B9", &b9_create_case(count))?.median(Kind::Netd);
        let growth = create(many).zip(create(1));
        targets.push(Target {
            bench: "B9",
            what: format!("network create with {many} networks <= 2x with 1"),
            measured: growth.map_or("not measured".into(), |(a, b)| {
                format!("{a:.1} ms vs {b:.1} ms ({:.2}x)", a / b)
            }),
            met: growth.map(|(a, b)| a <= 2.0 * b),
        });

        let b4 = |case: &str| {
            self.series
                .iter()
                .find(|s| s.bench == "B4" && s.case.starts_with(case))
        };
        if let Some(s) = b4("publish 1 port, 1") {
            let ms = s.median(Kind::Netd);
            targets.push(Target {
                bench: "B4",
                what: format!("{}: netd <= 1 ms", s.case),
                measured: ms.map_or("not measured".into(), |v| format!("{v:.2} ms")),
                met: ms.map(|v| v <= 1.0),
            });
            let r = s.ratio(Kind::Netd, Kind::IptNft).map(|r| r.median);
            targets.push(Target {
                bench: "B4",
                what: format!("{}: netd >= 20x faster than iptables-nft", s.case),
                measured: r.map_or("not measured".into(), |v| format!("{v:.1}x")),
                met: r.map(|v| v >= 20.0),
            });
        }
        if let Some(s) = b4("publish 10000") {
            let ms = s.median(Kind::Netd);
            targets.push(Target {
                bench: "B4",
                what: format!("{}: netd <= 200 ms", s.case),
                measured: ms.map_or("not measured".into(), |v| format!("{v:.1} ms")),
                met: ms.map(|v| v <= 200.0),
            });
        }

        let prog = |case: &str| -> Vec<&ProgCase> {
            self.progs.iter().filter(|p| p.case == case).collect()
        };
        for (case, limit) in [
            ("established DNAT", 100.0),
            ("reverse NAT", 100.0),
            ("new published flow", 400.0),
        ] {
            let cases = prog(case);
            let worst = cases.iter().map(|p| p.net_ns).fold(f64::NAN, f64::max);
            targets.push(Target {
                bench: "B6",
                what: format!("{case} <= {limit} ns per packet (every program and scale)"),
                measured: if cases.is_empty() {
                    "not measured".into()
                } else {
                    format!("worst {worst:.0} ns")
                },
                met: (!cases.is_empty()).then_some(worst <= limit),
            });
        }
        let spread = self.prog_spread();
        targets.push(Target {
            bench: "B6",
            what: "flat within 10% from 1 to 10,000 ports and 1,000 to 1,000,000 flows".into(),
            measured: spread.map_or("not measured".into(), |s| {
                format!("largest change {:+.0}%", (s - 1.0) * 100.0)
            }),
            met: spread.map(|s| s <= 1.10),
        });
        targets
    }

    /// The largest growth factor of a B6 case's cost from the smallest
    /// scale to a larger one, over programs and cases.
    fn prog_spread(&self) -> Option<f64> {
        let base = self.progs.iter().map(|p| (p.ports, p.ct_entries)).min()?;
        let mut worst: Option<f64> = None;
        for p in self
            .progs
            .iter()
            .filter(|p| (p.ports, p.ct_entries) != base)
        {
            let Some(b) = self.progs.iter().find(|b| {
                b.program == p.program && b.case == p.case && (b.ports, b.ct_entries) == base
            }) else {
                continue;
            };
            if b.net_ns > 0.0 {
                let growth = p.net_ns / b.net_ns;
                worst = Some(worst.map_or(growth, |w: f64| w.max(growth)));
            }
        }
        worst
    }
}

/// Writes results.md, results.json and b3.svg into `dir`.
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("results.md"), markdown(results))?;
    fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    if results.series.iter().any(|s| s.bench == "B3") {
        b3_chart(results, &dir.join("b3.svg"))?;
    }
    Ok(())
}

fn markdown(results: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# netd benchmarks\n\n{} rounds, variants interleaved and rotated each round, {} s per run{}. \
         Figures are medians over rounds; `x` columns are the median of per-round ratios \
         (above 1: better than the baseline, whichever way the unit points), with their range.\n",
        results.rounds,
        results.seconds,
        if results.quick { " (quick mode)" } else { "" }
    );
    md.push_str("| machine | |\n|---|---|\n");
    for (key, value) in &results.facts {
        let _ = writeln!(md, "| {key} | {} |", value.replace('\n', ", "));
    }

    let targets = results.targets();
    if !targets.is_empty() {
        md.push_str("\n## Targets\n\n| | target | measured | |\n|---|---|---|---|\n");
        for t in &targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                t.bench,
                t.what,
                t.measured,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "-",
                }
            );
        }
    }

    let mut bench = "";
    for series in &results.series {
        if series.bench != bench {
            bench = &series.bench;
            let _ = writeln!(md, "\n## {bench}: {}", title(bench));
        }
        series_table(&mut md, series);
    }
    if results.series.iter().any(|s| s.bench == "B3") {
        md.push_str(
            "\n![B3: new connections per second relative to no NAT, by published ports](b3.svg)\n",
        );
        b3_table(&mut md, results);
    }
    if !results.progs.is_empty() {
        prog_table(&mut md, &results.progs);
    }
    if !results.monitor.is_empty() {
        monitor_table(&mut md, &results.monitor);
    }
    if let Some(scrape) = &results.scrape {
        scrape_table(&mut md, scrape);
    }
    if !results.in_traffic.is_empty() {
        md.push_str(
            "\nThe same programs under real traffic (the kernel's run-time statistics, on only for \
             this run): average ns per run.\n\n| variant | traffic | program | runs | ns per run |\n|---|---|---|---|---|\n",
        );
        for c in &results.in_traffic {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.0} |",
                c.variant, c.traffic, c.program, c.runs, c.ns_per_run
            );
        }
    }
    md
}

fn title(bench: &str) -> &'static str {
    match bench {
        "B1" => "request/response over kept-alive TCP connections",
        "B2" => "new TCP connections per second, fresh source port each",
        "B3" => "new connections per second as published ports grow (iptables: measured port last)",
        "B4" => "time to publish",
        "B5" => "one bulk TCP stream",
        "B7" => "small UDP datagrams per second",
        "B8" => "host-local clients (127.0.0.1:8080; no NAT: straight to the container)",
        "B9" => "many networks on one agent: new connections, and the time to create one",
        "B10" => {
            "name lookups from a container: netd's DNS on the gateway and dnsmasq with the same 10,000 names; the names' cost in the agent's heap"
        }
        _ => "",
    }
}

fn series_table(md: &mut String, series: &Series) {
    let rows = series.rows();
    let _ = writeln!(md, "\n### {}\n", series.case);
    let mut header = format!("| variant | {} |", series.unit);
    for base in &series.baselines {
        let _ = write!(header, " x {} |", base.label());
    }
    let latency = rows.iter().any(|r| r.p50_us.is_some());
    if latency {
        header.push_str(" p50 µs | p99 µs |");
    }
    if !series.cpu_unit.is_empty() {
        let _ = write!(header, " {} |", series.cpu_unit);
    }
    header.push_str(" rounds |");
    let columns = header.matches('|').count() - 1;
    let _ = writeln!(md, "{header}\n|{}", "---|".repeat(columns));
    for row in &rows {
        let _ = writeln!(md, "{}", table_row(series, row, latency));
    }
    for (kind, round, why) in &series.failures {
        let _ = writeln!(
            md,
            "\n{} failed in round {}: {why}",
            kind.label(),
            round + 1
        );
    }
    if let Some(noise) = series.noise() {
        let _ = writeln!(
            md,
            "\n> noisy: {noise}; ratios within that spread are not conclusive."
        );
    }
}

fn table_row(series: &Series, row: &Row, latency: bool) -> String {
    let mut line = format!("| {} | {} |", row.label, figure(row.median));
    for (_, ratio) in &row.vs {
        match ratio {
            Some(r) => {
                let _ = write!(line, " {:.2}x ({:.2}-{:.2}) |", r.median, r.min, r.max);
            }
            None => line.push_str(" |"),
        }
    }
    if latency {
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.0}"));
        let _ = write!(line, " {} | {} |", opt(row.p50_us), opt(row.p99_us));
    }
    if !series.cpu_unit.is_empty() {
        let _ = write!(line, " {} |", figure(row.cpu_per_op));
    }
    let _ = write!(line, " {} |", row.rounds);
    line
}

/// A figure with a sensible number of digits.
fn figure(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// B3 relative to no-NAT and to each variant's own 1-port figure.
fn b3_table(md: &mut String, results: &Results) {
    let kinds: Vec<Kind> = results
        .series
        .iter()
        .filter(|s| s.bench == "B3")
        .flat_map(Series::kinds)
        .fold(Vec::new(), |mut v, k| {
            if !v.contains(&k) && k != Kind::NoNat {
                v.push(k);
            }
            v
        });
    md.push_str("\nB3 relative to no NAT in the same round, and (last column) the 10,000-port figure over the 1-port one:\n\n| variant |");
    for count in PORT_COUNTS {
        let _ = write!(md, " {count} |");
    }
    md.push_str(" 10000 / 1 |\n|---|");
    md.push_str(&"---|".repeat(PORT_COUNTS.len() + 1));
    md.push('\n');
    for kind in kinds {
        let _ = write!(md, "| {} |", kind.label());
        for count in PORT_COUNTS {
            let _ = write!(
                md,
                " {} |",
                results
                    .b3_relative(kind, count)
                    .map_or("-".into(), |r| format!("{r:.2}x"))
            );
        }
        let last = *PORT_COUNTS.last().expect("port counts");
        let _ = writeln!(
            md,
            " {} |",
            results
                .b3_relative(kind, last)
                .zip(results.b3_relative(kind, 1))
                .map_or("-".into(), |(a, b)| format!("{:.2}x", a / b))
        );
    }
}

fn prog_table(md: &mut String, progs: &[ProgCase]) {
    md.push_str(
        "\n## B6: per-packet cost of netd's programs (BPF_PROG_TEST_RUN)\n\n\
         ns per packet, the kernel's own measurement: median of single runs for cases that \
         rewrite the packet (a repeated run would see its own output), minus the timer's \
         overhead; pass-through with a large repeat count.\n\n\
         | program | case | ports | conntrack entries | ns (net) | ns (raw) | runs |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for p in progs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} |",
            p.program, p.case, p.ports, p.ct_entries, p.net_ns, p.raw_ns, p.runs
        );
    }
}

fn monitor_table(md: &mut String, cases: &[MonitorCost]) {
    md.push_str(
        "\n## B11: the live monitor's cost on netd's programs (BPF_PROG_TEST_RUN)\n\n\
         ns per packet, the kernel's own measurement, with the monitor off (no `netd monitor`) \
         and on (drops asked, every drop an event in the ring, drained between test runs), \
         interleaved; `on / off` is the median of per-round ratios (above 1: the monitor \
         costs), with their range.\n\n\
         | program | case | mode | off ns | on ns | on / off | events | rounds |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} | {:.2}x ({:.2}-{:.2}) | {} | {} |",
            c.program,
            c.case,
            c.mode,
            c.off_ns,
            c.on_ns,
            c.ratio,
            c.ratio_min,
            c.ratio_max,
            c.events,
            c.rounds
        );
    }
}

fn scrape_table(md: &mut String, s: &Scrape) {
    let _ = write!(
        md,
        "\n## B12: a metrics scrape at scale\n\n\
         `GET /metrics` over the agent's socket with {} published mappings and {} conntrack \
         entries (written in {:.1} s; the mappings published in {:.1} s), and `GET /v1/status` \
         idle and while a scrape runs; `during / idle` is the median of per-round ratios of \
         medians (above 1: the API is slower during a scrape), met when at most {}x.\n\n\
         | scrape ms | range | bytes | status idle ms | status during ms | worst ms | calls | during / idle | | rounds |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {}-{} | {} | {} | {} | {} | {} | {:.2}x ({:.2}-{:.2}) | {} | {} |\n",
        s.mappings,
        s.ct_entries,
        s.fill_s,
        s.publish_s,
        crate::scrape::STATUS_FACTOR,
        figure(s.scrape_ms),
        figure(s.scrape_min_ms),
        figure(s.scrape_max_ms),
        s.body_bytes,
        figure(s.status_idle_ms),
        figure(s.status_busy_ms),
        figure(s.status_busy_max_ms),
        s.status_busy_calls,
        s.ratio,
        s.ratio_min,
        s.ratio_max,
        if s.ratio <= crate::scrape::STATUS_FACTOR {
            "met"
        } else {
            "**missed**"
        },
        s.rounds
    );
}

/// B3 as lines: each variant's CRR relative to no-NAT, over the number of
/// published ports (log scale).
fn b3_chart(results: &Results, path: &Path) -> anyhow::Result<()> {
    let kinds = [
        Kind::Netd,
        Kind::NetdXdp,
        Kind::NftMap,
        Kind::IptNft,
        Kind::IptLegacy,
    ];
    let lines: Vec<(Kind, Vec<(f64, f64)>)> = kinds
        .iter()
        .map(|&k| {
            let points = PORT_COUNTS
                .iter()
                .filter_map(|&c| Some((c as f64, results.b3_relative(k, c)?)))
                .collect();
            (k, points)
        })
        .filter(|(_, p): &(Kind, Vec<_>)| !p.is_empty())
        .collect();
    let top = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0_f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "B3: new connections/s relative to no NAT, by published ports",
            ("sans-serif", 18),
        )
        .margin(12)
        .margin_right(28)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((1.0_f64..10_000.0_f64).log_scale(), 0.0_f64..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("published ports")
        .y_desc("x no NAT (same round)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(plot_error)?;
    let palette = [
        RGBColor(0, 114, 178),
        RGBColor(86, 180, 233),
        RGBColor(0, 158, 115),
        RGBColor(213, 94, 0),
        RGBColor(204, 121, 167),
    ];
    for (i, (kind, points)) in lines.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(kind.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {err}")
}

/// Kernel, CPUs and versions of what was measured.
pub fn machine_facts() -> Vec<(String, String)> {
    let sh = |script: &str| {
        Command::new("sh")
            .args(["-c", script])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    vec![
        ("date".into(), sh("date -u +%Y-%m-%dT%H:%MZ")),
        ("kernel".into(), sh("uname -r")),
        (
            "CPU".into(),
            sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        ),
        ("CPUs".into(), sh("nproc")),
        (
            "netd".into(),
            sh("git describe --always --dirty 2>/dev/null"),
        ),
        (
            "iptables".into(),
            sh("(iptables-legacy --version; iptables-nft --version) | paste -sd ','"),
        ),
        ("nftables".into(), sh("nft --version")),
        (
            "docker-proxy".into(),
            sh("dpkg-query -W -f '${Package} ${Version}' docker.io 2>/dev/null"),
        ),
    ]
}
