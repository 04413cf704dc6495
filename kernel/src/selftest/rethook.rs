//! Selftest suite `rethook`: kretprobe returns without a trap (issue 18).
//! The return goes through `arch::trampoline`, ordinary code; only the
//! entry may trap (none with a jump-optimized entry). The suite `kretprobe`
//! covers the instance semantics (nesting, recursion, maxactive, task
//! exit, unregistering in flight, stack traces), which now all run over
//! this path.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use super::probe_util::{check, function_of, reg_kretprobe as reg, unreg};
use arch::TrapFrame;
use probes::{At, Kretprobe, RetCtx};

crate::probe_suite!(
    "rethook",
    return_without_trap,
    return_registers_and_value,
    return_after_sleep_per_task,
    recursion_deeper_than_maxactive
);

global_asm!(
    ".pushsection .text.kdbg_selftest_rethook, \"ax\", @progbits",
    ".globl st_rh_outer",
    ".type st_rh_outer, @function",
    "st_rh_outer:",
    "push rbp",
    "mov rbp, rsp",
    "call st_rh_inner",
    "pop rbp",
    "ret",
    ".size st_rh_outer, . - st_rh_outer",
    ".globl st_rh_inner",
    ".type st_rh_inner, @function",
    "st_rh_inner:",
    "push rbp",
    "mov rbp, rsp",
    "mov eax, 42",
    "pop rbp",
    "ret",
    ".size st_rh_inner, . - st_rh_inner",
    // Calls st_rh_inner with known callee-saved registers; returns what it
    // returned when they all survived the (probed) call, 0 otherwise.
    ".globl st_rh_regs",
    ".type st_rh_regs, @function",
    "st_rh_regs:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov rbx, 0x1111",
    "mov r12, 0x1212",
    "mov r13, 0x1313",
    "mov r14, 0x1414",
    "mov r15, 0x1515",
    "call st_rh_inner",
    "mov rcx, rax",
    "xor eax, eax",
    "cmp rbx, 0x1111",
    "jne 2f",
    "cmp r12, 0x1212",
    "jne 2f",
    "cmp r13, 0x1313",
    "jne 2f",
    "cmp r14, 0x1414",
    "jne 2f",
    "cmp r15, 0x1515",
    "jne 2f",
    "mov rax, rcx",
    "2:",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size st_rh_regs, . - st_rh_regs",
    ".popsection",
);

unsafe extern "C" {
    fn st_rh_outer() -> u64;
    fn st_rh_regs() -> u64;
}

static RETURNS: AtomicU64 = AtomicU64::new(0);

fn count_ret(_: &mut RetCtx<'_>, _: &mut TrapFrame) -> i32 {
    RETURNS.fetch_add(1, Ordering::Relaxed);
    0
}

#[inline(never)]
fn call_outer() -> u64 {
    // SAFETY: plain asm function.
    unsafe { st_rh_outer() }
}

/// A return costs no trap: only the entry's int3 is counted (and none
/// with a jump-optimized entry).
fn return_without_trap() -> Result<(), &'static str> {
    probes::set_optimization(false);
    let r = return_traps(10);
    probes::set_optimization(true);
    r?;
    // With more than one CPU online the entry stays an int3.
    return_traps(if crate::sched::cpu_count() > 1 { 10 } else { 0 })
}

fn return_traps(want: u64) -> Result<(), &'static str> {
    RETURNS.store(0, Ordering::Relaxed);
    let id = reg(
        At::Symbol("st_rh_inner", 0),
        Kretprobe {
            handler: Some(count_ret),
            ..Kretprobe::default()
        },
    )?;
    let before = crate::dispatch::INT3_COUNT.load(Ordering::Relaxed);
    let mut sum = 0;
    for _ in 0..10 {
        sum += call_outer();
    }
    let traps = crate::dispatch::INT3_COUNT
        .load(Ordering::Relaxed)
        .wrapping_sub(before);
    let hits = probes::info(id).map_or(0, |i| i.hits);
    unreg(id)?;
    check(sum == 420, "probed function computed a different result")?;
    check(
        hits == 10 && RETURNS.load(Ordering::Relaxed) == 10,
        "not every return was handled",
    )?;
    if want == 0 {
        check(
            traps == 0,
            "an optimized entry and a trap-free return trapped",
        )
    } else {
        check(
            traps == want,
            "the calls took more than one trap each (the return trapped)",
        )
    }
}

static REGS_SEEN: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn regs_handler(ctx: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    // Where an unwinder finds the return address: the word below rsp.
    let mut below = [0u8; 8];
    let _ = arch::mem::read(f.rsp.wrapping_sub(8), &mut below);
    for (slot, v) in REGS_SEEN.iter().zip([
        f.rbx,
        f.r12,
        f.r13,
        f.r14,
        f.r15,
        f.rip,
        ctx.ret_addr,
        u64::from_le_bytes(below),
    ]) {
        slot.store(v, Ordering::Relaxed);
    }
    // The return value is the handler's to change.
    f.rax += 1;
    0
}

