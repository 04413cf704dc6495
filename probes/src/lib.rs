//! The probe core: kprobes, jprobes and kretprobes, arch-neutral.
//!
//! - [`register_kprobe`], [`register_jprobe`], [`register_kretprobe`]: the
//!   in-kernel API of the 2004-2005 kprobes design, with [`unregister`],
//!   [`enable`], [`disable`] at any time.
//! - [`commands`]: what the stub's `monitor` commands use (capture probes
//!   that write event records, listings, ring statistics, draining).
//! - [`hooks`]: what the kernel's trap dispatcher calls.
//! - [`Host`]: what the kernel implements and installs at boot ([`init`]).
//!
//! How a hit runs: the address was analysed at
//! registration (`arch::insn`); instructions that change rip or IF are
//! emulated in the trap handler, the rest run out of line from a slot
//! followed by an int3 (post handlers run at that second trap) or, boosted,
//! by a jump back. A per-CPU control block tracks the phase; a hit inside a
//! handler runs the instruction without handlers and counts `nmissed`.
#![cfg_attr(not(test), no_std)]
// Kernel-side crate: its paths never panic (test code may).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

extern crate alloc;

pub mod commands;
pub mod cond;
pub mod error;
mod hit;
pub mod hooks;
pub mod host;
pub mod kallsyms;
pub mod kcb;
pub mod kretprobe;
pub mod map;
mod optimize;
mod point;
pub mod probe;
mod recorder;
mod register;
pub mod ring;
pub mod stacktrace;
mod table;

#[cfg(test)]
mod tests;

use core::sync::atomic::AtomicU64;

use arch::slots::SLOT_COUNT;

pub use error::{ProbeError, Refusal};
pub use host::{Host, NoHost, Symbol, TaskInfo};
pub use kretprobe::{EntryHandler, Kretprobe, RetCtx, RetHandler};
pub use probe::{
    ExecPath, FaultHandler, Kprobe, PostHandler, PreHandler, Probe, ProbeId, ProbeInfo, ProbeKind,
};
pub use register::At;
pub use ring::{RingLayout, RingStats};

use kcb::{Kcb, MAX_CPUS};
use kretprobe::{RetPool, ReturnAction, TaskChains};
use point::Point;
use probe::Action;
use register::Registry;
use ring::CpuRing;
use table::AddrTable;

/// The kernel's [`Host`] and what [`Core::init`] learnt of its type.
struct Installed {
    host: &'static dyn Host,
    hit_path: [u64; 6],
}

/// All state of one probe core. The kernel uses the global one through the
/// free functions of this crate; host tests build their own.
pub struct Core {
    host: spin::Once<Installed>,
    table: AddrTable<Point>,
    kcbs: [Kcb; MAX_CPUS],
    rings: [CpuRing; MAX_CPUS],
    chains: TaskChains,
    registry: spin::Mutex<Registry>,
    drain_lock: spin::Mutex<()>,
    /// The direct consumer's epoch (0: the stub drains the rings). See
    /// [`Core::set_direct`] and docs/design/shm.md.
    consumer: core::sync::atomic::AtomicU64,
    /// Bumped by the direct consumer while it is alive.
    beat: core::sync::atomic::AtomicU64,
    slot_base: AtomicU64,
    slot_owners: [AtomicU64; SLOT_COUNT],
    /// The `rip` of the context a debugger holds stopped (0: none): no
    /// jump may be written over it.
    stopped_rip: AtomicU64,
    /// Jump optimization on (Linux's debug.kprobes-optimization).
    optimizing: core::sync::atomic::AtomicBool,
}

