//! Selftest suite `kprobe`: the probe core on the live kernel, modelled on
//! Linux's lib/test_kprobes.c. The probed functions are small asm functions
//! below whose first instruction (or an inner one) is each class the core
//! distinguishes; every test compares probed results with unprobed ones.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::probe_util::{check, unreg};
use arch::TrapFrame;
use probes::{At, ExecPath, Kprobe, Probe, ProbeError, ProbeId, Refusal};

crate::probe_suite!(
    "kprobe",
    pre_post_handlers,
    probe_arrays,
    nmissed_from_recursive_handler,
    emulated_jcc,
    emulated_jcc_all_conditions,
    pre_handler_skips_instruction,
    aggregate_handler_order,
    emulated_loop,
    emulated_ret_imm_call_jmp_reg,
    emulated_flags,
    rip_relative_load_store,
    boosted_one_trap_per_hit,
    every_offset,
    every_offset_of_workloads,
    refusals,
    toggle_256_probes,
    register_unregister_10000,
    fault_in_out_of_line_insn
);

global_asm!(
    ".pushsection .text.kdbg_selftest_kprobe, \"ax\", @progbits",
    // rdi + rsi
    ".globl st_kp_add",
    ".type st_kp_add, @function",
    "st_kp_add:",
    "lea rax, [rdi + rsi]",
    "ret",
    ".size st_kp_add, . - st_kp_add",
    // 1 if rdi < rsi (signed) else 2
    ".globl st_kp_jcc",
    ".type st_kp_jcc, @function",
    "st_kp_jcc:",
    "cmp rdi, rsi",
    "jl 2f",
    "mov eax, 2",
    "ret",
    "2:",
    "mov eax, 1",
    "ret",
    ".size st_kp_jcc, . - st_kp_jcc",
    // one `loop` with rcx = rdi: rcx after it, + 0x100000 if it branched
    ".globl st_kp_loop",
    ".type st_kp_loop, @function",
    "st_kp_loop:",
    "mov rcx, rdi",
    "xor eax, eax",
    "loop 2f",
    "mov rax, rcx",
    "ret",
    "2:",
    "lea rax, [rcx + 0x100000]",
    "ret",
    ".size st_kp_loop, . - st_kp_loop",
    // pushes two words, calls a `ret 16`: returns the rsp difference (0)
    ".globl st_kp_retimm",
    ".type st_kp_retimm, @function",
    "st_kp_retimm:",
    "mov rax, rsp",
    "push 7",
    "push 9",
    "call 2f",
    "sub rax, rsp",
    "ret",
    "2:",
    "ret 16",
    ".size st_kp_retimm, . - st_kp_retimm",
    // f(rdi, rsi) through a register: call rax
    ".globl st_kp_callreg",
    ".type st_kp_callreg, @function",
    "st_kp_callreg:",
    "mov rax, rdx",
    "call rax",
    "ret",
    ".size st_kp_callreg, . - st_kp_callreg",
    // tail call through a register: jmp rax
    ".globl st_kp_jmpreg",
    ".type st_kp_jmpreg, @function",
    "st_kp_jmpreg:",
    "mov rax, rdx",
    "jmp rax",
    ".size st_kp_jmpreg, . - st_kp_jmpreg",
    // [rdi] = flags after cli, [rdi+8] = flags after sti; returns flags after popf
    ".globl st_kp_flags",
    ".type st_kp_flags, @function",
    "st_kp_flags:",
    "pushfq",
    "cli",
    "pushfq",
    "pop rax",
    "mov [rdi], rax",
    "sti",
    "pushfq",
    "pop rax",
    "mov [rdi + 8], rax",
    "popfq",
    "pushfq",
    "pop rax",
    "ret",
    ".size st_kp_flags, . - st_kp_flags",
    // returns st_kp_data[0]; stores rdi into st_kp_data[1]
    ".globl st_kp_riprel",
    ".type st_kp_riprel, @function",
    "st_kp_riprel:",
    "mov rax, qword ptr [rip + st_kp_data]",
    "mov qword ptr [rip + st_kp_data + 8], rdi",
    "ret",
    ".size st_kp_riprel, . - st_kp_riprel",
    // rax = [rdi] (faults for an unmapped rdi)
    ".globl st_kp_load",
    ".type st_kp_load, @function",
    "st_kp_load:",
    "mov rax, qword ptr [rdi]",
    "ret",
    ".size st_kp_load, . - st_kp_load",
    // targets that must be refused
    ".globl st_kp_traps",
    ".type st_kp_traps, @function",
    "st_kp_traps:",
    "nop",
    "int3",
    "ud2",
    "ret",
    ".size st_kp_traps, . - st_kp_traps",
    ".popsection",
    ".pushsection .data.kdbg_selftest_kprobe, \"aw\", @progbits",
    ".balign 8",
    ".globl st_kp_data",
    "st_kp_data:",
    ".quad 0x1122334455667788",
    ".quad 0",
    ".popsection",
);

