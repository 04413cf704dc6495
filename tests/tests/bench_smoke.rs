//! The kernel's `bench` mode (issue 8) runs once with a tiny iteration
//! count, so it cannot rot: every row is measured or says why not, probed
//! calls compute the unprobed results, probes are hit once per call, and
//! the lines `cargo xtask bench` parses are all there. No speed is asserted.

use std::time::Duration;

use tests::{KernelExit, Qemu};

const CALLS: u64 = 3;

/// The rows kernel/src/bench/rows.rs defines, in order.
const ROWS: &[&str] = &[
    "kprobe_int3",
    "kprobe_boosted",
    "kprobe_emulated",
    "jprobe",
    "kretprobe",
    "kprobe_kretprobe",
    "jprobe_kretprobe",
    "capture_kprobe",
    "capture_kprobe_int3",
    "capture_args6",
    "capture_string",
    "capture_return",
    "kprobe_optimized",
    "capture_kprobe_optimized",
    "kretprobe_optimized",
    "capture_return_optimized",
];

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

#[test]
fn bench_mode_measures_every_row_and_exits_cleanly() {
    let mut vm = Qemu::boot_with("bench", |c| {
        c.icount = true;
        c.extra = vec![
            "-fw_cfg".into(),
            format!("name=opt/kdbg/bench-iterations,string={CALLS}"),
        ];
    })
    .expect("boot the kernel in bench mode");
    let exit = vm
        .wait_exit(Duration::from_secs(120))
        .expect("bench mode finishes");
    let console = vm.console();
    assert_eq!(exit, KernelExit::Success, "console:\n{console}");
    assert!(
        console.contains(&format!("bench START calls={CALLS} ")),
        "the iteration count did not reach the kernel through fw_cfg:\n{console}"
    );
    assert!(console.contains("bench DONE wrong=0"), "{console}");

    for row in ROWS {
        let measured = console
            .lines()
            .find(|l| l.starts_with(&format!("bench ROW row={row} ")));
        let na = console
            .lines()
            .any(|l| l.starts_with(&format!("bench NA row={row} reason=")));
        let Some(line) = measured else {
            assert!(na, "row {row} is neither measured nor n/a:\n{console}");
            continue;
        };
        for key in [
            "base_insns",
            "insns",
            "traps",
            "ticks",
            "wrong",
            "hits",
            "missed",
            "produced",
            "dropped",
        ] {
            assert!(field(line, key).is_some(), "`{key}=` missing: {line}");
        }
        assert_eq!(field(line, "calls"), Some(CALLS), "{line}");
        assert_eq!(field(line, "wrong"), Some(0), "{line}");
        assert_eq!(
            field(line, "ticks"),
            Some(0),
            "the timer ran inside a timed window: {line}"
        );
        assert_eq!(field(line, "missed"), Some(0), "{line}");
        // Every call hits every probe of the row, with at least one trap.
        let probes = if row.ends_with("_kretprobe") { 2 } else { 1 };
        assert_eq!(field(line, "hits"), Some(CALLS * probes), "{line}");
        if row.ends_with("_optimized") {
            // Jump-optimized entry, trap-free return: no trap at all.
            assert!(line.contains(" path=optimized "), "{line}");
            assert_eq!(field(line, "traps"), Some(0), "{line}");
        } else {
            assert!(field(line, "traps").unwrap() >= CALLS, "{line}");
        }
        assert!(
            field(line, "insns").unwrap() > field(line, "base_insns").unwrap(),
            "{line}"
        );
        if row.starts_with("capture") {
            assert_eq!(
                field(line, "produced"),
                Some(CALLS),
                "one event per call: {line}"
            );
            assert_eq!(field(line, "dropped"), Some(0), "{line}");
        }
    }
    for phase in ["kprobe_int3", "kprobe_boosted", "kretprobe"] {
        assert!(
            console.contains(&format!("bench PHASE row={phase} ")),
            "phase split of {phase} missing:\n{console}"
        );
    }
}

/// The rows kernel/src/bench/smp.rs measures on every CPU at once.
const SMP_ROWS: &[&str] = &["kprobe_int3", "kprobe_boosted", "jprobe", "kretprobe"];

#[test]
fn bench_mode_at_two_vcpus_measures_every_cpu_at_once() {
    let mut vm = Qemu::boot_with("bench", |c| {
        c.icount = true;
        c.smp = 2;
        c.extra = vec![
            "-fw_cfg".into(),
            format!("name=opt/kdbg/bench-iterations,string={CALLS}"),
        ];
    })
    .expect("boot the kernel in bench mode at 2 vCPUs");
    let exit = vm
        .wait_exit(Duration::from_secs(120))
        .expect("bench mode finishes");
    let console = vm.console();
    assert_eq!(exit, KernelExit::Success, "console:\n{console}");
    assert!(console.contains("bench DONE wrong=0"), "{console}");
    for row in SMP_ROWS {
        let line = console
            .lines()
            .find(|l| l.starts_with(&format!("bench SMP row={row} ")))
            .unwrap_or_else(|| panic!("no SMP line for {row}:\n{console}"));
        assert_eq!(field(line, "cpus"), Some(2), "{line}");
        assert_eq!(field(line, "calls"), Some(CALLS), "{line}");
        // CALLS on CPU 0 alone, then CALLS on each of the two CPUs.
        assert_eq!(field(line, "hits"), Some(CALLS * 3), "{line}");
        assert_eq!(field(line, "missed"), Some(0), "{line}");
        assert_eq!(field(line, "wrong"), Some(0), "{line}");
        assert!(field(line, "interleaved").is_some(), "{line}");
        assert!(
            field(line, "one").unwrap() > field(line, "one_base").unwrap()
                && field(line, "all").unwrap() > field(line, "all_base").unwrap(),
            "probed windows must cost more than unprobed ones: {line}"
        );
    }
}
