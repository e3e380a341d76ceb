//! `link/*`: framed TCP over loopback: hail-link against std sockets (64 B, 1 KiB and
//! 64 KiB messages, the last past `hail-link`'s own-allocation size), sealed against
//! plaintext, sealed against std sockets doing the same AES-256-GCM work, broadcast
//! fan-out, memory per idle connection, and the cost of connecting with identities (`XX`,
//! `XXpsk0`) against `NNpsk0`.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hail_crypto::Identity;
use hail_link::{
    Client, ClientConfig, ClientEvent, ClientEvents, Connection, LinkConfig, Server, ServerConfig,
    ServerEvent, ServerEvents,
};
use hail_wire::Binary;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use tokio::runtime::Runtime;

use crate::harness::{Better, Ctx, Record, interleaved_rate, median, rss};

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

fn runtime() -> anyhow::Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Runs the `link/*` benchmarks.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let budget = Duration::from_millis(ctx.pick(1500, 5000));
    let rt = runtime()?;
    let mut out = Vec::new();
    // First, while the heap is still small: later benchmarks leave freed memory behind
    // that new connections would reuse without growing the RSS.
    if ctx.wants("link/idle-memory") {
        out.push(idle_memory(&rt, ctx.pick(1000, 4000))?);
    }
    if ctx.wants("link/throughput") {
        for (label, size, n) in [
            ("64B", 64, 200_000),
            ("1KiB", 1024, 50_000),
            ("64KiB", 64 * 1024, 4_000),
            ("1MiB", 1 << 20, 300),
        ] {
            // One size alone can be asked for (a profile of one size, say).
            if ctx.wants(&format!("link/throughput-{label}")) {
                out.push(throughput(&rt, budget, label, size, n, Send::Copied)?);
            }
        }
    }
    if ctx.wants("link/bytes") {
        for (label, size, n) in [
            ("64B", 64, 200_000),
            ("1KiB", 1024, 50_000),
            ("64KiB", 64 * 1024, 4_000),
        ] {
            if ctx.wants(&format!("link/bytes-{label}")) {
                out.push(throughput(&rt, budget, label, size, n, Send::Owned)?);
            }
        }
    }
    if ctx.wants("link/secure-1KiB") {
        out.push(secure(&rt, budget)?);
    }
    if ctx.wants("link/secure-vs-crypto-1KiB") {
        out.extend(secure_vs_crypto(&rt, budget)?);
    }
    if ctx.wants("link/broadcast") {
        out.push(broadcast(&rt, budget, ctx.pick(20, 100))?);
    }
    if ctx.wants("link/connect") {
        out.extend(connect(&rt, budget)?);
    }
    Ok(out)
}

/// A hail-link client and the server end, connected, plaintext or sealed.
pub(crate) struct Pair {
    _server: Server<Binary>,
    events: Option<ServerEvents<Bytes>>,
    client: Client<Binary>,
    _client_events: ClientEvents<Bytes>,
}

impl Pair {
    /// Whether the connection seals its frames.
    pub(crate) fn is_secure(&self) -> bool {
        self.client.connection().is_some_and(|c| c.is_secure())
    }
}

pub(crate) fn pair(rt: &Runtime, link: LinkConfig) -> anyhow::Result<Pair> {
    pair_of(rt, link.clone(), link)
}

/// [`pair`] with a link configuration for each end (identities of their own, say).
pub(crate) fn pair_of(
    rt: &Runtime,
    server_link: LinkConfig,
    client_link: LinkConfig,
) -> anyhow::Result<Pair> {
    rt.block_on(async {
        let (server, mut events) = Server::bind(
            lo(),
            ServerConfig::builder().link(server_link).build()?,
            Binary,
        )
        .await?;
        let (client, client_events) = Client::connect(
            server.local_addr(),
            ClientConfig::builder().link(client_link).build()?,
            Binary,
        )
        .await?;
        match events.recv().await {
            Some(ServerEvent::Connected { .. }) => {}
            other => anyhow::bail!("expected Connected, got {other:?}"),
        }
        Ok(Pair {
            _server: server,
            events: Some(events),
            client,
            _client_events: client_events,
        })
    })
}

