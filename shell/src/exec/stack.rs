//! bt: CFI unwinding (frame pointers as fallback), inline frames, kretprobe
//! trampolines mapped back to the real return address.

use std::collections::HashMap;

use anyhow::{Result, bail};
use symbols::{Register, Registers};

use crate::cmd::Invocation;
use crate::cmd::parse::count;
use crate::output::*;
use crate::regs::RegisterFile;
use crate::session::Session;

/// The unwinder's registers from a stop's register file.
pub(super) fn to_unwind_regs(r: &RegisterFile) -> Registers {
    // gdb order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15.
    let map = [
        Register::RAX,
        Register::RBX,
        Register::RCX,
        Register::RDX,
        Register::RSI,
        Register::RDI,
        Register::RBP,
        Register::RSP,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    let mut out = Registers::new();
    for (i, reg) in map.iter().enumerate() {
        out.set(*reg, Some(r.gpr[i]));
    }
    out.set(Register::RIP, Some(r.rip));
    out
}

pub fn backtrace(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let max = match args {
        [] => 64,
        [n] => count(n)? as usize,
        _ => bail!("usage: bt [N]"),
    };
    let regs = s.registers()?;
    let mut cache: HashMap<u64, Option<u64>> = HashMap::new();
    // Outstanding kretprobe instances: where trampolined frames really return.
    let mut insts: Vec<proto::reply::InstRow> = s
        .monitor("retinst")
        .map(|t| {
            t.lines()
                .filter_map(|l| proto::reply::InstRow::parse(l).ok())
                .collect()
        })
        .unwrap_or_default();
    insts.sort_by_key(|i| i.sp);
    let tramp: Vec<u64> = s
        .shared
        .image
        .symbols_where(|n| n.contains("kretprobe_trampoline") || n.contains("rethook_trampoline"))
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    let mut frames = Vec::new();
    let mut cur = to_unwind_regs(&regs);
    let mut innermost = true;
    let mut how = "cfi".to_string();
    while frames.len() < max {
        let Some(mut pc) = cur.pc() else { break };
        if pc == 0 {
            break;
        }
        if tramp.iter().any(|t| pc >= *t && pc < t + 64)
            && let Some(pos) = insts
                .iter()
                .position(|i| cur.sp().is_none_or(|sp| i.sp + 8 >= sp.saturating_sub(8)))
        {
            pc = insts.remove(pos).ret;
            cur.set(Register::RIP, Some(pc));
            how = "kretprobe".into();
        }
        let lookup = if innermost { pc } else { pc.saturating_sub(1) };
        let mut inl = Vec::new();
        if let Ok(elf) = s.shared.elf()
            && let Ok(fr) = elf.frames(lookup)
        {
            inl = fr;
        }
        if inl.is_empty() {
            frames.push(FrameInfo {
                level: frames.len(),
                pc,
                function: s.shared.describe(pc),
                source: None,
                inlined: false,
                how: how.clone(),
            });
        } else {
            let n = inl.len();
            // At the stop, inlined frames presented at their call site
            // (gdb's skipped inline frames) are not listed.
            let skip = if innermost {
                super::stepping::presented_skip(s).min(n - 1)
            } else {
                0
            };
            for (k, f) in inl.into_iter().enumerate().skip(skip) {
                let name = f
                    .demangled
                    .clone()
                    .or(f.function.clone())
                    .unwrap_or_else(|| s.shared.describe(pc));
                frames.push(FrameInfo {
                    level: frames.len(),
                    pc,
                    function: name,
                    source: f
                        .location
                        .filter(|l| l.line != 0)
                        .map(|l| format!("{}:{}", l.file, l.line)),
                    inlined: k + 1 < n,
                    how: how.clone(),
                });
            }
        }
        // One step: CFI, else frame pointers.
        let next = {
            let mut read = |a: u64| -> Option<u64> {
                if let Some(v) = cache.get(&a) {
                    return *v;
                }
                let v = s
                    .client()
                    .ok()?
                    .read_memory(a, 8)
                    .ok()
                    .and_then(|b| b.try_into().ok().map(u64::from_le_bytes));
                cache.insert(a, v);
                v
            };
            let cfi = s
                .shared
                .elf()
                .ok()
                .and_then(|elf| elf.unwind_step(&cur, innermost, &mut read));
            match cfi {
                Some(n) => {
                    how = "cfi".into();
                    Some(n)
                }
                None => {
                    let fp = cur.get(Register::RBP).filter(|v| *v != 0);
                    let has_cfi = s.shared.elf().is_ok_and(|e| e.has_cfi(lookup));
                    match fp {
                        Some(fp) if !has_cfi => {
                            let ret = read(fp + 8);
                            let prev = read(fp);
                            match (ret, prev) {
                                (Some(ret), Some(prev)) if prev > fp => {
                                    let mut n = Registers::new();
                                    n.set(Register::RIP, Some(ret));
                                    n.set(Register::RSP, Some(fp + 16));
                                    n.set(Register::RBP, Some(prev));
                                    how = "fp".into();
                                    Some(n)
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    }
                }
            }
        };
        match next {
            Some(n) if n.sp() != cur.sp() || n.pc() != cur.pc() => cur = n,
            _ => break,
        }
        innermost = false;
    }
    Ok(Output::Backtrace { frames })
}
