//! Trap entry and exit: 256 vector stubs that build a [`TrapFrame`] and call
//! the handler registered with [`set_handler`].
//!
//! Entry path (all vectors): the CPU switches to the vector's IST stack and
//! pushes ss, rsp, rflags, cs, rip (and an error code for some exceptions);
//! the stub pushes a dummy error code where the CPU pushes none and the vector
//! number; the common code pushes rax..r15, reserves 512 bytes and `fxsave64`s
//! into them. The result is exactly `TrapFrame`. Then the IST pointer of this
//! vector's IST slot is moved down by one [`LEVEL_SIZE`] for as long as the
//! handler runs, so a nested trap on the same IST (a probe hit inside a
//! handler, a #PF during a fault-safe read) gets a fresh level instead of
//! overwriting the frame in use. On the way out the pointer moves back up,
//! `fxrstor64`, pop, `iretq`: whatever the handler wrote into the frame is
//! what the interrupted code gets back.
//!
//! Each IST slot has [`MAX_DEPTH`] usable levels plus one guard level; the
//! handler is told the nesting depth and must treat `depth >= MAX_DEPTH` as
//! fatal (the frame is then on the guard level).

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::frame::TrapFrame;
use crate::gdt;
use crate::percpu::{MAX_CPUS, cpu_id};

/// #DE divide error.
pub const DIVIDE_ERROR: u64 = 0;
/// #DB debug.
pub const DEBUG: u64 = 1;
/// NMI.
pub const NMI: u64 = 2;
/// #BP breakpoint (int3).
pub const BREAKPOINT: u64 = 3;
/// #UD invalid opcode.
pub const INVALID_OPCODE: u64 = 6;
/// #NM device not available.
pub const DEVICE_NOT_AVAILABLE: u64 = 7;
/// #DF double fault.
pub const DOUBLE_FAULT: u64 = 8;
/// #GP general protection.
pub const GENERAL_PROTECTION: u64 = 13;
/// #PF page fault.
pub const PAGE_FAULT: u64 = 14;
/// #MC machine check.
pub const MACHINE_CHECK: u64 = 18;
/// #XM SIMD floating point.
pub const SIMD_FP: u64 = 19;
/// First vector of the remapped legacy PICs (IRQ n = `IRQ_BASE + n`).
pub const IRQ_BASE: u64 = 0x20;
/// Software interrupt the scheduler uses for a voluntary switch (`int 0x81`).
pub const YIELD_VECTOR: u64 = 0x81;

/// Usable nesting levels per IST slot.
pub const MAX_DEPTH: usize = 4;
/// Stack bytes per nesting level (the frame plus the handler's own stack).
pub const LEVEL_SIZE: usize = 64 * 1024;
/// Bytes of one IST slot: `MAX_DEPTH` levels plus a guard level.
pub const IST_SIZE: usize = (MAX_DEPTH + 1) * LEVEL_SIZE;

/// Exception vectors for which the CPU pushes an error code.
pub const fn has_error_code(vector: usize) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// The IST slot (1..=7) of each vector: #DB, NMI, #DF, #MC and #BP have their
/// own; the other exceptions share one; interrupts share one.
pub const fn ist_index(vector: usize) -> u8 {
    match vector {
        1 => 1,
        2 => 2,
        8 => 3,
        18 => 4,
        3 => 5,
        0..=31 => 6,
        _ => 7,
    }
}

const fn ist_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut v = 0;
    while v < 256 {
        t[v] = ist_index(v);
        v += 1;
    }
    t
}

/// Read by the entry asm: `IST_OF_VECTOR[v]` is vector v's IST slot.
#[used]
static IST_OF_VECTOR: [u8; 256] = ist_table();

#[repr(C, align(16))]
struct IstStacks(UnsafeCell<[[u8; IST_SIZE]; 7]>);

// SAFETY: only the CPU (on trap entry) and the handlers running on it use these stacks.
unsafe impl Sync for IstStacks {}

/// CPU 0's IST stacks (the other CPUs' come from [`init_cpu`]'s caller).
static IST_STACKS: IstStacks = IstStacks(UnsafeCell::new([[0; IST_SIZE]; 7]));

/// Bytes of one CPU's IST stacks (7 slots).
pub const CPU_IST_BYTES: usize = 7 * IST_SIZE;

/// Lowest address of each CPU's IST stacks (0: not set up).
static IST_BASE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The trap handler: the frame of the interrupted context and the nesting
/// depth on this vector's IST slot (0 = not nested).
pub type Handler = fn(&mut TrapFrame, usize);

