//! hail-wire integration tests: property tests over arbitrary chunking, malformed input
//! through the public codecs, Python Comms byte vectors, and real loopback TCP.

mod loopback;
mod malformed;
mod python_comms;
mod roundtrip;
