//! Following the host's interfaces while the device runs ([`InterfaceWatch`]): addresses
//! that appear or go away are re-advertised (a new announce, signed under the next
//! sequence number), and a discovery channel is built anew when the interfaces it
//! joined changed (one came or went, or the IPv4 address it sends from did), each group's
//! on its own.
//!
//! It looks every [`DeviceBuilder::interface_check`](super::DeviceBuilder::interface_check)
//! ([`INTERFACE_CHECK`](super::INTERFACE_CHECK), 2 s, by default) rather than being told:
//! the host says nothing to a process about its interfaces without a netlink socket (and a
//! crate for it, which hail does not carry). The work of one look is bounded whatever
//! changed: one listing of the interfaces (`getifaddrs`), a comparison, at most one
//! channel built per group and one announce sent; an interface that flaps costs that
//! once a period.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hail_multicast::{
    Channel, ChannelBuilder, Interface, InterfaceInfo, JoinedInterface, MulticastError,
};
use tokio::time::Instant;

/// Where the watch reads the host's interfaces: [`hail_multicast::interfaces`], or a
/// test's listing.
#[derive(Clone)]
pub(super) struct Lookup(
    Arc<dyn Fn() -> Result<Vec<InterfaceInfo>, MulticastError> + Send + Sync + 'static>,
);

impl Lookup {
    /// The host's interfaces, as the operating system lists them.
    pub(super) fn host() -> Self {
        Self(Arc::new(hail_multicast::interfaces))
    }

    /// A listing from `f` (a test's).
    #[cfg(test)]
    pub(super) fn from_fn(
        f: impl Fn() -> Result<Vec<InterfaceInfo>, MulticastError> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// The interfaces now.
    pub(super) fn list(&self) -> Result<Vec<InterfaceInfo>, MulticastError> {
        (self.0)()
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lookup")
    }
}

/// Where the advertised addresses come from when they follow the interfaces: the
/// interfaces named, and which of their addresses the listener takes.
#[derive(Debug, Clone)]
pub(super) struct AddressSource {
    pub(super) interfaces: Vec<Interface>,
    pub(super) listen: SocketAddr,
    pub(super) dual: bool,
}

impl AddressSource {
    /// The addresses to advertise, from the listing `table`, in the order of the
    /// interfaces and of their addresses. An interface that is not in `table` fails with
    /// `strict` (at start: a typed error that lists what exists) and has none without it
    /// (while running: it went away).
    pub(super) fn addresses(
        &self,
        table: &[InterfaceInfo],
        strict: bool,
    ) -> Result<Vec<IpAddr>, MulticastError> {
        let mut out = Vec::new();
        for i in &self.interfaces {
            let info = match i.resolve_in(table) {
                Ok(info) => info,
                Err(e) if strict => return Err(e),
                Err(_) => continue,
            };
            for a in info.addrs {
                if advertisable(a, self.listen, self.dual) && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }
}

/// What the driver checks every `every`.
#[derive(Debug)]
pub(super) struct InterfaceWatch {
    pub(super) every: Duration,
    pub(super) next: Instant,
    pub(super) lookup: Lookup,
    /// The advertised addresses follow these interfaces, and were these at the last look.
    pub(super) addresses: Option<(AddressSource, Vec<IpAddr>)>,
    /// Builds each group's discovery channel anew (on the group's actual port), in group
    /// order; empty without multicast.
    pub(super) channels: Vec<ChannelBuilder>,
}

/// What a look found changed.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// The channels built on the interfaces as they are now, by group index.
    pub(super) channels: Vec<(usize, Channel)>,
    /// The addresses to advertise now.
    pub(super) addresses: Option<Vec<IpAddr>>,
}

impl InterfaceWatch {
    /// Looks at the interfaces once (the next look is then `every` later): a group's
    /// channel built anew if the interfaces it `joined` (the current channels', by group)
    /// are not what it would join now, the addresses if they changed since the last look.
    /// A channel that cannot be built now (the interface is gone, or has no address of the
    /// group's family) keeps the old one until a later look succeeds; an unreadable
    /// listing changes nothing.
    pub(super) fn look(&mut self, joined: &[&[JoinedInterface]]) -> Changes {
        self.next = Instant::now() + self.every;
        let mut changes = Changes::default();
        let table = match self.lookup.list() {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "interfaces not listed; nothing followed this time");
                return changes;
            }
        };
        for (i, (b, was)) in self.channels.iter().zip(joined).enumerate() {
            let Some(now) = channel_moved(b, &table, was) else {
                continue;
            };
            match b.clone().build() {
                Ok(c) => {
                    tracing::debug!(group = %c.group(), interfaces = ?now, "interfaces changed: discovery channel joined anew");
                    changes.channels.push((i, c));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "interfaces changed; channel not rebuilt yet");
                }
            }
        }
        changes.addresses = self.addresses_moved(&table);
        changes
    }

    /// The addresses to advertise now, when they changed since the last look.
    fn addresses_moved(&mut self, table: &[InterfaceInfo]) -> Option<Vec<IpAddr>> {
        let (source, last) = self.addresses.as_mut()?;
        let now = source.addresses(table, false).ok()?;
        if &now == last {
            return None;
        }
        tracing::debug!(addresses = ?now, "interface addresses changed: announced");
        last.clone_from(&now);
        Some(now)
    }
}

