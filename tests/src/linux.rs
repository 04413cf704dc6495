//! A real Linux kernel under QEMU's own gdbstub, for `cargo xtask linux` and
//! the end-to-end tests of the kdbg shell as a front-end to any stub.
//!
//! [`prepare`] fetches Debian's current cloud kernel image, its `-dbg`
//! vmlinux and a static busybox by package name (`apt-get download`; the
//! version is whatever the metapackage `linux-image-cloud-amd64` depends on
//! today), extracts the three files and writes a small initramfs (newc cpio,
//! written here: no `cpio` tool needed) whose `/init` starts a workload that
//! opens files and forks. Everything is cached under
//! `<target>/linux/<kernel version>/`; a second call does no download.
//! [`LinuxVm::boot`] starts QEMU (TCG) with `-gdb tcp:127.0.0.1:PORT` on a
//! free port, the console in a file and the HMP monitor on a Unix socket.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel's metapackage: depends on the current ABI's image package.
pub const META: &str = "linux-image-cloud-amd64";

/// Files the workload opens (the jprobe/kretprobe tests look for them).
pub const WORKLOAD_FILES: [&str; 2] = ["/etc/kdbg/alpha.txt", "/etc/kdbg/beta.txt"];

/// What [`prepare`] produced.
#[derive(Debug, Clone)]
pub struct LinuxImage {
    /// e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    /// The bzImage QEMU boots.
    pub bzimage: PathBuf,
    /// The vmlinux with DWARF (from the `-dbg` package).
    pub vmlinux: PathBuf,
    /// The initramfs (newc cpio).
    pub initrd: PathBuf,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| err(format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The current cloud kernel release, from the metapackage's dependency
/// (`apt-cache depends`); runs `apt-get update` once if apt knows nothing.
pub fn current_release() -> io::Result<String> {
    let ask = || -> io::Result<Option<String>> {
        let text = run(Command::new("apt-cache").args(["depends", META]))?;
        Ok(text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Depends: linux-image-")
                .map(|r| r.trim().to_string())
                .filter(|r| r.ends_with("-cloud-amd64"))
        }))
    };
    if let Ok(Some(r)) = ask() {
        return Ok(r);
    }
    eprintln!("linux: apt-get update (apt does not know {META} yet)");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    ask()?.ok_or_else(|| {
        err(format!(
            "apt knows no {META}: this needs Debian's package lists (bookworm or later)"
        ))
    })
}

/// The cache directory: `<target>/linux`.
pub fn cache_dir() -> PathBuf {
    crate::target_dir().join("linux")
}

/// Fetch (once) and prepare the kernel, its vmlinux and the initramfs.
pub fn prepare() -> io::Result<LinuxImage> {
    // A release named in the cache wins when apt is not reachable.
    let release = match std::env::var("KDBG_LINUX_RELEASE") {
        Ok(r) if !r.is_empty() => r,
        _ => current_release()?,
    };
    let dir = cache_dir().join(&release);
    std::fs::create_dir_all(&dir)?;
    let img = LinuxImage {
        bzimage: dir.join("vmlinuz"),
        vmlinux: dir.join("vmlinux"),
        initrd: dir.join("initrd.cpio"),
        release: release.clone(),
    };
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    let want = [
        format!("linux-image-{release}"),
        format!("linux-image-{release}-dbg"),
        "busybox-static".to_string(),
    ];
    let busybox = dir.join("busybox");
    if !(img.bzimage.exists() && img.vmlinux.exists() && busybox.exists()) {
        let have = |pkg: &str| -> Option<PathBuf> {
            std::fs::read_dir(&debs)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
                })
        };
        let missing: Vec<&String> = want.iter().filter(|p| have(p).is_none()).collect();
        if !missing.is_empty() {
            eprintln!(
                "linux: apt-get download {} (~310 MB, once)",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            run(Command::new("apt-get")
                .arg("download")
                .args(&missing)
                .current_dir(&debs))?;
        }
        let deb =
            |pkg: &str| have(pkg).ok_or_else(|| err(format!("{pkg}: no .deb after download")));
        let tmp = dir.join("extract");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        extract(&deb(&want[0])?, &tmp, &format!("./boot/vmlinuz-{release}"))?;
        extract(&deb(&want[2])?, &tmp, "./bin/busybox")?;
        eprintln!("linux: extracting the vmlinux from the -dbg package (about a minute, once)");
        extract(
            &deb(&want[1])?,
            &tmp,
            &format!("./usr/lib/debug/boot/vmlinux-{release}"),
        )?;
        std::fs::rename(tmp.join(format!("boot/vmlinuz-{release}")), &img.bzimage)?;
        std::fs::rename(tmp.join("bin/busybox"), &busybox)?;
        std::fs::rename(
            tmp.join(format!("usr/lib/debug/boot/vmlinux-{release}")),
            &img.vmlinux,
        )?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let bb = std::fs::read(&busybox)?;
    let cpio = initramfs(&bb);
    if std::fs::read(&img.initrd).ok().as_deref() != Some(&cpio[..]) {
        std::fs::write(&img.initrd, &cpio)?;
    }
    Ok(img)
}

