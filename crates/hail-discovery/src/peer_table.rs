//! The peer table: the sans-IO discovery state machine (see [`PeerTable`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace, warn};

use crate::advert::{
    Advert, AdvertError, Announce, Hello, LinkMessage, MAX_ADDRESSES, MAX_PEER_RECORDS, PeerRecord,
};
use crate::config::{LocalDevice, MAX_PEER_LEASE, MIN_PEER_LEASE, PeerTableConfig};
use crate::error::{ConfigError, ResolveError};
use crate::id::{ConnId, DeviceId, DialId};

/// Shortest time between two announces sent to answer newcomers (peers heard without a
/// lease or link, e.g. when a partition heals): 500 ms. Bounds the extra multicast traffic
/// to two announces a second per device while many peers are new at once (start-up).
const NEWCOMER_ANSWER_GAP: Duration = Duration::from_millis(500);

/// How a link came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOrigin {
    /// The driver dialed it for this [`Action::Dial`].
    Dialed(DialId),
    /// A peer connected to the local listener.
    Accepted,
}

/// Why the driver reports a link closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkCloseReason {
    /// The peer closed it, it was reset, or it failed (the peer may be alive).
    Lost,
    /// The link's heartbeat saw nothing from the peer in time (the peer is presumed dead).
    Timeout,
}

/// Why the table asks for a link to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The pair has another connection that wins the simultaneous-dial rule.
    Duplicate,
    /// The link belongs to an incarnation that was replaced by a restart.
    Stale,
    /// The peer said goodbye.
    Departed,
    /// The link leads back to this device (a static address of our own).
    SelfConnection,
    /// No hello arrived within the hello timeout.
    HelloTimeout,
    /// The peer broke the protocol (a second hello with another id).
    ProtocolViolation,
    /// The table tracks [`max_peers`](crate::PeerTableConfigBuilder::max_peers) already.
    TableFull,
    /// The local device is shutting down.
    Shutdown,
}

/// Why a peer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It said goodbye (on multicast or on its link).
    Goodbye,
    /// Its link's heartbeat timed out.
    Timeout,
    /// Its link was lost and could not be re-established within the reconnect grace.
    ConnectionLost,
    /// It restarted: a new id with the same name took its place.
    Restarted,
}

/// What the table knows about a peer, as users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's id for this run.
    pub id: DeviceId,
    /// The peer's name.
    pub name: String,
    /// Where it can be dialed, best first.
    pub addresses: Vec<SocketAddr>,
}

/// Something users should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer is connected and ready to send to.
    PeerJoined(PeerInfo),
    /// A joined peer is gone.
    PeerLeft {
        /// Who left.
        peer: PeerInfo,
        /// Why.
        reason: LeaveReason,
    },
    /// The set of joined peers (or their addresses) changed: all joined peers, sorted by
    /// name then id. Follows the joins and leaves of the same input.
    PeersChanged(Vec<PeerInfo>),
    /// Two or more live devices share a name (the local device may be one of them);
    /// addressing that name fails with [`ResolveError::AmbiguousName`] until one is gone.
    /// Reported again whenever the set of ids changes while still two or more.
    DuplicateName {
        /// The shared name.
        name: String,
        /// The ids that hold it, sorted.
        ids: Vec<DeviceId>,
    },
}

/// Something the table wants its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Encode ([`Advert::encode`]) and send this advert to the discovery group.
    Multicast(Advert),
    /// Encode ([`LinkMessage::encode`]) and send this message on a link.
    Send {
        /// The link.
        conn: ConnId,
        /// The message.
        message: LinkMessage,
    },
    /// Dial these addresses in parallel; the first that connects (and passes the link's
    /// handshake) wins, the rest are dropped. Report [`PeerTable::link_up`] with
    /// [`LinkOrigin::Dialed`] or, when every address failed, [`PeerTable::dial_failed`]:
    /// exactly one of the two per dial.
    Dial {
        /// The attempt, to report back.
        dial: DialId,
        /// The device expected at the other end, if known (a static address may lead
        /// anywhere).
        peer: Option<DeviceId>,
        /// Addresses, best first.
        addrs: Vec<SocketAddr>,
    },
    /// Close this link (after flushing what was already sent on it). The table has
    /// forgotten it; a later [`PeerTable::link_closed`] for it changes no membership. For
    /// a [`CloseReason::Duplicate`], report that close anyway once the link has ended:
    /// a goodbye of its peer waits for it, so what the peer sent on it comes first (at
    /// most [`goodbye_grace`](crate::PeerTableConfigBuilder::goodbye_grace)).
    Close {
        /// The link.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
}

