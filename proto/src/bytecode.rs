//! The in-kernel bytecode: a small verified stack machine for breakpoint
//! conditions and probe predicates.
//!
//! The host (the shell, or the stub translating gdb's agent expressions)
//! writes a program with [`Writer`]; the kernel accepts it only through
//! [`Program::verify`] and runs it with [`Program::eval`] at a breakpoint or
//! a probe hit. One opcode table ([`OPS`]) drives the writer, the verifier,
//! the interpreter and the disassembler, so the encoding cannot drift.
//!
//! The machine:
//! - values are `u64` words on a stack of at most [`MAX_STACK`];
//! - operands: constants, the trap frame's registers (gdb's amd64 numbering,
//!   [`REG_NAMES`]), context values ([`CTX_NAMES`]: task, cpu, a kretprobe's
//!   return value and duration), memory through the caller's fault-safe
//!   read callback ([`Env::read`]) with typed loads (1/2/4/8 bytes, zero or
//!   sign extension);
//! - arithmetic, comparisons (signed and unsigned), logic, shifts (a shift by
//!   64 or more gives 0, or the sign for an arithmetic right shift);
//! - forward jumps only (no loops: every program ends within
//!   [`MAX_CODE`] steps), bounded string compares.
//!
//! A memory read that faults or a division by zero stops the program with an
//! [`EvalError`]; the caller counts it and treats the condition as false.
//! The verifier refuses programs over [`MAX_CODE`] bytes, unknown opcodes,
//! truncated operands, register or context numbers out of range, jumps
//! backwards, out of range or into an operand, stacks that can underflow or
//! overflow, paths that reach a join point with different stack depths, and
//! code that can fall off the end without `end`.

use core::fmt;

/// Largest program, in bytes.
pub const MAX_CODE: usize = 256;
/// Deepest stack a program may use.
pub const MAX_STACK: usize = 16;
/// Longest string a string compare reads (bytes, without the NUL).
pub const MAX_STR: usize = 128;

/// Registers by number: gdb's amd64 register numbers (the stub's
/// target description), so gdb's agent-expression `reg N` is the same `N`.
pub const REG_NAMES: [&str; 20] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "eflags", "cs", "ss",
];
/// Number of registers [`op::REG`] may name.
pub const NREGS: u8 = REG_NAMES.len() as u8;

/// Context values by number ([`op::CTX`]).
pub const CTX_NAMES: [&str; 4] = ["task", "cpu", "ret", "duration"];
/// Number of context values.
pub const NCTX: u8 = CTX_NAMES.len() as u8;
/// Context value: the current task id.
pub const CTX_TASK: u8 = 0;
/// Context value: the current CPU.
pub const CTX_CPU: u8 = 1;
/// Context value: a kretprobe's return value (rax at the return).
pub const CTX_RET: u8 = 2;
/// Context value: a kretprobe's entry-to-return time (timestamp ticks).
pub const CTX_DURATION: u8 = 3;

