//! Stops of the kernel seen by the event thread, and the watchpoints whose
//! values stop lines show.
//!
//! Locking rule: each field has its own lock (or is atomic), taken and
//! released inside one method here; no guard leaves this file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::lock;
use crate::rsp::StopReply;

#[derive(Default)]
pub struct Stops {
    /// Stops for the session to act on (temporary breakpoints).
    pending: Mutex<Vec<StopReply>>,
    /// Asynchronous stops the event thread has shown (all connections).
    shown: AtomicU64,
    /// Watchpoints: address -> (length, last value seen).
    watches: Mutex<HashMap<u64, (u64, Option<u64>)>>,
}

impl Stops {
    /// The event thread saw and showed a stop.
    pub fn shown(&self, stop: StopReply) {
        lock(&self.pending).push(stop);
        self.shown.fetch_add(1, Ordering::SeqCst);
    }

    /// How many asynchronous stops were shown so far.
    pub fn shown_count(&self) -> u64 {
        self.shown.load(Ordering::SeqCst)
    }

    /// The stops not acted on yet.
    pub fn take(&self) -> Vec<StopReply> {
        std::mem::take(&mut *lock(&self.pending))
    }

    pub fn watch(&self, addr: u64, len: u64, value: Option<u64>) {
        lock(&self.watches).insert(addr, (len, value));
    }

    pub fn unwatch(&self, addr: u64) {
        lock(&self.watches).remove(&addr);
    }

    /// (length, last value seen) of the watchpoint at `addr`.
    pub fn watched(&self, addr: u64) -> Option<(u64, Option<u64>)> {
        lock(&self.watches).get(&addr).copied()
    }
}
