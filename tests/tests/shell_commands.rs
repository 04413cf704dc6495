//! The kdbg shell commands not covered by shell_exec/shell_batch, end to end
//! against the reference kernel in QEMU, driven through `--json` on a pipe:
//! tbreak, hbreak, watch (old/new value), nexti over a call, interrupt,
//! write + x, regs -v, disas -s, info sym, info line, ptype, threads +
//! thread N + bt, filter / events probe= / events task=, kprobe file:line,
//! and `kdbg --kernel ELF` starting QEMU itself.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::Qemu;
use tests::kdbg::{bt_has, items};

type Kdbg = tests::kdbg::KdbgJson;

fn boot() -> Qemu {
    Qemu::boot_serving("")
}

fn hex(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("not a hex number ({e}): {s}"))
}

/// The 1-based line of the first line of `file` containing `needle`.
fn line_of(file: &str, needle: &str) -> usize {
    let path = tests::workspace_root().join(file);
    let text = std::fs::read_to_string(&path).expect("read source");
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in {file}"))
        + 1
}

#[test]
fn breakpoints_watchpoints_stepping_and_state() {
    let vm = boot();
    let mut k = Kdbg::start(&vm, &["--keep-going"]);

    // tbreak: one stop, then gone.
    let t = k.ok("tbreak spawn_task", "breakpoint");
    assert_eq!(t["breakpoint"]["temporary"], true, "{t}");
    let spawn = t["breakpoint"]["addr"].as_u64().expect("addr");
    let m = k.mark();
    let st = k.wait_stop(m);
    assert_eq!(st["stop"]["rip"], spawn, "{st}");
    assert_eq!(st["stop"]["location"], "spawn_task", "{st}");
    assert_eq!(st["stop"]["task_name"], "fork-worker", "{st}");
    let ib = k.ok("info breakpoints", "breakpoints");
    assert_eq!(ib["breakpoints"], serde_json::json!([]), "{ib}");
    k.ok("continue", "running");
    // spawn_task runs every tick: a stop within 2 s would be the tbreak again.
    // (A stop within 2 s would be the tbreak again.)
    k.refused("wait stop timeout 2", &["timed out"]);

    // interrupt stops the running kernel.
    let i = k.ok("interrupt", "stopped");
    assert!(i["stop"]["rip"].as_u64().unwrap() > 0, "{i}");
    assert_eq!(i["stop"]["reason"], "interrupted", "{i}");
    k.refused("interrupt", &["already stopped"]);

    // regs -v: segments, SSE.
    let r = k.ok("regs -v", "regs");
    assert_eq!(r["verbose"], true, "{r}");
    let segs = r["regs"]["segments"].as_array().expect("segments");
    assert_eq!(segs.len(), 6, "{r}");
    assert!(
        segs.iter().any(|s| s.as_u64().is_some_and(|v| v != 0)),
        "cs must be non-zero: {r}"
    );
    assert_eq!(
        r["regs"]["xmm"].as_array().map(Vec::len),
        Some(16),
        "sixteen xmm registers: {r}"
    );
    assert!(r["regs"]["mxcsr"].is_u64(), "{r}");

    // info sym of a global; write then x reads it back.
    let sym = k.ok("info sym NEXT_PID", "symbol");
    let pid_addr = sym["addr"].as_u64().expect("addr");
    assert!(
        sym["symbol"].as_str().unwrap().contains("NEXT_PID"),
        "{sym}"
    );
    k.ok("write /g NEXT_PID 0x5000", "written");
    let x = k.ok("x/1gx NEXT_PID", "memory");
    assert_eq!(x["rows"][0]["addr"], pid_addr, "{x}");
    assert_eq!(hex(&x["rows"][0]["values"][0]), 0x5000, "{x}");
    let x = k.ok(&format!("x/2wx {pid_addr:#x}"), "memory");
    assert_eq!(hex(&x["rows"][0]["values"][0]), 0x5000, "{x}");
    assert_eq!(hex(&x["rows"][0]["values"][1]), 0, "{x}");

    // watch: the fork worker's next spawn_task writes NEXT_PID 0x5000 -> 0x5001.
    let w = k.ok("watch NEXT_PID", "breakpoint");
    assert_eq!(w["breakpoint"]["kind"], "watchpoint", "{w}");
    assert_eq!(w["breakpoint"]["len"], 8, "{w}");
    let wid = w["breakpoint"]["id"].as_u64().unwrap();
    let m = k.mark();
    k.ok("continue", "running");
    let st = k.wait_stop(m);
    let reason = st["stop"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("old 0x5000, new 0x5001"),
        "watchpoint stop without the old/new value: {st}"
    );
    assert_eq!(st["stop"]["task_name"], "fork-worker", "{st}");
    assert!(
        st["stop"]["location"]
            .as_str()
            .unwrap()
            .starts_with("spawn_task"),
        "{st}"
    );
    k.ok(&format!("delete break {wid}"), "message");

    // watch -r, set while the kernel runs: sys_open reads NEXT_FD. The
    // shell must not read a read-watched location itself (the stub's read
    // would hit the debug register and kill the kernel).
    k.ok("continue", "running");
    let w = k.ok("watch -r NEXT_FD", "breakpoint");
    assert_eq!(w["breakpoint"]["kind"], "read-watchpoint", "{w}");
    let rid = w["breakpoint"]["id"].as_u64().unwrap();
    let m = k.mark();
    let st = k.wait_stop(m);
    assert!(
        st["stop"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("rwatchpoint hit"),
        "{st}"
    );
    assert_eq!(st["stop"]["task_name"], "open-worker", "{st}");
    let r = k.ok("regs", "regs");
    assert_eq!(r["regs"]["rip"], st["stop"]["rip"], "{r}");
    // The user may read the read-watched location: the stub masks its debug
    // registers for its own accesses (this used to kill the kernel).
    let x = k.ok("x/1gx NEXT_FD", "memory");
    assert_eq!(x["rows"][0]["values"].as_array().unwrap().len(), 1, "{x}");
    k.ok("regs", "regs");
    k.ok(&format!("delete break {rid}"), "message");

    // hbreak on the call to spawn_task, then nexti steps over the call.
    let d = k.ok("disas fork_worker 400", "disas");
    let call = items(&d, "lines")
        .iter()
        .find(|l| {
            let t = l["text"].as_str().unwrap();
            t.starts_with("call") && t.contains("spawn_task")
        })
        .unwrap_or_else(|| panic!("no call to spawn_task in fork_worker: {d}"))
        .clone();
    let call_addr = call["addr"].as_u64().unwrap();
    let h = k.ok(&format!("hbreak {call_addr:#x}"), "breakpoint");
    assert_eq!(h["breakpoint"]["kind"], "hw-breakpoint", "{h}");
    let hid = h["breakpoint"]["id"].as_u64().unwrap();
    let m = k.mark();
    k.ok("continue", "running");
    let st = k.wait_stop(m);
    assert_eq!(st["stop"]["rip"], call_addr, "{st}");
    assert_eq!(st["stop"]["reason"], "hardware breakpoint", "{st}");
    k.ok(&format!("delete break {hid}"), "message");
    let n = k.ok("nexti", "stopped");
    assert_eq!(
        n["stop"]["rip"],
        call_addr + call["len"].as_u64().unwrap(),
        "nexti did not step over the call: {n}"
    );
    assert_eq!(n["stop"]["reason"], "step", "{n}");
    assert_eq!(n["stop"]["task_name"], "fork-worker", "{n}");

    // disas -s: source lines interleaved.
    let d = k.ok("disas -s spawn_task 8", "disas");
    let lines = items(&d, "lines");
    assert_eq!(lines.len(), 8, "{d}");
    assert!(
        lines.iter().any(|l| l["source"]
            .as_str()
            .is_some_and(|s| s.contains("workloads/mod.rs"))),
        "no source lines: {d}"
    );
    let plain = k.ok("disas spawn_task 8", "disas");
    assert!(
        items(&plain, "lines")
            .iter()
            .all(|l| l.get("source").is_none()),
        "source lines without -s: {plain}"
    );

    // info sym ADDR, info line FUNC.
    let s = k.ok(&format!("info sym {:#x}", spawn + 1), "symbol");
    assert_eq!(s["symbol"], "spawn_task+0x1", "{s}");
    let l = k.ok("info line spawn_task", "lines");
    assert!(
        l["location"]
            .as_str()
            .unwrap()
            .contains("workloads/mod.rs:"),
        "{l}"
    );
    let addrs = items(&l, "addrs");
    assert!(!addrs.is_empty(), "{l}");
    assert!(
        addrs.iter().any(|a| a[0] == spawn),
        "info line spawn_task does not include the function's entry: {l}"
    );

    // file:line: a line of a function inlined into several callers lists
    // every copy (info line) and sets a breakpoint at each (break); a line
    // of math_worker's loop resolves, and the breakpoint there is hit.
    let sum_line = line_of("kernel/src/workloads/mod.rs", "let ret = sum8(a, b");
    let loop_line = line_of("kernel/src/workloads/mod.rs", "call_sum8(i, i + 1");
    let l = k.ok(
        &format!("info line kernel/src/workloads/mod.rs:{sum_line}"),
        "lines",
    );
    let copies = items(&l, "addrs").len();
    assert!(copies >= 2, "one location for an inlined line: {l}");
    assert!(
        l["location"]
            .as_str()
            .unwrap()
            .ends_with(&format!("kernel/src/workloads/mod.rs:{sum_line}")),
        "{l}"
    );
    let b = k.ok(
        &format!("break kernel/src/workloads/mod.rs:{sum_line}"),
        "breakpoints",
    );
    let ids: Vec<String> = items(&b, "breakpoints")
        .iter()
        .map(|b| b["id"].to_string())
        .collect();
    // Every location `break` set is one `info line` lists; copies inlined
    // into the debugger's own no-probe code (core's closure shims in the
    // selftests) are refused by the stub and left out, the worker's is set.
    let listed = l.to_string();
    for bp in items(&b, "breakpoints") {
        let addr = bp["addr"].as_u64().expect("addr");
        assert!(
            listed.contains(&format!("[{addr},")),
            "break set {addr:#x}, info line does not list it: {b} {l}"
        );
    }
    assert!(
        ids.len() <= copies && b.to_string().contains("math_worker"),
        "break and info line disagree: {b} {l}"
    );
    k.ok(&format!("delete break {}", ids.join(" ")), "message");
    let b = k.ok(
        &format!("break kernel/src/workloads/mod.rs:{loop_line}"),
        "breakpoint",
    );
    let at = b["breakpoint"]["addr"].as_u64().unwrap();
    let m = k.mark();
    k.ok("continue", "running");
    let st = k.wait_stop(m);
    assert_eq!(st["stop"]["rip"], at, "{st}");
    let bt = k.ok("bt", "backtrace");
    assert!(
        bt["frames"][0]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("workloads/mod.rs:{loop_line}"))),
        "bt and break disagree on the line: {bt}"
    );
    k.ok(
        &format!("delete break {}", b["breakpoint"]["id"]),
        "message",
    );

    // ptype of a struct and of a struct parameter.
    let p = k.ok("ptype TaskRegs", "ptype");
    let text = p["text"].as_str().unwrap();
    for f in ["ip", "sp", "flags"] {
        assert!(text.contains(f), "field {f} missing: {text}");
    }
    assert!(text.contains("24"), "size 24 missing: {text}");
    let p = k.ok("ptype handle_request:req", "ptype");
    let text = p["text"].as_str().unwrap();
    assert!(
        text.contains("Request") && text.contains("inner") && text.contains("name"),
        "{text}"
    );

    // threads, thread N, bt of that task.
    let th = k.ok("threads", "threads");
    let rows = items(&th, "threads");
    let open = rows
        .iter()
        .find(|t| t["name"] == "open-worker")
        .unwrap_or_else(|| panic!("no open-worker: {th}"));
    let open_id = open["id"].as_u64().unwrap();
    assert_eq!(open["current"], false, "{th}");
    k.ok(&format!("thread {open_id}"), "message");
    let th = k.ok("threads", "threads");
    let sel: Vec<&Value> = items(&th, "threads")
        .iter()
        .filter(|t| t["selected"] == true)
        .collect();
    assert_eq!(sel.len(), 1, "{th}");
    assert_eq!(sel[0]["id"], open_id, "{th}");
    let bt = k.ok("bt", "backtrace");
    assert!(
        bt_has(&bt, "open_worker"),
        "bt of open-worker does not show open_worker: {bt}"
    );
    // A task that does not exist is refused and the selection stays.
    k.refused("thread 9999", &["no task 9999"]);
    let bt = k.ok("bt", "backtrace");
    assert!(bt_has(&bt, "open_worker"), "{bt}");

    // Resuming drops the selection: after the next stop, regs are the
    // stopped task's.
    k.ok("continue", "running");
    let i = k.ok("interrupt", "stopped");
    let th = k.ok("threads", "threads");
    assert!(
        items(&th, "threads").iter().all(|t| t["selected"] == false),
        "{th}"
    );
    let r = k.ok("regs", "regs");
    assert_eq!(r["regs"]["rip"], i["stop"]["rip"], "{r} {i}");

    k.ok("continue", "running");
    // --keep-going ran past the failures above, and exits 1 for them.
    assert_eq!(k.finish().code(), Some(1));
}

