//! What the probe core must refuse to probe, marked in code rather than kept
//! in a hand list: the linker script (kernel/linker.ld) gathers into
//! `__noprobe_start..__noprobe_end`
//! - every function marked `#[noprobe]`
//!   (trap dispatch, the scheduler switch, the heap, the console, mem*),
//! - the trap entry stubs and the task start trampoline,
//! - all code of every crate other than the kernel itself: arch (trap entry,
//!   UART, text patching), probes, stub, proto, core, alloc,
//!   compiler_builtins, spin, gdbstub, iced-x86, linked_list_allocator.
//!
//! `__text_start..__text_end` is all kernel text.

use core::ops::Range;
use noprobe::noprobe;

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __noprobe_start: u8;
    static __noprobe_end: u8;
}

/// All kernel text.
#[noprobe]
pub fn text_range() -> Range<u64> {
    core::ptr::addr_of!(__text_start) as u64..core::ptr::addr_of!(__text_end) as u64
}

/// The text that must never be probed.
#[noprobe]
pub fn noprobe_range() -> Range<u64> {
    core::ptr::addr_of!(__noprobe_start) as u64..core::ptr::addr_of!(__noprobe_end) as u64
}

/// `addr` is kernel text.
#[noprobe]
pub fn is_text(addr: u64) -> bool {
    text_range().contains(&addr)
}

/// `addr` must not be probed: blacklisted text, or not kernel text at all.
#[noprobe]
pub fn is_blacklisted(addr: u64) -> bool {
    noprobe_range().contains(&addr) || !is_text(addr)
}
