//! Replies to monitor commands: one row per line, `KIND key=value ...`.
//!
//! Readable for a gdb user, parseable by the shell. Values never contain
//! spaces, except `msg=`, which is always last and runs to the end of the
//! line. Numbers are decimal, addresses `0x`-hex. Rows:
//!
//! ```text
//! ok [id=N]
//! ok stream=off|text|record
//! error code=CODE msg=TEXT...
//! probe id=N type=kprobe|jprobe|kretprobe addr=0x.. sym=NAME+0xOFF enabled=0|1 hits=N nmissed=N path=emulated|out-of-line|boosted|- maxactive=N [stack=N] [fetch=OP,...]
//! events size=N produced=N delivered=N dropped=N stream=off|text|record tsc_hz=N boot_tsc=N tsc_src=pit|ticks|-
//! drops id=N dropped=N
//! task id=N name=NAME state=STATE current=0|1
//! inst task=N func=0x.. sp=0x.. ret=0x..
//! sym addr=0x.. name=NAME+0xOFF|-
//! probe-memory used=N budget=N
//! why state=running|stopped|dead [cause=C] [kind=K] [signal=N] [task=N] [vector=N] [error_code=0x..] [cr2=0x..] [rip=0x..] [policy=P] [where=FILE:L:C] [resumable=no] [msg=TEXT]
//! cond addr=0x.. hits=N false=N faults=N ignored=N ignore=N len=N
//! ```
//!
//! Unknown keys are ignored by the parsers (rows may grow new keys at the
//! end); a row kind the reader does not know is skipped. `help` replies are
//! free text lines starting with two spaces, which are never rows.

use core::fmt;

use crate::command::parse_u64;

/// Stable codes of `error` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    UnknownCommand,
    BadArguments,
    BadCapture,
    UnknownSymbol,
    /// Not at an instruction boundary.
    NotBoundary,
    Blacklisted,
    OutsideText,
    /// The instruction there cannot be probed (int3, iret, ...).
    Unsupported,
    /// jprobe/kretprobe not at a function's first instruction.
    NotFunctionEntry,
    AlreadyProbed,
    NoSuchProbe,
    NoMemory,
    TooManyProbes,
    /// The probe core is not available in this kernel.
    Unavailable,
    Fault,
    /// The probe core is busy (another CPU is (un)registering, or the
    /// command ran inside a probe handler): retry.
    Busy,
    Other,
}

const CODES: [(ErrorCode, &str); 17] = [
    (ErrorCode::UnknownCommand, "unknown-command"),
    (ErrorCode::BadArguments, "bad-arguments"),
    (ErrorCode::BadCapture, "bad-capture"),
    (ErrorCode::UnknownSymbol, "unknown-symbol"),
    (ErrorCode::NotBoundary, "not-boundary"),
    (ErrorCode::Blacklisted, "blacklisted"),
    (ErrorCode::OutsideText, "outside-text"),
    (ErrorCode::Unsupported, "unsupported"),
    (ErrorCode::NotFunctionEntry, "not-function-entry"),
    (ErrorCode::AlreadyProbed, "already-probed"),
    (ErrorCode::NoSuchProbe, "no-such-probe"),
    (ErrorCode::NoMemory, "no-memory"),
    (ErrorCode::TooManyProbes, "too-many-probes"),
    (ErrorCode::Unavailable, "unavailable"),
    (ErrorCode::Fault, "fault"),
    (ErrorCode::Busy, "busy"),
    (ErrorCode::Other, "other"),
];

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        CODES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("other", |(_, s)| s)
    }

    /// Unknown codes map to [`ErrorCode::Other`].
    pub fn from_name(s: &str) -> ErrorCode {
        CODES
            .iter()
            .find(|(_, n)| *n == s)
            .map_or(ErrorCode::Other, |(c, _)| *c)
    }
}

/// A row split into its kind and `key=value` fields (no allocation).
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    pub kind: &'a str,
    rest: &'a str,
}

impl<'a> Row<'a> {
    /// Splits a line; `None` for blank lines and free text (leading space).
    pub fn parse(line: &'a str) -> Option<Row<'a>> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with(' ') || line.is_empty() {
            return None;
        }
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        Some(Row { kind, rest })
    }

    /// The value of `key`, if present. `msg` runs to the end of the line.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        let mut rest = self.rest;
        while !rest.is_empty() {
            let (field, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((k, v)) = field.split_once('=') {
                if k == "msg" {
                    if k == key {
                        return rest.get(4..);
                    }
                    return None;
                }
                if k == key {
                    return Some(v);
                }
            }
            rest = tail;
        }
        None
    }

    /// `get` parsed as a number (decimal or 0x-hex).
    pub fn num(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_u64)
    }
}

