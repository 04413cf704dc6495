//! Probe monitor commands (`kprobe`, `jprobe`, `kretprobe`, `probes`,
//! `probe ...`, `retinst`), backed by the probe core.

use core::fmt::{self, Write};

use proto::command::Command;
use proto::reply::ErrorCode;

use crate::kernel::KernelOps;
use crate::monitor::error;

/// Runs a probe command.
pub fn run(_cmd: &Command<'_>, _ops: &KernelOps, out: &mut dyn Write) -> fmt::Result {
    error(
        out,
        ErrorCode::Unavailable,
        &"the probe core is not available in this kernel yet: only help, tasks, events, stream, lookup work",
    )
}
