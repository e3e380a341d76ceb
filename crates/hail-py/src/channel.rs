//! `hail.Channel`: the multicast channel of [`hail_multicast`] on its own (multisock's job):
//! datagrams to and from a group, sealed with a key from a passphrase when one is given.

use std::sync::Arc;

use hail_crypto::GroupKey;
use hail_multicast::{Channel, ChannelConfig, Datagram, MulticastError, Receiver, Stats};
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio::sync::{Mutex, watch};

use crate::bridge::{awaitable_giving_back, awaitable_result, ready};
use crate::device::seconds;
use crate::errors::{self, ConfigError, NetworkError, TooLarge};
use crate::runtime::runtime;

/// The name a passphrase's key is derived with: `hail mcast`'s, so a Python channel and the
/// `hail mcast send|recv` command with one passphrase share the key.
const KEY_GROUP: &str = "hail-mcast";

/// A multicast error as a Python exception.
fn multicast_error(e: &MulticastError) -> PyErr {
    let msg = e.to_string();
    match e {
        MulticastError::NotMulticast(_)
        | MulticastError::InterfaceNotFound { .. }
        | MulticastError::InterfaceLacksFamily { .. }
        | MulticastError::InvalidInterface { .. }
        | MulticastError::InvalidTtl(_)
        | MulticastError::NoInterface => ConfigError::new_err(msg),
        MulticastError::PayloadTooLarge { .. } => TooLarge::new_err(msg),
        _ => NetworkError::new_err(msg),
    }
}

/// A UDP multicast group, joined on the interfaces named (multisock's channel, hail's
/// sealing): `await send(data)` to every member, `await recv()` the next datagram as
/// `(data, "ip:port")`. Bytes in, bytes out.
///
/// `Channel(group, passphrase=None, interface=None, ttl=1, loopback=True)`: `group` is
/// `"addr:port"` (IPv4 or IPv6). With a passphrase every datagram is sealed (AES-256-GCM,
/// a key derived as `hail mcast` derives it, so both share a passphrase) and datagrams that
/// do not open, or are replays, are dropped and counted in `stats()`; without one a datagram
/// is exactly the data, so plain UDP programs interoperate. `interface` as for `Device`; by
/// default every up, multicast-capable interface (on Linux that leaves out `lo`: name it).
/// `ttl` is the hops a datagram may take (1: this link only). `loopback=False` hides the
/// channel's own datagrams from itself. `close()` leaves the group.
#[pyclass(module = "hail", name = "Channel", frozen)]
pub(crate) struct PyChannel {
    /// The receiving half; `None` once closed. Receiving takes it for the wait.
    rx: Arc<Mutex<Option<Receiver>>>,
    /// The sending half; `None` once closed.
    tx: std::sync::Mutex<Option<Channel>>,
    /// `true` once closed: a waiting `recv` ends with `Closed`.
    closed: watch::Sender<bool>,
    /// Datagrams a cancelled `recv` took: the next `recv` gets them first.
    returned: Arc<Returned>,
    group: String,
    max_payload: usize,
}

impl std::fmt::Debug for PyChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Datagrams a `recv` took from the channel but could not hand over, its awaitable
/// cancelled first (cancelling aborts the receive's task only once the loop runs the
/// awaitable's done callbacks: until then the task may still take a datagram), or its
/// result set but its task cancelled before it resumed (a timeout in the same turn of the
/// loop). They are handed over before the channel's, in order, so cancelling a `recv`
/// loses no datagram.
type Returned = crate::returned::Returned<Datagram>;

/// A datagram as Python's `(data, sender)`.
fn datagram_to_py(py: Python<'_>, d: &Datagram) -> PyResult<Py<PyAny>> {
    (PyBytes::new(py, &d.payload), d.from.to_string()).into_py_any(py)
}

impl PyChannel {
    fn sender(&self) -> PyResult<Channel> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| errors::Closed::new_err("the channel is closed"))
    }

    /// The next datagram handed back (a Python object first), unless the channel is
    /// closed (then `recv` raises `Closed`).
    fn take_returned(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if *self.closed.borrow() {
            return Ok(None);
        }
        if let Some(o) = self.returned.pop_object() {
            return Ok(Some(o));
        }
        self.returned
            .pop()
            .map(|d| datagram_to_py(py, &d))
            .transpose()
    }
}

#[pymethods]
impl PyChannel {
    #[new]
    #[pyo3(signature = (group, passphrase=None, interface=None, ttl=1, loopback=true))]
    fn new(
        py: Python<'_>,
        group: &str,
        passphrase: Option<String>,
        interface: Option<&Bound<'_, PyAny>>,
        ttl: u32,
        loopback: bool,
    ) -> PyResult<Self> {
        let addr = crate::device::parse_addr("group", group)?;
        let mut b = ChannelConfig::builder().ttl(ttl).loopback(loopback);
        for i in crate::device::interfaces(interface)? {
            b = b.interface(i);
        }
        if let Some(p) = passphrase {
            // PBKDF2: hundreds of milliseconds, without the GIL.
            b = b.key(py.detach(|| GroupKey::derive(&p, KEY_GROUP)));
        }
        let (chan, rx) = {
            let _guard = runtime().enter(); // its sockets register with the runtime
            b.build()
                .and_then(|config| Channel::bind(addr, config))
                .map_err(|e| multicast_error(&e))?
        };
        Ok(Self {
            group: chan.group().to_string(),
            max_payload: chan.max_payload(),
            tx: std::sync::Mutex::new(Some(chan)),
            closed: watch::Sender::new(false),
            returned: Arc::default(),
            rx: Arc::new(Mutex::new(Some(rx))),
        })
    }

