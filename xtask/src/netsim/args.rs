//! netsim's command line: the flags as given ([`Flags`]) and with the defaults of `--quick`
//! or the full run applied ([`Args`]).

use crate::cli::ranged;

/// The most hosts one LAN holds here.
pub(super) const MAX_HOSTS: usize = 200;

/// Plain (no passphrase) or sealed (`HAIL_PASSPHRASE` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Mode {
    /// No passphrase.
    Plain,
    /// Adverts sealed and links secured by a passphrase.
    Sealed,
}

impl Mode {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Sealed => "sealed",
        }
    }
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// N devices start at once: time until all have joined all.
    Discovery,
    /// A device SIGKILLed (as a process, then as a host cut off): time until all report it gone.
    Kill,
    /// Two halves cut apart, then healed: time until one mesh again.
    Partition,
    /// A device killed and started again under its name: all join the new id, one link a pair.
    Restart,
}

/// The address families of the simulated LAN's veths, and so of the runs on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Family {
    /// IPv4 only (10.77.0.<i+1>/24); devices on the IPv4 group 239.255.77.1.
    V4,
    /// IPv6 only (fe80::<i+1>/64, no IPv4 address); devices on the link-scoped IPv6 group
    /// ff02::4d:1.
    V6,
    /// Both on every veth; the scenarios run twice, devices on the IPv4 group, then on the
    /// IPv6 group.
    Dual,
    /// Mixed families on one LAN: host i IPv4-only for i % 3 == 0, IPv6-only (link-local)
    /// for 1, both for 2; devices on the default groups (`--interface eth0`, no
    /// `--group`). Only discovery runs, its verdict: dual-stack hosts join every device,
    /// single-family hosts those of their family and the dual-stack ones.
    Mixed,
}

impl Family {
    /// The same, in hail-testsupport's words.
    pub(super) fn support(self) -> hail_testsupport::Family {
        match self {
            Self::V4 => hail_testsupport::Family::V4,
            Self::V6 => hail_testsupport::Family::V6,
            Self::Dual | Self::Mixed => hail_testsupport::Family::Dual,
        }
    }

    /// The groups devices run on, in order: false the IPv4 group, true the IPv6 one (on
    /// a mixed LAN: the default groups, once, named false).
    pub(super) fn groups(self) -> &'static [bool] {
        match self {
            Self::V4 | Self::Mixed => &[false],
            Self::V6 => &[true],
            Self::Dual => &[false, true],
        }
    }
}

/// The options of `cargo xtask netsim` as given; [`Flags::resolve`] applies the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub(crate) struct Flags {
    /// Short defaults: 3 discovery runs of N=5 at 10% loss, 1 run of each fault with N=5
    #[arg(long)]
    quick: bool,
    /// Discovery runs per size and loss rate, 1 to 10000 [default: 20; --quick: 3]
    #[arg(long, value_name = "R", value_parser = discovery_runs)]
    runs: Option<usize>,
    /// Discovery sizes, 2 to 200 hosts [default: 5,10,25; --quick: 5]
    #[arg(long, value_name = "N,..", value_delimiter = ',', value_parser = size)]
    sizes: Option<Vec<usize>>,
    /// Discovery loss rates, percent (0 to 99; `20%` too) [default: 0,10,20; --quick: 10]
    #[arg(long, value_name = "PCT,..", value_delimiter = ',', value_parser = percent)]
    loss: Option<Vec<u8>>,
    /// Duplication, percent of sent packets, wherever loss is above 0
    #[arg(long, value_name = "PCT", default_value = "2", value_parser = percent)]
    dup: u8,
    /// Runs of each fault scenario, 1 to 1000 [default: 5; --quick: 1]
    #[arg(long, value_name = "R", value_parser = fault_runs)]
    fault_runs: Option<usize>,
    /// Devices in the fault scenarios, 4 to 200 [default: 10; --quick: 5]
    #[arg(long, value_name = "N", value_parser = fault_size)]
    fault_size: Option<usize>,
    /// Loss rate of the fault scenarios, percent
    #[arg(long, value_name = "PCT", default_value = "10", value_parser = percent)]
    fault_loss: u8,
    /// Modes
    #[arg(
        long,
        value_name = "MODE,..",
        value_delimiter = ',',
        default_value = "plain,sealed"
    )]
    modes: Vec<Mode>,
    /// Scenarios
    #[arg(
        long,
        value_name = "SCENARIO,..",
        value_delimiter = ',',
        default_value = "discovery,kill,partition,restart"
    )]
    scenarios: Vec<Scenario>,
    /// Address families of the LAN, one LAN each in turn: v4 (IPv4 only), v6 (IPv6 only:
    /// link-local, no IPv4 address, devices on the group `[ff02::4d:1]`), dual (both; the
    /// scenarios run on the IPv4 group, then on the IPv6 group), mixed (hosts IPv4-only,
    /// IPv6-only and dual-stack in turn, devices on the default groups; discovery only,
    /// each host joining those it shares a family with). With v4 and v6 (or dual) the
    /// goals include IPv6 discovery p50 within 1.5x IPv4's
    #[arg(
        long,
        value_name = "FAMILY,..",
        value_delimiter = ',',
        default_value = "v4"
    )]
    family: Vec<Family>,
    /// IPv6 hosts get a unique local address (fd00:0:a:4d00::<i+1>/64) beside the
    /// link-local one; devices then listen on it and advertise it
    #[arg(long)]
    ula: bool,
    /// A missed goal fails the command (a broken check always does)
    #[arg(long)]
    strict: bool,
}

