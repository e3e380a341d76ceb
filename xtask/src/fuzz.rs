//! `cargo xtask fuzz [--minutes M] [TARGET]`: runs the cargo-fuzz targets under `fuzz/`.
//!
//! Each target (or only `TARGET`) runs for `M` minutes (default 1) with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -- -max_total_time=<seconds>`, so the stable
//! toolchain can build with the sanitizer flags cargo-fuzz needs. cargo-fuzz is installed
//! (`cargo install cargo-fuzz --locked`) when `cargo fuzz --version` fails.
//!
//! The fuzzer starts from `fuzz/corpus/<target>/` (kept between runs, gitignored) and the
//! committed seeds in `fuzz/seeds/<target>/`, if any.
//!
//! Fuzz builds go to `fuzz/target` whatever `CARGO_TARGET_DIR` says: their sanitizer flags
//! would otherwise rebuild the workspace's own artifacts. The full fuzzer output of each
//! target is kept in `target/fuzz-logs/<target>.log`; the summary gives, per target,
//! executions, executions per second, coverage (libFuzzer's `cov`: code edges reached, and
//! `ft`: features, edges with hit counts and comparisons, from its last status line), the
//! seconds libFuzzer ran (`Done N runs in S second(s)`; the wall time beside it includes the
//! build) and any crash with its reproducer.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{cli, cmd};

/// The options of `cargo xtask fuzz`.
#[derive(Debug, PartialEq, clap::Args)]
pub(crate) struct Args {
    /// Minutes per target (more than 0; fractions allowed)
    #[arg(long, value_name = "M", default_value = "1", value_parser = cli::positive)]
    minutes: f64,
    /// Only this target (as `cargo fuzz list` names it)
    #[arg(value_name = "TARGET")]
    target: Option<String>,
}

/// Installs cargo-fuzz if needed, runs the targets, prints a summary; fails if any target
/// found a crash or could not run.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let listed = cmd::stdout(&mut cmd::cargo(["fuzz", "list"]))?;
    let mut targets: Vec<String> = listed.lines().map(str::trim).map(str::to_owned).collect();
    targets.retain(|t| !t.is_empty());
    if let Some(only) = &args.target {
        if !targets.contains(only) {
            bail!(
                "no fuzz target {only}; the targets are: {}",
                targets.join(", ")
            );
        }
        targets = vec![only.clone()];
    }
    let seconds = ((args.minutes * 60.0).round() as u64).max(1);
    let logs = cmd::root().join("target").join("fuzz-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let mut results = Vec::new();
    for target in &targets {
        println!("\n==> fuzz {target} for {seconds} s");
        let start = Instant::now();
        let (output, success) = run_target(target, seconds)?;
        let log = logs.join(format!("{target}.log"));
        std::fs::write(&log, &output).with_context(|| format!("writing {}", log.display()))?;
        let stats = Stats::parse(&output);
        let verdict = match (&stats.artifact, success) {
            (Some(artifact), _) => Verdict::Crash(artifact.clone()),
            (None, true) => Verdict::Clean,
            (None, false) => Verdict::Failed,
        };
        println!(
            "<== {target}: {} executions in {} s, cov {} ft {}, {} ({} with the build; log {})",
            stats.executions.map_or("?".into(), |n| n.to_string()),
            stats.seconds.map_or("?".into(), |n| n.to_string()),
            stats.cov.map_or("?".into(), |n| n.to_string()),
            stats.ft.map_or("?".into(), |n| n.to_string()),
            verdict.describe(),
            cmd::secs(start.elapsed()),
            log.display()
        );
        results.push((target.clone(), stats, verdict, start.elapsed()));
    }

    println!("\nfuzz summary ({seconds} s per target):");
    println!(
        "  {:<24} {:>12} {:>9} {:>7} {:>7} {:>7} {:>8}  result",
        "target", "executions", "exec/s", "cov", "ft", "fuzz s", "wall"
    );
    let figure = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
    for (target, stats, verdict, elapsed) in &results {
        println!(
            "  {target:<24} {:>12} {:>9} {:>7} {:>7} {:>7} {:>8}  {}",
            figure(stats.executions),
            figure(stats.exec_per_sec),
            figure(stats.cov),
            figure(stats.ft),
            figure(stats.seconds),
            cmd::secs(*elapsed),
            verdict.describe()
        );
        if let Verdict::Crash(artifact) = verdict {
            println!(
                "  {:<24} reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {artifact}",
                ""
            );
        }
    }
    let bad: Vec<&str> = results
        .iter()
        .filter(|(_, _, v, _)| *v != Verdict::Clean)
        .map(|(t, ..)| t.as_str())
        .collect();
    if !bad.is_empty() {
        bail!("fuzz targets with a crash or failure: {}", bad.join(", "));
    }
    Ok(())
}

