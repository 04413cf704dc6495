//! `cargo xtask qemu`, and finding (or installing) QEMU.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tests::{KernelExit, QemuConfig, Wiring};

use crate::option_value;

/// What to do about a missing QEMU.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Root with apt-get: install the package.
    Install,
    /// Anything else: stop with this one-line message.
    Refuse(String),
}

fn plan(is_root: bool, has_apt: bool) -> Plan {
    if is_root && has_apt {
        Plan::Install
    } else {
        Plan::Refuse(format!(
            "{} is missing (installing it needs root and apt-get); install it with: {}",
            tests::QEMU,
            tests::QEMU_INSTALL_HINT
        ))
    }
}

/// For users who start QEMU themselves: the stub's TCP chardev needs
/// `nodelay=on`, or every RSP round trip waits ~40-50 ms for a delayed ACK.
pub const HAND_RUN_HINT: &str = "running QEMU by hand? give the stub's tcp chardev nodelay=on \
(e.g. -serial tcp:127.0.0.1:1234,server=on,wait=off,nodelay=on): without it each debugger \
round trip costs ~40-50 ms (Nagle)";

/// Makes sure `qemu-system-x86_64` is available: found on PATH, or installed
/// with apt when we are root; otherwise an error with the exact command.
pub fn ensure() -> Result<PathBuf> {
    if let Ok(p) = tests::qemu_binary() {
        return Ok(p);
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    if let Plan::Refuse(msg) = plan(is_root, has_apt) {
        bail!("{msg}");
    }
    eprintln!(
        "xtask: {} not found; installing {} with apt-get",
        tests::QEMU,
        tests::QEMU_PACKAGE
    );
    for args in [
        vec!["update"],
        vec![
            "install",
            "-y",
            "--no-install-recommends",
            tests::QEMU_PACKAGE,
        ],
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "apt-get {} failed ({status}); install QEMU by hand: {}",
                args.join(" "),
                tests::QEMU_INSTALL_HINT
            );
        }
    }
    tests::qemu_binary()
        .context("apt-get installed qemu-system-x86 but qemu-system-x86_64 is still not on PATH")
}

/// Maps the kernel's exit to xtask's exit code, with a message.
pub fn report_exit(exit: KernelExit) -> ExitCode {
    match exit {
        KernelExit::Success => ExitCode::SUCCESS,
        KernelExit::Failure => {
            eprintln!("xtask: the kernel exited with failure (status 35)");
            ExitCode::FAILURE
        }
        KernelExit::Fatal => {
            eprintln!(
                "xtask: the kernel died (fatal trap or panic, status 37); see the console above"
            );
            ExitCode::FAILURE
        }
        KernelExit::Other(c) => {
            eprintln!("xtask: QEMU exited with status {c}");
            ExitCode::FAILURE
        }
        KernelExit::Signaled => {
            eprintln!("xtask: QEMU was killed");
            ExitCode::FAILURE
        }
    }
}

pub fn command(args: &[String]) -> Result<ExitCode> {
    let mut stub: Option<Wiring> = None;
    let mut append = "serve".to_string();
    let mut timeout = 3600.0f64;
    let mut icount = false;
    let mut smp = 1;
    let mut share_memory = true;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--stub" => {
                let v = option_value(args, &mut i, "--stub")?;
                stub = Some(Wiring::parse(v).map_err(anyhow::Error::msg)?);
            }
            "--append" => append = option_value(args, &mut i, "--append")?.to_string(),
            "--timeout" => {
                let v = option_value(args, &mut i, "--timeout")?;
                timeout = v.parse().ok().filter(|t: &f64| *t > 0.0).with_context(|| {
                    format!("--timeout `{v}`: give a positive number of seconds")
                })?;
            }
            "--icount" => icount = true,
            "--smp" => smp = crate::smp_value(args, &mut i)?,
            "--no-shared-memory" => share_memory = false,
            other => bail!(
                "unknown option `{other}` for `cargo xtask qemu`\n{}",
                crate::USAGE
            ),
        }
        i += 1;
    }
    ensure()?;
    let stub = match stub {
        Some(s) => s,
        None => Wiring::Tcp(tests::free_tcp_port().context("finding a free TCP port")?),
    };
    if let Wiring::Tcp(port) = stub {
        tests::check_port_free(port)?;
    }
    let kernel = crate::build::kernel()?;
    let mut cfg = QemuConfig::new();
    cfg.kernel = kernel.clone();
    cfg.append = append;
    cfg.console = Wiring::Stdio;
    cfg.stub = stub.clone();
    cfg.debugcon = Some(crate::build::root().join("target/kdbg/debugcon.log"));
    cfg.icount = icount;
    cfg.smp = smp;
    cfg.share_memory = share_memory;
    cfg.timeout = Duration::from_secs_f64(timeout);
    eprintln!(
        "xtask: booting {} ({smp} vCPU{}{}, stub on {}, ground truth in {})",
        kernel.display(),
        if smp == 1 { "" } else { "s" },
        match (smp > 1, icount) {
            (true, true) => " in one thread (icount)",
            (true, false) => " in parallel threads",
            _ => "",
        },
        stub.describe(),
        cfg.debugcon
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    if let Wiring::Tcp(port) = stub {
        eprintln!(
            "xtask: attach with: kdbg --connect tcp:127.0.0.1:{port} --symbols {k}   or   gdb {k} -ex 'target remote 127.0.0.1:{port}'",
            k = kernel.display()
        );
        eprintln!("xtask: {}", HAND_RUN_HINT);
    }
    let mut vm = cfg.spawn()?;
    if let Some(f) = vm.memory_file() {
        eprintln!(
            "xtask: guest RAM is the file {} (private directory; removed when QEMU stops): add --memory {} to kdbg",
            f.display(),
            f.display()
        );
    }
    match vm.wait_exit(cfg.timeout) {
        Ok(exit) => Ok(report_exit(exit)),
        Err(tests::HarnessError::Timeout { .. }) => {
            eprintln!("xtask: timeout of {timeout}s reached; QEMU killed");
            Ok(ExitCode::from(124))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn missing_qemu_plan() {
        assert_eq!(plan(true, true), Plan::Install);
        for (root, apt) in [(false, true), (true, false), (false, false)] {
            let Plan::Refuse(msg) = plan(root, apt) else {
                panic!("must refuse without root and apt");
            };
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(msg.contains("apt-get install -y qemu-system-x86"), "{msg}");
        }
    }
}
