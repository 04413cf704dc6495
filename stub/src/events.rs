//! The event stream: probe-hit records from the probe core's ring, sent to
//! the host as GDB `O` packets while the kernel runs and a debugger is
//! attached (drained from the timer tick / idle loop via [`crate::poll`]).
//!
//! The ring holds records in the binary form of [`proto::event`]. In
//! `stream text` mode each becomes a readable `event ...` line; in
//! `stream record` mode a `kdbg-record:HEX` line the shell decodes and
//! checks. Drops (ring full) are counted per probe by the ring and reported
//! by `monitor events` and as `Drops` records whenever they grow.

use core::sync::atomic::{AtomicU64, Ordering};

use proto::command::StreamMode;
use proto::event::{MAX_RECORD, Record};
use proto::reply::DropsRow;
use spin::Mutex;

/// Counters of the ring (all since boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingCounters {
    /// Capacity in records (approximate for byte rings).
    pub size: u64,
    pub produced: u64,
    pub dropped: u64,
}

/// Where records come from (the probe core installs this).
#[derive(Clone, Copy)]
pub struct EventSource {
    /// Pops one encoded record into the buffer; its length.
    pub pop: fn(&mut [u8]) -> Option<usize>,
    pub counters: fn() -> RingCounters,
    /// Calls `f(probe_id, dropped)` for every probe with drops.
    pub drops: fn(&mut dyn FnMut(u32, u64)),
}

static SOURCE: Mutex<Option<EventSource>> = Mutex::new(None);
static DELIVERED: AtomicU64 = AtomicU64::new(0);
static REPORTED_DROPS: AtomicU64 = AtomicU64::new(0);

/// Installs the record source (the probe core's ring).
pub fn set_source(src: EventSource) {
    *SOURCE.lock() = Some(src);
}

fn source() -> Option<EventSource> {
    SOURCE.try_lock().and_then(|s| *s)
}

/// Counters as `monitor events` reports them: produced = delivered +
/// dropped + still queued.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub size: u64,
    pub produced: u64,
    pub delivered: u64,
    pub dropped: u64,
}

pub fn stats() -> Stats {
    let c = source().map(|s| (s.counters)()).unwrap_or_default();
    Stats {
        size: c.size,
        produced: c.produced,
        delivered: DELIVERED.load(Ordering::Relaxed),
        dropped: c.dropped,
    }
}

/// Writes one `drops` row per probe that lost events.
pub fn for_each_drop(f: &mut dyn FnMut(DropsRow)) {
    if let Some(s) = source() {
        (s.drops)(&mut |id, dropped| f(DropsRow { id, dropped }));
    }
}

/// Sends up to `budget` records as console lines through `emit`.
/// Returns how many were sent.
pub fn drain(mode: StreamMode, budget: usize, emit: &mut dyn FnMut(&[u8])) -> usize {
    if mode == StreamMode::Off {
        return 0;
    }
    let Some(src) = source() else { return 0 };
    let mut sent = 0;
    let mut bin = [0u8; MAX_RECORD];
    let mut line = [0u8; 2 * MAX_RECORD + 32];
    while sent < budget {
        let Some(n) = (src.pop)(&mut bin) else { break };
        let Some(bytes) = bin.get(..n) else { break };
        let Ok(rec) = Record::decode(bytes) else {
            continue;
        };
        if let Some(len) = render(&rec, mode, &mut line) {
            emit(line.get(..len).unwrap_or(&[]));
        }
        DELIVERED.fetch_add(1, Ordering::Relaxed);
        sent += 1;
    }
    // Drops that grew since the last report become records too.
    let total = (src.counters)().dropped;
    if total != REPORTED_DROPS.swap(total, Ordering::Relaxed) {
        (src.drops)(&mut |probe_id, dropped| {
            let rec = Record::Drops { probe_id, dropped };
            if let Some(len) = render(&rec, mode, &mut line) {
                emit(line.get(..len).unwrap_or(&[]));
            }
        });
    }
    sent
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let dst = self
            .buf
            .get_mut(self.len..self.len + s.len())
            .ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// One record as a console line (with `\n`).
pub fn render(rec: &Record, mode: StreamMode, out: &mut [u8]) -> Option<usize> {
    use core::fmt::Write;
    match mode {
        StreamMode::Off => None,
        StreamMode::Record => rec.encode_line(out).ok(),
        StreamMode::Text => {
            let mut c = Cursor { buf: out, len: 0 };
            let r = match rec {
                Record::Event(e) => writeln!(c, "{e}"),
                Record::Drops { probe_id, dropped } => {
                    writeln!(
                        c,
                        "{}",
                        DropsRow {
                            id: *probe_id,
                            dropped: *dropped
                        }
                    )
                }
            };
            r.ok().map(|_| c.len)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proto::event::{Event, EventKind};

    #[test]
    fn renders_both_modes() {
        let mut e = Event::new(2, EventKind::KretprobeReturn);
        e.ret = Some(5);
        let rec = Record::Event(e);
        let mut out = [0u8; 2 * MAX_RECORD + 32];
        let n = render(&rec, StreamMode::Text, &mut out).unwrap();
        let s = core::str::from_utf8(&out[..n]).unwrap();
        assert!(s.starts_with("event id=2 kind=kretprobe-return") && s.ends_with('\n'));
        let n = render(&rec, StreamMode::Record, &mut out).unwrap();
        let s = core::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(Record::decode_line(s).unwrap(), rec);
        assert!(render(&rec, StreamMode::Off, &mut out).is_none());
    }
}
