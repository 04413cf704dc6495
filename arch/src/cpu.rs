//! CPU helpers: interrupt flag, halt, time stamp counter, control registers.

use core::arch::asm;

use crate::frame::rflags;

/// Current RFLAGS.
#[inline]
pub fn read_rflags() -> u64 {
    let value: u64;
    // SAFETY: pushfq/pop only reads RFLAGS into a register (uses the stack transiently).
    unsafe { asm!("pushfq", "pop {}", out(reg) value, options(nomem, preserves_flags)) };
    value
}

/// Interrupts are enabled (RFLAGS.IF).
#[inline]
pub fn interrupts_enabled() -> bool {
    read_rflags() & rflags::IF != 0
}

/// `cli`.
#[inline]
pub fn disable_interrupts() {
    // SAFETY: clearing IF cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// `sti`.
#[inline]
pub fn enable_interrupts() {
    // SAFETY: the IDT is set up before anything enables interrupts; `sti` touches no memory.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Runs `f` with interrupts disabled, restoring the previous state afterwards.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let was_enabled = interrupts_enabled();
    if was_enabled {
        disable_interrupts();
    }
    let r = f();
    if was_enabled {
        enable_interrupts();
    }
    r
}

/// `hlt`: waits for the next interrupt.
#[inline]
pub fn halt() {
    // SAFETY: `hlt` only pauses the CPU until an interrupt.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

/// `sti; hlt` back to back: waits for an interrupt without the race between the two.
#[inline]
pub fn enable_interrupts_and_halt() {
    // SAFETY: as for `enable_interrupts` and `halt`.
    unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
}

/// The live ds, es, fs, gs selectors.
pub fn data_selectors() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack, preserves_flags))
    };
    [ds, es, fs, gs]
}

const IA32_FS_BASE: u32 = 0xC000_0100;
const IA32_GS_BASE: u32 = 0xC000_0101;

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with the FS/GS base MSRs (below), which exist on
    // every x86_64 CPU; reading them at CPL 0 has no side effects.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// # Safety
/// `msr` is the FS or GS base MSR and `value` is canonical (else `wrmsr`
/// raises #GP).
unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller passes an FS/GS base MSR and a canonical value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
            in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags))
    };
}

/// This CPU's FS base (IA32_FS_BASE).
pub fn fs_base() -> u64 {
    rdmsr(IA32_FS_BASE)
}

/// This CPU's GS base (IA32_GS_BASE).
pub fn gs_base() -> u64 {
    rdmsr(IA32_GS_BASE)
}

/// Sets this CPU's FS base; `false` (and nothing written) when `value` is
/// not canonical.
pub fn set_fs_base(value: u64) -> bool {
    if !crate::mem::is_canonical(value) {
        return false;
    }
    // SAFETY: the FS base MSR with a canonical value.
    unsafe { wrmsr(IA32_FS_BASE, value) };
    true
}

/// Sets this CPU's GS base; `false` (and nothing written) when `value` is
/// not canonical.
pub fn set_gs_base(value: u64) -> bool {
    if !crate::mem::is_canonical(value) {
        return false;
    }
    // SAFETY: the GS base MSR with a canonical value.
    unsafe { wrmsr(IA32_GS_BASE, value) };
    true
}

/// Executes `int3` here: the kernel's #BP handler runs with `rip` just
/// after it.
#[inline(always)]
pub fn breakpoint() {
    // SAFETY: int3 traps to the kernel's #BP handler, which returns past it.
    unsafe { asm!("int3", options(nomem, nostack)) };
}

/// The time stamp counter (with `-icount shift=0`: guest instructions).
#[inline]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: rdtsc has no side effects.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CR2: the faulting linear address of the last #PF.
#[inline]
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// CR3: the physical address of the top-level page table (plus flags).
#[inline]
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// CR0.
#[inline]
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// CR4.
#[inline]
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// A pause hint for spin loops.
#[inline]
pub fn spin_hint() {
    core::hint::spin_loop();
}
