//! Source stepping with the kernel's tasks and timer running: a `next` over
//! a call that sleeps (the scheduler switches to other tasks inside it)
//! ends in the task that started it; 100 `next`s in a row never stop in the
//! interrupt path; Ctrl-C during a `next` whose task sleeps says so (the
//! task, its state, the line it was at, where the CPU stopped) and leaves
//! no breakpoint behind; `step`/`next`/`until` where the pc has no line
//! information are one clear error each; the JSON result of every step
//! carries file, line, function and frame.

use std::time::Duration;

use serde_json::Value;
use tests::Qemu;
use tests::kdbg::KdbgJson;

const BOOT: Duration = Duration::from_secs(60);

fn boot() -> Qemu {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot the reference kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm
}

/// Stops at `loc` (then deletes the breakpoint); returns the stop notice.
fn stop_at(k: &mut KdbgJson, loc: &str) -> Value {
    let b = k.ok(&format!("break {loc}"), "breakpoint");
    let id = b["breakpoint"]["id"].as_u64().expect("breakpoint id");
    let mark = k.mark();
    let stop = k.wait_stop(mark);
    k.ok(&format!("delete break {id}"), "message");
    stop
}

/// The JSON of a step names where it stopped: file, line, function, frame.
fn assert_located(v: &Value) {
    let step = &v["step"];
    assert!(
        step["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("kernel/src/workloads/mod.rs")),
        "{v}"
    );
    assert!(step["line"].as_u64().is_some_and(|l| l > 0), "{v}");
    assert!(
        step["function"].as_str().is_some_and(|f| !f.is_empty()),
        "{v}"
    );
    assert!(step["frame"].as_u64().is_some_and(|f| f > 0), "{v}");
}

#[test]
fn next_over_a_sleep_stays_in_the_task_and_never_stops_in_an_interrupt() {
    let vm = boot();
    let mut k = KdbgJson::start(&vm, &["--timeout", "60"]);
    k.run("live off");
    // fork_worker's `crate::sched::sleep_ticks(1);`: the task blocks for a
    // tick and the other workers run meanwhile.
    let stop = stop_at(&mut k, "kernel/src/workloads/mod.rs:454");
    let task = stop["stop"]["task"].clone();
    assert_eq!(stop["stop"]["task_name"], "fork-worker", "{stop}");
    let v = k.ok("next", "stepped");
    assert_eq!(
        v["stop"]["task"], task,
        "the next ended in another task: {v}"
    );
    assert_located(&v);
    assert_ne!(v["step"]["line"], 454, "{v}");
    assert_eq!(
        v["step"]["function"], "kernel::workloads::fork_worker",
        "{v}"
    );
    // 100 lines of the worker's loop, over the sleep and the spawn_task
    // calls, with the timer interrupting all along: every stop is a line of
    // fork_worker (or code inlined into it) in the same task, never the
    // interrupt entry, the timer or the scheduler.
    let mut lines = std::collections::BTreeSet::new();
    for i in 0..100 {
        let v = k.ok("next", "stepped");
        assert_eq!(
            v["stop"]["task"], task,
            "next {i} ended in another task: {v}"
        );
        assert_located(&v);
        let loc = v["stop"]["location"].as_str().unwrap_or_default();
        assert!(
            loc.starts_with("kernel::workloads::fork_worker"),
            "next {i} stopped outside the worker: {v}"
        );
        lines.insert(v["step"]["line"].as_u64().unwrap_or(0));
    }
    // The loop went round (the sleep's line and the loop head were seen).
    assert!(lines.contains(&454) && lines.contains(&440), "{lines:?}");
    k.run("continue");
    k.finish();
}

/// The CPU `threads` says task `task` runs on (it is the stopped one).
fn cpu_of(k: &mut KdbgJson, task: &Value) -> Option<u64> {
    let th = k.ok("threads", "threads");
    tests::kdbg::items(&th, "threads")
        .iter()
        .find(|t| t["id"] == *task)
        .and_then(|t| t["cpu"].as_u64())
}

#[test]
fn at_two_vcpus_next_over_a_sleep_ends_in_the_same_task() {
    let vm = Qemu::boot_serving_with("", |c| c.smp = 2);
    let mut k = KdbgJson::start(&vm, &["--timeout", "60"]);
    k.run("live off");
    // fork_worker's `crate::sched::sleep_ticks(1);`: the worker sleeps a
    // tick and wakes on whichever CPU picks it; the other CPU runs the
    // other workers all along.
    let b = k.ok("break kernel/src/workloads/mod.rs:454", "breakpoint");
    let id = b["breakpoint"]["id"].as_u64().expect("breakpoint id");
    let mark = k.mark();
    let stop = k.wait_stop(mark);
    let task = stop["stop"]["task"].clone();
    assert_eq!(stop["stop"]["task_name"], "fork-worker", "{stop}");
    // Until the worker has woken on another CPU than it slept on a few
    // times (most wakes are on CPU 0, which takes the PIT's ticks).
    let mut moves = 0;
    let mut i = 0;
    while moves < 3 && i < 100 {
        i += 1;
        let before = cpu_of(&mut k, &task);
        let v = k.ok("next", "stepped");
        assert_eq!(
            v["stop"]["task"], task,
            "next {i} ended in another task: {v}"
        );
        assert_located(&v);
        assert_eq!(
            v["step"]["function"], "kernel::workloads::fork_worker",
            "{v}"
        );
        assert_ne!(v["step"]["line"], 454, "{v}");
        let after = cpu_of(&mut k, &task);
        if before.is_some() && after.is_some() && before != after {
            moves += 1;
        }
        // Round the loop to the sleep again.
        k.ok("continue", "running");
        let mark = k.mark();
        let stop = k.wait_stop(mark);
        assert_eq!(stop["stop"]["task"], task, "{stop}");
    }
    assert!(
        moves > 0,
        "in {i} nexts over the sleep the worker never woke on another CPU"
    );
    k.ok(&format!("delete break {id}"), "message");
    k.run("continue");
    k.finish();
}

#[test]
fn ctrl_c_during_a_next_over_a_sleep_says_the_task_sleeps() {
    let vm = boot();
    let mut k = KdbgJson::start(&vm, &["--timeout", "60", "--keep-going"]);
    k.run("live off");
    // serve's loop in the main task: `sched::sleep_ticks(timer::HZ);`
    // sleeps a second; the worker tasks and idle run meanwhile.
    let stop = stop_at(&mut k, "kernel/src/serve.rs:30");
    let task = stop["stop"]["task"].clone();
    assert_eq!(stop["stop"]["task_name"], "main", "{stop}");
    // Ctrl-C (SIGINT) while the next runs over the sleep.
    let v = k.interrupt_during("next", Duration::from_millis(600));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["type"], "stepped", "{v}");
    assert_eq!(v["stop"]["reason"], "interrupted", "{v}");
    let i = &v["step"]["interrupted"];
    assert_eq!(i["task"], task, "{v}");
    assert_eq!(i["task_name"], "main", "{v}");
    assert_eq!(i["task_state"], "sleeping", "{v}");
    assert_eq!(i["line"], 30, "{v}");
    assert!(
        i["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("kernel/src/serve.rs")),
        "{v}"
    );
    assert_eq!(i["function"], "kernel::serve::run", "{v}");
    // The CPU stopped in another task (the step's one is asleep), and the
    // result says where.
    assert_ne!(v["stop"]["task"], task, "{v}");
    assert!(v["stop"]["task_name"].is_string(), "{v}");
    assert!(v["stop"]["rip"].as_u64().is_some_and(|r| r > 0), "{v}");
    // The kernel is stopped there: registers read.
    k.ok("regs", "regs");
    // The step's breakpoint at the sleep's return is gone: the main task
    // wakes within the second and nothing stops the kernel.
    k.ok("continue", "running");
    k.refused("wait stop timeout 2.5", &["timed out", "still running"]);
    k.ok("interrupt", "stopped");
    k.run("continue");
    k.finish();
}

#[test]
fn no_line_information_is_one_clear_error() {
    let vm = boot();
    let mut k = KdbgJson::start(&vm, &["--timeout", "60", "--keep-going"]);
    k.run("live off");
    // An asm workload: no line-table rows cover it.
    stop_at(&mut k, "insn_rip_store");
    for c in ["step", "next", "until"] {
        k.refused(c, &["no line information at", "insn_rip_store", "stepi"]);
    }
    // stepi still works there, and finish returns to the caller's lines.
    k.ok("stepi", "stopped");
    let v = k.ok("finish", "stepped");
    assert_eq!(
        v["step"]["function"], "kernel::workloads::call_insn_all",
        "{v}"
    );
    assert_located(&v);
    k.run("continue");
    k.finish();
}
