//! Selftest suite `jprobe`: handlers with the probed function's prototype
//! (seed 001), called from the trap path with copies of the arguments.

use core::sync::atomic::{AtomicU64, Ordering};

use probes::{At, ProbeError, ProbeId};

use super::probe_util::{check, unreg};
use crate::workloads::{self, TaskRegs};

crate::probe_suite!(
    "jprobe",
    spawn_task_six_arguments,
    sum8_eight_arguments,
    handler_cannot_corrupt_arguments,
    one_jprobe_per_function,
    function_entry_only,
);

fn reg(func: &str, handler: usize) -> Result<ProbeId, &'static str> {
    probes::register_jprobe(At::Symbol(func, 0), handler)
        .map_err(|_| "register_jprobe refused a function entry")
}

static ARGS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static CALLS: AtomicU64 = AtomicU64::new(0);

fn seen() -> [u64; 8] {
    let mut a = [0u64; 8];
    for (d, s) in a.iter_mut().zip(ARGS.iter()) {
        *d = s.load(Ordering::Relaxed);
    }
    a
}

/// The 2004 jprobe example's `jdo_fork`: same prototype as `spawn_task`.
extern "C" fn jspawn_task(
    clone_flags: u64,
    stack_start: u64,
    regs: *const TaskRegs,
    stack_size: u64,
    parent_tid: *mut i32,
    child_tid: *mut i32,
) -> i64 {
    CALLS.fetch_add(1, Ordering::Relaxed);
    let v = [
        clone_flags,
        stack_start,
        regs as u64,
        stack_size,
        parent_tid as u64,
        child_tid as u64,
    ];
    for (s, x) in ARGS.iter().zip(v) {
        s.store(x, Ordering::Relaxed);
    }
    0
}

fn spawn_task_six_arguments() -> Result<(), &'static str> {
    CALLS.store(0, Ordering::Relaxed);
    let id = reg("spawn_task", jspawn_task as *const () as usize)?;
    let regs = TaskRegs {
        ip: 0x1234,
        sp: 0x5678,
        flags: 0x202,
    };
    let (ret, ptid, _) =
        workloads::call_spawn_task(0x11 | workloads::CLONE_PARENT_SETTID, 0x7000, &regs, 0x2000);
    unreg(id)?;
    let a = seen();
    check(
        CALLS.load(Ordering::Relaxed) == 1,
        "the jprobe handler did not run once",
    )?;
    check(
        ret >= 100 && i64::from(ptid) == ret,
        "spawn_task computed a different result",
    )?;
    check(
        a[0] == 0x11 | workloads::CLONE_PARENT_SETTID,
        "clone_flags wrong",
    )?;
    check(a[1] == 0x7000, "stack_start wrong")?;
    check(a[2] == &regs as *const TaskRegs as u64, "regs wrong")?;
    check(a[3] == 0x2000, "stack_size wrong")?;
    check(a[4] != 0 && a[5] != 0 && a[4] != a[5], "tid pointers wrong")
}

#[allow(clippy::too_many_arguments)]
extern "C" fn jsum8(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64) -> u64 {
    CALLS.fetch_add(1, Ordering::Relaxed);
    for (s, x) in ARGS.iter().zip([a, b, c, d, e, f, g, h]) {
        s.store(x, Ordering::Relaxed);
    }
    0
}

fn sum8_eight_arguments() -> Result<(), &'static str> {
    CALLS.store(0, Ordering::Relaxed);
    let id = reg("sum8", jsum8 as *const () as usize)?;
    let r = workloads::call_sum8(11, 12, 13, 14, 15, 16, 17, 18);
    unreg(id)?;
    check(
        CALLS.load(Ordering::Relaxed) == 1,
        "the jprobe handler did not run once",
    )?;
    check(
        seen() == [11, 12, 13, 14, 15, 16, 17, 18],
        "the handler did not see all eight arguments (two on the stack)",
    )?;
    check(
        r == 11 + 2 * 12 + 3 * 13 + 4 * 14 + 5 * 15 + 6 * 16 + 7 * 17 + 8 * 18,
        "sum8 computed a different result",
    )
}

/// Writes every argument it got (registers and the stack copy).
#[allow(clippy::too_many_arguments)]
extern "C" fn jsum8_scribble(
    mut a: u64,
    mut b: u64,
    c: u64,
    d: u64,
    e: u64,
    f: u64,
    mut g: u64,
    mut h: u64,
) -> u64 {
    CALLS.fetch_add(1, Ordering::Relaxed);
    a = core::hint::black_box(a ^ 0xffff);
    b = core::hint::black_box(b + 1000);
    g = core::hint::black_box(g * 77);
    h = core::hint::black_box(h + 99);
    // Write through the address of the stack arguments as well.
    let pg = core::hint::black_box(&mut g as *mut u64);
    // SAFETY: a local's address.
    unsafe { pg.write_volatile(0xdead) };
    a ^ b ^ c ^ d ^ e ^ f ^ g ^ h
}

fn handler_cannot_corrupt_arguments() -> Result<(), &'static str> {
    CALLS.store(0, Ordering::Relaxed);
    // black_box: sum8 is pure, the compiler would reuse one result for both calls.
    let bb = core::hint::black_box;
    let native = workloads::sum8(bb(1), bb(2), bb(3), bb(4), bb(5), bb(6), bb(7), bb(8));
    let id = reg("sum8", jsum8_scribble as *const () as usize)?;
    let r = workloads::call_sum8(bb(1), bb(2), bb(3), bb(4), bb(5), bb(6), bb(7), bb(8));
    unreg(id)?;
    check(
        CALLS.load(Ordering::Relaxed) == 1,
        "the jprobe handler did not run once",
    )?;
    check(
        r == native,
        "a handler writing its arguments changed what the probed function computed",
    )
}

fn one_jprobe_per_function() -> Result<(), &'static str> {
    let id = reg("sum8", jsum8 as *const () as usize)?;
    let second = probes::register_jprobe(At::Symbol("sum8", 0), jsum8 as *const () as usize);
    unreg(id)?;
    check(
        second == Err(ProbeError::JprobeExists),
        "a second jprobe on one function was not refused",
    )
}

fn function_entry_only() -> Result<(), &'static str> {
    let sym = crate::kallsyms::find("sum8").ok_or("sum8 missing from kallsyms")?;
    let mut refused = true;
    for off in 1..sym.size.min(16) {
        match probes::register_jprobe(At::Symbol("sum8", off), jsum8 as *const () as usize) {
            Err(ProbeError::NotFunctionEntry) => {}
            Ok(id) => {
                let _ = probes::unregister(id);
                refused = false;
            }
            Err(_) => refused = false,
        }
    }
    check(refused, "a jprobe off the function entry was not refused")
}
