//! Where both systems run: loopback only.
//!
//! zenoh is configured as a user would have it (peer mode, multicast scouting, gossip,
//! every timing at its default) except for where it may send: multicast scouting is bound
//! to 127.0.0.1 with TTL 1 on a group port chosen per run, and sessions listen only on
//! `tcp/127.0.0.1:0`. hail's devices get the same restriction (`interface(127.0.0.1)`,
//! TTL 1 by default, links on `127.0.0.1:0`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use hail::discovery::{Device, DeviceEvents};

/// zenoh's default scouting group address (`scouting/multicast/address` is
/// `224.0.0.224:7446`); only the port is changed, per run.
const ZENOH_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 224);

/// hail's group for these runs (an administratively scoped group, as hail's default).
const HAIL_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 72, 80);

/// A UDP port free on 127.0.0.1 right now, for a multicast group of this run only (so a
/// session or device still closing from the previous run is not discovered).
pub(crate) fn free_udp_port() -> anyhow::Result<u16> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(s.local_addr()?.port())
}

/// A zenoh peer configuration restricted to loopback, scouting on `port`.
pub(crate) fn zenoh_config(port: u16) -> anyhow::Result<zenoh::Config> {
    let mut c = zenoh::Config::default();
    let set = |c: &mut zenoh::Config, key: &str, value: &str| {
        c.insert_json5(key, value)
            .map_err(|e| anyhow::anyhow!("zenoh config {key} = {value}: {e}"))
    };
    set(&mut c, "mode", r#""peer""#)?;
    set(&mut c, "listen/endpoints", r#"["tcp/127.0.0.1:0"]"#)?;
    set(&mut c, "scouting/multicast/enabled", "true")?;
    set(
        &mut c,
        "scouting/multicast/address",
        &format!(r#""{ZENOH_GROUP}:{port}""#),
    )?;
    // An address, not "auto" (every non-loopback multicast interface): scout on lo only.
    set(&mut c, "scouting/multicast/interface", r#""127.0.0.1""#)?;
    set(&mut c, "scouting/multicast/ttl", "1")?;
    Ok(c)
}

/// The hail group of one run.
pub(crate) fn hail_group(port: u16) -> SocketAddr {
    SocketAddr::from((HAIL_GROUP, port))
}

/// Starts a hail device on loopback in `group`.
pub(crate) async fn hail_device(
    name: &str,
    group: SocketAddr,
) -> anyhow::Result<(Device, DeviceEvents)> {
    Ok(Device::builder(name)
        .group(group)
        .interface(Ipv4Addr::LOCALHOST)
        .ttl(1)
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?)
}

/// Waits until `d` has joined at least `n` peers, at most 10 s.
pub(crate) async fn until_peers(
    d: &Device,
    events: &mut DeviceEvents,
    n: usize,
) -> anyhow::Result<()> {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while d.peers().len() < n {
            if events.recv().await.is_none() {
                break;
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{} did not see {n} peers", d.name()))
}
