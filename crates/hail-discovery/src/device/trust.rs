//! The known-devices file of trust on first use ([`DeviceBuilder::known_devices`]).
//!
//! One line per pinned name: the name, a tab, the key as 64 hex digits. Names cannot hold
//! a tab or a line break (the name rule refuses control characters), so every line splits
//! one way. Lines starting with `#` and blank lines are skipped; a line that does not
//! parse is an error naming its number, so a hand-edited file never silently unpins.
//!
//! [`DeviceBuilder::known_devices`]: crate::DeviceBuilder::known_devices

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use hail_crypto::PublicKey;
use tracing::warn;

use crate::advert::validate_name;

/// Why a known-devices file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnownDevicesError {
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A line is not `name<TAB>key`, its name breaks the name rule, or its key is not a
    /// valid key.
    #[error("{path}:{line}: not `name<TAB>64 hex digits of a key`")]
    BadLine {
        /// The file.
        path: String,
        /// The line number, from 1.
        line: usize,
    },
}

/// The pins in `path`; none when it does not exist yet.
pub(super) fn load(path: &Path) -> Result<BTreeMap<String, [u8; 32]>, KnownDevicesError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(KnownDevicesError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let mut pins = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || KnownDevicesError::BadLine {
            path: path.display().to_string(),
            line: i + 1,
        };
        let (name, key) = line.split_once('\t').ok_or_else(bad)?;
        validate_name(name).map_err(|_| bad())?;
        let key: PublicKey = key.trim().parse().map_err(|_| bad())?;
        pins.insert(name.to_owned(), key.to_bytes());
    }
    Ok(pins)
}

/// Appends a new pin. A failure is logged: the pin holds for this run anyway.
pub(super) fn append(path: &Path, name: &str, key: &[u8; 32]) {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| {
            writeln!(f, "{name}\t{hex}")?;
            f.sync_data()
        });
    if let Err(e) = r {
        warn!(path = %path.display(), error = %e, "could not keep a pinned name");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_round_trip_and_bad_lines_are_errors() {
        let dir = std::env::temp_dir().join(format!("hail-known-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("known");
        let _ = std::fs::remove_file(&path);
        assert!(load(&path).unwrap().is_empty(), "no file yet: no pins");
        let key = hail_crypto::Identity::from_secret_bytes(&[3; 32])
            .public()
            .to_bytes();
        append(&path, "kitchen lamp", &key);
        append(&path, "fan", &key);
        let pins = load(&path).unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!(pins["kitchen lamp"], key);
        std::fs::write(&path, "# comment\n\nfan\tnot-hex\n").unwrap();
        assert!(matches!(
            load(&path),
            Err(KnownDevicesError::BadLine { line: 3, .. })
        ));
        std::fs::write(&path, "no tab here\n").unwrap();
        assert!(matches!(
            load(&path),
            Err(KnownDevicesError::BadLine { line: 1, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
