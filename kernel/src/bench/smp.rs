//! The guest table's SMP rows (`cargo xtask bench --smp N`): a probe hit on
//! every CPU at once, against the same probe hit on one CPU, in one boot.
//!
//! Under `-icount` QEMU runs the vCPUs round robin in one host thread and
//! the TSC is one virtual clock that counts the instructions of *every*
//! vCPU. So a window opened and closed on CPU 0 while all CPUs work counts
//! all their instructions, provided no CPU executes anything else meanwhile:
//! CPU 0 hands each other CPU its share with a call-function IPI (the other
//! CPUs sit in `hlt`), runs its own share, then waits in `hlt` (not a spin
//! loop, which would count) until the last CPU to finish wakes it with an
//! IPI. The IPIs' own instructions are in the unprobed window too and cancel
//! out: per hit = (probed window - unprobed window) / (CPUs x calls).
//!
//! What this can see: extra work on the hit path when several CPUs hit at
//! once (a retried compare-and-swap, a spin on a lock, a pool running dry).
//! What it cannot see: cache-line contention (under TCG an instruction costs
//! the same whoever wrote the line last). Output, parsed by xtask:
//!
//! ```text
//! bench SMP row=NAME cpus=N calls=C one_base=I one=I all_base=I all=I hits=H missed=M wrong=W interleaved=0|1
//! bench SMPNA row=NAME reason=TEXT...
//! ```

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

use probes::ProbeId;

use super::rows::{MAX_PROBES, ROWS};
use crate::println;
use crate::workloads;

/// The rows measured on every CPU at once (names of [`ROWS`]).
const SMP_ROWS: &[&str] = &["kprobe_int3", "kprobe_boosted", "jprobe", "kretprobe"];

/// Calls between two `pause`s of a share.
const SLICE: u64 = 16;

/// CPUs that finished their share of the current window.
static FINISHED: AtomicU64 = AtomicU64::new(0);
/// CPUs taking part in the current window.
static TAKING_PART: AtomicU64 = AtomicU64::new(0);
/// Shares that computed a wrong result.
static WRONG: AtomicU64 = AtomicU64::new(0);
/// Each CPU's TSC when its share of the last window started and ended.
static SPAN: [[AtomicU64; 2]; arch::percpu::MAX_CPUS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; arch::percpu::MAX_CPUS];

/// The sum of `3i + 1` for `i` in `0..n` (what `hot_loop(n)` returns).
fn sum_3i_plus_1(n: u64) -> u64 {
    n.wrapping_mul(n.wrapping_sub(1)) / 2 * 3 + n
}

/// One CPU's share: `calls` calls of `bench_target`. The last CPU to finish
/// wakes CPU 0 (a call-function IPI with no request: it only ends `hlt`).
fn share(calls: u64) {
    let span = SPAN.get(arch::percpu::cpu_id());
    if let Some(s) = span {
        s[0].store(arch::cpu::rdtsc(), Ordering::Relaxed);
    }
    let mut left = calls;
    while left > 0 {
        let n = left.min(SLICE);
        if workloads::hot_loop(black_box(n)) != sum_3i_plus_1(n) {
            WRONG.fetch_add(1, Ordering::Relaxed);
        }
        left -= n;
        // `pause`: QEMU's x86 TCG ends the vCPU's turn there ("let another
        // CPU run"), so under -icount's round robin the CPUs' shares
        // interleave every SLICE calls instead of running one after the
        // other in turns of millions of instructions.
        core::hint::spin_loop();
    }
    if let Some(s) = span {
        s[1].store(arch::cpu::rdtsc(), Ordering::Relaxed);
    }
    let done = FINISHED.fetch_add(1, Ordering::AcqRel) + 1;
    if done == TAKING_PART.load(Ordering::Acquire) && arch::percpu::cpu_id() != 0 {
        arch::apic::send_fixed(arch::percpu::apic_id(0), crate::smp::CALL_VECTOR as u8);
    }
}

