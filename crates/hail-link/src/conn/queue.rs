//! The send queue's bytes: frames copied in whole, and payloads kept by reference.
//!
//! A frame is either copied into one buffer (its header and payload), or its header is
//! copied and its payload, an owned [`Bytes`], is kept as it is and written after it
//! ([`Connection::send_bytes`](super::Connection::send_bytes)). In order, the queue's
//! bytes are the buffer up to the first kept payload's place, that payload, the buffer
//! on to the next one's place, and so on:
//!
//! ```text
//! buf:   [hdr A | payload A | hdr B | hdr C | payload C]     kept: [(at 12, payload B)]
//! bytes:  hdr A   payload A   hdr B   payload B  hdr C   payload C
//!        '-------- buf[..12] ------' (kept) '---- buf[12..] ----'
//! ```
//!
//! The writer writes them as one vectored write on a plaintext link (each payload straight
//! from where its owner put it) and seals them as records on a secured one (the seal's copy
//! is then the only one).

use std::io::IoSlice;

use bytes::{BufMut, Bytes, BytesMut};

/// One payload kept by reference: it goes after `buf[..at]`.
#[derive(Debug)]
struct Kept {
    at: usize,
    bytes: Bytes,
}

/// Frames waiting to be written, in order (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Queued {
    /// Frames copied in whole, and the headers of the kept payloads.
    pub(super) buf: BytesMut,
    kept: Vec<Kept>,
    /// The kept payloads' bytes.
    kept_len: usize,
}

impl Queued {
    /// Queued frames copied into one buffer (the reconnecting client's outage buffer).
    pub(super) fn from_buf(buf: BytesMut) -> Self {
        Self {
            buf,
            kept: Vec::new(),
            kept_len: 0,
        }
    }

    /// All the queued bytes, kept payloads included.
    pub(super) fn len(&self) -> usize {
        self.buf.len() + self.kept_len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when some payload is kept by reference (not in `buf`).
    pub(super) fn has_kept(&self) -> bool {
        !self.kept.is_empty()
    }

    /// Keeps `payload` after the bytes queued so far.
    pub(super) fn keep(&mut self, payload: Bytes) {
        self.kept_len += payload.len();
        self.kept.push(Kept {
            at: self.buf.len(),
            bytes: payload,
        });
    }

    /// Takes back everything queued from the length `len` on (a frame that did not fit).
    pub(super) fn truncate(&mut self, len: usize) {
        // The last kept payload starts after its place in `buf` and every kept one before.
        while let Some(k) = self.kept.last() {
            if k.at + self.kept_len - k.bytes.len() < len {
                break;
            }
            self.kept_len -= k.bytes.len();
            self.kept.pop();
        }
        self.buf.truncate(len - self.kept_len);
    }

    /// Empties the queue, keeping `buf`'s allocation (the kept payloads are dropped).
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.kept.clear();
        self.kept_len = 0;
    }

    /// Drops spare capacity above `keep` bytes (an idle writer's buffers).
    pub(super) fn shrink(&mut self, keep: usize) {
        if self.buf.capacity() > keep {
            self.buf = BytesMut::new();
        }
        if self.kept.capacity() > keep / 64 {
            self.kept = Vec::new();
        }
    }

    /// The queued bytes in order, as slices (some may be empty).
    pub(super) fn slices(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        self.kept
            .iter()
            .flat_map(move |k| {
                let head = &self.buf[from..k.at];
                from = k.at;
                [head, &k.bytes[..]]
            })
            .chain(std::iter::once_with(move || &self.buf[self.last_at()..]))
    }

    fn last_at(&self) -> usize {
        self.kept.last().map_or(0, |k| k.at)
    }

