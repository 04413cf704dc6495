//! The session: the connection, the symbols, what the host knows about
//! probes and breakpoints, and the thread that turns the stub's
//! asynchronous output into events and notices.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use symbols::Elf;

use crate::disas::{Disassembler, SymbolTable, Syntax};
use crate::events::{self, Clock, Filter, Names, ProbeDef, Store};
use crate::image::Image;
use crate::output::{BreakInfo, StopInfo};
use crate::render::Render;
use crate::rsp::{Async, BreakKind, Client, Endpoint, StopReply};

/// Set by Ctrl-C (SIGINT) while a command waits (`wait`, `sleep`).
pub static CANCEL: AtomicBool = AtomicBool::new(false);

/// Where the event thread's lines go when not straight to stdout: a queue
/// drained by a printer thread (rustyline's external printer can block
/// until the prompt reads, and the event thread must never block).
pub type Printer = std::sync::mpsc::Sender<String>;

/// State shared with the event thread.
pub struct Shared {
    pub client: Mutex<Option<Client>>,
    pub elf: Option<Mutex<Elf>>,
    pub symtab: Option<Arc<SymbolTable>>,
    pub image: Option<Image>,
    pub probes: RwLock<BTreeMap<u32, ProbeDef>>,
    /// Deleted probes, for their events still in flight.
    pub retired: RwLock<BTreeMap<u32, ProbeDef>>,
    /// A probe command is on its way: events of unknown probes wait in
    /// `orphans` until the new probe is registered.
    pub registering: AtomicBool,
    pub orphans: Mutex<Vec<proto::event::Event>>,
    pub store: Store,
    pub tasks: RwLock<HashMap<u32, String>>,
    pub live: AtomicBool,
    pub filter: RwLock<Filter>,
    pub clock: RwLock<Clock>,
    pub render: Render,
    /// Stops seen by the event thread, for the session to act on
    /// (temporary breakpoints).
    pub stops: Mutex<Vec<StopReply>>,
    pub printer: Mutex<Option<Printer>>,
    /// Asynchronous stops the event thread has shown (all connections).
    pub stops_shown: std::sync::atomic::AtomicU64,
    /// Watchpoints: address -> (length, last value seen), for old/new
    /// values in stop lines.
    pub watches: Mutex<HashMap<u64, (u64, Option<u64>)>>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Names for Shared {
    fn task_name(&self, task: u32) -> Option<String> {
        read(&self.tasks).get(&task).cloned()
    }
    fn symbol_at(&self, addr: u64) -> Option<String> {
        let (a, name) = self.symtab.as_ref()?.lookup(addr)?;
        (a == addr).then(|| name.to_string())
    }
    fn symbolize(&self, addr: u64) -> Option<String> {
        let (a, name) = self.symtab.as_ref()?.lookup(addr)?;
        Some(if a == addr {
            name.to_string()
        } else {
            format!("{name}+{:#x}", addr - a)
        })
    }
}

impl Shared {
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

    pub fn elf(&self) -> Result<MutexGuard<'_, Elf>> {
        self.elf.as_ref().map(lock).ok_or_else(|| {
            anyhow!("no symbols loaded: start kdbg with --symbols ELF (or --kernel ELF)")
        })
    }

    /// `name+0xoff` when a symbol covers `addr`.
    pub fn symbolize_opt(&self, addr: u64) -> Option<String> {
        self.symbolize(addr)
    }

    /// Describe where `rip` is: `func+0x12`.
    pub fn describe(&self, addr: u64) -> String {
        self.symbolize(addr).unwrap_or_else(|| format!("{addr:#x}"))
    }

    /// Source `file:line` of an address.
    pub fn source_of(&self, addr: u64) -> Option<String> {
        let elf = lock(self.elf.as_ref()?);
        let loc = elf.location(addr).ok()??;
        (loc.line != 0).then(|| format!("{}:{}", loc.file, loc.line))
    }

    pub fn disassembler(&self, syntax: Syntax) -> Disassembler {
        Disassembler::new(syntax, self.symtab.clone())
    }

    /// The instruction at `addr` from the image.
    pub fn insn_at(&self, addr: u64) -> Option<crate::disas::Insn> {
        let bytes = self.image.as_ref()?.read(addr, 16)?;
        self.disassembler(Syntax::Intel)
            .decode(bytes, addr, 1)
            .pop()
    }