/// Counters of what the table dropped or saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Adverts decoded and handled.
    pub adverts_received: u64,
    /// Datagrams dropped as malformed, foreign version or unknown kind.
    pub adverts_dropped: u64,
    /// Our own adverts looped back by multicast (ignored).
    pub own_adverts: u64,
    /// Devices not tracked because the table was full.
    pub peers_rejected: u64,
    /// Link messages out of place (before the hello, about someone else, unknown link).
    pub protocol_errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialState {
    Idle,
    Dialing(DialId),
    Backoff(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialTarget {
    Peer(DeviceId),
    Static(usize),
}

/// The name of a connection on both ends: (dialer id, dialer's tag).
type ConnKey = (DeviceId, u64);

#[derive(Debug)]
enum ConnState {
    AwaitingHello { deadline: Instant },
    Established { peer: DeviceId, key: ConnKey },
}

#[derive(Debug)]
enum Origin {
    Dialed {
        dial: DialId,
        tag: u64,
        target: Option<DialTarget>,
    },
    Accepted,
}

#[derive(Debug)]
struct Conn {
    origin: Origin,
    remote: SocketAddr,
    state: ConnState,
}

#[derive(Debug)]
struct Peer {
    id: DeviceId,
    name: String,
    port: u16,
    addresses: Vec<IpAddr>,
    /// Source of its last advert, or the remote address of its link.
    observed: Option<SocketAddr>,
    /// Loopback addresses are dialable (we reach it over loopback).
    loopback_ok: bool,
    /// We heard from the device itself (advert or hello), not only through gossip.
    authoritative: bool,
    /// We ever received a multicast announce from it.
    heard_multicast: bool,
    lease_until: Option<Instant>,
    gossip_until: Option<Instant>,
    active: Option<ConnId>,
    member: bool,
    grace_until: Option<Instant>,
    dial: DialState,
    failures: u32,
}

impl Peer {
    fn new(id: DeviceId, name: String) -> Self {
        Self {
            id,
            name,
            port: 0,
            addresses: Vec::new(),
            observed: None,
            loopback_ok: false,
            authoritative: false,
            heard_multicast: false,
            lease_until: None,
            gossip_until: None,
            active: None,
            member: false,
            grace_until: None,
            dial: DialState::Idle,
            failures: 0,
        }
    }

    /// Heard from recently or connected.
    fn alive(&self) -> bool {
        self.active.is_some() || self.grace_until.is_some() || self.lease_until.is_some()
    }

    /// Any reason to keep the entry.
    fn keep(&self) -> bool {
        self.alive() || self.gossip_until.is_some()
    }

    fn hosts(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.observed
            .map(|o| o.ip())
            .into_iter()
            .chain(self.addresses.iter().copied())
    }

    /// Dialable addresses, best first: the observed source, then the advertised ones that
    /// make sense from here.
    fn dial_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        if self.port == 0 {
            return out;
        }
        let scope = match self.observed {
            Some(SocketAddr::V6(v6)) => v6.scope_id(),
            _ => 0,
        };
        for ip in self.hosts() {
            if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !self.loopback_ok) {
                continue;
            }
            let addr = match ip {
                IpAddr::V4(v4) if v4.is_broadcast() => continue,
                IpAddr::V4(_) => SocketAddr::new(ip, self.port),
                IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
                    if scope == 0 {
                        continue;
                    }
                    SocketAddr::V6(SocketAddrV6::new(v6, self.port, 0, scope))
                }
                IpAddr::V6(_) => SocketAddr::new(ip, self.port),
            };
            if !out.contains(&addr) {
                out.push(addr);
            }
            if out.len() > MAX_ADDRESSES {
                break;
            }
        }
        out
    }

    fn info(&self) -> PeerInfo {
        PeerInfo {
            id: self.id,
            name: self.name.clone(),
            addresses: self.dial_addrs(),
        }
    }

    fn record(&self) -> PeerRecord {
        let mut addresses: Vec<IpAddr> = Vec::new();
        for ip in self.hosts() {
            if !addresses.contains(&ip) && addresses.len() < MAX_ADDRESSES {
                addresses.push(ip);
            }
        }
        PeerRecord {
            id: self.id,
            name: self.name.clone(),
            port: self.port,
            addresses,
        }
    }
}

#[derive(Debug)]
struct StaticPeer {
    addr: SocketAddr,
    dial: DialState,
    failures: u32,
    /// The device last found behind the address.
    peer: Option<DeviceId>,
    /// The address leads to ourselves: never dialed again.
    is_self: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TombKind {
    /// Said goodbye: anything more from this id is stale.
    Departed,
    /// Presumed restarted: if it speaks again, it was a duplicate name.
    Replaced,
}

#[derive(Debug)]
struct Tomb {
    until: Instant,
    kind: TombKind,
}

/// The peer table: a sans-IO state machine that decides who is there, whom to dial and
/// when to wake.
///
/// The table owns no socket and no timer. Its driver (the tokio `Device`, or a test with a
/// fake clock) feeds it what happened, each with the current [`Instant`]:
///
/// | input | method |
/// |---|---|
/// | start, shutdown | [`PeerTable::start`], [`PeerTable::shutdown`] |
/// | a datagram from the discovery group | [`PeerTable::handle_datagram`] (or [`PeerTable::handle_advert`]) |
/// | a link came up (dialed or accepted) | [`PeerTable::link_up`] |
/// | a discovery message arrived on a link | [`PeerTable::link_message`] |
/// | a link closed | [`PeerTable::link_closed`] |
/// | a dial failed on every address | [`PeerTable::dial_failed`] |
/// | the time from [`PeerTable::poll_timeout`] came | [`PeerTable::handle_timeout`] |
///
/// and drains what the table wants done ([`PeerTable::poll_action`]: multicast an advert,
/// send on a link, dial, close a link) and what users should hear
/// ([`PeerTable::poll_event`]: joined, left and why, snapshot, duplicate names).
///
/// # Rules
///
/// - **Membership.** A peer *joins* when a link to it is up and both hellos are exchanged
///   (it is then ready to send to), and *leaves* when it said goodbye, its link timed out,
///   its link was lost and not re-established within the reconnect grace, or it restarted.
/// - **Liveness.** An unconnected peer lives as long as its lease (renewed by each announce)
///   or, if learned by gossip, its gossip lease. A connected peer lives as long as its link:
///   the link's heartbeat is the authority, so lost multicast beacons never drop a working
///   connection.
/// - **One connection per pair.** Both sides dial whenever they learn of each other. Each
///   connection is named on both ends by `(dialer id, dialer's tag)` (the tag travels in
///   the dialer's hello); when a pair has two connections, both sides keep the one with the
///   smaller name and close the other. Connections dialed by the smaller id therefore win,
///   and both sides agree without a further round trip. A peer whose only link is closed
///   from under it stays joined for the reconnect grace, so the loser's close never shows
///   up as a departure.
/// - **Restarts and duplicate names.** When a new id announces a name that a live id
///   holds, the new one replaces the old (old links closed, `PeerLeft(Restarted)`) if they
///   share an address or the old one has no link up; otherwise both are live and the
///   table reports [`Event::DuplicateName`]. A replaced id that speaks again proves it was
///   not a restart: it comes back and the name is reported as a duplicate. A replacement
///   also sends a probe, so a live old id speaks up within milliseconds.
/// - **Answering newcomers.** An announce from a peer the table has no lease or link for
///   (new, or gone after a timeout, as when a partition heals) is answered with the
///   table's own announce after the probe answer jitter, at most once per 500 ms, so both sides learn of each other (and both dial)
///   from one exchange instead of each waiting for its own next beacon. A dial to such a
///   peer still in backoff or in flight (started while it was unreachable) is started
///   afresh.
/// - **Redial.** A peer that is advertised (lease or gossip lease live) but not connected
///   is redialed with exponential backoff; static addresses are redialed for as long as
///   no link to the device behind them is up.
#[derive(Debug)]
pub struct PeerTable {
    config: PeerTableConfig,
    local: LocalDevice,
    rng: StdRng,
    phase: Phase,
    peers: BTreeMap<DeviceId, Peer>,
    conns: BTreeMap<ConnId, Conn>,
    dials: BTreeMap<DialId, DialTarget>,
    statics: Vec<StaticPeer>,
    tombstones: BTreeMap<DeviceId, Tomb>,
    /// Duplicate links the table asked to close, and whose they are, until the driver
    /// reports them closed: what the peer sent on them before is still on its way.
    /// At most `max_peers` entries.
    draining: BTreeMap<ConnId, DeviceId>,
    /// Goodbyes heard on the group from devices whose links may still carry what they
    /// sent before it: the departure waits for the link's goodbye or close, at most
    /// until the deadline ([`PeerTableConfigBuilder::goodbye_grace`]).
    ///
    /// [`PeerTableConfigBuilder::goodbye_grace`]: crate::PeerTableConfigBuilder::goodbye_grace
    goodbyes: BTreeMap<DeviceId, Instant>,
    /// Names known to be held by several live ids (no restart presumed for them).
    dup_names: BTreeSet<String>,
    /// Last reported id set per duplicated name.
    reported: BTreeMap<String, Vec<DeviceId>>,
    announce_at: Vec<Instant>,
    next_beacon: Option<Instant>,
    probe_answer_at: Option<Instant>,
    last_probe: Option<Instant>,
    /// When an announce from a newcomer was last answered (see `NEWCOMER_ANSWER_GAP`).
    last_newcomer_answer: Option<Instant>,
    next_dial: u64,
    next_tag: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    dirty: bool,
    stats: Stats,
}

impl PeerTable {
    /// A table for `local`, idle until [`start`](Self::start). `seed` feeds the jitter
    /// and backoff randomness (pass a random one; tests pass a fixed one to be
    /// deterministic). Fails on an invalid local name. More than
    /// [`MAX_ADDRESSES`] local addresses are cut to the first 32, with a warning.
    pub fn new(
        config: PeerTableConfig,
        mut local: LocalDevice,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        local.validate()?;
        if local.addresses.len() > MAX_ADDRESSES {
            warn!(
                count = local.addresses.len(),
                max = MAX_ADDRESSES,
                "too many local addresses; advertising the first ones"
            );
            local.addresses.truncate(MAX_ADDRESSES);
        }
        let statics = config
            .static_peers
            .iter()
            .map(|&addr| StaticPeer {
                addr,
                dial: DialState::Idle,
                failures: 0,
                peer: None,
                is_self: false,
            })
            .collect();
        Ok(Self {
            config,
            local,
            rng: StdRng::seed_from_u64(seed),
            phase: Phase::Idle,
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            dials: BTreeMap::new(),
            statics,
            tombstones: BTreeMap::new(),
            goodbyes: BTreeMap::new(),
            draining: BTreeMap::new(),
            dup_names: BTreeSet::new(),
            reported: BTreeMap::new(),
            announce_at: Vec::new(),
            next_beacon: None,
            probe_answer_at: None,
            last_probe: None,
            last_newcomer_answer: None,
            next_dial: 1,
            next_tag: 1,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            dirty: false,
            stats: Stats::default(),
        })
    }

