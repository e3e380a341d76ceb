//! What the handle, the driver and the RPC handlers share: the table, the links, the
//! event stream's sender and its drop counters ([`Shared`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hail_link::{Connection, LinkConfig};
use hail_rpc::{Handlers, PeerDriver, RpcConfig, RpcPeer};
use hail_wire::Binary;
use tokio::sync::{Notify, mpsc};
use tracing::debug;

use super::error::RunError;
use super::events::DeviceEvent;
use crate::error::ResolveError;
use crate::id::LinkId;
use crate::peer_table::PeerTable;

pub(super) type QuestionFn =
    dyn Fn(String, Bytes) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync;

/// One link to a peer, as the driver keeps it.
pub(super) struct LinkEntry {
    pub(super) conn: Connection<Binary>,
    /// Shared so packets are fed without holding the links lock; the last clone's drop
    /// disconnects the peer.
    pub(super) driver: Arc<PeerDriver>,
    /// The table asked to close it; it is kept until it is closed.
    pub(super) closing: bool,
    /// The peer's hello made it a joined peer's link: only then are its RPC packets
    /// and messages served, so a message never comes from a peer that was not reported
    /// joined.
    pub(super) joined: bool,
    /// The joined peer's name: the sender of every message on this link.
    pub(super) peer_name: Option<Arc<str>>,
    /// The device whose key the link's handshake proved.
    pub(super) peer: crate::id::DeviceId,
}

pub(super) struct Shared {
    pub(super) table: Mutex<PeerTable>,
    /// Where names pinned on first use are kept ([`DeviceBuilder::known_devices`](crate::DeviceBuilder::known_devices)).
    pub(super) known_devices: Option<std::path::PathBuf>,
    pub(super) links: Mutex<HashMap<LinkId, LinkEntry>>,
    pub(super) question: OnceLock<Arc<QuestionFn>>,
    /// What every link answers: messages, questions and the user's own methods.
    pub(super) handlers: Handlers,
    pub(super) events: mpsc::Sender<DeviceEvent>,
    /// The event stream's bytes of message payloads, against its byte budget.
    pub(super) event_bytes: Arc<EventBytes>,
    /// Told (all waiters) whenever the table reported a change of its members.
    pub(super) members_changed: Notify,
    pub(super) dropped_events: AtomicU64,
    /// Drops not yet reported as [`RunError::EventsDropped`].
    pub(super) unreported_drops: AtomicU64,
    /// The multicast channel's counters and the listener's authentication failures, as of
    /// the last timer tick.
    pub(super) counters: Mutex<(hail_multicast::Stats, u64)>,
    pub(super) rpc: RpcConfig,
    pub(super) link: LinkConfig,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The RPC peer of the one joined device named `name`.
    pub(super) fn resolve_rpc(&self, name: &str) -> Result<RpcPeer, ResolveError> {
        self.resolve_with(name, |l| l.driver.peer())
    }

    /// The link to the one joined device named `name`.
    pub(super) fn resolve_link(&self, name: &str) -> Result<Connection<Binary>, ResolveError> {
        self.resolve_with(name, |l| l.conn.clone())
    }

    fn resolve_with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&LinkEntry) -> T,
    ) -> Result<T, ResolveError> {
        let (_, conn) = lock(&self.table).resolve(name)?;
        lock(&self.links)
            .get(&conn)
            .map(f)
            .ok_or_else(|| ResolveError::NotConnected(name.to_owned()))
    }

    /// Puts `e` in the stream if there is room, else drops and counts it; true when it
    /// went in.
    pub(super) fn emit(&self, e: DeviceEvent) -> bool {
        self.report_drops();
        if self.events.try_send(e).is_err() {
            self.dropped(1);
            false
        } else {
            true
        }
    }

    /// Counts `n` events dropped (reported as `EventsDropped` once there is room).
    pub(super) fn dropped(&self, n: u64) {
        self.dropped_events.fetch_add(n, Ordering::Relaxed);
        self.unreported_drops.fetch_add(n, Ordering::Relaxed);
        debug!("device event dropped: the stream is full or closed");
    }

    /// Reports drops not yet reported with the room `permit` holds, as soon as there is
    /// room; gives the permit back when there was nothing to report.
    pub(super) fn report_drops_with(
        &self,
        permit: mpsc::OwnedPermit<DeviceEvent>,
    ) -> Option<mpsc::OwnedPermit<DeviceEvent>> {
        let unreported = self.unreported_drops.swap(0, Ordering::Relaxed);
        if unreported == 0 {
            return Some(permit);
        }
        permit.send(DeviceEvent::Error(RunError::EventsDropped {
            count: unreported,
        }));
        None
    }

    /// Reports drops not yet reported, if there is room: they go first, as soon as
    /// there is.
    pub(super) fn report_drops(&self) {
        let unreported = self.unreported_drops.swap(0, Ordering::Relaxed);
        if unreported > 0 {
            let report = DeviceEvent::Error(RunError::EventsDropped { count: unreported });
            if self.events.try_send(report).is_err() {
                self.unreported_drops
                    .fetch_add(unreported, Ordering::Relaxed);
            }
        }
    }
}

/// The bytes of the message payloads in the event stream, against its byte budget
/// ([`DeviceBuilder::event_bytes`](crate::DeviceBuilder::event_bytes)): added by the
/// driver as it delivers a message, taken off by [`DeviceEvents`](crate::DeviceEvents) as
/// it hands one out.
#[derive(Debug)]
pub(super) struct EventBytes {
    queued: AtomicUsize,
    peak: AtomicUsize,
    limit: usize,
    /// Told when the queued bytes fall back under the limit.
    pub(super) room: Notify,
}

impl EventBytes {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            limit,
            room: Notify::new(),
        }
    }

    /// The budget is spent: messages wait (or, after the stall limit, are dropped).
    pub(super) fn full(&self) -> bool {
        self.queued.load(Ordering::Acquire) >= self.limit
    }

    pub(super) fn add(&self, n: usize) {
        let now = self.queued.fetch_add(n, Ordering::AcqRel) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(super) fn take(&self, n: usize) {
        let before = self.queued.fetch_sub(n, Ordering::AcqRel);
        if before >= self.limit && before - n < self.limit {
            self.room.notify_one();
        }
    }

    /// (queued now, most ever queued).
    pub(super) fn levels(&self) -> (usize, usize) {
        (
            self.queued.load(Ordering::Relaxed),
            self.peak.load(Ordering::Relaxed),
        )
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
