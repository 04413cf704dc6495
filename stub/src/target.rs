//! The gdbstub `Target`: the stopped CPU's trap frame, kernel memory through
//! [`arch::mem`], kernel tasks as threads, breakpoints, monitor commands.

use core::num::NonZeroUsize;

use arch::TrapFrame;
use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};

use crate::regset::{KdbgRegs, KdbgX86_64};

use crate::breakpoints::{HwBreakpoints, SwBreakpoints};
use crate::kernel::{KernelOps, task_of_tid, tid_of_task};
use crate::monitor::{LineBuf, MonitorState};

/// EFAULT: what gdb shows as "Cannot access memory".
const EFAULT: u8 = 14;
/// EINVAL.
const EINVAL: u8 = 22;
/// ENOSPC: no free debug register.
const ENOSPC: u8 = 28;

/// How the kernel resumes when gdb says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    Continue,
    Step,
}

/// Fatal stub errors (never returned today; gdbstub requires the type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StubError {
    NoFrame,
}

/// The kernel as gdb sees it while stopped.
pub struct KdbgTarget {
    /// The stopped CPU's frame; null while the kernel runs.
    frame: *mut TrapFrame,
    pub current_task: u32,
    pub resume: Resume,
    pub sw: SwBreakpoints,
    pub hw: HwBreakpoints,
    pub ops: KernelOps,
    pub monitor: MonitorState,
}

// SAFETY: the frame pointer is only dereferenced while the owning trap
// handler is inside the stop loop (single owner, interrupts off); the target
// lives in a lock.
unsafe impl Send for KdbgTarget {}

impl KdbgTarget {
    pub const fn new() -> Self {
        KdbgTarget {
            frame: core::ptr::null_mut(),
            current_task: 0,
            resume: Resume::Continue,
            sw: SwBreakpoints::new(),
            hw: HwBreakpoints::new(),
            ops: KernelOps::MINIMAL,
            monitor: MonitorState {
                stream: proto::command::StreamMode::Text,
            },
        }
    }

    /// Points the target at the stopped frame (null to detach it).
    pub fn set_frame(&mut self, frame: *mut TrapFrame) {
        self.frame = frame;
    }

    fn frame(&mut self) -> Option<&mut TrapFrame> {
        // SAFETY: non-null only while the trap handler that owns the frame
        // runs the stop loop (see `set_frame` callers in `session`).
        unsafe { self.frame.as_mut() }
    }

    /// The thread id of the stopped task.
    pub fn current_tid(&self) -> Tid {
        NonZeroUsize::new(tid_of_task(self.current_task)).unwrap_or(NonZeroUsize::MIN)
    }

    fn is_current(&self, tid: Tid) -> bool {
        task_of_tid(tid.get()) == Some(self.current_task)
    }

    fn write_text_byte(ops: &KernelOps, addr: u64, b: u8) {
        if arch::mem::write(addr, &[b]).is_err() {
            (ops.write_text)(addr, &[b]);
        }
    }

    /// Removes every gdb breakpoint (detach / kill / new session).
    pub fn clear_breakpoints(&mut self) {
        let ops = self.ops;
        self.sw.clear(
            |a, b| Self::write_text_byte(&ops, a, b),
            |a| {
                let _ = probes::CORE.gdb_remove(a);
            },
        );
        self.hw.clear();
    }
}

impl Default for KdbgTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for KdbgTarget {
    type Arch = KdbgX86_64;
    type Error = StubError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    // Event lines are O packets the stub writes itself; keep gdbstub's
    // replies plain so both share the line without surprises.
    fn use_rle(&self) -> bool {
        false
    }
}

impl MultiThreadBase for KdbgTarget {
    fn read_registers(&mut self, regs: &mut KdbgRegs, tid: Tid) -> TargetResult<(), Self> {
        // fs/gs base are per CPU and the kernel does not switch them: every
        // task shows this CPU's values.
        regs.fs_base = crate::regs::fs_base();
        regs.gs_base = crate::regs::gs_base();
        if self.is_current(tid) {
            let f = self.frame().ok_or(TargetError::Errno(EINVAL))?;
            crate::regs::from_frame(f, &mut regs.core);
            return Ok(());
        }
        let task = task_of_tid(tid.get()).ok_or(TargetError::Errno(EINVAL))?;
        let saved = (self.ops.saved_frame)(task).ok_or(TargetError::Errno(EINVAL))?;
        crate::regs::from_frame(&saved, &mut regs.core);
        Ok(())
    }

