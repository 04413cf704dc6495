//! The results of one `cargo xtask bench`: the printed table,
//! `target/kdbg/bench.json` and the generated blocks of `docs/BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::guest::{Guest, Row};
use super::host::{Host, Wire};

/// What a guest row means, what Linux 6.1 does in the same setup (issue 8),
/// and kdbg's goal for it.
struct Meaning {
    name: &'static str,
    label: &'static str,
    linux: &'static str,
    goal: Goal,
}

#[derive(Clone, Copy)]
enum Goal {
    None,
    /// At most this many extra instructions per trap (empty handlers: the mechanism).
    PerTrap(f64),
    /// At most this many extra instructions per hit (event recorded).
    PerHit(f64),
    /// At most `max` instructions per hit over row `base`'s per-hit figure.
    OverRow {
        base: &'static str,
        max: f64,
    },
}

const MEANINGS: &[Meaning] = &[
    Meaning {
        name: "kprobe_int3",
        label: "kprobe, out of line: int3 + int3 tail (empty pre+post)",
        linux: "717-752 (2 traps, no event)",
        goal: Goal::PerTrap(250.0),
    },
    Meaning {
        name: "kprobe_boosted",
        label: "kprobe, boosted: one trap (empty pre)",
        linux: "-",
        goal: Goal::PerTrap(250.0),
    },
    Meaning {
        name: "kprobe_emulated",
        label: "kprobe on an emulated instruction (ret)",
        linux: "-",
        goal: Goal::PerTrap(250.0),
    },
    Meaning {
        name: "jprobe",
        label: "jprobe (empty handler, same prototype)",
        linux: "-",
        goal: Goal::None,
    },
    Meaning {
        name: "kretprobe",
        label: "kretprobe (empty handler)",
        linux: "623 (rethook, no event)",
        goal: Goal::None,
    },
    Meaning {
        name: "kprobe_kretprobe",
        label: "kprobe + kretprobe on one function",
        linux: "-",
        goal: Goal::None,
    },
    Meaning {
        name: "jprobe_kretprobe",
        label: "jprobe + kretprobe on one function",
        linux: "-",
        goal: Goal::None,
    },
    Meaning {
        name: "capture_kprobe",
        label: "capture kprobe: event (id, CPU, task, TSC, ip, args) to the ring",
        linux: "1146-1180 (int3) / 753 (optimized)",
        goal: Goal::PerHit(400.0),
    },
    Meaning {
        name: "capture_kprobe_int3",
        label: "capture kprobe on a never-boosted instruction (int3 + int3 tail)",
        linux: "1146-1180 (2 traps)",
        goal: Goal::PerHit(570.0),
    },
    Meaning {
        name: "capture_args6",
        label: "entry capture with six argument registers",
        linux: "1447 (ftrace) / 1786 (int3)",
        goal: Goal::PerHit(720.0),
    },
    Meaning {
        name: "capture_string",
        label: "entry capture + one string fetch (sys_open path)",
        linux: "1498",
        goal: Goal::PerHit(749.0),
    },
    Meaning {
        name: "capture_return",
        label: "return capture (value, entry args, duration)",
        linux: "1055",
        goal: Goal::PerHit(525.0),
    },
    Meaning {
        name: "pred_true",
        label: "capture kprobe with a one-compare predicate, true (event recorded)",
        linux: "-",
        goal: Goal::OverRow {
            base: "capture_kprobe",
            max: 60.0,
        },
    },
    Meaning {
        name: "pred_false",
        label: "capture kprobe with a one-compare predicate, false (nothing recorded)",
        linux: "-",
        goal: Goal::PerHit(300.0),
    },
    Meaning {
        name: "agg_count",
        label: "aggregating kprobe: count() by one integer key ($task), in-kernel map, no event",
        linux: "-",
        goal: Goal::PerHit(450.0),
    },
    Meaning {
        name: "agg_hist",
        label: "aggregating kprobe: hist(rdi), power-of-two buckets in an in-kernel map, no event",
        linux: "-",
        goal: Goal::PerHit(450.0),
    },
    Meaning {
        name: "cond_false",
        label: "gdb breakpoint, false condition `rdi == -1` evaluated in the kernel (boosted lea)",
        linux: "-",
        goal: Goal::OverRow {
            base: "kprobe_boosted",
            max: 60.0,
        },
    },
    Meaning {
        name: "kprobe_optimized",
        label: "kprobe, jump-optimized: no trap (empty pre)",
        linux: "324 (optimized, no event)",
        goal: Goal::None,
    },
    Meaning {
        name: "capture_kprobe_optimized",
        label: "capture kprobe, jump-optimized: event to the ring, no trap",
        linux: "753 (optimized)",
        goal: Goal::PerHit(300.0),
    },
    Meaning {
        name: "kretprobe_optimized",
        label: "kretprobe (empty handler), optimized entry + trap-free return",
        linux: "623 (rethook, no event)",
        goal: Goal::None,
    },
    Meaning {
        name: "capture_return_optimized",
        label: "return capture, optimized entry + trap-free return",
        linux: "1055",
        goal: Goal::PerHit(525.0),
    },
    Meaning {
        name: "cond_false_load",
        label: "gdb breakpoint, false condition `*(u64 *)$rsp == 0` (load + compare, interpreter loop)",
        linux: "-",
        goal: Goal::None,
    },
];