/// Installs cargo-fuzz unless `cargo fuzz --version` already works.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = cmd::cargo(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        println!("cargo-fuzz is missing: installing it (takes a few minutes)");
        cmd::run(&mut cmd::cargo(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Runs one target; returns its whole output (stderr, then stdout) and whether it exited 0.
fn run_target(target: &str, seconds: u64) -> anyhow::Result<(String, bool)> {
    let mut fuzz = cmd::cargo(["fuzz", "run", target]);
    // The working corpus (gitignored) first: libFuzzer adds new inputs there. Then the
    // committed seeds, if the target has any.
    let corpus = cmd::root().join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    fuzz.arg(&corpus);
    let seeds = cmd::root().join("fuzz").join("seeds").join(target);
    if seeds.is_dir() {
        fuzz.arg(&seeds);
    }
    fuzz.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("{}", cmd::describe(&fuzz));
    let mut child = fuzz
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::describe(&fuzz)))?;
    let mut stdout = child.stdout.take().context("fuzzer stdout")?;
    // cargo-fuzz prints the failing input and the reproducer on stdout; collect it beside.
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let mut output = String::new();
    let stderr = child.stderr.take().context("fuzzer stderr")?;
    let mut last_shown = Instant::now();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading fuzzer output")?;
        // libFuzzer prints a line per new coverage; show its pulses and the end, and
        // everything that is not a status line (build output, errors, crash reports).
        let status_line = line.starts_with('#') || line.trim_start().starts_with("NEW_FUNC");
        let worth_showing = !status_line
            || line.contains("DONE")
            || line.contains("INITED")
            || (line.contains("pulse") && last_shown.elapsed() > Duration::from_secs(5));
        if worth_showing {
            println!("{line}");
            last_shown = Instant::now();
        }
        output.push_str(&line);
        output.push('\n');
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let stdout = stdout_reader
        .join()
        .map_err(|_| anyhow::anyhow!("fuzzer stdout reader panicked"))?
        .context("reading fuzzer stdout")?;
    if !status.success() {
        print!("{stdout}");
    }
    output.push_str(&stdout);
    Ok((output, status.success()))
}

/// What one target's run came to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Ran the whole time without a finding.
    Clean,
    /// Found a crash (panic, sanitizer report, timeout or out-of-memory); the input's path.
    Crash(String),
    /// Exited unsuccessfully without a crash input (e.g. the build failed).
    Failed,
}

impl Verdict {
    fn describe(&self) -> String {
        match self {
            Self::Clean => "no crash".to_owned(),
            Self::Crash(artifact) => format!("CRASH: {artifact}"),
            Self::Failed => "FAILED to run (see the log)".to_owned(),
        }
    }
}

/// Figures read from libFuzzer's output.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    /// Inputs executed: `stat::number_of_executed_units`, else the last `#N` status line.
    executions: Option<u64>,
    /// `exec/s` of the last status line that has it.
    exec_per_sec: Option<u64>,
    /// `cov` (code edges reached) of the last status line that has it.
    cov: Option<u64>,
    /// `ft` (features: edges with hit counts, comparisons) of the last status line.
    ft: Option<u64>,
    /// Seconds libFuzzer ran: `Done N runs in S second(s)` (absent after a crash).
    seconds: Option<u64>,
    /// The input libFuzzer wrote on a crash (`Test unit written to PATH`).
    artifact: Option<String>,
}

