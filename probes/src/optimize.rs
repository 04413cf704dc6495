//! Jump-optimized probes: a probe point armed as an int3 becomes a
//! `jmp rel32` to a detour buffer when the whole function's analysis
//! proves it safe (`arch::detour::jump_region`), and falls back to the
//! int3 whenever something needs the original bytes (a gdb breakpoint or
//! a probe inside the region, a post handler, a debugger stepping through
//! it, disabling, unregistering).
//!
//! Patching follows the int3-first protocol, so a CPU that runs the
//! address at any moment sees either the int3 (the normal trap path) or
//! the whole jump, never a torn instruction:
//! - optimize: (the int3 is in place) write bytes 1..5 of the jump, sync
//!   every CPU, write the jump's first byte, sync;
//! - unoptimize: write the int3 over the first byte, sync, restore bytes
//!   1..5, sync; the point stays an int3 probe.
//!
//! "Sync" is [`Host::sync_text`]. A task preempted in the region's second
//! or later instruction would resume in the middle of the jump: such a
//! point is not optimized (`task-in-region`). A detour buffer is freed
//! only when no task is stopped inside it or in the common entry's
//! interrupt window (`quarantine`).
//!
//! The hit (`Core::on_detour`, called by `arch::detour`'s common entry
//! with a trap-frame-shaped area) runs the same pre handlers as the int3
//! path with the same registers; `rip` is `addr + 1`, what the int3 trap
//! reports. A pre handler that returns `true` continues at its `rip`.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use arch::TrapFrame;
use arch::detour::{
    COPY, COPY_STI, MAX_REGION_INSNS, NotOptimized, Region, detour_image, jump_bytes, jump_region,
};
use arch::frame::rflags::IF;
use arch::slots::SLOT_SIZE;

use crate::Core;
use crate::host::Host;
use crate::kcb::{Level, State};
use crate::probe::{Action, ExecPath};
use crate::register::Registry;

/// One optimized point.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OptState {
    pub region: Region,
    /// The detour buffer (a slot).
    pub detour: u64,
    /// Offsets in the detour of each region instruction's copy (IF-clear copy).
    pub copies: [u8; MAX_REGION_INSNS],
}

impl OptState {
    /// Maps a `rip` in the detour's copies (at an instruction boundary, or
    /// at the jump back) to the original address; `Some(true)` in the pair
    /// when it was the `sti` copy (IF must be set again).
    fn origin(&self, rip: u64) -> Option<(u64, bool)> {
        let off = rip.checked_sub(self.detour)?;
        let (base, sti) = if off >= COPY_STI as u64 {
            (COPY_STI as u64, true)
        } else if off >= COPY as u64 {
            (COPY as u64, false)
        } else {
            return None;
        };
        let n = usize::from(self.region.n);
        for k in 0..=n {
            let orig = match self.region.insns.get(k) {
                Some(&o) if k < n => u64::from(o),
                _ => u64::from(self.region.len),
            };
            // Copy k starts at the same distance from the copy's start as
            // in the IF-clear copy (RIP-relative fix-ups keep lengths).
            let copy = match self.copies.get(k) {
                Some(&c) if k < n => u64::from(c) - COPY as u64,
                _ => self.copy_len(),
            };
            if off - base == copy {
                return Some((self.region.addr + orig, sti));
            }
        }
        None
    }

    fn copy_len(&self) -> u64 {
        let n = usize::from(self.region.n);
        let last = self
            .region
            .insns
            .get(n.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        let last_len = self.region.len - last;
        let last_copy = self.copies.get(n.wrapping_sub(1)).copied().unwrap_or(0);
        u64::from(last_copy) - COPY as u64 + u64::from(last_len)
    }

    fn end(&self) -> u64 {
        self.region.addr + u64::from(self.region.len)
    }
}

impl Core {
    /// The detour's common entry: runs the point's pre handlers and says
    /// where to continue (see the module docs).
    pub fn on_detour(&self, frame: &mut TrapFrame, detour: u64) -> u64 {
        let if_set = frame.rflags & IF != 0;
        let resume = detour + if if_set { COPY_STI } else { COPY } as u64;
        let to = self.detour_handlers(frame, detour, resume);
        if to == resume && if_set {
            // The `sti` copy runs with interrupts off; its `sti` sets IF.
            frame.rflags &= !IF;
        }
        to
    }

