//! Selftest suite `optprobe`: jump-optimized probes (issue 18). A probe
//! whose region the analysis accepts becomes a `jmp` to a detour; these
//! cases check that handlers see what the int3 path shows them, that every
//! instruction of a region runs exactly once per pass (results and hit
//! counts equal the int3 path's over every optimisable offset of 24
//! functions), that unregistering while the function runs is safe, and
//! that a gdb breakpoint inside a region sends the probe back to int3 and
//! its removal optimizes it again.

use core::arch::global_asm;
use core::hint::black_box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::probe_util::{check, unreg};
use arch::TrapFrame;
use probes::{At, ExecPath, Kprobe, Probe, ProbeId};

crate::probe_suite!(
    "optprobe",
    handlers_see_the_int3_registers,
    every_optimisable_offset_of_24_functions,
    unoptimise_on_unregister_while_running,
    gdb_breakpoint_in_region_falls_back_and_back,
    reads_show_the_original_instructions
);

global_asm!(
    ".pushsection .text.kdbg_selftest_optprobe, \"ax\", @progbits",
    // Known registers at st_op_regs_at: lea rax, [rdi+rsi]; add rax, rbx.
    ".globl st_op_regs",
    ".type st_op_regs, @function",
    "st_op_regs:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rbp, 0x9999",
    "mov rbx, 0x1111",
    "mov r12, 0x1212",
    "mov r13, 0x1313",
    "mov r14, 0x1414",
    "mov r15, 0x1515",
    "mov rcx, 0x2222",
    "mov rdx, 0x3333",
    "mov r8, 0x4444",
    "mov r9, 0x5555",
    "mov r10, 0x6666",
    "mov r11, 0x7777",
    "mov rsi, 0x8888",
    // Flags of a known value (ZF, PF) before the probe.
    "xor eax, eax",
    ".globl st_op_regs_at",
    "st_op_regs_at:",
    "lea rax, [rdi + rsi]",
    "add rax, rbx",
    "add rax, rcx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size st_op_regs, . - st_op_regs",
    ".popsection",
);

unsafe extern "C" {
    fn st_op_regs(x: u64) -> u64;
    static st_op_regs_at: u8;
}

fn leak(s: alloc::string::String) -> &'static str {
    alloc::boxed::Box::leak(s.into_boxed_str())
}

/// With more than one CPU online probes stay int3 (`other-cpus-online`):
/// the case checks that reason instead.
fn more_than_one_cpu() -> Option<Result<(), &'static str>> {
    if crate::sched::cpu_count() <= 1 {
        return None;
    }
    let r = (|| {
        let id = probes::register_kprobe(At::Symbol("st_op_f01", 0), counting())
            .map_err(|_| "register refused")?;
        let info = probes::info(id);
        unreg(id)?;
        let info = info.ok_or("probe vanished")?;
        check(
            info.path != ExecPath::Optimized && info.not_optimized == Some("other-cpus-online"),
            "optimized with more than one CPU online",
        )
    })();
    Some(r)
}

fn path_of(id: ProbeId) -> Option<ExecPath> {
    probes::info(id).map(|i| i.path)
}

static HITS: AtomicU64 = AtomicU64::new(0);

fn count_pre(_: &Probe, _: &mut TrapFrame) -> bool {
    HITS.fetch_add(1, Ordering::Relaxed);
    false
}

fn nop_post(_: &Probe, _: &mut TrapFrame) {}

fn counting() -> Kprobe {
    Kprobe {
        pre_handler: Some(count_pre),
        ..Kprobe::default()
    }
}

/// Never optimized: a post handler needs the single-step trap.
fn counting_int3() -> Kprobe {
    Kprobe {
        pre_handler: Some(count_pre),
        post_handler: Some(nop_post),
        ..Kprobe::default()
    }
}

fn traps() -> u64 {
    crate::dispatch::INT3_COUNT.load(Ordering::Relaxed)
}

