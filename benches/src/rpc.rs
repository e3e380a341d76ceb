//! `rpc/*`: hail-rpc over loopback hail-link connections against raw TCP baselines.
//!
//! Every benchmark here runs both ends (client and server) and the baseline in **one
//! `current_thread` tokio runtime**: on a 2-core VM a cross-core wake-up costs ~35 µs and
//! an unpinned run would land in either mode at random. Figures are for one core.
//!
//! - `rpc/latency-<size>-p50|p99`: sequential `execute` round trips of an echo handler
//!   (args of `size` bytes, the same bytes back) over `RpcClient`/`RpcServer`, against a
//!   raw tokio `TcpStream` ping-pong of the same bytes (TCP_NODELAY, `write_all` +
//!   `read_exact`); rounds of both interleaved, percentiles from an hdrhistogram (µs).
//! - `rpc/latency-<size>-p50-vs-link`: the same RPC round trips against a bare hail-link
//!   echo (a `Client` sending the bytes, the `Server` sending them back from its event
//!   loop), in the same interleaved run: the cost of the RPC layer alone.
//! - `rpc/throughput-64B`: calls/s with 64 calls in flight (64 tasks calling in a loop),
//!   against a raw `Framed<TcpStream, FrameCodec>` echo keeping 64 frames in flight.
//! - `rpc/throughput-64B-vs-tarpc`: the same calls against tarpc 0.38 (bincode over
//!   `LengthDelimitedCodec` on TCP, TCP_NODELAY set on both ends: tarpc's default leaves
//!   Nagle on), 64 tasks calling an echo service in a loop.
//! - `rpc/named`: calls/s of sequential round trips over an in-memory pair, a named method
//!   (ours) against an opcode (baseline): the cost of dispatching by name.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hail_link::{ClientConfig, ServerConfig};
use hail_rpc::{Opcode, RpcClient, RpcConfig, RpcPeer, RpcServer, memory};
use hail_wire::FrameCodec;
use hdrhistogram::Histogram;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;

use crate::harness::{Better, Ctx, Record, interleaved_rate, latency_records};

const ECHO: Opcode = Opcode(1);
const T: Duration = Duration::from_secs(10);
/// Calls in flight for `rpc/throughput`.
const IN_FLIGHT: usize = 64;

/// Bytes as one postcard byte string (a `Vec<u8>` would go byte by byte through serde).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Runs the `rpc/*` benchmarks.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for (label, size) in [("64B", 64usize), ("1KiB", 1024)] {
        let name = format!("rpc/latency-{label}");
        if ctx.wants(&name) {
            out.extend(latency(ctx, &rt, &name, size)?);
        }
    }
    if ctx.wants_one("rpc/throughput-64B") {
        out.push(throughput(ctx, &rt)?);
    }
    if ctx.wants("rpc/throughput-64B-vs-tarpc") {
        out.push(throughput_vs_tarpc(
            ctx,
            &rt,
            "rpc/throughput-64B-vs-tarpc",
        )?);
    }
    if ctx.wants("rpc/named") {
        out.push(named(ctx, &rt));
    }
    Ok(out)
}

/// An RPC server with an echo handler on loopback and a client connected to it.
async fn rpc_pair() -> anyhow::Result<(RpcServer, RpcClient)> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let (server, _events) =
        RpcServer::listen(addr, ServerConfig::default(), RpcConfig::default()).await?;
    server.bind(ECHO, |b: Blob| async move {
        Ok::<_, std::convert::Infallible>(b)
    })?;
    let client = RpcClient::connect(
        server.local_addr(),
        ClientConfig::default(),
        RpcConfig::default(),
    )
    .await?;
    Ok((server, client))
}

/// A raw TCP echo of `size`-byte messages; returns the client's stream.
async fn raw_ping_pong(size: usize) -> anyhow::Result<(TcpStream, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let client = TcpStream::connect(addr).await?;
    client.set_nodelay(true)?;
    Ok((client, server))
}

