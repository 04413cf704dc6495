//! The rows of the guest table: which probes each row sets on its target,
//! with handlers that do nothing (the mechanism's cost) or that record an
//! event into the ring (the capture probes the shell sets).

use core::sync::atomic::{AtomicU64, Ordering};

use arch::TrapFrame;
use probes::{At, Kprobe, Kretprobe, Probe, ProbeId, RetCtx, commands};
use proto::CaptureSpec;

use super::measure::Target;

/// Most probes a row sets.
pub const MAX_PROBES: usize = 2;

/// One row of the table.
pub struct Row {
    /// Machine name (`bench ROW row=NAME`), stable for xtask and bench.json.
    pub name: &'static str,
    pub target: Target,
    /// Sets the row's probes; `Err(reason)` makes the row "n/a (reason)".
    pub setup: fn() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str>,
    /// Jump optimization on while the row's probes are set (the int3 rows
    /// measure the trap paths with it off).
    pub optimized: bool,
}

/// Every row, in table order. (The unprobed call is measured before each
/// row and printed with it; it is also the table's first row.)
pub static ROWS: &[Row] = &[
    Row {
        name: "kprobe_int3",
        target: Target::Hot,
        setup: kprobe_int3,
        optimized: false,
    },
    Row {
        name: "kprobe_boosted",
        target: Target::Hot,
        setup: kprobe_boosted,
        optimized: false,
    },
    Row {
        name: "kprobe_emulated",
        target: Target::Hot,
        setup: kprobe_emulated,
        optimized: false,
    },
    Row {
        name: "jprobe",
        target: Target::Hot,
        setup: jprobe,
        optimized: false,
    },
    Row {
        name: "kretprobe",
        target: Target::Hot,
        setup: kretprobe,
        optimized: false,
    },
    Row {
        name: "kprobe_kretprobe",
        target: Target::Hot,
        setup: kprobe_kretprobe,
        optimized: false,
    },
    Row {
        name: "jprobe_kretprobe",
        target: Target::Hot,
        setup: jprobe_kretprobe,
        optimized: false,
    },
    Row {
        name: "capture_kprobe",
        target: Target::Hot,
        setup: capture_kprobe,
        optimized: false,
    },
    Row {
        name: "capture_kprobe_int3",
        target: Target::Unboosted,
        setup: capture_kprobe_int3,
        optimized: false,
    },
    Row {
        name: "capture_args6",
        target: Target::Hot,
        setup: capture_args6,
        optimized: false,
    },
    Row {
        name: "capture_string",
        target: Target::Open,
        setup: capture_string,
        optimized: false,
    },
    Row {
        name: "capture_return",
        target: Target::Hot,
        setup: capture_return,
        optimized: false,
    },
    Row {
        name: "pred_true",
        target: Target::Hot,
        setup: pred_true,
        optimized: false,
    },
    Row {
        name: "pred_false",
        target: Target::Hot,
        setup: pred_false,
        optimized: false,
    },
    Row {
        name: "agg_count",
        target: Target::Hot,
        setup: agg_count,
        optimized: false,
    },
    Row {
        name: "agg_hist",
        target: Target::Hot,
        setup: agg_hist,
        optimized: false,
    },
    Row {
        name: "cond_false",
        target: Target::Hot,
        setup: cond_false,
        optimized: false,
    },
    Row {
        name: "cond_false_load",
        target: Target::Hot,
        setup: cond_false_load,
        optimized: false,
    },
    Row {
        name: "kprobe_optimized",
        target: Target::Hot,
        setup: kprobe_boosted,
        optimized: true,
    },
    Row {
        name: "capture_kprobe_optimized",
        target: Target::Hot,
        setup: capture_kprobe,
        optimized: true,
    },
    Row {
        name: "kretprobe_optimized",
        target: Target::Hot,
        setup: kretprobe,
        optimized: true,
    },
    Row {
        name: "capture_return_optimized",
        target: Target::Hot,
        setup: capture_return,
        optimized: true,
    },
];

const HOT: &str = "bench_target";

fn empty_pre(_: &Probe, _: &mut TrapFrame) -> bool {
    false
}

fn empty_post(_: &Probe, _: &mut TrapFrame) {}

fn empty_ret(_: &mut RetCtx<'_>, _: &mut TrapFrame) -> i32 {
    0
}

/// The jprobe handler: `bench_target`'s prototype, does nothing.
extern "C" fn jbench_target(_x: u64) -> u64 {
    0
}

fn one(
    r: Result<ProbeId, probes::ProbeError>,
    what: &'static str,
) -> Result<ProbeId, &'static str> {
    r.map_err(|_| what)
}

