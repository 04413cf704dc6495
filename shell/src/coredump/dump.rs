//! `dump core FILE`: an ELF core of the stopped kernel.
//!
//! What is read: RAM from 0 to the kernel's `KDBG_RAM_END` (the image's
//! own range when the kernel does not say), one `monitor pages` bitmap per
//! 8 MiB first so that all-zero pages cost nothing on the wire (they become
//! zero-filled segments), then the non-zero pages. The kernel's code and
//! read-only data (ELF sections without the write flag, and `.text`) are
//! not read: they are the kernel ELF's bytes, which gdb and `kdbg --core`
//! take from the ELF (`from-elf` lines in the note). Registers: `g` of
//! every task. The file is written under a temporary name and renamed when
//! complete; an interrupted dump (Ctrl-C) or an unreadable range still
//! gives a valid core whose note lists the missing ranges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use super::elf::{CoreFile, CoreThread, kernel_id, segments_of};
use crate::cmd::Invocation;
use crate::output::Output;
use crate::session::Session;

const PAGE: u64 = 4096;
/// The span of one `monitor pages` request (the stub's maximum).
const SPAN: u64 = 8 << 20;

/// What `dump core` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dumped {
    pub path: String,
    /// Bytes of the file.
    pub bytes: u64,
    /// Bytes of memory the core describes (zero ranges included).
    pub memory: u64,
    /// Bytes read over the wire (non-zero pages).
    pub read: u64,
    pub threads: usize,
    /// `[start, end, why]` of every range not in the core.
    pub missing: Vec<(u64, u64, String)>,
    /// Ranges left to the kernel ELF (code, read-only data).
    pub from_elf: Vec<(u64, u64)>,
    pub complete: bool,
    pub seconds: f64,
}

