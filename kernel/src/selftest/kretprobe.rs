//! Selftest suite `kretprobe`: return probes on the live kernel (seed 002's
//! per-task instances, Linux's test_kprobes return-probe cases).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arch::TrapFrame;
use probes::{At, Kprobe, Kretprobe, Probe, ProbeError, ProbeId, RetCtx};

use super::probe_util::{check, function_of, reg_kretprobe as reg, unreg};
use crate::workloads;

crate::probe_suite!(
    "kretprobe",
    sys_open_failures,
    entry_data_across_tasks,
    nested_order,
    maxactive_1_depth_5,
    stacktrace_real_caller,
    stacktrace_nested,
    task_exit_reclaims,
    unregister_in_flight,
    kprobe_and_kretprobe,
    jprobe_and_kretprobe,
    ret_imm16,
    refused_far_return,
    refused_off_entry
);

global_asm!(
    ".pushsection .text.kdbg_selftest_kretprobe, \"ax\", @progbits",
    // Frame-pointer functions: top calls outer calls inner; inner returns 42.
    ".globl st_kr_top", ".type st_kr_top, @function", "st_kr_top:",
    "push rbp",
    "mov rbp, rsp",
    "call st_kr_outer",
    "pop rbp",
    "ret",
    ".size st_kr_top, . - st_kr_top",
    ".globl st_kr_outer", ".type st_kr_outer, @function", "st_kr_outer:",
    "push rbp",
    "mov rbp, rsp",
    "call st_kr_inner",
    "pop rbp",
    "ret",
    ".size st_kr_outer, . - st_kr_outer",
    ".globl st_kr_inner", ".type st_kr_inner, @function", "st_kr_inner:",
    "push rbp",
    "mov rbp, rsp",
    "mov eax, 42",
    "pop rbp",
    "ret",
    ".size st_kr_inner, . - st_kr_inner",
    // Enters, then ends the task without returning.
    ".globl st_kr_noreturn", ".type st_kr_noreturn, @function", "st_kr_noreturn:",
    "sub rsp, 8",
    "call {exit}",
    "ud2",
    ".size st_kr_noreturn, . - st_kr_noreturn",
    // Leaves through a far return (never called: only registered on).
    ".globl st_kr_farret", ".type st_kr_farret, @function", "st_kr_farret:",
    "mov eax, 1",
    "retfq",
    ".size st_kr_farret, . - st_kr_farret",
    ".popsection",
    exit = sym exit_task,
);

unsafe extern "C" {
    fn st_kr_outer() -> u64;
    fn st_kr_top() -> u64;
    fn st_kr_noreturn() -> u64;
}

extern "C" fn exit_task() -> ! {
    crate::sched::exit_current()
}

/// A small fixed log of u64s written by handlers.
struct Log {
    v: [AtomicU64; 64],
    n: AtomicUsize,
}

impl Log {
    const fn new() -> Log {
        Log {
            v: [const { AtomicU64::new(0) }; 64],
            n: AtomicUsize::new(0),
        }
    }
    fn push(&self, x: u64) {
        let i = self.n.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.v.get(i) {
            s.store(x, Ordering::Relaxed);
        }
    }
    fn clear(&self) {
        self.n.store(0, Ordering::Relaxed);
    }
    fn len(&self) -> usize {
        self.n.load(Ordering::Relaxed).min(64)
    }
    fn get(&self, i: usize) -> u64 {
        self.v.get(i).map_or(0, |s| s.load(Ordering::Relaxed))
    }
}

static RETS: Log = Log::new();
static ERRORS: AtomicU64 = AtomicU64::new(0);

fn log_negative(_: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    if (f.rax as i64) < 0 {
        RETS.push(f.rax);
    }
    0
}

fn log_ret(_: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    RETS.push(f.rax);
    0
}

/// A kretprobe on `func`'s entry whose handler logs every return value
/// (`maxactive` 0: the default).
fn log_ret_probe(func: &str, maxactive: u32) -> Result<ProbeId, &'static str> {
    reg(
        At::Symbol(func, 0),
        Kretprobe {
            handler: Some(log_ret),
            maxactive,
            ..Kretprobe::default()
        },
    )
}

fn sys_open_failures() -> Result<(), &'static str> {
    RETS.clear();
    let id = reg(
        At::Symbol("sys_open", 0),
        Kretprobe {
            handler: Some(log_negative),
            ..Kretprobe::default()
        },
    )?;
    let mut truth = [0i64; 16];
    let mut n = 0;
    for (i, path) in workloads::OPEN_PATHS.iter().enumerate() {
        let ret = workloads::call_sys_open(path, (i % 2) as u32, 0o644);
        if ret < 0
            && let Some(s) = truth.get_mut(n)
        {
            *s = ret;
            n += 1;
        }
    }
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    check(n > 0, "the workload produced no failing call")?;
    check(
        RETS.len() == n,
        "return handler did not see every failing call",
    )?;
    for (i, &t) in truth.iter().take(n).enumerate() {
        check(
            RETS.get(i) as i64 == t,
            "a return value differs from the ground truth",
        )?;
    }
    check(
        info.hits == workloads::OPEN_PATHS.len() as u64,
        "not every return was handled",
    )
}

