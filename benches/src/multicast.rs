//! `multicast/*`: sealing in memory, and channels on the loopback interface.
//!
//! - `multicast/seal-<size>`: `Sealer::seal_into` + `Opener::open` (ours) against the raw
//!   AEAD hail-crypto uses (ring's AES-256-GCM) sealing and opening the same bytes with the
//!   same associated-data length.
//! - `multicast/seal-vs-aesgcm-<size>`: ours against the `aes-gcm` crate doing the same raw
//!   work (why hail-crypto uses ring).
//! - `multicast/loopback-<size>`: a plaintext `Channel` against raw std `UdpSocket`s on the
//!   same group, both on 127.0.0.1 with TTL 0: datagrams/s of send-a-batch, receive-it.
//! - `multicast/sealed-<size>`: a sealed `Channel` against a plaintext one, same loop.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hail_crypto::{GroupKey, HEADER_LEN, OVERHEAD, Opener, Sealer};
use hail_multicast::{Channel, ChannelConfig, Receiver};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as RingNonce, UnboundKey};

use crate::harness::{Better, Ctx, Record, interleaved_rate};

/// Datagrams per in-memory round.
const SEAL_BATCH: u64 = 1024;
/// Datagrams sent before they are received, per loopback round: well under the socket
/// buffers, so nothing is lost.
const NET_BATCH: usize = 32;
/// Batches per loopback round.
const NET_ROUNDS: usize = 16;

/// Runs the `multicast/*` benchmarks.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let budget = Duration::from_millis(ctx.pick(300, 2000));
    let sizes = [("64B", 64usize), ("1200B", 1200)];
    let mut out = Vec::new();
    for (label, size) in sizes {
        if ctx.wants(&format!("multicast/seal-{label}")) {
            out.push(seal_vs_ring(budget, label, size));
        }
    }
    if ctx.wants("multicast/seal-vs-aesgcm-1200B") {
        out.push(seal_vs_aes_gcm(budget, "1200B", 1200));
    }
    let wants_net = sizes.iter().any(|(l, _)| {
        ctx.wants(&format!("multicast/loopback-{l}")) || ctx.wants(&format!("multicast/sealed-{l}"))
    });
    if wants_net {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for (i, (label, size)) in sizes.into_iter().enumerate() {
            if ctx.wants(&format!("multicast/loopback-{label}")) {
                out.push(loopback(&rt, budget, label, size, 60 + i as u8)?);
            }
            if ctx.wants(&format!("multicast/sealed-{label}")) {
                out.push(sealed(&rt, budget, label, size, 70 + i as u8)?);
            }
        }
    }
    Ok(out)
}

fn ring_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"))
}

fn nonce_bytes(i: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    n
}

/// Ours: one `Sealer` and one `Opener`, seal into and open in a reused buffer.
fn ours_round(sealer: &mut Sealer, opener: &mut Opener, payload: &[u8], buf: &mut [u8]) {
    for _ in 0..SEAL_BATCH {
        let n = sealer.seal_into(black_box(payload), buf).expect("seal");
        let p = opener.open(&mut buf[..n]).expect("open");
        black_box(p.payload.len());
    }
}

fn seal_vs_ring(budget: Duration, label: &str, size: usize) -> Record {
    let key = GroupKey::from_bytes([7; 32]);
    let mut sealer = Sealer::new(&key).expect("rng");
    let mut opener = Opener::new(&key);
    let payload = vec![0xa5u8; size];
    let mut buf = vec![0u8; size + OVERHEAD];
    let raw = ring_key(&[9; 32]);
    let aad = [1u8; HEADER_LEN];
    let mut raw_buf = vec![0u8; size + 16];
    let mut counter = 0u64;
    let (a, b) = interleaved_rate(
        budget,
        SEAL_BATCH,
        || ours_round(&mut sealer, &mut opener, &payload, &mut buf),
        || {
            for _ in 0..SEAL_BATCH {
                counter += 1;
                raw_buf[..size].copy_from_slice(black_box(&payload));
                let tag = raw
                    .seal_in_place_separate_tag(
                        RingNonce::assume_unique_for_key(nonce_bytes(counter)),
                        Aad::from(&aad),
                        &mut raw_buf[..size],
                    )
                    .expect("seal");
                raw_buf[size..].copy_from_slice(tag.as_ref());
                let p = raw
                    .open_in_place(
                        RingNonce::assume_unique_for_key(nonce_bytes(counter)),
                        Aad::from(&aad),
                        &mut raw_buf,
                    )
                    .expect("open");
                black_box(p.len());
            }
        },
    );
    Record::new(
        format!("multicast/seal-{label}"),
        a,
        b,
        "msg/s",
        Better::Higher,
    )
}

