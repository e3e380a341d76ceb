//! What a device reports, as Python objects: [`Peer`], and one class per
//! [`DeviceEvent`] variant. [`event_to_py`] is the one place that converts events.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hail_discovery::{DeviceEvent, DeviceId, LeaveReason, PeerInfo, RunError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// A joined device: its name, its id (hex: the key its link proved), where it can be
/// dialed, and the metadata it signed into its adverts.
#[pyclass(module = "hail", frozen, get_all)]
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The device's name.
    name: String,
    /// Its id, as hex: derived from the key its link proved (stable across restarts for a
    /// device with an identity file, else new each run).
    id: String,
    /// Its link addresses, `"ip:port"`, best first.
    addresses: Vec<String>,
    /// The metadata it signed into its announce, a dict str -> str (empty when none).
    metadata: BTreeMap<String, String>,
}

#[pymethods]
impl Peer {
    /// The fields a `match` statement binds by position.
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str, &'static str) {
        ("name", "id", "addresses", "metadata")
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!(
            "Peer(name={:?}, id={:?}, addresses={:?}, metadata={:?})",
            self.name, self.id, self.addresses, self.metadata
        )
    }

    /// Equal when the name, id, addresses and metadata are.
    fn __eq__(&self, other: &Self) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.addresses == other.addresses
            && self.metadata == other.metadata
    }
}

impl Peer {
    pub(crate) fn from_info(p: &PeerInfo) -> Self {
        Self {
            name: p.name.clone(),
            id: p.id.to_string(),
            addresses: p.addresses.iter().map(SocketAddr::to_string).collect(),
            metadata: p.metadata.clone(),
        }
    }

    /// The name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The best address as `(ip, port)`, pythonConnect's form.
    pub(crate) fn first_address(&self) -> Option<(String, u16)> {
        let a: SocketAddr = self.addresses.first()?.parse().ok()?;
        Some((a.ip().to_string(), a.port()))
    }
}

/// A message from a peer: `sender` is the name the link's peer joined with, `sender_id`
/// its id (hex), derived from the key the link proved; neither is a field of the message.
#[pyclass(module = "hail", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct Message {
    /// The sender's name.
    sender: Py<PyString>,
    /// The message.
    data: Py<PyBytes>,
    /// The sender's id, as hex (the key its link proved: `Peer.id`).
    sender_id: Py<PyString>,
}

#[pymethods]
impl Message {
    /// The fields a `match` statement binds by position.
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str) {
        ("sender", "data", "sender_id")
    }

    /// The object as text, for debugging.
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Message(sender={:?}, data=<{} bytes>, sender_id={:?})",
            self.sender.bind(py).to_string(),
            self.data.bind(py).as_bytes().len(),
            self.sender_id.bind(py).to_string()
        )
    }
}

/// A peer is connected and ready.
#[pyclass(module = "hail", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct PeerJoined {
    /// Who.
    peer: Peer,
}

#[pymethods]
impl PeerJoined {
    /// The fields a `match` statement binds by position.
    #[classattr]
    fn __match_args__() -> (&'static str,) {
        ("peer",)
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!("PeerJoined({})", self.peer.__repr__())
    }
}

/// A peer left; `reason` is `"goodbye"`, `"timeout"`, `"connection_lost"` or `"restarted"`.
#[pyclass(module = "hail", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct PeerLeft {
    /// Who.
    peer: Peer,
    /// Why.
    reason: String,
}

#[pymethods]
impl PeerLeft {
    /// The fields a `match` statement binds by position.
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("peer", "reason")
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!(
            "PeerLeft({}, reason={:?})",
            self.peer.__repr__(),
            self.reason
        )
    }
}

/// The joined peers changed: all of them now, sorted by name then id.
#[pyclass(module = "hail", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct PeersChanged {
    /// The joined peers.
    peers: Vec<Peer>,
}

#[pymethods]
impl PeersChanged {
    /// The fields a `match` statement binds by position.
    #[classattr]
    fn __match_args__() -> (&'static str,) {
        ("peers",)
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        let names: Vec<&str> = self.peers.iter().map(Peer::name).collect();
        format!("PeersChanged({names:?})")
    }
}

/// Several live devices share a name (addressing it raises `AmbiguousName`).
#[pyclass(module = "hail", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct DuplicateName {
    /// The name.
    name: String,
    /// The ids (hex) that hold it.
    ids: Vec<String>,
}

#[pymethods]
impl DuplicateName {
    /// The fields a `match` statement binds by position.
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("name", "ids")
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!("DuplicateName({:?}, ids={:?})", self.name, self.ids)
    }
}

/// Something went wrong while the device runs; it keeps running. `kind` is
/// `"auth_failed"`, `"dial_failed"` or `"events_dropped"`.
#[pyclass(module = "hail", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct ErrorEvent {
    /// What went wrong.
    kind: String,
    /// The Rust error's message.
    message: String,
}

#[pymethods]
impl ErrorEvent {
    /// The fields a `match` statement binds by position.
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("kind", "message")
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!("ErrorEvent({:?}, {:?})", self.kind, self.message)
    }
}

