//! Everything this kernel does to host kdbg (docs/EMBEDDING.md shows it).
use arch::trap::{BREAKPOINT, DEBUG, IRQ_BASE, NMI};
use arch::{TrapFrame, uart::COM2_IRQ};
unsafe extern "C" {
    static __text_start: u8; // linker.ld: kernel text is __text_start..__text_end,
    static __noprobe_end: u8; // of which __noprobe_end..__text_end may be probed
    static __text_end: u8;
}
#[unsafe(link_section = ".kallsyms")] // filled by xtask after linking
static KALLSYMS: probes::kallsyms::Area<{ 256 * 1024 }> = probes::kallsyms::Area::new();

pub struct Tiny;
impl stub::Host for Tiny {
    fn is_text(&self, addr: u64) -> bool {
        (&raw const __text_start as u64..&raw const __text_end as u64).contains(&addr)
    }
    fn is_blacklisted(&self, addr: u64) -> bool {
        !(&raw const __noprobe_end as u64..&raw const __text_end as u64).contains(&addr)
    }
    fn symbol_at(&self, addr: u64) -> Option<stub::Symbol> {
        KALLSYMS.symbol_at(addr)
    }
    fn symbol_named(&self, name: &str) -> Option<stub::Symbol> {
        KALLSYMS.symbol_named(name)
    }
}

/// At boot, after the trap handler and the PICs are set up.
pub fn init() {
    let _ = stub::init(&Tiny); // the probe core, and the stub on COM2
    arch::pic::unmask(COM2_IRQ);
}

/// The kernel's trap handler calls this first: `true` if it was kdbg's.
#[noprobe::noprobe]
pub fn on_trap(frame: &mut TrapFrame) -> bool {
    match frame.vector {
        BREAKPOINT => probes::hooks::breakpoint(frame) || stub::hooks::breakpoint(frame),
        DEBUG => probes::hooks::debug(frame) || stub::hooks::debug(frame),
        NMI => stub::hooks::nmi(frame),
        v if v == IRQ_BASE + u64::from(COM2_IRQ) => {
            stub::hooks::serial_irq(frame);
            arch::pic::end_of_interrupt(COM2_IRQ);
            true
        }
        v if v < 32 => probes::hooks::fault(frame),
        _ => false,
    }
}
