//! The device's task: the [`Driver`] feeds the table what happens (adverts, link events,
//! dial outcomes, the time) and carries out what it asks (send, dial, close), from start
//! until the links are drained after a graceful stop.
//!
//! One loop, two phases. While running, every input is read; link frames never wait for
//! the application (a message waits in the event stream on its link's share of the
//! memory budget, so a peer whose messages are not taken is held back by its own link,
//! see [`DeviceEvents`](crate::DeviceEvents)). A graceful stop says goodbye and then
//! drains: it keeps reading the links (and nothing else) until every peer has
//! closed its side, at most [`SHUTDOWN_LINGER`]. Each input has one handler, for both
//! phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use hail_link::{EventSender, Events, Server, ServerEvent, ServerEvents};
use hail_multicast::{Datagram, MulticastError};
use hail_rpc::Disconnect;
use hail_wire::Binary;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::clock;
use super::dial::{DialFailures, DialKey, Dialed, dial_any};
use super::error::RunError;
use super::events::{DeviceEvent, MessageRun};
use super::groups::Groups;
use super::sender::MESSAGE_TAG;
use super::shared::{Counters, LinkEntry, Shared, lock};
use super::watch::InterfaceWatch;
use crate::advert::Advert;
use crate::id::{DialId, LinkId};
use crate::peer_table::{Action, Event, LinkOrigin};

/// Capacity of the queue from the dials to the device's task: 1024 outcomes (at most one
/// per dial in flight).
const INTERNAL_CAPACITY: usize = 1024;

/// Capacity of the one stream the dialed links deliver their frames into: 1024 frames; a
/// full stream makes the links stop reading (TCP flow control slows the peers).
const DIALED_CAPACITY: usize = 1024;

/// Most link inputs (frames, link ends, dial outcomes) handled in one turn of the
/// driver's loop once one has arrived: 64, or up to [`MESSAGE_BATCH`] when they are
/// messages. Bounds how long timers and the multicast channel wait behind a busy link.
const INPUT_BATCH: usize = 64;
/// Most messages handled in one turn of the driver's loop: 256 (a message takes a
/// quarter of the room of another input in [`INPUT_BATCH`]). A message is only moved into
/// its link's run, some 50 ns; under a flood of 64-byte messages a turn was full at 64
/// and its own work (the table's deadline, its timers, the hand-over to the event
/// stream, waking the application) was 4 % of the path.
const MESSAGE_BATCH: usize = 256;
/// Most datagrams handled in one turn of the driver's loop once one has arrived: 64.
/// Each turn looks at the table's deadline, which walks every peer: per datagram, that
/// look was 13 % of a device's time under a flood of 20,000 forged adverts a second
/// (docs/security.md, "Floods of forged adverts"); per batch it is a 64th of that.
const DATAGRAM_BATCH: usize = 64;

/// How long shutdown keeps reading links after its goodbyes (until the peers close
/// their side), and then waits for queued messages to go out: 500 ms each.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// Room for a run of one link's messages ([`Run`]): the most messages one turn handles,
/// [`MESSAGE_BATCH`] and the one that woke it (257 payloads, 8 KiB), so a run never
/// grows (growing it was 2 % of the 64-byte send path). A run that goes out much smaller
/// gives the room back first: what waits in the stream stays near
/// [`MESSAGE_COST`](crate::MESSAGE_COST) a message.
pub(super) const RUN_CAPACITY: usize = MESSAGE_BATCH + 1;

/// What a run's messages may cost before it is counted on the run's hold: 64 KiB. The
/// count is two atomic operations on the link's account, which its reader also uses
/// (per 64-byte message it was 4.5 % of the device's send path); so a run counts at the
/// end of the turn, or once this much is not yet counted, whichever comes first. What
/// the budget misses meanwhile is below this, in all (one run at a time), and only while
/// the driver's turn lasts.
pub(super) const HOLD_STEP: usize = 64 << 10;

/// One link's messages taken in a row in this turn, not yet in the event stream: they go
/// in together as one item ([`Driver::flush_messages`]), before any other event and at
/// the end of the turn, holding the cost of all on the link's share of the budget. One
/// count in the budget (or one per [`HOLD_STEP`]) and one hand-over per run, not per
/// message: what a run holds is released as the application takes its messages.
pub(super) struct Run {
    pub(super) link: LinkId,
    /// The run's messages: their payloads (the sender is the run's).
    pub(super) payloads: Vec<Bytes>,
    pub(super) hold: hail_link::Hold,
    /// What the run's messages cost beyond what `hold` counts (below [`HOLD_STEP`]).
    pub(super) uncounted: usize,
    /// The link's peer, looked up once per run rather than per message: its name and id
    /// do not change while the run lasts (a link's name is set once, at its hello, and
    /// every discovery frame, close or dial result ends the run first).
    pub(super) from: (Arc<str>, crate::DeviceId),
}

