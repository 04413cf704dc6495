//! Capture probes: turning a hit into an event record in the ring.
//!
//! The hit path writes a compact *raw* record straight into this CPU's ring
//! (a fixed header, the fetch results, the stack bytes): no `proto::Event`
//! is built and no checksum computed while the probed code waits. Every
//! memory read goes through the host's fault-safe read (a bad address
//! becomes a fault marker). The consumer turns raw records into
//! checksummed `proto::Record` encodings when it drains ([`to_record`]).
//!
//! Raw record (little-endian):
//!
//! ```text
//! 0   u32 probe id     4 u8 kind   5 u8 cpu   6 u8 flags   7 u8 result count
//! 8   u32 task         12 u8 stack byte count  13..16 zero
//! 16  u64 tsc          24 u64 ip   32 u64 args[6]   80 u64 ret   88 u64 duration
//! 96  results: u8 tag 0 + u64 value | tag 1 + u64 addr + u8 len + bytes | tag 2 + u64 addr
//!     stack bytes
//! ```
//! flags: bit 0 ret valid, bit 1 duration valid, bit 2 a string was truncated.

use core::sync::atomic::Ordering;

use arch::TrapFrame;
use proto::event::{FLAG_DURATION, FLAG_RET, FLAG_TRUNCATED, TAG_FAULT, TAG_STRING, TAG_VALUE};
use proto::fetch::{MAX_OPS, MAX_STACK, MAX_STRING};
use proto::{Base, CaptureSpec, Event, EventKind, FetchKind, FetchResult, Record, Reg};

use crate::host::Host;
use crate::probe::Probe;
use crate::ring::CpuRing;

/// Where the event's fields come from.
pub(crate) struct Hit<'a> {
    pub probe: &'a Probe,
    pub kind: EventKind,
    pub cpu: usize,
    pub task: u32,
    pub tsc: u64,
    pub ip: u64,
    /// The argument registers (at entry; stashed ones for returns).
    pub args: [u64; 6],
    pub ret: Option<u64>,
    pub duration: Option<u64>,
}

const HEADER: usize = 96;
const PAGE: u64 = 4096;
/// Most bytes of fetch results in one raw record.
const RESULTS_MAX: usize = MAX_OPS * (1 + 8 + 1) + proto::event::MAX_STRING_BYTES;

fn reg_value(frame: &TrapFrame, r: Reg) -> u64 {
    match r {
        Reg::Rax => frame.rax,
        Reg::Rbx => frame.rbx,
        Reg::Rcx => frame.rcx,
        Reg::Rdx => frame.rdx,
        Reg::Rsi => frame.rsi,
        Reg::Rdi => frame.rdi,
        Reg::Rbp => frame.rbp,
        Reg::Rsp => frame.rsp,
        Reg::R8 => frame.r8,
        Reg::R9 => frame.r9,
        Reg::R10 => frame.r10,
        Reg::R11 => frame.r11,
        Reg::R12 => frame.r12,
        Reg::R13 => frame.r13,
        Reg::R14 => frame.r14,
        Reg::R15 => frame.r15,
        Reg::Rip => frame.rip,
    }
}

/// Fetch results being appended to a raw record.
struct Results<'b> {
    /// Not cleared up front (under -icount every cleared byte costs an
    /// instruction): bytes `..len` are initialised, the rest never read.
    buf: &'b mut [core::mem::MaybeUninit<u8>; RESULTS_MAX],
    len: usize,
    count: u8,
    /// Base value of each result, for `$J` bases ...
    bases: [u64; MAX_OPS],
    /// ... valid where the bit is set (not for faults).
    valid: u8,
    /// Bytes of string data so far.
    string_bytes: usize,
    truncated: bool,
}