fn kprobe_at(offset: u64, post: bool) -> Result<ProbeId, &'static str> {
    let kp = Kprobe {
        pre_handler: Some(empty_pre),
        post_handler: if post { Some(empty_post) } else { None },
        fault_handler: None,
        data: 0,
    };
    one(
        probes::register_kprobe(At::Symbol(HOT, offset), kp),
        "register_kprobe refused bench_target",
    )
}

fn jprobe_at() -> Result<ProbeId, &'static str> {
    one(
        probes::register_jprobe(At::Symbol(HOT, 0), jbench_target as *const () as usize),
        "register_jprobe refused bench_target",
    )
}

fn kretprobe_at() -> Result<ProbeId, &'static str> {
    let rp = Kretprobe {
        handler: Some(empty_ret),
        ..Kretprobe::default()
    };
    one(
        probes::register_kretprobe(At::Symbol(HOT, 0), rp),
        "register_kretprobe refused bench_target",
    )
}

/// pre + post handler on the first instruction (`lea`, out of line): int3,
/// the copy in its slot, a second int3 for the post handler.
fn kprobe_int3() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    Ok([Some(kprobe_at(0, true)?), None])
}

/// pre handler only on the first instruction: boosted (slot + jmp back).
fn kprobe_boosted() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    Ok([Some(kprobe_at(0, false)?), None])
}

/// pre handler on the final `ret` (emulated in the trap handler).
fn kprobe_emulated() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let f = crate::kallsyms::find(HOT).ok_or("bench_target missing from kallsyms")?;
    let last = f.start + f.size.saturating_sub(1);
    let mut byte = [0u8; 1];
    if arch::mem::read(last, &mut byte).is_err() || byte != [0xc3] {
        return Err("bench_target does not end in a one-byte ret");
    }
    Ok([Some(kprobe_at(last - f.start, false)?), None])
}

fn jprobe() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    Ok([Some(jprobe_at()?), None])
}

fn kretprobe() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    Ok([Some(kretprobe_at()?), None])
}

fn kprobe_kretprobe() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let k = kprobe_at(0, false)?;
    match kretprobe_at() {
        Ok(r) => Ok([Some(k), Some(r)]),
        Err(e) => {
            let _ = probes::unregister(k);
            Err(e)
        }
    }
}

fn jprobe_kretprobe() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let j = jprobe_at()?;
    match kretprobe_at() {
        Ok(r) => Ok([Some(j), Some(r)]),
        Err(e) => {
            let _ = probes::unregister(j);
            Err(e)
        }
    }
}

/// The stub's `monitor kprobe`: one event (probe, CPU, task, TSC, ip and
/// the argument registers) per hit: Linux's "kprobe trace event" row.
fn capture_kprobe() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    Ok([
        Some(one(
            commands::kprobe(At::Symbol(HOT, 0)),
            "commands::kprobe refused bench_target",
        )?),
        None,
    ])
}

/// The same on an instruction that is never boosted: int3, the copy in its
/// slot, an int3 tail (Linux's two-trap row with an event recorded).
fn capture_kprobe_int3() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let id = one(
        commands::kprobe(At::Symbol("bench_unboosted", 0)),
        "commands::kprobe refused bench_unboosted",
    )?;
    Ok([Some(id), None])
}

/// The stub's `monitor jprobe`: an entry event with the six argument registers.
fn capture_args6() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let id = one(
        commands::jprobe(At::Symbol(HOT, 0), CaptureSpec::default()),
        "commands::jprobe refused bench_target",
    )?;
    Ok([Some(id), None])
}

/// An entry capture of `sys_open` with one string fetch (its path).
fn capture_string() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let spec = CaptureSpec::parse("fetch=str64@arg0")
        .map_err(|_| "capture spec `fetch=str64@arg0` refused")?;
    let id = one(
        commands::jprobe(At::Symbol("sys_open", 0), spec),
        "commands::jprobe refused sys_open",
    )?;
    Ok([Some(id), None])
}

/// The stub's `monitor kretprobe`: return value, stashed arguments, duration.
fn capture_return() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let id = one(
        commands::kretprobe(At::Symbol(HOT, 0), None, CaptureSpec::default()),
        "commands::kretprobe refused bench_target",
    )?;
    Ok([Some(id), None])
}

/// The gdb breakpoint a condition row set (0: none).
static GDB_BREAK: AtomicU64 = AtomicU64::new(0);