/// Why a row could not be read as the expected type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowError {
    WrongKind,
    /// A required key is missing or malformed; names it.
    Field(&'static str),
}

fn need<'a>(row: &Row<'a>, key: &'static str) -> Result<&'a str, RowError> {
    row.get(key).ok_or(RowError::Field(key))
}

fn need_num(row: &Row<'_>, key: &'static str) -> Result<u64, RowError> {
    row.num(key).ok_or(RowError::Field(key))
}

fn row_of<'a>(line: &'a str, kind: &str) -> Result<Row<'a>, RowError> {
    match Row::parse(line) {
        Some(r) if r.kind == kind => Ok(r),
        _ => Err(RowError::WrongKind),
    }
}

/// `error code=CODE msg=TEXT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorRow<'a> {
    pub code: ErrorCode,
    pub msg: &'a str,
}

impl<'a> ErrorRow<'a> {
    pub fn parse(line: &'a str) -> Result<Self, RowError> {
        let r = row_of(line, "error")?;
        Ok(ErrorRow {
            code: ErrorCode::from_name(need(&r, "code")?),
            msg: r.get("msg").unwrap_or(""),
        })
    }
}

impl ErrorRow<'_> {
    /// Writes the row (no newline) with a message formatted in place, for
    /// writers that have no buffer to format the message into first.
    pub fn write(out: &mut dyn fmt::Write, code: ErrorCode, msg: &dyn fmt::Display) -> fmt::Result {
        write!(out, "error code={} msg={msg}", code.as_str())
    }
}

impl fmt::Display for ErrorRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ErrorRow::write(f, self.code, &self.msg)
    }
}

/// `ok id=N`: a probe was created, enabled, disabled or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OkIdRow {
    pub id: u32,
}

impl OkIdRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let r = row_of(line, "ok")?;
        Ok(OkIdRow {
            id: u32::try_from(need_num(&r, "id")?).map_err(|_| RowError::Field("id"))?,
        })
    }
}

impl fmt::Display for OkIdRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ok id={}", self.id)
    }
}

/// `ok`: a command that names nothing new succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OkRow;

impl OkRow {
    /// Any `ok` row (extra keys are ignored).
    pub fn parse(line: &str) -> Result<Self, RowError> {
        row_of(line, "ok").map(|_| OkRow)
    }
}

impl fmt::Display for OkRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ok")
    }
}

/// `ok stream=MODE`: the answer to `stream`. Only kdbg's stub gives it, so
/// the shell tells kdbg's stub from a foreign one (QEMU's gdbstub) by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRow {
    pub stream: crate::command::StreamMode,
}

impl StreamRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let r = row_of(line, "ok")?;
        Ok(StreamRow {
            stream: crate::command::StreamMode::from_name(need(&r, "stream")?)
                .ok_or(RowError::Field("stream"))?,
        })
    }
}

impl fmt::Display for StreamRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ok stream={}", self.stream.as_str())
    }
}

/// `sym addr=0x.. name=NAME+0xOFF`, or `name=-` when no symbol covers the
/// address: the answer to `lookup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymRow<'a> {
    pub addr: u64,
    /// The covering symbol and the offset into it.
    pub sym: Option<(&'a str, u64)>,
}

impl<'a> SymRow<'a> {
    pub fn parse(line: &'a str) -> Result<Self, RowError> {
        let r = row_of(line, "sym")?;
        let name = need(&r, "name")?;
        let sym = if name == "-" {
            None
        } else {
            let (s, o) = name.rsplit_once('+').ok_or(RowError::Field("name"))?;
            Some((s, parse_u64(o).ok_or(RowError::Field("name"))?))
        };
        Ok(SymRow {
            addr: need_num(&r, "addr")?,
            sym,
        })
    }
}

impl fmt::Display for SymRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sym {
            Some((name, off)) => write!(f, "sym addr={:#x} name={name}+{off:#x}", self.addr),
            None => write!(f, "sym addr={:#x} name=-", self.addr),
        }
    }
}

/// `probe-memory used=N budget=N`: the kretprobe instance pools' share of
/// the heap and its cap (part of the `events` answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeMemoryRow {
    pub used: u64,
    pub budget: u64,
}

impl ProbeMemoryRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let r = row_of(line, "probe-memory")?;
        Ok(ProbeMemoryRow {
            used: need_num(&r, "used")?,
            budget: need_num(&r, "budget")?,
        })
    }
}

impl fmt::Display for ProbeMemoryRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "probe-memory used={} budget={}", self.used, self.budget)
    }
}

/// `pages addr=A len=L map=HEX holes=HEX`: of the 4 KiB pages from `addr`
/// (`len` bytes), which hold a non-zero byte (`map`) and which are not
/// mapped (`holes`), as bitmaps (page `i` is bit `i % 8` of byte `i / 8`)
/// written in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagesRow<'a> {
    pub addr: u64,
    pub len: u64,
    pub map: &'a [u8],
    pub holes: &'a [u8],
}

