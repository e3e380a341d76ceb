//! `hail.Server` and `hail.Client`: the framed links of [`hail_link`] (Python Comms' and
//! CLOVIS' job), with callbacks for connect, message and close, and Python Comms mode.
//!
//! The Rust side carries bytes ([`Binary`]); the `mode` converts at the edge as Python
//! Comms' modes do: `"bytes"` as they are, `"string"` UTF-8 text, `"json"` JSON text
//! (`json.dumps(obj).encode()`). A frame that does not decode in the mode is dropped and
//! counted (`stats()["undecodable"]`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hail_crypto::GroupKey;
use hail_link::{
    Backoff, Client, ClientConfig, ClientEvent, ClientId, CloseReason, LinkConfig, LinkConfigError,
    LinkError, Server, ServerConfig, ServerEvent,
};
use hail_wire::Binary;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyString};

use crate::bridge::{awaitable_result, ready};
use crate::device::{parse_addr, seconds};
use crate::errors::{self, ConfigError, HailError, NetworkError};
use crate::handler::{Handler, Helper};
use crate::runtime::{block_on, runtime};

/// The name a link passphrase's key is derived with (`GroupKey::derive(passphrase,
/// "hail-link")`): a Rust `hail_link` peer with the same key talks to these.
const KEY_GROUP: &str = "hail-link";

/// A payload mode, Python Comms' three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `bytes` in and out.
    Bytes,
    /// `str`, UTF-8 on the wire.
    String,
    /// Any JSON-compatible value, JSON text on the wire.
    Json,
}

impl Mode {
    fn parse(s: &str) -> PyResult<Self> {
        match s {
            "bytes" | "binary" => Ok(Self::Bytes),
            "string" | "str" => Ok(Self::String),
            "json" => Ok(Self::Json),
            _ => Err(ConfigError::new_err(format!(
                "mode {s:?}: expected \"bytes\", \"string\" or \"json\""
            ))),
        }
    }

    /// A Python value as the bytes this mode sends.
    fn encode(self, obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
        match self {
            Self::Bytes => Ok(Bytes::copy_from_slice(
                obj.extract::<pyo3::pybacked::PyBackedBytes>()?.as_ref(),
            )),
            Self::String => Ok(Bytes::from(obj.extract::<String>()?.into_bytes())),
            Self::Json => {
                let json = obj.py().import("json")?;
                let text: String = json.call_method1("dumps", (obj,))?.extract()?;
                Ok(Bytes::from(text.into_bytes()))
            }
        }
    }

    /// Received bytes as this mode's Python value; `Err` for a frame that does not decode.
    fn decode(self, py: Python<'_>, data: &[u8]) -> Result<Py<PyAny>, ()> {
        match self {
            Self::Bytes => Ok(PyBytes::new(py, data).into_any().unbind()),
            Self::String => std::str::from_utf8(data)
                .map(|s| PyString::new(py, s).into_any().unbind())
                .map_err(drop),
            Self::Json => {
                let text = std::str::from_utf8(data).map_err(drop)?;
                py.import("json")
                    .and_then(|j| j.call_method1("loads", (text,)))
                    .map(Bound::unbind)
                    .map_err(drop)
            }
        }
    }
}

/// The link settings of the keywords: hail's framing (heartbeats; a passphrase makes it
/// Noise `NNpsk0`), or Python Comms' (little-endian u32 length, no handshake, plaintext).
fn link_config(
    py: Python<'_>,
    passphrase: Option<String>,
    python_comms: bool,
) -> PyResult<LinkConfig> {
    match (python_comms, passphrase) {
        (true, Some(_)) => Err(ConfigError::new_err(
            "python_comms links are plaintext (Python Comms has no encryption): no passphrase",
        )),
        // Python Comms' recv is not looped: frames much over a socket read break it.
        (true, None) => LinkConfig::builder()
            .python_comms()
            .max_frame_len(PYTHON_COMMS_MAX_FRAME)
            .build()
            .map_err(config_error),
        (false, Some(p)) => {
            let key = py.detach(|| GroupKey::derive(&p, KEY_GROUP));
            LinkConfig::builder()
                .group_key(&key)
                .build()
                .map_err(config_error)
        }
        (false, None) => Ok(LinkConfig::default()),
    }
}

/// The frame limit in Python Comms mode: 16 KiB, what a Python Comms peer reads whole (see
/// `LinkConfigBuilder::python_comms`).
const PYTHON_COMMS_MAX_FRAME: u32 = 16 * 1024;

