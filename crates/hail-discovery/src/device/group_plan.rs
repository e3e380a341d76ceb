//! Which discovery groups a device joins, and on which interfaces: the default groups
//! ([`DEFAULT_GROUP`], [`DEFAULT_GROUP_V6`]) each where its family is, and opening the
//! planned channels at start, leaving out a group its interfaces have no address for.
//! Split from `builder.rs`, which keeps the settings and the start sequence.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hail_multicast::{
    Channel, ChannelConfigBuilder, Interface, InterfaceInfo, MulticastError, Receiver,
};

use super::lookup::Listing;

/// The default IPv4 discovery group: `239.255.72.76:5676` (administratively scoped). A
/// device whose group is not set discovers on it where its interfaces have IPv4, beside
/// [`DEFAULT_GROUP_V6`] where they also have IPv6
/// ([`DeviceBuilder::group`](super::DeviceBuilder::group)).
pub const DEFAULT_GROUP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 72, 76)), 5676);
/// The default IPv6 discovery group: `[ff02::4841:494c]:5676` (link-local scope;
/// `4841:494c` is "HAIL"). A device whose group is not set discovers on it where its
/// interfaces have IPv6 (multicast-capable ones: not Linux's `lo`), beside
/// [`DEFAULT_GROUP`] where they also have IPv4, so a device on an IPv6-only host and one on
/// a dual-stack host meet on the defaults
/// ([`DeviceBuilder::group`](super::DeviceBuilder::group)).
pub const DEFAULT_GROUP_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x4841, 0x494c)),
    5676,
);

/// The default groups and the interfaces each is joined on (none named: every up,
/// multicast-capable one of its family), IPv4 first; see
/// [`DeviceBuilder::group`](super::DeviceBuilder::group). On an in-memory network
/// (`memory`: the host's address there and its IPv6 one), the families of the host's
/// addresses there.
///
/// # Errors
/// An interface named that does not exist ([`MulticastError::InterfaceNotFound`]);
/// none of either family ([`MulticastError::InterfaceLacksFamily`]).
pub(super) fn default_groups(
    interfaces: &[Interface],
    memory: Option<(IpAddr, Option<Ipv6Addr>)>,
    listing: &mut Listing,
) -> Result<Vec<(SocketAddr, Vec<Interface>)>, MulticastError> {
    if let Some((ip, ipv6)) = memory {
        let v4 = ip.is_ipv4();
        let v6 = ip.is_ipv6() || ipv6.is_some();
        return Ok([(v4, DEFAULT_GROUP), (v6, DEFAULT_GROUP_V6)]
            .into_iter()
            .filter(|(has, _)| *has)
            .map(|(_, g)| (g, Vec::new()))
            .collect());
    }
    if interfaces.is_empty() {
        // hail-multicast picks each family's interfaces; a group without any is left
        // out when its channel is opened.
        return Ok(vec![
            (DEFAULT_GROUP, Vec::new()),
            (DEFAULT_GROUP_V6, Vec::new()),
        ]);
    }
    let table = listing.get()?;
    let named: Vec<InterfaceInfo> = interfaces
        .iter()
        .map(|i| i.resolve_in(table))
        .collect::<Result<_, MulticastError>>()?;
    let planned = on_named(interfaces, table);
    if planned.iter().all(|(_, on)| on.is_empty()) {
        return Err(MulticastError::InterfaceLacksFamily {
            interface: named[0].name.clone(),
            ipv6: false,
        });
    }
    Ok(planned
        .into_iter()
        .filter(|(_, on)| !on.is_empty())
        .collect())
}

