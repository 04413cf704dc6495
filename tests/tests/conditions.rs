//! Conditional breakpoints evaluated inside the kernel: stock gdb's
//! target-side conditions (agent expressions in `Z0;X`), and kdbg's shell
//! (`break LOC if EXPR`, `condition`, `ignore`) over its own bytecode.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::Qemu;

const BOOT: Duration = Duration::from_secs(60);

fn boot_serving(append: &str) -> Qemu {
    let mut vm = Qemu::boot(append).expect("boot the reference kernel");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("serve mode starts its workloads");
    vm
}

/// Runs `gdb -batch` with `cmds` after attaching; returns stdout + stderr.
fn gdb(vm: &mut Qemu, cmds: &[&str]) -> String {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    let mut c = Command::new("gdb");
    c.args(["-batch", "-nx", "-q"]);
    for pre in [
        "set pagination off",
        "set confirm off",
        "set width 0",
        "set remotetimeout 20",
    ] {
        c.args(["-ex", pre]);
    }
    c.args(["-ex", &format!("target remote {addr}")]);
    for cmd in cmds {
        c.args(["-ex", cmd]);
    }
    c.arg(kernel.as_os_str());
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("gdb is installed");
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("wait for gdb").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("gdb output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("internal-error") && !text.contains("Fatal signal"),
        "gdb itself failed:\n{text}"
    );
    text
}

/// The largest `key=N` value of the `cond` rows in `text`.
fn cond_field(text: &str, key: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("cond addr="))
        .map(|line| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key}= in {line}"))
        })
        .max()
        .unwrap_or_else(|| panic!("no cond row in:\n{text}"))
}

#[test]
fn gdb_target_side_condition_stops_only_when_true() {
    let mut vm = boot_serving("serve kdbg.quiet");
    let out = gdb(
        &mut vm,
        &[
            "set breakpoint condition-evaluation target",
            "break fib if n == 5",
            "continue",
            "echo @@STOP1\\n",
            "p n",
            "monitor conds",
            "continue",
            "echo @@STOP2\\n",
            "p n",
            "continue",
            "echo @@STOP3\\n",
            "p n",
            "monitor conds",
            "delete",
            "detach",
        ],
    );
    let stops: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("$") && l.contains(" = "))
        .collect();
    assert_eq!(stops.len(), 3, "three stops printed n:\n{out}");
    for s in &stops {
        assert!(s.ends_with("= 5"), "stopped only with n == 5: {s}\n{out}");
    }
    // The kernel evaluated false hits itself: the counter of the breakpoint
    // (since gdb last inserted it) shows hits with n != 5 that never
    // reached gdb.
    assert!(
        cond_field(&out, "false") > 0,
        "false hits counted in the kernel:\n{out}"
    );
    assert!(out.contains("detached"), "{out}");
    vm.assert_still_running(Duration::from_millis(300));
}