/// A setting the link builders refused, as a Python `ConfigError`.
fn config_error(e: LinkConfigError) -> PyErr {
    link_error(&LinkError::Config(e))
}

/// A link error as a Python exception.
fn link_error(e: &LinkError) -> PyErr {
    let msg = e.to_string();
    match e {
        LinkError::Full => errors::Full::new_err(msg),
        LinkError::NotConnected => errors::NotConnected::new_err(msg),
        LinkError::UnknownClient => errors::UnknownName::new_err(msg),
        LinkError::AuthFailed => errors::AuthFailed::new_err(msg),
        LinkError::HandshakeTimeout => errors::Timeout::new_err(msg),
        LinkError::Closed(_) => errors::Closed::new_err(msg),
        LinkError::Encode(_) => errors::TooLarge::new_err(msg),
        LinkError::Config(_) => ConfigError::new_err(msg),
        LinkError::Io(_) | LinkError::Refused(_) => NetworkError::new_err(msg),
        _ => HailError::new_err(msg),
    }
}

/// Why a link closed, as a word (`"peer_closed"`, `"timeout"`, `"auth_failed"`,
/// `"shutdown"`, `"closed"`, `"refused"`, `"slow_consumer"`, `"protocol"`, `"io"` ...).
fn close_reason(r: &CloseReason) -> &'static str {
    match r {
        CloseReason::PeerClosed => "peer_closed",
        CloseReason::Timeout => "timeout",
        CloseReason::Protocol(_) => "protocol",
        CloseReason::AuthFailed => "auth_failed",
        CloseReason::HandshakeTimeout => "handshake_timeout",
        CloseReason::Shutdown => "shutdown",
        CloseReason::Closed => "closed",
        CloseReason::Refused(_) => "refused",
        CloseReason::SlowConsumer => "slow_consumer",
        CloseReason::Io(_) => "io",
        _ => "other",
    }
}

/// The three callbacks, each run as `Device.on_question`'s handler is (on the event loop
/// that was running when the object was made, else on a handler thread), one at a time, in
/// the order of the events.
#[derive(Debug, Clone, Default)]
struct Callbacks {
    on_connect: Option<Handler>,
    on_message: Option<Handler>,
    on_close: Option<Handler>,
}

impl Callbacks {
    fn new(
        py: Python<'_>,
        on_connect: Option<Py<PyAny>>,
        on_message: Option<Py<PyAny>>,
        on_close: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let h = |f: Option<Py<PyAny>>| f.map(|f| Handler::new(py, f)).transpose();
        Ok(Self {
            on_connect: h(on_connect)?,
            on_message: h(on_message)?,
            on_close: h(on_close)?,
        })
    }
}