    #[inline(always)]
    fn detour_handlers(&self, frame: &mut TrapFrame, detour: u64, resume: u64) -> u64 {
        let Some(pf) = self.host() else {
            return resume;
        };
        let Some(kcb) = self.kcbs.get(pf.cpu_id()) else {
            return resume;
        };
        let Some(addr) = self.slot_owner(detour) else {
            pf.fatal("kdbg: a detour buffer without its probe point");
        };
        kcb.pin();
        let mut to = resume;
        if let Some(point) = self.table.get(addr) {
            if kcb.state() == State::Idle {
                frame.rip = addr + 1;
                kcb.set_cur_transient(Level::at(State::Active, point));
                for p in &point.probes {
                    if !p.is_enabled() {
                        continue;
                    }
                    if !matches!(p.action, Action::Kretprobe(_)) {
                        p.hits.fetch_add(1, Ordering::Relaxed);
                    }
                    if self.run_pre(pf, p, frame) {
                        // The handler changed rip: go there.
                        to = frame.rip;
                        break;
                    }
                }
                kcb.set_cur_transient(Level::IDLE);
            } else {
                // Inside a handler on this CPU: the region runs without
                // handlers, as a re-entered int3 hit does.
                for p in &point.probes {
                    if p.is_enabled() {
                        p.missed();
                    }
                }
            }
        }
        kcb.unpin();
        to
    }

    /// Tries to turn the int3 point at `addr` into a jump. Records why
    /// not in the probes' listing when it cannot.
    pub(crate) fn try_optimize(&self, pf: &dyn Host, reg: &mut Registry, addr: u64) {
        if reg.opts.contains_key(&addr)
            || !pf.optimize_probes()
            || !self.optimizing.load(Ordering::Acquire)
        {
            return;
        }
        let r = self.optimize(pf, reg, addr);
        if let Some(p) = reg.point(addr) {
            let why = match r {
                Ok(()) => NOT_WHY,
                Err(w) => w as u8,
            };
            for q in &p.probes {
                q.why_not.store(why, Ordering::Relaxed);
                if r.is_ok() {
                    q.path.store(ExecPath::Optimized as u8, Ordering::Relaxed);
                }
            }
        }
    }

    fn optimize(&self, pf: &dyn Host, reg: &mut Registry, addr: u64) -> Result<(), NotOptimized> {
        self.reap_detours(pf, reg);
        let point = reg.point(addr).ok_or(NotOptimized::Disabled)?;
        if !point.any_enabled() || !reg.points.get(&addr).is_some_and(|e| e.armed) {
            return Err(NotOptimized::Disabled);
        }
        if point.gdb || point.cond.is_some() {
            return Err(NotOptimized::Breakpoint);
        }
        if point.probes.iter().any(|p| p.has_post_or_fault()) {
            return Err(NotOptimized::PostHandler);
        }
        // Only this CPU's tasks can be checked for being inside the region
        // (the others may be running in it right now).
        if pf.cpu_count() > 1 {
            return Err(NotOptimized::OtherCpus);
        }
        let sym = pf.symbol_at(addr).ok_or(NotOptimized::Undecodable)?;
        let code = Self::function_code(pf, reg, &sym).map_err(|_| NotOptimized::Undecodable)?;
        let region = jump_region(&code, sym.start, addr)?;
        let end = region.addr + u64::from(region.len);
        if reg.points.range(addr + 1..end).next().is_some()
            || reg.gdb.range(addr..end).next().is_some()
            || reg.opts.range(addr..end).next().is_some()
            || reg
                .opts
                .range(..addr)
                .next_back()
                .is_some_and(|(_, o)| o.end() > addr)
        {
            return Err(NotOptimized::ProbeInRegion);
        }
        let detour = reg.slots.alloc().ok_or(NotOptimized::NoBuffer)?;
        let built = detour_image(&region, &code, sym.start, detour)
            .and_then(|(img, copies)| Ok((img, copies, jump_bytes(addr, detour)?)));
        let (img, copies, jump) = match built {
            Ok(x) => x,
            Err(e) => {
                reg.slots.free(detour);
                return Err(e);
            }
        };
        pf.write_text(detour, &img);
        self.set_slot_owner(detour, addr);
        pf.sync_text();
        // The check that no task is inside the region and the patching are
        // one step for this CPU: a task that ran the int3 path in between
        // could be preempted at the region's second instruction.
        let mut done = Err(NotOptimized::TaskInRegion);
        pf.without_preemption(&mut || {
            match self.task_rips(pf) {
                Some(rips) if !rips.iter().any(|&rip| region.interior(rip)) => {}
                _ => return,
            }
            // From here until the jump is fully removed, an int3 hit at
            // addr continues in the detour's copy (the tail is not the
            // original instructions).
            if let Some(p) = reg.point(addr) {
                p.detour.store(detour, Ordering::Release);
            }
            // The int3 is at addr: no CPU enters the region from its start.
            pf.write_text(addr + 1, &jump[1..]);
            pf.sync_text();
            pf.write_text(addr, &jump[..1]);
            pf.sync_text();
            done = Ok(());
        });
        if let Err(e) = done {
            self.set_slot_owner(detour, 0);
            reg.slots.free(detour);
            return Err(e);
        }
        reg.opts.insert(
            addr,
            OptState {
                region,
                detour,
                copies,
            },
        );
        Ok(())
    }