/// The register number of a name (`rdi`, `$rdi`, `pc`, `sp`, `rflags`).
pub fn reg_number(name: &str) -> Option<u8> {
    let name = name.strip_prefix('$').unwrap_or(name);
    let name = match name {
        "pc" => "rip",
        "sp" => "rsp",
        "fp" => "rbp",
        "rflags" => "eflags",
        n => n,
    };
    REG_NAMES
        .iter()
        .position(|r| *r == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// Opcodes. Operands follow the opcode byte, little-endian.
pub mod op {
    /// Pop the result and stop (non-zero = true).
    pub const END: u8 = 0x00;
    /// Push an `i8` operand, sign-extended.
    pub const CONST8: u8 = 0x01;
    /// Push an `i16` operand, sign-extended.
    pub const CONST16: u8 = 0x02;
    /// Push an `i32` operand, sign-extended.
    pub const CONST32: u8 = 0x03;
    /// Push a 64-bit operand.
    pub const CONST64: u8 = 0x04;
    /// Push register `u8` (gdb numbering, see `REG_NAMES`).
    pub const REG: u8 = 0x05;
    /// Push context value `u8` (see `CTX_NAMES`).
    pub const CTX: u8 = 0x06;
    /// Pop an address, push the byte there (zero-extended).
    pub const LD8: u8 = 0x08;
    pub const LD16: u8 = 0x09;
    pub const LD32: u8 = 0x0a;
    pub const LD64: u8 = 0x0b;
    /// Pop an address, push the byte there (sign-extended).
    pub const LDS8: u8 = 0x0c;
    pub const LDS16: u8 = 0x0d;
    pub const LDS32: u8 = 0x0e;
    /// Binary operators: pop b, pop a, push a OP b.
    pub const ADD: u8 = 0x10;
    pub const SUB: u8 = 0x11;
    pub const MUL: u8 = 0x12;
    pub const DIVS: u8 = 0x13;
    pub const DIVU: u8 = 0x14;
    pub const REMS: u8 = 0x15;
    pub const REMU: u8 = 0x16;
    pub const AND: u8 = 0x17;
    pub const OR: u8 = 0x18;
    pub const XOR: u8 = 0x19;
    pub const SHL: u8 = 0x1a;
    pub const SHRS: u8 = 0x1b;
    pub const SHRU: u8 = 0x1c;
    /// Unary operators: pop a, push OP a.
    pub const NEG: u8 = 0x1d;
    pub const NOT: u8 = 0x1e;
    pub const LNOT: u8 = 0x1f;
    /// Comparisons: pop b, pop a, push 1 or 0.
    pub const EQ: u8 = 0x20;
    pub const NE: u8 = 0x21;
    pub const LTS: u8 = 0x22;
    pub const LTU: u8 = 0x23;
    pub const LES: u8 = 0x24;
    pub const LEU: u8 = 0x25;
    pub const GTS: u8 = 0x26;
    pub const GTU: u8 = 0x27;
    pub const GES: u8 = 0x28;
    pub const GEU: u8 = 0x29;
    /// Sign-extend the top from `u8` bits (1..=64).
    pub const SEXT: u8 = 0x2a;
    /// Keep the low `u8` bits (1..=64) of the top.
    pub const ZEXT: u8 = 0x2b;
    pub const DUP: u8 = 0x30;
    pub const POP: u8 = 0x31;
    pub const SWAP: u8 = 0x32;
    /// Pop; jump forward by the `u16` operand (from the next instruction) if zero.
    pub const JZ: u8 = 0x38;
    /// Pop; jump forward if non-zero.
    pub const JNZ: u8 = 0x39;
    /// Jump forward.
    pub const JMP: u8 = 0x3a;
    /// Pop b, pop a (addresses); compare the NUL-terminated strings there,
    /// at most `u8` bytes; push -1, 0 or 1 (as `strncmp`).
    pub const STRCMP: u8 = 0x40;
    /// `len: u8`, then `len` bytes: pop an address; push 1 if the string
    /// there is exactly those bytes followed by a NUL, else 0.
    pub const STREQ: u8 = 0x41;
    /// `len: u8`, then `len` bytes: pop an address; push 1 if memory there
    /// starts with those bytes (no terminator: `&str` data), else 0.
    pub const MEMEQ: u8 = 0x42;
}

/// What follows an opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imm {
    None,
    I8,
    I16,
    I32,
    I64,
    /// A register number.
    Reg,
    /// A context value number.
    Ctx,
    /// A bit count 1..=64.
    Bits,
    /// A forward jump offset (u16).
    Jump,
    /// A string-compare bound 1..=MAX_STR.
    Bound,
    /// A length byte and that many bytes (0..=MAX_STR).
    Bytes,
}

impl Imm {
    /// Operand bytes (for `Bytes`: the length byte only).
    pub const fn size(self) -> usize {
        match self {
            Imm::None => 0,
            Imm::I8 | Imm::Reg | Imm::Ctx | Imm::Bits | Imm::Bound | Imm::Bytes => 1,
            Imm::I16 | Imm::Jump => 2,
            Imm::I32 => 4,
            Imm::I64 => 8,
        }
    }
}

/// One row of the opcode table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    pub code: u8,
    pub name: &'static str,
    pub imm: Imm,
    /// Values popped.
    pub pops: u8,
    /// Values pushed.
    pub pushes: u8,
}

const fn o(code: u8, name: &'static str, imm: Imm, pops: u8, pushes: u8) -> OpInfo {
    OpInfo {
        code,
        name,
        imm,
        pops,
        pushes,
    }
}

