//! nftables inside a namespace: loss and duplication.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, SocketAddrV4};
use std::process::{Command, Stdio};

use crate::Error;

/// Runs the nft script `rules` (`nft -f -`) inside namespace `ns`.
pub fn nft(ns: &str, rules: &str) -> Result<(), Error> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| Error::Command(format!("nft in {ns}: {what}: {e}"));
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed("cannot run", &e))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(rules.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| failed("waiting", &e))?;
    if let Some(Err(e)) = written {
        return Err(failed("writing the rules", &e));
    }
    if !out.status.success() {
        return Err(Error::Command(format!(
            "nft in {ns} failed ({}): {} on:\n{rules}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// [`impairment_of`] for an IPv4 `to` (or none).
///
/// # Panics
/// If `loss` or `dup` is over 100.
pub fn impairment(loss: u8, dup: u8, to: Option<SocketAddrV4>) -> String {
    impairment_of(loss, dup, to.map(SocketAddr::V4))
}

/// The nft script that drops `loss` % of the packets arriving on `eth0` (only the UDP
/// datagrams to `to`, if given) and duplicates `dup` % of those leaving it, IPv4 and IPv6
/// alike, in tables `ip hail_impair` and `ip6 hail_impair` (two tables: nftables cannot
/// `dup` in an `inet` one), replacing what was there; with both 0 it only removes them.
/// With `to`, only the table of its family drops; both still duplicate.
///
/// # Panics
/// If `loss` or `dup` is over 100.
pub fn impairment_of(loss: u8, dup: u8, to: Option<SocketAddr>) -> String {
    assert!(loss <= 100 && dup <= 100, "percentages");
    // Creating a table first makes its delete succeed whether or not it existed: one
    // atomic replacement.
    let mut s = String::new();
    for family in ["ip", "ip6"] {
        let _ = writeln!(
            s,
            "table {family} hail_impair {{}}\ndelete table {family} hail_impair"
        );
    }
    if loss == 0 && dup == 0 {
        return s;
    }
    // `numgen random mod 100 < 100` is refused (out of range): 100 % is every packet.
    let share = |pct: u8| {
        if pct >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {pct} ")
        }
    };
    let (lose, double) = (share(loss), share(dup));
    for family in ["ip", "ip6"] {
        let only = match to {
            None => Some(String::new()),
            Some(to) if (family == "ip") == to.is_ipv4() => Some(format!(
                "{family} daddr {} udp dport {} ",
                to.ip(),
                to.port()
            )),
            Some(_) => None,
        };
        let drops = loss > 0 && only.is_some();
        if !drops && dup == 0 {
            continue;
        }
        let _ = writeln!(s, "table {family} hail_impair {{");
        if let (true, Some(only)) = (drops, only) {
            let _ = writeln!(
                s,
                "  chain input {{ type filter hook input priority -300; policy accept;\n    \
                 iifname \"eth0\" {only}{lose}drop\n  }}"
            );
        }
        if dup > 0 {
            let _ = writeln!(
                s,
                "  chain output {{ type filter hook output priority -300; policy accept;\n    \
                 oifname \"eth0\" {double}dup to {family} daddr device \"eth0\"\n  }}"
            );
        }
        s.push_str("}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const CLEAR: &str = "table ip hail_impair {}\ndelete table ip hail_impair\n\
                         table ip6 hail_impair {}\ndelete table ip6 hail_impair\n";

    #[test]
    fn impairment_replaces_the_tables() {
        assert_eq!(impairment(0, 0, None), CLEAR);
        let r = impairment(10, 2, None);
        assert!(r.starts_with(CLEAR));
        for family in ["ip", "ip6"] {
            let table = r
                .split(&format!("table {family} hail_impair {{\n"))
                .nth(1)
                .expect("a table of each family");
            let table = &table[..table.find("\n}\n").expect("closed")];
            assert!(table.contains("type filter hook input priority -300; policy accept;"));
            assert!(table.contains("iifname \"eth0\" numgen random mod 100 < 10 drop"));
            assert!(table.contains("type filter hook output priority -300; policy accept;"));
            assert!(table.contains(&format!(
                "oifname \"eth0\" numgen random mod 100 < 2 dup to {family} daddr device \"eth0\""
            )));
        }
        let loss_only = impairment(20, 0, None);
        assert_eq!(loss_only.matches("mod 100 < 20 drop").count(), 2);
        assert!(!loss_only.contains("dup"));
        assert_eq!(
            loss_only.matches('{').count(),
            loss_only.matches('}').count()
        );
        // 100 %: every packet, without numgen (nft refuses `< 100` after `mod 100`).
        let all = impairment(100, 100, None);
        assert!(!all.contains("numgen"));
        assert_eq!(all.matches("iifname \"eth0\" drop").count(), 2);
        assert!(all.contains("oifname \"eth0\" dup to ip6 daddr device \"eth0\""));
    }

    #[test]
    fn impairment_can_drop_one_group_only() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 72, 80), 47_760);
        let r = impairment(10, 0, Some(group));
        assert!(r.contains(
            "iifname \"eth0\" ip daddr 239.255.72.80 udp dport 47760 numgen random mod 100 < 10 drop"
        ));
        assert!(!r.contains("chain output"));
        assert!(
            !r.contains("table ip6 hail_impair {\n"),
            "an IPv4 group: no IPv6 drop"
        );
        let v6: SocketAddr = "[ff02::4a1:77]:47751".parse().unwrap();
        let r = impairment_of(10, 3, Some(v6));
        assert!(r.contains(
            "iifname \"eth0\" ip6 daddr ff02::4a1:77 udp dport 47751 numgen random mod 100 < 10 drop"
        ));
        assert_eq!(r.matches("drop").count(), 1);
        assert_eq!(r.matches("dup to").count(), 2);
        assert_eq!(r.matches('{').count(), r.matches('}').count());
    }
}