impl Run {
    /// Adds a message of the run: counted on the hold once what is not yet counted
    /// reaches [`HOLD_STEP`].
    pub(super) fn push(&mut self, payload: Bytes) {
        self.uncounted += super::events::message_cost(payload.len());
        self.payloads.push(payload);
        if self.uncounted >= HOLD_STEP {
            self.count();
        }
    }

    /// The run as it goes into the event stream, all of it counted on its hold. Its
    /// payloads stay as the link cut them: a run of the link's holds frames of one first
    /// byte only (hail-link's `Rx::next_run`), so a message's allocation holds messages of
    /// the same run and none of the RPC packets or discovery frames this device consumes
    /// at once (a waiting message cannot keep those alive, uncounted), and a run of views
    /// fills at least half of its read buffer.
    pub(super) fn finish(mut self) -> MessageRun {
        self.count();
        if self.payloads.len() < RUN_CAPACITY / 8 {
            self.payloads.shrink_to_fit();
        }
        MessageRun {
            from: self.from.0,
            from_id: self.from.1,
            payloads: self.payloads,
            hold: self.hold,
        }
    }

    /// Counts on the hold what the run's messages cost and it does not yet count.
    pub(super) fn count(&mut self) {
        if self.uncounted > 0 {
            self.hold.set(self.hold.bytes() + self.uncounted);
            self.uncounted = 0;
        }
    }
}

/// What the dials tell the driver.
pub(super) enum Internal {
    Dialed {
        dial: DialId,
        target: DialKey,
        addrs: Vec<SocketAddr>,
        result: Dialed,
    },
}

/// A graceful stop in progress: the links drain until `until`, then `done` is told.
struct Stopping {
    until: Instant,
    done: Option<oneshot::Sender<()>>,
}

/// The device's task and everything it owns.
pub(super) struct Driver {
    pub(super) shared: Arc<Shared>,
    /// The discovery channels, one per group (none without multicast).
    groups: Groups,
    pub(super) server: Server<Binary>,
    server_events: ServerEvents<Bytes>,
    internal_tx: mpsc::Sender<Internal>,
    internal: mpsc::Receiver<Internal>,
    /// What the dialed links deliver (their frames and ends), all into one stream, as
    /// the listener's events carry the accepted ones.
    dialed_tx: EventSender<ServerEvent<Bytes>>,
    dialed: ServerEvents<Bytes>,
    stop: oneshot::Receiver<oneshot::Sender<()>>,
    dial_failures: DialFailures,
    /// The listener's authentication failures already reported.
    auth_failures_seen: u64,
    summary: super::summary::Summary,
    /// Set by a graceful stop.
    stopping: Option<Stopping>,
    /// The messages of this turn not yet in the event stream.
    pub(super) run: Option<Run>,
    /// Follows the host's interfaces (see [`InterfaceWatch`]), when there is anything to
    /// follow.
    watch: Option<InterfaceWatch>,
}

impl Driver {
    pub(super) fn new(
        shared: Arc<Shared>,
        groups: Groups,
        server: Server<Binary>,
        server_events: ServerEvents<Bytes>,
        stop: oneshot::Receiver<oneshot::Sender<()>>,
    ) -> Self {
        let (internal_tx, internal) = mpsc::channel(INTERNAL_CAPACITY);
        let (dialed_tx, dialed) = Events::channel(DIALED_CAPACITY);
        Self {
            shared,
            groups,
            server,
            server_events,
            internal_tx,
            internal,
            dialed_tx,
            dialed,
            stop,
            dial_failures: DialFailures::default(),
            auth_failures_seen: 0,
            summary: Default::default(),
            stopping: None,
            run: None,
            watch: None,
        }
    }

    /// The driver, following the host's interfaces with `watch`.
    pub(super) fn watching(mut self, watch: Option<InterfaceWatch>) -> Self {
        self.watch = watch;
        self
    }

