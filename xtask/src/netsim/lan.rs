//! The simulated LAN: namespaces on a bridge (`hail_testsupport::Lan`), loss and
//! duplication per host, partitions, cleanup after signals and dead runs, and `ss`.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use anyhow::Context;
use hail_testsupport::{self as support, Namespaces, impairment, nft};

use crate::cmd;

/// Every namespace name of every run starts with this, then the pid of the run.
pub(super) const PREFIX: &str = "hnsim";
/// The LAN's /24: host `i` is 10.77.0.<i+1> (and, with IPv6, fe80::<i+1>, with a ULA
/// fd00:0:a:4d00::<i+1>).
const SUBNET: [u8; 3] = [10, 77, 0];
/// Held while a device starts, and by the signal thread from a signal to the exit, so no
/// device can start in a namespace that is being removed.
pub(super) static SPAWNING: Mutex<()> = Mutex::new(());

/// The namespaces guard for a run with namespace prefix `prefix`, or why netsim cannot run
/// here (not root, no `ip`, `ss` or `nft`, namespaces or nftables refused).
pub(super) fn open(prefix: &str) -> anyhow::Result<Result<Namespaces, String>> {
    let checked = Namespaces::new(prefix).and_then(|ns| {
        if support::runs("ss", &["-V"]) {
            ns.require_nft()
        } else {
            Err(support::Error::Unavailable(
                "no `ss` command (install iproute2)".into(),
            ))
        }
    });
    match checked {
        Ok(ns) => Ok(Ok(ns)),
        Err(support::Error::Unavailable(why)) => Ok(Err(why)),
        Err(e) => Err(e.into()),
    }
}

/// The address families one host of a mixed LAN has on its `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stack {
    /// IPv4 only (its link-local address removed).
    V4,
    /// IPv6 link-local only (its IPv4 address removed).
    V6,
    /// Both.
    Dual,
}

impl Stack {
    /// Host `i`'s on a mixed LAN: IPv4-only, IPv6-only and dual-stack in turn.
    pub(super) fn of_host(i: usize) -> Self {
        [Self::V4, Self::V6, Self::Dual][i % 3]
    }

    /// Whether devices on hosts of these stacks share a family (and so a default group).
    pub(super) fn meets(self, other: Self) -> bool {
        self == Self::Dual || other == Self::Dual || self == other
    }
}

/// The hosts of one run on their bridge, with the loss and duplication each is set to;
/// dropping it removes the namespaces and kills what runs inside.
#[derive(Debug)]
pub(super) struct Lan {
    net: support::Lan,
    /// (loss, dup) each host is set to now.
    impairment: Vec<(u8, u8)>,
    /// On a mixed LAN, each host's families ([`Stack::of_host`]); else `None` (every host
    /// has the LAN's).
    stacks: Option<Vec<Stack>>,
}

impl Lan {
    /// `n` hosts with the addresses of `family` (and the IPv6 ULA with `ula`).
    pub(super) fn create(
        namespaces: Namespaces,
        n: usize,
        family: support::Family,
        ula: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            net: support::Lan::create_with(namespaces, SUBNET, n, family, ula)?,
            impairment: vec![(0, 0); n],
            stacks: None,
        })
    }

    /// `n` dual-stack hosts whose addresses are then cut down to [`Stack::of_host`]'s.
    pub(super) fn create_mixed(namespaces: Namespaces, n: usize) -> anyhow::Result<Self> {
        let mut lan = Self::create(namespaces, n, support::Family::Dual, false)?;
        let stacks: Vec<Stack> = (0..n).map(Stack::of_host).collect();
        for (i, stack) in stacks.iter().enumerate() {
            let gone = match stack {
                Stack::V4 => format!("{}/64", support::host_link_local(i)),
                Stack::V6 => format!("{}/24", lan.net.host_ip(i)),
                Stack::Dual => continue,
            };
            support::ip(&["-n", lan.host(i), "addr", "del", &gone, "dev", "eth0"])?;
        }
        lan.stacks = Some(stacks);
        Ok(lan)
    }

    /// On a mixed LAN, each host's families.
    pub(super) fn stacks(&self) -> Option<&[Stack]> {
        self.stacks.as_deref()
    }

    /// Every address of host `i` (IPv4, IPv6 link-local, ULA, as the LAN has them).
    pub(super) fn addrs(&self, i: usize) -> Vec<IpAddr> {
        let all = self.net.host_addrs(i);
        match self.stacks.as_ref().map(|s| s[i]) {
            Some(Stack::V4) => all.into_iter().filter(IpAddr::is_ipv4).collect(),
            Some(Stack::V6) => all.into_iter().filter(IpAddr::is_ipv6).collect(),
            Some(Stack::Dual) | None => all,
        }
    }

    /// The address that names host `i`'s interface to `hail --interface`: its IPv4
    /// address for an IPv4 group, its link-local one for an IPv6 group (the veth, either
    /// way; never a name, which could be another interface's).
    pub(super) fn interface(&self, i: usize, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(support::host_link_local(i))
        } else {
            IpAddr::V4(self.net.host_ip(i))
        }
    }

    /// Host `i`'s namespace.
    pub(super) fn host(&self, i: usize) -> &str {
        self.net.host(i)
    }

    /// Sets hosts `0..hosts` to `loss` % loss on input and `dup` % duplication on output
    /// (no duplication without loss).
    pub(super) fn impair(&mut self, hosts: usize, loss: u8, dup: u8) -> anyhow::Result<()> {
        let dup = if loss == 0 { 0 } else { dup };
        for i in 0..hosts {
            if self.impairment[i] != (loss, dup) {
                nft(self.net.host(i), &impairment(loss, dup, None))?;
                self.impairment[i] = (loss, dup);
            }
        }
        Ok(())
    }

    /// Host `i` drops every packet from `from`, IPv4 or IPv6 (an empty list lifts the
    /// cut).
    pub(super) fn cut(&self, i: usize, from: &[IpAddr]) -> anyhow::Result<()> {
        Ok(nft(self.host(i), &cut_rules(from))?)
    }

    /// Host `i` is cut off entirely (lifted by [`Lan::cut`] with no addresses).
    pub(super) fn isolate(&self, i: usize) -> anyhow::Result<()> {
        Ok(nft(self.host(i), &isolate_rules())?)
    }

    /// The (local, peer) ends of host `i`'s TCP connections in `state` (`ss` names).
    pub(super) fn tcp(&self, i: usize, state: &str) -> Result<Vec<(End, End)>, String> {
        let out = cmd::stdout(Command::new("ip").args([
            "netns",
            "exec",
            self.host(i),
            "ss",
            "-Htn",
            "state",
            state,
        ]))
        .map_err(|e| format!("{e:#}"))?;
        Ok(established(&out))
    }
}

