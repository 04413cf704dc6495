//! Measurement loops: exact guest-instruction counts of batches of calls
//! (`rdtsc` deltas under `-icount shift=0`), with the traps taken and the
//! interrupts seen in the same window.
//!
//! Calls run in batches of [`BATCH`]; between batches (outside the timed
//! window) the event ring is drained so capture rows measure recording,
//! never the cheaper "ring full, drop" path.

use core::hint::black_box;
use core::sync::atomic::Ordering;

use crate::trap::INT3_COUNT;
use crate::workloads;

/// Calls per timed batch (well below what fills one CPU's event ring).
pub const BATCH: u64 = 16;

/// The path `bench_sys_open_loop` opens (exists: `sys_open` returns a descriptor).
const OPEN_PATH: &[u8] = b"/dev/null\0";

/// The function a row calls (and probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `bench_target(x) = 3x + 1` through `hot_loop`.
    Hot,
    /// `sys_open("/dev/null", 0, 0)` through [`bench_sys_open_loop`].
    Open,
}

impl Target {
    /// The probed function's name.
    pub fn function(self) -> &'static str {
        match self {
            Target::Hot => "bench_target",
            Target::Open => "sys_open",
        }
    }

    /// Runs `n` calls; returns how many computed a wrong result.
    fn batch(self, n: u64) -> u64 {
        match self {
            Target::Hot => {
                let got = workloads::hot_loop(black_box(n));
                // sum of 3i + 1 for i in 0..n
                let want = n.wrapping_mul(n.wrapping_sub(1)) / 2 * 3 + n;
                u64::from(got != want)
            }
            Target::Open => bench_sys_open_loop(black_box(n)),
        }
    }
}

/// `n` calls of `sys_open("/dev/null")`; returns how many failed.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn bench_sys_open_loop(n: u64) -> u64 {
    let mut failed = 0;
    for _ in 0..n {
        // SAFETY: OPEN_PATH is a NUL-terminated static string.
        let fd = unsafe { workloads::sys_open(black_box(OPEN_PATH.as_ptr()), 0, 0) };
        failed += u64::from(fd < 0);
    }
    failed
}

/// What one measurement saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub calls: u64,
    /// Guest instructions inside the timed windows.
    pub insns: u64,
    /// #BP traps (each trap entry also saves the FPU state: `fxsave64`).
    pub traps: u64,
    /// Timer ticks seen (0 when the timer is masked, as it should be).
    pub ticks: u64,
    /// Calls or batches that computed a wrong result.
    pub wrong: u64,
}

/// Times `calls` calls of `target`.
pub fn measure(target: Target, calls: u64) -> Sample {
    let mut s = Sample {
        calls,
        ..Sample::default()
    };
    let traps0 = INT3_COUNT.load(Ordering::Relaxed);
    let ticks0 = crate::timer::ticks();
    let mut left = calls;
    while left > 0 {
        let n = left.min(BATCH);
        let t0 = arch::cpu::rdtsc();
        let wrong = target.batch(n);
        let t1 = arch::cpu::rdtsc();
        s.insns += t1.wrapping_sub(t0);
        s.wrong += wrong;
        left -= n;
        probes::monitor::drain(&mut |_| {});
    }
    s.traps = INT3_COUNT.load(Ordering::Relaxed).wrapping_sub(traps0);
    s.ticks = crate::timer::ticks().wrapping_sub(ticks0);
    s
}
