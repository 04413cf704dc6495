//! What the stub's `monitor` commands use: probes that record events
//! (the stub's kprobes, jprobe captures, kretprobe captures), the ring's
//! counters, and draining the ring.

use alloc::boxed::Box;

use proto::agg::AggSpec;
use proto::bytecode::Program;
use proto::{CaptureSpec, EventKind};

use crate::kretprobe::ReturnAction;
use crate::map::{Map, MapInfo};
use crate::probe::{Action, Probe};
use crate::register::At;
use crate::ring::RingStats;
use crate::{CORE, Core, ProbeError, ProbeId};

impl Core {
    /// A kprobe at `at` that records an event (probe, CPU, task, time, ip,
    /// argument registers) per hit where the predicate `pred` holds (none:
    /// every hit); with `agg`, hits update the probe's map in the kernel and
    /// record nothing.
    pub fn capture_kprobe(
        &self,
        at: At<'_>,
        pred: Option<Program>,
        agg: Option<AggSpec>,
    ) -> Result<ProbeId, ProbeError> {
        self.add(at, false, |id, addr, sym, pf| {
            let action = Action::Record {
                kind: EventKind::Kprobe,
                spec: CaptureSpec::default(),
            };
            let mut p = Probe::new(id, addr, sym.name, addr - sym.start, 0, action);
            p.pred = pred.map(Box::new);
            p.map = crate::map::make(agg.as_ref(), pf)?;
            Ok(p)
        })
    }

    /// An entry capture at a function's first byte: argument registers,
    /// `spec.stack_bytes` of stack above the return address, and the
    /// results of `spec.program`, recorded where `pred` holds (none: every
    /// hit); with `agg`, hits update the probe's map.
    pub fn capture_entry(
        &self,
        at: At<'_>,
        spec: CaptureSpec,
        pred: Option<Program>,
        agg: Option<AggSpec>,
    ) -> Result<ProbeId, ProbeError> {
        self.add(at, true, |id, addr, sym, pf| {
            let action = Action::Record {
                kind: EventKind::JprobeEntry,
                spec,
            };
            let mut p = Probe::new(id, addr, sym.name, 0, 0, action);
            p.pred = pred.map(Box::new);
            p.map = crate::map::make(agg.as_ref(), pf)?;
            Ok(p)
        })
    }

    /// A return capture: the return value, the arguments stashed at entry,
    /// the entry-to-return time, and `spec` evaluated at the return (argI
    /// bases are the stashed arguments), recorded where `pred` (evaluated at
    /// the return) holds; with `agg`, returns update the probe's map (key
    /// and value see `ret`, `$duration` and the stashed arguments).
    /// `maxactive` `None`: the default.
    pub fn capture_return(
        &self,
        at: At<'_>,
        maxactive: Option<u32>,
        spec: CaptureSpec,
        pred: Option<Program>,
        agg: Option<AggSpec>,
    ) -> Result<ProbeId, ProbeError> {
        self.add_kretprobe(
            at,
            maxactive.unwrap_or(0),
            0,
            0,
            ReturnAction::Record(spec),
            pred,
            agg,
        )
    }

    /// Calls `f` with the id and counters of every aggregating probe's map.
    pub fn maps(&self, f: &mut dyn FnMut(ProbeId, &MapInfo)) -> Result<(), ProbeError> {
        let list = self.map_probes()?;
        for p in &list {
            if let Some(m) = p.map.as_deref() {
                f(p.id, &m.info());
            }
        }
        Ok(())
    }

    /// Runs `f` on the map of probe `id` (outside the registry lock; the
    /// probe stays alive while `f` runs).
    pub fn with_map<R>(&self, id: ProbeId, f: impl FnOnce(&Map) -> R) -> Result<R, ProbeError> {
        let p = self.probe_arc(id)?;
        let m = p.map.as_deref().ok_or(ProbeError::NoMap)?;
        Ok(f(m))
    }