/// How [`one_way`] hands each message to the link.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Send {
    /// `Connection::send(&Bytes)`: copied into the send queue.
    Copied,
    /// `Connection::send_bytes(&[], Bytes)`: kept by reference from
    /// `hail_link::SEND_COPY_BELOW` on (the message's `Bytes` cloned: a reference count).
    Owned,
}

/// Sends `n` messages from the client and waits until the server has delivered them all.
/// Sender and receiver are both tasks on the runtime, as in an application.
pub(crate) fn one_way(rt: &Runtime, p: &mut Pair, msg: &Bytes, n: usize) {
    one_way_by(rt, p, msg, n, Send::Copied);
}

/// [`one_way`], each message handed over as `how` says.
pub(crate) fn one_way_by(rt: &Runtime, p: &mut Pair, msg: &Bytes, n: usize, how: Send) {
    let mut events = p.events.take().expect("events");
    let client = p.client.connection().expect("connected");
    let m = msg.clone();
    let events = rt.block_on(async move {
        let sender = tokio::spawn(async move {
            for _ in 0..n {
                match how {
                    Send::Copied => client.send(&m).await,
                    Send::Owned => client.send_bytes(&[], m.clone()).await,
                }
                .expect("send");
            }
        });
        let receiver = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = Vec::with_capacity(256);
            while got < n {
                assert!(
                    events.recv_many(&mut buf, 256).await > 0,
                    "server events ended"
                );
                for ev in buf.drain(..) {
                    if let ServerEvent::Message { .. } = ev {
                        got += 1;
                    }
                }
            }
            events
        });
        sender.await.expect("sender");
        receiver.await.expect("receiver")
    });
    p.events = Some(events);
}

/// The baseline: std sockets, a 64 KiB `BufWriter` writing header and body per message,
/// a 64 KiB `BufReader` with `read_exact` on the other end.
struct RawPair {
    tx: TcpStream,
    rx: BufReader<TcpStream>,
}

fn raw_pair() -> anyhow::Result<RawPair> {
    let listener = TcpListener::bind(lo())?;
    let tx = TcpStream::connect(listener.local_addr()?)?;
    tx.set_nodelay(true)?;
    let (rx, _) = listener.accept()?;
    Ok(RawPair {
        tx,
        rx: BufReader::with_capacity(64 * 1024, rx),
    })
}

fn raw_one_way(p: &mut RawPair, body: &[u8], n: usize) {
    let tx = p.tx.try_clone().expect("clone socket");
    // One buffer for every message (a reader of its own protocol reuses one).
    let mut buf = vec![0u8; body.len().max(1 << 16)];
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::with_capacity(64 * 1024, tx);
        for _ in 0..n {
            w.write_all(&(body.len() as u32).to_be_bytes())
                .expect("write");
            w.write_all(&body).expect("write");
        }
        w.flush().expect("flush");
    });
    let mut head = [0u8; 4];
    for _ in 0..n {
        p.rx.read_exact(&mut head).expect("read");
        let len = u32::from_be_bytes(head) as usize;
        p.rx.read_exact(&mut buf[..len]).expect("read");
    }
    writer.join().expect("writer");
}

fn throughput(
    rt: &Runtime,
    budget: Duration,
    label: &str,
    size: usize,
    n: usize,
    how: Send,
) -> anyhow::Result<Record> {
    let msg = Bytes::from(vec![0xa5u8; size]);
    let mut ours = pair(rt, LinkConfig::default())?;
    let mut raw = raw_pair()?;
    let (a, b) = interleaved_rate(
        budget,
        n as u64,
        || one_way_by(rt, &mut ours, &msg, n, how),
        || raw_one_way(&mut raw, &msg, n),
    );
    let name = match how {
        Send::Copied => "throughput",
        Send::Owned => "bytes",
    };
    Ok(Record::new(
        format!("link/{name}-{label}"),
        a,
        b,
        "msg/s",
        Better::Higher,
    ))
}

fn secure(rt: &Runtime, budget: Duration) -> anyhow::Result<Record> {
    let n = 50_000;
    let msg = Bytes::from(vec![0xa5u8; 1024]);
    let mut sealed = pair(rt, LinkConfig::builder().psk([0x42; 32]).build()?)?;
    let mut plain = pair(rt, LinkConfig::default())?;
    let (a, b) = interleaved_rate(
        budget,
        n as u64,
        || one_way(rt, &mut sealed, &msg, n),
        || one_way(rt, &mut plain, &msg, n),
    );
    Ok(Record::new(
        "link/secure-1KiB",
        a,
        b,
        "msg/s",
        Better::Higher,
    ))
}

