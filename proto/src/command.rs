//! The monitor command grammar: what `monitor ...` (gdb's `qRcmd`) carries.
//!
//! ```text
//! kprobe LOC [if=HEX] [AGG]
//! jprobe FUNC [CAPTURE] [if=HEX] [AGG]
//! kretprobe FUNC [maxactive=N] [CAPTURE] [if=HEX] [AGG]
//! probes
//! maps
//! map print|clear|zero ID
//! probe enable|disable|delete ID...
//! events
//! tasks
//! refused
//! retinst [TASK]
//! stream on|off|text|record
//! lookup LOC
//! cond ADDR [if=HEX] [ignore=N]
//! conds
//! help [COMMAND]
//!
//! LOC   = ADDRESS | SYMBOL | SYMBOL+OFFSET      (numbers: decimal or 0x-hex)
//! CAPTURE = see crate::fetch (stack=N fetch=OP,...)
//! AGG   = see crate::agg (agg=FN [val=HEX] [key=HEX|key=strN:HEX]... [budget=BYTES])
//! ```
//!
//! [`parse`] turns the text into a [`Command`] borrowing symbol names from the
//! input; `Display` writes the canonical text back (the shell builds commands
//! with it), and parse(display(c)) == c.

use crate::agg::{AggError, AggFn, AggSpec};
use crate::bytecode::{self, HexProgramError, Program};
use crate::fetch::{CaptureSpec, FetchError};
use core::fmt;

/// Most probe ids one `probe enable|disable|delete` takes.
pub const MAX_IDS: usize = 16;

/// A code location: an absolute address or a symbol plus offset (also
/// where the probe core puts a probe: `probes::At` is this type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc<'a> {
    /// An absolute address.
    Addr(u64),
    /// A function name and a byte offset into it.
    Symbol(&'a str, u64),
}

impl<'a> Loc<'a> {
    /// Parses `0xADDR`, a decimal address, `sym` or `sym+off`.
    pub fn parse(text: &'a str) -> Result<Loc<'a>, ParseError> {
        let first = *text.as_bytes().first().ok_or(ParseError::BadLocation)?;
        if first.is_ascii_digit() {
            return parse_u64(text)
                .map(Loc::Addr)
                .ok_or(ParseError::BadLocation);
        }
        let (name, offset) = match text.split_once('+') {
            Some((n, o)) => (n, parse_u64(o).ok_or(ParseError::BadLocation)?),
            None => (text, 0),
        };
        if name.is_empty() || !name.bytes().all(is_symbol_byte) {
            return Err(ParseError::BadLocation);
        }
        Ok(Loc::Symbol(name, offset))
    }
}

fn is_symbol_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b':')
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Addr(a) => write!(f, "{a:#x}"),
            Loc::Symbol(name, 0) => f.write_str(name),
            Loc::Symbol(name, offset) => write!(f, "{name}+{offset:#x}"),
        }
    }
}

/// `probe enable|disable|delete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    Enable,
    Disable,
    Delete,
}

impl ProbeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeAction::Enable => "enable",
            ProbeAction::Disable => "disable",
            ProbeAction::Delete => "delete",
        }
    }
}

/// Up to [`MAX_IDS`] probe ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdList {
    ids: [u32; MAX_IDS],
    len: u8,
}

impl IdList {
    pub const fn new() -> Self {
        IdList {
            ids: [0; MAX_IDS],
            len: 0,
        }
    }

    /// Adds an id; `Err` when the list is full.
    pub fn push(&mut self, id: u32) -> Result<(), ParseError> {
        let slot = self
            .ids
            .get_mut(usize::from(self.len))
            .ok_or(ParseError::TooManyIds)?;
        *slot = id;
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[u32] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl Default for IdList {
    fn default() -> Self {
        Self::new()
    }
}

/// What the event stream sends while the kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// No events (they stay in the ring; drops are counted).
    Off,
    /// Readable `event ...` lines (the default; what a gdb user sees).
    Text,
    /// `kdbg-record:HEX` lines, one checksummed binary record each (the shell).
    Record,
}

impl StreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Off => "off",
            StreamMode::Text => "text",
            StreamMode::Record => "record",
        }
    }

    /// The mode `as_str` names (`on`, accepted by the command, is not a
    /// name the stub answers with).
    pub fn from_name(s: &str) -> Option<StreamMode> {
        [StreamMode::Off, StreamMode::Text, StreamMode::Record]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// `shm [direct|uart]`: the shared-memory channel (issue 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmAction {
    /// Where things are: CR3, the RAM range, the rings, the consumer.
    Info,
    /// The caller reads the event rings from guest memory itself: the
    /// stub stops draining them over the UART.
    Direct,
    /// The stub drains the rings again (also when the direct consumer
    /// stops beating, or the debugger detaches).
    Uart,
}

