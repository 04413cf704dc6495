//! The ELF symbol table: sorted by address once (address -> `symbol+offset`,
//! function bounds) and by name once (exact, demangled and prefix lookups).

use std::borrow::Cow;

use object::{Object, ObjectSymbol, SymbolKind as ObjKind};

/// What a symbol names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    /// `STT_FUNC`.
    Function,
    /// `STT_OBJECT` / `STT_TLS`.
    Data,
    /// `STT_NOTYPE` (assembly labels such as entry points).
    Label,
}

/// One ELF symbol. `name` is the raw (possibly mangled) name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// Raw name as in `.symtab`.
    pub name: &'a str,
    /// Start address.
    pub address: u64,
    /// Size in bytes (0 if unknown).
    pub size: u64,
    /// Function, data or label.
    pub kind: SymbolKind,
    /// False for `static` (file-local) symbols.
    pub is_global: bool,
}

impl Symbol<'_> {
    /// The demangled name (Rust legacy/v0 without the hash; C++ left alone).
    pub fn demangled(&self) -> Cow<'_, str> {
        crate::names::demangle(self.name)
    }

    /// True if `address` lies inside `[address, address + size)`.
    pub fn contains(&self, address: u64) -> bool {
        address >= self.address && address - self.address < self.size
    }
}

/// `symbol+offset` for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolOffset<'a> {
    /// The symbol at or before the address.
    pub symbol: Symbol<'a>,
    /// `address - symbol.address`.
    pub offset: u64,
}

impl std::fmt::Display for SymbolOffset<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{:#x}", self.symbol.demangled(), self.offset)
    }
}

pub(crate) struct SymbolTable {
    /// Sorted by (address, preference): the preferred symbol at an address last.
    pub(crate) by_addr: Vec<Symbol<'static>>,
    /// Lookup keys (raw, demangled, demangled with hash), sorted, with the
    /// index into `by_addr`.
    by_name: Vec<(Cow<'static, str>, u32)>,
}

fn preference(s: &Symbol<'_>) -> (u8, u8, u8) {
    (
        match s.kind {
            SymbolKind::Function => 2,
            SymbolKind::Data => 1,
            SymbolKind::Label => 0,
        },
        u8::from(s.is_global),
        u8::from(s.size > 0),
    )
}

impl SymbolTable {
    /// The table of `object`, its image addresses moved by `slide`.
    pub(crate) fn build(
        object: &object::read::elf::ElfFile64<'static, object::LittleEndian>,
        slide: crate::slide::Slide,
    ) -> Self {
        let mut by_addr: Vec<Symbol<'static>> = object
            .symbols()
            .filter(|s| s.is_definition() || s.kind() == ObjKind::Unknown && !s.is_undefined())
            .filter_map(|s| {
                let kind = match s.kind() {
                    ObjKind::Text => SymbolKind::Function,
                    ObjKind::Data | ObjKind::Tls => SymbolKind::Data,
                    ObjKind::Unknown | ObjKind::Label => SymbolKind::Label,
                    _ => return None,
                };
                if s.is_undefined() || s.section_index().is_none() {
                    return None;
                }
                let name = s.name().ok()?;
                if name.is_empty() || name.starts_with(".L") || name.starts_with('$') {
                    return None;
                }
                Some(Symbol {
                    name,
                    address: slide.to_runtime(s.address()),
                    size: s.size(),
                    kind,
                    is_global: s.is_global(),
                })
            })
            .collect();
        by_addr.sort_by(|a, b| {
            a.address
                .cmp(&b.address)
                .then_with(|| preference(a).cmp(&preference(b)))
                .then_with(|| b.name.cmp(a.name))
        });
        by_addr.dedup_by(|a, b| a.address == b.address && a.name == b.name);
        let mut by_name: Vec<(Cow<'static, str>, u32)> = Vec::with_capacity(by_addr.len());
        for (i, s) in by_addr.iter().enumerate() {
            let i = i as u32;
            by_name.push((Cow::Borrowed(s.name), i));
            for key in crate::names::alternate_keys(s.name) {
                by_name.push((Cow::Owned(key), i));
            }
        }
        by_name.sort_unstable();
        by_name.dedup();
        SymbolTable { by_addr, by_name }
    }

    /// All symbols whose raw or demangled name (with or without hash) is `name`.
    pub(crate) fn lookup(&self, name: &str) -> Vec<Symbol<'static>> {
        let start = self.by_name.partition_point(|(k, _)| k.as_ref() < name);
        let mut idx: Vec<u32> = self.by_name[start..]
            .iter()
            .take_while(|(k, _)| k == name)
            .map(|(_, i)| *i)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| self.by_addr[i as usize]).collect()
    }

    /// Sorted, distinct lookup keys starting with `prefix`.
    pub(crate) fn names_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let start = self.by_name.partition_point(|(k, _)| k.as_ref() < prefix);
        let mut last: Option<&'a str> = None;
        self.by_name[start..]
            .iter()
            .map(|(k, _)| k.as_ref())
            .take_while(move |k| k.starts_with(prefix))
            .filter(move |k| {
                let new = last != Some(*k);
                last = Some(k);
                new
            })
    }

    /// The symbol for `address`: one containing it (by size), else the
    /// nearest one before it with size 0 (a label). Functions are preferred
    /// over data and labels at the same address.
    pub(crate) fn symbolize(&self, address: u64) -> Option<SymbolOffset<'static>> {
        let end = self.by_addr.partition_point(|s| s.address <= address);
        let candidates = &self.by_addr[..end];
        let top = candidates.last()?.address;
        // Same-address group: preferred last. Take the best that contains it.
        let mut best: Option<Symbol<'static>> = None;
        for s in candidates.iter().rev().take_while(|s| s.address == top) {
            if s.size == 0 || s.contains(address) {
                best = Some(*s);
                break;
            }
        }
        // A size-0 label before the address (`entry_SYSCALL_64_after_hwframe`
        // inside `entry_SYSCALL_64`) does not hide the sized function that
        // contains the address; a label exactly at the address still names it.
        let label = best.filter(|b| b.size == 0 && b.address != address);
        if label.is_some() {
            best = None;
        }
        if best.is_none() {
            // Look further back for a sized symbol that still contains it
            // (nested labels inside a function).
            best = candidates
                .iter()
                .rev()
                .take(64)
                .find(|s| s.contains(address) && s.kind != SymbolKind::Data)
                .copied()
                .or(label);
        }
        let symbol = best?;
        Some(SymbolOffset {
            symbol,
            offset: address - symbol.address,
        })
    }

    /// The function symbol (sized) containing `address`.
    pub(crate) fn function_containing(&self, address: u64) -> Option<Symbol<'static>> {
        let end = self.by_addr.partition_point(|s| s.address <= address);
        self.by_addr[..end]
            .iter()
            .rev()
            .take(64)
            .find(|s| s.kind == SymbolKind::Function && s.contains(address))
            .copied()
    }
}
