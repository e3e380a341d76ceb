//! How the tests connect two peers.

use hail_rpc::{RpcConfig, RpcPeer, memory};

/// Keeps a connection up; `kill` drops it as a dead network would.
pub(crate) struct Link(memory::MemoryLink);

impl Link {
    pub(crate) fn kill(&mut self) {
        self.0.kill();
    }
}

/// Two connected peers with default limits.
pub(crate) fn pair() -> (RpcPeer, RpcPeer, Link) {
    pair_with(RpcConfig::default(), RpcConfig::default())
}

/// Two connected peers with the given limits.
pub(crate) fn pair_with(a: RpcConfig, b: RpcConfig) -> (RpcPeer, RpcPeer, Link) {
    let (a, b, link) = memory::pair(a, b);
    (a, b, Link(link))
}