/// The opcode table: the one definition of the encoding.
pub const OPS: [OpInfo; 51] = [
    o(op::END, "end", Imm::None, 1, 0),
    o(op::CONST8, "const8", Imm::I8, 0, 1),
    o(op::CONST16, "const16", Imm::I16, 0, 1),
    o(op::CONST32, "const32", Imm::I32, 0, 1),
    o(op::CONST64, "const64", Imm::I64, 0, 1),
    o(op::REG, "reg", Imm::Reg, 0, 1),
    o(op::CTX, "ctx", Imm::Ctx, 0, 1),
    o(op::LD8, "ld8", Imm::None, 1, 1),
    o(op::LD16, "ld16", Imm::None, 1, 1),
    o(op::LD32, "ld32", Imm::None, 1, 1),
    o(op::LD64, "ld64", Imm::None, 1, 1),
    o(op::LDS8, "lds8", Imm::None, 1, 1),
    o(op::LDS16, "lds16", Imm::None, 1, 1),
    o(op::LDS32, "lds32", Imm::None, 1, 1),
    o(op::ADD, "add", Imm::None, 2, 1),
    o(op::SUB, "sub", Imm::None, 2, 1),
    o(op::MUL, "mul", Imm::None, 2, 1),
    o(op::DIVS, "divs", Imm::None, 2, 1),
    o(op::DIVU, "divu", Imm::None, 2, 1),
    o(op::REMS, "rems", Imm::None, 2, 1),
    o(op::REMU, "remu", Imm::None, 2, 1),
    o(op::AND, "and", Imm::None, 2, 1),
    o(op::OR, "or", Imm::None, 2, 1),
    o(op::XOR, "xor", Imm::None, 2, 1),
    o(op::SHL, "shl", Imm::None, 2, 1),
    o(op::SHRS, "shrs", Imm::None, 2, 1),
    o(op::SHRU, "shru", Imm::None, 2, 1),
    o(op::NEG, "neg", Imm::None, 1, 1),
    o(op::NOT, "not", Imm::None, 1, 1),
    o(op::LNOT, "lnot", Imm::None, 1, 1),
    o(op::EQ, "eq", Imm::None, 2, 1),
    o(op::NE, "ne", Imm::None, 2, 1),
    o(op::LTS, "lts", Imm::None, 2, 1),
    o(op::LTU, "ltu", Imm::None, 2, 1),
    o(op::LES, "les", Imm::None, 2, 1),
    o(op::LEU, "leu", Imm::None, 2, 1),
    o(op::GTS, "gts", Imm::None, 2, 1),
    o(op::GTU, "gtu", Imm::None, 2, 1),
    o(op::GES, "ges", Imm::None, 2, 1),
    o(op::GEU, "geu", Imm::None, 2, 1),
    o(op::SEXT, "sext", Imm::Bits, 1, 1),
    o(op::ZEXT, "zext", Imm::Bits, 1, 1),
    o(op::DUP, "dup", Imm::None, 1, 2),
    o(op::POP, "pop", Imm::None, 1, 0),
    o(op::SWAP, "swap", Imm::None, 2, 2),
    o(op::JZ, "jz", Imm::Jump, 1, 0),
    o(op::JNZ, "jnz", Imm::Jump, 1, 0),
    o(op::JMP, "jmp", Imm::Jump, 0, 0),
    o(op::STRCMP, "strcmp", Imm::Bound, 2, 1),
    o(op::STREQ, "streq", Imm::Bytes, 1, 1),
    o(op::MEMEQ, "memeq", Imm::Bytes, 1, 1),
];

/// Opcode -> index into [`OPS`] plus one (0: unknown), built from the table.
const INDEX: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < OPS.len() {
        t[OPS[i].code as usize] = i as u8 + 1;
        i += 1;
    }
    t
};

/// The table row of an opcode.
#[inline]
pub fn info(code: u8) -> Option<&'static OpInfo> {
    let i = INDEX[usize::from(code)];
    OPS.get(usize::from(i).checked_sub(1)?)
}

/// Why the verifier refused a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    Empty,
    /// Longer than [`MAX_CODE`].
    TooLong {
        len: usize,
    },
    UnknownOpcode {
        at: usize,
        code: u8,
    },
    /// An operand runs past the end.
    Truncated {
        at: usize,
    },
    BadRegister {
        at: usize,
        reg: u8,
    },
    BadContext {
        at: usize,
        ctx: u8,
    },
    /// A bit count outside 1..=64 or a string bound outside 1..=MAX_STR.
    BadOperand {
        at: usize,
    },
    /// A jump past the end or into the middle of an instruction.
    BadJump {
        at: usize,
    },
    /// Pops more than the stack holds.
    StackUnderflow {
        at: usize,
    },
    /// Pushes past [`MAX_STACK`].
    StackOverflow {
        at: usize,
    },
    /// Two paths reach `at` with different stack depths.
    StackMismatch {
        at: usize,
    },
    /// Execution can run past the last byte without `end`.
    NoEnd,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VerifyError::Empty => f.write_str("empty program"),
            VerifyError::TooLong { len } => {
                write!(
                    f,
                    "program too large: {len} bytes, at most {MAX_CODE} (simplify the expression)"
                )
            }
            VerifyError::UnknownOpcode { at, code } => {
                write!(f, "unknown opcode {code:#04x} at byte {at}")
            }
            VerifyError::Truncated { at } => {
                write!(f, "operand of the opcode at byte {at} is cut off")
            }
            VerifyError::BadRegister { at, reg } => {
                write!(
                    f,
                    "register number {reg} out of range at byte {at} (0..{NREGS})"
                )
            }
            VerifyError::BadContext { at, ctx } => {
                write!(
                    f,
                    "context value {ctx} out of range at byte {at} (0..{NCTX})"
                )
            }
            VerifyError::BadOperand { at } => write!(f, "bad operand at byte {at}"),
            VerifyError::BadJump { at } => {
                write!(
                    f,
                    "jump at byte {at} leaves the program or lands inside an instruction"
                )
            }
            VerifyError::StackUnderflow { at } => write!(f, "stack underflow at byte {at}"),
            VerifyError::StackOverflow { at } => {
                write!(
                    f,
                    "stack deeper than {MAX_STACK} at byte {at} (simplify the expression)"
                )
            }
            VerifyError::StackMismatch { at } => {
                write!(f, "paths join at byte {at} with different stack depths")
            }
            VerifyError::NoEnd => f.write_str("execution can run past the end without `end`"),
        }
    }
}

