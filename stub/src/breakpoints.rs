//! gdb's breakpoints: software (`Z0`, an int3 byte patched into text) and
//! hardware (`Z1`-`Z4`, the debug registers).
//!
//! The probe core owns int3 (`probes::CORE.gdb_insert` / `gdb_remove` /
//! `original_byte`): a gdb breakpoint and a kprobe share one int3, gdb's stop
//! is reported first, and removing either leaves the other working. The
//! table here records which addresses are gdb's (`shared`), and keeps a
//! self-patched fallback for a kernel without the probe core.

use arch::debugreg::{Condition, DebugRegError, Slot, Slots};
use gdbstub::target::ext::breakpoints::WatchKind;

/// Most software breakpoints gdb can set at once.
pub const MAX_SW: usize = 64;
const INT3: u8 = arch::text::BREAKPOINT;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SwBreak {
    addr: u64,
    orig: u8,
    /// The int3 belongs to the probe core's shared int3 layer.
    shared: bool,
}

/// Why a breakpoint could not be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakError {
    /// The software table is full.
    TableFull,
    /// The address could not be read (unmapped).
    Unmapped,
    /// The debug registers refused (no free slot, bad length or alignment).
    DebugReg(DebugRegError),
}

/// The software breakpoint table.
pub struct SwBreakpoints {
    table: [Option<SwBreak>; MAX_SW],
}

impl Default for SwBreakpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl SwBreakpoints {
    pub const fn new() -> Self {
        SwBreakpoints {
            table: [None; MAX_SW],
        }
    }

    /// gdb has a software breakpoint at `addr`.
    pub fn contains(&self, addr: u64) -> bool {
        self.table.iter().flatten().any(|b| b.addr == addr)
    }

    /// The byte under a self-patched int3 at `addr`, if any (for memory
    /// reads; shared ones are answered by the probe core).
    pub fn original(&self, addr: u64) -> Option<u8> {
        self.table
            .iter()
            .flatten()
            .find(|b| b.addr == addr && !b.shared)
            .map(|b| b.orig)
    }

    /// Inserts an int3 at `addr`. Setting the same address twice is fine.
    pub fn insert(
        &mut self,
        addr: u64,
        read: impl Fn(u64) -> Option<u8>,
        write_text: impl Fn(u64, u8),
    ) -> Result<(), BreakError> {
        if self.contains(addr) {
            return Ok(());
        }
        let orig = read(addr).ok_or(BreakError::Unmapped)?;
        let slot = self
            .table
            .iter_mut()
            .find(|b| b.is_none())
            .ok_or(BreakError::TableFull)?;
        *slot = Some(SwBreak {
            addr,
            orig,
            shared: false,
        });
        write_text(addr, INT3);
        Ok(())
    }

    /// Records a breakpoint whose int3 the probe core placed (shared layer).
    pub fn track(&mut self, addr: u64) -> Result<(), BreakError> {
        if self.contains(addr) {
            return Ok(());
        }
        let slot = self
            .table
            .iter_mut()
            .find(|b| b.is_none())
            .ok_or(BreakError::TableFull)?;
        *slot = Some(SwBreak {
            addr,
            orig: INT3,
            shared: true,
        });
        Ok(())
    }

    /// The breakpoint at `addr` lives in the probe core's shared layer.
    pub fn is_shared(&self, addr: u64) -> bool {
        self.table
            .iter()
            .flatten()
            .any(|b| b.addr == addr && b.shared)
    }

    /// Removes the int3 at `addr`; `false` if gdb had none there.
    pub fn remove(&mut self, addr: u64, write_text: impl Fn(u64, u8)) -> bool {
        for slot in self.table.iter_mut() {
            if let Some(b) = *slot
                && b.addr == addr
            {
                if !b.shared {
                    write_text(addr, b.orig);
                }
                *slot = None;
                return true;
            }
        }
        false
    }

    /// Removes every breakpoint (detach): self-patched ones are restored
    /// with `write_text`, shared ones handed to `release`.
    pub fn clear(&mut self, write_text: impl Fn(u64, u8), release: impl Fn(u64)) {
        for slot in self.table.iter_mut() {
            match slot.take() {
                Some(b) if b.shared => release(b.addr),
                Some(b) => write_text(b.addr, b.orig),
                None => {}
            }
        }
    }
}

