//! A lost connection is reported, commands say to `reconnect`, and
//! `reconnect` attaches again without restarting the shell (here to a new
//! QEMU on the same port, as after a reboot of the target).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{Qemu, Wiring};

const BOOT: Duration = Duration::from_secs(60);

fn boot_on(port: u16) -> Qemu {
    let mut vm = Qemu::boot_with("serve kdbg.quiet", |c| c.stub = Wiring::Tcp(port)).expect("boot");
    vm.wait_for_console("workload tasks started", BOOT)
        .expect("kernel serving");
    vm
}

#[test]
fn lost_connection_then_reconnect() {
    let port = tests::free_tcp_port().unwrap();
    let mut vm = boot_on(port);
    let mut child = Command::new(tests::kdbg_path())
        .args(["--connect", &format!("tcp:127.0.0.1:{port}"), "--symbols"])
        .arg(tests::kernel_path())
        .args(["--json", "--keep-going", "--timeout", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kdbg");
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                let _ = tx.send(v);
            }
        }
    });
    let next = |want: &dyn Fn(&Value) -> bool, what: &str| -> Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what}"));
            if want(&v) {
                return v;
            }
        }
    };
    writeln!(stdin, "probes").unwrap();
    let v = next(&|v| v["command"] == "probes", "probes result");
    assert_eq!(v["ok"], true, "{v}");

    vm.kill();
    let v = next(
        &|v| v["type"] == "connection_lost",
        "connection_lost notice",
    );
    assert!(v["text"].as_str().unwrap().contains("reconnect"), "{v}");
    writeln!(stdin, "probes").unwrap();
    let v = next(&|v| v["command"] == "probes", "probes error");
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("reconnect"), "{v}");

    let _vm2 = boot_on(port);
    writeln!(stdin, "reconnect").unwrap();
    let v = next(&|v| v["command"] == "reconnect", "reconnect result");
    assert_eq!(v["ok"], true, "{v}");
    writeln!(stdin, "kretprobe sys_open").unwrap();
    let v = next(&|v| v["command"] == "kretprobe", "kretprobe result");
    assert_eq!(v["ok"], true, "{v}");
    next(&|v| v["type"] == "event", "an event after reconnecting");
    drop(stdin);
    // One command failed (the `probes` without a connection): exit 1.
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(1), "{st}");
}
