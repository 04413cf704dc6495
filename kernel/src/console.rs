//! The console on COM1: `print!`/`println!`, an interrupt-safe lock around
//! whole writes, and an emergency path for fatal errors that ignores the lock.

use core::fmt::{self, Write};

use arch::uart::{COM1, Uart};

use crate::sync::IrqMutex;
use noprobe::noprobe;

static CONSOLE: IrqMutex<Uart> = IrqMutex::new(Uart::new(COM1));

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
            let _ = uart.write_fmt(args);
            return;
        }
        arch::cpu::spin_hint();
    }
    let _ = Uart::new(COM1).write_fmt(args);
}

/// Writes `s` without taking the console lock (fatal paths).
#[noprobe]
pub fn emergency_write(s: &str) {
    Uart::new(COM1).write_str_crlf(s);
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
