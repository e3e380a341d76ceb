//! A peer that sends requests and never reads the replies (issue 12 item 1): the target
//! holds its replies in one bounded outbox, refuses new requests `BUSY` past it, and spawns
//! no task per reply. A peer that reads slowly still gets an answer to every request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hail_rpc::{Opcode, Outgoing, Packet, PeerDriver, RetCode, RpcConfig, RpcPeer, Status};
use tokio::sync::mpsc;

/// The target's link to the misbehaving peer: a bounded queue of packets, as a real link's
/// send queue is. The test holds the receiving end and reads it or not.
pub(crate) struct Queue(pub(crate) mpsc::Sender<Bytes>);

impl Outgoing for Queue {
    fn send(
        &self,
        packet: Bytes,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), hail_rpc::LinkClosed>> + Send + '_>,
    > {
        Box::pin(async move { self.0.send(packet).await.map_err(|_| hail_rpc::LinkClosed) })
    }

    fn try_send(&self, packet: &Bytes) -> bool {
        self.0.try_send(packet.clone()).is_ok()
    }
}

/// The longest a test waits for the reader (virtual: a wait in vain fails at once).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Packets the link holds before the target must wait.
const LINK_QUEUE: usize = 16;

/// A target peer serving `echo`, and the receiving end of its link.
pub(crate) fn target(config: RpcConfig) -> (RpcPeer, PeerDriver, mpsc::Receiver<Bytes>) {
    target_with(config, LINK_QUEUE)
}

/// [`target`] whose link holds `link_queue` packets.
pub(crate) fn target_with(
    config: RpcConfig,
    link_queue: usize,
) -> (RpcPeer, PeerDriver, mpsc::Receiver<Bytes>) {
    let (peer, driver) = RpcPeer::new(config);
    peer.bind("echo", |b: Vec<u8>| async move { Ok::<_, String>(b) })
        .expect("echo binds");
    let (tx, rx) = mpsc::channel(link_queue);
    driver.connected(Arc::new(Queue(tx)));
    (peer, driver, rx)
}

pub(crate) fn ping(retcode: u32, len: usize) -> Bytes {
    Packet::Request {
        retcode: RetCode(retcode),
        method: Opcode::PING.into(),
        args: Bytes::from(vec![7u8; len]),
    }
    .to_bytes()
}

pub(crate) fn echo(retcode: u32, len: usize) -> Bytes {
    Packet::Request {
        retcode: RetCode(retcode),
        method: "echo".into(),
        args: echo_args(len),
    }
    .to_bytes()
}

