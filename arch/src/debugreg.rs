//! Debug registers: hardware breakpoints and watchpoints (DR0-DR3, DR6, DR7).
//!
//! [`Dr7`] is a plain value (host-tested); [`Slots`] keeps the four slots'
//! settings and [`Slots::load`] writes them to the CPU. [`Dr6`] decodes why a
//! #DB happened.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Number of address slots (DR0-DR3).
pub const SLOTS: usize = 4;

/// What a slot triggers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Instruction fetch (a hardware breakpoint; length must be 1).
    Execute,
    /// Data write.
    Write,
    /// Data read or write (x86 has no read-only watch).
    ReadWrite,
}

impl Condition {
    fn bits(self) -> u64 {
        match self {
            Condition::Execute => 0b00,
            Condition::Write => 0b01,
            Condition::ReadWrite => 0b11,
        }
    }
}

/// Why a slot could not be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugRegError {
    /// All four slots are in use.
    NoFreeSlot,
    /// Length not 1, 2, 4 or 8, or an execute slot with length != 1.
    BadLength,
    /// The address is not aligned to the length.
    Unaligned,
    /// No slot matches (address, condition, length).
    NotFound,
}

/// One slot's setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub addr: u64,
    pub cond: Condition,
    /// 1, 2, 4 or 8 bytes.
    pub len: u8,
}

fn len_bits(len: u8) -> Option<u64> {
    match len {
        1 => Some(0b00),
        2 => Some(0b01),
        4 => Some(0b11),
        8 => Some(0b10),
        _ => None,
    }
}

/// A DR7 value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dr7(pub u64);

impl Dr7 {
    /// Bit 10 reads as 1; GE (bit 9) asks for exact data breakpoints.
    const BASE: u64 = (1 << 10) | (1 << 9);

    /// The DR7 value enabling exactly `slots` (globally: G0-G3).
    pub fn from_slots(slots: &[Option<Slot>; SLOTS]) -> Dr7 {
        let mut v = Self::BASE;
        for (i, s) in slots.iter().enumerate() {
            if let Some(s) = s {
                let len = len_bits(s.len).unwrap_or(0);
                v |= 1 << (2 * i + 1);
                v |= (s.cond.bits() | (len << 2)) << (16 + 4 * i);
            }
        }
        Dr7(v)
    }

    /// Slot `i` is enabled (L or G bit).
    pub fn enabled(&self, i: usize) -> bool {
        i < SLOTS && self.0 & (0b11 << (2 * i)) != 0
    }
}

/// A DR6 value: why the last #DB happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dr6(pub u64);

impl Dr6 {
    /// The lowest slot whose condition was met (B0-B3).
    pub fn hit_slot(&self) -> Option<usize> {
        (0..SLOTS).find(|i| self.0 & (1 << i) != 0)
    }

    /// A single step (BS, TF) caused the trap.
    pub fn single_step(&self) -> bool {
        self.0 & (1 << 14) != 0
    }
}

/// The four slots as the debugger sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    slots: [Option<Slot>; SLOTS],
}

impl Slots {
    pub const fn new() -> Self {
        Slots {
            slots: [None; SLOTS],
        }
    }

    /// Takes a free slot for `slot`; returns its index.
    pub fn add(&mut self, slot: Slot) -> Result<usize, DebugRegError> {
        if len_bits(slot.len).is_none() || (slot.cond == Condition::Execute && slot.len != 1) {
            return Err(DebugRegError::BadLength);
        }
        if !slot.addr.is_multiple_of(u64::from(slot.len)) {
            return Err(DebugRegError::Unaligned);
        }
        let (i, free) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.is_none())
            .ok_or(DebugRegError::NoFreeSlot)?;
        *free = Some(slot);
        Ok(i)
    }

    /// Frees the slot holding exactly `slot`.
    pub fn remove(&mut self, slot: Slot) -> Result<usize, DebugRegError> {
        let (i, s) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| **s == Some(slot))
            .ok_or(DebugRegError::NotFound)?;
        *s = None;
        Ok(i)
    }

    /// Frees every slot.
    pub fn clear(&mut self) {
        self.slots = [None; SLOTS];
    }

    /// Slot `i`'s setting.
    pub fn get(&self, i: usize) -> Option<Slot> {
        self.slots.get(i).copied().flatten()
    }

    pub fn dr7(&self) -> Dr7 {
        Dr7::from_slots(&self.slots)
    }

    /// Writes DR0-DR3 and DR7 of this CPU and publishes them for the other
    /// CPUs, which load them at [`follow`] (their next timer tick, or when
    /// the debugger releases them from a stop).
    ///
    /// # Safety
    /// Ring 0 only. Breakpoints on code or data the #DB path itself uses
    /// recurse; the caller (the debugger) is responsible for what it arms.
    pub unsafe fn load(&self) {
        let addrs = self.slots.map(|s| s.map_or(0, |s| s.addr));
        let dr7 = self.dr7().0;
        publish(addrs, dr7);
        // SAFETY: as the caller guarantees.
        unsafe { load_raw(addrs, dr7) };
    }
}

