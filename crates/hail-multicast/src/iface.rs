//! Network interfaces: how a user names them and how they resolve against the host's.
//!
//! An [`Interface`] is what a user types: a name (`eth0`, `lo`), an index (`3`, or `#3` as
//! it prints), or an address of the interface (`192.168.1.20`, `::1`). [`interfaces`] lists
//! the host's interfaces and [`Interface::resolve`] finds the one meant; naming one that does
//! not exist is [`MulticastError::InterfaceNotFound`], which lists what the host has.
//!
//! ```
//! use hail_multicast::Interface;
//! use std::net::Ipv4Addr;
//!
//! assert_eq!("lo".parse::<Interface>()?, Interface::Name("lo".into()));
//! assert_eq!("3".parse::<Interface>()?, Interface::Index(3));
//! assert_eq!("127.0.0.1".parse::<Interface>()?, Interface::from(Ipv4Addr::LOCALHOST));
//! assert_eq!("::1".parse::<Interface>()?, Interface::from(std::net::Ipv6Addr::LOCALHOST));
//! // Resolution against this host's interfaces:
//! let lo = Interface::from(Ipv4Addr::LOCALHOST).resolve()?;
//! assert!(lo.addrs.contains(&Ipv4Addr::LOCALHOST.into()));
//! # Ok::<(), hail_multicast::MulticastError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::MulticastError;

/// An interface to join a group on, by address, name or index.
///
/// Parsed from text with [`FromStr`]: an IPv4 or IPv6 address is [`Interface::Addr`], a
/// decimal number (or `#` and a number) is [`Interface::Index`], anything else a valid
/// interface name is [`Interface::Name`]. `Display` prints the same forms (`127.0.0.1`, `lo`,
/// `#3`), so it parses back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interface {
    /// The interface that has this address (e.g. `127.0.0.1` for loopback). An interface
    /// named by an IPv4 address may join an IPv6 group when it also has an IPv6 address.
    Addr(IpAddr),
    /// The interface of this name (e.g. `"lo"`, `"eth0"`).
    Name(String),
    /// The interface of this index (as in `ip link`; IPv6 scope ids are indices).
    Index(u32),
}

/// Linux's longest interface name (`IFNAMSIZ` minus its terminating NUL).
const MAX_NAME_LEN: usize = 15;

impl Interface {
    /// The host's interface this names.
    ///
    /// # Errors
    /// [`MulticastError::InterfaceNotFound`] (listing the host's interfaces with their
    /// addresses) when none matches; [`MulticastError::Io`] if the host's interface table
    /// cannot be read.
    pub fn resolve(&self) -> Result<InterfaceInfo, MulticastError> {
        self.resolve_in(&interfaces()?)
    }

    /// The interface of `table` (a listing such as [`interfaces`] gives) this names: as
    /// [`resolve`](Self::resolve), against a listing taken earlier or made up (a test's).
    ///
    /// # Errors
    /// [`MulticastError::InterfaceNotFound`] (listing `table`) when none matches.
    pub fn resolve_in(&self, table: &[InterfaceInfo]) -> Result<InterfaceInfo, MulticastError> {
        match table.iter().find(|i| self.matches(i)) {
            Some(i) => Ok(i.clone()),
            None => Err(MulticastError::InterfaceNotFound {
                wanted: self.to_string(),
                available: table.to_vec(),
            }),
        }
    }

    fn matches(&self, i: &InterfaceInfo) -> bool {
        match self {
            Self::Addr(a) => i.addrs.contains(a),
            Self::Name(n) => &i.name == n,
            Self::Index(x) => i.index == *x,
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Name(n) => f.write_str(n),
            Self::Index(i) => write!(f, "#{i}"),
        }
    }
}

/// Parses an address, an index (`3` or `#3`) or a name (at most 15 bytes, no whitespace or
/// `/`, not starting with `#`). An IPv6 address with a zone (`fe80::1%eth0`) is refused: name the interface alone.
impl FromStr for Interface {
    type Err = MulticastError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| MulticastError::InvalidInterface {
            text: s.to_owned(),
            reason,
        };
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(Self::Addr(a));
        }
        let digits = s.strip_prefix('#').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits
                .parse()
                .map(Self::Index)
                .map_err(|_| invalid("index out of range"));
        }
        if s.contains('%')
            && s.split('%')
                .next()
                .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok())
        {
            return Err(invalid(
                "an address with a zone: name the interface (the part after %) alone",
            ));
        }
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(invalid("longer than 15 bytes, the longest interface name"));
        }
        if s.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(invalid("whitespace or '/' in an interface name"));
        }
        if s.starts_with('#') {
            return Err(invalid("'#' followed by anything but an index"));
        }
        Ok(Self::Name(s.to_owned()))
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

