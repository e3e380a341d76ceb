//! hail-crypto: under construction.