    /// Starts: announces at once, probes, schedules the rest of the burst and the
    /// beacons, dials the static peers. Does nothing if already started.
    pub fn start(&mut self, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Running;
        let mut offsets = self.config.burst.clone();
        offsets.sort();
        for off in offsets {
            let at = if off.is_zero() {
                now
            } else {
                now + off + self.jitter(self.config.burst_jitter)
            };
            self.announce_at.push(at);
        }
        self.announce_at.sort();
        let last = self.announce_at.last().copied().unwrap_or(now);
        self.next_beacon = Some(last + self.beacon_delay());
        debug!(id = %self.local.id, name = %self.local.name, "discovery starting");
        self.run_schedule(now);
        self.actions.push_back(Action::Multicast(Advert::Probe {
            from: self.local.id,
        }));
        self.last_probe = Some(now);
        self.dial_statics();
        self.flush();
    }

    /// Says goodbye (on the group and on every link) and closes every link. Afterwards
    /// the table ignores input, has no timeout and reports no further events; only the
    /// actions queued here remain to be drained. Joined peers are not reported as left.
    pub fn shutdown(&mut self, _now: Instant) {
        match self.phase {
            Phase::Stopped => return,
            Phase::Idle => {
                self.phase = Phase::Stopped;
                return;
            }
            Phase::Running => self.phase = Phase::Stopped,
        }
        debug!(id = %self.local.id, "discovery shutting down");
        let id = self.local.id;
        self.actions
            .push_back(Action::Multicast(Advert::Goodbye { from: id }));
        let conns = std::mem::take(&mut self.conns);
        for (&conn, c) in &conns {
            if matches!(c.state, ConnState::Established { .. }) {
                self.actions.push_back(Action::Send {
                    conn,
                    message: LinkMessage::Goodbye { from: id },
                });
            }
        }
        for &conn in conns.keys() {
            self.actions.push_back(Action::Close {
                conn,
                reason: CloseReason::Shutdown,
            });
        }
        self.peers.clear();
        self.goodbyes.clear();
        self.draining.clear();
        self.dials.clear();
        self.announce_at.clear();
        self.next_beacon = None;
        self.probe_answer_at = None;
        self.dirty = false;
    }

