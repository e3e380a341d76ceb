//! The discovery protocol, version 2: signed adverts on multicast, hello and gossip on links.
//!
//! Every discovery message, on the multicast group or inside a link frame, starts with
//! the same 6-byte header; the body is [postcard](https://postcard.jamesmunns.com/wire-format)
//! and depends on the kind.
//!
//! ```text
//!  0                   4         5         6
//! +---+---+---+---+---------+---------+-------------------------------+
//! | H | A | I | L | version |  kind   | body (postcard, per kind)     |
//! +---+---+---+---+---------+---------+-------------------------------+
//!   magic 48 41 49 4c  0x02
//! ```
//!
//! | kind | name | carried on | body |
//! |---|---|---|---|
//! | `0x01` | announce | multicast, and inside hello and peers | `key`, `seq`, `name`, `port`, `lease_ms`, `addresses`, `metadata`, then the 64-byte signature |
//! | `0x02` | probe | multicast | `id` of the prober |
//! | `0x03` | goodbye | multicast (signed) and links (`id` only) | multicast: `key`, `seq`, then the signature; link: `id` |
//! | `0x04` | hello | links (first message each way) | `tag`, then the sender's signed announce |
//! | `0x05` | peers | links | `count`, then `count` peer records |
//!
//! Body fields, in order, with postcard's encodings (varint = unsigned LEB128):
//!
//! | field | type | encoding | bytes |
//! |---|---|---|---|
//! | `key` | the device's Ed25519 public key | the 32 bytes as they are | 32 |
//! | `seq` | `u64`, the signer's sequence number ([`hail_crypto::Sequence`]) | varint | 1..=10 |
//! | `id` | [`DeviceId`], derived from the key ([`hail_crypto::identity::device_id`]) | the 16 bytes | 16 |
//! | `name` | UTF-8, 1..=64 bytes ([`validate_name`]) | varint length, bytes | 2..=65 |
//! | `port` | `u16`, TCP listen port, 0 = not reachable | varint | 1..=3 |
//! | `lease_ms` | `u32`, ms a receiver keeps the entry without news | varint | 1..=5 |
//! | `addresses` | up to 8 IP addresses, each with its family | varint count, then each `00` + 4 octets (IPv4) or `01` + 16 octets (IPv6) | 1..=137 |
//! | `metadata` | up to 16 pairs of key and value, keys strictly ascending ([`validate_metadata`]) | varint count, then each key and value as strings | 1..=548 |
//! | signature | Ed25519 over the header and body before it, context `hail-discovery/announce/v2` (or `.../goodbye/v2`) | 64 bytes, outside postcard | 64 |
//! | `tag` | `u64`, the dialer's connection tag (0 from the accepting side) | varint | 1..=10 |
//! | signed announce | a whole announce message (header, body, signature), at most [`MAX_ADVERT_LEN`] | varint length, bytes | 110..=872 |
//! | `count` | number of peer records, at most 16 | varint | 1 |
//! | peer record | the peer's signed announce as above, then `observed`: `00` (none) or `01` + address, where the sender sees the peer's link come from | | |
//!
//! A device's id is not sent: it is the hash of its key, so an advert cannot name one id and
//! carry another's key. The signature covers every byte before it, header included, so no
//! field (nor the version or kind) can be changed without the key. Decoding checks the
//! format only (sizes, names, lists, and that the bytes are the one canonical encoding:
//! shortest varints, metadata keys strictly ascending); [`Announce::verify`] and
//! [`Goodbye::verify`] check the signature, which a receiver does only where the advert would
//! change what it knows (see [`PeerTable`](crate::PeerTable)).
//!
//! # Example
//!
//! The announce of a device named `lamp`, signed with the identity whose secret key is 32
//! bytes of `07` (`Identity::from_secret_bytes(&[7; 32])`), sequence number 1, port 40000,
//! a 3 s lease, one address and one metadata entry: 130 bytes. Its id, which is not sent, is
//! `a4b2e4ebb79d0179c93c658b28b65c2a`.
//!
//! ```text
//! 48 41 49 4c 02 01                                 header: HAIL, version 2, announce
//! ea 4a 6c 63 e2 9c 52 0a be f5 50 7b 13 2e c5 f9   key (32 bytes)
//! 95 47 76 ae be be 7b 92 42 1e ea 69 14 46 d2 2c
//! 01                                                seq 1
//! 04 6c 61 6d 70                                    name: 4 bytes, "lamp"
//! c0 b8 02                                          port 40000
//! b8 17                                             lease_ms 3000
//! 01 00 7f 00 00 01                                 1 address: IPv4 127.0.0.1
//! 01 04 72 6f 6c 65 04 6c 61 6d 70                  1 metadata entry: "role" = "lamp"
//! 4d 50 00 6d 6f 46 29 0a 96 e7 0d 95 0e 2c 6e 9e   signature (64 bytes): Identity::sign
//! 39 6a f4 ca ea 8b b4 4f 25 eb 8d 83 07 28 e5 54     with the context
//! 6c aa cd d3 42 fa 75 36 3e 3d 5f e0 9e 56 06 93     "hail-discovery/announce/v2" over
//! a3 26 52 b1 fc f0 38 9a 77 80 e7 19 1b 36 89 07     the 66 bytes above
//! ```
//!
//! # Limits
//!
//! An advert must fit one datagram: the encoder and the decoder both refuse more than
//! [`MAX_ADVERT_LEN`] (1024) bytes, which leaves room for the sealing overhead of
//! `hail-multicast` under the 1232-byte UDP payload that IPv6's minimum MTU guarantees
//! without fragmentation. The field limits keep announces shorter: the
//! largest possible announce is 870 bytes (a 64-byte name, 8 IPv6 addresses, 512 bytes of
//! metadata in 16 entries, every number at its longest), so the length limit never cuts a
//! valid announce; a full gossip message of 16 such records is 14,247 bytes. A device with
//! more than [`MAX_ADDRESSES`] (8) addresses advertises the first 8 (the
//! [`PeerTable`](crate::PeerTable) truncates its local list and logs a warning); peers
//! also dial the source address of the advert, so the interface it was sent from is always
//! reachable. Link messages (hello, peers, goodbye) are limited to [`MAX_LINK_MESSAGE_LEN`]
//! (16 KiB); a gossip list longer than [`MAX_PEER_RECORDS`] (16) is sent as several
//! messages.
//!
//! # Versions and errors
//!
//! The version byte changes only for incompatible changes; a receiver drops any other
//! version ([`AdvertError::UnsupportedVersion`], counted). New message types get new kinds,
//! which older receivers drop ([`AdvertError::UnknownKind`]). Bodies are strict: truncated
//! input, bytes left over, a bad varint, invalid UTF-8, an invalid name, key or metadata, or
//! too many addresses or records are each a typed [`AdvertError`]; so is a signed message
//! that is not the canonical encoding of its fields (an overlong varint, which postcard
//! itself accepts), or a hello or gossip record whose inner announce is longer than
//! [`MAX_ADVERT_LEN`]. Decoding never allocates more than a small multiple of the input's
//! size: sequences are bounded while they are read, not after.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use hail_crypto::{Identity, PublicKey, Signature};
use hail_wire::WireError;