unsafe extern "C" {
    fn st_kp_add(a: u64, b: u64) -> u64;
    fn st_kp_jcc(a: i64, b: i64) -> u64;
    fn st_kp_loop(rcx: u64) -> u64;
    fn st_kp_retimm() -> u64;
    fn st_kp_callreg(a: u64, b: u64, f: u64) -> u64;
    fn st_kp_jmpreg(a: u64, b: u64, f: u64) -> u64;
    fn st_kp_flags(out: *mut [u64; 2]) -> u64;
    fn st_kp_riprel(v: u64) -> u64;
    fn st_kp_load(p: u64) -> u64;
    static mut st_kp_data: [u64; 2];
}

/// Instruction lengths of the asm functions (ground truth for `every_offset`).
const LENGTHS: &[(&str, &[u64])] = &[
    ("st_kp_add", &[4, 1]),
    ("st_kp_jcc", &[3, 2, 5, 1, 5, 1]),
    ("st_kp_loop", &[3, 2, 2, 3, 1, 7, 1]),
    ("st_kp_retimm", &[3, 2, 2, 5, 3, 1, 3]),
    ("st_kp_callreg", &[3, 2, 1]),
    ("st_kp_flags", &[1, 1, 1, 1, 3, 1, 1, 1, 4, 1, 1, 1, 1]),
    ("st_kp_riprel", &[7, 7, 1]),
];

fn add(a: u64, b: u64) -> u64 {
    // SAFETY: plain asm function of two integer arguments.
    unsafe { st_kp_add(a, b) }
}

fn jcc(a: i64, b: i64) -> u64 {
    // SAFETY: plain asm function of two integer arguments.
    unsafe { st_kp_jcc(a, b) }
}

fn loop_once(rcx: u64) -> u64 {
    // SAFETY: plain asm function of one integer argument.
    unsafe { st_kp_loop(rcx) }
}

fn retimm() -> u64 {
    // SAFETY: plain asm function; its pushes are popped by the `ret 16`.
    unsafe { st_kp_retimm() }
}

/// `f(a, b, st_kp_add)`: calls or jumps to st_kp_add through a register.
fn through_register(f: unsafe extern "C" fn(u64, u64, u64) -> u64, a: u64, b: u64) -> u64 {
    // SAFETY: `f` is st_kp_callreg or st_kp_jmpreg; the third argument is
    // the address of st_kp_add, a function of two integers.
    unsafe { f(a, b, st_kp_add as *const () as u64) }
}

fn addr_of(name: &str) -> Result<u64, &'static str> {
    crate::kallsyms::find(name)
        .map(|s| s.start)
        .ok_or("selftest function missing from kallsyms")
}

fn reg(at: At<'_>, kp: Kprobe) -> Result<ProbeId, &'static str> {
    probes::register_kprobe(at, kp).map_err(|_| "register_kprobe refused a valid address")
}

static PRE: AtomicU64 = AtomicU64::new(0);
static POST: AtomicU64 = AtomicU64::new(0);
static SEEN_RDI: AtomicU64 = AtomicU64::new(0);
static SEEN_POST_RIP: AtomicU64 = AtomicU64::new(0);

fn count_pre(_: &Probe, f: &mut TrapFrame) -> bool {
    PRE.fetch_add(1, Ordering::Relaxed);
    SEEN_RDI.store(f.rdi, Ordering::Relaxed);
    false
}

fn count_post(_: &Probe, f: &mut TrapFrame) {
    POST.fetch_add(1, Ordering::Relaxed);
    SEEN_POST_RIP.store(f.rip, Ordering::Relaxed);
}

fn counting() -> Kprobe {
    Kprobe {
        pre_handler: Some(count_pre),
        post_handler: Some(count_post),
        fault_handler: None,
        data: 0,
    }
}

fn reset() {
    PRE.store(0, Ordering::Relaxed);
    POST.store(0, Ordering::Relaxed);
}

fn pre_post_handlers() -> Result<(), &'static str> {
    reset();
    let f = addr_of("st_kp_add")?;
    let id = reg(At::Addr(f), counting())?;
    let r = add(3, 4);
    unreg(id)?;
    check(r == 7, "probed function computed a different result")?;
    check(
        PRE.load(Ordering::Relaxed) == 1,
        "pre_handler did not run exactly once",
    )?;
    check(
        POST.load(Ordering::Relaxed) == 1,
        "post_handler did not run exactly once",
    )?;
    check(
        SEEN_RDI.load(Ordering::Relaxed) == 3,
        "pre_handler saw the wrong rdi",
    )?;
    check(
        SEEN_POST_RIP.load(Ordering::Relaxed) == f + 4,
        "post_handler's rip is not the next instruction",
    )?;
    check(
        add(1, 1) == 2 && PRE.load(Ordering::Relaxed) == 1,
        "probe still fires after unregister",
    )
}

