//! From the boot loader to Rust: the boot entry (`arch::boot_entry!`: the
//! PVH note, the multiboot1 header, the 32-bit entry that builds
//! identity-mapped page tables, enters long mode and calls
//! [`crate::kernel_main`] on the boot stack with the loader's eax and ebx),
//! and the boot information (command line, RAM size).
//!
//! QEMU 7.2's `-kernel` prefers the multiboot header when there is one, so
//! multiboot is the path taken in practice; the PVH path is tested by a boot
//! test that blanks the multiboot magic in a copy of the image.

/// Size of the boot stack (the stack of task 1, "main").
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

arch::boot_entry!(crate::kernel_main, BOOT_STACK_SIZE);

/// The magic value at the start of a PVH `hvm_start_info`.
const PVH_MAGIC: u32 = 0x336e_c578;
/// eax on entry from a multiboot1 loader.
const MULTIBOOT_MAGIC: u32 = 0x2BAD_B002;
/// Multiboot info flag: `cmdline` is valid.
const MULTIBOOT_INFO_CMDLINE: u32 = 1 << 2;
/// Multiboot info flag: `mem_lower`/`mem_upper` are valid.
const MULTIBOOT_INFO_MEMORY: u32 = 1 << 0;
/// PVH memory map entry type of usable RAM.
const PVH_MEMMAP_RAM: u32 = 1;

/// How the kernel was booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    Pvh,
    Multiboot,
    Unknown,
}

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::Pvh => "pvh",
            Loader::Multiboot => "multiboot",
            Loader::Unknown => "unknown",
        }
    }
}

const CMDLINE_MAX: usize = 1024;

/// The boot loader and the command line, copied out of loader memory.
pub struct BootInfo {
    pub loader: Loader,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// End of the usable RAM that starts at 1 MiB, when the loader says.
    pub ram_end: Option<u64>,
}

impl BootInfo {
    /// The kernel command line (`-append`), or "" when it is not valid UTF-8.
    pub fn cmdline(&self) -> &str {
        let bytes = self.cmdline.get(..self.cmdline_len).unwrap_or(&[]);
        core::str::from_utf8(bytes).unwrap_or("")
    }

    /// Reads the loader's information structure.
    ///
    /// # Safety
    /// `eax`/`ebx` must be the values the loader passed to `_start32`, with the
    /// loader's memory still intact and identity-mapped.
    pub unsafe fn from_loader(eax: u32, ebx: u32) -> BootInfo {
        let mut info = BootInfo {
            loader: Loader::Unknown,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            ram_end: None,
        };
        if ebx < 0x1000 {
            return info;
        }
        let base = ebx as usize as *const u8;
        // SAFETY: the caller guarantees ebx points at the loader's structure
        // (identity-mapped, not in page 0); offsets are those of the PVH
        // hvm_start_info and the multiboot info layouts.
        unsafe {
            let cmdline_addr = if (base as *const u32).read_unaligned() == PVH_MAGIC {
                info.loader = Loader::Pvh;
                // hvm_start_info version >= 1: memmap_paddr at 40, memmap_entries at 48.
                let version = (base.add(4) as *const u32).read_unaligned();
                if version >= 1 {
                    let map = (base.add(40) as *const u64).read_unaligned();
                    let entries = (base.add(48) as *const u32).read_unaligned().min(128);
                    if (0x1000..0x1_0000_0000).contains(&map) {
                        for i in 0..entries as usize {
                            let e = (map as usize + i * 24) as *const u8;
                            let addr = (e as *const u64).read_unaligned();
                            let size = (e.add(8) as *const u64).read_unaligned();
                            let kind = (e.add(16) as *const u32).read_unaligned();
                            if kind == PVH_MEMMAP_RAM
                                && addr <= 0x10_0000
                                && addr.saturating_add(size) > 0x10_0000
                            {
                                info.ram_end = Some(addr.saturating_add(size));
                            }
                        }
                    }
                }
                (base.add(24) as *const u64).read_unaligned()
            } else if eax == MULTIBOOT_MAGIC {
                info.loader = Loader::Multiboot;
                let flags = (base as *const u32).read_unaligned();
                if flags & MULTIBOOT_INFO_MEMORY != 0 {
                    // mem_upper: KiB of RAM from 1 MiB up.
                    let upper_kib = u64::from((base.add(8) as *const u32).read_unaligned());
                    info.ram_end = Some(0x10_0000 + upper_kib * 1024);
                }
                if flags & MULTIBOOT_INFO_CMDLINE != 0 {
                    u64::from((base.add(16) as *const u32).read_unaligned())
                } else {
                    0
                }
            } else {
                0
            };
            if (0x1000..0x1_0000_0000).contains(&cmdline_addr) {
                let src = cmdline_addr as usize as *const u8;
                for (i, slot) in info.cmdline.iter_mut().enumerate() {
                    let b = src.add(i).read();
                    if b == 0 {
                        break;
                    }
                    *slot = b;
                    info.cmdline_len = i + 1;
                }
            }
        }
        info
    }
}
