//! Output byte-identical to binutils `addr2line` (2.40) for the same flags.
//!
//! binutils has quirks that scripts see, and this module copies them:
//! - addresses outside every allocated section print `??` / `??:0`;
//! - the innermost frame's line carries ` (discriminator N)` when the line
//!   table row has one;
//! - for a function without a linkage name (C), the name printed is the
//!   ELF symbol's when the symbol starts where the function does (so clones
//!   such as `foo.constprop.0` show), and the first lookup of such a function
//!   prints the nearest symbol even when it does not (binutils caches the
//!   decision per function, so output depends on the order of the queries;
//!   [`Session`] keeps the same cache);
//! - without DWARF for an address, the nearest preceding function or
//!   untyped symbol of the same section is printed with the file name of
//!   the `STT_FILE` symbol before it and line `?`.

use std::collections::HashMap;
use std::fmt::Write;

use object::{Object, ObjectSection};

use crate::dwarf::Unit;
use crate::elf::Elf;

/// The flags of `addr2line` that kdbg supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `-f`: print function names.
    pub functions: bool,
    /// `-i`: print the inline chain.
    pub inlines: bool,
    /// `-C`: demangle.
    pub demangle: bool,
    /// `-a`: print the address first.
    pub addresses: bool,
    /// `-p`: one line per address.
    pub pretty: bool,
    /// `-s`: base names only.
    pub basenames: bool,
}

/// Parses an address as binutils does (`strtoul(text, 16)`: leading blanks,
/// optional `0x`, hex digits up to the first other character; 0 if none).
pub fn parse_address(text: &str) -> u64 {
    let t = text.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let t = if (t.starts_with("0x") || t.starts_with("0X"))
        && t.as_bytes().get(2).is_some_and(u8::is_ascii_hexdigit)
    {
        &t[2..]
    } else {
        t
    };
    let mut v: u64 = 0;
    for c in t.chars() {
        let Some(d) = c.to_digit(16) else { break };
        v = match v.checked_mul(16).and_then(|v| v.checked_add(u64::from(d))) {
            Some(v) => v,
            None => return u64::MAX,
        };
    }
    if neg { v.wrapping_neg() } else { v }
}

/// A function or untyped symbol as BFD's `elf_find_function` sees it.
struct BfdSym {
    name: &'static str,
    value: u64,
    size: u64,
    section: usize,
    file: Option<&'static str>,
}

/// One `addr2line` run: the options and the caches binutils keeps.
pub struct Session<'a> {
    elf: &'a Elf,
    opts: Options,
    sections: Vec<(u64, u64, usize)>,
    /// Sorted by value; symtab order kept among equal values.
    syms: Vec<BfdSym>,
    /// Functions whose name binutils has settled (`is_linkage`): (unit, die) -> name.
    settled: HashMap<(usize, usize), Option<String>>,
    /// Per unit: file name as `addr2line` renders it -> as BFD renders it.
    /// BFD's rendering of (unit, line-table file number).
    files: HashMap<(usize, u64), Option<String>>,
    has_dwarf: bool,
}

fn bfd_symbols(elf: &Elf) -> Vec<BfdSym> {
    use object::{ObjectSymbol, SymbolKind};
    let obj = &elf.state.object;
    let mut out = Vec::new();
    let mut file: Option<&'static str> = None;
    #[derive(PartialEq)]
    enum St {
        Nothing,
        SymbolSeen,
        FileAfterSymbol,
    }
    let mut state = St::Nothing;
    for sym in obj.symbols() {
        let kind = sym.kind();
        if kind == SymbolKind::File {
            file = sym.name().ok();
            if state == St::SymbolSeen {
                state = St::FileAfterSymbol;
            }
            continue;
        }
        if !matches!(
            kind,
            SymbolKind::Text | SymbolKind::Unknown | SymbolKind::Label
        ) {
            continue;
        }
        if state == St::Nothing {
            state = St::SymbolSeen;
        }
        let Some(section) = sym.section_index() else {
            continue;
        };
        let Ok(name) = sym.name() else { continue };
        out.push(BfdSym {
            name,
            value: sym.address(),
            size: sym.size(),
            section: section.0,
            file: if sym.is_local() || state != St::FileAfterSymbol {
                file
            } else {
                None
            },
        });
    }
    out.sort_by_key(|s| s.value);
    out
}

