//! Helpers the probe suites share (kprobe, kretprobe, rethook, jprobe,
//! capture, maps, optprobe): a check with a fixed reason, and
//! (un)registration whose refusal becomes the case's failure.

use probes::{At, Kretprobe, ProbeId};

/// `Err(msg)` unless `ok`.
pub fn check(ok: bool, msg: &'static str) -> Result<(), &'static str> {
    if ok { Ok(()) } else { Err(msg) }
}

/// Unregisters probe `id`.
pub fn unreg(id: ProbeId) -> Result<(), &'static str> {
    probes::unregister(id).map_err(|_| "unregister failed")
}

/// Registers a kretprobe at a function entry.
pub fn reg_kretprobe(at: At<'_>, rp: Kretprobe) -> Result<ProbeId, &'static str> {
    probes::register_kretprobe(at, rp).map_err(|_| "register_kretprobe refused a function entry")
}

/// The kallsyms name of the function holding `addr` (`?` outside every one).
pub fn function_of(addr: u64) -> &'static str {
    crate::kallsyms::lookup(addr).map_or("?", |s| s.name)
}
