// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Prometheus's text exposition format (version 0.0.4), the one every
//! scraper and `promtool check metrics` read.
//!
//! netd's values are not counters it increments in-process (which is what
//! the Prometheus client crates are registries for): they are read from BPF
//! maps at scrape time, with labels from the agent's state. What is needed
//! is only the encoding, and it is this module: families written one after
//! the other, each with its HELP and TYPE, label values escaped.

use std::fmt::Write as _;

/// A metric family's type, as the TYPE line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// The text of one scrape.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

/// The content type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    /// Starts the family `name` (counters end in `_total`, as the naming
    /// conventions ask); its samples follow through the returned writer.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(valid_name(name), "metric name {name}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"));
        let _ = writeln!(self.text, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        Family {
            out: self,
            name: name.to_owned(),
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Writes the samples of one family.
pub struct Family<'a> {
    out: &'a mut Exposition,
    name: String,
}

impl Family<'_> {
    /// One sample: `labels` as (name, value) pairs, in the order given.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let text = &mut self.out.text;
        text.push_str(&self.name);
        if !labels.is_empty() {
            text.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(name), "label name {name}");
                if i > 0 {
                    text.push(',');
                }
                let _ = write!(text, "{name}=\"{}\"", escape(value, true));
            }
            text.push('}');
        }
        let _ = writeln!(text, " {}", value.into());
        self
    }
}

/// A sample's value: integer counters are written exactly, whatever their
/// size (an f64 would round them above 2^53).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(u64::from(v))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self::Int(v as u64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) if v.is_nan() => f.write_str("NaN"),
            Self::Float(v) if v.is_infinite() => f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" }),
            Self::Float(v) => write!(f, "{v}"),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the format's metric and label names.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// HELP text escapes backslash and newline; label values also the quote.
fn escape(text: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    let special = text.contains(['\\', '\n']) || (quote && text.contains('"'));
    if !special {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut exp = Exposition::default();
        exp.family("netd_drops_total", Kind::Counter, "Drops.\nBy \\reason.")
            .sample(&[("reason", "spoofed"), ("hook", "a\"b\\c\nd")], 7u64)
            .sample(&[], u64::MAX);
        exp.family("netd_gc_seconds", Kind::Gauge, "Last GC.")
            .sample(&[], 0.25)
            .sample(&[("x", "y")], f64::INFINITY);
        assert_eq!(
            exp.finish(),
            "# HELP netd_drops_total Drops.\\nBy \\\\reason.\n\
             # TYPE netd_drops_total counter\n\
             netd_drops_total{reason=\"spoofed\",hook=\"a\\\"b\\\\c\\nd\"} 7\n\
             netd_drops_total 18446744073709551615\n\
             # HELP netd_gc_seconds Last GC.\n\
             # TYPE netd_gc_seconds gauge\n\
             netd_gc_seconds 0.25\n\
             netd_gc_seconds{x=\"y\"} +Inf\n"
        );
    }

    #[test]
    fn names_follow_the_format() {
        assert!(valid_name("netd_up"));
        assert!(valid_name("_x:y1"));
        assert!(!valid_name("1x"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
