//! When the kernel dies: `why`, the post-mortem summary shown on attach,
//! `dmesg` (the kernel's console ring), gdb's spellings (`info registers`,
//! `info threads`, `thread apply`), and the refusal to resume a dead
//! kernel.

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use crate::cmd::Invocation;
use crate::cmd::parse::number;
use crate::output::{FrameInfo, Output};
use crate::session::Session;

/// `monitor why`, parsed and placed (symbol, source, instruction).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct WhyInfo {
    /// `running`, `stopped` or `dead`.
    pub state: String,
    /// `attach`, `interrupt`, `breakpoint`, `watchpoint`, `step`, `trap`, `wait`, `death`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// For a death: `panic`, `trap`, `double-fault`, `stack-overflow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rip: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cr2: Option<u64>,
    /// A panic's `file:line:col`.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub panic_location: Option<String>,
    /// The panic message or the trap's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The kernel's `kdbg.ondeath=` policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub resumable: bool,
}

impl WhyInfo {
    pub fn dead(&self) -> bool {
        self.state == "dead"
    }

    /// The kernel stopped before this debugger came (a death, a breakpoint
    /// hit with nobody attached, `kdbg.wait`): attaching keeps it stopped.
    pub fn stopped_before_attach(&self) -> bool {
        self.dead() || (self.state == "stopped" && self.cause.as_deref() != Some("attach"))
    }

    /// Parses a `why` row (`None` for another stub that has no `why`).
    pub fn parse(text: &str) -> Option<WhyInfo> {
        let row = text
            .lines()
            .find_map(|l| proto::reply::WhyRow::parse(l).ok())?;
        Some(WhyInfo {
            state: row.state.to_string(),
            cause: row.cause.map(str::to_string),
            kind: row.kind.map(str::to_string),
            signal: row.signal,
            task: row.task,
            rip: row.rip,
            vector: row.vector,
            error_code: row.error_code,
            cr2: row.cr2,
            panic_location: row.location.map(str::to_string),
            message: row.msg.map(str::to_string),
            policy: row.policy.map(str::to_string),
            resumable: row.resumable != Some(false),
            ..WhyInfo::default()
        })
    }
}

/// Asks the stub why the kernel is stopped and places the answer.
pub fn query_why(s: &Session) -> Result<WhyInfo> {
    let text = s.monitor("why")?;
    let mut w = WhyInfo::parse(&text)
        .ok_or_else(|| anyhow!("the stub does not say why the kernel stopped (no `why` row)"))?;
    if let Some(t) = w.task {
        w.task_name = s.shared.display.task_name(t as u32);
    }
    if let Some(rip) = w.rip {
        w.location = Some(s.shared.describe(rip));
        w.source = s.shared.source_of(rip);
        w.insn = s.shared.insn_at(rip).map(|i| i.text);
    }
    Ok(w)
}

/// `why`: why the kernel is stopped (or died).
pub fn why(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    Ok(Output::Why { why: query_why(s)? })
}

/// Refuses to resume a dead kernel (`continue`, `stepi`, `nexti`, ...).
pub fn refuse_if_dead(s: &Session) -> Result<()> {
    if s.running() {
        return Ok(());
    }
    // A stub without `why` (QEMU's gdbstub, an older kdbg stub): no death to know of.
    let Ok(text) = s.monitor("why") else {
        return Ok(());
    };
    if let Some(w) = WhyInfo::parse(&text)
        && w.dead()
        && !w.resumable
    {
        bail!(
            "the kernel died ({}) and cannot resume: look around (`why`, `bt`, `regs`, `dmesg`), save it (`dump core FILE`), or `quit`",
            death_text(&w)
        );
    }
    Ok(())
}

fn signal_name(sig: u64) -> &'static str {
    match sig {
        2 => "SIGINT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        8 => "SIGFPE",
        11 => "SIGSEGV",
        _ => "signal",
    }
}

/// `panic at FILE:L:C: MESSAGE` or the trap's description.
pub fn death_text(w: &WhyInfo) -> String {
    let msg = w.message.clone().unwrap_or_default();
    match (w.kind.as_deref(), &w.panic_location) {
        (Some("panic"), Some(at)) => format!("panic at {at}: {msg}"),
        (Some("panic"), None) => format!("panic: {msg}"),
        _ => msg,
    }
}

