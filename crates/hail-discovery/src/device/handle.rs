//! The [`Device`] handle: what it is, its peers and counters, its RPC handlers, and
//! shutdown. Sending and asking are in `messages.rs`, starting in `builder.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use hail_rpc::{Handlers, RpcPeer};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::error::DeviceError;
use super::shared::{Counters, QuestionFn, Shared, lock};
use crate::error::ResolveError;
use crate::format::{FormatError, MessageFormat};
use crate::id::DeviceId;
use crate::peer_table::{PeerInfo, PeerTableStats};

/// Counters of a [`Device`], from [`Device::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceStats {
    /// The peer table's counters: adverts handled and dropped (malformed, foreign
    /// version), peers rejected, protocol errors on links.
    pub discovery: PeerTableStats,
    /// The discovery channels' counters, every group's summed (a group left while
    /// running included: they never go back): adverts sent, delivered, and dropped as
    /// wrongly keyed (another passphrase), replayed or malformed. As of the device's last
    /// timer tick (at most about a second old); zero without multicast.
    pub multicast: hail_multicast::Stats,
    /// The same counters group by group, in the order of [`Device::groups`] (on both
    /// default groups: IPv4's, then IPv6's); empty without multicast.
    pub multicast_groups: Vec<(SocketAddr, hail_multicast::Stats)>,
    /// Incoming link handshakes that failed authentication (another passphrase).
    pub auth_failures: u64,
    /// Events dropped because the event stream was full.
    pub dropped_events: u64,
    /// What the messages in the event stream (not yet handed out by
    /// [`DeviceEvents`](crate::DeviceEvents)) count in the memory budget now: their
    /// payloads' bytes, at least [`MESSAGE_COST`](crate::MESSAGE_COST) each.
    pub queued_event_bytes: usize,
    /// The most [`queued_event_bytes`](Self::queued_event_bytes) ever were.
    pub peak_event_bytes: usize,
    /// The device's memory budget ([`DeviceBuilder::budget`](crate::DeviceBuilder::budget)):
    /// what its links, its RPC and its event stream hold now and held at most.
    pub budget: hail_link::BudgetStats,
}

/// A device on the network: advertises itself, discovers and connects to peers, sends to
/// them by name and asks them questions.
///
/// ```no_run
/// # async fn demo() -> Result<(), hail_discovery::DeviceError> {
/// use hail_discovery::{Device, DeviceEvent};
/// let (lamp, mut events) = Device::builder("lamp").start().await?;
/// while let Some(event) = events.recv().await {
///     if let DeviceEvent::PeerJoined(peer) = event {
///         lamp.send(peer.name.as_str(), "hello".into()).await;
///     }
/// }
/// # Ok(()) }
/// ```
///
/// Dropping the device stops it at once (no goodbye); [`close`](Self::close) says
/// goodbye first.
#[derive(Debug)]
pub struct Device {
    pub(super) shared: Arc<Shared>,
    pub(super) id: DeviceId,
    pub(super) name: String,
    pub(super) local_addr: SocketAddr,
    pub(super) format: MessageFormat,
    pub(super) stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    pub(super) task: Option<JoinHandle<()>>,
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Device {
    /// This run's id.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TCP address links are accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The discovery group (with the port actually bound): the first of
    /// [`groups`](Self::groups), so on both default groups the IPv4 one,
    /// [`DEFAULT_GROUP`](crate::DEFAULT_GROUP).
    pub fn group(&self) -> SocketAddr {
        lock(&self.shared.groups)[0]
    }

    /// Every group the device discovers on, IPv4 first: the one set with
    /// [`DeviceBuilder::group`](crate::DeviceBuilder::group); by default
    /// [`DEFAULT_GROUP`](crate::DEFAULT_GROUP) and
    /// [`DEFAULT_GROUP_V6`](crate::DEFAULT_GROUP_V6) where its interfaces have both
    /// families, else the one of the family they have. The default groups follow the
    /// interfaces while the device runs ([`DeviceBuilder::interface_check`](crate::DeviceBuilder::interface_check)):
    /// one whose family appears on them is joined, one whose family went away from them
    /// is left (never the last one).
    pub fn groups(&self) -> Vec<SocketAddr> {
        lock(&self.shared.groups).clone()
    }

    /// The device's counters.
    pub fn stats(&self) -> DeviceStats {
        let Counters {
            groups: multicast_groups,
            left,
            auth_failures,
        } = lock(&self.shared.counters).clone();
        let mut multicast = left;
        for (_, s) in &multicast_groups {
            multicast += *s;
        }
        let (queued, peak) = self.shared.event_levels.levels();
        DeviceStats {
            discovery: lock(&self.shared.table).stats().clone(),
            multicast,
            multicast_groups,
            auth_failures,
            dropped_events: self.dropped_events(),
            queued_event_bytes: queued,
            peak_event_bytes: peak,
            budget: self
                .shared
                .link
                .budget()
                .map(hail_link::Budget::stats)
                .unwrap_or_default(),
        }
    }

    /// Events dropped because the event stream was full (or no longer read).
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Links open to peers right now. A link dropped by the one-link-per-pair rule counts
    /// until it is closed (at least 500 ms after the rule dropped it, longer while calls
    /// on it are still running).
    pub fn links(&self) -> usize {
        lock(&self.shared.links).len()
    }

    /// The joined peers, sorted by name then id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        lock(&self.shared.table).peers()
    }

