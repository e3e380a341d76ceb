//! Per-connection limits: [`RpcConfig`].

use std::time::Duration;

/// Limits of one RPC connection, made by [`RpcConfig::builder`] (or
/// [`RpcConfig::default`]). Every setting has a default, stated on its setter in
/// [`RpcConfigBuilder`]; the getters of the same names read them back.
///
/// ```
/// use std::time::Duration;
/// use hail_rpc::RpcConfig;
/// let config = RpcConfig::builder()
///     .max_in_flight(256)
///     .keep_replies_for(Duration::from_secs(10))
///     .build();
/// assert_eq!(config.max_in_flight(), 256);
/// assert_eq!(config.max_concurrent_handlers(), 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RpcConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) max_kept_replies: usize,
    pub(crate) max_kept_bytes: usize,
    pub(crate) keep_replies_for: Duration,
    pub(crate) max_concurrent_handlers: usize,
    pub(crate) max_queued_requests: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) max_outbox_bytes: usize,
    pub(crate) inline_first_poll: bool,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_kept_replies: 1024,
            max_kept_bytes: 64 << 20,
            keep_replies_for: Duration::from_secs(60),
            max_concurrent_handlers: 64,
            max_queued_requests: 1024,
            max_queued_bytes: 64 << 20,
            max_outbox_bytes: 1 << 20,
            inline_first_poll: true,
        }
    }
}

impl RpcConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RpcConfigBuilder {
        RpcConfigBuilder::default()
    }

    /// Calls awaiting a reply at once (see [`RpcConfigBuilder::max_in_flight`]).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Replies kept for `poll` at most (see [`RpcConfigBuilder::max_kept_replies`]).
    pub fn max_kept_replies(&self) -> usize {
        self.max_kept_replies
    }

    /// Bytes of kept reply bodies at most (see [`RpcConfigBuilder::max_kept_bytes`]).
    pub fn max_kept_bytes(&self) -> usize {
        self.max_kept_bytes
    }

    /// How long a `send` reply is waited for and kept (see
    /// [`RpcConfigBuilder::keep_replies_for`]).
    pub fn keep_replies_for(&self) -> Duration {
        self.keep_replies_for
    }

    /// Handlers run at once for the peer (see
    /// [`RpcConfigBuilder::max_concurrent_handlers`]).
    pub fn max_concurrent_handlers(&self) -> usize {
        self.max_concurrent_handlers
    }

    /// Requests that may wait for a handler slot (see
    /// [`RpcConfigBuilder::max_queued_requests`]).
    pub fn max_queued_requests(&self) -> usize {
        self.max_queued_requests
    }

    /// Bytes of arguments queued requests may hold (see
    /// [`RpcConfigBuilder::max_queued_bytes`]).
    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued_bytes
    }

    /// Bytes that may wait in the outbox before the peer counts as a slow reader (see
    /// [`RpcConfigBuilder::max_outbox_bytes`]).
    pub fn max_outbox_bytes(&self) -> usize {
        self.max_outbox_bytes
    }

    /// Whether handlers are first polled on the connection's task (see
    /// [`RpcConfigBuilder::inline_first_poll`]).
    pub fn inline_first_poll(&self) -> bool {
        self.inline_first_poll
    }
}

/// Builds an [`RpcConfig`]: each setter states its default and what it costs. Every value
/// is usable (a count below its minimum is raised to it), so [`build`](Self::build)
/// cannot fail.
#[derive(Debug, Clone, Default)]
pub struct RpcConfigBuilder {
    config: RpcConfig,
}

