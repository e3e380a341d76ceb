//! The memory budget against misbehaving peers: partial frames that never finish, a peer
//! whose messages the application does not take. In memory, in paused time; and one
//! attack over real TCP in a child process that reports its peak memory (`VmHWM`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hail_link::memory::{MemoryNetwork, MemoryStream};
use hail_link::{
    Budget, Client, ClientConfig, CloseReason, DEFAULT_BUDGET_BYTES, DEFAULT_BUDGET_STALL,
    LinkConfig, RESERVE_DIVISOR, Server, ServerConfig, ServerEvent, Transport,
};
use hail_wire::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::common::{HELLO, LIMIT, WELCOME, key, lo, server_event, wait_for};

/// What one read may pass the budget by, per worker thread: 64 KiB (hail-link's largest
/// read), twice for slack.
const READ_SLACK: usize = 2 * 64 * 1024;

/// A peer that speaks the hello and then announces a frame of `len` body bytes and sends
/// all but its last byte, in 16 KiB writes (counted in `sent`), then holds the link open
/// without a byte more.
async fn partial_frame(mut s: MemoryStream, len: usize, sent: Arc<AtomicUsize>) {
    s.write_all(HELLO).await.unwrap();
    let mut w = [0u8; 6];
    s.read_exact(&mut w).await.unwrap();
    assert_eq!(&w, WELCOME);
    let mut head = (len as u32).to_be_bytes().to_vec();
    head.push(0x00); // a message frame
    s.write_all(&head).await.unwrap();
    let chunk = [0x5a; 16 * 1024];
    let mut left = len - 2;
    while left > 0 {
        let n = left.min(chunk.len());
        if s.write_all(&chunk[..n]).await.is_err() {
            return; // closed by the server
        }
        left -= n;
        sent.fetch_add(n, Ordering::Relaxed);
    }
    // Hold the frame open; read (and drop) what the server sends until it closes us.
    let mut sink = [0u8; 1024];
    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// 64 peers each hold a 1 MiB frame one byte short: without a budget the server holds
/// 64 MiB of partial frames (1,024 peers of 16 MiB frames would be 16 GiB); with the
/// default budget it holds at most 32 MiB, the others wait in TCP, and the stalled ones
/// are closed after the stall time, so a well-behaved client gets through.
#[tokio::test(start_paused = true)]
async fn partial_frames_of_many_peers_stay_within_the_budget() {
    const PEERS: usize = 64;
    const FRAME: usize = 1 << 20;
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .max_frame_len(FRAME as u32)
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        "10.0.0.1:7000".parse().unwrap(),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (good, _good_events) = Client::connect(
        addr,
        ClientConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut peers = Vec::new();
    let start = Instant::now();
    for _ in 0..PEERS {
        let s = net.connect_loopback(addr).await.unwrap();
        peers.push(tokio::spawn(partial_frame(s, FRAME, Arc::clone(&sent))));
    }
    wait_for("every peer admitted", || {
        server.stats().clients == PEERS + 1
    })
    .await;
    // Until the link has read what it may (the budget spent down to its reserve, which
    // only connections holding less than SMALL_HOLDER may take), or everything (no budget).
    wait_for("the peers sent what the server reads", || {
        let s = server.stats();
        s.budget.in_use >= DEFAULT_BUDGET_BYTES - DEFAULT_BUDGET_BYTES / RESERVE_DIVISOR
            || sent.load(Ordering::Relaxed) == PEERS * (FRAME - 2)
    })
    .await;
    let stats = server.stats();
    assert!(
        stats.budget.peak <= DEFAULT_BUDGET_BYTES + READ_SLACK,
        "partial frames held: {} MiB at most, budget {} MiB",
        stats.budget.peak >> 20,
        DEFAULT_BUDGET_BYTES >> 20
    );
    assert!(
        sent.load(Ordering::Relaxed) < PEERS * (FRAME - 2),
        "the peers past the budget wait"
    );
    assert_eq!(stats.budget_closes, 0, "nobody stalled yet");

    // A well-behaved client's message gets through at once: it holds nothing, so it
    // reads into the budget's reserve while the peers holding partial frames wait.
    good.send(Bytes::from_static(b"still served"))
        .await
        .unwrap();
    let mut closed = 0;
    loop {
        match server_event(&mut events).await {
            ServerEvent::Message { msg, .. } => {
                assert_eq!(&msg[..], b"still served");
                break;
            }
            ServerEvent::Closed { reason, .. } => {
                assert!(matches!(reason, CloseReason::MemoryBudget), "{reason:?}");
                closed += 1;
            }
            _ => {}
        }
    }
    assert!(
        start.elapsed() < DEFAULT_BUDGET_STALL,
        "before any stall time: {:?} {:?} sent {}",
        start.elapsed(),
        server.stats(),
        sent.load(Ordering::Relaxed)
    );
    // The stalled peers are closed after the stall time.
    wait_for("a stalled peer closed", || {
        server.stats().budget_closes >= 1
    })
    .await;
    assert!(
        start.elapsed() >= DEFAULT_BUDGET_STALL,
        "not before the stall time"
    );
    let stats = server.stats();
    assert!(stats.budget_closes >= 1, "{stats:?}");
    assert_eq!(stats.budget.stalled_closes, stats.budget_closes);
    // The peers that stalled first were closed, the others read on and stall in turn,
    // or, once within the budget, end at the heartbeat dead time like any silent peer.
    // Then the budget is all given back.
    while closed < PEERS {
        if let ServerEvent::Closed { reason, .. } = server_event(&mut events).await {
            assert!(
                matches!(reason, CloseReason::MemoryBudget | CloseReason::Timeout),
                "{reason:?}"
            );
            closed += 1;
        }
    }
    for p in peers {
        tokio::time::timeout(LIMIT, p).await.unwrap().unwrap();
    }
    wait_for("the budget given back", || {
        server.stats().budget.in_use == 0
    })
    .await;
    let stats = server.stats();
    assert_eq!(stats.budget.stalled_closes, stats.budget_closes);
    assert!(
        stats.budget.peak <= DEFAULT_BUDGET_BYTES + READ_SLACK,
        "{stats:?}"
    );
    assert_eq!(stats.clients, 1, "the well-behaved client stays");
}

/// One peer floods whole messages the application does not take: it may hold its share
/// (a quarter of the budget) of undelivered messages, then it waits in TCP while another
/// peer is still served; once the application reads, everything arrives, nothing lost.
#[tokio::test(start_paused = true)]
async fn one_peer_holds_at_most_its_share_of_undelivered_messages() {
    const BUDGET: usize = 4 << 20;
    const SIZE: usize = 64 * 1024;
    const COUNT: usize = 200; // 12.5 MiB, three times the whole budget
    let net = MemoryNetwork::new();
    let budget = Budget::new(BUDGET);
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .max_frame_len(256 * 1024)
        .budget(budget.clone())
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        "10.0.0.1:7000".parse().unwrap(),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    assert!(server.budget().same(&budget));
    let addr = server.local_addr();
    let cfg = ClientConfig::builder()
        .link(
            LinkConfig::builder()
                .transport(Transport::memory(&net))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (flood, _f) = Client::connect(addr, cfg.clone(), Binary).await.unwrap();
    let (other, _o) = Client::connect(addr, cfg, Binary).await.unwrap();
    let flooding = tokio::spawn(async move {
        let body = Bytes::from(vec![7u8; SIZE]);
        for _ in 0..COUNT {
            flood.send(body.clone()).await.unwrap();
        }
        flood
    });
    // The application takes nothing until the flood is held back.
    wait_for("the flooder held back", || {
        budget.in_use() >= budget.peer_share()
    })
    .await;
    let peak = budget.stats().peak;
    assert!(
        peak <= budget.peer_share() + READ_SLACK,
        "one peer held {peak} bytes, its share is {}",
        budget.peer_share()
    );
    assert!(!flooding.is_finished(), "the flooder waits for room");
    other.send(Bytes::from_static(b"me too")).await.unwrap();
    let mut from_flood = 0;
    let mut other_seen = false;
    while from_flood < COUNT || !other_seen {
        match server_event(&mut events).await {
            ServerEvent::Message { msg, .. } if &msg[..] == b"me too" => other_seen = true,
            ServerEvent::Message { msg, .. } => {
                assert_eq!(msg.len(), SIZE);
                from_flood += 1;
            }
            _ => {}
        }
    }
    tokio::time::timeout(LIMIT, flooding)
        .await
        .unwrap()
        .unwrap();
    let stats = server.stats();
    assert_eq!(
        stats.budget_closes, 0,
        "a peer whose messages wait is not stalled"
    );
    assert!(
        stats.budget.peak <= budget.peer_share() + READ_SLACK,
        "{stats:?}"
    );
    // The last batch taken stays counted until the application asks for more (it holds
    // those messages until then): asking gives it back.
    assert!(events.try_recv().is_none(), "nothing more");
    wait_for("the budget given back", || budget.in_use() == 0).await;
}

/// Over real TCP, in a child process (its own `VmHWM`): 64 peers announce 15 MiB frames
/// on a server with the default configuration and send all but the last byte. The
/// child's peak memory stays near the budget (32 MiB), not 64 x 15 MiB.
#[test]
fn tcp_partial_frames_peak_memory_in_a_child() {
    const CHILD: &str = "HAIL_LINK_BUDGET_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let grown = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(tcp_attack());
        // The parent reads this line.
        eprintln!("grown_kib={}", grown / 1024);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "budget::tcp_partial_frames_peak_memory_in_a_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    let grown_kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("grown_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("child reported no figure: {stderr}"));
    eprintln!(
        "64 partial 15 MiB frames over TCP: peak memory grew by {} MiB",
        grown_kib / 1024
    );
    assert!(
        grown_kib < 96 * 1024,
        "peak grew by {} MiB, the budget is {} MiB",
        grown_kib / 1024,
        DEFAULT_BUDGET_BYTES >> 20
    );
}

/// This process's peak resident set size (`VmHWM`), in bytes.
fn hwm_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs the attack; returns how much the peak memory grew.
async fn tcp_attack() -> u64 {
    const PEERS: usize = 64;
    const FRAME: usize = 15 << 20;
    let (server, _events) = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        Binary,
    )
    .await
    .unwrap();
    let addr: SocketAddr = server.local_addr();
    let before = hwm_bytes();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut peers = Vec::new();
    for _ in 0..PEERS {
        let sent = Arc::clone(&sent);
        peers.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(HELLO).await.unwrap();
            let mut w = [0u8; 6];
            s.read_exact(&mut w).await.unwrap();
            let mut head = (FRAME as u32).to_be_bytes().to_vec();
            head.push(0x00);
            s.write_all(&head).await.unwrap();
            let chunk = [0x5a; 64 * 1024];
            let mut left = FRAME - 2;
            while left > 0 {
                let n = left.min(chunk.len());
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
                sent.fetch_add(n, Ordering::Relaxed);
            }
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        }));
    }
    // Until what the server reads stops growing: the peers done, or held back by the
    // budget (then what they sent no longer moves for a while), bounded by 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = usize::MAX;
    loop {
        // Real time (real TCP): the server reading nothing more is a state, not an event,
        // so it is seen as what was read no longer moving between two looks 500 ms apart;
        // nothing is asserted about how long it takes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = server
            .stats()
            .budget
            .in_use
            .max(sent.load(Ordering::Relaxed));
        if now == last || std::time::Instant::now() >= deadline {
            break;
        }
        last = now;
    }
    let grown = hwm_bytes().saturating_sub(before);
    drop(server);
    for p in peers {
        p.abort();
    }
    grown
}

