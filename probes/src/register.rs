//! Registration: resolving, deciding, arming, disarming and retiring probe
//! points. Serialised by the registry lock, which the hit path never takes.
//!
//! Arm: write the slot, publish the point, then write the int3.
//! Disarm: restore the byte, unpublish, wait until no CPU is in a hit that
//! may use the point (a grace period), then free the point and its slot.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use arch::insn::{Analysis, Execution, analyze};
use arch::slots::{SLOT_SIZE, SlotImage, SlotPool};

use crate::Core;
use crate::cond::{CondInfo, StopCond};
use crate::error::ProbeError;
use crate::host::{Host, Symbol};
use crate::point::Point;
use crate::probe::{Action, Probe, ProbeId, ProbeInfo};

/// Where to put a probe: the wire's location type.
pub use proto::command::Loc as At;

/// Largest function the analysis reads (bytes).
pub(crate) const MAX_FUNCTION: u64 = 1 << 20;

pub(crate) struct PointEntry {
    pub(crate) ptr: *mut Point,
    pub(crate) armed: bool,
}

pub(crate) struct Registry {
    next_id: u32,
    probes: BTreeMap<u32, Arc<Probe>>,
    pub(crate) points: BTreeMap<u64, PointEntry>,
    pub(crate) slots: SlotPool,
    slots_ready: bool,
    /// Unregistered kretprobes with instances still outstanding.
    zombies: Vec<Arc<Probe>>,
    /// gdb's software breakpoints: address -> the byte under the int3.
    pub(crate) gdb: BTreeMap<u64, u8>,
    /// Conditions of gdb's breakpoints by address. They outlive a
    /// breakpoint's removal (a debugger lifts it to step over it and puts
    /// it back); `gdb_set_cond` with `None` ends one.
    conds: BTreeMap<u64, Arc<StopCond>>,
    /// Jump-optimized points by address.
    pub(crate) opts: BTreeMap<u64, crate::optimize::OptState>,
    /// Detour buffers of unoptimized points, freed once no task can be
    /// inside them.
    pub(crate) quarantine: Vec<u64>,
    /// Points a debugger's step put back to int3 ([`Core::suspend_at`]).
    pub(crate) suspended: Vec<u64>,
}

// SAFETY: the raw point pointers are owned by the registry (boxes it
// created); moving the registry between CPUs moves that ownership.
unsafe impl Send for Registry {}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            next_id: 1,
            probes: BTreeMap::new(),
            points: BTreeMap::new(),
            slots: SlotPool::new(0, 0),
            slots_ready: false,
            zombies: Vec::new(),
            gdb: BTreeMap::new(),
            conds: BTreeMap::new(),
            opts: BTreeMap::new(),
            quarantine: Vec::new(),
            suspended: Vec::new(),
        }
    }

    pub(crate) fn point(&self, addr: u64) -> Option<&Point> {
        // SAFETY: the registry owns the published point until it retires it.
        self.points
            .get(&addr)
            .and_then(|e| unsafe { e.ptr.as_ref() })
    }
}

impl Core {
    pub(crate) fn lock(
        &self,
    ) -> Result<(&'static dyn Host, spin::MutexGuard<'_, Registry>), ProbeError> {
        let pf = self.host().ok_or(ProbeError::NotInitialised)?;
        if self.kcbs.get(pf.cpu_id()).is_some_and(|k| k.busy()) {
            return Err(ProbeError::InHandler);
        }
        for _ in 0..1_000_000 {
            if let Some(mut g) = self.registry.try_lock() {
                if !g.slots_ready {
                    let (base, size) = pf.slot_area();
                    g.slots = SlotPool::new(base, size);
                    g.slots_ready = true;
                    self.slot_base.store(base, Ordering::Release);
                }
                g.zombies.retain(|p| match &p.action {
                    Action::Kretprobe(pool) => !pool.all_free(),
                    _ => false,
                });
                return Ok((pf, g));
            }
            core::hint::spin_loop();
        }
        Err(ProbeError::Busy)
    }

