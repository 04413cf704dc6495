//! Workloads whose first instruction belongs to each instruction class the
//! probe core handles specially (emulated or relocated): written in asm
//! because the compiler will not emit them on demand. All are `extern "C"`,
//! global symbols with ELF sizes (kallsyms knows them), in probe-able text.
//!
//! | function | first instruction(s) | result |
//! |---|---|---|
//! | `insn_rip_load()` | `mov rax, [rip+kdbg_insn_data]` | the data word |
//! | `insn_rip_store(v)` | `mov [rip+kdbg_insn_data], rdi` | v |
//! | `insn_pushf_popf(x)` | `pushfq` then `popfq` | x |
//! | `insn_cli_sti(x)` | `cli` then `sti` (call with interrupts on) | x + 1 |
//! | `insn_call_rel32(x)` | `call kdbg_insn_helper` (rel32) | x + 1 |
//! | `insn_jcc_rel8(x)` | `jz` rel8 (ZF from the caller) | x + 2 if ZF else x + 1 |
//! | `insn_jcc_rel32(x)` | `jnz` rel32 | x + 2 if !ZF else x + 1 |
//! | `insn_jmp_rel8(x)` | `jmp` rel8 over a `ud2` | x + 3 |
//! | `insn_ret_imm16()` | `ret 8` (callee pops one stack word) | rax unchanged |
//! | `insn_call_reg(x, f)` | `call rsi` | f(x) |
//! | `insn_jmp_reg(x, f)` | `jmp rsi` (tail call) | f(x) |
//! | `insn_loop(x, _, _, n)` | `loop` (rcx = n) | x if n == 1, else x + n - 1 |
//!
//! | `insn_j<cc>_rel8()`, `insn_j<cc>_rel32()` | `j<cc>` for all 16 conditions | 1 if taken else 0 |
//!
//! `insn_jcc_with_flags(flags, f)` calls one of the `insn_j<cc>_*` with the
//! given arithmetic flags (see [`jcc_taken`]).
//! `call_insn_jcc_rel8(x)` / `call_insn_jcc_rel32(x)` set ZF = (x is even)
//! before calling, and `call_insn_ret_imm16(x)` pushes the word that
//! `ret 8` pops (returns x): call those, not the bare functions.

use core::arch::global_asm;

