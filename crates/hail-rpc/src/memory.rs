//! Two peers joined in memory: for tests and for in-process use without sockets.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::RpcConfig;
use crate::peer::Handlers;
use crate::peer::{PeerDriver, RpcPeer};

/// Packets each direction may hold before `send` waits: 1024.
pub const QUEUE_LEN: usize = 1024;

/// One direction of the pair: a bounded queue of packets.
struct ChannelOut(mpsc::Sender<Bytes>);

impl crate::outgoing::Outgoing for ChannelOut {
    fn send(
        &self,
        packet: Bytes,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), crate::outgoing::LinkClosed>> + Send + '_>,
    > {
        Box::pin(async move {
            self.0
                .send(packet)
                .await
                .map_err(|_| crate::outgoing::LinkClosed)
        })
    }

    fn try_send(&self, packet: &Bytes) -> bool {
        // The queue holds the packet itself: a second owner of its buffer.
        self.0.try_send(packet.clone()).is_ok()
    }
}

/// The in-memory connection between the two peers of [`pair`]. Dropping it, or
/// [`kill`](Self::kill), drops the connection: both peers see it lost at once.
#[derive(Debug)]
pub struct MemoryLink {
    tasks: Vec<JoinHandle<()>>,
}

impl MemoryLink {
    /// Drops the connection now, as a dead network would.
    pub fn kill(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for MemoryLink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two connected peers, each with its own handler table, over bounded in-memory queues
/// of [`QUEUE_LEN`] packets. Must be called inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use hail_rpc::{RpcConfig, memory};
///
/// let (a, b, _link) = memory::pair(RpcConfig::default(), RpcConfig::default());
/// b.bind("double", |x: u32| async move { Ok::<_, String>(x * 2) })?;
/// let y: u32 = a.execute("double", 21u32, Duration::from_secs(1)).await?;
/// assert_eq!(y, 42);
/// # Ok(()) }
/// ```
pub fn pair(a: RpcConfig, b: RpcConfig) -> (RpcPeer, RpcPeer, MemoryLink) {
    pair_with_handlers((a, Handlers::new()), (b, Handlers::new()))
}

/// Like [`pair`], each side serving the given handler table.
pub fn pair_with_handlers(
    a: (RpcConfig, Handlers),
    b: (RpcConfig, Handlers),
) -> (RpcPeer, RpcPeer, MemoryLink) {
    let (pa, da) = RpcPeer::with_handlers(a.0, a.1);
    let (pb, db) = RpcPeer::with_handlers(b.0, b.1);
    let (tx_ab, rx_ab) = mpsc::channel(QUEUE_LEN);
    let (tx_ba, rx_ba) = mpsc::channel(QUEUE_LEN);
    da.connected(Arc::new(ChannelOut(tx_ab)));
    db.connected(Arc::new(ChannelOut(tx_ba)));
    let tasks = vec![
        tokio::spawn(drive(db, rx_ab)),
        tokio::spawn(drive(da, rx_ba)),
    ];
    (pa, pb, MemoryLink { tasks })
}

/// Feeds received packets to a peer; dropping the driver (task end or abort) disconnects it.
async fn drive(driver: PeerDriver, mut rx: mpsc::Receiver<Bytes>) {
    // What is waiting is fed as one batch, in runs, as the link adapters do.
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        driver.packets(batch.drain(..));
    }
}