/// The text of a `why` result.
pub fn render_why(w: &WhyInfo) -> String {
    let task = match (w.task, &w.task_name) {
        (Some(t), Some(n)) => format!("task {t} ({n})"),
        (Some(t), None) => format!("task {t}"),
        _ => "the current task".to_string(),
    };
    let mut out = match w.state.as_str() {
        "running" => return "the kernel is running".to_string(),
        "dead" => {
            let mut s = format!("the kernel died: {}\n", death_text(w));
            s.push_str(&format!(
                "  in {task}, {} ({})",
                signal_name(w.signal.unwrap_or(0)),
                w.signal.unwrap_or(0)
            ));
            if let Some(v) = w.vector
                && w.kind.as_deref() != Some("panic")
            {
                s.push_str(&format!(", vector {v}"));
                if let Some(e) = w.error_code {
                    s.push_str(&format!(", error code {e:#x}"));
                }
            }
            if let Some(c) = w.cr2.filter(|c| *c != 0) {
                s.push_str(&format!(", cr2 {c:#x}"));
            }
            s.push_str(if w.resumable {
                "; it can resume"
            } else {
                "; it cannot resume"
            });
            s
        }
        _ => format!(
            "the kernel is stopped: {} in {task}, {} ({})",
            w.cause.as_deref().unwrap_or("stop"),
            signal_name(w.signal.unwrap_or(0)),
            w.signal.unwrap_or(0)
        ),
    };
    if let Some(rip) = w.rip {
        out.push_str(&format!(
            "\n  at {} ({rip:#x})",
            w.location.clone().unwrap_or_default()
        ));
        if let Some(src) = &w.source {
            out.push_str(&format!(" {src}"));
        }
        if let Some(i) = &w.insn {
            out.push_str(&format!("\n  => {rip:#x}: {i}"));
        }
    }
    out
}

/// What attaching to a kernel that stopped (or died) before the debugger
/// came shows: why, where, the stack of the task that stopped, the last
/// console lines.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PostMortem {
    pub why: WhyInfo,
    pub frames: Vec<FrameInfo>,
    /// The console's last lines (from the kernel's console ring).
    pub console: Vec<String>,
}

/// The frame that panicked: the first one outside the panic machinery.
pub fn culprit(frames: &[FrameInfo]) -> Option<&FrameInfo> {
    frames.iter().find(|f| {
        let n = f.function.as_str();
        !(n.starts_with("core::")
            || n.starts_with("kernel::death::")
            || n.starts_with("__rustc::")
            || n.starts_with("rust_begin_unwind")
            || n.starts_with("std::"))
    })
}

pub fn render_postmortem(r: &crate::render::Render, p: &PostMortem) -> String {
    let mut out = render_why(&p.why);
    if p.why.kind.as_deref() == Some("panic")
        && let Some(f) = culprit(&p.frames)
    {
        out.push_str(&format!(
            "\n  panicked in {} ({:#x}){}",
            f.function,
            f.pc,
            f.source
                .as_ref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default()
        ));
    }
    if !p.frames.is_empty() {
        out.push_str("\nbacktrace:\n");
        out.push_str(&r.output(
            "bt",
            &Output::Backtrace {
                frames: p.frames.clone(),
            },
        ));
    }
    if !p.console.is_empty() {
        out.push_str("\nlast console lines:\n");
        for l in &p.console {
            out.push_str(&format!("  | {l}\n"));
        }
        out.pop();
    }
    if p.why.dead() {
        out.push_str("\n(`dump core FILE` saves it; `dmesg` shows the whole console)");
    }
    out
}

/// At connect: if the kernel stopped before this debugger came, keep it
/// stopped, select the task that stopped and build the summary. Returns
/// `None` when the stop is this attach's own (or the stub cannot say).
pub fn on_connect(s: &mut Session, stop_thread: Option<u64>) -> Option<PostMortem> {
    // The task that stopped is the one `g` must read (gdbstub starts at
    // thread 1 = task 0 otherwise).
    if let Some(tid) = stop_thread
        && s.client().ok()?.select_thread(tid).is_ok()
    {
        s.selected_thread = crate::session::task_of_tid(tid);
    }
    let why = query_why(s).ok()?;
    if !why.stopped_before_attach() {
        return None;
    }
    if let Some(task) = why.task
        && s.selected_thread != Some(task)
        && s.client()
            .ok()?
            .select_thread(crate::session::tid_of_task(task))
            .is_ok()
    {
        s.selected_thread = Some(task);
    }
    let frames = crate::cmd::table::find("bt")
        .and_then(|cmd| {
            let inv = Invocation {
                cmd,
                modifier: None,
                args: vec!["16".into()],
                raw: String::new(),
            };
            match crate::exec::stack::backtrace(s, &inv) {
                Ok(Output::Backtrace { frames }) => Some(frames),
                _ => None,
            }
        })
        .unwrap_or_default();
    let console = read_console(s, 40)
        .map(|d| last_words(d.lines))
        .unwrap_or_default();
    Some(PostMortem {
        why,
        frames,
        console,
    })
}

