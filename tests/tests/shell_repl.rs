//! The kdbg REPL on a real pseudo-terminal (python3's `pty` module drives
//! it like a user): Tab completes a command and a symbol, events print while
//! the prompt waits, Ctrl-C stops the running kernel, the prompt survives an
//! event flood, an asynchronous stop redraws the prompt with the new state,
//! leaving says what stays in the kernel, and history survives a restart.

use std::process::Command;
use std::time::Duration;

use tests::Qemu;

/// Types `keys` steps into kdbg under a pty; each step waits for a regex
/// in the output. Prints the whole transcript on failure.
const DRIVER: &str = r#"
import os, pty, re, sys, time, json
argv = json.loads(sys.argv[1])
steps = json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execvpe(argv[0], argv, dict(os.environ, TERM="xterm", COLUMNS="200", LINES="50"))
buf = b""
cursor = 0
def read_until(pattern, timeout):
    global buf, cursor
    end = time.time() + timeout
    rx = re.compile(pattern.encode(), re.S)
    while time.time() < end:
        m = rx.search(buf, cursor)
        if m:
            cursor = m.end()
            return True
        try:
            import select
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            break
    return False
ok = True
for keys, want, timeout in steps:
    if keys:
        os.write(fd, keys.encode())
    if want and not read_until(want, timeout):
        sys.stdout.write("MISSING: %r after %r\n" % (want, keys))
        ok = False
        break
# Let kdbg leave on its own (Ctrl-D saves the history), then make sure.
end = time.time() + 15
while time.time() < end:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        break
    if done:
        break
    read_until("\x00never", 0.2)
try:
    os.kill(pid, 9)
except OSError:
    pass
sys.stdout.write(buf.decode("utf-8", "replace"))
sys.exit(0 if ok else 1)
"#;

fn drive(
    vm: &Qemu,
    history: &std::path::Path,
    extra: &[&str],
    steps: &[(&str, &str, u32)],
) -> (bool, String) {
    let mut argv = vec![
        tests::kdbg_path().display().to_string(),
        "--connect".into(),
        vm.stub_connect_arg(),
        "--symbols".into(),
        tests::kernel_path().display().to_string(),
        "--color".into(),
        "never".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let argv = serde_json::json!(argv);
    let steps = serde_json::Value::Array(
        steps
            .iter()
            .map(|(k, w, t)| serde_json::json!([k, w, t]))
            .collect(),
    );
    let out = Command::new("python3")
        .args(["-c", DRIVER])
        .arg(argv.to_string())
        .arg(steps.to_string())
        .env("KDBG_HISTORY", history)
        .output()
        .expect("python3 is needed for the pty test");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn repl_completion_events_ctrl_c_flood_and_history() {
    let vm = Qemu::boot_serving("");
    let history = vm.workdir().expect("workdir").join("history");
    let (ok, transcript) = drive(
        &vm,
        &history,
        &[],
        &[
            ("", r"kdbg \(running\)> ", 30),
            // Tab completes the command, then the symbol.
            ("jpro\t", r"jprobe ", 10),
            ("spawn_ta\t", r"spawn_task", 10),
            ("\r", r"probe #\d+ set", 30),
            // Events scroll while the prompt waits.
            ("", r"spawn_task\(clone_flags=0x", 60),
            ("kretprobe sys_open\r", r"sys_open\(path=", 60),
            // The flood: fib is recursive and hot; the prompt still answers.
            ("jprobe fib\r", r"fib\(n=", 60),
            ("help probes\r", r"usage: probes", 60),
            ("live off\r", r"live event display off", 60),
            ("", r"kdbg \(running\)> ", 10),
            // Ctrl-C stops the running kernel.
            ("\x03", r"stopped:", 30),
            ("", r"kdbg \(stopped\)> ", 10),
            ("regs\r", r"rip\s+0x", 30),
            // A stop that happens while the prompt waits redraws it with
            // the new state, below the stop line.
            ("continue\r", r"kdbg \(running\)> ", 30),
            ("tbreak spawn_task\r", r"\(temporary\)", 30),
            ("", r"stopped:[^\n]*spawn_task.*?kdbg \(stopped\)> ", 60),
            ("continue\r", r"kdbg \(running\)> ", 30),
            // Ctrl-D says what stays behind (as `quit` does).
            ("\x04", r"3 probe\(s\) stay in the running kernel", 15),
        ],
    );
    assert!(ok, "transcript:\n{transcript}");
    std::thread::sleep(Duration::from_secs(1));
    let saved = std::fs::read_to_string(&history).unwrap_or_default();
    assert!(saved.contains("jprobe spawn_task"), "history file: {saved}");
    // A new session: Up recalls the last command of the previous one.
    let (ok, transcript) = drive(
        &vm,
        &history,
        &[],
        &[
            ("", r"kdbg.*> ", 30),
            ("\x1b[A", r"continue", 10),
            ("\x15\x04", "", 0),
        ],
    );
    assert!(ok, "transcript:\n{transcript}");
    // When the kernel's QEMU ends with kdbg (`cargo xtask run`), nothing
    // stays behind, and `quit` says so as Ctrl-D does.
    let (ok, transcript) = drive(
        &vm,
        &history,
        &["--kernel-exits-with-kdbg"],
        &[
            ("", r"kdbg.*> ", 30),
            ("quit\r", r"QEMU stops with kdbg", 15),
        ],
    );
    assert!(ok, "transcript:\n{transcript}");
    assert!(!transcript.contains("stay in"), "transcript:\n{transcript}");
}
