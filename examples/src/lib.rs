//! Runnable examples of hail. Each example is a file beside this crate's manifest, runs on
//! loopback only, and ends by itself:
//!
//! ```text
//! cargo run -p hail-examples --example frames
//! ```
