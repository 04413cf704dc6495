//! Emulation of the instructions that change rip or IF, against the
//! architectural semantics and, where user mode allows, against this host
//! CPU executing the same instruction natively (jcc on every flag
//! combination, the loop family on edge counters).

// Test code: a failed unwrap/expect/panic is a failed test.

use arch::TrapFrame;
use arch::frame::rflags::{AF, CF, IF, OF, PF, RF, SF, TF, ZF};
use arch::insn::{Cond, EmuFault, Emulation, Reg, StackMem, analyze, emulate};

const ADDR: u64 = 0xffff_ffff_8100_1000;
const STACK_BASE: u64 = 0xffff_c900_0000_0000;
const STACK_SIZE: u64 = 0x1000;

/// A Vec-backed stack `[STACK_BASE, STACK_BASE + STACK_SIZE)`; anything
/// outside faults.
struct VecStack {
    mem: Vec<u8>,
}

impl VecStack {
    fn new() -> Self {
        VecStack {
            mem: vec![0xaa; STACK_SIZE as usize],
        }
    }
    fn range(&self, addr: u64) -> Option<std::ops::Range<usize>> {
        let off = addr.checked_sub(STACK_BASE)?;
        (off + 8 <= STACK_SIZE).then(|| off as usize..off as usize + 8)
    }
    fn get(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.mem[self.range(addr).unwrap()].try_into().unwrap())
    }
    fn set(&mut self, addr: u64, v: u64) {
        let r = self.range(addr).unwrap();
        self.mem[r].copy_from_slice(&v.to_le_bytes());
    }
}

impl StackMem for VecStack {
    fn read_u64(&mut self, addr: u64) -> Result<u64, EmuFault> {
        let r = self.range(addr).ok_or(EmuFault { addr, write: false })?;
        Ok(u64::from_le_bytes(self.mem[r].try_into().unwrap()))
    }
    fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), EmuFault> {
        let r = self.range(addr).ok_or(EmuFault { addr, write: true })?;
        self.mem[r].copy_from_slice(&value.to_le_bytes());
        Ok(())
    }
}

fn frame() -> TrapFrame {
    // Distinct values in every register.
    TrapFrame {
        rax: 0x1000_0000_0000_00a0,
        rcx: 0x1000_0000_0000_00c0,
        rdx: 0x1000_0000_0000_00d0,
        rbx: 0x1000_0000_0000_00b0,
        rbp: 0x1000_0000_0000_00bb,
        rsi: 0x1000_0000_0000_0051,
        rdi: 0x1000_0000_0000_00d1,
        r8: 0x1000_0000_0000_0008,
        r9: 0x1000_0000_0000_0009,
        r10: 0x1000_0000_0000_0010,
        r11: 0x1000_0000_0000_0011,
        r12: 0x1000_0000_0000_0012,
        r13: 0x1000_0000_0000_0013,
        r14: 0x1000_0000_0000_0014,
        r15: 0x1000_0000_0000_0015,
        rsp: STACK_BASE + 0x800,
        rip: ADDR + 1, // as reported by the int3 trap
        rflags: 0x202,
        cs: 0x8,
        ss: 0x10,
        ..TrapFrame::default()
    }
}

/// Analyze `bytes` at ADDR and emulate them on `f`.
fn run(bytes: &[u8], f: &mut TrapFrame, mem: &mut VecStack) -> Result<(), EmuFault> {
    let a = analyze(bytes, ADDR, ADDR).expect("analyzable");
    let arch::insn::Execution::Emulate(e) = a.exec else {
        panic!("{bytes:02x?} is not emulated: {:?}", a.exec)
    };
    emulate(&e, a.next_ip(), f, mem)
}

// ---- native execution on the host CPU ---------------------------------------

/// User-mode-settable arithmetic flags; IF stays set, DF/TF clear.
const ARITH: [u64; 6] = [CF, PF, AF, ZF, SF, OF];