/// The console lines worth a summary: the five before the kernel's death
/// report (`KERNEL PANIC`/`FATAL:`), that report's first line and the
/// last line (the register dump between them is in the summary already);
/// else the last ten.
fn last_words(lines: Vec<String>) -> Vec<String> {
    let Some(at) = lines
        .iter()
        .rposition(|l| l.starts_with("KERNEL PANIC") || l.starts_with("FATAL:"))
    else {
        let n = lines.len().saturating_sub(10);
        return lines[n..].to_vec();
    };
    let from = at.saturating_sub(5);
    let mut out: Vec<String> = lines[from..=at]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .cloned()
        .collect();
    if let Some(last) = lines.last()
        && lines.len() - 1 > at
    {
        if lines.len() - 1 > at + 1 {
            out.push("...".into());
        }
        out.push(last.clone());
    }
    out
}

/// The console ring's symbols in the kernel (see kernel/src/console.rs).
const RING: &str = "KDBG_CONSOLE_RING";
const WRITTEN: &str = "KDBG_CONSOLE_WRITTEN";

/// The last lines of the kernel's console.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dmesg {
    pub lines: Vec<String>,
    /// Bytes the kernel has written since boot.
    pub written: u64,
    /// Bytes the ring keeps.
    pub size: u64,
}

fn ring_symbols(s: &Session) -> Result<(u64, u64, u64)> {
    let elf = s.shared.elf()?;
    let ring = elf.lookup(RING).into_iter().next().ok_or_else(|| {
        anyhow!("this kernel keeps no console ring (no `{RING}` symbol): dmesg needs the kdbg reference kernel's console")
    })?;
    let written = elf
        .lookup(WRITTEN)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("this kernel has no `{WRITTEN}` symbol"))?;
    Ok((ring.address, ring.size, written.address))
}

/// Reads the last `max` lines of the console ring (all when `max` is 0).
pub fn read_console(s: &Session, max: usize) -> Result<Dmesg> {
    let (ring, size, written_at) = ring_symbols(s)?;
    if size == 0 {
        bail!("the console ring symbol has no size");
    }
    let read =
        |addr: u64, len: usize| -> Result<Vec<u8>> { Ok(s.client()?.read_memory(addr, len)?) };
    let w = read(written_at, 8)?;
    let written = u64::from_le_bytes(w.try_into().map_err(|_| anyhow!("short read"))?);
    let avail = written.min(size);
    // Read backwards from the newest byte until enough lines are in.
    let mut want = if max == 0 {
        avail
    } else {
        (max as u64 * 160).max(4096).min(avail)
    };
    loop {
        want = want.min(avail);
        let start = written - want;
        let mut bytes = Vec::with_capacity(want as usize);
        let mut pos = start;
        while pos < written {
            let off = pos % size;
            let n = (size - off).min(written - pos);
            bytes.extend(read(ring + off, n as usize)?);
            pos += n;
        }
        let text = String::from_utf8_lossy(&bytes).replace('\r', "");
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        // The first line is cut unless the read started at the beginning.
        if start > 0 && start > written.saturating_sub(size) && !lines.is_empty() {
            lines.remove(0);
        }
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        if max == 0 || lines.len() >= max || want >= avail {
            if max > 0 && lines.len() > max {
                lines.drain(..lines.len() - max);
            }
            return Ok(Dmesg {
                lines,
                written,
                size,
            });
        }
        want *= 2;
    }
}

/// `dmesg [N]`: the kernel's console (its last N lines), live, at a stop,
/// after a death, from a core.
pub fn dmesg(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let max = match inv.args.as_slice() {
        [] => 0,
        [n] => {
            let v = number(n).map_err(|_| anyhow!("usage: dmesg [N]: N is a line count"))?;
            if v == 0 {
                bail!("usage: dmesg [N]: N is a line count of 1 or more");
            }
            v as usize
        }
        _ => bail!("usage: dmesg [N]"),
    };
    // The ring is read with the kernel stopped (as gdb reads memory).
    let _pause = crate::session::Pause::new(s)?;
    Ok(Output::Dmesg {
        dmesg: read_console(s, max)?,
    })
}

pub fn render_dmesg(d: &Dmesg) -> String {
    if d.lines.is_empty() {
        return "(the console ring is empty)".to_string();
    }
    d.lines.join("\n")
}

