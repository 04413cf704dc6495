//! The bounded event ring: one single-producer ring per CPU.
//!
//! Producers are probe handlers on their own CPU with interrupts off and
//! re-entry excluded by the per-CPU control block, so each per-CPU ring has
//! exactly one producer at a time and needs no lock on the hit path. The
//! consumer (the stub draining events) is serialised by a consumer-side lock
//! that the hit path never takes. A record that does not fit is dropped and
//! counted, never silently lost: `produced == delivered + dropped + pending`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes of ring per CPU: ~600 capture records, enough to absorb a
/// probe on a hot function between two passes of a consumer reading guest
/// RAM directly (issue 17) on a loaded host.
pub const RING_BYTES: usize = 64 * 1024;
/// Largest record (payload) the ring takes.
pub const MAX_RECORD: usize = 1024;
/// Each record is preceded by a 2-byte little-endian length.
const HEADER: usize = 2;

/// Counters of one ring or of all rings together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Capacity in bytes.
    pub size: u64,
    /// Records offered by probes.
    pub produced: u64,
    /// Records handed to the consumer.
    pub delivered: u64,
    /// Records that did not fit.
    pub dropped: u64,
}

/// One CPU's ring. `repr(C)`: a consumer outside the kernel (the shell
/// reading guest RAM through a shared mapping, issue 17) finds the fields
/// at the offsets [`layout`] reports.
#[repr(C)]
pub struct CpuRing {
    buf: UnsafeCell<[u8; RING_BYTES]>,
    /// Bytes ever written (producer-owned).
    head: AtomicUsize,
    /// Bytes ever consumed (consumer-owned: the stub, or the direct
    /// consumer while the probe core's consumer word names it).
    tail: AtomicUsize,
    produced: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Records the direct consumer took (written only by it, cumulative
    /// over its sessions; part of `delivered` in [`CpuRing::stats`]).
    direct_delivered: AtomicU64,
}

/// Where a consumer outside the kernel finds a ring's fields (byte offsets
/// from the start of a [`CpuRing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    /// Size of one ring struct (the stride of the per-CPU array).
    pub stride: usize,
    pub size: usize,
    pub buf: usize,
    pub head: usize,
    pub tail: usize,
    pub produced: usize,
    pub dropped: usize,
    pub direct_delivered: usize,
}

/// The offsets of [`CpuRing`]'s fields.
pub const fn layout() -> RingLayout {
    RingLayout {
        stride: core::mem::size_of::<CpuRing>(),
        size: RING_BYTES,
        buf: core::mem::offset_of!(CpuRing, buf),
        head: core::mem::offset_of!(CpuRing, head),
        tail: core::mem::offset_of!(CpuRing, tail),
        produced: core::mem::offset_of!(CpuRing, produced),
        dropped: core::mem::offset_of!(CpuRing, dropped),
        direct_delivered: core::mem::offset_of!(CpuRing, direct_delivered),
    }
}

// SAFETY: `buf` is written only by the single producer between `tail` and
// `head + len` and read only by the (serialised) consumer between `tail` and
// `head`; the atomics order the hand-over.
unsafe impl Sync for CpuRing {}

impl CpuRing {
    /// An empty ring.
    pub const fn new() -> Self {
        CpuRing {
            buf: UnsafeCell::new([0; RING_BYTES]),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            produced: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            direct_delivered: AtomicU64::new(0),
        }
    }

    /// Appends one record made of the concatenation of `parts`. Returns
    /// `false` (and counts a drop) when it does not fit.
    ///
    /// Only the CPU owning this ring may call it, with re-entry excluded.
    pub fn push(&self, parts: &[&[u8]]) -> bool {
        self.produced.fetch_add(1, Ordering::Relaxed);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if len > MAX_RECORD || used + HEADER + len > RING_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut at = head;
        // The cast is exact: len <= MAX_RECORD.
        let header = (len as u16).to_le_bytes();
        self.put(at, &header);
        at = at.wrapping_add(HEADER);
        for part in parts {
            self.put(at, part);
            at = at.wrapping_add(part.len());
        }
        self.head.store(at, Ordering::Release);
        true
    }

    /// [`CpuRing::push`] of one record made of `N` little-endian words,
    /// written straight into the ring slot when it does not wrap (word
    /// stores, no staging copy, no `memcpy` call): the capture hit path's
    /// fixed header. Same accounting as `push`.
    ///
    /// Only the CPU owning this ring may call it, with re-entry excluded.
    pub fn push_words<const N: usize>(&self, words: &[u64; N]) -> bool {
        self.produced.fetch_add(1, Ordering::Relaxed);
        let len = 8 * N;
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if len > MAX_RECORD || used + HEADER + len > RING_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.write_words(head, len, words);
        self.head
            .store(head.wrapping_add(HEADER + len), Ordering::Release);
        true
    }

