//! The session: the connection, the kernel image, what the host knows
//! about probes and breakpoints, and the thread that turns the stub's
//! asynchronous output into events and notices ([`pump`]).
//!
//! [`Shared`] is what the event thread shares with the command loop. It is
//! made of owned parts, each with private fields and its locking rule
//! stated once in its module: [`Image`] (symbols, lines, types, loaded
//! bytes), [`ProbeBook`] (probe definitions), [`Display`] (rendering, live
//! and filtered display, the clock, task names, the kept events, the
//! printer), [`Stops`] (stops seen, watchpoint values) and the link to the
//! stub (one `Mutex<Option<Client>>`, see [`Session::client`]).
//!
//! Lock order: the client lock may be held while calling into the parts
//! (they never take it); the parts take only their own locks, and the
//! image's lock is reentrant. Nothing else nests.

mod display;
mod probebook;
mod pump;
mod stops;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

pub use display::{Display, Printer};
pub use probebook::ProbeBook;
pub use stops::Stops;

use crate::disas::{Disassembler, Syntax};
use crate::events::{Clock, Names};
use crate::image::{ElfGuard, Image};
use crate::output::{BreakInfo, StopInfo};
use crate::render::Render;
use crate::rsp::{Async, BreakKind, Client, Endpoint, StopReply};

/// Set by Ctrl-C (SIGINT) while a command waits (`wait`, `sleep`).
pub static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    CANCEL.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// SIGINT sets [`CANCEL`] while a command that can be interrupted runs
/// (`dump core`, `step`/`next`/`finish` in every mode, batch and `--json`
/// included); the previous handler comes back after.
pub struct SigintGuard(libc::sighandler_t);

impl SigintGuard {
    pub fn install() -> SigintGuard {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        SigintGuard(unsafe {
            libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t)
        })
    }
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        // SAFETY: puts back the handler that was installed before.
        unsafe { libc::signal(libc::SIGINT, self.0) };
    }
}

/// State shared with the event thread (see the module doc).
pub struct Shared {
    /// The stub connection; `None` before connecting and after leaving.
    link: Mutex<Option<Client>>,
    pub image: Arc<Image>,
    pub probes: ProbeBook,
    pub display: Display,
    pub stops: Stops,
    /// Expression state: value history, convenience variables, displays,
    /// the selected frame (`exec::inspect`). Taken after the client lock
    /// and the image lock, never while calling into other parts.
    pub expr: Mutex<crate::exec::inspect::ExprState>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Names for Shared {
    fn task_name(&self, task: u32) -> Option<String> {
        self.display.task_name(task)
    }
    fn symbol_at(&self, addr: u64) -> Option<String> {
        self.image.symbol_at(addr)
    }
    fn symbolize(&self, addr: u64) -> Option<String> {
        self.image.symbolize(addr)
    }
}

impl Shared {
    /// Print from the main thread (never inside readline).
    pub fn print(&self, line: String) {
        self.display.print(line)
    }

    /// Print from the event thread: queued when a printer is set.
    pub fn print_async(&self, line: String) {
        self.display.print_async(line)
    }

    /// The kernel image's ELF (shorthand for `self.image.elf()`).
    pub fn elf(&self) -> Result<ElfGuard<'_>> {
        self.image.elf()
    }

    /// `name+0xoff` when a symbol covers `addr`.
    pub fn symbolize_opt(&self, addr: u64) -> Option<String> {
        self.image.symbolize(addr)
    }

    /// Describe where `rip` is: `func+0x12`.
    pub fn describe(&self, addr: u64) -> String {
        self.image.describe(addr)
    }

    /// Source `file:line` of an address.
    pub fn source_of(&self, addr: u64) -> Option<String> {
        self.image.source_of(addr)
    }

    pub fn disassembler(&self, syntax: Syntax) -> Disassembler {
        self.image.disassembler(syntax)
    }

