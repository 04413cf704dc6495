//! Event records: what a probe hit produces, and how it crosses the wire.
//!
//! # Binary record (version 1), all integers little-endian
//!
//! ```text
//! off  size  field
//! 0    1     magic 0xD6 (MAGIC)
//! 1    1     version (1)
//! 2    1     record type: 1 = event, 2 = drops
//! 3    1     reserved (0)
//! 4    2     payload length P
//! 6    P     payload
//! 6+P  4     CRC-32 (IEEE, as zlib) of bytes 0..6+P
//! ```
//!
//! Event payload:
//!
//! ```text
//! u32 probe id | u8 kind | u8 cpu | u16 flags | u32 task | u64 tsc | u64 ip
//! u64 args[6] (rdi rsi rdx rcx r8 r9) | u64 ret | u64 duration (TSC ticks)
//! u8 result count | u8 stack byte count
//! results: u8 tag, then
//!     tag 0 value:  u64
//!     tag 1 string: u64 address, u8 len, len bytes (no NUL)
//!     tag 2 fault:  u64 address that could not be read
//! stack bytes
//! ```
//!
//! flags: bit 0 `ret` valid, bit 1 `duration` valid, bit 2 string truncated
//! (some string hit its limit before a NUL).
//!
//! Drops payload: `u32 probe id | u64 total dropped for that probe`.
//!
//! # On the GDB line
//!
//! Records travel in GDB `O` console packets while the kernel runs. In
//! `stream record` mode the console text of each packet is one line
//! `kdbg-record:HEX\n` ([`RECORD_PREFIX`]); [`Record::decode_line`] reads it.
//! In `stream text` mode (the default) the line is the readable
//! [`Event`] `Display` form, e.g.
//! `event id=3 kind=kretprobe-return cpu=0 task=2 tsc=123 ip=0x.. ret=0xfffffffffffffffe dur=310`.

use core::fmt;

use crate::fetch::{MAX_OPS, MAX_STACK, MAX_STRING};
use crate::hex;

/// First byte of every record.
pub const MAGIC: u8 = 0xD6;

/// Result tags (in records, and in the probe core's raw ring records).
pub const TAG_VALUE: u8 = 0;
pub const TAG_STRING: u8 = 1;
pub const TAG_FAULT: u8 = 2;

/// Event flags (a u16 in records, a u8 in the probe core's raw ring
/// records): `ret` valid, `duration` valid, a string stopped at its limit.
pub const FLAG_RET: u8 = 1;
pub const FLAG_DURATION: u8 = 2;
pub const FLAG_TRUNCATED: u8 = 4;
/// Record format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Prefix of a record line in `stream record` mode.
pub const RECORD_PREFIX: &str = "kdbg-record:";
/// Bytes of string data one event can carry (over all string results).
pub const MAX_STRING_BYTES: usize = 2 * MAX_STRING;
/// Largest encoded record in bytes.
pub const MAX_RECORD: usize = 6
    + 4
    + 4
    + 1
    + 1
    + 2
    + 4
    + 8
    + 8
    + 48
    + 8
    + 8
    + 2
    + MAX_OPS * 10
    + MAX_STRING_BYTES
    + MAX_STACK;

const TYPE_EVENT: u8 = 1;
const TYPE_DROPS: u8 = 2;

/// Which kind of probe hit produced the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    Kprobe = 0,
    JprobeEntry = 1,
    Capture = 2,
    KretprobeReturn = 3,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Kprobe => "kprobe",
            EventKind::JprobeEntry => "jprobe-entry",
            EventKind::Capture => "capture",
            EventKind::KretprobeReturn => "kretprobe-return",
        }
    }

    /// The kind whose `as u8` code is `c` (in records and raw ring records).
    pub fn from_code(c: u8) -> Option<Self> {
        [
            EventKind::Kprobe,
            EventKind::JprobeEntry,
            EventKind::Capture,
            EventKind::KretprobeReturn,
        ]
        .into_iter()
        .find(|k| *k as u8 == c)
    }
}

