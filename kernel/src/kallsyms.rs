//! kallsyms: the kernel's own symbol table (every function's name, start and
//! size; the format is `probes::kallsyms`), patched into the `.kallsyms`
//! section by xtask after linking (no relink: addresses do not move). Turns
//! addresses into `function+0xoff`.

use core::fmt;
use noprobe::noprobe;

pub use probes::kallsyms::{Symbol, Table};

/// Capacity of the `.kallsyms` section. xtask refuses to build when the table does not fit.
pub const AREA_SIZE: usize = 1024 * 1024;

/// The reserved area. Never read through this static (the compiler would see
/// zeros); read through the linker symbols instead.
#[used]
#[unsafe(link_section = ".kallsyms")]
static KALLSYMS_AREA: [u8; AREA_SIZE] = [0; AREA_SIZE];

unsafe extern "C" {
    static __kallsyms_start: u8;
    static __kallsyms_end: u8;
}

/// The table patched into this image (`None` if xtask did not fill it in).
#[noprobe]
pub fn table() -> Option<Table<'static>> {
    let start = core::ptr::addr_of!(__kallsyms_start);
    let end = core::ptr::addr_of!(__kallsyms_end);
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: the linker script brackets the `.kallsyms` section, which is
    // read-only after boot, with these two symbols.
    let blob = unsafe { core::slice::from_raw_parts(start, len) };
    Table::parse(blob)
}

/// The function containing `addr`.
#[noprobe]
pub fn lookup(addr: u64) -> Option<Symbol<'static>> {
    table()?.lookup(addr)
}

/// The function named exactly `name` (demangled Rust path or C name).
#[noprobe]
pub fn find(name: &str) -> Option<Symbol<'static>> {
    table()?.find(name)
}

/// Formats an address as `function+0xoff`, or `0xADDR` when unknown.
pub struct Located(pub u64);

impl fmt::Display for Located {
    #[noprobe]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match lookup(self.0) {
            Some(sym) => write!(f, "{}+{:#x}", sym.name, self.0 - sym.start),
            None => write!(f, "{:#x}", self.0),
        }
    }
}
