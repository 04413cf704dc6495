//! Probe monitor commands (`kprobe`, `jprobe`, `kretprobe`, `probes`,
//! `probe ...`, `retinst`), backed by the probe core's monitor API
//! (`probes::commands`). Refusals become `error code=... msg=...` rows with
//! the probe core's own message (it says what to do instead).

use core::fmt::{self, Write};

use probes::{ProbeError, ProbeId};
use proto::agg::AggSpec;
use proto::bytecode::Program;
use proto::command::{Loc, ProbeAction};
use proto::fetch::CaptureSpec;
use proto::reply::{ErrorCode, ExecPath, InstRow, OkIdRow, OkRow, ProbeRow, ProbeType};

use crate::monitor::error;

/// The stable code of a probe-core refusal.
pub fn code_of(e: ProbeError) -> ErrorCode {
    match e {
        ProbeError::NotInitialised => ErrorCode::Unavailable,
        ProbeError::UnknownSymbol => ErrorCode::UnknownSymbol,
        ProbeError::NotText | ProbeError::NoFunction | ProbeError::PastEnd => {
            ErrorCode::OutsideText
        }
        ProbeError::Blacklisted => ErrorCode::Blacklisted,
        ProbeError::NotBoundary => ErrorCode::NotBoundary,
        ProbeError::Refused(_) | ProbeError::FarReturn => ErrorCode::Unsupported,
        ProbeError::NotFunctionEntry => ErrorCode::NotFunctionEntry,
        ProbeError::JprobeExists => ErrorCode::AlreadyProbed,
        ProbeError::Unreadable => ErrorCode::Fault,
        ProbeError::NoSlot | ProbeError::TableFull => ErrorCode::TooManyProbes,
        ProbeError::NoSuchProbe => ErrorCode::NoSuchProbe,
        ProbeError::TooManyInstances | ProbeError::DataTooLarge => ErrorCode::BadArguments,
        ProbeError::NoMemory | ProbeError::MapMemory => ErrorCode::NoMemory,
        ProbeError::MapBudget | ProbeError::MapSpec => ErrorCode::BadArguments,
        ProbeError::NoMap => ErrorCode::NoSuchProbe,
        ProbeError::InHandler | ProbeError::Busy => ErrorCode::Busy,
    }
}

fn created(out: &mut dyn Write, r: Result<ProbeId, ProbeError>) -> fmt::Result {
    match r {
        Ok(id) => writeln!(out, "{}", OkIdRow { id: id.0 }),
        Err(e) => error(out, code_of(e), &e),
    }
}

/// `kprobe LOC [if=HEX] [AGG]`.
pub fn kprobe(
    loc: Loc<'_>,
    pred: Option<Program>,
    agg: Option<AggSpec>,
    out: &mut dyn Write,
) -> fmt::Result {
    created(out, probes::commands::kprobe_agg(loc, pred, agg))
}

/// `jprobe FUNC [CAPTURE] [if=HEX] [AGG]`.
pub fn jprobe(
    func: Loc<'_>,
    capture: CaptureSpec,
    pred: Option<Program>,
    agg: Option<AggSpec>,
    out: &mut dyn Write,
) -> fmt::Result {
    created(out, probes::commands::jprobe_agg(func, capture, pred, agg))
}

/// `kretprobe FUNC [maxactive=N] [CAPTURE] [if=HEX] [AGG]`.
pub fn kretprobe(
    func: Loc<'_>,
    maxactive: Option<u32>,
    capture: CaptureSpec,
    pred: Option<Program>,
    agg: Option<AggSpec>,
    out: &mut dyn Write,
) -> fmt::Result {
    created(
        out,
        probes::commands::kretprobe_agg(func, maxactive, capture, pred, agg),
    )
}

/// `probes`: one row per probe.
pub fn list(out: &mut dyn Write) -> fmt::Result {
    let mut res = Ok(());
    let listed = probes::commands::list(&mut |p| {
        if res.is_err() {
            return;
        }
        let row = ProbeRow {
            id: p.id.0,
            kind: match p.kind {
                probes::ProbeKind::Kprobe => ProbeType::Kprobe,
                probes::ProbeKind::Jprobe => ProbeType::Jprobe,
                probes::ProbeKind::Kretprobe => ProbeType::Kretprobe,
            },
            addr: p.addr,
            sym: if p.sym.is_empty() { "-" } else { p.sym },
            sym_offset: p.sym_offset,
            enabled: p.enabled,
            hits: p.hits,
            nmissed: p.nmissed,
            path: match p.path {
                probes::ExecPath::Emulated => ExecPath::Emulated,
                probes::ExecPath::OutOfLine => ExecPath::OutOfLine,
                probes::ExecPath::Boosted => ExecPath::Boosted,
                probes::ExecPath::Optimized => ExecPath::Optimized,
            },
            not_optimized: p.not_optimized,
            maxactive: p.maxactive,
            filtered: p.filtered,
            faults: p.pred_faults,
            capture: p.capture,
        };
        res = writeln!(out, "{row}");
    });
    match listed {
        Ok(()) => res,
        Err(e) => error(out, code_of(e), &e),
    }
}

/// `probe enable|disable|delete ID...`: one row per id.
pub fn probe(action: ProbeAction, ids: &[u32], out: &mut dyn Write) -> fmt::Result {
    for &id in ids {
        let r = match action {
            ProbeAction::Enable => probes::enable(ProbeId(id)),
            ProbeAction::Disable => probes::disable(ProbeId(id)),
            ProbeAction::Delete => probes::unregister(ProbeId(id)),
        };
        match r {
            Ok(()) => writeln!(out, "{}", OkIdRow { id })?,
            Err(e) => error(out, code_of(e), &e)?,
        }
    }
    Ok(())
}

/// `retinst [TASK]`: live kretprobe instances.
pub fn retinst(task: Option<u32>, out: &mut dyn Write) -> fmt::Result {
    let mut res = Ok(());
    let mut one = |t: u32| {
        probes::commands::instances(t, &mut |func, sp, ret| {
            if res.is_ok() {
                res = writeln!(
                    out,
                    "{}",
                    InstRow {
                        task: t,
                        func,
                        sp,
                        ret
                    }
                );
            }
        });
    };
    match task {
        Some(t) => one(t),
        None => {
            let mut tasks = [0u32; 64];
            let mut n = 0;
            probes::commands::tasks(&mut |t| {
                if let Some(slot) = tasks.get_mut(n) {
                    *slot = t;
                    n += 1;
                }
            });
            for &t in tasks.iter().take(n) {
                one(t);
            }
        }
    }
    res?;
    writeln!(out, "{OkRow}")
}
