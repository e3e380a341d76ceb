//! The memory budget: one [`Budget`] per server or device, drawn on by every connection's
//! receive buffer (partial frames), send queue and undelivered messages.
//!
//! Accounting is in bytes held, updated once per read, per 4 KiB of queued frames, per
//! written batch and per batch of messages handed to the application: never per byte.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Default total of a [`Budget`]: 32 MiB of partial frames, send queues and undelivered
/// messages across all connections of a server (or of everything sharing the budget).
///
/// What a process holds is more than what the budget counts: allocations are rounded up,
/// buffers have room to spare, and the allocator keeps some freed memory. Under the
/// attacks of `misbehave` (`cargo xtask attack`, docs/security.md) `hail listen` grew by
/// up to 1.5 times its budget; 32 MiB keeps a device within the 64 MiB over its idle size
/// that issue 12 asks, where 48 MiB (the default before) did not.
pub const DEFAULT_BUDGET_BYTES: usize = 32 << 20;

/// Default share of one peer: a quarter of the budget (8 MiB of the default 32 MiB), or
/// one frame of the link's largest size plus a read if that is more (see
/// [`Budget::with_share`]).
pub const DEFAULT_PEER_SHARE_DIVISOR: usize = 4;

/// The last part of a budget kept for connections that hold little: an eighth (4 MiB of
/// the default 32 MiB). Once the budget is spent down to it, connections holding
/// [`SMALL_HOLDER`] or more, or whose partial frame's header announced that much, pause;
/// the others read on, 4 KiB a read, until the whole budget is spent.
pub const RESERVE_DIVISOR: usize = 8;

/// A connection holding less than this (64 KiB, one read) may read into the budget's
/// reserve (see [`RESERVE_DIVISOR`]): a peer asking a question is not held up by peers
/// that hold megabytes.
pub const SMALL_HOLDER: usize = 64 << 10;

/// A memory budget shared by connections: bytes held in partial frames (the receive
/// buffers), in send queues and in received messages not yet taken by the application.
///
/// Cheap to clone; clones are the same budget. A [`Server`](crate::Server) makes one of
/// [`DEFAULT_BUDGET_BYTES`] (32 MiB) for its connections unless its
/// [`LinkConfigBuilder::budget`](crate::LinkConfigBuilder::budget) names one; give the same budget to
/// several servers, clients and connections (of one device, say) and they share it.
///
/// The rules, for each connection drawing on it:
///
/// * **Reading pauses** while the connection holds its peer's share or more (bytes of its
///   partial frame plus its received messages the application has not taken, and what
///   layers above hold for it, [`Connection::hold`](crate::Connection::hold)), while the
///   budget is spent down to its reserve (the last eighth, [`RESERVE_DIVISOR`]) and the
///   connection holds [`SMALL_HOLDER`] (64 KiB) or more (its partial frame counted as
///   the length its header announced), or while the whole budget is spent. The connection then reads nothing, so TCP flow control slows the peer down;
///   it reads again as soon as bytes are released (a message taken, a queue written,
///   another connection gone). Nothing is dropped and nothing grows. The peers holding
///   the most are held back first: one that holds little (a question, a small message)
///   goes on reading while others hold the budget.
/// * **A stalled peer is closed**: a connection whose reading is paused while it holds a
///   partial frame and none of its messages wait for the application (so only the peer
///   could make progress, and the budget does not let it) is closed after
///   [`LinkConfig::budget_stall`](crate::LinkConfig::budget_stall) (default 10 s) with
///   [`CloseReason::MemoryBudget`](crate::CloseReason::MemoryBudget), counted in
///   [`BudgetStats::stalled_closes`] and
///   [`ServerStats::budget_closes`](crate::ServerStats::budget_closes).
/// * **Send queues** draw from it too: while the budget is spent, a connection's send
///   queue takes a message only when it is empty (`send` waits, `try_send` fails with
///   [`LinkError::Full`](crate::LinkError::Full); a [`broadcast`](crate::Server::broadcast)
///   still fills each queue to its own bound), so each queue holds at most one message
///   beyond the batch being written. A connection whose peer reads nothing, so that one
///   write waits for the stall time and the budget is spent when it looks, is closed the
///   same way ([`CloseReason::MemoryBudget`](crate::CloseReason::MemoryBudget), counted):
///   the queues of peers that do not read cannot keep every other connection from
///   reading.
///
/// The check comes before a read and the read is counted right after it, so the budget
/// can be passed by at most one read (64 KiB; 4 KiB once it is spent down to its reserve)
/// per runtime worker thread, and each connection starting a large frame takes at most
/// one 4 KiB read of the reserve before its header (on a secured link, its first
/// record's) marks it as large; the check comes
/// again before each further batch of messages is decoded from what was read, so holds a
/// layer above makes as it takes messages (at a cost of its own per message, as
/// hail-discovery's device does) stop the decoding within a batch (256 messages) and the
/// receiver's backlog. A batch being taken over into such holds is counted twice for that
/// moment (its charge is given back when the application next asks for an event, so the
/// bytes are never counted nowhere while they change hands). A send queue is
/// counted in steps of 4 KiB (so it counts up to 4 KiB more than it holds). A delivered
/// batch of at most 2 KiB is not counted while it waits for the application (the event
/// stream's capacity in events bounds those: at most 2 MiB per stream of 1024 events).
/// Allocators may
/// round what is held up (a growing frame buffer by up to twice its bytes, in address
/// space rather than resident memory).
///
/// ```
/// use hail_link::{Budget, LinkConfig, ServerConfig};
///
/// let budget = Budget::new(8 << 20); // 8 MiB, a peer may hold 2 MiB
/// assert_eq!(budget.peer_share(), 2 << 20);
/// let link = LinkConfig::builder().max_frame_len(1 << 20).budget(budget.clone()).build()?;
/// let config = ServerConfig::builder().link(link).build()?;
/// # let _ = config;
/// assert_eq!(budget.stats().in_use, 0);
/// # Ok::<(), hail_link::LinkConfigError>(())
/// ```
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    total: usize,
    share: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    /// Readers paused on this budget (notified only when some are).
    waiters: AtomicUsize,
    freed: Notify,
    stalled_closes: AtomicU64,
}

