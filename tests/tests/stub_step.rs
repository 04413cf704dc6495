//! Exact single steps through kdbg's stub, checked with a stock gdb against
//! what the CPU does (and what QEMU's own gdbstub shows, see
//! `qemu_differential.rs`): the live data segment selectors, `stepi` over
//! `pushfq` (TF must not leak into the pushed image), over `sti` (exactly
//! one instruction despite the interrupt shadow) and over the `ret` of a
//! kretprobed function (the real return address, never the trampoline).

use std::time::Duration;

use tests::Qemu;
use tests::gdb::{registers, words};

const BOOT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_millis(300);

fn boot_serving() -> Qemu {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot the reference kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm
}

fn gdb(vm: &mut Qemu, cmds: &[&str]) -> String {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    tests::gdb::batch(&kernel, addr, &["set language c"], cmds)
}

/// The `<symbol+off>` gdb shows for the pc in `x/i $pc` lines, in order.
fn pc_symbols(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("=> 0x"))
        .filter_map(|l| {
            let a = l.find('<')?;
            let b = l[a..].find('>')?;
            Some(l[a + 1..a + b].to_string())
        })
        .collect()
}

#[test]
fn data_segment_selectors_are_the_live_ones() {
    let mut vm = boot_serving();
    let out = gdb(&mut vm, &["info registers ds es fs gs cs ss", "detach"]);
    for seg in ["ds", "es", "fs", "gs", "ss"] {
        assert_eq!(
            registers(&out, seg),
            vec![0x10],
            "{seg} is the kernel data selector the CPU holds:\n{out}"
        );
    }
    assert_eq!(registers(&out, "cs"), vec![0x8], "{out}");
    vm.assert_still_running(SETTLE);
}

#[test]
fn stepi_over_pushf_pushes_the_codes_own_flags() {
    let mut vm = boot_serving();
    let out = gdb(
        &mut vm,
        &[
            "hbreak *insn_pushf_popf",
            "continue",
            "delete",
            "info registers eflags rsp",
            "stepi",
            "x/i $pc",
            "info registers eflags rsp",
            "x/gx $rsp",
            "stepi",
            "x/i $pc",
            "info registers eflags rsp",
            "detach",
        ],
    );
    let eflags = registers(&out, "eflags");
    let rsp = registers(&out, "rsp");
    assert_eq!((eflags.len(), rsp.len()), (3, 3), "{out}");
    let image = words(&out);
    assert_eq!(image.len(), 1, "{out}");
    assert_eq!(
        image[0] & 0x100,
        0,
        "the stub's TF leaked into the pushed flags:\n{out}"
    );
    assert_eq!(
        image[0], eflags[0],
        "pushfq pushed the flags the code had (IF included):\n{out}"
    );
    assert_ne!(image[0] & 0x200, 0, "IF was set in the task:\n{out}");
    assert_eq!(rsp[1], rsp[0] - 8, "{out}");
    assert_eq!(rsp[2], rsp[0], "{out}");
    assert_eq!(eflags[2], eflags[0], "popfq restores them:\n{out}");
    assert_eq!(
        pc_symbols(&out),
        vec!["insn_pushf_popf+1", "insn_pushf_popf+2"],
        "one instruction per stepi:\n{out}"
    );
    vm.assert_still_running(SETTLE);
}

#[test]
fn stepi_over_sti_is_exactly_one_instruction() {
    let mut vm = boot_serving();
    let out = gdb(
        &mut vm,
        &[
            "hbreak *insn_cli_sti",
            "continue",
            "delete",
            "stepi",
            "x/i $pc",
            "info registers eflags",
            "stepi",
            "x/i $pc",
            "info registers eflags",
            "stepi",
            "x/i $pc",
            "detach",
        ],
    );
    assert_eq!(
        pc_symbols(&out),
        vec!["insn_cli_sti+1", "insn_cli_sti+2", "insn_cli_sti+6"],
        "cli, sti, lea: one instruction per stepi:\n{out}"
    );
    let eflags = registers(&out, "eflags");
    assert_eq!(eflags.len(), 2, "{out}");
    assert_eq!(eflags[0] & 0x200, 0, "cli cleared IF:\n{out}");
    assert_ne!(eflags[1] & 0x200, 0, "sti set IF:\n{out}");
    vm.assert_still_running(SETTLE);
}

#[test]
fn stepi_over_a_kretprobed_return_lands_on_the_real_return_address() {
    let mut vm = boot_serving();
    let out = gdb(
        &mut vm,
        &[
            "monitor stream off",
            "monitor kretprobe kdbg_insn_helper",
            "hbreak *kdbg_insn_helper+4",
            "continue",
            "delete",
            "monitor probes",
            "x/i $pc",
            "x/gx $rsp",
            "stepi",
            "info registers rip",
            "x/i $pc",
            "stepi",
            "info registers rip",
            "x/i $pc",
            "monitor probes",
            "monitor probe delete 1",
            "monitor stream on",
            "detach",
        ],
    );
    let ret = words(&out);
    assert_eq!(ret.len(), 1, "{out}");
    let rip = registers(&out, "rip");
    assert_eq!(rip.len(), 2, "{out}");
    let syms = pc_symbols(&out);
    assert_eq!(
        syms.first().map(String::as_str),
        Some("kdbg_insn_helper+4"),
        "{out}"
    );
    assert_eq!(
        rip[0], ret[0],
        "stepi from the ret lands on the real return address:\n{out}"
    );
    assert!(
        !out.contains("trampoline"),
        "the user saw kdbg's trampoline:\n{out}"
    );
    assert!(
        rip[1] != rip[0] && syms.len() == 3,
        "the next stepi stops after one instruction:\n{out}"
    );
    // The return was recorded: the kretprobe's hit count grew by one.
    let hits: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with("probe id=1 "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("hits="))
                .and_then(|v| v.parse().ok())
        })
        .collect();
    assert_eq!(hits.len(), 2, "{out}");
    assert_eq!(
        hits[1],
        hits[0] + 1,
        "the stepped return was counted:\n{out}"
    );
    vm.assert_still_running(SETTLE);
}
