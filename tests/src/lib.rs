//! Support for the end-to-end tests (and for xtask, which boots QEMU the same
//! way): the reference kernel in QEMU with a given command line, the GDB stub
//! on a free local TCP port (or a unix socket), the console and the debugcon
//! ground-truth log captured to files, helpers to wait for console lines, and
//! QEMU killed when the handle is dropped (and when this process dies).
//!
//! ```no_run
//! let mut vm = tests::Qemu::boot("serve kdbg.truth").unwrap();
//! vm.wait_for_console("tasks started", std::time::Duration::from_secs(10)).unwrap();
//! let stub = vm.stub_tcp_addr().unwrap(); // connect kdbg or gdb here
//! ```
//!
//! Paths: the kernel is `$KDBG_KERNEL` or `<root>/target/kdbg/kernel`; the
//! `kdbg` binary is `$KDBG_BIN` or `<target dir>/debug/kdbg` (`cargo xtask
//! test` sets both after building them).

pub mod fuzz;
pub mod gdb;
pub mod guestram;
pub mod kdbg;
pub mod linux;
pub mod rsp;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The QEMU binary looked up on PATH.
pub const QEMU: &str = "qemu-system-x86_64";
/// The Debian package that provides it.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";
/// The command that installs QEMU on Debian/Ubuntu.
pub const QEMU_INSTALL_HINT: &str =
    "sudo apt-get update && sudo apt-get install -y qemu-system-x86";

/// What went wrong while booting or watching the kernel.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "{QEMU} not found on PATH; install it with: {QEMU_INSTALL_HINT} (or set $KDBG_QEMU to its path)"
    )]
    QemuMissing,
    #[error(
        "the kernel image {0} does not exist; build it with `cargo xtask build` (or set $KDBG_KERNEL)"
    )]
    KernelMissing(PathBuf),
    #[error(
        "port {0} on 127.0.0.1 is already in use; pick another port or stop what is listening there"
    )]
    PortInUse(u16),
    #[error("could not start {QEMU}: {0}")]
    Spawn(io::Error),
    #[error("QEMU exited before {what} (status {status}); console:\n{console}")]
    ExitedEarly {
        what: String,
        status: String,
        console: String,
    },
    #[error("timed out after {secs:.1}s waiting for {what}; console so far:\n{console}")]
    Timeout {
        what: String,
        secs: f64,
        console: String,
    },
    #[error("I/O error on {path}: {err}")]
    Io { path: PathBuf, err: io::Error },
}

/// How the kernel stopped (QEMU's isa-debug-exit status is `(code << 1) | 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelExit {
    /// Code 0x10 (QEMU status 33): selftests passed / orderly stop.
    Success,
    /// Code 0x11 (QEMU status 35): selftests failed or a bad command line.
    Failure,
    /// Code 0x12 (QEMU status 37): a fatal trap or a panic.
    Fatal,
    /// Any other exit status (QEMU's own errors, e.g. 1).
    Other(i32),
    /// QEMU died from a signal (killed).
    Signaled,
}

impl KernelExit {
    /// Maps QEMU's exit status.
    pub fn from_status(status: ExitStatus) -> KernelExit {
        match status.code() {
            Some(33) => KernelExit::Success,
            Some(35) => KernelExit::Failure,
            Some(37) => KernelExit::Fatal,
            Some(c) => KernelExit::Other(c),
            None => KernelExit::Signaled,
        }
    }
}

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cargo target directory used for host builds (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The kernel ELF (with DWARF): `$KDBG_KERNEL` or `<root>/target/kdbg/kernel`.
pub fn kernel_path() -> PathBuf {
    std::env::var_os("KDBG_KERNEL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/kdbg/kernel"))
}

/// The `kdbg` binary: `$KDBG_BIN` or `<target dir>/debug/kdbg`.
pub fn kdbg_path() -> PathBuf {
    std::env::var_os("KDBG_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/kdbg"))
}

/// QEMU: `$KDBG_QEMU`, or `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("KDBG_QEMU").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_on_path(&path, QEMU).ok_or(HarnessError::QemuMissing)
}

/// The first file named `name` in the directories of a PATH-style list.
pub fn find_on_path(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race remains).
pub fn free_tcp_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// How often [`Qemu::boot_with`] tries a new port after losing a bind race.
const PORT_ATTEMPTS: u32 = 5;

fn pick_port() -> Result<u16, HarnessError> {
    free_tcp_port().map_err(|err| HarnessError::Io {
        path: "127.0.0.1:0".into(),
        err,
    })
}

