//! The dependency half of the toolchain floor: no dependency of a published crate declares a
//! `rust-version` above that crate's own.
//!
//! Clippy's `incompatible_msrv` (run by `ci`) catches std APIs newer than the floor, and the
//! list in docs/ARCHITECTURE.md ("Toolchain floor") the language features; this catches a
//! dependency update that raises the floor without saying so. It reads `cargo metadata`
//! (offline once fetched) and follows normal and build dependencies, every platform's.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cmd;

/// Checks the floor and prints the dependencies that come nearest to it.
pub(crate) fn check() -> anyhow::Result<()> {
    let json = cmd::stdout(&mut cmd::cargo([
        "metadata",
        "--format-version",
        "1",
        "--locked",
    ]))?;
    let metadata: Value = serde_json::from_str(&json).context("cargo metadata output")?;
    let floors = floors_in(&metadata)?;
    let mut problems = Vec::new();
    for f in &floors {
        let nearest: Vec<String> = f
            .deps
            .iter()
            .rev()
            .take(4)
            .map(|(v, name)| format!("{name} {}", show(*v)))
            .collect();
        println!(
            "{} {}: dependencies declare at most {} ({})",
            f.package,
            show(f.own),
            f.deps.last().map_or("nothing".into(), |(v, _)| show(*v)),
            nearest.join(", ")
        );
        for (v, name) in f.deps.iter().filter(|(v, _)| *v > f.own) {
            problems.push(format!(
                "{} says rust-version {} but its dependency {name} needs {}",
                f.package,
                show(f.own),
                show(*v)
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}; raise rust-version in the workspace Cargo.toml (and the list in \
             docs/ARCHITECTURE.md) or hold the dependency back",
            problems.join("; ")
        );
    }
    Ok(())
}

/// A `rust-version` as (major, minor, patch).
type Version = (u64, u64, u64);

/// One published workspace crate: its own `rust-version` and the declared ones of its
/// dependencies outside the workspace (normal and build, transitively), ascending.
#[derive(Debug, PartialEq, Eq)]
struct Floor {
    package: String,
    own: Version,
    deps: Vec<(Version, String)>,
}

/// The floors of every published (not `publish = false`) workspace member.
fn floors_in(metadata: &Value) -> anyhow::Result<Vec<Floor>> {
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no `packages`")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let deps: HashMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no `resolve.nodes` (run without --no-deps)")?
        .iter()
        .filter_map(|n| {
            let runtime = n["deps"]
                .as_array()?
                .iter()
                .filter(|d| {
                    d["dep_kinds"].as_array().is_some_and(|kinds| {
                        kinds
                            .iter()
                            .any(|k| k["kind"].is_null() || k["kind"] == "build")
                    })
                })
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((n["id"].as_str()?, runtime))
        })
        .collect();
    let members = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: no `workspace_members`")?;
    let member_ids: BTreeSet<&str> = members.iter().filter_map(Value::as_str).collect();
    let mut floors = Vec::new();
    for &id in &member_ids {
        let package = packages
            .get(id)
            .with_context(|| format!("cargo metadata: no package {id}"))?;
        // `publish = false` is an empty list of registries.
        if package["publish"].as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        let name = package["name"].as_str().unwrap_or(id).to_owned();
        let own = package["rust_version"]
            .as_str()
            .and_then(parse)
            .with_context(|| format!("{name} has no rust-version"))?;
        let mut seen = BTreeSet::new();
        let mut stack = deps.get(id).cloned().unwrap_or_default();
        while let Some(dep) = stack.pop() {
            if seen.insert(dep) {
                stack.extend(deps.get(dep).into_iter().flatten());
            }
        }
        // Workspace crates are checked as members themselves.
        let mut declared: Vec<(Version, String)> = seen
            .iter()
            .filter(|dep| !member_ids.contains(*dep))
            .filter_map(|dep| {
                let p = packages.get(dep)?;
                let v = parse(p["rust_version"].as_str()?)?;
                Some((
                    v,
                    format!("{} {}", p["name"].as_str()?, p["version"].as_str()?),
                ))
            })
            .collect();
        declared.sort();
        floors.push(Floor {
            package: name,
            own,
            deps: declared,
        });
    }
    Ok(floors)
}

/// `1.85` or `1.85.1` as a [`Version`].
fn parse(s: &str) -> Option<Version> {
    let mut parts = s.trim().split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((major, minor, patch))
}

/// A [`Version`] as written in `rust-version`: `1.88`, or `1.88.1` with a patch.
fn show((major, minor, patch): Version) -> String {
    if patch == 0 {
        format!("{major}.{minor}")
    } else {
        format!("{major}.{minor}.{patch}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse("1.88"), Some((1, 88, 0)));
        assert_eq!(parse("1.85.1"), Some((1, 85, 1)));
        assert_eq!(parse("1"), Some((1, 0, 0)));
        assert_eq!(parse("1.x"), None);
        assert_eq!(parse("1.2.3.4"), None);
        assert_eq!(show((1, 88, 0)), "1.88");
        assert_eq!(show((1, 85, 1)), "1.85.1");
    }

    fn pkg(id: &str, rv: Option<&str>, publish: Value) -> Value {
        json!({"id": id, "name": id, "version": "1.0.0", "rust_version": rv, "publish": publish})
    }

    fn dep(pkg: &str, kind: Value) -> Value {
        json!({"pkg": pkg, "dep_kinds": [{"kind": kind}]})
    }

    #[test]
    fn follows_normal_and_build_dependencies_of_published_members() {
        let metadata = json!({
            "workspace_members": ["lib", "tool", "inner"],
            "packages": [
                pkg("lib", Some("1.88"), Value::Null),
                pkg("tool", Some("1.80"), json!([])), // publish = false: not checked
                pkg("inner", Some("1.90"), json!([])), // a member: checked as itself
                pkg("a", Some("1.85"), Value::Null),
                pkg("b", Some("1.70"), Value::Null),
                pkg("c", None, Value::Null),
                pkg("dev-only", Some("1.95"), Value::Null),
                pkg("build", Some("1.86"), Value::Null),
            ],
            "resolve": {"nodes": [
                {"id": "lib", "deps": [dep("a", Value::Null), dep("inner", Value::Null), dep("dev-only", json!("dev"))]},
                {"id": "inner", "deps": []},
                {"id": "tool", "deps": [dep("dev-only", Value::Null)]},
                {"id": "a", "deps": [dep("b", Value::Null), dep("c", Value::Null), dep("build", json!("build"))]},
                {"id": "b", "deps": []},
                {"id": "c", "deps": [dep("a", Value::Null)]},
                {"id": "dev-only", "deps": []},
                {"id": "build", "deps": []},
            ]}
        });
        let floors = floors_in(&metadata).unwrap();
        assert_eq!(
            floors,
            [Floor {
                package: "lib".into(),
                own: (1, 88, 0),
                deps: vec![
                    ((1, 70, 0), "b 1.0.0".into()),
                    ((1, 85, 0), "a 1.0.0".into()),
                    ((1, 86, 0), "build 1.0.0".into()),
                ],
            }]
        );
    }

    #[test]
    fn a_member_without_rust_version_is_an_error() {
        let metadata = json!({
            "workspace_members": ["lib"],
            "packages": [pkg("lib", None, Value::Null)],
            "resolve": {"nodes": [{"id": "lib", "deps": []}]}
        });
        assert!(floors_in(&metadata).is_err());
    }
}
