//! The table's state: the [`PeerTable`] itself (its rules in its docs), the records it
//! keeps (peers, links, static addresses, tombstones), and the queries over them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tracing::warn;

use super::events::{Action, Event, PeerInfo, PeerTableStats};
use hail_crypto::Sequence;

use crate::advert::{Announce, MAX_ADDRESSES};
use crate::config::{LocalDevice, PeerTableConfig};
use crate::error::{ConfigError, ResolveError};
use crate::id::{DeviceId, DialId, LinkId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DialState {
    Idle,
    /// A dial waits until then: a first dial for the peer's own (see
    /// [`dial_yield`](crate::PeerTableConfigBuilder::dial_yield)), or any dial for room in
    /// the dial budget ([`MAX_DIALS_IN_FLIGHT`](crate::MAX_DIALS_IN_FLIGHT),
    /// [`MAX_DIALS_PER_SECOND`](crate::MAX_DIALS_PER_SECOND)).
    Deferred(Instant),
    Dialing(DialId),
    Backoff(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DialTarget {
    Peer(DeviceId),
    Static(usize),
}

/// The name of a connection on both ends: (dialer id, dialer's tag).
pub(super) type ConnKey = (DeviceId, u64);

#[derive(Debug)]
pub(super) enum ConnState {
    AwaitingHello { deadline: Instant },
    Established { peer: DeviceId, key: ConnKey },
}

#[derive(Debug)]
pub(super) enum Origin {
    Dialed {
        dial: DialId,
        tag: u64,
        target: Option<DialTarget>,
    },
    Accepted,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) origin: Origin,
    pub(super) remote: SocketAddr,
    /// The device whose key the link's handshake proved.
    pub(super) proven: DeviceId,
    pub(super) state: ConnState,
}

/// Where a device was seen from, one address per family: the source of its last advert
/// of that family or its link's remote address. A device heard on both default groups
/// (IPv4 and IPv6) keeps both, IPv4 first, so its adverts arriving by turns on each group
/// change neither what it is dialed at nor its peer snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Observed {
    v4: Option<SocketAddr>,
    v6: Option<SocketAddr>,
}

impl Observed {
    /// Seen from `addr`; returns whether its family's address changed (the port aside).
    pub(super) fn set(&mut self, addr: SocketAddr) -> bool {
        let slot = if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        let changed = slot.map(|o| o.ip()) != Some(addr.ip());
        *slot = Some(addr);
        changed
    }

    /// The address seen first in dial order: IPv4, else IPv6.
    pub(super) fn first(&self) -> Option<SocketAddr> {
        self.v4.or(self.v6)
    }

    /// The addresses seen, IPv4 first.
    pub(super) fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4.iter().chain(self.v6.iter()).map(SocketAddr::ip)
    }

    /// The scope of the IPv6 address seen (the interface it arrived on), 0 if none.
    pub(super) fn scope(&self) -> u32 {
        match self.v6 {
            Some(SocketAddr::V6(v6)) => v6.scope_id(),
            _ => 0,
        }
    }

    /// Whether it was seen over loopback (then loopback addresses are dialable).
    pub(super) fn is_loopback(&self) -> bool {
        self.ips().any(|ip| ip.is_loopback())
    }
}

impl From<Option<SocketAddr>> for Observed {
    fn from(addr: Option<SocketAddr>) -> Self {
        let mut o = Self::default();
        if let Some(a) = addr {
            o.set(a);
        }
        o
    }
}

#[derive(Debug)]
pub(super) struct Peer {
    pub(super) id: DeviceId,
    pub(super) name: String,
    pub(super) port: u16,
    pub(super) addresses: Vec<IpAddr>,
    /// Where it was seen from: the source of its last advert, or the remote address of
    /// its link, one of each family.
    pub(super) observed: Observed,
    /// Loopback addresses are dialable (we reach it over loopback).
    pub(super) loopback_ok: bool,
    /// We heard from the device itself (advert or hello), not only through gossip.
    pub(super) authoritative: bool,
    /// We ever received a multicast announce from it.
    pub(super) heard_multicast: bool,
    pub(super) lease_until: Option<Instant>,
    pub(super) gossip_until: Option<Instant>,
    pub(super) active: Option<LinkId>,
    pub(super) member: bool,
    pub(super) grace_until: Option<Instant>,
    pub(super) dial: DialState,
    pub(super) failures: u32,
    /// When it was last heard of (advert, gossip or hello): the unproven entry heard of
    /// longest ago makes room first.
    pub(super) heard_at: Option<Instant>,
    /// Adverts taken from it (up to 255), an advert checked as a repeat of an unverified
    /// sighting counting for two: an entry heard more than once outlives those heard once
    /// and may dial from [`DIAL_RESERVE`](crate::DIAL_RESERVE).
    pub(super) heard: u8,
    /// The newest signed announce verified from its key (advert, hello or gossip): what
    /// later ones are compared with (older are replays, equal need no verification) and
    /// what gossip relays.
    pub(super) signed: Option<Announce>,
}

