//! Namespaces, veth pairs and a bridged LAN, removed on drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Error, ip, nft, run, runs};

/// The network namespaces one test (or one netsim run) made, named `<prefix><suffix>`.
///
/// `Drop` kills every process still running in them (never this process) and deletes them,
/// in reverse order, whether the test passed, failed or panicked; the links inside go with
/// them.
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    /// An empty guard for namespaces named `<prefix>...`, after checking that namespaces can
    /// be made here: [`Error::Unavailable`] when not root, without `ip`, or when `ip netns
    /// add` fails (a probe namespace `<prefix>probe` is added and deleted).
    pub fn new(prefix: impl Into<String>) -> Result<Self, Error> {
        let prefix = prefix.into();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if effective_uid(&status) != Some(0) {
            return Err(Error::Unavailable(
                "not root (network namespaces, veth and nftables need root)".into(),
            ));
        }
        if !runs("ip", &["-V"]) {
            return Err(Error::Unavailable(
                "no `ip` command (install iproute2)".into(),
            ));
        }
        let probe = format!("{prefix}probe");
        if let Err(e) = ip(&["netns", "add", &probe]) {
            return Err(Error::Unavailable(format!(
                "`ip netns add` fails here ({e})"
            )));
        }
        remove(&probe);
        Ok(Self {
            prefix,
            names: Vec::new(),
        })
    }

    /// [`Namespaces::new`] with the prefix `hail-<pid>-<tag>-`: distinct per test process
    /// and per test.
    pub fn for_test(tag: &str) -> Result<Self, Error> {
        Self::new(format!("hail-{}-{tag}-", std::process::id()))
    }

    /// `self`, once `nft` is known to work inside a namespace here ([`Error::Unavailable`]
    /// when `nft` is missing or refused).
    pub fn require_nft(self) -> Result<Self, Error> {
        if !runs("nft", &["--version"]) {
            return Err(Error::Unavailable(
                "no `nft` command (install nftables)".into(),
            ));
        }
        let probe = format!("{}probe", self.prefix);
        ip(&["netns", "add", &probe])?;
        let works = nft(&probe, "table ip hail_probe {}\n");
        remove(&probe);
        match works {
            Ok(()) => Ok(self),
            Err(e) => Err(Error::Unavailable(format!(
                "nftables does not work inside a network namespace here ({e})"
            ))),
        }
    }

    /// Adds namespace `<prefix><suffix>` with `lo` up; returns its name.
    pub fn add(&mut self, suffix: &str) -> Result<String, Error> {
        let name = format!("{}{suffix}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespaces made so far, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            remove(name);
        }
    }
}

