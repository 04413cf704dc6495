//! The local APIC (xAPIC, memory-mapped): enabling it, its timer, and
//! inter-processor interrupts (INIT, STARTUP, NMI, fixed vectors).
//!
//! The registers are at the physical base in `IA32_APIC_BASE` (0xFEE00000
//! on PCs), which the kernel's identity map covers. Every CPU sees its own
//! APIC at the same address.

use core::sync::atomic::{AtomicU64, Ordering};

const IA32_APIC_BASE: u32 = 0x1B;

const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_ESR: u64 = 0x280;
const REG_ICR_LO: u64 = 0x300;
const REG_ICR_HI: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_ERROR: u64 = 0x370;
const REG_TIMER_INIT: u64 = 0x380;
const REG_TIMER_CUR: u64 = 0x390;
const REG_TIMER_DIV: u64 = 0x3E0;

const ICR_FIXED: u32 = 0x000;
const ICR_NMI: u32 = 0x400;
const ICR_INIT: u32 = 0x500;
const ICR_STARTUP: u32 = 0x600;
const ICR_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_LEVEL: u32 = 1 << 15;
const ICR_ALL_BUT_SELF: u32 = 3 << 18;

/// The vector the APIC raises for spurious interrupts (needs no EOI).
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// The vector of the APIC error interrupt.
pub const ERROR_VECTOR: u8 = 0xFE;

/// Cached MMIO base (0 until [`enable`] ran once).
static BASE: AtomicU64 = AtomicU64::new(0);

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with IA32_APIC_BASE, which every x86_64 CPU has.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn base() -> u64 {
    match BASE.load(Ordering::Relaxed) {
        0 => {
            let b = rdmsr(IA32_APIC_BASE) & 0x000F_FFFF_FFFF_F000;
            BASE.store(b, Ordering::Relaxed);
            b
        }
        b => b,
    }
}

fn read(reg: u64) -> u32 {
    // SAFETY: the APIC page is identity-mapped; reads of defined registers
    // have no side effects.
    unsafe { core::ptr::read_volatile((base() + reg) as *const u32) }
}

fn write(reg: u64, value: u32) {
    // SAFETY: the APIC page is identity-mapped; callers write defined
    // registers with meaningful values.
    unsafe { core::ptr::write_volatile((base() + reg) as *mut u32, value) }
}

/// This CPU's local APIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Software-enables this CPU's APIC (spurious vector [`SPURIOUS_VECTOR`],
/// errors on [`ERROR_VECTOR`]). The LINT0/LINT1 entries the firmware set
/// (ExtINT from the PIC, NMI) are left alone.
pub fn enable() {
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REG_LVT_ERROR, u32::from(ERROR_VECTOR));
    write(REG_ESR, 0);
    write(REG_ESR, 0);
}

/// Signals the end of an APIC-delivered interrupt on this CPU.
pub fn eoi() {
    write(REG_EOI, 0);
}

fn wait_idle() {
    for _ in 0..1_000_000 {
        if read(REG_ICR_LO) & ICR_PENDING == 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

fn send(dest: u32, low: u32) {
    wait_idle();
    write(REG_ICR_HI, dest << 24);
    write(REG_ICR_LO, low);
    wait_idle();
}

/// INIT IPI (assert, then the level-triggered de-assert older CPUs want).
pub fn send_init(dest: u32) {
    send(dest, ICR_INIT | ICR_ASSERT | ICR_LEVEL);
    send(dest, ICR_INIT | ICR_LEVEL);
}

/// STARTUP IPI: the CPU starts in real mode at `page * 4096`.
pub fn send_startup(dest: u32, page: u8) {
    send(dest, ICR_STARTUP | ICR_ASSERT | u32::from(page));
}

/// An NMI to one CPU.
pub fn send_nmi(dest: u32) {
    send(dest, ICR_NMI | ICR_ASSERT);
}

/// An NMI to every CPU but this one.
pub fn send_nmi_all_but_self() {
    send(0, ICR_NMI | ICR_ASSERT | ICR_ALL_BUT_SELF);
}

/// A fixed-vector interrupt to one CPU.
pub fn send_fixed(dest: u32, vector: u8) {
    send(dest, ICR_FIXED | ICR_ASSERT | u32::from(vector));
}

/// Timer divide configuration: divide by 16.
const DIV_16: u32 = 0x3;
/// LVT timer: periodic mode.
const TIMER_PERIODIC: u32 = 1 << 17;
/// LVT: masked.
const LVT_MASKED: u32 = 1 << 16;

/// Starts the timer counting down from `u32::MAX` (masked, one-shot) for a
/// calibration: read [`timer_elapsed`] later.
pub fn timer_calibration_start() {
    write(REG_TIMER_DIV, DIV_16);
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_TIMER_INIT, u32::MAX);
}

/// Counts the timer went down since [`timer_calibration_start`].
pub fn timer_elapsed() -> u32 {
    u32::MAX - read(REG_TIMER_CUR)
}

/// Periodic timer interrupts on `vector` every `count` timer counts
/// (bus clock / 16).
pub fn timer_periodic(vector: u8, count: u32) {
    write(REG_TIMER_DIV, DIV_16);
    write(REG_LVT_TIMER, TIMER_PERIODIC | u32::from(vector));
    write(REG_TIMER_INIT, count.max(1));
}