use crate::id::DeviceId;

mod metadata;
mod name;
mod wire;

pub use metadata::{MetadataError, validate_metadata};
pub use name::{NameError, normalize_name, validate_name};
use wire::*;

/// The first four bytes of every discovery message: `HAIL`.
pub const MAGIC: [u8; 4] = *b"HAIL";
/// The protocol version this implementation speaks and sends: 2 (signed adverts).
pub const VERSION: u8 = 2;
/// Length of the header (magic, version, kind) in bytes.
pub const HEADER_LEN: usize = 6;
/// Largest advert (multicast message) in bytes, header included: 1024.
pub const MAX_ADVERT_LEN: usize = 1024;
/// Largest link message (hello, peers, goodbye) in bytes, header included: 16 KiB.
pub const MAX_LINK_MESSAGE_LEN: usize = 16 * 1024;
/// Longest device name in bytes of UTF-8: 64.
pub const MAX_NAME_LEN: usize = 64;
/// Most addresses in one announce: 8.
pub const MAX_ADDRESSES: usize = 8;
/// Most peer records in one gossip message: 16.
pub const MAX_PEER_RECORDS: usize = 16;
/// Most metadata entries in one announce: 16.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Most bytes of metadata keys and values together in one announce: 512.
pub const MAX_METADATA_LEN: usize = 512;
/// Longest metadata key in bytes: 32 (ASCII lower-case letters, digits, `.`, `_`, `-`).
pub const MAX_METADATA_KEY_LEN: usize = 32;
/// Length of a signature on the wire: 64.
pub const SIGNATURE_LEN: usize = hail_crypto::identity::SIGNATURE_LEN;
/// Signature context of announces.
pub const ANNOUNCE_CONTEXT: &[u8] = b"hail-discovery/announce/v2";
/// Signature context of multicast goodbyes.
pub const GOODBYE_CONTEXT: &[u8] = b"hail-discovery/goodbye/v2";
/// Nesting limit handed to the strict postcard decoder (the deepest message nests 6).
const MAX_DEPTH: usize = 16;