/// A gdb software breakpoint on `bench_target`'s first instruction (the
/// boosted `lea`) with `prog` as its in-kernel condition, false on every
/// call: the cost of a false condition, to compare with `kprobe_boosted`.
fn gdb_cond(
    prog: Result<proto::bytecode::Program, proto::bytecode::VerifyError>,
) -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let prog = prog.map_err(|_| "the condition program was refused")?;
    let f = crate::kallsyms::find(HOT).ok_or("bench_target missing from kallsyms")?;
    let cond = probes::cond::StopCond::new([prog], 0, false);
    probes::CORE
        .gdb_set_cond(f.start, Some(cond))
        .map_err(|_| "gdb_set_cond refused bench_target")?;
    if probes::CORE.gdb_insert(f.start).is_err() {
        let _ = probes::CORE.gdb_set_cond(f.start, None);
        return Err("gdb_insert refused bench_target");
    }
    GDB_BREAK.store(f.start, Ordering::Relaxed);
    Ok([None, None])
}

/// `rdi == -1` (never: rdi counts calls): one register compare, the
/// interpreter's one-compare fast path.
fn cond_false() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    use proto::bytecode::{Writer, op};
    let mut w = Writer::new();
    w.reg(5).konst(u64::MAX).op(op::EQ);
    gdb_cond(w.finish())
}

/// `*(u64 *)$rsp == 0` (the return address: never 0): a fault-safe load
/// and a compare through the interpreter loop.
fn cond_false_load() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    use proto::bytecode::{Writer, op};
    let mut w = Writer::new();
    w.reg(7).load(8, false).konst(0).op(op::EQ);
    gdb_cond(w.finish())
}

/// Hits a condition row's breakpoint took (all of them false).
pub fn gdb_hits() -> u64 {
    let addr = GDB_BREAK.load(Ordering::Relaxed);
    let mut hits = 0;
    let _ = probes::CORE.gdb_conds(&mut |c| {
        if c.addr == addr {
            hits = c.hits;
        }
    });
    hits
}

/// Removes a condition row's breakpoint and condition.
pub fn clear_gdb() {
    let addr = GDB_BREAK.swap(0, Ordering::Relaxed);
    if addr != 0 {
        let _ = probes::CORE.gdb_remove(addr);
        let _ = probes::CORE.gdb_set_cond(addr, None);
    }
}

/// A capture kprobe with a one-compare predicate (`rdi != -1`, always true):
/// the predicate's cost over `capture_kprobe`.
fn pred_true() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    pred_row(proto::bytecode::op::NE)
}

/// The same predicate made false (`rdi == -1`): nothing is recorded.
fn pred_false() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    pred_row(proto::bytecode::op::EQ)
}

fn pred_row(cmp: u8) -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let mut w = proto::bytecode::Writer::new();
    w.reg(5).konst(u64::MAX).op(cmp);
    let prog = w
        .finish()
        .map_err(|_| "the predicate program was refused")?;
    let id = one(
        commands::kprobe_if(At::Symbol(HOT, 0), Some(prog)),
        "commands::kprobe_if refused bench_target",
    )?;
    Ok([Some(id), None])
}

/// An aggregating kprobe: `count()` by one integer key (`$task`), updated
/// in the kernel's map; nothing recorded (`kprobe bench_target count by $task`).
fn agg_count() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    use proto::agg::{AggFn, AggSpec, KeyKind, KeyPart};
    let mut w = proto::bytecode::Writer::new();
    w.ctx(proto::bytecode::CTX_TASK);
    let prog = w.finish().map_err(|_| "the key program was refused")?;
    let mut spec = AggSpec::new(AggFn::Count);
    spec.push_key(KeyPart {
        kind: KeyKind::Int,
        prog,
    })
    .map_err(|_| "the key was refused")?;
    agg_row(spec)
}

/// An aggregating kprobe: `hist(rdi)` (power-of-two buckets, no key;
/// `kprobe bench_target hist $rdi`).
fn agg_hist() -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    use proto::agg::{AggFn, AggSpec};
    let mut w = proto::bytecode::Writer::new();
    w.reg(5);
    let mut spec = AggSpec::new(AggFn::Hist);
    spec.value = Some(w.finish().map_err(|_| "the value program was refused")?);
    agg_row(spec)
}

fn agg_row(spec: proto::agg::AggSpec) -> Result<[Option<ProbeId>; MAX_PROBES], &'static str> {
    let id = one(
        commands::kprobe_agg(At::Symbol(HOT, 0), None, Some(spec)),
        "commands::kprobe_agg refused bench_target",
    )?;
    Ok([Some(id), None])
}
