//! Tests of the identity file: format, increments, and every way a file can be wrong.

use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;

use super::*;

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hail-crypto-identity-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("identity")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `bytes` at `path` with `mode`, bypassing the library.
fn put(path: &Path, bytes: &[u8], mode: u32) {
    fs::write(path, bytes).unwrap();
    set_mode(path, mode);
}

fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

fn problem(path: &Path) -> IdentityFileProblem {
    match Identity::load_or_create(path) {
        Err(CryptoError::IdentityFile { path: p, problem }) => {
            assert_eq!(p, path);
            problem
        }
        other => panic!("expected an identity file error, got {other:?}"),
    }
}

#[test]
fn created_then_each_load_increments_the_incarnation() {
    let dir = TempDir::new();
    let path = dir.file();
    let (first, inc) = Identity::load_or_create(&path).unwrap();
    assert_eq!(inc, Incarnation::FIRST);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), FILE_LEN);
    let (secret, stored) = decode(&bytes).unwrap();
    assert_eq!(stored, 0);
    assert_eq!(*secret, *first.to_secret_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    for n in 1..=3 {
        let (again, inc) = Identity::load_or_create(&path).unwrap();
        assert_eq!(again.public(), first.public());
        assert_eq!(inc.get(), n);
        // Persisted before it was handed out.
        assert_eq!(decode(&fs::read(&path).unwrap()).unwrap().1, n);
    }
    // Nothing but the file is left in the directory.
    let names: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["identity"]);
}

#[test]
fn the_layout_is_as_documented() {
    let bytes = encode(&[0xab; 32], 0x0102_0304);
    assert_eq!(&bytes[..4], b"hlid");
    assert_eq!(bytes[4], 1);
    assert_eq!(&bytes[5..37], &[0xab; 32]);
    assert_eq!(&bytes[37..45], &[0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(bytes[45..], Sha256::digest(&bytes[..45])[..]);
    let (secret, inc) = decode(bytes.as_ref()).unwrap();
    assert_eq!((*secret, inc), ([0xab; 32], 0x0102_0304));
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = TempDir::new();
    let path = dir.file();
    let full = encode(&[1; 32], 4);
    for len in [0, 3, 4, 40, FILE_LEN - 1] {
        put(&path, &full[..len], 0o600);
        assert_eq!(problem(&path), IdentityFileProblem::Truncated { len });
    }
    // Refused, and left as it was.
    assert_eq!(fs::read(&path).unwrap(), &full[..FILE_LEN - 1]);
}

#[test]
fn a_longer_file_is_refused() {
    let dir = TempDir::new();
    let mut long = encode(&[1; 32], 4).to_vec();
    long.extend_from_slice(&[0; 4096]);
    put(&dir.file(), &long, 0o600);
    assert_eq!(problem(&dir.file()), IdentityFileProblem::TooLong);
}

#[test]
fn a_file_of_another_format_is_refused() {
    let dir = TempDir::new();
    put(&dir.file(), b"-----BEGIN OPENSSH PRIVATE KEY-----\n", 0o600);
    assert_eq!(problem(&dir.file()), IdentityFileProblem::BadMagic);
}

#[test]
fn another_version_is_refused() {
    let dir = TempDir::new();
    let mut bytes = encode(&[1; 32], 4);
    bytes[4] = 2;
    // Even with a checksum that matches the new bytes.
    let sum = Sha256::digest(&bytes[..BODY_LEN]);
    bytes[BODY_LEN..].copy_from_slice(&sum);
    put(&dir.file(), bytes.as_ref(), 0o600);
    assert_eq!(
        problem(&dir.file()),
        IdentityFileProblem::UnsupportedVersion(2)
    );
}

#[test]
fn a_corrupted_file_is_refused() {
    let dir = TempDir::new();
    let good = encode(&[1; 32], 4);
    for byte in [5, 36, 44, 45, FILE_LEN - 1] {
        let mut bad = good.clone();
        bad[byte] ^= 0x10;
        put(&dir.file(), bad.as_ref(), 0o600);
        assert_eq!(problem(&dir.file()), IdentityFileProblem::BadChecksum);
    }
}

#[cfg(unix)]
#[test]
fn a_file_others_can_access_is_refused() {
    let dir = TempDir::new();
    let good = encode(&[1; 32], 4);
    for mode in [0o640, 0o604, 0o620, 0o602, 0o660, 0o644, 0o700] {
        put(&dir.file(), good.as_ref(), mode);
        let want = if mode & 0o077 != 0 {
            Some(IdentityFileProblem::Permissions { mode })
        } else {
            None
        };
        match want {
            Some(p) => assert_eq!(problem(&dir.file()), p, "mode {mode:o}"),
            None => assert_eq!(Identity::load_or_create(dir.file()).unwrap().1.get(), 5),
        }
    }
}

#[test]
fn a_directory_is_not_an_identity_file() {
    let dir = TempDir::new();
    fs::create_dir(dir.file()).unwrap();
    assert_eq!(problem(&dir.file()), IdentityFileProblem::NotAFile);
}

#[test]
fn a_missing_directory_is_an_io_error() {
    let dir = TempDir::new();
    let path = dir.0.join("no-such-dir").join("identity");
    assert!(matches!(
        problem(&path),
        IdentityFileProblem::Io {
            kind: io::ErrorKind::NotFound,
            ..
        }
    ));
}

#[test]
fn the_last_incarnation_is_refused_and_the_file_kept() {
    let dir = TempDir::new();
    let at_max = encode(&[1; 32], Incarnation::MAX.get());
    put(&dir.file(), at_max.as_ref(), 0o600);
    assert!(matches!(
        Identity::load_or_create(dir.file()),
        Err(CryptoError::IncarnationExhausted)
    ));
    assert_eq!(fs::read(dir.file()).unwrap(), at_max.as_ref());
    // One below the maximum still loads, and hands out the maximum.
    put(
        &dir.file(),
        encode(&[1; 32], Incarnation::MAX.get() - 1).as_ref(),
        0o600,
    );
    assert_eq!(
        Identity::load_or_create(dir.file()).unwrap().1,
        Incarnation::MAX
    );
}

#[test]
fn a_stale_temporary_file_does_not_block_a_write() {
    let dir = TempDir::new();
    let tmp = dir.0.join("identity.tmp");
    put(&tmp, b"half-written by a crashed run", 0o644);
    let (_, inc) = Identity::load_or_create(dir.file()).unwrap();
    assert_eq!(inc, Incarnation::FIRST);
    assert!(!tmp.exists());
    assert_eq!(decode(&fs::read(dir.file()).unwrap()).unwrap().1, 0);
}

#[cfg(unix)]
#[test]
fn a_symlinked_temporary_file_is_not_followed() {
    let dir = TempDir::new();
    let victim = dir.0.join("victim");
    put(&victim, b"keep me", 0o600);
    std::os::unix::fs::symlink(&victim, dir.0.join("identity.tmp")).unwrap();
    Identity::load_or_create(dir.file()).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok((secret, inc)) = decode(&bytes) {
            let again = encode(&secret, inc);
            prop_assert_eq!(&again[..], &bytes[..]);
        }
    }

    #[test]
    fn encode_and_decode_round_trip(secret in any::<[u8; 32]>(), inc in any::<u64>()) {
        let (s, i) = decode(encode(&secret, inc).as_ref()).unwrap();
        prop_assert_eq!((*s, i), (secret, inc));
    }
}
