//! break, tbreak, hbreak, watch, delete break, continue, stepi, nexti,
//! interrupt.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use super::locate::{check_code, resolve, resolve_all};
use crate::cmd::Invocation;
use crate::cmd::parse::{count, number};
use crate::output::{BreakInfo, Output};
use crate::rsp::{BreakKind, StopReply};
use crate::session::{Breakpoint, Session};

/// `break LOC`.
pub fn break_(s: &mut Session, inv: &Invocation) -> Result<Output> {
    breakpoint(s, &inv.args, BreakKind::Software, false)
}

/// `tbreak LOC`.
pub fn tbreak(s: &mut Session, inv: &Invocation) -> Result<Output> {
    breakpoint(s, &inv.args, BreakKind::Software, true)
}

/// `hbreak LOC`.
pub fn hbreak(s: &mut Session, inv: &Invocation) -> Result<Output> {
    breakpoint(s, &inv.args, BreakKind::Hardware, false)
}

pub(crate) fn breakpoint(
    s: &mut Session,
    args: &[String],
    kind: BreakKind,
    temporary: bool,
) -> Result<Output> {
    let [loc] = args else {
        bail!("usage: break LOC (a symbol, symbol+offset, 0xADDRESS or file:line)");
    };
    // A file:line sets every location of the line (inlined and generic
    // copies), as gdb does: one breakpoint number per location.
    let all = resolve_all(&s.shared, loc)?;
    for r in &all {
        check_code(&s.shared, r)?;
    }
    let fresh: Vec<_> = all
        .into_iter()
        .filter(|r| {
            !s.breakpoints
                .values()
                .any(|b| b.info.addr == r.addr && b.kind == kind)
        })
        .collect();
    if fresh.is_empty() {
        bail!("there is already a breakpoint at {loc} (`info breakpoints`)");
    }
    let _pause = crate::session::Pause::new(s)?;
    let several = fresh.len() > 1;
    let mut set = Vec::new();
    let mut refused = Vec::new();
    for r in fresh {
        if let Err(e) = s.client()?.set_breakpoint(kind, r.addr, 1) {
            let e = match kind {
                BreakKind::Hardware => anyhow!(
                    "{e} (the four debug registers may be in use: delete a hardware breakpoint or watchpoint)"
                ),
                _ => anyhow::Error::from(e),
            };
            // One location of several refused (e.g. a copy inlined into the
            // debugger's own no-probe code): set the others, as gdb does, and
            // say which one was left out.
            if several {
                eprintln!(
                    "kdbg: location {} at {:#x} of {loc} not set: {e:#}",
                    r.name, r.addr
                );
                refused.push(e);
                continue;
            }
            return Err(e);
        }
        set.push(add_info(s, kind, r.addr, r.name, temporary, 1));
    }
    if set.is_empty()
        && let Some(e) = refused.into_iter().next()
    {
        return Err(e.context(format!("no location of {loc} could be set")));
    }
    Ok(match <[_; 1]>::try_from(set) {
        Ok([breakpoint]) => Output::Breakpoint { breakpoint },
        Err(breakpoints) => Output::Breakpoints { breakpoints },
    })
}

fn add(
    s: &mut Session,
    kind: BreakKind,
    addr: u64,
    location: String,
    temporary: bool,
    len: u64,
) -> Result<Output> {
    Ok(Output::Breakpoint {
        breakpoint: add_info(s, kind, addr, location, temporary, len),
    })
}

fn add_info(
    s: &mut Session,
    kind: BreakKind,
    addr: u64,
    location: String,
    temporary: bool,
    len: u64,
) -> BreakInfo {
    let id = s.next_break;
    s.next_break += 1;
    let info = BreakInfo {
        id,
        kind: match kind {
            BreakKind::Software => "breakpoint",
            BreakKind::Hardware => "hw-breakpoint",
            BreakKind::Write => "watchpoint",
            BreakKind::Read => "read-watchpoint",
            BreakKind::Access => "access-watchpoint",
        }
        .into(),
        addr,
        location,
        temporary,
        len: matches!(kind, BreakKind::Write | BreakKind::Read | BreakKind::Access).then_some(len),
        condition: None,
        counts: None,
    };
    s.breakpoints.insert(
        id,
        Breakpoint {
            info: info.clone(),
            kind,
            len,
        },
    );
    info
}

pub fn watch(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let mut kind = BreakKind::Write;
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "-r" => kind = BreakKind::Read,
            "-a" => kind = BreakKind::Access,
            _ => rest.push(a.clone()),
        }
    }
    let (loc, len) = match rest.as_slice() {
        [loc] => (loc, 8),
        [loc, len] => (loc, number(len)?),
        _ => bail!("usage: watch [-r|-a] ADDR|SYMBOL [LEN]"),
    };
    if ![1, 2, 4, 8].contains(&len) {
        bail!("watch length {len} is not possible: use 1, 2, 4 or 8 (debug registers)");
    }
    let r = resolve(&s.shared, loc)?;
    if r.addr % len != 0 {
        bail!(
            "{:#x} is not aligned to {len} bytes: debug registers need an aligned address",
            r.addr
        );
    }
    s.client()?.set_breakpoint(kind, r.addr, len).map_err(|e| {
        anyhow!("{e} (all four debug registers may be in use: delete a watchpoint or hbreak)")
    })?;
    // Old/new values for write watchpoints only: reading a location under
    // a read or access watchpoint (an `m` packet) makes the stub's own read
    // hit the debug register, which kills the kernel ("debug exception
    // nobody owns"). Reads do not change the value anyway.
    if kind == BreakKind::Write {
        let value = s.shared.read_watched(r.addr, len);
        s.shared.stops.watch(r.addr, len, value);
    }
    add(s, kind, r.addr, r.name, false, len)
}

