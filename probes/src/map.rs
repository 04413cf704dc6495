//! Maps of aggregating probes: keys and per-CPU aggregates in the kernel.
//!
//! A map is made with its probe, from a [`proto::agg::AggSpec`], in a
//! fixed memory budget: `capacity` entries follow from it and never grow.
//! The hit path (interrupts off, never nested on one CPU) evaluates the
//! key parts and the value, finds or inserts the key and updates this CPU's
//! copy of the entry's aggregate; nothing is sent to the host.
//!
//! Layout (all in one allocation each, made at creation):
//! - `slots`: an open-addressing table of `2 x capacity` (a power of two)
//!   words: 0 empty, 1 being inserted, `i + 2` holds entry `i`;
//! - `keys`: `capacity x key_words` words (entry `i`'s key);
//! - `values`: per CPU, `capacity x value_words` words: `count` alone; the
//!   buckets of `hist`/`lhist`; or count, sum, min, max for the others.
//!
//! Insertion claims an empty slot (compare-exchange 0 -> 1), then an entry
//! index (`used` below `capacity`), writes the key and publishes `i + 2`.
//! A full map refuses the insert and counts it (`map_full`); a key or value
//! that cannot be read counts `faults`. Nothing is ever dropped silently.
//! Values are atomics (uncontended: each CPU writes its own copy), so
//! reading, zeroing and clearing from the stub are exact.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use proto::agg::{self, AggFn, AggSpec, KeyKind, KeyValue, MAX_KEY_BYTES, MAX_KEY_PARTS, Stats};
use proto::bytecode::{self, Program};

use crate::ProbeError;

const EMPTY: u32 = 0;
const BUSY: u32 = 1;
/// Most words of one key.
const KEY_WORDS: usize = MAX_KEY_BYTES.div_ceil(8);
/// Words of a count/sum/min/max aggregate.
const STAT_WORDS: usize = 4;

/// Bytes of all maps together (on top of each map's own budget check).
pub const MAPS_MEMORY: usize = 16 * 1024 * 1024;
static MAPS_USED: AtomicU64 = AtomicU64::new(0);

/// Where a key part comes from: the common shapes are read directly.
// A map holds at most five of these, inline (no pointer to chase per hit).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
enum Src {
    Reg(u8),
    Ctx(u8),
    Prog(Program),
}

impl Src {
    fn of(p: &Program) -> Src {
        let code = p.code();
        match code {
            [op, n, bytecode::op::END] if *op == bytecode::op::REG => Src::Reg(*n),
            [op, n, bytecode::op::END] if *op == bytecode::op::CTX => Src::Ctx(*n),
            _ => Src::Prog(*p),
        }
    }

    #[inline(always)]
    fn eval(&self, env: &impl bytecode::Env) -> Option<u64> {
        match self {
            Src::Reg(n) => Some(env.reg(*n)),
            Src::Ctx(n) => Some(env.ctx(*n)),
            Src::Prog(p) => p.eval(env).ok(),
        }
    }
}

#[derive(Clone, Copy)]
struct Part {
    kind: KeyKind,
    src: Src,
}

/// One aggregating probe's map.
pub struct Map {
    func: AggFn,
    value: Option<Src>,
    parts: [Option<Part>; MAX_KEY_PARTS],
    /// The only key part, when it is one integer.
    one_int: Option<Src>,
    /// Key length in words.
    key_words: usize,
    /// Aggregate length in words.
    value_words: usize,
    /// Inner buckets of an `lhist`.
    lhist_n: usize,
    capacity: usize,
    ncpus: usize,
    slots: Vec<AtomicU32>,
    keys: Vec<AtomicU64>,
    values: Vec<AtomicU64>,
    /// Entry `i` is complete (key written): what printing shows.
    live: Vec<AtomicU32>,
    used: AtomicU32,
    map_full: AtomicU64,
    faults: AtomicU64,
    bytes: usize,
}

/// What [`Map::for_each`] calls per entry: key parts, aggregate, buckets.
pub type EntryFn<'a> = dyn FnMut(&mut dyn Iterator<Item = KeyValue<'_>>, Stats, &[(i32, u64)]) + 'a;