/// Bytes a sealed record adds to its plaintext: a u16 length and the 16-byte AES-GCM tag.
const RECORD_OVERHEAD: usize = 2 + 16;
/// Most plaintext in one sealed record (a Noise message of 65,535 bytes less its tag).
const MAX_PLAIN: usize = 65_535 - 16;
/// hail framing: a u32 length, the message kind byte, the payload.
const HAIL_FRAME_OVERHEAD: usize = 4 + 1;

/// `link/secure-vs-crypto-1KiB`: a sealed hail-link (Noise `NNpsk0`, AES-256-GCM from
/// ring) against std sockets that do the same cryptography: the same frames (u32 length,
/// kind byte, 1 KiB), cut into records of the size hail's writer produced (measured from
/// its counters in the same run), each copied once into a record buffer, sealed there with
/// ring's AES-256-GCM (Noise's nonce layout, no associated data) and written whole through
/// a 64 KiB `BufWriter`; the reader opens
/// each record in place and copies each message out. What is left between the two is what
/// hail does above the cryptography.
fn secure_vs_crypto(rt: &Runtime, budget: Duration) -> anyhow::Result<Vec<Record>> {
    let n = 50_000;
    let msg = Bytes::from(vec![0xa5u8; 1024]);
    let mut sealed = pair(rt, LinkConfig::builder().psk([0x42; 32]).build()?)?;
    // A first run of hail tells the record size its writer produces here.
    one_way(rt, &mut sealed, &msg, n);
    let record = hail_record_plain(&sealed, msg.len())?;
    let mut raw = raw_pair()?;
    let mut rounds = 0u64;
    let mut records = 0u64;
    let (a, b) = interleaved_rate(
        budget,
        n as u64,
        || one_way(rt, &mut sealed, &msg, n),
        || {
            rounds += 1;
            records += raw_sealed_one_way(&mut raw, &msg, n, record);
        },
    );
    Ok(vec![
        Record::new("link/secure-vs-crypto-1KiB", a, b, "msg/s", Better::Higher),
        // What the baseline was given: the record size hail's writer produced in the
        // warm-up (bytes of frames per record), and the records the baseline sealed.
        Record::solo(
            "link/secure-vs-crypto-1KiB-record",
            record as f64,
            "bytes",
            Better::Higher,
        ),
        Record::solo(
            "link/secure-vs-crypto-1KiB-baseline-records",
            records as f64 / rounds.max(1) as f64,
            "per round",
            Better::Lower,
        ),
    ])
}

/// The average plaintext per sealed record hail's client has written so far, from its
/// counters: every record adds [`RECORD_OVERHEAD`] bytes to the frames it carries.
fn hail_record_plain(p: &Pair, body: usize) -> anyhow::Result<usize> {
    let stats = p.client.connection().context("connected")?.stats();
    let plain = stats.frames_written * (HAIL_FRAME_OVERHEAD + body) as u64;
    let overhead = stats.bytes_written.saturating_sub(plain);
    let records = (overhead / RECORD_OVERHEAD as u64).max(1);
    Ok(usize::try_from(plain / records)?.clamp(1, MAX_PLAIN))
}

fn noise_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aes_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).expect("a 32-byte key"))
}