    fn resolve(pf: &dyn Host, hit_path: &[u64], at: At<'_>) -> Result<(u64, Symbol), ProbeError> {
        let addr = match at {
            At::Addr(a) => a,
            At::Symbol(name, off) => {
                let s = pf.symbol_named(name).ok_or(ProbeError::UnknownSymbol)?;
                if off >= s.size {
                    return Err(ProbeError::PastEnd);
                }
                s.start + off
            }
        };
        if !pf.is_text(addr) {
            return Err(ProbeError::NotText);
        }
        if pf.is_blacklisted(addr) {
            return Err(ProbeError::Blacklisted);
        }
        let sym = pf.symbol_at(addr).ok_or(ProbeError::NoFunction)?;
        if !sym.contains(addr) {
            return Err(ProbeError::PastEnd);
        }
        // The host methods the hit path calls are blacklisted however the
        // kernel marked them: a probe there would trap inside every hit.
        if hit_path.iter().any(|&f| sym.contains(f)) {
            return Err(ProbeError::Blacklisted);
        }
        Ok((addr, sym))
    }

    /// Decodes the function from its start, reading through other probes'
    /// int3 bytes to the originals.
    fn analyse(
        pf: &dyn Host,
        reg: &Registry,
        addr: u64,
        sym: &Symbol,
    ) -> Result<Analysis, ProbeError> {
        Self::analyse_over(pf, reg, addr, sym, None)
    }

    /// [`Self::analyse`] with `overlay` (bytes about to be written at an
    /// address) in place of what the text holds there.
    fn analyse_over(
        pf: &dyn Host,
        reg: &Registry,
        addr: u64,
        sym: &Symbol,
        overlay: Option<(u64, &[u8])>,
    ) -> Result<Analysis, ProbeError> {
        let mut code = Self::function_code(pf, reg, sym)?;
        if let Some((at, bytes)) = overlay {
            for (i, &v) in bytes.iter().enumerate() {
                if let Some(b) = (at + i as u64)
                    .checked_sub(sym.start)
                    .and_then(|off| usize::try_from(off).ok())
                    .and_then(|off| code.get_mut(off))
                {
                    *b = v;
                }
            }
        }
        Ok(analyze(&code, sym.start, addr)?)
    }

