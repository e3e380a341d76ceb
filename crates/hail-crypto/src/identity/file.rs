//! The identity file: a device's secret key and its incarnation, kept across restarts.
//!
//! Layout (77 bytes; the diagram is in the [module docs](super)):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4  | magic `68 6c 69 64` (`"hlid"`, hail identity) |
//! | 4  | 1  | version, `0x01`; any other is refused |
//! | 5  | 32 | the Ed25519 secret key (RFC 8032 seed) |
//! | 37 | 8  | the incarnation, u64 big-endian (at most 2^32 - 1) |
//! | 45 | 32 | SHA-256 of bytes 0..45: catches truncation and corruption, not tampering |
//!
//! The file is created with mode 0600 and refused when group or others have any access
//! (like ssh with a private key). It is replaced atomically: the new contents go to
//! `<name>.tmp` in the same directory (created exclusively, mode 0600), which is fsynced and
//! renamed over the file, and the directory is fsynced, so a crash leaves the old file or the
//! new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Identity, Incarnation};
use crate::CryptoError;

/// The first four bytes of an identity file: `"hlid"`.
pub const FILE_MAGIC: [u8; 4] = *b"hlid";
/// The identity file version this crate writes and reads.
pub const FILE_VERSION: u8 = 1;
/// Length of an identity file: magic, version, secret key, incarnation, checksum.
pub const FILE_LEN: usize = 4 + 1 + 32 + 8 + 32;
/// Bytes covered by the checksum.
const BODY_LEN: usize = FILE_LEN - 32;

/// What is wrong with an identity file, inside [`CryptoError::IdentityFile`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityFileProblem {
    /// Reading, writing or replacing the file failed.
    #[error("{op}: {message}")]
    Io {
        /// What was being done (`"open"`, `"read"`, `"write"`, `"rename"`, ...).
        op: &'static str,
        /// The operating system's error kind.
        kind: io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// Group or others may access the file (mode bits 0o077); it holds a secret key.
    #[error("mode {mode:o} lets group or others access the secret key; chmod 600 it")]
    Permissions {
        /// The file's permission bits.
        mode: u32,
    },
    /// The path is not a regular file (a directory, a device, ...).
    #[error("not a regular file")]
    NotAFile,
    /// The file is shorter than the format: cut off, or not an identity file.
    #[error("truncated: {len} bytes, {FILE_LEN} expected")]
    Truncated {
        /// The file's length.
        len: usize,
    },
    /// The file is longer than the format.
    #[error("longer than the {FILE_LEN} bytes of an identity file")]
    TooLong,
    /// The file does not start with `"hlid"`: not an identity file.
    #[error("not an identity file (bad magic)")]
    BadMagic,
    /// The file is of a version this crate does not read.
    #[error("unsupported version {0} (this build reads version {FILE_VERSION})")]
    UnsupportedVersion(u8),
    /// The checksum does not match: the file is corrupted.
    #[error("checksum mismatch: the file is corrupted")]
    BadChecksum,
}

impl IdentityFileProblem {
    fn io(op: &'static str, e: &io::Error) -> Self {
        Self::Io {
            op,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl Identity {
    /// Loads the identity kept at `path`, or creates one there, and returns it with this
    /// run's [`Incarnation`].
    ///
    /// A new file gets a random key and incarnation 0 ([`Incarnation::FIRST`]). An existing
    /// file's incarnation is incremented and the file rewritten (atomically, fsynced) *before*
    /// the new value is returned, so every run of the device gets a higher incarnation than
    /// any earlier run, even after a crash or power loss. The format is in the
    /// [module docs](crate::identity).
    ///
    /// One process per identity file: two processes loading the same file at once may get the
    /// same incarnation. Restoring an old copy of the file (a backup, a cloned SD card) rolls
    /// the incarnation back, and records of the new runs rank below those already seen until
    /// the count passes them again.
    ///
    /// # Errors
    /// [`CryptoError::IdentityFile`] naming the path and the [`IdentityFileProblem`] (a file
    /// that is not an identity file, truncated, corrupted, of another version, readable by
    /// group or others, or an IO failure); [`CryptoError::IncarnationExhausted`] when the
    /// stored incarnation is already 2^32 - 1 (the file is left as it was);
    /// [`CryptoError::Rng`] when a new key cannot be drawn.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<(Self, Incarnation), CryptoError> {
        let path = path.as_ref();
        let fail = |problem| CryptoError::IdentityFile {
            path: path.to_path_buf(),
            problem,
        };
        let (identity, incarnation) = match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (Self::generate()?, Incarnation::FIRST)
            }
            Err(e) => return Err(fail(IdentityFileProblem::io("open", &e))),
            Ok(file) => {
                let (secret, stored) = read(file).map_err(fail)?;
                let next = Incarnation::new(stored)?.next()?;
                (Self::from_secret_bytes(&secret), next)
            }
        };
        let contents = encode(&identity.to_secret_bytes(), incarnation.get());
        write_atomically(path, contents.as_ref()).map_err(fail)?;
        Ok((identity, incarnation))
    }
}

