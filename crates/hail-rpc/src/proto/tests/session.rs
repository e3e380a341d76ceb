//! Unit tests of [`Session`]: packets in, packets and events out, link changes, timers.

use std::time::Duration;

use super::*;
use crate::proto::test_config as config;

/// Waiters are numbers, guards nothing, abort handles strings.
type S = Session<u32, (), &'static str>;

fn connected() -> S {
    let mut s = S::new(&config());
    s.handle_link_up();
    s
}

fn request(retcode: u32, method: &'static str) -> Bytes {
    Packet::Request {
        retcode: RetCode(retcode),
        method: method.into(),
        args: Bytes::new(),
    }
    .to_bytes()
}

fn cancel(retcode: u32) -> Bytes {
    Packet::Cancel {
        retcode: RetCode(retcode),
    }
    .to_bytes()
}

fn sent(s: &mut S) -> Vec<(Packet, bool)> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|t| (Packet::decode(&t.packet).unwrap(), t.droppable))
        .collect()
}

fn events(s: &mut S) -> Vec<SessionEvent<u32, &'static str>> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The ticket of the one `Run` event queued now.
fn run_ticket(s: &mut S) -> Ticket {
    match events(s).as_slice() {
        [SessionEvent::Run { ticket, .. }] => *ticket,
        other => panic!("expected one Run event, got {other:?}"),
    }
}

#[test]
fn session_dispatches_packets() {
    let t = Instant::now();
    let mut s = connected();
    let r = s
        .start_call("m".into(), b"", false, Some(5), (), t)
        .unwrap();
    assert!(
        matches!(&sent(&mut s)[..], [(Packet::Request { retcode, .. }, false)] if *retcode == r)
    );
    let reply = Packet::Reply {
        retcode: r,
        status: Status::OK,
        body: Bytes::from_static(b"ok"),
    };
    s.handle_packet(t, &reply.to_bytes()).unwrap();
    assert!(matches!(
        &events(&mut s)[..],
        [SessionEvent::Wake(5, Ok(b))] if &b[..] == b"ok"
    ));
    s.handle_packet(t, &reply.to_bytes()).unwrap();
    assert!(events(&mut s).is_empty());
    assert_eq!(s.stats().unmatched_replies, 1);

    s.handle_packet(t, &ping(9, b"abc")).unwrap();
    assert_eq!(
        sent(&mut s),
        [(
            Packet::Reply {
                retcode: RetCode(9),
                status: Status::OK,
                body: Bytes::from_static(b"abc")
            },
            false
        )],
        "ping is answered at once"
    );

    s.handle_packet(t, &request(1, "work")).unwrap();
    assert!(matches!(
        &events(&mut s)[..],
        [SessionEvent::Run { fresh: true, ticket, .. }] if ticket.retcode() == Some(RetCode(1))
    ));
    s.handle_packet(t, &request(2, "work")).unwrap();
    let _ = events(&mut s);
    s.handle_packet(t, &request(3, "work")).unwrap();
    s.handle_packet(t, &request(4, "work")).unwrap();
    assert!(
        events(&mut s).is_empty() && sent(&mut s).is_empty(),
        "queued"
    );
    s.handle_packet(t, &request(5, "work")).unwrap();
    assert!(
        matches!(
            &sent(&mut s)[..],
            [(
                Packet::Reply {
                    retcode: RetCode(5),
                    status: Status::BUSY,
                    ..
                },
                false
            )]
        ),
        "a full queue answers BUSY"
    );
    assert_eq!(s.stats().busy, 1);
    s.handle_packet(t, &cancel(1)).unwrap();
    // Its handle was never attached: nothing to abort; the slot goes to the queue's head.
    assert!(matches!(
        &events(&mut s)[..],
        [SessionEvent::Run { fresh: false, ticket, .. }] if ticket.retcode() == Some(RetCode(3))
    ));
    assert!(matches!(
        s.handle_packet(t, &[1, 99]),
        Err(PacketError::Malformed(_))
    ));
    assert_eq!(s.stats().malformed, 1);
    assert_eq!(s.stats().cancels, 1);
}