/// The result of one fetch op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchResult {
    Value(u64),
    /// A string read at `addr`: bytes `start..start+len` of [`Event::strings`].
    Str {
        addr: u64,
        start: u8,
        len: u8,
    },
    /// The read at `addr` faulted (unmapped or non-canonical).
    Fault {
        addr: u64,
    },
}

impl FetchResult {
    /// The value later ops use as a base (a string's address).
    pub fn base_value(&self) -> Option<u64> {
        match *self {
            FetchResult::Value(v) => Some(v),
            FetchResult::Str { addr, .. } => Some(addr),
            FetchResult::Fault { .. } => None,
        }
    }
}

/// One probe hit. `Copy` and fixed-size so the kernel can keep it in a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub probe_id: u32,
    pub kind: EventKind,
    pub cpu: u8,
    pub task: u32,
    pub tsc: u64,
    /// The probed address (for returns: the function's address).
    pub ip: u64,
    /// rdi, rsi, rdx, rcx, r8, r9 (for returns: as stashed at entry).
    pub args: [u64; 6],
    /// Return value (rax), when `has_ret`.
    pub ret: Option<u64>,
    /// Entry-to-return TSC ticks, when known.
    pub duration: Option<u64>,
    /// Some string result stopped at its limit before a NUL.
    pub truncated: bool,
    results: [FetchResult; MAX_OPS],
    nresults: u8,
    strings: [u8; MAX_STRING_BYTES],
    nstrings: u8,
    stack: [u8; MAX_STACK],
    nstack: u8,
}

/// Why a record could not be pushed to or read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Output buffer too small, or too many results/bytes for one event.
    Full,
    /// Input ended early.
    Truncated,
    BadMagic,
    /// A version this reader does not know; upgrade the shell or the kernel.
    BadVersion(u8),
    BadType(u8),
    BadChecksum,
    /// A field holds an impossible value (kind, tag, lengths).
    Malformed,
    /// Not hex / not a `kdbg-record:` line.
    BadHex,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Full => f.write_str("record does not fit"),
            RecordError::Truncated => f.write_str("record truncated"),
            RecordError::BadMagic => f.write_str("not a kdbg record (bad magic)"),
            RecordError::BadVersion(v) => write!(
                f,
                "record version {v} unknown (this build reads {VERSION}): use matching kernel and shell"
            ),
            RecordError::BadType(t) => write!(f, "unknown record type {t}"),
            RecordError::BadChecksum => f.write_str("record checksum mismatch (line noise?)"),
            RecordError::Malformed => f.write_str("malformed record"),
            RecordError::BadHex => f.write_str("not a kdbg-record: hex line"),
        }
    }
}

impl Event {
    /// An event with no results, stack bytes, return value or duration.
    pub const fn new(probe_id: u32, kind: EventKind) -> Self {
        Event {
            probe_id,
            kind,
            cpu: 0,
            task: 0,
            tsc: 0,
            ip: 0,
            args: [0; 6],
            ret: None,
            duration: None,
            truncated: false,
            results: [FetchResult::Value(0); MAX_OPS],
            nresults: 0,
            strings: [0; MAX_STRING_BYTES],
            nstrings: 0,
            stack: [0; MAX_STACK],
            nstack: 0,
        }
    }

    pub fn results(&self) -> &[FetchResult] {
        self.results
            .get(..usize::from(self.nresults))
            .unwrap_or(&[])
    }

    /// The bytes of a string result (empty for other results).
    pub fn string_bytes(&self, r: &FetchResult) -> &[u8] {
        match *r {
            FetchResult::Str { start, len, .. } => {
                let s = usize::from(start);
                self.strings.get(s..s + usize::from(len)).unwrap_or(&[])
            }
            _ => &[],
        }
    }

