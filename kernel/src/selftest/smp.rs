//! SMP: the other CPUs are up and run tasks, the IPIs arrive, live text
//! patching is safe while every CPU executes the patched bytes, and probe
//! hits stay exact under concurrency. With one CPU each case checks what
//! one CPU can (and says so by passing trivially where there is no other
//! CPU). `cargo xtask test` runs this suite at 4 vCPUs (MTTCG).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use probes::{At, Kprobe, Probe};

use crate::sched;
use crate::smp;

crate::probe_suite!(
    "smp",
    every_cpu_is_online_and_ticks,
    tasks_run_on_every_cpu_and_migrate,
    call_function_ipi_waits,
    reschedule_ipi_arrives,
    sync_all_answers,
    poke_bp_while_every_cpu_runs_it,
    probe_hits_exact_on_every_cpu,
    kretprobe_returns_on_another_cpu,
    maxactive_exhaustion_counted_exactly,
);

fn others() -> impl Iterator<Item = usize> {
    arch::percpu::others()
}

fn every_cpu_is_online_and_ticks() -> Result<(), &'static str> {
    let n = sched::cpu_count();
    if n != smp::present() {
        return Err("fewer CPUs online than the firmware lists");
    }
    if n == 1 {
        return Ok(());
    }
    let before: [u64; arch::percpu::MAX_CPUS] =
        core::array::from_fn(|c| smp::AP_TICKS[c].load(Ordering::Relaxed));
    sched::sleep_ticks(20);
    for c in others() {
        if c != 0 && smp::AP_TICKS[c].load(Ordering::Relaxed) <= before[c] {
            return Err("an AP's local APIC timer does not tick");
        }
    }
    Ok(())
}

static SEEN_CPUS: AtomicU32 = AtomicU32::new(0);
static MIGRATED: AtomicU32 = AtomicU32::new(0);
static SPIN_STOP: AtomicU32 = AtomicU32::new(0);

fn spinner(_: u64) {
    let mut mine = 0u32;
    let mut counted = false;
    while SPIN_STOP.load(Ordering::Relaxed) == 0 {
        let c = sched::cpu_id() as u32;
        if mine & (1 << c) == 0 {
            mine |= 1 << c;
            SEEN_CPUS.fetch_or(1 << c, Ordering::Relaxed);
            if mine.count_ones() > 1 && !counted {
                counted = true;
                MIGRATED.fetch_add(1, Ordering::Relaxed);
            }
        }
        core::hint::spin_loop();
    }
}

fn tasks_run_on_every_cpu_and_migrate() -> Result<(), &'static str> {
    SEEN_CPUS.store(0, Ordering::Relaxed);
    MIGRATED.store(0, Ordering::Relaxed);
    SPIN_STOP.store(0, Ordering::Relaxed);
    let n = sched::cpu_count();
    let mut ids = [0; 8];
    let count = (n + 1).min(ids.len());
    for id in ids.iter_mut().take(count) {
        *id = sched::spawn("smp-spin", spinner, 0).map_err(|_| "cannot spawn")?;
    }
    let deadline = crate::timer::ticks() + 1000;
    let all = arch::percpu::online_mask();
    while crate::timer::ticks() < deadline {
        if SEEN_CPUS.load(Ordering::Relaxed) & all == all
            && (n == 1 || MIGRATED.load(Ordering::Relaxed) > 0)
        {
            break;
        }
        sched::sleep_ticks(2);
    }
    SPIN_STOP.store(1, Ordering::Relaxed);
    for id in ids.iter().take(count) {
        if !sched::join(*id, crate::selftest::JOIN_TICKS) {
            return Err("a spinning task did not finish");
        }
    }
    if SEEN_CPUS.load(Ordering::Relaxed) & all != all {
        return Err("some CPU never ran a task");
    }
    if n > 1 && MIGRATED.load(Ordering::Relaxed) == 0 {
        return Err("no task ran on more than one CPU (no migration)");
    }
    Ok(())
}

static CALLED_ON: [AtomicU64; arch::percpu::MAX_CPUS] =
    [const { AtomicU64::new(u64::MAX) }; arch::percpu::MAX_CPUS];

fn record_cpu(slot: u64) {
    if let Some(s) = CALLED_ON.get(slot as usize) {
        s.store(sched::cpu_id() as u64, Ordering::Relaxed);
    }
}

