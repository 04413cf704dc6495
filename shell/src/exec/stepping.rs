//! Source-level stepping and frames: `step`, `next`, `until`, `advance`,
//! `finish`, `frame`, `up`, `down`, `info frame`. One machine for all of
//! them: the stub's exact `stepi` for instructions inside the line, and a
//! temporary breakpoint plus a frame check (task and stack pointer) to run
//! over calls and out of frames. See docs/design/stepping.md.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use symbols::{InlineBlock, LineRow, Register, Registers, StmtRow};

use crate::cmd::Invocation;
use crate::cmd::parse::count;
use crate::output::{FrameView, Output, StepInterrupted, StepView, StopInfo};
use crate::rsp::{BreakKind, StopReply};
use crate::session::{CANCEL, Session, SigintGuard};

/// How long one run over a call (or out of a frame) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Instructions one source step may single-step before giving up.
const MAX_STEPS: u64 = 20_000;

/// The line-table rows of one function (for showing where a frame is).
struct Lines {
    rows: Vec<LineRow>,
}

impl Lines {
    fn at(s: &Session, pc: u64) -> Option<Lines> {
        let elf = s.shared.elf().ok()?;
        let range = elf.function_bounds(pc)?;
        let rows = elf.line_rows_in(range.start, range.end).ok()?;
        (!rows.is_empty()).then_some(Lines { rows })
    }

    /// The row containing `pc`.
    fn row(&self, pc: u64) -> Option<&LineRow> {
        self.rows
            .iter()
            .rev()
            .find(|r| r.start <= pc && pc < r.start + r.len.max(1))
    }
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
    fn matches_name(&self, name: &str, file: Option<&str>) -> bool {
        match self.kind.as_str() {
            "function" => name == self.pattern || name.starts_with(&format!("{}::", self.pattern)),
            _ => file.is_some_and(|f| f.ends_with(&self.pattern)),
        }
    }
}

/// The user interrupted a step (Ctrl-C): the kernel is stopped where the
/// interrupt found it; the command reports that instead of a step's end.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Where a step is: the presented frame's function and line.
#[derive(Clone, Default)]
struct Origin {
    function: String,
    file: Option<String>,
    line: Option<u32>,
}

/// The state a source step carries: where it started and what it counted.
struct Stepper {
    thread: Option<u64>,
    /// Ctrl-C sets [`CANCEL`] while the step runs (in every mode).
    _sigint: SigintGuard,
    /// The line being stepped (what an interrupt reports).
    origin: Origin,
    stub_steps: u64,
    /// Packets sent on the connection when the command started.
    sent0: u64,
    other_hits: u64,
    last: String,
    /// gdb line tables by function start.
    tables: HashMap<u64, Option<Rc<Table>>>,
    /// The registers at the current stop, once read (cleared when the
    /// kernel executes).
    cur: Option<crate::regs::RegisterFile>,
}

#[derive(Clone, Copy)]
struct Regs {
    pc: u64,
    sp: u64,
}

impl Stepper {
    /// gdb's line table of the function containing `pc`.
    fn table(&mut self, s: &Session, pc: u64) -> Option<Rc<Table>> {
        let elf = s.shared.elf().ok()?;
        let range = elf.function_bounds(pc)?;
        self.tables
            .entry(range.start)
            .or_insert_with(|| {
                let rows = elf.stmt_rows_in(range.start, range.end).ok()?;
                (!rows.is_empty()).then(|| {
                    Rc::new(Table {
                        lo: range.start,
                        hi: range.end,
                        rows,
                    })
                })
            })
            .clone()
    }

