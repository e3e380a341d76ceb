//! Dialing a peer: every address at once with quick retries ([`dial_any`]), and the
//! count of failed dials in a row per target that decides what is reported
//! ([`DialFailures`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hail_link::{Connection, EventSender, LinkConfig, ReadGate, ServerEvent};
use hail_wire::Binary;
use tracing::debug;

use super::error::{DialError, RunError};
use crate::id::DeviceId;

/// Whom a dial was for, to count its failures in a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum DialKey {
    Peer(DeviceId),
    Addrs(Vec<SocketAddr>),
}

impl DialKey {
    /// The device expected at the other end, or else the addresses dialed.
    pub(super) fn new(peer: Option<DeviceId>, addrs: &[SocketAddr]) -> Self {
        match peer {
            Some(id) => Self::Peer(id),
            None => Self::Addrs(addrs.to_vec()),
        }
    }
}

/// Most dial targets whose failures are counted; past it the counts start over: 1024.
const MAX_DIAL_COUNTS: usize = 1024;

/// Failed dials in a row per target (reset by a link that comes up).
#[derive(Debug, Default)]
pub(super) struct DialFailures {
    counts: HashMap<DialKey, u32>,
}

impl DialFailures {
    /// A dial to `target` brought a link up: its run of failures is over.
    pub(super) fn succeeded(&mut self, target: &DialKey) {
        self.counts.remove(target);
    }

    /// Counts a failed dial; reports an authentication failure at once (the first in a
    /// row) and the run of failures after 3, 6, 12 ... of them.
    pub(super) fn failed(
        &mut self,
        target: DialKey,
        addrs: Vec<SocketAddr>,
        addr: SocketAddr,
        error: &DialError,
        mut report: impl FnMut(RunError),
    ) {
        if self.counts.len() >= MAX_DIAL_COUNTS && !self.counts.contains_key(&target) {
            self.counts.clear();
        }
        let peer = match &target {
            DialKey::Peer(id) => Some(*id),
            DialKey::Addrs(_) => None,
        };
        let n = self.counts.entry(target).or_insert(0);
        *n = n.saturating_add(1);
        let n = *n;
        debug!(%addr, error = %error, failures = n, "dial failed");
        if n == 1 && matches!(error, DialError::AuthFailed) {
            report(RunError::AuthFailed {
                addr: Some(addr),
                count: 1,
            });
        }
        if n >= 3 && n.is_multiple_of(3) && (n / 3).is_power_of_two() {
            report(RunError::DialFailed {
                peer,
                addrs,
                failures: n,
                error: error.clone(),
            });
        }
    }
}

/// How long each of a dial's first attempts (per address) may take before it is
/// abandoned and tried again: 300 ms, well under TCP's 1 s initial SYN retransmission, so
/// a lost SYN or SYN-ACK (a lossy LAN, a partition just healed) costs about 0.3 s instead
/// of 1 s. A LAN handshake takes milliseconds.
const DIAL_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// How many attempts of a dial get [`DIAL_ATTEMPT_TIMEOUT`]: 2. The attempt after them
/// has only the link's own timeouts, so a slow path still connects (0.6 s late).
const DIAL_QUICK_ATTEMPTS: u32 = 2;

/// Runs `attempt` up to `quick` times with `timeout` each, then once without a timeout.
/// An attempt that finishes (even with an error, e.g. refused) ends it at once.
async fn with_quick_retries<T, F, Fut>(quick: u32, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..quick {
        if let Ok(r) = tokio::time::timeout(timeout, attempt()).await {
            return r;
        }
    }
    attempt().await
}

/// What a dial ends with: the link and its incoming frames, or the last attempt's
/// address and error.
pub(super) type Dialed = Result<(Connection<Binary>, ReadGate), (SocketAddr, DialError)>;

/// How long a dial waits on one address before it also tries the next (happy eyeballs,
/// RFC 8305's connection attempt delay): 250 ms. An attempt that fails starts the next at
/// once.
const DIAL_STAGGER: Duration = Duration::from_millis(250);

