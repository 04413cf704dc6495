//! The debugging session: gdbstub's state machine kept in a static across
//! resumes, and the stop loop that runs while the kernel is stopped.
//!
//! States as the kernel sees them:
//! - **detached**: a fresh machine in `Idle`, nobody attached. The kernel
//!   runs; the first byte of a packet (or a Ctrl-C) on COM2 stops it in the
//!   stop loop, which answers gdb's handshake (attaching stops the kernel,
//!   like attaching to a process).
//! - **running**: gdb attached and said continue/step (`Running`). Bytes are
//!   fed from the COM2 interrupt; a Ctrl-C stops the kernel; probe events
//!   stream as `O` packets.
//! - **stopped**: inside [`stop`], polling COM2 with interrupts off until gdb
//!   resumes or detaches.
//!
//! gdbstub's error paths consume the machine; every packet is framed and
//! checksum-checked first ([`crate::framer`]) so line noise never reaches
//! it, and if it still fails (a malformed command) the stub answers `E01`
//! and starts a fresh machine, keeping the kernel alive.

use arch::TrapFrame;
use core::sync::atomic::{AtomicU64, Ordering};
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use spin::Mutex;

use crate::conn::{Com2, ConsoleWriter, write_packet};
use crate::framer::{Frame, Framer, MAX_PACKET};
use crate::packet::Action;
use crate::target::{KdbgTarget, Resume};

type Machine = GdbStubStateMachine<'static, KdbgTarget, Com2>;
pub type StopReason = MultiThreadStopReason<u64>;

/// Everything the stub keeps between stops.
pub struct Session {
    machine: Option<Machine>,
    pub target: KdbgTarget,
    framer: Framer,
    /// gdb sent at least one packet since the machine was made.
    attached: bool,
    /// The last resume was a single step (TF armed in `step_task`'s frame).
    stepping: bool,
    /// The task whose frame got the step's TF.
    step_task: u32,
    /// gdb switched acks off (`QStartNoAckMode` answered OK by this
    /// machine): replies the stub writes itself get no `+` first.
    no_ack: bool,
    /// The stepped code's own TF (0 or `rflags::TF`) before the stub set
    /// TF for the step: the step's stop puts it back, so gdb never sees the
    /// stub's TF.
    step_saved_tf: u64,
    /// The step runs with IF masked (the code's IF was set): the step's
    /// stop sets it again (see [`crate::step`]).
    step_masked_if: bool,
    /// Watch slots the stepped instruction sets off (bit i: slot i): off
    /// for the step, reported at its end (see `crate::step::watch_hits`).
    step_watch: u8,
    /// A complete packet in the framer waits for the stop loop.
    pending: bool,
    /// The kernel stopped only because a packet started while nobody was
    /// attached: if no valid packet follows soon, it was line noise.
    tentative: bool,
    /// The stop being entered was caused by a debugger attaching.
    attach_stop: bool,
}

// SAFETY: `Machine` holds the COM2 handle, the static packet buffer and the
// target type marker; all are only touched under `SESSION`'s lock.
unsafe impl Send for Session {}

pub static SESSION: Mutex<Session> = Mutex::new(Session {
    machine: None,
    target: KdbgTarget::new(),
    framer: Framer::new(),
    attached: false,
    stepping: false,
    step_task: 0,
    no_ack: false,
    step_saved_tf: 0,
    step_masked_if: false,
    step_watch: 0,
    pending: false,
    tentative: false,
    attach_stop: false,
});

/// How long a tentative stop (a `$` or a Ctrl-C while detached) waits for a
/// valid packet, in TSC ticks (about a second or more on any host).
const TENTATIVE_TICKS: u64 = 2_000_000_000;

/// gdbstub's packet buffer. Only the one live machine borrows it.
static mut PACKET_BUFFER: [u8; MAX_PACKET] = [0; MAX_PACKET];

/// `kdbg.idle=SECS` (0: never): how long the kernel stays stopped with no
/// byte from the host before the stub takes the host as gone.
static IDLE_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(0);

/// Sets the idle timeout of a stopped kernel (the kernel passes
/// `kdbg.idle=SECS` from its command line). 0, the default, waits for
/// ever: a user may look at a stopped kernel as long as they like, and
/// a stop that ended by itself would resume code under a breakpoint the
/// user is still studying.
pub fn set_idle_timeout_secs(secs: u64) {
    IDLE_TIMEOUT_SECS.store(secs, Ordering::Relaxed);
}

