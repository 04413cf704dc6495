//! The jprobe call-out: call a C-ABI function with a probed function's
//! arguments, from the trap path, on the current (trap) stack.
//!
//! The six register arguments come from the trap frame; the stack-passed
//! arguments are a *copy* of the words above the probed function's return
//! address, placed where the callee expects its stack arguments. The callee
//! may write its arguments freely: it only ever sees copies, so the probed
//! function's registers and stack are untouched (the 2004 jprobe design's 64-byte
//! `jprobe_return` stack-mirroring problem does not arise).

use core::arch::global_asm;

// kdbg_callout(entry: rdi, regs: rsi -> [u64; 6], stack: rdx -> [u64], words: rcx) -> rax
global_asm!(
    ".pushsection .text.kdbg_callout, \"ax\", @progbits",
    ".globl kdbg_callout",
    "kdbg_callout:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "mov rbx, rdi",
    "mov r12, rsi",
    "lea rax, [rcx*8 + 15]",
    "and rax, -16",
    "sub rsp, rax",
    "and rsp, -16",
    "mov rsi, rdx",
    "mov rdi, rsp",
    "cld",
    "rep movsq",
    "mov rdi, [r12]",
    "mov rsi, [r12 + 8]",
    "mov rdx, [r12 + 16]",
    "mov rcx, [r12 + 24]",
    "mov r8, [r12 + 32]",
    "mov r9, [r12 + 40]",
    "xor eax, eax",
    "call rbx",
    "lea rsp, [rbp - 16]",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    fn kdbg_callout(entry: u64, regs: *const u64, stack: *const u64, words: usize) -> u64;
}

/// Most stack words passed (64 bytes, as the 2004 jprobe design's `MAX_STACK_SIZE`).
pub const MAX_STACK_WORDS: usize = 8;

/// Calls the function at `entry` with `regs` as rdi, rsi, rdx, rcx, r8, r9
/// and a copy of `stack` (at most [`MAX_STACK_WORDS`] words) as its
/// stack-passed arguments; returns its rax.
///
/// # Safety
/// `entry` must be the address of an `extern "C"` function whose arguments
/// are all integer/pointer class and fit in six registers plus `stack`, and
/// that is safe to call in the current (trap) context.
pub unsafe fn call_with_args(entry: u64, regs: &[u64; 6], stack: &[u64]) -> u64 {
    let words = stack.len().min(MAX_STACK_WORDS);
    // SAFETY: the asm reads `regs` (6 words) and `words` words of `stack`,
    // keeps the SysV stack alignment, and restores all callee-saved
    // registers; the caller vouches for `entry`.
    unsafe { kdbg_callout(entry, regs.as_ptr(), stack.as_ptr(), words) }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn sum8(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64) -> u64 {
        a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h
    }

    extern "C" fn scribble(a: u64, _b: u64, _c: u64, _d: u64, _e: u64, _f: u64, mut g: u64) -> u64 {
        // Writes its own (copied) stack argument.
        g += 1000;
        a + g
    }

    #[test]
    fn passes_register_and_stack_arguments() {
        let regs = [1, 2, 3, 4, 5, 6];
        let stack = [7u64, 8];
        // SAFETY: sum8 is an extern "C" fn of 8 integer arguments.
        let r = unsafe { call_with_args(sum8 as *const () as u64, &regs, &stack) };
        assert_eq!(r, 1 + 4 + 9 + 16 + 25 + 36 + 49 + 64);
        // SAFETY: as above, with seven arguments.
        let r = unsafe { call_with_args(scribble as *const () as u64, &regs, &stack) };
        assert_eq!(r, 1 + 1007);
        assert_eq!(stack, [7, 8]);
    }
}
