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
                file: l.file.unwrap_or("").to_string(),
                line: l.line.unwrap_or(0),
            })
            .collect();
        rows.sort_by_key(|r| r.start);
        Ok(rows)
    }
}
