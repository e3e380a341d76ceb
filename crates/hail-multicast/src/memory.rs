//! An in-memory multicast bus: [`Channel`](crate::Channel)s of one process that talk without
//! sockets, for deterministic tests (under `tokio::time::pause`) of whatever runs on top.
//!
//! A [`Bus`] stands for one LAN. A channel configured with
//! [`ChannelConfigBuilder::memory`](crate::ChannelConfigBuilder::memory) (or
//! [`memory_at`](crate::ChannelConfigBuilder::memory_at), to choose its address) joins a
//! group on the bus instead of on interfaces, and behaves as a UDP channel does: the same
//! `send`, `recv`, `recv_msg`, `Stream` and `close`, the same sealing with a key (a channel with another key,
//! or none, sees the others' datagrams as malformed or unauthentic, counted by reason), the
//! same statistics and payload limits, `Datagram::from` is the sender's address, and loopback
//! off hides a channel's own datagrams from itself.
//!
//! What differs, on purpose:
//! - Nothing touches the network, no runtime is needed to build a channel, and nothing waits
//!   on a timer: a send puts the datagram in every member's receive queue at once, in the
//!   order members joined, and wakes them. So the bus works under paused tokio time and its
//!   delivery order is deterministic.
//! - Each member has its own address. The bus assigns `127.0.1.1`, `127.0.1.2`, ... (port
//!   49152) for IPv4 groups and `fd00:6861:696c::1`, `::2`, ... (port 49152, a unique-local
//!   prefix spelling "hail") for IPv6 ones, never reusing one; or the caller gives one.
//! - A receive queue holds [`DEFAULT_BUS_QUEUE_BYTES`] (or
//!   [`ChannelConfigBuilder::recv_buffer_size`](crate::ChannelConfigBuilder::recv_buffer_size)), each
//!   datagram charged its length plus [`DATAGRAM_COST`]; a datagram that does not fit is
//!   dropped, as a full socket buffer drops it, and counted in [`BusStats::overflowed`]. An
//!   empty queue always takes one datagram.
//! - Loss on demand: [`Bus::set_loss`] drops datagrams arriving at one member, every n-th or
//!   at random from a seed ([`Loss`]), counted in [`BusStats::lost`]; a member's own copies
//!   are never lost. Interfaces and TTL have no meaning here.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), hail_multicast::MulticastError> {
//! use hail_multicast::memory::{Bus, Loss};
//! use hail_multicast::{Channel, ChannelConfig};
//! use std::net::Ipv4Addr;
//!
//! let bus = Bus::new();
//! let group = (Ipv4Addr::new(239, 255, 42, 99), 4299);
//! let (a, mut a_rx) = Channel::bind(group, ChannelConfig::builder().memory(&bus).build()?)?;
//! let config = ChannelConfig::builder().memory(&bus).loopback(false).build()?;
//! let (b, _b_rx) = Channel::bind(group, config)?;
//! b.send(b"lamp on").await?;
//! let d = a_rx.recv().await?;
//! assert_eq!((&d.payload[..], d.from), (&b"lamp on"[..], b.send_addrs()?[0]));
//!
//! // Every second datagram to `a` is lost from now on.
//! bus.set_loss(a.send_addrs()?[0], Loss::every_nth(2));
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::MulticastError;

/// Default size of a bus member's receive queue (the bus's stand-in for a socket buffer):
/// 212,992 bytes, Linux's default `SO_RCVBUF`.
pub const DEFAULT_BUS_QUEUE_BYTES: usize = 212_992;

/// Bytes a queued datagram is charged beyond its length (its bookkeeping), so that a flood of
/// empty datagrams is bounded too.
pub const DATAGRAM_COST: usize = 64;

/// The port of bus-assigned member addresses.
const MEMBER_PORT: u16 = 49_152;
/// Assigned IPv4 addresses are this plus 1, 2, ...: 127.0.1.1 onwards.
const BASE_V4: u32 = 0x7f00_0100;
/// Assigned IPv4 addresses stay below 128.0.0.0.
const HOSTS_V4: u32 = 0x8000_0000 - BASE_V4 - 1;
/// Assigned IPv6 addresses are this plus 1, 2, ...: `fd00:6861:696c::1` onwards.
const BASE_V6: u128 = 0xfd00_6861_696c_0000_0000_0000_0000_0000;
/// Group ports picked for port 0 start here.
const FIRST_GROUP_PORT: u16 = 40_000;

/// A process-local LAN for [`Channel`](crate::Channel)s: cheap to clone (clones are the same
/// bus), `Send` and `Sync`. See the [module docs](self).
#[derive(Clone, Default)]
pub struct Bus {
    shared: Arc<Mutex<State>>,
}

/// What a bus did: datagrams sent, put in queues, lost on demand, dropped by full queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Datagrams sent on the bus (one per send, whatever the number of members).
    pub sent: u64,
    /// Copies put in a member's receive queue.
    pub delivered: u64,
    /// Copies dropped by a member's [`Loss`].
    pub lost: u64,
    /// Copies dropped because a member's receive queue was full.
    pub overflowed: u64,
}

