//! `hail_rpc::Packet::decode` and the sans-IO dispatcher (`hail_rpc::proto::Session`).
//!
//! Input: records `[op, len, bytes...]`, each driving one step of a connection with small
//! limits: op 0 feeds `len` bytes as a packet from the peer, 1 starts a call of ours (a
//! `send` when `len` is odd), 2 finishes the `len % n`-th running handler, 3 lets `len`
//! seconds pass and applies the age limits, 4 drops the connection.
//!
//! Checked: every packet that decodes encodes to bytes that decode to the same packet;
//! nothing panics; and whatever arrives, the tables stay within their limits (calls in
//! flight, kept replies and their bytes, running and queued handlers and the queued
//! argument bytes), so memory is bounded.

#![no_main]

use std::time::{Duration, Instant};

use hail_rpc::proto::{Action, Job, Session};
use hail_rpc::{Opcode, Packet, RpcConfig};
use libfuzzer_sys::fuzz_target;

const MAX_IN_FLIGHT: usize = 8;
const MAX_KEPT: usize = 4;
const MAX_RUNNING: usize = 3;
const MAX_QUEUED: usize = 5;
const MAX_KEPT_BYTES: usize = 64;
const MAX_QUEUED_BYTES: usize = 64;

fuzz_target!(|data: &[u8]| {
    // The decoder alone, on the whole input.
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(
            Packet::decode(&p.to_bytes()).expect("re-encoded packet decodes"),
            p
        );
    }

    let config = RpcConfig::default()
        .max_in_flight(MAX_IN_FLIGHT)
        .max_kept_replies(MAX_KEPT)
        .keep_replies_for(Duration::from_secs(30))
        .max_concurrent_handlers(MAX_RUNNING)
        .max_queued_requests(MAX_QUEUED)
        .max_kept_bytes(MAX_KEPT_BYTES)
        .max_queued_bytes(MAX_QUEUED_BYTES);
    let mut session = Session::<u32, (), u32>::new(&config);
    let mut now = Instant::now();
    let mut running: Vec<Option<hail_rpc::RetCode>> = Vec::new();
    let mut next_waiter = 0u32;

    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len);
        match op % 5 {
            0 => {
                let n = len.min(tail.len());
                let (packet, after) = tail.split_at(n);
                rest = after;
                match session.on_packet(packet, now) {
                    Ok(Action::Run(Job::Call { retcode, .. })) => running.push(Some(retcode)),
                    Ok(Action::Run(Job::Notify { .. })) => running.push(None),
                    Ok(Action::Abort(_, next)) => match next {
                        Some(Job::Call { retcode, .. }) => running.push(Some(retcode)),
                        Some(Job::Notify { .. }) => running.push(None),
                        None => {}
                    },
                    Ok(Action::Send(bytes)) => {
                        assert!(Packet::decode(&bytes).is_ok(), "we send only valid packets");
                    }
                    Ok(Action::Wake(..) | Action::Nothing) | Err(_) => {}
                }
                continue;
            }
            1 => {
                let keep = len % 2 == 1;
                let waiter = (!keep).then(|| {
                    next_waiter += 1;
                    next_waiter
                });
                let _ = session
                    .calls
                    .start(Opcode(len as u16).into(), keep, waiter, (), now);
            }
            2 if !running.is_empty() => {
                let i = len % running.len();
                match running.swap_remove(i) {
                    Some(r) => {
                        let (_, next) = session.serve.finish_call(r);
                        match next {
                            Some(Job::Call { retcode, .. }) => running.push(Some(retcode)),
                            Some(Job::Notify { .. }) => running.push(None),
                            None => {}
                        }
                    }
                    None => {
                        if let Some(job) = session.serve.finish_notification() {
                            match job {
                                Job::Call { retcode, .. } => running.push(Some(retcode)),
                                Job::Notify { .. } => running.push(None),
                            }
                        }
                    }
                }
            }
            3 => {
                now += Duration::from_secs(len as u64);
                let _ = session.calls.expire(now);
            }
            4 => {
                let _ = session.calls.connection_lost(now);
                let _ = session.serve.connection_lost();
                running.clear();
            }
            _ => {}
        }
        rest = tail;

        check(&session);
    }
    check(&session);
});

/// The limits hold.
fn check(session: &Session<u32, (), u32>) {
    assert!(session.calls.in_flight() <= MAX_IN_FLIGHT);
    assert!(session.calls.kept() <= MAX_KEPT);
    assert!(session.calls.kept_bytes() <= MAX_KEPT_BYTES || session.calls.kept() == 1);
    assert!(session.serve.running() <= MAX_RUNNING);
    assert!(session.serve.queued() <= MAX_QUEUED);
    assert!(session.serve.queued_bytes() <= MAX_QUEUED_BYTES);
}