fn probe_arrays() -> Result<(), &'static str> {
    let targets = ["st_kp_add", "st_kp_jcc", "st_kp_loop"];
    for round in 0..2 {
        reset();
        let mut ids = [ProbeId(0); 3];
        for (id, name) in ids.iter_mut().zip(targets) {
            *id = reg(At::Symbol(name, 0), counting())?;
        }
        let _ = add(1, 2);
        // SAFETY: plain asm functions of integer arguments.
        let _ = unsafe { st_kp_jcc(1, 2) + st_kp_loop(3) };
        for id in ids {
            unreg(id)?;
        }
        check(
            PRE.load(Ordering::Relaxed) == 3,
            "not every probe of the array fired once",
        )?;
        let _ = round;
    }
    Ok(())
}

fn recursive_pre(_: &Probe, _: &mut TrapFrame) -> bool {
    PRE.fetch_add(1, Ordering::Relaxed);
    // Calls a probed function twice from the handler: both hits are missed.
    let _ = add(5, 6);
    let _ = add(7, 8);
    false
}

fn nmissed_from_recursive_handler() -> Result<(), &'static str> {
    reset();
    let outer = reg(
        At::Symbol("st_kp_jcc", 0),
        Kprobe {
            pre_handler: Some(recursive_pre),
            ..Kprobe::default()
        },
    )?;
    let inner = reg(At::Symbol("st_kp_add", 0), counting())?;
    // SAFETY: plain asm function.
    let r = unsafe { st_kp_jcc(1, 2) };
    let info = probes::info(inner).ok_or("probe vanished")?;
    unreg(outer)?;
    unreg(inner)?;
    check(r == 1, "probed function computed a different result")?;
    check(
        info.nmissed == 2,
        "nmissed of the probe hit inside a handler is not 2",
    )?;
    check(
        info.hits == 0,
        "a probe hit inside a handler ran its handlers",
    )
}

/// Runs `f` unprobed, then probed at every offset of `func` in `offsets`,
/// comparing results; checks the exec path of each.
fn compare(
    func: &str,
    offsets: &[(u64, ExecPath)],
    f: &dyn Fn() -> u64,
) -> Result<(), &'static str> {
    let native = f();
    for &(off, path) in offsets {
        for kp in [
            counting(),
            Kprobe {
                pre_handler: Some(count_pre),
                ..Kprobe::default()
            },
        ] {
            reset();
            let id = reg(At::Symbol(func, off), kp)?;
            let info = probes::info(id).ok_or("probe vanished")?;
            let probed = f();
            unreg(id)?;
            check(probed == native, "probed result differs from native")?;
            check(PRE.load(Ordering::Relaxed) >= 1, "probe did not fire")?;
            let want = if path == ExecPath::Boosted && kp.post_handler.is_some() {
                ExecPath::OutOfLine
            } else {
                path
            };
            check(info.path == want, "unexpected execution path")?;
        }
    }
    Ok(())
}

fn emulated_jcc() -> Result<(), &'static str> {
    // cmp (boostable), jl, and the ret each outcome reaches.
    let taken = [
        (0, ExecPath::Boosted),
        (3, ExecPath::Emulated),
        (16, ExecPath::Emulated),
    ];
    let not_taken = [
        (0, ExecPath::Boosted),
        (3, ExecPath::Emulated),
        (10, ExecPath::Emulated),
    ];
    compare("st_kp_jcc", &taken, &|| jcc(1, 2))?;
    compare("st_kp_jcc", &not_taken, &|| jcc(5, 2))
}

