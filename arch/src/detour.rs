//! Jump-optimized probes: the analysis that proves a `jmp rel32` may
//! replace the instructions at a probe, the detour buffer's code, and the
//! shared entry code that turns a detour into a handler call without a trap
//! (like Linux's optprobes).
//!
//! A probe at `addr` is optimized when the instructions starting there
//! cover at least [`JMP_LEN`] bytes (the *region*) and
//! [`jump_region`] proves, from the whole function's code, that:
//! - the region ends inside the function;
//! - no direct branch in the function targets a byte of the region other
//!   than its first;
//! - the function has no indirect jump (jump tables could target the
//!   region: the table's contents are not decoded);
//! - every instruction of the region can run from another address
//!   (out of line, boostable: RIP-relative operands re-targeted).
//!
//! The detour buffer (one out-of-line slot, within +-2 GB of text) holds:
//!
//! ```text
//! +0              call kdbg_optprobe_common   (pushes +5: identifies the detour)
//! +COPY           the region's instructions, relocated; jmp addr+len
//! +COPY_STI       the same; sti; jmp addr+len
//! ```
//!
//! `kdbg_optprobe_common` saves the flags, clears IF, builds a full
//! [`TrapFrame`] on the stack (FPU state included: the probed code may have
//! live vector registers), calls the callback set with
//! [`set_detour_callback`] with the frame and the detour's address, and
//! restores everything. The callback returns where to go: the copy
//! (`+COPY` when the probed context had IF clear, `+COPY_STI` when it had
//! it set: the copy then runs with interrupts off and the `sti` shadow
//! covers the `jmp` back), or any other address (a pre handler changed
//! `rip`). The common code returns there with the frame's flags (IF
//! cleared when the copy is the `sti` one).

use core::arch::global_asm;
use core::sync::atomic::{AtomicPtr, Ordering};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use crate::frame::TrapFrame;
use crate::insn::{Execution, Tail, analyze, slot_code};
use crate::slots::SLOT_SIZE;

/// Bytes of `jmp rel32`.
pub const JMP_LEN: usize = 5;
/// Most instructions in a region.
pub const MAX_REGION_INSNS: usize = 5;
/// Offset of the IF-clear copy in a detour.
pub const COPY: usize = 5;
/// Offset of the IF-set (`sti`) copy in a detour.
pub const COPY_STI: usize = 64;

const JMP_REL32: u8 = 0xe9;
const CALL_REL32: u8 = 0xe8;
const STI: u8 = 0xfb;
const INT3: u8 = 0xcc;

/// Why a probe stays an int3 (shown by `probes -v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotOptimized {
    /// The function could not be decoded from its start to its end.
    Undecodable,
    /// The 5 bytes of the jump would cross the function's end.
    CrossesEnd,
    /// A branch in the function targets a byte inside the region.
    JumpIntoRegion,
    /// The function has an indirect jump (a jump table may target the region).
    IndirectJump,
    /// An instruction of the region cannot run from the detour (it changes
    /// rip or IF, or is privileged).
    NotRelocatable,
    /// A RIP-relative operand or the jump cannot reach from the detour.
    OutOfRange,
    /// Another probe or a breakpoint is inside the region.
    ProbeInRegion,
    /// A probe at the address has a post or fault handler (they need the
    /// single-step trap).
    PostHandler,
    /// gdb has a breakpoint (or a condition) at the address.
    Breakpoint,
    /// A task is stopped or preempted inside the region.
    TaskInRegion,
    /// No free detour buffer.
    NoBuffer,
    /// Not tried: no enabled probe.
    Disabled,
    /// More than one CPU is online: a task running on another CPU could be
    /// inside the region (no RCU-tasks style wait yet).
    OtherCpus,
}

impl NotOptimized {
    /// A short reason for listings (no spaces).
    pub fn name(&self) -> &'static str {
        match self {
            NotOptimized::Undecodable => "function-undecodable",
            NotOptimized::CrossesEnd => "crosses-function-end",
            NotOptimized::JumpIntoRegion => "jump-into-region",
            NotOptimized::IndirectJump => "indirect-jump-in-function",
            NotOptimized::NotRelocatable => "insn-not-relocatable",
            NotOptimized::OutOfRange => "out-of-range",
            NotOptimized::ProbeInRegion => "probe-in-region",
            NotOptimized::PostHandler => "post-or-fault-handler",
            NotOptimized::Breakpoint => "gdb-breakpoint",
            NotOptimized::TaskInRegion => "task-in-region",
            NotOptimized::NoBuffer => "no-detour-buffer",
            NotOptimized::Disabled => "disabled",
            NotOptimized::OtherCpus => "other-cpus-online",
        }
    }
}