fn flag_combos() -> impl Iterator<Item = u64> {
    (0..64u32).map(|m| {
        ARITH
            .iter()
            .enumerate()
            .filter(|(i, _)| m & (1 << i) != 0)
            .fold(0x202u64, |f, (_, b)| f | b)
    })
}

macro_rules! native_jcc {
    ($($n:literal)*) => {
        /// Run `j<cc> +4` (short form, opcode 0x70+cc) with RFLAGS = `flags`;
        /// true when it branched.
        fn native_jcc_short(cc: u8, flags: u64) -> bool {
            let taken: u64;
            match cc {
                $($n => {
                    // SAFETY: the asm pushes/pops one word on our own stack,
                    // loads only arithmetic flags (+IF, which user mode cannot
                    // change), and branches within its own bytes.
                    unsafe {
                        core::arch::asm!(
                            "push {f}",
                            "popfq",
                            ".byte {op}, 0x07",          // jcc +7
                            ".byte 0xb8, 0, 0, 0, 0",    // mov $0,%eax
                            ".byte 0xeb, 0x05",          // jmp +5
                            ".byte 0xb8, 1, 0, 0, 0",    // mov $1,%eax
                            f = in(reg) flags,
                            op = const 0x70 + $n,
                            out("rax") taken,
                        )
                    }
                })*
                _ => unreachable!(),
            }
            taken & 0xffff_ffff != 0
        }
        /// The same with the near form `0f 80+cc rel32`.
        fn native_jcc_near(cc: u8, flags: u64) -> bool {
            let taken: u64;
            match cc {
                $($n => {
                    // SAFETY: as in native_jcc_short.
                    unsafe {
                        core::arch::asm!(
                            "push {f}",
                            "popfq",
                            ".byte 0x0f, {op}, 7, 0, 0, 0",
                            ".byte 0xb8, 0, 0, 0, 0",
                            ".byte 0xeb, 0x05",
                            ".byte 0xb8, 1, 0, 0, 0",
                            f = in(reg) flags,
                            op = const 0x80 + $n,
                            out("rax") taken,
                        )
                    }
                })*
                _ => unreachable!(),
            }
            taken & 0xffff_ffff != 0
        }
    };
}
native_jcc!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);

macro_rules! native_loop {
    ($($name:ident: $prefix:literal $op:literal;)*) => {
        $(
            /// Run the loop-family instruction (`0x90` = no prefix, `0x67` =
            /// ecx) with rcx and RFLAGS given; returns (branched, rcx after).
            fn $name(rcx: u64, flags: u64) -> (bool, u64) {
                let taken: u64;
                let mut c = rcx;
                // SAFETY: as in native_jcc_short; rcx is declared inout.
                unsafe {
                    core::arch::asm!(
                        "push {f}",
                        "popfq",
                        ".byte {p}, {op}, 0x07",
                        ".byte 0xb8, 0, 0, 0, 0",
                        ".byte 0xeb, 0x05",
                        ".byte 0xb8, 1, 0, 0, 0",
                        f = in(reg) flags,
                        p = const $prefix,
                        op = const $op,
                        out("rax") taken,
                        inout("rcx") c,
                    )
                }
                (taken & 0xffff_ffff != 0, c)
            }
        )*
    };
}
native_loop! {
    native_loop_rcx: 0x90 0xe2;
    native_loope_rcx: 0x90 0xe1;
    native_loopne_rcx: 0x90 0xe0;
    native_jrcxz: 0x90 0xe3;
    native_loop_ecx: 0x67 0xe2;
    native_loope_ecx: 0x67 0xe1;
    native_loopne_ecx: 0x67 0xe0;
    native_jecxz: 0x67 0xe3;
}