/// A snapshot of a map's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapInfo {
    pub func: AggFn,
    pub entries: u64,
    pub capacity: u64,
    pub map_full: u64,
    pub faults: u64,
    pub bytes: u64,
    kinds: [KeyKind; MAX_KEY_PARTS],
    nkinds: usize,
}

impl MapInfo {
    /// The key parts' kinds.
    pub fn key_kinds(&self) -> &[KeyKind] {
        self.kinds.get(..self.nkinds).unwrap_or(&[])
    }
}

fn alloc_words<T>(n: usize, make: impl Fn() -> T) -> Result<Vec<T>, ProbeError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| ProbeError::MapMemory)?;
    for _ in 0..n {
        v.push(make());
    }
    Ok(v)
}

impl Map {
    /// A map for `spec` with one aggregate copy per CPU (`ncpus`, 1..).
    pub fn new(spec: &AggSpec, ncpus: usize) -> Result<Map, ProbeError> {
        spec.validate().map_err(|_| ProbeError::MapSpec)?;
        let ncpus = ncpus.clamp(1, crate::kcb::MAX_CPUS);
        let mut parts = [None; MAX_KEY_PARTS];
        for (slot, k) in parts.iter_mut().zip(spec.keys()) {
            *slot = Some(Part {
                kind: k.kind,
                src: Src::of(&k.prog),
            });
        }
        let key_words = spec
            .keys()
            .map(|k| k.kind.size().div_ceil(8))
            .sum::<usize>();
        let buckets = spec.func.buckets();
        let value_words = match spec.func {
            AggFn::Count => 1,
            AggFn::Hist | AggFn::Lhist { .. } => buckets,
            _ => STAT_WORDS,
        };
        // Per entry: two slot words, the key, a copy of the aggregate per CPU.
        let entry = 3 * 4 + key_words * 8 + ncpus * value_words * 8;
        let budget = spec.budget as usize;
        let capacity = budget / entry;
        if capacity == 0 {
            return Err(ProbeError::MapBudget);
        }
        let table = (2 * capacity).next_power_of_two();
        let bytes = table * 4
            + capacity * 4
            + capacity * key_words * 8
            + ncpus * capacity * value_words * 8;
        let total = MAPS_USED.fetch_add(bytes as u64, Ordering::AcqRel) + bytes as u64;
        if total > MAPS_MEMORY as u64 {
            MAPS_USED.fetch_sub(bytes as u64, Ordering::AcqRel);
            return Err(ProbeError::MapMemory);
        }
        let made = (|| {
            Ok::<_, ProbeError>((
                alloc_words(table, || AtomicU32::new(EMPTY))?,
                alloc_words(capacity * key_words, || AtomicU64::new(0))?,
                alloc_words(ncpus * capacity * value_words, || AtomicU64::new(0))?,
                alloc_words(capacity, || AtomicU32::new(0))?,
            ))
        })();
        let (slots, keys, values, live) = match made {
            Ok(v) => v,
            Err(e) => {
                MAPS_USED.fetch_sub(bytes as u64, Ordering::AcqRel);
                return Err(e);
            }
        };
        let lhist_n = match spec.func {
            AggFn::Lhist { .. } => buckets.saturating_sub(2),
            _ => 0,
        };
        let one_int = match parts {
            [
                Some(Part {
                    kind: KeyKind::Int,
                    src,
                }),
                None,
                None,
                None,
            ] => Some(src),
            _ => None,
        };
        Ok(Map {
            func: spec.func,
            value: spec.value.as_ref().map(Src::of),
            parts,
            one_int,
            key_words,
            value_words,
            lhist_n,
            capacity,
            ncpus,
            slots,
            keys,
            values,
            live,
            used: AtomicU32::new(0),
            map_full: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            bytes,
        })
    }