/// Peers that read nothing (but send heartbeats, so they look alive) while the server
/// keeps sending to them: their send queues spend the budget, which would keep every other
/// connection from reading. A write that waits for the stall time on a spent budget
/// closes its connection, until the budget is no longer spent; a well-behaved client is
/// served again.
#[tokio::test(start_paused = true)]
async fn peers_that_read_nothing_are_closed_while_their_queues_spend_the_budget() {
    const DEAF: usize = 4;
    let net = MemoryNetwork::new();
    let budget = Budget::new(2 << 20);
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .budget(budget.clone())
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        "10.0.0.1:7000".parse().unwrap(),
        ServerConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let mut deaf = Vec::new();
    for _ in 0..DEAF {
        let mut s = net.connect_loopback(addr).await.unwrap();
        s.write_all(HELLO).await.unwrap();
        let mut w = [0u8; 6];
        s.read_exact(&mut w).await.unwrap();
        // Never reads again; a heartbeat frame every 500 ms.
        deaf.push(tokio::spawn(async move {
            while s.write_all(b"\x00\x00\x00\x01\x01").await.is_ok() {
                // Virtual time (paused): the peer's heartbeat period, what keeps it alive
                // in the server's eyes, is part of the scenario.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    wait_for("the deaf peers admitted", || server.stats().clients == DEAF).await;
    let start = Instant::now();
    let body = Bytes::from(vec![1u8; 64 * 1024]);
    let mut senders = Vec::new();
    for (id, _) in server.clients() {
        let conn = server.connection(id).unwrap();
        let body = body.clone();
        senders.push(tokio::spawn(async move {
            while conn.send(body.clone()).await.is_ok() {}
        }));
    }
    wait_for("the budget spent by the queues", || budget.is_spent()).await;
    assert!(budget.stats().peak <= budget.total() + 2 * 64 * 1024 + 512 * 1024);
    let cfg = ClientConfig::builder()
        .link(
            LinkConfig::builder()
                .transport(Transport::memory(&net))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (good, _good_events) = Client::connect(addr, cfg, Binary).await.unwrap();
    good.send(Bytes::from_static(b"hello")).await.unwrap();
    let mut closed = 0;
    loop {
        match server_event(&mut events).await {
            ServerEvent::Message { msg, .. } => {
                assert_eq!(&msg[..], b"hello");
                break;
            }
            ServerEvent::Closed { reason, .. } => {
                assert!(matches!(reason, CloseReason::MemoryBudget), "{reason:?}");
                closed += 1;
            }
            _ => {}
        }
    }
    assert!(closed >= 1, "served only once a deaf peer was closed");
    assert!(start.elapsed() >= DEFAULT_BUDGET_STALL);
    let stats = server.stats();
    assert_eq!(stats.budget_closes, closed, "{stats:?}");
    assert!(
        stats.budget.peak <= budget.total() + 2 * 64 * 1024 + 512 * 1024,
        "{stats:?}"
    );
    drop(server);
    for s in senders {
        tokio::time::timeout(LIMIT, s).await.unwrap().unwrap();
    }
    for d in deaf {
        d.abort();
    }
}

/// Issue 13 (the `frames` attack, scaled down, over real TCP): peers send large messages
/// back to back to an application that takes them slowly, so the budget is spent again
/// the moment a message is taken. Each read is at most 64 KiB whatever room the receive
/// buffer has (a buffer kept after a 1 MiB frame had a megabyte of room, and one read per
/// flooder into it passed the budget by a megabyte, spending the reserve kept for peers
/// that hold little), and a peer sending small messages is read all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_peers_sending_large_frames_pass_the_budget_by_one_read_at_most() {
    const BUDGET: usize = 4 << 20;
    const FRAME: usize = 1 << 20;
    const FLOODERS: usize = 16;
    const PROBES: u32 = 20;
    let budget = Budget::new(BUDGET);
    let link = LinkConfig::builder()
        .max_frame_len(FRAME as u32)
        .budget(budget.clone())
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        lo(),
        ServerConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let cfg = ClientConfig::builder()
        .link(
            LinkConfig::builder()
                .max_frame_len(FRAME as u32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut flooders = Vec::new();
    for _ in 0..FLOODERS {
        let (c, e) = Client::connect(addr, cfg.clone(), Binary).await.unwrap();
        flooders.push(tokio::spawn(async move {
            let _events = e;
            let body = Bytes::from(vec![7u8; FRAME - 16]);
            // Bounded: more than the application takes in the test's time.
            for _ in 0..100 {
                if c.send(body.clone()).await.is_err() {
                    break;
                }
            }
        }));
    }
    let (light, _l) = Client::connect(addr, cfg, Binary).await.unwrap();
    wait_for("the budget spent by the flood", || {
        budget.in_use() >= BUDGET - BUDGET / RESERVE_DIVISOR
    })
    .await;
    // The light peer sends a numbered small message every 20 ms; the application takes
    // one large message per 10 ms.
    let sender = tokio::spawn(async move {
        for i in 0..PROBES {
            light
                .send(Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
            // Real time (real TCP), and needed: the light peer's messages must come spread
            // out while the flood keeps the budget spent; a version without these pauses
            // passed without the fix it checks, too.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        light
    });
    let mut seen = 0;
    let mut taken = 0;
    while seen < PROBES {
        match server_event(&mut events).await {
            ServerEvent::Message { msg, .. } if msg.len() == 4 => {
                assert_eq!(
                    u32::from_be_bytes(msg[..].try_into().unwrap()),
                    seen,
                    "in order"
                );
                seen += 1;
            }
            ServerEvent::Message { msg, .. } => {
                assert_eq!(msg.len(), FRAME - 16);
                taken += 1;
                // Real time, and needed: a slow application, which keeps the budget spent
                // between the light peer's messages (see the sender above).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ServerEvent::Closed { reason, .. } => panic!("closed: {reason:?}"),
            _ => {}
        }
    }
    let stats = server.stats();
    assert!(taken > 0, "the flood was read too: {stats:?}");
    assert!(
        stats.budget.peak <= BUDGET + READ_SLACK,
        "passed by {} KiB: {stats:?}",
        (stats.budget.peak.saturating_sub(BUDGET)) >> 10
    );
    assert_eq!(stats.budget_closes, 0, "{stats:?}");
    drop(sender);
    for f in flooders {
        f.abort();
    }
}

/// Found in review: on a secured link a burst of small messages comes in full 64 KiB
/// records, so past the reserve line it is judged by its partial record as a large holder
/// and paused (as a flooder starting a large frame must be). It must not be closed as
/// stalled for that: it waits, and once the budget has room every message arrives.
#[tokio::test(start_paused = true)]
async fn a_burst_of_small_messages_on_a_secured_link_waits_but_is_not_closed() {
    const BUDGET: usize = 1 << 20;
    const COUNT: u32 = 100;
    let key = key("burst");
    let net = MemoryNetwork::new();
    let budget = Budget::new(BUDGET);
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .group_key(&key)
        .max_frame_len(256 * 1024)
        .budget(budget.clone())
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        "10.0.0.1:7000".parse().unwrap(),
        ServerConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let cfg = ClientConfig::builder()
        .link(
            LinkConfig::builder()
                .transport(Transport::memory(&net))
                .group_key(&key)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (client, _c) = Client::connect(server.local_addr(), cfg, Binary)
        .await
        .unwrap();
    wait_for("connected", || server.stats().clients == 1).await;
    // Others hold the budget down to its reserve (as flooders would).
    let mut others = budget.hold();
    others.set(BUDGET - BUDGET / RESERVE_DIVISOR);
    for i in 0..COUNT {
        let mut msg = vec![0u8; 1024];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        client.send(Bytes::from(msg)).await.unwrap();
    }
    // Twice the stall time: held back (its records are full), never closed for it.
    let quiet = tokio::time::timeout(DEFAULT_BUDGET_STALL * 2, async {
        loop {
            match events.recv().await {
                Some(ServerEvent::Closed { reason, .. }) => return Some(reason),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "closed: {:?}", quiet.ok());
    assert_eq!(server.stats().budget_closes, 0);
    drop(others);
    let mut next = 0;
    while next < COUNT {
        if let ServerEvent::Message { msg, .. } = server_event(&mut events).await {
            assert_eq!(
                u32::from_be_bytes(msg[..4].try_into().unwrap()),
                next,
                "in order"
            );
            next += 1;
        }
    }
}
