//! `kdbg --kernel ELF`: start QEMU with the stub on a free local port;
//! QEMU is killed when kdbg exits.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct Qemu {
    child: Child,
    pub port: u16,
}

impl Qemu {
    pub fn start(kernel: &Path, console: Option<&Path>, append: Option<&str>) -> Result<Qemu> {
        if !kernel.exists() {
            bail!(
                "kernel image {} does not exist: build it with `cargo xtask build`",
                kernel.display()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let console = match console {
            Some(p) => format!("file:{}", p.display()),
            None => "null".into(),
        };
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "pc", "-accel", "tcg", "-kernel"])
            .arg(kernel)
            .args(["-serial", &console])
            .args(["-serial", &stub_chardev(port)])
            .args(["-display", "none", "-monitor", "none"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(a) = append {
            cmd.args(["-append", a]);
        }
        let child = cmd.spawn().with_context(|| {
            "cannot start qemu-system-x86_64: install it with `sudo apt-get install -y qemu-system-x86`"
        })?;
        let mut q = Qemu { child, port };
        // Wait until the stub's port accepts connections.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = q.child.try_wait()? {
                bail!("QEMU exited at once ({st}); run it by hand to see why");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("QEMU did not open the stub port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(q)
    }
}

/// The stub's chardev. `nodelay=on` turns Nagle off on QEMU's side of the
/// socket: without it every RSP round trip costs ~40-50 ms (the delayed ACK).
pub fn stub_chardev(port: u16) -> String {
    format!("tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on")
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stub_chardev_has_nagle_off() {
        assert_eq!(
            super::stub_chardev(1234),
            "tcp:127.0.0.1:1234,server=on,wait=off,nodelay=on"
        );
    }
}
