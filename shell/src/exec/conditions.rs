//! Conditional stops: `break LOC if EXPR`, `tbreak LOC if EXPR`,
//! `condition N [EXPR]`, `ignore N COUNT`, and the in-kernel counters
//! `info breakpoints` shows.
//!
//! The condition is compiled on the host (`expr::compile`: the language of
//! `print`, with variables at the breakpoint's address turned into register
//! and memory reads) into the stub's verified bytecode and sent with
//! `monitor cond ADDR if=HEX ignore=N`; the kernel evaluates it in the trap,
//! so a false hit resumes without a round trip to the host. Whatever cannot
//! be compiled is refused with the reason before anything is set.

use anyhow::{Result, anyhow, bail};

use crate::cmd::Invocation;
use crate::cmd::parse::number;
use crate::output::{BreakCounts, BreakInfo, Output};
use crate::rsp::BreakKind;
use crate::session::Session;

/// Splits `LOC [if EXPR]`.
pub fn split_if(args: &[String]) -> (Vec<String>, Option<String>) {
    match args.iter().position(|a| a == "if") {
        Some(i) => (args[..i].to_vec(), Some(args[i + 1..].join(" "))),
        None => {
            // `break fib if(n==5)` arrives as one word after the location.
            if let Some(i) = args.iter().position(|a| a.starts_with("if(")) {
                let mut rest = vec![args[i][2..].to_string()];
                rest.extend(args[i + 1..].iter().cloned());
                return (args[..i].to_vec(), Some(rest.join(" ")));
            }
            (args.to_vec(), None)
        }
    }
}

/// [`split_if`] with the condition's text as typed (quotes kept:
/// `if $str(path) == "/etc/passwd"`).
pub fn split_if_inv(inv: &Invocation) -> (Vec<String>, Option<String>) {
    let (loc, cond) = split_if(&inv.args);
    let cond = cond.map(|c| {
        let typed = inv.text_after(loc.len());
        match typed
            .strip_prefix("if")
            .filter(|r| r.starts_with(|ch: char| ch.is_whitespace() || ch == '('))
        {
            Some(r) => r.trim().to_string(),
            None => c,
        }
    });
    (loc, cond)
}

/// Compiles `text` at `addr` to the wire form (hex).
fn compile_at(s: &Session, addr: u64, text: &str) -> Result<String> {
    let elf = s.shared.elf()?;
    let mut state = crate::session::lock(&s.shared.expr);
    let prog = expr::compile::compile(
        &elf,
        &mut state.env,
        addr,
        text,
        expr::compile::Context::default(),
    )
    .map_err(|e| anyhow!("cannot use `{text}` as a condition: {}", e.render(text)))?;
    Ok(proto::bytecode::Hex(&prog).to_string())
}

/// Compiles a probe predicate at `addr` (a function entry for jprobes and
/// kretprobes; `ret` allows `ret`, `$retval` and `$duration`).
pub fn predicate(
    s: &Session,
    addr: u64,
    text: &str,
    ret: bool,
) -> Result<proto::bytecode::Program> {
    if text.trim().is_empty() {
        bail!("an expression must follow `if`");
    }
    let elf = s.shared.elf()?;
    let mut state = crate::session::lock(&s.shared.expr);
    expr::compile::compile(
        &elf,
        &mut state.env,
        addr,
        text,
        expr::compile::Context { ret },
    )
    .map_err(|e| anyhow!("cannot use `{text}` as a predicate: {}", e.render(text)))
}

fn send_cond(s: &Session, addr: u64, hex: Option<&str>, ignore: u64) -> Result<()> {
    let mut cmd = format!("cond {addr:#x}");
    if let Some(h) = hex {
        cmd.push_str(&format!(" if={h}"));
    }
    if ignore > 0 {
        cmd.push_str(&format!(" ignore={ignore}"));
    }
    s.monitor(&cmd)?;
    Ok(())
}

fn set(s: &mut Session, inv: &Invocation, temporary: bool) -> Result<Output> {
    let (loc, cond) = split_if_inv(inv);
    let Some(text) = cond else {
        return crate::exec::run::breakpoint(s, &loc, BreakKind::Software, temporary);
    };
    if text.trim().is_empty() {
        bail!("usage: break LOC if EXPR (an expression after `if`)");
    }
    if loc.len() != 1 {
        bail!("usage: break LOC [if EXPR] (one location)");
    }
    // Compile for every address the location resolves to before setting
    // anything: a refusal sets nothing.
    let addrs: Vec<u64> = crate::exec::locate::resolve_all(&s.shared, &loc[0])?
        .iter()
        .map(|r| r.addr)
        .collect();
    let mut progs = Vec::new();
    for a in &addrs {
        progs.push((*a, compile_at(s, *a, &text)?));
    }
    let out = crate::exec::run::breakpoint(s, &loc, BreakKind::Software, temporary)?;
    let ids: Vec<u32> = match &out {
        Output::Breakpoint { breakpoint } => vec![breakpoint.id],
        Output::Breakpoints { breakpoints } => breakpoints.iter().map(|b| b.id).collect(),
        _ => Vec::new(),
    };
    for id in &ids {
        let Some(addr) = s.breakpoints.get(id).map(|b| b.info.addr) else {
            continue;
        };
        let hex = progs
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, h)| h.clone())
            .ok_or_else(|| anyhow!("breakpoint {id} at {addr:#x}: no condition compiled"))?;
        let _pause = crate::session::Pause::new(s)?;
        if let Err(e) = send_cond(s, addr, Some(&hex), 0) {
            // Never leave an unconditional breakpoint the user did not ask for.
            let _ = s.delete_breakpoint(*id);
            return Err(e.context(format!("breakpoint {id} removed")));
        }
        if let Some(b) = s.breakpoints.get_mut(id) {
            b.info.condition = Some(text.clone());
        }
    }
    Ok(match out {
        Output::Breakpoint { mut breakpoint } => {
            breakpoint.condition = Some(text);
            Output::Breakpoint { breakpoint }
        }
        Output::Breakpoints { mut breakpoints } => {
            for b in &mut breakpoints {
                b.condition = Some(text.clone());
            }
            Output::Breakpoints { breakpoints }
        }
        other => other,
    })
}

