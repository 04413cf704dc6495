//! Writing kernel text while the kernel runs, on every CPU at once: the one
//! text-patching layer (probes' int3 bytes, gdb's breakpoints, slot code,
//! and multi-byte live patches such as jump-optimized probes).
//!
//! Kernel text may be mapped read-only; writes go through with CR0.WP
//! cleared for the duration of the copy, interrupts off so nothing else runs
//! on this CPU with WP clear.
//!
//! Cross-modifying code (Intel SDM Vol. 3, 8.1.3): after bytes change, every
//! CPU that may execute them must run a serialising instruction before it
//! does. [`sync_all`] makes that happen: this CPU runs `cpuid`, every other
//! online CPU gets an NMI whose handler calls [`ack_sync`] (and CPUs that
//! wait with NMIs blocked, parked by the debugger or spinning in
//! [`on_breakpoint`], call it from their loops), and the writer waits for
//! all acknowledgements. An NMI is used, not a maskable IPI, so a CPU
//! spinning with interrupts off (a lock, a handler) still answers.
//!
//! Single-byte changes (int3 in or out) are atomic for every CPU:
//! [`write`] stores, serialises and kicks the others with the sync NMI
//! without waiting ([`kick_all`] says why that is enough for int3 bytes). A multi-byte change of live code uses
//! [`poke_bp`], Linux's `text_poke_bp` protocol:
//! 1. write an int3 over the first byte (unless one is there), sync;
//! 2. write every byte but the first, sync;
//! 3. write the first byte, sync.
//!
//! A CPU that reaches the temporary int3 meanwhile spins in
//! [`on_breakpoint`] (acknowledging syncs) until the patch is complete,
//! then executes the new instruction from its first byte. When the first
//! byte was already an int3 (a probe's), that int3's owner handles hits
//! during the patch as before.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::registers::control::{Cr0, Cr0Flags};

use crate::percpu::{MAX_CPUS, cpu_id, online_count, online_mask};

/// The breakpoint instruction byte (`int3`) a probe writes over the first
/// byte of the probed instruction.
pub const BREAKPOINT: u8 = 0xcc;

/// Copies bytes with WP off and interrupts off; no serialisation.
///
/// # Safety
/// As for [`write`].
unsafe fn raw_write(addr: u64, bytes: &[u8]) {
    crate::cpu::without_interrupts(|| {
        let cr0 = Cr0::read();
        // SAFETY: clearing WP only lets ring 0 write read-only pages; it is
        // restored below before interrupts come back on.
        unsafe { Cr0::write(cr0 - Cr0Flags::WRITE_PROTECT) };
        let dst = addr as *mut u8;
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: the caller guarantees the range is mapped kernel memory.
            unsafe { dst.add(i).write_volatile(b) };
        }
        // SAFETY: restores the value read above.
        unsafe { Cr0::write(cr0) };
    });
}

/// Copies `bytes` to kernel text at `addr`. A single byte (an int3 in or
/// out at an instruction boundary, which other CPUs may be executing)
/// serialises every CPU ([`sync_all`]) before this returns; longer writes
/// only this CPU: they go to code no CPU can reach yet (an out-of-line
/// slot before its probe is published: a CPU gets there only through a
/// trap, whose `iretq` serialises it) or to a stopped machine (gdb's
/// writes: the parked CPUs serialise when they leave their trap).
///
/// # Safety
/// `addr..addr + bytes.len()` must be mapped kernel memory, and no CPU may
/// be executing the bytes being changed except a single-byte instruction
/// boundary change (int3 in or out). Multi-byte changes of code other CPUs
/// may run go through [`poke_bp`].
pub unsafe fn write(addr: u64, bytes: &[u8]) {
    // SAFETY: as the caller guarantees.
    unsafe { raw_write(addr, bytes) };
    if bytes.len() == 1 {
        kick_all();
    } else {
        serialize();
    }
}

/// Serialises this CPU and sends every other online CPU the sync NMI
/// without waiting for it. For single-byte int3 changes: the byte is
/// atomic for every CPU; what a wait would add is only "every CPU has seen
/// it by the time this returns", which the probe core does not rely on: a
/// CPU that still traps on a removed int3 finds no point and re-executes
/// the restored byte, and points are freed only after the grace period.
/// Waiting would cost one host scheduling round of every vCPU per write on
/// an overloaded TCG host (tens of ms).
pub fn kick_all() {
    serialize();
    if online_count() <= 1 {
        return;
    }
    SYNC_GEN.fetch_add(1, Ordering::AcqRel);
    crate::apic::send_nmi_all_but_self();
}

