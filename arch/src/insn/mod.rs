//! Instruction knowledge for probes: what may be probed, and how the probed
//! instruction is executed once its first byte is an `int3`.
//!
//! Decided once, at registration ([`analyze`]):
//! - **Refused** ([`Refusal`]): not an instruction boundary, outside the
//!   function, or an instruction that cannot be executed anywhere but in
//!   place (int3/int n/int1/into, ud0-2, iret, far transfers, call/jmp
//!   through memory, mov/pop to %ss, system transfers, halts, RTM, ...).
//! - **Emulated** ([`Emulation`]): everything that changes rip or IF (call
//!   rel, jmp rel, jcc, loop/jrcxz, ret, call/jmp through a register, cli,
//!   sti, pushf, popf). [`emulate`] applies it to the trap frame on every hit.
//! - **Out of line**: every other instruction is copied to a slot
//!   ([`slot_code`]) with RIP-relative displacements re-targeted, followed by
//!   either `int3` ([`Tail::Trap`]) or `jmp orig+len` ([`Tail::JmpBack`],
//!   "boosted", only when [`Execution::OutOfLine::boostable`]).
//!
//! The probe core's obligations for each path are documented on
//! [`Execution`] and in `docs/design/insn.md`.

mod access;
mod analysis;
mod cond;
mod emulate;
mod refusal;
mod slot;

pub use access::{Access, AccessDecoder, AccessError, SegBase};
pub use analysis::{
    Analysis, Emulation, Execution, LoopKind, MAX_INSN_LEN, Reg, analyze, has_far_return,
};
pub use cond::Cond;
pub use emulate::{EmuFault, StackMem, emulate};
pub use refusal::Refusal;
pub use slot::{SLOT_CODE_MAX, SlotCode, Tail, slot_code};
