//! Who called: the proven peer behind an RPC handler's calling [`RpcPeer`].

use std::sync::{Arc, OnceLock};

use hail_rpc::RpcPeer;

use crate::id::DeviceId;

/// Who called a handler bound on a device's [`handlers`](crate::Device::handlers): the
/// device at the other end of the link the call came on. Its id is the key that link's
/// handshake proved, its name the one it joined with; neither comes from the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's id (of its proven key).
    pub id: DeviceId,
    /// The caller's name.
    pub name: String,
}

/// What a device link's RPC peer carries about the other end ([`RpcPeer::set_context`]).
#[derive(Debug)]
pub(super) struct LinkPeer {
    pub(super) id: DeviceId,
    /// Set when its hello joined it.
    pub(super) name: OnceLock<Arc<str>>,
}

/// The caller behind `peer`, the calling peer a handler bound with
/// [`Handlers::bind_with`](hail_rpc::Handlers::bind_with) is handed: `None` for a peer
/// that is not a device link's, or whose device has not joined (its calls are not served
/// before it has).
///
/// ```
/// use hail_discovery::{Device, caller};
///
/// # async fn demo(device: &Device) -> Result<(), Box<dyn std::error::Error>> {
/// device.handlers().bind_with("whoami", |peer, (): ()| async move {
///     let who = caller(&peer).ok_or("not a device link")?;
///     Ok::<_, &str>(format!("{} ({})", who.name, who.id))
/// })?;
/// # Ok(())
/// # }
/// ```
pub fn caller(peer: &RpcPeer) -> Option<Caller> {
    let p = peer.context::<LinkPeer>()?;
    Some(Caller {
        id: p.id,
        name: p.name.get()?.as_ref().to_owned(),
    })
}

/// The name of the caller behind `peer` ([`caller`]'s), shared, not copied: `None` as for
/// [`caller`].
pub(super) fn caller_name(peer: &RpcPeer) -> Option<Arc<str>> {
    peer.context::<LinkPeer>()?.name.get().cloned()
}