impl Flags {
    /// The run these flags ask for: the defaults of `--quick` (or of the full run) where a
    /// flag is absent, lists sorted and without repeats.
    pub(crate) fn resolve(self) -> Args {
        let quick = self.quick;
        let pick = |quick_value: usize, full: usize| if quick { quick_value } else { full };
        Args {
            runs: self.runs.unwrap_or(pick(3, 20)),
            sizes: sorted(
                self.sizes
                    .unwrap_or_else(|| if quick { vec![5] } else { vec![5, 10, 25] }),
            ),
            loss: sorted(
                self.loss
                    .unwrap_or_else(|| if quick { vec![10] } else { vec![0, 10, 20] }),
            ),
            dup: self.dup,
            fault_runs: self.fault_runs.unwrap_or(pick(1, 5)),
            fault_size: self.fault_size.unwrap_or(pick(5, 10)),
            fault_loss: self.fault_loss,
            modes: sorted(self.modes),
            scenarios: sorted(self.scenarios),
            strict: self.strict,
            families: sorted(self.family),
            ula: self.ula,
        }
    }
}

/// What to run, defaults applied. (Its `Debug` form is written to `latest.json` as `args`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Args {
    /// Discovery runs per size and loss rate. Default 20 (3 with `--quick`).
    pub(super) runs: usize,
    /// Discovery sizes. Default 5, 10, 25 (5 with `--quick`).
    pub(super) sizes: Vec<usize>,
    /// Discovery loss rates, percent. Default 0, 10, 20 (10 with `--quick`).
    pub(super) loss: Vec<u8>,
    /// Duplication, percent of sent packets, wherever loss is above 0. Default 2.
    pub(super) dup: u8,
    /// Runs of each fault scenario. Default 5 (1 with `--quick`).
    pub(super) fault_runs: usize,
    /// Devices in the fault scenarios. Default 10 (5 with `--quick`).
    pub(super) fault_size: usize,
    /// Loss rate of the fault scenarios, percent. Default 10.
    pub(super) fault_loss: u8,
    /// Modes. Default plain and sealed.
    pub(super) modes: Vec<Mode>,
    /// Scenarios. Default all.
    pub(super) scenarios: Vec<Scenario>,
    /// A missed goal fails the command (it always fails on a broken check). Default off.
    pub(super) strict: bool,
    /// The LANs, one per family, in turn. Default IPv4 only.
    pub(super) families: Vec<Family>,
    /// IPv6 hosts have a ULA beside their link-local address. Default off.
    pub(super) ula: bool,
}

impl Args {
    fn runs_faults(&self) -> bool {
        self.scenarios.iter().any(|s| *s != Scenario::Discovery)
    }