    fn write_registers(&mut self, regs: &KdbgRegs, tid: Tid) -> TargetResult<(), Self> {
        crate::regs::set_segment_bases(regs.fs_base, regs.gs_base);
        let regs = &regs.core;
        if !self.is_current(tid) {
            // A switched-out task: its saved frame is what it resumes with.
            let task = task_of_tid(tid.get()).ok_or(TargetError::Errno(EINVAL))?;
            let mut saved = (self.ops.saved_frame)(task).ok_or(TargetError::Errno(EINVAL))?;
            crate::regs::to_frame(regs, &mut saved);
            return if (self.ops.set_saved_frame)(task, &saved) {
                Ok(())
            } else {
                Err(TargetError::Errno(EINVAL))
            };
        }
        let f = self.frame().ok_or(TargetError::Errno(EINVAL))?;
        crate::regs::to_frame(regs, f);
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
            if *b != 0xCC {
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
        match arch::debugreg::masked(|| arch::mem::write(start, data)) {
            Ok(()) => Ok(()),
            Err(arch::mem::MemError::ReadOnly) => {
                // Kernel text: through the text-patching layer, after
                // proving every byte is mapped.
                arch::mem::check_range(start, data.len(), false)
                    .map_err(|_| TargetError::Errno(EFAULT))?;
                (self.ops.write_text)(start, data);
                Ok(())
            }
            Err(_) => Err(TargetError::Errno(EFAULT)),
        }
    }

    fn list_active_threads(&mut self, report: &mut dyn FnMut(Tid)) -> Result<(), Self::Error> {
        // The stopped task first: gdb's `?` reply names the first thread.
        let current = self.current_task;
        report(self.current_tid());
        (self.ops.for_each_task)(&mut |t| {
            if t.id != current
                && let Some(tid) = NonZeroUsize::new(tid_of_task(t.id))
            {
                report(tid);
            }
        });
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for KdbgTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.resume = Resume::Continue;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for KdbgTarget {
    /// gdb sends a step for one thread without "continue the others"
    /// (`vCont;s:TID`). The stopped CPU steps that one instruction; other
    /// tasks only run if a timer interrupt lands in between (the step still
    /// completes in the stepped task when it is switched back in).
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl MultiThreadSingleStep for KdbgTarget {
    fn set_resume_action_step(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // Only the stopped CPU can step; a step of another thread steps it.
        self.resume = Resume::Step;
        Ok(())
    }
}

impl ThreadExtraInfo for KdbgTarget {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let Some(task) = task_of_tid(tid.get()) else {
            return Ok(0);
        };
        let mut len = 0;
        (self.ops.for_each_task)(&mut |t| {
            if t.id == task {
                for part in [t.name.as_bytes(), b" (", t.state.as_bytes(), b")"] {
                    for &b in part {
                        if let Some(slot) = buf.get_mut(len) {
                            *slot = b;
                            len += 1;
                        }
                    }
                }
            }
        });
        Ok(len)
    }
}

impl Breakpoints for KdbgTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for KdbgTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.sw.contains(addr) {
            return Ok(true);
        }
        // The probe core's shared int3 layer first.
        match probes::CORE.gdb_insert(addr) {
            Ok(()) => {
                return match self.sw.track(addr) {
                    Ok(()) => Ok(true),
                    Err(_) => {
                        let _ = probes::CORE.gdb_remove(addr);
                        Err(TargetError::Errno(ENOSPC))
                    }
                };
            }
            Err(probes::ProbeError::NotInitialised) => {}
            Err(probes::ProbeError::Unreadable) => return Err(TargetError::Errno(EFAULT)),
            Err(_) => return Err(TargetError::Errno(EINVAL)),
        }
        // No probe core in this kernel: patch the int3 ourselves.
        let ops = self.ops;
        let read = |a: u64| {
            let mut b = [0u8];
            arch::mem::read(a, &mut b).ok().map(|_| b[0])
        };
        match self
            .sw
            .insert(addr, read, |a, b| Self::write_text_byte(&ops, a, b))
        {
            Ok(()) => Ok(true),
            Err(crate::breakpoints::BreakError::Unmapped) => Err(TargetError::Errno(EFAULT)),
            Err(_) => Err(TargetError::Errno(ENOSPC)),
        }
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.sw.is_shared(addr) {
            let _ = probes::CORE.gdb_remove(addr);
        }
        let ops = self.ops;
        Ok(self
            .sw
            .remove(addr, |a, b| Self::write_text_byte(&ops, a, b)))
    }
}

impl HwBreakpoint for KdbgTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        // `false` makes gdb say it could not insert the breakpoint (the four
        // debug registers are in use).
        Ok(self.hw.add(addr, 1, None).is_ok())
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.hw.remove(addr, 1, None))
    }
}

impl HwWatchpoint for KdbgTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.hw.add(addr, len, Some(kind)).is_ok())
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.hw.remove(addr, len, Some(kind)))
    }
}

impl MonitorCmd for KdbgTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let mut sink = |b: &[u8]| out.write_raw(b);
        let mut lines = LineBuf::new(&mut sink);
        let ops = self.ops;
        let _ = match core::str::from_utf8(cmd) {
            Ok(text) => crate::monitor::run(text, &ops, &mut self.monitor, &mut lines),
            Err(_) => crate::monitor::error(
                &mut lines,
                proto::reply::ErrorCode::BadArguments,
                &"command is not UTF-8 text",
            ),
        };
        lines.flush();
        Ok(())
    }
}
