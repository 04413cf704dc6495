//! Fault-safe access to kernel memory for the debugger and capture probes.
//!
//! Before touching an address, [`read`] and [`write`] check that it is
//! canonical and walk the live page tables (CR3) to prove every byte is
//! mapped (and, for writes, writable). An unmapped address is an error value,
//! never a page fault. Page-table frames are reached through the direct map
//! at [`phys_offset`] (0 = identity map, what the reference kernel uses).
//!
//! The walk itself is plain Rust over a "read a physical u64" function
//! ([`translate_with`]), so it is unit-tested on the host against
//! hand-built page tables.

use core::sync::atomic::{AtomicU64, Ordering};

/// Why an access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// Bits 63..47 are not all equal: no such address on x86_64.
    NonCanonical,
    /// Some page in the range is not present.
    Unmapped,
    /// Some page in the range is mapped read-only (e.g. kernel text: use the
    /// text-patching layer).
    ReadOnly,
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            MemError::NonCanonical => "address is not canonical",
            MemError::Unmapped => "address is not mapped",
            MemError::ReadOnly => "page is read-only",
        })
    }
}

/// Where a virtual address lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub phys: u64,
    pub writable: bool,
    /// Bytes from the address to the end of its page (4 KiB, 2 MiB or 1 GiB).
    pub remaining_in_page: u64,
}

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Virtual address where physical address 0 is mapped (0 = identity map).
pub fn phys_offset() -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed)
}

/// Tells the walker where the direct map of physical memory starts.
///
/// # Safety
/// All physical memory holding page tables must be mapped at `offset + phys`.
pub unsafe fn set_phys_offset(offset: u64) {
    PHYS_OFFSET.store(offset, Ordering::Relaxed);
}

/// `true` when bits 63..47 of `addr` are all equal.
pub fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_FFFF
}

/// Walks 4-level page tables rooted at physical `cr3` using `read_phys` to
/// load a page-table entry (physical address -> u64; `None` if unreadable).
pub fn translate_with(
    cr3: u64,
    addr: u64,
    read_phys: impl Fn(u64) -> Option<u64>,
) -> Result<Translation, MemError> {
    if !is_canonical(addr) {
        return Err(MemError::NonCanonical);
    }
    let mut table = cr3 & ADDR_MASK;
    let mut writable = true;
    // Levels: PML4 (shift 39), PDPT (30), PD (21), PT (12).
    for (level, shift) in [39u32, 30, 21, 12].into_iter().enumerate() {
        let index = (addr >> shift) & 0x1FF;
        let entry = read_phys(table + index * 8).ok_or(MemError::Unmapped)?;
        if entry & PRESENT == 0 {
            return Err(MemError::Unmapped);
        }
        writable &= entry & WRITABLE != 0;
        let page_size = 1u64 << shift;
        let is_leaf = shift == 12 || (level > 0 && entry & HUGE != 0);
        if is_leaf {
            let base = entry & ADDR_MASK & !(page_size - 1);
            let in_page = addr & (page_size - 1);
            return Ok(Translation {
                phys: base + in_page,
                writable,
                remaining_in_page: page_size - in_page,
            });
        }
        table = entry & ADDR_MASK;
    }
    Err(MemError::Unmapped)
}

fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects; kdbg runs at CPL 0.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    cr3
}

/// This CPU's page-table root (CR3), for a debugger that walks the page
/// tables itself.
pub fn cr3() -> u64 {
    read_cr3()
}

/// Translates `addr` through the live page tables.
pub fn translate(addr: u64) -> Result<Translation, MemError> {
    let off = phys_offset();
    translate_with(read_cr3(), addr, |phys| {
        let p = off.wrapping_add(phys) as *const u64;
        // SAFETY: page-table frames are mapped at `phys_offset + phys`
        // (contract of `set_phys_offset`); entries are 8-byte aligned.
        Some(unsafe { core::ptr::read_volatile(p) })
    })
}

