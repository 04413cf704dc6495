//! Call frame information (`.debug_frame`, `.eh_frame`): one unwinder step.

use std::cell::RefCell;

use gimli::{BaseAddresses, CfaRule, RegisterRule, UnwindSection};

use crate::elf::{Elf, Reader, State};
use crate::registers::{Register, Registers};
use crate::slide::Slide;

/// One FDE's address range and where it is.
struct FdeRef {
    start: u64,
    end: u64,
    offset: usize,
    eh: bool,
}

pub(crate) struct Cfi {
    debug_frame: gimli::DebugFrame<Reader>,
    eh_frame: gimli::EhFrame<Reader>,
    bases: BaseAddresses,
    fdes: Vec<FdeRef>,
    ctx: RefCell<Box<gimli::UnwindContext<usize>>>,
}

fn index<S: UnwindSection<Reader>>(
    section: &S,
    bases: &BaseAddresses,
    eh: bool,
    out: &mut Vec<FdeRef>,
) {
    let mut entries = section.entries(bases);
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(S::cie_from_offset)
        {
            out.push(FdeRef {
                start: fde.initial_address(),
                end: fde.end_address(),
                offset: fde.offset(),
                eh,
            });
        }
    }
}

impl Cfi {
    pub(crate) fn build(state: &State, slide: Slide) -> Cfi {
        let reader = |name: &str| {
            gimli::RelocateReader::new(
                gimli::EndianSlice::new(state.section_data(name), gimli::LittleEndian),
                slide,
            )
        };
        let mut debug_frame = gimli::DebugFrame::from(reader(".debug_frame"));
        debug_frame.set_address_size(8);
        let eh_frame = gimli::EhFrame::from(reader(".eh_frame"));
        let section_addr =
            |state: &State, name: &str| section_addr(state, name).map(|a| slide.to_runtime(a));
        let mut bases = BaseAddresses::default();
        if let Some(r) = section_addr(state, ".eh_frame") {
            bases = bases.set_eh_frame(r);
        }
        if let Some(r) = section_addr(state, ".eh_frame_hdr") {
            bases = bases.set_eh_frame_hdr(r);
        }
        if let Some(r) = section_addr(state, ".text") {
            bases = bases.set_text(r);
        }
        if let Some(r) = section_addr(state, ".got") {
            bases = bases.set_got(r);
        }
        let mut fdes = Vec::new();
        index(&debug_frame, &bases, false, &mut fdes);
        index(&eh_frame, &bases, true, &mut fdes);
        fdes.retain(|f| f.end > f.start);
        // .debug_frame first at equal starts (it is usually the more complete).
        fdes.sort_by_key(|f| (f.start, f.eh));
        Cfi {
            debug_frame,
            eh_frame,
            bases,
            fdes,
            ctx: RefCell::new(Box::new(gimli::UnwindContext::new())),
        }
    }

    fn find(&self, pc: u64) -> Option<&FdeRef> {
        let i = self.fdes.partition_point(|f| f.start <= pc);
        self.fdes[..i].iter().rev().take(8).find(|f| pc < f.end)
    }
}

fn section_addr(state: &State, name: &str) -> Option<u64> {
    use object::{Object, ObjectSection};
    state.object.section_by_name(name).map(|s| s.address())
}

/// The rules of one CFI row, as plain data.
struct Row {
    cfa: (Register, i64),
    rules: Vec<(Register, RegisterRule<usize>)>,
    ra_undefined: bool,
}

impl Elf {
    /// True if CFI covers `pc`.
    pub fn has_cfi(&self, pc: u64) -> bool {
        self.state.cfi().find(pc).is_some()
    }

    /// The CFA rule at `pc` in the innermost frame: the CFA is the value of
    /// the register plus the offset (`None`: no CFI, or an expression rule).
    /// For compiling conditions that address the frame at a breakpoint.
    pub fn cfa_rule(&self, pc: u64) -> Option<(Register, i64)> {
        let cfi = self.state.cfi();
        let fde = cfi.find(pc)?;
        row_for(cfi, fde, pc).map(|r| r.cfa)
    }

