//! What a device reports: [`DeviceEvent`]s on the [`DeviceEvents`] stream (and the
//! stream's levels, `EventLevels`), and the pythonConnect-style [`DeviceCallbacks`] over
//! it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use hail_link::Hold;
use tokio::sync::mpsc;

use super::error::RunError;
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
        /// The sender's name (the one it joined with), shared by every message from its
        /// link: a clone is a count, not a copy of the name.
        from: Arc<str>,
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
/// ([`DeviceBuilder::budget`](crate::DeviceBuilder::budget), 32 MiB by default) and in
/// the share of the link it came on (a quarter of the budget): its payload's bytes, at
/// least [`MESSAGE_COST`](crate::MESSAGE_COST) (256 B), counted for each run of a link's
/// messages the device takes in one go (at most 256; in 64 KiB steps while a run is
/// taken, so what the budget does not yet count stays below that) and given back as the
/// application takes them (in 64 KiB steps, and with the run's last). A peer whose
/// messages wait here for its share is held back: its link stops reading, TCP flow
/// control slows it down, while other peers' messages, questions and calls go on (see
/// [`hail_link::Budget`] for the rules, also for a budget spent by many peers). Nothing
/// is dropped: every message arrives, in order, once the application reads.
///
/// Other events (peers joining and leaving, errors) are few: at most
/// [`DeviceBuilder::event_capacity`](crate::DeviceBuilder::event_capacity) of them
/// ([`EVENT_CAPACITY`](crate::EVENT_CAPACITY), 1024, by default) wait at once; past that
/// they are dropped, counted ([`Device::dropped_events`](crate::Device::dropped_events))
/// and reported as [`RunError::EventsDropped`] once there is room. A run of messages is
/// taken from the stream in one go and handed out one by one.
#[derive(Debug)]
pub struct DeviceEvents {
    rx: mpsc::UnboundedReceiver<Queued>,
    /// The stream's levels: an event handed out leaves them.
    levels: Arc<EventLevels>,
    /// The run of messages being handed out, if any.
    run: Option<Handing>,
}

/// A run of messages being handed out by [`DeviceEvents`]: each becomes its
/// [`DeviceEvent::Message`] as it is handed out, so the driver copies no sender per
/// message (nor moves a whole `DeviceEvent`: a message of the run is its payload's 32
/// bytes).
#[derive(Debug)]
struct Handing {
    from: Arc<str>,
    from_id: DeviceId,
    /// The rest of the run's payloads.
    payloads: std::vec::IntoIter<Bytes>,
    /// What the run still holds of the budget: given back as its messages are handed out.
    hold: Hold,
    /// What the messages of the run handed out since the last give-back cost.
    handed_out: usize,
}

/// The least a message waiting in the event stream counts in the device's memory budget
/// (and on its link's share): 256 bytes, or its payload's length if that is more. About
/// what a queued message costs beside its payload (the event, its share of the run's
/// budget hold; the sender's name is one shared by its link's messages), so a flood of
/// tiny messages is bounded like one of large ones: one peer's share of the default
/// budget (16 MiB and a record: a frame of the largest size and a read) is at most 65,792
/// messages waiting.
pub const MESSAGE_COST: usize = 256;

/// A run's messages handed out go back to the budget once they cost this much (64 KiB),
/// and with the run's last message: one count per step, not per message (a count is a
/// few atomic operations: 9 % of the device's 64-byte send rate, per message).
const GIVE_BACK_STEP: usize = 64 << 10;

/// What a message of `len` payload bytes holds of the budget while it waits in the stream:
/// its length, at least [`MESSAGE_COST`].
pub(super) fn message_cost(len: usize) -> usize {
    len.max(MESSAGE_COST)
}

/// What the device's stream carries: one item per event other than a message, one per
/// run of a link's messages.
#[derive(Debug)]
pub(super) enum Queued {
    /// An event other than a message: it holds room in the stream's capacity.
    Other(DeviceEvent),
    /// A run of one link's messages. One hand-over per run, not per message.
    Messages(MessageRun),
}

