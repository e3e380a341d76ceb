use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use hail_crypto::Identity;
use proptest::prelude::*;

use super::*;

/// The identity of the documented example: secret key `07` × 32.
static LAMP_KEY: LazyLock<Identity> = LazyLock::new(|| Identity::from_secret_bytes(&[7; 32]));
/// Another identity, for signatures by the wrong key.
static OTHER_KEY: LazyLock<Identity> = LazyLock::new(|| Identity::from_secret_bytes(&[8; 32]));

/// The largest announce the field limits allow, in bytes (see
/// `the_largest_announce_fits_the_datagram_limit`); the module docs quote it.
const LARGEST_ANNOUNCE: usize = 870;

fn lamp_body() -> AnnounceBody {
    AnnounceBody {
        name: "lamp".into(),
        port: 40000,
        lease: Duration::from_millis(3000),
        addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        metadata: Metadata::from([("role".into(), "lamp".into())]),
    }
}

/// The announce of the module docs' example.
fn lamp() -> Announce {
    Announce::sign(&LAMP_KEY, 1, lamp_body()).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The bytes of the worked example in the module docs: the hex before each line's
/// annotation in the first `text` block after "# Example".
fn documented_example() -> Vec<u8> {
    let doc = include_str!("mod.rs");
    let example = &doc[doc.find("//! # Example").expect("an example section")..];
    let block = example.split("//! ```").nth(1).expect("a code block");
    let hex: String = block
        .lines()
        .skip(1) // the "text" of the opening fence
        .map(|line| {
            let line = line.trim_start_matches("//!").trim_start();
            line.split("  ").next().unwrap_or("").to_owned()
        })
        .collect::<Vec<_>>()
        .join(" ");
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex in the example"))
        .collect()
}

#[test]
fn announce_bytes_match_the_documented_example() {
    let a = lamp();
    let bytes = Advert::Announce(a.clone()).to_bytes().unwrap();
    assert_eq!(bytes, documented_example(), "{}", hex_of(&bytes));
    assert_eq!(bytes.len(), 130);
    // The id is not on the wire: it is the hash of the key.
    assert_eq!(a.key_bytes(), &LAMP_KEY.public().to_bytes());
    assert_eq!(a.id(), DeviceId::from_bytes(LAMP_KEY.public().id()));
    assert_eq!(
        a.id(),
        DeviceId::from_bytes(hail_crypto::identity::device_id(a.key_bytes()))
    );
    assert_eq!(a.id().to_string(), "a4b2e4ebb79d0179c93c658b28b65c2a");
    let Advert::Announce(back) = Advert::decode(&bytes).unwrap() else {
        panic!("an announce")
    };
    assert_eq!(back, a);
    back.verify().unwrap();
}

/// `n` as a (shortest) varint.
fn varint(n: usize) -> Vec<u8> {
    postcard::to_allocvec(&n).unwrap()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x} ")).collect()
}

#[test]
fn probe_goodbye_and_ipv6_bytes() {
    let id = DeviceId::from_bytes([0xab; 16]);
    let probe = Advert::Probe { from: id }.to_bytes().unwrap();
    assert_eq!(&probe[..6], b"HAIL\x02\x02");
    assert_eq!(&probe[6..], &[0xab; 16]);

    // On a link a goodbye is the id alone: the link proves who sends it.
    let bye = LinkMessage::Goodbye { from: id }.to_bytes().unwrap();
    assert_eq!(&bye[..6], b"HAIL\x02\x03");
    assert_eq!(&bye[6..], &[0xab; 16]);
    assert_eq!(
        LinkMessage::decode(&bye).unwrap(),
        LinkMessage::Goodbye { from: id }
    );
    // On the group it is signed: key, seq, signature.
    let g = Goodbye::sign(&LAMP_KEY, 300);
    let bytes = Advert::Goodbye(g.clone()).to_bytes().unwrap();
    assert_eq!(&bytes[..6], b"HAIL\x02\x03");
    assert_eq!(&bytes[6..38], &LAMP_KEY.public().to_bytes());
    assert_eq!(&bytes[38..40], &[0xac, 0x02]); // 300 as a varint
    assert_eq!(bytes.len(), 6 + 32 + 2 + SIGNATURE_LEN);
    assert_eq!(g.id(), lamp().id());
    assert_eq!(g.seq(), 300);
    assert_eq!(Advert::decode(&bytes).unwrap(), Advert::Goodbye(g.clone()));
    g.verify().unwrap();
    // A link goodbye sent to the group is too short to carry a signature.
    assert!(matches!(
        Advert::decode(&bye),
        Err(AdvertError::Malformed {
            kind: Kind::GOODBYE,
            ..
        })
    ));

    let mut body = lamp_body();
    body.addresses = vec![IpAddr::V6(Ipv6Addr::LOCALHOST)];
    body.metadata.clear();
    let bytes = Advert::Announce(Announce::sign(&LAMP_KEY, 1, body).unwrap())
        .to_bytes()
        .unwrap();
    let tail = &bytes[bytes.len() - SIGNATURE_LEN - 19..bytes.len() - SIGNATURE_LEN];
    assert_eq!(tail[..2], [0x01, 0x01]); // one address, IPv6
    assert_eq!(tail[2..18], Ipv6Addr::LOCALHOST.octets());
    assert_eq!(tail[18], 0x00); // no metadata
}

/// 16 metadata entries of 512 bytes in all, with as many values of 128 bytes or more (a
/// two-byte length) as fit: the longest encoding metadata can have (548 bytes).
fn largest_metadata() -> Metadata {
    let mut m = Metadata::new();
    for (i, key) in ('a'..='p').enumerate() {
        let len = match i {
            0..=2 => 128,
            3..=14 => 8,
            _ => 16,
        };
        m.insert(key.to_string(), "v".repeat(len));
    }
    m
}

fn largest_body() -> AnnounceBody {
    AnnounceBody {
        name: "x".repeat(MAX_NAME_LEN),
        port: u16::MAX,
        lease: Duration::from_millis(u64::from(u32::MAX)),
        addresses: vec![IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4)); MAX_ADDRESSES],
        metadata: largest_metadata(),
    }
}

