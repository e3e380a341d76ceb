//! The scenarios: discovery, kill (process and host), partition and restart, each run a
//! number of times on fresh devices, timed into a [`Cell`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::args::Mode;
use super::lan::{End, Lan};
use super::report::{Cell, secs};
use super::sim::Sim;

/// How long a fault may take to be noticed before the run counts as failed: 20 s.
const FAULT_LIMIT: Duration = Duration::from_secs(20);
/// After a restart has been recognised, how long links get to settle before `ss` counts
/// them: 2 s.
const SETTLE: Duration = Duration::from_secs(2);
/// When links have not settled after [`SETTLE`], how much longer they get before the
/// run fails: 5 s.
const SETTLE_MORE: Duration = Duration::from_secs(5);

/// Runs the scenarios on one LAN; counts runs so each gets its own multicast port.
#[derive(Debug)]
pub(super) struct Runner<'a> {
    lan: &'a mut Lan,
    hail: &'a Path,
    logs: &'a Path,
    run: usize,
    dup: u8,
    /// Devices on the IPv6 group (else the IPv4 one).
    v6: bool,
    /// Put before every label: which LAN and group (empty for IPv4 on an IPv4-only LAN).
    tag: String,
}

impl<'a> Runner<'a> {
    /// A runner of `hail` (with its device logs in `logs`) on `lan`; `dup` is the
    /// duplication wherever loss is above 0. Devices go on the IPv4 group until
    /// [`Runner::group`] says otherwise.
    pub(super) fn new(lan: &'a mut Lan, hail: &'a Path, logs: &'a Path, dup: u8) -> Self {
        Self {
            lan,
            hail,
            logs,
            run: 0,
            dup,
            v6: false,
            tag: String::new(),
        }
    }

    /// Devices on the IPv6 group (`v6`) or the IPv4 one from now on; `tag` goes before
    /// every label.
    pub(super) fn group(&mut self, v6: bool, tag: &str) {
        self.v6 = v6;
        self.tag = if tag.is_empty() {
            String::new()
        } else {
            format!("{tag} ")
        };
    }