/// Hardware breakpoints and watchpoints with the watch kind gdb asked for
/// (x86 cannot watch reads only: `rwatch` uses a read/write slot and is
/// reported as a read).
pub struct HwBreakpoints {
    pub slots: Slots,
    kinds: [Option<WatchKind>; 4],
}

impl Default for HwBreakpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl HwBreakpoints {
    pub const fn new() -> Self {
        HwBreakpoints {
            slots: Slots::new(),
            kinds: [None; 4],
        }
    }

    fn slot_for(addr: u64, len: u64, kind: Option<WatchKind>) -> Slot {
        let cond = match kind {
            None => Condition::Execute,
            Some(WatchKind::Write) => Condition::Write,
            Some(WatchKind::Read | WatchKind::ReadWrite) => Condition::ReadWrite,
        };
        Slot {
            addr,
            cond,
            len: len as u8,
        }
    }

    /// Adds an execute breakpoint (`kind = None`) or a watchpoint.
    pub fn add(&mut self, addr: u64, len: u64, kind: Option<WatchKind>) -> Result<(), BreakError> {
        let len = if kind.is_none() { 1 } else { len };
        if len > 8 {
            return Err(BreakError::DebugReg(DebugRegError::BadLength));
        }
        let i = self
            .slots
            .add(Self::slot_for(addr, len, kind))
            .map_err(BreakError::DebugReg)?;
        if let Some(k) = self.kinds.get_mut(i) {
            *k = kind;
        }
        Ok(())
    }

    /// Removes a matching breakpoint or watchpoint.
    pub fn remove(&mut self, addr: u64, len: u64, kind: Option<WatchKind>) -> bool {
        let len = if kind.is_none() { 1 } else { len };
        match self.slots.remove(Self::slot_for(addr, len, kind)) {
            Ok(i) => {
                if let Some(k) = self.kinds.get_mut(i) {
                    *k = None;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// What slot `i` watches: `None` for an execute breakpoint.
    pub fn hit(&self, i: usize) -> Option<(Slot, Option<WatchKind>)> {
        let slot = self.slots.get(i)?;
        Some((slot, self.kinds.get(i).copied().flatten()))
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.kinds = [None; 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn sw_breakpoints_patch_and_restore() {
        let mem = RefCell::new(vec![0x55u8, 0x48, 0x89, 0xe5]);
        let read = |a: u64| mem.borrow().get(a as usize).copied();
        let write = |a: u64, b: u8| mem.borrow_mut()[a as usize] = b;
        let mut t = SwBreakpoints::new();
        t.insert(1, read, write).unwrap();
        t.insert(1, read, write).unwrap();
        assert_eq!(mem.borrow()[1], 0xCC);
        assert_eq!(t.original(1), Some(0x48));
        assert_eq!(t.insert(100, read, write), Err(BreakError::Unmapped));
        assert!(t.remove(1, write));
        assert!(!t.remove(1, write));
        assert_eq!(*mem.borrow(), vec![0x55, 0x48, 0x89, 0xe5]);
        t.insert(0, read, write).unwrap();
        t.insert(3, read, write).unwrap();
        t.track(2).unwrap();
        assert!(t.is_shared(2) && !t.is_shared(0));
        assert_eq!(
            t.original(2),
            None,
            "shared originals come from the probe core"
        );
        let released = RefCell::new(Vec::new());
        t.clear(write, |a| released.borrow_mut().push(a));
        assert_eq!(*mem.borrow(), vec![0x55, 0x48, 0x89, 0xe5]);
        assert_eq!(*released.borrow(), vec![2]);
        assert!(!t.contains(2));
    }

    #[test]
    fn hw_slots_run_out_with_clear_error() {
        let mut h = HwBreakpoints::new();
        h.add(0x1000, 1, None).unwrap();
        h.add(0x2000, 8, Some(WatchKind::Write)).unwrap();
        h.add(0x3000, 4, Some(WatchKind::Read)).unwrap();
        h.add(0x4000, 4, Some(WatchKind::ReadWrite)).unwrap();
        assert_eq!(
            h.add(0x5000, 1, None),
            Err(BreakError::DebugReg(DebugRegError::NoFreeSlot))
        );
        assert_eq!(h.hit(2).unwrap().1, Some(WatchKind::Read));
        assert!(h.remove(0x3000, 4, Some(WatchKind::Read)));
        h.add(0x5000, 1, None).unwrap();
        assert_eq!(h.hit(2).unwrap().1, None);
    }
}
