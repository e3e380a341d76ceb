//! The figures: cells of run times per scenario, the goals, the table lines and
//! `target/netsim/latest.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::args::{Args, Family, Mode};

/// Goal: N = 10 at 10% loss, every run all see all within this: 5 s.
const GOAL_DISCOVERY: Duration = Duration::from_secs(5);
/// Goal: a killed host is reported gone by every other device within this: 3 s.
const GOAL_GONE: Duration = Duration::from_secs(3);
/// Goal: a healed partition is one mesh again within this: 2 s.
const GOAL_HEAL: Duration = Duration::from_secs(2);
/// Goal: IPv6 discovery (N = 10 at 10% loss) p50 at most this many times the IPv4 p50 of
/// the same netsim run: 1.5.
const GOAL_V6_RATIO: f64 = 1.5;

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

    /// The cell as JSON; `net` is [`Net::name`].
    fn json(&self, scenario: &str, net: &str) -> Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        json!({
            "scenario": scenario,
            "net": net,
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

/// A LAN's family and the group family devices ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Net {
    pub(super) family: Family,
    /// Devices on the IPv6 group (else the IPv4 one).
    pub(super) v6: bool,
}

impl Net {
    /// `v4`, `v6`, `dual/v4` or `dual/v6`: the LAN, then (dual-stack) the group's family.
    pub(super) fn name(self) -> &'static str {
        match (self.family, self.v6) {
            (Family::V4, _) => "v4",
            (Family::V6, _) => "v6",
            (Family::Dual, false) => "dual/v4",
            (Family::Dual, true) => "dual/v6",
            (Family::Mixed, _) => "mixed",
        }
    }

    /// What goes before the labels and goals: nothing for IPv4 alone (as before there
    /// were families), else [`Net::name`].
    pub(super) fn tag(self) -> &'static str {
        if self.family == Family::V4 {
            ""
        } else {
            self.name()
        }
    }
}

/// The results of every LAN and group of a run, in order.
#[derive(Debug, Default)]
pub(super) struct Runs(pub(super) Vec<(Net, Results)>);

impl Runs {
    pub(super) fn broken(&self) -> usize {
        self.0.iter().map(|(_, r)| r.broken()).sum()
    }

