//! Probe hits on the host: from proto's records to [`EventView`]s (names,
//! types, strings, errnos) and the text form of one event; the event store
//! behind `events`, `hist` and `wait events` is in [`store`], histograms in
//! [`hist`].

mod hist;
mod store;
pub mod text_line;

pub use hist::{Bucket, bucket_key, buckets_from, histogram, histogram_text};
pub use store::{Drops, Filter, KEEP, Store};

use proto::event::{Event, EventKind, FetchResult, Record};
use serde::{Deserialize, Serialize};

use crate::capture::{Item, Layout, Shape, Source};

/// The host's knowledge of one probe, for rendering its events.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeDef {
    pub id: u32,
    pub kind: &'static str,
    /// What the user asked for, resolved (`spawn_task`, `sys_open+0x4`).
    pub location: String,
    pub addr: u64,
    pub layout: Layout,
    /// kprobes: the probed instruction.
    pub insn: Option<String>,
    /// kprobes: argument registers the instruction uses (indexes 0..6).
    #[serde(skip)]
    pub insn_args: Vec<u8>,
    /// `printf "FMT" ARGS...`: how each event is shown instead of the
    /// default line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub printf: Option<crate::record::printf::Format>,
}

/// Names the renderer needs from the session.
pub trait Names {
    fn task_name(&self, task: u32) -> Option<String>;
    /// `name` when `addr` is exactly a symbol's address (for `&name`).
    fn symbol_at(&self, addr: u64) -> Option<String>;
    /// `name+0xoff` for any code address.
    fn symbolize(&self, addr: u64) -> Option<String>;
}

/// One rendered value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValueView {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Number, string, bool, or null (fault / unavailable).
    pub value: serde_json::Value,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetView {
    pub raw: u64,
    pub value: serde_json::Value,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<&'static str>,
}

/// The kinds an event can have (as `kind` says them).
pub const KINDS: [&str; 4] = ["kprobe", "jprobe", "capture", "kretprobe"];

/// The errno name `name` as the static the views carry.
pub fn errno_static(name: &str) -> Option<&'static str> {
    ERRNOS.iter().skip(1).find(|e| **e == name).copied()
}

/// One probe hit, ready for text or JSON (the JSON form is complete: a
/// recording reads it back, `record::file`). `Default` is an empty event
/// (tests build theirs from it).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EventView {
    /// Host-side sequence number (1, 2, ...).
    pub seq: u64,
    pub probe: u32,
    pub kind: &'static str,
    /// Seconds since boot, when the TSC rate is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    pub tsc: u64,
    pub cpu: u8,
    pub task: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    pub function: String,
    pub addr: u64,
    pub args: Vec<ValueView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret: Option<RetView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_tsc: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regs: Vec<(String, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insn: Option<String>,
    /// Some string was cut at the capture limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The probe's `printf` format applied to this event (the text form
    /// shows only this line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub printf: Option<String>,
}

/// Test events: the `path` argument of a `sys_open` event and a plain
/// return value, as the shell renders them.
#[cfg(test)]
pub(crate) mod sample {
    use super::{RetView, ValueView};

    /// `path` of type `*const u8`, shown quoted.
    pub fn path_arg(path: &str) -> ValueView {
        ValueView {
            name: "path".into(),
            type_name: "*const u8".into(),
            value: path.into(),
            text: super::quote(path.as_bytes()),
        }
    }

    /// A return value `ret` with no errno name.
    pub fn ret(ret: i64) -> RetView {
        RetView {
            raw: ret as u64,
            value: ret.into(),
            text: ret.to_string(),
            errno: None,
        }
    }
}

const ERRNOS: [&str; 40] = [
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
];

/// The errno name of a negative return value (-1 .. -39).
pub fn errno_name(v: i64) -> Option<&'static str> {
    if (-39..=-1).contains(&v) {
        ERRNOS.get((-v) as usize).copied()
    } else {
        None
    }
}

/// Quote bytes as a C-ish string literal.
pub fn quote(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

fn raw_of(ev: &Event, src: Source) -> Option<Result<u64, u64>> {
    match src {
        Source::Arg(i) => ev.args.get(usize::from(i)).map(|v| Ok(*v)),
        Source::Stack(off) => {
            let b = ev.stack().get(usize::from(off)..usize::from(off) + 8)?;
            Some(Ok(u64::from_le_bytes(b.try_into().ok()?)))
        }
        Source::Result(j) => match ev.results().get(usize::from(j))? {
            FetchResult::Value(v) => Some(Ok(*v)),
            FetchResult::Str { addr, .. } => Some(Ok(*addr)),
            FetchResult::Fault { addr } => Some(Err(*addr)),
        },
    }
}

fn mask(v: u64, size: u8) -> u64 {
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (size * 8)) - 1)
    }
}

fn sext(v: u64, size: u8) -> i64 {
    if size >= 8 {
        v as i64
    } else {
        let shift = 64 - u32::from(size) * 8;
        ((v << shift) as i64) >> shift
    }
}

