//! What the handle, the driver and the RPC handlers share: the table, the links, the
//! event stream's sender and its drop counters ([`Shared`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hail_link::{Connection, LinkConfig};
use hail_rpc::{Handlers, PeerDriver, RpcConfig, RpcPeer};
use hail_wire::Binary;
use tokio::sync::{Notify, mpsc};
use tracing::debug;

use super::error::RunError;
use super::events::{DeviceEvent, EventLevels, MessageRun, Queued};
use crate::error::ResolveError;
use crate::id::LinkId;
use crate::peer_table::PeerTable;

pub(super) type QuestionFn =
    dyn Fn(Arc<str>, Bytes) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync;

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
    pub(super) events: mpsc::UnboundedSender<Queued>,
    /// What is in the event stream: its messages' bytes, its other events.
    pub(super) event_levels: Arc<EventLevels>,
    /// Told (all waiters) whenever the table reported a change of its members.
    pub(super) members_changed: Notify,
    pub(super) dropped_events: AtomicU64,
    /// The discovery groups, IPv4 first ([`Device::groups`](crate::Device::groups)): those
    /// joined at start, as the interface watch joins and leaves default groups; never
    /// empty (without multicast: the one group it would have used).
    pub(super) groups: Mutex<Vec<std::net::SocketAddr>>,
    /// The discovery channels' and the listener's counters, as of the last timer tick
    /// (or the last group joined or left).
    pub(super) counters: Mutex<Counters>,
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

    /// Puts `e` (not a message) in the stream if there is room for it (see
    /// [`EventLevels`]), else drops and counts it; true when it went in. Drops not yet
    /// reported go first.
    pub(super) fn emit(&self, e: DeviceEvent) -> bool {
        self.report_drops();
        let went_in = self.push_other(e);
        if !went_in {
            self.dropped(1);
        }
        went_in
    }

    /// Puts a run of one link's messages in the stream (in one go) with its hold, what
    /// they count in the budget (on their link's share) until the application took the
    /// last of them; a run the application can no longer take (it dropped the stream) is
    /// counted as dropped.
    pub(super) fn push_messages(&self, run: MessageRun) {
        if self.event_levels.has_unreported() {
            self.report_drops();
        }
        let (n, cost) = (run.payloads.len(), run.hold.bytes());
        self.event_levels.message_in(cost);
        if self.events.send(Queued::Messages(run)).is_err() {
            self.event_levels.message_out(cost);
            self.dropped(n as u64);
        }
    }

    /// Puts an event other than a message in the stream if it has room for one; false
    /// when it did not go in.
    fn push_other(&self, e: DeviceEvent) -> bool {
        if !self.event_levels.take_other() {
            return false;
        }
        if self.events.send(Queued::Other(e)).is_err() {
            self.event_levels.other_out();
            return false;
        }
        true
    }

    /// Counts `n` events dropped (reported as `EventsDropped` once there is room).
    pub(super) fn dropped(&self, n: u64) {
        self.dropped_events.fetch_add(n, Ordering::Relaxed);
        self.event_levels.unreported(n);
        debug!("device event dropped: the stream is full or closed");
    }

    /// Reports drops not yet reported, if there is room: they go first, as soon as
    /// there is (the driver also tries on each timer tick).
    pub(super) fn report_drops(&self) {
        let unreported = self.event_levels.take_unreported();
        if unreported > 0 {
            let report = DeviceEvent::Error(RunError::EventsDropped { count: unreported });
            if !self.push_other(report) {
                self.event_levels.unreported(unreported);
            }
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The counters [`Device::stats`](crate::Device::stats) reads: kept by the driver.
#[derive(Debug, Default, Clone)]
pub(super) struct Counters {
    /// Each discovery group's counters, in group order.
    pub(super) groups: Vec<(std::net::SocketAddr, hail_multicast::Stats)>,
    /// The counters of the groups left while running (and not joined again), so the sums
    /// never go back.
    pub(super) left: hail_multicast::Stats,
    /// The listener's handshakes that failed authentication.
    pub(super) auth_failures: u64,
}