/// `dump core FILE`.
pub fn dump(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let path = match inv.args.as_slice() {
        [what, file] if what == "core" => PathBuf::from(file),
        [what] if what == "core" => bail!("usage: dump core FILE (where to write the core)"),
        _ => bail!("usage: dump core FILE"),
    };
    if super::offline() {
        bail!("this session is already a core file: copy the file instead");
    }
    if s.running() {
        bail!(
            "the kernel is running: a core is a snapshot of a stopped kernel; `interrupt` (or Ctrl-C) first"
        );
    }
    // The file first: a bad path fails before minutes of reading.
    let tmp = temp_path(&path)?;
    let mut file = std::fs::File::create(&tmp).map_err(|e| {
        anyhow!(
            "cannot write {}: {e}",
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(path.file_name().unwrap_or_default())
                .display()
        )
    })?;
    // Ctrl-C ends the reading (in batch mode too) and keeps what was read.
    let _sigint = crate::session::SigintGuard::install();
    let result = collect(s).and_then(|(core, mut info)| {
        let bytes = core.to_bytes();
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename the finished core to {}", path.display()))?;
        info.bytes = bytes.len() as u64;
        info.path = path.display().to_string();
        Ok(info)
    });
    match result {
        Ok(info) => Ok(Output::CoreDumped { core: info }),
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("`{}` is not a file name", path.display()))?;
    if path.is_dir() {
        bail!("{} is a directory: give a file name", path.display());
    }
    let mut tmp = name.to_os_string();
    tmp.push(format!(".partial-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

fn symbol_addr(s: &Session, name: &str) -> Option<u64> {
    let elf = s.shared.elf().ok()?;
    elf.lookup(name).first().map(|sym| sym.address)
}

/// Reads everything a core needs.
fn collect(s: &mut Session) -> Result<(CoreFile, Dumped)> {
    let started = Instant::now();
    crate::session::CANCEL.store(false, Ordering::SeqCst);
    let why = s.monitor("why").unwrap_or_default();
    let tasks = s.monitor("tasks").unwrap_or_default();
    let signal = crate::exec::postmortem::WhyInfo::parse(&why)
        .and_then(|w| w.signal)
        .unwrap_or(2) as u8;
    // Registers of every task, the selected (stopped) one first.
    let selected = s.selected_thread;
    let mut tids = s.client()?.thread_ids()?;
    if let Some(sel) = selected.map(crate::session::tid_of_task)
        && let Some(i) = tids.iter().position(|t| *t == sel)
    {
        let t = tids.remove(i);
        tids.insert(0, t);
    }
    let mut threads = Vec::new();
    for (i, tid) in tids.iter().enumerate() {
        s.client()?.select_thread(*tid)?;
        let regs = s.registers()?;
        threads.push(CoreThread {
            tid: *tid,
            signal: if i == 0 { signal } else { 0 },
            regs,
        });
    }
    if let Some(t) = tids.first() {
        let back = selected.map(crate::session::tid_of_task).unwrap_or(*t);
        s.client()?.select_thread(back)?;
    }
    // Which memory: RAM, minus what the ELF already has.
    let (elf_bytes, from_elf, image_ranges) = {
        let elf = s.shared.elf()?;
        let path = elf.path().to_path_buf();
        drop(elf);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read the kernel ELF {}", path.display()))?;
        let (ro, img) = elf_ranges(&bytes)?;
        (bytes, ro, img)
    };
    let ram_end = match symbol_addr(s, "KDBG_RAM_END") {
        Some(a) => {
            let b = s.client()?.read_memory(a, 8)?;
            u64::from_le_bytes(b.try_into().map_err(|_| anyhow!("short read"))?)
        }
        None => 0,
    };
    let ranges: Vec<(u64, u64)> = if ram_end > 0 {
        vec![(0, ram_end.next_multiple_of(PAGE))]
    } else {
        image_ranges
    };
    let in_elf = |a: u64| from_elf.iter().any(|(s, e)| a >= *s && a < *e);
    let mut pages: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    let mut missing: Vec<(u64, u64, String)> = Vec::new();
    let mut read = 0u64;
    let mut cancelled = false;
    let progress =
        std::io::IsTerminal::is_terminal(&std::io::stderr()) && !s.shared.display.render().json;
    'ranges: for &(start, end) in &ranges {
        let mut base = start;
        while base < end {
            let len = (end - base).min(SPAN);
            let (map, holes) = page_map(s, base, len)?;
            for i in 0..len.div_ceil(PAGE) {
                let addr = base + i * PAGE;
                if crate::session::CANCEL.swap(false, Ordering::SeqCst) {
                    cancelled = true;
                    missing.push((addr, end, "interrupted (Ctrl-C)".into()));
                    break 'ranges;
                }
                if in_elf(addr) {
                    continue;
                }
                if bit(&holes, i) {
                    missing.push((addr, addr + PAGE, "unmapped".into()));
                } else if bit(&map, i) {
                    match s.client()?.read_memory(addr, PAGE as usize) {
                        Ok(b) if b.len() == PAGE as usize => {
                            read += PAGE;
                            pages.insert(addr, Some(b));
                        }
                        Ok(_) | Err(_) => missing.push((addr, addr + PAGE, "unreadable".into())),
                    }
                    if progress && (read / PAGE).is_multiple_of(64) {
                        eprint!("\rkdbg: dump core: {} KiB read", read >> 10);
                    }
                } else {
                    pages.insert(addr, None);
                }
            }
            base += len;
        }
    }
    if progress {
        eprintln!();
    }
    let missing = merge(missing);
    let complete = !cancelled && missing.iter().all(|m| m.2 == "unmapped");
    let mut note = String::new();
    note.push_str("kdbg-core 1\n");
    note.push_str(&format!("kernel-id {}\n", kernel_id(&elf_bytes)));
    for l in why.lines().filter(|l| l.starts_with("why ")) {
        note.push_str(&format!("{l}\n"));
    }
    for l in tasks.lines().filter(|l| l.starts_with("task ")) {
        note.push_str(&format!("{l}\n"));
    }
    for (a, b) in &from_elf {
        note.push_str(&format!("from-elf {a:#x} {b:#x}\n"));
    }
    for (a, b, w) in &missing {
        note.push_str(&format!("missing {a:#x} {b:#x} {w}\n"));
    }
    note.push_str(&format!(
        "complete {}\n",
        if complete { "yes" } else { "no" }
    ));
    let core = CoreFile {
        threads,
        segments: segments_of(&pages),
        kdbg: note,
    };
    let info = Dumped {
        path: String::new(),
        bytes: 0,
        memory: core.memory_bytes(),
        read,
        threads: core.threads.len(),
        missing,
        from_elf,
        complete,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((core, info))
}

fn bit(map: &[u8], i: u64) -> bool {
    map.get((i / 8) as usize)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// `monitor pages`: (non-zero map, unmapped map).
fn page_map(s: &Session, base: u64, len: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    let text = s
        .monitor(&format!("pages {base:#x} {len:#x}"))
        .map_err(|e| anyhow!("the stub cannot list non-zero pages (`monitor pages`): {e}"))?;
    use proto::reply::PagesHex;
    let row = text
        .lines()
        .find_map(|l| PagesHex::parse(l).ok())
        .ok_or_else(|| anyhow!("the stub's `pages` reply has no `pages` row: {text}"))?;
    let bits = |hex: &str| -> Result<Vec<u8>> {
        PagesHex::bitmap(hex)
            .map(Iterator::collect)
            .ok_or_else(|| anyhow!("malformed `pages` row: {text}"))
    };
    Ok((bits(row.map)?, bits(row.holes)?))
}

/// Joins adjacent ranges with the same reason.
fn merge(v: Vec<(u64, u64, String)>) -> Vec<(u64, u64, String)> {
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for (a, b, w) in v {
        if let Some(last) = out.last_mut()
            && last.1 == a
            && last.2 == w
        {
            last.1 = b;
            continue;
        }
        out.push((a, b, w));
    }
    out
}

/// (ranges of code and read-only data, page-rounded inward; the image's
/// whole range) from the kernel ELF's section headers.
type Ranges = Vec<(u64, u64)>;

fn elf_ranges(bytes: &[u8]) -> Result<(Ranges, Ranges)> {
    let at = |o: usize, n: usize| -> Result<u64> {
        let b = bytes
            .get(o..o + n)
            .ok_or_else(|| anyhow!("the kernel ELF is truncated"))?;
        Ok(b.iter().rev().fold(0u64, |a, x| a << 8 | u64::from(*x)))
    };
    if bytes.get(0..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) {
        bail!("the kernel file is not a 64-bit ELF");
    }
    let shoff = at(0x28, 8)? as usize;
    let shentsize = at(0x3a, 2)? as usize;
    let shnum = at(0x3c, 2)? as usize;
    const WRITE: u64 = 0x1;
    const ALLOC: u64 = 0x2;
    const EXEC: u64 = 0x4;
    const NOBITS: u64 = 8;
    let mut ro = Vec::new();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        let kind = at(h + 4, 4)?;
        let flags = at(h + 8, 8)?;
        let addr = at(h + 16, 8)?;
        let size = at(h + 32, 8)?;
        if flags & ALLOC == 0 || size == 0 {
            continue;
        }
        lo = lo.min(addr);
        hi = hi.max(addr + size);
        if kind != NOBITS && (flags & WRITE == 0 || flags & EXEC != 0) {
            let a = addr.next_multiple_of(PAGE);
            let b = (addr + size) & !(PAGE - 1);
            if a < b {
                ro.push((a, b));
            }
        }
    }
    ro.sort();
    let img = if lo < hi {
        vec![(lo & !(PAGE - 1), hi.next_multiple_of(PAGE))]
    } else {
        Vec::new()
    };
    Ok((ro, img))
}

pub fn render_dumped(d: &Dumped) -> String {
    let mut s = format!(
        "core written to {}: {} KiB file, {} MiB of memory ({} KiB read, zero pages skipped, code and read-only data left to the kernel ELF), {} tasks, {:.1} s",
        d.path,
        d.bytes >> 10,
        d.memory >> 20,
        d.read >> 10,
        d.threads,
        d.seconds
    );
    if !d.complete {
        s.push_str("\nthe dump is partial; missing:");
        for (a, b, w) in &d.missing {
            s.push_str(&format!("\n  {a:#x}-{b:#x} {w}"));
        }
    } else if !d.missing.is_empty() {
        let pages: u64 = d.missing.iter().map(|(a, b, _)| (b - a) / PAGE).sum();
        let shown: Vec<String> = d
            .missing
            .iter()
            .take(3)
            .map(|(a, b, _)| format!("{a:#x}-{b:#x}"))
            .collect();
        s.push_str(&format!(
            "\nnot in the core: {pages} unmapped page(s) (page 0, stack guard pages): {}{}",
            shown.join(", "),
            if d.missing.len() > 3 { ", ..." } else { "" }
        ));
    }
    s
}