impl ShmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ShmAction::Info => "",
            ShmAction::Direct => "direct",
            ShmAction::Uart => "uart",
        }
    }
}

/// One monitor command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// The shared-memory channel: its layout, or who consumes events.
    Shm(ShmAction),
    Kprobe {
        loc: Loc<'a>,
        /// `if=HEX`: a predicate (verified bytecode); a hit records an event
        /// only when it is true.
        pred: Option<Program>,
        /// `agg=...`: the probe updates its map in the kernel instead of
        /// recording events.
        agg: Option<AggSpec>,
    },
    Jprobe {
        func: Loc<'a>,
        capture: CaptureSpec,
        pred: Option<Program>,
        agg: Option<AggSpec>,
    },
    Kretprobe {
        func: Loc<'a>,
        /// `None`: the default max(10, 2 x CPUs).
        maxactive: Option<u32>,
        capture: CaptureSpec,
        /// Evaluated at the return: `ret`/`$duration` are context values,
        /// argument registers read the arguments stashed at entry.
        pred: Option<Program>,
        agg: Option<AggSpec>,
    },
    Probes,
    /// One `map` row per aggregating probe.
    Maps,
    /// Print (the `map` row, then one `entry` row per key), clear (remove
    /// every key) or zero (keep the keys, zero the values) one map.
    Map {
        action: MapAction,
        id: u32,
    },
    Probe {
        action: ProbeAction,
        ids: IdList,
    },
    Events,
    Tasks,
    /// Breakpoints and watchpoints refused on the debugger's own code and data.
    Refused,
    /// Outstanding kretprobe instances (of one task, or all).
    RetInst {
        task: Option<u32>,
    },
    Stream(StreamMode),
    Lookup(Loc<'a>),
    /// Why the kernel is stopped (or died): the stop's cause, task and
    /// signal; for a death the panic message or trap, error code and cr2.
    Why,
    /// Which 4 KiB pages of `[addr, addr+len)` hold a non-zero byte (for
    /// `dump core`: zero pages are not read over the wire).
    Pages {
        addr: u64,
        len: u64,
    },
    /// The in-kernel condition and ignore count of gdb's software
    /// breakpoint at `addr` (`prog: None` and `ignore: 0`: unconditional).
    Cond {
        addr: u64,
        prog: Option<Program>,
        ignore: u64,
    },
    /// One `cond` row per conditional breakpoint.
    Conds,
    Help {
        topic: Option<&'a str>,
    },
}

/// Why a monitor command was refused. `Display` says what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    UnknownCommand,
    /// A required argument is missing; names it.
    Missing(&'static str),
    /// Extra words after a complete command.
    UnexpectedArgument,
    BadLocation,
    BadNumber,
    BadProbeAction,
    BadStreamMode,
    TooManyIds,
    Capture(FetchError),
    /// A condition program that is not hex or that the verifier refused.
    Program(HexProgramError),
    /// An aggregation that cannot be made (see [`crate::agg`]).
    Agg(AggError),
    BadMapAction,
}

impl From<AggError> for ParseError {
    fn from(e: AggError) -> Self {
        ParseError::Agg(e)
    }
}

