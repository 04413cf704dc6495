//! A stock `gdb -batch` driven by `-ex` commands against a remote target
//! (kdbg's stub or QEMU's own gdbstub), and parsers for what it prints.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `gdb -batch -nx` on `kernel`, attaches to `addr`, runs `cmds`;
/// returns stdout + stderr. Panics when gdb itself crashes. gdb is killed
/// after 400 s.
pub fn batch(kernel: &Path, addr: SocketAddr, pre: &[&str], cmds: &[&str]) -> String {
    batch_within(kernel, addr, pre, cmds, Duration::from_secs(400))
}

/// [`batch`] with gdb killed after `limit` (what it printed until then is
/// returned).
pub fn batch_within(
    kernel: &Path,
    addr: SocketAddr,
    pre: &[&str],
    cmds: &[&str],
    limit: Duration,
) -> String {
    let mut c = Command::new("gdb");
    c.args(["-batch", "-nx", "-q"]);
    for p in [
        "set pagination off",
        "set confirm off",
        "set width 0",
        "set height 0",
        "set remotetimeout 20",
    ]
    .iter()
    .chain(pre)
    {
        c.args(["-ex", p]);
    }
    c.args(["-ex", &format!("target remote {addr}")]);
    for cmd in cmds {
        c.args(["-ex", cmd]);
    }
    c.arg(kernel.as_os_str());
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("gdb is installed (apt-get install gdb)");
    let text = crate::output_within(child, limit);
    assert!(
        !text.contains("internal-error") && !text.contains("Fatal signal"),
        "gdb itself failed:\n{text}"
    );
    text
}

/// Every `name  0x...` register line of `info registers` output, in order.
pub fn registers(out: &str, name: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            (w.next() == Some(name))
                .then(|| w.next())
                .flatten()
                .and_then(|v| v.strip_prefix("0x"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// The words of every `x/Ngx` line (`0xADDR <sym>:\t0x... 0x...`), in order.
pub fn words(out: &str) -> Vec<u64> {
    out.lines()
        .filter(|l| l.starts_with("0x") && l.contains(':'))
        .flat_map(|l| {
            let rest = &l[l.find(':').unwrap_or(0) + 1..];
            rest.split_whitespace()
                .filter_map(|v| v.strip_prefix("0x"))
                .filter_map(|h| u64::from_str_radix(h, 16).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}
