//! Which CPU is this, and which CPUs are online.
//!
//! Every CPU loads its own TSS (`crate::gdt`), CPU n's at selector
//! `TSS_SELECTOR + 16 n`, so the task register names the CPU: [`cpu_id`]
//! is one `str` instruction, usable from the first trap on (no memory is
//! read, no GS base is assumed: gdb may write `gs_base` like any register).
//! Per-CPU state elsewhere is an array indexed by [`cpu_id`]
//! (`[T; MAX_CPUS]`), each CPU writing only its own element.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Most CPUs kdbg and the reference kernel handle.
pub const MAX_CPUS: usize = 16;

/// Index of the CPU running this, `0..MAX_CPUS` (0 before the GDT is loaded).
#[cfg(not(test))]
#[inline(always)]
pub fn cpu_id() -> usize {
    let sel: u64;
    // SAFETY: `str` reads the task register; no memory, no side effects.
    unsafe { core::arch::asm!("str {0}", out(reg) sel, options(nomem, nostack, preserves_flags)) };
    // `str` into a 64-bit register zero-extends the selector. Before the
    // GDT is loaded the selector is 0: the subtraction wraps, index 0.
    let idx = (sel.wrapping_sub(u64::from(crate::gdt::TSS_SELECTOR)) >> 4) as usize;
    if idx < MAX_CPUS { idx } else { 0 }
}

/// Host tests run as one CPU (`str` may be refused in user mode, UMIP).
#[cfg(test)]
pub fn cpu_id() -> usize {
    0
}

/// Bit n: CPU n runs kernel code (set by the CPU itself when it is ready
/// for traps and IPIs).
static ONLINE: AtomicU32 = AtomicU32::new(1);

/// Local APIC id of each CPU (for IPIs), set at bring-up.
static APIC_ID: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Marks `cpu` online with its local APIC id (called by the CPU itself).
pub fn set_online(cpu: usize, apic_id: u32) {
    if let Some(a) = APIC_ID.get(cpu) {
        a.store(u64::from(apic_id), Ordering::Relaxed);
    }
    if cpu < MAX_CPUS {
        ONLINE.fetch_or(1 << cpu, Ordering::AcqRel);
    }
}

/// Records CPU 0's local APIC id (it is online from boot).
pub fn set_boot_apic_id(apic_id: u32) {
    APIC_ID[0].store(u64::from(apic_id), Ordering::Relaxed);
}

/// Online CPUs as a bit mask (bit n = CPU n).
pub fn online_mask() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

/// How many CPUs are online.
pub fn online_count() -> usize {
    online_mask().count_ones() as usize
}

/// `cpu` is online.
pub fn is_online(cpu: usize) -> bool {
    cpu < MAX_CPUS && online_mask() & (1 << cpu) != 0
}

/// Local APIC id of `cpu`.
pub fn apic_id(cpu: usize) -> u32 {
    APIC_ID
        .get(cpu)
        .map_or(0, |a| a.load(Ordering::Relaxed) as u32)
}

/// The online CPUs other than this one.
pub fn others() -> impl Iterator<Item = usize> {
    let me = cpu_id();
    let mask = online_mask();
    (0..MAX_CPUS).filter(move |&c| c != me && mask & (1 << c) != 0)
}