/// `n` hail-framed messages of `body`, sealed in records of `record` bytes of the frame
/// stream each (at most [`MAX_PLAIN`]), over std sockets; returns the records sent.
fn raw_sealed_one_way(p: &mut RawPair, body: &[u8], n: usize, record: usize) -> u64 {
    let tx = p.tx.try_clone().expect("clone socket");
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let key = aes_key();
        let mut w = BufWriter::with_capacity(64 * 1024, tx);
        let mut plain = Vec::with_capacity(record + HAIL_FRAME_OVERHEAD + body.len());
        let mut counter = 0u64;
        // One record laid out whole (length, sealed bytes, tag) and written with one
        // `write_all`: split into three writes, the `BufWriter` would send the 2-byte
        // length on its own (TCP_NODELAY) whenever the record is larger than its buffer.
        // Like hail's writer, the frames are copied once into the record.
        let mut out = Vec::with_capacity(2 + MAX_PLAIN + 16);
        // Seals the first `len` bytes of `plain` as one record and writes it.
        let mut seal = |plain: &mut Vec<u8>, len: usize, w: &mut BufWriter<TcpStream>| {
            out.clear();
            out.extend_from_slice(&((len + 16) as u16).to_be_bytes());
            out.extend_from_slice(&plain[..len]);
            let tag = key
                .seal_in_place_separate_tag(noise_nonce(counter), Aad::empty(), &mut out[2..])
                .expect("seal");
            counter += 1;
            out.extend_from_slice(tag.as_ref());
            w.write_all(&out).expect("write");
            plain.drain(..len);
        };
        for _ in 0..n {
            plain.extend_from_slice(&((1 + body.len()) as u32).to_be_bytes());
            plain.push(0);
            plain.extend_from_slice(&body);
            // Records cut the frame stream without regard to frame boundaries, as hail's
            // sealer does.
            while plain.len() >= record {
                seal(&mut plain, record, &mut w);
            }
        }
        if !plain.is_empty() {
            let len = plain.len();
            seal(&mut plain, len, &mut w);
        }
        w.flush().expect("flush");
        counter
    });
    let key = aes_key();
    let mut counter = 0u64;
    let mut head = [0u8; 2];
    // Opened frames not yet cut (a frame may span records) are `buf[lo..hi]`; each record
    // is read straight behind them and opened in place. The buffer is zeroed once, not per
    // record.
    let mut buf = vec![0u8; 4 * MAX_PLAIN];
    let (mut lo, mut hi) = (0, 0);
    let mut got = 0;
    while got < n {
        p.rx.read_exact(&mut head).expect("read");
        let len = u16::from_be_bytes(head) as usize;
        if hi + len > buf.len() {
            buf.copy_within(lo..hi, 0);
            (lo, hi) = (0, hi - lo);
        }
        p.rx.read_exact(&mut buf[hi..hi + len]).expect("read");
        let opened = key
            .open_in_place(noise_nonce(counter), Aad::empty(), &mut buf[hi..hi + len])
            .expect("open")
            .len();
        counter += 1;
        hi += opened;
        while let Some(h) = buf.get(lo..lo + 4).filter(|_| lo + 4 <= hi) {
            let flen = u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize;
            if lo + 4 + flen > hi {
                break;
            }
            // The message after its kind byte, in place (hail hands out 1 KiB messages
            // as views of its buffer, without a copy).
            std::hint::black_box(&buf[lo + 5..lo + 4 + flen]);
            lo += 4 + flen;
            got += 1;
        }
    }
    writer.join().expect("writer")
}

/// One server broadcasting 64-byte messages to `clients` clients: messages delivered per
/// second, all clients together (no baseline).
fn broadcast(rt: &Runtime, budget: Duration, rounds: usize) -> anyhow::Result<Record> {
    const CLIENTS: usize = 100;
    const PER_ROUND: u32 = 1000;
    let rates = rt.block_on(async {
        let (server, mut events) = Server::bind(lo(), ServerConfig::default(), Binary).await?;
        let mut readers = Vec::new();
        let mut clients = Vec::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(CLIENTS);
        for _ in 0..CLIENTS {
            let (c, mut ev) =
                Client::connect(server.local_addr(), ClientConfig::default(), Binary).await?;
            clients.push(c);
            let done = done_tx.clone();
            readers.push(tokio::spawn(async move {
                let mut got = 0u32;
                while let Some(e) = ev.recv().await {
                    if let ClientEvent::Message(_) = e {
                        got += 1;
                        if got == PER_ROUND {
                            got = 0;
                            let _ = done.send(()).await;
                        }
                    }
                }
            }));
        }
        let mut seen = 0;
        while seen < CLIENTS {
            if let Some(ServerEvent::Connected { .. }) = events.recv().await {
                seen += 1;
            }
        }
        let msg = Bytes::from(vec![0x5au8; 64]);
        let mut rates = Vec::new();
        let start = Instant::now();
        while rates.len() < rounds || (start.elapsed() < budget && rates.len() < 10 * rounds) {
            let t = Instant::now();
            for _ in 0..PER_ROUND {
                let report = server.broadcast(&msg)?;
                anyhow::ensure!(report.slow.is_empty(), "a client was slow");
                // Pace on the fullest queue, as an application would.
                if server.stats().queued_bytes > CLIENTS * 256 * 1024 {
                    tokio::task::yield_now().await;
                }
            }
            for _ in 0..CLIENTS {
                done_rx.recv().await.context("reader ended")?;
            }
            rates.push((CLIENTS as f64 * f64::from(PER_ROUND)) / t.elapsed().as_secs_f64());
        }
        drop(clients);
        Ok::<_, anyhow::Error>(rates)
    })?;
    let mut rates = rates;
    Ok(Record::solo(
        "link/broadcast-100clients",
        median(&mut rates),
        "msg/s",
        Better::Higher,
    ))
}

