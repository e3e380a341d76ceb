//! The replay window: which counters of one session have been accepted.

/// Counters a window remembers behind the highest one seen: 1024.
pub const REPLAY_WINDOW: u64 = 1024;

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Why a counter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Already accepted once.
    Replayed,
    /// Too far behind the highest accepted counter to tell.
    TooOld,
}

/// A sliding bitmap over the last [`REPLAY_WINDOW`] counters of a session.
///
/// `check` is called before the tag is verified and changes nothing; `accept` is called only
/// after it verified, so a forged datagram cannot move the window.
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    /// Highest accepted counter.
    top: u64,
    /// Bit `c % REPLAY_WINDOW` is set when counter `c` (within the window) was accepted.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// A window whose first accepted counter is `first`.
    pub(crate) fn starting_at(first: u64) -> Self {
        let mut w = Self {
            top: first,
            bits: [0; WORDS],
        };
        w.set(first);
        w
    }

    fn set(&mut self, c: u64) {
        let i = (c % REPLAY_WINDOW) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
    }

    fn get(&self, c: u64) -> bool {
        let i = (c % REPLAY_WINDOW) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn clear(&mut self, c: u64) {
        let i = (c % REPLAY_WINDOW) as usize;
        self.bits[i / 64] &= !(1 << (i % 64));
    }

    /// Whether `c` would be accepted. Changes nothing.
    pub(crate) fn check(&self, c: u64) -> Result<(), Refusal> {
        if c > self.top {
            Ok(())
        } else if self.top - c >= REPLAY_WINDOW {
            Err(Refusal::TooOld)
        } else if self.get(c) {
            Err(Refusal::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `c` as accepted (after `check` passed and the tag verified).
    pub(crate) fn accept(&mut self, c: u64) {
        if c > self.top {
            let advance = c - self.top;
            if advance >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Forget the counters that slide out: top+1 ..= c share slots with them.
                let mut k = self.top + 1;
                while k <= c {
                    if k.is_multiple_of(64) && c - k >= 63 {
                        self.bits[((k % REPLAY_WINDOW) / 64) as usize] = 0;
                        k += 64;
                    } else {
                        self.clear(k);
                        k += 1;
                    }
                }
            }
            self.top = c;
        }
        self.set(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, c: u64) -> Result<(), Refusal> {
        w.check(c)?;
        w.accept(c);
        Ok(())
    }

    #[test]
    fn in_order_then_replays() {
        let mut w = ReplayWindow::starting_at(0);
        for c in 1..5000 {
            assert_eq!(accept(&mut w, c), Ok(()));
        }
        for c in 5000 - REPLAY_WINDOW..5000 {
            assert_eq!(accept(&mut w, c), Err(Refusal::Replayed), "counter {c}");
        }
        for c in 0..5000 - REPLAY_WINDOW {
            assert_eq!(accept(&mut w, c), Err(Refusal::TooOld), "counter {c}");
        }
    }

    #[test]
    fn reordered_within_window_once() {
        let mut w = ReplayWindow::starting_at(100);
        // Jump ahead, then fill the hole behind.
        assert_eq!(accept(&mut w, 1000), Ok(()));
        for c in (101..1000).rev() {
            assert_eq!(accept(&mut w, c), Ok(()));
            assert_eq!(accept(&mut w, c), Err(Refusal::Replayed));
        }
        assert_eq!(accept(&mut w, 100), Err(Refusal::Replayed));
    }

    #[test]
    fn big_jump_forgets_everything_but_the_window() {
        let mut w = ReplayWindow::starting_at(5);
        assert_eq!(accept(&mut w, 5 + 3 * REPLAY_WINDOW), Ok(()));
        // Counters in the new window that were never accepted pass, even those whose slots
        // held accepted counters before.
        assert_eq!(accept(&mut w, 5 + 2 * REPLAY_WINDOW + 1), Ok(()));
        assert_eq!(accept(&mut w, 5 + 2 * REPLAY_WINDOW), Err(Refusal::TooOld));
    }

    #[test]
    fn check_does_not_move_the_window() {
        let w = ReplayWindow::starting_at(10);
        assert_eq!(w.check(10_000), Ok(()));
        assert_eq!(w.check(10), Err(Refusal::Replayed));
        assert_eq!(w.check(9), Ok(()));
    }

    proptest::proptest! {
        /// Against a model (a set of every accepted counter): each counter is accepted at
        /// most once, and every refusal is right.
        #[test]
        fn matches_model(first in 0u64..3000, seq in proptest::collection::vec(0u64..3000, 1..400)) {
            let mut w = ReplayWindow::starting_at(first);
            let mut seen = std::collections::BTreeSet::from([first]);
            let mut top = first;
            for c in seq {
                let got = accept(&mut w, c);
                let want = if c + REPLAY_WINDOW <= top {
                    Err(Refusal::TooOld)
                } else if seen.contains(&c) {
                    Err(Refusal::Replayed)
                } else {
                    Ok(())
                };
                proptest::prop_assert_eq!(got, want, "counter {}", c);
                if got.is_ok() {
                    seen.insert(c);
                    top = top.max(c);
                }
            }
        }
    }
}
