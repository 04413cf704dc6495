//! kdbg's commands as gdb `monitor` commands (`qRcmd`): parse with
//! [`proto::command`], answer with [`proto::reply`] rows.

use core::fmt::{self, Write};

use proto::command::{COMMANDS, Command, Loc, StreamMode};
use proto::reply::{ErrorCode, ErrorRow, EventsRow, ProbeMemoryRow, StreamRow, SymRow, TaskRow};

use crate::probecmd;
use probes::Host;

/// What monitor commands may change in the stub.
pub struct MonitorState {
    pub stream: StreamMode,
}

/// Runs one command line and writes the reply rows to `out`.
pub fn run(
    text: &str,
    host: &dyn Host,
    state: &mut MonitorState,
    out: &mut dyn Write,
) -> fmt::Result {
    let cmd = match proto::command::parse(text) {
        Ok(c) => c,
        Err(e) => {
            return error(out, e.code(), &e);
        }
    };
    match cmd {
        Command::Help { topic } => help(topic, out),
        Command::Tasks => {
            let mut res = Ok(());
            let current = host.task_id();
            host.for_each_task(&mut |t| {
                if res.is_ok() {
                    let row = TaskRow {
                        id: t.id,
                        name: t.name,
                        state: t.state,
                        current: t.id == current,
                        cpu: t.cpu.and_then(|c| u32::try_from(c).ok()),
                    };
                    res = writeln!(out, "{row}");
                }
            });
            res
        }
        Command::Events => {
            let s = crate::events::stats();
            let (tsc_hz, boot_tsc, tsc_src) = crate::clock::tsc(host);
            let row = EventsRow {
                size: s.size,
                produced: s.produced,
                delivered: s.delivered,
                dropped: s.dropped,
                stream: state.stream,
                tsc_hz,
                boot_tsc,
                tsc_src,
            };
            writeln!(out, "{row}")?;
            // The kretprobe instance pools' share of the heap and its cap.
            let (used, budget) = probes::kretprobe_memory();
            let row = ProbeMemoryRow {
                used: used as u64,
                budget: budget as u64,
            };
            writeln!(out, "{row}")?;
            crate::events::for_each_drop(&mut |row| {
                let _ = writeln!(out, "{row}");
            });
            Ok(())
        }
        Command::Stream(mode) => {
            state.stream = mode;
            writeln!(out, "{}", StreamRow { stream: mode })
        }
        Command::Lookup(loc) => lookup(loc, host, out),
        Command::Why => crate::death::why(out),
        Command::Pages { addr, len } => crate::death::pages(addr, len, out),
        Command::Refused => crate::protect::report(out),
        Command::Kprobe { loc, pred, agg } => probecmd::kprobe(loc, pred, agg, out),
        Command::Jprobe {
            func,
            capture,
            pred,
            agg,
        } => probecmd::jprobe(func, capture, pred, agg, out),
        Command::Kretprobe {
            func,
            maxactive,
            capture,
            pred,
            agg,
        } => probecmd::kretprobe(func, maxactive, capture, pred, agg, out),
        Command::Probes => probecmd::list(out),
        Command::Maps => crate::mapcmd::maps(out),
        Command::Map { action, id } => crate::mapcmd::map(action, id, out),
        Command::Probe { action, ids } => probecmd::probe(action, ids.as_slice(), out),
        Command::RetInst { task } => probecmd::retinst(task, out),
        Command::Cond { addr, prog, ignore } => crate::conditions::cond(addr, prog, ignore, out),
        Command::Conds => crate::conditions::conds(out),
        Command::Shm(action) => crate::shm::command(action, host, out),
    }
}

/// Writes an `error` row.
pub fn error(out: &mut dyn Write, code: ErrorCode, msg: &dyn fmt::Display) -> fmt::Result {
    ErrorRow::write(out, code, msg)?;
    writeln!(out)
}

fn help(topic: Option<&str>, out: &mut dyn Write) -> fmt::Result {
    if let Some(t) = topic {
        return match COMMANDS.iter().find(|c| c.name == t) {
            Some(c) => writeln!(out, "  {}\n      {}", c.usage, c.summary),
            None => error(
                out,
                ErrorCode::UnknownCommand,
                &"no such command: `monitor help` lists them",
            ),
        };
    }
    writeln!(out, "  kdbg monitor commands:")?;
    for c in COMMANDS {
        writeln!(out, "  {:<52} {}", c.usage, c.summary)?;
    }
    Ok(())
}

fn lookup(loc: Loc<'_>, host: &dyn Host, out: &mut dyn Write) -> fmt::Result {
    let addr = match resolve(loc, host) {
        Ok(a) => a,
        Err(UnknownSymbol) => {
            return error(
                out,
                ErrorCode::UnknownSymbol,
                &"no kernel symbol by that name: check the spelling",
            );
        }
    };
    let sym = host.symbol_at(addr);
    let row = SymRow {
        addr,
        sym: sym.as_ref().map(|s| (s.name, addr - s.start)),
    };
    writeln!(out, "{row}")
}

/// kallsyms has no symbol by that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownSymbol;

/// A location's address through kallsyms.
pub fn resolve(loc: Loc<'_>, host: &dyn Host) -> Result<u64, UnknownSymbol> {
    match loc {
        Loc::Addr(a) => Ok(a),
        Loc::Symbol(name, offset) => host
            .symbol_named(name)
            .map(|s| s.start.wrapping_add(offset))
            .ok_or(UnknownSymbol),
    }
}

/// Accumulates console output and hands it on in whole lines (one gdb `O`
/// packet per line instead of one per `write!` fragment).
pub struct LineBuf<'a> {
    buf: [u8; 512],
    len: usize,
    sink: &'a mut dyn FnMut(&[u8]),
}

impl<'a> LineBuf<'a> {
    pub fn new(sink: &'a mut dyn FnMut(&[u8])) -> Self {
        LineBuf {
            buf: [0; 512],
            len: 0,
            sink,
        }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(self.buf.get(..self.len).unwrap_or(&[]));
            self.len = 0;
        }
    }
}

impl Write for LineBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len >= self.buf.len() {
                self.flush();
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

impl Drop for LineBuf<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
