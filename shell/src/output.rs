//! What command handlers return: data, rendered later as text or JSON
//! (see `render`). The JSON schema is documented in shell/SCHEMA.md.

use serde::Serialize;

use crate::disas::Insn;
use crate::events::{Bucket, EventView, Filter};
use crate::regs::RegisterFile;
use crate::rsp::StopReply;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeInfo {
    pub id: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub location: String,
    pub addr: u64,
    pub enabled: bool,
    pub hits: u64,
    pub nmissed: u64,
    /// Hits its predicate (`if EXPR`) rejected, in the kernel.
    pub filtered: u64,
    /// Hits whose predicate faulted (not recorded).
    pub faults: u64,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxactive: Option<u32>,
    /// What the host captures (names), for jprobes and kretprobes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<String>,
    /// Aggregating probes: the map (`@ID: count() by path:string64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RingCounters {
    pub size: u64,
    pub produced: u64,
    pub delivered: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakInfo {
    pub id: u32,
    pub kind: String,
    pub addr: u64,
    pub location: String,
    pub temporary: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// The condition, evaluated in the kernel (`break LOC if EXPR`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// In-kernel counters of a breakpoint with a condition or ignore count
    /// (`info breakpoints`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<BreakCounts>,
}

/// What the kernel counted at a conditional breakpoint: every trap
/// (`hits`), those the condition rejected (`false_hits`) or that faulted
/// (`faults`), true ones skipped by the ignore count (`ignored`), and what
/// is left of the ignore count (`ignore`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct BreakCounts {
    pub hits: u64,
    pub false_hits: u64,
    pub faults: u64,
    pub ignored: u64,
    pub ignore: u64,
}

