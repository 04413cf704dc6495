//! The interrupt descriptor table: 256 interrupt gates, every one with an IST
//! stack (so the CPU always switches stacks: the precompiled `core` has
//! red-zone users).

use core::arch::asm;
use core::cell::UnsafeCell;

use crate::gdt::KERNEL_CS;

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
    fn interrupt(handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: ist & 7,
            type_attr: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: written once by `load` during single-threaded init.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::EMPTY; 256]));

#[repr(C, packed(2))]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills all 256 gates (`stub(v)` is vector v's entry, `ist(v)` its IST index
/// 1..=7) and loads the IDT.
///
/// # Safety
/// Call once during init with interrupts disabled; every `stub(v)` must be a
/// valid entry point that builds a trap frame and returns with `iretq`.
pub unsafe fn load(stub: impl Fn(usize) -> u64, ist: impl Fn(usize) -> u8) {
    // SAFETY: single-threaded init with interrupts off: nobody reads the IDT yet.
    unsafe {
        let gates = &mut *IDT.0.get();
        for (v, gate) in gates.iter_mut().enumerate() {
            *gate = Gate::interrupt(stub(v), ist(v));
        }
        let ptr = DescriptorPointer {
            limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
            base: IDT.0.get() as u64,
        };
        asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
}

/// Loads the (already filled) IDT on this CPU.
///
/// # Safety
/// [`load`] ran before (on CPU 0); interrupts disabled.
pub unsafe fn load_here() {
    let ptr = DescriptorPointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is filled and never changes after `load`.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) };
}