/// The instructions a `jmp rel32` at a probe would cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The probed address (first instruction).
    pub addr: u64,
    /// Bytes covered (>= [`JMP_LEN`]).
    pub len: u8,
    /// The original bytes (`orig[..len]`).
    pub orig: [u8; 32],
    /// Offsets of each instruction from `addr` (`insns[..n]`).
    pub insns: [u8; MAX_REGION_INSNS],
    /// Instructions in the region.
    pub n: u8,
}

impl Region {
    /// `rip` is an instruction of the region other than the first.
    pub fn interior(&self, rip: u64) -> bool {
        rip > self.addr && rip < self.addr.wrapping_add(u64::from(self.len))
    }

    /// The original bytes of the region.
    pub fn original(&self) -> &[u8] {
        self.orig.get(..usize::from(self.len)).unwrap_or(&self.orig)
    }
}

/// Proves (or refuses) that the probe at `addr` can become a jump.
/// `code` is the whole function from `func_start`, with every probe's and
/// breakpoint's int3 replaced by the original byte.
pub fn jump_region(code: &[u8], func_start: u64, addr: u64) -> Result<Region, NotOptimized> {
    let func_end = func_start.wrapping_add(code.len() as u64);
    let off =
        usize::try_from(addr.wrapping_sub(func_start)).map_err(|_| NotOptimized::CrossesEnd)?;
    // The region: whole instructions from addr covering JMP_LEN bytes.
    let mut insns = [0u8; MAX_REGION_INSNS];
    let mut n = 0usize;
    let mut len = 0usize;
    while len < JMP_LEN {
        let at = addr.wrapping_add(len as u64);
        if at >= func_end {
            return Err(NotOptimized::CrossesEnd);
        }
        let a = analyze(code, func_start, at).map_err(|_| NotOptimized::NotRelocatable)?;
        if !matches!(
            a.exec,
            Execution::OutOfLine {
                boostable: true,
                ..
            }
        ) {
            return Err(NotOptimized::NotRelocatable);
        }
        *insns.get_mut(n).ok_or(NotOptimized::NotRelocatable)? = len as u8;
        n += 1;
        len += usize::from(a.len);
    }
    if addr.wrapping_add(len as u64) > func_end {
        return Err(NotOptimized::CrossesEnd);
    }
    let region_end = addr.wrapping_add(len as u64);
    // The whole function: no indirect jump, no branch into the region.
    let mut dec = Decoder::try_with_ip(64, code, func_start, DecoderOptions::NONE)
        .map_err(|_| NotOptimized::Undecodable)?;
    let mut i = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut i);
        if i.is_invalid() {
            // Padding after the last instruction (int3 or zero fill) ends
            // the code; anything else is not understood.
            let at = usize::try_from(i.ip().wrapping_sub(func_start)).unwrap_or(usize::MAX);
            let rest = code.get(at..).unwrap_or(&[]);
            if rest.iter().all(|&b| b == INT3 || b == 0) {
                break;
            }
            return Err(NotOptimized::Undecodable);
        }
        match i.flow_control() {
            FlowControl::IndirectBranch => return Err(NotOptimized::IndirectJump),
            FlowControl::UnconditionalBranch
            | FlowControl::ConditionalBranch
            | FlowControl::Call => {
                let t = i.near_branch_target();
                if t > addr && t < region_end {
                    return Err(NotOptimized::JumpIntoRegion);
                }
            }
            _ => {}
        }
    }
    let mut orig = [0u8; 32];
    orig.get_mut(..len)
        .ok_or(NotOptimized::NotRelocatable)?
        .copy_from_slice(code.get(off..off + len).ok_or(NotOptimized::CrossesEnd)?);
    Ok(Region {
        addr,
        len: len as u8,
        orig,
        insns,
        n: n as u8,
    })
}

