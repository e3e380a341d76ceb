//! Standard output for a long-running device (`hail listen`): written by a thread of its
//! own, so a slow or stuck reader of stdout never blocks the device's runtime (its links,
//! heartbeats, questions and calls), only the lines waiting to be printed.
//!
//! Two kinds of lines:
//! - [`Printer::print`] (the device's events, in order): waits, without blocking a thread,
//!   while [`ROOM`] bytes of lines are waiting; so a reader that falls behind holds back
//!   the event stream, and through it the peers (backpressure), and loses nothing.
//! - [`Printer::print_or_skip`] (questions and answer notes, from the handlers that answer):
//!   never waits; when the room is taken the line is not printed but counted, and the
//!   count is printed in its place (`N lines not printed: stdout was full`) once there is
//!   room again. An answer is never late because stdout is.
//!
//! Every queued line holds its bytes in the device's memory budget
//! ([`hail::link::Budget`]) until it is written: a message's line keeps its payload alive
//! after the device's stream let go of it. `hail listen` takes the next event only once
//! [`Printer::ready`] says there is room, so the next message waits in the device's stream
//! (counted on its link's share) rather than beside the line being written: before, a slow
//! stdout kept two 15 MiB messages (one written, one waiting) outside the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hail::link::{Budget, Hold};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Bytes of lines that may wait for stdout: 4 MiB. A longer line waits for all of it
/// (one such line at a time).
pub(crate) const ROOM: usize = 4 << 20;

/// A line for the printing thread: anything shown with `Display`, so a long one (a
/// message's payload) is written out where it lies, never copied whole first.
pub(crate) type Line = Box<dyn std::fmt::Display + Send>;

/// A queued line's claims: its part of the room, and its bytes in the budget.
struct Held {
    _room: OwnedSemaphorePermit,
    _budget: Hold,
}

/// What the printing thread is handed.
enum Job {
    Line(Line, Held),
    /// Everything before it is written; say so.
    Flushed(oneshot::Sender<()>),
}

/// The sending side; clone it for each task that prints.
#[derive(Debug, Clone)]
pub(crate) struct Printer {
    jobs: mpsc::UnboundedSender<Job>,
    room: Arc<Semaphore>,
    skipped: Arc<AtomicU64>,
    budget: Budget,
}

