//! When the kernel dies: the death record, the policy (`wait`, `exit`,
//! `reboot`), the stop loop a dead kernel stays in, and `monitor why`.
//!
//! The kernel's fatal paths (an unclaimed CPU exception, a Rust panic, a
//! double fault, a stack overflow) call [`record`] once with what they know,
//! print their console lines, then call [`serve`] with the trap frame. The
//! stub then behaves like kgdb on an oops: with a debugger attached the
//! stop is reported at once; with nobody attached and the `wait` policy the
//! kernel stays in the stop loop until a debugger comes. A dead kernel never
//! resumes: gdb's `continue` (or a step) gets the same stop again, `detach`
//! leaves it waiting for the next debugger.
//!
//! Nothing here allocates or waits for a lock: the record lives in statics
//! written once (a compare-and-swap on [`STATE`] elects the first death), and
//! the session lock is only tried. A second death while the first is being
//! handled (a panic inside the stub's own code, a fault while printing) is
//! reported by [`record`] as [`Recursion`], and the kernel falls back to a
//! minimal register dump on its console.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use arch::TrapFrame;
use gdbstub::common::Signal;
use proto::reply::WhyRow;
use spin::Mutex;

use crate::machine::{SESSION, SIGSEGV, SIGTRAP, StopReason};

/// What a dying kernel does when nobody is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OnDeath {
    /// Stay in the stub until a debugger attaches (kgdb's behaviour).
    Wait = 0,
    /// Let the kernel exit (tests that expect a death).
    Exit = 1,
    /// Let the kernel reset the machine.
    Reboot = 2,
}

impl OnDeath {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDeath::Wait => "wait",
            OnDeath::Exit => "exit",
            OnDeath::Reboot => "reboot",
        }
    }

    /// `wait`, `exit` or `reboot`.
    pub fn parse(s: &str) -> Option<OnDeath> {
        match s {
            "wait" => Some(OnDeath::Wait),
            "exit" => Some(OnDeath::Exit),
            "reboot" => Some(OnDeath::Reboot),
            _ => None,
        }
    }
}

static POLICY: AtomicU8 = AtomicU8::new(OnDeath::Wait as u8);

/// Sets the policy (the kernel's command line, at boot).
pub fn set_policy(p: OnDeath) {
    POLICY.store(p as u8, Ordering::Relaxed);
}

/// The policy in force.
pub fn policy() -> OnDeath {
    match POLICY.load(Ordering::Relaxed) {
        1 => OnDeath::Exit,
        2 => OnDeath::Reboot,
        _ => OnDeath::Wait,
    }
}

/// How the kernel died.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Rust panic (message and `file:line:col`).
    Panic,
    /// An unclaimed CPU exception (#UD, #GP, #PF, #DE, ...).
    Trap,
    /// A double fault.
    DoubleFault,
    /// A task overran its stack (guard page or canary).
    StackOverflow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Panic => "panic",
            Kind::Trap => "trap",
            Kind::DoubleFault => "double-fault",
            Kind::StackOverflow => "stack-overflow",
        }
    }
}

/// Text kept without the heap: the first `N` bytes written, cut at a char
/// boundary, spaces and control characters kept as written except `\n`
/// (rows are one line).
#[derive(Clone, Copy)]
pub struct FixedText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedText<N> {
    pub const fn new() -> Self {
        FixedText {
            buf: [0; N],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        let bytes = self.buf.get(..self.len).unwrap_or(&[]);
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            // Cut inside a character: keep the valid prefix.
            Err(e) => {
                core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or("")
            }
        }
    }
}

impl<const N: usize> Default for FixedText<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for FixedText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            let b = if b == b'\n' || b == b'\r' { b' ' } else { b };
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// What the kernel knew when it died.
#[derive(Clone, Copy)]
pub struct Death {
    pub kind: Kind,
    /// The exception vector (for a panic: the vector of the trap that
    /// brought the panic into the stub, 3).
    pub vector: u64,
    pub error_code: u64,
    /// The faulting address of a #PF (0 otherwise).
    pub cr2: u64,
    pub task: u32,
    pub rip: u64,
    /// The panic message, or the trap's name and detail.
    pub msg: FixedText<240>,
    /// `file:line:col` of a panic (empty for traps).
    pub location: FixedText<120>,
}

impl Death {
    pub const fn new(kind: Kind) -> Self {
        Death {
            kind,
            vector: 0,
            error_code: 0,
            cr2: 0,
            task: 0,
            rip: 0,
            msg: FixedText::new(),
            location: FixedText::new(),
        }
    }

    /// The signal gdb sees: SIGABRT for a panic, SIGILL for #UD, SIGFPE for
    /// #DE, SIGTRAP for an unclaimed #BP/#DB, SIGSEGV for the rest (#GP,
    /// #PF, #DF, stack overflow).
    pub fn signal(&self) -> Signal {
        match (self.kind, self.vector) {
            (Kind::Panic, _) => Signal(6),
            (Kind::Trap, 0) => Signal(8),
            (Kind::Trap, 6) => Signal(4),
            (Kind::Trap, 1 | 3) => SIGTRAP,
            _ => SIGSEGV,
        }
    }
}

