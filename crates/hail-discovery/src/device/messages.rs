//! Messages and questions: [`Device::send`] and [`Device::ask`] (and their typed
//! forms) on one side, the built-in RPC methods that receive them on the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use hail_rpc::{RpcError, RpcPeer};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{AskError, SendError};
use super::handle::Device;
use super::sender::{MESSAGE_TAG, link_error};
use super::shared::Shared;
use crate::format::FormatError;

/// The RPC method that carries [`Device::ask`] questions.
const ASK_METHOD: &str = "hail/ask";

/// Whom to send to or ask: a name (`&str`, `String`), several (`Vec<String>`, a slice or
/// an array of `&str`), or [`Targets::All`].
///
/// ```
/// use hail_discovery::Targets;
///
/// let name = String::from("lamp");
/// assert_eq!(Targets::from(&name), Targets::One("lamp".into()));
/// assert_eq!(Targets::from(name), Targets::One("lamp".into()));
/// assert_eq!(
///     Targets::from(["lamp", "fan"]),
///     Targets::Many(vec!["lamp".into(), "fan".into()])
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// One device by name.
    One(String),
    /// Several devices by name.
    Many(Vec<String>),
    /// Every joined peer.
    All,
}

impl From<&str> for Targets {
    fn from(name: &str) -> Self {
        Self::One(name.to_owned())
    }
}

impl From<String> for Targets {
    fn from(name: String) -> Self {
        Self::One(name)
    }
}

impl From<&String> for Targets {
    fn from(name: &String) -> Self {
        Self::One(name.clone())
    }
}

impl<const N: usize> From<[&str; N]> for Targets {
    fn from(names: [&str; N]) -> Self {
        Self::Many(names.iter().map(|n| (*n).to_owned()).collect())
    }
}

impl From<Vec<String>> for Targets {
    fn from(names: Vec<String>) -> Self {
        Self::Many(names)
    }
}

impl From<&[&str]> for Targets {
    fn from(names: &[&str]) -> Self {
        Self::Many(names.iter().map(|n| (*n).to_owned()).collect())
    }
}

impl Device {
    /// Hands `msg` to the link of each target; the result says, per target name, whether
    /// it was handed over or why not.
    ///
    /// Order: messages to one peer arrive in the order they were sent while they travel
    /// on one link. Right after two devices dialed each other at the same moment (rare:
    /// one of the two waits for the other's dial, see
    /// [`dial_yield`](crate::PeerTableConfigBuilder::dial_yield)), both links exist for
    /// a short while (until the duplicate is drained and closed); two messages sent in
    /// that window can take different links and arrive swapped. None is lost either way.
    ///
    /// The targets are served at once, not one after another: a peer whose link is full
    /// (it reads slowly) delays only its own entry; `send` returns when every target's
    /// message is handed over or failed, as a map from each named target to its result
    /// (the shape of [`ask`](Self::ask)'s). For many messages to one peer,
    /// [`to`](Self::to) is the cheaper path.
    ///
    /// From 512 bytes on ([`SEND_COPY_BELOW`](hail_link::SEND_COPY_BELOW)) `msg` is not
    /// copied: each target's link keeps it until written, as
    /// [`PeerSender::send_bytes`](crate::PeerSender::send_bytes) does.
    #[must_use = "each target's result says whether its message was handed over"]
    pub async fn send(
        &self,
        targets: impl Into<Targets>,
        msg: Bytes,
    ) -> HashMap<String, Result<(), SendError>> {
        let names = self.target_names(targets.into());
        let sends = names.into_iter().map(|name| {
            let link = self.shared.resolve_link(&name);
            // Each link keeps the one payload (a reference count each), not a copy.
            let msg = msg.clone();
            async move {
                let len = msg.len();
                let r = match link {
                    Ok(link) => link
                        .send_bytes(&[MESSAGE_TAG], msg)
                        .await
                        .map_err(|e| link_error(e, len, &name)),
                    Err(e) => Err(SendError::Resolve(e)),
                };
                (name, r)
            }
        });
        join_all(sends).await.into_iter().collect()
    }

