//! kdbg's stub against QEMU's own gdbstub, which reads the emulated CPU
//! directly (ground truth). The same kernel boots twice under
//! `-icount shift=0`: once paused under QEMU's `-gdb`, once stopped at boot
//! by `kdbg.wait` under kdbg's stub. A stock gdb stops both at the same
//! deterministic point (the insn worker's call of `insn_rip_store` with
//! `x == 3`, a hardware breakpoint: a software one would allocate in the
//! kdbg run before the workers' stacks are made and shift every stack),
//! then single-steps both through `call_insn_all`'s instruction-class
//! workloads: RIP-relative loads and stores, pushf/popf, cli/sti, calls and
//! returns (rel32, through a register, `ret imm16`), jcc rel8/rel32, jmp
//! (rel8, through a register), `loop`. In the kdbg run a kprobe (boosted, relocated jcc), a
//! jprobe and a kretprobe sit on the path, set after the stop (allocations
//! then no longer move the stacks). A write and a read watchpoint on the
//! data word the first two paths store and load are set off by stepped
//! instructions (under TCG the watchpoint's #DB and the step's trap would
//! arrive as two traps; kdbg's stub steps such an instruction with the
//! slot off and reports the watchpoint, see `stub::step::watch_hits`). At
//! every step every register both stubs report and the 8 stack words above
//! rsp must agree, and both stubs report the watchpoint triggers.
//!
//! Legitimate differences, not compared:
//! - registers only QEMU reports (k_gs_base, cr0-cr8, efer, fs/gs base are
//!   compared): kdbg's target description has no control registers;
//! - `ftag`: QEMU's gdbstub always reports 0 (it does not implement the
//!   tag word); kdbg reports the FXSAVE tag expanded as gdb expects (0xffff,
//!   all empty);
//! - of the x87/SSE state the control words and mxcsr are compared (the
//!   vector registers are not used on this path and each read costs a
//!   round trip per step).

use std::collections::BTreeMap;
use std::time::Duration;

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(90);

/// Stops compared: each path's first stop and one per step.
const STOPS: usize = 57;

type Regs = BTreeMap<String, String>;

/// One stop: the registers gdb printed and the stack words above rsp.
#[derive(Debug, Default, Clone, PartialEq)]
struct Step {
    regs: Regs,
    stack: Vec<String>,
    pc: String,
    /// gdb reported a watchpoint trigger with this stop.
    watch: bool,
}

/// Registers compared (present in both target descriptions).
const COMPARED: &[&str] = &[
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs", "fs_base", "gs_base",
    "mxcsr", "fctrl", "fstat",
];

/// The paths stepped: each function in `call_insn_all` order (reached with
/// a temporary hardware breakpoint) and how many `stepi` to take from it;
/// each path ends at the latest on the first instruction back in
/// `call_insn_all`. Together they cover every instruction class of the
/// insn workloads: RIP-relative loads and stores, pushf/popf, cli/sti,
/// call rel32 and through a register, jcc rel8/rel32, jmp rel8 and through
/// a register (a tail call into a kretprobed function), `ret imm16`, `loop`.
const PATHS: &[(&str, usize)] = &[
    ("insn_rip_store", 3),
    ("insn_rip_load", 2),
    ("insn_pushf_popf", 4),
    ("insn_cli_sti", 4),
    ("insn_call_rel32", 5),
    ("call_insn_jcc_rel8", 5),
    ("call_insn_jcc_rel32", 5),
    ("insn_jmp_rel8", 3),
    ("call_insn_ret_imm16", 4),
    ("insn_call_reg", 4),
    ("insn_jmp_reg", 3),
    ("insn_loop", 3),
];

fn dump(cmds: &mut Vec<String>) {
    cmds.push("echo @@STEP\\n".to_string());
    cmds.push(
        "info registers rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip eflags cs ss ds es fs gs fs_base gs_base mxcsr fctrl fstat ftag"
            .to_string(),
    );
    cmds.push("x/8gx $rsp".to_string());
}

/// Paths whose first stepped instruction sets off a watchpoint.
const WATCH_PATHS: usize = 2;

