//! `hail.Device`: the asyncio front of [`hail_discovery::Device`], and [`Core`], the
//! device state that `hail.Device` and `hail.Connect` share.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hail_discovery::{
    Device, DeviceBuilder, DeviceEvents, Interface, PeerSender, SendError, Targets,
};
use hail_link::SEND_COPY_BELOW;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyDict, PyString};
use tokio::sync::RwLock;

use crate::bridge::{awaitable, ready};
use crate::errors::{self, ConfigError, HailError};
use crate::event_stream::{Events, Returned};
use crate::events::{Peer, Senders};
use crate::handler::{Handler, Helper, describe};
use crate::runtime::block_on;

/// Whom to send to or ask, from Python: `None` for every joined peer, a name, or a list
/// (or tuple) of names.
#[derive(Debug, Clone)]
pub(crate) enum To {
    /// One name: results raise (send) or stand alone.
    One(String),
    /// Several names or all: results come as a dict.
    Many(Targets),
}

impl To {
    pub(crate) fn extract(to: &Bound<'_, PyAny>) -> PyResult<Self> {
        if to.is_none() {
            return Ok(Self::Many(Targets::All));
        }
        if let Ok(s) = to.cast::<PyString>() {
            return Ok(Self::One(s.extract::<String>()?));
        }
        let names: Vec<String> = to.extract().map_err(|_| {
            PyTypeError::new_err("`to` must be a device name, a list of names, or None (all)")
        })?;
        Ok(Self::Many(Targets::Many(names)))
    }

    pub(crate) fn targets(&self) -> Targets {
        match self {
            Self::One(n) => Targets::One(n.clone()),
            Self::Many(t) => t.clone(),
        }
    }
}

