//! Where a device's links listen when interfaces are named and no listen address is: the
//! one rule the `hail` command and the Python package share, so that a device started by
//! either on the same interface listens on the same address.

use std::net::IpAddr;

use hail_multicast::{Interface, MulticastError};

/// The address links listen on for `interfaces` (as given to
/// [`DeviceBuilder::interface`](crate::DeviceBuilder::interface)), or `None` for every
/// address (the device's default listener, dual-stack where the host allows it, which
/// advertises every family the interfaces have) when none or several are named, the one
/// named is named by name or index, or it has no usable address.
///
/// One interface named by an address listens on that address when it is of the family `v6`
/// names (`Some(true)` IPv6, as for an IPv6 group; `Some(false)` IPv4; `None` the family
/// the device's default group takes there: IPv4 if the interface has an IPv4 address, else
/// IPv6), else on the interface's first address of that family. Link-local IPv6 addresses
/// are skipped (a listener on one would need its scope). One named by name or index
/// (`eth0`, `3`) listens everywhere, so a device on `--interface eth0` links over both of
/// its families as the device's default does (it listened on the interface's first address
/// of one family before). The one interface is looked up either way (an unknown one is an
/// error); the host's interfaces are listed at most once.
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
    if !matches!(only, Interface::Addr(_)) {
        only.resolve()?;
        return Ok(None);
    }
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

    /// Issue 17: `hail --interface lo` listened on 127.0.0.1 only; by name (or index) the
    /// device listens everywhere, on every family the interface has.
    #[test]
    fn an_interface_by_name_or_index_listens_everywhere_and_must_exist() {
        let lo = "lo".parse::<Interface>().unwrap();
        for v6 in [None, Some(false), Some(true)] {
            assert_eq!(listen_ip(std::slice::from_ref(&lo), v6).unwrap(), None);
        }
        let index = lo.resolve().unwrap().index;
        assert_eq!(listen_ip(&[Interface::Index(index)], None).unwrap(), None);
        let unknown = ["hailnone0".parse::<Interface>().unwrap()];
        assert!(matches!(
            listen_ip(&unknown, None),
            Err(MulticastError::InterfaceNotFound { .. })
        ));
    }
}