/// The gdb commands of one run. Under QEMU's gdbstub the watchpoint paths
/// take one `stepi` more: its gdbstub answers the `stepi` after a step that
/// set off a watchpoint with a stop in place (nothing executed, the same
/// registers again; on hardware and under kdbg each `stepi` runs one
/// instruction), and [`drop_qemu_watch_repeats`] removes that stop.
fn script(under_qemu_gdbstub: bool) -> Vec<String> {
    let mut cmds = vec![
        "set breakpoint condition-evaluation host".to_string(),
        "hbreak *insn_rip_store if $rdi == 3".to_string(),
        "continue".to_string(),
        "delete".to_string(),
    ];
    cmds.push("__PROBES__".to_string());
    // Set off by the stepped store (insn_rip_store) and load
    // (insn_rip_load), then removed.
    cmds.push("watch *(long *)&kdbg_insn_data".to_string());
    cmds.push("rwatch *(long *)&kdbg_insn_data".to_string());
    for (i, (f, steps)) in PATHS.iter().enumerate() {
        if i == 2 {
            cmds.push("delete".to_string());
        }
        if i > 0 {
            cmds.push(format!("thbreak *{f}"));
            cmds.push("continue".to_string());
        }
        dump(&mut cmds);
        let extra = usize::from(under_qemu_gdbstub && i < WATCH_PATHS);
        for _ in 0..*steps + extra {
            cmds.push("stepi".to_string());
            dump(&mut cmds);
        }
    }
    cmds
}

