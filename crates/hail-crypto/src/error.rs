//! The crate's error type.

/// What went wrong in key derivation or sealing.
///
/// Rejections of received datagrams are not errors of this type: they are
/// `OpenError` values, one per reason a datagram is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The PBKDF2 iteration count is below the documented floor, [`KdfParams::MIN_ITERATIONS`](crate::KdfParams::MIN_ITERATIONS).
    #[error("PBKDF2 iteration count {iterations} is below the floor of {floor}")]
    IterationsTooLow {
        /// The iteration count that was asked for.
        iterations: u32,
        /// The smallest accepted iteration count.
        floor: u32,
    },
    /// The sender's 64-bit counter is used up; start a new session (a new `Sealer`).
    #[error("the session's 64-bit counter is exhausted; start a new session")]
    CounterExhausted,
    /// The output buffer cannot hold the sealed datagram.
    #[error("output buffer of {have} bytes is too small, {need} needed")]
    BufferTooSmall {
        /// Bytes the sealed datagram needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}
