//! Configuring and starting a [`Device`]: [`DeviceBuilder`], its defaults, and
//! [`DeviceBuilder::start`], which opens the sockets and spawns the driver. Which
//! discovery groups it joins, and where, is `group_plan.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hail_crypto::{GroupKey, Identity, Incarnation, KdfParams};
use hail_link::{Budget, Heartbeat, LinkConfig, Server, ServerConfig, Transport};
use hail_multicast::{ChannelConfig, Interface};
use hail_rpc::{Handlers, RpcConfig};
use hail_wire::Binary;
use tokio::sync::{Notify, mpsc, oneshot};

use super::clock;
use super::driver::Driver;
use super::error::DeviceError;
use super::events::{DeviceEvents, EventLevels};
use super::group_plan::{DEFAULT_GROUP, DEFAULT_GROUP_V6, default_groups, open_channels};
use super::groups::Groups;
use super::handle::Device;
use super::lookup::{Listing, Lookup};
use super::messages::bind_builtin;
use super::shared::{Shared, lock};
use super::watch::{AddressSource, Followed, InterfaceWatch};
use crate::advert::Metadata;
use crate::config::{LocalDevice, PeerTableConfig};
use crate::format::MessageFormat;
use crate::peer_table::PeerTable;

/// Default capacity of the event stream for events other than messages
/// ([`DeviceBuilder::event_capacity`]): 1024 (peers joining and leaving, errors). Past
/// it they are dropped and counted ([`Device::dropped_events`]); messages are bounded by
/// the memory budget instead ([`MESSAGE_COST`](crate::MESSAGE_COST)); see [`DeviceEvents`].
pub const EVENT_CAPACITY: usize = 1024;
/// Default interval of [`DeviceBuilder::interface_check`]: 2 s. An address added to an
/// interface is advertised, the discovery channel follows an interface that came back or
/// changed its IPv4 address, and a default group is joined where its family appeared (or
/// left where it went away), within this (plus a lost datagram's beacon).
pub const INTERFACE_CHECK: Duration = Duration::from_secs(2);

/// A passphrase, never printed.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Configures and starts a [`Device`]; from [`Device::builder`].
#[derive(Debug, Clone)]
pub struct DeviceBuilder {
    name: String,
    /// `None`: [`DEFAULT_GROUP`] and [`DEFAULT_GROUP_V6`], each where its family is.
    group: Option<SocketAddr>,
    interfaces: Vec<Interface>,
    ttl: u32,
    listen: Option<SocketAddr>,
    /// The port of the default listen address.
    listen_port: u16,
    advertise: Vec<IpAddr>,
    passphrase: Option<Secret>,
    kdf: KdfParams,
    key: Option<GroupKey>,
    table: PeerTableConfig,
    rpc: RpcConfig,
    multicast: bool,
    format: MessageFormat,
    event_capacity: usize,
    budget: Option<Budget>,
    identity: IdentitySource,
    metadata: Metadata,
    known_devices: Option<PathBuf>,
    allowed: Option<std::collections::BTreeSet<[u8; 32]>>,
    interface_check: Option<Duration>,
    /// Where the interfaces are read (the host's; a test's listing).
    interface_lookup: Lookup,
    memory: Option<(
        hail_multicast::memory::Bus,
        hail_link::memory::MemoryNetwork,
        IpAddr,
    )>,
    /// The in-memory host's IPv6 address beside its IPv4 one ([`DeviceBuilder::memory_ipv6`]).
    memory_ipv6: Option<Ipv6Addr>,
}

/// Open files a device keeps free under its open-file limit (`RLIMIT_NOFILE`) for
/// everything but accepted links: its multicast sockets and listener, dials in flight
/// ([`MAX_DIALS_IN_FLIGHT`](crate::MAX_DIALS_IN_FLIGHT)), the application's own files: 64.
pub const FD_HEADROOM: usize = 64;

/// Most accepted links: hail-link's default (1024), or fewer when the open-file limit
/// leaves less room after [`FD_HEADROOM`] (at least 8), so links and files past it can
/// still be opened: a flood of connections fills the client limit, not the descriptor
/// table ("Too many open files" for the device's own dials and the application).
fn max_clients_for_open_files() -> usize {
    let default = hail_link::DEFAULT_MAX_CLIENTS;
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit};
        if let Ok((soft, _hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            return clients_under(soft, default);
        }
    }
    default
}

