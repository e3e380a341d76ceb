//! The Noise handshakes and sealed records (sans-IO).
//!
//! A secured link is a sequence of records, each a big-endian u16 length and that many bytes:
//!
//! ```text
//! +----------------+------------------------------------------+
//! | u16 length L   | L bytes: a Noise message (L <= 65535)    |
//! +----------------+------------------------------------------+
//! | 0x0000         | alert code u8 (only before the handshake completes; 1 = auth failed)
//! +----------------+------------------------------------------+
//! ```
//!
//! Three handshake patterns ([`Pattern`]), all `25519_AESGCM_SHA256`, prologue `hail-link/2`:
//!
//! * `NNpsk0` (a pre-shared key, no identity): message 1 `psk, e` (48 bytes), message 2
//!   `e, ee` (48 bytes); then the initiator's first transport record is an empty one, the
//!   key confirmation ([`put_confirmation`]), which the responder must open before it
//!   admits the connection (a replayed message 1 never gets that far).
//! * `XX` (an identity, no key) and `XXpsk0` (both): message 1 `[psk,] e`, message 2
//!   `e, ee, s, es` with the responder's identity payload, message 3 `s, se` with the
//!   initiator's (see [`identity`](crate::identity)).
//!
//! Why `XXpsk0` rather than `XXpsk3` with a key: with the psk mixed in at message 1, an
//! outsider without the passphrase fails at message 1, before the responder makes an
//! ephemeral key, computes a DH or sends its static key and identity; with `XXpsk3` the
//! responder would do all of that for anyone and find the wrong key only at message 3.
//! The initiator's identity is as well hidden in both (message 3 is encrypted to a
//! responder that proved its static key, and with `XXpsk0` the passphrase too); what psk3
//! offers, a psk chosen after learning the initiator's identity, does not apply to one
//! group key. See `docs/security.md`.
//!
//! Every later record is a Noise transport message: at most 65,519 bytes of the plaintext
//! frame stream plus a 16-byte tag. The frame stream (the same bytes a plaintext link
//! carries) is cut into records without regard to frame boundaries, so many small frames
//! share one record and a large frame spans several. Nonces are implicit record counters on
//! each direction; a replayed, reordered or modified record fails authentication and closes
//! the link.

use bytes::{Buf, BufMut, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use snow::HandshakeState;
use zeroize::Zeroize;

use crate::CloseReason;
use crate::error::ProtocolError;
use crate::identity::LocalIdentity;
pub(crate) use crate::noise::Pattern;
use crate::noise::builder;

/// Noise prologue: binds the link protocol and its version into every handshake hash.
pub(crate) const PROLOGUE: &[u8] = b"hail-link/2";
/// Largest Noise message.
pub(crate) const MAX_RECORD: usize = 65_535;
/// AEAD tag length.
pub(crate) const TAG: usize = 16;
/// Largest plaintext per record.
pub(crate) const MAX_PLAIN: usize = MAX_RECORD - TAG;
/// Alert code: authentication failed.
pub(crate) const ALERT_AUTH: u8 = 1;
/// Largest handshake message hail sends (XX message 2: 32 + 48 + 32 + 16 = 128 bytes).
const MAX_HANDSHAKE: usize = 256;

/// What a handshake needs: its pattern, the pre-shared key and the local identity, as the
/// pattern requires them.
#[derive(Clone, Copy)]
pub(crate) struct Keys<'a> {
    pub(crate) pattern: Pattern,
    pub(crate) psk: Option<&'a [u8; 32]>,
    pub(crate) local: Option<&'a LocalIdentity>,
}

fn configured<'a>(keys: &Keys<'a>) -> Result<snow::Builder<'a>, snow::Error> {
    let mut b = builder(keys.pattern).prologue(PROLOGUE)?;
    if let Some(psk) = keys.psk {
        b = b.psk(0, psk)?;
    }
    if let Some(local) = keys.local {
        b = b.local_private_key(local.noise_private())?;
    }
    Ok(b)
}

/// Handshake state of the dialing side.
pub(crate) fn initiator(keys: Keys<'_>) -> Result<HandshakeState, snow::Error> {
    configured(&keys)?.build_initiator()
}

