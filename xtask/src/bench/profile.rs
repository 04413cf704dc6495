//! `cargo xtask bench profile`: where the instructions of one probe hit go,
//! function by function.
//!
//! Boots the bench mode with one call per row under `-icount shift=0` and
//! QEMU's one-instruction-per-block execution log (`-d exec,nochain`), read
//! through a FIFO (the log of a whole boot is ~1 GB; nothing is stored).
//! Every executed instruction between `hot_loop`'s `call bench_target` (or
//! `bench_sys_open_loop`'s `call sys_open`) and its return address is
//! attributed to the symbol containing it. Each row
//! has two such windows (unprobed, probed); the report shows the probed
//! one.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// Text symbols sorted by address (a PC belongs to the last one at or below it).
struct Symbols {
    addrs: Vec<u64>,
    names: Vec<String>,
}

impl Symbols {
    fn load(elf: &[u8]) -> Result<Symbols> {
        let file = object::File::parse(elf).context("parsing the kernel ELF")?;
        let mut map = BTreeMap::new();
        for sym in file.symbols() {
            let exec = sym
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .is_some_and(|s| s.kind() == object::SectionKind::Text);
            if !exec
                || sym.address() == 0
                || !matches!(sym.kind(), SymbolKind::Text | SymbolKind::Unknown)
            {
                continue;
            }
            let Ok(raw) = sym.name() else { continue };
            if raw.is_empty() || raw.starts_with(".L") {
                continue;
            }
            map.entry(sym.address())
                .or_insert_with(|| format!("{:#}", rustc_demangle::demangle(raw)));
        }
        Ok(Symbols {
            addrs: map.keys().copied().collect(),
            names: map.into_values().collect(),
        })
    }

    fn index(&self, pc: u64) -> Option<usize> {
        self.addrs.partition_point(|&a| a <= pc).checked_sub(1)
    }

    fn address(&self, name: &str) -> Option<u64> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.addrs[i])
    }
}

/// The `call rel32` to `target` inside the function at `func` (`len` bytes).
fn call_site(elf: &[u8], func: u64, len: u64, target: u64) -> Result<u64> {
    let file = object::File::parse(elf)?;
    for sec in file.sections() {
        let (start, size) = (sec.address(), sec.size());
        if func < start || func >= start + size {
            continue;
        }
        let data = sec.data()?;
        let off = (func - start) as usize;
        let code = data
            .get(off..(off + len as usize).min(data.len()))
            .context("hot_loop outside its section")?;
        for i in 0..code.len().saturating_sub(4) {
            if code[i] != 0xe8 {
                continue;
            }
            let rel = i32::from_le_bytes([code[i + 1], code[i + 2], code[i + 3], code[i + 4]]);
            let at = func + i as u64;
            if at.wrapping_add(5).wrapping_add_signed(i64::from(rel)) == target {
                return Ok(at);
            }
        }
    }
    bail!("no `call bench_target` found in hot_loop")
}

/// The PC of one `-d exec` line: `Trace N: HOST [CS_BASE/PC/FLAGS/CFLAGS] SYM`.
pub fn trace_pc(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("Trace ")?;
    let inner = rest.split_once('[')?.1;
    let pc = inner.split('/').nth(1)?;
    u64::from_str_radix(pc, 16).ok()
}

/// QEMU before 8.1 spells "one instruction per block" `-singlestep`.
fn one_insn_per_tb_args(version: &str) -> Vec<String> {
    let v: Vec<u32> = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("0")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    let (major, minor) = (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
    );
    if (major, minor) >= (8, 1) {
        vec!["-accel".into(), "tcg,one-insn-per-tb=on".into()]
    } else {
        vec!["-singlestep".into()]
    }
}

