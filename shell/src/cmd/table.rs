//! The one command table: dispatch, parsing, `help`, completion, hints and
//! the README command reference all come from [`COMMANDS`].
//!
//! Adding a command touches one place: a [`Command`] row in [`COMMANDS`]
//! whose `run` is a [`Handler`] in `shell/src/exec/<area>.rs`. The handler
//! gets the parsed line ([`Invocation`]: words, `/MOD`) and returns data
//! ([`Output`]); `exec::run` checks `needs_target`/`requires_halted` before
//! it is called, and the caller renders the result (text or `--json`).

use anyhow::Result;

use super::parse::Invocation;
use crate::exec::{
    code, conditions, eventcmds, info, inspect, linux, maps, memory, postmortem, probes, record,
    run, sessioncmds, stack, state, stepping,
};
use crate::output::Output;
use crate::session::Session;

/// What runs a command: the session and the parsed line in, data out.
pub type Handler = fn(&mut Session, &Invocation) -> Result<Output>;

/// What an argument is, for completion and hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// `symbol`, `symbol+off`, `0xADDR`, `file:line`.
    Location,
    /// A function name.
    Function,
    /// Any symbol (data or code) or address.
    Symbol,
    /// A probe id.
    ProbeId,
    /// A breakpoint number.
    BreakId,
    /// A number (decimal or 0x-hex).
    Number,
    /// A file on the host.
    Path,
    /// One of fixed words.
    Keyword(&'static [&'static str]),
    /// Capture items of a jprobe/kretprobe.
    Capture,
    /// A command name (for `help`).
    Command,
    /// A thread id.
    Thread,
    /// A type or variable name.
    TypeName,
    /// An expression (print, display, set var).
    Expr,
    /// Free text.
    Text,
}

/// One argument slot in a usage line.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    pub name: &'static str,
    pub kind: ArgKind,
    pub optional: bool,
    /// May be given more than once (always last).
    pub repeated: bool,
}

const fn req(name: &'static str, kind: ArgKind) -> Arg {
    Arg {
        name,
        kind,
        optional: false,
        repeated: false,
    }
}
const fn opt(name: &'static str, kind: ArgKind) -> Arg {
    Arg {
        name,
        kind,
        optional: true,
        repeated: false,
    }
}
const fn many(name: &'static str, kind: ArgKind, optional: bool) -> Arg {
    Arg {
        name,
        kind,
        optional,
        repeated: true,
    }
}

/// Groups, in the order `help` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Probes,
    Events,
    Execution,
    State,
    Session,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Probes,
        Group::Events,
        Group::Execution,
        Group::State,
        Group::Session,
    ];
    pub fn title(self) -> &'static str {
        match self {
            Group::Probes => "Probes",
            Group::Events => "Events",
            Group::Execution => "Execution",
            Group::State => "State",
            Group::Session => "Session",
        }
    }
}

/// One command: everything the shell knows about it, including what runs it.
pub struct Command {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub args: &'static [Arg],
    /// Text after the name in the usage line when [`Command::args`] alone
    /// does not say it (flags, `/FMT`).
    pub usage: &'static str,
    pub summary: &'static str,
    /// Longer help (examples), shown by `help CMD`.
    pub details: &'static str,
    /// Flags it accepts (`--dry-run`, `-v`): completed after a `-`, and not
    /// counted as positional [`Command::args`] by completion.
    pub flags: &'static [&'static str],
    /// Takes a gdb-style `/MOD` suffix (`x/8gx`, also `x /8gx`).
    pub modifier: bool,
    pub group: Group,
    /// Needs a stub connection.
    pub needs_target: bool,
    /// Needs the kernel stopped (not running).
    pub requires_halted: bool,
    /// The handler (in `shell/src/exec/`).
    pub run: Handler,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Command {
    /// `kprobe LOC`, `jprobe FUNC [ARGS...]`.
    pub fn usage_line(&self) -> String {
        if !self.usage.is_empty() {
            return format!("{} {}", self.name, self.usage);
        }
        let mut s = self.name.to_string();
        for a in self.args {
            s.push(' ');
            let body = if a.repeated {
                format!("{}...", a.name)
            } else {
                a.name.to_string()
            };
            if a.optional {
                s.push_str(&format!("[{body}]"));
            } else {
                s.push_str(&body);
            }
        }
        s
    }

    /// The argument slot for the `n`th word after the name.
    pub fn arg_at(&self, n: usize) -> Option<&Arg> {
        self.args
            .get(n)
            .or_else(|| self.args.last().filter(|a| a.repeated))
    }
}

use ArgKind as K;