fn entry_store(ctx: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    // nest(d) returns d: store d and the task at entry.
    let d = f.rdi.to_le_bytes();
    let t = ctx.task.to_le_bytes();
    if let Some(dst) = ctx.data.get_mut(..8) {
        dst.copy_from_slice(&d);
    }
    if let Some(dst) = ctx.data.get_mut(8..12) {
        dst.copy_from_slice(&t);
    }
    0
}

fn ret_check(ctx: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    let mut d = [0u8; 8];
    let mut t = [0u8; 4];
    d.copy_from_slice(ctx.data.get(..8).unwrap_or(&[0; 8]));
    t.copy_from_slice(ctx.data.get(8..12).unwrap_or(&[0; 4]));
    if u64::from_le_bytes(d) != f.rax || u32::from_le_bytes(t) != crate::sched::current_id() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    RETS.push(f.rax);
    0
}

static STOP: AtomicU64 = AtomicU64::new(0);

fn nest_task(depth: u64) {
    while STOP.load(Ordering::Relaxed) == 0 {
        if workloads::nest(depth) != depth {
            ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        crate::sched::yield_now();
    }
}

fn entry_data_across_tasks() -> Result<(), &'static str> {
    ERRORS.store(0, Ordering::Relaxed);
    STOP.store(0, Ordering::Relaxed);
    let id = reg(
        At::Symbol("nest", 0),
        Kretprobe {
            handler: Some(ret_check),
            entry_handler: Some(entry_store),
            maxactive: 64,
            data_size: 4096,
            data: 0,
        },
    )?;
    let a = crate::sched::spawn("kr-nest-a", nest_task, 3).map_err(|_| "cannot spawn")?;
    let b = crate::sched::spawn("kr-nest-b", nest_task, 6).map_err(|_| "cannot spawn")?;
    for _ in 0..50 {
        if workloads::nest(4) != 4 {
            ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        crate::sched::yield_now();
    }
    STOP.store(1, Ordering::Relaxed);
    let joined = crate::sched::join(a, crate::selftest::JOIN_TICKS)
        && crate::sched::join(b, crate::selftest::JOIN_TICKS);
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    check(joined, "a task did not finish")?;
    check(
        ERRORS.load(Ordering::Relaxed) == 0,
        "entry data did not reach its own return handler",
    )?;
    check(info.hits > 250, "too few returns handled")?;
    check(info.nmissed == 0, "instances ran out")
}

fn nested_order() -> Result<(), &'static str> {
    RETS.clear();
    let id = log_ret_probe("nest", 16)?;
    let r = workloads::call_nest(5);
    unreg(id)?;
    check(r == 5, "nest computed a different result")?;
    check(RETS.len() == 6, "not every nested return was handled")?;
    for i in 0..6 {
        check(
            RETS.get(i) == i as u64,
            "return handlers ran out of order or saw a wrong value",
        )?;
    }
    // fib: the handlers see the values of a post-order walk of the call tree.
    RETS.clear();
    let id = log_ret_probe("fib", 16)?;
    let r = workloads::call_fib(5);
    unreg(id)?;
    let mut want = [0u64; 64];
    let mut n = 0;
    post_order_fib(5, &mut want, &mut n);
    check(r == 5, "fib computed a different result")?;
    check(RETS.len() == n, "not every fib return was handled")?;
    for (i, &w) in want.iter().take(n).enumerate() {
        check(RETS.get(i) == w, "fib return handlers ran out of order")?;
    }
    Ok(())
}

fn post_order_fib(n: u64, out: &mut [u64; 64], len: &mut usize) -> u64 {
    let r = if n < 2 {
        n
    } else {
        post_order_fib(n - 1, out, len) + post_order_fib(n - 2, out, len)
    };
    if let Some(s) = out.get_mut(*len) {
        *s = r;
    }
    *len += 1;
    r
}

fn maxactive_1_depth_5() -> Result<(), &'static str> {
    RETS.clear();
    let id = log_ret_probe("nest", 1)?;
    let mut result = Ok(());
    for round in 1..=3u64 {
        let r = workloads::nest(4);
        let info = probes::info(id).ok_or("probe vanished")?;
        if r != 4 || info.nmissed != 4 * round || info.hits != round {
            result = Err("with maxactive=1, nmissed did not grow by exactly 4 per outermost call");
        }
    }
    let free = probes::info(id).map_or(0, |i| i.free_instances);
    unreg(id)?;
    result?;
    check(free == 1, "the instance did not come back")
}

