use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn lamp() -> Announce {
    Announce {
        id: DeviceId::from_bytes([0x11; 16]),
        name: "lamp".into(),
        port: 40000,
        lease: Duration::from_millis(3000),
        addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    }
}

/// Header, id, name, port and lease of an announce, without the address list.
fn announce_prefix() -> Vec<u8> {
    let mut v = b"HAIL\x01\x01".to_vec();
    v.extend_from_slice(&[0x11; 16]);
    v.extend_from_slice(b"\x04lamp");
    v.extend_from_slice(&[0xc0, 0xb8, 0x02, 0xb8, 0x17]);
    v
}

#[test]
fn announce_bytes_match_the_documented_example() {
    let bytes = Advert::Announce(lamp()).to_bytes().unwrap();
    let mut expected = announce_prefix();
    expected.extend_from_slice(&[0x01, 0x00, 0x7f, 0x00, 0x00, 0x01]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), 38);
    assert_eq!(Advert::decode(&bytes).unwrap(), Advert::Announce(lamp()));
}

#[test]
fn probe_goodbye_and_ipv6_bytes() {
    let id = DeviceId::from_bytes([0xab; 16]);
    let probe = Advert::Probe { from: id }.to_bytes().unwrap();
    assert_eq!(&probe[..6], b"HAIL\x01\x02");
    assert_eq!(&probe[6..], &[0xab; 16]);
    let bye = LinkMessage::Goodbye { from: id }.to_bytes().unwrap();
    assert_eq!(&bye[..6], b"HAIL\x01\x03");
    assert_eq!(Advert::decode(&bye).unwrap(), Advert::Goodbye { from: id });

    let mut a = lamp();
    a.addresses = vec![IpAddr::V6(Ipv6Addr::LOCALHOST)];
    let bytes = Advert::Announce(a).to_bytes().unwrap();
    let tail = &bytes[bytes.len() - 18..];
    assert_eq!(tail[..2], [0x01, 0x01]); // one address, IPv6
    assert_eq!(tail[2..], Ipv6Addr::LOCALHOST.octets());
}

#[test]
fn the_largest_announce_fits_the_datagram_limit() {
    let a = Announce {
        id: DeviceId::from_bytes([0xff; 16]),
        name: "x".repeat(MAX_NAME_LEN),
        port: u16::MAX,
        lease: Duration::from_millis(u64::from(u32::MAX)),
        addresses: vec![IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4)); MAX_ADDRESSES],
    };
    let bytes = Advert::Announce(a.clone()).to_bytes().unwrap();
    assert_eq!(bytes.len(), 640);
    assert!(bytes.len() <= MAX_ADVERT_LEN);
    let hello = LinkMessage::Hello(Hello {
        tag: u64::MAX,
        announce: a,
    });
    assert_eq!(hello.to_bytes().unwrap().len(), 650);
}

#[test]
fn lease_saturates_and_rounds_down() {
    let mut a = lamp();
    a.lease = Duration::from_secs(100 * 24 * 3600);
    let back = Advert::decode(&Advert::Announce(a).to_bytes().unwrap()).unwrap();
    let Advert::Announce(back) = back else {
        panic!("announce expected")
    };
    assert_eq!(back.lease, Duration::from_millis(u64::from(u32::MAX)));

    let mut a = lamp();
    a.lease = Duration::from_micros(2500);
    let Advert::Announce(back) = Advert::decode(&Advert::Announce(a).to_bytes().unwrap()).unwrap()
    else {
        panic!("announce expected")
    };
    assert_eq!(back.lease, Duration::from_millis(2));
}

