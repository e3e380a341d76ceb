//! The discovery protocol, version 1: adverts on multicast, hello and gossip on links.
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
//!   magic 48 41 49 4c  0x01
//! ```
//!
//! | kind | name | carried on | body |
//! |---|---|---|---|
//! | `0x01` | announce | multicast | `id`, `name`, `port`, `lease_ms`, `addresses` |
//! | `0x02` | probe | multicast | `id` of the prober |
//! | `0x03` | goodbye | multicast and links | `id` of the departing device |
//! | `0x04` | hello | links (first message each way) | `tag`, then the announce fields |
//! | `0x05` | peers | links | `count`, then `count` peer records |
//!
//! Body fields, in order, with postcard's encodings (varint = unsigned LEB128):
//!
//! | field | type | encoding | bytes |
//! |---|---|---|---|
//! | `id` | [`DeviceId`] | the 16 bytes as they are | 16 |
//! | `name` | UTF-8, 1..=64 bytes, no control characters | varint length, bytes | 2..=65 |
//! | `port` | `u16`, TCP listen port, 0 = not reachable | varint | 1..=3 |
//! | `lease_ms` | `u32`, ms a receiver keeps the entry without news | varint | 1..=5 |
//! | `addresses` | up to 32 IP addresses | varint count, then each `00` + 4 octets (IPv4) or `01` + 16 octets (IPv6) | 1..=545 |
//! | `tag` | `u64`, the dialer's connection tag (0 from the accepting side) | varint | 1..=10 |
//! | `count` | number of peer records, at most 16 | varint | 1 |
//! | peer record | `id`, `name`, `port`, `addresses` as above | | 19..=629 |
//!
//! Example: the announce of device `0x11 x 16` named `lamp`, port 40000, lease 3000 ms,
//! address 127.0.0.1 is 38 bytes:
//!
//! ```text
//! 48 41 49 4c 01 01                                  header: "HAIL", v1, announce
//! 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11    id
//! 04 6c 61 6d 70                                     name "lamp"
//! c0 b8 02                                           port 40000
//! b8 17                                              lease_ms 3000
//! 01 00 7f 00 00 01                                  1 address: IPv4 127.0.0.1
//! ```
//!
//! # Limits
//!
//! An advert must fit one datagram: the encoder and the decoder both refuse more than
//! [`MAX_ADVERT_LEN`] (1024) bytes, which leaves room for the sealing overhead of
//! `hail-multicast` under the 1232-byte UDP payload that IPv6's minimum MTU guarantees
//! without fragmentation. The field limits keep the largest possible announce at 640
//! bytes, so the length limit never cuts a valid announce. A device with more than
//! [`MAX_ADDRESSES`] (32) addresses advertises the first 32 (the
//! [`PeerTable`](crate::PeerTable) truncates its local list and logs a warning); peers
//! also dial the source address of the advert, so the interface it was sent from is always
//! reachable. Link messages (hello, peers, goodbye) are limited to [`MAX_LINK_MESSAGE_LEN`]
//! (16 KiB); a gossip list longer than [`MAX_PEER_RECORDS`] (16) is sent as several
//! messages.
//!
//! # Versions and errors
//!
//! The version byte changes only for incompatible changes; a receiver drops any other
//! version ([`AdvertError::UnsupportedVersion`]). New message types get new kinds, which
//! older receivers drop ([`AdvertError::UnknownKind`]). Bodies are strict: truncated
//! input, bytes left over, a bad varint, invalid UTF-8, an invalid name, or too many
//! addresses or records are each a typed [`AdvertError`]. Decoding never allocates more
//! than the input's size: sequences are bounded while they are read, not after.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::time::Duration;

use hail_wire::WireError;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::NameError;
use crate::id::DeviceId;

/// The first four bytes of every discovery message: `HAIL`.
pub const MAGIC: [u8; 4] = *b"HAIL";
/// The protocol version this implementation speaks and sends.
pub const VERSION: u8 = 1;
/// Length of the header (magic, version, kind) in bytes.
pub const HEADER_LEN: usize = 6;
/// Largest advert (multicast message) in bytes, header included: 1024.
pub const MAX_ADVERT_LEN: usize = 1024;
/// Largest link message (hello, peers, goodbye) in bytes, header included: 16 KiB.
pub const MAX_LINK_MESSAGE_LEN: usize = 16 * 1024;
/// Longest device name in bytes of UTF-8: 64.
pub const MAX_NAME_LEN: usize = 64;
/// Most addresses in one announce, hello or peer record: 32.
pub const MAX_ADDRESSES: usize = 32;
/// Most peer records in one gossip message: 16.
pub const MAX_PEER_RECORDS: usize = 16;
/// Nesting limit handed to the strict postcard decoder (the deepest message nests 6).
const MAX_DEPTH: usize = 16;

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