/// Kills every process in namespace `ns` (except this one) with SIGKILL, then deletes it.
/// Best effort, quiet: it runs on every exit path.
pub fn remove(ns: &str) {
    let me = std::process::id();
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if pid != me {
                kill(pid);
            }
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

#[cfg(unix)]
fn kill(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill(_pid: u32) {}

/// Every namespace as `ip netns list` names them (none if `ip` fails).
pub fn list() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// [`remove`]s every namespace whose name starts with `prefix` (a run's, after a signal;
/// or a dead run's, left behind).
pub fn remove_all(prefix: &str) {
    for ns in list().iter().filter(|n| n.starts_with(prefix)) {
        remove(ns);
    }
}

/// A veth pair from interface `a.1` in namespace `a.0` to `b.1` in `b.0`, both ends up.
pub fn veth(a: (&str, &str), b: (&str, &str)) -> Result<(), Error> {
    let ((na, ia), (nb, ib)) = (a, b);
    ip(&[
        "-n", na, "link", "add", ia, "type", "veth", "peer", "name", ib, "netns", nb,
    ])?;
    ip(&["-n", na, "link", "set", ia, "up"])?;
    ip(&["-n", nb, "link", "set", ib, "up"])
}

/// Two namespaces `<prefix>a` and `<prefix>b` joined by a veth pair (`v0` in a, `v1` in b)
/// that carries only IPv6 link-local addresses, `fe80::a` and `fe80::b` (no duplicate
/// address detection, so they are usable at once): an IPv6-only link. Returns the two
/// namespace names.
pub fn link_local_pair(namespaces: &mut Namespaces) -> Result<(String, String), Error> {
    let a = namespaces.add("a")?;
    let b = namespaces.add("b")?;
    veth((&a, "v0"), (&b, "v1"))?;
    ip(&["-n", &a, "addr", "add", "fe80::a/64", "dev", "v0", "nodad"])?;
    ip(&["-n", &b, "addr", "add", "fe80::b/64", "dev", "v1", "nodad"])?;
    Ok((a, b))
}

/// The address families of a [`Lan`]'s hosts on their `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 only: `<subnet>.<i+1>/24` and the route of 224.0.0.0/4 (the kernel still gives
    /// `eth0` its own IPv6 link-local address, as on any Linux host).
    V4,
    /// IPv6 only: `fe80::<i+1>/64` (the kernel makes no link-local address of its own) and,
    /// with a ULA, [`host_ula`]`/64`; no IPv4 address on `eth0`.
    V6,
    /// Both: the addresses of [`Family::V4`] and of [`Family::V6`].
    Dual,
}

impl Family {
    /// Whether hosts get an IPv4 address.
    pub fn has_v4(self) -> bool {
        matches!(self, Self::V4 | Self::Dual)
    }

    /// Whether hosts get the IPv6 addresses of this crate (link-local, and the ULA if
    /// asked for).
    pub fn has_v6(self) -> bool {
        matches!(self, Self::V6 | Self::Dual)
    }
}

/// Hosts on one Ethernet segment:
///
/// ```text
///   <prefix>br:            br0 (mcast_snooping 0) -- v0 v1 v2 ... (veth ends)
///                                                    |  |  |
///   <prefix>h0, h1, ...:                           eth0, lo
/// ```
///
/// Host `i`'s `eth0` has the addresses of its [`Family`]: `<subnet>.<i+1>/24` (IPv4; each
/// host then routes multicast, 224.0.0.0/4, out of `eth0` whatever a socket says),
/// `fe80::<i+1>/64` and optionally the ULA [`host_ula`] (IPv6, both without duplicate
/// address detection, so they are usable at once; the kernel adds no link-local address of
/// its own). The bridge lives in a namespace of its own, so nothing touches the machine's
/// interfaces. Dropping the `Lan` drops its [`Namespaces`].
#[derive(Debug)]
pub struct Lan {
    namespaces: Namespaces,
    bridge: String,
    hosts: Vec<String>,
    subnet: [u8; 3],
    family: Family,
    ula: bool,
}

impl Lan {
    /// The most hosts one LAN holds: 254 (one /24).
    pub const MAX_HOSTS: usize = 254;

    /// An IPv4-only LAN ([`Lan::create_with`] with [`Family::V4`]).
    ///
    /// # Panics
    /// If `hosts` is over [`Lan::MAX_HOSTS`].
    pub fn create(namespaces: Namespaces, subnet: [u8; 3], hosts: usize) -> Result<Self, Error> {
        Self::create_with(namespaces, subnet, hosts, Family::V4, false)
    }

    /// Makes the bridge namespace and `hosts` host namespaces in `namespaces`, host `i`
    /// with the addresses of `family` (see [`Lan`]); `ula` adds the IPv6 ULA where the
    /// family has IPv6 (ignored for [`Family::V4`]).
    ///
    /// # Panics
    /// If `hosts` is over [`Lan::MAX_HOSTS`].
    pub fn create_with(
        mut namespaces: Namespaces,
        subnet: [u8; 3],
        hosts: usize,
        family: Family,
        ula: bool,
    ) -> Result<Self, Error> {
        assert!(
            hosts <= Self::MAX_HOSTS,
            "at most {} hosts",
            Self::MAX_HOSTS
        );
        let br = namespaces.add("br")?;
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut names = Vec::with_capacity(hosts);
        for i in 0..hosts {
            let h = namespaces.add(&format!("h{i}"))?;
            let port = format!("v{i}");
            if family.has_v6() {
                // Down until the kernel is told to make no link-local address of its own
                // (which would wait for duplicate address detection): ours only.
                ip(&[
                    "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &h,
                ])?;
                ip(&["-n", &h, "link", "set", "eth0", "addrgenmode", "none"])?;
                ip(&["-n", &br, "link", "set", &port, "up"])?;
                ip(&["-n", &h, "link", "set", "eth0", "up"])?;
                let ll = format!("{}/64", host_link_local(i));
                ip(&["-n", &h, "addr", "add", &ll, "dev", "eth0", "nodad"])?;
                if ula {
                    let ula = format!("{}/64", host_ula(subnet, i));
                    ip(&["-n", &h, "addr", "add", &ula, "dev", "eth0", "nodad"])?;
                }
            } else {
                veth((&br, &port), (&h, "eth0"))?;
            }
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            if family.has_v4() {
                let addr = format!("{}/24", host_ip(subnet, i));
                ip(&["-n", &h, "addr", "add", &addr, "dev", "eth0"])?;
                ip(&["-n", &h, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            }
            names.push(h);
        }
        Ok(Self {
            namespaces,
            bridge: br,
            hosts: names,
            subnet,
            family,
            ula: ula && family.has_v6(),
        })
    }

    /// Host `i`'s namespace.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Every host's namespace, in order.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Host `i`'s IPv4 address on `eth0`: `<subnet>.<i+1>` (only assigned when the
    /// family has IPv4).
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        host_ip(self.subnet, i)
    }

    /// Every address host `i` has on `eth0` (of this crate's making): IPv4, then IPv6
    /// link-local, then the ULA, as the family and `ula` have them.
    pub fn host_addrs(&self, i: usize) -> Vec<IpAddr> {
        let mut out = Vec::with_capacity(3);
        if self.family.has_v4() {
            out.push(IpAddr::V4(self.host_ip(i)));
        }
        if self.family.has_v6() {
            out.push(IpAddr::V6(host_link_local(i)));
            if self.ula {
                out.push(IpAddr::V6(host_ula(self.subnet, i)));
            }
        }
        out
    }

    /// The address families of the hosts.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Whether IPv6 hosts have the ULA too.
    pub fn has_ula(&self) -> bool {
        self.ula
    }

    /// The bridge's namespace.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The namespaces guard (its prefix, every name).
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }
}

/// Address `i` of a LAN on `subnet`: `<subnet>.<i+1>`.
///
/// # Panics
/// If `i` is [`Lan::MAX_HOSTS`] or more.
pub fn host_ip(subnet: [u8; 3], i: usize) -> Ipv4Addr {
    let [a, b, c] = subnet;
    Ipv4Addr::new(a, b, c, last_byte(i))
}

/// IPv6 link-local address `i` of a [`Lan`]: `fe80::<i+1>`.
///
/// # Panics
/// If `i` is [`Lan::MAX_HOSTS`] or more.
pub fn host_link_local(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(last_byte(i)))
}

