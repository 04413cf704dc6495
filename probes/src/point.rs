//! A probe point: one probed address, its analysed instruction, its slot,
//! and the probes registered there (an aggregate when there are several).
//!
//! Points are immutable once published in the table: adding or removing a
//! probe publishes a new point and retires the old one after a grace period.

use alloc::sync::Arc;
use alloc::vec::Vec;

use arch::insn::{Analysis, Execution};
use arch::slots::SlotImage;

use crate::cond::StopCond;
use crate::probe::{ExecPath, Probe};
use crate::table::Keyed;

/// The published state of one probed address.
pub(crate) struct Point {
    pub addr: u64,
    pub analysis: Analysis,
    /// The slot, for out-of-line instructions.
    pub slot: Option<SlotImage>,
    /// Boosted: no probe has a post or fault handler and the slot has
    /// boosted variants.
    pub boost: bool,
    /// Registration order.
    pub probes: Vec<Arc<Probe>>,
    /// gdb has a software breakpoint here too (the stub reports hits).
    pub gdb: bool,
    /// The in-kernel condition of gdb's breakpoint here (used only while
    /// `gdb` is set): a false one resumes like a probe hit.
    pub cond: Option<Arc<StopCond>>,
    /// The detour buffer while the point's region holds (part of) a jump
    /// (`probes::optimize`), else 0. An int3 hit then continues in the
    /// detour's copy of the whole region: the bytes after the first are
    /// not the original instructions.
    pub detour: core::sync::atomic::AtomicU64,
}

impl Keyed for Point {
    fn key(&self) -> u64 {
        self.addr
    }
}

impl Point {
    pub fn new(
        analysis: Analysis,
        slot: Option<SlotImage>,
        probes: Vec<Arc<Probe>>,
        gdb: bool,
        cond: Option<Arc<StopCond>>,
    ) -> Point {
        let boost = slot.is_some_and(|s| s.boost.is_some())
            && probes.iter().all(|p| !p.has_post_or_fault());
        let point = Point {
            addr: analysis.addr,
            analysis,
            slot,
            boost,
            probes,
            gdb,
            cond,
            detour: core::sync::atomic::AtomicU64::new(0),
        };
        let path = point.path();
        for p in &point.probes {
            p.path
                .store(path as u8, core::sync::atomic::Ordering::Relaxed);
        }
        point
    }

    pub fn path(&self) -> ExecPath {
        match self.analysis.exec {
            Execution::Emulate(_) => ExecPath::Emulated,
            Execution::OutOfLine { .. } if self.boost => ExecPath::Boosted,
            Execution::OutOfLine { .. } => ExecPath::OutOfLine,
        }
    }

    pub fn any_enabled(&self) -> bool {
        self.probes.iter().any(|p| p.is_enabled())
    }

    /// The original first byte (what the int3 covers).
    pub fn original_byte(&self) -> u8 {
        self.analysis.bytes[0]
    }
}
