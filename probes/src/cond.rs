//! Conditions on gdb's software breakpoints, evaluated in the trap handler:
//! a breakpoint whose condition is false (or faults, or whose ignore count
//! is not used up) resumes at once like a probe hit, without the stub and
//! without the host. Only a true condition with no ignore count left stops.
//!
//! The condition lives with the probe point at the breakpoint's address
//! (a point with no probes is made for it), so the hit path finds it with
//! the same lock-free lookup as probes; its counters outlive republishing
//! (the point holds an `Arc`).

use core::sync::atomic::{AtomicU64, Ordering};

use arch::TrapFrame;
use proto::bytecode::{self, Program};

use crate::host::Host;

/// Most programs one breakpoint carries (gdb sends one per breakpoint at the
/// address; the stop happens when any is true).
pub const MAX_PROGRAMS: usize = 4;

/// A breakpoint's condition and counters.
pub struct StopCond {
    progs: [Option<Program>; MAX_PROGRAMS],
    /// The only program, when it is one register compare (`n == 5`):
    /// `(register, constant, comparison)`, decided without the interpreter.
    fast: Option<(u8, u64, u8)>,
    /// Stops (true, not ignored); hits = stops + false + faults + ignored.
    pub(crate) stops: AtomicU64,
    /// True hits still to skip.
    pub(crate) ignore: AtomicU64,
    pub(crate) false_hits: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) ignored: AtomicU64,
    /// Set from gdb's `Z0;X` agent expressions (a plain `Z0` ends it),
    /// not from kdbg's `monitor cond` (which survives `z0`/`Z0`).
    pub from_agent: bool,
}

/// A snapshot of a condition's counters: the wire's `cond` row itself
/// (`prog_len`: bytes of the programs, 0 for an ignore count alone).
pub type CondInfo = proto::reply::CondRow;

impl StopCond {
    /// At most [`MAX_PROGRAMS`] programs are kept (the rest are ignored).
    pub fn new(
        progs: impl IntoIterator<Item = Program>,
        ignore: u64,
        from_agent: bool,
    ) -> StopCond {
        let mut p = [None; MAX_PROGRAMS];
        for (slot, prog) in p.iter_mut().zip(progs) {
            *slot = Some(prog);
        }
        let fast = match p {
            [Some(only), None, None, None] => only.one_compare(),
            _ => None,
        };
        StopCond {
            progs: p,
            fast,
            stops: AtomicU64::new(0),
            ignore: AtomicU64::new(ignore),
            false_hits: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            from_agent,
        }
    }