impl Results<'_> {
    /// Copies `bytes` to `buf[at..]`; only called below `len + need`,
    /// which `push` checked against the buffer's size.
    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(at..at + bytes.len()) {
            // SAFETY: `dst` is `bytes.len()` writable `MaybeUninit<u8>`s
            // (same layout as u8), disjoint from `bytes` (a local or the
            // caller's buffer, never `self.buf`).
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    dst.as_mut_ptr().cast::<u8>(),
                    bytes.len(),
                );
            }
        }
    }

    /// The results written so far.
    fn bytes(&self) -> &[u8] {
        let n = self.len.min(self.buf.len());
        // SAFETY: every byte below `len` was written by `push` (a result
        // writes all of its `need` bytes: tag, word, and for a string its
        // length byte and bytes) and `n <= buf.len()`; `MaybeUninit<u8>` has
        // the layout of `u8`.
        unsafe { core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), n) }
    }

    fn push(&mut self, tag: u8, addr_or_value: u64, string: Option<&[u8]>) {
        // Strings share MAX_STRING_BYTES: a string that does not fit is cut
        // (and flagged truncated).
        let room = proto::event::MAX_STRING_BYTES.saturating_sub(self.string_bytes);
        let string = string.map(|s| {
            if s.len() > room {
                self.truncated = true;
            }
            s.get(..room.min(s.len())).unwrap_or(&[])
        });
        let need = 1 + 8 + string.map_or(0, |s| 1 + s.len());
        if self.len + need > self.buf.len() {
            return;
        }
        let at = self.len;
        self.put(at, &[tag]);
        self.put(at + 1, &addr_or_value.to_le_bytes());
        if let Some(s) = string {
            // The cast is exact: s.len() <= MAX_STRING.
            self.put(at + 9, &[s.len() as u8]);
            self.put(at + 10, s);
        }
        self.len += need;
        self.string_bytes += string.map_or(0, <[u8]>::len);
        if let Some(b) = self.bases.get_mut(usize::from(self.count)) {
            *b = addr_or_value;
            if tag != TAG_FAULT {
                self.valid |= 1 << self.count;
            }
        }
        self.count += 1;
    }
}

/// Runs the fetch program (fault-safe reads) into `out`.
fn fetch(
    pf: &dyn Host,
    spec: &CaptureSpec,
    frame: &TrapFrame,
    args: &[u64; 6],
    out: &mut Results<'_>,
) {
    for op in spec.program.ops() {
        let base = match op.base {
            Base::Reg(r) => Some(reg_value(frame, r)),
            Base::Arg(i) => args.get(usize::from(i)).copied(),
            Base::Result(j) => out
                .bases
                .get(usize::from(j))
                .copied()
                .filter(|_| out.valid & (1u8 << (j & 7)) != 0),
        };
        let Some(base) = base else {
            out.push(TAG_FAULT, 0, None);
            continue;
        };
        let addr = base.wrapping_add_signed(op.offset);
        match op.kind {
            FetchKind::Str(limit) => {
                let mut buf = [0u8; MAX_STRING];
                let limit = usize::from(limit).min(buf.len());
                let mut n = 0;
                let mut ok = true;
                let mut ended = false;
                // Page by page: one fault-safe read per page, then look for
                // the NUL (bytes after it on a mapped page are harmless).
                while n < limit {
                    let a = addr.wrapping_add(n as u64);
                    let in_page = usize::try_from(PAGE - (a % PAGE)).unwrap_or(limit);
                    let chunk = (limit - n).min(in_page);
                    let Some(dst) = buf.get_mut(n..n + chunk) else {
                        break;
                    };
                    if !pf.read(a, dst) {
                        // Part of the chunk is unreadable: byte by byte up
                        // to the fault.
                        for (i, b) in dst.iter_mut().enumerate() {
                            if !pf.read(a.wrapping_add(i as u64), core::slice::from_mut(b)) {
                                ok = false;
                                break;
                            }
                            if *b == 0 {
                                ended = true;
                                break;
                            }
                            n += 1;
                        }
                        break;
                    }
                    if let Some(z) = dst.iter().position(|&b| b == 0) {
                        n += z;
                        ended = true;
                        break;
                    }
                    n += chunk;
                }
                if !ok && n == 0 {
                    out.push(TAG_FAULT, addr, None);
                } else {
                    out.truncated |= !ended;
                    out.push(TAG_STRING, addr, Some(buf.get(..n).unwrap_or(&[])));
                }
            }
            kind => {
                let mut b = [0u8; 8];
                let ok = b
                    .get_mut(..kind.size())
                    .is_some_and(|dst| pf.read(addr, dst));
                if ok {
                    out.push(TAG_VALUE, u64::from_le_bytes(b), None);
                } else {
                    out.push(TAG_FAULT, addr, None);
                }
            }
        }
    }
}