impl fmt::Display for PagesRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pages addr={:#x} len={:#x} map=", self.addr, self.len)?;
        for b in self.map {
            write!(f, "{b:02x}")?;
        }
        f.write_str(" holes=")?;
        for b in self.holes {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A `pages` row as read, its bitmaps still in hex ([`PagesHex::bitmap`]
/// decodes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagesHex<'a> {
    pub addr: u64,
    pub len: u64,
    pub map: &'a str,
    pub holes: &'a str,
}

impl<'a> PagesHex<'a> {
    pub fn parse(line: &'a str) -> Result<Self, RowError> {
        let r = row_of(line, "pages")?;
        Ok(PagesHex {
            addr: need_num(&r, "addr")?,
            len: need_num(&r, "len")?,
            map: need(&r, "map")?,
            holes: need(&r, "holes")?,
        })
    }

    /// The bytes of a hex bitmap; `None` when it is not hex.
    pub fn bitmap(hex: &str) -> Option<impl Iterator<Item = u8> + '_> {
        let ok = hex.len().is_multiple_of(2) && hex.bytes().all(|c| c.is_ascii_hexdigit());
        ok.then(|| {
            hex.as_bytes().chunks(2).map(|p| {
                let d = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                (d(p.first().copied().unwrap_or(b'0')) << 4) | d(p.get(1).copied().unwrap_or(b'0'))
            })
        })
    }
}

/// `why ...`: why the kernel is stopped (or that it runs). Keys that do
/// not apply to the state are absent: a running kernel has only `policy`, a
/// stop `cause signal task rip policy`, a death all of them (`where` only
/// for a panic with a location).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WhyRow<'a> {
    /// `running`, `stopped` or `dead`.
    pub state: &'a str,
    pub cause: Option<&'a str>,
    /// For a death: `panic`, `trap`, `double-fault`, `stack-overflow`.
    pub kind: Option<&'a str>,
    pub signal: Option<u64>,
    pub task: Option<u64>,
    pub vector: Option<u64>,
    pub error_code: Option<u64>,
    pub cr2: Option<u64>,
    pub rip: Option<u64>,
    /// What the stub does when the kernel dies.
    pub policy: Option<&'a str>,
    /// `file:line:col` of a panic.
    pub location: Option<&'a str>,
    /// `Some(false)` for a death (`resumable=no`).
    pub resumable: Option<bool>,
    pub msg: Option<&'a str>,
}

impl<'a> WhyRow<'a> {
    pub fn parse(line: &'a str) -> Result<Self, RowError> {
        let r = row_of(line, "why")?;
        Ok(WhyRow {
            state: need(&r, "state")?,
            cause: r.get("cause"),
            kind: r.get("kind"),
            signal: r.num("signal"),
            task: r.num("task"),
            vector: r.num("vector"),
            error_code: r.num("error_code"),
            cr2: r.num("cr2"),
            rip: r.num("rip"),
            policy: r.get("policy"),
            location: r.get("where"),
            resumable: match r.get("resumable") {
                Some("no") => Some(false),
                Some("yes") => Some(true),
                _ => None,
            },
            msg: r.get("msg"),
        })
    }
}

impl fmt::Display for WhyRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "why state={}", self.state)?;
        let words = [("cause", self.cause), ("kind", self.kind)];
        for (k, v) in words {
            if let Some(v) = v {
                write!(f, " {k}={v}")?;
            }
        }
        for (k, v) in [
            ("signal", self.signal),
            ("task", self.task),
            ("vector", self.vector),
        ] {
            if let Some(v) = v {
                write!(f, " {k}={v}")?;
            }
        }
        for (k, v) in [
            ("error_code", self.error_code),
            ("cr2", self.cr2),
            ("rip", self.rip),
        ] {
            if let Some(v) = v {
                write!(f, " {k}={v:#x}")?;
            }
        }
        for (k, v) in [("policy", self.policy), ("where", self.location)] {
            if let Some(v) = v {
                write!(f, " {k}={v}")?;
            }
        }
        if let Some(r) = self.resumable {
            write!(f, " resumable={}", if r { "yes" } else { "no" })?;
        }
        if let Some(m) = self.msg {
            write!(f, " msg={m}")?;
        }
        Ok(())
    }
}

/// Probe type as shown in `probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeType {
    Kprobe,
    Jprobe,
    Kretprobe,
}

impl ProbeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::Kprobe => "kprobe",
            ProbeType::Jprobe => "jprobe",
            ProbeType::Kretprobe => "kretprobe",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "kprobe" => Some(ProbeType::Kprobe),
            "jprobe" => Some(ProbeType::Jprobe),
            "kretprobe" => Some(ProbeType::Kretprobe),
            _ => None,
        }
    }
}