impl RpcConfigBuilder {
    /// Calls this side may have awaiting a reply at once (default 1024, at least 1).
    /// `execute` and `send` wait for room beyond it: the caller's backpressure (`notify`,
    /// which awaits no reply, waits only for room in the link's send queue). Each costs a
    /// table entry of about 100 bytes.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n.max(1);
        self
    }

    /// Replies to `send` kept for `poll` at most (default 1024, at least 1). When one
    /// more arrives, the oldest kept reply is evicted and `poll` answers it with
    /// [`Expired`](crate::RpcError::Expired). Each costs its body plus about 100 bytes.
    pub fn max_kept_replies(mut self, n: usize) -> Self {
        self.config.max_kept_replies = n.max(1);
        self
    }

    /// Bytes of reply bodies kept for `poll` at most (default 64 MiB). When a reply would
    /// pass it, the oldest kept replies are evicted (answered `Expired`) until it fits; one
    /// reply larger than the limit alone is still kept. Bounds what a peer answering with
    /// huge bodies can make this side hold.
    pub fn max_kept_bytes(mut self, n: usize) -> Self {
        self.config.max_kept_bytes = n;
        self
    }

    /// How long a `send` call may wait for its reply and then for `poll` to collect it
    /// (default 60 s), each counted on its own. Past it the call is cancelled or the reply
    /// evicted, and `poll` answers [`Expired`](crate::RpcError::Expired).
    pub fn keep_replies_for(mut self, d: Duration) -> Self {
        self.config.keep_replies_for = d;
        self
    }

    /// Handlers this side runs at once for the peer (default 64, at least 1). Requests
    /// beyond it wait in a queue; they never stop the connection from reading replies.
    pub fn max_concurrent_handlers(mut self, n: usize) -> Self {
        self.config.max_concurrent_handlers = n.max(1);
        self
    }

    /// Requests (and notifications) that may wait for a handler slot (default 1024).
    /// Beyond it a request is answered [`Busy`](crate::RpcError::Busy) without running
    /// and a notification is dropped and counted.
    pub fn max_queued_requests(mut self, n: usize) -> Self {
        self.config.max_queued_requests = n;
        self
    }

    /// Bytes of arguments that queued requests may hold (default 64 MiB). A request that
    /// would pass it is answered [`Busy`](crate::RpcError::Busy) (a notification dropped),
    /// so a peer sending huge arguments cannot make this side hold more.
    pub fn max_queued_bytes(mut self, n: usize) -> Self {
        self.config.max_queued_bytes = n;
        self
    }

    /// Bytes of packets for the peer that may wait in this connection's outbox when the
    /// link's send queue is full (default 1 MiB, at least 1): the replies of a peer that
    /// sends requests faster than it reads the answers.
    ///
    /// Packets that do not fit the link wait in this one queue, in order, and one task per
    /// connection hands them to the link as it makes room; no task is spawned per packet.
    /// Each waiting packet counts its length plus 64 bytes (its place in the queue and its
    /// allocation), so a queue of tiny answers is bounded by what it costs.
    /// While the outbox holds this many bytes or more, the peer is a slow reader and its
    /// new requests are not run, whatever the method (the built-in PING included):
    ///
    /// - each is answered [`Busy`](crate::RpcError::Busy) (counted in
    ///   [`SessionStats::busy_slow_reader`](crate::proto::SessionStats::busy_slow_reader)), and so is
    ///   each queued request that reaches a handler slot meanwhile; those answers wait in
    ///   the outbox too;
    /// - once the outbox holds twice this bound, new requests are dropped without an
    ///   answer (counted in
    ///   [`SessionStats::unanswered_slow_reader`](crate::proto::SessionStats::unanswered_slow_reader)):
    ///   a peer that has not read that much will not read a refusal either, and its call
    ///   ends at its own timeout.
    ///
    /// Requests are served again as soon as the peer reads and the outbox falls below the
    /// bound. Nothing accepted is dropped: a handler that runs is answered. So the outbox
    /// holds at most twice this bound, plus the replies of the handlers that were running
    /// when it filled (at most [`max_concurrent_handlers`](Self::max_concurrent_handlers))
    /// and a `BUSY` answer (about 10 bytes, counted as the 32 its allocation takes, and its
    /// place in the queue) per queued request. Both kinds of refusal are
    /// logged at warn level, at most once a second per connection.
    pub fn max_outbox_bytes(mut self, n: usize) -> Self {
        self.config.max_outbox_bytes = n.max(1);
        self
    }

    /// Whether a handler is first polled on the connection's own task (default true).
    ///
    /// A handler that finishes without waiting (most do: decode, compute a little, encode)
    /// then costs no task of its own, which makes calls cheaper (about 1.3x the
    /// throughput with 64 calls in flight); one that waits continues in a task. The price:
    /// the handler's code up to its first `.await` runs where the connection reads its
    /// packets, so long computations belong in
    /// [`bind_blocking`](crate::RpcPeer::bind_blocking). With `false`, every handler runs
    /// in a task of its own from the start.
    pub fn inline_first_poll(mut self, on: bool) -> Self {
        self.config.inline_first_poll = on;
        self
    }

    /// The configuration.
    pub fn build(self) -> RpcConfig {
        self.config
    }
}