/// Guest instructions of every CPU while `cpus` CPUs (CPU 0 and the next
/// online ones) each make `calls` calls. Runs on CPU 0.
fn window(cpus: usize, calls: u64) -> u64 {
    let others = other_cpus(cpus.saturating_sub(1));
    FINISHED.store(0, Ordering::Release);
    TAKING_PART.store(others.len() as u64 + 1, Ordering::Release);
    let t0 = arch::cpu::rdtsc();
    for &c in others.as_slice() {
        if !crate::smp::call_on(c, share, calls, false) {
            // Counted as finished so the wait below ends; the row is wrong.
            WRONG.fetch_add(1, Ordering::Relaxed);
            FINISHED.fetch_add(1, Ordering::AcqRel);
        }
    }
    share(calls);
    loop {
        arch::cpu::disable_interrupts();
        if FINISHED.load(Ordering::Acquire) >= TAKING_PART.load(Ordering::Acquire) {
            break;
        }
        // `sti; hlt`: an IPI that arrives after the check still ends the hlt.
        arch::cpu::enable_interrupts_and_halt();
    }
    let t1 = arch::cpu::rdtsc();
    arch::cpu::enable_interrupts();
    t1.wrapping_sub(t0)
}

/// Up to `want` online CPUs other than this one, lowest first (no heap).
struct Others {
    cpus: [usize; arch::percpu::MAX_CPUS],
    n: usize,
}

impl Others {
    fn len(&self) -> usize {
        self.n
    }

    fn as_slice(&self) -> &[usize] {
        self.cpus.get(..self.n).unwrap_or(&[])
    }
}

fn other_cpus(want: usize) -> Others {
    let mut o = Others {
        cpus: [0; arch::percpu::MAX_CPUS],
        n: 0,
    };
    for c in arch::percpu::others().take(want) {
        if let Some(slot) = o.cpus.get_mut(o.n) {
            *slot = c;
            o.n += 1;
        }
    }
    o
}

/// Whether every CPU of the last window was inside its share at one moment
/// (the latest start before the earliest end): the shares ran interleaved,
/// not one after the other.
fn interleaved(cpus: usize) -> bool {
    let (mut latest_start, mut earliest_end) = (0u64, u64::MAX);
    for s in SPAN.iter().take(cpus) {
        latest_start = latest_start.max(s[0].load(Ordering::Relaxed));
        earliest_end = earliest_end.min(s[1].load(Ordering::Relaxed));
    }
    latest_start < earliest_end
}

fn hits_of(ids: &[Option<ProbeId>; MAX_PROBES]) -> (u64, u64) {
    ids.iter()
        .flatten()
        .filter_map(|id| probes::info(*id))
        .fold((0, 0), |(h, m), i| (h + i.hits, m + i.nmissed))
}

/// Runs the SMP rows when more than one CPU is online; returns the number of
/// wrong results.
pub fn run(calls: u64) -> u64 {
    let cpus = arch::percpu::online_count();
    if cpus <= 1 {
        return 0;
    }
    // CPU 0 runs the windows; the others must be idle in `hlt`.
    if arch::percpu::cpu_id() != 0 {
        println!("bench SMPNA row=all reason=the bench does not run on CPU 0");
        return 0;
    }
    let mut wrong_total = 0;
    for name in SMP_ROWS {
        let Some(row) = ROWS.iter().find(|r| r.name == *name) else {
            continue;
        };
        WRONG.store(0, Ordering::Relaxed);
        let one_base = window(1, calls);
        let all_base = window(cpus, calls);
        probes::set_optimization(row.optimized);
        let ids = match (row.setup)() {
            Ok(ids) => ids,
            Err(reason) => {
                println!("bench SMPNA row={name} reason={reason}");
                probes::set_optimization(true);
                continue;
            }
        };
        let one = window(1, calls);
        let all = window(cpus, calls);
        let together = u8::from(interleaved(cpus));
        let (hits, missed) = hits_of(&ids);
        for id in ids.iter().flatten() {
            if probes::unregister(*id).is_err() {
                println!("bench SMPNA row={name} reason=unregister failed");
            }
        }
        probes::set_optimization(true);
        let wrong = WRONG.load(Ordering::Relaxed);
        wrong_total += wrong;
        println!(
            "bench SMP row={name} cpus={cpus} calls={calls} one_base={one_base} one={one} all_base={all_base} all={all} hits={hits} missed={missed} wrong={wrong} interleaved={together}"
        );
    }
    wrong_total
}