/// Runs the profile; returns the report text.
pub fn run(kernel: &Path, qemu_version: &str) -> Result<String> {
    let elf = std::fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    let syms = Symbols::load(&elf)?;
    // (probed function, call site, return address) of each caller loop.
    let mut sites = Vec::new();
    for (lp, target) in [
        ("hot_loop", "bench_target"),
        ("bench_unboosted_loop", "bench_unboosted"),
        ("bench_sys_open_loop", "sys_open"),
    ] {
        let l = syms
            .address(lp)
            .with_context(|| format!("{lp} not in the kernel's symbols"))?;
        let t = syms
            .address(target)
            .with_context(|| format!("{target} not in the kernel's symbols"))?;
        let call = call_site(&elf, l, 256, t).with_context(|| format!("in {lp}"))?;
        sites.push((target, call, call + 5));
    }

    let dir = ::tests::target_dir().join("bench-profile");
    std::fs::create_dir_all(&dir)?;
    let fifo = dir.join(format!("exec-{}.fifo", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let c = CString::new(fifo.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error()).context("mkfifo for QEMU's log");
    }

    let mut cfg = ::tests::QemuConfig::new();
    cfg.kernel = kernel.to_path_buf();
    cfg.append = "bench".into();
    cfg.console = ::tests::Wiring::Stdio;
    cfg.icount = true;
    cfg.extra = vec![
        "-fw_cfg".into(),
        "name=opt/kdbg/bench-iterations,string=1".into(),
    ];
    cfg.extra.extend(one_insn_per_tb_args(qemu_version));
    cfg.extra.extend([
        "-d".into(),
        "exec,nochain".into(),
        "-D".into(),
        fifo.display().to_string(),
    ]);
    let mut cmd = Command::new(::tests::qemu_binary()?);
    cmd.args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    ::tests::kill_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .context("starting QEMU with the execution log")?;
    let console = child.stdout.take().context("QEMU's stdout is not piped")?;
    let console = std::thread::spawn(move || {
        BufReader::new(console)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    // Histograms (symbol index -> instructions) of every window, per call site.
    let mut windows: Vec<Vec<BTreeMap<usize, u64>>> = vec![Vec::new(); sites.len()];
    let mut cur: Option<(usize, BTreeMap<usize, u64>)> = None;
    let log = std::fs::File::open(&fifo).context("opening QEMU's log FIFO")?;
    let _ = std::fs::remove_file(&fifo);
    for line in BufReader::with_capacity(1 << 20, log).lines() {
        let Ok(line) = line else { break };
        let Some(pc) = trace_pc(&line) else { continue };
        match cur.as_mut() {
            Some((site, h)) if pc == sites[*site].2 => {
                windows[*site].push(std::mem::take(h));
                cur = None;
            }
            Some((_, h)) => *h.entry(syms.index(pc).unwrap_or(usize::MAX)).or_default() += 1,
            None => {
                if let Some(i) = sites.iter().position(|s| s.1 == pc) {
                    cur = Some((i, BTreeMap::new()));
                }
            }
        }
    }
    let status = child.wait()?;
    let console = console.join().unwrap_or_default();
    if !status.success() && status.code() != Some(33) {
        bail!("the profiled bench boot failed ({status})");
    }
    // Rows in order, each with two windows at its target's call site
    // (unprobed, probed).
    let mut out = String::new();
    use std::fmt::Write as _;
    let mut next = vec![0usize; sites.len()];
    let mut rows = 0;
    for line in console.iter().filter(|l| l.starts_with("bench ROW ")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or("?")
        };
        let Some(site) = sites.iter().position(|s| s.0 == field("target")) else {
            continue;
        };
        let i = next[site];
        next[site] += 2;
        let (Some(base), Some(probed)) = (windows[site].get(i), windows[site].get(i + 1)) else {
            continue;
        };
        rows += 1;
        let total = |h: &BTreeMap<usize, u64>| h.values().sum::<u64>();
        let _ = writeln!(
            out,
            "{} ({}): {} instructions per hit ({} unprobed)",
            field("row"),
            field("target"),
            total(probed),
            total(base)
        );
        let mut v: Vec<(&usize, &u64)> = probed.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        for (i, n) in v.into_iter().take(14) {
            let name = syms.names.get(*i).map_or("?", String::as_str);
            let _ = writeln!(out, "  {n:6}  {name}");
        }
    }
    if rows == 0 {
        bail!("no bench rows found in the profiled boot");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exec_log_lines() {
        assert_eq!(
            trace_pc(
                "Trace 0: 0x7f6f00000240 [00000000000f0000/00000000000fe05b/00000040/ff020201] "
            ),
            Some(0xfe05b)
        );
        assert_eq!(
            trace_pc("Trace 0: 0x7f1 [0/000000000015c370/00000040/ff020201] bench_target"),
            Some(0x15c370)
        );
        assert_eq!(trace_pc("Linking TBs 0x1 [0000] index 0"), None);
    }

    #[test]
    fn picks_the_one_insn_per_block_option_by_version() {
        assert_eq!(
            one_insn_per_tb_args("QEMU emulator version 7.2.22 (Debian)"),
            vec!["-singlestep"]
        );
        assert_eq!(
            one_insn_per_tb_args("QEMU emulator version 8.2.0"),
            vec!["-accel", "tcg,one-insn-per-tb=on"]
        );
    }
}
