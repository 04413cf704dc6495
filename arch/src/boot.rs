//! From the boot loader to Rust, for any kernel image built on `arch`: the
//! PVH note, the multiboot1 header, and the 32-bit entry `_start32` that
//! builds identity-mapped page tables, enters long mode and calls the
//! kernel's main function. [`boot_entry!`] expands it in the kernel crate.
//!
//! Both PVH (the Xen note) and multiboot1 (a.out kludge) enter `_start32` in
//! 32-bit protected mode with paging off and a pointer to their information
//! structure in ebx. The entry zeroes .bss, maps the first 4 GiB (2 MiB
//! pages, except 4 KiB pages for the first 2 MiB with page 0 left unmapped so
//! null pointers fault), turns on PAE, SSE (OSFXSR, OSXMMEXCPT; EM and TS
//! clear) and long mode, and calls `main(eax, ebx)` (the loader's values) on
//! a boot stack of the given size.
//!
//! The kernel's linker script provides: sections `.boot.header` (first, in
//! the first 8 KiB of the file), `.boot`, `.note.Xen` (also in a `PT_NOTE`
//! segment), and the symbols `__image_start`, `__load_end` (end of the file
//! contents), `__bss_start` and `__bss_end` (16-byte aligned).

/// Expands the boot entry (`_start32`, the multiboot header, the PVH note,
/// the boot page tables and stack) in the calling crate: `main` is an
/// `extern "C" fn(u32, u32) -> !` called with the loader's eax and ebx;
/// `stack_size` is the boot stack's size in bytes.
#[macro_export]
macro_rules! boot_entry {
    ($main:path, $stack_size:expr) => {
        ::core::arch::global_asm!(
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
            stack_size = const $stack_size,
            main = sym $main,
        );
    };
}