/// What a [`Budget`] holds now and held at most.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetStats {
    /// The budget's total, in bytes.
    pub total: usize,
    /// The most one peer may hold, in bytes ([`Budget::peer_share`]).
    pub peer_share: usize,
    /// Bytes held now, by all connections drawing on it.
    pub in_use: usize,
    /// The most bytes held at once since the budget was made.
    pub peak: usize,
    /// Connections closed with [`CloseReason::MemoryBudget`](crate::CloseReason::MemoryBudget).
    pub stalled_closes: u64,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("total", &self.inner.total)
            .field("peer_share", &self.inner.share)
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

impl Default for Budget {
    /// A budget of [`DEFAULT_BUDGET_BYTES`] (32 MiB), a quarter of it per peer.
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET_BYTES)
    }
}

impl Budget {
    /// A budget of `total` bytes (at least 1) of which one peer may hold a quarter
    /// ([`DEFAULT_PEER_SHARE_DIVISOR`]).
    pub fn new(total: usize) -> Self {
        Self::with_share(total, total / DEFAULT_PEER_SHARE_DIVISOR)
    }

    /// A budget of `total` bytes (at least 1) of which one peer may hold `peer_share`
    /// (at most `total`, at least 1).
    ///
    /// A connection whose link accepts larger frames may still hold one frame of its
    /// [`max_frame_len`](crate::LinkConfig::max_frame_len) plus one read (64 KiB), so that
    /// every frame the link accepts can arrive: its share is the larger of the two.
    pub fn with_share(total: usize, peer_share: usize) -> Self {
        let total = total.max(1);
        Self {
            inner: Arc::new(Inner {
                total,
                share: peer_share.clamp(1, total),
                used: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                waiters: AtomicUsize::new(0),
                freed: Notify::new(),
                stalled_closes: AtomicU64::new(0),
            }),
        }
    }

    /// The total, in bytes.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// The most one peer may hold, in bytes (see [`with_share`](Self::with_share)).
    pub fn peer_share(&self) -> usize {
        self.inner.share
    }

    /// Bytes held now.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// True when the whole budget is held.
    pub fn is_spent(&self) -> bool {
        self.inner.used.load(Ordering::SeqCst) >= self.inner.total
    }