/// The code of a detour buffer at `base` for `region` (`code` and
/// `func_start` as for [`jump_region`]), and where each region
/// instruction's copy starts (offsets from `base`, IF-clear copy).
pub fn detour_image(
    region: &Region,
    code: &[u8],
    func_start: u64,
    base: u64,
) -> Result<([u8; SLOT_SIZE], [u8; MAX_REGION_INSNS]), NotOptimized> {
    let mut img = [INT3; SLOT_SIZE];
    let common = common_address();
    put_rel32(&mut img, 0, CALL_REL32, base, common)?;
    let back = region.addr.wrapping_add(u64::from(region.len));
    let mut copies = [0u8; MAX_REGION_INSNS];
    for (variant, start) in [(false, COPY), (true, COPY_STI)] {
        let mut at = start;
        for k in 0..usize::from(region.n) {
            let off = u64::from(*region.insns.get(k).ok_or(NotOptimized::NotRelocatable)?);
            let a = analyze(code, func_start, region.addr.wrapping_add(off))
                .map_err(|_| NotOptimized::NotRelocatable)?;
            let sc = slot_code(&a, base.wrapping_add(at as u64), Tail::Trap)
                .map_err(|_| NotOptimized::OutOfRange)?;
            let n = usize::from(sc.insn_len);
            let src = sc.as_bytes().get(..n).ok_or(NotOptimized::NotRelocatable)?;
            img.get_mut(at..at + n)
                .ok_or(NotOptimized::NoBuffer)?
                .copy_from_slice(src);
            if !variant && let Some(c) = copies.get_mut(k) {
                *c = at as u8;
            }
            at += n;
        }
        if variant {
            *img.get_mut(at).ok_or(NotOptimized::NoBuffer)? = STI;
            at += 1;
        }
        put_rel32(&mut img, at, JMP_REL32, base, back)?;
        if at + JMP_LEN > if variant { SLOT_SIZE } else { COPY_STI } {
            return Err(NotOptimized::NoBuffer);
        }
    }
    Ok((img, copies))
}

/// The 5 bytes of `jmp detour` at `addr`.
pub fn jump_bytes(addr: u64, detour: u64) -> Result<[u8; JMP_LEN], NotOptimized> {
    let mut b = [0u8; JMP_LEN];
    b[0] = JMP_REL32;
    let rel = rel32(addr.wrapping_add(JMP_LEN as u64), detour)?;
    b[1..].copy_from_slice(&rel.to_le_bytes());
    Ok(b)
}

fn rel32(next: u64, target: u64) -> Result<i32, NotOptimized> {
    i32::try_from(target.wrapping_sub(next) as i64).map_err(|_| NotOptimized::OutOfRange)
}

fn put_rel32(
    img: &mut [u8],
    at: usize,
    op: u8,
    base: u64,
    target: u64,
) -> Result<(), NotOptimized> {
    let next = base.wrapping_add((at + JMP_LEN) as u64);
    let rel = rel32(next, target)?;
    let dst = img
        .get_mut(at..at + JMP_LEN)
        .ok_or(NotOptimized::NoBuffer)?;
    dst[0] = op;
    dst[1..].copy_from_slice(&rel.to_le_bytes());
    Ok(())
}

/// What the common entry calls: the frame and the detour's base; returns
/// where to continue.
pub type DetourCallback = extern "C" fn(&mut TrapFrame, u64) -> u64;

/// Before a probe core installs its callback no detour exists; reaching
/// the common code is fatal.
extern "C" fn no_callback(_frame: &mut TrapFrame, _detour: u64) -> u64 {
    loop {
        crate::cpu::disable_interrupts();
        crate::cpu::halt();
    }
}

#[used]
static DETOUR_CALLBACK: AtomicPtr<()> = AtomicPtr::new(no_callback as DetourCallback as *mut ());

/// Installs the function the common entry calls (the probe core, at init).
pub fn set_detour_callback(f: DetourCallback) {
    DETOUR_CALLBACK.store(f as *mut (), Ordering::Release);
}

/// Address of the shared entry code every detour calls.
pub fn common_address() -> u64 {
    core::ptr::addr_of!(kdbg_optprobe_common) as u64
}

/// The common entry's first two instructions run with the probed
/// context's IF (before its `cli`): a task preempted there returns into
/// a detour. `true` for such a `rip`.
pub fn in_common_entry(rip: u64) -> bool {
    let c = common_address();
    let irqoff = core::ptr::addr_of!(kdbg_optprobe_common_irqoff) as u64;
    rip >= c && rip < irqoff
}

unsafe extern "C" {
    static kdbg_optprobe_common: u8;
    static kdbg_optprobe_common_irqoff: u8;
}

