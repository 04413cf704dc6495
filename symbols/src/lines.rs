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

fn location(elf: &Elf, l: addr2line::Location<'_>) -> SourceLocation {
    SourceLocation {
        file: elf.display_path(l.file.unwrap_or("")),
        line: l.line.unwrap_or(0),
        column: l.column.unwrap_or(0),
    }
}

impl Elf {
    /// gdb's `set substitute-path`: file names this crate hands out
    /// (locations, frames, line rows, `file:line` matches) have a leading
    /// FROM (whole path components) replaced by TO; the first rule that
    /// matches wins. `kdbg addr2line` keeps binutils' names.
    pub fn set_substitute_paths(&self, rules: Vec<(String, String)>) {
        *self.state.paths.borrow_mut() = rules;
    }

    /// The rules in force (the automatic ones last).
    pub fn substitute_paths(&self) -> Vec<(String, String)> {
        let mut v = self.state.paths.borrow().clone();
        v.extend(self.auto_substitute_paths());
        v
    }

    /// For a Linux vmlinux, the build directories its DWARF names are
    /// stripped so paths read as in the source tree (`fs/open.c`, as gdb
    /// shows them): what precedes `init/main.c` in `start_kernel`'s file
    /// (`debian/build/build_amd64_none_cloud-amd64/` in Debian's C units)
    /// and `arch/x86/entry/entry_64.S` in `entry_SYSCALL_64`'s
    /// (`/build/reproducible-path/linux-6.1.172/` in its assembly units) --
    /// unless that directory exists here (a local build: its paths open as
    /// they are).
    pub fn auto_substitute_paths(&self) -> Vec<(String, String)> {
        self.state
            .auto_path
            .get_or_init(|| {
                let st = self.state.symtab();
                if st.lookup("linux_banner").is_empty() {
                    return Vec::new();
                }
                let Ok(dw) = self.state.dwarf() else {
                    return Vec::new();
                };
                let mut out: Vec<(String, String)> = Vec::new();
                for (sym, file) in [
                    ("start_kernel", "init/main.c"),
                    ("entry_SYSCALL_64", "arch/x86/entry/entry_64.S"),
                ] {
                    let Some(a) = st.lookup(sym).first().map(|s| s.address) else {
                        continue;
                    };
                    let Ok(Some(l)) = dw.ctx.find_location(a) else {
                        continue;
                    };
                    let Some(prefix) = l.file.and_then(|f| f.strip_suffix(file)) else {
                        continue;
                    };
                    if prefix.is_empty()
                        || !prefix.ends_with('/')
                        || std::path::Path::new(prefix).is_dir()
                    {
                        continue;
                    }
                    let rule = (prefix.trim_end_matches('/').to_string(), String::new());
                    if !out.contains(&rule) {
                        out.push(rule);
                    }
                }
                out
            })
            .clone()
    }

    /// `raw` with the substitute-path rules applied: a rule set by the
    /// user matches the recorded name or the name an automatic rule
    /// shows (`fs/open.c`), whichever it prefixes; else the automatic rule.
    pub fn display_path(&self, raw: &str) -> String {
        let auto = self
            .auto_substitute_paths()
            .iter()
            .find_map(|(f, t)| substitute(raw, f, t));
        let rules = self.state.paths.borrow();
        for (from, to) in rules.iter() {
            if let Some(p) = substitute(raw, from, to)
                .or_else(|| auto.as_deref().and_then(|a| substitute(a, from, to)))
            {
                return p;
            }
        }
        auto.unwrap_or_else(|| raw.to_string())
    }
}

/// `path` with a leading `from` (whole components) replaced by `to`.
fn substitute(path: &str, from: &str, to: &str) -> Option<String> {
    let from = from.trim_end_matches('/');
    let rest = path.strip_prefix(from)?;
    if from.is_empty() || !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(if to.is_empty() {
        rest.trim_start_matches('/').to_string()
    } else {
        format!("{}{rest}", to.trim_end_matches('/'))
    })
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
                    location: f.location.map(|l| location(self, l)),
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
        Ok(loc.map(|l| location(self, l)))
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
        let slide = self.state.slide.get();
        let exec: Vec<std::ops::Range<u64>> = self
            .state
            .object
            .sections()
            .filter(|s| s.kind() == object::SectionKind::Text && s.size() > 0)
            .map(|s| slide.to_runtime(s.address())..slide.to_runtime(s.address() + s.size()))
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
                .as_ref()
                .map(|d| d.inner().to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut names: Vec<(u64, String)> = Vec::new();
            let base = if header.version() >= 5 { 0 } else { 1 };
            for (i, f) in header.file_names().iter().enumerate() {
                // Cheap filter first: the file name must end like the suffix.
                let Ok(bare) = dw.dwarf.attr_string(&unit, f.path_name()) else {
                    continue;
                };
                if !bare.inner().slice().ends_with(last.as_bytes()) {
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
                    push(&d.inner().to_string_lossy());
                }
                push(&bare.inner().to_string_lossy());
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
                        file: self.display_path(fname),
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

#[cfg(test)]
mod substitute_tests {
    use super::substitute;

    #[test]
    fn whole_leading_components_only() {
        let raw = "debian/build/b/fs/open.c";
        assert_eq!(
            substitute(raw, "debian/build/b", "").as_deref(),
            Some("fs/open.c")
        );
        assert_eq!(
            substitute(raw, "debian/build/b/", "/src").as_deref(),
            Some("/src/fs/open.c")
        );
        assert_eq!(
            substitute("fs/open.c", "fs", "/l/fs").as_deref(),
            Some("/l/fs/open.c")
        );
        assert_eq!(substitute("fsx/open.c", "fs", "/l"), None);
        assert_eq!(substitute("fs/open.c", "", "/l"), None);
        assert_eq!(substitute("fs", "fs", "/l/fs").as_deref(), Some("/l/fs"));
    }
}
