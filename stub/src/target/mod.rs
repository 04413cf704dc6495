//! The gdbstub `Target`: the stopped CPU's trap frame, kernel memory through
//! [`arch::mem`], kernel tasks as threads, breakpoints, monitor commands.

//!
//! One file per protocol extension, as gdbstub's examples do: [`base`]
//! (registers, memory, threads), [`resume`] (continue, step, scheduler
//! locking), [`thread_extra_info`], [`breakpoints`] (software, hardware,
//! watchpoints), [`monitor_cmd`].

use core::num::NonZeroUsize;

use arch::TrapFrame;
use gdbstub::common::Tid;
use gdbstub::target::Target;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::BreakpointsOps;
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;

use crate::breakpoints::{HwBreakpoints, SwBreakpoints};
use crate::gdb_arch::KdbgX86_64;
use probes::{Host, NoHost};

use crate::kernel::{task_of_tid, tid_of_task};
use crate::monitor::MonitorState;

mod base;
mod breakpoints;
mod monitor_cmd;
mod resume;
mod thread_extra_info;

/// EFAULT: what gdb shows as "Cannot access memory".
pub(crate) const EFAULT: u8 = 14;
/// EACCES: an address the debugger depends on (see `crate::protect`).
pub(crate) const EACCES: u8 = 13;
/// EINVAL.
pub(crate) const EINVAL: u8 = 22;
/// ENOSPC: no free debug register.
pub(crate) const ENOSPC: u8 = 28;

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
    /// The kernel that hosts the stub ([`crate::init`]).
    pub host: &'static dyn Host,
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
            host: &NoHost,
            monitor: MonitorState {
                stream: proto::command::StreamMode::Text,
            },
        }
    }

    /// Points the target at the stopped frame (null to detach it).
    pub fn set_frame(&mut self, frame: *mut TrapFrame) {
        self.frame = frame;
    }

    pub(crate) fn frame(&mut self) -> Option<&mut TrapFrame> {
        // SAFETY: non-null only while the trap handler that owns the frame
        // runs the stop loop (see `set_frame` callers in `session`).
        unsafe { self.frame.as_mut() }
    }

    /// The thread id of the stopped task.
    pub fn current_tid(&self) -> Tid {
        NonZeroUsize::new(tid_of_task(self.current_task)).unwrap_or(NonZeroUsize::MIN)
    }

    pub(crate) fn is_current(&self, tid: Tid) -> bool {
        task_of_tid(tid.get()) == Some(self.current_task)
    }

    pub(crate) fn write_text_byte(host: &dyn Host, addr: u64, b: u8) {
        if arch::mem::write(addr, &[b]).is_err() {
            host.write_text(addr, &[b]);
        }
    }

    /// Removes every gdb breakpoint (detach / kill / new session).
    pub fn clear_breakpoints(&mut self) {
        probes::CORE.gdb_clear_conds();
        let host = self.host;
        self.sw.clear(
            |a, b| Self::write_text_byte(host, a, b),
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

    #[inline(always)]
    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    // Event lines are O packets the stub writes itself; keep gdbstub's
    // replies plain so both share the line without surprises.
    fn use_rle(&self) -> bool {
        false
    }
}
