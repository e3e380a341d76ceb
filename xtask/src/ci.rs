//! `cargo xtask ci`: the one gate, the same locally and in `.ci/run`.
//!
//! Steps, in order, stopping at the first failure: formatting, clippy with warnings denied,
//! docs with warnings denied, the workspace tests, the facade's features, the layering
//! check, the import-cycle check (`imports.rs`), the dependencies' rust-version against
//! ours (`msrv.rs`), a build check of the fuzz targets, `cargo package` of every published
//! crate (each built from its tarball), the attack suite for [`attack::CI_SECS`] each
//! (`cargo xtask attack`), and a run of every example of `hail-examples` (each must end by
//! itself within [`EXAMPLE_TIMEOUT`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cmd::{self, Steps};
use crate::{attack, imports, layering, msrv};

/// The package whose examples CI runs.
const EXAMPLES_PACKAGE: &str = "hail-examples";

/// How long one example may run before it counts as hung: 60 s.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The facade's features, each checked alone (its modules are optional layer crates).
const FACADE_FEATURES: [&str; 6] = ["wire", "crypto", "multicast", "link", "rpc", "discovery"];

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
        "facade `hail`: each feature alone and none (cargo check)",
        || {
            cmd::run(&mut cmd::cargo([
                "check",
                "-p",
                "hail",
                "--no-default-features",
                "--locked",
            ]))?;
            for feature in FACADE_FEATURES {
                cmd::run(&mut cmd::cargo([
                    "check",
                    "-p",
                    "hail",
                    "--no-default-features",
                    "--features",
                    feature,
                    "--locked",
                ]))
                .with_context(|| format!("the facade with only the `{feature}` feature"))?;
            }
            Ok(())
        },
    )?;
    steps.run(
        format!("layering: {:?} stay sans-IO", layering::SANS_IO_CRATES),
        layering::check,
    )?;
    steps.run(
        "imports: no cycle between the files of a crate",
        imports::check,
    )?;
    steps.run(
        "toolchain floor: no dependency needs a newer Rust than rust-version",
        msrv::check,
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
    steps.run(
        "fuzz entry points' own tests (cargo test --features fuzzing)",
        || {
            // The `fuzzing` modules hold differential checks (runs against frame by
            // frame) and refusal tests that `cargo test --workspace` does not build.
            cmd::run(&mut cmd::cargo([
                "test",
                "--locked",
                "-p",
                "hail-link",
                "-p",
                "hail-rpc",
                "--lib",
                "--features",
                "hail-link/fuzzing,hail-rpc/fuzzing",
                "fuzzing::",
            ]))
        },
    )?;
    let metadata = workspace_metadata()?;
    let published = published_in(&metadata)?;
    steps.run(
        format!(
            "cargo package {} (each built from its tarball)",
            published.join(" ")
        ),
        || {
            // The published crates only (`cargo package --workspace` would package the
            // `publish = false` ones too, and fail on their path-only dependencies). Crates
            // that depend on each other are verified together through a local registry
            // (<check dir>/package/tmp-registry), offline. --allow-dirty: the gate runs on
            // work in progress too; what is packaged is the working tree.
            //
            // Cargo takes registry crates as immutable: it reuses what it built and unpacked
            // for `hail-link 0.1.0` earlier, although our tree changed under that version.
            // So the check builds in a target dir of its own, emptied first (its
            // dependencies compile again: about 40 s more than sharing target/), and the
            // unpacked copies of our crates are forgotten.
            let target = metadata["target_directory"]
                .as_str()
                .context("cargo metadata: no target_directory")?;
            let check_dir = std::path::Path::new(target).join("package-check");
            if check_dir.exists() {
                std::fs::remove_dir_all(&check_dir)
                    .with_context(|| format!("removing {}", check_dir.display()))?;
            }
            // Until the step ends: another checkout's run would forget (and re-unpack)
            // the same copies under this one.
            let _turn = package_turn()?;
            forget_unpacked(&published)?;
            let mut package = cmd::cargo(["package", "--locked", "--allow-dirty"]);
            package.arg("--target-dir").arg(&check_dir);
            for name in &published {
                package.args(["-p", name]);
            }
            cmd::run(&mut package)
        },
    )?;
    steps.run(
        format!(
            "attacks: cargo xtask attack --secs {} (release builds; the namespace flood where namespaces can be made)",
            attack::CI_SECS
        ),
        attack::ci,
    )?;
    let package = examples_in(&metadata)?;
    if package.examples.is_empty() {
        println!("\n(no examples in {EXAMPLES_PACKAGE} yet)");
        steps.summary();
        return Ok(());
    }
    // Built with the whole workspace, so the features match the build before `ci` (nothing
    // is compiled again, as `cargo run -p hail-examples` would); then run by path, so the
    // timeout counts the example's own run time only.
    let mut executables = BTreeMap::new();
    steps.run(format!("build the examples of {EXAMPLES_PACKAGE}"), || {
        let mut build = cmd::cargo([
            "build",
            "--workspace",
            "--examples",
            "--locked",
            "--message-format=json-render-diagnostics",
        ]);
        let features: Vec<String> = package
            .examples
            .iter()
            .flat_map(|e| &e.required_features)
            .map(|f| format!("{EXAMPLES_PACKAGE}/{f}"))
            .collect();
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        executables = executables_in(&cmd::stdout(&mut build)?, &package.manifest_path);
        Ok(())
    })?;
    for example in &package.examples {
        steps.run(format!("example {}", example.name), || {
            let Some(exe) = executables.get(&example.name) else {
                bail!("cargo built no executable for example {}", example.name);
            };
            let mut run = Command::new(exe);
            run.current_dir(cmd::root());
            println!("{}", exe.display());
            cmd::run_with_timeout(&mut run, EXAMPLE_TIMEOUT)
        })?;
    }
    steps.summary();
    println!("ci: all steps passed");
    Ok(())
}

