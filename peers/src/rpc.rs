//! `peers/rpc-*`: hail-rpc against tarpc 0.38, measured by `hail-benches`' own tarpc
//! comparison (`hail_benches::rpc::latency_vs_tarpc` and `throughput_vs_tarpc`; the
//! latter is also `rpc/throughput-64B-vs-tarpc` of `cargo xtask bench`), here beside zenoh.
//!
//! Both ends of both systems run in one `current_thread` tokio runtime (on a 2-core VM a
//! cross-core wake-up costs tens of µs and an unpinned run would land in either mode at
//! random). tarpc: bincode over `LengthDelimitedCodec` on TCP, TCP_NODELAY on both ends.
//!
//! - `peers/rpc-latency-64B-p50|p99`: sequential echo calls with 64-byte arguments, rounds
//!   of both alternating, percentiles from an hdrhistogram, in µs.
//! - `peers/rpc-throughput-64B`: calls/s with 64 calls in flight (64 tasks calling in a
//!   loop), rounds alternating, median round.

use hail_benches::harness::{Ctx, Record};
use hail_benches::rpc::{latency_vs_tarpc, throughput_vs_tarpc};

/// Runs the group.
pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    if ctx.wants("peers/rpc-latency-64B") {
        out.extend(latency_vs_tarpc(ctx, &rt, "peers/rpc-latency-64B")?);
    }
    if ctx.wants("peers/rpc-throughput-64B") {
        out.push(throughput_vs_tarpc(ctx, &rt, "peers/rpc-throughput-64B")?);
    }
    Ok(out)
}
