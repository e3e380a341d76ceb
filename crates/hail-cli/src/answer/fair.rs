//! Which question gets the next free answer slot: the lightest asker's, so that peers
//! asking back to back, however many, cannot keep a device that asks now and then
//! waiting behind them.
//!
//! An asker is lighter than another when it has fewer questions in hand (running or
//! waiting), then when it started fewer commands lately, then when its question came
//! first.
//!
//! - A question runs at once when a slot is free and nobody waits.
//! - Otherwise it waits, while the queue has room. When the queue is full, a question
//!   from an asker lighter than the heaviest waiting one takes the place of that asker's
//!   newest waiting question, which is refused `busy`; else it is refused itself.
//! - A freed slot goes to the waiting question of the lightest asker.
//!
//! So an asker with no question in hand and a lighter record than the flooding askers is
//! served at about the next free slot. Askers are told apart by name: many fresh names
//! (each a joined device) are each as light as a newcomer and can keep an asker that was
//! served lately waiting; per host their number is bounded by the device's
//! `max_peers_per_host`. Each asker's questions in hand are counted as they come and go,
//! so every step costs one walk of the queue at most, with no allocation but a name's
//! first count. "Lately" is the current and the previous window of [`WINDOW`] (10 s); at
//! most [`MAX_ASKERS`] (1,024) askers are remembered per window (past that the window ends
//! early), so the bookkeeping is bounded whatever names peers use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a started command counts against its asker: this window and the next, 10 s
/// each.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Askers remembered per window: 1,024 (a window with more ends early).
pub(crate) const MAX_ASKERS: usize = 1024;

/// The answer slots of one device and the questions waiting for them.
#[derive(Debug)]
pub(crate) struct Fair {
    jobs: usize,
    queue: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    running: usize,
    /// Questions in hand (running or waiting) per asker: at most `jobs + queue` entries.
    in_hand: HashMap<String, u32>,
    waiting: Vec<Waiter>,
    /// Commands started per asker in the current window.
    usage: HashMap<String, u32>,
    /// The same for the previous window.
    previous: HashMap<String, u32>,
    window_start: Instant,
    next_seq: u64,
}

#[derive(Debug)]
struct Waiter {
    from: String,
    seq: u64,
    grant: oneshot::Sender<Slot>,
}

/// What [`Fair::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admit {
    /// A slot, now.
    Now(Slot),
    /// A place in the queue: the slot comes through this receiver, or the sender is
    /// dropped when the place is taken by a lighter asker (refused `busy`).
    Wait(oneshot::Receiver<Slot>),
    /// Every slot and queue place is taken by askers at least as heavy.
    Busy,
}

/// A running command's slot (and whose it is); dropping it hands the slot to the next
/// waiting question.
#[derive(Debug)]
pub(crate) struct Slot(Option<(Arc<Fair>, String)>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((fair, from)) = self.0.take() {
            fair.release(&from);
        }
    }
}

impl State {
    /// Commands `from` started lately.
    fn weight(&self, from: &str) -> u32 {
        self.usage.get(from).copied().unwrap_or(0) + self.previous.get(from).copied().unwrap_or(0)
    }

    /// How heavy `from` is: questions in hand, then commands started lately.
    fn load(&self, from: &str) -> (u32, u32) {
        (
            self.in_hand.get(from).copied().unwrap_or(0),
            self.weight(from),
        )
    }

    /// `from` has one more question in hand (running or waiting).
    fn hold(&mut self, from: &str) {
        *self.in_hand.entry(from.to_owned()).or_insert(0) += 1;
    }

    /// One of `from`'s questions ended, was refused or given up.
    fn let_go(&mut self, from: &str) {
        if let Some(n) = self.in_hand.get_mut(from) {
            *n -= 1;
            if *n == 0 {
                self.in_hand.remove(from);
            }
        }
    }

    /// Questions whose askers gave up leave the queue (order does not matter: picks go by
    /// load and sequence number).
    fn drop_given_up(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].grant.is_closed() {
                let w = self.waiting.swap_remove(i);
                self.let_go(&w.from);
            } else {
                i += 1;
            }
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window_start) >= WINDOW || self.usage.len() >= MAX_ASKERS {
            self.previous = std::mem::take(&mut self.usage);
            if now.duration_since(self.window_start) >= 2 * WINDOW {
                self.previous.clear();
            }
            self.window_start = now;
        }
    }

    fn started(&mut self, from: &str) {
        self.roll(Instant::now());
        *self.usage.entry(from.to_owned()).or_insert(0) += 1;
    }

    /// The waiting question to serve next: the lightest asker's oldest.
    fn next(&mut self) -> Option<Waiter> {
        let i = (0..self.waiting.len())
            .min_by_key(|&i| (self.load(&self.waiting[i].from), self.waiting[i].seq))?;
        Some(self.waiting.remove(i))
    }
}

