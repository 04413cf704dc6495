//! A lost connection is reported, commands say to `reconnect`, and
//! `reconnect` attaches again without restarting the shell (here to a new
//! QEMU on the same port, as after a reboot of the target).

use tests::kdbg::KdbgJson;
use tests::{Qemu, Wiring};

fn boot_on(port: u16) -> Qemu {
    Qemu::boot_serving_with("", |c| c.stub = Wiring::Tcp(port))
}

#[test]
fn lost_connection_then_reconnect() {
    let port = tests::free_tcp_port().unwrap();
    let mut vm = boot_on(port);
    let mut k = KdbgJson::start_on(&format!("tcp:127.0.0.1:{port}"), &["--keep-going"]);
    k.ok("probes", "probes");

    vm.kill();
    let v = k.wait_for("connection_lost notice", |v| v["type"] == "connection_lost");
    assert!(v["text"].as_str().unwrap().contains("reconnect"), "{v}");
    k.refused("probes", &["reconnect"]);

    let _vm2 = boot_on(port);
    k.ok("reconnect", "message");
    k.ok("kretprobe sys_open", "probe_set");
    k.wait_for("an event after reconnecting", |v| v["type"] == "event");
    // One command failed (the `probes` without a connection): exit 1.
    let st = k.finish();
    assert_eq!(st.code(), Some(1), "{st}");
}