/// Text as [`FromStr`] reads it (`"eth0"`, `"3"`, `"127.0.0.1"`); text that is not a valid
/// interface becomes a name, which then fails to resolve with the host's list.
impl From<&str> for Interface {
    fn from(s: &str) -> Self {
        s.parse().unwrap_or_else(|_| Self::Name(s.to_owned()))
    }
}

/// As `From<&str>`.
impl From<String> for Interface {
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<u32> for Interface {
    fn from(i: u32) -> Self {
        Self::Index(i)
    }
}

/// One of the host's interfaces, from [`interfaces`] or [`Interface::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterfaceInfo {
    /// Its name (`lo`, `eth0`).
    pub name: String,
    /// Its index (the IPv6 scope id of its link-local addresses).
    pub index: u32,
    /// Whether it is up.
    pub up: bool,
    /// Whether it is multicast-capable (Linux's `lo` is not, yet multicast works on it when
    /// named explicitly).
    pub multicast: bool,
    /// Its IPv4 and IPv6 addresses, in the order the system lists them.
    pub addrs: Vec<IpAddr>,
}

impl InterfaceInfo {
    /// An interface as [`interfaces`] lists one, for [`Interface::resolve_in`] and
    /// [`ChannelConfig::resolve_in`](crate::ChannelConfig::resolve_in) (a listing taken
    /// elsewhere, or a test's).
    pub fn new(
        name: impl Into<String>,
        index: u32,
        up: bool,
        multicast: bool,
        addrs: Vec<IpAddr>,
    ) -> Self {
        Self {
            name: name.into(),
            index,
            up,
            multicast,
            addrs,
        }
    }

    fn has_family(&self, v4: bool) -> bool {
        self.addrs.iter().any(|a| a.is_ipv4() == v4)
    }
}

/// `lo #1 (127.0.0.1, ::1)`, or `eth1 #3 (no address, down)`.
impl fmt::Display for InterfaceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{} (", self.name, self.index)?;
        if self.addrs.is_empty() {
            f.write_str("no address")?;
        }
        for (n, a) in self.addrs.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        if !self.up {
            f.write_str(", down")?;
        }
        f.write_str(")")
    }
}

/// The host's network interfaces with their addresses, in the system's order.
///
/// # Errors
/// [`MulticastError::Io`] if the interface table cannot be read; on platforms other than
/// Unix, [`MulticastError::NoInterface`].
pub fn interfaces() -> Result<Vec<InterfaceInfo>, MulticastError> {
    let mut out: Vec<InterfaceInfo> = Vec::new();
    for row in table()? {
        let at = match out.iter().position(|i| i.index == row.index) {
            Some(at) => at,
            None => {
                out.push(InterfaceInfo {
                    name: row.name,
                    index: row.index,
                    up: row.up,
                    multicast: row.multicast,
                    addrs: Vec::new(),
                });
                out.len() - 1
            }
        };
        if let Some(a) = row.addr
            && !out[at].addrs.contains(&a)
        {
            out[at].addrs.push(a);
        }
    }
    Ok(out)
}

/// An interface a channel joins its group on and sends from, as resolved for the group's
/// family: from [`Channel::interfaces`](crate::Channel::interfaces) (what it joined) and
/// [`ChannelConfig::resolve`](crate::ChannelConfig::resolve) (what it would join now).
/// Two that differ mean the host's interfaces changed under the channel (an interface
/// came or went, or its IPv4 address changed): a channel bound anew follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinedInterface {
    /// Its name (`eth0`).
    pub name: String,
    /// Its index (a new one when the interface was removed and made again).
    pub index: u32,
    /// The IPv4 address an IPv4 group is joined and sent from (none for an IPv6 group).
    pub v4: Option<Ipv4Addr>,
}

