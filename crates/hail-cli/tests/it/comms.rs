//! `hail comms` against a Python Comms peer: `tests/python_comms/peer.py`, written from the
//! protocol description (u32 little-endian length + JSON, UTF-8 text or bytes), standard
//! library only. Both roles, both directions, broadcast to two clients, the modes, and a
//! reconnect across a restart of the Python server. Loopback only; without `python3` each
//! test prints why it skips.

use std::process::Command;

use serde_json::{Value, json};

use crate::proc::{Proc, assert_inert, hail};

/// `python3 peer.py ARGS`, or `None` (said on stderr) when there is no `python3`.
fn peer(args: &[&str]) -> Option<Proc> {
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        eprintln!(
            "skipped: python3 is not installed (`.ci/run` installs it), so there is no \
             Python Comms peer to talk to"
        );
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_comms/peer.py");
    Some(Proc::spawn_with_stdin(
        Command::new("python3").arg(script).args(args),
    ))
}

/// The next JSON line of `p` whose `event` is `event`.
fn next(p: &Proc, event: &str) -> Value {
    loop {
        // Python writes `"event": "x"`, hail `"event":"x"`: match the value, then check.
        let line = p.expect_line(&format!("\"{event}\""));
        let v: Value = serde_json::from_str(&line).expect("a JSON line");
        if v["event"] == event {
            return v;
        }
    }
}

/// `hail --json comms listen --port 0 --format F` on loopback, and its port.
fn hail_server(format: &str, json_out: bool) -> (Proc, u16) {
    let mut args = vec!["--interface", "127.0.0.1", "comms", "listen", "--port", "0"];
    args.extend(["--format", format]);
    if json_out {
        args.insert(0, "--json");
        let p = Proc::spawn_with_stdin(hail().args(&args));
        let v = next(&p, "listening");
        let port = v["address"].as_str().unwrap().rsplit(':').next().unwrap();
        let port = port.parse().unwrap();
        (p, port)
    } else {
        let p = Proc::spawn_with_stdin(hail().args(&args));
        let line = p.expect_line("listening on 127.0.0.1:");
        let port = line
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("a port");
        (p, port)
    }
}

/// A Python Comms client of `port`, once connected.
fn python_client(port: u16, format: &str) -> Option<Proc> {
    let c = peer(&["client", "--port", &port.to_string(), "--format", format])?;
    next(&c, "connected");
    Some(c)
}

/// A Python Comms server on `port` (0: a free one), once listening; and its port.
fn python_server(port: u16, format: &str) -> Option<(Proc, u16)> {
    let s = peer(&["server", "--port", &port.to_string(), "--format", format])?;
    let v = next(&s, "listening");
    let port = v["port"].as_u64().expect("a port") as u16;
    Some((s, port))
}