    /// Runs the device until it is stopped (and drained) or its listener is gone, then
    /// closes every link.
    pub(super) async fn run(mut self) {
        self.pump().await;
        loop {
            let running = self.stopping.is_none();
            if !running && lock(&self.shared.links).is_empty() {
                break;
            }
            let deadline = lock(&self.shared.table).poll_timeout().map(clock::at);
            let drain_until = self.stopping.as_ref().map(|s| s.until);
            tokio::select! {
                done = &mut self.stop, if running => self.stop(done.ok()).await,
                d = self.groups.recv(), if running => {
                    self.datagram(d);
                    self.ready_datagrams();
                }
                e = self.server_events.recv() => {
                    let Some(e) = e else { break };
                    self.server_event(e);
                    self.ready_input();
                }
                Some(m) = self.internal.recv() => {
                    self.internal(m);
                    self.ready_input();
                }
                Some(e) = self.dialed.recv() => {
                    self.server_event(e);
                    self.ready_input();
                }
                () = clock::sleep_until(deadline), if running => self.timeout(),
                () = clock::sleep_until(self.watch.as_ref().map(|w| w.next)), if running => {
                    self.interfaces_changed().await;
                }
                () = clock::sleep_until(drain_until), if !running => {
                    debug!(links = lock(&self.shared.links).len(), "links still open after the shutdown linger");
                    break;
                }
            }
            self.pump().await;
        }
        self.finish().await;
    }

    /// Handles the link input already waiting, at most [`INPUT_BATCH`] items (or
    /// [`MESSAGE_BATCH`] messages): one turn of the loop (timers, the table's deadline,
    /// the table's actions) serves a batch, not every frame.
    fn ready_input(&mut self) {
        // Whether the last input went through the table (the one before this call may have).
        let mut tabled = true;
        // In messages: another input takes the room of this many.
        let share = MESSAGE_BATCH / INPUT_BATCH;
        let mut room = MESSAGE_BATCH;
        while room > 0 {
            // The table's actions first (the loop carries them out): a link's hello goes
            // out before the link is used (its peer is joined as soon as its hello is in).
            if tabled && lock(&self.shared.table).has_actions() {
                return;
            }
            let e = if let Some(e) = self.server_events.try_recv() {
                e
            } else if let Some(e) = self.dialed.try_recv() {
                e
            } else if let Ok(m) = self.internal.try_recv() {
                room = room.saturating_sub(share);
                self.internal(m);
                tabled = true;
                continue;
            } else {
                return;
            };
            let message =
                matches!(&e, ServerEvent::Message { msg, .. } if msg.first() == Some(&MESSAGE_TAG));
            room = room.saturating_sub(if message { 1 } else { share });
            tabled = self.server_event(e);
        }
    }

    /// Handles the datagrams already waiting on the discovery channels (every group's
    /// together), at most [`DATAGRAM_BATCH`] with the one that woke the loop, until one
    /// leaves the table something to do (the loop does it first, as for a single datagram)
    /// or one is a socket error.
    fn ready_datagrams(&mut self) {
        // Only what is ready now: the loop's own `recv` registers the task's waker again.
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 1..DATAGRAM_BATCH {
            if lock(&self.shared.table).has_actions() {
                return;
            }
            match self.groups.poll_recv(&mut cx) {
                Poll::Ready(Ok(d)) => self.datagram(Ok(d)),
                Poll::Ready(Err(e)) => return self.datagram(Err(e)),
                Poll::Pending => return,
            }
        }
    }

    /// A graceful stop: goodbyes on the group and on every link, then the drain phase.
    async fn stop(&mut self, done: Option<oneshot::Sender<()>>) {
        lock(&self.shared.table).close(clock::now());
        self.pump().await;
        self.stopping = Some(Stopping {
            until: Instant::now() + SHUTDOWN_LINGER,
            done,
        });
    }

    fn datagram(&mut self, d: Result<Datagram, MulticastError>) {
        match d {
            Ok(d) => {
                let from = d.from;
                let r = lock(&self.shared.table).handle_datagram(&d.payload, from, clock::now());
                if let Err(e) = r {
                    debug!(%from, error = %e, "dropped an advert");
                }
            }
            Err(e) => warn!(error = %e, "multicast receive failed"),
        }
    }

    /// Returns whether the event went through the table (it may have actions now).
    fn server_event(&mut self, e: ServerEvent<Bytes>) -> bool {
        match e {
            ServerEvent::Connected { id, addr, .. } => {
                if let Some(conn) = self.server.connection(id) {
                    if self.stopping.is_some() {
                        // Draining: new links are closed at once.
                        conn.close();
                    } else {
                        self.link_up(conn, LinkOrigin::Accepted, addr);
                    }
                }
                true
            }
            ServerEvent::Message { id, msg } => self.frame(LinkId(id.get()), msg),
            ServerEvent::Closed { id, reason } => {
                self.closed(LinkId(id.get()), &reason);
                true
            }
            _ => false,
        }
    }

