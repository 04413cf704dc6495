//! End-to-end: the reference kernel boots in QEMU, prints its banner and
//! live workload activity, refuses a wrong command line with the list of
//! what it accepts, listens for the debugger on COM2, and its ground-truth
//! log agrees with the workloads' documented semantics.
//!
//! Needs the kernel (`cargo xtask build`, or `cargo xtask test` which sets
//! `KDBG_KERNEL`) and `qemu-system-x86_64`.

use std::time::Duration;

use tests::{KernelExit, Qemu};

const BOOT: Duration = Duration::from_secs(30);

/// Boots with `append`, waits for the kernel to exit, checks it exited with
/// `want` and that the console has every text of `has`; returns the console.
fn exits_with(append: &str, want: KernelExit, has: &[&str]) -> String {
    let mut vm = Qemu::boot(append).expect("boot");
    let exit = vm.wait_exit(BOOT).expect("kernel exits");
    let console = vm.console();
    assert_eq!(exit, want, "console:\n{console}");
    for text in has {
        assert!(
            console.contains(text),
            "no `{text}` in the console:\n{console}"
        );
    }
    console
}

#[test]
fn banner_and_live_workload_activity() {
    let mut vm = Qemu::boot("serve").expect("boot");
    let version = env!("CARGO_PKG_VERSION");
    vm.wait_for_console(&format!("kdbg reference kernel {version} ("), BOOT)
        .expect("banner with the version");
    vm.wait_for_console("serve: 4 workload tasks started", BOOT)
        .expect("workers");
    let console = vm
        .wait_for_console("activity: spawn_task=", BOOT)
        .expect("activity line");
    let line = console
        .lines()
        .find(|l| l.contains("activity:"))
        .unwrap_or_default();
    assert!(
        !line.contains("spawn_task=0 "),
        "no spawn_task calls after a second: {line}"
    );
}

#[test]
fn wrong_mode_prints_what_is_accepted_and_fails() {
    let console = exits_with(
        "fly-to-the-moon",
        KernelExit::Failure,
        &["unknown command-line word `fly-to-the-moon`"],
    );
    for word in ["serve", "selftest", "bench", "kdbg.wait", "kdbg.truth"] {
        assert!(
            console.contains(&format!("`{word}")),
            "accepted list misses {word}: {console}"
        );
    }
}

#[test]
fn too_little_ram_is_a_clear_failure() {
    let mut vm = Qemu::boot_with("serve", |cfg| cfg.memory_mib = 8).expect("boot");
    assert_eq!(
        vm.wait_exit(BOOT).expect("kernel exits"),
        KernelExit::Failure
    );
    assert!(vm.console().contains("not enough RAM"), "{}", vm.console());
}

#[test]
fn fatal_trap_dumps_registers_with_symbols_and_exits_37() {
    // `kernel::serve::`: a caller among the stack words.
    exits_with(
        "serve kdbg.crash kdbg.quiet kdbg.ondeath=exit",
        KernelExit::Fatal,
        &[
            "FATAL: #UD invalid opcode (vector 6",
            "at kdbg_crash+0x",
            "  rip 0x",
            " r15 0x",
            "kernel::serve::",
        ],
    );
}

#[test]
fn task_stack_overflow_is_caught_at_the_next_switch() {
    exits_with(
        "serve kdbg.crash=stack kdbg.quiet kdbg.ondeath=exit",
        KernelExit::Fatal,
        &[
            "(stack-smasher) overflowed its 65536-byte stack",
            "FATAL: task stack overflow",
        ],
    );
}

#[test]
fn two_modes_are_refused() {
    exits_with("serve bench", KernelExit::Failure, &["second mode"]);
}

#[test]
fn unknown_selftest_suite_lists_the_suites() {
    exits_with(
        "selftest=nope",
        KernelExit::Failure,
        &["unknown suite `nope`", "trap", "sched", "heap", "kallsyms"],
    );
}

#[test]
fn one_selftest_suite_runs_alone_and_passes() {
    let mut vm = Qemu::boot("selftest=trap").expect("boot");
    let exit = vm.wait_exit(Duration::from_secs(60)).expect("kernel exits");
    let console = vm.console();
    assert_eq!(exit, KernelExit::Success, "console:\n{console}");
    assert!(
        console.contains("test trap::int3_round_trip_keeps_registers ... ok"),
        "{console}"
    );
    assert!(
        !console.contains("test sched::"),
        "other suites ran: {console}"
    );
    assert!(console.contains(" passed, 0 failed"), "{console}");
}

#[test]
fn stub_port_listens() {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("serve:", BOOT).expect("serve mode");
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port listening");
    assert_eq!(Some(addr), vm.stub_tcp_addr());
}

/// Parses `key=value` fields of a truth line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).expect("hex value")
}

