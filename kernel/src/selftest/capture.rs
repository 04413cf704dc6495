//! Selftest suite `capture`: the probes the shell sets (`monitor jprobe`,
//! `monitor kretprobe`): argument registers, fetch programs with fault-safe
//! reads, return values, and the bounded event ring with exact drop counts.

use proto::{CaptureSpec, Event, EventKind, FetchResult, Record};

use probes::{At, ProbeId, commands};

use super::probe_util::{check, unreg};
use crate::workloads;

crate::probe_suite!(
    "capture",
    sys_open_path_strings,
    bad_pointer_is_a_fault_marker,
    return_values_and_durations,
    sum8_stack_arguments,
    flood_counts_drops_exactly,
);

/// Drains the ring, calling `f` for each event of probe `id`.
fn events_of(id: ProbeId, f: &mut dyn FnMut(&Event)) -> usize {
    let mut n = 0;
    commands::drain(&mut |rec| {
        if let Ok(Record::Event(ev)) = Record::decode(rec)
            && ev.probe_id == id.0
        {
            f(&ev);
            n += 1;
        }
    });
    n
}

fn sys_open_path_strings() -> Result<(), &'static str> {
    commands::drain(&mut |_| {});
    let spec = CaptureSpec::parse("fetch=str64@arg0").map_err(|_| "capture spec refused")?;
    let id = commands::jprobe(At::Symbol("sys_open", 0), spec)
        .map_err(|_| "capture refused sys_open")?;
    for path in workloads::OPEN_PATHS {
        let _ = workloads::call_sys_open(path, 0, 0);
    }
    let mut i = 0;
    let mut ok = true;
    let n = events_of(id, &mut |ev| {
        let want = workloads::OPEN_PATHS
            .get(i)
            .map_or("", |p| p.trim_end_matches('\0'));
        let got = ev.results().first().map_or(&[][..], |r| ev.string_bytes(r));
        ok &= ev.kind == EventKind::JprobeEntry && got == want.as_bytes();
        i += 1;
    });
    unreg(id)?;
    check(n == workloads::OPEN_PATHS.len(), "not one event per call")?;
    check(ok, "a captured path differs from the ground truth")
}

fn bad_pointer_is_a_fault_marker() -> Result<(), &'static str> {
    commands::drain(&mut |_| {});
    let spec =
        CaptureSpec::parse("fetch=str32@arg0,u64@arg0+8").map_err(|_| "capture spec refused")?;
    let id = commands::jprobe(At::Symbol("sys_open", 0), spec)
        .map_err(|_| "capture refused sys_open")?;
    // SAFETY: sys_open checks for a null path itself.
    let ret = unsafe { workloads::sys_open(core::ptr::null(), 0, 0) };
    let mut faults = 0;
    let n = events_of(id, &mut |ev| {
        for r in ev.results() {
            if matches!(r, FetchResult::Fault { .. }) {
                faults += 1;
            }
        }
    });
    unreg(id)?;
    check(
        ret == -workloads::EFAULT,
        "sys_open(NULL) did not fail with EFAULT",
    )?;
    check(n == 1, "no event for the call")?;
    check(
        faults == 2,
        "reads through a bad pointer did not yield fault markers",
    )
}

fn return_values_and_durations() -> Result<(), &'static str> {
    commands::drain(&mut |_| {});
    let id = commands::kretprobe(At::Symbol("sys_open", 0), None, CaptureSpec::default())
        .map_err(|_| "return capture refused sys_open")?;
    let mut truth = [0i64; 8];
    for (t, path) in truth.iter_mut().zip(workloads::OPEN_PATHS) {
        *t = workloads::call_sys_open(path, 1, 0);
    }
    let mut i = 0;
    let mut ok = true;
    let n = events_of(id, &mut |ev| {
        let want = truth.get(i).copied().unwrap_or(0);
        ok &= ev.kind == EventKind::KretprobeReturn
            && ev.ret == Some(want as u64)
            && ev.duration.is_some_and(|d| d > 0)
            && ev.args[1] == 1;
        i += 1;
    });
    unreg(id)?;
    check(
        n == workloads::OPEN_PATHS.len(),
        "not one return event per call",
    )?;
    check(ok, "a return event differs from the ground truth")
}

fn sum8_stack_arguments() -> Result<(), &'static str> {
    commands::drain(&mut |_| {});
    let spec = CaptureSpec::parse("stack=16").map_err(|_| "capture spec refused")?;
    let id = commands::jprobe(At::Symbol("sum8", 0), spec).map_err(|_| "capture refused sum8")?;
    let _ = workloads::call_sum8(1, 2, 3, 4, 5, 6, 77, 88);
    let mut ok = false;
    let n = events_of(id, &mut |ev| {
        let s = ev.stack();
        let word = |i: usize| {
            s.get(i * 8..i * 8 + 8).map_or(0, |b| {
                b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x))
            })
        };
        ok = ev.args == [1, 2, 3, 4, 5, 6] && word(0) == 77 && word(1) == 88;
    });
    unreg(id)?;
    check(n == 1, "no event for the call")?;
    check(ok, "the captured registers or stack arguments are wrong")
}

fn flood_counts_drops_exactly() -> Result<(), &'static str> {
    commands::drain(&mut |_| {});
    let before = commands::ring_stats();
    let spec = CaptureSpec::parse("fetch=str64@arg0").map_err(|_| "capture spec refused")?;
    let id = commands::jprobe(At::Symbol("sys_open", 0), spec)
        .map_err(|_| "capture refused sys_open")?;
    let calls = 2000u64;
    for i in 0..calls {
        // SAFETY: a NUL-terminated static path.
        let _ = unsafe { workloads::sys_open(c"/etc/passwd".as_ptr().cast(), (i % 2) as u32, 0) };
    }
    let delivered = events_of(id, &mut |_| {}) as u64;
    let info = probes::info(id).ok_or("probe vanished")?;
    unreg(id)?;
    let after = commands::ring_stats();
    let produced = after.produced - before.produced;
    let dropped = after.dropped - before.dropped;
    check(produced == calls, "not every hit produced a record")?;
    check(
        produced == delivered + dropped,
        "produced != delivered + dropped",
    )?;
    check(dropped > 0, "the flood did not overflow the ring")?;
    check(
        info.dropped == dropped,
        "the probe's drop count differs from the ring's",
    )
}