#[test]
fn the_largest_announce_fits_the_datagram_limit() {
    let m = largest_metadata();
    assert_eq!(validate_metadata(&m), Ok(()));
    assert_eq!(m.len(), MAX_METADATA_ENTRIES);
    assert_eq!(
        m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
        MAX_METADATA_LEN
    );
    assert_eq!(postcard::to_allocvec(&m).unwrap().len(), 548);

    let a = Announce::sign(&LAMP_KEY, u64::MAX, largest_body()).unwrap();
    let bytes = Advert::Announce(a.clone()).to_bytes().unwrap();
    // 6 header + 32 key + 10 seq + 65 name + 3 port + 5 lease + 137 addresses
    // + 548 metadata + 64 signature.
    assert_eq!(bytes.len(), 6 + 32 + 10 + 65 + 3 + 5 + 137 + 548 + 64);
    assert_eq!(bytes.len(), LARGEST_ANNOUNCE);
    assert!(bytes.len() <= MAX_ADVERT_LEN);
    assert!(
        include_str!("mod.rs").contains(&format!(
            "largest possible announce is {LARGEST_ANNOUNCE} bytes"
        )),
        "the module docs quote the largest announce"
    );

    let hello = LinkMessage::Hello(Hello {
        tag: u64::MAX,
        announce: a.clone(),
    });
    assert_eq!(
        hello.to_bytes().unwrap().len(),
        6 + 10 + 2 + LARGEST_ANNOUNCE
    );
    // A full gossip message of the largest records fits a link message.
    let record = PeerRecord {
        announce: a,
        observed: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    };
    let peers = LinkMessage::Peers(vec![record; MAX_PEER_RECORDS])
        .to_bytes()
        .unwrap();
    assert_eq!(
        peers.len(),
        6 + 1 + MAX_PEER_RECORDS * (2 + LARGEST_ANNOUNCE + 18)
    );
    assert!(peers.len() <= MAX_LINK_MESSAGE_LEN);
}

#[test]
fn lease_saturates_and_rounds_down() {
    let lease_after = |lease| {
        let mut body = lamp_body();
        body.lease = lease;
        let a = Announce::sign(&LAMP_KEY, 1, body).unwrap();
        let Advert::Announce(back) =
            Advert::decode(&Advert::Announce(a).to_bytes().unwrap()).unwrap()
        else {
            panic!("an announce")
        };
        // The signature covers the lease as sent.
        back.verify().unwrap();
        back.body.lease
    };
    assert_eq!(
        lease_after(Duration::from_secs(100 * 24 * 3600)),
        Duration::from_millis(u64::from(u32::MAX))
    );
    assert_eq!(
        lease_after(Duration::from_micros(2500)),
        Duration::from_millis(2)
    );
}

#[test]
fn header_errors_are_typed() {
    assert!(matches!(
        Advert::decode(b"HAI"),
        Err(AdvertError::TooShort { len: 3 })
    ));
    assert!(matches!(
        Advert::decode(b"HALL\x02\x01"),
        Err(AdvertError::BadMagic)
    ));
    assert!(matches!(
        Advert::decode(b"HAIL\x03\x01anything"),
        Err(AdvertError::UnsupportedVersion { version: 3 })
    ));
    assert!(matches!(
        Advert::decode(b"HAIL\x02\x7f"),
        Err(AdvertError::UnknownKind { kind: Kind(0x7f) })
    ));
    let big = vec![0u8; MAX_ADVERT_LEN + 1];
    assert!(matches!(
        Advert::decode(&big),
        Err(AdvertError::TooLong {
            len: 1025,
            max: 1024
        })
    ));
    let big = vec![0u8; MAX_LINK_MESSAGE_LEN + 1];
    assert!(matches!(
        LinkMessage::decode(&big),
        Err(AdvertError::TooLong { .. })
    ));
}

/// The documented version-1 announce (`lamp`, id `11` × 16) and a version-1 hello.
const V1_ANNOUNCE: &str = "48 41 49 4c 01 01 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11
    04 6c 61 6d 70 c0 b8 02 b8 17 01 00 7f 00 00 01";

#[test]
fn version_1_datagrams_are_unsupported_and_counted_as_dropped() {
    let v1 = hex(V1_ANNOUNCE);
    assert_eq!(v1.len(), 38);
    assert!(matches!(
        Advert::decode(&v1),
        Err(AdvertError::UnsupportedVersion { version: 1 })
    ));
    let mut v1_hello = b"HAIL\x01\x04\x07".to_vec();
    v1_hello.extend_from_slice(&v1[6..]);
    assert!(matches!(
        LinkMessage::decode(&v1_hello),
        Err(AdvertError::UnsupportedVersion { version: 1 })
    ));
    // A v2 hello carrying a v1 announce is refused the same way.
    let mut hello = b"HAIL\x02\x04\x07".to_vec();
    hello.push(u8::try_from(v1.len()).unwrap());
    hello.extend_from_slice(&v1);
    assert!(matches!(
        LinkMessage::decode(&hello),
        Err(AdvertError::UnsupportedVersion { version: 1 })
    ));

    let local = crate::LocalDevice::new(Arc::new(Identity::from_secret_bytes(&[9; 32])), "me", 1);
    let mut table = crate::PeerTable::new(crate::PeerTableConfig::default(), local, 0).unwrap();
    let now = Instant::now();
    table.start(now);
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 5670);
    assert!(matches!(
        table.handle_datagram(&v1, from, now),
        Err(AdvertError::UnsupportedVersion { version: 1 })
    ));
    assert_eq!(table.stats().adverts_dropped, 1);
    assert_eq!(table.stats().adverts_received, 0);
    assert!(table.discovered().is_empty());
    // The same announce in version 2 is received.
    let v2 = Advert::Announce(lamp()).to_bytes().unwrap();
    table.handle_datagram(&v2, from, now).unwrap();
    assert_eq!(table.stats().adverts_dropped, 1);
    assert_eq!(table.stats().adverts_received, 1);
}