/// Why a program stopped without a result (the condition counts as false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// A memory read at this address faulted.
    Fault(u64),
    DivideByZero,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Fault(a) => write!(f, "memory at {a:#x} is not readable"),
            EvalError::DivideByZero => f.write_str("division by zero"),
        }
    }
}

/// What a program reads: the trap frame's registers, context values and
/// memory. The kernel implements it over the trap frame and its fault-safe
/// memory reads.
pub trait Env {
    /// Register `n` (`n < NREGS`, guaranteed by the verifier).
    fn reg(&self, n: u8) -> u64;
    /// Context value `n` (`n < NCTX`).
    fn ctx(&self, n: u8) -> u64;
    /// Reads `buf.len()` bytes at `addr`; `false` if any of it is not
    /// readable. Must never fault.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// A verified program. Only [`Program::verify`] makes one, so every
/// `Program` is safe to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Program {
    code: [u8; MAX_CODE],
    len: u16,
    /// The common one-compare shape `reg R; constN C; CMP; end`, run
    /// without the dispatch loop.
    fast: Option<Fast>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fast {
    reg: u8,
    value: u64,
    cmp: u8,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Program({self})")
    }
}

fn rd<const N: usize>(code: &[u8], at: usize) -> Option<[u8; N]> {
    let s = code.get(at..at.checked_add(N)?)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Some(a)
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn<'a> {
    pub at: usize,
    pub info: &'static OpInfo,
    /// The numeric operand (sign-extended constants, register, bits, jump
    /// offset, bound); 0 when there is none.
    pub imm: u64,
    /// The bytes of `streq`/`memeq`.
    pub bytes: &'a [u8],
    /// Offset of the next instruction.
    pub next: usize,
}

/// Decodes the instruction at `at` (operand ranges are the verifier's).
pub fn decode(code: &[u8], at: usize) -> Result<Insn<'_>, VerifyError> {
    let c = *code.get(at).ok_or(VerifyError::Truncated { at })?;
    let info = info(c).ok_or(VerifyError::UnknownOpcode { at, code: c })?;
    let p = at + 1;
    let t = VerifyError::Truncated { at };
    let (imm, bytes, next) = match info.imm {
        Imm::None => (0, &[][..], p),
        Imm::I8 => (
            rd::<1>(code, p).ok_or(t)?[0] as i8 as i64 as u64,
            &[][..],
            p + 1,
        ),
        Imm::Reg | Imm::Ctx | Imm::Bits | Imm::Bound => {
            (u64::from(rd::<1>(code, p).ok_or(t)?[0]), &[][..], p + 1)
        }
        Imm::I16 => (
            i16::from_le_bytes(rd(code, p).ok_or(t)?) as i64 as u64,
            &[][..],
            p + 2,
        ),
        Imm::Jump => (
            u64::from(u16::from_le_bytes(rd(code, p).ok_or(t)?)),
            &[][..],
            p + 2,
        ),
        Imm::I32 => (
            i32::from_le_bytes(rd(code, p).ok_or(t)?) as i64 as u64,
            &[][..],
            p + 4,
        ),
        Imm::I64 => (u64::from_le_bytes(rd(code, p).ok_or(t)?), &[][..], p + 8),
        Imm::Bytes => {
            let n = usize::from(rd::<1>(code, p).ok_or(t)?[0]);
            let bytes = code.get(p + 1..p + 1 + n).ok_or(t)?;
            (n as u64, bytes, p + 1 + n)
        }
    };
    Ok(Insn {
        at,
        info,
        imm,
        bytes,
        next,
    })
}

