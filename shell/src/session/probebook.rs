//! The probe book: what the host knows about each probe (its location and
//! capture layout), for rendering its events.
//!
//! Locking rule: one `RwLock` over live and retired definitions (so an id
//! moves between them atomically) and one `Mutex` over the events waiting
//! for a probe being registered; each is taken and released inside one
//! method here, never both at once, and no guard leaves this file
//! (definitions are handed out as `Arc`s, so no caller renders under it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use proto::event::Event;

use super::{lock, read, write};
use crate::events::ProbeDef;

#[derive(Default)]
struct Book {
    live: BTreeMap<u32, Arc<ProbeDef>>,
    /// Deleted probes, for their events still in flight.
    retired: BTreeMap<u32, Arc<ProbeDef>>,
}

#[derive(Default)]
pub struct ProbeBook {
    book: RwLock<Book>,
    /// `Some` while a probe command is on its way: events of probes the
    /// book does not know yet wait here until the new probe is registered.
    pending: Mutex<Option<Vec<Event>>>,
}

impl ProbeBook {
    pub fn insert(&self, def: ProbeDef) {
        let mut b = write(&self.book);
        b.retired.remove(&def.id);
        b.live.insert(def.id, Arc::new(def));
    }

    /// A live probe's definition.
    pub fn get(&self, id: u32) -> Option<Arc<ProbeDef>> {
        read(&self.book).live.get(&id).cloned()
    }

    /// A probe's definition, live or retired (for its events).
    pub fn get_any(&self, id: u32) -> Option<Arc<ProbeDef>> {
        let b = read(&self.book);
        b.live.get(&id).or_else(|| b.retired.get(&id)).cloned()
    }

    /// Live probes' definitions, by id.
    pub fn live(&self) -> Vec<Arc<ProbeDef>> {
        read(&self.book).live.values().cloned().collect()
    }

    /// Live probe ids, ascending.
    pub fn ids(&self) -> Vec<u32> {
        read(&self.book).live.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        read(&self.book).live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Known live or retired.
    pub fn knows(&self, id: u32) -> bool {
        let b = read(&self.book);
        b.live.contains_key(&id) || b.retired.contains_key(&id)
    }

    /// Deleted probes: keep their definitions for events still in flight.
    pub fn retire(&self, ids: &[u32]) {
        let mut b = write(&self.book);
        for id in ids {
            if let Some(d) = b.live.remove(id) {
                b.retired.insert(*id, d);
            }
        }
    }

    /// A probe command is about to be sent: hold events of unknown probes.
    pub fn begin_registering(&self) {
        *lock(&self.pending) = Some(Vec::new());
    }

    /// The probe command finished: the events that waited, in order.
    pub fn end_registering(&self) -> Vec<Event> {
        lock(&self.pending).take().unwrap_or_default()
    }

    /// Hold `ev` if its probe is unknown while one is being registered;
    /// otherwise hand it back to be shown now.
    pub fn hold(&self, ev: Event) -> Option<Event> {
        if self.knows(ev.probe_id) {
            return Some(ev);
        }
        match lock(&self.pending).as_mut() {
            Some(waiting) => {
                waiting.push(ev);
                None
            }
            None => Some(ev),
        }
    }
}