#[test]
fn kinds_are_checked_per_transport() {
    let hello = LinkMessage::Hello(Hello {
        tag: 7,
        announce: lamp(),
    })
    .to_bytes()
    .unwrap();
    assert!(matches!(
        Advert::decode(&hello),
        Err(AdvertError::UnknownKind { kind: Kind::HELLO })
    ));
    let announce = Advert::Announce(lamp()).to_bytes().unwrap();
    assert!(matches!(
        LinkMessage::decode(&announce),
        Err(AdvertError::UnknownKind {
            kind: Kind::ANNOUNCE
        })
    ));
    // A hello must carry an announce, not another kind.
    let probe = Advert::Probe {
        from: DeviceId::from_bytes([1; 16]),
    }
    .to_bytes()
    .unwrap();
    let mut v = b"HAIL\x02\x04\x00".to_vec();
    v.push(u8::try_from(probe.len()).unwrap());
    v.extend_from_slice(&probe);
    assert!(matches!(
        LinkMessage::decode(&v),
        Err(AdvertError::UnknownKind { kind: Kind::PROBE })
    ));
    assert_eq!(Kind::HELLO.to_string(), "hello");
    assert_eq!(Kind(0x42).to_string(), "0x42");
    assert_eq!(format!("{:?}", Kind(0x42)), "Kind(0x42)");
    assert_eq!(format!("{:?}", Kind::PROBE), "Kind::PROBE");
}

fn record(announce: Announce, observed: Option<IpAddr>) -> PeerRecord {
    PeerRecord { announce, observed }
}