/// One row of the host's interface table (one per address, and one without).
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
    // An interface's link-layer row (AF_PACKET, AF_LINK) carries its index: read it there,
    // and ask the kernel by name (a socket and an ioctl each time) only for an interface
    // without one. Asking for every row made a listing cost about 9 such calls here, and a
    // device's start makes several listings. One pass, into the rows alone (collecting
    // the listing's entries first, about 600 bytes each, left the heap fragmented: 14 KB
    // more per idle device in `discovery/memory-idle-device`).
    let mut rows = Vec::new();
    let mut known: Vec<(String, u32)> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let link = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| u32::try_from(l.ifindex()).ok())
            .filter(|&i| i != 0);
        if let Some(index) = link {
            known.push((ifa.interface_name.clone(), index));
        }
        let addr = ifa.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        });
        rows.push(Row {
            index: link.unwrap_or(0),
            up: ifa.flags.contains(InterfaceFlags::IFF_UP),
            multicast: ifa.flags.contains(InterfaceFlags::IFF_MULTICAST),
            addr,
            name: ifa.interface_name,
        });
    }
    rows.retain_mut(|row| {
        if row.index != 0 {
            return true;
        }
        let found = known
            .iter()
            .find(|(name, _)| *name == row.name)
            .map(|&(_, index)| index);
        match found.or_else(|| {
            let index = if_nametoindex(row.name.as_str()).ok()?;
            known.push((row.name.clone(), index));
            Some(index)
        }) {
            Some(index) => {
                row.index = index;
                true
            }
            None => false,
        }
    });
    Ok(rows)
}

#[cfg(not(unix))]
fn table() -> Result<Vec<Row>, MulticastError> {
    Err(MulticastError::NoInterface)
}

/// Every address of this host in the listing `all` (to recognise this channel's own
/// datagrams).
pub(crate) fn local_addrs(all: &[InterfaceInfo]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = all.iter().flat_map(|i| i.addrs.iter().copied()).collect();
    v.push(Ipv4Addr::LOCALHOST.into());
    v.push(Ipv6Addr::LOCALHOST.into());
    v.sort();
    v.dedup();
    v
}

