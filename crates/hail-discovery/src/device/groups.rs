//! The device's discovery channels ([`Groups`]): one multicast channel per group it
//! discovers on. One group when set ([`DeviceBuilder::group`](super::DeviceBuilder::group));
//! by default both [`DEFAULT_GROUP`](super::DEFAULT_GROUP) and
//! [`DEFAULT_GROUP_V6`](super::DEFAULT_GROUP_V6) where the interfaces have both families,
//! as mDNS joins `224.0.0.251` and `ff02::fb`.
//!
//! Each group keeps a channel of its own (a hail-multicast [`Channel`] is one group: its
//! sockets, its interfaces, its replay windows and its counters are of one family), and
//! the driver reads them all into its one peer table: a device heard on both groups is
//! one peer (its id is its key), linked once. Every advert goes out on every group.
//! Nothing is queued here: datagrams wait in each channel's socket buffer (or bus queue),
//! and the driver takes at most its `DATAGRAM_BATCH` a turn from all groups together.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use hail_multicast::{Channel, Datagram, JoinedInterface, MulticastError, Receiver, Stats};
use tracing::debug;

/// One group's channel, its receiver, and the counters of the channels it replaced.
struct Group {
    channel: Channel,
    receiver: Receiver,
    /// The counters of this group's channels replaced since start (the interfaces changed).
    retired: Stats,
}

/// The device's discovery channels, in the order of [`Device::groups`](crate::Device::groups)
/// (IPv4 first); empty without multicast.
#[derive(Default)]
pub(super) struct Groups {
    groups: Vec<Group>,
    /// The counters of the groups left while running, for when they are joined again.
    left: Vec<(SocketAddr, Stats)>,
    /// The group read first at the next poll: each poll starts one further, so a busy
    /// group cannot keep the other's datagrams waiting.
    next: usize,
}

impl Groups {
    pub(super) fn new(channels: Vec<(Channel, Receiver)>) -> Self {
        Self {
            groups: channels
                .into_iter()
                .map(|(channel, receiver)| Group {
                    channel,
                    receiver,
                    retired: Stats::default(),
                })
                .collect(),
            left: Vec::new(),
            next: 0,
        }
    }

    /// The groups, in order.
    pub(super) fn addrs(&self) -> Vec<SocketAddr> {
        self.groups.iter().map(|g| g.channel.group()).collect()
    }

    /// Each group with the interfaces its channel joined, in group order.
    pub(super) fn joined(&self) -> Vec<(SocketAddr, &[JoinedInterface])> {
        self.groups
            .iter()
            .map(|g| (g.channel.group(), g.channel.interfaces()))
            .collect()
    }

    /// The group of `channel` on it: the group's channel replaced (the old one's counters
    /// kept in the group's totals), or the group joined (IPv4 before IPv6), with the
    /// counters it had when it was left. Returns whether the group is joined now.
    pub(super) fn put(&mut self, (channel, receiver): (Channel, Receiver)) -> bool {
        let group = channel.group();
        if let Some(g) = self.groups.iter_mut().find(|g| g.channel.group() == group) {
            g.receiver = receiver;
            let old = std::mem::replace(&mut g.channel, channel);
            g.retired += old.close();
            return false;
        }
        let retired = match self.left.iter().position(|(l, _)| *l == group) {
            Some(i) => self.left.swap_remove(i).1,
            None => Stats::default(),
        };
        let at = self
            .groups
            .iter()
            .position(|g| g.channel.group().is_ipv6() && group.is_ipv4())
            .unwrap_or(self.groups.len());
        self.groups.insert(
            at,
            Group {
                channel,
                receiver,
                retired,
            },
        );
        true
    }

    /// Leaves `group`: its channel closed, its counters kept for a later [`put`](Self::put).
    pub(super) fn leave(&mut self, group: SocketAddr) {
        let Some(i) = self.groups.iter().position(|g| g.channel.group() == group) else {
            return;
        };
        let g = self.groups.remove(i);
        let mut s = g.retired;
        s += g.channel.close();
        self.left.push((group, s));
        self.next = 0;
    }