global_asm!(
    ".pushsection .data.kdbg_insn, \"aw\"",
    ".balign 8",
    ".globl kdbg_insn_data",
    ".type kdbg_insn_data, @object",
    "kdbg_insn_data: .quad 0x1122334455667788",
    ".size kdbg_insn_data, 8",
    ".popsection",
    ".pushsection .text.workloads_insn, \"ax\", @progbits",
    ".macro kdbg_func name",
    ".balign 16",
    ".globl \\name",
    ".type \\name, @function",
    "\\name:",
    ".cfi_startproc",
    ".endm",
    ".macro kdbg_endfunc name",
    ".cfi_endproc",
    ".size \\name, . - \\name",
    ".endm",
    //
    "kdbg_func kdbg_insn_helper",
    "lea rax, [rdi + 1]",
    "ret",
    "kdbg_endfunc kdbg_insn_helper",
    //
    "kdbg_func insn_rip_load",
    "mov rax, qword ptr [rip + kdbg_insn_data]",
    "ret",
    "kdbg_endfunc insn_rip_load",
    //
    "kdbg_func insn_rip_store",
    "mov qword ptr [rip + kdbg_insn_data], rdi",
    "mov rax, rdi",
    "ret",
    "kdbg_endfunc insn_rip_store",
    //
    "kdbg_func insn_pushf_popf",
    "pushfq",
    ".cfi_adjust_cfa_offset 8",
    "popfq",
    ".cfi_adjust_cfa_offset -8",
    "mov rax, rdi",
    "ret",
    "kdbg_endfunc insn_pushf_popf",
    //
    "kdbg_func insn_cli_sti",
    "cli",
    "sti",
    "lea rax, [rdi + 1]",
    "ret",
    "kdbg_endfunc insn_cli_sti",
    //
    "kdbg_func insn_call_rel32",
    "call kdbg_insn_helper",
    "ret",
    "kdbg_endfunc insn_call_rel32",
    //
    "kdbg_func insn_jcc_rel8",
    "jz 2f",
    "lea rax, [rdi + 1]",
    "ret",
    "2:",
    "lea rax, [rdi + 2]",
    "ret",
    "kdbg_endfunc insn_jcc_rel8",
    //
    "kdbg_func insn_jcc_rel32",
    "jnz 3f",
    "lea rax, [rdi + 1]",
    "ret",
    ".fill 140, 1, 0x90",
    "3:",
    "lea rax, [rdi + 2]",
    "ret",
    "kdbg_endfunc insn_jcc_rel32",
    //
    "kdbg_func insn_jmp_rel8",
    "jmp 4f",
    "ud2",
    "4:",
    "lea rax, [rdi + 3]",
    "ret",
    "kdbg_endfunc insn_jmp_rel8",
    //
    "kdbg_func insn_ret_imm16",
    "ret 8",
    "kdbg_endfunc insn_ret_imm16",
    //
    "kdbg_func insn_call_reg",
    "call rsi",
    "ret",
    "kdbg_endfunc insn_call_reg",
    //
    "kdbg_func insn_jmp_reg",
    "jmp rsi",
    "kdbg_endfunc insn_jmp_reg",
    //
    "kdbg_func insn_loop",
    "loop 5f",
    "mov rax, rdi",
    "ret",
    "5:",
    "lea rax, [rdi + rcx]",
    "ret",
    "kdbg_endfunc insn_loop",
    //
    "kdbg_func call_insn_jcc_rel8",
    "test dil, 1",
    "call insn_jcc_rel8",
    "ret",
    "kdbg_endfunc call_insn_jcc_rel8",
    //
    "kdbg_func call_insn_jcc_rel32",
    "test dil, 1",
    "call insn_jcc_rel32",
    "ret",
    "kdbg_endfunc call_insn_jcc_rel32",
    //
    "kdbg_func call_insn_ret_imm16",
    "mov rax, rdi",
    "push rdi",
    ".cfi_adjust_cfa_offset 8",
    "call insn_ret_imm16",
    ".cfi_adjust_cfa_offset -8",
    "ret",
    "kdbg_endfunc call_insn_ret_imm16",
    // insn_j<cc>_rel8 / insn_j<cc>_rel32 for every condition code: the
    // first instruction is `j<cc>` (the fill forces rel32); returns 1 if
    // taken, 0 if not, without touching the flags (`mov`, not `xor`).
    ".macro kdbg_jcc cc",
    "kdbg_func insn_j\\cc\\()_rel8",
    "j\\cc 2f",
    "mov eax, 0",
    "ret",
    "2:",
    "mov eax, 1",
    "ret",
    "kdbg_endfunc insn_j\\cc\\()_rel8",
    "kdbg_func insn_j\\cc\\()_rel32",
    "j\\cc 3f",
    "mov eax, 0",
    "ret",
    ".fill 130, 1, 0x90",
    "3:",
    "mov eax, 1",
    "ret",
    "kdbg_endfunc insn_j\\cc\\()_rel32",
    ".endm",
    ".irp cc, o, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge, le, g",
    "kdbg_jcc \\cc",
    ".endr",
    ".purgem kdbg_jcc",
    //
    // Calls the function at rsi with the arithmetic flags (CF PF AF ZF SF
    // OF, mask 0x8d5) taken from rdi, the others kept; returns its rax |
    // (arithmetic flags after it) << 8.
    "kdbg_func insn_jcc_with_flags",
    "pushfq",
    ".cfi_adjust_cfa_offset 8",
    "pop rax",
    ".cfi_adjust_cfa_offset -8",
    "and rax, -0x8d6",
    "and edi, 0x8d5",
    "or rax, rdi",
    "push rax",
    ".cfi_adjust_cfa_offset 8",
    "popfq",
    ".cfi_adjust_cfa_offset -8",
    "call rsi",
    "pushfq",
    ".cfi_adjust_cfa_offset 8",
    "pop rdx",
    ".cfi_adjust_cfa_offset -8",
    "and edx, 0x8d5",
    "shl rdx, 8",
    "or rax, rdx",
    "ret",
    "kdbg_endfunc insn_jcc_with_flags",
    ".purgem kdbg_func",
    ".purgem kdbg_endfunc",
    ".popsection",
);

