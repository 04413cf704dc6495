//! The register set gdb sees: `gdbstub_arch`'s x86_64 core + SSE registers
//! plus `fs_base`/`gs_base` (gdb's `org.gnu.gdb.i386.segments` feature),
//! described to gdb by `target.xml` (gdb's own 64bit-core, 64bit-sse and
//! 64bit-segments features, inlined). The `g` packet is the core set's
//! layout followed by fs_base and gs_base, 8 bytes each.

use core::num::NonZeroUsize;

use gdbstub::arch::{Arch, RegId, Registers};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::reg::id::X86_64CoreRegId;

/// Bytes of the core + SSE part of the `g` packet.
const CORE_BYTES: usize = 0x218;

/// kdbg's x86_64 for gdbstub.
pub enum KdbgX86_64 {}

impl Arch for KdbgX86_64 {
    type Usize = u64;
    type Registers = KdbgRegs;
    type RegId = KdbgRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(include_str!("target.xml"))
    }
}

/// All registers of one context.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KdbgRegs {
    pub core: X86_64CoreRegs,
    pub fs_base: u64,
    pub gs_base: u64,
}

impl Registers for KdbgRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for b in self.fs_base.to_le_bytes() {
            write_byte(Some(b));
        }
        for b in self.gs_base.to_le_bytes() {
            write_byte(Some(b));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let core = bytes.get(..CORE_BYTES).ok_or(())?;
        self.core.gdb_deserialize(core)?;
        let word = |off: usize| -> Option<u64> {
            let mut w = [0u8; 8];
            w.copy_from_slice(bytes.get(off..off + 8)?);
            Some(u64::from_le_bytes(w))
        };
        // Older clients without the segments feature send only the core part.
        if let (Some(fs), Some(gs)) = (word(CORE_BYTES), word(CORE_BYTES + 8)) {
            self.fs_base = fs;
            self.gs_base = gs;
        }
        Ok(())
    }
}

/// A register number gdb uses (`p`/`P` packets, stop replies).
#[derive(Debug, Clone, Copy)]
pub enum KdbgRegId {
    Core(X86_64CoreRegId),
    FsBase,
    GsBase,
}

impl RegId for KdbgRegId {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        match id {
            57 => Some((KdbgRegId::FsBase, NonZeroUsize::new(8))),
            58 => Some((KdbgRegId::GsBase, NonZeroUsize::new(8))),
            _ => X86_64CoreRegId::from_raw_id(id).map(|(r, sz)| (KdbgRegId::Core(r), sz)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_packet_round_trips_with_segment_bases() {
        let mut r = KdbgRegs::default();
        r.core.regs[0] = 0x1111;
        r.core.rip = 0x2222;
        r.core.xmm[15] = 0x3333;
        r.core.mxcsr = 0x1f80;
        r.fs_base = 0x4444;
        r.gs_base = 0x5555;
        let mut bytes = Vec::new();
        r.gdb_serialize(|b| bytes.push(b.unwrap()));
        assert_eq!(bytes.len(), CORE_BYTES + 16);
        let mut back = KdbgRegs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, r);
        let mut core_only = KdbgRegs::default();
        core_only.gdb_deserialize(&bytes[..CORE_BYTES]).unwrap();
        assert_eq!(core_only.core, r.core);
        assert!(KdbgRegs::default().gdb_deserialize(&bytes[..10]).is_err());
    }

    #[test]
    fn description_names_every_register_in_g_order() {
        let xml = KdbgX86_64::target_description_xml().unwrap();
        let names: Vec<&str> = xml
            .split("<reg name=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .collect();
        assert_eq!(names.len(), 59);
        assert_eq!(names[0], "rax");
        assert_eq!(names[16], "rip");
        assert_eq!(names[40], "xmm0");
        assert_eq!(names[56], "mxcsr");
        assert_eq!(&names[57..], &["fs_base", "gs_base"]);
        assert!(matches!(
            KdbgRegId::from_raw_id(57).unwrap().0,
            KdbgRegId::FsBase
        ));
        assert!(KdbgRegId::from_raw_id(59).is_none());
    }
}
