//! Exact single steps: what a debugger's `stepi` does to the instruction at
//! rip beyond setting TF.
//!
//! A step with TF alone is not always one instruction, and TF is not always
//! invisible to the stepped code:
//! - `sti` opens an interrupt shadow and the CPU delivers no single-step
//!   trap after it: the step would run two instructions. The stub emulates
//!   `sti` (and `cli`, for symmetry) instead of running it.
//! - `pushfq` would push the stub's TF into the stack image the program
//!   later pops or inspects. The stub emulates it and pushes the code's own
//!   flags (RF and VM clear, as the CPU pushes them).
//! - A timer interrupt pending when the step resumes would run its handler
//!   (and perhaps the scheduler) inside the step. Every instruction that
//!   neither reads nor writes IF is stepped with IF masked, and IF is put
//!   back when the step ends (what QEMU's own gdbstub does, `SSTEP_NOIRQ`).
//!   Instructions that touch IF (popf, iret, int, hlt, syscall...) are
//!   stepped as they are.
//!
//! - A data watchpoint the stepped instruction sets off: under TCG its #DB
//!   and the step's trap arrive as two traps, the second at the first
//!   instruction of the first's handler on the same IST stack, which
//!   overwrites the stepped context. [`watch_hits`] decodes the
//!   instruction's memory accesses; the stub steps it with those slots off
//!   and reports the watchpoint at the step's end (what hardware reports in
//!   one #DB with DR6.BS and DR6.Bn).
//!
//! The decoder only needs the opcode after legacy and REX prefixes; a
//! byte under an int3 (a probe or a gdb breakpoint) is left to the probe
//! core, which handles stepping contexts itself.

use arch::TrapFrame;
use arch::debugreg::Slots;
use arch::frame::rflags::{IF, RF, TF};
use arch::insn::{AccessDecoder, SegBase};
use spin::Mutex;

/// iced's analysis buffers for [`watch_hits`], allocated by [`init`] in
/// task context so the trap path never allocates.
static ACCESS: Mutex<Option<AccessDecoder>> = Mutex::new(None);

/// Allocates what [`watch_hits`] needs (at stub init).
pub fn init() {
    *ACCESS.lock() = Some(AccessDecoder::new());
}

/// The watch slots (bit i: slot i) the instruction in `bytes` at
/// `frame.rip` sets off when it runs with `frame`'s registers. 0 when it
/// touches none, or when its accesses cannot be told (the step then runs
/// with the slots armed, as before).
pub fn watch_hits(frame: &TrapFrame, bytes: &[u8], slots: &Slots) -> u8 {
    if !slots.any_watch() {
        return 0;
    }
    let Some(mut guard) = ACCESS.try_lock() else {
        return 0;
    };
    let Some(decoder) = guard.as_mut() else {
        return 0;
    };
    let seg = |s: SegBase| match s {
        SegBase::Fs => arch::cpu::fs_base(),
        SegBase::Gs => arch::cpu::gs_base(),
    };
    let mut hits = 0;
    let r = decoder.accesses(bytes, frame, &seg, &mut |a| {
        hits |= slots.watch_hits(a.addr, a.len, a.read, a.write);
    });
    if r.is_err() { 0 } else { hits }
}

/// What the stub does for one `stepi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The instruction was emulated in the frame: report the stop at once.
    Emulated,
    /// Run the instruction with TF; `mask_if`: with IF clear, restored at
    /// the step's end.
    Step { mask_if: bool },
}

/// The first opcode byte(s) after prefixes and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opcode {
    pub op: u8,
    /// The byte after `op` (for 0x0F escapes).
    pub next: u8,
    /// Bytes of prefixes before `op`.
    pub prefixes: usize,
    /// An operand-size prefix (0x66) was present.
    pub opsize: bool,
    /// A REX prefix was present.
    pub rex: bool,
}

/// Decodes the opcode of the instruction in `bytes` (up to 15 bytes).
pub fn opcode(bytes: &[u8]) -> Option<Opcode> {
    let mut i = 0;
    let mut opsize = false;
    let mut rex = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 => opsize = true,
            0x67 | 0xF0 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 => {}
            0x40..=0x4F => {
                rex = true;
                // REX must come last; the opcode follows.
                let op = *bytes.get(i + 1)?;
                return Some(Opcode {
                    op,
                    next: bytes.get(i + 2).copied().unwrap_or(0),
                    prefixes: i + 1,
                    opsize,
                    rex,
                });
            }
            op => {
                return Some(Opcode {
                    op,
                    next: bytes.get(i + 1).copied().unwrap_or(0),
                    prefixes: i,
                    opsize,
                    rex,
                });
            }
        }
        i += 1;
        if i >= 15 {
            return None;
        }
    }
    None
}

