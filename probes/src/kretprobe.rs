//! kretprobes, rethook-style: preallocated instances per probe, linked to
//! the task that entered the function, consumed by the trampoline.
//!
//! Entry (a probe on the function's first byte, `rsp` at the return
//! address): take a free instance (none left: `nmissed`), save the real
//! return address (looking through an earlier hijack of the same frame),
//! the frame and the arguments, run the entry handler (non-zero skips this
//! call), write the trampoline's address over the return address and push
//! the instance on the task's chain.
//!
//! Return (the trampoline's `int3`): every instance on the task's chain for
//! this frame is popped, most recent first; `frame.rip` is set to the real
//! return address *before* the handlers run (stack traces from a handler
//! are true) and after; instances go back to their pools. Instances of
//! deeper frames that never returned (abandoned) are recycled on the way.
//!
//! The chain of each task is touched only by that task (from its own trap
//! handlers) and by [`TaskChains::reclaim`] once the task has exited; the
//! stub reads it only while the kernel is stopped.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::ProbeError;

use arch::TrapFrame;

use crate::probe::{Probe, ProbeId};

/// Largest per-instance data.
pub const MAX_DATA: usize = 4096;
/// Largest `maxactive`.
pub const MAX_ACTIVE: usize = 4096;

/// Most bytes all kretprobe instance pools may hold together (the
/// reference kernel's heap is 8-32 MiB and also holds everything else).
/// A registration past it is refused with [`ProbeError::NoMemory`]
/// instead of an allocation failure (a kernel panic).
pub const POOL_BUDGET: usize = 4 << 20;

/// Bytes the live instance pools hold.
static POOL_BYTES: AtomicUsize = AtomicUsize::new(0);

/// (bytes in use, budget) of kretprobe instance pools (`monitor events`).
pub fn pool_memory() -> (usize, usize) {
    (POOL_BYTES.load(Ordering::Relaxed), POOL_BUDGET)
}

/// What a pool of `n` instances with `data_size` bytes each costs.
pub(crate) fn pool_cost(n: usize, data_size: usize) -> usize {
    n.saturating_mul(core::mem::size_of::<Instance>().saturating_add(data_size))
        .saturating_add(core::mem::size_of::<RetPool>())
}
/// Most tasks that can have instances outstanding at once.
pub const MAX_TASKS: usize = 256;

/// What a kretprobe handler sees of its instance.
pub struct RetCtx<'a> {
    /// The kretprobe.
    pub probe: ProbeId,
    /// The probed function's address.
    pub func: u64,
    /// The task that called the function.
    pub task: u32,
    /// The real return address.
    pub ret_addr: u64,
    /// Timestamp at entry.
    pub entry_tsc: u64,
    /// The argument registers at entry.
    pub args: [u64; 6],
    /// The cookie given at registration.
    pub cookie: usize,
    /// Per-instance data (`data_size` bytes), written at entry, read at return.
    pub data: &'a mut [u8],
}

