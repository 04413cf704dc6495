//! The data an instruction reads and writes: its memory accesses, with
//! addresses computed from a trap frame (explicit operands, RIP-relative
//! ones, the stack of push/pop/call/ret, string operands, fs/gs-based ones).
//!
//! The debugger's single step needs it: under TCG a data watchpoint hit by
//! a stepped instruction and the step's own trap arrive as two #DBs, the
//! second at the first instruction of the first's handler, on the same IST
//! stack, where it overwrites the interrupted context. The stub decodes
//! the stepped instruction's accesses, steps it with the matching watch
//! slots off, and reports the watchpoint itself (what real hardware
//! reports in one #DB with DR6.BS and DR6.Bn set).

use iced_x86::{
    Decoder, DecoderOptions, InstructionInfoFactory, InstructionInfoOptions, OpAccess, Register,
};

use crate::frame::TrapFrame;

/// One memory access of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Linear address of the first byte.
    pub addr: u64,
    /// Bytes accessed (one element of a string instruction).
    pub len: u64,
    pub read: bool,
    pub write: bool,
}

impl Access {
    /// The access touches `addr..addr + len`.
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        self.addr < addr.wrapping_add(len) && addr < self.addr.wrapping_add(self.len)
    }
}

/// A segment whose base the frame does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegBase {
    Fs,
    Gs,
}

/// Why the accesses could not be told exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// Not a valid instruction.
    Invalid,
    /// An address depends on a register the frame does not hold (a vector
    /// index of a gather/scatter).
    Unknown,
}

/// Decodes memory accesses. Holds iced's analysis buffers, allocated once
/// by [`AccessDecoder::new`] (in task context): [`AccessDecoder::accesses`]
/// does not allocate for instructions with at most 8 memory operands
/// (every instruction but gathers and scatters), so trap paths may call it.
pub struct AccessDecoder {
    factory: InstructionInfoFactory,
}

impl Default for AccessDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessDecoder {
    pub fn new() -> Self {
        AccessDecoder {
            factory: InstructionInfoFactory::new(),
        }
    }

    /// Calls `f` for each memory access of the instruction in `bytes`
    /// (at `frame.rip`) as it would run with `frame`'s registers.
    /// `seg_base` gives the fs/gs base (the frame does not hold them).
    pub fn accesses(
        &mut self,
        bytes: &[u8],
        frame: &TrapFrame,
        seg_base: &dyn Fn(SegBase) -> u64,
        f: &mut dyn FnMut(Access),
    ) -> Result<(), AccessError> {
        let mut decoder = Decoder::with_ip(64, bytes, frame.rip, DecoderOptions::NONE);
        let insn = decoder.decode();
        if insn.is_invalid() {
            return Err(AccessError::Invalid);
        }
        let info = self
            .factory
            .info_options(&insn, InstructionInfoOptions::NO_REGISTER_USAGE);
        for mem in info.used_memory() {
            let (read, write) = match mem.access() {
                OpAccess::Read | OpAccess::CondRead => (true, false),
                OpAccess::Write | OpAccess::CondWrite => (false, true),
                OpAccess::ReadWrite | OpAccess::ReadCondWrite => (true, true),
                _ => continue,
            };
            let addr = mem
                .virtual_address(0, |reg, _, _| register(frame, reg, seg_base))
                .ok_or(AccessError::Unknown)?;
            f(Access {
                addr,
                len: mem.memory_size().size() as u64,
                read,
                write,
            });
        }
        Ok(())
    }
}

