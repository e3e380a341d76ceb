//! Large frames received into anonymous mappings of their own (see [`MAPPED_FROM`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use hail_wire::WireError;
use memmap2::{MmapMut, MmapOptions};

/// A frame body of at least this many bytes (128 KiB, glibc's default mmap threshold) is
/// received into an anonymous mapping of its own, filled as its bytes arrive (only what
/// came is resident) and given back to the system when the frame is dropped, whatever
/// the allocator does. A heap buffer is what glibc keeps: once it has freed one mapped
/// buffer of 15 MiB it raises its threshold to that size, serves every later frame from
/// its arenas and keeps what they free (misbehave's `frames` grew the process by 71 MiB
/// over idle in 60 s while the budget counted 28; docs/security.md). A header alone
/// reserves nothing; how much room the first bytes get is [`MAX_RESERVED`]'s rule; a
/// dropped frame's mapping may be kept for the next ([`POOL_BYTES`]). Where no mapping
/// can be made, a heap buffer of the same room serves.
pub(crate) const MAPPED_FROM: usize = 128 * 1024;

/// Most room reserved at once, in this process, in the mappings of large frames still
/// arriving: 64 MiB. Within it a large frame's mapping is made of its whole length with
/// its first bytes (one mapping, no copy); past it the mapping grows by doubling with
/// what came (see [`Large::grow`]), so headers that announce large frames, however many,
/// reserve no more than this plus twice what their connections hold (which the budget
/// bounds): a header of 4 bytes made the process reserve the 16 MiB it announced, and a
/// thousand connections 16 GiB (past a 32-bit address space, or the commit limit under
/// strict overcommit).
pub(crate) const MAX_RESERVED: usize = 64 << 20;

/// Most bytes of mappings kept, in this process, after their frames were dropped, for
/// the next large frames: 4 MiB, none larger than that. A kept mapping's pages are
/// resident already, so the next frame of about its size takes no page fault per 4 KiB
/// (12 % of the time at 1 MiB frames, `link/throughput-1MiB`); larger frames, and
/// mappings past the total, go back to the system at once.
pub(crate) const POOL_BYTES: usize = 4 << 20;

/// Size of a memory page, for what a partly filled mapping holds resident.
pub(crate) const PAGE: usize = 4096;

/// Room reserved now in the mappings of large frames still arriving (see
/// [`MAX_RESERVED`]).
static RESERVED: AtomicUsize = AtomicUsize::new(0);

/// Mappings of dropped frames kept for the next (see [`POOL_BYTES`]).
static POOL: Mutex<Pool> = Mutex::new(Pool {
    maps: Vec::new(),
    bytes: 0,
});

#[derive(Debug)]
struct Pool {
    maps: Vec<MmapMut>,
    /// Their lengths, in all.
    bytes: usize,
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // Every update is two plain field writes: a poisoned lock is still consistent.
    POOL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A kept mapping for a body of `len` bytes: the smallest of at least `len` and at most
/// twice it.
fn take_kept(len: usize) -> Option<MmapMut> {
    let mut pool = pool();
    let (i, _) = pool
        .maps
        .iter()
        .enumerate()
        .filter(|(_, m)| (len..=2 * len).contains(&m.len()))
        .min_by_key(|(_, m)| m.len())?;
    let map = pool.maps.swap_remove(i);
    pool.bytes -= map.len();
    Some(map)
}

/// Keeps `map` for the next large frame if the pool has room, else unmaps it.
fn give_back(map: MmapMut) {
    let mut pool = pool();
    if pool.bytes + map.len() <= POOL_BYTES {
        pool.bytes += map.len();
        pool.maps.push(map);
        return;
    }
    drop(pool);
    drop(map); // unmapped, outside the lock
}

/// A whole large frame's mapping, as its `Bytes` own it: the body is its first `len`
/// bytes; dropped, it goes back to the pool or to the system.
struct Received {
    map: Option<MmapMut>,
    len: usize,
}

impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |m| &m[..self.len])
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            give_back(map);
        }
    }
}

/// A large frame being received (see [`MAPPED_FROM`]).
#[derive(Debug)]
pub(super) struct Large {
    body: Body,
    /// The body's length, from its header.
    len: usize,
    /// Bytes of the body received so far.
    pub(super) filled: usize,
    /// What this frame adds to [`RESERVED`]: its room, until it is whole or dropped.
    reserved: usize,
}

impl Drop for Large {
    fn drop(&mut self) {
        RESERVED.fetch_sub(std::mem::take(&mut self.reserved), Ordering::Relaxed);
    }
}

/// Where a large frame's body is received.
#[derive(Debug)]
enum Body {
    /// An anonymous mapping (a kept one may be longer than the body).
    Mapped(MmapMut),
    /// Where no mapping could be made (and before the first bytes): a heap buffer.
    Heap(Vec<u8>),
}

impl Large {
    /// A body of `len` bytes to come; nothing is reserved before its bytes come.
    pub(super) fn new(len: usize) -> Self {
        Self {
            body: Body::Heap(Vec::new()),
            len,
            filled: 0,
            reserved: 0,
        }
    }

