//! Leaving QEMU through `isa-debug-exit` (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
//! QEMU's exit status is `(code << 1) | 1`; xtask and the tests map it back.

use arch::port::{DEBUG_EXIT_PORT, outl};
use noprobe::noprobe;

/// Why the kernel stops. The numeric values are part of the xtask/tests
/// contract: QEMU exits with status `(code << 1) | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Selftests passed / orderly stop: QEMU status 33.
    Success = 0x10,
    /// Selftests failed, or bad command line: QEMU status 35.
    Failure = 0x11,
    /// Fatal trap or panic: QEMU status 37.
    Fatal = 0x12,
}

/// Stops QEMU with `code`. Halts forever if no exit device is present.
#[noprobe]
pub fn qemu_exit(code: ExitCode) -> ! {
    crate::console::flush();
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device (or nothing).
    unsafe { outl(DEBUG_EXIT_PORT, code as u32) };
    loop {
        arch::cpu::disable_interrupts();
        arch::cpu::halt();
    }
}
