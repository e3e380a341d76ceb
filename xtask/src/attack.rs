//! `cargo xtask attack [--secs N] [ATTACK...]`: the adversarial suite on real processes
//! (issue 11 item 7, issue 12's goals), with each attack's goals checked.
//!
//! - `ping`, `ask`, `frames`, `answer`: `misbehave` (hail-benches) against a real
//!   `hail listen` on 127.0.0.1, the peers misbehaving as issue 12 describes; goals: the
//!   target's peak RSS at most its idle RSS + 64 MiB, every legitimate ask and call
//!   answered within max(2 x its quiet time, 1 s), and (for `answer`) never more than
//!   the 4 answer commands at once.
//! - `advert-flood`: `crates/hail-discovery/examples/advert_flood.sh` (root, network
//!   namespaces of its own on a bridge of its own): forged signed announces at 20,000 a
//!   second; goals: every ask of a new device during the flood answered within 2 s, and a
//!   device joined before the flood stays joined (no leave, restart or duplicate).
//!
//! Release builds of `hail`, `misbehave` and `advert_flood`. A goal that is missed fails
//! the task, unless it is one of [`KNOWN_MISSES`] (a goal an open issue has not met yet):
//! those are printed as such and do not fail it; a known miss that is met is printed
//! too, so the list is kept short. Where the namespaces cannot be made (not root,
//! `ip netns` refused) `advert-flood` says why and is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cmd;

/// The options of `cargo xtask attack`.
#[derive(Debug, Default, PartialEq, Eq, clap::Args)]
pub(crate) struct Args {
    /// Seconds each attack lasts (issue 12's goals are for 60 s)
    #[arg(long, default_value_t = 60, value_parser = secs)]
    secs: u64,
    /// Only these attacks (default: all): ping, ask, frames, answer, advert-flood
    #[arg(value_name = "ATTACK", value_parser = attack)]
    only: Vec<Attack>,
}

/// How long CI's run of each attack lasts (`cargo xtask ci`): 15 s.
pub(crate) const CI_SECS: u64 = 15;

/// An attack of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Attack {
    Ping,
    Ask,
    Frames,
    Answer,
    AdvertFlood,
}

const ALL: [Attack; 5] = [
    Attack::Ping,
    Attack::Ask,
    Attack::Frames,
    Attack::Answer,
    Attack::AdvertFlood,
];

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Ask => "ask",
            Self::Frames => "frames",
            Self::Answer => "answer",
            Self::AdvertFlood => "advert-flood",
        }
    }
}

fn attack(s: &str) -> Result<Attack, String> {
    ALL.into_iter()
        .find(|a| a.name() == s)
        .ok_or_else(|| format!("one of {}", ALL.map(Attack::name).join(", ")))
}

fn secs(s: &str) -> Result<u64, String> {
    crate::cli::ranged(s, 5, 600)
}

/// Goals not met yet, each with why: (attack, goal, why). A miss of one of these is
/// reported and does not fail the suite; any other miss does. Empty: every goal is met
/// (the last one listed, `answer`'s `InTime`, since the answer slot kept for light askers).
pub(crate) const KNOWN_MISSES: &[(Attack, Goal, &str)] = &[];

/// What an attack's goals are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    /// Peak RSS over idle at most 64 MiB.
    Memory,
    /// Every ask and call of the legitimate device (or, in the flood, of new devices)
    /// answered.
    Answered,
    /// ... within max(2 x its quiet time, 1 s) (in the flood: 2 s).
    InTime,
    /// At most the configured answer commands at once.
    Commands,
    /// The device joined before the flood stays joined.
    Witness,
}

/// One goal's outcome.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    attack: Attack,
    goal: Goal,
    met: bool,
    detail: String,
}

/// The suite as `cargo xtask ci` runs it: every attack for [`CI_SECS`].
pub(crate) fn ci() -> anyhow::Result<()> {
    run(&Args {
        secs: CI_SECS,
        only: Vec::new(),
    })
}

/// Runs the attacks, prints every goal's outcome; fails on a miss not in [`KNOWN_MISSES`].
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let attacks: Vec<Attack> = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        let mut a = args.only.clone();
        a.sort();
        a.dedup();
        a
    };
    let bins = build()?;
    let mut outcomes = Vec::new();
    for &a in &attacks {
        println!("\nattack: {} for {} s", a.name(), args.secs);
        if a == Attack::AdvertFlood {
            match flood_skip_reason() {
                Some(why) => println!("attack: advert-flood skipped: {why}"),
                None => outcomes.extend(advert_flood(&bins, args.secs)?),
            }
        } else {
            outcomes.extend(misbehave(&bins, a, args.secs)?);
        }
    }
    report(&outcomes)
}