    /// The goals of each net (named with its tag), then, for each IPv6 net whose IPv4
    /// counterpart ran too (`v6` with `v4`, `dual/v6` with `dual/v4`), IPv6 discovery p50
    /// within [`GOAL_V6_RATIO`] times IPv4's, per mode.
    pub(super) fn goals(&self) -> Vec<(String, Option<bool>)> {
        let mut out = Vec::new();
        for (net, r) in &self.0 {
            for (name, met) in r.goals() {
                // A mixed LAN runs discovery alone: its other goals are never run.
                if net.family == Family::Mixed && met.is_none() {
                    continue;
                }
                let name = if net.family == Family::Mixed {
                    name.replace("all see all", "each sees all it shares a family with")
                } else {
                    name
                };
                let name = match net.tag() {
                    "" => name,
                    tag => format!("{tag}: {name}"),
                };
                out.push((name, met));
            }
        }
        let find = |family: Family, v6: bool| {
            self.0
                .iter()
                .find(|(n, _)| n.family == family && n.v6 == v6)
                .map(|(_, r)| r)
        };
        for (v6_net, v4_net) in [
            (
                Net {
                    family: Family::V6,
                    v6: true,
                },
                Net {
                    family: Family::V4,
                    v6: false,
                },
            ),
            (
                Net {
                    family: Family::Dual,
                    v6: true,
                },
                Net {
                    family: Family::Dual,
                    v6: false,
                },
            ),
        ] {
            let (Some(r6), Some(r4)) = (
                find(v6_net.family, v6_net.v6),
                find(v4_net.family, v4_net.v6),
            ) else {
                continue;
            };
            for mode in [Mode::Plain, Mode::Sealed] {
                let p50 = |r: &Results| {
                    r.discovery
                        .iter()
                        .find(|(m, n, loss, _)| *m == mode && *n == 10 && *loss == 10)
                        .and_then(|(.., c)| percentile(&c.times, 50.0))
                };
                let (Some(t6), Some(t4)) = (p50(r6), p50(r4)) else {
                    continue;
                };
                out.push((
                    format!(
                        "{}: N=10 at 10% loss, {}: all see all p50 within {GOAL_V6_RATIO}x {}'s ({} vs {})",
                        v6_net.name(),
                        mode.name(),
                        v4_net.name(),
                        secs(Some(t6)),
                        secs(Some(t4)),
                    ),
                    Some(t6.as_secs_f64() <= GOAL_V6_RATIO * t4.as_secs_f64()),
                ));
            }
        }
        out
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
    runs: &Runs,
    goals: &[(String, Option<bool>)],
) -> anyhow::Result<()> {
    let mut cells: Vec<Value> = Vec::new();
    for (net, r) in &runs.0 {
        let net = net.name();
        cells.extend(r.discovery.iter().map(|(.., c)| c.json("discovery", net)));
        cells.extend(r.kill.iter().map(|c| c.json("kill-process", net)));
        cells.extend(r.host_gone.iter().map(|c| c.json("kill-host", net)));
        cells.extend(r.partition.iter().map(|c| c.json("partition", net)));
        cells.extend(r.restart.iter().map(|c| c.json("restart", net)));
    }
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

    #[test]
    fn goals_of_several_nets_and_the_ipv6_ratio() {
        let net = |family, v6| Net { family, v6 };
        assert_eq!(
            [
                net(Family::V4, false),
                net(Family::V6, true),
                net(Family::Dual, false),
                net(Family::Dual, true)
            ]
            .map(|n| (n.name(), n.tag())),
            [
                ("v4", ""),
                ("v6", "v6"),
                ("dual/v4", "dual/v4"),
                ("dual/v6", "dual/v6")
            ]
        );
        let with = |plain_ms: u64, sealed_ms: u64| {
            let mut r = Results::default();
            r.discovery
                .push((Mode::Plain, 10, 10, cell(&[plain_ms], 0)));
            r.discovery
                .push((Mode::Sealed, 10, 10, cell(&[sealed_ms], 0)));
            r
        };
        // v6 alone: its own goals, tagged, and no ratio without an IPv4 figure.
        let alone = Runs(vec![(net(Family::V6, true), with(900, 1_000))]);
        let goals = alone.goals();
        assert_eq!(goals.len(), 5);
        assert!(goals[0].0.starts_with("v6: N=10 at 10% loss"));
        assert_eq!(goals[0].1, Some(true));
        // v4 then v6: plain 1.4x (met), sealed 1.6x (missed); the untagged v4 goals first.
        let both = Runs(vec![
            (net(Family::V4, false), with(1_000, 1_000)),
            (net(Family::V6, true), with(1_400, 1_600)),
        ]);
        let goals = both.goals();
        assert_eq!(goals.len(), 12);
        assert!(goals[0].0.starts_with("N=10 at 10% loss"));
        assert_eq!(
            goals[10],
            (
                "v6: N=10 at 10% loss, plain: all see all p50 within 1.5x v4's (1.40 s vs 1.00 s)"
                    .to_owned(),
                Some(true)
            )
        );
        assert_eq!(goals[11].1, Some(false));
        // Dual-stack pairs its own two groups; a v6 LAN is not compared with them.
        let dual = Runs(vec![
            (net(Family::Dual, false), with(1_000, 1_000)),
            (net(Family::Dual, true), with(2_000, 1_000)),
        ]);
        let goals = dual.goals();
        assert_eq!(goals.len(), 12);
        assert!(goals[10].0.starts_with("dual/v6: N=10 at 10% loss, plain:"));
        assert!(goals[10].0.contains("dual/v4's"));
        assert_eq!((goals[10].1, goals[11].1), (Some(false), Some(true)));
        let mut broken = with(1, 1);
        broken.kill.push(cell(&[], 2));
        assert_eq!(Runs(vec![(net(Family::V4, false), broken)]).broken(), 2);
    }
}
