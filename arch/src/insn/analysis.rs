//! Registration-time analysis: boundary check, refusal, and the execution
//! decision for one probed instruction.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

use super::cond::Cond;
use super::refusal::Refusal;
use crate::frame::TrapFrame;

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// A 64-bit general-purpose register, as read from a [`TrapFrame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Reg {
    /// The register's value in the interrupted context (`rsp` is the
    /// interrupted stack pointer from the hardware frame).
    #[inline]
    pub fn read(self, f: &TrapFrame) -> u64 {
        match self {
            Reg::Rax => f.rax,
            Reg::Rcx => f.rcx,
            Reg::Rdx => f.rdx,
            Reg::Rbx => f.rbx,
            Reg::Rsp => f.rsp,
            Reg::Rbp => f.rbp,
            Reg::Rsi => f.rsi,
            Reg::Rdi => f.rdi,
            Reg::R8 => f.r8,
            Reg::R9 => f.r9,
            Reg::R10 => f.r10,
            Reg::R11 => f.r11,
            Reg::R12 => f.r12,
            Reg::R13 => f.r13,
            Reg::R14 => f.r14,
            Reg::R15 => f.r15,
        }
    }

    /// AT&T name without `%`.
    pub fn name(self) -> &'static str {
        match self {
            Reg::Rax => "rax",
            Reg::Rcx => "rcx",
            Reg::Rdx => "rdx",
            Reg::Rbx => "rbx",
            Reg::Rsp => "rsp",
            Reg::Rbp => "rbp",
            Reg::Rsi => "rsi",
            Reg::Rdi => "rdi",
            Reg::R8 => "r8",
            Reg::R9 => "r9",
            Reg::R10 => "r10",
            Reg::R11 => "r11",
            Reg::R12 => "r12",
            Reg::R13 => "r13",
            Reg::R14 => "r14",
            Reg::R15 => "r15",
        }
    }

    fn from_iced(r: Register) -> Option<Reg> {
        Some(match r {
            Register::RAX => Reg::Rax,
            Register::RCX => Reg::Rcx,
            Register::RDX => Reg::Rdx,
            Register::RBX => Reg::Rbx,
            Register::RSP => Reg::Rsp,
            Register::RBP => Reg::Rbp,
            Register::RSI => Reg::Rsi,
            Register::RDI => Reg::Rdi,
            Register::R8 => Reg::R8,
            Register::R9 => Reg::R9,
            Register::R10 => Reg::R10,
            Register::R11 => Reg::R11,
            Register::R12 => Reg::R12,
            Register::R13 => Reg::R13,
            Register::R14 => Reg::R14,
            Register::R15 => Reg::R15,
            _ => return None,
        })
    }
}

/// Which LOOP-family instruction (all use rcx, or ecx with a 0x67 prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    /// `loop`: decrement the counter; branch if the new value is non-zero.
    Loop,
    /// `loope`/`loopz`: decrement; branch if non-zero and ZF=1.
    Loope,
    /// `loopne`/`loopnz`: decrement; branch if non-zero and ZF=0.
    Loopne,
    /// `jrcxz`/`jecxz`: no decrement; branch if the counter is zero.
    Jrcxz,
}

/// What the trap handler does instead of executing the probed instruction.
/// Every variant ends with `rip` set: to the target, or to the next
/// instruction (`next_ip` = probed address + length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Emulation {
    /// `call rel32`: push `next_ip`, jump to `target`.
    CallRel { target: u64 },
    /// `jmp rel8`/`jmp rel32`.
    JmpRel { target: u64 },
    /// `jcc rel8`/`jcc rel32`: jump to `target` if `cond` holds on RFLAGS.
    Jcc { cond: Cond, target: u64 },
    /// `loop`/`loope`/`loopne`/`jrcxz`; `ecx`: 0x67 prefix (32-bit counter).
    Loop {
        kind: LoopKind,
        target: u64,
        ecx: bool,
    },
    /// `ret` (`pop` = 0) and `ret imm16` (pops `pop` more bytes after the return address).
    Ret { pop: u16 },
    /// `call *%reg`: push `next_ip`, jump to the register's value (read before the push).
    CallReg { reg: Reg },
    /// `jmp *%reg`.
    JmpReg { reg: Reg },
    /// `cli`: clear IF in the interrupted context's RFLAGS.
    Cli,
    /// `sti`: set IF (note: the one-instruction interrupt shadow of a real
    /// `sti` is not reproduced).
    Sti,
    /// `pushfq`: push RFLAGS with RF and VM cleared, as the CPU does.
    Pushf,
    /// `popfq`: pop RFLAGS; only the flags ring 0 can write change.
    Popf,
}

