//! What a device reports: [`DeviceEvent`]s on the [`DeviceEvents`] stream, and the
//! pythonConnect-style [`DeviceCallbacks`] over it.

use std::sync::Arc;

use bytes::Bytes;
use hail_link::Hold;
use tokio::sync::mpsc;

use super::error::RunError;
use super::shared::EventLevels;
use crate::id::DeviceId;
use crate::peer_table::{LeaveReason, PeerInfo};

/// What a [`Device`] reports.
///
/// Order per peer: its `PeerJoined` comes before any `Message` from it (messages on a
/// link whose peer never joined are dropped), and every message it handed to its link
/// before shutting down comes before its `PeerLeft { reason: Goodbye }`: a goodbye heard
/// on the group waits for the peer's links to deliver what they carry, at most
/// [`goodbye_grace`](crate::PeerTableConfigBuilder::goodbye_grace) (500 ms by default).
/// One exception: a message that arrives while all of this device's handlers for that
/// peer are busy ([`RpcConfig::max_concurrent_handlers`], 64 by default, e.g. slow
/// question handlers) waits in the RPC queue; it is still delivered when a handler
/// finishes, within 5 s, but possibly after the `PeerLeft`.
///
/// [`Device`]: crate::Device
/// [`RpcConfig::max_concurrent_handlers`]: hail_rpc::RpcConfig::max_concurrent_handlers
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// The joined peers, sorted by name then id.
    PeersChanged(Vec<PeerInfo>),
    /// A peer is connected and ready.
    PeerJoined(PeerInfo),
    /// A peer left.
    PeerLeft {
        /// Who.
        peer: PeerInfo,
        /// Why.
        reason: LeaveReason,
    },
    /// Several live devices share a name.
    DuplicateName {
        /// The name.
        name: String,
        /// The ids that hold it.
        ids: Vec<DeviceId>,
    },
    /// A message from a peer ([`Device::send`](crate::Device::send) on its side).
    Message {
        /// The sender's name (the one it joined with).
        from: String,
        /// The sender's id: the key its link proved (never a field of the message).
        from_id: DeviceId,
        /// The message.
        payload: Bytes,
    },
    /// Something went wrong; the device keeps running.
    Error(RunError),
}

/// The event stream of a [`Device`](crate::Device); ends when the device shuts down. A
/// [`Stream`](futures_core::Stream) as well (`StreamExt::next`, combinators).
///
/// Read it continuously. Messages wait in it for the application without limit in
/// number, but each counts, until it is handed out, in the device's memory budget
/// ([`DeviceBuilder::budget`](crate::DeviceBuilder::budget), 48 MiB by default) and in
/// the share of the link it came on (a quarter of the budget): its payload's bytes, at
/// least [`MESSAGE_COST`](crate::MESSAGE_COST) (256 B), counted once for each run of a
/// link's messages the device takes in one go (at most 64) and given back when the
/// application takes the run's last message. A peer whose messages wait here
/// for its share is held back: its link stops reading, TCP flow control slows it down,
/// while other peers' messages, questions and calls go on (see [`hail_link::Budget`] for
/// the rules, also for a budget spent by many peers). Nothing is dropped: every message
/// arrives, in order, once the application reads.
///
/// Other events (peers joining and leaving, errors) are few: at most
/// [`DeviceBuilder::event_capacity`](crate::DeviceBuilder::event_capacity) of them
/// ([`EVENT_CAPACITY`](crate::EVENT_CAPACITY), 1024, by default) wait at once; past that
/// they are dropped, counted ([`Device::dropped_events`](crate::Device::dropped_events))
/// and reported as [`RunError::EventsDropped`] once there is room. Events are taken from
/// the stream up to 64 at a time and handed out one by one.
#[derive(Debug)]
pub struct DeviceEvents {
    rx: mpsc::UnboundedReceiver<Queued>,
    /// The stream's levels: an event handed out leaves them.
    levels: Arc<EventLevels>,
    /// Events taken from the stream in one go, last first: up to [`RECV_BATCH`].
    ready: Vec<Queued>,
}

/// An event in the stream, with what it holds of the device's budget until it is handed
/// out: the last message of a run of one link's messages holds the cost of the run, on
/// that link's share (the others hold nothing).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) event: DeviceEvent,
    pub(super) held: Held,
}

/// What a [`Queued`] event holds.
#[derive(Debug)]
pub(super) enum Held {
    /// An event other than a message: its room in the stream's capacity.
    Room,
    /// A message; the last of its run holds the run's cost.
    Message(Option<Hold>),
}

/// Most events [`DeviceEvents`] takes from the device's stream at once (handing them out
/// one by one): 64. Taking a burst at once costs one hand-over, not one per event; the
/// taken events no longer count against the stream's capacity.
const RECV_BATCH: usize = 64;

