//! Five hosts (network namespaces) on a bridge, 10% of the discovery datagrams dropped at
//! every host by nftables: all see all within 5 s, one link per pair, in each of 20 runs.
//! Root only (and `nft` installed); skipped with a printed reason otherwise.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hail_discovery::Device;

const HOSTS: usize = 5;
const RUNS: usize = 20;
const GROUP_IP: Ipv4Addr = Ipv4Addr::new(239, 255, 72, 80);
const GROUP_PORT: u16 = 47_760;

/// Namespaces deleted on drop, even when the test fails.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn create(count: usize) -> Option<Self> {
        let mut me = Self { names: Vec::new() };
        for i in 0..count {
            let name = format!("hail-{}-disc-{i}", std::process::id());
            if let Err(e) = run("ip", &["netns", "add", &name]) {
                skip(&format!(
                    "cannot create a network namespace ({e}); needs root and iproute2"
                ));
                return None;
            }
            me.names.push(name.clone());
            run("ip", &["-n", &name, "link", "set", "lo", "up"]).ok()?;
        }
        Some(me)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = run("ip", &["netns", "del", n]);
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

fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 1 + u8::try_from(i).unwrap())
}

/// What one device reports from its run.
struct Outcome {
    /// Time until it had joined every other host, if it did within 5 s.
    all_seen: Option<Duration>,
    /// Links it had open one second later.
    links: usize,
}

/// Runs one device in namespace `ns` (its own thread and current-thread runtime).
fn host(
    ns: String,
    i: usize,
    start: Arc<Barrier>,
    done: Arc<Barrier>,
) -> std::thread::JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let fd = File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            start.wait();
            let t = Instant::now();
            let (d, mut events) = Device::builder(format!("host{i}"))
                .group(SocketAddr::from((GROUP_IP, GROUP_PORT)))
                .interface(host_ip(i))
                .listen(SocketAddr::new(IpAddr::V4(host_ip(i)), 0))
                .start()
                .await
                .expect("device starts");
            let all_seen = tokio::time::timeout(Duration::from_secs(5), async {
                while d.peers().len() < HOSTS - 1 {
                    if events.recv().await.is_none() {
                        break;
                    }
                }
            })
            .await
            .ok()
            .map(|()| t.elapsed());
            // Keep serving while the others finish and the dropped duplicate links close
            // (they linger 500 ms), then count links.
            let settle = async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                while d.links() != HOSTS - 1 {
                    tokio::select! {
                        _ = events.recv() => {}
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), settle).await;
            let links = d.links();
            // Everyone has counted before anyone leaves.
            let done2 = done.clone();
            tokio::task::spawn_blocking(move || done2.wait())
                .await
                .unwrap();
            d.shutdown().await;
            Outcome { all_seen, links }
        })
    })
}

#[test]
fn five_hosts_with_ten_percent_loss_all_see_all_in_every_run() {
    if run("nft", &["--version"]).is_err() {
        skip("nft (package nftables) is not installed");
        return;
    }
    let Some(ns) = Namespaces::create(HOSTS + 1) else {
        return;
    };
    let br = ns.names[0].clone();
    run(
        "ip",
        &[
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
    )
    .expect("bridge");
    run("ip", &["-n", &br, "link", "set", "br0", "up"]).expect("bridge up");
    let rules = format!(
        "table inet haildiscloss {{ chain input {{ type filter hook input priority 0; \
         ip daddr {GROUP_IP} udp dport {GROUP_PORT} numgen random mod 10 < 1 counter drop; }}; }}"
    );
    for i in 0..HOSTS {
        let h = ns.names[i + 1].clone();
        let port = format!("p{i}");
        let addr = format!("{}/24", host_ip(i));
        for args in [
            vec![
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &h,
            ],
            vec!["-n", &br, "link", "set", &port, "master", "br0", "up"],
            vec!["-n", &h, "addr", "add", &addr, "dev", "eth0"],
            vec!["-n", &h, "link", "set", "eth0", "up"],
        ] {
            run("ip", &args).expect("set up a host");
        }
        run("ip", &["netns", "exec", &h, "nft", &rules]).expect("nft loss rule");
    }
    let mut worst = Duration::ZERO;
    for r in 0..RUNS {
        let start = Arc::new(Barrier::new(HOSTS));
        let done = Arc::new(Barrier::new(HOSTS));
        let threads: Vec<_> = (0..HOSTS)
            .map(|i| host(ns.names[i + 1].clone(), i, start.clone(), done.clone()))
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let o = t.join().expect("host thread");
            let seen = o
                .all_seen
                .unwrap_or_else(|| panic!("run {r}: host {i} did not see all within 5 s"));
            worst = worst.max(seen);
            assert_eq!(
                o.links,
                HOSTS - 1,
                "run {r}: host {i} has {} links",
                o.links
            );
        }
    }
    report(&format!(
        "{RUNS} runs of {HOSTS} hosts with 10% multicast loss: slowest all-see-all {worst:?}"
    ));
}