#[derive(Default)]
struct State {
    /// Members by group (address and port), in the order they joined.
    groups: HashMap<SocketAddr, Vec<Member>>,
    /// Addresses held by a channel's handles or its receiver.
    taken: HashSet<SocketAddr>,
    next_host: u32,
    next_group_port: u16,
    next_id: u64,
    stats: BusStats,
}

struct Member {
    id: u64,
    addr: SocketAddr,
    queue: Arc<Queue>,
    loss: LossState,
}

impl Bus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic elsewhere: every update is one step.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops datagrams arriving at the member with address `member` as `loss` says, from now
    /// on (the count of every-n-th and the random sequence restart). Returns `false` when no
    /// channel on the bus has that address.
    pub fn set_loss(&self, member: SocketAddr, loss: Loss) -> bool {
        let mut st = self.lock();
        let mut found = false;
        for m in st.groups.values_mut().flatten() {
            if m.addr == member {
                m.loss = LossState::new(loss);
                found = true;
            }
        }
        found
    }

    /// The addresses of the channels joined to `group`, in the order they joined.
    pub fn members(&self, group: SocketAddr) -> Vec<SocketAddr> {
        self.lock()
            .groups
            .get(&group)
            .map(|ms| ms.iter().map(|m| m.addr).collect())
            .unwrap_or_default()
    }

    /// The bus's counters.
    pub fn stats(&self) -> BusStats {
        self.lock().stats
    }

    /// Joins `group` (port 0: a free one) as `addr` (`None`: an assigned one).
    pub(crate) fn join(
        &self,
        mut group: SocketAddr,
        addr: Option<SocketAddr>,
        capacity: usize,
    ) -> Result<(Outlet, Inbox), MulticastError> {
        let mut st = self.lock();
        if group.port() == 0 {
            group.set_port(st.free_group_port(group.ip()));
        }
        let addr = match addr {
            None => st.assign(group.is_ipv4())?,
            Some(a) if a.is_ipv4() != group.is_ipv4() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("member address {a} is not of the family of group {group}"),
                )
                .into());
            }
            Some(mut a) => {
                if a.port() == 0 {
                    a.set_port(st.free_port(a.ip())?);
                }
                if st.taken.contains(&a) {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{a} is used by another member of the bus"),
                    )
                    .into());
                }
                a
            }
        };
        st.taken.insert(addr);
        let id = st.next_id;
        st.next_id += 1;
        let queue = Arc::new(Queue::new(capacity));
        st.groups.entry(group).or_default().push(Member {
            id,
            addr,
            queue: Arc::clone(&queue),
            loss: LossState::new(Loss::NONE),
        });
        drop(st);
        let reg = Arc::new(Registration {
            bus: self.clone(),
            addr,
        });
        Ok((
            Outlet {
                reg: Arc::clone(&reg),
                group,
            },
            Inbox {
                reg,
                group,
                id,
                queue,
            },
        ))
    }

    /// Puts a copy of `datagram` from `from` in every queue of `group`.
    fn deliver(&self, group: SocketAddr, from: SocketAddr, datagram: &[u8]) {
        let bytes = Bytes::copy_from_slice(datagram);
        let mut st = self.lock();
        let State { groups, stats, .. } = &mut *st;
        stats.sent += 1;
        for m in groups.get_mut(&group).into_iter().flatten() {
            if m.addr != from && m.loss.drops() {
                stats.lost += 1;
            } else if m.queue.push(bytes.clone(), from) {
                stats.delivered += 1;
            } else {
                stats.overflowed += 1;
            }
        }
    }
}

impl State {
    fn assign(&mut self, v4: bool) -> Result<SocketAddr, MulticastError> {
        while self.next_host < HOSTS_V4 {
            self.next_host += 1;
            let n = self.next_host;
            let ip = if v4 {
                IpAddr::V4(Ipv4Addr::from(BASE_V4 + n))
            } else {
                IpAddr::V6(Ipv6Addr::from(BASE_V6 + u128::from(n)))
            };
            let a = SocketAddr::new(ip, MEMBER_PORT);
            if !self.taken.contains(&a) {
                return Ok(a);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the bus has assigned all its member addresses",
        )
        .into())
    }

    fn free_port(&self, ip: IpAddr) -> Result<u16, MulticastError> {
        (MEMBER_PORT..=u16::MAX)
            .chain(1024..MEMBER_PORT)
            .find(|p| !self.taken.contains(&SocketAddr::new(ip, *p)))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("every port of {ip} is used on the bus"),
                )
                .into()
            })
    }

    fn free_group_port(&mut self, ip: IpAddr) -> u16 {
        loop {
            if self.next_group_port < FIRST_GROUP_PORT {
                self.next_group_port = FIRST_GROUP_PORT;
            }
            let p = self.next_group_port;
            self.next_group_port = p.checked_add(1).unwrap_or(FIRST_GROUP_PORT);
            if !self.groups.contains_key(&SocketAddr::new(ip, p)) {
                return p;
            }
        }
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Bus")
            .field("groups", &st.groups.len())
            .field("members", &st.groups.values().map(Vec::len).sum::<usize>())
            .field("stats", &st.stats)
            .finish()
    }
}