#[test]
fn hail_listen_talks_to_two_python_clients_both_ways_and_broadcasts() {
    let (hail, port) = hail_server("json", true);
    let Some(alice) = python_client(port, "json") else {
        return;
    };
    let a_id = next(&hail, "connected")["client"].clone();
    let bob = python_client(port, "json").expect("python3 was there a moment ago");
    let b_id = next(&hail, "connected")["client"].clone();
    assert_ne!(a_id, b_id);

    alice.send_line(r#"{"from": "alice", "n": 1}"#);
    let m = next(&hail, "message");
    assert_eq!(
        (&m["client"], &m["message"]),
        (&a_id, &json!({"json": {"from": "alice", "n": 1}}))
    );
    bob.send_line(r#"{"from": "bob", "list": [1, 2.5, null]}"#);
    let m = next(&hail, "message");
    assert_eq!(m["client"], b_id);
    assert_eq!(
        m["message"]["json"],
        json!({"from": "bob", "list": [1, 2.5, null]})
    );

    // One line on hail's stdin: a broadcast to both.
    hail.send_line(r#"{"news": "hello, both", "unicode": "é"}"#);
    for client in [&alice, &bob] {
        let m = next(client, "message");
        assert_eq!(m["message"], json!({"news": "hello, both", "unicode": "é"}));
    }

    // A client that leaves is reported.
    alice.close_stdin();
    let c = next(&hail, "closed");
    assert_eq!(c["client"], a_id);
    assert_eq!(c["reason"], "the peer closed the connection");
}

#[test]
fn hail_connect_talks_to_a_python_server_and_reconnects_after_its_restart() {
    let Some((server, port)) = python_server(0, "json") else {
        return;
    };
    let addr = format!("127.0.0.1:{port}");
    let hail = Proc::spawn_with_stdin(hail().args(["--json", "comms", "connect", &addr]));
    next(&hail, "connected");
    next(&server, "connected");

    hail.send_line(r#"{"ping": 1}"#);
    assert_eq!(next(&server, "message")["message"], json!({"ping": 1}));
    server.send_line(r#"{"pong": 1}"#);
    assert_eq!(
        next(&hail, "message")["message"],
        json!({"json": {"pong": 1}})
    );

    // Python Comms' `stop()`: the server closes; hail's client notices and keeps trying.
    server.close_stdin();
    let (status, _, err) = server.wait();
    assert!(status.success(), "{err}");
    next(&hail, "disconnected");

    let (server, again) = python_server(port, "json").expect("python3 is still there");
    assert_eq!(again, port);
    next(&hail, "connected");
    next(&server, "connected");
    hail.send_line(r#"{"ping": 2}"#);
    assert_eq!(next(&server, "message")["message"], json!({"ping": 2}));
    server.send_line(r#"{"pong": 2}"#);
    assert_eq!(
        next(&hail, "message")["message"],
        json!({"json": {"pong": 2}})
    );

    // The end of hail's stdin ends it, after what it was given went out.
    hail.send_line(r#"{"bye": true}"#);
    hail.close_stdin();
    let (status, _, err) = hail.wait();
    assert!(status.success(), "{err}");
    assert_eq!(next(&server, "message")["message"], json!({"bye": true}));
    next(&server, "closed");
}

#[test]
fn string_mode_both_ways_escaped_for_a_human() {
    let (hail, port) = hail_server("string", false);
    // The peer takes a JSON string literal per line in string mode: any character fits.
    let Some(client) = python_client(port, "string") else {
        return;
    };
    hail.expect_line("connected from 127.0.0.1:");
    client.send_line(r#""héllo wörld""#);
    hail.expect_line("message from client #1: héllo wörld");

    // What a terminal would obey arrives as text to look at: a line rewritten by CR, a
    // cleared screen, a window title, a right-to-left override.
    client.send_line(r#""ok\rforged\u001b[2J\u001b]0;pwned\u0007 \u202eevil""#);
    let line = hail.expect_line("forged");
    assert_inert("hail comms output", &line);
    assert!(
        line.ends_with(r"ok\rforged\u{1b}[2J\u{1b}]0;pwned\u{7} \u{202e}evil"),
        "{line}"
    );

    hail.send_line("à bientôt");
    assert_eq!(next(&client, "message")["message"], "à bientôt");
}

#[test]
fn binary_mode_carries_any_bytes_and_a_mode_mismatch_is_reported() {
    let (hail, port) = hail_server("binary", true);
    let Some(client) = python_client(port, "binary") else {
        return;
    };
    next(&hail, "connected");
    client.send_line("ff00fe");
    assert_eq!(next(&hail, "message")["message"], json!({"hex": "ff00fe"}));
    client.send_line("686921");
    assert_eq!(next(&hail, "message")["message"], json!({"text": "hi!"}));
    hail.send_line("abc");
    assert_eq!(next(&client, "message")["message"], "616263");
    drop(client);

    // A string-mode Python client on a JSON hail: its frames do not decode; hail says so.
    let (hail, port) = hail_server("json", true);
    let client = python_client(port, "string").expect("python3 is still there");
    next(&hail, "connected");
    client.send_line(r#""not json""#);
    let u = next(&hail, "undecodable");
    assert_eq!(
        (u["frames"].as_u64(), u["format"].as_str()),
        (Some(1), Some("json"))
    );
}
