//! Workloads: what the kernel's tasks call continuously (serve mode) and what
//! tests and users probe, modelled on the 2004-2005 kprobes example modules (do_fork, sys_open).
//! Every function is `#[unsafe(no_mangle)] extern "C"`, `#[inline(never)]`,
//! with full DWARF (the release profile keeps debug info).
//!
//! Call them through the `call_*` wrappers: those log the ground truth
//! ([`truth`]) when `kdbg.truth` is on, and count calls for the console's
//! activity line.

pub mod insn;
pub mod inspect;
pub mod truth;

use core::hint::black_box;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Registers handed to [`spawn_task`] (the `struct pt_regs *` of do_fork).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskRegs {
    pub ip: u64,
    pub sp: u64,
    pub flags: u64,
}

/// Nested part of [`Request`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestInner {
    pub lo: u32,
    pub hi: u32,
}

/// What [`handle_request`] takes: an integer, a string pointer and a nested struct.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub id: i32,
    /// NUL-terminated.
    pub name: *const u8,
    pub inner: RequestInner,
}

/// `CLONE_PARENT_SETTID`: [`spawn_task`] writes the new id through `parent_tid`.
pub const CLONE_PARENT_SETTID: u64 = 0x0010_0000;
/// `CLONE_CHILD_SETTID`: [`spawn_task`] writes the new id through `child_tid`.
pub const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
/// A flag [`spawn_task`] refuses with -1 (EPERM).
pub const CLONE_FORBIDDEN: u64 = 0x8000_0000;

/// errno values returned (negated).
pub const EPERM: i64 = 1;
pub const ENOENT: i64 = 2;
pub const EACCES: i64 = 13;
pub const EFAULT: i64 = 14;
pub const EINVAL: i64 = 22;

static NEXT_PID: AtomicI64 = AtomicI64::new(100);
static NEXT_FD: AtomicI64 = AtomicI64::new(3);

/// The do_fork analogue: six arguments. Returns the new id, -22 (EINVAL)
/// when `stack_size` is 0, -1 (EPERM) for [`CLONE_FORBIDDEN`].
///
/// # Safety
/// `regs` is null or readable; `parent_tid`/`child_tid` are null or writable.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn spawn_task(
    clone_flags: u64,
    stack_start: u64,
    regs: *const TaskRegs,
    stack_size: u64,
    parent_tid: *mut i32,
    child_tid: *mut i32,
) -> i64 {
    if stack_size == 0 {
        return -EINVAL;
    }
    if clone_flags & CLONE_FORBIDDEN != 0 {
        return -EPERM;
    }
    // SAFETY: the caller guarantees regs is null or readable.
    let ip = unsafe { regs.as_ref() }.map_or(0, |r| r.ip);
    let pid = self::next_id!(NEXT_PID);
    black_box((ip, stack_start));
    if clone_flags & CLONE_PARENT_SETTID != 0 && !parent_tid.is_null() {
        // SAFETY: the caller guarantees parent_tid is null or writable.
        unsafe { parent_tid.write(pid as i32) };
    }
    if clone_flags & CLONE_CHILD_SETTID != 0 && !child_tid.is_null() {
        // SAFETY: the caller guarantees child_tid is null or writable.
        unsafe { child_tid.write(pid as i32) };
    }
    pid
}

/// The files [`sys_open`] knows.
pub const FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/hostname",
    "/dev/null",
    "/proc/kdbg/version",
];

/// Paths the open worker cycles through (two are missing: -2).
pub const OPEN_PATHS: &[&str] = &[
    "/etc/passwd\0",
    "/etc/missing\0",
    "/etc/hostname\0",
    "/dev/null\0",
    "/tmp/nothing-here\0",
    "/proc/kdbg/version\0",
];

/// `O_WRONLY`/`O_RDWR` bits of `flags`.
pub const O_ACCMODE: u32 = 3;

