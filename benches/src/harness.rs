//! The benchmark harness: what a benchmark reports and how runs are selected.
//!
//! Every benchmark measures hail and its baseline side by side in the same process and
//! the same run, and reports one [`Record`] per figure. `main` prints records as JSON
//! lines; `cargo xtask bench` turns them into the table and the files under `target/bench/`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::json;

/// Which direction is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput-like figures (msg/s, B/s).
    Higher,
    /// Latency-like figures (µs, ms, bytes of memory).
    Lower,
}

/// One measured figure: ours against the baseline, same unit, same run.
#[derive(Debug, Clone)]
pub struct Record {
    /// Benchmark name, `layer/what-size`, e.g. `wire/codec-64B`.
    pub name: String,
    /// Our figure.
    pub ours: f64,
    /// The baseline's figure (NaN where a figure has no baseline, e.g. a memory report).
    pub baseline: f64,
    /// Unit of both figures, e.g. `msg/s`, `us`, `ms`, `bytes`.
    pub unit: &'static str,
    /// Which direction is better.
    pub better: Better,
}

impl Record {
    /// A figure with a baseline.
    pub fn new(
        name: impl Into<String>,
        ours: f64,
        baseline: f64,
        unit: &'static str,
        better: Better,
    ) -> Self {
        Self {
            name: name.into(),
            ours,
            baseline,
            unit,
            better,
        }
    }

    /// A figure without a baseline (reported, no ratio).
    pub fn solo(name: impl Into<String>, ours: f64, unit: &'static str, better: Better) -> Self {
        Self::new(name, ours, f64::NAN, unit, better)
    }

    /// How much better ours is than the baseline: above 1.0 means better, whichever the direction.
    pub fn ratio(&self) -> f64 {
        match self.better {
            Better::Higher => self.ours / self.baseline,
            Better::Lower => self.baseline / self.ours,
        }
    }

    /// The record as one JSON object, the format of `cargo xtask bench --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let num = |x: f64| {
            if x.is_finite() {
                json!(x)
            } else {
                serde_json::Value::Null
            }
        };
        json!({
            "name": self.name,
            "ours": num(self.ours),
            "baseline": num(self.baseline),
            "unit": self.unit,
            "ratio": num(self.ratio()),
            "better": match self.better { Better::Higher => "higher", Better::Lower => "lower" },
        })
    }
}

/// What this run should do: quick or full, and which benchmarks.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// Fewer iterations: the whole suite stays under 3 minutes on 2 cores.
    pub quick: bool,
    /// Only benchmarks whose name contains this string run.
    pub filter: Option<String>,
}

impl Ctx {
    /// True when a benchmark called `name` (or a group of that prefix) should run.
    pub fn wants(&self, name: &str) -> bool {
        self.wants_one(name) || self.filter.as_ref().is_some_and(|f| f.starts_with(name))
    }

    /// True when the one benchmark called `name` should run: as [`wants`](Self::wants),
    /// but not for a filter that only starts with `name` (`rpc/throughput-64B-vs-tarpc`
    /// asks for that benchmark, not for `rpc/throughput-64B` too).
    pub fn wants_one(&self, name: &str) -> bool {
        match &self.filter {
            None => true,
            Some(f) => name.contains(f.as_str()),
        }
    }

    /// Picks the iteration count (or duration) for the mode.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Reads a runner's arguments, `[--quick] [FILTER]`; `None` for `-h`/`--help` (the
    /// caller prints its usage line).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Self>> {
        let mut ctx = Self::default();
        for arg in args {
            match arg.as_str() {
                "--quick" => ctx.quick = true,
                "-h" | "--help" => return Ok(None),
                other if other.starts_with('-') => anyhow::bail!("unknown option {other}"),
                other => ctx.filter = Some(other.to_owned()),
            }
        }
        Ok(Some(ctx))
    }
}

/// `<name>-p50` and `<name>-p99` in µs (lower is better) from two histograms of
/// nanoseconds: ours and the baseline's.
pub fn latency_records(
    name: &str,
    ours: &Histogram<u64>,
    baseline: &Histogram<u64>,
) -> [Record; 2] {
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    [0.5, 0.99].map(|q| {
        Record::new(
            format!("{name}-p{}", (q * 100.0) as u32),
            us(ours, q),
            us(baseline, q),
            "us",
            Better::Lower,
        )
    })
}

/// This process's resident memory, in bytes (`VmRSS` of `/proc/self/status`).
pub fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// Runs `round` repeatedly for at least `budget`, alternating `ours` and `baseline` rounds so
/// both see the same machine state; returns (ours, baseline) as items per second, each the
/// median of its rounds. Each closure runs `items` items per call.
pub fn interleaved_rate(
    budget: Duration,
    items: u64,
    mut ours: impl FnMut(),
    mut baseline: impl FnMut(),
) -> (f64, f64) {
    // Warm-up: caches, allocator, branch predictors.
    ours();
    baseline();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < budget || a.len() < 5 {
        let t = Instant::now();
        ours();
        a.push(items as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        baseline();
        b.push(items as f64 / t.elapsed().as_secs_f64());
    }
    (median(&mut a), median(&mut b))
}

/// The median of `xs` (sorted in place). NaN for an empty slice.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_naming_a_longer_benchmark_runs_that_one_only() {
        let ctx = Ctx {
            filter: Some("rpc/throughput-64B-vs-tarpc".into()),
            ..Ctx::default()
        };
        assert!(ctx.wants("rpc/throughput-64B-vs-tarpc"));
        assert!(ctx.wants("rpc/"), "its group runs");
        assert!(!ctx.wants_one("rpc/throughput-64B"), "not the shorter name");
        assert!(ctx.wants_one("rpc/throughput-64B-vs-tarpc"));
        let all = Ctx::default();
        assert!(all.wants_one("rpc/throughput-64B"));
    }

    #[test]
    fn runner_arguments() {
        let args = |v: &[&str]| Ctx::from_args(v.iter().map(|s| (*s).to_owned()));
        let ctx = args(&["--quick", "rpc/"]).unwrap().unwrap();
        assert!(ctx.quick);
        assert_eq!(ctx.filter.as_deref(), Some("rpc/"));
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(args(&["--bogus"]).is_err());
    }

    #[test]
    fn latency_records_are_p50_and_p99_in_microseconds() {
        let mut ours = Histogram::<u64>::new(3).unwrap();
        let mut base = Histogram::<u64>::new(3).unwrap();
        for _ in 0..100 {
            ours.record(2_000).unwrap();
            base.record(1_000).unwrap();
        }
        let [p50, p99] = latency_records("x/lat", &ours, &base);
        assert_eq!(
            (p50.name.as_str(), p99.name.as_str()),
            ("x/lat-p50", "x/lat-p99")
        );
        assert!((p50.ours - 2.0).abs() < 0.01 && (p50.baseline - 1.0).abs() < 0.01);
        assert!(matches!(p99.better, Better::Lower));
    }
}