/// Dials the addresses best first, staggered: the next address is tried when the earlier
/// ones failed or after [`DIAL_STAGGER`] without an answer, and the first link that comes
/// up proving the key of `expect` (any key without it) wins (the other attempts are
/// dropped). A link that proves another device's key (an address now someone else's) is
/// closed and counts as that address failing. On failure, the last attempt's address and
/// error. The links deliver into `events` (see [`Connection::connect_into`]), each once
/// its gate is opened.
pub(super) async fn dial_any(
    addrs: Vec<SocketAddr>,
    expect: Option<DeviceId>,
    config: LinkConfig,
    events: EventSender<ServerEvent<Bytes>>,
) -> Dialed {
    let attempt = |a: SocketAddr| {
        let (config, events) = (config.clone(), events.clone());
        Box::pin(async move {
            let (conn, gate) =
                with_quick_retries(DIAL_QUICK_ATTEMPTS, DIAL_ATTEMPT_TIMEOUT, || {
                    Connection::connect_into(a, config.clone(), Binary, &events)
                })
                .await
                .map_err(|e| (a, DialError::from_link(e)))?;
            let proven = conn.peer_key().map(|k| DeviceId::from_bytes(k.id()));
            match expect {
                Some(want) if proven != Some(want) => {
                    debug!(%a, expected = %want, ?proven, "the address answered as another device");
                    conn.close();
                    Err((
                        a,
                        DialError::AnotherDevice {
                            expected: want,
                            proven,
                        },
                    ))
                }
                _ => Ok((conn, gate)),
            }
        })
    };
    let mut next = addrs.into_iter();
    let Some(first) = next.next() else {
        return Err((
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            DialError::NoAddress,
        ));
    };
    let mut running = FuturesUnordered::new();
    running.push(attempt(first));
    let stagger = tokio::time::sleep(DIAL_STAGGER);
    tokio::pin!(stagger);
    loop {
        // An attempt is always running here: one failed with none left ends the dial.
        tokio::select! {
            Some(r) = running.next() => match r {
                Ok(link) => return Ok(link),
                Err(failed) if next.len() == 0 && running.is_empty() => return Err(failed),
                Err(_) => {}
            },
            () = &mut stagger, if next.len() > 0 => {}
        }
        // A failure or the stagger: the next address, if any.
        if let Some(a) = next.next() {
            running.push(attempt(a));
            stagger
                .as_mut()
                .reset(tokio::time::Instant::now() + DIAL_STAGGER);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use hail_link::LinkError;

    use super::super::error::DialError;
    use super::super::error::RunError;
    use super::{DialFailures, DialKey, MAX_DIAL_COUNTS, with_quick_retries};
    use crate::id::DeviceId;

    /// Happy eyeballs: the first address hangs (its host is unreachable), so the second
    /// is tried after the stagger and wins; a refused first address moves on at once.
    #[tokio::test(start_paused = true)]
    async fn addresses_are_tried_staggered_and_the_first_link_wins() {
        use hail_link::memory::MemoryNetwork;
        use hail_link::{Events, LinkConfig, Server, ServerConfig, Transport};
        use hail_wire::Binary;

        let net = MemoryNetwork::new();
        let link = LinkConfig::builder()
            .transport(Transport::memory(&net))
            .build()
            .unwrap();
        let (_server, _events) = Server::bind(
            "10.0.0.2:7000".parse().unwrap(),
            ServerConfig::builder().link(link.clone()).build().unwrap(),
            Binary,
        )
        .await
        .unwrap();
        let (tx, _dialed) = Events::channel(16);
        // 10.0.0.1 hangs (unreachable), 10.0.0.2 answers.
        let (_hang, _e) = Server::bind(
            "10.0.0.1:7000".parse().unwrap(),
            ServerConfig::builder().link(link.clone()).build().unwrap(),
            Binary,
        )
        .await
        .unwrap();
        net.set_unreachable("10.0.0.1".parse().unwrap(), true);
        let t = tokio::time::Instant::now();
        let addrs: Vec<SocketAddr> = vec![
            "10.0.0.1:7000".parse().unwrap(),
            "10.0.0.2:7000".parse().unwrap(),
        ];
        let (conn, _gate) = super::dial_any(addrs, None, link.clone(), tx.clone())
            .await
            .expect("the second address answers");
        assert_eq!(conn.peer_addr(), "10.0.0.2:7000".parse().unwrap());
        let took = t.elapsed();
        assert!(
            took >= super::DIAL_STAGGER && took < super::DIAL_STAGGER * 2,
            "{took:?}"
        );
        // Nobody listens at 10.0.0.3: refused at once, the next address straight after.
        let t = tokio::time::Instant::now();
        let addrs: Vec<SocketAddr> = vec![
            "10.0.0.3:7000".parse().unwrap(),
            "10.0.0.2:7000".parse().unwrap(),
        ];
        let (conn, _gate) = super::dial_any(addrs, None, link.clone(), tx.clone())
            .await
            .unwrap();
        assert_eq!(conn.peer_addr(), "10.0.0.2:7000".parse().unwrap());
        assert!(t.elapsed() < super::DIAL_STAGGER, "{:?}", t.elapsed());
        // Every address refused: the last error.
        let addrs: Vec<SocketAddr> = vec![
            "10.0.0.3:7000".parse().unwrap(),
            "10.0.0.4:7000".parse().unwrap(),
        ];
        let (addr, _e) = super::dial_any(addrs, None, link, tx).await.unwrap_err();
        assert_eq!(addr, "10.0.0.4:7000".parse().unwrap());
    }

    /// The link kept must prove the key expected: an address that answers as another
    /// device (its address now someone else's) is closed and the next address's link
    /// kept; with no key expected, the first link wins.
    #[tokio::test(start_paused = true)]
    async fn a_link_that_proves_another_key_gives_way_to_the_next_address() {
        use hail_crypto::Identity;
        use hail_link::memory::MemoryNetwork;
        use hail_link::{Events, LinkConfig, Server, ServerConfig, Transport};
        use hail_wire::Binary;

        let net = MemoryNetwork::new();
        let base = LinkConfig::builder().transport(Transport::memory(&net));
        let key = || Identity::generate().expect("a key pair");
        let (other, wanted, me) = (key(), key(), key());
        let at = |s: &str| -> SocketAddr { s.parse().expect("an address") };
        let serve = |addr: SocketAddr, id: &Identity| {
            let config = ServerConfig::builder()
                .link(base.clone().identity(id).build().unwrap())
                .build()
                .unwrap();
            Server::bind(addr, config, Binary)
        };
        let (_s1, _e1) = serve(at("10.0.0.1:7000"), &other).await.expect("binds");
        let (_s2, _e2) = serve(at("10.0.0.2:7000"), &wanted).await.expect("binds");
        let (tx, _dialed) = Events::channel(16);
        let dialer = base.clone().identity(&me).build().unwrap();
        let both = vec![at("10.0.0.1:7000"), at("10.0.0.2:7000")];
        let want = DeviceId::from_bytes(wanted.public().id());
        let (conn, _gate) = super::dial_any(both.clone(), Some(want), dialer.clone(), tx.clone())
            .await
            .expect("the second address is the device");
        assert_eq!(conn.peer_addr(), at("10.0.0.2:7000"));
        assert_eq!(conn.peer_key().map(|k| k.id()), Some(wanted.public().id()));
        let (conn, _gate) = super::dial_any(both, None, dialer.clone(), tx.clone())
            .await
            .expect("any device");
        assert_eq!(conn.peer_addr(), at("10.0.0.1:7000"));
        // Only someone else there: the dial fails, saying who answered.
        let (addr, e) = super::dial_any(vec![at("10.0.0.1:7000")], Some(want), dialer, tx)
            .await
            .unwrap_err();
        assert_eq!(addr, at("10.0.0.1:7000"));
        let proven = Some(DeviceId::from_bytes(other.public().id()));
        assert!(
            matches!(e, DialError::AnotherDevice { expected, proven: p } if expected == want && p == proven),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn quick_attempts_are_abandoned_then_the_last_has_no_timeout() {
        let n = AtomicU32::new(0);
        // The first two attempts hang (a lost SYN), the third finishes.
        let r = with_quick_retries(2, Duration::from_millis(10), || {
            let i = n.fetch_add(1, Ordering::Relaxed);
            async move {
                if i < 2 {
                    std::future::pending::<()>().await;
                }
                i
            }
        })
        .await;
        assert_eq!((r, n.load(Ordering::Relaxed)), (2, 3));
        // A finished attempt (an error such as refused) is not retried.
        let n = AtomicU32::new(0);
        let r: Result<(), &str> = with_quick_retries(2, Duration::from_millis(10), || {
            n.fetch_add(1, Ordering::Relaxed);
            async { Err("refused") }
        })
        .await;
        assert_eq!((r, n.load(Ordering::Relaxed)), (Err("refused"), 1));
    }

    /// The failure counts at which `failures` dials in a row were reported.
    fn reported(f: &mut DialFailures, key: &DialKey, failures: u32, error: &DialError) -> Vec<u32> {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("an address");
        let mut out = Vec::new();
        for _ in 0..failures {
            f.failed(key.clone(), vec![addr], addr, error, |e| match e {
                RunError::DialFailed { failures, .. } => out.push(failures),
                RunError::AuthFailed { .. } => out.push(0),
                RunError::EventsDropped { .. } => unreachable!("not a dial's"),
            });
        }
        out
    }

    fn refused() -> DialError {
        DialError::from_link(LinkError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    #[test]
    fn runs_of_failures_are_reported_after_3_6_12_24_and_start_over_on_success() {
        let refused = refused();
        let key = DialKey::new(Some(DeviceId::from_bytes([1; 16])), &[]);
        let mut f = DialFailures::default();
        assert_eq!(reported(&mut f, &key, 30, &refused), [3, 6, 12, 24]);
        f.succeeded(&key);
        assert_eq!(reported(&mut f, &key, 3, &refused), [3]);
        // A failed handshake is reported at once, the first of a run only (as 0 here).
        let other = DialKey::new(None, &["127.0.0.1:7".parse().expect("an address")]);
        let auth = DialError::AuthFailed;
        assert_eq!(reported(&mut f, &other, 3, &auth), [0, 3]);
    }

    #[test]
    fn the_counts_are_bounded() {
        let refused = refused();
        let mut f = DialFailures::default();
        for i in 0..=MAX_DIAL_COUNTS {
            let id = u16::try_from(i).expect("small");
            let mut bytes = [0; 16];
            bytes[..2].copy_from_slice(&id.to_be_bytes());
            reported(
                &mut f,
                &DialKey::new(Some(DeviceId::from_bytes(bytes)), &[]),
                1,
                &refused,
            );
        }
        assert_eq!(
            f.counts.len(),
            1,
            "started over past {MAX_DIAL_COUNTS} targets"
        );
    }
}
