//! The low level over gimli: the lazily built DWARF state (addr2line's
//! `Context` for lines and inline frames, and a cache of parsed units for
//! DIE lookups by global `.debug_info` offset).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

use std::sync::Arc;

use gimli::{DebugInfoOffset, UnitOffset};

use crate::elf::{Reader, State};
use crate::slide::Slide;

pub(crate) type Unit = gimli::Unit<Reader>;

/// Change points of [`RowExtras`] over a unit's addresses.
type RowTable = Vec<(u64, RowExtras)>;

pub(crate) struct DwarfIndex {
    pub(crate) dwarf: Arc<gimli::Dwarf<Reader>>,
    pub(crate) ctx: addr2line::Context<Reader>,
    /// Start offsets of all units in `.debug_info`, ascending.
    unit_starts: OnceCell<Vec<usize>>,
    units: RefCell<HashMap<usize, Arc<Unit>>>,
    /// Per unit (by header offset): (address, discriminator) change points.
    discriminators: RefCell<HashMap<usize, Arc<RowTable>>>,
    /// Type name (plain and namespace-qualified) -> type DIE offsets.
    pub(crate) type_names: OnceCell<HashMap<String, Vec<u64>>>,
    /// Global variable name (plain and namespace-qualified) -> DIE offsets.
    pub(crate) var_names: OnceCell<crate::vars::VarIndex>,
    /// Type DIE offset -> its longest (qualified) name.
    pub(crate) type_qualified: OnceCell<HashMap<u64, String>>,
}

impl DwarfIndex {
    pub(crate) fn load(state: &State, slide: Slide) -> Result<DwarfIndex, gimli::Error> {
        let dwarf = gimli::Dwarf::load(|id| {
            Ok::<_, gimli::Error>(gimli::RelocateReader::new(
                gimli::EndianSlice::new(state.section_data(id.name()), gimli::LittleEndian),
                slide,
            ))
        })?;
        let dwarf = Arc::new(dwarf);
        let ctx = addr2line::Context::from_arc_dwarf(dwarf.clone())?;
        Ok(DwarfIndex {
            dwarf,
            ctx,
            unit_starts: OnceCell::new(),
            units: RefCell::new(HashMap::new()),
            discriminators: RefCell::new(HashMap::new()),
            type_names: OnceCell::new(),
            var_names: OnceCell::new(),
            type_qualified: OnceCell::new(),
        })
    }

    fn unit_starts(&self) -> &[usize] {
        self.unit_starts.get_or_init(|| {
            let mut v = Vec::new();
            let mut iter = self.dwarf.units();
            while let Ok(Some(h)) = iter.next() {
                v.push(h.offset().0);
            }
            v
        })
    }

    /// The unit at header offset `start`, parsed once.
    pub(crate) fn unit_at(&self, start: usize) -> Result<Arc<Unit>, gimli::Error> {
        if let Some(u) = self.units.borrow().get(&start) {
            return Ok(u.clone());
        }
        let header = self
            .dwarf
            .debug_info
            .header_from_offset(DebugInfoOffset(start))?;
        let unit = Arc::new(self.dwarf.unit(header)?);
        self.units.borrow_mut().insert(start, unit.clone());
        Ok(unit)
    }

    /// The unit containing the global `.debug_info` offset, and the offset
    /// within it.
    pub(crate) fn unit_for(&self, offset: usize) -> Option<(Arc<Unit>, UnitOffset)> {
        let starts = self.unit_starts();
        let i = starts.partition_point(|s| *s <= offset).checked_sub(1)?;
        let unit = self.unit_at(starts[i]).ok()?;
        let off = DebugInfoOffset(offset).to_unit_offset(&unit.header)?;
        Some((unit, off))
    }

    /// Builds the type-name index: one pass over every unit's DIEs.
    pub(crate) fn build_type_names(&self) -> HashMap<String, Vec<u64>> {
        use gimli::constants as c;
        let mut map: HashMap<String, Vec<u64>> = HashMap::new();
        let mut headers = self.dwarf.units();
        while let Ok(Some(header)) = headers.next() {
            let Ok(unit) = self.dwarf.unit(header) else {
                continue;
            };
            let mut cursor = unit.entries();
            let mut scopes: Vec<(isize, String)> = Vec::new();
            while let Ok(Some(entry)) = cursor.next_dfs() {
                let depth = entry.depth();
                while scopes.last().is_some_and(|(d, _)| *d >= depth) {
                    scopes.pop();
                }
                let tag = entry.tag();
                let is_type = matches!(
                    tag,
                    c::DW_TAG_structure_type
                        | c::DW_TAG_class_type
                        | c::DW_TAG_union_type
                        | c::DW_TAG_enumeration_type
                        | c::DW_TAG_typedef
                        | c::DW_TAG_base_type
                        | c::DW_TAG_unspecified_type
                );
                if tag != c::DW_TAG_namespace && !is_type {
                    continue;
                }
                let Some(name) = entry
                    .attr_value(c::DW_AT_name)
                    .and_then(|v| self.dwarf.attr_string(&unit, v).ok())
                    .map(|n| n.inner().to_string_lossy().into_owned())
                else {
                    continue;
                };
                let qualified = match scopes.last() {
                    Some((_, outer)) => format!("{outer}::{name}"),
                    None => name.clone(),
                };
                if is_type && entry.attr(c::DW_AT_declaration).is_none() {
                    let Some(off) = entry.offset().to_debug_info_offset(&unit.header) else {
                        continue;
                    };
                    let off = off.0 as u64;
                    if qualified != name {
                        map.entry(qualified.clone()).or_default().push(off);
                    }
                    map.entry(name).or_default().push(off);
                }
                if entry.has_children() {
                    scopes.push((depth, qualified));
                }
            }
        }
        map
    }