#[test]
fn event_filters_and_kprobe_on_a_source_line() {
    let vm = boot();
    let mut k = Kdbg::start(&vm, &["--keep-going"]);
    let line = line_of("kernel/src/workloads/mod.rs", "next_id!(NEXT_FD)");
    let kp = k.ok(
        &format!("kprobe kernel/src/workloads/mod.rs:{line}"),
        "probe_set",
    );
    let kid = kp["probe"]["id"].as_u64().unwrap();
    // The line may have no code of its own (the atomics are inlined from core): the
    // probe goes where `info line` says, and names that line.
    let il = k.ok(
        &format!("info line kernel/src/workloads/mod.rs:{line}"),
        "lines",
    );
    let il_loc = il["location"].as_str().unwrap();
    assert!(il_loc.contains("workloads/mod.rs:"), "{il}");
    let first = items(&il, "addrs")
        .iter()
        .filter_map(|a| a[0].as_u64())
        .min()
        .unwrap_or_else(|| panic!("{il}"));
    assert_eq!(kp["probe"]["addr"], first, "{kp} {il}");
    let loc = kp["probe"]["location"].as_str().unwrap();
    assert!(
        loc.starts_with(&format!("{il_loc} (sys_open+0x")),
        "{kp} {il}"
    );
    let j = k.ok("jprobe spawn_task", "probe_set");
    let jid = j["probe"]["id"].as_u64().unwrap();
    k.ok("wait events 30 timeout 60", "waited");

    // events probe=ID: only that probe's events.
    let e = k.ok(&format!("events 50 probe={kid}"), "events");
    let evs = items(&e, "events");
    assert!(!evs.is_empty(), "no events of the file:line kprobe: {e}");
    for ev in evs {
        assert_eq!(ev["probe"], kid, "{ev}");
        assert_eq!(ev["kind"], "kprobe", "{ev}");
        assert_eq!(ev["task_name"], "open-worker", "{ev}");
        assert_eq!(ev["addr"], kp["probe"]["addr"], "{ev}");
        assert!(
            ev["function"].as_str().unwrap().contains("(sys_open+0x"),
            "{ev}"
        );
    }
    // events task=NAME: only that task's events.
    let e = k.ok("events 50 task=fork-worker", "events");
    let evs = items(&e, "events");
    assert!(!evs.is_empty(), "{e}");
    for ev in evs {
        assert_eq!(ev["task_name"], "fork-worker", "{ev}");
        assert_eq!(ev["probe"], jid, "{ev}");
    }
    // filter: applies to `events` until `filter off`.
    k.ok(&format!("filter probe={jid}"), "message");
    let e = k.ok("events 50", "events");
    assert_eq!(e["filter"]["probe"], jid, "{e}");
    let evs = items(&e, "events");
    assert!(!evs.is_empty(), "{e}");
    assert!(evs.iter().all(|ev| ev["probe"] == jid), "{e}");
    k.ok("filter off", "message");
    let e = k.ok("events 50", "events");
    let evs = items(&e, "events");
    assert!(evs.iter().any(|ev| ev["probe"] == jid), "{e}");
    assert!(evs.iter().any(|ev| ev["probe"] == kid), "{e}");
    k.refused("kprobe kernel/src/workloads/mod.rs:999999", &["999999"]);
    assert_eq!(k.finish().code(), Some(1));
}