/// How a probed instruction executes after the handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecPath {
    Emulated,
    OutOfLine,
    Boosted,
    /// Jump-optimized: no trap.
    Optimized,
    /// Not decided / not applicable.
    Unknown,
}

impl ExecPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecPath::Emulated => "emulated",
            ExecPath::OutOfLine => "out-of-line",
            ExecPath::Boosted => "boosted",
            ExecPath::Optimized => "optimized",
            ExecPath::Unknown => "-",
        }
    }

    pub fn from_name(s: &str) -> Self {
        match s {
            "emulated" => ExecPath::Emulated,
            "out-of-line" => ExecPath::OutOfLine,
            "boosted" => ExecPath::Boosted,
            "optimized" => ExecPath::Optimized,
            _ => ExecPath::Unknown,
        }
    }
}

/// One row of `probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRow<'a> {
    pub id: u32,
    pub kind: ProbeType,
    pub addr: u64,
    /// `name+0xOFF`, or `-` when unknown.
    pub sym: &'a str,
    pub sym_offset: u64,
    pub enabled: bool,
    pub hits: u64,
    pub nmissed: u64,
    pub path: ExecPath,
    /// Why the probe is not jump-optimized (`noopt=REASON`), when tried.
    pub not_optimized: Option<&'a str>,
    /// kretprobes only; 0 otherwise.
    pub maxactive: u32,
    /// Hits its predicate (`if=`) rejected.
    pub filtered: u64,
    /// Hits whose predicate faulted (not recorded).
    pub faults: u64,
    /// What the probe records besides the argument registers (the capture
    /// tokens of the command that set it, `stack=N fetch=...`; empty for
    /// kprobes), so another client can render its events.
    pub capture: crate::fetch::CaptureSpec,
}

impl<'a> ProbeRow<'a> {
    pub fn parse(line: &'a str) -> Result<Self, RowError> {
        let r = row_of(line, "probe")?;
        let sym_full = need(&r, "sym")?;
        let (sym, sym_offset) = match sym_full.rsplit_once('+') {
            Some((s, o)) => (s, parse_u64(o).ok_or(RowError::Field("sym"))?),
            None => (sym_full, 0),
        };
        Ok(ProbeRow {
            id: u32::try_from(need_num(&r, "id")?).map_err(|_| RowError::Field("id"))?,
            kind: ProbeType::from_name(need(&r, "type")?).ok_or(RowError::Field("type"))?,
            addr: need_num(&r, "addr")?,
            sym,
            sym_offset,
            enabled: need_num(&r, "enabled")? != 0,
            hits: need_num(&r, "hits")?,
            nmissed: need_num(&r, "nmissed")?,
            path: ExecPath::from_name(r.get("path").unwrap_or("-")),
            not_optimized: r.get("noopt"),
            maxactive: r
                .num("maxactive")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            filtered: r.num("filtered").unwrap_or(0),
            faults: r.num("faults").unwrap_or(0),
            capture: {
                let mut c = crate::fetch::CaptureSpec::default();
                if let Some(n) = r.get("stack") {
                    c.stack_bytes = parse_u64(n)
                        .and_then(|n| u8::try_from(n).ok())
                        .filter(|n| usize::from(*n) <= crate::fetch::MAX_STACK)
                        .ok_or(RowError::Field("stack"))?;
                }
                if let Some(p) = r.get("fetch") {
                    c.program = crate::fetch::FetchProgram::parse(p)
                        .map_err(|_| RowError::Field("fetch"))?;
                }
                c
            },
        })
    }
}

impl fmt::Display for ProbeRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "probe id={} type={} addr={:#x} sym={}+{:#x} enabled={} hits={} nmissed={} path={} maxactive={}",
            self.id,
            self.kind.as_str(),
            self.addr,
            self.sym,
            self.sym_offset,
            u8::from(self.enabled),
            self.hits,
            self.nmissed,
            self.path.as_str(),
            self.maxactive
        )?;
        if self.filtered != 0 || self.faults != 0 {
            write!(f, " filtered={} faults={}", self.filtered, self.faults)?;
        }
        if let Some(why) = self.not_optimized {
            write!(f, " noopt={why}")?;
        }
        if !self.capture.is_empty() {
            write!(f, " {}", self.capture)?;
        }
        Ok(())
    }
}

