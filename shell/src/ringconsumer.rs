//! The direct event consumer (issue 17, docs/design/shm.md): reads the
//! probe core's per-CPU rings from guest RAM through the shared mapping,
//! hands the records to the event thread, and publishes its consumer
//! position, while the stub no longer streams them over the UART
//! (`monitor shm direct`).
//!
//! Per ring and pass: load `head` (Acquire), decode the records between
//! `tail` and `head`, take them with a compare-and-swap of `tail` (a stub
//! that took the rings back meanwhile wins, and the batch is dropped here:
//! the stub sends those records as `O` packets), then add their number to
//! the ring's `direct` counter. Each pass bumps the heartbeat the stub's
//! watchdog looks at; when the consumer word no longer holds this
//! consumer's epoch (the stub took the rings back), the thread ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use proto::event::Event;
use proto::reply::ShmRow;

use crate::guestmem::GuestMem;
use crate::rsp::Async;

/// Counters of the direct consumer (shown by `info channel`, used by tests).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Records taken from the rings.
    pub taken: AtomicU64,
    /// Records that did not decode (counted, not shown).
    pub bad: AtomicU64,
    /// Batches lost to the stub's compare-and-swap (it took the rings back).
    pub lost_races: AtomicU64,
    /// Passes over the rings.
    pub passes: AtomicU64,
    /// Why the consumer stopped, once it did.
    pub ended: std::sync::Mutex<Option<String>>,
}

/// One ring's words, resolved to physical addresses once.
struct Ring {
    head: u64,
    tail: u64,
    direct: u64,
    /// Physical address of each 4 KiB page of the buffer, in order.
    buf_pages: Vec<u64>,
    buf_va: u64,
    size: u64,
}

/// A running consumer thread; dropping it stops the thread.
pub struct Consumer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<ConsumerStats>,
    pub epoch: u64,
}

impl Consumer {
    /// Starts consuming for `epoch` (from `monitor shm direct`). Fails when
    /// the rings are not in mapped RAM.
    pub fn start(g: Arc<GuestMem>, row: &ShmRow, sink: Sender<Async>) -> Result<Consumer, String> {
        let rings = resolve(&g, row)?;
        let consumer = g
            .phys_of(row.consumer)
            .map_err(|e| format!("consumer word: {e:?}"))?
            .0;
        let beat = g
            .phys_of(row.beat)
            .map_err(|e| format!("heartbeat word: {e:?}"))?
            .0;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ConsumerStats::default());
        let epoch = row.epoch;
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("ring-consumer".into())
                .spawn(move || run(&g, &rings, consumer, beat, epoch, &stop, &stats, &sink))
                .map_err(|e| e.to_string())?
        };
        Ok(Consumer {
            stop,
            thread: Some(thread),
            stats,
            epoch,
        })
    }

    /// Is the thread still consuming?
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread after its current pass and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn resolve(g: &GuestMem, row: &ShmRow) -> Result<Vec<Ring>, String> {
    let mut out = Vec::new();
    for cpu in 0..row.cpus {
        let base = row.rings + cpu * row.stride;
        let word = |off: u64, what: &str| -> Result<u64, String> {
            let (p, _) = g
                .phys_of(base + off)
                .map_err(|e| format!("ring {cpu} {what}: {e:?}"))?;
            if p % 8 != 0 {
                return Err(format!("ring {cpu} {what} is not 8-byte aligned"));
            }
            Ok(p)
        };
        let buf_va = base + row.buf;
        let mut buf_pages = Vec::new();
        let first = buf_va & !0xfff;
        let mut va = first;
        while va < buf_va + row.size {
            let (p, _) = g
                .phys_of(va.max(buf_va))
                .map_err(|e| format!("ring {cpu} buffer: {e:?}"))?;
            buf_pages.push(p & !0xfff);
            va += 0x1000;
        }
        out.push(Ring {
            head: word(row.head, "head")?,
            tail: word(row.tail, "tail")?,
            direct: word(row.direct, "direct")?,
            buf_pages,
            buf_va,
            size: row.size,
        });
    }
    Ok(out)
}

impl Ring {
    /// Copies ring bytes at position `pos` (wrapping) into `out`.
    fn read(&self, g: &GuestMem, pos: u64, out: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < out.len() {
            let idx = (pos + done as u64) % self.size;
            let va = self.buf_va + idx;
            let page = ((va & !0xfff) - (self.buf_va & !0xfff)) / 0x1000;
            let Some(pp) = self.buf_pages.get(page as usize) else {
                return false;
            };
            let in_page = 0x1000 - (va & 0xfff);
            let in_ring = self.size - idx;
            let n = (in_page.min(in_ring) as usize).min(out.len() - done);
            if !g.map.read_phys(pp + (va & 0xfff), &mut out[done..done + n]) {
                return false;
            }
            done += n;
        }
        true
    }
}