    fn regs(&mut self, s: &Session) -> Result<(Regs, crate::regs::RegisterFile)> {
        let r = match &self.cur {
            Some(r) => r.clone(),
            None => s.registers()?,
        };
        self.cur = Some(r.clone());
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
    fn stepi(&mut self, s: &mut Session, pc: u64) -> Result<()> {
        if CANCEL.swap(false, Ordering::SeqCst) {
            // Ctrl-C between two instructions: the kernel is stopped here.
            return Err(Interrupted.into());
        }
        self.stub_steps += 1;
        self.cur = None;
        // The pc is known: no register read before the step (one round
        // trip per instruction, as gdb's `vCont;s`, plus the `g` after).
        self.last = super::run::step_at(s, pc)?;
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
                s.client()?.set_breakpoint(BreakKind::Software, a, 1)?;
                set.push(a);
            }
        }
        let result = self.run_loop(s, addrs, min_sp, &set);
        for a in set {
            let _ = s
                .client()
                .map(|mut c| c.clear_breakpoint(BreakKind::Software, a, 1));
        }
        result
    }

    fn run_loop(
        &mut self,
        s: &mut Session,
        addrs: &[u64],
        min_sp: u64,
        set: &[u64],
    ) -> Result<Regs> {
        let (mut r, _) = self.regs(s)?;
        loop {
            // Off a breakpoint at pc first (a recursive hit stops there).
            if addrs.contains(&r.pc)
                || s.breakpoints
                    .values()
                    .any(|b| b.kind == BreakKind::Software && b.info.addr == r.pc)
            {
                // Our own temporary breakpoint at pc is lifted for the step
                // (as gdb steps over a breakpoint), else the step re-traps
                // on it without executing the instruction.
                let ours_here = set.contains(&r.pc);
                if ours_here {
                    s.client()?.clear_breakpoint(BreakKind::Software, r.pc, 1)?;
                }
                let stepped = self.stepi(s, r.pc);
                if ours_here {
                    s.client()?.set_breakpoint(BreakKind::Software, r.pc, 1)?;
                }
                stepped?;
                let (r2, _) = self.regs(s)?;
                if addrs.contains(&r2.pc) && self.ours(r2) && r2.sp >= min_sp {
                    return Ok(r2);
                }
            }
            let t = s.timeout.max(RUN_TIMEOUT);
            self.cur = None;
            // Ctrl-C while the kernel runs (the step's task asleep, or
            // running to the end of a call) interrupts it.
            let (reply, interrupted) = s.client()?.request_stop_or_cancel("c", t, &CANCEL)?;
            self.last = reply;
            if interrupted {
                return Err(Interrupted.into());
            }
            let stop = StopReply::parse(&self.last).unwrap_or_default();
            r = self.regs(s)?.0;
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

use super::stack::to_unwind_regs as unwind_regs;

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

/// Is a function of this name the standard library's or on the skip list
/// (gdb's `skip -rfu ^(core|alloc|std)::` plus `skip function`/`skip
/// file`)? `file` is the function's source file when known.
fn name_skipped(s: &Session, name: &str, file: Option<&str>) -> bool {
    if s.step_library {
        return s.skips.iter().any(|k| k.matches_name(name, file));
    }
    [
        "core::", "alloc::", "std::", "<core::", "<alloc::", "<std::",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || file.is_some_and(|f| f.starts_with("/rustc/"))
        || s.skips.iter().any(|k| k.matches_name(name, file))
}

/// gdb's line table of one function (`maint info line-table`).
struct Table {
    lo: u64,
    hi: u64,
    rows: Vec<StmtRow>,
}

impl Table {
    /// The row containing `pc` (gdb's `find_pc_line`); `None`: no line.
    fn sal(&self, pc: u64) -> Option<&StmtRow> {
        let i = self.rows.partition_point(|r| r.start <= pc);
        let r = self.rows.get(i.checked_sub(1)?)?;
        (pc < r.end).then_some(r)
    }

    /// Where `step` into this function stops: the first row after the
    /// entry row whose line differs from the entry's (the prologue by the
    /// line table), or the entry.
    fn after_prologue(&self) -> u64 {
        let Some(first) = self.sal(self.lo) else {
            return self.lo;
        };
        self.rows
            .iter()
            .find(|r| r.start > first.start && r.start < self.hi && r.line != first.line)
            .map_or(self.lo, |r| r.start)
    }
}

/// A frame as gdb identifies it: the real frame's CFA, the code address
/// of its function (an inline block's entry for inline frames) and how
/// many inline levels it is above the real frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameId {
    cfa: u64,
    code: u64,
    depth: usize,
}

/// What a stop at `pc` looks like to the stepping machine: the inline
/// chain (innermost first), the blocks of its inlined frames, the real
/// frame's CFA and function start.
struct Here {
    pc: u64,
    chain: Vec<symbols::Frame>,
    blocks: Vec<InlineBlock>,
    cfa: u64,
    func_lo: u64,
}

impl Here {
    fn at(s: &Session, rf: &crate::regs::RegisterFile) -> Here {
        let pc = rf.rip;
        let elf = s.shared.elf().ok();
        let chain = elf
            .as_ref()
            .and_then(|e| e.frames(pc).ok())
            .unwrap_or_default();
        let blocks = elf
            .as_ref()
            .and_then(|e| e.inline_blocks(pc).ok())
            .unwrap_or_default();
        let func_lo = elf
            .as_ref()
            .and_then(|e| e.function_bounds(pc))
            .map_or(pc, |r| r.start);
        let regs = unwind_regs(rf);
        let cfa = elf
            .as_ref()
            .and_then(|e| e.cfa_rule(pc))
            .and_then(|(r, off)| regs.get(r)?.checked_add_signed(off))
            .unwrap_or(rf.gpr[7] + 8);
        Here {
            pc,
            chain,
            blocks,
            cfa,
            func_lo,
        }
    }

    /// Frames in the chain (at least 1: the real one).
    fn n(&self) -> usize {
        self.chain.len().max(1)
    }

    /// gdb's `skip_inline_frames`: the inlined frames, innermost first,
    /// whose block starts at pc (the stop is presented at their call site).
    fn skipped(&self) -> usize {
        let mut k = 0;
        for b in self.blocks.iter().take(self.n() - 1) {
            if b.entry_pc() == Some(self.pc) || !b.contains(self.pc.wrapping_sub(1)) {
                k += 1;
            } else {
                break;
            }
        }
        k
    }

    fn id(&self, idx: usize) -> FrameId {
        let n = self.n();
        if idx + 1 < n {
            FrameId {
                cfa: self.cfa,
                code: self.blocks.get(idx).and_then(|b| b.entry_pc()).unwrap_or(0),
                depth: n - 1 - idx,
            }
        } else {
            FrameId {
                cfa: self.cfa,
                code: self.func_lo,
                depth: 0,
            }
        }
    }

    fn stack_id(&self) -> FrameId {
        self.id(self.n() - 1)
    }

    /// The source position of frame `idx`: the line table's for the
    /// innermost, the call site of the frame inside it otherwise.
    fn sal(&self, idx: usize, table: Option<&Table>) -> Option<(String, u32)> {
        if idx == 0 {
            return table
                .and_then(|t| t.sal(self.pc))
                .map(|r| (r.file.clone(), r.line));
        }
        self.chain
            .get(idx)
            .and_then(|f| f.location.as_ref())
            .filter(|l| l.line != 0)
            .map(|l| (l.file.clone(), l.line))
    }

    fn name(&self, idx: usize) -> String {
        self.chain
            .get(idx)
            .and_then(|f| f.demangled.clone().or(f.function.clone()))
            .unwrap_or_default()
    }

    /// The file of frame `idx`'s own code (where its lines are).
    fn file(&self, idx: usize) -> Option<String> {
        let inner = idx.checked_sub(1).and_then(|i| self.chain.get(i));
        match inner {
            // The call site of the frame inside is in this frame's file.
            Some(f) => f.location.as_ref().map(|l| l.file.clone()),
            None => self
                .chain
                .first()
                .and_then(|f| f.location.as_ref())
                .map(|l| l.file.clone()),
        }
    }

    /// gdb's `stepped_in_from`: is `id` an outer frame of `idx` through
    /// inline frames only?
    fn stepped_in_from(&self, idx: usize, id: FrameId) -> bool {
        for i in idx + 1..self.n() {
            if self.id(i) == id {
                return true;
            }
        }
        false
    }

    /// The presented frame index at this stop: what the last step
    /// presented at this pc, else gdb's default (skipped inline frames).
    fn presented(&self, s: &Session) -> usize {
        match s.step_presented {
            Some((pc, d)) if pc == self.pc && d >= 1 && d <= self.n() => self.n() - d,
            _ => self.skipped(),
        }
    }

    /// `idx` as a depth counted from the outermost frame (1 = the real
    /// frame), as `stepped` and `step_presented` take it.
    fn depth(&self, idx: usize) -> usize {
        self.n() - idx.min(self.n() - 1)
    }
}

/// The function the user sees at `pc`: the inline frame a step presented
/// there, else gdb's default frame.
fn presented_function(s: &Session, rf: &crate::regs::RegisterFile) -> String {
    let h = Here::at(s, rf);
    let name = h.name(h.presented(s));
    if name.is_empty() {
        function_name(s, rf.rip)
    } else {
        name
    }
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

/// What a source step compares against (gdb's step frame, current line
/// and step range).
struct Goal {
    frame: FrameId,
    stack: FrameId,
    line: Option<(String, u32)>,
    range: std::ops::Range<u64>,
}

/// One source line of `step`/`next`/`until`, as gdb's
/// `process_event_stop_test` decides (forward execution): keep stepping
/// inside the step range, run over calls (`next`, or a callee without
/// lines or skipped), enter callees with lines (`step`), inline frames
/// parts one and two, stop at the first statement row of another line,
/// and take a new line entered mid-way as the one being stepped. Returns
/// the depth of the frame presented at the stop (see [`Here::depth`]).
fn source_step(s: &mut Session, st: &mut Stepper, mode: Mode) -> Result<usize> {
    let (_, rf) = st.regs(s)?;
    let h = Here::at(s, &rf);
    let Some(table) = st.table(s, h.pc) else {
        return Err(prologue_refusal(s, h.pc));
    };
    let Some(sal) = table.sal(h.pc).cloned() else {
        return Err(prologue_refusal(s, h.pc));
    };
    let mut idx = h.presented(s);
    if mode == Mode::Step && idx > 0 {
        // `step` at the call site of inlined code enters the inline frame
        // without executing an instruction (gdb's step into an inline frame).
        idx -= 1;
        if !name_skipped(s, &h.name(idx), h.file(idx).as_deref()) {
            return Ok(h.depth(idx));
        }
    }
    let mut range = sal.start..sal.end;
    if mode == Mode::Until {
        // gdb's `until`: the step range starts at the function's entry, so
        // a jump back inside the function does not end it.
        range.start = if idx + 1 < h.n() {
            h.blocks
                .get(idx)
                .and_then(|b| b.entry_pc())
                .unwrap_or(h.func_lo)
        } else {
            h.func_lo
        };
    }
    let goal = Goal {
        frame: h.id(idx),
        stack: h.stack_id(),
        line: h.sal(idx, Some(&table)),
        range,
    };
    st.origin = Origin {
        function: h.name(idx),
        file: goal.line.as_ref().map(|l| l.0.clone()),
        line: goal.line.as_ref().map(|l| l.1),
    };
    run_goal(s, st, mode, goal, h.pc, rf.gpr[7], false)
}

/// Steps until `goal` says stop (gdb's stop test after every instruction
/// or call run over), starting at `pc`/`sp`; `arrived`: the test runs at
/// `pc` first (a return just run to, as at gdb's step-resume breakpoint).
fn run_goal(
    s: &mut Session,
    st: &mut Stepper,
    mode: Mode,
    mut goal: Goal,
    mut pc: u64,
    mut sp: u64,
    arrived: bool,
) -> Result<usize> {
    let mut n = 0u64;
    let mut execute = !arrived;
    loop {
        if std::mem::replace(&mut execute, true) {
            n += 1;
            if n > MAX_STEPS {
                bail!(
                    "gave up after {MAX_STEPS} instructions without reaching another line (at {}); `finish` or `until` may help",
                    s.shared.describe(pc)
                );
            }
            if let Some(depth) = execute_one(s, st, mode, pc, sp)? {
                return Ok(depth);
            }
        }
        let (now, rf) = st.regs(s)?;
        pc = now.pc;
        sp = now.sp;
        if let Some(depth) = stop_test(s, st, mode, &mut goal, &rf)? {
            return Ok(depth);
        }
    }
}

/// Executes the instruction at `pc`: one stub step, or a call run over
/// (`next`, or a callee without lines or skipped). `Some(depth)`: `step`
/// entered a callee with lines and stopped after its prologue.
fn execute_one(
    s: &mut Session,
    st: &mut Stepper,
    mode: Mode,
    pc: u64,
    sp: u64,
) -> Result<Option<usize>> {
    match s.shared.insn_at(pc) {
        Some(i) if i.is_call => {
            let ret = pc + i.len as u64;
            let call_sp = sp;
            st.stepi(s, pc)?;
            let (inside, _) = st.regs(s)?;
            if inside.pc != ret {
                // Stepped into a subroutine.
                let callee = st.table(s, inside.pc);
                let lines = callee.as_ref().and_then(|t| t.sal(t.lo).cloned());
                let name = function_name(s, inside.pc);
                let enter = mode == Mode::Step
                    && lines
                        .as_ref()
                        .is_some_and(|l| !name_skipped(s, &name, Some(&l.file)));
                if enter && let Some(t) = callee {
                    let target = t.after_prologue();
                    if target != inside.pc {
                        st.run_to(s, &[target], 0)?;
                    }
                    let (_, rf) = st.regs(s)?;
                    let h = Here::at(s, &rf);
                    return Ok(Some(h.depth(h.skipped())));
                }
                st.run_to(s, &[ret], call_sp)?;
            }
        }
        _ => st.stepi(s, pc)?,
    }
    Ok(None)
}

/// gdb's stop test at the stop `rf`: `Some(depth)` ends the step there
/// (the depth of the frame presented), `None` goes on (with `goal`
/// updated when a new line is being stepped).
fn stop_test(
    s: &mut Session,
    st: &mut Stepper,
    mode: Mode,
    goal: &mut Goal,
    rf: &crate::regs::RegisterFile,
) -> Result<Option<usize>> {
    let pc = rf.rip;
    if goal.range.contains(&pc) {
        return Ok(None);
    }
    let h = Here::at(s, rf);
    let table = st.table(s, pc);
    let Some(sal) = table.as_ref().and_then(|t| t.sal(pc)).cloned() else {
        // No line information here: stop (gdb: "no line number info").
        return Ok(Some(h.depth(h.skipped())));
    };
    let skipped = h.skipped();
    // Inline frames, part one: the stop is at the call site (in the
    // step frame itself) of inlined code that starts here.
    if skipped > 0 && h.id(skipped) == goal.frame {
        let call = h.sal(skipped, table.as_deref());
        let same = call.is_some() && call == goal.line;
        if mode == Mode::Step {
            if same {
                let inner = skipped - 1;
                if name_skipped(s, &h.name(inner), h.file(inner).as_deref()) {
                    return Ok(None);
                }
                return Ok(Some(h.depth(inner)));
            }
            return Ok(Some(h.depth(skipped)));
        }
        if same {
            return Ok(None);
        }
        return Ok(Some(h.depth(skipped)));
    }
    let idx = skipped;
    // Part two: deeper inside inlined code called from the step frame.
    if idx + 1 < h.n() && h.id(idx) != goal.frame && h.stepped_in_from(idx, goal.frame) {
        if mode != Mode::Step || name_skipped(s, &h.name(idx), h.file(idx).as_deref()) {
            return Ok(None);
        }
        return Ok(Some(h.depth(idx)));
    }
    let mut refresh = true;
    let mut line = Some((sal.file.clone(), sal.line));
    if pc == sal.start && goal.line != line {
        if sal.is_stmt {
            // The start of another line: done.
            return Ok(Some(h.depth(idx)));
        }
        if h.id(idx) == goal.frame {
            refresh = false;
        } else {
            line = None;
        }
    }
    // In the middle of a line (or not a statement): step that line.
    goal.range = sal.start..sal.end;
    if refresh {
        goal.frame = h.id(idx);
        goal.stack = h.stack_id();
        goal.line = line;
        if let Some((file, line)) = &goal.line {
            st.origin = Origin {
                function: h.name(idx),
                file: Some(file.clone()),
                line: Some(*line),
            };
        }
    }
    Ok(None)
}

fn stepped(
    s: &mut Session,
    st: Stepper,
    command: &str,
    before: Option<String>,
    depth: usize,
) -> Result<Output> {
    let stop = StopReply::parse(&st.last).unwrap_or_default();
    let regs = match &st.cur {
        Some(r) => r.clone(),
        None => s.registers()?,
    };
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
    let cfa = Some(Here::at(s, &regs).cfa);
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
    if idx > 0
        && let Ok(mut e) = s.shared.expr.lock()
    {
        // Variables of the presented frame (an inlined call's caller).
        e.inline_level = Some((chain.len() - 1 - idx) as u32);
    }
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
            round_trips: s
                .client()
                .map_or(0, |c| c.packets_sent().saturating_sub(st.sent0)),
            interrupted: None,
        },
    })
}