/// The `shm` row (issue 17): what a debugger that maps guest RAM needs to
/// read memory and consume the event rings without the stub.
///
/// `cr3`: the kernel's page-table root. RAM the shell may read from the
/// mapping: physical `[ram_start, ram_end)`. `tramp`: the kretprobe
/// trampoline. The rings: CPU `i`'s ring struct at virtual `rings + i *
/// stride` (`cpus` of them), `size` bytes of buffer at offset `buf`, and
/// the u64 fields `head`, `tail`, `produced`, `dropped`, `direct` (records
/// the direct consumer took) at those offsets. `consumer`/`beat`: virtual
/// addresses of the consumer word (`epoch << 1 | direct`) and the
/// consumer's heartbeat. `epoch`: the consumer word now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShmRow {
    pub cr3: u64,
    pub ram_start: u64,
    pub ram_end: u64,
    pub tramp: u64,
    pub rings: u64,
    pub stride: u64,
    pub cpus: u64,
    pub size: u64,
    pub buf: u64,
    pub head: u64,
    pub tail: u64,
    pub produced: u64,
    pub dropped: u64,
    pub direct: u64,
    pub consumer: u64,
    pub beat: u64,
    pub epoch: u64,
}

impl ShmRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let r = row_of(line, "shm")?;
        Ok(ShmRow {
            cr3: need_num(&r, "cr3")?,
            ram_start: need_num(&r, "ram_start")?,
            ram_end: need_num(&r, "ram_end")?,
            tramp: need_num(&r, "tramp")?,
            rings: need_num(&r, "rings")?,
            stride: need_num(&r, "stride")?,
            cpus: need_num(&r, "cpus")?,
            size: need_num(&r, "size")?,
            buf: need_num(&r, "buf")?,
            head: need_num(&r, "head")?,
            tail: need_num(&r, "tail")?,
            produced: need_num(&r, "produced")?,
            dropped: need_num(&r, "dropped")?,
            direct: need_num(&r, "direct")?,
            consumer: need_num(&r, "consumer")?,
            beat: need_num(&r, "beat")?,
            epoch: need_num(&r, "epoch")?,
        })
    }
}

impl fmt::Display for ShmRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shm cr3={:#x} ram_start={:#x} ram_end={:#x} tramp={:#x} rings={:#x} stride={} cpus={} size={} buf={} head={} tail={} produced={} dropped={} direct={} consumer={:#x} beat={:#x} epoch={:#x}",
            self.cr3,
            self.ram_start,
            self.ram_end,
            self.tramp,
            self.rings,
            self.stride,
            self.cpus,
            self.size,
            self.buf,
            self.head,
            self.tail,
            self.produced,
            self.dropped,
            self.direct,
            self.consumer,
            self.beat,
            self.epoch
        )
    }
}

/// The `events` row: the ring's counters. produced = delivered + dropped + queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsRow {
    pub size: u64,
    pub produced: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub stream: crate::command::StreamMode,
    /// TSC ticks per second as the kernel measured them (0: not yet known).
    pub tsc_hz: u64,
    /// The TSC when the stub started, early in boot (event times minus this
    /// are times since boot).
    pub boot_tsc: u64,
    /// How `tsc_hz` was measured.
    pub tsc_src: TscSource,
}

/// How the kernel measured its TSC rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    /// Calibrated once at boot against the PIT's counter (steady).
    Pit,
    /// Counted against timer interrupts since boot (drifts when they are
    /// late or lost).
    Ticks,
    /// Not known yet.
    Unknown,
}

impl TscSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TscSource::Pit => "pit",
            TscSource::Ticks => "ticks",
            TscSource::Unknown => "-",
        }
    }
    pub fn from_name(s: &str) -> TscSource {
        match s {
            "pit" => TscSource::Pit,
            "ticks" => TscSource::Ticks,
            _ => TscSource::Unknown,
        }
    }
}

impl EventsRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        use crate::command::StreamMode;
        let r = row_of(line, "events")?;
        Ok(EventsRow {
            size: need_num(&r, "size")?,
            produced: need_num(&r, "produced")?,
            delivered: need_num(&r, "delivered")?,
            dropped: need_num(&r, "dropped")?,
            stream: r
                .get("stream")
                .and_then(StreamMode::from_name)
                .unwrap_or(StreamMode::Text),
            tsc_hz: r.num("tsc_hz").unwrap_or(0),
            boot_tsc: r.num("boot_tsc").unwrap_or(0),
            tsc_src: TscSource::from_name(r.get("tsc_src").unwrap_or("-")),
        })
    }
}

impl fmt::Display for EventsRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events size={} produced={} delivered={} dropped={} stream={} tsc_hz={} boot_tsc={} tsc_src={}",
            self.size,
            self.produced,
            self.delivered,
            self.dropped,
            self.stream.as_str(),
            self.tsc_hz,
            self.boot_tsc,
            self.tsc_src.as_str()
        )
    }
}

/// `drops id=N dropped=N`: events of one probe lost to a full ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropsRow {
    pub id: u32,
    pub dropped: u64,
}

impl DropsRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let r = row_of(line, "drops")?;
        Ok(DropsRow {
            id: u32::try_from(need_num(&r, "id")?).map_err(|_| RowError::Field("id"))?,
            dropped: need_num(&r, "dropped")?,
        })
    }
}

