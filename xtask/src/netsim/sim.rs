//! The devices of a run: `hail listen --json` processes in the host namespaces, their
//! output read as events, and the predicates the scenarios wait for.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use super::args::Mode;
use super::lan::{Lan, SPAWNING};
use super::report::secs;
use crate::cmd;

/// How long a discovery run may take before it counts as failed: 30 s.
const GIVE_UP: Duration = Duration::from_secs(30);
/// How long N devices may take to start (sealed: PBKDF2 in each): 60 s.
const START_LIMIT: Duration = Duration::from_secs(60);
/// The passphrase of the sealed mode.
const PASSPHRASE: &str = "netsim sealed mode";

/// Builds `hail` in release mode and returns the binary's path.
pub(super) fn build_hail() -> anyhow::Result<PathBuf> {
    let mut build = cmd::cargo([
        "build",
        "--release",
        "-p",
        "hail-cli",
        "--locked",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("netsim: {}", cmd::describe(&build));
    cmd::executable(&cmd::stdout(&mut build)?, "hail")
}

/// The group of run `run`: 239.255.77.1, or the link-scoped ff02::4d:1 for IPv6, on a port
/// of its own, so nothing of an earlier run can reach this one.
fn group(v6: bool, run: usize) -> String {
    let port = 20_000 + run % 40_000;
    if v6 {
        format!("[ff02::4d:1]:{port}")
    } else {
        format!("239.255.77.1:{port}")
    }
}

/// One `hail listen` process and what it has said.
#[derive(Debug)]
pub(super) struct Proc {
    pub(super) host: usize,
    pub(super) name: String,
    child: Option<Child>,
    /// Its id and listening address, once it printed `listening`.
    pub(super) id: Option<String>,
    addr: Option<String>,
    listening_at: Option<Instant>,
    /// Joined peers now: name -> id.
    peers: BTreeMap<String, String>,
    /// Every `left`: (name, id, reason).
    left: Vec<(String, String, String)>,
    pub(super) duplicate_names: usize,
}

impl Proc {
    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

/// A line a device printed, with its arrival time.
#[derive(Debug)]
struct Line {
    proc: usize,
    at: Instant,
    value: Value,
}

/// The devices of a run and their output.
#[derive(Debug)]
pub(super) struct Sim<'a> {
    pub(super) lan: &'a Lan,
    hail: &'a Path,
    logs: &'a Path,
    mode: Mode,
    /// Devices on the IPv6 group (else the IPv4 one).
    v6: bool,
    /// The group (`None`: the default groups, on a mixed LAN).
    group: Option<String>,
    pub(super) procs: Vec<Proc>,
    tx: Sender<Line>,
    rx: Receiver<Line>,
}

impl<'a> Sim<'a> {
    pub(super) fn new(
        lan: &'a Lan,
        hail: &'a Path,
        logs: &'a Path,
        mode: Mode,
        v6: bool,
        run: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            lan,
            hail,
            logs,
            mode,
            v6,
            group: lan.stacks().is_none().then(|| group(v6, run)),
            procs: Vec::new(),
            tx,
            rx,
        }
    }

    /// Starts `hail listen` as `dev<host>` on host `host`; returns its index.
    pub(super) fn spawn(&mut self, host: usize) -> anyhow::Result<usize> {
        let name = format!("dev{host:02}");
        let ns = self.lan.host(host);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .context("opening a device log")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(self.hail).args([
            "listen",
            "--json",
            "--name",
            &name,
            "--interface",
        ]);
        match &self.group {
            Some(group) => cmd
                .arg(self.lan.interface(host, self.v6).to_string())
                .args(["--group", group]),
            // The defaults: the veth by name (the namespace's only one), both groups
            // where it has both families.
            None => cmd.arg("eth0"),
        };
        cmd.env_remove("HAIL_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if self.mode == Mode::Sealed {
            cmd.env("HAIL_PASSPHRASE", PASSPHRASE);
        }
        let mut child = {
            let _spawning = SPAWNING.lock();
            cmd.spawn().context("cannot start hail listen")?
        };
        let stdout = child.stdout.take().context("hail stdout")?;
        let index = self.procs.len();
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("netsim-{name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let at = Instant::now();
                    let Ok(value) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if tx
                        .send(Line {
                            proc: index,
                            at,
                            value,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .context("starting a reader thread")?;
        self.procs.push(Proc {
            host,
            name,
            child: Some(child),
            id: None,
            addr: None,
            listening_at: None,
            peers: BTreeMap::new(),
            left: Vec::new(),
            duplicate_names: 0,
        });
        Ok(index)
    }

    /// SIGKILL to process `p`, reaped.
    pub(super) fn kill(&mut self, p: usize) {
        if let Some(mut child) = self.procs[p].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        for p in 0..self.procs.len() {
            self.kill(p);
        }
    }

    fn apply(&mut self, line: &Line) {
        let p = &mut self.procs[line.proc];
        let v = &line.value;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        match v["event"].as_str() {
            Some("listening") => {
                p.id = Some(s("id"));
                p.addr = Some(s("address"));
                p.listening_at = Some(line.at);
            }
            Some("joined") => {
                p.peers.insert(s("name"), s("id"));
            }
            Some("left") => {
                let (name, id) = (s("name"), s("id"));
                if p.peers.get(&name) == Some(&id) {
                    p.peers.remove(&name);
                }
                p.left.push((name, id, s("reason")));
            }
            Some("duplicate_name") => p.duplicate_names += 1,
            _ => {}
        }
    }

    /// Reads lines until `done` holds (returns when it came true: the arrival of the line
    /// that made it so) or `deadline` passes (`None`).
    pub(super) fn wait(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Self) -> bool,
    ) -> Option<Instant> {
        if done(self) {
            return Some(Instant::now());
        }
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.apply(&line);
                    if done(self) {
                        return Some(line.at);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    pub(super) fn live(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.alive())
    }

    fn all_listening(&self) -> bool {
        self.live().all(|p| p.id.is_some())
    }

    /// Whether the device on host `a` is to join the one on host `b`: always, but on a
    /// mixed LAN only where they share a family.
    fn meets(&self, a: usize, b: usize) -> bool {
        a != b && self.lan.stacks().is_none_or(|s| s[a].meets(s[b]))
    }

    /// Every live device has joined every other live device it is to meet, by its
    /// current id.
    pub(super) fn all_see_all(&self) -> bool {
        self.live().all(|p| {
            self.live()
                .filter(|q| self.meets(p.host, q.host))
                .all(|q| q.id.is_some() && p.peers.get(&q.name) == q.id.as_ref())
        })
    }

    /// Joins of devices that share no family (on a mixed LAN; none expected), counted.
    pub(super) fn joined_across(&self) -> usize {
        self.live()
            .map(|p| {
                self.live()
                    .filter(|q| q.host != p.host && !self.meets(p.host, q.host))
                    .filter(|q| p.peers.contains_key(&q.name))
                    .count()
            })
            .sum()
    }

    /// No live device in `a` has a joined peer in `b`, and none in `b` one in `a`.
    pub(super) fn split(&self, a: &BTreeSet<usize>, b: &BTreeSet<usize>) -> bool {
        let names = |set: &BTreeSet<usize>| -> BTreeSet<String> {
            self.live()
                .filter(|p| set.contains(&p.host))
                .map(|p| p.name.clone())
                .collect()
        };
        let (na, nb) = (names(a), names(b));
        self.live().all(|p| {
            let other = if a.contains(&p.host) { &nb } else { &na };
            p.peers.keys().all(|n| !other.contains(n))
        })
    }

    /// No live device still has `(name, id)` as a joined peer.
    pub(super) fn gone(&self, name: &str, id: &str) -> bool {
        self.live()
            .all(|p| p.peers.get(name).is_none_or(|joined| joined != id))
    }

    /// The reason of every `left` that a live device reported for `(name, id)`.
    pub(super) fn left_reasons<'s>(
        &'s self,
        name: &'s str,
        id: &'s str,
    ) -> impl Iterator<Item = &'s str> + 's {
        self.live().flat_map(move |p| {
            p.left
                .iter()
                .filter(move |(n, i, _)| n == name && i == id)
                .map(|(.., reason)| reason.as_str())
        })
    }

    /// The device running on `host`: its index in `procs`, its name and its id.
    pub(super) fn on_host(&self, host: usize) -> (usize, String, String) {
        let v = self
            .procs
            .iter()
            .position(|p| p.host == host)
            .expect("a device on every host");
        let p = &self.procs[v];
        (v, p.name.clone(), p.id.clone().unwrap_or_default())
    }

    /// Starts devices on hosts `0..n`, waits for them all to listen and to see each
    /// other. Returns (time from the last start to all seeing all, from spawning to the
    /// last start) or why not.
    pub(super) fn start_mesh(&mut self, n: usize) -> Result<(Duration, Duration), String> {
        let spawned = Instant::now();
        for host in 0..n {
            self.spawn(host).map_err(|e| format!("{e:#}"))?;
        }
        if self
            .wait(spawned + START_LIMIT, Self::all_listening)
            .is_none()
        {
            return Err(format!(
                "not every device started within {}",
                secs(Some(START_LIMIT))
            ));
        }
        let started = self
            .live()
            .filter_map(|p| p.listening_at)
            .max()
            .unwrap_or(spawned);
        match self.wait(started + GIVE_UP, Self::all_see_all) {
            Some(at) => Ok((at.saturating_duration_since(started), started - spawned)),
            None => Err(format!(
                "not all saw all within {}: {}",
                secs(Some(GIVE_UP)),
                self.missing()
            )),
        }
    }

    /// Who does not see whom, briefly.
    pub(super) fn missing(&self) -> String {
        let mut out = Vec::new();
        for p in self.live() {
            let miss: Vec<String> = self
                .live()
                .filter(|q| self.meets(p.host, q.host) && p.peers.get(&q.name) != q.id.as_ref())
                .map(|q| match p.peers.get(&q.name) {
                    Some(_) => format!("{} (holds an older id)", q.name),
                    None => q.name.clone(),
                })
                .collect();
            if !miss.is_empty() {
                out.push(format!("{} lacks {}", p.name, miss.join(",")));
            }
        }
        out.truncate(5);
        out.join("; ")
    }
}

impl Drop for Sim<'_> {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn groups_are_link_scoped_with_a_port_per_run() {
        assert_eq!(group(false, 1), "239.255.77.1:20001");
        assert_eq!(group(true, 1), "[ff02::4d:1]:20001");
        assert_eq!(group(true, 40_001), group(true, 1));
        let v6: SocketAddr = group(true, 7).parse().unwrap();
        let SocketAddr::V6(v6) = v6 else {
            panic!("{v6} is not IPv6")
        };
        // ff02::/16: link-local scope, never routed off the veth.
        assert_eq!(v6.ip().segments()[0], 0xff02);
        assert!(group(false, 7).parse::<SocketAddr>().unwrap().is_ipv4());
    }
}
