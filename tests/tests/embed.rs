//! docs/EMBEDDING.md's example: a second, tiny kernel
//! (`examples/embed-kernel`, built by `cargo xtask build` into
//! `target/kdbg/embed-kernel`) that hosts the stub and the probe core
//! through the glue the document shows. Booted in QEMU with a stock gdb
//! attached: registers, a breakpoint on one of its functions, continue, the
//! stop at it, and monitor commands (a kprobe by name that counts hits, a
//! refused one on its #[noprobe] trap handler, a kallsyms lookup). The
//! document shows the glue file verbatim, under 50 lines.

use std::path::PathBuf;
use std::time::Duration;

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(30);

/// The example kernel as xtask installs it.
fn example_kernel() -> PathBuf {
    tests::workspace_root().join("target/kdbg/embed-kernel")
}

/// The `0x...` number right after `marker` on the first line holding it.
fn hex_after(out: &str, marker: &str) -> u64 {
    let at = out
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in:\n{out}"));
    let hex: String = out[at + marker.len()..]
        .trim_start()
        .trim_start_matches("0x")
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("no hex after `{marker}` in:\n{out}"))
}

/// The `n=` argument of every `Breakpoint 1, embed_kernel::work (n=N)` stop.
fn work_stops(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Breakpoint 1, embed_kernel::work (n="))
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a decimal n")
        })
        .collect()
}

#[test]
fn example_kernel_answers_gdb() {
    let kernel = example_kernel();
    let mut vm = Qemu::boot_with("", |c| {
        c.kernel = kernel.clone();
        c.smp = 1; // a one-CPU kernel (it starts no other CPU)
    })
    .unwrap_or_else(|e| panic!("boot the example kernel (build it: cargo xtask build): {e}"));
    vm.wait_for_console("embed-kernel: running", BOOT)
        .expect("the example kernel boots and starts kdbg");
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let out = tests::gdb::batch_within(
        &kernel,
        addr,
        &[],
        &[
            "info registers",
            "break embed_kernel::work",
            "continue",
            "echo @@STOP1\\n",
            "p/x $pc",
            "monitor kprobe embed_kernel::tick",
            "monitor kprobe embed_kernel::trap",
            "monitor lookup embed_kernel::tick",
            "continue",
            "monitor probes",
            "bt 1",
            "delete",
            "detach",
        ],
        Duration::from_secs(60),
    );
    // Registers of the running kernel, stopped where gdb attached.
    for r in ["rax", "rsp", "rip", "eflags", "cs", "ss", "r15"] {
        assert!(out.lines().any(|l| l.starts_with(r)), "no {r} in:\n{out}");
    }
    assert_eq!(
        tests::gdb::registers(&out, "cs").first(),
        Some(&0x8),
        "kernel code segment:\n{out}"
    );
    // The breakpoint: gdb's stop report names the function, and the stopped
    // pc is the breakpoint's address (the stub rewound the int3).
    let bp = hex_after(&out, "Breakpoint 1 at");
    let stops = work_stops(&out);
    assert_eq!(stops.len(), 2, "two stops in work():\n{out}");
    assert!(
        stops[1] > stops[0],
        "the kernel ran between the stops:\n{out}"
    );
    let stop1 = &out[out.find("@@STOP1").expect("first stop marker")..];
    assert_eq!(
        hex_after(stop1, "$1 ="),
        bp,
        "stopped at the breakpoint:\n{out}"
    );
    // Monitor commands through the example's Host: a kprobe by name
    // (kallsyms from its Area) that counted the tick() between the stops,
    // and a refusal on its #[noprobe] trap handler (the linker script's
    // noprobe range).
    assert!(out.contains("ok id=1"), "monitor kprobe tick:\n{out}");
    assert!(
        out.contains("error code=blacklisted"),
        "monitor kprobe on the trap handler is refused:\n{out}"
    );
    assert!(
        out.contains("name=embed_kernel::tick+0x0"),
        "monitor lookup:\n{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("probe id=1 type=kprobe"))
        .unwrap_or_else(|| panic!("monitor probes row:\n{out}"));
    assert!(row.contains("sym=embed_kernel::tick+0x0"), "{row}");
    let hits: u64 = row
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("hits="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("hits= in {row}"));
    assert!(hits >= 1, "tick() ran between the stops: {row}");
    assert!(out.contains("#0  embed_kernel::work"), "backtrace:\n{out}");
    // Detached, the kernel runs on.
    vm.assert_still_running(Duration::from_millis(300));
}

/// docs/EMBEDDING.md shows the example's glue file verbatim, and it is
/// under 50 lines as the document says.
#[test]
fn embedding_doc_shows_the_whole_glue() {
    let root = tests::workspace_root();
    let glue = std::fs::read_to_string(root.join("examples/embed-kernel/src/glue.rs"))
        .expect("examples/embed-kernel/src/glue.rs");
    let doc = std::fs::read_to_string(root.join("docs/EMBEDDING.md")).expect("docs/EMBEDDING.md");
    let lines = glue.lines().count();
    assert!(lines < 50, "the glue has {lines} lines");
    assert!(
        doc.contains(&format!("```rust\n{glue}```")),
        "docs/EMBEDDING.md must show examples/embed-kernel/src/glue.rs verbatim"
    );
    assert!(
        doc.contains(&format!("{lines} lines")),
        "docs/EMBEDDING.md must state the glue's line count ({lines})"
    );
}