/// Handshake state of the accepting side.
pub(crate) fn responder(keys: Keys<'_>) -> Result<HandshakeState, snow::Error> {
    configured(&keys)?.build_responder()
}

/// Appends one record holding the next handshake message, carrying `payload`.
pub(crate) fn put_handshake(
    hs: &mut HandshakeState,
    payload: &[u8],
    dst: &mut BytesMut,
) -> Result<(), snow::Error> {
    let mut buf = [0u8; MAX_HANDSHAKE];
    let n = hs.write_message(payload, &mut buf)?;
    dst.put_u16(n as u16);
    dst.put_slice(&buf[..n]);
    Ok(())
}

/// Reads one handshake message into `payload` (at most 32 bytes: the identity payload);
/// returns the payload's length. Fails for a message that does not authenticate, is
/// malformed, or carries a longer payload.
pub(crate) fn read_handshake(
    hs: &mut HandshakeState,
    msg: &[u8],
    payload: &mut [u8; crate::identity::PAYLOAD_LEN],
) -> Result<usize, snow::Error> {
    if msg.len() > MAX_HANDSHAKE {
        return Err(snow::Error::Input);
    }
    // snow wants room for the whole message; the payload is copied out of it.
    let mut buf = [0u8; MAX_HANDSHAKE];
    let n = hs.read_message(msg, &mut buf)?;
    let out = buf.get(..n).ok_or(snow::Error::Input)?;
    if n > payload.len() {
        return Err(snow::Error::Input);
    }
    payload[..n].copy_from_slice(out);
    Ok(n)
}

/// Appends the key confirmation record: a transport message with an empty plaintext
/// (16 bytes, the tag alone), the first record the `NNpsk0` initiator sends.
pub(crate) fn put_confirmation(sealer: &mut Sealer, dst: &mut BytesMut) {
    sealer.put_record(&[], dst);
}

/// Opens the key confirmation record: it must authenticate and be empty.
pub(crate) fn open_confirmation(opener: &mut Opener, record: &[u8]) -> Result<(), CloseReason> {
    if record.len() != TAG {
        return Err(CloseReason::Protocol(ProtocolError::BadRecord));
    }
    let mut out = BytesMut::new();
    opener.open(record, &mut out)?;
    debug_assert!(out.is_empty());
    Ok(())
}

/// Appends an alert record.
pub(crate) fn put_alert(dst: &mut BytesMut, code: u8) {
    dst.put_u16(0);
    dst.put_u8(code);
}

/// One record cut from the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A Noise message.
    Data(BytesMut),
    /// An alert (only valid during the handshake).
    Alert(u8),
}

/// Cuts one record from `src` if it is whole; `max` bounds the record length.
pub(crate) fn take_record(src: &mut BytesMut, max: usize) -> Result<Option<Record>, ProtocolError> {
    let Some(head) = src.first_chunk::<2>() else {
        return Ok(None);
    };
    let len = u16::from_be_bytes(*head) as usize;
    if len == 0 {
        if src.len() < 3 {
            return Ok(None);
        }
        let code = src[2];
        src.advance(3);
        return Ok(Some(Record::Alert(code)));
    }
    if len > max || len < TAG {
        return Err(ProtocolError::BadRecord);
    }
    if src.len() < 2 + len {
        src.reserve(2 + len - src.len());
        return Ok(None);
    }
    src.advance(2);
    Ok(Some(Record::Data(src.split_to(len))))
}

/// Seals the outgoing frame stream: AES-256-GCM (ring) with the key and nonce Noise's
/// transport mode uses, in place in the output buffer.
#[derive(Debug)]
pub(crate) struct Sealer {
    key: TransportKey,
    nonce: u64,
}

/// Opens the incoming records, in place.
#[derive(Debug)]
pub(crate) struct Opener {
    key: TransportKey,
    nonce: u64,
}

/// One direction's transport cipher: `Noise_*_25519_AESGCM_SHA256`'s `CipherState` after
/// the split, done here with ring directly so that records are sealed and opened in place
/// (snow's transport state copies every record into a separate, zero-filled output
/// first). The bytes are the same: AES-256-GCM under the split key, nonce = 32 zero bits
/// and the record counter as a big-endian u64, no associated data (tested against snow's
/// own transport state below). Boxed: ring's key schedule is several hundred bytes, and
/// every link's tasks hold an `Option` of one each way, secured or not.
struct TransportKey(Box<LessSafeKey>);

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportKey(..)")
    }
}