impl Peer {
    pub(super) fn new(id: DeviceId, name: String) -> Self {
        Self {
            id,
            name,
            port: 0,
            addresses: Vec::new(),
            observed: Observed::default(),
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
            heard_at: None,
            heard: 0,
            signed: None,
        }
    }

    /// The sequence number of its newest verified announce; `u64::MAX` when none was
    /// verified (then nothing of it counts as newer).
    pub(super) fn seq(&self) -> u64 {
        self.signed.as_ref().map_or(u64::MAX, Announce::seq)
    }

    /// No link proves it: known from adverts or gossip only.
    pub(super) fn unproven(&self) -> bool {
        !self.member && self.active.is_none()
    }

    /// Heard more than once, or joined: what a flood of one-off forgeries cannot crowd
    /// out of the table or the dial budget.
    pub(super) fn repeated(&self) -> bool {
        self.heard >= 2 || self.member
    }

    /// Heard from recently or connected.
    pub(super) fn alive(&self) -> bool {
        self.active.is_some() || self.grace_until.is_some() || self.lease_until.is_some()
    }

    /// Any reason to keep the entry.
    pub(super) fn keep(&self) -> bool {
        self.alive() || self.gossip_until.is_some()
    }

    pub(super) fn hosts(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.observed.ips().chain(self.addresses.iter().copied())
    }