    pub fn stop_info(&self, stop: &StopReply, rip: Option<u64>) -> StopInfo {
        let reason = if let Some((k, a)) = &stop.watch {
            format!("{k}point hit ({a:#x})")
        } else if let Some(code) = stop.exited {
            format!("kernel exited ({code})")
        } else {
            match (stop.signal, stop.reason.as_deref()) {
                (5, Some("hwbreak")) => "hardware breakpoint".into(),
                (5, Some("swbreak")) => "breakpoint".into(),
                (5, _) => "trap (breakpoint or step)".into(),
                (2, _) => "interrupted".into(),
                (_, _) => format!("{} ({})", stop.signal_name(), stop.signal),
            }
        };
        let rip = rip.unwrap_or(0);
        let task = stop.thread.and_then(task_of_tid);
        StopInfo {
            reason,
            task,
            task_name: task.and_then(|t| self.task_name(t as u32)),
            rip,
            location: self.describe(rip),
            source: self.source_of(rip),
            insn: self.insn_at(rip).map(|i| i.text),
            stop: stop.clone(),
        }
    }

    /// Read rip through the client if it is free (the event thread).
    /// Read a watched value (`len` bytes, little-endian) through the client.
    pub fn read_watched(&self, addr: u64, len: u64) -> Option<u64> {
        let mut c = lock(&self.client);
        let bytes = c.as_mut()?.read_memory(addr, len as usize).ok()?;
        let mut b = [0u8; 8];
        b.get_mut(..bytes.len())?.copy_from_slice(&bytes);
        Some(u64::from_le_bytes(b))
    }

    /// `old -> new` for a watchpoint stop (updates the remembered value).
    pub fn watch_change(&self, addr: u64) -> Option<String> {
        let (len, old) = *lock(&self.watches).get(&addr)?;
        let new = self.read_watched(addr, len)?;
        lock(&self.watches).insert(addr, (len, Some(new)));
        Some(match old {
            Some(o) => format!("old {o:#x}, new {new:#x}"),
            None => format!("value {new:#x}"),
        })
    }

    fn current_rip(&self) -> Option<u64> {
        let mut c = lock(&self.client);
        let c = c.as_mut()?;
        let g = c.read_registers().ok()?;
        crate::regs::RegisterFile::parse_g(&g).ok().map(|r| r.rip)
    }

    fn handle_record(&self, rec: proto::event::Record) {
        match rec {
            proto::event::Record::Event(ev) => {
                {
                    let mut c = write(&self.clock);
                    if c.base.is_none() {
                        c.base = Some(ev.tsc);
                    }
                }
                let known = read(&self.probes).contains_key(&ev.probe_id)
                    || read(&self.retired).contains_key(&ev.probe_id);
                if !known && self.registering.load(Ordering::SeqCst) {
                    lock(&self.orphans).push(ev);
                    return;
                }
                self.show_event(&ev);
            }
            proto::event::Record::Drops { probe_id, dropped } => {
                self.store.record_drops(probe_id, dropped);
                self.print_async(self.render.notice(
                    "drops",
                    &format!(
                        "probe #{probe_id}: {dropped} events dropped so far (kernel ring full)"
                    ),
                    serde_json::json!({"probe": probe_id, "dropped": dropped}),
                ));
            }
        }
    }

    /// Render, store and (live) print one event.
    pub fn show_event(&self, ev: &proto::event::Event) {
        let seq = self.store.next_seq();
        let view = {
            let probes = read(&self.probes);
            let retired = read(&self.retired);
            let def = probes
                .get(&ev.probe_id)
                .or_else(|| retired.get(&ev.probe_id));
            events::view(seq, ev, def, self, *read(&self.clock))
        };
        let show = self.live.load(Ordering::SeqCst) && read(&self.filter).matches(&view);
        let text = show.then(|| self.render.event(&view));
        self.store.push(view);
        if let Some(t) = text {
            self.print_async(t);
        }
    }

    /// A probe command finished: show the events that waited for it.
    pub fn flush_orphans(&self) {
        self.registering.store(false, Ordering::SeqCst);
        let evs = std::mem::take(&mut *lock(&self.orphans));
        for ev in &evs {
            self.show_event(ev);
        }
    }

