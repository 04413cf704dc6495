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

// Frame offsets: fxsave 0..512 (xmm0 at 160, xmm1 at 176), r15 512, r14 520,
// r13 528, r12 536, r11 544, r10 552, r9 560, r8 568, rbp 576, rdi 584,
// rsi 592, rdx 600, rcx 608, rbx 616, rax 624, vector 632, error 640,
// rip 648, cs 656, rflags 664, rsp 672, ss 680; 688 bytes.
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
    "andq $-16, %rsp",
    "subq $688, %rsp",
    "movq %rax, 624(%rsp)",
    "movq %rbx, 616(%rsp)",
    "movq %rcx, 608(%rsp)",
    "movq %rdx, 600(%rsp)",
    "movq %rsi, 592(%rsp)",
    "movq %rdi, 584(%rsp)",
    "movq (%rbp), %rax",
    "movq %rax, 576(%rsp)",
    "movq %r8, 568(%rsp)",
    "movq %r9, 560(%rsp)",
    "movq %r10, 552(%rsp)",
    "movq %r11, 544(%rsp)",
    "movq %r12, 536(%rsp)",
    "movq %r13, 528(%rsp)",
    "movq %r14, 520(%rsp)",
    "movq %r15, 512(%rsp)",
    "movq $3, 632(%rsp)",
    "movq $0, 640(%rsp)",
    "movq $0, 648(%rsp)",
    "movl %cs, %eax",
    "movq %rax, 656(%rsp)",
    "movq -8(%rbp), %rax",
    "movq %rax, 664(%rsp)",
    "leaq 16(%rbp), %rax",
    "movq %rax, 672(%rsp)",
    "movl %ss, %eax",
    "movq %rax, 680(%rsp)",
    "movdqa %xmm0, 160(%rsp)",
    "movdqa %xmm1, 176(%rsp)",
    "movq %rsp, %rdi",
    "cld",
    "call *{callback}(%rip)",
    "movdqa 160(%rsp), %xmm0",
    "movdqa 176(%rsp), %xmm1",
    "movq 648(%rsp), %rax",
    "movq %rax, 8(%rbp)",
    "movq 664(%rsp), %rax",
    "movq %rax, -8(%rbp)",
    "movq 576(%rsp), %rax",
    "movq %rax, (%rbp)",
    "movq 512(%rsp), %r15",
    "movq 520(%rsp), %r14",
    "movq 528(%rsp), %r13",
    "movq 536(%rsp), %r12",
    "movq 544(%rsp), %r11",
    "movq 552(%rsp), %r10",
    "movq 560(%rsp), %r9",
    "movq 568(%rsp), %r8",
    "movq 584(%rsp), %rdi",
    "movq 592(%rsp), %rsi",
    "movq 600(%rsp), %rdx",
    "movq 608(%rsp), %rcx",
    "movq 616(%rsp), %rbx",
    "movq 624(%rsp), %rax",
    "leaq -8(%rbp), %rsp",
    "popfq",
    "popq %rbp",
    ".cfi_def_cfa %rsp, 8",
    "ret",
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
