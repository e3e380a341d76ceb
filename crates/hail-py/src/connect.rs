//! `hail.Connect`: pythonConnect's synchronous front over a hail device. Its callbacks run
//! one at a time on a thread of their own (pythonConnect ran them in a one-worker thread
//! pool), never on the network's threads; its methods block with the GIL released.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};

use bytes::Bytes;
use hail_discovery::{DeviceEvent, Targets};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio::sync::{mpsc, oneshot};

use crate::device::{Core, To, Trust, builder, seconds};
use crate::errors::{self, AmbiguousName, HailError};
use crate::events::ErrorEvent;
use crate::handler::describe;
use crate::runtime::{block_on, runtime};
use crate::shutdown;

/// pythonConnect's name for "every joined device" as a `dest`.
pub(crate) const DEST_ALL: &str = "toAll";

/// Jobs waiting for the callback thread: 1024. While it is full the device's event stream
/// fills behind it (messages then wait, as `hail.Device`'s do; see `DeviceEvents`).
const JOBS: usize = 1024;

/// What the callback thread does next.
enum Job {
    /// An event from the device: `fr`, `fhu` or `fe`.
    Event(DeviceEvent),
    /// A question for `fa`, and where its answer goes.
    Question {
        from: Arc<str>,
        question: Bytes,
        answer: oneshot::Sender<Result<Bytes, String>>,
    },
    /// An error for `fe` (a failed `sendMessage` target).
    Error(Py<PyAny>),
}

/// The user's callbacks; `None` where none was given.
struct Callbacks {
    fr: Option<Py<PyAny>>,
    fhu: Option<Py<PyAny>>,
    fe: Option<Py<PyAny>>,
    fa: Option<Py<PyAny>>,
}

/// pythonConnect's `Connect` on hail: devices find each other on the LAN, send each other
/// messages and ask each other questions, by name. Text in, text out.
///
/// `Connect(name=None, fr=None, fhu=None, fe=None, fa=None, *, passphrase=None,
/// interface=None, group=None, listen=None, multicast_ip=None, port=None, identity_file=None,
/// known_devices=None, metadata=None)` (the keywords after `fa` as `hail.Device`'s):
/// `fr(message, sender)` gets messages, `fhu(remotes)` the joined devices (a dict name ->
/// `(ip, port)`) whenever they change, `fa(question, sender) -> str` answers questions, and
/// `fe(error)` gets what failed: an exception `fr` or `fa` raised, a `sendMessage` target
/// that could not be reached, or a `hail.HailError` from the device. They run one at a time
/// on a thread of their own. `name` defaults to the host name; `multicast_ip` and `port`
/// (pythonConnect's) make the group when `group` is not given.
#[pyclass(module = "hail", name = "Connect", frozen)]
pub(crate) struct PyConnect {
    core: Arc<Core>,
    /// For `fe` reports from `sendMessage`; `None` once closed, so the thread can end.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl std::fmt::Debug for PyConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("name", &self.core.name)
            .finish_non_exhaustive()
    }
}

#[pymethods]
impl PyConnect {
    #[classattr]
    const DEST_ALL: &'static str = DEST_ALL;

