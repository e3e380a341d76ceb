//! [`Outbox`]: the packets for the peer that the link had no room for, waiting in order
//! for the one task that hands them over (see `Inner::route` and `drain`).

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::task::AbortHandle;
use tokio::time::{Duration, Instant};

/// Slow-reader warnings of one connection come at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// What one waiting packet costs besides its bytes, counted against the bound: its place
/// in the queue (32 bytes) and its allocation's header and rounding (about 32). Without
/// it, a peer whose requests are all refused fills the bound with 10-byte `BUSY` answers
/// that cost seven times their length: 20 such peers held 340 MiB (`misbehave --attack
/// answer`).
pub(super) const PACKET_COST: usize = 64;

/// One connection's outbox, bounded in bytes by the session's rule (requests are refused
/// while it is full, see [`RpcConfig::max_outbox_bytes`](crate::RpcConfig::max_outbox_bytes)).
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// The task handing the queue to the link, while one runs (at most one).
    drainer: Option<AbortHandle>,
    /// Bumped at every link change: the drainer of an earlier link stops.
    generation: u64,
    /// When the last slow-reader warning was logged, and the refusals counted then.
    warned: Option<(Instant, u64)>,
}

impl Outbox {
    /// Bytes waiting, each packet counted with [`PACKET_COST`].
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
        self.bytes += packet.len() + PACKET_COST;
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
            self.bytes -= p.len() + PACKET_COST;
        }
        if self.queue.is_empty() {
            self.drainer = None;
        }
        self.queue.is_empty()
    }

    /// The link changed (up or down): what waits was for the old one, and its drainer ends.
    pub(super) fn reset(&mut self) {
        if let Some(task) = self.drainer.take() {
            task.abort();
        }
        self.queue.clear();
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
            o.push(Bytes::from_static(b"de")),
            "none was handed over yet"
        );
        assert_eq!((o.bytes(), o.len()), (5 + 2 * PACKET_COST, 2));
        assert_eq!(o.front().as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            o.bytes(),
            5 + 2 * PACKET_COST,
            "still counted while the link waits"
        );
        assert!(!o.pop());
        assert_eq!((o.bytes(), o.len()), (2 + PACKET_COST, 1));
        let g = o.generation();
        o.reset();
        assert_eq!((o.bytes(), o.len()), (0, 0));
        assert_ne!(o.generation(), g);
    }
}
