//! `crypto/*`: the cost of deriving a group key from a passphrase.

use std::hint::black_box;
use std::time::Instant;

use hail_crypto::GroupKey;
use sha2::Sha256;

use crate::harness::{Better, Ctx, Record, median};

/// Runs the `crypto/*` benchmarks.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    if ctx.wants("crypto/derive") {
        out.push(derive(ctx.pick(4, 10)));
    }
    Ok(out)
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
