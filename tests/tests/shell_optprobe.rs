//! End-to-end, the `kdbg` shell with jump-optimized probes (issue 18):
//! `probes` shows the PATH `optimized` for a probe that became a jump, and
//! `probes -v` says why a probe stays an int3 (a kprobe inside the first
//! probe's region keeps both as int3: `probe-in-region`).
//!
//! Needs the kernel (`cargo xtask build`) and QEMU.

use tests::Qemu;

fn run(vm: &Qemu, script_text: &str) -> String {
    let (_, out) = tests::kdbg::run_batch_file(vm, "optprobe.kdbg", script_text);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

#[test]
fn probes_shows_optimized_and_v_says_why_not() {
    let vm = Qemu::boot_serving("kdbg.quiet");
    // fib's entry (mov rdi,rax; cmp rdi,2: one 7-byte region) is optimized.
    let out = run(&vm, "kprobe fib\nprobes\nprobes -v\n");
    assert!(out.contains(" optimized"), "{out}");
    assert!(!out.contains("not optimized"), "{out}");
    // A second kprobe inside the region: the first goes back to int3, and
    // -v names the reason for both.
    let out = run(&vm, "kprobe fib+3\nprobes\nprobes -v\n");
    assert!(!out.contains(" optimized "), "{out}");
    assert!(
        out.contains("(not optimized: probe-in-region)"),
        "the reason is missing:\n{out}"
    );
    assert!(
        out.matches("(not optimized:").count() >= 2,
        "both probes say why:\n{out}"
    );
}