/// A discovery message could not be encoded or decoded.
///
/// Every decode error concerns one datagram or one link message only: the peer table drops
/// the message, counts it in its [`Stats`](crate::Stats) and carries on.
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
    #[error("discovery protocol version {version} is not supported (this side speaks 1)")]
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
    /// postcard failed to encode a body (out of memory in practice).
    #[error("encoding a {kind} body: {source}")]
    Encode {
        /// The kind being encoded.
        kind: Kind,
        /// The postcard error.
        source: WireError,
    },
}

/// Checks a device name against the rule of [`NameError`]: 1 to [`MAX_NAME_LEN`] bytes of
/// UTF-8 in NFC, no control, format, separator, private-use, unassigned or blank-rendering
/// character, and U+0020 as the only space, never at either end.
///
/// ```
/// use hail_discovery::{NameError, validate_name};
///
/// assert!(validate_name("kitchen lamp ✓").is_ok());
/// assert!(validate_name("Küche").is_ok());
/// // A zero-width space makes "A\u{200B}" look like "A".
/// assert_eq!(validate_name("A\u{200B}"), Err(NameError::InvisibleCharacter('\u{200B}')));
/// // A right-to-left override turns what follows around.
/// assert_eq!(validate_name("a\u{202E}b"), Err(NameError::InvisibleCharacter('\u{202E}')));
/// assert_eq!(validate_name("lamp "), Err(NameError::Whitespace));
/// // "u" followed by a combining diaeresis is "ü" in NFD.
/// assert_eq!(validate_name("Ku\u{308}che"), Err(NameError::NotNormalized));
/// ```
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    for c in name.chars() {
        name_char(c)?;
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err(NameError::Whitespace);
    }
    // Checked last: a quick check answers for almost every name without allocating.
    if !unicode_normalization::is_nfc(name) {
        return Err(NameError::NotNormalized);
    }
    Ok(())
}

/// Brings a name into Unicode normalization form C, the form [`validate_name`] requires;
/// a name already in NFC comes back unchanged.
pub fn normalize_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    if unicode_normalization::is_nfc_quick(name.chars()) == unicode_normalization::IsNormalized::Yes
    {
        return name.to_owned();
    }
    name.nfc().collect()
}

/// One character of a name, by its Unicode general category and the few blank-rendering
/// letters and marks that categories do not catch.
fn name_char(c: char) -> Result<(), NameError> {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    match c.general_category() {
        G::Control => Err(NameError::ControlCharacter),
        G::Format
        | G::LineSeparator
        | G::ParagraphSeparator
        | G::PrivateUse
        | G::Surrogate
        | G::Unassigned => Err(NameError::InvisibleCharacter(c)),
        G::SpaceSeparator if c != ' ' => Err(NameError::Whitespace),
        _ if BLANK.contains(&c) || ('\u{180B}'..='\u{180F}').contains(&c) => {
            Err(NameError::InvisibleCharacter(c))
        }
        _ => Ok(()),
    }
}

/// Letters and marks that render as nothing (Default_Ignorable_Code_Point in Unicode, but
/// not of a category [`name_char`] refuses): the combining grapheme joiner, the Hangul
/// fillers and the Khmer inherent vowels.
const BLANK: [char; 7] = [
    '\u{034F}', '\u{115F}', '\u{1160}', '\u{17B4}', '\u{17B5}', '\u{3164}', '\u{FFA0}',
];

/// "I am here": who a device is and where to connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The device's id for this run.
    pub id: DeviceId,
    /// The device's name (see [`validate_name`]).
    pub name: String,
    /// TCP port the device accepts links on; 0 means it accepts none.
    pub port: u16,
    /// How long a receiver keeps the device without hearing from it again. Sent in whole
    /// milliseconds (rounded down, saturating at `u32::MAX` ms, about 49.7 days).
    pub lease: Duration,
    /// The device's unicast addresses, at most [`MAX_ADDRESSES`].
    pub addresses: Vec<IpAddr>,
}

/// The first message on a link, sent by both sides as soon as the link is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's tag for this connection, unique among its dials; 0 from the accepting
    /// side. Together with the dialer's id it names the connection identically on both
    /// ends, which the simultaneous-dial rule needs.
    pub tag: u64,
    /// Who the sender is (its lease is ignored on links).
    pub announce: Announce,
}

