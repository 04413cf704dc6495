//! What the kernel's trap dispatcher calls into the GDB stub. `breakpoint` and
//! `debug` return `true` when the stub handled the trap (it was gdb's), after
//! the debugger has resumed the kernel.

use core::sync::atomic::Ordering;

use arch::TrapFrame;
use arch::uart::{COM2, Uart};

use crate::machine::{SESSION, SIGTRAP, StopReason};

/// #BP not claimed by the probe core.
///
/// gdb's own int3: rewinds rip to the breakpoint and stops (`swbreak`).
/// Any other int3 while a debugger is attached (or the boot-time
/// `kdbg.wait` int3) stops with SIGTRAP just after it; otherwise the trap is
/// not the stub's (`false`).
pub fn breakpoint(frame: &mut TrapFrame) -> bool {
    let entry = crate::allstop::acquire(frame);
    let handled = breakpoint_owned(frame, entry);
    if !handled {
        crate::allstop::release_if(entry);
    }
    handled
}

fn breakpoint_owned(frame: &mut TrapFrame, entry: crate::allstop::Entry) -> bool {
    let addr = frame.rip.wrapping_sub(1);
    if entry == crate::allstop::Entry::Fresh {
        // This CPU may have waited for another CPU's stop: a breakpoint gdb
        // removed meanwhile is gone, the restored instruction runs.
        let mut b = [0u8; 1];
        if arch::mem::read(addr, &mut b).is_ok() && b[0] != arch::text::BREAKPOINT {
            frame.rip = addr;
            // SAFETY: `addr` held the int3 this CPU executed: mapped text.
            unsafe { arch::text::refetch(addr) };
            crate::allstop::release_if(entry);
            return true;
        }
    }
    let Some(mut s) = SESSION.try_lock() else {
        return false;
    };
    let tid = tid_of_current(&s.target);
    if s.target.sw.contains(addr) {
        frame.rip = addr;
        s.stop(frame, StopReason::SwBreak(tid));
        return true;
    }
    let wait = crate::WAIT_REQUESTED.swap(false, Ordering::AcqRel);
    if wait || s.attached() {
        let reason = StopReason::SignalWithThread {
            tid,
            signal: SIGTRAP,
        };
        if wait {
            s.stop_with_cause(frame, reason, crate::death::Cause::Wait);
        } else {
            s.stop(frame, reason);
        }
        return true;
    }
    false
}

fn tid_of_current(t: &crate::target::KdbgTarget) -> gdbstub::common::Tid {
    let task = t.host.task_id();
    core::num::NonZeroUsize::new(crate::kernel::tid_of_task(task))
        .unwrap_or(core::num::NonZeroUsize::MIN)
}

/// #DB not claimed by the probe core (single-step, hardware break/watchpoint).
pub fn debug(frame: &mut TrapFrame) -> bool {
    let entry = crate::allstop::acquire(frame);
    let handled = debug_owned(frame);
    crate::allstop::release_if(entry);
    handled
}

