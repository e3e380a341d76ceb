//! Establishing a link: hello/welcome, or the Noise handshake, with deadlines and a small
//! frame limit until the peer is authenticated.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use hail_wire::ByteOrder;
use tokio::io::AsyncWriteExt;

use crate::config::{Framing, LinkConfig, PRE_AUTH_MAX_FRAME_LEN};
use crate::error::{CloseReason, LinkError, ProtocolError, RefuseReason};
use crate::proto::{self, CloseCode, Control};
use crate::rx::Rx;
use crate::seal::{self, Record, Sealer};
use crate::stream::{ReadHalf, WriteHalf};
use crate::transport::Link;

/// A connection whose handshake is done, ready to become a `Connection`.
pub(crate) struct Established {
    pub(crate) rd: ReadHalf,
    pub(crate) wr: WriteHalf,
    pub(crate) rx: Rx,
    pub(crate) sealer: Option<Sealer>,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
}

fn noise_err(_: snow::Error) -> LinkError {
    LinkError::AuthFailed
}

async fn read_more(rd: &mut ReadHalf, rx: &mut Rx) -> Result<(), LinkError> {
    rx.reserve_for_read();
    match rd.read_buf(&mut rx.raw).await {
        Ok(0) => Err(LinkError::Closed(CloseReason::PeerClosed)),
        Ok(_) => Ok(()),
        Err(e) => Err(LinkError::Io(e)),
    }
}

async fn next_frame(rd: &mut ReadHalf, rx: &mut Rx) -> Result<BytesMut, LinkError> {
    loop {
        if let Some(f) = rx.next_frame()? {
            return Ok(f);
        }
        read_more(rd, rx).await?;
    }
}

async fn next_record(rd: &mut ReadHalf, rx: &mut Rx) -> Result<Record, LinkError> {
    loop {
        if let Some(r) = rx.next_record()? {
            return Ok(r);
        }
        read_more(rd, rx).await?;
    }
}

fn is_big(order: ByteOrder) -> bool {
    order == ByteOrder::BigEndian
}

fn pre_auth_rx(cfg: &LinkConfig) -> Rx {
    let mut rx = Rx::new(cfg.byte_order, PRE_AUTH_MAX_FRAME_LEN);
    rx.set_max_record(PRE_AUTH_MAX_FRAME_LEN as usize);
    rx
}

fn finish(link: Link, mut rx: Rx, sealer: Option<Sealer>, cfg: &LinkConfig) -> Established {
    rx.set_frame_limit(cfg.byte_order, cfg.max_frame_len);
    rx.set_max_record(seal::MAX_RECORD);
    Established {
        rd: link.rd,
        wr: link.wr,
        rx,
        sealer,
        peer: link.peer,
        local: link.local,
    }
}

/// Connects to `addr` over the config's transport and runs the client side of the
/// handshake.
pub(crate) async fn dial(
    addr: SocketAddr,
    cfg: &LinkConfig,
    connect_timeout: Duration,
) -> Result<Established, LinkError> {
    let link = tokio::time::timeout(connect_timeout, cfg.transport.connect(addr))
        .await
        .map_err(|_| LinkError::Io(std::io::ErrorKind::TimedOut.into()))??;
    tokio::time::timeout(cfg.handshake_timeout, initiate(link, cfg))
        .await
        .map_err(|_| LinkError::HandshakeTimeout)?
}

async fn initiate(mut link: Link, cfg: &LinkConfig) -> Result<Established, LinkError> {
    let (rd, wr) = (&mut link.rd, &mut link.wr);
    let mut rx = pre_auth_rx(cfg);
    let mut out = BytesMut::new();
    let mut sealer = None;
    match (cfg.framing, &cfg.psk) {
        (Framing::Raw, _) => return Ok(finish(link, rx, None, cfg)),
        (Framing::Hail, None) => {
            proto::put_control(
                &mut out,
                is_big(cfg.byte_order),
                proto::KIND_HELLO,
                &proto::hello_body(),
            );
            wr.write_all(&out).await?;
        }
        (Framing::Hail, Some(psk)) => {
            let mut hs = seal::initiator(psk.bytes()).map_err(noise_err)?;
            seal::put_handshake(&mut hs, &mut out).map_err(noise_err)?;
            wr.write_all(&out).await?;
            match next_record(rd, &mut rx).await? {
                Record::Alert(_) => return Err(LinkError::AuthFailed),
                Record::Data(m) => {
                    let mut scratch = [0u8; 64];
                    hs.read_message(&m, &mut scratch)
                        .map_err(|_| LinkError::AuthFailed)?;
                }
            }
            let (s, o) = seal::split(hs).map_err(noise_err)?;
            rx.set_opener(o);
            rx.set_max_record(seal::MAX_RECORD);
            sealer = Some(s);
        }
    }
    let frame = next_frame(rd, &mut rx).await?;
    match proto::parse(frame).map_err(|e| LinkError::Closed(CloseReason::Protocol(e)))? {
        Control::Welcome { version } if version == proto::VERSION => {
            Ok(finish(link, rx, sealer, cfg))
        }
        Control::Welcome { .. } => Err(LinkError::Refused(RefuseReason::Version)),
        Control::Close(code) => Err(code.received_reason().into()),
        _ => Err(LinkError::Closed(CloseReason::Protocol(
            ProtocolError::Unexpected("non-welcome"),
        ))),
    }
}