/// Each default group, IPv4 first, with the interfaces of `named` it is joined on by the
/// listing `table`: [`DEFAULT_GROUP`] on those with an IPv4 address, [`DEFAULT_GROUP_V6`]
/// on the multicast-capable ones with an IPv6 address (or on every one with IPv6 when
/// none has IPv4). An interface not in `table` is on neither (at start that is an error
/// before this; while running, it went away). A group on none is not joined.
pub(super) fn on_named(
    named: &[Interface],
    table: &[InterfaceInfo],
) -> [(SocketAddr, Vec<Interface>); 2] {
    let found: Vec<(&Interface, InterfaceInfo)> = named
        .iter()
        .filter_map(|i| Some((i, i.resolve_in(table).ok()?)))
        .collect();
    let has = |info: &InterfaceInfo, v4: bool| info.addrs.iter().any(|a| a.is_ipv4() == v4);
    let on_v4: Vec<Interface> = found
        .iter()
        .filter(|(_, info)| has(info, true))
        .map(|(i, _)| (*i).clone())
        .collect();
    // IPv6 multicast does not route on an interface without the MULTICAST flag
    // (Linux's `lo`): there only when nothing else would discover.
    let on_v6: Vec<Interface> = found
        .iter()
        .filter(|(_, info)| has(info, false) && (info.multicast || on_v4.is_empty()))
        .map(|(i, _)| (*i).clone())
        .collect();
    [(DEFAULT_GROUP, on_v4), (DEFAULT_GROUP_V6, on_v6)]
}

/// `template` (a group's channel configuration, with its settings and no interfaces) on
/// the interfaces `on` (none: every up, multicast-capable one of the group's family).
pub(super) fn on_interfaces(
    template: &ChannelConfigBuilder,
    on: &[Interface],
) -> ChannelConfigBuilder {
    on.iter()
        .fold(template.clone(), |b, i| b.interface(i.clone()))
}

/// The planned discovery channels (groups and their interfaces) opened in order with the
/// configurations of `builder`. A channel
/// whose interfaces turn out to have no address of its family, beside one that opened,
/// is left out (debug log: the device discovers on the groups it can); any other failure
/// (a join refused, a port taken) fails the start, as does none opening (the first
/// error).
pub(super) fn open_channels(
    planned: &[(SocketAddr, Vec<Interface>)],
    builder: impl Fn(SocketAddr, &[Interface]) -> ChannelConfigBuilder,
    mut listing: Option<&mut Listing>,
) -> Result<Vec<(Channel, Receiver)>, MulticastError> {
    let (mut open, mut first_error) = (Vec::new(), None);
    for (group, on) in planned {
        let config = builder(*group, on).build()?;
        let bound = match listing.as_deref_mut() {
            Some(l) => Channel::bind_in(*group, config, l.get()?),
            None => Channel::bind(*group, config),
        };
        match bound {
            Ok(c) => open.push(c),
            Err(
                e @ (MulticastError::NoInterface | MulticastError::InterfaceLacksFamily { .. }),
            ) => {
                tracing::debug!(%group, error = %e, "discovery group not joined");
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match first_error {
        Some(e) if open.is_empty() => Err(e),
        _ => Ok(open),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use hail_multicast::{ChannelConfig, Interface, MulticastError};

    use super::open_channels;

    /// Found in review: a second default group failing for any reason was left out with a
    /// debug line, so a device could run on one family only without a word. Only a group
    /// its interfaces have no address for is left out (the namespace tests `netns_dual`
    /// cover that); any other failure fails the start.
    #[tokio::test]
    async fn only_a_group_without_addresses_of_its_family_is_left_out() {
        let lo = || vec![Interface::from(Ipv4Addr::LOCALHOST)];
        let builder = |_group: SocketAddr, on: &[Interface]| {
            let mut b = ChannelConfig::builder().ttl(0);
            for i in on {
                b = b.interface(i.clone());
            }
            b
        };
        let good: SocketAddr = "239.255.77.9:0".parse().unwrap();
        // Not a multicast address: a failure that is not about the interfaces' family.
        let bad: SocketAddr = "10.1.2.3:5676".parse().unwrap();
        let refused = open_channels(&[(good, lo()), (bad, lo())], builder, None);
        assert!(
            matches!(refused, Err(MulticastError::NotMulticast(_))),
            "{:?}",
            refused.err()
        );
        let open = open_channels(
            &[(good, lo())],
            builder,
            Some(&mut super::Listing::new(
                crate::device::lookup::Lookup::host(),
            )),
        )
        .unwrap();
        assert_eq!(open.len(), 1);
    }
}
