//! Execution control and state from the kdbg shell in `--json` batch mode
//! against the reference kernel: break, the stop notice, bt, regs, info
//! args, stepi, x, disas with marks, delete break, continue.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::Qemu;

#[test]
fn break_then_bt_regs_args_stepi_and_continue() {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("workload tasks started", Duration::from_secs(60))
        .expect("kernel serving");
    let mut child = Command::new(tests::kdbg_path())
        .args(["--connect", &vm.stub_connect_arg(), "--symbols"])
        .arg(tests::kernel_path())
        .args(["--json", "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run kdbg");
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let v: Value =
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut run = |line: &str, kind: &str| -> Value {
        writeln!(stdin, "{line}").unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{kind}` answer to `{line}`"));
            if v["type"] == kind || (v["type"] == "error" && v["command"] != "stop") {
                assert_eq!(v["type"], kind, "`{line}`: {v}");
                return v;
            }
        }
    };

    let b = run("break spawn_task", "breakpoint");
    let addr = b["breakpoint"]["addr"].as_u64().unwrap();
    // The stop notice arrives on its own; `wait stop` waits for it.
    let stop = run("wait stop timeout 30", "stopped");
    assert_eq!(stop["stop"]["rip"], addr, "{stop}");
    assert_eq!(stop["stop"]["location"], "spawn_task", "{stop}");
    assert_eq!(stop["stop"]["task_name"], "fork-worker", "{stop}");

    let bt = run("bt", "backtrace");
    let frames = bt["frames"].as_array().unwrap();
    assert_eq!(frames[0]["function"], "spawn_task", "{bt}");
    assert!(
        frames
            .iter()
            .any(|f| f["function"].as_str().unwrap().contains("fork_worker")),
        "{bt}"
    );

    let regs = run("regs", "regs");
    assert_eq!(regs["regs"]["rip"], addr, "{regs}");
    assert!(
        regs["flags"].as_array().unwrap().contains(&"IF".into()),
        "{regs}"
    );
    let rdi = regs["regs"]["gpr"][5].as_u64().unwrap();

    let args = run("info args", "args");
    let a = args["args"].as_array().unwrap();
    let names: Vec<&str> = a.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "clone_flags",
            "stack_start",
            "regs",
            "stack_size",
            "parent_tid",
            "child_tid"
        ]
    );
    // Values are JSON numbers (SCHEMA.md); the text form beside them.
    assert_eq!(a[0]["value"], rdi, "{args}");
    assert_eq!(a[0]["text"], format!("{rdi:#x}"), "{args}");

    let d = run("disas spawn_task 3", "disas");
    let lines = d["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{d}");
    let marks = lines[0]["marks"].as_array().unwrap();
    assert!(
        marks.contains(&"=>".into()) && marks.contains(&"B1".into()),
        "{d}"
    );

    let s = run("stepi", "stopped");
    assert_eq!(s["stop"]["reason"], "step", "{s}");
    assert_eq!(s["stop"]["rip"], lines[1]["addr"], "{s}");

    let m = run("x/2gx $rsp", "memory");
    assert_eq!(m["rows"][0]["values"].as_array().unwrap().len(), 2, "{m}");

    run("delete break 1", "message");
    run("continue", "running");
    let p = run("probes", "probes");
    assert_eq!(p["ok"], true);
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
