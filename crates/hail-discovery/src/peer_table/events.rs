//! The table's vocabulary with its driver: what the driver reports ([`LinkOrigin`],
//! [`LinkCloseReason`]), what the table asks of it ([`Action`], [`TableCloseReason`]), what
//! users hear ([`Event`], [`LeaveReason`], [`PeerInfo`]) and the counters ([`PeerTableStats`]).

use std::net::SocketAddr;

use crate::advert::{Advert, LinkMessage};
use crate::id::{DeviceId, DialId, LinkId};

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
pub enum TableCloseReason {
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
    /// The hello's key is not the one the link's handshake proved (a device claiming
    /// another's id), or its signature does not verify.
    IdentityMismatch,
    /// The peer's key is not one [`Trust`](crate::Trust) lets in (not on the allow list,
    /// or another key than the one its name is pinned to).
    Untrusted,
    /// The link's host has [`max_peers_per_host`](crate::PeerTableConfigBuilder::max_peers_per_host)
    /// joined peers already.
    HostLimit,
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
    /// The metadata it signed into its announce (empty when it has none).
    pub metadata: crate::advert::Metadata,
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
    /// addressing that name fails with
    /// [`ResolveError::AmbiguousName`](crate::ResolveError::AmbiguousName) until one is
    /// gone. Reported again whenever the set of ids changes while still two or more.
    DuplicateName {
        /// The shared name.
        name: String,
        /// The ids that hold it, sorted.
        ids: Vec<DeviceId>,
    },
    /// A name was pinned to the key that first joined with it ([`Trust::FirstUse`](crate::Trust::FirstUse)):
    /// keep it (the device appends it to its known-devices file).
    NamePinned {
        /// The name.
        name: String,
        /// The key's bytes.
        key: [u8; 32],
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
        conn: LinkId,
        /// The message.
        message: LinkMessage,
    },
    /// Dial these addresses in parallel; the first that connects (and passes the link's
    /// handshake) wins, the rest are dropped. Report
    /// [`PeerTable::link_up`](crate::PeerTable::link_up) with [`LinkOrigin::Dialed`] or,
    /// when every address failed,
    /// [`PeerTable::dial_failed`](crate::PeerTable::dial_failed): exactly one of the two
    /// per dial.
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
    /// forgotten it; a later [`PeerTable::link_closed`](crate::PeerTable::link_closed) for
    /// it changes no membership. For a [`TableCloseReason::Duplicate`], report that close anyway
    /// once the link has ended: a goodbye of its peer waits for it, so what the peer sent
    /// on it comes first (at most
    /// [`goodbye_grace`](crate::PeerTableConfigBuilder::goodbye_grace)).
    Close {
        /// The link.
        conn: LinkId,
        /// Why.
        reason: TableCloseReason,
    },
}

/// Counters of what the table dropped or saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerTableStats {
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
    /// Devices known only from adverts or gossip, forgotten to make room for newer ones
    /// (see [`max_peers`](crate::PeerTableConfigBuilder::max_peers)).
    pub unproven_evicted: u64,
    /// Adverts, hellos and gossip records whose key or signature does not verify.
    pub bad_signatures: u64,
    /// Signed adverts and gossip records older (lower sequence number) than one already
    /// verified from the same key: replays of earlier adverts, ignored.
    pub stale_adverts: u64,
    /// Announces (on the group or in gossip) dropped unverified because their source had
    /// spent its share of signature checks ([`VERIFY_PER_SOURCE`](crate::VERIFY_PER_SOURCE)
    /// a second) or all sources theirs ([`VERIFY_PER_SECOND`](crate::VERIFY_PER_SECOND),
    /// and for repeats also [`VERIFY_REPEATS_PER_SECOND`](crate::VERIFY_REPEATS_PER_SECOND)).
    pub verify_deferred: u64,
    /// Announces checked from the share reserved for repeats
    /// ([`VERIFY_REPEATS_PER_SECOND`](crate::VERIFY_REPEATS_PER_SECOND)): their (source,
    /// key) pair had been sighted before, unverified, while first sightings had spent
    /// theirs.
    pub verified_repeats: u64,
    /// Links whose hello named another key than the one their handshake proved: closed.
    pub identity_mismatch: u64,
    /// Links closed because their key was not trusted ([`Trust`](crate::Trust)).
    pub untrusted: u64,
    /// Links closed because their host had
    /// [`max_peers_per_host`](crate::PeerTableConfigBuilder::max_peers_per_host) joined
    /// peers already.
    pub host_limit: u64,
    /// Goodbyes heard on the group for a peer whose link stayed up without a goodbye of
    /// its own within the goodbye grace: not believed (anyone can send one).
    pub goodbyes_ignored: u64,
    /// Dials put off because [`MAX_DIALS_IN_FLIGHT`](crate::MAX_DIALS_IN_FLIGHT) were in
    /// flight or the [`MAX_DIALS_PER_SECOND`](crate::MAX_DIALS_PER_SECOND) budget was spent.
    pub dials_deferred: u64,
    /// Dials started from [`DIAL_RESERVE`](crate::DIAL_RESERVE) (for peers heard more than
    /// once, joined peers and static addresses) while the rest of the dial budget was
    /// spent.
    pub reserved_dials: u64,
}