fn parse(out: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut blocks = out.split("@@STEP\n");
    // A stepi's report (the watchpoint's values) ends the block before
    // the stop's own dump.
    let mut watch = blocks.next().is_some_and(reports_watch);
    for block in blocks {
        let mut s = Step {
            watch,
            ..Step::default()
        };
        watch = reports_watch(block);
        for line in block.lines() {
            if line.starts_with("rip ") {
                s.pc = line
                    .split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            if line.starts_with("0x")
                && line
                    .split(':')
                    .next()
                    .is_some_and(|head| !head.contains(" in "))
                && line.contains(':')
            {
                let rest = &line[line.find(':').unwrap_or(0) + 1..];
                // Only `x/8gx` rows (a source line gdb prints at a stop
                // may also start with an address and hold a colon).
                let words: Vec<&str> = rest.split_whitespace().collect();
                if !words.is_empty() && words.iter().all(|w| w.starts_with("0x")) {
                    s.stack.extend(words.iter().map(|w| w.to_string()));
                }
                continue;
            }
            let mut w = line.split_whitespace();
            if let (Some(name), Some(v)) = (w.next(), w.next())
                && COMPARED.contains(&name)
                && v.starts_with("0x")
            {
                s.regs.insert(name.to_string(), v.to_string());
            }
        }
        steps.push(s);
    }
    steps
}

fn reports_watch(text: &str) -> bool {
    text.contains("\nOld value = ") || text.contains("\nValue = ")
}

/// QEMU's gdbstub stops in place on the `stepi` after a watchpoint trigger
/// (see [`script`]): those stops, equal to the watchpoint's stop, go.
fn drop_qemu_watch_repeats(steps: Vec<Step>) -> (Vec<Step>, usize) {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    let mut dropped = 0;
    for s in steps {
        if let Some(prev) = out.last()
            && prev.watch
            && prev.regs == s.regs
            && prev.stack == s.stack
        {
            dropped += 1;
            continue;
        }
        out.push(s);
    }
    (out, dropped)
}

fn run(under_qemu_gdbstub: bool) -> (Vec<Step>, String) {
    let gdb_port = tests::free_tcp_port().expect("a free port");
    let append = if under_qemu_gdbstub {
        // Same length as the kdbg run's command line.
        "serve kdbg.quiet kdbg.quiet"
    } else {
        "serve kdbg.quiet kdbg.wait "
    };
    let mut vm = Qemu::boot_with(append, |cfg| {
        cfg.icount = true;
        cfg.timeout = Duration::from_secs(300);
        if under_qemu_gdbstub {
            cfg.extra.extend([
                "-gdb".into(),
                format!("tcp:127.0.0.1:{gdb_port}"),
                "-S".into(),
            ]);
        }
    })
    .expect("boot the reference kernel");
    let addr = if under_qemu_gdbstub {
        format!("127.0.0.1:{gdb_port}").parse().expect("an address")
    } else {
        vm.wait_for_console("waiting for a debugger", BOOT)
            .expect("kdbg.wait stops the boot");
        vm.wait_for_stub_port(BOOT).expect("stub port")
    };
    let probes = if under_qemu_gdbstub {
        "echo no probes\\n".to_string()
    } else {
        // A boosted kprobe on a relocated jcc, a jprobe on a Rust-called
        // asm function, a kretprobe whose return is stepped.
        "monitor kprobe insn_jcc_rel8\nmonitor jprobe insn_call_rel32\nmonitor kretprobe kdbg_insn_helper"
            .to_string()
    };
    let mut cmds = script(under_qemu_gdbstub);
    let mut expanded = Vec::new();
    for c in cmds.drain(..) {
        if c == "__PROBES__" {
            expanded.extend(probes.lines().map(str::to_string));
        } else {
            expanded.push(c);
        }
    }
    let refs: Vec<&str> = expanded.iter().map(String::as_str).collect();
    let kernel = vm.config().kernel.clone();
    let out = tests::gdb::batch(&kernel, addr, &["set language c"], &refs);
    if let Ok(dir) = std::env::var("KDBG_DIFF_DUMP") {
        let name = if under_qemu_gdbstub { "qemu" } else { "kdbg" };
        let _ = std::fs::write(format!("{dir}/{name}.txt"), &out);
    }
    (parse(&out), out)
}

#[test]
fn every_single_step_agrees_with_qemus_gdbstub() {
    let started = std::time::Instant::now();
    let truth = std::thread::spawn(|| run(true));
    let (kdbg, kdbg_out) = run(false);
    let (qemu, qemu_out) = truth.join().expect("the QEMU gdbstub run");
    let (qemu, repeats) = drop_qemu_watch_repeats(qemu);
    assert_eq!(
        repeats, WATCH_PATHS,
        "QEMU's gdbstub stopped in place once after each watchpoint trigger"
    );
    let triggered = |steps: &[Step]| steps.iter().filter(|s| s.watch).count();
    assert_eq!(
        (triggered(&qemu), triggered(&kdbg)),
        (WATCH_PATHS, WATCH_PATHS),
        "each watchpoint path's first stepi reported its watchpoint in both runs"
    );
    assert!(
        qemu.len() == STOPS && kdbg.len() == STOPS,
        "both runs made {STOPS} stops (qemu {}, kdbg {}):\n--- qemu:\n{}\n--- kdbg:\n{}",
        qemu.len(),
        kdbg.len(),
        &qemu_out[qemu_out.len().saturating_sub(3000)..],
        &kdbg_out[kdbg_out.len().saturating_sub(3000)..]
    );
    eprintln!(
        "qemu differential: {STOPS} stops each in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // The watchpoints triggered in both runs, the same way: gdb prints the
    // write watchpoint's old and new value and the read watchpoint's value.
    for mark in ["\nOld value = ", "\nValue = "] {
        let (q, k) = (
            qemu_out.matches(mark).count(),
            kdbg_out.matches(mark).count(),
        );
        assert!(
            q >= 1 && q == k,
            "watchpoint reports `{}`: qemu {q}, kdbg {k}\n--- kdbg:\n{}",
            mark.trim(),
            &kdbg_out[..kdbg_out.len().min(6000)]
        );
    }
    let mut classes = std::collections::BTreeSet::new();
    for (i, (q, k)) in qemu.iter().zip(&kdbg).enumerate() {
        for name in COMPARED {
            let (qv, kv) = (q.regs.get(*name), k.regs.get(*name));
            assert!(
                qv.is_some() && kv.is_some(),
                "step {i}: {name} missing: qemu {q:?} kdbg {k:?}"
            );
            assert_eq!(
                qv, kv,
                "step {i} at {}: {name} differs (qemu {qv:?}, kdbg {kv:?})\nqemu: {q:?}\nkdbg: {k:?}",
                q.pc
            );
        }
        assert_eq!(
            q.stack, k.stack,
            "step {i} at {}: the stack above rsp differs",
            q.pc
        );
        assert_eq!(q.stack.len(), 8, "step {i}: {q:?}");
        for f in [
            "insn_rip_store",
            "insn_rip_load",
            "insn_pushf_popf",
            "insn_cli_sti",
            "insn_call_rel32",
            "insn_jcc_rel8",
            "insn_jcc_rel32",
            "insn_jmp_rel8",
            "call_insn_ret_imm16",
            "insn_ret_imm16",
            "insn_call_reg",
            "insn_jmp_reg",
            "insn_loop",
            "kdbg_insn_helper",
        ] {
            if q.pc.contains(&format!("<{f}")) {
                classes.insert(f);
            }
        }
    }
    assert!(
        classes.len() >= 14,
        "the steps covered the instruction classes: {classes:?}"
    );
}