impl From<FetchError> for ParseError {
    fn from(e: FetchError) -> Self {
        ParseError::Capture(e)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty command: try `monitor help`"),
            ParseError::UnknownCommand => f.write_str("unknown command: `monitor help` lists them"),
            ParseError::Missing(what) => write!(f, "missing {what}: see `monitor help`"),
            ParseError::UnexpectedArgument => {
                f.write_str("unexpected extra argument: see `monitor help COMMAND`")
            }
            ParseError::BadLocation => {
                f.write_str("bad location: use an address (0x...), SYMBOL or SYMBOL+OFFSET")
            }
            ParseError::BadNumber => f.write_str("bad number: use decimal or 0x-hex"),
            ParseError::BadProbeAction => {
                f.write_str("bad action: use probe enable|disable|delete ID...")
            }
            ParseError::BadStreamMode => f.write_str("bad mode: use stream on|off|text|record"),
            ParseError::TooManyIds => f.write_str("too many ids: at most 16 per command"),
            ParseError::Capture(e) => write!(f, "{e}"),
            ParseError::Program(e) => write!(f, "condition {e}"),
            ParseError::Agg(e) => write!(f, "{e}"),
            ParseError::BadMapAction => f.write_str("bad action: use map print|clear|zero ID"),
        }
    }
}

impl ParseError {
    /// The stable error code of this refusal (`error code=... msg=...`).
    pub fn code(&self) -> crate::reply::ErrorCode {
        use crate::reply::ErrorCode;
        match self {
            ParseError::UnknownCommand | ParseError::Empty => ErrorCode::UnknownCommand,
            ParseError::Capture(_) => ErrorCode::BadCapture,
            _ => ErrorCode::BadArguments,
        }
    }
}

/// Parses a decimal or `0x`-hex unsigned number.
pub fn parse_u64(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || h.starts_with('+') {
            return None;
        }
        u64::from_str_radix(h, 16).ok()
    } else {
        if s.starts_with('+') {
            return None;
        }
        s.parse().ok()
    }
}

fn parse_u32(s: &str) -> Result<u32, ParseError> {
    parse_u64(s)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(ParseError::BadNumber)
}

/// The words after a probe's location: `if=HEX`, aggregation tokens and,
/// for probes that capture, capture tokens.
struct ProbeOptions {
    capture: CaptureSpec,
    pred: Option<Program>,
    agg: Option<AggSpec>,
}

impl ProbeOptions {
    /// `extra` sees each word first and says whether it took it (the probe
    /// type's own options, `maxactive=N`).
    fn parse<'a>(
        words: impl Iterator<Item = &'a str>,
        captures: bool,
        mut extra: impl FnMut(&'a str) -> Result<bool, ParseError>,
    ) -> Result<ProbeOptions, ParseError> {
        let mut capture = CaptureSpec::default();
        let mut pred = None;
        let (mut agg, mut pending) = (None, AggSpec::new(AggFn::Count));
        for w in words {
            if extra(w)? {
            } else if let Some(h) = w.strip_prefix("if=") {
                pred = Some(bytecode::from_hex(h).map_err(ParseError::Program)?);
            } else if AggSpec::apply_token(&mut agg, &mut pending, w)? {
            } else if !captures {
                return Err(ParseError::UnexpectedArgument);
            } else if !capture.apply_token(w)? {
                return Err(ParseError::Capture(FetchError::UnknownToken));
            }
        }
        Ok(ProbeOptions {
            capture,
            pred,
            agg: AggSpec::finish(agg, &pending)?,
        })
    }
}

