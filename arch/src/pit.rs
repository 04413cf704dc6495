//! The 8253/8254 programmable interval timer, channel 0 (IRQ 0).

use crate::port::outb;

/// Input clock of the PIT in Hz.
pub const PIT_HZ: u32 = 1_193_182;

/// IRQ line of channel 0.
pub const IRQ: u8 = 0;

/// Programs channel 0 as a rate generator at `hz` interrupts per second
/// (clamped to what the 16-bit divisor allows).
///
/// # Safety
/// Call during init; the PIT ports must not be in use elsewhere.
pub unsafe fn start_periodic(hz: u32) {
    let divisor = (PIT_HZ / hz.max(19)).clamp(1, 0xFFFF) as u16;
    let [lo, hi] = divisor.to_le_bytes();
    // SAFETY: the standard mode-2 programming sequence on the PIT ports.
    unsafe {
        outb(0x43, 0x34); // channel 0, lobyte/hibyte, mode 2, binary
        outb(0x40, lo);
        outb(0x40, hi);
    }
}
