//! Tab completion against a real ELF (a small Rust program built here, so
//! its symbol table has Rust manglings with hashes like the kernel's): code
//! locations complete to functions only, never to data or `::h0123...`
//! hash forms; probe ids complete to the probes that exist.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use shell::events::ProbeDef;
use shell::render::Render;
use shell::repl::{KdbgHelper, complete_line};
use shell::session::{Options, Session};

/// Built once per test binary (tests run in parallel: one builds, the
/// others wait).
fn fixture() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("complete-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("complete");
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/complete.rs");
            let st = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
                .args(["-g", "-C", "opt-level=1", "--crate-name", "complete", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .expect("rustc");
            assert!(st.success());
            out
        })
        .clone()
}

fn session() -> Session {
    Session::new(Options {
        endpoint: None,
        symbols: Some(fixture()),
        render: Render::default(),
        timeout: std::time::Duration::from_secs(1),
        tsc_hz: Some(1_000_000_000),
        resume: false,
        memory: None,
    })
    .unwrap()
}

fn complete(h: &KdbgHelper, line: &str) -> Vec<String> {
    complete_line(h, line, line.len()).1
}

#[test]
fn code_locations_complete_to_functions_only() {
    let s = session();
    let h = KdbgHelper::new(Arc::clone(&s.shared));
    let code = complete(&h, "kprobe complete::workloads::");
    assert!(
        code.iter().any(|c| c == "complete::workloads::fib_worker"),
        "{code:?}"
    );
    assert!(
        code.iter().any(|c| c == "complete::workloads::open_fd"),
        "{code:?}"
    );
    assert!(
        !code.iter().any(|c| c.contains("NEXT_FD")),
        "data offered for a probe: {code:?}"
    );
    assert!(
        !code.iter().any(|c| c.contains("::h")),
        "hash forms offered: {code:?}"
    );
    for cmd in ["break", "jprobe", "kretprobe", "disas"] {
        let c = complete(&h, &format!("{cmd} complete::workloads::N"));
        assert!(c.is_empty(), "`{cmd}` offered data: {c:?}");
    }
    // Last path components complete too.
    assert!(complete(&h, "kprobe fib_w").contains(&"fib_worker".to_string()));
    // Data is offered where data makes sense (x, watch), without hashes.
    let data = complete(&h, "x &complete::workloads::NEXT");
    assert_eq!(
        data,
        vec!["complete::workloads::NEXT_FD".to_string()],
        "{data:?}"
    );
    let data = complete(&h, "watch NEXT");
    assert_eq!(data, vec!["NEXT_FD".to_string()], "{data:?}");
}

#[test]
fn probe_ids_complete_to_live_probes_and_flags_to_flags() {
    let s = session();
    let h = KdbgHelper::new(Arc::clone(&s.shared));
    for id in [3, 13, 14] {
        s.shared.probes.insert(ProbeDef {
            id,
            kind: "jprobe",
            location: "f".into(),
            addr: 0x1000,
            layout: Default::default(),
            insn: None,
            insn_args: Vec::new(),
            printf: None,
        });
    }
    s.shared.probes.retire(&[13]);
    assert_eq!(complete(&h, "delete "), vec!["break", "3", "14"]);
    assert_eq!(complete(&h, "disable 1"), vec!["14"]);
    // Flags after a `-`; a flag is not a positional argument.
    assert_eq!(complete(&h, "watch -"), vec!["-r", "-a"]);
    assert_eq!(complete(&h, "jprobe --dr"), vec!["--dry-run"]);
    let f = complete(&h, "jprobe --dry-run complete::workloads::fib_w");
    assert_eq!(f, vec!["complete::workloads::fib_worker"]);
    // printf after the captures, then its built-in names.
    let p = complete(&h, "jprobe complete::workloads::fib_worker pri");
    assert_eq!(p, vec!["printf"]);
    let b = complete(
        &h,
        "jprobe complete::workloads::fib_worker printf \"%d\" $c",
    );
    assert_eq!(b, vec!["$comm", "$cpu"]);
}
