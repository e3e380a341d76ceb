//! Where a device's links listen when interfaces are named and no listen address is: the
//! one rule the `hail` command and the Python package share, so that a device started by
//! either on the same interface listens on the same address.

use std::net::IpAddr;

use hail_multicast::{Interface, MulticastError};

/// The address links listen on for `interfaces` (as given to
/// [`DeviceBuilder::interface`](crate::DeviceBuilder::interface)), or `None` for every
/// address (the device's default listener) when none or several are named or the one named
/// has no usable address.
///
/// With one interface: its first address of the family `v6` names (`Some(true)` IPv6, as
/// for an IPv6 group; `Some(false)` IPv4; `None` the family the device's default group takes
/// there: IPv4 if the interface has an IPv4 address, else IPv6). Link-local IPv6 addresses
/// are skipped (a listener on one would need its scope). An interface named by an address
/// of that family listens on that address. The host's interfaces are listed at most once.
///
/// # Errors
/// [`MulticastError::InterfaceNotFound`] (listing the host's interfaces) or
/// [`MulticastError::Io`] from [`Interface::resolve`].
pub fn listen_ip(
    interfaces: &[Interface],
    v6: Option<bool>,
) -> Result<Option<IpAddr>, MulticastError> {
    let [only] = interfaces else {
        return Ok(None);
    };
    let usable = |a: &IpAddr, v6: bool| match a {
        IpAddr::V4(_) => !v6,
        IpAddr::V6(a6) => v6 && !a6.is_unicast_link_local(),
    };
    let mut listed = None;
    let v6 = match v6 {
        Some(v6) => v6,
        None => {
            let info = only.resolve()?;
            let v6 = !info.addrs.iter().any(IpAddr::is_ipv4);
            listed = Some(info);
            v6
        }
    };
    if let Interface::Addr(a) = only
        && usable(a, v6)
    {
        return Ok(Some(*a));
    }
    let info = match listed {
        Some(info) => info,
        None => only.resolve()?,
    };
    Ok(info.addrs.iter().copied().find(|a| usable(a, v6)))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn none_or_several_interfaces_listen_everywhere() {
        assert_eq!(listen_ip(&[], None).unwrap(), None);
        let two = [
            Interface::from(Ipv4Addr::LOCALHOST),
            Interface::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        assert_eq!(listen_ip(&two, Some(false)).unwrap(), None);
    }

    #[test]
    fn an_interface_named_by_an_address_listens_there_in_its_family() {
        let lo4 = [Interface::from(Ipv4Addr::LOCALHOST)];
        assert_eq!(
            listen_ip(&lo4, Some(false)).unwrap(),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            listen_ip(&lo4, None).unwrap(),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "lo has an IPv4 address: the default group's family there is IPv4"
        );
    }

    #[test]
    fn an_interface_by_name_listens_on_its_first_address_of_the_family() {
        let lo = ["lo".parse::<Interface>().unwrap()];
        assert_eq!(
            listen_ip(&lo, Some(false)).unwrap(),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        let unknown = ["hailnone0".parse::<Interface>().unwrap()];
        assert!(matches!(
            listen_ip(&unknown, Some(false)),
            Err(MulticastError::InterfaceNotFound { .. })
        ));
    }
}
