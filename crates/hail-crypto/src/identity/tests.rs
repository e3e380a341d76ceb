//! Tests of identities, public keys and signatures.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;

use super::*;

/// RFC 8032 section 7.1, test 1: secret key and public key.
const RFC_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn rfc_identity() -> Identity {
    Identity::from_secret_bytes(&unhex(RFC_SECRET))
}

#[test]
fn the_rfc_8032_key_pair_and_its_device_id() {
    let id = rfc_identity();
    assert_eq!(id.public().to_string(), RFC_PUBLIC);
    // SHA-256("hail-device-id/v1" || key)[..16], computed independently (Python hashlib).
    assert_eq!(id.public().id(), unhex("3c26cdc34abb12eab6c2b17c1bc2033e"));
    let reference = Sha256::digest([DEVICE_ID_LABEL, id.public().as_bytes()].concat());
    assert_eq!(id.public().id()[..], reference[..16]);
}

#[test]
fn signatures_verify_only_for_their_key_context_and_message() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let sig = a.sign(b"hail-test/v1", b"message");
    a.public()
        .verify(b"hail-test/v1", b"message", &sig)
        .unwrap();
    let bad = Err(CryptoError::BadSignature);
    assert_eq!(a.public().verify(b"hail-test/v2", b"message", &sig), bad);
    assert_eq!(a.public().verify(b"hail-test/v1", b"messagf", &sig), bad);
    assert_eq!(a.public().verify(b"", b"message", &sig), bad);
    assert_eq!(b.public().verify(b"hail-test/v1", b"message", &sig), bad);
}

#[test]
fn the_context_length_keeps_context_and_message_apart() {
    let a = rfc_identity();
    let sig = a.sign(b"ab", b"c");
    assert_eq!(
        a.public().verify(b"a", b"bc", &sig),
        Err(CryptoError::BadSignature)
    );
    assert_eq!(
        a.public().verify(b"abc", b"", &sig),
        Err(CryptoError::BadSignature)
    );
}

#[test]
fn signed_bytes_are_the_documented_framing_under_plain_ed25519() {
    let a = rfc_identity();
    let sig = a.sign(b"ctx", b"msg");
    let mut framed = 3u64.to_be_bytes().to_vec();
    framed.extend_from_slice(b"ctx");
    framed.extend_from_slice(b"msg");
    let vk = VerifyingKey::from_bytes(a.public().as_bytes()).unwrap();
    vk.verify_strict(
        &framed,
        &ed25519_dalek::Signature::from_bytes(sig.as_bytes()),
    )
    .expect("pure Ed25519 over u64 BE len || context || message");
    // Ed25519 is deterministic: the same input signs the same.
    assert_eq!(sig, a.sign(b"ctx", b"msg"));
}

#[test]
fn long_messages_take_the_heap_path_and_still_verify() {
    let a = Identity::generate().unwrap();
    for len in [
        0,
        1,
        STACK_SIGN - 8 - 4,
        STACK_SIGN - 8 - 3,
        STACK_SIGN,
        70_000,
    ] {
        let msg: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let sig = a.sign(b"ctx!", &msg);
        a.public().verify(b"ctx!", &msg, &sig).unwrap();
        let mut other = msg.clone();
        other.push(0);
        assert!(a.public().verify(b"ctx!", &other, &sig).is_err());
    }
}

/// The X25519 form forgets more than the sign of x: the clamped scalar is a multiple of 8,
/// so it also forgets any small-order part. The holder of `A` proves the static key of
/// `±A + T` for each of the 8 points `T` of order dividing 8: 16 identity keys (of full
/// order, so `PublicKey` takes them), 8 static keys, 16 device ids, all of one secret.
/// Nobody else proves any of them (a DH with another identity's secret gives another value).
#[test]
fn the_holder_of_a_key_proves_sixteen_identity_keys_and_no_one_else_does() {
    use curve25519_dalek::constants::{EIGHT_TORSION, X25519_BASEPOINT};
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let a = Identity::generate().unwrap();
    let other = Identity::generate().unwrap();
    let point = CompressedEdwardsY(a.public().to_bytes())
        .decompress()
        .unwrap();
    let e = [0x42u8; 32];
    let ephemeral = X25519_BASEPOINT.mul_clamped(e);
    let (mut keys, mut statics, mut ids) = (HashSet::new(), HashSet::new(), HashSet::new());
    for t in EIGHT_TORSION {
        for p in [point + t, -point + t] {
            let key = PublicKey::from_bytes(&p.compress().to_bytes()).expect("full order");
            let st = key.noise_static();
            // What the peer's side computes (`es`/`se`) equals what A's secret computes.
            let theirs = curve25519_dalek::montgomery::MontgomeryPoint(st).mul_clamped(e);
            assert_eq!(theirs, ephemeral.mul_clamped(*a.noise_static_secret()));
            assert_ne!(theirs, ephemeral.mul_clamped(*other.noise_static_secret()));
            keys.insert(key.to_bytes());
            statics.insert(st);
            ids.insert(key.id());
        }
    }
    assert_eq!((keys.len(), statics.len(), ids.len()), (16, 8, 16));
}

