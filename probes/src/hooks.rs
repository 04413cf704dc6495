//! What the kernel's trap dispatcher calls. Each returns `true` when the trap
//! was kdbg's probe business and has been fully handled (the frame is ready to
//! be resumed); `false` passes it on (to the stub, then the kernel's fatal path).

use arch::TrapFrame;

/// #BP (vector 3). `frame.rip` points just past the int3 byte.
pub fn breakpoint(_frame: &mut TrapFrame) -> bool {
    false
}

/// #DB (vector 1).
pub fn debug(_frame: &mut TrapFrame) -> bool {
    false
}

/// A fault (#PF, #GP, #UD, #DE, ...) — for faults inside out-of-line slots and
/// fault-safe fetches.
pub fn fault(_frame: &mut TrapFrame) -> bool {
    false
}

/// A task is exiting: give back its kretprobe instances.
pub fn task_exit(_task_id: u32) {}
