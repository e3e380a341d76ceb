//! The exceptions: one class per kind of failure, all under `hail.HailError`, each with a
//! `kind` class attribute (snake_case, the word `hail --json` prints) and the Rust error's
//! message. The one place that turns the Rust crates' errors into Python exceptions.

use hail_discovery::{AskError, DeviceError, ResolveError, SendError};
use hail_rpc::RpcError;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::{PyTypeInfo, create_exception};

create_exception!(
    hail,
    HailError,
    PyException,
    "Base of every hail error. `kind` names the failure (`\"no_answer\"`, `\"not_connected\"` ...); \
     the message is the Rust error's."
);
create_exception!(
    hail,
    ConfigError,
    HailError,
    "A setting is invalid: the device name, a group, listen or interface address."
);
create_exception!(
    hail,
    NetworkError,
    HailError,
    "A socket could not be opened (the multicast group, the links' listener)."
);
create_exception!(
    hail,
    Closed,
    HailError,
    "The device or connection was closed."
);
create_exception!(
    hail,
    UnknownName,
    HailError,
    "No live device has this name."
);
create_exception!(
    hail,
    AmbiguousName,
    HailError,
    "Two or more live devices have this name; addressing it is refused, never a silent pick."
);
create_exception!(
    hail,
    NotConnected,
    HailError,
    "The device is known but no link to it is up."
);
create_exception!(
    hail,
    Full,
    HailError,
    "The peer's link has no room now (`send_nowait`); `await send(...)` waits for room instead."
);
create_exception!(
    hail,
    TooLarge,
    HailError,
    "The message is longer than a link frame carries; nothing was sent."
);
create_exception!(
    hail,
    Timeout,
    HailError,
    "No reply within the timeout (a call; the remote handler may have run)."
);
create_exception!(
    hail,
    NoAnswer,
    Timeout,
    "A question got no answer within the timeout (not the same as an empty answer, `b\"\"`)."
);
create_exception!(
    hail,
    Unreachable,
    HailError,
    "The target's link was lost while waiting for its answer (a target not connected when asked is NotConnected)."
);
create_exception!(
    hail,
    ConnectionLost,
    HailError,
    "The link dropped while a call was in flight: the outcome is unknown."
);
create_exception!(
    hail,
    RemoteError,
    HailError,
    "The remote handler failed (its message), has none for this question, or panicked."
);
create_exception!(
    hail,
    UnknownMethod,
    RemoteError,
    "The remote has no handler bound to this method; nothing ran."
);
create_exception!(
    hail,
    BadArguments,
    RemoteError,
    "The remote could not decode the arguments; nothing ran."
);
create_exception!(
    hail,
    Busy,
    HailError,
    "The remote refused the call without running it (its queues are full); retrying later is safe."
);
create_exception!(
    hail,
    AuthFailed,
    HailError,
    "The peer could not be authenticated: another passphrase, or none."
);

/// Every exception class with its `kind`.
pub(crate) fn classes(py: Python<'_>) -> Vec<(Bound<'_, PyType>, &'static str)> {
    vec![
        (HailError::type_object(py), "error"),
        (ConfigError::type_object(py), "config"),
        (NetworkError::type_object(py), "network"),
        (Closed::type_object(py), "closed"),
        (UnknownName::type_object(py), "unknown_name"),
        (AmbiguousName::type_object(py), "ambiguous_name"),
        (NotConnected::type_object(py), "not_connected"),
        (Full::type_object(py), "full"),
        (TooLarge::type_object(py), "too_large"),
        (Timeout::type_object(py), "timeout"),
        (NoAnswer::type_object(py), "no_answer"),
        (Unreachable::type_object(py), "unreachable"),
        (ConnectionLost::type_object(py), "connection_lost"),
        (RemoteError::type_object(py), "remote"),
        (UnknownMethod::type_object(py), "unknown_method"),
        (BadArguments::type_object(py), "bad_arguments"),
        (Busy::type_object(py), "busy"),
        (AuthFailed::type_object(py), "auth_failed"),
    ]
}

/// `send` to `name` failed.
pub(crate) fn send_error(name: &str, e: &SendError) -> PyErr {
    let msg = format!("{name}: {e}");
    match e {
        SendError::Resolve(e) => resolve_error(e),
        SendError::Full => Full::new_err(msg),
        SendError::TooLarge { .. } => TooLarge::new_err(msg),
        _ => HailError::new_err(msg),
    }
}

/// Asking `name` failed.
pub(crate) fn ask_error(name: &str, e: &AskError) -> PyErr {
    let msg = format!("{name}: {e}");
    match e {
        AskError::NoAnswer => NoAnswer::new_err(msg),
        AskError::Unreachable => Unreachable::new_err(msg),
        AskError::Resolve(e) => resolve_error(e),
        AskError::Handler(_) => RemoteError::new_err(msg),
        _ => HailError::new_err(msg),
    }
}

/// A name did not resolve to one joined device.
pub(crate) fn resolve_error(e: &ResolveError) -> PyErr {
    let msg = e.to_string();
    match e {
        ResolveError::UnknownName(_) => UnknownName::new_err(msg),
        ResolveError::AmbiguousName { .. } => AmbiguousName::new_err(msg),
        ResolveError::NotConnected(_) => NotConnected::new_err(msg),
        _ => HailError::new_err(msg),
    }
}

/// A call to `name`'s method failed.
pub(crate) fn rpc_error(name: &str, method: &str, e: &RpcError) -> PyErr {
    let msg = format!("{name}.{method}: {e}");
    match e {
        RpcError::Timeout => Timeout::new_err(msg),
        RpcError::ConnectionLost => ConnectionLost::new_err(msg),
        RpcError::NotConnected | RpcError::Stale => NotConnected::new_err(msg),
        RpcError::UnknownMethod(_) => UnknownMethod::new_err(msg),
        RpcError::BadArguments(_) => BadArguments::new_err(msg),
        RpcError::Handler(_) | RpcError::HandlerPanicked => RemoteError::new_err(msg),
        RpcError::AuthFailed => AuthFailed::new_err(msg),
        RpcError::Busy => Busy::new_err(msg),
        _ => HailError::new_err(msg),
    }
}

/// The device could not start (or the question handler was set twice).
pub(crate) fn device_error(e: &DeviceError) -> PyErr {
    let msg = e.to_string();
    match e {
        DeviceError::Config(_) | DeviceError::Key(_) | DeviceError::KnownDevices(_) => {
            ConfigError::new_err(msg)
        }
        DeviceError::Multicast(_) | DeviceError::Link(_) => NetworkError::new_err(msg),
        _ => HailError::new_err(msg),
    }
}

/// The device was closed.
pub(crate) fn closed() -> PyErr {
    Closed::new_err("the device is closed")
}