impl fmt::Display for Death {
    /// `panic at kernel/src/x.rs:12:5: MESSAGE` or `#PF page fault ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Panic => {
                f.write_str("panic")?;
                if !self.location.as_str().is_empty() {
                    write!(f, " at {}", self.location.as_str())?;
                }
                write!(f, ": {}", self.msg.as_str())
            }
            _ => f.write_str(self.msg.as_str()),
        }
    }
}

const ALIVE: u8 = 0;
const DYING: u8 = 1;

/// `ALIVE` until the first death is recorded.
static STATE: AtomicU8 = AtomicU8::new(ALIVE);
/// Written once by the first death, then only read.
static DEATH: Mutex<Option<Death>> = Mutex::new(None);

/// A death happened while another was being handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recursion;

/// Records the kernel's death. The first call wins; any later call (a
/// death inside the death path, the stub's code included) is
/// [`Recursion`]: the caller must not enter the stub again.
pub fn record(d: &Death) -> Result<(), Recursion> {
    if STATE
        .compare_exchange(ALIVE, DYING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(Recursion);
    }
    // Nobody else takes this lock before STATE is DYING, except `why` (a
    // reader that never dies holding it); never wait for it.
    if let Some(mut slot) = DEATH.try_lock() {
        *slot = Some(*d);
    }
    Ok(())
}

/// The kernel has died (a death was recorded).
pub fn dead() -> bool {
    STATE.load(Ordering::Acquire) != ALIVE
}

/// The recorded death, if any.
pub fn death() -> Option<Death> {
    DEATH.try_lock().and_then(|d| *d)
}

/// What the kernel should do after [`serve`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit (the `exit` policy, or the debugger detached under it).
    Exit,
    /// Reset the machine.
    Reboot,
    /// The stub's lock is held by the dying code itself (the death
    /// happened inside the stub): the kernel dumps its registers instead.
    StubBusy,
}

/// Set while the death's stop loop runs (a continue re-reports the stop).
static SERVING: AtomicBool = AtomicBool::new(false);

/// Stops in the stub for the recorded death (call after [`record`]).
/// Returns only when the policy says the kernel goes away, or when the
/// stub cannot be entered.
pub fn serve(frame: &mut TrapFrame) -> Outcome {
    // The dying CPU takes the debugger (waiting for a stop on another CPU
    // to end) and parks the others for good.
    let _ = crate::allstop::acquire(frame);
    crate::allstop::stop_others();
    let Some(mut s) = SESSION.try_lock() else {
        return Outcome::StubBusy;
    };
    let d = death().unwrap_or(Death::new(Kind::Trap));
    // The task as the stub's kernel operations see it (the same call every
    // stop makes: a kernel whose operations die here is a recursion).
    let task = s.target.host.task_id();
    let tid = task_tid(task);
    let reason = StopReason::SignalWithThread {
        tid,
        signal: d.signal(),
    };
    let policy = policy();
    let gone = match policy {
        OnDeath::Reboot => Outcome::Reboot,
        _ => Outcome::Exit,
    };
    if !s.attached() && policy != OnDeath::Wait {
        return gone;
    }
    SERVING.store(true, Ordering::Release);
    loop {
        s.stop_with_cause(frame, reason, Cause::Death);
        if !s.attached() {
            // Detached: wait for the next debugger, or go.
            if policy != OnDeath::Wait {
                return gone;
            }
            continue;
        }
        // gdb resumed a dead kernel: it stays where it died.
        let mut line = FixedText::<320>::new();
        let _ = write!(
            line,
            "kdbg: the kernel died ({d}) and cannot resume; it stays stopped"
        );
        let uart = crate::conn::Com2::new().0;
        crate::conn::write_console(&uart, line.as_str().as_bytes());
        crate::conn::write_console(&uart, b"\n");
    }
}

fn task_tid(task: u32) -> gdbstub::common::Tid {
    core::num::NonZeroUsize::new(crate::kernel::tid_of_task(task))
        .unwrap_or(core::num::NonZeroUsize::MIN)
}

/// Why the kernel is stopped, as `monitor why` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A debugger's first packet stopped a running kernel.
    Attach,
    /// Ctrl-C from the debugger.
    Interrupt,
    /// A gdb breakpoint (software or hardware).
    Breakpoint,
    /// A watchpoint.
    Watchpoint,
    /// A single step finished.
    Step,
    /// An int3 claimed while a debugger was attached.
    Trap,
    /// `kdbg.wait`: the kernel waits at boot for a debugger.
    Wait,
    /// The kernel died.
    Death,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Attach => "attach",
            Cause::Interrupt => "interrupt",
            Cause::Breakpoint => "breakpoint",
            Cause::Watchpoint => "watchpoint",
            Cause::Step => "step",
            Cause::Trap => "trap",
            Cause::Wait => "wait",
            Cause::Death => "death",
        }
    }
}