/// A device's metadata: a small map of keys to values it signs into its announces (like
/// Zyre headers or mDNS TXT records), shown in peer info and `hail scout`. Bounded by
/// [`validate_metadata`].
pub type Metadata = BTreeMap<String, String>;

/// The kind byte of a discovery message (a newtype, so an unknown kind survives decoding
/// and prints as hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind(pub u8);

impl Kind {
    /// Announce: "I am here" (multicast).
    pub const ANNOUNCE: Self = Self(0x01);
    /// Probe: "everyone announce now" (multicast).
    pub const PROBE: Self = Self(0x02);
    /// Goodbye: "I am leaving" (multicast and links).
    pub const GOODBYE: Self = Self(0x03);
    /// Hello: the first message on a link, each way.
    pub const HELLO: Self = Self(0x04);
    /// Peers: gossip, "peers I am connected to" (links).
    pub const PEERS: Self = Self(0x05);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::ANNOUNCE => "announce",
            Self::PROBE => "probe",
            Self::GOODBYE => "goodbye",
            Self::HELLO => "hello",
            Self::PEERS => "peers",
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#04x}", self.0),
        }
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "Kind::{}", n.to_uppercase()),
            None => write!(f, "Kind({:#04x})", self.0),
        }
    }
}

/// A discovery message could not be encoded or decoded, or its signature does not verify.
///
/// Every such error concerns one datagram or one link message only: the peer table drops
/// the message, counts it in its [`PeerTableStats`](crate::PeerTableStats) and carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertError {
    /// The input is shorter than the 6-byte header.
    #[error("discovery message of {len} bytes is shorter than its 6-byte header")]
    TooShort {
        /// Length of the input in bytes.
        len: usize,
    },
    /// The input (decode) or the encoded message (encode) is longer than allowed.
    #[error("discovery message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The input does not start with the magic bytes `HAIL`: not a hail discovery message.
    #[error("not a hail discovery message (bad magic)")]
    BadMagic,
    /// The message is of a protocol version this implementation does not speak.
    #[error("discovery protocol version {version} is not supported (this side speaks 2)")]
    UnsupportedVersion {
        /// The version byte that arrived.
        version: u8,
    },
    /// The kind byte names no message this transport carries (unknown, or link-only on
    /// multicast, or multicast-only on a link).
    #[error("unexpected discovery message kind {kind}")]
    UnknownKind {
        /// The kind byte that arrived.
        kind: Kind,
    },
    /// The body of a known kind could not be decoded (truncated, trailing bytes, bad varint,
    /// invalid UTF-8, nesting too deep ...).
    #[error("malformed {kind} body: {source}")]
    Malformed {
        /// The kind whose body failed.
        kind: Kind,
        /// What the strict postcard decoder reported.
        source: WireError,
    },
    /// A device name in the message is invalid.
    #[error("invalid device name: {0}")]
    InvalidName(#[from] NameError),
    /// The metadata of an announce is invalid.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(#[from] MetadataError),
    /// A message lists more addresses than one advert may carry.
    #[error("{count} addresses listed, the limit is {max}")]
    TooManyAddresses {
        /// How many addresses were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A gossip message lists more peers than one message may carry.
    #[error("{count} peer records listed, the limit is {max}")]
    TooManyPeers {
        /// How many records were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The key is not a valid Ed25519 public key, or the signature does not verify.
    #[error("{kind} signature does not verify")]
    BadSignature {
        /// The kind of the signed message.
        kind: Kind,
    },
    /// postcard failed to encode a body (out of memory in practice).
    #[error("encoding a {kind} body: {source}")]
    Encode {
        /// The kind being encoded.
        kind: Kind,
        /// The postcard error.
        source: WireError,
    },
}

/// What an announce says about its device, apart from who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceBody {
    /// The device's name (see [`validate_name`]).
    pub name: String,
    /// TCP port the device accepts links on; 0 means it accepts none.
    pub port: u16,
    /// How long a receiver keeps the device without hearing from it again. Sent in whole
    /// milliseconds (rounded down, saturating at `u32::MAX` ms, about 49.7 days); receivers
    /// clamp it ([`MAX_PEER_LEASE`](crate::MAX_PEER_LEASE)).
    pub lease: Duration,
    /// The device's unicast addresses, at most [`MAX_ADDRESSES`].
    pub addresses: Vec<IpAddr>,
    /// The device's metadata (see [`validate_metadata`]).
    pub metadata: Metadata,
}

/// "I am here": who a device is and where to connect to it, signed by the device's key.
///
/// Made by [`Announce::sign`] or decoded; the signer's key, id, sequence number and
/// signature can be read but not changed. Decoding checks the format only:
/// [`Announce::verify`] checks the signature over the body as it is now, so a body changed
/// after signing (or on the wire) no longer verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    id: DeviceId,
    key: [u8; 32],
    seq: u64,
    /// What the announce says.
    pub body: AnnounceBody,
    signature: Signature,
}

