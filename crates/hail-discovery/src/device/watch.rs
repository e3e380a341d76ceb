//! Following the host's interfaces while the device runs ([`InterfaceWatch`]): addresses
//! that appear or go away are re-advertised (a new announce, signed under the next
//! sequence number), and a discovery channel is built anew when the interfaces it
//! joined changed (one came or went, or the IPv4 address it sends from did), each group's
//! on its own. With the group unset, the default groups follow the families as start
//! plans them ([`on_named`]): a default group whose family appears on the interfaces is
//! joined (and announced on), one whose family went away from them is left, so long as
//! another group stays joined (the device never leaves its last group: an interface
//! that went away altogether keeps its channels until it comes back).
//!
//! It looks every [`DeviceBuilder::interface_check`](super::DeviceBuilder::interface_check)
//! ([`INTERFACE_CHECK`](super::INTERFACE_CHECK), 2 s, by default) rather than being told:
//! the host says nothing to a process about its interfaces without a netlink socket (and a
//! crate for it, which hail does not carry). The work of one look is bounded whatever
//! changed: one listing of the interfaces (`getifaddrs`), a comparison, at most one
//! channel built per group and one announce sent; an interface that flaps costs that
//! once a period.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hail_multicast::{
    Channel, ChannelConfigBuilder, Interface, InterfaceInfo, JoinedInterface, MulticastError,
    Receiver,
};
use tokio::time::Instant;

use super::group_plan::{on_interfaces, on_named};
use super::lookup::Lookup;

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

/// A discovery group the watch follows, joined or not.
#[derive(Debug)]
pub(super) struct Followed {
    /// The group, with the port its channel bound.
    pub(super) group: SocketAddr,
    /// Its channel's configuration without interfaces (the TTL, the key).
    template: ChannelConfigBuilder,
    /// The interfaces its channel was last built on, as named (none: every up,
    /// multicast-capable one of its family).
    on: Vec<Interface>,
}

impl Followed {
    /// `group`, whose channels `template` configures (given no interfaces), on `on`.
    pub(super) fn new(group: SocketAddr, template: ChannelConfigBuilder, on: &[Interface]) -> Self {
        Self {
            group,
            template,
            on: on.to_vec(),
        }
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
    /// The discovery groups followed, IPv4 first: the one set, or both default groups
    /// (joined at start or not); empty without multicast.
    pub(super) groups: Vec<Followed>,
    /// With the group unset, the interfaces named (none: every one): the default groups
    /// are planned anew on them at each look, and may be joined or left.
    pub(super) defaults: Option<Vec<Interface>>,
}

/// What a look does with one followed group.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Its channel stays as it is (or it stays unjoined).
    Stay,
    /// Its channel is built on `on`, which are `now` on the host: joined anew, or joined.
    Build {
        on: Vec<Interface>,
        now: Vec<JoinedInterface>,
    },
    /// Joined, but its interfaces have no address of its family any more (or are gone).
    Lost,
}

/// What a look found changed.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Channels built on the interfaces as they are now: a joined group's new channel,
    /// or a default group's first (it is joined now).
    pub(super) channels: Vec<(Channel, Receiver)>,
    /// Default groups whose family went away from their interfaces: to be left.
    pub(super) left: Vec<SocketAddr>,
    /// The addresses to advertise now.
    pub(super) addresses: Option<Vec<IpAddr>>,
}