impl fmt::Display for DropsRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "drops id={} dropped={}", self.id, self.dropped)
    }
}

/// One row of `tasks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRow<'a> {
    pub id: u32,
    pub name: &'a str,
    pub state: &'a str,
    pub current: bool,
    /// The CPU running the task (`cpu=N`, only for running tasks; older
    /// stubs never send it).
    pub cpu: Option<u32>,
}

impl<'a> TaskRow<'a> {
    pub fn parse(line: &'a str) -> Result<Self, RowError> {
        let r = row_of(line, "task")?;
        Ok(TaskRow {
            id: u32::try_from(need_num(&r, "id")?).map_err(|_| RowError::Field("id"))?,
            name: need(&r, "name")?,
            state: r.get("state").unwrap_or("-"),
            current: r.num("current").unwrap_or(0) != 0,
            cpu: r.num("cpu").and_then(|c| u32::try_from(c).ok()),
        })
    }
}

impl fmt::Display for TaskRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task id={} name={} state={} current={}",
            self.id,
            self.name,
            self.state,
            u8::from(self.current)
        )?;
        match self.cpu {
            Some(c) => write!(f, " cpu={c}"),
            None => Ok(()),
        }
    }
}

/// One outstanding kretprobe instance: in `task`, the return address slot at
/// `sp` (pointing at the trampoline) belongs to a call of `func` and really
/// returns to `ret`. A host unwinder that finds the trampoline in slot `sp`
/// substitutes `ret`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstRow {
    pub task: u32,
    pub func: u64,
    pub sp: u64,
    pub ret: u64,
}

impl InstRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let r = row_of(line, "inst")?;
        Ok(InstRow {
            task: u32::try_from(need_num(&r, "task")?).map_err(|_| RowError::Field("task"))?,
            func: need_num(&r, "func")?,
            sp: need_num(&r, "sp")?,
            ret: need_num(&r, "ret")?,
        })
    }
}

impl fmt::Display for InstRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inst task={} func={:#x} sp={:#x} ret={:#x}",
            self.task, self.func, self.sp, self.ret
        )
    }
}

/// One row of `conds`: a gdb breakpoint's in-kernel condition and counters.
/// `hits` counts every trap at the breakpoint; `false` the ones the
/// condition rejected, `faults` the ones whose condition faulted (also not
/// stopped), `ignored` the true ones the ignore count skipped; `ignore` is
/// what is left of the ignore count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CondRow {
    pub addr: u64,
    pub hits: u64,
    pub false_hits: u64,
    pub faults: u64,
    pub ignored: u64,
    pub ignore: u64,
    /// Program length in bytes (0: no condition).
    pub prog_len: u64,
}

impl CondRow {
    pub fn parse(line: &str) -> Result<Self, RowError> {
        let r = row_of(line, "cond")?;
        Ok(CondRow {
            addr: need_num(&r, "addr")?,
            hits: need_num(&r, "hits")?,
            false_hits: need_num(&r, "false")?,
            faults: need_num(&r, "faults")?,
            ignored: need_num(&r, "ignored")?,
            ignore: need_num(&r, "ignore")?,
            prog_len: r.num("len").unwrap_or(0),
        })
    }
}

impl fmt::Display for CondRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cond addr={:#x} hits={} false={} faults={} ignored={} ignore={} len={}",
            self.addr,
            self.hits,
            self.false_hits,
            self.faults,
            self.ignored,
            self.ignore,
            self.prog_len
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn ok_id_row_round_trips() {
        let row = OkIdRow { id: 42 };
        assert_eq!(row.to_string(), "ok id=42");
        assert_eq!(OkIdRow::parse(&row.to_string()).unwrap(), row);
        assert!(OkIdRow::parse("ok").is_err());
        assert!(OkIdRow::parse("ok id=99999999999").is_err());
        let e = ErrorRow {
            code: ErrorCode::Busy,
            msg: "retry",
        };
        assert_eq!(ErrorRow::parse(&e.to_string()).unwrap(), e);
    }