/// Calls `handler` (if any) with what `args` makes (nothing: not called); its exception
/// is logged on the `hail` logger by `hail._invoke` and otherwise ignored (the link goes
/// on).
async fn run(
    handler: Option<&Handler>,
    args: impl FnOnce(Python<'_>) -> Option<Vec<Py<PyAny>>> + Send + 'static,
) {
    if let Some(h) = handler {
        let args = move |py: Python<'_>| args(py).ok_or_else(String::new);
        let _ = h.invoke(Helper::Call, args, |_, _| Ok(())).await;
    }
}

fn int(py: Python<'_>, n: u64) -> Py<PyAny> {
    PyInt::new(py, n).into_any().unbind()
}

fn text(py: Python<'_>, s: &str) -> Py<PyAny> {
    PyString::new(py, s).into_any().unbind()
}

/// A framed TCP server for many clients (Python Comms' server, CLOVIS' server): whole
/// messages, clients told apart by an id, a real client limit, callbacks for connect,
/// message and close.
///
/// `Server(listen="127.0.0.1:0", *, passphrase=None, mode="bytes", python_comms=False,
/// max_clients=64, on_connect=None, on_message=None, on_close=None)`: `listen` is
/// `"addr:port"` (port 0: a free one, see `address`). `on_connect(client_id, address)`,
/// `on_message(client_id, message)`, `on_close(client_id, reason)`; plain or coroutine
/// functions, run one at a time in the order of the events (on the event loop running when
/// the server was made, else on a handler thread). `mode` is Python Comms' payload mode:
/// `"bytes"`, `"string"` or `"json"`. `python_comms=True` speaks Python Comms' own wire
/// (little-endian u32 length, no handshake, plaintext, frames up to 16 KiB) so its clients
/// connect; otherwise hail's links (heartbeats; a passphrase makes them Noise `NNpsk0`,
/// the key derived as `GroupKey::derive(passphrase, "hail-link")`). `max_clients`: more
/// are refused (the default is hail-link's, 64).
#[pyclass(module = "hail", name = "Server", frozen)]
pub(crate) struct PyServer {
    /// `None` once closed.
    server: Arc<std::sync::Mutex<Option<Server<Binary>>>>,
    address: String,
    mode: Mode,
    /// Frames that did not decode in `mode`.
    undecodable: Arc<AtomicU64>,
}

impl std::fmt::Debug for PyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl PyServer {
    /// Runs `f` on the server, or fails with `Closed`.
    fn with<R>(&self, f: impl FnOnce(&Server<Binary>) -> PyResult<R>) -> PyResult<R> {
        let guard = self.server.lock().unwrap_or_else(|p| p.into_inner());
        let s = guard
            .as_ref()
            .ok_or_else(|| errors::Closed::new_err("the server is closed"))?;
        f(s)
    }

    /// The client with the number `id` (the ids the callbacks get).
    fn client(server: &Server<Binary>, id: u64) -> PyResult<ClientId> {
        server
            .clients()
            .into_iter()
            .map(|(c, _)| c)
            .find(|c| c.get() == id)
            .ok_or_else(|| errors::UnknownName::new_err(format!("no client {id}")))
    }
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (listen="127.0.0.1:0", *, passphrase=None, mode="bytes",
                        python_comms=false, max_clients=None, on_connect=None,
                        on_message=None, on_close=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keywords, one per setting"
    )]
    fn new(
        py: Python<'_>,
        listen: &str,
        passphrase: Option<String>,
        mode: &str,
        python_comms: bool,
        max_clients: Option<usize>,
        on_connect: Option<Py<PyAny>>,
        on_message: Option<Py<PyAny>>,
        on_close: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let addr = parse_addr("listen", listen)?;
        let mode = Mode::parse(mode)?;
        let mut config = ServerConfig::builder().link(link_config(py, passphrase, python_comms)?);
        if let Some(n) = max_clients {
            config = config.max_clients(n);
        }
        let config = config.build().map_err(config_error)?;
        let callbacks = Callbacks::new(py, on_connect, on_message, on_close)?;
        let (server, mut events) =
            block_on(py, Server::bind(addr, config, Binary))?.map_err(|e| link_error(&e))?;
        let undecodable = Arc::new(AtomicU64::new(0));
        let bad = undecodable.clone();
        // The pump: the server's events to the callbacks, in order. Ends with the stream
        // (after close). A callback that takes long holds the next events back, and the
        // bounded stream then holds the clients back (backpressure, not loss).
        runtime().spawn(async move {
            while let Some(event) = events.recv().await {
                let cb = &callbacks;
                match event {
                    ServerEvent::Connected { id, addr, .. } => {
                        run(cb.on_connect.as_ref(), move |py| {
                            Some(vec![int(py, id.get()), text(py, &addr.to_string())])
                        })
                        .await;
                    }
                    ServerEvent::Message { id, msg } => {
                        let Some(h) = cb.on_message.as_ref() else {
                            continue;
                        };
                        // Decoded where the handler runs, under the same GIL acquisition.
                        let bad = bad.clone();
                        run(Some(h), move |py| match mode.decode(py, &msg) {
                            Ok(v) => Some(vec![int(py, id.get()), v]),
                            Err(()) => {
                                bad.fetch_add(1, Ordering::Relaxed);
                                None
                            }
                        })
                        .await;
                    }
                    ServerEvent::Closed { id, reason } => {
                        run(cb.on_close.as_ref(), move |py| {
                            Some(vec![int(py, id.get()), text(py, close_reason(&reason))])
                        })
                        .await;
                    }
                    ServerEvent::Undecodable { .. } => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        Ok(Self {
            address: server.local_addr().to_string(),
            server: Arc::new(std::sync::Mutex::new(Some(server))),
            mode,
            undecodable,
        })
    }

    /// The `"ip:port"` the server accepts on (the port actually bound).
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// The connected clients, a dict client id -> `"ip:port"`.
    fn clients<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.with(|s| {
            let d = PyDict::new(py);
            for (id, addr) in s.clients() {
                d.set_item(id.get(), addr.to_string())?;
            }
            Ok(d)
        })
    }

    /// `await send_to(client_id, message)`: sends to one client, waiting while its queue
    /// is full. Raises `UnknownName` for an id not connected, `TooLarge`, `Closed`.
    fn send_to<'py>(
        &self,
        py: Python<'py>,
        client_id: u64,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = self.mode.encode(message)?;
        let conn = self.with(|s| {
            let id = Self::client(s, client_id)?;
            s.connection(id)
                .ok_or_else(|| errors::UnknownName::new_err(format!("no client {client_id}")))
        })?;
        awaitable_result(py, async move {
            conn.send(data).await.map_err(|e| link_error(&e))
        })
    }

    /// `broadcast(message)`: queues `message` for every client without waiting; a client
    /// whose queue is full is disconnected (a slow consumer). Returns how many queued it.
    fn broadcast(&self, message: &Bound<'_, PyAny>) -> PyResult<usize> {
        let data = self.mode.encode(message)?;
        self.with(|s| {
            s.broadcast(data)
                .map(|r| r.queued)
                .map_err(|e| link_error(&e))
        })
    }

    /// `disconnect(client_id)`: closes one client gracefully (what is queued goes out
    /// first). False if no such client.
    fn disconnect(&self, client_id: u64) -> PyResult<bool> {
        self.with(|s| {
            Ok(match Self::client(s, client_id) {
                Ok(id) => s.disconnect(id),
                Err(_) => false,
            })
        })
    }

    /// The server's counters, a dict: `accepted`, `refused_full`, `auth_failures`,
    /// `handshake_failures`, `slow_disconnects`, `clients`, `undecodable` ...
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let bad = self.undecodable.load(Ordering::Relaxed);
        self.with(|s| {
            let st = s.stats();
            let d = PyDict::new(py);
            for (k, v) in [
                ("accepted", st.accepted),
                ("refused_full", st.refused_full),
                ("refused_pending", st.refused_pending),
                ("auth_failures", st.auth_failures),
                ("handshake_failures", st.handshake_failures),
                ("broadcast_dropped", st.broadcast_dropped),
                ("slow_disconnects", st.slow_disconnects),
                ("clients", st.clients as u64),
                ("undecodable", st.undecodable + bad),
            ] {
                d.set_item(k, v)?;
            }
            Ok(d)
        })
    }

    /// `await close(deadline=1.0)`: stops accepting, lets queued messages go out and
    /// clients finish, for at most `deadline` seconds; every client's `on_close` runs
    /// (reason `"shutdown"`). Closing twice does nothing.
    #[pyo3(signature = (deadline=1.0))]
    fn close<'py>(&self, py: Python<'py>, deadline: f64) -> PyResult<Bound<'py, PyAny>> {
        let deadline = seconds(deadline)?;
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        awaitable_result(py, async move {
            if let Some(s) = server {
                s.close(deadline).await;
            }
            Ok(())
        })
    }

    /// `async with Server(...) as server:`: the server itself.
    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ready(py, slf.into_any())
    }

    /// Closes the server on the way out of an `async with` block.
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_type: &Bound<'py, PyAny>,
        _exc: &Bound<'py, PyAny>,
        _tb: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py, 1.0)
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!("Server(address={:?})", self.address)
    }
}

