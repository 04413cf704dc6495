//! A registered probe: what to do at a hit, and its counters.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use arch::TrapFrame;
use proto::CaptureSpec;

use crate::kretprobe::RetPool;

/// A probe's id, unique for the lifetime of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u32);

/// Runs before the probed instruction. Returning `true` means "I changed
/// `frame.rip`: skip the instruction and resume there" (Linux's
/// convention); post handlers then do not run.
pub type PreHandler = fn(&Probe, &mut TrapFrame) -> bool;
/// Runs after the probed instruction, with the frame as it left it.
pub type PostHandler = fn(&Probe, &mut TrapFrame);
/// Runs when the probed instruction (out of line) or a handler faults; gets
/// the vector. `true` = handled (resume with the frame as the handler left it).
pub type FaultHandler = fn(&Probe, &mut TrapFrame, u64) -> bool;

/// Linux's `struct kprobe`: the handlers of a kprobe and a cookie the
/// handlers can read back with [`Probe::data`].
#[derive(Clone, Copy, Default)]
pub struct Kprobe {
    pub pre_handler: Option<PreHandler>,
    pub post_handler: Option<PostHandler>,
    pub fault_handler: Option<FaultHandler>,
    /// Any value the handlers want (e.g. a pointer to their state).
    pub data: usize,
}

/// The kind of probe, for listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Kprobe,
    Jprobe,
    Kretprobe,
}

/// How the probed instruction executes after the handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExecPath {
    /// Emulated in the trap handler.
    Emulated = 0,
    /// Run from a slot, then a second trap.
    OutOfLine = 1,
    /// Run from a slot with a jump back: one trap per hit.
    Boosted = 2,
    /// Jump-optimized: a `jmp` to a detour buffer, no trap.
    Optimized = 3,
}

impl ExecPath {
    fn from_u8(v: u8) -> ExecPath {
        match v {
            0 => ExecPath::Emulated,
            2 => ExecPath::Boosted,
            3 => ExecPath::Optimized,
            _ => ExecPath::OutOfLine,
        }
    }
}

/// What a hit does.
pub(crate) enum Action {
    /// Kprobe handlers as Linux's (pre, post, fault).
    Kprobe(Kprobe),
    /// Call a C-ABI function with the probed function's arguments.
    Jprobe { entry: u64 },
    /// Hijack the return address (instances in the pool).
    Kretprobe(alloc::boxed::Box<RetPool>),
    /// Record an event (the stub's kprobes and entry captures).
    Record {
        kind: proto::EventKind,
        spec: CaptureSpec,
    },
}

/// A registered probe. Handlers get `&Probe` to read their cookie and id.
pub struct Probe {
    pub(crate) id: ProbeId,
    pub(crate) addr: u64,
    pub(crate) sym: &'static str,
    pub(crate) sym_offset: u64,
    pub(crate) data: usize,
    pub(crate) action: Action,
    pub(crate) enabled: AtomicBool,
    /// Unregistered (kretprobe instances still outstanding see it).
    pub(crate) gone: AtomicBool,
    pub(crate) hits: AtomicU64,
    pub(crate) nmissed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) path: AtomicU8,
    /// Why the point is not jump-optimized (`optimize::NOT_WHY`: it is,
    /// or it was never tried).
    pub(crate) why_not: AtomicU8,
    /// Capture probes: record a hit only when this is true.
    pub(crate) pred: Option<alloc::boxed::Box<proto::bytecode::Program>>,
    /// Hits the predicate rejected.
    pub(crate) filtered: AtomicU64,
    /// Hits whose predicate faulted (not recorded).
    pub(crate) pred_faults: AtomicU64,
    /// Aggregating probes: hits update this map instead of recording.
    pub(crate) map: Option<alloc::boxed::Box<crate::map::Map>>,
}