impl ErrorEvent {
    /// The kind and message of a run error.
    pub(crate) fn kind_and_message(e: &RunError) -> (&'static str, String) {
        let kind = match e {
            RunError::AuthFailed { .. } => "auth_failed",
            RunError::DialFailed { .. } => "dial_failed",
            RunError::EventsDropped { .. } => "events_dropped",
            _ => "error",
        };
        (kind, e.to_string())
    }
}

/// Why a peer left, as a word.
pub(crate) fn leave_reason(r: &LeaveReason) -> String {
    match r {
        LeaveReason::Goodbye => "goodbye".into(),
        LeaveReason::Timeout => "timeout".into(),
        LeaveReason::ConnectionLost => "connection_lost".into(),
        LeaveReason::Restarted => "restarted".into(),
        #[allow(unreachable_patterns, reason = "LeaveReason is non_exhaustive")]
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Senders most recently seen, kept by [`Senders`]: 64. Past that the table starts over
/// (a device with more peers than that sending at once pays the conversions again).
const SENDERS: usize = 64;

/// The Python strings of recent senders (name and hex id), by id: a message from a known
/// sender reuses them rather than formatting 32 hex digits and making two strings each
/// time. Bounded by [`SENDERS`].
#[derive(Debug, Default)]
pub(crate) struct Senders(Mutex<SenderTable>);

/// [`Senders`]' table, and the sender of the last message on its own: a run of messages
/// from one sender (one link's name is one `Arc`) costs no hashing of its id.
#[derive(Debug, Default)]
struct SenderTable {
    by_id: HashMap<DeviceId, Sender>,
    last: Option<(DeviceId, Sender)>,
}

/// A sender's name, and its name and hex id as Python strings.
#[derive(Debug)]
struct Sender {
    name: Arc<str>,
    py_name: Py<PyString>,
    py_id: Py<PyString>,
}

impl Sender {
    fn strings(&self, py: Python<'_>) -> (Py<PyString>, Py<PyString>) {
        (self.py_name.clone_ref(py), self.py_id.clone_ref(py))
    }

    fn clone_ref(&self, py: Python<'_>) -> Self {
        Self {
            name: self.name.clone(),
            py_name: self.py_name.clone_ref(py),
            py_id: self.py_id.clone_ref(py),
        }
    }
}

impl Senders {
    /// The sender's name and id as Python strings.
    fn get(&self, py: Python<'_>, from: Arc<str>, id: DeviceId) -> (Py<PyString>, Py<PyString>) {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((last_id, s)) = &table.last
            && Arc::ptr_eq(&s.name, &from)
            && *last_id == id
        {
            return s.strings(py);
        }
        if let Some(s) = table.by_id.get(&id)
            && s.name == from
        {
            let out = s.strings(py);
            table.last = Some((id, s.clone_ref(py)));
            return out;
        }
        if table.by_id.len() >= SENDERS {
            table.by_id.clear();
        }
        let sender = Sender {
            py_name: PyString::new(py, &from).unbind(),
            py_id: PyString::new(py, &id.to_string()).unbind(),
            name: from,
        };
        let out = sender.strings(py);
        table.last = Some((id, sender.clone_ref(py)));
        table.by_id.insert(id, sender);
        out
    }
}

/// The Python object for a device event: the one conversion of [`DeviceEvent`]s.
/// `senders` keeps the strings of recent senders.
pub(crate) fn event_to_py(
    py: Python<'_>,
    event: DeviceEvent,
    senders: &Senders,
) -> PyResult<Py<PyAny>> {
    let obj = match event {
        DeviceEvent::Message {
            from,
            from_id,
            payload,
            ..
        } => {
            let (sender, sender_id) = senders.get(py, from, from_id);
            Py::new(
                py,
                Message {
                    sender,
                    data: PyBytes::new(py, &payload).unbind(),
                    sender_id,
                },
            )?
            .into_any()
        }
        DeviceEvent::PeerJoined(peer) => Py::new(
            py,
            PeerJoined {
                peer: Peer::from_info(&peer),
            },
        )?
        .into_any(),
        DeviceEvent::PeerLeft { peer, reason, .. } => Py::new(
            py,
            PeerLeft {
                peer: Peer::from_info(&peer),
                reason: leave_reason(&reason),
            },
        )?
        .into_any(),
        DeviceEvent::PeersChanged(peers) => Py::new(
            py,
            PeersChanged {
                peers: peers.iter().map(Peer::from_info).collect(),
            },
        )?
        .into_any(),
        DeviceEvent::DuplicateName { name, ids, .. } => Py::new(
            py,
            DuplicateName {
                name,
                ids: ids.iter().map(ToString::to_string).collect(),
            },
        )?
        .into_any(),
        DeviceEvent::Error(e) => {
            let (kind, message) = ErrorEvent::kind_and_message(&e);
            Py::new(
                py,
                ErrorEvent {
                    kind: kind.into(),
                    message,
                },
            )?
            .into_any()
        }
        other => Py::new(
            py,
            ErrorEvent {
                kind: "unknown_event".into(),
                message: format!("{other:?}"),
            },
        )?
        .into_any(),
    };
    Ok(obj)
}
