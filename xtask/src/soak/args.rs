//! soak's command line.

use crate::cli::{non_negative, positive, positive_u64, ranged};

/// The options of `cargo xtask soak`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub(crate) struct Args {
    /// How long the load runs, in minutes (more than 0; fractions allowed)
    #[arg(long, value_name = "M", default_value = "5", value_parser = positive)]
    pub(super) minutes: f64,
    /// Device processes, 2 to 64
    #[arg(long, value_name = "N", default_value = "10", value_parser = nodes)]
    pub(super) nodes: usize,
    /// One random restartable node is restarted every K seconds (1 or more)
    #[arg(long, value_name = "K", default_value = "10", value_parser = restart_secs)]
    pub(super) restart_secs: f64,
    /// Share of restarts by SIGKILL, 0 to 1; the rest are graceful (stdin closed: the node
    /// stops its load, shuts the device down, drains its events)
    #[arg(long, value_name = "R", default_value = "0.5", value_parser = ratio)]
    pub(super) kill_ratio: f64,
    /// The first S nodes are never restarted: their RSS over the whole run is the drift
    /// figure (fewer than --nodes)
    #[arg(long, value_name = "S", default_value = "2")]
    pub(super) stable: usize,
    /// Seconds before the RSS baseline is taken [default: M*60/6, clamped to 60..300]
    #[arg(long, value_name = "W", value_parser = non_negative)]
    pub(super) warmup_secs: Option<f64>,
    /// Milliseconds between messages, per node (more than 0)
    #[arg(long, value_name = "MS", default_value = "100", value_parser = positive_u64)]
    pub(super) msg_ms: u64,
    /// Milliseconds between asks, per node (more than 0)
    #[arg(long, value_name = "MS", default_value = "500", value_parser = positive_u64)]
    pub(super) ask_ms: u64,
    /// Milliseconds between RPC calls, per node (more than 0)
    #[arg(long, value_name = "MS", default_value = "250", value_parser = positive_u64)]
    pub(super) rpc_ms: u64,
    /// Seed of the restart schedule and the nodes' choices [default: from the clock]
    #[arg(long, value_name = "N")]
    pub(super) seed: Option<u64>,
}

impl Args {
    /// What clap cannot check alone: at least one node is left to restart.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.stable >= self.nodes {
            return Err(
                "--stable must leave at least one node to restart (fewer than --nodes)".into(),
            );
        }
        Ok(())
    }

    /// Seconds of warm-up: `--warmup-secs`, else a sixth of the run clamped to 60..300.
    pub(super) fn warmup(&self) -> f64 {
        self.warmup_secs
            .unwrap_or_else(|| (self.minutes * 60.0 / 6.0).clamp(60.0, 300.0))
    }
}

fn nodes(s: &str) -> Result<usize, String> {
    ranged(s, 2, 64)
}

fn restart_secs(s: &str) -> Result<f64, String> {
    positive(s)
        .ok()
        .filter(|k| *k >= 1.0)
        .ok_or_else(|| "takes 1 s or more".into())
}

fn ratio(s: &str) -> Result<f64, String> {
    non_negative(s)
        .ok()
        .filter(|r| *r <= 1.0)
        .ok_or_else(|| "takes a ratio from 0 to 1".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, clap::Error> {
        match crate::cli::parse_from(&[&["soak"], a].concat())? {
            crate::cli::Task::Soak(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(
            args(&[]).unwrap(),
            Args {
                minutes: 5.0,
                nodes: 10,
                restart_secs: 10.0,
                kill_ratio: 0.5,
                stable: 2,
                warmup_secs: None,
                msg_ms: 100,
                ask_ms: 500,
                rpc_ms: 250,
                seed: None,
            }
        );
        assert_eq!(args(&[]).unwrap().warmup(), 60.0);
    }

    #[test]
    fn every_flag_parses() {
        let a = args(&[
            "--minutes",
            "30",
            "--nodes",
            "12",
            "--restart-secs",
            "5",
            "--kill-ratio",
            "0.25",
            "--stable",
            "3",
            "--warmup-secs",
            "90",
            "--msg-ms",
            "50",
            "--ask-ms",
            "400",
            "--rpc-ms=200",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                minutes: 30.0,
                nodes: 12,
                restart_secs: 5.0,
                kill_ratio: 0.25,
                stable: 3,
                warmup_secs: Some(90.0),
                msg_ms: 50,
                ask_ms: 400,
                rpc_ms: 200,
                seed: Some(7),
            }
        );
        assert_eq!(a.warmup(), 90.0);
        let a = args(&["--minutes", "30"]).unwrap();
        assert_eq!(a.warmup(), 300.0);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--minutes", "0"][..],
            &["--minutes"],
            &["--nodes", "1"],
            &["--nodes", "65"],
            &["--restart-secs", "0.5"],
            &["--kill-ratio", "2"],
            &["--stable", "10"],
            &["--stable", "3", "--nodes", "3"],
            &["--warmup-secs", "-1"],
            &["--msg-ms", "0"],
            &["--ask-ms", "x"],
            &["--rpc-ms", "0"],
            &["--seed", "-3"],
            &["--bogus", "1"],
            &["5"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
    }
}
