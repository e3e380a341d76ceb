//! Client limit, slow consumers, floods (dead peers: `timing.rs`).

use std::collections::HashSet;

use bytes::Bytes;
use hail_link::{
    Client, ClientConfig, CloseReason, LinkConfig, LinkError, RefuseReason, Server, ServerConfig,
    ServerEvent,
};
use hail_wire::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{HELLO, LIMIT, WELCOME, client_message, lo, rss_bytes, server_event, wait_for};

async fn raw_hail_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(HELLO).await.unwrap();
    let mut w = [0u8; 6];
    s.read_exact(&mut w).await.unwrap();
    assert_eq!(&w, WELCOME);
    s
}

#[tokio::test]
async fn max_clients_refuses_the_extra_one_with_a_reason() {
    let cfg = ServerConfig::builder().max_clients(3).build().unwrap();
    let (server, mut events) = Server::bind(lo(), cfg, Binary).await.unwrap();
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            Client::connect(addr, ClientConfig::default(), Binary)
                .await
                .unwrap(),
        );
    }
    let err = Client::connect(addr, ClientConfig::default(), Binary)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LinkError::Refused(RefuseReason::ServerFull)),
        "{err:?}"
    );
    assert_eq!(server.stats().refused_full, 1);
    assert_eq!(server.clients().len(), 3);
    // The three keep working both ways.
    for (c, _) in &clients {
        c.send(Bytes::from_static(b"still here")).await.unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        if let ServerEvent::Message { id, msg } = server_event(&mut events).await {
            assert_eq!(&msg[..], b"still here");
            seen.insert(id);
        }
    }
    assert_eq!(
        server.broadcast(Bytes::from_static(b"ok")).unwrap().queued,
        3
    );
    for (_, ev) in &mut clients {
        assert_eq!(&client_message(ev).await[..], b"ok");
    }
    // A slot frees up when one leaves.
    let (first, _) = clients.remove(0);
    first.close().await;
    loop {
        if let ServerEvent::Closed { .. } = server_event(&mut events).await {
            break;
        }
    }
    Client::connect(addr, ClientConfig::default(), Binary)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_and_the_others_get_everything() {
    const OTHERS: usize = 99;
    const MAX_MESSAGES: u32 = 50_000;
    let queue = 64 * 1024;
    let link = LinkConfig::builder()
        .heartbeat(None)
        .queue_bytes(queue)
        .build()
        .unwrap();
    let cfg = ServerConfig::builder().link(link.clone()).build().unwrap();
    let (server, mut events) = Server::bind(lo(), cfg, Binary).await.unwrap();
    let addr = server.local_addr();

    // The slow one: a tiny receive window, says hello, then never reads.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = sock.connect(addr).await.unwrap();
    slow.write_all(HELLO).await.unwrap();
    let ServerEvent::Connected { id: slow_id, .. } = server_event(&mut events).await else {
        panic!()
    };

    let mut readers = Vec::new();
    let mut clients = Vec::new();
    for i in 0..OTHERS {
        let (c, mut ev) = Client::connect(
            addr,
            ClientConfig::builder().link(link.clone()).build().unwrap(),
            Binary,
        )
        .await
        .unwrap();
        clients.push(c);
        readers.push(tokio::spawn(async move {
            let mut n = 0u32;
            loop {
                let m = client_message(&mut ev).await;
                if &m[..] == b"end" {
                    return n;
                }
                assert_eq!(&m[..4], &n.to_be_bytes()[..], "client {i} in order");
                n += 1;
            }
        }));
    }
    while server.clients().len() < OTHERS + 1 {
        tokio::task::yield_now().await;
    }
    let events_task = tokio::spawn(async move {
        loop {
            match server_event(&mut events).await {
                ServerEvent::Closed { id, reason } => return (id, reason),
                ServerEvent::Message { .. } | ServerEvent::Connected { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    });

    // Broadcast until the slow client's queue overflows (the kernel absorbs the first
    // megabytes), bounded; then a few more to show the others keep going.
    let body = vec![7u8; 1024];
    let mut max_queued = 0;
    let mut slow_at = None;
    let mut sent = 0u32;
    while sent < MAX_MESSAGES && slow_at.is_none_or(|at| sent < at + 100) {
        let mut msg = sent.to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        let report = server.broadcast(Bytes::from(msg)).unwrap();
        sent += 1;
        for id in &report.slow {
            assert_eq!(*id, slow_id, "only the slow client is ever slow");
            slow_at.get_or_insert(sent);
        }
        max_queued = max_queued.max(server.stats().queued_bytes);
        // The application paces itself on the healthy clients (backpressure it can see).
        while server
            .clients()
            .iter()
            .filter(|(id, _)| *id != slow_id)
            .any(|(id, _)| {
                server
                    .connection(*id)
                    .is_some_and(|c| c.queued_bytes() > queue / 2)
            })
        {
            tokio::task::yield_now().await;
        }
    }
    assert!(slow_at.is_some(), "the slow client's queue filled up");
    server.broadcast(Bytes::from_static(b"end")).unwrap();
    let (id, reason) = tokio::time::timeout(LIMIT, events_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, slow_id);
    assert!(matches!(reason, CloseReason::SlowConsumer), "{reason:?}");
    for r in readers {
        assert_eq!(tokio::time::timeout(LIMIT, r).await.unwrap().unwrap(), sent);
    }
    let stats = server.stats();
    assert_eq!(stats.slow_disconnects, 1);
    // Memory bound: every queue holds at most its bound (one message of slack).
    assert!(
        max_queued <= (OTHERS + 1) * (queue + 2048),
        "queued {max_queued} bytes"
    );
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_stalled_max_size_frames_stays_bounded() {
    const FLOOD: usize = 200;
    let link = LinkConfig::builder().heartbeat(None).build().unwrap();
    let (server, mut events) = Server::bind(
        lo(),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let rss_before = rss_bytes();

    // Each: hello, then a header announcing a maximum-size frame, 1 KiB of it, then silence.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let mut s = raw_hail_client(addr).await;
        s.write_all(&hail_wire::DEFAULT_MAX_FRAME_LEN.to_be_bytes())
            .await
            .unwrap();
        s.write_all(&[0u8; 1024]).await.unwrap();
        flood.push(s);
    }
    wait_for("every flood connection admitted", || {
        server.clients().len() == FLOOD
    })
    .await;
    // Every stalled frame's kilobyte (and its header) is in the server's receive buffers.
    let stalled = (FLOOD * (4 + 1024)) as u64;
    wait_for("the flood's bytes read", || {
        let ids = server.clients();
        let read: u64 = ids
            .iter()
            .filter_map(|(id, _)| server.connection(*id))
            .map(|c| c.stats().bytes_received)
            .sum();
        read >= stalled
    })
    .await;

    // A normal client still gets a quick answer.
    let (client, mut cev) = Client::connect(
        addr,
        ClientConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let echo = tokio::spawn(async move {
        loop {
            match server_event(&mut events).await {
                ServerEvent::Message { id, msg } => return (id, msg),
                _ => continue,
            }
        }
    });
    // Answered among the flood, not stuck behind it (how fast is the benchmarks' job).
    client.send(Bytes::from_static(b"ping")).await.unwrap();
    let (id, msg) = tokio::time::timeout(LIMIT, echo).await.unwrap().unwrap();
    server.send_to(id, msg).await.unwrap();
    assert_eq!(&client_message(&mut cev).await[..], b"ping");

    let stats = server.stats();
    assert_eq!(stats.clients, FLOOD + 1);
    assert!(
        stats.rx_buffered_bytes < 64 << 20,
        "receive buffers hold {} bytes",
        stats.rx_buffered_bytes
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    drop(flood);
}

/// Out of file descriptors (a peer holding connections in their handshake until the
/// server's open-file limit): each failed `accept` is counted in
/// `ServerStats::accept_errors`, the accept loop keeps running, and the server admits a client
/// again once the descriptors are free. In a child process, whose open-file limit is
/// lowered to 40 (the limit is per process); its connections come from this process.
#[cfg(unix)]
#[test]
fn accept_errors_are_counted_and_the_server_recovers_in_a_child() {
    use std::io::{BufRead, BufReader, Write};
    const CHILD: &str = "HAIL_LINK_NOFILE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        nofile_child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "limits::accept_errors_are_counted_and_the_server_recovers_in_a_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next = |key: &str| -> String {
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(v) = line.strip_prefix(key) {
                return v.trim().to_owned();
            }
        }
        panic!("the child ended before it said {key}");
    };
    let addr: std::net::SocketAddr = next("addr=").parse().unwrap();
    // Connections that never start their handshake: each holds one of the child's
    // descriptors until the handshake deadline.
    let held: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let errors: u64 = next("accept_errors=").parse().unwrap();
    assert!(errors > 0, "{errors}");
    drop(held);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "released").unwrap();
    let admitted: u64 = next("admitted=").parse().unwrap();
    assert_eq!(
        admitted, 1,
        "a client admitted after the descriptors came back"
    );
    assert!(child.wait().unwrap().success());
}

/// The child's side of the test above.
#[cfg(unix)]
fn nofile_child() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 40, hard).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (server, _events) = Server::bind(lo(), ServerConfig::default(), Binary)
            .await
            .unwrap();
        // The parent reads these lines.
        eprintln!("addr={}", server.local_addr());
        wait_for("a failed accept", || server.stats().accept_errors > 0).await;
        eprintln!("accept_errors={}", server.stats().accept_errors);
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
        })
        .await
        .unwrap();
        // The parent's connections are closed: their handshakes end and free their
        // descriptors; a real client is admitted again.
        let before = server.stats().accepted;
        // The client is in this process too: until the server has seen the parent's
        // connections close, its own socket may find no descriptor free (EMFILE), so it
        // tries again until one is.
        let addr = server.local_addr();
        let mut socket = None;
        wait_for("a free descriptor for the client", || {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => socket = Some(s),
                Err(e) => assert_eq!(e.raw_os_error(), Some(24), "only EMFILE: {e}"),
            }
            socket.is_some()
        })
        .await;
        let socket = socket.expect("connected");
        socket.set_nonblocking(true).unwrap();
        let mut s = TcpStream::from_std(socket).unwrap();
        s.write_all(HELLO).await.unwrap();
        let mut w = [0u8; 6];
        s.read_exact(&mut w).await.unwrap();
        assert_eq!(&w, WELCOME);
        let _client = s;
        wait_for("the client admitted", || server.stats().accepted > before).await;
        eprintln!("admitted={}", server.stats().accepted - before);
    });
}