#[test]
fn every_truncation_and_any_trailing_byte_is_malformed() {
    let adverts = [
        Advert::Announce(lamp()).to_bytes().unwrap(),
        Advert::Probe {
            from: DeviceId::from_bytes([3; 16]),
        }
        .to_bytes()
        .unwrap(),
        Advert::Goodbye(Goodbye::sign(&LAMP_KEY, 2))
            .to_bytes()
            .unwrap(),
    ];
    let links = [
        LinkMessage::Hello(Hello {
            tag: 300,
            announce: lamp(),
        })
        .to_bytes()
        .unwrap(),
        LinkMessage::Peers(vec![
            record(lamp(), None),
            record(lamp(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        ])
        .to_bytes()
        .unwrap(),
        LinkMessage::Goodbye {
            from: DeviceId::from_bytes([3; 16]),
        }
        .to_bytes()
        .unwrap(),
    ];
    type Decode = fn(&[u8]) -> Result<(), AdvertError>;
    let decoders: [(&[Vec<u8>], Decode); 2] = [
        (&adverts, |b| Advert::decode(b).map(drop)),
        (&links, |b| LinkMessage::decode(b).map(drop)),
    ];
    for (messages, decode) in decoders {
        for bytes in messages {
            decode(bytes).unwrap();
            for cut in HEADER_LEN..bytes.len() {
                let err = decode(&bytes[..cut]).unwrap_err();
                assert!(
                    matches!(err, AdvertError::Malformed { .. }),
                    "kind {}, cut at {cut}: {err}",
                    bytes[5]
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            let err = decode(&longer).unwrap_err();
            assert!(
                matches!(
                    err,
                    AdvertError::Malformed {
                        source: hail_wire::WireError::TrailingBytes { count: 1 },
                        ..
                    }
                ),
                "kind {}: {err}",
                bytes[5]
            );
        }
    }
}

#[test]
fn a_hello_whose_inner_announce_is_truncated_is_malformed() {
    let inner = Advert::Announce(lamp()).to_bytes().unwrap();
    for cut in 0..inner.len() {
        // The byte string's length matches what follows: only the announce is short.
        let mut v = b"HAIL\x02\x04\x07".to_vec();
        v.extend_from_slice(&varint(cut));
        v.extend_from_slice(&inner[..cut]);
        let err = LinkMessage::decode(&v).unwrap_err();
        if cut < HEADER_LEN {
            assert!(
                matches!(err, AdvertError::TooShort { len } if len == cut),
                "cut at {cut}: {err}"
            );
        } else {
            assert!(
                matches!(
                    err,
                    AdvertError::Malformed {
                        kind: Kind::ANNOUNCE,
                        ..
                    }
                ),
                "cut at {cut}: {err}"
            );
        }
        // The same in a gossip record.
        let mut v = b"HAIL\x02\x05\x01".to_vec();
        v.extend_from_slice(&varint(cut));
        v.extend_from_slice(&inner[..cut]);
        v.push(0x00);
        assert!(LinkMessage::decode(&v).is_err(), "record cut at {cut}");
    }
    // The outer length claims more than follows: the hello itself is malformed.
    let mut v = b"HAIL\x02\x04\x07".to_vec();
    v.extend_from_slice(&varint(inner.len()));
    v.extend_from_slice(&inner[..inner.len() - 1]);
    assert!(matches!(
        LinkMessage::decode(&v),
        Err(AdvertError::Malformed {
            kind: Kind::HELLO,
            ..
        })
    ));
}

/// Builds an announce byte by byte from the layout in the module docs, independently of
/// the encoder. Every varint is written in its shortest form plus as many extra (overlong,
/// non-canonical) bytes as `pad` still allows, up to the longest varint of its type.
struct ByHand {
    out: Vec<u8>,
    pad: usize,
}

impl ByHand {
    fn varint(&mut self, v: u64, longest: usize) {
        let shortest = (1..=10).find(|&n| n == 10 || v >> (7 * n) == 0).unwrap();
        let extra = self.pad.min(longest - shortest);
        self.pad -= extra;
        let len = shortest + extra;
        for i in 0..len {
            let bits = u8::try_from((v >> (7 * i)) & 0x7f).unwrap();
            self.out.push(if i + 1 < len { bits | 0x80 } else { bits });
        }
    }

    fn string(&mut self, s: &str) {
        self.varint(s.len() as u64, 10);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn announce(a: &Announce, pad: usize) -> Vec<u8> {
        let mut w = Self {
            out: b"HAIL\x02\x01".to_vec(),
            pad,
        };
        w.out.extend_from_slice(a.key_bytes());
        w.varint(a.seq(), 10);
        w.string(&a.body.name);
        w.varint(u64::from(a.body.port), 3);
        w.varint(a.body.lease.as_millis().try_into().unwrap(), 5);
        w.varint(a.body.addresses.len() as u64, 10);
        for ip in &a.body.addresses {
            match ip {
                IpAddr::V4(v4) => {
                    w.varint(0, 5);
                    w.out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    w.varint(1, 5);
                    w.out.extend_from_slice(&v6.octets());
                }
            }
        }
        w.varint(a.body.metadata.len() as u64, 10);
        for (k, v) in &a.body.metadata {
            w.string(k);
            w.string(v);
        }
        assert_eq!(w.pad, 0, "not enough varints to pad");
        w.out.extend_from_slice(a.signature().as_bytes());
        w.out
    }
}

#[test]
fn an_overlong_varint_is_refused_so_each_announce_has_one_encoding() {
    let a = lamp();
    assert_eq!(
        ByHand::announce(&a, 0),
        Advert::Announce(a.clone()).to_bytes().unwrap()
    );
    // postcard itself accepts `81 00` for 1; the signature covers the canonical bytes, so
    // without a check the same signed announce would have many encodings.
    for pad in 1..=20 {
        let bytes = ByHand::announce(&a, pad);
        assert!(
            matches!(
                Advert::decode(&bytes),
                Err(AdvertError::Malformed {
                    kind: Kind::ANNOUNCE,
                    source: hail_wire::WireError::Postcard(postcard::Error::DeserializeBadVarint),
                })
            ),
            "pad {pad}"
        );
    }
    // The same for the sequence number of a goodbye.
    let g = Advert::Goodbye(Goodbye::sign(&LAMP_KEY, 1))
        .to_bytes()
        .unwrap();
    let mut overlong = g[..38].to_vec();
    overlong.extend_from_slice(&[0x81, 0x00]);
    overlong.extend_from_slice(&g[39..]);
    assert!(matches!(
        Advert::decode(&overlong),
        Err(AdvertError::Malformed {
            kind: Kind::GOODBYE,
            ..
        })
    ));
}

#[test]
fn an_inner_announce_longer_than_a_datagram_is_refused_not_cut() {
    // A 1024-byte announce (the largest, padded with overlong varints) and one byte more:
    // a decoder that keeps the first 1024 bytes of the string and drops the rest would
    // accept it.
    let a = Announce::sign(&LAMP_KEY, u64::MAX, largest_body()).unwrap();
    let mut inner = ByHand::announce(&a, MAX_ADVERT_LEN - LARGEST_ANNOUNCE);
    assert_eq!(inner.len(), MAX_ADVERT_LEN);
    inner.push(0xee);
    let mut hello = b"HAIL\x02\x04\x07".to_vec();
    hello.extend_from_slice(&[0x81, 0x08]); // 1025
    hello.extend_from_slice(&inner);
    assert!(matches!(
        LinkMessage::decode(&hello),
        Err(AdvertError::TooLong {
            len: 1025,
            max: 1024
        })
    ));
    let mut peers = b"HAIL\x02\x05\x01".to_vec();
    peers.extend_from_slice(&[0x81, 0x08]);
    peers.extend_from_slice(&inner);
    peers.push(0x00);
    assert!(matches!(
        LinkMessage::decode(&peers),
        Err(AdvertError::TooLong {
            len: 1025,
            max: 1024
        })
    ));
}

/// An announce body by hand, with the lamp's key, seq 1, port 1, lease 1 ms, the given
/// name bytes, address list and metadata (both with their counts), and a zero signature.
fn raw_announce(name: &[u8], addresses: &[u8], metadata: &[u8]) -> Vec<u8> {
    let mut v = b"HAIL\x02\x01".to_vec();
    v.extend_from_slice(&LAMP_KEY.public().to_bytes());
    v.push(0x01);
    v.extend_from_slice(&varint(name.len()));
    v.extend_from_slice(name);
    v.extend_from_slice(&[0x01, 0x01]);
    v.extend_from_slice(addresses);
    v.extend_from_slice(metadata);
    v.extend_from_slice(&[0; SIGNATURE_LEN]);
    v
}

#[test]
fn a_hand_built_announce_decodes_and_only_its_signature_is_wrong() {
    let v = raw_announce(b"lamp", &[0x00], &[0x00]);
    let Advert::Announce(a) = Advert::decode(&v).unwrap() else {
        panic!("an announce")
    };
    assert_eq!(a.body.name, "lamp");
    assert!(matches!(
        a.verify(),
        Err(AdvertError::BadSignature {
            kind: Kind::ANNOUNCE
        })
    ));
}

#[test]
fn invalid_names_on_the_wire_are_rejected() {
    for (name, want) in [
        (&b""[..], NameError::Empty),
        (&b"a\nb"[..], NameError::ControlCharacter),
        (&[b'x'; 65][..], NameError::TooLong { len: 65, max: 64 }),
        (
            "A\u{200B}".as_bytes(),
            NameError::InvisibleCharacter('\u{200B}'),
        ),
        (
            "\u{202E}evil".as_bytes(),
            NameError::InvisibleCharacter('\u{202E}'),
        ),
        (
            "A\u{3164}".as_bytes(),
            NameError::InvisibleCharacter('\u{3164}'),
        ),
        ("A\u{00A0}B".as_bytes(), NameError::Whitespace),
        (&b" A"[..], NameError::Whitespace),
        ("e\u{301}".as_bytes(), NameError::NotNormalized),
    ] {
        let v = raw_announce(name, &[0x00], &[0x00]);
        match Advert::decode(&v) {
            Err(AdvertError::InvalidName(got)) => assert_eq!(got, want),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    // Not UTF-8 at all.
    let v = raw_announce(&[0xff, 0xfe], &[0x00], &[0x00]);
    assert!(matches!(
        Advert::decode(&v),
        Err(AdvertError::Malformed { .. })
    ));
}

#[test]
fn too_many_addresses_is_typed_and_bounded() {
    for count in [9u8, 120] {
        let mut list = vec![count];
        for i in 0..count {
            list.extend_from_slice(&[0x00, 10, 0, 0, i]);
        }
        let v = raw_announce(b"lamp", &list, &[0x00]);
        assert!(v.len() <= MAX_ADVERT_LEN);
        assert!(matches!(
            Advert::decode(&v),
            Err(AdvertError::TooManyAddresses { count: c, max: 8 }) if c == usize::from(count)
        ));
    }
    // A count that claims four billion addresses in a short datagram: an error, no
    // allocation for the claim.
    let v = raw_announce(
        b"lamp",
        &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 1, 2, 3, 4],
        &[0x00],
    );
    assert!(matches!(
        Advert::decode(&v),
        Err(AdvertError::Malformed { .. })
    ));
    // A bad address family tag.
    let v = raw_announce(b"lamp", &[0x01, 0x02, 1, 2, 3, 4], &[0x00]);
    assert!(matches!(
        Advert::decode(&v),
        Err(AdvertError::Malformed { .. })
    ));
}

#[test]
fn bounded_lists_keep_at_most_their_limit_while_read() {
    // 1000 items claimed and present: 4 kept, all counted.
    let mut v = vec![0xe8, 0x07];
    v.extend(std::iter::repeat_n(0x2a, 1000));
    let b: Bounded<u8, 4> = hail_wire::postcard_from_slice(&v, MAX_DEPTH).unwrap();
    assert_eq!(b.items, [0x2a; 4]);
    assert_eq!(b.count, 1000);
    assert!(b.items.capacity() <= 4);
    // A claim of u32::MAX items with none present allocates nothing for the claim.
    let r: Result<Bounded<u8, 4>, _> =
        hail_wire::postcard_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f], MAX_DEPTH);
    assert!(r.is_err());
}

#[test]
fn too_many_peer_records_is_typed() {
    let err = LinkMessage::Peers(vec![record(lamp(), None); 17])
        .to_bytes()
        .unwrap_err();
    assert!(matches!(
        err,
        AdvertError::TooManyPeers { count: 17, max: 16 }
    ));
    // Hand-build 17 records.
    let one = LinkMessage::Peers(vec![record(lamp(), None)])
        .to_bytes()
        .unwrap();
    let body = &one[HEADER_LEN + 1..];
    let mut v = b"HAIL\x02\x05".to_vec();
    v.push(17);
    for _ in 0..17 {
        v.extend_from_slice(body);
    }
    assert!(v.len() <= MAX_LINK_MESSAGE_LEN);
    assert!(matches!(
        LinkMessage::decode(&v),
        Err(AdvertError::TooManyPeers { count: 17, max: 16 })
    ));
}

#[test]
fn a_peer_record_round_trips_with_and_without_observed() {
    let announce = Advert::Announce(lamp()).to_bytes().unwrap();
    for (observed, tail) in [
        (None, vec![0x00]),
        (
            Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
            vec![0x01, 0x00, 10, 1, 2, 3],
        ),
        (Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), {
            let mut t = vec![0x01, 0x01];
            t.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            t
        }),
    ] {
        let msg = LinkMessage::Peers(vec![record(lamp(), observed)]);
        let bytes = msg.to_bytes().unwrap();
        // Header, one record: the announce as a byte string, then `observed`.
        let mut expected = b"HAIL\x02\x05\x01".to_vec();
        expected.extend_from_slice(&varint(announce.len()));
        expected.extend_from_slice(&announce);
        expected.extend_from_slice(&tail);
        assert_eq!(bytes, expected);
        let LinkMessage::Peers(back) = LinkMessage::decode(&bytes).unwrap() else {
            panic!("peers")
        };
        assert_eq!(back, [record(lamp(), observed)]);
        back[0].announce.verify().unwrap();
    }
    // An `observed` tag other than 0 or 1.
    let mut bad = LinkMessage::Peers(vec![record(lamp(), None)])
        .to_bytes()
        .unwrap();
    *bad.last_mut().unwrap() = 0x02;
    assert!(matches!(
        LinkMessage::decode(&bad),
        Err(AdvertError::Malformed {
            kind: Kind::PEERS,
            ..
        })
    ));
}

#[test]
fn encode_refuses_invalid_input_and_leaves_dst_alone() {
    let mut dst = b"keep".to_vec();
    // Invalid bodies cannot be signed...
    let mut body = lamp_body();
    body.name = String::new();
    assert!(matches!(
        Announce::sign(&LAMP_KEY, 1, body),
        Err(AdvertError::InvalidName(NameError::Empty))
    ));
    let mut body = lamp_body();
    body.metadata.insert("Bad".into(), "x".into());
    assert!(matches!(
        Announce::sign(&LAMP_KEY, 1, body),
        Err(AdvertError::InvalidMetadata(MetadataError::InvalidKey(_)))
    ));
    // ... nor encoded when the body is made invalid after signing.
    let mut a = lamp();
    a.body.name = String::new();
    assert!(matches!(
        Advert::Announce(a).encode(&mut dst),
        Err(AdvertError::InvalidName(NameError::Empty))
    ));
    let mut a = lamp();
    a.body.addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST); 9];
    assert!(matches!(
        Advert::Announce(a.clone()).encode(&mut dst),
        Err(AdvertError::TooManyAddresses { count: 9, max: 8 })
    ));
    assert!(matches!(
        LinkMessage::Hello(Hello {
            tag: 1,
            announce: a
        })
        .encode(&mut dst),
        Err(AdvertError::TooManyAddresses { count: 9, max: 8 })
    ));
    let mut a = lamp();
    a.body.metadata.insert("note".into(), "tab\there".into());
    assert!(matches!(
        Advert::Announce(a.clone()).encode(&mut dst),
        Err(AdvertError::InvalidMetadata(MetadataError::InvalidValue(_)))
    ));
    let mut bad = lamp();
    bad.body.name = "tab\there".into();
    assert!(matches!(
        LinkMessage::Peers(vec![record(lamp(), None), record(bad, None)]).encode(&mut dst),
        Err(AdvertError::InvalidName(NameError::ControlCharacter))
    ));
    assert!(matches!(
        LinkMessage::Peers(vec![record(lamp(), None); 17]).encode(&mut dst),
        Err(AdvertError::TooManyPeers { .. })
    ));
    assert_eq!(dst, b"keep");
    // Appends after what is there.
    Advert::Probe {
        from: DeviceId::from_bytes([1; 16]),
    }
    .encode(&mut dst)
    .unwrap();
    Advert::Announce(lamp()).encode(&mut dst).unwrap();
    assert_eq!(&dst[..4], b"keep");
    assert!(Advert::decode(&dst[4..4 + 22]).is_ok());
    assert!(Advert::decode(&dst[4 + 22..]).is_ok());
}

#[test]
fn a_signed_announce_and_goodbye_verify() {
    let a = lamp();
    a.verify().unwrap();
    assert_eq!(a.seq(), 1);
    let g = Goodbye::sign(&LAMP_KEY, 2);
    g.verify().unwrap();
}

#[test]
fn a_body_changed_after_signing_fails_verify() {
    let changes: [fn(&mut AnnounceBody); 6] = [
        |b| b.name = "lamb".into(),
        |b| b.port += 1,
        |b| b.lease += Duration::from_millis(1),
        |b| b.addresses.push(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        |b| b.addresses.clear(),
        |b| {
            b.metadata.insert("room".into(), "hall".into());
        },
    ];
    for (i, change) in changes.into_iter().enumerate() {
        let mut a = lamp();
        change(&mut a.body);
        assert!(
            matches!(
                a.verify(),
                Err(AdvertError::BadSignature {
                    kind: Kind::ANNOUNCE
                })
            ),
            "change {i}"
        );
        // And on the wire: the changed body encodes, decodes, and still fails.
        let Advert::Announce(back) =
            Advert::decode(&Advert::Announce(a).to_bytes().unwrap()).unwrap()
        else {
            panic!("an announce")
        };
        assert!(back.verify().is_err(), "change {i}");
    }
    // A lease changed by less than a millisecond is the same announce on the wire.
    let mut a = lamp();
    a.body.lease += Duration::from_micros(10);
    a.verify().unwrap();
}

#[test]
fn a_signature_from_another_key_fails() {
    // The lamp's announce with another device's key: decodes (as that device's id), but
    // the signature is the lamp's.
    let mut bytes = Advert::Announce(lamp()).to_bytes().unwrap();
    bytes[6..38].copy_from_slice(&OTHER_KEY.public().to_bytes());
    let Advert::Announce(a) = Advert::decode(&bytes).unwrap() else {
        panic!("an announce")
    };
    assert_eq!(a.id(), DeviceId::from_bytes(OTHER_KEY.public().id()));
    assert!(matches!(
        a.verify(),
        Err(AdvertError::BadSignature {
            kind: Kind::ANNOUNCE
        })
    ));
    // Another device's signature on the lamp's key.
    let theirs = Announce::sign(&OTHER_KEY, 1, lamp_body()).unwrap();
    let mut forged = lamp();
    forged.signature = *theirs.signature();
    assert!(forged.verify().is_err());

    let mut bytes = Advert::Goodbye(Goodbye::sign(&LAMP_KEY, 2))
        .to_bytes()
        .unwrap();
    bytes[6..38].copy_from_slice(&OTHER_KEY.public().to_bytes());
    let Advert::Goodbye(g) = Advert::decode(&bytes).unwrap() else {
        panic!("a goodbye")
    };
    assert!(matches!(
        g.verify(),
        Err(AdvertError::BadSignature {
            kind: Kind::GOODBYE
        })
    ));
}

#[test]
fn a_signature_made_for_another_purpose_fails() {
    // The goodbye's bytes signed by the right key, but as an announce.
    let g = Goodbye::sign(&LAMP_KEY, 5);
    let mut unsigned = Vec::new();
    g.encode_unsigned(&mut unsigned);
    let wrong = Goodbye {
        signature: LAMP_KEY.sign(ANNOUNCE_CONTEXT, &unsigned),
        ..g
    };
    assert!(wrong.verify().is_err());
    // And an announce signed under the goodbye context.
    let a = lamp();
    let mut unsigned = Vec::new();
    a.encode_unsigned(&mut unsigned).unwrap();
    let wrong = Announce {
        signature: LAMP_KEY.sign(GOODBYE_CONTEXT, &unsigned),
        ..a
    };
    assert!(wrong.verify().is_err());
}

/// Key bytes that are no usable Ed25519 key: not canonical (y ≥ p), and three points of
/// small order (y = 1, the neutral element; y = 0, order 4; y = -1, order 2).
fn invalid_keys() -> [[u8; 32]; 4] {
    let mut minus_one = [0xff; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let mut one = [0; 32];
    one[0] = 1;
    [[0xff; 32], one, [0; 32], minus_one]
}

#[test]
fn an_invalid_key_decodes_and_fails_verify_without_a_panic() {
    for key in invalid_keys() {
        assert!(PublicKey::from_bytes(&key).is_err(), "{key:02x?}");
        let mut bytes = Advert::Announce(lamp()).to_bytes().unwrap();
        bytes[6..38].copy_from_slice(&key);
        let Advert::Announce(a) = Advert::decode(&bytes).unwrap() else {
            panic!("an announce")
        };
        assert_eq!(a.key_bytes(), &key);
        assert_eq!(
            a.id(),
            DeviceId::from_bytes(hail_crypto::identity::device_id(&key))
        );
        assert!(matches!(
            a.verify(),
            Err(AdvertError::BadSignature {
                kind: Kind::ANNOUNCE
            })
        ));
        let mut bytes = Advert::Goodbye(Goodbye::sign(&LAMP_KEY, 2))
            .to_bytes()
            .unwrap();
        bytes[6..38].copy_from_slice(&key);
        let Advert::Goodbye(g) = Advert::decode(&bytes).unwrap() else {
            panic!("a goodbye")
        };
        assert!(matches!(
            g.verify(),
            Err(AdvertError::BadSignature {
                kind: Kind::GOODBYE
            })
        ));
    }
    // With the small-order key y = 1, the signature R = 1, S = 0 satisfies the plain
    // Ed25519 equation for every message; strict verification refuses it.
    let mut forged = Advert::Announce(lamp()).to_bytes().unwrap();
    let mut one = [0; 32];
    one[0] = 1;
    forged[6..38].copy_from_slice(&one);
    let n = forged.len();
    forged[n - 64..].fill(0);
    forged[n - 64] = 1;
    let Advert::Announce(a) = Advert::decode(&forged).unwrap() else {
        panic!("an announce")
    };
    assert!(a.verify().is_err());
}

#[test]
fn metadata_limits() {
    let entries =
        |n: usize| -> Metadata { (0..n).map(|i| (format!("k{i}"), "v".into())).collect() };
    assert_eq!(validate_metadata(&Metadata::new()), Ok(()));
    assert_eq!(validate_metadata(&entries(16)), Ok(()));
    assert_eq!(
        validate_metadata(&entries(17)),
        Err(MetadataError::TooManyEntries { count: 17, max: 16 })
    );
    let long = |len: usize| Metadata::from([("k".into(), "v".repeat(len - 1))]);
    assert_eq!(validate_metadata(&long(512)), Ok(()));
    assert_eq!(
        validate_metadata(&long(513)),
        Err(MetadataError::TooLong { len: 513, max: 512 })
    );
    // Multi-byte characters count in bytes.
    let wide = Metadata::from([("k".into(), "é".repeat(256))]);
    assert_eq!(
        validate_metadata(&wide),
        Err(MetadataError::TooLong { len: 513, max: 512 })
    );
    for good in ["a", "role", "fw.version", "a_b-c", "0", &"k".repeat(32)] {
        let m = Metadata::from([(good.to_string(), String::new())]);
        assert_eq!(validate_metadata(&m), Ok(()), "{good:?}");
    }
    for bad in ["", "Role", "a b", "ä", "a/b", "a\n", &"k".repeat(33)] {
        let m = Metadata::from([(bad.to_string(), String::new())]);
        assert_eq!(
            validate_metadata(&m),
            Err(MetadataError::InvalidKey(bad.into())),
            "{bad:?}"
        );
    }
    for good in ["", "lamp on", "ünïcode ✓", "a=b; c"] {
        let m = Metadata::from([("k".into(), good.to_string())]);
        assert_eq!(validate_metadata(&m), Ok(()), "{good:?}");
    }
    for bad in ["a\nb", "\t", "\u{7f}", "\u{85}", "\u{1b}[2J"] {
        let m = Metadata::from([("k".into(), bad.to_string())]);
        assert_eq!(
            validate_metadata(&m),
            Err(MetadataError::InvalidValue("k".into())),
            "{bad:?}"
        );
    }
}

/// Metadata on the wire: `count`, then each key and value as a length and bytes.
fn raw_metadata(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = varint(pairs.len());
    for (k, val) in pairs {
        for s in [k, val] {
            v.extend_from_slice(&varint(s.len()));
            v.extend_from_slice(s.as_bytes());
        }
    }
    v
}

#[test]
fn metadata_on_the_wire_is_canonical_and_validated() {
    let decode = |pairs: &[(&str, &str)]| {
        Advert::decode(&raw_announce(b"lamp", &[0x00], &raw_metadata(pairs)))
    };
    let Ok(Advert::Announce(a)) = decode(&[("a", "1"), ("b", "2")]) else {
        panic!("ascending keys decode")
    };
    assert_eq!(a.body.metadata.len(), 2);
    for pairs in [
        &[("b", "1"), ("a", "2")][..],
        &[("a", "1"), ("a", "2")],
        &[("a", "1"), ("c", "2"), ("b", "3")],
        &[("ab", "1"), ("a", "2")],
    ] {
        assert!(
            matches!(
                decode(pairs),
                Err(AdvertError::InvalidMetadata(MetadataError::NotCanonical))
            ),
            "{pairs:?}"
        );
    }
    let keys: Vec<String> = (0..17).map(|i| format!("k{i:02}")).collect();
    let many: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "")).collect();
    assert!(matches!(
        decode(&many),
        Err(AdvertError::InvalidMetadata(
            MetadataError::TooManyEntries { count: 17, max: 16 }
        ))
    ));
    assert!(decode(&many[..16]).is_ok());
    assert!(matches!(
        decode(&[("Role", "lamp")]),
        Err(AdvertError::InvalidMetadata(MetadataError::InvalidKey(_)))
    ));
    assert!(matches!(
        decode(&[("role", "la\rmp")]),
        Err(AdvertError::InvalidMetadata(MetadataError::InvalidValue(_)))
    ));
    let v = "v".repeat(100);
    let long = [
        ("a", &v[..]),
        ("b", &v),
        ("c", &v),
        ("d", &v),
        ("e", &v),
        ("f", ""),
    ];
    assert!(decode(&long).is_ok()); // 506 bytes
    let long = [
        ("a", &v[..]),
        ("b", &v),
        ("c", &v),
        ("d", &v),
        ("e", &v),
        ("f", "vvvvvvv"),
    ];
    assert!(matches!(
        decode(&long),
        Err(AdvertError::InvalidMetadata(MetadataError::TooLong {
            len: 513,
            max: 512
        }))
    ));
}

#[test]
fn names_are_validated() {
    assert!(validate_name("kitchen lamp ✓").is_ok());
    assert_eq!(validate_name(""), Err(NameError::Empty));
    assert_eq!(
        validate_name("a\u{1b}[2J"),
        Err(NameError::ControlCharacter)
    );
    assert!(validate_name(&"é".repeat(32)).is_ok()); // 64 bytes
    assert_eq!(
        validate_name(&"é".repeat(33)),
        Err(NameError::TooLong { len: 66, max: 64 })
    );
    // Each of these looks like "A" (or like nothing) on a terminal.
    for bad in [
        '\u{00AD}',
        '\u{061C}',
        '\u{180E}',
        '\u{200B}',
        '\u{200D}',
        '\u{200E}',
        '\u{2066}',
        '\u{2060}',
        '\u{FEFF}',
        '\u{E0041}',
        '\u{2028}',
        '\u{E000}',
        '\u{034F}',
        '\u{115F}',
        '\u{17B4}',
        '\u{180B}',
        '\u{FFA0}',
    ] {
        let name = format!("A{bad}");
        assert_eq!(
            validate_name(&name),
            Err(NameError::InvisibleCharacter(bad)),
            "U+{:04X}",
            u32::from(bad)
        );
    }
    for bad in ["A\u{2003}B", "A\u{3000}", "lamp ", " lamp"] {
        assert_eq!(validate_name(bad), Err(NameError::Whitespace), "{bad:?}");
    }
    // Emoji with a variation selector and scripts with combining marks stay allowed.
    for good in ["❤\u{FE0F} lamp", "नमस्ते", "Ωmega 2", "東京-1"] {
        assert_eq!(validate_name(good), Ok(()), "{good:?}");
    }
}

#[test]
fn names_are_brought_into_nfc() {
    assert_eq!(normalize_name("Ku\u{308}che"), "Küche");
    assert_eq!(validate_name(&normalize_name("Ku\u{308}che")), Ok(()));
    assert_eq!(normalize_name("lamp"), "lamp");
}

proptest! {
    #[test]
    fn any_name_is_accepted_or_refused_with_a_reason(s in any::<String>()) {
        // Never a panic; and after normalizing, never "not normalized".
        let _ = validate_name(&s);
        prop_assert_ne!(validate_name(&normalize_name(&s)), Err(NameError::NotNormalized));
    }

    #[test]
    fn any_metadata_is_accepted_or_refused_with_a_reason(
        m in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..20)
    ) {
        let _ = validate_metadata(&m);
    }
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into())),
    ]
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._é✓-]{1,16}".prop_filter("valid", |s| validate_name(s).is_ok())
}

