//! End-to-end, the `kdbg` shell with jump-optimized probes (issue 18):
//! `probes` shows the PATH `optimized` for a probe that became a jump, and
//! `probes -v` says why a probe stays an int3 (a kprobe inside the first
//! probe's region keeps both as int3: `probe-in-region`).
//!
//! Needs the kernel (`cargo xtask build`) and QEMU.

use std::process::Command;

use tests::Qemu;

fn run(vm: &Qemu, script_text: &str) -> String {
    let dir = vm.workdir().expect("workdir").to_path_buf();
    let script = dir.join("optprobe.kdbg");
    std::fs::write(&script, script_text).unwrap();
    let out = Command::new(tests::kdbg_path())
        .arg("--connect")
        .arg(vm.stub_connect_arg())
        .arg("--symbols")
        .arg(tests::kernel_path())
        .arg("--batch")
        .arg(&script)
        .output()
        .expect("run kdbg");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
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