impl Slots {
    /// Some slot is a data watchpoint.
    pub fn any_watch(&self) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|s| s.cond != Condition::Execute)
    }

    /// The data slots (write or read/write watchpoints) an access of
    /// `len` bytes at `addr` sets off: bit i for slot i.
    pub fn watch_hits(&self, addr: u64, len: u64, read: bool, write: bool) -> u8 {
        let mut hits = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            let fires = match s.cond {
                Condition::Execute => false,
                Condition::Write => write,
                Condition::ReadWrite => read || write,
            };
            let end = s.addr.wrapping_add(u64::from(s.len));
            if fires && addr < end && s.addr < addr.wrapping_add(len) {
                hits |= 1 << i;
            }
        }
        hits
    }

    /// As [`Slots::load`], but this CPU runs with the slots in `off` (bit
    /// i: slot i) disabled; the other CPUs follow the full setting. For the
    /// debugger's single step over an instruction that hits them (see
    /// `insn::access`): the next load puts them back.
    ///
    /// # Safety
    /// As for [`Slots::load`].
    pub unsafe fn load_except(&self, off: u8) {
        let addrs = self.slots.map(|s| s.map_or(0, |s| s.addr));
        let dr7 = self.dr7().0;
        publish(addrs, dr7);
        let mut local = self.slots;
        for (i, s) in local.iter_mut().enumerate() {
            if off & (1 << i) != 0 {
                *s = None;
            }
        }
        // SAFETY: as the caller guarantees.
        unsafe { load_raw(addrs, Dr7::from_slots(&local).0) };
    }
}

/// The debugger's slots as every CPU should have them (DR0-DR3, DR7).
static SHARED_ADDR: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static SHARED_DR7: AtomicU64 = AtomicU64::new(0);
/// Bumped on every publish; odd while a publish is being written.
static SHARED_GEN: AtomicU64 = AtomicU64::new(0);
/// The generation each CPU loaded.
static LOADED_GEN: [AtomicU64; crate::percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::percpu::MAX_CPUS];

fn publish(addrs: [u64; SLOTS], dr7: u64) {
    SHARED_GEN.fetch_add(1, Ordering::AcqRel);
    for (a, v) in SHARED_ADDR.iter().zip(addrs) {
        a.store(v, Ordering::Relaxed);
    }
    SHARED_DR7.store(dr7, Ordering::Relaxed);
    let g = SHARED_GEN.fetch_add(1, Ordering::AcqRel) + 1;
    if let Some(l) = LOADED_GEN.get(crate::percpu::cpu_id()) {
        l.store(g, Ordering::Relaxed);
    }
}

/// Loads the debugger's published slots into this CPU's debug registers if
/// they changed since this CPU last loaded them (DR0-DR7 are per CPU).
/// Called by each CPU on its timer tick and when a stop releases it.
pub fn follow() {
    let Some(loaded) = LOADED_GEN.get(crate::percpu::cpu_id()) else {
        return;
    };
    let g = SHARED_GEN.load(Ordering::Acquire);
    if g == loaded.load(Ordering::Relaxed) || g % 2 == 1 {
        return;
    }
    let mut addrs = [0u64; SLOTS];
    for (v, a) in addrs.iter_mut().zip(SHARED_ADDR.iter()) {
        *v = a.load(Ordering::Relaxed);
    }
    let dr7 = SHARED_DR7.load(Ordering::Relaxed);
    if SHARED_GEN.load(Ordering::Acquire) != g {
        return;
    }
    // SAFETY: the debugger's own slots, as it armed them on its CPU.
    unsafe { load_raw(addrs, dr7) };
    loaded.store(g, Ordering::Relaxed);
}