    fn handle_line(&self, line: &str) {
        match events::classify(line) {
            events::Line::Record(rec) => self.handle_record(*rec),
            events::Line::BadRecord(e) => {
                self.store.record_bad();
                self.print_async(self.render.notice(
                    "bad_record",
                    &format!("an event record was unreadable: {e}"),
                    serde_json::json!({}),
                ));
            }
            events::Line::Text(t) => {
                if !t.trim().is_empty() {
                    self.print_async(self.render.notice(
                        "console",
                        &format!("stub: {}", t.trim_end()),
                        serde_json::json!({}),
                    ));
                }
            }
        }
    }

    /// The event thread: runs until the channel closes.
    pub fn pump(self: Arc<Self>, rx: Receiver<Async>) {
        let mut partial = String::new();
        for a in rx {
            match a {
                Async::Output(bytes) => {
                    partial.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(pos) = partial.find('\n') {
                        let line: String = partial.drain(..=pos).collect();
                        self.handle_line(line.trim_end());
                    }
                    // Record lines always end in '\n'; anything else is
                    // console text that may continue.
                    if partial.len() > 4096 {
                        let line = std::mem::take(&mut partial);
                        self.handle_line(&line);
                    }
                }
                Async::Stop(s) => {
                    let stop = StopReply::parse(&s).unwrap_or_default();
                    let rip = self.current_rip();
                    let mut info = self.stop_info(&stop, rip);
                    if let Some((_, a)) = &stop.watch
                        && let Some(change) = self.watch_change(*a)
                    {
                        info.reason = format!("{}: {change}", info.reason);
                    }
                    lock(&self.stops).push(stop);
                    let text = if self.render.json {
                        self.render
                            .output("stop", &crate::output::Output::Stopped { stop: info })
                    } else {
                        crate::render::stop_text(&self.render, &info)
                    };
                    self.print_async(text);
                    self.stops_shown.fetch_add(1, Ordering::SeqCst);
                }
                Async::Garbage(_) => {}
                Async::Lost(why) => self.print_async(self.render.notice(
                    "connection_lost",
                    &format!("connection to the stub lost ({why}); use `reconnect`"),
                    serde_json::json!({}),
                )),
            }
        }
    }
}

/// gdb thread ids are kernel task ids plus one (thread 0 means "any" in
/// the protocol); see stub/src/kernel.rs.
pub fn task_of_tid(tid: u64) -> Option<u64> {
    tid.checked_sub(1)
}

pub fn tid_of_task(task: u64) -> u64 {
    task + 1
}

/// The locked client (present: [`Session::client`] checked).
pub struct ClientGuard<'a>(MutexGuard<'a, Option<Client>>);

impl std::ops::Deref for ClientGuard<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("ClientGuard is only built around a client")
    }
}

impl std::ops::DerefMut for ClientGuard<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("ClientGuard is only built around a client")
    }
}

/// Breakpoints go in with the kernel stopped (as gdb does, all-stop): a
/// running kernel is interrupted for the insertion and resumed after.
pub struct Pause {
    shared: Option<std::sync::Arc<crate::session::Shared>>,
}

impl Pause {
    pub fn new(s: &Session) -> Result<Pause> {
        if !s.running() {
            return Ok(Pause { shared: None });
        }
        s.client()?.interrupt(Duration::from_secs(5))?;
        Ok(Pause {
            shared: Some(s.shared.clone()),
        })
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        if let Some(sh) = &self.shared
            && let Some(c) = lock(&sh.client).as_mut()
        {
            let _ = c.resume("c");
        }
    }
}

/// A breakpoint or watchpoint the shell set.
#[derive(Debug, Clone)]
pub struct Breakpoint {
    pub info: BreakInfo,
    pub kind: BreakKind,
    pub len: u64,
}

pub struct Options {
    pub endpoint: Option<Endpoint>,
    pub symbols: Option<PathBuf>,
    pub render: Render,
    pub timeout: Duration,
    pub tsc_hz: Option<u64>,
    /// Resume the kernel after connecting (default) or leave it stopped.
    pub resume: bool,
}