    /// Copied stack bytes above the return address.
    pub fn stack(&self) -> &[u8] {
        self.stack.get(..usize::from(self.nstack)).unwrap_or(&[])
    }

    /// Appends a value or fault result.
    pub fn push_result(&mut self, r: FetchResult) -> Result<(), RecordError> {
        let r = match r {
            FetchResult::Str { addr, .. } => FetchResult::Fault { addr },
            other => other,
        };
        self.push_raw(r)
    }

    /// Appends a string result with its bytes (cut at [`MAX_STRING`]).
    pub fn push_string(&mut self, addr: u64, bytes: &[u8]) -> Result<(), RecordError> {
        let bytes = bytes.get(..MAX_STRING).unwrap_or(bytes);
        let start = usize::from(self.nstrings);
        let dst = self
            .strings
            .get_mut(start..start + bytes.len())
            .ok_or(RecordError::Full)?;
        if usize::from(self.nresults) >= MAX_OPS {
            return Err(RecordError::Full);
        }
        dst.copy_from_slice(bytes);
        self.nstrings += bytes.len() as u8;
        self.push_raw(FetchResult::Str {
            addr,
            start: start as u8,
            len: bytes.len() as u8,
        })
    }

    fn push_raw(&mut self, r: FetchResult) -> Result<(), RecordError> {
        let slot = self
            .results
            .get_mut(usize::from(self.nresults))
            .ok_or(RecordError::Full)?;
        *slot = r;
        self.nresults += 1;
        Ok(())
    }

    /// Sets the copied stack bytes (cut at [`MAX_STACK`]).
    pub fn set_stack(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(MAX_STACK);
        if let (Some(dst), Some(src)) = (self.stack.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.nstack = n as u8;
    }
}

/// Anything that travels in the event stream.
// Kept unboxed on purpose: no_std without allocation, and records are copied
// through fixed-size rings.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    /// Total events of `probe_id` dropped so far (ring full).
    Drops {
        probe_id: u32,
        dropped: u64,
    },
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), RecordError> {
        let dst = self
            .buf
            .get_mut(self.pos..self.pos + b.len())
            .ok_or(RecordError::Full)?;
        dst.copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<(), RecordError> {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> Result<(), RecordError> {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> Result<(), RecordError> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), RecordError> {
        self.bytes(&v.to_le_bytes())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(RecordError::Truncated)?;
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

impl Record {
    /// Encodes into `out`; returns the length used (at most [`MAX_RECORD`]).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        let mut w = Writer { buf: out, pos: 0 };
        w.u8(MAGIC)?;
        w.u8(VERSION)?;
        w.u8(match self {
            Record::Event(_) => TYPE_EVENT,
            Record::Drops { .. } => TYPE_DROPS,
        })?;
        w.u8(0)?;
        w.u16(0)?; // payload length, patched below
        match self {
            Record::Event(e) => encode_event(e, &mut w)?,
            Record::Drops { probe_id, dropped } => {
                w.u32(*probe_id)?;
                w.u64(*dropped)?;
            }
        }
        let payload = u16::try_from(w.pos - 6).map_err(|_| RecordError::Full)?;
        let len_field = w.buf.get_mut(4..6).ok_or(RecordError::Full)?;
        len_field.copy_from_slice(&payload.to_le_bytes());
        let crc = crc32(w.buf.get(..w.pos).ok_or(RecordError::Full)?);
        w.u32(crc)?;
        Ok(w.pos)
    }

    /// Decodes one record that occupies all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.u8()? != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(RecordError::BadVersion(version));
        }
        let ty = r.u8()?;
        let _reserved = r.u8()?;
        let plen = usize::from(r.u16()?);
        let body_end = 6 + plen;
        if bytes.len() != body_end + 4 {
            return Err(if bytes.len() < body_end + 4 {
                RecordError::Truncated
            } else {
                RecordError::Malformed
            });
        }
        let want = crc32(bytes.get(..body_end).ok_or(RecordError::Truncated)?);
        let mut tail = Reader {
            buf: bytes,
            pos: body_end,
        };
        if tail.u32()? != want {
            return Err(RecordError::BadChecksum);
        }
        let mut body = Reader {
            buf: bytes.get(..body_end).ok_or(RecordError::Truncated)?,
            pos: 6,
        };
        let rec = match ty {
            TYPE_EVENT => Record::Event(decode_event(&mut body)?),
            TYPE_DROPS => Record::Drops {
                probe_id: body.u32()?,
                dropped: body.u64()?,
            },
            t => return Err(RecordError::BadType(t)),
        };
        if body.pos != body_end {
            return Err(RecordError::Malformed);
        }
        Ok(rec)
    }

    /// Writes the `kdbg-record:HEX\n` line into `out`; returns its length.
    pub fn encode_line(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        let mut bin = [0u8; MAX_RECORD];
        let n = self.encode(&mut bin)?;
        let p = RECORD_PREFIX.len();
        out.get_mut(..p)
            .ok_or(RecordError::Full)?
            .copy_from_slice(RECORD_PREFIX.as_bytes());
        let hex_out = out.get_mut(p..p + 2 * n).ok_or(RecordError::Full)?;
        hex::encode(bin.get(..n).ok_or(RecordError::Full)?, hex_out);
        *out.get_mut(p + 2 * n).ok_or(RecordError::Full)? = b'\n';
        Ok(p + 2 * n + 1)
    }

    /// Reads a `kdbg-record:HEX` line (trailing whitespace ignored).
    pub fn decode_line(line: &str) -> Result<Record, RecordError> {
        let h = line
            .trim_end()
            .strip_prefix(RECORD_PREFIX)
            .ok_or(RecordError::BadHex)?;
        let mut bin = [0u8; MAX_RECORD];
        let n = hex::decode(h.as_bytes(), &mut bin).ok_or(RecordError::BadHex)?;
        Record::decode(bin.get(..n).ok_or(RecordError::BadHex)?)
    }
}

