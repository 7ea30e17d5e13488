// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Interleaved rounds and what is worth quoting from them.
//!
//! On a small shared machine run-to-run noise is larger than the
//! differences between datapaths, so a figure is only ever compared with
//! figures taken in the same round: each round runs every variant once,
//! in an order rotated from round to round, and each variant's figure is
//! divided by its baselines' figures of that round. Medians over rounds are
//! reported, with the spread of the per-round ratios.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
};

use crate::{beds::Kind, measure::Measure};

/// Set by SIGINT: stop after the current run and clean up.
pub static STOP: AtomicBool = AtomicBool::new(false);

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// A per-round ratio at or beyond this spread (max/min), or a baseline
/// whose figures vary by more than `NOISY_CV`, makes a series "noisy".
const NOISY_SPREAD: f64 = 1.5;
const NOISY_CV: f64 = 0.15;

/// `(round, item)` for `rounds` rounds over `items` items, each round in
/// an order rotated by one from the last.
pub fn rotation(rounds: usize, items: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rounds).flat_map(move |round| (0..items).map(move |i| (round, (i + round) % items)))
}

/// One variant's figure in one round.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub kind: Kind,
    pub round: usize,
    pub measure: Measure,
}

/// The figures of one benchmark case over all rounds.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Series {
    /// "B1" ... "B8".
    pub bench: String,
    pub case: String,
    pub unit: String,
    pub higher_is_better: bool,
    /// What the ratios compare against.
    pub baselines: Vec<Kind>,
    /// How busy CPU time per operation is shown: unit and scale from
    /// seconds per operation.
    pub cpu_unit: String,
    pub cpu_scale: f64,
    pub samples: Vec<Sample>,
    /// Runs that failed, with why.
    pub failures: Vec<(Kind, usize, String)>,
}

/// A ratio's median and spread over rounds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// What a series says about one variant.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub kind: Kind,
    pub label: &'static str,
    pub rounds: usize,
    pub median: f64,
    /// Coefficient of variation of the figure over rounds.
    pub cv: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Busy CPU time per operation, in the series' `cpu_unit`.
    pub cpu_per_op: f64,
    /// Per baseline: this variant's per-round speed-up over it (above 1:
    /// better, whichever way the unit points).
    pub vs: Vec<(Kind, Option<Ratio>)>,
}

impl Series {
    pub fn new(
        bench: &'static str,
        case: impl Into<String>,
        unit: &'static str,
        higher_is_better: bool,
        baselines: &[Kind],
    ) -> Self {
        Self {
            bench: bench.to_owned(),
            case: case.into(),
            unit: unit.to_owned(),
            higher_is_better,
            baselines: baselines.to_vec(),
            cpu_unit: "CPU µs/op".to_owned(),
            cpu_scale: 1e6,
            samples: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Shows CPU time per operation in `unit`, `scale` times seconds.
    pub fn cpu(mut self, unit: &'static str, scale: f64) -> Self {
        self.cpu_unit = unit.to_owned();
        self.cpu_scale = scale;
        self
    }

    /// Runs `measure` for each of `kinds`, `rounds` times, interleaved and
    /// rotated. A failed run is recorded and the rounds go on.
    pub fn run<T>(
        &mut self,
        rounds: usize,
        items: &[(Kind, T)],
        mut measure: impl FnMut(&T) -> anyhow::Result<Measure>,
    ) {
        for (round, index) in rotation(rounds, items.len()) {
            if stopped() {
                return;
            }
            let (kind, item) = &items[index];
            {
                match measure(item) {
                    Ok(measure) => {
                        eprintln!(
                            "  {} {} round {}: {:<22} {:>12.1} {}",
                            self.bench,
                            self.case,
                            round + 1,
                            kind.label(),
                            measure.value,
                            self.unit
                        );
                        self.samples.push(Sample {
                            kind: *kind,
                            round,
                            measure,
                        });
                    }
                    Err(err) => {
                        eprintln!(
                            "  {} {} round {}: {} FAILED: {err:#}",
                            self.bench,
                            self.case,
                            round + 1,
                            kind.label()
                        );
                        self.failures.push((*kind, round, format!("{err:#}")));
                    }
                }
            }
        }
    }

    /// The variants measured, in first-seen order.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        for s in &self.samples {
            if !kinds.contains(&s.kind) {
                kinds.push(s.kind);
            }
        }
        for (kind, _, _) in &self.failures {
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        kinds
    }

    fn by_round(&self, kind: Kind) -> BTreeMap<usize, &Measure> {
        self.samples
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| (s.round, &s.measure))
            .collect()
    }

    fn values(&self, kind: Kind) -> Vec<f64> {
        self.by_round(kind).values().map(|m| m.value).collect()
    }

    pub fn median(&self, kind: Kind) -> Option<f64> {
        median(&self.values(kind))
    }