impl Core {
    /// An uninitialised core.
    pub const fn new() -> Core {
        Core {
            host: spin::Once::new(),
            table: AddrTable::new(),
            kcbs: [const { Kcb::new() }; MAX_CPUS],
            rings: [const { CpuRing::new() }; MAX_CPUS],
            chains: TaskChains::new(),
            registry: spin::Mutex::new(Registry::new()),
            drain_lock: spin::Mutex::new(()),
            consumer: core::sync::atomic::AtomicU64::new(0),
            beat: core::sync::atomic::AtomicU64::new(0),
            slot_base: AtomicU64::new(0),
            slot_owners: [const { AtomicU64::new(0) }; SLOT_COUNT],
            stopped_rip: AtomicU64::new(0),
            optimizing: core::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Installs the kernel's [`Host`]. Only the first call counts.
    pub fn init<H: Host>(&self, host: &'static H) {
        self.host.call_once(|| Installed {
            host,
            hit_path: host::hit_path_of::<H>(),
        });
    }

    /// The installed host, once [`Core::init`] ran.
    pub(crate) fn host(&self) -> Option<&'static dyn Host> {
        self.host.get().map(|i| i.host)
    }

    /// Code addresses of the host methods the hit path calls.
    pub(crate) fn hit_path(&self) -> &[u64] {
        self.host.get().map_or(&[], |i| &i.hit_path[..])
    }

    /// Registers a kprobe.
    pub fn register_kprobe(&self, at: At<'_>, kp: Kprobe) -> Result<ProbeId, ProbeError> {
        self.add(at, false, |id, addr, sym, _| {
            Ok(Probe::new(
                id,
                addr,
                sym.name,
                addr - sym.start,
                kp.data,
                Action::Kprobe(kp),
            ))
        })
    }

    /// Registers a jprobe: `entry` is the address of an `extern "C"`
    /// function with the probed function's prototype.
    pub fn register_jprobe(
        &self,
        at: At<'_>,
        entry: usize,
        data: usize,
    ) -> Result<ProbeId, ProbeError> {
        self.add(at, true, |id, addr, sym, _| {
            Ok(Probe::new(
                id,
                addr,
                sym.name,
                0,
                data,
                Action::Jprobe {
                    entry: entry as u64,
                },
            ))
        })
    }

    /// Registers a kretprobe.
    pub fn register_kretprobe(&self, at: At<'_>, rp: Kretprobe) -> Result<ProbeId, ProbeError> {
        let action = ReturnAction::Handlers {
            handler: rp.handler,
            entry_handler: rp.entry_handler,
        };
        self.add_kretprobe(at, rp.maxactive, rp.data_size, rp.data, action, None, None)
    }

    /// A kretprobe whose returns run `action`, recorded only where the
    /// predicate `pred` holds (none: always), updating the map `agg` (none:
    /// no map) at each return.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_kretprobe(
        &self,
        at: At<'_>,
        maxactive: u32,
        data_size: usize,
        data: usize,
        action: ReturnAction,
        pred: Option<proto::bytecode::Program>,
        agg: Option<proto::agg::AggSpec>,
    ) -> Result<ProbeId, ProbeError> {
        if data_size > kretprobe::MAX_DATA {
            return Err(ProbeError::DataTooLarge);
        }
        self.add(at, true, |id, addr, sym, pf| {
            let n = match usize::try_from(maxactive) {
                Ok(n) if n > 0 => n,
                Ok(_) => 10.max(2 * pf.cpu_count()),
                Err(_) => usize::MAX,
            };
            if n > kretprobe::MAX_ACTIVE {
                return Err(ProbeError::TooManyInstances);
            }
            let len = usize::try_from(sym.size.min(register::MAX_FUNCTION))
                .map_err(|_| ProbeError::Unreadable)?;
            let mut code = alloc::vec![0u8; len];
            if !pf.read(sym.start, &mut code) {
                return Err(ProbeError::Unreadable);
            }
            if arch::insn::has_far_return(&code, sym.start) {
                return Err(ProbeError::FarReturn);
            }
            let map = map::make(agg.as_ref(), pf)?;
            let pool = RetPool::try_new(n, data_size, action)?;
            let mut p = Probe::new(id, addr, sym.name, 0, data, Action::Kretprobe(pool));
            p.pred = pred.map(alloc::boxed::Box::new);
            p.map = map;
            Ok(p)
        })
    }