fn encode_event(e: &Event, w: &mut Writer<'_>) -> Result<(), RecordError> {
    let flag = |on: bool, f: u8| if on { u16::from(f) } else { 0 };
    let flags = flag(e.ret.is_some(), FLAG_RET)
        | flag(e.duration.is_some(), FLAG_DURATION)
        | flag(e.truncated, FLAG_TRUNCATED);
    w.u32(e.probe_id)?;
    w.u8(e.kind as u8)?;
    w.u8(e.cpu)?;
    w.u16(flags)?;
    w.u32(e.task)?;
    w.u64(e.tsc)?;
    w.u64(e.ip)?;
    for a in e.args {
        w.u64(a)?;
    }
    w.u64(e.ret.unwrap_or(0))?;
    w.u64(e.duration.unwrap_or(0))?;
    w.u8(e.nresults)?;
    w.u8(e.nstack)?;
    for r in e.results() {
        match *r {
            FetchResult::Value(v) => {
                w.u8(TAG_VALUE)?;
                w.u64(v)?;
            }
            FetchResult::Str { addr, .. } => {
                let bytes = e.string_bytes(r);
                w.u8(TAG_STRING)?;
                w.u64(addr)?;
                w.u8(bytes.len() as u8)?;
                w.bytes(bytes)?;
            }
            FetchResult::Fault { addr } => {
                w.u8(TAG_FAULT)?;
                w.u64(addr)?;
            }
        }
    }
    w.bytes(e.stack())
}