impl InterfaceWatch {
    /// Looks at the interfaces once (the next look is then `every` later), against the
    /// groups `joined` now with the interfaces their channels joined: a group's channel
    /// built anew if those are not what it would join now; a default group not joined
    /// built once its family is on its interfaces, and one joined left once its family is
    /// not (when another group stays); the addresses if they changed since the last look.
    /// A channel that cannot be built now keeps the old one (or the group unjoined) until
    /// a later look succeeds; an unreadable listing changes nothing.
    pub(super) fn look(&mut self, joined: &[(SocketAddr, &[JoinedInterface])]) -> Changes {
        self.next = Instant::now() + self.every;
        let mut changes = Changes::default();
        let table = match self.lookup.list() {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "interfaces not listed; nothing followed this time");
                return changes;
            }
        };
        let steps = self.steps(&table, joined);
        let (mut staying, mut lost) = (0, Vec::new());
        for (f, (step, was)) in self.groups.iter_mut().zip(steps) {
            match step {
                Step::Stay => staying += usize::from(was),
                Step::Lost => lost.push(f.group),
                Step::Build { on, now } => match on_interfaces(&f.template, &on)
                    .build()
                    .and_then(|config| Channel::bind_in(f.group, config, &table))
                {
                    Ok(c) => {
                        let how = if was { "joined anew" } else { "joined" };
                        tracing::debug!(group = %c.0.group(), interfaces = ?now, "interfaces changed: discovery group {how}");
                        f.group = c.0.group();
                        f.on = on;
                        changes.channels.push(c);
                        staying += 1;
                    }
                    Err(e) => {
                        tracing::debug!(group = %f.group, error = %e, "interfaces changed; channel not built yet");
                        staying += usize::from(was);
                    }
                },
            }
        }
        // Never the last group: an interface gone altogether keeps its channels.
        if self.defaults.is_some() && staying > 0 {
            for g in &lost {
                tracing::debug!(group = %g, "no address of the group's family on its interfaces: group left");
            }
            changes.left = lost;
        }
        changes.addresses = self.addresses_moved(&table);
        changes
    }

    /// What a look does with each followed group, by the listing `table` and the groups
    /// `joined` now; with each, whether it is joined.
    fn steps(
        &self,
        table: &[InterfaceInfo],
        joined: &[(SocketAddr, &[JoinedInterface])],
    ) -> Vec<(Step, bool)> {
        // The interfaces each group would be on now, as start plans them (a default
        // group's port is its default's, or a test's).
        let planned: Vec<Option<Vec<Interface>>> = match &self.defaults {
            Some(named) if !named.is_empty() => {
                let plan = on_named(named, table);
                self.groups
                    .iter()
                    .map(|f| {
                        let on = plan.iter().find(|(g, _)| g.ip() == f.group.ip());
                        on.map(|(_, on)| on.clone()).filter(|on| !on.is_empty())
                    })
                    .collect()
            }
            _ => self.groups.iter().map(|f| Some(f.on.clone())).collect(),
        };
        self.groups
            .iter()
            .zip(planned)
            .map(|(f, on)| {
                let was = joined.iter().find(|(g, _)| *g == f.group).map(|(_, j)| *j);
                let now = on.as_ref().and_then(|on| {
                    on_interfaces(&f.template, on)
                        .build()
                        .and_then(|config| config.resolve_in(f.group, table))
                        .inspect_err(|e| {
                            tracing::debug!(group = %f.group, error = %e, "interfaces not resolved for the group");
                        })
                        .ok()
                });
                let step = match (was, now, on) {
                    (Some(was), Some(now), _) if same(f.group, &now, was) => Step::Stay,
                    (_, Some(now), Some(on)) => Step::Build { on, now },
                    (Some(_), _, _) => Step::Lost,
                    (None, _, _) => Step::Stay,
                };
                (step, was.is_some())
            })
            .collect()
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

/// Whether a channel of `group` on the interfaces `now` would be the one on `was`: the
/// same interfaces (and, for an IPv4 group, the same IPv4 address to send from; an IPv6
/// group's sockets do not use it).
fn same(group: SocketAddr, now: &[JoinedInterface], was: &[JoinedInterface]) -> bool {
    if group.is_ipv4() {
        return now == was;
    }
    now.len() == was.len()
        && now
            .iter()
            .zip(was)
            .all(|(n, w)| (n.index, &n.name) == (w.index, &w.name))
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

    use hail_multicast::{ChannelConfig, Interface, InterfaceInfo, JoinedInterface};

    use super::{AddressSource, Followed, InterfaceWatch, Step, on_interfaces};
    use crate::{DEFAULT_GROUP, DEFAULT_GROUP_V6};

    /// The interface of the tests' listings: a name no host has, so that nothing here
    /// could join a group on a real interface.
    const IFACE: &str = "hailfake0";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn eth0(index: u32, addrs: &[&str]) -> InterfaceInfo {
        InterfaceInfo::new(
            IFACE,
            index,
            true,
            true,
            addrs.iter().map(|a| ip(a)).collect(),
        )
    }

    /// A watch over the addresses of [`IFACE`] (following no group) whose listing is
    /// whatever the test last put in `table`.
    fn watch(table: &Arc<Mutex<Vec<InterfaceInfo>>>, dual: bool) -> InterfaceWatch {
        let t = Arc::clone(table);
        let listen: SocketAddr = if dual { "[::]:7000" } else { "0.0.0.0:7000" }
            .parse()
            .expect("an address");
        let source = AddressSource {
            interfaces: vec![IFACE.into()],
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
            groups: Vec::new(),
            defaults: None,
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

    /// A group followed on `on` (a fixed group's), by a builder that no build is asked of.
    fn followed(group: &str, on: &[&str]) -> Followed {
        let group: SocketAddr = group.parse().expect("a group");
        let on: Vec<Interface> = on.iter().map(|&i| Interface::from(i)).collect();
        Followed::new(group, ChannelConfig::builder().ttl(0), &on)
    }

    /// What `w` would join for each group by `table`.
    fn resolved(w: &InterfaceWatch, table: &[InterfaceInfo]) -> Vec<Vec<JoinedInterface>> {
        w.groups
            .iter()
            .map(|f| {
                on_interfaces(&f.template, &f.on)
                    .build()
                    .and_then(|config| config.resolve_in(f.group, table))
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn the_channel_moves_when_the_joined_interface_changed() {
        let table = Arc::new(Mutex::new(vec![eth0(2, &["10.0.0.1"])]));
        let mut w = watch(&table, false);
        w.groups = vec![followed("239.255.70.1:7001", &[IFACE])];
        let group = w.groups[0].group;
        let joined = |index, v4: &str| resolved(&w, &[eth0(index, &[v4])]).remove(0);
        let was: Vec<JoinedInterface> = joined(2, "10.0.0.1");
        assert_eq!(was[0].v4, Some(Ipv4Addr::new(10, 0, 0, 1)));
        let step = |t: Vec<InterfaceInfo>| w.steps(&t, &[(group, &was)]).remove(0);
        let moved = |now| {
            (
                Step::Build {
                    on: vec![IFACE.into()],
                    now,
                },
                true,
            )
        };
        // The same, or only a second address: stays.
        assert_eq!(step(vec![eth0(2, &["10.0.0.1"])]), (Step::Stay, true));
        assert_eq!(
            step(vec![eth0(2, &["10.0.0.1", "10.0.0.2"])]),
            (Step::Stay, true)
        );
        // A new IPv4 address to send from, or made again with a new index: moves.
        assert_eq!(
            step(vec![eth0(2, &["10.0.0.2"])]),
            moved(joined(2, "10.0.0.2"))
        );
        assert_eq!(
            step(vec![eth0(5, &["10.0.0.1"])]),
            moved(joined(5, "10.0.0.1"))
        );
        // Gone, or without IPv4: cannot move. A group set is never left: its channel stays.
        assert_eq!(step(vec![]), (Step::Lost, true));
        assert_eq!(step(vec![eth0(2, &["fd00::1"])]), (Step::Lost, true));
        *table.lock().expect("lock") = vec![eth0(2, &["fd00::1"])];
        let c = w.look(&[(group, &was)]);
        assert!(c.left.is_empty() && c.channels.is_empty(), "{c:?}");
    }

    /// Issue 17: a default group not joined at start is joined once its family appears
    /// on the interfaces named, and one whose family went away is left, as long as
    /// another group stays. (The joins build real channels: the namespace test
    /// `netns_runtime` runs them; here the decisions, on a listing of a test's.)
    #[tokio::test(start_paused = true)]
    async fn default_groups_follow_the_families_of_the_interfaces() {
        let table = Arc::new(Mutex::new(vec![eth0(2, &["10.0.0.1"])]));
        let mut w = watch(&table, true);
        // Both default groups followed, as start leaves them: IPv4 joined on the
        // interface, IPv6 not (the interface had no IPv6 address).
        w.groups = vec![
            followed(&DEFAULT_GROUP.to_string(), &[IFACE]),
            followed(&DEFAULT_GROUP_V6.to_string(), &[]),
        ];
        w.defaults = Some(vec![IFACE.into()]);
        let v4_on = |t: &[InterfaceInfo]| resolved(&w, t).remove(0);
        let was4 = v4_on(&table.lock().expect("lock"));
        // Link-local IPv6 appears: IPv6 is built on the interface (and IPv4 stays).
        let dual = vec![eth0(2, &["10.0.0.1", "fe80::1"])];
        let steps = w.steps(&dual, &[(DEFAULT_GROUP, &was4)]);
        assert_eq!(steps[0], (Step::Stay, true));
        let (Step::Build { on, now }, false) = &steps[1] else {
            panic!("IPv6 not joined: {steps:?}");
        };
        assert_eq!((on.as_slice(), now[0].index), (&[IFACE.into()][..], 2));
        // Both joined; the IPv4 address goes away: IPv4 left, IPv6 stays.
        w.groups[1].on = vec![IFACE.into()];
        let was6 = resolved(&w, &dual).remove(1);
        *table.lock().expect("lock") = vec![eth0(2, &["fe80::1"])];
        let both = [(DEFAULT_GROUP, &was4[..]), (DEFAULT_GROUP_V6, &was6[..])];
        let six_only = [eth0(2, &["fe80::1"])];
        assert_eq!(
            w.steps(&six_only, &both),
            [(Step::Lost, true), (Step::Stay, true)],
            "an IPv6 channel does not move with the IPv4 address"
        );
        let c = w.look(&both);
        assert_eq!(c.left, [DEFAULT_GROUP], "{c:?}");
        assert!(c.channels.is_empty(), "{c:?}");
        // The interface gone altogether: no group left (the device keeps its last).
        table.lock().expect("lock").clear();
        let c = w.look(&both);
        assert!(c.left.is_empty() && c.channels.is_empty(), "{c:?}");
        // Interfaces without the MULTICAST flag (Linux's `lo`) join IPv6 only when none
        // has IPv4, as at start.
        let mut lo_like = eth0(2, &["10.0.0.1", "fd00::1"]);
        lo_like.multicast = false;
        let steps = w.steps(&[lo_like.clone()], &[(DEFAULT_GROUP, &was4)]);
        assert_eq!(steps[1], (Step::Stay, false), "{steps:?}");
        lo_like.addrs.remove(0);
        let steps = w.steps(&[lo_like], &[(DEFAULT_GROUP, &was4)]);
        assert!(
            matches!(steps[..], [(Step::Lost, true), (Step::Build { .. }, false)]),
            "{steps:?}"
        );
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