impl Emulation {
    /// Short name of the emulated class, for listings.
    pub fn name(&self) -> &'static str {
        match self {
            Emulation::CallRel { .. } => "call",
            Emulation::JmpRel { .. } => "jmp",
            Emulation::Jcc { .. } => "jcc",
            Emulation::Loop {
                kind: LoopKind::Loop,
                ..
            } => "loop",
            Emulation::Loop {
                kind: LoopKind::Loope,
                ..
            } => "loope",
            Emulation::Loop {
                kind: LoopKind::Loopne,
                ..
            } => "loopne",
            Emulation::Loop {
                kind: LoopKind::Jrcxz,
                ..
            } => "jrcxz",
            Emulation::Ret { .. } => "ret",
            Emulation::CallReg { .. } => "call *reg",
            Emulation::JmpReg { .. } => "jmp *reg",
            Emulation::Cli => "cli",
            Emulation::Sti => "sti",
            Emulation::Pushf => "pushf",
            Emulation::Popf => "popf",
        }
    }
}

/// How the probed instruction is executed on a hit.
///
/// Obligations of the probe core:
/// - `Emulate(e)`: call [`emulate`](super::emulate)`(&e, analysis.next_ip(), frame, mem)`
///   instead of executing anything; it sets `frame.rip` (and, for cli/sti/popf,
///   `frame.rflags.IF`: do not restore IF afterwards). Then run post handlers.
///   On `Err(EmuFault)` the frame is untouched: set `rip` back to the probed
///   address and treat it as a fault of the original instruction.
/// - `OutOfLine { .. }` with [`Tail::Trap`](super::Tail::Trap): save IF,
///   clear IF, set `rip` to the slot. The tail `int3` traps with `rip ==`
///   [`SlotCode::tail_trap_rip`](super::SlotCode::tail_trap_rip); there set
///   `rip = analysis.next_ip()`, restore the saved IF (the instruction itself
///   never changes IF: those that do are emulated), run post handlers. A
///   fault with `rip == slot` (the instruction's start) is the instruction's
///   fault: set `rip = analysis.addr` and let the kernel see it there.
/// - `OutOfLine { boostable: true, .. }` with no post/fault handler, and no
///   exception-table entry at the address (the caller's check): install
///   [`Tail::JmpBack`](super::Tail::JmpBack) and just set `rip` to the slot;
///   no second trap, IF untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Execution {
    /// Emulated in the trap handler; never executed.
    Emulate(Emulation),
    /// Executed from a slot.
    OutOfLine {
        /// Safe to run with `jmp back` and no second trap (see `docs/design/insn.md`):
        /// not a privileged (CPL0-only) instruction. The probe core must also
        /// check that the probe has no post/fault handler and that the address
        /// has no exception-table entry.
        boostable: bool,
        /// Has a RIP-relative memory operand (re-targeted in the slot).
        rip_relative: bool,
    },
}

/// The registration-time decision for one probed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Analysis {
    /// The probed address.
    pub addr: u64,
    /// Instruction length in bytes (1..=15).
    pub len: u8,
    /// The original instruction bytes (`bytes[..len]`; the rest is zero).
    pub bytes: [u8; 16],
    /// How it is executed on a hit.
    pub exec: Execution,
}

impl Analysis {
    /// The original instruction bytes.
    pub fn insn(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.len))
            .unwrap_or(&self.bytes)
    }

    /// The address of the next instruction (`addr + len`).
    #[inline]
    pub fn next_ip(&self) -> u64 {
        self.addr.wrapping_add(u64::from(self.len))
    }

    /// The execution path's name for listings: "emulated", "out-of-line" or "boostable".
    pub fn path_name(&self) -> &'static str {
        match self.exec {
            Execution::Emulate(_) => "emulated",
            Execution::OutOfLine {
                boostable: false, ..
            } => "out-of-line",
            Execution::OutOfLine {
                boostable: true, ..
            } => "boostable",
        }
    }
}

