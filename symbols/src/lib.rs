//! ELF and DWARF for the kdbg shell: names, addresses, lines, inline frames,
//! parameters, types and CFI, fast enough for a full Linux `vmlinux`.
//!
//! Layers (as in `addr2line`/`object`): [`Elf::open`] memory-maps the file
//! and checks it (nothing else is parsed); the symbol table is sorted once on
//! the first symbol query; DWARF is loaded on the first DWARF query, and
//! units are parsed lazily by `addr2line`'s `Context` (lines, inlines) or on
//! demand (parameters, types).
//!
//! ```no_run
//! use symbols::{Elf, Register, Registers};
//! let elf = Elf::open("target/kdbg/kernel")?;
//! // Degraded mode (no DWARF) is reported once:
//! if let Some(note) = elf.take_notice() { eprintln!("{note}"); }
//!
//! // Name -> address(es): raw, demangled, with or without the Rust hash.
//! let syms = elf.lookup("spawn_task");              // Vec<Symbol>, all candidates
//! let completions: Vec<&str> = elf.names_with_prefix("spawn").collect();
//!
//! // Address -> symbol+offset, function bounds, file:line with inline chain.
//! let s = elf.symbolize(0x10_1234).unwrap();       // Display: "spawn_task+0x14"
//! let frames = elf.frames(0x10_1234)?;             // innermost first
//! let bounds = elf.function_bounds(0x10_1234);     // Option<Range<u64>>
//!
//! // file:line -> addresses (path suffix match).
//! let hits = elf.line_addresses("workloads.rs", 42)?;
//!
//! // Parameters (name, type, location at the entry pc) and return type.
//! let f = elf.functions_named("spawn_task")?.remove(0);
//! for p in &f.params { println!("{} {}: {} ({:?})", p.type_name, p.name, p.location, p.source); }
//!
//! // Types: follow typedefs, list struct fields with offsets.
//! if let Some(t) = f.params[2].ty {
//!     let ptr = elf.resolve(t)?;                   // TypeKind::Pointer { pointee }
//!     if let symbols::TypeKind::Pointer { pointee: Some(p) } = ptr.kind {
//!         for field in elf.resolve(p)?.fields() { println!("{:?} @ {}", field.name, field.offset); }
//!     }
//! }
//!
//! // Types by name (`ptype struct task_regs`, `ptype kernel::workloads::TaskRegs`).
//! let ids = elf.types_named("struct task_regs")?;
//! let rendered = elf.type_name(ids.first().copied());   // "struct task_regs"
//!
//! // CFI: one unwinder step for `bt`.
//! let mut regs = Registers::new();
//! regs.set(Register::RIP, Some(0x10_1234));
//! regs.set(Register::RSP, Some(0x20_0000));
//! let caller = elf.unwind_step(&regs, true, &mut |addr| None /* read 8 bytes */);
//! # Ok::<(), symbols::Error>(())
//! ```
//!
//! [`binutils`] formats answers exactly like binutils `addr2line` (used by
//! `kdbg addr2line`).

#![warn(missing_docs)]

pub mod binutils;
mod cfi;
mod dwarf;
mod elf;
mod error;
mod function;
mod image;
mod lines;
mod names;
mod registers;
mod slide;
mod steprows;
mod symtab;
mod types;
mod vars;

pub use dwarf::{Frame, SourceLocation};
pub use elf::Elf;
pub use error::{Error, Result};
pub use function::{Function, LocationSource, Param, ParamLocation};
pub use lines::LineMatch;
pub use names::demangle;
pub use registers::{Register, Registers};
pub use steprows::{InlineBlock, LineRow, StmtRow};
pub use symtab::{Symbol, SymbolKind, SymbolOffset};
pub use types::{BaseEncoding, Field, Lang, Qualifier, Type, TypeId, TypeKind};
pub use vars::{
    Global, LocContext, LocExpr, LocOp, LocalVar, Place, Scope, VarLocation, Variant, VariantPart,
};

impl Elf {
    /// Every symbol whose raw name, demangled name, or demangled name with
    /// hash is exactly `name`, in address order. Several for `static`
    /// functions of the same name in several files. Never parses DWARF.
    pub fn lookup(&self, name: &str) -> Vec<Symbol<'_>> {
        self.state.symtab().lookup(name)
    }

    /// Names (raw and demangled forms) starting with `prefix`, sorted and
    /// distinct: for completion.
    pub fn names_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.state.symtab().names_with_prefix(prefix)
    }

    /// `symbol+offset` for `address` (symbol table only).
    pub fn symbolize(&self, address: u64) -> Option<SymbolOffset<'_>> {
        self.state.symtab().symbolize(address)
    }

    /// The function symbol containing `address`.
    pub fn function_symbol(&self, address: u64) -> Option<Symbol<'_>> {
        self.state.symtab().function_containing(address)
    }

    /// `[start, end)` of the function containing `address` (symbol table).
    pub fn function_bounds(&self, address: u64) -> Option<std::ops::Range<u64>> {
        let s = self.function_symbol(address)?;
        Some(s.address..s.address + s.size)
    }

    /// All symbols, sorted by address (functions, data, labels).
    pub fn symbols(&self) -> impl Iterator<Item = Symbol<'_>> + '_ {
        self.state.symtab().by_addr.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_suffix_matches_on_component_boundary() {
        assert!(lines::path_matches("/a/b/main.rs", "main.rs"));
        assert!(lines::path_matches("/a/b/main.rs", "b/main.rs"));
        assert!(!lines::path_matches("/a/b/xmain.rs", "main.rs"));
        assert!(lines::path_matches("main.rs", "./main.rs"));
    }

    #[test]
    fn register_names_round_trip() {
        for n in 0..33 {
            let r = Register(n);
            assert_eq!(Register::from_name(&r.name()), Some(r));
        }
        assert_eq!(Register::from_name("%rdi"), Some(Register::RDI));
    }

    #[test]
    fn demangles_rust_without_hash() {
        assert_eq!(
            demangle("_ZN6kernel9workloads3fib17h0123456789abcdefE"),
            "kernel::workloads::fib"
        );
        assert_eq!(demangle("do_fork"), "do_fork");
    }

    #[test]
    fn elf_is_send() {
        fn send<T: Send>() {}
        send::<Elf>();
    }
}