/// Every condition code, rel8 and rel32, as the first instruction of a
/// function: for all 32 combinations of CF PF ZF SF OF (AF varied too) the
/// probed branch goes where the unprobed one goes (and where the SDM says),
/// the flags after it are unchanged, and both outcomes occur.
fn emulated_jcc_all_conditions() -> Result<(), &'static str> {
    use crate::workloads::insn::{JCC_CONDITIONS, JCC_FLAGS, insn_jcc_with_flags, jcc_taken};
    /// The flags of combination `i` (0..32).
    fn flags_of(i: u64) -> u64 {
        let bit = |n: u64, at: u64| ((i >> n) & 1) << at;
        bit(0, 0)
            | bit(1, 2)
            | bit(2, 6)
            | bit(3, 7)
            | bit(4, 11)
            | ((bit(0, 4) ^ bit(3, 4)) & 0x10)
    }
    fn run(f: u64) -> [u64; 32] {
        let mut out = [0u64; 32];
        for (i, o) in (0u64..).zip(out.iter_mut()) {
            // SAFETY: `f` is one of the insn_j<cc>_* functions (resolved by
            // name), which take no arguments, touch only rax and return;
            // the trampoline restores every flag but the arithmetic ones.
            *o = unsafe { insn_jcc_with_flags(flags_of(i), f) };
        }
        out
    }
    for (cc, suffix) in JCC_CONDITIONS.iter().enumerate() {
        for (width, opcode) in [
            ("rel8", [0x70 + cc as u8, 0]),
            ("rel32", [0x0f, 0x80 + cc as u8]),
        ] {
            let name = alloc::format!("insn_j{suffix}_{width}");
            let f = addr_of(&name)?;
            let mut first = [0u8; 2];
            check(
                arch::mem::read(f, &mut first).is_ok(),
                "cannot read a jcc workload's first bytes",
            )?;
            let len = if width == "rel8" { 1 } else { 2 };
            check(
                first.get(..len) == opcode.get(..len),
                "a jcc workload does not start with the expected opcode",
            )?;
            let native = run(f);
            for (i, &r) in (0u64..).zip(native.iter()) {
                let want = u64::from(jcc_taken(cc, flags_of(i))) | (flags_of(i) & JCC_FLAGS) << 8;
                check(
                    r == want,
                    "native jcc workload disagrees with the SDM model",
                )?;
            }
            check(
                native.iter().any(|r| r & 1 == 1) && native.iter().any(|r| r & 1 == 0),
                "flag inputs do not cover both outcomes",
            )?;
            reset();
            let id = reg(At::Addr(f), counting())?;
            let probed = run(f);
            let info = probes::info(id).ok_or("probe vanished")?;
            unreg(id)?;
            if probed != native {
                let i = native
                    .iter()
                    .zip(probed.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let msg = alloc::format!(
                    "probed j{suffix} {width} with flags {:#x}: {:#x} != native {:#x}",
                    flags_of(i as u64),
                    probed.get(i).copied().unwrap_or(0),
                    native.get(i).copied().unwrap_or(0)
                );
                return Err(alloc::boxed::Box::leak(msg.into_boxed_str()));
            }
            check(info.path == ExecPath::Emulated, "a jcc is not emulated")?;
            check(
                PRE.load(Ordering::Relaxed) == 32 && POST.load(Ordering::Relaxed) == 32,
                "jcc probe handlers did not run once per hit",
            )?;
            check(info.hits == 32, "jcc probe hits miscounted")?;
        }
    }
    Ok(())
}

/// Where [`skip_pre`] sends execution, and the rax it sets.
static SKIP_TO: AtomicU64 = AtomicU64::new(0);
const SKIP_RAX: u64 = 0x5ca1ab1e;

fn skip_pre(_: &Probe, f: &mut TrapFrame) -> bool {
    PRE.fetch_add(1, Ordering::Relaxed);
    f.rax = SKIP_RAX;
    f.rip = SKIP_TO.load(Ordering::Relaxed);
    true
}

/// A pre_handler that returns true ("I changed rip, skip the instruction"):
/// the probed instruction does not run, no post_handler runs, and execution
/// continues at the handler's rip, for the boosted and the out-of-line path.
fn pre_handler_skips_instruction() -> Result<(), &'static str> {
    for post in [None, Some(count_post as fn(&Probe, &mut TrapFrame))] {
        let kp = Kprobe {
            pre_handler: Some(skip_pre),
            post_handler: post,
            fault_handler: None,
            data: 0,
        };
        // st_kp_add: `lea rax, [rdi + rsi]` skipped, continue at its `ret`.
        reset();
        let f = addr_of("st_kp_add")?;
        SKIP_TO.store(f + 4, Ordering::Relaxed);
        let id = reg(At::Addr(f), kp)?;
        let r = add(3, 4);
        let info = probes::info(id).ok_or("probe vanished")?;
        unreg(id)?;
        check(r == SKIP_RAX, "the skipped instruction ran anyway")?;
        check(
            PRE.load(Ordering::Relaxed) == 1,
            "pre_handler did not run once",
        )?;
        check(
            POST.load(Ordering::Relaxed) == 0,
            "post_handler ran for a skipped instruction",
        )?;
        check(info.hits == 1, "skipping hit miscounted")?;
        // st_kp_jcc: skip `cmp` and continue at `2: mov eax, 1` (offset 11),
        // not at the next instruction: jcc(5, 2) natively returns 2.
        reset();
        let f = addr_of("st_kp_jcc")?;
        SKIP_TO.store(f + 11, Ordering::Relaxed);
        let id = reg(At::Addr(f), kp)?;
        let r = jcc(5, 2);
        unreg(id)?;
        check(
            r == 1,
            "execution did not continue where the handler set rip",
        )?;
        check(
            PRE.load(Ordering::Relaxed) == 1,
            "pre_handler did not run once",
        )?;
        check(
            POST.load(Ordering::Relaxed) == 0,
            "post_handler ran for a skipped instruction",
        )?;
        check(
            add(3, 4) == 7 && jcc(5, 2) == 2,
            "unprobed functions changed after a skipping probe",
        )?;
    }
    Ok(())
}

