//! The end of a run: the message accounting, asks and calls, RSS drift, and the goals.

use std::collections::BTreeMap;

use anyhow::bail;

use super::ledger::Fate;
use super::run::{Node, Run};

/// RSS drift goal: 5%.
pub(super) const DRIFT_GOAL: f64 = 0.05;

/// Relative RSS change from the mean of the first 60 s after `warmup` to the mean of the
/// last 60 s of `samples` (seconds, KiB); `None` if the samples do not span both windows.
pub(super) fn drift(samples: &[(f64, u64)], warmup: f64) -> Option<f64> {
    let last = samples.last()?.0;
    if last < warmup + 120.0 {
        return None;
    }
    let mean = |lo: f64, hi: f64| {
        let xs: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= lo && *t < hi)
            .map(|(_, kb)| *kb as f64)
            .collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let base = mean(warmup, warmup + 60.0)?;
    let end = mean(last - 60.0, last + 1.0)?;
    (base > 0.0).then(|| (end - base) / base)
}

pub(super) fn summarize(run: &Run, nodes: &[Node], warmup: f64) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let (fates, examples) = run.ledger.tally(5);
    let get = |f: Fate| fates.get(&f).copied().unwrap_or(0);
    let total: u64 = fates.values().sum();
    println!("==> messages: {total} numbered messages");
    for (f, n) in &fates {
        println!("    {:<24} {n}", format!("{f:?}"));
    }
    println!("    duplicates received      {}", run.ledger.duplicates);
    let gap = get(Fate::InFlightToKilled) + get(Fate::QueuedAtKilledSender);
    println!(
        "    SIGKILL gap (sent OK, never received, a SIGKILL near): {gap} over {} SIGKILLs \
         ({:.1} per kill); received with the send unrecorded: {}",
        run.restarts_killed,
        gap as f64 / run.restarts_killed.max(1) as f64,
        get(Fate::ReceivedUnrecorded)
    );
    let dishonest: u64 = fates
        .iter()
        .filter(|(f, _)| !f.is_honest())
        .map(|(_, n)| n)
        .sum();
    if dishonest > 0 || run.ledger.duplicates > 0 {
        problems.push(format!(
            "{dishonest} messages outside delivered/failed/SIGKILL gap, {} duplicates",
            run.ledger.duplicates
        ));
        for e in &examples {
            println!("    e.g. {e}");
        }
    }

    // Asks and calls: every incarnation that stopped gracefully must account for each.
    let (mut asks, mut ask_ok, mut ask_err, mut rpcs, mut rpc_ok, mut rpc_err) = (0, 0, 0, 0, 0, 0);
    let (mut wrong, mut unfinal, mut dropped) = (0, 0, 0);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (slot, c) in run.counts.iter().enumerate() {
        for (inc, s) in &c.stats {
            dropped += s.dropped_events;
            wrong += s.ask_wrong + s.rpc_wrong;
            for (k, v) in &s.failures {
                *kinds.entry(k.clone()).or_default() += v;
            }
            if !s.is_final {
                unfinal += 1;
                continue;
            }
            asks += s.asks;
            ask_ok += s.ask_answered;
            ask_err += s.failed("ask:");
            rpcs += s.rpcs;
            rpc_ok += s.rpc_ok;
            rpc_err += s.failed("rpc:");
            if s.asks != s.ask_answered + s.failed("ask:") || s.rpcs != s.rpc_ok + s.failed("rpc:")
            {
                problems.push(format!(
                    "{}#{inc}: asks or calls do not add up",
                    run.names[slot]
                ));
            }
        }
    }
    println!(
        "==> asks (graceful incarnations): {asks} = {ask_ok} answered + {ask_err} failed; \
         RPC calls: {rpcs} = {rpc_ok} ok + {rpc_err} failed; wrong answers {wrong}; \
         incarnations without a final line (SIGKILLed): {unfinal}; events dropped: {dropped}"
    );
    for (k, v) in &kinds {
        println!("    {k:<40} {v}");
    }
    if wrong > 0 {
        problems.push(format!("{wrong} wrong answers"));
    }
    if dropped > 0 {
        problems.push(format!("{dropped} device events dropped"));
    }

    // RSS drift after the warm-up, on the nodes never restarted.
    println!("==> RSS (KiB) after a {warmup:.0} s warm-up");
    for n in nodes {
        let first = n.rss.iter().find(|(t, _)| *t >= warmup).map_or(0, |s| s.1);
        let peak = n.rss.iter().map(|s| s.1).max().unwrap_or(0);
        match (n.stable, drift(&n.rss, warmup)) {
            (true, Some(d)) => {
                println!(
                    "    {:<8} at warm-up {first}, last {}, peak {peak}, drift {:+.2}%",
                    n.name,
                    n.last_rss,
                    d * 100.0
                );
                if d.abs() >= DRIFT_GOAL {
                    problems.push(format!("{} RSS drift {:+.2}%", n.name, d * 100.0));
                }
            }
            (true, None) => println!("    {:<8} run too short for a drift figure", n.name),
            (false, _) => println!(
                "    {:<8} (restarted, incarnation {}) last {}, peak over all incarnations {peak}",
                n.name, n.inc, n.last_rss
            ),
        }
    }
    if problems.is_empty() {
        println!("==> soak: goals met");
        Ok(())
    } else {
        bail!("soak: {}", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_compares_the_first_minute_after_warmup_with_the_last() {
        let flat: Vec<(f64, u64)> = (0..100).map(|i| (f64::from(i) * 5.0, 10_000)).collect();
        assert_eq!(drift(&flat, 60.0), Some(0.0));
        // Growing 1% a minute after a warm-up that doubled it.
        let growing: Vec<(f64, u64)> = (0..=120)
            .map(|i| {
                let t = f64::from(i) * 5.0;
                let kb = if t < 60.0 {
                    5_000.0
                } else {
                    10_000.0 * (1.0 + 0.01 * (t - 60.0) / 60.0)
                };
                (t, kb as u64)
            })
            .collect();
        let d = drift(&growing, 60.0).unwrap();
        assert!((0.07..0.09).contains(&d), "{d}");
        // Too short to say.
        assert_eq!(drift(&flat[..20], 60.0), None);
        assert_eq!(drift(&[], 60.0), None);
    }
}
