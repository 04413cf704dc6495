//! The kernel image the session debugs: one [`symbols::Elf`] (mapped and
//! parsed once) serving names, lines, types, CFI, the bytes the file loads
//! at an address (disassembly and instruction checks without asking the
//! target, whose text holds int3s) and operand symbolization for the
//! disassembler.
//!
//! Locking rule: `symbols::Elf` is `Send` but not `Sync` (its lazily built
//! indexes live in cells), so it sits behind a *reentrant* lock: one thread
//! queries it at a time, and a thread holding [`Image::elf`] may call any
//! other method here (`describe`, `symbolize`...) without deadlocking.
//! Hold the guard for one query, not across a request to the target.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use parking_lot::{ReentrantMutex, ReentrantMutexGuard};
use symbols::Elf;

use crate::disas::{Disassembler, Insn, Symbolizer, Syntax};

/// The ELF under its lock; derefs to [`Elf`].
pub type ElfGuard<'a> = ReentrantMutexGuard<'a, Elf>;

/// The kernel image, or none (no `--symbols`): then every query answers
/// "unknown" and [`Image::elf`] says how to load symbols.
#[derive(Default)]
pub struct Image {
    elf: Option<ReentrantMutex<Elf>>,
}

impl Image {
    /// Map and check `path` (nothing else is parsed until a query needs it).
    pub fn open(path: &Path) -> Result<Image> {
        let elf = Elf::open(path)
            .with_context(|| format!("cannot load symbols from {}", path.display()))?;
        if let Some(n) = elf.take_notice() {
            eprintln!("kdbg: {n}");
        }
        Ok(Image {
            elf: Some(ReentrantMutex::new(elf)),
        })
    }

    pub fn loaded(&self) -> bool {
        self.elf.is_some()
    }

    /// The ELF, locked (see the module's locking rule).
    pub fn elf(&self) -> Result<ElfGuard<'_>> {
        self.elf.as_ref().map(|e| e.lock()).ok_or_else(|| {
            anyhow!("no symbols loaded: start kdbg with --symbols ELF (or --kernel ELF)")
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Elf) -> Option<T>) -> Option<T> {
        f(&self.elf.as_ref()?.lock())
    }

    /// The symbol containing `addr` or starting at it: (start, demangled
    /// name). A size-0 label names only its own address.
    pub fn containing(&self, addr: u64) -> Option<(u64, String)> {
        self.with(|elf| {
            let s = elf.symbolize(addr)?;
            (s.offset == 0 || s.symbol.contains(addr))
                .then(|| (s.symbol.address, s.symbol.demangled().into_owned()))
        })
    }

    /// `name+0xoff` (`name` at its start) when a symbol covers `addr`.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let (a, name) = self.containing(addr)?;
        Some(if a == addr {
            name
        } else {
            format!("{name}+{:#x}", addr - a)
        })
    }

    /// `name` when `addr` is exactly a symbol's address.
    pub fn symbol_at(&self, addr: u64) -> Option<String> {
        self.containing(addr)
            .and_then(|(a, n)| (a == addr).then_some(n))
    }

    /// `func+0x12`, else the bare address.
    pub fn describe(&self, addr: u64) -> String {
        self.symbolize(addr).unwrap_or_else(|| format!("{addr:#x}"))
    }

    /// Source `file:line` of an address.
    pub fn source_of(&self, addr: u64) -> Option<String> {
        self.with(|elf| {
            let loc = elf.location(addr).ok()??;
            (loc.line != 0).then(|| format!("{}:{}", loc.file, loc.line))
        })
    }

    /// Up to `len` bytes the image loads at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.with(|elf| elf.read_at(addr, len).map(<[u8]>::to_vec))
    }

    /// Is `addr` in an executable section?
    pub fn is_text(&self, addr: u64) -> bool {
        self.with(|elf| Some(elf.is_text(addr))).unwrap_or(false)
    }

    /// Is `addr` in any loaded section?
    pub fn is_mapped(&self, addr: u64) -> bool {
        self.with(|elf| Some(elf.is_mapped(addr))).unwrap_or(false)
    }

    /// (address, name) of every symbol one of whose names (raw, or
    /// demangled without the hash) satisfies `keep`, in name order. Reads
    /// the symbol table's sorted name index: nothing is demangled here.
    pub fn symbols_where(&self, keep: impl Fn(&str) -> bool) -> Vec<(u64, String)> {
        self.with(|elf| {
            let mut out = Vec::new();
            for name in elf.names_with_prefix("") {
                if is_hashed(name) || name.starts_with("_ZN") || !keep(name) {
                    continue;
                }
                for s in elf.lookup(name).iter().filter(|s| s.address != 0) {
                    out.push((s.address, name.to_string()));
                }
            }
            Some(out)
        })
        .unwrap_or_default()
    }

    /// Every symbol name a user would type (raw C names, demangled Rust
    /// paths; no hash forms), for "did you mean"; `functions_only` for code.
    pub fn names(&self, functions_only: bool) -> Vec<String> {
        self.with(|elf| {
            Some(
                elf.names_with_prefix("")
                    .filter(|n| !is_hashed(n) && !n.starts_with("_ZN"))
                    .filter(|n| {
                        !functions_only
                            || elf
                                .lookup(n)
                                .iter()
                                .any(|s| s.kind == symbols::SymbolKind::Function)
                    })
                    .map(str::to_string)
                    .collect(),
            )
        })
        .unwrap_or_default()
    }

    /// Names starting with `prefix` for Tab: whole names (raw C names and
    /// demangled Rust paths, never the `::h0123...` hash forms or `_ZN`
    /// manglings) and last `::` components; `functions_only` for code
    /// locations (no `NEXT_FD`-style data where a probe cannot go).
    pub fn completions(&self, prefix: &str, functions_only: bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .with(|elf| {
                let wanted = |name: &str| {
                    !is_hashed(name)
                        && !name.starts_with("_ZN")
                        && !name.is_empty()
                        && (!functions_only
                            || elf
                                .lookup(name)
                                .iter()
                                .any(|s| s.kind == symbols::SymbolKind::Function))
                };
                let mut out: Vec<String> = elf
                    .names_with_prefix(prefix)
                    .filter(|n| wanted(n))
                    .take(200)
                    .map(str::to_string)
                    .collect();
                for name in elf.names_with_prefix("") {
                    if out.len() > 400 {
                        break;
                    }
                    let Some((_, tail)) = name.rsplit_once("::") else {
                        continue;
                    };
                    if tail.starts_with(prefix) && !tail.is_empty() && wanted(name) {
                        out.push(tail.to_string());
                    }
                }
                Some(out)
            })
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    /// A disassembler whose operands name this image's symbols.
    pub fn disassembler(self: &Arc<Self>, syntax: Syntax) -> Disassembler {
        let syms = self
            .loaded()
            .then(|| self.clone() as Arc<dyn Symbolizer + Send + Sync>);
        Disassembler::new(syntax, syms)
    }

    /// The instruction the image holds at `addr`.
    pub fn insn_at(self: &Arc<Self>, addr: u64) -> Option<Insn> {
        let bytes = self.read(addr, 16)?;
        self.disassembler(Syntax::Intel)
            .decode(&bytes, addr, 1)
            .pop()
    }
}

/// `...::h0123456789abcdef`: a Rust legacy mangling hash as a path part.
fn is_hashed(name: &str) -> bool {
    name.rsplit("::").next().is_some_and(|t| {
        t.len() == 17 && t.starts_with('h') && t[1..].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

impl Symbolizer for Image {
    fn containing(&self, addr: u64) -> Option<(u64, String)> {
        Image::containing(self, addr)
    }
}
