//! The kernel image's bytes as loaded (for disassembly and instruction
//! checks without asking the stub, whose view of text has int3s in it).

use std::ops::Range;
use std::path::Path;

use object::{Object, ObjectSection, SectionKind};

pub struct Image {
    map: memmap2::Mmap,
    /// (virtual range, file offset) of sections with file data.
    sections: Vec<(Range<u64>, u64, bool)>,
}

impl Image {
    pub fn open(path: &Path) -> anyhow::Result<Image> {
        let f = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        // SAFETY: the kernel image is not modified while kdbg runs; a
        // concurrent rebuild would at worst show stale bytes.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| anyhow::anyhow!("cannot map {}: {e}", path.display()))?;
        let obj = object::File::parse(&*map)
            .map_err(|e| anyhow::anyhow!("{} is not an ELF file: {e}", path.display()))?;
        let mut sections = Vec::new();
        for s in obj.sections() {
            let Some((off, size)) = s.file_range() else {
                continue;
            };
            if s.address() == 0 || size == 0 {
                continue;
            }
            let exec = s.kind() == SectionKind::Text;
            sections.push((s.address()..s.address() + size, off, exec));
        }
        Ok(Image { map, sections })
    }

    /// Up to `len` bytes at `addr`, if the image holds them.
    pub fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (r, off, _) = self.sections.iter().find(|(r, _, _)| r.contains(&addr))?;
        let start = (off + (addr - r.start)) as usize;
        let avail = (r.end - addr) as usize;
        self.map.get(start..start + len.min(avail))
    }

    /// Is `addr` in an executable section?
    pub fn is_text(&self, addr: u64) -> bool {
        self.sections
            .iter()
            .any(|(r, _, exec)| *exec && r.contains(&addr))
    }

    /// Is `addr` in any loaded section?
    pub fn is_mapped(&self, addr: u64) -> bool {
        self.sections.iter().any(|(r, _, _)| r.contains(&addr))
    }
}
