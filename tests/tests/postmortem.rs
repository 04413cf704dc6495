//! When the kernel dies: each kind of death (panic, #UD, #GP, #PF, #DE,
//! double fault, stack overflow) with nobody attached waits in the stub and
//! says so on the console; attaching kdbg afterwards shows why, selects the
//! dying task, `bt` reaches the culprit, and the kernel never resumes. With
//! gdb attached the death is reported at once with its signal. A death
//! inside the stub's own path falls back to a minimal dump. `dmesg` after a
//! death ends with what the console printed. gdb's spellings (`info
//! registers`, `info threads`, `thread apply`, `break *ADDR`) agree with
//! kdbg's own commands. A kernel another debugger left stopped at a
//! breakpoint stays stopped, with the task that hit it selected.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::kdbg::KdbgJson;
use tests::{KernelExit, Qemu};

const BOOT: Duration = Duration::from_secs(60);
const WAITING: &str = "waiting for a debugger on COM2";

/// Boots a kernel that dies as `kind` says and waits for its death line.
fn boot_dead(kind: &str) -> Qemu {
    let mut vm = Qemu::boot(&format!("serve kdbg.quiet kdbg.crash={kind}")).expect("boot");
    vm.wait_for_console(WAITING, BOOT)
        .unwrap_or_else(|e| panic!("no death line ({e}):\n{}", vm.console()));
    vm
}

/// The summary kdbg printed at attach.
fn attach_summary(k: &KdbgJson) -> Value {
    k.seen
        .iter()
        .find(|v| v["command"] == "attach")
        .cloned()
        .unwrap_or_else(|| panic!("no post-mortem summary at attach: {:?}", k.seen))
}

