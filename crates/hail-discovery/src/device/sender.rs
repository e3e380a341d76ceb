//! Message frames ([`MESSAGE_TAG`]) and [`PeerSender`], the steady path for messages to
//! one peer ([`Device::to`]).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use hail_link::{Connection, LinkError, SEND_COPY_BELOW};
use hail_wire::Binary;

use super::error::SendError;
use super::handle::Device;
use super::shared::Shared;
use crate::error::ResolveError;

/// The first byte of a link frame that carries a [`Device::send`] message; the rest of the
/// frame is the payload. Discovery messages start with `H` (their magic `HAIL`) and RPC
/// packets with their version, 1: the three never collide.
pub(super) const MESSAGE_TAG: u8 = b'M';

impl Device {
    /// A handle that sends messages to the joined peer named `name`: the steady path when
    /// one device talks to another often. It resolves the name once and keeps the link,
    /// so a message costs no name lookup, no lock of the device and no allocation; when
    /// the link ends (the peer reconnected, or restarted with the same name), the next
    /// message resolves the name again and goes on the new link.
    ///
    /// Fails when no single joined device has the name right now.
    ///
    /// ```no_run
    /// # async fn demo(device: hail_discovery::Device) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut lamp = device.to("lamp")?;
    /// lamp.send(b"on").await?;
    /// // Or, where waiting is not an option: queued now, or `SendError::Full`.
    /// lamp.try_send(b"off")?;
    /// # Ok(()) }
    /// ```
    pub fn to(&self, name: &str) -> Result<PeerSender, ResolveError> {
        let link = self.shared.resolve_link(name)?;
        Ok(PeerSender {
            name: name.to_owned(),
            shared: Arc::downgrade(&self.shared),
            link,
        })
    }
}

/// Sends messages to one peer by name, on the link it keeps ([`Device::to`]). Messages
/// from one `PeerSender` arrive in the order they were sent. Clone it to send from
/// several tasks; it keeps no device alive (after the device closed, sends fail with
/// [`ResolveError::NotConnected`] in [`SendError::Resolve`]).
#[derive(Debug, Clone)]
pub struct PeerSender {
    name: String,
    shared: Weak<Shared>,
    link: Connection<Binary>,
}

impl PeerSender {
    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands `msg` to the peer's link, waiting while its send queue is full (the peer
    /// reads slowly). Cancel-safe: if the future is dropped, the message was queued whole
    /// or not at all.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        match self.link.send_parts(&[&[MESSAGE_TAG], msg]).await {
            Err(LinkError::Closed(_)) => {
                self.relink()?;
                self.link.send_parts(&[&[MESSAGE_TAG], msg]).await
            }
            r => r,
        }
        .map_err(|e| link_error(e, msg.len(), &self.name))
    }

    /// Queues `msg` on the peer's link if its send queue has room, or fails at once with
    /// [`SendError::Full`].
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        match self.link.try_send_parts(&[&[MESSAGE_TAG], msg]) {
            Err(LinkError::Closed(_)) => {
                self.relink()?;
                self.link.try_send_parts(&[&[MESSAGE_TAG], msg])
            }
            r => r,
        }
        .map_err(|e| link_error(e, msg.len(), &self.name))
    }

    /// [`send`](Self::send) of an owned payload, not copied: the link keeps `msg` as it is
    /// until it is written (from [`SEND_COPY_BELOW`](hail_link::SEND_COPY_BELOW), 512
    /// bytes, on; shorter ones are copied, which costs less), so a large message costs no
    /// copy on a plaintext link and only the seal's on a secured one. It counts its length
    /// in the link's queue and the device's budget as a copied one does, and keeps whatever
    /// owns its bytes alive until written (a [`Bytes`] cut from a larger buffer keeps that
    /// buffer). In order with the messages of [`send`](Self::send) and
    /// [`try_send`](Self::try_send).
    ///
    /// ```no_run
    /// # async fn demo(device: hail_discovery::Device) -> Result<(), Box<dyn std::error::Error>> {
    /// use bytes::Bytes;
    ///
    /// let mut lamp = device.to("lamp")?;
    /// lamp.send_bytes(Bytes::from(vec![0u8; 4096])).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_bytes(&mut self, msg: Bytes) -> Result<(), SendError> {
        if msg.len() < SEND_COPY_BELOW {
            return self.send(&msg).await;
        }
        let len = msg.len();
        // A clone (a reference count) to send again on the new link if this one ended.
        match self.link.send_bytes(&[MESSAGE_TAG], msg.clone()).await {
            Err(LinkError::Closed(_)) => {
                self.relink()?;
                self.link.send_bytes(&[MESSAGE_TAG], msg).await
            }
            r => r,
        }
        .map_err(|e| link_error(e, len, &self.name))
    }

    /// [`try_send`](Self::try_send) of an owned payload, kept as
    /// [`send_bytes`](Self::send_bytes) keeps it: queued now, or [`SendError::Full`] at
    /// once (the payload dropped; a clone of it, a reference count, can be sent again).
    pub fn try_send_bytes(&mut self, msg: Bytes) -> Result<(), SendError> {
        if msg.len() < SEND_COPY_BELOW {
            return self.try_send(&msg);
        }
        let len = msg.len();
        match self.link.try_send_bytes(&[MESSAGE_TAG], msg.clone()) {
            Err(LinkError::Closed(_)) => {
                self.relink()?;
                self.link.try_send_bytes(&[MESSAGE_TAG], msg)
            }
            r => r,
        }
        .map_err(|e| link_error(e, len, &self.name))
    }

    /// The link ended: the name's link now, if there is one.
    fn relink(&mut self) -> Result<(), SendError> {
        let shared = self
            .shared
            .upgrade()
            .ok_or_else(|| ResolveError::NotConnected(self.name.clone()))?;
        self.link = shared.resolve_link(&self.name)?;
        Ok(())
    }
}

/// What a link's refusal means for a message of `len` bytes to `name`.
pub(super) fn link_error(e: LinkError, len: usize, name: &str) -> SendError {
    match e {
        LinkError::Full => SendError::Full,
        LinkError::Encode(_) => SendError::TooLarge { len },
        _ => ResolveError::NotConnected(name.to_owned()).into(),
    }
}
