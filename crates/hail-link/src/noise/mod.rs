//! The Noise protocols hail-link runs: the handshake patterns, their protocol names and the
//! primitives snow runs them with, below `seal.rs`, which runs the handshakes and the
//! sealed records.

// Where hail-link's Cargo.toml builds aws-lc-rs.
#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    any(target_os = "linux", target_os = "macos")
))]
mod x25519;

/// A Noise handshake pattern hail-link runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// A pre-shared key, no identity: `Noise_NNpsk0_25519_AESGCM_SHA256`.
    NNpsk0,
    /// An identity, no key: `Noise_XX_25519_AESGCM_SHA256`.
    Xx,
    /// An identity and a pre-shared key: `Noise_XXpsk0_25519_AESGCM_SHA256`.
    XXpsk0,
}

impl Pattern {
    /// The Noise protocol name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NNpsk0 => "Noise_NNpsk0_25519_AESGCM_SHA256",
            Self::Xx => "Noise_XX_25519_AESGCM_SHA256",
            Self::XXpsk0 => "Noise_XXpsk0_25519_AESGCM_SHA256",
        }
    }

    /// The pattern for these settings; `None` without a key and an identity (plaintext).
    pub(crate) fn of(psk: bool, identity: bool) -> Option<Self> {
        match (psk, identity) {
            (true, false) => Some(Self::NNpsk0),
            (false, true) => Some(Self::Xx),
            (true, true) => Some(Self::XXpsk0),
            (false, false) => None,
        }
    }

    /// True for the patterns that prove static (identity) keys.
    pub(crate) fn has_identity(self) -> bool {
        !matches!(self, Self::NNpsk0)
    }
}

/// A snow builder for `pattern`, with hail-link's primitives: X25519 from aws-lc where it is
/// built ([`x25519`]), AES-GCM and SHA-256 from ring, the rest from snow's own resolver.
pub(crate) fn builder(pattern: Pattern) -> snow::Builder<'static> {
    let params = pattern
        .name()
        .parse()
        .expect("every Pattern name is a valid Noise protocol name");
    snow::Builder::with_resolver(params, resolver())
}

/// The resolver of [`builder`].
fn resolver() -> snow::resolvers::BoxedCryptoResolver {
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    let ring = Box::new(FallbackResolver::new(
        Box::new(RingResolver),
        Box::new(DefaultResolver),
    ));
    #[cfg(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        any(target_os = "linux", target_os = "macos")
    ))]
    return Box::new(FallbackResolver::new(Box::new(x25519::Resolver), ring));
    #[cfg(not(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        any(target_os = "linux", target_os = "macos")
    )))]
    ring
}