/// Attaches kdbg, checks the summary and the culprit, that `continue` is
/// refused and that the kernel stays where it died.
fn check_death(kind: &str, console_has: &str, want_kind: &str, signal: u64, culprit: &str) {
    let mut vm = boot_dead(kind);
    let console = vm.console();
    assert!(console.contains(console_has), "{kind}: {console}");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    let why = k.ok("why", "why");
    let pm = attach_summary(&k);
    assert_eq!(pm["type"], "post_mortem", "{pm}");
    let w = &pm["postmortem"]["why"];
    assert_eq!(w["state"], "dead", "{pm}");
    assert_eq!(w["kind"], want_kind, "{pm}");
    assert_eq!(w["signal"], signal, "{pm}");
    assert_eq!(w["task_name"], "crasher", "the dying task: {pm}");
    assert_eq!(why["why"]["task"], w["task"], "{why}");
    let frames = pm["postmortem"]["frames"].as_array().expect("frames");
    assert!(
        frames
            .iter()
            .any(|f| f["function"].as_str().unwrap_or("").contains(culprit)),
        "{kind}: bt does not reach {culprit}: {pm}"
    );
    // The dying task is the selected one: `bt` agrees with the summary.
    let bt = k.ok("bt", "backtrace");
    assert_eq!(bt["frames"][0]["pc"], frames[0]["pc"], "{bt}");
    let c = k.run("continue");
    assert_eq!(c["ok"], false, "a dead kernel resumed: {c}");
    assert!(
        c["error"].as_str().unwrap_or("").contains("cannot resume"),
        "{c}"
    );
    let before = vm.console().len();
    // Exit status 1: the refused `continue` failed, as it should.
    let status = k.finish();
    assert_eq!(status.code(), Some(1), "kdbg: {status:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(vm.try_exit(), None, "the dead kernel went away");
    assert_eq!(
        vm.console().len(),
        before,
        "the kernel ran after the attach:\n{}",
        vm.console()
    );
}

#[test]
fn panic_waits_and_attach_shows_it() {
    check_death(
        "panic",
        "kdbg: kernel died (panic at kernel/src/serve.rs:",
        "panic",
        6,
        "kdbg_crash_panic",
    );
}

#[test]
fn invalid_opcode_waits_and_attach_shows_it() {
    check_death("ud", "#UD invalid opcode", "trap", 4, "kdbg_crash");
}

#[test]
fn general_protection_waits_with_its_error_code() {
    check_death(
        "gp",
        "#GP general protection (error code 0xfff8)",
        "trap",
        11,
        "kdbg_crash_gp",
    );
}

#[test]
fn page_fault_waits_with_cr2() {
    check_death("pf", "#PF page fault at 0x18", "trap", 11, "kdbg_crash_pf");
}

#[test]
fn divide_error_waits_and_attach_shows_it() {
    check_death("de", "#DE divide error", "trap", 8, "kdbg_crash_de");
}

#[test]
fn double_fault_waits_and_attach_shows_it() {
    check_death(
        "df",
        "#DF double fault",
        "double-fault",
        11,
        "kdbg_crash_df",
    );
}

#[test]
fn stack_overflow_into_the_guard_page_waits_and_attach_shows_it() {
    check_death(
        "overflow",
        "kernel stack overflow: task 6 (crasher) hit its guard page",
        "stack-overflow",
        11,
        "kdbg_crash_recurse",
    );
}

#[test]
fn stack_canary_overwritten_waits_and_attach_shows_it() {
    let mut vm = Qemu::boot("serve kdbg.quiet kdbg.crash=stack").expect("boot");
    vm.wait_for_console(WAITING, BOOT).expect("death line");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    let why = k.ok("why", "why");
    assert_eq!(why["why"]["kind"], "stack-overflow", "{why}");
    assert_eq!(why["why"]["task_name"], "stack-smasher", "{why}");
    let bt = k.ok("bt", "backtrace");
    assert!(bt.to_string().contains("smash_stack"), "{bt}");
    k.finish();
}

#[test]
fn gdb_attached_sees_the_panic_with_its_signal_and_why() {
    // kdbg.wait: gdb is attached before the crasher runs.
    let mut vm =
        Qemu::boot("serve kdbg.quiet kdbg.crash=panic kdbg.wait kdbg.ondeath=exit").expect("boot");
    vm.wait_for_console("waiting for a debugger", BOOT)
        .expect("boot wait");
    let out = gdb(
        &mut vm,
        &["continue", "bt", "monitor why", "continue", "kill"],
    );
    assert!(out.contains("SIGABRT"), "gdb sees the panic:\n{out}");
    assert!(
        out.contains("kdbg_crash_panic"),
        "bt reaches the culprit:\n{out}"
    );
    assert!(
        out.contains("why state=dead cause=death kind=panic signal=6"),
        "{out}"
    );
    assert!(
        out.contains("where=kernel/src/serve.rs:"),
        "the panic's location: {out}"
    );
    assert!(
        out.contains("cannot resume; it stays stopped"),
        "continue after the death: {out}"
    );
    assert!(
        vm.console()
            .contains("kdbg: kernel died (panic at kernel/src/serve.rs:"),
        "{}",
        vm.console()
    );
}

#[test]
fn gdb_attached_sees_each_trap_with_its_signal() {
    for (kind, signal, culprit, why_kind) in [
        ("ud", "SIGILL", "kdbg_crash", "trap"),
        ("gp", "SIGSEGV", "kdbg_crash_gp", "trap"),
        ("pf", "SIGSEGV", "kdbg_crash_pf", "trap"),
        ("de", "SIGFPE", "kdbg_crash_de", "trap"),
        ("df", "SIGSEGV", "kdbg_crash_df", "double-fault"),
        (
            "overflow",
            "SIGSEGV",
            "kdbg_crash_recurse",
            "stack-overflow",
        ),
    ] {
        let mut vm = Qemu::boot(&format!(
            "serve kdbg.quiet kdbg.crash={kind} kdbg.wait kdbg.ondeath=exit"
        ))
        .expect("boot");
        vm.wait_for_console("waiting for a debugger", BOOT)
            .expect("boot wait");
        let out = gdb(&mut vm, &["continue", "bt 3", "monitor why", "kill"]);
        assert!(out.contains(signal), "{kind}: gdb sees {signal}:\n{out}");
        assert!(
            out.contains(culprit),
            "{kind}: bt reaches {culprit}:\n{out}"
        );
        assert!(
            out.contains(&format!("why state=dead cause=death kind={why_kind} ")),
            "{kind}: {out}"
        );
        assert!(
            vm.console().contains("stopped in the debugger"),
            "{kind}: {}",
            vm.console()
        );
    }
}

#[test]
fn attach_to_a_kdbg_wait_kernel_keeps_it_waiting() {
    let mut vm = Qemu::boot("serve kdbg.quiet kdbg.wait").expect("boot");
    vm.wait_for_console("waiting for a debugger", BOOT)
        .expect("boot wait");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    let why = k.ok("why", "why");
    assert_eq!(why["why"]["cause"], "wait", "{why}");
    assert_eq!(attach_summary(&k)["postmortem"]["why"]["state"], "stopped");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !vm.console().contains("workload tasks started"),
        "kdbg resumed a kernel that waited for it:\n{}",
        vm.console()
    );
    k.ok("continue", "running");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("continue lets it boot");
    k.finish();
}

