//! The figures: cells of run times per scenario, the goals, the table lines and
//! `target/netsim/latest.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::args::{Args, Mode};

/// Goal: N = 10 at 10% loss, every run all see all within this: 5 s.
const GOAL_DISCOVERY: Duration = Duration::from_secs(5);
/// Goal: a killed host is reported gone by every other device within this: 3 s.
const GOAL_GONE: Duration = Duration::from_secs(3);
/// Goal: a healed partition is one mesh again within this: 2 s.
const GOAL_HEAL: Duration = Duration::from_secs(2);

/// The `p`th percentile (0 < p <= 100) by the nearest-rank method: the smallest value
/// with at least p% of the values at or below it. `None` for no values.
pub(super) fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A duration in seconds with two decimals, or `-`.
pub(super) fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The figures of one scenario cell.
#[derive(Debug, Default)]
pub(super) struct Cell {
    pub(super) label: String,
    pub(super) runs: usize,
    pub(super) times: Vec<Duration>,
    /// Secondary times (startup for discovery, split noticed for partitions).
    pub(super) extra: Vec<Duration>,
    pub(super) failures: Vec<String>,
    pub(super) notes: BTreeMap<String, usize>,
}

impl Cell {
    pub(super) fn new(label: String) -> Self {
        Self {
            label,
            ..Self::default()
        }
    }

    pub(super) fn line(&self, extra_name: &str) -> String {
        let mut s = format!(
            "{:<44} runs {:>3}  p50 {:>7}  p99 {:>7}  max {:>7}  failures {}",
            self.label,
            self.runs,
            secs(percentile(&self.times, 50.0)),
            secs(percentile(&self.times, 99.0)),
            secs(self.times.iter().max().copied()),
            self.failures.len(),
        );
        if !self.extra.is_empty() {
            let _ = write!(
                s,
                "  ({extra_name} p50 {})",
                secs(percentile(&self.extra, 50.0))
            );
        }
        if !self.notes.is_empty() {
            let notes: Vec<String> = self.notes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = write!(s, "  [{}]", notes.join(", "));
        }
        s
    }

    fn json(&self, scenario: &str) -> Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        json!({
            "scenario": scenario,
            "label": self.label,
            "runs": self.runs,
            "p50_ms": ms(percentile(&self.times, 50.0)),
            "p99_ms": ms(percentile(&self.times, 99.0)),
            "max_ms": ms(self.times.iter().max().copied()),
            "extra_p50_ms": ms(percentile(&self.extra, 50.0)),
            "times_ms": self.times.iter().map(|t| t.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
            "failures": self.failures,
            "notes": self.notes,
        })
    }

    /// Every run succeeded and took at most `limit`.
    fn within(&self, limit: Duration) -> bool {
        self.failures.is_empty() && !self.times.is_empty() && self.times.iter().all(|t| *t <= limit)
    }

    pub(super) fn fail(&mut self, run: usize, why: String) {
        eprintln!("netsim: {}: run {run} failed: {why}", self.label);
        self.failures.push(why);
    }
}

/// Everything measured, by scenario.
#[derive(Debug, Default)]
pub(super) struct Results {
    /// (mode, size, loss, cell) of each discovery cell.
    pub(super) discovery: Vec<(Mode, usize, u8, Cell)>,
    pub(super) kill: Vec<Cell>,
    pub(super) host_gone: Vec<Cell>,
    pub(super) partition: Vec<Cell>,
    pub(super) restart: Vec<Cell>,
}

