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