/// A general register's (or segment base's) value in `frame`.
fn register(frame: &TrapFrame, reg: Register, seg_base: &dyn Fn(SegBase) -> u64) -> Option<u64> {
    use Register as R;
    let full = match reg.full_register() {
        R::RAX => frame.rax,
        R::RBX => frame.rbx,
        R::RCX => frame.rcx,
        R::RDX => frame.rdx,
        R::RSI => frame.rsi,
        R::RDI => frame.rdi,
        R::RBP => frame.rbp,
        R::RSP => frame.rsp,
        R::R8 => frame.r8,
        R::R9 => frame.r9,
        R::R10 => frame.r10,
        R::R11 => frame.r11,
        R::R12 => frame.r12,
        R::R13 => frame.r13,
        R::R14 => frame.r14,
        R::R15 => frame.r15,
        R::RIP => frame.rip,
        R::ES | R::CS | R::SS | R::DS => return Some(0),
        R::FS => return Some(seg_base(SegBase::Fs)),
        R::GS => return Some(seg_base(SegBase::Gs)),
        _ => return None,
    };
    // Sub-registers as address parts (a 32-bit address size): the low bits.
    Some(match reg.size() {
        4 => full & 0xffff_ffff,
        2 => full & 0xffff,
        1 => full & 0xff,
        _ => full,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(bytes: &[u8], frame: &TrapFrame) -> Vec<Access> {
        let mut d = AccessDecoder::new();
        let mut v = Vec::new();
        d.accesses(
            bytes,
            frame,
            &|r| if r == SegBase::Gs { 0x5000 } else { 0 },
            &mut |a| v.push(a),
        )
        .unwrap();
        v
    }

    fn frame() -> TrapFrame {
        TrapFrame {
            rip: 0x1000,
            rsp: 0x8000,
            rdi: 0x2000,
            rsi: 0x3000,
            rax: 7,
            ..Default::default()
        }
    }

    fn acc(addr: u64, len: u64, read: bool, write: bool) -> Access {
        Access {
            addr,
            len,
            read,
            write,
        }
    }

    #[test]
    fn explicit_rip_relative_and_stack_accesses() {
        let f = frame();
        // mov qword ptr [rip+0x10], rdi: 7 bytes, so rip+7+0x10.
        assert_eq!(
            run(&[0x48, 0x89, 0x3d, 0x10, 0, 0, 0], &f),
            [acc(0x1017, 8, false, true)]
        );
        // mov rax, [rdi+rax*8+4]
        assert_eq!(
            run(&[0x48, 0x8b, 0x44, 0xc7, 0x04], &f),
            [acc(0x2000 + 7 * 8 + 4, 8, true, false)]
        );
        // add dword ptr [rdi], 1: read and write.
        assert_eq!(run(&[0x83, 0x07, 0x01], &f), [acc(0x2000, 4, true, true)]);
        // push rax: the word below rsp; ret: the word at rsp.
        assert_eq!(run(&[0x50], &f), [acc(0x7ff8, 8, false, true)]);
        assert_eq!(run(&[0xc3], &f), [acc(0x8000, 8, true, false)]);
        // lea touches no memory.
        assert!(run(&[0x48, 0x8d, 0x47, 0x01], &f).is_empty());
        // mov rax, gs:[0x10]: the segment base is added.
        assert_eq!(
            run(&[0x65, 0x48, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0], &f),
            [acc(0x5010, 8, true, false)]
        );
    }

    #[test]
    fn string_instructions_access_one_element() {
        let f = frame();
        // movsb: reads [rsi], writes [rdi].
        let mut v = run(&[0xa4], &f);
        v.sort_by_key(|a| a.addr);
        assert_eq!(
            v,
            [acc(0x2000, 1, false, true), acc(0x3000, 1, true, false)]
        );
    }

    #[test]
    fn overlap() {
        let a = acc(0x1000, 8, true, false);
        assert!(a.overlaps(0x1007, 1));
        assert!(a.overlaps(0xff8, 9));
        assert!(!a.overlaps(0x1008, 8));
        assert!(!a.overlaps(0xff8, 8));
    }

    #[test]
    fn invalid_bytes_are_an_error() {
        let mut d = AccessDecoder::new();
        let r = d.accesses(&[0x0f, 0xff], &frame(), &|_| 0, &mut |_| {});
        assert_eq!(r, Err(AccessError::Invalid));
    }
}
