//! The handler registry: [`Handlers`], shared by every peer that serves the same methods.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RpcPeer;
use crate::error::BindError;
use crate::method::{MAX_METHOD_NAME_LEN, Method};
use crate::packet;

/// Why a handler produced no result.
#[derive(Debug)]
pub(crate) enum Failure {
    BadArguments(String),
    Handler(String),
    Panicked,
}

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, Failure>> + Send>>;

/// A type-erased handler: postcard bytes in, postcard bytes out.
pub(crate) trait ErasedHandler: Send + Sync {
    fn call(&self, peer: RpcPeer, args: Bytes) -> HandlerFuture;
}

/// Remembers a handler's argument, result, error and future types without owning any.
type Signature<A, R, E, Fut> = PhantomData<fn(A) -> (R, E, Fut)>;

struct AsyncHandler<F, A, R, E, Fut>(F, Signature<A, R, E, Fut>);

impl<F, A, R, E, Fut> ErasedHandler for AsyncHandler<F, A, R, E, Fut>
where
    F: Fn(RpcPeer, A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    E: fmt::Display + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    fn call(&self, peer: RpcPeer, args: Bytes) -> HandlerFuture {
        let args = hail_wire::postcard_from_slice::<A>(&args, hail_wire::DEFAULT_MAX_DEPTH);
        let fut = match args {
            // The handler's own synchronous part runs inside the guarded future below.
            Ok(a) => Ok(AssertUnwindSafe(|| (self.0)(peer, a)).catch_unwind_call()),
            Err(e) => Err(Failure::BadArguments(e.to_string())),
        };
        Box::pin(async move {
            let fut = fut?.map_err(|()| Failure::Panicked)?;
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(r)) => encode_result(&r),
                Ok(Err(e)) => Err(Failure::Handler(e.to_string())),
                Err(_) => Err(Failure::Panicked),
            }
        })
    }
}

struct BlockingHandler<F, A, R, E>(Arc<F>, PhantomData<fn(A) -> (R, E)>);

impl<F, A, R, E> ErasedHandler for BlockingHandler<F, A, R, E>
where
    F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: fmt::Display + 'static,
{
    fn call(&self, _peer: RpcPeer, args: Bytes) -> HandlerFuture {
        let f = self.0.clone();
        Box::pin(async move {
            let a = hail_wire::postcard_from_slice::<A>(&args, hail_wire::DEFAULT_MAX_DEPTH)
                .map_err(|e| Failure::BadArguments(e.to_string()))?;
            // The closure's result is encoded on the blocking thread too.
            let job = tokio::task::spawn_blocking(move || match f(a) {
                Ok(r) => encode_result(&r),
                Err(e) => Err(Failure::Handler(e.to_string())),
            });
            match job.await {
                Ok(res) => res,
                Err(_) => Err(Failure::Panicked),
            }
        })
    }
}

/// Calls a closure, turning a panic into `Err(())`.
trait CatchUnwindCall<T> {
    fn catch_unwind_call(self) -> Result<T, ()>;
}

impl<T, F: FnOnce() -> T> CatchUnwindCall<T> for AssertUnwindSafe<F> {
    fn catch_unwind_call(self) -> Result<T, ()> {
        std::panic::catch_unwind(self).map_err(|_| ())
    }
}

fn encode_result<R: Serialize>(r: &R) -> Result<Bytes, Failure> {
    packet::to_postcard(r)
        .map_err(|e| Failure::Handler(format!("the result could not be encoded: {e}")))
}

/// The methods a peer answers, shared by reference: cloning a `Handlers` gives another
/// handle to the same table. On a server, one table serves every client.
///
/// Handlers receive a [`RpcPeer`] for the connection the call came on, so they can call
/// back without capturing a peer (a handler that captures its own peer keeps it alive).
#[derive(Clone, Default)]
pub struct Handlers {
    table: Arc<RwLock<HashMap<Method, Arc<dyn ErasedHandler>>>>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        f.debug_set().entries(table.keys()).finish()
    }
}

impl Handlers {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds an async handler that receives the calling peer and the arguments.
    /// See [`RpcPeer::bind`] for the rules.
    pub fn bind_with<A, R, E, F, Fut>(
        &self,
        method: impl Into<Method>,
        handler: F,
    ) -> Result<(), BindError>
    where
        F: Fn(RpcPeer, A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: fmt::Display + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.insert(method.into(), Arc::new(AsyncHandler(handler, PhantomData)))
    }

    /// Binds an async handler. See [`RpcPeer::bind`].
    pub fn bind<A, R, E, F, Fut>(
        &self,
        method: impl Into<Method>,
        handler: F,
    ) -> Result<(), BindError>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: fmt::Display + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.bind_with(method, move |_peer, args| handler(args))
    }

    /// Binds a blocking handler, run on tokio's blocking threads. See
    /// [`RpcPeer::bind_blocking`].
    pub fn bind_blocking<A, R, E, F>(
        &self,
        method: impl Into<Method>,
        handler: F,
    ) -> Result<(), BindError>
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.insert(
            method.into(),
            Arc::new(BlockingHandler(Arc::new(handler), PhantomData)),
        )
    }

    /// Removes the handler of `method`; returns whether one was bound. Calls already
    /// running finish; later calls get [`UnknownMethod`](crate::RpcError::UnknownMethod).
    pub fn unbind(&self, method: impl Into<Method>) -> bool {
        self.write().remove(&method.into()).is_some()
    }

    /// True when a handler is bound to `method`.
    pub fn is_bound(&self, method: impl Into<Method>) -> bool {
        self.read().contains_key(&method.into())
    }

    pub(crate) fn get(&self, method: &Method) -> Option<Arc<dyn ErasedHandler>> {
        self.read().get(method).cloned()
    }

    fn insert(&self, method: Method, h: Arc<dyn ErasedHandler>) -> Result<(), BindError> {
        match &method {
            Method::Opcode(op) if op.is_reserved() => return Err(BindError::Reserved(*op)),
            Method::Name(n) if n.len() > MAX_METHOD_NAME_LEN => {
                return Err(BindError::NameTooLong { len: n.len() });
            }
            _ => {}
        }
        let mut table = self.write();
        if table.contains_key(&method) {
            return Err(BindError::AlreadyBound(method));
        }
        table.insert(method, h);
        Ok(())
    }

    // A panic while holding the lock cannot leave the map half-updated (each operation is
    // one insert or remove), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Method, Arc<dyn ErasedHandler>>> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Method, Arc<dyn ErasedHandler>>> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }
}