/// Accepted links that fit under an open-file limit of `soft` with [`FD_HEADROOM`] left.
fn clients_under(soft: u64, default: usize) -> usize {
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(FD_HEADROOM)
        .clamp(8, default)
}

/// Where the device's identity comes from.
#[derive(Debug, Clone)]
enum IdentitySource {
    /// A fresh key pair made at start.
    Fresh,
    /// This one, with the incarnation its sequence numbers start from.
    Given(Arc<Identity>, Incarnation),
    /// Loaded from (or created in) this file at start, with the next incarnation.
    File(PathBuf),
}

/// Where links listen by default, on `port`: with an IPv4 group, one dual-stack `[::]`
/// socket (IPv4 links arrive on it as IPv4-mapped addresses) where the kernel makes a
/// `[::]` socket dual-stack ([`dual_stack`]); else every address of the group's family.
fn default_listen(group: SocketAddr, port: u16) -> SocketAddr {
    let any = match group {
        SocketAddr::V4(_) if dual_stack() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(any, port)
}

/// Whether a `[::]` TCP socket also takes IPv4 here: on Linux, IPv6 is on
/// (`/proc/sys/net/ipv6` exists, so not booted with `ipv6.disable=1`) and
/// `net.ipv6.bindv6only` is 0 (the default). Elsewhere false: IPv4 only, as before.
fn dual_stack() -> bool {
    cfg!(target_os = "linux")
        && std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0")
}

/// Whether links listening on `listen` take both families: a `[::]` listener of the
/// device's own choosing (`chosen`: not set by the user, not the in-memory network's) on a
/// host whose `[::]` sockets take IPv4 too (`dual_stack`). Whatever the first group's
/// family: a device that starts with IPv6 alone (its IPv4 address not there yet) and later
/// joins the IPv4 group advertises its IPv4 addresses there.
fn listens_dual(listen: SocketAddr, chosen: bool, dual_stack: bool) -> bool {
    chosen && dual_stack && listen.is_ipv6() && listen.ip().is_unspecified()
}

impl Device {
    /// A builder for a device named `name`: 1 to 64 bytes of UTF-8 by the rule of
    /// [`NameError`](crate::NameError) (checked when the device starts), brought into
    /// Unicode NFC here ([`normalize_name`](crate::normalize_name)), so a name typed as
    /// decomposed characters is the same name as its composed form.
    pub fn builder(name: impl Into<String>) -> DeviceBuilder {
        DeviceBuilder {
            name: crate::normalize_name(&name.into()),
            group: None,
            interfaces: Vec::new(),
            ttl: 1,
            listen: None,
            listen_port: 0,
            advertise: Vec::new(),
            passphrase: None,
            kdf: KdfParams::default(),
            key: None,
            table: PeerTableConfig::default(),
            rpc: RpcConfig::default(),
            multicast: true,
            format: MessageFormat::default(),
            event_capacity: EVENT_CAPACITY,
            budget: None,
            identity: IdentitySource::Fresh,
            metadata: Metadata::new(),
            known_devices: None,
            allowed: None,
            interface_check: Some(INTERFACE_CHECK),
            interface_lookup: Lookup::host(),
            memory: None,
            memory_ipv6: None,
        }
    }
}

impl DeviceBuilder {
    /// The discovery group; set, the device discovers on this one group only. Port 0
    /// picks a free port (tests; read it back with [`Device::group`]).
    ///
    /// Default: both default groups where both families exist, as mDNS joins
    /// `224.0.0.251` and `ff02::fb`: [`DEFAULT_GROUP`], `239.255.72.76:5676`, on the
    /// device's interfaces that have an IPv4 address, and [`DEFAULT_GROUP_V6`],
    /// `[ff02::4841:494c]:5676`, on those that have an IPv6 address (link-local is
    /// enough) and are multicast-capable (Linux's `lo` is not: IPv6 multicast does not
    /// route there), or on every one with IPv6 when none has IPv4. The interfaces are
    /// those named with [`interface`](Self::interface), else every up, multicast-capable
    /// one. So a device on an IPv6-only host, one on an IPv4-only host and one on a
    /// dual-stack host all meet (the dual-stack one meets both). A group whose channel
    /// cannot be opened beside the other is left out (debug log); [`Device::groups`] says
    /// which were joined. Adverts go out on every group; a peer heard on both is one peer
    /// with one link, dialed at the source of each (IPv4 first). With a passphrase both
    /// groups are sealed with the same group key (the key names the group `"hail-discovery"`,
    /// not an address), which is also the links' key, whichever group found the peer.
    pub fn group(mut self, group: SocketAddr) -> Self {
        self.group = Some(group);
        self
    }

    /// An interface adverts are sent and received on, named the way users name them: by
    /// name (`"eth0"`, `"lo"`), index (`3u32`), or one of its addresses (`Ipv4Addr`,
    /// `Ipv6Addr`, or as text); see [`Interface`]. Call it again for more interfaces.
    /// Default: every up, multicast-capable interface (`hail-multicast`'s default). Tests
    /// set `"lo"` or `127.0.0.1`.
    ///
    /// Each is looked up when the device starts: an unknown one fails
    /// [`start`](Self::start) with
    /// [`MulticastError::InterfaceNotFound`](hail_multicast::MulticastError::InterfaceNotFound),
    /// which lists the host's interfaces. Unless [`advertise`](Self::advertise) says
    /// otherwise, the device advertises the addresses of the interfaces named here that
    /// its links listen on: both families with the dual-stack default of
    /// [`listen`](Self::listen), else the listener's family (IPv6 link-local ones
    /// excepted: peers dial the advert's source address, with its scope).
    ///
    /// The links' listener is not narrowed by this: by default it takes connections on
    /// every interface (the addresses of the ones named here change while the device
    /// runs, and are followed in the adverts). To take links on one address only, set
    /// [`listen`](Self::listen) to it as well.
    pub fn interface(mut self, interface: impl Into<Interface>) -> Self {
        self.interfaces.push(interface.into());
        self
    }

    /// How often the running device looks at the host's interfaces again, to follow them
    /// without a restart: when the addresses of the interfaces named with
    /// [`interface`](Self::interface) change (and [`advertise`](Self::advertise) is not
    /// set), it announces the new set at once (signed under its next sequence number, so
    /// peers take it over the old one); when the interfaces a discovery channel joined
    /// change (one named came back with a new index, its IPv4 address changed, or with
    /// none named an interface came or went), it joins that group anew on them (each group
    /// on its own). With the group unset, the default groups follow the families as
    /// [`group`](Self::group) plans them at start: one not joined (an interface had no
    /// IPv6 address yet) is joined once its family is on the interfaces, and announced on
    /// at once with a probe, so the devices there meet it within a look; one whose family
    /// went away from them is left, unless it is the last ([`Device::groups`] says which
    /// are joined). Default:
    /// `Some(`[`INTERFACE_CHECK`]`)`, every 2 s, one `getifaddrs` call each (microseconds);
    /// `None` looks only at start. Not used on an in-memory network.
    pub fn interface_check(mut self, every: Option<Duration>) -> Self {
        self.interface_check = every.filter(|d| !d.is_zero());
        self
    }

    /// The interfaces the running device follows are read from `lookup` instead of the
    /// host (at start they are the host's: the channel is built on those).
    #[cfg(test)]
    pub(super) fn interface_lookup(mut self, lookup: Lookup) -> Self {
        self.interface_lookup = lookup;
        self
    }

    /// Multicast TTL. Default: 1 (the local network only).
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// TCP listen address for links. Default: every interface on an ephemeral port, so
    /// many devices share a host: `[::]:0` as one dual-stack socket (IPv4 and IPv6) where
    /// the host allows it (Linux with IPv6 and `net.ipv6.bindv6only` 0, the default), and
    /// the device then advertises both families' addresses of its named interfaces (not
    /// IPv6 link-local ones); `0.0.0.0:0` with an IPv4 group elsewhere or where that bind
    /// fails (one debug log). Setting it turns the dual-stack default off.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The TCP port of the default listen address ([`listen`](Self::listen)'s default,
    /// dual-stack where the host allows it), for a firewall rule. Default: 0, an
    /// ephemeral port. Ignored when [`listen`](Self::listen) is set.
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    /// Addresses to advertise. Default: none beyond what peers see (they dial the source
    /// address of each advert, which is the interface it was sent on).
    pub fn advertise(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.advertise = addrs.into_iter().collect();
        self
    }

    /// Seals adverts and secures links with a group key derived from `passphrase`
    /// (PBKDF2, 600,000 iterations by default, see [`kdf`](Self::kdf): hundreds of
    /// milliseconds, once, in [`start`](Self::start), on a blocking thread). Default:
    /// none (plaintext, anyone on the LAN may join).
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(Secret(passphrase.into()));
        self
    }

    /// Key derivation parameters for [`passphrase`](Self::passphrase). Default:
    /// [`KdfParams::default`], PBKDF2 with 600,000 iterations; at least
    /// [`KdfParams::MIN_ITERATIONS`] (10,000) for small devices and tests. Every device of
    /// a group must use the same count (it changes the key).
    pub fn kdf(mut self, params: KdfParams) -> Self {
        self.kdf = params;
        self
    }

    /// Seals adverts and secures links with this group key (derived beforehand, e.g. with
    /// [`GroupKey::derive`] for the group name `"hail-discovery"` to match
    /// [`passphrase`](Self::passphrase)). Takes precedence over a passphrase. Default: none.
    pub fn group_key(mut self, key: GroupKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The device's identity: the key pair its id is derived from, which signs its adverts
    /// and which its links prove. Default: a fresh key pair at every start (a new id per
    /// run). `incarnation` must grow from run to run for a key used in several runs (its
    /// adverts' sequence numbers start at `incarnation << 32`, and a peer ignores adverts
    /// older than the newest it has seen); [`identity_file`](Self::identity_file) keeps
    /// both for you.
    pub fn identity(mut self, identity: Identity, incarnation: Incarnation) -> Self {
        self.identity = IdentitySource::Given(Arc::new(identity), incarnation);
        self
    }

    /// Keeps the device's identity in this file, for a stable id across restarts: loaded
    /// at [`start`](Self::start) (created with a fresh key the first time, mode 0600), its
    /// incarnation counted up and written back before the device announces anything
    /// ([`Identity::load_or_create`]). A file readable by others, truncated or corrupted is
    /// an error ([`DeviceError::Key`]). Default: a fresh key pair per start.
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity = IdentitySource::File(path.into());
        self
    }

    /// Pins each peer's name to the first key that joins under it, trust on first use
    /// like SSH's `known_hosts`, keeping the pins in this file (read at start, appended
    /// to as names are pinned; one `name<TAB>key` line each, editable by hand). Afterwards
    /// a device with another key under a pinned name is refused: its link is closed
    /// ([`PeerTableStats::untrusted`](crate::PeerTableStats::untrusted)), so a rogue device cannot take a
    /// known device's name. Pair it with [`identity_file`](Self::identity_file) on every
    /// device, or a restart is a new key that its own name refuses. Default: none (any
    /// key under any name, [`Trust::Anyone`](crate::Trust::Anyone)).
    pub fn known_devices(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_devices = Some(path.into());
        self
    }

    /// Lets only devices with these keys join (an allow list); any other's link is closed
    /// after its handshake ([`PeerTableStats::untrusted`](crate::PeerTableStats::untrusted)). Takes
    /// precedence over [`known_devices`](Self::known_devices). Default: none.
    pub fn allow_devices(mut self, keys: impl IntoIterator<Item = hail_crypto::PublicKey>) -> Self {
        self.allowed = Some(keys.into_iter().map(|k| k.to_bytes()).collect());
        self
    }

    /// Adds a metadata entry signed into the device's adverts and shown to peers
    /// ([`PeerInfo::metadata`](crate::PeerInfo::metadata), `hail scout`): at most
    /// [`MAX_METADATA_ENTRIES`](crate::MAX_METADATA_ENTRIES) (16) entries,
    /// [`MAX_METADATA_LEN`](crate::MAX_METADATA_LEN) (512) bytes of keys and values,
    /// keys of `a-z 0-9 . _ -` (checked at start, [`crate::validate_metadata`]). Default:
    /// none.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Discovery timing, limits and static peers. Default: [`PeerTableConfig::default`].
    /// The links' heartbeats follow the lease: a heartbeat every lease / 3 (1 s by
    /// default) and a silent peer declared dead after one lease (3 s by default), so a
    /// crashed peer is noticed within the lease whether connected or not.
    pub fn table(mut self, config: PeerTableConfig) -> Self {
        self.table = config;
        self
    }

    /// RPC settings for every peer link. Default: [`RpcConfig::default`].
    pub fn rpc(mut self, config: RpcConfig) -> Self {
        self.rpc = config;
        self
    }

    /// How typed messages, questions and answers are encoded ([`Device::send_msg`],
    /// [`Device::ask_msg`], [`Device::decode`]). Default: [`MessageFormat::Postcard`].
    /// The bytes API is the same in every format.
    pub fn format(mut self, format: MessageFormat) -> Self {
        self.format = format;
        self
    }

    /// How many events other than messages (peers joining and leaving, errors) the
    /// [`DeviceEvents`] stream holds; past that they are dropped (counted, reported as
    /// [`RunError::EventsDropped`](crate::RunError::EventsDropped)). Messages are not
    /// counted here: they wait on their links' shares of the [`budget`](Self::budget).
    /// Default: [`EVENT_CAPACITY`], 1024; at least 1.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// The device's one memory budget: its links' partial frames and send queues, what
    /// its RPC keeps for peers (queued requests, kept replies), and the messages waiting
    /// in the [`DeviceEvents`] stream (each at least [`MESSAGE_COST`](crate::MESSAGE_COST)) all draw on it, for
    /// accepted and dialed links alike. One peer may hold a quarter of it (or one frame
    /// of the largest size, 16 MiB, and a read, if that is more); past its share its link
    /// stops reading, and the peers holding the most are held back first when the budget
    /// runs low: see [`hail_link::Budget`]. Default: a new [`Budget`] of
    /// [`DEFAULT_BUDGET_BYTES`](hail_link::DEFAULT_BUDGET_BYTES), 32 MiB. Give several
    /// devices (or a device and servers of its own) the same budget to bound them together.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Runs the device on an in-memory network instead of sockets, as host `ip`: its
    /// adverts on `bus` (hail-multicast's in-memory LAN, see
    /// [`hail_multicast::memory`]) and its links on `net` (hail-link's, see
    /// [`hail_link::memory`]). Everything else is the same device. With tokio's paused
    /// time, tests of whole devices run deterministically and take no real time. The
    /// device listens on `ip` (port chosen by `net` unless [`listen`](Self::listen) says),
    /// advertises `ip`, and [`interface`](Self::interface) is ignored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use hail_discovery::Device;
    ///
    /// let (bus, net) = (hail_multicast::memory::Bus::new(), hail_link::memory::MemoryNetwork::new());
    /// let (lamp, _events) = Device::builder("lamp")
    ///     .memory(&bus, &net, "10.0.0.1".parse()?)
    ///     .start()
    ///     .await?;
    /// let (switch, _events) = Device::builder("switch")
    ///     .memory(&bus, &net, "10.0.0.2".parse()?)
    ///     .start()
    ///     .await?;
    /// switch.wait_for_peer("lamp").await;
    /// assert_eq!(switch.send("lamp", "on".into()).await["lamp"], Ok(()));
    /// # lamp.close().await; switch.close().await;
    /// # Ok(()) }
    /// ```
    pub fn memory(
        mut self,
        bus: &hail_multicast::memory::Bus,
        net: &hail_link::memory::MemoryNetwork,
        ip: IpAddr,
    ) -> Self {
        self.memory = Some((bus.clone(), net.clone(), ip));
        self
    }

    /// The in-memory host's IPv6 address, beside the IPv4 one given to
    /// [`memory`](Self::memory): with the group unset, the device then discovers on both
    /// default groups of the bus, as a dual-stack host does on a LAN ([`group`](Self::group)),
    /// its adverts on [`DEFAULT_GROUP_V6`] coming from this address. Its links stay on
    /// `memory`'s address, which it advertises. (A device whose `memory` address is IPv6
    /// is an IPv6-only host: [`DEFAULT_GROUP_V6`] alone.) Default: none.
    pub fn memory_ipv6(mut self, ip: Ipv6Addr) -> Self {
        self.memory_ipv6 = Some(ip);
        self
    }

    /// Whether to use multicast at all; off, only static peers and gossip find peers.
    /// Default: on.
    pub fn multicast(mut self, on: bool) -> Self {
        self.multicast = on;
        self
    }

    /// Derives the key (if any), opens the multicast channel and the TCP listener, and
    /// starts discovery. Returns the device and its event stream.
    ///
    /// This is the device's `bind`, and where its settings are checked: first those that
    /// need nothing of the host (the name and the metadata, [`DeviceError::Config`]; the
    /// KDF parameters, [`DeviceError::Key`]), before the key is derived or anything is
    /// opened; then those that need the host (the interfaces, the identity file, the known
    /// devices file, the listen address), as they are used.
    pub async fn start(self) -> Result<(Device, DeviceEvents), DeviceError> {
        // Cheap checks first: an invalid name fails at once, not after PBKDF2 and binds.
        crate::validate_name(&self.name).map_err(crate::error::ConfigError::from)?;
        crate::validate_metadata(&self.metadata).map_err(crate::error::ConfigError::from)?;
        let key = match (&self.key, &self.passphrase) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(p)) => {
                let (p, kdf) = (p.clone(), self.kdf);
                // PBKDF2 takes a while: off the runtime's threads.
                let derived = tokio::task::spawn_blocking(move || {
                    GroupKey::derive_with(&p.0, "hail-discovery", kdf)
                })
                .await
                .expect("key derivation does not panic")?;
                Some(derived)
            }
            (None, None) => None,
        };
        // A connected peer's liveness is its link: make the link notice a silent peer
        // within the lease, as the table's docs ask of its driver.
        let (identity, incarnation) = match &self.identity {
            IdentitySource::Fresh => (Arc::new(Identity::generate()?), Incarnation::FIRST),
            IdentitySource::Given(i, inc) => (i.clone(), *inc),
            IdentitySource::File(path) => {
                let path = path.clone();
                let (i, inc) = tokio::task::spawn_blocking(move || Identity::load_or_create(path))
                    .await
                    .expect("loading an identity does not panic")?;
                (Arc::new(i), inc)
            }
        };
        let lease = self.table.lease();
        // Every link proves both ends' identity keys (Noise XX, XXpsk0 with a key).
        let mut link = LinkConfig::builder()
            .heartbeat(Some(Heartbeat {
                interval: lease / 3,
                dead_after: lease,
            }))
            .identity(&identity)
            .budget(self.budget.clone().unwrap_or_default());
        if let Some(k) = &key {
            link = link.group_key(k);
        }
        if let Some((_, net, ip)) = &self.memory {
            link = link.transport(Transport::memory_from(net, *ip));
        }
        let channel_builder = |group: SocketAddr, interfaces: &[Interface]| {
            let mut b = ChannelConfig::builder().ttl(self.ttl);
            match &self.memory {
                Some((bus, _, ip)) => {
                    // The host's address of the group's family, where it has two.
                    let ip = match self.memory_ipv6 {
                        Some(v6) if group.is_ipv6() => IpAddr::V6(v6),
                        _ => *ip,
                    };
                    b = b.memory_at(bus, SocketAddr::new(ip, 5676));
                }
                None => {
                    for i in interfaces {
                        b = b.interface(i.clone());
                    }
                }
            }
            if let Some(k) = key.clone() {
                b = b.key(k);
            }
            b
        };
        // One listing of the host's interfaces for the whole start, made when first needed.
        let mut listing = Listing::new(self.interface_lookup.clone());
        let planned = match (self.multicast, self.group) {
            (false, _) => Vec::new(),
            (true, Some(group)) => vec![(group, self.interfaces.clone())],
            (true, None) => default_groups(
                &self.interfaces,
                self.memory
                    .as_ref()
                    .map(|(_, _, ip)| (*ip, self.memory_ipv6)),
                &mut listing,
            )?,
        };
        let channels = open_channels(
            &planned,
            channel_builder,
            self.memory.is_none().then_some(&mut listing),
        )?;
        // What the interface watch follows: the group set, or both default groups (one
        // not joined now may be later), each on the interfaces it was planned on.
        let followed: Vec<Followed> = match self.group {
            Some(_) => channels
                .iter()
                .map(|(c, _)| {
                    let g = c.group();
                    Followed::new(g, channel_builder(g, &[]), &self.interfaces)
                })
                .collect(),
            None => [DEFAULT_GROUP, DEFAULT_GROUP_V6]
                .into_iter()
                .filter(|_| self.multicast)
                .map(|g| {
                    let on = planned.iter().find(|(p, _)| *p == g).map(|(_, on)| on);
                    Followed::new(
                        g,
                        channel_builder(g, &[]),
                        on.map_or(&[][..], Vec::as_slice),
                    )
                })
                .collect(),
        };
        let groups: Vec<SocketAddr> = if channels.is_empty() {
            vec![self.group.unwrap_or(DEFAULT_GROUP)]
        } else {
            channels.iter().map(|(c, _)| c.group()).collect()
        };
        let group = groups[0];
        let listen = match (&self.memory, self.listen) {
            (_, Some(l)) => l,
            (Some((_, _, ip)), None) => SocketAddr::new(*ip, 0),
            (None, None) => default_listen(group, self.listen_port),
        };
        let dual = listens_dual(
            listen,
            self.listen.is_none() && self.memory.is_none(),
            dual_stack(),
        );
        // Its settings come from the device's own (the lease): an error here is the
        // identity's key pair failing to be made, or a lease too short to divide.
        let link = link.build().map_err(hail_link::LinkError::Config)?;
        let server_config = ServerConfig::builder()
            .link(link.clone())
            .max_clients(max_clients_for_open_files())
            .build()
            .map_err(hail_link::LinkError::Config)?;
        let (server, server_events) = match Server::bind(listen, server_config.clone(), Binary)
            .await
        {
            Ok(s) => s,
            Err(e) if dual => {
                // No IPv6 sockets here (a kernel without IPv6 support, a sandbox that
                // forbids them). IPv6 switched off by sysctl (`disable_ipv6`, also in a
                // namespace) does not fail this bind: the `[::]` socket still takes IPv4,
                // and the interfaces have no IPv6 address to advertise.
                tracing::debug!(error = %e, "no dual-stack listener, links listen on IPv4 only");
                let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.listen_port);
                Server::bind(v4, server_config, Binary).await?
            }
            Err(e) => return Err(e.into()),
        };
        let dual = dual && server.local_addr().is_ipv6();
        let port = server.local_addr().port();
        let mut advertise = self.advertise.clone();
        // The advertised addresses follow the interfaces named, unless set.
        let mut source = None;
        if let (true, Some((_, _, ip))) = (advertise.is_empty(), &self.memory) {
            advertise.push(*ip);
        } else if advertise.is_empty() && !self.interfaces.is_empty() {
            let s = AddressSource {
                interfaces: self.interfaces.clone(),
                listen: server.local_addr(),
                dual,
            };
            advertise = s.addresses(listing.get()?, true)?;
            source = Some((s, advertise.clone()));
        }
        let watch = match (self.interface_check, &self.memory) {
            (Some(every), None) if source.is_some() || !channels.is_empty() => {
                Some(InterfaceWatch {
                    every,
                    next: tokio::time::Instant::now() + every,
                    lookup: self.interface_lookup.clone(),
                    addresses: source,
                    groups: followed,
                    defaults: self.group.is_none().then(|| self.interfaces.clone()),
                })
            }
            _ => None,
        };
        let local = LocalDevice::new(identity, self.name.clone(), port)
            .with_addresses(advertise)
            .with_metadata(self.metadata.clone())
            .with_incarnation(incarnation);
        let mut table_config = self.table.clone();
        if let Some(keys) = &self.allowed {
            table_config.trust = crate::Trust::AllowList(keys.clone());
        } else if let Some(path) = &self.known_devices {
            let path = path.clone();
            let pins = tokio::task::spawn_blocking(move || super::trust::load(&path))
                .await
                .expect("reading a file does not panic")?;
            table_config.trust = crate::Trust::FirstUse(pins);
        }
        let mut table = PeerTable::new(table_config, local, rand::random())?;
        table.start(clock::now());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let event_levels = Arc::new(EventLevels::new(self.event_capacity));
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            groups: Mutex::new(groups),
            known_devices: self
                .known_devices
                .clone()
                .filter(|_| self.allowed.is_none()),
            links: Mutex::new(HashMap::new()),
            question: OnceLock::new(),
            handlers: Handlers::new(),
            events: events_tx,
            event_levels: event_levels.clone(),
            members_changed: Notify::new(),
            dropped_events: AtomicU64::new(0),
            counters: Mutex::new(Default::default()),
            rpc: self.rpc.clone(),
            link,
        });
        bind_builtin(&shared);
        let (stop_tx, stop_rx) = oneshot::channel();
        let local_addr = server.local_addr();
        let driver = Driver::new(
            shared.clone(),
            Groups::new(channels),
            server,
            server_events,
            stop_rx,
        )
        .watching(watch);
        let task = tokio::spawn(driver.run());
        let id = lock(&shared.table).local().id();
        Ok((
            Device {
                shared,
                id,
                name: self.name,
                local_addr,
                format: self.format,
                stop: Some(stop_tx),
                task: Some(task),
            },
            DeviceEvents::new(events_rx, event_levels),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ConfigError;
    use crate::{Device, DeviceError, NameError};

    #[tokio::test]
    async fn an_invalid_name_fails_start_before_anything_is_opened() {
        // The listen address is taken: a start that got as far as the bind would fail there.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = Device::builder("")
            .multicast(false)
            .listen(taken.local_addr().unwrap())
            .start()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                DeviceError::Config(ConfigError::InvalidName(NameError::Empty))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_listener_of_the_devices_choosing_on_a_dual_stack_host_takes_both_families() {
        use std::net::SocketAddr;
        // Judged by the listener, not by the first group: a device whose interfaces had
        // IPv6 alone at start (the IPv6 group first, `[::]`) advertises its IPv4 addresses
        // once the IPv4 group is joined.
        let any: SocketAddr = "[::]:0".parse().unwrap();
        assert!(super::listens_dual(any, true, true));
        assert!(
            !super::listens_dual(any, true, false),
            "bindv6only: IPv6 alone"
        );
        assert!(!super::listens_dual(any, false, true), "set by the user");
        let v4: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(!super::listens_dual(v4, true, true), "IPv4 alone");
        let one: SocketAddr = "[::1]:0".parse().unwrap();
        assert!(
            !super::listens_dual(one, true, true),
            "one address is one family"
        );
    }

    /// A lookup of the host's interfaces that counts how often it is asked.
    fn counted() -> (
        super::Lookup,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let n = std::sync::Arc::new(AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&n);
        let lookup = super::Lookup::from_fn(move || {
            count.fetch_add(1, Ordering::Relaxed);
            hail_multicast::interfaces()
        });
        (lookup, n)
    }

    /// An in-memory host has no interfaces to list: its start, on an explicit group or
    /// on both default groups (IPv4 and IPv6), never asks for them.
    #[tokio::test]
    async fn a_device_start_on_the_memory_transport_never_lists_interfaces() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        use std::sync::atomic::Ordering;
        let bus = hail_multicast::memory::Bus::new();
        let net = hail_link::memory::MemoryNetwork::new();
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let group: SocketAddr = "239.255.72.99:5676".parse().unwrap();
        for explicit in [false, true] {
            let (lookup, listed) = counted();
            let mut b = Device::builder("mem")
                .memory(&bus, &net, ip)
                .memory_ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))
                .interface_lookup(lookup);
            if explicit {
                b = b.group(group);
            }
            let (device, _events) = b.start().await.expect("starts");
            assert_eq!(listed.load(Ordering::Relaxed), 0, "group set: {explicit}");
            device.close().await;
        }
    }

    /// The group plan, the channels' binds and the advertised addresses read one listing
    /// of the interfaces per start (each is a netlink dump), with the group set or the
    /// default groups planned on loopback.
    #[tokio::test]
    async fn a_device_start_lists_the_interfaces_once() {
        use std::net::{Ipv4Addr, SocketAddr};
        use std::sync::atomic::Ordering;
        let group: SocketAddr = "239.255.72.98:0".parse().unwrap();
        for explicit in [false, true] {
            let (lookup, listed) = counted();
            let mut b = Device::builder("once")
                .interface(Ipv4Addr::LOCALHOST)
                .listen("127.0.0.1:0".parse().unwrap())
                .ttl(0)
                .interface_check(None)
                .interface_lookup(lookup);
            if explicit {
                b = b.group(group);
            }
            let (device, _events) = b.start().await.expect("starts on loopback");
            assert_eq!(listed.load(Ordering::Relaxed), 1, "group set: {explicit}");
            assert!(!device.groups().is_empty());
            device.close().await;
        }
    }

    #[test]
    fn accepted_links_leave_headroom_under_the_open_file_limit() {
        assert_eq!(super::clients_under(1024, 1024), 960);
        assert_eq!(super::clients_under(200, 1024), 136);
        assert_eq!(super::clients_under(65_536, 1024), 1024);
        assert_eq!(super::clients_under(20, 1024), 8, "never below 8");
        assert_eq!(super::clients_under(u64::MAX, 1024), 1024);
    }
}
