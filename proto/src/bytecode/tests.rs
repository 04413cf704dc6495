#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use std::cell::Cell;

/// A frame of 20 registers and a small readable memory window at `BASE`.
struct TestEnv {
    regs: [u64; NREGS as usize],
    ctx: [u64; NCTX as usize],
    mem: Vec<u8>,
    reads: Cell<u64>,
}

const BASE: u64 = 0x1000;

impl TestEnv {
    fn new() -> Self {
        let mut regs = [0u64; NREGS as usize];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = i as u64 * 0x10;
        }
        let mut mem = vec![0u8; 0x2000];
        for (i, b) in mem.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        mem[..6].copy_from_slice(b"hello\0");
        mem[0x10..0x16].copy_from_slice(b"hellp\0");
        TestEnv {
            regs,
            ctx: [7, 1, (-2i64) as u64, 1234],
            mem,
            reads: Cell::new(0),
        }
    }
}

impl Env for TestEnv {
    fn reg(&self, n: u8) -> u64 {
        // The verifier promises n < NREGS: indexing panics (fails the
        // test) otherwise.
        self.regs[usize::from(n)]
    }
    fn ctx(&self, n: u8) -> u64 {
        self.ctx[usize::from(n)]
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.reads.set(self.reads.get() + 1);
        assert!(buf.len() <= 16, "reads are bounded chunks");
        let Some(off) = addr.checked_sub(BASE) else {
            return false;
        };
        let off = off as usize;
        match self.mem.get(off..off.saturating_add(buf.len())) {
            Some(s) if off.checked_add(buf.len()).is_some() => {
                buf.copy_from_slice(s);
                true
            }
            _ => false,
        }
    }
}

fn run(w: Writer) -> Result<u64, EvalError> {
    let p = w.finish().unwrap();
    p.eval(&TestEnv::new())
}

#[test]
fn one_compare_uses_the_fast_path_and_agrees_with_the_loop() {
    let env = TestEnv::new();
    for (cmp, v, want) in [
        (op::EQ, 0x50, 1),
        (op::EQ, 5, 0),
        (op::NE, 5, 1),
        (op::LTS, -1i64 as u64, 0),
        (op::LTU, -1i64 as u64, 1),
        (op::GEU, 0x50, 1),
        (op::GTS, 0x4f, 1),
    ] {
        let mut w = Writer::new();
        w.reg(5).konst(v).op(cmp);
        let p = w.finish().unwrap();
        assert!(p.fast.is_some(), "{p}");
        assert_eq!(p.eval(&env), Ok(want), "{p}");
        assert_eq!(p.run(&env), Ok(want), "{p}");
    }
}

#[test]
fn typed_loads_extend_as_asked() {
    let mut env = TestEnv::new();
    env.mem[0x100..0x108].copy_from_slice(&0x8182_8384_8586_8788u64.to_le_bytes());
    let load = |size, signed| {
        let mut w = Writer::new();
        w.konst(BASE + 0x100).load(size, signed);
        w.finish().unwrap().eval(&env).unwrap()
    };
    assert_eq!(load(1, false), 0x88);
    assert_eq!(load(1, true), 0xffff_ffff_ffff_ff88);
    assert_eq!(load(2, false), 0x8788);
    assert_eq!(load(2, true), 0xffff_ffff_ffff_8788);
    assert_eq!(load(4, false), 0x8586_8788);
    assert_eq!(load(4, true), 0xffff_ffff_8586_8788);
    assert_eq!(load(8, false), 0x8182_8384_8586_8788);
}

#[test]
fn faults_and_division_by_zero_are_errors() {
    let mut w = Writer::new();
    w.konst(0xdead_0000).load(8, false);
    assert_eq!(run(w), Err(EvalError::Fault(0xdead_0000)));
    let mut w = Writer::new();
    w.konst(1).konst(0).op(op::DIVU);
    assert_eq!(run(w), Err(EvalError::DivideByZero));
    let mut w = Writer::new();
    w.konst(i64::MIN as u64).konst(-1i64 as u64).op(op::DIVS);
    assert_eq!(run(w), Err(EvalError::DivideByZero), "overflow too");
}