/// [`EXAMPLES_PACKAGE`] as `cargo metadata` describes it.
#[derive(Debug, PartialEq, Eq)]
struct ExamplesPackage {
    manifest_path: String,
    examples: Vec<Example>,
}

/// An example target of [`EXAMPLES_PACKAGE`].
#[derive(Debug, PartialEq, Eq)]
struct Example {
    name: String,
    required_features: Vec<String>,
}

/// `$CARGO_HOME` (or `~/.cargo`).
fn cargo_home() -> Option<std::path::PathBuf> {
    match std::env::var_os("CARGO_HOME") {
        Some(h) => Some(std::path::PathBuf::from(h)),
        None => std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")),
    }
}

/// An exclusive lock on `$CARGO_HOME/hail-package.lock`, held while the package step runs:
/// the unpacked copies of our crates in `$CARGO_HOME` are shared by every checkout on the
/// machine, and [`forget_unpacked`] in one checkout removed them under another's `cargo
/// package` (two `cargo xtask ci` at once broke each other). Waits for the other's turn.
fn package_turn() -> anyhow::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    match cargo_home() {
        Some(home) => package_turn_in(&home).map(Some),
        None => Ok(None),
    }
}

/// [`package_turn`] in `home`.
fn package_turn_in(home: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let path = home.join("hail-package.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(lock),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            println!(
                "(another checkout is packaging; waiting for {})",
                path.display()
            );
            file
        }
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    };
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

