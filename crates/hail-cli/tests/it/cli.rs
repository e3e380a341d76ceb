//! How the command behaves as a newcomer meets it: errors, signals, what it writes to a
//! pipe, and what `hail mcast` says.

use serde_json::Value;

use crate::proc::{Proc, assert_inert, group, hail, listen, mcast_receiver, on, run, run_on};

/// The one line of stderr, parsed as a JSON error object.
fn json_error(err: &str) -> Value {
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    let v: Value = serde_json::from_str(err.trim_end()).expect("a JSON error line");
    assert!(v["error"].is_string(), "{v}");
    v
}

#[test]
fn json_errors_are_one_object_with_a_kind() {
    let g = group();
    let (status, out, err) = run_on(&g, &["--json", "send", "nobody", "x", "--wait", "300ms"]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    let v = json_error(&err);
    assert_eq!(v["kind"], "not_found");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no device named nobody")
    );

    // Usage errors too, with exit code 2, whether clap or hail found them.
    for args in [
        &["--json", "frobnicate"][..],
        &["--json", "--interface", "127.0.0.1", "listen", "--name", ""],
    ] {
        let (status, out, err) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}\n{err}");
        assert_eq!(json_error(&err)["kind"], "usage", "{args:?}");
    }
}

#[test]
fn an_error_line_names_each_cause_once() {
    let (status, _, err) = run(&["--interface", "127.0.0.1", "listen", "--name", ""]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("hail: error: cannot start device"), "{err}");
    assert_eq!(
        err.matches("device name is empty").count(),
        1,
        "the cause is repeated: {err}"
    );
}

#[test]
fn group_port_0_is_refused_for_devices_and_for_mcast_send() {
    for args in [
        &["listen", "--name", "lamp"][..],
        &["send", "lamp", "x"],
        &["scout", "--once"],
        &["mcast", "send", "x"],
    ] {
        let (status, out, err) = run_on("239.255.72.95:0", args);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}\n{err}");
        assert!(err.contains("--group 239.255.72.95:0"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // `mcast recv` may pick a free port: it prints the one it got.
    let (status, out, err) = run_on(
        "239.255.72.95:0",
        &["mcast", "recv", "--count", "0", "--timeout", "1s"],
    );
    assert!(status.success(), "{out}\n{err}");
    let port = out
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok());
    assert!(port.is_some_and(|p| p != 0), "{out}");
}

#[test]
fn sighup_says_goodbye_like_sigterm() {
    let g = group();
    let watcher = listen(&g, "watcher", &[]);
    for (name, signal) in [("lamp", "HUP"), ("fan", "TERM")] {
        let lamp = listen(&g, name, &[]);
        watcher.expect_line(&format!("joined {name}"));
        lamp.signal(signal);
        let (status, _, err) = lamp.wait();
        assert!(status.success(), "{signal}: {err}");
        watcher.expect_line(&format!("left {name} (goodbye)"));
    }
    let scout = Proc::spawn(hail().args(on(&g, &["scout", "--name", "scout"])));
    scout.expect_line("scouting as scout");
    watcher.expect_line("joined scout");
    scout.signal("HUP");
    let (status, _, err) = scout.wait();
    assert!(status.success(), "{err}");
    watcher.expect_line("left scout (goodbye)");
}

#[test]
fn piped_stderr_gets_no_spinner_and_no_colour() {
    let g = group();
    let _lamp = listen(&g, "lamp", &[]);
    let (status, out, err) = run_on(&g, &["-vv", "ask", "lamp", "state?"]);
    assert!(status.success(), "{out}\n{err}");
    assert!(err.contains("DEBUG"), "-vv logs: {err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
    assert!(!err.contains('\r'), "a spinner in a pipe: {err:?}");
    assert!(
        !err.contains("waiting"),
        "a progress line in a pipe: {err:?}"
    );
}

/// Runs `hail args` with a terminal as its stdout and stderr (util-linux `script`), and
/// returns what the terminal got; `None` when `script` is not there.
fn on_a_terminal(args: &[String]) -> Option<String> {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_hail").to_owned())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let out = std::process::Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_terminal_gets_a_spinner_with_the_elapsed_time() {
    let g = group();
    let Some(tty) = on_a_terminal(&on(&g, &["send", "nobody", "x", "--wait", "1s"])) else {
        eprintln!("skipped: util-linux `script` is not installed, so no terminal to test on");
        return;
    };
    assert!(tty.contains("looking for nobody"), "{tty:?}");
    assert!(
        tty.contains("(0s)") || tty.contains("(1s)"),
        "elapsed: {tty:?}"
    );
    assert!(tty.contains("no device named nobody"), "{tty:?}");
}

#[test]
fn mcast_send_counts_the_bytes_on_the_wire() {
    let g = group();
    let (status, out, err) = run_on(&g, &["--passphrase", "p", "mcast", "send", "hello world!"]);
    assert!(status.success(), "{err}");
    assert!(
        out.starts_with("sent 12 bytes (57 on the wire, sealed) to "),
        "{out}"
    );
    let (status, out, err) = run_on(&g, &["mcast", "send", "hello world!"]);
    assert!(status.success(), "{err}");
    assert!(out.starts_with("sent 12 bytes (plaintext) to "), "{out}");
    let (status, out, err) = run_on(&g, &["--json", "--passphrase", "p", "mcast", "send", "hi"]);
    assert!(status.success(), "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (v["bytes"].as_u64(), v["wire_bytes"].as_u64()),
        (Some(2), Some(47))
    );
}

#[test]
fn mcast_recv_hints_only_what_it_counted() {
    // Three receivers side by side, each on a group of its own: one hears nothing; the
    // others hear another passphrase (dropped for a wrong key) and a plaintext sender (not
    // sealed, not a wrong key). Each waits out its whole timeout, since what it is asked
    // to count never arrives.
    let (g, g2, quiet) = (group(), group(), group());
    let nothing = mcast_receiver(&quiet, "p1", "300ms");
    let wrong_key = mcast_receiver(&g, "p1", "3s");
    let plain = mcast_receiver(&g2, "p1", "3s");
    let (status, _, err) = run_on(&g, &["--passphrase", "p2", "mcast", "send", "intruder"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = run_on(&g2, &["mcast", "send", "plain"]);
    assert!(status.success(), "{err}");

    // Nothing sent: nothing arrived, and no word of a wrong key.
    let (status, _, err) = nothing.wait();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("nothing arrived"), "{err}");
    assert!(!err.contains("wrong key"), "{err}");

    let (status, out, err) = wrong_key.wait();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("1 dropped for a wrong key"), "{err}");
    assert!(!out.contains("intruder"), "{out}");

    let (status, _, err) = plain.wait();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("1 dropped as not sealed"), "{err}");
    assert!(!err.contains("wrong key"), "{err}");
}

#[test]
fn mcast_help_says_what_mcast_does_not_what_devices_do() {
    let (status, out, err) = run(&["mcast", "--help"]);
    assert!(status.success(), "{err}");
    assert!(!out.contains("seals discovery"), "{out}");
    assert!(!out.contains("secures links"), "{out}");
    assert!(out.contains("every datagram is sealed"), "{out}");
    assert!(out.contains("45 bytes more on the wire"), "{out}");
    assert_inert("mcast --help", &out);
}

#[test]
fn listen_port_fixes_the_tcp_port_for_a_firewall_rule() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let g = group();
    let p = Proc::spawn(hail().args(on(
        &g,
        &["listen", "--name", "fan", "--port", &port.to_string()],
    )));
    let line = p.expect_line("listening as fan");
    assert!(line.contains(&format!(" on 127.0.0.1:{port},")), "{line}");
}