impl TransportKey {
    fn new(mut raw: [u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, &raw).expect("AES-256-GCM takes 32-byte keys");
        raw.zeroize();
        Self(Box::new(LessSafeKey::new(key)))
    }

    fn nonce(n: u64) -> Nonce {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(bytes)
    }
}

/// Splits a finished handshake into the two directions.
pub(crate) fn split(mut hs: HandshakeState) -> Result<(Sealer, Opener), snow::Error> {
    if !hs.is_handshake_finished() {
        return Err(snow::Error::State(
            snow::error::StateProblem::HandshakeNotFinished,
        ));
    }
    // The first key carries the initiator's records, the second the responder's.
    let (to_responder, to_initiator) = hs.dangerously_get_raw_split();
    let (send, recv) = if hs.is_initiator() {
        (to_responder, to_initiator)
    } else {
        (to_initiator, to_responder)
    };
    drop(hs);
    Ok((
        Sealer {
            key: TransportKey::new(send),
            nonce: 0,
        },
        Opener {
            key: TransportKey::new(recv),
            nonce: 0,
        },
    ))
}

impl Sealer {
    /// Appends one record sealing `plain` (at most [`MAX_PLAIN`] bytes): one copy of the
    /// plaintext, encrypted where it lands.
    fn put_record(&mut self, plain: &[u8], dst: &mut BytesMut) {
        let start = open_record(plain.len(), dst);
        dst.extend_from_slice(plain);
        self.close_record(start, dst);
    }

    /// Seals the record whose plaintext is `dst[start..]` in place and appends its tag.
    fn close_record(&mut self, start: usize, dst: &mut BytesMut) {
        let tag = self
            .key
            .0
            .seal_in_place_separate_tag(
                TransportKey::nonce(self.nonce),
                Aad::empty(),
                &mut dst[start..],
            )
            .expect("a record is far below AES-GCM's length limit");
        dst.extend_from_slice(tag.as_ref());
        // 2^64 records cannot be sent in the lifetime of a link.
        self.nonce += 1;
    }

    /// Makes `dst` exactly the sealed records of the bytes of `parts` one after another
    /// (`total` of them), reusing its allocation: nothing is zero-filled, each byte is
    /// copied once. The records are those of [`seal`](Self::seal) of the bytes joined.
    pub(crate) fn seal_parts<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        total: usize,
        dst: &mut BytesMut,
    ) {
        dst.clear();
        dst.reserve(total + total.div_ceil(MAX_PLAIN) * (2 + TAG));
        // Plaintext not yet in a record; room left in the open one, which starts at `start`.
        let mut left = total;
        let mut room = 0;
        let mut start = 0;
        for mut part in parts {
            while !part.is_empty() {
                if room == 0 {
                    room = left.min(MAX_PLAIN);
                    left -= room;
                    start = open_record(room, dst);
                }
                let n = room.min(part.len());
                dst.extend_from_slice(&part[..n]);
                part = &part[n..];
                room -= n;
                if room == 0 {
                    self.close_record(start, dst);
                }
            }
        }
        debug_assert!(room == 0 && left == 0, "`total` is the parts' length");
    }

    /// Appends `plain` to `dst` as one or more sealed records.
    pub(crate) fn seal(&mut self, plain: &[u8], dst: &mut BytesMut) {
        dst.reserve(plain.len() + plain.len().div_ceil(MAX_PLAIN) * (2 + TAG));
        for chunk in plain.chunks(MAX_PLAIN) {
            self.put_record(chunk, dst);
        }
    }
}

/// Appends the length of a record of `len` plaintext bytes; returns where its plaintext
/// starts.
fn open_record(len: usize, dst: &mut BytesMut) -> usize {
    debug_assert!(len <= MAX_PLAIN);
    dst.put_u16((len + TAG) as u16);
    dst.len()
}

