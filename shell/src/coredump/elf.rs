//! ELF core files: writing one (`dump core`) and reading one back
//! (`kdbg --core`).
//!
//! Layout: the ELF header, the program headers (one `PT_NOTE`, then one
//! `PT_LOAD` per run of memory), the notes, the memory. Pages that were all
//! zero are `PT_LOAD` segments with `p_filesz = 0` (the loader zero-fills
//! `p_memsz`), so an idle 128 MiB machine is a small file. Notes:
//! - `CORE`/`NT_PRSTATUS` per task: `pr_pid` = gdb thread id (task + 1),
//!   `pr_cursig` = the stop's signal for the task that stopped (first),
//!   the general registers in Linux's `user_regs_struct` order (what gdb
//!   and bfd read as `.reg`);
//! - `CORE`/`NT_PRPSINFO`: the name `kernel`;
//! - `KDBG`/[`NT_KDBG`]: text lines: `kernel-id`, the stub's `why` row,
//!   its `task` rows, `missing START END REASON` per range not in the file,
//!   and `complete yes|no`.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};

use crate::regs::RegisterFile;

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRPSINFO: u32 = 3;
/// kdbg's own note (`KDBG` name): text.
pub const NT_KDBG: u32 = 0x4b44_0001;

const PRSTATUS_SIZE: usize = 336;
const PRPSINFO_SIZE: usize = 136;
const PR_REG: usize = 112;

/// One task's registers in a core.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreThread {
    pub tid: u64,
    pub signal: u8,
    pub regs: RegisterFile,
}

/// One range of memory: its bytes, or zeros (`data` empty, `len` bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub addr: u64,
    pub len: u64,
    /// Empty for an all-zero range.
    pub data: Vec<u8>,
}

/// Everything a core holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreFile {
    pub threads: Vec<CoreThread>,
    pub segments: Vec<Segment>,
    /// The `KDBG` note's text.
    pub kdbg: String,
}

// gdb `g` order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15.
// user_regs_struct: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi
// rdi orig_rax rip cs eflags rsp ss fs_base gs_base ds es fs gs.
const USER_REGS_OF_GPR: [usize; 16] = [10, 5, 11, 12, 13, 14, 4, 19, 9, 8, 7, 6, 3, 2, 1, 0];

fn user_regs(r: &RegisterFile) -> [u64; 27] {
    let mut u = [0u64; 27];
    for (g, &slot) in USER_REGS_OF_GPR.iter().enumerate() {
        u[slot] = r.gpr[g];
    }
    u[15] = u64::MAX; // orig_rax: not a system call
    u[16] = r.rip;
    u[17] = u64::from(r.segments[0]); // cs
    u[18] = u64::from(r.eflags);
    u[20] = u64::from(r.segments[1]); // ss
    u[21] = r.fs_base.unwrap_or(0);
    u[22] = r.gs_base.unwrap_or(0);
    u[23] = u64::from(r.segments[2]); // ds
    u[24] = u64::from(r.segments[3]); // es
    u[25] = u64::from(r.segments[4]); // fs
    u[26] = u64::from(r.segments[5]); // gs
    u
}

fn regs_of_user(u: &[u64; 27]) -> RegisterFile {
    let mut r = RegisterFile::default();
    for (g, &slot) in USER_REGS_OF_GPR.iter().enumerate() {
        r.gpr[g] = u[slot];
    }
    r.rip = u[16];
    r.eflags = u[18] as u32;
    r.segments = [
        u[17] as u32,
        u[20] as u32,
        u[23] as u32,
        u[24] as u32,
        u[25] as u32,
        u[26] as u32,
    ];
    r
}