/// Return handler: `frame.rax` is the return value, `frame.rip` the real
/// return address.
pub type RetHandler = fn(&mut RetCtx<'_>, &mut TrapFrame) -> i32;
/// Entry handler: returning non-zero skips this call's return handler.
pub type EntryHandler = fn(&mut RetCtx<'_>, &mut TrapFrame) -> i32;

/// A kretprobe's handlers and sizes (Linux's `struct kretprobe`).
#[derive(Clone, Copy, Default)]
pub struct Kretprobe {
    pub handler: Option<RetHandler>,
    pub entry_handler: Option<EntryHandler>,
    /// Instances; 0 means max(10, 2 x CPUs) (the wire's `maxactive=`
    /// absent). Unsigned, as everywhere else: Linux's `int` took negative
    /// values only to mean the default.
    pub maxactive: u32,
    /// Bytes of per-instance data (<= 4096).
    pub data_size: usize,
    /// A cookie the handlers get back in [`RetCtx::cookie`].
    pub data: usize,
}

/// What the return side does besides calling the handler.
#[derive(Clone, Copy)]
pub(crate) enum ReturnAction {
    /// Call the handlers (Linux's `handler`/`entry_handler`).
    Handlers {
        handler: Option<RetHandler>,
        entry_handler: Option<EntryHandler>,
    },
    /// Record a return event with this capture.
    Record(proto::CaptureSpec),
}

#[derive(Clone, Copy)]
struct InstState {
    probe: *const Probe,
    ret_addr: u64,
    /// Address of the hijacked return-address slot on the stack.
    frame: u64,
    task: u32,
    entry_tsc: u64,
    args: [u64; 6],
    next: *const Instance,
}

/// One preallocated return instance.
pub(crate) struct Instance {
    index: u32,
    pool: *const RetPool,
    next_free: AtomicU32,
    state: UnsafeCell<InstState>,
}

impl Instance {
    fn get(&self) -> InstState {
        // SAFETY: the instance is owned by one task (or the free list) at a
        // time; a plain copy out.
        unsafe { ptr::read(self.state.get()) }
    }
    fn set(&self, s: InstState) {
        // SAFETY: as in `get`.
        unsafe { ptr::write(self.state.get(), s) }
    }
}

/// The instances of one kretprobe.
pub(crate) struct RetPool {
    pub action: ReturnAction,
    data_size: usize,
    instances: Box<[Instance]>,
    data: Box<[UnsafeCell<u8>]>,
    /// Tagged Treiber stack head: high 32 bits tag, low 32 bits index + 1.
    free: AtomicU64,
    free_count: AtomicU32,
    /// Bytes counted against [`POOL_BUDGET`] (returned on drop).
    cost: usize,
}

impl Drop for RetPool {
    fn drop(&mut self) {
        POOL_BYTES.fetch_sub(self.cost, Ordering::AcqRel);
    }
}

// SAFETY: instances are handed between CPUs through the atomic free list;
// their state is owned by whoever popped them.
unsafe impl Send for RetPool {}
// SAFETY: as above.
unsafe impl Sync for RetPool {}

impl RetPool {
    /// A pool of `n` instances with `data_size` bytes each, if it fits the
    /// global [`POOL_BUDGET`]. Registration only.
    pub fn try_new(
        n: usize,
        data_size: usize,
        action: ReturnAction,
    ) -> Result<Box<RetPool>, ProbeError> {
        let cost = pool_cost(n, data_size);
        POOL_BYTES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(cost).filter(|&t| t <= POOL_BUDGET)
            })
            .map_err(|_| ProbeError::NoMemory)?;
        Ok(Self::build(n, data_size, action, cost))
    }

    /// A pool of `n` instances with `data_size` bytes each, counted against
    /// the budget without checking it (host tests).
    #[cfg(test)]
    pub fn new(n: usize, data_size: usize, action: ReturnAction) -> Box<RetPool> {
        let cost = pool_cost(n, data_size);
        POOL_BYTES.fetch_add(cost, Ordering::AcqRel);
        Self::build(n, data_size, action, cost)
    }

    fn build(n: usize, data_size: usize, action: ReturnAction, cost: usize) -> Box<RetPool> {
        let empty = InstState {
            probe: ptr::null(),
            ret_addr: 0,
            frame: 0,
            task: 0,
            entry_tsc: 0,
            args: [0; 6],
            next: ptr::null(),
        };
        let mut pool = Box::new(RetPool {
            action,
            data_size,
            instances: Box::new([]),
            data: (0..n * data_size).map(|_| UnsafeCell::new(0)).collect(),
            free: AtomicU64::new(0),
            free_count: AtomicU32::new(0),
            cost,
        });
        let pool_ptr: *const RetPool = &*pool;
        // The cast is exact: n <= MAX_ACTIVE.
        let instances: Vec<Instance> = (0..n)
            .map(|i| Instance {
                index: i as u32,
                pool: pool_ptr,
                next_free: AtomicU32::new(0),
                state: UnsafeCell::new(empty),
            })
            .collect();
        pool.instances = instances.into_boxed_slice();
        for i in (0..n).rev() {
            if let Some(inst) = pool.instances.get(i) {
                let inst: *const Instance = inst;
                // SAFETY: points into the pool's own boxed slice.
                pool.push(unsafe { &*inst });
            }
        }
        pool
    }

    pub fn maxactive(&self) -> u32 {
        // The cast is exact: <= MAX_ACTIVE.
        self.instances.len() as u32
    }

    pub fn free_count(&self) -> u32 {
        self.free_count.load(Ordering::Relaxed)
    }

    pub fn all_free(&self) -> bool {
        self.free_count() == self.maxactive()
    }

    fn pop(&self) -> Option<&Instance> {
        loop {
            let head = self.free.load(Ordering::Acquire);
            let idx = (head & 0xffff_ffff) as u32;
            let inst = self.instances.get(idx.checked_sub(1)? as usize)?;
            let next = inst.next_free.load(Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            if self
                .free
                .compare_exchange(head, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.free_count.fetch_sub(1, Ordering::Relaxed);
                return Some(inst);
            }
        }
    }

    fn push(&self, inst: &Instance) {
        loop {
            let head = self.free.load(Ordering::Acquire);
            inst.next_free
                .store((head & 0xffff_ffff) as u32, Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(inst.index + 1);
            if self
                .free
                .compare_exchange(head, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.free_count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    #[allow(clippy::mut_from_ref)] // the data lives in UnsafeCells owned by the popped instance
    fn data_of(&self, inst: &Instance) -> &mut [u8] {
        let start = inst.index as usize * self.data_size;
        match self.data.get(start..start + self.data_size) {
            // SAFETY: the instance owns its data range while it is popped;
            // UnsafeCell<u8> has the layout of u8.
            Some(cells) => unsafe {
                core::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cells.len())
            },
            None => &mut [],
        }
    }
}

/// Per-task chains of outstanding instances.
pub(crate) struct TaskChains {
    keys: [AtomicU32; MAX_TASKS],
    heads: [AtomicPtr<Instance>; MAX_TASKS],
}

const EMPTY: u32 = 0;
const TOMB: u32 = u32::MAX;

impl TaskChains {
    pub const fn new() -> TaskChains {
        TaskChains {
            keys: [const { AtomicU32::new(EMPTY) }; MAX_TASKS],
            heads: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_TASKS],
        }
    }

    /// The chain slot of `task`, claiming one when `create`.
    fn slot(&self, task: u32, create: bool) -> Option<usize> {
        let key = task.checked_add(1).filter(|&k| k != TOMB)?;
        let start = task as usize % MAX_TASKS;
        let mut free = None;
        for n in 0..MAX_TASKS {
            let i = (start + n) % MAX_TASKS;
            let k = self.keys.get(i)?.load(Ordering::Acquire);
            if k == key {
                return Some(i);
            }
            if k == TOMB && free.is_none() {
                free = Some(i);
            }
            if k == EMPTY {
                free = free.or(Some(i));
                break;
            }
        }
        if !create {
            return None;
        }
        // Claim: only this task creates its own entry, so a failed CAS means
        // another task took the slot; try the next free one.
        let mut i = free?;
        for _ in 0..MAX_TASKS {
            let slot = self.keys.get(i)?;
            let k = slot.load(Ordering::Acquire);
            if (k == EMPTY || k == TOMB)
                && slot
                    .compare_exchange(k, key, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Some(i);
            }
            i = (i + 1) % MAX_TASKS;
        }
        None
    }

    fn head(&self, i: usize) -> *const Instance {
        self.heads
            .get(i)
            .map_or(ptr::null_mut(), |h| h.load(Ordering::Acquire))
    }

    fn set_head(&self, i: usize, p: *const Instance) {
        if let Some(h) = self.heads.get(i) {
            h.store(p.cast_mut(), Ordering::Release);
        }
    }

    /// The real return address for a stack slot holding the trampoline.
    pub fn real_return(&self, task: u32, frame: u64) -> Option<u64> {
        let i = self.slot(task, false)?;
        let mut p = self.head(i);
        while !p.is_null() {
            // SAFETY: chain members are live instances of live pools.
            let s = unsafe { &*p }.get();
            if s.frame == frame {
                return Some(s.ret_addr);
            }
            p = s.next;
        }
        None
    }

    /// Calls `f(func, frame, ret_addr)` for each outstanding instance of
    /// `task`, most recent first.
    pub fn for_each(&self, task: u32, f: &mut dyn FnMut(u64, u64, u64)) {
        let Some(i) = self.slot(task, false) else {
            return;
        };
        let mut p = self.head(i);
        while !p.is_null() {
            // SAFETY: as in `real_return`.
            let s = unsafe { &*p }.get();
            // SAFETY: the probe outlives its outstanding instances.
            let func = unsafe { s.probe.as_ref() }.map_or(0, |pr| pr.addr);
            f(func, s.frame, s.ret_addr);
            p = s.next;
        }
    }

    /// The task ids that have a chain.
    pub fn tasks(&self, f: &mut dyn FnMut(u32)) {
        for k in &self.keys {
            let k = k.load(Ordering::Acquire);
            if k != EMPTY && k != TOMB {
                f(k - 1);
            }
        }
    }

    /// Gives back every instance of an exited task.
    pub fn reclaim(&self, task: u32) {
        let Some(i) = self.slot(task, false) else {
            return;
        };
        let mut p = self.head(i);
        self.set_head(i, ptr::null());
        while !p.is_null() {
            // SAFETY: as in `real_return`.
            let inst = unsafe { &*p };
            p = inst.get().next;
            recycle(inst);
        }
        if let Some(k) = self.keys.get(i) {
            k.store(TOMB, Ordering::Release);
        }
    }
}

fn recycle(inst: &Instance) {
    // SAFETY: the pool outlives its outstanding instances (zombie pools are
    // kept until every instance is back).
    let pool = unsafe { &*inst.pool };
    pool.push(inst);
}

/// Machine access the kretprobe code needs (from the host).
pub(crate) struct Env<'a> {
    pub read_u64: &'a dyn Fn(u64) -> Option<u64>,
    pub write_u64: &'a dyn Fn(u64, u64) -> bool,
    pub task: u32,
    pub tsc: u64,
    pub trampoline: u64,
}

/// The entry side. Returns `false` when the call is not hijacked.
pub(crate) fn on_entry(
    chains: &TaskChains,
    probe: &Probe,
    pool: &RetPool,
    frame: &mut TrapFrame,
    env: &Env<'_>,
) -> bool {
    let Some(inst) = pool.pop() else {
        probe.missed();
        return false;
    };
    let sp = frame.rsp;
    let Some(mut ret) = (env.read_u64)(sp) else {
        pool.push(inst);
        probe.missed();
        return false;
    };
    if ret == env.trampoline {
        ret = chains.real_return(env.task, sp).unwrap_or(ret);
    }
    let Some(slot) = chains.slot(env.task, true) else {
        pool.push(inst);
        probe.missed();
        return false;
    };
    let state = InstState {
        probe,
        ret_addr: ret,
        frame: sp,
        task: env.task,
        entry_tsc: env.tsc,
        args: frame.args(),
        next: chains.head(slot),
    };
    inst.set(state);
    if let ReturnAction::Handlers {
        entry_handler: Some(eh),
        ..
    } = pool.action
    {
        let mut ctx = ctx_of(probe, pool, inst, &state);
        if eh(&mut ctx, frame) != 0 {
            pool.push(inst);
            return false;
        }
    }
    if !(env.write_u64)(sp, env.trampoline) {
        pool.push(inst);
        probe.missed();
        return false;
    }
    chains.set_head(slot, inst);
    true
}

fn ctx_of<'a>(probe: &Probe, pool: &'a RetPool, inst: &Instance, s: &InstState) -> RetCtx<'a> {
    RetCtx {
        probe: probe.id,
        func: probe.addr,
        task: s.task,
        ret_addr: s.ret_addr,
        entry_tsc: s.entry_tsc,
        args: s.args,
        cookie: probe.data,
        data: pool.data_of(inst),
    }
}

