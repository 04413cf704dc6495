//! The kretprobe trampoline: where hijacked returns land. Ordinary code, no
//! trap (like Linux's rethook trampoline).
//!
//! A kretprobe's entry replaces the return address with [`address`]; the
//! probed function's `ret` jumps here with `rsp` just above the hijacked
//! slot. The trampoline:
//!
//! 1. pushes a word over the hijacked slot (the way back, filled in by the
//!    callback) and the caller's `rbp` below it: a frame record, so a
//!    frame-pointer unwinder (and the CFI below) goes from the trampoline
//!    straight to the real caller;
//! 2. saves the flags and clears IF (the return handlers run with interrupts
//!    off, as they did in the trap);
//! 3. builds a [`TrapFrame`]-shaped area on the stack: every general
//!    register, `rsp` as it was after the `ret`, the flags, `cs`/`ss`,
//!    `vector = 3`, `rip = 0`; of the FPU area only `xmm0` and `xmm1` (the
//!    registers a function returns values in; every other vector register
//!    is dead at a return under the C and Rust ABIs) and nothing else;
//! 4. calls the callback installed with [`set_return_callback`] (the probe
//!    core), which runs the return handlers and sets `rip` to the real
//!    return address (writing it into the slot of step 1 before any handler
//!    runs);
//! 5. restores the registers from the area (a handler may change `rax`),
//!    the flags (`IF` as before) and returns to `rip`.
//!
//! Next to it is the single-step pad ([`step_pad`]).
//!
//! A debugger's single step that lands on the trampoline's first byte (a
//! `ret` of a kretprobed function) is the stub's business: it runs the
//! return from the trap (the probe core's `on_return_step`) so the step
//! ends at the real return address.

use core::arch::global_asm;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::frame::TrapFrame;

/// What the trampoline calls with its frame.
pub type ReturnCallback = extern "C" fn(&mut TrapFrame);

/// Before a probe core installs its callback: a hijacked return cannot
/// happen (nothing hijacks), so reaching the trampoline is fatal.
extern "C" fn no_callback(_frame: &mut TrapFrame) {
    loop {
        crate::cpu::disable_interrupts();
        crate::cpu::halt();
    }
}

/// The callback the trampoline calls (a code address, read by the asm).
#[used]
static RETURN_CALLBACK: AtomicPtr<()> = AtomicPtr::new(no_callback as ReturnCallback as *mut ());

/// Installs the function the trampoline calls (the probe core, at init).
pub fn set_return_callback(f: ReturnCallback) {
    RETURN_CALLBACK.store(f as *mut (), Ordering::Release);
}

// Frame layout and the shared save/restore: `frame_asm.rs`.
global_asm!(
    ".pushsection .text.kdbg_trampoline, \"ax\", @progbits",
    ".balign 16",
    ".globl kdbg_kretprobe_trampoline",
    ".type kdbg_kretprobe_trampoline, @function",
    "kdbg_kretprobe_trampoline:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    "pushq $0",
    "pushq %rbp",
    "movq %rsp, %rbp",
    ".cfi_def_cfa %rbp, 16",
    ".cfi_offset rip, -8",
    ".cfi_offset %rbp, -16",
    "pushfq",
    "cli",
    frame_save_asm!(),
    "movdqa %xmm0, 160(%rsp)",
    "movdqa %xmm1, 176(%rsp)",
    "movq %rsp, %rdi",
    "cld",
    "call *{callback}(%rip)",
    "movdqa 160(%rsp), %xmm0",
    "movdqa 176(%rsp), %xmm1",
    "movq 648(%rsp), %rax",
    "movq %rax, 8(%rbp)",
    frame_restore_asm!(),
    ".cfi_endproc",
    ".size kdbg_kretprobe_trampoline, . - kdbg_kretprobe_trampoline",
    ".globl kdbg_step_pad",
    "kdbg_step_pad:",
    "nop",
    "int3",
    ".popsection",
    callback = sym RETURN_CALLBACK,
    options(att_syntax)
);

unsafe extern "C" {
    static kdbg_kretprobe_trampoline: u8;
    static kdbg_step_pad: u8;
}

/// Address of the trampoline (what hijacked return addresses hold).
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
