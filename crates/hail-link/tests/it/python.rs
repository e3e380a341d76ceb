//! Python Comms (`ReliableCommunication`) compatibility: little-endian u32 + JSON.

use std::process::Stdio;

use hail_link::{LinkConfig, Server, ServerConfig, ServerEvent};
use hail_wire::Json;
use serde_json::{Value, json};

use crate::common::{LIMIT, lo, server_event};

/// What a Python Comms client does on the wire: `struct.pack("<I", len)` + UTF-8 JSON,
/// reads looped until whole (python3 standard library only).
const PY_CLIENT: &str = r#"
import json, socket, struct, sys
def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("closed early")
        b += c
    return b
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(3):
    body = json.dumps({"n": i, "text": "héllo"}).encode()
    s.sendall(struct.pack("<I", len(body)) + body)
for i in range(3):
    (n,) = struct.unpack("<I", recv_exact(s, 4))
    print(json.dumps(json.loads(recv_exact(s, n).decode())))
s.close()
"#;

#[tokio::test]
async fn python_comms_client_exchanges_json_with_a_hail_server() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: python3 not found");
        return;
    }
    let cfg = ServerConfig::builder()
        .link(LinkConfig::builder().python_comms().build().unwrap())
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(lo(), cfg, Json::<Value>::python_style())
        .await
        .unwrap();
    let port = server.local_addr().port().to_string();
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", PY_CLIENT, &port])
            .stdout(Stdio::piped())
            .output()
            .unwrap()
    });
    let mut got = 0;
    while got < 3 {
        match server_event(&mut events).await {
            ServerEvent::Connected { .. } => {}
            ServerEvent::Message { id, msg } => {
                assert_eq!(msg["n"], got);
                assert_eq!(msg["text"], "héllo");
                server
                    .send_to(id, json!({"echo": msg["n"], "from": "hail"}))
                    .await
                    .unwrap();
                got += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let output = tokio::time::timeout(LIMIT, child).await.unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    let out = String::from_utf8(output.stdout).unwrap();
    let replies: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 3);
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["echo"], i);
        assert_eq!(r["from"], "hail");
    }
    match server_event(&mut events).await {
        ServerEvent::Closed { .. } => {}
        other => panic!("{other:?}"),
    }
}

/// A Python Comms style server: accepts one client, echoes each JSON message back with a
/// field added, three times.
const PY_SERVER: &str = r#"
import json, socket, struct, sys
def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("closed early")
        b += c
    return b
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
c, _ = srv.accept()
for i in range(3):
    (n,) = struct.unpack("<I", recv_exact(c, 4))
    msg = json.loads(recv_exact(c, n).decode())
    msg["seen_by"] = "python"
    body = json.dumps(msg).encode()
    c.sendall(struct.pack("<I", len(body)) + body)
c.close()
"#;

#[tokio::test]
async fn hail_client_exchanges_json_with_a_python_comms_server() {
    use std::io::BufRead;

    use hail_link::{Client, ClientConfig, ClientEvent};

    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: python3 not found");
        return;
    }
    let mut child = std::process::Command::new("python3")
        .args(["-c", PY_SERVER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let port: u16 = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line.trim().parse().unwrap()
    })
    .await
    .unwrap();
    let cfg = ClientConfig::builder()
        .link(LinkConfig::builder().python_comms().build().unwrap())
        .reconnect(None)
        .build()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (client, mut events) = Client::connect(addr, cfg, Json::<Value>::python_style())
        .await
        .unwrap();
    for i in 0..3 {
        client.send(json!({"n": i})).await.unwrap();
    }
    let mut got = 0;
    while got < 3 {
        match crate::common::client_event(&mut events).await {
            ClientEvent::Connected { .. } => {}
            ClientEvent::Message(m) => {
                assert_eq!(m["n"], got);
                assert_eq!(m["seen_by"], "python");
                got += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

/// Python Comms' "string" mode on a `Json` link: each frame the codec refuses is an event
/// in order with the messages and a server- or client-level count, and the link goes on.
#[tokio::test(start_paused = true)]
async fn undecodable_frames_are_reported_in_order_and_counted() {
    use bytes::Bytes;
    use hail_link::memory::MemoryNetwork;
    use hail_link::{Client, ClientConfig, ClientEvent, Transport};
    use hail_wire::Binary;

    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .python_comms()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let (server, mut sev) = Server::bind(
        "10.0.0.1:7000".parse().unwrap(),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Json::<Value>::new(),
    )
    .await
    .unwrap();
    // The "string"-mode peer: plain UTF-8 that is not JSON, then a JSON value.
    let (peer, _peer_events) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    peer.send(Bytes::from_static(b"hello there")).await.unwrap();
    peer.send(Bytes::from_static(b"{\"n\":1}")).await.unwrap();
    let id = loop {
        match server_event(&mut sev).await {
            ServerEvent::Connected { .. } => {}
            ServerEvent::Undecodable { id, error } => {
                assert!(!error.is_empty());
                break id;
            }
            other => panic!("the undecodable frame comes first: {other:?}"),
        }
    };
    match server_event(&mut sev).await {
        ServerEvent::Message { id: from, msg } => {
            assert_eq!(from, id);
            assert_eq!(msg, json!({"n": 1}));
        }
        other => panic!("then the message: {other:?}"),
    }
    assert_eq!(server.stats().undecodable, 1);

    // The other way: a `Json` client gets a string-mode frame from a raw server.
    let (raw, mut rev) = Server::bind(
        "10.0.0.2:7000".parse().unwrap(),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let (client, mut cev) = Client::connect(
        raw.local_addr(),
        ClientConfig::builder().link(link).build().unwrap(),
        Json::<Value>::new(),
    )
    .await
    .unwrap();
    let rid = match server_event(&mut rev).await {
        ServerEvent::Connected { id, .. } => id,
        other => panic!("{other:?}"),
    };
    raw.send_to(rid, Bytes::from_static(b"plain words"))
        .await
        .unwrap();
    raw.send_to(rid, Bytes::from_static(b"[1,2]"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(LIMIT, cev.recv())
            .await
            .expect("events")
        {
            Some(ClientEvent::Connected { .. }) => {}
            Some(ClientEvent::Undecodable { .. }) => seen.push("undecodable"),
            Some(ClientEvent::Message(v)) => {
                assert_eq!(v, json!([1, 2]));
                seen.push("message");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, ["undecodable", "message"]);
    assert_eq!(client.stats().undecodable, 1);
}
