//! Network interfaces: how a user names them and how they resolve.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::MulticastError;

/// An interface to join the group on, by address, name or index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interface {
    /// The interface that has this address (e.g. `127.0.0.1` for loopback).
    Addr(IpAddr),
    /// The interface of this name (e.g. `"lo"`, `"eth0"`).
    Name(String),
    /// The interface of this index (as in `ip link`; IPv6 scope ids are indices).
    Index(u32),
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Name(n) => write!(f, "{n:?}"),
            Self::Index(i) => write!(f, "#{i}"),
        }
    }
}

impl From<IpAddr> for Interface {
    fn from(a: IpAddr) -> Self {
        Self::Addr(a)
    }
}

impl From<Ipv4Addr> for Interface {
    fn from(a: Ipv4Addr) -> Self {
        Self::Addr(a.into())
    }
}

impl From<Ipv6Addr> for Interface {
    fn from(a: Ipv6Addr) -> Self {
        Self::Addr(a.into())
    }
}

impl From<&str> for Interface {
    fn from(n: &str) -> Self {
        Self::Name(n.to_owned())
    }
}

impl From<u32> for Interface {
    fn from(i: u32) -> Self {
        Self::Index(i)
    }
}

/// An interface resolved for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) name: String,
    pub(crate) index: u32,
    /// An IPv4 address of the interface (IPv4 groups only).
    pub(crate) v4: Option<Ipv4Addr>,
}

/// One row of the host's interface table.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    index: u32,
    up: bool,
    multicast: bool,
    addr: Option<IpAddr>,
}

#[cfg(unix)]
fn table() -> Result<Vec<Row>, MulticastError> {
    use nix::net::if_::{InterfaceFlags, if_nametoindex};
    let mut rows = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let Ok(index) = if_nametoindex(ifa.interface_name.as_str()) else {
            continue;
        };
        let addr = ifa.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        });
        rows.push(Row {
            name: ifa.interface_name.clone(),
            index,
            up: ifa.flags.contains(InterfaceFlags::IFF_UP),
            multicast: ifa.flags.contains(InterfaceFlags::IFF_MULTICAST),
            addr,
        });
    }
    Ok(rows)
}

#[cfg(not(unix))]
fn table() -> Result<Vec<Row>, MulticastError> {
    Err(MulticastError::NoInterface)
}

/// Every address of this host (to recognise this channel's own datagrams).
pub(crate) fn local_addrs() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = table()
        .map(|t| t.into_iter().filter_map(|r| r.addr).collect())
        .unwrap_or_default();
    v.push(Ipv4Addr::LOCALHOST.into());
    v.push(Ipv6Addr::LOCALHOST.into());
    v.sort();
    v.dedup();
    v
}

/// Resolves the requested interfaces for a group of family `v4`; an empty request means
/// every up, multicast-capable interface with an address of that family.
pub(crate) fn resolve(requested: &[Interface], v4: bool) -> Result<Vec<Resolved>, MulticastError> {
    let rows = table()?;
    let of_family = |r: &Row| r.addr.is_some_and(|a| a.is_ipv4() == v4);
    let to_resolved = |r: &Row| Resolved {
        name: r.name.clone(),
        index: r.index,
        v4: match r.addr {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        },
    };
    let mut out: Vec<Resolved> = Vec::new();
    let mut push = |r: Resolved| {
        if !out.iter().any(|o| o.index == r.index) {
            out.push(r);
        }
    };
    if requested.is_empty() {
        for r in rows.iter().filter(|r| r.up && r.multicast && of_family(r)) {
            push(to_resolved(r));
        }
        return if out.is_empty() {
            Err(MulticastError::NoInterface)
        } else {
            Ok(out)
        };
    }
    for want in requested {
        let found = rows.iter().filter(|r| of_family(r)).find(|r| match want {
            Interface::Addr(a) => r.addr == Some(*a),
            Interface::Name(n) => &r.name == n,
            Interface::Index(i) => r.index == *i,
        });
        match found {
            Some(r) => push(to_resolved(r)),
            None => return Err(MulticastError::InterfaceNotFound(want.to_string())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_by_address_name_and_index() {
        let by_addr = resolve(&[Ipv4Addr::LOCALHOST.into()], true).expect("lo has 127.0.0.1");
        assert_eq!(by_addr.len(), 1);
        assert_eq!(by_addr[0].v4, Some(Ipv4Addr::LOCALHOST));
        let by_name = resolve(&[Interface::Name(by_addr[0].name.clone())], true).unwrap();
        let by_index = resolve(&[Interface::Index(by_addr[0].index)], true).unwrap();
        assert_eq!(by_name, by_addr);
        assert_eq!(by_index, by_addr);
        // Listed twice: joined once.
        let twice = resolve(&[Ipv4Addr::LOCALHOST.into(), by_addr[0].index.into()], true).unwrap();
        assert_eq!(twice.len(), 1);
    }

    #[test]
    fn unknown_interfaces_are_typed_errors() {
        let err = resolve(&["no-such-if0".into()], true).unwrap_err();
        assert!(
            matches!(err, MulticastError::InterfaceNotFound(ref n) if n.contains("no-such-if0"))
        );
        let err = resolve(&[Interface::Addr("192.0.2.77".parse().unwrap())], true).unwrap_err();
        assert!(matches!(err, MulticastError::InterfaceNotFound(_)));
        // 127.0.0.1 is not an IPv6 interface address.
        assert!(resolve(&[Ipv4Addr::LOCALHOST.into()], false).is_err());
    }
}
