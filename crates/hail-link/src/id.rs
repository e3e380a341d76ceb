//! Connection ids: the one name a connection has in this process.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one connection for the life of the process (also used as the server's client id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

/// A server's name for one of its clients: the [`ConnId`] of that client's connection.
pub type ClientId = ConnId;

impl ConnId {
    pub(crate) fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The number behind the id (unique in this process, never reused).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