unsafe extern "C" {
    pub fn kdbg_insn_helper(x: u64) -> u64;
    pub fn insn_rip_load() -> u64;
    pub fn insn_rip_store(v: u64) -> u64;
    pub fn insn_pushf_popf(x: u64) -> u64;
    pub fn insn_cli_sti(x: u64) -> u64;
    pub fn insn_call_rel32(x: u64) -> u64;
    pub fn insn_jcc_rel8(x: u64) -> u64;
    pub fn insn_jcc_rel32(x: u64) -> u64;
    pub fn insn_jmp_rel8(x: u64) -> u64;
    pub fn insn_ret_imm16();
    pub fn insn_call_reg(x: u64, f: unsafe extern "C" fn(u64) -> u64) -> u64;
    pub fn insn_jmp_reg(x: u64, f: unsafe extern "C" fn(u64) -> u64) -> u64;
    pub fn insn_loop(x: u64, unused1: u64, unused2: u64, count: u64) -> u64;
    pub fn call_insn_jcc_rel8(x: u64) -> u64;
    pub fn call_insn_jcc_rel32(x: u64) -> u64;
    pub fn call_insn_ret_imm16(x: u64) -> u64;
    /// Calls `f` (one of the `insn_j<cc>_rel8/32` functions) with the
    /// arithmetic flags in `flags & JCC_FLAGS`; returns its result (0/1) |
    /// (arithmetic flags after the call) << 8.
    pub fn insn_jcc_with_flags(flags: u64, f: u64) -> u64;
}

/// The arithmetic flags `insn_jcc_with_flags` sets: CF PF AF ZF SF OF.
pub const JCC_FLAGS: u64 = 0x8d5;

/// The condition-code suffixes in encoding order (`j<cc>` rel8 is
/// `0x70 + index`, rel32 is `0f 80 + index`); `insn_j<cc>_rel8` and
/// `insn_j<cc>_rel32` exist for each.
pub const JCC_CONDITIONS: [&str; 16] = [
    "o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g",
];

/// Whether `j<cc>` with condition index `cc` (0..16) branches for `flags`.
pub fn jcc_taken(cc: usize, flags: u64) -> bool {
    let bit = |n: u32| flags & (1 << n) != 0;
    let (cf, pf, zf, sf, of) = (bit(0), bit(2), bit(6), bit(7), bit(11));
    let base = match cc / 2 {
        0 => of,
        1 => cf,
        2 => zf,
        3 => cf || zf,
        4 => sf,
        5 => pf,
        6 => sf != of,
        _ => zf || sf != of,
    };
    base != (cc % 2 == 1)
}

/// What each insn workload returns for `x` (n = 3 for `insn_loop`), per the table above.
pub fn expected(name: &str, x: u64) -> Option<u64> {
    Some(match name {
        "insn_pushf_popf" | "call_insn_ret_imm16" | "insn_rip_store" => x,
        "insn_cli_sti" | "insn_call_rel32" | "insn_call_reg" | "insn_jmp_reg" => x + 1,
        "call_insn_jcc_rel8" => {
            if x.is_multiple_of(2) {
                x + 2
            } else {
                x + 1
            }
        }
        "call_insn_jcc_rel32" => {
            if x.is_multiple_of(2) {
                x + 1
            } else {
                x + 2
            }
        }
        "insn_jmp_rel8" => x + 3,
        "insn_loop" => x + 2,
        _ => return None,
    })
}