    /// The function's bytes as compiled: every probe's and gdb's int3 and
    /// every optimized probe's jump replaced by the original bytes.
    pub(crate) fn function_code(
        pf: &dyn Host,
        reg: &Registry,
        sym: &Symbol,
    ) -> Result<Vec<u8>, ProbeError> {
        let size = sym.size.min(MAX_FUNCTION);
        let len = usize::try_from(size).map_err(|_| ProbeError::Unreadable)?;
        let mut code = vec![0u8; len];
        if !pf.read(sym.start, &mut code) {
            return Err(ProbeError::Unreadable);
        }
        for (&a, _) in reg.points.range(sym.start..sym.start + size) {
            if let (Some(p), Ok(off)) = (reg.point(a), usize::try_from(a - sym.start))
                && let Some(b) = code.get_mut(off)
            {
                *b = p.original_byte();
            }
        }
        for (&a, &orig) in reg.gdb.range(sym.start..sym.start + size) {
            if let Some(b) = usize::try_from(a - sym.start)
                .ok()
                .and_then(|off| code.get_mut(off))
            {
                *b = orig;
            }
        }
        for (&a, o) in reg.opts.range(sym.start..sym.start + size) {
            if let Ok(off) = usize::try_from(a - sym.start) {
                let src = o.region.original();
                if let Some(dst) = code.get_mut(off..off + src.len()) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(code)
    }

    /// The out-of-line slot an analysed instruction needs (none when it is
    /// emulated): allocated, written and owned by `addr`.
    fn build_slot(
        &self,
        pf: &dyn Host,
        reg: &mut Registry,
        addr: u64,
        analysis: &Analysis,
    ) -> Result<Option<SlotImage>, ProbeError> {
        match analysis.exec {
            Execution::Emulate(_) => Ok(None),
            Execution::OutOfLine { .. } => {
                let base = reg.slots.alloc().ok_or(ProbeError::NoSlot)?;
                match SlotImage::build(analysis, base) {
                    Ok(img) => {
                        pf.write_text(base, &img.bytes);
                        self.set_slot_owner(base, addr);
                        Ok(Some(img))
                    }
                    Err(r) => {
                        reg.slots.free(base);
                        Err(ProbeError::Refused(r))
                    }
                }
            }
        }
    }

    /// Adds a probe built by `make` at `at`. `entry_only`: function entry only.
    pub(crate) fn add(
        &self,
        at: At<'_>,
        entry_only: bool,
        make: impl FnOnce(ProbeId, u64, &Symbol, &dyn Host) -> Result<Probe, ProbeError>,
    ) -> Result<ProbeId, ProbeError> {
        let (pf, mut reg) = self.lock()?;
        let reg = &mut *reg;
        // A probe inside an optimized region (or at one) needs the int3
        // form there first; optimization is tried again afterwards.
        let around = match Self::resolve(pf, self.hit_path(), at) {
            Ok((a, _)) => self.unoptimize_around(pf, reg, a),
            Err(_) => Vec::new(),
        };
        let r = self.add_locked(pf, reg, at, entry_only, make);
        let mut retry = around;
        if let Ok(id) = r
            && let Some(p) = reg.probes.get(&id.0)
        {
            retry.push(p.addr);
        }
        for a in retry {
            self.try_optimize(pf, reg, a);
        }
        r
    }

    fn add_locked(
        &self,
        pf: &'static dyn Host,
        reg: &mut Registry,
        at: At<'_>,
        entry_only: bool,
        make: impl FnOnce(ProbeId, u64, &Symbol, &dyn Host) -> Result<Probe, ProbeError>,
    ) -> Result<ProbeId, ProbeError> {
        let (addr, sym) = Self::resolve(pf, self.hit_path(), at)?;
        if entry_only && addr != sym.start {
            return Err(ProbeError::NotFunctionEntry);
        }
        let id = ProbeId(reg.next_id);
        let probe = Arc::new(make(id, addr, &sym, pf)?);
        if matches!(probe.action, Action::Jprobe { .. })
            && reg.point(addr).is_some_and(|p| {
                p.probes
                    .iter()
                    .any(|q| matches!(q.action, Action::Jprobe { .. }))
            })
        {
            return Err(ProbeError::JprobeExists);
        }
        let (analysis, slot, mut probes, fresh) = match reg.point(addr) {
            Some(old) => (old.analysis, old.slot, old.probes.clone(), false),
            None => {
                let analysis = Self::analyse(pf, reg, addr, &sym)?;
                let slot = self.build_slot(pf, reg, addr, &analysis)?;
                (analysis, slot, Vec::new(), true)
            }
        };
        probes.push(probe.clone());
        let gdb = reg.gdb.contains_key(&addr) || reg.point(addr).is_some_and(|p| p.gdb);
        let cond = reg.conds.get(&addr).cloned();
        let point = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(Point::new(
            analysis, slot, probes, gdb, cond,
        )));
        let old = match self.table.publish(point) {
            Ok(old) => old,
            Err(p) => {
                // SAFETY: `p` is the box created above, never published.
                drop(unsafe { alloc::boxed::Box::from_raw(p) });
                if fresh && let Some(img) = slot {
                    self.set_slot_owner(img.trap_entry, 0);
                    reg.slots.free(img.trap_entry);
                }
                return Err(ProbeError::TableFull);
            }
        };
        let armed = reg.points.get(&addr).is_some_and(|e| e.armed) || gdb;
        reg.points.insert(addr, PointEntry { ptr: point, armed });
        // While a point exists, gdb's breakpoint there is the point's flag.
        reg.gdb.remove(&addr);
        reg.next_id += 1;
        reg.probes.insert(id.0, probe);
        if let Some(old) = old {
            self.synchronize(pf);
            // SAFETY: unpublished and past a grace period: no CPU uses it.
            drop(unsafe { alloc::boxed::Box::from_raw(old) });
        }
        Self::update_arming(pf, reg, addr);
        Ok(id)
    }

    /// Writes or restores the int3 so it matches "some probe is enabled or
    /// gdb has a breakpoint here".
    fn update_arming(pf: &dyn Host, reg: &mut Registry, addr: u64) {
        let Some(want) = reg.point(addr).map(|p| p.any_enabled() || p.gdb) else {
            return;
        };
        let original = reg.point(addr).map_or(0, |p| p.original_byte());
        if let Some(e) = reg.points.get_mut(&addr)
            && e.armed != want
        {
            let byte = if want {
                arch::text::BREAKPOINT
            } else {
                original
            };
            pf.write_text(addr, &[byte]);
            e.armed = want;
        }
    }

    /// Removes a probe. Safe while other CPUs execute the probed code; a
    /// kretprobe's outstanding instances still return to the right place.
    pub fn unregister(&self, id: ProbeId) -> Result<(), ProbeError> {
        let (pf, mut reg) = self.lock()?;
        let addr = reg.probes.get(&id.0).ok_or(ProbeError::NoSuchProbe)?.addr;
        let around = self.unoptimize_around(pf, &mut reg, addr);
        let probe = reg.probes.remove(&id.0).ok_or(ProbeError::NoSuchProbe)?;
        probe.gone.store(true, Ordering::Release);
        probe.enabled.store(false, Ordering::Release);
        let remaining: Vec<Arc<Probe>> = reg
            .point(addr)
            .map(|p| p.probes.iter().filter(|q| q.id != id).cloned().collect())
            .unwrap_or_default();
        let keep_for_gdb = reg.point(addr).is_some_and(|p| p.gdb) && reg.conds.contains_key(&addr);
        if remaining.is_empty() && !keep_for_gdb {
            if let Some(entry) = reg.points.remove(&addr) {
                // SAFETY: owned by the registry until retired below.
                let point = unsafe { &*entry.ptr };
                if entry.armed && !point.gdb {
                    pf.write_text(addr, &[point.original_byte()]);
                }
                if point.gdb {
                    reg.gdb.insert(addr, point.original_byte());
                }
                let slot = point.slot;
                self.table.remove(addr);
                self.synchronize(pf);
                // SAFETY: unpublished and past a grace period.
                drop(unsafe { alloc::boxed::Box::from_raw(entry.ptr) });
                if let Some(img) = slot {
                    self.set_slot_owner(img.trap_entry, 0);
                    reg.slots.free(img.trap_entry);
                }
            }
        } else {
            let gdb = reg.point(addr).is_some_and(|p| p.gdb);
            self.republish(pf, &mut reg, addr, remaining, gdb);
            Self::update_arming(pf, &mut reg, addr);
        }
        if let Action::Kretprobe(pool) = &probe.action
            && !pool.all_free()
        {
            reg.zombies.push(probe);
        }
        for a in around {
            self.try_optimize(pf, &mut reg, a);
        }
        Ok(())
    }

    /// Replaces the point at `addr` by one with `probes` and `gdb`, then
    /// retires the old one after a grace period.
    fn republish(
        &self,
        pf: &dyn Host,
        reg: &mut Registry,
        addr: u64,
        probes: Vec<Arc<Probe>>,
        gdb: bool,
    ) {
        let Some(old) = reg.point(addr) else {
            return;
        };
        let cond = reg.conds.get(&addr).cloned();
        let point = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(Point::new(
            old.analysis,
            old.slot,
            probes,
            gdb,
            cond,
        )));
        match self.table.publish(point) {
            Ok(Some(old_ptr)) => {
                if let Some(e) = reg.points.get_mut(&addr) {
                    e.ptr = point;
                }
                self.synchronize(pf);
                // SAFETY: unpublished and past a grace period.
                drop(unsafe { alloc::boxed::Box::from_raw(old_ptr) });
            }
            // SAFETY: never published (cannot happen: the key exists).
            Ok(None) | Err(_) => drop(unsafe { alloc::boxed::Box::from_raw(point) }),
        }
    }

