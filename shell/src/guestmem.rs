//! Guest RAM through a shared mapping (issue 17, `kdbg --memory FILE`).
//!
//! Under QEMU, guest RAM can be a file (`-object
//! memory-backend-file,...,share=on -machine memory-backend=mem`); byte
//! `P` of the file is guest physical address `P` (the `pc` machine's RAM
//! below 4 GiB, which is all of it up to ~3 GiB). The shell maps the file
//! and reads guest memory without the stub: it translates a virtual
//! address by walking the guest's 4-level page tables itself (CR3 and the
//! RAM range come from the stub's `monitor shm` row), then copies from the
//! mapping. The kernel keeps running; nothing crosses the UART.
//!
//! What stays with the stub: writes (text patching is coordinated there),
//! physical addresses outside the RAM range the stub reported (device
//! memory, the legacy hole at 640 KiB-1 MiB), and reads whose bytes the
//! stub would show differently: an int3 byte (0xcc, the probe core may have
//! patched it: the stub shows the original byte) or a word equal to the
//! kretprobe trampoline (the stub shows the real return address). Such a
//! page is read through the stub instead, so both paths return the same
//! bytes.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

/// A page-table entry's bits.
const PRESENT: u64 = 1 << 0;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The file mapped shared, read-write (the event consumer publishes its
/// position through it).
pub struct Mapping {
    base: *mut u8,
    len: usize,
    path: PathBuf,
}

// SAFETY: the mapping is plain shared memory that lives until drop; reads
// and writes go through raw pointers with explicit atomics where the guest
// writes concurrently.
unsafe impl Send for Mapping {}
// SAFETY: as above; no interior state besides the mapped bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `path` (a QEMU `memory-backend-file` with `share=on`).
    pub fn open(path: &Path) -> Result<Mapping> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| {
                format!(
                    "--memory {}: cannot open the guest RAM file",
                    path.display()
                )
            })?;
        let len = usize::try_from(f.metadata()?.len()).unwrap_or(0);
        if len < 1 << 20 {
            bail!(
                "--memory {}: {len} bytes is not guest RAM (QEMU's memory-backend-file with share=on makes it the size of -m)",
                path.display()
            );
        }
        // SAFETY: a fresh shared mapping of an open file descriptor; the
        // kernel picks the address. The file stays mapped after `f` closes.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "--memory {}: mmap failed: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Mapping {
            base: p.cast(),
            len,
            path: path.to_path_buf(),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies physical `[phys, phys + out.len())` into `out`; `false` when
    /// it is not inside the file.
    pub fn read_phys(&self, phys: u64, out: &mut [u8]) -> bool {
        let Some(end) = phys.checked_add(out.len() as u64) else {
            return false;
        };
        if end > self.len as u64 {
            return false;
        }
        // SAFETY: [phys, end) lies inside the mapping (checked above). The
        // guest may write these bytes concurrently: a racy copy of plain
        // bytes, which is what any debugger's read of a running kernel is.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(phys as usize), out.as_mut_ptr(), out.len())
        };
        true
    }

    /// The 8-byte-aligned word at physical `phys` as an atomic (for
    /// positions the guest and the shell hand over).
    pub fn atomic_u64(&self, phys: u64) -> Option<&AtomicU64> {
        if !phys.is_multiple_of(8) || phys.checked_add(8)? > self.len as u64 {
            return None;
        }
        // SAFETY: aligned, inside the mapping, which outlives `&self`;
        // AtomicU64 has the layout of u64.
        Some(unsafe { &*self.base.add(phys as usize).cast::<AtomicU64>() })
    }

    /// A little-endian u64 at physical `phys` (not necessarily aligned).
    pub fn u64_at(&self, phys: u64) -> Option<u64> {
        if let Some(a) = self.atomic_u64(phys) {
            return Some(a.load(Ordering::Acquire));
        }
        let mut b = [0u8; 8];
        self.read_phys(phys, &mut b).then(|| u64::from_le_bytes(b))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// Why a virtual address has no bytes in the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Not canonical, or some level of the walk is not present: the stub
    /// answers the same address with an error.
    Unmapped,
    /// Mapped, but not to RAM the shell may read (device memory, the
    /// legacy hole, beyond the file): ask the stub.
    NotRam,
}

/// `true` when bits 63..47 of `addr` are all equal.
pub fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_FFFF
}