pub fn delete_breaks(s: &mut Session, args: &[String]) -> Result<Output> {
    if args.is_empty() {
        bail!("usage: delete break N... (`info breakpoints` lists them)");
    }
    let mut ids = Vec::new();
    for a in args {
        let id = u32::try_from(number(a)?).map_err(|_| anyhow!("bad breakpoint number `{a}`"))?;
        s.delete_breakpoint(id)?;
        ids.push(id);
    }
    Ok(Output::Message {
        text: format!(
            "deleted breakpoint{} {}",
            if ids.len() > 1 { "s" } else { "" },
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    })
}

/// Is one of the shell's software breakpoints at rip (to step over first)?
fn on_breakpoint(s: &Session) -> Result<bool> {
    let rip = s.registers()?.rip;
    Ok(s.breakpoints
        .values()
        .any(|b| b.kind == BreakKind::Software && b.info.addr == rip))
}

/// Resuming runs the task that stopped: drop a `thread N` selection so
/// the breakpoint check and the steps read that task's registers (`Hg0`
/// selects the stopped task: the stub lists it first).
pub(crate) fn deselect_thread(s: &mut Session) -> Result<()> {
    if s.selected_thread.take().is_some() {
        s.client()?.select_thread(0)?;
    }
    Ok(())
}

/// `continue`.
pub fn cont(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    crate::exec::postmortem::refuse_if_dead(s)?;
    deselect_thread(s)?;
    s.reset_frame();
    if on_breakpoint(s)? {
        step_once(s)?;
    }
    s.client()?.resume("c")?;
    Ok(Output::Running)
}

fn stopped(s: &mut Session, reply: &str, stepped: bool) -> Result<Output> {
    let stop = StopReply::parse(reply).unwrap_or_default();
    let rip = s.registers().ok().map(|r| r.rip);
    let mut info = s.shared.stop_info(&stop, rip);
    if stepped && stop.signal == 5 && stop.watch.is_none() {
        info.reason = "step".into();
    }
    Ok(Output::Stopped { stop: info })
}

/// One `s`, lifting the shell's own software breakpoint at rip for the
/// step (as gdb does) so the step makes progress.
pub(crate) fn step_once(s: &mut Session) -> Result<String> {
    let rip = s.registers()?.rip;
    step_at(s, rip)
}

/// One `s` from `pc` (known to the caller: no register read), lifting the
/// shell's software breakpoint there for the step. Returns the stop reply.
pub(crate) fn step_at(s: &mut Session, pc: u64) -> Result<String> {
    let lifted: Vec<u64> = s
        .breakpoints
        .values()
        .filter(|b| b.kind == BreakKind::Software && b.info.addr == pc)
        .map(|b| b.info.addr)
        .collect();
    let t = s.timeout;
    let mut c = s.client()?;
    for a in &lifted {
        c.clear_breakpoint(BreakKind::Software, *a, 1)?;
    }
    let r = c.request_stop("s", t);
    for a in &lifted {
        c.set_breakpoint(BreakKind::Software, *a, 1)?;
    }
    Ok(r?)
}

pub fn stepi(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let n = match args {
        [] => 1,
        [n] => count(n)?,
        _ => bail!("usage: stepi [N]"),
    };
    deselect_thread(s)?;
    s.reset_frame();
    let mut reply = String::new();
    for _ in 0..n {
        reply = step_once(s)?;
    }
    stopped(s, &reply, true)
}

pub fn nexti(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let n = match args {
        [] => 1,
        [n] => count(n)?,
        _ => bail!("usage: nexti [N]"),
    };
    deselect_thread(s)?;
    s.reset_frame();
    let mut reply = String::new();
    for _ in 0..n {
        let rip = s.registers()?.rip;
        let insn = s.shared.insn_at(rip);
        let t = s.timeout;
        match insn {
            Some(i) if i.is_call => {
                let next = rip + i.len as u64;
                if on_breakpoint(s)? {
                    step_once(s)?;
                }
                let mut c = s.client()?;
                c.set_breakpoint(BreakKind::Software, next, 1)?;
                let r = c.request_stop("c", Duration::from_secs(30).max(t));
                let _ = c.clear_breakpoint(BreakKind::Software, next, 1);
                reply = r?;
            }
            _ => reply = step_once(s)?,
        }
    }
    stopped(s, &reply, true)
}

/// `interrupt`.
pub fn interrupt(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    if !s.running() {
        bail!("the kernel is already stopped (`continue` resumes it)");
    }
    let reply = s.client()?.interrupt(Duration::from_secs(5))?;
    stopped(s, &reply, false)
}
