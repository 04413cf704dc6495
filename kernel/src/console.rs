//! The console on COM1: `print!`/`println!`, an interrupt-safe lock around
//! whole writes, and an emergency path for fatal errors that ignores the lock.
//!
//! Everything printed is also kept in the console ring
//! ([`KDBG_CONSOLE_RING`], [`RING_SIZE`] bytes, the oldest overwritten): a
//! debugger reads it by symbol (`dmesg`) while the kernel runs, at a stop,
//! after a death and from a core file. [`KDBG_CONSOLE_WRITTEN`] counts every
//! byte ever written; byte `n` of the output is at `n % RING_SIZE`. The ring
//! is atomics (no lock): a death in the middle of a print still finds it.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arch::uart::{COM1, Uart};

use crate::sync::IrqMutex;
use noprobe::noprobe;

static CONSOLE: IrqMutex<Uart> = IrqMutex::new(Uart::new(COM1));

/// Bytes of console output the kernel keeps (256 KiB).
pub const RING_SIZE: usize = 256 * 1024;

/// The console ring (found by the debugger through this symbol).
#[unsafe(no_mangle)]
pub static KDBG_CONSOLE_RING: [AtomicU8; RING_SIZE] = [const { AtomicU8::new(0) }; RING_SIZE];

/// Bytes written to the ring since boot (found by the debugger by symbol).
#[unsafe(no_mangle)]
pub static KDBG_CONSOLE_WRITTEN: AtomicU64 = AtomicU64::new(0);

#[noprobe]
fn ring_write(s: &str) {
    let bytes = s.as_bytes();
    let start = KDBG_CONSOLE_WRITTEN.load(Ordering::Relaxed);
    for (i, &b) in bytes.iter().enumerate() {
        let at = (start as usize).wrapping_add(i) % RING_SIZE;
        if let Some(slot) = KDBG_CONSOLE_RING.get(at) {
            slot.store(b, Ordering::Relaxed);
        }
    }
    KDBG_CONSOLE_WRITTEN.store(start + bytes.len() as u64, Ordering::Release);
}

/// The UART and the ring, written together.
struct Tee<'a>(&'a mut Uart);

impl Write for Tee<'_> {
    #[noprobe]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        ring_write(s);
        self.0.write_str(s)
    }
}

/// Programs COM1 (115200 8N1). Output before this still works on QEMU.
pub fn init() {
    // SAFETY: COM1 is the console UART on the PC machine; only this module drives it.
    let _ = unsafe { Uart::new(COM1).init() };
}

#[doc(hidden)]
#[noprobe]
pub fn _print(args: fmt::Arguments) {
    // A trap handler may interrupt a print; waiting for the lock would deadlock
    // (the holder cannot run), so after a bounded wait write without it.
    for _ in 0..1000 {
        if let Some(mut uart) = CONSOLE.try_lock() {
            let _ = Tee(&mut uart).write_fmt(args);
            return;
        }
        arch::cpu::spin_hint();
    }
    let _ = Tee(&mut Uart::new(COM1)).write_fmt(args);
}

/// Writes `s` without taking the console lock (fatal paths).
#[noprobe]
pub fn emergency_write(s: &str) {
    ring_write(s);
    Uart::new(COM1).write_str_crlf(s);
}

/// A `Write` over [`emergency_write`] (no lock, the ring included).
pub struct Emergency;

impl Write for Emergency {
    #[noprobe]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        emergency_write(s);
        Ok(())
    }
}

/// Waits until the UART has sent what it holds (QEMU sends immediately; kept for real hardware).
pub fn flush() {}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
