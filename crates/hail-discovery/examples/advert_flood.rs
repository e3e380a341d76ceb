//! A bounded flood of forged, validly signed announces, each under a key of its own, with
//! spoofed IPv4 sources: the attacker of issue 11's flood goal, for measuring a device
//! under it (docs/security.md, "Floods of forged adverts"). Test equipment: run it only
//! inside a network namespace of your own making, as root (a raw socket writes the IPv4
//! header with the spoofed source). TTL 1: the datagrams never leave the link.
//!
//! ```text
//! ip netns exec <attacker-ns> taskset -c 0 advert_flood \
//!     [--rate 20000] [--secs 20] [--keys N] [--group 239.255.72.76:5676] \
//!     [--sources fresh|pool:N] [--subnet 10.77.0]
//! ```
//!
//! - `--rate`, `--secs`: datagrams a second and for how long (it stops by itself; at most
//!   100,000 a second and 600 s).
//! - `--keys`: distinct keys (signed announces), made before the flood starts and sent in
//!   turn (default: rate × secs, every announce a new key; at most 1,200,000, about 60 µs
//!   and 200 bytes each).
//! - `--sources fresh`: a new source address per datagram, 10.64.0.0/10 in turn (over 4
//!   million before one repeats); `pool:N`: the N addresses `<subnet>.10` onwards, in turn.
//!
//! Prints one summary line: sent, failed sends, seconds, achieved rate.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test tool: its summary on stdout, its progress on stderr"
)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use hail_crypto::Identity;
use hail_discovery::{Advert, Announce, AnnounceBody};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Where the sources come from.
#[derive(Debug, Clone, Copy)]
enum Sources {
    /// A new address per datagram.
    Fresh,
    /// `n` addresses of the subnet, in turn.
    Pool(u32),
}

#[derive(Debug)]
struct Args {
    rate: u32,
    secs: u64,
    keys: Option<usize>,
    group: SocketAddrV4,
    sources: Sources,
    subnet: [u8; 3],
}

/// The arguments (few and flat: no parser crate for a test tool).
fn args() -> Result<Args, String> {
    let mut a = Args {
        rate: 20_000,
        secs: 20,
        keys: None,
        group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 72, 76), 5676),
        sources: Sources::Fresh,
        subnet: [10, 77, 0],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--rate" => a.rate = value.parse().map_err(|e| bad(&e))?,
            "--secs" => a.secs = value.parse().map_err(|e| bad(&e))?,
            "--keys" => a.keys = Some(value.parse().map_err(|e| bad(&e))?),
            "--group" => a.group = value.parse().map_err(|e| bad(&e))?,
            "--subnet" => {
                let ip: Ipv4Addr = format!("{value}.0").parse().map_err(|e| bad(&e))?;
                let [x, y, z, _] = ip.octets();
                a.subnet = [x, y, z];
            }
            "--sources" => {
                a.sources = match value.split_once(':') {
                    None if value == "fresh" => Sources::Fresh,
                    Some(("pool", n)) => Sources::Pool(n.parse().map_err(|e| bad(&e))?),
                    _ => return Err(bad(&"fresh or pool:N")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.rate == 0 || a.rate > 100_000 || a.secs == 0 || a.secs > 600 {
        return Err("--rate 1..=100000, --secs 1..=600".into());
    }
    if matches!(a.sources, Sources::Pool(n) if n == 0 || n > 240) {
        return Err("pool:1..=240".into());
    }
    Ok(a)
}

fn source(a: &Args, i: u64) -> Ipv4Addr {
    match a.sources {
        Sources::Fresh => {
            let n = u32::try_from(i % (1 << 22)).expect("below 2^22");
            Ipv4Addr::from(0x0a40_0000 | n)
        }
        Sources::Pool(n) => {
            let k = u8::try_from(i % u64::from(n)).expect("below 240");
            let [x, y, z] = a.subnet;
            Ipv4Addr::new(x, y, z, 10 + k)
        }
    }
}

/// Announce `i`, under a key of its own, signed.
fn forged(i: usize, salt: &[u8; 8]) -> Vec<u8> {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(salt);
    seed[8..16].copy_from_slice(&(i as u64).to_be_bytes());
    let key = Identity::from_secret_bytes(&seed);
    let body = AnnounceBody {
        name: format!("forged{i}"),
        port: 4000,
        lease: Duration::from_secs(30),
        addresses: Vec::new(),
        metadata: Default::default(),
    };
    let a = Announce::sign(&key, 1, body).expect("a valid body");
    Advert::Announce(a).to_bytes().expect("encodes")
}

/// An IPv4 + UDP datagram from `src` (the kernel fills in the IPv4 checksum, id and
/// length; a UDP checksum of 0 means none).
fn packet(src: Ipv4Addr, group: SocketAddrV4, payload: &[u8], out: &mut Vec<u8>) {
    let udp_len = u16::try_from(8 + payload.len()).expect("an advert is small");
    out.clear();
    out.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 1, 17, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&group.ip().octets());
    out.extend_from_slice(&5676u16.to_be_bytes());
    out.extend_from_slice(&group.port().to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
}

fn main() -> Result<(), String> {
    let a = args()?;
    let total = a.rate as usize * usize::try_from(a.secs).expect("small");
    let keys = a.keys.unwrap_or(total).clamp(1, 1_200_000);
    let salt: [u8; 8] = rand_salt();
    let made = Instant::now();
    let adverts: Vec<Vec<u8>> = (0..keys).map(|i| forged(i, &salt)).collect();
    eprintln!(
        "advert_flood: {keys} signed announces made in {:.1} s; flooding {} for {} s at {}/s",
        made.elapsed().as_secs_f64(),
        a.group,
        a.secs,
        a.rate
    );
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .map_err(|e| format!("raw socket (root, in a namespace of yours): {e}"))?;
    socket
        .set_header_included_v4(true)
        .map_err(|e| e.to_string())?;
    let to = SockAddr::from(SocketAddr::V4(a.group));
    let start = Instant::now();
    let end = start + Duration::from_secs(a.secs);
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(512);
    // One batch a millisecond, as many as the rate owes by then.
    while Instant::now() < end {
        let owed = (start.elapsed().as_secs_f64() * f64::from(a.rate)) as u64;
        while sent + failed < owed {
            let i = sent + failed;
            let ad = &adverts[usize::try_from(i).expect("small") % keys];
            packet(source(&a, i), a.group, ad, &mut buf);
            match socket.send_to(&buf, &to) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} failed {failed} secs {secs:.1} rate {:.0}/s",
        sent as f64 / secs
    );
    Ok(())
}

/// A salt for this run's keys (so two runs send different keys), from the clock: no
/// secrecy needed.
fn rand_salt() -> [u8; 8] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64).to_be_bytes()
}