/// `echo`'s arguments, `len` bytes, encoded once per length: postcard walks a `Vec<u8>`
/// byte by byte, and encoding 1,000 of 64 KiB took most of these tests' time in a debug
/// build.
fn echo_args(len: usize) -> Bytes {
    static MADE: Mutex<BTreeMap<usize, Bytes>> = Mutex::new(BTreeMap::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    made.entry(len)
        .or_insert_with(|| {
            postcard::to_allocvec(&vec![7u8; len])
                .expect("encodes")
                .into()
        })
        .clone()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The status of an answer the target sent.
pub(crate) fn status(packet: &[u8]) -> (RetCode, Status) {
    match Packet::decode(packet).expect("the target sends valid packets") {
        Packet::Reply {
            retcode, status, ..
        } => (retcode, status),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// What the peer read: each retcode answered once, OK or BUSY.
#[derive(Default)]
struct Answers {
    seen: std::collections::HashSet<RetCode>,
    ok: u64,
    busy: u64,
}

impl Answers {
    fn record(&mut self, packet: &[u8]) {
        let (retcode, status) = status(packet);
        assert!(self.seen.insert(retcode), "{retcode} answered twice");
        match status {
            Status::OK => self.ok += 1,
            Status::BUSY => self.busy += 1,
            other => panic!("unexpected status {other}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_costs_no_task_per_reply_and_is_refused_busy() {
    let config = RpcConfig::default();
    let bound = config.max_outbox_bytes();
    let (peer, driver, _rx) = target(config);
    let before = alive_tasks();
    let big = 64 << 10;
    for i in 0..2_000u32 {
        // 64 KiB each: 128 MiB of replies if all were held.
        let packet = if i % 2 == 0 {
            ping(i, big)
        } else {
            echo(i, big)
        };
        driver.packet(&packet);
        tokio::task::yield_now().await;
        // One reply past the bound with its header, and the refusals since (a `BUSY`
        // answer is at most 16 bytes, its allocation 32), each packet counted with 64 bytes
        // for its place in the queue.
        let refusals = peer.stats().busy_slow_reader as usize;
        assert!(
            peer.outbox_bytes() <= bound + big + 128 + refusals * (32 + 64),
            "the outbox passed its bound by more than one reply: {}",
            peer.outbox_bytes()
        );
    }
    assert!(
        alive_tasks() <= before + 1,
        "at most one task drains the replies, not one per reply: {} alive",
        alive_tasks() - before
    );
    let stats = peer.stats();
    let answered_ok = bound / big + 1;
    assert!(
        stats.busy_slow_reader >= 2_000 - LINK_QUEUE as u64 - answered_ok as u64,
        "once the outbox is full, requests are refused: {stats:?}"
    );
    assert_eq!(stats.busy, 0, "the handler queue never filled");
    assert_eq!(stats.unanswered_slow_reader, 0);
    assert!(peer.outbox_len() <= answered_ok + 2_000);
}

#[tokio::test(start_paused = true)]
async fn past_twice_the_bound_requests_go_unanswered_and_a_reader_gets_the_rest() {
    let bound = 16 << 10;
    let (peer, driver, mut rx) = target(RpcConfig::builder().max_outbox_bytes(bound).build());
    let total = 20_000u32;
    for i in 0..total {
        driver.packet(&ping(i, if i < 100 { 1 << 10 } else { 0 }));
        assert!(peer.outbox_bytes() <= 2 * bound + (1 << 10) + 128);
    }
    let stats = peer.stats();
    // 16 KiB of refusals of about 96 bytes each (their allocations and places counted).
    assert!(stats.busy_slow_reader > 150, "{stats:?}");
    assert!(stats.unanswered_slow_reader > 1_000, "{stats:?}");

    // The peer reads at last: every request not counted as unanswered gets its answer.
    let mut answers = Answers::default();
    while peer.outbox_len() > 0 || !rx.is_empty() {
        answers.record(&rx.recv().await.expect("the link is up"));
    }
    let stats = peer.stats();
    assert_eq!(answers.busy, stats.busy_slow_reader);
    assert_eq!(
        answers.ok + answers.busy + stats.unanswered_slow_reader,
        u64::from(total)
    );
    // And once it has read, it is served again.
    driver.packet(&ping(total, 3));
    assert_eq!(status(&rx.recv().await.expect("up")).1, Status::OK);
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_gets_an_answer_to_every_request() {
    let bound = 256 << 10;
    let (peer, driver, mut rx) = target(RpcConfig::builder().max_outbox_bytes(bound).build());
    let total = 3_000u32;
    let mut peak = 0;
    let before = alive_tasks();
    // How many answers the reader has taken: the requests keep pace with it.
    let (taken_tx, mut taken) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut answers = Answers::default();
        while answers.seen.len() < total as usize {
            answers.record(&rx.recv().await.expect("the link is up"));
            taken_tx.send_replace(answers.seen.len());
            // One answer a millisecond. Virtual time (paused): the reader's pace is the
            // scenario, and the clock moves only once every task has done what it can
            // (the handlers and the outbox's drainer included).
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        (answers.ok, answers.busy)
    });
    for i in 0..total {
        driver.packet(&echo(i, 4 << 10));
        // Ten requests for every answer taken: ten times faster than the reader.
        if i % 10 == 9 {
            let want = (i / 10 + 1) as usize;
            let kept_up = tokio::time::timeout(LIMIT, taken.wait_for(|&n| n >= want))
                .await
                .is_ok_and(|r| r.is_ok());
            assert!(
                kept_up,
                "the reader stopped at {} of {want} answers",
                *taken.borrow()
            );
        }
        peak = peak.max(peer.outbox_bytes());
    }
    // Below twice the bound, where requests would go unanswered: the replies past the
    // bound, then the refusals (each counted with 64 bytes of bookkeeping).
    assert!(peak < 2 * bound, "the outbox reached {peak} bytes");
    let (ok, busy) = reader.await.expect("the reader saw every answer");
    let stats = peer.stats();
    assert_eq!(stats.unanswered_slow_reader, 0, "nothing went unanswered");
    assert_eq!(busy, stats.busy_slow_reader, "every refusal is counted");
    assert_eq!(ok + busy, u64::from(total));
    // At least what the link and the outbox hold ran, and the rule refused the rest.
    // (Each 4 KiB answer counts its header and 64 bytes of bookkeeping too.)
    let held = (LINK_QUEUE + bound / ((4 << 10) + 128)) as u64;
    assert!(ok >= held && busy > 0, "ok {ok}, busy {busy}");
    assert_eq!(peer.outbox_bytes(), 0);
    assert!(
        alive_tasks() <= before,
        "the drainer ended with the backlog"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_waits_until_the_outbox_has_reached_the_link() {
    use futures_util::FutureExt;

    let (peer, driver, mut rx) = target(RpcConfig::default());
    let mut i = 0;
    while peer.outbox_len() < 3 {
        driver.packet(&ping(i, 1 << 10));
        i += 1;
    }
    let idle = peer.idle();
    tokio::pin!(idle);
    assert!(
        (&mut idle).now_or_never().is_none(),
        "answers still wait for the link"
    );
    let mut answers = Answers::default();
    let read = async {
        while answers.seen.len() < i as usize {
            answers.record(&rx.recv().await.expect("the link is up"));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::join!(idle, read)
    })
    .await
    .expect("idle once the peer has read everything");
    assert_eq!(peer.outbox_len(), 0);
    assert_eq!(answers.ok, u64::from(i));
}

/// As the issue found it: a `hail-link` client that sends PINGs over loopback TCP and
/// never reads (its event stream is never polled, so TCP backpressure fills the server's
/// link queue). The server's outbox stays bounded and the PINGs are refused `BUSY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_client_that_never_reads_is_refused_with_bounded_memory() {
    use hail_link::{Client, ClientConfig, LinkConfig, ServerConfig};
    use hail_rpc::{RpcServer, RpcServerEvent};

    let bound = 256 << 10;
    let (server, mut events) = RpcServer::listen(
        crate::support::localhost(),
        ServerConfig::default(),
        RpcConfig::builder().max_outbox_bytes(bound).build(),
    )
    .await
    .expect("listens");
    let config = ClientConfig::builder()
        .link(LinkConfig::builder().incoming_capacity(8).build().unwrap())
        .build()
        .unwrap();
    let (client, _never_read) = Client::connect(server.local_addr(), config, hail_wire::Binary)
        .await
        .expect("connects");
    let Some(RpcServerEvent::Connected { peer, .. }) = events.recv().await else {
        panic!("the first event is the connection")
    };
    let size = 16 << 10;
    let mut sent = 0u32;
    // Loopback buffers, the link queue and the client's few events hold a few MiB of
    // answers before the outbox fills (about 300 PINGs here); 40,000 are 640 MiB.
    while peer.stats().busy_slow_reader < 100 {
        assert!(sent < 40_000, "never refused: {:?}", peer.stats());
        client.send(ping(sent, size)).await.expect("the link is up");
        sent += 1;
        assert!(
            peer.outbox_bytes() <= 2 * bound + 64 * (size + 64),
            "outbox {} past its bound",
            peer.outbox_bytes()
        );
    }
    assert!(peer.is_connected(), "refused, not disconnected");
}

/// A link that counts what the peer keeps in a memory budget, as a `hail-link`
/// connection does ([`Outgoing::hold`]).
struct Budgeted(mpsc::Sender<Bytes>, hail_link::Budget);

impl Outgoing for Budgeted {
    fn send(
        &self,
        packet: Bytes,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), hail_rpc::LinkClosed>> + Send + '_>,
    > {
        Box::pin(async move { self.0.send(packet).await.map_err(|_| hail_rpc::LinkClosed) })
    }

    fn try_send(&self, packet: &Bytes) -> bool {
        self.0.try_send(packet.clone()).is_ok()
    }

    fn hold(&self) -> Option<hail_link::Hold> {
        Some(self.1.hold())
    }
}

/// Queued requests' arguments count in the link's memory budget while they wait, and
/// leave it as they run; one that would pass the peer's share of the budget is refused
/// `BUSY`; the link going down gives everything back.
#[tokio::test]
async fn queued_requests_count_in_the_link_budget() {
    const ARGS: usize = 10 * 1024;
    let budget = hail_link::Budget::new(1 << 20);
    let (peer, driver) = RpcPeer::new(RpcConfig::builder().max_concurrent_handlers(1).build());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = Arc::clone(&gate);
    peer.bind("wait", move |b: Vec<u8>| {
        let g = Arc::clone(&g);
        async move {
            g.acquire().await.expect("open").forget();
            Ok::<_, String>(b.len())
        }
    })
    .expect("binds");
    let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
    driver.connected(Arc::new(Budgeted(tx, budget.clone())));
    let request = |retcode: u32| {
        Packet::Request {
            retcode: RetCode(retcode),
            method: "wait".into(),
            args: postcard::to_allocvec(&vec![7u8; ARGS])
                .expect("encodes")
                .into(),
        }
        .to_bytes()
    };
    let args_len = postcard::to_allocvec(&vec![7u8; ARGS])
        .expect("encodes")
        .len();
    for r in 1..=4 {
        driver.packet(&request(r));
    }
    assert_eq!(peer.running_handlers(), 1);
    assert_eq!(peer.queued_requests(), 3);
    assert_eq!(
        budget.in_use(),
        3 * args_len,
        "the three queued requests' arguments"
    );
    gate.add_permits(4);
    for _ in 0..4 {
        let (_, s) = status(&rx.recv().await.expect("a reply"));
        assert_eq!(s, Status::OK);
    }
    peer.idle().await;
    assert_eq!(budget.in_use(), 0, "nothing kept once they ran");
    driver.packet(&request(5));
    driver.packet(&request(6));
    assert_eq!(budget.in_use(), args_len);
    // Past the peer's share of the budget (a quarter of 1 MiB): refused, not queued.
    let big = Packet::Request {
        retcode: RetCode(7),
        method: "wait".into(),
        args: postcard::to_allocvec(&vec![7u8; 300 * 1024])
            .expect("encodes")
            .into(),
    }
    .to_bytes();
    driver.packet(&big);
    assert_eq!(
        status(&rx.recv().await.expect("an answer")),
        (RetCode(7), Status::BUSY)
    );
    assert_eq!(peer.stats().busy, 1);
    assert_eq!(
        budget.in_use(),
        args_len,
        "the refused request holds nothing"
    );
    driver.disconnected(hail_rpc::Disconnect::Lost);
    assert_eq!(budget.in_use(), 0, "the link went down: nothing counted");
    assert_eq!(budget.stats().peak, 3 * args_len);
}