/// Render a number by shape.
pub fn render_number(v: u64, shape: &Shape, names: &dyn Names) -> (serde_json::Value, String) {
    match shape {
        Shape::Unsigned { size, hex } => {
            let v = mask(v, *size);
            let t = if *hex {
                format!("{v:#x}")
            } else {
                v.to_string()
            };
            (v.into(), t)
        }
        Shape::Signed { size } => {
            let v = sext(v, *size);
            (v.into(), v.to_string())
        }
        Shape::Bool => {
            let b = v & 0xff != 0;
            (b.into(), b.to_string())
        }
        Shape::Char => {
            let c = (v & 0xff) as u8;
            let t = if c.is_ascii_graphic() || c == b' ' {
                format!("'{}'", c as char)
            } else {
                format!("'\\x{c:02x}'")
            };
            (u64::from(c).into(), t)
        }
        Shape::Pointer | Shape::Str { .. } => {
            if v == 0 {
                (0.into(), "NULL".into())
            } else if let Some(n) = names.symbol_at(v) {
                (v.into(), format!("&{n}"))
            } else {
                (v.into(), format!("{v:#x}"))
            }
        }
    }
}

fn render_item(ev: &Event, item: &Item, names: &dyn Names) -> ValueView {
    let mk = |value: serde_json::Value, text: String| ValueView {
        name: item.label.clone(),
        type_name: item.type_name.clone(),
        value,
        text,
    };
    let Some(raw) = raw_of(ev, item.source) else {
        return mk(serde_json::Value::Null, "<unavailable>".into());
    };
    let v = match raw {
        Ok(v) => v,
        Err(addr) => return mk(serde_json::Value::Null, format!("<fault@{addr:#x}>")),
    };
    if let (Shape::Str { len }, Source::Result(j)) = (&item.shape, item.source)
        && let Some(r @ FetchResult::Str { .. }) = ev.results().get(usize::from(j))
    {
        let mut bytes = ev.string_bytes(r);
        let mut cut = ev.truncated && bytes.len() >= proto::fetch::MAX_STRING;
        if let Some(Ok(n)) = len.and_then(|l| raw_of(ev, l)) {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            cut = n > bytes.len();
            bytes = &bytes[..n.min(bytes.len())];
        }
        let mut t = quote(bytes);
        if cut {
            t.push_str("...");
        }
        return mk(String::from_utf8_lossy(bytes).into_owned().into(), t);
    }
    let (value, text) = render_number(v, &item.shape, names);
    mk(value, text)
}

/// Seconds and durations from TSC ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    pub tsc_hz: Option<u64>,
    /// The TSC value shown as time 0 (the kernel's boot, when the stub
    /// tells it, else the first event of the session).
    pub base: Option<u64>,
    /// The boot (its stub's start TSC) the rate and base were taken from.
    pub kernel_boot: Option<u64>,
}

impl Clock {
    pub fn seconds(&self, tsc: u64) -> Option<f64> {
        self.tsc_hz
            .map(|hz| tsc.saturating_sub(self.base.unwrap_or(0)) as f64 / hz as f64)
    }

    /// The host's TSC rate, measured over 50 ms. Under QEMU TCG (and KVM
    /// by default) the guest's TSC runs at the host's rate; with
    /// `-icount` it does not: give `--tsc-hz` then.
    pub fn host_tsc_hz() -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        {
            let t0 = std::time::Instant::now();
            // SAFETY: rdtsc has no memory effects; every x86_64 CPU has it.
            let c0 = unsafe { core::arch::x86_64::_rdtsc() };
            std::thread::sleep(std::time::Duration::from_millis(50));
            // SAFETY: as above.
            let c1 = unsafe { core::arch::x86_64::_rdtsc() };
            let secs = t0.elapsed().as_secs_f64();
            let hz = (c1.wrapping_sub(c0) as f64 / secs) as u64;
            // Round to 1 MHz.
            (hz > 1_000_000).then_some(hz / 1_000_000 * 1_000_000)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }
    pub fn nanos(&self, ticks: u64) -> Option<f64> {
        self.tsc_hz.map(|hz| ticks as f64 * 1e9 / hz as f64)
    }
}

