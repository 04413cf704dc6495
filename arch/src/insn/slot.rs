//! Out-of-line copies: the probed instruction re-targeted for its slot,
//! followed by the tail that brings control back.

use iced_x86::{Decoder, DecoderOptions, Instruction, Register};

use super::analysis::{Analysis, Execution, MAX_INSN_LEN};
use super::refusal::Refusal;

/// Bytes a slot must offer: the longest instruction plus `sti; jmp rel32`,
/// rounded up to 32.
pub const SLOT_CODE_MAX: usize = 32;

const INT3: u8 = 0xcc;
const JMP_REL32: u8 = 0xe9;
const STI: u8 = 0xfb;

/// What follows the copied instruction in the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tail {
    /// `int3`: a second trap; the probe core sets `rip` to the original
    /// next instruction and runs post handlers there.
    Trap,
    /// `jmp orig+len`: boosted, no second trap.
    JmpBack,
    /// `sti; jmp orig+len`: boosted for a context that had interrupts
    /// enabled, entered with IF cleared. The instruction runs with
    /// interrupts off and the `sti` shadow covers the `jmp`, so no interrupt
    /// (and no preemption) ever finds a CPU inside the slot.
    StiJmpBack,
}

/// The code to write into one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotCode {
    /// `bytes[..len]` is the slot's code; the rest is `int3` filler.
    pub bytes: [u8; SLOT_CODE_MAX],
    /// Bytes of code (instruction + tail).
    pub len: u8,
    /// Length of the copied instruction (same as the original's).
    pub insn_len: u8,
    /// The tail after the instruction.
    pub tail: Tail,
}

impl SlotCode {
    /// The slot's code.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.len))
            .unwrap_or(&self.bytes)
    }

    /// `rip` reported by the tail `int3` trap of a slot at `slot_addr`
    /// (the address after the `int3`).
    #[inline]
    pub fn tail_trap_rip(&self, slot_addr: u64) -> u64 {
        slot_addr
            .wrapping_add(u64::from(self.insn_len))
            .wrapping_add(1)
    }

    /// Map a `rip` inside the slot at `slot_addr` back to the original code
    /// of `a`: the instruction's start (a fault in it) maps to `a.addr`, the
    /// end of the instruction (a trap after it, e.g. a debug trap) to
    /// `a.next_ip()`. Anything else is not the probed instruction's: `None`.
    #[inline]
    pub fn map_rip(&self, a: &Analysis, slot_addr: u64, rip: u64) -> Option<u64> {
        if rip == slot_addr {
            Some(a.addr)
        } else if rip == slot_addr.wrapping_add(u64::from(self.insn_len)) {
            Some(a.next_ip())
        } else {
            None
        }
    }
}

/// Build the code for an out-of-line slot at `slot_addr`: the original
/// bytes with any RIP-relative displacement re-targeted so it addresses the
/// same absolute address from the slot (checked by decoding the result),
/// then the tail. Errors: [`Refusal::Emulated`] for emulated instructions,
/// [`Refusal::RipRelOutOfRange`] when the displacement or the `jmp` back
/// cannot reach from the slot.
pub fn slot_code(a: &Analysis, slot_addr: u64, tail: Tail) -> Result<SlotCode, Refusal> {
    if let Execution::Emulate(_) = a.exec {
        return Err(Refusal::Emulated);
    }
    let insn = a.insn();
    let n = insn.len();
    if n == 0 || n > MAX_INSN_LEN {
        return Err(Refusal::Undecodable);
    }
    let mut bytes = [INT3; SLOT_CODE_MAX];
    bytes
        .get_mut(..n)
        .ok_or(Refusal::Undecodable)?
        .copy_from_slice(insn);

    let orig = decode_one(insn, a.addr)?;
    if orig.is_ip_rel_memory_operand() {
        let mut dec = Decoder::try_with_ip(64, insn, a.addr, DecoderOptions::NONE)
            .map_err(|_| Refusal::Undecodable)?;
        let mut i = Instruction::default();
        dec.decode_out(&mut i);
        let offsets = dec.get_constant_offsets(&i);
        if offsets.displacement_size() != 4 {
            return Err(Refusal::Undecodable);
        }
        let target = orig.ip_rel_memory_address();
        let slot_next = slot_addr.wrapping_add(n as u64);
        let disp: i32 = if orig.memory_base() == Register::EIP {
            // EIP-relative (0x67 prefix): the address wraps at 32 bits.
            (target as u32).wrapping_sub(slot_next as u32) as i32
        } else {
            rel32(target, slot_next)?
        };
        let at = offsets.displacement_offset();
        bytes
            .get_mut(at..at + 4)
            .ok_or(Refusal::Undecodable)?
            .copy_from_slice(&disp.to_le_bytes());
        let copy = decode_one(bytes.get(..n).ok_or(Refusal::Undecodable)?, slot_addr)?;
        if copy.len() != n || copy.ip_rel_memory_address() != target || copy.code() != orig.code() {
            return Err(Refusal::RipRelOutOfRange);
        }
    }

    let len = match tail {
        Tail::Trap => {
            *bytes.get_mut(n).ok_or(Refusal::Undecodable)? = INT3;
            n + 1
        }
        Tail::JmpBack => {
            put_jmp(&mut bytes, n, slot_addr, a.next_ip())?;
            n + 5
        }
        Tail::StiJmpBack => {
            *bytes.get_mut(n).ok_or(Refusal::Undecodable)? = STI;
            put_jmp(&mut bytes, n + 1, slot_addr, a.next_ip())?;
            n + 6
        }
    };
    Ok(SlotCode {
        bytes,
        len: len as u8,
        insn_len: n as u8,
        tail,
    })
}

/// Write `jmp target` at `bytes[at..at + 5]` of the slot at `slot_addr`.
fn put_jmp(
    bytes: &mut [u8; SLOT_CODE_MAX],
    at: usize,
    slot_addr: u64,
    target: u64,
) -> Result<(), Refusal> {
    let after = slot_addr.wrapping_add(at as u64 + 5);
    let rel = rel32(target, after)?;
    let jmp = bytes.get_mut(at..at + 5).ok_or(Refusal::Undecodable)?;
    jmp[0] = JMP_REL32;
    jmp[1..].copy_from_slice(&rel.to_le_bytes());
    Ok(())
}

fn decode_one(bytes: &[u8], ip: u64) -> Result<Instruction, Refusal> {
    let mut dec = Decoder::try_with_ip(64, bytes, ip, DecoderOptions::NONE)
        .map_err(|_| Refusal::Undecodable)?;
    let i = dec.decode();
    if i.is_invalid() {
        return Err(Refusal::Undecodable);
    }
    Ok(i)
}

/// `target - next` as a rel32, or out of range.
fn rel32(target: u64, next: u64) -> Result<i32, Refusal> {
    let d = target.wrapping_sub(next) as i64;
    i32::try_from(d).map_err(|_| Refusal::RipRelOutOfRange)
}