/// Parses one monitor command line.
pub fn parse(text: &str) -> Result<Command<'_>, ParseError> {
    let mut words = text.split_ascii_whitespace();
    let name = words.next().ok_or(ParseError::Empty)?;
    let cmd = match name {
        "kprobe" => {
            let loc = Loc::parse(words.next().ok_or(ParseError::Missing("LOC"))?)?;
            let o = ProbeOptions::parse(words.by_ref(), false, |_| Ok(false))?;
            Command::Kprobe {
                loc,
                pred: o.pred,
                agg: o.agg,
            }
        }
        "jprobe" => {
            let func = Loc::parse(words.next().ok_or(ParseError::Missing("FUNC"))?)?;
            let o = ProbeOptions::parse(words.by_ref(), true, |_| Ok(false))?;
            Command::Jprobe {
                func,
                capture: o.capture,
                pred: o.pred,
                agg: o.agg,
            }
        }
        "kretprobe" => {
            let func = Loc::parse(words.next().ok_or(ParseError::Missing("FUNC"))?)?;
            let mut maxactive = None;
            let o = ProbeOptions::parse(words.by_ref(), true, |w| {
                let Some(n) = w.strip_prefix("maxactive=") else {
                    return Ok(false);
                };
                maxactive = Some(parse_u32(n)?);
                Ok(true)
            })?;
            Command::Kretprobe {
                func,
                maxactive,
                capture: o.capture,
                pred: o.pred,
                agg: o.agg,
            }
        }
        "probes" => Command::Probes,
        "maps" => Command::Maps,
        "map" => {
            let action = match words
                .next()
                .ok_or(ParseError::Missing("print|clear|zero"))?
            {
                "print" => MapAction::Print,
                "clear" => MapAction::Clear,
                "zero" => MapAction::Zero,
                _ => return Err(ParseError::BadMapAction),
            };
            let id = parse_u32(words.next().ok_or(ParseError::Missing("ID"))?)?;
            Command::Map { action, id }
        }
        "probe" => {
            let action = match words
                .next()
                .ok_or(ParseError::Missing("enable|disable|delete"))?
            {
                "enable" => ProbeAction::Enable,
                "disable" => ProbeAction::Disable,
                "delete" => ProbeAction::Delete,
                _ => return Err(ParseError::BadProbeAction),
            };
            let mut ids = IdList::new();
            for w in words.by_ref() {
                ids.push(parse_u32(w)?)?;
            }
            if ids.as_slice().is_empty() {
                return Err(ParseError::Missing("ID"));
            }
            Command::Probe { action, ids }
        }
        "events" => Command::Events,
        "tasks" => Command::Tasks,
        "refused" => Command::Refused,
        "retinst" => Command::RetInst {
            task: words.next().map(parse_u32).transpose()?,
        },
        "stream" => Command::Stream(
            match words
                .next()
                .ok_or(ParseError::Missing("on|off|text|record"))?
            {
                "on" => StreamMode::Text,
                m => StreamMode::from_name(m).ok_or(ParseError::BadStreamMode)?,
            },
        ),
        "lookup" => Command::Lookup(Loc::parse(words.next().ok_or(ParseError::Missing("LOC"))?)?),
        "why" => Command::Why,
        "pages" => {
            let addr = words.next().ok_or(ParseError::Missing("ADDR"))?;
            let len = words.next().ok_or(ParseError::Missing("LEN"))?;
            Command::Pages {
                addr: parse_u64(addr).ok_or(ParseError::BadNumber)?,
                len: parse_u64(len).ok_or(ParseError::BadNumber)?,
            }
        }
        "cond" => {
            let addr = parse_u64(words.next().ok_or(ParseError::Missing("ADDR"))?)
                .ok_or(ParseError::BadNumber)?;
            let mut prog = None;
            let mut ignore = 0;
            for w in words.by_ref() {
                if let Some(h) = w.strip_prefix("if=") {
                    prog = Some(bytecode::from_hex(h).map_err(ParseError::Program)?);
                } else if let Some(n) = w.strip_prefix("ignore=") {
                    ignore = parse_u64(n).ok_or(ParseError::BadNumber)?;
                } else {
                    return Err(ParseError::UnexpectedArgument);
                }
            }
            Command::Cond { addr, prog, ignore }
        }
        "conds" => Command::Conds,
        "shm" => Command::Shm(match words.next() {
            None => ShmAction::Info,
            Some("direct") => ShmAction::Direct,
            Some("uart") => ShmAction::Uart,
            Some(_) => return Err(ParseError::UnexpectedArgument),
        }),
        "help" => Command::Help {
            topic: words.next(),
        },
        _ => return Err(ParseError::UnknownCommand),
    };
    if words.next().is_some() {
        return Err(ParseError::UnexpectedArgument);
    }
    Ok(cmd)
}

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Kprobe { loc, pred, agg } => {
                write!(f, "kprobe {loc}")?;
                write_pred(f, pred)?;
                write_agg(f, agg)
            }
            Command::Jprobe {
                func,
                capture,
                pred,
                agg,
            } => {
                write!(f, "jprobe {func}")?;
                if !capture.is_empty() {
                    write!(f, " {capture}")?;
                }
                write_pred(f, pred)?;
                write_agg(f, agg)
            }
            Command::Kretprobe {
                func,
                maxactive,
                capture,
                pred,
                agg,
            } => {
                write!(f, "kretprobe {func}")?;
                if let Some(n) = maxactive {
                    write!(f, " maxactive={n}")?;
                }
                if !capture.is_empty() {
                    write!(f, " {capture}")?;
                }
                write_pred(f, pred)?;
                write_agg(f, agg)
            }
            Command::Probes => f.write_str("probes"),
            Command::Maps => f.write_str("maps"),
            Command::Map { action, id } => write!(f, "map {} {id}", action.as_str()),
            Command::Probe { action, ids } => {
                write!(f, "probe {}", action.as_str())?;
                for id in ids.as_slice() {
                    write!(f, " {id}")?;
                }
                Ok(())
            }
            Command::Events => f.write_str("events"),
            Command::Tasks => f.write_str("tasks"),
            Command::Refused => f.write_str("refused"),
            Command::RetInst { task: None } => f.write_str("retinst"),
            Command::RetInst { task: Some(t) } => write!(f, "retinst {t}"),
            Command::Stream(m) => write!(f, "stream {}", m.as_str()),
            Command::Why => f.write_str("why"),
            Command::Pages { addr, len } => write!(f, "pages {addr:#x} {len:#x}"),
            Command::Lookup(loc) => write!(f, "lookup {loc}"),
            Command::Cond { addr, prog, ignore } => {
                write!(f, "cond {addr:#x}")?;
                if let Some(p) = prog {
                    write!(f, " if={}", bytecode::Hex(p))?;
                }
                if *ignore != 0 {
                    write!(f, " ignore={ignore}")?;
                }
                Ok(())
            }
            Command::Conds => f.write_str("conds"),
            Command::Shm(ShmAction::Info) => f.write_str("shm"),
            Command::Shm(a) => write!(f, "shm {}", a.as_str()),
            Command::Help { topic: None } => f.write_str("help"),
            Command::Help { topic: Some(t) } => write!(f, "help {t}"),
        }
    }
}