    /// Hands the rings to a consumer outside the kernel (`on`, returns its
    /// epoch, odd, never 0) or back to the stub (`off`, returns 0). Taken under
    /// the drain lock, so no stub drain is in progress at the switch.
    /// Either consumer takes a record only by moving `tail` with a
    /// compare-and-swap, so a record goes to exactly one of them even when
    /// the switch races a consumer's last batch.
    pub fn set_direct(&self, on: bool) -> u64 {
        use core::sync::atomic::Ordering;
        let _consumer = self.drain_lock.lock();
        // The word is `epoch << 1 | direct`: each hand-over to a direct
        // consumer gets a new epoch, so a consumer from an earlier one sees
        // it is no longer the consumer; a hand-back clears the low bit.
        let now = self.consumer.load(Ordering::Relaxed);
        let epoch = if on {
            (((now >> 1).wrapping_add(1)) << 1) | 1
        } else {
            now & !1
        };
        self.consumer.store(epoch, Ordering::Release);
        if on { epoch } else { 0 }
    }

    /// The direct consumer's epoch (0: the stub drains).
    pub fn direct_consumer(&self) -> u64 {
        let w = self.consumer.load(core::sync::atomic::Ordering::Acquire);
        if w & 1 != 0 { w } else { 0 }
    }

    /// The direct consumer's heartbeat.
    pub fn direct_beat(&self) -> u64 {
        self.beat.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Where the rings and the consumer words are (virtual addresses), for
    /// a consumer that reads guest memory directly.
    pub fn shm_layout(&self) -> ShmLayout {
        ShmLayout {
            rings: self.rings.as_ptr() as u64,
            cpus: self.rings.len(),
            ring: crate::ring::layout(),
            consumer: core::ptr::from_ref(&self.consumer) as u64,
            beat: core::ptr::from_ref(&self.beat) as u64,
        }
    }

    /// The counters of all rings together.
    pub fn ring_stats(&self) -> RingStats {
        self.rings
            .iter()
            .fold(RingStats::default(), |acc, r| acc.plus(r.stats()))
    }

    /// Moves every queued record to `f` as an encoded `proto::Record`, the
    /// CPUs' rings merged by timestamp (each CPU's records in order; equal
    /// stamps: the lower CPU first). Returns how many were delivered.
    pub fn drain(&self, f: &mut dyn FnMut(&[u8])) -> usize {
        self.drain_at_most(usize::MAX, f)
    }

    /// Like [`Core::drain`], but moves at most `max` records (the rest stay
    /// queued, counted as neither delivered nor dropped), so a caller with a
    /// time budget (the timer tick) is never stalled by a flood. Returns how
    /// many were taken off the rings.
    pub fn drain_at_most(&self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let _consumer = self.drain_lock.lock();
        // A direct consumer reads the rings itself (shared memory).
        if self.direct_consumer() != 0 {
            return 0;
        }
        let mut raw = [0u8; crate::ring::MAX_RECORD];
        let mut out = [0u8; proto::event::MAX_RECORD];
        let mut n = 0;
        while n < max {
            // The ring whose oldest record is the oldest of all (the first
            // such ring on a tie): a merge of the per-CPU rings by TSC.
            let Some((_, ring)) = self
                .rings
                .iter()
                .filter_map(|r| r.peek_tsc().map(|t| (t, r)))
                .min_by_key(|(t, _)| *t)
            else {
                break;
            };
            let Some(len) = ring.pop(&mut raw) else {
                // Emptied meanwhile (a direct consumer took it): look again.
                continue;
            };
            // Raw records become checksummed proto records here, off the
            // hit path.
            if let Some(m) = raw
                .get(..len)
                .and_then(|r| crate::recorder::to_record(r, &mut out))
            {
                f(out.get(..m).unwrap_or(&[]));
            }
            n += 1;
        }
        n
    }
}

/// Where a direct consumer finds the per-CPU rings (see [`Core::shm_layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmLayout {
    /// Virtual address of CPU 0's ring; CPU `i`'s is `rings + i * ring.stride`.
    pub rings: u64,
    pub cpus: usize,
    pub ring: crate::ring::RingLayout,
    /// Virtual address of the consumer word (u64): the direct consumer's
    /// epoch when odd; even: the stub drains.
    pub consumer: u64,
    /// Virtual address of the consumer's heartbeat word (u64).
    pub beat: u64,
}

/// See [`Core::set_direct`].
pub fn set_direct(on: bool) -> u64 {
    CORE.set_direct(on)
}

/// See [`Core::direct_consumer`].
pub fn direct_consumer() -> u64 {
    CORE.direct_consumer()
}

/// See [`Core::direct_beat`].
pub fn direct_beat() -> u64 {
    CORE.direct_beat()
}

