//! A hostile peer (a device of the library, in this test) whose name and every string it
//! sends carry terminal sequences and invisible characters: what `hail listen`, `scout`,
//! `ask` and `call` print holds none of them raw.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use hail::prelude::*;

use crate::proc::{WAIT, assert_inert, listen, run_on};

/// A name that looks like "admin" but differs: a zero-width space and a right-to-left
/// override (hail-discovery already refuses control characters in names).
const HOSTILE_NAME: &str = "ad\u{200b}min\u{202e}";
/// What the hostile peer says: a carriage return and cursor movement that would rewrite
/// the line, an erase, an OSC that sets the window title, C1 controls.
const HOSTILE_TEXT: &str =
    "fine\r\u{1b}[1A\u{1b}[2Kjoined root\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}desrever";

/// Starts the hostile device on `group` (loopback), after checking that the library
/// refuses [`HOSTILE_NAME`], and answering every question with [`HOSTILE_TEXT`] (or failing with it).
async fn hostile(group: SocketAddr) -> (Device, DeviceEvents, String) {
    let start = |name: &str| {
        Device::builder(name)
            .group(group)
            .interface(Ipv4Addr::LOCALHOST)
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .start()
    };
    // hail-discovery refuses invisible characters in names (issue 16): only the contents
    // stay hostile; the escaping of names is unit-tested in `out.rs`.
    match start(HOSTILE_NAME).await {
        Err(DeviceError::Config(hail::discovery::ConfigError::InvalidName(
            hail::discovery::NameError::InvisibleCharacter('\u{200b}'),
        ))) => {}
        Err(e) => panic!("the hostile name is refused for its zero-width space, not: {e}"),
        Ok(_) => panic!("the hostile name {HOSTILE_NAME:?} was accepted"),
    }
    let (device, events) = start("evil").await.expect("start the hostile device");
    device
        .on_question(|_from, q| async move {
            if &q[..] == b"fail" {
                Err(HOSTILE_TEXT.to_owned())
            } else {
                Ok(Bytes::from_static(HOSTILE_TEXT.as_bytes()))
            }
        })
        .expect("one question handler");
    device
        .handlers()
        .bind("hostile", |_: String| async {
            Ok::<_, String>(HOSTILE_TEXT.to_owned())
        })
        .expect("bind");
    device
        .handlers()
        .bind("hostile_err", |_: String| async {
            Err::<String, _>(HOSTILE_TEXT.to_owned())
        })
        .expect("bind");
    let name = device.name().to_owned();
    (device, events, name)
}

#[test]
fn nothing_a_hostile_peer_sends_reaches_the_terminal_raw() {
    let g = crate::proc::group();
    let group: SocketAddr = g.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let lamp = listen(&g, "lamp", &[]);
    let (evil, mut events, name) = rt.block_on(hostile(group));

    // It joins, sends a message and asks a question; `hail listen` prints all three.
    rt.block_on(async {
        tokio::time::timeout(WAIT, async {
            while !evil.peers().iter().any(|p| p.name == "lamp") {
                events.recv().await;
            }
        })
        .await
        .expect("the hostile device sees lamp");
        for (_, r) in evil
            .send("lamp", Bytes::from_static(HOSTILE_TEXT.as_bytes()))
            .await
        {
            r.expect("send to lamp");
        }
        let answers = evil
            .ask(
                "lamp",
                Bytes::from_static(HOSTILE_TEXT.as_bytes()),
                Duration::from_secs(5),
            )
            .await;
        assert!(answers["lamp"].is_ok(), "{answers:?}");
    });
    let lines = lamp.expect_lines(&["joined", "message from", "question from"]);
    for line in &lines {
        assert_inert("hail listen", line);
    }
    let joined = lines.iter().find(|l| l.starts_with("joined")).unwrap();
    assert!(joined.starts_with(&format!("joined {name} (")), "{joined}");
    let message = lines.iter().find(|l| l.contains("message from")).unwrap();
    assert!(
        message.contains(r"fine\r\u{1b}[1A\u{1b}[2Kjoined root\u{1b}]0;pwned\u{7}"),
        "{message}"
    );

    // The table of `hail scout`, an answer, a failed answer, a call's result and a call's
    // error all come from the hostile peer.
    let (_, out, err) = run_on(&g, &["scout", "--once", "--timeout", "1s"]);
    assert_inert("hail scout", &out);
    assert_inert("hail scout's stderr", &err);
    assert!(
        out.lines().any(|l| l.starts_with(&*escaped(&name))),
        "{out}"
    );
    for question in ["state?", "fail"] {
        let (_, out, err) = run_on(&g, &["ask", &name, question]);
        assert_inert("hail ask", &out);
        assert_inert("hail ask's stderr", &err);
        assert!(out.contains(r"\u{1b}]0;pwned\u{7}"), "{out}");
    }
    let (status, out, err) = run_on(&g, &["call", &name, "hostile", "null"]);
    assert!(status.success(), "{err}");
    assert_inert("hail call", &out);
    let (status, out, err) = run_on(&g, &["call", &name, "hostile_err", "null"]);
    assert_eq!(status.code(), Some(1));
    assert_inert("hail call", &out);
    assert_inert("hail call's error", &err);
    assert!(err.contains(r"\u{1b}]0;pwned\u{7}"), "{err}");

    rt.block_on(evil.close());
}

/// How `hail` shows `name` (the escapes its output uses).
fn escaped(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '\u{200b}' | '\u{202e}' => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}