impl futures_core::Stream for DeviceEvents {
    type Item = DeviceEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<DeviceEvent>> {
        let this = &mut *self;
        if this.ready.is_empty() {
            match this.rx.poll_recv_many(cx, &mut this.ready, RECV_BATCH) {
                std::task::Poll::Ready(0) => return std::task::Poll::Ready(None),
                std::task::Poll::Ready(_) => this.ready.reverse(),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
        let e = this.ready.pop();
        std::task::Poll::Ready(e.map(|q| this.handed_out(q)))
    }
}

impl DeviceEvents {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<Queued>, levels: Arc<EventLevels>) -> Self {
        Self {
            rx,
            levels,
            ready: Vec::with_capacity(RECV_BATCH),
        }
    }

    /// An event leaves the stream: a message's bytes go back to the budget (its link may
    /// read again), another event's room is free.
    fn handed_out(&self, q: Queued) -> DeviceEvent {
        self.levels.left(&q.held);
        q.event
    }

    /// The next event, or `None` once the device is shut down.
    pub async fn recv(&mut self) -> Option<DeviceEvent> {
        std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut *self), cx)
        })
        .await
    }

    /// An event if one is waiting, without waiting; `None` when none is (or the device
    /// is shut down).
    pub fn try_recv(&mut self) -> Option<DeviceEvent> {
        let q = self.ready.pop().or_else(|| self.rx.try_recv().ok())?;
        Some(self.handed_out(q))
    }

    /// Runs callbacks for every event until the device is gone (pythonConnect style:
    /// message, peers changed, peer joined and left, duplicate name, error).
    pub async fn run_callbacks(mut self, mut callbacks: DeviceCallbacks) {
        while let Some(event) = self.recv().await {
            match event {
                DeviceEvent::Message { from, payload, .. } => {
                    if let Some(f) = &mut callbacks.on_message {
                        f(from, payload);
                    }
                }
                DeviceEvent::PeersChanged(peers) => {
                    if let Some(f) = &mut callbacks.on_peers_changed {
                        f(peers);
                    }
                }
                DeviceEvent::PeerJoined(peer) => {
                    if let Some(f) = &mut callbacks.on_joined {
                        f(peer);
                    }
                }
                DeviceEvent::PeerLeft { peer, reason } => {
                    if let Some(f) = &mut callbacks.on_left {
                        f(peer, reason);
                    }
                }
                DeviceEvent::DuplicateName { name, ids } => {
                    if let Some(f) = &mut callbacks.on_duplicate {
                        f(name, ids);
                    }
                }
                DeviceEvent::Error(e) => {
                    if let Some(f) = &mut callbacks.on_error {
                        f(e);
                    }
                }
            }
        }
    }
}

type MessageFn = Box<dyn FnMut(String, Bytes) + Send>;
type PeersFn = Box<dyn FnMut(Vec<PeerInfo>) + Send>;
type JoinedFn = Box<dyn FnMut(PeerInfo) + Send>;
type LeftFn = Box<dyn FnMut(PeerInfo, LeaveReason) + Send>;
type DuplicateFn = Box<dyn FnMut(String, Vec<DeviceId>) + Send>;
type ErrorFn = Box<dyn FnMut(RunError) + Send>;

/// DeviceCallbacks for [`DeviceEvents::run_callbacks`]; each is optional.
#[derive(Default)]
pub struct DeviceCallbacks {
    on_message: Option<MessageFn>,
    on_peers_changed: Option<PeersFn>,
    on_joined: Option<JoinedFn>,
    on_left: Option<LeftFn>,
    on_duplicate: Option<DuplicateFn>,
    on_error: Option<ErrorFn>,
}

impl std::fmt::Debug for DeviceCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCallbacks")
            .field("on_message", &self.on_message.is_some())
            .field("on_peers_changed", &self.on_peers_changed.is_some())
            .field("on_joined", &self.on_joined.is_some())
            .field("on_left", &self.on_left.is_some())
            .field("on_duplicate", &self.on_duplicate.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

impl DeviceCallbacks {
    /// Called with the sender's name and each message.
    pub fn on_message(mut self, f: impl FnMut(String, Bytes) + Send + 'static) -> Self {
        self.on_message = Some(Box::new(f));
        self
    }

    /// Called with the joined peers whenever they change.
    pub fn on_peers_changed(mut self, f: impl FnMut(Vec<PeerInfo>) + Send + 'static) -> Self {
        self.on_peers_changed = Some(Box::new(f));
        self
    }

    /// Called when a peer joins.
    pub fn on_joined(mut self, f: impl FnMut(PeerInfo) + Send + 'static) -> Self {
        self.on_joined = Some(Box::new(f));
        self
    }

    /// Called when a peer leaves, with the reason.
    pub fn on_left(mut self, f: impl FnMut(PeerInfo, LeaveReason) + Send + 'static) -> Self {
        self.on_left = Some(Box::new(f));
        self
    }

    /// Called when several live devices share a name.
    pub fn on_duplicate(mut self, f: impl FnMut(String, Vec<DeviceId>) + Send + 'static) -> Self {
        self.on_duplicate = Some(Box::new(f));
        self
    }

    /// Called when something goes wrong while the device runs (it keeps running).
    pub fn on_error(mut self, f: impl FnMut(RunError) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }
}