/// The result of a step command: where it ended, or, when the user
/// interrupted it, where the CPU stopped and what became of the step's
/// task (asleep, waiting for a CPU) and line.
fn conclude(
    s: &mut Session,
    st: Stepper,
    command: &str,
    before: Option<String>,
    r: Result<usize>,
) -> Result<Output> {
    match r {
        Ok(depth) => stepped(s, st, command, before, depth),
        Err(e) if e.is::<Interrupted>() => interrupted(s, st, command, before),
        Err(e) => Err(e),
    }
}

fn interrupted(
    s: &mut Session,
    st: Stepper,
    command: &str,
    before: Option<String>,
) -> Result<Output> {
    let task = st.thread.and_then(crate::session::task_of_tid);
    let origin = st.origin.clone();
    let depth = default_depth(s)?;
    let mut out = stepped(s, st, command, before, depth)?;
    let (mut task_name, mut task_state) = (None, None);
    if let (Some(id), Ok(text)) = (task, s.monitor("tasks")) {
        for l in text.lines() {
            if let Ok(t) = proto::reply::TaskRow::parse(l)
                && u64::from(t.id) == id
            {
                task_name = Some(t.name.to_string());
                task_state = Some(t.state.to_string());
            }
        }
    }
    if let Output::Stepped { stop, step } = &mut out {
        stop.reason = "interrupted".into();
        step.function_changed = true;
        step.interrupted = Some(StepInterrupted {
            task,
            task_name,
            task_state,
            function: origin.function,
            file: origin.file,
            line: origin.line,
        });
    }
    Ok(out)
}