/// The order handlers ran in: `data` for a pre_handler, `data + 10` for a
/// post_handler.
static ORDER: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
static ORDER_LEN: AtomicUsize = AtomicUsize::new(0);

fn record(v: u64) {
    let i = ORDER_LEN.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = ORDER.get(i) {
        slot.store(v, Ordering::Relaxed);
    }
}

fn order_pre(p: &Probe, _: &mut TrapFrame) -> bool {
    record(p.data() as u64);
    false
}

fn order_post(p: &Probe, _: &mut TrapFrame) {
    record(p.data() as u64 + 10);
}

/// Runs `add` once and checks the handlers ran in exactly `want` order.
fn add_records(want: &[u64]) -> Result<(), &'static str> {
    ORDER_LEN.store(0, Ordering::Relaxed);
    let r = add(20, 22);
    check(r == 42, "probed function computed a different result")?;
    let n = ORDER_LEN.load(Ordering::Relaxed);
    let got = ORDER.iter().take(n).map(|a| a.load(Ordering::Relaxed));
    if n != want.len() || !got.clone().eq(want.iter().copied()) {
        let mut seen = [0u64; 16];
        for (s, g) in seen.iter_mut().zip(got) {
            *s = g;
        }
        let msg = alloc::format!(
            "handlers ran in order {:?}, want {want:?}",
            seen.get(..n.min(16)).unwrap_or(&[])
        );
        return Err(alloc::boxed::Box::leak(msg.into_boxed_str()));
    }
    Ok(())
}

/// Several probes on one address: pre and post handlers run in registration
/// order; after unregistering the middle one the others still run in order,
/// and a probe registered later runs last.
fn aggregate_handler_order() -> Result<(), &'static str> {
    let kp = |data| Kprobe {
        pre_handler: Some(order_pre),
        post_handler: Some(order_post),
        fault_handler: None,
        data,
    };
    let at = At::Symbol("st_kp_add", 0);
    let a = reg(at, kp(1))?;
    let b = reg(at, kp(2))?;
    let c = reg(at, kp(3))?;
    let three = add_records(&[1, 2, 3, 11, 12, 13]);
    let unreg_b = unreg(b);
    let two = add_records(&[1, 3, 11, 13]);
    let d = reg(at, kp(4));
    let three_again = add_records(&[1, 3, 4, 11, 13, 14]);
    if let Ok(d) = d {
        unreg(d)?;
    }
    unreg(c)?;
    unreg(a)?;
    let none = add_records(&[]);
    three?;
    unreg_b?;
    two?;
    d?;
    three_again?;
    none
}

fn emulated_loop() -> Result<(), &'static str> {
    for rcx in [0u64, 1, 2] {
        compare("st_kp_loop", &[(5, ExecPath::Emulated)], &|| loop_once(rcx))?;
    }
    let native = [loop_once(0), loop_once(1), loop_once(2)];
    check(
        native == [0x100000u64.wrapping_sub(1), 0, 0x100001],
        "native loop semantics unexpected",
    )
}

fn emulated_ret_imm_call_jmp_reg() -> Result<(), &'static str> {
    compare(
        "st_kp_retimm",
        &[(16, ExecPath::Emulated), (7, ExecPath::Emulated)],
        &retimm,
    )?;
    compare(
        "st_kp_callreg",
        &[(3, ExecPath::Emulated), (5, ExecPath::Emulated)],
        &|| through_register(st_kp_callreg, 20, 22),
    )?;
    compare("st_kp_jmpreg", &[(3, ExecPath::Emulated)], &|| {
        through_register(st_kp_jmpreg, 20, 22)
    })
}

fn flags_run() -> u64 {
    let mut out = [0u64; 2];
    // SAFETY: plain asm function writing two words through the pointer.
    let after = unsafe { st_kp_flags(&mut out) };
    const IF: u64 = 1 << 9;
    (after & IF) | ((out[0] & IF) << 1) | ((out[1] & IF) << 2)
}

fn emulated_flags() -> Result<(), &'static str> {
    let offs = [
        (0, ExecPath::Emulated),  // pushf
        (1, ExecPath::Emulated),  // cli
        (7, ExecPath::Emulated),  // sti
        (14, ExecPath::Emulated), // popf
    ];
    compare("st_kp_flags", &offs, &flags_run)
}

