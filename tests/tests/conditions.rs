//! Conditional breakpoints evaluated inside the kernel: stock gdb's
//! target-side conditions (agent expressions in `Z0;X`), and kdbg's shell
//! (`break LOC if EXPR`, `condition`, `ignore`) over its own bytecode.

use std::time::Duration;

use tests::Qemu;
use tests::kdbg::arg;

const BOOT: Duration = Duration::from_secs(60);

fn boot_serving(append: &str) -> Qemu {
    let mut vm = Qemu::boot(append).expect("boot the reference kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm
}

/// Runs `gdb -batch` with `cmds` after attaching; returns stdout + stderr.
fn gdb(vm: &mut Qemu, cmds: &[&str]) -> String {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    tests::gdb::batch_within(&kernel, addr, &[], cmds, Duration::from_secs(180))
}

/// The largest `key=N` value of the `cond` rows in `text`.
fn cond_field(text: &str, key: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("cond addr="))
        .map(|line| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key}= in {line}"))
        })
        .max()
        .unwrap_or_else(|| panic!("no cond row in:\n{text}"))
}

#[test]
fn gdb_target_side_condition_stops_only_when_true() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "set breakpoint condition-evaluation target",
            "break fib if n == 5",
            "continue",
            "echo @@STOP1\\n",
            "p n",
            "monitor conds",
            "continue",
            "echo @@STOP2\\n",
            "p n",
            "continue",
            "echo @@STOP3\\n",
            "p n",
            "monitor conds",
            "delete",
            "detach",
        ],
    );
    let stops: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("$") && l.contains(" = "))
        .collect();
    assert_eq!(stops.len(), 3, "three stops printed n:\n{out}");
    for s in &stops {
        assert!(s.ends_with("= 5"), "stopped only with n == 5: {s}\n{out}");
    }
    // The kernel evaluated false hits itself: the counter of the breakpoint
    // (since gdb last inserted it) shows hits with n != 5 that never
    // reached gdb.
    assert!(
        cond_field(&out, "false") > 0,
        "false hits counted in the kernel:\n{out}"
    );
    assert!(out.contains("detached"), "{out}");
    vm.assert_still_running(Duration::from_millis(300));
}

type Kdbg = tests::kdbg::KdbgJson;