/// A channel's hold on its address: released when its handles and its receiver are gone.
struct Registration {
    bus: Bus,
    addr: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.bus.lock().taken.remove(&self.addr);
    }
}

/// The sending side of a membership (kept by the channel's handles).
pub(crate) struct Outlet {
    reg: Arc<Registration>,
    group: SocketAddr,
}

impl Outlet {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.reg.addr
    }

    pub(crate) fn group(&self) -> SocketAddr {
        self.group
    }

    pub(crate) fn send(&self, datagram: &[u8]) {
        self.reg.bus.deliver(self.group, self.reg.addr, datagram);
    }
}

/// The receiving side of a membership; leaves the group when dropped.
pub(crate) struct Inbox {
    reg: Arc<Registration>,
    group: SocketAddr,
    id: u64,
    queue: Arc<Queue>,
}

impl Inbox {
    /// Copies the next datagram into `buf` (cut to its length, as a socket does) and returns
    /// its length and sender.
    pub(crate) fn poll_recv_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<(usize, SocketAddr)> {
        let mut q = self.queue.lock();
        match q.items.pop_front() {
            Some((d, from)) => {
                q.bytes -= d.len() + DATAGRAM_COST;
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Poll::Ready((n, from))
            }
            None => {
                if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    q.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut st = self.reg.bus.lock();
        if let Some(ms) = st.groups.get_mut(&self.group) {
            ms.retain(|m| m.id != self.id);
            if ms.is_empty() {
                st.groups.remove(&self.group);
            }
        }
    }
}

/// A member's receive queue, bounded in bytes.
struct Queue {
    capacity: usize,
    inner: Mutex<QueueInner>,
}

struct QueueInner {
    items: VecDeque<(Bytes, SocketAddr)>,
    /// Bytes charged for what is queued.
    bytes: usize,
    waker: Option<Waker>,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(QueueInner {
                items: VecDeque::new(),
                bytes: 0,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a datagram unless it does not fit; wakes the receiver.
    fn push(&self, d: Bytes, from: SocketAddr) -> bool {
        let cost = d.len() + DATAGRAM_COST;
        let mut q = self.lock();
        if !q.items.is_empty() && q.bytes + cost > self.capacity {
            return false;
        }
        q.bytes += cost;
        q.items.push_back((d, from));
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        true
    }
}

/// Which datagrams arriving at a member the bus drops ([`Bus::set_loss`]). Deterministic:
/// the same sends give the same losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss(LossKind);

#[derive(Debug, Clone, Copy, PartialEq)]
enum LossKind {
    None,
    All,
    EveryNth(u64),
    Random { threshold: u64, seed: u64 },
}

impl Loss {
    /// Nothing is lost (the default).
    pub const NONE: Self = Self(LossKind::None);
    /// Everything is lost: the member is cut off (a partition), until set otherwise.
    pub const ALL: Self = Self(LossKind::All);

    /// The n-th, 2n-th, 3n-th, ... datagram is lost; `every_nth(1)` loses all, `every_nth(0)`
    /// none.
    pub fn every_nth(n: u64) -> Self {
        match n {
            0 => Self::NONE,
            1 => Self::ALL,
            n => Self(LossKind::EveryNth(n)),
        }
    }

    /// Each datagram is lost with `probability` (clamped to 0..=1; NaN is 0), drawn from a
    /// pseudo-random sequence (SplitMix64) started from `seed`: not cryptographic, repeatable.
    pub fn random(probability: f64, seed: u64) -> Self {
        let p = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        if p == 0.0 {
            Self::NONE
        } else if p == 1.0 {
            Self::ALL
        } else {
            // p < 1, so the product is below 2^64.
            let threshold = (p * 18_446_744_073_709_551_616.0) as u64;
            Self(LossKind::Random { threshold, seed })
        }
    }
}

/// A member's loss and where its sequence is.
struct LossState {
    loss: Loss,
    seen: u64,
    rng: u64,
}

impl LossState {
    fn new(loss: Loss) -> Self {
        let rng = match loss.0 {
            LossKind::Random { seed, .. } => seed,
            _ => 0,
        };
        Self { loss, seen: 0, rng }
    }

    fn drops(&mut self) -> bool {
        self.seen += 1;
        match self.loss.0 {
            LossKind::None => false,
            LossKind::All => true,
            LossKind::EveryNth(n) => self.seen.is_multiple_of(n),
            LossKind::Random { threshold, .. } => splitmix64(&mut self.rng) < threshold,
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-distributed, repeatable generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