/// Opens a NUL-terminated path: a new descriptor (>= 3), -2 (ENOENT) for a
/// missing file, -13 (EACCES) for writing `/etc/passwd`, -14 (EFAULT) for
/// null, -22 (EINVAL) for a path longer than 255 bytes.
///
/// # Safety
/// `path` is null or a readable NUL-terminated string.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn sys_open(path: *const u8, flags: u32, mode: u32) -> i64 {
    if path.is_null() {
        return -EFAULT;
    }
    // SAFETY: the caller guarantees a readable NUL-terminated string.
    let Some(name) = (unsafe { c_str(path, 255) }) else {
        return -EINVAL;
    };
    black_box(mode);
    let Some(_) = FILES.iter().position(|f| *f == name) else {
        return -ENOENT;
    };
    if name == "/etc/passwd" && flags & O_ACCMODE != 0 {
        return -EACCES;
    }
    self::next_id!(NEXT_FD)
}

/// Reads a NUL-terminated string of at most `max` bytes.
///
/// # Safety
/// `p` must be readable up to its NUL or `max` bytes.
unsafe fn c_str<'a>(p: *const u8, max: usize) -> Option<&'a str> {
    let mut len = 0;
    // SAFETY: the caller guarantees readability up to the NUL or max bytes.
    while unsafe { p.add(len).read() } != 0 {
        len += 1;
        if len > max {
            return None;
        }
    }
    // SAFETY: the len bytes before the NUL are readable.
    core::str::from_utf8(unsafe { core::slice::from_raw_parts(p, len) }).ok()
}

/// Eight arguments, two of them on the stack. Weighted so that the order
/// matters: a + 2b + 3c + ... + 8h.
#[unsafe(no_mangle)]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn sum8(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64) -> u64 {
    a.wrapping_add(b.wrapping_mul(2))
        .wrapping_add(c.wrapping_mul(3))
        .wrapping_add(d.wrapping_mul(4))
        .wrapping_add(e.wrapping_mul(5))
        .wrapping_add(f.wrapping_mul(6))
        .wrapping_add(g.wrapping_mul(7))
        .wrapping_add(h.wrapping_mul(8))
}

/// Recursive Fibonacci (a tree of nested calls for return probes).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let a = black_box(fib(n - 1));
    let b = black_box(fib(n - 2));
    a.wrapping_add(b)
}

/// Linear recursion: `nest(d)` calls itself exactly `d` levels deep and
/// returns `d` (nested return probes with a known depth).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn nest(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    black_box(nest(depth - 1)) + 1
}

/// Takes a struct pointer: returns `id + inner.lo + inner.hi + strlen(name)`,
/// or -14 (EFAULT) for null.
///
/// # Safety
/// `req` is null or points to a readable [`Request`] whose `name` is null or a
/// readable NUL-terminated string.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn handle_request(req: *const Request) -> i64 {
    // SAFETY: the caller guarantees req is null or readable.
    let Some(r) = (unsafe { req.as_ref() }) else {
        return -EFAULT;
    };
    let name_len = if r.name.is_null() {
        0
    } else {
        // SAFETY: the caller guarantees name is a readable NUL-terminated string.
        unsafe { c_str(r.name, 255) }.map_or(0, str::len)
    };
    i64::from(r.id) + i64::from(r.inner.lo) + i64::from(r.inner.hi) + name_len as i64
}

/// The function the benchmarks probe: small, cheap, no side effects.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn bench_target(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(1)
}

/// The benchmark hot loop: `iterations` calls of [`bench_target`].
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn hot_loop(iterations: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..iterations {
        acc = acc.wrapping_add(bench_target(black_box(i)));
    }
    acc
}

// ---- wrappers: truth log + statistics -------------------------------------

