//! Writing kernel text while the kernel runs.
//!
//! Kernel text may be mapped read-only; writes go through with CR0.WP
//! cleared for the duration of the copy, interrupts off so nothing else runs
//! on this CPU with WP clear. Afterwards `cpuid` serialises this CPU's
//! instruction stream. Other CPUs see single-byte changes (the int3 byte and
//! its restoration) atomically; multi-byte writes are only made to slots no
//! CPU can be executing (the probe core's obligation).

use x86_64::registers::control::{Cr0, Cr0Flags};

/// Copies `bytes` to kernel text at `addr` and serialises this CPU.
///
/// # Safety
/// `addr..addr + bytes.len()` must be mapped kernel memory, and no CPU may
/// be executing the bytes being changed except a single-byte instruction
/// boundary change (int3 in or out).
pub unsafe fn write(addr: u64, bytes: &[u8]) {
    crate::cpu::without_interrupts(|| {
        let cr0 = Cr0::read();
        // SAFETY: clearing WP only lets ring 0 write read-only pages; it is
        // restored below before interrupts come back on.
        unsafe { Cr0::write(cr0 - Cr0Flags::WRITE_PROTECT) };
        let dst = addr as *mut u8;
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: the caller guarantees the range is mapped kernel memory.
            unsafe { dst.add(i).write_volatile(b) };
        }
        // SAFETY: restores the value read above.
        unsafe { Cr0::write(cr0) };
        serialize();
    });
}

/// Serialises the instruction stream of this CPU (after modifying code).
pub fn serialize() {
    let _ = core::arch::x86_64::__cpuid(0);
}

/// The breakpoint instruction byte (`int3`) a probe writes over the first
/// byte of the probed instruction.
pub const BREAKPOINT: u8 = 0xcc;