fn idle_timeout_ticks(host: &dyn probes::Host) -> u64 {
    let secs = IDLE_TIMEOUT_SECS.load(Ordering::Relaxed);
    if secs == 0 {
        return 0;
    }
    // The measured TSC rate; before it is known, 1 GHz (on any host the
    // real rate is at least that, so the wait is no shorter than asked).
    let hz = match crate::clock::tsc(host).0 {
        0 => 1_000_000_000,
        hz => hz,
    };
    secs.saturating_mul(hz)
}

/// Where gdbstub's packet buffer lives (watchpoints there are refused).
pub fn packet_buffer_range() -> core::ops::Range<u64> {
    let start = core::ptr::addr_of!(PACKET_BUFFER) as u64;
    start..start + MAX_PACKET as u64
}

/// Signal numbers gdb knows.
pub const SIGINT: Signal = Signal(2);
pub const SIGTRAP: Signal = Signal(5);
pub const SIGSEGV: Signal = Signal(11);

impl Session {
    /// A fresh machine (after boot, detach, kill or a fatal protocol error).
    fn restart(&mut self) {
        // Drop the old machine first: it holds the packet buffer.
        // The framer is left alone: it may hold the packet that caused
        // the restart (a new gdb's `qSupported`), which is fed next.
        self.machine = None;
        self.attached = false;
        self.no_ack = false;
        // SAFETY: the previous machine (the only other borrower of the
        // buffer) was dropped above, and `SESSION`'s lock serialises callers.
        let buf: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(PACKET_BUFFER) };
        let stub = match GdbStub::<KdbgTarget, Com2>::builder(Com2::new())
            .with_packet_buffer(buf)
            .build()
        {
            Ok(s) => s,
            Err(_) => return,
        };
        self.machine = stub.run_state_machine(&mut self.target).ok();
    }

    /// A debugger is attached and the kernel runs under it.
    pub fn running(&self) -> bool {
        matches!(self.machine, Some(GdbStubStateMachine::Running(_)))
    }

    pub fn attached(&self) -> bool {
        self.attached
    }

    /// Feeds bytes to gdbstub; on a protocol failure (a malformed command)
    /// answers `E01` and starts a fresh machine, the kernel stays put.
    fn feed(&mut self, bytes: &[u8]) -> Fed {
        let fed = feed_machine(&mut self.machine, &mut self.target, bytes);
        if let Fed::Failed = fed {
            write_packet(&Com2::new().0, b"E01");
            self.restart();
            self.attached = true;
        }
        fed
    }

    /// Feeds the packet in the framer. A `qSupported` from a new gdb while
    /// an old session is still open (the host went away without `D`) ends
    /// the old session first: its breakpoints go, the protocol state resets.
    fn feed_packet(&mut self) -> Fed {
        if self.framer.packet().starts_with(b"$qSupported") && self.attached {
            self.target.clear_breakpoints();
            self.restart();
        }
        self.attached = true;
        if self.framer.packet().starts_with(b"$?#") && self.answer_question_mark() {
            return Fed::Stay;
        }
        // Binary memory reads: gdbstub does not know `x`.
        if let Some((addr, len)) =
            crate::packet::body(self.framer.packet()).and_then(crate::binread::parse)
        {
            let uart = Com2::new().0;
            if !self.no_ack {
                uart.write_byte(b'+');
            }
            crate::binread::answer(&mut self.target, addr, len, &uart);
            return Fed::Stay;
        }
        // Conditions in `Z0;X...` are taken out here (gdbstub 0.7 drops
        // them), and `qSupported`'s reply advertises them.
        let qsupported = self.framer.packet().starts_with(b"$qSupported");
        let z0 = crate::conditions::parse_z0(self.framer.packet()).map(|mut z| {
            let ok = crate::conditions::before_z0(&mut z);
            (z, ok)
        });
        if qsupported {
            crate::conditions::arm_qsupported();
        }
        // Disjoint fields: the framer's buffer is fed without a copy.
        let fed = match z0 {
            Some((_, false)) => {
                let uart = Com2::new().0;
                if !self.no_ack {
                    uart.write_byte(b'+');
                }
                write_packet(&uart, crate::packet::EINVAL_REPLY);
                Fed::Stay
            }
            Some((z, true)) => {
                let plain = z.plain.get(..z.plain_len).unwrap_or(&[]);
                feed_machine(&mut self.machine, &mut self.target, plain)
            }
            None => match crate::packet::inspect(self.framer.packet()) {
                Action::Forward => {
                    feed_machine(&mut self.machine, &mut self.target, self.framer.packet())
                }
                Action::Rewrite(r) => feed_machine(&mut self.machine, &mut self.target, r.frame()),
                Action::Answer(body) => {
                    let uart = Com2::new().0;
                    if !self.no_ack {
                        uart.write_byte(b'+');
                    }
                    write_packet(&uart, body);
                    Fed::Stay
                }
            },
        };
        if qsupported {
            crate::conditions::disarm();
        }
        if let Fed::Failed = fed {
            write_packet(&Com2::new().0, b"E01");
            self.restart();
            self.attached = true;
        } else if crate::packet::body(self.framer.packet()) == Some(b"QStartNoAckMode") {
            self.no_ack = true;
        }
        fed
    }

    /// Ends the session on gdb's `D` or `k`: every gdb breakpoint goes,
    /// probes stay, a new machine waits for the next attach.
    fn detach(&mut self, reason: DisconnectReason) {
        self.target.clear_breakpoints();
        // A direct event consumer leaves with its debugger.
        crate::shm::detached();
        // A `D` served while the kernel runs has no resume after it.
        self.load_debug_registers();
        self.target.resume = Resume::Continue;
        self.restart();
        self.framer.reset();
        self.tentative = false;
        if reason == DisconnectReason::Kill {
            self.target.host.kill();
        }
    }

    /// gdb's `?` for a stop that was not caused by this attach (a death, a
    /// breakpoint hit with nobody attached, `kdbg.wait`): the real signal
    /// and the task that stopped (gdbstub's own answer is always `T05` for
    /// the first thread). Returns `false` to let gdbstub answer.
    fn answer_question_mark(&mut self) -> bool {
        let Some(last) = crate::death::last_stop() else {
            return false;
        };
        if last.cause == crate::death::Cause::Attach {
            return false;
        }
        let (signal, tid) = crate::death::signal_and_tid(&last.reason);
        let tid = tid.unwrap_or(crate::kernel::tid_of_task(last.task));
        let mut body = crate::death::FixedText::<64>::new();
        use core::fmt::Write;
        let _ = write!(body, "T{signal:02x}");
        match last.reason {
            StopReason::SwBreak(_) => {
                let _ = body.write_str("swbreak:;");
            }
            StopReason::HwBreak(_) => {
                let _ = body.write_str("hwbreak:;");
            }
            _ => {}
        }
        let _ = write!(body, "thread:p1.{tid:x};");
        let uart = Com2::new().0;
        if !self.no_ack {
            uart.write_byte(b'+');
        }
        write_packet(&uart, body.as_str().as_bytes());
        true
    }

    /// Reports `reason` to gdb (if it is waiting for a stop) and serves gdb
    /// until it resumes the kernel. `frame` is the stopped context.
    pub fn stop(&mut self, frame: &mut TrapFrame, reason: StopReason) {
        use crate::death::Cause;
        let cause = if core::mem::take(&mut self.attach_stop) {
            Cause::Attach
        } else {
            match reason {
                StopReason::SwBreak(_) | StopReason::HwBreak(_) => Cause::Breakpoint,
                StopReason::Watch { .. } => Cause::Watchpoint,
                StopReason::SignalWithThread { signal, .. } if signal == SIGINT => Cause::Interrupt,
                _ if self.stepping => Cause::Step,
                _ => Cause::Trap,
            }
        };
        self.stop_with_cause(frame, reason, cause);
    }

    /// [`Session::stop`] with the cause `monitor why` reports.
    pub fn stop_with_cause(
        &mut self,
        frame: &mut TrapFrame,
        reason: StopReason,
        cause: crate::death::Cause,
    ) {
        self.attach_stop = false;
        // Every other CPU parks before gdb hears of the stop.
        crate::allstop::stop_others();
        // Nothing of gdb's fires while the stub serves (its own code and
        // data, the UART, the probe core it calls): resume re-arms.
        arch::debugreg::disarm();
        // Any stop ends a pending step (its #DB, a breakpoint or
        // watchpoint on the stepped instruction, a Ctrl-C that arrived
        // before the step completed): gdb sees the code's own TF.
        self.end_pending_step(frame);
        self.report(frame, reason, cause);
        self.serve(frame);
    }

    /// Points the target at `frame` and sends the stop reply to a gdb
    /// waiting for one (events recorded before the stop go first).
    fn report(&mut self, frame: &mut TrapFrame, reason: StopReason, cause: crate::death::Cause) {
        if self.machine.is_none() {
            self.restart();
        }
        // A stop inside a jump-optimized probe's detour shows (and later
        // resumes) the original instruction; no jump is written over the
        // stopped rip while stopped.
        if let Some((orig, set_if)) = probes::CORE.debugger_stop(Some(frame.rip)) {
            frame.rip = orig;
            if set_if {
                frame.rflags |= arch::frame::rflags::IF;
            }
        }
        self.target.set_frame(frame);
        self.target.current_task = self.target.host.task_id();
        self.target.resume = Resume::Continue;
        crate::death::set_last_stop(Some(crate::death::LastStop {
            cause,
            reason,
            task: self.target.current_task,
            rip: frame.rip,
        }));
        // Events recorded before this stop reach the host before the stop
        // reply (the timer tick may not have drained them yet).
        self.stream_events(usize::MAX);
        match self.machine.take() {
            Some(GdbStubStateMachine::Running(r)) => {
                match r.report_stop(&mut self.target, reason) {
                    Ok(m) => self.machine = Some(m),
                    Err(_) => self.restart(),
                }
            }
            other => self.machine = other,
        }
    }

    /// Serves gdb until it resumes the kernel; a step the stub emulates
    /// (see [`crate::step`]) is reported at once and serving goes on.
    fn serve(&mut self, frame: &mut TrapFrame) {
        loop {
            self.serve_once();
            if !self.resume(frame) {
                // A step runs this CPU alone: the others stay parked until
                // a resume that is not a step.
                if !self.stepping {
                    crate::allstop::release();
                }
                return;
            }
            let tid = self.target.current_tid();
            self.report(
                frame,
                StopReason::SignalWithThread {
                    tid,
                    signal: SIGTRAP,
                },
                crate::death::Cause::Step,
            );
        }
    }

    /// The stop loop proper: poll COM2 until gdb resumes or detaches.
    fn serve_once(&mut self) {
        // Nothing else runs on this CPU while it is stopped (the trap
        // gates clear IF already; a handler that re-enabled it must not
        // let the scheduler switch away under the debugger).
        arch::cpu::disable_interrupts();
        let uart = Com2::new().0;
        let entered = arch::cpu::rdtsc();
        let mut last_byte = entered;
        let idle_ticks = idle_timeout_ticks(self.target.host);
        if core::mem::take(&mut self.pending) {
            match self.feed_packet() {
                Fed::Resumed => return,
                Fed::Detached(reason) => {
                    self.detach(reason);
                    return;
                }
                _ => {}
            }
        }
        loop {
            // An interrupt raised while running is answered with SIGINT.
            if let Some(GdbStubStateMachine::CtrlCInterrupt(_)) = &self.machine
                && let Some(GdbStubStateMachine::CtrlCInterrupt(c)) = self.machine.take()
            {
                let tid = self.target.current_tid();
                let reason = StopReason::SignalWithThread {
                    tid,
                    signal: SIGINT,
                };
                match c.interrupt_handled(&mut self.target, Some(reason)) {
                    Ok(m) => self.machine = Some(m),
                    Err(_) => self.restart(),
                }
            }
            let Some(b) = uart.try_read_byte() else {
                let now = arch::cpu::rdtsc();
                if self.tentative && !self.attached && now.wrapping_sub(entered) > TENTATIVE_TICKS {
                    // Noise that looked like a packet start or a Ctrl-C:
                    // no valid packet followed, nobody is there. Forget it
                    // and let the kernel run (noise never parks it).
                    self.framer.reset();
                    self.tentative = false;
                    self.target.resume = Resume::Continue;
                    break;
                }
                if idle_ticks != 0 && self.attached && now.wrapping_sub(last_byte) > idle_ticks {
                    // `kdbg.idle=SECS`: the host said nothing for that long
                    // while the kernel is stopped; take it as gone (as `D`
                    // would: its breakpoints go, probes stay) and resume.
                    self.detach(DisconnectReason::Disconnect);
                    break;
                }
                core::hint::spin_loop();
                continue;
            };
            last_byte = arch::cpu::rdtsc();
            let fed = match self.framer.feed(b) {
                Frame::None | Frame::Nak => Fed::Stay,
                Frame::Ack => self.feed(b"+"),
                Frame::Interrupt => {
                    // Already stopped: a Ctrl-C (or a flood of them) is
                    // absorbed here, one stop total.
                    Fed::Stay
                }
                Frame::BadChecksum | Frame::Oversized => {
                    uart.write_byte(b'-');
                    Fed::Stay
                }
                Frame::Packet => self.feed_packet(),
            };
            match fed {
                Fed::Stay | Fed::Interrupted | Fed::Failed => {}
                Fed::Resumed => break,
                Fed::Detached(reason) => {
                    self.detach(reason);
                    break;
                }
            }
        }
    }

    /// Applies gdb's resume action to the frame and the debug registers.
    /// `true`: a step was emulated in the frame (the kernel does not run;
    /// the caller reports the stop).
    fn resume(&mut self, frame: &mut TrapFrame) -> bool {
        use arch::frame::rflags::{IF, RF, TF};
        self.stepping = self.target.resume == Resume::Step;
        self.step_watch = 0;
        // A step through a jump-optimized probe's region runs the original
        // instructions (the point is an int3 again until a plain resume).
        probes::CORE.debugger_resume(frame.rip, self.stepping);
        if self.stepping {
            let mut bytes = [0u8; 16];
            let n = read_text(frame.rip, &mut bytes);
            let plan = crate::step::plan(frame, bytes.get(..n).unwrap_or(&[]), |a, v| {
                arch::debugreg::masked(|| arch::mem::write(a, &v.to_le_bytes())).is_ok()
            });
            match plan {
                crate::step::Plan::Emulated => {
                    self.stepping = false;
                    return true;
                }
                crate::step::Plan::Step { mask_if } => {
                    self.step_task = self.target.current_task;
                    // Remember the code's own TF and IF; the step's stop
                    // restores them.
                    self.step_saved_tf = frame.rflags & TF;
                    self.step_masked_if = mask_if && frame.rflags & IF != 0;
                    self.step_watch = crate::step::watch_hits(
                        frame,
                        bytes.get(..n).unwrap_or(&[]),
                        &self.target.hw.slots,
                    );
                    if self.step_masked_if {
                        frame.rflags &= !IF;
                    }
                    frame.rflags |= TF;
                }
            }
        }
        // Resume over an instruction breakpoint at rip without re-hitting it.
        frame.rflags |= RF;
        if self.stepping && self.step_watch != 0 {
            // SAFETY: as in `load_debug_registers`, with fewer slots armed.
            unsafe { self.target.hw.slots.load_except(self.step_watch) };
        } else {
            self.load_debug_registers();
        }
        arch::debugreg::clear_dr6();
        self.target.set_frame(core::ptr::null_mut());
        crate::death::set_last_stop(None);
        false
    }

    /// Writes gdb's hardware breakpoints/watchpoints into the CPU's debug
    /// registers. They are CPU-global (no task switch saves or restores
    /// them), so this runs whenever gdb changes them: on every resume and
    /// after every packet served while the kernel runs (a `Z1`-`Z4` sent
    /// without stopping the kernel takes effect at once).
    pub fn load_debug_registers(&self) {
        // SAFETY: the slots hold only what gdb asked for; the #DB path is
        // the stub's own and refuses re-entry (SESSION is locked).
        unsafe { self.target.hw.slots.load() };
    }

    /// The single step ended with `frame`: takes the stub's TF out of the
    /// frame (the stepped code's own TF, normally clear, is put back), so
    /// gdb's `eflags` shows the code's flags, not the stub's.
    pub fn end_step(&mut self, frame: &mut TrapFrame) {
        use arch::frame::rflags::{IF, TF};
        frame.rflags = (frame.rflags & !TF) | (self.step_saved_tf & TF);
        if core::mem::take(&mut self.step_masked_if) {
            frame.rflags |= IF;
        }
        self.stepping = false;
    }

    /// Ends a step that is still armed when the kernel stops for any
    /// reason. The step's TF is in `frame` when the stop is in the stepped
    /// task (an interrupt taken before the stepped instruction ran); if the
    /// stop is in another task (the stepped one was switched out), its TF
    /// fires later and [`Session::step_is_current`] says it is a leftover.
    fn end_pending_step(&mut self, frame: &mut TrapFrame) {
        if !self.stepping {
            return;
        }
        if self.target.host.task_id() == self.step_task {
            self.end_step(frame);
        } else {
            self.stepping = false;
            self.step_masked_if = false;
        }
    }

    /// A single-step #DB in the current task is the pending step's (not a
    /// leftover of a step a stop already ended).
    pub fn step_is_current(&self) -> bool {
        self.stepping && self.target.host.task_id() == self.step_task
    }

    /// The watch slot the ended step's instruction set off (the lowest, as
    /// DR6 would name it), taken: the stop reports it instead of the step.
    pub fn take_step_watch(&mut self) -> Option<usize> {
        let w = core::mem::take(&mut self.step_watch);
        (w != 0).then(|| w.trailing_zeros() as usize)
    }

    /// The last resume was a step (a #DB with BS is ours).
    pub fn stepping(&self) -> bool {
        self.stepping
    }

    /// Bytes that arrived while the kernel runs (COM2 interrupt). Returns
    /// the stop reason when they ask to stop the kernel.
    pub fn receive_running(&mut self, b: u8) -> Option<StopReason> {
        if self.machine.is_none() {
            self.restart();
        }
        let running = self.running();
        match self.framer.feed(b) {
            Frame::Interrupt => {
                if running {
                    // Let gdbstub see the 0x03 and move to CtrlCInterrupt;
                    // the stop loop answers it.
                    self.feed(&[0x03]);
                    None
                } else {
                    // Nobody attached (or the host is gone): the stop is
                    // tentative, like a packet start's, so a noise byte
                    // that looks like a Ctrl-C never parks the kernel:
                    // without a valid packet soon after, it resumes.
                    self.tentative = !self.attached;
                    Some(StopReason::SignalWithThread {
                        tid: self.target.current_tid(),
                        signal: SIGINT,
                    })
                }
            }
            Frame::Packet if running && !self.framer.packet().starts_with(b"$qSupported") => {
                match self.feed_packet() {
                    Fed::Detached(reason) => {
                        self.detach(reason);
                        None
                    }
                    _ => {
                        // A `Z1`-`Z4`/`z1`-`z4` served while the kernel
                        // runs: the debug registers follow at once (the
                        // int3 of a `Z0` is already in the text).
                        self.load_debug_registers();
                        None
                    }
                }
            }
            Frame::Packet => {
                // Not attached (or a new gdb): the stop loop answers it. A
                // new gdb's `qSupported` ends the old session first, so the
                // stop is not reported to a host that is gone.
                if self.framer.packet().starts_with(b"$qSupported") && self.attached {
                    self.target.clear_breakpoints();
                    self.restart();
                }
                self.pending = true;
                self.attach_stop = true;
                Some(StopReason::SignalWithThread {
                    tid: self.target.current_tid(),
                    signal: SIGINT,
                })
            }
            Frame::BadChecksum | Frame::Oversized => {
                Com2::new().0.write_byte(b'-');
                None
            }
            Frame::None if !running && self.framer.busy() => {
                // A packet starts while nobody is attached: stop the kernel
                // so the stop loop can answer the handshake (or give up if
                // it was noise, see `tentative`).
                self.tentative = !self.attached;
                self.attach_stop = true;
                Some(StopReason::SignalWithThread {
                    tid: self.target.current_tid(),
                    signal: SIGINT,
                })
            }
            _ => None,
        }
    }

    /// gdbstub moved to CtrlCInterrupt (a Ctrl-C while running).
    pub fn interrupted(&self) -> bool {
        matches!(self.machine, Some(GdbStubStateMachine::CtrlCInterrupt(_)))
    }

    /// Stops with `frame` for a Ctrl-C that gdbstub already saw: the stop
    /// loop reports it.
    pub fn stop_interrupted(&mut self, frame: &mut TrapFrame) {
        crate::allstop::stop_others();
        arch::debugreg::disarm();
        self.end_pending_step(frame);
        self.stream_events_unchecked(usize::MAX);
        // A stop inside a jump-optimized probe's detour shows (and later
        // resumes) the original instruction; no jump is written over the
        // stopped rip while stopped.
        if let Some((orig, set_if)) = probes::CORE.debugger_stop(Some(frame.rip)) {
            frame.rip = orig;
            if set_if {
                frame.rflags |= arch::frame::rflags::IF;
            }
        }
        self.target.set_frame(frame);
        self.target.current_task = self.target.host.task_id();
        self.target.resume = Resume::Continue;
        crate::death::set_last_stop(Some(crate::death::LastStop {
            cause: crate::death::Cause::Interrupt,
            reason: StopReason::SignalWithThread {
                tid: self.target.current_tid(),
                signal: SIGINT,
            },
            task: self.target.current_task,
            rip: frame.rip,
        }));
        self.serve(frame);
    }

    /// Sends at most `max` pending probe events while gdb waits for the
    /// kernel to stop (the timer tick passes its budget, a stop passes
    /// `usize::MAX`: every event before the stop reply).
    pub fn stream_events(&mut self, max: usize) -> usize {
        if !self.running() {
            return 0;
        }
        self.stream_events_unchecked(max)
    }

    /// Streams events whatever the machine's state (gdb is known to be
    /// waiting for a stop reply, e.g. right after its Ctrl-C).
    fn stream_events_unchecked(&mut self, max: usize) -> usize {
        if self.target.monitor.stream == proto::command::StreamMode::Off {
            return 0;
        }
        let uart = Com2::new().0;
        crate::events::drain(self.target.monitor.stream, max, &mut |line| {
            let mut w = ConsoleWriter::begin(uart);
            let _ = line.write_to(&mut w);
            w.finish();
        })
    }

    /// Flushes the connection (gdbstub API symmetry; COM2 writes are polled).
    pub fn flush(&mut self) {
        let _ = Com2::new().flush();
    }
}