    #[new]
    #[pyo3(signature = (name=None, fr=None, fhu=None, fe=None, fa=None, *, passphrase=None,
                        interface=None, group=None, listen=None, multicast_ip=None, port=None,
                        identity_file=None, known_devices=None, metadata=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "pythonConnect's constructor and Device's keywords"
    )]
    fn new(
        py: Python<'_>,
        name: Option<String>,
        fr: Option<Py<PyAny>>,
        fhu: Option<Py<PyAny>>,
        fe: Option<Py<PyAny>>,
        fa: Option<Py<PyAny>>,
        passphrase: Option<String>,
        interface: Option<&Bound<'_, PyAny>>,
        group: Option<String>,
        listen: Option<&str>,
        multicast_ip: Option<String>,
        port: Option<u16>,
        identity_file: Option<PathBuf>,
        known_devices: Option<PathBuf>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> PyResult<Self> {
        let name = match name {
            Some(n) => n,
            None => py
                .import("socket")?
                .call_method0("gethostname")?
                .extract()?,
        };
        let group = group.or_else(|| {
            (multicast_ip.is_some() || port.is_some()).then(|| {
                let ip = multicast_ip.unwrap_or_else(|| "239.255.72.76".into());
                if ip.contains(':') {
                    format!("[{ip}]:{}", port.unwrap_or(5676))
                } else {
                    format!("{ip}:{}", port.unwrap_or(5676))
                }
            })
        });
        let trust = Trust {
            identity_file,
            known_devices,
            metadata,
        };
        let b = builder(
            &name,
            passphrase,
            interface,
            group.as_deref(),
            listen,
            trust,
        )?;
        let core = Core::start(py, b)?;
        let (jobs, rx) = mpsc::channel(JOBS);
        let has_fa = fa.is_some();
        let callbacks = Callbacks { fr, fhu, fe, fa };
        if has_fa {
            let tx = jobs.clone();
            block_on(
                py,
                core.with(async |d| {
                    d.on_question(move |from, question| {
                        let tx = tx.clone();
                        async move {
                            let (answer, rx) = oneshot::channel();
                            tx.send(Job::Question {
                                from,
                                question,
                                answer,
                            })
                            .await
                            .map_err(|_| "closing".to_string())?;
                            rx.await.map_err(|_| "closing".to_string())?
                        }
                    })
                    .map_err(|e| errors::device_error(&e))
                }),
            )??;
        }
        // The pump: events from the device to the callback thread, in order.
        let events = core.events.clone();
        let tx = jobs.clone();
        runtime().spawn(async move {
            let mut events = events.lock().await;
            while let Some(e) = events.recv().await {
                if tx.send(Job::Event(e)).await.is_err() {
                    break;
                }
            }
        });
        let thread = std::thread::Builder::new()
            .name(format!("hail-connect-{name}"))
            .spawn(move || run_callbacks(rx, &callbacks))
            .map_err(|e| HailError::new_err(format!("cannot start the callback thread: {e}")))?;
        Ok(Self {
            core,
            jobs: Mutex::new(Some(jobs)),
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The device name.
    #[getter]
    fn name(&self) -> &str {
        &self.core.name
    }

    /// The joined devices, a dict name -> `(ip, port)` (what `fhu` gets).
    #[getter(remoteDevices)]
    fn remote_devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        remotes(
            py,
            &self
                .core
                .peers()?
                .iter()
                .map(|p| (p.name().to_owned(), p.first_address()))
                .collect::<Vec<_>>(),
        )
    }

    /// `sendMessage(message, dest)`: sends the text `message` to `dest`, a name, a list of
    /// names or `Connect.DEST_ALL`. Returns when each message is handed to its link; a
    /// target that could not be reached goes to `fe`, as pythonConnect never raised here.
    #[pyo3(name = "sendMessage")]
    fn send_message_compat(
        &self,
        py: Python<'_>,
        message: &str,
        dest: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let results = self.send(py, message, dest)?;
        for (name, r) in results {
            if let Err(e) = r {
                let err = errors::send_error(&name, &e).into_value(py).into_any();
                // Closed, or 1024 jobs behind: there is nobody to tell in time.
                if let Some(jobs) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = jobs.try_send(Job::Error(err));
                }
            }
        }
        Ok(())
    }

    /// `send_message(message, dest)`: as `sendMessage`, but returns a dict name -> None
    /// (handed over) or the exception (`NotConnected`, `UnknownName` ...), and calls no `fe`.
    fn send_message<'py>(
        &self,
        py: Python<'py>,
        message: &str,
        dest: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, r) in self.send(py, message, dest)? {
            match r {
                Ok(()) => dict.set_item(&name, py.None())?,
                Err(e) => dict.set_item(&name, errors::send_error(&name, &e).into_value(py))?,
            }
        }
        Ok(dict)
    }

    /// `askDevice(question, dest, timeout=2)`: asks `dest` (a name or a list) and waits for
    /// every answer, at most `timeout` seconds. Returns a dict name -> answer, with `""` for
    /// a device that did not answer (pythonConnect's shape; `ask_device` tells them apart).
    #[pyo3(name = "askDevice", signature = (question, dest, timeout=2.0))]
    fn ask_device_compat<'py>(
        &self,
        py: Python<'py>,
        question: &str,
        dest: &Bound<'py, PyAny>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, r) in self.ask(py, question, dest, timeout)? {
            let text = r
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .unwrap_or_default();
            dict.set_item(name, text)?;
        }
        Ok(dict)
    }

    /// `ask_device(question, dest, timeout=2.0)`: as `askDevice`, but a device that gave no
    /// answer maps to the exception (`NoAnswer`, `Unreachable`, `RemoteError` ...), so an
    /// empty answer `""` is an answer.
    #[pyo3(signature = (question, dest, timeout=2.0))]
    fn ask_device<'py>(
        &self,
        py: Python<'py>,
        question: &str,
        dest: &Bound<'py, PyAny>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, r) in self.ask(py, question, dest, timeout)? {
            match r {
                Ok(a) => dict.set_item(&name, String::from_utf8_lossy(&a))?,
                Err(e) => dict.set_item(&name, errors::ask_error(&name, &e).into_value(py))?,
            }
        }
        Ok(dict)
    }

    /// The joined devices' names.
    fn peers(&self) -> PyResult<Vec<String>> {
        Ok(self
            .core
            .peers()?
            .iter()
            .map(|p| p.name().to_owned())
            .collect())
    }

    /// `close()`: says goodbye, stops the device and, once the callbacks still queued have
    /// run, the callback thread. Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.core.close())?;
        // The device is gone, and with it the pump's and the question handler's senders;
        // this is the last one: the thread ends once the jobs queued before run.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if std::thread::current().id() == self.thread_id {
                return Ok(()); // called from a callback: the thread ends after it returns
            }
            if shutdown::exiting() {
                return Ok(()); // the thread may be parked for good (`shutdown`)
            }
            py.detach(|| {
                let _ = t.join();
            });
        }
        Ok(())
    }

    /// pythonConnect's name for `close()`.
    #[pyo3(name = "leavingNetwork")]
    fn leaving_network(&self, py: Python<'_>) -> PyResult<()> {
        self.close(py)
    }

    /// `with Connect(...) as c:`: the connection itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the connection on the way out of a `with` block.
    fn __exit__(
        &self,
        py: Python<'_>,
        _t: &Bound<'_, PyAny>,
        _e: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.close(py)
    }

    /// The object as text, for debugging.
    fn __repr__(&self) -> String {
        format!("Connect(name={:?})", self.core.name)
    }
}