pub struct Session {
    pub shared: Arc<Shared>,
    pub endpoint: Option<Endpoint>,
    async_tx: Sender<Async>,
    pub timeout: Duration,
    pub breakpoints: BTreeMap<u32, Breakpoint>,
    pub next_break: u32,
    pub selected_thread: Option<u64>,
    pub syntax: Syntax,
    pub quit: bool,
    pub remove_probes_on_exit: bool,
    pub resume_on_connect: bool,
    /// Stops shown before the current connection (its counter starts at 0).
    stops_base: u64,
}

impl Session {
    pub fn new(opts: Options) -> Result<Session> {
        let (elf, symtab, image) = match &opts.symbols {
            Some(path) => {
                let elf = Elf::open(path)
                    .with_context(|| format!("cannot load symbols from {}", path.display()))?;
                if let Some(n) = elf.take_notice() {
                    eprintln!("kdbg: {n}");
                }
                let entries: Vec<(u64, u64, String)> = elf
                    .symbols()
                    .filter(|s| s.address != 0)
                    .map(|s| (s.address, s.size, s.demangled().into_owned()))
                    .collect();
                let image = Image::open(path)?;
                (
                    Some(Mutex::new(elf)),
                    Some(Arc::new(SymbolTable::new(entries))),
                    Some(image),
                )
            }
            None => (None, None, None),
        };
        let shared = Arc::new(Shared {
            client: Mutex::new(None),
            elf,
            symtab,
            image,
            probes: RwLock::new(BTreeMap::new()),
            retired: RwLock::new(BTreeMap::new()),
            registering: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            store: Store::default(),
            tasks: RwLock::new(HashMap::new()),
            live: AtomicBool::new(true),
            filter: RwLock::new(Filter::default()),
            clock: RwLock::new(Clock {
                tsc_hz: opts.tsc_hz.or_else(Clock::host_tsc_hz),
                base: None,
            }),
            render: opts.render,
            stops: Mutex::new(Vec::new()),
            printer: Mutex::new(None),
            stops_shown: std::sync::atomic::AtomicU64::new(0),
            watches: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::channel();
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("events".into())
                .spawn(move || shared.pump(rx))?;
        }
        let mut s = Session {
            shared,
            endpoint: opts.endpoint,
            async_tx: tx,
            timeout: opts.timeout,
            breakpoints: BTreeMap::new(),
            next_break: 1,
            selected_thread: None,
            syntax: Syntax::Intel,
            quit: false,
            remove_probes_on_exit: false,
            resume_on_connect: opts.resume,
            stops_base: 0,
        };
        if s.endpoint.is_some() {
            s.connect()?;
        }
        Ok(s)
    }

    pub fn set_printer(&self, p: Printer) {
        *lock(&self.shared.printer) = Some(p);
    }

    /// Connect (or reconnect) to the endpoint and prepare the stub.
    pub fn connect(&mut self) -> Result<()> {
        let ep = self.endpoint.clone().ok_or_else(|| {
            anyhow!("no connection configured: start kdbg with --connect or --kernel")
        })?;
        if let Some(mut old) = lock(&self.shared.client).take() {
            old.close();
        }
        self.stops_base = self.shared.stops_shown.load(Ordering::SeqCst);
        let client = Client::connect(&ep, self.timeout, self.async_tx.clone(), events::is_event)?;
        *lock(&self.shared.client) = Some(client);
        // Where is the kernel? `?` answers with the stop state.
        let stopped = {
            let mut c = self.client()?;
            c.request_str("?")
                .map(|r| crate::rsp::client::is_stop_reply(r.as_bytes()))?
        };
        // Events as checksummed records; ignore an older stub without it.
        let _ = self.monitor("stream record");
        self.refresh_tasks();
        self.refresh_clock();
        if self.resume_on_connect && stopped {
            self.client()?.resume("c")?;
        }
        Ok(())
    }

    pub fn client(&self) -> Result<ClientGuard<'_>> {
        let g = lock(&self.shared.client);
        if g.is_none() {
            bail!(
                "not connected to a stub: start kdbg with --connect/--kernel, or use `reconnect`"
            );
        }
        Ok(ClientGuard(g))
    }

    pub fn connected(&self) -> bool {
        lock(&self.shared.client)
            .as_ref()
            .is_some_and(|c| !c.is_closed())
    }

    pub fn running(&self) -> bool {
        lock(&self.shared.client)
            .as_ref()
            .is_some_and(|c| c.is_running())
    }