/// The frame gdb presents at a stop that is not a step's: the inlined
/// frames whose code starts at pc are skipped (shown at their call site).
fn default_depth(s: &Session) -> Result<usize> {
    let rf = s.registers()?;
    let h = Here::at(s, &rf);
    Ok(h.depth(h.skipped()))
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
    let sent0 = s.client()?.packets_sent();
    let sigint = SigintGuard::install();
    CANCEL.store(false, Ordering::SeqCst);
    Ok(Stepper {
        thread: current_thread(s),
        _sigint: sigint,
        origin: Origin::default(),
        stub_steps: 0,
        sent0,
        other_hits: 0,
        last: String::new(),
        tables: HashMap::new(),
        cur: None,
    })
}

fn steps(s: &mut Session, inv: &Invocation, mode: Mode, name: &str) -> Result<Output> {
    let n = count_arg(inv, name)?;
    let mut st = start(s)?;
    let rf = st.regs(s)?.1;
    let before = Some(presented_function(s, &rf));
    let mut r = Ok(0);
    for _ in 0..n {
        r = source_step(s, &mut st, mode);
        if r.is_err() {
            break;
        }
    }
    conclude(s, st, name, before, r)
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
        let rf = st.regs(s)?.1;
        let before = Some(presented_function(s, &rf));
        let r = source_step(s, &mut st, Mode::Until);
        return conclude(s, st, "until", before, r);
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
    st.origin = origin_of(s, &regs);
    let r = st.run_to(s, &addrs, min_sp).and_then(|_| default_depth(s));
    conclude(s, st, name, before, r)
}

