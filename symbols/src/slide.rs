//! The image's load offset (a KASLR kernel runs its vmlinux's addresses
//! moved by a slide): the one place that maps link addresses to runtime
//! addresses and back.
//!
//! Every address `symbols` hands out is a runtime address, and every address
//! it takes is one: the symbol table is built with the slide applied, DWARF
//! is read through a [`gimli::RelocateReader`] that adds it to each address
//! DWARF stores (unit ranges, line tables, `DW_AT_low_pc`, location lists,
//! `DW_OP_addr`, `.debug_frame`'s FDEs), location expressions kept as bytes
//! add it when they are evaluated, and the file's bytes (`read_at`) are
//! found by the link address. Only addresses inside the image (the
//! allocated sections at non-zero addresses, ends included) move: a Linux
//! per-CPU variable's address is an offset into `.data..percpu`, linked at
//! 0, and is never slid.

/// A slide over the image's link-address range `[lo, hi]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Slide {
    pub(crate) lo: u64,
    pub(crate) hi: u64,
    pub(crate) delta: u64,
}

impl Slide {
    /// The runtime address of a link address.
    #[inline]
    pub(crate) fn to_runtime(self, link: u64) -> u64 {
        if self.delta != 0 && link >= self.lo && link <= self.hi {
            link.wrapping_add(self.delta)
        } else {
            link
        }
    }

    /// The link address of a runtime address: `None` for an address of the
    /// image's link range that the slide moved away (nothing is there at
    /// run time); an address outside the image is its own.
    #[inline]
    pub(crate) fn to_link(self, runtime: u64) -> Option<u64> {
        if self.delta != 0 {
            let link = runtime.wrapping_sub(self.delta);
            if link >= self.lo && link <= self.hi {
                return Some(link);
            }
            if runtime >= self.lo && runtime <= self.hi {
                return None;
            }
        }
        Some(runtime)
    }
}

impl gimli::Relocate<usize> for Slide {
    #[inline]
    fn relocate_address(&self, _offset: usize, value: u64) -> gimli::Result<u64> {
        Ok(self.to_runtime(value))
    }

    #[inline]
    fn relocate_offset(&self, _offset: usize, value: usize) -> gimli::Result<usize> {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_image_addresses_move() {
        let s = Slide {
            lo: 0xffff_ffff_8100_0000,
            hi: 0xffff_ffff_8400_0000,
            delta: 0x2380_0000,
        };
        assert_eq!(s.to_runtime(0xffff_ffff_8100_0010), 0xffff_ffff_a480_0010);
        assert_eq!(
            s.to_link(0xffff_ffff_a480_0010),
            Some(0xffff_ffff_8100_0010)
        );
        // The link address itself holds nothing once the image moved.
        assert_eq!(s.to_link(0xffff_ffff_8100_0010), None);
        // Per-CPU offsets and addresses outside the image stay.
        assert_eq!(s.to_runtime(0x1fbc0), 0x1fbc0);
        assert_eq!(s.to_link(0x1fbc0), Some(0x1fbc0));
        assert_eq!(
            s.to_link(0xffff_8880_0000_0000),
            Some(0xffff_8880_0000_0000)
        );
        // The image's end moves with it (an exclusive range end).
        assert_eq!(s.to_runtime(s.hi), s.hi + s.delta);
        assert_eq!(Slide::default().to_runtime(5), 5);
    }
}