/// A framed TCP client that reconnects by itself (Python Comms' client, done right):
/// whole messages, callbacks for connect, message and close, an outage buffer that holds
/// what is sent while disconnected (256 KiB) and goes out first on reconnection.
///
/// `Client(address, *, passphrase=None, mode="bytes", python_comms=False, reconnect=True,
/// on_connect=None, on_message=None, on_close=None)`: `address` is the server's
/// `"ip:port"`; the first connection must succeed (else `NetworkError`). `on_connect(address)`
/// on each (re)connection, `on_message(message)`, `on_close(reason)` when a connection
/// ends; run as `Server`'s. `mode`, `python_comms` and `passphrase` as for `Server`.
/// `reconnect=False`: stay disconnected after the first loss. Reconnection waits 100 ms,
/// doubling to 5 s, with jitter.
#[pyclass(module = "hail", name = "Client", frozen)]
pub(crate) struct PyClient {
    /// `None` once closed.
    client: std::sync::Mutex<Option<Arc<Client<Binary>>>>,
    address: String,
    mode: Mode,
    undecodable: Arc<AtomicU64>,
}

impl std::fmt::Debug for PyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl PyClient {
    fn client(&self) -> PyResult<Arc<Client<Binary>>> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| errors::Closed::new_err("the client is closed"))
    }
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (address, *, passphrase=None, mode="bytes", python_comms=false,
                        reconnect=true, on_connect=None, on_message=None, on_close=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keywords, one per setting"
    )]
    fn new(
        py: Python<'_>,
        address: &str,
        passphrase: Option<String>,
        mode: &str,
        python_comms: bool,
        reconnect: bool,
        on_connect: Option<Py<PyAny>>,
        on_message: Option<Py<PyAny>>,
        on_close: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let addr: SocketAddr = parse_addr("address", address)?;
        let mode = Mode::parse(mode)?;
        let config = ClientConfig::builder()
            .link(link_config(py, passphrase, python_comms)?)
            .reconnect(reconnect.then(Backoff::default))
            .build()
            .map_err(config_error)?;
        let callbacks = Callbacks::new(py, on_connect, on_message, on_close)?;
        let (client, mut events) =
            block_on(py, Client::connect(addr, config, Binary))?.map_err(|e| link_error(&e))?;
        let undecodable = Arc::new(AtomicU64::new(0));
        let bad = undecodable.clone();
        runtime().spawn(async move {
            while let Some(event) = events.recv().await {
                let cb = &callbacks;
                match event {
                    ClientEvent::Connected { addr, .. } => {
                        run(cb.on_connect.as_ref(), move |py| {
                            Some(vec![text(py, &addr.to_string())])
                        })
                        .await;
                    }
                    ClientEvent::Message(msg) => {
                        let Some(h) = cb.on_message.as_ref() else {
                            continue;
                        };
                        let bad = bad.clone();
                        run(Some(h), move |py| match mode.decode(py, &msg) {
                            Ok(v) => Some(vec![v]),
                            Err(()) => {
                                bad.fetch_add(1, Ordering::Relaxed);
                                None
                            }
                        })
                        .await;
                    }
                    ClientEvent::Disconnected { reason } => {
                        run(cb.on_close.as_ref(), move |py| {
                            Some(vec![text(py, close_reason(&reason))])
                        })
                        .await;
                    }
                    ClientEvent::Undecodable { .. } => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        Ok(Self {
            address: addr.to_string(),
            client: std::sync::Mutex::new(Some(Arc::new(client))),
            mode,
            undecodable,
        })
    }

    /// The server's `"ip:port"`.
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// Whether a connection is up now.
    #[getter]
    fn connected(&self) -> bool {
        self.client().is_ok_and(|c| c.is_connected())
    }

    /// `await send(message)`: sends to the server, waiting while the queue is full; while
    /// disconnected it goes to the outage buffer (`NotConnected` once that is full, or
    /// without reconnection). `TooLarge`, `Closed`.
    fn send<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = self.mode.encode(message)?;
        let client = self.client()?;
        awaitable_result(py, async move {
            client.send(data).await.map_err(|e| link_error(&e))
        })
    }

    /// `send_nowait(message)`: queues `message` now, or raises `Full` when the queue has no
    /// room (`NotConnected`, `TooLarge`, `Closed`). No await: the hot path.
    fn send_nowait(&self, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = self.mode.encode(message)?;
        self.client()?.try_send(data).map_err(|e| link_error(&e))
    }

    /// The client's counters, a dict: `reconnects`, `failed_attempts`,
    /// `buffered_during_outage`, `discarded`, `undecodable`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.client()?.stats();
        let d = PyDict::new(py);
        for (k, v) in [
            ("reconnects", st.reconnects),
            ("failed_attempts", st.failed_attempts),
            ("buffered_during_outage", st.buffered_during_outage),
            ("discarded", st.discarded),
            (
                "undecodable",
                st.undecodable + self.undecodable.load(Ordering::Relaxed),
            ),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// `await close()`: closes the connection gracefully (what is queued goes out first)
    /// and stops reconnecting; returns how many messages of the outage buffer were
    /// discarded. Closing twice does nothing (returns 0).
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        awaitable_result(py, async move {
            Ok(match client {
                Some(c) => c.close().await,
                None => 0,
            })
        })
    }

    /// `async with Client(...) as client:`: the client itself.
    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ready(py, slf.into_any())
    }

    /// Closes the client on the way out of an `async with` block.
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_type: &Bound<'py, PyAny>,
        _exc: &Bound<'py, PyAny>,
        _tb: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!("Client(address={:?})", self.address)
    }
}
