//! A stock `gdb -batch` against the reference kernel in QEMU, through the
//! kdbg stub on COM2: attach while the kernel runs, registers (GPRs and
//! SSE), memory read/write, an unmapped address, software and hardware
//! breakpoints with arguments checked against the ground-truth log, stepi,
//! a watchpoint, threads with backtraces, monitor commands with probe hits
//! growing while the kernel runs, the event stream, detach and re-attach.

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(60);
/// How long to let the kernel run before checking it is still alive.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs `gdb -batch` with `cmds` after attaching; returns stdout + stderr.
fn gdb(vm: &mut Qemu, cmds: &[&str]) -> String {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    tests::gdb::batch_within(&kernel, addr, &[], cmds, Duration::from_secs(120))
}

fn boot_serving(vm_append: &str) -> Qemu {
    let mut vm = Qemu::boot(vm_append).expect("boot the reference kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm
}

/// The value gdb printed for `name` in an `info registers` listing.
fn reg(out: &str, name: &str) -> u64 {
    for line in out.lines() {
        let mut w = line.split_whitespace();
        if w.next() == Some(name)
            && let Some(v) = w.next()
            && let Some(h) = v.strip_prefix("0x")
        {
            return u64::from_str_radix(h, 16).expect("hex register value");
        }
    }
    panic!("no register {name} in:\n{out}");
}

/// The address from `info address SYMBOL` / `p &X` output (`0x...`).
fn first_hex_after(out: &str, marker: &str) -> u64 {
    let at = out
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in:\n{out}"));
    let rest = &out[at + marker.len()..];
    let start = rest.find("0x").expect("an address") + 2;
    let hex: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&hex, 16).expect("hex address")
}

