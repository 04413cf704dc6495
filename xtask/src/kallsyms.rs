//! Fills the kernel image's `.kallsyms` section from the ELF's own symbol
//! table, by patching file bytes (no relink: no address moves).

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use probes::kallsyms as format;

/// One function for the table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Function {
    pub start: u64,
    pub size: u64,
    pub name: String,
}

/// Longest name kept (longer demangled names are cut at a char boundary).
const MAX_NAME: usize = 200;

/// The functions of an ELF image: FUNC symbols with their demangled names
/// (Rust without the hash), sorted by address, duplicates removed.
pub fn functions(elf: &[u8]) -> Result<Vec<Function>> {
    let file = object::File::parse(elf).context("parsing the kernel ELF")?;
    let mut set = BTreeSet::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.address() == 0 {
            continue;
        }
        let Ok(raw) = sym.name() else { continue };
        if raw.is_empty() {
            continue;
        }
        let mut name = format!("{:#}", rustc_demangle::demangle(raw));
        if name.len() > MAX_NAME {
            let mut cut = MAX_NAME;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        set.insert(Function {
            start: sym.address(),
            size: sym.size(),
            name,
        });
    }
    Ok(set.into_iter().collect())
}

/// Encodes `funcs` (sorted) in the blob format of `format.rs`.
pub fn encode(funcs: &[Function]) -> Result<Vec<u8>> {
    let count = funcs.len();
    let names_off = format::HEADER_LEN + count * format::ENTRY_LEN;
    let mut entries = Vec::with_capacity(count * format::ENTRY_LEN);
    let mut names = Vec::new();
    for f in funcs {
        let size = u32::try_from(f.size)
            .with_context(|| format!("function {} is larger than 4 GiB", f.name))?;
        entries.extend_from_slice(&f.start.to_le_bytes());
        entries.extend_from_slice(&size.to_le_bytes());
        entries.extend_from_slice(&(names.len() as u32).to_le_bytes());
        entries.extend_from_slice(&(f.name.len() as u32).to_le_bytes());
        entries.extend_from_slice(&0u32.to_le_bytes());
        names.extend_from_slice(f.name.as_bytes());
    }
    let total = names_off + names.len();
    let mut blob = Vec::with_capacity(total);
    blob.extend_from_slice(&format::MAGIC);
    blob.extend_from_slice(&format::VERSION.to_le_bytes());
    blob.extend_from_slice(&(count as u32).to_le_bytes());
    blob.extend_from_slice(&(names_off as u32).to_le_bytes());
    blob.extend_from_slice(&(names.len() as u32).to_le_bytes());
    blob.extend_from_slice(&(total as u32).to_le_bytes());
    blob.extend_from_slice(&0u32.to_le_bytes());
    blob.extend_from_slice(&entries);
    blob.extend_from_slice(&names);
    Ok(blob)
}

/// Writes the table into the `.kallsyms` section of `elf` (in place).
/// Returns (functions, bytes used, capacity).
pub fn patch(elf: &mut [u8]) -> Result<(usize, usize, usize)> {
    let funcs = functions(elf)?;
    let blob = encode(&funcs)?;
    let (offset, size) = {
        let file = object::File::parse(&*elf).context("parsing the kernel ELF")?;
        let Some(section) = file.section_by_name(".kallsyms") else {
            bail!("the kernel ELF has no .kallsyms section (kernel/linker.ld must keep it)");
        };
        let Some((offset, size)) = section.file_range() else {
            bail!(".kallsyms occupies no file bytes (it must be PROGBITS, not NOBITS)");
        };
        (offset as usize, size as usize)
    };
    if blob.len() > size {
        bail!(
            "the kernel's symbol table needs {} bytes but .kallsyms holds {size}; raise kallsyms::AREA_SIZE in kernel/src/kallsyms.rs",
            blob.len()
        );
    }
    let area = elf
        .get_mut(offset..offset + size)
        .context(".kallsyms lies outside the file")?;
    area.fill(0);
    area[..blob.len()].copy_from_slice(&blob);
    Ok((funcs.len(), blob.len(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(start: u64, size: u64, name: &str) -> Function {
        Function {
            start,
            size,
            name: name.into(),
        }
    }

    #[test]
    fn encoded_table_answers_lookups() {
        let funcs = vec![
            f(0x1000, 0x10, "a"),
            f(0x1010, 0x20, "kernel::b"),
            f(0x1040, 0, "c"),
            f(0x2000, 8, "sum8"),
        ];
        let blob = encode(&funcs).unwrap();
        let t = format::Table::parse(&blob).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup(0x1000).unwrap().name, "a");
        assert_eq!(t.lookup(0x100f).unwrap().name, "a");
        assert_eq!(t.lookup(0x1010).unwrap().name, "kernel::b");
        assert_eq!(t.lookup(0x102f).unwrap().name, "kernel::b");
        assert!(t.lookup(0x1030).is_none());
        assert_eq!(t.lookup(0x1040).unwrap().name, "c");
        assert!(t.lookup(0x1041).is_none());
        assert!(t.lookup(0xfff).is_none());
        assert_eq!(t.lookup(0x2007).unwrap().name, "sum8");
        assert!(t.lookup(0x2008).is_none());
        assert_eq!(t.find("sum8").unwrap().start, 0x2000);
        assert!(t.find("nope").is_none());
        assert_eq!(t.iter().count(), 4);
    }

    #[test]
    fn zeroed_or_truncated_areas_are_no_table() {
        assert!(format::Table::parse(&[0u8; 64]).is_none());
        let blob = encode(&[f(1, 1, "x")]).unwrap();
        assert!(format::Table::parse(&blob[..blob.len() - 1]).is_none());
        assert!(format::Table::parse(&blob[..10]).is_none());
    }

    #[test]
    fn empty_table_is_valid() {
        let blob = encode(&[]).unwrap();
        let t = format::Table::parse(&blob).unwrap();
        assert!(t.is_empty());
        assert!(t.lookup(5).is_none());
    }
}
