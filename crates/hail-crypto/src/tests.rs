//! Sans-IO tests of sealing and opening as a whole.

use std::collections::HashSet;

use proptest::prelude::*;

use crate::datagram::{HEADER_LEN, SessionKeys, parse_header};
use crate::{
    CryptoError, GroupKey, KdfParams, OVERHEAD, OpenError, Opener, OpenerConfig, REPLAY_WINDOW,
    Sealer, SessionId,
};

fn key() -> GroupKey {
    GroupKey::from_bytes([0x42; 32])
}

fn seal(sealer: &mut Sealer, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + OVERHEAD];
    let n = sealer.seal_into(payload, &mut out).expect("seal");
    assert_eq!(n, out.len());
    out
}

#[test]
fn round_trip_sizes() {
    let k = key();
    let mut s = Sealer::new(&k).unwrap();
    let mut o = Opener::new(&k);
    for size in [0usize, 1, 15, 16, 17, 64, 1200, 9000, 65_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        let mut d = seal(&mut s, &payload);
        assert_eq!(d.len(), size + OVERHEAD);
        assert!(
            size == 0 || d[HEADER_LEN..HEADER_LEN + size] != payload[..],
            "encrypted (size {size})"
        );
        let opened = o.open(&mut d).expect("open");
        assert_eq!(opened.payload, &payload[..]);
        assert_eq!(opened.session, s.session_id());
    }
}

#[test]
fn buffer_too_small_is_an_error() {
    let mut s = Sealer::new(&key()).unwrap();
    let mut out = [0u8; 10 + OVERHEAD - 1];
    assert_eq!(
        s.seal_into(&[0; 10], &mut out),
        Err(CryptoError::BufferTooSmall {
            need: 10 + OVERHEAD,
            have: 10 + OVERHEAD - 1
        })
    );
    assert_eq!(s.next_counter(), 0, "a failed seal uses no counter");
}

#[test]
fn counter_exhaustion_is_an_error() {
    let k = key();
    let mut s = Sealer::with_session(&k.multicast_root(), SessionId([1; 16]), u64::MAX - 2);
    let mut o = Opener::new(&k);
    for _ in 0..2 {
        let mut d = seal(&mut s, b"x");
        o.open(&mut d).expect("last counters are usable");
    }
    let mut out = [0u8; 1 + OVERHEAD];
    assert_eq!(
        s.seal_into(b"x", &mut out),
        Err(CryptoError::CounterExhausted)
    );
    assert_eq!(
        s.seal_into(b"x", &mut out),
        Err(CryptoError::CounterExhausted)
    );
}

#[test]
fn ten_thousand_bit_flips_all_rejected() {
    let k = key();
    let mut s = Sealer::new(&k).unwrap();
    let mut o = Opener::new(&k);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut rejected = 0;
    for _ in 0..10_000 {
        let len = (next() % 1300) as usize;
        let payload = vec![0x5a; len];
        let mut d = seal(&mut s, &payload);
        let bit = (next() % (d.len() as u64 * 8)) as usize;
        d[bit / 8] ^= 1 << (bit % 8);
        match o.open(&mut d) {
            Err(OpenError::Malformed(_) | OpenError::WrongGroupOrKey) => rejected += 1,
            other => panic!("a flipped bit {bit} was not rejected: {other:?}"),
        }
    }
    assert_eq!(rejected, 10_000);
    // Forgeries changed no state: the session was never admitted.
    assert_eq!(o.sessions(), 0);
}

#[test]
fn ten_thousand_replays_all_rejected() {
    let k = key();
    let mut s = Sealer::new(&k).unwrap();
    let mut o = Opener::new(&k);
    let sent: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| seal(&mut s, &i.to_le_bytes()))
        .collect();
    for d in &sent {
        o.open(&mut d.clone()).expect("first delivery");
    }
    let mut replayed = 0;
    let mut too_old = 0;
    for d in &sent {
        match o.open(&mut d.clone()) {
            Err(OpenError::Replayed) => replayed += 1,
            Err(OpenError::TooOld) => too_old += 1,
            other => panic!("replay accepted: {other:?}"),
        }
    }
    assert_eq!(replayed, REPLAY_WINDOW as usize);
    assert_eq!(too_old, 10_000 - REPLAY_WINDOW as usize);
}