    /// True when a connection that holds `held` bytes, of at most `share`, and will hold
    /// `claimed` (at least `held`: its partial frame counted as the length its header
    /// announced) must not read now: it holds its share, or the budget is spent down to
    /// its reserve and it claims [`SMALL_HOLDER`] or more, or the whole budget is spent.
    ///
    /// Judged by the claim, a peer starting a large frame is a large holder from the read
    /// that brought its header, so the reserve is left to peers sending small frames.
    pub(crate) fn holds_back(&self, held: usize, claimed: usize, share: usize) -> bool {
        if held >= share {
            return true;
        }
        let used = self.inner.used.load(Ordering::SeqCst);
        used >= self.inner.total || (claimed >= SMALL_HOLDER && used >= self.reserve_line())
    }

    /// True when the budget is spent down to its reserve ([`RESERVE_DIVISOR`]).
    pub(crate) fn in_reserve(&self) -> bool {
        self.inner.used.load(Ordering::SeqCst) >= self.reserve_line()
    }

    /// Where the reserve begins: bytes held past this many are the reserve's.
    fn reserve_line(&self) -> usize {
        let total = self.inner.total;
        total - total / RESERVE_DIVISOR
    }

    /// What the budget holds now and held at most.
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            total: self.inner.total,
            peer_share: self.inner.share,
            in_use: self.in_use(),
            peak: self.inner.peak.load(Ordering::Relaxed),
            stalled_closes: self.inner.stalled_closes.load(Ordering::Relaxed),
        }
    }

    /// True when both are the same budget.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Counts `n` more bytes held.
    pub(crate) fn take(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.inner.used.fetch_add(n, Ordering::SeqCst) + n;
        // A load first: the read-modify-write only on a new peak.
        if now > self.inner.peak.load(Ordering::Relaxed) {
            self.inner.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Counts `n` bytes released, and wakes the paused readers if there are any.
    pub(crate) fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.inner.used.fetch_sub(n, Ordering::SeqCst);
        if self.inner.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.freed.notify_waiters();
        }
    }

    pub(crate) fn count_stall_close(&self) {
        self.inner.stalled_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A [`Hold`] of 0 bytes on this budget, for a layer above that keeps bytes of its own
    /// (hail-rpc's queued requests, say): what it [`set`](Hold::set)s counts in the budget
    /// until it is dropped.
    pub fn hold(&self) -> Hold {
        Hold {
            account: Account::new(self.clone()),
            bytes: 0,
        }
    }

    /// Registers a paused reader: while the returned guard lives, releases wake it through
    /// [`Waiter::freed`]. Check the condition again after making the future and enabling it.
    pub(crate) fn waiter(&self) -> Waiter<'_> {
        self.inner.waiters.fetch_add(1, Ordering::SeqCst);
        Waiter { budget: self }
    }
}

/// A reader paused on a [`Budget`].
pub(crate) struct Waiter<'a> {
    budget: &'a Budget,
}

impl Waiter<'_> {
    /// A future that completes at the next release; enable it before checking again.
    pub(crate) fn freed(&self) -> Notified<'_> {
        self.budget.inner.freed.notified()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.budget.inner.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One connection's draw on a budget: what its received messages hold until the
/// application takes them (its partial frame is counted by its reader, its send queue by
/// the queue itself).
pub(crate) struct Account {
    pub(crate) budget: Budget,
    /// Bytes of received messages not yet taken by the application.
    pub(crate) delivered: AtomicUsize,
}

impl Account {
    pub(crate) fn new(budget: Budget) -> Arc<Self> {
        Arc::new(Self {
            budget,
            delivered: AtomicUsize::new(0),
        })
    }

    /// Bytes of this connection that wait on our side for the application: while there
    /// are any, the connection's peer is not the one stalling.
    pub(crate) fn waiting_here(&self) -> usize {
        self.delivered.load(Ordering::SeqCst)
    }
}

/// Bytes a layer above hail-link keeps, counted in a [`Budget`] until dropped. Made by
/// [`Budget::hold`] with 0 bytes; [`set`](Self::set) says how many it holds now (one count
/// per change, nothing when unchanged). Holding bytes never fails: it makes the budget's
/// rules apply sooner (links stop reading once it is spent), so a layer that can refuse
/// work should leave room ([`Budget::in_use`], [`Budget::total`]); hail-rpc refuses
/// queued requests past three quarters of the budget.
///
/// ```
/// let budget = hail_link::Budget::new(1 << 20);
/// let mut hold = budget.hold();
/// hold.set(4096);
/// assert_eq!(budget.in_use(), 4096);
/// drop(hold);
/// assert_eq!(budget.in_use(), 0);
/// ```
pub struct Hold {
    /// Where it counts: a connection's account (its share too), or one of its own.
    account: Arc<Account>,
    bytes: usize,
}

