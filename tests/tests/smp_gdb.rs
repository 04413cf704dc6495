//! A stock gdb against the reference kernel at 4 vCPUs (MTTCG: the vCPUs
//! run in parallel host threads): attach while every CPU runs, `info
//! threads` names each running task's CPU, a breakpoint on a function the
//! workers call from whatever CPU they run on stops the whole machine (the
//! other CPUs' tasks do not move between two `info threads` while stopped),
//! `stepi` on the stopped CPU, continue to the next hit, detach, and the
//! kernel runs on (a second gdb attaches). See docs/SMP.md.

use std::time::Duration;

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(120);

/// The lines of `out` between `=== NAME` and the next `===` marker.
fn block<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("=== {name}");
    out.lines()
        .skip_while(|l| !l.starts_with(&start))
        .skip(1)
        .take_while(|l| !l.starts_with("==="))
        .collect()
}

/// The CPUs named in `info threads` lines (`(running, cpu N)`).
fn cpus_named(lines: &[&str]) -> Vec<u32> {
    let mut cpus: Vec<u32> = lines
        .iter()
        .filter_map(|l| {
            let at = l.find(", cpu ")?;
            l[at + 6..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

#[test]
fn gdb_stops_every_cpu_at_4_vcpus() {
    let mut vm = Qemu::boot_with("serve kdbg.quiet", |c| {
        c.smp = 4;
        c.timeout = Duration::from_secs(400);
    })
    .expect("boot the reference kernel at 4 vCPUs");
    vm.wait_for_console("smp: 4 CPUs online", BOOT)
        .expect("the kernel brings up 4 CPUs");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    let out = tests::gdb::batch_within(
        &kernel,
        addr,
        &[],
        &[
            "echo === attached\\n",
            "info threads",
            "break spawn_task",
            "continue",
            "echo === stopped1\\n",
            "info threads",
            "echo === stopped2\\n",
            "info threads",
            "echo === step\\n",
            "stepi",
            "p/x $pc",
            "echo === again\\n",
            "continue",
            "delete",
            "echo === end\\n",
            "detach",
        ],
        Duration::from_secs(300),
    );
    // Attached: every CPU was running a task; each shows its CPU.
    let attached = block(&out, "attached");
    assert_eq!(
        cpus_named(&attached),
        vec![0, 1, 2, 3],
        "info threads names the task of every CPU:\n{out}"
    );
    assert!(
        out.contains("Breakpoint 1, ") && out.contains("spawn_task"),
        "the breakpoint hit:\n{out}"
    );
    // Stopped: the other CPUs are parked, their tasks do not advance.
    let s1 = block(&out, "stopped1");
    let s2 = block(&out, "stopped2");
    assert!(s1.len() >= 5, "threads listed while stopped:\n{out}");
    assert_eq!(
        s1, s2,
        "a task moved between two `info threads` while stopped:\n{out}"
    );
    assert_eq!(cpus_named(&s1), vec![0, 1, 2, 3], "{out}");
    // stepi moved the stopped CPU on by one instruction inside spawn_task.
    let step = block(&out, "step");
    assert!(
        step.iter().any(|l| l.starts_with("$1 = 0x")),
        "stepi then $pc:\n{out}"
    );
    let again = block(&out, "again");
    assert!(
        again.iter().any(|l| l.contains("Breakpoint 1, ")),
        "continue ran to the next hit (from whatever CPU):\n{out}"
    );
    assert!(
        out.contains("Detaching from program") || out.contains("detached"),
        "detach:\n{out}"
    );
    // The kernel runs on after detach: a second gdb attaches and reads memory.
    std::thread::sleep(Duration::from_millis(500));
    let out2 = tests::gdb::batch_within(
        &kernel,
        addr,
        &[],
        &["info threads", "detach"],
        Duration::from_secs(120),
    );
    assert!(
        out2.contains("(running, cpu "),
        "second attach after detach:\n{out2}"
    );
    assert!(vm.try_exit().is_none(), "the kernel is still running");
}

/// The kdbg shell at 2 vCPUs: probe events come from both CPUs (the
/// workers migrate), `threads` names the CPU of each running task, and the
/// stop on `interrupt` shows both CPUs' tasks.
#[test]
fn shell_events_from_both_cpus_at_2_vcpus() {
    let vm = Qemu::boot_serving_with("", |c| c.smp = 2);
    assert!(
        vm.console().contains("smp: 2 CPUs online"),
        "the kernel brings up 2 CPUs:\n{}",
        vm.console()
    );
    let mut k = tests::kdbg::KdbgJson::start(&vm, &[]);
    let id = tests::kdbg::probe_id(&k.ok("kprobe sys_open", "probe_set"));
    let mut cpus: Vec<u64> = Vec::new();
    for _ in 0..20 {
        k.ok("wait events 40 timeout 60", "waited");
        cpus = k
            .events(id)
            .iter()
            .filter_map(|e| e["cpu"].as_u64())
            .collect();
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.len() == 2 {
            break;
        }
    }
    assert_eq!(cpus, vec![0, 1], "events from both CPUs");
    let threads = k.ok("threads", "threads");
    let mut running: Vec<u64> = tests::kdbg::items(&threads, "threads")
        .iter()
        .filter_map(|t| t["cpu"].as_u64())
        .collect();
    running.sort_unstable();
    assert_eq!(running, vec![0, 1], "one running task per CPU: {threads}");
    k.kill();
}

/// At 4 vCPUs, two breakpoints in functions different workers call (they
/// may hit on two CPUs at once: one is reported, the other at the next
/// continue) and a watchpoint set on the stopped CPU that fires in whatever
/// CPU the writer runs on (debug registers are per CPU: every CPU loads
/// gdb's). Every stop is a breakpoint or watchpoint stop, never a stray
/// SIGTRAP, and the kernel runs on after detach.
#[test]
fn concurrent_breakpoints_and_a_watchpoint_at_4_vcpus() {
    let mut vm = Qemu::boot_with("serve kdbg.quiet", |c| {
        c.smp = 4;
        c.timeout = Duration::from_secs(400);
    })
    .expect("boot the reference kernel at 4 vCPUs");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    let mut cmds = vec!["break spawn_task", "break sys_open"];
    cmds.extend(std::iter::repeat_n("continue", 8));
    cmds.extend(["delete", "watch kernel::workloads::NEXT_PID"]);
    for _ in 0..3 {
        cmds.extend(["continue", "info threads"]);
    }
    cmds.extend(["delete", "detach"]);
    let out = tests::gdb::batch_within(&kernel, addr, &[], &cmds, Duration::from_secs(300));
    let bps = out.matches(" hit Breakpoint ").count() + out.matches("\nBreakpoint ").count();
    assert!(bps >= 8, "8 breakpoint stops:\n{out}");
    assert!(
        !out.contains("SIGTRAP") && !out.contains("SIGSEGV"),
        "no stray trap:\n{out}"
    );
    assert_eq!(
        out.matches("watchpoint 3: kernel::workloads::NEXT_PID\n\nOld value")
            .count(),
        3,
        "three watchpoint hits:\n{out}"
    );
    let cpus = cpus_named(&out.lines().collect::<Vec<_>>());
    assert_eq!(cpus, vec![0, 1, 2, 3], "{out}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(vm.try_exit().is_none(), "the kernel is still running");
}