#[test]
fn reordered_within_window_delivered_exactly_once() {
    let k = key();
    let mut s = Sealer::new(&k).unwrap();
    let mut o = Opener::new(&k);
    let n = REPLAY_WINDOW as usize;
    let sent: Vec<Vec<u8>> = (0..n as u32)
        .map(|i| seal(&mut s, &i.to_le_bytes()))
        .collect();
    // A fixed shuffle (multiplicative permutation of 0..n), each sent twice.
    let order: Vec<usize> = (0..n).map(|i| (i * 389 + 17) % n).collect();
    let mut delivered = vec![0u32; n];
    for &i in order.iter().chain(order.iter().rev()) {
        if let Ok(p) = o.open(&mut sent[i].clone()) {
            let v = u32::from_le_bytes(p.payload[..4].try_into().unwrap());
            delivered[v as usize] += 1;
        }
    }
    assert!(delivered.iter().all(|&c| c == 1), "{delivered:?}");
}

#[test]
fn wrong_passphrase_and_other_group_rejected() {
    let fast = |p: &str, g: &str| {
        GroupKey::derive_with(
            p,
            g,
            KdfParams::default().iterations(KdfParams::MIN_ITERATIONS),
        )
        .unwrap()
    };
    let ours = fast("pw", "lab");
    let mut o = Opener::new(&ours);
    for other in [fast("pw2", "lab"), fast("pw", "lab2")] {
        let mut s = Sealer::new(&other).unwrap();
        for _ in 0..10 {
            assert_eq!(
                o.open(&mut seal(&mut s, b"hi")).unwrap_err(),
                OpenError::WrongGroupOrKey
            );
        }
    }
    let mut s = Sealer::new(&fast("pw", "lab")).unwrap();
    assert_eq!(o.open(&mut seal(&mut s, b"hi")).unwrap().payload, b"hi");
}

#[test]
fn malformed_inputs_are_typed() {
    let mut o = Opener::new(&key());
    let mut s = Sealer::new(&key()).unwrap();
    let good = seal(&mut s, b"payload");
    assert_eq!(
        o.open(&mut []).unwrap_err(),
        OpenError::Malformed("shorter than header and tag")
    );
    assert!(matches!(
        o.open(&mut good[..OVERHEAD - 1].to_vec()),
        Err(OpenError::Malformed(_))
    ));
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    assert_eq!(
        o.open(&mut bad_magic).unwrap_err(),
        OpenError::Malformed("bad magic")
    );
    let mut bad_version = good.clone();
    bad_version[4] = 2;
    assert_eq!(
        o.open(&mut bad_version).unwrap_err(),
        OpenError::Malformed("unsupported version")
    );
    // Plain text on a sealed channel.
    assert!(matches!(
        o.open(&mut b"hello, plain world! this is long enough to pass".to_vec()),
        Err(OpenError::Malformed(_))
    ));
    let mut truncated_tag = good.clone();
    truncated_tag.pop();
    assert_eq!(
        o.open(&mut truncated_tag).unwrap_err(),
        OpenError::WrongGroupOrKey
    );
    let mut good = good;
    assert_eq!(o.open(&mut good).unwrap().payload, b"payload");
}

#[test]
fn session_limit_is_clamped() {
    assert_eq!(
        OpenerConfig::default()
            .max_sessions(usize::MAX)
            .max_sessions,
        65_536
    );
    assert_eq!(OpenerConfig::default().max_sessions(0).max_sessions, 1);
    let mut one = Opener::with_config(&key(), OpenerConfig::default().max_sessions(0));
    let mut a = Sealer::new(&key()).unwrap();
    let mut b = Sealer::new(&key()).unwrap();
    one.open(&mut seal(&mut a, b"a")).unwrap();
    one.open(&mut seal(&mut b, b"b")).unwrap();
    assert_eq!(one.sessions(), 1);
}

#[test]
fn session_table_is_bounded_lru() {
    let k = key();
    let mut o = Opener::with_config(&k, OpenerConfig::default().max_sessions(3));
    let mut senders: Vec<Sealer> = (0..4).map(|_| Sealer::new(&k).unwrap()).collect();
    let mut old = Vec::new();
    for s in senders.iter_mut().take(3) {
        let d = seal(s, b"a");
        o.open(&mut d.clone()).unwrap();
        old.push(d);
    }
    // Hear sender 0 again, so sender 1 is the least recently heard.
    o.open(&mut seal(&mut senders[0], b"b")).unwrap();
    o.open(&mut seal(&mut senders[3], b"c")).unwrap();
    assert_eq!(o.sessions(), 3);
    // Sessions 0 and 2 are still tracked: their old datagrams are replays.
    assert_eq!(
        o.open(&mut old[0].clone()).unwrap_err(),
        OpenError::Replayed
    );
    assert_eq!(
        o.open(&mut old[2].clone()).unwrap_err(),
        OpenError::Replayed
    );
    // Session 1 was evicted: its next datagram is admitted as a session again.
    o.open(&mut seal(&mut senders[1], b"d")).unwrap();
    assert_eq!(o.sessions(), 3);
}