static TRACE: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn trace_handler(_: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    let mut t = [0u64; 4];
    let n = probes::stacktrace::stacktrace(f, &mut t);
    for (i, s) in TRACE.iter().enumerate() {
        s.store(
            if i < n {
                t.get(i).copied().unwrap_or(0)
            } else {
                0
            },
            Ordering::Relaxed,
        );
    }
    0
}

#[inline(never)]
fn call_outer() -> u64 {
    // SAFETY: plain asm function.
    unsafe { st_kr_outer() }
}

fn stacktrace_real_caller() -> Result<(), &'static str> {
    let id = reg(
        At::Symbol("st_kr_inner", 0),
        Kretprobe {
            handler: Some(trace_handler),
            ..Kretprobe::default()
        },
    )?;
    let r = call_outer();
    unreg(id)?;
    check(r == 42, "probed function computed a different result")?;
    let first = TRACE[0].load(Ordering::Relaxed);
    check(
        first != probes::trampoline_address(),
        "the handler's ip is the trampoline",
    )?;
    check(
        function_of(first) == "st_kr_outer",
        "the handler's ip is not in the real caller",
    )
}

fn stacktrace_nested() -> Result<(), &'static str> {
    let outer = log_ret_probe("st_kr_outer", 0)?;
    let inner = reg(
        At::Symbol("st_kr_inner", 0),
        Kretprobe {
            handler: Some(trace_handler),
            ..Kretprobe::default()
        },
    )?;
    // SAFETY: plain asm function.
    let r = unsafe { st_kr_top() };
    unreg(inner)?;
    unreg(outer)?;
    check(r == 42, "probed function computed a different result")?;
    let (a, b) = (
        TRACE[0].load(Ordering::Relaxed),
        TRACE[1].load(Ordering::Relaxed),
    );
    check(
        function_of(a) == "st_kr_outer",
        "the handler's ip is not in the real caller",
    )?;
    check(
        b != probes::trampoline_address(),
        "the unwinder did not map the hijacked return address",
    )?;
    if function_of(b) != "st_kr_top" {
        let msg = alloc::format!(
            "the second frame {b:#x} ({}) is not the outer function's real caller",
            function_of(b)
        );
        return Err(alloc::boxed::Box::leak(msg.into_boxed_str()));
    }
    Ok(())
}

fn noreturn_task(_: u64) {
    // SAFETY: plain asm function; it ends the task.
    unsafe { st_kr_noreturn() };
}

fn task_exit_reclaims() -> Result<(), &'static str> {
    let id = log_ret_probe("st_kr_noreturn", 4)?;
    let mut tasks = [0; 3];
    for t in tasks.iter_mut() {
        *t = crate::sched::spawn("kr-noreturn", noreturn_task, 0).map_err(|_| "cannot spawn")?;
    }
    let mut joined = true;
    for t in tasks {
        joined &= crate::sched::join(t, crate::selftest::JOIN_TICKS);
    }
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    check(joined, "a task did not exit")?;
    check(
        info.hits == 0,
        "a return handler ran for a call that never returned",
    )?;
    check(
        info.free_instances == 4,
        "instances of exited tasks were not reclaimed",
    )
}

#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn st_kr_sleeper(ticks: u64) -> u64 {
    crate::sched::sleep_ticks(ticks);
    core::hint::black_box(ticks) + 1
}

static SLEEP_RESULTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

fn sleeper_task(i: u64) {
    let r = st_kr_sleeper(5 + i);
    if let Some(s) = SLEEP_RESULTS.get(i as usize) {
        s.store(r, Ordering::Relaxed);
    }
}

fn unregister_in_flight() -> Result<(), &'static str> {
    let id = log_ret_probe("st_kr_sleeper", 0)?;
    let a = crate::sched::spawn("kr-sleep-0", sleeper_task, 0).map_err(|_| "cannot spawn")?;
    let b = crate::sched::spawn("kr-sleep-1", sleeper_task, 1).map_err(|_| "cannot spawn")?;
    // Let both enter and go to sleep with their returns hijacked.
    crate::sched::yield_now();
    crate::sched::yield_now();
    let before = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    let joined = crate::sched::join(a, crate::selftest::JOIN_TICKS)
        && crate::sched::join(b, crate::selftest::JOIN_TICKS);
    check(
        joined,
        "a task did not come back from the unregistered kretprobe",
    )?;
    check(
        before.free_instances < before.maxactive,
        "no call was in flight at unregister time",
    )?;
    check(
        SLEEP_RESULTS[0].load(Ordering::Relaxed) == 6
            && SLEEP_RESULTS[1].load(Ordering::Relaxed) == 7,
        "a call in flight returned a wrong value",
    )
}