/// One instance consumed at a return.
pub(crate) struct Returned<'a> {
    pub probe: &'a Probe,
    pub ctx: RetCtx<'a>,
}

/// Why the trampoline could not find where to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrampolineError {
    NoInstance,
}

/// Most bytes a `ret imm16` pops besides the return address.
const RET_IMM16_MAX: u64 = 0xffff;

/// The return side: pops this frame's instances and calls `run` for each
/// (unless `handlers` is false), then recycles them. Sets `frame.rip` to
/// the real return address.
pub(crate) fn on_return(
    chains: &TaskChains,
    task: u32,
    frame: &mut TrapFrame,
    handlers: bool,
    run: &mut dyn FnMut(Returned<'_>, &mut TrapFrame),
) -> Result<(), TrampolineError> {
    let i = chains
        .slot(task, false)
        .ok_or(TrampolineError::NoInstance)?;
    let sp = frame.rsp.wrapping_sub(8);
    // The returning frame's slot: `sp` after a plain `ret`; after `ret imm16`
    // the callee also popped up to 64 KiB of arguments, so the slot lies up
    // to 0xffff bytes below `sp`. Only the caller's pushed arguments lie
    // between the two (no return slots), so the returning instance is the
    // one with the highest slot at or below `sp` in that window; deeper
    // instances are frames that never came back.
    let mut target = None;
    let mut p = chains.head(i);
    while !p.is_null() {
        // SAFETY: chain members are live instances of live pools.
        let s = unsafe { &*p }.get();
        if s.frame <= sp
            && sp.wrapping_sub(s.frame) <= RET_IMM16_MAX
            && target.is_none_or(|t| s.frame > t)
        {
            target = Some(s.frame);
        }
        p = s.next;
    }
    let sp = target.ok_or(TrampolineError::NoInstance)?;
    // Instances of deeper frames that never came back (abandoned).
    loop {
        let p = chains.head(i);
        if p.is_null() {
            return Err(TrampolineError::NoInstance);
        }
        // SAFETY: chain members are live instances of live pools.
        let inst = unsafe { &*p };
        let s = inst.get();
        if s.frame >= sp {
            break;
        }
        chains.set_head(i, s.next);
        recycle(inst);
    }
    let p = chains.head(i);
    // SAFETY: as above.
    let first = unsafe { &*p }.get();
    if first.frame != sp {
        return Err(TrampolineError::NoInstance);
    }
    let real = first.ret_addr;
    loop {
        let p = chains.head(i);
        if p.is_null() {
            break;
        }
        // SAFETY: as above.
        let inst = unsafe { &*p };
        let s = inst.get();
        if s.frame != sp {
            break;
        }
        chains.set_head(i, s.next);
        frame.rip = real;
        // SAFETY: the probe (possibly unregistered, then kept as a zombie)
        // outlives its outstanding instances.
        if let Some(probe) = unsafe { s.probe.as_ref() }
            && handlers
            && !probe.gone.load(Ordering::Acquire)
        {
            // SAFETY: as for `recycle`.
            let pool = unsafe { &*inst.pool };
            let ctx = ctx_of(probe, pool, inst, &s);
            run(Returned { probe, ctx }, frame);
        } else {
            // SAFETY: as in the `if` branch.
            if let Some(probe) = unsafe { s.probe.as_ref() } {
                probe.missed();
            }
        }
        recycle(inst);
    }
    frame.rip = real;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_pops_every_instance_once_and_counts() {
        let pool = RetPool::new(
            5,
            16,
            ReturnAction::Handlers {
                handler: None,
                entry_handler: None,
            },
        );
        assert_eq!(pool.free_count(), 5);
        let mut seen = Vec::new();
        while let Some(i) = pool.pop() {
            pool.data_of(i).fill(i.index as u8);
            seen.push(i.index);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(pool.free_count(), 0);
        for i in pool.instances.iter() {
            assert!(pool.data_of(i).iter().all(|&b| b == i.index as u8));
            pool.push(i);
        }
        assert!(pool.all_free());
    }

    #[test]
    fn task_slots_claim_find_and_reuse() {
        let c = TaskChains::new();
        let a = c.slot(7, true).unwrap();
        assert_eq!(c.slot(7, false), Some(a));
        let b = c.slot(7 + MAX_TASKS as u32, true).unwrap();
        assert_ne!(a, b);
        c.reclaim(7);
        assert_eq!(c.slot(7, false), None);
        assert_eq!(c.slot(7 + MAX_TASKS as u32, false), Some(b));
        assert_eq!(c.slot(7, true), Some(a));
    }
}