/// Server-side memory per idle connection: RSS growth over `n` established, idle
/// connections whose clients are bare std sockets (no user-space buffers of their own).
fn idle_memory(rt: &Runtime, n: usize) -> anyhow::Result<Record> {
    const HELLO: &[u8] = b"\x00\x00\x00\x06\x03HAIL\x01";
    let cfg = ServerConfig::builder()
        .link(LinkConfig::builder().heartbeat(None).build()?)
        .max_clients(n + 64)
        .build()?;
    let (server, mut events) = rt.block_on(Server::bind(lo(), cfg, Binary))?;
    let addr = server.local_addr();
    let drain = rt.spawn(async move { while events.recv().await.is_some() {} });
    // Warm up the allocator and runtime with a few connections first.
    let mut socks = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(HELLO)?;
        let mut w = [0u8; 6];
        s.read_exact(&mut w)?;
        socks.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = rss()?;
    for _ in 0..n {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(HELLO)?;
        let mut w = [0u8; 6];
        s.read_exact(&mut w)?;
        socks.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.stats().clients < n + 16 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "connections not admitted in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss()?;
    drop(socks);
    drain.abort();
    Ok(Record::solo(
        "link/idle-memory-per-conn",
        after.saturating_sub(before) as f64 / n as f64,
        "bytes",
        Better::Lower,
    ))
}

/// Connections per second, each a whole dial over loopback TCP (connect, handshake,
/// admission, welcome) followed by a drop: `XX` (identities) and `XXpsk0` (identities and
/// a key) against `NNpsk0` (a key, with its key confirmation), interleaved in one run.
fn connect(rt: &Runtime, budget: Duration) -> anyhow::Result<Vec<Record>> {
    const PER_ROUND: u64 = 50;
    let psk = [0x42; 32];
    let (server_id, client_id) = (Identity::generate()?, Identity::generate()?);
    let nn = LinkConfig::builder().psk(psk).build()?;
    let xx = LinkConfig::builder();
    let xxpsk = LinkConfig::builder().psk(psk);
    let pairs = [
        (nn.clone(), nn),
        (
            xx.clone().identity(&server_id).build()?,
            xx.identity(&client_id).build()?,
        ),
        (
            xxpsk.clone().identity(&server_id).build()?,
            xxpsk.identity(&client_id).build()?,
        ),
    ];
    let mut ends = Vec::new();
    for (server_link, client_link) in pairs {
        let (server, mut events) = rt.block_on(Server::bind(
            lo(),
            ServerConfig::builder().link(server_link).build()?,
            Binary,
        ))?;
        let drain = rt.spawn(async move { while events.recv().await.is_some() {} });
        ends.push((server, drain, client_link));
    }
    let dial = |i: usize| {
        let (server, _, link) = &ends[i];
        let addr = server.local_addr();
        rt.block_on(async {
            for _ in 0..PER_ROUND {
                let (conn, _incoming) = Connection::connect(addr, link.clone(), Binary)
                    .await
                    .expect("connect");
                drop(conn);
            }
        });
    };
    let (xx_rate, nn_rate) = interleaved_rate(budget, PER_ROUND, || dial(1), || dial(0));
    let (xxpsk_rate, nn_rate2) = interleaved_rate(budget, PER_ROUND, || dial(2), || dial(0));
    for (_, drain, _) in &ends {
        drain.abort();
    }
    Ok(vec![
        Record::new(
            "link/connect-xx",
            xx_rate,
            nn_rate,
            "conn/s",
            Better::Higher,
        ),
        Record::new(
            "link/connect-xxpsk0",
            xxpsk_rate,
            nn_rate2,
            "conn/s",
            Better::Higher,
        ),
    ])
}
