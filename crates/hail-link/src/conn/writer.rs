//! The writer task: drains the send queue in batches, seals, writes, sends heartbeats
//! and, on a graceful close, the close frame and end of stream.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use hail_wire::ByteOrder;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::queue::Queued;
use super::{Phase, Shared, sleep_until_opt, wait_kill};
use crate::budget::Budget;
use crate::config::Heartbeat;
use crate::error::CloseReason;
use crate::proto::{self, CloseCode};
use crate::seal::Sealer;
use crate::stream::WriteHalf;
use crate::timing::Liveness;

/// Bytes of the batch being written, counted in the budget until written (or the writer
/// ends).
struct Held {
    budget: Budget,
    bytes: usize,
}

impl Held {
    fn release(&mut self) {
        self.budget.give(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// Keeps at most this much spare capacity in the writer's buffers while idle: 64 KiB.
const IDLE_KEEP: usize = 64 * 1024;

/// The most slices one vectored write takes (Linux's `UIO_MAXIOV`).
const MAX_IO_SLICES: usize = 1024;

/// Writes `q`'s bytes in order: its buffer in one go, or, with kept payloads, vectored
/// writes of the buffer's pieces and the payloads (no copy of a payload).
async fn write_queued(wr: &mut WriteHalf, q: &Queued) -> io::Result<()> {
    if !q.has_kept() {
        return wr.write_all(&q.buf).await;
    }
    let mut slices = q.io_slices();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = rest.len().min(MAX_IO_SLICES);
        let written = wr.write_vectored(&rest[..n]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}

/// What a writer starts with, boxed (see [`reader::Start`](super::reader::Start)).
pub(super) struct Start {
    pub(super) shared: Arc<Shared>,
    pub(super) wr: WriteHalf,
    pub(super) sealer: Option<Sealer>,
    pub(super) hb: Option<Heartbeat>,
    pub(super) order: ByteOrder,
}

pub(super) async fn run(start: Box<Start>) {
    let Start {
        shared,
        mut wr,
        mut sealer,
        hb,
        order,
    } = *start;
    let big = order == ByteOrder::BigEndian;
    let mut phase = shared.phase.subscribe();
    let mut batch = Queued::default();
    let mut sealed = BytesMut::new();
    let mut live = hb.map(|h| Liveness::new(h, Instant::now().into_std()));
    let stats = &shared.stats;
    // The batch taken from the queue stays counted in the budget until it is written.
    let mut held = Held {
        budget: shared.account.budget.clone(),
        bytes: 0,
    };
    // Frames of the last batch written.
    let mut last_batch = 0u64;
    loop {
        let (frames, closing) = {
            let mut out = shared.out();
            if out.dead {
                return;
            }
            std::mem::swap(&mut out.q, &mut batch);
            held.bytes = std::mem::take(&mut out.charged);
            (std::mem::take(&mut out.frames), out.closing)
        };
        let mut frames = frames;
        let mut last = false;
        if batch.is_empty() {
            if closing {
                if shared.hail {
                    let code = CloseCode::for_reason(&shared.final_reason());
                    proto::put_control(&mut batch.buf, big, proto::KIND_CLOSE, &[code.to_u8()]);
                    frames = 1;
                }
                last = true;
            } else {
                batch.shrink(IDLE_KEEP);
                if sealed.capacity() > IDLE_KEEP {
                    sealed = BytesMut::new();
                }
                let ping_at = live.as_ref().map(|l| Instant::from_std(l.ping_at()));
                tokio::select! {
                    biased;
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow_and_update() == Phase::Kill {
                            return;
                        }
                        continue;
                    }
                    () = shared.wake.notified() => {
                        // In a burst (the last write carried several frames), let the
                        // senders that woke us queue a little more first: one yield turns
                        // a write per message into a write per burst. A lone message (a
                        // request, an answer) goes out at once: the yield would cost it a
                        // turn of the scheduler and a poll of the I/O driver.
                        if last_batch > 1 {
                            tokio::task::yield_now().await;
                        }
                        continue;
                    }
                    () = sleep_until_opt(ping_at) => {
                        if !live.as_ref().is_some_and(|l| l.ping_due(Instant::now().into_std())) {
                            continue;
                        }
                        proto::put_control(&mut batch.buf, big, proto::KIND_HEARTBEAT, &[]);
                        frames = 1;
                    }
                }
            }
        } else {
            shared.space.notify_waiters();
        }
        let n = match &mut sealer {
            Some(s) => {
                s.seal_parts(batch.slices(), batch.len(), &mut sealed);
                sealed.len()
            }
            None => batch.len(),
        };
        // A write that waits is seen by the reader (see `reader::pause`): no timer here.
        shared.in_flight.store(n, Ordering::Relaxed);
        let res = tokio::select! {
            biased;
            r = async {
                match &sealer {
                    Some(_) => wr.write_all(&sealed).await,
                    None => write_queued(&mut wr, &batch).await,
                }
            } => r,
            () = wait_kill(&mut phase) => return,
        };
        shared.in_flight.store(0, Ordering::Relaxed);
        if let Err(e) = res {
            shared.kill(CloseReason::io(e));
            return;
        }
        held.release();
        last_batch = frames;
        stats.frames_written.fetch_add(frames, Ordering::Relaxed);
        stats.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(l) = &mut live {
            l.on_send(Instant::now().into_std());
        }
        batch.clear();
        if last {
            let _ = wr.shutdown().await;
            shared.flushed.send_replace(true);
            // Keep the write half (and so the socket) open until the reader is done.
            let _ = wait_kill(&mut phase).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::{BufMut, Bytes};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};

    use super::*;

    /// A stream whose vectored writes take a few bytes at a time, across slice edges
    /// (as a socket's may): `write_queued` must resume mid-slice, in order.
    struct Trickle {
        inner: DuplexStream,
        next: Box<dyn FnMut() -> usize + Send>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let take = 1 + (this.next)() % 3000;
            let joined: Vec<u8> = bufs
                .iter()
                .flat_map(|b| b.iter().copied())
                .take(take)
                .collect();
            Pin::new(&mut this.inner).poll_write(cx, &joined)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// More slices than one vectored write takes (`MAX_IO_SLICES`), written a few bytes at
    /// a time: the peer reads exactly the queued bytes, in order.
    #[tokio::test]
    async fn vectored_writes_resume_mid_slice_in_order() {
        let mut next = crate::test_rng(0x0bad_f00d_u32);
        let mut q = Queued::default();
        let mut want = Vec::new();
        for i in 0..1500usize {
            let head = vec![i as u8; next() % 5];
            q.buf.put_slice(&head);
            want.extend_from_slice(&head);
            let payload: Vec<u8> = (0..next() % 700).map(|j| (i + j) as u8).collect();
            want.extend_from_slice(&payload);
            q.keep(Bytes::from(payload));
        }
        assert!(q.io_slices().len() > MAX_IO_SLICES);
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let stream = Trickle {
            inner: ours,
            next: Box::new(crate::test_rng(0x5eed_u32)),
        };
        let (_rd, mut wr) = crate::stream::split_boxed(Box::new(stream));
        let total = want.len();
        let read = tokio::spawn(async move {
            let mut got = vec![0; total];
            theirs.read_exact(&mut got).await.map(|_| got)
        });
        write_queued(&mut wr, &q).await.unwrap();
        assert!(
            read.await.unwrap().unwrap() == want,
            "the bytes queued, in order"
        );
    }
}
