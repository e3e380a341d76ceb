//! Errors and close reasons of `hail-link`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hail_wire::WireError;

/// Why a connection ended. Delivered in [`ServerEvent::Closed`](crate::ServerEvent::Closed),
/// [`ClientEvent::Disconnected`](crate::ClientEvent::Disconnected) and by
/// [`Connection::closed`](crate::Connection::closed).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the connection (end of stream, or a goodbye without another reason).
    #[error("the peer closed the connection")]
    PeerClosed,
    /// Nothing arrived from the peer for the heartbeat dead time.
    #[error("no data from the peer within the heartbeat dead time")]
    Timeout,
    /// The peer broke the protocol (bad framing, bad control frame, frame over the limit).
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// The peer does not know the passphrase, or a sealed frame failed to authenticate.
    #[error("authentication failed (wrong passphrase or tampered data)")]
    AuthFailed,
    /// The handshake did not finish within the handshake deadline.
    #[error("the handshake did not finish in time")]
    HandshakeTimeout,
    /// Our server, or the peer's, is shutting down.
    #[error("shut down")]
    Shutdown,
    /// Closed on this side by `close`, `disconnect` or by dropping the last handle.
    #[error("closed locally")]
    Closed,
    /// The server refused the connection (for example, it has `max_clients` clients).
    #[error("refused by the server: {0}")]
    Refused(RefuseReason),
    /// Disconnected by the server because its send queue overflowed (slow-client policy).
    #[error("disconnected as a slow consumer: the send queue was full")]
    SlowConsumer,
    /// Closed on this side because the connection held its draw on a spent memory budget
    /// ([`Budget`](crate::Budget)) without progress for the stall time
    /// ([`LinkConfig::budget_stall`](crate::LinkConfig::budget_stall), default 10 s): a
    /// partial frame the budget did not let the peer finish, or a send queue the peer did
    /// not read.
    #[error("closed: stalled on the memory budget")]
    MemoryBudget,
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
}

impl CloseReason {
    pub(crate) fn io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::PeerClosed,
            _ => Self::Io(Arc::new(e)),
        }
    }

    pub(crate) fn wire(e: WireError) -> Self {
        match e {
            WireError::Io(e) => Self::io(e),
            e => Self::Protocol(ProtocolError::Framing(Arc::new(e))),
        }
    }
}

/// How the peer broke the link protocol.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame layer failed (header over the limit, stream truncated).
    #[error("framing: {0}")]
    Framing(Arc<WireError>),
    /// A frame starts with a kind byte this version does not know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A control frame (hello, welcome, close) is malformed.
    #[error("malformed {0} frame")]
    BadControl(&'static str),
    /// A frame arrived that is not allowed at this point (for example a message before
    /// the handshake finished).
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    /// A sealed record is malformed (bad length, or an alert after the handshake).
    #[error("malformed sealed record")]
    BadRecord,
    /// The peer is not speaking hail's link protocol (bad hello magic).
    #[error("the peer does not speak the hail link protocol")]
    NotHail,
}

/// Why a server refused a connection; sent to the client before the server closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The server already has `max_clients` clients.
    #[error("the server is full")]
    ServerFull,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The peer speaks an unsupported protocol version.
    #[error("unsupported protocol version")]
    Version,
}

/// Errors of `hail-link` operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Binding, connecting or configuring a socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A message could not be encoded (payload codec error, or longer than the frame limit).
    #[error("cannot encode the message: {0}")]
    Encode(WireError),
    /// The connection is closed (the reason says why); the message was not sent.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The send queue is full (`try_send`); nothing was queued.
    #[error("the send queue is full")]
    Full,
    /// The client is not connected and cannot buffer the message (outage buffer full or
    /// reconnection disabled); nothing was queued.
    #[error("not connected")]
    NotConnected,
    /// No client with this id is connected to the server.
    #[error("no such client")]
    UnknownClient,
    /// The passphrase of the peer differs (or its handshake was tampered with).
    #[error("authentication failed (wrong passphrase?)")]
    AuthFailed,
    /// The handshake did not finish within the handshake deadline.
    #[error("the handshake did not finish in time")]
    HandshakeTimeout,
    /// The server refused the connection.
    #[error("refused by the server: {0}")]
    Refused(RefuseReason),
    /// A configuration builder refused a setting: the error of a `build()`, for `?` in
    /// code that returns `LinkError`. `bind` and `connect` never return it (a built
    /// config is valid).
    #[error("invalid configuration: {0}")]
    Config(#[from] LinkConfigError),
}

/// A [`LinkConfig`](crate::LinkConfig), [`ServerConfig`](crate::ServerConfig) or
/// [`ClientConfig`](crate::ClientConfig) setting that cannot work: the error of their
/// builders' `build()`, naming the setting and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkConfigError {
    /// A setting that must be positive is zero.
    #[error("{what} must be greater than zero")]
    Zero {
        /// The setting concerned.
        what: &'static str,
    },
    /// The heartbeat interval is zero, or the dead time is not longer than it (the peer
    /// would be declared dead before a heartbeat could arrive).
    #[error("heartbeat dead_after ({dead_after:?}) must exceed a non-zero interval ({interval:?})")]
    Heartbeat {
        /// The configured interval.
        interval: Duration,
        /// The configured dead time.
        dead_after: Duration,
    },
    /// Raw framing (Python Comms) with a pre-shared key, a group key or an identity: raw
    /// links cannot be encrypted.
    #[error(
        "raw framing (Python Comms) cannot be encrypted: psk, group_key and identity need hail framing"
    )]
    RawEncrypted,
    /// The reconnection backoff's maximum is below its initial delay.
    #[error("reconnect backoff max ({max:?}) is below its initial delay ({initial:?})")]
    BackoffRange {
        /// The initial delay.
        initial: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// `connect_in_background` without reconnection: the first connection would never be
    /// tried.
    #[error("connect_in_background needs reconnection on (ClientConfigBuilder::reconnect)")]
    BackgroundNeedsReconnect,
}

impl From<CloseReason> for LinkError {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::AuthFailed => Self::AuthFailed,
            CloseReason::HandshakeTimeout => Self::HandshakeTimeout,
            CloseReason::Refused(why) => Self::Refused(why),
            other => Self::Closed(other),
        }
    }
}
