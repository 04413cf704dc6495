//! The stopped context's registers as gdb sees them: [`TrapFrame`] <->
//! `gdbstub_arch`'s `X86_64CoreRegs` (GPRs, rip, eflags, segments, x87 and
//! SSE from the FXSAVE area).
//!
//! FXSAVE64 layout (Intel SDM Vol. 1, 10.5.1): FCW 0, FSW 2, abridged FTW 4,
//! FOP 6, FIP 8, FDP 16, MXCSR 24, ST0-7 at 32 + 16*i (10 bytes used),
//! XMM0-15 at 160 + 16*i.

use arch::TrapFrame;
use arch::frame::FxSave;
use gdbstub_arch::x86::reg::X86_64CoreRegs;

fn le<const N: usize>(fx: &FxSave, off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = fx.0.get(off..off + N) {
        out.copy_from_slice(src);
    }
    out
}

fn put(fx: &mut FxSave, off: usize, bytes: &[u8]) {
    if let Some(dst) = fx.0.get_mut(off..off + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Expands the abridged (1 bit per register) FTW to the full 2-bit form gdb
/// shows: 0b11 (empty) for clear bits, 0b00 (valid) otherwise.
fn full_ftw(abridged: u8) -> u32 {
    (0..8).fold(0u32, |acc, i| {
        if abridged & (1 << i) == 0 {
            acc | (0b11 << (2 * i))
        } else {
            acc
        }
    })
}

fn abridged_ftw(full: u32) -> u8 {
    (0..8).fold(0u8, |acc, i| {
        if (full >> (2 * i)) & 0b11 != 0b11 {
            acc | (1 << i)
        } else {
            acc
        }
    })
}

/// Reads a trap frame into gdb's register set.
pub fn from_frame(f: &TrapFrame, regs: &mut X86_64CoreRegs) {
    regs.regs = [
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp, f.r8, f.r9, f.r10, f.r11, f.r12,
        f.r13, f.r14, f.r15,
    ];
    regs.rip = f.rip;
    regs.eflags = f.rflags as u32;
    regs.segments.cs = f.cs as u32;
    regs.segments.ss = f.ss as u32;
    // Long mode kernel: the entry stubs do not save the data segment
    // selectors and nothing in the kernel changes them after boot, so the
    // live ones are the interrupted context's.
    let [ds, es, fs, gs] = data_selectors();
    regs.segments.ds = u32::from(ds);
    regs.segments.es = u32::from(es);
    regs.segments.fs = u32::from(fs);
    regs.segments.gs = u32::from(gs);
    let fx = &f.fxsave;
    regs.fpu.fctrl = u32::from(u16::from_le_bytes(le(fx, 0)));
    regs.fpu.fstat = u32::from(u16::from_le_bytes(le(fx, 2)));
    regs.fpu.ftag = full_ftw(le::<1>(fx, 4)[0]);
    regs.fpu.fop = u32::from(u16::from_le_bytes(le(fx, 6)));
    let fip = u64::from_le_bytes(le(fx, 8));
    let fdp = u64::from_le_bytes(le(fx, 16));
    regs.fpu.fioff = fip as u32;
    regs.fpu.fiseg = (fip >> 32) as u32;
    regs.fpu.fooff = fdp as u32;
    regs.fpu.foseg = (fdp >> 32) as u32;
    for (i, st) in regs.st.iter_mut().enumerate() {
        *st = le(fx, 32 + 16 * i);
    }
    for (i, x) in regs.xmm.iter_mut().enumerate() {
        *x = u128::from_le_bytes(le(fx, 160 + 16 * i));
    }
    regs.mxcsr = u32::from_le_bytes(le(fx, 24));
}

/// Writes gdb's register set back into a trap frame. cs/ss are kept (a
/// debugger changing them would crash the kernel on `iretq`); rflags keeps
/// the reserved bit 1 set.
pub fn to_frame(regs: &X86_64CoreRegs, f: &mut TrapFrame) {
    let r = &regs.regs;
    f.rax = r[0];
    f.rbx = r[1];
    f.rcx = r[2];
    f.rdx = r[3];
    f.rsi = r[4];
    f.rdi = r[5];
    f.rbp = r[6];
    f.rsp = r[7];
    f.r8 = r[8];
    f.r9 = r[9];
    f.r10 = r[10];
    f.r11 = r[11];
    f.r12 = r[12];
    f.r13 = r[13];
    f.r14 = r[14];
    f.r15 = r[15];
    f.rip = regs.rip;
    f.rflags = u64::from(regs.eflags) | 0x2;
    let fx = &mut f.fxsave;
    put(fx, 0, &(regs.fpu.fctrl as u16).to_le_bytes());
    put(fx, 2, &(regs.fpu.fstat as u16).to_le_bytes());
    put(fx, 4, &[abridged_ftw(regs.fpu.ftag)]);
    put(fx, 6, &(regs.fpu.fop as u16).to_le_bytes());
    let fip = u64::from(regs.fpu.fioff) | (u64::from(regs.fpu.fiseg) << 32);
    let fdp = u64::from(regs.fpu.fooff) | (u64::from(regs.fpu.foseg) << 32);
    put(fx, 8, &fip.to_le_bytes());
    put(fx, 16, &fdp.to_le_bytes());
    for (i, st) in regs.st.iter().enumerate() {
        put(fx, 32 + 16 * i, st);
    }
    for (i, x) in regs.xmm.iter().enumerate() {
        put(fx, 160 + 16 * i, &x.to_le_bytes());
    }
    // MXCSR bits above 15 are reserved: writing them makes fxrstor #GP.
    put(fx, 24, &(regs.mxcsr & 0xFFFF).to_le_bytes());
}

/// The live ds, es, fs, gs selectors.
pub fn data_selectors() -> [u16; 4] {
    arch::cpu::data_selectors()
}

/// This CPU's FS base.
pub fn fs_base() -> u64 {
    arch::cpu::fs_base()
}

/// This CPU's GS base.
pub fn gs_base() -> u64 {
    arch::cpu::gs_base()
}

/// Applies gdb's fs_base/gs_base when they changed and are canonical (a
/// non-canonical base is left alone: it would #GP).
pub fn set_segment_bases(fs: u64, gs: u64) {
    if fs != fs_base() {
        arch::cpu::set_fs_base(fs);
    }
    if gs != gs_base() {
        arch::cpu::set_gs_base(gs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        let mut f = TrapFrame {
            rax: 1,
            rdi: 0x11,
            r15: 15,
            rip: 0xffff_ffff_8000_1000,
            rflags: 0x246,
            cs: 8,
            ss: 0x10,
            rsp: 0x8000,
            ..Default::default()
        };
        f.fxsave.0[160..176].copy_from_slice(&[7; 16]);
        f.fxsave.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        f.fxsave.0[4] = 0x01;
        let mut regs = X86_64CoreRegs::default();
        from_frame(&f, &mut regs);
        assert_eq!(regs.regs[0], 1);
        assert_eq!(regs.regs[5], 0x11);
        assert_eq!(regs.regs[7], 0x8000);
        assert_eq!(regs.xmm[0], u128::from_le_bytes([7; 16]));
        assert_eq!(regs.mxcsr, 0x1f80);
        assert_eq!(regs.fpu.ftag, 0xfffc);
        let mut g = TrapFrame {
            cs: 8,
            ss: 0x10,
            ..Default::default()
        };
        to_frame(&regs, &mut g);
        assert_eq!(g.rax, f.rax);
        assert_eq!(g.rdi, f.rdi);
        assert_eq!(g.rip, f.rip);
        assert_eq!(g.rflags, f.rflags);
        assert_eq!(g.fxsave.0[..], f.fxsave.0[..]);
    }
}
