//! Measurement loops: exact guest-instruction counts of batches of calls
//! (`rdtsc` deltas under `-icount shift=0`), with the traps taken and the
//! interrupts seen in the same window.
//!
//! Calls run in batches of [`BATCH`]; between batches (outside the timed
//! window) the event ring is drained so capture rows measure recording,
//! never the cheaper "ring full, drop" path.

use core::arch::global_asm;
use core::hint::black_box;
use core::sync::atomic::Ordering;

use crate::dispatch::INT3_COUNT;
use crate::workloads;

/// Calls per timed batch (well below what fills one CPU's event ring).
pub const BATCH: u64 = 16;

/// The path `bench_sys_open_loop` opens (exists: `sys_open` returns a descriptor).
const OPEN_PATH: &[u8] = b"/dev/null\0";

// `bench_target` again, but starting with an instruction the probe core
// never boosts (privileged: `mov rax, cr2`), so a probe without a post
// handler still runs it out of line with an int3 tail: Linux's two-trap
// "int3 probe inside a function".
global_asm!(
    ".pushsection .text.kdbg_bench, \"ax\", @progbits",
    ".globl bench_unboosted",
    ".type bench_unboosted, @function",
    "bench_unboosted:",
    "mov rax, cr2",
    "lea rax, [rdi + rdi * 2 + 1]",
    "ret",
    ".size bench_unboosted, . - bench_unboosted",
    ".popsection",
);

unsafe extern "C" {
    /// `3x + 1`, first instruction privileged (see the asm above).
    fn bench_unboosted(x: u64) -> u64;
}

/// The function a row calls (and probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `bench_target(x) = 3x + 1` through `hot_loop`.
    Hot,
    /// `bench_unboosted(x) = 3x + 1` through [`bench_unboosted_loop`].
    Unboosted,
    /// `sys_open("/dev/null", 0, 0)` through [`bench_sys_open_loop`].
    Open,
}

impl Target {
    /// The probed function's name.
    pub fn function(self) -> &'static str {
        match self {
            Target::Hot => "bench_target",
            Target::Unboosted => "bench_unboosted",
            Target::Open => "sys_open",
        }
    }

    /// Runs `n` calls; returns how many computed a wrong result.
    fn batch(self, n: u64) -> u64 {
        match self {
            Target::Hot => u64::from(workloads::hot_loop(black_box(n)) != sum_3i_plus_1(n)),
            Target::Unboosted => u64::from(bench_unboosted_loop(black_box(n)) != sum_3i_plus_1(n)),
            Target::Open => bench_sys_open_loop(black_box(n)),
        }
    }
}

/// The sum of `3i + 1` for `i` in `0..n` (what the loops over `3x + 1` return).
fn sum_3i_plus_1(n: u64) -> u64 {
    n.wrapping_mul(n.wrapping_sub(1)) / 2 * 3 + n
}

/// `n` calls of `bench_unboosted(i)`; returns the sum of the results.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn bench_unboosted_loop(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        // SAFETY: a leaf asm function of one integer argument; reading CR2
        // is harmless in ring 0.
        acc = acc.wrapping_add(unsafe { bench_unboosted(black_box(i)) });
    }
    acc
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
        probes::commands::drain(&mut |_| {});
    }
    s.traps = INT3_COUNT.load(Ordering::Relaxed).wrapping_sub(traps0);
    s.ticks = crate::timer::ticks().wrapping_sub(ticks0);
    s
}
