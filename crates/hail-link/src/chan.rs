//! A bounded event channel that moves events in batches.
//!
//! Bounded in events, like `tokio::sync::mpsc::channel`, but a batch of events costs one
//! hand-over (one queue push, one wake-up) instead of one per event: a connection's reader
//! delivers everything it decoded from one read in one go.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{Semaphore, mpsc};

use crate::budget::Charge;

/// A batch of events and what it holds of a memory budget until it is taken.
type Chunk<E> = (Vec<E>, Option<Charge>);

/// Hands `release` permits back at most this many events late while the receiver still
/// holds buffered events: 64.
const RELEASE_EVERY: usize = 64;

/// A bounded channel of `capacity` events (at least 1).
pub(crate) fn channel<E>(capacity: usize) -> (Sender<E>, Receiver<E>) {
    let capacity = capacity
        .clamp(1, Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    let sem = Arc::new(Semaphore::new(capacity));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Sender {
            tx,
            sem: Arc::clone(&sem),
            capacity,
        },
        Receiver {
            rx,
            pending: VecDeque::new(),
            charge: None,
            handed: Vec::new(),
            taken: 0,
            sem,
        },
    )
}

/// The sending side; cheap to clone.
#[derive(Debug)]
pub(crate) struct Sender<E> {
    tx: mpsc::UnboundedSender<Chunk<E>>,
    /// One permit per free slot.
    sem: Arc<Semaphore>,
    capacity: usize,
}

impl<E> Clone for Sender<E> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            sem: Arc::clone(&self.sem),
            capacity: self.capacity,
        }
    }
}

impl<E> Sender<E> {
    /// Sends one event, waiting for room; gives it back if the receiver is gone.
    pub(crate) async fn send(&self, ev: E) -> Result<(), E> {
        match self.sem.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(ev),
        }
        self.tx
            .send((vec![ev], None))
            .map_err(|mut e| e.0.0.remove(0))
    }

    /// Sends one event if there is room now.
    pub(crate) fn try_send(&self, ev: E) -> Result<(), E> {
        match self.sem.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => return Err(ev),
        }
        self.tx
            .send((vec![ev], None))
            .map_err(|mut e| e.0.0.remove(0))
    }

    /// Sends every item of `batch` (wrapped by `wrap`), in order, waiting for room;
    /// returns how many could not be delivered because the receiver is gone. Cancel-safe:
    /// what was not sent stays in `batch` (and `charge` stays with the caller).
    ///
    /// `charge` goes with the last chunk: it is released once the receiver has taken
    /// every event of the batch (or dropped them).
    pub(crate) async fn send_all<T>(
        &self,
        batch: &mut Vec<T>,
        wrap: impl Fn(T) -> E,
        charge: &mut Option<Charge>,
    ) -> u64 {
        while !batch.is_empty() {
            let k = batch.len().min(self.capacity);
            // `k` is at most the capacity, which fits in u32.
            let permits = u32::try_from(k).unwrap_or(u32::MAX);
            let permit = match self.sem.try_acquire_many(permits) {
                Ok(p) => p,
                Err(_) => match self.sem.acquire_many(permits).await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            permit.forget();
            let chunk: Vec<E> = batch.drain(..k).map(&wrap).collect();
            let held = if batch.is_empty() {
                charge.take()
            } else {
                None
            };
            if let Err(e) = self.tx.send((chunk, held)) {
                let lost = (e.0.0.len() + batch.len()) as u64;
                batch.clear();
                return lost;
            }
        }
        let lost = batch.len() as u64;
        batch.clear();
        lost
    }
}

/// The receiving side.
#[derive(Debug)]
pub(crate) struct Receiver<E> {
    rx: mpsc::UnboundedReceiver<Chunk<E>>,
    /// Events received in a batch and not yet handed out.
    pending: VecDeque<E>,
    /// What `pending`'s batch holds of a budget: moved to `handed` when the last one is
    /// handed out.
    charge: Option<Charge>,
    /// The charges of batches handed out whole: given back when the consumer next asks
    /// for an event, so it can take the messages over into holds of its own first (the
    /// device does); given back at once, the budget counted them nowhere for a moment
    /// and other links read into that room.
    handed: Vec<Charge>,
    /// Events handed out whose slots were not yet given back.
    taken: usize,
    sem: Arc<Semaphore>,
}

// Never pinned structurally: the events are only moved in and out by value.
impl<E> Unpin for Receiver<E> {}

impl<E> Receiver<E> {
    fn release(&mut self) {
        if self.taken > 0 {
            self.sem.add_permits(self.taken);
            self.taken = 0;
        }
    }

    /// Hands out the first buffered event (the caller made sure there is one).
    fn pop(&mut self) -> Option<E> {
        let ev = self.pending.pop_front();
        if ev.is_some() {
            self.taken += 1;
            if self.pending.is_empty() {
                self.handed.extend(self.charge.take());
            }
            if self.taken >= RELEASE_EVERY || self.pending.is_empty() {
                self.release();
            }
        }
        ev
    }