impl Hold {
    /// A hold of 0 bytes that counts in `account`'s budget and in its connection's share.
    pub(crate) fn on(account: &Arc<Account>) -> Self {
        Self {
            account: Arc::clone(account),
            bytes: 0,
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The budget it counts in.
    pub fn budget(&self) -> &Budget {
        &self.account.budget
    }

    /// Holds `bytes` from now on (more or fewer than before).
    pub fn set(&mut self, bytes: usize) {
        use std::cmp::Ordering as Cmp;
        let account = &self.account;
        match bytes.cmp(&self.bytes) {
            Cmp::Equal => return,
            Cmp::Greater => {
                let more = bytes - self.bytes;
                account.delivered.fetch_add(more, Ordering::SeqCst);
                account.budget.take(more);
            }
            Cmp::Less => {
                let fewer = self.bytes - bytes;
                account.delivered.fetch_sub(fewer, Ordering::SeqCst);
                account.budget.give(fewer);
            }
        }
        self.bytes = bytes;
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold").field("bytes", &self.bytes).finish()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Bytes of a batch of received messages, held against the connection's account until
/// the application takes the batch (dropped).
pub(crate) struct Charge {
    account: Arc<Account>,
    bytes: usize,
}

impl Charge {
    /// Moves `bytes` the reader already counted in the budget (they were its partial
    /// frame) to the batch: no change to the budget's total.
    pub(crate) fn moved(account: &Arc<Account>, bytes: usize) -> Self {
        account.delivered.fetch_add(bytes, Ordering::SeqCst);
        Self {
            account: Arc::clone(account),
            bytes,
        }
    }
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Charge")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account
            .delivered
            .fetch_sub(self.bytes, Ordering::SeqCst);
        self.account.budget.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_peaks_and_shares() {
        let b = Budget::new(1000);
        assert_eq!(b.peer_share(), 250);
        b.take(600);
        b.take(500);
        assert!(b.is_spent());
        b.give(500);
        assert!(!b.is_spent());
        let s = b.stats();
        assert_eq!((s.in_use, s.peak, s.total), (600, 1100, 1000));
        let account = Account::new(b.clone());
        let charge = Charge::moved(&account, 100);
        assert_eq!(account.delivered.load(Ordering::SeqCst), 100);
        assert_eq!(b.in_use(), 600, "moved, not taken again");
        drop(charge);
        assert_eq!(account.delivered.load(Ordering::SeqCst), 0);
        assert_eq!(b.in_use(), 500);
        assert_eq!(Budget::with_share(10, 50).peer_share(), 10);
        assert!(b.same(&b.clone()) && !b.same(&Budget::default()));
    }

    /// A frame header's bytes.
    const HEADER: usize = 4;

    #[test]
    fn the_reserve_is_for_connections_that_hold_little() {
        let b = Budget::new(8 * SMALL_HOLDER);
        let share = b.peer_share();
        assert!(!b.holds_back(0, 0, share));
        assert!(b.holds_back(share, share, share), "its share");
        let account = Account::new(b.clone());
        let mut hold = Hold::on(&account);
        hold.set(7 * SMALL_HOLDER);
        assert_eq!(
            account.waiting_here(),
            7 * SMALL_HOLDER,
            "counted in its share"
        );
        assert!(b.in_reserve());
        assert!(
            b.holds_back(SMALL_HOLDER, SMALL_HOLDER, share),
            "down to the reserve: large holders wait"
        );
        assert!(
            !b.holds_back(SMALL_HOLDER - 1, SMALL_HOLDER - 1, share),
            "small ones read on"
        );
        assert!(
            b.holds_back(HEADER, 10 * SMALL_HOLDER, share),
            "as do those that announced a large frame"
        );
        hold.set(8 * SMALL_HOLDER);
        assert!(b.holds_back(0, 0, share), "spent: everyone waits");
        drop(hold);
        assert_eq!((b.in_use(), account.waiting_here()), (0, 0));
    }
}
