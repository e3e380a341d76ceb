//! The layering check: the sans-IO crates pull in no runtime, sockets or timers.
//!
//! `hail-wire` and `hail-crypto` are protocol logic only (bytes in, bytes out), so their
//! normal dependencies, with every feature of theirs enabled, must not turn on tokio's
//! IO-driver features. Dev-dependencies may (tests use real sockets); `cargo tree -e normal`
//! leaves them out of both the graph and the feature resolution.

use anyhow::bail;

use crate::cmd;

/// Crates that must stay sans-IO.
pub(crate) const SANS_IO_CRATES: &[&str] = &["hail-wire", "hail-crypto"];

/// tokio features that bring a runtime, sockets or timers.
pub(crate) const FORBIDDEN_TOKIO_FEATURES: &[&str] = &["net", "rt", "rt-multi-thread", "time"];

/// One violation: `krate` pulls `feature` of `package` (e.g. `tokio v1.47.0`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) package: String,
    pub(crate) feature: String,
}

/// Runs the check for every crate in [`SANS_IO_CRATES`].
pub(crate) fn check() -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for krate in SANS_IO_CRATES {
        let tree = cmd::stdout(&mut cmd::cargo([
            "tree",
            "--locked",
            "--all-features",
            "-p",
            krate,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}|{f}",
        ]))?;
        let found = violations(&tree);
        if found.is_empty() {
            println!("{krate}: no tokio net/rt/rt-multi-thread/time through normal dependencies");
        }
        for v in found {
            failures.push(format!(
                "{krate} pulls feature `{}` of {} through its normal dependencies \
                 (see `cargo tree -p {krate} -e normal,features -i tokio`)",
                v.feature, v.package
            ));
        }
    }
    if !failures.is_empty() {
        bail!(
            "layering check: sans-IO crates must not enable tokio's {FORBIDDEN_TOKIO_FEATURES:?} \
             features:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// Parses `cargo tree --prefix none --format '{p}|{f}'` output and returns every forbidden
/// tokio feature, once per package version.
pub(crate) fn violations(tree: &str) -> Vec<Violation> {
    let mut found = Vec::new();
    for line in tree.lines() {
        let line = line.trim();
        let line = line.strip_suffix("(*)").unwrap_or(line).trim_end();
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        let package = package.trim();
        if package.split_whitespace().next() != Some("tokio") {
            continue;
        }
        for feature in features.split(',').map(str::trim) {
            let v = Violation {
                package: package.to_owned(),
                feature: feature.to_owned(),
            };
            if FORBIDDEN_TOKIO_FEATURES.contains(&feature) && !found.contains(&v) {
                found.push(v);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
hail-wire v0.1.0 (/work/main/crates/hail-wire)|
bytes v1.12.1|default,std
tokio-util v0.7.20|codec,libc
tokio v1.54.1|default,sync
pin-project-lite v0.2.17|
";

    #[test]
    fn sync_only_tokio_passes() {
        assert_eq!(violations(CLEAN), vec![]);
    }

    #[test]
    fn finds_each_forbidden_feature_once() {
        let tree = "\
hail-crypto v0.1.0 (/x)|
tokio v1.54.1|bytes,default,io-util,net,rt,sync,time,tokio-macros
tokio v1.54.1|bytes,default,io-util,net,rt,sync,time,tokio-macros (*)
tokio-stream v0.1.17|time
";
        let found: Vec<_> = violations(tree)
            .into_iter()
            .map(|v| format!("{} {}", v.package, v.feature))
            .collect();
        assert_eq!(
            found,
            [
                "tokio v1.54.1 net",
                "tokio v1.54.1 rt",
                "tokio v1.54.1 time"
            ]
        );
    }

    #[test]
    fn other_packages_with_the_same_feature_names_pass() {
        // `tokio-stream`'s `time` and `tokio-util`'s `net` are not tokio's.
        let tree = "tokio-stream v0.1.17|time\ntokio-util v0.7.20|net,rt\n";
        assert_eq!(violations(tree), vec![]);
    }

    #[test]
    fn multi_thread_runtime_is_caught() {
        let found = violations("tokio v1.47.0|rt-multi-thread\n");
        assert_eq!(
            found,
            [Violation {
                package: "tokio v1.47.0".into(),
                feature: "rt-multi-thread".into()
            }]
        );
    }
}