/// "I am leaving", on the group: signed, with a sequence number above every announce of
/// the same run, so a recorded goodbye of an earlier run never removes a later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    id: DeviceId,
    key: [u8; 32],
    seq: u64,
    signature: Signature,
}

/// The first message on a link, sent by both sides as soon as the link is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's tag for this connection, unique among its dials; 0 from the accepting
    /// side. Together with the dialer's id it names the connection identically on both
    /// ends, which the simultaneous-dial rule needs.
    pub tag: u64,
    /// Who the sender is: its signed announce (its lease is ignored on links). Its key must
    /// be the one the link's handshake proved.
    pub announce: Announce,
}

/// One entry of a gossip message: a peer the sender is connected to, as that peer signed
/// it (a relay can pass on what it heard, never make up a record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer's own signed announce.
    pub announce: Announce,
    /// Where the sender sees the peer's link come from (a hint a receiver dials after the
    /// signed addresses; a dial still has to prove the peer's key).
    pub observed: Option<IpAddr>,
}

/// A message on the discovery multicast group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Advert {
    /// "I am here" (kind `0x01`).
    Announce(Announce),
    /// "Everyone announce now" (kind `0x02`).
    Probe {
        /// The prober (so it can ignore its own probe when multicast loops back).
        from: DeviceId,
    },
    /// "I am leaving" (kind `0x03`), signed.
    Goodbye(Goodbye),
}

/// A discovery message on a link (inside one frame of the link's framing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkMessage {
    /// The first message each way (kind `0x04`).
    Hello(Hello),
    /// Gossip: peers the sender is connected to (kind `0x05`), at most
    /// [`MAX_PEER_RECORDS`] per message.
    Peers(Vec<PeerRecord>),
    /// "I am leaving" (kind `0x03`), sent before the link is closed at shutdown (the link
    /// proves who sends it, so it is not signed).
    Goodbye {
        /// The departing device.
        from: DeviceId,
    },
}