/// Calls per workload since boot (the console's activity line).
pub struct Stats {
    pub spawn_task: AtomicU64,
    pub sys_open: AtomicU64,
    pub sys_open_failed: AtomicU64,
    pub sum8: AtomicU64,
    pub fib: AtomicU64,
    pub handle_request: AtomicU64,
    pub insn: AtomicU64,
}

pub static STATS: Stats = Stats {
    spawn_task: AtomicU64::new(0),
    sys_open: AtomicU64::new(0),
    sys_open_failed: AtomicU64::new(0),
    sum8: AtomicU64::new(0),
    fib: AtomicU64::new(0),
    handle_request: AtomicU64::new(0),
    insn: AtomicU64::new(0),
};

/// [`spawn_task`] with tid outputs on the stack; returns (ret, parent_tid, child_tid).
pub fn call_spawn_task(
    clone_flags: u64,
    stack_start: u64,
    regs: &TaskRegs,
    stack_size: u64,
) -> (i64, i32, i32) {
    let mut ptid = 0i32;
    let mut ctid = 0i32;
    let regs_ptr = regs as *const TaskRegs;
    let (pp, cp) = (&mut ptid as *mut i32, &mut ctid as *mut i32);
    // SAFETY: all pointers are to live locals.
    let ret = unsafe { spawn_task(clone_flags, stack_start, regs_ptr, stack_size, pp, cp) };
    STATS.spawn_task.fetch_add(1, Ordering::Relaxed);
    truth::log(
        "spawn_task",
        format_args!(
            "clone_flags={clone_flags:#x} stack_start={stack_start:#x} regs={:#x} stack_size={stack_size:#x} parent_tid={:#x} child_tid={:#x} ret={ret}",
            regs_ptr as u64, pp as u64, cp as u64
        ),
    );
    (ret, ptid, ctid)
}

/// [`sys_open`] on `path`, which must end in `\0` (else -22 without a call).
pub fn call_sys_open(path: &str, flags: u32, mode: u32) -> i64 {
    if !path.ends_with('\0') {
        return -EINVAL;
    }
    let p = path.as_ptr();
    // SAFETY: path is a live, NUL-terminated string.
    let ret = unsafe { sys_open(p, flags, mode) };
    STATS.sys_open.fetch_add(1, Ordering::Relaxed);
    if ret < 0 {
        STATS.sys_open_failed.fetch_add(1, Ordering::Relaxed);
    }
    let text = path.trim_end_matches('\0');
    truth::log(
        "sys_open",
        format_args!(
            "path={:#x}:\"{text}\" flags={flags:#x} mode={mode:#x} ret={ret}",
            p as u64
        ),
    );
    ret
}

/// [`sum8`].
#[allow(clippy::too_many_arguments)]
pub fn call_sum8(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64) -> u64 {
    let ret = sum8(a, b, c, d, e, f, g, h);
    STATS.sum8.fetch_add(1, Ordering::Relaxed);
    truth::log(
        "sum8",
        format_args!(
            "a={a:#x} b={b:#x} c={c:#x} d={d:#x} e={e:#x} f={f:#x} g={g:#x} h={h:#x} ret={ret:#x}"
        ),
    );
    ret
}

/// [`fib`] (outermost call logged).
pub fn call_fib(n: u64) -> u64 {
    let ret = fib(n);
    STATS.fib.fetch_add(1, Ordering::Relaxed);
    truth::log("fib", format_args!("n={n:#x} ret={ret:#x}"));
    ret
}

/// [`nest`] (outermost call logged).
pub fn call_nest(depth: u64) -> u64 {
    let ret = nest(depth);
    truth::log("nest", format_args!("depth={depth:#x} ret={ret:#x}"));
    ret
}