    fn sim(&mut self, mode: Mode) -> Sim<'_> {
        self.run += 1;
        Sim::new(self.lan, self.hail, self.logs, mode, self.v6, self.run)
    }

    pub(super) fn discovery(
        &mut self,
        mode: Mode,
        n: usize,
        loss: u8,
        runs: usize,
    ) -> anyhow::Result<Cell> {
        let dup = if loss == 0 { 0 } else { self.dup };
        let mut cell = Cell::new(format!(
            "{}discovery {:<6} N={n:<3} loss {loss:>2}% dup {dup}%",
            self.tag,
            mode.name()
        ));
        self.lan.impair(n, loss, dup)?;
        for r in 0..runs {
            let mut sim = self.sim(mode);
            match sim.start_mesh(n) {
                Ok((t, startup)) => {
                    cell.times.push(t);
                    cell.extra.push(startup);
                }
                Err(why) => cell.fail(r, why),
            }
            let across = sim.joined_across();
            if across > 0 {
                cell.fail(
                    r,
                    format!("{across} join(s) of devices that share no family"),
                );
            }
            let dups: usize = sim.procs.iter().map(|p| p.duplicate_names).sum();
            if dups > 0 {
                *cell
                    .notes
                    .entry("duplicate-name reports".into())
                    .or_default() += dups;
            }
        }
        cell.runs = runs;
        println!("{}", cell.line("startup"));
        Ok(cell)
    }

    /// A cell of `runs` runs of a fault once a mesh of `n` devices has formed: headed
    /// `<tag><what> <mode> N=<n> loss <loss>%, <how>`, the loss in place, a fresh `Sim` a run
    /// (a mesh that does not form fails the run), `fault` doing and measuring the rest; its
    /// line printed with `extra` naming the cell's extra figures.
    fn after_mesh(
        &mut self,
        (what, how, extra): (&str, &str, &str),
        (mode, n, loss, runs): (Mode, usize, u8, usize),
        mut fault: impl FnMut(&mut Cell, usize, &mut Sim<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Cell> {
        let mut cell = Cell::new(format!(
            "{}{what} {:<6} N={n} loss {loss}%, {how}",
            self.tag,
            mode.name()
        ));
        self.lan.impair(n, loss, self.dup)?;
        for r in 0..runs {
            let mut sim = self.sim(mode);
            if let Err(why) = sim.start_mesh(n) {
                cell.fail(r, format!("mesh: {why}"));
                continue;
            }
            fault(&mut cell, r, &mut sim)?;
        }
        cell.runs = runs;
        println!("{}", cell.line(extra));
        Ok(cell)
    }

    /// SIGKILL of the last device, as a process (`cut` false) or as a host (`cut`: its
    /// namespace cut off first, so no FIN or RST leaves it).
    pub(super) fn kill(
        &mut self,
        mode: Mode,
        n: usize,
        loss: u8,
        runs: usize,
        cut: bool,
    ) -> anyhow::Result<Cell> {
        let what = if cut {
            "host cut off + SIGKILL"
        } else {
            "process SIGKILL"
        };
        let victim_host = n - 1;
        self.after_mesh(("gone", what, ""), (mode, n, loss, runs), |cell, r, sim| {
            let (v, name, id) = sim.on_host(victim_host);
            if cut {
                sim.lan.isolate(victim_host)?;
            }
            let t0 = Instant::now();
            sim.kill(v);
            let done = sim.wait(t0 + FAULT_LIMIT, |s| s.gone(&name, &id));
            if cut {
                sim.lan.cut(victim_host, &[])?;
            }
            match done {
                Some(at) => cell.times.push(at.saturating_duration_since(t0)),
                None => cell.fail(
                    r,
                    format!("not reported gone within {}", secs(Some(FAULT_LIMIT))),
                ),
            }
            for reason in sim.left_reasons(&name, &id) {
                *cell.notes.entry(reason.to_owned()).or_default() += 1;
            }
            Ok(())
        })
    }

    pub(super) fn partition(
        &mut self,
        mode: Mode,
        n: usize,
        loss: u8,
        runs: usize,
    ) -> anyhow::Result<Cell> {
        let a: BTreeSet<usize> = (0..n / 2).collect();
        let b: BTreeSet<usize> = (n / 2..n).collect();
        let lan = &*self.lan;
        let ips = |set: &BTreeSet<usize>| -> Vec<IpAddr> {
            set.iter().flat_map(|i| lan.addrs(*i)).collect()
        };
        let (ips_a, ips_b) = (ips(&a), ips(&b));
        let title = ("heal", "halves", "split noticed");
        self.after_mesh(title, (mode, n, loss, runs), |cell, r, sim| {
            let t_cut = Instant::now();
            for h in 0..n {
                let other = if a.contains(&h) { &ips_b } else { &ips_a };
                sim.lan.cut(h, other)?;
            }
            let split = sim.wait(t_cut + FAULT_LIMIT, |s| s.split(&a, &b));
            let t_heal = Instant::now();
            for h in 0..n {
                sim.lan.cut(h, &[])?;
            }
            let Some(split) = split else {
                cell.fail(
                    r,
                    format!(
                        "the halves still saw each other after {}",
                        secs(Some(FAULT_LIMIT))
                    ),
                );
                return Ok(());
            };
            cell.extra.push(split.saturating_duration_since(t_cut));
            match sim.wait(t_heal + FAULT_LIMIT, Sim::all_see_all) {
                Some(at) => cell.times.push(at.saturating_duration_since(t_heal)),
                None => cell.fail(
                    r,
                    format!(
                        "not one mesh within {}: {}",
                        secs(Some(FAULT_LIMIT)),
                        sim.missing()
                    ),
                ),
            }
            Ok(())
        })
    }

    pub(super) fn restart(
        &mut self,
        mode: Mode,
        n: usize,
        loss: u8,
        runs: usize,
    ) -> anyhow::Result<Cell> {
        let victim_host = n - 1;
        let title = ("restart", "same name", "");
        self.after_mesh(title, (mode, n, loss, runs), |cell, r, sim| {
            let (v, name, old) = sim.on_host(victim_host);
            let t0 = Instant::now();
            sim.kill(v);
            let fresh = sim.spawn(victim_host)?;
            let done = sim.wait(t0 + FAULT_LIMIT, |s| s.all_see_all() && s.gone(&name, &old));
            let Some(at) = done else {
                cell.fail(
                    r,
                    format!(
                        "new incarnation not joined by all within {}: {}",
                        secs(Some(FAULT_LIMIT)),
                        sim.missing()
                    ),
                );
                return Ok(());
            };
            cell.times.push(at.saturating_duration_since(t0));
            if sim.procs[fresh].id.as_deref() == Some(old.as_str()) {
                cell.fail(r, "the restarted device kept its old id".into());
                return Ok(());
            }
            for reason in sim.left_reasons(&name, &old) {
                *cell.notes.entry(format!("old left: {reason}")).or_default() += 1;
            }
            // Let duplicate links close, then count the established TCP connections.
            let _ = sim.wait(Instant::now() + SETTLE, |_| false);
            if let Err(first) = check_links(sim, victim_host) {
                // Slow to settle, or kept? Look again later.
                let _ = sim.wait(Instant::now() + SETTLE_MORE, |_| false);
                match check_links(sim, victim_host) {
                    Ok(()) => {
                        eprintln!("netsim: {}: run {r}: settled late: {first}", cell.label);
                        *cell.notes.entry("links settled late".into()).or_default() += 1;
                    }
                    Err(why) => cell.fail(
                        r,
                        format!("{why} (still, {} later)", secs(Some(SETTLE_MORE))),
                    ),
                }
            }
            Ok(())
        })
    }
}

/// Exactly one established connection between the restarted device and each other
/// device, seen from both ends, and none left to the dead process (open or half-closed).
fn check_links(sim: &Sim<'_>, victim_host: usize) -> Result<(), String> {
    // Every address of a host (IPv4, link-local, ULA): a link may use any of them.
    let on = |host: usize, (addr, _): &End| sim.lan.addrs(host).contains(addr);
    let mine = sim.lan.tcp(victim_host, "established")?;
    let mut problems = Vec::new();
    for p in sim.live().filter(|p| p.host != victim_host) {
        let here = mine.iter().filter(|(_, peer)| on(p.host, peer)).count();
        let to_victim = |(_, peer): &&(End, End)| on(victim_host, peer);
        let theirs = sim.lan.tcp(p.host, "established")?;
        let there: Vec<&(End, End)> = theirs.iter().filter(to_victim).collect();
        // A connection their end holds open that the restarted end does not have (the dead
        // process's sockets are closed, so only the fresh process holds any there), or
        // one the dead end closed and theirs still holds (close-wait).
        let unmatched = there
            .iter()
            .filter(|(local, peer)| !mine.iter().any(|(l, pe)| l == peer && pe == local))
            .count();
        let half_closed = sim
            .lan
            .tcp(p.host, "close-wait")?
            .iter()
            .filter(to_victim)
            .count();
        let stale = unmatched + half_closed;
        if here != 1 || there.len() != 1 || stale > 0 {
            problems.push(format!(
                "{}: {here} link(s) at the restarted end, {} at its end, {stale} stale",
                p.name,
                there.len()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("links after the restart: {}", problems.join("; ")))
    }
}