impl Program {
    /// Checks `code` and makes it runnable.
    pub fn verify(code: &[u8]) -> Result<Program, VerifyError> {
        if code.is_empty() {
            return Err(VerifyError::Empty);
        }
        if code.len() > MAX_CODE {
            return Err(VerifyError::TooLong { len: code.len() });
        }
        // Stack depth on entry to each byte offset reached so far (-1:
        // not reached yet). Jumps only go forward, so one pass in order
        // sees every incoming edge before the instruction itself.
        let mut depth = [-1i16; MAX_CODE + 1];
        let mut starts = [false; MAX_CODE + 1];
        depth[0] = 0;
        let mut at = 0usize;
        while at < code.len() {
            let insn = decode(code, at)?;
            starts[at] = true;
            let i = insn.info;
            match i.imm {
                Imm::Reg if insn.imm >= u64::from(NREGS) => {
                    return Err(VerifyError::BadRegister {
                        at,
                        reg: insn.imm as u8,
                    });
                }
                Imm::Ctx if insn.imm >= u64::from(NCTX) => {
                    return Err(VerifyError::BadContext {
                        at,
                        ctx: insn.imm as u8,
                    });
                }
                Imm::Bits if !(1..=64).contains(&insn.imm) => {
                    return Err(VerifyError::BadOperand { at });
                }
                Imm::Bound | Imm::Bytes if insn.imm > MAX_STR as u64 => {
                    return Err(VerifyError::BadOperand { at });
                }
                Imm::Bound if insn.imm == 0 => return Err(VerifyError::BadOperand { at }),
                _ => {}
            }
            let d = depth.get(at).copied().unwrap_or(-1);
            if d < 0 {
                // Unreachable (after a jmp or end, no jump lands here):
                // decoded and range-checked, never run.
                at = insn.next;
                continue;
            }
            if d < i16::from(i.pops) {
                return Err(VerifyError::StackUnderflow { at });
            }
            let after = d - i16::from(i.pops) + i16::from(i.pushes);
            if after > MAX_STACK as i16 {
                return Err(VerifyError::StackOverflow { at });
            }
            let mut join = |target: usize, d: i16| -> Result<(), VerifyError> {
                if target > code.len() {
                    return Err(VerifyError::BadJump { at });
                }
                let slot = depth.get_mut(target).ok_or(VerifyError::BadJump { at })?;
                if *slot >= 0 && *slot != d {
                    return Err(VerifyError::StackMismatch { at: target });
                }
                *slot = d;
                Ok(())
            };
            if i.imm == Imm::Jump {
                let target = insn
                    .next
                    .checked_add(insn.imm as usize)
                    .ok_or(VerifyError::BadJump { at })?;
                join(target, after)?;
            }
            let falls = !matches!(i.code, op::END | op::JMP);
            if falls {
                join(insn.next, after)?;
            }
            at = insn.next;
        }
        // Nothing may reach the end offset (it would run off the code), and
        // every jump target must be an instruction start.
        if depth.get(code.len()).is_some_and(|d| *d >= 0) {
            return Err(VerifyError::NoEnd);
        }
        for (off, d) in depth.iter().enumerate().take(code.len()) {
            if *d >= 0 && !starts.get(off).copied().unwrap_or(false) {
                return Err(VerifyError::BadJump { at: off });
            }
        }
        let mut p = Program {
            code: [0; MAX_CODE],
            len: code.len() as u16,
            fast: None,
        };
        if let Some(dst) = p.code.get_mut(..code.len()) {
            dst.copy_from_slice(code);
        }
        p.fast = p.fast_shape();
        Ok(p)
    }

    fn fast_shape(&self) -> Option<Fast> {
        let code = self.code();
        let r = decode(code, 0).ok()?;
        if r.info.code != op::REG {
            return None;
        }
        let c = decode(code, r.next).ok()?;
        if !matches!(
            c.info.code,
            op::CONST8 | op::CONST16 | op::CONST32 | op::CONST64
        ) {
            return None;
        }
        let cmp = decode(code, c.next).ok()?;
        if !(op::EQ..=op::GEU).contains(&cmp.info.code) {
            return None;
        }
        let end = decode(code, cmp.next).ok()?;
        (end.info.code == op::END).then_some(Fast {
            reg: r.imm as u8,
            value: c.imm,
            cmp: cmp.info.code,
        })
    }

    /// The one-compare shape `reg R; constN C; CMP; end` as `(R, C, CMP)`,
    /// for callers that inline it (evaluate with [`compare`]).
    #[inline]
    pub fn one_compare(&self) -> Option<(u8, u64, u8)> {
        self.fast.map(|f| (f.reg, f.value, f.cmp))
    }

