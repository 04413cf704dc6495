//! The events kept on the host, and which of them to show.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::EventView;
use crate::record::agg::{Agg, ProbeAgg};

/// Which events to show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub probe: Option<u32>,
    pub task: Option<u32>,
}

impl Filter {
    pub fn matches(&self, v: &EventView) -> bool {
        self.probe.is_none_or(|p| p == v.probe) && self.task.is_none_or(|t| t == v.task)
    }
    pub fn is_empty(&self) -> bool {
        self.probe.is_none() && self.task.is_none()
    }
}

/// Drops the stub reported, per probe.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Drops(pub HashMap<u32, u64>);

/// Recent events, kept for `events N`, `hist` and `wait events`.
pub struct Store {
    inner: Mutex<StoreInner>,
    cond: Condvar,
}

struct StoreInner {
    recent: VecDeque<EventView>,
    /// Every event since its probe was set, aggregated (`hist`).
    agg: Agg,
    total: u64,
    drops: Drops,
    /// Record lines that did not decode (line noise, version skew).
    bad: u64,
}

/// How many events the store keeps.
pub const KEEP: usize = 10_000;

impl Default for Store {
    fn default() -> Self {
        Store {
            inner: Mutex::new(StoreInner {
                recent: VecDeque::new(),
                agg: Agg::default(),
                total: 0,
                drops: Drops::default(),
                bad: 0,
            }),
            cond: Condvar::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Keep an event: its sequence number is given here, under the lock,
    /// so two threads storing at once (the event thread and a probe
    /// registration flushing held events) never share one. Returns the
    /// event as stored.
    pub fn push(&self, mut v: EventView) -> EventView {
        let mut i = lock(&self.inner);
        i.total += 1;
        v.seq = i.total;
        if i.recent.len() == KEEP {
            i.recent.pop_front();
        }
        i.agg.add(&v);
        i.recent.push_back(v.clone());
        self.cond.notify_all();
        v
    }

    /// A probe was set under `probe`: its aggregation starts afresh (an
    /// id the kernel reuses does not inherit the old probe's events).
    pub fn reset_probe(&self, probe: u32) {
        lock(&self.inner).agg.reset(probe);
    }

    /// What every event of `probe` since it was set added up to.
    pub fn probe_agg(&self, probe: u32) -> Option<ProbeAgg> {
        lock(&self.inner).agg.probe(probe).cloned()
    }

    /// How many events are kept for `events N` (at most [`KEEP`]).
    pub fn kept(&self) -> usize {
        lock(&self.inner).recent.len()
    }

    pub fn record_drops(&self, probe: u32, dropped: u64) {
        lock(&self.inner).drops.0.insert(probe, dropped);
    }

    pub fn record_bad(&self) {
        lock(&self.inner).bad += 1;
    }

    pub fn total(&self) -> u64 {
        lock(&self.inner).total
    }

    pub fn drops(&self) -> Drops {
        lock(&self.inner).drops.clone()
    }

    pub fn bad(&self) -> u64 {
        lock(&self.inner).bad
    }

    /// The last `n` events that pass `filter`, oldest first.
    pub fn last(&self, n: usize, filter: &Filter) -> Vec<EventView> {
        let i = lock(&self.inner);
        let mut out: Vec<EventView> = i
            .recent
            .iter()
            .rev()
            .filter(|v| filter.matches(v))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// All kept events of one probe.
    pub fn of_probe(&self, probe: u32) -> Vec<EventView> {
        lock(&self.inner)
            .recent
            .iter()
            .filter(|v| v.probe == probe)
            .cloned()
            .collect()
    }

    /// Wait until the total reaches `target`; returns the total reached.
    pub fn wait_total(&self, target: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut i = lock(&self.inner);
        while i.total < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            i = self
                .cond
                .wait_timeout(i, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        i.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(probe: u32) -> EventView {
        EventView {
            probe,
            kind: "jprobe",
            function: "f".into(),
            ..EventView::default()
        }
    }

    /// The event thread and a probe registration store at once: every
    /// event still gets its own number, and the numbers have no gaps.
    #[test]
    fn sequence_numbers_are_unique_across_threads() {
        let store = std::sync::Arc::new(Store::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..2000)
                        .map(|_| store.push(ev(t)).seq)
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=8000).collect::<Vec<u64>>());
        assert_eq!(store.total(), 8000);
    }
}