#[test]
fn the_noise_static_key_is_the_identity_as_x25519() {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    let x25519 = |secret: &[u8; 32], public: [u8; 32]| MontgomeryPoint(public).mul_clamped(*secret);
    let base = curve25519_dalek::constants::X25519_BASEPOINT.to_bytes();
    let ids: Vec<Identity> = (0..20).map(|_| Identity::generate().unwrap()).collect();
    for (i, a) in ids.iter().enumerate() {
        let secret = a.noise_static_secret();
        // The public key of the X25519 secret is the identity's Montgomery form.
        assert_eq!(x25519(&secret, base).to_bytes(), a.public().noise_static());
        // Two identities agree on a DH secret from each other's public keys alone.
        let b = &ids[(i + 1) % ids.len()];
        assert_eq!(
            x25519(&secret, b.public().noise_static()),
            x25519(&b.noise_static_secret(), a.public().noise_static())
        );
        // Stable: a restored identity has the same Noise key; another identity another.
        let again = Identity::from_secret_bytes(&a.to_secret_bytes());
        assert_eq!(*again.noise_static_secret(), *secret);
        assert_ne!(b.public().noise_static(), a.public().noise_static());
    }
    // RFC 8032's first key: its X25519 form is a point of full order (not a small-order u).
    let k = rfc_identity().public().noise_static();
    assert_ne!(x25519(&[8u8; 32], k).to_bytes(), [0u8; 32]);
}

