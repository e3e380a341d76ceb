//! `hail listen` whose standard output nobody reads: a peer's messages wait to be
//! printed, but questions are still answered and RPC calls served (the writes to stdout
//! block a thread of their own, never the device's runtime).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use hail::prelude::*;

use crate::proc::{WAIT, hail, on};

/// Kills the listener on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a thread of process `pid` waits in a write to a full pipe (`pipe_write`, or
/// `anon_pipe_write` on newer kernels).
fn writing_to_a_full_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.ends_with("pipe_write"))
    })
}

#[test]
fn a_listener_whose_stdout_is_full_still_answers_and_serves_calls() {
    let g = crate::proc::group();
    let group: SocketAddr = g.parse().unwrap();
    let mut child = hail()
        .args(on(&g, &["listen", "--name", "stuck"]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hail listen");
    // Read up to "listening as", then never again: the pipe (64 KiB) fills.
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let pid = child.id();
    let _listener = Killed(child);
    let mut line = String::new();
    while !line.contains("listening as stuck") {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read stdout") > 0,
            "hail listen ended before it listened"
        );
    }

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let (device, mut events) = Device::builder("pusher")
            .group(group)
            .interface(Ipv4Addr::LOCALHOST)
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .start()
            .await
            .expect("start the device");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        tokio::time::timeout(WAIT, device.wait_for_peer("stuck"))
            .await
            .expect("the device meets the listener");
        // Four messages of 256 KiB: more than the pipe holds, so the listener's printing
        // is stuck in a write from the first on.
        let mut to = device.to("stuck").expect("a sender");
        for _ in 0..4 {
            to.send(&[b'x'; 256 * 1024]).await.expect("send");
        }
        // The listener's state shows only in `/proc`: sampled on a blocking thread.
        tokio::task::spawn_blocking(move || {
            crate::proc::eventually("the listener blocks writing to stdout", || {
                writing_to_a_full_pipe(pid)
            });
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        // Questions and calls still get through (each printed question waits its turn
        // behind the messages, the answer does not).
        for i in 0..3 {
            let q = Bytes::from(format!("still there? {i}"));
            let answers = device.ask("stuck", q.clone(), Duration::from_secs(5)).await;
            assert_eq!(
                answers["stuck"].as_ref().ok(),
                Some(&q),
                "ask {i} of a listener with a full stdout: {answers:?}"
            );
            let echoed: String = device
                .peer("stuck")
                .expect("the listener's RPC")
                .execute("echo", format!("call {i}"), Duration::from_secs(5))
                .await
                .expect("echo from a listener with a full stdout");
            assert_eq!(echoed, format!("call {i}"));
        }
        device.close().await;
    });
    // What it held back is printed once stdout is read: the messages, in order.
    let mut seen = 0;
    let mut line = String::new();
    while seen < 4 {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read stdout") > 0,
            "stdout ended after {seen} of 4 messages"
        );
        if line.starts_with("message from pusher: xxxx") {
            assert_eq!(
                line.trim_end().len(),
                "message from pusher: ".len() + 256 * 1024
            );
            seen += 1;
        }
    }
}