fn id_of(key: &[u8; 32]) -> DeviceId {
    DeviceId::from_bytes(hail_crypto::identity::device_id(key))
}

fn verify_with(
    kind: Kind,
    context: &[u8],
    key: &[u8; 32],
    msg: &[u8],
    sig: &Signature,
) -> Result<(), AdvertError> {
    PublicKey::from_bytes(key)
        .and_then(|k| k.verify(context, msg, sig))
        .map_err(|_| AdvertError::BadSignature { kind })
}

impl Announce {
    /// Signs `body` with `identity` under sequence number `seq` (take it from the device's
    /// [`Sequence`](hail_crypto::Sequence); a later announce must have a higher one).
    ///
    /// Fails on an invalid name or metadata, or more than [`MAX_ADDRESSES`] addresses.
    pub fn sign(identity: &Identity, seq: u64, body: AnnounceBody) -> Result<Self, AdvertError> {
        let key = identity.public().to_bytes();
        let mut a = Self {
            id: id_of(&key),
            key,
            seq,
            body,
            signature: Signature::from_bytes([0; 64]),
        };
        let mut msg = Vec::with_capacity(128);
        a.encode_unsigned(&mut msg)?;
        a.signature = identity.sign(ANNOUNCE_CONTEXT, &msg);
        Ok(a)
    }

    /// The device's id (the hash of its key).
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The bytes of the signer's public key (checked to be a valid key by
    /// [`verify`](Self::verify), not by decoding).
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The signer's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Checks the signature over the body as it is now.
    pub fn verify(&self) -> Result<(), AdvertError> {
        let mut msg = Vec::with_capacity(128);
        self.encode_unsigned(&mut msg)?;
        verify_with(
            Kind::ANNOUNCE,
            ANNOUNCE_CONTEXT,
            &self.key,
            &msg,
            &self.signature,
        )
    }

    fn validate(&self) -> Result<(), AdvertError> {
        validate_name(&self.body.name)?;
        validate_metadata(&self.body.metadata)?;
        check_addresses(self.body.addresses.len())
    }

    /// The header and body, without the signature: the signed bytes.
    fn encode_unsigned(&self, dst: &mut Vec<u8>) -> Result<(), AdvertError> {
        self.validate()?;
        let kind = Kind::ANNOUNCE;
        encode_with(kind, MAX_ADVERT_LEN - SIGNATURE_LEN, dst, |dst| {
            let b = &self.body;
            put(
                kind,
                &AnnounceRef {
                    key: &self.key,
                    seq: self.seq,
                    name: &b.name,
                    port: b.port,
                    lease_ms: u32::try_from(b.lease.as_millis()).unwrap_or(u32::MAX),
                    addresses: &b.addresses,
                    metadata: &b.metadata,
                },
                dst,
            )
        })
    }

    /// Appends the whole signed announce (header, body, signature).
    fn encode(&self, dst: &mut Vec<u8>) -> Result<(), AdvertError> {
        self.encode_unsigned(dst)?;
        dst.extend_from_slice(self.signature.as_bytes());
        Ok(())
    }

    /// Decodes a whole signed announce (header included), format only.
    fn decode(bytes: &[u8]) -> Result<Self, AdvertError> {
        let (kind, body) = split_header(bytes, MAX_ADVERT_LEN)?;
        if kind != Kind::ANNOUNCE {
            return Err(AdvertError::UnknownKind { kind });
        }
        let (body, signature) = split_signature(kind, body)?;
        let w: AnnounceOwned = body_from(kind, body)?;
        validate_name(&w.name)?;
        check_addresses(w.addresses.count)?;
        let metadata = w.metadata.into_map()?;
        let a = Self {
            id: id_of(&w.key),
            key: w.key,
            seq: w.seq,
            body: AnnounceBody {
                name: w.name,
                port: w.port,
                lease: Duration::from_millis(u64::from(w.lease_ms)),
                addresses: w.addresses.items,
                metadata,
            },
            signature,
        };
        let mut canonical = Vec::with_capacity(bytes.len());
        a.encode_unsigned(&mut canonical)?;
        check_canonical(kind, &canonical, &bytes[..bytes.len() - SIGNATURE_LEN])?;
        Ok(a)
    }