fn rip_relative_load_store() -> Result<(), &'static str> {
    for off in [0u64, 7] {
        reset();
        let id = reg(At::Symbol("st_kp_riprel", off), counting())?;
        // SAFETY: plain asm function; st_kp_data is only touched by it and here.
        let (v, stored) = unsafe {
            let v = st_kp_riprel(0xabcd + off);
            (
                v,
                core::ptr::read_volatile(core::ptr::addr_of!(st_kp_data[1])),
            )
        };
        unreg(id)?;
        check(
            v == 0x1122_3344_5566_7788,
            "RIP-relative load through a probe read the wrong value",
        )?;
        check(
            stored == 0xabcd + off,
            "RIP-relative store through a probe wrote the wrong place",
        )?;
        check(PRE.load(Ordering::Relaxed) == 1, "probe did not fire")?;
    }
    Ok(())
}

fn boosted_one_trap_per_hit() -> Result<(), &'static str> {
    for (kp, path, traps) in [
        (
            Kprobe {
                pre_handler: Some(count_pre),
                ..Kprobe::default()
            },
            ExecPath::Boosted,
            1,
        ),
        (counting(), ExecPath::OutOfLine, 2),
    ] {
        reset();
        let id = reg(At::Symbol("st_kp_add", 0), kp)?;
        let before = crate::dispatch::INT3_COUNT.load(Ordering::Relaxed);
        let mut sum = 0;
        for i in 0..100 {
            sum += add(i, 1);
        }
        let after = crate::dispatch::INT3_COUNT.load(Ordering::Relaxed);
        let info = probes::info(id).ok_or("probe vanished")?;
        unreg(id)?;
        check(sum == 5050, "probed results differ")?;
        check(info.path == path, "unexpected execution path")?;
        check(
            after - before == 100 * traps,
            "wrong number of traps per hit",
        )?;
        check(info.hits == 100, "hits miscounted")?;
    }
    Ok(())
}

fn run_all_workloads() -> u64 {
    let mut out = [0u64; 2];
    // SAFETY: plain asm functions of integer arguments.
    unsafe {
        st_kp_add(1, 2)
            ^ st_kp_jcc(1, 2).rotate_left(3)
            ^ st_kp_jcc(3, 2).rotate_left(5)
            ^ st_kp_loop(2).rotate_left(7)
            ^ st_kp_loop(1).rotate_left(9)
            ^ st_kp_retimm().rotate_left(11)
            ^ st_kp_callreg(4, 5, st_kp_add as *const () as u64).rotate_left(13)
            ^ (st_kp_flags(&mut out) & (1 << 9)).rotate_left(17)
            ^ st_kp_riprel(0x77).rotate_left(19)
    }
}

fn every_offset() -> Result<(), &'static str> {
    let native = run_all_workloads();
    for &(name, lens) in LENGTHS {
        let size: u64 = lens.iter().sum();
        let sym = crate::kallsyms::find(name).ok_or("selftest function missing from kallsyms")?;
        check(
            sym.size == size,
            "instruction-length table disagrees with the symbol size",
        )?;
        let mut boundary = 0;
        let mut next = lens.iter();
        for off in 0..size {
            let at_boundary = off == boundary;
            if at_boundary {
                boundary += next.next().copied().unwrap_or(0);
            }
            reset();
            match probes::register_kprobe(At::Symbol(name, off), counting()) {
                Ok(id) => {
                    let r = run_all_workloads();
                    unreg(id)?;
                    check(at_boundary, "registration succeeded inside an instruction")?;
                    check(r == native, "a probed workload computed a different result")?;
                    check(
                        PRE.load(Ordering::Relaxed) >= 1,
                        "probe at a boundary did not fire",
                    )?;
                }
                Err(ProbeError::NotBoundary) => {
                    check(!at_boundary, "registration refused at a boundary")?
                }
                Err(_) => return Err("unexpected refusal"),
            }
        }
        check(
            probes::register_kprobe(At::Symbol(name, size), Kprobe::default())
                == Err(ProbeError::PastEnd),
            "past-the-end offset not refused",
        )?;
    }
    Ok(())
}

/// The kernel's compiled workloads, with results that do not depend on
/// global counters (new ids and descriptors are folded to "valid").
fn run_kernel_workloads() -> u64 {
    use crate::workloads as w;
    let bb = core::hint::black_box;
    let mut acc = w::sum8(bb(1), bb(2), bb(3), bb(4), bb(5), bb(6), bb(7), bb(8));
    acc = acc.rotate_left(7) ^ w::fib(bb(12));
    acc = acc.rotate_left(7) ^ w::nest(bb(9));
    for (i, path) in w::OPEN_PATHS.iter().enumerate() {
        // SAFETY: NUL-terminated static paths.
        let r = unsafe { w::sys_open(path.as_ptr(), core::hint::black_box((i % 2) as u32), 0) };
        acc = acc.rotate_left(3) ^ (r.min(3) as u64);
    }
    let regs = w::TaskRegs {
        ip: 1,
        sp: 2,
        flags: 3,
    };
    for (flags, size) in [
        (w::CLONE_PARENT_SETTID, 0x1000),
        (0, 0),
        (w::CLONE_FORBIDDEN, 1),
    ] {
        let (mut ptid, mut ctid) = (0i32, 0i32);
        // SAFETY: all pointers are to live locals.
        let r = unsafe { w::spawn_task(bb(flags), 0x10, &regs, bb(size), &mut ptid, &mut ctid) };
        let folded = if r > 0 {
            u64::from(i64::from(ptid) == r)
        } else {
            r as u64
        };
        acc = acc.rotate_left(5) ^ folded;
    }
    let req = w::Request {
        id: 4,
        name: c"hello".as_ptr().cast(),
        inner: w::RequestInner { lo: 5, hi: 6 },
    };
    // SAFETY: a live request with a NUL-terminated name.
    acc.rotate_left(9) ^ unsafe { w::handle_request(&req) } as u64
}

