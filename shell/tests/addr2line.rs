//! `kdbg addr2line` against binutils `addr2line` on a C program compiled
//! with gcc during the test. Uses the `kdbg` binary when it has the
//! command (`$KDBG_BIN`, else the one cargo built), otherwise the same code
//! through `shell/src/addr2line.rs` and the symbols library.

#[path = "../src/addr2line.rs"]
#[allow(dead_code)]
mod addr2line;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn program() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../symbols/tests/fixtures/cprog");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("a2l-prog-{}", std::process::id()));
    if !out.exists() {
        let st = Command::new("gcc")
            .args(["-g", "-O2", "-o"])
            .arg(&out)
            .args(["main.c", "a.c", "b.c"].map(|f| src.join(f)))
            .status()
            .expect("gcc must be installed");
        assert!(st.success());
    }
    out
}

/// The kdbg binary if it implements `addr2line`.
fn kdbg() -> Option<PathBuf> {
    let bin = std::env::var_os("KDBG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kdbg")));
    let out = Command::new(&bin)
        .args(["addr2line", "--help"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success() && text.contains("kdbg addr2line")).then_some(bin)
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn addresses(elf: &Path) -> Vec<String> {
    let e = symbols::Elf::open(elf).expect("open");
    let text = e.section_range(".text").expect(".text");
    (text.start..text.end)
        .step_by(5)
        .map(|a| format!("{a:#x}"))
        .chain(["0".into(), "zz".into(), "0x".into()])
        .collect()
}

#[test]
fn same_output_as_binutils() {
    let prog = program();
    let addrs = addresses(&prog);
    let input: String = addrs.iter().map(|a| format!("{a}\n")).collect();
    for flags in [
        vec!["-f", "-i"],
        vec!["-fiC"],
        vec!["-a", "-f", "-p"],
        vec![],
    ] {
        let theirs = run_with_stdin(
            Command::new("addr2line").args(&flags).arg("-e").arg(&prog),
            &input,
        );
        let ours = match kdbg() {
            Some(bin) => {
                // stdin and argument forms.
                let from_stdin = run_with_stdin(
                    Command::new(&bin)
                        .arg("addr2line")
                        .args(&flags)
                        .arg("-e")
                        .arg(&prog),
                    &input,
                );
                let out = Command::new(&bin)
                    .arg("addr2line")
                    .arg(format!("--exe={}", prog.display()))
                    .args(&flags)
                    .args(&addrs)
                    .output()
                    .expect("kdbg");
                assert_eq!(String::from_utf8_lossy(&out.stdout), from_stdin);
                from_stdin
            }
            None => {
                let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
                args.extend(["-e".to_string(), prog.display().to_string()]);
                let parsed = addr2line::parse(&args).expect("parse").expect("not help");
                assert_eq!(parsed.exe, prog.display().to_string());
                let elf = symbols::Elf::open(&parsed.exe).expect("open");
                let mut s = symbols::binutils::Session::new(&elf, parsed.opts);
                addrs.iter().map(|a| s.format(a)).collect()
            }
        };
        assert_eq!(ours, theirs, "flags {flags:?}");
    }
}

#[test]
fn arguments_and_errors() {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let p = addr2line::parse(&args(&["-fiCa", "-eprog", "0x10", "--", "-5"]))
        .expect("ok")
        .expect("args");
    assert!(p.opts.functions && p.opts.inlines && p.opts.demangle && p.opts.addresses);
    assert_eq!(p.exe, "prog");
    assert_eq!(p.addrs, ["0x10", "-5"]);
    assert!(addr2line::parse(&args(&["--help"])).expect("ok").is_none());
    let err = addr2line::parse(&args(&["-x"]))
        .err()
        .expect("unknown flag");
    assert!(err.to_string().contains("unknown option -x"));
    let err = addr2line::run(&args(&["-e", "/nonexistent/elf", "0"])).expect_err("missing file");
    assert!(err.to_string().contains("check the path"), "{err}");
    if let Some(bin) = kdbg() {
        let out = Command::new(bin)
            .args(["addr2line", "-e", "/nonexistent/elf", "0"])
            .output()
            .expect("run");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/elf"));
    }
}
