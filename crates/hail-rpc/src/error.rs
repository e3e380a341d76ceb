//! The errors of `hail-rpc`: [`RpcError`] for calls, [`BindError`] for handler registration.

use crate::method::{MAX_METHOD_NAME_LEN, Method, Opcode, RetCode, Status};

/// Why a call did not produce a result. Each variant says exactly what is known about
/// whether the remote handler ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No reply within the call's timeout; a cancel was sent (the handler may have run).
    #[error("no reply within the timeout")]
    Timeout,
    /// The connection dropped while the call was in flight: the outcome is unknown.
    #[error("connection lost while the call was in flight (outcome unknown)")]
    ConnectionLost,
    /// There is no connection to send the call on (never connected, reconnecting, or closed).
    #[error("not connected")]
    NotConnected,
    /// This handle's connection ended for good and nothing will reconnect it (its
    /// [`PeerDriver`](crate::PeerDriver) was dropped: a link without reconnection closed,
    /// an [`RpcClient`](crate::RpcClient) gave up, or a device replaced the link), so no
    /// call on it can succeed again; nothing was sent. Get a new handle: `Device::peer`
    /// again for a device's peer (it serves the link that is up now), a new client
    /// otherwise.
    #[error("stale peer handle: its connection ended; get a new one")]
    Stale,
    /// The remote has no handler bound to this method; nothing ran.
    #[error("the remote has no handler for {0}")]
    UnknownMethod(Method),
    /// The remote could not decode the arguments as its handler's argument type; nothing ran.
    #[error("the remote could not decode the arguments: {0}")]
    BadArguments(String),
    /// The remote handler ran and returned an error, with its message.
    #[error("the remote handler failed: {0}")]
    Handler(String),
    /// The remote handler panicked; that connection and the other calls on it live on.
    #[error("the remote handler panicked")]
    HandlerPanicked,
    /// The reply arrived but did not decode as the expected result type.
    #[error("the reply did not decode as the expected type: {0}")]
    Decode(String),
    /// The link could not authenticate the peer (wrong passphrase); nothing was sent.
    #[error("authentication with the peer failed")]
    AuthFailed,
    /// A kept reply was evicted (too old or too many kept) before `poll` collected it.
    #[error("the kept reply expired before it was collected")]
    Expired,
    /// `poll` or `flush` named a retcode that is not in flight or kept: never issued on
    /// this peer, already collected, or polled by another task at the same time.
    #[error("retcode {0} is not in flight or kept")]
    UnknownRetCode(RetCode),
    /// The remote refused the call without running it: its handler queue was full, or its
    /// answers to us were backed up because we read them too slowly (see
    /// [`RpcConfig::max_outbox_bytes`](crate::RpcConfig::max_outbox_bytes)). Retrying
    /// later is safe.
    #[error("the remote is busy (handler queue full or its answers to us backed up); nothing ran")]
    Busy,
    /// The arguments could not be serialized (postcard's message).
    #[error("the arguments could not be encoded: {0}")]
    Encode(String),
    /// The reply carried a status this version does not know.
    #[error("the reply has unknown status {0}")]
    UnknownStatus(Status),
}

impl RpcError {
    /// True when the remote handler certainly did not run (safe to retry a non-idempotent
    /// call): unknown method, bad arguments, busy, not connected, stale, auth failed, encode
    /// failure.
    pub fn handler_did_not_run(&self) -> bool {
        matches!(
            self,
            Self::UnknownMethod(_)
                | Self::BadArguments(_)
                | Self::Busy
                | Self::NotConnected
                | Self::Stale
                | Self::AuthFailed
                | Self::Encode(_)
        )
    }
}

/// Why a handler could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A handler is already bound to this method; `unbind` it first.
    #[error("a handler is already bound to {0}")]
    AlreadyBound(Method),
    /// The opcode is in the range reserved for hail (`0xff00..=0xffff`).
    #[error("opcode {0} is reserved for hail")]
    Reserved(Opcode),
    /// The name is longer than [`MAX_METHOD_NAME_LEN`] bytes.
    #[error("method name of {len} bytes exceeds the limit of {MAX_METHOD_NAME_LEN}")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
    },
}
