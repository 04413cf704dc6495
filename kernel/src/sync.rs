//! An interrupt-safe spin lock: interrupts stay off while it is held, so an
//! interrupt handler on this CPU can never find it taken by the code it
//! interrupted (one CPU: the lock is then never contended from a handler).

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};

use arch::cpu;
use noprobe::noprobe;

/// A spin lock that disables interrupts while held.
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Holds the lock; restores the interrupt flag when dropped.
pub struct IrqGuard<'a, T> {
    guard: ManuallyDrop<spin::MutexGuard<'a, T>>,
    reenable: bool,
}

impl<T> IrqMutex<T> {
    #[noprobe]
    pub const fn new(value: T) -> Self {
        IrqMutex {
            inner: spin::Mutex::new(value),
        }
    }

    /// Disables interrupts and takes the lock.
    #[noprobe]
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let reenable = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        IrqGuard {
            guard: ManuallyDrop::new(self.inner.lock()),
            reenable,
        }
    }

    /// Takes the lock if it is free (for trap paths that must not wait).
    #[noprobe]
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let reenable = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        match self.inner.try_lock() {
            Some(guard) => Some(IrqGuard {
                guard: ManuallyDrop::new(guard),
                reenable,
            }),
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
        // SAFETY: the guard is dropped exactly once, here, before interrupts
        // are re-enabled.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        if self.reenable {
            cpu::enable_interrupts();
        }
    }
}