/// Resolves the requested interfaces for a group of family `v4` against the host's
/// interfaces `all`; an empty request means every up, multicast-capable interface with an
/// address of that family.
pub(crate) fn resolve(
    requested: &[Interface],
    v4: bool,
    all: &[InterfaceInfo],
) -> Result<Vec<JoinedInterface>, MulticastError> {
    let to_resolved = |i: &InterfaceInfo, prefer: Option<&IpAddr>| JoinedInterface {
        name: i.name.clone(),
        index: i.index,
        v4: prefer
            .filter(|a| a.is_ipv4())
            .or_else(|| i.addrs.iter().find(|a| a.is_ipv4()))
            .and_then(|a| match a {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            }),
    };
    let mut out: Vec<JoinedInterface> = Vec::new();
    let mut push = |r: JoinedInterface| {
        if !out.iter().any(|o| o.index == r.index) {
            out.push(r);
        }
    };
    if requested.is_empty() {
        for i in all
            .iter()
            .filter(|i| i.up && i.multicast && i.has_family(v4))
        {
            push(to_resolved(i, None));
        }
        return if out.is_empty() {
            Err(MulticastError::NoInterface)
        } else {
            Ok(out)
        };
    }
    for want in requested {
        let Some(found) = all.iter().find(|i| want.matches(i)) else {
            return Err(MulticastError::InterfaceNotFound {
                wanted: want.to_string(),
                available: all.to_vec(),
            });
        };
        if !found.has_family(v4) {
            return Err(MulticastError::InterfaceLacksFamily {
                interface: found.name.clone(),
                ipv6: !v4,
            });
        }
        let prefer = match want {
            Interface::Addr(a) => Some(a),
            _ => None,
        };
        push(to_resolved(found, prefer));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The indexes read from the link-layer rows are the kernel's: the same as asking by
    /// name, for every interface of this host (loopback at least); every address the
    /// host lists is in the local addresses.
    #[cfg(unix)]
    #[test]
    fn indexes_from_link_rows_are_the_kernels() {
        let all = interfaces().unwrap();
        assert!(
            all.iter()
                .any(|i| i.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)))
        );
        for i in &all {
            assert_eq!(
                nix::net::if_::if_nametoindex(i.name.as_str()).unwrap(),
                i.index,
                "{}",
                i.name
            );
        }
        let local = local_addrs(&all);
        for i in &all {
            for a in &i.addrs {
                assert!(local.contains(a), "{a}");
            }
        }
    }

    /// Resolution against this host's interfaces.
    fn resolve(requested: &[Interface], v4: bool) -> Result<Vec<JoinedInterface>, MulticastError> {
        super::resolve(requested, v4, &interfaces()?)
    }

    fn lo() -> InterfaceInfo {
        Interface::from(Ipv4Addr::LOCALHOST)
            .resolve()
            .expect("loopback has 127.0.0.1")
    }

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
        // The public form agrees.
        let info = lo();
        assert_eq!(
            (info.name.as_str(), info.index),
            (by_addr[0].name.as_str(), by_addr[0].index)
        );
        assert_eq!(Interface::Name(info.name.clone()).resolve().unwrap(), info);
        assert_eq!(Interface::Index(info.index).resolve().unwrap(), info);
    }

    #[test]
    fn an_ipv6_group_on_an_interface_named_by_its_ipv4_address() {
        let info = lo();
        let got = resolve(&[Ipv4Addr::LOCALHOST.into()], false);
        if info.has_family(false) {
            let got = got.expect("lo has an IPv6 address");
            assert_eq!(
                (got[0].index, got[0].v4),
                (info.index, Some(Ipv4Addr::LOCALHOST))
            );
        } else {
            assert!(matches!(
                got,
                Err(MulticastError::InterfaceLacksFamily { ipv6: true, .. })
            ));
        }
    }

    #[test]
    fn unknown_interfaces_are_typed_errors_that_list_the_hosts() {
        let err = resolve(&["no-such-if0".into()], true).unwrap_err();
        let MulticastError::InterfaceNotFound { wanted, available } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(wanted, "no-such-if0");
        assert!(available.contains(&lo()));
        let text = err.to_string();
        assert!(text.contains("no-such-if0"), "{text}");
        assert!(text.contains(&format!("{} #", lo().name)), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
        // Unknown addresses and indices too.
        let err = resolve(&[Interface::Addr("192.0.2.77".parse().unwrap())], true).unwrap_err();
        assert!(
            matches!(err, MulticastError::InterfaceNotFound { ref wanted, .. } if wanted == "192.0.2.77")
        );
        let err = Interface::Index(u32::MAX).resolve().unwrap_err();
        assert!(
            matches!(err, MulticastError::InterfaceNotFound { ref wanted, .. } if wanted == "#4294967295")
        );
    }

    #[test]
    fn text_parses_to_the_kind_it_names() {
        let p = |s: &str| s.parse::<Interface>();
        assert_eq!(p("eth0").unwrap(), Interface::Name("eth0".into()));
        assert_eq!(p("enp0s31f6").unwrap(), Interface::Name("enp0s31f6".into()));
        assert_eq!(p("eth0:1").unwrap(), Interface::Name("eth0:1".into()));
        assert_eq!(p("3").unwrap(), Interface::Index(3));
        assert_eq!(p("#3").unwrap(), Interface::Index(3));
        assert_eq!(
            p("10.0.0.5").unwrap(),
            Interface::Addr("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            p("fe80::1").unwrap(),
            Interface::Addr("fe80::1".parse().unwrap())
        );
        for bad in [
            "",
            "#",
            "a b",
            "a/b",
            "sixteen-bytes-xx",
            "99999999999",
            "fe80::1%eth0",
        ] {
            assert!(
                matches!(p(bad), Err(MulticastError::InvalidInterface { ref text, .. }) if text == bad),
                "{bad:?} -> {:?}",
                p(bad)
            );
        }
        // Display parses back.
        for i in [
            Interface::Name("lo".into()),
            Interface::Index(7),
            Interface::Addr("::1".parse().unwrap()),
            Interface::Addr("127.0.0.1".parse().unwrap()),
        ] {
            assert_eq!(p(&i.to_string()).unwrap(), i);
        }
        // `From<&str>` reads text the same way, and keeps invalid text as a name.
        assert_eq!(
            Interface::from("127.0.0.1"),
            Interface::from(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(Interface::from("2"), Interface::Index(2));
        assert_eq!(Interface::from("a b"), Interface::Name("a b".into()));
        assert_eq!(
            Interface::from(String::from("lo")),
            Interface::Name("lo".into())
        );
    }

    #[test]
    fn host_interfaces_are_listed_once_each_with_their_addresses() {
        let all = interfaces().unwrap();
        let mut indices: Vec<u32> = all.iter().map(|i| i.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), all.len(), "one entry per interface: {all:?}");
        let lo = lo();
        assert!(lo.up);
        let text = lo.to_string();
        assert!(
            text.starts_with(&format!("{} #{} (", lo.name, lo.index)),
            "{text}"
        );
        assert!(text.contains("127.0.0.1"), "{text}");
    }
}
