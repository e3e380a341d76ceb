//! hail-multicast: under construction.
