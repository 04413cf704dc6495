//! The periodic timer: PIT channel 0 at [`HZ`], counted in [`ticks`]. Each
//! tick ends in the scheduler (preemption).

use core::sync::atomic::{AtomicU64, Ordering};
use noprobe::noprobe;

/// Timer interrupts per second.
pub const HZ: u64 = 100;

static TICKS: AtomicU64 = AtomicU64::new(0);

/// Starts the PIT and unmasks its IRQ.
pub fn start() {
    // SAFETY: the PIT is owned by this module; programmed once during init.
    unsafe { arch::pit::start_periodic(HZ as u32) };
    arch::pic::unmask(arch::pit::IRQ);
}

/// Timer interrupts since boot.
#[noprobe]
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Seconds since the timer started (tick resolution).
pub fn uptime_secs_f() -> (u64, u64) {
    let t = ticks();
    (t / HZ, (t % HZ) * (1000 / HZ))
}

/// Called from the timer IRQ handler.
#[noprobe]
pub fn on_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}