/// The registered [`Handler`] (null: none yet). A plain pointer, one load
/// on every trap.
static HANDLER: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Registers the one handler every vector dispatches to. Only the first call counts.
pub fn set_handler(handler: Handler) {
    let _ = HANDLER.compare_exchange(
        core::ptr::null_mut(),
        handler as *mut (),
        Ordering::AcqRel,
        Ordering::Acquire,
    );
}

/// The registered handler, if any.
#[inline(always)]
fn handler() -> Option<Handler> {
    let p = HANDLER.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: the only non-null value ever stored is a `Handler` cast to a
    // pointer by `set_handler`; fn pointers and data pointers have the same
    // size on x86_64.
    Some(unsafe { core::mem::transmute::<*mut (), Handler>(p) })
}

/// Lowest address of this CPU's IST stacks.
fn ist_base() -> u64 {
    match IST_BASE[cpu_id()].load(Ordering::Relaxed) {
        0 => IST_STACKS.0.get() as u64,
        b => b,
    }
}

/// Top (highest address, exclusive) of this CPU's IST slot `n` (1..=7).
fn ist_top(n: usize) -> u64 {
    ist_base() + (n as u64) * IST_SIZE as u64
}

/// The address range of this CPU's trap stacks (for unwinders and
/// fault-safe checks).
pub fn trap_stacks() -> core::ops::Range<u64> {
    ist_top(0)..ist_top(7)
}

/// Nesting depth of a frame at `addr` on IST slot `n`, or `None` when it is not on that slot.
fn depth_of(addr: u64, n: usize) -> Option<usize> {
    let top = ist_top(n);
    let bottom = top - IST_SIZE as u64;
    if addr < bottom || addr >= top {
        return None;
    }
    Some(((top - 1 - addr) / LEVEL_SIZE as u64) as usize)
}

unsafe extern "C" {
    /// First byte of the 256 entry stubs, 16 bytes apart.
    static kdbg_trap_vectors: u8;
}

/// Address of vector `v`'s entry stub.
pub fn stub_address(v: usize) -> u64 {
    let base = core::ptr::addr_of!(kdbg_trap_vectors) as u64;
    base + 16 * v as u64
}

/// Loads the GDT/TSS (with the IST stacks) and the IDT on CPU 0.
///
/// # Safety
/// Call once during early boot with interrupts disabled, before any trap can
/// happen and after [`set_handler`] (a trap without a handler halts the CPU).
pub unsafe fn init() {
    let base = IST_STACKS.0.get() as u64;
    IST_BASE[0].store(base, Ordering::Relaxed);
    // SAFETY: the caller guarantees early single-threaded init with interrupts off;
    // the stubs are the asm below.
    unsafe {
        gdt::load(0, ist_tops(base));
        crate::idt::load(stub_address, ist_index);
    }
}

fn ist_tops(base: u64) -> [u64; 7] {
    let mut tops = [0u64; 7];
    for (i, top) in tops.iter_mut().enumerate() {
        *top = base + (i as u64 + 1) * IST_SIZE as u64;
    }
    tops
}

/// Sets up another CPU's trap tables on that CPU: its TSS with the IST
/// stacks at `ist_base` ([`CPU_IST_BYTES`] bytes), the shared GDT and IDT.
///
/// # Safety
/// Call once on CPU `cpu` (not 0) with interrupts disabled, after [`init`]
/// ran on CPU 0; `ist_base..ist_base + CPU_IST_BYTES` is memory owned by
/// this CPU for ever, 16-byte aligned.
pub unsafe fn init_cpu(cpu: usize, ist_base: u64) {
    if let Some(b) = IST_BASE.get(cpu) {
        b.store(ist_base, Ordering::Relaxed);
    }
    // SAFETY: as the caller guarantees; the IDT was filled by CPU 0.
    unsafe {
        gdt::load(cpu, ist_tops(ist_base));
        crate::idt::load_here();
    }
}

/// Called by the entry asm with the frame it built.
extern "C" fn kdbg_trap_rust(frame: &mut TrapFrame) {
    let addr = frame as *mut TrapFrame as u64;
    let slot = IST_OF_VECTOR
        .get(frame.vector as usize & 0xFF)
        .copied()
        .unwrap_or(7) as usize;
    let depth = depth_of(addr, slot).unwrap_or(MAX_DEPTH);
    match handler() {
        Some(handler) => handler(frame, depth),
        None => loop {
            crate::cpu::disable_interrupts();
            crate::cpu::halt();
        },
    }
}

