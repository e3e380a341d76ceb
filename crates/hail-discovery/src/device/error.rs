//! What can go wrong: starting a device ([`DeviceError`]), sending ([`SendError`]),
//! asking ([`AskError`]), and while it runs ([`RunError`], reported as an event; a dial's
//! failure is a [`DialError`]).

use std::net::SocketAddr;

use hail_link::{LinkError, RefuseReason};
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
        /// The last attempt's error (why, typed).
        error: DialError,
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

/// Why a dial to a peer failed at one address: the last attempt's error in
/// [`RunError::DialFailed`]. Its messages are those of the [`LinkError`] it comes from.
///
/// ```
/// use hail_discovery::{DeviceEvent, DialError, RunError};
///
/// fn explain(event: &DeviceEvent) -> Option<&'static str> {
///     match event {
///         DeviceEvent::Error(RunError::DialFailed { error, .. }) => Some(match error {
///             DialError::AuthFailed => "another passphrase",
///             DialError::AnotherDevice { .. } => "the address is another device's now",
///             DialError::Connect { .. } => "unreachable",
///             _ => "other",
///         }),
///         _ => None,
///     }
/// }
/// # assert_eq!(explain(&DeviceEvent::Error(RunError::DialFailed {
/// #     peer: None, addrs: vec![], failures: 3, error: DialError::AuthFailed,
/// # })), Some("another passphrase"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The connection could not be made: refused, unreachable, timed out (the system's
    /// error, by kind and message).
    #[error("I/O error: {message}")]
    Connect {
        /// The kind of the system's error ([`std::io::ErrorKind::ConnectionRefused`], ...).
        kind: std::io::ErrorKind,
        /// The system's message.
        message: String,
    },
    /// The handshake's authentication failed: the other side has another passphrase, or
    /// none (or the handshake was tampered with). Also reported at once as
    /// [`RunError::AuthFailed`].
    #[error("authentication failed (wrong passphrase?)")]
    AuthFailed,
    /// The handshake did not finish within the handshake deadline.
    #[error("the handshake did not finish in time")]
    HandshakeTimeout,
    /// The other side refused the link (full, shutting down, another protocol version).
    #[error("refused by the server: {0}")]
    Refused(RefuseReason),
    /// The connection closed before the link was up (the reason's message).
    #[error("connection closed: {0}")]
    Closed(String),
    /// The address answered, but its handshake proved another device's key than the one
    /// expected there (the address is someone else's now): the link was closed.
    #[error("the address answered as device {}, not {expected}", proven_text(.proven))]
    AnotherDevice {
        /// The device the dial was for.
        expected: DeviceId,
        /// The device whose key the link proved (`None`: it proved none).
        proven: Option<DeviceId>,
    },
    /// The dial had no address.
    #[error("no address to dial")]
    NoAddress,
    /// Another link error (the link's message).
    #[error("{0}")]
    Link(String),
}

impl DialError {
    /// The dial error of a link that did not come up.
    pub(super) fn from_link(e: LinkError) -> Self {
        match e {
            LinkError::Io(e) => Self::Connect {
                kind: e.kind(),
                message: e.to_string(),
            },
            LinkError::AuthFailed => Self::AuthFailed,
            LinkError::HandshakeTimeout => Self::HandshakeTimeout,
            LinkError::Refused(r) => Self::Refused(r),
            LinkError::Closed(r) => Self::Closed(r.to_string()),
            e => Self::Link(e.to_string()),
        }
    }
}

/// The id a link proved, if any, for [`DialError::AnotherDevice`]'s message.
fn proven_text(proven: &Option<DeviceId>) -> String {
    match proven {
        Some(id) => id.to_string(),
        None => "(no key)".to_owned(),
    }
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

    /// A dial's error says what the link's did, and is typed.
    #[test]
    fn dial_errors_keep_the_link_errors_messages() {
        use hail_link::{LinkError, RefuseReason};

        use super::DialError;
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            LinkError::Io(io),
            LinkError::AuthFailed,
            LinkError::HandshakeTimeout,
            LinkError::Refused(RefuseReason::ServerFull),
            LinkError::Closed(hail_link::CloseReason::PeerClosed),
            LinkError::NotConnected,
        ];
        for link in cases {
            let text = link.to_string();
            let dial = DialError::from_link(link);
            assert_eq!(dial.to_string(), text, "{dial:?}");
        }
        let refused = DialError::from_link(LinkError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(
            matches!(
                refused,
                DialError::Connect {
                    kind: std::io::ErrorKind::ConnectionRefused,
                    ..
                }
            ),
            "{refused:?}"
        );
        let e = RunError::DialFailed {
            peer: None,
            addrs: vec!["127.0.0.1:9".parse().unwrap()],
            failures: 3,
            error: DialError::AuthFailed,
        };
        assert_eq!(
            e.to_string(),
            "3 dials in a row to [127.0.0.1:9] failed: authentication failed (wrong passphrase?)"
        );
    }
}