    /// The program's bytes.
    pub fn code(&self) -> &[u8] {
        self.code.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Runs the program. `Ok(v)`: the result (non-zero = true).
    #[inline]
    pub fn eval(&self, env: &impl Env) -> Result<u64, EvalError> {
        if let Some(f) = self.fast {
            return Ok(u64::from(compare(f.cmp, env.reg(f.reg), f.value)));
        }
        self.run(env)
    }

    /// The dispatch loop (without the fast path).
    fn run(&self, env: &impl Env) -> Result<u64, EvalError> {
        let code = self.code();
        let mut stack = [0u64; MAX_STACK];
        let mut sp = 0usize;
        let mut pc = 0usize;
        // Every access is checked anyway (a verified program never fails
        // them); a failed check ends the program as false.
        macro_rules! pop {
            () => {{
                if sp == 0 {
                    return Ok(0);
                }
                sp -= 1;
                stack.get(sp).copied().unwrap_or(0)
            }};
        }
        macro_rules! push {
            ($v:expr) => {{
                let v = $v;
                match stack.get_mut(sp) {
                    Some(s) => *s = v,
                    None => return Ok(0),
                }
                sp += 1;
            }};
        }
        loop {
            let Some(&c) = code.get(pc) else {
                return Ok(0);
            };
            // The common ops decode their operand inline; the rest go
            // through `decode`.
            match c {
                op::REG => {
                    let r = code.get(pc + 1).copied().unwrap_or(0);
                    pc += 2;
                    push!(if r < NREGS { env.reg(r) } else { 0 });
                    continue;
                }
                op::CONST8 => {
                    let v = code.get(pc + 1).copied().unwrap_or(0) as i8 as i64 as u64;
                    pc += 2;
                    push!(v);
                    continue;
                }
                op::LD8 | op::LD16 | op::LD32 | op::LD64 | op::LDS8 | op::LDS16 | op::LDS32 => {
                    pc += 1;
                    let addr = pop!();
                    push!(load(env, c, addr)?);
                    continue;
                }
                op::ADD..=op::SHRU | op::EQ..=op::GEU => {
                    pc += 1;
                    let b = pop!();
                    let a = pop!();
                    push!(binary(c, a, b)?);
                    continue;
                }
                op::END => return Ok(pop!()),
                _ => {}
            }
            let Ok(insn) = decode(code, pc) else {
                return Ok(0);
            };
            pc = insn.next;
            match c {
                op::CONST16 | op::CONST32 | op::CONST64 => push!(insn.imm),
                op::CTX => push!(if insn.imm < u64::from(NCTX) {
                    env.ctx(insn.imm as u8)
                } else {
                    0
                }),
                op::NEG => {
                    let a = pop!();
                    push!(a.wrapping_neg())
                }
                op::NOT => {
                    let a = pop!();
                    push!(!a)
                }
                op::LNOT => {
                    let a = pop!();
                    push!(u64::from(a == 0))
                }
                op::SEXT => {
                    let a = pop!();
                    let sh = 64u32.saturating_sub(insn.imm as u32);
                    push!(((a << sh) as i64 >> sh) as u64)
                }
                op::ZEXT => {
                    let a = pop!();
                    push!(if insn.imm >= 64 {
                        a
                    } else {
                        a & ((1u64 << insn.imm) - 1)
                    })
                }
                op::DUP => {
                    let a = pop!();
                    push!(a);
                    push!(a)
                }
                op::POP => {
                    let _ = pop!();
                }
                op::SWAP => {
                    let b = pop!();
                    let a = pop!();
                    push!(b);
                    push!(a)
                }
                op::JZ | op::JNZ => {
                    let a = pop!();
                    if (a == 0) == (c == op::JZ) {
                        pc += insn.imm as usize;
                    }
                }
                op::JMP => pc += insn.imm as usize,
                op::STRCMP => {
                    let b = pop!();
                    let a = pop!();
                    push!(strcmp(env, a, b, insn.imm as usize)? as i64 as u64)
                }
                op::STREQ | op::MEMEQ => {
                    let a = pop!();
                    push!(u64::from(memeq(env, a, insn.bytes, c == op::STREQ)?))
                }
                _ => return Ok(0),
            }
        }
    }
}

/// Comparison opcode `c` (`op::EQ..=op::GEU`) applied to `a` and `b`.
#[inline]
pub fn compare(c: u8, a: u64, b: u64) -> bool {
    let (sa, sb) = (a as i64, b as i64);
    match c {
        op::EQ => a == b,
        op::NE => a != b,
        op::LTS => sa < sb,
        op::LTU => a < b,
        op::LES => sa <= sb,
        op::LEU => a <= b,
        op::GTS => sa > sb,
        op::GTU => a > b,
        op::GES => sa >= sb,
        op::GEU => a >= b,
        _ => false,
    }
}

fn binary(c: u8, a: u64, b: u64) -> Result<u64, EvalError> {
    let (sa, sb) = (a as i64, b as i64);
    Ok(match c {
        op::ADD => a.wrapping_add(b),
        op::SUB => a.wrapping_sub(b),
        op::MUL => a.wrapping_mul(b),
        op::DIVS => sa.checked_div(sb).ok_or(EvalError::DivideByZero)? as u64,
        op::DIVU => a.checked_div(b).ok_or(EvalError::DivideByZero)?,
        op::REMS => sa.checked_rem(sb).ok_or(EvalError::DivideByZero)? as u64,
        op::REMU => a.checked_rem(b).ok_or(EvalError::DivideByZero)?,
        op::AND => a & b,
        op::OR => a | b,
        op::XOR => a ^ b,
        op::SHL => a.checked_shl(b.min(64) as u32).unwrap_or(0),
        op::SHRU => a.checked_shr(b.min(64) as u32).unwrap_or(0),
        op::SHRS => (sa >> b.min(63)) as u64,
        _ => u64::from(compare(c, a, b)),
    })
}

fn load(env: &impl Env, c: u8, addr: u64) -> Result<u64, EvalError> {
    let n = match c {
        op::LD8 | op::LDS8 => 1,
        op::LD16 | op::LDS16 => 2,
        op::LD32 | op::LDS32 => 4,
        _ => 8,
    };
    let mut b = [0u8; 8];
    let buf = b.get_mut(..n).ok_or(EvalError::Fault(addr))?;
    if !env.read(addr, buf) {
        return Err(EvalError::Fault(addr));
    }
    let v = u64::from_le_bytes(b);
    Ok(match c {
        op::LDS8 => v as u8 as i8 as i64 as u64,
        op::LDS16 => v as u16 as i16 as i64 as u64,
        op::LDS32 => v as u32 as i32 as i64 as u64,
        _ => v,
    })
}

/// Reads up to 16 bytes at `addr` without crossing a page (so a string that
/// ends just before an unmapped page reads fine).
fn chunk(env: &impl Env, addr: u64, want: usize, buf: &mut [u8; 16]) -> Result<usize, EvalError> {
    let in_page = (0x1000 - (addr & 0xfff)) as usize;
    let n = want.min(16).min(in_page);
    let dst = buf.get_mut(..n).ok_or(EvalError::Fault(addr))?;
    if env.read(addr, dst) {
        Ok(n)
    } else {
        Err(EvalError::Fault(addr))
    }
}

fn strcmp(env: &impl Env, a: u64, b: u64, bound: usize) -> Result<i8, EvalError> {
    let mut done = 0usize;
    let (mut ba, mut bb) = ([0u8; 16], [0u8; 16]);
    while done < bound {
        let pa = a.wrapping_add(done as u64);
        let pb = b.wrapping_add(done as u64);
        let na = chunk(env, pa, bound - done, &mut ba)?;
        let nb = chunk(env, pb, na, &mut bb)?;
        for (x, y) in ba.iter().zip(bb.iter()).take(nb) {
            if x != y {
                return Ok(if x < y { -1 } else { 1 });
            }
            if *x == 0 {
                return Ok(0);
            }
        }
        done += nb;
    }
    Ok(0)
}

fn memeq(env: &impl Env, addr: u64, lit: &[u8], nul: bool) -> Result<bool, EvalError> {
    let want = lit.len() + usize::from(nul);
    let mut done = 0usize;
    let mut buf = [0u8; 16];
    while done < want {
        let p = addr.wrapping_add(done as u64);
        let n = chunk(env, p, want - done, &mut buf)?;
        for (i, b) in buf.iter().take(n).enumerate() {
            let expect = lit.get(done + i).copied().unwrap_or(0);
            if *b != expect {
                return Ok(false);
            }
        }
        done += n;
    }
    Ok(true)
}

/// Writes programs (the host side). Errors are sticky: [`Writer::finish`]
/// reports the first one.
#[derive(Clone)]
pub struct Writer {
    code: [u8; MAX_CODE + 1],
    len: usize,
    overflow: bool,
}

/// A forward jump waiting for its target ([`Writer::bind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Label(usize);

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub const fn new() -> Self {
        Writer {
            code: [0; MAX_CODE + 1],
            len: 0,
            overflow: false,
        }
    }