fn write_pred(f: &mut fmt::Formatter<'_>, pred: &Option<Program>) -> fmt::Result {
    match pred {
        Some(p) => write!(f, " if={}", bytecode::Hex(p)),
        None => Ok(()),
    }
}

fn write_agg(f: &mut fmt::Formatter<'_>, agg: &Option<AggSpec>) -> fmt::Result {
    match agg {
        Some(a) => write!(f, " {a}"),
        None => Ok(()),
    }
}

/// `map print|clear|zero`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapAction {
    Print,
    Clear,
    Zero,
}

impl MapAction {
    pub fn as_str(self) -> &'static str {
        match self {
            MapAction::Print => "print",
            MapAction::Clear => "clear",
            MapAction::Zero => "zero",
        }
    }
}

/// One row of the command reference: name, usage, one-line summary.
#[derive(Clone, Copy, Debug)]
pub struct CommandHelp {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
}

/// The command reference (what `monitor help` prints, in this order).
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "kprobe",
        usage: "kprobe LOC [if=HEX] [agg=FN [val=HEX] [key=HEX|key=strN:HEX]... [budget=BYTES]]",
        summary: "probe any instruction (LOC = 0xADDR | SYMBOL | SYMBOL+OFF); answers the probe id",
    },
    CommandHelp {
        name: "jprobe",
        usage: "jprobe FUNC [stack=N] [fetch=OP,...] [if=HEX] [agg=FN ...]",
        summary: "entry probe recording arguments rdi..r9 plus an optional capture",
    },
    CommandHelp {
        name: "kretprobe",
        usage: "kretprobe FUNC [maxactive=N] [stack=N] [fetch=OP,...] [if=HEX] [agg=FN ...]",
        summary: "return probe recording the return value and entry-to-return time",
    },
    CommandHelp {
        name: "probes",
        usage: "probes",
        summary: "one row per probe: id type addr sym enabled hits nmissed path",
    },
    CommandHelp {
        name: "probe",
        usage: "probe enable|disable|delete ID...",
        summary: "change or remove probes",
    },
    CommandHelp {
        name: "maps",
        usage: "maps",
        summary: "one row per aggregating probe's map: fn keys entries capacity map_full faults bytes",
    },
    CommandHelp {
        name: "map",
        usage: "map print|clear|zero ID",
        summary: "a map's entries (one entry row per key), or remove its keys, or zero its values",
    },
    CommandHelp {
        name: "events",
        usage: "events",
        summary: "event ring: size, produced, delivered, dropped (and drops per probe)",
    },
    CommandHelp {
        name: "tasks",
        usage: "tasks",
        summary: "kernel tasks: id, name, state",
    },
    CommandHelp {
        name: "refused",
        usage: "refused",
        summary: "the last breakpoints/watchpoints refused on the debugger's own code and data, and why",
    },
    CommandHelp {
        name: "retinst",
        usage: "retinst [TASK]",
        summary: "outstanding kretprobe instances (real return addresses for bt)",
    },
    CommandHelp {
        name: "stream",
        usage: "stream on|off|text|record",
        summary: "event stream while the kernel runs: readable lines, binary records, or off",
    },
    CommandHelp {
        name: "lookup",
        usage: "lookup LOC",
        summary: "resolve a location through the kernel's symbol table",
    },
    CommandHelp {
        name: "why",
        usage: "why",
        summary: "why the kernel is stopped: cause, task, signal; for a death the panic message or trap, error code, cr2",
    },
    CommandHelp {
        name: "pages",
        usage: "pages ADDR LEN",
        summary: "bitmap (hex, page 0 in bit 0 of the first byte) of the non-zero 4 KiB pages in a range",
    },
    CommandHelp {
        name: "cond",
        usage: "cond ADDR [if=HEX] [ignore=N]",
        summary: "condition (verified bytecode, run in the kernel) and ignore count of gdb's breakpoint at ADDR",
    },
    CommandHelp {
        name: "conds",
        usage: "conds",
        summary: "conditional breakpoints: addr hits false faults ignored ignore prog",
    },
    CommandHelp {
        name: "shm",
        usage: "shm [direct|uart]",
        summary: "shared-memory channel: cr3, RAM range, event ring layout; direct: the caller consumes the rings from guest RAM, uart: the stub streams them again",
    },
    CommandHelp {
        name: "help",
        usage: "help [COMMAND]",
        summary: "this list; fetch ops: KIND@BASE[+OFF], KIND=u8|u16|u32|u64|strN, BASE=argI|%reg|$J",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_command() {
        assert_eq!(
            parse("kprobe sys_open+0x4").unwrap(),
            Command::Kprobe {
                loc: Loc::Symbol("sys_open", 4),
                pred: None,
                agg: None,
            }
        );
        assert_eq!(
            parse("  kprobe   0xffffffff80001000 ").unwrap(),
            Command::Kprobe {
                loc: Loc::Addr(0xffff_ffff_8000_1000),
                pred: None,
                agg: None,
            }
        );
        match parse("kretprobe fib maxactive=1 stack=8").unwrap() {
            Command::Kretprobe {
                maxactive, capture, ..
            } => {
                assert_eq!(maxactive, Some(1));
                assert_eq!(capture.stack_bytes, 8);
            }
            c => panic!("{c:?}"),
        }
        match parse("probe delete 1 2 0x3").unwrap() {
            Command::Probe { action, ids } => {
                assert_eq!(action, ProbeAction::Delete);
                assert_eq!(ids.as_slice(), &[1, 2, 3]);
            }
            c => panic!("{c:?}"),
        }
        assert_eq!(
            parse("retinst 4").unwrap(),
            Command::RetInst { task: Some(4) }
        );
        assert_eq!(
            parse("stream record").unwrap(),
            Command::Stream(StreamMode::Record)
        );
        assert_eq!(
            parse("help kprobe").unwrap(),
            Command::Help {
                topic: Some("kprobe")
            }
        );
    }

    #[test]
    fn refusals_are_typed() {
        let cases = [
            ("", ParseError::Empty),
            ("frob", ParseError::UnknownCommand),
            ("kprobe", ParseError::Missing("LOC")),
            ("kprobe 0xzz", ParseError::BadLocation),
            ("kprobe a+b", ParseError::BadLocation),
            ("kprobe a b", ParseError::UnexpectedArgument),
            ("probe delete", ParseError::Missing("ID")),
            ("probe frob 1", ParseError::BadProbeAction),
            ("probe delete x", ParseError::BadNumber),
            ("kretprobe f maxactive=-1", ParseError::BadNumber),
            (
                "jprobe f junk",
                ParseError::Capture(FetchError::UnknownToken),
            ),
            ("stream maybe", ParseError::BadStreamMode),
            ("probes 1", ParseError::UnexpectedArgument),
            ("cond", ParseError::Missing("ADDR")),
            ("cond fib", ParseError::BadNumber),
            (
                "cond 0x10 if=0",
                ParseError::Program(HexProgramError::BadHex),
            ),
            (
                "cond 0x10 if=00",
                ParseError::Program(HexProgramError::Verify(
                    crate::bytecode::VerifyError::StackUnderflow { at: 0 },
                )),
            ),
            ("cond 0x10 ignore=x", ParseError::BadNumber),
            ("cond 0x10 frob", ParseError::UnexpectedArgument),
        ];
        for (text, err) in cases {
            assert_eq!(parse(text).unwrap_err(), err, "{text:?}");
        }
        let many = "probe enable 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17";
        assert_eq!(parse(many).unwrap_err(), ParseError::TooManyIds);
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "kprobe sys_open+0x4",
            "kprobe 0x1000",
            "jprobe spawn_task",
            "jprobe sys_open fetch=str64@arg0",
            "kretprobe fib maxactive=3 stack=16 fetch=u64@%rsp+0x8",
            "kretprobe sys_open if=060201002200",
            "kprobe fib+0x4 if=050501052000",
            "jprobe sys_open fetch=str64@arg0 if=050501052000",
            "kretprobe sys_open agg=count key=str64:050500",
            "kprobe fib agg=lhist:0:20:1 val=050500 budget=4096",
            "jprobe spawn_task fetch=u64@arg0 if=050501052000 agg=sum val=050300 key=060000",
            "maps",
            "map print 3",
            "map zero 4",
            "map clear 5",
            "probes",
            "probe disable 3 4",
            "events",
            "tasks",
            "refused",
            "retinst",
            "retinst 2",
            "stream off",
            "lookup spawn_task",
            "help",
            "help probes",
            "why",
            "pages 0x1000 0x200000",
            "cond 0x1000",
            "cond 0x1000 if=050501052000 ignore=3",
            "conds",
            "shm",
            "shm direct",
            "shm uart",
        ] {
            let cmd = parse(text).unwrap();
            assert_eq!(cmd.to_string(), text);
            assert_eq!(parse(&cmd.to_string()).unwrap(), cmd);
        }
    }

    #[test]
    fn help_covers_every_command() {
        for c in COMMANDS {
            let first = c.usage.split(' ').next().unwrap();
            assert_eq!(first, c.name);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let words = [
            "kprobe",
            "jprobe",
            "kretprobe",
            "probe",
            "probes",
            "delete",
            "help",
            "0x",
            "+",
            "maxactive=",
            "stack=",
            "fetch=",
            "u64@",
            "arg",
            "$",
            "%r",
            " ",
            "1",
            "ff",
            "\u{e9}",
            "\0",
            "events",
            "stream",
            "retinst",
            "lookup",
            "tasks",
        ];
        for _ in 0..50_000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = seed % 8;
            for i in 0..n {
                let w = words[((seed >> (i * 5)) % words.len() as u64) as usize];
                s.push_str(w);
            }
            if let Ok(cmd) = parse(&s) {
                let again = cmd.to_string();
                assert_eq!(parse(&again).unwrap(), cmd, "{s:?} -> {again:?}");
            }
        }
    }
}