impl Stats {
    fn parse(output: &str) -> Self {
        let mut stats = Self::default();
        let mut final_units = None;
        for line in output.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
                final_units = rest.trim().parse().ok().or(final_units);
            } else if let Some(rest) = line.strip_prefix('#') {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = digits.parse() {
                    stats.executions = Some(n);
                }
                if let Some(eps) = field_after(line, "exec/s:") {
                    stats.exec_per_sec = Some(eps);
                }
                if let Some(cov) = field_after(line, "cov:") {
                    stats.cov = Some(cov);
                }
                if let Some(ft) = field_after(line, "ft:") {
                    stats.ft = Some(ft);
                }
            }
            if let Some(rest) = line.strip_prefix("Done ")
                && let Some(s) = field_after(rest, "runs in")
            {
                stats.seconds = Some(s);
            }
            if let Some((_, path)) = line.split_once("Test unit written to ") {
                stats.artifact = Some(path.trim().to_owned());
            }
        }
        stats.executions = final_units.or(stats.executions);
        stats
    }
}

/// The number after `key` in a libFuzzer status line (`... exec/s: 2057 rss: 45Mb`).
fn field_after(line: &str, key: &str) -> Option<u64> {
    let (_, rest) = line.split_once(key)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, clap::Error> {
        match crate::cli::parse_from(&[&["fuzz"], a].concat())? {
            crate::cli::Task::Fuzz(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_minutes_and_target() {
        assert_eq!(
            args(&[]).unwrap(),
            Args {
                minutes: 1.0,
                target: None
            }
        );
        assert_eq!(
            args(&["--minutes", "0.5", "frame"]).unwrap(),
            Args {
                minutes: 0.5,
                target: Some("frame".into())
            }
        );
        assert_eq!(args(&["frame", "--minutes=2"]).unwrap().minutes, 2.0);
        assert!(args(&["--minutes"]).is_err());
        assert!(args(&["--minutes", "-1"]).is_err());
        assert!(args(&["--minutes", "0"]).is_err());
        assert!(args(&["--minutes", "soon"]).is_err());
        assert!(args(&["a", "b"]).is_err());
        assert!(args(&["--seconds", "5"]).is_err());
    }

    const CLEAN_RUN: &str = "\
INFO: Running with entropic power schedule (0xFF, 100).
INFO: Seed: 1234
#2\tINITED cov: 41 ft: 42 corp: 1/1b exec/s: 0 rss: 30Mb
#1024\tpulse  cov: 120 ft: 200 corp: 20/300b lim: 14 exec/s: 512 rss: 40Mb
#65536\tNEW    cov: 130 ft: 230 corp: 25/400b lim: 600 exec/s: 21845 rss: 44Mb L: 12/90 MS: 2
#1234567\tDONE   cov: 140 ft: 250 corp: 30/500b lim: 4096 exec/s: 20576 rss: 45Mb
Done 1234567 runs in 61 second(s)
stat::number_of_executed_units: 1234568
stat::average_exec_per_sec:     20576
";

    #[test]
    fn clean_run_reports_final_units_and_rate() {
        assert_eq!(
            Stats::parse(CLEAN_RUN),
            Stats {
                executions: Some(1_234_568),
                exec_per_sec: Some(20_576),
                cov: Some(140),
                ft: Some(250),
                seconds: Some(61),
                artifact: None
            }
        );
    }

    #[test]
    fn crash_reports_the_artifact_and_the_last_count() {
        let out = "\
#4096\tpulse  cov: 120 ft: 200 corp: 20/300b lim: 14 exec/s: 2048 rss: 40Mb
thread '<unnamed>' panicked at fuzz_targets/frame.rs:10:5:
decoded frame over the maximum
==42== ERROR: libFuzzer: deadly signal
SUMMARY: libFuzzer: deadly signal
MS: 1 ChangeBit-; base unit: 0000
artifact_prefix='/w/fuzz/artifacts/frame/'; Test unit written to /w/fuzz/artifacts/frame/crash-da39a3ee
Base64: AAAA
";
        assert_eq!(
            Stats::parse(out),
            Stats {
                executions: Some(4096),
                exec_per_sec: Some(2048),
                cov: Some(120),
                ft: Some(200),
                seconds: None,
                artifact: Some("/w/fuzz/artifacts/frame/crash-da39a3ee".into())
            }
        );
    }

    #[test]
    fn output_without_status_lines_has_no_figures() {
        let out = "   Compiling hail-wire v0.1.0\nerror: could not compile `hail-fuzz`\n";
        assert_eq!(Stats::parse(out), Stats::default());
    }
}
