//! regs, x, write, disas, bt, info, ptype, threads, thread.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use symbols::{ParamLocation, Register, Registers, TypeKind};

use super::locate::resolve;
use crate::cmd::parse::number;
use crate::disas::Syntax;
use crate::output::*;
use crate::regs::{RegisterFile, decode_eflags};
use crate::session::Session;

pub fn regs(s: &mut Session, args: &[String]) -> Result<Output> {
    let verbose = match args {
        [] => false,
        [v] if v == "-v" => true,
        _ => bail!("usage: regs [-v]"),
    };
    let r = s.registers()?;
    Ok(Output::Regs {
        flags: decode_eflags(r.eflags),
        location: s.shared.describe(r.rip),
        regs: r,
        verbose,
    })
}

/// An address: `$reg`, a symbol, a number, `file:line`.
fn address_of(s: &Session, text: &str) -> Result<(u64, String)> {
    if let Some(reg) = text.strip_prefix('$').or_else(|| text.strip_prefix('%')) {
        if s.running() {
            bail!(
                "`{text}`: registers are only known while the kernel is stopped: use `interrupt` first"
            );
        }
        let regs = s.registers()?;
        let v = regs
            .get(reg)
            .ok_or_else(|| anyhow!("unknown register `{text}`: use $rsp, $rip, $rdi, ..."))?;
        return Ok((v, text.to_string()));
    }
    let r = resolve(&s.shared, text)?;
    Ok((r.addr, r.name))
}

/// `x/NFU`: count, format, unit size.
#[derive(Debug, PartialEq, Eq)]
pub struct Fmt {
    pub count: usize,
    pub format: char,
    pub size: usize,
}

pub fn parse_fmt(m: Option<&str>) -> Result<Fmt> {
    let mut f = Fmt {
        count: 1,
        format: 'x',
        size: 0,
    };
    let Some(m) = m else {
        f.size = 4;
        return Ok(f);
    };
    let digits: String = m.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !digits.is_empty() {
        f.count = digits.parse().map_err(|_| anyhow!("bad count in /{m}"))?;
    }
    for c in m[digits.len()..].chars() {
        match c {
            'x' | 'd' | 'u' | 'o' | 't' | 'c' | 'a' | 's' | 'i' => f.format = c,
            'b' => f.size = 1,
            'h' => f.size = 2,
            'w' => f.size = 4,
            'g' => f.size = 8,
            _ => bail!(
                "bad format letter `{c}` in /{m}: counts, then x d u o t c a s i, then b h w g"
            ),
        }
    }
    if f.size == 0 {
        f.size = match f.format {
            'a' => 8,
            'c' => 1,
            _ => 4,
        };
    }
    if f.count == 0 || f.count > 4096 {
        bail!("count {} out of range: use 1 to 4096", f.count);
    }
    Ok(f)
}

fn read_mem(s: &Session, addr: u64, len: usize) -> Result<Vec<u8>> {
    s.client()?.read_memory(addr, len).map_err(|e| match e {
        crate::rsp::RspError::Remote { code, .. } => anyhow!(
            "cannot read {len} bytes at {addr:#x}: unmapped or not canonical (the stub answered {code})"
        ),
        e => anyhow!("cannot read {len} bytes at {addr:#x}: {e}"),
    })
}

pub fn examine(s: &mut Session, modifier: Option<&str>, args: &[String]) -> Result<Output> {
    let [loc] = args else {
        bail!("usage: x[/NFU] ADDR|SYMBOL");
    };
    let f = parse_fmt(modifier)?;
    let (addr, _) = address_of(s, loc)?;
    let mut rows = Vec::new();
    match f.format {
        's' => {
            let mut a = addr;
            for _ in 0..f.count {
                let bytes = read_mem(s, a, 256)?;
                let n = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                let mut t = crate::events::quote(&bytes[..n]);
                if n == bytes.len() {
                    t.push_str("...");
                }
                rows.push(MemoryRow {
                    addr: a,
                    label: s.shared.symbolize_opt(a),
                    values: vec![t],
                });
                a += n as u64 + 1;
            }
        }
        'i' => {
            let bytes = read_mem(s, addr, f.count * 15)?;
            let mut d = s.shared.disassembler(s.syntax);
            for i in d.decode(&bytes, addr, f.count) {
                rows.push(MemoryRow {
                    addr: i.addr,
                    label: s.shared.symbolize_opt(i.addr),
                    values: vec![i.text],
                });
            }
        }
        _ => {
            let bytes = read_mem(s, addr, f.count * f.size)?;
            let per_row = (16 / f.size).max(1);
            for (ri, chunk) in bytes.chunks(per_row * f.size).enumerate() {
                let a = addr + (ri * per_row * f.size) as u64;
                let values = chunk
                    .chunks(f.size)
                    .map(|u| {
                        let mut b = [0u8; 8];
                        b[..u.len()].copy_from_slice(u);
                        let v = u64::from_le_bytes(b);
                        format_unit(s, v, f.format, f.size)
                    })
                    .collect();
                rows.push(MemoryRow {
                    addr: a,
                    label: s.shared.symbolize_opt(a),
                    values,
                });
            }
        }
    }
    Ok(Output::Memory { rows })
}

