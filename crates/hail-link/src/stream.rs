//! The byte stream under a link, split into the reader's and the writer's half: a TCP
//! socket, or any other `AsyncRead + AsyncWrite` stream (the in-memory network's), boxed.
//!
//! TCP keeps its own path: its halves are split without a lock and the reader waits for
//! readiness without holding a read buffer. Another stream is split with
//! [`tokio::io::split`]; its reader waits by reading one byte, so an idle link over it
//! holds no read buffer either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Any stream a link can run over.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// Splits a TCP socket into the halves a link's reader and writer own.
pub(crate) fn split_tcp(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (rd, wr) = stream.into_split();
    (ReadHalf::Tcp(rd), WriteHalf::Tcp(wr))
}

/// Splits any other stream into the halves a link's reader and writer own.
pub(crate) fn split_boxed(stream: Box<dyn ByteStream>) -> (ReadHalf, WriteHalf) {
    let (rd, wr) = tokio::io::split(stream);
    let rd = StreamRead {
        rd,
        peeked: None,
        eof: false,
    };
    (ReadHalf::Stream(rd), WriteHalf::Stream(wr))
}

/// The reader task's half.
pub(crate) enum ReadHalf {
    /// A TCP socket's read half.
    Tcp(OwnedReadHalf),
    /// Another stream's.
    Stream(StreamRead),
}

/// The read half of a stream without readiness: waiting reads one byte ahead.
pub(crate) struct StreamRead {
    rd: tokio::io::ReadHalf<Box<dyn ByteStream>>,
    /// The byte [`ReadHalf::readable`] read while waiting, not yet handed out.
    peeked: Option<u8>,
    /// [`ReadHalf::readable`] saw the end of the stream.
    eof: bool,
}

impl ReadHalf {
    /// Waits for more bytes and appends them to `buf`: `Ok(0)` at the end of the stream.
    /// (The handshake's read; the reader task waits without a buffer instead.)
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable().await?,
                done => return done,
            }
        }
    }

    /// Reads what is there now into `buf` without waiting: `Ok(0)` at the end of the
    /// stream, an error of kind `WouldBlock` when nothing is there. Reads at most what
    /// `buf` has room for (`BufMut::limit` bounds a read).
    pub(crate) fn try_read_buf<B: BufMut>(&mut self, buf: &mut B) -> io::Result<usize> {
        match self {
            Self::Tcp(rd) => {
                // One poll, as `StreamRead` does: unlike `try_read_buf`, a poll that reads
                // less than it asked for clears the socket's readiness (epoll reports the
                // next bytes), so the read after a drained socket returns `WouldBlock`
                // without a system call. The caller waits with `readable`.
                let mut cx = Context::from_waker(Waker::noop());
                match tokio_util::io::poll_read_buf(Pin::new(rd), &mut cx, buf) {
                    Poll::Ready(r) => r,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
            Self::Stream(s) => s.try_read_buf(buf),
        }
    }

    /// Waits until [`try_read_buf`](Self::try_read_buf) has something to say (bytes, the
    /// end of the stream, an error), without a read buffer. Cancel-safe. May return
    /// spuriously.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(rd) => rd.readable().await,
            Self::Stream(s) => s.readable().await,
        }
    }
}

impl StreamRead {
    fn try_read_buf<B: BufMut>(&mut self, buf: &mut B) -> io::Result<usize> {
        let mut n = 0;
        if let Some(b) = self.peeked.take() {
            buf.put_u8(b);
            n = 1;
        }
        if self.eof {
            return Ok(n);
        }
        // One poll that never registers our task: the caller waits with `readable`.
        let mut cx = Context::from_waker(Waker::noop());
        let read = self.rd.read_buf(buf);
        tokio::pin!(read);
        match read.poll(&mut cx) {
            Poll::Ready(Ok(0)) => {
                self.eof = true;
                Ok(n)
            }
            Poll::Ready(Ok(k)) => Ok(n + k),
            // The peeked byte first; the error comes back on the next call.
            Poll::Ready(Err(e)) if n == 0 => Err(e),
            Poll::Ready(Err(_)) => Ok(n),
            Poll::Pending if n == 0 => Err(io::ErrorKind::WouldBlock.into()),
            Poll::Pending => Ok(n),
        }
    }

    async fn readable(&mut self) -> io::Result<()> {
        if self.peeked.is_some() || self.eof {
            return Ok(());
        }
        let mut one = [0u8; 1];
        // Dropped before it completes, `read` has taken nothing.
        match self.rd.read(&mut one).await? {
            0 => self.eof = true,
            _ => self.peeked = Some(one[0]),
        }
        Ok(())
    }
}

/// The writer task's half.
pub(crate) enum WriteHalf {
    /// A TCP socket's write half.
    Tcp(OwnedWriteHalf),
    /// Another stream's.
    Stream(tokio::io::WriteHalf<Box<dyn ByteStream>>),
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Self::Stream(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            Self::Stream(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(w) => w.is_write_vectored(),
            Self::Stream(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_flush(cx),
            Self::Stream(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Self::Stream(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_boxed_stream_reads_without_a_buffer_while_waiting() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut rd, _wr) = split_boxed(Box::new(a));
        let mut buf = BytesMut::with_capacity(16);
        let e = rd.try_read_buf(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        b.write_all(b"hello").await.unwrap();
        rd.readable().await.unwrap();
        // The byte read while waiting comes first, then the rest.
        assert_eq!(rd.try_read_buf(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..], b"hello");
        b.write_all(b"!").await.unwrap();
        drop(b);
        rd.readable().await.unwrap();
        assert_eq!(rd.try_read_buf(&mut buf).unwrap(), 1);
        rd.readable().await.unwrap();
        assert_eq!(rd.try_read_buf(&mut buf).unwrap(), 0, "end of stream");
        assert_eq!(&buf[..], b"hello!");
    }
}