// The 256 stubs (16 bytes apart) and the common entry/exit path. AT&T syntax.
// Frame offsets: fxsave 0..512, r15 at 512 ... rax at 624, vector 632.
global_asm!(
    ".pushsection .text.kdbg_trap_entry, \"ax\", @progbits",
    ".balign 16",
    ".globl kdbg_trap_vectors",
    "kdbg_trap_vectors:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    ".set kdbg_vec, 0",
    ".rept 256",
    ".balign 16",
    ".if (kdbg_vec == 8) || (kdbg_vec == 10) || (kdbg_vec == 11) || (kdbg_vec == 12) || (kdbg_vec == 13) || (kdbg_vec == 14) || (kdbg_vec == 17) || (kdbg_vec == 21) || (kdbg_vec == 29) || (kdbg_vec == 30)",
    ".else",
    "pushq $0",
    ".endif",
    "pushq $kdbg_vec",
    "jmp kdbg_trap_common",
    ".set kdbg_vec, kdbg_vec + 1",
    ".endr",
    ".cfi_endproc",
    "",
    ".balign 16",
    "kdbg_trap_common:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    "pushq %rax",
    "pushq %rbx",
    "pushq %rcx",
    "pushq %rdx",
    "pushq %rsi",
    "pushq %rdi",
    "pushq %rbp",
    "pushq %r8",
    "pushq %r9",
    "pushq %r10",
    "pushq %r11",
    "pushq %r12",
    "pushq %r13",
    "pushq %r14",
    "pushq %r15",
    "subq $512, %rsp",
    "fxsave64 (%rsp)",
    // r12 = &TSS[cpu].ist[slot - 1]; move the slot's IST pointer down one
    // level. The CPU index comes from the task register (its TSS selector).
    "movq 632(%rsp), %rax",
    "andl $0xff, %eax",
    "leaq {ist_of_vector}(%rip), %rcx",
    "movzbl (%rcx,%rax), %eax",
    "str %r12",
    "subq ${tss_sel}, %r12",
    "shrq $4, %r12",
    "imulq ${tss_size}, %r12, %r12",
    "leaq {tss}(%rip), %rcx",
    "addq %rcx, %r12",
    "leaq {ist1_minus_8}(%r12,%rax,8), %r12",
    "subq ${level}, (%r12)",
    "movq %rsp, %rdi",
    "cld",
    "call {rust}",
    "addq ${level}, (%r12)",
    "fxrstor64 (%rsp)",
    "addq $512, %rsp",
    "popq %r15",
    "popq %r14",
    "popq %r13",
    "popq %r12",
    "popq %r11",
    "popq %r10",
    "popq %r9",
    "popq %r8",
    "popq %rbp",
    "popq %rdi",
    "popq %rsi",
    "popq %rdx",
    "popq %rcx",
    "popq %rbx",
    "popq %rax",
    "addq $16, %rsp",
    "iretq",
    ".cfi_endproc",
    ".popsection",
    ist_of_vector = sym IST_OF_VECTOR,
    tss = sym gdt::TSS,
    tss_sel = const gdt::TSS_SELECTOR,
    tss_size = const gdt::TSS_SIZE,
    ist1_minus_8 = const gdt::IST1_OFFSET - 8,
    level = const LEVEL_SIZE,
    rust = sym kdbg_trap_rust,
    options(att_syntax)
);

/// Gives up the CPU voluntarily: `int 0x81` (the scheduler's switch vector).
#[inline]
pub fn software_yield() {
    // SAFETY: vector 0x81 has a gate whose handler returns with iretq; the
    // interrupted context (this one) is restored intact.
    unsafe { core::arch::asm!("int 0x81") };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vector_has_an_ist_slot() {
        for v in 0..256 {
            let n = ist_index(v);
            assert!((1..=7).contains(&n), "vector {v}");
        }
        assert_eq!(ist_index(3), 5);
        assert_eq!(ist_index(14), 6);
        assert_eq!(ist_index(0x20), 7);
    }

    #[test]
    fn depth_counts_levels_from_the_top() {
        let top = ist_top(5);
        assert_eq!(depth_of(top - 1, 5), Some(0));
        assert_eq!(depth_of(top - LEVEL_SIZE as u64, 5), Some(0));
        assert_eq!(depth_of(top - LEVEL_SIZE as u64 - 1, 5), Some(1));
        assert_eq!(depth_of(top - IST_SIZE as u64, 5), Some(MAX_DEPTH));
        assert_eq!(depth_of(top, 5), None);
    }
}