fn format_unit(s: &Session, v: u64, format: char, size: usize) -> String {
    let bits = size * 8;
    match format {
        'x' => format!("{v:#0w$x}", w = size * 2 + 2),
        'd' => {
            let shift = 64 - bits as u32;
            (((v << shift) as i64) >> shift).to_string()
        }
        'u' => v.to_string(),
        'o' => format!("{v:#o}"),
        't' => format!("{v:0w$b}", w = bits),
        'c' => {
            let c = (v & 0xff) as u8;
            if c.is_ascii_graphic() || c == b' ' {
                format!("'{}'", c as char)
            } else {
                format!("'\\x{c:02x}'")
            }
        }
        'a' => match s.shared.symbolize_opt(v) {
            Some(n) => format!("{v:#x} <{n}>"),
            None => format!("{v:#x}"),
        },
        _ => format!("{v:#x}"),
    }
}

pub fn write_mem(s: &mut Session, modifier: Option<&str>, args: &[String]) -> Result<Output> {
    let [loc, value] = args else {
        bail!("usage: write[/b|/h|/w|/g] ADDR|SYMBOL VALUE");
    };
    let size = match modifier {
        None | Some("g") => 8,
        Some("w") => 4,
        Some("h") => 2,
        Some("b") => 1,
        Some(m) => bail!("bad size /{m}: use /b /h /w or /g"),
    };
    let (addr, _) = address_of(s, loc)?;
    let v = number(value)?;
    if size < 8 && v >> (size * 8) != 0 && (v as i64) >= 0 {
        bail!("{v:#x} does not fit in {size} bytes");
    }
    let bytes = &v.to_le_bytes()[..size];
    s.client()?
        .write_memory(addr, bytes)
        .map_err(|e| anyhow!("cannot write at {addr:#x}: {e}"))?;
    Ok(Output::Written {
        addr,
        size,
        value: v,
    })
}

