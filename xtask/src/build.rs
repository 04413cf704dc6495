//! Building: the kernel with its own target, flags and target directory
//! and kallsyms patched in,, copied to `target/kdbg/kernel`;
//! the host `kdbg` binary; clippy for both worlds.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// The kernel is built for the host triple, named explicitly so the kernel
/// rustflags do not reach build scripts and proc-macros.
pub const KERNEL_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Code generation flags for the kernel only.
pub const KERNEL_RUSTFLAGS: &str =
    "-C relocation-model=static -C no-redzone=yes -C code-model=small";
/// Crates built into the kernel (checked by `clippy` with the kernel flags).
pub const KERNEL_CRATES: &[&str] = &["kernel", EMBED_KERNEL, "arch", "probes", "stub", "proto"];
/// docs/EMBEDDING.md's example kernel, built (and installed at
/// `target/kdbg/embed-kernel`) with the reference kernel.
pub const EMBED_KERNEL: &str = "embed-kernel";

pub fn root() -> PathBuf {
    tests::workspace_root()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn kernel_target_dir() -> PathBuf {
    root().join("target/kernel")
}

/// `cargo <args>` for the kernel world: kernel flags, kernel target directory.
fn kernel_cargo(args: &[&str]) -> Command {
    let mut c = cargo();
    c.args(args)
        .arg("--release")
        .arg("--target")
        .arg(KERNEL_TARGET)
        .arg("--target-dir")
        .arg(kernel_target_dir())
        .env("RUSTFLAGS", KERNEL_RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    c
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Builds the kernel and installs it at `target/kdbg/kernel` with kallsyms
/// filled in (and the example kernel at `target/kdbg/embed-kernel`).
pub fn kernel() -> Result<PathBuf> {
    eprintln!("xtask: building the kernel ({KERNEL_TARGET}, release, {KERNEL_RUSTFLAGS})");
    let build = ["build", "-p", "kernel", "-p", EMBED_KERNEL];
    run(kernel_cargo(&build), "the kernel build")?;
    let built = kernel_target_dir().join(KERNEL_TARGET).join("release");
    let out = root().join("target/kdbg/kernel");
    install_kernel(&built.join("kernel"), &out)?;
    let example = root().join("target/kdbg").join(EMBED_KERNEL);
    install_kernel(&built.join(EMBED_KERNEL), &example)?;
    Ok(out)
}

fn install_kernel(built: &Path, out: &Path) -> Result<()> {
    let mut elf = std::fs::read(built).with_context(|| format!("reading {}", built.display()))?;
    let (n, used, cap) = crate::kallsyms::patch(&mut elf)?;
    let dir = out.parent().context("kernel output path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".kernel.{}", std::process::id()));
    std::fs::write(&tmp, &elf).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    eprintln!(
        "xtask: kernel at {} (kallsyms: {n} functions, {used} of {cap} bytes)",
        out.display()
    );
    Ok(())
}

/// Builds the host `kdbg` binary; returns its path.
pub fn kdbg() -> Result<PathBuf> {
    eprintln!("xtask: building kdbg");
    let mut c = cargo();
    c.args(["build", "-p", "shell", "--bin", "kdbg"]);
    run(c, "the kdbg build")?;
    Ok(tests::target_dir().join("debug/kdbg"))
}

/// clippy -D warnings: host crates (default members), then the kernel crates
/// with the kernel's target and flags.
pub fn clippy() -> Result<ExitCode> {
    let mut host = cargo();
    host.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    let host_ok = host.status().context("running cargo clippy")?.success();
    let mut args = vec!["clippy"];
    for c in KERNEL_CRATES {
        args.push("-p");
        args.push(c);
    }
    let mut k = kernel_cargo(&args);
    k.args(["--", "-D", "warnings"]);
    let kernel_ok = k
        .status()
        .context("running cargo clippy for the kernel")?
        .success();
    if host_ok && kernel_ok {
        eprintln!("xtask: clippy clean");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "xtask: clippy found problems (host crates: {}, kernel crates: {})",
            if host_ok { "clean" } else { "FAILED" },
            if kernel_ok { "clean" } else { "FAILED" }
        );
        Ok(ExitCode::FAILURE)
    }
}
