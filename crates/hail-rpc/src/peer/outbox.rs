//! [`Outbox`]: the packets for the peer that the link had no room for, waiting in order
//! for the one task that hands them over (see `Inner::route` and `drain`).

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::task::AbortHandle;
use tokio::time::{Duration, Instant};

/// Slow-reader warnings of one connection come at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// What the allocation of a packet of `len` bytes takes: glibc's (and most allocators')
/// chunks carry an 8-byte header, are rounded up to 16 bytes and are at least 32. A
/// 10-byte `BUSY` answer takes 32. Counting only the length, a peer whose requests are
/// all refused filled the bound with answers that cost seven times their length: 20 such
/// peers held 340 MiB (`misbehave --attack answer`).
fn allocated(len: usize) -> usize {
    (len + 8).next_multiple_of(16).max(32)
}

/// What one packet's place in the queue costs: a `Bytes` (32 bytes), twice, since a queue
/// that grows by doubling has room for up to twice the packets it holds. A queue drained
/// to a quarter of its room gives room back (see [`SHRINK_FROM`]), and an empty one all.
const SLOT_COST: usize = 2 * std::mem::size_of::<Bytes>();

/// A queue with room for more packets than this (64) gives room back once three quarters
/// of it is empty.
const SHRINK_FROM: usize = 64;

/// One connection's outbox, bounded in bytes by the session's rule (requests are refused
/// while it is full, see [`RpcConfig::max_outbox_bytes`](crate::RpcConfig::max_outbox_bytes)).
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: VecDeque<Bytes>,
    /// What the packets cost: their allocations ([`allocated`]) and places ([`SLOT_COST`]).
    bytes: usize,
    /// The task handing the queue to the link, while one runs (at most one).
    drainer: Option<AbortHandle>,
    /// Bumped at every link change: the drainer of an earlier link stops.
    generation: u64,
    /// When the last slow-reader warning was logged, and the refusals counted then.
    warned: Option<(Instant, u64)>,
}

impl Outbox {
    /// Bytes the outbox holds: each packet's allocation ([`allocated`]) and its place in
    /// the queue ([`SLOT_COST`]).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets waiting.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Queues `packet` last; true when no drainer runs yet (the caller starts one and
    /// hands it over with [`set_drainer`](Self::set_drainer)).
    pub(super) fn push(&mut self, packet: Bytes) -> bool {
        self.bytes += allocated(packet.len()) + SLOT_COST;
        self.queue.push_back(packet);
        self.drainer.is_none()
    }

    pub(super) fn set_drainer(&mut self, task: AbortHandle) {
        self.drainer = Some(task);
    }

    /// The oldest packet, left in place (and counted) until the link has taken it.
    pub(super) fn front(&self) -> Option<Bytes> {
        self.queue.front().cloned()
    }

    /// The link took the oldest packet. True when the queue is now empty: the drainer
    /// ends, and the next packet that does not fit the link starts another.
    pub(super) fn pop(&mut self) -> bool {
        if let Some(p) = self.queue.pop_front() {
            self.bytes -= allocated(p.len()) + SLOT_COST;
        }
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
            self.drainer = None;
        } else if self.queue.capacity() > SHRINK_FROM
            && self.queue.len() < self.queue.capacity() / 4
        {
            // A queue that grew in a burst gives its room back as it drains.
            self.queue.shrink_to(self.queue.len() * 2);
        }
        self.queue.is_empty()
    }

    /// The link changed (up or down): what waits was for the old one, and its drainer ends.
    pub(super) fn reset(&mut self) {
        if let Some(task) = self.drainer.take() {
            task.abort();
        }
        self.queue = VecDeque::new();
        self.bytes = 0;
        self.generation += 1;
    }

    /// Whether to warn about a slow reader now that `refusals` have been counted in all:
    /// at most once per [`WARN_EVERY`], and only when there are new ones. Returns the
    /// refusals since the last warning.
    pub(super) fn warn_due(&mut self, refusals: u64, now: Instant) -> Option<u64> {
        let seen = self.warned.map_or(0, |(_, seen)| seen);
        let recent = self
            .warned
            .is_some_and(|(at, _)| now.duration_since(at) < WARN_EVERY);
        if refusals <= seen || recent {
            return None;
        }
        self.warned = Some((now, refusals));
        Some(refusals - seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_reader_warnings_come_at_most_once_a_second_and_only_for_new_refusals() {
        let t = Instant::now();
        let mut o = Outbox::default();
        assert_eq!(o.warn_due(0, t), None, "nothing refused yet");
        assert_eq!(o.warn_due(3, t), Some(3));
        assert_eq!(o.warn_due(500, t + Duration::from_millis(999)), None);
        assert_eq!(o.warn_due(500, t + WARN_EVERY), Some(497));
        assert_eq!(o.warn_due(500, t + 5 * WARN_EVERY), None, "no new refusals");
        assert_eq!(o.warn_due(501, t + 5 * WARN_EVERY), Some(1));
    }

    #[test]
    fn the_outbox_counts_bytes_until_the_link_takes_them() {
        let mut o = Outbox::default();
        assert!(
            o.push(Bytes::from_static(b"abc")),
            "the first packet starts a drainer"
        );
        assert!(
            o.push(Bytes::from(vec![7; 100])),
            "none was handed over yet"
        );
        // 3 bytes take the smallest chunk (32), 100 bytes and a header 112; each packet's
        // place counts twice a `Bytes`.
        assert_eq!((o.bytes(), o.len()), (32 + 112 + 2 * SLOT_COST, 2));
        assert_eq!(o.front().as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            o.bytes(),
            32 + 112 + 2 * SLOT_COST,
            "still counted while the link waits"
        );
        assert!(!o.pop());
        assert_eq!((o.bytes(), o.len()), (112 + SLOT_COST, 1));
        let g = o.generation();
        o.reset();
        assert_eq!((o.bytes(), o.len()), (0, 0));
        assert_ne!(o.generation(), g);
    }

    #[test]
    fn a_queue_drained_after_a_burst_gives_its_room_back() {
        let mut o = Outbox::default();
        for _ in 0..10_000 {
            o.push(Bytes::from_static(b"BUSY answer"));
        }
        let places = o.queue.capacity() * std::mem::size_of::<Bytes>();
        assert!(places <= o.bytes() - 10_000 * 32, "the places are counted");
        for _ in 0..9_990 {
            o.pop();
        }
        assert!(
            o.queue.capacity() <= SHRINK_FROM.max(4 * o.len()),
            "room kept: {} places for {} packets",
            o.queue.capacity(),
            o.len()
        );
        assert_eq!(o.bytes(), 10 * (32 + SLOT_COST));
        while !o.pop() {}
        assert_eq!(
            (o.bytes(), o.queue.capacity()),
            (0, 0),
            "an empty queue keeps nothing"
        );
    }
}