/// [`handle_request`]; `name` must end in `\0`.
pub fn call_handle_request(id: i32, name: &str, lo: u32, hi: u32) -> i64 {
    let name_ptr = if name.ends_with('\0') {
        name.as_ptr()
    } else {
        core::ptr::null()
    };
    let req = Request {
        id,
        name: name_ptr,
        inner: RequestInner { lo, hi },
    };
    let rp = &req as *const Request;
    // SAFETY: req and its name are live.
    let ret = unsafe { handle_request(rp) };
    STATS.handle_request.fetch_add(1, Ordering::Relaxed);
    truth::log(
        "handle_request",
        format_args!(
            "req={:#x} req.id={id} req.name={:#x}:\"{}\" req.inner.lo={lo:#x} req.inner.hi={hi:#x} ret={ret}",
            rp as u64,
            name_ptr as u64,
            name.trim_end_matches('\0')
        ),
    );
    ret
}

/// Calls every instruction-class workload once with `x`; returns how many
/// results differed from [`insn::expected`] (0 when all is well).
pub fn call_insn_all(x: u64) -> u32 {
    let mut bad = 0;
    let mut check = |name: &'static str, ret: u64, want: Option<u64>| {
        STATS.insn.fetch_add(1, Ordering::Relaxed);
        if name == "insn_rip_load" {
            truth::log(name, format_args!("ret={ret:#x}"));
        } else {
            truth::log(name, format_args!("x={x:#x} ret={ret:#x}"));
        }
        if want.is_some_and(|e| e != ret) {
            bad += 1;
        }
    };
    let e = |name| insn::expected(name, x);
    // SAFETY: the insn workloads follow the C ABI as documented in `insn`;
    // insn_cli_sti is only called with interrupts on (task context).
    unsafe {
        check(
            "insn_rip_store",
            insn::insn_rip_store(x),
            e("insn_rip_store"),
        );
        check("insn_rip_load", insn::insn_rip_load(), Some(x));
        check(
            "insn_pushf_popf",
            insn::insn_pushf_popf(x),
            e("insn_pushf_popf"),
        );
        if arch::cpu::interrupts_enabled() {
            check("insn_cli_sti", insn::insn_cli_sti(x), e("insn_cli_sti"));
        }
        check(
            "insn_call_rel32",
            insn::insn_call_rel32(x),
            e("insn_call_rel32"),
        );
        check(
            "call_insn_jcc_rel8",
            insn::call_insn_jcc_rel8(x),
            e("call_insn_jcc_rel8"),
        );
        check(
            "call_insn_jcc_rel32",
            insn::call_insn_jcc_rel32(x),
            e("call_insn_jcc_rel32"),
        );
        check("insn_jmp_rel8", insn::insn_jmp_rel8(x), e("insn_jmp_rel8"));
        check(
            "call_insn_ret_imm16",
            insn::call_insn_ret_imm16(x),
            e("call_insn_ret_imm16"),
        );
        check(
            "insn_call_reg",
            insn::insn_call_reg(x, insn::kdbg_insn_helper),
            e("insn_call_reg"),
        );
        check(
            "insn_jmp_reg",
            insn::insn_jmp_reg(x, insn::kdbg_insn_helper),
            e("insn_jmp_reg"),
        );
        check("insn_loop", insn::insn_loop(x, 0, 0, 3), e("insn_loop"));
    }
    bad
}

// ---- the worker tasks (serve mode) ----------------------------------------

fn fork_worker(_: u64) {
    let mut i = 0u64;
    loop {
        let regs = TaskRegs {
            ip: 0x40_0000 + i,
            sp: 0x7fff_0000,
            flags: 0x202,
        };
        let flags = match i % 4 {
            0 => 0x11,
            1 => 0x11 | CLONE_PARENT_SETTID | CLONE_CHILD_SETTID,
            2 => CLONE_FORBIDDEN,
            _ => 0x11,
        };
        let size = if i % 8 == 7 { 0 } else { 0x4000 };
        call_spawn_task(flags, 0x7fff_0000 + i * 0x1000, &regs, size);
        i += 1;
        crate::sched::sleep_ticks(1);
    }
}