    #[test]
    fn why_rows_print_as_the_stub_always_did_and_parse_back() {
        let running = WhyRow {
            state: "running",
            policy: Some("stop"),
            ..WhyRow::default()
        };
        assert_eq!(running.to_string(), "why state=running policy=stop");
        let stopped = WhyRow {
            state: "stopped",
            cause: Some("breakpoint"),
            signal: Some(5),
            task: Some(4),
            rip: Some(0x1761c0),
            policy: Some("stop"),
            ..WhyRow::default()
        };
        assert_eq!(
            stopped.to_string(),
            "why state=stopped cause=breakpoint signal=5 task=4 rip=0x1761c0 policy=stop"
        );
        let dead = WhyRow {
            state: "dead",
            cause: Some("death"),
            kind: Some("panic"),
            signal: Some(6),
            task: Some(6),
            vector: Some(3),
            error_code: Some(0),
            cr2: Some(0),
            rip: Some(0x1000),
            policy: Some("stop"),
            location: Some("kernel/src/x.rs:12:5"),
            resumable: Some(false),
            msg: Some("attempt to divide by zero"),
        };
        assert_eq!(
            dead.to_string(),
            "why state=dead cause=death kind=panic signal=6 task=6 vector=3 error_code=0x0 cr2=0x0 rip=0x1000 policy=stop where=kernel/src/x.rs:12:5 resumable=no msg=attempt to divide by zero"
        );
        for row in [running, stopped, dead] {
            assert_eq!(WhyRow::parse(&row.to_string()), Ok(row));
        }
        assert_eq!(WhyRow::parse("why"), Err(RowError::Field("state")));
        assert_eq!(WhyRow::parse("ok"), Err(RowError::WrongKind));
    }

    #[test]
    fn small_rows_round_trip() {
        use crate::command::StreamMode;
        assert_eq!(OkRow.to_string(), "ok");
        assert_eq!(OkRow::parse("ok"), Ok(OkRow));
        assert_eq!(
            OkRow::parse("error code=busy msg=x"),
            Err(RowError::WrongKind)
        );
        for stream in [StreamMode::Off, StreamMode::Text, StreamMode::Record] {
            let row = StreamRow { stream };
            assert_eq!(StreamRow::parse(&row.to_string()), Ok(row));
        }
        assert_eq!(
            StreamRow {
                stream: StreamMode::Record
            }
            .to_string(),
            "ok stream=record"
        );
        assert_eq!(StreamRow::parse("ok"), Err(RowError::Field("stream")));
        assert_eq!(
            StreamRow::parse("ok stream=on"),
            Err(RowError::Field("stream"))
        );
        let sym = SymRow {
            addr: 0xffff_8000_0010_0040,
            sym: Some(("kmain", 0x40)),
        };
        assert_eq!(
            sym.to_string(),
            "sym addr=0xffff800000100040 name=kmain+0x40"
        );
        assert_eq!(SymRow::parse(&sym.to_string()), Ok(sym));
        let none = SymRow {
            addr: 0x10,
            sym: None,
        };
        assert_eq!(none.to_string(), "sym addr=0x10 name=-");
        assert_eq!(SymRow::parse(&none.to_string()), Ok(none));
        let mem = ProbeMemoryRow {
            used: 4096,
            budget: 1 << 20,
        };
        assert_eq!(mem.to_string(), "probe-memory used=4096 budget=1048576");
        assert_eq!(ProbeMemoryRow::parse(&mem.to_string()), Ok(mem));
    }

    use super::*;

    #[test]
    fn probe_row_round_trips() {
        let row = ProbeRow {
            id: 3,
            kind: ProbeType::Kretprobe,
            addr: 0xffff_ffff_8010_0000,
            sym: "sys_open",
            sym_offset: 0,
            enabled: true,
            hits: 12,
            nmissed: 1,
            path: ExecPath::Boosted,
            not_optimized: None,
            maxactive: 10,
            filtered: 0,
            faults: 0,
            capture: crate::fetch::CaptureSpec::default(),
        };
        let text = row.to_string();
        assert_eq!(
            text,
            "probe id=3 type=kretprobe addr=0xffffffff80100000 sym=sys_open+0x0 enabled=1 hits=12 nmissed=1 path=boosted maxactive=10"
        );
        assert_eq!(ProbeRow::parse(&text).unwrap(), row);
        // With a capture: the tokens the setting command had, round-trip.
        let row = ProbeRow {
            capture: crate::fetch::CaptureSpec::parse("stack=16 fetch=str64@arg0,u32@$0+8")
                .unwrap(),
            ..row
        };
        let text = row.to_string();
        assert!(
            text.ends_with("maxactive=10 stack=16 fetch=str64@arg0,u32@$0+0x8"),
            "{text}"
        );
        assert_eq!(ProbeRow::parse(&text).unwrap(), row);
        // Not optimized, with the reason.
        let row = ProbeRow {
            path: ExecPath::Boosted,
            not_optimized: Some("jump-into-region"),
            ..row
        };
        let text = row.to_string();
        assert!(text.contains(" noopt=jump-into-region"), "{text}");
        assert_eq!(ProbeRow::parse(&text).unwrap(), row);
        let row = ProbeRow {
            path: ExecPath::Optimized,
            not_optimized: None,
            ..row
        };
        assert_eq!(ProbeRow::parse(&row.to_string()).unwrap(), row);
    }