/// # Safety
/// As for [`Slots::load`].
unsafe fn load_raw(addrs: [u64; SLOTS], dr7: u64) {
    {
        // SAFETY: writing debug registers at CPL 0 has no memory effects; the
        // caller accepts the resulting traps. DR7 last so no slot fires half-set.
        unsafe {
            asm!("mov dr7, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags));
            asm!("mov dr0, {}", in(reg) addrs[0], options(nomem, nostack, preserves_flags));
            asm!("mov dr1, {}", in(reg) addrs[1], options(nomem, nostack, preserves_flags));
            asm!("mov dr2, {}", in(reg) addrs[2], options(nomem, nostack, preserves_flags));
            asm!("mov dr3, {}", in(reg) addrs[3], options(nomem, nostack, preserves_flags));
            asm!("mov dr7, {}", in(reg) dr7, options(nomem, nostack, preserves_flags));
        }
    }
}

/// Runs `f` with this CPU's hardware breakpoints and watchpoints masked
/// (DR7 = 0), then restores DR7. The debugger's own memory accesses go
/// through this: reading an address under a read/access watchpoint must
/// show gdb the value, not raise a #DB nobody owns.
pub fn masked<R>(f: impl FnOnce() -> R) -> R {
    let saved: u64;
    // SAFETY: reading and writing DR7 at CPL 0 has no memory effects; with
    // DR7 = 0 no debug register can fire during `f`.
    unsafe {
        asm!("mov {}, dr7", out(reg) saved, options(nomem, nostack, preserves_flags));
        asm!("mov dr7, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags));
    }
    let r = f();
    // SAFETY: as above; restores the slots that were armed before.
    unsafe { asm!("mov dr7, {}", in(reg) saved, options(nomem, nostack, preserves_flags)) };
    r
}

/// Disarms every hardware breakpoint and watchpoint of this CPU (DR7 = 0);
/// the debugger re-arms them from its table ([`Slots::load`]) when it
/// resumes. kgdb does the same while it runs.
pub fn disarm() {
    // SAFETY: writing DR7 at CPL 0 has no memory effects; 0 arms nothing.
    unsafe { asm!("mov dr7, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags)) };
}

/// Reads DR6.
pub fn read_dr6() -> Dr6 {
    let v: u64;
    // SAFETY: reading DR6 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)) };
    Dr6(v)
}

/// Resets DR6 to its idle value (the CPU never clears B0-B3/BS itself).
pub fn clear_dr6() {
    // SAFETY: writing DR6's architectural idle value at CPL 0 has no memory effects.
    unsafe {
        asm!("mov dr6, {}", in(reg) 0xFFFF_0FF0u64, options(nomem, nostack, preserves_flags))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr7_encoding() {
        let mut s = Slots::new();
        assert_eq!(s.dr7().0, 0x600);
        let i = s
            .add(Slot {
                addr: 0x1000,
                cond: Condition::Execute,
                len: 1,
            })
            .unwrap();
        assert_eq!(i, 0);
        assert_eq!(s.dr7().0, 0x602);
        s.add(Slot {
            addr: 0x2000,
            cond: Condition::Write,
            len: 8,
        })
        .unwrap();
        // G1 = bit 3; RW1 = 01 at bits 20-21, LEN1 = 10 at bits 22-23.
        assert_eq!(s.dr7().0, 0x600 | 0x2 | 0x8 | (0b1001 << 20));
        assert!(s.dr7().enabled(1));
        assert!(!s.dr7().enabled(2));
    }

    #[test]
    fn slots_run_out_and_free() {
        let mut s = Slots::new();
        let w = |addr| Slot {
            addr,
            cond: Condition::ReadWrite,
            len: 4,
        };
        for k in 0..4 {
            assert_eq!(s.add(w(k * 4)).unwrap(), k as usize);
        }
        assert_eq!(s.add(w(64)), Err(DebugRegError::NoFreeSlot));
        assert_eq!(s.remove(w(8)), Ok(2));
        assert_eq!(s.add(w(64)), Ok(2));
        assert_eq!(s.remove(w(1000)), Err(DebugRegError::NotFound));
        s.clear();
        assert_eq!(s.add(w(2)), Err(DebugRegError::Unaligned));
        assert_eq!(
            s.add(Slot {
                addr: 0,
                cond: Condition::Execute,
                len: 4
            }),
            Err(DebugRegError::BadLength)
        );
    }

    #[test]
    fn dr6_decoding() {
        assert_eq!(Dr6(0xFFFF_0FF0 | 0b0100).hit_slot(), Some(2));
        assert_eq!(Dr6(0xFFFF_0FF0).hit_slot(), None);
        assert!(Dr6(0xFFFF_4FF0).single_step());
    }

    #[test]
    fn watch_hits_match_condition_and_range() {
        let mut s = Slots::new();
        let slot = |addr, cond, len| Slot { addr, cond, len };
        s.add(slot(0x1000, Condition::Execute, 1)).unwrap();
        s.add(slot(0x2000, Condition::Write, 8)).unwrap();
        s.add(slot(0x2004, Condition::ReadWrite, 4)).unwrap();
        // An execute slot never fires on data.
        assert_eq!(s.watch_hits(0x1000, 8, true, true), 0);
        // A read of the whole word: only the read/write slot.
        assert_eq!(s.watch_hits(0x2000, 8, true, false), 0b100);
        // A write of its first half: only the write slot.
        assert_eq!(s.watch_hits(0x2000, 4, false, true), 0b010);
        assert_eq!(s.watch_hits(0x2000, 8, true, true), 0b110);
        assert_eq!(s.watch_hits(0x2008, 8, true, true), 0);
        assert_eq!(s.watch_hits(0x1ff8, 8, true, true), 0);
    }
}
