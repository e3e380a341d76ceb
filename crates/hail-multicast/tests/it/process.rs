//! Two channels in two processes: this test binary spawns itself as the peer.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::time::timeout;

use crate::{PATIENCE, bind, g4, key, lo};

const CHILD_ENV: &str = "HAIL_MULTICAST_CHILD_GROUP";

/// The parent: a sealed channel on loopback; the child (this binary again) joins the same
/// group and port, and each must hear the other.
#[tokio::test]
async fn channels_in_two_processes() {
    let (chan, mut rx) = bind(g4(20, 0), lo().key(key(9))).unwrap();
    let group = chan.group();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "process::child_peer", "--ignored", "--nocapture"])
        .env(CHILD_ENV, group.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the test binary as the child");
    let mut from_child = 0;
    let deadline = Instant::now() + PATIENCE;
    while from_child < 10 {
        assert!(Instant::now() < deadline, "child never heard from");
        chan.send(b"parent").await.unwrap();
        if let Ok(d) = timeout(Duration::from_millis(20), rx.recv()).await {
            let d = d.unwrap();
            if &d.payload[..] == b"child" {
                from_child += 1;
            }
        }
    }
    // Tell the child it was heard, once and then for each datagram it sends, until it
    // has exited (it exits once it hears this).
    chan.send(b"heard").await.unwrap();
    let exit = child.wait_with_output();
    tokio::pin!(exit);
    let out = timeout(deadline.saturating_duration_since(Instant::now()), async {
        loop {
            tokio::select! {
                out = &mut exit => break out.expect("the child's output"),
                d = rx.recv() => if &d.unwrap().payload[..] == b"child" {
                    chan.send(b"heard").await.unwrap();
                },
            }
        }
    })
    .await
    .expect("child did not finish");
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("child heard the parent"),
        "the child test did not run: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The child half of `channels_in_two_processes`; it runs only when spawned by it.
#[tokio::test]
#[ignore = "child half of channels_in_two_processes, spawned by it"]
#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the parent reads the child's report from its output"
)]
async fn child_peer() {
    let Ok(group) = std::env::var(CHILD_ENV) else {
        eprintln!("child_peer runs only when spawned by channels_in_two_processes");
        return;
    };
    let group: SocketAddr = group.parse().unwrap();
    let SocketAddr::V4(g) = group else {
        panic!("IPv4 group")
    };
    let last = g.ip().octets()[3];
    let (chan, mut rx) = bind(g4(last, group.port()), lo().key(key(9))).unwrap();
    let mut from_parent = 0;
    let deadline = Instant::now() + PATIENCE;
    while from_parent < 10 {
        assert!(Instant::now() < deadline, "parent never heard from");
        chan.send(b"child").await.unwrap();
        if let Ok(d) = timeout(Duration::from_millis(20), rx.recv()).await
            && &d.unwrap().payload[..] == b"parent"
        {
            from_parent += 1;
        }
    }
    // Until the parent says it has collected its ten.
    loop {
        assert!(
            Instant::now() < deadline,
            "the parent never said it heard us"
        );
        chan.send(b"child").await.unwrap();
        if let Ok(d) = timeout(Duration::from_millis(20), rx.recv()).await
            && &d.unwrap().payload[..] == b"heard"
        {
            break;
        }
    }
    println!("child heard the parent {from_parent} times");
}