    fn byte(&mut self, b: u8) {
        match self.code.get_mut(self.len) {
            Some(s) => {
                *s = b;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.byte(x);
        }
    }

    /// An opcode without operand.
    pub fn op(&mut self, code: u8) -> &mut Self {
        self.byte(code);
        self
    }

    /// The smallest constant opcode for `v`.
    pub fn konst(&mut self, v: u64) -> &mut Self {
        let s = v as i64;
        if let Ok(x) = i8::try_from(s) {
            self.byte(op::CONST8);
            self.bytes(&x.to_le_bytes());
        } else if let Ok(x) = i16::try_from(s) {
            self.byte(op::CONST16);
            self.bytes(&x.to_le_bytes());
        } else if let Ok(x) = i32::try_from(s) {
            self.byte(op::CONST32);
            self.bytes(&x.to_le_bytes());
        } else {
            self.byte(op::CONST64);
            self.bytes(&v.to_le_bytes());
        }
        self
    }

    pub fn reg(&mut self, n: u8) -> &mut Self {
        self.byte(op::REG);
        self.byte(n);
        self
    }

    pub fn ctx(&mut self, n: u8) -> &mut Self {
        self.byte(op::CTX);
        self.byte(n);
        self
    }

    /// A load of `size` bytes (1, 2, 4, 8), sign-extended if `signed`.
    pub fn load(&mut self, size: u8, signed: bool) -> &mut Self {
        let c = match (size, signed) {
            (1, false) => op::LD8,
            (2, false) => op::LD16,
            (4, false) => op::LD32,
            (1, true) => op::LDS8,
            (2, true) => op::LDS16,
            (4, true) => op::LDS32,
            _ => op::LD64,
        };
        self.op(c)
    }

    /// `sext`/`zext` to `bits`.
    pub fn ext(&mut self, bits: u8, signed: bool) -> &mut Self {
        self.byte(if signed { op::SEXT } else { op::ZEXT });
        self.byte(bits);
        self
    }

    /// A forward jump (`op::JZ`, `op::JNZ`, `op::JMP`) to a label bound later.
    pub fn jump(&mut self, code: u8) -> Label {
        self.byte(code);
        let at = self.len;
        self.bytes(&[0, 0]);
        Label(at)
    }

    /// A forward jump with a known offset (from the next instruction).
    pub fn jump_by(&mut self, code: u8, off: u16) -> &mut Self {
        self.byte(code);
        self.bytes(&off.to_le_bytes());
        self
    }

    /// Binds `l` here.
    pub fn bind(&mut self, l: Label) {
        let off = self.len.wrapping_sub(l.0 + 2);
        match (u16::try_from(off), self.code.get_mut(l.0..l.0 + 2)) {
            (Ok(o), Some(s)) => s.copy_from_slice(&o.to_le_bytes()),
            _ => self.overflow = true,
        }
    }

    pub fn strcmp(&mut self, bound: u8) -> &mut Self {
        self.byte(op::STRCMP);
        self.byte(bound);
        self
    }

    /// `streq` (NUL-terminated) or `memeq` with literal `lit`.
    pub fn streq(&mut self, lit: &[u8], nul: bool) -> &mut Self {
        self.byte(if nul { op::STREQ } else { op::MEMEQ });
        match u8::try_from(lit.len()) {
            Ok(n) if lit.len() <= MAX_STR => {
                self.byte(n);
                self.bytes(lit);
            }
            _ => self.overflow = true,
        }
        self
    }

    /// The bytes written so far (longer than [`MAX_CODE`] when the
    /// program did not fit).
    pub fn raw_code(&self) -> &[u8] {
        if self.overflow {
            return self.code.get(..).unwrap_or(&[]);
        }
        self.code.get(..self.len).unwrap_or(&[])
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ends the program (`end`) and verifies it.
    pub fn finish(mut self) -> Result<Program, VerifyError> {
        self.byte(op::END);
        if self.overflow || self.len > MAX_CODE {
            return Err(VerifyError::TooLong {
                len: self.len.max(MAX_CODE + 1),
            });
        }
        Program::verify(self.code.get(..self.len).unwrap_or(&[]))
    }
}

impl fmt::Display for Program {
    /// `reg rdi; const8 5; eq; end`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        let mut at = 0;
        while at < code.len() {
            let Ok(i) = decode(code, at) else {
                return f.write_str("?");
            };
            if at > 0 {
                f.write_str("; ")?;
            }
            f.write_str(i.info.name)?;
            match i.info.imm {
                Imm::None => {}
                Imm::Reg => write!(
                    f,
                    " {}",
                    REG_NAMES.get(i.imm as usize).copied().unwrap_or("?")
                )?,
                Imm::Ctx => write!(
                    f,
                    " {}",
                    CTX_NAMES.get(i.imm as usize).copied().unwrap_or("?")
                )?,
                Imm::I8 | Imm::I16 | Imm::I32 | Imm::I64 => write!(f, " {}", i.imm as i64)?,
                Imm::Jump => write!(f, " @{}", i.next + i.imm as usize)?,
                Imm::Bits | Imm::Bound => write!(f, " {}", i.imm)?,
                Imm::Bytes => {
                    f.write_str(" \"")?;
                    for &b in i.bytes {
                        if b.is_ascii_graphic() || b == b' ' {
                            if b == b'"' || b == b'\\' {
                                f.write_str("\\")?;
                            }
                            write!(f, "{}", b as char)?;
                        } else {
                            write!(f, "\\x{b:02x}")?;
                        }
                    }
                    f.write_str("\"")?;
                }
            }
            at = i.next;
        }
        Ok(())
    }
}

/// Decodes the hex text of a program and verifies it (the wire form).
pub fn from_hex(text: &str) -> Result<Program, HexProgramError> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return Err(HexProgramError::BadHex);
    }
    let n = t.len() / 2;
    if n > MAX_CODE {
        return Err(HexProgramError::Verify(VerifyError::TooLong { len: n }));
    }
    let mut buf = [0u8; MAX_CODE];
    for (i, pair) in t.chunks_exact(2).enumerate() {
        let hi = crate::hex::digit(pair[0]).ok_or(HexProgramError::BadHex)?;
        let lo = crate::hex::digit(pair[1]).ok_or(HexProgramError::BadHex)?;
        if let Some(b) = buf.get_mut(i) {
            *b = hi << 4 | lo;
        }
    }
    Program::verify(buf.get(..n).unwrap_or(&[])).map_err(HexProgramError::Verify)
}

/// Why a hex program was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexProgramError {
    BadHex,
    Verify(VerifyError),
}

impl fmt::Display for HexProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexProgramError::BadHex => f.write_str("program is not an even number of hex digits"),
            HexProgramError::Verify(e) => write!(f, "program refused: {e}"),
        }
    }
}

/// Writes the program's bytes as lowercase hex (the wire form).
pub struct Hex<'a>(pub &'a Program);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.code() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "bytecode/tests.rs"]
mod tests;