    /// The instruction at `addr` from the image.
    pub fn insn_at(&self, addr: u64) -> Option<crate::disas::Insn> {
        self.image.insn_at(addr)
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

    /// Read a watched value (`len` bytes, little-endian) through the client.
    pub fn read_watched(&self, addr: u64, len: u64) -> Option<u64> {
        let mut c = lock(&self.link);
        let bytes = c.as_mut()?.read_memory(addr, len as usize).ok()?;
        let mut b = [0u8; 8];
        b.get_mut(..bytes.len())?.copy_from_slice(&bytes);
        Some(u64::from_le_bytes(b))
    }

    /// `old -> new` for a watchpoint stop (updates the remembered value).
    pub fn watch_change(&self, addr: u64) -> Option<String> {
        let (len, old) = self.stops.watched(addr)?;
        let new = self.read_watched(addr, len)?;
        self.stops.watch(addr, len, Some(new));
        Some(match old {
            Some(o) => format!("old {o:#x}, new {new:#x}"),
            None => format!("value {new:#x}"),
        })
    }

    /// Runs `f` on the connected client (`None` when not connected).
    pub fn with_link<T>(&self, f: impl FnOnce(&mut Client) -> T) -> Option<T> {
        lock(&self.link).as_mut().map(f)
    }

    fn current_rip(&self) -> Option<u64> {
        let mut c = lock(&self.link);
        let c = c.as_mut()?;
        let g = c.read_registers().ok()?;
        crate::regs::RegisterFile::parse_g(&g).ok().map(|r| r.rip)
    }

    /// Is a client connected and the kernel running?
    pub fn running(&self) -> bool {
        lock(&self.link).as_ref().is_some_and(|c| c.is_running())
    }

    /// Is a client connected (and the connection alive)?
    pub fn connected(&self) -> bool {
        lock(&self.link).as_ref().is_some_and(|c| !c.is_closed())
    }

    /// The prompt for the state right now. All have the same width, so the
    /// line editor can redraw it in place when the state changes under it
    /// (an asynchronous stop while the prompt waits).
    pub fn prompt(&self) -> &'static str {
        if !self.connected() {
            "kdbg (offline)> "
        } else if self.running() {
            "kdbg (running)> "
        } else {
            "kdbg (stopped)> "
        }
    }
}

/// The kernel task of a gdb thread id (`proto::thread`: task id + 1;
/// thread 0 means "any").
pub fn task_of_tid(tid: u64) -> Option<u64> {
    proto::thread::task_of_tid(tid).map(u64::from)
}

/// The gdb thread id of a kernel task (`proto::thread`).
pub fn tid_of_task(task: u64) -> u64 {
    u32::try_from(task).map_or(task.wrapping_add(1), proto::thread::tid_of_task)
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
            && let Some(c) = lock(&sh.link).as_mut()
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
    /// `--memory FILE`: guest RAM shared through a file.
    pub memory: Option<PathBuf>,
}

pub struct Session {
    pub shared: Arc<Shared>,
    pub endpoint: Option<Endpoint>,
    async_tx: Sender<Async>,
    pub timeout: Duration,
    pub breakpoints: BTreeMap<u32, Breakpoint>,
    pub next_break: u32,
    pub selected_thread: Option<u64>,
    /// The selected frame's level (`frame`/`up`/`down`; 0 after a stop),
    /// numbered as `bt` and gdb number frames (inline frames count).
    pub frame_level: usize,
    /// The physical (CFI) frame that holds the selected frame.
    pub frame_physical: usize,
    /// `skip function|file` entries.
    pub skips: Vec<crate::exec::stepping::Skip>,
    /// `set step-library on`: `step` stops in core/alloc/std.
    pub step_library: bool,
    /// The inline level (depth from the outermost frame) the last source
    /// step presented at that pc: a `next` from there steps that frame.
    pub step_presented: Option<(u64, usize)>,
    pub syntax: Syntax,
    pub quit: bool,
    pub remove_probes_on_exit: bool,
    /// The kernel runs in a QEMU that ends with kdbg (`--kernel`, `cargo
    /// xtask run`): nothing stays behind when kdbg leaves.
    pub kernel_exits_with_kdbg: bool,
    pub resume_on_connect: bool,
    /// The kernel ELF the symbols come from (a recording names it).
    pub symbols: Option<PathBuf>,
    /// Stops shown before the current connection (its counter starts at 0).
    stops_base: u64,
    /// The post-mortem summary of the last connect, until it is shown
    /// ([`Session::show_attach_summary`]).
    attach_summary: Option<crate::exec::postmortem::PostMortem>,
    /// `--memory FILE` mapped (issue 17): handed to each connection once
    /// the stub said where RAM and the rings are.
    pub mapping: Option<Arc<crate::guestmem::Mapping>>,
    /// Why the mapping is not used (a foreign stub, a stub without `shm`).
    pub mapping_note: Option<String>,
    /// The direct event consumer over the mapping, while it runs.
    pub consumer: Option<crate::ringconsumer::Consumer>,
}

