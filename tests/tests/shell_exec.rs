//! Execution control and state from the kdbg shell in `--json` batch mode
//! against the reference kernel: break, the stop notice, bt, regs, info
//! args, stepi, x, disas with marks, delete break, continue.

use tests::Qemu;
use tests::kdbg::KdbgJson;
use tests::kdbg::items;

#[test]
fn break_then_bt_regs_args_stepi_and_continue() {
    let vm = Qemu::boot_serving("");
    let mut k = KdbgJson::start(&vm, &[]);
    let b = k.ok("break spawn_task", "breakpoint");
    let addr = b["breakpoint"]["addr"].as_u64().unwrap();
    // The stop notice arrives on its own; `wait stop` waits for it.
    let stop = k.wait_stop(0);
    assert_eq!(stop["stop"]["rip"], addr, "{stop}");
    assert_eq!(stop["stop"]["location"], "spawn_task", "{stop}");
    assert_eq!(stop["stop"]["task_name"], "fork-worker", "{stop}");

    let bt = k.ok("bt", "backtrace");
    let frames = items(&bt, "frames");
    assert_eq!(frames[0]["function"], "spawn_task", "{bt}");
    assert!(
        frames
            .iter()
            .any(|f| f["function"].as_str().unwrap().contains("fork_worker")),
        "{bt}"
    );

    let regs = k.ok("regs", "regs");
    assert_eq!(regs["regs"]["rip"], addr, "{regs}");
    assert!(items(&regs, "flags").contains(&"IF".into()), "{regs}");
    let rdi = regs["regs"]["gpr"][5].as_u64().unwrap();

    let args = k.ok("info args", "args");
    let a = items(&args, "args");
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
    // Values are JSON numbers (SCHEMA.md); the text form beside them, as
    // `print` shows the value (a u64 in decimal).
    assert_eq!(a[0]["value"], rdi, "{args}");
    assert_eq!(a[0]["text"], rdi.to_string(), "{args}");

    let d = k.ok("disas spawn_task 3", "disas");
    let lines = items(&d, "lines");
    assert_eq!(lines.len(), 3, "{d}");
    let marks = lines[0]["marks"].as_array().unwrap();
    assert!(
        marks.contains(&"=>".into()) && marks.contains(&"B1".into()),
        "{d}"
    );

    let s = k.ok("stepi", "stopped");
    assert_eq!(s["stop"]["reason"], "step", "{s}");
    assert_eq!(s["stop"]["rip"], lines[1]["addr"], "{s}");

    let m = k.ok("x/2gx $rsp", "memory");
    assert_eq!(m["rows"][0]["values"].as_array().unwrap().len(), 2, "{m}");

    k.ok("delete break 1", "message");
    k.ok("continue", "running");
    k.ok("probes", "probes");
    assert!(k.finish().success());
}