    #[test]
    fn error_row_keeps_message() {
        let e = ErrorRow {
            code: ErrorCode::NotBoundary,
            msg: "0x1003 is inside `mov` at 0x1001: use an instruction start",
        };
        let text = e.to_string();
        let back = ErrorRow::parse(&text).unwrap();
        assert_eq!(back, e);
        assert_eq!(Row::parse(&text).unwrap().get("code"), Some("not-boundary"));
    }

    #[test]
    fn cond_row_round_trips() {
        let row = CondRow {
            addr: 0x1000,
            hits: 9,
            false_hits: 5,
            faults: 1,
            ignored: 3,
            ignore: 0,
            prog_len: 6,
        };
        assert_eq!(CondRow::parse(&row.to_string()), Ok(row));
        assert_eq!(CondRow::parse("probe id=1"), Err(RowError::WrongKind));
    }

    #[test]
    fn shm_row_round_trips() {
        let r = ShmRow {
            cr3: 0x10_3000,
            ram_start: 0x10_0000,
            ram_end: 0x800_0000,
            tramp: 0x10_2345,
            rings: 0x20_0000,
            stride: 16_448,
            cpus: 8,
            size: 16_384,
            buf: 0,
            head: 16_384,
            tail: 16_392,
            produced: 16_400,
            dropped: 16_416,
            direct: 16_424,
            consumer: 0x30_0000,
            beat: 0x30_0008,
            epoch: 3,
        };
        assert_eq!(ShmRow::parse(&r.to_string()).unwrap(), r);
        assert_eq!(
            ShmRow::parse("shm cr3=0x1"),
            Err(RowError::Field("ram_start"))
        );
    }

    #[test]
    fn other_rows_round_trip() {
        let ev = EventsRow {
            size: 256,
            produced: 10,
            delivered: 7,
            dropped: 3,
            stream: crate::command::StreamMode::Record,
            tsc_hz: 2_000_000_000,
            boot_tsc: 12345,
            tsc_src: TscSource::Pit,
        };
        assert_eq!(EventsRow::parse(&ev.to_string()).unwrap(), ev);
        // An older stub without tsc_src.
        let old =
            "events size=1 produced=0 delivered=0 dropped=0 stream=record tsc_hz=5 boot_tsc=6";
        assert_eq!(EventsRow::parse(old).unwrap().tsc_src, TscSource::Unknown);
        let d = DropsRow { id: 2, dropped: 9 };
        assert_eq!(DropsRow::parse(&d.to_string()).unwrap(), d);
        let t = TaskRow {
            id: 1,
            name: "worker-2",
            state: "ready",
            current: true,
            cpu: None,
        };
        assert_eq!(TaskRow::parse(&t.to_string()).unwrap(), t);
        let t = TaskRow {
            cpu: Some(3),
            state: "running",
            ..t
        };
        assert_eq!(TaskRow::parse(&t.to_string()).unwrap(), t);
        assert!(t.to_string().ends_with(" cpu=3"));
        let i = InstRow {
            task: 1,
            func: 0x1000,
            sp: 0x8000,
            ret: 0x1234,
        };
        assert_eq!(InstRow::parse(&i.to_string()).unwrap(), i);
        assert_eq!(
            ProbeRow::parse("task id=1").unwrap_err(),
            RowError::WrongKind
        );
        assert_eq!(
            ProbeRow::parse("probe id=1").unwrap_err(),
            RowError::Field("sym")
        );
        assert!(Row::parse("  help text").is_none());
    }

    #[test]
    fn row_garbage_never_panics() {
        for line in [
            "",
            "=",
            "a ==",
            "probe msg=",
            "probe id=",
            "x msg",
            "probe sym=+",
            "é=é é",
        ] {
            let _ = ProbeRow::parse(line);
            let _ = ErrorRow::parse(line);
            let _ = Row::parse(line).map(|r| r.get("msg"));
        }
    }

    #[test]
    fn pages_rows_round_trip() {
        let row = PagesRow {
            addr: 0x20_0000,
            len: 0x4000,
            map: &[0x05],
            holes: &[0x08],
        };
        let mut text = String::new();
        fmt::write(&mut text, format_args!("{row}")).unwrap();
        assert_eq!(text, "pages addr=0x200000 len=0x4000 map=05 holes=08");
        let back = PagesHex::parse(&text).unwrap();
        assert_eq!(
            (back.addr, back.len, back.map, back.holes),
            (0x20_0000, 0x4000, "05", "08")
        );
        assert_eq!(
            PagesHex::bitmap("05ff").unwrap().collect::<Vec<_>>(),
            [5, 255]
        );
        assert!(PagesHex::bitmap("0g").is_none());
        assert!(PagesHex::bitmap("050").is_none());
        assert_eq!(
            PagesHex::parse("pages addr=0x0"),
            Err(RowError::Field("len"))
        );
    }
}