const N_REGS: usize = 19;
static SEEN: [AtomicU64; N_REGS] = [const { AtomicU64::new(0) }; N_REGS];

fn regs_of(f: &TrapFrame) -> [u64; N_REGS] {
    [
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.r8, f.r9, f.r10, f.r11, f.r12, f.r13,
        f.r14, f.r15, f.rip, f.rsp, f.rflags, f.cs,
    ]
}

fn record_pre(_: &Probe, f: &mut TrapFrame) -> bool {
    for (s, v) in SEEN.iter().zip(regs_of(f)) {
        s.store(v, Ordering::Relaxed);
    }
    false
}

fn seen() -> [u64; N_REGS] {
    core::array::from_fn(|i| SEEN[i].load(Ordering::Relaxed))
}

fn regs_addr() -> u64 {
    core::ptr::addr_of!(st_op_regs_at) as u64
}

#[inline(never)]
fn call_regs(x: u64) -> u64 {
    // SAFETY: plain asm function (saves what it uses).
    unsafe { st_op_regs(black_box(x)) }
}

/// The pre handler of an optimized probe sees every register the int3
/// path shows (`rip` = address + 1 in both), and the probed code computes
/// the same.
fn handlers_see_the_int3_registers() -> Result<(), &'static str> {
    if let Some(r) = more_than_one_cpu() {
        return r;
    }
    let at = regs_addr();
    let want = 5 + 0x8888 + 0x1111 + 0x2222;
    let id = probes::register_kprobe(
        At::Addr(at),
        Kprobe {
            pre_handler: Some(record_pre),
            post_handler: Some(nop_post),
            ..Kprobe::default()
        },
    )
    .map_err(|_| "register (int3) refused")?;
    check(
        path_of(id) != Some(ExecPath::Optimized),
        "a post handler was optimized",
    )?;
    let r1 = call_regs(5);
    let int3 = seen();
    unreg(id)?;
    let id = probes::register_kprobe(
        At::Addr(at),
        Kprobe {
            pre_handler: Some(record_pre),
            ..Kprobe::default()
        },
    )
    .map_err(|_| "register (optimized) refused")?;
    let path = path_of(id);
    let t0 = traps();
    let r2 = call_regs(5);
    let t = traps() - t0;
    let opt = seen();
    unreg(id)?;
    check(
        path == Some(ExecPath::Optimized),
        "the probe was not optimized",
    )?;
    check(t == 0, "the optimized hit trapped")?;
    check(
        r1 == want && r2 == want,
        "the probed function computed a different result",
    )?;
    check(
        int3[15] == at + 1,
        "the int3 handler's rip is not address + 1",
    )?;
    if int3 != opt {
        return Err(leak(alloc::format!(
            "registers differ (rax rbx rcx rdx rsi rdi rbp r8-r15 rip rsp rflags cs):\n  int3      {int3:x?}\n  optimized {opt:x?}"
        )));
    }
    Ok(())
}

// 24 functions of different shapes (loops, rip-relative data, calls,
// stack arrays, 128-bit arithmetic, division, early returns).
static TABLE: [u64; 8] = [3, 1, 4, 1, 5, 9, 2, 6];
static COUNTER: AtomicU64 = AtomicU64::new(0);

macro_rules! st_fn {
    ($name:ident, |$x:ident| $body:expr) => {
        #[unsafe(no_mangle)]
        #[inline(never)]
        extern "C" fn $name(x: u64) -> u64 {
            let $x = black_box(x);
            $body
        }
    };
}

st_fn!(st_op_f01, |x| x.wrapping_mul(3).wrapping_add(1));
st_fn!(st_op_f02, |x| (0..x % 16)
    .fold(0u64, |a, i| a.wrapping_add(i * i)));