    fn internal(&mut self, m: Internal) {
        // A dial's error goes in after the messages before it.
        self.flush_messages();
        match m {
            Internal::Dialed {
                dial,
                target,
                addrs,
                result,
            } => {
                if self.stopping.is_some() {
                    // Draining: a link that comes up now is closed at once.
                    if let Ok((conn, _gate)) = result {
                        conn.close();
                    }
                    return;
                }
                match result {
                    Ok((conn, gate)) => {
                        self.dial_failures.succeeded(&target);
                        let remote = conn.peer_addr();
                        self.link_up(conn, LinkOrigin::Dialed(dial), remote);
                        // Known now: its frames may come.
                        gate.open();
                    }
                    Err((addr, error)) => {
                        let shared = &self.shared;
                        self.dial_failures.failed(target, addrs, addr, &error, |e| {
                            shared.emit(DeviceEvent::Error(e));
                        });
                        lock(&self.shared.table).dial_failed(dial, clock::now());
                    }
                }
            }
        }
    }

    /// The interface watch's turn: discovery channels joined anew, default groups joined
    /// (announced on at once, with a probe, as at start) or left, and new addresses
    /// announced (the loop's `pump` sends that announce, on every group).
    async fn interfaces_changed(&mut self) {
        let Some(w) = &mut self.watch else { return };
        let changes = w.look(&self.groups.joined());
        let changed = !changes.left.is_empty() || !changes.channels.is_empty();
        for g in changes.left {
            self.groups.leave(g);
        }
        for c in changes.channels {
            let group = c.0.group();
            if self.groups.put(c) {
                self.hello(group).await;
            }
        }
        if changed {
            *lock(&self.shared.groups) = self.groups.addrs();
            let mut counters = lock(&self.shared.counters);
            counters.groups = self.groups.stats();
            counters.left = self.groups.left_stats();
        }
        if let Some(addresses) = changes.addresses {
            lock(&self.shared.table).set_addresses(addresses, clock::now());
        }
    }

    /// On a group joined while running: the device's announce, so the group's devices
    /// dial it, and a probe, so they announce themselves now rather than at their next
    /// beacon.
    async fn hello(&mut self, group: SocketAddr) {
        let (announce, id) = {
            let table = lock(&self.shared.table);
            (table.announce(), table.local().id())
        };
        for advert in [Advert::Announce(announce), Advert::Probe { from: id }] {
            if let Ok(bytes) = advert.to_bytes() {
                self.groups.send_on(group, &bytes).await;
            }
        }
    }

    /// The table's timer; also the time to read the channels' and the listener's counters.
    fn timeout(&mut self) {
        self.flush_messages();
        // Drops counted while the stream had no room are reported once it has.
        self.shared.report_drops();
        let stats = {
            let mut table = lock(&self.shared.table);
            table.handle_timeout(clock::now());
            table.stats().clone()
        };
        self.summary.tick(tokio::time::Instant::now(), &stats);
        // Handshakes of accepted links that failed authentication.
        let failed = self.server.stats().auth_failures;
        *lock(&self.shared.counters) = Counters {
            groups: self.groups.stats(),
            left: self.groups.left_stats(),
            auth_failures: failed,
        };
        if failed > self.auth_failures_seen {
            let count = failed - self.auth_failures_seen;
            self.auth_failures_seen = failed;
            self.shared.emit(DeviceEvent::Error(RunError::AuthFailed {
                addr: None,
                count,
            }));
        }
    }

    /// Carries out the table's actions and forwards its events.
    pub(super) async fn pump(&mut self) {
        loop {
            let action = lock(&self.shared.table).poll_action();
            let Some(action) = action else { break };
            match action {
                Action::Multicast(advert) => {
                    if let Ok(bytes) = advert.to_bytes() {
                        self.groups.send(&bytes).await;
                    }
                }
                Action::Send { conn, message } => {
                    let c = lock(&self.shared.links).get(&conn).map(|l| l.conn.clone());
                    if let (Some(c), Ok(bytes)) = (c, message.to_bytes())
                        && c.try_send(Bytes::from(bytes)).is_err()
                    {
                        debug!(%conn, "discovery message not queued");
                    }
                }
                Action::Dial { dial, addrs, peer } => {
                    let tx = self.internal_tx.clone();
                    let config = self.shared.link.clone();
                    let events = self.dialed_tx.clone();
                    let target = DialKey::new(peer, &addrs);
                    tokio::spawn(async move {
                        let result = dial_any(addrs.clone(), peer, config, events).await;
                        let _ = tx
                            .send(Internal::Dialed {
                                dial,
                                target,
                                addrs,
                                result,
                            })
                            .await;
                    });
                }
                Action::Close { conn, reason } => self.close_link(conn, reason),
            }
        }
        self.forward_events();
    }

