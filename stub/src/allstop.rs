//! All-stop on several CPUs: while the debugger serves a stop on one CPU,
//! every other CPU is parked inside a trap handler, its interrupted frame
//! published for the debugger (gdb reads and writes the registers of the
//! tasks they run).
//!
//! Protocol:
//! - **Ownership.** One CPU at a time is the debugger's ([`acquire`]): the
//!   stub's trap hooks and its COM2/timer paths take ownership before they
//!   touch the session. A CPU that finds another one owning it waits
//!   *parked* (its frame published, answering text-patching syncs) until
//!   the owner lets go, then tries again: a breakpoint hit on a second CPU
//!   during a stop is reported at the next continue, never lost, never
//!   reported twice (a breakpoint gdb removed meanwhile is re-executed).
//! - **Stopping the world.** Before gdb hears of a stop, the owner sets
//!   `STOP_ALL` and sends an NMI to every other CPU ([`stop_others`]); the
//!   kernel's NMI handler calls [`nmi`], which parks the CPU until
//!   `STOP_ALL` clears. The owner waits until every online CPU is parked.
//! - **Resuming.** `continue` clears `STOP_ALL` and ownership together
//!   ([`release`]); every parked CPU reloads the debugger's debug registers
//!   ([`arch::debugreg::follow`]) and returns from its trap. A single step
//!   keeps ownership and the others parked: only the stepping CPU runs
//!   (gdb's scheduler-locking "step" behaviour, always on).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use arch::TrapFrame;
use arch::percpu::{MAX_CPUS, cpu_id, online_count, online_mask};

const NOBODY: usize = usize::MAX;

/// The CPU that owns the debugger (or [`NOBODY`]).
static OWNER: AtomicUsize = AtomicUsize::new(NOBODY);
/// The owner stopped the world: NMIs park.
static STOP_ALL: AtomicBool = AtomicBool::new(false);
/// Each parked CPU's interrupted frame (null: not parked).
static PARKED: [AtomicPtr<TrapFrame>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// Stops whose other CPUs did not all park in time.
static PARK_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// How long [`stop_others`] waits for the other CPUs, in TSC ticks.
const PARK_TIMEOUT_TSC: u64 = 4_000_000_000;

/// How this CPU came to own the debugger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// It just took ownership: let go with [`release_if`] unless a stop
    /// keeps it.
    Fresh,
    /// It owned it already (a step's trap, a nested path).
    Already,
}

/// Takes the debugger for this CPU, waiting parked (with `frame`
/// published) while another CPU has it.
pub fn acquire(frame: &mut TrapFrame) -> Entry {
    let me = cpu_id();
    loop {
        match OWNER.compare_exchange(NOBODY, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Entry::Fresh,
            Err(o) if o == me => return Entry::Already,
            Err(_) => park(frame, || OWNER.load(Ordering::Acquire) != NOBODY),
        }
    }
}

/// Takes the debugger only if nobody has it (timer-tick paths that can
/// skip their work). `Some(Entry)` when this CPU owns it now.
pub fn try_acquire() -> Option<Entry> {
    let me = cpu_id();
    match OWNER.compare_exchange(NOBODY, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(Entry::Fresh),
        Err(o) if o == me => Some(Entry::Already),
        Err(_) => None,
    }
}

/// Lets go of a [`Entry::Fresh`] ownership that no stop kept.
pub fn release_if(entry: Entry) {
    if entry == Entry::Fresh && !STOP_ALL.load(Ordering::Acquire) {
        OWNER.store(NOBODY, Ordering::Release);
    }
}

/// Ends a stop: every parked CPU resumes, nobody owns the debugger.
pub fn release() {
    if OWNER.load(Ordering::Acquire) != cpu_id() {
        return;
    }
    STOP_ALL.store(false, Ordering::Release);
    OWNER.store(NOBODY, Ordering::Release);
}

/// Parks every other online CPU (the owner calls this before reporting a
/// stop): an NMI reaches each, the kernel's NMI handler calls [`nmi`].
/// Returns when all are parked (or after a timeout, counted).
pub fn stop_others() {
    if online_count() <= 1 || OWNER.load(Ordering::Acquire) != cpu_id() {
        return;
    }
    if !STOP_ALL.swap(true, Ordering::AcqRel) {
        arch::apic::send_nmi_all_but_self();
    }
    let me = cpu_id();
    let start = arch::cpu::rdtsc();
    loop {
        arch::text::ack_sync();
        let mask = online_mask();
        let all = (0..MAX_CPUS)
            .filter(|&c| c != me && mask & (1 << c) != 0)
            .all(|c| !PARKED[c].load(Ordering::Acquire).is_null());
        if all {
            return;
        }
        if arch::cpu::rdtsc().wrapping_sub(start) > PARK_TIMEOUT_TSC {
            PARK_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        core::hint::spin_loop();
    }
}

/// The kernel's NMI handler: answers a text-patching sync, and parks this
/// CPU while another CPU has stopped the world. `true` when the NMI was
/// the debugger's (parked and released).
pub fn nmi(frame: &mut TrapFrame) -> bool {
    arch::text::ack_sync();
    let o = OWNER.load(Ordering::Acquire);
    if STOP_ALL.load(Ordering::Acquire) && o != NOBODY && o != cpu_id() {
        park(frame, || STOP_ALL.load(Ordering::Acquire));
        return true;
    }
    false
}

/// Waits with `frame` published while `waiting()` holds.
fn park(frame: &mut TrapFrame, waiting: impl Fn() -> bool) {
    let me = cpu_id();
    let Some(slot) = PARKED.get(me) else {
        return;
    };
    slot.store(frame as *mut TrapFrame, Ordering::Release);
    while waiting() {
        arch::text::ack_sync();
        core::hint::spin_loop();
    }
    slot.store(core::ptr::null_mut(), Ordering::Release);
    arch::debugreg::follow();
}

/// The registers of CPU `cpu` while it is parked.
pub fn parked_frame(cpu: usize) -> Option<TrapFrame> {
    let p = PARKED.get(cpu)?.load(Ordering::Acquire);
    // SAFETY: a parked CPU's frame stays valid (on its trap stack) until it
    // clears the pointer, which it does only after the owner (this CPU)
    // released the stop; the owner is the only reader.
    (!p.is_null()).then(|| unsafe { *p })
}

/// Replaces the registers of parked CPU `cpu` (gdb writing a register of
/// the task it runs). `false` when it is not parked.
pub fn set_parked_frame(cpu: usize, frame: &TrapFrame) -> bool {
    let Some(p) = PARKED.get(cpu).map(|p| p.load(Ordering::Acquire)) else {
        return false;
    };
    if p.is_null() {
        return false;
    }
    // SAFETY: as in `parked_frame`: the parked CPU does not touch its frame
    // until the owner releases it.
    unsafe { *p = *frame };
    true
}

/// CPUs parked right now (bit n = CPU n).
pub fn parked_mask() -> u32 {
    let mut m = 0;
    for (c, p) in PARKED.iter().enumerate() {
        if !p.load(Ordering::Acquire).is_null() {
            m |= 1 << c;
        }
    }
    m
}

/// The CPU owning the debugger, if any.
pub fn owner() -> Option<usize> {
    let o = OWNER.load(Ordering::Acquire);
    (o != NOBODY).then_some(o)
}

/// Stops whose other CPUs did not all park in time.
pub fn park_timeouts() -> u64 {
    PARK_TIMEOUTS.load(Ordering::Relaxed)
}