#[test]
fn a_finished_handler_is_answered_and_frees_its_slot() {
    let t = Instant::now();
    let mut s = connected();
    s.handle_packet(t, &request(1, "a")).unwrap();
    let first = run_ticket(&mut s);
    s.handle_packet(t, &request(2, "b")).unwrap();
    let _ = events(&mut s);
    s.handle_packet(t, &request(3, "c")).unwrap();
    assert!(s.handle_done(first, Answer::Failed("no".into())));
    assert_eq!(
        sent(&mut s),
        [(
            Packet::Reply {
                retcode: RetCode(1),
                status: Status::HANDLER_ERROR,
                body: packet::message_body("no"),
            },
            false
        )]
    );
    let third = run_ticket(&mut s);
    assert_eq!(third.retcode(), Some(RetCode(3)));
    // A second report of the same run answers nothing.
    assert!(!s.handle_done(first, Answer::Ok(Bytes::new())));
    assert!(sent(&mut s).is_empty());
    // Every answer has its status.
    for (answer, status) in [
        (Answer::Ok(Bytes::from_static(b"x")), Status::OK),
        (Answer::UnknownMethod, Status::UNKNOWN_METHOD),
        (Answer::BadArguments("bad".into()), Status::BAD_ARGUMENTS),
        (Answer::Panicked, Status::HANDLER_PANICKED),
    ] {
        let (got, body) = answer.clone().into_reply();
        assert_eq!(got, status, "{answer:?}");
        assert_eq!(
            body.is_empty(),
            matches!(answer, Answer::UnknownMethod | Answer::Panicked)
        );
    }
}

#[test]
fn a_cancel_aborts_the_attached_handler_and_no_reply_follows() {
    let t = Instant::now();
    let mut s = connected();
    s.handle_packet(t, &request(1, "a")).unwrap();
    let ticket = run_ticket(&mut s);
    assert_eq!(s.attach(ticket, "h1"), None);
    s.handle_packet(t, &cancel(1)).unwrap();
    assert!(matches!(&events(&mut s)[..], [SessionEvent::Abort("h1")]));
    assert!(!s.handle_done(ticket, Answer::Ok(Bytes::new())));
    assert!(sent(&mut s).is_empty());
    assert!(s.is_idle());
}

/// Found in review (stop 28): request R, cancel R, then R again (a caller may reuse a
/// retcode once it cancelled it). The first handler, cancelled but not stopped in time (it
/// ran inline, or its abort raced), ends after the second R started: its answer must not go
/// out as the second R's, its abort handle must not take the second's place, and the
/// second's answer must still be sent.
#[test]
fn a_retcode_reused_after_a_cancel_gets_its_own_answer() {
    let t = Instant::now();
    let mut s = connected();
    s.handle_packet(t, &request(1, "a")).unwrap();
    let first = run_ticket(&mut s);
    s.handle_packet(t, &cancel(1)).unwrap();
    let _ = events(&mut s);
    s.handle_packet(t, &request(1, "a")).unwrap();
    let second = run_ticket(&mut s);
    assert_ne!(
        first, second,
        "each run of a retcode has a ticket of its own"
    );
    // The first's late abort handle is handed back (to abort it), not kept for the second.
    assert_eq!(s.attach(first, "old"), Some("old"));
    assert_eq!(s.attach(second, "new"), None);
    assert!(
        !s.handle_done(first, Answer::Ok(Bytes::from_static(b"first"))),
        "the cancelled run's answer is not sent"
    );
    assert!(sent(&mut s).is_empty());
    assert!(s.handle_done(second, Answer::Ok(Bytes::from_static(b"second"))));
    let out = sent(&mut s);
    assert!(
        matches!(&out[..], [(Packet::Reply { retcode: RetCode(1), body, .. }, _)] if &body[..] == b"second"),
        "{out:?}"
    );
    assert!(s.is_idle());
}

#[test]
fn a_lost_link_ends_calls_aborts_handlers_and_makes_tickets_stale() {
    let t = Instant::now();
    let mut s = connected();
    let waited = s
        .start_call("m".into(), b"", false, Some(7), (), t)
        .unwrap();
    let kept = s.start_call("m".into(), b"", true, None, (), t).unwrap();
    s.handle_packet(t, &request(1, "a")).unwrap();
    let running = run_ticket(&mut s);
    assert_eq!(s.attach(running, "h"), None);
    s.handle_packet(t, &request(2, "b")).unwrap();
    // Not taken before the link drops: dropped with it.
    let _ = sent(&mut s);
    assert!(!s.is_idle() && s.is_serving());

    s.handle_link_down(Disconnect::Lost, t);
    let ev = events(&mut s);
    assert!(
        matches!(
            &ev[..],
            [
                SessionEvent::Wake(7, Err(RpcError::ConnectionLost)),
                SessionEvent::Abort("h")
            ]
        ),
        "{ev:?}"
    );
    assert!(s.is_idle());
    assert!(matches!(
        s.poll_call(kept),
        PollState::Ready(Err(RpcError::ConnectionLost))
    ));
    assert!(!s.abandon(waited));
    // What the old connection's handler reports later is ignored, even after a reconnect.
    s.handle_link_up();
    assert!(!s.handle_done(running, Answer::Ok(Bytes::new())));
    assert_eq!(
        s.attach(running, "late"),
        Some("late"),
        "a stale handler is aborted"
    );
    assert!(sent(&mut s).is_empty());
}

