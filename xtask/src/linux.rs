//! `cargo xtask linux`: Debian's current cloud kernel under QEMU's own
//! gdbstub, with the kdbg shell attached (see `tests::linux`).

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub fn command(args: &[String]) -> Result<ExitCode> {
    let mut kdbg_args: Vec<String> = Vec::new();
    let mut kaslr = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--kaslr" => kaslr = true,
            "--" => {
                kdbg_args = args[i + 1..].to_vec();
                break;
            }
            other => bail!(
                "unknown option `{other}` for `cargo xtask linux` (kdbg's own options go after `--`)\n{}",
                crate::USAGE
            ),
        }
        i += 1;
    }
    crate::qemu::ensure()?;
    let kdbg = crate::build::kdbg()?;
    let t = Instant::now();
    let img = tests::linux::prepare().context("preparing the Linux kernel and initramfs")?;
    eprintln!(
        "xtask: Linux {} ready in {:.1}s (cached in {})",
        img.release,
        t.elapsed().as_secs_f64(),
        tests::linux::cache_dir().display()
    );
    let vm = tests::linux::LinuxVm::boot(&img, kaslr).context("booting Linux in QEMU")?;
    eprintln!(
        "xtask: booting; QEMU's gdbstub on tcp:127.0.0.1:{}, console in {}",
        vm.port,
        vm.console.display()
    );
    // Attach once the workload runs (the shell attaches at any time; this
    // makes the first prompt show a live system).
    if vm
        .wait_console("kdbg-linux: init up", Duration::from_secs(180))
        .is_err()
    {
        eprintln!("xtask: no init banner yet; attaching anyway");
    }
    let status = Command::new(&kdbg)
        .arg("--connect")
        .arg(format!("tcp:127.0.0.1:{}", vm.port))
        .arg("--symbols")
        .arg(&img.vmlinux)
        .args(&kdbg_args)
        .status()
        .with_context(|| format!("starting {}", kdbg.display()))?;
    drop(vm);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
