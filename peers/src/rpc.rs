//! `peers/rpc-*`: hail-rpc against tarpc 0.38, as in `hail-benches`' `rpc/*` (whose
//! `rpc/throughput-64B-vs-tarpc` this repeats beside the latency).
//!
//! Both ends of both systems run in one `current_thread` tokio runtime (on a 2-core VM a
//! cross-core wake-up costs tens of µs and an unpinned run would land in either mode at
//! random). tarpc: bincode over `LengthDelimitedCodec` on TCP, TCP_NODELAY on both ends.
//!
//! - `peers/rpc-latency-64B-p50|p99`: sequential echo calls with 64-byte arguments, rounds
//!   of both alternating, percentiles from an hdrhistogram, in µs.
//! - `peers/rpc-throughput-64B`: calls/s with 64 calls in flight (64 tasks calling in a
//!   loop), rounds alternating, median round.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hail::link::{ClientConfig, ServerConfig};
use hail::rpc::{Opcode, RpcClient, RpcConfig, RpcPeer, RpcServer};
use hail_benches::harness::{Better, Ctx, Record, interleaved_rate};
use hdrhistogram::Histogram;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;

const ECHO: Opcode = Opcode(1);
const T: Duration = Duration::from_secs(10);
/// Calls in flight for the throughput figure.
const IN_FLIGHT: usize = 64;
/// Argument size, bytes.
const SIZE: usize = 64;

/// Bytes as one byte string (a `Vec<u8>` would go byte by byte through serde).
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

/// Runs the group.
pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    if ctx.wants("peers/rpc-latency-64B") {
        out.extend(latency(ctx, &rt)?);
    }
    if ctx.wants("peers/rpc-throughput-64B") {
        out.push(throughput(ctx, &rt)?);
    }
    Ok(out)
}

/// A hail-rpc server with an echo handler on loopback and a client connected to it.
async fn rpc_pair() -> anyhow::Result<(RpcServer, RpcClient)> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let server = RpcServer::listen(addr, ServerConfig::default(), RpcConfig::default()).await?;
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

fn latency(ctx: &Ctx, rt: &Runtime) -> anyhow::Result<Vec<Record>> {
    let budget = Duration::from_millis(ctx.pick(1500, 6000));
    rt.block_on(async {
        let (_server, client) = rpc_pair().await?;
        let (tarpc_client, tarpc_server) = tarpc_pair().await?;
        let args = Blob(vec![0xa5; SIZE]);
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
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(vec![
            Record::new(
                "peers/rpc-latency-64B-p50",
                us(&ours, 0.5),
                us(&theirs, 0.5),
                "us",
                Better::Lower,
            ),
            Record::new(
                "peers/rpc-latency-64B-p99",
                us(&ours, 0.99),
                us(&theirs, 0.99),
                "us",
                Better::Lower,
            ),
        ])
    })
}

fn throughput(ctx: &Ctx, rt: &Runtime) -> anyhow::Result<Record> {
    let budget = Duration::from_millis(ctx.pick(2000, 6000));
    let calls: usize = ctx.pick(6_400, 32_000);
    let (server, client, tarpc_client, tarpc_server) = rt.block_on(async {
        let (server, client) = rpc_pair().await?;
        let (tc, ts) = tarpc_pair().await?;
        anyhow::Ok((server, client, tc, ts))
    })?;
    let peer: RpcPeer = client.peer().clone();
    let args = Arc::new(Blob(vec![0xa5; SIZE]));
    let (ours, base) = interleaved_rate(
        budget,
        calls as u64,
        || {
            rt.block_on(async {
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
            });
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
    Ok(Record::new(
        "peers/rpc-throughput-64B",
        ours,
        base,
        "calls/s",
        Better::Higher,
    ))
}