    /// Decodes the signed announce carried as a byte string inside a hello or a gossip
    /// record: refused whole if longer than a datagram, never cut to the kept part.
    fn decode_inner(bytes: Bounded<u8, MAX_ADVERT_LEN>) -> Result<Self, AdvertError> {
        if bytes.count > MAX_ADVERT_LEN {
            return Err(AdvertError::TooLong {
                len: bytes.count,
                max: MAX_ADVERT_LEN,
            });
        }
        Self::decode(&bytes.items)
    }
}

impl Goodbye {
    /// Signs a goodbye with `identity` under sequence number `seq` (above every announce
    /// the device sent).
    pub fn sign(identity: &Identity, seq: u64) -> Self {
        let key = identity.public().to_bytes();
        let mut g = Self {
            id: id_of(&key),
            key,
            seq,
            signature: Signature::from_bytes([0; 64]),
        };
        let mut msg = Vec::with_capacity(64);
        g.encode_unsigned(&mut msg);
        g.signature = identity.sign(GOODBYE_CONTEXT, &msg);
        g
    }

    /// The departing device's id.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The signer's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Checks the signature.
    pub fn verify(&self) -> Result<(), AdvertError> {
        let mut msg = Vec::with_capacity(64);
        self.encode_unsigned(&mut msg);
        verify_with(
            Kind::GOODBYE,
            GOODBYE_CONTEXT,
            &self.key,
            &msg,
            &self.signature,
        )
    }

    fn encode_unsigned(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&MAGIC);
        dst.push(VERSION);
        dst.push(Kind::GOODBYE.0);
        let body = GoodbyeWire {
            key: self.key,
            seq: self.seq,
        };
        let out = postcard::to_extend(&body, std::mem::take(dst))
            .expect("a key and a number always encode");
        *dst = out;
    }
}

impl Advert {
    /// The kind byte this advert is sent with.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Announce(_) => Kind::ANNOUNCE,
            Self::Probe { .. } => Kind::PROBE,
            Self::Goodbye(_) => Kind::GOODBYE,
        }
    }

    /// Appends the encoded advert (header, body and signature) to `dst`.
    ///
    /// Fails on an invalid name or metadata, or more than [`MAX_ADDRESSES`] addresses; on
    /// failure `dst` is left as it was.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), AdvertError> {
        let start = dst.len();
        let r = match self {
            Self::Announce(a) => a.encode(dst),
            Self::Probe { from } => encode_with(Kind::PROBE, MAX_ADVERT_LEN, dst, |dst| {
                put(Kind::PROBE, from, dst)
            }),
            Self::Goodbye(g) => {
                g.encode_unsigned(dst);
                dst.extend_from_slice(g.signature.as_bytes());
                Ok(())
            }
        };
        if r.is_err() {
            dst.truncate(start);
        }
        r
    }

    /// The encoded advert as a new vector (see [`Advert::encode`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AdvertError> {
        let mut v = Vec::with_capacity(128);
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes one datagram, format only (signatures are checked by
    /// [`Announce::verify`] and [`Goodbye::verify`]). Input longer than
    /// [`MAX_ADVERT_LEN`] is refused before it is parsed; link-only kinds are
    /// [`AdvertError::UnknownKind`].
    pub fn decode(bytes: &[u8]) -> Result<Self, AdvertError> {
        let (kind, body) = split_header(bytes, MAX_ADVERT_LEN)?;
        match kind {
            Kind::ANNOUNCE => Ok(Self::Announce(Announce::decode(bytes)?)),
            Kind::PROBE => Ok(Self::Probe {
                from: body_from(kind, body)?,
            }),
            Kind::GOODBYE => {
                let (body, signature) = split_signature(kind, body)?;
                let w: GoodbyeWire = body_from(kind, body)?;
                let g = Goodbye {
                    id: id_of(&w.key),
                    key: w.key,
                    seq: w.seq,
                    signature,
                };
                let mut canonical = Vec::with_capacity(bytes.len());
                g.encode_unsigned(&mut canonical);
                check_canonical(kind, &canonical, &bytes[..bytes.len() - SIGNATURE_LEN])?;
                Ok(Self::Goodbye(g))
            }
            kind => Err(AdvertError::UnknownKind { kind }),
        }
    }
}

