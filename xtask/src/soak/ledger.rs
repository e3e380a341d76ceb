//! The ledger: every numbered message's send and receipts, every incarnation's life, and
//! from them each message's fate.

use std::collections::{BTreeMap, HashMap};

/// How far around a send a restart of its receiver (or after it, of its sender) explains
/// a message sent OK but never received: 5 s before the send (the sender's link may not
/// have noticed the death yet) to 2 s after.
pub(super) const WINDOW_BEFORE: f64 = 5.0;
pub(super) const WINDOW_AFTER: f64 = 2.0;

/// How an incarnation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Still running (at the end of the run every node is stopped gracefully).
    Running,
    /// Stdin closed; it exited by itself.
    Graceful,
    /// SIGKILL.
    Killed,
}

/// One incarnation of a node: when it started and ended (seconds since the run began).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Life {
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) how: End,
    /// When a graceful stop printed each phase (`stopping`, `shutdown`, `down`).
    pub(super) phases: Vec<(String, f64)>,
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Fate {
    /// Sent OK and received once by its target.
    Delivered,
    /// The send reported an error and the message never arrived.
    Failed,
    /// Sent OK, never received; its receiver was SIGKILLed around the send.
    InFlightToKilled,
    /// Sent OK, never received; its sender was SIGKILLed just after (still queued).
    QueuedAtKilledSender,
    /// Sent OK, never received, around a graceful stop of its receiver.
    LostAtGracefulReceiver,
    /// Sent OK, never received, just before a graceful stop of its sender.
    LostAtGracefulSender,
    /// Sent OK, never received, no restart near: a loss with no explanation.
    LostUnexplained,
    /// The send was abandoned (no room for 5 s); outcome unknown.
    Abandoned,
    /// The send reported an error but the message arrived.
    FailedButDelivered,
    /// Received, but the sender was SIGKILLed before it printed the send's result.
    ReceivedUnrecorded,
    /// Received by a node other than the target.
    Misdelivered,
}

impl Fate {
    /// True for the outcomes "nothing lost" allows: delivered, failed, and the SIGKILL gap.
    pub(super) fn is_honest(self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::Failed
                | Self::InFlightToKilled
                | Self::QueuedAtKilledSender
                | Self::ReceivedUnrecorded
        )
    }
}

/// The result of one send, as its sender printed it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sent {
    /// The target's name.
    pub(super) to: String,
    /// The send reported success.
    pub(super) ok: bool,
    /// The send was abandoned: outcome unknown.
    pub(super) unknown: bool,
    /// When its line was read (seconds since the run began).
    pub(super) t: f64,
}

/// Sends and receipts of every message, keyed by (sender, incarnation, seq).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// (sender, inc, seq) -> (target, ok, unknown, time).
    pub(super) sends: HashMap<(String, u64, u64), Sent>,
    /// (sender, inc, seq) -> receivers.
    pub(super) recvs: HashMap<(String, u64, u64), Vec<String>>,
    /// Lives of each node, by name, in incarnation order.
    pub(super) lives: HashMap<String, Vec<Life>>,
    /// Messages received more than once.
    pub(super) duplicates: u64,
}

impl Ledger {
    pub(super) fn send(&mut self, from: &str, inc: u64, seq: u64, sent: Sent) {
        self.sends.insert((from.to_owned(), inc, seq), sent);
    }

    pub(super) fn recv(&mut self, at: &str, from: String, inc: u64, seq: u64) {
        let e = self.recvs.entry((from, inc, seq)).or_default();
        if !e.is_empty() {
            self.duplicates += 1;
        }
        e.push(at.to_owned());
    }

    pub(super) fn life(&self, name: &str, inc: u64) -> Option<&Life> {
        self.lives.get(name)?.get(usize::try_from(inc).ok()?)
    }

    /// A restart of `name` that ended an incarnation in `[from, to]`, SIGKILL first.
    pub(super) fn ended_within(&self, name: &str, from: f64, to: f64) -> Option<End> {
        let lives = self.lives.get(name)?;
        let mut found = None;
        for l in lives {
            if l.how != End::Running && l.end >= from && l.end <= to {
                if l.how == End::Killed {
                    return Some(End::Killed);
                }
                found = Some(l.how);
            }
        }
        found
    }

    pub(super) fn fate(&self, key: &(String, u64, u64)) -> Fate {
        let send = self.sends.get(key);
        let recv = self.recvs.get(key);
        match (send, recv) {
            (None, None) => Fate::Failed, // not reachable: keys come from one of the maps
            (None, Some(_)) => Fate::ReceivedUnrecorded,
            (Some(s), Some(r)) if r.iter().any(|x| *x != s.to) => Fate::Misdelivered,
            (Some(s), Some(_)) if s.ok => Fate::Delivered,
            (Some(s), _) if s.unknown => Fate::Abandoned,
            (Some(s), Some(_)) if !s.ok => Fate::FailedButDelivered,
            (Some(s), None) if !s.ok => Fate::Failed,
            (Some(Sent { to, t, .. }), _) => {
                let t = *t;
                let sender_end = self.life(&key.0, key.1);
                match self.ended_within(to, t - WINDOW_BEFORE, t + WINDOW_AFTER) {
                    Some(End::Killed) => return Fate::InFlightToKilled,
                    Some(_) => return Fate::LostAtGracefulReceiver,
                    None => {}
                }
                match sender_end {
                    Some(l) if l.how == End::Killed && l.end - t <= WINDOW_AFTER => {
                        Fate::QueuedAtKilledSender
                    }
                    Some(l) if l.how != End::Killed && l.end - t <= WINDOW_AFTER => {
                        Fate::LostAtGracefulSender
                    }
                    _ => Fate::LostUnexplained,
                }
            }
        }
    }

