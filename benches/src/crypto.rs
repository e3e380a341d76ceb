//! `crypto/*`: the cost of deriving a group key from a passphrase, and of signing and
//! verifying with a device identity.
//!
//! - `crypto/derive`: `GroupKey::derive` against the raw `pbkdf2` call.
//! - `crypto/sign-<size>` and `crypto/verify-<size>`: `Identity::sign` and
//!   `PublicKey::verify` (ed25519-dalek, with hail's context framing) against ring's Ed25519
//!   signing and verifying the same framed bytes, in µs per operation. ring's verify parses
//!   (decompresses) the public key at each call, as its API does; ours keeps it decompressed
//!   in the `PublicKey`, which is how a peer table holds it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hail_crypto::{GroupKey, Identity};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::Sha256;

use crate::harness::{Better, Ctx, Record, interleaved_rate, median};

/// Signatures or verifications per measured round.
const SIG_BATCH: u64 = 256;

/// The context the signing benchmarks sign under (the length of a real one).
const BENCH_CONTEXT: &[u8] = b"hail-advert/v1";

/// Runs the `crypto/*` benchmarks.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    if ctx.wants("crypto/derive") {
        out.push(derive(ctx.pick(4, 10)));
    }
    let budget = Duration::from_millis(ctx.pick(300, 2000));
    for (label, size) in [("64B", 64usize), ("512B", 512)] {
        let sign = format!("crypto/sign-{label}");
        let verify = format!("crypto/verify-{label}");
        if ctx.wants(&sign) || ctx.wants(&verify) {
            let [s, v] = sign_verify(budget, label, size)?;
            if ctx.wants(&sign) {
                out.push(s);
            }
            if ctx.wants(&verify) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// Ours (hail-crypto `Identity` / `PublicKey`) against ring's Ed25519 over the same bytes.
fn sign_verify(budget: Duration, label: &str, size: usize) -> anyhow::Result<[Record; 2]> {
    let seed = [0x5a; 32];
    let id = Identity::from_secret_bytes(&seed);
    let public = id.public();
    let ring_key =
        Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| anyhow::anyhow!("ring key: {e}"))?;
    anyhow::ensure!(
        ring_key.public_key().as_ref() == public.as_bytes(),
        "ring and ed25519-dalek derive the same public key from one seed"
    );
    let msg: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
    // hail's signed bytes: u64 BE context length, context, message.
    let mut framed = (BENCH_CONTEXT.len() as u64).to_be_bytes().to_vec();
    framed.extend_from_slice(BENCH_CONTEXT);
    framed.extend_from_slice(&msg);
    let sig = id.sign(BENCH_CONTEXT, &msg);
    let ring_sig = ring_key.sign(&framed);
    anyhow::ensure!(
        ring_sig.as_ref() == sig.as_bytes(),
        "Ed25519 is deterministic: both sign the framed bytes alike"
    );
    let ring_public = UnparsedPublicKey::new(&ED25519, public.to_bytes());
    let us = |rate: f64| 1e6 / rate;
    let (ours, ring) = interleaved_rate(
        budget,
        SIG_BATCH,
        || {
            for _ in 0..SIG_BATCH {
                black_box(id.sign(BENCH_CONTEXT, black_box(&msg)));
            }
        },
        || {
            for _ in 0..SIG_BATCH {
                black_box(ring_key.sign(black_box(&framed)));
            }
        },
    );
    let sign = Record::new(
        format!("crypto/sign-{label}"),
        us(ours),
        us(ring),
        "us",
        Better::Lower,
    );
    let (ours, ring) = interleaved_rate(
        budget,
        SIG_BATCH,
        || {
            for _ in 0..SIG_BATCH {
                black_box(public.verify(BENCH_CONTEXT, black_box(&msg), &sig)).expect("valid");
            }
        },
        || {
            for _ in 0..SIG_BATCH {
                black_box(ring_public.verify(black_box(&framed), ring_sig.as_ref()))
                    .expect("valid");
            }
        },
    );
    let verify = Record::new(
        format!("crypto/verify-{label}"),
        us(ours),
        us(ring),
        "us",
        Better::Lower,
    );
    Ok([sign, verify])
}

/// `GroupKey::derive` at the default 600,000 iterations, against the raw `pbkdf2` call with
/// the same iterations, salt and output length. Both should take the same time: the cost is
/// deliberate and the figure says what a device pays once per configuration.
fn derive(rounds: usize) -> Record {
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let ours_once = || {
        let t = Instant::now();
        black_box(GroupKey::derive(
            black_box("correct horse battery staple"),
            "greenhouse",
        ));
        t.elapsed().as_secs_f64() * 1e3
    };
    let raw_once = || {
        let t = Instant::now();
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(
            black_box(b"correct horse battery staple"),
            b"hail/v1/group-key\0greenhouse",
            600_000,
            &mut out,
        );
        black_box(out);
        t.elapsed().as_secs_f64() * 1e3
    };
    // Alternate which goes first, so neither always runs on a cold (or warm) core.
    for i in 0..rounds {
        if i % 2 == 0 {
            ours.push(ours_once());
            raw.push(raw_once());
        } else {
            raw.push(raw_once());
            ours.push(ours_once());
        }
    }
    Record::new(
        "crypto/derive",
        median(&mut ours),
        median(&mut raw),
        "ms",
        Better::Lower,
    )
}