/// The table of the cuts: `inet`, so one rule set drops IPv4 and IPv6 alike.
const CUT_TABLE: &str = "table inet netsim_cut {}\ndelete table inet netsim_cut\n";

/// The nft script that drops every packet from `from` on input, IPv4 and IPv6 (a
/// partition, seen from one side), replacing what was there; with no addresses it only
/// removes the table.
fn cut_rules(from: &[IpAddr]) -> String {
    let mut s = String::from(CUT_TABLE);
    if from.is_empty() {
        return s;
    }
    let set = |v6: bool| -> Vec<String> {
        from.iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(ToString::to_string)
            .collect()
    };
    s.push_str(
        "table inet netsim_cut {\n  chain input { type filter hook input priority -310; \
         policy accept;\n",
    );
    for (family, v6) in [("ip", false), ("ip6", true)] {
        let set = set(v6);
        if !set.is_empty() {
            s.push_str(&format!(
                "    {family} saddr {{ {} }} drop\n",
                set.join(", ")
            ));
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// The nft script that cuts a host off entirely (its death, as its peers see it): every
/// packet in and out of `eth0` dropped, IPv4 and IPv6, including the kernel's FIN and RST.
fn isolate_rules() -> String {
    "table inet netsim_cut {}\ndelete table inet netsim_cut\ntable inet netsim_cut {\n  \
     chain input { type filter hook input priority -310; policy accept;\n    \
     iifname \"eth0\" drop\n  }\n  \
     chain output { type filter hook output priority -310; policy accept;\n    \
     oifname \"eth0\" drop\n  }\n}\n"
        .to_owned()
}

/// One end of a TCP connection: address and port, without the interface `ss` names for a
/// local link-local address (the two ends of one connection then compare equal).
pub(super) type End = (IpAddr, u16);

/// The (local, peer) ends of `ss -Htn state established` output.
fn established(ss: &str) -> Vec<(End, End)> {
    ss.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Recv-Q Send-Q Local:Port Peer:Port [Process]
            Some((end(fields.get(2)?)?, end(fields.get(3)?)?))
        })
        .collect()
}

/// The end `ss` prints as `10.77.0.1:40412`, `[fd00::1]:80` or, a local link-local one,
/// `[fe80::1]%eth0:38156` (`[fe80::1%eth0]:80` is read too); `None` for anything else.
fn end(s: &str) -> Option<End> {
    let (host, port) = s.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => host,
    };
    let host = host.split('%').next()?;
    Some((host.parse().ok()?, port.parse().ok()?))
}