/// Walks 4-level page tables rooted at physical `cr3` (4 KiB, 2 MiB and
/// 1 GiB pages): the physical address of `addr` and the bytes left in its
/// page. `read_phys` loads an entry.
pub fn translate(
    cr3: u64,
    addr: u64,
    read_phys: impl Fn(u64) -> Option<u64>,
) -> Result<(u64, u64), Miss> {
    if !is_canonical(addr) {
        return Err(Miss::Unmapped);
    }
    let mut table = cr3 & ADDR_MASK;
    for (level, shift) in [39u32, 30, 21, 12].into_iter().enumerate() {
        let index = (addr >> shift) & 0x1FF;
        let entry = read_phys(table + index * 8).ok_or(Miss::NotRam)?;
        if entry & PRESENT == 0 {
            return Err(Miss::Unmapped);
        }
        let page = 1u64 << shift;
        if shift == 12 || (level > 0 && entry & HUGE != 0) {
            let base = entry & ADDR_MASK & !(page - 1);
            let off = addr & (page - 1);
            return Ok((base + off, page - off));
        }
        table = entry & ADDR_MASK;
    }
    Err(Miss::Unmapped)
}

/// What the stub reported about the machine (`monitor shm`).
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cr3: u64,
    /// Physical RAM the stub agrees the shell reads from the file:
    /// `[0, low_end)` and `[ram_start, ram_end)`.
    pub low_end: u64,
    pub ram_start: u64,
    pub ram_end: u64,
    /// The kretprobe trampoline (0: none).
    pub trampoline: u64,
}

/// Guest memory through the mapping, once the stub said where things are.
pub struct GuestMem {
    pub map: std::sync::Arc<Mapping>,
    pub machine: Machine,
    /// Bytes and reads served from the mapping and through the stub
    /// (fallbacks), for `info memory-channel` and the tests.
    pub mapped_reads: AtomicU64,
    pub stub_reads: AtomicU64,
}

/// Reads `buf.len()` bytes at an address through the stub; `Err(addr)`
/// when the stub refused.
pub type StubRead<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), u64> + 'a;

/// One piece of a read: from the mapping, or to ask the stub.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Mapped,
    Stub,
}

impl GuestMem {
    pub fn new(map: std::sync::Arc<Mapping>, machine: Machine) -> GuestMem {
        GuestMem {
            map,
            machine,
            mapped_reads: AtomicU64::new(0),
            stub_reads: AtomicU64::new(0),
        }
    }

    fn is_ram(&self, phys: u64, len: u64) -> bool {
        let m = &self.machine;
        let Some(end) = phys.checked_add(len) else {
            return false;
        };
        let inside = (end <= m.low_end) || (phys >= m.ram_start && end <= m.ram_end);
        inside && end <= self.map.len() as u64
    }

    /// Physical address of virtual `addr` in readable RAM, with the bytes
    /// left in its page.
    pub fn phys_of(&self, addr: u64) -> Result<(u64, u64), Miss> {
        let (p, left) = translate(self.machine.cr3, addr, |pa| {
            if self.is_ram(pa, 8) {
                self.map.u64_at(pa)
            } else {
                None
            }
        })?;
        if !self.is_ram(p, 1) {
            return Err(Miss::NotRam);
        }
        Ok((p, left))
    }

    /// Reads `out.len()` bytes at virtual `addr`, page by page. Each page
    /// is read from the mapping or, when `stub` must answer it (see the
    /// module doc), through `stub(addr, buf)`. An unmapped page is
    /// `Err(address)` of its first byte.
    pub fn read(&self, addr: u64, out: &mut [u8], stub: &mut StubRead<'_>) -> Result<(), u64> {
        let mut done = 0usize;
        // One walk per page of the guest's (a 2 MiB page serves 512
        // pieces); `(phys, bytes left in that page)` of the current one.
        let mut at: Option<(u64, u64)> = None;
        while done < out.len() {
            let a = addr.wrapping_add(done as u64);
            let in_piece = (0x1000 - (a & 0xFFF)) as usize;
            let n = in_piece.min(out.len() - done);
            let chunk = &mut out[done..done + n];
            let phys = match at {
                Some((p, left)) if left >= n as u64 => Ok(p),
                _ => self.phys_of(a).map(|(p, left)| {
                    at = Some((p, left));
                    p
                }),
            };
            let piece = phys.and_then(|p| self.piece(a, p, chunk));
            match piece {
                Ok(Piece::Mapped) => {
                    self.mapped_reads.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Piece::Stub) | Err(Miss::NotRam) => {
                    self.stub_reads.fetch_add(1, Ordering::Relaxed);
                    stub(a, chunk)?;
                }
                Err(Miss::Unmapped) => return Err(a),
            }
            if let Some((p, left)) = at {
                at = Some((p + n as u64, left - (n as u64).min(left)));
            }
            done += n;
        }
        Ok(())
    }