    /// Puts the int3 point at `addr` back (if optimized). The detour is
    /// freed once no task can be inside it.
    pub(crate) fn unoptimize(&self, pf: &dyn Host, reg: &mut Registry, addr: u64) -> bool {
        let Some(o) = reg.opts.remove(&addr) else {
            return false;
        };
        pf.write_text(addr, &[arch::text::BREAKPOINT]);
        pf.sync_text();
        if let Some(tail) = o.region.original().get(1..JMP_TAIL) {
            pf.write_text(addr + 1, tail);
        }
        pf.sync_text();
        if let Some(p) = reg.point(addr) {
            p.detour.store(0, Ordering::Release);
            let path = p.path();
            for q in &p.probes {
                q.path.store(path as u8, Ordering::Relaxed);
                q.why_not.store(NOT_WHY, Ordering::Relaxed);
            }
        }
        // A CPU may still be between the jump and the callback's pin, or in
        // a copy: wait for pinned hits, then keep the buffer until no task
        // is stopped in it.
        self.synchronize(pf);
        reg.quarantine.push(o.detour);
        self.reap_detours(pf, reg);
        true
    }

    /// Unoptimizes every optimized point whose region contains `addr`
    /// (including its first byte); returns their addresses.
    pub(crate) fn unoptimize_around(
        &self,
        pf: &dyn Host,
        reg: &mut Registry,
        addr: u64,
    ) -> Vec<u64> {
        let hit: Vec<u64> = reg
            .opts
            .range(..=addr)
            .rev()
            .take(1)
            .filter(|(_, o)| addr < o.end())
            .map(|(&a, _)| a)
            .collect();
        for &a in &hit {
            self.unoptimize(pf, reg, a);
        }
        hit
    }

    /// The saved `rip` of every task that is not running, and the one a
    /// debugger holds stopped. `None` when the kernel cannot say (its task
    /// list or a task's frame is not available now): treated as "a task
    /// may be anywhere".
    fn task_rips(&self, pf: &dyn Host) -> Option<Vec<u64>> {
        let mut ids = Vec::new();
        pf.for_each_task(&mut |t| ids.push(t.id));
        if ids.is_empty() {
            return None;
        }
        let me = pf.task_id();
        let mut rips = Vec::with_capacity(ids.len() + 1);
        for id in ids {
            match pf.saved_frame(id) {
                Some(f) => rips.push(f.rip),
                None if id == me => {}
                None => return None,
            }
        }
        let stopped = self.stopped_rip.load(Ordering::Acquire);
        if stopped != 0 {
            rips.push(stopped);
        }
        Some(rips)
    }

    fn reap_detours(&self, pf: &dyn Host, reg: &mut Registry) {
        if reg.quarantine.is_empty() {
            return;
        }
        let Some(rips) = self.task_rips(pf) else {
            return;
        };
        let busy = |d: u64| {
            rips.iter()
                .any(|&r| r.wrapping_sub(d) < SLOT_SIZE as u64 || arch::detour::in_common_entry(r))
        };
        let (keep, free): (Vec<u64>, Vec<u64>) = reg.quarantine.iter().partition(|&&d| busy(d));
        for d in free {
            self.set_slot_owner(d, 0);
            reg.slots.free(d);
        }
        reg.quarantine = keep;
    }

    /// See [`crate::set_optimization`].
    pub fn set_optimization(&self, on: bool) {
        self.optimizing.store(on, Ordering::Release);
        let Ok((pf, mut reg)) = self.lock() else {
            return;
        };
        let addrs: Vec<u64> = if on {
            reg.points.keys().copied().collect()
        } else {
            reg.opts.keys().copied().collect()
        };
        for a in addrs {
            if on {
                self.try_optimize(pf, &mut reg, a);
            } else {
                self.unoptimize(pf, &mut reg, a);
            }
        }
    }

