//! The driver's links: a link coming up (its RPC peer), its frames (discovery messages to
//! the table, device messages to the event stream, RPC packets to the peer), its end, and
//! closing it when the table asks, with a duplicate of the one-link rule kept open until
//! what runs on it is done.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hail_link::{CloseReason as LinkClose, Connection};
use hail_rpc::{Disconnect, LinkClosed, Outgoing, RpcPeer};
use hail_wire::Binary;
use tracing::{debug, warn};

use super::caller::LinkPeer;
use super::clock;
use super::driver::{Driver, RUN_CAPACITY, Run};
use super::sender::MESSAGE_TAG;
use super::shared::{LinkEntry, lock};
use crate::advert::{LinkMessage, MAGIC};
use crate::id::{DeviceId, LinkId};
use crate::peer_table::{LinkCloseReason, LinkOrigin, TableCloseReason};

/// How long a duplicate link stays open after the one-link rule dropped it: 500 ms.
const DUPLICATE_LINGER: Duration = Duration::from_millis(500);
/// Longest a duplicate link is kept open for the calls and handlers still running on it:
/// 5 s.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl Driver {
    pub(super) fn link_up(
        &mut self,
        conn: Connection<Binary>,
        origin: LinkOrigin,
        remote: SocketAddr,
    ) {
        // A dual-stack `[::]` listener sees IPv4 peers as IPv4-mapped IPv6 (`::ffff:a.b.c.d`):
        // the table and the peers' addresses know them by their IPv4 address.
        // (Only those: a link-local IPv6 address keeps its scope id.)
        let remote = match remote {
            SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
                SocketAddr::new(remote.ip().to_canonical(), remote.port())
            }
            other => other,
        };
        let id = LinkId(conn.id().get());
        // The handshake proved the peer's key (every device link runs XX): the link is
        // that device's, whatever its hello will claim.
        let Some(peer) = conn.peer_key().map(|k| DeviceId::from_bytes(k.id())) else {
            warn!(%remote, "a link without a proven key; closed");
            conn.close();
            return;
        };
        let (rpc_peer, driver) =
            RpcPeer::with_handlers(self.shared.rpc.clone(), self.shared.handlers.clone());
        let _ = rpc_peer.set_context(LinkPeer {
            id: peer,
            name: OnceLock::new(),
        });
        driver.connected(Arc::new(LinkOut(conn.clone())));
        lock(&self.shared.links).insert(
            id,
            LinkEntry {
                conn,
                driver: Arc::new(driver),
                closing: false,
                joined: false,
                peer_name: None,
                peer,
            },
        );
        lock(&self.shared.table).link_up(id, origin, remote, peer, clock::now());
    }

    /// Returns whether the frame went through the table (discovery messages do).
    pub(super) fn frame(&mut self, conn: LinkId, frame: Bytes) -> bool {
        if frame.starts_with(&MAGIC) {
            let Some(closing) = lock(&self.shared.links).get(&conn).map(|l| l.closing) else {
                return false;
            };
            match LinkMessage::decode(&frame) {
                // On a link being closed only a goodbye still counts: the peer may have
                // taken this duplicate for the link to keep.
                Ok(m) if closing && !matches!(m, LinkMessage::Goodbye { .. }) => {}
                Ok(m) => {
                    let name: Option<Arc<str>> = {
                        let mut table = lock(&self.shared.table);
                        table.link_message(conn, m, clock::now());
                        table.name_on_link(conn).map(Arc::from)
                    };
                    if let Some(name) = name
                        && let Some(l) = lock(&self.shared.links).get_mut(&conn)
                    {
                        l.joined = true;
                        if let Some(p) = l.driver.peer().context::<LinkPeer>() {
                            let _ = p.name.set(name.clone());
                        }
                        l.peer_name.get_or_insert(name);
                    }
                    // The join (and anything else the table has to say) is reported
                    // before what the peer sent after its hello.
                    self.forward_events();
                }
                Err(e) => debug!(%conn, error = %e, "dropped a discovery message"),
            }
            true
        } else if frame.first() == Some(&MESSAGE_TAG) {
            self.message(conn, frame);
            false
        } else {
            // The join was reported as the hello was read. Also on a link being closed:
            // what the peer sent before it closed is served. Handlers run inline here and
            // may use the device: no lock is held.
            let driver = match lock(&self.shared.links).get(&conn) {
                Some(l) if l.joined => Some(l.driver.clone()),
                Some(_) => {
                    debug!(%conn, "dropped an RPC packet from a link without a joined peer");
                    None
                }
                None => None,
            };
            if let Some(d) = driver {
                d.packet(&frame);
            }
            false
        }
    }

    /// A [`Device::send`](crate::Device::send) message: delivered in the order of its
    /// link's frames, from the link's peer, holding its cost
    /// ([`MESSAGE_COST`](crate::MESSAGE_COST) at least)
    /// on its link's share of the budget until the application takes it: a peer whose
    /// messages wait for its share is held back by its own link, no one else. It joins the
    /// turn's run of its link's messages ([`Driver::flush_messages`]).
    fn message(&mut self, conn: LinkId, frame: Bytes) {
        if self.run.as_ref().is_none_or(|r| r.link != conn) {
            // A new run: the link's peer and a hold on its share, looked up once for the
            // run (the join was reported as the hello was read).
            let found = match lock(&self.shared.links).get(&conn) {
                // Also on a link being closed: what the peer sent before it closed counts.
                Some(l) if l.joined => l
                    .peer_name
                    .as_ref()
                    .map(|n| ((Arc::clone(n), l.peer), l.conn.hold())),
                Some(_) => {
                    debug!(%conn, "dropped a message from a link without a joined peer");
                    None
                }
                None => None,
            };
            let Some((from, hold)) = found else {
                return;
            };
            self.flush_messages();
            self.run = Some(Run {
                link: conn,
                payloads: Vec::with_capacity(RUN_CAPACITY),
                hold,
                uncounted: 0,
                from,
            });
        }
        let run = self.run.as_mut().expect("a run of this link's messages");
        // The tag dropped in place: no count of the frame's buffer taken and given back.
        let mut payload = frame;
        payload.advance(1);
        run.push(payload);
    }

    pub(super) fn closed(&mut self, conn: LinkId, reason: &LinkClose) {
        let entry = lock(&self.shared.links).remove(&conn);
        if let Some(l) = entry {
            let peer = l.driver.peer();
            if peer.queued_requests() == 0 {
                l.driver.disconnected(Disconnect::Lost);
            } else {
                // What the peer sent before it closed waits behind busy handlers (all of
                // RpcConfig::max_concurrent_handlers running): let the queue run (its
                // messages are delivered, late), at most DRAIN_LIMIT, then disconnect.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(DRAIN_LIMIT, peer.done_serving()).await;
                    l.driver.disconnected(Disconnect::Lost);
                });
            }
        }
        lock(&self.shared.table).link_closed(conn, close_reason(reason), clock::now());
    }

    /// The table's [`Action::Close`](crate::Action::Close).
    pub(super) fn close_link(&mut self, conn: LinkId, reason: TableCloseReason) {
        // The entry stays until the link is closed, so RPC packets already on
        // their way are still served. A duplicate carries no new calls from
        // this side (names resolve to the kept link); it stays open for
        // DUPLICATE_LINGER, so the peer, which may not have the kept link's
        // hello yet, is not cut off meanwhile, then closes once its calls and
        // handlers are done: nothing in flight is lost to the one-link rule.
        let name = (reason == TableCloseReason::Duplicate)
            .then(|| lock(&self.shared.table).name_on_link(conn).map(Arc::from))
            .flatten();
        if let Some(l) = lock(&self.shared.links).get_mut(&conn) {
            l.closing = true;
            // A duplicate is a joined peer's link too (both hellos arrived).
            l.joined |= reason == TableCloseReason::Duplicate;
            if let Some(name) = name {
                l.peer_name.get_or_insert(name);
            }
            let c = l.conn.clone();
            if reason == TableCloseReason::Duplicate {
                let peer = l.driver.peer();
                tokio::spawn(async move {
                    tokio::time::sleep(DUPLICATE_LINGER).await;
                    // Woken when the last call or handler on it ends (a lost link ends
                    // them all), or at DRAIN_LIMIT.
                    let _ = tokio::time::timeout(DRAIN_LIMIT, peer.idle()).await;
                    c.close();
                });
            } else {
                c.close();
            }
        }
    }
}

fn close_reason(r: &LinkClose) -> LinkCloseReason {
    match r {
        LinkClose::Timeout => LinkCloseReason::Timeout,
        _ => LinkCloseReason::Lost,
    }
}

/// Packets of a peer's RPC go out on its link.
struct LinkOut(Connection<Binary>);

impl Outgoing for LinkOut {
    fn send(
        &self,
        packet: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LinkClosed>> + Send + '_>>
    {
        Box::pin(async move { self.0.send(packet).await.map_err(|_| LinkClosed) })
    }

    fn try_send(&self, packet: &Bytes) -> bool {
        self.0.try_send(packet).is_ok()
    }

    /// The peer's queued requests, kept replies and outbox count in the device's budget.
    fn hold(&self) -> Option<hail_link::Hold> {
        Some(self.0.budget().hold())
    }
}