/// IPv6 unique local address `i` of a LAN on `subnet` `[a, b, c]`: `fd00:0:a:bbcc::<i+1>`
/// (the subnet's bytes in hex; 10.77.0 gives `fd00:0:a:4d00::`), one /64 per subnet.
///
/// # Panics
/// If `i` is [`Lan::MAX_HOSTS`] or more.
pub fn host_ula(subnet: [u8; 3], i: usize) -> Ipv6Addr {
    let [a, b, c] = subnet;
    Ipv6Addr::new(
        0xfd00,
        0,
        u16::from(a),
        u16::from_be_bytes([b, c]),
        0,
        0,
        0,
        u16::from(last_byte(i)),
    )
}

/// `i + 1`, the last byte of host `i`'s addresses.
fn last_byte(i: usize) -> u8 {
    u8::try_from(i + 1)
        .ok()
        .filter(|l| *l < 255)
        .expect("at most Lan::MAX_HOSTS hosts")
}

/// Runs `f` on a new thread that has entered namespace `ns` (`setns`), so every socket it
/// makes lives there. Panics on that thread if the namespace cannot be entered.
#[cfg(target_os = "linux")]
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("namespace file");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// The effective uid in the text of `/proc/self/status`.
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrSkip;

    #[test]
    fn effective_uid_is_the_second_uid() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name: x\n"), None);
    }

    #[test]
    fn host_addresses() {
        assert_eq!(host_ip([10, 77, 0], 0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(
            host_ip([10, 78, 0], Lan::MAX_HOSTS - 1),
            Ipv4Addr::new(10, 78, 0, 254)
        );
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn a_lan_holds_one_slash_24() {
        let _ = host_ip([10, 77, 0], Lan::MAX_HOSTS);
    }

    #[test]
    fn ipv6_host_addresses() {
        assert_eq!(host_link_local(0), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            host_link_local(Lan::MAX_HOSTS - 1),
            "fe80::fe".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            host_ula([10, 77, 0], 0),
            "fd00:0:a:4d00::1".parse::<Ipv6Addr>().unwrap()
        );
        assert!(host_ula([10, 77, 0], 4).is_unique_local());
        assert!(host_link_local(4).is_unicast_link_local());
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn an_ipv6_lan_holds_as_many() {
        let _ = host_link_local(Lan::MAX_HOSTS);
    }

    /// The index of `eth0` in namespace `ns` (`ip -o link` prints `<index>: eth0@...`).
    #[cfg(target_os = "linux")]
    fn eth0_index(ns: &str) -> u32 {
        let shown = run("ip", &["-n", ns, "-o", "link", "show", "dev", "eth0"]).unwrap();
        shown.split(':').next().unwrap().trim().parse().unwrap()
    }

    /// An IPv6-only LAN: only this crate's addresses on `eth0` (no IPv4, nothing left
    /// tentative by duplicate address detection, no link-local address of the kernel's),
    /// IPv6 multicast on a link-scoped group and unicast to the ULA across the bridge, and
    /// `impairment` drops IPv6 too.
    #[test]
    #[cfg(target_os = "linux")]
    fn an_ipv6_only_lan_carries_ipv6_and_its_loss_rules_drop_it() {
        use std::net::{SocketAddr, SocketAddrV6, UdpSocket};
        use std::time::Duration;

        const SUBNET: [u8; 3] = [10, 81, 0];
        let Some(lan) = Namespaces::for_test("lan6")
            .and_then(Namespaces::require_nft)
            .and_then(|ns| Lan::create_with(ns, SUBNET, 2, Family::V6, true))
            .or_skip()
        else {
            return;
        };
        for i in 0..2 {
            let shown = run(
                "ip",
                &["-n", lan.host(i), "-o", "addr", "show", "dev", "eth0"],
            )
            .unwrap();
            assert!(!shown.contains(" inet "), "an IPv4 address: {shown}");
            assert!(!shown.contains("tentative"), "DAD still running: {shown}");
            assert_eq!(shown.matches(" inet6 ").count(), 2, "{shown}");
            assert!(shown.contains(&format!(" inet6 {}/64 ", host_link_local(i))));
            assert!(shown.contains(&format!(" inet6 {}/64 ", host_ula(SUBNET, i))));
        }
        assert_eq!(
            lan.host_addrs(1),
            [
                IpAddr::V6(host_link_local(1)),
                IpAddr::V6(host_ula(SUBNET, 1))
            ]
        );
        assert!(lan.has_ula() && lan.family() == Family::V6);

        let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x4d, 0x99);
        let (if0, if1) = (eth0_index(lan.host(0)), eth0_index(lan.host(1)));
        // Sockets stay in the namespace they were made in, whichever thread uses them.
        let rx = in_netns(lan.host(1), move || {
            let s = UdpSocket::bind("[::]:47799").unwrap();
            s.join_multicast_v6(&group, if1).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .join()
        .unwrap();
        let tx = in_netns(lan.host(0), || UdpSocket::bind("[::]:0").unwrap())
            .join()
            .unwrap();
        // The link-scoped group on host 0's eth0 (the scope id picks it; hop limit 1, the
        // default for multicast), and host 1's ULA.
        let to_group = SocketAddr::V6(SocketAddrV6::new(group, 47_799, 0, if0));
        let to_ula = SocketAddr::new(IpAddr::V6(host_ula(SUBNET, 1)), 47_799);
        let received = |rx: &UdpSocket| -> Vec<(Vec<u8>, IpAddr)> {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while let Ok((n, from)) = rx.recv_from(&mut buf) {
                got.push((buf[..n].to_vec(), from.ip()));
                if got.len() == 2 {
                    break;
                }
            }
            got.sort();
            got
        };
        tx.send_to(b"group", to_group).unwrap();
        tx.send_to(b"ula", to_ula).unwrap();
        assert_eq!(
            received(&rx),
            [
                (b"group".to_vec(), IpAddr::V6(host_link_local(0))),
                (b"ula".to_vec(), IpAddr::V6(host_ula(SUBNET, 0)))
            ]
        );

        // Every packet arriving at host 1 dropped: IPv6 included.
        nft(lan.host(1), &crate::impairment(100, 0, None)).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        tx.send_to(b"group", to_group).unwrap();
        tx.send_to(b"ula", to_ula).unwrap();
        assert_eq!(received(&rx), [], "the ip6 table dropped nothing");
        // Lifted: it arrives again.
        nft(lan.host(1), &crate::impairment(0, 0, None)).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tx.send_to(b"ula", to_ula).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ula");
    }

    #[test]
    fn families() {
        assert!(Family::V4.has_v4() && !Family::V4.has_v6());
        assert!(!Family::V6.has_v4() && Family::V6.has_v6());
        assert!(Family::Dual.has_v4() && Family::Dual.has_v6());
    }
}
