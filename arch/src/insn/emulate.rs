//! Hit-path emulation of the instructions that change rip or IF.
//! Allocation-free; the frame is changed only when the whole emulation succeeds.

use super::analysis::{Emulation, LoopKind};
use crate::frame::TrapFrame;
use crate::frame::rflags;

/// RFLAGS bits `popfq` can change at CPL 0 (Intel SDM Vol. 2, POPF: "all
/// non-reserved flags except RF, VIP, VIF and VM"): CF PF AF ZF SF TF IF DF
/// OF, IOPL, NT, AC, ID. RF is cleared; VM, VIF, VIP keep their values;
/// bit 1 reads as 1, the other reserved bits as 0.
pub const POPF_WRITABLE: u64 = rflags::CF
    | rflags::PF
    | rflags::AF
    | rflags::ZF
    | rflags::SF
    | rflags::TF
    | rflags::IF
    | rflags::DF
    | rflags::OF
    | (3 << 12) // IOPL
    | (1 << 14) // NT
    | (1 << 18) // AC
    | (1 << 21); // ID

/// RFLAGS.VM (bit 17): `pushfq` stores it as 0.
const VM: u64 = 1 << 17;
/// RFLAGS.VIF, VIP: kept by `popfq` at CPL 0.
const VIF_VIP: u64 = (1 << 19) | (1 << 20);
/// RFLAGS bit 1 always reads as 1.
const RESERVED_ONE: u64 = 1 << 1;

/// The interrupted context's stack, as seen by emulated pushes and pops.
/// In the kernel: fault-checked reads/writes of 8 bytes at `addr`; on the
/// host: a `Vec`-backed stack.
pub trait StackMem {
    /// Read the 8 bytes at `addr`.
    fn read_u64(&mut self, addr: u64) -> Result<u64, EmuFault>;
    /// Write the 8 bytes at `addr`.
    fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), EmuFault>;
}

/// An emulated push or pop touched memory that cannot be accessed; the
/// original instruction would have faulted the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EmuFault {
    /// The stack address that failed.
    pub addr: u64,
    /// It was a write (push), not a read (pop).
    pub write: bool,
}

/// Apply `e` to the interrupted context: set `frame.rip` (to the branch
/// target or `next_ip`), push/pop through `mem`, and update rsp/rcx/rflags
/// exactly as the instruction would. On `Err`, `frame` is unchanged (a
/// failed push may have written nothing; a pop reads before anything is
/// committed).
///
/// Note for the trap entry: `call`/`pushf` write 8 bytes at `frame.rsp - 8`.
/// If the #BP entry runs on the interrupted stack without a gap, that is
/// where the CPU saved the hardware frame: #BP needs an IST stack (or
/// Linux's int3 gap).
#[inline]
pub fn emulate(
    e: &Emulation,
    next_ip: u64,
    frame: &mut TrapFrame,
    mem: &mut dyn StackMem,
) -> Result<(), EmuFault> {
    match *e {
        Emulation::CallRel { target } => {
            push(frame, mem, next_ip)?;
            frame.rip = target;
        }
        Emulation::JmpRel { target } => frame.rip = target,
        Emulation::Jcc { cond, target } => {
            frame.rip = if cond.holds(frame.rflags) {
                target
            } else {
                next_ip
            };
        }
        Emulation::Loop { kind, target, ecx } => {
            let (taken, rcx) = loop_step(kind, ecx, frame.rcx, frame.rflags);
            frame.rcx = rcx;
            frame.rip = if taken { target } else { next_ip };
        }
        Emulation::Ret { pop } => {
            let ret = mem.read_u64(frame.rsp)?;
            frame.rsp = frame.rsp.wrapping_add(8).wrapping_add(u64::from(pop));
            frame.rip = ret;
        }
        Emulation::CallReg { reg } => {
            let target = reg.read(frame);
            push(frame, mem, next_ip)?;
            frame.rip = target;
        }
        Emulation::JmpReg { reg } => frame.rip = reg.read(frame),
        Emulation::Cli => {
            frame.rflags &= !rflags::IF;
            frame.rip = next_ip;
        }
        Emulation::Sti => {
            frame.rflags |= rflags::IF;
            frame.rip = next_ip;
        }
        Emulation::Pushf => {
            push(frame, mem, frame.rflags & !(rflags::RF | VM))?;
            frame.rip = next_ip;
        }
        Emulation::Popf => {
            let v = mem.read_u64(frame.rsp)?;
            frame.rsp = frame.rsp.wrapping_add(8);
            frame.rflags = popf_result(frame.rflags, v);
            frame.rip = next_ip;
        }
    }
    Ok(())
}

/// RFLAGS after `popfq` of `popped` at CPL 0 with current flags `old`.
#[inline]
pub fn popf_result(old: u64, popped: u64) -> u64 {
    (popped & POPF_WRITABLE) | (old & (VM | VIF_VIP)) | RESERVED_ONE
}

/// One LOOP-family step: (branch taken, new rcx).
///
/// LOOP/LOOPE/LOOPNE decrement the counter first and test the new value;
/// JRCXZ tests without decrementing. With the 0x67 prefix the counter is
/// ECX, and the decrement writes ECX like any 32-bit register write: rcx's
/// upper half becomes zero (measured on hardware by the host test
/// `loop_family_matches_native`; Linux's emulation keeps the upper half).
#[inline]
pub fn loop_step(kind: LoopKind, ecx: bool, rcx: u64, rflags_now: u64) -> (bool, u64) {
    let zf = rflags_now & rflags::ZF != 0;
    let (count, new_rcx) = match (kind, ecx) {
        (LoopKind::Jrcxz, false) => (rcx, rcx),
        (LoopKind::Jrcxz, true) => (rcx & 0xffff_ffff, rcx),
        (_, false) => {
            let c = rcx.wrapping_sub(1);
            (c, c)
        }
        (_, true) => {
            let c = u64::from((rcx as u32).wrapping_sub(1));
            (c, c)
        }
    };
    let taken = match kind {
        LoopKind::Loop => count != 0,
        LoopKind::Loope => count != 0 && zf,
        LoopKind::Loopne => count != 0 && !zf,
        LoopKind::Jrcxz => count == 0,
    };
    (taken, new_rcx)
}

fn push(frame: &mut TrapFrame, mem: &mut dyn StackMem, value: u64) -> Result<(), EmuFault> {
    let sp = frame.rsp.wrapping_sub(8);
    mem.write_u64(sp, value)?;
    frame.rsp = sp;
    Ok(())
}