#[test]
fn every_jcc_matches_native_on_every_flag_combination() {
    let mut mem = VecStack::new();
    let mut compared = 0;
    for cc in 0..16u8 {
        for (near, bytes) in [
            (false, vec![0x70 + cc, 0x10]),
            (true, vec![0x0f, 0x80 + cc, 0x10, 0, 0, 0]),
        ] {
            let a = analyze(&bytes, ADDR, ADDR).unwrap();
            let target = a.next_ip() + 0x10;
            assert_eq!(
                a.exec,
                arch::insn::Execution::Emulate(Emulation::Jcc {
                    cond: Cond::from_nibble(cc),
                    target
                })
            );
            let mut both = [false, false];
            for flags in flag_combos() {
                let native = if near {
                    native_jcc_near(cc, flags)
                } else {
                    native_jcc_short(cc, flags)
                };
                both[native as usize] = true;
                let mut f = frame();
                f.rflags = flags;
                let before = f;
                run(&bytes, &mut f, &mut mem).unwrap();
                let want = if native { target } else { a.next_ip() };
                assert_eq!(
                    f.rip,
                    want,
                    "j{} ({bytes:02x?}) flags {flags:#x}: native taken={native}",
                    Cond::from_nibble(cc).suffix()
                );
                assert_eq!(
                    (f.rsp, f.rflags, f.rcx),
                    (before.rsp, before.rflags, before.rcx)
                );
                compared += 1;
            }
            assert_eq!(
                both,
                [true, true],
                "both outcomes of j{} exercised",
                Cond::from_nibble(cc).suffix()
            );
        }
    }
    assert_eq!(compared, 16 * 2 * 64);
}

#[test]
fn loop_family_matches_native() {
    type Native = fn(u64, u64) -> (bool, u64);
    let forms: [(&[u8], Native); 8] = [
        (&[0xe2, 0x10], native_loop_rcx),
        (&[0xe1, 0x10], native_loope_rcx),
        (&[0xe0, 0x10], native_loopne_rcx),
        (&[0xe3, 0x10], native_jrcxz),
        (&[0x67, 0xe2, 0x10], native_loop_ecx),
        (&[0x67, 0xe1, 0x10], native_loope_ecx),
        (&[0x67, 0xe0, 0x10], native_loopne_ecx),
        (&[0x67, 0xe3, 0x10], native_jecxz),
    ];
    let counters = [
        0,
        1,
        2,
        3,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        0x1_0000_0002,
        0xdead_beef_0000_0000,
        0xdead_beef_0000_0001,
        u64::MAX,
    ];
    let mut mem = VecStack::new();
    for (bytes, native) in forms {
        let a = analyze(bytes, ADDR, ADDR).unwrap();
        let target = a.next_ip() + 0x10;
        for rcx in counters {
            for zf in [0, ZF] {
                let flags = 0x202 | zf;
                let (taken, rcx_after) = native(rcx, flags);
                let mut f = frame();
                f.rcx = rcx;
                f.rflags = flags;
                run(bytes, &mut f, &mut mem).unwrap();
                let want_ip = if taken { target } else { a.next_ip() };
                assert_eq!(
                    (f.rip, f.rcx),
                    (want_ip, rcx_after),
                    "{bytes:02x?} rcx={rcx:#x} zf={}: native taken={taken} rcx={rcx_after:#x}",
                    zf != 0
                );
                assert_eq!(f.rflags, flags, "loop does not change flags");
            }
        }
    }
}

#[test]
fn loop_counter_semantics_from_the_issue() {
    // LOOP branches on the value after the decrement: rcx = 0, 1, 2.
    let mut mem = VecStack::new();
    let bytes = [0xe2, 0x10];
    for (rcx, taken, after) in [(0u64, true, u64::MAX), (1, false, 0), (2, true, 1)] {
        let mut f = frame();
        f.rcx = rcx;
        run(&bytes, &mut f, &mut mem).unwrap();
        assert_eq!(f.rip == ADDR + 2 + 0x10, taken, "rcx={rcx}");
        assert_eq!(f.rcx, after);
    }
}

#[test]
fn call_rel_pushes_the_return_address() {
    let mut mem = VecStack::new();
    let mut f = frame();
    let sp = f.rsp;
    run(&[0xe8, 0x00, 0x01, 0x00, 0x00], &mut f, &mut mem).unwrap();
    assert_eq!(f.rip, ADDR + 5 + 0x100);
    assert_eq!(f.rsp, sp - 8);
    assert_eq!(mem.get(sp - 8), ADDR + 5);
}

