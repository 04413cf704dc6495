//! Executable slots for out-of-line execution, within +-2 GB of kernel text.
//!
//! The slot area is part of the kernel image: an `awx` section named
//! `.text.kdbg_slots` (the kernel's linker script puts `.text.*` into
//! `.text`), filled with `int3`. A slot is [`SLOT_SIZE`] bytes; the probe
//! core hands one to each probe point that runs its instruction out of line.
//!
//! [`SlotPool`] allocates slot indices first-in first-out: a freed slot goes
//! to the back of the queue and is reused only after every other free slot,
//! on top of the probe core's guarantee that no CPU is in the slot's code
//! when it is freed.

use core::arch::global_asm;

use crate::insn::{Analysis, Execution, Refusal, SLOT_CODE_MAX, Tail, slot_code};

/// Bytes per slot (room for several code variants of one instruction).
pub const SLOT_SIZE: usize = 128;
/// Slots in the area.
pub const SLOT_COUNT: usize = 512;

global_asm!(
    ".pushsection .text.kdbg_slots, \"awx\", @progbits",
    ".balign 4096",
    ".globl kdbg_slot_area",
    "kdbg_slot_area:",
    ".fill 65536, 1, 0xcc",
    ".popsection",
);

const _: () = assert!(SLOT_SIZE * SLOT_COUNT == 65536);

unsafe extern "C" {
    static kdbg_slot_area: u8;
}

/// Address and size in bytes of the slot area in this image.
pub fn area() -> (u64, usize) {
    let base = core::ptr::addr_of!(kdbg_slot_area) as u64;
    (base, SLOT_SIZE * SLOT_COUNT)
}

/// A first-in first-out allocator of slots in an area.
pub struct SlotPool {
    base: u64,
    count: usize,
    queue: [u16; SLOT_COUNT],
    head: usize,
    len: usize,
}

impl SlotPool {
    /// A pool over the area at `base` of `bytes` bytes (at most
    /// [`SLOT_COUNT`] slots are used).
    pub const fn new(base: u64, bytes: usize) -> Self {
        let mut count = bytes / SLOT_SIZE;
        if count > SLOT_COUNT {
            count = SLOT_COUNT;
        }
        let mut queue = [0u16; SLOT_COUNT];
        let mut i = 0;
        while i < count {
            queue[i] = i as u16;
            i += 1;
        }
        SlotPool {
            base,
            count,
            queue,
            head: 0,
            len: count,
        }
    }

    /// Takes the least recently freed slot; returns its address.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let idx = *self.queue.get(self.head)?;
        self.head = (self.head + 1) % SLOT_COUNT;
        self.len -= 1;
        Some(self.base + u64::from(idx) * SLOT_SIZE as u64)
    }

    /// Gives a slot back. The caller guarantees no CPU executes it any more.
    /// Addresses that are not slot starts of this pool are ignored.
    pub fn free(&mut self, addr: u64) {
        let Some(off) = addr.checked_sub(self.base) else {
            return;
        };
        let idx = off / SLOT_SIZE as u64;
        if off % SLOT_SIZE as u64 != 0 || idx >= self.count as u64 || self.len >= self.count {
            return;
        }
        let tail = (self.head + self.len) % SLOT_COUNT;
        if let Some(q) = self.queue.get_mut(tail) {
            // The cast is exact: idx < SLOT_COUNT.
            {
                *q = idx as u16;
            }
            self.len += 1;
        }
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.len
    }

    /// The slot containing `addr`, if `addr` is inside this pool's area.
    pub fn slot_of(&self, addr: u64) -> Option<u64> {
        let off = addr.checked_sub(self.base)?;
        if off >= (self.count * SLOT_SIZE) as u64 {
            return None;
        }
        Some(self.base + off / SLOT_SIZE as u64 * SLOT_SIZE as u64)
    }
}

/// The code written into one slot: up to three variants of the probed
/// instruction, each a different way back.
///
/// - `trap_entry` (offset 0): instruction + `int3`. Entered with IF cleared;
///   the tail trap reports `rip == trap_rip`.
/// - `boost_entry` (offset 32): instruction + `jmp back`, entered when the
///   interrupted context had IF clear.
/// - `boost_sti_entry` (offset 64): instruction + `sti` + `jmp back`,
///   entered with IF cleared when the interrupted context had IF set: the
///   `sti` shadow covers the `jmp`, so no interrupt (and no preemption) can
///   ever find a CPU inside a slot, which is what makes freeing slots safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotImage {
    /// The slot's bytes (int3 filler between variants).
    pub bytes: [u8; SLOT_SIZE],
    /// Start of the trapping variant.
    pub trap_entry: u64,
    /// `rip` of the trapping variant's tail trap.
    pub trap_rip: u64,
    /// Boosted entries `(if_clear, if_set)` when the instruction is boostable.
    pub boost: Option<(u64, u64)>,
}

const STI: u8 = 0xfb;
const JMP_REL32: u8 = 0xe9;