impl LinkMessage {
    /// The kind byte this message is sent with.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Hello(_) => Kind::HELLO,
            Self::Peers(_) => Kind::PEERS,
            Self::Goodbye { .. } => Kind::GOODBYE,
        }
    }

    /// Appends the encoded message (header and body) to `dst`.
    ///
    /// Fails on an invalid announce in a hello or record, or more than
    /// [`MAX_PEER_RECORDS`] records; on failure `dst` is left as it was.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), AdvertError> {
        let kind = self.kind();
        encode_with(kind, MAX_LINK_MESSAGE_LEN, dst, |dst| match self {
            Self::Hello(h) => {
                let mut announce = Vec::with_capacity(256);
                h.announce.encode(&mut announce)?;
                put(
                    kind,
                    &HelloRef {
                        tag: h.tag,
                        announce: &announce,
                    },
                    dst,
                )
            }
            Self::Peers(records) => {
                if records.len() > MAX_PEER_RECORDS {
                    return Err(AdvertError::TooManyPeers {
                        count: records.len(),
                        max: MAX_PEER_RECORDS,
                    });
                }
                let mut encoded = Vec::with_capacity(records.len());
                for r in records {
                    let mut a = Vec::with_capacity(256);
                    r.announce.encode(&mut a)?;
                    encoded.push((a, r.observed));
                }
                let wire: Vec<PeerRecordRef<'_>> = encoded
                    .iter()
                    .map(|(a, observed)| PeerRecordRef {
                        announce: a,
                        observed: *observed,
                    })
                    .collect();
                put(kind, &wire, dst)
            }
            Self::Goodbye { from } => put(kind, from, dst),
        })
    }

    /// The encoded message as a new vector (see [`LinkMessage::encode`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AdvertError> {
        let mut v = Vec::with_capacity(256);
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes one link message (one frame body), format only. Input longer than
    /// [`MAX_LINK_MESSAGE_LEN`] is refused before it is parsed; multicast-only kinds are
    /// [`AdvertError::UnknownKind`].
    pub fn decode(bytes: &[u8]) -> Result<Self, AdvertError> {
        let (kind, body) = split_header(bytes, MAX_LINK_MESSAGE_LEN)?;
        match kind {
            Kind::HELLO => {
                let h: HelloOwned = body_from(kind, body)?;
                Ok(Self::Hello(Hello {
                    tag: h.tag,
                    announce: Announce::decode_inner(h.announce)?,
                }))
            }
            Kind::PEERS => {
                let list: Bounded<PeerRecordOwned, MAX_PEER_RECORDS> = body_from(kind, body)?;
                if list.count > MAX_PEER_RECORDS {
                    return Err(AdvertError::TooManyPeers {
                        count: list.count,
                        max: MAX_PEER_RECORDS,
                    });
                }
                let records = list
                    .items
                    .into_iter()
                    .map(|r| {
                        Ok(PeerRecord {
                            announce: Announce::decode_inner(r.announce)?,
                            observed: r.observed,
                        })
                    })
                    .collect::<Result<_, AdvertError>>()?;
                Ok(Self::Peers(records))
            }
            Kind::GOODBYE => Ok(Self::Goodbye {
                from: body_from(kind, body)?,
            }),
            kind => Err(AdvertError::UnknownKind { kind }),
        }
    }
}

#[cfg(test)]
mod tests;
