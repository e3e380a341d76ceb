//! The crate's error type.

use std::path::PathBuf;

use crate::identity::{IdentityFileProblem, InvalidKeyReason};

/// What went wrong in key derivation, sealing, signing or with an identity file.
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
    /// Bytes received as a public key are not a usable Ed25519 public key.
    #[error("invalid public key: {reason}")]
    InvalidPublicKey {
        /// What is wrong with it.
        reason: InvalidKeyReason,
    },
    /// A signature does not verify for this key, context and message.
    #[error("signature does not verify")]
    BadSignature,
    /// An incarnation's 2^32 sequence numbers are used up; load the identity file again for
    /// a new incarnation.
    #[error("the 2^32 sequence numbers of incarnation {incarnation} are used up")]
    SequenceExhausted {
        /// The incarnation that ran out.
        incarnation: u64,
    },
    /// The incarnation would pass 2^32 - 1, the most a sequence number can carry.
    #[error("the incarnation counter is at its maximum of 2^32 - 1")]
    IncarnationExhausted,
    /// An identity file could not be read, used or written.
    #[error("identity file {}: {problem}", path.display())]
    IdentityFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: IdentityFileProblem,
    },
}