fn meaning(name: &str) -> Option<&'static Meaning> {
    MEANINGS.iter().find(|m| m.name == name)
}

/// One bench invocation.
pub struct Run {
    pub command: String,
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub qemu: String,
    pub guest: Option<Guest>,
    pub host: Option<Host>,
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn qemu_version() -> String {
    let bin = ::tests::qemu_binary()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| ::tests::QEMU.into());
    output(&bin, &["--version"])
        .lines()
        .next()
        .unwrap_or("unknown")
        .to_string()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, Linux {}", output("uname", &["-r"]))
}

impl Run {
    pub fn new(command: &str) -> Run {
        let root = crate::build::root();
        let root = root.display().to_string();
        // A benchmark of an exported tree (no .git) names its commit here.
        let commit = match std::env::var("KDBG_BENCH_COMMIT") {
            Ok(c) if !c.is_empty() => c,
            _ => {
                let mut commit = output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
                if !output(
                    "git",
                    &[
                        "--no-optional-locks",
                        "-C",
                        &root,
                        "status",
                        "--porcelain",
                        "--untracked-files=no",
                    ],
                )
                .is_empty()
                {
                    commit.push_str(" (with uncommitted changes)");
                }
                commit
            }
        };
        Run {
            command: command.to_string(),
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit,
            machine: machine(),
            qemu: String::new(),
            guest: None,
            host: None,
        }
    }

    fn meta(&self) -> String {
        format!(
            "{} · commit {} · {} · {}\n\nCommand: `{}`",
            self.date, self.commit, self.qemu, self.machine, self.command
        )
    }
}

fn verdict(r: &Row, goal: Goal, rows: &[Row]) -> String {
    match goal {
        Goal::None => "-".into(),
        Goal::OverRow { base, max } => {
            match rows.iter().find(|b| b.name == base && b.na.is_none()) {
                Some(b) => {
                    let over = r.delta() - b.delta();
                    if over <= max {
                        format!("<= {max:.0} over {base}: met ({over:+.0})")
                    } else {
                        format!("<= {max:.0} over {base}: MISSED ({over:+.0})")
                    }
                }
                None => "-".into(),
            }
        }
        Goal::PerTrap(max) => match r.per_trap() {
            Some(v) if v <= max => format!("<= {max:.0}/trap: met"),
            Some(v) => format!("<= {max:.0}/trap: MISSED (+{:.0})", v - max),
            None => "-".into(),
        },
        Goal::PerHit(max) => {
            let v = r.delta();
            if v <= max {
                format!("<= {max:.0}: met")
            } else {
                format!("<= {max:.0}: MISSED (x{:.1})", v / max)
            }
        }
    }
}