/// 8 senders × 100,000 datagrams, each sender restarting (a new `Sealer`) every 10,000:
/// no (key, nonce) pair repeats, and every datagram opens exactly once.
#[test]
fn no_key_nonce_pair_repeats_across_restarts() {
    let k = key();
    let root = k.multicast_root();
    let mut opener = Opener::with_config(&k, OpenerConfig::default().max_sessions(128));
    let mut pairs: HashSet<([u8; 16], [u8; 12])> = HashSet::with_capacity(800_000);
    let mut session_keys: Option<(SessionId, SessionKeys)> = None;
    let mut buf = [0u8; 8 + OVERHEAD];
    for sender in 0..8u64 {
        let mut sealer = Sealer::new(&k).unwrap();
        for i in 0..100_000u64 {
            if i > 0 && i % 10_000 == 0 {
                sealer = Sealer::new(&k).unwrap();
            }
            let n = sealer
                .seal_into(&(sender << 32 | i).to_le_bytes(), &mut buf)
                .unwrap();
            let h = parse_header(&buf[..n]).unwrap();
            let keys = match &session_keys {
                Some((id, keys)) if *id == h.session => keys,
                _ => {
                    &session_keys
                        .insert((h.session, SessionKeys::derive(&root, &h.session)))
                        .1
                }
            };
            // The key is identified by the session id it was derived from (HKDF is a PRF),
            // the nonce computed exactly as the opener does.
            let nonce: [u8; 12] = *keys.nonce(h.counter).as_ref();
            assert!(
                pairs.insert((h.session.0, nonce)),
                "repeated (key, nonce) at sender {sender} #{i}"
            );
            opener.open(&mut buf[..n]).expect("opens once");
        }
    }
    assert_eq!(pairs.len(), 800_000);
}

proptest! {
    /// Four senders' datagrams, interleaved, reordered and duplicated at random: each is
    /// delivered exactly once, to the right session, and every repeat is `Replayed`.
    #[test]
    fn interleaved_sessions_deliver_exactly_once(
        picks in proptest::collection::vec((0usize..4, 0usize..200), 1..600),
    ) {
        let k = key();
        let mut senders: Vec<Sealer> = (0..4).map(|_| Sealer::new(&k).unwrap()).collect();
        let sent: Vec<Vec<Vec<u8>>> = senders
            .iter_mut()
            .enumerate()
            .map(|(s, sealer)| (0..200u32).map(|i| seal(sealer, &[s as u8, i as u8])).collect())
            .collect();
        let mut o = Opener::with_config(&k, OpenerConfig::default().max_sessions(4));
        let mut delivered = HashSet::new();
        for (s, i) in picks {
            match o.open(&mut sent[s][i].clone()) {
                Ok(p) => {
                    prop_assert_eq!(&*p.payload, &[s as u8, i as u8][..]);
                    prop_assert_eq!(p.session, senders[s].session_id());
                    prop_assert!(delivered.insert((s, i)), "({}, {}) delivered twice", s, i);
                }
                Err(OpenError::Replayed) => prop_assert!(delivered.contains(&(s, i))),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }
    }

    #[test]
    fn seal_open_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let k = key();
        let mut s = Sealer::new(&k).unwrap();
        let mut o = Opener::new(&k);
        let mut d = seal(&mut s, &payload);
        let opened = o.open(&mut d).unwrap();
        prop_assert_eq!(&*opened.payload, &payload[..]);
    }

    #[test]
    fn arbitrary_bytes_never_open(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), magic in any::<bool>()) {
        if magic && bytes.len() >= 5 {
            bytes[..4].copy_from_slice(b"hlsd");
            bytes[4] = 1;
        }
        let mut o = Opener::new(&key());
        prop_assert!(o.open(&mut bytes).is_err());
        prop_assert_eq!(o.sessions(), 0);
    }
}