fn arb_id() -> impl Strategy<Value = DeviceId> {
    any::<[u8; 16]>().prop_map(DeviceId::from_bytes)
}

fn arb_metadata() -> impl Strategy<Value = Metadata> {
    proptest::collection::btree_map(
        "[a-z0-9._-]{1,32}",
        "[ -~é✓]{0,200}",
        0..=MAX_METADATA_ENTRIES,
    )
    // Trimmed to the size limit rather than filtered: a filter refused most maps (16
    // values of up to 200 characters rarely fit 512 bytes) and made these tests slow.
    .prop_map(|mut m| {
        while validate_metadata(&m).is_err() {
            m.pop_last();
        }
        m
    })
}

fn arb_body() -> impl Strategy<Value = AnnounceBody> {
    (
        arb_name(),
        any::<u16>(),
        any::<u32>(),
        proptest::collection::vec(arb_ip(), 0..=MAX_ADDRESSES),
        arb_metadata(),
    )
        .prop_map(|(name, port, lease_ms, addresses, metadata)| AnnounceBody {
            name,
            port,
            lease: Duration::from_millis(u64::from(lease_ms)),
            addresses,
            metadata,
        })
}

/// A few signers (deriving a key costs a scalar multiplication, so not one per case).
static SIGNERS: LazyLock<Vec<Identity>> = LazyLock::new(|| {
    (0..4)
        .map(|i| Identity::from_secret_bytes(&[i; 32]))
        .collect()
});

