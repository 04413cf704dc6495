//! Recordings: every delivered event appended to a file, with the drops
//! at their position (format: docs/RECORDING.md).
//!
//! NDJSON, one object per line:
//! 1. a header `{"type": "recording", "format": "kdbg-recording",
//!    "version": 1, "kdbg", "started_unix", "kernel": {symbols, build_id,
//!    elf_size, elf_fnv1a64}, "clock": {tsc_hz, base}, "probes": [...]}`;
//! 2. entries: `{"type": "event", ...}` (byte for byte the line `--json`
//!    prints for the event), `{"type": "drops", "probe", "dropped" (the
//!    kernel's total), "new", "after_seq"}` for every drop report of the
//!    stub at its place in the stream, `{"type": "probe", "probe": {...}}`
//!    for a probe set while recording;
//! 3. `{"type": "end", "events", "drops", "ended_unix"}` when recording
//!    stops (absent when kdbg was killed: the reader says so).
//!
//! Lines are buffered and written out every 100 ms ([`Recorder::flush`]).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::events::{EventView, ProbeDef};
use crate::render::Render;

/// `format` of a recording's header.
pub const FORMAT: &str = "kdbg-recording";
/// The version this kdbg writes and reads.
pub const VERSION: u64 = 1;

/// Who the recording is of: the kernel ELF's identity.
pub fn kernel_identity(symbols: Option<&Path>) -> Value {
    let Some(path) = symbols else {
        return json!({});
    };
    let Ok(bytes) = std::fs::read(path) else {
        return json!({"symbols": path.display().to_string()});
    };
    let build_id = object::read::File::parse(&*bytes)
        .ok()
        .and_then(|f| object::Object::build_id(&f).ok().flatten().map(hex));
    json!({
        "symbols": path.display().to_string(),
        "build_id": build_id,
        "elf_size": bytes.len(),
        "elf_fnv1a64": format!("{:016x}", fnv1a64(&bytes)),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// FNV-1a, 64 bits: a cheap identity for an ELF without a build id.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An open recording.
pub struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
    events: u64,
    drops: u64,
    /// The stub's last reported total per probe (it repeats every
    /// probe's total whenever one grows; only growth is written).
    totals: std::collections::HashMap<u32, u64>,
}

impl Recorder {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(
        path: &Path,
        kernel: Value,
        clock: Value,
        probes: &[std::sync::Arc<ProbeDef>],
    ) -> Result<Recorder> {
        let f =
            File::create(path).map_err(|e| anyhow!("cannot record to {}: {e}", path.display()))?;
        let mut r = Recorder {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            events: 0,
            drops: 0,
            totals: Default::default(),
        };
        let probes: Vec<Value> = probes
            .iter()
            .map(|p| serde_json::to_value(&**p).unwrap_or_default())
            .collect();
        r.line(&json!({
            "type": "recording",
            "format": FORMAT,
            "version": VERSION,
            "kdbg": env!("CARGO_PKG_VERSION"),
            "started_unix": unix_now(),
            "kernel": kernel,
            "clock": clock,
            "probes": probes,
        }))
        .and_then(|_| r.flush())
        .map_err(|e| anyhow!("cannot record to {}: {e}", path.display()))?;
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn drops(&self) -> u64 {
        self.drops
    }

    fn line(&mut self, v: &Value) -> std::io::Result<()> {
        self.text(&v.to_string())
    }

    fn text(&mut self, s: &str) -> std::io::Result<()> {
        self.out.write_all(s.as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Write out what is buffered: the event thread calls it every 100 ms
    /// while events flow and twice a second otherwise, so a kill loses at
    /// most the last fraction of a second (the reader takes a cut-short
    /// last line).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// One event, as `--json` prints it.
    pub fn event(&mut self, v: &EventView) -> std::io::Result<()> {
        let r = Render {
            json: true,
            color: false,
        };
        self.text(&r.event(v))?;
        self.events += 1;
        Ok(())
    }

    /// Drops the session knew of before recording began (their growth
    /// is what gets written).
    pub fn known_drops(&mut self, totals: impl IntoIterator<Item = (u32, u64)>) {
        self.totals.extend(totals);
    }

    /// A probe was set under `probe`: the kernel counts its drops from 0.
    pub fn reset_drops(&mut self, probe: u32) {
        self.totals.remove(&probe);
    }

    /// The stub reported `total` drops of `probe` after `after_seq`
    /// events; written when it grew.
    pub fn drops_at(&mut self, probe: u32, total: u64, after_seq: u64) -> std::io::Result<()> {
        let last = self.totals.insert(probe, total).unwrap_or(0);
        let new = if total >= last { total - last } else { total };
        if new == 0 {
            return Ok(());
        }
        self.drops += new;
        self.line(&json!({
            "type": "drops",
            "probe": probe,
            "dropped": total,
            "new": new,
            "after_seq": after_seq,
        }))
    }

    /// A probe set while recording.
    pub fn probe(&mut self, def: &ProbeDef) -> std::io::Result<()> {
        self.line(&json!({"type": "probe", "probe": def}))
    }

    /// Ends the recording (the `end` line).
    pub fn finish(mut self) -> std::io::Result<(PathBuf, u64, u64)> {
        let (events, drops) = (self.events, self.drops);
        self.line(&json!({
            "type": "end",
            "events": events,
            "drops": drops,
            "ended_unix": unix_now(),
        }))?;
        self.out.flush()?;
        Ok((self.path, events, drops))
    }
}

/// An event's JSON form, read back (the views hold `&'static` names).
#[derive(serde::Deserialize)]
struct EventJson {
    seq: u64,
    probe: u32,
    kind: String,
    time: Option<f64>,
    tsc: u64,
    cpu: u8,
    task: u32,
    task_name: Option<String>,
    function: String,
    addr: u64,
    args: Vec<crate::events::ValueView>,
    ret: Option<RetJson>,
    duration_ns: Option<f64>,
    duration_tsc: Option<u64>,
    #[serde(default)]
    regs: Vec<(String, u64)>,
    insn: Option<String>,
    #[serde(default)]
    truncated: bool,
    printf: Option<String>,
}

#[derive(serde::Deserialize)]
struct RetJson {
    raw: u64,
    value: Value,
    text: String,
    errno: Option<String>,
}

/// An event from its JSON form (what `--json` prints).
pub fn event_from_json(v: Value) -> Result<EventView> {
    let e: EventJson = serde_json::from_value(v)?;
    let kind = crate::events::KINDS
        .iter()
        .find(|k| **k == e.kind)
        .copied()
        .ok_or_else(|| anyhow!("unknown event kind `{}`", e.kind))?;
    Ok(EventView {
        seq: e.seq,
        probe: e.probe,
        kind,
        time: e.time,
        tsc: e.tsc,
        cpu: e.cpu,
        task: e.task,
        task_name: e.task_name,
        function: e.function,
        addr: e.addr,
        args: e.args,
        ret: e.ret.map(|r| crate::events::RetView {
            raw: r.raw,
            value: r.value,
            text: r.text,
            errno: r.errno.as_deref().and_then(crate::events::errno_static),
        }),
        duration_ns: e.duration_ns,
        duration_tsc: e.duration_tsc,
        regs: e.regs,
        insn: e.insn,
        truncated: e.truncated,
        printf: e.printf,
    })
}

/// One entry of a recording, with the line as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Event(Box<EventView>, String),
    Drops {
        probe: u32,
        dropped: u64,
        new: u64,
        after_seq: u64,
        line: String,
    },
    Probe(Value, String),
}

/// A recording read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub header: Value,
    pub header_line: String,
    pub entries: Vec<Entry>,
    /// The `end` line, when the recording was stopped normally.
    pub end: Option<Value>,
    /// The last line was cut short (kdbg stopped while writing it).
    pub cut_short: bool,
}

impl Recording {
    pub fn events(&self) -> impl Iterator<Item = &EventView> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Event(v, _) => Some(&**v),
            _ => None,
        })
    }
}

