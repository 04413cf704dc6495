//! The GDT and the TSS (with its interrupt stack table).
//!
//! One flat 64-bit code segment, one data segment and the TSS. The TSS's IST
//! pointers are owned by [`crate::trap`], which shifts them while a handler
//! runs so that a nested trap on the same vector lands below the frame in use.

use core::arch::asm;
use core::cell::UnsafeCell;

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data/stack segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector.
pub const TSS_SELECTOR: u16 = 0x18;

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

const _: () = assert!(core::mem::size_of::<Tss>() == 104);
const _: () = assert!(core::mem::offset_of!(Tss, ist) == IST1_OFFSET);

/// A static written only during single-threaded init or by the trap entry asm.
#[repr(transparent)]
pub(crate) struct TssCell(pub(crate) UnsafeCell<Tss>);

// SAFETY: one CPU; the TSS is written at init (interrupts off) and by the trap
// entry/exit asm of the CPU that owns it.
unsafe impl Sync for TssCell {}

pub(crate) static TSS: TssCell = TssCell(UnsafeCell::new(Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: 104,
}));

#[repr(C, align(16))]
struct Gdt(UnsafeCell<[u64; 5]>);

// SAFETY: written once by `load` during single-threaded init.
unsafe impl Sync for Gdt {}

static GDT: Gdt = Gdt(UnsafeCell::new([0; 5]));

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

/// Sets the IST pointers, builds and loads the GDT, reloads the segment
/// registers and loads the task register.
///
/// # Safety
/// Call once, with interrupts disabled, before the IDT is used.
pub unsafe fn load(ist_tops: [u64; 7]) {
    let tss_base = TSS.0.get() as u64;
    // SAFETY: single-threaded init with interrupts off: nobody else touches the TSS or GDT.
    unsafe {
        (*TSS.0.get()).ist = ist_tops;
        let [tss_lo, tss_hi] = tss_descriptor(tss_base, 103);
        *GDT.0.get() = [0, CODE64, DATA, tss_lo, tss_hi];
        let ptr = DescriptorPointer {
            limit: (5 * 8 - 1) as u16,
            base: GDT.0.get() as u64,
        };
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
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}

/// The current IST pointers (IST1..IST7).
pub fn ist_pointers() -> [u64; 7] {
    // SAFETY: a plain read of the TSS; the entry asm only changes it in a
    // strictly nested way, so the read sees a consistent value per slot.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*TSS.0.get()).ist)) }
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
