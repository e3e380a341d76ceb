//! `cargo xtask bench [--quick] [--json] [--peers] [FILTER]`: runs `hail-benches` in release
//! mode, or with `--peers` the comparison with zenoh and tarpc in `peers/` (its own Cargo
//! project outside the workspace, so CI never builds zenoh).
//!
//! The runner prints one JSON object per figure
//! (`{"name","ours","baseline","unit","ratio","better"}`). This task prints them as a table
//! (or, with `--json`, unchanged) and always writes them all, as one JSON array, to
//! `target/bench/latest.json` and `target/bench/bench-<unix-seconds>.json` (with `--peers`:
//! `peers-latest.json` and `peers-<unix-seconds>.json`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cmd;

/// The options of `cargo xtask bench`.
#[derive(Debug, Default, PartialEq, Eq, clap::Args)]
pub(crate) struct Args {
    /// Fewer iterations: a quick look, not figures to compare
    #[arg(long)]
    quick: bool,
    /// Print the runner's JSON lines (one object per figure) instead of the table
    #[arg(long)]
    json: bool,
    /// hail against zenoh and tarpc (peers/) instead of hail-benches
    #[arg(long)]
    peers: bool,
    /// Only the benchmarks whose name contains FILTER (or groups it starts with), e.g. wire/
    #[arg(value_name = "FILTER")]
    filter: Option<String>,
}

/// Builds and runs the benchmarks, prints the figures and writes the JSON files.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let mut bench = if args.peers {
        cmd::cargo([
            "run",
            "--release",
            "--locked",
            "--manifest-path",
            "peers/Cargo.toml",
            "--",
        ])
    } else {
        cmd::cargo([
            "run",
            "--release",
            "--locked",
            "-p",
            "hail-benches",
            "--bin",
            "hail-benches",
            "--",
        ])
    };
    if args.quick {
        bench.arg("--quick");
    }
    if let Some(filter) = &args.filter {
        bench.arg(filter);
    }
    eprintln!("bench: {}", cmd::describe(&bench));
    let mut child = bench
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::describe(&bench)))?;
    let stdout = child.stdout.take().context("benchmark stdout")?;

    let mut records = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading benchmark output")?;
        match serde_json::from_str::<Value>(&line) {
            Ok(record) if record.get("name").is_some_and(Value::is_string) => {
                if args.json {
                    println!("{line}");
                } else {
                    eprintln!("bench: {} done", record["name"].as_str().unwrap_or("?"));
                }
                records.push(record);
            }
            // Not a record: pass it on where it does not disturb the table or the JSON lines.
            _ => eprintln!("{line}"),
        }
    }
    let status = child.wait().context("waiting for the benchmarks")?;

    let prefix = if args.peers { "peers" } else { "bench" };
    let (latest, stamped) = write_files(&records, prefix)?;
    if !args.json {
        print!("{}", table(&records));
    }
    eprintln!(
        "bench: {} figures written to {} and {}",
        records.len(),
        latest.display(),
        stamped.display()
    );
    if !status.success() {
        bail!("`{}` failed: {status}", cmd::describe(&bench));
    }
    Ok(())
}