    /// The body's length, from its header.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Moves what belongs to the body from the front of `src` (advanced past it);
    /// [`WireError::Io`] when there is no memory for it.
    pub(super) fn take(&mut self, src: &mut &[u8]) -> Result<(), WireError> {
        let n = (self.len - self.filled).min(src.len());
        let (part, rest) = src.split_at(n);
        let end = self.filled + n;
        if end > self.capacity() {
            self.grow(end)?;
        }
        match &mut self.body {
            Body::Mapped(map) => map[self.filled..end].copy_from_slice(part),
            Body::Heap(heap) => heap.extend_from_slice(part),
        }
        self.filled = end;
        *src = rest;
        Ok(())
    }

    /// Bytes the body has room for.
    pub(super) fn capacity(&self) -> usize {
        match &self.body {
            Body::Mapped(map) => map.len(),
            Body::Heap(heap) => heap.capacity(),
        }
    }

    /// Room for at least `end` bytes: the body's whole length while [`MAX_RESERVED`]
    /// allows (a kept mapping if one fits); else twice the room (at least
    /// [`MAPPED_FROM`], at most the body's length), so at most twice what came (what the
    /// budget counts). A new mapping each time, what came so far copied into it and the
    /// old one given back: past the cap the bytes are copied once more at most, in all.
    fn grow(&mut self, end: usize) -> Result<(), WireError> {
        let (room, kept) = if self.reserve_whole() {
            (self.len, take_kept(self.len))
        } else {
            let doubled = (self.capacity() * 2)
                .max(end)
                .max(MAPPED_FROM)
                .min(self.len);
            // Past the cap, counted all the same (the next frame's whole length waits
            // until these are through).
            RESERVED.fetch_add(doubled.saturating_sub(self.reserved), Ordering::Relaxed);
            self.reserved = self.reserved.max(doubled);
            (doubled, None)
        };
        let filled = self.filled;
        let came = match &self.body {
            Body::Mapped(map) => &map[..filled],
            Body::Heap(heap) => &heap[..],
        };
        let made = match kept {
            Some(map) => Ok(map),
            None => MmapOptions::new().len(room).map_anon(),
        };
        let body = match made {
            Ok(mut map) => {
                map[..filled].copy_from_slice(came);
                Body::Mapped(map)
            }
            Err(e) => {
                let mut heap = Vec::new();
                heap.try_reserve_exact(room).map_err(|_| WireError::Io(e))?;
                heap.extend_from_slice(came);
                Body::Heap(heap)
            }
        };
        if let Body::Mapped(old) = std::mem::replace(&mut self.body, body) {
            give_back(old);
        }
        Ok(())
    }

    /// Counts the body's whole length in [`RESERVED`] if that stays within
    /// [`MAX_RESERVED`].
    fn reserve_whole(&mut self) -> bool {
        let add = self.len.saturating_sub(self.reserved);
        let fits = RESERVED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            now.checked_add(add).filter(|&total| total <= MAX_RESERVED)
        });
        if fits.is_ok() {
            self.reserved += add;
        }
        fits.is_ok()
    }

    /// Whether the whole body came.
    pub(super) fn is_whole(&self) -> bool {
        self.filled == self.len
    }

    /// Memory the body holds: what was filled, in whole pages.
    pub(super) fn resident(&self) -> usize {
        self.filled.div_ceil(PAGE) * PAGE
    }

    /// The whole body, owning its allocation (kept or unmapped when the last view is
    /// dropped).
    pub(super) fn into_bytes(mut self) -> Bytes {
        // Whole, it is a frame like any other (the budget counts it where it waits).
        RESERVED.fetch_sub(std::mem::take(&mut self.reserved), Ordering::Relaxed);
        match std::mem::replace(&mut self.body, Body::Heap(Vec::new())) {
            Body::Mapped(map) => Bytes::from_owner(Received {
                map: Some(map),
                len: self.len,
            }),
            Body::Heap(heap) => Bytes::from(heap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept mappings serve the next frames of about their size, and what is kept stays
    /// within [`POOL_BYTES`] whatever is dropped.
    #[test]
    fn a_dropped_frame_s_mapping_serves_the_next_within_the_pool_s_bound() {
        // A length no other test uses (another test's frame could take the kept map).
        let len = 1_234_567;
        let whole = |len: usize| {
            let mut l = Large::new(len);
            let body = vec![7u8; len];
            let mut src = &body[..];
            l.take(&mut src).unwrap();
            assert!(l.is_whole() && src.is_empty());
            l.into_bytes()
        };
        let a = whole(len);
        let at = a.as_ptr();
        assert_eq!(a.len(), len);
        drop(a);
        let b = whole(len);
        assert_eq!(b.as_ptr(), at, "the kept mapping serves the next frame");
        assert!(b.iter().all(|&x| x == 7));
        drop(b);
        // Many dropped at once: the pool keeps no more than its bound.
        let many: Vec<Bytes> = (0..8).map(|i| whole(MAPPED_FROM * 4 + i * PAGE)).collect();
        drop(many);
        let kept = pool();
        assert!(kept.bytes <= POOL_BYTES);
        assert_eq!(kept.bytes, kept.maps.iter().map(|m| m.len()).sum::<usize>());
        drop(kept);
        // Larger than the pool: never kept.
        let big = whole(POOL_BYTES + PAGE);
        let big_len = big.len();
        drop(big);
        assert!(pool().maps.iter().all(|m| m.len() != big_len));
    }
}