fn call_function_ipi_waits() -> Result<(), &'static str> {
    for c in others() {
        CALLED_ON[c].store(u64::MAX, Ordering::Relaxed);
        // Interrupts off: the task must not migrate to `c` between the
        // choice of `c` and the call (a call to its own CPU is refused).
        let called = arch::cpu::without_interrupts(|| {
            // Migrated onto `c` since `others()`: nothing to check on it.
            (c != sched::cpu_id()).then(|| smp::call_on(c, record_cpu, c as u64, true))
        });
        match called {
            None => continue,
            Some(false) => return Err("call_on did not complete"),
            Some(true) => {}
        }
        // `wait`: the function has run when call_on returns.
        if CALLED_ON[c].load(Ordering::Relaxed) != c as u64 {
            return Err("the function did not run on the CPU asked for");
        }
    }
    if arch::cpu::without_interrupts(|| smp::call_on(sched::cpu_id(), record_cpu, 0, true)) {
        return Err("call_on to this CPU must be refused");
    }
    Ok(())
}

fn reschedule_ipi_arrives() -> Result<(), &'static str> {
    let before = smp::RESCHED_RECEIVED.load(Ordering::Relaxed);
    let mut sent = 0;
    for c in others() {
        smp::reschedule(c);
        sent += 1;
    }
    let deadline = crate::timer::ticks() + 200;
    while smp::RESCHED_RECEIVED.load(Ordering::Relaxed) < before + sent {
        if crate::timer::ticks() > deadline {
            return Err("reschedule IPIs were not received");
        }
        sched::sleep_ticks(1);
    }
    Ok(())
}

fn sync_all_answers() -> Result<(), &'static str> {
    let (_, timeouts) = arch::text::sync_stats();
    for _ in 0..10 {
        if !arch::text::sync_all() {
            return Err("a CPU did not answer the sync NMI");
        }
    }
    if arch::text::sync_stats().1 != timeouts {
        return Err("sync timeouts counted");
    }
    Ok(())
}

// A function whose first instruction is a 5-byte nop, then `inc rax; ret`:
// patched live between `nop5` and `jmp +0` (the same behaviour).
core::arch::global_asm!(
    ".pushsection .text.kdbg_st_smp_poke, \"ax\", @progbits",
    ".globl st_smp_poke",
    ".type st_smp_poke, @function",
    "st_smp_poke:",
    ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
    "lea rax, [rdi + 1]",
    "ret",
    ".size st_smp_poke, . - st_smp_poke",
    ".popsection",
);

unsafe extern "C" {
    fn st_smp_poke(x: u64) -> u64;
}

static POKE_CALLS: AtomicU64 = AtomicU64::new(0);
static POKE_WRONG: AtomicU64 = AtomicU64::new(0);

