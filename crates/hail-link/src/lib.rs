//! hail-link: under construction.