/// How an accepted connection's handshake ended badly.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// What the server reports.
    pub(crate) error: LinkError,
    /// The peer failed authentication (for the penalty table and the statistics).
    pub(crate) auth_failed: bool,
}

impl From<LinkError> for Rejected {
    fn from(error: LinkError) -> Self {
        Self {
            auth_failed: matches!(error, LinkError::AuthFailed),
            error,
        }
    }
}

/// Runs the server side of the handshake on an accepted stream. `penalty` delays the
/// answer to a Noise handshake (repeated failures from the address); `admit` decides
/// whether the client may stay once it is authenticated.
pub(crate) async fn respond(
    mut link: Link,
    cfg: &LinkConfig,
    penalty: Duration,
    admit: impl FnOnce() -> Result<(), RefuseReason>,
) -> Result<Established, Rejected> {
    let (rd, wr) = (&mut link.rd, &mut link.wr);
    let big = is_big(cfg.byte_order);
    let mut rx = pre_auth_rx(cfg);
    let mut out = BytesMut::new();
    match (cfg.framing, &cfg.psk) {
        (Framing::Raw, _) => {
            admit().map_err(LinkError::Refused)?;
            Ok(finish(link, rx, None, cfg))
        }
        (Framing::Hail, None) => {
            let frame = next_frame(rd, &mut rx).await?;
            match proto::parse(frame) {
                Ok(Control::Hello { version }) if version == proto::VERSION => {}
                Ok(Control::Hello { .. }) => {
                    proto::put_control(
                        &mut out,
                        big,
                        proto::KIND_CLOSE,
                        &[CloseCode::Version.to_u8()],
                    );
                    wr.write_all(&out).await.ok();
                    return Err(LinkError::Refused(RefuseReason::Version).into());
                }
                Ok(_) => {
                    return Err(LinkError::Closed(CloseReason::Protocol(
                        ProtocolError::Unexpected("non-hello"),
                    ))
                    .into());
                }
                Err(e) => return Err(LinkError::Closed(CloseReason::Protocol(e)).into()),
            }
            let verdict = admit();
            match verdict {
                Ok(()) => proto::put_control(&mut out, big, proto::KIND_WELCOME, &[proto::VERSION]),
                Err(why) => {
                    let code = CloseCode::for_reason(&CloseReason::Refused(why));
                    proto::put_control(&mut out, big, proto::KIND_CLOSE, &[code.to_u8()]);
                }
            }
            wr.write_all(&out).await.map_err(LinkError::Io)?;
            verdict.map_err(LinkError::Refused)?;
            Ok(finish(link, rx, None, cfg))
        }
        (Framing::Hail, Some(psk)) => {
            let mut hs = seal::responder(psk.bytes()).map_err(noise_err)?;
            let m1 = match next_record(rd, &mut rx).await? {
                Record::Data(m) => m,
                Record::Alert(_) => {
                    return Err(
                        LinkError::Closed(CloseReason::Protocol(ProtocolError::BadRecord)).into(),
                    );
                }
            };
            if !penalty.is_zero() {
                tokio::time::sleep(penalty).await;
            }
            let mut scratch = [0u8; 64];
            if hs.read_message(&m1, &mut scratch).is_err() {
                seal::put_alert(&mut out, seal::ALERT_AUTH);
                wr.write_all(&out).await.ok();
                wr.shutdown().await.ok();
                return Err(LinkError::AuthFailed.into());
            }
            seal::put_handshake(&mut hs, &mut out).map_err(noise_err)?;
            let (mut sealer, opener) = seal::split(hs).map_err(noise_err)?;
            rx.set_opener(opener);
            rx.set_max_record(seal::MAX_RECORD);
            let verdict = admit();
            let mut frame = BytesMut::new();
            match verdict {
                Ok(()) => {
                    proto::put_control(&mut frame, big, proto::KIND_WELCOME, &[proto::VERSION])
                }
                Err(why) => {
                    let code = CloseCode::for_reason(&CloseReason::Refused(why));
                    proto::put_control(&mut frame, big, proto::KIND_CLOSE, &[code.to_u8()]);
                }
            }
            sealer.seal(&frame, &mut out);
            wr.write_all(&out).await.map_err(LinkError::Io)?;
            verdict.map_err(LinkError::Refused)?;
            Ok(finish(link, rx, Some(sealer), cfg))
        }
    }
}