/// The presented frame and line at the stop `rf` (what an interrupted
/// command says it was at).
fn origin_of(s: &Session, rf: &crate::regs::RegisterFile) -> Origin {
    let h = Here::at(s, rf);
    let idx = h.presented(s);
    let elf = s.shared.elf().ok();
    let table = elf.as_ref().and_then(|e| {
        let r = e.function_bounds(rf.rip)?;
        let rows = e.stmt_rows_in(r.start, r.end).ok()?;
        Some(Table {
            lo: r.start,
            hi: r.end,
            rows,
        })
    });
    let sal = h.sal(idx, table.as_ref());
    let name = h.name(idx);
    Origin {
        function: if name.is_empty() {
            function_name(s, rf.rip)
        } else {
            name
        },
        file: sal.as_ref().map(|l| l.0.clone()),
        line: sal.map(|l| l.1),
    }
}

/// `finish`: run until the selected frame returns; show the value. Out of
/// an inlined frame it steps (over calls) until that frame is left, as gdb
/// does.
pub fn finish(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    let mut st = start(s)?;
    let level = s.frame_level;
    let vfs = vframes(s, level + 2)?;
    let vf = vfs
        .get(level)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no frame {level}: `bt` lists the frames"))?;
    let pc = vf.regs.pc().unwrap_or(0);
    let from = match (&vf.file, vf.line) {
        (Some(f), Some(l)) => format!("#{level} {} at {f}:{l}", vf.function),
        _ => format!("#{level} {}", s.shared.describe(pc)),
    };
    let before = Some(vf.function.clone());
    st.origin = Origin {
        function: vf.function.clone(),
        file: vf.file.clone(),
        line: vf.line,
    };
    if vf.inline + 1 < vf.chain_len {
        // gdb: step in the calling frame with an empty range and no line;
        // stop once out of code called (or inlined) from it.
        let r = finish_inline(s, &mut st, &vf);
        let mut out = conclude(s, st, "finish", before, r)?;
        if let Output::Stepped { step, .. } = &mut out {
            step.run_till = Some(from);
        }
        return Ok(out);
    }
    let Some(up) = caller(s, &vf.regs, vf.real == 0) else {
        bail!(
            "`finish` not meaningful in the outermost frame ({})",
            s.shared.describe(pc)
        );
    };
    let (Some(ret), Some(cfa)) = (up.pc(), up.sp()) else {
        bail!("cannot find where {} returns", s.shared.describe(pc));
    };
    let lookup = if vf.real == 0 {
        pc
    } else {
        pc.saturating_sub(1)
    };
    let rtype = s
        .shared
        .elf()
        .ok()
        .and_then(|e| e.function_at(lookup).ok())
        .map(|f| f.return_type_name.clone())
        .unwrap_or_else(|| "?".into());
    let r = st.run_to(s, &[ret], cfa).and_then(|_| default_depth(s));
    let done = r.is_ok();
    let mut out = conclude(s, st, "finish", before, r)?;
    if let Output::Stepped { step, .. } = &mut out {
        step.run_till = Some(from);
        if done {
            let rax = s.registers()?.gpr[0];
            step.value = render_return(&rtype, rax);
            step.value_type = (rtype != "()" && rtype != "?" && !rtype.is_empty()).then_some(rtype);
        }
    }
    Ok(out)
}