/// Whether an instruction with this opcode reads or writes IF, halts, or
/// transfers to a handler (so it must run with the code's own IF).
pub fn touches_if(o: &Opcode) -> bool {
    match o.op {
        // pushf popf cli sti iret int3 int into int1 hlt
        0x9C | 0x9D | 0xFA | 0xFB | 0xCF | 0xCC | 0xCD | 0xCE | 0xF1 | 0xF4 => true,
        // syscall sysret sysenter sysexit, the 0F 01 group (swapgs, ...),
        // ud2 (a fault whose handler sees the flags)
        0x0F => matches!(o.next, 0x05 | 0x07 | 0x34 | 0x35 | 0x01 | 0x0B),
        _ => false,
    }
}

/// Decides (and for emulated instructions, performs) one step of `frame`,
/// whose rflags are the code's own (no stub TF yet). `bytes` are the
/// instruction bytes at rip as the CPU will fetch them (an int3 shows as
/// 0xCC); `push` writes a stack word, `false` when it cannot.
pub fn plan(frame: &mut TrapFrame, bytes: &[u8], push: impl FnOnce(u64, u64) -> bool) -> Plan {
    let Some(o) = opcode(bytes) else {
        return Plan::Step { mask_if: false };
    };
    let len = o.prefixes as u64 + 1;
    match o.op {
        // sti: no single-step trap follows it (interrupt shadow).
        0xFB if o.prefixes == 0 => {
            frame.rflags |= IF;
            frame.rip = frame.rip.wrapping_add(len);
            Plan::Emulated
        }
        0xFA if o.prefixes == 0 => {
            frame.rflags &= !IF;
            frame.rip = frame.rip.wrapping_add(len);
            Plan::Emulated
        }
        // pushfq (64-bit operand size by default; a 0x66 prefix pushes 16
        // bits: stepped as is).
        0x9C if !o.opsize => {
            let sp = frame.rsp.wrapping_sub(8);
            let image = frame.rflags & !(RF | (1 << 17));
            if push(sp, image) {
                frame.rsp = sp;
                frame.rip = frame.rip.wrapping_add(len);
                Plan::Emulated
            } else {
                // The push would fault: let the CPU raise it.
                Plan::Step { mask_if: false }
            }
        }
        _ => Plan::Step {
            mask_if: !touches_if(&o) && frame.rflags & TF == 0,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame() -> TrapFrame {
        TrapFrame {
            rip: 0x1000,
            rsp: 0x8000,
            rflags: 0x246,
            ..Default::default()
        }
    }

    #[test]
    fn sti_and_cli_are_emulated_as_one_instruction() {
        let mut f = frame();
        f.rflags = 0x46;
        assert_eq!(plan(&mut f, &[0xFB, 0x48], |_, _| true), Plan::Emulated);
        assert_eq!(f.rip, 0x1001);
        assert_eq!(f.rflags, 0x246);
        assert_eq!(plan(&mut f, &[0xFA], |_, _| true), Plan::Emulated);
        assert_eq!((f.rip, f.rflags), (0x1002, 0x46));
    }

    #[test]
    fn pushf_pushes_the_codes_flags_without_tf_or_rf() {
        let mut f = frame();
        f.rflags = 0x246 | RF;
        let mut pushed = None;
        let p = plan(&mut f, &[0x9C], |a, v| {
            pushed = Some((a, v));
            true
        });
        assert_eq!(p, Plan::Emulated);
        assert_eq!(pushed, Some((0x7FF8, 0x246)));
        assert_eq!((f.rip, f.rsp), (0x1001, 0x7FF8));
        // REX.W pushfq is the same instruction, one byte longer.
        let mut f = frame();
        assert_eq!(plan(&mut f, &[0x48, 0x9C], |_, _| true), Plan::Emulated);
        assert_eq!(f.rip, 0x1002);
        // A push that would fault is left to the CPU.
        let mut f = frame();
        assert_eq!(
            plan(&mut f, &[0x9C], |_, _| false),
            Plan::Step { mask_if: false }
        );
        assert_eq!(f.rip, 0x1000);
    }

    #[test]
    fn plain_instructions_step_with_if_masked_if_touchers_do_not() {
        let mut f = frame();
        // lea rax, [rdi+1]
        assert_eq!(
            plan(&mut f, &[0x48, 0x8D, 0x47, 0x01], |_, _| true),
            Plan::Step { mask_if: true }
        );
        for bytes in [
            &[0x9D][..],
            &[0xCC],
            &[0xF4],
            &[0x48, 0xCF],
            &[0x0F, 0x05],
            &[0x0F, 0x01, 0xF8],
            &[0x66, 0x9C],
        ] {
            let mut f = frame();
            assert_eq!(
                plan(&mut f, bytes, |_, _| true),
                Plan::Step { mask_if: false },
                "{bytes:x?}"
            );
            assert_eq!(f.rip, 0x1000);
        }
        assert_eq!(
            plan(&mut f, &[], |_, _| true),
            Plan::Step { mask_if: false }
        );
        assert_eq!(
            plan(&mut f, &[0x66; 15], |_, _| true),
            Plan::Step { mask_if: false }
        );
    }
}
