//! `hail listen --answer-cmd` against a misbehaving asker: many questions at once to a
//! command that never finishes. No more than `--answer-jobs` commands run at any moment
//! (counted in `/proc`), the questions past the queue are refused `busy` at once, the slot
//! kept for light askers goes to another device asking once, and a command past its
//! deadline is killed with everything it started.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hail::prelude::*;

use crate::proc::{WAIT, listen};

/// One process from `/proc/PID/stat`.
#[derive(Debug)]
struct Task {
    ppid: u32,
    pgrp: u32,
    zombie: bool,
}

/// Every process the system shows.
fn tasks() -> HashMap<u32, Task> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(ppid), Some(pgrp)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let (Ok(ppid), Ok(pgrp)) = (ppid.parse(), pgrp.parse()) else {
            continue;
        };
        out.insert(
            pid,
            Task {
                ppid,
                pgrp,
                zombie: matches!(*state, "Z" | "X"),
            },
        );
    }
    out
}

/// Answer commands running under `hail` (pid `parent`): its live children.
fn running_commands(parent: u32) -> usize {
    tasks()
        .values()
        .filter(|t| t.ppid == parent && !t.zombie)
        .count()
}

/// Live processes in process group `pgid`.
fn group_members(pgid: u32) -> usize {
    tasks()
        .values()
        .filter(|t| t.pgrp == pgid && !t.zombie)
        .count()
}

#[test]
fn answer_commands_are_bounded_refused_when_busy_and_killed_with_their_group() {
    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: no /proc to count processes in");
        return;
    }
    const JOBS: usize = 2;
    // One place: its question gets the open slot at the first deadline (1 s), well
    // within its patience (2 s).
    const QUEUE: usize = 1;
    // The misbehaving asker's questions, all at once.
    const QUESTIONS: usize = 8;
    let dir = std::env::temp_dir().join(format!("hail-answer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pids = dir.join("pids");
    let _ = std::fs::remove_file(&pids);
    // A command that starts a child and never ends by itself; it notes its pid (= its
    // process group) first.
    let cmd = format!("sleep 30 & echo $$ >> '{}'; wait", pids.display());
    let g = crate::proc::group();
    let lamp = listen(
        &g,
        "lamp",
        &[
            "--answer-cmd",
            &cmd,
            "--answer-jobs",
            &JOBS.to_string(),
            "--answer-queue",
            &QUEUE.to_string(),
            "--answer-timeout",
            "1s",
        ],
    );

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let group: SocketAddr = g.parse().unwrap();
    let device = |name: &'static str| {
        rt.block_on(async {
            let (d, mut events) = Device::builder(name)
                .group(group)
                .interface(Ipv4Addr::LOCALHOST)
                .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
                .start()
                .await
                .expect("start an asker");
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            tokio::time::timeout(WAIT, d.wait_for_peer("lamp"))
                .await
                .expect("the asker sees lamp");
            Arc::new(d)
        })
    };
    let asker = device("asker");
    let light = device("light");
    let ask = |d: &Arc<Device>, i: usize| {
        let d = Arc::clone(d);
        rt.spawn(async move {
            let q = Bytes::from(format!("question {i}"));
            d.ask("lamp", q, Duration::from_secs(15))
                .await
                .remove("lamp")
        })
    };
    // Every question at once: one runs in the open slot, QUEUE wait, the rest are
    // refused. The kept slot stays free: the asker has questions in hand.
    let mut asks: Vec<_> = (0..QUESTIONS).map(|i| ask(&asker, i)).collect();
    let refused = QUESTIONS - (JOBS - 1) - QUEUE;
    crate::proc::eventually("the questions past the queue are refused", || {
        asks.iter().filter(|a| a.is_finished()).count() >= refused
    });
    // A device with nothing in hand that asked less than the asker takes the kept slot.
    asks.push(ask(&light, QUESTIONS));

    // Count the running commands until every question is settled (the commands never end
    // by themselves, so a full set of slots stays up for the sampler to see).
    let hail_pid = lamp.pid();
    let mut most = 0;
    crate::proc::eventually("the questions settle", || {
        most = most.max(running_commands(hail_pid));
        asks.iter().all(|a| a.is_finished())
    });
    let answers: Vec<String> = asks
        .into_iter()
        .map(|a| match rt.block_on(a).expect("the ask task") {
            Some(Err(AskError::Handler(m))) => m,
            other => panic!("expected a refusal or a kill, got {other:?}"),
        })
        .collect();

    assert!(
        most <= JOBS,
        "{most} answer commands ran at once (limit {JOBS})"
    );
    assert_eq!(most, JOBS, "the slots were never all in use");
    let busy = answers.iter().filter(|m| m.starts_with("busy")).count();
    let killed = answers.iter().filter(|m| m.contains("killed")).count();
    // Killed: the asker's running and queued questions, and the light device's.
    assert_eq!((busy, killed), (refused, JOBS + QUEUE), "{answers:#?}");
    // Every command that ran was killed at its deadline, with the `sleep` it started.
    let started: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(started.len(), JOBS + QUEUE, "{started:?}");
    for pgid in &started {
        assert_eq!(
            group_members(*pgid),
            0,
            "process group {pgid} outlived its deadline"
        );
    }
    lamp.expect_lines(&["refused: busy", "killed with its process group"]);

    for d in [asker, light] {
        if let Ok(d) = Arc::try_unwrap(d) {
            rt.block_on(d.close());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