    /// `kind`'s speed-up over `base`, round by round.
    pub fn ratios(&self, kind: Kind, base: Kind) -> Vec<f64> {
        let ours = self.by_round(kind);
        let theirs = self.by_round(base);
        ours.iter()
            .filter_map(|(round, m)| {
                let b = theirs.get(round)?;
                let ratio = if self.higher_is_better {
                    m.value / b.value
                } else {
                    b.value / m.value
                };
                ratio.is_finite().then_some(ratio)
            })
            .collect()
    }

    pub fn ratio(&self, kind: Kind, base: Kind) -> Option<Ratio> {
        let ratios = self.ratios(kind, base);
        Some(Ratio {
            median: median(&ratios)?,
            min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    pub fn rows(&self) -> Vec<Row> {
        self.kinds()
            .into_iter()
            .filter_map(|kind| {
                let values = self.values(kind);
                let measures: Vec<&Measure> = self.by_round(kind).into_values().collect();
                let opt_median = |f: fn(&Measure) -> Option<f64>| {
                    median(&measures.iter().filter_map(|m| f(m)).collect::<Vec<_>>())
                };
                Some(Row {
                    kind,
                    label: kind.label(),
                    rounds: values.len(),
                    median: median(&values)?,
                    cv: cv(&values),
                    p50_us: opt_median(|m| m.p50_us),
                    p99_us: opt_median(|m| m.p99_us),
                    cpu_per_op: median(
                        &measures
                            .iter()
                            .map(|m| m.cpu_s / m.ops * self.cpu_scale)
                            .collect::<Vec<_>>(),
                    )
                    .unwrap_or(f64::NAN),
                    vs: self
                        .baselines
                        .iter()
                        .map(|&base| {
                            (
                                base,
                                (base != kind).then(|| self.ratio(kind, base)).flatten(),
                            )
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Why this series' ratios are not to be trusted, if they are not.
    pub fn noise(&self) -> Option<String> {
        for &base in &self.baselines {
            let cv = cv(&self.values(base));
            if cv > NOISY_CV {
                return Some(format!(
                    "{} varied by {:.0}% between rounds",
                    base.label(),
                    cv * 100.0
                ));
            }
        }
        for kind in self.kinds() {
            for &base in &self.baselines {
                if let Some(r) = self.ratio(kind, base)
                    && kind != base
                    && r.max / r.min > NOISY_SPREAD
                {
                    return Some(format!(
                        "{} vs {} ranged {:.2}x..{:.2}x",
                        kind.label(),
                        base.label(),
                        r.min,
                        r.max
                    ));
                }
            }
        }
        None
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// Standard deviation over mean (0 for fewer than two values).
pub fn cv(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    if mean == 0.0 { 0.0 } else { var.sqrt() / mean }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(value: f64) -> Measure {
        Measure {
            value,
            cpu_s: 1.0,
            ops: value,
            p50_us: None,
            p99_us: None,
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_pair_figures_of_the_same_round() {
        let mut s = Series::new("B2", "CRR", "conn/s", true, &[Kind::NoNat]);
        let figures = [
            (Kind::NoNat, [100.0, 50.0, 200.0]),
            (Kind::Netd, [90.0, 50.0, 220.0]),
        ];
        for (kind, values) in figures {
            for (round, v) in values.into_iter().enumerate() {
                s.samples.push(Sample {
                    kind,
                    round,
                    measure: measure(v),
                });
            }
        }
        let r = s.ratio(Kind::Netd, Kind::NoNat).expect("ratio");
        assert!((r.median - 1.0).abs() < 1e-9);
        assert!((r.min - 0.9).abs() < 1e-9);
        assert!((r.max - 1.1).abs() < 1e-9);
        // Across rounds the figures vary 2x: the series is noisy.
        assert!(s.noise().is_some());

        let mut lower = Series::new("B4", "publish", "ms", false, &[Kind::NoNat]);
        lower.samples = s.samples.clone();
        let r = lower.ratio(Kind::Netd, Kind::NoNat).expect("ratio");
        assert!(
            (r.min - 100.0 / 110.0).abs() < 1e-9,
            "lower is better: base/value"
        );
    }

    #[test]
    fn rotation_visits_every_variant_every_round() {
        let mut s = Series::new("B1", "RR", "tx/s", true, &[]);
        let items = [(Kind::NoNat, 1.0), (Kind::Netd, 2.0), (Kind::IptNft, 3.0)];
        let mut order = Vec::new();
        s.run(3, &items, |v| {
            order.push(*v);
            Ok(measure(*v))
        });
        assert_eq!(order, [1.0, 2.0, 3.0, 2.0, 3.0, 1.0, 3.0, 1.0, 2.0]);
        assert_eq!(s.samples.len(), 9);
    }
}