#[test]
fn shifts_are_defined_for_every_count() {
    let sh = |a: u64, b: u64, c: u8| {
        let mut w = Writer::new();
        w.konst(a).konst(b).op(c);
        run(w).unwrap()
    };
    assert_eq!(sh(1, 3, op::SHL), 8);
    assert_eq!(sh(1, 64, op::SHL), 0);
    assert_eq!(sh(u64::MAX, 1000, op::SHRU), 0);
    assert_eq!(sh(-8i64 as u64, 1000, op::SHRS), u64::MAX);
    assert_eq!(sh(-8i64 as u64, 1, op::SHRS), -4i64 as u64);
}

#[test]
fn logic_with_forward_jumps() {
    // (rdi == 0x50) && (rsi == 0x40): short-circuit with jz.
    let build = |a: u64, b: u64| {
        let mut w = Writer::new();
        w.reg(5).konst(a).op(op::EQ);
        w.op(op::DUP);
        let l = w.jump(op::JZ);
        w.op(op::POP).reg(4).konst(b).op(op::EQ);
        w.bind(l);
        w.finish().unwrap()
    };
    let env = TestEnv::new();
    assert_eq!(build(0x50, 0x40).eval(&env), Ok(1));
    assert_eq!(build(0x50, 0x41).eval(&env), Ok(0));
    assert_eq!(build(0x51, 0x40).eval(&env), Ok(0));
}

#[test]
fn strings_compare_bounded() {
    let mut w = Writer::new();
    w.konst(BASE).streq(b"hello", true);
    assert_eq!(run(w), Ok(1));
    let mut w = Writer::new();
    w.konst(BASE).streq(b"hell", true);
    assert_eq!(run(w), Ok(0), "no NUL after the literal");
    let mut w = Writer::new();
    w.konst(BASE).streq(b"hell", false);
    assert_eq!(run(w), Ok(1), "memeq: prefix bytes");
    let mut w = Writer::new();
    w.konst(BASE).konst(BASE + 0x10).strcmp(64);
    assert_eq!(run(w), Ok(-1i64 as u64));
    let mut w = Writer::new();
    w.konst(BASE).konst(BASE + 0x10).strcmp(4);
    assert_eq!(run(w), Ok(0), "equal within the bound");
    let mut w = Writer::new();
    w.konst(0x10).streq(b"x", true);
    assert_eq!(run(w), Err(EvalError::Fault(0x10)));
    // A string that ends right before an unreadable page reads fine.
    let mut env = TestEnv::new();
    let end = env.mem.len();
    env.mem[end - 3..].copy_from_slice(b"ab\0");
    let mut w = Writer::new();
    w.konst(BASE + end as u64 - 3).streq(b"ab", true);
    assert_eq!(w.finish().unwrap().eval(&env), Ok(1));
}

#[test]
fn context_values_and_extension() {
    let mut w = Writer::new();
    w.ctx(CTX_RET).konst(0).op(op::LTS);
    assert_eq!(run(w), Ok(1));
    let mut w = Writer::new();
    w.konst(0xff).ext(8, true);
    assert_eq!(run(w), Ok(u64::MAX));
    let mut w = Writer::new();
    w.konst(-1i64 as u64).ext(16, false);
    assert_eq!(run(w), Ok(0xffff));
}

