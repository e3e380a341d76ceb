//! nftables inside a namespace: loss and duplication.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddrV4;
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

/// The nft script that drops `loss` % of the packets arriving on `eth0` (only the UDP
/// datagrams to `to`, if given) and duplicates `dup` % of those leaving it, in table
/// `ip hail_impair`, replacing what was there; with both 0 it only removes the table.
///
/// # Panics
/// If `loss` or `dup` is over 100.
pub fn impairment(loss: u8, dup: u8, to: Option<SocketAddrV4>) -> String {
    assert!(loss <= 100 && dup <= 100, "percentages");
    // Creating the table first makes the delete succeed whether or not it existed: one
    // atomic replacement.
    let mut s = String::from("table ip hail_impair {}\ndelete table ip hail_impair\n");
    if loss == 0 && dup == 0 {
        return s;
    }
    s.push_str("table ip hail_impair {\n");
    if loss > 0 {
        let only = to.map_or_else(String::new, |to| {
            format!("ip daddr {} udp dport {} ", to.ip(), to.port())
        });
        let _ = writeln!(
            s,
            "  chain input {{ type filter hook input priority -300; policy accept;\n    \
             iifname \"eth0\" {only}numgen random mod 100 < {loss} drop\n  }}"
        );
    }
    if dup > 0 {
        let _ = writeln!(
            s,
            "  chain output {{ type filter hook output priority -300; policy accept;\n    \
             oifname \"eth0\" numgen random mod 100 < {dup} dup to ip daddr device \"eth0\"\n  }}"
        );
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn impairment_replaces_the_table() {
        assert_eq!(
            impairment(0, 0, None),
            "table ip hail_impair {}\ndelete table ip hail_impair\n"
        );
        let r = impairment(10, 2, None);
        assert!(r.starts_with(
            "table ip hail_impair {}\ndelete table ip hail_impair\ntable ip hail_impair {\n"
        ));
        assert!(r.contains("type filter hook input priority -300; policy accept;"));
        assert!(r.contains("iifname \"eth0\" numgen random mod 100 < 10 drop"));
        assert!(r.contains("type filter hook output priority -300; policy accept;"));
        assert!(r.contains(
            "oifname \"eth0\" numgen random mod 100 < 2 dup to ip daddr device \"eth0\""
        ));
        let loss_only = impairment(20, 0, None);
        assert!(loss_only.contains("mod 100 < 20 drop"));
        assert!(!loss_only.contains("dup"));
        assert_eq!(
            loss_only.matches('{').count(),
            loss_only.matches('}').count()
        );
    }

    #[test]
    fn impairment_can_drop_one_group_only() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 72, 80), 47_760);
        let r = impairment(10, 0, Some(group));
        assert!(r.contains(
            "iifname \"eth0\" ip daddr 239.255.72.80 udp dport 47760 numgen random mod 100 < 10 drop"
        ));
        assert!(!r.contains("chain output"));
    }
}
