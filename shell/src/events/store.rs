//! The events kept on the host, and which of them to show.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::EventView;

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
    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        lock(&self.inner).total + 1
    }

    pub fn push(&self, v: EventView) {
        let mut i = lock(&self.inner);
        i.total += 1;
        if i.recent.len() == KEEP {
            i.recent.pop_front();
        }
        i.recent.push_back(v);
        self.cond.notify_all();
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