#[test]
fn a_panic_inside_the_stub_falls_back_to_a_minimal_dump() {
    let mut vm = Qemu::boot("serve kdbg.quiet kdbg.crash=stub kdbg.ondeath=exit").expect("boot");
    assert_eq!(
        vm.wait_exit(BOOT).expect("the kernel ends"),
        KernelExit::Fatal,
        "{}",
        vm.console()
    );
    let console = vm.console();
    assert!(
        console.contains("kdbg: died again while handling a death (panic at kernel/src/death.rs:"),
        "{console}"
    );
    assert!(console.contains("fallback register dump"), "{console}");
    assert!(
        console.contains("first death: #UD invalid opcode"),
        "{console}"
    );
}

#[test]
fn a_panic_inside_the_allocator_still_reaches_the_stub() {
    // The stub needs neither the heap nor its lock (held by the dying code).
    let mut vm = boot_dead("alloc");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    k.ok("why", "why");
    let pm = attach_summary(&k);
    assert_eq!(pm["postmortem"]["why"]["kind"], "panic", "{pm}");
    let bt = k.ok("bt", "backtrace").to_string();
    assert!(bt.contains("kdbg_crash_alloc"), "{bt}");
    assert!(bt.contains("alloc"), "{bt}");
    k.finish();
    assert_eq!(vm.try_exit(), None);
}