/// The keywords `hail.Device` and `hail.Connect` share beyond the name and passphrase: who
/// the device is across restarts, and whom it trusts.
#[derive(Debug, Default)]
pub(crate) struct Trust {
    /// `identity_file=`: the device's key and incarnation kept in this file (created the
    /// first time, mode 0600), for an id that survives restarts.
    pub(crate) identity_file: Option<PathBuf>,
    /// `known_devices=`: names pinned to the first key seen under them (trust on first use),
    /// kept in this file.
    pub(crate) known_devices: Option<PathBuf>,
    /// `metadata=`: str -> str entries signed into the adverts (`Peer.metadata`).
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// The settings `hail.Device` and `hail.Connect` take, made into a [`DeviceBuilder`].
///
/// `interface`: a name (`"lo"`, `"eth0"`), an index or an address (`"127.0.0.1"`), or a
/// list of them. `group` and `listen`: `"addr:port"`. Without `listen`, links listen on the
/// first address of the group's family of the one `interface` named, else on every
/// address; port 0 (a free one).
pub(crate) fn builder(
    name: &str,
    passphrase: Option<String>,
    interface: Option<&Bound<'_, PyAny>>,
    group: Option<&str>,
    listen: Option<&str>,
    trust: Trust,
) -> PyResult<DeviceBuilder> {
    let mut b = Device::builder(name);
    let interfaces = interfaces(interface)?;
    for i in &interfaces {
        b = b.interface(i.clone());
    }
    let group = group.map(|g| parse_addr("group", g)).transpose()?;
    if let Some(g) = group {
        b = b.group(g);
    }
    match listen {
        Some(l) => b = b.listen(parse_addr("listen", l)?),
        None => {
            // With one interface, on its first address of the group's family, as the `hail`
            // command does; else the device's default, every address.
            let v6 = group.map(|g| g.is_ipv6());
            let ip = hail_discovery::listen_ip(&interfaces, v6)
                .map_err(|e| ConfigError::new_err(e.to_string()))?;
            if let Some(ip) = ip {
                b = b.listen(SocketAddr::new(ip, 0));
            }
        }
    }
    if let Some(p) = passphrase {
        b = b.passphrase(p);
    }
    if let Some(path) = trust.identity_file {
        b = b.identity_file(path);
    }
    if let Some(path) = trust.known_devices {
        b = b.known_devices(path);
    }
    for (k, v) in trust.metadata.unwrap_or_default() {
        b = b.metadata(k, v);
    }
    Ok(b)
}

/// `interface=` from Python: a name (`"lo"`, `"eth0"`), an index or an address
/// (`"127.0.0.1"`; `"localhost"` is 127.0.0.1), a list of them, or None (none named).
pub(crate) fn interfaces(interface: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Interface>> {
    let Some(interface) = interface.filter(|i| !i.is_none()) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = if let Ok(s) = interface.cast::<PyString>() {
        vec![s.extract::<String>()?]
    } else {
        interface.extract().map_err(|_| {
            PyTypeError::new_err("`interface` must be a name or address, or a list of them")
        })?
    };
    names
        .iter()
        .map(|n| {
            let n = if n == "localhost" { "127.0.0.1" } else { n };
            n.parse()
                .map_err(|e| ConfigError::new_err(format!("interface {n:?}: {e}")))
        })
        .collect()
}

/// `"addr:port"` from Python, or `ConfigError` naming the setting `what`.
pub(crate) fn parse_addr(what: &str, s: &str) -> PyResult<SocketAddr> {
    s.parse().map_err(|_| {
        ConfigError::new_err(format!(
            "{what} {s:?} is not an \"addr:port\" (e.g. \"239.255.72.76:5676\", \"[ff02::4d:1]:5676\")"
        ))
    })
}

/// A device's groups as `"addr:port"`, IPv4 first.
fn group_names(device: &Device) -> Vec<String> {
    device.groups().iter().map(ToString::to_string).collect()
}

/// A running device as both fronts hold it.
#[derive(Debug)]
pub(crate) struct Core {
    /// `None` once closed. Every call holds a read guard while it runs; `close` takes the
    /// write lock, so it waits for calls in flight (each bounded by its timeout).
    device: RwLock<Option<Device>>,
    /// The device's one event stream; several readers share it (each event goes to one).
    pub(crate) events: Arc<tokio::sync::Mutex<DeviceEvents>>,
    /// Events taken from the stream for a wait that was cancelled first (`Events`).
    returned: Arc<Returned>,
    /// The strings of recent senders, for the events' `Message`s.
    senders: Arc<Senders>,
    /// `send_nowait`'s links by name: a name is resolved once, then its link is kept.
    links: Mutex<HashMap<String, PeerSender>>,
    pub(crate) name: String,
    id: String,
    address: String,
    /// The groups the device discovered on when last asked, `"addr:port"`, IPv4 first
    /// (what `groups` shows once the device is closed).
    groups: Mutex<Vec<String>>,
}

impl Core {
    /// Starts a device, waiting with the GIL released (key derivation takes a moment).
    pub(crate) fn start(py: Python<'_>, builder: DeviceBuilder) -> PyResult<Arc<Self>> {
        let (device, events) =
            block_on(py, builder.start())?.map_err(|e| errors::device_error(&e))?;
        Ok(Arc::new(Self {
            name: device.name().to_owned(),
            id: device.id().to_string(),
            address: device.local_addr().to_string(),
            groups: Mutex::new(group_names(&device)),
            device: RwLock::new(Some(device)),
            events: Arc::new(tokio::sync::Mutex::new(events)),
            returned: Arc::default(),
            senders: Arc::new(Senders::default()),
            links: Mutex::new(HashMap::new()),
        }))
    }

    /// Runs `f` on the device, or fails with `Closed`.
    pub(crate) async fn with<R>(&self, f: impl AsyncFnOnce(&Device) -> PyResult<R>) -> PyResult<R> {
        let guard = self.device.read().await;
        let device = guard.as_ref().ok_or_else(errors::closed)?;
        f(device).await
    }

    /// The device now, without waiting (`Closed` once closed or while closing).
    fn now(&self) -> PyResult<tokio::sync::RwLockReadGuard<'_, Option<Device>>> {
        let guard = self.device.try_read().map_err(|_| errors::closed())?;
        if guard.is_none() {
            return Err(errors::closed());
        }
        Ok(guard)
    }

    /// The groups the device discovers on now (they follow the interfaces' families while
    /// it runs); once closed, the last ones.
    pub(crate) fn groups(&self) -> Vec<String> {
        let mut known = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(guard) = self.now()
            && let Some(device) = guard.as_ref()
        {
            *known = group_names(device);
        }
        known.clone()
    }

    fn links(&self) -> MutexGuard<'_, HashMap<String, PeerSender>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The joined peers by name (of two devices with one name, the one with the larger id).
    pub(crate) fn peers(&self) -> PyResult<Vec<Peer>> {
        let guard = self.now()?;
        let device = guard.as_ref().ok_or_else(errors::closed)?;
        Ok(device.peers().iter().map(Peer::from_info).collect())
    }

    /// Queues `data` on the link to `to` if it has room (`Device::to(to).try_send`).
    ///
    /// From [`SEND_COPY_BELOW`] bytes on, the link keeps `data`'s `bytes` object itself
    /// until written (see [`payload`]); shorter data is copied.
    pub(crate) fn send_nowait(&self, to: &str, data: PyBackedBytes) -> PyResult<()> {
        let send = |s: &mut PeerSender, data: PyBackedBytes| {
            if data.len() < SEND_COPY_BELOW {
                s.try_send(&data)
            } else {
                s.try_send_bytes(Bytes::from_owner(data))
            }
        };
        let mut links = self.links();
        let result = match links.get_mut(to) {
            Some(s) => send(s, data),
            None => {
                let guard = self.now()?;
                let device = guard.as_ref().ok_or_else(errors::closed)?;
                let mut s = device.to(to).map_err(|e| errors::resolve_error(&e))?;
                let r = send(&mut s, data);
                links.insert(to.to_owned(), s);
                r
            }
        };
        result.map_err(|e| {
            if !matches!(e, SendError::Full) {
                // Resolve the name again next time (it may have left, or become ambiguous).
                links.remove(to);
            }
            errors::send_error(to, &e)
        })
    }

    /// Says goodbye and stops; waits for calls in flight first. Closing twice is a no-op.
    pub(crate) async fn close(&self) {
        let device = self.device.write().await.take();
        self.links().clear();
        if let Some(d) = device {
            d.close().await;
        }
    }
}

/// Python's bytes as a message payload: from [`SEND_COPY_BELOW`] (512) bytes on the
/// `bytes` object itself, which the links keep until written (no copy: hail-link's
/// `send_bytes`); shorter ones copied, which costs less than keeping them. A `bytearray`
/// was copied by PyO3 already (it is mutable).
///
/// The `bytes` object is dropped where its last link wrote it, on a runtime thread
/// without the GIL: PyO3 (0.30, its reference pool on, as here) defers that decref to
/// the next time a thread attaches to the interpreter, so this is sound; it costs a
/// push under PyO3's pool lock.
pub(crate) fn payload(data: PyBackedBytes) -> Bytes {
    if data.len() < SEND_COPY_BELOW {
        Bytes::copy_from_slice(&data)
    } else {
        Bytes::from_owner(data)
    }
}

/// Bytes a question handler returned.
fn answer_bytes(_: Python<'_>, answer: &Bound<'_, PyAny>) -> Result<Bytes, String> {
    match answer.extract::<PyBackedBytes>() {
        Ok(b) => Ok(Bytes::copy_from_slice(&b)),
        Err(_) => Err(format!(
            "TypeError: the question handler returned {}, not bytes",
            answer
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        )),
    }
}

/// A device on the network: it advertises itself, finds and connects to the others, sends
/// to them by name and asks them questions. Bytes in, bytes out; every wait is an awaitable.
///
/// `Device(name, passphrase=None, interface=None, group=None, listen=None, *,
/// identity_file=None, known_devices=None, metadata=None)` starts it at once (the
/// passphrase's key derivation takes a moment, with the GIL released).
/// `interface` is a name (`"lo"`), an address (`"127.0.0.1"`) or a list; by default every
/// multicast interface. `group` and `listen` are `"addr:port"` strings; unset, the device
/// discovers on `239.255.72.76:5676` and, where the interfaces have IPv6 too,
/// `[ff02::4841:494c]:5676` (`group` says the first), TTL 1; links listen by default on the one interface's address
/// (with several or none: every address), on a free port. `identity_file` keeps the
/// device's key in a file (created the first time, mode 0600) so its `id` survives
/// restarts; without it the id is new each run. `known_devices` pins each peer's name to
/// the first key seen under it, in that file (trust on first use). `metadata` is a dict
/// str -> str signed into the adverts (at most 16 entries, 512 bytes; keys of
/// `a-z 0-9 . _ -`), seen by peers as `Peer.metadata`. `close()` says goodbye;
/// `async with Device(...) as dev:` closes on the way out.
#[pyclass(module = "hail", name = "Device", frozen)]
#[derive(Debug)]
pub(crate) struct PyDevice {
    core: Arc<Core>,
}

#[pymethods]
impl PyDevice {
    #[new]
    #[pyo3(signature = (name, passphrase=None, interface=None, group=None, listen=None, *,
                        identity_file=None, known_devices=None, metadata=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keywords, one per setting"
    )]
    fn new(
        py: Python<'_>,
        name: &str,
        passphrase: Option<String>,
        interface: Option<&Bound<'_, PyAny>>,
        group: Option<&str>,
        listen: Option<&str>,
        identity_file: Option<PathBuf>,
        known_devices: Option<PathBuf>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> PyResult<Self> {
        let trust = Trust {
            identity_file,
            known_devices,
            metadata,
        };
        let b = builder(name, passphrase, interface, group, listen, trust)?;
        Ok(Self {
            core: Core::start(py, b)?,
        })
    }

    /// The device name.
    #[getter]
    fn name(&self) -> &str {
        &self.core.name
    }

    /// The device's id, as hex: derived from its identity key (the same across restarts
    /// with `identity_file`, else new each start).
    #[getter]
    fn id(&self) -> &str {
        &self.core.id
    }

    /// The `"ip:port"` links are accepted on.
    #[getter]
    fn address(&self) -> &str {
        &self.core.address
    }

    /// The discovery group, `"addr:port"` (the port actually bound): the first of
    /// `groups`.
    #[getter]
    fn group(&self) -> String {
        // A device keeps at least one group (it never leaves the last).
        self.core.groups().into_iter().next().unwrap_or_default()
    }

    /// The groups the device discovers on now, a list of `"addr:port"`, IPv4 first: the
    /// one `group=` names; unset, `239.255.72.76:5676` and `[ff02::4841:494c]:5676` where
    /// the interfaces have both families (the device is found on either), else the one of
    /// the family they have. The default groups follow the interfaces while the device
    /// runs: one whose family appears on them is joined, one whose family goes is left.
    /// Once closed, the last ones, as every property (`name`, `address` ...) keeps its
    /// value; the methods raise `Closed`.
    #[getter]
    fn groups(&self) -> Vec<String> {
        self.core.groups()
    }

    /// The joined peers, a dict name -> `Peer`.
    fn peers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for p in self.core.peers()? {
            let name = p.name().to_owned();
            dict.set_item(name, Py::new(py, p)?)?;
        }
        Ok(dict)
    }

    /// `await send(to, data)`: hands `data` to the link of `to` (a name, a list of names,
    /// or None for every joined peer). For one name, raises on failure (`NotConnected`,
    /// `UnknownName` ...); for a list or None, returns a dict name -> None (handed over) or
    /// the exception. Waits while a link's queue is full.
    fn send<'py>(
        &self,
        py: Python<'py>,
        to: &Bound<'py, PyAny>,
        data: PyBackedBytes,
    ) -> PyResult<Bound<'py, PyAny>> {
        let to = To::extract(to)?;
        let data = payload(data);
        let core = self.core.clone();
        let targets = to.targets();
        let sent = async move { core.with(async |d| Ok(d.send(targets, data).await)).await };
        awaitable(py, sent, move |py, results| {
            let results = results?;
            match &to {
                To::One(name) => match results.get(name) {
                    Some(Err(e)) => Err(errors::send_error(name, e)),
                    _ => Ok(py.None()),
                },
                To::Many(_) => {
                    let dict = PyDict::new(py);
                    for (name, r) in &results {
                        match r {
                            Ok(()) => dict.set_item(name, py.None())?,
                            Err(e) => {
                                dict.set_item(name, errors::send_error(name, e).into_value(py))?
                            }
                        }
                    }
                    Ok(dict.into_any().unbind())
                }
            }
        })
    }

    /// `send_nowait(to, data)`: queues `data` on the link to the peer named `to` now, or
    /// raises `Full` when its queue has no room (and `NotConnected`, `UnknownName` ...).
    /// No await: the hot path. The link is looked up once per name and kept.
    fn send_nowait(&self, to: &str, data: PyBackedBytes) -> PyResult<()> {
        self.core.send_nowait(to, data)
    }

    /// `await ask(to, question, timeout=2.0)`: asks each target and waits for all answers,
    /// at most `timeout` seconds. Returns a dict name -> the answer (`bytes`, possibly
    /// empty) or the exception: `NoAnswer` for no answer in time, `Unreachable`,
    /// `UnknownName`, `RemoteError` (its handler failed, or it has none).
    #[pyo3(signature = (to, question, timeout=2.0))]
    fn ask<'py>(
        &self,
        py: Python<'py>,
        to: &Bound<'py, PyAny>,
        question: PyBackedBytes,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let to = To::extract(to)?.targets();
        let question = Bytes::copy_from_slice(&question);
        let timeout = seconds(timeout)?;
        let core = self.core.clone();
        let asked = async move {
            core.with(async |d| Ok(d.ask(to, question, timeout).await))
                .await
        };
        awaitable(py, asked, |py, answers| {
            let dict = PyDict::new(py);
            for (name, r) in &answers? {
                match r {
                    Ok(a) => dict.set_item(name, pyo3::types::PyBytes::new(py, a))?,
                    Err(e) => dict.set_item(name, errors::ask_error(name, e).into_value(py))?,
                }
            }
            Ok(dict.into_any().unbind())
        })
    }

    /// `on_question(fn)`: answers peers' questions with `fn(sender_name, question) ->
    /// bytes`, a plain function or a coroutine function. Registered from async code, it runs
    /// on that event loop (a plain function that blocks there blocks the loop); otherwise
    /// on one of hail's handler threads, where it may block (then it must be a plain
    /// function).
    /// An exception fails the question (the asker gets `RemoteError` with its message).
    /// Once per device.
    fn on_question(&self, py: Python<'_>, handler: Py<PyAny>) -> PyResult<()> {
        let handler = Handler::new(py, handler)?;
        let guard = self.core.now()?;
        let device = guard.as_ref().ok_or_else(errors::closed)?;
        device
            .on_question(move |from, question| {
                let handler = handler.clone();
                async move {
                    let args = move |py: Python<'_>| {
                        Ok(vec![
                            PyString::new(py, &from).into_any().unbind(),
                            pyo3::types::PyBytes::new(py, &question).into_any().unbind(),
                        ])
                    };
                    handler.invoke(Helper::Call, args, answer_bytes).await
                }
            })
            .map_err(|e| errors::device_error(&e))
    }

    /// `bind(method, fn)`: serves the named method `method` to peers: `fn(arg)` gets the
    /// caller's argument decoded from JSON and returns a JSON-compatible value (a plain or
    /// a coroutine function, run as for `on_question`). On the wire the argument and the
    /// result are JSON text, as `hail call` sends and `hail listen`'s `echo` answers.
    fn bind(&self, py: Python<'_>, method: String, handler: Py<PyAny>) -> PyResult<()> {
        if method.starts_with("hail/") {
            return Err(PyValueError::new_err(
                "method names starting with `hail/` are the device's own",
            ));
        }
        let handler = Handler::new(py, handler)?;
        let guard = self.core.now()?;
        let device = guard.as_ref().ok_or_else(errors::closed)?;
        device
            .handlers()
            .bind(method, move |arg: String| {
                let handler = handler.clone();
                async move {
                    let args =
                        move |py: Python<'_>| Ok(vec![PyString::new(py, &arg).into_any().unbind()]);
                    let out = |_: Python<'_>, out: &Bound<'_, PyAny>| {
                        out.extract::<String>().map_err(|e| describe(&e))
                    };
                    handler.invoke(Helper::CallJson, args, out).await
                }
            })
            .map_err(|e| HailError::new_err(e.to_string()))
    }

    /// `await call(to, method, arg=None, timeout=2.0)`: calls the named method on the peer
    /// `to` with `arg` (JSON-compatible) and returns its result decoded from JSON (the text
    /// itself if it is not JSON). Raises `Timeout`, `UnknownMethod`, `RemoteError` ...
    #[pyo3(signature = (to, method, arg=None, timeout=2.0))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        to: String,
        method: String,
        arg: Option<&Bound<'py, PyAny>>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let json = py.import("json")?;
        let text: String = json.call_method1("dumps", (arg,))?.extract()?;
        let timeout = seconds(timeout)?;
        let core = self.core.clone();
        let called = async move {
            core.with(async |d| {
                let peer = d.peer(&to).map_err(|e| errors::resolve_error(&e))?;
                peer.execute::<String, String>(method.clone(), text, timeout)
                    .await
                    .map_err(|e| errors::rpc_error(&to, &method, &e))
            })
            .await
        };
        awaitable(py, called, |py, reply| {
            let reply = reply?;
            let loads = py.import("json")?.getattr("loads")?;
            Ok(match loads.call1((&reply,)) {
                Ok(v) => v.unbind(),
                Err(_) => PyString::new(py, &reply).into_any().unbind(),
            })
        })
    }

    /// `async for event in dev.events()`: `PeersChanged`, `PeerJoined`, `PeerLeft`,
    /// `Message`, `DuplicateName`, `ErrorEvent`, until the device is closed. Read it
    /// steadily: while its 1024 places are full, messages wait and other events are dropped.
    fn events(&self) -> Events {
        Events {
            stream: self.core.events.clone(),
            returned: self.core.returned.clone(),
            senders: self.core.senders.clone(),
        }
    }

    /// `await close()`: says goodbye to every peer, closes the links and stops. Calls in
    /// flight end first. Closing twice does nothing.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        awaitable(
            py,
            async move { core.close().await },
            |py, ()| Ok(py.None()),
        )
    }

    /// `async with Device(...) as dev:`: the device itself.
    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ready(py, slf.into_any())
    }

    /// Closes the device on the way out of an `async with` block.
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
        format!(
            "Device(name={:?}, id={:?}, address={:?}, groups={:?})",
            self.core.name,
            self.core.id,
            self.core.address,
            self.core.groups()
        )
    }
}

/// A timeout in seconds from Python.
pub(crate) fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| PyValueError::new_err("timeout must be a positive number of seconds"))
}