/// Decide whether and how `addr` can be probed.
///
/// `code` is the whole function's bytes starting at `func_start` (from
/// kallsyms: start and size), with every other probe's `int3` already
/// replaced by the original byte it covers. Decoding starts at
/// `func_start` and walks instruction by instruction to prove `addr` is a
/// boundary. Blacklist and "is this kernel text" checks are the caller's
/// ([`Refusal::Blacklisted`], [`Refusal::OutsideText`] exist for them).
pub fn analyze(code: &[u8], func_start: u64, addr: u64) -> Result<Analysis, Refusal> {
    let off = addr.checked_sub(func_start).ok_or(Refusal::OutsideText)?;
    let off = usize::try_from(off).map_err(|_| Refusal::PastEnd)?;
    if off >= code.len() {
        return Err(Refusal::PastEnd);
    }
    let mut dec = Decoder::try_with_ip(64, code, func_start, DecoderOptions::NONE)
        .map_err(|_| Refusal::Undecodable)?;
    let mut instr = Instruction::default();
    while dec.position() < off {
        dec.decode_out(&mut instr);
        if instr.is_invalid() {
            return Err(Refusal::Undecodable);
        }
    }
    if dec.position() != off {
        return Err(Refusal::NotBoundary);
    }
    dec.decode_out(&mut instr);
    let rest = code.get(off..).unwrap_or(&[]);
    if instr.is_invalid() {
        return Err(refuse_invalid(rest));
    }
    let len = instr.len();
    let mut bytes = [0u8; 16];
    let src = rest.get(..len).ok_or(Refusal::Undecodable)?;
    bytes
        .get_mut(..len)
        .ok_or(Refusal::Undecodable)?
        .copy_from_slice(src);
    let exec = classify(&instr)?;
    if let Execution::Emulate(e) = exec {
        // 0x66 on a near branch: Intel ignores it, AMD truncates rip to 16
        // bits (and `66 e8`/`66 e9` are even different lengths). Compilers
        // never emit it; refuse rather than guess the vendor.
        let branch = !matches!(
            e,
            Emulation::Cli | Emulation::Sti | Emulation::Pushf | Emulation::Popf
        );
        if branch && prefixes(src).contains(&0x66) {
            return Err(Refusal::OperandSize16);
        }
    }
    Ok(Analysis {
        addr,
        len: len as u8,
        bytes,
        exec,
    })
}

/// The function leaves through a far or interrupt return (`retf`, `iret`)
/// somewhere in `code` (its whole bytes from `func_start`, decoded
/// linearly): a kretprobe's trampoline address on its stack would be taken
/// as part of a far pointer or an interrupt frame, so such functions get no
/// kretprobe.
pub fn has_far_return(code: &[u8], func_start: u64) -> bool {
    let Ok(mut dec) = Decoder::try_with_ip(64, code, func_start, DecoderOptions::NONE) else {
        return false;
    };
    let mut instr = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut instr);
        if matches!(
            instr.mnemonic(),
            Mnemonic::Retf | Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq
        ) {
            return true;
        }
    }
    false
}

/// Legacy and REX prefix bytes at the start of an instruction.
fn prefixes(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| is_prefix(**b)).count();
    bytes.get(..n).unwrap_or(&[])
}

fn is_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f
    )
}

/// Name the refusal for bytes iced reports as invalid in 64-bit mode but
/// that the issue refuses by name (into, pop %ss, far call/jmp ptr16:32).
fn refuse_invalid(bytes: &[u8]) -> Refusal {
    let opcode = bytes.iter().copied().find(|b| !is_prefix(*b));
    match opcode {
        Some(0xce) => Refusal::Into,
        Some(0x17) => Refusal::PopSs,
        Some(0x9a) | Some(0xea) => Refusal::FarTransfer,
        _ => Refusal::Undecodable,
    }
}

/// A near-branch target, refusing 16-bit operand-size forms.
fn near_target(i: &Instruction) -> Result<u64, Refusal> {
    match i.op0_kind() {
        OpKind::NearBranch64 => Ok(i.near_branch64()),
        _ => Err(Refusal::OperandSize16),
    }
}

/// The register of `call/jmp *%reg`, or the refusal for the memory form.
fn indirect_reg(i: &Instruction) -> Result<Reg, Refusal> {
    match i.op0_kind() {
        OpKind::Register => Reg::from_iced(i.op0_register()).ok_or(Refusal::OperandSize16),
        _ => Err(Refusal::IndirectMemBranch),
    }
}