/// Something listens on 127.0.0.1:`port` or 0.0.0.0:`port` (from
/// `/proc/net/tcp`; no connection is made).
pub fn tcp_listening(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1).unwrap_or("");
        let state = cols.nth(1).unwrap_or("");
        state == "0A" && want.iter().any(|w| w == local)
    })
}

/// Errors with [`HarnessError::PortInUse`] when something already listens on `port`.
pub fn check_port_free(port: u16) -> Result<(), HarnessError> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(_) => Err(HarnessError::PortInUse(port)),
    }
}

/// Where a QEMU serial port goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wiring {
    /// Nowhere.
    Null,
    /// This process's stdout (stdin is not connected).
    Stdio,
    /// Appended to a file.
    File(PathBuf),
    /// A TCP server on 127.0.0.1:PORT that does not wait for a client.
    Tcp(u16),
    /// A unix socket server at PATH that does not wait for a client.
    Unix(PathBuf),
    /// Any QEMU chardev spec, passed through as is (e.g. `pty`).
    Raw(String),
}

impl Wiring {
    /// Parses a user's `--stub` argument: `tcp:127.0.0.1:PORT`, `tcp:PORT`,
    /// `unix:PATH`, `file:PATH`, `stdio`, `none`, or any other QEMU chardev.
    pub fn parse(spec: &str) -> Result<Wiring, String> {
        if let Some(rest) = spec.strip_prefix("tcp:") {
            let port = rest.rsplit(':').next().unwrap_or(rest);
            let host = rest
                .strip_suffix(port)
                .map(|h| h.trim_end_matches(':'))
                .unwrap_or("");
            if !host.is_empty() && host != "127.0.0.1" && host != "localhost" {
                return Err(format!(
                    "`{spec}`: the stub only listens on 127.0.0.1; use tcp:127.0.0.1:PORT"
                ));
            }
            return port.parse::<u16>().map(Wiring::Tcp).map_err(|_| {
                format!("`{spec}`: `{port}` is not a port number; use tcp:127.0.0.1:PORT")
            });
        }
        if let Some(path) = spec.strip_prefix("unix:") {
            return Ok(Wiring::Unix(PathBuf::from(
                path.split(',').next().unwrap_or(path),
            )));
        }
        if let Some(path) = spec.strip_prefix("file:") {
            return Ok(Wiring::File(PathBuf::from(path)));
        }
        match spec {
            "" => Err("empty chardev; use tcp:127.0.0.1:PORT or unix:PATH".into()),
            "stdio" => Ok(Wiring::Stdio),
            "none" | "null" => Ok(Wiring::Null),
            other => Ok(Wiring::Raw(other.to_string())),
        }
    }

    /// The `-serial` argument.
    pub fn qemu_arg(&self) -> String {
        match self {
            Wiring::Null => "null".into(),
            Wiring::Stdio => "stdio".into(),
            Wiring::File(p) => format!("file:{}", p.display()),
            // `nodelay=on`: without it QEMU's side of the socket runs Nagle and
            // every RSP round trip waits ~40 ms for the delayed ACK.
            Wiring::Tcp(port) => format!("tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on"),
            Wiring::Unix(p) => format!("unix:{},server=on,wait=off", p.display()),
            Wiring::Raw(s) => s.clone(),
        }
    }

    /// Human-readable description for "stub on ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Wiring::Tcp(port) => format!("tcp:127.0.0.1:{port}"),
            Wiring::Unix(p) => format!("unix:{}", p.display()),
            other => other.qemu_arg(),
        }
    }
}

/// Everything that goes onto QEMU's command line.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub kernel: PathBuf,
    /// The kernel command line (`-append`).
    pub append: String,
    /// COM1.
    pub console: Wiring,
    /// COM2, the GDB stub's line.
    pub stub: Wiring,
    /// QEMU's debugcon (port 0xe9): the ground-truth log.
    pub debugcon: Option<PathBuf>,
    /// `-icount shift=0`: deterministic guest, TSC = instructions. With
    /// more than one vCPU, icount runs them round-robin in one host thread
    /// (no real concurrency); without it they run in parallel threads
    /// (MTTCG, `-accel tcg,thread=multi`).
    pub icount: bool,
    /// Virtual CPUs (`-smp N`). Default: `KDBG_SMP` from the environment
    /// (`cargo xtask test --smp N` sets it), else 1.
    pub smp: u32,
    /// QEMU is killed after this long.
    pub timeout: Duration,
    /// Guest RAM in MiB (`-m`).
    pub memory_mib: u32,
    /// More QEMU arguments.
    pub extra: Vec<String>,
    /// Back guest RAM with a file in a private directory (created by
    /// [`QemuConfig::spawn`], removed with the [`Qemu`]) that `kdbg
    /// --memory FILE` maps: see [`guestram`].
    pub share_memory: bool,
}