/// Writes `records` as a JSON array to `target/bench/latest.json` and
/// `target/bench/bench-<unix-seconds>.json` (`peers-latest.json` and `peers-<secs>.json`
/// for the `peers` prefix); returns both paths.
fn write_files(records: &[Value], prefix: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = cmd::root().join("target").join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    let json = serde_json::to_string_pretty(records)? + "\n";
    let latest = match prefix {
        "bench" => dir.join("latest.json"),
        _ => dir.join(format!("{prefix}-latest.json")),
    };
    let stamped = dir.join(format!("{prefix}-{secs}.json"));
    for path in [&latest, &stamped] {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((latest, stamped))
}

/// The records as an aligned Markdown table: `benchmark | ours | baseline | unit | ratio`.
fn table(records: &[Value]) -> String {
    let header = ["benchmark", "ours", "baseline", "unit", "ratio"];
    // Numbers are right-aligned, text left-aligned.
    let right = [false, true, true, false, true];
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|r| {
            [
                r["name"].as_str().unwrap_or("?").to_owned(),
                number(&r["ours"]),
                number(&r["baseline"]),
                r["unit"].as_str().unwrap_or("").to_owned(),
                r["ratio"]
                    .as_f64()
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        let cells: Vec<String> = (0..5)
            .map(|i| {
                if right[i] {
                    format!("{:>w$}", cells[i], w = width[i])
                } else {
                    format!("{:<w$}", cells[i], w = width[i])
                }
            })
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(&header.map(str::to_owned));
    let rule: Vec<String> = (0..5)
        .map(|i| {
            let dashes = "-".repeat(width[i]);
            if right[i] {
                format!("{dashes}:")
            } else {
                format!("{dashes}-")
            }
        })
        .collect();
    out.push_str(&format!("|-{}|\n", rule.join("|-")));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// A figure with three significant digits and an SI prefix: `12.3 M`, `842 k`, `3.50`,
/// `1.20e-4`; `-` where there is none (JSON null).
fn number(v: &Value) -> String {
    let Some(x) = v.as_f64() else {
        return "-".to_owned();
    };
    if x == 0.0 {
        return "0".to_owned();
    }
    let abs = x.abs();
    if !(1e-3..1e12).contains(&abs) {
        return format!("{x:.2e}");
    }
    let (scaled, prefix) = match abs {
        a if a >= 1e9 => (x / 1e9, " G"),
        a if a >= 1e6 => (x / 1e6, " M"),
        a if a >= 1e4 => (x / 1e3, " k"),
        _ => (x, ""),
    };
    let decimals = match scaled.abs() {
        a if a >= 999.5 => 0,
        a if a >= 99.95 => 0,
        a if a >= 9.995 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    format!("{scaled:.decimals$}{prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(a: &[&str]) -> Result<Args, clap::Error> {
        match crate::cli::parse_from(&[&["bench"], a].concat())? {
            crate::cli::Task::Bench(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_flags_and_one_filter() {
        assert_eq!(
            args(&["--quick", "wire/", "--json"]).unwrap(),
            Args {
                quick: true,
                json: true,
                peers: false,
                filter: Some("wire/".into())
            }
        );
        assert!(args(&["--peers", "--quick"]).unwrap().peers);
        assert_eq!(args(&[]).unwrap(), Args::default());
        assert!(args(&["--fast"]).is_err());
        assert!(args(&["a", "b"]).is_err());
    }

    #[test]
    fn numbers_read_well() {
        let n = |x: f64| number(&json!(x));
        assert_eq!(n(12_345_678.0), "12.3 M");
        assert_eq!(n(1.1e7), "11.0 M");
        assert_eq!(n(2.5e9), "2.50 G");
        assert_eq!(n(842_000.0), "842 k");
        assert_eq!(n(12_345.0), "12.3 k");
        assert_eq!(n(5_000.0), "5000");
        assert_eq!(n(523.7), "524");
        assert_eq!(n(3.5), "3.50");
        assert_eq!(n(0.25), "0.250");
        assert_eq!(n(0.000_12), "1.20e-4");
        assert_eq!(n(0.0), "0");
        assert_eq!(number(&Value::Null), "-");
    }

    #[test]
    fn table_is_aligned_with_dashes_for_missing_figures() {
        let records = [
            json!({"name": "wire/codec-64B", "ours": 1.23e7, "baseline": 1.1e7,
                   "unit": "msg/s", "ratio": 1.1181, "better": "higher"}),
            json!({"name": "wire/mem", "ours": 70000.0, "baseline": null,
                   "unit": "bytes", "ratio": null, "better": "lower"}),
        ];
        let expected = "\
| benchmark      |   ours | baseline | unit  | ratio |
|----------------|-------:|---------:|-------|------:|
| wire/codec-64B | 12.3 M |   11.0 M | msg/s |  1.12 |
| wire/mem       | 70.0 k |        - | bytes |     - |
";
        assert_eq!(table(&records), expected);
    }

    #[test]
    fn empty_table_has_a_header() {
        assert_eq!(table(&[]).lines().count(), 2);
    }
}