/// Probes every byte of compiled workload functions: where registration
/// succeeds (an instruction boundary the analysis accepted), every workload
/// still computes what it computes unprobed; elsewhere the refusal is "not
/// a boundary" or a refused instruction class.
fn every_offset_of_workloads() -> Result<(), &'static str> {
    let native = run_kernel_workloads();
    for name in [
        "sum8",
        "fib",
        "nest",
        "sys_open",
        "spawn_task",
        "handle_request",
    ] {
        let sym = crate::kallsyms::find(name).ok_or("workload missing from kallsyms")?;
        let mut accepted = 0;
        for off in 0..sym.size {
            reset();
            match probes::register_kprobe(At::Symbol(name, off), counting()) {
                Ok(id) => {
                    let r = run_kernel_workloads();
                    let path = probes::info(id).map(|i| i.path);
                    unreg(id)?;
                    accepted += 1;
                    if r != native {
                        let mut b = [0u8; 8];
                        let _ = arch::mem::read(sym.start + off, &mut b);
                        let again = run_kernel_workloads();
                        let msg = alloc::format!(
                            "{name}+{off:#x} ({path:?}, bytes {b:02x?}): probed {r:#x} != native {native:#x} (unprobed again: {again:#x})"
                        );
                        return Err(alloc::boxed::Box::leak(msg.into_boxed_str()));
                    }
                    check(
                        PRE.load(Ordering::Relaxed) == POST.load(Ordering::Relaxed),
                        "pre and post counts differ",
                    )?;
                }
                Err(ProbeError::NotBoundary | ProbeError::Refused(_)) => {}
                Err(_) => return Err("unexpected refusal inside a workload function"),
            }
        }
        check(accepted >= 3, "too few instruction boundaries accepted")?;
    }
    Ok(())
}

fn refusals() -> Result<(), &'static str> {
    let k = Kprobe::default;
    check(
        probes::register_kprobe(At::Symbol("st_kp_traps", 1), k())
            == Err(ProbeError::Refused(Refusal::Int3)),
        "int3 not refused",
    )?;
    check(
        probes::register_kprobe(At::Symbol("st_kp_traps", 2), k())
            == Err(ProbeError::Refused(Refusal::Ud)),
        "ud2 not refused",
    )?;
    let blacklisted = probes::register_kprobe as *const () as u64;
    check(
        probes::register_kprobe(At::Addr(blacklisted), k()) == Err(ProbeError::Blacklisted),
        "the probe core itself is not blacklisted",
    )?;
    check(
        probes::register_kprobe(At::Symbol("st_kp_add", 5), k()) == Err(ProbeError::PastEnd),
        "past-the-end not refused",
    )?;
    for hit_path_fn in [
        crate::sched::current_id as *const () as u64,
        crate::sched::cpu_id as *const () as u64,
    ] {
        check(
            probes::register_kprobe(At::Addr(hit_path_fn), k()) == Err(ProbeError::Blacklisted),
            "a function the hit path calls is not blacklisted",
        )?;
    }
    let data = core::ptr::addr_of!(PRE) as u64;
    check(
        probes::register_kprobe(At::Addr(data), k()) == Err(ProbeError::NotText),
        "data address not refused",
    )?;
    check(
        probes::register_kprobe(At::Symbol("no_such_function_xyz", 0), k())
            == Err(ProbeError::UnknownSymbol),
        "unknown symbol not refused",
    )
}

static LOAD_STOP: AtomicU64 = AtomicU64::new(0);
static LOAD_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Workload rounds the load tasks completed (shown when one does not end).
static LOAD_ROUNDS: AtomicU64 = AtomicU64::new(0);