/// The handler gets the registers of the return point (callee-saved ones
/// as the caller holds them, `rip` the real return address, also in the
/// word below `rsp` where the trampoline's frame record points), its
/// change of `rax` reaches the caller, and every callee-saved register
/// survives.
fn return_registers_and_value() -> Result<(), &'static str> {
    let id = reg(
        At::Symbol("st_rh_inner", 0),
        Kretprobe {
            handler: Some(regs_handler),
            ..Kretprobe::default()
        },
    )?;
    // SAFETY: plain asm function.
    let r = unsafe { st_rh_regs() };
    unreg(id)?;
    check(
        r != 0,
        "a callee-saved register changed across the probed return",
    )?;
    check(
        r == 43,
        "the handler's change of rax did not reach the caller",
    )?;
    let seen: [u64; 8] = core::array::from_fn(|i| REGS_SEEN[i].load(Ordering::Relaxed));
    check(
        seen[..5] == [0x1111, 0x1212, 0x1313, 0x1414, 0x1515],
        "the handler saw other callee-saved registers than the caller holds",
    )?;
    check(
        seen[5] == seen[6],
        "frame.rip is not the real return address",
    )?;
    check(
        seen[7] == seen[5],
        "the frame record does not hold the real return address",
    )?;
    check(
        function_of(seen[5]) == "st_rh_regs",
        "frame.rip is not in the real caller",
    )
}

#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn st_rh_sleeper(ticks: u64) -> u64 {
    crate::sched::sleep_ticks(ticks);
    core::hint::black_box(ticks) + 1
}

static SLEEP_RESULTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static SLEPT_TASK: [AtomicU64; 2] = [const { AtomicU64::new(u64::MAX) }; 2];
static SLEPT_DURATION: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

fn sleeper_task(i: u64) {
    let r = st_rh_sleeper(5 + i);
    if let Some(s) = SLEEP_RESULTS.get(i as usize) {
        s.store(r, Ordering::Relaxed);
    }
}

fn sleep_handler(ctx: &mut RetCtx<'_>, f: &mut TrapFrame) -> i32 {
    // st_rh_sleeper(5 + i) returns 6 + i.
    let i = f.rax.wrapping_sub(6) as usize;
    if let (Some(t), Some(d)) = (SLEPT_TASK.get(i), SLEPT_DURATION.get(i)) {
        t.store(u64::from(ctx.task), Ordering::Relaxed);
        d.store(
            arch::cpu::rdtsc().wrapping_sub(ctx.entry_tsc),
            Ordering::Relaxed,
        );
    }
    0
}

/// Two tasks sleep inside a kretprobed function while others run; each
/// return is handled on its own task with its own instance.
fn return_after_sleep_per_task() -> Result<(), &'static str> {
    let id = reg(
        At::Symbol("st_rh_sleeper", 0),
        Kretprobe {
            handler: Some(sleep_handler),
            ..Kretprobe::default()
        },
    )?;
    let a = crate::sched::spawn("rh-nap-0", sleeper_task, 0).map_err(|_| "cannot spawn")?;
    let b = crate::sched::spawn("rh-nap-1", sleeper_task, 1).map_err(|_| "cannot spawn")?;
    let joined = crate::sched::join(a, crate::selftest::JOIN_TICKS)
        && crate::sched::join(b, crate::selftest::JOIN_TICKS);
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    check(joined, "a sleeping task did not come back")?;
    check(info.hits == 2, "not both returns were handled")?;
    check(
        SLEEP_RESULTS[0].load(Ordering::Relaxed) == 6
            && SLEEP_RESULTS[1].load(Ordering::Relaxed) == 7,
        "a call returned a wrong value",
    )?;
    check(
        SLEPT_TASK[0].load(Ordering::Relaxed) == u64::from(a)
            && SLEPT_TASK[1].load(Ordering::Relaxed) == u64::from(b),
        "a return was handled on another task than the caller",
    )?;
    check(
        SLEPT_DURATION.iter().all(|d| d.load(Ordering::Relaxed) > 0),
        "a duration across the sleep is zero",
    )
}

#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn st_rh_rec(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    core::hint::black_box(st_rh_rec(n - 1)) + n
}

/// Recursion 12 deep with 4 instances: the first 4 entries take the
/// instances, the 8 deeper ones are missed (maxactive exhausted), every
/// return computes right and exactly 4 returns are handled.
fn recursion_deeper_than_maxactive() -> Result<(), &'static str> {
    RETURNS.store(0, Ordering::Relaxed);
    let id = reg(
        At::Symbol("st_rh_rec", 0),
        Kretprobe {
            handler: Some(count_ret),
            maxactive: 4,
            ..Kretprobe::default()
        },
    )?;
    let r = st_rh_rec(core::hint::black_box(11));
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    check(
        r == 1 + (1..=11).sum::<u64>(),
        "the recursion computed a different result",
    )?;
    check(
        RETURNS.load(Ordering::Relaxed) == 4,
        "not exactly maxactive returns handled",
    )?;
    check(
        info.nmissed == 8,
        "the entries without an instance were not counted missed",
    )?;
    check(info.free_instances == 4, "an instance did not come back")
}