#[test]
fn verifier_refuses_bad_programs() {
    use VerifyError as E;
    let v = Program::verify;
    assert_eq!(v(&[]), Err(E::Empty));
    assert_eq!(
        v(&[op::NOT; MAX_CODE + 1]),
        Err(E::TooLong { len: MAX_CODE + 1 })
    );
    assert_eq!(v(&[0xff]), Err(E::UnknownOpcode { at: 0, code: 0xff }));
    assert_eq!(v(&[op::CONST32, 1, 2]), Err(E::Truncated { at: 0 }));
    assert_eq!(
        v(&[op::REG, 20, op::END]),
        Err(E::BadRegister { at: 0, reg: 20 })
    );
    assert_eq!(
        v(&[op::CTX, 4, op::END]),
        Err(E::BadContext { at: 0, ctx: 4 })
    );
    assert_eq!(v(&[op::END]), Err(E::StackUnderflow { at: 0 }));
    assert_eq!(
        v(&[op::CONST8, 1, op::ADD, op::END]),
        Err(E::StackUnderflow { at: 2 })
    );
    assert_eq!(v(&[op::CONST8, 1]), Err(E::NoEnd));
    let mut deep = Vec::new();
    for _ in 0..=MAX_STACK {
        deep.extend_from_slice(&[op::CONST8, 1]);
    }
    deep.push(op::END);
    assert_eq!(v(&deep), Err(E::StackOverflow { at: 2 * MAX_STACK }));
    // A jump backwards cannot be written: the offset is unsigned, and a
    // huge one leaves the program.
    assert_eq!(
        v(&[op::JMP, 0xff, 0xff, op::CONST8, 1, op::END]),
        Err(E::BadJump { at: 0 })
    );
    // Into the middle of an instruction.
    assert_eq!(
        v(&[op::JMP, 1, 0, op::CONST8, 1, op::END]),
        Err(E::BadJump { at: 4 })
    );
    // Joins with different depths.
    assert_eq!(
        v(&[
            op::CONST8,
            0,
            op::JZ,
            2,
            0,
            op::CONST8,
            1,
            op::CONST8,
            2,
            op::END
        ]),
        Err(E::StackMismatch { at: 7 })
    );
    // Bit counts and bounds.
    assert_eq!(
        v(&[op::CONST8, 1, op::SEXT, 0, op::END]),
        Err(E::BadOperand { at: 2 })
    );
    assert_eq!(
        v(&[op::CONST8, 1, op::SEXT, 65, op::END]),
        Err(E::BadOperand { at: 2 })
    );
    assert_eq!(
        v(&[op::CONST8, 1, op::DUP, op::STRCMP, 0, op::END]),
        Err(E::BadOperand { at: 3 })
    );
    // Unreachable code after `end` is fine when it decodes.
    assert!(v(&[op::CONST8, 1, op::END, op::ADD]).is_ok());
    // Messages name the problem.
    assert!(E::TooLong { len: 300 }.to_string().contains("at most 256"));
}

#[test]
fn writer_reports_overflow_as_too_long() {
    let mut w = Writer::new();
    for _ in 0..100 {
        w.konst(0x1234_5678_9abc).op(op::POP);
    }
    assert!(matches!(w.finish(), Err(VerifyError::TooLong { .. })));
}

#[test]
fn hex_round_trip_and_display() {
    let mut w = Writer::new();
    w.reg(5).konst(5).op(op::EQ);
    let p = w.finish().unwrap();
    let hex = Hex(&p).to_string();
    assert_eq!(hex, "0505010520".to_string() + "00");
    assert_eq!(from_hex(&hex).unwrap(), p);
    assert_eq!(p.to_string(), "reg rdi; const8 5; eq; end");
    assert_eq!(from_hex("0"), Err(HexProgramError::BadHex));
    assert_eq!(from_hex("zz"), Err(HexProgramError::BadHex));
    assert!(matches!(
        from_hex("05ff00"),
        Err(HexProgramError::Verify(VerifyError::BadRegister { .. }))
    ));
    assert_eq!(reg_number("$rdi"), Some(5));
    assert_eq!(reg_number("pc"), Some(16));
    assert_eq!(reg_number("xmm0"), None);
}

#[test]
fn opcode_table_is_consistent() {
    for (i, a) in OPS.iter().enumerate() {
        assert_eq!(info(a.code), Some(a));
        for b in &OPS[i + 1..] {
            assert_ne!(a.code, b.code, "{} and {}", a.name, b.name);
            assert_ne!(a.name, b.name);
        }
    }
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random programs: mostly valid opcodes with random operands, some raw
/// garbage. The verifier never panics; every accepted program runs to an
/// answer without panicking, reads registers only in range (the env's
/// indexing would panic) and memory only through the callback in bounded
/// chunks; the fast path agrees with the loop.
#[test]
fn fuzz_verifier_and_interpreter() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let env = TestEnv::new();
    let mut accepted = 0;
    for round in 0..200_000 {
        let len = 1 + rng.below(if round % 10 == 0 { 300 } else { 24 }) as usize;
        let mut code = Vec::with_capacity(len);
        while code.len() < len {
            if rng.below(16) == 0 {
                code.push(rng.next() as u8);
                continue;
            }
            let o = OPS[rng.below(OPS.len() as u64) as usize];
            code.push(o.code);
            let small = rng.below(4) != 0;
            match o.imm {
                Imm::Reg => code.push(rng.below(if small { 20 } else { 256 }) as u8),
                Imm::Ctx => code.push(rng.below(if small { 4 } else { 256 }) as u8),
                Imm::Bits | Imm::Bound => code.push(rng.below(if small { 65 } else { 256 }) as u8),
                Imm::Jump => {
                    let j = rng.below(if small { 8 } else { 0x10000 }) as u16;
                    code.extend_from_slice(&j.to_le_bytes());
                }
                Imm::Bytes => {
                    let n = rng.below(if small { 6 } else { 256 }) as usize;
                    code.push(n as u8);
                    for _ in 0..n.min(8) {
                        code.push(rng.next() as u8);
                    }
                }
                imm => {
                    let v = match rng.below(3) {
                        0 => BASE + rng.below(0x2010),
                        1 => rng.below(70),
                        _ => rng.next(),
                    };
                    code.extend_from_slice(&v.to_le_bytes()[..imm.size()]);
                }
            }
        }
        if rng.below(2) == 0 {
            code.push(op::END);
        }
        let Ok(p) = Program::verify(&code) else {
            continue;
        };
        accepted += 1;
        let r = p.eval(&env);
        if p.fast.is_some() {
            assert_eq!(r, p.run(&env));
        }
        let _ = p.to_string();
        assert_eq!(from_hex(&Hex(&p).to_string()), Ok(p));
    }
    assert!(
        accepted > 1_000,
        "the generator makes valid programs too ({accepted})"
    );
}