/// `break LOC [if EXPR]`.
pub fn break_(s: &mut Session, inv: &Invocation) -> Result<Output> {
    set(s, inv, false)
}

/// `tbreak LOC [if EXPR]`.
pub fn tbreak(s: &mut Session, inv: &Invocation) -> Result<Output> {
    set(s, inv, true)
}

/// The software breakpoint numbered by `arg`.
fn software(s: &Session, arg: &str, cmd: &str) -> Result<(u32, BreakInfo)> {
    let id = u32::try_from(number(arg)?).map_err(|_| anyhow!("bad breakpoint number `{arg}`"))?;
    let b = s
        .breakpoints
        .get(&id)
        .ok_or_else(|| anyhow!("no breakpoint {id}: `info breakpoints` lists them"))?;
    if b.kind != BreakKind::Software {
        bail!(
            "breakpoint {id} is a {}: {cmd} works on software breakpoints (the kernel evaluates them in the int3 trap)",
            b.info.kind
        );
    }
    Ok((id, b.info.clone()))
}

/// What is left of the kernel's ignore count at `addr`.
fn ignore_left(s: &Session, addr: u64) -> u64 {
    s.monitor("conds")
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| proto::reply::CondRow::parse(l).ok())
                .find(|r| r.addr == addr)
        })
        .map_or(0, |r| r.ignore)
}

/// `condition N [EXPR]`.
pub fn condition(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let Some((first, rest)) = inv.args.split_first() else {
        bail!("usage: condition N [EXPR] (no EXPR: the breakpoint stops every time)");
    };
    let (id, info) = software(s, first, "condition")?;
    let _ = rest;
    let text = inv.text_after(1);
    let _pause = crate::session::Pause::new(s)?;
    let left = ignore_left(s, info.addr);
    if text.trim().is_empty() {
        send_cond(s, info.addr, None, left)?;
        if let Some(b) = s.breakpoints.get_mut(&id) {
            b.info.condition = None;
        }
        return Ok(Output::Message {
            text: format!("Breakpoint {id} now unconditional."),
        });
    }
    let hex = compile_at(s, info.addr, &text)?;
    send_cond(s, info.addr, Some(&hex), left)?;
    if let Some(b) = s.breakpoints.get_mut(&id) {
        b.info.condition = Some(text.clone());
    }
    Ok(Output::Message {
        text: format!("Breakpoint {id} stops only if {text} (evaluated in the kernel)."),
    })
}

/// `ignore N COUNT`.
pub fn ignore(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let [n, count] = inv.args.as_slice() else {
        bail!("usage: ignore N COUNT (skip the next COUNT stops of breakpoint N)");
    };
    let (id, info) = software(s, n, "ignore")?;
    let count = number(count)?;
    let hex = match &info.condition {
        Some(t) => Some(compile_at(s, info.addr, t)?),
        None => None,
    };
    let _pause = crate::session::Pause::new(s)?;
    send_cond(s, info.addr, hex.as_deref(), count)?;
    if let Some(b) = s.breakpoints.get_mut(&id) {
        b.info
            .counts
            .get_or_insert_with(BreakCounts::default)
            .ignore = count;
    }
    Ok(Output::Message {
        text: match count {
            0 => format!("Will stop next time breakpoint {id} is reached."),
            1 => format!("Will ignore next crossing of breakpoint {id}."),
            n => format!("Will ignore next {n} crossings of breakpoint {id}."),
        },
    })
}

/// Fills the in-kernel counters of conditional breakpoints (for `info
/// breakpoints`); leaves the list as it is when the stub cannot be asked.
pub fn with_counts(s: &Session, mut list: Vec<BreakInfo>) -> Vec<BreakInfo> {
    if !list
        .iter()
        .any(|b| b.condition.is_some() || b.counts.is_some())
    {
        return list;
    }
    let Ok(text) = s.monitor("conds") else {
        return list;
    };
    let rows: Vec<proto::reply::CondRow> = text
        .lines()
        .filter_map(|l| proto::reply::CondRow::parse(l).ok())
        .collect();
    for b in &mut list {
        if b.kind != "breakpoint" {
            continue;
        }
        if let Some(r) = rows.iter().find(|r| r.addr == b.addr) {
            b.counts = Some(BreakCounts {
                hits: r.hits,
                false_hits: r.false_hits,
                faults: r.faults,
                ignored: r.ignored,
                ignore: r.ignore,
            });
        }
    }
    list
}

/// The lines under a breakpoint's row in `info breakpoints`.
pub fn detail_lines(b: &BreakInfo) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &b.condition {
        out.push(format!("\tstop only if {c}"));
    }
    if let Some(k) = b.counts {
        let stops = k.hits.saturating_sub(k.false_hits + k.faults + k.ignored);
        out.push(format!(
            "\tbreakpoint already hit {} time{} in the kernel: {stops} stop{}, {} false, {} faulted, {} ignored",
            k.hits,
            if k.hits == 1 { "" } else { "s" },
            if stops == 1 { "" } else { "s" },
            k.false_hits,
            k.faults,
            k.ignored
        ));
        if k.ignore > 0 {
            out.push(format!("\twill ignore next {} crossings", k.ignore));
        }
    }
    out
}
