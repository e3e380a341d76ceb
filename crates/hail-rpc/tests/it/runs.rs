//! Packets fed in runs (`PeerDriver::packets`, what the link adapters do with each batch
//! the link delivers): the session is locked once per run rather than once per packet,
//! and every packet gets what it would get fed alone with `PeerDriver::packet`: the same
//! answers, the same refusals, the same counters and bounds.

use std::time::Duration;

use bytes::Bytes;
use hail_rpc::{Packet, RpcConfig, Status};

use crate::outbox::{echo, ping, status, target, target_with};

#[tokio::test(start_paused = true)]
async fn a_run_past_the_handler_limit_is_served_as_packets_one_by_one_are() {
    // Two slots and no queue: fed one by one, each inline handler ends before the next
    // packet comes, so nothing is refused. A run must not admit more than the free slots
    // before the handlers of its first packets have run.
    let config = RpcConfig::builder()
        .max_concurrent_handlers(2)
        .max_queued_requests(0)
        .build();
    let (peer, driver, mut rx) = target_with(config, 256);
    let run: Vec<Bytes> = (0..40)
        .map(|i| if i % 3 == 0 { ping(i, 8) } else { echo(i, 8) })
        .collect();
    driver.packets(&run);
    let mut answered = 0;
    while let Ok(reply) = rx.try_recv() {
        assert_eq!(status(&reply).1, Status::OK);
        answered += 1;
    }
    assert_eq!(answered, 40, "every request answered at once");
    assert_eq!(peer.stats().busy, 0, "{:?}", peer.stats());
    assert_eq!(peer.running_handlers() + peer.queued_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_run_on_a_backed_up_link_keeps_the_outbox_within_its_bound() {
    // The link takes 16 packets and nobody reads it: answers fill the outbox, then
    // requests are refused BUSY, then dropped unanswered. Fed in runs, the outbox holds
    // at most twice its bound, the replies of one run's handlers (at most the handler
    // limit, 4 here) and a refusal; PINGs (answered by the session, no handler slot) are
    // taken one by one once the link is full, as they would be alone.
    let bound = 4 << 10;
    let handlers = 4;
    let config = RpcConfig::builder()
        .max_outbox_bytes(bound)
        .max_concurrent_handlers(handlers)
        .build();
    let (peer, driver, mut rx) = target(config);
    let total = 2_000u32;
    let packets: Vec<Bytes> = (0..total)
        .map(|i| {
            if i < 100 || i % 2 == 1 {
                ping(i, 300)
            } else {
                echo(i, 100)
            }
        })
        .collect();
    for run in packets.chunks(100) {
        driver.packets(run);
        // A reply here is at most 320 bytes with its header; each counts 64 more for its
        // place and allocation.
        assert!(
            peer.outbox_bytes() <= 2 * bound + (handlers + 1) * (320 + 64),
            "the outbox passed its bound: {} bytes",
            peer.outbox_bytes()
        );
    }
    let stats = peer.stats();
    assert!(
        stats.busy_slow_reader > 0 && stats.unanswered_slow_reader > 0,
        "{stats:?}"
    );
    // The peer reads at last: every request not counted as unanswered gets its answer,
    // once.
    let mut seen = std::collections::HashSet::new();
    let mut busy = 0;
    while peer.outbox_len() > 0 || !rx.is_empty() {
        let (retcode, status) = status(&rx.recv().await.expect("the link is up"));
        assert!(seen.insert(retcode), "{retcode} answered twice");
        busy += u64::from(status == Status::BUSY);
    }
    let stats = peer.stats();
    assert_eq!(busy, stats.busy_slow_reader);
    assert_eq!(
        seen.len() as u64 + stats.unanswered_slow_reader,
        u64::from(total)
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_of_replies_wakes_every_caller_with_its_own_result() {
    let (peer, driver, mut rx) = target_with(RpcConfig::default(), 256);
    let calls: Vec<_> = (0..10u32)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move {
                peer.execute::<_, u32>("double", i, Duration::from_secs(5))
                    .await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for _ in 0..10 {
        let request = rx.recv().await.expect("the link is up");
        let Ok(Packet::Request { retcode, args, .. }) = Packet::decode(&request) else {
            panic!("expected a request");
        };
        let i: u32 = postcard::from_bytes(&args).expect("a u32");
        let body = postcard::to_allocvec(&(2 * i)).expect("encodes");
        replies.push(
            Packet::Reply {
                retcode,
                status: Status::OK,
                body: body.into(),
            }
            .to_bytes(),
        );
    }
    replies.reverse();
    driver.packets(&replies);
    for (i, call) in (0u32..).zip(calls) {
        assert_eq!(call.await.expect("the caller ends"), Ok(2 * i));
    }
    assert_eq!(peer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_in_the_run_of_its_request_suppresses_its_answer_alone() {
    // A request, its cancel, and another request in one run (a batch the link delivered):
    // the cancelled one is counted as cancelled and not answered, the next one is, and no
    // handler slot stays taken. (No order binds replies: the PING's, the session's own,
    // goes out before the run's handlers' answers.)
    let (peer, driver, mut rx) = target(RpcConfig::default());
    let cancel = Packet::Cancel {
        retcode: hail_rpc::RetCode(1),
    }
    .to_bytes();
    driver.packets([echo(1, 8), cancel, echo(2, 8), ping(3, 8)]);
    let mut answered = Vec::new();
    while let Ok(reply) = rx.try_recv() {
        answered.push(status(&reply));
    }
    answered.sort_by_key(|(r, _)| r.0);
    assert_eq!(
        answered,
        [
            (hail_rpc::RetCode(2), Status::OK),
            (hail_rpc::RetCode(3), Status::OK)
        ]
    );
    assert_eq!(peer.stats().cancels, 1, "{:?}", peer.stats());
    assert_eq!(peer.running_handlers() + peer.queued_requests(), 0);
}
