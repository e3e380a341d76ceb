//! Timing and limits of the peer table, and who the local device is.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hail_crypto::{Identity, Incarnation};

use crate::advert::{
    AdvertError, Announce, AnnounceBody, Metadata, validate_metadata, validate_name,
};
use crate::error::ConfigError;
use crate::id::DeviceId;

/// Most entries in an announcement burst: 16.
pub const MAX_BURST: usize = 16;
/// Longest lease a device may announce: `u32::MAX` ms (about 49.7 days), the wire limit.
pub const MAX_LEASE: Duration = Duration::from_millis(u32::MAX as u64);
/// Shortest lease the table grants a peer, whatever the peer announced: 100 ms.
pub const MIN_PEER_LEASE: Duration = Duration::from_millis(100);
/// Longest lease the table grants a peer, whatever the peer announced: 30 s. An advert
/// cannot pin an entry for longer (a live device refreshes it with every beacon, one a
/// second by default).
pub const MAX_PEER_LEASE: Duration = Duration::from_secs(30);
/// Most addresses one peer is dialed at, from its advert or gossip record: 4 (the advert's
/// source first). One advert listing many addresses cannot make a device dial them all.
pub const MAX_DIAL_ADDRESSES: usize = 4;
/// Most dials in flight at once, over every peer: 16. Adverts pointing at a tarpit cannot
/// hold more sockets than that; a dial waits for one to end.
pub const MAX_DIALS_IN_FLIGHT: usize = 16;
/// New dials per second over every peer, after a burst of [`DIAL_BURST`]: 20. A flood of
/// adverts cannot make the device a scanner or a SYN reflector.
pub const MAX_DIALS_PER_SECOND: u32 = 20;
/// Dials that may start at once before [`MAX_DIALS_PER_SECOND`] applies: 32 (a device
/// starting into a group of 64 dials the half it dials at once).
pub const DIAL_BURST: u32 = 32;

/// Who may join a device (its links prove keys; this decides which keys are welcome).
///
/// In plaintext mode anyone on the LAN can make a key and join under any name, and in
/// sealed mode any member can: pinning names to keys is what keeps a rogue device from
/// taking a known device's name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Trust {
    /// Any key may join, under any name (the default).
    #[default]
    Anyone,
    /// Trust on first use, like SSH's `known_hosts`: the first key that joins under a
    /// name is pinned to it, and another key under that name is refused afterwards (its
    /// link closed, [`TableCloseReason::Untrusted`](crate::TableCloseReason::Untrusted), counted in
    /// [`PeerTableStats::untrusted`](crate::PeerTableStats::untrusted)). Holds the pins known so far (name
    /// to key bytes); new pins are reported as [`Event::NamePinned`](crate::Event::NamePinned)
    /// for the driver to keep ([`DeviceBuilder::known_devices`](crate::DeviceBuilder::known_devices)
    /// keeps them in a file).
    FirstUse(std::collections::BTreeMap<String, [u8; 32]>),
    /// Only these keys may join; any other is refused like a wrong pin.
    AllowList(std::collections::BTreeSet<[u8; 32]>),
}

/// Most joined peers from one host by default: 32 (see
/// [`PeerTableConfigBuilder::max_peers_per_host`]).
pub const DEFAULT_PEERS_PER_HOST: usize = 32;

/// Who the local device is: its identity and what it announces.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LocalDevice {
    identity: Arc<Identity>,
    id: DeviceId,
    /// The device name (1 to 64 bytes of UTF-8, no control characters).
    pub name: String,
    /// The TCP port links are accepted on; 0 when the device accepts none (it can still
    /// dial, or only watch with [`PeerTableConfigBuilder::auto_connect`] off).
    pub port: u16,
    /// The unicast addresses to advertise, best first. Only the first
    /// [`MAX_ADDRESSES`](crate::advert::MAX_ADDRESSES) (8) are sent; the table logs a
    /// warning when it drops some. Peers also dial the source address of each advert, so
    /// an empty list still works where the source address is reachable.
    pub addresses: Vec<IpAddr>,
    /// Metadata signed into every announce (see [`validate_metadata`]).
    pub metadata: Metadata,
    /// The run's incarnation: sequence numbers of signed adverts start at
    /// `incarnation << 32`, so with a persisted identity
    /// ([`Identity::load_or_create`](hail_crypto::Identity::load_or_create)) a later run's
    /// adverts outrank every earlier run's. [`Incarnation::FIRST`] for a fresh identity.
    pub incarnation: Incarnation,
}