    /// Puts the turn's run of messages in the event stream: before any other event (so
    /// the stream keeps the order things happened in) and at the end of each turn.
    pub(super) fn flush_messages(&mut self) {
        if let Some(run) = self.run.take() {
            self.shared.push_messages(run.finish());
        }
    }

    /// Forwards the table's events to the event stream (after the messages before them).
    pub(super) fn forward_events(&mut self) {
        self.flush_messages();
        let mut changed = false;
        loop {
            let event = lock(&self.shared.table).poll_event();
            let Some(event) = event else { break };
            changed = true;
            let e = match event {
                Event::PeerJoined(p) => DeviceEvent::PeerJoined(p),
                Event::PeerLeft { peer, reason } => DeviceEvent::PeerLeft { peer, reason },
                Event::PeersChanged(s) => DeviceEvent::PeersChanged(s),
                Event::DuplicateName { name, ids } => DeviceEvent::DuplicateName { name, ids },
                Event::NamePinned { name, key } => {
                    if let Some(path) = &self.shared.known_devices {
                        super::trust::append(path, &name, &key);
                    }
                    continue;
                }
            };
            // Messages do not take the room of other events: a join is dropped only when
            // the application left `event_capacity` other events unread (counted, reported).
            self.shared.emit(e);
        }
        if changed {
            self.shared.members_changed.notify_waiters();
        }
    }

    /// Tells a graceful stop it is done, closes every link and the listener.
    async fn finish(mut self) {
        self.flush_messages();
        if let Some(done) = self.stopping.take().and_then(|s| s.done) {
            let _ = done.send(());
        }
        let links: Vec<LinkEntry> = lock(&self.shared.links).drain().map(|(_, l)| l).collect();
        for l in &links {
            l.conn.close();
            l.driver.disconnected(Disconnect::Lost);
        }
        // Let goodbyes and queued messages go out before the handles drop.
        let flushed = join_all(links.iter().map(|l| l.conn.closed()));
        let _ = tokio::time::timeout(SHUTDOWN_LINGER, flushed).await;
        self.server.close(SHUTDOWN_LINGER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty run of messages from "lamp", held on `budget`.
    fn lamp_run(budget: &hail_link::Budget) -> Run {
        Run {
            link: LinkId(1),
            payloads: Vec::with_capacity(RUN_CAPACITY),
            hold: budget.hold(),
            uncounted: 0,
            from: (Arc::from("lamp"), crate::DeviceId::from_bytes([7; 16])),
        }
    }

    /// What a run's messages cost is on its link's share before the run leaves the
    /// driver, whatever the batch: per turn for small messages, at once for a message of
    /// [`HOLD_STEP`] or more, so the budget never misses a step's worth.
    #[test]
    fn a_run_counts_its_messages_every_step_and_at_its_end() {
        let budget = hail_link::Budget::new(64 << 20);
        let mut run = lamp_run(&budget);
        let small = crate::MESSAGE_COST;
        for _ in 0..10 {
            run.push(Bytes::from_static(b"on"));
        }
        assert_eq!(
            budget.in_use(),
            0,
            "ten small messages wait for the turn's end"
        );
        assert_eq!(run.uncounted, 10 * small);
        run.push(Bytes::from(vec![0; HOLD_STEP]));
        assert_eq!(
            budget.in_use(),
            10 * small + HOLD_STEP,
            "a step's worth counts at once"
        );
        for _ in 0..HOLD_STEP / small {
            run.push(Bytes::from_static(b"off"));
        }
        assert_eq!(
            budget.in_use(),
            10 * small + 2 * HOLD_STEP,
            "and so does a step of small ones"
        );
        run.push(Bytes::from_static(b"on"));
        run.count();
        assert_eq!(budget.in_use(), 10 * small + 2 * HOLD_STEP + small);
        assert_eq!(run.payloads.len(), 12 + HOLD_STEP / small);
        drop(run);
        assert_eq!(budget.in_use(), 0, "all given back with the run");
    }
}