impl PyConnect {
    /// `dest` as targets: pythonConnect's `DEST_ALL` is every joined device.
    fn targets(dest: &Bound<'_, PyAny>) -> PyResult<Targets> {
        if let Ok(s) = dest.cast::<PyString>()
            && s.extract::<String>()? == DEST_ALL
        {
            return Ok(Targets::All);
        }
        Ok(To::extract(dest)?.targets())
    }

    fn send(
        &self,
        py: Python<'_>,
        message: &str,
        dest: &Bound<'_, PyAny>,
    ) -> PyResult<HashMap<String, Result<(), hail_discovery::SendError>>> {
        let targets = Self::targets(dest)?;
        let msg = Bytes::copy_from_slice(message.as_bytes());
        block_on(py, self.core.with(async |d| Ok(d.send(targets, msg).await)))?
    }

    fn ask(
        &self,
        py: Python<'_>,
        question: &str,
        dest: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<HashMap<String, Result<Bytes, hail_discovery::AskError>>> {
        let targets = Self::targets(dest)?;
        let q = Bytes::copy_from_slice(question.as_bytes());
        let timeout = seconds(timeout)?;
        block_on(
            py,
            self.core
                .with(async |d| Ok(d.ask(targets, q, timeout).await)),
        )?
    }
}

/// A dict name -> `(ip, port)` (or None), pythonConnect's remote list.
fn remotes<'py>(
    py: Python<'py>,
    peers: &[(String, Option<(String, u16)>)],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, addr) in peers {
        dict.set_item(name, addr.clone())?;
    }
    Ok(dict)
}