    /// Where a `rip` inside a detour's copies really is (a fault or a
    /// debug trap there), with whether IF must be set again.
    pub fn detour_origin(&self, rip: u64) -> Option<(u64, bool)> {
        let reg = self.registry.try_lock()?;
        reg.opts.values().find_map(|o| o.origin(rip))
    }

    /// For memory reads by a debugger: the original bytes where optimized
    /// probes' jumps are (`data` read from `start`).
    pub fn hide_jumps(&self, start: u64, data: &mut [u8]) {
        let Some(reg) = self.registry.try_lock() else {
            return;
        };
        let end = start.wrapping_add(data.len() as u64);
        let first = reg
            .opts
            .range(..start)
            .next_back()
            .map_or(start, |(&a, _)| a);
        for (&a, o) in reg.opts.range(first..end) {
            for (i, &b) in o.region.original().iter().enumerate().take(JMP_TAIL) {
                let at = a + i as u64;
                if at >= start
                    && let Some(d) = data.get_mut((at - start) as usize)
                {
                    *d = b;
                }
            }
        }
    }

    /// A debugger holds the context at `rip` stopped (`None`: it resumed).
    /// While stopped, no jump is written over `rip`; a `rip` inside a
    /// detour's copies is mapped to the original instruction (returned,
    /// with whether IF must be set again) and its point goes back to an
    /// int3 so the context resumes in the original code.
    pub fn debugger_stop(&self, rip: Option<u64>) -> Option<(u64, bool)> {
        let Some(rip) = rip else {
            self.stopped_rip.store(0, Ordering::Release);
            return None;
        };
        let mapped = self.detour_origin(rip);
        let at = mapped.map_or(rip, |(a, _)| a);
        self.stopped_rip.store(at, Ordering::Release);
        if mapped.is_some() {
            self.suspend_at(at, false);
        }
        mapped
    }

    /// A debugger resumes the context at `rip`, single-stepping or not.
    /// A step at an optimized region (or any resume inside one) puts its
    /// point back to an int3, so the original instructions run in place;
    /// a resume without a step optimizes again what steps put back.
    pub fn debugger_resume(&self, rip: u64, stepping: bool) {
        self.suspend_at(rip, stepping);
        if !stepping {
            self.reoptimize();
        }
        self.stopped_rip.store(0, Ordering::Release);
    }

    fn suspend_at(&self, rip: u64, include_start: bool) {
        let Some(pf) = self.host() else {
            return;
        };
        let Some(mut reg) = self.registry.try_lock() else {
            return;
        };
        let Some(a) = reg
            .opts
            .range(..=rip)
            .next_back()
            .filter(|(a, o)| rip < o.end() && (include_start || rip != **a))
            .map(|(&a, _)| a)
        else {
            return;
        };
        self.unoptimize(pf, &mut reg, a);
        reg.suspended.push(a);
    }

    fn reoptimize(&self) {
        let Some(pf) = self.host() else {
            return;
        };
        let Some(mut reg) = self.registry.try_lock() else {
            return;
        };
        let list = core::mem::take(&mut reg.suspended);
        for a in list {
            self.try_optimize(pf, &mut reg, a);
            if !reg.opts.contains_key(&a)
                && reg
                    .point(a)
                    .and_then(|p| p.probes.first())
                    .is_some_and(|p| {
                        p.why_not.load(Ordering::Relaxed) == NotOptimized::TaskInRegion as u8
                    })
            {
                reg.suspended.push(a);
            }
        }
    }
}

/// Bytes of the jump the region's original bytes are restored over.
const JMP_TAIL: usize = arch::detour::JMP_LEN;

/// `why_not` value for "optimized, or never tried".
pub(crate) const NOT_WHY: u8 = u8::MAX;

/// The reason stored in a probe's `why_not`.
pub(crate) fn why_name(v: u8) -> Option<&'static str> {
    const ALL: [NotOptimized; 13] = [
        NotOptimized::Undecodable,
        NotOptimized::CrossesEnd,
        NotOptimized::JumpIntoRegion,
        NotOptimized::IndirectJump,
        NotOptimized::NotRelocatable,
        NotOptimized::OutOfRange,
        NotOptimized::ProbeInRegion,
        NotOptimized::PostHandler,
        NotOptimized::Breakpoint,
        NotOptimized::TaskInRegion,
        NotOptimized::NoBuffer,
        NotOptimized::Disabled,
        NotOptimized::OtherCpus,
    ];
    ALL.iter().find(|w| **w as u8 == v).map(|w| w.name())
}