/// Build the view of one event.
pub fn view(
    seq: u64,
    ev: &Event,
    def: Option<&ProbeDef>,
    names: &dyn Names,
    clock: Clock,
) -> EventView {
    let kind = match ev.kind {
        EventKind::Kprobe => "kprobe",
        EventKind::JprobeEntry => "jprobe",
        EventKind::Capture => "capture",
        EventKind::KretprobeReturn => "kretprobe",
    };
    let function = match def {
        Some(d) => d.location.clone(),
        None => names
            .symbolize(ev.ip)
            .unwrap_or_else(|| format!("{:#x}", ev.ip)),
    };
    let args = match def {
        Some(d) if ev.kind != EventKind::Kprobe => d
            .layout
            .items
            .iter()
            .map(|i| render_item(ev, i, names))
            .collect(),
        _ => Vec::new(),
    };
    let ret = ev.ret.map(|raw| {
        let shape = def
            .and_then(|d| d.layout.ret.clone())
            .unwrap_or(Shape::Signed { size: 8 });
        let (value, mut text) = render_number(raw, &shape, names);
        let errno = match shape {
            Shape::Signed { size } => errno_name(sext(raw, size)),
            _ => None,
        };
        if let Some(e) = errno {
            text.push_str(&format!(" [{e}]"));
        }
        RetView {
            raw,
            value,
            text,
            errno,
        }
    });
    let regs = if ev.kind == EventKind::Kprobe {
        let want: Vec<u8> = match def {
            Some(d) if !d.insn_args.is_empty() => d.insn_args.clone(),
            _ => vec![0, 1, 2],
        };
        want.iter()
            .filter_map(|i| {
                let name = crate::capture::arg_reg_name(*i)?;
                Some((name.to_string(), *ev.args.get(usize::from(*i))?))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut v = EventView {
        seq,
        probe: ev.probe_id,
        kind,
        time: clock.seconds(ev.tsc),
        tsc: ev.tsc,
        cpu: ev.cpu,
        task: ev.task,
        task_name: names.task_name(ev.task),
        function,
        addr: ev.ip,
        args,
        ret,
        duration_ns: ev.duration.and_then(|d| clock.nanos(d)),
        duration_tsc: ev.duration,
        regs,
        insn: def.and_then(|d| d.insn.clone()),
        truncated: ev.truncated,
        printf: None,
    };
    if let Some(f) = def.and_then(|d| d.printf.as_ref()) {
        v.printf = Some(f.render(&v, &ev.args));
    }
    v
}

/// `3.1us`, `12ns`, `1.25ms`, `2.000s`.
pub fn human_duration(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.3}s", ns / 1e9)
    }
}

/// The one-line text form of an event (its probe's printf line when it
/// has one).
pub fn text(v: &EventView) -> String {
    if let Some(p) = &v.printf {
        return p.clone();
    }
    let when = match v.time {
        Some(t) => format!("{t:.6}"),
        None => format!("tsc={}", v.tsc),
    };
    let task = v
        .task_name
        .clone()
        .unwrap_or_else(|| format!("task{}", v.task));
    let mut s = format!("[{when} cpu{} {task}] #{} ", v.cpu, v.probe);
    if v.kind == "kprobe" {
        s.push_str(&format!("{} {:#x}", v.function, v.addr));
        if let Some(i) = &v.insn {
            s.push_str(&format!(": {i}"));
        }
        for (n, val) in &v.regs {
            s.push_str(&format!("  {n}={val:#x}"));
        }
        return s;
    }
    s.push_str(&v.function);
    s.push('(');
    let args: Vec<String> = v
        .args
        .iter()
        .map(|a| format!("{}={}", a.name, a.text))
        .collect();
    s.push_str(&args.join(", "));
    s.push(')');
    if let Some(r) = &v.ret {
        s.push_str(&format!(" = {}", r.text));
        match (v.duration_ns, v.duration_tsc) {
            (Some(ns), _) => s.push_str(&format!(" {}", human_duration(ns))),
            (None, Some(t)) => s.push_str(&format!(" {t} cycles")),
            _ => {}
        }
    }
    s
}

/// Decode one line of console output from the stub.
pub enum Line {
    Record(Box<Record>),
    BadRecord(proto::event::RecordError),
    /// Console text (the stub's `event ...` text lines, messages).
    Text(String),
}

pub fn classify(line: &str) -> Line {
    if line.starts_with(proto::event::RECORD_PREFIX) {
        match Record::decode_line(line) {
            Ok(r) => Line::Record(Box::new(r)),
            Err(e) => Line::BadRecord(e),
        }
    } else if let Some(ev) = text_line::parse(line) {
        // `stream text` mode: the readable form carries the same fields.
        Line::Record(Box::new(Record::Event(ev)))
    } else {
        Line::Text(line.to_string())
    }
}

/// The classifier for the RSP client: record lines (and readable `event`
/// lines) are events.
pub fn is_event(text: &[u8]) -> bool {
    text.starts_with(proto::event::RECORD_PREFIX.as_bytes()) || text.starts_with(b"event id=")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos() {
        assert_eq!(errno_name(-2), Some("ENOENT"));
        assert_eq!(errno_name(-22), Some("EINVAL"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(-4096), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(b"/etc/missing"), "\"/etc/missing\"");
        assert_eq!(quote(b"a\"b\n\x01"), "\"a\\\"b\\n\\x01\"");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(3100.0), "3.1us");
        assert_eq!(human_duration(12.0), "12ns");
        assert_eq!(human_duration(1_250_000.0), "1.25ms");
    }
}
