//! Source-level stepping and frames: `step`, `next`, `until`, `advance`,
//! `finish`, `frame`, `up`, `down`, `info frame`. One machine for all of
//! them: the stub's exact `stepi` for instructions inside the line, and a
//! temporary breakpoint plus a frame check (task and stack pointer) to run
//! over calls and out of frames. See docs/notes/stepping.md.

use std::time::Duration;

use anyhow::{Result, bail};
use symbols::{LineRow, Register, Registers};

use crate::cmd::Invocation;
use crate::cmd::parse::count;
use crate::output::{FrameView, Output, StepView, StopInfo};
use crate::rsp::{BreakKind, StopReply};
use crate::session::Session;

/// How long one run over a call (or out of a frame) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Instructions one source step may single-step before giving up.
const MAX_STEPS: u64 = 20_000;

/// The line-table view of one function.
struct Lines {
    /// `[lo, hi)` of the function (symbol table).
    lo: u64,
    hi: u64,
    rows: Vec<LineRow>,
}

impl Lines {
    fn at(s: &Session, pc: u64) -> Option<Lines> {
        let elf = s.shared.elf().ok()?;
        let range = elf.function_bounds(pc)?;
        let rows = elf.line_rows_in(range.start, range.end).ok()?;
        (!rows.is_empty()).then_some(Lines {
            lo: range.start,
            hi: range.end,
            rows,
        })
    }

    fn contains(&self, pc: u64) -> bool {
        (self.lo..self.hi).contains(&pc)
    }

    /// The row containing `pc`.
    fn row(&self, pc: u64) -> Option<&LineRow> {
        self.rows
            .iter()
            .rev()
            .find(|r| r.start <= pc && pc < r.start + r.len.max(1))
    }

    /// The row that starts exactly at `pc` with a real line.
    fn starts_line(&self, pc: u64) -> Option<&LineRow> {
        self.rows.iter().find(|r| r.start == pc && r.line != 0)
    }

    /// Where a `step` into this function stops: the first row after the
    /// entry row whose line differs from the entry's (gdb's prologue skip
    /// by line table), else the entry.
    fn after_prologue(&self) -> u64 {
        let Some(first) = self.rows.iter().find(|r| r.line != 0) else {
            return self.lo;
        };
        self.rows
            .iter()
            .find(|r| r.start > first.start && r.line != 0 && r.line != first.line)
            .map_or(first.start, |r| r.start)
    }
}

/// Is this function the standard library's (skipped by `step` unless
/// `set step-library on`)?
fn is_library(s: &Session, pc: u64, lines: Option<&Lines>) -> bool {
    if s.step_library {
        return false;
    }
    let name = s.shared.describe(pc);
    let name = name.split('+').next().unwrap_or("");
    if [
        "core::", "alloc::", "std::", "<core::", "<alloc::", "<std::",
    ]
    .iter()
    .any(|p| name.starts_with(p))
    {
        return true;
    }
    if s.skips.iter().any(|k| k.matches(name, lines, pc)) {
        return true;
    }
    lines
        .and_then(|l| l.row(pc))
        .is_some_and(|r| r.file.starts_with("/rustc/"))
}

/// One `skip` entry.
#[derive(Clone, Debug)]
pub struct Skip {
    pub id: u32,
    /// `function` or `file`.
    pub kind: String,
    pub pattern: String,
}

impl Skip {
    fn matches(&self, name: &str, lines: Option<&Lines>, pc: u64) -> bool {
        match self.kind.as_str() {
            "function" => name == self.pattern || name.starts_with(&format!("{}::", self.pattern)),
            _ => lines
                .and_then(|l| l.row(pc))
                .is_some_and(|r| r.file.ends_with(&self.pattern)),
        }
    }
}

/// The state a source step carries: where it started and what it counted.
struct Stepper {
    thread: Option<u64>,
    stub_steps: u64,
    round_trips: u64,
    other_hits: u64,
    last: String,
}