/// Makes this CPU's view of the code byte at `addr` current, for a CPU
/// that trapped on an int3 memory no longer holds: it rewrites the byte
/// with its own value (an atomic `lock or 0`: a concurrent writer's byte
/// survives) and serialises. On hardware the serialisation is what counts;
/// under QEMU's MTTCG a block translated from the int3 while another vCPU
/// restored the byte can outlive the store that restored it (the store
/// raced with the page being marked as holding code), and the trapping
/// vCPU would run the stale int3 forever; its own store to the page drops
/// every block translated from it.
///
/// # Safety
/// `addr` is mapped kernel text.
pub unsafe fn refetch(addr: u64) {
    crate::cpu::without_interrupts(|| {
        let cr0 = Cr0::read();
        // SAFETY: clearing WP only lets ring 0 write read-only pages; it is
        // restored below before interrupts come back on.
        unsafe { Cr0::write(cr0 - Cr0Flags::WRITE_PROTECT) };
        // SAFETY: the caller guarantees `addr` is mapped; `lock or` with 0
        // stores the byte's own value atomically.
        unsafe {
            core::arch::asm!("lock or byte ptr [{0}], 0", in(reg) addr, options(nostack, preserves_flags))
        };
        // SAFETY: restores the value read above.
        unsafe { Cr0::write(cr0) };
    });
    serialize();
}

/// Serialises the instruction stream of this CPU (after modifying code).
pub fn serialize() {
    let _ = core::arch::x86_64::__cpuid(0);
}

/// Generation of the last sync request.
static SYNC_GEN: AtomicU64 = AtomicU64::new(0);
/// The last generation each CPU acknowledged (after serialising).
static SYNC_SEEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Syncs that timed out (a CPU that did not answer its NMI in time).
static SYNC_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
/// Syncs that needed other CPUs (for tests and statistics).
static SYNC_IPIS: AtomicU64 = AtomicU64::new(0);

/// How long [`sync_all`] waits for the other CPUs, in TSC ticks.
const SYNC_TIMEOUT_TSC: u64 = 4_000_000_000;

/// This CPU answers every sync request made so far: it serialises and
/// records the generation. Called by the NMI handler and by every loop that
/// waits with NMIs blocked (the debugger's park loop, [`on_breakpoint`]).
#[inline]
pub fn ack_sync() {
    let g = SYNC_GEN.load(Ordering::Acquire);
    serialize();
    if let Some(seen) = SYNC_SEEN.get(cpu_id()) {
        seen.fetch_max(g, Ordering::AcqRel);
    }
}

/// A sync request is waiting for this CPU's acknowledgement.
pub fn sync_pending() -> bool {
    let g = SYNC_GEN.load(Ordering::Acquire);
    SYNC_SEEN
        .get(cpu_id())
        .is_some_and(|s| s.load(Ordering::Acquire) < g)
}

/// Serialises this CPU and every other online CPU (NMI to each, then waits
/// for their [`ack_sync`]). `false` if one did not answer in time (it is
/// counted in [`sync_stats`]).
pub fn sync_all() -> bool {
    serialize();
    if online_count() <= 1 {
        return true;
    }
    let g = SYNC_GEN.fetch_add(1, Ordering::AcqRel) + 1;
    SYNC_IPIS.fetch_add(1, Ordering::Relaxed);
    let me = cpu_id();
    crate::apic::send_nmi_all_but_self();
    let start = crate::cpu::rdtsc();
    loop {
        // Answer the others' requests while we wait for ours.
        ack_sync();
        let mask = online_mask();
        let done = (0..MAX_CPUS)
            .filter(|&c| c != me && mask & (1 << c) != 0)
            .all(|c| SYNC_SEEN[c].load(Ordering::Acquire) >= g);
        if done {
            return true;
        }
        if crate::cpu::rdtsc().wrapping_sub(start) > SYNC_TIMEOUT_TSC {
            SYNC_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        core::hint::spin_loop();
    }
}

/// (syncs that sent NMIs, syncs that timed out).
pub fn sync_stats() -> (u64, u64) {
    (
        SYNC_IPIS.load(Ordering::Relaxed),
        SYNC_TIMEOUTS.load(Ordering::Relaxed),
    )
}

/// One live patch at a time.
static POKE_LOCK: spin::Mutex<()> = spin::Mutex::new(());
/// Sequence count of live patches: odd while one is in progress. Read
/// around [`POKE_ADDR`] and [`POKE_OWNS_INT3`] like a seqlock.
static POKE_SEQ: AtomicU64 = AtomicU64::new(0);
/// Address of the patch in progress, or of the last one (0: none yet).
/// Kept after the patch: a CPU that trapped on its temporary int3 may look
/// only after the patch is complete (see [`on_breakpoint`]).
static POKE_ADDR: AtomicU64 = AtomicU64::new(0);
/// The patch wrote the int3 at `POKE_ADDR` itself (hits there are ours).
static POKE_OWNS_INT3: AtomicBool = AtomicBool::new(false);

/// Replaces the instruction bytes at `addr` with `bytes` while other CPUs
/// may be executing them (the `text_poke_bp` protocol, see the module doc).
///
/// # Safety
/// `addr..addr + bytes.len()` is mapped kernel text starting at an
/// instruction boundary; no CPU may be executing (or be interrupted inside)
/// the bytes after the first, and no jump may land inside them (the
/// caller's proof, as for Linux's optprobes); the first byte is either the
/// original instruction's or an int3 whose owner handles hits meanwhile.
pub unsafe fn poke_bp(addr: u64, bytes: &[u8]) {
    let Some((&first, tail)) = bytes.split_first() else {
        return;
    };
    if tail.is_empty() {
        // SAFETY: a single byte at an instruction boundary, as the caller guarantees.
        unsafe { write(addr, bytes) };
        return;
    }
    // Interrupts off for the whole patch: CPUs that reach the temporary
    // int3 wait (interrupts off) for this CPU to finish; being switched
    // out here would leave them waiting for a task nobody can run.
    crate::cpu::without_interrupts(|| {
        // SAFETY: as the caller guarantees.
        unsafe { poke_bp_locked(addr, first, tail) }
    });
}

/// # Safety
/// As for [`poke_bp`]; interrupts are off.
unsafe fn poke_bp_locked(addr: u64, first: u8, tail: &[u8]) {
    let _one = lock_polling_syncs();
    // SAFETY: the caller guarantees the range is mapped kernel text.
    let old = unsafe { core::ptr::read_volatile(addr as *const u8) };
    // Odd first, then the fields: a reader that sees the old fields under
    // an odd count waits for the count to move (see `on_breakpoint`).
    POKE_SEQ.fetch_add(1, Ordering::SeqCst);
    POKE_OWNS_INT3.store(old != BREAKPOINT, Ordering::SeqCst);
    POKE_ADDR.store(addr, Ordering::SeqCst);
    if old != BREAKPOINT {
        // SAFETY: one byte at an instruction boundary of mapped text.
        unsafe { raw_write(addr, &[BREAKPOINT]) };
        sync_all();
    }
    // SAFETY: mapped text; while the first byte is an int3 (every CPU has
    // serialised since), no CPU executes the tail: the caller's proof for
    // CPUs already past the first byte, the int3 for the rest.
    unsafe { raw_write(addr + 1, tail) };
    sync_all();
    // SAFETY: one byte at an instruction boundary; the tail behind it is
    // complete on every CPU.
    unsafe { raw_write(addr, &[first]) };
    sync_all();
    POKE_SEQ.fetch_add(1, Ordering::SeqCst);
}

/// Takes [`POKE_LOCK`], answering sync requests while it waits (the holder
/// may be waiting for this CPU's acknowledgement).
fn lock_polling_syncs() -> spin::MutexGuard<'static, ()> {
    loop {
        if let Some(g) = POKE_LOCK.try_lock() {
            return g;
        }
        ack_sync();
        core::hint::spin_loop();
    }
}