fn open_worker(_: u64) {
    let mut i = 0usize;
    loop {
        let path = OPEN_PATHS
            .get(i % OPEN_PATHS.len())
            .copied()
            .unwrap_or("/dev/null\0");
        let flags = if i % 5 == 4 { 1 } else { 0 };
        call_sys_open(path, flags, 0o644);
        i += 1;
        crate::sched::sleep_ticks(1);
    }
}

/// Written (never read) by the math worker and handed by address to
/// [`kdbg_pass_watched`], which does not read it either: only a probe's
/// capture (`monitor jprobe kdbg_pass_watched fetch=u64@arg0`) reads it, so
/// an access watchpoint on it tells the program's writes from the probe
/// core's reads.
#[unsafe(no_mangle)]
pub static KDBG_WATCHED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Takes the address of [`KDBG_WATCHED`] and does nothing with it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn kdbg_pass_watched(p: *const u64) {
    core::hint::black_box(p);
}

fn math_worker(_: u64) {
    let mut i = 0u64;
    loop {
        KDBG_WATCHED.store(i, core::sync::atomic::Ordering::Relaxed);
        kdbg_pass_watched(KDBG_WATCHED.as_ptr());
        call_sum8(i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7);
        call_fib(i % 12);
        call_handle_request((i % 1000) as i32, "request\0", (i % 7) as u32, 0x100);
        inspect::call_inspect(i);
        i += 1;
        crate::sched::sleep_ticks(1);
    }
}

fn insn_worker(_: u64) {
    let mut i = 0u64;
    loop {
        call_insn_all(i);
        call_nest(i % 6);
        i += 1;
        crate::sched::sleep_ticks(1);
    }
}

/// A worker task: its name and entry point.
pub type Worker = (&'static str, fn(u64));

/// The worker tasks' names and entry points.
pub const WORKERS: &[Worker] = &[
    ("fork-worker", fork_worker),
    ("open-worker", open_worker),
    ("math-worker", math_worker),
    ("insn-worker", insn_worker),
];

/// Starts the worker tasks; returns how many started.
pub fn start_workers() -> usize {
    WORKERS
        .iter()
        .filter(|(name, entry)| crate::sched::spawn(name, *entry, 0).is_ok())
        .count()
}

/// Hands out the next value of an id counter ([`NEXT_PID`], [`NEXT_FD`]):
/// a plain `mov` load, then a `lock cmpxchg` that stores one more unless
/// another CPU got there first. Not a `fetch_add`: its `lock xadd` is one
/// locked read-modify-write, and QEMU 7.2 under MTTCG (several vCPUs in
/// parallel threads) never reports an access watchpoint (DR7 RW=11, which is
/// how x86 watches reads: `watch -r`, gdb's `rwatch`/`awatch`) on a locked
/// read-modify-write (docs/SMP.md, "Watchpoints and locked instructions").
/// The plain load is seen by read and access watchpoints on any CPU count,
/// the `cmpxchg`'s store by write watchpoints. The load is written in asm:
/// LLVM turns a load + `cmpxchg` loop back into `lock xadd`. A macro, not a
/// function, so that the loop keeps the caller's source line (line probes,
/// `info line`) and a watchpoint stop names the caller.
#[collapse_debuginfo(yes)]
macro_rules! next_id {
    ($counter:expr) => {{
        let counter: &AtomicI64 = &$counter;
        loop {
            let current: i64;
            // SAFETY: an 8-byte `mov` from an aligned `AtomicI64` (an atomic
            // load on x86_64); it only reads the counter.
            unsafe {
                core::arch::asm!(
                    "mov {}, qword ptr [{}]",
                    out(reg) current,
                    in(reg) counter.as_ptr(),
                    options(nostack, readonly, preserves_flags),
                );
            }
            if counter
                .compare_exchange_weak(
                    current,
                    current.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                break current;
            }
        }
    }};
}
pub(crate) use next_id;
