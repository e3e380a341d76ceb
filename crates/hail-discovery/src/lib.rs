//! hail-discovery: under construction.