/// The in-kernel counters of breakpoint 1 from `info breakpoints`.
fn counts(k: &mut Kdbg) -> serde_json::Value {
    let v = k.ok("info breakpoints", "breakpoints");
    v["breakpoints"][0]["counts"].clone()
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Stops that reached the host: every trap minus those the kernel resumed.
fn stops(c: &serde_json::Value) -> u64 {
    n(c, "hits") - n(c, "false_hits") - n(c, "faults") - n(c, "ignored")
}

/// Waits for a stop and checks it is in fib with n == 5 (`info args`).
fn stop_with_n_5(k: &mut Kdbg, mark: usize) {
    let stop = k.wait_stop(mark);
    assert_eq!(stop["stop"]["location"], "fib", "{stop}");
    let args = k.ok("info args", "args");
    assert_eq!(args["args"][0]["name"], "n", "{args}");
    assert_eq!(
        args["args"][0]["value"], 5,
        "stopped only with n == 5: {args}"
    );
}

#[test]
fn shell_break_if_condition_and_ignore_run_in_the_kernel() {
    let vm = boot_serving("serve kdbg.quiet");
    let mut k = Kdbg::start(&vm, &["--keep-going"]);
    let b = k.ok("break fib if n == 5", "breakpoint");
    assert_eq!(b["breakpoint"]["condition"], "n == 5", "{b}");
    // Several stops, each with n == 5.
    for i in 0..3 {
        let mark = k.mark();
        if i > 0 {
            k.ok("continue", "running");
        }
        stop_with_n_5(&mut k, mark);
    }
    let c = counts(&mut k);
    assert_eq!(stops(&c), 3, "three stops reached the host: {c}");
    assert!(
        n(&c, "false_hits") > 0,
        "fib ran with other n in between, decided in the kernel: {c}"
    );

    // ignore 1 3: exactly three true hits skipped, the fourth stops.
    let m = k.ok("ignore 1 3", "message");
    assert!(m["text"].as_str().unwrap().contains("ignore next 3"), "{m}");
    let mark = k.mark();
    k.ok("continue", "running");
    stop_with_n_5(&mut k, mark);
    let c = counts(&mut k);
    assert_eq!(n(&c, "ignored"), 3, "{c}");
    assert_eq!(n(&c, "ignore"), 0, "{c}");
    assert_eq!(stops(&c), 4, "{c}");

    // A condition that faults: counted, never stops; the kernel runs on
    // (the workload keeps hitting the breakpoint).
    k.ok("condition 1 *(u64 *)0x10 == 3", "message");
    let mark = k.mark();
    k.ok("continue", "running");
    std::thread::sleep(Duration::from_millis(500));
    let before = n(&counts(&mut k), "faults");
    std::thread::sleep(Duration::from_millis(1500));
    let c = counts(&mut k);
    assert!(before > 0, "faults counted: {c}");
    assert!(
        n(&c, "faults") > before,
        "the kernel keeps running and faulting hits keep counting: {c}"
    );
    assert_eq!(stops(&c), 4, "a faulting condition never stops: {c}");
    assert!(
        !k.seen[mark..].iter().any(|v| v["type"] == "stopped"),
        "no stop reached the host"
    );

    // Bad input: one clear error each; the breakpoint keeps its condition.
    let big = (0..30)
        .map(|i| format!("n == {}", 1000 + i))
        .collect::<Vec<_>>()
        .join(" || ");
    for (line, want) in [
        ("condition 1 n ==", "expected"),
        ("condition 1 nosuch == 1", "no symbol 'nosuch'"),
        ("condition 1 n = 5", "cannot assign"),
        (&format!("condition 1 {big}"), "too large"),
        ("condition 1 *n == 1", "cannot dereference"),
        ("condition 9 n == 1", "no breakpoint 9"),
        ("ignore 1 lots", "number"),
        ("break sum8 if", "usage"),
    ] {
        let v = k.run(line);
        assert_eq!(v["ok"], false, "`{line}` must fail: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(want), "`{line}`: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    let v = k.ok("info breakpoints", "breakpoints");
    assert_eq!(v["breakpoints"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["breakpoints"][0]["condition"], "*(u64 *)0x10 == 3", "{v}");

    // Removing the breakpoint ends its condition in the kernel too.
    k.ok("delete break 1", "message");
    let v = k.ok("monitor conds", "monitor");
    assert!(!format!("{v}").contains("cond addr="), "{v}");
    k.finish();
    let mut vm = vm;
    vm.assert_still_running(Duration::from_millis(300));
}

#[test]
fn kretprobe_predicate_records_only_failing_opens() {
    let vm = boot_serving("serve kdbg.quiet kdbg.truth");
    let mut k = Kdbg::start(&vm, &["--keep-going"]);
    let set = k.ok("kretprobe sys_open if ret < 0", "probe_set");
    let id = set["probe"]["id"].as_u64().expect("probe id");
    k.ok("wait events 8 timeout 60", "waited");
    // End the window: nothing runs while the kernel is stopped, and every
    // event recorded before the stop reaches the host before the stop.
    k.ok("interrupt", "stopped");
    let probes = k.ok("probes", "probes");
    let row = probes["probes"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == id))
        .cloned()
        .expect("probe listed");
    let hits = n(&row, "hits");
    let filtered = n(&row, "filtered");
    assert_eq!(n(&row, "faults"), 0, "{row}");
    let ring = k.ok("events 0", "events");
    let events: Vec<serde_json::Value> = k.events(id).into_iter().cloned().collect();
    assert_eq!(ring["ring"]["dropped"], 0, "{ring}");
    // Only failing opens, each one a real call of the ground truth.
    let all = vm.truth("sys_open");
    for ev in &events {
        let ret = ev["ret"]["value"].as_i64().expect("signed ret");
        assert!(ret < 0, "the predicate let a successful open through: {ev}");
        let path = arg(ev, "path").as_str().expect("path").to_string();
        assert!(
            all.iter().any(
                |t| t["path"].ends_with(&format!(":\"{path}\"")) && t["ret"] == ret.to_string()
            ),
            "not in the ground truth: {ev}"
        );
    }
    // Every return in the window was counted: recorded or filtered.
    assert_eq!(
        events.len() as u64 + filtered,
        hits,
        "hits = recorded + predicate-false: {row}"
    );
    assert!(filtered > 0, "successful opens were filtered: {row}");
    // The window's calls are the last `hits` sys_open lines of the truth
    // (the last one may be logged just after the stop: one call of slack).
    let window = &all[all.len().saturating_sub(hits as usize)..];
    let failing = window.iter().filter(|t| t["ret"].starts_with('-')).count() as i64;
    assert!(
        (failing - events.len() as i64).abs() <= 1,
        "{} events, {failing} failing calls in the truth's last {hits}",
        events.len()
    );
    // Bad predicates: one clear error each, nothing set.
    for (line, want) in [
        ("kretprobe sys_open if", "expression must follow"),
        ("kretprobe sys_open if nosuch < 0", "no symbol 'nosuch'"),
        ("jprobe sys_open if $duration > 5", "only in return probes"),
        ("kprobe fib if n = 1", "cannot assign"),
    ] {
        let v = k.run(line);
        assert_eq!(v["ok"], false, "`{line}` must fail: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(want), "`{line}`: {e}");
    }
    let probes = k.ok("probes", "probes");
    assert_eq!(
        probes["probes"].as_array().map(Vec::len),
        Some(1),
        "{probes}"
    );
    k.ok("continue", "running");
    k.finish();
}

/// A condition with a string literal reaches the compiler as typed (the
/// shell keeps the quotes) and is decided in the kernel by the bounded
/// string compare: only opens of /etc/passwd stop.
#[test]
fn shell_break_if_string_compare_keeps_its_quotes() {
    let vm = boot_serving("serve kdbg.quiet");
    let mut k = Kdbg::start(&vm, &["--keep-going"]);
    let b = k.ok(r#"break sys_open if path == "/etc/passwd""#, "breakpoint");
    assert_eq!(
        b["breakpoint"]["condition"], r#"path == "/etc/passwd""#,
        "{b}"
    );
    for i in 0..2 {
        let mark = k.mark();
        if i > 0 {
            k.ok("continue", "running");
        }
        let stop = k.wait_stop(mark);
        assert_eq!(stop["stop"]["location"], "sys_open", "{stop}");
        let v = k.ok("print $str(path)", "value");
        assert_eq!(v["value"]["text"], r#""/etc/passwd""#, "{v}");
    }
    let c = counts(&mut k);
    assert!(
        n(&c, "false_hits") > 0,
        "other paths were opened in between, decided in the kernel: {c}"
    );
    k.ok("delete break 1", "message");
    k.ok("continue", "running");
    let _ = k.finish();
}