    /// All unit start offsets (for whole-program scans).
    pub(crate) fn all_units(&self) -> Vec<usize> {
        self.unit_starts().to_vec()
    }

    /// The line-table row covering `address` in the unit starting at
    /// `unit_start`: its discriminator (0 if none), and whether its file
    /// register still had the sequence's initial value (no
    /// `DW_LNS_set_file` yet), which binutils resolves differently.
    pub(crate) fn row_extras(&self, unit: &Unit, address: u64) -> RowExtras {
        let unit_start = unit.header.offset().0;
        let table = {
            let cached = self.discriminators.borrow().get(&unit_start).cloned();
            match cached {
                Some(t) => t,
                None => {
                    let t = Arc::new(build_extras(unit).unwrap_or_default());
                    self.discriminators
                        .borrow_mut()
                        .insert(unit_start, t.clone());
                    t
                }
            }
        };
        let i = table.partition_point(|(a, _)| *a <= address);
        i.checked_sub(1)
            .map_or(RowExtras::default(), |i| table[i].1)
    }
}

fn build_extras(unit: &Unit) -> Result<Vec<(u64, RowExtras)>, gimli::Error> {
    {
        let Some(mut program) = unit.line_program.clone() else {
            return Ok(Vec::new());
        };
        let header = program.header().clone();
        let mut instructions = header.instructions();
        let mut row = gimli::LineRow::new(&header);
        let mut file_set = false;
        let mut seqs: Vec<Vec<(u64, RowExtras)>> = Vec::new();
        let mut cur: Vec<(u64, RowExtras)> = Vec::new();
        while let Some(instruction) = instructions.next_instruction(&header)? {
            if let gimli::LineInstruction::SetFile(_) = instruction {
                file_set = true;
            }
            if !row.execute(instruction, &mut program)? {
                continue;
            }
            if row.end_sequence() {
                cur.push((row.address(), RowExtras::default()));
                seqs.push(std::mem::take(&mut cur));
                file_set = false;
                row.reset(&header);
                continue;
            }
            let extras = RowExtras {
                discriminator: row.discriminator() as u32,
                initial_file: !file_set,
                file: row.file_index(),
            };
            row.reset(&header);
            // Several rows at one address: the last one describes it.
            if let Some(last) = cur.last_mut()
                && last.0 == row.address()
            {
                last.1 = extras;
                continue;
            }
            cur.push((row.address(), extras));
        }
        seqs.sort_by_key(|s| s.first().map_or(0, |r| r.0));
        let mut out: Vec<(u64, RowExtras)> = Vec::new();
        for s in seqs {
            for (a, e) in s {
                if out.last().is_some_and(|l| l.1 == e) {
                    continue;
                }
                out.push((a, e));
            }
        }
        Ok(out)
    }
}

/// What binutils prints from a line-table row beyond file and line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RowExtras {
    pub(crate) discriminator: u32,
    pub(crate) initial_file: bool,
    pub(crate) file: u64,
}

/// A source position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file, as DWARF names it (directory joined with the file name).
    pub file: String,
    /// Line (0 when unknown).
    pub line: u32,
    /// Column (0 when unknown or the left edge).
    pub column: u32,
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if self.column != 0 {
            write!(f, ":{}", self.column)?;
        }
        Ok(())
    }
}

/// One frame of the inline chain at an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function's name as DWARF gives it (linkage name if present, so
    /// possibly mangled); `None` if unknown.
    pub function: Option<String>,
    /// The function name demangled (Rust without hash); `None` if unknown.
    pub demangled: Option<String>,
    /// For the innermost frame the address's own line; for outer frames the
    /// call site of the frame inside them.
    pub location: Option<SourceLocation>,
    /// True for frames of inlined code (every frame but the last).
    pub inlined: bool,
}
