//! An interrupt-safe spin lock: interrupts stay off while it is held, so an
//! interrupt handler on this CPU can never find it taken by the code it
//! interrupted. Other CPUs spin for it; trap paths that may run inside the
//! holder on the same CPU (an NMI, a probe hit) use [`IrqMutex::try_lock`]
//! or [`IrqMutex::lock_unless_mine`], which never wait for this CPU.

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicUsize, Ordering};

use arch::cpu;
use noprobe::noprobe;

/// A spin lock that disables interrupts while held.
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
    /// CPU holding the lock + 1 (0: free or unknown).
    owner: AtomicUsize,
}

/// Holds the lock; restores the interrupt flag when dropped.
pub struct IrqGuard<'a, T> {
    guard: ManuallyDrop<spin::MutexGuard<'a, T>>,
    owner: &'a AtomicUsize,
    reenable: bool,
}

impl<T> IrqMutex<T> {
    #[noprobe]
    pub const fn new(value: T) -> Self {
        IrqMutex {
            inner: spin::Mutex::new(value),
            owner: AtomicUsize::new(0),
        }
    }

    #[noprobe]
    fn guard<'a>(&'a self, g: spin::MutexGuard<'a, T>, reenable: bool) -> IrqGuard<'a, T> {
        self.owner
            .store(arch::percpu::cpu_id() + 1, Ordering::Relaxed);
        IrqGuard {
            guard: ManuallyDrop::new(g),
            owner: &self.owner,
            reenable,
        }
    }

    /// Disables interrupts and takes the lock.
    #[noprobe]
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let reenable = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        let g = self.inner.lock();
        self.guard(g, reenable)
    }

    /// Takes the lock, waiting while another CPU holds it; `None` at once
    /// when this CPU holds it (a trap inside the holder: waiting would
    /// never end).
    #[noprobe]
    pub fn lock_unless_mine(&self) -> Option<IrqGuard<'_, T>> {
        let me = arch::percpu::cpu_id() + 1;
        loop {
            if let Some(g) = self.try_lock() {
                return Some(g);
            }
            if self.owner.load(Ordering::Relaxed) == me {
                return None;
            }
            core::hint::spin_loop();
        }
    }

    /// Takes the lock if it is free (for trap paths that must not wait).
    #[noprobe]
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let reenable = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        match self.inner.try_lock() {
            Some(guard) => Some(self.guard(guard, reenable)),
            None => {
                if reenable {
                    cpu::enable_interrupts();
                }
                None
            }
        }
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    #[noprobe]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    #[noprobe]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    #[noprobe]
    fn drop(&mut self) {
        self.owner.store(0, Ordering::Relaxed);
        // SAFETY: the guard is dropped exactly once, here, before interrupts
        // are re-enabled.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        if self.reenable {
            cpu::enable_interrupts();
        }
    }
}