    /// Enables a probe.
    pub fn enable(&self, id: ProbeId) -> Result<(), ProbeError> {
        self.set_enabled(id, true)
    }

    /// Disables a probe (it stays registered; its int3 goes when no probe
    /// at the address is enabled).
    pub fn disable(&self, id: ProbeId) -> Result<(), ProbeError> {
        self.set_enabled(id, false)
    }

    /// A task exits: its outstanding kretprobe instances go back to their pools.
    pub fn task_exit(&self, task: u32) {
        self.chains.reclaim(task);
    }

    /// The real return address when `value`, read from the stack slot at
    /// `slot`, is the kretprobe trampoline; `value` otherwise.
    pub fn real_return_address(&self, task: u32, slot: u64, value: u64) -> u64 {
        match self.host() {
            Some(pf) if value == pf.trampoline() => {
                self.chains.real_return(task, slot).unwrap_or(value)
            }
            _ => value,
        }
    }

    /// Calls `f(function, stack_slot, real_return_address)` for each
    /// outstanding kretprobe instance of `task`, most recent first. Read
    /// while the kernel is stopped.
    pub fn for_each_instance(&self, task: u32, f: &mut dyn FnMut(u64, u64, u64)) {
        self.chains.for_each(task, f);
    }

    /// Calls `f(task)` for each task with a kretprobe instance chain.
    pub fn tasks_with_instances(&self, f: &mut dyn FnMut(u32)) {
        self.chains.tasks(f);
    }
}

impl Default for Core {
    fn default() -> Self {
        Self::new()
    }
}

/// The kernel's probe core.
pub static CORE: Core = Core::new();

/// Installs the running kernel's [`Host`] (once, at boot; `stub::init`
/// calls this too).
pub fn init<H: Host>(host: &'static H) {
    CORE.init(host);
    arch::trampoline::set_return_callback(hooks::return_trampoline);
    arch::detour::set_detour_callback(hooks::detour);
}

/// Classic kprobes API: registers a kprobe at an address or `symbol+offset`.
pub fn register_kprobe(at: At<'_>, kp: Kprobe) -> Result<ProbeId, ProbeError> {
    CORE.register_kprobe(at, kp)
}

/// Classic kprobes API: registers a jprobe; `entry` is the address of an `extern "C"`
/// handler with the probed function's prototype (`handler as usize`).
pub fn register_jprobe(at: At<'_>, entry: usize) -> Result<ProbeId, ProbeError> {
    CORE.register_jprobe(at, entry, 0)
}

/// Classic kprobes API: registers a kretprobe (handler, maxactive, entry_handler, data_size).
/// (bytes in use, budget) of the kretprobe instance pools.
pub fn kretprobe_memory() -> (usize, usize) {
    kretprobe::pool_memory()
}

pub fn register_kretprobe(at: At<'_>, rp: Kretprobe) -> Result<ProbeId, ProbeError> {
    CORE.register_kretprobe(at, rp)
}

/// Turns jump optimization on (the default) or off, like Linux's
/// `debug.kprobes-optimization`: off puts every optimized probe back to
/// its int3; on optimizes every probe that qualifies.
pub fn set_optimization(on: bool) {
    CORE.set_optimization(on);
}

/// Removes any probe.
pub fn unregister(id: ProbeId) -> Result<(), ProbeError> {
    CORE.unregister(id)
}

/// Enables a probe.
pub fn enable(id: ProbeId) -> Result<(), ProbeError> {
    CORE.enable(id)
}

/// Disables a probe.
pub fn disable(id: ProbeId) -> Result<(), ProbeError> {
    CORE.disable(id)
}

/// The listing row of a probe.
pub fn info(id: ProbeId) -> Option<ProbeInfo> {
    CORE.info(id)
}

/// See [`Core::real_return_address`].
pub fn real_return_address(task: u32, slot: u64, value: u64) -> u64 {
    CORE.real_return_address(task, slot, value)
}

/// Address of the kretprobe trampoline.
pub fn trampoline_address() -> u64 {
    arch::trampoline::address()
}