#[test]
fn dmesg_after_a_death_ends_with_the_death_line() {
    let vm = boot_dead("pf");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    let d = k.ok("dmesg 3", "dmesg");
    let lines: Vec<&str> = d["dmesg"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(lines.len(), 3, "{d}");
    assert!(lines[2].contains(WAITING), "{d}");
    let all = k.ok("dmesg", "dmesg");
    let text = all["dmesg"]["lines"].to_string();
    assert!(
        text.contains("kdbg reference kernel"),
        "the boot banner: {all}"
    );
    assert!(text.contains("FATAL: #PF page fault at 0x18"), "{all}");
    // The same lines the console printed (the console has \r\n).
    let console = vm.console().replace('\r', "");
    for l in &lines {
        assert!(console.contains(l), "`{l}` not on the console");
    }
    k.finish();
}

#[test]
fn dmesg_live_reads_a_running_kernel_and_it_keeps_running() {
    let mut vm = Qemu::boot("serve").expect("boot");
    vm.wait_for_console("activity:", BOOT).expect("activity");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    let d = k.ok("dmesg 2", "dmesg");
    assert!(d["dmesg"]["lines"].to_string().contains("activity:"), "{d}");
    // gdb's `*ADDR` for a probe on the running kernel.
    let sum8 = symbol("sum8");
    let p = k.ok(&format!("kprobe *{sum8:#x}"), "probe_set");
    assert_eq!(p["probe"]["addr"], sum8, "{p}");
    assert!(k.ok("why", "why")["why"]["state"] == "running");
    let bad = k.run("dmesg x");
    assert_eq!(bad["ok"], false, "{bad}");
    k.finish();
    vm.assert_still_running(Duration::from_millis(300));
}

#[test]
fn gdb_spellings_agree_with_kdbg_names() {
    let vm = boot_dead("ud");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    let regs = k.ok("regs", "regs");
    let ir = k.ok("info registers", "regs");
    assert_eq!(regs["regs"], ir["regs"]);
    let rip = regs["regs"]["rip"].as_u64().expect("rip");
    let one = k.ok("i r rip", "message");
    assert!(
        one["text"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{rip:#x}")),
        "{one}"
    );
    let th = k.ok("threads", "threads");
    let it = k.ok("info threads", "threads");
    assert_eq!(th["threads"], it["threads"]);
    let n = th["threads"].as_array().expect("threads").len();
    let all = k.ok("thread apply all bt 2", "thread_apply");
    assert_eq!(
        all["results"].as_array().expect("results").len(),
        n,
        "{all}"
    );
    let two = k.ok("thread apply 0,6 bt 2", "thread_apply");
    let ids: Vec<u64> = two["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids, [0, 6], "{two}");
    assert!(two.to_string().contains("kdbg_crash"), "{two}");
    // The selection is back on the dying task.
    assert_eq!(k.ok("regs", "regs")["regs"]["rip"], rip);
    let b = k.ok(&format!("break *{rip:#x}"), "breakpoint");
    assert_eq!(b["breakpoint"]["addr"], rip, "{b}");
    let t = k.ok("tbreak *(sum8)", "breakpoint");
    assert_eq!(t["breakpoint"]["addr"], symbol("sum8"), "{t}");
    let h = k.ok("hbreak *fib", "breakpoint");
    assert_eq!(h["breakpoint"]["addr"], symbol("fib"), "{h}");
    let bad = k.run("thread apply 99 bt");
    assert_eq!(bad["ok"], false, "{bad}");
    let d = k.ok("disas *kdbg_crash", "disas");
    assert_eq!(d["lines"][0]["addr"], rip, "{d}");
    k.finish();
}

#[test]
fn a_kernel_left_stopped_at_a_breakpoint_stays_stopped_on_that_task() {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serving");
    // Another debugger: breakpoint at sum8, continue, then gone without `D`.
    let sum8 = symbol("sum8");
    {
        let mut raw = tests::rsp::Raw::connect(addr).expect("connect");
        raw.attach();
        assert_eq!(raw.ask(&format!("Z0,{sum8:x},1")), "OK");
        raw.send("c");
        let stop = raw.reply();
        assert!(stop.starts_with("T05"), "{stop}");
    }
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    k.ok("why", "why");
    let pm = attach_summary(&k);
    let w = &pm["postmortem"]["why"];
    assert_eq!(w["state"], "stopped", "{pm}");
    assert_eq!(w["cause"], "breakpoint", "{pm}");
    assert_eq!(w["task_name"], "math-worker", "{pm}");
    let regs = k.ok("regs", "regs");
    assert_eq!(
        regs["regs"]["rip"], sum8,
        "the stopped task's registers: {regs}"
    );
    let th = k.ok("threads", "threads");
    assert!(
        th["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .any(|t| t["name"] == "math-worker" && t["selected"] == true),
        "{th}"
    );
    k.finish();
}

/// A symbol's address from the kernel ELF (via kdbg's addr2line sibling:
/// `nm` is enough).
fn symbol(name: &str) -> u64 {
    let out = Command::new("nm")
        .arg(tests::kernel_path())
        .output()
        .expect("nm");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let a = w.next()?;
            let _ = w.next()?;
            (w.next()? == name).then(|| u64::from_str_radix(a, 16).ok())?
        })
        .unwrap_or_else(|| panic!("no symbol {name}"))
}

/// `gdb -batch` attached to `vm`'s stub running `cmds`; stdout + stderr.
fn gdb(vm: &mut Qemu, cmds: &[&str]) -> String {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    tests::gdb::batch_within(&kernel, addr, &[], cmds, Duration::from_secs(120))
}

/// `gdb -batch KERNEL CORE` running `cmds`.
fn gdb_core(core: &std::path::Path, cmds: &[&str]) -> String {
    let mut c = Command::new("gdb");
    c.args([
        "-batch",
        "-nx",
        "-q",
        "-ex",
        "set pagination off",
        "-ex",
        "set width 0",
    ]);
    c.arg(tests::kernel_path()).arg(core);
    for cmd in cmds {
        c.args(["-ex", cmd]);
    }
    let out = c.stdin(Stdio::null()).output().expect("gdb is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kdbg --core CORE --symbols KERNEL --json` with `lines` on stdin: the
/// result objects in order.
fn kdbg_core(core: &std::path::Path, lines: &[&str]) -> Vec<Value> {
    let mut child = Command::new(tests::kdbg_path())
        .arg("--core")
        .arg(core)
        .arg("--symbols")
        .arg(tests::kernel_path())
        .args(["--json", "--keep-going"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kdbg");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write");
        }
    }
    let out = child.wait_with_output().expect("kdbg output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("command").is_some() && v["command"] != "attach")
        .collect()
}

fn functions(bt: &Value) -> Vec<String> {
    bt["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn dump_core_then_gdb_and_kdbg_core_agree_with_the_live_session() {
    let dir = tempdir("core");
    let core = dir.join("kernel.core");
    let vm = boot_dead("pf");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    let live_why = k.ok("why", "why");
    let live_bt = k.ok("bt", "backtrace");
    let live_regs = k.ok("regs", "regs");
    let live_dmesg = k.ok("dmesg 5", "dmesg");
    let live_pid = k.ok("print kernel::workloads::NEXT_PID", "value");
    let live_threads = k.ok("threads", "threads");
    let d = k.ok(&format!("dump core {}", core.display()), "core_dumped");
    assert_eq!(d["core"]["complete"], true, "{d}");
    assert_eq!(d["core"]["threads"], 7, "{d}");
    assert!(d["core"]["read"].as_u64().unwrap_or(0) > 0, "{d}");
    k.finish();
    // No temporary file is left next to it.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["kernel.core"], "{names:?}");

    // gdb on the core: the dying task first, its stack and registers, a global.
    let rip = live_regs["regs"]["rip"].as_u64().expect("rip");
    let rsp = live_regs["regs"]["gpr"][7].as_u64().expect("rsp");
    let g = gdb_core(
        &core,
        &[
            "bt",
            "info registers rip rsp",
            "print kernel::workloads::NEXT_PID",
            "info threads",
        ],
    );
    let live_fns = functions(&live_bt);
    let mut at = 0;
    for f in live_fns
        .iter()
        .filter(|f| f.contains("kdbg_crash_pf") || f.contains("crasher") || f.contains("task_main"))
    {
        let pos = g[at..]
            .find(f.rsplit("::").next().unwrap_or(f))
            .unwrap_or_else(|| panic!("gdb bt lacks {f}:\n{g}"));
        at += pos;
    }
    assert!(g.contains(&format!("rip            {rip:#x}")), "{g}");
    assert!(g.contains(&format!("rsp            {rsp:#x}")), "{g}");
    let pid = live_pid["value"]["text"]
        .as_str()
        .expect("value")
        .to_string();
    // The counter's value: the digits after the last `value`.
    let after = pid.rsplit("value").next().unwrap_or(&pid);
    let pid_num: String = after
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!pid_num.is_empty(), "{live_pid}");
    assert!(
        g.contains(&format!("value: {pid_num}}}")) || g.contains(&format!("value = {pid_num}}}")),
        "NEXT_PID {pid_num} live:\n{g}"
    );
    assert!(
        g.matches("LWP ").count() >= 7,
        "every task is a thread in gdb:\n{g}"
    );

    // kdbg --core: the same answers, live-only commands refused.
    let r = kdbg_core(
        &core,
        &[
            "why",
            "bt",
            "regs",
            "dmesg 5",
            "print kernel::workloads::NEXT_PID",
            "threads",
            "continue",
            "kprobe sum8",
        ],
    );
    assert_eq!(r.len(), 8, "{r:?}");
    assert_eq!(r[0]["why"], live_why["why"], "why");
    assert_eq!(functions(&r[1]), live_fns, "bt");
    assert_eq!(r[2]["regs"]["gpr"], live_regs["regs"]["gpr"], "regs");
    assert_eq!(r[2]["regs"]["rip"], live_regs["regs"]["rip"]);
    assert_eq!(
        r[3]["dmesg"]["lines"], live_dmesg["dmesg"]["lines"],
        "dmesg"
    );
    assert_eq!(r[4]["value"]["text"], live_pid["value"]["text"], "print");
    assert_eq!(r[5]["threads"], live_threads["threads"], "threads");
    for refused in &r[6..] {
        assert_eq!(refused["ok"], false, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap_or("")
                .contains("needs a live kernel"),
            "{refused}"
        );
    }
}

#[test]
fn dump_core_bad_input_is_one_clear_error_and_no_file() {
    let dir = tempdir("bad");
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serving");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    // Running.
    let path = dir.join("running.core");
    let e = k.run(&format!("dump core {}", path.display()));
    assert_eq!(e["ok"], false, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("the kernel is running"),
        "{e}"
    );
    assert!(!path.exists());
    k.ok("interrupt", "stopped");
    // Unwritable directory.
    let e = k.run("dump core /nonexistent-dir/x.core");
    assert_eq!(e["ok"], false, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot write /nonexistent-dir/x.core"),
        "{e}"
    );
    // A directory, and no file name.
    let e = k.run(&format!("dump core {}", dir.display()));
    assert_eq!(e["ok"], false, "{e}");
    let e = k.run("dump core");
    assert_eq!(e["ok"], false, "{e}");
    // A full disk: a 64 KiB tmpfs (needs root to mount; elsewhere the
    // check is skipped with a note).
    let small = dir.join("small");
    std::fs::create_dir_all(&small).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let full = small.join("full.core");
        let e = k.run(&format!("dump core {}", full.display()));
        let _ = Command::new("umount").arg(&small).status();
        assert_eq!(e["ok"], false, "{e}");
        let msg = e["error"].as_str().unwrap_or("");
        assert!(
            msg.contains("cannot write") && msg.contains("No space left"),
            "{e}"
        );
    } else {
        eprintln!("note: cannot mount a tmpfs here (not root): full-disk case not run");
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "small")
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    k.ok("continue", "running");
    k.finish();
}

#[test]
fn an_interrupted_dump_is_a_valid_partial_core() {
    let dir = tempdir("partial");
    let core = dir.join("partial.core");
    let vm = boot_dead("de");
    let mut child = Command::new(tests::kdbg_path())
        .arg("--connect")
        .arg(vm.stub_connect_arg())
        .arg("--symbols")
        .arg(tests::kernel_path())
        .args(["--json", "--keep-going"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kdbg");
    let mut stdin = child.stdin.take().expect("stdin");
    {
        use std::io::Write;
        writeln!(stdin, "dump core {}", core.display()).expect("write");
    }
    // Ctrl-C a second into the dump (a full dump takes several seconds):
    // its temporary file exists from the dump's start.
    let deadline = Instant::now() + BOOT;
    while Instant::now() < deadline
        && !std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".partial-"))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: sends SIGINT to the kdbg child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    drop(stdin);
    let out = child.wait_with_output().expect("kdbg");
    let text = String::from_utf8_lossy(&out.stdout);
    let d: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "core_dumped")
        .unwrap_or_else(|| {
            panic!(
                "no dump result: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(d["core"]["complete"], false, "{d}");
    assert!(d.to_string().contains("interrupted (Ctrl-C)"), "{d}");
    // Still a core: gdb reads the registers, kdbg lists what is missing.
    let g = gdb_core(&core, &["info registers rip"]);
    assert!(g.contains("rip            0x"), "{g}");
    let r = kdbg_core(&core, &["why", "regs"]);
    assert_eq!(r[0]["why"]["kind"], "trap", "{r:?}");
    assert_eq!(r[1]["ok"], true, "{r:?}");
}

/// A fresh directory under target/ for this test.
fn tempdir(name: &str) -> std::path::PathBuf {
    let d = tests::target_dir()
        .join("postmortem-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}
