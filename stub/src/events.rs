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

static REPORTED_DROPS: AtomicU64 = AtomicU64::new(0);

/// Counters as `monitor events` reports them: produced = delivered +
/// dropped + still queued.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Ring capacity in bytes (records are variable-length).
    pub size: u64,
    pub produced: u64,
    pub delivered: u64,
    pub dropped: u64,
}

pub fn stats() -> Stats {
    let r = probes::commands::ring_stats();
    Stats {
        size: r.size,
        produced: r.produced,
        delivered: r.delivered,
        dropped: r.dropped,
    }
}

/// Calls `f` with a `drops` row for every probe that lost events.
pub fn for_each_drop(f: &mut dyn FnMut(DropsRow)) {
    let _ = probes::commands::list(&mut |p| {
        if p.dropped > 0 {
            f(DropsRow {
                id: p.id.0,
                dropped: p.dropped,
            });
        }
    });
}

/// Records the timer tick sends at most per tick (100 Hz: up to 6400
/// events/s, ten times what the UART carries), so a flood of probe hits
/// cannot stall the tick; the rest wait in the ring (or count as drops).
pub const TICK_BUDGET: usize = 64;

/// Sends at most `max` queued records as console lines: `emit` gets a
/// function that renders the line into the writer it passes (the stub's
/// writer streams it straight into an `O` packet, so a line of any length
/// reaches the host whole: a record the ring counts as delivered is one
/// the host received). Returns how many were sent. (With the stream off
/// nobody drains: records wait in the ring and, once it is full, count as
/// drops.)
pub fn drain(mode: StreamMode, max: usize, emit: &mut dyn FnMut(&Line<'_>)) -> usize {
    if mode == StreamMode::Off {
        return 0;
    }
    let mut sent = 0;
    probes::commands::drain_at_most(max, &mut |bytes| {
        if let Ok(rec) = Record::decode(bytes) {
            emit(&Line { rec: &rec, mode });
            sent += 1;
        }
    });
    // Drops that grew since the last report become records too.
    let total = probes::commands::ring_stats().dropped;
    if total != REPORTED_DROPS.swap(total, Ordering::Relaxed) {
        for_each_drop(&mut |row| {
            let rec = Record::Drops {
                probe_id: row.id,
                dropped: row.dropped,
            };
            emit(&Line { rec: &rec, mode });
        });
    }
    sent
}

/// One record to be rendered as a console line.
pub struct Line<'a> {
    rec: &'a Record,
    mode: StreamMode,
}

impl Line<'_> {
    /// Writes the line (with its `\n`) into `w`.
    pub fn write_to(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        render_to(self.rec, self.mode, w)
    }
}

/// Renders `rec` into any writer (no length limit in text mode; a record
/// line is at most `2 * MAX_RECORD + 32` bytes).
pub fn render_to(
    rec: &Record,
    mode: StreamMode,
    w: &mut dyn core::fmt::Write,
) -> core::fmt::Result {
    match mode {
        StreamMode::Off => Ok(()),
        StreamMode::Record => {
            let mut line = [0u8; 2 * MAX_RECORD + 32];
            let n = rec.encode_line(&mut line).map_err(|_| core::fmt::Error)?;
            let text = line.get(..n).ok_or(core::fmt::Error)?;
            w.write_str(core::str::from_utf8(text).map_err(|_| core::fmt::Error)?)
        }
        StreamMode::Text => match rec {
            Record::Event(e) => writeln!(w, "{e}"),
            Record::Drops { probe_id, dropped } => writeln!(
                w,
                "{}",
                DropsRow {
                    id: *probe_id,
                    dropped: *dropped
                }
            ),
        },
    }
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

/// One record as a console line (with `\n`) in a fixed buffer; `None`
/// with the stream off or when the line does not fit.
pub fn render(rec: &Record, mode: StreamMode, out: &mut [u8]) -> Option<usize> {
    if mode == StreamMode::Off {
        return None;
    }
    let mut c = Cursor { buf: out, len: 0 };
    render_to(rec, mode, &mut c).ok().map(|_| c.len)
}

#[cfg(test)]
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod long_lines {
    use super::*;
    use proto::event::{Event, EventKind};

    /// The longest text line: eight string fetches of bytes that render
    /// escaped (`\xff`, four characters each) and a full stack copy. It is
    /// longer than the fixed line buffer the stream used to render into
    /// (which lost such events while counting them delivered); the
    /// streaming writer takes it whole.
    #[test]
    fn the_longest_event_renders_whole() {
        let mut e = Event::new(u32::MAX, EventKind::KretprobeReturn);
        e.cpu = u8::MAX;
        e.task = u32::MAX;
        e.tsc = u64::MAX;
        e.ip = u64::MAX;
        e.args = [u64::MAX; 6];
        e.ret = Some(u64::MAX);
        e.duration = Some(u64::MAX);
        e.truncated = true;
        for i in 0..8u64 {
            let _ = e.push_string(0x1000 * i, &[0xff; 16]);
        }
        e.set_stack(&[0xab; proto::fetch::MAX_STACK]);
        let rec = Record::Event(e);
        let mut text = String::new();
        render_to(&rec, StreamMode::Text, &mut text).unwrap();
        assert!(text.ends_with('\n'));
        let old_buffer = 2 * MAX_RECORD + 32;
        assert!(
            text.len() > old_buffer,
            "{} <= {old_buffer}: {text}",
            text.len()
        );
        let mut fixed = [0u8; 2 * MAX_RECORD + 32];
        assert_eq!(render(&rec, StreamMode::Text, &mut fixed), None);
    }
}
