//! The event display: how events and notices are rendered, which are
//! shown live, the clock that times them, the task names they carry, the
//! events kept for `events`/`hist`/`wait`, and where printed lines go.
//!
//! Locking rule: every field has its own lock (or is atomic or immutable),
//! taken and released inside one method here; no guard leaves this file.
//! `print_async` never blocks on the terminal (the event thread calls it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use super::{lock, read, write};
use crate::events::{Clock, Filter, Store};
use crate::record::drops::DropNotices;
use crate::render::Render;

/// Where the event thread's lines go when not straight to stdout: a queue
/// drained by a printer thread (rustyline's external printer can block
/// until the prompt reads, and the event thread must never block).
pub type Printer = std::sync::mpsc::Sender<String>;

pub struct Display {
    render: Render,
    store: Store,
    drops: DropNotices,
    live: AtomicBool,
    filter: RwLock<Filter>,
    clock: RwLock<Clock>,
    tasks: RwLock<HashMap<u32, String>>,
    printer: Mutex<Option<Printer>>,
}

impl Display {
    pub fn new(render: Render, clock: Clock) -> Display {
        Display {
            render,
            store: Store::default(),
            drops: DropNotices::default(),
            live: AtomicBool::new(true),
            filter: RwLock::new(Filter::default()),
            clock: RwLock::new(clock),
            tasks: RwLock::new(HashMap::new()),
            printer: Mutex::new(None),
        }
    }

    /// Text or JSON, colour or not.
    pub fn render(&self) -> Render {
        self.render
    }

    /// The events kept on the host (it has its own lock).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Drop notices waiting for their interval (their own lock).
    pub fn drops(&self) -> &DropNotices {
        &self.drops
    }

    pub fn live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    pub fn set_live(&self, on: bool) {
        self.live.store(on, Ordering::SeqCst);
    }

    pub fn filter(&self) -> Filter {
        read(&self.filter).clone()
    }

    pub fn set_filter(&self, f: Filter) {
        *write(&self.filter) = f;
    }

    pub fn clock(&self) -> Clock {
        *read(&self.clock)
    }

    /// Change the clock (rate, epoch) in one step.
    pub fn update_clock(&self, f: impl FnOnce(&mut Clock)) {
        f(&mut write(&self.clock));
    }

    pub fn task_name(&self, task: u32) -> Option<String> {
        read(&self.tasks).get(&task).cloned()
    }

    /// The id of the task called `name`, if one is.
    pub fn task_named(&self, name: &str) -> Option<u32> {
        read(&self.tasks)
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| *id)
    }

    pub fn task_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = read(&self.tasks).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Learn task names (kept for events of tasks that exited).
    pub fn learn_tasks(&self, tasks: impl IntoIterator<Item = (u32, String)>) {
        write(&self.tasks).extend(tasks);
    }

    pub fn set_printer(&self, p: Option<Printer>) {
        *lock(&self.printer) = p;
    }

    /// Print from the main thread (never inside readline).
    pub fn print(&self, line: String) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Print from the event thread: queued when a printer is set.
    pub fn print_async(&self, line: String) {
        let p = lock(&self.printer);
        match p.as_ref() {
            Some(tx) => {
                if let Err(e) = tx.send(line) {
                    drop(p);
                    self.print(e.0);
                }
            }
            None => {
                drop(p);
                self.print(line);
            }
        }
    }
}