fn decode_event(r: &mut Reader<'_>) -> Result<Event, RecordError> {
    let probe_id = r.u32()?;
    let kind = EventKind::from_code(r.u8()?).ok_or(RecordError::Malformed)?;
    let mut e = Event::new(probe_id, kind);
    e.cpu = r.u8()?;
    let flags = r.u16()?;
    e.task = r.u32()?;
    e.tsc = r.u64()?;
    e.ip = r.u64()?;
    for a in e.args.iter_mut() {
        *a = r.u64()?;
    }
    let ret = r.u64()?;
    let dur = r.u64()?;
    let has = |f: u8| flags & u16::from(f) != 0;
    e.ret = has(FLAG_RET).then_some(ret);
    e.duration = has(FLAG_DURATION).then_some(dur);
    e.truncated = has(FLAG_TRUNCATED);
    let nresults = r.u8()?;
    let nstack = usize::from(r.u8()?);
    if usize::from(nresults) > MAX_OPS || nstack > MAX_STACK {
        return Err(RecordError::Malformed);
    }
    for _ in 0..nresults {
        match r.u8()? {
            TAG_VALUE => e.push_result(FetchResult::Value(r.u64()?))?,
            TAG_STRING => {
                let addr = r.u64()?;
                let len = usize::from(r.u8()?);
                if len > MAX_STRING {
                    return Err(RecordError::Malformed);
                }
                let bytes = r.bytes(len)?;
                e.push_string(addr, bytes)
                    .map_err(|_| RecordError::Malformed)?;
            }
            TAG_FAULT => e.push_result(FetchResult::Fault { addr: r.u64()? })?,
            _ => return Err(RecordError::Malformed),
        }
    }
    e.set_stack(r.bytes(nstack)?);
    Ok(e)
}

