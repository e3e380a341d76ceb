//! The sans-IO core of one RPC connection: no sockets, no tasks, no clock of its own.
//!
//! A [`Session`] is driven the way a quinn-proto `Connection` is. The IO layer feeds it
//! inputs, each with the current [`Instant`](std::time::Instant) where time matters:
//!
//! - [`handle_packet`](Session::handle_packet): the bytes of one packet from the peer;
//! - [`handle_link_up`](Session::handle_link_up) / [`handle_link_down`](Session::handle_link_down):
//!   the connection under the session came or went;
//! - [`handle_done`](Session::handle_done): a handler the session asked for has ended;
//! - [`handle_timeout`](Session::handle_timeout): the time [`poll_timeout`](Session::poll_timeout)
//!   named has come;
//! - calls from the API: [`start_call`](Session::start_call), [`notify`](Session::notify),
//!   [`cancel`](Session::cancel), [`poll_call`](Session::poll_call) and the like.
//!
//! and after each input takes what the session has to say:
//!
//! - [`poll_transmit`](Session::poll_transmit): encoded packets to send, in order;
//! - [`poll_event`](Session::poll_event): handlers to start or abort, callers to wake;
//! - [`poll_timeout`](Session::poll_timeout): when to call `handle_timeout` next (the age
//!   limit of kept replies and unanswered `send` calls).
//!
//! Inside, it holds the caller's side ([`Calls`]: retcodes, calls in flight, kept replies)
//! and the callee's side ([`Serve`]: running and queued handlers). [`RpcPeer`](crate::RpcPeer)
//! is the thin tokio layer around it; this module is public so the state machine can be
//! driven by a fuzzer (feature `fuzzing`) or another runtime. The timeout of an `execute`
//! call is the caller's own (the IO layer's future), not the session's.
//!
//! The type parameters are what the IO layer attaches: `W` wakes a caller waiting for a
//! reply (a oneshot sender), `G` is held while a call is in flight (a semaphore permit),
//! `H` aborts a running handler (a task's abort handle). Tests use plain values.
//!
//! Memory is bounded by the configuration whatever the peer sends: at most
//! `max_in_flight` calls, `max_kept_replies` kept replies holding at most
//! `max_kept_bytes` of bodies (plus one larger reply alone; and a record of up to
//! `4 × max_kept_replies` expired retcodes), `max_concurrent_handlers` running and
//! `max_queued_requests` queued requests holding at most `max_queued_bytes` of arguments.
//! The output queues hold what one input produced until the IO layer takes it. What the
//! IO layer holds for the peer beyond that (its outbox) it reports with
//! [`Session::set_outbox_bytes`], and the session refuses requests while it is full
//! (see [`RpcConfig::max_outbox_bytes`](crate::RpcConfig::max_outbox_bytes)).
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use hail_rpc::proto::{Answer, SessionEvent, Session};
//! use hail_rpc::{Packet, RetCode, RpcConfig};
//!
//! // A session serving "double"; no waiters, guards or abort handles needed here.
//! let mut s = Session::<(), (), ()>::new(&RpcConfig::default());
//! s.handle_link_up();
//! let request = Packet::Request { retcode: RetCode(7), method: "double".into(), args: Bytes::new() };
//! s.handle_packet(Instant::now(), &request.to_bytes())?;
//! let Some(SessionEvent::Run { ticket, method, .. }) = s.poll_event() else { unreachable!() };
//! assert_eq!(method, "double".into());
//! // The handler ran (somewhere) and returned postcard bytes: the reply goes out.
//! s.handle_done(ticket, Answer::Ok(Bytes::from_static(&[42])));
//! let reply = s.poll_transmit().expect("a reply");
//! assert!(matches!(
//!     Packet::decode(&reply.packet)?,
//!     Packet::Reply { retcode: RetCode(7), .. }
//! ));
//! # Ok::<(), hail_rpc::PacketError>(())
//! ```

use bytes::Bytes;

use crate::error::RpcError;

mod calls;
mod serve;
mod session;

pub use calls::{Calls, PollState};
pub use serve::{Admit, Cancelled, Job, Serve};
pub use session::{Answer, Disconnect, Session, SessionEvent, SessionStats, Ticket, Transmit};

/// What became of a call: the reply body (postcard of the result) or why there is none.
pub type Outcome = Result<Bytes, RpcError>;

/// Small limits shared by the unit tests of the three tables.
#[cfg(test)]
fn test_config() -> crate::RpcConfig {
    test_builder().build()
}

/// [`test_config`]'s builder, for tests that change one limit.
#[cfg(test)]
fn test_builder() -> crate::RpcConfigBuilder {
    crate::RpcConfig::builder()
        .max_in_flight(4)
        .max_kept_replies(3)
        .keep_replies_for(std::time::Duration::from_secs(10))
        .max_concurrent_handlers(2)
        .max_queued_requests(2)
}