#[test]
fn kdbg_starts_qemu_itself_with_kernel() {
    let dir = std::env::temp_dir().join(format!("kdbg-t1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script.kdbg");
    let console = dir.join("console.log");
    std::fs::write(
        &script,
        "kretprobe sys_open\nwait events 3 timeout 60\nprobes\n",
    )
    .unwrap();
    let mut child = Command::new(tests::kdbg_path())
        .arg("--kernel")
        .arg(tests::kernel_path())
        .arg("--console")
        .arg(&console)
        .args(["--json", "--timeout", "30", "--batch"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kdbg");
    let console_arg = console.to_string_lossy().into_owned();
    let mut saw_qemu = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        saw_qemu |= process_with_arg(&console_arg).is_some();
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kdbg --kernel did not finish its batch in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let objs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let opens = objs
        .iter()
        .filter(|v| v["type"] == "event" && v["function"] == "sys_open")
        .count();
    assert!(opens >= 3, "{stdout}");
    let probes = objs
        .iter()
        .find(|v| v["type"] == "probes")
        .unwrap_or_else(|| panic!("no probes result: {stdout}"));
    assert!(
        probes["probes"][0]["hits"].as_u64().unwrap() >= 3,
        "{probes}"
    );
    // kdbg wrote the console of the QEMU it started.
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(text.contains("workload tasks started"), "console:\n{text}");
    // ... and killed it when it left: no process still names that console.
    assert!(saw_qemu, "no QEMU with the console {console_arg} was seen");
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(pid) = process_with_arg(&console_arg) {
        assert!(
            Instant::now() < deadline,
            "QEMU (pid {pid}) still runs after kdbg --kernel exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A live process whose command line has an argument containing `needle`.
fn process_with_arg(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        (!zombie
            && cmdline
                .split(|b| *b == 0)
                .any(|a| String::from_utf8_lossy(a).contains(needle)))
        .then_some(pid)
    })
}