fn latency(ctx: &Ctx, rt: &Runtime, name: &str, size: usize) -> anyhow::Result<Vec<Record>> {
    let budget = Duration::from_millis(ctx.pick(1500, 6000));
    rt.block_on(async {
        let (_server, client) = rpc_pair().await?;
        let (mut raw, raw_server) = raw_ping_pong(size).await?;
        let (link_client, mut link_events, link_server) = link_echo().await?;
        let frame = bytes::Bytes::from(vec![0xa5u8; size]);
        let args = Blob(vec![0xa5; size]);
        let mut back = vec![0u8; size];
        let mut ours = Histogram::<u64>::new(3)?;
        let mut base = Histogram::<u64>::new(3)?;
        let mut bare = Histogram::<u64>::new(3)?;
        const ROUND: usize = 200;
        // Warm-up, then alternate rounds of each until the budget is spent.
        for _ in 0..ROUND {
            let _: Blob = client.execute(ECHO, &args, T).await?;
            raw.write_all(&args.0).await?;
            raw.read_exact(&mut back).await?;
            link_round_trip(&link_client, &mut link_events, &frame).await?;
        }
        let start = Instant::now();
        while start.elapsed() < budget {
            for _ in 0..ROUND {
                let t = Instant::now();
                let r: Blob = client.execute(ECHO, &args, T).await?;
                ours.record(t.elapsed().as_nanos() as u64)?;
                debug_assert!(r == args);
            }
            for _ in 0..ROUND {
                let t = Instant::now();
                raw.write_all(&args.0).await?;
                raw.read_exact(&mut back).await?;
                base.record(t.elapsed().as_nanos() as u64)?;
            }
            for _ in 0..ROUND {
                let t = Instant::now();
                link_round_trip(&link_client, &mut link_events, &frame).await?;
                bare.record(t.elapsed().as_nanos() as u64)?;
            }
        }
        link_server.abort();
        drop(raw);
        raw_server.abort();
        let [p50, p99] = latency_records(name, &ours, &base);
        let [mut vs_link, _] = latency_records(name, &ours, &bare);
        vs_link.name = format!("{name}-p50-vs-link");
        Ok(vec![p50, p99, vs_link])
    })
}

/// A bare hail-link echo: the server sends every message back from its event loop.
async fn link_echo() -> anyhow::Result<(
    hail_link::Client<hail_wire::Binary>,
    hail_link::ClientEvents<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
)> {
    use hail_link::{Client, Server, ServerEvent};
    let (server, mut events) = Server::bind(
        "127.0.0.1:0".parse()?,
        ServerConfig::default(),
        hail_wire::Binary,
    )
    .await?;
    let addr = server.local_addr();
    let task = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let ServerEvent::Message { id, msg } = event
                && server.send_to(id, msg).await.is_err()
            {
                break;
            }
        }
    });
    let (client, client_events) =
        Client::connect(addr, ClientConfig::default(), hail_wire::Binary).await?;
    Ok((client, client_events, task))
}

/// One message to the bare link echo and back.
async fn link_round_trip(
    client: &hail_link::Client<hail_wire::Binary>,
    events: &mut hail_link::ClientEvents<bytes::Bytes>,
    frame: &bytes::Bytes,
) -> anyhow::Result<()> {
    client.send(frame).await?;
    loop {
        match events.recv().await {
            Some(hail_link::ClientEvent::Message(_)) => return Ok(()),
            Some(_) => continue,
            None => anyhow::bail!("the link echo stopped"),
        }
    }
}

/// A `Framed` echo server; returns its address.
async fn framed_echo() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let Ok((s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut framed = Framed::new(s, FrameCodec::new());
        while let Some(Ok(frame)) = framed.next().await {
            if framed.send(frame.freeze()).await.is_err() {
                break;
            }
        }
    });
    Ok((addr, task))
}

