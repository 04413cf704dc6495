//! The line table of one range of code, as a source-level stepper needs it.

use crate::elf::Elf;
use crate::error::{Error, Result};

/// One row of the line table: the code at `[start, start + len)` belongs to
/// `file:line` (line 0: compiler-generated code with no line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRow {
    /// First address of the row.
    pub start: u64,
    /// Bytes it covers.
    pub len: u64,
    /// Source file.
    pub file: String,
    /// Source line (0: none).
    pub line: u32,
}

impl Elf {
    /// The line-table rows covering `[lo, hi)`, in address order.
    pub fn line_rows_in(&self, lo: u64, hi: u64) -> Result<Vec<LineRow>> {
        let dw = self.state.dwarf()?;
        let iter = dw
            .ctx
            .find_location_range(lo, hi)
            .map_err(|e| Error::dwarf(&self.state.path, e))?;
        let mut rows: Vec<LineRow> = iter
            .map(|(start, len, l)| LineRow {
                start,
                len,
                file: self.display_path(l.file.unwrap_or("")),
                line: l.line.unwrap_or(0),
            })
            .collect();
        rows.sort_by_key(|r| r.start);
        Ok(rows)
    }
}

/// One row of the line table as gdb reads it (`maint info line-table`):
/// rows of line 0 are dropped (the previous row extends over them), each
/// row ends where the next one (or a sequence or file change) starts, and
/// `is_stmt` is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StmtRow {
    /// First address of the row.
    pub start: u64,
    /// First address after it.
    pub end: u64,
    /// Source file (named as `addr2line` names it).
    pub file: String,
    /// Source line (never 0).
    pub line: u32,
    /// `is_stmt` in the line program.
    pub is_stmt: bool,
}

/// A line-program entry: (address, `Some((file index, line, is_stmt))`,
/// or `None` for the end of a sequence or of a file's rows).
type Entry = (u64, Option<(u64, u32, bool)>);

/// An inlined call's code, as gdb's block of an inline frame sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineBlock {
    /// `DW_AT_low_pc`/`DW_AT_ranges` in the order DWARF lists them.
    pub ranges: Vec<std::ops::Range<u64>>,
}

impl InlineBlock {
    /// gdb's entry pc of a block: the start of its first listed range.
    pub fn entry_pc(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.start)
    }

    /// Is `pc` in one of its ranges?
    pub fn contains(&self, pc: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&pc))
    }
}

impl Elf {
    /// The gdb view of the line table of the unit covering `lo`, for the
    /// sequences that overlap `[lo, hi)`, in address order.
    pub fn stmt_rows_in(&self, lo: u64, hi: u64) -> Result<Vec<StmtRow>> {
        let dw = self.state.dwarf()?;
        let path = &self.state.path;
        let Some(unit) = dw
            .ctx
            .find_dwarf_and_unit(lo)
            .skip_all_loads()
            .map(|u| u.unit)
        else {
            return Ok(Vec::new());
        };
        let Some(program) = unit.line_program.clone() else {
            return Ok(Vec::new());
        };
        let header = program.header().clone();
        let mut names: std::collections::HashMap<u64, String> = Default::default();
        let mut file_name = |index: u64| -> String {
            names
                .entry(index)
                .or_insert_with(|| render_file(&dw.dwarf, unit, &header, index).unwrap_or_default())
                .clone()
        };
        let mut entries: Vec<Entry> = Vec::new();
        let mut seq: Vec<Entry> = Vec::new();
        let mut rows = program.rows();
        let mut last_file: Option<u64> = None;
        let mut last_address: Option<u64> = None;
        let mut seq_lo = u64::MAX;
        while let Some((_, row)) = rows.next_row().map_err(|e| Error::dwarf(path, e))? {
            let address = row.address();
            if row.end_sequence() {
                seq.push((address, None));
                if seq_lo < hi && address > lo {
                    entries.append(&mut seq);
                }
                seq.clear();
                last_file = None;
                last_address = None;
                seq_lo = u64::MAX;
                continue;
            }
            seq_lo = seq_lo.min(address);
            let file = row.file_index();
            let line = row.line().map_or(0, |l| l.get() as u32);
            let is_stmt = row.is_stmt();
            let changed = last_file.is_some_and(|f| f != file);
            let ignore = (changed && last_address == Some(address) && !is_stmt) || line == 0;
            if changed && !ignore {
                seq.push((address, None));
            }
            if !ignore {
                seq.push((address, Some((file, line, is_stmt))));
                last_file = Some(file);
            }
            last_address = Some(address);
        }
        // Stable sort by address; at one address a row beats an end, the
        // last row wins unless it is not a statement and an earlier one is.
        entries.sort_by_key(|e| e.0);
        let mut merged: Vec<Entry> = Vec::new();
        for e in entries {
            match merged.last_mut() {
                Some(last) if last.0 == e.0 => match (last.1, e.1) {
                    (_, None) => {}
                    (Some((_, _, true)), Some((_, _, false))) => {}
                    _ => last.1 = e.1,
                },
                _ => merged.push(e),
            }
        }
        let mut out = Vec::new();
        for (i, (start, row)) in merged.iter().enumerate() {
            let Some((file, line, is_stmt)) = row else {
                continue;
            };
            let end = merged.get(i + 1).map_or(start + 1, |n| n.0);
            out.push(StmtRow {
                start: *start,
                end,
                file: file_name(*file),
                line: *line,
                is_stmt: *is_stmt,
            });
        }
        Ok(out)
    }

    /// The blocks of the inlined frames at `address`, innermost first (as
    /// [`Elf::frames`] lists them, without the last, real frame).
    pub fn inline_blocks(&self, address: u64) -> Result<Vec<InlineBlock>> {
        let dw = self.state.dwarf()?;
        let (raw, unit) = self.raw_frames(address)?;
        let Some(unit) = unit else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for f in raw.iter().take(raw.len().saturating_sub(1)) {
            let mut ranges = Vec::new();
            if let Some(die) = f.die
                && let Ok(e) = unit.entry(gimli::UnitOffset(die))
                && let Ok(mut it) = dw.dwarf.die_ranges(unit, &e)
            {
                while let Ok(Some(r)) = it.next() {
                    if r.begin < r.end {
                        ranges.push(r.begin..r.end);
                    }
                }
            }
            out.push(InlineBlock { ranges });
        }
        Ok(out)
    }
}

/// A file of a unit's line table named as addr2line names it: the unit's
/// directory, the file's directory (unless entry 0), the file's name; an
/// absolute part replaces what came before.
fn render_file(
    dwarf: &gimli::Dwarf<crate::elf::Reader>,
    unit: &crate::dwarf::Unit,
    header: &gimli::LineProgramHeader<crate::elf::Reader>,
    index: u64,
) -> Option<String> {
    let f = header.file(index)?;
    let text = |v| -> Option<String> {
        Some(
            dwarf
                .attr_string(unit, v)
                .ok()?
                .inner()
                .to_string_lossy()
                .into_owned(),
        )
    };
    let push = |path: &mut String, p: &str| {
        if p.starts_with('/') || path.is_empty() {
            *path = p.to_string();
        } else {
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(p);
        }
    };
    let mut path = unit
        .comp_dir
        .as_ref()
        .map(|d| d.inner().to_string_lossy().into_owned())
        .unwrap_or_default();
    if f.directory_index() != 0
        && let Some(d) = f.directory(header)
    {
        push(&mut path, &text(d)?);
    }
    push(&mut path, &text(f.path_name())?);
    Some(path)
}