impl SlotImage {
    /// Builds the image of the slot at `base` for the analysed instruction
    /// (which must be an out-of-line one).
    pub fn build(a: &Analysis, base: u64) -> Result<SlotImage, Refusal> {
        let mut bytes = [0xccu8; SLOT_SIZE];
        let trap = slot_code(a, base, Tail::Trap)?;
        put(&mut bytes, 0, trap.as_bytes())?;
        let trap_rip = trap.tail_trap_rip(base);
        let boostable = matches!(
            a.exec,
            Execution::OutOfLine {
                boostable: true,
                ..
            }
        );
        let boost = if boostable {
            let plain_at = base + SLOT_CODE_MAX as u64;
            let plain = slot_code(a, plain_at, Tail::JmpBack)?;
            put(&mut bytes, SLOT_CODE_MAX, plain.as_bytes())?;
            // The sti variant: the relocated instruction (from a Trap build
            // at its own address), then sti, then jmp rel32 back.
            let sti_at = base + 2 * SLOT_CODE_MAX as u64;
            let insn = slot_code(a, sti_at, Tail::Trap)?;
            let n = usize::from(insn.insn_len);
            let code = insn.as_bytes().get(..n).ok_or(Refusal::Undecodable)?;
            let mut v = [0xccu8; SLOT_CODE_MAX];
            v.get_mut(..n)
                .ok_or(Refusal::Undecodable)?
                .copy_from_slice(code);
            let after = sti_at + n as u64 + 1 + 5;
            let rel = i32::try_from(a.next_ip().wrapping_sub(after) as i64)
                .map_err(|_| Refusal::RipRelOutOfRange)?;
            let tail = v.get_mut(n..n + 6).ok_or(Refusal::Undecodable)?;
            tail[0] = STI;
            tail[1] = JMP_REL32;
            tail[2..].copy_from_slice(&rel.to_le_bytes());
            put(
                &mut bytes,
                2 * SLOT_CODE_MAX,
                v.get(..n + 6).ok_or(Refusal::Undecodable)?,
            )?;
            Some((plain_at, sti_at))
        } else {
            None
        };
        Ok(SlotImage {
            bytes,
            trap_entry: base,
            trap_rip,
            boost,
        })
    }

    /// Maps a `rip` at the start of one of this slot's variants back to the
    /// probed instruction's address, with whether IF must be set again
    /// (entered through the sti variant). `None` for any other rip.
    pub fn fault_origin(&self, a: &Analysis, rip: u64) -> Option<(u64, bool)> {
        if rip == self.trap_entry {
            return Some((a.addr, false));
        }
        match self.boost {
            Some((plain, _)) if rip == plain => Some((a.addr, false)),
            Some((_, sti)) if rip == sti => Some((a.addr, true)),
            _ => None,
        }
    }
}

impl SlotImage {
    /// Maps a `rip` just after the instruction in one of the boosted
    /// variants (where a debug trap such as a data watchpoint reports it)
    /// to the original next instruction, with whether IF must be set again
    /// (the sti variant's `sti` has not run yet).
    pub fn after_boosted_insn(&self, a: &Analysis, rip: u64) -> Option<(u64, bool)> {
        let (plain, sti) = self.boost?;
        let n = u64::from(a.len);
        if rip == plain + n {
            Some((a.next_ip(), false))
        } else if rip == sti + n {
            Some((a.next_ip(), true))
        } else {
            None
        }
    }
}

fn put(dst: &mut [u8; SLOT_SIZE], at: usize, src: &[u8]) -> Result<(), Refusal> {
    dst.get_mut(at..at + src.len())
        .ok_or(Refusal::Undecodable)?
        .copy_from_slice(src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_reuse_and_bounds() {
        let mut p = SlotPool::new(0x10_0000, 4 * SLOT_SIZE);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert_eq!(a, 0x10_0000);
        assert_eq!(b, 0x10_0000 + SLOT_SIZE as u64);
        p.free(a);
        // The freed slot goes to the back: the two never-used slots come first.
        assert_eq!(p.alloc(), Some(0x10_0000 + 2 * SLOT_SIZE as u64));
        assert_eq!(p.alloc(), Some(0x10_0000 + 3 * SLOT_SIZE as u64));
        assert_eq!(p.alloc(), Some(a));
        assert_eq!(p.alloc(), None);
        p.free(0x10_0001); // not a slot start: ignored
        p.free(0x20_0000); // not ours: ignored
        assert_eq!(p.available(), 0);
        assert_eq!(p.slot_of(b + 17), Some(b));
        assert_eq!(p.slot_of(0x10_0000 + 4 * SLOT_SIZE as u64), None);
    }

    #[test]
    fn area_is_in_this_image() {
        let (base, size) = area();
        assert_eq!(size, SLOT_SIZE * SLOT_COUNT);
        assert_eq!(base % 4096, 0);
        // SAFETY: the area is a static part of this image.
        assert_eq!(unsafe { *(base as *const u8) }, 0xcc);
    }
}
