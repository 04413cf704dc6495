//! Ground truth: with `kdbg.truth` on the command line, every workload call
//! made through the wrappers in [`super`] writes one line with its real
//! arguments and return value to QEMU's debugcon (I/O port 0xe9; QEMU
//! `-debugcon file:PATH`), apart from the console and the debugger's line.
//!
//! Line format (one call per line, fields separated by single spaces):
//! ```text
//! truth seq=<n> task=<task id> fn=<function> <arg>=<value> ... ret=<value>
//! ```
//! - unsigned integers and pointers: `0x` + lower-case hex (`clone_flags=0x11`)
//! - signed integers (`int`, `long`): decimal (`ret=-2`)
//! - C strings: the pointer, a colon, the text in double quotes
//!   (`path=0x1d4f30:"/etc/hostname"`; the text never contains spaces or quotes)
//! - struct fields: `<arg>.<field>=` (`req.inner.lo=0x7`)
//!
//! `seq` counts logged calls from 1. For `fib` and `nest` only the outermost
//! call is logged.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arch::port::{DEBUGCON_PORT, outb};

use crate::sync::IrqMutex;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Longest line kept (longer lines are cut).
pub const LINE_MAX: usize = 256;

/// A fixed-capacity line buffer.
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    pub const fn new() -> Line {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        let bytes = self.buf.get(..self.len).unwrap_or(&[]);
        core::str::from_utf8(bytes).unwrap_or("")
    }
}

impl Default for Line {
    fn default() -> Self {
        Line::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

static LAST: IrqMutex<Line> = IrqMutex::new(Line::new());

/// Turns logging on or off (the `kdbg.truth` flag turns it on at boot).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Logging is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Lines logged so far.
pub fn count() -> u64 {
    SEQ.load(Ordering::Relaxed)
}

/// Formats `truth seq=.. task=.. fn=<func> <args>` into `line`.
pub fn format_line(line: &mut Line, seq: u64, task: u32, func: &str, args: fmt::Arguments) {
    let _ = write!(line, "truth seq={seq} task={task} fn={func} {args}");
}

/// Logs one call when logging is on. `args` is `<arg>=<value> ... ret=<value>`.
pub fn log(func: &str, args: fmt::Arguments) {
    if !enabled() {
        return;
    }
    let mut last = LAST.lock();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    let mut line = Line::new();
    format_line(&mut line, seq, crate::sched::current_id(), func, args);
    for &b in line.as_str().as_bytes().iter().chain(b"\n") {
        // SAFETY: port 0xe9 is QEMU's debugcon (or nothing); writing it has no memory effects.
        unsafe { outb(DEBUGCON_PORT, b) };
    }
    *last = line;
}

/// The last line logged (selftests).
pub fn last_line(out: &mut Line) {
    let last = LAST.lock();
    *out = Line::new();
    let _ = out.write_str(last.as_str());
}