impl QemuConfig {
    /// Defaults: the standard kernel path, no command line, console and stub
    /// unconnected, no debugcon, 120 s timeout.
    pub fn new() -> QemuConfig {
        QemuConfig {
            kernel: kernel_path(),
            append: String::new(),
            console: Wiring::Null,
            stub: Wiring::Null,
            debugcon: None,
            icount: false,
            smp: smp_from_env(),
            timeout: Duration::from_secs(120),
            memory_mib: 128,
            extra: Vec::new(),
            share_memory: false,
        }
    }

    /// The full argument list (without the QEMU binary).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-M", "pc", "-accel"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Several vCPUs run in parallel host threads (MTTCG) unless icount
        // forces them into one thread.
        a.push(if self.smp > 1 && !self.icount {
            "tcg,thread=multi".into()
        } else {
            "tcg".into()
        });
        if self.smp > 1 {
            a.push("-smp".into());
            a.push(self.smp.to_string());
        }
        a.extend(
            [
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a.push("-m".into());
        a.push(format!("{}M", self.memory_mib));
        a.push("-kernel".into());
        a.push(self.kernel.display().to_string());
        a.push("-append".into());
        a.push(self.append.clone());
        a.push("-serial".into());
        a.push(self.console.qemu_arg());
        a.push("-serial".into());
        a.push(self.stub.qemu_arg());
        if let Some(p) = &self.debugcon {
            a.push("-debugcon".into());
            a.push(format!("file:{}", p.display()));
        }
        if self.icount {
            a.push("-icount".into());
            a.push("shift=0".into());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts QEMU. Checks the kernel and the ports first.
    pub fn spawn(&self) -> Result<Qemu, HarnessError> {
        let ram = if self.share_memory {
            Some(
                guestram::GuestRam::create(self.memory_mib).map_err(|err| HarnessError::Io {
                    path: "guest RAM file".into(),
                    err,
                })?,
            )
        } else {
            None
        };
        if !self.kernel.is_file() {
            return Err(HarnessError::KernelMissing(self.kernel.clone()));
        }
        for w in [&self.console, &self.stub] {
            if let Wiring::Tcp(port) = w {
                check_port_free(*port)?;
            }
        }
        let qemu = qemu_binary()?;
        let mut cmd = Command::new(qemu);
        cmd.args(self.args()).stdin(Stdio::null());
        if let Some(r) = &ram {
            cmd.args(r.qemu_args(self.memory_mib));
        }
        if self.console != Wiring::Stdio {
            cmd.stdout(Stdio::null());
        }
        kill_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(HarnessError::Spawn)?;
        Ok(Qemu {
            child: Some(child),
            config: self.clone(),
            started: Instant::now(),
            workdir: None,
            ram,
        })
    }
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig::new()
    }
}

/// Waits for `child` at most `limit` (then kills it) and returns its stdout
/// followed by its stderr. Both pipes are drained while it runs: a child
/// that prints more than a pipe holds would otherwise block forever.
pub fn output_within(mut child: std::process::Child, limit: Duration) -> String {
    fn drain<R: io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.join().unwrap_or_default()),
        String::from_utf8_lossy(&err.join().unwrap_or_default())
    )
}