    /// Sends `bytes` on `group` only (a group just joined: the announce and the probe the
    /// others had at start).
    pub(super) async fn send_on(&self, group: SocketAddr, bytes: &[u8]) {
        let Some(g) = self.groups.iter().find(|g| g.channel.group() == group) else {
            return;
        };
        if let Err(e) = g.channel.send(bytes).await {
            debug!(%group, error = %e, "advert not sent");
        }
    }

    /// Polls every group for a datagram, starting one further each time.
    pub(super) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Datagram, MulticastError>> {
        let n = self.groups.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if let Poll::Ready(r) = self.groups[i].receiver.poll_recv(cx) {
                self.next = (i + 1) % n;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    }

    /// The next datagram on any group; never, without groups.
    pub(super) async fn recv(&mut self) -> Result<Datagram, MulticastError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Sends `bytes` on every group; a group that cannot send is logged (and counted in
    /// its channel's statistics where one of its interfaces failed), the others go on.
    pub(super) async fn send(&self, bytes: &[u8]) {
        for g in &self.groups {
            if let Err(e) = g.channel.send(bytes).await {
                debug!(group = %g.channel.group(), error = %e, "advert not sent");
            }
        }
    }

    /// The counters of the groups left while running and not joined again, summed.
    pub(super) fn left_stats(&self) -> Stats {
        let mut sum = Stats::default();
        for (_, s) in &self.left {
            sum += *s;
        }
        sum
    }

    /// Each group's counters since start (its replaced channels' included), in group order.
    pub(super) fn stats(&self) -> Vec<(SocketAddr, Stats)> {
        self.groups
            .iter()
            .map(|g| {
                let mut s = g.retired;
                s += g.channel.stats();
                (g.channel.group(), s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hail_multicast::memory::Bus;
    use hail_multicast::{Channel, ChannelConfig, Receiver};

    use super::Groups;
    use crate::{DEFAULT_GROUP, DEFAULT_GROUP_V6};

    /// A channel of `group` on the in-memory `bus`, as host `host` (of the group's family).
    fn channel(bus: &Bus, group: SocketAddr, host: &str) -> (Channel, Receiver) {
        let at = SocketAddr::new(host.parse().expect("an address"), 5676);
        let config = ChannelConfig::builder()
            .memory_at(bus, at)
            .build()
            .expect("valid");
        Channel::bind(group, config).expect("a bus channel")
    }

    /// Groups joined and left while running keep IPv4 first, and a group joined again
    /// has the counters it had (as a replaced channel's are kept).
    #[tokio::test]
    async fn groups_joined_while_running_keep_their_order_and_counters() {
        let bus = Bus::new();
        let mut groups = Groups::new(vec![channel(&bus, DEFAULT_GROUP_V6, "fd00::1")]);
        assert!(
            groups.put(channel(&bus, DEFAULT_GROUP, "10.0.0.1")),
            "joined"
        );
        assert_eq!(groups.addrs(), [DEFAULT_GROUP, DEFAULT_GROUP_V6]);
        // A datagram from another host on the IPv4 group, received.
        let (other, _other_rx) = channel(&bus, DEFAULT_GROUP, "10.0.0.2");
        other.send(b"hello").await.expect("sent");
        let d = groups.recv().await.expect("received");
        assert_eq!(&d.payload[..], b"hello");
        let delivered = |g: &Groups| g.stats()[0].1.delivered;
        assert_eq!(delivered(&groups), 1);
        groups.leave(DEFAULT_GROUP);
        assert_eq!(groups.addrs(), [DEFAULT_GROUP_V6]);
        assert!(
            groups.put(channel(&bus, DEFAULT_GROUP, "10.0.0.1")),
            "joined again"
        );
        assert_eq!(groups.addrs(), [DEFAULT_GROUP, DEFAULT_GROUP_V6]);
        assert_eq!(delivered(&groups), 1, "the counters of before it was left");
        // The same group on a new channel (here from another address): replaced, not joined.
        assert!(!groups.put(channel(&bus, DEFAULT_GROUP, "10.0.0.3")));
        assert_eq!((groups.addrs().len(), delivered(&groups)), (2, 1));
    }
}