/// Removes cargo's unpacked copies of our own packages from earlier `cargo package` runs.
/// Cargo unpacks the local registry's tarballs into `$CARGO_HOME/registry/src/-<hash>/`
/// (a directory name starting with `-`: a registry without a host) and reuses an unpacked
/// `name-version` as it is, so without this a second run on one machine verifies each
/// crate against its dependencies as they were at the first run. Registries of a host
/// (crates.io) are never touched.
fn forget_unpacked(published: &[String]) -> anyhow::Result<()> {
    let Some(home) = cargo_home() else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(home.join("registry/src")) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for unpacked in std::fs::read_dir(registry.path())?.flatten() {
            let dir = unpacked.file_name().to_string_lossy().into_owned();
            if published.iter().any(|name| is_version_of(&dir, name)) {
                std::fs::remove_dir_all(unpacked.path())
                    .with_context(|| format!("removing {}", unpacked.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Whether an unpacked directory name (`hail-link-0.1.0`) is a version of `name`.
fn is_version_of(dir: &str, name: &str) -> bool {
    dir.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

/// The workspace's packages as `cargo metadata --no-deps` describes them.
fn workspace_metadata() -> anyhow::Result<Value> {
    let json = cmd::stdout(&mut cmd::cargo([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--locked",
    ]))?;
    serde_json::from_str(&json).context("cargo metadata output")
}

/// The names of the workspace packages that may be published (not `publish = false`,
/// which `cargo metadata` shows as an empty list of registries), sorted.
fn published_in(metadata: &Value) -> anyhow::Result<Vec<String>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no `packages` array")?;
    let mut names: Vec<String> = packages
        .iter()
        .filter(|p| !p["publish"].as_array().is_some_and(Vec::is_empty))
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("cargo metadata: no publishable package in the workspace");
    }
    Ok(names)
}

/// [`EXAMPLES_PACKAGE`] in `cargo metadata` JSON, its examples sorted by name.
fn examples_in(metadata: &Value) -> anyhow::Result<ExamplesPackage> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no `packages` array")?;
    let Some(package) = packages.iter().find(|p| p["name"] == EXAMPLES_PACKAGE) else {
        bail!("cargo metadata: no package {EXAMPLES_PACKAGE} in the workspace");
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
    Ok(ExamplesPackage {
        manifest_path: package["manifest_path"]
            .as_str()
            .context("cargo metadata: package without manifest_path")?
            .to_owned(),
        examples,
    })
}

/// Example name to executable, for the examples of the package at `manifest_path`, from
/// the JSON messages of `cargo build --message-format=json`.
fn executables_in(messages: &str, manifest_path: &str) -> BTreeMap<String, PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["manifest_path"] == manifest_path)
        .filter(|m| strings(&m["target"]["kind"]).iter().any(|k| k == "example"))
        .filter_map(|m| {
            Some((
                m["target"]["name"].as_str()?.to_owned(),
                PathBuf::from(m["executable"].as_str()?),
            ))
        })
        .collect()
}

/// The strings of a JSON array (none for anything else).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    /// Two checkouts' package steps take turns: while one holds the lock, another's
    /// attempt on the same `$CARGO_HOME` fails until it is let go.
    #[test]
    fn the_package_step_holds_cargo_home_s_lock_for_its_turn() {
        use nix::fcntl::{Flock, FlockArg};
        let home = std::env::temp_dir().join(format!("hail-xtask-lock-{}", std::process::id()));
        let turn = package_turn_in(&home).unwrap();
        let other = || {
            let f = std::fs::File::open(home.join("hail-package.lock")).unwrap();
            Flock::lock(f, FlockArg::LockExclusiveNonblock)
        };
        assert!(
            matches!(other(), Err((_, nix::errno::Errno::EWOULDBLOCK))),
            "held"
        );
        drop(turn);
        assert!(other().is_ok(), "let go");
        std::fs::remove_dir_all(&home).unwrap();
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn unpacked_directories_are_matched_by_name_and_version() {
        assert!(is_version_of("hail-link-0.1.0", "hail-link"));
        assert!(is_version_of("hail-0.2.0", "hail"));
        assert!(!is_version_of("hail-link-0.1.0", "hail"));
        assert!(!is_version_of("hail-linkx-0.1.0", "hail-link"));
    }

    #[test]
    fn finds_example_targets_of_the_examples_package_only() {
        let metadata = json!({
            "packages": [
                {"name": "hail-wire", "manifest_path": "/w/crates/hail-wire/Cargo.toml",
                 "targets": [{"name": "not-this", "kind": ["example"]}]},
                {"name": "hail-examples", "manifest_path": "/w/examples/Cargo.toml",
                 "targets": [
                    {"name": "hail_examples", "kind": ["lib"]},
                    {"name": "sensor", "kind": ["example"]},
                    {"name": "chat", "kind": ["example"], "required-features": ["crypto"]},
                    {"name": "it", "kind": ["test"]}
                ]}
            ]
        });
        let found = examples_in(&metadata).unwrap();
        assert_eq!(
            found,
            ExamplesPackage {
                manifest_path: "/w/examples/Cargo.toml".into(),
                examples: vec![
                    Example {
                        name: "chat".into(),
                        required_features: vec!["crypto".into()]
                    },
                    Example {
                        name: "sensor".into(),
                        required_features: vec![]
                    },
                ]
            }
        );
    }

    #[test]
    fn executables_come_from_example_artifacts_of_the_package() {
        let messages = [
            json!({"reason": "compiler-artifact", "manifest_path": "/w/examples/Cargo.toml",
                   "target": {"name": "frames", "kind": ["example"]},
                   "executable": "/t/debug/examples/frames"}),
            // The library of the same package: no executable.
            json!({"reason": "compiler-artifact", "manifest_path": "/w/examples/Cargo.toml",
                   "target": {"name": "hail_examples", "kind": ["lib"]}, "executable": null}),
            // An example of another package.
            json!({"reason": "compiler-artifact", "manifest_path": "/w/crates/x/Cargo.toml",
                   "target": {"name": "other", "kind": ["example"]},
                   "executable": "/t/debug/examples/other"}),
            json!({"reason": "build-finished", "success": true}),
        ]
        .map(|m| m.to_string())
        .join("\n");
        let found = executables_in(&messages, "/w/examples/Cargo.toml");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [(
                "frames".to_owned(),
                PathBuf::from("/t/debug/examples/frames")
            )]
        );
    }

    #[test]
    fn published_packages_leave_out_publish_false() {
        let metadata = json!({"packages": [
            {"name": "hail-wire", "publish": null},
            {"name": "xtask", "publish": []},
            {"name": "hail", "publish": null},
            {"name": "private-registry-only", "publish": ["corp"]},
        ]});
        assert_eq!(
            published_in(&metadata).unwrap(),
            ["hail", "hail-wire", "private-registry-only"]
        );
        let none = json!({"packages": [{"name": "xtask", "publish": []}]});
        assert!(published_in(&none).is_err());
    }

    #[test]
    fn missing_examples_package_is_an_error() {
        let metadata = json!({"packages": [{"name": "other", "targets": []}]});
        let err = examples_in(&metadata).unwrap_err();
        assert!(err.to_string().contains("hail-examples"), "{err}");
    }
}
