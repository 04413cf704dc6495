//! Bad input to the kdbg shell, each one clear error line, and the shell
//! carries on (`--keep-going`): unknown command, unknown symbol, bad number,
//! a mid-instruction address, an unmapped address, a blacklisted function,
//! no connection, a stub that stops answering.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::Qemu;
use tests::kdbg::run_batch;

#[test]
fn bad_input_gives_one_error_line_each_and_the_shell_carries_on() {
    let vm = Qemu::boot_serving("");
    let args: Vec<String> = vec![
        "--connect".into(),
        vm.stub_connect_arg(),
        "--symbols".into(),
        tests::kernel_path().display().to_string(),
        "--keep-going".into(),
        "--timeout".into(),
        "10".into(),
    ];
    // Each bad line and what its one error line must say.
    let cases: &[(&str, &[&str])] = &[
        ("kprob sys_open", &["<stdin>:1:", "did you mean `kprobe`"]),
        ("kprobe sys_opn", &["unknown symbol `sys_opn`", "sys_open"]),
        ("x/4gx 0xzz", &["bad number `0xzz`"]),
        ("kprobe sys_open+1", &["in the middle of"]),
        (
            "x/2gx 0xdead000000000000",
            &["cannot read", "0xdead000000000000"],
        ),
        ("kprobe 0x10", &["not in the kernel image"]),
        ("jprobe memcpy", &["blacklist"]),
        ("wait stop timeout 0.5", &["timed out", "still running"]),
    ];
    let mut script: String = cases.iter().map(|(l, _)| format!("{l}\n")).collect();
    script.push_str("probes\n");
    let out = run_batch(&args, &script);
    let errs = out.errors();
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    assert_eq!(errs.len(), cases.len(), "{}", out.stderr);
    for ((line, want), err) in cases.iter().zip(&errs) {
        for w in *want {
            assert!(err.contains(w), "`{line}`: `{err}` lacks `{w}`");
        }
    }
    // The shell carried on: the last command ran.
    assert!(
        out.stdout.contains("no probes") || out.stdout.contains("ID"),
        "{}",
        out.stdout
    );

    // A stub that stops answering: freeze QEMU, one timeout error, carry on.
    let pid = vm.pid().expect("qemu pid");
    let mut args2 = args.clone();
    args2[6] = "3".into();
    let mut child = Command::new(tests::kdbg_path())
        .args(&args2)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "probes").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // Freeze QEMU (the stub stops answering), later thaw it.
    Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    writeln!(stdin, "probes").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .unwrap();
    writeln!(stdin, "help probes").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errs: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert!(
        errs.iter().any(|e| e.contains("did not answer")),
        "{stderr}"
    );
    assert!(stdout.contains("usage: probes"), "{stdout}");
}

#[test]
fn no_connection_is_one_clear_error() {
    let out = run_batch(
        &[
            "--symbols".into(),
            tests::kernel_path().display().to_string(),
            "--keep-going".into(),
        ],
        "probes\nhelp kprobe\n",
    );
    assert_eq!(out.code, 1);
    let errs = out.errors();
    assert_eq!(errs.len(), 1, "{}", out.stderr);
    assert!(errs[0].contains("not connected"), "{}", out.stderr);
    // Refused connection: one line naming the endpoint.
    let port = tests::free_tcp_port().unwrap();
    let endpoint = format!("tcp:127.0.0.1:{port}");
    let out = run_batch(&["--connect".into(), endpoint.clone()], "");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains(&endpoint), "{}", out.stderr);
}
