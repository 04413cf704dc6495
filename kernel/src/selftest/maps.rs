//! Selftest suite `maps`: aggregating probes (issue 14) through the real
//! trap path: a map updated at every hit, read back exactly, nothing put in
//! the event ring; a full map counts every refused insert.

use alloc::vec::Vec;

use probes::{At, ProbeId, commands};
use proto::CaptureSpec;
use proto::agg::{AggFn, AggSpec, KeyKind, KeyPart, KeyValue};
use proto::bytecode::{CTX_RET, Program, Writer};

use super::probe_util::check;
use crate::workloads;

crate::probe_suite!(
    "maps",
    count_by_n_of_recursive_fib,
    kretprobe_stats_and_lhist_of_ret,
    full_map_counts_refused_inserts,
);

fn reg(n: u8) -> Result<Program, &'static str> {
    let mut w = Writer::new();
    w.reg(n);
    w.finish().map_err(|_| "program refused")
}

fn ret() -> Result<Program, &'static str> {
    let mut w = Writer::new();
    w.ctx(CTX_RET);
    w.finish().map_err(|_| "program refused")
}

/// `(integer key, count, sum, min, max, buckets)` of every entry.
type Entry = (u64, proto::agg::Stats, Vec<(i32, u64)>);

fn entries(id: ProbeId) -> Result<Vec<Entry>, &'static str> {
    let mut out = Vec::new();
    commands::with_map(id, |m| {
        m.for_each(&mut |key, stats, buckets| {
            let k = match key.next() {
                Some(KeyValue::Int(v)) => v,
                _ => u64::MAX,
            };
            out.push((k, stats, buckets.to_vec()));
        });
    })
    .map_err(|_| "no map")?;
    out.sort_by_key(|e| e.0);
    Ok(out)
}

/// Calls of fib(k) made by fib(n), per k (k <= 15).
fn fib_calls(n: u64, out: &mut [u64; 16]) {
    if let Some(c) = out.get_mut(n as usize) {
        *c += 1;
    }
    if n >= 2 {
        fib_calls(n - 1, out);
        fib_calls(n - 2, out);
    }
}

fn count_by_n_of_recursive_fib() -> Result<(), &'static str> {
    let mut spec = AggSpec::new(AggFn::Count);
    spec.push_key(KeyPart {
        kind: KeyKind::Int,
        prog: reg(5)?,
    })
    .map_err(|_| "key refused")?;
    let before = commands::ring_stats().produced;
    let id = commands::kprobe_agg(At::Symbol("fib", 0), None, Some(spec))
        .map_err(|_| "kprobe_agg refused fib")?;
    let _ = workloads::fib(12);
    let got = entries(id);
    let produced = commands::ring_stats().produced - before;
    probes::unregister(id).map_err(|_| "unregister failed")?;
    let got = got?;
    let mut want = [0u64; 16];
    fib_calls(12, &mut want);
    check(got.len() == 13, "one entry per n")?;
    for (n, stats, _) in &got {
        check(
            want.get(*n as usize) == Some(&stats.count),
            "a count differs from fib's recursion",
        )?;
    }
    check(produced == 0, "an aggregating probe produced events")
}

fn kretprobe_stats_and_lhist_of_ret() -> Result<(), &'static str> {
    let mut stats = AggSpec::new(AggFn::Stats);
    stats.value = Some(ret()?);
    let mut lhist = AggSpec::new(AggFn::Lhist {
        min: -15,
        max: 0,
        step: 5,
    });
    lhist.value = Some(ret()?);
    let a = commands::kretprobe_agg(
        At::Symbol("sys_open", 0),
        Some(16),
        CaptureSpec::default(),
        None,
        Some(stats),
    )
    .map_err(|_| "kretprobe_agg refused sys_open")?;
    let b = commands::kretprobe_agg(
        At::Symbol("sys_open", 0),
        Some(16),
        CaptureSpec::default(),
        None,
        Some(lhist),
    );
    let mut rets = Vec::new();
    for path in workloads::OPEN_PATHS {
        rets.push(workloads::call_sys_open(path, 0, 0));
        rets.push(workloads::call_sys_open(path, 1, 0));
    }
    let s = entries(a);
    let h = b.map(entries);
    probes::unregister(a).map_err(|_| "unregister failed")?;
    if let Ok(b) = b {
        probes::unregister(b).map_err(|_| "unregister failed")?;
    }
    let s = s?;
    let h = h.map_err(|_| "kretprobe_agg refused the lhist")??;
    let st = s.first().map(|e| e.1).ok_or("no stats entry")?;
    check(st.count == rets.len() as u64, "stats count")?;
    check(st.sum == rets.iter().sum::<i64>(), "stats sum")?;
    check(Some(&st.min) == rets.iter().min(), "stats min")?;
    check(Some(&st.max) == rets.iter().max(), "stats max")?;
    // Buckets: 0 below -15, 1..=3 for [-15,-10) [-10,-5) [-5,0), 4 at or above 0.
    let mut want = [0u64; 5];
    for r in &rets {
        let b = if *r < -15 {
            0
        } else if *r >= 0 {
            4
        } else {
            ((*r + 15) / 5 + 1) as usize
        };
        if let Some(c) = want.get_mut(b) {
            *c += 1;
        }
    }
    let got = h.first().map(|e| e.2.clone()).ok_or("no lhist entry")?;
    for (k, n) in &got {
        check(
            want.get(*k as usize) == Some(n),
            "an lhist bucket differs from the returns",
        )?;
    }
    check(
        got.iter().map(|b| b.1).sum::<u64>() == rets.len() as u64,
        "lhist total",
    )
}

fn full_map_counts_refused_inserts() -> Result<(), &'static str> {
    let mut spec = AggSpec::new(AggFn::Count);
    spec.push_key(KeyPart {
        kind: KeyKind::Int,
        prog: reg(5)?,
    })
    .map_err(|_| "key refused")?;
    spec.budget = 64;
    let id = commands::kprobe_agg(At::Symbol("fib", 0), None, Some(spec))
        .map_err(|_| "kprobe_agg refused fib")?;
    let _ = workloads::fib(6);
    let info = commands::with_map(id, |m| m.info());
    let got = entries(id);
    probes::unregister(id).map_err(|_| "unregister failed")?;
    let info = info.map_err(|_| "no map")?;
    let got = got?;
    let mut calls = [0u64; 16];
    fib_calls(6, &mut calls);
    let total: u64 = calls.iter().sum();
    let counted: u64 = got.iter().map(|e| e.1.count).sum();
    check(
        info.capacity >= 1 && info.entries == info.capacity,
        "the map is not full",
    )?;
    check(info.map_full > 0, "no refused insert")?;
    check(
        counted + info.map_full == total,
        "count + map_full != calls",
    )
}
