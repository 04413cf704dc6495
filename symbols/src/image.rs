//! The loaded image: the bytes the file places at a virtual address (for
//! disassembly and instruction checks without asking the target, whose
//! text may hold int3s).

use object::{Object, ObjectSection, SectionKind};

use crate::Elf;

impl Elf {
    /// Up to `len` bytes the file places at `address` (sections with file
    /// data; `.bss` has none), or `None` if no section holds `address`.
    pub fn read_at(&self, address: u64, len: usize) -> Option<&[u8]> {
        let address = self.state.slide.get().to_link(address)?;
        let (start, size, data) = self.state.object.sections().find_map(|s| {
            let (_, size) = s.file_range()?;
            let start = s.address();
            (start != 0 && address >= start && address - start < size)
                .then(|| Some((start, size, s.data().ok()?)))
                .flatten()
        })?;
        let from = (address - start) as usize;
        let end = from.saturating_add(len).min(size as usize);
        data.get(from..end)
    }

    /// True if `address` is in an executable section with file data.
    pub fn is_text(&self, address: u64) -> bool {
        let Some(address) = self.state.slide.get().to_link(address) else {
            return false;
        };
        self.state.object.sections().any(|s| {
            s.kind() == SectionKind::Text
                && s.file_range().is_some()
                && s.address() != 0
                && address >= s.address()
                && address - s.address() < s.size()
        })
    }

    /// True if a section with file data covers `address`.
    pub fn is_mapped(&self, address: u64) -> bool {
        self.read_at(address, 1).is_some()
    }
}
