//! The kretprobe trampoline: where hijacked returns land.
//!
//! It is a single `int3`. The probe core recognises a breakpoint whose
//! address is [`address`] and, from the trap handler, runs the return
//! handlers, restores the real return address into the frame's `rip` and
//! resumes there; execution never continues past the `int3`.
//!
//! Next to it is the single-step pad ([`step_pad`]).

use core::arch::global_asm;

global_asm!(
    ".pushsection .text.kdbg_trampoline, \"ax\", @progbits",
    ".globl kdbg_kretprobe_trampoline",
    "kdbg_kretprobe_trampoline:",
    "int3",
    "ud2",
    ".globl kdbg_step_pad",
    "kdbg_step_pad:",
    "nop",
    "int3",
    ".popsection",
);

unsafe extern "C" {
    static kdbg_kretprobe_trampoline: u8;
    static kdbg_step_pad: u8;
}

/// Address of the trampoline's `int3` (what hijacked return addresses hold).
pub fn address() -> u64 {
    core::ptr::addr_of!(kdbg_kretprobe_trampoline) as u64
}

/// Address of the single-step pad: a `nop` the probe core sends a
/// single-stepping context through (TF set) after emulating its
/// instruction, so the debugger's step ends with a real #DB at
/// `step_pad() + 1`, which the probe core then points at the real next
/// instruction.
pub fn step_pad() -> u64 {
    core::ptr::addr_of!(kdbg_step_pad) as u64
}