    /// Asks each target `question` and waits for all answers, at most `timeout`. Returns
    /// as soon as every target answered or failed; a peer already gone fails at once.
    pub async fn ask(
        &self,
        targets: impl Into<Targets>,
        question: Bytes,
        timeout: Duration,
    ) -> HashMap<String, Result<Bytes, AskError>> {
        let names = self.target_names(targets.into());
        let calls = names.into_iter().map(|name| {
            let q = question.to_vec();
            let peer = self.shared.resolve_rpc(&name);
            async move {
                let r = match peer {
                    Err(e) => Err(AskError::Resolve(e)),
                    Ok(peer) => match peer.execute::<_, Vec<u8>>(ASK_METHOD, q, timeout).await {
                        Ok(answer) => Ok(Bytes::from(answer)),
                        Err(RpcError::Timeout) => Err(AskError::NoAnswer),
                        Err(RpcError::Handler(m)) => Err(AskError::Handler(m)),
                        Err(RpcError::UnknownMethod(_)) => {
                            Err(AskError::Handler("no question handler".into()))
                        }
                        Err(_) => Err(AskError::Unreachable),
                    },
                };
                (name, r)
            }
        });
        join_all(calls).await.into_iter().collect()
    }

    /// Encodes `msg` in the device's [`MessageFormat`](crate::MessageFormat) and
    /// [`send`](Self::send)s it. Fails, sending nothing, when the value cannot be encoded
    /// in the format.
    pub async fn send_msg<T: Serialize + ?Sized>(
        &self,
        targets: impl Into<Targets>,
        msg: &T,
    ) -> Result<HashMap<String, Result<(), SendError>>, FormatError> {
        let bytes = self.format.encode(msg)?;
        Ok(self.send(targets, bytes).await)
    }

    /// [`ask`](Self::ask) with a typed question and typed answers, both in the device's
    /// [`MessageFormat`](crate::MessageFormat); an answer that does not decode is
    /// [`AskError::Undecodable`]. Fails, asking nobody, when the question cannot be
    /// encoded.
    pub async fn ask_msg<Q: Serialize + ?Sized, A: DeserializeOwned>(
        &self,
        targets: impl Into<Targets>,
        question: &Q,
        timeout: Duration,
    ) -> Result<HashMap<String, Result<A, AskError>>, FormatError> {
        let q = self.format.encode(question)?;
        let format = self.format;
        Ok(self
            .ask(targets, q, timeout)
            .await
            .into_iter()
            .map(|(name, r)| {
                let r = r.and_then(|a| format.decode(&a).map_err(AskError::Undecodable));
                (name, r)
            })
            .collect())
    }

    fn target_names(&self, targets: Targets) -> Vec<String> {
        match targets {
            Targets::One(n) => vec![n],
            Targets::Many(v) => v,
            Targets::All => {
                let mut names: Vec<String> = self.peers().into_iter().map(|p| p.name).collect();
                names.dedup();
                names
            }
        }
    }
}

/// Binds the method behind `ask`. It carries the question only: the asker is the link's
/// proven peer ([`caller`](super::caller::caller)), as the sender of a message (a link
/// frame of its own, [`MESSAGE_TAG`]) is.
pub(super) fn bind_builtin(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let _ = shared
        .handlers
        .bind_with(ASK_METHOD, move |peer: RpcPeer, q: Vec<u8>| {
            let handler = weak.upgrade().and_then(|s| s.question.get().cloned());
            let from = super::caller::caller_name(&peer);
            async move {
                let Some(h) = handler else {
                    return Err("no question handler".to_string());
                };
                let Some(from) = from else {
                    return Err("a question from a peer that has not joined".to_string());
                };
                h(from, Bytes::from(q)).await.map(|b| b.to_vec())
            }
        });
}