/// The decimal number printed after `marker`.
fn decimal_after(out: &str, marker: &str) -> u64 {
    let at = out
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in:\n{out}"));
    out[at + marker.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{marker}` in:\n{out}"))
}

/// `hits` of each `probe` row of probe `id` (`None`: of every probe) in
/// gdb's output of `monitor probes` listings, in order.
fn probe_hits(out: &str, id: Option<u32>) -> Vec<u64> {
    out.lines()
        .filter_map(|l| proto::reply::ProbeRow::parse(l).ok())
        .filter(|p| id.is_none_or(|i| p.id == i))
        .map(|p| p.hits)
        .collect()
}

#[test]
fn attach_registers_memory_and_unmapped_addresses() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "info registers",
            "set $xmm0.v2_int64[0] = 0x1122334455667788",
            "p/x $xmm0.v2_int64[0]",
            "p $xmm1",
            "x/8gx &kernel::workloads::STATS",
            "set language c",
            "x/4gx 0xdead000000",
            "set language auto",
            "echo @@ADDR\\n",
            "p/x &kernel::workloads::STATS.fib",
            "monitor help",
            "monitor tasks",
            "detach",
        ],
    );
    // info registers: GPRs, rip, eflags, segments.
    for r in [
        "rax", "rbx", "rsp", "rip", "eflags", "cs", "ss", "r15", "fs_base", "gs_base",
    ] {
        assert!(out.lines().any(|l| l.starts_with(r)), "no {r} in:\n{out}");
    }
    assert!(reg(&out, "cs") == 0x8, "kernel code segment:\n{out}");
    // SSE: written and read back through the FXSAVE area.
    assert!(
        out.contains("0x1122334455667788"),
        "xmm0 write/read:\n{out}"
    );
    assert!(out.contains("v4_float"), "p $xmm1 shows the vector:\n{out}");
    // A global: 8 words printed.
    assert!(
        out.lines()
            .filter(|l| l.contains("workloads5STATS"))
            .count()
            == 4,
        "x/8gx on STATS prints 4 lines of 2 words:\n{out}"
    );
    // Unmapped: an error, not a dead kernel.
    assert!(
        out.contains("Cannot access memory at address 0xdead000000"),
        "unmapped read:\n{out}"
    );
    assert!(
        out.contains("kdbg monitor commands:"),
        "monitor help:\n{out}"
    );
    assert!(
        out.contains("kprobe LOC"),
        "monitor help lists kprobe:\n{out}"
    );
    assert!(out.contains("task id=0 name=main"), "monitor tasks:\n{out}");
    assert!(out.contains("detached"), "detach:\n{out}");
    std::thread::sleep(Duration::from_millis(500));
    vm.assert_still_running(Duration::ZERO);

    // Re-attach; write memory and read it back, then continue to a
    // breakpoint (the kernel kept running after the unmapped read).
    let fib = first_hex_after(&out, "@@ADDR");
    let out = gdb(
        &mut vm,
        &[
            "set language c",
            &format!("set {{unsigned long}}{fib:#x} = 0xfeedface"),
            &format!("x/gx {fib:#x}"),
            "set language auto",
            "break sys_open",
            "continue",
            "info registers rip",
            "delete",
            "detach",
        ],
    );
    assert!(
        out.contains("0x00000000feedface"),
        "memory write/read back:\n{out}"
    );
    assert!(
        out.contains("hit Breakpoint 1, kernel::workloads::sys_open (path="),
        "continue to sys_open:\n{out}"
    );
    assert!(
        out.contains("<kernel::workloads::sys_open>"),
        "rip in sys_open:\n{out}"
    );
    std::thread::sleep(Duration::from_millis(500));
    vm.assert_still_running(Duration::ZERO);
}

#[test]
fn breakpoint_arguments_match_ground_truth_then_stepi_hbreak_watch() {
    let mut vm = boot_serving("serve kdbg.quiet kdbg.truth");
    let out = gdb(
        &mut vm,
        &[
            "break spawn_task",
            "continue",
            "info registers rdi rsi rdx rcx r8 r9 rip",
            "thread",
            "stepi",
            "info registers rip",
            "info registers eflags",
            "delete",
            "hbreak sum8",
            "continue",
            "info registers rip",
            "delete",
            "echo @@ADDR\\n",
            "p/x &kernel::workloads::STATS.spawn_task",
            "detach",
        ],
    );
    assert!(
        out.contains("hit Breakpoint 1, kernel::workloads::spawn_task (clone_flags="),
        "break spawn_task:\n{out}"
    );
    let args: Vec<u64> = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"]
        .iter()
        .map(|r| reg(&out, r))
        .collect();
    // The same call in the ground-truth log (logged after it returns).
    let want = format!(
        "fn=spawn_task clone_flags={:#x} stack_start={:#x} regs={:#x} stack_size={:#x} parent_tid={:#x} child_tid={:#x} ",
        args[0], args[1], args[2], args[3], args[4], args[5]
    );
    vm.wait_for_debugcon(&want, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no ground-truth line `{want}`: {e}\ngdb:\n{out}"));
    // stepi moved rip forward by one instruction inside spawn_task.
    let rips: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with("rip"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .collect();
    assert!(rips.len() >= 3, "rip lines:\n{out}");
    assert!(
        rips[1] > rips[0] && rips[1] - rips[0] <= 15,
        "stepi:\n{out}"
    );
    assert!(
        out.contains("<kernel::workloads::spawn_task+"),
        "stepi stays in spawn_task:\n{out}"
    );
    // The stub's own TF is not shown after the step.
    let eflags = out
        .lines()
        .find(|l| l.starts_with("eflags"))
        .unwrap_or_else(|| panic!("no eflags line:\n{out}"));
    assert!(
        !eflags.contains("TF") && eflags.contains("IF"),
        "eflags after stepi: {eflags}"
    );
    assert!(
        out.contains("Hardware assisted breakpoint 2"),
        "hbreak:\n{out}"
    );
    assert!(out.contains("hit Breakpoint 2, "), "hbreak hit:\n{out}");
    assert!(
        out.contains("<kernel::workloads::sum8+"),
        "hbreak stops in sum8:\n{out}"
    );

    // watch: a counter a task writes; old and new value reported.
    let counter = first_hex_after(&out, "@@ADDR");
    let out = gdb(
        &mut vm,
        &[
            "set language c",
            &format!("watch *(unsigned long *){counter:#x}"),
            "continue",
            "delete",
            "detach",
        ],
    );
    let old = decimal_after(&out, "Old value = ");
    let new = decimal_after(&out, "New value = ");
    assert_eq!(new, old + 1, "the counter went up by one:\n{out}");
    assert!(out.contains("Hardware watchpoint"), "watch:\n{out}");
    vm.assert_still_running(SETTLE);
}

#[test]
fn threads_backtraces_monitor_probes_and_events() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "info threads",
            "thread 3",
            "bt",
            "monitor kprobe sys_open",
            "monitor kprobe no_such_function",
            "monitor probes",
            // Two stops at sys_open: the first call's kprobe hit (when gdb
            // steps off its breakpoint) is streamed before the second stop.
            "break sys_open",
            "continue",
            "continue",
            "delete",
            "monitor probes",
            "monitor events",
            "detach",
        ],
    );
    // Tasks as threads with names.
    assert!(out.contains("Thread 1.1 (main"), "info threads:\n{out}");
    assert!(out.contains("Thread 1.3 ("), "info threads:\n{out}");
    assert!(out.contains("[Switching to thread 3"), "thread 3:\n{out}");
    assert!(
        out.contains("#1 "),
        "bt shows the task's caller frames:\n{out}"
    );
    assert!(out.contains("ok id=1"), "monitor kprobe sys_open:\n{out}");
    assert!(
        out.contains("error code=unknown-symbol"),
        "unknown symbol refused:\n{out}"
    );
    let hits = probe_hits(&out, Some(1));
    assert_eq!(hits.len(), 2, "two probes listings:\n{out}");
    std::thread::sleep(Duration::from_secs(1));

    // Probes keep running after detach: hits grew; a new gdb sees them.
    let out2 = gdb(
        &mut vm,
        &[
            "monitor probes",
            "monitor probe delete 1",
            "monitor probes",
            "detach",
        ],
    );
    let later = *probe_hits(&out2, Some(1))
        .first()
        .unwrap_or_else(|| panic!("probes after re-attach:\n{out2}"));
    assert!(
        later > hits[1],
        "hits grow while the kernel runs ({} -> {later}):\n{out2}",
        hits[1]
    );
    assert!(out2.contains("ok id=1"), "probe delete:\n{out2}");
    assert_eq!(
        out2.lines().filter(|l| l.starts_with("probe id=")).count(),
        1,
        "deleted probe gone:\n{out2}"
    );
    // The event stream reached gdb's console while the kernel ran.
    assert!(
        out.contains("event id=1 kind=kprobe"),
        "kprobe events streamed as O packets:\n{out}"
    );
    vm.assert_still_running(Duration::ZERO);
}

#[test]
fn kill_stops_the_machine_as_documented() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(&mut vm, &["kill"]);
    let exit = vm
        .wait_exit(Duration::from_secs(30))
        .expect("QEMU exits after kill");
    assert_eq!(exit, tests::KernelExit::Success, "gdb output:\n{out}");
    assert!(vm.console().contains("kdbg: killed by the debugger"));
}

#[test]
fn stepi_over_a_probed_instruction_ends_at_the_next_instruction() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "break sys_open",
            "continue",
            "delete",
            "monitor kprobe sys_open",
            "info registers rip",
            "stepi",
            "info registers rip",
            "monitor probes",
            "monitor probe delete 1",
            "detach",
        ],
    );
    let rips: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with("rip"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .collect();
    assert_eq!(rips.len(), 2, "two rip lines:\n{out}");
    assert!(
        rips[1] > rips[0] && rips[1] - rips[0] <= 15,
        "one instruction forward, not into kdbg's slot area:\n{out}"
    );
    assert!(
        !out.contains("kdbg_slot_area"),
        "stepped into a slot:\n{out}"
    );
    let hits = *probe_hits(&out, Some(1))
        .first()
        .unwrap_or_else(|| panic!("probes:\n{out}"));
    assert_eq!(
        hits, 1,
        "the probe ran once for the stepped instruction:\n{out}"
    );
    vm.assert_still_running(SETTLE);
}

#[test]
fn breakpoint_and_kprobe_share_an_address() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "monitor kprobe sys_open",
            "break sys_open",
            "continue",
            "continue",
            "monitor probes",
            // Remove the kprobe: the breakpoint still stops.
            "monitor probe delete 1",
            "continue",
            "delete",
            // And the other way round: a kprobe survives the breakpoint's removal.
            "monitor kprobe sys_open",
            "break sys_open",
            "continue",
            "delete",
            "break fib",
            "continue",
            "delete",
            "monitor probes",
            "detach",
        ],
    );
    assert_eq!(
        out.matches("hit Breakpoint 1, kernel::workloads::sys_open")
            .count(),
        3,
        "the breakpoint stops with the kprobe there and after its removal:\n{out}"
    );
    assert!(
        out.contains("hit Breakpoint 2, kernel::workloads::sys_open"),
        "{out}"
    );
    let rows = probe_hits(&out, None);
    assert_eq!(rows.len(), 2, "two probes listings:\n{out}");
    assert!(
        rows[0] >= 1,
        "the kprobe ran while the breakpoint sat on it:\n{out}"
    );
    assert!(
        rows[1] >= 1,
        "the second kprobe ran after the breakpoint went:\n{out}"
    );
    vm.assert_still_running(SETTLE);
}

#[test]
fn kdbg_wait_holds_the_boot_until_gdb_lets_go() {
    let mut vm = Qemu::boot("serve kdbg.quiet kdbg.wait").expect("boot the reference kernel");
    vm.wait_for_console("waiting for a debugger", BOOT)
        .expect("the kernel announces the wait");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !vm.console().contains("workload tasks started"),
        "the kernel went on without a debugger:\n{}",
        vm.console()
    );
    let out = gdb(&mut vm, &["info registers rip", "bt 1", "detach"]);
    assert!(
        out.contains("wait_for_debugger"),
        "stopped in the boot wait:\n{out}"
    );
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("the kernel continues after detach");
}

#[test]
fn fatal_trap_is_shown_to_an_attached_gdb() {
    // `exit`: after gdb detaches the dead kernel goes instead of waiting.
    let mut vm = boot_serving("serve kdbg.quiet kdbg.ondeath=exit");
    // Send the stopped task to address 0: the page fault on the fetch takes
    // the kernel's fatal path, which shows gdb the dying state first.
    let out = gdb(
        &mut vm,
        &["set $pc = 0", "continue", "info registers rip", "detach"],
    );
    assert!(out.contains("SIGSEGV"), "gdb sees the fault:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("rip") && l.contains("0x0 ")),
        "at the faulting rip:\n{out}"
    );
    let exit = vm
        .wait_exit(Duration::from_secs(30))
        .expect("the kernel ends");
    assert_eq!(exit, tests::KernelExit::Fatal, "console:\n{}", vm.console());
    assert!(vm.console().contains("FATAL"), "{}", vm.console());
}

#[test]
fn a_fifth_hardware_breakpoint_is_a_clear_error() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "hbreak sys_open",
            "hbreak spawn_task",
            "hbreak fib",
            "hbreak sum8",
            "hbreak handle_request",
            "continue",
            "delete",
            "detach",
        ],
    );
    assert!(
        out.contains("Could not insert hardware breakpoint")
            || out.contains("too many hardware breakpoints"),
        "gdb reports the exhausted debug registers:\n{out}"
    );
    vm.assert_still_running(SETTLE);
}

#[test]
fn bt_through_a_kretprobed_function_shows_the_real_callers() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "monitor kretprobe fib",
            "monitor stream off",
            "break fib",
            "continue",
            "continue",
            "continue",
            "continue",
            "bt",
            "monitor retinst",
            "delete",
            "monitor probe delete 1",
            "monitor stream on",
            "detach",
        ],
    );
    assert!(
        out.contains("inst task="),
        "outstanding instances listed:\n{out}"
    );
    let bt: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        bt.iter().any(|l| l.contains("math_worker")),
        "bt reaches the real caller:\n{out}"
    );
    assert!(
        !bt.iter().any(|l| l.contains("?? ()")),
        "no trampoline garbage in bt:\n{out}"
    );
    vm.assert_still_running(SETTLE);
}

#[test]
fn any_chardev_works_gdb_over_a_unix_socket() {
    let sock = tests::target_dir()
        .join("e2e")
        .join(format!("gdb-unix-{}.sock", std::process::id()));
    let _ = std::fs::create_dir_all(sock.parent().expect("a parent directory"));
    let _ = std::fs::remove_file(&sock);
    let path = sock.clone();
    let mut vm = Qemu::boot_with("serve kdbg.quiet", move |cfg| {
        cfg.stub = tests::Wiring::Unix(path);
    })
    .expect("boot with the stub on a unix socket");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm.wait_for("the stub's unix socket", BOOT, |_| {
        sock.exists().then_some(())
    })
    .expect("QEMU creates the socket");
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-q", "-ex", "set confirm off"])
        .args(["-ex", &format!("target remote {}", sock.display())])
        .args([
            "-ex",
            "info registers rip",
            "-ex",
            "monitor tasks",
            "-ex",
            "detach",
        ])
        .arg(vm.config().kernel.as_os_str())
        .stdin(Stdio::null())
        .output()
        .expect("run gdb");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.lines().any(|l| l.starts_with("rip")), "{text}");
    assert!(text.contains("task id=0 name=main"), "{text}");
    assert!(text.contains("detached"), "{text}");
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn a_watchpoint_set_while_stopped_in_idle_fires_in_the_task_that_writes() {
    // Debug registers are CPU-global: a watchpoint set while the kernel is
    // stopped in one task (here wherever the attach stopped it, normally
    // idle) fires when another task (fork-worker) writes the variable.
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "thread",
            "watch kernel::workloads::NEXT_PID",
            "continue",
            "thread",
            "continue",
            "delete",
            "detach",
        ],
    );
    assert!(out.contains("Hardware watchpoint 1"), "watch:\n{out}");
    assert_eq!(
        out.matches("Hardware watchpoint 1: kernel::workloads::NEXT_PID\n\nOld value")
            .count(),
        2,
        "two hits:\n{out}"
    );
    assert!(
        out.contains("kernel::workloads::spawn_task ("),
        "the writer is spawn_task (fork-worker):\n{out}"
    );
    vm.assert_still_running(SETTLE);
}

#[test]
fn a_watched_address_read_by_a_probe_capture_stops_only_on_the_programs_accesses() {
    // KDBG_WATCHED is written by the math worker and read by nobody but the
    // kprobe's capture (kdbg_pass_watched receives its address). With an
    // access watchpoint on it, every stop must be the worker's write; the
    // capture's reads (inside the probe handler) are the debugger's own
    // accesses, counted by `monitor refused`, never a stop inside kdbg.
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "monitor jprobe kdbg_pass_watched fetch=u64@arg0",
            "awatch kernel::workloads::KDBG_WATCHED",
            "continue",
            "continue",
            "continue",
            "continue",
            "delete",
            "monitor probes",
            "monitor refused",
            "detach",
        ],
    );
    let hits = out
        .matches(" hit Hardware access (read/write) watchpoint 1: kernel::workloads::KDBG_WATCHED")
        .count();
    assert_eq!(hits, 4, "four watchpoint stops:\n{out}");
    // Each stop's frame line names the function the pc is in.
    let frames: Vec<&str> = out
        .split(" hit Hardware access (read/write) watchpoint 1: kernel::workloads::KDBG_WATCHED")
        .skip(1)
        .map(|stop| {
            stop.lines()
                .find(|l| l.contains(" in ") || l.starts_with("kernel::"))
                .unwrap_or("")
        })
        .collect();
    for f in &frames {
        assert!(
            f.contains("math_worker"),
            "every stop is the math worker's write, never the probe core's read: {frames:?}\n{out}"
        );
    }
    let own: u64 = out
        .lines()
        .find_map(|l| l.split("own-accesses=").nth(1)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("monitor refused counts own accesses:\n{out}"));
    assert!(own >= 3, "the capture's reads were counted ({own}):\n{out}");
    assert!(
        out.contains("sym=kdbg_pass_watched+0x0") && !out.contains("hits=0 "),
        "the probe was hit:\n{out}"
    );
    vm.assert_still_running(SETTLE);
}

/// `(arg0, ret)` of every kretprobe-return event line in `out`.
fn returns(out: &str) -> Vec<(u64, u64)> {
    let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
    out.lines()
        .filter(|l| l.contains("kind=kretprobe-return"))
        .filter_map(|l| {
            let arg0 = l.split("args=").nth(1)?.split(',').next().and_then(hex)?;
            let ret = l
                .split(" ret=")
                .nth(1)?
                .split_whitespace()
                .next()
                .and_then(hex)?;
            Some((arg0, ret))
        })
        .collect()
}

/// The address of `name` in the kernel's ELF symbol table.
fn elf_symbol(kernel: &std::path::Path, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(kernel).expect("read the kernel");
    let file = object::File::parse(&*data).expect("the kernel is an ELF file");
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .unwrap_or_else(|| panic!("{name} is in the symbol table"))
}

#[test]
fn a_gdb_write_to_probed_text_changes_what_the_probe_runs() {
    // kdbg_insn_helper is `lea rax, [rdi + 1]; ret` and its first
    // instruction carries a kretprobe's int3 (executed out of line). gdb
    // changes the displacement byte to 2: the function must now return
    // x + 2 (the probe core re-analyses the instruction from the new
    // bytes), x/4xb shows the new bytes without the int3, and the probe
    // keeps recording; writing 1 back restores x + 1.
    let mut vm = boot_serving("serve kdbg.quiet");
    // Numeric addresses: how gdb types the asm symbol in an expression
    // depends on the compilation unit of the frame it attached in (it once
    // scaled `(char *)kdbg_insn_helper + 3` by 4).
    let helper = elf_symbol(&vm.config().kernel, "kdbg_insn_helper");
    let show = format!("x/4xb {helper:#x}");
    let run = |vm: &mut Qemu, first: &[&str], byte: u8| {
        let set = format!("set {{unsigned char}}{:#x} = {byte}", helper + 3);
        let mut cmds = vec!["set language c"];
        cmds.extend_from_slice(first);
        cmds.extend([
            set.as_str(),
            show.as_str(),
            "thbreak insn_loop",
            "continue",
            "thbreak insn_loop",
            "continue",
            "monitor probes",
            "detach",
        ]);
        gdb(vm, &cmds)
    };
    let changed = run(&mut vm, &["monitor kretprobe kdbg_insn_helper"], 2);
    let restored = run(&mut vm, &[], 1);
    assert!(
        changed.contains(":\t0x48\t0x8d\t0x47\t0x02"),
        "gdb reads its own bytes back, without kdbg's int3:\n{changed}"
    );
    let before = returns(&changed);
    let after = returns(&restored);
    assert!(
        before.len() >= 3 && after.len() >= 3,
        "the kretprobe kept recording ({} then {}):\n{changed}\n{restored}",
        before.len(),
        after.len()
    );
    // The first events may come from a call already under way.
    for (x, r) in before.iter().skip(1) {
        assert_eq!(*r, x + 2, "the changed instruction runs:\n{changed}");
    }
    // Events queued while no debugger was attached (x + 2) come first;
    // from the first x + 1 on, every return is x + 1.
    let first = after
        .iter()
        .position(|(x, r)| *r == x + 1)
        .unwrap_or_else(|| panic!("the restored instruction runs:\n{restored}"));
    assert!(
        after.len() - first >= 2,
        "several returns after the restore:\n{restored}"
    );
    for (x, r) in &after[first..] {
        assert_eq!(*r, x + 1, "the restored instruction runs:\n{restored}");
    }
    vm.assert_still_running(SETTLE);
}
