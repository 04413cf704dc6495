//! The in-kernel GDB stub: `gdbstub` over COM2 with a `Target` over the
//! stopped CPU's trap frame, kdbg's monitor commands, and the probe event
//! stream.
//!
//! The kernel calls [`init`] once (after its IDT and COM2 interrupt are set
//! up), [`wait_for_debugger`] when the command line says `kdbg.wait`, and
//! [`poll`] from its timer tick or idle loop to stream events; its trap
//! dispatcher calls the functions in [`hooks`].
//!
//! Threads: gdb thread id = kernel task id + 1. `kill` from gdb removes
//! gdb's breakpoints and calls the kernel's `kill` (the reference kernel
//! powers QEMU off). `detach` removes gdb's breakpoints; probes keep
//! running and a new gdb can attach at any time.
#![cfg_attr(not(test), no_std)]
// Kernel-side crate: its paths never panic (test code may).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use core::sync::atomic::{AtomicBool, Ordering};

pub mod allstop;
pub mod binread;
pub mod breakpoints;
pub mod clock;
pub mod conditions;
pub mod conn;
pub mod death;
pub mod events;
pub mod frame_regs;
pub mod framer;
pub mod gdb_arch;
pub mod hooks;
pub mod kernel;
pub mod machine;
pub mod mapcmd;
pub mod monitor;
pub mod packet;
pub mod probecmd;
pub mod protect;
pub mod shm;
pub mod step;
pub mod target;

pub use probes::{Host, Symbol, TaskInfo};

/// Set by [`wait_for_debugger`]: the next unclaimed int3 is the stub's.
static WAIT_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Why the stub could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// No UART at COM2 (e.g. `-M microvm`): the stub stays off.
    NoUart,
}

/// Sets up COM2 and the session. Interrupt-driven receive is enabled, so
/// the kernel must route COM2's IRQ (PIC line 3) to [`hooks::serial_irq`].
pub fn init<H: Host>(host: &'static H) -> Result<(), InitError> {
    probes::init(host);
    step::init();
    let uart = arch::uart::Uart::new(arch::uart::COM2);
    // SAFETY: COM2 belongs to the stub; on a PC
    // machine a 16550 or nothing lives there, and `init` probes for it.
    let early = unsafe { uart.init_keeping_pending() }.map_err(|_| InitError::NoUart)?;
    {
        let mut s = machine::SESSION.lock();
        s.target.host = host;
        // A debugger that connected while the kernel booted has its first
        // byte here (the rest waits in the FIFO for the receive interrupt):
        // keep it, or its first packet would never be answered. A stop it
        // asks for (a lone Ctrl-C) before the kernel runs is not honoured.
        if let Some(b) = early {
            let _ = s.receive_running(b);
        }
    }
    clock::start(host);
    uart.enable_rx_interrupt();
    READY.store(true, Ordering::Release);
    Ok(())
}

/// [`init`] has run: COM2 is the stub's (see `hooks::rx_pending`).
static READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

pub(crate) fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// Stops the kernel here until gdb attaches and continues (`kdbg.wait`).
pub fn wait_for_debugger() {
    WAIT_REQUESTED.store(true, Ordering::Release);
    // The kernel's #BP handler hands the trap to `hooks::breakpoint`;
    // WAIT_REQUESTED makes the stub claim it and resume after the int3.
    arch::cpu::breakpoint();
}

/// Streams pending probe events to an attached debugger (call from the
/// timer tick or the idle loop; never blocks on the lock).
pub fn poll() {
    // Another CPU serving a stop owns the session: nothing to stream now.
    let Some(entry) = allstop::try_acquire() else {
        return;
    };
    if let Some(mut s) = machine::SESSION.try_lock() {
        // No watchpoint of gdb's fires inside the stub (event rings, the
        // UART): DR7 is masked while it streams.
        shm::watch(s.target.host);
        arch::debugreg::masked(|| s.stream_events(events::TICK_BUDGET));
    }
    allstop::release_if(entry);
}

/// A debugger is attached right now.
pub fn attached() -> bool {
    machine::SESSION.try_lock().is_some_and(|s| s.attached())
}

/// Runs a monitor command as gdb's `monitor TEXT` would, writing the reply
/// rows to `out` (for in-kernel selftests and a local console).
pub fn monitor(text: &str, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    let mut s = machine::SESSION.lock();
    let host = s.target.host;
    monitor::run(text, host, &mut s.target.monitor, out)
}