/// One thread's result of `thread apply`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThreadApplied {
    pub id: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<Output>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `thread apply all|N[,M...] CMD...`: runs CMD with each thread selected.
pub fn thread_apply(s: &mut Session, args: &[String]) -> Result<Output> {
    let usage = "usage: thread apply all|N[,M...] COMMAND (e.g. `thread apply all bt`)";
    let (which, cmd) = args.split_first().ok_or_else(|| anyhow!(usage))?;
    if cmd.is_empty() {
        bail!(usage);
    }
    let mut tasks: Vec<(u64, String)> = Vec::new();
    let text = s.monitor("tasks")?;
    let all: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| proto::reply::TaskRow::parse(l).ok())
        .map(|t| (u64::from(t.id), t.name.to_string()))
        .collect();
    if which == "all" {
        tasks = all.clone();
    } else {
        for part in which.split(',').filter(|p| !p.is_empty()) {
            let id =
                number(part).map_err(|_| anyhow!("`{part}` is not a thread number; {usage}"))?;
            let t = all
                .iter()
                .find(|(t, _)| *t == id)
                .ok_or_else(|| anyhow!("no task {id}: `threads` lists them"))?;
            tasks.push(t.clone());
        }
    }
    let line = cmd.join(" ");
    let inner = crate::cmd::parse_line(&line)
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!(usage))?;
    if matches!(inner.cmd.name, "thread" | "continue" | "stepi" | "nexti") {
        bail!(
            "`thread apply` runs commands that look at a thread, not `{}`",
            inner.cmd.name
        );
    }
    let before = s.selected_thread;
    let mut results = Vec::new();
    for (id, name) in tasks {
        let tid = crate::session::tid_of_task(id);
        let selected = s
            .client()?
            .select_thread(tid)
            .map_err(|e| anyhow!("cannot select thread {id}: {e}"));
        let r = selected.and_then(|_| {
            s.selected_thread = Some(id);
            crate::exec::run(s, &inner)
        });
        let (output, error) = match r {
            Ok(o) => (Some(Box::new(o)), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        results.push(ThreadApplied {
            id,
            name,
            output,
            error,
        });
    }
    // Back to the thread selected before.
    let back = before.unwrap_or(0);
    if s.client()?
        .select_thread(crate::session::tid_of_task(back))
        .is_ok()
    {
        s.selected_thread = before;
    }
    Ok(Output::ThreadApply { results })
}

pub fn render_thread_apply(r: &crate::render::Render, results: &[ThreadApplied]) -> String {
    let mut out = Vec::new();
    for t in results {
        let body = match (&t.output, &t.error) {
            (Some(o), _) => r.output("thread apply", o),
            (None, Some(e)) => format!("error: {e}"),
            _ => String::new(),
        };
        out.push(format!(
            "\nThread {} ({}):\n{}",
            t.id,
            t.name,
            body.trim_end()
        ));
    }
    out.join("\n").trim_start().to_string()
}

/// `info registers rip rsp`: gdb's layout, one register a line.
fn named_registers(s: &mut Session, names: &[String]) -> Result<Output> {
    if s.running() {
        bail!("`info registers` needs the kernel stopped: use `interrupt` (or Ctrl-C) first");
    }
    let regs = s.registers()?;
    let mut lines = Vec::new();
    for n in names {
        let name = n.trim_start_matches('$');
        let v = regs
            .get(name)
            .ok_or_else(|| anyhow!("invalid register `{n}`: use rax..r15, rip, eflags, cs..gs"))?;
        let shown = if name == "rip" {
            format!("{v:#x} <{}>", s.shared.describe(v))
        } else {
            format!("{v:#x}")
        };
        lines.push(format!("{name:<15}{v:<#19x}{shown}"));
    }
    Ok(Output::Message {
        text: lines.join("\n"),
    })
}

/// `info registers` / `info all-registers` / `info threads`, gdb's names
/// for `regs` and `threads`.
pub fn info_gdb(s: &mut Session, topic: &str, rest: &[String]) -> Option<Result<Output>> {
    let (name, args): (&str, Vec<String>) = match topic {
        "registers" | "reg" | "r" if !rest.is_empty() => {
            return Some(named_registers(s, rest));
        }
        "registers" | "reg" | "r" => ("regs", Vec::new()),
        "all-registers" => ("regs", [vec!["-v".to_string()], rest.to_vec()].concat()),
        "threads" => ("threads", rest.to_vec()),
        _ => return None,
    };
    let cmd = crate::cmd::table::find(name)?;
    let inv = Invocation {
        cmd,
        modifier: None,
        args,
        raw: String::new(),
    };
    Some(crate::exec::run(s, &inv))
}