#[test]
fn ret_and_ret_imm16() {
    for (bytes, pop) in [
        (&[0xc3][..], 0u64),
        (&[0xc2, 0x10, 0x00][..], 16),
        (&[0xc2, 0x08, 0x01][..], 0x108),
        (&[0xf3, 0xc3][..], 0),
    ] {
        let mut mem = VecStack::new();
        let mut f = frame();
        let sp = f.rsp;
        mem.set(sp, 0xffff_ffff_8123_4567);
        mem.set(sp + 8, 0x1111);
        run(bytes, &mut f, &mut mem).unwrap();
        assert_eq!(f.rip, 0xffff_ffff_8123_4567, "{bytes:02x?}");
        assert_eq!(f.rsp, sp + 8 + pop, "{bytes:02x?}");
    }
}

#[test]
fn call_and_jmp_through_every_register() {
    let regs = [
        (Reg::Rax, 0u8),
        (Reg::Rcx, 1),
        (Reg::Rdx, 2),
        (Reg::Rbx, 3),
        (Reg::Rsp, 4),
        (Reg::Rbp, 5),
        (Reg::Rsi, 6),
        (Reg::Rdi, 7),
        (Reg::R8, 8),
        (Reg::R9, 9),
        (Reg::R10, 10),
        (Reg::R11, 11),
        (Reg::R12, 12),
        (Reg::R13, 13),
        (Reg::R14, 14),
        (Reg::R15, 15),
    ];
    for (reg, n) in regs {
        let rex = if n >= 8 { vec![0x41] } else { vec![] };
        let call = [rex.clone(), vec![0xff, 0xd0 + (n & 7)]].concat();
        let jmp = [rex, vec![0xff, 0xe0 + (n & 7)]].concat();

        let mut mem = VecStack::new();
        let mut f = frame();
        let sp = f.rsp;
        let value = reg.read(&f);
        run(&call, &mut f, &mut mem).unwrap();
        assert_eq!(
            f.rip,
            value,
            "call *%{} jumps to the value before the push",
            reg.name()
        );
        assert_eq!(f.rsp, sp - 8);
        assert_eq!(mem.get(sp - 8), ADDR + call.len() as u64);

        let mut f = frame();
        run(&jmp, &mut f, &mut mem).unwrap();
        assert_eq!(f.rip, value, "jmp *%{}", reg.name());
        assert_eq!(f.rsp, sp);
    }
}

#[test]
fn cli_sti_change_only_if() {
    let mut mem = VecStack::new();
    for start in [0x202u64, 0x002, 0x202 | CF | ZF | OF, 0x2 | SF | TF] {
        let mut f = frame();
        f.rflags = start;
        run(&[0xfa], &mut f, &mut mem).unwrap();
        assert_eq!((f.rflags, f.rip), (start & !IF, ADDR + 1));
        let mut f = frame();
        f.rflags = start;
        run(&[0xfb], &mut f, &mut mem).unwrap();
        assert_eq!((f.rflags, f.rip), (start | IF, ADDR + 1));
    }
}

#[test]
fn pushf_clears_rf_and_vm_like_the_cpu() {
    let mut mem = VecStack::new();
    let mut f = frame();
    f.rflags = 0x202 | CF | ZF | RF | (1 << 17);
    let sp = f.rsp;
    run(&[0x9c], &mut f, &mut mem).unwrap();
    assert_eq!(mem.get(sp - 8), 0x202 | CF | ZF);
    assert_eq!(
        f.rflags,
        0x202 | CF | ZF | RF | (1 << 17),
        "pushf leaves RFLAGS alone"
    );
    assert_eq!((f.rsp, f.rip), (sp - 8, ADDR + 1));

    // Natively (user mode), pushfq stores the flags the CPU holds.
    let native: u64;
    // SAFETY: loads arithmetic flags and reads them back; stack balanced.
    unsafe {
        core::arch::asm!("push {f}", "popfq", "pushfq", "pop {out}", f = in(reg) 0x202u64 | CF | SF | OF, out = out(reg) native)
    };
    let mut f = frame();
    f.rflags = 0x202 | CF | SF | OF;
    run(&[0x9c], &mut f, &mut mem).unwrap();
    assert_eq!(mem.get(f.rsp), native);
}

