//! Core files: `dump core FILE` writes one ([`dump`]); `kdbg --core FILE
//! --symbols KERNEL` opens one offline ([`open`]).
//!
//! Offline, the core is served by a small in-process stub ([`server`]) on
//! a loopback port: the shell connects to it as to a live kernel, so every
//! read-only command works unchanged (registers per task, memory, `bt`,
//! `print`, `x`, `disas`, `threads`, `why`, `dmesg`), and the commands that
//! need a live kernel are refused by name before they reach it.

pub mod dump;
pub mod elf;
pub mod server;

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

use crate::rsp::Endpoint;

/// Set when this kdbg reads a core file instead of a live kernel.
static OFFLINE: OnceLock<String> = OnceLock::new();

/// This session reads a core file.
pub fn offline() -> bool {
    OFFLINE.get().is_some()
}

/// Commands that change or resume the kernel, or wait for it to run.
const LIVE_ONLY: &[&str] = &[
    "kprobe",
    "jprobe",
    "kretprobe",
    "enable",
    "disable",
    "delete",
    "break",
    "tbreak",
    "hbreak",
    "watch",
    "continue",
    "stepi",
    "nexti",
    "step",
    "next",
    "finish",
    "until",
    "advance",
    "interrupt",
    "write",
    "set",
    "wait",
    "live",
    "reconnect",
];

/// Refuses a command that needs a live kernel while reading a core.
pub fn refuse_live_only(name: &str) -> Result<()> {
    if let Some(path) = OFFLINE.get()
        && LIVE_ONLY.contains(&name)
    {
        bail!(
            "`{name}` needs a live kernel: this session reads the core file {path} (read-only: bt, regs, x, print, disas, threads, why, dmesg work)"
        );
    }
    Ok(())
}

/// Opens `core` against the kernel ELF `symbols`: serves it on a loopback
/// port and returns the endpoint to connect to.
pub fn open(core: &Path, symbols: Option<&Path>) -> Result<Endpoint> {
    let symbols = symbols.ok_or_else(|| {
        anyhow!("--core needs --symbols KERNEL (the kernel ELF the core was dumped from)")
    })?;
    let bytes = std::fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    let file = elf::CoreFile::parse(&bytes)
        .with_context(|| format!("{} is not a kdbg core file", core.display()))?;
    if file.threads.is_empty() {
        bail!(
            "{}: the core has no registers (no NT_PRSTATUS note)",
            core.display()
        );
    }
    let kernel = std::fs::read(symbols)
        .with_context(|| format!("cannot read the kernel ELF {}", symbols.display()))?;
    if let Some(want) = file.kdbg_lines("kernel-id").next()
        && want != elf::kernel_id(&kernel)
    {
        eprintln!(
            "kdbg: warning: {} is not the kernel this core was dumped from (kernel id {want}); names and code may not match",
            symbols.display()
        );
    }
    if file.kdbg_lines("complete").next() == Some("no") {
        eprintln!("kdbg: the core is partial; missing ranges:");
        for (a, b, w) in file.missing() {
            eprintln!("kdbg:   {a:#x}-{b:#x} {w}");
        }
    }
    let port = server::start(file, kernel)?;
    let _ = OFFLINE.set(core.display().to_string());
    Ok(Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port,
    })
}
