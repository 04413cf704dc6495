//! The per-CPU control block: which probe this CPU is handling and in which
//! phase, with one saved level for a re-entered hit.
//!
//! Only the owning CPU reads or writes the state, from trap handlers with
//! interrupts off; nested traps (a probe hit inside a handler) are the only
//! concurrency and happen only inside calls (handlers, host methods),
//! so the state is copied in and out, never borrowed across a call, and
//! plain reads after a call see what a nested hit wrote. `pins` and `gen` are what other CPUs look at: a
//! writer retiring a point waits until every CPU with pins has moved on.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::point::Point;

/// Most CPUs the core supports.
pub const MAX_CPUS: usize = 16;

/// The phase of a hit on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not handling a probe.
    Idle,
    /// Running pre handlers (or kretprobe/jprobe/capture work).
    Active,
    /// Executing the instruction out of line; the tail trap is pending.
    SingleStep,
    /// Running post handlers.
    SingleStepDone,
    /// Executing a re-entered hit's instruction without handlers.
    Reenter,
    /// A single-stepping context (TF) runs the step pad; its #DB sends it
    /// to `Level::target`.
    StepPad,
}

/// The state outlives the trap handler that set it.
fn persists(s: State) -> bool {
    matches!(s, State::SingleStep | State::Reenter | State::StepPad)
}

/// One level of the control block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    pub state: State,
    pub point: *const Point,
    /// IF of the interrupted context while the slot runs with IF clear.
    pub saved_if: u64,
    /// [`State::StepPad`]: where the step really went.
    pub target: u64,
}

impl Level {
    pub const IDLE: Level = Level {
        state: State::Idle,
        point: ptr::null(),
        saved_if: 0,
        target: 0,
    };

    /// A level of `state` at `point`.
    pub fn at(state: State, point: *const Point) -> Level {
        Level {
            state,
            point,
            ..Level::IDLE
        }
    }
}

#[derive(Clone, Copy)]
struct Levels {
    cur: Level,
    prev: Level,
}

/// One CPU's control block.
pub(crate) struct Kcb {
    levels: UnsafeCell<Levels>,
    /// Hook entries in progress, plus one while `cur` is a state that
    /// outlives its trap (a slot or the step pad is running).
    pins: AtomicU32,
    /// Incremented every time `pins` drops to zero.
    epoch: AtomicU64,
}

// SAFETY: `levels` is only accessed by the owning CPU (see the module docs);
// the atomics are what other CPUs read.
unsafe impl Sync for Kcb {}

impl Kcb {
    pub const fn new() -> Kcb {
        Kcb {
            levels: UnsafeCell::new(Levels {
                cur: Level::IDLE,
                prev: Level::IDLE,
            }),
            pins: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn cur(&self) -> Level {
        // SAFETY: owning CPU only; a plain copy, no reference is kept.
        unsafe { ptr::read(ptr::addr_of!((*self.levels.get()).cur)) }
    }

    pub fn prev(&self) -> Level {
        // SAFETY: as in `cur`.
        unsafe { ptr::read(ptr::addr_of!((*self.levels.get()).prev)) }
    }

    /// Sets the current level. States that outlive the trap handler (the
    /// CPU runs a slot or the step pad with this level pending) hold a pin
    /// of their own; the others are covered by the hook's pin.
    pub fn set_cur(&self, l: Level) {
        let was = persists(self.cur().state);
        let now = persists(l.state);
        if !was && now {
            self.pin();
        }
        // SAFETY: as in `cur`.
        unsafe { ptr::write(ptr::addr_of_mut!((*self.levels.get()).cur), l) };
        if was && !now {
            self.unpin();
        }
    }

    /// The current level's state alone (the hit path's first question).
    pub fn state(&self) -> State {
        // SAFETY: as in `cur`.
        unsafe { ptr::read(ptr::addr_of!((*self.levels.get()).cur.state)) }
    }

    /// Sets the current level when neither the current nor the new state
    /// outlives its trap (e.g. `Idle -> Active -> Idle` of a boosted or
    /// emulated hit): no pin changes hands, so `set_cur`'s bookkeeping is
    /// skipped. The hook's own pin covers the point for the whole hit.
    pub fn set_cur_transient(&self, l: Level) {
        debug_assert!(!persists(self.cur().state) && !persists(l.state));
        // SAFETY: as in `cur`.
        unsafe { ptr::write(ptr::addr_of_mut!((*self.levels.get()).cur), l) };
    }

    pub fn set_prev(&self, l: Level) {
        // SAFETY: as in `cur`.
        unsafe { ptr::write(ptr::addr_of_mut!((*self.levels.get()).prev), l) };
    }

    /// Entering a hook (before any table lookup).
    pub fn pin(&self) {
        self.pins.fetch_add(1, Ordering::SeqCst);
    }

    /// Leaving a hook.
    pub fn unpin(&self) {
        if self.pins.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Some hit is in progress on this CPU.
    pub fn busy(&self) -> bool {
        self.pins.load(Ordering::SeqCst) != 0
    }

    pub fn generation(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}