    pub(super) fn info(&self) -> PeerInfo {
        PeerInfo {
            id: self.id,
            name: self.name.clone(),
            addresses: self.dial_addrs(),
            metadata: self
                .signed
                .as_ref()
                .map(|a| a.body.metadata.clone())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
pub(super) struct StaticPeer {
    pub(super) addr: SocketAddr,
    pub(super) dial: DialState,
    pub(super) failures: u32,
    /// The device last found behind the address.
    pub(super) peer: Option<DeviceId>,
    /// The address leads to ourselves: never dialed again.
    pub(super) is_self: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TombKind {
    /// Said goodbye: anything more from this id is stale.
    Departed,
    /// Presumed restarted: if it speaks again, it was a duplicate name.
    Replaced,
}

#[derive(Debug)]
pub(super) struct Tomb {
    pub(super) until: Instant,
    pub(super) kind: TombKind,
    /// The newest sequence number verified from the id when it was buried: a record with
    /// a higher one is of a later run of the same key (a kept identity), which the tomb
    /// does not hold back.
    pub(super) seq: u64,
}

impl PeerTable {
    /// Whether `a` is exactly the announce already verified from its key: it needs no
    /// second check.
    pub(super) fn verified_before(&self, a: &Announce) -> bool {
        self.peers
            .get(&a.id())
            .and_then(|p| p.signed.as_ref())
            .is_some_and(|k| k == a)
    }

    /// Whether a record of `id` under sequence number `seq` is held back by a departure
    /// (late adverts and gossip of a device that said goodbye; a later run of its key
    /// passes).
    pub(super) fn departed(&self, id: DeviceId, seq: u64) -> bool {
        self.tombstones
            .get(&id)
            .is_some_and(|t| t.kind == TombKind::Departed && seq <= t.seq)
    }

    /// Whether this device is the first dialer of the pair it makes with `peer` (see
    /// [`DeviceId::dials_first`]): it dials `peer` at once, and the one-link rule keeps
    /// its link; else it waits for `peer`'s dial.
    pub(super) fn dials_first(&self, peer: DeviceId) -> bool {
        DeviceId::dials_first(self.local.id(), peer) == self.local.id()
    }
}

/// The peer table: a sans-IO state machine that decides who is there, whom to dial and
/// when to wake.
///
/// The table owns no socket and no timer. Its driver (the tokio `Device`, or a test with a
/// fake clock) feeds it what happened, each with the current [`Instant`]:
///
/// | input | method |
/// |---|---|
/// | start, close | [`PeerTable::start`], [`PeerTable::close`] |
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
/// - **Membership.** A peer *joins* when a link to it is up, its handshake proved the
///   peer's key (the driver passes the proven id to [`PeerTable::link_up`]) and both
///   hellos are exchanged, the peer's signed by that same key (it is then ready to send
///   to); a hello for another key closes the link. It *leaves* when it said goodbye (on
///   its link, or signed and newer than its announces on the group), its link timed out,
///   its link was lost and not re-established within the reconnect grace, or it
///   restarted. Adverts are hints of where to dial: they are signed, checked once per
///   change, and never close, replace or rename a link.
/// - **Liveness.** An unconnected peer lives as long as its lease (renewed by each announce)
///   or, if learned by gossip, its gossip lease. A connected peer lives as long as its link:
///   the link's heartbeat is the authority, so lost multicast beacons never drop a working
///   connection.
/// - **One connection per pair.** Both sides may dial when they learn of each other. Each
///   connection is named on both ends by `(dialer id, dialer's tag)` (the tag travels in
///   the dialer's hello); when a pair has two connections, both sides keep the one dialed
///   by the pair's first dialer (see *Who dials*), of two dialed by the same side the one
///   with the smaller name, and close the other. Both sides agree without a further round
///   trip. A peer whose only link is closed from under it stays joined for the reconnect
///   grace, so the loser's close never shows up as a departure.
/// - **Restarts and duplicate names.** When a new id's link proves it under a name an
///   older id holds, the new one replaces the old (old links closed, `PeerLeft(Restarted)`)
///   if the old has no link up (its process was killed and its connection reset, or it
///   is only advertised); if the old link is still up, both are joined and the table
///   reports [`Event::DuplicateName`] until that link ends, when the old id leaves as
///   restarted at once. Only joined ids make a name shared. A replaced id that proves
///   itself alive again on a link was not a restart: it comes back and the name is
///   reported as a duplicate. With [`Trust::FirstUse`](crate::Trust::FirstUse) or an allow
///   list, a key the trust does not admit is refused before any of this.
/// - **Answering newcomers.** An announce from a peer the table has no lease or link for
///   (new, or gone after a timeout, as when a partition heals) is answered with the table's
///   own announce after the probe answer jitter, at most once per 500 ms, so both sides
///   learn of each other from one exchange instead of each waiting for its own next
///   beacon. A dial to such a peer still in backoff or in flight (started while it was
///   unreachable) is started afresh.
/// - **Who dials.** Of two devices that learn of each other, the pair's *first dialer*
///   dials at once: the smaller id when the two ids differ in an even number of bits, the
///   larger when they differ in an odd number, so each device of a mesh is the first
///   dialer for about half of its peers. The other waits
///   [`dial_yield`](crate::PeerTableConfigBuilder::dial_yield) for that dial (its link
///   joining makes a dial of its own unneeded) and dials only if none came. Redials after
///   a failure do not wait.
/// - **Redial.** A peer that is advertised (lease or gossip lease live) but not connected
///   is redialed with exponential backoff; static addresses are redialed for as long as
///   no link to the device behind them is up.
#[derive(Debug)]
pub struct PeerTable {
    pub(super) config: PeerTableConfig,
    pub(super) local: LocalDevice,
    /// Sequence numbers of what the table signs (announces, the goodbye).
    pub(super) sequence: Sequence,
    /// The local announce, signed (see [`PeerTable::announce`]).
    pub(super) own: Announce,
    /// Signature checks of adverts each source, and all, may still cost now.
    pub(super) verify_budget: super::verify::VerifyBudget,
    pub(super) rng: StdRng,
    pub(super) phase: Phase,
    /// Entries are boxed: a B-tree node holds 11, so inline entries (a `Peer` is about
    /// 460 bytes) would cost a few KB per node, mostly empty slots, per device.
    pub(super) peers: BTreeMap<DeviceId, Box<Peer>>,
    /// Boxed as `peers` is (a `Conn` is about 140 bytes).
    pub(super) conns: BTreeMap<LinkId, Box<Conn>>,
    pub(super) dials: BTreeMap<DialId, DialTarget>,
    pub(super) statics: Vec<StaticPeer>,
    pub(super) tombstones: BTreeMap<DeviceId, Tomb>,
    /// Duplicate links the table asked to close, and whose they are, until the driver
    /// reports them closed: what the peer sent on them before is still on its way.
    /// At most `max_peers` entries.
    pub(super) draining: BTreeMap<LinkId, DeviceId>,
    /// Goodbyes heard on the group from devices whose links may still carry what they
    /// sent before it: the departure waits for the link's goodbye or close, at most
    /// until the deadline ([`PeerTableConfigBuilder::goodbye_grace`]).
    ///
    /// [`PeerTableConfigBuilder::goodbye_grace`]: crate::PeerTableConfigBuilder::goodbye_grace
    pub(super) goodbyes: BTreeMap<DeviceId, Instant>,
    /// Names known to be held by several live ids (no restart presumed for them).
    pub(super) dup_names: BTreeSet<String>,
    /// Last reported id set per duplicated name.
    pub(super) reported: BTreeMap<String, Vec<DeviceId>>,
    pub(super) announce_at: Vec<Instant>,
    pub(super) next_beacon: Option<Instant>,
    pub(super) probe_answer_at: Option<Instant>,
    /// When a probe or newcomer answer last went out (see `MIN_ANSWER_GAP`).
    pub(super) last_answer: Option<Instant>,
    pub(super) last_probe: Option<Instant>,
    /// When an announce from a newcomer was last answered (see `NEWCOMER_ANSWER_GAP`).
    pub(super) last_newcomer_answer: Option<Instant>,
    pub(super) next_dial: u64,
    /// The dial budget: dials that may start now (at most [`DIAL_BURST`]), as of
    /// `dial_tokens_at`; refilled at [`MAX_DIALS_PER_SECOND`].
    ///
    /// [`DIAL_BURST`]: crate::DIAL_BURST
    /// [`MAX_DIALS_PER_SECOND`]: crate::MAX_DIALS_PER_SECOND
    pub(super) dial_tokens: f64,
    pub(super) dial_tokens_at: Option<Instant>,
    pub(super) next_tag: u64,
    pub(super) actions: VecDeque<Action>,
    pub(super) events: VecDeque<Event>,
    pub(super) dirty: bool,
    pub(super) stats: PeerTableStats,
}

impl PeerTable {
    /// A table for `local`, idle until [`start`](Self::start). `seed` feeds the jitter
    /// and backoff randomness (pass a random one; tests pass a fixed one to be
    /// deterministic). Fails on an invalid local name. More than
    /// [`MAX_ADDRESSES`] local addresses are cut to the first 8, with a warning.
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
        let mut sequence = Sequence::new(local.incarnation);
        let seq = sequence.next().map_err(|_| ConfigError::Unsignable)?;
        let own = local
            .signed_announce(config.lease, seq)
            .map_err(|_| ConfigError::Unsignable)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let verify_budget = super::verify::VerifyBudget::new(rand::Rng::random(&mut rng));
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
            sequence,
            own,
            verify_budget,
            rng,
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
            last_answer: None,
            last_probe: None,
            last_newcomer_answer: None,
            next_dial: 1,
            dial_tokens: f64::from(crate::config::DIAL_BURST),
            dial_tokens_at: None,
            next_tag: 1,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            dirty: false,
            stats: PeerTableStats::default(),
        })
    }

    /// Whether [`poll_action`](Self::poll_action) has something: a driver that handles
    /// several inputs in a row carries these out before the next input (a hello asked for
    /// by a new link must go out before anything sent on the link after it).
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The local device.
    pub fn local(&self) -> &LocalDevice {
        &self.local
    }

    /// Joined peers, sorted by name then id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .peers
            .values()
            .filter(|p| p.member)
            .map(|p| p.info())
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
            .map(|p| p.info())
            .collect();
        v.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        v
    }