/// The pid in a namespace name `hnsim<pid>-...`, if it is one of ours.
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Removes the namespaces of earlier runs whose process is gone.
pub(super) fn remove_stale() {
    for ns in support::list() {
        let Some(pid) = owner_pid(&ns) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netsim: removing {ns}, left by run {pid}");
            support::remove_all(&format!("{PREFIX}{pid}-"));
        }
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started
/// after) and starts a thread that waits for one, removes the namespaces and exits.
/// Children inherit the blocked mask (the standard library keeps it), which does not
/// matter here: every device is ended with SIGKILL, and `ip`, `nft` and `ss` are short.
pub(super) fn watch_signals(prefix: String) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block().context("blocking signals")?;
    std::thread::Builder::new()
        .name("netsim-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                // Held until the exit: no device starts while the namespaces go.
                let _no_spawn = SPAWNING.lock();
                eprintln!("\nnetsim: {sig}: removing the namespaces and stopping");
                support::remove_all(&prefix);
                std::process::exit(130);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// Host `i`'s IPv4 address: 10.77.0.<i+1>.
    fn host_ip(i: usize) -> Ipv4Addr {
        support::host_ip(SUBNET, i)
    }

    #[test]
    fn cut_rules_drop_the_other_half() {
        assert_eq!(
            cut_rules(&[]),
            "table inet netsim_cut {}\ndelete table inet netsim_cut\n"
        );
        let r = cut_rules(&[host_ip(0).into(), host_ip(1).into()]);
        assert!(r.contains("ip saddr { 10.77.0.1, 10.77.0.2 } drop"));
        assert!(!r.contains("ip6"));
        assert!(r.contains("hook input priority -310"));
        assert_eq!(r.matches('{').count(), r.matches('}').count());
        let both = cut_rules(&[
            host_ip(0).into(),
            support::host_link_local(0).into(),
            support::host_ula(SUBNET, 0).into(),
        ]);
        assert!(both.contains("    ip saddr { 10.77.0.1 } drop\n"));
        assert!(both.contains("    ip6 saddr { fe80::1, fd00:0:a:4d00::1 } drop\n"));
        assert_eq!(both.matches('{').count(), both.matches('}').count());
        let v6 = cut_rules(&[support::host_link_local(3).into()]);
        assert!(v6.contains("ip6 saddr { fe80::4 } drop") && !v6.contains(" ip saddr"));
        let iso = isolate_rules();
        assert!(iso.contains("iifname \"eth0\" drop") && iso.contains("oifname \"eth0\" drop"));
        assert_eq!(iso.matches('{').count(), iso.matches('}').count());
    }

    #[test]
    fn ss_output_parses() {
        let out = "0      0      10.77.0.1:40412   10.77.0.2:35553\n\
                   0      0      10.77.0.1:41000   10.77.0.3:41234   users:((\"hail\",pid=1,fd=9))\n\
                   garbage\n";
        let v4 = |i, port| (IpAddr::V4(host_ip(i)), port);
        assert_eq!(
            established(out),
            [(v4(0, 40412), v4(1, 35553)), (v4(0, 41000), v4(2, 41234))]
        );
        // As ss prints IPv6: the local link-local end names its interface, the peer not.
        let ll = |i, port| (IpAddr::V6(support::host_link_local(i)), port);
        let out = "0      0      [fe80::1]%eth0:38156 [fe80::2]:5000\n\
                   0      0      [fd00:0:a:4d00::1]:38157 [fd00:0:a:4d00::2]:5000\n";
        let ula = |i, port| (IpAddr::V6(support::host_ula(SUBNET, i)), port);
        assert_eq!(
            established(out),
            [(ll(0, 38156), ll(1, 5000)), (ula(0, 38157), ula(1, 5000))]
        );
        assert_eq!(end("[fe80::2%eth0]:41234"), Some(ll(1, 41234)));
        assert_eq!(
            end("[::1]:80"),
            Some((IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 80))
        );
        for bad in [
            "*:*",
            "10.77.0.2",
            "[fe80::1]%eth0",
            "10.77.0.2:x",
            "garbage",
        ] {
            assert_eq!(end(bad), None, "{bad}");
        }
    }

    #[test]
    fn mixed_hosts_meet_those_they_share_a_family_with() {
        let [four, six, dual] = [0, 1, 2].map(Stack::of_host);
        assert_eq!((four, six, dual), (Stack::V4, Stack::V6, Stack::Dual));
        assert_eq!(Stack::of_host(3), Stack::V4);
        assert!(dual.meets(four) && dual.meets(six) && four.meets(dual) && six.meets(dual));
        assert!(four.meets(four) && six.meets(six));
        assert!(!four.meets(six) && !six.meets(four));
    }

    #[test]
    fn owner_pid_parses() {
        assert_eq!(owner_pid("hnsim1234-h7"), Some(1234));
        assert_eq!(owner_pid("hnsim1234-br"), Some(1234));
        assert_eq!(owner_pid("hnsimx-br"), None);
        assert_eq!(owner_pid("other-1"), None);
    }

    #[test]
    fn host_addresses() {
        assert_eq!(host_ip(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(
            host_ip(super::super::args::MAX_HOSTS - 1),
            Ipv4Addr::new(10, 77, 0, 200)
        );
    }
}
