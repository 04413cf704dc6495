//! From what the user typed (`spawn_task`, `sys_open+4`, `0xffff...`,
//! `workloads.rs:42`) to an address, with helpful errors.

use anyhow::{Result, anyhow, bail};

use crate::cmd::parse::number;
use crate::cmd::table::edit_distance;
use crate::disas::{Boundary, Syntax, boundary};
use crate::session::Shared;

#[derive(Debug, Clone)]
pub struct Resolved {
    pub addr: u64,
    /// How to show it: `spawn_task`, `sys_open+0x4`, `file.rs:42`.
    pub name: String,
    /// The start of the function containing it, if known.
    pub func_start: Option<u64>,
}

fn tail(name: &str) -> &str {
    name.rsplit("::").next().unwrap_or(name)
}

/// Up to three known names close to `name`.
pub fn near_names(sh: &Shared, name: &str) -> Vec<String> {
    let want = tail(name);
    let limit = (want.len() / 3).max(1);
    let mut scored: Vec<(usize, String)> = sh
        .image
        .names(false)
        .iter()
        .filter_map(|n| {
            let tl = tail(n);
            let mut d = edit_distance(want, tl);
            if tl.contains(want) && want.len() >= 3 {
                d = d.min(1);
            }
            (d <= limit).then(|| (d, n.to_string()))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

pub fn unknown_symbol(sh: &Shared, name: &str) -> anyhow::Error {
    let near = near_names(sh, name);
    if near.is_empty() {
        anyhow!("unknown symbol `{name}`: check the spelling (Tab completes names)")
    } else {
        anyhow!("unknown symbol `{name}`: did you mean {}?", near.join(", "))
    }
}

fn is_file_line(text: &str) -> Option<(&str, u32)> {
    let (file, line) = text.rsplit_once(':')?;
    if file.is_empty() || file.ends_with(':') || !(file.contains('.') || file.contains('/')) {
        return None;
    }
    Some((file, line.parse().ok()?))
}

/// Every location of `text`: all blocks of code of a `file:line` (each
/// inlined or generic copy, as gdb's `break FILE:LINE`), in address order;
/// one location for anything else.
pub fn resolve_all(sh: &Shared, text: &str) -> Result<Vec<Resolved>> {
    let text = gdb_address(text);
    let Some((file, line)) = is_file_line(text.trim_start_matches('&')) else {
        return Ok(vec![resolve(sh, text)?]);
    };
    let elf = sh.elf()?;
    let hits = elf
        .line_addresses(file, line)
        .map_err(|e| anyhow!("cannot resolve {text}: {e}"))?;
    drop(elf);
    if hits.is_empty() {
        bail!(
            "no code at {text}: the line has no instructions (try a nearby line, or `info line {file}:N`)"
        );
    }
    Ok(hits
        .iter()
        .map(|h| {
            let func_start = sh.image.containing(h.address).map(|(a, _)| a);
            Resolved {
                addr: h.address,
                // The line that has the code (the asked one may have none).
                name: format!("{}:{} ({})", h.file, h.line, sh.describe(h.address)),
                func_start,
            }
        })
        .collect())
}

/// gdb's `*ADDR` / `*EXPR` (`break *0x1761c0`, `break *(sum8+4)`,
/// `disas *sum8`): the address itself, as a location.
pub fn gdb_address(text: &str) -> &str {
    let Some(rest) = text.trim().strip_prefix('*') else {
        return text;
    };
    let rest = rest.trim();
    rest.strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(str::trim)
        .unwrap_or(rest)
}

/// Resolve a code or data location (the first of several for a
/// `file:line`: see [`resolve_all`]).
pub fn resolve(sh: &Shared, text: &str) -> Result<Resolved> {
    let text = gdb_address(text);
    let text = text.trim_start_matches('&');
    if text.is_empty() {
        bail!("missing location: give a symbol, symbol+offset, 0xADDRESS or file:line");
    }
    if text.as_bytes()[0].is_ascii_digit() || text.starts_with('-') {
        let addr = number(text)?;
        let name = sh.describe(addr);
        let func_start = sh.image.containing(addr).map(|(a, _)| a);
        return Ok(Resolved {
            addr,
            name,
            func_start,
        });
    }
    if is_file_line(text).is_some() {
        return resolve_all(sh, text)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no code at {text}"));
    }
    let (name, off) = match text.rsplit_once('+') {
        Some((n, o)) if !n.is_empty() => (n, number(o)?),
        _ => (text, 0),
    };
    let elf = sh.elf()?;
    let mut syms = elf.lookup(name);
    if syms.is_empty() && !name.contains("::") {
        // `NEXT_PID` for `kernel::workloads::NEXT_PID`: a unique last path
        // component is enough.
        let mut full: Vec<String> = sh
            .image
            .symbols_where(|n| n.rsplit("::").next() == Some(name) && n.contains("::"))
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        full.sort();
        full.dedup();
        match full.as_slice() {
            [one] => syms = elf.lookup(one),
            [] => {}
            many => bail!(
                "`{name}` is ambiguous: {}; give the full path",
                many.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let Some(sym) = syms
        .iter()
        .find(|s| s.kind == symbols::SymbolKind::Function)
        .or_else(|| syms.first())
    else {
        drop(elf);
        return Err(unknown_symbol(sh, name));
    };
    let addr = sym.address.wrapping_add(off);
    let display = if off == 0 {
        name.to_string()
    } else {
        format!("{name}+{off:#x}")
    };
    if sym.size > 0 && off >= sym.size && sym.kind == symbols::SymbolKind::Function {
        bail!(
            "{display} is past the end of {name} ({} bytes): use an offset below {:#x}",
            sym.size,
            sym.size
        );
    }
    Ok(Resolved {
        addr,
        name: display,
        func_start: (sym.kind == symbols::SymbolKind::Function).then_some(sym.address),
    })
}

/// Refuse addresses that are not instruction starts or not in kernel text
/// (the kernel refuses them too; the host says it better).
pub fn check_code(sh: &Shared, r: &Resolved) -> Result<()> {
    let img = &sh.image;
    if !img.loaded() {
        return Ok(());
    }
    if !img.is_text(r.addr) {
        if img.is_mapped(r.addr) {
            bail!(
                "{} ({:#x}) is data, not kernel code: probes go on instructions",
                r.name,
                r.addr
            );
        }
        bail!(
            "{:#x} is not in the kernel image (unmapped or outside kernel text): use a kernel code address",
            r.addr
        );
    }
    let Some(start) = r.func_start else {
        return Ok(());
    };
    if start == r.addr {
        return Ok(());
    }
    let len = (r.addr - start) as usize + 16;
    let Some(bytes) = img.read(start, len) else {
        return Ok(());
    };
    let mut dis = sh.disassembler(Syntax::Intel);
    match boundary(&mut dis, &bytes, start, r.addr) {
        Boundary::Inside { start: s, text } => bail!(
            "{} ({:#x}) is in the middle of `{text}` at {}: use an instruction start (see `disas {}`)",
            r.name,
            r.addr,
            sh.describe(s),
            sh.describe(start)
        ),
        _ => Ok(()),
    }
}
