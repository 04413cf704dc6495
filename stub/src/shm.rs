//! The shared-memory channel (issue 17, docs/design/shm.md): `monitor shm`
//! tells a debugger that maps guest RAM where to read (CR3, the RAM range,
//! the event rings), `monitor shm direct` hands the rings to it (the stub
//! stops draining them over the UART), `monitor shm uart` hands them back.
//!
//! The direct consumer bumps a heartbeat word in guest memory while it
//! lives. [`watch`] (every poll) hands the rings back to the stub when the
//! heartbeat has not moved for [`STALL_SECS`] of kernel time (the shell
//! died or hangs), and [`detached`] when the debugger leaves, so a gdb
//! user attaching later gets `O` packets again.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use probes::Host;
use proto::command::ShmAction;
use proto::reply::ShmRow;

/// Seconds without a heartbeat after which the stub drains again.
pub const STALL_SECS: u64 = 2;

static LAST_BEAT: AtomicU64 = AtomicU64::new(0);
/// Timer tick at which the heartbeat last moved.
static BEAT_TICK: AtomicU64 = AtomicU64::new(0);
/// Hand-backs because the consumer stopped beating (for the tests).
pub static STALLS: AtomicU64 = AtomicU64::new(0);

/// `monitor shm [direct|uart]`.
pub fn command(action: ShmAction, host: &dyn Host, out: &mut dyn Write) -> fmt::Result {
    match action {
        ShmAction::Info => {}
        ShmAction::Direct => {
            LAST_BEAT.store(probes::commands::direct_beat(), Ordering::Relaxed);
            BEAT_TICK.store(host.timer().0, Ordering::Relaxed);
            probes::commands::set_direct(true);
        }
        ShmAction::Uart => {
            probes::commands::set_direct(false);
        }
    }
    writeln!(out, "{}", row(host))
}

/// The layout row.
pub fn row(host: &dyn Host) -> ShmRow {
    let l = probes::commands::shm_layout();
    ShmRow {
        cr3: arch::mem::cr3(),
        ram_start: 0x10_0000,
        ram_end: host.ram_end().unwrap_or(0),
        tramp: probes::trampoline_address(),
        rings: l.rings,
        stride: l.ring.stride as u64,
        cpus: l.cpus as u64,
        size: l.ring.size as u64,
        buf: l.ring.buf as u64,
        head: l.ring.head as u64,
        tail: l.ring.tail as u64,
        produced: l.ring.produced as u64,
        dropped: l.ring.dropped as u64,
        direct: l.ring.direct_delivered as u64,
        consumer: l.consumer,
        beat: l.beat,
        epoch: probes::commands::direct_consumer(),
    }
}

/// Hands the rings back when the direct consumer's heartbeat stalled.
pub fn watch(host: &dyn Host) {
    if probes::commands::direct_consumer() == 0 {
        return;
    }
    let (ticks, hz) = host.timer();
    let beat = probes::commands::direct_beat();
    if beat != LAST_BEAT.swap(beat, Ordering::Relaxed) {
        BEAT_TICK.store(ticks, Ordering::Relaxed);
        return;
    }
    let since = ticks.saturating_sub(BEAT_TICK.load(Ordering::Relaxed));
    if hz != 0 && since > STALL_SECS.saturating_mul(hz) {
        probes::commands::set_direct(false);
        STALLS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The debugger left: the rings are the stub's again.
pub fn detached() {
    if probes::commands::direct_consumer() != 0 {
        probes::commands::set_direct(false);
    }
}
