//! What the kernel's trap dispatcher calls. Each returns `true` when the trap
//! was kdbg's probe business and has been fully handled (the frame is ready to
//! be resumed); `false` passes it on (to the stub, then the kernel's fatal path).

use arch::TrapFrame;

use crate::CORE;

/// #BP (vector 3). `frame.rip` points just past the int3 byte. An int3 that
/// is not a probe's (nor the kretprobe trampoline, nor a slot's tail)
/// returns `false`: it is never silently resumed.
#[inline]
pub fn breakpoint(frame: &mut TrapFrame) -> bool {
    CORE.on_breakpoint(frame)
}

/// #DB (vector 1). The probe core itself never single-steps; when a
/// debugger steps through a probed instruction, this puts the frame at the
/// step's real end. Always `false`: the stub owns debug traps.
pub fn debug(frame: &mut TrapFrame) -> bool {
    CORE.on_debug(frame)
}

/// A fault (#PF, #GP, #UD, #DE, ...) — for faults inside out-of-line slots
/// and probe handlers. `true`: a probe's fault handler handled it. `false`
/// with the frame rewritten: the fault happened in a slot and now looks as
/// if it happened at the probed address; the kernel handles it there.
pub fn fault(frame: &mut TrapFrame) -> bool {
    CORE.on_fault(frame)
}

/// A task is exiting: give back its kretprobe instances.
pub fn task_exit(task_id: u32) {
    CORE.task_exit(task_id);
}

/// What the kretprobe trampoline (`arch::trampoline`, ordinary code, no
/// trap) calls with its trap-frame-shaped area: runs the return handlers
/// and sets `frame.rip` to the real return address.
pub extern "C" fn return_trampoline(frame: &mut TrapFrame) {
    CORE.on_return(frame);
}

/// What a jump-optimized probe's detour (`arch::detour`'s common entry)
/// calls: runs the pre handlers, returns where to continue.
pub extern "C" fn detour(frame: &mut TrapFrame, detour: u64) -> u64 {
    CORE.on_detour(frame, detour)
}