fn note(out: &mut Vec<u8>, name: &str, kind: u32, desc: &[u8]) {
    let name = format!("{name}\0");
    out.extend((name.len() as u32).to_le_bytes());
    out.extend((desc.len() as u32).to_le_bytes());
    out.extend(kind.to_le_bytes());
    out.extend(name.as_bytes());
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn prstatus(t: &CoreThread) -> Vec<u8> {
    let mut d = vec![0u8; PRSTATUS_SIZE];
    d[0..4].copy_from_slice(&i32::from(t.signal).to_le_bytes());
    d[12..14].copy_from_slice(&i16::from(t.signal).to_le_bytes());
    d[32..36].copy_from_slice(&(t.tid as i32).to_le_bytes());
    for (i, v) in user_regs(&t.regs).iter().enumerate() {
        d[PR_REG + i * 8..PR_REG + i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

fn prpsinfo() -> Vec<u8> {
    let mut d = vec![0u8; PRPSINFO_SIZE];
    // pr_fname at 40 (16 bytes), pr_psargs at 56 (80 bytes).
    d[40..46].copy_from_slice(b"kernel");
    d[56..62].copy_from_slice(b"kernel");
    d
}

impl CoreFile {
    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut notes = Vec::new();
        for t in &self.threads {
            note(&mut notes, "CORE", NT_PRSTATUS, &prstatus(t));
        }
        note(&mut notes, "CORE", NT_PRPSINFO, &prpsinfo());
        note(&mut notes, "KDBG", NT_KDBG, self.kdbg.as_bytes());
        let phnum = 1 + self.segments.len();
        let mut off = 64 + 56 * phnum as u64;
        let notes_off = off;
        off += notes.len() as u64;
        let mut out = Vec::new();
        // ELF header.
        out.extend(b"\x7fELF\x02\x01\x01\x00");
        out.extend([0u8; 8]);
        out.extend(4u16.to_le_bytes()); // ET_CORE
        out.extend(62u16.to_le_bytes()); // EM_X86_64
        out.extend(1u32.to_le_bytes());
        out.extend(0u64.to_le_bytes()); // entry
        out.extend(64u64.to_le_bytes()); // phoff
        out.extend(0u64.to_le_bytes()); // shoff
        out.extend(0u32.to_le_bytes()); // flags
        out.extend(64u16.to_le_bytes());
        out.extend(56u16.to_le_bytes());
        out.extend((phnum as u16).to_le_bytes());
        out.extend(64u16.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        let phdr =
            |out: &mut Vec<u8>, kind: u32, flags: u32, off: u64, va: u64, fsz: u64, msz: u64| {
                out.extend(kind.to_le_bytes());
                out.extend(flags.to_le_bytes());
                out.extend(off.to_le_bytes());
                out.extend(va.to_le_bytes());
                out.extend(va.to_le_bytes());
                out.extend(fsz.to_le_bytes());
                out.extend(msz.to_le_bytes());
                out.extend(1u64.to_le_bytes());
            };
        phdr(&mut out, 4, 4, notes_off, 0, notes.len() as u64, 0);
        for s in &self.segments {
            let fsz = s.data.len() as u64;
            phdr(&mut out, 1, 7, off, s.addr, fsz, s.len);
            off += fsz;
        }
        out.extend(&notes);
        for s in &self.segments {
            out.extend(&s.data);
        }
        out
    }

    /// Reads a core written by [`CoreFile::to_bytes`] (or any x86-64 ELF
    /// core with `NT_PRSTATUS` notes).
    pub fn parse(b: &[u8]) -> Result<CoreFile> {
        let u16_at = |o: usize| -> Result<u16> {
            Ok(u16::from_le_bytes(
                b.get(o..o + 2)
                    .ok_or_else(|| anyhow!("truncated core file"))?
                    .try_into()?,
            ))
        };
        let u32_at = |o: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                b.get(o..o + 4)
                    .ok_or_else(|| anyhow!("truncated core file"))?
                    .try_into()?,
            ))
        };
        let u64_at = |o: usize| -> Result<u64> {
            Ok(u64::from_le_bytes(
                b.get(o..o + 8)
                    .ok_or_else(|| anyhow!("truncated core file"))?
                    .try_into()?,
            ))
        };
        if b.get(0..4) != Some(b"\x7fELF") {
            bail!("not an ELF file");
        }
        if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
            bail!("not a 64-bit little-endian ELF file");
        }
        if u16_at(16)? != 4 {
            bail!(
                "an ELF file, but not a core file (e_type is not ET_CORE): give the file `dump core` wrote"
            );
        }
        if u16_at(18)? != 62 {
            bail!("not an x86-64 core file");
        }
        let phoff = u64_at(32)? as usize;
        let phnum = u16_at(56)? as usize;
        let mut core = CoreFile::default();
        for i in 0..phnum {
            let p = phoff + i * 56;
            let kind = u32_at(p)?;
            let off = u64_at(p + 8)? as usize;
            let va = u64_at(p + 16)?;
            let fsz = u64_at(p + 32)? as usize;
            let msz = u64_at(p + 40)?;
            let data = b
                .get(off..off + fsz)
                .ok_or_else(|| anyhow!("truncated core file (segment {i} runs past its end)"))?;
            match kind {
                1 => core.segments.push(Segment {
                    addr: va,
                    len: msz,
                    data: data.to_vec(),
                }),
                4 => core.read_notes(data)?,
                _ => {}
            }
        }
        Ok(core)
    }

    fn read_notes(&mut self, mut n: &[u8]) -> Result<()> {
        let pad = |x: usize| (x + 3) & !3;
        while n.len() >= 12 {
            let namesz = u32::from_le_bytes(n[0..4].try_into()?) as usize;
            let descsz = u32::from_le_bytes(n[4..8].try_into()?) as usize;
            let kind = u32::from_le_bytes(n[8..12].try_into()?);
            let name_end = 12 + pad(namesz);
            let desc_end = name_end + pad(descsz);
            let name = n.get(12..12 + namesz).ok_or_else(|| anyhow!("bad note"))?;
            let desc = n
                .get(name_end..name_end + descsz)
                .ok_or_else(|| anyhow!("bad note"))?;
            let name = String::from_utf8_lossy(name);
            let name = name.trim_end_matches('\0');
            match (name, kind) {
                ("CORE", NT_PRSTATUS) if desc.len() >= PR_REG + 27 * 8 => {
                    let mut u = [0u64; 27];
                    for (i, v) in u.iter_mut().enumerate() {
                        *v = u64::from_le_bytes(
                            desc[PR_REG + i * 8..PR_REG + i * 8 + 8].try_into()?,
                        );
                    }
                    self.threads.push(CoreThread {
                        tid: u64::from(u32::from_le_bytes(desc[32..36].try_into()?)),
                        signal: desc[12],
                        regs: regs_of_user(&u),
                    });
                }
                ("KDBG", NT_KDBG) => self.kdbg = String::from_utf8_lossy(desc).into_owned(),
                _ => {}
            }
            n = n.get(desc_end.min(n.len())..).unwrap_or(&[]);
        }
        Ok(())
    }

    /// Reads `len` bytes at `addr`; `None` if any byte is not in the core.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let mut at = addr;
        let end = addr.checked_add(len as u64)?;
        while at < end {
            let s = self
                .segments
                .iter()
                .find(|s| at >= s.addr && at - s.addr < s.len)?;
            let off = at - s.addr;
            let n = (s.len - off).min(end - at);
            for i in 0..n {
                let b = s.data.get((off + i) as usize).copied().unwrap_or(0);
                out.push(b);
            }
            at += n;
        }
        Some(out)
    }

    /// The `KDBG` note's lines starting with `key `.
    pub fn kdbg_lines<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.kdbg
            .lines()
            .filter_map(move |l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
    }

    /// Ranges the dump could not read, with why.
    pub fn missing(&self) -> Vec<(u64, u64, String)> {
        self.kdbg_lines("missing")
            .filter_map(|l| {
                let mut w = l.splitn(3, ' ');
                let a = crate::cmd::parse::number(w.next()?).ok()?;
                let b = crate::cmd::parse::number(w.next()?).ok()?;
                Some((a, b, w.next().unwrap_or("").to_string()))
            })
            .collect()
    }

    /// Bytes of memory the core describes (zero ranges included).
    pub fn memory_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }
}