    /// The link that currently carries traffic to a joined peer.
    pub fn connection(&self, id: DeviceId) -> Option<LinkId> {
        self.peers.get(&id).and_then(|p| p.active)
    }

    /// The joined peer a link belongs to, once its hello arrived.
    pub fn peer_of(&self, conn: LinkId) -> Option<DeviceId> {
        match self.conns.get(&conn)?.state {
            ConnState::Established { peer, .. } => Some(peer),
            ConnState::AwaitingHello { .. } => None,
        }
    }

    /// The name of the device at the other end of `conn`: an established link's, or a
    /// duplicate's still draining.
    pub fn name_on_link(&self, conn: LinkId) -> Option<&str> {
        let id = match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Established { peer, .. }) => *peer,
            Some(ConnState::AwaitingHello { .. }) => return None,
            None => *self.draining.get(&conn)?,
        };
        self.peers.get(&id).map(|p| p.name.as_str())
    }

    /// Dials started and not yet over (at most
    /// [`MAX_DIALS_IN_FLIGHT`](crate::MAX_DIALS_IN_FLIGHT)).
    pub fn dials_in_flight(&self) -> usize {
        self.dials.len()
    }

    /// The one live device with this name and the link to it.
    pub fn resolve(&self, name: &str) -> Result<(DeviceId, LinkId), ResolveError> {
        let holders: Vec<&Peer> = self
            .peers
            .values()
            .filter(|p| p.authoritative && p.alive() && p.name == name)
            .map(|p| &**p)
            .collect();
        // Joined holders first: a device only heard of (no link proves it) cannot make a
        // joined peer's name ambiguous.
        let joined: Vec<&Peer> = holders.iter().copied().filter(|p| p.member).collect();
        let holders = if joined.is_empty() { holders } else { joined };
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
    pub fn stats(&self) -> &PeerTableStats {
        &self.stats
    }

    /// Between [`start`](Self::start) and [`close`](Self::close).
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    pub(super) fn flush(&mut self) {
        if self.dirty {
            self.dirty = false;
            let snapshot = self.peers();
            self.events.push_back(Event::PeersChanged(snapshot));
        }
    }
}