    /// [`CpuRing::push_words`] followed by byte `parts` (the capture
    /// header, then fetch results and stack bytes): the words go straight
    /// into the slot, the parts through `put`. Same accounting as `push`.
    ///
    /// Only the CPU owning this ring may call it, with re-entry excluded.
    pub fn push_words_and<const N: usize>(&self, words: &[u64; N], parts: &[&[u8]]) -> bool {
        self.produced.fetch_add(1, Ordering::Relaxed);
        let len = 8 * N + parts.iter().map(|p| p.len()).sum::<usize>();
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if len > MAX_RECORD || used + HEADER + len > RING_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.write_words(head, len, words);
        let mut at = head.wrapping_add(HEADER + 8 * N);
        for part in parts {
            self.put(at, part);
            at = at.wrapping_add(part.len());
        }
        self.head.store(at, Ordering::Release);
        true
    }

    /// Writes a record's length prefix (`len` bytes of payload) and its
    /// leading `words` at ring position `head` (the producer's, checked
    /// to fit by the caller): word stores in place unless the words wrap.
    fn write_words<const N: usize>(&self, head: usize, len: usize, words: &[u64; N]) {
        let len8 = 8 * N;
        let idx = head % RING_BYTES;
        // The cast is exact: len <= MAX_RECORD.
        let header = (len as u16).to_le_bytes();
        if idx + HEADER + len8 <= RING_BYTES {
            let base = self.buf.get().cast::<u8>();
            // SAFETY: idx + HEADER + 8 * N <= RING_BYTES: the length and
            // the words lie inside `buf`; the bytes from head to tail + RING_BYTES
            // are the producer's until `head` is published (as in `put`).
            unsafe {
                let dst = base.add(idx);
                dst.cast::<[u8; HEADER]>().write_unaligned(header);
                let words_at = dst.add(HEADER).cast::<u64>();
                for (i, w) in words.iter().enumerate() {
                    words_at.add(i).write_unaligned(w.to_le());
                }
            }
        } else {
            self.put(head, &header);
            // SAFETY: a `[u64; N]` is `8 * N` initialised bytes, every byte
            // pattern is a valid u8, and x86_64 is little-endian like the
            // record format.
            let bytes = unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len8) };
            self.put(head.wrapping_add(HEADER), bytes);
        }
    }

    /// Copies `bytes` to ring position `at` (two pieces when it wraps).
    fn put(&self, at: usize, bytes: &[u8]) {
        let base = self.buf.get().cast::<u8>();
        let idx = at % RING_BYTES;
        let first = bytes.len().min(RING_BYTES - idx);
        let (a, b) = bytes.split_at(first);
        // SAFETY: idx + a.len() <= RING_BYTES and b.len() <= RING_BYTES -
        // a.len() (records are at most MAX_RECORD < RING_BYTES); the bytes
        // between head and tail + RING_BYTES belong to the producer until
        // `head` is published (Release), and the consumer reads them only
        // after loading `head` (Acquire).
        unsafe {
            core::ptr::copy_nonoverlapping(a.as_ptr(), base.add(idx), a.len());
            core::ptr::copy_nonoverlapping(b.as_ptr(), base, b.len());
        }
    }

    /// Copies ring bytes at position `at` into `out`.
    fn get(&self, at: usize, out: &mut [u8]) {
        let base = self.buf.get().cast::<u8>();
        let idx = at % RING_BYTES;
        let first = out.len().min(RING_BYTES - idx);
        let (a, b) = out.split_at_mut(first);
        // SAFETY: as in `put`, for the published bytes between tail and
        // head, which the (serialised) consumer owns.
        unsafe {
            core::ptr::copy_nonoverlapping(base.add(idx), a.as_mut_ptr(), a.len());
            core::ptr::copy_nonoverlapping(base, b.as_mut_ptr(), b.len());
        }
    }

    /// The timestamp of the oldest record (a raw event record's bytes
    /// 16..24, see `recorder.rs`) without taking it; `None` when empty, 0
    /// for a record too short to hold one. For merging the CPUs' rings in
    /// timestamp order; consumers must be serialised by the caller.
    pub fn peek_tsc(&self) -> Option<u64> {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let mut header = [0u8; HEADER];
        self.get(tail, &mut header);
        if usize::from(u16::from_le_bytes(header)) < 24 {
            return Some(0);
        }
        let mut first = [0u8; 24];
        self.get(tail.wrapping_add(HEADER), &mut first);
        let mut tsc = [0u8; 8];
        tsc.copy_from_slice(first.get(16..24).unwrap_or(&[0; 8]));
        Some(u64::from_le_bytes(tsc))
    }

    /// Pops the oldest record into `out`, returning its length; `None` when
    /// empty. A record longer than `out` is consumed and truncated.
    /// Consumers must be serialised by the caller.
    pub fn pop(&self, out: &mut [u8]) -> Option<usize> {
        loop {
            let tail = self.tail.load(Ordering::Acquire);
            let head = self.head.load(Ordering::Acquire);
            if head == tail {
                return None;
            }
            let mut header = [0u8; HEADER];
            self.get(tail, &mut header);
            let len = usize::from(u16::from_le_bytes(header));
            let n = len.min(out.len());
            if let Some(dst) = out.get_mut(..n) {
                self.get(tail.wrapping_add(HEADER), dst);
            }
            // A compare-and-swap, not a store: a direct consumer outside
            // the kernel may have taken this record in a race with the
            // hand-back (see `Core::set_direct`); then it is theirs (not
            // delivered twice) and the next one is read.
            if self
                .tail
                .compare_exchange(
                    tail,
                    tail.wrapping_add(HEADER + len),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                return Some(n);
            }
        }
    }

    /// This ring's counters.
    pub fn stats(&self) -> RingStats {
        RingStats {
            size: RING_BYTES as u64,
            produced: self.produced.load(Ordering::Relaxed),
            delivered: self
                .delivered
                .load(Ordering::Relaxed)
                .wrapping_add(self.direct_delivered.load(Ordering::Acquire)),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Default for CpuRing {
    fn default() -> Self {
        Self::new()
    }
}

impl RingStats {
    /// Sums two sets of counters.
    pub fn plus(self, o: RingStats) -> RingStats {
        RingStats {
            size: self.size + o.size,
            produced: self.produced + o.produced,
            delivered: self.delivered + o.delivered,
            dropped: self.dropped + o.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_order() {
        let r = Box::new(CpuRing::new());
        assert!(r.push(&[b"ab", b"c"]));
        assert!(r.push(&[b"defg"]));
        let mut out = [0u8; 16];
        assert_eq!(r.pop(&mut out), Some(3));
        assert_eq!(&out[..3], b"abc");
        assert_eq!(r.pop(&mut out), Some(4));
        assert_eq!(&out[..4], b"defg");
        assert_eq!(r.pop(&mut out), None);
    }

    #[test]
    fn overflow_counts_drops_exactly_and_wraps() {
        let r = Box::new(CpuRing::new());
        let rec = [7u8; 100];
        let mut accepted = 0u64;
        for _ in 0..1000 {
            if r.push(&[&rec]) {
                accepted += 1;
            }
        }
        let s = r.stats();
        assert_eq!(s.produced, 1000);
        assert_eq!(accepted, (RING_BYTES / 102) as u64);
        assert_eq!(s.dropped, 1000 - accepted);
        let mut out = [0u8; 128];
        let mut n = 0;
        while let Some(len) = r.pop(&mut out) {
            assert_eq!(len, 100);
            n += 1;
        }
        assert_eq!(n, accepted);
        // Wrap-around: keep producing and consuming past the buffer end.
        for i in 0..10_000u32 {
            assert!(r.push(&[&i.to_le_bytes(), &rec[..(i % 50) as usize]]));
            assert_eq!(r.pop(&mut out), Some(4 + (i % 50) as usize));
            assert_eq!(out[..4], i.to_le_bytes());
        }
        let s = r.stats();
        assert_eq!(s.produced, s.delivered + s.dropped);
    }

    #[test]
    fn word_records_round_trip_across_the_wrap_and_count_drops() {
        let r = Box::new(CpuRing::new());
        let mut out = [0u8; 128];
        // 98 bytes per record: positions drift through every alignment and
        // across the end of the buffer, both in place and split.
        for i in 0..2_000u64 {
            let words: [u64; 12] = core::array::from_fn(|k| i * 100 + k as u64);
            assert!(r.push_words(&words));
            assert_eq!(r.pop(&mut out), Some(96));
            for (k, c) in out[..96].chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                assert_eq!(u64::from_le_bytes(w), i * 100 + k as u64);
            }
        }
        let mut accepted = 0u64;
        for _ in 0..1000 {
            if r.push_words(&[1u64; 12]) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, (RING_BYTES / 98) as u64);
        let s = r.stats();
        assert_eq!(s.produced, 3000);
        assert_eq!(s.dropped, 1000 - accepted);
        assert_eq!(s.produced, s.delivered + s.dropped + accepted);
    }

    #[test]
    fn words_and_parts_round_trip_across_the_wrap() {
        let r = Box::new(CpuRing::new());
        let mut out = [0u8; 256];
        for i in 0..3_000u64 {
            let words: [u64; 12] = core::array::from_fn(|k| i ^ k as u64);
            let tail = [(i % 251) as u8; 37];
            let n = (i % 38) as usize;
            assert!(r.push_words_and(&words, &[&tail[..n], b"xy"]));
            assert_eq!(r.pop(&mut out), Some(96 + n + 2));
            for (k, c) in out[..96].chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                assert_eq!(u64::from_le_bytes(w), i ^ k as u64);
            }
            assert_eq!(&out[96..96 + n], &tail[..n]);
            assert_eq!(&out[96 + n..98 + n], b"xy");
        }
        let big = [0u8; MAX_RECORD];
        assert!(!r.push_words_and(&[0u64; 1], &[&big]));
        let s = r.stats();
        assert_eq!((s.produced, s.dropped, s.delivered), (3001, 1, 3000));
    }

    #[test]
    fn oversized_record_is_dropped() {
        let r = Box::new(CpuRing::new());
        let big = [0u8; MAX_RECORD + 1];
        assert!(!r.push(&[&big]));
        assert_eq!(r.stats().dropped, 1);
    }
}