fn poke_caller(_: u64) {
    let mut i = 0u64;
    while SPIN_STOP.load(Ordering::Relaxed) == 0 {
        // SAFETY: the asm function above: `rax = rdi + 1`, no memory.
        let r = unsafe { st_smp_poke(i) };
        if r != i + 1 {
            POKE_WRONG.fetch_add(1, Ordering::Relaxed);
        }
        POKE_CALLS.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
const JMP0: [u8; 5] = [0xe9, 0x00, 0x00, 0x00, 0x00];

fn poke_bp_while_every_cpu_runs_it() -> Result<(), &'static str> {
    SPIN_STOP.store(0, Ordering::Relaxed);
    POKE_CALLS.store(0, Ordering::Relaxed);
    POKE_WRONG.store(0, Ordering::Relaxed);
    let addr = st_smp_poke as *const () as u64;
    let n = sched::cpu_count();
    let mut ids = [0; 8];
    let count = n.min(ids.len());
    for id in ids.iter_mut().take(count) {
        *id = sched::spawn("smp-poke", poke_caller, 0).map_err(|_| "cannot spawn")?;
    }
    let mut result = Ok(());
    for i in 0..100 {
        let bytes = if i % 2 == 0 { &JMP0 } else { &NOP5 };
        // SAFETY: st_smp_poke's first instruction is exactly these 5 bytes
        // (nop5 or jmp +0, both falling through to the next instruction);
        // nothing jumps into them.
        unsafe { arch::text::poke_bp(addr, bytes) };
        let mut now = [0u8; 5];
        if arch::mem::read(addr, &mut now).is_err() || now != *bytes {
            result = Err("the patched bytes are not what poke_bp wrote");
            break;
        }
        if i % 10 == 0 {
            sched::yield_now();
        }
    }
    // SAFETY: as above: back to the original nop5.
    unsafe { arch::text::poke_bp(addr, &NOP5) };
    SPIN_STOP.store(1, Ordering::Relaxed);
    for id in ids.iter().take(count) {
        if !sched::join(*id, crate::selftest::JOIN_TICKS) {
            return Err("a caller task did not finish");
        }
    }
    result?;
    if POKE_WRONG.load(Ordering::Relaxed) != 0 {
        return Err("the patched function computed a wrong result");
    }
    if POKE_CALLS.load(Ordering::Relaxed) == 0 {
        return Err("nobody called the patched function");
    }
    Ok(())
}

static HIT_CALLS: AtomicU64 = AtomicU64::new(0);
static HITS: AtomicU64 = AtomicU64::new(0);

fn count_hit(_: &Probe, _: &mut arch::TrapFrame) -> bool {
    HITS.fetch_add(1, Ordering::Relaxed);
    false
}

fn hit_caller(_: u64) {
    let mut i = 0u64;
    while SPIN_STOP.load(Ordering::Relaxed) == 0 {
        // SAFETY: as in poke_caller.
        let _ = unsafe { st_smp_poke(i) };
        HIT_CALLS.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

/// Every CPU calls a kprobed function; the probe's hit count equals the
/// callers' own count (no hit lost or doubled across CPUs), and nmissed
/// stays 0 (no CPU's control block is shared).
fn probe_hits_exact_on_every_cpu() -> Result<(), &'static str> {
    SPIN_STOP.store(0, Ordering::Relaxed);
    HIT_CALLS.store(0, Ordering::Relaxed);
    HITS.store(0, Ordering::Relaxed);
    let addr = st_smp_poke as *const () as u64;
    let id = probes::register_kprobe(
        At::Addr(addr),
        Kprobe {
            pre_handler: Some(count_hit),
            ..Kprobe::default()
        },
    )
    .map_err(|_| "cannot register the kprobe")?;
    let n = sched::cpu_count();
    let mut ids = [0; 8];
    let count = n.min(ids.len());
    for t in ids.iter_mut().take(count) {
        *t = sched::spawn("smp-hit", hit_caller, 0).map_err(|_| "cannot spawn")?;
    }
    sched::sleep_ticks(20);
    SPIN_STOP.store(1, Ordering::Relaxed);
    for t in ids.iter().take(count) {
        if !sched::join(*t, crate::selftest::JOIN_TICKS) {
            return Err("a caller task did not finish");
        }
    }
    let info = probes::info(id);
    let _ = probes::unregister(id);
    let info = info.ok_or("no probe info")?;
    let calls = HIT_CALLS.load(Ordering::Relaxed);
    if calls == 0 {
        return Err("nobody called the probed function");
    }
    if HITS.load(Ordering::Relaxed) != calls || info.hits != calls {
        return Err("probe hits differ from the callers' count");
    }
    if info.nmissed != 0 {
        return Err("hits were missed");
    }
    Ok(())
}

static RET_SEEN: AtomicU64 = AtomicU64::new(0);
static RET_CROSS: AtomicU64 = AtomicU64::new(0);
static ENTRY_CPU: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

static RET_ENTRIES: AtomicU64 = AtomicU64::new(0);
static SLEEPER_CALLS: AtomicU64 = AtomicU64::new(0);

fn ret_entry(ri: &mut probes::RetCtx<'_>, _: &mut arch::TrapFrame) -> i32 {
    RET_ENTRIES.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = ENTRY_CPU.get(ri.task as usize % 64) {
        slot.store(sched::cpu_id() as u64, Ordering::Relaxed);
    }
    0
}

fn ret_handler(ri: &mut probes::RetCtx<'_>, f: &mut arch::TrapFrame) -> i32 {
    RET_SEEN.fetch_add(1, Ordering::Relaxed);
    if ENTRY_CPU
        .get(ri.task as usize % 64)
        .is_some_and(|s| s.load(Ordering::Relaxed) != sched::cpu_id() as u64)
    {
        RET_CROSS.fetch_add(1, Ordering::Relaxed);
    }
    // The real return address, whatever CPU returns.
    if f.rip != ri.ret_addr {
        RET_SEEN.store(u64::MAX / 2, Ordering::Relaxed);
    }
    0
}

/// A function that sleeps (gives up its CPU) between entry and return.
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn st_smp_sleeper(ticks: u64) -> u64 {
    sched::sleep_ticks(ticks);
    ticks + 1
}

fn sleeper_task(arg: u64) {
    for _ in 0..arg {
        SLEEPER_CALLS.fetch_add(1, Ordering::Relaxed);
        if core::hint::black_box(st_smp_sleeper)(1) != 2 {
            POKE_WRONG.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A kretprobe on a function that sleeps mid-call: the task often returns
/// on another CPU than it entered on; every return is reported, at the
/// real return address, with the right value.
fn kretprobe_returns_on_another_cpu() -> Result<(), &'static str> {
    RET_SEEN.store(0, Ordering::Relaxed);
    SLEEPER_CALLS.store(0, Ordering::Relaxed);
    RET_ENTRIES.store(0, Ordering::Relaxed);
    RET_CROSS.store(0, Ordering::Relaxed);
    POKE_WRONG.store(0, Ordering::Relaxed);
    let id = probes::register_kretprobe(
        At::Symbol("st_smp_sleeper", 0),
        probes::Kretprobe {
            handler: Some(ret_handler),
            entry_handler: Some(ret_entry),
            maxactive: 16,
            ..probes::Kretprobe::default()
        },
    )
    .map_err(|_| "cannot register the kretprobe")?;
    let n = sched::cpu_count();
    let mut ids = [0; 8];
    let count = (n + 1).min(ids.len());
    let per = if n == 1 { 5 } else { 30u64 };
    // Busy tasks on every CPU make the round robin move the sleepers
    // between CPUs (a woken task goes to whichever CPU switches first).
    SPIN_STOP.store(0, Ordering::Relaxed);
    let mut spin = [0; 8];
    let spinners = if n > 1 { n.min(spin.len()) } else { 0 };
    for t in spin.iter_mut().take(spinners) {
        *t = sched::spawn("smp-busy", spinner, 0).map_err(|_| "cannot spawn")?;
    }
    for t in ids.iter_mut().take(count) {
        *t = sched::spawn("smp-sleeper", sleeper_task, per).map_err(|_| "cannot spawn")?;
    }
    let mut joined = true;
    for t in ids.iter().take(count) {
        joined &= sched::join(*t, crate::selftest::JOIN_TICKS);
    }
    SPIN_STOP.store(1, Ordering::Relaxed);
    for t in spin.iter().take(spinners) {
        joined &= sched::join(*t, crate::selftest::JOIN_TICKS);
    }
    if !joined {
        let _ = probes::unregister(id);
        return Err("a sleeper or busy task did not finish");
    }
    let info = probes::info(id);
    let _ = probes::unregister(id);
    let info = info.ok_or("no probe info")?;
    let want = per * count as u64;
    if POKE_WRONG.load(Ordering::Relaxed) != 0 {
        return Err("the kretprobed function returned a wrong value");
    }
    if RET_SEEN.load(Ordering::Relaxed) != want || info.nmissed != 0 {
        crate::println!(
            "  returns seen {} of {want}, calls {} entries {}, hits {}, nmissed {}",
            RET_SEEN.load(Ordering::Relaxed),
            SLEEPER_CALLS.load(Ordering::Relaxed),
            RET_ENTRIES.load(Ordering::Relaxed),
            info.hits,
            info.nmissed
        );
        return Err("returns lost or reported at a wrong address");
    }
    if n > 1 && RET_CROSS.load(Ordering::Relaxed) == 0 {
        return Err("no call returned on another CPU than its entry");
    }
    Ok(())
}

static MAX_RET: AtomicU64 = AtomicU64::new(0);

fn max_ret(_: &mut probes::RetCtx<'_>, _: &mut arch::TrapFrame) -> i32 {
    MAX_RET.fetch_add(1, Ordering::Relaxed);
    0
}

/// maxactive 2 on a function that sleeps mid-call, called by more tasks
/// than that on every CPU at once: every call is either a return handled
/// or an entry counted in nmissed (exactly, none lost, none twice), and
/// every instance goes back to the pool.
fn maxactive_exhaustion_counted_exactly() -> Result<(), &'static str> {
    MAX_RET.store(0, Ordering::Relaxed);
    POKE_WRONG.store(0, Ordering::Relaxed);
    let id = probes::register_kretprobe(
        At::Symbol("st_smp_sleeper", 0),
        probes::Kretprobe {
            handler: Some(max_ret),
            maxactive: 2,
            ..probes::Kretprobe::default()
        },
    )
    .map_err(|_| "cannot register the kretprobe")?;
    let n = sched::cpu_count();
    let mut ids = [0; 8];
    let count = (2 * n).clamp(4, ids.len());
    let per = 10u64;
    for t in ids.iter_mut().take(count) {
        *t = sched::spawn("smp-maxact", sleeper_task, per).map_err(|_| "cannot spawn")?;
    }
    for t in ids.iter().take(count) {
        if !sched::join(*t, crate::selftest::JOIN_TICKS) {
            let _ = probes::unregister(id);
            return Err("a sleeper task did not finish");
        }
    }
    let info = probes::info(id);
    let _ = probes::unregister(id);
    let info = info.ok_or("no probe info")?;
    let calls = per * count as u64;
    if POKE_WRONG.load(Ordering::Relaxed) != 0 {
        return Err("the kretprobed function returned a wrong value");
    }
    if MAX_RET.load(Ordering::Relaxed) + info.nmissed != calls {
        crate::println!(
            "  returns handled {} + nmissed {} of {calls} calls, hits {}",
            MAX_RET.load(Ordering::Relaxed),
            info.nmissed,
            info.hits
        );
        return Err("returns + nmissed differ from the calls made");
    }
    if info.nmissed == 0 {
        return Err("maxactive 2 was never exhausted");
    }
    if MAX_RET.load(Ordering::Relaxed) == 0 {
        return Err("no return was handled");
    }
    if info.free_instances != 2 {
        return Err("an instance did not go back to the pool");
    }
    Ok(())
}