/// A stable id of a kernel ELF (FNV-1a 64 over its bytes): the kernel is
/// linked without a build id, so the core records this to check that
/// `--symbols` is the kernel that was dumped.
pub fn kernel_id(elf: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in elf {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// Collapses per-page results into segments: consecutive pages of the
/// same kind (data or zero) become one segment.
pub fn segments_of(pages: &BTreeMap<u64, Option<Vec<u8>>>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for (&addr, data) in pages {
        let len = 4096u64;
        if let Some(last) = out.last_mut()
            && last.addr + last.len == addr
            && last.data.is_empty() == data.is_none()
        {
            last.len += len;
            if let Some(d) = data {
                last.data.extend(d);
            }
            continue;
        }
        out.push(Segment {
            addr,
            len,
            data: data.clone().unwrap_or_default(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut r = RegisterFile::default();
        for i in 0..16 {
            r.gpr[i] = 0x1000 + i as u64;
        }
        r.rip = 0x1761c0;
        r.eflags = 0x246;
        r.segments = [8, 0x10, 0x10, 0x10, 0, 0];
        let mut pages = BTreeMap::new();
        pages.insert(0x1000, Some(vec![7u8; 4096]));
        pages.insert(0x2000, Some(vec![8u8; 4096]));
        pages.insert(0x3000, None);
        pages.insert(0x5000, None);
        let core = CoreFile {
            threads: vec![CoreThread {
                tid: 7,
                signal: 11,
                regs: r.clone(),
            }],
            segments: segments_of(&pages),
            kdbg: "why state=dead\nmissing 0x4000 0x5000 unmapped\n".into(),
        };
        assert_eq!(core.segments.len(), 3);
        let back = CoreFile::parse(&core.to_bytes()).unwrap();
        assert_eq!(back.threads, core.threads);
        assert_eq!(back.read(0x1ffe, 4).unwrap(), [7, 7, 8, 8]);
        assert_eq!(back.read(0x3000, 2).unwrap(), [0, 0]);
        assert!(back.read(0x4000, 1).is_none());
        assert_eq!(back.missing(), [(0x4000, 0x5000, "unmapped".to_string())]);
    }

    #[test]
    fn refuses_what_is_not_a_core() {
        assert!(CoreFile::parse(b"hello").is_err());
        let mut b = CoreFile::default().to_bytes();
        b[16] = 2; // ET_EXEC
        let e = CoreFile::parse(&b).unwrap_err().to_string();
        assert!(e.contains("not a core file"), "{e}");
        let full = CoreFile::default().to_bytes();
        assert!(CoreFile::parse(&full[..70]).is_err());
    }
}