    /// gdb sets a software breakpoint at `addr` (the stub's `Z0`). The int3
    /// is shared with any probe point there: gdb's stop is reported first
    /// (the probe runs when the debugger resumes without its breakpoint),
    /// and removing either leaves the other's int3 in place.
    pub fn gdb_insert(&self, addr: u64) -> Result<(), ProbeError> {
        if let Some(e) = self.gdb_refusal(addr) {
            return Err(e);
        }
        let (pf, mut reg) = self.lock()?;
        if reg.gdb.contains_key(&addr) || reg.point(addr).is_some_and(|p| p.gdb) {
            return Ok(());
        }
        // gdb's int3 inside an optimized region: the region goes back to
        // int3 form (and stays so while the breakpoint is there).
        self.with_int3_around(pf, &mut reg, addr, |core, reg| {
            core.gdb_insert_locked(pf, reg, addr)
        })
    }

    /// Runs `f` with every optimized region around `addr` back in int3
    /// form, then tries to optimize those points again.
    fn with_int3_around<R>(
        &self,
        pf: &'static dyn Host,
        reg: &mut Registry,
        addr: u64,
        f: impl FnOnce(&Self, &mut Registry) -> R,
    ) -> R {
        let around = self.unoptimize_around(pf, reg, addr);
        let r = f(self, reg);
        for a in around {
            self.try_optimize(pf, reg, a);
        }
        r
    }