/// Makes the child get SIGKILL when the spawning thread dies, so no QEMU
/// outlives the test or xtask process (even when that one is killed), and
/// puts it in its own process group so a terminal's Ctrl-C reaches only us
/// (xtask run hands Ctrl-C to the kdbg shell).
///
/// Note: "the spawning thread" — keep the [`Qemu`] handle in the thread that
/// created it, or QEMU dies when that thread ends.
pub fn kill_with_parent(cmd: &mut Command) {
    // SAFETY: prctl and setpgid are async-signal-safe and only affect the
    // child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running QEMU. Dropping it kills QEMU; the log directory of a test that
/// panics is kept (its path is in the failure message), otherwise removed.
pub struct Qemu {
    child: Option<Child>,
    config: QemuConfig,
    started: Instant,
    workdir: Option<PathBuf>,
    /// The guest RAM file when [`QemuConfig::share_memory`] is set.
    ram: Option<guestram::GuestRam>,
}

impl Qemu {
    /// Boots the kernel with `append`, the stub on a free TCP port, console
    /// and debugcon captured to files in a fresh directory under
    /// `<target dir>/e2e/`, 120 s timeout.
    pub fn boot(append: &str) -> Result<Qemu, HarnessError> {
        Qemu::boot_with(append, |_| {})
    }

    /// Boots the kernel serving its workloads (`serve kdbg.quiet` plus
    /// `extra` kernel arguments) and waits until the workload tasks run:
    /// what every shell test starts from.
    pub fn boot_serving(extra: &str) -> Qemu {
        Qemu::boot_serving_with(extra, |_| {})
    }

    /// [`Qemu::boot_serving`], letting the caller adjust the configuration.
    pub fn boot_serving_with(extra: &str, adjust: impl FnOnce(&mut QemuConfig)) -> Qemu {
        let append = format!("serve kdbg.quiet {extra}");
        let mut vm = Qemu::boot_with(append.trim(), adjust)
            .unwrap_or_else(|e| panic!("boot `{append}`: {e}"));
        vm.wait_for_console("workload tasks started", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("kernel not serving: {e}"));
        vm
    }

    /// Like [`Qemu::boot`], letting the caller adjust the configuration.
    pub fn boot_with(
        append: &str,
        adjust: impl FnOnce(&mut QemuConfig),
    ) -> Result<Qemu, HarnessError> {
        let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = target_dir()
            .join("e2e")
            .join(format!("{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|err| HarnessError::Io {
            path: dir.clone(),
            err,
        })?;
        let mut cfg = QemuConfig::new();
        cfg.append = append.to_string();
        cfg.console = Wiring::File(dir.join("console.log"));
        cfg.debugcon = Some(dir.join("debugcon.log"));
        let port = pick_port()?;
        cfg.stub = Wiring::Tcp(port);
        adjust(&mut cfg);
        // A free port can be taken by another process between our probe and
        // QEMU's bind (tests run in parallel). When the stub port is ours to
        // choose, a lost race is retried on a new port instead of failing.
        let ours = cfg.stub == Wiring::Tcp(port);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = cfg.spawn().and_then(|mut vm| {
                if ours {
                    vm.wait_until_stub_listens()?;
                }
                Ok(vm)
            });
            match result {
                Ok(mut vm) => {
                    vm.workdir = Some(dir);
                    return Ok(vm);
                }
                Err(HarnessError::PortInUse(_) | HarnessError::ExitedEarly { .. })
                    if ours && attempt < PORT_ATTEMPTS =>
                {
                    cfg.stub = Wiring::Tcp(pick_port()?);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until QEMU listens on its TCP stub port, without connecting
    /// (a connection would start a debugger session). Errors with
    /// `ExitedEarly` when QEMU exits first (e.g. it could not bind).
    fn wait_until_stub_listens(&mut self) -> Result<(), HarnessError> {
        let Wiring::Tcp(port) = self.config.stub else {
            return Ok(());
        };
        self.wait_for(
            "QEMU to listen on the stub port",
            Duration::from_secs(30),
            |_| tcp_listening(port).then_some(()),
        )
    }

    /// The configuration QEMU was started with.
    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    /// The directory holding this run's logs (for [`Qemu::boot`]).
    pub fn workdir(&self) -> Option<&Path> {
        self.workdir.as_deref()
    }

    /// The stub's TCP address, when it is on TCP.
    pub fn stub_tcp_addr(&self) -> Option<SocketAddr> {
        match self.config.stub {
            Wiring::Tcp(port) => Some(SocketAddr::from(([127, 0, 0, 1], port))),
            _ => None,
        }
    }

    /// The file backing guest RAM (`kdbg --memory FILE`), when shared.
    pub fn memory_file(&self) -> Option<&Path> {
        self.ram.as_ref().map(|r| r.file())
    }

    /// The stub's line as a kdbg `--connect` argument (`tcp:127.0.0.1:PORT` / `unix:PATH`).
    pub fn stub_connect_arg(&self) -> String {
        self.config.stub.describe()
    }

    /// A `kdbg` command attached to this kernel's stub:
    /// `kdbg --connect <stub> --symbols <kernel>`; add arguments and run it.
    pub fn kdbg_command(&self) -> Command {
        let mut c = Command::new(kdbg_path());
        c.arg("--connect")
            .arg(self.stub_connect_arg())
            .arg("--symbols")
            .arg(&self.config.kernel);
        if let Some(f) = self.memory_file() {
            c.arg("--memory").arg(f);
        }
        c
    }

    /// Everything the console (COM1) printed so far, when it goes to a file.
    pub fn console(&self) -> String {
        match &self.config.console {
            Wiring::File(p) => read_lossy(p),
            _ => String::new(),
        }
    }

    /// The ground-truth log (debugcon) so far: complete lines only (the
    /// kernel writes a line byte by byte; a half-written last line is left out).
    pub fn debugcon(&self) -> String {
        let mut log = self
            .config
            .debugcon
            .as_deref()
            .map(read_lossy)
            .unwrap_or_default();
        log.truncate(log.rfind('\n').map_or(0, |i| i + 1));
        log
    }

    /// The ground-truth lines (`kdbg.truth`) of calls to `func`, in order:
    /// `truth seq=N task=ID fn=NAME k=v ...` as key -> value maps.
    pub fn truth(&self, func: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        self.debugcon()
            .lines()
            .filter(|l| l.starts_with("truth ") && l.contains(&format!(" fn={func} ")))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    /// Time left before the configured timeout.
    fn remaining(&self) -> Duration {
        self.config.timeout.saturating_sub(self.started.elapsed())
    }

    /// Waits `settle`, then asserts that QEMU (the kernel) is still running,
    /// showing the console when it is not. Tests call it after doing
    /// something hostile to check that the kernel carried on.
    pub fn assert_still_running(&mut self, settle: Duration) {
        std::thread::sleep(settle);
        assert!(
            self.try_exit().is_none(),
            "the kernel died; console:\n{}",
            self.console()
        );
    }

    /// QEMU's exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<KernelExit> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(KernelExit::from_status(status)),
            _ => None,
        }
    }

    /// Waits until the console contains `needle`; returns the console text.
    pub fn wait_for_console(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, HarnessError> {
        self.wait_for(&format!("console line `{needle}`"), timeout, |vm| {
            let c = vm.console();
            c.contains(needle).then_some(c)
        })
    }

    /// Waits until the debugcon log contains `needle`; returns the log text.
    pub fn wait_for_debugcon(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, HarnessError> {
        self.wait_for(&format!("debugcon line `{needle}`"), timeout, |vm| {
            let c = vm.debugcon();
            c.contains(needle).then_some(c)
        })
    }

    /// Waits until the stub's TCP port accepts a connection.
    pub fn wait_for_stub_port(&mut self, timeout: Duration) -> Result<SocketAddr, HarnessError> {
        let addr = self.stub_tcp_addr();
        self.wait_for("the stub's TCP port to listen", timeout, |_| {
            let a = addr?;
            TcpStream::connect_timeout(&a, Duration::from_millis(200))
                .ok()
                .map(|_| a)
        })
    }

    /// Polls `check` every 20 ms until it returns `Some`, QEMU exits, or the
    /// timeout (capped by QEMU's own) passes.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Qemu) -> Option<T>,
    ) -> Result<T, HarnessError> {
        let deadline = Instant::now() + timeout.min(self.remaining());
        loop {
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if let Some(exit) = self.try_exit() {
                // One last look: the line may have been written just before exiting.
                if let Some(v) = check(self) {
                    return Ok(v);
                }
                return Err(HarnessError::ExitedEarly {
                    what: what.to_string(),
                    status: format!("{exit:?}"),
                    console: self.console(),
                });
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: what.to_string(),
                    secs: timeout.as_secs_f64(),
                    console: self.console(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for QEMU to exit (killing it at the timeout).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<KernelExit, HarnessError> {
        let r = self.wait_for("the kernel to exit", timeout, |_| None::<()>);
        match r {
            Err(HarnessError::ExitedEarly { .. }) => {
                Ok(self.try_exit().unwrap_or(KernelExit::Signaled))
            }
            Err(e) => {
                self.kill();
                Err(e)
            }
            Ok(()) => Ok(KernelExit::Signaled),
        }
    }

    /// Kills QEMU now and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The QEMU process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.workdir {
            if std::thread::panicking() {
                eprintln!("kdbg e2e: logs of the failed run kept in {}", dir.display());
            } else {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Most vCPUs the reference kernel brings up (its per-CPU tables).
pub const MAX_SMP: u32 = 16;

/// `KDBG_SMP` (1..=[`MAX_SMP`]) from the environment, else 1.
pub fn smp_from_env() -> u32 {
    std::env::var("KDBG_SMP")
        .ok()
        .and_then(|v| parse_smp(&v).ok())
        .unwrap_or(1)
}

/// A vCPU count as `--smp N` takes it.
pub fn parse_smp(v: &str) -> Result<u32, String> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_SMP).contains(&n) => Ok(n),
        _ => Err(format!(
            "--smp `{v}`: give a number of vCPUs from 1 to {MAX_SMP}"
        )),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn smp_runs_threads_unless_icount() {
        let mut cfg = QemuConfig::new();
        cfg.smp = 4;
        let a = cfg.args().join(" ");
        assert!(a.contains("-accel tcg,thread=multi -smp 4"), "{a}");
        cfg.icount = true;
        let a = cfg.args().join(" ");
        assert!(a.contains("-accel tcg -smp 4"), "{a}");
        cfg.smp = 1;
        cfg.icount = false;
        let a = cfg.args().join(" ");
        assert!(!a.contains("-smp"), "{a}");
        assert_eq!(parse_smp("4"), Ok(4));
        assert!(parse_smp("0").is_err());
        assert!(parse_smp("17").is_err());
        assert!(parse_smp("x").is_err());
    }

    #[test]
    fn wiring_parses_user_specs() {
        assert_eq!(Wiring::parse("tcp:127.0.0.1:1234"), Ok(Wiring::Tcp(1234)));
        assert_eq!(Wiring::parse("tcp:1234"), Ok(Wiring::Tcp(1234)));
        assert_eq!(Wiring::parse("tcp:localhost:99"), Ok(Wiring::Tcp(99)));
        assert!(Wiring::parse("tcp:10.0.0.1:99").is_err());
        assert!(Wiring::parse("tcp:127.0.0.1:http").is_err());
        assert_eq!(
            Wiring::parse("unix:/tmp/s"),
            Ok(Wiring::Unix("/tmp/s".into()))
        );
        assert_eq!(Wiring::parse("pty"), Ok(Wiring::Raw("pty".into())));
        assert!(Wiring::parse("").is_err());
    }

    #[test]
    fn qemu_args_wire_both_uarts_and_the_exit_device() {
        let mut cfg = QemuConfig::new();
        cfg.kernel = "/k".into();
        cfg.append = "selftest".into();
        cfg.console = Wiring::File("/c".into());
        cfg.stub = Wiring::Tcp(4444);
        cfg.icount = true;
        let a = cfg.args().join(" ");
        assert!(a.contains("-accel tcg"));
        assert!(a.contains("-m 128M"));
        assert!(a.contains("-kernel /k -append selftest"));
        assert!(
            a.contains("-serial file:/c -serial tcp:127.0.0.1:4444,server=on,wait=off,nodelay=on")
        );
        assert!(a.contains("isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(a.contains("-icount shift=0"));
    }

    #[test]
    fn exit_status_mapping() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            KernelExit::from_status(ExitStatus::from_raw(33 << 8)),
            KernelExit::Success
        );
        assert_eq!(
            KernelExit::from_status(ExitStatus::from_raw(35 << 8)),
            KernelExit::Failure
        );
        assert_eq!(
            KernelExit::from_status(ExitStatus::from_raw(37 << 8)),
            KernelExit::Fatal
        );
        assert_eq!(
            KernelExit::from_status(ExitStatus::from_raw(9)),
            KernelExit::Signaled
        );
    }

    #[test]
    fn qemu_lookup_on_path() {
        use std::ffi::OsStr;
        assert_eq!(find_on_path(OsStr::new(""), QEMU), None);
        assert_eq!(find_on_path(OsStr::new("/nonexistent-dir"), QEMU), None);
        let sh = find_on_path(OsStr::new("/nonexistent-dir:/bin:/usr/bin"), "sh");
        assert!(sh.is_some_and(|p| p.ends_with("sh")));
        let msg = HarnessError::QemuMissing.to_string();
        assert!(msg.contains("apt-get install -y qemu-system-x86"), "{msg}");
    }

    #[test]
    fn listening_ports_are_seen_without_connecting() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(tcp_listening(port));
        drop(l);
        assert!(!tcp_listening(port));
    }

    #[test]
    fn busy_port_is_reported() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(matches!(check_port_free(port), Err(HarnessError::PortInUse(p)) if p == port));
    }
}