    /// Hosts the LAN needs: the largest size of any scenario that runs.
    pub(super) fn hosts(&self) -> usize {
        let mut n = 0;
        if self.scenarios.contains(&Scenario::Discovery) {
            n = self.sizes.iter().copied().max().unwrap_or(0);
        }
        if self.runs_faults() {
            n = n.max(self.fault_size);
        }
        n
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
}

fn discovery_runs(s: &str) -> Result<usize, String> {
    ranged(s, 1, 10_000)
}

fn size(s: &str) -> Result<usize, String> {
    ranged(s, 2, MAX_HOSTS)
}

fn fault_runs(s: &str) -> Result<usize, String> {
    ranged(s, 1, 1000)
}

fn fault_size(s: &str) -> Result<usize, String> {
    ranged(s, 4, MAX_HOSTS)
}

/// A percentage from 0 to 99, with or without `%`.
fn percent(s: &str) -> Result<u8, String> {
    ranged(s.trim().trim_end_matches('%'), 0, 99)
        .map_err(|_| "takes percents from 0 to 99".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, clap::Error> {
        match crate::cli::parse_from(&[&["netsim"], a].concat())? {
            crate::cli::Task::Netsim(flags) => Ok(flags.resolve()),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_and_quick() {
        let d = args(&[]).unwrap();
        assert_eq!(d.runs, 20);
        assert_eq!(d.sizes, [5, 10, 25]);
        assert_eq!(d.loss, [0, 10, 20]);
        assert_eq!(d.dup, 2);
        assert_eq!((d.fault_runs, d.fault_size, d.fault_loss), (5, 10, 10));
        assert_eq!(d.modes, [Mode::Plain, Mode::Sealed]);
        assert_eq!(
            d.scenarios,
            [
                Scenario::Discovery,
                Scenario::Kill,
                Scenario::Partition,
                Scenario::Restart
            ]
        );
        assert!(!d.strict);
        assert_eq!((d.families.as_slice(), d.ula), (&[Family::V4][..], false));
        assert_eq!(d.hosts(), 25);
        let q = args(&["--quick"]).unwrap();
        assert_eq!(
            (q.runs, q.sizes.as_slice(), q.loss.as_slice()),
            (3, &[5][..], &[10][..])
        );
        assert_eq!((q.fault_runs, q.fault_size), (1, 5));
        assert_eq!((q.dup, q.fault_loss), (2, 10));
        assert_eq!(q.hosts(), 5);
    }

    #[test]
    fn the_debug_form_in_latest_json_is_unchanged() {
        assert_eq!(
            format!("{:?}", args(&["--quick"]).unwrap()),
            "Args { runs: 3, sizes: [5], loss: [10], dup: 2, fault_runs: 1, fault_size: 5, \
             fault_loss: 10, modes: [Plain, Sealed], scenarios: [Discovery, Kill, Partition, \
             Restart], strict: false, families: [V4], ula: false }"
        );
    }

    #[test]
    fn flags_override_quick_in_any_order() {
        let a = args(&[
            "--runs", "7", "--quick", "--sizes", "10,5,10", "--loss", "20%,0",
        ])
        .unwrap();
        assert_eq!(a.runs, 7);
        assert_eq!(a.sizes, [5, 10]);
        assert_eq!(a.loss, [0, 20]);
        let a = args(&[
            "--modes",
            "sealed",
            "--scenarios",
            "restart,kill",
            "--strict",
        ])
        .unwrap();
        assert_eq!(a.modes, [Mode::Sealed]);
        assert_eq!(a.scenarios, [Scenario::Kill, Scenario::Restart]);
        assert!(a.strict);
        assert_eq!(a.hosts(), 10);
        let a = args(&[
            "--scenarios",
            "discovery",
            "--sizes",
            "3",
            "--fault-size",
            "40",
        ])
        .unwrap();
        assert_eq!(a.hosts(), 3);
    }

    #[test]
    fn every_flag_parses() {
        let a = args(&[
            "--quick",
            "--runs=4",
            "--sizes",
            "6",
            "--loss",
            "5",
            "--dup",
            "3%",
            "--fault-runs",
            "2",
            "--fault-size",
            "8",
            "--fault-loss",
            "20",
            "--modes",
            "plain,sealed,plain",
            "--scenarios",
            "partition",
            "--strict",
            "--family",
            "dual,v6,v4,v6",
            "--ula",
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                runs: 4,
                sizes: vec![6],
                loss: vec![5],
                dup: 3,
                fault_runs: 2,
                fault_size: 8,
                fault_loss: 20,
                modes: vec![Mode::Plain, Mode::Sealed],
                scenarios: vec![Scenario::Partition],
                strict: true,
                families: vec![Family::V4, Family::V6, Family::Dual],
                ula: true,
            }
        );
    }

    #[test]
    fn families_and_their_groups() {
        assert_eq!(Family::V4.groups(), [false]);
        assert_eq!(Family::V6.groups(), [true]);
        assert_eq!(Family::Dual.groups(), [false, true]);
        assert_eq!(Family::Mixed.groups(), [false]);
        assert_eq!(Family::Mixed.support(), hail_testsupport::Family::Dual);
        assert!(Family::V6.support().has_v6() && !Family::V6.support().has_v4());
        assert!(Family::Dual.support().has_v4() && Family::Dual.support().has_v6());
        let a = args(&["--quick", "--family", "v6"]).unwrap();
        assert_eq!((a.families.as_slice(), a.ula), (&[Family::V6][..], false));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--runs"][..],
            &["--runs", "0"],
            &["--runs", "many"],
            &["--sizes", "1"],
            &["--sizes", "5,,10"],
            &["--sizes", "500"],
            &["--loss", "100"],
            &["--loss", "-1"],
            &["--dup", "x"],
            &["--fault-runs", "0"],
            &["--fault-size", "3"],
            &["--fault-loss", "100"],
            &["--modes", "loud"],
            &["--scenarios", "flood"],
            &["--family", "v5"],
            &["--family", "ipv6"],
            &["--ula", "yes"],
            &["--fast"],
            &["5"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
    }
}
