//! The device-name rule: what a name in an announce may be, and its normal form.

use super::MAX_NAME_LEN;

/// Why a device name is not acceptable.
///
/// The rule ([`validate_name`](crate::validate_name)): 1 to
/// [`MAX_NAME_LEN`](crate::advert::MAX_NAME_LEN) bytes of UTF-8 in Unicode normalization
/// form C, with no character that is invisible or changes how the rest is shown, and no
/// space but U+0020 between other characters. The same rule holds for the local name
/// (which [`Device::builder`](crate::Device::builder) brings into NFC first) and for
/// names on the wire, so two names that look the same are the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is the empty string.
    #[error("device name is empty")]
    Empty,
    /// The name is longer than the limit, in bytes of UTF-8.
    #[error("device name is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Length of the name in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name contains a control character (newline, escape, NUL ...).
    #[error("device name contains a control character")]
    ControlCharacter,
    /// The name contains a character that shows as nothing or changes how the text
    /// around it is shown: format characters (zero-width spaces and joiners, bidi
    /// controls and overrides, the byte order mark, soft hyphen, tags), line and
    /// paragraph separators, private-use and unassigned code points, and fillers that
    /// render blank (Hangul fillers, the combining grapheme joiner, Khmer inherent vowels,
    /// Mongolian variation selectors).
    #[error("device name contains U+{:04X}, an invisible or formatting character", u32::from(*.0))]
    InvisibleCharacter(char),
    /// The name starts or ends with a space, or contains a space character other than
    /// U+0020 (no-break, ideographic, en/em spaces and the like look the same as it).
    #[error("device name has a space at either end, or a space other than U+0020")]
    Whitespace,
    /// The name is not in Unicode normalization form C, so the same-looking name could
    /// arrive as other bytes. Names from the wire must be in NFC; a local name is brought
    /// into NFC by [`Device::builder`](crate::Device::builder).
    #[error("device name is not in Unicode normalization form C")]
    NotNormalized,
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