impl<'a> Session<'a> {
    /// Prepares a run over `elf`.
    pub fn new(elf: &'a Elf, opts: Options) -> Session<'a> {
        let obj = &elf.state.object;
        let sections = obj
            .sections()
            .filter(|s| match s.flags() {
                object::SectionFlags::Elf { sh_flags, .. } => {
                    sh_flags.contains(object::elf::SHF_ALLOC)
                }
                _ => false,
            })
            .map(|s| (s.address(), s.size(), s.index().0))
            .collect();
        Session {
            elf,
            opts,
            sections,
            syms: bfd_symbols(elf),
            settled: HashMap::new(),
            files: HashMap::new(),
            has_dwarf: elf.has_dwarf(),
        }
    }

    /// BFD's `elf_find_function`: the nearest function/untyped symbol at or
    /// before `pc` in section `sec` (larger size wins among equals, then
    /// symbol table order).
    fn find_function(&self, pc: u64, sec: usize) -> Option<&BfdSym> {
        let end = self.syms.partition_point(|s| s.value <= pc);
        let mut best: Option<&BfdSym> = None;
        for s in self.syms[..end].iter().rev() {
            if let Some(b) = best
                && s.value < b.value
            {
                break;
            }
            if s.section != sec {
                continue;
            }
            let size = s.size.max(1);
            match best {
                None => best = Some(s),
                Some(b) if size >= b.size.max(1) => best = Some(s),
                Some(_) => {}
            }
        }
        best
    }

    fn is_linkage(&self, unit: &Unit, die: usize) -> bool {
        let Ok(dw) = self.elf.state.dwarf() else {
            return false;
        };
        let mut off = gimli::UnitOffset(die);
        let mut owned;
        let mut u: &Unit = unit;
        for _ in 0..4 {
            let Ok(e) = u.entry(off) else { return false };
            if e.attr(gimli::DW_AT_linkage_name).is_some()
                || e.attr(gimli::DW_AT_MIPS_linkage_name).is_some()
            {
                return true;
            }
            if e.attr(gimli::DW_AT_name).is_some() {
                // BFD treats a plain name as the linkage name in languages
                // that do not mangle (dwarf2.c `mangle_style`).
                return !mangles(u);
            }
            let next = crate::types::ref_attr(u, &e, gimli::DW_AT_abstract_origin)
                .or_else(|| crate::types::ref_attr(u, &e, gimli::DW_AT_specification));
            let Some(next) = next else { return false };
            if let Some(o) = gimli::DebugInfoOffset(next.0 as usize).to_unit_offset(&u.header) {
                off = o;
                continue;
            }
            let Some((nu, no)) = dw.unit_for(next.0 as usize) else {
                return false;
            };
            owned = nu;
            u = &owned;
            off = no;
        }
        false
    }

    /// The file name as BFD prints it: `comp_dir/dir/name` joined with `/`
    /// verbatim (no normalisation), and in DWARF 5 tables a row whose file
    /// register was never set named after entry 0 (the spec says entry 1),
    /// as binutils 2.40 does.
    fn bfd_file(&mut self, u: &Unit, name: String, row: Option<crate::dwarf::RowExtras>) -> String {
        let Some(row) = row else { return name };
        let unit = u.header.offset().0;
        let index = if row.initial_file { u64::MAX } else { row.file };
        if !self.files.contains_key(&(unit, index)) {
            let rendered = self.file_name(u, index);
            self.files.insert((unit, index), rendered);
        }
        match self.files.get(&(unit, index)) {
            Some(Some(n)) => n.clone(),
            _ => name,
        }
    }

    /// BFD's `concat_filename` for file `index` of a unit's line table
    /// (`u64::MAX`: the initial file register).
    fn file_name(&self, u: &Unit, index: u64) -> Option<String> {
        let dw = self.elf.state.dwarf().ok()?;
        let program = u.line_program.as_ref()?;
        let header = program.header();
        let v5 = header.version() >= 5;
        let index = match index {
            u64::MAX if v5 => 0,
            u64::MAX => 1,
            i => i,
        };
        let f = header.file(index)?;
        let text = |v: gimli::AttributeValue<crate::elf::Reader>| -> Option<String> {
            Some(
                dw.dwarf
                    .attr_string(u, v)
                    .ok()?
                    .inner()
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let comp_dir = u
            .comp_dir
            .as_ref()
            .map(|d| d.inner().to_string_lossy().into_owned());
        let name = text(f.path_name())?;
        if name.starts_with('/') {
            return Some(name);
        }
        let sub = if v5 || f.directory_index() != 0 {
            f.directory(header).and_then(text)
        } else {
            None
        };
        let (dir, sub) = match (&sub, &comp_dir) {
            (Some(s), _) if s.starts_with('/') => (Some(s.clone()), None),
            (s, Some(c)) => (Some(c.clone()), s.clone()),
            (s, None) => (s.clone(), None),
        };
        Some(match (dir, sub) {
            (None, _) => name,
            (Some(d), None) => format!("{d}/{name}"),
            (Some(d), Some(s)) => format!("{d}/{s}/{name}"),
        })
    }

    /// `DW_AT_call_file` of an inlined subroutine DIE.
    fn call_file(&self, u: &Unit, die: usize) -> Option<u64> {
        let e = u.entry(gimli::UnitOffset(die)).ok()?;
        match e.attr_value(gimli::DW_AT_call_file)? {
            gimli::AttributeValue::FileIndex(i) => Some(i),
            v => v.udata_value(),
        }
    }

    fn arange_low(&self, u: &Unit, die: usize) -> Option<u64> {
        let dw = self.elf.state.dwarf().ok()?;
        let e = u.entry(gimli::UnitOffset(die)).ok()?;
        let mut ranges = dw.dwarf.die_ranges(u, &e).ok()?;
        ranges.next().ok().flatten().map(|r| r.begin)
    }

    fn name(&self, name: &str) -> String {
        if !self.opts.demangle {
            return name.to_string();
        }
        let stripped = name.trim_start_matches(['.', '$']);
        let prefix = &name[..name.len() - stripped.len()];
        let (base, suffix) = match stripped.find('@') {
            Some(i) => stripped.split_at(i),
            None => (stripped, ""),
        };
        let d = addr2line::demangle_auto(std::borrow::Cow::Borrowed(base), None);
        if d == base {
            name.to_string()
        } else {
            format!("{prefix}{d}{suffix}")
        }
    }

    /// The output for one input address (as typed), newline-terminated.
    pub fn format(&mut self, text: &str) -> String {
        let pc = parse_address(text);
        let mut out = String::new();
        if self.opts.addresses {
            let _ = write!(out, "0x{pc:016x}");
            out.push_str(if self.opts.pretty { ": " } else { "\n" });
        }
        // (function, file, line, discriminator) per printed frame.
        let frames = self.resolve(pc);
        if frames.is_empty() {
            if self.opts.functions {
                out.push_str(if self.opts.pretty { "?? " } else { "??\n" });
            }
            out.push_str("??:0\n");
            return out;
        }
        for (i, (func, file, line, disc)) in frames.iter().enumerate() {
            if i > 0 {
                if !self.opts.inlines {
                    break;
                }
                if self.opts.pretty {
                    out.push_str(" (inlined by) ");
                }
            }
            if self.opts.functions {
                match func.as_deref() {
                    Some(n) if !n.is_empty() => out.push_str(&self.name(n)),
                    _ => out.push_str("??"),
                }
                out.push_str(if self.opts.pretty { " at " } else { "\n" });
            }
            let mut f = file.as_deref();
            if self.opts.basenames
                && let Some(p) = f
            {
                f = Some(p.rsplit('/').next().unwrap_or(p));
            }
            let _ = write!(out, "{}:", f.unwrap_or("??"));
            if *line != 0 {
                if *disc != 0 {
                    let _ = writeln!(out, "{line} (discriminator {disc})");
                } else {
                    let _ = writeln!(out, "{line}");
                }
            } else {
                out.push_str("?\n");
            }
        }
        out
    }

    #[allow(clippy::type_complexity)]
    fn resolve(&mut self, pc: u64) -> Vec<(Option<String>, Option<String>, u32, u32)> {
        let Some(&(_, _, sec)) = self
            .sections
            .iter()
            .find(|(a, size, _)| pc >= *a && pc - *a < *size)
        else {
            return Vec::new();
        };
        let elf = self.elf;
        let (raw, unit) = elf.raw_frames(pc).unwrap_or_default();
        let has_dwarf = self.has_dwarf;
        let dwarf_found = has_dwarf
            && raw
                .iter()
                .any(|f| f.die.is_some() || f.frame.location.is_some());
        if !dwarf_found {
            let Some(sym) = self.find_function(pc, sec) else {
                return Vec::new();
            };
            return vec![(
                Some(sym.name.to_string()),
                sym.file.map(str::to_string),
                0,
                0,
            )];
        }
        // binutils prints the innermost row's discriminator on every
        // frame of the chain (it never resets it).
        let extras = match (unit, self.elf.state.dwarf()) {
            (Some(u), Ok(dw)) if raw.first().is_some_and(|f| f.frame.location.is_some()) => {
                dw.row_extras(u, pc)
            }
            _ => Default::default(),
        };
        let mut out = Vec::new();
        for (i, f) in raw.iter().enumerate() {
            let key = f.unit.zip(f.die);
            let dwarf_name = f.frame.function.clone();
            let mut file = f
                .frame
                .location
                .as_ref()
                .map(|l| l.file.clone())
                .filter(|s| !s.is_empty());
            let line = f.frame.location.as_ref().map_or(0, |l| l.line);
            let name = if i == 0 {
                match key {
                    Some(k) => match self.settled.get(&k) {
                        Some(n) => n.clone(),
                        None if unit.is_some_and(|u| self.is_linkage(u, k.1)) => {
                            self.settled.insert(k, dwarf_name.clone());
                            dwarf_name
                        }
                        None => {
                            let low = unit.and_then(|u| self.arange_low(u, k.1));
                            let fun = self
                                .find_function(pc, sec)
                                .map(|s| (s.name.to_string(), s.value, s.file));
                            match fun {
                                None => {
                                    self.settled.insert(k, dwarf_name.clone());
                                    dwarf_name
                                }
                                Some((n, value, sfile)) => {
                                    if file.is_none() {
                                        file = sfile.map(str::to_string);
                                    }
                                    let keep = if Some(value) == low {
                                        Some(n.clone())
                                    } else {
                                        dwarf_name
                                    };
                                    self.settled.insert(k, keep);
                                    Some(n)
                                }
                            }
                        }
                    },
                    None => {
                        // Line info without a function: the symbol names it.
                        let fun = self.find_function(pc, sec);
                        if file.is_none() {
                            file = fun.and_then(|s| s.file).map(str::to_string);
                        }
                        fun.map(|s| s.name.to_string())
                    }
                }
            } else {
                match key.and_then(|k| self.settled.get(&k)) {
                    Some(n) => n.clone(),
                    None => dwarf_name,
                }
            };
            let disc = extras.discriminator;
            let file = match (file, unit) {
                (Some(name), Some(u)) => {
                    let index = if i == 0 {
                        f.frame.location.is_some().then_some(extras)
                    } else {
                        raw[i - 1]
                            .die
                            .and_then(|d| self.call_file(u, d))
                            .map(|file| crate::dwarf::RowExtras {
                                file,
                                ..Default::default()
                            })
                    };
                    Some(self.bfd_file(u, name, index))
                }
                (file, _) => file,
            };
            out.push((name, file, line, disc));
        }
        out
    }
}

/// BFD's `mangle_style(lang) != 0`.
fn mangles(unit: &crate::dwarf::Unit) -> bool {
    use gimli::constants::DW_AT_language;
    let Ok(root) = unit.entry(unit.header.root_offset()) else {
        return true;
    };
    let Some(gimli::AttributeValue::Language(l)) = root.attr_value(DW_AT_language) else {
        return true;
    };
    !matches!(
        l,
        gimli::constants::DW_LANG_C89
            | gimli::constants::DW_LANG_C
            | gimli::constants::DW_LANG_C99
            | gimli::constants::DW_LANG_C11
            | gimli::constants::DW_LANG_Mips_Assembler
            | gimli::constants::DW_LANG_Fortran77
            | gimli::constants::DW_LANG_Fortran90
            | gimli::constants::DW_LANG_Fortran95
            | gimli::constants::DW_LANG_Fortran03
            | gimli::constants::DW_LANG_Fortran08
            | gimli::constants::DW_LANG_Pascal83
            | gimli::constants::DW_LANG_Modula2
            | gimli::constants::DW_LANG_Cobol74
            | gimli::constants::DW_LANG_Cobol85
            | gimli::constants::DW_LANG_PLI
            | gimli::constants::DW_LANG_UPC
    )
}