/// Checks that `len` bytes from `addr` are mapped (and writable if asked),
/// page by page.
pub fn check_range(addr: u64, len: usize, need_write: bool) -> Result<(), MemError> {
    let mut cur = addr;
    let mut left = len as u64;
    while left > 0 {
        let t = translate(cur)?;
        if need_write && !t.writable {
            return Err(MemError::ReadOnly);
        }
        let step = t.remaining_in_page.min(left);
        left -= step;
        cur = cur.checked_add(step).ok_or(MemError::NonCanonical)?;
    }
    Ok(())
}

/// Copies kernel memory at `addr` into `buf`, or fails without touching
/// anything unmapped.
pub fn read(addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
    if buf.is_empty() {
        return Ok(());
    }
    check_range(addr, buf.len(), false)?;
    // SAFETY: every byte of the source range is mapped (checked above). The
    // ranges may overlap (gdb can read the stub's own buffer), hence `copy`.
    unsafe { core::ptr::copy(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
    Ok(())
}

/// Reads a little-endian u64 at `addr`.
pub fn read_u64(addr: u64) -> Result<u64, MemError> {
    let mut b = [0u8; 8];
    read(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Writes `data` to kernel memory at `addr`; refuses unmapped and read-only
/// pages (kernel text goes through the text-patching layer instead).
pub fn write(addr: u64, data: &[u8]) -> Result<(), MemError> {
    if data.is_empty() {
        return Ok(());
    }
    check_range(addr, data.len(), true)?;
    // SAFETY: every byte of the destination is mapped writable (checked
    // above); the caller (a debugger) accepts changing kernel data.
    unsafe { core::ptr::copy(data.as_ptr(), addr as *mut u8, data.len()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Physical memory as a map of 8-byte words.
    struct Phys(HashMap<u64, u64>);

    impl Phys {
        fn set(&mut self, table: u64, index: u64, entry: u64) {
            self.0.insert(table + index * 8, entry);
        }
        fn read(&self, p: u64) -> Option<u64> {
            Some(*self.0.get(&p).unwrap_or(&0))
        }
    }

    fn idx(addr: u64, shift: u32) -> u64 {
        (addr >> shift) & 0x1FF
    }

    #[test]
    fn walks_4k_2m_1g_pages() {
        let mut m = Phys(HashMap::new());
        let (pml4, pdpt, pd, pt) = (0x1000, 0x2000, 0x3000, 0x4000);
        // 4 KiB page: 0x40_0000_5000 -> phys 0x9000, read-only at the PT level.
        let a = 0x40_0000_5000u64;
        m.set(pml4, idx(a, 39), pdpt | 3);
        m.set(pdpt, idx(a, 30), pd | 3);
        m.set(pd, idx(a, 21), pt | 3);
        m.set(pt, idx(a, 12), 0x9000 | 1);
        let t = translate_with(pml4, a + 0x10, |p| m.read(p)).unwrap();
        assert_eq!(t.phys, 0x9010);
        assert!(!t.writable);
        assert_eq!(t.remaining_in_page, 0x1000 - 0x10);
        // Next page not present.
        assert_eq!(
            translate_with(pml4, a + 0x1000, |p| m.read(p)),
            Err(MemError::Unmapped)
        );
        // 2 MiB page in the same PD.
        let b = 0x40_0020_0000u64;
        m.set(pd, idx(b, 21), 0x60_0000 | HUGE | 3);
        let t = translate_with(pml4, b + 0x1234, |p| m.read(p)).unwrap();
        assert_eq!(t.phys, 0x60_1234);
        assert!(t.writable);
        assert_eq!(t.remaining_in_page, 0x20_0000 - 0x1234);
        // 1 GiB page.
        let c = 0x80_0000_0000u64;
        m.set(pml4, idx(c, 39), 0x5000 | 3);
        m.set(0x5000, idx(c, 30), 0x4000_0000 | HUGE | 3);
        let t = translate_with(pml4, c + 7, |p| m.read(p)).unwrap();
        assert_eq!(t.phys, 0x4000_0007);
    }

    #[test]
    fn non_canonical_is_refused() {
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(is_canonical(0x0000_7fff_ffff_ffff));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert_eq!(
            translate_with(0, 0xdead_beef_dead_beef, |_| Some(0)),
            Err(MemError::NonCanonical)
        );
        assert_eq!(translate_with(0, 0, |_| None), Err(MemError::Unmapped));
    }
}