    /// Reads one piece (inside one 4 KiB page, at physical `p`) from the
    /// mapping; says whether the stub must answer it instead.
    fn piece(&self, a: u64, p: u64, chunk: &mut [u8]) -> Result<Piece, Miss> {
        if !self.is_ram(p, chunk.len() as u64) || !self.map.read_phys(p, chunk) {
            return Err(Miss::NotRam);
        }
        Ok(if needs_stub(a, chunk, self.machine.trampoline) {
            Piece::Stub
        } else {
            Piece::Mapped
        })
    }
}

/// Does `chunk` (read at virtual `a`) hold a byte the stub shows
/// differently: an 0xcc (a possible int3 of kdbg's), or an aligned word
/// equal to the kretprobe trampoline `tramp` (0: none)? Byte searches go
/// through the standard library's `memchr` (fast even in a debug build);
/// words are compared only when the trampoline's low byte occurs.
pub fn needs_stub(a: u64, chunk: &[u8], tramp: u64) -> bool {
    if chunk.contains(&0xcc) {
        return true;
    }
    if tramp == 0 || !chunk.contains(&(tramp as u8)) {
        return false;
    }
    let head = (((8 - (a % 8)) % 8) as usize).min(chunk.len());
    chunk[head..].chunks_exact(8).any(|w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_le_bytes(b) == tramp
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn idx(addr: u64, shift: u32) -> u64 {
        (addr >> shift) & 0x1FF
    }

    #[test]
    fn stub_bytes_are_found_at_any_alignment() {
        let tramp = 0x1122_3344_5566_7788u64;
        for len in [0usize, 1, 7, 8, 9, 64, 4096] {
            for a in 0..9u64 {
                let clean = vec![0x5au8; len];
                assert!(!needs_stub(a, &clean, tramp), "{a} {len}");
                for at in [0, len / 2, len.saturating_sub(1)] {
                    if len == 0 {
                        continue;
                    }
                    let mut c = clean.clone();
                    c[at] = 0xcc;
                    assert!(needs_stub(a, &c, tramp), "0xcc at {at} of {len} from {a}");
                }
                // An aligned trampoline word is found; an unaligned one is not.
                let first = ((8 - a % 8) % 8) as usize;
                if first + 8 <= len {
                    let mut c = clean.clone();
                    c[first..first + 8].copy_from_slice(&tramp.to_le_bytes());
                    assert!(needs_stub(a, &c, tramp));
                    assert!(!needs_stub(a, &c, 0));
                }
            }
        }
    }

    #[test]
    fn walks_4k_2m_1g_pages_and_refuses_holes() {
        let mut m: HashMap<u64, u64> = HashMap::new();
        let (pml4, pdpt, pd, pt) = (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64);
        let a4k = 0x0000_0000_0040_1234u64;
        let a2m = 0x0000_0000_0060_0010u64;
        let a1g = 0x0000_0000_8000_0020u64;
        m.insert(pml4 + idx(a4k, 39) * 8, pdpt | 3);
        m.insert(pdpt + idx(a4k, 30) * 8, pd | 3);
        m.insert(pd + idx(a4k, 21) * 8, pt | 3);
        m.insert(pt + idx(a4k, 12) * 8, 0x9000 | 3);
        m.insert(pd + idx(a2m, 21) * 8, 0x20_0000 | 3 | HUGE);
        m.insert(pdpt + idx(a1g, 30) * 8, 0x4000_0000 | 3 | HUGE);
        let rd = |p: u64| Some(*m.get(&p).unwrap_or(&0));
        assert_eq!(translate(pml4, a4k, rd), Ok((0x9234, 0x1000 - 0x234)));
        assert_eq!(translate(pml4, a2m, rd), Ok((0x20_0010, 0x20_0000 - 0x10)));
        assert_eq!(
            translate(pml4, a1g, rd),
            Ok((0x4000_0020, 0x4000_0000 - 0x20))
        );
        assert_eq!(translate(pml4, 0x1000_0000, rd), Err(Miss::Unmapped));
        assert_eq!(
            translate(pml4, 0x8000_0000_0000_0000, rd),
            Err(Miss::Unmapped)
        );
    }
}