/// `calls` echo calls of `args`, `IN_FLIGHT` at a time: the hail side of both RPC
/// throughput benchmarks.
async fn echo_calls(peer: &RpcPeer, args: &Arc<Blob>, calls: usize) {
    let mut set = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let peer = peer.clone();
        let args = args.clone();
        set.spawn(async move {
            for _ in 0..calls / IN_FLIGHT {
                let _: Blob = peer.execute(ECHO, &*args, T).await.expect("echo");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("caller task");
    }
}

fn throughput(ctx: &Ctx, rt: &Runtime) -> anyhow::Result<Record> {
    let budget = Duration::from_millis(ctx.pick(2000, 6000));
    let calls: usize = ctx.pick(6_400, 32_000);
    let (server, client, echo_addr, echo_task) = rt.block_on(async {
        let (server, client) = rpc_pair().await?;
        let (addr, task) = framed_echo().await?;
        anyhow::Ok((server, client, addr, task))
    })?;
    let stream = rt.block_on(TcpStream::connect(echo_addr))?;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, FrameCodec::new());
    let peer: RpcPeer = client.peer().clone();
    let args = Arc::new(Blob(vec![0xa5; 64]));
    let frame = bytes::Bytes::from(vec![0xa5u8; 64]);
    let (ours, base) = interleaved_rate(
        budget,
        calls as u64,
        || {
            rt.block_on(echo_calls(&peer, &args, calls));
        },
        || {
            rt.block_on(async {
                for _ in 0..IN_FLIGHT {
                    framed.feed(frame.clone()).await.expect("feed");
                }
                SinkExt::<bytes::Bytes>::flush(&mut framed)
                    .await
                    .expect("flush");
                let mut sent = IN_FLIGHT;
                let mut got = 0;
                while got < calls {
                    framed.next().await.expect("open").expect("frame");
                    got += 1;
                    if sent < calls {
                        framed.send(frame.clone()).await.expect("send");
                        sent += 1;
                    }
                }
            });
        },
    );
    drop(framed);
    echo_task.abort();
    drop((client, server));
    Ok(Record::new(
        "rpc/throughput-64B",
        ours,
        base,
        "calls/s",
        Better::Higher,
    ))
}

/// The tarpc baseline: an echo service.
#[tarpc::service]
trait EchoService {
    /// Returns its argument.
    async fn echo(b: Blob) -> Blob;
}

#[derive(Clone)]
struct EchoImpl;

impl EchoService for EchoImpl {
    async fn echo(self, _: tarpc::context::Context, b: Blob) -> Blob {
        b
    }
}

/// A tarpc echo server on loopback (TCP_NODELAY) and a client of it.
async fn tarpc_pair() -> anyhow::Result<(EchoServiceClient, tokio::task::JoinHandle<()>)> {
    use tarpc::server::Channel;
    use tarpc::tokio_serde::formats::Bincode;
    use tokio_util::codec::LengthDelimitedCodec;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let Ok((s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let framed = Framed::new(s, LengthDelimitedCodec::new());
        let transport = tarpc::serde_transport::new(framed, Bincode::default());
        tarpc::server::BaseChannel::with_defaults(transport)
            .execute(EchoImpl.serve())
            .for_each(|response| async move {
                tokio::spawn(response);
            })
            .await;
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let framed = Framed::new(s, LengthDelimitedCodec::new());
    let transport = tarpc::serde_transport::new(framed, Bincode::default());
    let client = EchoServiceClient::new(tarpc::client::Config::default(), transport).spawn();
    Ok((client, server))
}

/// hail-rpc against tarpc (bincode over `LengthDelimitedCodec`, TCP_NODELAY on both
/// ends): calls/s with 64 calls in flight, 64-byte arguments, rounds alternating, recorded
/// as `name`. Both ends of both systems on `rt` (one `current_thread` runtime). Also run by
/// `cargo xtask bench --peers` (`peers/`).
pub fn throughput_vs_tarpc(ctx: &Ctx, rt: &Runtime, name: &str) -> anyhow::Result<Record> {
    let budget = Duration::from_millis(ctx.pick(2000, 6000));
    let calls: usize = ctx.pick(6_400, 32_000);
    let (server, client, tarpc_client, tarpc_server) = rt.block_on(async {
        let (server, client) = rpc_pair().await?;
        let (tc, ts) = tarpc_pair().await?;
        anyhow::Ok((server, client, tc, ts))
    })?;
    let peer: RpcPeer = client.peer().clone();
    let args = Arc::new(Blob(vec![0xa5; 64]));
    let (ours, base) = interleaved_rate(
        budget,
        calls as u64,
        || {
            rt.block_on(echo_calls(&peer, &args, calls));
        },
        || {
            rt.block_on(async {
                let mut set = JoinSet::new();
                for _ in 0..IN_FLIGHT {
                    let client = tarpc_client.clone();
                    let args = args.clone();
                    set.spawn(async move {
                        for _ in 0..calls / IN_FLIGHT {
                            let _ = client
                                .echo(tarpc::context::current(), (*args).clone())
                                .await
                                .expect("tarpc echo");
                        }
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("caller task");
                }
            });
        },
    );
    drop(tarpc_client);
    tarpc_server.abort();
    drop((client, server));
    Ok(Record::new(name, ours, base, "calls/s", Better::Higher))
}

/// hail-rpc against tarpc: sequential echo calls with 64-byte arguments, rounds of both
/// alternating, p50 and p99 from an hdrhistogram in µs, recorded as `<name>-p50` and
/// `<name>-p99`. Both ends of both systems on `rt` (one `current_thread` runtime). Run by
/// `cargo xtask bench --peers` (`peers/`).
pub fn latency_vs_tarpc(ctx: &Ctx, rt: &Runtime, name: &str) -> anyhow::Result<Vec<Record>> {
    let budget = Duration::from_millis(ctx.pick(1500, 6000));
    rt.block_on(async {
        let (_server, client) = rpc_pair().await?;
        let (tarpc_client, tarpc_server) = tarpc_pair().await?;
        let args = Blob(vec![0xa5; 64]);
        let mut ours = Histogram::<u64>::new(3)?;
        let mut theirs = Histogram::<u64>::new(3)?;
        const ROUND: usize = 200;
        for _ in 0..ROUND {
            let _: Blob = client.execute(ECHO, &args, T).await?;
            tarpc_client
                .echo(tarpc::context::current(), args.clone())
                .await?;
        }
        let start = Instant::now();
        while start.elapsed() < budget {
            for _ in 0..ROUND {
                let t = Instant::now();
                let r: Blob = client.execute(ECHO, &args, T).await?;
                ours.record(t.elapsed().as_nanos() as u64)?;
                debug_assert!(r == args);
            }
            for _ in 0..ROUND {
                // The argument is cloned outside the timed call, as hail's is borrowed.
                let a = args.clone();
                let t = Instant::now();
                let r = tarpc_client.echo(tarpc::context::current(), a).await?;
                theirs.record(t.elapsed().as_nanos() as u64)?;
                debug_assert!(r == args);
            }
        }
        drop(tarpc_client);
        tarpc_server.abort();
        Ok(latency_records(name, &ours, &theirs).into())
    })
}

fn named(ctx: &Ctx, rt: &Runtime) -> Record {
    let budget = Duration::from_millis(ctx.pick(1000, 4000));
    const ROUND: u64 = 1000;
    let (a, b, _link) = rt.block_on(async {
        let (a, b, link) = memory::pair(RpcConfig::default(), RpcConfig::default());
        let add = |(x, y): (u32, u32)| async move { Ok::<_, std::convert::Infallible>(x + y) };
        b.bind("calculator.add", add).expect("bind name");
        b.bind(Opcode(7), add).expect("bind opcode");
        (a, b, link)
    });
    let (by_name, by_opcode) = interleaved_rate(
        budget,
        ROUND,
        || {
            rt.block_on(async {
                for i in 0..ROUND as u32 {
                    let _: u32 = a
                        .execute("calculator.add", (i, 1u32), T)
                        .await
                        .expect("add");
                }
            });
        },
        || {
            rt.block_on(async {
                for i in 0..ROUND as u32 {
                    let _: u32 = a.execute(Opcode(7), (i, 1u32), T).await.expect("add");
                }
            });
        },
    );
    drop(b);
    Record::new("rpc/named", by_name, by_opcode, "calls/s", Better::Higher)
}