st_fn!(st_op_f03, |x| TABLE[(x % 8) as usize].wrapping_add(x));
st_fn!(st_op_f04, |x| (x ^ 0x5555).rotate_left(7) | (x >> 3));
st_fn!(st_op_f05, |x| {
    let mut a = [x; 8];
    for (i, v) in a.iter_mut().enumerate() {
        *v = v.wrapping_add(black_box(i as u64));
    }
    black_box(&mut a);
    a.iter().fold(0u64, |s, v| s.wrapping_add(*v))
});
st_fn!(st_op_f06, |x| if x & 1 == 0 {
    x / 2
} else {
    x.wrapping_mul(3).wrapping_add(1)
});
st_fn!(st_op_f07, |x| {
    let mut n = 0;
    let mut v = x;
    while v != 0 {
        n += v & 1;
        v >>= 1;
    }
    n
});
st_fn!(st_op_f08, |x| st_op_f01(x) ^ st_op_f04(x));
st_fn!(st_op_f09, |x| u64::from(x.leading_zeros()) * 100
    + u64::from(x.trailing_zeros()));
st_fn!(st_op_f10, |x| {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..x % 40 {
        let t = a.wrapping_add(b);
        a = b;
        b = t;
    }
    a
});
st_fn!(st_op_f11, |x| {
    COUNTER.fetch_add(1, Ordering::Relaxed);
    x.wrapping_add(TABLE[1])
});
st_fn!(st_op_f12, |x| {
    let (mut a, mut b) = (x | 1, 48u64);
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
});
st_fn!(
    st_op_f13,
    |x| ((u128::from(x) * 0x9e37_79b9_7f4a_7c15u128) >> 64) as u64
);
st_fn!(st_op_f14, |x| x.swap_bytes() ^ x.wrapping_mul(0x0101_0101));
st_fn!(st_op_f15, |x| x
    .clamp(100, 100_000)
    .wrapping_sub(black_box(7)));
st_fn!(st_op_f16, |x| {
    let mut s = 0u64;
    for i in 0..64u64 {
        if (x >> i) & 0xf == 0xf {
            break;
        }
        s = s.wrapping_add(i);
    }
    s
});
st_fn!(st_op_f17, |x| {
    let a = black_box(x.wrapping_add(1));
    let b = black_box(x.wrapping_mul(5));
    let c = black_box(a ^ b);
    a.wrapping_add(b).wrapping_sub(c) | 1
});
st_fn!(st_op_f18, |x| (1..=(x % 15))
    .fold(1u64, |a, i| a.wrapping_mul(i) % 1_000_003));
st_fn!(st_op_f19, |x| {
    let mut v = (x % 1000) + 1;
    let mut n = 0u64;
    while v != 1 && n < 200 {
        v = if v.is_multiple_of(2) {
            v / 2
        } else {
            3 * v + 1
        };
        n += 1;
    }
    n
});
st_fn!(st_op_f20, |x| {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
});
st_fn!(st_op_f21, |x| x / black_box((x % 7) + 1)
    + x % black_box(13));
st_fn!(st_op_f22, |x| {
    let n = x >> 8;
    if n < 2 {
        return n;
    }
    let mut r = n;
    let mut y = r.div_ceil(2);
    while y < r {
        r = y;
        y = (r + n / r) / 2;
    }
    r
});
st_fn!(st_op_f23, |x| x
    .reverse_bits()
    .wrapping_add(st_op_f01(x & 0xff)));
st_fn!(st_op_f24, |x| {
    let mut v = x;
    let mut s = 0;
    while v != 0 {
        s += v % 10;
        v /= 10;
    }
    s
});

type StFn = extern "C" fn(u64) -> u64;

