//! Establishing a link: hello/welcome, or the Noise handshake, with deadlines and a small
//! frame limit until the peer is authenticated.
//!
//! The Noise exchange (see [`seal`] for the patterns):
//!
//! ```text
//! NNpsk0:  client -> server  message 1 (psk, e)
//!          server -> client  message 2 (e, ee)
//!          client -> server  key confirmation (an empty sealed record)
//!          server            admits (client limit), then sends a sealed WELCOME or CLOSE
//! XX,      client -> server  message 1 ([psk,] e)
//! XXpsk0:  server -> client  message 2 (e, ee, s, es) + the server's identity payload
//!          client            verifies the server's identity against its static key
//!          client -> server  message 3 (s, se) + the client's identity payload
//!          server            verifies it, admits, then sends a sealed WELCOME or CLOSE
//! ```
//!
//! The server admits a connection (counts it against `max_clients`, emits `Connected`)
//! only once the client proved itself: after the key confirmation (`NNpsk0`, WireGuard's
//! rule) or message 3 (`XX`, `XXpsk0`). A replayed message 1 gets a message 2 back and
//! then holds its pending slot until the handshake deadline, nothing more. Every failure
//! to authenticate (wrong key, a pattern mismatch: identity on one side only, a forged or
//! missing identity payload, a replayed message) is [`LinkError::AuthFailed`] here, and the
//! side that finds it sends the alert record so the other side reports it too.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hail_crypto::PublicKey;
use hail_wire::ByteOrder;
use tokio::io::AsyncWriteExt;

use crate::config::{Framing, LinkConfig, PRE_AUTH_MAX_FRAME_LEN};
use crate::error::{CloseReason, LinkError, ProtocolError, RefuseReason};
use crate::identity::{self, PAYLOAD_LEN};
use crate::proto::{self, CloseCode, Control};
use crate::rx::{HANDSHAKE_READ, MIN_READ, Rx};
use crate::seal::{self, Keys, Record, Sealer};
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
    /// The peer's identity key, proven in the handshake (`XX`, `XXpsk0`).
    pub(crate) peer_key: Option<PublicKey>,
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

async fn next_frame(rd: &mut ReadHalf, rx: &mut Rx) -> Result<Bytes, LinkError> {
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
    rx.set_read_size(HANDSHAKE_READ);
    rx
}

fn finish(
    link: Link,
    mut rx: Rx,
    sealer: Option<Sealer>,
    peer_key: Option<PublicKey>,
    cfg: &LinkConfig,
) -> Established {
    rx.set_frame_limit(cfg.byte_order, cfg.max_frame_len);
    rx.set_max_record(seal::MAX_RECORD);
    rx.set_read_size(MIN_READ);
    rx.shrink_if_idle();
    Established {
        rd: link.rd,
        wr: link.wr,
        rx,
        sealer,
        peer: link.peer,
        local: link.local,
        peer_key,
    }
}

fn keys(cfg: &LinkConfig) -> Option<Keys<'_>> {
    Some(Keys {
        pattern: cfg.pattern()?,
        psk: cfg.psk.as_ref().map(|p| p.bytes()),
        local: cfg.local_identity(),
    })
}

/// Tells the peer its handshake failed (the alert record), then fails with `AuthFailed`.
async fn refuse(wr: &mut WriteHalf) -> LinkError {
    let mut out = BytesMut::new();
    seal::put_alert(&mut out, seal::ALERT_AUTH);
    wr.write_all(&out).await.ok();
    wr.shutdown().await.ok();
    LinkError::AuthFailed
}

/// Reads the next handshake message (an alert instead is the peer's refusal).
async fn next_handshake(rd: &mut ReadHalf, rx: &mut Rx) -> Result<BytesMut, LinkError> {
    match next_record(rd, rx).await? {
        Record::Data(m) => Ok(m),
        Record::Alert(_) => Err(LinkError::AuthFailed),
    }
}