/// `--interface` by name, as users name interfaces (issue 17): a listener on `lo` by name
/// is reached by a sender on `lo` by name; an unknown name is a usage error that lists
/// the host's interfaces.
#[test]
fn interfaces_by_name_work_and_unknown_ones_list_what_exists() {
    let g = group();
    let lamp = Proc::spawn(hail().args([
        "--interface",
        "lo",
        "--group",
        &g,
        "listen",
        "--name",
        "lamp",
    ]));
    lamp.expect_line("listening as lamp");
    let (status, out, err) = run(&[
        "--interface",
        "lo",
        "--group",
        &g,
        "send",
        "lamp",
        "on",
        "--name",
        "switch",
    ]);
    assert!(status.success(), "{out}\n{err}");
    lamp.expect_line("message from switch: on");

    let (status, out, err) = run(&[
        "--interface",
        "no-such-if0",
        "--group",
        &g,
        "scout",
        "--once",
    ]);
    assert_eq!(status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("no-such-if0"), "{err}");
    assert!(
        err.contains("127.0.0.1"),
        "the host's interfaces are listed: {err}"
    );
}

/// Issue 17: `--interface lo` by name listened on 127.0.0.1 only. A device on an
/// interface named by name listens on every family it has, as the device's default does:
/// `[::]` (IPv4 too), advertising lo's IPv4 and IPv6 addresses, and IPv6 links reach it.
#[test]
fn an_interface_by_name_listens_on_both_families() {
    let dual =
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0");
    if !dual {
        eprintln!("skipped: this host makes no dual-stack [::] sockets");
        return;
    }
    let g = group();
    let lamp = Proc::spawn(hail().args([
        "--json",
        "--interface",
        "lo",
        "--group",
        &g,
        "listen",
        "--name",
        "lamp",
    ]));
    let line = lamp.expect_line("\"listening\"");
    let v: Value = serde_json::from_str(&line).expect("JSON");
    let address: std::net::SocketAddr = v["address"].as_str().unwrap().parse().unwrap();
    assert!(
        address.ip() == std::net::Ipv6Addr::UNSPECIFIED,
        "listens on [::], not lo's IPv4 address: {line}"
    );
    let port = address.port();
    let (status, out, err) = run_on(&g, &["scout", "--once", "--timeout", "1s", "--json"]);
    assert!(status.success(), "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let advertised: Vec<&str> = v["devices"][0]["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert!(
            advertised.contains(&want.as_str()),
            "{want} in {advertised:?}"
        );
    }
    std::net::TcpStream::connect(("::1", port)).expect("an IPv6 connection is accepted");
}
