//! Five hosts (network namespaces) on a bridge, 10% of the discovery datagrams dropped at
//! every host by nftables: all see all within 5 s, one link per pair, in each of 20 runs (on
//! ten such LANs side by side, two runs each).
//! Root only (and `nft` installed); skipped with a printed reason otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hail_discovery::Device;
use hail_testsupport::{Lan, Namespaces, OrSkip, impairment, in_netns, nft, report};

const HOSTS: usize = 5;
const RUNS: usize = 20;
const GROUP_IP: Ipv4Addr = Ipv4Addr::new(239, 255, 72, 80);
const GROUP_PORT: u16 = 47_760;
/// The hosts' /24: host `i` is 10.78.0.<i+1>.
const SUBNET: [u8; 3] = [10, 78, 0];

fn host_ip(i: usize) -> Ipv4Addr {
    hail_testsupport::host_ip(SUBNET, i)
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
    ns: &str,
    i: usize,
    start: Arc<Barrier>,
    done: Arc<Barrier>,
) -> std::thread::JoinHandle<Outcome> {
    in_netns(ns, move || {
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
            // Real time (real sockets in namespaces): lets a duplicate link dialed as the
            // hosts met come up and be dropped before links are counted (no event says
            // none is coming); then the count must settle to one a pair.
            tokio::time::sleep(Duration::from_millis(600)).await;
            // `links()` has no notification, so the shared wait polls it. Its own limit
            // (10 s) is never reached: this timeout ends it first, so a count that does
            // not settle is asserted by the test's thread (a panic here would leave the
            // other hosts at their barrier).
            let settled = crate::wait::wait_for(|| d.links() == HOSTS - 1, String::new);
            let _ = tokio::time::timeout(Duration::from_secs(5), settled).await;
            let links = d.links();
            // Everyone has counted before anyone leaves.
            let done2 = done.clone();
            tokio::task::spawn_blocking(move || done2.wait())
                .await
                .unwrap();
            d.close().await;
            Outcome { all_seen, links }
        })
    })
}

/// LANs that run side by side, each doing `RUNS / LANS` of the runs one after another: a
/// run mostly waits (its 600 ms of settling), so ten LANs at once take a tenth of the
/// time of one doing all 20.
const LANS: usize = 10;

/// `RUNS / LANS` runs on `lan`, the `lane`th of the LANs; the slowest all-see-all.
fn runs_on(lan: &Lan, lane: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for k in 0..RUNS / LANS {
        let r = lane * (RUNS / LANS) + k;
        let start = Arc::new(Barrier::new(HOSTS));
        let done = Arc::new(Barrier::new(HOSTS));
        let threads: Vec<_> = (0..HOSTS)
            .map(|i| host(lan.host(i), i, start.clone(), done.clone()))
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
    worst
}

/// LAN `lane` of [`LANS`], its loss rules in place; `None` (printed why) where namespaces or
/// nftables are not available.
fn lossy_lan(lane: usize) -> Option<Lan> {
    let lan = Namespaces::for_test(&format!("disc{lane}"))
        .and_then(Namespaces::require_nft)
        .and_then(|ns| Lan::create(ns, SUBNET, HOSTS))
        .or_skip()?;
    // 10% of the discovery datagrams dropped on arrival at every host.
    let rules = impairment(10, 0, Some(SocketAddrV4::new(GROUP_IP, GROUP_PORT)));
    for h in lan.hosts() {
        nft(h, &rules).expect("nft loss rule");
    }
    Some(lan)
}

#[test]
fn five_hosts_with_ten_percent_loss_all_see_all_in_every_run() {
    // Made side by side too: each is some 30 `ip` and `nft` commands.
    let made: Vec<Option<Lan>> = std::thread::scope(|s| {
        let lanes: Vec<_> = (0..LANS)
            .map(|lane| s.spawn(move || lossy_lan(lane)))
            .collect();
        lanes
            .into_iter()
            .map(|l| l.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let Some(lans) = made.into_iter().collect::<Option<Vec<Lan>>>() else {
        return;
    };
    let worst = std::thread::scope(|s| {
        let lanes: Vec<_> = lans
            .iter()
            .enumerate()
            .map(|(lane, lan)| s.spawn(move || runs_on(lan, lane)))
            .collect();
        lanes
            .into_iter()
            .map(|l| l.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .max()
            .expect("LANS > 0")
    });
    report(&format!(
        "{RUNS} runs of {HOSTS} hosts with 10% multicast loss ({LANS} LANs side by side): \
         slowest all-see-all {worst:?}"
    ));
}
