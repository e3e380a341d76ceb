//! The reader task: bytes from the socket, frames out of them, messages to the sink.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::{BufMut, Bytes};
use hail_wire::PayloadCodec;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{Phase, Shared, min_deadline, sleep_until_opt, wait_kill};
use crate::budget::{Budget, Charge, SMALL_HOLDER};
use crate::config::Heartbeat;
use crate::error::{CloseReason, ProtocolError};
use crate::events::Sink;
use crate::proto::{self, Control};
use crate::rx::{Announced, Next, Rx};
use crate::stream::ReadHalf;
use crate::timing::Liveness;

/// Most messages handed to the receiver in one go: 256.
const MAX_BATCH: usize = 256;

/// A delivered batch of at most this many bytes is not counted in the budget while it
/// waits for the receiver: 2 KiB. A trickle of small messages then costs no count per
/// batch; what such batches hold is bounded by the event channel's capacity (1024 events
/// by default, so at most 2 MiB per channel).
const UNCOUNTED_BATCH: usize = 2 * 1024;

/// The bytes of the receive buffer counted in the budget; given back on drop.
struct RxHeld<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl<'a> RxHeld<'a> {
    fn new(budget: &'a Budget, bytes: usize) -> Self {
        budget.take(bytes);
        Self { budget, bytes }
    }
}

impl Drop for RxHeld<'_> {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// Since when only the peer could make progress while the budget is held.
#[derive(Default)]
struct Stalls {
    /// A partial frame waits while reading is paused: since then.
    partial: Option<Instant>,
    /// A write waits while the budget is spent: since then, and the frames written then.
    write: Option<(Instant, u64)>,
}

/// True when a write waits for the peer to read while the budget is spent.
fn write_stuck(shared: &Shared) -> bool {
    shared.in_flight.load(Ordering::Relaxed) > 0 && shared.account.budget.is_spent()
}

/// When the stall time ends, if only the peer could make progress (`stuck`): counted from
/// when that began, or from the last written batch since.
fn stall_at(shared: &Shared, stuck: bool, stalled: &mut Option<(Instant, u64)>) -> Option<Instant> {
    if !stuck {
        *stalled = None;
        return None;
    }
    let written = shared.stats.frames_written.load(Ordering::Relaxed);
    let (since, mark) = stalled.get_or_insert_with(|| (Instant::now(), written));
    if *mark != written {
        (*since, *mark) = (Instant::now(), written);
    }
    Some(*since + shared.stall)
}

/// How a pause on the budget ended.
enum Paused {
    /// Bytes were released, the phase changed or a deadline passed: look again.
    Recheck,
    /// The connection is being killed.
    Killed,
    /// A partial frame or a write waited for the stall time.
    Stalled,
}

/// Waits while the connection is over its share or the budget is spent (reading nothing,
/// so TCP slows the peer down), until bytes are released, the phase changes, the linger
/// deadline passes or, while only the peer could make progress, the stall time passes
/// without progress. Only the peer can make progress when the connection holds a partial
/// frame and no message waits for the application (progress: a read, after which the
/// caller resets `stalls`), or when a write waits for the peer to read while the budget is
/// spent (progress: a written batch).
async fn pause(
    shared: &Shared,
    rx_held: usize,
    Announced { header, claimed }: Announced,
    phase: &mut watch::Receiver<Phase>,
    linger_at: Option<Instant>,
    stalls: &mut Stalls,
) -> Paused {
    let budget = &shared.account.budget;
    let waiter = budget.waiter();
    loop {
        let freed = waiter.freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if !shared.over_budget(rx_held, claimed) {
            return Paused::Recheck;
        }
        // Only a partial frame whose header is known (or that holds a reserve's worth) can
        // stall: a link judged large by a sealed record alone may be a burst of small
        // messages, paused past the reserve line but never closed for it.
        let known = header > 0 || rx_held >= SMALL_HOLDER;
        let partial = rx_held > 0 && known && shared.account.waiting_here() == 0;
        let partial_at = if partial {
            Some(*stalls.partial.get_or_insert_with(Instant::now) + shared.stall)
        } else {
            stalls.partial = None;
            None
        };
        let write_at = stall_at(shared, write_stuck(shared), &mut stalls.write);
        let stall_at = min_deadline(partial_at, write_at);
        if stall_at.is_some_and(|at| Instant::now() >= at) {
            return Paused::Stalled;
        }
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() == Phase::Kill {
                    return Paused::Killed;
                }
                return Paused::Recheck;
            }
            () = &mut freed => {}
            () = sleep_until_opt(min_deadline(stall_at, linger_at)) => {
                if linger_at.is_some_and(|at| Instant::now() >= at) {
                    return Paused::Recheck;
                }
            }
        }
    }
}

