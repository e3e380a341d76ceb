//! The [`Opener`]: verifies sealed datagrams and refuses replays.

use std::collections::HashMap;
use std::fmt;

use ring::aead::Aad;

use crate::datagram::{HEADER_LEN, SessionId, SessionKeys, TAG_LEN, parse_header};
use crate::replay::{Refusal, ReplayWindow};
use crate::{GroupKey, SubKey};

/// Why a received datagram was refused. Each is counted and dropped by the caller; none is a
/// reason to stop receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a sealed datagram of this format: too short, wrong magic or unknown version.
    #[error("malformed sealed datagram: {0}")]
    Malformed(&'static str),
    /// The tag does not verify: sealed for another group or passphrase, or altered in transit.
    #[error("datagram does not authenticate (other group or key, or tampered)")]
    WrongGroupOrKey,
    /// Authentic, but this session's counter was already accepted.
    #[error("datagram replayed")]
    Replayed,
    /// Authentic or not, its counter is behind the replay window and cannot be told apart
    /// from a replay.
    #[error("datagram too old for the replay window")]
    TooOld,
}

/// An opened datagram: the plaintext (inside the caller's buffer) and where it came from.
#[derive(Debug)]
#[non_exhaustive]
pub struct Opened<'a> {
    /// The plaintext payload, decrypted in place inside the buffer given to [`Opener::open`].
    pub payload: &'a mut [u8],
    /// The sender session the datagram belongs to.
    pub session: SessionId,
    /// The datagram's counter within its session.
    pub counter: u64,
}

/// Limits of an [`Opener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenerConfig {
    /// Sender sessions tracked at once; past this the least recently heard one is forgotten.
    /// Default: 256 (about 1 KiB each, so about 256 KiB when full). Clamped to
    /// 1..=[`OpenerConfig::MAX_SESSIONS_LIMIT`], since the table is allocated up front.
    pub max_sessions: usize,
}

impl OpenerConfig {
    /// The default number of sessions tracked, 256.
    pub const DEFAULT_MAX_SESSIONS: usize = 256;

    /// The most sessions an opener tracks, 65,536 (about 64 MiB of table).
    pub const MAX_SESSIONS_LIMIT: usize = 65_536;

    /// Sets [`OpenerConfig::max_sessions`] (clamped to 1..=65,536).
    #[must_use]
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n.clamp(1, Self::MAX_SESSIONS_LIMIT);
        self
    }
}

impl Default for OpenerConfig {
    fn default() -> Self {
        Self {
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
        }
    }
}

struct Session {
    id: SessionId,
    keys: SessionKeys,
    window: ReplayWindow,
    last_used: u64,
}

/// Opens sealed datagrams of one group: verifies the tag first, then refuses replays.
///
/// For each sender session it keeps the session key and a replay window of
/// [`REPLAY_WINDOW`](crate::REPLAY_WINDOW) counters, updated only after the tag verified, so
/// forged datagrams change no state. At most [`OpenerConfig::max_sessions`] sessions are kept;
/// a new one evicts the least recently heard. The table is allocated up front: opening
/// allocates nothing.
///
/// A datagram of a session not in the table costs one HKDF derivation before its tag can be
/// checked; a session enters the table only once a datagram of it verified.
pub struct Opener {
    root: SubKey,
    sessions: Vec<Session>,
    index: HashMap<SessionId, usize>,
    max_sessions: usize,
    tick: u64,
}

impl Opener {
    /// An opener for datagrams sealed under `key`, with the default limits.
    pub fn new(key: &GroupKey) -> Self {
        Self::with_config(key, OpenerConfig::default())
    }

    /// An opener with explicit limits.
    pub fn with_config(key: &GroupKey, config: OpenerConfig) -> Self {
        let max_sessions = config
            .max_sessions
            .clamp(1, OpenerConfig::MAX_SESSIONS_LIMIT);
        Self {
            root: key.multicast_root(),
            sessions: Vec::with_capacity(max_sessions),
            index: HashMap::with_capacity(max_sessions),
            max_sessions,
            tick: 0,
        }
    }

    /// Sender sessions currently tracked.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Verifies and decrypts `datagram` in place.
    ///
    /// # Errors
    /// The [`OpenError`] saying why the datagram is refused; the opener's state is then
    /// unchanged (except that a session whose datagram verified but was replayed counts as
    /// recently heard).
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<Opened<'a>, OpenError> {
        let header = parse_header(datagram).map_err(OpenError::Malformed)?;
        self.tick += 1;
        let (head, body) = datagram.split_at_mut(HEADER_LEN);
        debug_assert!(body.len() >= TAG_LEN);
        if let Some(&slot) = self.index.get(&header.session) {
            let s = &mut self.sessions[slot];
            // Cheap refusal first; it changes nothing.
            s.window.check(header.counter).map_err(refusal)?;
            let payload = s
                .keys
                .aead
                .open_in_place(s.keys.nonce(header.counter), Aad::from(&*head), body)
                .map_err(|_| OpenError::WrongGroupOrKey)?;
            s.window.accept(header.counter);
            s.last_used = self.tick;
            return Ok(Opened {
                payload,
                session: header.session,
                counter: header.counter,
            });
        }
        let keys = SessionKeys::derive(&self.root, &header.session);
        let payload = keys
            .aead
            .open_in_place(keys.nonce(header.counter), Aad::from(&*head), body)
            .map_err(|_| OpenError::WrongGroupOrKey)?;
        let session = Session {
            id: header.session,
            keys,
            window: ReplayWindow::starting_at(header.counter),
            last_used: self.tick,
        };
        if self.sessions.len() < self.max_sessions {
            self.index.insert(session.id, self.sessions.len());
            self.sessions.push(session);
        } else {
            let (slot, _) = self
                .sessions
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
                .expect("max_sessions >= 1, so a full table is not empty");
            self.index.remove(&self.sessions[slot].id);
            self.index.insert(session.id, slot);
            self.sessions[slot] = session;
        }
        Ok(Opened {
            payload,
            session: header.session,
            counter: header.counter,
        })
    }
}

fn refusal(r: Refusal) -> OpenError {
    match r {
        Refusal::Replayed => OpenError::Replayed,
        Refusal::TooOld => OpenError::TooOld,
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("sessions", &self.sessions.len())
            .field("max_sessions", &self.max_sessions)
            .field("keys", &"[redacted]")
            .finish()
    }
}
