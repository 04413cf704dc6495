//! gdb's agent expressions (the bytecode gdb sends in `Z0,addr,kind;X...`
//! when the stub advertises `ConditionalBreakpoints+`), translated into
//! kdbg's [`crate::bytecode`] and verified like any other program.
//!
//! Supported: everything gdb emits for integer conditions over registers
//! and memory (arithmetic, comparisons, logic, `ext`/`zero_ext`, `ref8`..
//! `ref64`, constants, `reg`, `if_goto`/`goto` forward, `dup`, `pop`,
//! `swap`, `pick 0`, `end`). Refused with the opcode's name: floating
//! point, trace and trace-state-variable ops, `printf`, `rot`, `pick N>0`,
//! backward jumps (gdb never emits loops for conditions).
//!
//! Encoding (gdb's): one opcode byte, operands big-endian; jump operands
//! are absolute offsets into the expression.

use core::fmt;

use crate::bytecode::{self, NREGS, Program, VerifyError, Writer, op};

/// Longest agent expression accepted (bytes).
pub const MAX_AGENT: usize = 256;

/// Why an agent expression was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentError {
    Empty,
    TooLong,
    Truncated {
        at: usize,
    },
    /// An opcode kdbg does not run (its gdb name).
    Unsupported {
        at: usize,
        name: &'static str,
    },
    UnknownOpcode {
        at: usize,
        code: u8,
    },
    BadRegister {
        at: usize,
        reg: u16,
    },
    /// A jump backwards or outside the expression.
    BadJump {
        at: usize,
    },
    /// The translation failed verification.
    Verify(VerifyError),
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AgentError::Empty => f.write_str("empty agent expression"),
            AgentError::TooLong => write!(f, "agent expression longer than {MAX_AGENT} bytes"),
            AgentError::Truncated { at } => write!(f, "agent expression cut off at byte {at}"),
            AgentError::Unsupported { at, name } => {
                write!(
                    f,
                    "agent op `{name}` at byte {at} is not supported in conditions"
                )
            }
            AgentError::UnknownOpcode { at, code } => {
                write!(f, "unknown agent opcode {code:#04x} at byte {at}")
            }
            AgentError::BadRegister { at, reg } => {
                write!(f, "register {reg} at byte {at} is not in the trap frame")
            }
            AgentError::BadJump { at } => {
                write!(
                    f,
                    "agent jump at byte {at} goes backwards or out of the expression"
                )
            }
            AgentError::Verify(e) => write!(f, "translated condition refused: {e}"),
        }
    }
}

/// gdb's agent opcodes (gdb/ax.def).
mod ax {
    pub const ADD: u8 = 0x02;
    pub const SUB: u8 = 0x03;
    pub const MUL: u8 = 0x04;
    pub const DIV_SIGNED: u8 = 0x05;
    pub const DIV_UNSIGNED: u8 = 0x06;
    pub const REM_SIGNED: u8 = 0x07;
    pub const REM_UNSIGNED: u8 = 0x08;
    pub const LSH: u8 = 0x09;
    pub const RSH_SIGNED: u8 = 0x0a;
    pub const RSH_UNSIGNED: u8 = 0x0b;
    pub const LOG_NOT: u8 = 0x0e;
    pub const BIT_AND: u8 = 0x0f;
    pub const BIT_OR: u8 = 0x10;
    pub const BIT_XOR: u8 = 0x11;
    pub const BIT_NOT: u8 = 0x12;
    pub const EQUAL: u8 = 0x13;
    pub const LESS_SIGNED: u8 = 0x14;
    pub const LESS_UNSIGNED: u8 = 0x15;
    pub const EXT: u8 = 0x16;
    pub const REF8: u8 = 0x17;
    pub const REF16: u8 = 0x18;
    pub const REF32: u8 = 0x19;
    pub const REF64: u8 = 0x1a;
    pub const IF_GOTO: u8 = 0x20;
    pub const GOTO: u8 = 0x21;
    pub const CONST8: u8 = 0x22;
    pub const CONST16: u8 = 0x23;
    pub const CONST32: u8 = 0x24;
    pub const CONST64: u8 = 0x25;
    pub const REG: u8 = 0x26;
    pub const END: u8 = 0x27;
    pub const DUP: u8 = 0x28;
    pub const POP: u8 = 0x29;
    pub const ZERO_EXT: u8 = 0x2a;
    pub const SWAP: u8 = 0x2b;
    pub const PICK: u8 = 0x32;
}