/// #BP hook, called before anyone else looks at an int3: a hit on the
/// temporary int3 of a [`poke_bp`] waits (answering syncs) until the patch
/// is complete and re-executes the new instruction. `true`: handled,
/// resume the frame.
///
/// The hit may be looked at only after the patch is complete: the sync
/// NMI reaches a CPU between the trap and this hook, so the last
/// [`sync_all`] does not wait for CPUs already in their #BP entry (Linux's
/// maskable sync IPI does, which this NMI cannot). So the last patch's
/// address is kept, and a hit there whose int3 is gone re-executes the
/// instruction now in place. [`POKE_SEQ`] tells a consistent view of the
/// patch fields and the byte from one torn by a patch starting meanwhile.
#[inline]
pub fn on_breakpoint(frame: &mut crate::TrapFrame) -> bool {
    let addr = frame.rip.wrapping_sub(1);
    // Every int3 comes here first (probe hits included): one load decides
    // for all but hits at the current or last patch's address. A patch in
    // progress stores its address before it writes its int3, so a hit on
    // that int3 sees the address.
    if POKE_ADDR.load(Ordering::Acquire) != addr {
        return false;
    }
    on_patched_breakpoint(frame, addr)
}

/// [`on_breakpoint`] at the current or last patch's address.
#[cold]
#[inline(never)]
fn on_patched_breakpoint(frame: &mut crate::TrapFrame, addr: u64) -> bool {
    if addr == 0 {
        // No patch yet (the address starts at 0).
        return false;
    }
    loop {
        let seq = POKE_SEQ.load(Ordering::SeqCst);
        let poked = POKE_ADDR.load(Ordering::SeqCst);
        let owns = POKE_OWNS_INT3.load(Ordering::SeqCst);
        if seq % 2 == 1 {
            if poked == addr && !owns {
                // A probe's int3 under the patch: its owner handles hits.
                return false;
            }
            // A patch is in progress (maybe here, maybe with its fields
            // not yet stored): wait for it to finish, then look again.
            while POKE_SEQ.load(Ordering::SeqCst) == seq {
                ack_sync();
                core::hint::spin_loop();
            }
            continue;
        }
        if poked != addr {
            if POKE_SEQ.load(Ordering::SeqCst) == seq {
                return false;
            }
            continue;
        }
        // SAFETY: `addr` is the start of a completed patch of mapped text.
        let byte = unsafe { core::ptr::read_volatile(addr as *const u8) };
        if POKE_SEQ.load(Ordering::SeqCst) != seq {
            continue;
        }
        if byte == BREAKPOINT {
            // An int3 placed since (a probe's, a debugger's): its owner's.
            return false;
        }
        frame.rip = addr;
        // SAFETY: `addr` is the start of a completed patch of mapped text.
        unsafe { refetch(addr) };
        return true;
    }
}
