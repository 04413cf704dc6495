//! A frame-pointer stack trace that stays true under kretprobes: return
//! addresses hijacked to the trampoline are mapped back to the real ones
//! through the task's instance chain.

use arch::TrapFrame;

use crate::Core;

impl Core {
    /// Fills `out` with `frame.rip` and then the return addresses found by
    /// following the `rbp` chain (fault-safe reads), each mapped through
    /// [`Core::real_return_address`]. Returns how many were written. Needs
    /// code built with frame pointers.
    pub fn stacktrace(&self, frame: &TrapFrame, out: &mut [u64]) -> usize {
        let Some(pf) = self.host() else {
            return 0;
        };
        let task = pf.task_id();
        let mut n = 0;
        if let Some(slot) = out.get_mut(n) {
            *slot = frame.rip;
            n += 1;
        }
        let mut rbp = frame.rbp;
        while n < out.len() {
            if rbp == 0 || !rbp.is_multiple_of(8) {
                break;
            }
            let mut b = [0u8; 16];
            if !pf.read(rbp, &mut b) {
                break;
            }
            let mut next = [0u8; 8];
            let mut ret = [0u8; 8];
            next.copy_from_slice(b.get(..8).unwrap_or(&[0; 8]));
            ret.copy_from_slice(b.get(8..).unwrap_or(&[0; 8]));
            let next = u64::from_le_bytes(next);
            let ret = u64::from_le_bytes(ret);
            if ret == 0 {
                break;
            }
            if let Some(slot) = out.get_mut(n) {
                *slot = self.real_return_address(task, rbp + 8, ret);
                n += 1;
            }
            if next <= rbp {
                break;
            }
            rbp = next;
        }
        n
    }
}

/// See [`Core::stacktrace`].
pub fn stacktrace(frame: &TrapFrame, out: &mut [u64]) -> usize {
    crate::CORE.stacktrace(frame, out)
}