impl Fair {
    /// `jobs` slots and `queue` places.
    pub(crate) fn new(jobs: usize, queue: usize) -> Arc<Self> {
        Arc::new(Self {
            jobs,
            queue,
            state: Mutex::new(State {
                running: 0,
                in_hand: HashMap::new(),
                waiting: Vec::with_capacity(queue),
                usage: HashMap::new(),
                previous: HashMap::new(),
                window_start: Instant::now(),
                next_seq: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across a panic (no method panics halfway).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commands running now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.lock().running
    }

    /// A question from `from` arrives.
    pub(crate) fn admit(self: &Arc<Self>, from: &str) -> Admit {
        let mut s = self.lock();
        s.roll(Instant::now());
        if s.running < self.jobs && s.waiting.is_empty() {
            s.running += 1;
            s.started(from);
            s.hold(from);
            return Admit::Now(Slot(Some((Arc::clone(self), from.to_owned()))));
        }
        // Places of questions whose askers gave up are free.
        s.drop_given_up();
        let evicted = if s.waiting.len() < self.queue {
            None
        } else {
            let heaviest = (0..s.waiting.len())
                .max_by_key(|&i| (s.load(&s.waiting[i].from), s.waiting[i].seq));
            match heaviest {
                Some(i) if s.load(&s.waiting[i].from) > s.load(from) => {
                    let w = s.waiting.swap_remove(i);
                    s.let_go(&w.from);
                    Some(w)
                }
                _ => return Admit::Busy,
            }
        };
        let (grant, rx) = oneshot::channel();
        let seq = s.next_seq;
        s.next_seq += 1;
        s.waiting.push(Waiter {
            from: from.to_owned(),
            seq,
            grant,
        });
        s.hold(from);
        drop(s);
        // Dropped outside the lock: its asker hears `busy`.
        drop(evicted);
        Admit::Wait(rx)
    }

    /// `from`'s command ended: its slot goes to the next waiting question, or is freed.
    fn release(self: &Arc<Self>, from: &str) {
        let mut s = self.lock();
        s.let_go(from);
        // Questions whose askers gave up leave first: each would be one more pick.
        s.drop_given_up();
        loop {
            let Some(w) = s.next() else {
                s.running -= 1;
                return;
            };
            // Its question stays in hand, now running.
            s.started(&w.from);
            drop(s);
            // The slot passes on, still counted as running.
            let Err(mut slot) = w.grant.send(Slot(Some((Arc::clone(self), w.from)))) else {
                return;
            };
            // That asker gave up meanwhile: take the slot back, try the next.
            s = self.lock();
            if let Some((_, gave_up)) = slot.0.take() {
                s.let_go(&gave_up);
                // Nothing ran for it: not counted as started.
                if let Some(n) = s.usage.get_mut(&gave_up) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(a: Admit) -> Slot {
        match a {
            Admit::Now(s) => s,
            other => panic!("expected a slot now, got {other:?}"),
        }
    }

    fn wait(a: Admit) -> oneshot::Receiver<Slot> {
        match a {
            Admit::Wait(rx) => rx,
            other => panic!("expected a place in the queue, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_light_asker_takes_the_place_of_a_heavy_ones_newest_and_is_served_first() {
        let fair = Fair::new(1, 2);
        let running = now(fair.admit("heavy"));
        let mut first = wait(fair.admit("heavy"));
        let mut second = wait(fair.admit("heavy"));
        // The queue is full of one asker's questions: another of theirs is refused...
        assert!(matches!(fair.admit("heavy"), Admit::Busy));
        // ... a newcomer takes the place of their newest waiting question.
        let mut light = wait(fair.admit("light"));
        assert!(
            second
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        // The slot, once free, goes to the newcomer, not to the older heavy question.
        drop(running);
        let light_slot = light.try_recv().expect("the light asker is served first");
        assert!(
            first
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(fair.running(), 1);
        drop(light_slot);
        let heavy_slot = first.try_recv().expect("then the heavy asker");
        drop(heavy_slot);
        assert_eq!(fair.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_asker_no_lighter_than_the_heaviest_waiting_is_refused() {
        let fair = Fair::new(1, 2);
        let _running = now(fair.admit("a"));
        let _b = wait(fair.admit("b"));
        let _c = wait(fair.admit("c"));
        // "b" and "c" have one question in hand each, so has "b" asking again: refused.
        assert!(matches!(fair.admit("b"), Admit::Busy));
        // So is "a", whose command runs (one in hand, and one started lately).
        assert!(matches!(fair.admit("a"), Admit::Busy));
    }

    /// Twenty askers that always have a question in hand and were answered before (as a
    /// flood keeps them) and a device that asks now and then: its question is served at
    /// the next free slot.
    #[tokio::test(start_paused = true)]
    async fn an_asker_with_nothing_in_hand_is_served_at_the_next_free_slot() {
        let fair = Fair::new(4, 16);
        // The flood has been going on: each of its askers was answered before.
        for i in 0..20 {
            drop(now(fair.admit(&format!("m{i}"))));
        }
        let mut running: Vec<Slot> = (0..4).map(|i| now(fair.admit(&format!("m{i}")))).collect();
        let mut queued: Vec<_> = (4..20)
            .map(|i| wait(fair.admit(&format!("m{i}"))))
            .collect();
        for i in 0..20 {
            assert!(matches!(fair.admit(&format!("m{i}")), Admit::Busy));
        }
        let mut probe = wait(fair.admit("probe"));
        assert_eq!(
            queued
                .iter_mut()
                .map(|q| q.try_recv())
                .filter(|r| r
                    .as_ref()
                    .is_err_and(|e| *e == oneshot::error::TryRecvError::Closed))
                .count(),
            1,
            "one flooding asker's question gave its place"
        );
        drop(running.pop());
        assert!(probe.try_recv().is_ok(), "the probe takes the freed slot");
    }

    /// Found in review: questions given up stayed in the queue and each freed slot walked
    /// them one by one, every pick a walk of the queue (O(queue³) per slot).
    #[tokio::test(start_paused = true)]
    async fn given_up_questions_leave_the_queue_when_a_slot_is_freed() {
        let fair = Fair::new(1, 512);
        let running = now(fair.admit("r"));
        let gone: Vec<_> = (0..512)
            .map(|i| wait(fair.admit(&format!("w{i}"))))
            .collect();
        drop(gone);
        drop(running);
        assert_eq!(fair.running(), 0);
        assert!(fair.lock().waiting.is_empty());
        assert!(
            fair.lock().in_hand.is_empty(),
            "no question is left in hand"
        );
        assert_eq!(
            fair.lock().weight("w0"),
            0,
            "nothing ran for a question given up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_whose_waiter_gave_up_goes_to_the_next_or_back() {
        let fair = Fair::new(1, 3);
        let running = now(fair.admit("a"));
        let gone = wait(fair.admit("b"));
        let mut next = wait(fair.admit("c"));
        drop(gone);
        drop(running);
        let slot = next
            .try_recv()
            .expect("the slot skips the question given up");
        assert_eq!(fair.running(), 1);
        drop(slot);
        assert_eq!(fair.running(), 0);
        // Nobody waits: the next question runs at once.
        let _s = now(fair.admit("d"));
    }

    #[tokio::test(start_paused = true)]
    async fn weight_is_what_an_asker_started_lately_and_is_forgotten_after_two_windows() {
        let fair = Fair::new(1, 1);
        drop(now(fair.admit("heavy")));
        let running = now(fair.admit("other"));
        let mut heavy = wait(fair.admit("heavy"));
        // "heavy" started one command lately, "light" none: the place changes hands.
        let mut light = wait(fair.admit("light"));
        assert!(
            heavy
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        drop(running);
        drop(light.try_recv().expect("served"));
        assert_eq!(fair.lock().weight("heavy"), 1);
        tokio::time::advance(WINDOW).await;
        drop(now(fair.admit("x")));
        assert_eq!(
            fair.lock().weight("heavy"),
            1,
            "the previous window still counts"
        );
        tokio::time::advance(WINDOW).await;
        drop(now(fair.admit("x")));
        assert_eq!(
            fair.lock().weight("heavy"),
            0,
            "two windows later, forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_askers_remembered_are_bounded() {
        let fair = Fair::new(MAX_ASKERS * 3, 0);
        let slots: Vec<Slot> = (0..MAX_ASKERS * 3)
            .map(|i| now(fair.admit(&format!("n{i}"))))
            .collect();
        let s = fair.lock();
        assert!(s.usage.len() <= MAX_ASKERS && s.previous.len() <= MAX_ASKERS);
        drop(s);
        drop(slots);
        assert_eq!(fair.running(), 0);
    }
}
