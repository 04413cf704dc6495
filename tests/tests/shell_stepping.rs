//! Source-level stepping (`step`, `next`, `finish`, `until`, frames) in the
//! kdbg shell against a stock gdb on the same kernel: the scenarios are
//! data (`tests/data/stepping.txt`); the source line after every command
//! must agree. Plus the refusals (`step` while running, `next 0`,
//! `next -1`) and `finish` out of
//! `sys_open` printing the value the kretprobe records.

use std::time::Duration;

use serde_json::Value;
use tests::Qemu;
use tests::kdbg::KdbgJson;

const BOOT: Duration = Duration::from_secs(60);

struct Scenario {
    function: String,
    condition: String,
    commands: Vec<String>,
}

fn scenarios() -> Vec<Scenario> {
    let path = tests::workspace_root().join("tests/data/stepping.txt");
    let text = std::fs::read_to_string(&path).expect("tests/data/stepping.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(parts.len(), 3, "bad scenario line `{l}`");
            Scenario {
                function: parts[0].into(),
                condition: parts[1].into(),
                commands: parts[2].split_whitespace().map(String::from).collect(),
            }
        })
        .collect()
}

fn boot() -> Qemu {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot the reference kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm
}

/// The line kdbg's step result reports.
fn kdbg_line(v: &Value) -> Option<u64> {
    v["step"]["line"].as_u64()
}

/// kdbg: the line after each command of the scenario.
fn run_kdbg(vm: &Qemu, sc: &Scenario) -> Vec<Option<u64>> {
    let mut k = KdbgJson::start(vm, &["--timeout", "60"]);
    k.run("live off");
    let b = k.ok(
        &format!("break {} if {}", sc.function, sc.condition),
        "breakpoint",
    );
    let id = b["breakpoint"]["id"].as_u64().expect("breakpoint id");
    k.ok("wait stop timeout 30", "waited");
    k.ok(&format!("delete break {id}"), "message");
    let mut lines = Vec::new();
    for c in &sc.commands {
        let v = k.ok(c, "stepped");
        lines.push(kdbg_line(&v));
    }
    k.run("continue");
    k.run("quit");
    lines
}

/// gdb: the same sequence, the line after each command.
fn run_gdb(vm: &mut Qemu, sc: &Scenario) -> (Vec<Option<u64>>, String) {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let mut cmds = vec![
        "skip -rfu ^(core|alloc|std)::".to_string(),
        "set breakpoint condition-evaluation host".to_string(),
        // kdbg's `break FUNCTION` is at the entry (gdb's `*FUNCTION`).
        format!("break *{} if {}", sc.function, sc.condition),
        "continue".to_string(),
        "delete".to_string(),
    ];
    for c in &sc.commands {
        cmds.push(c.clone());
        cmds.push("python print('@@LINE', gdb.selected_frame().find_sal().line)".into());
    }
    cmds.push("detach".into());
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let kernel = vm.config().kernel.clone();
    let out = tests::gdb::batch(&kernel, addr, &["set language c"], &refs);
    let lines = out
        .lines()
        .filter_map(|l| l.strip_prefix("@@LINE "))
        .map(|v| v.trim().parse().ok())
        .collect();
    (lines, out)
}

#[test]
fn steps_agree_with_gdb_over_the_scenario_table() {
    let mut vm = boot();
    for sc in scenarios() {
        let ours = run_kdbg(&vm, &sc);
        let (theirs, out) = run_gdb(&mut vm, &sc);
        assert_eq!(
            ours, theirs,
            "{} if {}: {:?}: kdbg's lines differ from gdb's\n{out}",
            sc.function, sc.condition, sc.commands
        );
    }
    vm.assert_still_running(Duration::from_millis(300));
}

#[test]
fn bad_input_is_one_clear_error_and_finish_shows_the_kretprobe_value() {
    let vm = boot();
    let args: Vec<String> = [
        "--connect".to_string(),
        vm.stub_connect_arg(),
        "--symbols".to_string(),
        tests::kernel_path().display().to_string(),
        "--keep-going".to_string(),
        "--timeout".to_string(),
        "60".to_string(),
    ]
    .to_vec();
    let script = "live off\nstep\nkretprobe sys_open\nbreak sys_open\nwait stop timeout 30\ndelete break 1\nnext 0\nnext -1\nfinish\nlive on\nevents\ncontinue\n";
    let out = tests::kdbg::run_batch(&args, script);
    let text = format!("{}{}", out.stdout, out.stderr);
    // One clear error each.
    assert!(text.contains("`step` needs the kernel stopped"), "{text}");
    assert!(text.contains("`next 0` does nothing"), "{text}");
    assert!(text.contains("`-1` is not a count"), "{text}");
    // finish: where it ran out of, the caller's line, the value and type.
    assert!(
        text.contains("Run till exit from #0 sys_open at "),
        "{text}"
    );
    let value: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Value returned: (i64) "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("a returned value:\n{text}"));
    assert!(!text.contains("trampoline"), "{text}");
    // The kretprobe recorded the same value for that return: the last
    // sys_open event before `continue`.
    let events: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("#1 sys_open("))
        .collect();
    let last = events
        .last()
        .unwrap_or_else(|| panic!("kretprobe events:\n{text}"));
    assert!(
        last.contains(&format!(") = {value}")),
        "finish printed {value}, the kretprobe recorded `{last}`:\n{text}"
    );
}