#[derive(Clone, Copy)]
struct Regs {
    pc: u64,
    sp: u64,
}

impl Stepper {
    fn regs(&mut self, s: &Session) -> Result<(Regs, crate::regs::RegisterFile)> {
        self.round_trips += 1;
        let r = s.registers()?;
        Ok((
            Regs {
                pc: r.rip,
                sp: r.gpr[7],
            },
            r,
        ))
    }

    /// One machine instruction (the stub's exact `stepi`, lifting the
    /// shell's own breakpoint at pc).
    fn stepi(&mut self, s: &mut Session) -> Result<()> {
        self.stub_steps += 1;
        self.round_trips += 1;
        self.last = super::run::step_once(s)?;
        Ok(())
    }

    /// Runs until `addr` is reached in the starting task with the stack
    /// pointer at least `min_sp` (the frame that asked, not a recursive
    /// call or another task); other hits are resumed silently and counted.
    fn run_to(&mut self, s: &mut Session, addrs: &[u64], min_sp: u64) -> Result<Regs> {
        let mut set = Vec::new();
        for &a in addrs {
            if !s
                .breakpoints
                .values()
                .any(|b| b.kind == BreakKind::Software && b.info.addr == a)
            {
                self.round_trips += 1;
                s.client()?.set_breakpoint(BreakKind::Software, a, 1)?;
                set.push(a);
            }
        }
        let result = self.run_loop(s, addrs, min_sp);
        for a in set {
            let _ = s
                .client()
                .map(|mut c| c.clear_breakpoint(BreakKind::Software, a, 1));
        }
        result
    }

    fn run_loop(&mut self, s: &mut Session, addrs: &[u64], min_sp: u64) -> Result<Regs> {
        loop {
            // Off a breakpoint at pc first (a recursive hit stops there).
            let (r, _) = self.regs(s)?;
            if addrs.contains(&r.pc)
                || s.breakpoints
                    .values()
                    .any(|b| b.kind == BreakKind::Software && b.info.addr == r.pc)
            {
                self.stepi(s)?;
                let (r2, _) = self.regs(s)?;
                if addrs.contains(&r2.pc) && self.ours(r2) && r2.sp >= min_sp {
                    return Ok(r2);
                }
            }
            self.round_trips += 1;
            let t = s.timeout.max(RUN_TIMEOUT);
            self.last = s.client()?.request_stop("c", t)?;
            let stop = StopReply::parse(&self.last).unwrap_or_default();
            let (r, _) = self.regs(s)?;
            let ours = stop.thread.is_none() || stop.thread == self.thread;
            if stop.signal != 5 || stop.watch.is_some() {
                bail!(
                    "stopped by {} before the step ended (at {})",
                    s.shared.stop_info(&stop, Some(r.pc)).reason,
                    s.shared.describe(r.pc)
                );
            }
            if addrs.contains(&r.pc) {
                if ours && r.sp >= min_sp {
                    return Ok(r);
                }
                // Another task, or a deeper (recursive) frame: not ours.
                self.other_hits += 1;
                continue;
            }
            // A user breakpoint elsewhere ends the step there, as in gdb.
            return Ok(r);
        }
    }

    fn ours(&self, _r: Regs) -> bool {
        let stop = StopReply::parse(&self.last).unwrap_or_default();
        stop.thread.is_none() || stop.thread == self.thread
    }
}

