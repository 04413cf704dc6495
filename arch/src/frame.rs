//! The trap frame: the complete register state saved by every entry stub.
//!
//! The layout is fixed: the entry stubs in `trap.rs` build it on the stack in
//! exactly this order, and the probe core, the GDB stub and the kernel all see
//! the interrupted context through `&mut TrapFrame`. Writing a field changes
//! the register the interrupted code gets back on return.

/// The FXSAVE64 area: x87, MXCSR, ST0-7 and XMM0-15 (Intel SDM Vol. 1, 10.5.1).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct FxSave(pub [u8; 512]);

impl FxSave {
    /// XMM register `n` (0..16) as little-endian bytes.
    pub fn xmm(&self, n: usize) -> Option<[u8; 16]> {
        let off = 160 + n.checked_mul(16)?;
        let src = self.0.get(off..off + 16)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(src);
        Some(out)
    }

    /// MXCSR.
    pub fn mxcsr(&self) -> u32 {
        u32::from_le_bytes([self.0[24], self.0[25], self.0[26], self.0[27]])
    }
}

impl Default for FxSave {
    fn default() -> Self {
        FxSave([0; 512])
    }
}

/// Register state of an interrupted context. `#[repr(C)]`, 16-byte aligned;
/// `fxsave` first so the asm can `fxsave64` at the frame's base.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
pub struct TrapFrame {
    pub fxsave: FxSave,
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Interrupt vector number (pushed by the entry stub).
    pub vector: u64,
    /// CPU error code, or 0 for vectors without one.
    pub error_code: u64,
    // Hardware interrupt frame (always 5 words in long mode).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// RFLAGS bits the probe core and the stub care about.
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const RF: u64 = 1 << 16;
}

impl TrapFrame {
    /// The SysV argument registers in order (rdi, rsi, rdx, rcx, r8, r9).
    pub fn args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.rcx, self.r8, self.r9]
    }

    /// Interrupts were enabled in the interrupted context.
    pub fn interrupts_enabled(&self) -> bool {
        self.rflags & rflags::IF != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_entry_stubs() {
        assert_eq!(core::mem::size_of::<FxSave>(), 512);
        assert_eq!(core::mem::offset_of!(TrapFrame, r15), 512);
        assert_eq!(core::mem::offset_of!(TrapFrame, rax), 512 + 14 * 8);
        assert_eq!(core::mem::offset_of!(TrapFrame, vector), 512 + 15 * 8);
        assert_eq!(core::mem::offset_of!(TrapFrame, rip), 512 + 17 * 8);
        assert_eq!(core::mem::offset_of!(TrapFrame, ss), 512 + 21 * 8);
        assert_eq!(core::mem::size_of::<TrapFrame>(), 512 + 22 * 8);
    }
}