/// The callback thread: runs each job's callback, one at a time, until the device is gone.
/// It keeps its Python thread state (`shutdown::with_thread_state`: an `attach` per job on
/// a thread Python does not know makes and frees one each time: on 3.11 an mmap and a
/// munmap), and parks rather than run a job once the interpreter's exit has begun.
fn run_callbacks(mut jobs: mpsc::Receiver<Job>, cb: &Callbacks) {
    shutdown::with_thread_state(|| {
        while let Some(job) = jobs.blocking_recv() {
            let _entered = shutdown::enter_or_park();
            Python::attach(|py| run_job(py, job, cb));
        }
    });
}

fn run_job(py: Python<'_>, job: Job, cb: &Callbacks) {
    match job {
        Job::Question {
            from,
            question,
            answer,
        } => {
            let text = String::from_utf8_lossy(&question).into_owned();
            let r = match &cb.fa {
                None => Ok(Bytes::new()), // pythonConnect's default answer: ""
                Some(fa) => match fa.call1(py, (text, &*from)) {
                    Ok(a) => match a.bind(py).str() {
                        Ok(s) => Ok(Bytes::copy_from_slice(s.to_string().as_bytes())),
                        Err(e) => Err(describe(&e)),
                    },
                    Err(e) => {
                        let msg = describe(&e);
                        report(py, cb, e.into_value(py).into_any());
                        Err(msg)
                    }
                },
            };
            let _ = answer.send(r);
        }
        Job::Event(DeviceEvent::Message { from, payload, .. }) => {
            if let Some(fr) = &cb.fr {
                let text = String::from_utf8_lossy(&payload).into_owned();
                if let Err(e) = fr.call1(py, (text, &*from)) {
                    report(py, cb, e.into_value(py).into_any());
                }
            }
        }
        Job::Event(DeviceEvent::PeersChanged(peers)) => {
            if let Some(fhu) = &cb.fhu {
                let list: Vec<_> = peers
                    .iter()
                    .map(|p| {
                        (
                            p.name.clone(),
                            p.addresses.first().map(|a| (a.ip().to_string(), a.port())),
                        )
                    })
                    .collect();
                let r = remotes(py, &list).and_then(|d| fhu.call1(py, (d,)).map(drop));
                if let Err(e) = r {
                    report(py, cb, e.into_value(py).into_any());
                }
            }
        }
        Job::Event(DeviceEvent::DuplicateName { name, .. }) => {
            let e = AmbiguousName::new_err(format!("several live devices are named {name:?}"));
            report(py, cb, e.into_value(py).into_any());
        }
        Job::Event(DeviceEvent::Error(e)) => {
            let (kind, message) = ErrorEvent::kind_and_message(&e);
            let err = match kind {
                "auth_failed" => errors::AuthFailed::new_err(message),
                _ => HailError::new_err(message),
            };
            report(py, cb, err.into_value(py).into_any());
        }
        Job::Event(_) => {} // joined and left: `fhu` hears of both through PeersChanged
        Job::Error(e) => report(py, cb, e),
    }
}

/// Hands `error` to `fe`; without one, or if `fe` itself raises, Python's unraisable hook
/// reports it (printed on stderr by default), as an exception in a thread would be.
fn report(py: Python<'_>, cb: &Callbacks, error: Py<PyAny>) {
    let r = match &cb.fe {
        Some(fe) => fe.call1(py, (error.clone_ref(py),)).map(drop),
        None => Err(PyErr::from_value(error.into_bound(py))),
    };
    if let Err(e) = r {
        e.write_unraisable(py, None);
    }
}