fn seal_vs_aes_gcm(budget: Duration, label: &str, size: usize) -> Record {
    let key = GroupKey::from_bytes([7; 32]);
    let mut sealer = Sealer::new(&key).expect("rng");
    let mut opener = Opener::new(&key);
    let payload = vec![0xa5u8; size];
    let mut buf = vec![0u8; size + OVERHEAD];
    let raw = Aes256Gcm::new_from_slice(&[9; 32]).expect("32-byte key");
    let aad = [1u8; HEADER_LEN];
    let mut raw_buf = vec![0u8; size];
    let mut counter = 0u64;
    let (a, b) = interleaved_rate(
        budget,
        SEAL_BATCH,
        || ours_round(&mut sealer, &mut opener, &payload, &mut buf),
        || {
            for _ in 0..SEAL_BATCH {
                counter += 1;
                let nonce = nonce_bytes(counter);
                raw_buf.copy_from_slice(black_box(&payload));
                let tag = raw
                    .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut raw_buf)
                    .expect("seal");
                raw.decrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut raw_buf, &tag)
                    .expect("open");
                black_box(raw_buf.len());
            }
        },
    );
    Record::new(
        format!("multicast/seal-vs-aesgcm-{label}"),
        a,
        b,
        "msg/s",
        Better::Higher,
    )
}

/// A channel on loopback, TTL 0, receiving its own datagrams.
fn lo_channel(
    rt: &tokio::runtime::Runtime,
    group: SocketAddr,
    key: Option<GroupKey>,
) -> anyhow::Result<(Channel, Receiver)> {
    let _guard = rt.enter();
    let mut b = ChannelConfig::builder()
        .interface(Ipv4Addr::LOCALHOST)
        .ttl(0)
        .recv_buffer_size(1 << 21);
    if let Some(k) = key {
        b = b.key(k);
    }
    Ok(Channel::bind(group, b.build()?)?)
}

/// One loopback round on a channel: send a batch, receive it, `NET_ROUNDS` times. (One
/// timeout for the whole round, as the baseline's socket read timeout costs nothing per call.)
fn channel_round(
    rt: &tokio::runtime::Runtime,
    (chan, rx): &mut (Channel, Receiver),
    payload: &[u8],
) {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..NET_ROUNDS {
                for _ in 0..NET_BATCH {
                    chan.send(payload).await.expect("send");
                }
                for _ in 0..NET_BATCH {
                    let d = rx.recv().await.expect("recv");
                    black_box(d.payload.len());
                }
            }
        })
        .await
        .expect("a datagram was lost on loopback");
    });
}

fn loopback(
    rt: &tokio::runtime::Runtime,
    budget: Duration,
    label: &str,
    size: usize,
    group_last: u8,
) -> anyhow::Result<Record> {
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 77, group_last), 0));
    let mut chan = lo_channel(rt, group, None)?;
    // The baseline: raw std sockets, same interface and TTL, their own port on the group.
    let g = Ipv4Addr::new(239, 255, 77, group_last);
    let tx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    tx.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
    tx.set_multicast_ttl_v4(0)?;
    tx.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    let tx: UdpSocket = tx.into();
    let rx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    rx.set_reuse_address(true)?;
    rx.set_recv_buffer_size(1 << 21)?;
    rx.bind(&SocketAddr::V4(SocketAddrV4::new(g, 0)).into())?;
    let rx: UdpSocket = rx.into();
    rx.join_multicast_v4(&g, &Ipv4Addr::LOCALHOST)?;
    rx.set_read_timeout(Some(Duration::from_secs(5)))?;
    let dest = SocketAddr::from((g, rx.local_addr()?.port()));
    let payload = vec![0x5au8; size];
    let mut buf = vec![0u8; 65_536];
    let (a, b) = interleaved_rate(
        budget,
        (NET_ROUNDS * NET_BATCH) as u64,
        || channel_round(rt, &mut chan, &payload),
        || {
            for _ in 0..NET_ROUNDS {
                for _ in 0..NET_BATCH {
                    tx.send_to(&payload, dest).expect("send");
                }
                for _ in 0..NET_BATCH {
                    let (n, from) = rx
                        .recv_from(&mut buf)
                        .expect("a datagram was lost on loopback");
                    black_box((n, from));
                }
            }
        },
    );
    Ok(Record::new(
        format!("multicast/loopback-{label}"),
        a,
        b,
        "dgram/s",
        Better::Higher,
    ))
}

fn sealed(
    rt: &tokio::runtime::Runtime,
    budget: Duration,
    label: &str,
    size: usize,
    group_last: u8,
) -> anyhow::Result<Record> {
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 77, group_last), 0));
    let mut sealed = lo_channel(rt, group, Some(GroupKey::from_bytes([3; 32])))?;
    let mut plain = lo_channel(rt, group, None)?;
    anyhow::ensure!(sealed.0.group() != plain.0.group(), "separate ports");
    let payload = vec![0x5au8; size];
    let (a, b) = interleaved_rate(
        budget,
        (NET_ROUNDS * NET_BATCH) as u64,
        || channel_round(rt, &mut sealed, &payload),
        || channel_round(rt, &mut plain, &payload),
    );
    Ok(Record::new(
        format!("multicast/sealed-{label}"),
        a,
        b,
        "dgram/s",
        Better::Higher,
    ))
}