/// The executables the attacks run.
struct Bins {
    hail: PathBuf,
    misbehave: PathBuf,
    advert_flood: PathBuf,
}

fn build() -> anyhow::Result<Bins> {
    let mut build = cmd::cargo([
        "build",
        "--release",
        "--locked",
        "-p",
        "hail-cli",
        "--bin",
        "hail",
        "-p",
        "hail-benches",
        "--bin",
        "misbehave",
        "-p",
        "hail-discovery",
        "--example",
        "advert_flood",
        "--message-format=json-render-diagnostics",
    ]);
    println!("attack: {}", cmd::describe(&build));
    let out = cmd::stdout(&mut build)?;
    Ok(Bins {
        hail: cmd::executable(&out, "hail")?,
        misbehave: cmd::executable(&out, "misbehave")?,
        advert_flood: cmd::executable(&out, "advert_flood")?,
    })
}

/// One misbehave run and its goals.
fn misbehave(bins: &Bins, a: Attack, secs: u64) -> anyhow::Result<Vec<Outcome>> {
    let mut run = Command::new(&bins.misbehave);
    run.arg("--hail")
        .arg(&bins.hail)
        .args(["--attack", a.name(), "--secs", &secs.to_string()]);
    println!("attack: {}", cmd::describe(&run));
    // The idle settling, the quiet probes and the peers' ends take well under a minute.
    let out = stdout_with_timeout(&mut run, Duration::from_secs(secs + 120))?;
    let line = out
        .lines()
        .find(|l| l.starts_with("attack="))
        .with_context(|| format!("misbehave printed no figures: {out:?}"))?;
    println!("{line}");
    misbehave_goals(a, &key_values(line))
}

/// The goals of a misbehave attack from its `key=value` figures.
fn misbehave_goals(a: Attack, kv: &BTreeMap<String, String>) -> anyhow::Result<Vec<Outcome>> {
    let n = |k: &str| -> anyhow::Result<u64> {
        kv.get(k)
            .with_context(|| format!("misbehave printed no {k}"))?
            .parse()
            .with_context(|| format!("misbehave's {k} is not a number"))
    };
    let grown = n("grown_mib")?;
    let mut outcomes = vec![Outcome {
        attack: a,
        goal: Goal::Memory,
        met: grown <= 64,
        detail: format!(
            "peak {} MiB over an idle {} MiB (goal: at most 64 over idle)",
            grown,
            n("idle_rss_mib")?
        ),
    }];
    let (ask_ok, ask_failed, ask_late) = (n("ask_ok")?, n("ask_failed")?, n("ask_late")?);
    let (call_ok, call_failed, call_late) = (n("call_ok")?, n("call_failed")?, n("call_late")?);
    let error = |k: &str| {
        kv.get(k)
            .filter(|e| !e.is_empty())
            .map(|e| format!(" ({k}: {e})"))
            .unwrap_or_default()
    };
    let probes = format!(
        "asks {ask_ok} ok, {ask_failed} failed, {ask_late} late (max {} ms); \
         calls {call_ok} ok, {call_failed} failed, {call_late} late (max {} ms)",
        kv.get("ask_max_ms").map_or("?", String::as_str),
        kv.get("call_max_ms").map_or("?", String::as_str),
    );
    outcomes.push(Outcome {
        attack: a,
        goal: Goal::Answered,
        met: ask_ok > 0 && call_ok > 0 && ask_failed + call_failed == 0,
        detail: format!("{probes}{}{}", error("ask_error"), error("call_error")),
    });
    outcomes.push(Outcome {
        attack: a,
        goal: Goal::InTime,
        met: ask_ok > 0 && call_ok > 0 && ask_late + call_late == 0,
        detail: format!("{probes} (late: over max(2 x quiet, 1 s))"),
    });
    if a == Attack::Answer {
        let most = n("max_answer_commands")?;
        outcomes.push(Outcome {
            attack: a,
            goal: Goal::Commands,
            met: (1..=4).contains(&most),
            detail: format!("at most {most} answer commands at once (goal: 1 to 4)"),
        });
    }
    Ok(outcomes)
}

/// Why the namespace flood cannot run here, if it cannot.
fn flood_skip_reason() -> Option<String> {
    // The probe namespace is made and removed at once; the script makes its own.
    let probe = format!("hail-attack-{}-", std::process::id());
    if let Err(e) = hail_testsupport::Namespaces::new(probe) {
        return Some(e.to_string());
    }
    for tool in ["bc", "taskset"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("no `{tool}` command"));
        }
    }
    None
}

