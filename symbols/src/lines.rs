//! Addresses to source lines with inline chains, and source lines to addresses.

use crate::dwarf::{Frame, SourceLocation};
use crate::elf::Elf;
use crate::error::{Error, Result};
use object::{Object, ObjectSection};

/// A frame plus where its DIE is (unit header offset, offset in unit).
pub(crate) struct RawFrame {
    pub(crate) frame: Frame,
    pub(crate) die: Option<usize>,
    pub(crate) unit: Option<usize>,
}

/// A block of code: the containing function's start, and the unit and DIE
/// of the innermost (inlined) frame at an address.
type BlockKey = (Option<u64>, Option<(Option<usize>, Option<usize>)>);

/// One address found for a `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineMatch {
    /// The first address of a block of code for the line.
    pub address: u64,
    /// The full file name the suffix matched.
    pub file: String,
    /// The line that has code (the asked line, or the next one with code).
    pub line: u32,
}

fn location(l: addr2line::Location<'_>) -> SourceLocation {
    SourceLocation {
        file: l.file.unwrap_or("").to_string(),
        line: l.line.unwrap_or(0),
        column: l.column.unwrap_or(0),
    }
}

/// True if `path` ends with `suffix` at a path component boundary.
pub(crate) fn path_matches(path: &str, suffix: &str) -> bool {
    let suffix = suffix.trim_start_matches("./");
    path == suffix
        || path
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('/'))
}

impl Elf {
    /// The inline chain at `address`, innermost first (as `addr2line -i`).
    /// The last frame is the function the code was compiled into. Without
    /// DWARF: one frame named from the symbol table, no location. Empty if
    /// nothing is known.
    pub fn frames(&self, address: u64) -> Result<Vec<Frame>> {
        Ok(self
            .raw_frames(address)?
            .0
            .into_iter()
            .map(|f| f.frame)
            .collect())
    }

    /// The frames, and the unit they come from (as parsed by addr2line).
    pub(crate) fn raw_frames(
        &self,
        address: u64,
    ) -> Result<(Vec<RawFrame>, Option<&crate::dwarf::Unit>)> {
        let dw = match self.state.dwarf() {
            Ok(dw) => dw,
            Err(Error::NoDwarf { .. }) => {
                return Ok((
                    self.symbolize(address)
                        .map(|s| RawFrame {
                            frame: Frame {
                                function: Some(s.symbol.name.to_string()),
                                demangled: Some(s.symbol.demangled().into_owned()),
                                location: None,
                                inlined: false,
                            },
                            die: None,
                            unit: None,
                        })
                        .into_iter()
                        .collect(),
                    None,
                ));
            }
            Err(e) => return Err(e),
        };
        let path = &self.state.path;
        let unit_ref = dw
            .ctx
            .find_dwarf_and_unit(address)
            .skip_all_loads()
            .map(|u| u.unit);
        let unit = unit_ref.map(|u| u.header.offset().0);
        let mut iter = dw
            .ctx
            .find_frames(address)
            .skip_all_loads()
            .map_err(|e| Error::dwarf(path, e))?;
        let mut out = Vec::new();
        while let Some(f) = iter.next().map_err(|e| Error::dwarf(path, e))? {
            let (function, demangled) = match &f.function {
                Some(n) => (
                    n.raw_name().ok().map(|s| s.into_owned()),
                    n.demangle().ok().map(|s| s.into_owned()),
                ),
                None => (None, None),
            };
            out.push(RawFrame {
                frame: Frame {
                    function,
                    demangled,
                    location: f.location.map(location),
                    inlined: true,
                },
                die: f.dw_die_offset.map(|o| o.0),
                unit,
            });
        }
        if let Some(last) = out.last_mut() {
            last.frame.inlined = false;
        }
        Ok((out, unit_ref))
    }

    /// The source position of `address` (innermost, like `addr2line`
    /// without `-i`). `Ok(None)` if the line table does not cover it.
    pub fn location(&self, address: u64) -> Result<Option<SourceLocation>> {
        let dw = self.state.dwarf()?;
        let loc = dw
            .ctx
            .find_location(address)
            .map_err(|e| Error::dwarf(&self.state.path, e))?;
        Ok(loc.map(location))
    }

