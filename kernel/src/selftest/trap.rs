//! `trap`: an int3 round trip keeps every GPR and XMM register; a nested
//! trap inside a handler gets its own stack level and leaves the outer frame
//! intact; a claimed fault resumes where its handler says; the IST pointers
//! are back where they were afterwards.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arch::TrapFrame;
use arch::trap::{BREAKPOINT, INVALID_OPCODE};

use super::{Case, Suite, TestResult};
use crate::check;
use crate::dispatch::{Expected, expect, unexpect};

pub static SUITE: Suite = Suite {
    name: "trap",
    cases: &[
        Case {
            name: "int3_round_trip_keeps_registers",
            run: round_trip,
        },
        Case {
            name: "nested_int3_keeps_outer_frame",
            run: nested,
        },
        Case {
            name: "nesting_uses_every_level",
            run: nesting_levels,
        },
        Case {
            name: "claimed_fault_resumes",
            run: claimed_fault,
        },
        Case {
            name: "ist_pointers_restored",
            run: ist_restored,
        },
    ],
};

/// Registers after the int3, as the asm stored them.
#[repr(C)]
#[derive(Clone, Copy)]
struct Snapshot {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, r8..r15
    gpr: [u64; 15],
    xmm: [[u8; 16]; 16],
}

/// What the asm loads before the int3.
const GPR_PATTERN: [u64; 15] = [
    0x1111_1111_1111_1111,
    0x2222_2222_2222_2222,
    0x3333_3333_3333_3333,
    0x4444_4444_4444_4444,
    0x5555_5555_5555_5555,
    0x6666_6666_6666_6666,
    0x7777_7777_7777_7777,
    0x8888_8888_8888_8888,
    0x9999_9999_9999_9999,
    0xaaaa_aaaa_aaaa_aaaa,
    0xbbbb_bbbb_bbbb_bbbb,
    0xcccc_cccc_cccc_cccc,
    0xdddd_dddd_dddd_dddd,
    0xeeee_eeee_eeee_eeee,
    0xf0f0_f0f0_f0f0_f0f0,
];
const GPR_NAMES: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

fn xmm_pattern(i: usize, j: usize) -> u8 {
    (i * 16 + j) as u8 ^ 0x5a
}

#[repr(C, align(16))]
struct XmmPattern([u8; 256]);

static XMM_PATTERN: XmmPattern = {
    let mut p = [0u8; 256];
    let mut k = 0;
    while k < 256 {
        p[k] = (k as u8) ^ 0x5a;
        k += 1;
    }
    XmmPattern(p)
};

global_asm!(
    ".pushsection .text.kdbg_selftest_trap, \"ax\", @progbits",
    ".globl kdbg_trap_selftest",
    ".type kdbg_trap_selftest, @function",
    "kdbg_trap_selftest:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "lea rax, [rip + {xmm}]",
    "movdqa xmm0, [rax + 0]",
    "movdqa xmm1, [rax + 16]",
    "movdqa xmm2, [rax + 32]",
    "movdqa xmm3, [rax + 48]",
    "movdqa xmm4, [rax + 64]",
    "movdqa xmm5, [rax + 80]",
    "movdqa xmm6, [rax + 96]",
    "movdqa xmm7, [rax + 112]",
    "movdqa xmm8, [rax + 128]",
    "movdqa xmm9, [rax + 144]",
    "movdqa xmm10, [rax + 160]",
    "movdqa xmm11, [rax + 176]",
    "movdqa xmm12, [rax + 192]",
    "movdqa xmm13, [rax + 208]",
    "movdqa xmm14, [rax + 224]",
    "movdqa xmm15, [rax + 240]",
    "mov rax, 0x1111111111111111",
    "mov rbx, 0x2222222222222222",
    "mov rcx, 0x3333333333333333",
    "mov rdx, 0x4444444444444444",
    "mov rsi, 0x5555555555555555",
    "mov rdi, 0x6666666666666666",
    "mov rbp, 0x7777777777777777",
    "mov r8, 0x8888888888888888",
    "mov r9, 0x9999999999999999",
    "mov r10, 0xaaaaaaaaaaaaaaaa",
    "mov r11, 0xbbbbbbbbbbbbbbbb",
    "mov r12, 0xcccccccccccccccc",
    "mov r13, 0xdddddddddddddddd",
    "mov r14, 0xeeeeeeeeeeeeeeee",
    "mov r15, 0xf0f0f0f0f0f0f0f0",
    ".globl kdbg_trap_selftest_int3",
    "kdbg_trap_selftest_int3:",
    "int3",
    "xchg rdi, [rsp]",
    "mov [rdi + 0], rax",
    "mov [rdi + 8], rbx",
    "mov [rdi + 16], rcx",
    "mov [rdi + 24], rdx",
    "mov [rdi + 32], rsi",
    "mov [rdi + 48], rbp",
    "mov [rdi + 56], r8",
    "mov [rdi + 64], r9",
    "mov [rdi + 72], r10",
    "mov [rdi + 80], r11",
    "mov [rdi + 88], r12",
    "mov [rdi + 96], r13",
    "mov [rdi + 104], r14",
    "mov [rdi + 112], r15",
    "pop rax",
    "mov [rdi + 40], rax",
    "movdqu [rdi + 120], xmm0",
    "movdqu [rdi + 136], xmm1",
    "movdqu [rdi + 152], xmm2",
    "movdqu [rdi + 168], xmm3",
    "movdqu [rdi + 184], xmm4",
    "movdqu [rdi + 200], xmm5",
    "movdqu [rdi + 216], xmm6",
    "movdqu [rdi + 232], xmm7",
    "movdqu [rdi + 248], xmm8",
    "movdqu [rdi + 264], xmm9",
    "movdqu [rdi + 280], xmm10",
    "movdqu [rdi + 296], xmm11",
    "movdqu [rdi + 312], xmm12",
    "movdqu [rdi + 328], xmm13",
    "movdqu [rdi + 344], xmm14",
    "movdqu [rdi + 360], xmm15",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size kdbg_trap_selftest, . - kdbg_trap_selftest",
    //
    ".globl kdbg_trap_selftest_nested",
    ".type kdbg_trap_selftest_nested, @function",
    "kdbg_trap_selftest_nested:",
    "int3",
    "ret",
    ".size kdbg_trap_selftest_nested, . - kdbg_trap_selftest_nested",
    //
    ".globl kdbg_trap_selftest_ud2",
    ".type kdbg_trap_selftest_ud2, @function",
    "kdbg_trap_selftest_ud2:",
    "mov eax, 1",
    ".globl kdbg_trap_selftest_ud2_site",
    "kdbg_trap_selftest_ud2_site:",
    "ud2",
    "mov eax, 42",
    "ret",
    ".size kdbg_trap_selftest_ud2, . - kdbg_trap_selftest_ud2",
    ".popsection",
    xmm = sym XMM_PATTERN,
);