    /// The lives of `name` that ended within the window around `t`, with their phases
    /// relative to `t`.
    pub(super) fn describe_lives(&self, name: &str, t: f64) -> String {
        let Some(lives) = self.lives.get(name) else {
            return format!("{name}: no lives");
        };
        let mut parts = Vec::new();
        for (i, l) in lives.iter().enumerate() {
            let near = l.end >= t - WINDOW_BEFORE && l.end <= t + WINDOW_AFTER + 10.0;
            if near || (l.start <= t && l.end >= t) {
                let mut p = format!("{name}#{i} {:?} [{:+.2}, ", l.how, l.start - t);
                if l.end.is_finite() {
                    p += &format!("{:+.2}]", l.end - t);
                } else {
                    p += "..]";
                }
                for (ph, at) in &l.phases {
                    p += &format!(" {ph} {:+.2}", at - t);
                }
                parts.push(p);
            }
        }
        parts.join(", ")
    }

    /// Every message's fate, counted; and up to `examples` examples of each dishonest one.
    pub(super) fn tally(&self, examples: usize) -> (BTreeMap<Fate, u64>, Vec<String>) {
        let mut counts = BTreeMap::new();
        let mut shown: BTreeMap<Fate, usize> = BTreeMap::new();
        let mut ex = Vec::new();
        let keys = self
            .sends
            .keys()
            .chain(self.recvs.keys().filter(|k| !self.sends.contains_key(*k)));
        for key in keys {
            let f = self.fate(key);
            *counts.entry(f).or_insert(0) += 1;
            if !f.is_honest() {
                let n = shown.entry(f).or_insert(0);
                if *n < examples {
                    *n += 1;
                    let (to, t) = self
                        .sends
                        .get(key)
                        .map_or(("?".into(), -1.0), |s| (s.to.clone(), s.t));
                    ex.push(format!(
                        "{f:?}: {}#{} seq {} -> {to} at {t:.2} s; {}; {}",
                        key.0,
                        key.1,
                        key.2,
                        self.describe_lives(&key.0, t),
                        self.describe_lives(&to, t),
                    ));
                }
            }
        }
        (counts, ex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with(lives: &[(&str, Vec<Life>)]) -> Ledger {
        let mut l = Ledger::default();
        for (n, v) in lives {
            l.lives.insert((*n).to_owned(), v.clone());
        }
        l
    }

    fn sent(to: &str, ok: bool, t: f64) -> Sent {
        Sent {
            to: to.to_owned(),
            ok,
            unknown: false,
            t,
        }
    }

    fn life(start: f64, end: f64, how: End) -> Life {
        Life {
            start,
            end,
            how,
            phases: Vec::new(),
        }
    }

    #[test]
    fn fates_of_messages() {
        let running = life(0.0, f64::INFINITY, End::Running);
        let mut l = ledger_with(&[
            ("a", vec![running.clone()]),
            (
                "b",
                vec![
                    life(0.0, 50.0, End::Killed),
                    life(50.0, 80.0, End::Graceful),
                    running.clone(),
                ],
            ),
            ("c", vec![life(0.0, 30.5, End::Killed), running]),
        ]);
        let key = |s: &str, i: u64, q: u64| (s.to_owned(), i, q);
        // Delivered, failed, failed but delivered.
        l.send("a", 0, 0, sent("b", true, 10.0));
        l.recv("b", "a".into(), 0, 0);
        l.send("a", 0, 1, sent("b", false, 10.0));
        l.send("a", 0, 2, sent("b", false, 10.0));
        l.recv("b", "a".into(), 0, 2);
        assert_eq!(l.fate(&key("a", 0, 0)), Fate::Delivered);
        assert_eq!(l.fate(&key("a", 0, 1)), Fate::Failed);
        assert_eq!(l.fate(&key("a", 0, 2)), Fate::FailedButDelivered);
        // Lost: receiver SIGKILLed 1 s after the send, and 4 s before it.
        l.send("a", 0, 3, sent("b", true, 49.0));
        l.send("a", 0, 4, sent("b", true, 54.0));
        assert_eq!(l.fate(&key("a", 0, 3)), Fate::InFlightToKilled);
        assert_eq!(l.fate(&key("a", 0, 4)), Fate::InFlightToKilled);
        // Lost around b's graceful stop at 80.
        l.send("a", 0, 5, sent("b", true, 79.5));
        assert_eq!(l.fate(&key("a", 0, 5)), Fate::LostAtGracefulReceiver);
        // Lost with nothing near: unexplained.
        l.send("a", 0, 6, sent("b", true, 20.0));
        assert_eq!(l.fate(&key("a", 0, 6)), Fate::LostUnexplained);
        // Sender c SIGKILLed just after sending.
        l.send("c", 0, 0, sent("a", true, 30.0));
        assert_eq!(l.fate(&key("c", 0, 0)), Fate::QueuedAtKilledSender);
        // Received without a send record; to the wrong node; twice.
        l.recv("a", "c".into(), 0, 1);
        assert_eq!(l.fate(&key("c", 0, 1)), Fate::ReceivedUnrecorded);
        l.send("a", 0, 7, sent("b", true, 20.0));
        l.recv("c", "a".into(), 0, 7);
        assert_eq!(l.fate(&key("a", 0, 7)), Fate::Misdelivered);
        l.recv("b", "a".into(), 0, 0);
        assert_eq!(l.duplicates, 1);
        let (counts, examples) = l.tally(10);
        assert_eq!(counts.values().sum::<u64>(), 10);
        assert_eq!(counts[&Fate::InFlightToKilled], 2);
        assert_eq!(examples.len(), 4, "{examples:?}");
    }
}
