//! The kernel heap: `linked_list_allocator` over the RAM right after the
//! image, behind an interrupt-safe lock (a handler that allocates — the GDB
//! stub, the probe core registering a probe — can never find the heap locked
//! by the code it interrupted). Not probe-able.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::Heap;

use crate::sync::IrqMutex;
use noprobe::noprobe;

/// Heap size. QEMU is started with `-m 128M`; the image and the heap fit in 64 MiB.
pub const HEAP_SIZE: usize = 32 * 1024 * 1024;

struct KernelHeap(IrqMutex<Heap>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqMutex::new(Heap::empty()));

// SAFETY: allocation is delegated to linked_list_allocator under a lock that
// also keeps interrupts off, so every call sees a consistent heap.
unsafe impl GlobalAlloc for KernelHeap {
    #[noprobe]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.0.lock();
        crate::death::alloc_crash_hook();
        match heap.allocate_first_fit(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => core::ptr::null_mut(),
        }
    }

    #[noprobe]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller guarantees ptr came from `alloc` with this layout.
            unsafe { self.0.lock().deallocate(p, layout) };
        }
    }
}

unsafe extern "C" {
    static __image_end: u8;
}

/// Smallest heap the kernel runs with.
pub const MIN_HEAP: usize = 8 * 1024 * 1024;

/// Why the heap could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// RAM ends too soon after the image: (bytes available, bytes needed).
    TooLittleRam(u64, u64),
}

/// Puts the heap right after the image (2 MiB aligned): [`HEAP_SIZE`] bytes,
/// or less when `ram_end` (from the boot loader) says RAM ends sooner.
/// Returns the heap size.
///
/// # Safety
/// Call once, before the first allocation; the RAM `[image end, ram_end)` must be unused.
pub unsafe fn init(ram_end: Option<u64>) -> Result<usize, HeapError> {
    let end = core::ptr::addr_of!(__image_end) as usize;
    let start = (end + 0x1F_FFFF) & !0x1F_FFFF;
    let available = ram_end.map_or(HEAP_SIZE as u64, |r| r.saturating_sub(start as u64));
    let size = (HEAP_SIZE as u64).min(available) as usize;
    if size < MIN_HEAP {
        return Err(HeapError::TooLittleRam(
            available,
            (start + MIN_HEAP) as u64,
        ));
    }
    // SAFETY: the caller guarantees the region is free RAM, identity-mapped by the boot page tables.
    unsafe { HEAP.0.lock().init(start as *mut u8, size) };
    Ok(size)
}

/// The heap's address range (empty before `init`).
pub fn range() -> core::ops::Range<u64> {
    let heap = HEAP.0.lock();
    let start = heap.bottom() as u64;
    start..start + heap.size() as u64
}

/// Heap usage in bytes: (used, free).
pub fn usage() -> (usize, usize) {
    let heap = HEAP.0.lock();
    (heap.used(), heap.free())
}