/// The interfaces the channel of `builder` would join now, when they are not those
/// `joined` (`None` also when they cannot be resolved now: the old channel is kept).
fn channel_moved(
    builder: &ChannelBuilder,
    table: &[InterfaceInfo],
    joined: &[JoinedInterface],
) -> Option<Vec<JoinedInterface>> {
    match builder.resolve_in(table) {
        Ok(now) if now.as_slice() != joined => Some(now),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "interfaces not resolved; channel kept");
            None
        }
    }
}

/// Whether an address of a named interface goes into the adverts: one the listener
/// `listen` takes (a dual-stack `[::]` listener takes both families). Not an IPv6
/// link-local one: an advert has no room for its scope, and peers dial the advert's
/// source address, which carries it.
fn advertisable(a: IpAddr, listen: SocketAddr, dual: bool) -> bool {
    match a {
        IpAddr::V4(_) => listen.is_ipv4() || dual,
        IpAddr::V6(v6) => listen.is_ipv6() && !v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use hail_multicast::{Channel, InterfaceInfo, JoinedInterface};

    use super::{AddressSource, InterfaceWatch};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn eth0(index: u32, addrs: &[&str]) -> InterfaceInfo {
        InterfaceInfo::new(
            "eth0",
            index,
            true,
            true,
            addrs.iter().map(|a| ip(a)).collect(),
        )
    }

    /// A watch over `eth0` whose listing is whatever the test last put in `table`.
    fn watch(table: &Arc<Mutex<Vec<InterfaceInfo>>>, dual: bool) -> InterfaceWatch {
        let t = Arc::clone(table);
        let listen: SocketAddr = if dual { "[::]:7000" } else { "0.0.0.0:7000" }
            .parse()
            .expect("an address");
        let source = AddressSource {
            interfaces: vec!["eth0".into()],
            listen,
            dual,
        };
        let first = source
            .addresses(&table.lock().expect("lock"), true)
            .expect("eth0 listed");
        InterfaceWatch {
            every: Duration::from_secs(2),
            next: tokio::time::Instant::now(),
            lookup: super::Lookup::from_fn(move || Ok(t.lock().expect("lock").clone())),
            addresses: Some((source, first)),
            channels: vec![
                Channel::builder("239.255.70.1:7001".parse::<SocketAddr>().expect("group"))
                    .interface("eth0"),
            ],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn added_and_removed_addresses_are_reported_once_each() {
        let table = Arc::new(Mutex::new(vec![eth0(2, &["10.0.0.1", "fe80::1"])]));
        let mut w = watch(&table, true);
        assert_eq!(
            w.addresses.as_ref().map(|a| a.1.clone()),
            Some(vec![ip("10.0.0.1")])
        );
        let t0 = tokio::time::Instant::now();
        let c = w.look(&[]);
        assert!(
            c.addresses.is_none() && c.channels.is_empty(),
            "nothing changed"
        );
        assert_eq!(
            w.next,
            t0 + Duration::from_secs(2),
            "the next look a period later"
        );
        // An IPv6 address added (a dual-stack listener takes it; link-local is never
        // advertised): announced once.
        table.lock().expect("lock")[0].addrs.push(ip("fd00::1"));
        assert_eq!(
            w.look(&[]).addresses,
            Some(vec![ip("10.0.0.1"), ip("fd00::1")])
        );
        assert!(w.look(&[]).addresses.is_none(), "reported once");
        // The IPv4 address gone.
        table.lock().expect("lock")[0].addrs.remove(0);
        assert_eq!(w.look(&[]).addresses, Some(vec![ip("fd00::1")]));
        // The interface gone: nothing to advertise (not an error); back: its addresses.
        table.lock().expect("lock").clear();
        assert_eq!(w.look(&[]).addresses, Some(vec![]));
        *table.lock().expect("lock") = vec![eth0(9, &["10.0.0.7"])];
        assert_eq!(w.look(&[]).addresses, Some(vec![ip("10.0.0.7")]));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv4_listener_does_not_advertise_ipv6() {
        let table = Arc::new(Mutex::new(vec![eth0(2, &["10.0.0.1"])]));
        let mut w = watch(&table, false);
        table.lock().expect("lock")[0].addrs.push(ip("fd00::1"));
        assert!(w.look(&[]).addresses.is_none());
    }

    #[test]
    fn the_channel_moves_when_the_joined_interface_changed() {
        let table = Arc::new(Mutex::new(vec![eth0(2, &["10.0.0.1"])]));
        let w = watch(&table, false);
        let joined = |index, v4: &str| {
            let t = vec![eth0(index, &[v4])];
            w.channels[0].resolve_in(&t).expect("resolves")
        };
        let was: Vec<JoinedInterface> = joined(2, "10.0.0.1");
        assert_eq!(was[0].v4, Some(Ipv4Addr::new(10, 0, 0, 1)));
        let now = |t: Vec<InterfaceInfo>| super::channel_moved(&w.channels[0], &t, &was);
        // The same, or only a second address: stays.
        assert_eq!(now(vec![eth0(2, &["10.0.0.1"])]), None);
        assert_eq!(now(vec![eth0(2, &["10.0.0.1", "10.0.0.2"])]), None);
        // A new IPv4 address to send from, or made again with a new index: moves.
        assert_eq!(
            now(vec![eth0(2, &["10.0.0.2"])]),
            Some(joined(2, "10.0.0.2"))
        );
        assert_eq!(
            now(vec![eth0(5, &["10.0.0.1"])]),
            Some(joined(5, "10.0.0.1"))
        );
        // Gone, or without IPv4: cannot move, the old channel stays.
        assert_eq!(now(vec![]), None);
        assert_eq!(now(vec![eth0(2, &["fd00::1"])]), None);
    }

    /// A running device announces an address that appeared on its interface, and a peer
    /// that had joined it sees the address without either restarting. The listing is a
    /// test's (loopback as the host lists it, then with 127.0.0.2 too); the sockets are
    /// real, on loopback.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_device_announces_an_address_added_to_its_interface() {
        use crate::{Device, DeviceEvent};
        let lo = hail_multicast::Interface::from(Ipv4Addr::LOCALHOST)
            .resolve()
            .expect("loopback has 127.0.0.1");
        let table = Arc::new(Mutex::new(vec![lo]));
        let t = Arc::clone(&table);
        let group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 91), 0));
        let (a, _ea) = Device::builder("watch-a")
            .group(group)
            .interface(Ipv4Addr::LOCALHOST)
            .listen("127.0.0.1:0".parse().expect("an address"))
            .interface_check(Some(Duration::from_millis(50)))
            .interface_lookup(super::Lookup::from_fn(move || {
                Ok(t.lock().expect("lock").clone())
            }))
            .start()
            .await
            .expect("device starts");
        let (b, mut eb) = Device::builder("watch-b")
            .group(a.group())
            .interface(Ipv4Addr::LOCALHOST)
            .listen("127.0.0.1:0".parse().expect("an address"))
            .start()
            .await
            .expect("device starts");
        let port = a.local_addr().port();
        let added = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port));
        let before = tokio::time::timeout(Duration::from_secs(10), b.wait_for_peer("watch-a"))
            .await
            .expect("b joins a");
        assert!(!before.addresses.contains(&added), "{before:?}");
        table.lock().expect("lock")[0].addrs.push(ip("127.0.0.2"));
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eb.recv().await.expect("b running") {
                    DeviceEvent::PeersChanged(peers)
                        if peers
                            .iter()
                            .any(|p| p.name == "watch-a" && p.addresses.contains(&added)) =>
                    {
                        return;
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(seen.is_ok(), "b never saw 127.0.0.2: {:?}", b.peers());
        // The link stayed up: re-announcing is not a restart.
        assert_eq!(b.links(), 1);
        b.close().await;
        a.close().await;
    }
}