impl Session {
    /// Selects frame 0 again (the kernel resumed or another task was
    /// selected: outer frames' registers are stale).
    pub fn reset_frame(&mut self) {
        self.frame_level = 0;
        self.frame_physical = 0;
        if let Ok(mut e) = self.shared.expr.lock() {
            e.selected = None;
            e.inline_level = None;
        }
    }

    pub fn new(opts: Options) -> Result<Session> {
        let image = match &opts.symbols {
            Some(path) => Image::open(path)?,
            None => Image::default(),
        };
        let clock = Clock {
            tsc_hz: opts.tsc_hz.or_else(Clock::host_tsc_hz),
            base: None,
            kernel_boot: None,
        };
        let shared = Arc::new(Shared {
            link: Mutex::new(None),
            expr: Mutex::new(Default::default()),
            image: Arc::new(image),
            probes: ProbeBook::default(),
            display: Display::new(opts.render, clock),
            stops: Stops::default(),
        });
        let (tx, rx) = mpsc::channel();
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("events".into())
                .spawn(move || shared.pump(rx))?;
        }
        let mapping = match &opts.memory {
            Some(p) => Some(Arc::new(crate::guestmem::Mapping::open(p)?)),
            None => None,
        };
        let mut s = Session {
            mapping,
            mapping_note: None,
            consumer: None,
            shared,
            endpoint: opts.endpoint,
            async_tx: tx,
            timeout: opts.timeout,
            breakpoints: BTreeMap::new(),
            next_break: 1,
            selected_thread: None,
            frame_level: 0,
            frame_physical: 0,
            skips: Vec::new(),
            step_library: false,
            step_presented: None,
            syntax: Syntax::Intel,
            quit: false,
            remove_probes_on_exit: false,
            kernel_exits_with_kdbg: false,
            resume_on_connect: opts.resume,
            symbols: opts.symbols.clone(),
            stops_base: 0,
            attach_summary: None,
        };
        if s.endpoint.is_some() {
            s.connect()?;
        }
        Ok(s)
    }

    pub fn set_printer(&self, p: Printer) {
        self.shared.display.set_printer(Some(p));
    }

    /// Connect (or reconnect) to the endpoint and prepare the stub.
    pub fn connect(&mut self) -> Result<()> {
        let ep = self.endpoint.clone().ok_or_else(|| {
            anyhow!("no connection configured: start kdbg with --connect or --kernel")
        })?;
        // The old connection's consumer ends first (the new stub session
        // hands the rings over again).
        self.consumer = None;
        if let Some(mut old) = lock(&self.shared.link).take() {
            old.close();
        }
        self.stops_base = self.shared.stops.shown_count();
        let client = Client::connect(
            &ep,
            self.timeout,
            self.async_tx.clone(),
            crate::events::is_event,
        )?;
        *lock(&self.shared.link) = Some(client);
        // Where is the kernel? `?` answers with the stop state.
        let (stopped, stop_thread) = {
            let mut c = self.client()?;
            let r = c.request_str("?")?;
            let stopped = crate::rsp::client::is_stop_reply(r.as_bytes());
            // A previous client (gdb) may have left another task selected
            // for `g`: registers are the stopped frame's again.
            if stopped {
                let _ = c.select_thread(0);
            }
            (stopped, StopReply::parse(&r).and_then(|s| s.thread))
        };
        // Events as checksummed records; ignore an older stub without it.
        // Only kdbg's stub answers `ok stream=record`: anything else (QEMU's
        // gdbstub passes it to its monitor, which does not know it) is a
        // foreign stub, decided once here.
        let kdbg = self.client()?.monitor("stream record").is_ok_and(|t| {
            t.lines().any(|l| {
                proto::reply::StreamRow::parse(l)
                    .is_ok_and(|r| r.stream == proto::StreamMode::Record)
            })
        });
        {
            let mut c = self.client()?;
            c.kdbg = kdbg;
            // kdbg's stub answers binary reads (`x`); tried at the first read.
            c.binary_reads = if kdbg { None } else { Some(false) };
        }
        if kdbg {
            self.refresh_tasks();
            self.refresh_clock();
            // Probes already in the kernel (gdb's, an earlier session's).
            let _ = crate::exec::probes::sync(self);
        }
        self.attach_memory(kdbg);
        if stopped && !kdbg {
            crate::exec::linux::on_connect(self);
        } else if let Ok(elf) = self.shared.elf() {
            // kdbg's reference kernel is not relocated.
            elf.set_slide(0);
        }
        // A kernel that stopped (or died) before this attach stays stopped,
        // as gdb never resumes on connect; its summary is shown. (A foreign
        // stub such as QEMU's stops the guest on every connect: not that.)
        let kept = if stopped && kdbg {
            crate::exec::postmortem::on_connect(self, stop_thread)
        } else {
            None
        };
        match kept {
            Some(pm) => self.attach_summary = Some(pm),
            None if self.resume_on_connect && stopped && !crate::coredump::offline() => {
                self.client()?.resume("c")?
            }
            None => {}
        }
        Ok(())
    }

    /// With `--memory`: asks the stub where RAM, CR3 and the rings are
    /// (`monitor shm`) and hands the mapping to the connection, which then
    /// reads memory from it.
    fn attach_memory(&mut self, kdbg: bool) {
        let Some(map) = self.mapping.clone() else {
            return;
        };
        if !kdbg {
            self.mapping_note = Some("the stub is not kdbg's: memory is read through it".into());
            return;
        }
        let row = self
            .client()
            .ok()
            .and_then(|mut c| c.monitor("shm").ok())
            .and_then(|t| t.lines().find_map(|l| proto::reply::ShmRow::parse(l).ok()));
        let Some(row) = row else {
            self.mapping_note = Some(
                "the stub does not describe its memory (`monitor shm`): reading through it".into(),
            );
            return;
        };
        if row.ram_end == 0 {
            self.mapping_note =
                Some("the kernel does not know its RAM size: reading through the stub".into());
            return;
        }
        let machine = crate::guestmem::Machine {
            cr3: row.cr3,
            low_end: 0,
            ram_start: row.ram_start,
            ram_end: row.ram_end,
            trampoline: row.tramp,
        };
        let g = Arc::new(crate::guestmem::GuestMem::new(map, machine));
        if let Ok(mut c) = self.client() {
            c.guest = Some(g.clone());
        }
        self.mapping_note = None;
        // Events: the rings are read from the mapping, the stub stops
        // streaming them.
        let direct = self
            .client()
            .ok()
            .and_then(|mut c| c.monitor("shm direct").ok())
            .and_then(|t| t.lines().find_map(|l| proto::reply::ShmRow::parse(l).ok()))
            .filter(|r| r.epoch & 1 == 1);
        let Some(row) = direct else {
            self.mapping_note = Some(
                "the stub did not hand over the event rings: events come over the UART".into(),
            );
            return;
        };
        match crate::ringconsumer::Consumer::start(g, &row, self.async_tx.clone()) {
            Ok(c) => self.consumer = Some(c),
            Err(e) => {
                if let Ok(mut c) = self.client() {
                    let _ = c.monitor("shm uart");
                }
                self.mapping_note = Some(format!("events come over the UART: {e}"));
            }
        }
    }

    /// Prints the summary of a kernel found stopped or dead at the last
    /// connect (once; `"command": "attach"` in JSON).
    pub fn show_attach_summary(&mut self) {
        if let Some(pm) = self.attach_summary.take() {
            let r = self.shared.display.render();
            self.shared.print(r.output(
                "attach",
                &crate::output::Output::PostMortem { postmortem: pm },
            ));
        }
    }

    pub fn client(&self) -> Result<ClientGuard<'_>> {
        let g = lock(&self.shared.link);
        if g.is_none() {
            bail!(
                "not connected to a stub: start kdbg with --connect/--kernel, or use `reconnect`"
            );
        }
        Ok(ClientGuard(g))
    }

    pub fn connected(&self) -> bool {
        self.shared.connected()
    }

    pub fn running(&self) -> bool {
        self.shared.running()
    }

    /// Is the stub kdbg's own (probe core, requests while running)?
    pub fn kdbg_stub(&self) -> bool {
        lock(&self.shared.link).as_ref().is_none_or(|c| c.kdbg)
    }

    /// Send a kdbg monitor command; `error` rows become errors. Refused
    /// plainly on a foreign stub (it has no probe core).
    pub fn monitor(&self, command: &str) -> Result<String> {
        if !self.kdbg_stub() {
            let word = command.split_whitespace().next().unwrap_or(command);
            bail!(
                "this stub is not kdbg's (e.g. QEMU's gdbstub): it has no kdbg probe core, so `{word}` is not available here (use `monitor` for the stub's own commands)"
            );
        }
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
            self.shared.display.learn_tasks(
                text.lines()
                    .filter_map(|l| proto::reply::TaskRow::parse(l).ok())
                    .map(|row| (row.id, row.name.to_string())),
            );
        }
    }

    /// The TSC rate and boot TSC, if the stub tells them (the `events`
    /// row's `tsc_hz`, `boot_tsc`); they win over the host's measurement.
    /// Once taken for a boot of the kernel they are kept (a reconnect to
    /// the same boot keeps every time where it was); a new boot replaces
    /// them.
    pub fn refresh_clock(&self) {
        let Ok(text) = self.monitor("events") else {
            return;
        };
        let Some(r) = text
            .lines()
            .find_map(|l| proto::reply::EventsRow::parse(l).ok())
        else {
            return;
        };
        self.shared.display.update_clock(|c| {
            let same_boot = r.boot_tsc != 0 && c.kernel_boot == Some(r.boot_tsc);
            if same_boot && c.tsc_hz.is_some() {
                return;
            }
            if r.tsc_hz > 0 {
                c.tsc_hz = Some(r.tsc_hz);
            }
            if r.boot_tsc != 0 {
                c.base = Some(r.boot_tsc);
                c.kernel_boot = Some(r.boot_tsc);
            }
        });
    }

    /// Let the event thread show a stop that already happened before the
    /// next command prints anything (keeps batch output in order).
    pub fn wait_stops_shown(&self) {
        let Some(sent) = lock(&self.shared.link).as_ref().map(|c| c.async_stops()) else {
            return;
        };
        let target = self.stops_base + sent;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while self.shared.stops.shown_count() < target && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Handle stops the event thread saw: drop temporary breakpoints.
    pub fn sync_stops(&mut self) {
        let stops = self.shared.stops.take();
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
        let mut c = self.client()?;
        let g = c.read_registers()?;
        // The stub's own layout (target description) when it has one.
        Ok(match &c.layout {
            Some(l) => crate::regs::RegisterFile::parse_layout(l, &g)?,
            None => crate::regs::RegisterFile::parse_g(&g)?,
        })
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
        if b.info.condition.is_some() || b.info.counts.is_some() {
            // The kernel keeps a condition across the breakpoint being
            // lifted (stepping over it): end it with the breakpoint.
            let _ = self.monitor(&format!("cond {:#x}", b.info.addr));
        }
        if matches!(
            b.kind,
            BreakKind::Write | BreakKind::Read | BreakKind::Access
        ) {
            self.shared.stops.unwatch(b.info.addr);
        }
        Ok(())
    }

    /// What leaving does to the kernel, for the user (interactive `quit`
    /// and Ctrl-D say the same).
    pub fn leaving_note(&self) -> Option<String> {
        if self.kernel_exits_with_kdbg {
            return Some("kdbg: leaving; the kernel's QEMU stops with kdbg".into());
        }
        if !self.connected() {
            return None;
        }
        let _ = crate::exec::probes::sync(self);
        let n = self.shared.probes.len();
        match (n, self.remove_probes_on_exit) {
            (0, _) => None,
            (n, true) => Some(format!(
                "kdbg: leaving; removing {n} probe(s) from the kernel"
            )),
            (n, false) => Some(format!(
                "kdbg: leaving; {n} probe(s) stay in the running kernel (`quit --remove-probes` removes them)"
            )),
        }
    }

    /// On leaving: optionally remove probes (the ones this session set and
    /// the ones it adopted), and leave the kernel running.
    pub fn leave(&mut self) {
        if !self.connected() {
            return;
        }
        if self.remove_probes_on_exit {
            let _ = crate::exec::probes::sync(self);
            let ids = self.shared.probes.ids();
            for chunk in ids.chunks(proto::command::MAX_IDS) {
                let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
                let _ = self.monitor(&format!("probe delete {}", list.join(" ")));
            }
        }
        let ids: Vec<u32> = self.breakpoints.keys().copied().collect();
        for id in ids {
            let _ = self.delete_breakpoint(id);
        }
        // The direct consumer ends before the detach hands the rings back.
        self.consumer = None;
        // Detach (the stub resumes the kernel), and say so if the stub
        // refused: a refused detach leaves the kernel stopped.
        let running = self.running();
        let detached = match self.client() {
            Ok(mut c) => {
                // Detach while running: interrupt, then detach.
                if running {
                    c.interrupt(Duration::from_secs(2))
                        .map_err(anyhow::Error::from)
                        .and_then(|_| c.detach().map_err(anyhow::Error::from))
                } else {
                    c.detach().map_err(anyhow::Error::from)
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = detached {
            eprintln!(
                "kdbg: detach failed ({e:#}): the kernel may stay stopped; reconnect and `continue`, or use the stub's own means"
            );
        }
        if let Some(mut c) = lock(&self.shared.link).take() {
            c.close();
        }
    }
}