impl Results {
    fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.discovery
            .iter()
            .map(|(.., c)| c)
            .chain(&self.kill)
            .chain(&self.host_gone)
            .chain(&self.partition)
            .chain(&self.restart)
    }

    /// Broken checks: runs that never completed, restarts not recognised, stale links.
    pub(super) fn broken(&self) -> usize {
        self.cells().map(|c| c.failures.len()).sum()
    }

    /// Each goal and whether it was met (`None`: its scenario did not run).
    pub(super) fn goals(&self) -> Vec<(String, Option<bool>)> {
        let all = |cells: Vec<&Cell>, limit: Duration| -> Option<bool> {
            (!cells.is_empty()).then(|| cells.iter().all(|c| c.within(limit)))
        };
        let ten = self
            .discovery
            .iter()
            .filter(|(_, n, loss, _)| *n == 10 && *loss == 10)
            .map(|(.., c)| c)
            .collect();
        vec![
            (
                format!(
                    "N=10 at 10% loss: all see all within {} in every run",
                    secs(Some(GOAL_DISCOVERY))
                ),
                all(ten, GOAL_DISCOVERY),
            ),
            (
                format!(
                    "killed process reported gone within {}",
                    secs(Some(GOAL_GONE))
                ),
                all(self.kill.iter().collect(), GOAL_GONE),
            ),
            (
                format!(
                    "killed host (cut off) reported gone within {}",
                    secs(Some(GOAL_GONE))
                ),
                all(self.host_gone.iter().collect(), GOAL_GONE),
            ),
            (
                format!("healed partition one mesh within {}", secs(Some(GOAL_HEAL))),
                all(self.partition.iter().collect(), GOAL_HEAL),
            ),
            (
                "restart: new incarnation joined by all, one link per pair".to_owned(),
                (!self.restart.is_empty())
                    .then(|| self.restart.iter().all(|c| c.failures.is_empty())),
            ),
        ]
    }
}

/// Prints the goals with their verdicts; returns how many were missed.
pub(super) fn print_goals(goals: &[(String, Option<bool>)]) -> usize {
    println!("\n== goals");
    let mut missed = 0;
    for (name, verdict) in goals {
        let word = match verdict {
            Some(true) => "pass",
            Some(false) => {
                missed += 1;
                "FAIL"
            }
            None => "not run",
        };
        println!("  {word:<8} {name}");
    }
    missed
}

/// Writes every cell and goal, and the arguments, to `<dir>/latest.json`.
pub(super) fn write_json(
    dir: &Path,
    args: &Args,
    r: &Results,
    goals: &[(String, Option<bool>)],
) -> anyhow::Result<()> {
    let mut cells: Vec<Value> = r
        .discovery
        .iter()
        .map(|(.., c)| c.json("discovery"))
        .collect();
    cells.extend(r.kill.iter().map(|c| c.json("kill-process")));
    cells.extend(r.host_gone.iter().map(|c| c.json("kill-host")));
    cells.extend(r.partition.iter().map(|c| c.json("partition")));
    cells.extend(r.restart.iter().map(|c| c.json("restart")));
    let goals: Vec<Value> = goals
        .iter()
        .map(|(name, ok)| json!({ "goal": name, "met": ok }))
        .collect();
    let doc = json!({ "args": format!("{args:?}"), "cells": cells, "goals": goals });
    let path = dir.join("latest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        let v = ms(&[50, 10, 40, 20, 30]);
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&v, 20.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(50)));
        // 20 runs: p50 is the 10th value, p99 the 20th.
        let twenty: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(&twenty, 50.0), Some(Duration::from_secs(10)));
        assert_eq!(percentile(&twenty, 99.0), Some(Duration::from_secs(20)));
        assert_eq!(percentile(&twenty, 0.0), Some(Duration::from_secs(1)));
    }

    fn cell(times_ms: &[u64], failures: usize) -> Cell {
        Cell {
            runs: times_ms.len() + failures,
            times: ms(times_ms),
            failures: vec!["x".into(); failures],
            ..Cell::new("c".into())
        }
    }

    #[test]
    fn goals_pass_fail_or_not_run() {
        let mut r = Results::default();
        assert!(r.goals().iter().all(|(_, met)| met.is_none()));
        r.discovery
            .push((Mode::Plain, 10, 10, cell(&[900, 4_000], 0)));
        r.discovery.push((Mode::Plain, 25, 10, cell(&[9_000], 0))); // not a goal cell
        r.kill.push(cell(&[3_500], 0));
        r.partition.push(cell(&[100], 1));
        r.restart.push(cell(&[300], 0));
        let met: Vec<Option<bool>> = r.goals().into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            met,
            [Some(true), Some(false), None, Some(false), Some(true)]
        );
        assert_eq!(r.broken(), 1);
        assert_eq!(secs(Some(Duration::from_millis(1234))), "1.23 s");
        assert_eq!(secs(None), "-");
    }
}