    /// Decodes and handles one datagram from the discovery group. A datagram that does not
    /// decode is counted in [`Stats::adverts_dropped`] and its error returned for logging;
    /// the table is unaffected.
    pub fn handle_datagram(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<(), AdvertError> {
        match Advert::decode(bytes) {
            Ok(advert) => {
                self.handle_advert(advert, from, now);
                Ok(())
            }
            Err(e) => {
                self.stats.adverts_dropped += 1;
                Err(e)
            }
        }
    }

    /// Handles one decoded advert received from `from`.
    pub fn handle_advert(&mut self, advert: Advert, from: SocketAddr, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        match advert {
            Advert::Announce(a) => {
                if a.id == self.local.id {
                    self.stats.own_adverts += 1;
                    return;
                }
                self.stats.adverts_received += 1;
                trace!(peer = %a.id, name = %a.name, %from, "announce");
                let newcomer = !self.peers.get(&a.id).is_some_and(Peer::alive);
                if self.learn(&a, from, Some(a.lease), now) {
                    if newcomer {
                        self.answer_newcomer(now);
                        // A dial started before it was heard (kept by gossip, or after a
                        // timeout, as across a partition) may sit in backoff or in TCP's
                        // SYN retransmission to a host that was unreachable: dial afresh
                        // now. A late outcome of the old dial is handled as usual.
                        if let Some(p) = self.peers.get_mut(&a.id) {
                            if p.active.is_none() && p.dial != DialState::Idle {
                                p.dial = DialState::Idle;
                            }
                        }
                    }
                    self.maybe_dial(a.id);
                }
            }
            Advert::Probe { from: id } => {
                if id == self.local.id {
                    self.stats.own_adverts += 1;
                    return;
                }
                self.stats.adverts_received += 1;
                if self.probe_answer_at.is_none() {
                    let delay = self.jitter(self.config.probe_answer_jitter);
                    self.probe_answer_at = Some(now + delay);
                }
            }
            Advert::Goodbye { from: id } => {
                if id == self.local.id {
                    self.stats.own_adverts += 1;
                    return;
                }
                self.stats.adverts_received += 1;
                self.goodbye_heard(id, now);
            }
        }
        self.flush();
    }

    /// A link is up (TCP connected and, with a passphrase, authenticated). The table
    /// answers with its hello on it.
    pub fn link_up(&mut self, conn: ConnId, origin: LinkOrigin, remote: SocketAddr, now: Instant) {
        let dial_target = match origin {
            LinkOrigin::Dialed(dial) => self.dials.remove(&dial),
            LinkOrigin::Accepted => None,
        };
        if self.phase != Phase::Running {
            self.actions.push_back(Action::Close {
                conn,
                reason: CloseReason::Shutdown,
            });
            return;
        }
        let (origin, tag) = match origin {
            LinkOrigin::Dialed(dial) => {
                let tag = self.next_tag;
                self.next_tag += 1;
                (
                    Origin::Dialed {
                        dial,
                        tag,
                        target: dial_target,
                    },
                    tag,
                )
            }
            LinkOrigin::Accepted => (Origin::Accepted, 0),
        };
        trace!(%conn, %remote, ?origin, "link up");
        self.conns.insert(
            conn,
            Conn {
                origin,
                remote,
                state: ConnState::AwaitingHello {
                    deadline: now + self.config.hello_timeout,
                },
            },
        );
        let announce = self.announce();
        self.actions.push_back(Action::Send {
            conn,
            message: LinkMessage::Hello(Hello { tag, announce }),
        });
    }

    /// A discovery message arrived on a link.
    pub fn link_message(&mut self, conn: ConnId, message: LinkMessage, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if !self.conns.contains_key(&conn) {
            // A goodbye on a duplicate being closed: the peer may have taken it for the
            // one to keep.
            match message {
                LinkMessage::Goodbye { from } if self.draining.get(&conn) == Some(&from) => {
                    self.goodbye_on_link(from, now);
                    self.flush();
                }
                _ => self.stats.protocol_errors += 1,
            }
            return;
        }
        match message {
            LinkMessage::Hello(hello) => {
                self.on_hello(conn, hello, now);
                self.goodbye_progress(now);
            }
            LinkMessage::Peers(records) => self.on_gossip(conn, records, now),
            LinkMessage::Goodbye { from } => match self.conns[&conn].state {
                ConnState::Established { peer, .. } if peer == from => {
                    self.goodbye_on_link(from, now);
                }
                _ => self.stats.protocol_errors += 1,
            },
        }
        self.flush();
    }

    /// A link closed (the table did not ask for it, or asked and the driver reports it
    /// anyway: then it is ignored).
    pub fn link_closed(&mut self, conn: ConnId, reason: LinkCloseReason, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(peer) = self.draining.remove(&conn) {
            trace!(%conn, ?reason, %peer, "duplicate link closed");
            self.goodbye_progress(now);
            self.flush();
            return;
        }
        if let Some(c) = self.conns.remove(&conn) {
            trace!(%conn, ?reason, "link closed");
            if let ConnState::Established { peer, .. } = c.state {
                if self.goodbyes.contains_key(&peer) {
                    // It said goodbye: no redial, no grace; it leaves once its last link
                    // is done (all it sent has arrived).
                    if let Some(p) = self.peers.get_mut(&peer) {
                        if p.active == Some(conn) {
                            p.active = None;
                        }
                    }
                    self.goodbye_progress(now);
                    self.flush();
                    return;
                }
            }
            self.conn_gone(conn, c, reason, now);
            self.goodbye_progress(now);
            self.flush();
        }
    }

    /// Every address of an [`Action::Dial`] failed.
    pub fn dial_failed(&mut self, dial: DialId, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(target) = self.dials.remove(&dial) {
            self.dial_outcome_failed(target, dial, now);
            self.flush();
        }
    }

    /// The earliest time at which [`handle_timeout`](Self::handle_timeout) has work; `None`
    /// before start and after shutdown. It may be in the past: then call it at once.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Running {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.announce_at.first().copied());
        consider(self.next_beacon);
        consider(self.probe_answer_at);
        consider(self.goodbyes.values().min().copied());
        for c in self.conns.values() {
            if let ConnState::AwaitingHello { deadline } = c.state {
                consider(Some(deadline));
            }
        }
        for p in self.peers.values() {
            consider(p.lease_until);
            consider(p.gossip_until);
            consider(p.grace_until);
            if let DialState::Backoff(b) = p.dial {
                consider(Some(b));
            }
        }
        for s in &self.statics {
            if let DialState::Backoff(b) = s.dial {
                consider(Some(b));
            }
        }
        t
    }

    /// Does whatever is due at `now`: announcements, lease and grace expiry, hello
    /// timeouts, redials.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        self.run_schedule(now);
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, ConnState::AwaitingHello { deadline } if deadline <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for conn in expired {
            debug!(%conn, "no hello in time");
            self.close_conn(conn, CloseReason::HelloTimeout, now);
        }
        self.goodbye_progress(now);
        let due: Vec<DeviceId> = self
            .goodbyes
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            debug!(peer = %id, "its links did not finish within the goodbye grace");
            self.depart(id, now);
        }
        self.tombstones.retain(|_, t| t.until > now);
        let ids: Vec<DeviceId> = self.peers.keys().copied().collect();
        for id in ids {
            self.tick_peer(id, now);
        }
        for s in &mut self.statics {
            if matches!(s.dial, DialState::Backoff(b) if b <= now) {
                s.dial = DialState::Idle;
            }
        }
        self.dial_statics();
        let names: Vec<String> = self.reported.keys().cloned().collect();
        for name in names {
            self.report_duplicates(&name);
        }
        self.flush();
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Changes the advertised addresses (an interface came or went) and announces them at
    /// once. More than [`MAX_ADDRESSES`] are cut, with a warning.
    pub fn set_addresses(&mut self, addresses: Vec<IpAddr>, _now: Instant) {
        self.local.addresses = addresses;
        if self.local.addresses.len() > MAX_ADDRESSES {
            warn!(
                count = self.local.addresses.len(),
                "too many local addresses; advertising the first ones"
            );
            self.local.addresses.truncate(MAX_ADDRESSES);
        }
        if self.phase == Phase::Running {
            let a = self.announce();
            self.actions
                .push_back(Action::Multicast(Advert::Announce(a)));
        }
    }