#[test]
fn ground_truth_log_matches_the_workloads() {
    let mut vm = Qemu::boot("serve kdbg.truth kdbg.quiet").expect("boot");
    vm.wait_for_console("ground truth on debugcon", BOOT)
        .expect("serve with truth");
    let log = vm
        .wait_for(
            "100 sum8 and 20 sys_open lines in the truth log",
            BOOT,
            |vm| {
                let log = vm.debugcon();
                let sum8 = log.lines().filter(|l| l.contains(" fn=sum8 ")).count();
                let open = log.lines().filter(|l| l.contains(" fn=sys_open ")).count();
                (sum8 >= 100 && open >= 20).then_some(log)
            },
        )
        .expect("truth log");
    // QEMU may be in the middle of writing the last line: complete lines only.
    let log = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    let mut seqs = Vec::new();
    let mut missing = 0;
    for line in log.lines().filter(|l| l.starts_with("truth ")) {
        seqs.push(
            field(line, "seq")
                .expect("seq")
                .parse::<u64>()
                .expect("seq number"),
        );
        assert!(
            field(line, "task").is_some() && field(line, "fn").is_some(),
            "{line}"
        );
        match field(line, "fn") {
            Some("sum8") => {
                let args: Vec<u64> = ["a", "b", "c", "d", "e", "f", "g", "h"]
                    .iter()
                    .map(|k| hex(field(line, k).expect("sum8 argument")))
                    .collect();
                let want = args.iter().enumerate().fold(0u64, |acc, (i, v)| {
                    acc.wrapping_add(v.wrapping_mul(i as u64 + 1))
                });
                assert_eq!(hex(field(line, "ret").expect("ret")), want, "{line}");
            }
            Some("sys_open") => {
                let path = field(line, "path").expect("path");
                let ret: i64 = field(line, "ret")
                    .expect("ret")
                    .parse()
                    .expect("decimal ret");
                if path.ends_with(":\"/etc/missing\"") || path.ends_with(":\"/tmp/nothing-here\"") {
                    assert_eq!(ret, -2, "{line}");
                    missing += 1;
                } else if path.ends_with(":\"/etc/passwd\"")
                    && hex(field(line, "flags").expect("flags")) & 3 != 0
                {
                    assert_eq!(ret, -13, "{line}");
                } else {
                    assert!(ret >= 3, "{line}");
                }
            }
            Some("fib") => {
                let n = hex(field(line, "n").expect("n"));
                let (mut a, mut b) = (0u64, 1u64);
                for _ in 0..n {
                    (a, b) = (b, a + b);
                }
                assert_eq!(hex(field(line, "ret").expect("ret")), a, "{line}");
            }
            _ => {}
        }
    }
    assert!(missing > 0, "no failing sys_open call logged");
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "duplicate sequence numbers");
    assert_eq!(sorted.first(), Some(&1), "sequence does not start at 1");
}

/// QEMU prefers the multiboot header when both are present; with the header
/// blanked out in a copy of the image, the PVH note boots the same kernel.
#[test]
fn boots_through_the_pvh_note_too() {
    let image = std::fs::read(tests::kernel_path()).expect("kernel image (cargo xtask build)");
    let magic = 0x1BAD_B002u32.to_le_bytes();
    let pos = image[..8192.min(image.len())]
        .windows(4)
        .position(|w| w == magic)
        .expect("multiboot header in the first 8 KiB");
    let mut pvh_only = image.clone();
    pvh_only[pos..pos + 4].copy_from_slice(&[0; 4]);
    let dir = tests::target_dir().join("e2e");
    std::fs::create_dir_all(&dir).expect("e2e dir");
    let path = dir.join(format!("kernel-pvh-only-{}", std::process::id()));
    std::fs::write(&path, &pvh_only).expect("write image copy");
    let kernel = path.clone();
    let mut vm = Qemu::boot_with("selftest=trap", move |cfg| cfg.kernel = kernel).expect("boot");
    let exit = vm.wait_exit(Duration::from_secs(60)).expect("kernel exits");
    let console = vm.console();
    let _ = std::fs::remove_file(&path);
    assert!(
        console.contains("(boot: pvh, cmdline: \"selftest=trap\")"),
        "{console}"
    );
    assert_eq!(exit, KernelExit::Success, "{console}");
}

/// Runs `gdb -batch` with `cmds` against the stub; kills gdb after 60 s.
fn gdb_batch(vm: &Qemu, cmds: &[&str]) -> String {
    let addr = vm.stub_tcp_addr().expect("stub on tcp");
    tests::gdb::batch_within(
        &vm.config().kernel,
        addr,
        &[],
        cmds,
        Duration::from_secs(60),
    )
}

/// Every task's backtrace ends cleanly at its outermost frame
/// (`.cfi_undefined rip` on the task start and the 64-bit entry).
#[test]
fn gdb_backtraces_end_at_the_outermost_frames() {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("serve:", BOOT).expect("serve mode");
    vm.wait_for_stub_port(BOOT).expect("stub port");
    let out = gdb_batch(&vm, &["thread apply all bt", "detach"]);
    let task_ends = out.matches(" in kdbg_task_start ()").count();
    assert!(
        task_ends >= 5,
        "idle and 4 workers must end at kdbg_task_start:\n{out}"
    );
    assert!(
        out.contains(" in kdbg_long_start ()"),
        "main must end at kdbg_long_start:\n{out}"
    );
    for bad in [
        "Backtrace stopped",
        "Recursive internal problem",
        "corrupt stack",
        "??",
    ] {
        assert!(!out.contains(bad), "`{bad}` in gdb's backtraces:\n{out}");
    }
}
