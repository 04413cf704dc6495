//! Where the instructions of a hit go: handlers that stamp the TSC split
//! one probed call into "call -> first handler", "first -> second
//! handler" and "last handler -> back in the caller". Each part minus its
//! share of the unprobed call is the mechanism (trap entry, dispatch,
//! lookup, slot or emulation, trap exit).

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

use arch::TrapFrame;
use probes::{At, Kprobe, Kretprobe, Probe, ProbeId, RetCtx};

use crate::println;
use crate::workloads::bench_target;

static FIRST: AtomicU64 = AtomicU64::new(0);
static SECOND: AtomicU64 = AtomicU64::new(0);

fn stamp_first(_: &Probe, _: &mut TrapFrame) -> bool {
    FIRST.store(arch::cpu::rdtsc(), Ordering::Relaxed);
    false
}

fn stamp_second(_: &Probe, _: &mut TrapFrame) {
    SECOND.store(arch::cpu::rdtsc(), Ordering::Relaxed);
}

fn stamp_entry(_: &mut RetCtx<'_>, _: &mut TrapFrame) -> i32 {
    FIRST.store(arch::cpu::rdtsc(), Ordering::Relaxed);
    0
}

fn stamp_return(_: &mut RetCtx<'_>, _: &mut TrapFrame) -> i32 {
    SECOND.store(arch::cpu::rdtsc(), Ordering::Relaxed);
    0
}

/// Sums over the calls, in guest instructions.
#[derive(Default)]
struct Split {
    whole: u64,
    to_first: u64,
    first_to_second: u64,
    after_last: u64,
}

fn split(calls: u64, stamps: u8) -> Split {
    let mut s = Split::default();
    for i in 0..calls {
        let t0 = arch::cpu::rdtsc();
        black_box(bench_target(black_box(i)));
        let t3 = arch::cpu::rdtsc();
        let (t1, t2) = (
            FIRST.load(Ordering::Relaxed),
            SECOND.load(Ordering::Relaxed),
        );
        s.whole += t3.wrapping_sub(t0);
        if stamps >= 1 {
            s.to_first += t1.wrapping_sub(t0);
        }
        if stamps == 2 {
            s.first_to_second += t2.wrapping_sub(t1);
            s.after_last += t3.wrapping_sub(t2);
        } else if stamps == 1 {
            s.after_last += t3.wrapping_sub(t1);
        }
    }
    s
}

fn print(row: &str, calls: u64, base: &Split, s: &Split) {
    println!(
        "bench PHASE row={row} calls={calls} base={} whole={} to_first={} first_to_second={} after_last={}",
        base.whole, s.whole, s.to_first, s.first_to_second, s.after_last
    );
}

fn one(
    name: &str,
    calls: u64,
    stamps: u8,
    register: impl FnOnce() -> Result<ProbeId, probes::ProbeError>,
) {
    let base = split(calls, 0);
    match register() {
        Ok(id) => {
            let s = split(calls, stamps);
            let _ = probes::unregister(id);
            print(name, calls, &base, &s);
        }
        Err(_) => println!("bench NA row={name} reason=registration refused"),
    }
}

/// Prints `bench PHASE` lines for the int3 (pre + post), boosted (pre) and
/// kretprobe (entry + return handler) paths.
pub fn run(calls: u64) {
    let at = At::Symbol("bench_target", 0);
    let kp = |post: bool| Kprobe {
        pre_handler: Some(stamp_first),
        post_handler: if post { Some(stamp_second) } else { None },
        fault_handler: None,
        data: 0,
    };
    one("kprobe_int3", calls, 2, || {
        probes::register_kprobe(at, kp(true))
    });
    one("kprobe_boosted", calls, 1, || {
        probes::register_kprobe(at, kp(false))
    });
    let rp = Kretprobe {
        handler: Some(stamp_return),
        entry_handler: Some(stamp_entry),
        ..Kretprobe::default()
    };
    one("kretprobe", calls, 2, || probes::register_kretprobe(at, rp));
}