#[test]
fn header_errors_are_typed() {
    assert!(matches!(
        Advert::decode(b"HAI"),
        Err(AdvertError::TooShort { len: 3 })
    ));
    assert!(matches!(
        Advert::decode(b"HALL\x01\x01"),
        Err(AdvertError::BadMagic)
    ));
    assert!(matches!(
        Advert::decode(b"HAIL\x02\x01anything"),
        Err(AdvertError::UnsupportedVersion { version: 2 })
    ));
    assert!(matches!(
        Advert::decode(b"HAIL\x01\x7f"),
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
    assert_eq!(Kind::HELLO.to_string(), "hello");
    assert_eq!(Kind(0x42).to_string(), "0x42");
    assert_eq!(format!("{:?}", Kind(0x42)), "Kind(0x42)");
    assert_eq!(format!("{:?}", Kind::PROBE), "Kind::PROBE");
}

#[test]
fn every_truncation_and_any_trailing_byte_is_malformed() {
    let messages = [
        Advert::Announce(lamp()).to_bytes().unwrap(),
        Advert::Probe {
            from: DeviceId::from_bytes([3; 16]),
        }
        .to_bytes()
        .unwrap(),
    ];
    for bytes in &messages {
        for cut in HEADER_LEN..bytes.len() {
            let err = Advert::decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, AdvertError::Malformed { .. }),
                "cut at {cut}: {err}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Advert::decode(&longer),
            Err(AdvertError::Malformed {
                source: hail_wire::WireError::TrailingBytes { count: 1 },
                ..
            })
        ));
    }
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
        let mut v = b"HAIL\x01\x01".to_vec();
        v.extend_from_slice(&[0x11; 16]);
        v.push(u8::try_from(name.len()).unwrap());
        v.extend_from_slice(name);
        v.extend_from_slice(&[0x01, 0x01, 0x00]);
        match Advert::decode(&v) {
            Err(AdvertError::InvalidName(got)) => assert_eq!(got, want),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    // Not UTF-8 at all.
    let mut v = b"HAIL\x01\x01".to_vec();
    v.extend_from_slice(&[0x11; 16]);
    v.extend_from_slice(&[0x02, 0xff, 0xfe, 0x01, 0x01, 0x00]);
    assert!(matches!(
        Advert::decode(&v),
        Err(AdvertError::Malformed { .. })
    ));
}

#[test]
fn too_many_addresses_is_typed_and_bounded() {
    let mut v = announce_prefix();
    v.push(33);
    for i in 0..33u8 {
        v.extend_from_slice(&[0x00, 10, 0, 0, i]);
    }
    assert!(matches!(
        Advert::decode(&v),
        Err(AdvertError::TooManyAddresses { count: 33, max: 32 })
    ));
    // A count that claims four billion addresses in a short datagram: an error, no
    // allocation for the claim.
    let mut v = announce_prefix();
    v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 1, 2, 3, 4]);
    assert!(matches!(
        Advert::decode(&v),
        Err(AdvertError::Malformed { .. })
    ));
    // A bad address family tag.
    let mut v = announce_prefix();
    v.extend_from_slice(&[0x01, 0x02, 1, 2, 3, 4]);
    assert!(matches!(
        Advert::decode(&v),
        Err(AdvertError::Malformed { .. })
    ));
}

#[test]
fn too_many_peer_records_is_typed() {
    let record = PeerRecord {
        id: DeviceId::from_bytes([5; 16]),
        name: "p".into(),
        port: 1,
        addresses: vec![],
    };
    let err = LinkMessage::Peers(vec![record.clone(); 17])
        .to_bytes()
        .unwrap_err();
    assert!(matches!(
        err,
        AdvertError::TooManyPeers { count: 17, max: 16 }
    ));
    // Hand-build 17 records.
    let one = LinkMessage::Peers(vec![record]).to_bytes().unwrap();
    let body = &one[HEADER_LEN + 1..];
    let mut v = b"HAIL\x01\x05".to_vec();
    v.push(17);
    for _ in 0..17 {
        v.extend_from_slice(body);
    }
    assert!(matches!(
        LinkMessage::decode(&v),
        Err(AdvertError::TooManyPeers { count: 17, max: 16 })
    ));
}

