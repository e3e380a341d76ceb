//! The benchmark runner: prints one JSON object per figure (see the library docs).
//!
//! Usage: `hail-benches [--quick] [FILTER]`

#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use hail_benches::GROUPS;
use hail_benches::harness::Ctx;

fn main() -> anyhow::Result<()> {
    let Some(ctx) = Ctx::from_args(std::env::args().skip(1))? else {
        println!("usage: hail-benches [--quick] [FILTER]");
        return Ok(());
    };
    // Groups decide per benchmark whether the filter wants it (`Ctx::wants`).
    for (_prefix, run) in GROUPS {
        for record in run(&ctx)? {
            println!("{}", record.to_json());
        }
    }
    Ok(())
}
