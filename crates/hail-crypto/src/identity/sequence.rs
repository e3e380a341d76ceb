//! Record sequence numbers that keep increasing across restarts, without a clock.
//!
//! ```text
//! sequence number = incarnation << 32 | counter      (u64; both halves 32 bits)
//! ```
//!
//! The incarnation counts the runs of a device with one key (the identity file increments
//! it at every load, [`Identity::load_or_create`](crate::Identity::load_or_create)); the
//! counter counts the records signed within one run. Any record of a later run therefore
//! outranks every record of an earlier one, and Raspberry Pis without a real-time clock need
//! no time of day for it.

use std::fmt;

use crate::CryptoError;

/// Which run of a device this is: 0 for a key's first run, +1 at every later load of its
/// identity file.
///
/// Limited to 2^32 - 1 (a sequence number has 32 bits for it); at one restart a second that
/// is 136 years. A value above is refused ([`CryptoError::IncarnationExhausted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(u64);

impl Incarnation {
    /// The first run of a key, and the incarnation of a [`generate`d](crate::Identity::generate)
    /// identity (its key lives as long as the process, so it has only one run).
    pub const FIRST: Self = Self(0);

    /// The largest incarnation, 2^32 - 1.
    pub const MAX: Self = Self(u32::MAX as u64);

    /// An incarnation kept by the caller (for keys stored outside an identity file).
    ///
    /// # Errors
    /// [`CryptoError::IncarnationExhausted`] above [`Incarnation::MAX`].
    pub fn new(n: u64) -> Result<Self, CryptoError> {
        if n > Self::MAX.0 {
            return Err(CryptoError::IncarnationExhausted);
        }
        Ok(Self(n))
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The incarnation after this one.
    ///
    /// # Errors
    /// [`CryptoError::IncarnationExhausted`] at [`Incarnation::MAX`].
    pub fn next(self) -> Result<Self, CryptoError> {
        Self::new(self.0 + 1)
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Hands out the sequence numbers of one incarnation: `incarnation << 32 | counter`, the
/// counter going 0, 1, 2, ... so numbers strictly increase.
///
/// After 2^32 numbers in one incarnation (at 10 records a second, 13 years) it refuses with
/// [`CryptoError::SequenceExhausted`] rather than wrap into the next incarnation's range,
/// which a later run will use; load the identity file again
/// ([`Identity::load_or_create`](crate::Identity::load_or_create)) for a new incarnation and
/// start a new `Sequence`. Not `Clone`: two sequences of one incarnation would hand out the
/// same numbers.
///
/// ```
/// use hail_crypto::{Incarnation, Sequence};
///
/// let mut seq = Sequence::new(Incarnation::new(3)?);
/// assert_eq!(seq.next()?, 3 << 32);
/// assert_eq!(seq.next()?, 3 << 32 | 1);
/// assert_eq!(Sequence::split(3 << 32 | 1), (Incarnation::new(3)?, 1));
/// # Ok::<(), hail_crypto::CryptoError>(())
/// ```
#[derive(Debug)]
pub struct Sequence {
    incarnation: Incarnation,
    /// The counter of the next number; 2^32 once exhausted.
    counter: u64,
}

impl Sequence {
    /// Counters per incarnation, 2^32.
    pub const PER_INCARNATION: u64 = 1 << 32;

    /// The sequence of `incarnation`, starting at counter 0.
    pub fn new(incarnation: Incarnation) -> Self {
        Self {
            incarnation,
            counter: 0,
        }
    }

    /// The incarnation this sequence numbers.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The next sequence number.
    ///
    /// # Errors
    /// [`CryptoError::SequenceExhausted`] once 2^32 numbers were handed out.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<u64, CryptoError> {
        if self.counter >= Self::PER_INCARNATION {
            return Err(CryptoError::SequenceExhausted {
                incarnation: self.incarnation.get(),
            });
        }
        let n = self.incarnation.get() << 32 | self.counter;
        self.counter += 1;
        Ok(n)
    }

    /// Numbers left in this incarnation.
    pub fn remaining(&self) -> u64 {
        Self::PER_INCARNATION - self.counter
    }

    /// A sequence number's incarnation and counter.
    pub fn split(seq: u64) -> (Incarnation, u32) {
        (Incarnation(seq >> 32), seq as u32)
    }

    #[cfg(test)]
    pub(crate) fn at(incarnation: Incarnation, counter: u64) -> Self {
        Self {
            incarnation,
            counter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_increase_within_and_across_incarnations() {
        let mut a = Sequence::new(Incarnation::FIRST);
        let first: Vec<u64> = (0..3).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        let mut b = Sequence::new(Incarnation::FIRST.next().unwrap());
        let later = b.next().unwrap();
        assert_eq!(later, 1 << 32);
        assert!(later > *first.last().unwrap());
        // The last number of an incarnation is still below the first of the next.
        let mut end = Sequence::at(Incarnation::new(7).unwrap(), Sequence::PER_INCARNATION - 1);
        let last = end.next().unwrap();
        assert_eq!(last, 7 << 32 | 0xffff_ffff);
        assert!(last < Sequence::new(Incarnation::new(8).unwrap()).next().unwrap());
    }

    #[test]
    fn an_exhausted_incarnation_refuses_instead_of_wrapping() {
        let mut s = Sequence::at(Incarnation::new(5).unwrap(), Sequence::PER_INCARNATION - 2);
        assert_eq!(s.remaining(), 2);
        assert!(s.next().is_ok());
        assert!(s.next().is_ok());
        assert_eq!(s.remaining(), 0);
        for _ in 0..3 {
            assert_eq!(
                s.next(),
                Err(CryptoError::SequenceExhausted { incarnation: 5 })
            );
        }
    }

    #[test]
    fn incarnations_stop_at_32_bits() {
        assert_eq!(Incarnation::MAX.get(), u64::from(u32::MAX));
        assert_eq!(
            Incarnation::new(1 << 32),
            Err(CryptoError::IncarnationExhausted)
        );
        assert_eq!(
            Incarnation::MAX.next(),
            Err(CryptoError::IncarnationExhausted)
        );
        // The largest incarnation still numbers without overflow.
        let mut s = Sequence::new(Incarnation::MAX);
        assert_eq!(s.next().unwrap(), 0xffff_ffff_0000_0000);
        assert_eq!(
            Sequence::split(0xffff_ffff_0000_0005),
            (Incarnation::MAX, 5)
        );
    }
}