fn arb_announce() -> impl Strategy<Value = Announce> {
    (0..SIGNERS.len(), any::<u64>(), arb_body())
        .prop_map(|(signer, seq, body)| Announce::sign(&SIGNERS[signer], seq, body).unwrap())
}

fn arb_goodbye() -> impl Strategy<Value = Goodbye> {
    (0..SIGNERS.len(), any::<u64>()).prop_map(|(signer, seq)| Goodbye::sign(&SIGNERS[signer], seq))
}

fn arb_record() -> impl Strategy<Value = PeerRecord> {
    (arb_announce(), proptest::option::of(arb_ip()))
        .prop_map(|(announce, observed)| PeerRecord { announce, observed })
}

proptest! {
    #[test]
    fn adverts_round_trip(advert in prop_oneof![
        arb_announce().prop_map(Advert::Announce),
        arb_id().prop_map(|from| Advert::Probe { from }),
        arb_goodbye().prop_map(Advert::Goodbye),
    ]) {
        let bytes = advert.to_bytes().unwrap();
        prop_assert!(bytes.len() <= MAX_ADVERT_LEN);
        let back = Advert::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &advert);
        match back {
            Advert::Announce(a) => {
                prop_assert!(bytes.len() <= LARGEST_ANNOUNCE);
                // The layout in the module docs, written out by hand, is the encoder's.
                prop_assert_eq!(ByHand::announce(&a, 0), bytes);
                prop_assert!(a.verify().is_ok());
            }
            Advert::Goodbye(g) => prop_assert!(g.verify().is_ok()),
            Advert::Probe { .. } => {}
        }
    }

    #[test]
    fn link_messages_round_trip(msg in prop_oneof![
        (any::<u64>(), arb_announce())
            .prop_map(|(tag, announce)| LinkMessage::Hello(Hello { tag, announce })),
        proptest::collection::vec(arb_record(), 0..=4).prop_map(LinkMessage::Peers),
        arb_id().prop_map(|from| LinkMessage::Goodbye { from }),
    ]) {
        let bytes = msg.to_bytes().unwrap();
        prop_assert!(bytes.len() <= MAX_LINK_MESSAGE_LEN);
        prop_assert_eq!(LinkMessage::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Advert::decode(&bytes);
        let _ = LinkMessage::decode(&bytes);
        for kind in 1..=5 {
            let mut with_header = b"HAIL\x02".to_vec();
            with_header.push(kind);
            with_header.extend_from_slice(&bytes);
            if let Ok(Advert::Announce(a)) = Advert::decode(&with_header) {
                let _ = a.verify();
            }
            if let Ok(Advert::Goodbye(g)) = Advert::decode(&with_header) {
                let _ = g.verify();
            }
            let _ = LinkMessage::decode(&with_header);
        }
    }

    #[test]
    fn mutated_adverts_decode_or_fail_cleanly(
        a in arb_announce(),
        pos in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = Advert::Announce(a).to_bytes().unwrap();
        let i = pos % bytes.len();
        bytes[i] = byte;
        if let Ok(Advert::Announce(back)) = Advert::decode(&bytes) {
            prop_assert!(validate_name(&back.body.name).is_ok());
            prop_assert!(validate_metadata(&back.body.metadata).is_ok());
            prop_assert!(back.body.addresses.len() <= MAX_ADDRESSES);
            let _ = back.verify();
        }
    }

    #[test]
    fn any_single_byte_change_fails_to_decode_or_to_verify(
        signed in prop_oneof![
            arb_announce().prop_map(Advert::Announce),
            arb_goodbye().prop_map(Advert::Goodbye),
        ],
        pos in any::<usize>(),
        flip in 1..=255u8,
    ) {
        let mut bytes = signed.to_bytes().unwrap();
        let i = pos % bytes.len();
        bytes[i] ^= flip;
        match Advert::decode(&bytes) {
            Err(_) => {}
            Ok(Advert::Announce(a)) => prop_assert!(a.verify().is_err(), "byte {} ^ {:#04x}", i, flip),
            Ok(Advert::Goodbye(g)) => prop_assert!(g.verify().is_err(), "byte {} ^ {:#04x}", i, flip),
            Ok(other) => prop_assert!(false, "byte {} ^ {:#04x} made a {:?}", i, flip, other),
        }
    }
}
