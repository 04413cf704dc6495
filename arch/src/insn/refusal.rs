//! Why an address cannot be probed.

/// Why an address cannot be probed. Every refusal is its own variant so the
/// probe core can report it and tests can check the exact reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The address falls inside an instruction (decoding from the function's
    /// start steps over it).
    NotBoundary,
    /// The address is at or past the end of the function's bytes.
    PastEnd,
    /// The address is not in kernel text (below the function's start, or the
    /// caller found no text symbol for it).
    OutsideText,
    /// The address is in code that the probe machinery itself runs
    /// (decided by the caller; here for one uniform error type).
    Blacklisted,
    /// The bytes do not decode to a valid instruction (or an instruction
    /// between the function's start and the address does not).
    Undecodable,
    /// `int3` (0xcc): a breakpoint that is not ours; its owner expects it in place.
    Int3,
    /// `int n`: a software interrupt.
    IntN,
    /// `into` (invalid in 64-bit mode, refused by name).
    Into,
    /// `int1` / `icebp` (0xf1).
    Int1,
    /// `ud0`, `ud1`, `ud2`: the kernel's BUG()/WARN() traps look them up by address.
    Ud,
    /// `iret`/`iretq` (and `uiret`, `eretu`/`erets`): reloads rip, cs, rflags, rsp, ss.
    Iret,
    /// Far call/jmp/ret: changes cs.
    FarTransfer,
    /// `call`/`jmp` through memory: the target read would have to be emulated
    /// with a fault-safe read of arbitrary memory.
    IndirectMemBranch,
    /// `mov` to %ss: inhibits interrupts and debug traps for one instruction.
    MovToSs,
    /// `pop %ss` (invalid in 64-bit mode, refused by name).
    PopSs,
    /// A RIP-relative displacement (or the `jmp` back) cannot reach from the
    /// slot: the slot is more than ±2 GB from the target.
    RipRelOutOfRange,
    /// `syscall`, `sysret`, `sysenter`, `sysexit`, VM entry/exit calls, `rsm`,
    /// `skinit`: change privilege level, rip and cs.
    SystemTransfer,
    /// `hlt`, `mwait`, `mwaitx`, `umwait`, `tpause`: wait for an interrupt, but a
    /// non-boosted out-of-line instruction runs with interrupts disabled.
    Halt,
    /// `xbegin`, `xabort`, `xend`: an RTM transaction aborts on the probe's
    /// int3 and resumes at the `xbegin` fallback address.
    Transactional,
    /// A 16-bit operand-size branch, `ret`, `pushf` or `popf` (0x66 prefix):
    /// never produced by compilers for 64-bit code; not emulated.
    OperandSize16,
    /// Any other instruction that changes rip (e.g. a future branch class).
    UnsupportedBranch,
    /// [`slot_code`](crate::insn::slot_code) was asked for an instruction
    /// that is emulated and has no out-of-line copy.
    Emulated,
}

impl Refusal {
    /// A one-line reason for error replies and the shell.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotBoundary => {
                "address is inside an instruction, not at an instruction boundary"
            }
            Refusal::PastEnd => "offset is at or past the end of the function",
            Refusal::OutsideText => "address is not in kernel text",
            Refusal::Blacklisted => "address is in code the probe machinery runs (blacklisted)",
            Refusal::Undecodable => "bytes do not decode as a valid x86-64 instruction",
            Refusal::Int3 => "instruction is an int3 that is not a kdbg probe",
            Refusal::IntN => "instruction is a software interrupt (int n)",
            Refusal::Into => "instruction is into",
            Refusal::Int1 => "instruction is int1 (icebp)",
            Refusal::Ud => "instruction is ud0/ud1/ud2 (BUG/WARN trap)",
            Refusal::Iret => "instruction is iret",
            Refusal::FarTransfer => "instruction is a far call, jmp or ret",
            Refusal::IndirectMemBranch => "instruction is a call or jmp through memory",
            Refusal::MovToSs => "instruction moves to %ss (interrupt shadow)",
            Refusal::PopSs => "instruction pops %ss (interrupt shadow)",
            Refusal::RipRelOutOfRange => "RIP-relative target is out of ±2 GB reach from the slot",
            Refusal::SystemTransfer => "instruction is a system call/return or VM transfer",
            Refusal::Halt => {
                "instruction waits for an interrupt (hlt/mwait) and cannot run out of line"
            }
            Refusal::Transactional => {
                "instruction is an RTM transaction boundary (xbegin/xabort/xend)"
            }
            Refusal::OperandSize16 => "instruction is a 16-bit operand-size branch/ret/pushf/popf",
            Refusal::UnsupportedBranch => "instruction changes rip in a way kdbg does not emulate",
            Refusal::Emulated => "instruction is emulated and has no out-of-line copy",
        }
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.reason())
    }
}