fn unwind_regs(r: &crate::regs::RegisterFile) -> Registers {
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

/// The caller's registers of the frame `regs` (CFI; memory read through
/// the stub, which shows kretprobe-hijacked return addresses as the real
/// ones).
fn caller(s: &Session, regs: &Registers, innermost: bool) -> Option<Registers> {
    let mut read = |a: u64| -> Option<u64> {
        s.client()
            .ok()?
            .read_memory(a, 8)
            .ok()
            .and_then(|b| b.try_into().ok().map(u64::from_le_bytes))
    };
    let elf = s.shared.elf().ok()?;
    elf.unwind_step(regs, innermost, &mut read)
}

/// The thread the kernel stopped in (`qC`, else the `?` stop reply).
fn current_thread(s: &Session) -> Option<u64> {
    let mut c = s.client().ok()?;
    if let Ok(reply) = c.request_str("qC")
        && let Some(t) = reply.strip_prefix("QC")
    {
        let t = t.rsplit('.').next().unwrap_or(t).trim_start_matches('p');
        if let Ok(v) = u64::from_str_radix(t, 16) {
            return Some(v);
        }
    }
    let reply = c.request_str("?").ok()?;
    StopReply::parse(&reply)?.thread
}

/// The source text of `file:line` when the file is readable.
pub fn source_text(file: &str, line: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .nth(line.checked_sub(1)? as usize)
        .map(|l| l.to_string())
}

/// The inline chain at `pc`: its depth (1 = the function itself), the line
/// of the frame at depth `level` counted from the outermost (the call-site
/// line when the pc is deeper, inside inlined code), and whether the
/// innermost frame is the standard library's.
fn inline_at(s: &Session, pc: u64, level: usize) -> (usize, Option<u32>, bool) {
    let frames = s
        .shared
        .elf()
        .ok()
        .and_then(|e| e.frames(pc).ok())
        .unwrap_or_default();
    let depth = frames.len().max(1);
    let line = frames
        .len()
        .checked_sub(level)
        .and_then(|i| frames.get(i))
        .and_then(|f| f.location.as_ref())
        .map(|l| l.line)
        .filter(|l| *l != 0);
    let lib = frames.first().is_some_and(|f| {
        let name = f
            .demangled
            .clone()
            .or(f.function.clone())
            .unwrap_or_default();
        [
            "core::", "alloc::", "std::", "<core::", "<alloc::", "<std::",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || f.location
                .as_ref()
                .is_some_and(|l| l.file.starts_with("/rustc/"))
    });
    (depth, line, lib && !s.step_library)
}

/// The function the user sees at `pc`: the inline frame a step presented
/// there, else the innermost frame.
fn presented_function(s: &Session, pc: u64) -> String {
    let chain = s
        .shared
        .elf()
        .ok()
        .and_then(|e| e.frames(pc).ok())
        .unwrap_or_default();
    let idx = match s.step_presented {
        Some((p, d)) if p == pc && d >= 1 && d <= chain.len() => chain.len() - d,
        _ => 0,
    };
    chain
        .get(idx)
        .and_then(|f| f.demangled.clone().or(f.function.clone()))
        .unwrap_or_else(|| function_name(s, pc))
}

fn function_name(s: &Session, pc: u64) -> String {
    let d = s.shared.describe(pc);
    d.split('+').next().unwrap_or(&d).to_string()
}

fn prologue_refusal(s: &Session, pc: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "no line information at {pc:#x} ({}): use `stepi`/`nexti` there, or `finish` to return to a caller with lines",
        s.shared.describe(pc)
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Step,
    Next,
    Until,
}

/// One source line of `step`/`next`/`until`. Returns the reason the step
/// ended ("step" normally).
fn source_step(s: &mut Session, st: &mut Stepper, mode: Mode) -> Result<usize> {
    let (start, _) = st.regs(s)?;
    let Some(lines) = Lines::at(s, start.pc) else {
        return Err(prologue_refusal(s, start.pc));
    };
    let Some(row) = lines.row(start.pc).cloned() else {
        return Err(prologue_refusal(s, start.pc));
    };
    // The frame the user sees: an inline level a previous step presented
    // at this pc (the call site of inlined code), else the innermost.
    let (full, _, _) = inline_at(s, start.pc, 1);
    let depth0 = match s.step_presented {
        Some((pc, d)) if pc == start.pc && d <= full => d,
        _ => full,
    };
    let mut cur_line = inline_at(s, start.pc, depth0).1.unwrap_or(row.line);
    // The frame: the stack pointer at the start of the function's frame is
    // unknown here; the CFA from CFI identifies it.
    let (_, rf) = st.regs(s)?;
    let cfa = caller(s, &unwind_regs(&rf), true)
        .and_then(|c| c.sp())
        .unwrap_or(start.sp + 8);
    let mut n = 0u64;
    let mut r = start;
    loop {
        n += 1;
        if n > MAX_STEPS {
            bail!(
                "gave up after {MAX_STEPS} instructions without reaching another line (at {}); `finish` or `until` may help",
                s.shared.describe(st.regs(s)?.0.pc)
            );
        }
        let insn = s.shared.insn_at(r.pc);
        match insn {
            Some(i) if i.is_call => {
                let ret = r.pc + i.len as u64;
                st.stepi(s)?;
                let (inside, _) = st.regs(s)?;
                if inside.pc == ret {
                    // A call the stub emulated or that returned at once.
                } else if mode == Mode::Step {
                    let callee = Lines::at(s, inside.pc);
                    if callee.is_some() && !is_library(s, inside.pc, callee.as_ref()) {
                        if let Some(c) = callee {
                            let target = c.after_prologue();
                            if target != inside.pc {
                                st.run_to(s, &[target], 0)?;
                            }
                        }
                        return Ok(0);
                    }
                    // No lines or the library: run back out to the call site.
                    st.run_to(s, &[ret], r.sp)?;
                } else {
                    st.run_to(s, &[ret], r.sp)?;
                }
            }
            _ => st.stepi(s)?,
        }
        let (now, _) = st.regs(s)?;
        r = now;
        if !lines.contains(now.pc) {
            if now.sp >= cfa {
                // Returned to the caller (mid-line there): stop, as gdb
                // does when a step leaves the frame ("caller () at ...").
                // A library caller is stepped out of too.
                if mode == Mode::Step {
                    let l = Lines::at(s, now.pc);
                    if is_library(s, now.pc, l.as_ref()) {
                        return source_step(s, st, Mode::Step);
                    }
                }
                return Ok(0);
            }
            // A tail jump into another function: a new function.
            if mode != Mode::Step {
                let l = Lines::at(s, now.pc);
                if l.is_none() || is_library(s, now.pc, l.as_ref()) {
                    // Keep going until we are back in code with lines.
                    st.run_to(s, &[], cfa)?;
                    return Ok(0);
                }
            }
            return Ok(0);
        }
        if lines.starts_line(now.pc).is_some() {
            let (depth, line, lib) = inline_at(s, now.pc, depth0);
            if depth < depth0 {
                // Left the inlined function: back in its caller's line.
                return Ok(depth);
            }
            if depth > depth0 && mode == Mode::Step && !lib {
                // `step` enters inlined code of the user's (gdb's model).
                return Ok(0);
            }
            // The line of the frame the step started in (the call-site
            // line while inside inlined code): a new line ends the step.
            if let Some(line) = line
                && line != cur_line
            {
                if mode == Mode::Until && now.pc < start.pc && now.sp == start.sp {
                    // `until`: a jump back (a loop) does not end it.
                    cur_line = line;
                    continue;
                }
                return Ok(depth0);
            }
        }
    }
}

fn stepped(
    s: &mut Session,
    st: Stepper,
    command: &str,
    before: Option<String>,
    depth: usize,
) -> Result<Output> {
    let stop = StopReply::parse(&st.last).unwrap_or_default();
    let regs = s.registers()?;
    let pc = regs.rip;
    let mut info: StopInfo = s.shared.stop_info(&stop, Some(pc));
    info.reason = command.to_string();
    let lines = Lines::at(s, pc);
    let row = lines.as_ref().and_then(|l| l.row(pc)).cloned();
    // The frame presented: `depth` levels from the outermost (0: the
    // innermost, inlined code included).
    let chain = s
        .shared
        .elf()
        .ok()
        .and_then(|e| e.frames(pc).ok())
        .unwrap_or_default();
    let idx = if depth == 0 || depth > chain.len() {
        0
    } else {
        chain.len() - depth
    };
    let presented = chain.get(idx);
    s.step_presented = Some((pc, chain.len() - idx));
    let function = presented
        .and_then(|f| f.demangled.clone().or(f.function.clone()))
        .unwrap_or_else(|| function_name(s, pc));
    let cfa = caller(s, &unwind_regs(&regs), true).and_then(|c| c.sp());
    let (file, line) = match presented.and_then(|f| f.location.clone()) {
        Some(l) if l.line != 0 => (Some(l.file), Some(l.line)),
        _ => match &row {
            Some(r) if r.line != 0 => (Some(r.file.clone()), Some(r.line)),
            _ => (None, None),
        },
    };
    let text = match (&file, line) {
        (Some(f), Some(l)) => source_text(f, l),
        _ => None,
    };
    s.reset_frame();
    Ok(Output::Stepped {
        stop: info,
        step: StepView {
            command: command.to_string(),
            function_changed: before.as_deref() != Some(function.as_str()),
            function,
            file,
            line,
            text,
            frame: cfa,
            run_till: None,
            value: None,
            value_type: None,
            other_task_hits: st.other_hits,
            stub_steps: st.stub_steps,
            round_trips: st.round_trips,
        },
    })
}

fn count_arg(inv: &Invocation, usage: &str) -> Result<u64> {
    match inv.args.as_slice() {
        [] => Ok(1),
        [n] => {
            if n.starts_with('-') {
                bail!("`{n}` is not a count: {usage} takes a positive number of lines");
            }
            if n == "0" {
                bail!("`{usage} 0` does nothing: give 1 or more");
            }
            count(n)
        }
        _ => bail!("usage: {usage} [N]"),
    }
}

fn start(s: &mut Session) -> Result<Stepper> {
    crate::exec::postmortem::refuse_if_dead(s)?;
    super::run::deselect_thread(s)?;
    Ok(Stepper {
        thread: current_thread(s),
        stub_steps: 0,
        round_trips: 1,
        other_hits: 0,
        last: String::new(),
    })
}

fn steps(s: &mut Session, inv: &Invocation, mode: Mode, name: &str) -> Result<Output> {
    let n = count_arg(inv, name)?;
    let mut st = start(s)?;
    let before = Some(presented_function(s, s.registers()?.rip));
    let mut depth = 0;
    for _ in 0..n {
        depth = source_step(s, &mut st, mode)?;
    }
    stepped(s, st, name, before, depth)
}

/// `step [N]`.
pub fn step(s: &mut Session, inv: &Invocation) -> Result<Output> {
    steps(s, inv, Mode::Step, "step")
}

/// `next [N]`.
pub fn next(s: &mut Session, inv: &Invocation) -> Result<Output> {
    steps(s, inv, Mode::Next, "next")
}

/// `until [LOC]`.
pub fn until(s: &mut Session, inv: &Invocation) -> Result<Output> {
    if inv.args.is_empty() {
        let mut st = start(s)?;
        let before = Some(presented_function(s, s.registers()?.rip));
        let depth = source_step(s, &mut st, Mode::Until)?;
        return stepped(s, st, "until", before, depth);
    }
    run_to_location(s, inv, "until")
}

/// `advance LOC`.
pub fn advance(s: &mut Session, inv: &Invocation) -> Result<Output> {
    if inv.args.is_empty() {
        bail!("usage: advance LOC (a function, file:line or *ADDRESS)");
    }
    run_to_location(s, inv, "advance")
}

/// `until LOC` / `advance LOC`: run to LOC in this task, or until the
/// current frame returns.
fn run_to_location(s: &mut Session, inv: &Invocation, name: &str) -> Result<Output> {
    let [loc] = inv.args.as_slice() else {
        bail!("usage: {name} LOC");
    };
    let r = super::locate::resolve(&s.shared, loc)?;
    super::locate::check_code(&s.shared, &r)?;
    let mut st = start(s)?;
    let regs = s.registers()?;
    let before = Some(function_name(s, regs.rip));
    let caller = caller(s, &unwind_regs(&regs), true);
    let mut addrs = vec![r.addr];
    let mut min_sp = 0;
    if let Some(c) = &caller
        && let (Some(pc), Some(sp)) = (c.pc(), c.sp())
    {
        addrs.push(pc);
        min_sp = if name == "until" { regs.gpr[7] } else { 0 };
        let _ = sp;
    }
    st.run_to(s, &addrs, min_sp)?;
    stepped(s, st, name, before, 0)
}

/// `finish`: run until the selected frame returns; show the value.
pub fn finish(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    let mut st = start(s)?;
    let regs = s.registers()?;
    // The selected frame (up/down) or frame 0.
    let mut frame = unwind_regs(&regs);
    for level in 0..s.frame_physical {
        frame = caller(s, &frame, level == 0)
            .ok_or_else(|| anyhow::anyhow!("frame {level} has no caller"))?;
    }
    let pc = frame.pc().unwrap_or(regs.rip);
    let Some(up) = caller(s, &frame, s.frame_physical == 0) else {
        bail!(
            "`finish` not meaningful in the outermost frame ({})",
            s.shared.describe(pc)
        );
    };
    let (Some(ret), Some(cfa)) = (up.pc(), up.sp()) else {
        bail!("cannot find where {} returns", s.shared.describe(pc));
    };
    let func = function_name(s, pc);
    let (fentry, rtype) = s
        .shared
        .elf()
        .ok()
        .and_then(|e| e.function_at(pc).ok())
        .map(|f| (f.entry, f.return_type_name.clone()))
        .unwrap_or((pc, "?".into()));
    let _ = fentry;
    let from = match Lines::at(s, pc).and_then(|l| l.row(pc).cloned()) {
        Some(r) if r.line != 0 => format!("#{} {func} at {}:{}", s.frame_level, r.file, r.line),
        _ => format!("#{} {}", s.frame_level, s.shared.describe(pc)),
    };
    let before = Some(func.clone());
    st.run_to(s, &[ret], cfa)?;
    let after = s.registers()?;
    let rax = after.gpr[0];
    let value = render_return(&rtype, rax);
    let mut out = stepped(s, st, "finish", before, 0)?;
    if let Output::Stepped { step, .. } = &mut out {
        step.run_till = Some(from);
        step.value = value;
        step.value_type = (rtype != "()" && rtype != "?" && !rtype.is_empty()).then_some(rtype);
    }
    Ok(out)
}

/// rax as a value of `ty` (integers, bool, char, pointers).
fn render_return(ty: &str, rax: u64) -> Option<String> {
    Some(match ty {
        "" | "()" | "?" | "void" => return None,
        "i64" | "isize" => (rax as i64).to_string(),
        "i32" => (rax as u32 as i32).to_string(),
        "i16" => (rax as u16 as i16).to_string(),
        "i8" => (rax as u8 as i8).to_string(),
        "u64" | "usize" => rax.to_string(),
        "u32" => (rax as u32).to_string(),
        "u16" => (rax as u16).to_string(),
        "u8" => (rax as u8).to_string(),
        "bool" => (rax & 0xff != 0).to_string(),
        _ => format!("{rax:#x}"),
    })
}

// ---- frames ---------------------------------------------------------------

/// A frame as `bt` (and gdb) number them: a physical (CFI) frame and,
/// inside it, one function of the inline chain at its pc.
struct VFrame {
    regs: Registers,
    /// The physical frame (0 = the stop).
    physical: usize,
    /// 0 = the concrete function, N = the Nth inlined call (as
    /// `symbols::LocalVar::inline_level`).
    inline_level: u32,
    /// The function's name (the inlined one for inline frames).
    name: Option<String>,
    /// Where that function is at this pc (the call site for outer levels).
    location: Option<(String, u32)>,
}

/// Frame `level`, counting inline frames as `bt` does.
fn vframe(s: &Session, level: usize) -> Result<VFrame> {
    let regs = s.registers()?;
    let mut f = unwind_regs(&regs);
    let mut first = 0usize;
    let mut physical = 0usize;
    loop {
        let pc = f.pc().unwrap_or(0);
        let lookup = if physical == 0 {
            pc
        } else {
            pc.saturating_sub(1)
        };
        let chain = s
            .shared
            .elf()
            .ok()
            .and_then(|e| e.frames(lookup).ok())
            .unwrap_or_default();
        let n = chain.len().max(1);
        if level < first + n {
            let k = level - first;
            let link = chain.get(k);
            return Ok(VFrame {
                regs: f,
                physical,
                inline_level: (n - 1 - k) as u32,
                name: link.and_then(|l| l.demangled.clone().or(l.function.clone())),
                location: link
                    .and_then(|l| l.location.clone())
                    .filter(|l| l.line != 0)
                    .map(|l| (l.file, l.line)),
            });
        }
        first += n;
        f = caller(s, &f, physical == 0).ok_or_else(|| {
            anyhow::anyhow!("no frame {level}: the stack has {first} (`bt` lists them)")
        })?;
        physical += 1;
    }
}

fn frame_view(s: &Session, level: usize, vf: &VFrame, detail: bool) -> FrameView {
    let regs = &vf.regs;
    let pc = regs.pc().unwrap_or(0);
    let lookup = if vf.physical == 0 {
        pc
    } else {
        pc.saturating_sub(1)
    };
    let (file, line) = match &vf.location {
        Some((f, l)) => (Some(f.clone()), Some(*l)),
        None => {
            let row = Lines::at(s, lookup).and_then(|l| l.row(lookup).cloned());
            match &row {
                Some(r) if r.line != 0 => (Some(r.file.clone()), Some(r.line)),
                _ => (None, None),
            }
        }
    };
    let text = match (&file, line) {
        (Some(f), Some(l)) => source_text(f, l),
        _ => None,
    };
    let up = caller(s, regs, vf.physical == 0);
    let mut saved = Vec::new();
    if detail && let Some(u) = &up {
        // Registers the caller sees differently (restored from the frame).
        for r in [
            Register::RBX,
            Register::RBP,
            Register::R12,
            Register::R13,
            Register::R14,
            Register::R15,
        ] {
            if let (Some(a), Some(b)) = (regs.get(r), u.get(r))
                && a != b
            {
                saved.push((r.name(), b));
            }
        }
        if let Some(cfa) = u.sp() {
            saved.push(("rip".into(), u.pc().unwrap_or(0)));
            let _ = cfa;
        }
    }
    FrameView {
        level,
        pc,
        function: vf.name.clone().unwrap_or_else(|| function_name(s, lookup)),
        file,
        line,
        text,
        cfa: up.as_ref().and_then(|u| u.sp()),
        sp: regs.sp(),
        caller: up
            .as_ref()
            .and_then(|u| u.pc())
            .map(|p| s.shared.describe(p)),
        caller_pc: up.as_ref().and_then(|u| u.pc()),
        saved: if detail { Some(saved) } else { None },
    }
}

fn select(s: &mut Session, level: usize) -> Result<Output> {
    if s.running() {
        bail!("the kernel is running: frames need a stop (`interrupt` or Ctrl-C first)");
    }
    let vf = vframe(s, level)?;
    s.frame_level = level;
    s.frame_physical = vf.physical;
    if let Ok(mut e) = s.shared.expr.lock() {
        e.selected = (vf.physical > 0).then(|| vf.regs.clone());
        e.inline_level = Some(vf.inline_level);
    }
    Ok(Output::Frame {
        frame: frame_view(s, level, &vf, false),
    })
}

fn level_arg(inv: &Invocation, usage: &str) -> Result<Option<usize>> {
    match inv.args.as_slice() {
        [] => Ok(None),
        [n] => {
            if n.starts_with('-') {
                bail!("`{n}` is not a frame count: {usage}");
            }
            Ok(Some(crate::cmd::parse::amount(n)? as usize))
        }
        _ => bail!("usage: {usage}"),
    }
}

/// `frame [N]`.
pub fn frame(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let level = level_arg(inv, "frame [N]")?.unwrap_or(s.frame_level);
    select(s, level)
}

/// `up [N]`.
pub fn up(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let n = level_arg(inv, "up [N]")?.unwrap_or(1);
    let level = s.frame_level + n;
    vframe(s, level).map_err(|_| anyhow::anyhow!("initial frame selected; you cannot go up"))?;
    select(s, level)
}

/// `down [N]`.
pub fn down(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let n = level_arg(inv, "down [N]")?.unwrap_or(1);
    if n > s.frame_level {
        bail!("bottom (innermost) frame selected; you cannot go down");
    }
    let level = s.frame_level - n;
    select(s, level)
}

/// `info frame`.
pub fn info_frame(s: &mut Session) -> Result<Output> {
    if s.running() {
        bail!("`info frame` needs the kernel stopped: use `interrupt` (or Ctrl-C) first");
    }
    let level = s.frame_level;
    let vf = vframe(s, level)?;
    Ok(Output::Frame {
        frame: frame_view(s, level, &vf, true),
    })
}

// ---- skip -----------------------------------------------------------------

/// `skip function F`, `skip file F`, `skip delete N`; `info skip`.
pub fn skip(s: &mut Session, inv: &Invocation) -> Result<Output> {
    match inv.args.as_slice() {
        [k, pat] if k == "function" || k == "file" => {
            let id = s.skips.iter().map(|k| k.id).max().unwrap_or(0) + 1;
            s.skips.push(Skip {
                id,
                kind: k.clone(),
                pattern: pat.clone(),
            });
            Ok(Output::Message {
                text: format!(
                    "{} {pat} will be skipped when stepping (skip {id})",
                    capital(k)
                ),
            })
        }
        [d, n] if d == "delete" => {
            let id: u32 = n
                .parse()
                .map_err(|_| anyhow::anyhow!("bad skip number `{n}` (`info skip` lists them)"))?;
            let before = s.skips.len();
            s.skips.retain(|k| k.id != id);
            if s.skips.len() == before {
                bail!("no skip {id} (`info skip` lists them)");
            }
            Ok(Output::Message {
                text: format!("deleted skip {id}"),
            })
        }
        _ => bail!("usage: skip function NAME | skip file FILE | skip delete N"),
    }
}

fn capital(k: &str) -> String {
    let mut c = k.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `info skip`.
pub fn info_skip(s: &Session) -> Result<Output> {
    let mut rows = vec![format!(
        "std  library   core:: alloc:: std:: and /rustc/ files ({})",
        if s.step_library {
            "off: set step-library on"
        } else {
            "on"
        }
    )];
    for k in &s.skips {
        rows.push(format!("{:<4} {:<9} {}", k.id, k.kind, k.pattern));
    }
    Ok(Output::Message {
        text: rows.join("\n"),
    })
}

/// `set step-library on|off`.
pub fn set_step_library(s: &mut Session, value: &str) -> Result<Output> {
    s.step_library = match value {
        "on" => true,
        "off" => false,
        v => bail!("`set step-library` takes on or off, not `{v}`"),
    };
    Ok(Output::Message {
        text: format!(
            "step-library {value}: `step` {} the standard library",
            if s.step_library {
                "stops in"
            } else {
                "steps over"
            }
        ),
    })
}