impl LocalDevice {
    /// Its announce with `lease` and sequence number `seq`, signed by its identity.
    pub(crate) fn signed_announce(
        &self,
        lease: Duration,
        seq: u64,
    ) -> Result<Announce, AdvertError> {
        Announce::sign(
            self.identity(),
            seq,
            AnnounceBody {
                name: self.name.clone(),
                port: self.port,
                lease,
                addresses: self.addresses.clone(),
                metadata: self.metadata.clone(),
            },
        )
    }

    /// A device with this identity (its id is the identity's key's), name and port,
    /// advertising no addresses (see [`LocalDevice::with_addresses`]).
    pub fn new(identity: Arc<Identity>, name: impl Into<String>, port: u16) -> Self {
        let id = DeviceId::from_bytes(identity.public().id());
        Self {
            identity,
            id,
            name: name.into(),
            port,
            addresses: Vec::new(),
            metadata: Metadata::new(),
            incarnation: Incarnation::FIRST,
        }
    }

    /// Sets the advertised addresses.
    pub fn with_addresses(mut self, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.addresses = addresses.into_iter().collect();
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the incarnation (from the identity file).
    pub fn with_incarnation(mut self, incarnation: Incarnation) -> Self {
        self.incarnation = incarnation;
        self
    }

    /// The device's id: derived from its identity's public key.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The device's identity.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        validate_name(&self.name)?;
        validate_metadata(&self.metadata)?;
        Ok(())
    }
}

/// Timing and limits of a [`PeerTable`](crate::PeerTable). Build one with
/// [`PeerTableConfig::builder`]; [`Default`] gives the documented defaults.
///
/// With the defaults a device announces itself at 0, about 100 and about 300 ms after
/// start (and probes once at 0), then every second; peers that hear nothing from an
/// unconnected device for 3 s forget it; a connected peer is watched by its link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerTableConfig {
    pub(crate) burst: Vec<Duration>,
    pub(crate) burst_jitter: Duration,
    pub(crate) beacon_interval: Duration,
    pub(crate) beacon_jitter: Duration,
    pub(crate) lease: Duration,
    pub(crate) probe_answer_jitter: Duration,
    pub(crate) hello_timeout: Duration,
    pub(crate) redial_initial: Duration,
    pub(crate) redial_max: Duration,
    pub(crate) dial_yield: Duration,
    pub(crate) reconnect_grace: Duration,
    pub(crate) goodbye_grace: Duration,
    pub(crate) gossip: bool,
    pub(crate) gossip_lease: Duration,
    pub(crate) auto_connect: bool,
    pub(crate) max_peers: usize,
    pub(crate) max_peers_per_host: usize,
    pub(crate) trust: Trust,
    pub(crate) static_peers: Vec<SocketAddr>,
}

impl Default for PeerTableConfig {
    fn default() -> Self {
        Self {
            burst: vec![
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(300),
            ],
            burst_jitter: Duration::from_millis(20),
            beacon_interval: Duration::from_secs(1),
            beacon_jitter: Duration::from_millis(100),
            lease: Duration::from_secs(3),
            probe_answer_jitter: Duration::from_millis(10),
            hello_timeout: Duration::from_secs(3),
            redial_initial: Duration::from_millis(100),
            redial_max: Duration::from_secs(5),
            dial_yield: Duration::from_millis(500),
            reconnect_grace: Duration::from_millis(500),
            goodbye_grace: Duration::from_millis(500),
            gossip: true,
            gossip_lease: Duration::from_secs(10),
            auto_connect: true,
            max_peers: 1024,
            max_peers_per_host: DEFAULT_PEERS_PER_HOST,
            trust: Trust::Anyone,
            static_peers: Vec::new(),
        }
    }
}