    /// The queued bytes as the slices of one vectored write (no empty ones).
    pub(super) fn io_slices(&self) -> Vec<IoSlice<'_>> {
        let mut v = Vec::with_capacity(self.kept.len() * 2 + 1);
        v.extend(self.slices().filter(|s| !s.is_empty()).map(IoSlice::new));
        v
    }

    /// Everything queued, copied into one buffer.
    pub(super) fn into_buf(self) -> BytesMut {
        if self.kept.is_empty() {
            return self.buf;
        }
        let mut all = BytesMut::with_capacity(self.len());
        for s in self.slices() {
            all.put_slice(s);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(q: &Queued) -> Vec<u8> {
        q.slices().flatten().copied().collect()
    }

    #[test]
    fn kept_payloads_come_in_their_places() {
        let mut q = Queued::default();
        q.buf.put_slice(b"ab");
        q.keep(Bytes::from_static(b"KEPT"));
        q.keep(Bytes::from_static(b"two"));
        q.buf.put_slice(b"cd");
        q.keep(Bytes::from_static(b"end"));
        assert_eq!(bytes(&q), b"abKEPTtwocdend");
        assert_eq!(q.len(), 14);
        let written: Vec<u8> = q.io_slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(written, b"abKEPTtwocdend");
        assert_eq!(q.io_slices().len(), 5, "no empty slices");
        assert_eq!(&q.into_buf()[..], b"abKEPTtwocdend");
    }

    #[test]
    fn truncating_takes_back_the_kept_payloads_past_the_length() {
        let mut q = Queued::default();
        q.buf.put_slice(b"ab");
        q.keep(Bytes::from_static(b"KEPT"));
        let len = q.len();
        q.buf.put_slice(b"hdr");
        q.keep(Bytes::from_static(b"gone"));
        q.truncate(len);
        assert_eq!(bytes(&q), b"abKEPT");
        assert_eq!(q.len(), 6);
        // A copied frame after a kept payload, taken back.
        q.buf.put_slice(b"more");
        q.truncate(len);
        assert_eq!(bytes(&q), b"abKEPT");
        q.truncate(2);
        assert_eq!(bytes(&q), b"ab");
        assert!(!q.has_kept());
        q.clear();
        assert!(q.is_empty());
    }

    /// Random mixes of copied frames and kept payloads (empty ones too), taken back to
    /// random frame boundaries as `push` does to a frame that did not fit, or to any
    /// earlier boundary: the queue's bytes, length and slices always equal a plain buffer
    /// that had the same frames appended and cut.
    #[test]
    fn truncating_any_mix_matches_a_plain_buffer() {
        let mut next = crate::test_rng(0x9e37_79b9_u32);
        for _ in 0..300 {
            let mut q = Queued::default();
            let mut model: Vec<u8> = Vec::new();
            // The length after each whole frame (0 first): where a truncate may land.
            let mut bounds = vec![0];
            for step in 0..60 {
                let b = (step % 251) as u8;
                match next() % 5 {
                    // A copied frame.
                    0 | 1 => {
                        let n = next() % 40;
                        q.buf.put_slice(&vec![b; n]);
                        model.extend(std::iter::repeat_n(b, n));
                        bounds.push(model.len());
                    }
                    // A header copied, its payload kept (sometimes empty).
                    2 | 3 => {
                        let (h, n) = (next() % 6, next() % 30);
                        q.buf.put_slice(&vec![b; h]);
                        let p: Vec<u8> = (0..n).map(|i| b.wrapping_add(i as u8)).collect();
                        model.extend_from_slice(&vec![b; h]);
                        model.extend_from_slice(&p);
                        q.keep(Bytes::from(p));
                        bounds.push(model.len());
                    }
                    // A frame that did not fit taken back, or a cut to an earlier frame.
                    _ => {
                        let n = next() % 20;
                        q.buf.put_slice(&vec![0xee; n]);
                        let to = if next().is_multiple_of(2) {
                            *bounds.last().unwrap()
                        } else {
                            bounds[next() % bounds.len()]
                        };
                        q.truncate(to);
                        model.truncate(to);
                        bounds.retain(|&x| x <= to);
                    }
                }
                assert_eq!(q.len(), model.len());
                assert_eq!(bytes(&q), model);
                let written: Vec<u8> = q.io_slices().iter().flat_map(|s| s.to_vec()).collect();
                assert_eq!(written, model);
                assert!(q.io_slices().iter().all(|s| !s.is_empty()));
            }
            assert_eq!(&q.into_buf()[..], &model[..]);
        }
    }

    #[test]
    fn a_queue_without_kept_payloads_is_its_buffer() {
        let q = Queued::from_buf(BytesMut::from(&b"frames"[..]));
        assert_eq!(bytes(&q), b"frames");
        assert_eq!(q.io_slices().len(), 1);
        assert_eq!(&q.into_buf()[..], b"frames");
    }
}