/// The file's bytes for `secret` and `incarnation`. Wiped on drop.
pub(crate) fn encode(secret: &[u8; 32], incarnation: u64) -> Zeroizing<[u8; FILE_LEN]> {
    let mut out = Zeroizing::new([0u8; FILE_LEN]);
    out[..4].copy_from_slice(&FILE_MAGIC);
    out[4] = FILE_VERSION;
    out[5..37].copy_from_slice(secret);
    out[37..45].copy_from_slice(&incarnation.to_be_bytes());
    let sum = Sha256::digest(&out[..BODY_LEN]);
    out[BODY_LEN..].copy_from_slice(&sum);
    out
}

/// Parses a file's bytes into its secret key and stored incarnation.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Zeroizing<[u8; 32]>, u64), IdentityFileProblem> {
    if bytes.len() >= 4 && bytes[..4] != FILE_MAGIC {
        return Err(IdentityFileProblem::BadMagic);
    }
    if bytes.len() < 5 {
        return Err(IdentityFileProblem::Truncated { len: bytes.len() });
    }
    if bytes[4] != FILE_VERSION {
        return Err(IdentityFileProblem::UnsupportedVersion(bytes[4]));
    }
    if bytes.len() < FILE_LEN {
        return Err(IdentityFileProblem::Truncated { len: bytes.len() });
    }
    if bytes.len() > FILE_LEN {
        return Err(IdentityFileProblem::TooLong);
    }
    if Sha256::digest(&bytes[..BODY_LEN])[..] != bytes[BODY_LEN..] {
        return Err(IdentityFileProblem::BadChecksum);
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&bytes[5..37]);
    let mut inc = [0u8; 8];
    inc.copy_from_slice(&bytes[37..45]);
    Ok((secret, u64::from_be_bytes(inc)))
}

/// Checks an open file's type and mode, reads at most one byte past the format, decodes.
fn read(mut file: File) -> Result<(Zeroizing<[u8; 32]>, u64), IdentityFileProblem> {
    let meta = file
        .metadata()
        .map_err(|e| IdentityFileProblem::io("stat", &e))?;
    if !meta.is_file() {
        return Err(IdentityFileProblem::NotAFile);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityFileProblem::Permissions { mode });
        }
    }
    let mut buf = Zeroizing::new([0u8; FILE_LEN + 1]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IdentityFileProblem::io("read", &e)),
        }
    }
    decode(&buf[..len])
}

/// Replaces `path` with `contents`: exclusive temporary file (mode 0600), fsync, rename,
/// fsync of the directory.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), IdentityFileProblem> {
    let name = path.file_name().ok_or_else(|| IdentityFileProblem::Io {
        op: "name",
        kind: io::ErrorKind::InvalidInput,
        message: "the path has no file name".into(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp: PathBuf = dir.join(tmp_name);
    // A temporary file left by a crash is stale; removing it (never following a symlink)
    // lets the exclusive create below succeed.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(IdentityFileProblem::io("remove stale temporary file", &e));
        }
        _ => {}
    }
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| {
        let mut f = opts
            .open(&tmp)
            .map_err(|e| IdentityFileProblem::io("create temporary file", &e))?;
        f.write_all(contents)
            .map_err(|e| IdentityFileProblem::io("write", &e))?;
        f.sync_all()
            .map_err(|e| IdentityFileProblem::io("fsync", &e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| IdentityFileProblem::io("rename", &e))
    })();
    if result.is_err() {
        // Best effort: the error being reported is the one that matters.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IdentityFileProblem::io("fsync directory", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