fn debug_owned(frame: &mut TrapFrame) -> bool {
    let dr6 = arch::debugreg::read_dr6();
    let Some(mut s) = SESSION.try_lock() else {
        return false;
    };
    let tid = tid_of_current(&s.target);
    if let Some(i) = dr6.hit_slot()
        && let Some((slot, kind)) = s.target.hw.hit(i)
    {
        arch::debugreg::clear_dr6();
        if kind.is_some()
            && !dr6.single_step()
            && probes::CORE.in_handler()
            && crate::protect::code_refusal(frame.rip).is_some()
        {
            // The probe core's own access (a capture reading a watched
            // address), not the program's: not a stop, counted for
            // `monitor refused`. A data watchpoint is a trap: the access
            // has completed and the handler resumes after it.
            crate::protect::count_own_access();
            return true;
        }
        let reason = match kind {
            None => StopReason::HwBreak(tid),
            Some(kind) => StopReason::Watch {
                tid,
                kind,
                addr: slot.addr,
            },
        };
        s.stop(frame, reason);
        return true;
    }
    if dr6.hit_slot().is_some() && !dr6.single_step() {
        // A slot gdb removed while the trap was in flight: the debug
        // registers are rewritten from the table (without that slot) and
        // the instruction resumes; nobody else owns the debug registers.
        arch::debugreg::clear_dr6();
        s.load_debug_registers();
        frame.rflags |= arch::frame::rflags::RF;
        return true;
    }
    if dr6.single_step() {
        arch::debugreg::clear_dr6();
        if !s.step_is_current() {
            // A step left over from a stop that ended it (a Ctrl-C before
            // the step completed, a stop in another task) or from a
            // debugger that went away: finish it quietly. A stop must never
            // leave a step armed that reports itself on a later `c`.
            frame.rflags &= !arch::frame::rflags::TF;
            return true;
        }
        let (slots, len) = arch::slots::area();
        if frame.rip.wrapping_sub(slots) < len as u64 {
            // The step landed inside a probe's out-of-line slot (the copied
            // instruction ran, its jump back has not): keep stepping, so
            // gdb's `stepi` over a probed instruction ends at the real next
            // instruction, never in kdbg's slot area.
            frame.rflags |= arch::frame::rflags::TF;
            return true;
        }
        if frame.rip == probes::trampoline_address() {
            // The step returned into the kretprobe trampoline (a `ret` of a
            // kretprobed function): run the return here as the trampoline
            // would (the return handlers record the return), so the step
            // ends at the real return address with the probe's bookkeeping
            // done, never in kdbg's code.
            probes::CORE.on_return(frame);
        }
        // The stepped instruction set off a watchpoint the step ran without
        // (see `crate::step::watch_hits`): report the watchpoint.
        let reason = match s.take_step_watch().and_then(|i| s.target.hw.hit(i)) {
            Some((slot, Some(kind))) => StopReason::Watch {
                tid,
                kind,
                addr: slot.addr,
            },
            _ => StopReason::SignalWithThread {
                tid,
                signal: SIGTRAP,
            },
        };
        s.stop(frame, reason);
        return true;
    }
    false
}

/// COM2 receive interrupt: bytes from the host while the kernel runs
/// (a Ctrl-C 0x03 or the start of a packet stops the kernel in the stub).
pub fn serial_irq(frame: &mut TrapFrame) {
    let entry = crate::allstop::acquire(frame);
    serial_irq_owned(frame);
    crate::allstop::release_if(entry);
}

/// Bytes wait in COM2's receive FIFO. The timer tick asks, and hands them
/// to [`serial_irq`]: a receive interrupt that found the session busy
/// (another CPU streaming events in its tick) leaves its bytes in the
/// FIFO, and the UART raises no new edge while the FIFO stays non-empty,
/// so without the tick a packet could wait for the host's next byte.
pub fn rx_pending() -> bool {
    crate::ready() && Uart::new(COM2).data_ready()
}

/// The kernel's NMI handler calls this first: a text-patching sync, or a
/// stop on another CPU parks this one (see [`crate::allstop`]). `true`:
/// the NMI was kdbg's.
pub fn nmi(frame: &mut TrapFrame) -> bool {
    crate::allstop::nmi(frame)
}

fn serial_irq_owned(frame: &mut TrapFrame) {
    let uart = Uart::new(COM2);
    let Some(mut s) = SESSION.try_lock() else {
        // The stub is busy on this CPU (cannot happen with interrupts off in
        // the stop loop); leave the bytes in the FIFO.
        return;
    };
    // gdb's watchpoints and hardware breakpoints must not fire inside the
    // stub (its session state, packet buffer, the UART): off while it
    // serves, re-armed from gdb's table (which a `Z` served here may have
    // changed) when it returns or resumes.
    arch::debugreg::disarm();
    while let Some(b) = uart.try_read_byte() {
        if let Some(reason) = s.receive_running(b) {
            s.stop(frame, reason);
            return;
        }
        if s.interrupted() {
            s.stop_interrupted(frame);
            return;
        }
    }
    s.load_debug_registers();
}