    /// Takes over the hit counters of the condition this one replaces.
    pub(crate) fn carry_counters(&self, old: &StopCond) {
        for (new, old) in [
            (&self.stops, &old.stops),
            (&self.false_hits, &old.false_hits),
            (&self.faults, &old.faults),
            (&self.ignored, &old.ignored),
        ] {
            new.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Nothing to decide: no program and no ignore count.
    pub fn is_trivial(&self) -> bool {
        self.progs.iter().all(Option::is_none) && self.ignore.load(Ordering::Relaxed) == 0
    }

    pub(crate) fn info(&self, addr: u64) -> CondInfo {
        let false_hits = self.false_hits.load(Ordering::Relaxed);
        let faults = self.faults.load(Ordering::Relaxed);
        let ignored = self.ignored.load(Ordering::Relaxed);
        let stops = self.stops.load(Ordering::Relaxed);
        CondInfo {
            addr,
            hits: stops + false_hits + faults + ignored,
            false_hits,
            faults,
            ignored,
            ignore: self.ignore.load(Ordering::Relaxed),
            prog_len: self
                .progs
                .iter()
                .flatten()
                .map(|p| p.code().len() as u64)
                .sum(),
        }
    }

    /// Decides at a hit at `addr` whether the debugger stops.
    #[inline]
    pub(crate) fn should_stop(&self, pf: &dyn Host, addr: u64, frame: &TrapFrame) -> bool {
        if let Some((reg, value, cmp)) = self.fast
            && !bytecode::compare(cmp, frame_reg(frame, reg, addr), value)
        {
            self.false_hits.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.fast.is_none() && !self.decide(pf, addr, frame) {
            return false;
        }
        // gdb's order: the condition first, then the ignore count.
        if self.ignore.load(Ordering::Relaxed) != 0
            && self
                .ignore
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            self.ignored.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.stops.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Runs the programs (not the fast shape); counts a false or faulting
    /// outcome. `true`: some program is true (or there is none).
    #[cold]
    #[inline(never)]
    fn decide(&self, pf: &dyn Host, addr: u64, frame: &TrapFrame) -> bool {
        let mut any = false;
        let mut truth = false;
        let mut faulted = false;
        for p in self.progs.iter().flatten() {
            any = true;
            let env = FrameEnv { pf, frame, addr };
            match p.eval(&env) {
                Ok(0) => {}
                Ok(_) => {
                    truth = true;
                    break;
                }
                Err(_) => faulted = true,
            }
        }
        if any && !truth {
            let c = if faulted {
                &self.faults
            } else {
                &self.false_hits
            };
            c.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The trap frame and memory as the bytecode sees them.
pub struct FrameEnv<'a> {
    pub pf: &'a dyn Host,
    pub frame: &'a TrapFrame,
    /// The breakpoint's address (what `rip` reads as: the trap frame's rip
    /// is past the int3).
    pub addr: u64,
}

/// Register `n` of `frame` in gdb's numbering (`bytecode::REG_NAMES`),
/// with `rip` reading as `rip`.
#[inline]
pub fn frame_reg(frame: &TrapFrame, n: u8, rip: u64) -> u64 {
    match n {
        0 => frame.rax,
        1 => frame.rbx,
        2 => frame.rcx,
        3 => frame.rdx,
        4 => frame.rsi,
        5 => frame.rdi,
        6 => frame.rbp,
        7 => frame.rsp,
        8 => frame.r8,
        9 => frame.r9,
        10 => frame.r10,
        11 => frame.r11,
        12 => frame.r12,
        13 => frame.r13,
        14 => frame.r14,
        15 => frame.r15,
        16 => rip,
        17 => frame.rflags,
        18 => frame.cs,
        19 => frame.ss,
        _ => 0,
    }
}

impl bytecode::Env for FrameEnv<'_> {
    #[inline]
    fn reg(&self, n: u8) -> u64 {
        frame_reg(self.frame, n, self.addr)
    }
    fn ctx(&self, n: u8) -> u64 {
        match n {
            bytecode::CTX_TASK => u64::from(self.pf.task_id()),
            bytecode::CTX_CPU => self.pf.cpu_id() as u64,
            bytecode::CTX_RET => self.frame.rax,
            _ => 0,
        }
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.pf.read(addr, buf)
    }
}

/// A probe predicate's view: the trap frame, and at a kretprobe's return
/// the arguments stashed at entry (the argument registers read them), the
/// return value and the entry-to-return time.
pub struct ProbeEnv<'a> {
    pub pf: &'a dyn Host,
    pub frame: &'a TrapFrame,
    pub ip: u64,
    /// `Some` at a return: (entry arguments rdi..r9, duration in ticks).
    pub ret: Option<([u64; 6], u64)>,
}

impl bytecode::Env for ProbeEnv<'_> {
    #[inline]
    fn reg(&self, n: u8) -> u64 {
        if let Some((args, _)) = &self.ret {
            let i = match n {
                5 => Some(0),
                4 => Some(1),
                3 => Some(2),
                2 => Some(3),
                8 => Some(4),
                9 => Some(5),
                _ => None,
            };
            if let Some(v) = i.and_then(|i| args.get(i)) {
                return *v;
            }
        }
        frame_reg(self.frame, n, self.ip)
    }
    fn ctx(&self, n: u8) -> u64 {
        match n {
            bytecode::CTX_TASK => u64::from(self.pf.task_id()),
            bytecode::CTX_CPU => self.pf.cpu_id() as u64,
            bytecode::CTX_RET => self.frame.rax,
            bytecode::CTX_DURATION => self.ret.map_or(0, |(_, d)| d),
            _ => 0,
        }
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.pf.read(addr, buf)
    }
}

/// A probe's predicate at a kprobe or entry hit (no stashed arguments):
/// the one-compare shape inline, the rest through [`predicate`].
#[inline(always)]
pub(crate) fn entry_predicate(
    pf: &dyn Host,
    probe: &crate::probe::Probe,
    prog: &Program,
    frame: &TrapFrame,
) -> bool {
    if let Some((reg, value, cmp)) = prog.one_compare() {
        if bytecode::compare(cmp, frame_reg(frame, reg, probe.addr), value) {
            return true;
        }
        probe.filtered.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let env = ProbeEnv {
        pf,
        frame,
        ip: probe.addr,
        ret: None,
    };
    predicate(probe, &env)
}

/// Runs a probe's predicate; counts a false or faulting outcome on the
/// probe. `true`: record the hit.
#[inline]
pub(crate) fn predicate(probe: &crate::probe::Probe, env: &ProbeEnv<'_>) -> bool {
    let Some(p) = probe.pred.as_deref() else {
        return true;
    };
    if env.ret.is_none()
        && let Some((reg, value, cmp)) = p.one_compare()
    {
        if bytecode::compare(cmp, frame_reg(env.frame, reg, env.ip), value) {
            return true;
        }
        probe.filtered.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    match p.eval(env) {
        Ok(0) => {
            probe.filtered.fetch_add(1, Ordering::Relaxed);
            false
        }
        Ok(_) => true,
        Err(_) => {
            probe.pred_faults.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}