/// Names of the ops gdb has that kdbg refuses.
fn unsupported_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "float",
        0x0c => "trace",
        0x0d => "trace_quick",
        0x1b => "ref_float",
        0x1c => "ref_double",
        0x1d => "ref_long_double",
        0x1e => "l_to_d",
        0x1f => "d_to_l",
        0x2c => "getv",
        0x2d => "setv",
        0x2e => "tracev",
        0x2f => "tracenz",
        0x30 => "trace16",
        0x33 => "rot",
        0x34 => "printf",
        _ => return None,
    })
}

/// Operand bytes of a supported op.
fn operand_len(code: u8) -> usize {
    match code {
        ax::EXT | ax::ZERO_EXT | ax::CONST8 | ax::PICK => 1,
        ax::CONST16 | ax::REG | ax::IF_GOTO | ax::GOTO => 2,
        ax::CONST32 => 4,
        ax::CONST64 => 8,
        _ => 0,
    }
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |a, &b| a << 8 | u64::from(b))
}

/// Translates one agent expression into a verified program.
pub fn translate(expr: &[u8]) -> Result<Program, AgentError> {
    if expr.is_empty() {
        return Err(AgentError::Empty);
    }
    if expr.len() > MAX_AGENT {
        return Err(AgentError::TooLong);
    }
    // Pass 1 with placeholder jumps (every jump is 3 bytes either way)
    // learns where each agent instruction lands; pass 2 writes the jumps.
    let mut map = [u16::MAX; MAX_AGENT + 1];
    emit(expr, &mut map, false)?;
    let w = emit(expr, &mut map, true)?;
    // The agent's own `end` is in the code: verify the bytes as they are.
    let code = w.raw_code();
    if code.len() > bytecode::MAX_CODE {
        return Err(AgentError::Verify(VerifyError::TooLong { len: code.len() }));
    }
    Program::verify(code).map_err(AgentError::Verify)
}

