//! A stock `lldb` (batch mode) against the reference kernel in QEMU,
//! through the kdbg stub on COM2: attach while the kernel runs, registers,
//! memory, a breakpoint by name with arguments read from DWARF, a
//! backtrace through the workload task, an instruction step, detach, and a
//! second attach after the first one left (the kernel ran on in between)
//! that sets a kprobe with a `monitor` command.

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(60);

/// Runs `lldb -b` on the kernel with `cmds` after `gdb-remote ADDR`;
/// stdout + stderr. lldb is killed after 120 s.
fn lldb(vm: &mut Qemu, cmds: &[&str]) -> String {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let mut c = Command::new("lldb");
    c.args(["-b", "--no-lldbinit"]);
    c.args(["-o", &format!("gdb-remote {addr}")]);
    for cmd in cmds {
        c.args(["-o", cmd]);
    }
    c.arg(vm.config().kernel.as_os_str());
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tests::kill_with_parent(&mut c);
    let child = c.spawn().expect("lldb on PATH (.ci/run installs it)");
    tests::output_within(child, Duration::from_secs(120))
}

/// The value lldb printed for register `name` (`  rip = 0x... ...`).
fn reg(out: &str, name: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(" = ")?;
            (n.trim() == name).then_some(())?;
            let v = rest.split_whitespace().next()?;
            u64::from_str_radix(v.strip_prefix("0x")?, 16).ok()
        })
        .collect()
}

#[test]
fn lldb_attaches_breaks_reads_arguments_steps_and_detaches() {
    let mut vm = Qemu::boot_serving("");
    let out = lldb(
        &mut vm,
        &[
            "breakpoint set -n sys_open",
            "continue",
            "bt",
            "frame variable",
            "register read rdi rsi rip",
            "x/2gx $rsp",
            "thread step-inst",
            "register read rip",
            "detach",
        ],
    );
    assert!(
        out.contains("stop reason = breakpoint 1."),
        "lldb stopped at the breakpoint:\n{out}"
    );
    assert!(
        out.contains("frame #0: ") && out.contains("kernel`sys_open(path="),
        "frame 0 is sys_open with its arguments:\n{out}"
    );
    assert!(
        out.contains("open_worker"),
        "the backtrace reaches the workload task:\n{out}"
    );
    // The DWARF view of the argument and the register agree.
    let path: u64 = out
        .lines()
        .find_map(|l| {
            let v = l.split_once(") path = ")?.1;
            u64::from_str_radix(v.split_whitespace().next()?.strip_prefix("0x")?, 16).ok()
        })
        .unwrap_or_else(|| panic!("frame variable shows path:\n{out}"));
    assert_eq!(reg(&out, "rdi"), vec![path], "rdi is path:\n{out}");
    let flags: u64 = out
        .lines()
        .find_map(|l| l.split_once(") flags = ")?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("frame variable shows flags:\n{out}"));
    assert_eq!(
        reg(&out, "rsi")
            .iter()
            .map(|v| v & 0xffff_ffff)
            .collect::<Vec<_>>(),
        vec![flags],
        "esi is flags:\n{out}"
    );
    let rips = reg(&out, "rip");
    assert_eq!(rips.len(), 2, "rip before and after the step:\n{out}");
    assert!(
        rips[1] > rips[0] && rips[1] - rips[0] <= 15,
        "one instruction stepped ({:#x} -> {:#x}):\n{out}",
        rips[0],
        rips[1]
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("0x") && l.matches("0x").count() == 3),
        "memory at rsp read:\n{out}"
    );
    assert!(out.contains("detached"), "lldb detached:\n{out}");
    vm.assert_still_running(Duration::from_millis(300));

    // The stub takes a second debugger after the first left.
    let again = lldb(
        &mut vm,
        &[
            "register read rip",
            "process plugin packet monitor kprobe sys_open",
            "process plugin packet monitor probes",
            "detach",
        ],
    );
    assert_eq!(
        reg(&again, "rip").len(),
        1,
        "second attach reads registers:\n{again}"
    );
    assert!(
        again.contains("ok id=1") && again.contains("probe id=1 type=kprobe"),
        "monitor commands through lldb's packet command:\n{again}"
    );
    assert!(again.contains("detached"), "{again}");
    vm.assert_still_running(Duration::from_millis(300));
}
