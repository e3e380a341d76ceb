//! hail-rpc: under construction.