/// Pause after a pass that found nothing: short, because a 16 KiB ring
/// holds ~150 records and a probe on a hot function fills it in about a
/// millisecond under TCG.
const IDLE: Duration = Duration::from_micros(100);

/// Longest raw record the ring takes (`probes::ring::MAX_RECORD`).
const MAX_RAW: usize = probes::ring::MAX_RECORD;

#[allow(clippy::too_many_arguments)]
fn run(
    g: &GuestMem,
    rings: &[Ring],
    consumer: u64,
    beat: u64,
    epoch: u64,
    stop: &AtomicBool,
    stats: &ConsumerStats,
    sink: &Sender<Async>,
) {
    let (Some(consumer), Some(beat)) = (g.map.atomic_u64(consumer), g.map.atomic_u64(beat)) else {
        return;
    };
    let end = |why: &str| {
        if let Ok(mut e) = stats.ended.lock() {
            *e = Some(why.to_string());
        }
    };
    let mut raw = vec![0u8; MAX_RAW];
    let mut batch: Vec<Event> = Vec::new();
    // One pass's events of every CPU's ring, merged by timestamp.
    let mut merged: Vec<Event> = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return end("stopped by the shell");
        }
        beat.fetch_add(1, Ordering::Release);
        if consumer.load(Ordering::Acquire) != epoch {
            return end("the stub took the rings back");
        }
        stats.passes.fetch_add(1, Ordering::Relaxed);
        let mut any = false;
        for r in rings {
            let (Some(head), Some(tail), Some(direct)) = (
                g.map.atomic_u64(r.head),
                g.map.atomic_u64(r.tail),
                g.map.atomic_u64(r.direct),
            ) else {
                return end("ring words outside the mapping");
            };
            let h = head.load(Ordering::Acquire);
            let t0 = tail.load(Ordering::Acquire);
            let mut t = t0;
            let mut n = 0u64;
            let mut bad = 0u64;
            while t != h {
                let mut len = [0u8; 2];
                if !r.read(g, t, &mut len) {
                    return end("ring buffer outside the mapping");
                }
                let len = u64::from(u16::from_le_bytes(len));
                if len as usize > MAX_RAW || h.wrapping_sub(t) < 2 + len {
                    return end("a ring record is inconsistent (length past head)");
                }
                let rec = &mut raw[..len as usize];
                if !r.read(g, t + 2, rec) {
                    return end("ring buffer outside the mapping");
                }
                match probes::commands::decode_raw(rec) {
                    Some(ev) => batch.push(ev),
                    None => bad += 1,
                }
                t = t.wrapping_add(2 + len);
                n += 1;
            }
            if n == 0 {
                continue;
            }
            // Take the records (the stub may have taken the rings back and
            // popped some: then they are its, and this batch is dropped).
            if tail
                .compare_exchange(t0, t, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                stats.lost_races.fetch_add(1, Ordering::Relaxed);
                batch.clear();
                continue;
            }
            direct.fetch_add(n, Ordering::Release);
            stats.taken.fetch_add(n, Ordering::Relaxed);
            stats.bad.fetch_add(bad, Ordering::Relaxed);
            any = true;
            merged.append(&mut batch);
        }
        if !merged.is_empty() {
            merge_by_tsc(&mut merged);
            if sink
                .send(Async::Events(std::mem::take(&mut merged)))
                .is_err()
            {
                return end("the event thread is gone");
            }
        }
        if !any {
            std::thread::sleep(IDLE);
        }
    }
}

/// Orders one pass's events (each CPU's ring oldest first, one ring after
/// the other) by timestamp across CPUs; events with equal timestamps keep
/// their ring order (a stable sort), so each CPU's order is never changed.
/// The TSC is one clock for every vCPU under QEMU; see docs/SMP.md, "Event
/// order".
fn merge_by_tsc(events: &mut [Event]) {
    events.sort_by_key(|e| e.tsc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::event::EventKind;

    fn ev(probe: u32, cpu: u8, tsc: u64) -> Event {
        let mut e = Event::new(probe, EventKind::Kprobe);
        e.cpu = cpu;
        e.tsc = tsc;
        e
    }

    #[test]
    fn a_pass_is_merged_by_timestamp_and_keeps_each_cpus_order() {
        // CPU 0's ring, then CPU 1's, each oldest first, as a pass reads
        // them; probes 3 and 4 share a timestamp and keep their ring order.
        let mut pass = vec![
            ev(1, 0, 10),
            ev(2, 0, 30),
            ev(3, 0, 40),
            ev(5, 1, 20),
            ev(4, 1, 40),
            ev(6, 1, 50),
        ];
        merge_by_tsc(&mut pass);
        let order: Vec<(u32, u8)> = pass.iter().map(|e| (e.probe_id, e.cpu)).collect();
        assert_eq!(order, vec![(1, 0), (5, 1), (2, 0), (3, 0), (4, 1), (6, 1)]);
    }
}