/// The namespace flood and its goals.
fn advert_flood(bins: &Bins, secs: u64) -> anyhow::Result<Vec<Outcome>> {
    let out_dir = cmd::root()
        .join("target")
        .join("attack")
        .join("advert_flood");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut run = Command::new("sh");
    run.arg(cmd::root().join("crates/hail-discovery/examples/advert_flood.sh"))
        .args([&secs.to_string(), "20000", "fresh"])
        .env("HAIL", &bins.hail)
        .env("FLOOD", &bins.advert_flood)
        .env("OUT", &out_dir)
        .current_dir(cmd::root());
    println!("attack: {}", cmd::describe(&run));
    // Key generation, the witness's join, the quiet asks and the asks after: under 90 s.
    let out = stdout_with_timeout(&mut run, Duration::from_secs(secs + 150))?;
    print!("{out}");
    flood_goals(&out)
}

/// The flood's goals from the script's summary lines.
fn flood_goals(out: &str) -> anyhow::Result<Vec<Outcome>> {
    let asks = out
        .lines()
        .filter(|l| l.starts_with("ask flood"))
        .map(|l| {
            let ok = l.split_whitespace().nth(2) == Some("ok");
            let took: Option<f64> = l.split_whitespace().nth(4).and_then(|t| t.parse().ok());
            (ok, took)
        })
        .collect::<Vec<_>>();
    if asks.is_empty() {
        bail!("the flood script reported no ask during the flood:\n{out}");
    }
    let answered = asks
        .iter()
        .filter(|(ok, t)| *ok && t.is_some_and(|t| t <= 2.0))
        .count();
    let slowest = asks.iter().filter_map(|(_, t)| *t).fold(0.0_f64, f64::max);
    let witness = out
        .lines()
        .find(|l| l.starts_with("the witness at the target:"))
        .context("the flood script did not report the witness")?;
    // "..., N joined, M other (left, restarted, duplicate)"
    let other: u64 = witness
        .split_once(" other (")
        .and_then(|(before, _)| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unreadable witness line {witness:?}"))?;
    let ok = asks.iter().filter(|(ok, _)| *ok).count();
    Ok(vec![
        Outcome {
            attack: Attack::AdvertFlood,
            goal: Goal::Answered,
            met: ok == asks.len(),
            detail: format!("{ok} of {} asks during the flood answered", asks.len()),
        },
        Outcome {
            attack: Attack::AdvertFlood,
            goal: Goal::InTime,
            met: answered == asks.len(),
            detail: format!(
                "{answered} of {} asks during the flood answered within 2 s (slowest {slowest:.2} s)",
                asks.len()
            ),
        },
        Outcome {
            attack: Attack::AdvertFlood,
            goal: Goal::Witness,
            met: other == 0,
            detail: format!("{witness} (goal: no other)"),
        },
    ])
}

/// Prints the outcomes; an error when a goal not in [`KNOWN_MISSES`] is missed.
fn report(outcomes: &[Outcome]) -> anyhow::Result<()> {
    report_against(outcomes, KNOWN_MISSES)
}

/// [`report`] with `known` as the known misses.
fn report_against(outcomes: &[Outcome], known: &[(Attack, Goal, &str)]) -> anyhow::Result<()> {
    println!("\nattack goals:");
    let mut failed = Vec::new();
    for o in outcomes {
        let known = known
            .iter()
            .find(|(a, g, _)| *a == o.attack && *g == o.goal)
            .map(|(_, _, why)| *why);
        let verdict = match (o.met, known) {
            (true, None) => "met".to_owned(),
            (true, Some(_)) => "met (listed as a known miss)".to_owned(),
            (false, Some(why)) => format!("MISSED, known: {why};"),
            (false, None) => {
                failed.push(format!("{} {:?}", o.attack.name(), o.goal));
                "MISSED:".to_owned()
            }
        };
        println!(
            "  {:<12} {:<10} {verdict}: {}",
            o.attack.name(),
            format!("{:?}", o.goal),
            o.detail
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("goals missed: {}", failed.join(", "))
    }
}

/// `key=value` pairs separated by spaces; a value may be a quoted string with escapes
/// (Rust's `{:?}` of a string).
fn key_values(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ').is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ' ')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            out.insert(key, String::new());
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(e) = chars.next() {
                            value.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                    }
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ' ')));
        }
        out.insert(key, value);
    }
    out
}

/// Runs `cmd` (stdin closed, stderr inherited) and returns its stdout; kills it with its
/// process group after `limit`.
fn stdout_with_timeout(cmd: &mut Command, limit: Duration) -> anyhow::Result<String> {
    let file = tempfile_in(&cmd::root().join("target").join("attack"))?;
    let out =
        std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
    cmd.stdout(out);
    cmd::run_with_timeout(cmd, limit)?;
    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))
}