/// `finish` out of the inlined frame `vf` (gdb's inline `finish`): the
/// step frame is its caller, with an empty range and no line, stepping
/// over calls. When `vf` is in an outer real frame, the frames below it
/// return first (gdb's step-resume breakpoint at the return address into
/// it), and the stop test runs there.
fn finish_inline(s: &mut Session, st: &mut Stepper, vf: &VFrame) -> Result<usize> {
    let outer = vf.real != 0;
    if outer {
        let (Some(ret), Some(sp)) = (vf.regs.pc(), vf.regs.sp()) else {
            bail!("cannot find where frame {} returns to", vf.real - 1);
        };
        st.run_to(s, &[ret], sp)?;
    }
    let (_, rf) = st.regs(s)?;
    let h = Here::at(s, &rf);
    // The caller of `vf` by its inline chain where `vf` was (the return
    // address may already be past the end of the inlined block).
    let gi = vf.inline + 1;
    let frame = if outer {
        let blocks = s
            .shared
            .elf()
            .ok()
            .and_then(|e| e.inline_blocks(rf.rip.saturating_sub(1)).ok())
            .unwrap_or_default();
        if gi + 1 < vf.chain_len {
            FrameId {
                cfa: h.cfa,
                code: blocks.get(gi).and_then(|b| b.entry_pc()).unwrap_or(0),
                depth: vf.chain_len - 1 - gi,
            }
        } else {
            FrameId {
                cfa: h.cfa,
                code: h.func_lo,
                depth: 0,
            }
        }
    } else {
        h.id(gi)
    };
    let goal = Goal {
        frame,
        stack: h.stack_id(),
        line: None,
        range: h.pc..h.pc,
    };
    run_goal(s, st, Mode::Next, goal, h.pc, rf.gpr[7], outer)
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

/// One frame as `bt`, `frame N`, `up`, `down` and `finish` count them
/// (gdb's frames): the real frames expanded into their inline chains,
/// without the inlined frames a stop presents at their call site.
#[derive(Clone)]
pub struct VFrame {
    /// Registers of the real frame.
    pub regs: Registers,
    /// The real frame's level (0: the stop).
    pub real: usize,
    /// Index in the real frame's inline chain (0: innermost).
    pub inline: usize,
    pub chain_len: usize,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// How many inlined frames the stop presents at their call site (gdb's
/// skipped inline frames, or what the last step presented at this pc).
pub fn presented_skip(s: &Session) -> usize {
    match s.registers() {
        Ok(rf) => Here::at(s, &rf).presented(s),
        Err(_) => 0,
    }
}

/// The frames from the stop outwards, at least `want` of them when the
/// stack has that many.
pub fn vframes(s: &Session, want: usize) -> Result<Vec<VFrame>> {
    let rf = s.registers()?;
    let skip = Here::at(s, &rf).presented(s);
    let mut regs = unwind_regs(&rf);
    let mut out: Vec<VFrame> = Vec::new();
    let mut real = 0;
    while out.len() < want {
        let pc = regs.pc().unwrap_or(0);
        let lookup = if real == 0 { pc } else { pc.saturating_sub(1) };
        let chain = s
            .shared
            .elf()
            .ok()
            .and_then(|e| e.frames(lookup).ok())
            .unwrap_or_default();
        let n = chain.len().max(1);
        let first = if real == 0 { skip.min(n - 1) } else { 0 };
        for idx in first..n {
            let f = chain.get(idx);
            let (file, line) = if idx == 0 && real == 0 {
                match Lines::at(s, pc).and_then(|l| l.row(pc).cloned()) {
                    Some(r) if r.line != 0 => (Some(r.file), Some(r.line)),
                    _ => (None, None),
                }
            } else {
                match f.and_then(|f| f.location.clone()) {
                    Some(l) if l.line != 0 => (Some(l.file), Some(l.line)),
                    _ => (None, None),
                }
            };
            out.push(VFrame {
                regs: regs.clone(),
                real,
                inline: idx,
                chain_len: n,
                function: f
                    .and_then(|f| f.demangled.clone().or(f.function.clone()))
                    .unwrap_or_else(|| function_name(s, lookup)),
                file,
                line,
            });
        }
        match caller(s, &regs, real == 0) {
            Some(c) if c.pc().is_some_and(|p| p != 0) => regs = c,
            _ => break,
        }
        real += 1;
    }
    Ok(out)
}

fn frame_view(s: &Session, level: usize, vfs: &[VFrame], detail: bool) -> FrameView {
    let vf = &vfs[level];
    let regs = &vf.regs;
    let pc = regs.pc().unwrap_or(0);
    let text = match (&vf.file, vf.line) {
        (Some(f), Some(l)) => source_text(f, l),
        _ => None,
    };
    let up = caller(s, regs, vf.real == 0);
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
        saved.push(("rip".into(), u.pc().unwrap_or(0)));
    }
    FrameView {
        level,
        pc,
        function: vf.function.clone(),
        file: vf.file.clone(),
        line: vf.line,
        text,
        cfa: up.as_ref().and_then(|u| u.sp()),
        sp: regs.sp(),
        // As gdb's `info frame`: the real frame's caller (an inline
        // frame's "saved rip" is its real frame's).
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
    let vfs = vframes(s, level + 2)?;
    if level >= vfs.len() {
        bail!(
            "no frame {level}: the stack has {} (`bt` lists them)",
            vfs.len()
        );
    }
    s.frame_level = level;
    s.frame_physical = vfs[level].real;
    if let Ok(mut e) = s.shared.expr.lock() {
        e.selected = (vfs[level].real > 0).then(|| vfs[level].regs.clone());
        // 0 = the concrete function, N = the Nth inlined call.
        e.inline_level = Some((vfs[level].chain_len - 1 - vfs[level].inline) as u32);
    }
    Ok(Output::Frame {
        frame: frame_view(s, level, &vfs, false),
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
    if vframes(s, level + 1)?.len() <= level {
        bail!("initial frame selected; you cannot go up");
    }
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
    let vfs = vframes(s, level + 2)?;
    if level >= vfs.len() {
        bail!("no frame {level} (`bt` lists them)");
    }
    Ok(Output::Frame {
        frame: frame_view(s, level, &vfs, true),
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
