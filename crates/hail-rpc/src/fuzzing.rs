//! Entry point for the cargo-fuzz target `rpc_session` (feature `fuzzing`; not a stable API).
//!
//! [`session`] drives a [`Session`] with small limits through arbitrary bytes, cut into
//! records `[op, len, bytes...]` that play one connection's life:
//!
//! | `op % 8` | input |
//! |---|---|
//! | 0 | the next `len` bytes are one packet from the peer (`handle_packet`) |
//! | 1 | a call of ours to `Opcode(len)`: a `send` when `len` is odd, else an `execute` |
//! | 2 | the `len % n`-th handler the session started ends, with an answer picked by `len` |
//! | 3 | `len` seconds pass; the timeout is handled if due |
//! | 4 | the link drops (`AuthFailed` when `len` is odd) and comes back |
//! | 5 | a caller gives up on one of our recent calls: cancel, flush, or a poll that waits |
//! | 6 | a notification of ours |
//! | 7 | the kept replies are taken (`len` even), or the IO layer's outbox holds `len × 16` bytes (`len` odd; the bound is 1 KiB) |
//!
//! After each record, what the session says is taken and checked; a violation panics:
//! every packet it sends decodes (and is droppable exactly when it is a cancel), nothing
//! goes out while the link is down, each waiter is woken at most once, a report with a
//! stale ticket changes nothing, after `handle_timeout(now)` the next timeout lies after
//! `now`, whatever arrives the tables stay within their limits (calls in flight, kept
//! replies and their bytes, running and queued handlers and queued argument bytes), and a
//! request from the peer that arrives while the outbox is full starts no handler.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::RpcConfig;
use crate::method::{Opcode, RetCode};
use crate::packet::Packet;
use crate::proto::{Answer, Disconnect, Session, SessionEvent, Ticket};

const MAX_IN_FLIGHT: usize = 8;
const MAX_KEPT: usize = 4;
const MAX_RUNNING: usize = 3;
const MAX_QUEUED: usize = 5;
const MAX_KEPT_BYTES: usize = 64;
const MAX_QUEUED_BYTES: usize = 64;
const MAX_OUTBOX_BYTES: usize = 1024;
/// Recent retcodes of ours kept for op 5.
const RECENT: usize = 16;

/// What a fuzz input produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Packets from the peer that decoded.
    pub packets: u32,
    /// Packets the session sent.
    pub transmits: u32,
    /// Handlers it started.
    pub runs: u32,
    /// Callers it woke.
    pub wakes: u32,
    /// Handlers it aborted.
    pub aborts: u32,
}

/// Waiters are numbers, guards nothing, abort handles the ticket they abort.
type FuzzSession = Session<u32, (), Ticket>;

struct Driver {
    session: FuzzSession,
    now: Instant,
    /// Link changes so far: a ticket of another generation is stale.
    generation: u32,
    /// Handlers started and not yet reported, with their generation.
    running: Vec<(Ticket, u32)>,
    recent: Vec<RetCode>,
    next_waiter: u32,
    woken: HashSet<u32>,
    /// The packet being handled is a request that came while the outbox was full: it may
    /// start no handler.
    refusing: bool,
    out: Outcome,
}

/// Runs one fuzz input; see the [module docs](self) for the records and the checks.
pub fn session(data: &[u8]) -> Outcome {
    let config = RpcConfig::builder()
        .max_in_flight(MAX_IN_FLIGHT)
        .max_kept_replies(MAX_KEPT)
        .keep_replies_for(Duration::from_secs(30))
        .max_concurrent_handlers(MAX_RUNNING)
        .max_queued_requests(MAX_QUEUED)
        .max_kept_bytes(MAX_KEPT_BYTES)
        .max_queued_bytes(MAX_QUEUED_BYTES)
        .max_outbox_bytes(MAX_OUTBOX_BYTES)
        .build();
    let mut d = Driver {
        session: Session::new(&config),
        now: Instant::now(),
        generation: 0,
        running: Vec::new(),
        recent: Vec::new(),
        next_waiter: 0,
        woken: HashSet::new(),
        refusing: false,
        out: Outcome::default(),
    };
    d.session.handle_link_up();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        rest = tail;
        if op % 8 == 0 {
            let (packet, after) = tail.split_at(usize::from(*len).min(tail.len()));
            rest = after;
            // Notifications get no answer, so they still run.
            d.refusing = d.session.is_backed_up()
                && matches!(Packet::decode(packet), Ok(Packet::Request { .. }));
            if d.session.handle_packet(d.now, packet).is_ok() {
                d.out.packets += 1;
            }
        } else {
            d.step(op % 8, *len);
        }
        d.take_output();
        d.refusing = false;
        d.check();
    }
    d.out
}

