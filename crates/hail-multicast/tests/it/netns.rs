//! Tests in network namespaces the test creates (root only; skipped with a printed reason
//! otherwise): IPv6 multicast over a veth pair, and two "hosts" on a bridge with loss.

use std::collections::HashSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hail_multicast::Channel;
use tokio::time::timeout;

use crate::{PATIENCE, key};

/// Namespaces (and, with them, their links) that are deleted on drop, even when a test fails.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates namespaces `hail-<pid>-<tag>-<suffix>`; `None` (with the reason printed) when
    /// this is not possible here.
    fn create(tag: &str, suffixes: &[&str]) -> Option<Self> {
        let mut me = Self { names: Vec::new() };
        for s in suffixes {
            let name = format!("hail-{}-{tag}-{s}", std::process::id());
            if let Err(e) = ip(&["netns", "add", &name]) {
                skip(&format!(
                    "cannot create a network namespace ({e}); needs root and iproute2"
                ));
                return None;
            }
            me.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"]).ok()?;
        }
        Some(me)
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

#[allow(
    clippy::print_stderr,
    reason = "a skipped test says why on the test output"
)]
fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
}

#[allow(
    clippy::print_stderr,
    reason = "the measured figure goes to the test output"
)]
fn report(line: &str) {
    eprintln!("{line}");
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `f` on a new thread inside namespace `ns`, with its own current-thread runtime.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).expect("namespace file");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// IPv6: a link-scoped group (ff02::) between two namespaces joined by a veth pair. (On
/// this host's own `lo`, IPv6 multicast is unroutable: `lo` has no MULTICAST flag.)
#[test]
fn ipv6_link_scope_over_veth() {
    let Some(ns) = Namespaces::create("v6", &["a", "b"]) else {
        return;
    };
    let (a, b) = (ns.name(0).to_owned(), ns.name(1).to_owned());
    for args in [
        vec![
            "-n", &a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &b,
        ],
        vec!["-n", &a, "link", "set", "v0", "up"],
        vec!["-n", &b, "link", "set", "v1", "up"],
        vec!["-n", &a, "addr", "add", "fe80::a/64", "dev", "v0", "nodad"],
        vec!["-n", &b, "addr", "add", "fe80::b/64", "dev", "v1", "nodad"],
    ] {
        ip(&args).expect("set up veth pair");
    }
    let group: SocketAddr = "[ff02::4a1:77]:47751".parse().unwrap();
    let ready = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let rx_thread = {
        let (ready, done) = (Arc::clone(&ready), Arc::clone(&done));
        in_netns(&b, move || {
            runtime().block_on(async move {
                let mut rx = Channel::builder(group)
                    .interface("v1")
                    .key(key(4))
                    .build()
                    .unwrap();
                ready.wait();
                let mut got = HashSet::new();
                let deadline = Instant::now() + PATIENCE;
                while got.len() < 100 && Instant::now() < deadline {
                    if let Ok(d) = timeout(Duration::from_millis(50), rx.recv()).await {
                        let d = d.unwrap();
                        assert!(
                            d.payload.len() == 40 && d.payload.iter().all(|&x| x == d.payload[0])
                        );
                        assert!(
                            matches!(d.from, SocketAddr::V6(v6) if v6.ip().segments()[0] == 0xfe80)
                        );
                        got.insert(d.payload[0]);
                    }
                }
                done.store(true, Ordering::SeqCst);
                (got.len(), rx.stats())
            })
        })
    };
    let tx_thread = {
        let (ready, done) = (Arc::clone(&ready), Arc::clone(&done));
        in_netns(&a, move || {
            runtime().block_on(async move {
                let tx = Channel::builder(group)
                    .interface("v0")
                    .key(key(4))
                    .build()
                    .unwrap();
                ready.wait();
                // veth drops nothing, but the link may need a moment after coming up:
                // repeat the 100 datagrams until the receiver has them all (replays of
                // delivered ones are refused and counted).
                while !done.load(Ordering::SeqCst) {
                    for i in 0..100u8 {
                        tx.send(&[i; 40]).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        })
    };
    let (got, stats) = rx_thread.join().expect("receiver");
    tx_thread.join().expect("sender");
    assert_eq!(got, 100);
    assert_eq!(
        stats.delivered, 100,
        "each delivered exactly once: {stats:?}"
    );
    assert_eq!(
        stats.dropped_malformed + stats.dropped_wrong_key,
        0,
        "{stats:?}"
    );
}

/// Two hosts (namespaces) on a bridge, a sealed channel across them, and 10% of the
/// receiver's multicast dropped by nftables: about 90% arrive, none corrupt or duplicated.
#[test]
fn two_hosts_on_a_bridge_with_loss() {
    if run("nft", &["--version"]).is_err() {
        skip("nft (package nftables) is not installed");
        return;
    }
    let Some(ns) = Namespaces::create("br", &["br", "a", "b"]) else {
        return;
    };
    let (br, a, b) = (
        ns.name(0).to_owned(),
        ns.name(1).to_owned(),
        ns.name(2).to_owned(),
    );
    let setup: Vec<Vec<&str>> = vec![
        vec![
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
        vec!["-n", &br, "link", "set", "br0", "up"],
        vec![
            "-n", &br, "link", "add", "pa", "type", "veth", "peer", "name", "eth0", "netns", &a,
        ],
        vec![
            "-n", &br, "link", "add", "pb", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ],
        vec!["-n", &br, "link", "set", "pa", "master", "br0", "up"],
        vec!["-n", &br, "link", "set", "pb", "master", "br0", "up"],
        vec!["-n", &a, "addr", "add", "10.77.0.1/24", "dev", "eth0"],
        vec!["-n", &b, "addr", "add", "10.77.0.2/24", "dev", "eth0"],
        vec!["-n", &a, "link", "set", "eth0", "up"],
        vec!["-n", &b, "link", "set", "eth0", "up"],
    ];
    for args in &setup {
        ip(args).expect("set up the bridge");
    }
    let group_ip = Ipv4Addr::new(239, 255, 77, 50);
    let port = 47_750u16;
    // 10% loss of the group's datagrams arriving at host b.
    let rules = format!(
        "table inet hailloss {{ chain input {{ type filter hook input priority 0; \
         ip daddr {group_ip} udp dport {port} numgen random mod 10 < 1 counter drop; }}; }}"
    );
    run("ip", &["netns", "exec", &b, "nft", &rules]).expect("nft rules");

    const N: u32 = 2_000;
    let done = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(2));
    let received = Arc::new(AtomicU32::new(0));
    let rx_thread = {
        let (done, ready, received) =
            (Arc::clone(&done), Arc::clone(&ready), Arc::clone(&received));
        in_netns(&b, move || {
            runtime().block_on(async move {
                let mut rx = Channel::builder((group_ip, port))
                    .interface(Ipv4Addr::new(10, 77, 0, 2))
                    .key(key(5))
                    .recv_buffer_size(1 << 22)
                    .build()
                    .unwrap();
                ready.wait();
                let mut seen = HashSet::new();
                loop {
                    match timeout(Duration::from_millis(300), rx.recv()).await {
                        Ok(d) => {
                            let d = d.unwrap();
                            let i = u32::from_le_bytes(d.payload[..4].try_into().unwrap());
                            assert!(i < N, "corrupt index {i}");
                            let body = &d.payload[4..];
                            assert!(
                                body.len() == 200 && body.iter().all(|&x| x == i as u8),
                                "corrupt body"
                            );
                            assert!(seen.insert(i), "duplicate {i}");
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) if done.load(Ordering::SeqCst) => break,
                        Err(_) => {}
                    }
                }
                (seen.len() as u32, rx.stats())
            })
        })
    };
    let tx_thread = {
        let (done, ready, received) =
            (Arc::clone(&done), Arc::clone(&ready), Arc::clone(&received));
        in_netns(&a, move || {
            runtime().block_on(async move {
                let tx = Channel::builder((group_ip, port))
                    .interface("eth0")
                    .key(key(5))
                    .loopback(false)
                    .build()
                    .unwrap();
                ready.wait();
                let start = Instant::now();
                for i in 0..N {
                    let mut p = vec![i as u8; 204];
                    p[..4].copy_from_slice(&i.to_le_bytes());
                    tx.send(&p).await.unwrap();
                    // Pace: stay about 100 datagrams ahead of the receiver, counting the
                    // tenth that nftables drops, so socket buffers never overflow.
                    while i * 9 / 10 > received.load(Ordering::Relaxed) + 100
                        && start.elapsed() < PATIENCE
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                done.store(true, Ordering::SeqCst);
            });
        })
    };
    tx_thread.join().expect("sender");
    let (got, stats) = rx_thread.join().expect("receiver");
    let share = f64::from(got) / f64::from(N);
    report(&format!(
        "{got} of {N} datagrams arrived through 10% loss ({:.1}%)",
        share * 100.0
    ));
    assert!(
        (0.85..=0.95).contains(&share),
        "{got} of {N} arrived with 10% loss"
    );
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    assert_eq!(stats.delivered, u64::from(got));
}

/// With no interface given, a channel joins every up, multicast-capable interface: in a
/// namespace with `lo` and one veth, that is the veth alone.
#[test]
fn default_interfaces_are_the_multicast_capable_ones() {
    let Some(ns) = Namespaces::create("def", &["a", "b"]) else {
        return;
    };
    let (a, b) = (ns.name(0).to_owned(), ns.name(1).to_owned());
    for args in [
        vec![
            "-n", &a, "link", "add", "e0", "type", "veth", "peer", "name", "e0", "netns", &b,
        ],
        vec!["-n", &a, "addr", "add", "10.79.0.1/24", "dev", "e0"],
        vec!["-n", &b, "addr", "add", "10.79.0.2/24", "dev", "e0"],
        vec!["-n", &a, "link", "set", "e0", "up"],
        vec!["-n", &b, "link", "set", "e0", "up"],
    ] {
        ip(&args).expect("set up veth pair");
    }
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 77, 60), 47_760));
    let ready = Arc::new(Barrier::new(2));
    let got_in_b = Arc::new(AtomicBool::new(false));
    let b_thread = {
        let (ready, got_in_b) = (Arc::clone(&ready), Arc::clone(&got_in_b));
        in_netns(&b, move || {
            runtime().block_on(async move {
                let mut rx = Channel::builder(group).interface("e0").build().unwrap();
                ready.wait();
                let d = timeout(PATIENCE, async {
                    loop {
                        let d = rx.recv().await.unwrap();
                        if &d.payload[..] == b"default" {
                            break d;
                        }
                    }
                })
                .await
                .expect("datagram from the default channel");
                got_in_b.store(true, Ordering::SeqCst);
                d.from
            })
        })
    };
    let a_thread = {
        let (ready, got_in_b) = (Arc::clone(&ready), Arc::clone(&got_in_b));
        in_netns(&a, move || {
            runtime().block_on(async move {
                let tx = Channel::builder(group).build().expect("default interfaces");
                let addrs = tx.send_addrs().unwrap();
                ready.wait();
                let deadline = Instant::now() + PATIENCE;
                while !got_in_b.load(Ordering::SeqCst) && Instant::now() < deadline {
                    tx.send(b"default").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                addrs
            })
        })
    };
    let from = b_thread.join().expect("receiver");
    let addrs = a_thread.join().expect("sender");
    assert_eq!(
        addrs.len(),
        1,
        "lo is not multicast-capable, e0 is: {addrs:?}"
    );
    assert_eq!(addrs[0].ip(), Ipv4Addr::new(10, 79, 0, 1));
    assert_eq!(from, addrs[0]);
}