#[test]
fn verification_is_strict_about_malleated_signatures() {
    let a = rfc_identity();
    let sig = a.sign(b"ctx", b"msg");
    // S + L (the group order) is the same scalar mod L: accepted by lax verifiers.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut bytes = sig.to_bytes();
    let mut carry = 0u16;
    for (s, l) in bytes[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(
        a.public()
            .verify(b"ctx", b"msg", &Signature::from_bytes(bytes)),
        Err(CryptoError::BadSignature)
    );
    // All zeros and all ones are not signatures.
    for junk in [[0u8; 64], [0xff; 64]] {
        assert!(
            a.public()
                .verify(b"ctx", b"msg", &Signature::from_bytes(junk))
                .is_err()
        );
    }
}

fn reason(bytes: &[u8; 32]) -> Option<InvalidKeyReason> {
    match PublicKey::from_bytes(bytes) {
        Ok(_) => None,
        Err(CryptoError::InvalidPublicKey { reason }) => Some(reason),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn public_keys_that_are_not_full_order_canonical_points_are_refused() {
    // y = 1: the neutral element; y = 0: a point of order 4.
    let mut neutral = [0u8; 32];
    neutral[0] = 1;
    assert_eq!(reason(&neutral), Some(InvalidKeyReason::SmallOrder));
    assert_eq!(reason(&[0; 32]), Some(InvalidKeyReason::SmallOrder));
    // y = p + 1 = 2^255 - 18 encodes the neutral element non-canonically.
    let mut p_plus_1 = [0xff; 32];
    p_plus_1[0] = 0xee;
    p_plus_1[31] = 0x7f;
    assert_eq!(reason(&p_plus_1), Some(InvalidKeyReason::NonCanonical));
    // Every y from p to 2^255 - 1, with either sign bit.
    for low in 0xed..=0xff {
        for sign in [0, 0x80] {
            let mut y = [0xff; 32];
            y[0] = low;
            y[31] = 0x7f | sign;
            assert_eq!(reason(&y), Some(InvalidKeyReason::NonCanonical), "{y:?}");
        }
    }
    // p - 1 (= -1, of order 2) is canonical, and refused for its order.
    let mut p_minus_1 = [0xff; 32];
    p_minus_1[0] = 0xec;
    p_minus_1[31] = 0x7f;
    assert_eq!(reason(&p_minus_1), Some(InvalidKeyReason::SmallOrder));
    // The neutral element with the sign bit set (x = 0 has no negative): small order.
    let mut neg_zero = neutral;
    neg_zero[31] |= 0x80;
    assert_eq!(reason(&neg_zero), Some(InvalidKeyReason::SmallOrder));
    // About half of all y values are not on the curve; the first few small ones include some.
    let off_curve = (2u8..=40)
        .filter(|y| {
            let mut b = [0u8; 32];
            b[0] = *y;
            reason(&b) == Some(InvalidKeyReason::NotOnCurve)
        })
        .count();
    assert!(off_curve > 0, "some small y is off the curve");
    // A real key passes.
    assert_eq!(reason(&unhex(RFC_PUBLIC)), None);
}

#[test]
fn public_keys_print_and_parse_as_hex() {
    let k = rfc_identity().public();
    assert_eq!(format!("{k:?}"), format!("PublicKey({RFC_PUBLIC})"));
    assert_eq!(RFC_PUBLIC.parse::<PublicKey>().unwrap(), k);
    assert_eq!(RFC_PUBLIC.to_uppercase().parse::<PublicKey>().unwrap(), k);
    let not_hex = Err(CryptoError::InvalidPublicKey {
        reason: InvalidKeyReason::NotHex,
    });
    assert_eq!(RFC_PUBLIC[..62].parse::<PublicKey>(), not_hex);
    assert_eq!(format!("{RFC_PUBLIC}00").parse::<PublicKey>(), not_hex);
    assert_eq!(RFC_PUBLIC.replace('d', "g").parse::<PublicKey>(), not_hex);
    assert_eq!(
        RFC_PUBLIC.replacen('d', "é", 1).parse::<PublicKey>(),
        not_hex
    );
    let zeros = "00".repeat(32).parse::<PublicKey>();
    assert!(matches!(
        zeros,
        Err(CryptoError::InvalidPublicKey {
            reason: InvalidKeyReason::SmallOrder
        })
    ));
}

#[test]
fn the_secret_never_prints() {
    let id = rfc_identity();
    let dbg = format!("{id:?}");
    assert!(dbg.contains("[redacted]"));
    assert!(dbg.contains(RFC_PUBLIC), "the public key is shown: {dbg}");
    assert!(!dbg.contains(&RFC_SECRET[..16]));
    assert_eq!(*id.to_secret_bytes(), unhex::<32>(RFC_SECRET));
}

#[test]
fn keys_compare_and_hash_by_their_bytes() {
    let keys: Vec<PublicKey> = (0..8)
        .map(|_| Identity::generate().unwrap().public())
        .collect();
    let by_bytes: BTreeSet<[u8; 32]> = keys.iter().map(PublicKey::to_bytes).collect();
    let sorted: Vec<[u8; 32]> = keys
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .iter()
        .map(PublicKey::to_bytes)
        .collect();
    assert_eq!(sorted, by_bytes.into_iter().collect::<Vec<_>>());
    let set: HashSet<PublicKey> = keys.iter().chain(&keys).copied().collect();
    assert_eq!(set.len(), 8);
    let copy = PublicKey::from_bytes(keys[0].as_bytes()).unwrap();
    assert_eq!(copy, keys[0]);
    assert_eq!(copy.id(), keys[0].id());
    assert_ne!(keys[0].id(), keys[1].id());
}

proptest! {
    #[test]
    fn any_signature_round_trips_and_any_bit_flip_breaks_it(
        secret in any::<[u8; 32]>(),
        context in proptest::collection::vec(any::<u8>(), 0..40),
        msg in proptest::collection::vec(any::<u8>(), 0..300),
        bit in 0usize..512,
    ) {
        let id = Identity::from_secret_bytes(&secret);
        let public = PublicKey::from_bytes(id.public().as_bytes()).unwrap();
        let sig = id.sign(&context, &msg);
        prop_assert!(public.verify(&context, &msg, &sig).is_ok());
        let mut flipped = sig.to_bytes();
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(
            public.verify(&context, &msg, &Signature::from_bytes(flipped)),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn from_bytes_never_panics_and_accepts_only_round_tripping_keys(bytes in any::<[u8; 32]>()) {
        if let Ok(k) = PublicKey::from_bytes(&bytes) {
            prop_assert_eq!(k.to_bytes(), bytes);
            // Canonical: re-encoding the decoded point gives the same bytes.
            let vk = VerifyingKey::from_bytes(&bytes).unwrap();
            prop_assert_eq!(vk.to_edwards().compress().to_bytes(), bytes);
            prop_assert_eq!(k.to_string().parse::<PublicKey>().unwrap(), k);
        }
    }
}
