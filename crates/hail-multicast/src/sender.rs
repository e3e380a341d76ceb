//! [`Sender`]: the sending half of a [`Channel`](crate::Channel).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hail_crypto::{OVERHEAD, Sealer};
use serde::Serialize;
use tokio::net::UdpSocket;

use crate::MulticastError;
use crate::memory::Outlet;
use crate::stats::{Counters, bump};

/// Where a channel's datagrams go.
pub(crate) enum SendPath {
    /// One socket per interface, with the destination (group, port, scope) to send to.
    Udp(Vec<(UdpSocket, SocketAddr)>),
    /// This channel's membership of an in-memory bus.
    Memory(Outlet),
}

pub(crate) struct SendInner {
    pub(crate) path: SendPath,
    pub(crate) sealer: Option<Mutex<Sealer>>,
    pub(crate) max_payload: usize,
    pub(crate) counters: Arc<Counters>,
}

/// The sending half of a [`Channel`](crate::Channel): cheap to clone, usable from any task.
///
/// From [`Channel::sender`](crate::Channel::sender). The channel's sockets (or its address on
/// a bus) stay open while a `Sender` lives.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<SendInner>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Sender");
        match &self.inner.path {
            SendPath::Udp(s) => d.field("interfaces", &s.len()),
            SendPath::Memory(o) => d.field("memory", &o.addr()),
        };
        d.field("sealed", &self.inner.sealer.is_some()).finish()
    }
}

/// Payloads up to this size are sealed in a buffer on the stack.
const STACK_SEAL: usize = 2048;

impl Sender {
    pub(crate) fn new(inner: SendInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn path(&self) -> &SendPath {
        &self.inner.path
    }

    /// Sends `payload` to the group on every interface of the channel.
    ///
    /// Succeeds when it went out on at least one interface; failures on the others are
    /// counted in [`Stats::send_errors`](crate::Stats::send_errors). On a bus it is handed to
    /// every member at once.
    ///
    /// # Errors
    /// [`MulticastError::PayloadTooLarge`] (naming the limit), [`MulticastError::Crypto`]
    /// if sealing fails, [`MulticastError::Io`] if no interface could send.
    pub async fn send(&self, payload: &[u8]) -> Result<(), MulticastError> {
        let inner = &*self.inner;
        if payload.len() > inner.max_payload {
            return Err(MulticastError::PayloadTooLarge {
                len: payload.len(),
                max: inner.max_payload,
            });
        }
        match &inner.sealer {
            None => self.send_raw(payload).await,
            Some(sealer) => {
                let need = payload.len() + OVERHEAD;
                let mut stack = [0u8; STACK_SEAL];
                let mut heap;
                let buf: &mut [u8] = if need <= STACK_SEAL {
                    &mut stack[..need]
                } else {
                    heap = vec![0u8; need];
                    &mut heap
                };
                let n = sealer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .seal_into(payload, buf)?;
                self.send_raw(&buf[..n]).await
            }
        }
    }

    async fn send_raw(&self, datagram: &[u8]) -> Result<(), MulticastError> {
        let inner = &*self.inner;
        let sockets = match &inner.path {
            SendPath::Udp(sockets) => sockets,
            SendPath::Memory(outlet) => {
                outlet.send(datagram);
                bump(&inner.counters.sent);
                return Ok(());
            }
        };
        let mut last_err = None;
        let mut ok = false;
        for (sock, dest) in sockets {
            match sock.send_to(datagram, dest).await {
                Ok(_) => {
                    ok = true;
                    bump(&inner.counters.sent);
                }
                Err(e) => {
                    tracing::debug!(%dest, error = %e, "multicast send failed on one interface");
                    bump(&inner.counters.send_errors);
                    last_err = Some(e);
                }
            }
        }
        match (ok, last_err) {
            (true, _) | (false, None) => Ok(()),
            (false, Some(e)) => {
                // Counted above as a per-interface error; it is the caller's error now.
                inner
                    .counters
                    .send_errors
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// Encodes `msg` with postcard and sends it.
    ///
    /// # Errors
    /// [`MulticastError::Encode`], then as [`Sender::send`].
    pub async fn send_msg<T: Serialize + ?Sized>(&self, msg: &T) -> Result<(), MulticastError> {
        let bytes = postcard::to_stdvec(msg)?;
        self.send(&bytes).await
    }

    /// The largest payload one datagram can carry on this channel.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }
}