/// A run of one link's messages as the driver puts it in the stream: the sender once,
/// the payloads in order (never empty), and what they hold of the budget, on that link's
/// share.
#[derive(Debug)]
pub(super) struct MessageRun {
    /// The link's peer's name.
    pub(super) from: Arc<str>,
    /// The key the link proved.
    pub(super) from_id: DeviceId,
    pub(super) payloads: Vec<Bytes>,
    pub(super) hold: Hold,
}

impl futures_core::Stream for DeviceEvents {
    type Item = DeviceEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<DeviceEvent>> {
        let this = &mut *self;
        loop {
            if let Some(e) = this.next_of_run() {
                return std::task::Poll::Ready(Some(e));
            }
            match this.rx.poll_recv(cx) {
                std::task::Poll::Ready(Some(q)) => {
                    if let Some(e) = this.taken(q) {
                        return std::task::Poll::Ready(Some(e));
                    }
                }
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                // Empty: the stream has room, so drops not yet reported are reported now.
                std::task::Poll::Pending => {
                    return match this.levels.drop_report() {
                        Some(e) => std::task::Poll::Ready(Some(e)),
                        None => std::task::Poll::Pending,
                    };
                }
            }
        }
    }
}

impl DeviceEvents {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<Queued>, levels: Arc<EventLevels>) -> Self {
        Self {
            rx,
            levels,
            run: None,
        }
    }

    /// The next message of the run being handed out. What the run's messages cost goes
    /// back to the budget as they are handed out (their link may read again), in steps of
    /// [`GIVE_BACK_STEP`] and with the run's last: so a message the application keeps
    /// (`hail listen`'s line, say, held in the budget on its own) is counted in the run
    /// too for at most that many bytes, and a run of small messages costs one count.
    fn next_of_run(&mut self) -> Option<DeviceEvent> {
        let run = self.run.as_mut()?;
        let Some(payload) = run.payloads.next() else {
            self.run = None;
            return None;
        };
        let cost = message_cost(payload.len());
        let e = DeviceEvent::Message {
            from: Arc::clone(&run.from),
            from_id: run.from_id,
            payload,
        };
        if run.payloads.len() == 0 {
            self.levels.message_out(run.hold.bytes());
            // Its hold dropped: the rest goes back.
            self.run = None;
        } else {
            run.handed_out += cost;
            if run.handed_out >= GIVE_BACK_STEP {
                let out = run.handed_out.min(run.hold.bytes());
                run.hold.set(run.hold.bytes() - out);
                self.levels.message_out(out);
                run.handed_out = 0;
            }
        }
        Some(e)
    }

    /// An item taken from the stream: an event to hand out now, or a run to hand out
    /// from.
    fn taken(&mut self, q: Queued) -> Option<DeviceEvent> {
        match q {
            Queued::Other(e) => {
                self.levels.other_out();
                Some(e)
            }
            Queued::Messages(run) => {
                self.run = Some(Handing {
                    from: run.from,
                    from_id: run.from_id,
                    payloads: run.payloads.into_iter(),
                    hold: run.hold,
                    handed_out: 0,
                });
                self.next_of_run()
            }
        }
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
        if let Some(e) = self.next_of_run() {
            return Some(e);
        }
        match self.rx.try_recv() {
            Ok(q) => self.taken(q),
            Err(mpsc::error::TryRecvError::Empty) => self.levels.drop_report(),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        }
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

type MessageFn = Box<dyn FnMut(Arc<str>, Bytes) + Send>;
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
    pub fn on_message(mut self, f: impl FnMut(Arc<str>, Bytes) + Send + 'static) -> Self {
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

/// The event stream's levels: the bytes its messages count in the device's budget, and
/// its other events against their capacity
/// ([`DeviceBuilder::event_capacity`](crate::DeviceBuilder::event_capacity)). Counted by
/// the driver as it puts an event in, by [`DeviceEvents`](crate::DeviceEvents) as it
/// hands one out.
#[derive(Debug)]
pub(super) struct EventLevels {
    /// What the messages in the stream hold of the budget (each at least
    /// [`MESSAGE_COST`](crate::MESSAGE_COST)).
    message_bytes: AtomicUsize,
    peak: AtomicUsize,
    /// Events other than messages in the stream.
    others: AtomicUsize,
    capacity: usize,
    /// Events dropped and not yet reported as [`RunError::EventsDropped`]: the driver
    /// reports them with its next event or timer tick, [`DeviceEvents`] when it finds
    /// the stream empty, whichever comes first.
    unreported: AtomicU64,
}

impl EventLevels {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            message_bytes: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            others: AtomicUsize::new(0),
            capacity,
            unreported: AtomicU64::new(0),
        }
    }

    /// `n` more events dropped, not yet reported.
    pub(super) fn unreported(&self, n: u64) {
        self.unreported.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether some drops wait to be reported.
    pub(super) fn has_unreported(&self) -> bool {
        self.unreported.load(Ordering::Relaxed) > 0
    }

    /// The drops not yet reported, now taken to be reported (each exactly once).
    pub(super) fn take_unreported(&self) -> u64 {
        self.unreported.swap(0, Ordering::Relaxed)
    }

    /// The report of the drops not yet reported, if any: for a reader that found the
    /// stream empty (so it has room).
    fn drop_report(&self) -> Option<DeviceEvent> {
        // A load first: an empty stream is polled often, drops are rare.
        if !self.has_unreported() {
            return None;
        }
        match self.take_unreported() {
            0 => None,
            count => Some(DeviceEvent::Error(RunError::EventsDropped { count })),
        }
    }

    /// Takes room for one event other than a message; false when there is none.
    pub(super) fn take_other(&self) -> bool {
        self.others
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    pub(super) fn message_in(&self, bytes: usize) {
        let now = self.message_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        // A load first: the read-modify-write only on a new peak.
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// An event other than a message left the stream.
    pub(super) fn other_out(&self) {
        self.others.fetch_sub(1, Ordering::AcqRel);
    }

    /// Messages holding `bytes` left the stream.
    pub(super) fn message_out(&self, bytes: usize) {
        self.message_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// (message bytes queued now, most ever queued).
    pub(super) fn levels(&self) -> (usize, usize) {
        (
            self.message_bytes.load(Ordering::Relaxed),
            self.peak.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    /// Found under misbehave's `frames`: a run of two 15 MiB messages held both until its
    /// last was taken, so while `hail listen` printed the first (15 s at 1 MiB/s) it
    /// counted twice, in the run and in the printer's hold; the budget read as spent and
    /// every link stopped reading, a new peer's hello and a device's ask too. Given back
    /// in steps of `GIVE_BACK_STEP` (a count per message cost 9 % of the 64-byte send
    /// rate) and with the run's last message.
    #[test]
    fn a_run_gives_back_what_is_taken_in_steps() {
        let budget = hail_link::Budget::new(64 << 20);
        let (tx, rx) = mpsc::unbounded_channel();
        let levels = Arc::new(EventLevels::new(16));
        let mut events = DeviceEvents::new(rx, Arc::clone(&levels));
        let mut hold = budget.hold();
        let big = GIVE_BACK_STEP + 1000;
        // (payload, what the run still counts once it is handed out)
        let sizes = [10, big, 10, 10, 3000];
        let cost: usize = sizes.iter().map(|&n| message_cost(n)).sum();
        let small = message_cost(10);
        let left = [
            cost,
            cost - small - big,
            cost - small - big,
            cost - small - big,
            0,
        ];
        hold.set(cost);
        levels.message_in(cost);
        tx.send(Queued::Messages(MessageRun {
            from: "f".into(),
            from_id: DeviceId::from_bytes([7; 16]),
            payloads: sizes.map(message).into(),
            hold,
        }))
        .unwrap();
        for (n, left) in sizes.into_iter().zip(left) {
            let Some(DeviceEvent::Message { payload, .. }) = events.try_recv() else {
                panic!("a message")
            };
            assert_eq!(payload.len(), n);
            assert_eq!(budget.in_use(), left, "after the message of {n} bytes");
            assert_eq!(levels.levels().0, left);
        }
        assert_eq!(message_cost(10), crate::MESSAGE_COST);
    }
}