    /// The locations of code for `file:line`, `file` matched as a path
    /// suffix (`main.rs`, `kernel/src/main.rs`), in address order.
    ///
    /// As gdb's `break FILE:LINE`: the rows of the line tables that are
    /// statements of that line; if the line has none, the smallest line
    /// after it that has some (in any unit). One location per block of code:
    /// per function, and per inlined copy within it (the lowest address of
    /// each), so a line of a generic or inlined function resolves to every
    /// copy. Rows of code the linker discarded (sequences that do not start
    /// in an executable section) are ignored.
    pub fn line_addresses(&self, file: &str, line: u32) -> Result<Vec<LineMatch>> {
        let mut rows = self.line_rows(file)?;
        let Some(best) = rows.iter().map(|r| r.line).filter(|l| *l >= line).min() else {
            return Err(Error::NoSuchLine {
                file: file.to_string(),
                line,
                last: rows.iter().map(|r| r.line).max().unwrap_or(0),
            });
        };
        rows.retain(|r| r.line == best);
        rows.sort_by_key(|r| r.address);
        rows.dedup_by_key(|r| r.address);
        // One per block: key by the containing function and the innermost
        // inlined instance (its DIE) at the address.
        let mut seen: Vec<BlockKey> = Vec::new();
        let mut hits = Vec::new();
        for r in rows {
            let func = self.function_symbol(r.address).map(|s| s.address);
            let block = self
                .raw_frames(r.address)
                .ok()
                .and_then(|(frames, _)| frames.first().map(|f| (f.unit, f.die)));
            let key = (func, block);
            if func.is_some() && seen.contains(&key) {
                continue;
            }
            seen.push(key);
            hits.push(r);
        }
        Ok(hits)
    }

    /// Every statement row of the files matching `file` (path suffix), in
    /// live code. `NoSuchFile` if no unit names such a file.
    fn line_rows(&self, file: &str) -> Result<Vec<LineMatch>> {
        let dw = self.state.dwarf()?;
        let path = &self.state.path;
        let exec: Vec<std::ops::Range<u64>> = self
            .state
            .object
            .sections()
            .filter(|s| s.kind() == object::SectionKind::Text && s.size() > 0)
            .map(|s| s.address()..s.address() + s.size())
            .collect();
        let live = |a: u64| exec.iter().any(|r| r.contains(&a));
        let last = file.rsplit('/').next().unwrap_or(file);
        let mut out: Vec<LineMatch> = Vec::new();
        let mut any_file = false;
        for start in dw.all_units() {
            let Ok(unit) = dw.unit_at(start) else {
                continue;
            };
            let Some(program) = unit.line_program.clone() else {
                continue;
            };
            let header = program.header().clone();
            let comp_dir = unit
                .comp_dir
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut names: Vec<(u64, String)> = Vec::new();
            let base = if header.version() >= 5 { 0 } else { 1 };
            for (i, f) in header.file_names().iter().enumerate() {
                // Cheap filter first: the file name must end like the suffix.
                let Ok(bare) = dw.dwarf.attr_string(&unit, f.path_name()) else {
                    continue;
                };
                if !bare.slice().ends_with(last.as_bytes()) {
                    continue;
                }
                // As addr2line renders it: comp_dir / dir / name, where an
                // absolute component replaces what came before.
                let mut p = comp_dir.clone();
                let mut push = |part: &str| {
                    if part.starts_with('/') {
                        p.clear();
                    } else if !p.is_empty() && !p.ends_with('/') {
                        p.push('/');
                    }
                    p.push_str(part);
                };
                if f.directory_index() != 0
                    && let Some(dir) = f.directory(&header)
                    && let Ok(d) = dw.dwarf.attr_string(&unit, dir)
                {
                    push(&d.to_string_lossy());
                }
                push(&bare.to_string_lossy());
                if path_matches(&p, file) {
                    names.push((i as u64 + base, p));
                }
            }
            if names.is_empty() {
                continue;
            }
            any_file = true;
            let mut rows = program.rows();
            // Whether the current sequence is live code (decided by its
            // first row).
            let mut seq_live: Option<bool> = None;
            while let Some((_, row)) = rows.next_row().map_err(|e| Error::dwarf(path, e))? {
                if row.end_sequence() {
                    seq_live = None;
                    continue;
                }
                let is_live = *seq_live.get_or_insert_with(|| live(row.address()));
                if !is_live || !row.is_stmt() {
                    continue;
                }
                let Some(l) = row.line().map(|l| l.get() as u32) else {
                    continue;
                };
                if let Some((_, fname)) = names.iter().find(|(i, _)| *i == row.file_index()) {
                    out.push(LineMatch {
                        address: row.address(),
                        file: fname.clone(),
                        line: l,
                    });
                }
            }
        }
        if !any_file {
            return Err(Error::NoSuchFile(file.to_string()));
        }
        Ok(out)
    }
}