/// Reads handshake message 2 or 3 and, for the identity patterns, checks the identity
/// payload against the static key the message proved. `Err(())` for any failure (the
/// caller refuses the peer).
pub(crate) fn read_identity(
    hs: &mut snow::HandshakeState,
    msg: &[u8],
    with_identity: bool,
) -> Result<Option<PublicKey>, ()> {
    let mut payload = [0u8; PAYLOAD_LEN];
    let n = seal::read_handshake(hs, msg, &mut payload).map_err(|_| ())?;
    if !with_identity {
        return if n == 0 { Ok(None) } else { Err(()) };
    }
    match identity::verify_payload(&payload[..n], hs.get_remote_static()) {
        Ok(key) => Ok(Some(key)),
        Err(e) => {
            tracing::debug!(error = %e, "identity payload refused");
            Err(())
        }
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
    let mut peer_key = None;
    match (cfg.framing, keys(cfg)) {
        (Framing::Raw, _) => return Ok(finish(link, rx, None, None, cfg)),
        (Framing::Hail, None) => {
            proto::put_control(
                &mut out,
                is_big(cfg.byte_order),
                proto::KIND_HELLO,
                &proto::hello_body(),
            );
            wr.write_all(&out).await?;
        }
        (Framing::Hail, Some(keys)) => {
            let with_identity = keys.pattern.has_identity();
            let mut hs = seal::initiator(keys).map_err(noise_err)?;
            seal::put_handshake(&mut hs, &[], &mut out).map_err(noise_err)?;
            wr.write_all(&out).await?;
            out.clear();
            let m2 = next_handshake(rd, &mut rx).await?;
            peer_key = match read_identity(&mut hs, &m2, with_identity) {
                Ok(key) => key,
                Err(()) => return Err(refuse(wr).await),
            };
            if let Some(local) = keys.local {
                seal::put_handshake(&mut hs, local.payload(), &mut out).map_err(noise_err)?;
            }
            let (mut s, o) = seal::split(hs).map_err(noise_err)?;
            if !with_identity {
                seal::put_confirmation(&mut s, &mut out);
            }
            wr.write_all(&out).await?;
            // The server's verdict: a sealed WELCOME or CLOSE, or the alert if it refused
            // our proof (message 3, or the key confirmation).
            loop {
                match rx.raw.first_chunk::<2>() {
                    Some([0, 0]) => return Err(LinkError::AuthFailed),
                    Some(_) => break,
                    None => read_more(rd, &mut rx).await?,
                }
            }
            rx.set_opener(o);
            rx.set_max_record(seal::MAX_RECORD);
            sealer = Some(s);
        }
    }
    let frame = next_frame(rd, &mut rx).await?;
    match proto::parse(frame).map_err(|e| LinkError::Closed(CloseReason::Protocol(e)))? {
        Control::Welcome { version } if version == proto::VERSION => {
            Ok(finish(link, rx, sealer, peer_key, cfg))
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
    match (cfg.framing, keys(cfg)) {
        (Framing::Raw, _) => {
            admit().map_err(LinkError::Refused)?;
            Ok(finish(link, rx, None, None, cfg))
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
            Ok(finish(link, rx, None, None, cfg))
        }
        (Framing::Hail, Some(keys)) => {
            let with_identity = keys.pattern.has_identity();
            let mut hs = seal::responder(keys).map_err(noise_err)?;
            // An alert instead of message 1 is most likely a plaintext HELLO (its header
            // starts with two zero bytes): a peer without the key, refused as such.
            let m1 = match next_record(rd, &mut rx).await? {
                Record::Data(m) => m,
                Record::Alert(_) => return Err(refuse(wr).await.into()),
            };
            if !penalty.is_zero() {
                tokio::time::sleep(penalty).await;
            }
            // Message 1 carries no payload; any (an `NNpsk0` message 1 read as `XX`'s,
            // which has no key to fail on) is a pattern mismatch.
            let mut empty = [0u8; PAYLOAD_LEN];
            if !matches!(seal::read_handshake(&mut hs, &m1, &mut empty), Ok(0)) {
                return Err(refuse(wr).await.into());
            }
            let ours = keys.local.map_or(&[][..], |l| &l.payload()[..]);
            // Message 2's first DH fails for a small-order ephemeral key in message 1 (the
            // X25519 code refuses an all-zero result): the client's failure, refused as such.
            if seal::put_handshake(&mut hs, ours, &mut out).is_err() {
                return Err(refuse(wr).await.into());
            }
            wr.write_all(&out).await.map_err(LinkError::Io)?;
            out.clear();
            // Nothing is admitted before the client proved itself: message 3 (its
            // identity), or the key confirmation (`NNpsk0`). Until then the pre-auth
            // limits (record size, deadline, pending slot) hold.
            let peer_key = if with_identity {
                let m3 = next_handshake(rd, &mut rx).await?;
                match read_identity(&mut hs, &m3, true) {
                    Ok(key) => key,
                    Err(()) => return Err(refuse(wr).await.into()),
                }
            } else {
                None
            };
            let (mut sealer, mut opener) = seal::split(hs).map_err(noise_err)?;
            if !with_identity {
                let confirmation = next_handshake(rd, &mut rx).await?;
                if seal::open_confirmation(&mut opener, &confirmation).is_err() {
                    return Err(refuse(wr).await.into());
                }
            }
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
            Ok(finish(link, rx, Some(sealer), peer_key, cfg))
        }
    }
}

#[cfg(test)]
mod tests {
    use hail_crypto::Identity;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::stream::split_boxed;

    fn link(stream: DuplexStream, peer: u16, local: u16) -> Link {
        let (rd, wr) = split_boxed(Box::new(stream));
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Link {
            rd,
            wr,
            peer: at(peer),
            local: at(local),
        }
    }

    /// A handshake's name, the client's and the server's config, and the identities
    /// (client's, server's) it proves.
    type Case = (
        &'static str,
        LinkConfig,
        LinkConfig,
        Option<(Identity, Identity)>,
    );

    /// Client and server configs of every handshake: plaintext hello, `NNpsk0`, `XX`,
    /// `XXpsk0`, and the identities proven in it (client's, server's).
    fn every_handshake() -> Vec<Case> {
        let psk = [7u8; 32];
        let mut all = vec![
            ("hello", LinkConfig::default(), LinkConfig::default(), None),
            (
                "NNpsk0",
                LinkConfig::builder().psk(psk).build().unwrap(),
                LinkConfig::builder().psk(psk).build().unwrap(),
                None,
            ),
        ];
        for (name, with_psk) in [("XX", false), ("XXpsk0", true)] {
            let (c, s) = (Identity::generate().unwrap(), Identity::generate().unwrap());
            let cfg = |id: &Identity| {
                let b = LinkConfig::builder().identity(id);
                if with_psk { b.psk(psk) } else { b }.build().unwrap()
            };
            all.push((name, cfg(&c), cfg(&s), Some((c, s))));
        }
        all
    }

    /// Both sides of a handshake over an in-memory stream that holds at most `buffer`
    /// bytes, so that no read returns more than that.
    async fn handshake(
        client: &LinkConfig,
        server: &LinkConfig,
        buffer: usize,
    ) -> (Established, Established) {
        let (c, s) = tokio::io::duplex(buffer);
        let (c, s) = tokio::join!(
            initiate(link(c, 2, 1), client),
            respond(link(s, 1, 2), server, Duration::ZERO, || Ok(())),
        );
        (
            c.expect("client side"),
            s.map_err(|r| r.error).expect("server side"),
        )
    }

    /// The handshake reads 512 bytes at a time: messages arriving in pieces smaller than
    /// that (down to a byte) still make every handshake, which proves the same keys; after
    /// it the reads are 4 KiB again and nothing of the handshake is left behind.
    #[tokio::test]
    async fn every_handshake_completes_when_its_messages_arrive_in_pieces() {
        for (name, client, server, ids) in every_handshake() {
            for piece in [1, 7, 100, HANDSHAKE_READ - 1, 64 * 1024] {
                let (c, s) = handshake(&client, &server, piece).await;
                let proven = (c.peer_key, s.peer_key);
                match &ids {
                    Some((ci, si)) => {
                        assert_eq!(proven, (Some(si.public()), Some(ci.public())), "{name}");
                    }
                    None => assert_eq!(proven, (None, None), "{name}"),
                }
                for end in [&c, &s] {
                    assert_eq!(end.rx.held(), 0, "{name}, pieces of {piece}");
                    assert_eq!(end.rx.read_limit(false), MIN_READ, "{name}");
                    assert_eq!(end.rx.buffered(), 0, "{name}: an empty buffer is dropped");
                }
            }
        }
    }

    /// What the peer sent right behind its WELCOME comes in the same read as it: the
    /// established receiver keeps it (the buffer is dropped only when empty) and cuts it
    /// as the first frame after the handshake.
    #[tokio::test]
    async fn bytes_read_with_the_welcome_are_the_readers_first_frame() {
        for (name, client, server, _) in every_handshake() {
            let (c, s) = tokio::io::duplex(64 * 1024);
            let (c, s) = tokio::join!(initiate(link(c, 2, 1), &client), async {
                let mut s = respond(link(s, 1, 2), &server, Duration::ZERO, || Ok(()))
                    .await
                    .map_err(|r| r.error)
                    .expect("server side");
                // Written before the client runs again: it reads both at once.
                let mut frame = BytesMut::new();
                proto::put_control(&mut frame, true, proto::KIND_MESSAGE, b"early");
                let mut out = BytesMut::new();
                match &mut s.sealer {
                    Some(sealer) => sealer.seal(&frame, &mut out),
                    None => out = frame,
                }
                s.wr.write_all(&out).await.expect("write");
                s
            });
            let (mut c, _s) = (c.expect("client side"), s);
            assert!(c.rx.held() > 0, "{name}: the frame came with the welcome");
            let frame = c.rx.next_frame().expect("a frame").expect("whole");
            assert_eq!(
                proto::parse(frame).expect("a message"),
                Control::Message(Bytes::from_static(b"early")),
                "{name}"
            );
            assert_eq!(c.rx.held(), 0, "{name}");
        }
    }

    /// The handshake's 512-byte reads bound the first allocation only: a record of 3 KiB,
    /// or of the pre-auth limit (4 KiB), is read whole however it arrives, and one a byte
    /// longer is refused.
    #[tokio::test]
    async fn a_handshake_record_up_to_the_pre_auth_limit_is_read_whole() {
        let limit = PRE_AUTH_MAX_FRAME_LEN as usize;
        for len in [200, 3 * 1024, limit, limit + 1] {
            for piece in [1, 100, 64 * 1024] {
                let (a, mut b) = tokio::io::duplex(piece);
                let Link {
                    mut rd, wr: _wr, ..
                } = link(a, 2, 1);
                let mut rx = pre_auth_rx(&LinkConfig::default());
                let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut wire = u16::try_from(len).unwrap().to_be_bytes().to_vec();
                wire.extend_from_slice(&body);
                // The writer may wait forever once the record is refused: not awaited.
                tokio::spawn(async move { b.write_all(&wire).await.ok() });
                let read = next_record(&mut rd, &mut rx).await;
                match read {
                    Ok(Record::Data(m)) => {
                        assert!(len <= limit, "{len} read");
                        assert!(m[..] == body[..], "{len} in pieces of {piece}");
                        if len < HANDSHAKE_READ && piece > len {
                            // One read, into one allocation of the handshake's size.
                            assert!(m.capacity() + rx.raw.capacity() <= HANDSHAKE_READ);
                        }
                        assert_eq!(rx.held(), 0, "{len} in pieces of {piece}");
                    }
                    Ok(Record::Alert(_)) => panic!("{len}: an alert"),
                    Err(e) => {
                        assert!(len > limit, "{len} in pieces of {piece}: {e}");
                        assert!(
                            matches!(
                                e,
                                LinkError::Closed(CloseReason::Protocol(ProtocolError::BadRecord))
                            ),
                            "{e}"
                        );
                    }
                }
            }
        }
    }
}
