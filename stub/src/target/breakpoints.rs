//! `Z`/`z` packets: software breakpoints (through the probe core's shared
//! int3 layer, or patched by the stub when there is no probe core), hardware
//! breakpoints and watchpoints in the debug registers.

use gdbstub::target::ext::breakpoints::{
    Breakpoints, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::{TargetError, TargetResult};

use super::{EACCES, EFAULT, EINVAL, ENOSPC, KdbgTarget};
use crate::protect;

/// Refuses a code address the debugger depends on (see [`protect`]).
fn refuse_code(request: u8, addr: u64) -> Result<(), TargetError<crate::target::StubError>> {
    match protect::code_refusal(addr) {
        Some(reason) => {
            protect::record(request, addr, 1, reason);
            Err(TargetError::Errno(EACCES))
        }
        None => Ok(()),
    }
}

impl Breakpoints for KdbgTarget {
    #[inline(always)]
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    #[inline(always)]
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    #[inline(always)]
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for KdbgTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.sw.contains(addr) {
            return Ok(true);
        }
        refuse_code(b'0', addr)?;
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
        let host = self.host;
        let read = |a: u64| {
            let mut b = [0u8];
            arch::mem::read(a, &mut b).ok().map(|_| b[0])
        };
        match self
            .sw
            .insert(addr, read, |a, b| Self::write_text_byte(host, a, b))
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
        let host = self.host;
        Ok(self
            .sw
            .remove(addr, |a, b| Self::write_text_byte(host, a, b)))
    }
}

impl HwBreakpoint for KdbgTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        refuse_code(b'1', addr)?;
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
        if let Some(reason) = protect::data_refusal(addr, len) {
            let request = match kind {
                WatchKind::Write => b'2',
                WatchKind::Read => b'3',
                WatchKind::ReadWrite => b'4',
            };
            protect::record(request, addr, len, reason);
            return Err(TargetError::Errno(EACCES));
        }
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
