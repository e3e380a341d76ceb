//! The link under a peer: [`Outgoing`], and its adapters for `hail-link`.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use hail_link::{Client, Connection};
use hail_wire::Binary;

/// The link under a peer: where its packets go. Give one to
/// [`PeerDriver::connected`](crate::PeerDriver::connected).
///
/// `hail-link` connections implement it: a bare [`Connection<Binary>`] (from
/// `Connection::connect`, `Server::connection`, or a device's link), and a reconnecting
/// [`Client<Binary>`]. Pass either as it is:
/// `driver.connected(Arc::new(conn.clone()))`, and feed the connection's incoming frames
/// to [`PeerDriver::packet`](crate::PeerDriver::packet) and its end to
/// [`PeerDriver::disconnected`](crate::PeerDriver::disconnected). Any other ordered,
/// reliable, message-preserving transport can implement it too.
pub trait Outgoing: Send + Sync + 'static {
    /// Sends one packet (one link frame), waiting for room in the link's queue.
    /// An error means the packet was not accepted: the connection is gone.
    fn send(
        &self,
        packet: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), LinkClosed>> + Send + '_>>;

    /// Queues one packet without waiting; false when there is no room or no connection.
    /// Used where waiting is impossible (cancels sent from `Drop`, replies of handlers
    /// that finished on the connection's task). Borrowed: a link copies the packet into
    /// its queue, and the caller keeps it (in its outbox) when there is no room, without
    /// a second owner of the buffer to count.
    fn try_send(&self, packet: &Bytes) -> bool;

    /// Where the peer counts the bytes it keeps for the remote (queued requests'
    /// arguments, kept reply bodies, its outbox): a [`hail_link::Hold`] on the link's
    /// memory budget, or `None` (the default) for a transport without one. `hail-link`'s
    /// `Connection<Binary>` and `Client<Binary>` give one on their budget.
    ///
    /// With a hold, a request that must wait for a handler slot is answered `BUSY` when
    /// its arguments would take the peer's queued requests past the budget's peer share,
    /// or the whole budget past three quarters: queued requests never spend the budget
    /// alone (a spent budget stops every link reading, and a handler waiting for a reply
    /// from its peer would wait for ever). Kept replies and the outbox count too, within
    /// their own bounds ([`RpcConfig`](crate::RpcConfig)).
    fn hold(&self) -> Option<hail_link::Hold> {
        None
    }
}

/// The link refused a packet because the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link is closed")]
pub struct LinkClosed;

/// Implements [`Outgoing`] for a hail-link handle with an async, fallible `send(Bytes)`
/// and a fallible `try_send(impl Borrow<Bytes>)`: `$sender` names that sender from
/// `$this: &Self`. Any error means the link is closed (or, for `try_send`, full).
///
/// The calls resolve to the sender's inherent methods, which take precedence over the
/// trait's own `send` and `try_send` even when the sender is `Self`.
macro_rules! impl_outgoing {
    ($(#[$doc:meta])* $ty:ty, |$this:ident| $sender:expr $(, hold: |$h:ident| $hold:expr)?) => {
        $(#[$doc])*
        impl $crate::outgoing::Outgoing for $ty {
            fn send(
                &self,
                packet: ::bytes::Bytes,
            ) -> ::std::pin::Pin<
                Box<
                    dyn ::std::future::Future<Output = Result<(), $crate::outgoing::LinkClosed>>
                        + Send
                        + '_,
                >,
            > {
                let $this = self;
                Box::pin(async move {
                    $sender
                        .send(packet)
                        .await
                        .map_err(|_| $crate::outgoing::LinkClosed)
                })
            }

            fn try_send(&self, packet: &::bytes::Bytes) -> bool {
                let $this = self;
                $sender.try_send(packet).is_ok()
            }

            $(
                fn hold(&self) -> Option<::hail_link::Hold> {
                    let $h = self;
                    Some($hold)
                }
            )?
        }
    };
}

impl_outgoing!(
    /// A bare link connection carries a peer's packets as they are, one frame each.
    Connection<Binary>,
    |conn| conn,
    hold: |conn| conn.budget().hold()
);

impl_outgoing!(
    /// A reconnecting client: while it reconnects the peer is disconnected and sends
    /// nothing new, so the client's outage buffer holds at most what was queued when the
    /// connection died.
    Client<Binary>,
    |client| client,
    hold: |client| client.budget().hold()
);