/// Reads the instruction bytes at `rip` as the CPU fetches them (up to the
/// end of the mapped text); returns how many were read.
fn read_text(rip: u64, buf: &mut [u8; 16]) -> usize {
    if arch::mem::read(rip, buf).is_ok() {
        return buf.len();
    }
    let in_page = ((0x1000 - (rip & 0xFFF)) as usize).min(buf.len());
    let Some(head) = buf.get_mut(..in_page) else {
        return 0;
    };
    if arch::mem::read(rip, head).is_ok() {
        in_page
    } else {
        0
    }
}

enum Fed {
    Stay,
    Resumed,
    Interrupted,
    Detached(DisconnectReason),
    /// gdbstub refused the input and consumed the machine.
    Failed,
}

/// Feeds `bytes` to the machine one by one and says where it ended up.
fn feed_machine(machine: &mut Option<Machine>, target: &mut KdbgTarget, bytes: &[u8]) -> Fed {
    let mut result = Fed::Stay;
    for &b in bytes {
        let Some(m) = machine.take() else {
            return Fed::Failed;
        };
        let next = match m {
            GdbStubStateMachine::Idle(i) => i.incoming_data(target, b),
            GdbStubStateMachine::Running(r) => r.incoming_data(target, b),
            GdbStubStateMachine::CtrlCInterrupt(c) => {
                c.interrupt_handled(target, None::<StopReason>)
            }
            GdbStubStateMachine::Disconnected(d) => {
                let reason = d.get_reason();
                *machine = Some(GdbStubStateMachine::Disconnected(d));
                return Fed::Detached(reason);
            }
        };
        let Ok(next) = next else {
            return Fed::Failed;
        };
        result = match &next {
            GdbStubStateMachine::Running(_) => Fed::Resumed,
            GdbStubStateMachine::Disconnected(d) => Fed::Detached(d.get_reason()),
            GdbStubStateMachine::CtrlCInterrupt(_) => Fed::Interrupted,
            GdbStubStateMachine::Idle(_) => Fed::Stay,
        };
        *machine = Some(next);
    }
    result
}