    /// One unwinder step: from the registers of a frame, compute its caller's.
    ///
    /// `regs` must hold at least rip and rsp (and whatever the CFA rule uses,
    /// usually rsp or rbp). `innermost` is true for the frame that was
    /// interrupted (rip is the faulting/trapping instruction); for callers
    /// (rip is a return address) it is false and the lookup uses `rip - 1`.
    /// `read_u64` reads 8 bytes of target memory.
    ///
    /// Returns the caller's registers (rip = return address, rsp = CFA,
    /// callee-saved registers restored, others unknown), or `None` when the
    /// frame is the outermost (no CFI for rip, or the return address rule is
    /// undefined, as at an entry point marked `.cfi_undefined rip`).
    pub fn unwind_step(
        &self,
        regs: &Registers,
        innermost: bool,
        read_u64: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> Option<Registers> {
        let cfi = self.state.cfi();
        let pc = regs.pc()?;
        let lookup = if innermost { pc } else { pc.checked_sub(1)? };
        let fde = cfi.find(lookup)?;
        let row = row_for(cfi, fde, lookup)?;
        if row.ra_undefined {
            return None;
        }
        let cfa = regs.get(row.cfa.0)?.checked_add_signed(row.cfa.1)?;
        let mut out = Registers::new();
        // Callee-saved registers keep their value unless a rule says otherwise.
        for r in [
            Register::RBX,
            Register::RBP,
            Register::R12,
            Register::R13,
            Register::R14,
            Register::R15,
        ] {
            out.set(r, regs.get(r));
        }
        out.set(Register::RSP, Some(cfa));
        let mut ra = None;
        for (reg, rule) in &row.rules {
            let value = match rule {
                RegisterRule::Undefined => None,
                RegisterRule::SameValue => regs.get(*reg),
                RegisterRule::Offset(o) => read_u64(cfa.checked_add_signed(*o)?),
                RegisterRule::ValOffset(o) => cfa.checked_add_signed(*o),
                RegisterRule::Register(r) => regs.get(Register(r.0)),
                RegisterRule::Constant(c) => Some(*c),
                _ => None,
            };
            if *reg == Register::RIP {
                ra = value;
            } else {
                out.set(*reg, value);
            }
        }
        // No rule for the return address: x86_64 keeps it just below the CFA.
        if !row.rules.iter().any(|(r, _)| *r == Register::RIP) {
            ra = read_u64(cfa.checked_sub(8)?);
        }
        out.set(Register::RIP, Some(ra?));
        Some(out)
    }
}

fn row_for(cfi: &Cfi, fde: &FdeRef, pc: u64) -> Option<Row> {
    let mut ctx = cfi.ctx.borrow_mut();
    let row = if fde.eh {
        let f = cfi
            .eh_frame
            .fde_from_offset(
                &cfi.bases,
                gimli::EhFrameOffset(fde.offset),
                gimli::EhFrame::cie_from_offset,
            )
            .ok()?;
        f.unwind_info_for_address(&cfi.eh_frame, &cfi.bases, &mut ctx, pc)
            .ok()?
    } else {
        let f = cfi
            .debug_frame
            .fde_from_offset(
                &cfi.bases,
                gimli::DebugFrameOffset(fde.offset),
                gimli::DebugFrame::cie_from_offset,
            )
            .ok()?;
        f.unwind_info_for_address(&cfi.debug_frame, &cfi.bases, &mut ctx, pc)
            .ok()?
    };
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => (Register(register.0), *offset),
        CfaRule::Expression(_) => return None,
    };
    let rules: Vec<(Register, RegisterRule<usize>)> = row
        .registers()
        .map(|(r, rule)| (Register(r.0), rule.clone()))
        .collect();
    let ra_undefined = rules
        .iter()
        .any(|(r, rule)| *r == Register::RIP && matches!(rule, RegisterRule::Undefined));
    Some(Row {
        cfa,
        rules,
        ra_undefined,
    })
}
