//! What can go wrong: starting a device ([`DeviceError`]), sending ([`SendError`]),
//! asking ([`AskError`]), and while it runs ([`RunError`], reported as an event).

use std::net::SocketAddr;

use hail_link::LinkError;
use hail_multicast::MulticastError;

use crate::error::{ConfigError, ResolveError};
use crate::format::FormatError;
use crate::id::DeviceId;

/// Something went wrong starting or running a [`Device`](crate::Device).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The name or the discovery settings are invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The discovery multicast channel could not be opened.
    #[error("multicast: {0}")]
    Multicast(#[from] MulticastError),
    /// The TCP listener could not be opened, or the link settings made from the device's
    /// could not be built ([`LinkError::Config`]: the identity's Noise key pair could not
    /// be made).
    #[error("link: {0}")]
    Link(#[from] LinkError),
    /// The group key could not be derived from the passphrase (bad KDF parameters).
    #[error("key derivation: {0}")]
    Key(#[from] hail_crypto::CryptoError),
    /// The known-devices file could not be read ([`DeviceBuilder::known_devices`](crate::DeviceBuilder::known_devices)).
    #[error("known devices: {0}")]
    KnownDevices(#[from] super::trust::KnownDevicesError),
    /// [`Device::on_question`](crate::Device::on_question) was called a second time.
    #[error("the question handler is already set")]
    QuestionHandlerSet,
}

/// Why a message could not be handed to a peer's link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The name does not lead to one connected device: unknown, ambiguous, or known but
    /// not connected (also when its link closed under the send, or the device was
    /// closed): the error [`Device::to`](crate::Device::to) and
    /// [`Device::peer`](crate::Device::peer) return, too.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The peer's link has no room now ([`PeerSender::try_send`](crate::PeerSender::try_send)
    /// only: the other sends wait for room).
    #[error("the link's send queue is full")]
    Full,
    /// The message (`len` bytes) is longer than the links carry in one frame
    /// ([`LinkConfig::max_frame_len`](hail_link::LinkConfig::max_frame_len), less one
    /// byte of the device's own); nothing was sent.
    #[error("message of {len} bytes is longer than the link's frame limit")]
    TooLarge {
        /// The message's length.
        len: usize,
    },
}

/// Why a question got no answer from one target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// No answer within the timeout.
    #[error("no answer in time")]
    NoAnswer,
    /// The target's link was lost while asking (the question may have been answered),
    /// or it closed before the question was sent.
    #[error("unreachable")]
    Unreachable,
    /// The name does not lead to one connected device: unknown, ambiguous, or known but
    /// not connected; nothing was asked. The error [`Device::to`](crate::Device::to) and
    /// [`Device::peer`](crate::Device::peer) return, too.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The target's question handler failed, or it has none.
    #[error("handler: {0}")]
    Handler(String),
    /// The answer arrived but is not a valid value in the device's
    /// [`MessageFormat`](crate::MessageFormat) ([`Device::ask_msg`](crate::Device::ask_msg)).
    #[error("undecodable answer: {0}")]
    Undecodable(FormatError),
}

/// What went wrong while a [`Device`](crate::Device) runs (in
/// [`DeviceEvent::Error`](crate::DeviceEvent::Error)); the device keeps running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A link failed the handshake's authentication: the other side has another
    /// passphrase, or none. `addr` is the address this device dialed; `None` for
    /// connections it accepted (counted since the last report, checked at each timer
    /// tick of the device, at least once a second).
    #[error("{count} {} failed authentication", handshakes(.addr))]
    AuthFailed {
        /// The address dialed, if this device dialed.
        addr: Option<SocketAddr>,
        /// How many handshakes failed this way.
        count: u64,
    },
    /// Dials to one peer (or one static address) failed this many times in a row.
    /// Reported after 3, 6, 12, 24 ... failures, while redials go on with backoff.
    #[error("{failures} dials in a row to {addrs:?} failed: {error}")]
    DialFailed {
        /// The device expected at the other end, if known.
        peer: Option<DeviceId>,
        /// The addresses of the last attempt.
        addrs: Vec<SocketAddr>,
        /// Failures in a row.
        failures: u32,
        /// The last attempt's error.
        error: String,
    },
    /// Events were dropped because the event stream was full (not read fast enough);
    /// reported once there is room again.
    /// [`Device::dropped_events`](crate::Device::dropped_events) counts them all.
    #[error("{count} events dropped: the event stream was full")]
    EventsDropped {
        /// Events dropped since the last report.
        count: u64,
    },
}

/// Whose handshakes [`RunError::AuthFailed`] counts, for its message.
fn handshakes(addr: &Option<SocketAddr>) -> String {
    match addr {
        Some(a) => format!("link handshake(s) with {a}"),
        None => "incoming link handshake(s)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::RunError;

    #[test]
    fn run_errors_are_std_errors_with_the_same_messages() {
        fn is_error<E: std::error::Error>(_: &E) {}
        let e = RunError::AuthFailed {
            addr: Some("127.0.0.1:5000".parse().unwrap()),
            count: 2,
        };
        is_error(&e);
        assert_eq!(
            e.to_string(),
            "2 link handshake(s) with 127.0.0.1:5000 failed authentication"
        );
        let e = RunError::AuthFailed {
            addr: None,
            count: 1,
        };
        assert_eq!(
            e.to_string(),
            "1 incoming link handshake(s) failed authentication"
        );
        let e = RunError::EventsDropped { count: 3 };
        assert_eq!(e.to_string(), "3 events dropped: the event stream was full");
    }
}
