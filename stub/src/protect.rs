//! What gdb may not put a breakpoint or watchpoint on: the debugger's own
//! code and data. A trap there fires inside the stub or the probe core
//! (recursion, a `FATAL: debug exception nobody owns`, or a stop with the
//! allocator's or the probe core's lock held that the stop loop then needs).
//!
//! - Code (`Z0`, `Z1`): anything but kernel text, and the blacklisted text
//!   (trap entry, the probe core, the stub, the UART, the allocator, the
//!   switch path: `probes::Core::gdb_refusal`), like kgdb refuses
//!   kprobe-blacklisted addresses.
//! - Data (`Z2`-`Z4`): the stub's session (framer and packet buffer
//!   included), gdbstub's packet buffer, the probe core, and the ranges the
//!   kernel registers with [`protect_data`] (the reference kernel registers
//!   its heap, which holds the probe tables and event rings).
//!
//! The debug registers are also off while the stub serves (`arch::debugreg::
//! disarm`), so even an allowed watchpoint never fires inside it.
//!
//! Refusals answer `E0d` (EACCES) and are listed, with the reason, by
//! `monitor refused`. An allowed watchpoint that the probe core's own
//! capture reads set off is not a stop (counted as `own-accesses` there).

use core::fmt::Write;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

/// Most data ranges a kernel can register.
const MAX_RANGES: usize = 8;
/// Refusals `monitor refused` remembers.
const LOG: usize = 8;

#[derive(Clone)]
struct Named {
    range: Range<u64>,
    name: &'static str,
}

#[derive(Clone, Copy)]
struct Refusal {
    request: u8,
    addr: u64,
    len: u64,
    reason: &'static str,
}

struct State {
    ranges: [Option<Named>; MAX_RANGES],
    log: [Option<Refusal>; LOG],
    next: usize,
    total: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    ranges: [const { None }; MAX_RANGES],
    log: [None; LOG],
    next: 0,
    total: 0,
});

/// Registers kernel data the debugger depends on (e.g. the heap): gdb's
/// watchpoints on it are refused. `false` when the table is full.
pub fn protect_data(range: Range<u64>, name: &'static str) -> bool {
    let mut s = STATE.lock();
    match s.ranges.iter_mut().find(|r| r.is_none()) {
        Some(slot) => {
            *slot = Some(Named { range, name });
            true
        }
        None => false,
    }
}

fn overlaps(a: &Range<u64>, addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len.max(1));
    addr < a.end && a.start < end
}

fn static_range<T>(x: &T) -> Range<u64> {
    let start = x as *const T as u64;
    start..start + core::mem::size_of::<T>() as u64
}

/// Why a watchpoint on `addr..addr+len` must be refused.
pub fn data_refusal(addr: u64, len: u64) -> Option<&'static str> {
    let own: [(Range<u64>, &'static str); 3] = [
        (
            static_range(&crate::machine::SESSION),
            "the stub's session state (framer, packet buffer, breakpoint tables)",
        ),
        (
            crate::machine::packet_buffer_range(),
            "gdbstub's packet buffer",
        ),
        (static_range(&probes::CORE), "the probe core"),
    ];
    if let Some((_, why)) = own.iter().find(|(r, _)| overlaps(r, addr, len)) {
        return Some(why);
    }
    let s = STATE.try_lock()?;
    s.ranges
        .iter()
        .flatten()
        .find(|n| overlaps(&n.range, addr, len))
        .map(|n| n.name)
}

/// Why a breakpoint on code at `addr` must be refused.
pub fn code_refusal(addr: u64) -> Option<&'static str> {
    match probes::CORE.gdb_refusal(addr)? {
        probes::ProbeError::NotText => Some("not kernel text"),
        _ => Some("code the debugger or the probe core runs (blacklisted)"),
    }
}

/// Records a refusal for `monitor refused`.
pub fn record(request: u8, addr: u64, len: u64, reason: &'static str) {
    if let Some(mut s) = STATE.try_lock() {
        let i = s.next % LOG;
        if let Some(slot) = s.log.get_mut(i) {
            *slot = Some(Refusal {
                request,
                addr,
                len,
                reason,
            });
        }
        s.next = s.next.wrapping_add(1);
        s.total += 1;
    }
}

/// `monitor refused`: the last refusals, oldest first, then the total.
pub fn report(out: &mut dyn Write) -> core::fmt::Result {
    let s = STATE.lock();
    for k in 0..LOG {
        if let Some(Some(r)) = s.log.get((s.next + k) % LOG) {
            writeln!(
                out,
                "refused request=Z{} addr={:#x} len={} reason=\"{}\"",
                char::from(r.request),
                r.addr,
                r.len,
                r.reason
            )?;
        }
    }
    writeln!(
        out,
        "refusals total={} own-accesses={}",
        s.total,
        OWN_ACCESSES.load(Ordering::Relaxed)
    )
}

/// Data watchpoint hits set off by the probe core's own reads (captures),
/// not reported as stops.
static OWN_ACCESSES: AtomicU64 = AtomicU64::new(0);

/// Counts one watchpoint hit by the probe core's own access.
pub fn count_own_access() {
    OWN_ACCESSES.fetch_add(1, Ordering::Relaxed);
}