/// An expression tree and its reference value, written through `Writer`.
enum Tree {
    Const(u64),
    Reg(u8),
    Load(u64, u8, bool),
    Bin(u8, Box<Tree>, Box<Tree>),
    And(Box<Tree>, Box<Tree>),
}

fn gen_tree(rng: &mut Rng, depth: u32) -> Tree {
    match if depth == 0 {
        rng.below(3)
    } else {
        rng.below(5)
    } {
        0 => Tree::Const(rng.below(100)),
        1 => Tree::Reg(rng.below(20) as u8),
        2 => Tree::Load(
            BASE + rng.below(0x100),
            [1, 2, 4, 8][rng.below(4) as usize],
            rng.below(2) == 0,
        ),
        3 => {
            let ops = [
                op::ADD,
                op::SUB,
                op::MUL,
                op::AND,
                op::OR,
                op::XOR,
                op::EQ,
                op::LTS,
                op::GEU,
                op::SHRU,
            ];
            Tree::Bin(
                ops[rng.below(ops.len() as u64) as usize],
                Box::new(gen_tree(rng, depth - 1)),
                Box::new(gen_tree(rng, depth - 1)),
            )
        }
        _ => Tree::And(
            Box::new(gen_tree(rng, depth - 1)),
            Box::new(gen_tree(rng, depth - 1)),
        ),
    }
}

fn emit(t: &Tree, w: &mut Writer) {
    match t {
        Tree::Const(v) => {
            w.konst(*v);
        }
        Tree::Reg(r) => {
            w.reg(*r);
        }
        Tree::Load(a, s, signed) => {
            w.konst(*a).load(*s, *signed);
        }
        Tree::Bin(o, a, b) => {
            emit(a, w);
            emit(b, w);
            w.op(*o);
        }
        Tree::And(a, b) => {
            emit(a, w);
            w.konst(0).op(op::NE).op(op::DUP);
            let l = w.jump(op::JZ);
            w.op(op::POP);
            emit(b, w);
            w.konst(0).op(op::NE);
            w.bind(l);
        }
    }
}

fn reference(t: &Tree, env: &TestEnv) -> u64 {
    match t {
        Tree::Const(v) => *v,
        Tree::Reg(r) => env.regs[*r as usize],
        Tree::Load(a, s, signed) => {
            let off = (*a - BASE) as usize;
            let mut b = [0u8; 8];
            b[..*s as usize].copy_from_slice(&env.mem[off..off + *s as usize]);
            let v = u64::from_le_bytes(b);
            match (s, signed) {
                (1, true) => v as u8 as i8 as u64,
                (2, true) => v as u16 as i16 as u64,
                (4, true) => v as u32 as i32 as u64,
                _ => v,
            }
        }
        Tree::Bin(o, a, b) => binary(*o, reference(a, env), reference(b, env)).unwrap(),
        Tree::And(a, b) => u64::from(reference(a, env) != 0 && reference(b, env) != 0),
    }
}

#[test]
fn random_expressions_match_a_reference_evaluator() {
    let mut rng = Rng(42);
    let env = TestEnv::new();
    for _ in 0..20_000 {
        let t = gen_tree(&mut rng, 3);
        let mut w = Writer::new();
        emit(&t, &mut w);
        let p = w.finish().unwrap();
        assert_eq!(p.eval(&env), Ok(reference(&t, &env)), "{p}");
    }
}
