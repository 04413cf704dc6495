//! `bench` mode: the guest side of `cargo xtask bench` (issue 8).
//!
//! Under QEMU's `-icount shift=0` the TSC ticks once per guest instruction,
//! so an `rdtsc` delta around N calls is an exact, repeatable instruction
//! count. For every row, the unprobed call is measured first in the same
//! boot, then the row's probes are set and the same calls measured again;
//! the difference per call is the probe's cost. Traps are counted by the
//! trap dispatcher (`dispatch::INT3_COUNT`); every trap entry saves the FPU
//! state (`fxsave64`), so FPU saves per hit equal traps per hit. The timer
//! and COM2 lines are masked while measuring (interrupts stay enabled, as
//! in real probed code), and each row checks that the probed calls still
//! compute the unprobed results.
//!
//! Parameters come from QEMU's fw_cfg (`-fw_cfg name=opt/kdbg/bench-iterations,string=N`),
//! default [`DEFAULT_CALLS`]. Output, one line each, parsed by xtask:
//!
//! ```text
//! bench START calls=N batch=B
//! bench BEGIN row=NAME                 (host timestamps it: hits/s)
//! bench ROW row=NAME target=FN path=P calls=N base_insns=N insns=N traps=N ticks=N wrong=N hits=N missed=N produced=N dropped=N
//! bench NA row=NAME reason=TEXT...
//! bench PHASE row=NAME calls=N base=N whole=N to_first=N first_to_second=N after_last=N
//! bench SMP row=NAME cpus=N ...          (more than one CPU online: see bench/smp.rs)
//! bench DONE wrong=N
//! ```

mod fw_cfg;
mod measure;
mod phases;
mod rows;
mod smp;

use probes::{ExecPath, ProbeId};

use crate::exit::{ExitCode, qemu_exit};
use crate::println;
use measure::{BATCH, Sample, measure};
use rows::{MAX_PROBES, ROWS, Row};

/// Calls per row when fw_cfg does not say.
pub const DEFAULT_CALLS: u64 = 20_000;
/// The fw_cfg file holding the number of calls per row.
pub const FW_CFG_CALLS: &str = "opt/kdbg/bench-iterations";
/// Calls per phase split (at most).
const PHASE_CALLS: u64 = 1_000;

fn path_name(p: ExecPath) -> &'static str {
    match p {
        ExecPath::Emulated => "emulated",
        ExecPath::OutOfLine => "out-of-line",
        ExecPath::Boosted => "boosted",
        ExecPath::Optimized => "optimized",
    }
}

/// The probed instruction's execution path of a row's first kprobe-like probe.
fn row_path(ids: &[Option<ProbeId>; MAX_PROBES]) -> &'static str {
    ids.iter()
        .flatten()
        .filter_map(|id| probes::info(*id))
        .map(|i| path_name(i.path))
        .next()
        .unwrap_or("-")
}

/// Measures one row; returns the number of wrong results seen.
fn run_row(row: &Row, calls: u64) -> u64 {
    let base = measure(row.target, calls);
    probes::set_optimization(row.optimized);
    let ids = match (row.setup)() {
        Ok(ids) => ids,
        Err(reason) => {
            println!("bench NA row={} reason={reason}", row.name);
            return base.wrong;
        }
    };
    let ring0 = probes::commands::ring_stats();
    println!("bench BEGIN row={}", row.name);
    let s: Sample = measure(row.target, calls);
    let ring = probes::commands::ring_stats();
    let (mut hits, mut missed) = (0u64, 0u64);
    for id in ids.iter().flatten() {
        if let Some(i) = probes::info(*id) {
            hits += i.hits;
            missed += i.nmissed;
        }
    }
    hits += rows::gdb_hits();
    println!(
        "bench ROW row={} target={} path={} calls={} base_insns={} insns={} traps={} ticks={} wrong={} hits={} missed={} produced={} dropped={}",
        row.name,
        row.target.function(),
        row_path(&ids),
        s.calls,
        base.insns,
        s.insns,
        s.traps,
        s.ticks + base.ticks,
        s.wrong + base.wrong,
        hits,
        missed,
        ring.produced.wrapping_sub(ring0.produced),
        ring.dropped.wrapping_sub(ring0.dropped),
    );
    for id in ids.iter().flatten() {
        if probes::unregister(*id).is_err() {
            println!("bench NA row={} reason=unregister failed", row.name);
        }
    }
    rows::clear_gdb();
    probes::set_optimization(true);
    s.wrong + base.wrong
}

/// Runs every row and exits QEMU (success, or failure when a probed call
/// computed a wrong result).
pub fn run() -> ! {
    let calls = fw_cfg::number(FW_CFG_CALLS)
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CALLS);
    crate::host::init_probes();
    // Quiet machine: no timer ticks, no serial interrupts inside the windows.
    arch::pic::mask(arch::pit::IRQ);
    arch::pic::mask(arch::uart::COM2_IRQ);
    println!("bench START calls={calls} batch={BATCH}");
    let mut wrong = 0;
    for row in ROWS {
        wrong += run_row(row, calls);
    }
    phases::run(calls.min(PHASE_CALLS));
    wrong += smp::run(calls);
    println!("bench DONE wrong={wrong}");
    qemu_exit(if wrong == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