pub fn disas(s: &mut Session, args: &[String]) -> Result<Output> {
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
        [loc, n] => (address_of(s, loc)?.0, Some(number(n)? as usize)),
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
    let bytes: Vec<u8> = match s.shared.image.as_ref().and_then(|i| i.read(start, limit)) {
        Some(b) if s.shared.image.as_ref().is_some_and(|i| i.is_text(start)) => b.to_vec(),
        _ => read_mem(s, start, limit)?,
    };
    let mut d = s.shared.disassembler(syntax);
    let probes = s
        .shared
        .probes
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut last_src = None;
    let lines = d
        .decode(&bytes, start, count)
        .into_iter()
        .map(|insn| {
            let mut marks = Vec::new();
            if Some(insn.addr) == rip {
                marks.push("=>".to_string());
            }
            for p in probes.values().filter(|p| p.addr == insn.addr) {
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

fn to_unwind_regs(r: &RegisterFile) -> Registers {
    // gdb order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15.
    let map = [
        Register::RAX,
        Register::RBX,
        Register::RCX,
        Register::RDX,
        Register::RSI,
        Register::RDI,
        Register::RBP,
        Register::RSP,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    let mut out = Registers::new();
    for (i, reg) in map.iter().enumerate() {
        out.set(*reg, Some(r.gpr[i]));
    }
    out.set(Register::RIP, Some(r.rip));
    out
}

pub fn backtrace(s: &mut Session, args: &[String]) -> Result<Output> {
    let max = match args {
        [] => 64,
        [n] => number(n)? as usize,
        _ => bail!("usage: bt [N]"),
    };
    let regs = s.registers()?;
    let mut cache: HashMap<u64, Option<u64>> = HashMap::new();
    // Outstanding kretprobe instances: where trampolined frames really return.
    let mut insts: Vec<proto::reply::InstRow> = s
        .monitor("retinst")
        .map(|t| {
            t.lines()
                .filter_map(|l| proto::reply::InstRow::parse(l).ok())
                .collect()
        })
        .unwrap_or_default();
    insts.sort_by_key(|i| i.sp);
    let tramp: Vec<u64> = s
        .shared
        .symtab
        .as_ref()
        .map(|t| {
            t.iter()
                .filter(|(_, n)| {
                    n.contains("kretprobe_trampoline") || n.contains("rethook_trampoline")
                })
                .map(|(a, _)| a)
                .collect()
        })
        .unwrap_or_default();
    let mut frames = Vec::new();
    let mut cur = to_unwind_regs(&regs);
    let mut innermost = true;
    let mut how = "cfi".to_string();
    while frames.len() < max {
        let Some(mut pc) = cur.pc() else { break };
        if pc == 0 {
            break;
        }
        if tramp.iter().any(|t| pc >= *t && pc < t + 64)
            && let Some(pos) = insts
                .iter()
                .position(|i| cur.sp().is_none_or(|sp| i.sp + 8 >= sp.saturating_sub(8)))
        {
            pc = insts.remove(pos).ret;
            cur.set(Register::RIP, Some(pc));
            how = "kretprobe".into();
        }
        let lookup = if innermost { pc } else { pc.saturating_sub(1) };
        let mut inl = Vec::new();
        if let Ok(elf) = s.shared.elf()
            && let Ok(fr) = elf.frames(lookup)
        {
            inl = fr;
        }
        if inl.is_empty() {
            frames.push(FrameInfo {
                level: frames.len(),
                pc,
                function: s.shared.describe(pc),
                source: None,
                inlined: false,
                how: how.clone(),
            });
        } else {
            let n = inl.len();
            for (k, f) in inl.into_iter().enumerate() {
                let name = f
                    .demangled
                    .clone()
                    .or(f.function.clone())
                    .unwrap_or_else(|| s.shared.describe(pc));
                frames.push(FrameInfo {
                    level: frames.len(),
                    pc,
                    function: name,
                    source: f
                        .location
                        .filter(|l| l.line != 0)
                        .map(|l| format!("{}:{}", l.file, l.line)),
                    inlined: k + 1 < n,
                    how: how.clone(),
                });
            }
        }
        // One step: CFI, else frame pointers.
        let next = {
            let mut read = |a: u64| -> Option<u64> {
                if let Some(v) = cache.get(&a) {
                    return *v;
                }
                let v = s
                    .client()
                    .ok()?
                    .read_memory(a, 8)
                    .ok()
                    .and_then(|b| b.try_into().ok().map(u64::from_le_bytes));
                cache.insert(a, v);
                v
            };
            let cfi = s
                .shared
                .elf()
                .ok()
                .and_then(|elf| elf.unwind_step(&cur, innermost, &mut read));
            match cfi {
                Some(n) => {
                    how = "cfi".into();
                    Some(n)
                }
                None => {
                    let fp = cur.get(Register::RBP).filter(|v| *v != 0);
                    let has_cfi = s.shared.elf().is_ok_and(|e| e.has_cfi(lookup));
                    match fp {
                        Some(fp) if !has_cfi => {
                            let ret = read(fp + 8);
                            let prev = read(fp);
                            match (ret, prev) {
                                (Some(ret), Some(prev)) if prev > fp => {
                                    let mut n = Registers::new();
                                    n.set(Register::RIP, Some(ret));
                                    n.set(Register::RSP, Some(fp + 16));
                                    n.set(Register::RBP, Some(prev));
                                    how = "fp".into();
                                    Some(n)
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    }
                }
            }
        };
        match next {
            Some(n) if n.sp() != cur.sp() || n.pc() != cur.pc() => cur = n,
            _ => break,
        }
        innermost = false;
    }
    Ok(Output::Backtrace { frames })
}

pub fn info(s: &mut Session, args: &[String]) -> Result<Output> {
    let (topic, rest) = args.split_first().ok_or_else(|| {
        anyhow!("usage: info sym ADDR | info line LOC | info args | info breakpoints")
    })?;
    match topic.as_str() {
        "sym" | "symbol" => {
            let [loc] = rest else {
                bail!("usage: info sym ADDR")
            };
            let (addr, _) = address_of(s, loc)?;
            let mut frames = Vec::new();
            if let Ok(elf) = s.shared.elf()
                && let Ok(fr) = elf.frames(addr)
                && fr.len() > 1
            {
                frames = fr[..fr.len() - 1]
                    .iter()
                    .map(|f| {
                        let name = f
                            .demangled
                            .clone()
                            .or(f.function.clone())
                            .unwrap_or_default();
                        match &f.location {
                            Some(l) => format!("{name} at {}:{}", l.file, l.line),
                            None => name,
                        }
                    })
                    .collect();
            }
            Ok(Output::Symbol {
                addr,
                symbol: s.shared.symbolize_opt(addr),
                source: s.shared.source_of(addr),
                frames,
            })
        }
        "line" => {
            let [loc] = rest else {
                bail!("usage: info line LOC")
            };
            let r = resolve(&s.shared, loc)?;
            let src = s.shared.source_of(r.addr);
            Ok(Output::Lines {
                location: src.unwrap_or_else(|| r.name.clone()),
                addrs: vec![(r.addr, s.shared.describe(r.addr))],
            })
        }
        "args" => info_args(s),
        "breakpoints" | "break" | "b" => Ok(Output::Breakpoints {
            breakpoints: s.breakpoints.values().map(|b| b.info.clone()).collect(),
        }),
        t => bail!("unknown info topic `{t}`: use sym, line, args or breakpoints"),
    }
}

fn info_args(s: &mut Session) -> Result<Output> {
    let regs = s.registers()?;
    // Shapes from DWARF (elf locked only here), then values (memory reads
    // for strings go through the client).
    let (fname, entry, params) = {
        let elf = s.shared.elf()?;
        let f = elf
            .function_at(regs.rip)
            .map_err(|e| anyhow!("no function at {:#x}: {e}", regs.rip))?;
        let params: Vec<(symbols::Param, crate::capture::Shape, bool)> = f
            .params
            .iter()
            .map(|p| {
                let is_str =
                    p.ty.and_then(|t| elf.resolve(t).ok())
                        .is_some_and(|t| t.is_rust_str());
                (
                    p.clone(),
                    crate::capture::shape_of(&elf, p.ty, &p.name),
                    is_str,
                )
            })
            .collect();
        (f.name.clone(), f.entry, params)
    };
    let at_entry = entry == regs.rip;
    let mut args = Vec::new();
    for (p, shape, rust_str) in params {
        let value = match p.location {
            ParamLocation::Register(r) => {
                reg_value(&regs, r).map(|v| render_value(s, v, &shape, None))
            }
            ParamLocation::RegisterPair(a, b) => match (reg_value(&regs, a), reg_value(&regs, b)) {
                (Some(x), Some(y)) if rust_str => Some(render_value(
                    s,
                    x,
                    &crate::capture::Shape::Str { len: None },
                    Some(y),
                )),
                (Some(x), Some(y)) => Some(format!("{{{x:#x}, {y:#x}}}")),
                _ => None,
            },
            ParamLocation::Stack { offset } => regs
                .get("rsp")
                .and_then(|sp| {
                    let a = sp.checked_add_signed(offset)?;
                    let b = s.client().ok()?.read_memory(a, 8).ok()?;
                    Some(u64::from_le_bytes(b.try_into().ok()?))
                })
                .filter(|_| at_entry)
                .map(|v| render_value(s, v, &shape, None)),
            ParamLocation::Unavailable => None,
        };
        args.push(ArgInfo {
            name: p.name.clone(),
            type_name: p.type_name.clone(),
            location: p.location.to_string(),
            value,
        });
    }
    Ok(Output::Args {
        function: fname,
        args,
        note: (!at_entry).then(|| {
            format!(
                "(stopped at {}, not at the entry: registers may no longer hold the arguments)",
                s.shared.describe(regs.rip)
            )
        }),
    })
}

/// A value as events show it; strings are read from the target.
fn render_value(s: &Session, v: u64, shape: &crate::capture::Shape, len: Option<u64>) -> String {
    if let crate::capture::Shape::Str { .. } = shape
        && v != 0
    {
        let want = len.map_or(64, |l| l.min(256) as usize);
        if let Ok(mut c) = s.client()
            && let Ok(bytes) = c.read_memory(v, want)
        {
            let n = if len.is_some() {
                bytes.len()
            } else {
                bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len())
            };
            return format!("{v:#x} {}", crate::events::quote(&bytes[..n]));
        }
        return format!("{v:#x} <fault>");
    }
    crate::events::render_number(v, shape, &*s.shared).1
}

fn reg_value(r: &RegisterFile, reg: Register) -> Option<u64> {
    r.get(&reg.name())
}

pub fn ptype(s: &mut Session, args: &[String]) -> Result<Output> {
    let [name] = args else {
        bail!("usage: ptype FUNC | ptype FUNC:PARAM");
    };
    let (func, param) = match name.split_once(':') {
        Some((f, p)) if !p.is_empty() && !f.ends_with(':') && !p.starts_with(':') => (f, Some(p)),
        _ => (name.as_str(), None),
    };
    let elf = s.shared.elf()?;
    let fs = match elf.functions_named(func) {
        Ok(f) if !f.is_empty() => f,
        _ => {
            drop(elf);
            return Err(super::locate::unknown_symbol(&s.shared, func));
        }
    };
    let f = &fs[0];
    let mut text = String::new();
    match param {
        None => {
            let params: Vec<String> = f
                .params
                .iter()
                .map(|p| format!("{}: {}", p.name, p.type_name))
                .collect();
            text.push_str(&format!(
                "fn {}({}) -> {}",
                f.name,
                params.join(", "),
                f.return_type_name
            ));
            if !f.has_dwarf {
                text.push_str("\n(no DWARF for this function: prototype unknown)");
            }
        }
        Some(p) => {
            let prm = f
                .params
                .iter()
                .find(|x| x.name == p)
                .ok_or_else(|| anyhow!("{} has no parameter `{p}`", f.name))?;
            text.push_str(&format!("{}: {}", prm.name, prm.type_name));
            let mut ty = prm.ty.and_then(|t| elf.resolve(t).ok());
            if let Some(TypeKind::Pointer { pointee }) = ty.as_ref().map(|t| t.kind.clone()) {
                ty = pointee.and_then(|t| elf.resolve(t).ok());
            }
            if let Some(t) = ty.filter(|t| !t.fields().is_empty()) {
                text.push_str(&format!(
                    "\n{} {{   // {} bytes",
                    t.name.clone().unwrap_or_else(|| "struct".into()),
                    t.size.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
                ));
                for fld in t.fields() {
                    text.push_str(&format!(
                        "\n    /* {:>4} */ {}: {},",
                        fld.offset,
                        fld.name.clone().unwrap_or_else(|| "<anon>".into()),
                        elf.type_name(fld.ty)
                    ));
                }
                text.push_str("\n}");
            }
        }
    }
    Ok(Output::Ptype { text })
}

pub fn threads(s: &mut Session) -> Result<Output> {
    let mut threads = Vec::new();
    if let Ok(text) = s.monitor("tasks") {
        for line in text.lines() {
            if let Ok(t) = proto::reply::TaskRow::parse(line) {
                threads.push(ThreadInfo {
                    id: u64::from(t.id),
                    name: t.name.to_string(),
                    state: t.state.to_string(),
                    current: t.current,
                    selected: s.selected_thread == Some(u64::from(t.id)),
                });
            }
        }
    }
    if threads.is_empty() {
        let ids = s.client()?.thread_ids()?;
        for tid in ids {
            let name = s.client()?.thread_extra_info(tid).unwrap_or_default();
            let id = crate::session::task_of_tid(tid).unwrap_or(0);
            threads.push(ThreadInfo {
                id,
                name,
                state: "-".into(),
                current: false,
                selected: s.selected_thread == Some(id),
            });
        }
    }
    {
        let mut t = crate::session::write(&s.shared.tasks);
        for th in &threads {
            t.insert(th.id as u32, th.name.clone());
        }
    }
    Ok(Output::Threads { threads })
}

pub fn thread(s: &mut Session, args: &[String]) -> Result<Output> {
    let [n] = args else {
        bail!("usage: thread N (`threads` lists them)")
    };
    let id = number(n)?;
    s.client()?
        .select_thread(crate::session::tid_of_task(id))
        .map_err(|e| anyhow!("cannot select thread {id}: {e} (`threads` lists them)"))?;
    s.selected_thread = Some(id);
    let r = s.registers()?;
    Ok(Output::Message {
        text: format!(
            "thread {id} selected: at {} ({:#x})",
            s.shared.describe(r.rip),
            r.rip
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            parse_fmt(Some("8gx")).unwrap(),
            Fmt {
                count: 8,
                format: 'x',
                size: 8
            }
        );
        assert_eq!(
            parse_fmt(Some("s")).unwrap(),
            Fmt {
                count: 1,
                format: 's',
                size: 4
            }
        );
        assert_eq!(
            parse_fmt(None).unwrap(),
            Fmt {
                count: 1,
                format: 'x',
                size: 4
            }
        );
        assert_eq!(parse_fmt(Some("4a")).unwrap().size, 8);
        assert!(
            parse_fmt(Some("8q"))
                .unwrap_err()
                .to_string()
                .contains("bad format letter `q`")
        );
        assert!(parse_fmt(Some("0x")).is_err());
    }
}