impl Opener {
    /// Opens `record` in place: on success it holds the plaintext (the tag cut off); a
    /// failed tag is `AuthFailed`.
    pub(crate) fn open_in_place(&mut self, record: &mut BytesMut) -> Result<(), CloseReason> {
        let n = self
            .key
            .0
            .open_in_place(TransportKey::nonce(self.nonce), Aad::empty(), record)
            .map_err(|_| CloseReason::AuthFailed)?
            .len();
        record.truncate(n);
        self.nonce += 1;
        Ok(())
    }

    /// Appends the plaintext of `record` to `dst`; a failed tag is `AuthFailed`.
    pub(crate) fn open(&mut self, record: &[u8], dst: &mut BytesMut) -> Result<(), CloseReason> {
        let mut copy = BytesMut::from(record);
        self.open_in_place(&mut copy)?;
        dst.extend_from_slice(&copy);
        Ok(())
    }
}

/// Both ends of a finished `NNpsk0` handshake: (initiator's, responder's).
#[cfg(test)]
pub(crate) fn test_ends() -> ((Sealer, Opener), (Sealer, Opener)) {
    tests::pair(&[5; 32], &[5; 32]).expect("same key")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ends = (Sealer, Opener);

    fn nn(psk: &[u8; 32]) -> Keys<'_> {
        Keys {
            pattern: Pattern::NNpsk0,
            psk: Some(psk),
            local: None,
        }
    }

    fn next(wire: &mut BytesMut) -> BytesMut {
        let Some(Record::Data(m)) = take_record(wire, 4096).unwrap() else {
            panic!("record")
        };
        m
    }

    /// `NNpsk0` run to the end between an initiator and a responder.
    fn handshaken(a: &[u8; 32], b: &[u8; 32]) -> Result<(HandshakeState, HandshakeState), ()> {
        let mut i = initiator(nn(a)).unwrap();
        let mut r = responder(nn(b)).unwrap();
        let mut wire = BytesMut::new();
        let mut sink = [0u8; crate::identity::PAYLOAD_LEN];
        put_handshake(&mut i, &[], &mut wire).unwrap();
        let m1 = next(&mut wire);
        assert_eq!(m1.len(), 48);
        read_handshake(&mut r, &m1, &mut sink).map_err(|_| ())?;
        put_handshake(&mut r, &[], &mut wire).unwrap();
        let m2 = next(&mut wire);
        assert_eq!(m2.len(), 48);
        read_handshake(&mut i, &m2, &mut sink).map_err(|_| ())?;
        Ok((i, r))
    }

    pub(super) fn pair(a: &[u8; 32], b: &[u8; 32]) -> Result<(Ends, Ends), ()> {
        let (i, r) = handshaken(a, b)?;
        Ok((split(i).unwrap(), split(r).unwrap()))
    }

    /// The records sealed and opened with ring in place are snow's own transport messages,
    /// both ways and on either side: the wire format did not change.
    #[test]
    fn records_are_snows_transport_messages() {
        for ours_initiates in [true, false] {
            let (i, r) = handshaken(&[7; 32], &[7; 32]).unwrap();
            let (ours, theirs) = if ours_initiates { (i, r) } else { (r, i) };
            let (mut sealer, mut opener) = split(ours).unwrap();
            let snow_end = theirs.into_stateless_transport_mode().unwrap();
            let mut wire = BytesMut::new();
            put_confirmation(&mut sealer, &mut wire);
            sealer.seal(b"hello", &mut wire);
            let mut out = [0u8; 64];
            for (nonce, want) in [(0, &b""[..]), (1, b"hello")] {
                let k = snow_end
                    .read_message(nonce, &next(&mut wire), &mut out)
                    .unwrap();
                assert_eq!(&out[..k], want, "initiator: {ours_initiates}");
            }
            for (nonce, msg) in [(0, &b"back"[..]), (1, b"and more")] {
                let k = snow_end.write_message(nonce, msg, &mut out).unwrap();
                let mut rec = BytesMut::from(&out[..k]);
                opener.open_in_place(&mut rec).unwrap();
                assert_eq!(&rec[..], msg);
            }
        }
    }

    #[test]
    fn an_unfinished_handshake_does_not_split() {
        let i = initiator(nn(&[1; 32])).unwrap();
        assert!(split(i).is_err());
    }

    /// The XX patterns: three messages of the documented sizes, each side learns the
    /// other's static key.
    #[test]
    fn xx_messages_and_sizes() {
        use crate::identity::{LocalIdentity, verify_payload};
        let a = LocalIdentity::new(&hail_crypto::Identity::generate().unwrap());
        let b = LocalIdentity::new(&hail_crypto::Identity::generate().unwrap());
        for (pattern, psk, m1_len) in [
            (Pattern::Xx, None, 32),
            (Pattern::XXpsk0, Some(&[4; 32]), 48),
        ] {
            let ki = Keys {
                pattern,
                psk,
                local: Some(&a),
            };
            let kr = Keys {
                pattern,
                psk,
                local: Some(&b),
            };
            let mut i = initiator(ki).unwrap();
            let mut r = responder(kr).unwrap();
            let mut wire = BytesMut::new();
            let mut got = [0u8; crate::identity::PAYLOAD_LEN];
            put_handshake(&mut i, &[], &mut wire).unwrap();
            let m1 = next(&mut wire);
            assert_eq!(m1.len(), m1_len, "{pattern:?}");
            assert_eq!(read_handshake(&mut r, &m1, &mut got).unwrap(), 0);
            put_handshake(&mut r, b.payload(), &mut wire).unwrap();
            let m2 = next(&mut wire);
            assert_eq!(m2.len(), 32 + 48 + 32 + 16, "{pattern:?}");
            let n = read_handshake(&mut i, &m2, &mut got).unwrap();
            assert_eq!(
                verify_payload(&got[..n], i.get_remote_static()).unwrap(),
                b.public()
            );
            put_handshake(&mut i, a.payload(), &mut wire).unwrap();
            let m3 = next(&mut wire);
            assert_eq!(m3.len(), 48 + 32 + 16, "{pattern:?}");
            let n = read_handshake(&mut r, &m3, &mut got).unwrap();
            assert_eq!(
                verify_payload(&got[..n], r.get_remote_static()).unwrap(),
                a.public()
            );
            let ((mut is, _), (_, mut ro)) = (split(i).unwrap(), split(r).unwrap());
            let mut rec = BytesMut::new();
            put_confirmation(&mut is, &mut rec);
            assert_eq!(rec.len(), 2 + TAG);
            open_confirmation(&mut ro, &next(&mut rec)).unwrap();
        }
    }

    #[test]
    fn the_key_confirmation_opens_once_and_only_with_the_session_keys() {
        let ((mut is, _), (_, mut ro)) = pair(&[9; 32], &[9; 32]).unwrap();
        let ((mut other, _), _) = pair(&[9; 32], &[9; 32]).unwrap();
        let mut wire = BytesMut::new();
        put_confirmation(&mut other, &mut wire);
        let foreign = next(&mut wire);
        assert!(
            open_confirmation(&mut ro, &foreign).is_err(),
            "another session's"
        );
        let ((mut is2, _), (_, mut ro2)) = pair(&[9; 32], &[9; 32]).unwrap();
        put_confirmation(&mut is2, &mut wire);
        let good = next(&mut wire);
        open_confirmation(&mut ro2, &good).unwrap();
        assert!(open_confirmation(&mut ro2, &good).is_err(), "replayed");
        // A non-empty first record is not a confirmation.
        is.seal(b"x", &mut wire);
        assert!(open_confirmation(&mut ro, &next(&mut wire)).is_err());
    }

    #[test]
    fn sealed_stream_round_trip_with_large_chunks() {
        let ((mut is, _io), (_rs, mut ro)) = pair(&[1; 32], &[1; 32]).unwrap();
        let plain: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = BytesMut::new();
        is.seal(&plain, &mut wire);
        is.seal(b"tail", &mut wire);
        // The variant of parts writes the same records as of the parts joined (and
        // continues the nonces), whatever the parts' edges, reusing its buffer.
        let mut reused = BytesMut::from(&[0xee; 100_000][..]);
        let parts = [
            &plain[..10],
            &[][..],
            &plain[10..60_000],
            &plain[60_000..70_000],
        ];
        is.seal_parts(parts, 70_000, &mut reused);
        assert_eq!(reused.len(), 70_000 + 2 * (2 + TAG));
        assert_eq!(
            u16::from_be_bytes([reused[0], reused[1]]) as usize,
            MAX_RECORD,
            "a full record first"
        );
        wire.extend_from_slice(&reused);
        assert!(!wire.windows(16).any(|w| w == &plain[1000..1016]));
        let mut out = BytesMut::new();
        while let Some(rec) = take_record(&mut wire, MAX_RECORD).unwrap() {
            let Record::Data(d) = rec else { panic!() };
            assert!(d.len() <= MAX_RECORD);
            ro.open(&d, &mut out).unwrap();
        }
        assert_eq!(&out[..plain.len()], &plain[..]);
        assert_eq!(&out[plain.len()..plain.len() + 4], b"tail");
        assert_eq!(&out[plain.len() + 4..], &plain[..70_000]);
    }

    /// Records sealed from parts split at random (empty parts, edges inside and on
    /// record boundaries, many tiny parts in one record) open to the joined bytes, in
    /// records of the lengths `seal` of the joined bytes gives: full ones, then the rest.
    #[test]
    fn sealing_random_parts_is_sealing_their_bytes_joined() {
        let ((mut is, _), (_, mut ro)) = pair(&[4; 32], &[4; 32]).unwrap();
        let mut next = crate::test_rng(0x1234_5678_u32);
        let mut sealed = BytesMut::new();
        for round in 0..60 {
            let total = match round % 4 {
                0 => next() % 100,
                1 => MAX_PLAIN * (1 + next() % 3),
                _ => next() % (4 * MAX_PLAIN),
            };
            let plain: Vec<u8> = (0..total).map(|i| (i * 7 + round) as u8).collect();
            let mut cuts: Vec<usize> = (0..next() % 40).map(|_| next() % (total + 1)).collect();
            if round % 3 == 0 && total > MAX_PLAIN {
                cuts.extend([MAX_PLAIN, MAX_PLAIN - 1, MAX_PLAIN + 1]);
            }
            cuts.extend([0, total, total]);
            cuts.sort_unstable();
            let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &plain[w[0]..w[1]]).collect();
            is.seal_parts(parts, total, &mut sealed);
            let mut lens = Vec::new();
            let mut out = BytesMut::new();
            while let Some(rec) = take_record(&mut sealed, MAX_RECORD).unwrap() {
                let Record::Data(d) = rec else { panic!() };
                let before = out.len();
                ro.open(&d, &mut out).unwrap();
                lens.push(out.len() - before);
            }
            let want: Vec<usize> = plain.chunks(MAX_PLAIN).map(<[u8]>::len).collect();
            assert_eq!(lens, want, "round {round}, {total} bytes");
            assert_eq!(&out[..], &plain[..], "round {round}");
        }
    }

    #[test]
    fn wrong_psk_fails_the_handshake() {
        assert!(pair(&[1; 32], &[2; 32]).is_err());
    }

    #[test]
    fn tampered_or_replayed_records_fail() {
        let ((mut is, _), (_, mut ro)) = pair(&[3; 32], &[3; 32]).unwrap();
        let mut wire = BytesMut::new();
        is.seal(b"one", &mut wire);
        let Some(Record::Data(rec)) = take_record(&mut wire, MAX_RECORD).unwrap() else {
            panic!()
        };
        let mut out = BytesMut::new();
        let mut bad = rec.clone();
        bad[0] ^= 1;
        assert!(matches!(
            ro.open(&bad, &mut out),
            Err(CloseReason::AuthFailed)
        ));
        ro.open(&rec, &mut out).unwrap();
        // The same record again: the nonce moved on, so it no longer verifies.
        assert!(matches!(
            ro.open(&rec, &mut out),
            Err(CloseReason::AuthFailed)
        ));
        assert_eq!(&out[..], b"one");
    }

    #[test]
    fn malformed_records() {
        let mut b = BytesMut::from(&[0u8, 5, 1, 2][..]);
        assert!(take_record(&mut b, 4096).is_err()); // shorter than a tag
        let mut b = BytesMut::from(&[0x10u8, 0x01][..]);
        assert!(take_record(&mut b, 4096).is_err()); // over the limit
        let mut b = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(take_record(&mut b, 4096).unwrap(), None);
        b.put_u8(ALERT_AUTH);
        assert_eq!(
            take_record(&mut b, 4096).unwrap(),
            Some(Record::Alert(ALERT_AUTH))
        );
    }
}