impl PeerTableConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> PeerTableConfigBuilder {
        PeerTableConfigBuilder {
            config: Self::default(),
        }
    }

    /// Offsets of the start announcements (see [`PeerTableConfigBuilder::burst`]).
    pub fn burst(&self) -> &[Duration] {
        &self.burst
    }

    /// Interval between steady announcements.
    pub fn beacon_interval(&self) -> Duration {
        self.beacon_interval
    }

    /// The lease this device announces; also the time within which a silent,
    /// unconnected peer is forgotten.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How long a new link may take to deliver its hello.
    pub fn hello_timeout(&self) -> Duration {
        self.hello_timeout
    }

    /// How long a multicast goodbye waits for the peer's link (see
    /// [`PeerTableConfigBuilder::goodbye_grace`]).
    pub fn goodbye_grace(&self) -> Duration {
        self.goodbye_grace
    }

    /// How long a device that is not the first dialer of a pair waits for the other's dial
    /// before it dials (see [`PeerTableConfigBuilder::dial_yield`]).
    pub fn dial_yield(&self) -> Duration {
        self.dial_yield
    }

    /// Static peer addresses dialed directly.
    pub fn static_peers(&self) -> &[SocketAddr] {
        &self.static_peers
    }

    /// Whether discovered peers are dialed.
    pub fn auto_connect(&self) -> bool {
        self.auto_connect
    }

    /// Most peers the table tracks (see [`PeerTableConfigBuilder::max_peers`]).
    pub fn max_peers(&self) -> usize {
        self.max_peers
    }

    /// Most joined peers whose links come from one host (see
    /// [`PeerTableConfigBuilder::max_peers_per_host`]).
    pub fn max_peers_per_host(&self) -> usize {
        self.max_peers_per_host
    }
}

/// Builds a [`PeerTableConfig`]; every setter documents its default.
#[derive(Debug, Clone)]
pub struct PeerTableConfigBuilder {
    config: PeerTableConfig,
}

impl PeerTableConfigBuilder {
    /// Offsets from start at which the device announces itself (a probe goes with the
    /// first). Default: 0, 100 ms, 300 ms. At most [`MAX_BURST`] entries; an empty burst
    /// means the first announcement is the first beacon. Cost: one datagram per entry.
    pub fn burst(mut self, offsets: impl IntoIterator<Item = Duration>) -> Self {
        self.config.burst = offsets.into_iter().collect();
        self
    }

    /// Random delay, uniform in `[0, jitter]`, added to each non-zero burst offset.
    /// Default: 20 ms.
    pub fn burst_jitter(mut self, jitter: Duration) -> Self {
        self.config.burst_jitter = jitter;
        self
    }

    /// Interval between steady announcements after the burst. Default: 1 s. Cost: one
    /// datagram per interval per device, to every device on the group.
    pub fn beacon_interval(mut self, interval: Duration) -> Self {
        self.config.beacon_interval = interval;
        self
    }

    /// Each beacon interval is drawn uniformly from `interval ± jitter`, so devices
    /// started together drift apart. Default: 100 ms; must be below half the interval.
    pub fn beacon_jitter(mut self, jitter: Duration) -> Self {
        self.config.beacon_jitter = jitter;
        self
    }

    /// The lease announced to peers: how long they keep this device without hearing a new
    /// announcement, while not connected to it. Default: 3 s (three beacons). Must be
    /// longer than the beacon interval. A connected peer's liveness comes from its link
    /// (the driver should make link heartbeats notice a dead peer within the lease too).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// A probe is answered with an announcement after a random delay, uniform in
    /// `[0, jitter]`, so many devices do not answer in the same instant; probes that
    /// arrive while an answer is pending share it. Default: 10 ms.
    pub fn probe_answer_jitter(mut self, jitter: Duration) -> Self {
        self.config.probe_answer_jitter = jitter;
        self
    }

