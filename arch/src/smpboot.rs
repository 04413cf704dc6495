//! Starting the other CPUs (application processors): the real-mode
//! trampoline below 1 MiB and the INIT-SIPI-SIPI sequence.
//!
//! An AP starts in 16-bit real mode at `TRAMPOLINE_PAGE * 4096` (the
//! STARTUP IPI's vector). The trampoline (copied there by [`install`])
//! loads its own small GDT, enters 32-bit protected mode, turns on PAE and
//! SSE (as the boot CPU's entry does), loads the boot CPU's page tables
//! (CR3), sets EFER.LME, turns on paging, far-jumps into 64-bit code and
//! calls `entry(arg)` on the stack given in its parameter block. One AP is
//! started at a time (the parameter block is shared).

use core::arch::global_asm;

/// The page the trampoline is copied to (physical 0x8000; the SIPI vector).
pub const TRAMPOLINE_PAGE: u8 = 8;
/// Physical address of the trampoline.
pub const TRAMPOLINE_ADDR: u64 = (TRAMPOLINE_PAGE as u64) * 4096;

global_asm!(
    ".pushsection .rodata.kdbg_ap_trampoline, \"a\"",
    ".balign 16",
    ".globl kdbg_ap_tramp_start",
    "kdbg_ap_tramp_start:",
    ".code16",
    "cli",
    "cld",
    "movw %cs, %ax",
    "movw %ax, %ds",
    "lgdtl kdbg_ap_tramp_gdtr - kdbg_ap_tramp_start",
    "movl %cr0, %eax",
    "orl $1, %eax",
    "movl %eax, %cr0",
    "ljmpl $0x08, ${base} + kdbg_ap_tramp_pm32 - kdbg_ap_tramp_start",
    ".code32",
    "kdbg_ap_tramp_pm32:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    // CR4: PAE | OSFXSR | OSXMMEXCPT
    "movl %cr4, %eax",
    "orl $0x620, %eax",
    "movl %eax, %cr4",
    "movl {base} + kdbg_ap_tramp_cr3 - kdbg_ap_tramp_start, %eax",
    "movl %eax, %cr3",
    // EFER.LME
    "movl $0xC0000080, %ecx",
    "rdmsr",
    "orl $0x100, %eax",
    "wrmsr",
    // CR0: PG | WP | MP | PE, EM and TS clear
    "movl %cr0, %eax",
    "andl $0xFFFFFFF3, %eax",
    "orl $0x80010003, %eax",
    "movl %eax, %cr0",
    "ljmpl $0x18, ${base} + kdbg_ap_tramp_lm64 - kdbg_ap_tramp_start",
    ".code64",
    "kdbg_ap_tramp_lm64:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "movq {base} + kdbg_ap_tramp_stack - kdbg_ap_tramp_start, %rsp",
    "movq {base} + kdbg_ap_tramp_arg - kdbg_ap_tramp_start, %rdi",
    "movq {base} + kdbg_ap_tramp_entry - kdbg_ap_tramp_start, %rax",
    "xorl %ebp, %ebp",
    "fninit",
    "callq *%rax",
    "2:",
    "cli",
    "hlt",
    "jmp 2b",
    ".balign 8",
    "kdbg_ap_tramp_gdt:",
    ".quad 0",
    ".quad 0x00CF9A000000FFFF",
    ".quad 0x00CF92000000FFFF",
    ".quad 0x00AF9A000000FFFF",
    "kdbg_ap_tramp_gdtr:",
    ".word 4 * 8 - 1",
    ".long {base} + kdbg_ap_tramp_gdt - kdbg_ap_tramp_start",
    ".balign 8",
    ".globl kdbg_ap_tramp_params",
    "kdbg_ap_tramp_params:",
    "kdbg_ap_tramp_cr3: .quad 0",
    "kdbg_ap_tramp_stack: .quad 0",
    "kdbg_ap_tramp_arg: .quad 0",
    "kdbg_ap_tramp_entry: .quad 0",
    ".globl kdbg_ap_tramp_end",
    "kdbg_ap_tramp_end:",
    ".popsection",
    base = const TRAMPOLINE_ADDR,
    options(att_syntax)
);

unsafe extern "C" {
    static kdbg_ap_tramp_start: u8;
    static kdbg_ap_tramp_params: u8;
    static kdbg_ap_tramp_end: u8;
}

/// What an AP runs once in 64-bit mode: `entry(arg)` on `stack_top`.
pub type ApEntry = extern "C" fn(u64) -> !;

/// Copies the trampoline to [`TRAMPOLINE_ADDR`] with its parameters.
///
/// # Safety
/// The page at [`TRAMPOLINE_ADDR`] is identity-mapped RAM nothing else
/// uses; no AP is executing the trampoline (the previous one has reached
/// `entry`).
pub unsafe fn install(stack_top: u64, entry: ApEntry, arg: u64) {
    let start = core::ptr::addr_of!(kdbg_ap_tramp_start) as u64;
    let params = core::ptr::addr_of!(kdbg_ap_tramp_params) as u64;
    let end = core::ptr::addr_of!(kdbg_ap_tramp_end) as u64;
    let len = end.saturating_sub(start) as usize;
    let cr3 = crate::cpu::read_cr3() & 0x000F_FFFF_FFFF_F000;
    // SAFETY: the trampoline bytes are in the kernel image (readable); the
    // destination page is free RAM the caller owns; the parameter block is
    // inside the copy (4 u64 words at `params - start`).
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE_ADDR as *mut u8, len);
        let p = (TRAMPOLINE_ADDR + (params - start)) as *mut u64;
        p.write_volatile(cr3);
        p.add(1).write_volatile(stack_top);
        p.add(2).write_volatile(arg);
        p.add(3).write_volatile(entry as usize as u64);
    }
}

/// INIT, then the first STARTUP IPI to the CPU with local APIC id `apic_id`
/// (the caller waits 10 ms between [`send_init`] and [`send_startup`] and
/// repeats the STARTUP once if the CPU did not come up).
pub fn send_init(apic_id: u32) {
    crate::apic::send_init(apic_id);
}

/// A STARTUP IPI pointing at the trampoline.
pub fn send_startup(apic_id: u32) {
    crate::apic::send_startup(apic_id, TRAMPOLINE_PAGE);
}
