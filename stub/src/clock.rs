//! The TSC clock the host needs to turn event timestamps into seconds:
//! the TSC at stub start (early boot) and its rate, calibrated once at
//! start against the PIT's own counter (channel 2), or, without a PIT,
//! measured against the kernel's timer ticks (which drift when timer
//! interrupts are late or lost, as under a loaded host).

use core::sync::atomic::{AtomicU64, Ordering};

use probes::Host;

static START_TSC: AtomicU64 = AtomicU64::new(0);
static START_TICKS: AtomicU64 = AtomicU64::new(0);
static PIT_TSC_HZ: AtomicU64 = AtomicU64::new(0);

use proto::reply::TscSource as Source;

/// Remembers the TSC and the tick count now (at `init`).
pub fn start(host: &dyn Host) {
    START_TICKS.store(host.timer().0, Ordering::Relaxed);
    START_TSC.store(arch::cpu::rdtsc(), Ordering::Relaxed);
    // SAFETY: the stub starts during kernel init, before anything else
    // could use PIT channel 2 or the speaker gate (the kernel's timer is
    // channel 0).
    let hz = unsafe { arch::pit::calibrate_tsc(10) };
    PIT_TSC_HZ.store(hz, Ordering::Relaxed);
}

/// (TSC ticks per second, TSC at start, where the rate comes from). The
/// PIT calibration when it worked; else the tick measurement, which is 0
/// until at least half a second of timer ticks has passed.
pub fn tsc(host: &dyn Host) -> (u64, u64, Source) {
    let t0 = START_TSC.load(Ordering::Relaxed);
    let pit = PIT_TSC_HZ.load(Ordering::Relaxed);
    if pit != 0 {
        return (pit, t0, Source::Pit);
    }
    let (ticks, hz) = host.timer();
    let tsc = arch::cpu::rdtsc();
    let r = rate(t0, START_TICKS.load(Ordering::Relaxed), tsc, ticks, hz);
    (
        r,
        t0,
        if r == 0 {
            Source::Unknown
        } else {
            Source::Ticks
        },
    )
}

/// TSC rate from two (tsc, ticks) samples; 0 when unmeasurable.
pub fn rate(tsc0: u64, ticks0: u64, tsc1: u64, ticks1: u64, hz: u64) -> u64 {
    let dt = ticks1.saturating_sub(ticks0);
    if hz == 0 || dt < hz / 2 || dt == 0 {
        return 0;
    }
    let cycles = u128::from(tsc1.saturating_sub(tsc0));
    u64::try_from(cycles * u128::from(hz) / u128::from(dt)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_from_samples() {
        assert_eq!(rate(0, 0, 2_000_000_000, 100, 100), 2_000_000_000);
        assert_eq!(rate(1000, 10, 1000 + 500_000_000, 60, 100), 1_000_000_000);
        assert_eq!(rate(0, 0, 1_000, 10, 100), 0, "too short");
        assert_eq!(rate(0, 0, 1_000, 10, 0), 0, "no timer");
    }
}