/// See [`Core::shm_layout`].
pub fn shm_layout() -> ShmLayout {
    CORE.shm_layout()
}

/// Decodes a raw ring record (the bytes after its 2-byte length) into an
/// event: what the stub does before sending it, and what a direct consumer
/// does with the bytes it reads from guest memory.
pub fn decode_raw(raw: &[u8]) -> Option<proto::event::Event> {
    crate::recorder::to_event(raw)
}

/// See [`Core::capture_kprobe`].
pub fn kprobe(at: At<'_>) -> Result<ProbeId, ProbeError> {
    CORE.capture_kprobe(at, None, None)
}

/// See [`Core::capture_kprobe`].
pub fn kprobe_if(at: At<'_>, pred: Option<Program>) -> Result<ProbeId, ProbeError> {
    CORE.capture_kprobe(at, pred, None)
}

/// See [`Core::capture_entry`].
pub fn jprobe_if(
    at: At<'_>,
    spec: CaptureSpec,
    pred: Option<Program>,
) -> Result<ProbeId, ProbeError> {
    CORE.capture_entry(at, spec, pred, None)
}

/// See [`Core::capture_return`].
pub fn kretprobe_if(
    at: At<'_>,
    maxactive: Option<u32>,
    spec: CaptureSpec,
    pred: Option<Program>,
) -> Result<ProbeId, ProbeError> {
    CORE.capture_return(at, maxactive, spec, pred, None)
}

/// See [`Core::capture_entry`].
pub fn jprobe(at: At<'_>, spec: CaptureSpec) -> Result<ProbeId, ProbeError> {
    CORE.capture_entry(at, spec, None, None)
}

/// See [`Core::capture_return`].
pub fn kretprobe(
    at: At<'_>,
    maxactive: Option<u32>,
    spec: CaptureSpec,
) -> Result<ProbeId, ProbeError> {
    CORE.capture_return(at, maxactive, spec, None, None)
}

/// Calls `f` with every probe's row.
pub fn list(f: &mut dyn FnMut(&crate::ProbeInfo)) -> Result<(), ProbeError> {
    CORE.list(f)
}

/// Ring counters: size, produced, delivered, dropped.
pub fn ring_stats() -> RingStats {
    CORE.ring_stats()
}

/// Drains queued event records.
pub fn drain(f: &mut dyn FnMut(&[u8])) -> usize {
    CORE.drain(f)
}

/// Drains at most `max` queued event records (see [`Core::drain_at_most`]).
pub fn drain_at_most(max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
    CORE.drain_at_most(max, f)
}

/// Outstanding kretprobe instances of `task`: `f(function, stack_slot, real_return)`.
pub fn instances(task: u32, f: &mut dyn FnMut(u64, u64, u64)) {
    CORE.for_each_instance(task, f);
}

/// Tasks that have outstanding kretprobe instances.
pub fn tasks(f: &mut dyn FnMut(u32)) {
    CORE.tasks_with_instances(f);
}

/// See [`Core::capture_kprobe`].
pub fn kprobe_agg(
    at: At<'_>,
    pred: Option<Program>,
    agg: Option<AggSpec>,
) -> Result<ProbeId, ProbeError> {
    CORE.capture_kprobe(at, pred, agg)
}

/// See [`Core::capture_entry`].
pub fn jprobe_agg(
    at: At<'_>,
    spec: CaptureSpec,
    pred: Option<Program>,
    agg: Option<AggSpec>,
) -> Result<ProbeId, ProbeError> {
    CORE.capture_entry(at, spec, pred, agg)
}

/// See [`Core::capture_return`].
pub fn kretprobe_agg(
    at: At<'_>,
    maxactive: Option<u32>,
    spec: CaptureSpec,
    pred: Option<Program>,
    agg: Option<AggSpec>,
) -> Result<ProbeId, ProbeError> {
    CORE.capture_return(at, maxactive, spec, pred, agg)
}

/// See [`Core::maps`].
pub fn maps(f: &mut dyn FnMut(ProbeId, &MapInfo)) -> Result<(), ProbeError> {
    CORE.maps(f)
}

/// See [`Core::with_map`].
pub fn with_map<R>(id: ProbeId, f: impl FnOnce(&Map) -> R) -> Result<R, ProbeError> {
    CORE.with_map(id, f)
}