impl Printer {
    /// Starts the printing thread; `skipped(n)` makes the line said in place of `n`
    /// lines not printed; the lines waiting hold their bytes in `budget`.
    pub(crate) fn start(skipped: fn(u64) -> String, budget: Budget) -> std::io::Result<Self> {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let count = Arc::new(AtomicU64::new(0));
        let printer = Self {
            jobs,
            room: Arc::new(Semaphore::new(ROOM)),
            skipped: Arc::clone(&count),
            budget,
        };
        std::thread::Builder::new()
            .name("hail-stdout".into())
            .spawn(move || {
                // A plain thread: blocking in a write here stops nothing else.
                while let Some(job) = rx.blocking_recv() {
                    match job {
                        Job::Line(line, held) => {
                            crate::out::write_line(&*line);
                            drop((line, held));
                        }
                        Job::Flushed(done) => {
                            let _ = done.send(());
                        }
                    }
                    let n = count.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        crate::out::write_line(&skipped(n));
                    }
                }
            })?;
        Ok(printer)
    }

    /// The permits a line of `len` bytes takes: its length, at least 1, at most [`ROOM`].
    fn cost(len: usize) -> u32 {
        // ROOM fits in u32.
        len.clamp(1, ROOM) as u32
    }

    /// Queues `line`, waiting while the lines already waiting take the room.
    pub(crate) async fn print(&self, line: String) {
        self.print_sized(line.len(), Box::new(line)).await;
    }

    /// Queues `line`, of about `len` bytes when written, waiting while the lines already
    /// waiting take the room.
    pub(crate) async fn print_sized(&self, len: usize, line: Line) {
        // Held from now, while it waits for room too: it left the device's stream (and
        // its count there) just before, and the room it waits for may take a while (a
        // line before it, on a slow stdout); uncounted meanwhile, links read into the
        // budget it kept alive and the count then passed the total by a whole line.
        let hold = self.hold(len);
        let Ok(permit) = Arc::clone(&self.room)
            .acquire_many_owned(Self::cost(len))
            .await
        else {
            return;
        };
        let held = Held {
            _room: permit,
            _budget: hold,
        };
        let _ = self.jobs.send(Job::Line(line, held));
    }

    /// Waits until at least half the room is free: call it before taking the next event
    /// to print, so the event waits in the device's stream (counted there, on the share of
    /// the link it came on) rather than here, beside the line being written.
    pub(crate) async fn ready(&self) {
        let _free = self.room.acquire_many(Self::cost(ROOM / 2)).await;
    }

    /// `len` bytes held in the budget until dropped.
    fn hold(&self, len: usize) -> Hold {
        let mut hold = self.budget.hold();
        hold.set(len);
        hold
    }

    /// Queues the line `make` makes, of about `len` bytes, if there is room for it now;
    /// else counts it as not printed, without making it (a peer's flood of large
    /// questions costs no formatting of lines that are not printed).
    pub(crate) fn print_or_skip(&self, len: usize, make: impl FnOnce() -> Line) {
        match Arc::clone(&self.room).try_acquire_many_owned(Self::cost(len)) {
            Ok(permit) => {
                let held = Held {
                    _room: permit,
                    _budget: self.hold(len),
                };
                let _ = self.jobs.send(Job::Line(make(), held));
            }
            Err(_) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every line queued before is written, at most `limit` (a reader that
    /// reads nothing would hold it for ever). Whether it was.
    pub(crate) async fn flush(&self, limit: Duration) -> bool {
        let (done, flushed) = oneshot::channel();
        if self.jobs.send(Job::Flushed(done)).is_err() {
            return false;
        }
        tokio::time::timeout(limit, flushed)
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_bounded_by_the_room() {
        assert_eq!(Printer::cost(0), 1);
        assert_eq!(Printer::cost(100), 100);
        assert_eq!(Printer::cost(usize::MAX), ROOM as u32);
    }

    #[tokio::test]
    async fn a_full_room_counts_skipped_lines_and_print_waits() {
        // Not started: nothing drains, so the room stays taken.
        let (jobs, mut rx) = mpsc::unbounded_channel();
        let budget = Budget::new(64 << 20);
        let p = Printer {
            jobs,
            room: Arc::new(Semaphore::new(ROOM)),
            skipped: Arc::new(AtomicU64::new(0)),
            budget: budget.clone(),
        };
        p.print_or_skip(ROOM - 10, || Box::new("x".repeat(ROOM - 10)));
        p.print_or_skip(20, || unreachable!("a line without room is not made"));
        p.print_or_skip(10, || Box::new("z".repeat(10)));
        assert_eq!(
            p.skipped.load(Ordering::Relaxed),
            1,
            "only the line over the room"
        );
        // A waiting print goes once a line is written (its permit dropped).
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.print("w".into()).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(
            budget.in_use(),
            ROOM - 10 + 10 + 1,
            "queued and waiting lines held in the budget, skipped ones not"
        );
        let Some(Job::Line(first, held)) = rx.recv().await else {
            panic!("the first line")
        };
        assert_eq!(first.to_string().len(), ROOM - 10);
        drop(held);
        waiting.await.unwrap();
        assert_eq!(budget.in_use(), 10 + 1, "a written line is given back");
        // Half the room is free now: the next event may be taken.
        tokio::time::timeout(Duration::from_secs(1), p.ready())
            .await
            .expect("room");
        let lines: Vec<String> = std::iter::from_fn(|| match rx.try_recv() {
            Ok(Job::Line(l, _)) => Some(l.to_string()),
            _ => None,
        })
        .collect();
        assert_eq!(lines, ["z".repeat(10), "w".to_owned()]);
    }
}