/// Extract one member of a .deb's data archive into `dir`.
fn extract(deb: &Path, dir: &Path, member: &str) -> io::Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run dpkg-deb: {e}")))?;
    let stdout = dpkg.stdout.take().ok_or_else(|| err("dpkg-deb stdout"))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .arg(member)
        .stdin(stdout)
        .output()
        .map_err(|e| err(format!("cannot run tar: {e}")))?;
    let _ = dpkg.wait();
    if !tar.status.success() {
        return Err(err(format!(
            "extracting {member} from {}: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    Ok(())
}

/// The `/init` script: mounts, a banner, the workload in the background,
/// then a shell-less wait.
const INIT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
echo "kdbg-linux: init up"
/bin/kdbg-work &
while true; do /bin/busybox sleep 3600; done
"#;

/// The workload: opens the two files and forks a child, about twice a
/// second, and says so on the console every 20 rounds.
const WORK: &str = r#"#!/bin/sh
n=0
while true; do
    /bin/busybox cat /etc/kdbg/alpha.txt > /dev/null
    /bin/kdbg-child
    n=$((n + 1))
    if [ $((n % 20)) = 1 ]; then echo "kdbg-work: round $n"; fi
    /bin/busybox usleep 400000
done
"#;

const CHILD: &str = r#"#!/bin/sh
read line < /etc/kdbg/beta.txt
"#;

/// The initramfs as a newc cpio archive.
pub fn initramfs(busybox: &[u8]) -> Vec<u8> {
    let mut w = Cpio::default();
    for d in [
        "bin", "sbin", "etc", "etc/kdbg", "proc", "sys", "dev", "tmp",
    ] {
        w.dir(d);
    }
    w.file("bin/busybox", 0o755, busybox);
    for applet in ["sh", "cat", "sleep", "mount", "echo", "usleep", "ls", "ps"] {
        w.symlink(&format!("bin/{applet}"), "busybox");
    }
    w.file("init", 0o755, INIT.as_bytes());
    w.file("bin/kdbg-work", 0o755, WORK.as_bytes());
    w.file("bin/kdbg-child", 0o755, CHILD.as_bytes());
    w.file("etc/kdbg/alpha.txt", 0o644, b"alpha\n");
    w.file("etc/kdbg/beta.txt", 0o644, b"beta\n");
    w.finish()
}

#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data);
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// A Linux guest in QEMU with its gdbstub on a loopback port.
pub struct LinuxVm {
    child: Option<Child>,
    /// The gdbstub's port on 127.0.0.1.
    pub port: u16,
    /// The serial console log.
    pub console: PathBuf,
    /// The HMP monitor socket.
    pub hmp: PathBuf,
    dir: PathBuf,
}

impl LinuxVm {
    /// Boots `img` (TCG, 1 vCPU, 512 MiB, `nokaslr` unless `kaslr`), and
    /// waits until the gdbstub listens.
    pub fn boot(img: &LinuxImage, kaslr: bool) -> io::Result<LinuxVm> {
        let port = crate::free_tcp_port()?;
        let dir =
            crate::target_dir()
                .join("e2e")
                .join(format!("linux-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir)?;
        let console = dir.join("console.log");
        let hmp = dir.join("hmp.sock");
        let _ = std::fs::remove_file(&hmp);
        let mut append = String::from("console=ttyS0 panic=-1 loglevel=6");
        if !kaslr {
            append.push_str(" nokaslr");
        } else {
            // Under a loaded TCG host the IO-APIC timer check can fail
            // and panic this boot (seen once with KASLR on).
            append.push_str(" no_timer_check");
        }
        let mut cmd = Command::new(crate::qemu_binary().map_err(|e| err(e.to_string()))?);
        cmd.args(["-machine", "q35", "-cpu", "max", "-m", "512", "-smp", "1"])
            .args(["-display", "none", "-no-reboot", "-nodefaults"])
            .arg("-kernel")
            .arg(&img.bzimage)
            .arg("-initrd")
            .arg(&img.initrd)
            .args(["-append", &append])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", hmp.display()))
            .args(["-gdb", &format!("tcp:127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("qemu.err"))?));
        crate::kill_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        let vm = LinuxVm {
            child: Some(child),
            port,
            console,
            hmp,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !crate::tcp_listening(port) {
            if Instant::now() > deadline {
                return Err(err(format!("QEMU's gdbstub did not listen on {port}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(vm)
    }

    /// The console so far.
    pub fn console_text(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the console contains `needle`.
    pub fn wait_console(&self, needle: &str, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.console_text().contains(needle) {
            if Instant::now() > deadline {
                return Err(err(format!(
                    "`{needle}` not on the Linux console within {timeout:?}; console: {}",
                    self.console.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The number of bytes on the console (grows while the guest runs).
    pub fn console_len(&self) -> u64 {
        std::fs::metadata(&self.console).map_or(0, |m| m.len())
    }

    /// One HMP command's output (e.g. `info registers`, `info status`).
    pub fn hmp(&self, command: &str) -> io::Result<String> {
        let mut s = UnixStream::connect(&self.hmp)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut r = BufReader::new(s.try_clone()?);
        // Banner then "(qemu) " prompt.
        read_until_prompt(&mut r)?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let out = read_until_prompt(&mut r)?;
        // Drop the echoed command line (with its terminal escapes).
        Ok(out
            .lines()
            .skip(1)
            .map(|l| l.trim_end_matches('\r'))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The directory with the console log and QEMU's stderr.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_until_prompt(r: &mut BufReader<UnixStream>) -> io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte)? == 0 {
            return Err(err("HMP monitor closed"));
        }
        out.push(byte[0]);
        if out.ends_with(b"(qemu) ") {
            out.truncate(out.len() - 7);
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
    }
}

impl Drop for LinuxVm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("linux e2e: logs kept in {}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod unit {
    #[test]
    fn initramfs_is_newc_with_a_trailer() {
        let a = super::initramfs(b"ELF");
        assert!(a.starts_with(b"070701"));
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(a.len() % 4, 0);
    }
}