unsafe extern "C" {
    fn kdbg_trap_selftest(out: *mut Snapshot);
    fn kdbg_trap_selftest_nested();
    fn kdbg_trap_selftest_ud2() -> u32;
    static kdbg_trap_selftest_int3: u8;
    static kdbg_trap_selftest_ud2_site: u8;
}

fn int3_site() -> u64 {
    core::ptr::addr_of!(kdbg_trap_selftest_int3) as u64
}

fn nested_site() -> u64 {
    kdbg_trap_selftest_nested as *const () as u64
}

static SEEN_RIP: AtomicU64 = AtomicU64::new(0);
static SEEN_RAX: AtomicU64 = AtomicU64::new(0);
static SEEN_R15: AtomicU64 = AtomicU64::new(0);
static SEEN_XMM7: AtomicU64 = AtomicU64::new(0);
static OUTER_DEPTH: AtomicUsize = AtomicUsize::new(usize::MAX);
static INNER_DEPTH: AtomicUsize = AtomicUsize::new(usize::MAX);
static NEST: AtomicBool = AtomicBool::new(false);

/// Claims the selftest int3: records what the frame says, clobbers every
/// XMM register (the exit path must restore them), optionally nests a trap.
fn on_int3(frame: &mut TrapFrame, depth: usize) -> bool {
    SEEN_RIP.store(frame.rip, Ordering::SeqCst);
    SEEN_RAX.store(frame.rax, Ordering::SeqCst);
    SEEN_R15.store(frame.r15, Ordering::SeqCst);
    let x7 = frame.fxsave.xmm(7).unwrap_or([0; 16]);
    SEEN_XMM7.store(
        u64::from_le_bytes([x7[0], x7[1], x7[2], x7[3], x7[4], x7[5], x7[6], x7[7]]),
        Ordering::SeqCst,
    );
    OUTER_DEPTH.store(depth, Ordering::SeqCst);
    // SAFETY: only XMM registers are written, and they are declared clobbered.
    unsafe {
        core::arch::asm!(
            "pcmpeqd xmm0, xmm0", "pcmpeqd xmm1, xmm1", "pcmpeqd xmm2, xmm2", "pcmpeqd xmm3, xmm3",
            "pcmpeqd xmm4, xmm4", "pcmpeqd xmm5, xmm5", "pcmpeqd xmm6, xmm6", "pcmpeqd xmm7, xmm7",
            "pcmpeqd xmm8, xmm8", "pcmpeqd xmm9, xmm9", "pcmpeqd xmm10, xmm10", "pcmpeqd xmm11, xmm11",
            "pcmpeqd xmm12, xmm12", "pcmpeqd xmm13, xmm13", "pcmpeqd xmm14, xmm14", "pcmpeqd xmm15, xmm15",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _,
            out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
    }
    if NEST.load(Ordering::SeqCst) {
        // SAFETY: the nested site is an int3 claimed by `on_nested`, then ret.
        unsafe { kdbg_trap_selftest_nested() };
    }
    true
}

static DEEP: AtomicBool = AtomicBool::new(false);

fn on_nested(_frame: &mut TrapFrame, depth: usize) -> bool {
    INNER_DEPTH.fetch_max(depth, Ordering::SeqCst);
    if DEEP.load(Ordering::SeqCst) && depth + 1 < arch::trap::MAX_DEPTH {
        // SAFETY: the same claimed int3 site, one level deeper.
        unsafe { kdbg_trap_selftest_nested() };
    }
    true
}

fn run_snapshot(nest: bool) -> Result<Snapshot, alloc::string::String> {
    NEST.store(nest, Ordering::SeqCst);
    check!(
        expect(Expected {
            vector: BREAKPOINT,
            rip: int3_site(),
            handler: on_int3
        }),
        "expected-trap table full"
    );
    check!(
        expect(Expected {
            vector: BREAKPOINT,
            rip: nested_site(),
            handler: on_nested
        }),
        "expected-trap table full"
    );
    let mut snap = Snapshot {
        gpr: [0; 15],
        xmm: [[0; 16]; 16],
    };
    // SAFETY: the asm fills `snap` and preserves the callee-saved registers; its int3 is claimed above.
    unsafe { kdbg_trap_selftest(&mut snap) };
    unexpect(BREAKPOINT, int3_site());
    unexpect(BREAKPOINT, nested_site());
    Ok(snap)
}

fn compare(snap: &Snapshot) -> TestResult {
    for (i, (&got, &want)) in snap.gpr.iter().zip(GPR_PATTERN.iter()).enumerate() {
        check!(
            got == want,
            "{} = {got:#x} after the trap, want {want:#x}",
            GPR_NAMES.get(i).unwrap_or(&"?")
        );
    }
    for (i, reg) in snap.xmm.iter().enumerate() {
        for (j, &b) in reg.iter().enumerate() {
            check!(
                b == xmm_pattern(i, j),
                "xmm{i} byte {j} = {b:#x} after the trap, want {:#x}",
                xmm_pattern(i, j)
            );
        }
    }
    Ok(())
}

fn round_trip() -> TestResult {
    let snap = run_snapshot(false)?;
    compare(&snap)?;
    let rip = SEEN_RIP.load(Ordering::SeqCst);
    check!(
        rip == int3_site() + 1,
        "frame.rip = {rip:#x}, want the int3's address + 1 = {:#x}",
        int3_site() + 1
    );
    check!(
        SEEN_RAX.load(Ordering::SeqCst) == GPR_PATTERN[0],
        "frame.rax did not hold the interrupted rax"
    );
    check!(
        SEEN_R15.load(Ordering::SeqCst) == GPR_PATTERN[14],
        "frame.r15 did not hold the interrupted r15"
    );
    let x7 = SEEN_XMM7.load(Ordering::SeqCst);
    let want = u64::from_le_bytes(core::array::from_fn(|j| xmm_pattern(7, j)));
    check!(x7 == want, "frame.fxsave xmm7 = {x7:#x}, want {want:#x}");
    check!(
        OUTER_DEPTH.load(Ordering::SeqCst) == 0,
        "a trap from task context reported nesting depth {}",
        OUTER_DEPTH.load(Ordering::SeqCst)
    );
    Ok(())
}

fn nested() -> TestResult {
    INNER_DEPTH.store(0, Ordering::SeqCst);
    let snap = run_snapshot(true)?;
    compare(&snap)?;
    let inner = INNER_DEPTH.load(Ordering::SeqCst);
    check!(inner == 1, "the nested int3 ran at depth {inner}, want 1");
    Ok(())
}

/// int3 inside the handler of an int3 inside ... down to the last usable
/// level: every level keeps its own frame, the outermost registers survive.
fn nesting_levels() -> TestResult {
    INNER_DEPTH.store(0, Ordering::SeqCst);
    DEEP.store(true, Ordering::SeqCst);
    let snap = run_snapshot(true);
    DEEP.store(false, Ordering::SeqCst);
    compare(&snap?)?;
    let deepest = INNER_DEPTH.load(Ordering::SeqCst);
    let want = arch::trap::MAX_DEPTH - 1;
    check!(
        deepest == want,
        "deepest nested int3 ran at depth {deepest}, want {want}"
    );
    Ok(())
}

fn on_ud2(frame: &mut TrapFrame, _depth: usize) -> bool {
    frame.rip += 2;
    true
}

fn claimed_fault() -> TestResult {
    let site = core::ptr::addr_of!(kdbg_trap_selftest_ud2_site) as u64;
    check!(
        expect(Expected {
            vector: INVALID_OPCODE,
            rip: site,
            handler: on_ud2
        }),
        "expected-trap table full"
    );
    // SAFETY: the ud2 is claimed above and skipped by the handler.
    let r = unsafe { kdbg_trap_selftest_ud2() };
    unexpect(INVALID_OPCODE, site);
    check!(r == 42, "returned {r} after the #UD, want 42");
    Ok(())
}

fn ist_restored() -> TestResult {
    let before = arch::gdt::ist_pointers();
    let _ = run_snapshot(true)?;
    let after = arch::gdt::ist_pointers();
    check!(
        before == after,
        "IST pointers changed: {before:x?} -> {after:x?}"
    );
    Ok(())
}