// Frame layout and the shared save/restore: `frame_asm.rs`. On entry [rsp] is the
// detour's base + 5 (pushed by its call); the probed context's rsp is rsp + 8.
global_asm!(
    ".pushsection .text.kdbg_optprobe, \"ax\", @progbits",
    ".balign 16",
    ".globl kdbg_optprobe_common",
    ".type kdbg_optprobe_common, @function",
    "kdbg_optprobe_common:",
    ".cfi_startproc",
    "pushq %rbp",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset %rbp, -16",
    "movq %rsp, %rbp",
    ".cfi_def_cfa_register %rbp",
    "pushfq",
    "cli",
    ".globl kdbg_optprobe_common_irqoff",
    "kdbg_optprobe_common_irqoff:",
    frame_save_asm!(),
    "fxsave64 (%rsp)",
    "movq %rsp, %rdi",
    "movq 8(%rbp), %rsi",
    "subq $5, %rsi",
    "cld",
    "call *{callback}(%rip)",
    "movq %rax, 8(%rbp)",
    "fxrstor64 (%rsp)",
    frame_restore_asm!(),
    ".cfi_endproc",
    ".size kdbg_optprobe_common, . - kdbg_optprobe_common",
    ".popsection",
    callback = sym DETOUR_CALLBACK,
    options(att_syntax)
);

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 0x10_0000;

    #[test]
    fn region_covers_whole_instructions() {
        // mov rax, rdi; add rax, 1; lea rax, [rax+rsi]; ret
        let code = [
            0x48, 0x89, 0xf8, 0x48, 0x83, 0xc0, 0x01, 0x48, 0x8d, 0x04, 0x30, 0xc3,
        ];
        let r = jump_region(&code, F, F).unwrap();
        assert_eq!(r.len, 7);
        assert_eq!(r.n, 2);
        assert_eq!(&r.insns[..2], &[0, 3]);
        assert_eq!(r.original(), &code[..7]);
        assert!(r.interior(F + 3) && !r.interior(F) && !r.interior(F + 7));
        // From the lea: lea (4) + ret: ret is not relocatable.
        assert_eq!(
            jump_region(&code, F, F + 7),
            Err(NotOptimized::NotRelocatable)
        );
    }

    #[test]
    fn refusals() {
        // mov rax, rdi; add rax, 1; jne F+3 (into the region); ret
        let code = [0x48, 0x89, 0xf8, 0x48, 0x83, 0xc0, 0x01, 0x75, 0xfa, 0xc3];
        assert_eq!(jump_region(&code, F, F), Err(NotOptimized::JumpIntoRegion));
        // mov rax, rdi; add rax, 1; jmp rax; ret
        let code = [0x48, 0x89, 0xf8, 0x48, 0x83, 0xc0, 0x01, 0xff, 0xe0, 0xc3];
        assert_eq!(jump_region(&code, F, F), Err(NotOptimized::IndirectJump));
        // nop; nop; nop (function ends before 5 bytes)
        let code = [0x90, 0x90, 0x90];
        assert_eq!(jump_region(&code, F, F), Err(NotOptimized::CrossesEnd));
        // A jump to the region's first byte is fine: mov; add; jne F; ret
        let code = [0x48, 0x89, 0xf8, 0x48, 0x83, 0xc0, 0x01, 0x75, 0xf7, 0xc3];
        assert!(jump_region(&code, F, F).is_ok());
    }

    #[test]
    fn image_calls_common_and_jumps_back_twice() {
        let code = [
            0x48, 0x89, 0xf8, 0x48, 0x83, 0xc0, 0x01, 0x48, 0x8d, 0x04, 0x30, 0xc3,
        ];
        let r = jump_region(&code, F, F).unwrap();
        let base = F + 0x1000;
        // The common code is far from F in a host test: only check when reachable.
        if let Ok((img, copies)) = detour_image(&r, &code, F, base) {
            assert_eq!(img[0], CALL_REL32);
            assert_eq!(&img[COPY..COPY + 7], &code[..7]);
            assert_eq!(img[COPY + 7], JMP_REL32);
            assert_eq!(&img[COPY_STI..COPY_STI + 7], &code[..7]);
            assert_eq!(img[COPY_STI + 7], STI);
            assert_eq!(copies[..2], [COPY as u8, COPY as u8 + 3]);
        }
        let j = jump_bytes(F, base).unwrap();
        assert_eq!(j[0], JMP_REL32);
        assert_eq!(i32::from_le_bytes([j[1], j[2], j[3], j[4]]), 0x1000 - 5);
    }
}