    /// Send a monitor command; `error` rows become errors.
    pub fn monitor(&self, command: &str) -> Result<String> {
        let text = self.client()?.monitor(command)?;
        for line in text.lines() {
            if let Ok(e) = proto::reply::ErrorRow::parse(line) {
                bail!("{} [{}]", e.msg, e.code.as_str());
            }
        }
        Ok(text)
    }

    pub fn refresh_tasks(&self) {
        if let Ok(text) = self.monitor("tasks") {
            let mut t = write(&self.shared.tasks);
            for line in text.lines() {
                if let Ok(row) = proto::reply::TaskRow::parse(line) {
                    t.insert(row.id, row.name.to_string());
                }
            }
        }
    }

    /// The TSC rate and boot TSC, if the stub tells them (`events` row
    /// keys `tsc_hz`, `boot_tsc`); they win over the host's measurement.
    pub fn refresh_clock(&self) {
        if let Ok(text) = self.monitor("events") {
            for line in text.lines() {
                if let Some(r) = proto::reply::Row::parse(line) {
                    let mut c = write(&self.shared.clock);
                    if let Some(hz) = r.num("tsc_hz").filter(|h| *h > 0) {
                        c.tsc_hz = Some(hz);
                    }
                    if let Some(b) = r.num("boot_tsc") {
                        c.base = Some(b);
                    }
                }
            }
        }
    }

    /// Let the event thread show a stop that already happened before the
    /// next command prints anything (keeps batch output in order).
    pub fn wait_stops_shown(&self) {
        let Some(sent) = lock(&self.shared.client).as_ref().map(|c| c.async_stops()) else {
            return;
        };
        let target = self.stops_base + sent;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while self.shared.stops_shown.load(Ordering::SeqCst) < target
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Handle stops the event thread saw: drop temporary breakpoints.
    pub fn sync_stops(&mut self) {
        let stops = std::mem::take(&mut *lock(&self.shared.stops));
        if stops.is_empty() || !self.breakpoints.values().any(|b| b.info.temporary) {
            return;
        }
        let Ok(rip) = self.registers().map(|r| r.rip) else {
            return;
        };
        let temps: Vec<u32> = self
            .breakpoints
            .values()
            .filter(|b| b.info.temporary && b.info.addr == rip)
            .map(|b| b.info.id)
            .collect();
        for id in temps {
            let _ = self.delete_breakpoint(id);
        }
    }

    pub fn registers(&self) -> Result<crate::regs::RegisterFile> {
        let g = self.client()?.read_registers()?;
        Ok(crate::regs::RegisterFile::parse_g(&g)?)
    }

    pub fn delete_breakpoint(&mut self, id: u32) -> Result<()> {
        let b = self
            .breakpoints
            .get(&id)
            .ok_or_else(|| anyhow!("no breakpoint {id}: `info breakpoints` lists them"))?
            .clone();
        let _pause = Pause::new(self)?;
        self.client()?
            .clear_breakpoint(b.kind, b.info.addr, b.len)?;
        self.breakpoints.remove(&id);
        if matches!(
            b.kind,
            BreakKind::Write | BreakKind::Read | BreakKind::Access
        ) {
            lock(&self.shared.watches).remove(&b.info.addr);
        }
        Ok(())
    }

    /// On leaving: optionally remove probes, and leave the kernel running.
    pub fn leave(&mut self) {
        if !self.connected() {
            return;
        }
        if self.remove_probes_on_exit {
            let ids: Vec<u32> = read(&self.shared.probes).keys().copied().collect();
            for chunk in ids.chunks(proto::command::MAX_IDS) {
                let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
                let _ = self.monitor(&format!("probe delete {}", list.join(" ")));
            }
        }
        let ids: Vec<u32> = self.breakpoints.keys().copied().collect();
        for id in ids {
            let _ = self.delete_breakpoint(id);
        }
        if !self.running() {
            if let Ok(mut c) = self.client() {
                let _ = c.request_str("D");
            }
        } else if let Ok(mut c) = self.client() {
            // Detach while running: interrupt, then detach.
            if c.interrupt(Duration::from_secs(2)).is_ok() {
                let _ = c.request_str("D");
            }
        }
        if let Some(mut c) = lock(&self.shared.client).take() {
            c.close();
        }
    }
}
