//! The GDT and the per-CPU TSSs (with their interrupt stack tables).
//!
//! One GDT shared by every CPU: a flat 64-bit code segment, one data segment
//! and one TSS descriptor per CPU (CPU n's at selector `TSS_SELECTOR + 16 n`).
//! Each CPU loads its own TSS into TR, so the task register names the CPU:
//! [`crate::percpu::cpu_id`] and the trap entry derive the CPU index from
//! `str` (no GS base is taken: gdb may write `gs_base` freely). The TSS's IST
//! pointers are owned by [`crate::trap`], which shifts them while a handler
//! runs so that a nested trap on the same vector lands below the frame in use.

use core::arch::asm;
use core::cell::UnsafeCell;

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data/stack segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector of CPU 0 (CPU n: `TSS_SELECTOR + 16 n`).
pub const TSS_SELECTOR: u16 = 0x18;

use crate::percpu::MAX_CPUS;

/// Bytes of one [`Tss`] (the stride of the per-CPU TSS array).
pub const TSS_SIZE: usize = 104;

/// The 64-bit task state segment (Intel SDM Vol. 3, 8.7).
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
pub struct Tss {
    _reserved0: u32,
    /// Stacks for privilege changes (unused: everything runs in ring 0).
    pub rsp: [u64; 3],
    _reserved1: u64,
    /// IST1..IST7 (index 0 here is IST1).
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    /// I/O permission bitmap offset (none: points past the limit).
    pub iomap_base: u16,
}

/// Byte offset of IST1 inside [`Tss`]: the entry asm addresses `ist[n-1]` as
/// `TSS + IST1_OFFSET + 8 * (n - 1)`.
pub const IST1_OFFSET: usize = 36;

const _: () = assert!(core::mem::size_of::<Tss>() == TSS_SIZE);
const _: () = assert!(core::mem::size_of::<[Tss; 2]>() == 2 * TSS_SIZE);
const _: () = assert!(core::mem::offset_of!(Tss, ist) == IST1_OFFSET);

/// The TSSs, written only by the CPU that owns one (its init, with
/// interrupts off, and its trap entry/exit asm).
#[repr(C, align(16))]
pub(crate) struct TssCell(pub(crate) UnsafeCell<[Tss; MAX_CPUS]>);

// SAFETY: TSS n is written only by CPU n (at its init with interrupts off,
// and by its trap entry/exit asm); other CPUs never touch it.
unsafe impl Sync for TssCell {}

const EMPTY_TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: TSS_SIZE as u16,
};

pub(crate) static TSS: TssCell = TssCell(UnsafeCell::new([EMPTY_TSS; MAX_CPUS]));

/// Descriptor words: null, code, data, then two per CPU's TSS.
const GDT_WORDS: usize = 3 + 2 * MAX_CPUS;

#[repr(C, align(16))]
struct Gdt(UnsafeCell<[u64; GDT_WORDS]>);

// SAFETY: each CPU writes only its own TSS descriptor, once, at its init
// (before it loads TR from it); the shared words are written by CPU 0's
// init before any other CPU runs.
unsafe impl Sync for Gdt {}

static GDT: Gdt = Gdt(UnsafeCell::new([0; GDT_WORDS]));

/// Address of CPU `cpu`'s TSS.
fn tss_ptr(cpu: usize) -> *mut Tss {
    let base = TSS.0.get() as *mut Tss;
    // SAFETY: in bounds of the array (cpu is clamped).
    unsafe { base.add(cpu.min(MAX_CPUS - 1)) }
}

const CODE64: u64 = 0x00AF_9A00_0000_FFFF;
const DATA: u64 = 0x00CF_9200_0000_FFFF;

/// The two descriptor words of an available 64-bit TSS at `base`.
fn tss_descriptor(base: u64, limit: u64) -> [u64; 2] {
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, type 9 (available 64-bit TSS)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

#[repr(C, packed(2))]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Sets CPU `cpu`'s IST pointers, writes its TSS descriptor, loads the
/// GDT, reloads the segment registers and loads the task register with the
/// CPU's TSS (which makes [`crate::percpu::cpu_id`] return `cpu`).
///
/// # Safety
/// Call once per CPU on that CPU, with interrupts disabled, before its IDT
/// is used; CPU 0 first (it writes the shared descriptors).
pub unsafe fn load(cpu: usize, ist_tops: [u64; 7]) {
    let cpu = cpu.min(MAX_CPUS - 1);
    let tss = tss_ptr(cpu);
    // SAFETY: this CPU's own TSS and descriptor, interrupts off; the shared
    // words are written by CPU 0 before the others start.
    unsafe {
        (*tss).ist = ist_tops;
        let [tss_lo, tss_hi] = tss_descriptor(tss as u64, TSS_SIZE as u64 - 1);
        let gdt = &mut *GDT.0.get();
        if cpu == 0 {
            gdt[0] = 0;
            gdt[1] = CODE64;
            gdt[2] = DATA;
        }
        if let Some(w) = gdt.get_mut(3 + 2 * cpu..5 + 2 * cpu) {
            w.copy_from_slice(&[tss_lo, tss_hi]);
        }
        let ptr = DescriptorPointer {
            limit: (GDT_WORDS * 8 - 1) as u16,
            base: GDT.0.get() as u64,
        };
        let selector = TSS_SELECTOR + 16 * cpu as u16;
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:e}",
            "mov es, {ds:e}",
            "mov ss, {ds:e}",
            "mov fs, {ds:e}",
            "mov gs, {ds:e}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = in(reg) u64::from(KERNEL_CS),
            ds = in(reg) u32::from(KERNEL_DS),
            tss = in(reg) selector,
            tmp = out(reg) _,
        );
    }
}

/// This CPU's current IST pointers (IST1..IST7).
pub fn ist_pointers() -> [u64; 7] {
    let tss = tss_ptr(crate::percpu::cpu_id());
    // SAFETY: a plain read of this CPU's TSS; the entry asm only changes it
    // in a strictly nested way, so the read sees a consistent value per slot.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*tss).ist)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let [lo, hi] = tss_descriptor(0x1234_5678_9abc_def0, 103);
        assert_eq!(lo & 0xFFFF, 103);
        assert_eq!((lo >> 16) & 0xFF_FFFF, 0xbc_def0);
        assert_eq!((lo >> 40) & 0xFF, 0x89);
        assert_eq!((lo >> 56) & 0xFF, 0x9a);
        assert_eq!(hi, 0x1234_5678);
    }
}