/// The guest table as rows of cells (header first).
fn guest_cells(g: &Guest) -> Vec<Vec<String>> {
    let mut t = vec![vec![
        "row".to_string(),
        "path".into(),
        "insns/hit".into(),
        "traps/hit".into(),
        "fxsave/hit".into(),
        "insns/trap".into(),
        "hits/s (TCG)".into(),
        "Linux 6.1".into(),
        "goal".into(),
    ]];
    if let Some(first) = g.rows.iter().find(|r| r.na.is_none()) {
        t.push(vec![
            format!("no probe ({} via hot_loop)", first.target),
            "-".into(),
            format!("{:.1} (absolute)", first.base_per_call()),
            "0".into(),
            "0".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    for r in &g.rows {
        let m = meaning(&r.name);
        let label = m.map_or(r.name.clone(), |m| m.label.to_string());
        if let Some(reason) = &r.na {
            let mut row = vec![label, format!("n/a ({reason})")];
            row.resize(9, String::new());
            t.push(row);
            continue;
        }
        t.push(vec![
            label,
            r.path.clone(),
            format!("{:.0}", r.delta()),
            format!("{:.2}", r.traps_per_hit()),
            format!("{:.2}", r.traps_per_hit()),
            r.per_trap().map_or("-".into(), |v| format!("{v:.0}")),
            r.hits_per_sec().map_or("-".into(), |v| format!("{v:.0}")),
            m.map_or("-", |m| m.linux).to_string(),
            m.map_or("-".into(), |m| verdict(r, m.goal, &g.rows)),
        ]);
    }
    t
}

/// The `--smp N` rows: per hit on one CPU, per hit on every CPU at once,
/// the growth (the goal: at most 10 %), and whether the counts and the
/// overlap check held.
fn smp_cells(g: &Guest) -> Vec<Vec<String>> {
    let mut t = vec![vec![
        "row".to_string(),
        "CPUs".into(),
        "1 CPU insns/hit".into(),
        "all CPUs insns/hit".into(),
        "growth".into(),
        "hits exact".into(),
        "interleaved".into(),
    ]];
    for r in &g.smp {
        t.push(vec![
            r.name.clone(),
            r.cpus.to_string(),
            format!("{:.1}", r.one_per_hit()),
            format!("{:.1}", r.all_per_hit()),
            format!(
                "{:+.1}%{}",
                r.growth() * 100.0,
                if r.growth() > 0.10 { " (over 10%)" } else { "" }
            ),
            if r.hits_exact() { "yes" } else { "NO" }.into(),
            if r.interleaved { "yes" } else { "no" }.into(),
        ]);
    }
    t
}

fn phase_cells(g: &Guest) -> Vec<Vec<String>> {
    let mut t = vec![vec![
        "path".to_string(),
        "call -> 1st handler".into(),
        "1st -> 2nd handler".into(),
        "last handler -> caller".into(),
        "whole hit (delta)".into(),
    ]];
    for p in &g.phases {
        let n = p.calls.max(1) as f64;
        let base = p.base as f64 / n;
        t.push(vec![
            p.name.clone(),
            format!("{:.0}", p.to_first as f64 / n),
            if p.first_to_second == 0 {
                "-".into()
            } else {
                format!("{:.0}", p.first_to_second as f64 / n)
            },
            format!("{:.0}", p.after_last as f64 / n),
            format!("{:.0}", p.whole as f64 / n - base),
        ]);
    }
    t
}

fn fmt_dur(r: &Result<std::time::Duration, String>) -> String {
    match r {
        Ok(d) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
        Err(e) => format!("n/a ({e})"),
    }
}

fn wire_cells(t: &mut Vec<Vec<String>>, w: &Wire, how: &str) {
    t.push(vec![
        format!("RSP round trip, `m ADDR,1` (median / p90), {how}"),
        match &w.round_trip_us {
            Ok(v) if !v.is_empty() => format!(
                "{:.0} us / {:.0} us ({} round trips)",
                v[v.len() / 2],
                v[v.len() * 9 / 10],
                v.len()
            ),
            Ok(_) => "n/a (no samples)".into(),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
    for (what, r) in [("64 KiB", &w.read_64k), ("1 MiB", &w.read_1m)] {
        t.push(vec![
            format!("memory read {what} through the stub, {how}"),
            match r {
                Ok(tp) => format!(
                    "{:.1} KiB/s ({} packets, PacketSize {})",
                    tp.bytes_per_sec() / 1024.0,
                    tp.packets,
                    w.packet_size
                ),
                Err(e) => format!("n/a ({e})"),
            },
        ]);
    }
    t.push(vec![
        format!("event stream (kprobe on `fib`) delivered to the host, {how}"),
        match &w.events {
            Ok(e) => format!(
                "{:.0} events/s ({} in {:.1} s; ring: produced {}, delivered {}, dropped {})",
                e.per_sec(),
                e.received,
                e.secs,
                e.produced,
                e.delivered,
                e.dropped
            ),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
}

fn host_cells(h: &Host) -> Vec<Vec<String>> {
    let mut t = vec![vec!["measure".to_string(), "value".into()]];
    t.push(vec![
        "QEMU start -> stub answers (kernel boot)".into(),
        fmt_dur(&h.boot_to_stub),
    ]);
    t.push(vec![
        "`kdbg --kernel` (what `cargo xtask run` starts) -> first prompt".into(),
        fmt_dur(&h.run_to_prompt),
    ]);
    t.push(vec![
        "`kdbg --connect` to a running kernel -> first prompt".into(),
        fmt_dur(&h.connect_to_prompt),
    ]);
    wire_cells(&mut t, &h.wire, "tcp chardev, nodelay=on (as wired)");
    wire_cells(&mut t, &h.wire_nagle, "nodelay=off (before 1d69111)");
    t.push(vec![
        "`dump core` of the reference kernel after a death (kdbg.crash=pf), tcp chardev, nodelay=on".into(),
        match &h.dump_core {
            Ok(d) => format!(
                "{:.1} s ({} MiB of RAM described; {} KiB read: non-zero pages outside the ELF's code; {} KiB file)",
                d.secs,
                d.memory >> 20,
                d.read >> 10,
                d.file >> 10
            ),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
    let ms = |v: &[f64]| match v.get(v.len() / 2) {
        Some(m) => format!(
            "{m:.2} ms median ({:.2}..{:.2} ms over {})",
            v.first().copied().unwrap_or(0.0),
            v.last().copied().unwrap_or(0.0),
            v.len()
        ),
        None => "n/a".into(),
    };
    t.push(vec![
        "`print *w`: the 50-member `Wide` through the stub (kdbg --json, stopped at wide_checksum)"
            .into(),
        match &h.print_wide {
            Ok(p) => ms(&p.deref_ms),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
    t.push(vec![
        "`print WIDE.f07 + WIDE.f49` (two scalar reads) through the stub".into(),
        match &h.print_wide {
            Ok(p) => ms(&p.scalar_ms),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
    shared_cells(&mut t, &h.shared);
    t
}

/// The shared-memory channel's rows (issue 17), beside the UART's above.
fn shared_cells(t: &mut Vec<Vec<String>>, s: &Result<super::host::Shared, String>) {
    let s = match s {
        Ok(s) => s,
        Err(e) => {
            t.push(vec![
                "guest RAM shared with kdbg (--memory)".into(),
                format!("n/a ({e})"),
            ]);
            return;
        }
    };
    for (what, r) in [
        ("binary `x`", &s.uart_x_1m),
        ("hex `m`, same boot", &s.uart_m_1m),
    ] {
        t.push(vec![
            format!("memory read 1 MiB through the stub with kdbg's client, {what}"),
            match r {
                Ok(tp) => format!("{:.1} KiB/s", tp.bytes_per_sec() / 1024.0),
                Err(e) => format!("n/a ({e})"),
            },
        ]);
    }
    t.push(vec![
        "memory read 64 MiB contiguous through the mapping (kdbg --memory, kernel running)".into(),
        match &s.read_64m {
            Ok(tp) => format!(
                "{:.0} MB/s ({:.2} s; {} pages answered by the stub: int3 bytes, non-RAM)",
                tp.bytes_per_sec() / 1e6,
                tp.secs,
                s.read_64m_stub_pages
            ),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
    t.push(vec![
        "random 8-byte reads through the mapping (page-table walk each)".into(),
        match &s.random_8 {
            Ok((n, per_sec)) => format!("{per_sec:.0} reads/s ({n} reads)"),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
    t.push(vec![
        "event stream (kprobe on `fib`) read from the rings in guest RAM into kdbg's store".into(),
        match &s.events {
            Ok(e) => format!(
                "{:.0} events/s ({} in {:.1} s; ring: produced {}, delivered {}, dropped {})",
                e.per_sec(),
                e.received,
                e.secs,
                e.produced,
                e.delivered,
                e.dropped
            ),
            Err(e) => format!("n/a ({e})"),
        },
    ]);
}

fn plain(t: &[Vec<String>]) -> String {
    let cols = t.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            t.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in t.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = width[c]))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        if i == 0 {
            let _ = writeln!(
                out,
                "  {}",
                "-".repeat(width.iter().sum::<usize>() + 2 * cols.saturating_sub(1))
            );
        }
    }
    out
}

fn markdown(t: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, r) in t.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} |",
            r.iter()
                .map(|s| s.replace('|', "\\|"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        if i == 0 {
            let _ = writeln!(out, "|{}", "---|".repeat(r.len()));
        }
    }
    out
}

/// The printed report.
pub fn text(run: &Run) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nkdbg bench — {}\n", run.meta().replace("\n\n", "\n"));
    if let Some(g) = &run.guest {
        let _ = writeln!(
            s,
            "Guest: instructions per probe hit over the unprobed call (QEMU -icount shift=0, {} calls per row)\n",
            g.calls
        );
        s.push_str(&plain(&guest_cells(g)));
        let _ = writeln!(
            s,
            "\nWhere a hit's instructions go (handlers stamp the TSC; per call):\n"
        );
        s.push_str(&plain(&phase_cells(g)));
        if !g.smp.is_empty() {
            let _ = writeln!(
                s,
                "\nEvery CPU at once (instructions of all vCPUs per hit; -icount runs them round robin in one thread):\n"
            );
            s.push_str(&plain(&smp_cells(g)));
        }
    }
    if let Some(h) = &run.host {
        let _ = writeln!(s, "\nHost (wall clock, QEMU TCG without -icount):\n");
        s.push_str(&plain(&host_cells(h)));
    }
    s
}

fn guest_json(g: &Guest) -> Value {
    let rows: Vec<Value> = g
        .rows
        .iter()
        .map(|r| match &r.na {
            Some(reason) => json!({"row": r.name, "na": reason}),
            None => json!({
                "row": r.name, "target": r.target, "path": r.path, "calls": r.calls,
                "base_insns_per_call": r.base_per_call(), "insns_per_hit": r.delta(),
                "traps_per_hit": r.traps_per_hit(), "fxsave_per_hit": r.traps_per_hit(),
                "insns_per_trap": r.per_trap(), "hits_per_sec_tcg": r.hits_per_sec(),
                "hits": r.hits, "missed": r.missed, "produced": r.produced, "dropped": r.dropped,
                "timer_ticks": r.ticks, "wrong_results": r.wrong,
            }),
        })
        .collect();
    let phases: Vec<Value> = g
        .phases
        .iter()
        .map(|p| json!({
            "row": p.name, "calls": p.calls, "base": p.base, "whole": p.whole,
            "to_first": p.to_first, "first_to_second": p.first_to_second, "after_last": p.after_last,
        }))
        .collect();
    let smp: Vec<Value> = g
        .smp
        .iter()
        .map(|r| {
            json!({
                "row": r.name, "cpus": r.cpus, "calls": r.calls,
                "one_cpu_insns_per_hit": r.one_per_hit(), "all_cpus_insns_per_hit": r.all_per_hit(),
                "growth": r.growth(), "hits": r.hits, "missed": r.missed, "hits_exact": r.hits_exact(),
                "wrong_results": r.wrong, "interleaved": r.interleaved,
            })
        })
        .collect();
    json!({"calls_per_row": g.calls, "wall_secs": g.wall.as_secs_f64(), "rows": rows, "phases": phases, "smp": smp})
}

fn wire_json(w: &Wire) -> Value {
    json!({
        "round_trip_us": match &w.round_trip_us { Ok(v) => json!({"median": v.get(v.len() / 2), "p90": v.get(v.len() * 9 / 10), "n": v.len()}), Err(e) => json!({"na": e}) },
        "packet_size": w.packet_size,
        "read_64k_bytes_per_sec": match &w.read_64k { Ok(t) => json!(t.bytes_per_sec()), Err(e) => json!({"na": e}) },
        "read_1m_bytes_per_sec": match &w.read_1m { Ok(t) => json!(t.bytes_per_sec()), Err(e) => json!({"na": e}) },
        "events": match &w.events { Ok(e) => json!({"per_sec": e.per_sec(), "received": e.received, "secs": e.secs, "produced": e.produced, "delivered": e.delivered, "dropped": e.dropped}), Err(e) => json!({"na": e}) },
    })
}

fn host_json(h: &Host) -> Value {
    let d = |r: &Result<std::time::Duration, String>| match r {
        Ok(d) => json!(d.as_secs_f64()),
        Err(e) => json!({"na": e}),
    };
    json!({
        "boot_to_stub_secs": d(&h.boot_to_stub),
        "run_to_prompt_secs": d(&h.run_to_prompt),
        "connect_to_prompt_secs": d(&h.connect_to_prompt),
        "wire": wire_json(&h.wire),
        "wire_nagle": wire_json(&h.wire_nagle),
        "print_wide": match &h.print_wide {
            Ok(p) => json!({"deref_ms": p.deref_ms, "scalar_ms": p.scalar_ms}),
            Err(e) => json!({"na": e}),
        },
        "dump_core": match &h.dump_core {
            Ok(d) => json!({"secs": d.secs, "memory": d.memory, "read": d.read, "file": d.file}),
            Err(e) => json!({"na": e}),
        },
        "shared": match &h.shared {
            Ok(s) => json!({
                "read_64m_bytes_per_sec": match &s.read_64m { Ok(t) => json!(t.bytes_per_sec()), Err(e) => json!({"na": e}) },
                "read_64m_stub_pages": s.read_64m_stub_pages,
                "uart_x_1m_bytes_per_sec": match &s.uart_x_1m { Ok(t) => json!(t.bytes_per_sec()), Err(e) => json!({"na": e}) },
                "uart_m_1m_bytes_per_sec": match &s.uart_m_1m { Ok(t) => json!(t.bytes_per_sec()), Err(e) => json!({"na": e}) },
                "random_8_per_sec": match &s.random_8 { Ok((_, r)) => json!(r), Err(e) => json!({"na": e}) },
                "events": match &s.events { Ok(e) => json!({"per_sec": e.per_sec(), "received": e.received, "secs": e.secs, "produced": e.produced, "delivered": e.delivered, "dropped": e.dropped}), Err(e) => json!({"na": e}) },
            }),
            Err(e) => json!({"na": e}),
        },
    })
}

/// Writes `bench.json`, keeping the part of a previous run this one did not measure.
pub fn write_json(run: &Run, path: &Path) -> Result<()> {
    let old: Value = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let meta = json!({"date": run.date, "commit": run.commit, "machine": run.machine, "qemu": run.qemu, "command": run.command});
    let v = json!({
        "guest": run.guest.as_ref().map_or_else(|| old.get("guest").cloned().unwrap_or(Value::Null), |g| json!({"meta": meta, "results": guest_json(g)})),
        "host": run.host.as_ref().map_or_else(|| old.get("host").cloned().unwrap_or(Value::Null), |h| json!({"meta": meta, "results": host_json(h)})),
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

const TEMPLATE: &str = "# kdbg benchmarks\n\n\
Generated blocks below are rewritten by `cargo xtask bench`; text outside the\n\
`<!-- bench:... -->` markers is kept.\n\n\
## Guest: probe costs\n\n<!-- bench:guest:begin -->\n<!-- bench:guest:end -->\n\n\
## Host: stub, event stream, prompt\n\n<!-- bench:host:begin -->\n<!-- bench:host:end -->\n\n\
## Symbols\n\n(`cargo xtask bench symbols --elf PATH`; written by the symbols engineer.)\n";

/// Replaces the text between `<!-- bench:NAME:begin -->` and `...:end -->`.
pub fn replace_block(doc: &str, name: &str, body: &str) -> Option<String> {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let b = doc.find(&begin)? + begin.len();
    let e = b + doc[b..].find(&end)?;
    Some(format!("{}\n{}{}", &doc[..b], body, &doc[e..]))
}

fn guest_block(run: &Run, g: &Guest) -> String {
    format!(
        "{}\n\nPer probe hit on a hot function, guest instructions over the unprobed call measured in the same boot \
(QEMU TCG `-icount shift=0`: the TSC counts instructions; {} calls per row; timer masked). Every trap entry saves the \
FPU state (`fxsave64`), so FPU saves per hit = traps per hit. Goals from issue 8: at most half of Linux's figure with \
an event recorded, and the empty-handler mechanism under 250 instructions per trap.\n\n{}\n\
Where a hit's instructions go (handlers stamp the TSC; per call, unprobed call not subtracted from the parts):\n\n{}",
        run.meta(),
        g.calls,
        markdown(&guest_cells(g)),
        markdown(&phase_cells(g))
    )
}

fn host_block(run: &Run, h: &Host) -> String {
    format!(
        "{}\n\nWall-clock figures of this machine (QEMU TCG without `-icount`, stub on COM2 over TCP).\n\n{}",
        run.meta(),
        markdown(&host_cells(h))
    )
}

/// Rewrites the generated blocks of `docs/BENCHMARKS.md` (creating it from a template).
pub fn write_markdown(run: &Run, path: &Path) -> Result<()> {
    let mut doc = std::fs::read_to_string(path).unwrap_or_else(|_| TEMPLATE.to_string());
    if let Some(g) = &run.guest {
        doc = replace_block(&doc, "guest", &guest_block(run, g)).with_context(|| {
            format!(
                "{} lacks the <!-- bench:guest:begin/end --> markers; restore them",
                path.display()
            )
        })?;
    }
    if let Some(h) = &run.host {
        doc = replace_block(&doc, "host", &host_block(run, h)).with_context(|| {
            format!(
                "{} lacks the <!-- bench:host:begin/end --> markers; restore them",
                path.display()
            )
        })?;
    }
    std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_named_block() {
        let doc = "a\n<!-- bench:guest:begin -->\nold\n<!-- bench:guest:end -->\nb\n<!-- bench:host:begin -->\nkeep\n<!-- bench:host:end -->\n";
        let new = replace_block(doc, "guest", "new\n").unwrap();
        assert_eq!(
            new,
            "a\n<!-- bench:guest:begin -->\nnew\n<!-- bench:guest:end -->\nb\n<!-- bench:host:begin -->\nkeep\n<!-- bench:host:end -->\n"
        );
        assert!(replace_block("no markers", "guest", "x").is_none());
    }

    #[test]
    fn verdicts_compare_with_the_goal() {
        let r = Row {
            calls: 10,
            base_insns: 100,
            insns: 3100,
            traps: 10,
            ..Row::default()
        };
        assert_eq!(
            verdict(&r, Goal::PerTrap(250.0), &[]),
            "<= 250/trap: MISSED (+50)"
        );
        assert_eq!(verdict(&r, Goal::PerHit(400.0), &[]), "<= 400: met");
        assert_eq!(
            verdict(&r, Goal::PerHit(100.0), &[]),
            "<= 100: MISSED (x3.0)"
        );
        let base = Row {
            name: "kprobe_boosted".into(),
            calls: 10,
            base_insns: 100,
            insns: 2900,
            traps: 10,
            ..Row::default()
        };
        let over = Goal::OverRow {
            base: "kprobe_boosted",
            max: 60.0,
        };
        assert_eq!(
            verdict(&r, over, std::slice::from_ref(&base)),
            "<= 60 over kprobe_boosted: met (+20)"
        );
    }
}