fn classify(i: &Instruction) -> Result<Execution, Refusal> {
    let emulate = |e| Ok(Execution::Emulate(e));
    match i.mnemonic() {
        Mnemonic::Int3 => return Err(Refusal::Int3),
        Mnemonic::Int => return Err(Refusal::IntN),
        Mnemonic::Into => return Err(Refusal::Into),
        Mnemonic::Int1 => return Err(Refusal::Int1),
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 => return Err(Refusal::Ud),
        Mnemonic::Iret
        | Mnemonic::Iretd
        | Mnemonic::Iretq
        | Mnemonic::Uiret
        | Mnemonic::Eretu
        | Mnemonic::Erets => {
            return Err(Refusal::Iret);
        }
        Mnemonic::Retf => return Err(Refusal::FarTransfer),
        Mnemonic::Hlt
        | Mnemonic::Mwait
        | Mnemonic::Mwaitx
        | Mnemonic::Umwait
        | Mnemonic::Tpause => {
            return Err(Refusal::Halt);
        }
        Mnemonic::Xbegin | Mnemonic::Xabort | Mnemonic::Xend => return Err(Refusal::Transactional),
        Mnemonic::Mov if i.op0_kind() == OpKind::Register && i.op0_register() == Register::SS => {
            return Err(Refusal::MovToSs);
        }
        Mnemonic::Pop if i.op0_kind() == OpKind::Register && i.op0_register() == Register::SS => {
            return Err(Refusal::PopSs);
        }
        _ => {}
    }
    if i.is_call_far() || i.is_call_far_indirect() || i.is_jmp_far() || i.is_jmp_far_indirect() {
        return Err(Refusal::FarTransfer);
    }
    match i.code() {
        Code::Cli => return emulate(Emulation::Cli),
        Code::Sti => return emulate(Emulation::Sti),
        Code::Pushfq => return emulate(Emulation::Pushf),
        Code::Popfq => return emulate(Emulation::Popf),
        Code::Pushfw | Code::Popfw | Code::Retnw | Code::Retnw_imm16 => {
            return Err(Refusal::OperandSize16);
        }
        Code::Retnq => return emulate(Emulation::Ret { pop: 0 }),
        Code::Retnq_imm16 => {
            return emulate(Emulation::Ret {
                pop: i.immediate16(),
            });
        }
        _ => {}
    }
    if i.is_call_near() {
        return emulate(Emulation::CallRel {
            target: near_target(i)?,
        });
    }
    if i.is_jmp_short_or_near() {
        return emulate(Emulation::JmpRel {
            target: near_target(i)?,
        });
    }
    if i.is_jcc_short_or_near() {
        let cond = cond_of(i).ok_or(Refusal::UnsupportedBranch)?;
        return emulate(Emulation::Jcc {
            cond,
            target: near_target(i)?,
        });
    }
    if i.is_call_near_indirect() {
        return emulate(Emulation::CallReg {
            reg: indirect_reg(i)?,
        });
    }
    if i.is_jmp_near_indirect() {
        return emulate(Emulation::JmpReg {
            reg: indirect_reg(i)?,
        });
    }
    if i.is_loop() || i.is_loopcc() || i.is_jcx_short() {
        return emulate(loop_of(i)?);
    }
    match i.flow_control() {
        FlowControl::Next => Ok(Execution::OutOfLine {
            boostable: !i.is_privileged(),
            rip_relative: i.is_ip_rel_memory_operand(),
        }),
        FlowControl::Call | FlowControl::Return | FlowControl::Interrupt => {
            Err(Refusal::SystemTransfer)
        }
        FlowControl::XbeginXabortXend => Err(Refusal::Transactional),
        FlowControl::Exception => Err(Refusal::Undecodable),
        FlowControl::UnconditionalBranch
        | FlowControl::IndirectBranch
        | FlowControl::ConditionalBranch
        | FlowControl::IndirectCall => Err(Refusal::UnsupportedBranch),
    }
}

fn cond_of(i: &Instruction) -> Option<Cond> {
    use iced_x86::ConditionCode as C;
    Some(match i.condition_code() {
        C::o => Cond::O,
        C::no => Cond::No,
        C::b => Cond::B,
        C::ae => Cond::Ae,
        C::e => Cond::E,
        C::ne => Cond::Ne,
        C::be => Cond::Be,
        C::a => Cond::A,
        C::s => Cond::S,
        C::ns => Cond::Ns,
        C::p => Cond::P,
        C::np => Cond::Np,
        C::l => Cond::L,
        C::ge => Cond::Ge,
        C::le => Cond::Le,
        C::g => Cond::G,
        C::None => return None,
    })
}

fn loop_of(i: &Instruction) -> Result<Emulation, Refusal> {
    let (kind, ecx) = match i.code() {
        Code::Loop_rel8_64_RCX => (LoopKind::Loop, false),
        Code::Loop_rel8_64_ECX => (LoopKind::Loop, true),
        Code::Loope_rel8_64_RCX => (LoopKind::Loope, false),
        Code::Loope_rel8_64_ECX => (LoopKind::Loope, true),
        Code::Loopne_rel8_64_RCX => (LoopKind::Loopne, false),
        Code::Loopne_rel8_64_ECX => (LoopKind::Loopne, true),
        Code::Jrcxz_rel8_64 => (LoopKind::Jrcxz, false),
        Code::Jecxz_rel8_64 => (LoopKind::Jrcxz, true),
        _ => return Err(Refusal::OperandSize16),
    };
    Ok(Emulation::Loop {
        kind,
        target: near_target(i)?,
        ecx,
    })
}
