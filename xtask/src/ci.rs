//! `cargo xtask ci`: the one gate, the same locally and in `.ci/run`.
//!
//! Steps, in order, stopping at the first failure: formatting, clippy with warnings denied,
//! docs with warnings denied, the workspace tests, the layering check, a build check of
//! the fuzz targets, and a run of every example of `hail-examples` (each must end by itself
//! within [`EXAMPLE_TIMEOUT`]).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cmd::{self, Steps};
use crate::layering;

/// The package whose examples CI runs.
const EXAMPLES_PACKAGE: &str = "hail-examples";

/// How long one example may run before it counts as hung: 60 s.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every step; the error names the step that failed.
pub(crate) fn run() -> anyhow::Result<()> {
    let mut steps = Steps::new("ci");
    steps.run("cargo fmt --all --check", || {
        cmd::run(&mut cmd::cargo(["fmt", "--all", "--check"])).context("run `cargo fmt --all`")?;
        // The fuzz crate is outside the workspace; format it too.
        cmd::run(&mut cmd::cargo([
            "fmt",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--all",
            "--check",
        ]))
        .context("run `cargo fmt --manifest-path fuzz/Cargo.toml --all`")
    })?;
    steps.run(
        "cargo clippy (all targets, all features, -D warnings)",
        || {
            cmd::run(&mut cmd::cargo([
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    steps.run("cargo doc (RUSTDOCFLAGS=-Dwarnings)", || {
        cmd::run(
            cmd::cargo(["doc", "--workspace", "--no-deps", "--locked"])
                .env("RUSTDOCFLAGS", "-Dwarnings"),
        )
    })?;
    steps.run("cargo test --workspace", || {
        cmd::run(&mut cmd::cargo(["test", "--workspace", "--locked"]))
    })?;
    steps.run(
        format!("layering: {:?} stay sans-IO", layering::SANS_IO_CRATES),
        layering::check,
    )?;
    steps.run("fuzz targets compile (cargo check, fuzz/)", || {
        // A plain check (no sanitizers, stable toolchain): catches targets that no longer
        // compile against the crates they fuzz. Running them is `cargo xtask fuzz`.
        cmd::run(&mut cmd::cargo([
            "check",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--locked",
            "--bins",
        ]))
        .context(
            "if fuzz/Cargo.lock is out of date, update it with \
             `cargo check --manifest-path fuzz/Cargo.toml` and commit it",
        )
    })?;
    let examples = examples()?;
    if examples.is_empty() {
        println!("\n(no examples in {EXAMPLES_PACKAGE} yet)");
    }
    for example in &examples {
        steps.run(format!("example {}", example.name), || {
            let mut run = cmd::cargo([
                "run",
                "--locked",
                "-p",
                EXAMPLES_PACKAGE,
                "--example",
                &example.name,
            ]);
            if !example.required_features.is_empty() {
                run.args(["--features", &example.required_features.join(",")]);
            }
            cmd::run_with_timeout(&mut run, EXAMPLE_TIMEOUT)
        })?;
    }
    steps.summary();
    println!("ci: all steps passed");
    Ok(())
}

/// An example target of [`EXAMPLES_PACKAGE`].
#[derive(Debug, PartialEq, Eq)]
struct Example {
    name: String,
    required_features: Vec<String>,
}

/// The examples of [`EXAMPLES_PACKAGE`], from `cargo metadata`.
fn examples() -> anyhow::Result<Vec<Example>> {
    let json = cmd::stdout(&mut cmd::cargo([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--locked",
    ]))?;
    let metadata: Value = serde_json::from_str(&json).context("cargo metadata output")?;
    examples_in(&metadata)
}

/// The example targets of [`EXAMPLES_PACKAGE`] in `cargo metadata` JSON, sorted by name.
fn examples_in(metadata: &Value) -> anyhow::Result<Vec<Example>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no `packages` array")?;
    let Some(package) = packages.iter().find(|p| p["name"] == EXAMPLES_PACKAGE) else {
        bail!("cargo metadata: no package {EXAMPLES_PACKAGE} in the workspace");
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut examples: Vec<Example> = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| strings(&t["kind"]).iter().any(|k| k == "example"))
        .filter_map(|t| {
            Some(Example {
                name: t["name"].as_str()?.to_owned(),
                required_features: strings(&t["required-features"]),
            })
        })
        .collect();
    examples.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_example_targets_of_the_examples_package_only() {
        let metadata = json!({
            "packages": [
                {"name": "hail-wire", "targets": [
                    {"name": "not-this", "kind": ["example"]}
                ]},
                {"name": "hail-examples", "targets": [
                    {"name": "hail_examples", "kind": ["lib"]},
                    {"name": "chat", "kind": ["example"], "required-features": ["crypto"]},
                    {"name": "sensor", "kind": ["example"]},
                    {"name": "it", "kind": ["test"]}
                ]}
            ]
        });
        let found = examples_in(&metadata).unwrap();
        assert_eq!(
            found,
            [
                Example {
                    name: "chat".into(),
                    required_features: vec!["crypto".into()]
                },
                Example {
                    name: "sensor".into(),
                    required_features: vec![]
                },
            ]
        );
    }

    #[test]
    fn missing_examples_package_is_an_error() {
        let metadata = json!({"packages": [{"name": "other", "targets": []}]});
        let err = examples_in(&metadata).unwrap_err();
        assert!(err.to_string().contains("hail-examples"), "{err}");
    }
}
