//! disas: iced-x86 with symbols, marks and source lines.

use anyhow::{Result, anyhow, bail};

use super::state::{address_of, read_mem};
use crate::cmd::Invocation;
use crate::cmd::parse::count;
use crate::disas::Syntax;
use crate::output::*;
use crate::session::Session;

pub fn disas(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let mut source = false;
    let mut syntax = s.syntax;
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "-s" | "/s" => source = true,
            "--intel" | "-i" => syntax = Syntax::Intel,
            "--gas" | "--att" => syntax = Syntax::Gas,
            _ => rest.push(a.clone()),
        }
    }
    let rip = if s.connected() && !s.running() {
        s.registers().ok().map(|r| r.rip)
    } else {
        None
    };
    let (start, count) = match rest.as_slice() {
        [] => {
            let rip = rip.ok_or_else(|| {
                anyhow!("give a location: disas LOC [N] (no stopped CPU to start from)")
            })?;
            (rip, None)
        }
        [loc] => (address_of(s, loc)?.0, None),
        [loc, n] => (address_of(s, loc)?.0, Some(count(n)? as usize)),
        _ => bail!("usage: disas [-s] [LOC] [N]"),
    };
    // Whole function when starting at its entry.
    let bounds = s.shared.elf().ok().and_then(|e| e.function_bounds(start));
    let count = count.unwrap_or(match &bounds {
        Some(b) if b.start == start => 400,
        _ => 16,
    });
    let limit = match &bounds {
        Some(b) if b.start == start && count == 400 => (b.end - b.start) as usize,
        _ => count * 15,
    };
    let bytes: Vec<u8> = match s.shared.image.read(start, limit) {
        Some(b) if s.shared.image.is_text(start) => b,
        _ => read_mem(s, start, limit)?,
    };
    let mut d = s.shared.disassembler(syntax);
    let probes = s.shared.probes.live();
    let mut last_src = None;
    let lines = d
        .decode(&bytes, start, count)
        .into_iter()
        .map(|insn| {
            let mut marks = Vec::new();
            if Some(insn.addr) == rip {
                marks.push("=>".to_string());
            }
            for p in probes.iter().filter(|p| p.addr == insn.addr) {
                marks.push(format!("K{}", p.id));
            }
            for b in s.breakpoints.values().filter(|b| b.info.addr == insn.addr) {
                marks.push(format!("B{}", b.info.id));
            }
            let src = if source {
                let here = s.shared.source_of(insn.addr);
                if here.is_some() && here != last_src {
                    last_src = here.clone();
                    here.map(|h| source_line(&h))
                } else {
                    None
                }
            } else {
                None
            };
            DisasLine {
                location: s.shared.describe(insn.addr),
                insn,
                marks,
                source: src,
            }
        })
        .collect();
    Ok(Output::Disas { lines })
}

/// `file:line` plus the line's text when the file is readable.
fn source_line(loc: &str) -> String {
    if let Some((file, line)) = loc.rsplit_once(':')
        && let Ok(n) = line.parse::<usize>()
        && let Ok(text) = std::fs::read_to_string(file)
        && let Some(l) = text.lines().nth(n.saturating_sub(1))
    {
        return format!("{loc}: {}", l.trim());
    }
    loc.to_string()
}
