//! Signed metadata: the key/value map an announce carries, and its rule.

use super::{MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN, MAX_METADATA_LEN, Metadata};

/// Why a metadata map is refused (see [`validate_metadata`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// More entries than [`MAX_METADATA_ENTRIES`].
    #[error("{count} metadata entries, the limit is {max}")]
    TooManyEntries {
        /// How many entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Keys and values together are longer than [`MAX_METADATA_LEN`] bytes.
    #[error("{len} bytes of metadata, the limit is {max}")]
    TooLong {
        /// Bytes of keys and values.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A key is empty, longer than [`MAX_METADATA_KEY_LEN`], or has a character other than
    /// ASCII lower-case letters, digits, `.`, `_` and `-`.
    #[error("invalid metadata key {0:?} (1 to 32 of a-z 0-9 . _ -)")]
    InvalidKey(String),
    /// A value has a control character.
    #[error("metadata value of {0:?} has a control character")]
    InvalidValue(String),
    /// Keys on the wire are not in strictly ascending order (a repeated or unsorted key).
    #[error("metadata keys not strictly ascending")]
    NotCanonical,
}

/// Checks a metadata map: at most [`MAX_METADATA_ENTRIES`] entries, keys 1 to
/// [`MAX_METADATA_KEY_LEN`] bytes of `a-z 0-9 . _ -`, values without control characters,
/// keys and values together at most [`MAX_METADATA_LEN`] bytes.
///
/// ```
/// use hail_discovery::{Metadata, MetadataError, validate_metadata};
///
/// let mut m = Metadata::new();
/// m.insert("role".into(), "lamp".into());
/// assert!(validate_metadata(&m).is_ok());
/// m.insert("Role".into(), "x".into());
/// assert!(matches!(validate_metadata(&m), Err(MetadataError::InvalidKey(_))));
/// ```
pub fn validate_metadata(m: &Metadata) -> Result<(), MetadataError> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(MetadataError::TooManyEntries {
            count: m.len(),
            max: MAX_METADATA_ENTRIES,
        });
    }
    let mut len = 0usize;
    for (k, v) in m {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_METADATA_KEY_LEN
            && k.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !key_ok {
            return Err(MetadataError::InvalidKey(k.clone()));
        }
        if v.chars().any(char::is_control) {
            return Err(MetadataError::InvalidValue(k.clone()));
        }
        len += k.len() + v.len();
    }
    if len > MAX_METADATA_LEN {
        return Err(MetadataError::TooLong {
            len,
            max: MAX_METADATA_LEN,
        });
    }
    Ok(())
}
