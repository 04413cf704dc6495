//! From the boot loader to Rust: the PVH note, the multiboot1 header, the
//! 32-bit entry that builds identity-mapped page tables and enters long mode,
//! and the boot information (command line).
//!
//! Both PVH (the Xen note) and multiboot1 (a.out kludge) enter `_start32` in 32-bit protected mode with paging off and
//! a pointer to their information structure in ebx. The entry zeroes .bss,
//! maps the first 4 GiB (2 MiB pages, except 4 KiB pages for the first 2 MiB
//! with page 0 left unmapped so null pointers fault), turns on PAE, SSE
//! (OSFXSR, OSXMMEXCPT; EM and TS clear) and long mode, and calls
//! [`crate::kernel_main`] on the boot stack with the loader's eax and ebx.
//!
//! QEMU 7.2's `-kernel` prefers the multiboot header when there is one, so
//! multiboot is the path taken in practice; the PVH path is tested by a boot
//! test that blanks the multiboot magic in a copy of the image.

use core::arch::global_asm;

/// Size of the boot stack (the stack of task 1, "main").
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

global_asm!(
    // Multiboot1 header, a.out kludge (flag 16) so an ELF64 image loads too.
    ".pushsection .boot.header, \"a\"",
    ".balign 4",
    "kdbg_multiboot_header:",
    ".long 0x1BADB002",
    ".long 0x00010000",
    ".long -(0x1BADB002 + 0x00010000)",
    ".long kdbg_multiboot_header",
    ".long __image_start",
    ".long __load_end",
    ".long __bss_end",
    ".long _start32",
    ".popsection",
    // PVH: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", 8-byte entry address.
    ".pushsection .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",
    ".long 8",
    ".long 18",
    ".asciz \"Xen\"",
    ".balign 4",
    ".quad _start32",
    ".balign 4",
    ".popsection",
    // Values from the loader, kept outside .bss (which is zeroed).
    ".pushsection .data.kdbg_boot, \"aw\"",
    ".balign 8",
    "kdbg_boot_eax: .long 0",
    "kdbg_boot_ebx: .long 0",
    ".popsection",
    // Page tables and the boot stack.
    ".pushsection .bss.kdbg_boot, \"aw\", @nobits",
    ".balign 4096",
    "kdbg_boot_pml4: .skip 4096",
    "kdbg_boot_pdpt: .skip 4096",
    "kdbg_boot_pd: .skip 4 * 4096",
    "kdbg_boot_pt0: .skip 4096",
    ".balign 16",
    "kdbg_boot_stack_bottom: .skip {stack_size}",
    ".globl kdbg_boot_stack_top",
    "kdbg_boot_stack_top:",
    ".popsection",
    // 32-bit GDT used to enter long mode (the final one is arch::gdt).
    ".pushsection .boot, \"ax\"",
    ".balign 16",
    "kdbg_boot_gdt:",
    ".quad 0",
    ".quad 0x00AF9A000000FFFF",
    ".quad 0x00CF92000000FFFF",
    "kdbg_boot_gdt_ptr:",
    ".word 3 * 8 - 1",
    ".quad kdbg_boot_gdt",
    ".code32",
    ".globl _start32",
    "_start32:",
    "cli",
    "cld",
    "mov dword ptr [kdbg_boot_eax], eax",
    "mov dword ptr [kdbg_boot_ebx], ebx",
    // zero .bss (page tables and stacks included)
    "mov edi, offset __bss_start",
    "mov ecx, offset __bss_end",
    "sub ecx, edi",
    "shr ecx, 2",
    "xor eax, eax",
    "rep stosd",
    "mov esp, offset kdbg_boot_stack_top",
    // PT0: 4 KiB pages for 0..2 MiB, page 0 not present
    "mov edi, offset kdbg_boot_pt0",
    "mov eax, 0x1003",
    "mov ecx, 1",
    "kdbg_boot_pt0_loop:",
    "mov dword ptr [edi + ecx * 8], eax",
    "add eax, 0x1000",
    "inc ecx",
    "cmp ecx, 512",
    "jb kdbg_boot_pt0_loop",
    // PDs: 2048 x 2 MiB pages (4 GiB), entry 0 points at PT0
    "mov edi, offset kdbg_boot_pd",
    "mov eax, 0x83",
    "xor ecx, ecx",
    "kdbg_boot_pd_loop:",
    "mov dword ptr [edi + ecx * 8], eax",
    "add eax, 0x200000",
    "inc ecx",
    "cmp ecx, 2048",
    "jb kdbg_boot_pd_loop",
    "mov eax, offset kdbg_boot_pt0",
    "or eax, 3",
    "mov dword ptr [kdbg_boot_pd], eax",
    // PDPT: 4 entries
    "mov edi, offset kdbg_boot_pdpt",
    "mov eax, offset kdbg_boot_pd",
    "or eax, 3",
    "mov dword ptr [edi], eax",
    "add eax, 0x1000",
    "mov dword ptr [edi + 8], eax",
    "add eax, 0x1000",
    "mov dword ptr [edi + 16], eax",
    "add eax, 0x1000",
    "mov dword ptr [edi + 24], eax",
    // PML4
    "mov eax, offset kdbg_boot_pdpt",
    "or eax, 3",
    "mov dword ptr [kdbg_boot_pml4], eax",
    "mov eax, offset kdbg_boot_pml4",
    "mov cr3, eax",
    // CR4: PAE | OSFXSR | OSXMMEXCPT
    "mov eax, cr4",
    "or eax, 0x620",
    "mov cr4, eax",
    // EFER.LME
    "mov ecx, 0xC0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    // CR0: PG | WP | MP | PE, EM and TS clear
    "mov eax, cr0",
    "and eax, 0xFFFFFFF3",
    "or eax, 0x80010003",
    "mov cr0, eax",
    "lgdt [kdbg_boot_gdt_ptr]",
    "mov eax, 0x08",
    "push eax",
    "mov eax, offset kdbg_long_start",
    "push eax",
    "retf",
    ".code64",
    "kdbg_long_start:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov fs, ax",
    "mov gs, ax",
    "fninit",
    "lea rsp, [rip + kdbg_boot_stack_top]",
    "mov edi, dword ptr [rip + kdbg_boot_eax]",
    "mov esi, dword ptr [rip + kdbg_boot_ebx]",
    "xor ebp, ebp",
    "call {main}",
    "kdbg_boot_halt:",
    "cli",
    "hlt",
    "jmp kdbg_boot_halt",
    ".cfi_endproc",
    ".popsection",
    stack_size = const BOOT_STACK_SIZE,
    main = sym crate::kernel_main,
);

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
