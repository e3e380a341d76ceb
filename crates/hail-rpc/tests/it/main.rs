//! hail-rpc integration tests: the TCPTalks and CLOVIS flows, errors, pipelining, many
//! clients and connection loss, end to end through `RpcPeer`.

mod errors;
mod flows;
mod idle;
mod load;
mod lost;
mod outbox;
mod reconnect;
mod runs;
mod support;
