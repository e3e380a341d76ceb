//! The encoding under the messages: header, postcard bodies, signatures, canonical
//! checks, and the borrowed and owned serde forms with sequences bounded while read.

use std::marker::PhantomData;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::*;

pub(super) fn check_addresses(count: usize) -> Result<(), AdvertError> {
    if count > MAX_ADDRESSES {
        return Err(AdvertError::TooManyAddresses {
            count,
            max: MAX_ADDRESSES,
        });
    }
    Ok(())
}

/// Writes the header, lets `body` append, and enforces `max`; restores `dst` on failure.
pub(super) fn encode_with(
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

pub(super) fn put<T: Serialize + ?Sized>(
    kind: Kind,
    value: &T,
    dst: &mut Vec<u8>,
) -> Result<(), AdvertError> {
    let out = postcard::to_extend(value, std::mem::take(dst)).map_err(|e| AdvertError::Encode {
        kind,
        source: e.into(),
    })?;
    *dst = out;
    Ok(())
}

pub(super) fn split_header(bytes: &[u8], max: usize) -> Result<(Kind, &[u8]), AdvertError> {
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

/// The body before the trailing signature, and the signature.
pub(super) fn split_signature(kind: Kind, body: &[u8]) -> Result<(&[u8], Signature), AdvertError> {
    let Some(at) = body.len().checked_sub(SIGNATURE_LEN) else {
        return Err(AdvertError::Malformed {
            kind,
            source: WireError::Postcard(postcard::Error::DeserializeUnexpectedEnd),
        });
    };
    let (body, sig) = body.split_at(at);
    let sig: [u8; SIGNATURE_LEN] = sig.try_into().expect("split at the signature length");
    Ok((body, Signature::from_bytes(sig)))
}

/// Refuses a signed message whose bytes are not the canonical encoding of what they
/// decode to. postcard accepts overlong varints (`81 00` for 1), and signatures are checked
/// over the canonical encoding, so without this one signed message would have many byte
/// strings (and a prefix of an over-long string could pass for a whole message).
pub(super) fn check_canonical(
    kind: Kind,
    canonical: &[u8],
    received: &[u8],
) -> Result<(), AdvertError> {
    if canonical == received {
        Ok(())
    } else {
        Err(AdvertError::Malformed {
            kind,
            source: WireError::Postcard(postcard::Error::DeserializeBadVarint),
        })
    }
}

pub(super) fn body_from<T: serde::de::DeserializeOwned>(
    kind: Kind,
    body: &[u8],
) -> Result<T, AdvertError> {
    hail_wire::postcard_from_slice(body, MAX_DEPTH)
        .map_err(|source| AdvertError::Malformed { kind, source })
}

// Wire structs. The borrowed ones encode, the owned ones decode; postcard writes a
// `&str` as a `String` and a `&[T]` as a `Vec<T>`, so each pair has one byte layout.

#[derive(Serialize)]
pub(super) struct AnnounceRef<'a> {
    pub(super) key: &'a [u8; 32],
    pub(super) seq: u64,
    pub(super) name: &'a str,
    pub(super) port: u16,
    pub(super) lease_ms: u32,
    pub(super) addresses: &'a [IpAddr],
    pub(super) metadata: &'a Metadata,
}

#[derive(Deserialize)]
pub(super) struct AnnounceOwned {
    pub(super) key: [u8; 32],
    pub(super) seq: u64,
    pub(super) name: String,
    pub(super) port: u16,
    pub(super) lease_ms: u32,
    pub(super) addresses: Bounded<IpAddr, MAX_ADDRESSES>,
    pub(super) metadata: Bounded<(String, String), MAX_METADATA_ENTRIES>,
}

impl Bounded<(String, String), MAX_METADATA_ENTRIES> {
    /// The map, checked: at most the entry limit, keys strictly ascending (one encoding per
    /// map), and valid as [`validate_metadata`] says.
    pub(super) fn into_map(self) -> Result<Metadata, AdvertError> {
        if self.count > MAX_METADATA_ENTRIES {
            return Err(MetadataError::TooManyEntries {
                count: self.count,
                max: MAX_METADATA_ENTRIES,
            }
            .into());
        }
        if self.items.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(MetadataError::NotCanonical.into());
        }
        let map: Metadata = self.items.into_iter().collect();
        validate_metadata(&map)?;
        Ok(map)
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct GoodbyeWire {
    pub(super) key: [u8; 32],
    pub(super) seq: u64,
}

#[derive(Serialize)]
pub(super) struct HelloRef<'a> {
    pub(super) tag: u64,
    pub(super) announce: &'a [u8],
}

#[derive(Deserialize)]
pub(super) struct HelloOwned {
    pub(super) tag: u64,
    pub(super) announce: Bounded<u8, MAX_ADVERT_LEN>,
}

#[derive(Serialize)]
pub(super) struct PeerRecordRef<'a> {
    pub(super) announce: &'a [u8],
    pub(super) observed: Option<IpAddr>,
}

#[derive(Deserialize)]
pub(super) struct PeerRecordOwned {
    pub(super) announce: Bounded<u8, MAX_ADVERT_LEN>,
    pub(super) observed: Option<IpAddr>,
}

/// A sequence that keeps at most `N` items while it is read and counts the rest, so an
/// over-long list costs no memory beyond `N` items and still yields a typed error.
pub(super) struct Bounded<T, const N: usize> {
    pub(super) items: Vec<T>,
    pub(super) count: usize,
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