/// The readable one-line form (`stream text`), no trailing newline:
/// `event id=3 kind=capture cpu=0 task=2 tsc=.. ip=0x.. args=0x1,0x2,.. [ret=0x..] [dur=N] [fetch=0x10,"str",<fault@0x..>] [stack=HEX]`
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event id={} kind={} cpu={} task={} tsc={} ip={:#x} args=",
            self.probe_id,
            self.kind.as_str(),
            self.cpu,
            self.task,
            self.tsc,
            self.ip
        )?;
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a:#x}")?;
        }
        if let Some(r) = self.ret {
            write!(f, " ret={r:#x}")?;
        }
        if let Some(d) = self.duration {
            write!(f, " dur={d}")?;
        }
        if self.nresults > 0 {
            f.write_str(" fetch=")?;
            for (i, r) in self.results().iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                match *r {
                    FetchResult::Value(v) => write!(f, "{v:#x}")?,
                    FetchResult::Fault { addr } => write!(f, "<fault@{addr:#x}>")?,
                    FetchResult::Str { .. } => {
                        f.write_str("\"")?;
                        for &b in self.string_bytes(r) {
                            if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
                                write!(f, "{}", b as char)?;
                            } else {
                                write!(f, "\\x{b:02x}")?;
                            }
                        }
                        f.write_str("\"")?;
                    }
                }
            }
        }
        if self.nstack > 0 {
            f.write_str(" stack=")?;
            for b in self.stack() {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut e = Event::new(7, EventKind::Capture);
        e.cpu = 1;
        e.task = 3;
        e.tsc = 123_456_789;
        e.ip = 0xffff_ffff_8010_0010;
        e.args = [0x11, 0xffff_8000, 2, 3, 4, 5];
        e.push_result(FetchResult::Value(0x4242)).unwrap();
        e.push_string(0x1000, b"/etc/missing").unwrap();
        e.push_result(FetchResult::Fault { addr: 0xdead_0000 })
            .unwrap();
        e.set_stack(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        e
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn event_round_trips() {
        let mut e = sample();
        let mut buf = [0u8; MAX_RECORD];
        let n = Record::Event(e).encode(&mut buf).unwrap();
        assert_eq!(Record::decode(&buf[..n]).unwrap(), Record::Event(e));
        e.kind = EventKind::KretprobeReturn;
        e.ret = Some((-2i64) as u64);
        e.duration = Some(310);
        let n = Record::Event(e).encode(&mut buf).unwrap();
        assert_eq!(Record::decode(&buf[..n]).unwrap(), Record::Event(e));
        let d = Record::Drops {
            probe_id: 4,
            dropped: 99,
        };
        let n = d.encode(&mut buf).unwrap();
        assert_eq!(Record::decode(&buf[..n]).unwrap(), d);
    }

    #[test]
    fn full_event_fits_max_record() {
        let mut e = Event::new(1, EventKind::Capture);
        e.push_string(1, &[b'a'; 64]).unwrap();
        e.push_string(2, &[b'b'; 64]).unwrap();
        assert_eq!(e.push_string(3, b"c"), Err(RecordError::Full));
        for i in 2..MAX_OPS {
            e.push_result(FetchResult::Fault { addr: i as u64 })
                .unwrap();
        }
        assert_eq!(e.push_result(FetchResult::Value(0)), Err(RecordError::Full));
        e.set_stack(&[0xAA; 100]);
        e.ret = Some(1);
        let mut buf = [0u8; MAX_RECORD];
        let n = Record::Event(e).encode(&mut buf).unwrap();
        assert!(n <= MAX_RECORD);
        assert_eq!(Record::decode(&buf[..n]).unwrap(), Record::Event(e));
        let mut small = [0u8; 40];
        assert_eq!(Record::Event(e).encode(&mut small), Err(RecordError::Full));
    }

    #[test]
    fn line_round_trips() {
        let e = sample();
        let mut line = [0u8; 2 * MAX_RECORD + 32];
        let n = Record::Event(e).encode_line(&mut line).unwrap();
        let s = core::str::from_utf8(&line[..n]).unwrap();
        assert!(s.starts_with(RECORD_PREFIX) && s.ends_with('\n'));
        assert_eq!(Record::decode_line(s).unwrap(), Record::Event(e));
    }

    #[test]
    fn corruption_is_detected() {
        let mut buf = [0u8; MAX_RECORD];
        let n = Record::Event(sample()).encode(&mut buf).unwrap();
        for i in 0..n {
            let mut c = buf;
            c[i] ^= 0x01;
            assert!(Record::decode(&c[..n]).is_err(), "flip at {i}");
        }
        for len in 0..n {
            assert!(Record::decode(&buf[..len]).is_err());
        }
        buf[1] = 9;
        assert_eq!(Record::decode(&buf[..n]), Err(RecordError::BadVersion(9)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0xdead_beef_u64;
        let mut buf = [0u8; MAX_RECORD];
        let n = Record::Event(sample()).encode(&mut buf).unwrap();
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut c = buf;
            // Corrupt a few bytes and fix the checksum so the body parser runs.
            for k in 0..3 {
                let i = 6 + ((seed >> (k * 16)) as usize % (n - 10));
                c[i] = (seed >> (k * 8)) as u8;
            }
            let len = (seed >> 40) as usize % (n + 1);
            let body = len.saturating_sub(4);
            if body >= 6 {
                let plen = (body - 6) as u16;
                c[4..6].copy_from_slice(&plen.to_le_bytes());
                let crc = crc32(&c[..body]);
                c[body..body + 4].copy_from_slice(&crc.to_le_bytes());
            }
            let _ = Record::decode(&c[..len]);
            let _ = Record::decode_line(core::str::from_utf8(&c[..len]).unwrap_or("x"));
        }
    }

    #[test]
    fn display_is_one_readable_line() {
        let mut e = sample();
        e.kind = EventKind::KretprobeReturn;
        e.ret = Some(0xfffffffffffffffe);
        e.duration = Some(10);
        let s = e.to_string();
        assert!(!s.contains('\n'));
        assert!(s.starts_with("event id=7 kind=kretprobe-return cpu=1 task=3"));
        assert!(s.contains("ret=0xfffffffffffffffe dur=10"));
        assert!(s.contains("fetch=0x4242,\"/etc/missing\",<fault@0xdead0000>"));
        let row = crate::reply::Row::parse(&s).unwrap();
        assert_eq!(row.kind, "event");
        assert_eq!(row.num("id"), Some(7));
    }
}
