//! Unit tests of [`Calls`]: retcodes, the in-flight limit, kept replies and their age.

use super::*;
use crate::method::Opcode;
use crate::proto::{test_builder as builder, test_config as config};

fn ok(b: &'static [u8]) -> (Status, Bytes) {
    (Status::OK, Bytes::from_static(b))
}

#[test]
fn retcodes_are_unique_and_in_flight_is_bounded() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    let rs: Vec<_> = (0..4)
        .map(|i| c.start(Opcode(1).into(), false, Some(i), (), t).unwrap())
        .collect();
    assert_eq!(rs, [RetCode(1), RetCode(2), RetCode(3), RetCode(4)]);
    assert_eq!(c.start(Opcode(1).into(), false, Some(9), (), t), None);
    let (s, b) = ok(b"x");
    let (woken, known) = c.on_reply(RetCode(2), s, b, t);
    assert!(known);
    assert_eq!(woken.unwrap(), (1, Ok(Bytes::from_static(b"x"))));
    assert_eq!(c.in_flight(), 3);
    assert_eq!(
        c.start(Opcode(1).into(), false, Some(5), (), t),
        Some(RetCode(5))
    );
}

#[test]
fn retcodes_wrap_and_skip_those_in_use() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    c.next = u32::MAX;
    assert_eq!(
        c.start("a".into(), false, Some(0), (), t),
        Some(RetCode(u32::MAX))
    );
    assert_eq!(c.start("a".into(), false, Some(0), (), t), Some(RetCode(0)));
    // Force a wrap onto codes still in use: 0 and u32::MAX are skipped.
    c.next = u32::MAX;
    assert_eq!(c.start("a".into(), false, Some(0), (), t), Some(RetCode(1)));
}

#[test]
fn statuses_become_errors() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&builder().max_in_flight(16).build());
    let cases = [
        (
            Status::UNKNOWN_METHOD,
            Bytes::new(),
            RpcError::UnknownMethod("m".into()),
        ),
        (
            Status::BAD_ARGUMENTS,
            packet::message_body("missing field"),
            RpcError::BadArguments("missing field".into()),
        ),
        (
            Status::HANDLER_ERROR,
            packet::message_body("nope"),
            RpcError::Handler("nope".into()),
        ),
        (
            Status::HANDLER_PANICKED,
            Bytes::new(),
            RpcError::HandlerPanicked,
        ),
        (Status::BUSY, Bytes::new(), RpcError::Busy),
        (
            Status(77),
            Bytes::new(),
            RpcError::UnknownStatus(Status(77)),
        ),
    ];
    for (i, (status, body, want)) in cases.into_iter().enumerate() {
        let r = c.start("m".into(), false, Some(i as u32), (), t).unwrap();
        let (woken, _) = c.on_reply(r, status, body, t);
        assert_eq!(woken.unwrap(), (i as u32, Err(want)));
    }
}

#[test]
fn unmatched_and_abandoned_replies_are_dropped() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    let r = c.start("m".into(), false, Some(1), (), t).unwrap();
    assert!(c.abandon(r));
    assert!(!c.abandon(r));
    let (s, b) = ok(b"late");
    assert_eq!(c.on_reply(r, s, b, t), (None, false));
    assert_eq!(c.kept(), 0);
}

#[test]
fn kept_replies_are_polled_once() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    let r = c.start("m".into(), true, None, (), t).unwrap();
    assert!(matches!(c.poll(r), PollState::InFlight));
    let (s, b) = ok(b"v");
    assert_eq!(c.on_reply(r, s, b, t), (None, true));
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.kept(), 1);
    assert!(matches!(c.poll(r), PollState::Ready(Ok(b)) if &b[..] == b"v"));
    assert!(matches!(c.poll(r), PollState::Unknown));
    assert!(matches!(c.poll(RetCode(999)), PollState::Unknown));
}

#[test]
fn a_waiting_poll_gets_the_reply_directly() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    let r = c.start("m".into(), true, None, (), t).unwrap();
    assert_eq!(c.expiry(r), Some(t + Duration::from_secs(10)));
    c.set_poller(r, 7).unwrap();
    assert_eq!(c.set_poller(r, 8), Err(8), "one poll at a time");
    c.clear_poller(r);
    c.set_poller(r, 9).unwrap();
    let (s, b) = ok(b"v");
    let (woken, _) = c.on_reply(r, s, b, t);
    assert_eq!(woken.unwrap().0, 9);
    assert_eq!(c.kept(), 0);
    // An `execute` call cannot be polled.
    let e = c.start("m".into(), false, Some(1), (), t).unwrap();
    assert_eq!(c.set_poller(e, 2), Err(2));
    assert!(matches!(c.poll(e), PollState::Unknown));
}

#[test]
fn kept_replies_are_evicted_by_count() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&builder().max_in_flight(16).build());
    let rs: Vec<_> = (0..5)
        .map(|_| c.start("m".into(), true, None, (), t).unwrap())
        .collect();
    for &r in &rs {
        let (s, b) = ok(b"v");
        c.on_reply(r, s, b, t);
    }
    assert_eq!(c.kept(), 3);
    assert!(matches!(c.poll(rs[0]), PollState::Expired));
    assert!(matches!(c.poll(rs[1]), PollState::Expired));
    assert!(matches!(c.poll(rs[2]), PollState::Ready(Ok(_))));
    let ready: Vec<_> = c.take_ready().into_iter().map(|(r, _)| r).collect();
    assert_eq!(ready, [rs[3], rs[4]]);
    assert!(c.take_ready().is_empty());
}

