//! The hit-path lookup: probe points hashed by address.
//!
//! Open addressing with linear probing over a fixed array of atomic
//! pointers. Readers (the trap path) take no lock: they load pointers and
//! follow them; writers (registration, serialised by the registry lock)
//! publish a new point with one atomic store and retire the old one only
//! after a grace period (`Core::synchronize` in `register.rs`). Removed entries become
//! tombstones, which later inserts reuse.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Entries in the table (a power of two; at most half are ever in use).
pub const CAPACITY: usize = 4096;
/// Most probe points (distinct addresses) at once.
pub const MAX_POINTS: usize = CAPACITY / 2;

/// Something with an address key.
pub trait Keyed {
    /// The key.
    fn key(&self) -> u64;
}

/// A lock-free-readable address table of `T`s owned elsewhere.
pub struct AddrTable<T> {
    slots: [AtomicPtr<T>; CAPACITY],
    len: AtomicUsize,
}

fn tombstone<T>() -> *mut T {
    ptr::without_provenance_mut(1)
}

fn hash(key: u64) -> usize {
    // Fibonacci hashing: instruction addresses differ in low bits.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % CAPACITY
}

impl<T: Keyed> AddrTable<T> {
    /// An empty table.
    pub const fn new() -> Self {
        AddrTable {
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; CAPACITY],
            len: AtomicUsize::new(0),
        }
    }

    /// The entry for `key` (hit path: no lock, no allocation).
    pub fn get(&self, key: u64) -> Option<&T> {
        let mut i = hash(key);
        for _ in 0..CAPACITY {
            let p = self.slots.get(i)?.load(Ordering::Acquire);
            if p.is_null() {
                return None;
            }
            if p != tombstone() {
                // SAFETY: published pointers stay valid until a grace period
                // after they are unpublished; the caller is inside the hit
                // path, which the grace period waits for.
                let entry = unsafe { &*p };
                if entry.key() == key {
                    return Some(entry);
                }
            }
            i = (i + 1) % CAPACITY;
        }
        None
    }

    fn find_index(&self, key: u64) -> Option<usize> {
        let mut i = hash(key);
        for _ in 0..CAPACITY {
            let p = self.slots.get(i)?.load(Ordering::Acquire);
            if p.is_null() {
                return None;
            }
            // SAFETY: as in `get`; writers are serialised by the caller.
            if p != tombstone() && unsafe { &*p }.key() == key {
                return Some(i);
            }
            i = (i + 1) % CAPACITY;
        }
        None
    }

    /// Publishes `entry` under its key, returning the entry it replaces (to
    /// be retired after a grace period), or `Err(entry)` when full.
    /// Writers must be serialised.
    pub fn publish(&self, entry: *mut T) -> Result<Option<*mut T>, *mut T> {
        // SAFETY: the caller passes a valid pointer it owns.
        let key = unsafe { &*entry }.key();
        if let Some(i) = self.find_index(key)
            && let Some(slot) = self.slots.get(i)
        {
            return Ok(Some(slot.swap(entry, Ordering::AcqRel)));
        }
        if self.len.load(Ordering::Relaxed) >= MAX_POINTS {
            return Err(entry);
        }
        let mut i = hash(key);
        for _ in 0..CAPACITY {
            let Some(slot) = self.slots.get(i) else {
                break;
            };
            let p = slot.load(Ordering::Acquire);
            if p.is_null() || p == tombstone() {
                slot.store(entry, Ordering::Release);
                self.len.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            i = (i + 1) % CAPACITY;
        }
        Err(entry)
    }

    /// Unpublishes the entry for `key`, returning it (to be retired after a
    /// grace period). Writers must be serialised.
    pub fn remove(&self, key: u64) -> Option<*mut T> {
        let i = self.find_index(key)?;
        let old = self.slots.get(i)?.swap(tombstone(), Ordering::AcqRel);
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(old)
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

impl<T: Keyed> Default for AddrTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(u64);
    impl Keyed for E {
        fn key(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn publish_get_remove_reuse() {
        let t: Box<AddrTable<E>> = Box::default();
        let mut owned = Vec::new();
        for k in 0..1000u64 {
            let e = Box::into_raw(Box::new(E(0xffff_8000_0010_0000 + k * 3)));
            owned.push(e);
            assert_eq!(t.publish(e), Ok(None));
        }
        for k in 0..1000u64 {
            let key = 0xffff_8000_0010_0000 + k * 3;
            assert_eq!(t.get(key).map(|e| e.0), Some(key));
            assert!(t.get(key + 1).is_none());
        }
        // 10,000 remove/re-insert cycles do not fill the table with tombstones.
        for round in 0..10_000u64 {
            let key = 0xffff_8000_0010_0000 + (round % 1000) * 3;
            let old = t.remove(key).unwrap();
            assert!(t.get(key).is_none());
            assert_eq!(t.publish(old), Ok(None));
        }
        assert_eq!(t.len(), 1000);
        let e = Box::into_raw(Box::new(E(0xffff_8000_0010_0000)));
        let replaced = t.publish(e).unwrap().unwrap();
        assert_eq!(t.len(), 1000);
        owned.push(e);
        owned.retain(|&p| p != replaced);
        // SAFETY: test-owned boxes, no longer in use.
        unsafe { drop(Box::from_raw(replaced)) };
        for p in owned {
            // SAFETY: test-owned boxes.
            unsafe { drop(Box::from_raw(p)) };
        }
    }
}