/// Where the kernel stopped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StopInfo {
    pub reason: String,
    /// The kernel task that stopped (gdb's thread id minus one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    pub rip: u64,
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insn: Option<String>,
    #[serde(skip)]
    pub stop: StopReply,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemoryRow {
    pub addr: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DisasLine {
    #[serde(flatten)]
    pub insn: Insn,
    pub location: String,
    /// `=>` current rip, `K3` probe 3, `B1` breakpoint 1.
    pub marks: Vec<String>,
    /// Source line that starts here (with -s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Where a source-level step ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepView {
    pub command: String,
    pub function: String,
    /// The step ended in another function than it started in.
    pub function_changed: bool,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The source line's text (when the file is readable).
    pub text: Option<String>,
    /// The frame's CFA (its identity with `function`).
    pub frame: Option<u64>,
    /// `finish`: the frame it ran out of (`#0 sys_open at file:line`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_till: Option<String>,
    /// `finish`: the returned value and its type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// Hits of the step's temporary breakpoints in other tasks or deeper
    /// (recursive) frames, resumed silently.
    pub other_task_hits: u64,
    /// Single steps the stub made, and packets exchanged.
    pub stub_steps: u64,
    pub round_trips: u64,
    /// The user interrupted the command (Ctrl-C) before it finished: the
    /// step's task and where it was; the stop is where the CPU stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<StepInterrupted>,
}

/// A step the user interrupted: its task (which may be asleep or waiting
/// for a CPU while another task ran) and the line it was stepping.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepInterrupted {
    pub task: Option<u64>,
    pub task_name: Option<String>,
    /// `sleeping`, `ready` or `running` (the stub's `tasks`), when known.
    pub task_state: Option<String>,
    /// The frame and line the step was in when it was interrupted.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A frame as `frame`/`info frame` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FrameView {
    pub level: usize,
    pub pc: u64,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub text: Option<String>,
    /// Canonical frame address (the caller's rsp after the return).
    pub cfa: Option<u64>,
    pub sp: Option<u64>,
    pub caller: Option<String>,
    pub caller_pc: Option<u64>,
    /// `info frame`: registers saved in this frame, as the caller sees them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<Vec<(String, u64)>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FrameInfo {
    pub level: usize,
    pub pc: u64,
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub inlined: bool,
    /// `cfi`, `fp` (frame pointer), `kretprobe` (trampoline mapped back).
    pub how: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArgInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub location: String,
    /// A number (a string's contents, a bool), or null when unavailable.
    pub value: serde_json::Value,
    /// As the text form shows it (`0x10`, `"/etc/motd"`, `<unavailable>`).
    pub text: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThreadInfo {
    pub id: u64,
    pub name: String,
    pub state: String,
    pub current: bool,
    pub selected: bool,
    /// The CPU running the task (running tasks, from `monitor tasks`).
    pub cpu: Option<u32>,
}

/// The result of one command.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    None,
    Message {
        text: String,
    },
    ProbeSet {
        probe: ProbeInfo,
    },
    Probes {
        probes: Vec<ProbeInfo>,
    },
    ProbesChanged {
        action: String,
        ids: Vec<u32>,
    },
    Events {
        events: Vec<EventView>,
        /// Events the shell keeps for `events N` (the last
        /// [`crate::events::KEEP`] of all probes).
        kept: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        ring: Option<RingCounters>,
        received: u64,
        filter: Filter,
    },
    /// `maps`.
    Maps {
        maps: Vec<crate::exec::maps::MapView>,
    },
    /// `print @N`, `interval`, and each map at `quit`.
    Map {
        map: crate::exec::maps::MapView,
    },
    Hist {
        probe: u32,
        what: String,
        unit: String,
        buckets: Vec<Bucket>,
        /// Every event of the probe since it was set.
        events: u64,
        /// Values in the buckets.
        values: u64,
    },
    /// `wait events N`.
    Waited {
        /// Always `events`.
        #[serde(rename = "for")]
        what: String,
        wanted: u64,
        received: u64,
    },
    /// `wait stop`: the kernel is stopped (it may have been already).
    #[serde(rename = "waited")]
    WaitedStop {
        /// Always `stop`.
        #[serde(rename = "for")]
        what: String,
        already_stopped: bool,
    },
    Breakpoint {
        breakpoint: BreakInfo,
    },
    Breakpoints {
        breakpoints: Vec<BreakInfo>,
    },
    Running,
    Stopped {
        stop: StopInfo,
    },
    /// `step`/`next`/`until`/`advance`/`finish`: where the step ended.
    Stepped {
        stop: StopInfo,
        step: StepView,
    },
    /// `frame`/`up`/`down`/`info frame`: the selected frame.
    Frame {
        frame: FrameView,
    },
    Regs {
        regs: RegisterFile,
        flags: Vec<String>,
        location: String,
        verbose: bool,
    },
    Memory {
        rows: Vec<MemoryRow>,
    },
    Written {
        addr: u64,
        size: usize,
        value: u64,
    },
    Disas {
        lines: Vec<DisasLine>,
    },
    Backtrace {
        frames: Vec<FrameInfo>,
    },
    Symbol {
        addr: u64,
        symbol: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        frames: Vec<String>,
    },
    Lines {
        location: String,
        addrs: Vec<(u64, String)>,
    },
    Args {
        function: String,
        args: Vec<ArgInfo>,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Ptype {
        text: String,
    },
    Value {
        value: crate::exec::inspect::ValueView,
    },
    Displays {
        displays: Vec<crate::exec::inspect::DisplayView>,
    },
    Locals {
        function: String,
        params: bool,
        vars: Vec<crate::exec::inspect::VarView>,
    },
    Source {
        file: String,
        lines: Vec<crate::exec::inspect::SourceLine>,
    },
    Threads {
        threads: Vec<ThreadInfo>,
    },
    Monitor {
        text: String,
    },
    Help {
        text: String,
    },
    /// `why`.
    Why {
        why: crate::exec::postmortem::WhyInfo,
    },
    /// The summary shown when attaching to a kernel that stopped or died
    /// before the debugger came.
    PostMortem {
        postmortem: crate::exec::postmortem::PostMortem,
    },
    /// `dmesg`.
    Dmesg {
        dmesg: crate::exec::postmortem::Dmesg,
    },
    /// `dump core`.
    CoreDumped {
        core: crate::coredump::dump::Dumped,
    },
    /// `thread apply`.
    ThreadApply {
        results: Vec<crate::exec::postmortem::ThreadApplied>,
    },
    /// `record FILE`, `record off`, `record`.
    Recording {
        recording: crate::exec::record::RecordingInfo,
    },
    /// `lx tasks|dmesg|lsmod|current`.
    Linux {
        lx: crate::exec::linux::LxView,
    },
    Quit,
}