    /// The next event, or `None` once every sender is gone and everything was received.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<E>> {
        self.handed.clear();
        if self.pending.is_empty() {
            self.release();
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some((chunk, charge))) => {
                    self.pending = chunk.into();
                    self.charge = charge;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(self.pop())
    }

    /// The next event if one is waiting, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<E> {
        self.handed.clear();
        if self.pending.is_empty() {
            self.release();
            let (chunk, charge) = self.rx.try_recv().ok()?;
            self.pending = chunk.into();
            self.charge = charge;
        }
        self.pop()
    }

    /// The next event, or `None` once every sender is gone and everything was received.
    pub(crate) async fn recv(&mut self) -> Option<E> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Waits for at least one event, then moves up to `limit` available events into `buf`;
    /// returns how many (0 once the channel has ended, or for a `limit` of 0).
    pub(crate) async fn recv_many(&mut self, buf: &mut Vec<E>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        self.handed.clear();
        let mut n = 0;
        if self.pending.is_empty() {
            self.release();
            let Some((chunk, charge)) = std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await
            else {
                return 0;
            };
            if buf.is_empty() && chunk.len() <= limit {
                // The whole batch as it came: no copy of its events.
                n = chunk.len();
                self.taken += n;
                *buf = chunk;
                self.handed.extend(charge);
            } else {
                self.pending = chunk.into();
                self.charge = charge;
            }
        }
        loop {
            let k = self.pending.len().min(limit - n);
            buf.extend(self.pending.drain(..k));
            n += k;
            self.taken += k;
            if self.pending.is_empty() {
                self.handed.extend(self.charge.take());
            }
            if n == limit {
                break;
            }
            match self.rx.try_recv() {
                Ok((chunk, charge)) => {
                    self.pending = chunk.into();
                    self.charge = charge;
                }
                Err(_) => break,
            }
        }
        self.release();
        n
    }
}

impl<E> Drop for Receiver<E> {
    fn drop(&mut self) {
        // Senders waiting for room fail instead of waiting forever.
        self.sem.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_batches() {
        let (tx, mut rx) = channel::<u32>(4);
        let mut batch: Vec<u32> = (0..10).collect();
        let send = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send_all(&mut batch, |x| x, &mut None).await }
        });
        tokio::task::yield_now().await;
        assert!(tx.try_send(99).is_err(), "full");
        let mut got = Vec::new();
        while got.len() < 10 {
            rx.recv_many(&mut got, 3).await;
        }
        assert_eq!(send.await.unwrap(), 0);
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        tx.send(10).await.unwrap();
        assert_eq!(rx.recv().await, Some(10));
        // A whole batch into an empty buffer, then the room is back.
        assert_eq!(
            tx.send_all(&mut vec![20, 21, 22], |x| x, &mut None).await,
            0
        );
        let mut whole = Vec::new();
        assert_eq!(rx.recv_many(&mut whole, 10).await, 3);
        assert_eq!(whole, [20, 21, 22]);
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        assert!(tx.try_send(4).is_err(), "full again");
        assert_eq!(rx.try_recv(), Some(0));
        tx.try_send(4).unwrap();
        assert!(tx.try_send(5).is_err(), "full once more");
        whole.clear();
        assert_eq!(rx.recv_many(&mut whole, 10).await, 4);
        assert_eq!(whole, [1, 2, 3, 4]);
        assert_eq!(rx.try_recv(), None, "empty");
        drop(tx);
        assert_eq!(rx.try_recv(), None, "ended");
        assert_eq!(rx.recv().await, None);
    }

    /// Under misbehave's `frames`: a batch's charge was given back as its last event was
    /// handed out, before the consumer (the device) took its own hold of the message, and
    /// other links' readers read into the moment's room: the budget then counted one
    /// 15 MiB message more than its total, and every link paused. The charge now lasts
    /// until the consumer asks for more.
    #[tokio::test]
    async fn a_batch_stays_counted_until_the_consumer_asks_for_more() {
        use crate::budget::{Account, Budget, Charge};
        let budget = Budget::new(1 << 20);
        let account = Account::new(budget.clone());
        let (tx, mut rx) = channel::<u32>(8);
        for many in [false, true] {
            budget.take(100);
            let mut charge = Some(Charge::moved(&account, 100));
            assert_eq!(tx.send_all(&mut vec![1, 2], |x| x, &mut charge).await, 0);
            if many {
                let mut got = Vec::new();
                assert_eq!(rx.recv_many(&mut got, 10).await, 2);
            } else {
                assert_eq!(rx.try_recv(), Some(1));
                assert_eq!(rx.try_recv(), Some(2));
            }
            assert_eq!(
                budget.in_use(),
                100,
                "counted while the consumer takes it over"
            );
            assert_eq!(rx.try_recv(), None);
            assert_eq!(budget.in_use(), 0, "given back once it asks for more");
        }
    }

    #[tokio::test]
    async fn dropped_receiver_fails_senders() {
        let (tx, rx) = channel::<u32>(1);
        tx.send(1).await.unwrap();
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send_all(&mut vec![2, 3], |x| x, &mut None).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(blocked.await.unwrap(), 2);
        assert_eq!(tx.send(4).await, Err(4));
    }
}