impl Probe {
    pub(crate) fn new(
        id: ProbeId,
        addr: u64,
        sym: &'static str,
        sym_offset: u64,
        data: usize,
        action: Action,
    ) -> Probe {
        Probe {
            id,
            addr,
            sym,
            sym_offset,
            data,
            action,
            enabled: AtomicBool::new(true),
            gone: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            nmissed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            path: AtomicU8::new(ExecPath::OutOfLine as u8),
            why_not: AtomicU8::new(crate::optimize::NOT_WHY),
            pred: None,
            filtered: AtomicU64::new(0),
            pred_faults: AtomicU64::new(0),
            map: None,
        }
    }

    /// The probe's id.
    pub fn id(&self) -> ProbeId {
        self.id
    }
    /// The probed address.
    pub fn addr(&self) -> u64 {
        self.addr
    }
    /// The cookie given at registration.
    pub fn data(&self) -> usize {
        self.data
    }
    /// Hits that ran this probe's handlers.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    /// Hits that could not run the handlers (re-entry, no kretprobe instance).
    pub fn nmissed(&self) -> u64 {
        self.nmissed.load(Ordering::Relaxed)
    }
    /// The kind, for listings.
    pub fn kind(&self) -> ProbeKind {
        match &self.action {
            Action::Kprobe(_) => ProbeKind::Kprobe,
            Action::Record { kind, .. } => match kind {
                proto::EventKind::JprobeEntry | proto::EventKind::Capture => ProbeKind::Jprobe,
                _ => ProbeKind::Kprobe,
            },
            Action::Jprobe { .. } => ProbeKind::Jprobe,
            Action::Kretprobe(_) => ProbeKind::Kretprobe,
        }
    }
    pub(crate) fn has_post_or_fault(&self) -> bool {
        matches!(&self.action, Action::Kprobe(k) if k.post_handler.is_some() || k.fault_handler.is_some())
    }
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
    pub(crate) fn exec_path(&self) -> ExecPath {
        ExecPath::from_u8(self.path.load(Ordering::Relaxed))
    }
    pub(crate) fn missed(&self) {
        self.nmissed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One row of the probe listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeInfo {
    pub id: ProbeId,
    pub kind: ProbeKind,
    pub addr: u64,
    pub sym: &'static str,
    pub sym_offset: u64,
    pub enabled: bool,
    pub hits: u64,
    pub nmissed: u64,
    /// Events this probe could not put into the ring.
    pub dropped: u64,
    /// Hits its predicate rejected.
    pub filtered: u64,
    /// Hits whose predicate faulted.
    pub pred_faults: u64,
    pub path: ExecPath,
    /// Why the probe is not jump-optimized (`None`: it is, or the
    /// optimization was not tried).
    pub not_optimized: Option<&'static str>,
    /// kretprobes: instances; 0 otherwise.
    pub maxactive: u32,
    /// kretprobes: instances free right now; 0 otherwise.
    pub free_instances: u32,
    /// Recording probes: what they capture besides the argument registers
    /// (empty for the others).
    pub capture: CaptureSpec,
}

impl ProbeInfo {
    pub(crate) fn of(p: &Probe) -> ProbeInfo {
        let (maxactive, free_instances) = match &p.action {
            Action::Kretprobe(pool) => (pool.maxactive(), pool.free_count()),
            _ => (0, 0),
        };
        let capture = match &p.action {
            Action::Record { spec, .. } => *spec,
            Action::Kretprobe(pool) => match &pool.action {
                crate::kretprobe::ReturnAction::Record(spec) => *spec,
                crate::kretprobe::ReturnAction::Handlers { .. } => CaptureSpec::default(),
            },
            Action::Kprobe(_) | Action::Jprobe { .. } => CaptureSpec::default(),
        };
        ProbeInfo {
            id: p.id,
            kind: p.kind(),
            addr: p.addr,
            sym: p.sym,
            sym_offset: p.sym_offset,
            enabled: p.is_enabled(),
            hits: p.hits(),
            nmissed: p.nmissed(),
            dropped: p.dropped.load(Ordering::Relaxed),
            filtered: p.filtered.load(Ordering::Relaxed),
            pred_faults: p.pred_faults.load(Ordering::Relaxed),
            path: p.exec_path(),
            not_optimized: crate::optimize::why_name(p.why_not.load(Ordering::Relaxed)),
            maxactive,
            free_instances,
            capture,
        }
    }
}