static FUNCS: [(&str, StFn); 24] = [
    ("st_op_f01", st_op_f01),
    ("st_op_f02", st_op_f02),
    ("st_op_f03", st_op_f03),
    ("st_op_f04", st_op_f04),
    ("st_op_f05", st_op_f05),
    ("st_op_f06", st_op_f06),
    ("st_op_f07", st_op_f07),
    ("st_op_f08", st_op_f08),
    ("st_op_f09", st_op_f09),
    ("st_op_f10", st_op_f10),
    ("st_op_f11", st_op_f11),
    ("st_op_f12", st_op_f12),
    ("st_op_f13", st_op_f13),
    ("st_op_f14", st_op_f14),
    ("st_op_f15", st_op_f15),
    ("st_op_f16", st_op_f16),
    ("st_op_f17", st_op_f17),
    ("st_op_f18", st_op_f18),
    ("st_op_f19", st_op_f19),
    ("st_op_f20", st_op_f20),
    ("st_op_f21", st_op_f21),
    ("st_op_f22", st_op_f22),
    ("st_op_f23", st_op_f23),
    ("st_op_f24", st_op_f24),
];

const INPUTS: [u64; 4] = [0, 7, 123_457, u64::MAX - 3];

fn run(f: StFn) -> [u64; 4] {
    INPUTS.map(|x| f(black_box(x)))
}

/// Every offset of 24 functions where a probe is accepted: the int3 path
/// (a post handler keeps it there) gives the reference hit count; where
/// the same probe without a post handler is optimized, it must compute the
/// unprobed results, take no trap and hit exactly as often.
fn every_optimisable_offset_of_24_functions() -> Result<(), &'static str> {
    if let Some(r) = more_than_one_cpu() {
        return r;
    }
    let mut functions = 0;
    let mut offsets = 0;
    for (name, f) in FUNCS {
        let native = run(f);
        let sym = crate::kallsyms::find(name).ok_or("a test function is missing from kallsyms")?;
        let mut any = false;
        for off in 0..sym.size {
            HITS.store(0, Ordering::Relaxed);
            let Ok(id) = probes::register_kprobe(At::Symbol(name, off), counting_int3()) else {
                continue;
            };
            let r = run(f);
            let int3_hits = HITS.load(Ordering::Relaxed);
            unreg(id)?;
            if r != native {
                return Err(leak(alloc::format!(
                    "{name}+{off:#x}: the int3 probe changed the result"
                )));
            }
            let id = probes::register_kprobe(At::Symbol(name, off), counting())
                .map_err(|_| "the probe without a post handler was refused")?;
            if path_of(id) != Some(ExecPath::Optimized) {
                unreg(id)?;
                continue;
            }
            HITS.store(0, Ordering::Relaxed);
            let t0 = traps();
            let r = run(f);
            let t = traps() - t0;
            let hits = HITS.load(Ordering::Relaxed);
            unreg(id)?;
            if r != native || hits != int3_hits || t != 0 {
                return Err(leak(alloc::format!(
                    "{name}+{off:#x} optimized: results {r:x?} (unprobed {native:x?}), hits {hits} (int3 {int3_hits}), traps {t}"
                )));
            }
            any = true;
            offsets += 1;
        }
        if any {
            functions += 1;
        }
    }
    if functions < 20 {
        return Err(leak(alloc::format!(
            "only {functions} functions had an optimisable offset ({offsets} offsets)"
        )));
    }
    crate::println!("  optprobe: {offsets} optimized offsets in {functions} functions");
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);
static WRONG: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