impl Driver {
    fn waiter(&mut self) -> u32 {
        self.next_waiter += 1;
        self.next_waiter
    }

    fn step(&mut self, op: u8, len: u8) {
        let len_usize = usize::from(len);
        match op {
            1 => {
                let keep = len % 2 == 1;
                let waiter = (!keep).then(|| self.waiter());
                let args = [len; 3];
                if let Ok(r) = self.session.start_call(
                    Opcode(u16::from(len)).into(),
                    &args,
                    keep,
                    waiter,
                    (),
                    self.now,
                ) {
                    if self.recent.len() == RECENT {
                        self.recent.remove(0);
                    }
                    self.recent.push(r);
                }
            }
            2 if !self.running.is_empty() => {
                let (ticket, generation) = self.running.swap_remove(len_usize % self.running.len());
                let answer = match len % 5 {
                    0 => Answer::Ok(Bytes::from(vec![len; len_usize % 40])),
                    1 => Answer::UnknownMethod,
                    2 => Answer::BadArguments("bad".into()),
                    3 => Answer::Failed("failed".into()),
                    _ => Answer::Panicked,
                };
                let answered = self.session.handle_done(ticket, answer);
                if generation != self.generation {
                    assert!(!answered, "a stale ticket was answered");
                    assert!(self.session.poll_transmit().is_none());
                    assert!(self.session.poll_event().is_none());
                }
            }
            3 => {
                self.now += Duration::from_secs(u64::from(len));
                if self.session.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.session.handle_timeout(self.now);
                    assert!(
                        self.session.poll_timeout().is_none_or(|t| t > self.now),
                        "handle_timeout left work due"
                    );
                }
            }
            4 => {
                let why = if len % 2 == 1 {
                    Disconnect::AuthFailed
                } else {
                    Disconnect::Lost
                };
                self.session.handle_link_down(why, self.now);
                self.generation += 1;
                self.take_output();
                assert!(
                    self.session.is_idle(),
                    "a lost link leaves calls or handlers"
                );
                assert!(self.session.check_connected().is_err());
                self.session.handle_link_up();
                self.generation += 1;
            }
            5 if !self.recent.is_empty() => {
                let r = self.recent[len_usize % self.recent.len()];
                match len % 3 {
                    0 => {
                        self.session.cancel(r);
                    }
                    1 => {
                        self.session.flush(r);
                    }
                    _ => {
                        let _ = self.session.poll_call(r);
                        let w = self.waiter();
                        let _ = self.session.set_poller(r, w);
                    }
                }
            }
            6 => {
                let _ = self.session.notify(&"note".into(), &[len]);
            }
            7 if len % 2 == 1 => self.session.set_outbox_bytes(len_usize * 16),
            7 => {
                let _ = self.session.take_ready();
            }
            _ => {}
        }
    }

    /// Takes and checks what the session has to say.
    fn take_output(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            assert!(
                self.session.is_connected(),
                "a packet queued without a link"
            );
            let packet = Packet::decode(&t.packet).expect("the session sends valid packets");
            assert_eq!(t.droppable, matches!(packet, Packet::Cancel { .. }));
            self.out.transmits += 1;
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Run { ticket, .. } => {
                    assert!(
                        !self.refusing,
                        "a handler started while the outbox was full"
                    );
                    self.out.runs += 1;
                    // Given back at once: the handler must be aborted now.
                    if self.session.attach(ticket, ticket).is_some() {
                        self.out.aborts += 1;
                    }
                    self.running.push((ticket, self.generation));
                }
                SessionEvent::Wake(w, _) => {
                    self.out.wakes += 1;
                    assert!(self.woken.insert(w), "waiter {w} woken twice");
                }
                SessionEvent::Abort(_) => self.out.aborts += 1,
            }
        }
    }

    /// The limits hold.
    fn check(&self) {
        let calls = self.session.calls();
        let serve = self.session.serve();
        assert!(calls.in_flight() <= MAX_IN_FLIGHT);
        assert!(calls.kept() <= MAX_KEPT);
        assert!(calls.kept_bytes() <= MAX_KEPT_BYTES || calls.kept() == 1);
        assert!(serve.running() <= MAX_RUNNING);
        assert!(serve.queued() <= MAX_QUEUED);
        assert!(serve.queued_bytes() <= MAX_QUEUED_BYTES);
        let live = self
            .running
            .iter()
            .filter(|(_, g)| *g == self.generation)
            .count();
        assert!(serve.running() <= live, "a slot is held by no handler");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(op: u8, bytes: &[u8]) -> Vec<u8> {
        let mut r = vec![op, bytes.len() as u8];
        r.extend_from_slice(bytes);
        r
    }

    #[test]
    fn a_conversation_runs_answers_and_expires() {
        let request = |r: u32| {
            Packet::Request {
                retcode: RetCode(r),
                method: "m".into(),
                args: Bytes::new(),
            }
            .to_bytes()
        };
        let mut input = Vec::new();
        for r in 1..=5 {
            input.extend(record(0, &request(r)));
        }
        input.extend([2, 0]); // a handler ends: answered, a queued one starts
        input.extend([1, 1]); // a send of ours
        input.extend([1, 2]); // an execute of ours
        input.extend([6, 0]); // a notification
        input.extend([3, 31]); // 31 s: the send expires, with a cancel
        input.extend([4, 0]); // the link drops: the execute ends, handlers are aborted
        input.extend([2, 0]); // a stale handler ends: nothing happens
        let out = session(&input);
        assert_eq!(out.packets, 5);
        assert_eq!(out.runs, 4, "three at once, one more when a slot freed");
        // Reply, send, execute, notification, cancel.
        assert_eq!(out.transmits, 5);
        assert_eq!(out.wakes, 1, "the execute ends with ConnectionLost");
        assert_eq!(out.aborts, 3, "the three running handlers");
    }

    #[test]
    fn a_full_outbox_refuses_then_drops_requests() {
        let ping = |r: u32| {
            Packet::Request {
                retcode: RetCode(r),
                method: Opcode::PING.into(),
                args: Bytes::new(),
            }
            .to_bytes()
        };
        let mut input = Vec::new();
        input.extend(record(0, &ping(1))); // answered
        input.extend([7, 65]); // 1040 bytes wait: full
        input.extend(record(0, &ping(2))); // BUSY
        input.extend([7, 129]); // 2064 bytes: twice full
        input.extend(record(0, &ping(3))); // dropped
        input.extend([7, 1]); // 16 bytes: served again
        input.extend(record(0, &ping(4))); // answered
        let out = session(&input);
        assert_eq!(out.packets, 4);
        assert_eq!(out.transmits, 3);
        assert_eq!(out.runs, 0, "PING needs no handler");
    }

    #[test]
    fn garbage_is_survived() {
        let noise: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let out = session(&noise);
        assert!(out.transmits <= 4096);
        assert_eq!(session(&[]), Outcome::default());
    }

    proptest::proptest! {
        /// The fuzz target's checks, on random inputs in every test run (the fuzzer goes
        /// further; this keeps the checks honest without it).
        #[test]
        fn random_inputs_keep_every_check(data in proptest::collection::vec(0u8..=255, 0..2048)) {
            let _ = session(&data);
        }
    }
}
