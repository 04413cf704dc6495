//! A tiny kernel of its own that hosts kdbg: the example of
//! docs/EMBEDDING.md. It has its own boot stack, heap, console, trap
//! handler and workload; everything it does for kdbg is in [`glue`].
//!
//! Boot: `arch::boot_entry!` (multiboot1/PVH, long mode, identity map), then
//! [`main`]: the trap handler, the PICs, the heap, COM1 for the console,
//! kdbg ([`glue::init`]), interrupts on, and the workload loop: [`tick`] and
//! [`work`] for ever (what the e2e test `tests/tests/embed.rs` breaks on and
//! probes).
#![no_std]
#![no_main]
// Kernel: its paths never panic.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

extern crate alloc;

mod glue;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

use arch::TrapFrame;
use arch::uart::{COM1, Uart};
use linked_list_allocator::Heap;
use noprobe::noprobe;

arch::boot_entry!(main, 64 * 1024);
arch::freestanding_intrinsics!();

/// The console (COM1).
const CONSOLE: Uart = Uart::new(COM1);

/// Heap bytes (the probe core's tables and event rings, the stub's buffers).
const HEAP_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct HeapMemory(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: handed to the allocator once at boot; only the allocator uses it.
unsafe impl Sync for HeapMemory {}

static HEAP_MEMORY: HeapMemory = HeapMemory(UnsafeCell::new([0; HEAP_SIZE]));

/// `linked_list_allocator` under a spin lock taken with interrupts off: the
/// stub and the probe core allocate in trap context.
struct Allocator(spin::Mutex<Heap>);

#[global_allocator]
static ALLOCATOR: Allocator = Allocator(spin::Mutex::new(Heap::empty()));

// SAFETY: every call runs under the lock with interrupts off, so each sees
// a consistent heap.
unsafe impl GlobalAlloc for Allocator {
    #[noprobe]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        arch::cpu::without_interrupts(|| match self.0.lock().allocate_first_fit(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => core::ptr::null_mut(),
        })
    }

    #[noprobe]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = core::ptr::NonNull::new(ptr) {
            // SAFETY: the caller guarantees `ptr` came from `alloc` with `layout`.
            arch::cpu::without_interrupts(|| unsafe { self.0.lock().deallocate(p, layout) });
        }
    }
}

/// Entered from the boot code with the loader's eax and ebx.
extern "C" fn main(_eax: u32, _ebx: u32) -> ! {
    arch::trap::set_handler(trap);
    // SAFETY: early boot, one CPU, interrupts off, the handler is set; the
    // heap memory is this kernel's and nothing has allocated yet; COM1 is
    // a 16550 on a PC machine (or nothing, and then there is no console).
    unsafe {
        arch::trap::init();
        arch::pic::init();
        ALLOCATOR
            .0
            .lock()
            .init(HEAP_MEMORY.0.get().cast::<u8>(), HEAP_SIZE);
        let _ = CONSOLE.init();
    }
    say("embed-kernel: booted");
    glue::init();
    arch::cpu::enable_interrupts();
    say("embed-kernel: running (gdb on COM2)");
    let mut n = 0u64;
    loop {
        n = work(tick(n));
    }
}

/// One step of the workload (probed by the e2e test).
#[inline(never)]
pub fn tick(n: u64) -> u64 {
    core::hint::black_box(n.wrapping_add(1))
}

/// The rest of the workload (the e2e test's breakpoint).
#[inline(never)]
pub fn work(n: u64) -> u64 {
    let mut sum = n;
    for i in 0..64u64 {
        sum = core::hint::black_box(sum.wrapping_mul(31).wrapping_add(i));
    }
    core::hint::black_box(n.wrapping_add(sum & 1))
}

/// Writes a line to the console.
#[noprobe]
fn say(line: &str) {
    CONSOLE.write_str_crlf(line);
    CONSOLE.write_str_crlf("\n");
}

/// Every trap and interrupt: kdbg's first, then this kernel's own (here:
/// ending other PIC interrupts; any other trap stops the kernel).
#[noprobe]
fn trap(frame: &mut TrapFrame, depth: usize) {
    if depth < arch::trap::MAX_DEPTH && glue::on_trap(frame) {
        return;
    }
    let irq = frame.vector.wrapping_sub(arch::trap::IRQ_BASE);
    if depth < arch::trap::MAX_DEPTH && irq < 16 {
        arch::pic::end_of_interrupt(irq as u8);
        return;
    }
    say("embed-kernel: a trap nobody handles; halted");
    halt()
}

#[noprobe]
fn halt() -> ! {
    loop {
        arch::cpu::disable_interrupts();
        arch::cpu::halt();
    }
}

#[panic_handler]
#[noprobe]
fn panic(_: &core::panic::PanicInfo) -> ! {
    say("embed-kernel: panic");
    halt()
}
