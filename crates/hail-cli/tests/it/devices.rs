//! Listening devices and the commands that talk to them, each its own process.

use crate::proc::{Proc, group, hail, listen, mcast_receiver, on, run_on as hail_on};

#[test]
fn send_reaches_a_listener_by_name() {
    let g = group();
    let lamp = listen(&g, "lamp", &[]);
    let (status, out, err) = hail_on(&g, &["send", "lamp", "lights on", "--name", "switch"]);
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(out, "sent 9 bytes to lamp");
    // In this order: the join, the message, then the goodbye (the sender shut down
    // right after `send`).
    lamp.expect_lines(&["joined switch"]);
    lamp.expect_line("message from switch: lights on");
    lamp.expect_line("left switch (goodbye)");
}

#[test]
fn ask_two_listeners_prints_every_answer() {
    let g = group();
    let lamp = listen(&g, "lamp", &[]);
    let fan = listen(
        &g,
        "fan",
        &[
            "--answer-cmd",
            "echo \"$HAIL_FROM asked: $(cat)\" | tr a-z A-Z",
        ],
    );
    let (status, out, err) = hail_on(
        &g,
        &["ask", "lamp", "fan", "state?", "--name", "panel", "--json"],
    );
    assert!(status.success(), "{out}\n{err}");
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(answers.len(), 2, "{out}");
    assert_eq!(answers[0]["from"], "lamp");
    assert_eq!(answers[0]["answer"]["text"], "state?");
    assert_eq!(answers[1]["from"], "fan");
    assert_eq!(answers[1]["answer"]["text"], "PANEL ASKED: STATE?");
    lamp.expect_line("question from panel: state?");
    fan.expect_line("question from panel: state?");
}

#[test]
fn a_failing_answer_command_is_reported_and_exits_1() {
    let g = group();
    let _fan = listen(&g, "fan", &["--answer-cmd", "echo broken >&2; exit 3"]);
    let (status, out, err) = hail_on(&g, &["ask", "fan", "state?"]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        out.contains("fan: no answer: handler: answer command failed"),
        "{out}"
    );
    assert!(out.contains("broken"), "{out}");
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    assert!(
        err.starts_with("hail: error: 1 of 1 asked gave no answer"),
        "{err}"
    );
}

#[test]
fn call_echo_and_info_on_a_listener() {
    let g = group();
    let _lamp = listen(&g, "lamp", &[]);
    let (status, out, err) = hail_on(&g, &["call", "lamp", "echo", r#"{"level": [1, 2]}"#]);
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(out, r#"{"level":[1,2]}"#);
    let (status, out, err) = hail_on(&g, &["call", "lamp", "info", "null", "--json"]);
    assert!(status.success(), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["result"]["name"], "lamp");
    let (status, _, err) = hail_on(&g, &["call", "lamp", "nope", "null", "--timeout", "300ms"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("no handler for \"nope\""), "{err}");
}

#[test]
fn scout_once_lists_a_listening_device() {
    let g = group();
    let _lamp = listen(&g, "lamp", &[]);
    let (status, out, err) = hail_on(&g, &["scout", "--once", "--timeout", "1s", "--json"]);
    assert!(status.success(), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{out}");
    assert_eq!(devices[0]["name"], "lamp");
    assert!(
        devices[0]["addresses"][0]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

/// `--meta` is signed into the adverts and shown by `scout`; `--identity` keeps the id
/// across runs; a bad metadata key is a usage error.
#[test]
fn metadata_and_a_kept_identity_show_in_scout() {
    let g = group();
    let dir = std::env::temp_dir().join(format!("hail-cli-id-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let id_file = dir.join("lamp.id");
    let id_arg = id_file.to_str().unwrap();
    let scout = |g: &str| {
        let (status, out, err) = hail_on(g, &["scout", "--once", "--timeout", "1s", "--json"]);
        assert!(status.success(), "{out}\n{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        v["devices"][0].clone()
    };
    let lamp = listen(&g, "lamp", &["--meta", "role=light", "--identity", id_arg]);
    let first = scout(&g);
    assert_eq!(first["metadata"]["role"], "light", "{first}");
    drop(lamp);
    let _lamp = listen(&g, "lamp", &["--identity", id_arg]);
    let again = scout(&g);
    assert_eq!(again["id"], first["id"], "the id is the kept key's");
    let (status, _, err) = hail_on(&g, &["--meta", "Bad Key=x", "listen"]);
    assert_eq!(status.code(), Some(2), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_wrong_passphrase_finds_nobody_and_says_so() {
    let g = group();
    let lamp = Proc::spawn(
        hail()
            .args(on(&g, &["listen", "--name", "lamp"]))
            .env("HAIL_PASSPHRASE", "right passphrase"),
    );
    lamp.expect_line("listening as lamp");
    let (status, out, err) = hail_on(
        &g,
        &[
            "--passphrase",
            "wrong passphrase",
            "send",
            "lamp",
            "x",
            "--wait",
            "1s",
        ],
    );
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    assert!(err.contains("no device named lamp found"), "{err}");
    assert!(err.contains("same passphrase"), "{err}");
    // The right passphrase gets through.
    let (status, out, err) = Proc::spawn(
        hail()
            .args(on(&g, &["send", "lamp", "x"]))
            .env("HAIL_PASSPHRASE", "right passphrase"),
    )
    .wait();
    assert!(status.success(), "{out}\n{err}");
}

#[test]
fn mcast_send_reaches_recv_and_a_wrong_passphrase_does_not() {
    let g = group();
    let rx = mcast_receiver(&g, "p1", "30s");
    let (status, out, err) = hail_on(&g, &["--passphrase", "p2", "mcast", "send", "intruder"]);
    assert!(status.success(), "{out}\n{err}");
    let (status, out, err) = hail_on(&g, &["--passphrase", "p1", "mcast", "send", "hello"]);
    assert!(status.success(), "{out}\n{err}");
    let (status, out, err) = rx.wait();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.ends_with(": hello"), "{out}");
    assert!(!out.contains("intruder"), "{out}");
}
