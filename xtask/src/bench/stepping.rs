//! `cargo xtask bench stepping`: what one source-level `next` costs against
//! kdbg's stub, kdbg beside a stock gdb at the same stop (issue 23).
//!
//! Each row stops both debuggers at the same line (a conditional
//! breakpoint that pins the path, then the same `next`s to reach the line)
//! and measures one `next`: packets sent to the stub (each one a round
//! trip), single steps among them (`s`/`vCont;s`), and the wall time.
//! kdbg reports its own counts in the step result (`round_trips`,
//! `stub_steps`, counted by its RSP client); gdb's are counted in its
//! `set debug remote 1` log of that one command.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::Qemu;
use tests::kdbg::KdbgJson;

/// One measured `next`.
struct Case {
    what: &'static str,
    /// The function (`break FUNCTION if CONDITION`, gdb: `break *FUNCTION`).
    function: &'static str,
    condition: &'static str,
    /// `next`s before the measured one.
    before: usize,
}

const CASES: &[Case] = &[
    Case {
        what: "line without calls (spawn_task:79, 2 insns)",
        function: "spawn_task",
        condition: "($rdi & 0x1000000) != 0 && $rcx != 0",
        before: 1,
    },
    Case {
        what: "line without calls, a loop (sys_open:127, c_str inlined)",
        function: "sys_open",
        condition: "*(unsigned char*)($rdi+5) == 104",
        before: 0,
    },
    Case {
        what: "line with a call (handle_request:212 over c_str's from_utf8)",
        function: "handle_request",
        condition: "$rdi != 0",
        before: 1,
    },
    Case {
        what: "line with a recursive call (fib:183, fib(5))",
        function: "fib",
        condition: "$rdi == 5 && *(unsigned long*)$rsp - (unsigned long)fib > 100",
        before: 2,
    },
];

/// The counts of one `next`.
#[derive(Clone, Copy, Default)]
struct Cost {
    line_from: u64,
    line_to: u64,
    round_trips: u64,
    steps: u64,
    ms: f64,
}

fn kdbg_cost(vm: &Qemu, case: &Case) -> Result<Cost> {
    let mut k = KdbgJson::start(vm, &["--timeout", "60"]);
    k.run("live off");
    let b = k.ok(
        &format!("break {} if {}", case.function, case.condition),
        "breakpoint",
    );
    let id = b["breakpoint"]["id"].as_u64().context("breakpoint id")?;
    k.ok("wait stop timeout 60", "waited");
    k.ok(&format!("delete break {id}"), "message");
    for _ in 0..case.before {
        k.ok("next", "stepped");
    }
    let from = k.ok("frame", "frame")["frame"]["line"]
        .as_u64()
        .unwrap_or(0);
    let t = Instant::now();
    let v = k.ok("next", "stepped");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    k.run("continue");
    let _ = k.finish();
    Ok(Cost {
        line_from: from,
        line_to: v["step"]["line"].as_u64().unwrap_or(0),
        round_trips: v["step"]["round_trips"].as_u64().unwrap_or(0),
        steps: v["step"]["stub_steps"].as_u64().unwrap_or(0),
        ms,
    })
}

fn gdb_cost(vm: &mut Qemu, kernel: &Path, case: &Case) -> Result<Cost> {
    let addr = vm
        .wait_for_stub_port(Duration::from_secs(60))
        .context("stub port")?;
    let mut c = Command::new("gdb");
    c.args(["-batch", "-nx", "-q"]);
    let mut ex: Vec<String> = [
        "set pagination off",
        "set confirm off",
        "set language c",
        "set remotetimeout 20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ex.push(format!("target remote {addr}"));
    ex.push("skip -rfu ^(core|alloc|std)::".into());
    ex.push("set breakpoint condition-evaluation host".into());
    ex.push(format!("break *{} if {}", case.function, case.condition));
    ex.push("continue".into());
    ex.push("delete".into());
    for _ in 0..case.before {
        ex.push("next".into());
    }
    ex.push("python import sys, time".into());
    ex.push("python print('@@FROM', gdb.selected_frame().find_sal().line)".into());
    // Timed without the debug log, counted with it: the same next twice is
    // not possible, so the time is of this next with logging on (an upper
    // bound) and the counts come from the log.
    ex.push("set debug remote 1".into());
    ex.push("python sys.stderr.write('@@BEGIN\\n'); t = time.time()".into());
    ex.push("next".into());
    ex.push("python sys.stderr.write('@@END %f\\n' % ((time.time() - t) * 1000))".into());
    ex.push("set debug remote 0".into());
    ex.push("python print('@@TO', gdb.selected_frame().find_sal().line)".into());
    ex.push("detach".into());
    for e in &ex {
        c.args(["-ex", e]);
    }
    c.arg(kernel).stdin(Stdio::null());
    let out = c.output().context("run gdb")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = |key: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let Some(begin) = stderr.find("@@BEGIN") else {
        bail!("gdb did not run the measured next:\n{stdout}\n{stderr}");
    };
    let log = &stderr[begin..];
    let end = log.find("@@END").unwrap_or(log.len());
    let ms = log[end..]
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("@@END "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let sent: Vec<&str> = log[..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[remote] Sending packet: $"))
        .collect();
    Ok(Cost {
        line_from: line("@@FROM "),
        line_to: line("@@TO "),
        round_trips: sent.len() as u64,
        steps: sent
            .iter()
            .filter(|p| p.starts_with("vCont;s") || p.starts_with("s#") || p.starts_with("s:"))
            .count() as u64,
        ms,
    })
}

/// Boots the kernel and measures every case with kdbg, then gdb; returns
/// the markdown table.
pub fn run(kernel: &Path) -> Result<String> {
    let mut vm = Qemu::boot_with("serve kdbg.quiet", |c| {
        c.kernel = kernel.to_path_buf();
        c.timeout = Duration::from_secs(900);
    })?;
    vm.wait_for_console("tasks started", Duration::from_secs(60))?;
    let mut rows = vec![
        "| `next` over | line | kdbg round trips | kdbg stub steps | kdbg ms | gdb round trips | gdb stub steps | gdb ms (log on) |".to_string(),
        "|---|---|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    for case in CASES {
        let k = kdbg_cost(&vm, case)?;
        let g = gdb_cost(&mut vm, kernel, case)?;
        let lines = if (k.line_from, k.line_to) == (g.line_from, g.line_to) {
            format!("{} -> {}", k.line_from, k.line_to)
        } else {
            format!(
                "kdbg {} -> {}, gdb {} -> {}",
                k.line_from, k.line_to, g.line_from, g.line_to
            )
        };
        rows.push(format!(
            "| {} | {lines} | {} | {} | {:.0} | {} | {} | {:.0} |",
            case.what, k.round_trips, k.steps, k.ms, g.round_trips, g.steps, g.ms
        ));
    }
    vm.kill();
    Ok(rows.join("\n") + "\n")
}
