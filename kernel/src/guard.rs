//! Task stacks with a guard page: the 4 KiB page below each spawned task's
//! stack is unmapped, so running off the stack is a page fault at once
//! (reported as a stack overflow, on the #PF handler's own IST stack)
//! instead of silent heap corruption.
//!
//! The boot page tables map RAM above 2 MiB with 2 MiB pages; the 2 MiB
//! page holding a guard is split into 4 KiB pages once, with a page table
//! from a static pool ([`POOL_TABLES`] tables: enough for the whole heap).
//! When the pool is exhausted a stack gets no guard (the scheduler's canary
//! still catches most overflows at the next switch).

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use noprobe::noprobe;

const PAGE: u64 = 4096;
const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;
const ADDR_2M: u64 = 0x000f_ffff_ffe0_0000;
const ADDR_4K: u64 = 0x000f_ffff_ffff_f000;

/// Page tables for split 2 MiB pages.
const POOL_TABLES: usize = 24;

#[repr(C, align(4096))]
struct Table([u64; 512]);

struct Pool(UnsafeCell<[Table; POOL_TABLES]>);

// SAFETY: tables are handed out once each (NEXT) and written only with
// interrupts off on the one CPU.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([const { Table([0; 512]) }; POOL_TABLES]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The page-directory entry mapping `addr`, found by walking the live
/// tables from CR3 (identity-mapped, as the boot code builds them).
fn pde(addr: u64) -> Option<*mut u64> {
    let next = |table: u64, index: u64| -> Option<u64> {
        let p = (table & ADDR_4K) as *const u64;
        // SAFETY: page-table frames are identity-mapped RAM; the index is
        // below 512.
        let e = unsafe { core::ptr::read_volatile(p.add(index as usize)) };
        (e & PRESENT != 0 && e & HUGE == 0).then_some(e)
    };
    let pml4e = next(arch::cpu::read_cr3(), (addr >> 39) & 511)?;
    let pdpte = next(pml4e, (addr >> 30) & 511)?;
    let pd = (pdpte & ADDR_4K) as *mut u64;
    // SAFETY: as above: an entry of the identity-mapped page directory.
    Some(unsafe { pd.add(((addr >> 21) & 511) as usize) })
}

fn flush_tlb() {
    let cr3 = arch::cpu::read_cr3();
    // SAFETY: reloading CR3 with its own value flushes the TLB, nothing else.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) };
}

/// Maps or unmaps the 4 KiB page at `page` (identity-mapped RAM). Returns
/// `false` when it cannot (no table left, not a RAM page of the boot map).
#[noprobe]
fn set_present(page: u64, present: bool) -> bool {
    arch::cpu::without_interrupts(|| {
        let Some(pde) = pde(page) else {
            return false;
        };
        // SAFETY: pde points into the live page directory (see `pde`).
        let e = unsafe { core::ptr::read_volatile(pde) };
        if e & PRESENT == 0 {
            return false;
        }
        let table: *mut u64 = if e & HUGE != 0 {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            if i >= POOL_TABLES {
                return false;
            }
            // SAFETY: table `i` is handed out only here, once (NEXT).
            let t = unsafe { &mut (*POOL.0.get())[i] };
            let base = e & ADDR_2M;
            let flags = e & 0xfff & !HUGE;
            for (k, slot) in t.0.iter_mut().enumerate() {
                *slot = (base + k as u64 * PAGE) | flags;
            }
            let t_addr = t.0.as_mut_ptr() as u64;
            // SAFETY: the new table maps the same 2 MiB with the same
            // flags, so swapping it in changes no translation.
            unsafe { core::ptr::write_volatile(pde, t_addr | (e & 0x7)) };
            t.0.as_mut_ptr()
        } else {
            (e & ADDR_4K) as *mut u64
        };
        // SAFETY: the page table the PDE points at (identity-mapped), entry
        // of `page` within it.
        unsafe {
            let pte = table.add(((page >> 12) & 511) as usize);
            let v = core::ptr::read_volatile(pte);
            core::ptr::write_volatile(pte, if present { v | PRESENT } else { v & !PRESENT });
        }
        flush_tlb();
        true
    })
}

/// A task stack: `size` usable bytes above an unmapped guard page.
pub struct Stack {
    base: *mut u8,
    layout: Layout,
    guarded: bool,
}

// SAFETY: the stack's memory is owned by its Task; the pointer is only
// dereferenced by the task running on it.
unsafe impl Send for Stack {}

impl Stack {
    /// A zeroed stack of `size` bytes (a multiple of 4 KiB) with its guard.
    pub fn new(size: usize) -> Option<Stack> {
        let layout = Layout::from_size_align(size + PAGE as usize, PAGE as usize).ok()?;
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            return None;
        }
        let guarded = set_present(base as u64, false);
        Some(Stack {
            base,
            layout,
            guarded,
        })
    }

    /// Lowest usable address (just above the guard page).
    pub fn bottom(&self) -> u64 {
        self.base as u64 + PAGE
    }

    /// The guard page's range, if it is unmapped.
    pub fn guard(&self) -> Option<(u64, u64)> {
        self.guarded
            .then(|| (self.base as u64, self.base as u64 + PAGE))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.guarded && !set_present(self.base as u64, true) {
            // Cannot map it back: never hand the page to the heap.
            return;
        }
        // SAFETY: allocated in `new` with this layout; the guard is mapped again.
        unsafe { alloc::alloc::dealloc(self.base, self.layout) };
    }
}