const PROBE_ACTIONS: &[&str] = &["on", "off"];
const INFO_TOPICS: &[&str] = &[
    "sym",
    "line",
    "args",
    "locals",
    "breakpoints",
    "frame",
    "skip",
];
const DELETE_WHAT: &[&str] = &["break"];
const LX_TOPICS: &[&str] = &["tasks", "ps", "dmesg", "lsmod", "current", "kaslr"];

/// Every command of the shell, in help order.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "kprobe",
        aliases: &["kp"],
        args: &[req("LOC", K::Location), many("AGG", K::Capture, true)],
        usage: "LOC [AGG | printf \"FMT\" ARGS...] [if EXPR]",
        summary: "probe an instruction; each hit prints the location, registers and the instruction (or updates an in-kernel map: AGG)",
        details: "LOC is a symbol, symbol+offset, an address (0x...) or file:line.\n\
                  The address must start an instruction (`disas FUNC` shows where they\n\
                  start); the kernel refuses blacklisted code.\n\
                  printf \"FMT\" ARGS... shows each hit as one formatted line (see jprobe;\n\
                  a kprobe has $arg0..$arg5 / %rdi..%r9, $task, $comm, $cpu, $func).\n\
                  AGG aggregates in the kernel instead of sending events (see `help maps`):\n\
                  \x20 count [by KEY]            sum|min|max|avg|stats|hist EXPR [by KEY]\n\
                  \x20 lhist EXPR MIN MAX STEP [by KEY]   KEY = EXPR[:string[N]][, ...]\n\
                  \x20 budget=BYTES              the map's kernel memory (default 256 KiB)\n\
                  Examples: kprobe spawn_task\n\
                  \x20         kprobe spawn_task+0x10\n\
                  \x20         kprobe fib lhist n 0 20 1",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: probes::kprobe,
    },
    Command {
        name: "jprobe",
        aliases: &["jp"],
        args: &[req("FUNC", K::Function), many("ARGS", K::Capture, true)],
        usage: "[--dry-run] FUNC [ARGS...|AGG] [printf \"FMT\" ARGS...] [if EXPR]",
        summary: "probe a function entry and capture its arguments by name (only hits where EXPR is true, decided in the kernel), or aggregate them in the kernel",
        details: "Without ARGS all parameters known from DWARF are captured. ARGS items:\n\
                  \x20 name        a parameter          name->field  a field through a pointer\n\
                  \x20 p->a.b->c   nested members       p->f:string  a string member\n\
                  \x20 *name       the value pointed to name:string  a C string\n\
                  \x20 $arg3       the 4th argument register (0-based)\n\
                  \x20 %rdi        an argument register (rdi rsi rdx rcx r8 r9)\n\
                  --dry-run shows the monitor command and capture layout without setting it.\n\
                  printf \"FMT\" ARGS... shows each event as one line, formatted by the shell\n\
                  from the captured values (bpftrace's printf: %d %i %u %x %X %o %c %s %p %%,\n\
                  flags - 0 + # and width.precision). ARGS are expressions (+ - * / % << >>\n\
                  & | ^ comparisons) over captured names, ret, $duration, $task, $comm, $cpu,\n\
                  $probe, $func, $arg0..$arg5; names it uses are captured. JSON keeps all fields.\n\
                  AGG (instead of ARGS and printf) aggregates in the kernel instead of sending events (see `help maps`):\n\
                  \x20 count [by KEY]            sum|min|max|avg|stats|hist EXPR [by KEY]\n\
                  \x20 lhist EXPR MIN MAX STEP [by KEY]   KEY = EXPR[:string[N]][, ...]\n\
                  \x20 budget=BYTES              the map's kernel memory (default 256 KiB)\n\
                  Examples: jprobe spawn_task\n\
                  \x20         jprobe spawn_task clone_flags regs->ip *parent_tid\n\
                  \x20         jprobe sys_open path:string flags\n\
                  \x20         jprobe fib printf \"fib(%d) on %s\" n $comm\n\
                  \x20         jprobe spawn_task sum stack_size by $task",
        flags: &["--dry-run"],
        modifier: false,
        group: Group::Probes,
        needs_target: false,
        requires_halted: false,
        run: probes::jprobe,
    },
    Command {
        name: "kretprobe",
        aliases: &["kr", "kretp"],
        args: &[
            req("FUNC", K::Function),
            opt("maxactive=N", K::Number),
            many("ARGS", K::Capture, true),
        ],
        usage: "[--dry-run] FUNC [maxactive=N] [ARGS...|AGG] [printf \"FMT\" ARGS...] [if EXPR]",
        summary: "probe a function's return: return value, duration and entry arguments (only returns where EXPR is true: ret, $duration, arguments), or aggregate them in the kernel",
        details: "maxactive=N bounds the calls tracked at once (default max(10, 2*CPUs);\n\
                  64 for an aggregating kretprobe); hits beyond it count as nmissed.\n\
                  ARGS, printf and AGG as for jprobe (with ret and $duration).\n\
                  Examples: kretprobe sys_open path:string\n\
                  \x20         kretprobe sys_open printf \"open %s -> %d (%d ns)\" path ret $duration\n\
                  \x20         kretprobe sys_open count by path:string\n\
                  \x20         kretprobe sys_open hist $duration\n\
                  \x20         kretprobe sys_open stats ret if ret < 0",
        flags: &["--dry-run"],
        modifier: false,
        group: Group::Probes,
        needs_target: false,
        requires_halted: false,
        run: probes::kretprobe,
    },
    Command {
        name: "probes",
        aliases: &["lp"],
        args: &[],
        usage: "[-v]",
        summary: "list probes: id, type, location, enabled, hits, nmissed, execution path",
        details: "PATH is emulated, out-of-line, boosted or optimized (a jump to a detour, no trap). \
                  With -v a probe that stays an int3 says why it is not optimized, e.g. \
                  `boosted (not optimized: jump-into-region)`.",
        flags: &["-v"],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: probes::list,
    },
    Command {
        name: "maps",
        aliases: &[],
        args: &[],
        usage: "",
        summary: "list the in-kernel maps of aggregating probes: aggregate, key, entries/capacity, map_full, faults, bytes",
        details: "An aggregating probe (kprobe/jprobe/kretprobe ... AGG) updates its map in\n\
                  the kernel at every hit and sends no events; its map is named @ID after\n\
                  the probe. The map's memory is fixed when the probe is set (budget=BYTES,\n\
                  default 256 KiB, at most 4 MiB; entries follow from it): an insert into a\n\
                  full map is refused and counted (map_full), a key or value that cannot be\n\
                  read is counted (faults). Updates go to per-CPU copies.\n\
                  print @ID shows a map (counts as a table, largest first; hist and lhist\n\
                  as histograms); clear @ID removes its keys, zero @ID zeroes its values;\n\
                  interval S print @ID prints it every S seconds; quit prints every map.\n\
                  delete ID removes the probe and its map.",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: maps::maps,
    },
    Command {
        name: "clear",
        aliases: &[],
        args: &[many("@MAP", K::Text, false)],
        usage: "",
        summary: "remove every key of in-kernel maps (`maps` lists them)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: maps::clear,
    },
    Command {
        name: "zero",
        aliases: &[],
        args: &[many("@MAP", K::Text, false)],
        usage: "",
        summary: "zero the values of in-kernel maps, keeping their keys",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: maps::zero,
    },
    Command {
        name: "interval",
        aliases: &[],
        args: &[
            req("SECONDS", K::Number),
            opt("print", K::Keyword(&["print", "off"])),
            many("@MAP", K::Text, true),
        ],
        usage: "SECONDS print @MAP... | interval off",
        summary: "print in-kernel maps every SECONDS seconds while the kernel runs",
        details: "Example: interval 1 print @3",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: maps::interval,
    },
    Command {
        name: "enable",
        aliases: &[],
        args: &[many("ID", K::ProbeId, false)],
        usage: "",
        summary: "enable probes",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: probes::enable,
    },
    Command {
        name: "disable",
        aliases: &[],
        args: &[many("ID", K::ProbeId, false)],
        usage: "",
        summary: "disable probes (they stay listed and keep their counts)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: probes::disable,
    },
    Command {
        name: "delete",
        aliases: &["d"],
        args: &[
            opt("break", K::Keyword(DELETE_WHAT)),
            many("ID", K::ProbeId, false),
        ],
        usage: "ID... | delete break N...",
        summary: "delete probes, or breakpoints with `delete break N`",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Probes,
        needs_target: true,
        requires_halted: false,
        run: probes::delete,
    },
    Command {
        name: "events",
        aliases: &["ev"],
        args: &[opt("N", K::Number)],
        usage: "[N] [probe=ID] [task=ID|NAME]",
        summary: "show the last N events (default 20), optionally of one probe or task",
        details: "Shows from the last 10,000 events the shell keeps (of all probes); `hist`\n\
                  counts every event, and `record FILE` keeps every one.\n\
                  Also shows the kernel's ring counters: produced, delivered, dropped.",
        flags: &[],
        modifier: false,
        group: Group::Events,
        needs_target: false,
        requires_halted: false,
        run: eventcmds::events,
    },
    Command {
        name: "live",
        aliases: &[],
        args: &[opt("on|off", K::Keyword(PROBE_ACTIONS))],
        usage: "",
        summary: "turn the live display of events on or off (they are recorded either way)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Events,
        needs_target: false,
        requires_halted: false,
        run: eventcmds::live,
    },
    Command {
        name: "filter",
        aliases: &[],
        args: &[],
        usage: "[probe=ID] [task=ID|NAME] | filter off",
        summary: "show only events of one probe and/or task (live and in `events`)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Events,
        needs_target: false,
        requires_halted: false,
        run: eventcmds::filter,
    },
    Command {
        name: "hist",
        aliases: &[],
        args: &[req("PROBE", K::ProbeId)],
        usage: "PROBE [lat|ret|ARG]",
        summary: "histogram of a probe's latency (kretprobe default), return values, or a captured argument",
        details: "Power-of-two buckets, like bpftrace's hist(), over every event of the\n\
                  probe since it was set (aggregated as events arrive, no window).",
        flags: &[],
        modifier: false,
        group: Group::Events,
        needs_target: false,
        requires_halted: false,
        run: eventcmds::hist,
    },
    Command {
        name: "record",
        aliases: &[],
        args: &[opt("FILE|off", K::Path)],
        usage: "FILE | record off | record",
        summary: "append every delivered event to FILE (and the kernel's drops where they happened); `kdbg report FILE` shows it",
        details: "NDJSON: a header (kdbg version, the kernel ELF's build id and hash, the\n\
                  TSC rate, every probe's definition), then one line per event exactly as\n\
                  --json prints it, one per drop report of the kernel at its place in the\n\
                  stream, one per probe set meanwhile, and an end line (docs/RECORDING.md).\n\
                  `record` alone says whether a recording runs; `kdbg --record FILE` starts\n\
                  one at attach. kdbg report FILE [--json] renders it; kdbg report FILE hist\n\
                  PROBE [lat|ret|ARG] and kdbg report FILE count [PROBE] [by FIELD] add it up.\n\
                  Example: record /tmp/opens.ndjson",
        flags: &[],
        modifier: false,
        group: Group::Events,
        needs_target: false,
        requires_halted: false,
        run: record::record,
    },
    Command {
        name: "wait",
        aliases: &[],
        args: &[],
        usage: "events N [timeout S] | wait stop [timeout S]",
        summary: "wait until N more events arrived, or until the kernel stops (a breakpoint, a watchpoint); fails after the timeout (default 10 s)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Events,
        needs_target: false,
        requires_halted: false,
        run: eventcmds::wait,
    },
    Command {
        name: "break",
        aliases: &["b", "br"],
        args: &[req("LOC", K::Location), many("AGG", K::Capture, true)],
        usage: "LOC [if EXPR]",
        summary: "software breakpoint: the kernel stops there (only when EXPR is true, evaluated in the kernel)",
        details: "EXPR is the language of `print`, compiled for the breakpoint's address into the stub's verified bytecode: parameters and locals (their DWARF location there), globals, $registers, $task, $cpu, members, pointers, casts, comparisons, && || !, string equality (p == \"text\"). A false condition resumes inside the kernel without contacting the host; a condition that faults counts and does not stop. Example: break fib if n == 5",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: false,
        run: conditions::break_,
    },
    Command {
        name: "tbreak",
        aliases: &[],
        args: &[req("LOC", K::Location), many("AGG", K::Capture, true)],
        usage: "LOC [if EXPR]",
        summary: "temporary breakpoint: removed at its first stop (with `if EXPR`: its first stop with EXPR true)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: false,
        run: conditions::tbreak,
    },
    Command {
        name: "hbreak",
        aliases: &[],
        args: &[req("LOC", K::Location)],
        usage: "",
        summary: "hardware breakpoint (debug registers, four slots)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: false,
        run: run::hbreak,
    },
    Command {
        name: "condition",
        aliases: &[],
        args: &[req("N", K::BreakId), many("EXPR", K::Expr, true)],
        usage: "",
        summary: "make breakpoint N stop only when EXPR is true (evaluated in the kernel); no EXPR: stop every time",
        details: "The same expressions as `break LOC if EXPR`. Example: condition 1 n == 5",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: false,
        run: conditions::condition,
    },
    Command {
        name: "ignore",
        aliases: &[],
        args: &[req("N", K::BreakId), req("COUNT", K::Number)],
        usage: "",
        summary: "skip the next COUNT stops of breakpoint N (counted in the kernel, after its condition)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: false,
        run: conditions::ignore,
    },
    Command {
        name: "watch",
        aliases: &[],
        args: &[req("ADDR|SYMBOL", K::Symbol), opt("LEN", K::Number)],
        usage: "[-r|-a] ADDR|SYMBOL [LEN]",
        summary: "hardware watchpoint on writes (-r reads, -a any access); LEN 1, 2, 4 or 8",
        details: "",
        flags: &["-r", "-a"],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: false,
        run: run::watch,
    },
    Command {
        name: "continue",
        aliases: &["c", "cont"],
        args: &[],
        usage: "",
        summary: "let the kernel run (events keep printing)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: run::cont,
    },
    Command {
        name: "stepi",
        aliases: &["si"],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "execute one instruction (N times)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: run::stepi,
    },
    Command {
        name: "nexti",
        aliases: &["ni"],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "execute one instruction, stepping over calls",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: run::nexti,
    },
    Command {
        name: "step",
        aliases: &["s"],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "run to the next source line, entering calls (not the standard library)",
        details: "As gdb's step over the DWARF line table: stops at the first instruction of a different line in this frame, at the first line after the prologue of a called function with line information, or in the caller when the function returns. core::/alloc::/std:: functions and /rustc/ files are stepped through (`set step-library on` stops there; `skip function|file` adds more). Other tasks hitting the step's temporary breakpoints are resumed and counted; the step ends in the task that started it; instructions are single-stepped with interrupts masked.",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::step,
    },
    Command {
        name: "next",
        aliases: &["n"],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "run to the next source line in this frame, stepping over calls",
        details: "Calls run to their return in the same frame (task and stack pointer checked: a recursive call or another task hitting the return address does not end the step). Ends in the caller when the function returns.",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::next,
    },
    Command {
        name: "until",
        aliases: &[],
        args: &[opt("LOC", K::Location)],
        usage: "",
        summary: "next, but not backwards (leave a loop); until LOC runs to LOC or the frame's return",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::until,
    },
    Command {
        name: "advance",
        aliases: &[],
        args: &[req("LOC", K::Location)],
        usage: "",
        summary: "run to LOC in this task (or until the current frame returns)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::advance,
    },
    Command {
        name: "finish",
        aliases: &["fin"],
        args: &[],
        usage: "",
        summary: "run until the selected frame returns; print the returned value with its type",
        details: "Prints `Run till exit from #N FUNCTION at FILE:LINE`, the caller's line and `Value returned: (TYPE) VALUE` (rax as the DWARF return type). A kretprobed function returns through the probe as usual and the stop is at the real caller.",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::finish,
    },
    Command {
        name: "frame",
        aliases: &["f"],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "select frame N (0 = innermost) for print, info locals, info args, finish; show it",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::frame,
    },
    Command {
        name: "up",
        aliases: &[],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "select the caller's frame (N frames up)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::up,
    },
    Command {
        name: "down",
        aliases: &[],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "select the callee's frame (N frames down)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: true,
        run: stepping::down,
    },
    Command {
        name: "skip",
        aliases: &[],
        args: &[
            req(
                "function|file|delete",
                K::Keyword(&["function", "file", "delete"]),
            ),
            req("NAME", K::Text),
        ],
        usage: "",
        summary: "skip function NAME / skip file FILE when stepping; skip delete N (info skip lists them)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: false,
        requires_halted: false,
        run: stepping::skip,
    },
    Command {
        name: "interrupt",
        aliases: &["stop"],
        args: &[],
        usage: "",
        summary: "stop the running kernel (also Ctrl-C at the prompt)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Execution,
        needs_target: true,
        requires_halted: false,
        run: run::interrupt,
    },
    Command {
        name: "regs",
        aliases: &["r", "registers"],
        args: &[],
        usage: "[-v]",
        summary: "registers, eflags decoded; -v adds segments, fs/gs base and SSE",
        details: "",
        flags: &["-v"],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: true,
        run: state::regs,
    },
    Command {
        name: "x",
        aliases: &[],
        args: &[req("ADDR|SYMBOL", K::Symbol)],
        usage: "[/NFU] ADDR|SYMBOL",
        summary: "examine memory as in gdb: N units, F format (x d u o t c a s i), U size (b h w g)",
        details: "Examples: x/8gx &ticks   x/s some_string   x/4i sys_open",
        flags: &[],
        modifier: true,
        group: Group::State,
        needs_target: true,
        requires_halted: false,
        run: memory::examine,
    },
    Command {
        name: "write",
        aliases: &[],
        args: &[req("ADDR|SYMBOL", K::Symbol), req("VALUE", K::Number)],
        usage: "[/b|/h|/w|/g] ADDR|SYMBOL VALUE",
        summary: "write a value to memory (default 8 bytes)",
        details: "",
        flags: &[],
        modifier: true,
        group: Group::State,
        needs_target: true,
        requires_halted: false,
        run: memory::write_mem,
    },
    Command {
        name: "disas",
        aliases: &["disassemble", "u"],
        args: &[opt("LOC", K::Location), opt("N", K::Number)],
        usage: "[-s] [--att] [LOC] [N]",
        summary: "disassemble N instructions (Intel syntax; --att for AT&T; default: the function, or 16) with symbols, probes and breakpoints marked; -s interleaves source lines",
        details: "",
        flags: &["-s", "--att", "--gas", "--intel", "-i"],
        modifier: false,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: code::disas,
    },
    Command {
        name: "bt",
        aliases: &["backtrace", "where"],
        args: &[opt("N", K::Number)],
        usage: "",
        summary: "stack trace of the stopped CPU (CFI, then frame pointers); inline frames named",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: true,
        run: stack::backtrace,
    },
    Command {
        name: "info",
        aliases: &["i"],
        args: &[
            req("sym|line|args|locals|breakpoints", K::Keyword(INFO_TOPICS)),
            opt("LOC", K::Location),
        ],
        usage: "",
        summary: "info sym ADDR, info line LOC, info args / info locals (values in the selected frame), info breakpoints",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: info::info,
    },
    Command {
        name: "ptype",
        aliases: &[],
        args: &[req("FUNC[:PARAM]|TYPE", K::TypeName)],
        usage: "",
        summary: "a function's prototype, a parameter's type, or a type's layout (fields, offsets, sizes)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: info::ptype,
    },
    Command {
        name: "print",
        aliases: &["p", "inspect"],
        args: &[many("EXPR", K::Expr, false)],
        usage: "[/FMT] EXPR",
        summary: "evaluate an expression (C operators over DWARF types; locals, globals, $registers, $N history) and print it as gdb does",
        details: "FMT is one of x d u o t c a s z. Operands: parameters and locals of the selected frame, globals (C names or Rust paths like kernel::workloads::NEXT_PID), $rdi $rsp $pc $eflags, $1 $ $$ $$2 (history), $name (set $name = ...), literals. Operators: * & -> . [] casts ((struct Request *)p, (u32)x, x as u32, p as *const u8), + - * / % << >> & | ^ ~ ! && || ?: == != < <= > >= (integers and floats: 1.5, 1e-3, 2.5f), sizeof, pointer arithmetic, string literals (\"a b\"). Helpers: container_of(p, type, member), $str(p, max), $per_cpu(VAR [, CPU]) (a per-CPU array's element: this CPU's or CPU's), $cpu. Examples: p *req   p/x req->inner   p $rsp+8   p sizeof(struct Request)",
        flags: &[],
        modifier: true,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: inspect::print,
    },
    Command {
        name: "whatis",
        aliases: &[],
        args: &[many("EXPR", K::Expr, false)],
        usage: "",
        summary: "the type of an expression (not evaluated: nothing is read)",
        details: "Example: whatis req->inner   whatis $rsp",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: inspect::whatis,
    },
    Command {
        name: "set",
        aliases: &[],
        args: &[many("var LVALUE = EXPR", K::Expr, false)],
        usage: "var LVALUE = EXPR | $NAME = EXPR | language c|rust|auto | substitute-path [FROM [TO]]",
        summary: "write a variable, member, element, *pointer or register through its type's size; or set a convenience variable",
        details: "Examples: set var req->id = 7   set var $rax = 0   set $p = &STATS. `set language c|rust|auto` picks how values print (gdb's C or Rust syntax; auto = the selected frame's language). `set substitute-path FROM TO` shows (and opens) source files under FROM as under TO (gdb's rule: whole leading path components); `set substitute-path FROM` removes the rule; `set substitute-path` lists the rules. On a Linux vmlinux the build directory before init/main.c is stripped automatically (paths read fs/open.c) unless it exists on this host.",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: inspect::set,
    },
    Command {
        name: "display",
        aliases: &[],
        args: &[many("EXPR", K::Expr, true)],
        usage: "[/FMT] [EXPR]",
        summary: "show EXPR now and at every stop (no argument: show all displays)",
        details: "",
        flags: &[],
        modifier: true,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: inspect::display,
    },
    Command {
        name: "undisplay",
        aliases: &[],
        args: &[many("N", K::Number, true)],
        usage: "",
        summary: "delete displays N... (all without arguments)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: inspect::undisplay,
    },
    Command {
        name: "list",
        aliases: &["l"],
        args: &[opt("LOC", K::Location)],
        usage: "",
        summary: "source lines around LOC (default: the stop, then the next ten)",
        details: "LOC is a function, FILE:LINE or an address.",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: false,
        requires_halted: false,
        run: inspect::list,
    },
    Command {
        name: "why",
        aliases: &[],
        args: &[],
        usage: "",
        summary: "why the kernel is stopped or died: cause, task, signal, panic message or trap, error code, cr2",
        details: "After a death: the panic message and file:line:col, or the trap (#UD, #GP with its error code, #PF with cr2, #DE, double fault, stack overflow), the task that died, and whether it can resume.",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: false,
        run: postmortem::why,
    },
    Command {
        name: "dump",
        aliases: &[],
        args: &[
            req("core", ArgKind::Keyword(&["core"])),
            req("FILE", ArgKind::Path),
        ],
        usage: "",
        summary: "write an ELF core of the stopped kernel (RAM, every task's registers, why it stopped) for gdb and kdbg --core",
        details: "`dump core FILE`: zero pages are skipped on the wire, code and read-only data are left to the kernel ELF. Ctrl-C stops the dump and still writes a valid core that lists the missing ranges. Open it with `kdbg --core FILE --symbols KERNEL` or `gdb KERNEL FILE`.",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: false,
        run: crate::coredump::dump::dump,
    },
    Command {
        name: "dmesg",
        aliases: &[],
        args: &[opt("N", ArgKind::Number)],
        usage: "",
        summary: "the kernel's console (its last N lines) from its console ring: live, at a stop, after a death, from a core",
        details: "The kernel keeps its console output in a 256 KiB ring (the oldest overwritten); dmesg reads it by symbol. A running kernel is stopped for the read and resumed.",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: false,
        run: postmortem::dmesg,
    },
    Command {
        name: "lx",
        aliases: &[],
        args: &[req(
            "tasks|ps|dmesg|lsmod|current|kaslr",
            K::Keyword(LX_TOPICS),
        )],
        usage: "",
        summary: "Linux awareness on a vmlinux: lx tasks (ps from init_task), lx dmesg (printk ring buffer), lx lsmod, lx current (per-CPU current_task; sets $lx_current)",
        details: "Every offset comes from the vmlinux's DWARF (no Python, no hard-coded layout).\n\
                  lx tasks (or lx ps): pid, tgid, cpu, state letter (R S D T t X Z P I), task address,\n\
                  comm ([comm] for kernel threads), walked from init_task.tasks.\n\
                  lx dmesg: the records of the printk ring buffer (prb), oldest first.\n\
                  lx lsmod: the modules list (name, core size).\n\
                  lx current: each CPU's current_task through __per_cpu_offset; * marks the CPU\n\
                  whose per-CPU base is the live gs base; $lx_current is set to its task\n\
                  (p $lx_current->comm).\n\
                  lx kaslr: the KASLR slide found at connect (linux_banner's runtime address\n\
                  minus the vmlinux's); every symbol is relocated by it (break, print, bt, list, x/i). With kdbg --json each answer is one object (type linux, what tasks|dmesg|lsmod|current).",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: true,
        run: linux::lx,
    },
    Command {
        name: "threads",
        aliases: &["tasks"],
        args: &[],
        usage: "",
        summary: "list kernel tasks",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: false,
        run: info::threads,
    },
    Command {
        name: "thread",
        aliases: &[],
        args: &[req("N", K::Thread)],
        usage: "N | thread apply all|N[,M...] COMMAND",
        summary: "select task N (ids as in `threads` and events) for regs, bt and info args; `thread apply` runs a command on each",
        details: "`thread apply all bt` shows every task's stack; `thread apply 2,4 regs` two tasks' registers. The selection is restored afterwards.",
        flags: &[],
        modifier: false,
        group: Group::State,
        needs_target: true,
        requires_halted: true,
        run: info::thread,
    },
    Command {
        name: "monitor",
        aliases: &["mon"],
        args: &[many("TEXT", K::Text, false)],
        usage: "",
        summary: "send a raw monitor command to the stub and print its reply",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Session,
        needs_target: true,
        requires_halted: false,
        run: sessioncmds::monitor,
    },
    Command {
        name: "reconnect",
        aliases: &[],
        args: &[],
        usage: "",
        summary: "connect to the stub again (after a lost connection)",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Session,
        needs_target: false,
        requires_halted: false,
        run: sessioncmds::reconnect,
    },
    Command {
        name: "sleep",
        aliases: &[],
        args: &[req("S", K::Number)],
        usage: "",
        summary: "wait S seconds (fractions allowed) while events arrive",
        details: "",
        flags: &[],
        modifier: false,
        group: Group::Session,
        needs_target: false,
        requires_halted: false,
        run: eventcmds::sleep,
    },
    Command {
        name: "help",
        aliases: &["h", "?"],
        args: &[opt("CMD", K::Command)],
        usage: "",
        summary: "list commands, or explain one",
        details: "",
        flags: &["--markdown"],
        modifier: false,
        group: Group::Session,
        needs_target: false,
        requires_halted: false,
        run: sessioncmds::help_cmd,
    },
    Command {
        name: "quit",
        aliases: &["q", "exit"],
        args: &[],
        usage: "[--remove-probes]",
        summary: "leave; the kernel keeps running (probes stay unless --remove-probes)",
        details: "",
        flags: &["--remove-probes", "-r", "--keep-probes"],
        modifier: false,
        group: Group::Session,
        needs_target: false,
        requires_halted: false,
        run: sessioncmds::quit,
    },
];