fn emit(
    expr: &[u8],
    map: &mut [u16; MAX_AGENT + 1],
    final_pass: bool,
) -> Result<Writer, AgentError> {
    let mut w = Writer::new();
    let mut at = 0usize;
    while at < expr.len() {
        let code = *expr.get(at).ok_or(AgentError::Truncated { at })?;
        if let Some(name) = unsupported_name(code) {
            return Err(AgentError::Unsupported { at, name });
        }
        let n = operand_len(code);
        let arg = expr
            .get(at + 1..at + 1 + n)
            .ok_or(AgentError::Truncated { at })?;
        let v = be(arg);
        if !final_pass && let Some(m) = map.get_mut(at) {
            *m = u16::try_from(w.len()).unwrap_or(u16::MAX);
        }
        let simple = match code {
            ax::ADD => Some(op::ADD),
            ax::SUB => Some(op::SUB),
            ax::MUL => Some(op::MUL),
            ax::DIV_SIGNED => Some(op::DIVS),
            ax::DIV_UNSIGNED => Some(op::DIVU),
            ax::REM_SIGNED => Some(op::REMS),
            ax::REM_UNSIGNED => Some(op::REMU),
            ax::LSH => Some(op::SHL),
            ax::RSH_SIGNED => Some(op::SHRS),
            ax::RSH_UNSIGNED => Some(op::SHRU),
            ax::LOG_NOT => Some(op::LNOT),
            ax::BIT_AND => Some(op::AND),
            ax::BIT_OR => Some(op::OR),
            ax::BIT_XOR => Some(op::XOR),
            ax::BIT_NOT => Some(op::NOT),
            ax::EQUAL => Some(op::EQ),
            ax::LESS_SIGNED => Some(op::LTS),
            ax::LESS_UNSIGNED => Some(op::LTU),
            ax::REF8 => Some(op::LD8),
            ax::REF16 => Some(op::LD16),
            ax::REF32 => Some(op::LD32),
            ax::REF64 => Some(op::LD64),
            ax::END => Some(op::END),
            ax::DUP => Some(op::DUP),
            ax::POP => Some(op::POP),
            ax::SWAP => Some(op::SWAP),
            _ => None,
        };
        match (simple, code) {
            (Some(o), _) => {
                w.op(o);
            }
            (None, ax::CONST8 | ax::CONST16 | ax::CONST32 | ax::CONST64) => {
                w.konst(v);
            }
            (None, ax::REG) => {
                let reg = u8::try_from(v)
                    .ok()
                    .filter(|r| *r < NREGS)
                    .ok_or(AgentError::BadRegister { at, reg: v as u16 })?;
                w.reg(reg);
            }
            (None, ax::EXT | ax::ZERO_EXT) => {
                // Extending from 64 bits or more changes nothing; keep the
                // instruction so every agent op maps to code.
                let bits = v.clamp(1, 64) as u8;
                w.ext(bits, code == ax::EXT);
            }
            (None, ax::PICK) if v == 0 => {
                w.op(op::DUP);
            }
            (None, ax::PICK) => {
                return Err(AgentError::Unsupported { at, name: "pick" });
            }
            (None, ax::IF_GOTO | ax::GOTO) => {
                let target = v as usize;
                if target <= at || target >= expr.len() {
                    return Err(AgentError::BadJump { at });
                }
                let here = w.len() + 3;
                let off = if final_pass {
                    let t = map.get(target).copied().unwrap_or(u16::MAX);
                    if t == u16::MAX {
                        return Err(AgentError::BadJump { at });
                    }
                    usize::from(t)
                        .checked_sub(here)
                        .and_then(|o| u16::try_from(o).ok())
                        .ok_or(AgentError::BadJump { at })?
                } else {
                    0
                };
                w.jump_by(
                    if code == ax::IF_GOTO {
                        op::JNZ
                    } else {
                        op::JMP
                    },
                    off,
                );
            }
            _ => return Err(AgentError::UnknownOpcode { at, code }),
        }
        at += 1 + n;
    }
    Ok(w)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bytecode::Env;

    struct Regs([u64; 20]);
    impl Env for Regs {
        fn reg(&self, n: u8) -> u64 {
            self.0[usize::from(n)]
        }
        fn ctx(&self, _: u8) -> u64 {
            0
        }
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            if addr == 0x1000 {
                buf.fill(0x11);
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn gdb_style_conditions_translate_and_run() {
        let mut env = Regs([0; 20]);
        env.0[5] = 5;
        // `n == 5` with n in rdi: reg 5; const8 5; equal; end
        let p = translate(&[0x26, 0, 5, 0x22, 5, 0x13, 0x27]).unwrap();
        assert_eq!(p.eval(&env), Ok(1));
        env.0[5] = 6;
        assert_eq!(p.eval(&env), Ok(0));
        // `n > 3 && n < 10` the way gdb writes && (if_goto/goto forward).
        let e = [
            0x22, 3, 0x26, 0, 5, 0x14, // 3 < n
            0x20, 0, 12, // if_goto 12
            0x21, 0, 21, // goto 21 (false)
            0x26, 0, 5, 0x22, 10, 0x14, // 12: n < 10
            0x21, 0, 23, // goto 23
            0x22, 0,    // 21: const 0
            0x27, // 23: end
        ];
        // Note: the true path of the second compare keeps its value.
        let p = translate(&e).unwrap();
        env.0[5] = 5;
        assert_eq!(p.eval(&env), Ok(1));
        env.0[5] = 12;
        assert_eq!(p.eval(&env), Ok(0));
        env.0[5] = 2;
        assert_eq!(p.eval(&env), Ok(0));
        // Memory through ref32 and sign extension.
        let p = translate(&[0x24, 0, 0, 0x10, 0, 0x19, 0x16, 32, 0x27]).unwrap();
        assert_eq!(p.eval(&env), Ok(0x1111_1111));
        let p = translate(&[0x22, 0x10, 0x1a, 0x27]).unwrap();
        assert!(p.eval(&env).is_err(), "fault");
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        assert_eq!(translate(&[]), Err(AgentError::Empty));
        assert_eq!(
            translate(&[0x26, 0, 40, 0x27]),
            Err(AgentError::BadRegister { at: 0, reg: 40 })
        );
        assert_eq!(
            translate(&[0x22, 1, 0x34, 0x27]),
            Err(AgentError::Unsupported {
                at: 2,
                name: "printf"
            })
        );
        assert_eq!(
            translate(&[0x22, 1, 0x21, 0, 0, 0x27]),
            Err(AgentError::BadJump { at: 2 })
        );
        assert_eq!(translate(&[0x24, 0]), Err(AgentError::Truncated { at: 0 }));
        assert!(matches!(
            translate(&[0x13, 0x27]),
            Err(AgentError::Verify(_))
        ));
        assert_eq!(
            translate(&[0xee]),
            Err(AgentError::UnknownOpcode { at: 0, code: 0xee })
        );
        // Into the middle of an instruction.
        assert_eq!(
            translate(&[0x22, 1, 0x20, 0, 1, 0x27]),
            Err(AgentError::BadJump { at: 2 })
        );
    }

    #[test]
    fn random_agent_bytes_never_panic() {
        let mut s = 7u64;
        for _ in 0..100_000 {
            let mut e = [0u8; 24];
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let n = (s % 24) as usize + 1;
            for b in e.iter_mut().take(n) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = if s.is_multiple_of(3) {
                    0x20 + (s >> 8) as u8 % 0x14
                } else {
                    (s >> 16) as u8
                };
            }
            let _ = translate(&e[..n]);
        }
    }
}
