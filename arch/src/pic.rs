//! The two legacy 8259 PICs, remapped to vectors `IRQ_BASE..IRQ_BASE + 16`.

use crate::port::{inb, outb};
use crate::trap::IRQ_BASE;

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xA0;
const PIC2_DATA: u16 = 0xA1;
const EOI: u8 = 0x20;
const READ_ISR: u8 = 0x0B;

/// Remaps both PICs to `IRQ_BASE` and masks every line.
///
/// # Safety
/// Call once during init with interrupts disabled.
pub unsafe fn init() {
    let base = IRQ_BASE as u8;
    // SAFETY: the standard 8259 initialisation sequence on the PC's PIC ports.
    unsafe {
        outb(PIC1_CMD, 0x11); // ICW1: init, expect ICW4
        outb(PIC2_CMD, 0x11);
        outb(PIC1_DATA, base); // ICW2: vector offsets
        outb(PIC2_DATA, base + 8);
        outb(PIC1_DATA, 4); // ICW3: slave on IRQ2
        outb(PIC2_DATA, 2);
        outb(PIC1_DATA, 0x01); // ICW4: 8086 mode
        outb(PIC2_DATA, 0x01);
        outb(PIC1_DATA, 0xFF); // mask all
        outb(PIC2_DATA, 0xFF);
    }
}

/// Unmasks IRQ line `irq` (0..16); unmasking a slave line also unmasks the cascade.
pub fn unmask(irq: u8) {
    // SAFETY: read-modify-write of the PIC mask registers.
    unsafe {
        if irq < 8 {
            outb(PIC1_DATA, inb(PIC1_DATA) & !(1 << irq));
        } else if irq < 16 {
            outb(PIC2_DATA, inb(PIC2_DATA) & !(1 << (irq - 8)));
            outb(PIC1_DATA, inb(PIC1_DATA) & !(1 << 2));
        }
    }
}

/// Masks IRQ line `irq` (0..16).
pub fn mask(irq: u8) {
    // SAFETY: read-modify-write of the PIC mask registers.
    unsafe {
        if irq < 8 {
            outb(PIC1_DATA, inb(PIC1_DATA) | (1 << irq));
        } else if irq < 16 {
            outb(PIC2_DATA, inb(PIC2_DATA) | (1 << (irq - 8)));
        }
    }
}

/// Signals end of interrupt for `irq`.
pub fn end_of_interrupt(irq: u8) {
    // SAFETY: writing EOI to the PIC command ports.
    unsafe {
        if irq >= 8 {
            outb(PIC2_CMD, EOI);
        }
        outb(PIC1_CMD, EOI);
    }
}

/// A vector in the PIC range was spurious (IRQ 7 or 15 with its ISR bit
/// clear). For a spurious IRQ 15 the master still needs its EOI; this does it.
pub fn is_spurious(irq: u8) -> bool {
    // SAFETY: OCW3 read of the in-service register.
    unsafe {
        match irq {
            7 => {
                outb(PIC1_CMD, READ_ISR);
                inb(PIC1_CMD) & 0x80 == 0
            }
            15 => {
                outb(PIC2_CMD, READ_ISR);
                let spurious = inb(PIC2_CMD) & 0x80 == 0;
                if spurious {
                    outb(PIC1_CMD, EOI);
                }
                spurious
            }
            _ => false,
        }
    }
}