#[test]
fn nothing_goes_out_without_a_link_and_calls_say_why() {
    let t = Instant::now();
    let mut s = S::new(&config());
    assert_eq!(s.check_connected(), Err(RpcError::NotConnected));
    assert_eq!(
        s.start_call("m".into(), b"", false, None, (), t),
        Err(RpcError::NotConnected)
    );
    assert_eq!(s.notify(&"n".into(), b""), Err(RpcError::NotConnected));
    // A stray ping while down is not answered.
    s.handle_packet(t, &ping(1, b"")).unwrap();
    assert!(sent(&mut s).is_empty());
    s.handle_link_down(Disconnect::AuthFailed, t);
    assert_eq!(
        s.start_call("m".into(), b"", true, None, (), t),
        Err(RpcError::AuthFailed)
    );
    s.handle_link_up();
    s.notify(&"n".into(), b"\x01").unwrap();
    assert_eq!(
        sent(&mut s),
        [(
            Packet::Notification {
                method: "n".into(),
                args: Bytes::from_static(b"\x01")
            },
            false
        )]
    );
    // The in-flight limit.
    for _ in 0..4 {
        s.start_call("m".into(), b"", false, None, (), t).unwrap();
    }
    assert_eq!(
        s.start_call("m".into(), b"", false, None, (), t),
        Err(RpcError::Busy)
    );
    // Ended: nothing will reconnect the session, and calls say it is stale.
    s.handle_link_down(Disconnect::Ended, t);
    assert_eq!(s.check_connected(), Err(RpcError::Stale));
    assert_eq!(s.notify(&"n".into(), b""), Err(RpcError::Stale));
    assert_eq!(
        s.start_call("m".into(), b"", true, None, (), t),
        Err(RpcError::Stale)
    );
}

#[test]
fn timeouts_expire_sends_with_a_droppable_cancel_and_wake_their_poll() {
    let t = Instant::now();
    let s10 = Duration::from_secs(10);
    let mut s = connected();
    assert_eq!(s.poll_timeout(), None);
    let polled = s.start_call("m".into(), b"", true, None, (), t).unwrap();
    let later = s
        .start_call("m".into(), b"", true, None, (), t + Duration::from_secs(1))
        .unwrap();
    let _ = sent(&mut s);
    s.set_poller(polled, 3).unwrap();
    assert_eq!(s.expiry(polled), Some(t + s10));
    assert_eq!(s.poll_timeout(), Some(t + s10));
    // Early: nothing happens.
    s.handle_timeout(t + Duration::from_secs(9));
    assert!(sent(&mut s).is_empty() && events(&mut s).is_empty());
    s.handle_timeout(t + s10);
    assert_eq!(sent(&mut s), [(Packet::Cancel { retcode: polled }, true)]);
    assert!(matches!(
        &events(&mut s)[..],
        [SessionEvent::Wake(3, Err(RpcError::Expired))]
    ));
    assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(11)));
    assert!(matches!(s.poll_call(polled), PollState::Expired));
    // Cancelling and flushing.
    assert!(s.flush(later));
    assert_eq!(sent(&mut s), [(Packet::Cancel { retcode: later }, true)]);
    assert!(!s.flush(later));
    assert!(!s.cancel(later));
    assert_eq!(s.poll_timeout(), None);
    assert!(s.take_ready().is_empty());
    s.clear_poller(polled);
}

fn ping(retcode: u32, args: &'static [u8]) -> Bytes {
    Packet::Request {
        retcode: RetCode(retcode),
        method: Opcode::PING.into(),
        args: Bytes::from_static(args),
    }
    .to_bytes()
}

fn reply(retcode: u32, status: Status, body: &'static [u8]) -> (Packet, bool) {
    (
        Packet::Reply {
            retcode: RetCode(retcode),
            status,
            body: Bytes::from_static(body),
        },
        false,
    )
}