fn load_task(seed: u64) {
    let native = run_all_workloads();
    while LOAD_STOP.load(Ordering::Relaxed) == 0 {
        LOAD_ROUNDS.fetch_add(1, Ordering::Relaxed);
        if run_all_workloads() != native || add(seed, 1) != seed + 1 {
            LOAD_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts two load tasks; returns their ids.
fn start_load() -> Result<[crate::sched::TaskId; 2], &'static str> {
    LOAD_STOP.store(0, Ordering::Relaxed);
    LOAD_ERRORS.store(0, Ordering::Relaxed);
    let a = crate::sched::spawn("kp-load-a", load_task, 1).map_err(|_| "cannot spawn load task")?;
    let b = crate::sched::spawn("kp-load-b", load_task, 2).map_err(|_| "cannot spawn load task")?;
    Ok([a, b])
}

fn stop_load(ids: [crate::sched::TaskId; 2]) -> Result<(), &'static str> {
    LOAD_STOP.store(1, Ordering::Relaxed);
    for id in ids {
        if !crate::sched::join(id, crate::selftest::JOIN_TICKS) {
            if let Some(t) = crate::sched::task_info(id) {
                crate::println!(
                    "  load task {id}: {:?} on cpu {:?}, switched in {} times; {} rounds in all",
                    t.state,
                    t.cpu,
                    t.switches_in,
                    LOAD_ROUNDS.load(Ordering::Relaxed)
                );
            }
            return Err("load task did not finish");
        }
    }
    check(
        LOAD_ERRORS.load(Ordering::Relaxed) == 0,
        "a workload computed a wrong result under probing",
    )
}

/// Every instruction boundary of the workloads (up to `n`).
fn boundaries(out: &mut [(u64, bool)]) -> Result<usize, &'static str> {
    let mut n = 0;
    for &(name, lens) in LENGTHS {
        let start = addr_of(name)?;
        let mut off = 0;
        for &len in lens {
            if let Some(slot) = out.get_mut(n) {
                *slot = (start + off, false);
                n += 1;
            }
            off += len;
        }
    }
    Ok(n)
}

fn toggle_256_probes() -> Result<(), &'static str> {
    let mut points = [(0u64, false); 64];
    let n = boundaries(&mut points)?;
    let mut ids = [ProbeId(0); 256];
    let load = start_load()?;
    let mut result = Ok(());
    let mut registered = 0;
    for (i, id) in ids.iter_mut().enumerate() {
        let (addr, _) = points.get(i % n).copied().unwrap_or((0, false));
        match probes::register_kprobe(At::Addr(addr), counting()) {
            Ok(p) => {
                *id = p;
                registered += 1;
            }
            Err(_) => {
                result = Err("could not register 256 probes");
                break;
            }
        }
    }
    for round in 0..20 {
        for id in ids.iter().take(registered) {
            let r = if round % 2 == 0 {
                probes::disable(*id)
            } else {
                probes::enable(*id)
            };
            if r.is_err() {
                result = Err("enable/disable failed");
            }
        }
        crate::sched::yield_now();
    }
    for id in ids.iter().take(registered) {
        if probes::unregister(*id).is_err() {
            result = Err("unregister failed");
        }
    }
    stop_load(load)?;
    result
}

fn register_unregister_10000() -> Result<(), &'static str> {
    let mut points = [(0u64, false); 64];
    let n = boundaries(&mut points)?;
    let load = start_load()?;
    let mut result = Ok(());
    for i in 0..10_000usize {
        let (addr, _) = points.get(i % n).copied().unwrap_or((0, false));
        match probes::register_kprobe(At::Addr(addr), counting()) {
            Ok(id) => {
                if probes::unregister(id).is_err() {
                    result = Err("unregister failed");
                    break;
                }
            }
            Err(_) => {
                result = Err("register failed");
                break;
            }
        }
        if i % 500 == 0 {
            crate::sched::yield_now();
        }
    }
    stop_load(load)?;
    result
}

fn fixup(p: &Probe, f: &mut TrapFrame, _vector: u64) -> bool {
    // The "exception table": the load at the probed address yields 0xbad
    // and execution continues after it.
    f.rax = 0xbad;
    f.rip = p.addr() + 3;
    true
}

fn fault_in_out_of_line_insn() -> Result<(), &'static str> {
    let id = reg(
        At::Symbol("st_kp_load", 0),
        Kprobe {
            pre_handler: Some(count_pre),
            post_handler: Some(count_post),
            fault_handler: Some(fixup),
            data: 0,
        },
    )?;
    let good = 0x1234_5678_u64;
    // SAFETY: st_kp_load reads 8 bytes at its argument; the first address is
    // a live local, the second is unmapped and the probe's fault handler
    // recovers from it.
    let (a, b) = unsafe {
        (
            st_kp_load(core::ptr::addr_of!(good) as u64),
            st_kp_load(0xdead_0000_0000),
        )
    };
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    check(a == good, "probed load read the wrong value")?;
    check(
        b == 0xbad,
        "the fault in the out-of-line load was not recovered by the fault handler",
    )?;
    check(
        info.path == ExecPath::OutOfLine,
        "unexpected execution path",
    )
}