    /// The local device.
    pub fn local(&self) -> &LocalDevice {
        &self.local
    }

    /// The announce this device sends (also the content of its hello).
    pub fn announce(&self) -> Announce {
        Announce {
            id: self.local.id,
            name: self.local.name.clone(),
            port: self.local.port,
            lease: self.config.lease,
            addresses: self.local.addresses.clone(),
        }
    }

    /// Joined peers, sorted by name then id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .peers
            .values()
            .filter(|p| p.member)
            .map(Peer::info)
            .collect();
        v.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        v
    }

    /// Devices heard from directly (advert or hello) and still live, joined or not,
    /// sorted by name then id: what a scout shows.
    pub fn discovered(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .peers
            .values()
            .filter(|p| p.authoritative && p.alive())
            .map(Peer::info)
            .collect();
        v.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        v
    }

    /// The link that currently carries traffic to a joined peer.
    pub fn connection(&self, id: DeviceId) -> Option<ConnId> {
        self.peers.get(&id).and_then(|p| p.active)
    }

    /// The joined peer a link belongs to, once its hello arrived.
    pub fn peer_of(&self, conn: ConnId) -> Option<DeviceId> {
        match self.conns.get(&conn)?.state {
            ConnState::Established { peer, .. } => Some(peer),
            ConnState::AwaitingHello { .. } => None,
        }
    }

    /// The one live device with this name and the link to it.
    pub fn resolve(&self, name: &str) -> Result<(DeviceId, ConnId), ResolveError> {
        let holders: Vec<&Peer> = self
            .peers
            .values()
            .filter(|p| p.authoritative && p.alive() && p.name == name)
            .collect();
        let count = holders.len() + usize::from(name == self.local.name);
        if count >= 2 {
            return Err(ResolveError::AmbiguousName {
                name: name.to_owned(),
                count,
            });
        }
        let p = holders
            .first()
            .ok_or_else(|| ResolveError::UnknownName(name.to_owned()))?;
        p.active
            .map(|c| (p.id, c))
            .ok_or_else(|| ResolveError::NotConnected(name.to_owned()))
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Between [`start`](Self::start) and [`shutdown`](Self::shutdown).
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    // ---- internals -------------------------------------------------------------------

    fn jitter(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(0..=nanos))
    }

    fn beacon_delay(&mut self) -> Duration {
        let j = self.config.beacon_jitter;
        self.config.beacon_interval - j + self.jitter(j * 2)
    }

    /// Backoff before the redial after `failures` failures: `initial * 2^(failures-1)`
    /// capped at the maximum, drawn from `[d/2, d]`.
    fn redial_delay(&mut self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let d = self
            .config
            .redial_initial
            .saturating_mul(1 << exp)
            .min(self.config.redial_max);
        d / 2 + self.jitter(d / 2)
    }

    /// Sends one announce if a burst slot, a beacon or a probe answer is due.
    fn run_schedule(&mut self, now: Instant) {
        let mut due = false;
        while self.announce_at.first().is_some_and(|&t| t <= now) {
            self.announce_at.remove(0);
            due = true;
        }
        if self.next_beacon.is_some_and(|t| t <= now) {
            self.next_beacon = Some(now + self.beacon_delay());
            due = true;
        }
        if self.probe_answer_at.is_some_and(|t| t <= now) {
            self.probe_answer_at = None;
            due = true;
        }
        if due {
            let a = self.announce();
            self.actions
                .push_back(Action::Multicast(Advert::Announce(a)));
        }
    }

    /// Schedules an announce soon (shared with a pending probe answer) after hearing a
    /// newcomer, at most once per `NEWCOMER_ANSWER_GAP`.
    fn answer_newcomer(&mut self, now: Instant) {
        if self
            .last_newcomer_answer
            .is_some_and(|t| now.saturating_duration_since(t) < NEWCOMER_ANSWER_GAP)
        {
            return;
        }
        self.last_newcomer_answer = Some(now);
        if self.probe_answer_at.is_none() {
            let delay = self.jitter(self.config.probe_answer_jitter);
            self.probe_answer_at = Some(now + delay);
        }
    }

    fn next_dial_id(&mut self) -> DialId {
        let d = DialId(self.next_dial);
        self.next_dial += 1;
        d
    }

    fn flush(&mut self) {
        if self.dirty {
            self.dirty = false;
            let snapshot = self.peers();
            self.events.push_back(Event::PeersChanged(snapshot));
        }
    }

    /// Takes in what a device says about itself (an announce, or a hello on `observed`'s
    /// link). Returns false when it is ignored (ourselves, departed, table full).
    fn learn(
        &mut self,
        a: &Announce,
        observed: SocketAddr,
        lease: Option<Duration>,
        now: Instant,
    ) -> bool {
        if a.id == self.local.id {
            return false;
        }
        // A device that said goodbye is still let in by its hello (a link that was
        // connecting carries what it sent), but late adverts do not renew it.
        if lease.is_some() && self.goodbyes.contains_key(&a.id) {
            return false;
        }
        match self.tombstones.get(&a.id).map(|t| t.kind) {
            Some(TombKind::Departed) => return false,
            Some(TombKind::Replaced) => {
                debug!(peer = %a.id, name = %a.name, "replaced id is alive: duplicate name");
                self.tombstones.remove(&a.id);
                self.dup_names.insert(a.name.clone());
            }
            None => {}
        }
        let existing = self.peers.get(&a.id);
        if existing.is_none() && self.peers.len() >= self.config.max_peers {
            self.stats.peers_rejected += 1;
            return false;
        }
        let claim = existing.is_none_or(|p| !p.authoritative || p.name != a.name);
        if claim {
            let hosts: Vec<IpAddr> = std::iter::once(observed.ip())
                .chain(a.addresses.iter().copied())
                .collect();
            self.claim_name(a.id, &a.name, &hosts, now);
        }
        let p = self
            .peers
            .entry(a.id)
            .or_insert_with(|| Peer::new(a.id, a.name.clone()));
        let changed = p.name != a.name
            || p.port != a.port
            || p.addresses != a.addresses
            || p.observed.map(|o| o.ip()) != Some(observed.ip());
        p.name.clone_from(&a.name);
        p.port = a.port;
        p.addresses.clone_from(&a.addresses);
        p.observed = Some(observed);
        p.loopback_ok = observed.ip().is_loopback();
        p.authoritative = true;
        if let Some(lease) = lease {
            let until = now + lease.clamp(MIN_PEER_LEASE, MAX_PEER_LEASE);
            p.lease_until = Some(p.lease_until.map_or(until, |t| t.max(until)));
            p.heard_multicast = true;
        }
        if p.member && changed {
            self.dirty = true;
        }
        if claim {
            self.report_duplicates(&a.name);
        }
        true
    }

    /// `new_id` says it is `name`: replace live holders that look like its previous
    /// incarnation.
    fn claim_name(&mut self, new_id: DeviceId, name: &str, hosts: &[IpAddr], now: Instant) {
        if name == self.local.name || self.dup_names.contains(name) {
            return;
        }
        let replaced: Vec<DeviceId> = self
            .peers
            .values()
            .filter(|o| o.id != new_id && o.authoritative && o.alive() && o.name == name)
            .filter(|o| {
                let same_host = o
                    .hosts()
                    .any(|ip| !ip.is_unspecified() && hosts.contains(&ip));
                same_host || (o.active.is_none() && o.grace_until.is_none())
            })
            .map(|o| o.id)
            .collect();
        for old in replaced {
            self.replace(old, now);
        }
    }

    fn replace(&mut self, old: DeviceId, now: Instant) {
        let Some(p) = self.peers.remove(&old) else {
            return;
        };
        debug!(peer = %old, name = %p.name, "presumed restarted under a new id");
        self.insert_tomb(old, now + self.config.lease, TombKind::Replaced);
        self.close_conns_of(old, CloseReason::Stale, now);
        if p.member {
            self.events.push_back(Event::PeerLeft {
                peer: p.info(),
                reason: LeaveReason::Restarted,
            });
            self.dirty = true;
        }
        // If the old id is in fact alive (a duplicate name), a probe makes it speak now.
        if self
            .last_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.beacon_interval)
        {
            self.last_probe = Some(now);
            self.actions.push_back(Action::Multicast(Advert::Probe {
                from: self.local.id,
            }));
        }
    }

    fn insert_tomb(&mut self, id: DeviceId, until: Instant, kind: TombKind) {
        if self.tombstones.len() < self.config.max_peers || self.tombstones.contains_key(&id) {
            self.tombstones.insert(id, Tomb { until, kind });
        }
    }

    /// Reports `name` if two or more live ids hold it and the set changed since the last
    /// report; forgets it when it is no longer shared.
    fn report_duplicates(&mut self, name: &str) {
        let mut ids: Vec<DeviceId> = self
            .peers
            .values()
            .filter(|p| p.authoritative && p.alive() && p.name == name)
            .map(|p| p.id)
            .collect();
        if name == self.local.name {
            ids.push(self.local.id);
        }
        ids.sort();
        if ids.len() >= 2 {
            self.dup_names.insert(name.to_owned());
            if self.reported.get(name) != Some(&ids) {
                warn!(%name, count = ids.len(), "several devices share a name");
                self.reported.insert(name.to_owned(), ids.clone());
                self.events.push_back(Event::DuplicateName {
                    name: name.to_owned(),
                    ids,
                });
            }
        } else {
            self.reported.remove(name);
            self.dup_names.remove(name);
        }
    }

    /// A goodbye on the group. A device with a link up, or any link still awaiting its
    /// hello (it may be the device's), may have sent more on that link just before: it
    /// leaves when that link says goodbye or closes, or when the goodbye grace ends.
    fn goodbye_heard(&mut self, id: DeviceId, now: Instant) {
        let grace = self.config.goodbye_grace;
        let departed = self
            .tombstones
            .get(&id)
            .is_some_and(|t| t.kind == TombKind::Departed);
        let awaiting_hello = self
            .conns
            .values()
            .any(|c| matches!(c.state, ConnState::AwaitingHello { .. }));
        let wait = !grace.is_zero()
            && !departed
            && (self.has_link(id) || awaiting_hello)
            && (self.goodbyes.contains_key(&id) || self.goodbyes.len() < self.config.max_peers);
        if wait {
            self.goodbyes.entry(id).or_insert(now + grace);
            trace!(peer = %id, "goodbye heard; waiting for its links");
        } else {
            self.depart(id, now);
        }
    }

    /// Whether an established link to `id` is up, or one of its duplicates still drains.
    fn has_link(&self, id: DeviceId) -> bool {
        self.draining.values().any(|&p| p == id)
            || self
                .conns
                .values()
                .any(|c| matches!(c.state, ConnState::Established { peer, .. } if peer == id))
    }

    /// A goodbye on a link of `id`. Everything it sent on that link came before; unless
    /// a duplicate link of it still drains, it leaves now.
    fn goodbye_on_link(&mut self, id: DeviceId, now: Instant) {
        let grace = self.config.goodbye_grace;
        if !grace.is_zero() && self.draining.values().any(|&p| p == id) {
            self.goodbyes.entry(id).or_insert(now + grace);
            trace!(peer = %id, "goodbye on its link; waiting for its duplicate link");
        } else {
            self.depart(id, now);
        }
    }

    /// A link ended or got its hello: every device that said goodbye and has no link
    /// left leaves. While any link awaits its hello, none does: that link may be one of
    /// theirs, with what they sent behind the hello.
    fn goodbye_progress(&mut self, now: Instant) {
        if self.goodbyes.is_empty()
            || self
                .conns
                .values()
                .any(|c| matches!(c.state, ConnState::AwaitingHello { .. }))
        {
            return;
        }
        let done: Vec<DeviceId> = self
            .goodbyes
            .keys()
            .copied()
            .filter(|&id| !self.has_link(id))
            .collect();
        for id in done {
            self.depart(id, now);
        }
    }

    /// The device said goodbye.
    fn depart(&mut self, id: DeviceId, now: Instant) {
        self.goodbyes.remove(&id);
        self.draining.retain(|_, p| *p != id);
        // Late adverts and gossip about the departed id are ignored for this long.
        let until = now + self.config.lease.max(self.config.gossip_lease);
        self.insert_tomb(id, until, TombKind::Departed);
        let Some(p) = self.peers.remove(&id) else {
            return;
        };
        debug!(peer = %id, name = %p.name, "goodbye");
        self.close_conns_of(id, CloseReason::Departed, now);
        if p.member {
            self.events.push_back(Event::PeerLeft {
                peer: p.info(),
                reason: LeaveReason::Goodbye,
            });
            self.dirty = true;
        }
        if p.authoritative {
            self.report_duplicates(&p.name);
        }
    }

    /// Closes every link of a peer whose entry was already removed.
    fn close_conns_of(&mut self, id: DeviceId, reason: CloseReason, now: Instant) {
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Established { peer, .. } if peer == id))
            .map(|(&conn, _)| conn)
            .collect();
        for conn in conns {
            self.close_conn(conn, reason, now);
        }
    }

    /// The table closes a link.
    fn close_conn(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        if let Some(c) = self.conns.remove(&conn) {
            trace!(%conn, ?reason, "closing link");
            self.actions.push_back(Action::Close { conn, reason });
            self.conn_gone(conn, c, LinkCloseReason::Lost, now);
        }
    }

    /// Bookkeeping after a link is gone, whoever closed it.
    fn conn_gone(&mut self, conn: ConnId, c: Conn, reason: LinkCloseReason, now: Instant) {
        match c.state {
            ConnState::AwaitingHello { .. } => {
                if let Origin::Dialed {
                    dial,
                    target: Some(target),
                    ..
                } = c.origin
                {
                    self.dial_outcome_failed(target, dial, now);
                }
            }
            ConnState::Established { peer, .. } => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.active == Some(conn))
                {
                    self.active_lost(peer, reason, now);
                }
            }
        }
    }

    /// The link carrying a peer's traffic is gone.
    fn active_lost(&mut self, id: DeviceId, reason: LinkCloseReason, now: Instant) {
        let next = self
            .conns
            .iter()
            .filter_map(|(&conn, c)| match c.state {
                ConnState::Established { peer, key } if peer == id => Some((key, conn)),
                _ => None,
            })
            .min();
        let grace = self.config.reconnect_grace;
        let delay = self.redial_delay(1);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.active = None;
        if let Some((_, conn)) = next {
            p.active = Some(conn);
            return;
        }
        if !p.member {
            return;
        }
        if p.dial == DialState::Idle {
            p.failures = 0;
            p.dial = DialState::Backoff(now + delay);
        }
        if reason == LinkCloseReason::Timeout || grace.is_zero() {
            let why = if reason == LinkCloseReason::Timeout {
                LeaveReason::Timeout
            } else {
                LeaveReason::ConnectionLost
            };
            self.leave(id, why);
        } else {
            p.grace_until = Some(now + grace);
            debug!(peer = %id, "link lost; redialing within the grace");
        }
    }

    fn leave(&mut self, id: DeviceId, reason: LeaveReason) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.grace_until = None;
            if p.member {
                p.member = false;
                debug!(peer = %id, name = %p.name, ?reason, "peer left");
                let peer = p.info();
                self.events.push_back(Event::PeerLeft { peer, reason });
                self.dirty = true;
            }
        }
    }

    fn dial_outcome_failed(&mut self, target: DialTarget, dial: DialId, now: Instant) {
        match target {
            DialTarget::Peer(id) => {
                let Some(p) = self.peers.get(&id) else {
                    return;
                };
                if p.dial != DialState::Dialing(dial) {
                    return;
                }
                let failures = p.failures.saturating_add(1);
                let delay = self.redial_delay(failures);
                let p = self.peers.get_mut(&id).expect("checked above");
                p.failures = failures;
                p.dial = DialState::Backoff(now + delay);
                trace!(peer = %id, failures, ?delay, "dial failed");
                if p.grace_until.is_some() && p.active.is_none() {
                    self.leave(id, LeaveReason::ConnectionLost);
                }
            }
            DialTarget::Static(i) => {
                if self.statics[i].dial != DialState::Dialing(dial) {
                    return;
                }
                let failures = self.statics[i].failures.saturating_add(1);
                let delay = self.redial_delay(failures);
                let s = &mut self.statics[i];
                s.failures = failures;
                s.dial = DialState::Backoff(now + delay);
                trace!(addr = %s.addr, failures, ?delay, "static dial failed");
            }
        }
    }

    fn tick_peer(&mut self, id: DeviceId, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.lease_until.is_some_and(|t| t <= now) {
            p.lease_until = None;
        }
        if p.gossip_until.is_some_and(|t| t <= now) {
            p.gossip_until = None;
        }
        if matches!(p.dial, DialState::Backoff(t) if t <= now) {
            p.dial = DialState::Idle;
        }
        if p.grace_until.is_some_and(|t| t <= now) {
            p.grace_until = None;
            if p.active.is_none() {
                self.leave(id, LeaveReason::ConnectionLost);
            }
        }
        let p = &self.peers[&id];
        if p.keep() {
            self.maybe_dial(id);
        } else if self.goodbyes.contains_key(&id) {
            // It said goodbye and waits for its links (or the grace): it departs there,
            // with its `PeerLeft`, not silently here.
        } else {
            if p.member {
                self.leave(id, LeaveReason::ConnectionLost);
            }
            let p = self.peers.remove(&id).expect("present");
            trace!(peer = %id, name = %p.name, "forgotten");
            if p.authoritative {
                self.report_duplicates(&p.name);
            }
        }
    }

    fn maybe_dial(&mut self, id: DeviceId) {
        if self.phase != Phase::Running || !self.config.auto_connect {
            return;
        }
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        if p.active.is_some() || p.dial != DialState::Idle || !p.keep() {
            return;
        }
        let addrs = p.dial_addrs();
        if addrs.is_empty() {
            return;
        }
        let dial = self.next_dial_id();
        self.dials.insert(dial, DialTarget::Peer(id));
        self.peers.get_mut(&id).expect("present").dial = DialState::Dialing(dial);
        trace!(peer = %id, %dial, ?addrs, "dial");
        self.actions.push_back(Action::Dial {
            dial,
            peer: Some(id),
            addrs,
        });
    }

    fn dial_statics(&mut self) {
        for i in 0..self.statics.len() {
            let s = &self.statics[i];
            if s.is_self || s.dial != DialState::Idle {
                continue;
            }
            let covered = s.peer.and_then(|id| self.peers.get(&id)).is_some_and(|p| {
                p.active.is_some()
                    || p.grace_until.is_some()
                    || matches!(p.dial, DialState::Dialing(_))
            });
            if covered {
                continue;
            }
            let (addr, peer) = (s.addr, s.peer);
            let dial = self.next_dial_id();
            self.dials.insert(dial, DialTarget::Static(i));
            self.statics[i].dial = DialState::Dialing(dial);
            trace!(%addr, %dial, "dial static peer");
            self.actions.push_back(Action::Dial {
                dial,
                peer,
                addrs: vec![addr],
            });
        }
    }

    fn on_hello(&mut self, conn: ConnId, hello: Hello, now: Instant) {
        let id = hello.announce.id;
        let c = &self.conns[&conn];
        if let ConnState::Established { peer, .. } = c.state {
            if peer == id {
                self.stats.protocol_errors += 1;
            } else {
                self.close_conn(conn, CloseReason::ProtocolViolation, now);
            }
            return;
        }
        let remote = c.remote;
        let (key, target) = match c.origin {
            Origin::Dialed { dial, tag, target } => {
                ((self.local.id, tag), target.map(|t| (t, dial)))
            }
            Origin::Accepted => ((id, hello.tag), None),
        };
        if id == self.local.id {
            if let Some((DialTarget::Static(i), _)) = target {
                debug!(addr = %self.statics[i].addr, "static peer address is this device");
                self.statics[i].is_self = true;
            }
            self.close_conn(conn, CloseReason::SelfConnection, now);
            return;
        }
        if self
            .tombstones
            .get(&id)
            .is_some_and(|t| t.kind == TombKind::Departed)
        {
            self.close_conn(conn, CloseReason::Departed, now);
            return;
        }
        if !self.learn(&hello.announce, remote, None, now) {
            self.close_conn(conn, CloseReason::TableFull, now);
            return;
        }
        // The dial that produced this link is over.
        match target {
            Some((DialTarget::Peer(expected), dial)) => {
                if expected == id {
                    if let Some(p) = self.peers.get_mut(&id) {
                        if p.dial == DialState::Dialing(dial) {
                            p.dial = DialState::Idle;
                        }
                        p.failures = 0;
                    }
                } else {
                    // Someone else answers at that address now.
                    self.dial_outcome_failed(DialTarget::Peer(expected), dial, now);
                }
            }
            Some((DialTarget::Static(i), dial)) => {
                let s = &mut self.statics[i];
                if s.dial == DialState::Dialing(dial) {
                    s.dial = DialState::Idle;
                }
                s.failures = 0;
                s.peer = Some(id);
            }
            None => {}
        }
        self.conns.get_mut(&conn).expect("present").state =
            ConnState::Established { peer: id, key };
        self.attach(id, conn, key);
    }

    /// An established link to `id`: make it the active one, or apply the one-connection
    /// rule against the current one.
    fn attach(&mut self, id: DeviceId, conn: ConnId, key: ConnKey) {
        let p = self.peers.get_mut(&id).expect("learned just before");
        let Some(current) = p.active else {
            p.active = Some(conn);
            p.grace_until = None;
            p.failures = 0;
            if !p.member {
                p.member = true;
                debug!(peer = %id, name = %p.name, %conn, "peer joined");
                let info = p.info();
                self.events.push_back(Event::PeerJoined(info));
                self.dirty = true;
                self.gossip_join(id);
            }
            return;
        };
        let current_key = match self.conns.get(&current).map(|c| &c.state) {
            Some(ConnState::Established { key, .. }) => *key,
            _ => (DeviceId::from_bytes([0xff; 16]), u64::MAX),
        };
        let loser = if key < current_key {
            p.active = Some(conn);
            current
        } else {
            conn
        };
        debug!(peer = %id, kept = ?p.active, closed = %loser, "two links to one peer");
        // Both links are established, so closing the loser needs no further bookkeeping
        // beyond remembering it drains (for a goodbye to wait for it).
        if self.conns.remove(&loser).is_some() {
            if self.draining.len() < self.config.max_peers {
                self.draining.insert(loser, id);
            }
            self.actions.push_back(Action::Close {
                conn: loser,
                reason: CloseReason::Duplicate,
            });
        }
    }

    /// A peer joined: tell it and the others what they may not know. Peers heard on
    /// multicast are assumed to hear it too, so gossip flows only where it helps.
    fn gossip_join(&mut self, id: DeviceId) {
        if !self.config.gossip {
            return;
        }
        let newcomer = &self.peers[&id];
        let Some(newcomer_conn) = newcomer.active else {
            return;
        };
        let newcomer_multicast = newcomer.heard_multicast;
        let newcomer_record = (newcomer.port != 0).then(|| newcomer.record());
        let others: Vec<(ConnId, PeerRecord, bool)> = self
            .peers
            .values()
            .filter(|p| p.member && p.id != id)
            .filter_map(|p| Some((p.active?, p.record(), p.port != 0)))
            .collect();
        if !newcomer_multicast {
            let records: Vec<PeerRecord> = others
                .iter()
                .filter(|(_, _, dialable)| *dialable)
                .map(|(_, r, _)| r.clone())
                .collect();
            for chunk in records.chunks(MAX_PEER_RECORDS) {
                self.actions.push_back(Action::Send {
                    conn: newcomer_conn,
                    message: LinkMessage::Peers(chunk.to_vec()),
                });
            }
            if let Some(record) = newcomer_record {
                for (conn, _, _) in &others {
                    self.actions.push_back(Action::Send {
                        conn: *conn,
                        message: LinkMessage::Peers(vec![record.clone()]),
                    });
                }
            }
        }
    }

    fn on_gossip(&mut self, conn: ConnId, records: Vec<PeerRecord>, now: Instant) {
        let c = &self.conns[&conn];
        if !matches!(c.state, ConnState::Established { .. }) {
            self.stats.protocol_errors += 1;
            return;
        }
        if !self.config.gossip {
            return;
        }
        let loopback_ok = c.remote.ip().is_loopback();
        let until = now + self.config.gossip_lease;
        for r in records {
            if r.id == self.local.id
                || r.port == 0
                || self.tombstones.contains_key(&r.id)
                || self.goodbyes.contains_key(&r.id)
            {
                continue;
            }
            match self.peers.get_mut(&r.id) {
                Some(p) => {
                    p.gossip_until = Some(until);
                    if !p.authoritative {
                        p.name = r.name;
                        p.port = r.port;
                        p.addresses = r.addresses;
                    }
                }
                None => {
                    if self.peers.len() >= self.config.max_peers {
                        self.stats.peers_rejected += 1;
                        continue;
                    }
                    trace!(peer = %r.id, name = %r.name, "learned by gossip");
                    let mut p = Peer::new(r.id, r.name);
                    p.port = r.port;
                    p.addresses = r.addresses;
                    p.loopback_ok = loopback_ok;
                    p.gossip_until = Some(until);
                    self.peers.insert(r.id, p);
                }
            }
            self.maybe_dial(r.id);
        }
    }
}

#[cfg(test)]
mod tests;
