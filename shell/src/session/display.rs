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
use crate::events::EventView;
use crate::events::{Clock, Filter, Store};
use crate::record::drops::DropNotices;
use crate::record::file::Recorder;
use crate::render::Render;

/// Where the event thread's lines go when not straight to stdout: a queue
/// drained by a printer thread (rustyline's external printer can block
/// until the prompt reads, and the event thread must never block).
pub type Printer = std::sync::mpsc::Sender<String>;

pub struct Display {
    render: Render,
    store: Store,
    drops: DropNotices,
    /// `record FILE`: every stored event is also written there. Taken
    /// before the store's lock (never after), so the file's order is the
    /// store's.
    recorder: Mutex<Option<Recorder>>,
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
            recorder: Mutex::new(None),
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

    /// Start recording; refused while a recording runs.
    pub fn start_recording(&self, mut r: Recorder) -> anyhow::Result<()> {
        let mut g = lock(&self.recorder);
        if let Some(old) = g.as_ref() {
            anyhow::bail!(
                "already recording to {}: `record off` first",
                old.path().display()
            );
        }
        r.known_drops(self.store.drops().0);
        *g = Some(r);
        Ok(())
    }

    /// Stop recording: the file, its events and drops.
    pub fn stop_recording(&self) -> Option<std::io::Result<(std::path::PathBuf, u64, u64)>> {
        lock(&self.recorder).take().map(Recorder::finish)
    }

    /// The running recording: its file, events and drops so far.
    pub fn recording(&self) -> Option<(std::path::PathBuf, u64, u64)> {
        lock(&self.recorder)
            .as_ref()
            .map(|r| (r.path().to_path_buf(), r.events(), r.drops()))
    }

    /// Store an event (and record it when recording). Returns it as
    /// stored, and a notice if the recording had to stop.
    pub fn store_event(&self, v: EventView) -> (EventView, Option<String>) {
        let mut rec = lock(&self.recorder);
        let v = self.store.push(v);
        let err = Self::write(&mut rec, |r| r.event(&v));
        (v, err)
    }

    /// The stub's drop report, at its place in the recording.
    pub fn record_drops(&self, probe: u32, total: u64) -> Option<String> {
        let mut rec = lock(&self.recorder);
        let after = self.store.total();
        Self::write(&mut rec, |r| r.drops_at(probe, total, after))
    }

    /// Write out the recording's buffer (see `Recorder::flush`).
    pub fn flush_recording(&self) -> Option<String> {
        let mut rec = lock(&self.recorder);
        Self::write(&mut rec, |r| r.flush())
    }

    /// A probe set while recording.
    pub fn record_probe(&self, def: &crate::events::ProbeDef) -> Option<String> {
        let mut rec = lock(&self.recorder);
        Self::write(&mut rec, |r| {
            r.reset_drops(def.id);
            r.probe(def)
        })
    }

    fn write(
        rec: &mut Option<Recorder>,
        f: impl FnOnce(&mut Recorder) -> std::io::Result<()>,
    ) -> Option<String> {
        let r = rec.as_mut()?;
        let e = f(r).err()?;
        let r = rec.take()?;
        Some(format!(
            "recording to {} stopped: cannot write ({e}); {} events were recorded",
            r.path().display(),
            r.events()
        ))
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
