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

/// Measures the TSC rate against PIT channel 2 (the speaker gate, as
/// Linux's `pit_calibrate_tsc` does): count `ms` milliseconds down in
/// mode 0 and read the TSC at both ends. The PIT counts from its own
/// crystal, so unlike counting timer interrupts this does not drift when
/// interrupts are late or lost (a loaded host under QEMU). The TSC is read
/// before the count starts and after it ends is seen, so a disturbed run
/// (a preempted vCPU) only measures long: the shortest of five wins. 0 if
/// channel 2 never finishes (no PIT) or the result is implausible.
///
/// # Safety
/// Programs PIT channel 2 and the speaker gate (port 0x61); nothing else
/// may use them meanwhile. Call during init.
pub unsafe fn calibrate_tsc(ms: u32) -> u64 {
    let latch = (u64::from(PIT_HZ) * u64::from(ms.clamp(1, 50)) / 1000) as u16;
    let mut best: Option<u64> = None;
    for _ in 0..5 {
        // SAFETY: the caller owns channel 2 and port 0x61 (see above).
        let Some(cycles) = (unsafe { count_down(latch) }) else {
            return 0;
        };
        best = Some(best.map_or(cycles, |b| b.min(cycles)));
    }
    let hz = best.unwrap_or(0).saturating_mul(u64::from(PIT_HZ)) / u64::from(latch.max(1));
    // Anything below 100 MHz is not a TSC rate but a failed measurement.
    if hz < 100_000_000 { 0 } else { hz }
}

/// TSC cycles for channel 2 to count `latch` PIT ticks down; `None` if it
/// never reaches terminal count.
///
/// # Safety
/// As [`calibrate_tsc`].
unsafe fn count_down(latch: u16) -> Option<u64> {
    use crate::port::inb;
    let [lo, hi] = latch.to_le_bytes();
    // SAFETY: the standard channel-2 sequence: gate high, speaker off,
    // mode 0 (interrupt on terminal count), binary, lobyte/hibyte.
    unsafe {
        outb(0x61, (inb(0x61) & !0x02) | 0x01);
        outb(0x43, 0xb0);
        outb(0x42, lo);
    }
    // Counting starts with the high byte: read the TSC just before it.
    let t0 = crate::cpu::rdtsc();
    // SAFETY: as above.
    unsafe { outb(0x42, hi) };
    // Mode 0 raises OUT2 (port 0x61 bit 5) at terminal count. Bounded:
    // a machine without a PIT must not hang the boot.
    for _ in 0..5_000_000u32 {
        // SAFETY: reading the speaker/gate status port has no side effects.
        if unsafe { inb(0x61) } & 0x20 != 0 {
            return Some(crate::cpu::rdtsc().wrapping_sub(t0));
        }
    }
    None
}
