//! `build()` refuses each invalid setting with its typed error.

use super::*;

fn hb(interval_ms: u64, dead_ms: u64) -> Option<Heartbeat> {
    Some(Heartbeat {
        interval: Duration::from_millis(interval_ms),
        dead_after: Duration::from_millis(dead_ms),
    })
}

#[test]
fn the_builders_defaults_are_the_default_configs() {
    let link = LinkConfig::builder().build().unwrap();
    let default = LinkConfig::default();
    assert_eq!(link.max_frame_len(), default.max_frame_len());
    assert_eq!(link.queue_bytes(), default.queue_bytes());
    assert_eq!(link.heartbeat(), default.heartbeat());
    assert_eq!(link.framing(), default.framing());
    assert!(!link.is_secure());
    let server = ServerConfig::builder().build().unwrap();
    assert_eq!(server.max_clients(), DEFAULT_MAX_CLIENTS);
    assert_eq!(server.max_pending(), DEFAULT_MAX_PENDING);
    assert_eq!(server.event_capacity(), DEFAULT_EVENT_CAPACITY);
    let client = ClientConfig::builder().build().unwrap();
    assert_eq!(client.reconnect(), Some(Backoff::default()));
    assert_eq!(client.outage_bytes(), DEFAULT_OUTAGE_BYTES);
    assert!(!client.connect_in_background());
}

#[test]
fn each_zero_link_setting_is_refused_by_name() {
    let b = LinkConfig::builder;
    for (what, built) in [
        ("max_frame_len", b().max_frame_len(0).build()),
        ("queue_bytes", b().queue_bytes(0).build()),
        ("incoming_capacity", b().incoming_capacity(0).build()),
        (
            "handshake_timeout",
            b().handshake_timeout(Duration::ZERO).build(),
        ),
    ] {
        assert_eq!(built.err(), Some(LinkConfigError::Zero { what }));
    }
}

#[test]
fn a_heartbeat_that_would_declare_the_peer_dead_early_is_refused() {
    let b = LinkConfig::builder;
    for (interval, dead) in [(0, 3000), (1000, 1000), (1000, 500)] {
        assert_eq!(
            b().heartbeat(hb(interval, dead)).build().err(),
            Some(LinkConfigError::Heartbeat {
                interval: Duration::from_millis(interval),
                dead_after: Duration::from_millis(dead),
            })
        );
    }
    // No heartbeat, or raw framing (which runs none), is not checked.
    assert!(b().heartbeat(None).build().is_ok());
    let raw = b().heartbeat(hb(0, 0)).framing(Framing::Raw).build();
    assert!(raw.is_ok());
}

#[test]
fn raw_framing_with_a_key_or_an_identity_is_refused() {
    let id = Identity::generate().unwrap();
    let comms = || LinkConfig::builder().python_comms();
    for built in [
        comms().psk([1; 32]).build(),
        comms().identity(&id).build(),
        comms().group_key(&GroupKey::from_bytes([2; 32])).build(),
    ] {
        assert_eq!(built.err(), Some(LinkConfigError::RawEncrypted));
    }
    let ok = comms().build().unwrap();
    assert_eq!(ok.framing(), Framing::Raw);
    assert_eq!(ok.byte_order(), ByteOrder::LittleEndian);
    assert_eq!(ok.heartbeat(), None);
}

#[test]
fn an_identity_is_made_once_and_shown_by_the_getters() {
    let id = Identity::generate().unwrap();
    let config = LinkConfig::builder().identity(&id).build().unwrap();
    assert!(config.has_identity() && config.is_secure());
    assert!(config.local_identity().is_some());
}

#[test]
fn each_zero_server_setting_is_refused_by_name() {
    let b = ServerConfig::builder;
    for (what, built) in [
        ("max_clients", b().max_clients(0).build()),
        ("max_pending", b().max_pending(0).build()),
        ("event_capacity", b().event_capacity(0).build()),
    ] {
        assert_eq!(built.err(), Some(LinkConfigError::Zero { what }));
    }
}

#[test]
fn each_invalid_client_setting_is_refused_with_its_error() {
    let b = ClientConfig::builder;
    let backoff = |initial_ms, max_ms| {
        Some(Backoff {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
        })
    };
    assert_eq!(
        b().connect_timeout(Duration::ZERO).build().err(),
        Some(LinkConfigError::Zero {
            what: "connect_timeout"
        })
    );
    assert_eq!(
        b().reconnect(backoff(0, 100)).build().err(),
        Some(LinkConfigError::Zero {
            what: "reconnect initial"
        })
    );
    assert_eq!(
        b().reconnect(backoff(200, 100)).build().err(),
        Some(LinkConfigError::BackoffRange {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(100),
        })
    );
    assert_eq!(
        b().reconnect(None)
            .connect_in_background(true)
            .build()
            .err(),
        Some(LinkConfigError::BackgroundNeedsReconnect)
    );
    // Without reconnection, an outage buffer of 0 and no background connect are fine.
    assert!(b().reconnect(None).outage_bytes(0).build().is_ok());
}
