//! `cargo xtask run`: build, boot the kernel with the stub on a free local
//! port, and open the kdbg shell on it. While the shell is not built yet
//! (`kdbg` says "not built yet"), show the kernel's console instead.

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tests::{QemuConfig, Wiring};

use crate::option_value;

/// vCPUs of `cargo xtask run` without `--smp`: two, in parallel host
/// threads (MTTCG), so a session sees the kernel as SMP (docs/SMP.md).
const DEFAULT_SMP: u32 = 2;

/// QEMU started by `run` lives at most this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(8 * 3600);

pub fn command(args: &[String]) -> Result<ExitCode> {
    let mut append = "serve".to_string();
    let mut kdbg_args: Vec<String> = Vec::new();
    let mut smp = DEFAULT_SMP;
    let mut share_memory = true;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--append" => append = option_value(args, &mut i, "--append")?.to_string(),
            "--smp" => smp = crate::smp_value(args, &mut i)?,
            // Everything over the UART, as with a plain QEMU line.
            "--no-shared-memory" => share_memory = false,
            "--" => {
                kdbg_args = args[i + 1..].to_vec();
                break;
            }
            other => bail!(
                "unknown option `{other}` for `cargo xtask run` (kdbg's own options go after `--`)\n{}",
                crate::USAGE
            ),
        }
        i += 1;
    }
    crate::qemu::ensure()?;
    let kernel = crate::build::kernel()?;
    let kdbg = crate::build::kdbg()?;
    let shell_ready = Command::new(&kdbg)
        .arg("--version")
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            !text.contains("not built yet")
        })
        .unwrap_or(false);

    let port = tests::free_tcp_port().context("finding a free TCP port")?;
    let mut cfg = QemuConfig::new();
    cfg.kernel = kernel.clone();
    cfg.append = append;
    cfg.stub = Wiring::Tcp(port);
    cfg.debugcon = Some(crate::build::root().join("target/kdbg/debugcon.log"));
    cfg.timeout = RUN_TIMEOUT;
    cfg.smp = smp;
    cfg.share_memory = share_memory;

    if !shell_ready {
        eprintln!(
            "xtask: the kdbg shell is not built yet; showing the kernel console (Ctrl-C stops QEMU)"
        );
        eprintln!(
            "xtask: stub on tcp:127.0.0.1:{port}: gdb {} -ex 'target remote 127.0.0.1:{port}'",
            kernel.display()
        );
        cfg.console = Wiring::Stdio;
        let mut vm = cfg.spawn()?;
        let exit = vm.wait_exit(RUN_TIMEOUT)?;
        return Ok(crate::qemu::report_exit(exit));
    }

    let console = crate::build::root().join("target/kdbg/console.log");
    let _ = std::fs::remove_file(&console);
    cfg.console = Wiring::File(console.clone());
    let mut vm = cfg.spawn()?;
    vm.wait_for_stub_port(Duration::from_secs(20))?;
    // Show the boot (banner, mode line) before the shell takes the terminal.
    let _ = vm.wait_for_console("serve:", Duration::from_secs(10));
    for line in vm.console().lines().take(5) {
        println!("console: {}", line.trim_end());
    }
    eprintln!("xtask: kernel console continues in {}", console.display());
    if let Some(f) = vm.memory_file() {
        eprintln!(
            "xtask: guest RAM is shared with kdbg through {} (--memory)",
            f.display()
        );
    }
    let mut shell = Command::new(&kdbg);
    shell
        .arg("--connect")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .arg("--symbols")
        .arg(&kernel)
        // QEMU is dropped when the shell exits: nothing stays behind.
        .arg("--kernel-exits-with-kdbg");
    if let Some(f) = vm.memory_file() {
        shell.arg("--memory").arg(f);
    }
    shell.args(&kdbg_args);
    let mut child = shell
        .spawn()
        .with_context(|| format!("starting {}", kdbg.display()))?;
    // Ctrl-C belongs to the shell from here on (QEMU runs in its own process group).
    ignore_sigint();
    let status = child.wait().context("waiting for kdbg")?;
    drop(vm);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn ignore_sigint() {
    // SAFETY: setting SIGINT's disposition to SIG_IGN has no memory-safety implications.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}
