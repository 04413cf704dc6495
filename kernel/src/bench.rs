//! `bench` mode: guest-side measurements for `cargo xtask bench` (issue 8).
//! With `-icount shift=0` the TSC counts guest instructions, so a delta of
//! `rdtsc` around N calls is an exact instruction count.
//!
//! Output lines: `bench NAME insns_per_call=N calls=N`, then `bench: done`.

use crate::exit::{ExitCode, qemu_exit};
use crate::println;
use crate::workloads::hot_loop;

/// Calls per measurement.
pub const CALLS: u64 = 100_000;

/// Guest instructions (with icount) per call of `bench_target` through `hot_loop`.
pub fn measure_baseline() -> u64 {
    let t0 = arch::cpu::rdtsc();
    core::hint::black_box(hot_loop(core::hint::black_box(CALLS)));
    let t1 = arch::cpu::rdtsc();
    (t1 - t0) / CALLS
}

pub fn run() -> ! {
    let per_call = measure_baseline();
    println!("bench baseline insns_per_call={per_call} calls={CALLS}");
    println!("bench: done");
    qemu_exit(ExitCode::Success)
}
