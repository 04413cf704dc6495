//! Command handlers: each returns data ([`Output`]); the caller renders.
//! Which handler runs which command is the `run` field of its row in
//! [`crate::cmd::table::COMMANDS`]; [`run`] only checks what every command
//! needs (a connection, a stopped kernel) and calls it.

pub mod code;
pub mod conditions;
pub mod eventcmds;
pub mod info;
pub mod inspect;
pub mod linux;
pub mod locate;
pub mod maps;
pub mod memory;
pub mod postmortem;
pub mod probes;
pub mod record;
pub mod run;
pub mod sessioncmds;
pub mod stack;
pub mod state;
pub mod stepping;

use anyhow::{Result, bail};

use crate::cmd::Invocation;
use crate::output::Output;
use crate::session::Session;

pub use sessioncmds::help;

/// Run one parsed command: the row's preconditions, then its handler.
pub fn run(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let c = inv.cmd;
    if c.needs_target && !s.connected() {
        if s.endpoint.is_some() {
            bail!("not connected to the stub (the connection was lost): use `reconnect`");
        }
        bail!("not connected to a stub: start kdbg with --connect tcp:HOST:PORT or --kernel ELF");
    }
    crate::coredump::refuse_live_only(c.name)?;
    s.wait_stops_shown();
    s.sync_stops();
    if c.requires_halted && s.running() {
        bail!(
            "`{}` needs the kernel stopped: use `interrupt` (or Ctrl-C) first",
            c.name
        );
    }
    (c.run)(s, inv)
}