fn tempfile_in(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("stdout-{}.txt", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "attack=Answer secs=60 frames_sent=163696173 idle_rss_mib=7 idle_hwm_mib=7 \
        peak_rss_mib=87 vmhwm_mib=87 grown_mib=79 rss_goal_met=false quiet_ask_ms=504.4 \
        ask_ok=15 ask_failed=3 ask_late=0 ask_max_ms=611 quiet_call_ms=0.2 call_ok=18 \
        call_failed=0 call_late=0 call_max_ms=24 max_answer_commands=4 \
        ask_error=\"handler: busy: 4 \\\"answer\\\" commands\" call_error=\"\"";

    #[test]
    fn figures_are_read_with_quoted_values() {
        let kv = key_values(LINE);
        assert_eq!(kv["attack"], "Answer");
        assert_eq!(kv["grown_mib"], "79");
        assert_eq!(kv["ask_error"], "handler: busy: 4 \"answer\" commands");
        assert_eq!(kv["call_error"], "");
        assert_eq!(kv["max_answer_commands"], "4");
    }

    #[test]
    fn misbehave_goals_are_judged() {
        let goals = misbehave_goals(Attack::Answer, &key_values(LINE)).unwrap();
        let by = |g| goals.iter().find(|o| o.goal == g).unwrap();
        assert!(!by(Goal::Memory).met, "79 MiB over idle misses 64");
        assert!(!by(Goal::Answered).met, "3 asks failed");
        assert!(by(Goal::Answered).detail.contains("busy"));
        assert!(by(Goal::InTime).met, "none late");
        assert!(by(Goal::Commands).met);
        let good = LINE
            .replace("grown_mib=79", "grown_mib=64")
            .replace("ask_failed=3", "ask_failed=0")
            .replace("max_answer_commands=4", "max_answer_commands=5");
        let goals = misbehave_goals(Attack::Answer, &key_values(&good)).unwrap();
        let by = |g| goals.iter().find(|o| o.goal == g).unwrap();
        assert!(by(Goal::Memory).met);
        assert!(by(Goal::Answered).met);
        assert!(!by(Goal::Commands).met, "5 commands at once");
        let late = good.replace("call_late=0", "call_late=1");
        let goals = misbehave_goals(Attack::Answer, &key_values(&late)).unwrap();
        assert!(!goals.iter().find(|o| o.goal == Goal::InTime).unwrap().met);
        // Nothing asked at all is no success.
        let idle = good.replace("ask_ok=15", "ask_ok=0");
        let goals = misbehave_goals(Attack::Ping, &key_values(&idle)).unwrap();
        assert!(!goals.iter().any(|o| o.goal == Goal::Commands));
        for g in [Goal::Answered, Goal::InTime] {
            assert!(!goals.iter().find(|o| o.goal == g).unwrap().met, "{g:?}");
        }
        // A figure missing is an error, not a pass.
        assert!(misbehave_goals(Attack::Ping, &key_values("attack=Ping")).is_err());
    }

    #[test]
    fn flood_goals_are_judged() {
        let out = "ask quiet1: ok in .020 s: {}\n\
                   ask flood1: ok in .402 s: {}\n\
                   ask flood2: ok in 1.290 s: {}\n\
                   the witness at the target: 1 events, 1 joined, 0 other (left, restarted, duplicate)\n";
        let goals = flood_goals(out).unwrap();
        assert!(goals.iter().all(|o| o.met), "{goals:?}");
        let met = |out: &str, g: Goal| {
            flood_goals(out)
                .unwrap()
                .into_iter()
                .find(|o| o.goal == g)
                .unwrap()
                .met
        };
        let late = out.replace("1.290", "2.500");
        assert!(met(&late, Goal::Answered) && !met(&late, Goal::InTime));
        let failed = out.replace("flood1: ok", "flood1: FAILED");
        assert!(!met(&failed, Goal::Answered) && !met(&failed, Goal::InTime));
        let kicked = out.replace("0 other", "2 other");
        assert!(!met(&kicked, Goal::Witness));
        assert!(flood_goals("ask quiet1: ok in .020 s\n").is_err());
    }

    #[test]
    fn a_known_miss_does_not_fail_and_an_unknown_one_does() {
        let listed = [(Attack::Answer, Goal::InTime, "listed for this test")];
        let missed = |attack, goal| Outcome {
            attack,
            goal,
            met: false,
            detail: String::new(),
        };
        assert!(report_against(&[missed(Attack::Answer, Goal::InTime)], &listed).is_ok());
        assert!(report_against(&[missed(Attack::Ping, Goal::Answered)], &listed).is_err());
        assert!(
            report(&[missed(Attack::Answer, Goal::InTime)]).is_err(),
            "answer's InTime is met now (the kept answer slot): a miss fails"
        );
        let met_now = Outcome {
            attack: Attack::Ping,
            goal: Goal::Memory,
            met: false,
            detail: String::new(),
        };
        assert!(
            report(&[met_now]).is_err(),
            "ping's memory goal is met now: a miss fails"
        );
    }
}
