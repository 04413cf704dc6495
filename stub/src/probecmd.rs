//! Probe monitor commands (`kprobe`, `jprobe`, `kretprobe`, `probes`,
//! `probe ...`, `retinst`), backed by the probe core's monitor API
//! (`probes::monitor`). Refusals become `error code=... msg=...` rows with
//! the probe core's own message (it says what to do instead).

use core::fmt::{self, Write};

use probes::{At, ProbeError, ProbeId};
use proto::command::{Command, Loc, ProbeAction};
use proto::reply::{ErrorCode, ExecPath, InstRow, ProbeRow, ProbeType};

use crate::kernel::KernelOps;
use crate::monitor::error;

fn at(loc: Loc<'_>) -> At<'_> {
    match loc {
        Loc::Addr(a) => At::Addr(a),
        Loc::Sym { name, offset } => At::Symbol(name, offset),
    }
}

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
        ProbeError::Refused(_) => ErrorCode::Unsupported,
        ProbeError::NotFunctionEntry => ErrorCode::NotFunctionEntry,
        ProbeError::JprobeExists => ErrorCode::AlreadyProbed,
        ProbeError::Unreadable => ErrorCode::Fault,
        ProbeError::NoSlot | ProbeError::TableFull => ErrorCode::TooManyProbes,
        ProbeError::NoSuchProbe => ErrorCode::NoSuchProbe,
        ProbeError::TooManyInstances | ProbeError::DataTooLarge => ErrorCode::BadArguments,
        _ => ErrorCode::Other,
    }
}

fn created(out: &mut dyn Write, r: Result<ProbeId, ProbeError>) -> fmt::Result {
    match r {
        Ok(id) => writeln!(out, "ok id={}", id.0),
        Err(e) => error(out, code_of(e), &e),
    }
}

/// Runs a probe command.
pub fn run(cmd: &Command<'_>, _ops: &KernelOps, out: &mut dyn Write) -> fmt::Result {
    match *cmd {
        Command::Kprobe { loc } => created(out, probes::monitor::kprobe(at(loc))),
        Command::Jprobe { func, capture } => {
            created(out, probes::monitor::jprobe(at(func), capture))
        }
        Command::Kretprobe {
            func,
            maxactive,
            capture,
        } => created(
            out,
            probes::monitor::kretprobe(at(func), maxactive, capture),
        ),
        Command::Probes => {
            let mut res = Ok(());
            let listed = probes::monitor::list(&mut |p| {
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
                    },
                    maxactive: p.maxactive,
                };
                res = writeln!(out, "{row}");
            });
            match listed {
                Ok(()) => res,
                Err(e) => error(out, code_of(e), &e),
            }
        }
        Command::Probe { action, ids } => {
            for &id in ids.as_slice() {
                let r = match action {
                    ProbeAction::Enable => probes::enable(ProbeId(id)),
                    ProbeAction::Disable => probes::disable(ProbeId(id)),
                    ProbeAction::Delete => probes::unregister(ProbeId(id)),
                };
                match r {
                    Ok(()) => writeln!(out, "ok id={id}")?,
                    Err(e) => error(out, code_of(e), &e)?,
                }
            }
            Ok(())
        }
        Command::RetInst { task } => {
            let mut res = Ok(());
            let mut one = |t: u32| {
                probes::monitor::instances(t, &mut |func, sp, ret| {
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
                    probes::monitor::tasks(&mut |t| {
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
            writeln!(out, "ok")
        }
        _ => Ok(()),
    }
}