#[test]
fn a_backed_up_outbox_refuses_requests_busy_then_unanswered() {
    let t = Instant::now();
    let max = config().max_outbox_bytes();
    let mut s = connected();
    s.set_outbox_bytes(max - 1);
    assert!(!s.is_backed_up());
    s.handle_packet(t, &request(1, "work")).unwrap();
    let ticket = run_ticket(&mut s);

    s.set_outbox_bytes(max);
    assert!(s.is_backed_up());
    s.handle_packet(t, &request(2, "work")).unwrap();
    s.handle_packet(t, &ping(3, b"abc")).unwrap();
    assert_eq!(
        sent(&mut s),
        [reply(2, Status::BUSY, b""), reply(3, Status::BUSY, b"")],
        "user methods and PING alike are refused, without running"
    );
    assert!(events(&mut s).is_empty());
    assert_eq!(s.stats().busy_slow_reader, 2);
    assert_eq!(s.stats().busy, 0, "the handler queue was not full");
    // What was accepted is answered: a running handler's reply still goes out.
    assert!(s.handle_done(ticket, Answer::Ok(Bytes::from_static(b"r"))));
    assert_eq!(sent(&mut s), [reply(1, Status::OK, b"r")]);
    // Notifications produce no answer, so they still run.
    let note = Packet::Notification {
        method: "n".into(),
        args: Bytes::new(),
    };
    s.handle_packet(t, &note.to_bytes()).unwrap();
    assert!(matches!(&events(&mut s)[..], [SessionEvent::Run { .. }]));

    s.set_outbox_bytes(2 * max);
    s.handle_packet(t, &request(4, "work")).unwrap();
    s.handle_packet(t, &ping(5, b"")).unwrap();
    assert!(sent(&mut s).is_empty() && events(&mut s).is_empty());
    assert_eq!(s.stats().unanswered_slow_reader, 2);
    assert_eq!(s.stats().busy_slow_reader, 2);

    // Served again once the peer has read.
    s.set_outbox_bytes(max - 1);
    s.handle_packet(t, &ping(6, b"x")).unwrap();
    assert_eq!(sent(&mut s), [reply(6, Status::OK, b"x")]);
    // A new link starts with an empty outbox.
    s.set_outbox_bytes(2 * max);
    s.handle_link_down(Disconnect::Lost, t);
    let _ = events(&mut s);
    s.handle_link_up();
    assert!(!s.is_backed_up());
}

#[test]
fn ping_takes_a_handler_slot_like_any_method() {
    let t = Instant::now();
    let mut s = connected();
    s.handle_packet(t, &request(1, "work")).unwrap();
    let first = run_ticket(&mut s);
    s.handle_packet(t, &request(2, "work")).unwrap();
    let second = run_ticket(&mut s);
    // Both slots taken: PING waits in the queue like a request would.
    s.handle_packet(t, &ping(3, b"p")).unwrap();
    s.handle_packet(t, &request(4, "work")).unwrap();
    assert!(sent(&mut s).is_empty() && events(&mut s).is_empty());
    assert_eq!(s.serve().queued(), 2);
    // And the queue limit counts it: the next is refused.
    s.handle_packet(t, &ping(5, b"")).unwrap();
    assert_eq!(sent(&mut s), [reply(5, Status::BUSY, b"")]);
    assert_eq!(s.stats().busy, 1);
    // A slot frees: the PING is answered at once and the slot goes on to the next job.
    s.handle_done(first, Answer::Ok(Bytes::new()));
    assert_eq!(
        sent(&mut s),
        [reply(3, Status::OK, b"p"), reply(1, Status::OK, b"")]
    );
    let fourth = run_ticket(&mut s);
    assert_eq!(fourth.retcode(), Some(RetCode(4)));
    assert_eq!(s.serve().running(), 2);
    assert_eq!(s.serve().queued(), 0);

    // A queued request that reaches its slot while the peer is backed up is answered
    // BUSY, not run.
    s.handle_packet(t, &request(6, "work")).unwrap();
    s.set_outbox_bytes(config().max_outbox_bytes());
    s.handle_done(second, Answer::Ok(Bytes::new()));
    assert_eq!(
        sent(&mut s),
        [reply(6, Status::BUSY, b""), reply(2, Status::OK, b"")]
    );
    assert!(events(&mut s).is_empty());
    assert_eq!(s.stats().busy_slow_reader, 1);
    assert_eq!(s.serve().running(), 1);
}

#[test]
fn a_packet_is_kept_in_an_allocation_of_its_own_length() {
    // Packets wait in outboxes by the hundred thousand when a peer does not read: each
    // must cost its length (and the allocator's rounding), not a spare buffer and a
    // count of owners besides.
    let t = Instant::now();
    let mut s = connected();
    s.start_call("m".into(), b"some arguments", false, Some(5), (), t)
        .unwrap();
    let packet = s.poll_transmit().expect("the request").packet;
    let len = packet.len();
    let buf = packet.try_into_mut().expect("the one owner");
    assert_eq!(buf.capacity(), len, "no room to spare");
}