static KP_HITS: AtomicU64 = AtomicU64::new(0);

fn kp_pre(_: &Probe, _: &mut TrapFrame) -> bool {
    KP_HITS.fetch_add(1, Ordering::Relaxed);
    false
}

fn kprobe_and_kretprobe() -> Result<(), &'static str> {
    RETS.clear();
    KP_HITS.store(0, Ordering::Relaxed);
    let k = probes::register_kprobe(
        At::Symbol("sum8", 0),
        Kprobe {
            pre_handler: Some(kp_pre),
            ..Kprobe::default()
        },
    )
    .map_err(|_| "register_kprobe failed")?;
    let r = log_ret_probe("sum8", 0)?;
    let v = workloads::call_sum8(1, 2, 3, 4, 5, 6, 7, 8);
    unreg(r)?;
    unreg(k)?;
    check(v == 204, "sum8 computed a different result")?;
    check(
        KP_HITS.load(Ordering::Relaxed) == 1,
        "the kprobe did not fire once",
    )?;
    check(
        RETS.len() == 1 && RETS.get(0) == 204,
        "the kretprobe did not see the return value",
    )
}

static J_ARGS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

#[allow(clippy::too_many_arguments)]
extern "C" fn jsum8(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64) {
    for (s, v) in J_ARGS.iter().zip([a, b, c, d, e, f, g, h]) {
        s.store(v, Ordering::Relaxed);
    }
}

fn jprobe_and_kretprobe() -> Result<(), &'static str> {
    RETS.clear();
    let j = probes::register_jprobe(At::Symbol("sum8", 0), jsum8 as *const () as usize)
        .map_err(|_| "register_jprobe failed")?;
    let r = log_ret_probe("sum8", 0)?;
    let v = workloads::call_sum8(8, 7, 6, 5, 4, 3, 2, 1);
    unreg(r)?;
    unreg(j)?;
    check(v == 120, "sum8 computed a different result")?;
    for (i, s) in J_ARGS.iter().enumerate() {
        check(
            s.load(Ordering::Relaxed) == 8 - i as u64,
            "the jprobe saw a wrong argument",
        )?;
    }
    check(
        RETS.len() == 1 && RETS.get(0) == 120,
        "the kretprobe did not see the return value",
    )
}

/// A function that returns with `ret 8` (callee pops its stack argument):
/// the return lands 8 bytes above the slot the trampoline was written to;
/// the instance is still found, the handler runs once per call and the
/// caller gets its value and its stack back.
fn ret_imm16() -> Result<(), &'static str> {
    RETS.clear();
    let id = log_ret_probe("insn_ret_imm16", 0)?;
    let mut ok = true;
    for x in 0..5u64 {
        // SAFETY: call_insn_ret_imm16 follows the C ABI (it pushes the
        // word insn_ret_imm16 pops).
        let got = unsafe { workloads::insn::call_insn_ret_imm16(x + 100) };
        ok &= got == x + 100;
    }
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    check(
        ok,
        "call_insn_ret_imm16 returned a wrong value under the kretprobe",
    )?;
    check(info.hits == 5, "not every ret imm16 return was handled")?;
    check(
        RETS.len() == 5,
        "the return handler did not run once per call",
    )
}

/// A function that returns with `retf` gets no kretprobe (the trampoline
/// address would be taken as half a far pointer): a clear refusal.
fn refused_far_return() -> Result<(), &'static str> {
    match probes::register_kretprobe(At::Symbol("st_kr_farret", 0), Kretprobe::default()) {
        Err(ProbeError::FarReturn) => Ok(()),
        Ok(id) => {
            unreg(id)?;
            Err("a kretprobe on a retf function was accepted")
        }
        Err(_) => Err("a kretprobe on a retf function was refused for another reason"),
    }
}

fn refused_off_entry() -> Result<(), &'static str> {
    check(
        probes::register_kretprobe(At::Symbol("sum8", 1), Kretprobe::default())
            == Err(ProbeError::NotFunctionEntry)
            || probes::register_kretprobe(At::Symbol("sum8", 1), Kretprobe::default())
                == Err(ProbeError::NotBoundary),
        "a kretprobe off the function entry was not refused",
    )?;
    check(
        probes::register_kretprobe(
            At::Symbol("sum8", 0),
            Kretprobe {
                data_size: 4097,
                ..Kretprobe::default()
            },
        ) == Err(ProbeError::DataTooLarge),
        "per-instance data over 4 KiB was not refused",
    )
}