/// Find a command by name or alias.
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

/// Levenshtein distance (small strings only).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest command name to a typo, if any is close enough.
pub fn suggest(name: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for c in COMMANDS {
        for n in std::iter::once(&c.name).chain(c.aliases.iter()) {
            let mut d = edit_distance(name, n);
            if n.starts_with(name) && !name.is_empty() {
                d = d.min(1);
            }
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, c.name));
            }
        }
    }
    // Very short words: only a command that starts with them (`p` is not
    // `kprobe` because `kp` is one edit away).
    if name.len() <= 2 {
        return COMMANDS
            .iter()
            .find(|c| c.name.starts_with(name))
            .map(|c| c.name);
    }
    let limit = (name.len() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, n)| n)
}

/// The command reference in Markdown (README / docs/COMMANDS.md).
pub fn markdown() -> String {
    let mut s = String::from(
        "<!-- generated by `kdbg help --markdown` from shell/src/cmd/table.rs; do not edit -->\n",
    );
    for g in Group::ALL {
        s.push_str(&format!("\n### {}\n\n", g.title()));
        s.push_str("| Command | Aliases | Description |\n|---|---|---|\n");
        for c in COMMANDS.iter().filter(|c| c.group == g) {
            let aliases = c.aliases.join(", ");
            let mut summary = c.summary.to_string();
            if c.requires_halted {
                summary.push_str(" *(kernel stopped)*");
            }
            s.push_str(&format!(
                "| `{}` | {} | {} |\n",
                c.usage_line().replace('|', "\\|"),
                aliases,
                summary.replace('|', "\\|")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            for n in std::iter::once(&c.name).chain(c.aliases.iter()) {
                assert!(seen.insert(*n), "duplicate command name {n}");
            }
        }
    }

    #[test]
    fn every_command_has_help() {
        for c in COMMANDS {
            assert!(!c.summary.is_empty(), "{}", c.name);
            assert!(c.usage_line().starts_with(c.name));
        }
    }

    #[test]
    fn finds_by_alias() {
        assert_eq!(find("c").unwrap().name, "continue");
        assert_eq!(find("kretprobe").unwrap().name, "kretprobe");
        assert!(find("nope").is_none());
    }

    #[test]
    fn suggests_the_closest() {
        assert_eq!(suggest("kprob"), Some("kprobe"));
        assert_eq!(suggest("kretprobee"), Some("kretprobe"));
        assert_eq!(suggest("contnue"), Some("continue"));
        assert_eq!(suggest("regz"), Some("regs"));
        assert_eq!(suggest("xyzzyplugh"), None);
        assert_ne!(suggest("p"), Some("kprobe"));
        assert_eq!(suggest("pr"), Some("probes"));
    }

    /// `help events`/`help hist` and the README state the window the
    /// store really keeps.
    #[test]
    fn the_event_window_is_stated_as_kept() {
        assert_eq!(crate::events::KEEP, 10_000);
        // `events` shows from the kept window; `hist` is over every event.
        assert!(find("events").unwrap().details.contains("10,000"));
        assert!(find("hist").unwrap().details.contains("every event"));
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .unwrap_or_default();
        assert!(readme.contains("last 10,000 events"), "README.md");
    }

    #[test]
    fn usage_lines() {
        assert_eq!(
            find("jprobe").unwrap().usage_line(),
            "jprobe [--dry-run] FUNC [ARGS...|AGG] [printf \"FMT\" ARGS...] [if EXPR]"
        );
        assert_eq!(
            find("kprobe").unwrap().usage_line(),
            "kprobe LOC [AGG | printf \"FMT\" ARGS...] [if EXPR]"
        );
        assert_eq!(find("enable").unwrap().usage_line(), "enable ID...");
        assert_eq!(find("x").unwrap().usage_line(), "x [/NFU] ADDR|SYMBOL");
    }

    #[test]
    fn commands_md_matches_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/COMMANDS.md");
        let want = markdown();
        match std::fs::read_to_string(path) {
            Ok(have) => assert!(
                have.contains(want.trim()),
                "docs/COMMANDS.md is stale: regenerate with `kdbg help --markdown > docs/COMMANDS.md`"
            ),
            Err(e) => panic!("{path}: {e}; generate it with `kdbg help --markdown`"),
        }
        // The README embeds the same reference (between the generated
        // marker and the next `## ` heading) once the lead pastes it in.
        let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        if let Ok(text) = std::fs::read_to_string(readme)
            && let Some(start) = text.find("<!-- generated by `kdbg help --markdown`")
        {
            let section = &text[start..];
            let end = section[1..].find("\n## ").map_or(section.len(), |e| e + 1);
            assert_eq!(
                section[..end].trim(),
                want.trim(),
                "README.md's command reference is stale: paste docs/COMMANDS.md into it"
            );
        }
    }
}