#[test]
fn popf_writes_only_ring0_writable_flags() {
    let vm_vif_vip = (1u64 << 17) | (1 << 19) | (1 << 20);
    let mut mem = VecStack::new();
    // Popping all ones: every writable flag set, RF cleared, VM/VIF/VIP kept
    // from before (clear here), reserved bits as architected.
    let mut f = frame();
    f.rflags = 0x202 | RF;
    let sp = f.rsp;
    mem.set(sp, u64::MAX);
    run(&[0x9d], &mut f, &mut mem).unwrap();
    assert_eq!(f.rflags, 0x0000_0000_0024_7fd7);
    assert_eq!((f.rsp, f.rip), (sp + 8, ADDR + 1));
    // Popping zero: IF (and every other writable flag) cleared, bit 1 set,
    // VM/VIF/VIP unchanged.
    let mut f = frame();
    f.rflags = 0x202 | CF | vm_vif_vip;
    mem.set(f.rsp, 0);
    run(&[0x9d], &mut f, &mut mem).unwrap();
    assert_eq!(f.rflags, 0x2 | vm_vif_vip);
    // pushf; popf round-trips an ordinary context.
    let mut f = frame();
    f.rflags = 0x202 | ZF | PF | (1 << 18);
    let before = f.rflags;
    run(&[0x9c], &mut f, &mut mem).unwrap();
    run(&[0x9d], &mut f, &mut mem).unwrap();
    assert_eq!(f.rflags, before);
    assert_eq!(f.rsp, frame().rsp);
}

#[test]
fn stack_faults_leave_the_frame_unchanged() {
    let mut mem = VecStack::new();
    let cases: [(&[u8], bool); 6] = [
        (&[0xe8, 0, 0, 0, 0], true),
        (&[0xff, 0xd0], true),
        (&[0x9c], true),
        (&[0xc3], false),
        (&[0xc2, 8, 0], false),
        (&[0x9d], false),
    ];
    for (bytes, write) in cases {
        // Push faults when rsp-8 is outside the stack; pop when rsp is.
        let bad_sps = if write {
            [STACK_BASE, STACK_BASE + 4, 0]
        } else {
            [
                STACK_BASE - 8,
                STACK_BASE + STACK_SIZE,
                STACK_BASE + STACK_SIZE - 4,
            ]
        };
        for sp in bad_sps {
            let mut f = frame();
            f.rsp = sp;
            let before = f;
            let err = run(bytes, &mut f, &mut mem).unwrap_err();
            assert_eq!(err.write, write, "{bytes:02x?}");
            assert_eq!(err.addr, if write { sp.wrapping_sub(8) } else { sp });
            assert_eq!(
                (f.rip, f.rsp, f.rflags, f.rcx),
                (before.rip, before.rsp, before.rflags, before.rcx)
            );
        }
    }
}

#[test]
fn every_emulation_kind_is_in_the_table() {
    // Guard: the table must keep covering each emulated class (see insn_cases.txt).
    let text = include_str!("insn_cases.txt");
    for word in [
        "emulate call",
        "emulate jmp",
        "emulate jcc",
        "emulate loop loop ",
        "emulate loop loope",
        "emulate loop loopne",
        "emulate loop jrcxz",
        "emulate ret 8",
        "emulate callreg r",
        "emulate jmpreg r",
        "emulate cli",
        "emulate sti",
        "emulate pushf",
        "emulate popf",
    ] {
        assert!(text.contains(word), "insn_cases.txt lacks `{word}`");
    }
}