/// One entry of a gossip message: a peer the sender is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer's id.
    pub id: DeviceId,
    /// The peer's name.
    pub name: String,
    /// The peer's TCP port.
    pub port: u16,
    /// Addresses to reach it at, best first (the sender puts the address it sees the peer
    /// connected from first), at most [`MAX_ADDRESSES`].
    pub addresses: Vec<IpAddr>,
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
    /// "I am leaving" (kind `0x03`).
    Goodbye {
        /// The departing device.
        from: DeviceId,
    },
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
    /// "I am leaving" (kind `0x03`), sent before the link is closed at shutdown.
    Goodbye {
        /// The departing device.
        from: DeviceId,
    },
}

impl Advert {
    /// The kind byte this advert is sent with.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Announce(_) => Kind::ANNOUNCE,
            Self::Probe { .. } => Kind::PROBE,
            Self::Goodbye { .. } => Kind::GOODBYE,
        }
    }

    /// Appends the encoded advert (header and body) to `dst`.
    ///
    /// Fails on an invalid name or more than [`MAX_ADDRESSES`] addresses; on failure `dst`
    /// is left as it was.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), AdvertError> {
        let kind = self.kind();
        encode_with(kind, MAX_ADVERT_LEN, dst, |dst| match self {
            Self::Announce(a) => {
                a.validate()?;
                put(kind, &a.wire(), dst)
            }
            Self::Probe { from } | Self::Goodbye { from } => put(kind, from, dst),
        })
    }

    /// The encoded advert as a new vector (see [`Advert::encode`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AdvertError> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes one datagram. Input longer than [`MAX_ADVERT_LEN`] is refused before it is
    /// parsed; link-only kinds are [`AdvertError::UnknownKind`].
    pub fn decode(bytes: &[u8]) -> Result<Self, AdvertError> {
        let (kind, body) = split_header(bytes, MAX_ADVERT_LEN)?;
        match kind {
            Kind::ANNOUNCE => Ok(Self::Announce(
                body_from::<AnnounceOwned>(kind, body)?.into_announce()?,
            )),
            Kind::PROBE => Ok(Self::Probe {
                from: body_from(kind, body)?,
            }),
            Kind::GOODBYE => Ok(Self::Goodbye {
                from: body_from(kind, body)?,
            }),
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
    /// Fails on an invalid name, more than [`MAX_ADDRESSES`] addresses in a hello or record,
    /// or more than [`MAX_PEER_RECORDS`] records; on failure `dst` is left as it was.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), AdvertError> {
        let kind = self.kind();
        encode_with(kind, MAX_LINK_MESSAGE_LEN, dst, |dst| match self {
            Self::Hello(h) => {
                h.announce.validate()?;
                put(
                    kind,
                    &HelloRef {
                        tag: h.tag,
                        announce: h.announce.wire(),
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
                let mut wire = Vec::with_capacity(records.len());
                for r in records {
                    validate_name(&r.name)?;
                    check_addresses(r.addresses.len())?;
                    wire.push(PeerRecordRef {
                        id: &r.id,
                        name: &r.name,
                        port: r.port,
                        addresses: &r.addresses,
                    });
                }
                put(kind, &wire, dst)
            }
            Self::Goodbye { from } => put(kind, from, dst),
        })
    }

    /// The encoded message as a new vector (see [`LinkMessage::encode`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AdvertError> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes one link message (one frame body). Input longer than
    /// [`MAX_LINK_MESSAGE_LEN`] is refused before it is parsed; multicast-only kinds are
    /// [`AdvertError::UnknownKind`].
    pub fn decode(bytes: &[u8]) -> Result<Self, AdvertError> {
        let (kind, body) = split_header(bytes, MAX_LINK_MESSAGE_LEN)?;
        match kind {
            Kind::HELLO => {
                let h: HelloOwned = body_from(kind, body)?;
                Ok(Self::Hello(Hello {
                    tag: h.tag,
                    announce: h.announce.into_announce()?,
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
                    .map(PeerRecordOwned::into_record)
                    .collect::<Result<_, _>>()?;
                Ok(Self::Peers(records))
            }
            Kind::GOODBYE => Ok(Self::Goodbye {
                from: body_from(kind, body)?,
            }),
            kind => Err(AdvertError::UnknownKind { kind }),
        }
    }
}

impl Announce {
    fn validate(&self) -> Result<(), AdvertError> {
        validate_name(&self.name)?;
        check_addresses(self.addresses.len())
    }

    fn wire(&self) -> AnnounceRef<'_> {
        AnnounceRef {
            id: &self.id,
            name: &self.name,
            port: self.port,
            lease_ms: u32::try_from(self.lease.as_millis()).unwrap_or(u32::MAX),
            addresses: &self.addresses,
        }
    }
}

fn check_addresses(count: usize) -> Result<(), AdvertError> {
    if count > MAX_ADDRESSES {
        return Err(AdvertError::TooManyAddresses {
            count,
            max: MAX_ADDRESSES,
        });
    }
    Ok(())
}

/// Writes the header, lets `body` append, and enforces `max`; restores `dst` on failure.
fn encode_with(
    kind: Kind,
    max: usize,
    dst: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), AdvertError>,
) -> Result<(), AdvertError> {
    let start = dst.len();
    dst.extend_from_slice(&MAGIC);
    dst.push(VERSION);
    dst.push(kind.0);
    let result = body(dst).and_then(|()| {
        let len = dst.len() - start;
        if len > max {
            Err(AdvertError::TooLong { len, max })
        } else {
            Ok(())
        }
    });
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

fn put<T: Serialize + ?Sized>(kind: Kind, value: &T, dst: &mut Vec<u8>) -> Result<(), AdvertError> {
    let out = postcard::to_extend(value, std::mem::take(dst)).map_err(|e| AdvertError::Encode {
        kind,
        source: e.into(),
    })?;
    *dst = out;
    Ok(())
}

fn split_header(bytes: &[u8], max: usize) -> Result<(Kind, &[u8]), AdvertError> {
    if bytes.len() > max {
        return Err(AdvertError::TooLong {
            len: bytes.len(),
            max,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(AdvertError::TooShort { len: bytes.len() });
    }
    if bytes[..4] != MAGIC {
        return Err(AdvertError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(AdvertError::UnsupportedVersion { version: bytes[4] });
    }
    Ok((Kind(bytes[5]), &bytes[HEADER_LEN..]))
}

fn body_from<T: serde::de::DeserializeOwned>(kind: Kind, body: &[u8]) -> Result<T, AdvertError> {
    hail_wire::postcard_from_slice(body, MAX_DEPTH)
        .map_err(|source| AdvertError::Malformed { kind, source })
}

// Wire structs. The borrowed ones encode, the owned ones decode; postcard writes a
// `&str` as a `String` and a `&[T]` as a `Vec<T>`, so each pair has one byte layout.

#[derive(Serialize)]
struct AnnounceRef<'a> {
    id: &'a DeviceId,
    name: &'a str,
    port: u16,
    lease_ms: u32,
    addresses: &'a [IpAddr],
}

#[derive(Deserialize)]
struct AnnounceOwned {
    id: DeviceId,
    name: String,
    port: u16,
    lease_ms: u32,
    addresses: Bounded<IpAddr, MAX_ADDRESSES>,
}

impl AnnounceOwned {
    fn into_announce(self) -> Result<Announce, AdvertError> {
        validate_name(&self.name)?;
        check_addresses(self.addresses.count)?;
        Ok(Announce {
            id: self.id,
            name: self.name,
            port: self.port,
            lease: Duration::from_millis(u64::from(self.lease_ms)),
            addresses: self.addresses.items,
        })
    }
}

#[derive(Serialize)]
struct HelloRef<'a> {
    tag: u64,
    announce: AnnounceRef<'a>,
}

#[derive(Deserialize)]
struct HelloOwned {
    tag: u64,
    announce: AnnounceOwned,
}

#[derive(Serialize)]
struct PeerRecordRef<'a> {
    id: &'a DeviceId,
    name: &'a str,
    port: u16,
    addresses: &'a [IpAddr],
}

#[derive(Deserialize)]
struct PeerRecordOwned {
    id: DeviceId,
    name: String,
    port: u16,
    addresses: Bounded<IpAddr, MAX_ADDRESSES>,
}

impl PeerRecordOwned {
    fn into_record(self) -> Result<PeerRecord, AdvertError> {
        validate_name(&self.name)?;
        check_addresses(self.addresses.count)?;
        Ok(PeerRecord {
            id: self.id,
            name: self.name,
            port: self.port,
            addresses: self.addresses.items,
        })
    }
}

/// A sequence that keeps at most `N` items while it is read and counts the rest, so an
/// over-long list costs no memory beyond `N` items and still yields a typed error.
struct Bounded<T, const N: usize> {
    items: Vec<T>,
    count: usize,
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<T, const N: usize>(PhantomData<fn() -> T>);

        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for BoundedVisitor<T, N> {
            type Value = Bounded<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {N} items")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
                let mut count = 0usize;
                while let Some(item) = seq.next_element::<T>()? {
                    if items.len() < N {
                        items.push(item);
                    }
                    count += 1;
                }
                Ok(Bounded { items, count })
            }
        }

        d.deserialize_seq(BoundedVisitor::<T, N>(PhantomData))
    }
}

#[cfg(test)]
mod tests;
