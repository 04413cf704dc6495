//! The trap path: what a breakpoint or a fault does to the per-CPU control
//! block, the frame and the probes. No allocation, no formatting, no lock
//! shared with other CPUs, lookups by hash.

use arch::TrapFrame;
use arch::frame::rflags::{IF, TF};
use arch::insn::{EmuFault, Execution, StackMem, emulate};

use crate::Core;
use crate::host::Host;
use crate::kcb::{Kcb, Level, State};
use crate::kretprobe::{self, Env, RetPool, ReturnAction};
use crate::point::Point;
use crate::probe::{Action, Probe};
use crate::recorder::{self, Hit};
use proto::CaptureSpec;

/// A word of the interrupted context's stack.
fn stack_read(pf: &dyn Host, addr: u64) -> Option<u64> {
    if pf.direct_stack() {
        // SAFETY: the kernel vouches (`Host::direct_stack`) that the
        // interrupted stack is mapped; this is the word the probed
        // instruction (or the call that entered the function) accesses.
        return Some(unsafe { (addr as *const u64).read_unaligned() });
    }
    let mut b = [0u8; 8];
    pf.read(addr, &mut b).then(|| u64::from_le_bytes(b))
}

/// Writes a word of the interrupted context's stack.
fn stack_write(pf: &dyn Host, addr: u64, value: u64) -> bool {
    if pf.direct_stack() {
        // SAFETY: as in `stack_read`.
        unsafe { (addr as *mut u64).write_unaligned(value) };
        return true;
    }
    pf.write(addr, &value.to_le_bytes())
}

/// The interrupted stack for emulated pushes and pops.
struct HostStack<'a>(&'a dyn Host);

impl StackMem for HostStack<'_> {
    fn read_u64(&mut self, addr: u64) -> Result<u64, EmuFault> {
        stack_read(self.0, addr).ok_or(EmuFault { addr, write: false })
    }
    fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), EmuFault> {
        if stack_write(self.0, addr, value) {
            Ok(())
        } else {
            Err(EmuFault { addr, write: true })
        }
    }
}

impl Core {
    /// #BP. `true`: kdbg's, handled, resume the frame.
    pub fn on_breakpoint(&self, frame: &mut TrapFrame) -> bool {
        let Some(pf) = self.host() else {
            return false;
        };
        let Some(kcb) = self.kcbs.get(pf.cpu_id()) else {
            return false;
        };
        kcb.pin();
        let handled = self.breakpoint_pinned(pf, kcb, frame);
        kcb.unpin();
        handled
    }

    fn breakpoint_pinned(&self, pf: &dyn Host, kcb: &Kcb, frame: &mut TrapFrame) -> bool {
        let addr = frame.rip.wrapping_sub(1);
        let state = kcb.state();
        if matches!(state, State::SingleStep | State::Reenter) {
            let cur = kcb.cur();
            // SAFETY: the slot is pending: this CPU holds a pin on its point, which
            // is not retired before the pin goes (`Core::synchronize`).
            if let Some(point) = unsafe { cur.point.as_ref() }
                && point.slot.as_ref().is_some_and(|s| s.trap_rip == frame.rip)
            {
                self.finish_out_of_line(kcb, cur, point, frame);
                return true;
            }
        }
        let Some(point) = self.table.get(addr).or_else(|| {
            // Not ours, or removed between the trap and the lookup: if the
            // byte is no longer an int3, run the restored instruction. On
            // SMP another CPU may have removed the probe and set a new one
            // here meanwhile (it publishes the point before it writes the
            // int3): an int3 read after the miss means look again.
            for _ in 0..8 {
                let mut b = [0u8; 1];
                if !pf.read(addr, &mut b) {
                    return None;
                }
                if b[0] != arch::text::BREAKPOINT {
                    frame.rip = addr;
                    // This CPU executed an int3 memory no longer holds: make
                    // its view current before it runs the byte again.
                    pf.refetch_text(addr);
                    return None;
                }
                if let Some(p) = self.table.get(addr) {
                    return Some(p);
                }
                core::hint::spin_loop();
            }
            None
        }) else {
            // `rip` was rewound when the int3 is gone: resume there.
            return frame.rip == addr;
        };
        if point.gdb && state == State::Idle {
            // gdb also has a breakpoint here: the stub reports the stop;
            // the probe runs when the debugger resumes without it. A false
            // condition resumes like a probe hit instead, host untouched.
            match point.cond.as_deref() {
                Some(c) if !c.should_stop(pf, addr, frame) => {}
                _ => return false,
            }
        }
        match state {
            State::Idle => self.hit(pf, kcb, point, frame),
            State::Active | State::SingleStepDone | State::SingleStep | State::StepPad => {
                self.reenter(pf, kcb, kcb.cur(), point, frame)
            }
            State::Reenter => pf.fatal(
                "kdbg: probe hit while a re-entered probe runs (double re-entry); probe state is unrecoverable",
            ),
        }
        true
    }