/// What a reader starts with, boxed: an `async fn`'s arguments are kept in its state
/// twice (as passed, and as the locals they are moved into), and a receiver's are a few
/// hundred bytes, for as long as the connection lives.
pub(super) struct Start<P: PayloadCodec> {
    pub(super) shared: Arc<Shared>,
    pub(super) rd: ReadHalf,
    pub(super) rx: Rx,
    pub(super) payload: P,
    pub(super) sink: Sink<P::Item>,
    pub(super) hb: Option<Heartbeat>,
    pub(super) linger: Duration,
    pub(super) gate: Option<oneshot::Receiver<()>>,
}

pub(super) async fn run<P: PayloadCodec>(start: Box<Start<P>>) {
    let Start {
        shared,
        mut rd,
        mut rx,
        payload,
        sink,
        hb,
        linger,
        gate,
    } = *start;
    // The owner announces the connection (e.g. the server's `Connected` event) first.
    if let Some(gate) = gate {
        let _ = gate.await;
    }
    let mut phase = shared.phase.subscribe();
    let mut live = hb.map(|h| Liveness::new(h, Instant::now().into_std()));
    let mut linger_at: Option<Instant> = None;
    let stats = &shared.stats;
    let budget = &shared.account.budget;
    // The bytes of `rx` counted in the budget: its partial frame. Counted once per read
    // (added) and once per decoded batch (moved to the batch, or given back).
    // A guard: an aborted reader gives them back too.
    let mut held = RxHeld::new(budget, rx.held());
    // Since when only the peer could make progress while the budget is held.
    let mut stalls = Stalls::default();
    let mut batch: Vec<P::Item> = Vec::new();
    // Message payloads cut from `rx` in runs (`Rx::next_run`), not yet decoded: empty
    // but after a frame the codec refused, when the rest of its run waits here for the
    // next batch (still counted as held).
    let mut run: VecDeque<Bytes> = VecDeque::new();
    let reason = 'run: loop {
        // Decode everything that is whole (up to a batch), then hand it over in one go:
        // one wake-up of the receiver per batch rather than per message.
        let mut failed = None;
        // A frame the codec refused: reported after the messages before it.
        let mut undecodable = None;
        while batch.len() < MAX_BATCH {
            let body = if let Some(body) = run.pop_front() {
                body
            } else {
                match rx.next_run(shared.hail, MAX_BATCH - batch.len(), &mut run) {
                    Ok(Some(Next::Run)) => continue,
                    Ok(Some(Next::Frame(frame))) if shared.hail => match proto::parse(frame) {
                        Ok(Control::Message(body)) => body,
                        Ok(Control::Heartbeat) => continue,
                        Ok(Control::Close(code)) => {
                            shared.begin_close(code.received_reason());
                            continue;
                        }
                        Ok(Control::Hello { .. } | Control::Welcome { .. }) => {
                            failed = Some(CloseReason::Protocol(ProtocolError::Unexpected(
                                "handshake",
                            )));
                            break;
                        }
                        Err(e) => {
                            failed = Some(CloseReason::Protocol(e));
                            break;
                        }
                    },
                    Ok(Some(Next::Frame(frame))) => frame,
                    Ok(None) => break,
                    Err(r) => {
                        failed = Some(r);
                        break;
                    }
                }
            };
            match payload.decode_payload(body) {
                Ok(msg) => batch.push(msg),
                Err(e) if e.is_payload_error() => {
                    stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn = %shared.id, error = %e, "undecodable message dropped");
                    undecodable = Some(e.to_string());
                    break;
                }
                Err(e) => {
                    failed = Some(CloseReason::wire(e));
                    break;
                }
            }
        }
        // What was cut from `rx` now belongs to the batch (until the receiver takes it),
        // or, with nothing to deliver, goes back to the budget.
        let now_held = rx.held() + run.iter().map(Bytes::len).sum::<usize>();
        if now_held > held.bytes {
            // Opening records only ever shrinks what is held; should that change, the
            // count must not go below what is given back later.
            budget.take(now_held - held.bytes);
        }
        let consumed = held.bytes.saturating_sub(now_held);
        held.bytes = now_held;
        let mut charge = None;
        if batch.is_empty() || consumed <= UNCOUNTED_BATCH {
            budget.give(consumed);
        } else {
            charge = Some(Charge::moved(&shared.account, consumed));
        }
        if !batch.is_empty() {
            stats
                .messages_received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            // A receiver that takes nothing must not keep a killed connection alive.
            let lost = tokio::select! {
                biased;
                lost = sink.deliver_all(&mut batch, &mut charge) => lost,
                () = wait_kill(&mut phase) => break 'run CloseReason::Closed,
            };
            if lost > 0 {
                stats.undelivered.fetch_add(lost, Ordering::Relaxed);
            }
            if let Some(l) = &mut live {
                // Time spent handing messages to a slow receiver is not the peer's silence.
                l.on_receive(Instant::now().into_std());
            }
            if failed.is_none() && undecodable.is_none() {
                // What was handed over may hold the share now (a layer above counts its
                // messages as it takes them, `Connection::hold`): decode no more of what
                // was read until there is room, as before a read. Its frames are whole,
                // so this wait never closes the connection as stalled.
                let announced = rx.announced();
                if shared.over_budget(held.bytes, announced.claimed) {
                    let mut fresh = Stalls::default();
                    // Boxed, as the other rare waits here: inline, each would add its
                    // state to every idle reader's.
                    if let Paused::Killed = Box::pin(pause(
                        &shared, held.bytes, announced, &mut phase, linger_at, &mut fresh,
                    ))
                    .await
                    {
                        break 'run CloseReason::Closed;
                    }
                    if let Some(l) = &mut live {
                        l.on_receive(Instant::now().into_std());
                    }
                }
                continue;
            }
        }
        if let Some(error) = undecodable {
            let delivered = tokio::select! {
                biased;
                ok = Box::pin(sink.undecodable(error)) => ok,
                () = wait_kill(&mut phase) => break 'run CloseReason::Closed,
            };
            if !delivered {
                stats.undelivered.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if let Some(r) = failed {
            break 'run r;
        }
        // Try the socket first; only a link with nothing to read waits, and it waits
        // without a read buffer (an idle link holds no receive memory).
        // A peer that never pauses must not hide a close or a kill from us.
        match *phase.borrow_and_update() {
            Phase::Open => {}
            Phase::Closing => {
                linger_at.get_or_insert(Instant::now() + linger);
            }
            Phase::Kill => break CloseReason::Closed,
        }
        if linger_at.is_some_and(|at| Instant::now() >= at) {
            break CloseReason::Closed;
        }
        let announced = rx.announced();
        if shared.over_budget(held.bytes, announced.claimed) {
            rx.shrink_if_idle();
            stats.rx_buffered.store(rx.buffered(), Ordering::Relaxed);
            let paused = Box::pin(pause(
                &shared,
                held.bytes,
                announced,
                &mut phase,
                linger_at,
                &mut stalls,
            ))
            .await;
            if let Some(l) = &mut live {
                // Time spent paused by the budget is not the peer's silence.
                l.on_receive(Instant::now().into_std());
            }
            match paused {
                Paused::Recheck => continue,
                Paused::Killed => break CloseReason::Closed,
                Paused::Stalled => {
                    budget.count_stall_close();
                    tracing::debug!(conn = %shared.id, held = held.bytes, "stalled on the memory budget (a partial frame or an unread send queue), closing");
                    break CloseReason::MemoryBudget;
                }
            }
        }
        rx.reserve_for_read();
        let limit = rx.read_limit(budget.in_reserve());
        match rd.try_read_buf(&mut (&mut rx.raw).limit(limit)) {
            Ok(0) => {
                // The peer finished its side. While we close gracefully (its close frame
                // or ours), our writer may still be writing what `send` accepted: the
                // peer keeps reading until our FIN, so let the writer finish first.
                if let Some(at) = linger_at {
                    let mut flushed = shared.flushed.subscribe();
                    tokio::select! {
                        biased;
                        _ = flushed.wait_for(|f| *f) => {}
                        () = wait_kill(&mut phase) => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                break CloseReason::PeerClosed;
            }
            Ok(n) => {
                // Counted before anything can yield: the budget is passed by at most one
                // read per worker thread.
                budget.take(n);
                held.bytes += n;
                stalls = Stalls::default();
                rx.after_read(n);
                stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(l) = &mut live {
                    l.on_receive(Instant::now().into_std());
                }
                // Reads that never block would never yield: give the scheduler its turn.
                tokio::task::consume_budget().await;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => break CloseReason::io(e),
        }
        rx.shrink_if_idle();
        stats.rx_buffered.store(rx.buffered(), Ordering::Relaxed);
        let dead_at = live.as_ref().map(|l| Instant::from_std(l.dead_at()));
        let deadline = min_deadline(if linger_at.is_some() { None } else { dead_at }, linger_at);
        // A peer that sends nothing and reads nothing while the budget is spent: its
        // write waits, and nothing else would wake this reader.
        let write_stall_at = stall_at(
            &shared,
            shared.in_flight.load(Ordering::Relaxed) > 0,
            &mut stalls.write,
        );
        let deadline = min_deadline(deadline, write_stall_at);
        tokio::select! {
            biased;
            r = rd.readable() => {
                if let Err(e) = r {
                    break CloseReason::io(e);
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    break CloseReason::Closed;
                }
                match *phase.borrow_and_update() {
                    Phase::Open => {}
                    Phase::Closing => {
                        linger_at.get_or_insert(Instant::now() + linger);
                    }
                    Phase::Kill => break CloseReason::Closed,
                }
            }
            () = sleep_until_opt(deadline) => {
                let now = Instant::now();
                if linger_at.is_some_and(|at| now >= at) {
                    break CloseReason::Closed;
                }
                if live.as_ref().is_some_and(|l| l.is_dead(now.into_std())) {
                    break CloseReason::Timeout;
                }
                if write_stall_at.is_some_and(|at| now >= at) {
                    if write_stuck(&shared) && stall_at(&shared, true, &mut stalls.write) <= Some(now) {
                        budget.count_stall_close();
                        tracing::debug!(conn = %shared.id, "send queue stalled on the memory budget, closing");
                        break CloseReason::MemoryBudget;
                    }
                    // Not stuck on the budget (or written meanwhile): look again later.
                    stalls.write = None;
                }
            }
        }
    };
    if matches!(reason, CloseReason::Timeout | CloseReason::Protocol(_)) {
        tracing::debug!(conn = %shared.id, %reason, "closing");
    }
    shared.finish(reason);
    stats.rx_buffered.store(0, Ordering::Relaxed);
    drop(rd);
    Box::pin(sink.closed(shared.final_reason())).await;
}
