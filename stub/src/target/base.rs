//! gdb's core view of the stopped kernel (`MultiThreadBase`): registers of
//! the stopped task and of switched-out tasks, memory through [`arch::mem`]
//! (original bytes under kdbg's int3s, real return addresses under kretprobe
//! trampolines), and kernel tasks as threads.

use core::num::NonZeroUsize;

use gdbstub::common::Tid;
use gdbstub::target::ext::base::multithread::{MultiThreadBase, MultiThreadResumeOps};
use gdbstub::target::ext::thread_extra_info::ThreadExtraInfoOps;
use gdbstub::target::{TargetError, TargetResult};

use super::{EACCES, EFAULT, EINVAL, KdbgTarget};
use crate::gdb_arch::KdbgRegs;
use crate::kernel::{task_of_tid, tid_of_task};

impl MultiThreadBase for KdbgTarget {
    fn read_registers(&mut self, regs: &mut KdbgRegs, tid: Tid) -> TargetResult<(), Self> {
        // fs/gs base are per CPU and the kernel does not switch them: every
        // task shows this CPU's values.
        regs.fs_base = crate::frame_regs::fs_base();
        regs.gs_base = crate::frame_regs::gs_base();
        if self.is_current(tid) {
            let f = self.frame().ok_or(TargetError::Errno(EINVAL))?;
            crate::frame_regs::from_frame(f, &mut regs.core);
            return Ok(());
        }
        let task = task_of_tid(tid.get()).ok_or(TargetError::Errno(EINVAL))?;
        let saved = self
            .host
            .saved_frame(task)
            .ok_or(TargetError::Errno(EINVAL))?;
        crate::frame_regs::from_frame(&saved, &mut regs.core);
        Ok(())
    }

    fn write_registers(&mut self, regs: &KdbgRegs, tid: Tid) -> TargetResult<(), Self> {
        crate::frame_regs::set_segment_bases(regs.fs_base, regs.gs_base);
        let regs = &regs.core;
        if !self.is_current(tid) {
            // A switched-out task: its saved frame is what it resumes with.
            let task = task_of_tid(tid.get()).ok_or(TargetError::Errno(EINVAL))?;
            let mut saved = self
                .host
                .saved_frame(task)
                .ok_or(TargetError::Errno(EINVAL))?;
            crate::frame_regs::to_frame(regs, &mut saved);
            return if self.host.set_saved_frame(task, &saved) {
                Ok(())
            } else {
                Err(TargetError::Errno(EINVAL))
            };
        }
        let f = self.frame().ok_or(TargetError::Errno(EINVAL))?;
        crate::frame_regs::to_frame(regs, f);
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        // Read page by page so a range ending in an unmapped page still
        // returns its mapped prefix (gdb then reports the exact address).
        let mut done = 0usize;
        while done < data.len() {
            let addr = start.wrapping_add(done as u64);
            let in_page = (0x1000 - (addr & 0xFFF)) as usize;
            let n = in_page.min(data.len() - done);
            let Some(chunk) = data.get_mut(done..done + n) else {
                break;
            };
            if arch::debugreg::masked(|| arch::mem::read(addr, chunk)).is_err() {
                break;
            }
            done += n;
        }
        if done == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        // Show the original text under kdbg's int3s (gdb's and the
        // probes'): gdb must never see an int3 it did not ask for, or it
        // would step over it as a "permanent" breakpoint.
        for (i, b) in data.iter_mut().take(done).enumerate() {
            if *b != arch::text::BREAKPOINT {
                continue;
            }
            let a = start.wrapping_add(i as u64);
            if let Some(orig) = probes::CORE
                .original_byte(a)
                .or_else(|| self.sw.original(a))
            {
                *b = orig;
            }
        }
        // Jump-optimized probes' jumps read as the original instructions.
        if let Some(d) = data.get_mut(..done) {
            probes::CORE.hide_jumps(start, d);
        }
        // Return addresses a kretprobe redirected to its trampoline read as
        // the real ones (the probed task's instance list), so gdb's `bt`
        // through a probed function stays true.
        if let Some(task) = task_of_tid(tid.get()) {
            let tramp = probes::trampoline_address();
            let first = (8 - (start % 8) as usize) % 8;
            let mut i = first;
            while i + 8 <= done {
                if let Some(w) = data.get_mut(i..i + 8) {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(w);
                    let value = u64::from_le_bytes(word);
                    if value == tramp {
                        let slot = start.wrapping_add(i as u64);
                        let real = probes::real_return_address(task, slot, value);
                        w.copy_from_slice(&real.to_le_bytes());
                    }
                }
                i += 8;
            }
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        let last = start.wrapping_add(data.len().saturating_sub(1) as u64);
        if self.host.is_text(start) || self.host.is_text(last) {
            // Kernel text, writable or not: through the probe core, after
            // proving every byte is mapped. Its int3 bytes stay; the bytes
            // they stand for and the probed instructions become the
            // debugger's (a write that would leave a probe on an
            // unprobeable instruction is refused, EACCES).
            arch::mem::check_range(start, data.len(), false)
                .map_err(|_| TargetError::Errno(EFAULT))?;
            return probes::CORE
                .text_write(start, data)
                .map_err(|_| TargetError::Errno(EACCES));
        }
        match arch::debugreg::masked(|| arch::mem::write(start, data)) {
            Ok(()) => Ok(()),
            Err(arch::mem::MemError::ReadOnly) => {
                // Read-only data outside the kernel's text (e.g. slots):
                // through the text-patching layer.
                arch::mem::check_range(start, data.len(), false)
                    .map_err(|_| TargetError::Errno(EFAULT))?;
                self.host.write_text(start, data);
                Ok(())
            }
            Err(_) => Err(TargetError::Errno(EFAULT)),
        }
    }

    fn list_active_threads(&mut self, report: &mut dyn FnMut(Tid)) -> Result<(), Self::Error> {
        // The stopped task first: gdb's `?` reply names the first thread.
        let current = self.current_task;
        report(self.current_tid());
        self.host.for_each_task(&mut |t| {
            if t.id != current
                && let Some(tid) = NonZeroUsize::new(tid_of_task(t.id))
            {
                report(tid);
            }
        });
        Ok(())
    }

    #[inline(always)]
    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}
