//! Bad input to the kdbg shell, each one clear error line, and the shell
//! carries on (`--keep-going`): unknown command, unknown symbol, bad number,
//! a mid-instruction address, an unmapped address, a blacklisted function,
//! no connection, a stub that stops answering.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::Qemu;

fn run_kdbg(args: &[String], script: &str) -> (i32, String, String) {
    let mut child = Command::new(tests::kdbg_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kdbg");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("error:")).collect()
}

#[test]
fn bad_input_gives_one_error_line_each_and_the_shell_carries_on() {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("workload tasks started", Duration::from_secs(60))
        .expect("kernel serving");
    let args: Vec<String> = vec![
        "--connect".into(),
        vm.stub_connect_arg(),
        "--symbols".into(),
        tests::kernel_path().display().to_string(),
        "--keep-going".into(),
        "--timeout".into(),
        "10".into(),
    ];
    let script = "\
kprob sys_open
kprobe sys_opn
x/4gx 0xzz
kprobe sys_open+1
x/2gx 0xdead000000000000
kprobe 0x10
jprobe memcpy
wait stop timeout 0.5
probes
";
    let (code, stdout, stderr) = run_kdbg(&args, script);
    let errs = error_lines(&stderr);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    assert!(
        errs[0].contains("<stdin>:1:") && errs[0].contains("did you mean `kprobe`"),
        "{stderr}"
    );
    assert!(
        errs[1].contains("unknown symbol `sys_opn`") && errs[1].contains("sys_open"),
        "{stderr}"
    );
    assert!(errs[2].contains("bad number `0xzz`"), "{stderr}");
    assert!(errs[3].contains("in the middle of"), "{stderr}");
    assert!(
        errs[4].contains("cannot read") && errs[4].contains("0xdead000000000000"),
        "{stderr}"
    );
    assert!(errs[5].contains("not in the kernel image"), "{stderr}");
    assert!(errs[6].contains("blacklist"), "{stderr}");
    assert!(
        errs[7].contains("timed out") && errs[7].contains("still running"),
        "{stderr}"
    );
    assert_eq!(errs.len(), 8, "{stderr}");
    // The shell carried on: the last command ran.
    assert!(
        stdout.contains("no probes") || stdout.contains("ID"),
        "{stdout}"
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
    let errs = error_lines(&stderr);
    assert!(
        errs.iter().any(|e| e.contains("did not answer")),
        "{stderr}"
    );
    assert!(stdout.contains("usage: probes"), "{stdout}");
}

#[test]
fn no_connection_is_one_clear_error() {
    let (code, _out, stderr) = run_kdbg(
        &[
            "--symbols".into(),
            tests::kernel_path().display().to_string(),
            "--keep-going".into(),
        ],
        "probes\nhelp kprobe\n",
    );
    assert_eq!(code, 1);
    let errs = error_lines(&stderr);
    assert_eq!(errs.len(), 1, "{stderr}");
    assert!(errs[0].contains("not connected"), "{stderr}");
    // Refused connection: one line naming the endpoint.
    let port = tests::free_tcp_port().unwrap();
    let (code, _out, stderr) = run_kdbg(&["--connect".into(), format!("tcp:127.0.0.1:{port}")], "");
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("tcp:127.0.0.1:{port}")),
        "{stderr}"
    );
}