fn worker(_: u64) {
    let want = run(st_op_f20);
    while !STOP.load(Ordering::Relaxed) {
        if run(st_op_f20) != want {
            WRONG.fetch_add(1, Ordering::Relaxed);
        }
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A task calls the function in a loop (preempted by the timer anywhere,
/// also inside the region) while the probe is optimized and unregistered
/// over and over.
fn unoptimise_on_unregister_while_running() -> Result<(), &'static str> {
    if let Some(r) = more_than_one_cpu() {
        return r;
    }
    STOP.store(false, Ordering::Relaxed);
    WRONG.store(0, Ordering::Relaxed);
    CALLS.store(0, Ordering::Relaxed);
    let t = crate::sched::spawn("op-worker", worker, 0).map_err(|_| "cannot spawn")?;
    let mut optimized = 0;
    for i in 0..60u64 {
        let id = probes::register_kprobe(At::Symbol("st_op_f20", 0), counting())
            .map_err(|_| "register refused")?;
        if path_of(id) == Some(ExecPath::Optimized) {
            optimized += 1;
        }
        crate::sched::sleep_ticks(1 + i % 2);
        unreg(id)?;
        crate::sched::yield_now();
    }
    STOP.store(true, Ordering::Relaxed);
    let joined = crate::sched::join(t, crate::selftest::JOIN_TICKS);
    check(joined, "the worker did not finish")?;
    check(
        WRONG.load(Ordering::Relaxed) == 0,
        "the worker computed a wrong result",
    )?;
    check(CALLS.load(Ordering::Relaxed) > 0, "the worker never ran")?;
    check(optimized > 0, "the probe was never optimized")
}

fn text(addr: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    let _ = arch::mem::read(addr, &mut b);
    b
}

/// gdb's breakpoint at the probe or inside its region puts the probe back
/// to int3 (with the reason); removing it optimizes the probe again.
fn gdb_breakpoint_in_region_falls_back_and_back() -> Result<(), &'static str> {
    if let Some(r) = more_than_one_cpu() {
        return r;
    }
    let at = regs_addr();
    let id = probes::register_kprobe(At::Addr(at), counting()).map_err(|_| "register refused")?;
    let r = (|| {
        check(path_of(id) == Some(ExecPath::Optimized), "not optimized")?;
        check(text(at)[0] == 0xe9, "no jump at the probe")?;
        for (bp, why) in [(at + 4, "probe-in-region"), (at, "gdb-breakpoint")] {
            probes::CORE
                .gdb_insert(bp)
                .map_err(|_| "gdb breakpoint refused")?;
            let info = probes::info(id).ok_or("probe vanished")?;
            let back = text(at)[0];
            probes::CORE
                .gdb_remove(bp)
                .map_err(|_| "gdb remove failed")?;
            check(
                info.path != ExecPath::Optimized,
                "still optimized with a breakpoint in the region",
            )?;
            check(
                info.not_optimized == Some(why),
                "wrong reason for staying int3",
            )?;
            check(
                back == 0xcc,
                "no int3 at the probe while the breakpoint is there",
            )?;
            check(
                path_of(id) == Some(ExecPath::Optimized),
                "not optimized again after the breakpoint went",
            )?;
            check(text(at)[0] == 0xe9, "no jump after the breakpoint went")?;
        }
        HITS.store(0, Ordering::Relaxed);
        let r = call_regs(1);
        check(
            r == 1 + 0x8888 + 0x1111 + 0x2222,
            "wrong result after the round trips",
        )?;
        check(
            HITS.load(Ordering::Relaxed) == 1,
            "the probe did not hit once",
        )
    })();
    unreg(id)?;
    r
}

/// A debugger's memory read shows the original instructions where the
/// jump is (as it shows them where an int3 is).
fn reads_show_the_original_instructions() -> Result<(), &'static str> {
    if let Some(r) = more_than_one_cpu() {
        return r;
    }
    let at = regs_addr();
    let before = text(at);
    let id = probes::register_kprobe(At::Addr(at), counting()).map_err(|_| "register refused")?;
    let raw = text(at);
    let mut shown = raw;
    probes::CORE.hide_jumps(at, &mut shown);
    let mut tail = [0u8; 6];
    tail.copy_from_slice(&raw[2..]);
    let mut tail_shown = tail;
    probes::CORE.hide_jumps(at + 2, &mut tail_shown);
    let opt = path_of(id) == Some(ExecPath::Optimized);
    unreg(id)?;
    check(opt, "not optimized")?;
    check(raw != before, "the text was not patched")?;
    check(shown == before, "the read shows the jump")?;
    check(
        tail_shown == before[2..],
        "a read starting inside the jump shows it",
    )?;
    check(
        text(at) == before,
        "unregistering did not restore the bytes",
    )
}
