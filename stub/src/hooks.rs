//! What the kernel's trap dispatcher calls into the GDB stub. `breakpoint` and
//! `debug` return `true` when the stub handled the trap (it was gdb's), after
//! the debugger has resumed the kernel.

use arch::TrapFrame;

/// #BP not claimed by the probe core.
pub fn breakpoint(_frame: &mut TrapFrame) -> bool {
    false
}

/// #DB not claimed by the probe core (single-step, hardware break/watchpoint).
pub fn debug(_frame: &mut TrapFrame) -> bool {
    false
}

/// COM2 receive interrupt: bytes from the host while the kernel runs
/// (a Ctrl-C 0x03 or the start of a packet stops the kernel in the stub).
pub fn serial_irq(_frame: &mut TrapFrame) {}

/// The kernel is about to die: let an attached debugger see the state.
pub fn fatal(_frame: &mut TrapFrame) {}