#[test]
fn kept_replies_are_evicted_by_bytes() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&builder().max_in_flight(16).max_kept_bytes(10).build());
    let rs: Vec<_> = (0..4)
        .map(|_| c.start("m".into(), true, None, (), t).unwrap())
        .collect();
    for (&r, body) in rs
        .iter()
        .zip([&b"1234"[..], b"5678", b"90", b"abcdefghijklmnop"])
    {
        c.on_reply(r, Status::OK, Bytes::copy_from_slice(body), t);
        assert!(
            c.kept_bytes() <= 10 || c.kept() == 1,
            "{} bytes",
            c.kept_bytes()
        );
    }
    // The 16-byte reply alone exceeds the limit: everything older was evicted for it.
    assert_eq!((c.kept(), c.kept_bytes()), (1, 16));
    assert!(matches!(c.poll(rs[0]), PollState::Expired));
    assert!(matches!(c.poll(rs[2]), PollState::Expired));
    assert!(matches!(c.poll(rs[3]), PollState::Ready(Ok(_))));
    assert_eq!(c.kept_bytes(), 0);
}

#[test]
fn kept_replies_and_unanswered_sends_expire_by_age() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    let answered = c.start("m".into(), true, None, (), t).unwrap();
    let unanswered = c.start("m".into(), true, None, (), t).unwrap();
    let polled = c
        .start("m".into(), true, None, (), t + Duration::from_secs(1))
        .unwrap();
    c.set_poller(polled, 42).unwrap();
    let (s, b) = ok(b"v");
    c.on_reply(answered, s, b, t + Duration::from_secs(2));

    assert!(c.expire(t + Duration::from_secs(9)).is_empty());
    assert_eq!(c.kept(), 1);
    // 10 s after its start the unanswered call expires and must be cancelled.
    let gone = c.expire(t + Duration::from_secs(10));
    assert_eq!(gone, [(unanswered, None)]);
    let gone = c.expire(t + Duration::from_secs(11));
    assert_eq!(gone, [(polled, Some(42))]);
    assert_eq!(c.kept(), 1, "kept 2 s after start, 10 s not yet over");
    assert!(c.expire(t + Duration::from_secs(12)).is_empty());
    assert_eq!(c.kept(), 0);
    assert!(matches!(c.poll(answered), PollState::Expired));
    assert!(matches!(c.poll(unanswered), PollState::Expired));
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn bookkeeping_stays_bounded_under_churn() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    for i in 0..10_000u32 {
        let r = c.start("m".into(), true, None, (), t).unwrap();
        let (s, b) = ok(b"v");
        c.on_reply(r, s, b, t);
        if i % 2 == 0 {
            assert!(matches!(c.poll(r), PollState::Ready(_)));
        }
    }
    assert!(c.kept_order.len() <= 2 * 3 + 17);
    assert!(c.expired.len() <= 12);
    assert!(c.keep_started.len() <= 2 * 4 + 17);
}

#[test]
fn connection_lost_ends_every_call_at_once() {
    let t = Instant::now();
    let mut c = Calls::<u32, ()>::new(&config());
    let a = c.start("m".into(), false, Some(1), (), t).unwrap();
    let b = c.start("m".into(), true, None, (), t).unwrap();
    let p = c.start("m".into(), true, None, (), t).unwrap();
    c.set_poller(p, 3).unwrap();
    let mut woken = c.connection_lost(t);
    woken.sort_by_key(|(w, _)| *w);
    assert_eq!(
        woken,
        [
            (1, Err(RpcError::ConnectionLost)),
            (3, Err(RpcError::ConnectionLost))
        ]
    );
    assert_eq!(c.in_flight(), 0);
    assert!(matches!(
        c.poll(b),
        PollState::Ready(Err(RpcError::ConnectionLost))
    ));
    assert!(matches!(c.poll(a), PollState::Unknown));
}

#[test]
fn guards_are_released_when_calls_leave_flight() {
    use std::rc::Rc;
    let t = Instant::now();
    let guard = Rc::new(());
    let mut c = Calls::<u32, Rc<()>>::new(&config());
    let a = c
        .start("m".into(), false, Some(1), guard.clone(), t)
        .unwrap();
    let b = c.start("m".into(), true, None, guard.clone(), t).unwrap();
    let _d = c.start("m".into(), true, None, guard.clone(), t).unwrap();
    assert_eq!(Rc::strong_count(&guard), 4);
    c.abandon(a);
    let (s, body) = ok(b"v");
    c.on_reply(b, s, body, t);
    assert_eq!(
        Rc::strong_count(&guard),
        2,
        "a kept reply is no longer in flight"
    );
    c.connection_lost(t);
    assert_eq!(Rc::strong_count(&guard), 1);
}

#[test]
fn next_expiry_names_the_oldest_kept_reply_or_unanswered_send() {
    let t = Instant::now();
    let s = Duration::from_secs;
    let mut c = Calls::<u32, ()>::new(&config());
    assert_eq!(c.next_expiry(), None);
    // An `execute` call does not age.
    let e = c.start("m".into(), false, Some(1), (), t).unwrap();
    assert_eq!(c.next_expiry(), None);
    let a = c.start("m".into(), true, None, (), t + s(1)).unwrap();
    let b = c.start("m".into(), true, None, (), t + s(2)).unwrap();
    assert_eq!(c.next_expiry(), Some(t + s(11)));
    // `a` answered at 5 s: kept until 15 s; `b` is now the oldest unanswered send.
    c.on_reply(a, Status::OK, Bytes::new(), t + s(5));
    assert_eq!(c.next_expiry(), Some(t + s(12)));
    assert!(c.abandon(b));
    assert_eq!(c.next_expiry(), Some(t + s(15)));
    assert!(matches!(c.poll(a), PollState::Ready(Ok(_))));
    assert_eq!(
        c.next_expiry(),
        None,
        "taken and abandoned calls leave no stale wake-up"
    );
    assert!(c.abandon(e));
}