    fn hit(&self, pf: &dyn Host, kcb: &Kcb, point: &Point, frame: &mut TrapFrame) {
        let stepping = frame.rflags & TF != 0;
        // The caller saw `Idle`; `Active` does not outlive the trap either.
        kcb.set_cur_transient(Level::at(State::Active, point));
        for p in &point.probes {
            if !p.is_enabled() {
                continue;
            }
            // A kretprobe's hits are the returns it handled (counted at the
            // trampoline); entries without an instance are nmissed.
            if !matches!(p.action, Action::Kretprobe(_)) {
                p.hits.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
            if self.run_pre(pf, p, frame) {
                Self::finish(pf, kcb, frame, stepping);
                return;
            }
        }
        if Self::to_detour(point, frame) {
            kcb.set_cur_transient(Level::IDLE);
            return;
        }
        // The boosted jump inline (the common case; `execute` has the
        // rest): the same condition and effect as `execute`'s boost arm.
        // The level is `Active` again here: a nested hit inside a handler
        // restores the level it interrupted before it returns.
        if !stepping
            && point.boost
            && matches!(point.analysis.exec, Execution::OutOfLine { .. })
            && let Some(slot) = point.slot.as_ref()
            && let Some((if_clear, if_set)) = slot.boost
        {
            Self::boost_jump(frame, if_clear, if_set);
            kcb.set_cur_transient(Level::IDLE);
            return;
        }
        self.execute(pf, kcb, point, frame, false, stepping);
    }

    /// Sends the frame into a boosted slot: the copied instruction followed
    /// by a jump back, run with IF clear (the IF-set variant sets it again
    /// after the instruction).
    #[inline(always)]
    fn boost_jump(frame: &mut TrapFrame, if_clear: u64, if_set: u64) {
        if frame.rflags & IF != 0 {
            frame.rflags &= !IF;
            frame.rip = if_set;
        } else {
            frame.rip = if_clear;
        }
    }

    /// Ends a hit whose instruction completed in the trap handler. A
    /// single-stepping context goes through the step pad so that the
    /// debugger's step ends with a real #DB at `frame.rip`.
    fn finish(pf: &dyn Host, kcb: &Kcb, frame: &mut TrapFrame, stepping: bool) {
        if stepping {
            kcb.set_cur(Level {
                target: frame.rip,
                ..Level::at(State::StepPad, core::ptr::null())
            });
            frame.rip = pf.step_pad();
        } else {
            kcb.set_cur(Level::IDLE);
        }
    }

    /// A hit on a point whose region is (being) jump-optimized: the
    /// region's copy in the detour runs instead of the slot (interrupts
    /// off; the `sti` copy sets IF again). `false`: not such a point.
    #[inline(always)]
    fn to_detour(point: &Point, frame: &mut TrapFrame) -> bool {
        let d = point.detour.load(core::sync::atomic::Ordering::Acquire);
        if d == 0 {
            return false;
        }
        if frame.rflags & IF != 0 {
            frame.rflags &= !IF;
            frame.rip = d + arch::detour::COPY_STI as u64;
        } else {
            frame.rip = d + arch::detour::COPY as u64;
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn reenter(&self, pf: &dyn Host, kcb: &Kcb, cur: Level, point: &Point, frame: &mut TrapFrame) {
        for p in &point.probes {
            if p.is_enabled() {
                p.missed();
            }
        }
        if Self::to_detour(point, frame) {
            // The level this hit interrupted stays current.
            return;
        }
        kcb.set_prev(cur);
        kcb.set_cur(Level::at(State::Reenter, point));
        self.execute(pf, kcb, point, frame, true, false);
    }

    /// Back to the saved level after a re-entered hit, or to idle.
    fn done(kcb: &Kcb, reenter: bool) {
        if reenter {
            kcb.set_cur(kcb.prev());
            kcb.set_prev(Level::IDLE);
        } else {
            kcb.set_cur(Level::IDLE);
        }
    }

    fn execute(
        &self,
        pf: &dyn Host,
        kcb: &Kcb,
        point: &Point,
        frame: &mut TrapFrame,
        reenter: bool,
        stepping: bool,
    ) {
        match point.analysis.exec {
            Execution::Emulate(e) => {
                let mut mem = HostStack(pf);
                if emulate(&e, point.analysis.next_ip(), frame, &mut mem).is_err() {
                    pf.fatal(
                        "kdbg: an emulated push/pop of a probed instruction faulted (bad stack)",
                    );
                }
                if reenter {
                    Self::done(kcb, true);
                } else {
                    self.post(kcb, point, frame);
                    Self::finish(pf, kcb, frame, stepping);
                }
            }
            Execution::OutOfLine { .. } => {
                let Some(slot) = point.slot.as_ref() else {
                    pf.fatal("kdbg: out-of-line probe point without a slot");
                };
                match slot.boost {
                    Some((if_clear, if_set)) if point.boost && !stepping => {
                        Self::boost_jump(frame, if_clear, if_set);
                        Self::done(kcb, reenter);
                    }
                    _ => {
                        let state = if reenter {
                            State::Reenter
                        } else {
                            State::SingleStep
                        };
                        // With TF set (a debugger's step) the #DB after the
                        // slot's instruction ends the step instead of the
                        // tail int3 ([`Core::on_debug`]).
                        kcb.set_cur(Level {
                            saved_if: frame.rflags & IF,
                            ..Level::at(state, point)
                        });
                        frame.rflags &= !IF;
                        frame.rip = slot.trap_entry;
                    }
                }
            }
        }
    }

    fn finish_out_of_line(&self, kcb: &Kcb, cur: Level, point: &Point, frame: &mut TrapFrame) {
        frame.rip = point.analysis.next_ip();
        frame.rflags = (frame.rflags & !IF) | cur.saved_if;
        if cur.state == State::Reenter {
            Self::done(kcb, true);
        } else {
            self.post(kcb, point, frame);
            kcb.set_cur(Level::IDLE);
        }
    }

    /// Runs the post handlers (the caller then leaves the hit).
    fn post(&self, kcb: &Kcb, point: &Point, frame: &mut TrapFrame) {
        kcb.set_cur(Level::at(State::SingleStepDone, point));
        for p in &point.probes {
            if let Action::Kprobe(k) = &p.action
                && let Some(post) = k.post_handler
                && p.is_enabled()
            {
                post(p, frame);
            }
        }
    }

    /// Runs one probe's entry work; `true` = skip the instruction.
    ///
    /// Only the plain kprobe arm is inline: the others live in their own
    /// never-inlined functions so that the kprobe hit path does not pay for
    /// their stack frames and register spills (the `Host` methods they
    /// use were spilled before the probes loop when they were inline).
    #[inline(always)]
    pub(crate) fn run_pre(&self, pf: &dyn Host, p: &Probe, frame: &mut TrapFrame) -> bool {
        match &p.action {
            Action::Kprobe(k) => k.pre_handler.is_some_and(|h| h(p, frame)),
            Action::Jprobe { entry } => {
                Self::run_jprobe(pf, *entry, frame);
                false
            }
            Action::Kretprobe(pool) => {
                self.run_kretprobe_entry(pf, p, pool, frame);
                false
            }
            Action::Record { kind, spec } => {
                // A false one-compare predicate ends the hit here, before
                // the recording path's frame is set up (the bench's
                // `pred_false` row); a true one is checked again there.
                if let Some(pr) = p.pred.as_deref()
                    && let Some((reg, value, cmp)) = pr.one_compare()
                    && !proto::bytecode::compare(
                        cmp,
                        crate::cond::frame_reg(frame, reg, p.addr),
                        value,
                    )
                {
                    p.filtered
                        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                    return false;
                }
                self.run_record(pf, p, *kind, spec, frame);
                false
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn run_jprobe(pf: &dyn Host, entry: u64, frame: &mut TrapFrame) {
        let mut stack = [0u64; arch::callout::MAX_STACK_WORDS];
        let mut bytes = [0u8; 8 * arch::callout::MAX_STACK_WORDS];
        if pf.read(frame.rsp.wrapping_add(8), &mut bytes) {
            for (w, c) in stack.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                *w = u64::from_le_bytes(a);
            }
        }
        let args = frame.args();
        pf.call_with_args(entry, &args, &stack);
    }

    #[inline(never)]
    fn run_kretprobe_entry(&self, pf: &dyn Host, p: &Probe, pool: &RetPool, frame: &mut TrapFrame) {
        let read = |a: u64| stack_read(pf, a);
        let write = |a: u64, v: u64| stack_write(pf, a, v);
        let env = Env {
            read_u64: &read,
            write_u64: &write,
            task: pf.task_id(),
            tsc: pf.timestamp(),
            trampoline: pf.trampoline(),
        };
        kretprobe::on_entry(&self.chains, p, pool, frame, &env);
    }

    #[inline(never)]
    fn run_record(
        &self,
        pf: &dyn Host,
        p: &Probe,
        kind: proto::EventKind,
        spec: &CaptureSpec,
        frame: &mut TrapFrame,
    ) {
        if let Some(pr) = p.pred.as_deref()
            && !crate::cond::entry_predicate(pf, p, pr, frame)
        {
            return;
        }
        if let Some(m) = p.map.as_deref() {
            let env = crate::cond::ProbeEnv {
                pf,
                frame,
                ip: p.addr,
                ret: None,
            };
            m.update(&env);
            return;
        }
        let cpu = pf.cpu_id();
        if let Some(ring) = self.rings.get(cpu) {
            let hit = Hit {
                probe: p,
                kind,
                cpu,
                task: pf.task_id(),
                tsc: pf.timestamp(),
                ip: p.addr,
                args: frame.args(),
                ret: None,
                duration: None,
            };
            recorder::record(pf, ring, &hit, spec, frame, frame.rsp.wrapping_add(8));
        }
    }

    #[inline(always)]
    fn trampoline_hit(&self, pf: &dyn Host, kcb: &Kcb, frame: &mut TrapFrame) {
        let task = pf.task_id();
        let cur = kcb.cur();
        let handlers = cur.state == State::Idle;
        if handlers {
            kcb.set_cur(Level::at(State::Active, core::ptr::null()));
        }
        let cpu = pf.cpu_id();
        let now = pf.timestamp();
        let mut run = |r: kretprobe::Returned<'_>, frame: &mut TrapFrame| {
            // The real return address where the trampoline's frame record
            // points unwinders (`frame.rip` is already the real one), before
            // the handler runs.
            stack_write(pf, frame.rsp.wrapping_sub(8), frame.rip);
            let kretprobe::Returned { probe, mut ctx } = r;
            probe
                .hits
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            let Action::Kretprobe(pool) = &probe.action else {
                return;
            };
            match pool.action {
                ReturnAction::Handlers {
                    handler: Some(h), ..
                } => {
                    h(&mut ctx, frame);
                }
                ReturnAction::Handlers { handler: None, .. } => {}
                ReturnAction::Record(spec) => {
                    if probe.pred.is_some() || probe.map.is_some() {
                        let env = crate::cond::ProbeEnv {
                            pf,
                            frame,
                            ip: probe.addr,
                            ret: Some((ctx.args, now.wrapping_sub(ctx.entry_tsc))),
                        };
                        if !crate::cond::predicate(probe, &env) {
                            return;
                        }
                        if let Some(m) = probe.map.as_deref() {
                            m.update(&env);
                            return;
                        }
                    }
                    if let Some(ring) = self.rings.get(cpu) {
                        let hit = Hit {
                            probe,
                            kind: proto::EventKind::KretprobeReturn,
                            cpu,
                            task: ctx.task,
                            tsc: now,
                            ip: probe.addr,
                            args: ctx.args,
                            ret: Some(frame.rax),
                            duration: Some(now.wrapping_sub(ctx.entry_tsc)),
                        };
                        recorder::record(pf, ring, &hit, &spec, frame, frame.rsp);
                    }
                }
            }
        };
        let r = kretprobe::on_return(&self.chains, task, frame, handlers, &mut run);
        if handlers {
            kcb.set_cur(Level::IDLE);
        }
        if r.is_err() {
            pf.fatal(
                "kdbg: kretprobe trampoline reached with no instance for this task and frame: the real return address is lost",
            );
        }
    }

    /// A hijacked return reached the trampoline (`frame` is the
    /// trampoline's frame: `rsp` just above the hijacked slot), or a
    /// debugger's single step landed on its first byte (`frame` is the
    /// #DB frame, `rip` the trampoline). Runs the return handlers and sets
    /// `frame.rip` to the real return address; the real address is also
    /// written into the word below `rsp` before each handler runs, where
    /// the trampoline's frame record points unwinders.
    pub fn on_return(&self, frame: &mut TrapFrame) {
        let Some(pf) = self.host() else {
            return;
        };
        let Some(kcb) = self.kcbs.get(pf.cpu_id()) else {
            pf.fatal("kdbg: kretprobe trampoline reached on a CPU without a control block");
        };
        kcb.pin();
        self.trampoline_hit(pf, kcb, frame);
        kcb.unpin();
    }

    /// This CPU is running the probe core's handlers (pre/post handlers,
    /// captures, return handlers). A data watchpoint that fires now was set
    /// off by the probe core's own reads (a capture of a watched address),
    /// not by the program: the stub does not report it (kgdb's rule for the
    /// debugger's own accesses).
    pub fn in_handler(&self) -> bool {
        let Some(pf) = self.host() else {
            return false;
        };
        self.kcbs
            .get(pf.cpu_id())
            .is_some_and(|k| matches!(k.state(), State::Active | State::SingleStepDone))
    }

    /// #DB. Ends a debugger's single step through a probed instruction:
    /// after an out-of-line instruction (the #DB comes before the slot's
    /// tail int3) or at the step pad. A debug trap after a slot's
    /// instruction for another reason (a data watchpoint hit by the copied
    /// instruction) is moved to the original next instruction the same way.
    /// Always `false`: the frame now shows the real place and the stub
    /// reports it.
    pub fn on_debug(&self, frame: &mut TrapFrame) -> bool {
        let Some(pf) = self.host() else {
            return false;
        };
        let Some(kcb) = self.kcbs.get(pf.cpu_id()) else {
            return false;
        };
        kcb.pin();
        let cur = kcb.cur();
        match cur.state {
            State::StepPad if frame.rip == pf.step_pad().wrapping_add(1) => {
                frame.rip = cur.target;
                kcb.set_cur(Level::IDLE);
            }
            State::SingleStep => {
                // SAFETY: a non-idle control block pins its point.
                if let Some(point) = unsafe { cur.point.as_ref() }
                    && point
                        .slot
                        .as_ref()
                        .is_some_and(|s| s.trap_rip.wrapping_sub(1) == frame.rip)
                {
                    self.finish_out_of_line(kcb, cur, point, frame);
                }
            }
            State::Idle => {
                if let Some(addr) = self.slot_owner(frame.rip)
                    && let Some(point) = self.table.get(addr)
                    && let Some(slot) = point.slot.as_ref()
                    && let Some((next, set_if)) =
                        slot.after_boosted_insn(&point.analysis, frame.rip)
                {
                    frame.rip = next;
                    if set_if {
                        frame.rflags |= IF;
                    }
                }
            }
            _ => {}
        }
        kcb.unpin();
        false
    }

    /// A fault (#PF, #GP, #UD, ...). `true`: a fault handler handled it.
    pub fn on_fault(&self, frame: &mut TrapFrame) -> bool {
        let Some(pf) = self.host() else {
            return false;
        };
        let Some(kcb) = self.kcbs.get(pf.cpu_id()) else {
            return false;
        };
        kcb.pin();
        let handled = self.fault_pinned(kcb, frame);
        kcb.unpin();
        handled
    }

    fn fault_pinned(&self, kcb: &Kcb, frame: &mut TrapFrame) -> bool {
        let cur = kcb.cur();
        // SAFETY: a non-idle control block pins its point.
        let point = unsafe { cur.point.as_ref() };
        match (cur.state, point) {
            (State::SingleStep | State::Reenter, Some(point))
                if point
                    .slot
                    .as_ref()
                    .is_some_and(|s| s.trap_entry == frame.rip) =>
            {
                // The out-of-line instruction faulted: make it look in place.
                frame.rip = point.addr;
                frame.rflags = (frame.rflags & !IF) | cur.saved_if;
                if cur.state == State::Reenter {
                    Self::done(kcb, true);
                    return false;
                }
                kcb.set_cur(Level::at(State::Active, point));
                let handled = Self::call_fault_handlers(point, frame);
                kcb.set_cur(Level::IDLE);
                handled
            }
            (State::Active | State::SingleStepDone, Some(point)) => {
                // A handler faulted.
                Self::call_fault_handlers(point, frame)
            }
            (State::Idle, _) => {
                // A boosted slot's instruction faulted.
                let Some(addr) = self.slot_owner(frame.rip) else {
                    return false;
                };
                if let Some(point) = self.table.get(addr)
                    && let Some(slot) = point.slot.as_ref()
                    && let Some((orig, set_if)) = slot.fault_origin(&point.analysis, frame.rip)
                {
                    frame.rip = orig;
                    if set_if {
                        frame.rflags |= IF;
                    }
                }
                false
            }
            _ => false,
        }
    }

    fn call_fault_handlers(point: &Point, frame: &mut TrapFrame) -> bool {
        let vector = frame.vector;
        point.probes.iter().any(|p| match &p.action {
            Action::Kprobe(k) if p.is_enabled() => {
                k.fault_handler.is_some_and(|h| h(p, frame, vector))
            }
            _ => false,
        })
    }
}