    /// How long a new link may take to deliver the peer's hello before the table closes
    /// it. Default: 3 s.
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.config.hello_timeout = timeout;
        self
    }

    /// Delay before the first redial after a failed dial or a lost link; it doubles per
    /// failure up to [`redial_max`](Self::redial_max), and each delay is drawn uniformly
    /// from `[d/2, d]`. Default: 100 ms.
    pub fn redial_initial(mut self, delay: Duration) -> Self {
        self.config.redial_initial = delay;
        self
    }

    /// Upper bound of the redial delay. Default: 5 s.
    pub fn redial_max(mut self, delay: Duration) -> Self {
        self.config.redial_max = delay;
        self
    }

    /// When a connected peer's link closes (other than by goodbye or heartbeat timeout),
    /// the peer stays joined this long while the table redials; a new link within the
    /// grace hides the blip, a failed redial or the end of the grace reports the peer
    /// left. Default: 500 ms.
    pub fn reconnect_grace(mut self, grace: Duration) -> Self {
        self.config.reconnect_grace = grace;
        self
    }

    /// Two devices that hear each other would both dial at once, and the one-link rule
    /// would then close one of the two links. Instead one of them, the pair's first
    /// dialer, dials at once and the other waits this long for that dial before it dials
    /// itself (a link from the peer meanwhile makes its dial unneeded). The first dialer is
    /// the smaller id when the two ids differ in an even number of bits, else the larger:
    /// each device dials first to about half of its peers, so in a forming mesh the dials
    /// are shared evenly. Only a first dial waits: redials after a failure do not. Zero:
    /// both dial at once. Default: 500 ms (the other's dial normally arrives within a few
    /// milliseconds of the advert; the wait is paid only where it does not come, as
    /// when the peer does not hear this device's adverts or does not auto-connect; and it
    /// covers a first dialer that waits for its dial budget while a mesh of 50 forms:
    /// 250 ms did not, and the pairs paid two handshakes for one link).
    /// Fewer duplicate links mean fewer handshakes and no window in which two messages
    /// to one peer can take different links.
    pub fn dial_yield(mut self, wait: Duration) -> Self {
        self.config.dial_yield = wait;
        self
    }

    /// A goodbye heard on the multicast group may overtake what the departing peer sent
    /// on its link just before. While the peer has a link (or a link still awaits its
    /// hello), the table waits for the link's own goodbye or close, at most this long,
    /// so everything it sent is delivered before `PeerLeft(Goodbye)`. If the peer's link
    /// is still up at the end, saying nothing, the group's goodbye is not believed (anyone
    /// on the network can send one; a device that leaves says so on its link and closes
    /// it) and counted in [`PeerTableStats::goodbyes_ignored`](crate::PeerTableStats::goodbyes_ignored).
    /// Zero: leave at the multicast goodbye at once. Default: 500 ms (a connected peer's
    /// goodbye on its link normally arrives within a millisecond).
    pub fn goodbye_grace(mut self, grace: Duration) -> Self {
        self.config.goodbye_grace = grace;
        self
    }

    /// Whether connected devices tell each other about the peers they are connected to,
    /// so a mesh forms without multicast (static peers). Default: on. Cost: one small
    /// message to every connected peer per join.
    pub fn gossip(mut self, on: bool) -> Self {
        self.config.gossip = on;
        self
    }

    /// How long a peer learned only through gossip is kept (and redialed) without being
    /// mentioned again or connected. Default: 10 s.
    pub fn gossip_lease(mut self, lease: Duration) -> Self {
        self.config.gossip_lease = lease;
        self
    }

    /// Whether discovered peers are dialed. Off, the table only watches adverts (a
    /// scout); links that peers open are still accepted. Default: on.
    pub fn auto_connect(mut self, on: bool) -> Self {
        self.config.auto_connect = on;
        self
    }

    /// Most peers the table tracks (connected or not). Default: 1024. Cost: about 200
    /// bytes per entry. Devices learned only from adverts or gossip (no link has proven
    /// them) take at most half of it: past that, the least recently heard of them is
    /// forgotten to make room ([`PeerTableStats::unproven_evicted`](crate::PeerTableStats::unproven_evicted)),
    /// so forged adverts cannot lock new devices out. A joined peer is never forgotten to
    /// make room; a link's hello takes an unproven entry's room when the table is full,
    /// and is refused only when every entry is a joined peer.
    pub fn max_peers(mut self, max: usize) -> Self {
        self.config.max_peers = max;
        self
    }

    /// Who may join: anyone (the default), names pinned to the first key that joins with
    /// them, or only listed keys (see [`Trust`]).
    pub fn trust(mut self, trust: Trust) -> Self {
        self.config.trust = trust;
        self
    }

    /// Most joined peers whose links come from one host: one IPv4 address, or one /64
    /// of IPv6 (a host may hold many addresses of its prefix). Default:
    /// [`DEFAULT_PEERS_PER_HOST`] (32). Anyone can make keys in plaintext mode, and any
    /// member in sealed mode, so without this one host could fill
    /// [`max_peers`](Self::max_peers) with joined peers of made-up keys and lock new
    /// devices out; with it, that takes `max_peers / max_peers_per_host` hosts (32 by
    /// default). A link past the limit is closed after its hello
    /// ([`TableCloseReason::HostLimit`](crate::TableCloseReason::HostLimit), counted in
    /// [`PeerTableStats::host_limit`](crate::PeerTableStats::host_limit)). Links over loopback are not
    /// counted: devices on one machine talk to each other over it, and a local attacker
    /// has easier ways in. Raise it for gateways that relay many devices.
    pub fn max_peers_per_host(mut self, max: usize) -> Self {
        self.config.max_peers_per_host = max;
        self
    }

    /// Addresses dialed directly, for networks where multicast does not pass. Each is
    /// redialed with backoff while no connection to the device behind it is up. Default:
    /// none.
    pub fn static_peers(mut self, peers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.config.static_peers = peers.into_iter().collect();
        self
    }

    /// Checks the settings and returns the config.
    pub fn build(self) -> Result<PeerTableConfig, ConfigError> {
        let c = self.config;
        for (what, d) in [
            ("beacon_interval", c.beacon_interval),
            ("lease", c.lease),
            ("hello_timeout", c.hello_timeout),
            ("redial_initial", c.redial_initial),
            ("gossip_lease", c.gossip_lease),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero { what });
            }
        }
        if c.lease <= c.beacon_interval {
            return Err(ConfigError::LeaseTooShort {
                lease: c.lease,
                interval: c.beacon_interval,
            });
        }
        if c.lease > MAX_LEASE {
            return Err(ConfigError::TooLong {
                what: "lease",
                value: c.lease,
                max: MAX_LEASE,
            });
        }
        if c.beacon_jitter * 2 >= c.beacon_interval {
            return Err(ConfigError::JitterTooLarge {
                jitter: c.beacon_jitter,
                interval: c.beacon_interval,
            });
        }
        if c.redial_max < c.redial_initial {
            return Err(ConfigError::RedialRange {
                initial: c.redial_initial,
                max: c.redial_max,
            });
        }
        if c.burst.len() > MAX_BURST {
            return Err(ConfigError::BurstTooLong {
                len: c.burst.len(),
                max: MAX_BURST,
            });
        }
        let hour = Duration::from_secs(3600);
        for (what, d) in [
            (
                "a burst offset",
                c.burst.iter().copied().max().unwrap_or_default(),
            ),
            ("burst_jitter", c.burst_jitter),
            ("beacon_interval", c.beacon_interval),
            ("probe_answer_jitter", c.probe_answer_jitter),
            ("hello_timeout", c.hello_timeout),
            ("redial_max", c.redial_max),
            ("dial_yield", c.dial_yield),
            ("reconnect_grace", c.reconnect_grace),
            ("goodbye_grace", c.goodbye_grace),
            ("gossip_lease", c.gossip_lease),
        ] {
            if d > hour {
                return Err(ConfigError::TooLong {
                    what,
                    value: d,
                    max: hour,
                });
            }
        }
        if c.max_peers == 0 {
            return Err(ConfigError::NoPeers);
        }
        if c.max_peers_per_host == 0 {
            return Err(ConfigError::Zero {
                what: "max_peers_per_host",
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        assert_eq!(
            PeerTableConfig::builder().build().unwrap(),
            PeerTableConfig::default()
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        let b = PeerTableConfig::builder;
        assert_eq!(
            b().lease(Duration::from_secs(1)).build(),
            Err(ConfigError::LeaseTooShort {
                lease: Duration::from_secs(1),
                interval: Duration::from_secs(1)
            })
        );
        assert_eq!(
            b().beacon_interval(Duration::ZERO).build(),
            Err(ConfigError::Zero {
                what: "beacon_interval"
            })
        );
        assert!(matches!(
            b().beacon_jitter(Duration::from_millis(500)).build(),
            Err(ConfigError::JitterTooLarge { .. })
        ));
        assert!(matches!(
            b().redial_max(Duration::from_millis(10)).build(),
            Err(ConfigError::RedialRange { .. })
        ));
        assert!(matches!(
            b().burst(vec![Duration::ZERO; 17]).build(),
            Err(ConfigError::BurstTooLong { len: 17, max: 16 })
        ));
        assert!(matches!(
            b().lease(Duration::from_secs(60 * 24 * 3600)).build(),
            Err(ConfigError::TooLong { what: "lease", .. })
        ));
        assert!(matches!(
            b().reconnect_grace(Duration::from_secs(7200)).build(),
            Err(ConfigError::TooLong {
                what: "reconnect_grace",
                ..
            })
        ));
        assert_eq!(b().max_peers(0).build(), Err(ConfigError::NoPeers));
    }
}
