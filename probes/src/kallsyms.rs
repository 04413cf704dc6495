//! kallsyms: a symbol table inside the kernel image (every function's
//! name, start and size), laid out after linking by a build step
//! (`xtask/src/kallsyms.rs` fills the `.kallsyms` section in place: no
//! relink, no address moves) and read here. A kernel that has no symbol
//! table of its own answers [`crate::Host::symbol_at`] and
//! [`crate::Host::symbol_named`] with an [`Area`] (docs/EMBEDDING.md).
//!
//! Layout (little-endian):
//! ```text
//! header  (HEADER_LEN bytes)
//!   0  magic    [u8; 8] = MAGIC
//!   8  version  u32     = VERSION
//!  12  count    u32     number of entries
//!  16  names    u32     byte offset of the name pool from the blob start
//!  20  names_len u32
//!  24  total    u32     bytes used by the blob
//!  28  reserved u32
//! entries (count x ENTRY_LEN, sorted by start address, ascending)
//!   0  start    u64
//!   8  size     u32
//!  12  name_off u32     offset into the name pool
//!  16  name_len u32
//!  20  reserved u32
//! name pool: UTF-8 names (demangled Rust without hash, or plain C names)
//! ```
//! An area without the magic (nothing patched in) parses as "no table".

use core::cell::UnsafeCell;

/// First bytes of a valid blob.
pub const MAGIC: [u8; 8] = *b"KDBGSYMS";
/// Format version.
pub const VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 32;
/// Entry size in bytes.
pub const ENTRY_LEN: usize = 24;

/// One function: name, start address and size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    pub name: &'a str,
    pub start: u64,
    pub size: u64,
}

impl Symbol<'_> {
    /// `addr` lies inside the function (a zero-sized symbol contains only its start).
    pub fn contains(&self, addr: u64) -> bool {
        addr == self.start || (addr > self.start && addr - self.start < self.size)
    }
}

/// A parsed view of a blob.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    entries: &'a [u8],
    names: &'a [u8],
    count: usize,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let lo = u32_at(b, off)?;
    let hi = u32_at(b, off.checked_add(4)?)?;
    Some(u64::from(lo) | (u64::from(hi) << 32))
}

impl<'a> Table<'a> {
    /// Parses `blob`; `None` when it holds no valid table.
    pub fn parse(blob: &'a [u8]) -> Option<Table<'a>> {
        if blob.get(..8)? != MAGIC || u32_at(blob, 8)? != VERSION {
            return None;
        }
        let count = u32_at(blob, 12)? as usize;
        let names_off = u32_at(blob, 16)? as usize;
        let names_len = u32_at(blob, 20)? as usize;
        let entries =
            blob.get(HEADER_LEN..HEADER_LEN.checked_add(count.checked_mul(ENTRY_LEN)?)?)?;
        let names = blob.get(names_off..names_off.checked_add(names_len)?)?;
        Some(Table {
            entries,
            names,
            count,
        })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No symbols at all.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Symbol `i` in address order.
    pub fn get(&self, i: usize) -> Option<Symbol<'a>> {
        let off = i.checked_mul(ENTRY_LEN)?;
        let start = u64_at(self.entries, off)?;
        let size = u32_at(self.entries, off.saturating_add(8))?;
        let name_off = u32_at(self.entries, off.saturating_add(12))? as usize;
        let name_len = u32_at(self.entries, off.saturating_add(16))? as usize;
        let name = self.names.get(name_off..name_off.checked_add(name_len)?)?;
        let name = core::str::from_utf8(name).ok()?;
        Some(Symbol {
            name,
            start,
            size: u64::from(size),
        })
    }

    /// All symbols in address order.
    pub fn iter(&self) -> impl Iterator<Item = Symbol<'a>> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }

    /// The function containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<Symbol<'a>> {
        // Index of the first entry with start > addr.
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid)?.start <= addr {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // Walk back over entries starting at or below addr (aliases, nested sizes).
        let mut i = lo;
        while i > 0 {
            i -= 1;
            let sym = self.get(i)?;
            if sym.contains(addr) {
                return Some(sym);
            }
            if addr - sym.start > 1 << 20 {
                break;
            }
        }
        None
    }

    /// The first function named exactly `name`.
    pub fn find(&self, name: &str) -> Option<Symbol<'a>> {
        self.iter().find(|s| s.name == name)
    }
}

/// Room for the table in the kernel image: a `static` in the `.kallsyms`
/// section (`#[unsafe(link_section = ".kallsyms")]`), which the build step
/// fills after linking. Until then it holds no table (and is not all
/// zeros, so it occupies file bytes the build step can patch).
#[repr(transparent)]
pub struct Area<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the area is written only in the image file, before the kernel
// runs; at run time it is only read.
unsafe impl<const N: usize> Sync for Area<N> {}

impl<const N: usize> Area<N> {
    /// An unfilled area of `N` bytes.
    pub const fn new() -> Self {
        let mut bytes = [0u8; N];
        let mut i = 0;
        while i < N {
            // Not the magic: no table until the build step writes one.
            bytes[i] = 0xFF;
            i += 1;
        }
        Area(UnsafeCell::new(bytes))
    }

    /// The table the build step wrote (`None` when it did not).
    pub fn table(&'static self) -> Option<Table<'static>> {
        // SAFETY: nobody writes the area at run time (see the Sync impl);
        // the UnsafeCell keeps the compiler from assuming its initial bytes.
        Table::parse(unsafe { &*self.0.get() })
    }

    /// The function containing `addr`, as the probe core wants it.
    pub fn symbol_at(&'static self, addr: u64) -> Option<crate::Symbol> {
        self.table()?.lookup(addr).map(Symbol::host)
    }

    /// The function named exactly `name`, as the probe core wants it.
    pub fn symbol_named(&'static self, name: &str) -> Option<crate::Symbol> {
        self.table()?.find(name).map(Symbol::host)
    }
}

impl<const N: usize> Default for Area<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbol<'static> {
    /// As [`crate::Symbol`] (what [`crate::Host`] returns).
    pub fn host(self) -> crate::Symbol {
        crate::Symbol {
            start: self.start,
            size: self.size,
            name: self.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static UNFILLED: Area<64> = Area::new();

    #[test]
    fn an_unfilled_area_holds_no_table() {
        assert!(UNFILLED.table().is_none());
        assert!(UNFILLED.symbol_at(0x1000).is_none());
        assert!(UNFILLED.symbol_named("tick").is_none());
    }
}