/// The current stop, for `monitor why` and the `?` reply.
#[derive(Clone, Copy)]
pub struct LastStop {
    pub cause: Cause,
    pub reason: StopReason,
    pub task: u32,
    pub rip: u64,
}

/// Written by the stop loop (under the session lock), cleared on resume.
static LAST_STOP: Mutex<Option<LastStop>> = Mutex::new(None);
/// Bumped at every stop and resume, so a reader can tell `running`.
static STOPPED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn set_last_stop(stop: Option<LastStop>) {
    STOPPED.store(u64::from(stop.is_some()), Ordering::Release);
    if let Some(mut l) = LAST_STOP.try_lock() {
        *l = stop;
    }
}

/// The current stop (`None` while the kernel runs).
pub fn last_stop() -> Option<LastStop> {
    LAST_STOP.try_lock().and_then(|l| *l)
}

/// The signal and thread of a stop reason.
pub(crate) fn signal_and_tid(r: &StopReason) -> (u8, Option<usize>) {
    use gdbstub::stub::MultiThreadStopReason as M;
    match r {
        M::SignalWithThread { tid, signal } => (signal.0, Some(tid.get())),
        M::SwBreak(t) | M::HwBreak(t) => (5, Some(t.get())),
        M::Watch { tid, .. } => (5, Some(tid.get())),
        M::DoneStep => (5, None),
        M::Signal(s) => (s.0, None),
        _ => (5, None),
    }
}

/// `monitor why`: one `why` row.
///
/// ```text
/// why state=running
/// why state=stopped cause=breakpoint signal=5 task=4 rip=0x1761c0
/// why state=stopped cause=wait signal=5 task=0 rip=0x...   (kdbg.wait)
/// why state=dead cause=death kind=panic signal=6 task=6 vector=3 error_code=0x0 cr2=0x0 rip=0x... where=kernel/src/x.rs:12:5 resumable=no msg=TEXT
/// ```
pub fn why(out: &mut dyn Write) -> fmt::Result {
    let stop = last_stop();
    let policy = Some(policy().as_str());
    if let Some(d) = death() {
        let location = d.location.as_str();
        let row = WhyRow {
            state: "dead",
            cause: Some("death"),
            kind: Some(d.kind.as_str()),
            signal: Some(u64::from(d.signal().0)),
            task: Some(u64::from(d.task)),
            vector: Some(d.vector),
            error_code: Some(d.error_code),
            cr2: Some(d.cr2),
            rip: Some(d.rip),
            policy,
            location: (!location.is_empty()).then_some(location),
            resumable: Some(false),
            msg: Some(d.msg.as_str()),
        };
        return writeln!(out, "{row}");
    }
    let row = match stop {
        None => WhyRow {
            state: "running",
            policy,
            ..WhyRow::default()
        },
        Some(ref l) => WhyRow {
            state: "stopped",
            cause: Some(l.cause.as_str()),
            signal: Some(u64::from(signal_and_tid(&l.reason).0)),
            task: Some(u64::from(l.task)),
            rip: Some(l.rip),
            policy,
            ..WhyRow::default()
        },
    };
    writeln!(out, "{row}")
}

/// `monitor pages ADDR LEN`: which 4 KiB pages hold a non-zero byte
/// (`map`) and which are not mapped (`holes`), as hex bitmaps (page `i` of
/// the range is bit `i % 8` of byte `i / 8`). At most [`MAX_PAGES_SPAN`]
/// bytes per call; `addr` is rounded down to a page.
pub fn pages(addr: u64, len: u64, out: &mut dyn Write) -> fmt::Result {
    const PAGE: u64 = 4096;
    const BYTES: usize = (MAX_PAGES_SPAN / PAGE / 8) as usize;
    let start = addr & !(PAGE - 1);
    let len = len.min(MAX_PAGES_SPAN);
    let count = len.div_ceil(PAGE) as usize;
    let mut map = [0u8; BYTES];
    let mut holes = [0u8; BYTES];
    for i in 0..count {
        let page = start.wrapping_add(i as u64 * PAGE);
        let bit = 1u8 << (i % 8);
        let which = if arch::mem::check_range(page, PAGE as usize, false).is_ok() {
            if !page_nonzero(page) {
                continue;
            }
            &mut map
        } else {
            &mut holes
        };
        if let Some(b) = which.get_mut(i / 8) {
            *b |= bit;
        }
    }
    let used = count.div_ceil(8);
    let row = proto::reply::PagesRow {
        addr: start,
        len: count as u64 * PAGE,
        map: map.get(..used).unwrap_or(&[]),
        holes: holes.get(..used).unwrap_or(&[]),
    };
    writeln!(out, "{row}")
}

/// Largest range one `pages` call covers (8 MiB: a 512-character map).
pub const MAX_PAGES_SPAN: u64 = 8 << 20;

fn page_nonzero(page: u64) -> bool {
    let words = page as *const u64;
    (0..512).any(|i| {
        // SAFETY: the whole page is mapped (checked by the caller with the
        // page-table walk); reading RAM has no side effects.
        unsafe { core::ptr::read_volatile(words.add(i)) != 0 }
    })
}
