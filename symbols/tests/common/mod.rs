//! Shared test support: the C fixture (compiled with gcc during the test),
//! the reference kernel's path, and running binutils `addr2line`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

static LOCK: Mutex<()> = Mutex::new(());

pub const FIXTURE_SOURCES: [&str; 3] = ["main.c", "a.c", "b.c"];

fn fixture_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cprog")
}

fn scratch() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("symbols-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install gcc/binutils)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles the fixture with `gcc -g -O2 <extra>` into `name` (once per test binary).
pub fn build(name: &str, extra: &[&str]) -> PathBuf {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = scratch().join(name);
    if out.exists() {
        return out;
    }
    let tmp = scratch().join(format!("{name}.tmp"));
    let mut cmd = Command::new("gcc");
    cmd.args(["-g", "-O2"]).args(extra).arg("-o").arg(&tmp);
    for s in FIXTURE_SOURCES {
        cmd.arg(fixture_src().join(s));
    }
    run(&mut cmd);
    std::fs::rename(&tmp, &out).expect("rename fixture");
    out
}

/// The fixture built with `gcc -g -O2`.
pub fn fixture() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| build("prog", &[]))
}

/// `objcopy ARGS fixture OUT`.
pub fn objcopy(name: &str, args: &[&str]) -> PathBuf {
    let src = fixture().to_path_buf();
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = scratch().join(name);
    if !out.exists() {
        let tmp = scratch().join(format!("{name}.tmp"));
        run(Command::new("objcopy").args(args).arg(&src).arg(&tmp));
        std::fs::rename(&tmp, &out).expect("rename");
    }
    out
}

/// A scratch file with `bytes`.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, bytes).expect("write scratch file");
    p
}

/// The reference kernel ELF: `$KDBG_KERNEL` or `target/kdbg/kernel`. Panics
/// with instructions if it is missing (these tests never pass silently).
pub fn kernel() -> PathBuf {
    let p = std::env::var_os("KDBG_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kdbg/kernel"));
    assert!(
        p.is_file(),
        "the reference kernel ELF {} is missing: build it with `cargo xtask build` (or set KDBG_KERNEL)",
        p.display()
    );
    p
}

/// binutils `addr2line FLAGS -e ELF` with `addrs` on stdin.
pub fn binutils(elf: &Path, flags: &[&str], addrs: &[u64]) -> String {
    use std::io::Write;
    let mut child = Command::new("addr2line")
        .args(flags)
        .arg("-e")
        .arg(elf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("binutils addr2line must be installed (apt-get install binutils)");
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("addr2line output");
    writer.join().expect("join").expect("write addresses");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf8")
}

/// Our `addr2line` with the same flags.
pub fn ours(elf: &symbols::Elf, flags: &[&str], addrs: &[u64]) -> String {
    let mut opts = symbols::binutils::Options::default();
    for f in flags {
        for c in f.trim_start_matches('-').chars() {
            match c {
                'f' => opts.functions = true,
                'i' => opts.inlines = true,
                'C' => opts.demangle = true,
                'a' => opts.addresses = true,
                'p' => opts.pretty = true,
                's' => opts.basenames = true,
                _ => panic!("flag {c}"),
            }
        }
    }
    let mut s = symbols::binutils::Session::new(elf, opts);
    addrs.iter().map(|a| s.format(&format!("{a:#x}"))).collect()
}

/// Compares outputs address by address; returns the differing blocks.
pub fn diff_blocks(ours: &str, theirs: &str) -> Vec<(String, String)> {
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    if a == b {
        return Vec::new();
    }
    vec![(
        a.iter()
            .zip(&b)
            .find(|(x, y)| x != y)
            .map(|(x, _)| x.to_string())
            .unwrap_or_default(),
        b.iter()
            .zip(&a)
            .find(|(x, y)| x != y)
            .map(|(x, _)| x.to_string())
            .unwrap_or_default(),
    )]
}

/// `[start, end)` of `.text`.
pub fn text_range(elf: &symbols::Elf) -> std::ops::Range<u64> {
    elf.section_range(".text").expect(".text")
}

/// `n` pseudo-random addresses in `range` (deterministic).
pub fn sample(range: std::ops::Range<u64>, n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            range.start + x % (range.end - range.start)
        })
        .collect()
}