    /// The counters.
    pub fn info(&self) -> MapInfo {
        let mut kinds = [KeyKind::Int; MAX_KEY_PARTS];
        let mut nkinds = 0;
        for (k, p) in kinds.iter_mut().zip(self.parts.iter().flatten()) {
            *k = p.kind;
            nkinds += 1;
        }
        MapInfo {
            func: self.func,
            entries: u64::from(self.used.load(Ordering::Acquire)).min(self.capacity as u64),
            capacity: self.capacity as u64,
            map_full: self.map_full.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            bytes: self.bytes as u64,
            kinds,
            nkinds,
        }
    }

    /// A hit: computes key and value with `env` and updates this CPU's
    /// aggregate (the CPU is `env.ctx(CTX_CPU)`, asked only when the map
    /// has more than one copy). Counts `map_full` or `faults` instead when
    /// it cannot.
    #[inline]
    pub fn update(&self, env: &impl bytecode::Env) {
        let value = match &self.value {
            Some(src) => match src.eval(env) {
                Some(v) => v,
                None => {
                    self.faults.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            None => 0,
        };
        let idx = if let Some(src) = &self.one_int {
            // The common key: one integer (`by n`, `by $task`).
            let Some(k) = src.eval(env) else {
                self.faults.fetch_add(1, Ordering::Relaxed);
                return;
            };
            self.find_or_insert(&[k])
        } else if self.key_words == 0 {
            // No key: one entry, inserted by the first hit.
            if self
                .live
                .first()
                .is_some_and(|l| l.load(Ordering::Acquire) != 0)
            {
                Some(0)
            } else {
                self.find_or_insert(&[])
            }
        } else {
            self.general_key(env)
        };
        let Some(idx) = idx else {
            return;
        };
        let cpu = if self.ncpus > 1 {
            env.ctx(bytecode::CTX_CPU) as usize
        } else {
            0
        };
        self.add(idx, cpu, value);
    }

    /// Keys of several parts or with strings.
    #[inline(never)]
    fn general_key(&self, env: &impl bytecode::Env) -> Option<usize> {
        let mut key = [0u64; KEY_WORDS];
        if !self.key_of(env, &mut key) {
            self.faults.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.find_or_insert(key.get(..self.key_words).unwrap_or(&[]))
    }

    /// Computes the key into `key`; `false` when a part faulted.
    #[inline(always)]
    fn key_of(&self, env: &impl bytecode::Env, key: &mut [u64; KEY_WORDS]) -> bool {
        let mut w = 0usize;
        for p in self.parts.iter().flatten() {
            let Some(v) = p.src.eval(env) else {
                return false;
            };
            match p.kind {
                KeyKind::Int => {
                    if let Some(slot) = key.get_mut(w) {
                        *slot = v;
                    }
                    w += 1;
                }
                KeyKind::Str(n) => {
                    let n = usize::from(n);
                    let words = n.div_ceil(8);
                    let Some(dst) = key.get_mut(w..w + words) else {
                        return false;
                    };
                    if !read_string(env, v, n, dst) {
                        return false;
                    }
                    w += words;
                }
            }
        }
        true
    }

    #[inline(always)]
    fn hash(key: &[u64]) -> u64 {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for w in key {
            h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        h ^ (h >> 29)
    }

    /// The entry of `key`, inserted if new; `None` when the map is full
    /// (counted).
    #[inline(always)]
    fn find_or_insert(&self, key: &[u64]) -> Option<usize> {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = (Self::hash(key) as usize) & mask;
        // Every slot at most once, plus waits for slots being inserted.
        let mut budget = self.slots.len() + 1_000_000;
        while budget > 0 {
            budget -= 1;
            let slot = self.slots.get(i)?;
            let s = slot.load(Ordering::Acquire);
            if s >= 2 {
                let idx = (s - 2) as usize;
                if self.key_is(idx, key) {
                    return Some(idx);
                }
                i = (i + 1) & mask;
                continue;
            }
            if s == BUSY {
                // Another CPU is writing this slot's key: wait for it.
                core::hint::spin_loop();
                continue;
            }
            if self.used.load(Ordering::Relaxed) as usize >= self.capacity {
                self.map_full.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            if slot
                .compare_exchange(EMPTY, BUSY, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let cap = self.capacity as u32;
            let Ok(idx) = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    (u < cap).then_some(u + 1)
                })
            else {
                slot.store(EMPTY, Ordering::Release);
                self.map_full.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            let idx = idx as usize;
            self.write_key(idx, key);
            self.init_values(idx);
            if let Some(l) = self.live.get(idx) {
                l.store(1, Ordering::Release);
            }
            slot.store(idx as u32 + 2, Ordering::Release);
            return Some(idx);
        }
        self.map_full.fetch_add(1, Ordering::Relaxed);
        None
    }

    #[inline(always)]
    fn key_is(&self, idx: usize, key: &[u64]) -> bool {
        let base = idx * self.key_words;
        match self.keys.get(base..base + key.len()) {
            Some(stored) => stored
                .iter()
                .zip(key)
                .all(|(s, k)| s.load(Ordering::Relaxed) == *k),
            None => false,
        }
    }

    fn write_key(&self, idx: usize, key: &[u64]) {
        let base = idx * self.key_words;
        if let Some(stored) = self.keys.get(base..base + key.len()) {
            for (s, k) in stored.iter().zip(key) {
                s.store(*k, Ordering::Relaxed);
            }
        }
    }

    /// The words of entry `idx` on `cpu`.
    #[inline(always)]
    fn words(&self, idx: usize, cpu: usize) -> &[AtomicU64] {
        let base = (cpu * self.capacity + idx) * self.value_words;
        self.values
            .get(base..base + self.value_words)
            .unwrap_or(&[])
    }

    /// Resets entry `idx` on every CPU (min and max start at their limits).
    fn init_values(&self, idx: usize) {
        for cpu in 0..self.ncpus {
            let w = self.words(idx, cpu);
            for x in w {
                x.store(0, Ordering::Relaxed);
            }
            if self.value_words == STAT_WORDS
                && matches!(
                    self.func,
                    AggFn::Sum | AggFn::Min | AggFn::Max | AggFn::Avg | AggFn::Stats
                )
                && let [_, _, min, max] = w
            {
                min.store(i64::MAX as u64, Ordering::Relaxed);
                max.store(i64::MIN as u64, Ordering::Relaxed);
            }
        }
    }

    #[inline(always)]
    fn add(&self, idx: usize, cpu: usize, v: u64) {
        let cpu = if cpu < self.ncpus { cpu } else { 0 };
        let w = self.words(idx, cpu);
        match self.func {
            AggFn::Count => {
                if let Some(c) = w.first() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            AggFn::Hist => {
                let k = agg::hist_key(v as i64);
                if let Some(c) = w.get((k + 64) as usize) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            AggFn::Lhist { min, max, step } => {
                let b = agg::lhist_index(v as i64, min, max, step, self.lhist_n);
                if let Some(c) = w.get(b) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                if let [count, sum, min, max] = w {
                    count.fetch_add(1, Ordering::Relaxed);
                    sum.fetch_add(v, Ordering::Relaxed);
                    let s = v as i64;
                    let mut cur = min.load(Ordering::Relaxed);
                    while s < cur as i64 {
                        match min.compare_exchange_weak(
                            cur,
                            v,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        ) {
                            Ok(_) => break,
                            Err(c) => cur = c,
                        }
                    }
                    let mut cur = max.load(Ordering::Relaxed);
                    while s > cur as i64 {
                        match max.compare_exchange_weak(
                            cur,
                            v,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        ) {
                            Ok(_) => break,
                            Err(c) => cur = c,
                        }
                    }
                }
            }
        }
    }

    /// Calls `f` with each entry: its key parts, its aggregate over all
    /// CPUs, and the histogram buckets `(K, count)` that are not empty.
    pub fn for_each(&self, f: &mut EntryFn<'_>) {
        let n = (self.used.load(Ordering::Acquire) as usize).min(self.capacity);
        let mut buckets: Vec<(i32, u64)> = Vec::new();
        let mut key_bytes = [0u8; KEY_WORDS * 8];
        for idx in 0..n {
            // Only published entries (an insert in progress is skipped).
            if !self.published(idx) {
                continue;
            }
            let mut stats = Stats {
                count: 0,
                sum: 0,
                min: i64::MAX,
                max: i64::MIN,
            };
            buckets.clear();
            match self.func {
                AggFn::Count => {
                    for cpu in 0..self.ncpus {
                        stats.count += self.word(idx, cpu, 0);
                    }
                }
                AggFn::Hist | AggFn::Lhist { .. } => {
                    for b in 0..self.value_words {
                        let c: u64 = (0..self.ncpus).map(|cpu| self.word(idx, cpu, b)).sum();
                        stats.count += c;
                        if c != 0 {
                            let k = if self.func == AggFn::Hist {
                                b as i32 - 64
                            } else {
                                b as i32
                            };
                            if buckets.try_reserve(1).is_ok() {
                                buckets.push((k, c));
                            }
                        }
                    }
                }
                _ => {
                    for cpu in 0..self.ncpus {
                        let c = self.word(idx, cpu, 0);
                        if c == 0 {
                            continue;
                        }
                        stats.count += c;
                        stats.sum = stats.sum.wrapping_add(self.word(idx, cpu, 1) as i64);
                        stats.min = stats.min.min(self.word(idx, cpu, 2) as i64);
                        stats.max = stats.max.max(self.word(idx, cpu, 3) as i64);
                    }
                }
            }
            if stats.count == 0
                || !matches!(
                    self.func,
                    AggFn::Sum | AggFn::Min | AggFn::Max | AggFn::Avg | AggFn::Stats
                )
            {
                stats.min = 0;
                stats.max = 0;
            }
            // The key's words as bytes (strings are stored as bytes).
            let base = idx * self.key_words;
            for (i, w) in self
                .keys
                .get(base..base + self.key_words)
                .unwrap_or(&[])
                .iter()
                .enumerate()
            {
                if let Some(dst) = key_bytes.get_mut(i * 8..i * 8 + 8) {
                    dst.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
                }
            }
            let mut parts = KeyIter {
                parts: &self.parts,
                next: 0,
                bytes: &key_bytes,
                at: 0,
            };
            f(&mut parts, stats, &buckets);
        }
    }

    fn published(&self, idx: usize) -> bool {
        self.live
            .get(idx)
            .is_some_and(|l| l.load(Ordering::Acquire) != 0)
    }

    fn word(&self, idx: usize, cpu: usize, w: usize) -> u64 {
        self.words(idx, cpu)
            .get(w)
            .map_or(0, |x| x.load(Ordering::Relaxed))
    }

    /// Keeps the keys, zeroes the aggregates.
    pub fn zero(&self) {
        let n = (self.used.load(Ordering::Acquire) as usize).min(self.capacity);
        for idx in 0..n {
            self.init_values(idx);
        }
    }

    /// Removes every key. Runs with the kernel stopped (the stub's monitor
    /// commands), so no hit inserts at the same time.
    pub fn clear(&self) {
        for s in &self.slots {
            s.store(EMPTY, Ordering::Release);
        }
        for k in &self.keys {
            k.store(0, Ordering::Relaxed);
        }
        for v in &self.values {
            v.store(0, Ordering::Relaxed);
        }
        for l in &self.live {
            l.store(0, Ordering::Relaxed);
        }
        self.used.store(0, Ordering::Release);
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        MAPS_USED.fetch_sub(self.bytes as u64, Ordering::AcqRel);
    }
}

/// The map of a probe being made (`None`: not an aggregating probe).
pub(crate) fn make(
    spec: Option<&AggSpec>,
    pf: &dyn crate::Host,
) -> Result<Option<alloc::boxed::Box<Map>>, ProbeError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let map = Map::new(spec, pf.cpu_count())?;
    let mut b = alloc::boxed::Box::<Map>::new_uninit();
    // `Box::new` of a large value may abort on a full heap; the map's own
    // vectors were allocated fallibly, the box itself is small.
    b.write(map);
    // SAFETY: written just above.
    Ok(Some(unsafe { b.assume_init() }))
}

/// Reads the NUL-terminated string at `addr`, at most `n` bytes, into
/// `dst` (zero-padded words). `false` when the first byte is unreadable.
#[inline(never)]
fn read_string(env: &impl bytecode::Env, addr: u64, n: usize, dst: &mut [u64]) -> bool {
    let mut buf = [0u8; agg::MAX_KEY_STR];
    let n = n.min(buf.len());
    let mut len = 0usize;
    // In chunks that do not cross a page: one fault-safe read each.
    while len < n {
        let a = addr.wrapping_add(len as u64);
        let in_page = (4096 - (a % 4096)) as usize;
        let chunk = (n - len).min(in_page);
        let Some(part) = buf.get_mut(len..len + chunk) else {
            break;
        };
        if !env.read(a, part) {
            if len == 0 {
                return false;
            }
            break;
        }
        if let Some(z) = part.iter().position(|&b| b == 0) {
            len += z;
            break;
        }
        len += chunk;
    }
    if let Some(rest) = buf.get_mut(len..) {
        rest.fill(0);
    }
    for (i, w) in dst.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        if let Some(src) = buf.get(i * 8..i * 8 + 8) {
            b.copy_from_slice(src);
        }
        *w = u64::from_le_bytes(b);
    }
    true
}

/// The key parts of one entry, from its bytes.
struct KeyIter<'a> {
    parts: &'a [Option<Part>; MAX_KEY_PARTS],
    next: usize,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for KeyIter<'a> {
    type Item = KeyValue<'a>;

    fn next(&mut self) -> Option<KeyValue<'a>> {
        let p = self.parts.get(self.next).copied().flatten()?;
        self.next += 1;
        match p.kind {
            KeyKind::Int => {
                let mut b = [0u8; 8];
                b.copy_from_slice(self.bytes.get(self.at..self.at + 8)?);
                self.at += 8;
                Some(KeyValue::Int(u64::from_le_bytes(b)))
            }
            KeyKind::Str(n) => {
                let words = usize::from(n).div_ceil(8);
                let s = self.bytes.get(self.at..self.at + usize::from(n))?;
                self.at += words * 8;
                let len = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                Some(KeyValue::Str(s.get(..len).unwrap_or(&[])))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::agg::KeyPart;
    use proto::bytecode::Writer;

    struct E {
        cpu: usize,
        regs: [u64; 20],
        mem: Vec<(u64, Vec<u8>)>,
    }

    impl bytecode::Env for E {
        fn reg(&self, n: u8) -> u64 {
            self.regs[usize::from(n)]
        }
        fn ctx(&self, n: u8) -> u64 {
            if n == bytecode::CTX_CPU {
                return self.cpu as u64;
            }
            100 + u64::from(n)
        }
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (base, bytes) in &self.mem {
                if addr >= *base && addr + buf.len() as u64 <= base + bytes.len() as u64 {
                    let o = (addr - base) as usize;
                    buf.copy_from_slice(&bytes[o..o + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    fn reg(n: u8) -> Program {
        let mut w = Writer::new();
        w.reg(n);
        w.finish().unwrap()
    }

    fn env(rdi: u64) -> E {
        let mut regs = [0; 20];
        regs[5] = rdi;
        E {
            cpu: 0,
            regs,
            mem: Vec::new(),
        }
    }

    fn env_on(rdi: u64, cpu: usize) -> E {
        E { cpu, ..env(rdi) }
    }

    type Entry = (String, Stats, Vec<(i32, u64)>);

    fn entries(m: &Map) -> Vec<Entry> {
        let mut out = Vec::new();
        m.for_each(&mut |k, s, b| {
            let key: Vec<String> = k
                .map(|p| match p {
                    KeyValue::Int(v) => v.to_string(),
                    KeyValue::Str(s) => String::from_utf8_lossy(s).into_owned(),
                })
                .collect();
            out.push((key.join(","), s, b.to_vec()));
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn count_by_int_key_on_two_cpus() {
        let mut spec = AggSpec::new(AggFn::Count);
        spec.push_key(KeyPart {
            kind: KeyKind::Int,
            prog: reg(5),
        })
        .unwrap();
        let m = Map::new(&spec, 2).unwrap();
        for i in 0..100u64 {
            m.update(&env_on(i % 7, (i % 2) as usize));
        }
        let e = entries(&m);
        assert_eq!(e.len(), 7);
        let total: u64 = e.iter().map(|x| x.1.count).sum();
        assert_eq!(total, 100);
        assert_eq!(e[0].0, "0");
        assert_eq!(e[0].1.count, 15);
        m.zero();
        let e = entries(&m);
        assert_eq!(e.len(), 7);
        assert!(e.iter().all(|x| x.1.count == 0));
        m.clear();
        assert!(entries(&m).is_empty());
        m.update(&env_on(3, 1));
        assert_eq!(entries(&m)[0].1.count, 1);
    }

    #[test]
    fn full_map_counts_refused_inserts() {
        let mut spec = AggSpec::new(AggFn::Count);
        spec.push_key(KeyPart {
            kind: KeyKind::Int,
            prog: reg(5),
        })
        .unwrap();
        spec.budget = 64;
        let m = Map::new(&spec, 1).unwrap();
        let cap = m.info().capacity;
        assert!((1..10).contains(&cap), "{cap}");
        for i in 0..20u64 {
            m.update(&env(i));
        }
        // Known keys still count when the map is full.
        m.update(&env(0));
        let info = m.info();
        assert_eq!(info.entries, cap);
        assert_eq!(info.map_full, 20 - cap);
        let e = entries(&m);
        assert_eq!(e.iter().map(|x| x.1.count).sum::<u64>(), cap + 1);
        spec.budget = 8;
        assert_eq!(Map::new(&spec, 1).err(), Some(ProbeError::MapBudget));
    }

    #[test]
    fn string_keys_and_faults() {
        let mut spec = AggSpec::new(AggFn::Count);
        spec.push_key(KeyPart {
            kind: KeyKind::Str(8),
            prog: reg(5),
        })
        .unwrap();
        spec.push_key(KeyPart {
            kind: KeyKind::Int,
            prog: {
                let mut w = Writer::new();
                w.ctx(bytecode::CTX_TASK);
                w.finish().unwrap()
            },
        })
        .unwrap();
        let m = Map::new(&spec, 1).unwrap();
        let mut e = env(0x1000);
        e.mem.push((0x1000, b"/etc/passwd\0".to_vec()));
        e.mem.push((0x2000, b"/dev\0xxx".to_vec()));
        m.update(&e);
        m.update(&e);
        e.regs[5] = 0x2000;
        m.update(&e);
        e.regs[5] = 0x9000;
        m.update(&e);
        let got = entries(&m);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "/dev,100");
        assert_eq!(got[1].0, "/etc/pas,100");
        assert_eq!(got[1].1.count, 2);
        assert_eq!(m.info().faults, 1);
    }

    #[test]
    fn stats_and_histograms() {
        let mut spec = AggSpec::new(AggFn::Stats);
        spec.value = Some(reg(5));
        let m = Map::new(&spec, 2).unwrap();
        for (i, v) in [5i64, -3, 10, 0].iter().enumerate() {
            m.update(&env_on(*v as u64, i % 2));
        }
        let e = entries(&m);
        assert_eq!(
            e[0].1,
            Stats {
                count: 4,
                sum: 12,
                min: -3,
                max: 10
            }
        );
        let mut spec = AggSpec::new(AggFn::Hist);
        spec.value = Some(reg(5));
        let m = Map::new(&spec, 1).unwrap();
        for v in [0u64, 1, 3, 3, 100, (-2i64) as u64] {
            m.update(&env(v));
        }
        assert_eq!(
            entries(&m)[0].2,
            vec![(-2, 1), (0, 1), (1, 1), (2, 2), (7, 1)]
        );
        let mut spec = AggSpec::new(AggFn::Lhist {
            min: 0,
            max: 10,
            step: 5,
        });
        spec.value = Some(reg(5));
        let m = Map::new(&spec, 1).unwrap();
        for v in [0u64, 4, 5, 9, 10, (-1i64) as u64] {
            m.update(&env(v));
        }
        assert_eq!(entries(&m)[0].2, vec![(0, 1), (1, 2), (2, 2), (3, 1)]);
    }
}
