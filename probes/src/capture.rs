//! Capture probes: turning a hit into an event record in the ring.
//!
//! Everything here runs on the hit path: the event is built on the stack,
//! every memory read goes through the platform's fault-safe read (a bad
//! address becomes a fault marker), and the encoded record is pushed into
//! this CPU's ring (full: the probe's drop counter grows).

use core::sync::atomic::Ordering;

use arch::TrapFrame;
use proto::event::MAX_RECORD;
use proto::{Base, CaptureSpec, Event, EventKind, FetchKind, FetchResult, Record, Reg};

use crate::platform::Platform;
use crate::probe::Probe;
use crate::ring::CpuRing;

/// Where the event's fields come from.
pub(crate) struct Hit<'a> {
    pub probe: &'a Probe,
    pub kind: EventKind,
    pub cpu: usize,
    pub task: u32,
    pub tsc: u64,
    pub ip: u64,
    /// The argument registers (at entry; stashed ones for returns).
    pub args: [u64; 6],
    pub ret: Option<u64>,
    pub duration: Option<u64>,
}

fn reg_value(frame: &TrapFrame, r: Reg) -> u64 {
    match r {
        Reg::Rax => frame.rax,
        Reg::Rbx => frame.rbx,
        Reg::Rcx => frame.rcx,
        Reg::Rdx => frame.rdx,
        Reg::Rsi => frame.rsi,
        Reg::Rdi => frame.rdi,
        Reg::Rbp => frame.rbp,
        Reg::Rsp => frame.rsp,
        Reg::R8 => frame.r8,
        Reg::R9 => frame.r9,
        Reg::R10 => frame.r10,
        Reg::R11 => frame.r11,
        Reg::R12 => frame.r12,
        Reg::R13 => frame.r13,
        Reg::R14 => frame.r14,
        Reg::R15 => frame.r15,
        Reg::Rip => frame.rip,
    }
}

/// Runs the fetch program and the stack copy into `ev`.
pub(crate) fn fetch(
    pf: &Platform,
    spec: &CaptureSpec,
    frame: &TrapFrame,
    args: &[u64; 6],
    stack_at: u64,
    ev: &mut Event,
) {
    for op in spec.program.ops() {
        let base = match op.base {
            Base::Reg(r) => Some(reg_value(frame, r)),
            Base::Arg(i) => args.get(usize::from(i)).copied(),
            Base::Result(j) => ev
                .results()
                .get(usize::from(j))
                .and_then(|r| r.base_value()),
        };
        let Some(base) = base else {
            let _ = ev.push_result(FetchResult::Fault { addr: 0 });
            continue;
        };
        let addr = base.wrapping_add_signed(op.offset);
        match op.kind {
            FetchKind::Str(limit) => {
                let mut buf = [0u8; proto::fetch::MAX_STRING];
                let limit = usize::from(limit).min(buf.len());
                let mut n = 0;
                let mut ok = true;
                let mut ended = false;
                while n < limit {
                    let Some(b) = buf.get_mut(n..n + 1) else {
                        break;
                    };
                    if !(pf.read)(addr.wrapping_add(n as u64), b) {
                        ok = false;
                        break;
                    }
                    if b.first() == Some(&0) {
                        ended = true;
                        break;
                    }
                    n += 1;
                }
                if !ok && n == 0 {
                    let _ = ev.push_result(FetchResult::Fault { addr });
                } else {
                    if !ended {
                        ev.truncated = true;
                    }
                    let _ = ev.push_string(addr, buf.get(..n).unwrap_or(&[]));
                }
            }
            kind => {
                let size = kind.size();
                let mut b = [0u8; 8];
                let ok = b.get_mut(..size).is_some_and(|dst| (pf.read)(addr, dst));
                let r = if ok {
                    FetchResult::Value(u64::from_le_bytes(b))
                } else {
                    FetchResult::Fault { addr }
                };
                let _ = ev.push_result(r);
            }
        }
    }
    let n = usize::from(spec.stack_bytes).min(proto::fetch::MAX_STACK);
    if n > 0 {
        let mut buf = [0u8; proto::fetch::MAX_STACK];
        if let Some(dst) = buf.get_mut(..n)
            && (pf.read)(stack_at, dst)
        {
            ev.set_stack(dst);
        }
    }
}

/// Builds the event of a hit, runs its capture, and pushes it into `ring`.
pub(crate) fn record(
    pf: &Platform,
    ring: &CpuRing,
    hit: &Hit<'_>,
    spec: &CaptureSpec,
    frame: &TrapFrame,
    stack_at: u64,
) {
    let mut ev = Event::new(hit.probe.id.0, hit.kind);
    ev.cpu = u8::try_from(hit.cpu).unwrap_or(u8::MAX);
    ev.task = hit.task;
    ev.tsc = hit.tsc;
    ev.ip = hit.ip;
    ev.args = hit.args;
    ev.ret = hit.ret;
    ev.duration = hit.duration;
    fetch(pf, spec, frame, &hit.args, stack_at, &mut ev);
    let mut buf = [0u8; MAX_RECORD];
    let pushed = match Record::Event(ev).encode(&mut buf) {
        Ok(n) => ring.push(&[buf.get(..n).unwrap_or(&[])]),
        Err(_) => false,
    };
    if !pushed {
        hit.probe.dropped.fetch_add(1, Ordering::Relaxed);
    }
}