#[test]
fn encode_refuses_invalid_input_and_leaves_dst_alone() {
    let mut dst = b"keep".to_vec();
    let mut a = lamp();
    a.name = String::new();
    assert!(matches!(
        Advert::Announce(a).encode(&mut dst),
        Err(AdvertError::InvalidName(NameError::Empty))
    ));
    let mut a = lamp();
    a.addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST); 33];
    assert!(matches!(
        Advert::Announce(a).encode(&mut dst),
        Err(AdvertError::TooManyAddresses { count: 33, max: 32 })
    ));
    let bad = PeerRecord {
        id: DeviceId::from_bytes([5; 16]),
        name: "tab\there".into(),
        port: 1,
        addresses: vec![],
    };
    assert!(matches!(
        LinkMessage::Peers(vec![bad]).encode(&mut dst),
        Err(AdvertError::InvalidName(NameError::ControlCharacter))
    ));
    assert_eq!(dst, b"keep");
    // Appends after what is there.
    Advert::Probe {
        from: DeviceId::from_bytes([1; 16]),
    }
    .encode(&mut dst)
    .unwrap();
    assert_eq!(&dst[..4], b"keep");
    assert!(Advert::decode(&dst[4..]).is_ok());
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

fn arb_announce() -> impl Strategy<Value = Announce> {
    (
        arb_id(),
        arb_name(),
        any::<u16>(),
        any::<u32>(),
        proptest::collection::vec(arb_ip(), 0..=MAX_ADDRESSES),
    )
        .prop_map(|(id, name, port, lease_ms, addresses)| Announce {
            id,
            name,
            port,
            lease: Duration::from_millis(u64::from(lease_ms)),
            addresses,
        })
}

fn arb_record() -> impl Strategy<Value = PeerRecord> {
    (
        arb_id(),
        arb_name(),
        any::<u16>(),
        proptest::collection::vec(arb_ip(), 0..=4),
    )
        .prop_map(|(id, name, port, addresses)| PeerRecord {
            id,
            name,
            port,
            addresses,
        })
}

proptest! {
    #[test]
    fn adverts_round_trip(advert in prop_oneof![
        arb_announce().prop_map(Advert::Announce),
        arb_id().prop_map(|from| Advert::Probe { from }),
        arb_id().prop_map(|from| Advert::Goodbye { from }),
    ]) {
        let bytes = advert.to_bytes().unwrap();
        prop_assert!(bytes.len() <= MAX_ADVERT_LEN);
        prop_assert_eq!(Advert::decode(&bytes).unwrap(), advert);
    }

    #[test]
    fn link_messages_round_trip(msg in prop_oneof![
        (any::<u64>(), arb_announce()).prop_map(|(tag, announce)| LinkMessage::Hello(Hello { tag, announce })),
        proptest::collection::vec(arb_record(), 0..=MAX_PEER_RECORDS).prop_map(LinkMessage::Peers),
        arb_id().prop_map(|from| LinkMessage::Goodbye { from }),
    ]) {
        let bytes = msg.to_bytes().unwrap();
        prop_assert!(bytes.len() <= MAX_LINK_MESSAGE_LEN);
        prop_assert_eq!(LinkMessage::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Advert::decode(&bytes);
        let _ = LinkMessage::decode(&bytes);
        let mut with_header = b"HAIL\x01".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = Advert::decode(&with_header);
        let _ = LinkMessage::decode(&with_header);
    }

    #[test]
    fn mutated_adverts_decode_or_fail_cleanly(a in arb_announce(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = Advert::Announce(a).to_bytes().unwrap();
        let i = pos % bytes.len();
        bytes[i] = byte;
        if let Ok(Advert::Announce(back)) = Advert::decode(&bytes) {
            prop_assert!(validate_name(&back.name).is_ok());
            prop_assert!(back.addresses.len() <= MAX_ADDRESSES);
        }
    }
}