/// Writes the raw record of a hit (with its capture) into `ring`; counts a
/// drop on the probe when it does not fit.
pub(crate) fn record(
    pf: &dyn Host,
    ring: &CpuRing,
    hit: &Hit<'_>,
    spec: &CaptureSpec,
    frame: &TrapFrame,
    stack_at: u64,
) {
    if spec.program.is_empty() && spec.stack_bytes == 0 {
        // The common case: no buffers to clear (under -icount every byte
        // of a cleared buffer costs an instruction).
        if !ring.push_words(&header_words(hit, 0, 0, false)) {
            hit.probe.dropped.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    record_with_capture(pf, ring, hit, spec, frame, stack_at);
}

#[inline(never)]
fn record_with_capture(
    pf: &dyn Host,
    ring: &CpuRing,
    hit: &Hit<'_>,
    spec: &CaptureSpec,
    frame: &TrapFrame,
    stack_at: u64,
) {
    // A separate local: inside the struct, the compiler cleared it with
    // the other fields in one memset.
    let mut buf = [core::mem::MaybeUninit::uninit(); RESULTS_MAX];
    let mut results = Results {
        buf: &mut buf,
        len: 0,
        count: 0,
        bases: [0; MAX_OPS],
        valid: 0,
        string_bytes: 0,
        truncated: false,
    };
    if !spec.program.is_empty() {
        fetch(pf, spec, frame, &hit.args, &mut results);
    }
    let nstack = usize::from(spec.stack_bytes).min(MAX_STACK);
    if nstack == 0 {
        // No stack buffer to clear.
        push_record(ring, hit, &results, &[]);
        return;
    }
    let mut stack = [0u8; MAX_STACK];
    let ok = stack
        .get_mut(..nstack)
        .is_some_and(|dst| pf.read(stack_at, dst));
    let stack = if ok {
        stack.get(..nstack).unwrap_or(&[])
    } else {
        &[]
    };
    push_record(ring, hit, &results, stack);
}

/// Pushes header + results + stack bytes; counts a drop on the probe when
/// the record does not fit.
fn push_record(ring: &CpuRing, hit: &Hit<'_>, results: &Results<'_>, stack: &[u8]) {
    let h = header_words(hit, results.count, stack.len(), results.truncated);
    if !ring.push_words_and(&h, &[results.bytes(), stack]) {
        hit.probe.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The fixed part of a raw record, built as words (no byte-wise clearing).
#[inline(always)]
fn header_words(hit: &Hit<'_>, nresults: u8, nstack: usize, truncated: bool) -> [u64; HEADER / 8] {
    let flags = if hit.ret.is_some() { FLAG_RET } else { 0 }
        | if hit.duration.is_some() {
            FLAG_DURATION
        } else {
            0
        }
        | if truncated { FLAG_TRUNCATED } else { 0 };
    let w0 = u64::from(hit.probe.id.0)
        | u64::from(hit.kind as u8) << 32
        | u64::from(u8::try_from(hit.cpu).unwrap_or(u8::MAX)) << 40
        | u64::from(flags) << 48
        | u64::from(nresults) << 56;
    // The cast is exact: nstack <= MAX_STACK.
    let w1 = u64::from(hit.task) | u64::from(nstack as u8) << 32;
    let [a0, a1, a2, a3, a4, a5] = hit.args;
    [
        w0,
        w1,
        hit.tsc,
        hit.ip,
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        hit.ret.unwrap_or(0),
        hit.duration.unwrap_or(0),
    ]
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }
    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Some(u64::from_le_bytes(a))
    }
}

/// Decodes a raw record into an event.
pub fn to_event(raw: &[u8]) -> Option<Event> {
    let mut r = Reader { buf: raw, pos: 0 };
    let mut id = [0u8; 4];
    id.copy_from_slice(r.bytes(4)?);
    let kind = EventKind::from_code(r.u8()?)?;
    let mut ev = Event::new(u32::from_le_bytes(id), kind);
    ev.cpu = r.u8()?;
    let flags = r.u8()?;
    let count = r.u8()?;
    let mut task = [0u8; 4];
    task.copy_from_slice(r.bytes(4)?);
    ev.task = u32::from_le_bytes(task);
    let nstack = usize::from(r.u8()?);
    r.bytes(3)?;
    ev.tsc = r.u64()?;
    ev.ip = r.u64()?;
    for a in ev.args.iter_mut() {
        *a = r.u64()?;
    }
    let ret = r.u64()?;
    let duration = r.u64()?;
    ev.ret = (flags & FLAG_RET != 0).then_some(ret);
    ev.duration = (flags & FLAG_DURATION != 0).then_some(duration);
    ev.truncated = flags & FLAG_TRUNCATED != 0;
    for _ in 0..count {
        let tag = r.u8()?;
        let v = r.u64()?;
        match tag {
            TAG_VALUE => ev.push_result(FetchResult::Value(v)).ok()?,
            TAG_FAULT => ev.push_result(FetchResult::Fault { addr: v }).ok()?,
            TAG_STRING => {
                let n = usize::from(r.u8()?);
                let s = r.bytes(n)?;
                ev.push_string(v, s).ok()?;
            }
            _ => return None,
        }
    }
    ev.set_stack(r.bytes(nstack)?);
    Some(ev)
}

/// Turns a raw record into a checksummed `proto::Record` encoding in `out`.
pub(crate) fn to_record(raw: &[u8], out: &mut [u8]) -> Option<usize> {
    Record::Event(to_event(raw)?).encode(out).ok()
}