    fn gdb_insert_locked(
        &self,
        pf: &'static dyn Host,
        reg: &mut Registry,
        addr: u64,
    ) -> Result<(), ProbeError> {
        if let Some(p) = reg.point(addr) {
            let probes = p.probes.clone();
            self.republish(pf, reg, addr, probes, true);
            Self::update_arming(pf, reg, addr);
            return Ok(());
        }
        let mut b = [0u8; 1];
        if !pf.read(addr, &mut b) {
            return Err(ProbeError::Unreadable);
        }
        pf.write_text(addr, &[arch::text::BREAKPOINT]);
        reg.gdb.insert(addr, b[0]);
        if reg.conds.contains_key(&addr) {
            // The condition needs a point (slot and analysis) to resume
            // from a false hit. If the address cannot have one, the
            // breakpoint still works, unconditionally.
            let _ = self.gdb_point(pf, reg, addr);
        }
        Ok(())
    }

    /// Turns gdb's plain breakpoint at `addr` (in `reg.gdb`) into a probe
    /// point without probes, so a false condition can resume like a hit.
    fn gdb_point(&self, pf: &dyn Host, reg: &mut Registry, addr: u64) -> Result<(), ProbeError> {
        if reg.points.contains_key(&addr) || !reg.gdb.contains_key(&addr) {
            return Ok(());
        }
        let (addr, sym) = Self::resolve(pf, self.hit_path(), At::Addr(addr))?;
        let analysis = Self::analyse(pf, reg, addr, &sym)?;
        let slot = self.build_slot(pf, reg, addr, &analysis)?;
        let cond = reg.conds.get(&addr).cloned();
        let point = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(Point::new(
            analysis,
            slot,
            Vec::new(),
            true,
            cond,
        )));
        match self.table.publish(point) {
            Ok(_) => {}
            Err(p) => {
                // SAFETY: `p` is the box created above, never published.
                drop(unsafe { alloc::boxed::Box::from_raw(p) });
                if let Some(img) = slot {
                    self.set_slot_owner(img.trap_entry, 0);
                    reg.slots.free(img.trap_entry);
                }
                return Err(ProbeError::TableFull);
            }
        }
        reg.points.insert(
            addr,
            PointEntry {
                ptr: point,
                armed: true,
            },
        );
        reg.gdb.remove(&addr);
        Ok(())
    }

    /// Removes the point at `addr` (no probes left), restoring `byte` in the
    /// text when `Some`, and frees its slot after a grace period.
    fn drop_point(&self, pf: &dyn Host, reg: &mut Registry, addr: u64, byte: Option<u8>) {
        let Some(entry) = reg.points.remove(&addr) else {
            return;
        };
        // SAFETY: owned by the registry until retired below.
        let point = unsafe { &*entry.ptr };
        if let Some(b) = byte {
            pf.write_text(addr, &[b]);
        }
        let slot = point.slot;
        self.table.remove(addr);
        self.synchronize(pf);
        // SAFETY: unpublished and past a grace period.
        drop(unsafe { alloc::boxed::Box::from_raw(entry.ptr) });
        if let Some(img) = slot {
            self.set_slot_owner(img.trap_entry, 0);
            reg.slots.free(img.trap_entry);
        }
    }

    /// Sets (`Some`) or ends (`None`) the in-kernel condition of gdb's
    /// breakpoint at `addr`. A condition set before the breakpoint waits
    /// for it; one set on an address that cannot take a point (blacklisted,
    /// not an instruction) is refused with the reason.
    pub fn gdb_set_cond(&self, addr: u64, cond: Option<StopCond>) -> Result<(), ProbeError> {
        let (pf, mut reg) = self.lock()?;
        self.with_int3_around(pf, &mut reg, addr, |core, reg| {
            core.gdb_set_cond_locked(pf, reg, addr, cond)
        })
    }

    fn gdb_set_cond_locked(
        &self,
        pf: &'static dyn Host,
        reg: &mut Registry,
        addr: u64,
        cond: Option<StopCond>,
    ) -> Result<(), ProbeError> {
        match cond {
            Some(c) => {
                // Refuse what could never be evaluated before keeping it.
                let (_, sym) = Self::resolve(pf, self.hit_path(), At::Addr(addr))?;
                Self::analyse(pf, reg, addr, &sym)?;
                if let Some(old) = reg.conds.get(&addr) {
                    // Same breakpoint, new condition: the counters go on.
                    c.carry_counters(old);
                }
                reg.conds.insert(addr, Arc::new(c));
                if reg.point(addr).is_some() {
                    let (probes, gdb) = reg
                        .point(addr)
                        .map(|p| (p.probes.clone(), p.gdb))
                        .unwrap_or_default();
                    self.republish(pf, reg, addr, probes, gdb);
                } else if let Err(e) = self.gdb_point(pf, reg, addr) {
                    reg.conds.remove(&addr);
                    return Err(e);
                }
            }
            None => {
                if reg.conds.remove(&addr).is_none() {
                    return Ok(());
                }
                let Some((probes, gdb, orig)) = reg
                    .point(addr)
                    .map(|p| (p.probes.clone(), p.gdb, p.original_byte()))
                else {
                    return Ok(());
                };
                if probes.is_empty() {
                    // gdb's breakpoint alone again: the int3 stays.
                    self.drop_point(pf, reg, addr, None);
                    if gdb {
                        reg.gdb.insert(addr, orig);
                    }
                } else {
                    self.republish(pf, reg, addr, probes, gdb);
                }
            }
        }
        Ok(())
    }

    /// Ends every condition (the debugger detached).
    pub fn gdb_clear_conds(&self) {
        let addrs: Vec<u64> = match self.lock() {
            Ok((_, reg)) => reg.conds.keys().copied().collect(),
            Err(_) => return,
        };
        for a in addrs {
            let _ = self.gdb_set_cond(a, None);
        }
    }

    /// The condition at `addr` came from gdb's agent expressions.
    pub fn gdb_cond_from_agent(&self, addr: u64) -> bool {
        self.lock()
            .is_ok_and(|(_, reg)| reg.conds.get(&addr).is_some_and(|c| c.from_agent))
    }

    /// Calls `f` with every condition's counters, by address.
    pub fn gdb_conds(&self, f: &mut dyn FnMut(&CondInfo)) -> Result<(), ProbeError> {
        let (_, reg) = self.lock()?;
        for (a, c) in reg.conds.iter() {
            f(&c.info(*a));
        }
        Ok(())
    }

    /// Why a gdb breakpoint (int3 or debug register) at `addr` must be
    /// refused: not kernel text (an int3 in data corrupts it), or code the
    /// debugger and the probe core run themselves (a trap there recurses
    /// or hangs), as Linux's kgdb refuses kprobe-blacklisted addresses.
    /// `None` when it is fine, or when the core is not initialised (the
    /// caller cannot know the text then).
    pub fn gdb_refusal(&self, addr: u64) -> Option<ProbeError> {
        let pf = self.host()?;
        if !pf.is_text(addr) {
            Some(ProbeError::NotText)
        } else if pf.is_blacklisted(addr) {
            Some(ProbeError::Blacklisted)
        } else {
            None
        }
    }

    /// gdb removes its software breakpoint at `addr`.
    pub fn gdb_remove(&self, addr: u64) -> Result<(), ProbeError> {
        let (pf, mut reg) = self.lock()?;
        let mut retry = self.unoptimize_around(pf, &mut reg, addr);
        // The region this breakpoint kept in int3 form, and the point here.
        if let Some((&a, _)) = reg.points.range(..addr).next_back() {
            retry.push(a);
        }
        retry.push(addr);
        Self::gdb_remove_locked(self, pf, &mut reg, addr);
        for a in retry {
            self.try_optimize(pf, &mut reg, a);
        }
        Ok(())
    }

    fn gdb_remove_locked(&self, pf: &'static dyn Host, reg: &mut Registry, addr: u64) {
        if let Some(p) = reg.point(addr) {
            if p.gdb && p.probes.is_empty() {
                // A point that only carried gdb's condition.
                let orig = p.original_byte();
                self.drop_point(pf, reg, addr, Some(orig));
            } else if p.gdb {
                let probes = p.probes.clone();
                self.republish(pf, reg, addr, probes, false);
                Self::update_arming(pf, reg, addr);
            }
            return;
        }
        if let Some(orig) = reg.gdb.remove(&addr) {
            pf.write_text(addr, &[orig]);
        }
    }

    /// A debugger writes `data` to kernel text at `start` (gdb's `M`/`X` on
    /// code). kdbg's int3 bytes stay where they are and the bytes they
    /// stand for become the debugger's; every probed instruction the write
    /// touches is analysed again from its new bytes (with a new out-of-line
    /// slot), so its probes keep working on the new code. A write that
    /// would leave a probed instruction unprobeable is refused whole,
    /// before anything is written.
    pub fn text_write(&self, start: u64, data: &[u8]) -> Result<(), ProbeError> {
        let (pf, mut reg) = self.lock()?;
        let end = start
            .checked_add(data.len() as u64)
            .ok_or(ProbeError::NotText)?;
        // Jump-optimized regions the write touches go back to int3 form
        // first (and are optimized again from the new bytes afterwards).
        let opts: Vec<u64> = reg
            .opts
            .range(..end)
            .filter(|(a, o)| **a + u64::from(o.region.len) > start)
            .map(|(&a, _)| a)
            .collect();
        for &a in &opts {
            self.unoptimize(pf, &mut reg, a);
        }
        let r = self.text_write_locked(pf, &mut reg, start, end, data);
        for a in opts {
            self.try_optimize(pf, &mut reg, a);
        }
        r
    }

    fn text_write_locked(
        &self,
        pf: &'static dyn Host,
        reg: &mut Registry,
        start: u64,
        end: u64,
        data: &[u8],
    ) -> Result<(), ProbeError> {
        let touched: Vec<u64> = reg
            .points
            .range(start.saturating_sub(arch::insn::MAX_INSN_LEN as u64)..end)
            .map(|(&a, _)| a)
            .filter(|&a| {
                reg.point(a)
                    .is_some_and(|p| a + p.analysis.insn().len() as u64 > start)
            })
            .collect();
        let mut analysed = Vec::new();
        for &a in &touched {
            let (_, sym) = Self::resolve(pf, self.hit_path(), At::Addr(a))?;
            analysed.push((
                a,
                Self::analyse_over(pf, reg, a, &sym, Some((start, data)))?,
            ));
        }
        // New slots first: a failure leaves text and probes as they were.
        let mut redone = Vec::new();
        for (a, analysis) in analysed {
            match self.build_slot(pf, reg, a, &analysis) {
                Ok(slot) => redone.push((a, analysis, slot)),
                Err(e) => {
                    for (_, _, slot) in redone {
                        if let Some(img) = slot {
                            self.set_slot_owner(img.trap_entry, 0);
                            reg.slots.free(img.trap_entry);
                        }
                    }
                    return Err(e);
                }
            }
        }
        let mut bytes = data.to_vec();
        for (&a, e) in reg.points.range(start..end) {
            if e.armed
                && let Some(b) = bytes.get_mut((a - start) as usize)
            {
                *b = arch::text::BREAKPOINT;
            }
        }
        for (&a, orig) in reg.gdb.range_mut(start..end) {
            if let Some(b) = bytes.get_mut((a - start) as usize) {
                *orig = *b;
                *b = arch::text::BREAKPOINT;
            }
        }
        pf.write_text(start, &bytes);
        for (a, analysis, slot) in redone {
            let Some(old) = reg.point(a) else {
                continue;
            };
            let (probes, gdb, old_slot) = (old.probes.clone(), old.gdb, old.slot);
            let cond = reg.conds.get(&a).cloned();
            let point = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(Point::new(
                analysis, slot, probes, gdb, cond,
            )));
            match self.table.publish(point) {
                Ok(Some(old_ptr)) => {
                    if let Some(e) = reg.points.get_mut(&a) {
                        e.ptr = point;
                    }
                    self.synchronize(pf);
                    // SAFETY: unpublished and past a grace period.
                    drop(unsafe { alloc::boxed::Box::from_raw(old_ptr) });
                    if let Some(img) = old_slot {
                        self.set_slot_owner(img.trap_entry, 0);
                        reg.slots.free(img.trap_entry);
                    }
                }
                // SAFETY: never published (cannot happen: the key exists).
                Ok(None) | Err(_) => drop(unsafe { alloc::boxed::Box::from_raw(point) }),
            }
        }
        Ok(())
    }

    /// The byte kdbg's int3 at `addr` replaced (a probe's or gdb's), for
    /// memory reads that must show the original text. `None`: no int3 of
    /// kdbg's there.
    pub fn original_byte(&self, addr: u64) -> Option<u8> {
        if let Some(p) = self.table.get(addr) {
            return Some(p.original_byte());
        }
        self.registry
            .try_lock()
            .and_then(|r| r.gdb.get(&addr).copied())
    }

    /// Enables or disables a probe (the int3 is removed when no probe at
    /// the address is enabled).
    pub fn set_enabled(&self, id: ProbeId, on: bool) -> Result<(), ProbeError> {
        let (pf, mut reg) = self.lock()?;
        let probe = reg
            .probes
            .get(&id.0)
            .ok_or(ProbeError::NoSuchProbe)?
            .clone();
        let around = self.unoptimize_around(pf, &mut reg, probe.addr);
        probe.enabled.store(on, Ordering::Release);
        Self::update_arming(pf, &mut reg, probe.addr);
        for a in around.into_iter().chain(core::iter::once(probe.addr)) {
            self.try_optimize(pf, &mut reg, a);
        }
        Ok(())
    }

    /// The listing row of one probe.
    pub fn info(&self, id: ProbeId) -> Option<ProbeInfo> {
        let (_, reg) = self.lock().ok()?;
        reg.probes.get(&id.0).map(|p| ProbeInfo::of(p))
    }

    /// The probe `id` (kept alive by the returned reference).
    pub(crate) fn probe_arc(&self, id: ProbeId) -> Result<Arc<Probe>, ProbeError> {
        let (_, reg) = self.lock()?;
        reg.probes
            .get(&id.0)
            .cloned()
            .ok_or(ProbeError::NoSuchProbe)
    }

    /// The aggregating probes, in id order.
    pub(crate) fn map_probes(&self) -> Result<Vec<Arc<Probe>>, ProbeError> {
        let (_, reg) = self.lock()?;
        let mut v = Vec::new();
        for p in reg.probes.values().filter(|p| p.map.is_some()) {
            v.try_reserve(1).map_err(|_| ProbeError::MapMemory)?;
            v.push(p.clone());
        }
        Ok(v)
    }

    /// Calls `f` with every probe's row, in id order.
    pub fn list(&self, f: &mut dyn FnMut(&ProbeInfo)) -> Result<(), ProbeError> {
        let (_, reg) = self.lock()?;
        for p in reg.probes.values() {
            f(&ProbeInfo::of(p));
        }
        Ok(())
    }

    /// Probes registered now.
    pub fn count(&self) -> usize {
        self.lock().map_or(0, |(_, r)| r.probes.len())
    }

    /// Free out-of-line slots.
    pub fn free_slots(&self) -> usize {
        self.lock().map_or(0, |(_, r)| r.slots.available())
    }

    /// Waits until no other CPU is in a hit that may use a just-retired
    /// point: each CPU that is busy must finish (its generation changes).
    /// Then a short pause covers a CPU that has just left its trap for a
    /// boosted slot (at most three instructions, interrupts off).
    pub(crate) fn synchronize(&self, pf: &dyn Host) {
        let me = pf.cpu_id();
        for (cpu, kcb) in self.kcbs.iter().enumerate() {
            if cpu == me || !kcb.busy() {
                continue;
            }
            let epoch = kcb.generation();
            while kcb.busy() && kcb.generation() == epoch {
                core::hint::spin_loop();
            }
        }
        for _ in 0..1000 {
            core::hint::spin_loop();
        }
    }

    pub(crate) fn set_slot_owner(&self, slot: u64, addr: u64) {
        let base = self.slot_base.load(Ordering::Acquire);
        if let Some(off) = slot.checked_sub(base)
            && let Some(o) = self.slot_owners.get((off / SLOT_SIZE as u64) as usize)
        {
            o.store(addr, Ordering::Release);
        }
    }

    /// The probed address whose slot contains `rip`.
    pub(crate) fn slot_owner(&self, rip: u64) -> Option<u64> {
        let base = self.slot_base.load(Ordering::Acquire);
        let off = rip.checked_sub(base)?;
        let a = self
            .slot_owners
            .get((off / SLOT_SIZE as u64) as usize)?
            .load(Ordering::Acquire);
        (a != 0).then_some(a)
    }
}