    /// The group, `"addr:port"` (the port actually bound).
    #[getter]
    fn group(&self) -> &str {
        &self.group
    }

    /// The largest payload one datagram carries on this channel (65,507 bytes over IPv4,
    /// 65,527 over IPv6, 45 fewer when sealed).
    #[getter]
    fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// `await send(data)`: sends `data` to the group, one datagram on each interface.
    /// Raises `TooLarge` past `max_payload`, `NetworkError` if every interface failed.
    fn send<'py>(&self, py: Python<'py>, data: PyBackedBytes) -> PyResult<Bound<'py, PyAny>> {
        let tx = self.sender()?;
        awaitable_result(py, async move {
            tx.send(&data).await.map_err(|e| multicast_error(&e))
        })
    }

    /// `await recv(timeout=None)`: the next datagram as `(data, sender)`, `sender` its
    /// `"ip:port"`; datagrams that are dropped (sealed channels: wrong key, tampered,
    /// replayed) are skipped and counted. Raises `Timeout` after `timeout` seconds (None:
    /// waits), `Closed` once closed (a waiting `recv` too). One receiver at a time: others
    /// wait their turn. Cancelling a `recv` loses no datagram: one it had taken comes
    /// next. When it waits, a coroutine (`hail._aio.next_datagram`) that starts the
    /// receive when awaited.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        timeout.map(seconds).transpose()?; // a bad timeout raises at the call, not the await
        if let Some(d) = slf.get().take_returned(py)? {
            return ready(py, d);
        }
        static NEXT_DATAGRAM: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        NEXT_DATAGRAM
            .get_or_try_init(py, || {
                py.import("hail._aio")?
                    .getattr("next_datagram")
                    .map(Bound::unbind)
            })?
            .bind(py)
            .call1((slf, timeout))
    }

    /// Internal (`hail._aio`): the next datagram's future: completed at once when one was
    /// handed back, else on hail's runtime (cancelling it hands back a datagram its task
    /// took).
    #[pyo3(signature = (timeout=None))]
    fn _recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = timeout.map(seconds).transpose()?;
        if let Some(d) = self.take_returned(py)? {
            return ready(py, d);
        }
        let rx = self.rx.clone();
        let mut closed = self.closed.subscribe();
        let returned = self.returned.clone();
        let back = returned.clone();
        let received = async move {
            let closed_err = || errors::Closed::new_err("the channel is closed");
            let next = async {
                let mut guard = rx.lock().await;
                let chan = guard.as_mut().ok_or_else(closed_err)?;
                match timeout {
                    Some(t) => tokio::time::timeout(t, returned.next(Ok, chan.recv()))
                        .await
                        .map_err(|_| errors::Timeout::new_err("no datagram within the timeout"))?,
                    None => returned.next(Ok, chan.recv()).await,
                }
                .map_err(|e| multicast_error(&e))
            };
            tokio::select! {
                d = next => d,
                _ = closed.wait_for(|c| *c) => Err(closed_err()),
            }
        };
        let convert = |py: Python<'_>, d: PyResult<Datagram>| datagram_to_py(py, &d?);
        awaitable_giving_back(py, received, convert, move |d| {
            if let Ok(d) = d {
                back.give_back([d]);
            }
        })
    }

    /// Internal (`hail._aio`): hands back `item`, a datagram `(data, sender)` whose
    /// receive's task was cancelled after it was set: it comes next.
    fn _give_back(&self, item: Py<PyAny>) {
        self.returned.give_back_objects([item]);
    }

    /// `dropped_malformed`, `dropped_wrong_key`, `dropped_replayed`, `dropped_too_old`, and
    /// `dropped` (all drops). Raises `Busy` while a `recv` waits (it holds the channel).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = self
            .rx
            .try_lock()
            .map_err(|_| errors::Busy::new_err("a recv is waiting on the channel"))?;
        let chan = guard
            .as_ref()
            .ok_or_else(|| errors::Closed::new_err("the channel is closed"))?;
        stats_dict(py, &chan.stats())
    }

    /// `close()`: leaves the group and closes the sockets; a waiting `recv` raises
    /// `Closed`. Closing twice does nothing.
    fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.closed.send_replace(true);
        self.returned.clear();
        if let Ok(mut g) = self.rx.try_lock() {
            g.take();
        } else {
            // A recv holds the channel for a moment more (it ends on `closed`).
            let rx = self.rx.clone();
            runtime().spawn(async move {
                rx.lock().await.take();
            });
        }
    }

    /// `async with Channel(...) as ch:`: the channel itself.
    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ready(py, slf.into_any())
    }

    /// Closes the channel on the way out of an `async with` block.
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_type: &Bound<'py, PyAny>,
        _exc: &Bound<'py, PyAny>,
        _tb: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close();
        ready(py, py.None())
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!("Channel(group={:?})", self.group)
    }
}

fn stats_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in [
        ("sent", s.sent),
        ("send_errors", s.send_errors),
        ("delivered", s.delivered),
        ("own_skipped", s.own_skipped),
        ("dropped_malformed", s.dropped_malformed),
        ("dropped_wrong_key", s.dropped_wrong_key),
        ("dropped_replayed", s.dropped_replayed),
        ("dropped_too_old", s.dropped_too_old),
        ("dropped", s.dropped()),
    ] {
        d.set_item(PyString::new(py, k), v)?;
    }
    Ok(d)
}