    /// Waits until one joined device has this name, and returns it; at once when one
    /// has. Woken by the device as members join, never by polling; bound the wait with
    /// `tokio::time::timeout`.
    ///
    /// ```no_run
    /// # async fn demo(device: hail_discovery::Device) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let lamp = tokio::time::timeout(Duration::from_secs(5), device.wait_for_peer("lamp")).await?;
    /// println!("lamp is {}", lamp.id);
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_peer(&self, name: &str) -> PeerInfo {
        loop {
            let changed = self.shared.members_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(p) = self.joined_named(name) {
                return p;
            }
            changed.await;
        }
    }

    /// The one joined device named `name`, if exactly one is.
    fn joined_named(&self, name: &str) -> Option<PeerInfo> {
        let table = lock(&self.shared.table);
        let (id, _) = table.resolve(name).ok()?;
        table.peers().into_iter().find(|p| p.id == id)
    }

    /// An RPC handle to the joined peer with this name, to call the methods it bound on
    /// its [`handlers`](Self::handlers). The handle serves the link that is up now. Once
    /// that link is gone (the peer left, reconnected or restarted) nothing revives it: its
    /// calls fail with [`RpcError::Stale`](hail_rpc::RpcError::Stale), so ask for the
    /// peer again (cheap: one name lookup). Only while requests the peer sent before the
    /// link closed still wait for a handler (at most 5 s) do its calls fail with
    /// `NotConnected` first. [`to`](Self::to) is the message path that follows reconnects
    /// by itself.
    pub fn peer(&self, name: &str) -> Result<RpcPeer, ResolveError> {
        self.shared.resolve_rpc(name)
    }

    /// The methods this device answers on every link: bind the user's own opcodes and
    /// named commands here (names starting with `hail/` are taken by the device).
    pub fn handlers(&self) -> &Handlers {
        &self.shared.handlers
    }

    /// Sets the handler for [`ask`](Self::ask) from peers: it gets the asker's name (shared
    /// by every question from its link, not copied per question) and the question. Once per
    /// device.
    pub fn on_question<F, Fut>(&self, handler: F) -> Result<(), DeviceError>
    where
        F: Fn(Arc<str>, Bytes) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        let f: Arc<QuestionFn> = Arc::new(move |from, q| Box::pin(handler(from, q)));
        self.shared
            .question
            .set(f)
            .map_err(|_| DeviceError::QuestionHandlerSet)
    }

    /// The format of typed messages ([`DeviceBuilder::format`](crate::DeviceBuilder::format)).
    pub fn format(&self) -> MessageFormat {
        self.format
    }

    /// Decodes a payload (a [`DeviceEvent::Message`](crate::DeviceEvent::Message)'s, a
    /// question, an answer) in the device's [`MessageFormat`].
    pub fn decode<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, FormatError> {
        self.format.decode(payload)
    }

    /// Says goodbye to every peer and on the group, closes every link and stops.
    ///
    /// After the goodbyes the device keeps reading its links until every peer has closed
    /// its side, at most 500 ms: a message a peer's [`send`](Self::send) handed to its link
    /// before it heard the goodbye is still delivered (a
    /// [`DeviceEvent::Message`](crate::DeviceEvent::Message) in the stream before it ends;
    /// dropped and counted if the stream is full then, shutdown waits for no room); once a
    /// peer heard the goodbye, its sends to this device fail
    /// ([`SendError::Resolve`](crate::SendError::Resolve) with
    /// [`ResolveError::UnknownName`](crate::ResolveError::UnknownName) or
    /// [`NotConnected`](crate::ResolveError::NotConnected)). Returns when that is
    /// done and the links are closed (queued messages written, at most another 500 ms).
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