fn field<'a>(v: &'a Value, k: &str, at: &str) -> Result<&'a Value> {
    v.get(k)
        .ok_or_else(|| anyhow!("{at}: a `{}` entry without `{k}`", v["type"]))
}

fn u64_of(v: &Value, k: &str, at: &str) -> Result<u64> {
    field(v, k, at)?
        .as_u64()
        .ok_or_else(|| anyhow!("{at}: `{k}` is not a number"))
}

/// Reads a recording.
pub fn read(path: &Path) -> Result<Recording> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lines = BufReader::new(f).split(b'\n');
    let name = path.display().to_string();
    let not_one = || {
        anyhow!(
            "{name} is not a kdbg recording: its first line is not a recording header (`record FILE` or `kdbg --record FILE` writes one)"
        )
    };
    let first = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => bail!("cannot read {name}: {e}"),
        None => return Err(not_one()),
    };
    let header_line = String::from_utf8(first).map_err(|_| not_one())?;
    let header: Value = serde_json::from_str(&header_line).map_err(|_| not_one())?;
    if header["type"] != "recording" || header["format"] != FORMAT {
        return Err(not_one());
    }
    let version = header["version"].as_u64().unwrap_or(0);
    if version != VERSION {
        bail!("{name} is a kdbg recording of version {version}; this kdbg reads version {VERSION}");
    }
    let mut rec = Recording {
        header,
        header_line,
        entries: Vec::new(),
        end: None,
        cut_short: false,
    };
    let mut lines = lines.enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let at = format!("{name}:{}", i + 2);
        let line = line.with_context(|| format!("cannot read {at}"))?;
        let last = lines.peek().is_none();
        let text = match String::from_utf8(line) {
            Ok(t) => t,
            Err(_) if last => {
                rec.cut_short = true;
                break;
            }
            Err(_) => bail!("{at}: not UTF-8 text"),
        };
        if text.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            // A kill while writing leaves a partial last line.
            Err(_) if last => {
                rec.cut_short = true;
                break;
            }
            Err(e) => bail!("{at}: not a recording entry ({e})"),
        };
        if rec.end.is_some() {
            bail!("{at}: an entry after the recording's end line");
        }
        match v["type"].as_str() {
            Some("event") => {
                let ev = event_from_json(v)
                    .map_err(|e| anyhow!("{at}: an event that does not read back ({e})"))?;
                rec.entries.push(Entry::Event(Box::new(ev), text));
            }
            Some("drops") => rec.entries.push(Entry::Drops {
                probe: u32::try_from(u64_of(&v, "probe", &at)?)
                    .map_err(|_| anyhow!("{at}: probe id out of range"))?,
                dropped: u64_of(&v, "dropped", &at)?,
                new: u64_of(&v, "new", &at)?,
                after_seq: u64_of(&v, "after_seq", &at)?,
                line: text,
            }),
            Some("probe") => rec
                .entries
                .push(Entry::Probe(field(&v, "probe", &at)?.clone(), text)),
            Some("end") => rec.end = Some(v),
            other => bail!(
                "{at}: unknown entry type {}",
                other.map_or("(none)".to_string(), |t| format!("`{t}`"))
            ),
        }
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Layout;
    use crate::events::{RetView, sample};

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kdbg-record-test-{}-{}",
            std::process::id(),
            fnv1a64(format!("{:?}", std::thread::current().id()).as_bytes())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ev(seq: u64, path: &str, ret: i64) -> EventView {
        EventView {
            seq,
            probe: 2,
            kind: "kretprobe",
            time: Some(1.25 + seq as f64 / 3.0),
            tsc: 1000 + seq,
            task: 3,
            task_name: Some("opener".into()),
            function: "sys_open".into(),
            addr: 0x18d050,
            args: vec![sample::path_arg(path)],
            ret: Some(RetView {
                text: format!("{ret}{}", if ret == -2 { " [ENOENT]" } else { "" }),
                errno: (ret == -2).then_some("ENOENT"),
                ..sample::ret(ret)
            }),
            duration_ns: Some(1234.5),
            duration_tsc: Some(2469),
            truncated: seq == 3,
            printf: (seq == 2).then(|| format!("open {path} -> {ret}")),
            ..EventView::default()
        }
    }

    fn def() -> ProbeDef {
        ProbeDef {
            id: 2,
            kind: "kretprobe",
            location: "sys_open".into(),
            addr: 0x18d050,
            layout: Layout::default(),
            insn: None,
            insn_args: Vec::new(),
            printf: None,
        }
    }

    /// Written then read: the same events, drops at their place, lines
    /// as `--json` prints them.
    #[test]
    fn round_trip() {
        let path = dir().join("rt.ndjson");
        let mut r = Recorder::create(
            &path,
            json!({"symbols": "k"}),
            json!({"tsc_hz": 1}),
            &[std::sync::Arc::new(def())],
        )
        .unwrap();
        let evs = [
            ev(1, "/etc/passwd", 3),
            ev(2, "/etc/missing", -2),
            ev(3, "/dev/null", 4),
        ];
        r.event(&evs[0]).unwrap();
        r.drops_at(2, 10, 1).unwrap();
        r.drops_at(2, 10, 1).unwrap();
        r.event(&evs[1]).unwrap();
        r.probe(&def()).unwrap();
        r.event(&evs[2]).unwrap();
        r.drops_at(2, 15, 3).unwrap();
        let (_, n, d) = r.finish().unwrap();
        assert_eq!((n, d), (3, 15));

        let rec = read(&path).unwrap();
        assert_eq!(rec.header["probes"][0]["location"], "sys_open");
        assert_eq!(rec.end.as_ref().unwrap()["events"], 3);
        assert!(!rec.cut_short);
        let got: Vec<EventView> = rec.events().cloned().collect();
        assert_eq!(got, evs.to_vec());
        let json = Render {
            json: true,
            color: false,
        };
        let kinds: Vec<String> = rec
            .entries
            .iter()
            .map(|e| match e {
                Entry::Event(v, line) => {
                    assert_eq!(*line, json.event(v), "the line is what --json prints");
                    format!("event {}", v.seq)
                }
                Entry::Drops {
                    probe,
                    new,
                    after_seq,
                    ..
                } => format!("drops #{probe} +{new} after {after_seq}"),
                Entry::Probe(p, _) => format!("probe {}", p["id"]),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "event 1",
                "drops #2 +10 after 1",
                "event 2",
                "probe 2",
                "event 3",
                "drops #2 +5 after 3"
            ]
        );
    }

    /// A recording cut short (kdbg killed) reads up to its last whole line.
    #[test]
    fn cut_short_and_refusals() {
        let d = dir();
        let path = d.join("cut.ndjson");
        let mut r = Recorder::create(&path, json!({}), json!({}), &[]).unwrap();
        r.event(&ev(1, "/x", 0)).unwrap();
        r.flush().unwrap();
        drop(r);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"type\":\"event\",\"seq\":2,\"pro");
        std::fs::write(&path, &bytes).unwrap();
        let rec = read(&path).unwrap();
        assert!(rec.cut_short && rec.end.is_none());
        assert_eq!(rec.events().count(), 1);

        let not = d.join("not.txt");
        std::fs::write(&not, "hello\n").unwrap();
        let e = read(&not).unwrap_err().to_string();
        assert!(e.ends_with("is not a kdbg recording: its first line is not a recording header (`record FILE` or `kdbg --record FILE` writes one)"), "{e}");
        std::fs::write(&not, "").unwrap();
        assert!(
            read(&not)
                .unwrap_err()
                .to_string()
                .contains("is not a kdbg recording")
        );
        std::fs::write(
            &not,
            "{\"type\":\"recording\",\"format\":\"kdbg-recording\",\"version\":9}\n",
        )
        .unwrap();
        assert!(
            read(&not)
                .unwrap_err()
                .to_string()
                .contains("of version 9; this kdbg reads version 1")
        );
        let mid = d.join("mid.ndjson");
        let mut r = Recorder::create(&mid, json!({}), json!({}), &[]).unwrap();
        r.event(&ev(1, "/x", 0)).unwrap();
        drop(r);
        let mut t = std::fs::read_to_string(&mid).unwrap();
        t.push_str("garbage\n{\"type\":\"end\",\"events\":1,\"drops\":0}\n");
        std::fs::write(&mid, t).unwrap();
        let e = read(&mid).unwrap_err().to_string();
        assert!(e.contains("mid.ndjson:3: not a recording entry"), "{e}");
        let e = Recorder::create(&d.join("no/such/dir/x"), json!({}), json!({}), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("cannot record to ") && e.contains("No such file or directory"),
            "{e}"
        );
        assert!(
            read(&d.join("absent"))
                .unwrap_err()
                .to_string()
                .starts_with("cannot open ")
        );
    }

    #[test]
    fn identity() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let p = dir().join("elf");
        std::fs::write(&p, b"not an elf").unwrap();
        let id = kernel_identity(Some(&p));
        assert_eq!(id["elf_size"], 10);
        assert!(id["build_id"].is_null());
    }
}
