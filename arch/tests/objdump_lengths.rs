//! Differential test of instruction lengths: every instruction `objdump -d`
//! prints for the whole `.text` of a real binary must decode to the same
//! length with the decoder `analyze` uses, and `analyze`/`slot_code` must
//! handle every one of them without panicking (the relocation of every
//! RIP-relative instruction is checked by decoding the copy).
//!
//! Binaries: `/usr/bin/gdb` (~6 MB of .text, ~1.5 M instructions; about
//! 10-20 s in a debug build) and the reference kernel (env `KDBG_KERNEL`, or
//! `target/kdbg/kernel` as built by `cargo xtask`). Missing binaries or a
//! missing `objdump` fail the test with what to do.

// Test code: a failed unwrap/expect/panic is a failed test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arch::insn::{Execution, Refusal, Tail, analyze, slot_code};
use iced_x86::{Decoder, DecoderOptions};

#[derive(Default, Debug)]
struct Stats {
    compared: u64,
    bad: u64,
    mismatches: Vec<String>,
    refused: u64,
    emulated: u64,
    out_of_line: u64,
    boostable: u64,
    rip_relative: u64,
    /// `.text` as printed by objdump: start address and bytes.
    text_start: u64,
    text: Vec<u8>,
    /// Every instruction start objdump printed.
    starts: std::collections::HashSet<u64>,
    keep_text: bool,
}

/// Parse one `objdump -d --insn-width=15` instruction line:
/// `  <hex addr>:\t<hex bytes>\t<disassembly>`.
fn parse_line(line: &str) -> Option<(u64, Vec<u8>, &str)> {
    let (addr, rest) = line.split_once(":\t")?;
    let addr = u64::from_str_radix(addr.trim(), 16).ok()?;
    let (hex, asm) = rest.split_once('\t').unwrap_or((rest, ""));
    let mut bytes = Vec::with_capacity(16);
    for tok in hex.split_whitespace() {
        bytes.push(u8::from_str_radix(tok, 16).ok()?);
    }
    if bytes.is_empty() {
        return None;
    }
    Some((addr, bytes, asm.trim()))
}

fn check_instruction(stats: &mut Stats, addr: u64, bytes: &[u8], asm: &str) {
    if stats.keep_text {
        if stats.text.is_empty() {
            stats.text_start = addr;
        }
        let end = stats.text_start + stats.text.len() as u64;
        assert_eq!(addr, end, "objdump skipped bytes at {end:#x}");
        stats.text.extend_from_slice(bytes);
        stats.starts.insert(addr);
    }
    if asm.starts_with("(bad)") || asm.starts_with(".byte") {
        // objdump could not decode it either: not a length comparison.
        stats.bad += 1;
        return;
    }
    stats.compared += 1;
    let mut dec = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
    let i = dec.decode();
    if i.is_invalid() || i.len() != bytes.len() {
        if stats.mismatches.len() < 50 {
            stats.mismatches.push(format!(
                "{addr:#x}: objdump {} bytes `{asm}` {bytes:02x?}, iced {} ({:?})",
                bytes.len(),
                if i.is_invalid() { 0 } else { i.len() },
                i.code()
            ));
        }
        return;
    }
    // The analysis on the same bytes (as a one-instruction function).
    match analyze(bytes, addr, addr) {
        Err(_) => stats.refused += 1,
        Ok(a) => {
            assert_eq!(
                a.len as usize,
                bytes.len(),
                "{addr:#x} `{asm}`: analysis length"
            );
            match a.exec {
                Execution::Emulate(_) => stats.emulated += 1,
                Execution::OutOfLine {
                    boostable,
                    rip_relative,
                } => {
                    stats.out_of_line += 1;
                    stats.boostable += boostable as u64;
                    stats.rip_relative += rip_relative as u64;
                    assert_eq!(
                        rip_relative,
                        i.is_ip_rel_memory_operand(),
                        "{addr:#x} `{asm}`"
                    );
                    let slot = addr.wrapping_sub(0x1000_0000);
                    match slot_code(&a, slot, Tail::JmpBack) {
                        Ok(s) => {
                            let copy =
                                Decoder::with_ip(64, s.as_bytes(), slot, DecoderOptions::NONE)
                                    .decode();
                            assert_eq!(copy.code(), i.code(), "{addr:#x} `{asm}`: copy");
                            if rip_relative {
                                assert_eq!(
                                    copy.ip_rel_memory_address(),
                                    i.ip_rel_memory_address(),
                                    "{addr:#x} `{asm}`: relocated target"
                                );
                            }
                        }
                        Err(Refusal::RipRelOutOfRange) => {
                            let target = i.ip_rel_memory_address();
                            let from = slot + bytes.len() as u64;
                            assert!(
                                i32::try_from(target.wrapping_sub(from) as i64).is_err(),
                                "{addr:#x} `{asm}`: refused although reachable"
                            );
                        }
                        Err(e) => panic!("{addr:#x} `{asm}`: slot_code failed: {e:?}"),
                    }
                }
            }
        }
    }
}

fn compare(binary: &Path, keep_text: bool) -> Stats {
    let mut child = Command::new("objdump")
        .args(["-d", "--insn-width=15", "-j", ".text"])
        .arg(binary)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run objdump (install binutils): {e}"));
    let out = child.stdout.take().unwrap();
    let mut stats = Stats {
        keep_text,
        ..Stats::default()
    };
    let mut pending: Option<(u64, Vec<u8>, String)> = None;
    for line in BufReader::new(out).lines() {
        let line = line.expect("objdump output is text");
        let Some((addr, bytes, asm)) = parse_line(&line) else {
            continue;
        };
        if asm.is_empty() {
            // A continuation line of the previous instruction's bytes.
            if let Some(p) = pending.as_mut() {
                p.1.extend_from_slice(&bytes);
            }
            continue;
        }
        if let Some((a, b, s)) = pending.take() {
            check_instruction(&mut stats, a, &b, &s);
        }
        pending = Some((addr, bytes, asm.to_string()));
    }
    if let Some((a, b, s)) = pending.take() {
        check_instruction(&mut stats, a, &b, &s);
    }
    let status = child.wait().expect("objdump exits");
    assert!(
        status.success(),
        "objdump -d {} failed: {status}",
        binary.display()
    );
    stats
}

/// Function symbols `(start, size, name)` from `nm -S --defined-only [-D]`.
fn functions(binary: &Path, dynamic: bool) -> Vec<(u64, u64, String)> {
    let mut cmd = Command::new("nm");
    cmd.args(["-S", "--defined-only"]);
    if dynamic {
        cmd.arg("-D");
    }
    let out = cmd
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nm (install binutils): {e}"));
    assert!(out.status.success(), "nm {} failed", binary.display());
    let mut f: Vec<(u64, u64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (a, sz, t, name) = (w.next()?, w.next()?, w.next()?, w.next()?);
            if !matches!(t, "t" | "T" | "W" | "i") {
                return None;
            }
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(sz, 16).ok()?,
                name.to_string(),
            ))
        })
        .filter(|(_, sz, _)| *sz > 0)
        .collect();
    f.sort();
    f.dedup_by_key(|x| x.0);
    f
}

/// Probe every byte offset of functions: `analyze` must accept (or refuse
/// for a reason other than `NotBoundary`) exactly at objdump's instruction
/// starts. Returns (functions, offsets) checked.
fn check_boundaries(
    s: &Stats,
    funcs: &[(u64, u64, String)],
    max_size: u64,
    max_funcs: usize,
) -> (usize, u64) {
    let end = s.text_start + s.text.len() as u64;
    let mut nfuncs = 0;
    let mut offsets = 0;
    let mut errors = Vec::new();
    for (start, size, name) in funcs {
        if nfuncs >= max_funcs {
            break;
        }
        if *start < s.text_start || start + size > end || *size > max_size {
            continue;
        }
        nfuncs += 1;
        let lo = (start - s.text_start) as usize;
        let code = &s.text[lo..lo + *size as usize];
        for off in 0..*size {
            offsets += 1;
            let addr = start + off;
            let r = analyze(code, *start, addr);
            let boundary = s.starts.contains(&addr);
            let ok = match r {
                Err(Refusal::NotBoundary) => !boundary,
                // Undecodable bytes before the address: nothing proven either way.
                Err(Refusal::Undecodable) => true,
                _ => boundary,
            };
            if !ok && errors.len() < 20 {
                errors.push(format!(
                    "{name}+{off:#x} ({addr:#x}): objdump boundary={boundary}, analyze={r:?}"
                ));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "boundary decisions disagree with objdump:\n{}",
        errors.join("\n")
    );
    (nfuncs, offsets)
}

fn run(binary: &Path, min_instructions: u64) -> Stats {
    run_keep(binary, min_instructions, false)
}

fn run_keep(binary: &Path, min_instructions: u64, keep_text: bool) -> Stats {
    let start = std::time::Instant::now();
    let s = compare(binary, keep_text);
    println!(
        "{}: {} instructions compared with objdump in {:.1?}, {} length mismatches, {} skipped as (bad)/.byte",
        binary.display(),
        s.compared,
        start.elapsed(),
        s.mismatches.len(),
        s.bad
    );
    println!(
        "  decisions: {} refused, {} emulated, {} out of line ({} boostable, {} RIP-relative)",
        s.refused, s.emulated, s.out_of_line, s.boostable, s.rip_relative
    );
    assert!(
        s.compared >= min_instructions,
        "only {} instructions in {}'s .text: is it the right binary?",
        s.compared,
        binary.display()
    );
    assert!(
        s.mismatches.is_empty(),
        "length mismatches with objdump:\n{}",
        s.mismatches.join("\n")
    );
    s
}

#[test]
fn gdb_text_lengths_match_objdump() {
    let gdb = Path::new("/usr/bin/gdb");
    assert!(
        gdb.exists(),
        "/usr/bin/gdb is missing: install gdb (the test needs a large system binary)"
    );
    let _ = run(gdb, 1_000_000);
}

#[test]
fn kernel_text_lengths_match_objdump() {
    let kernel = std::env::var_os("KDBG_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kdbg/kernel"));
    assert!(
        kernel.exists(),
        "reference kernel {} is missing: build it with `cargo xtask build` (or set KDBG_KERNEL to the kernel ELF)",
        kernel.display()
    );
    let s = run_keep(&kernel, 1_000, true);
    let funcs = functions(&kernel, false);
    // Functions up to 8 KB (the walk from the start is quadratic per function).
    let (n, offsets) = check_boundaries(&s, &funcs, 8192, usize::MAX);
    println!(
        "  every byte offset of {n} kernel functions probed ({offsets} offsets): boundaries agree with objdump"
    );
    assert!(
        n >= 20,
        "only {n} function symbols in the kernel: is it stripped?"
    );
}

#[test]
fn libc_text_lengths_match_objdump() {
    // glibc's string functions bring AVX2/AVX-512 (VEX/EVEX) encodings.
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    assert!(
        libc.exists(),
        "{} is missing: this test expects a Debian/Ubuntu x86_64 glibc",
        libc.display()
    );
    let s = run_keep(libc, 100_000, true);
    // Every byte offset of the first 300 exported functions up to 2 KB.
    let funcs = functions(libc, true);
    let (n, offsets) = check_boundaries(&s, &funcs, 2048, 300);
    println!(
        "  every byte offset of {n} libc functions probed ({offsets} offsets): boundaries agree with objdump"
    );
    assert!(n >= 100, "only {n} libc functions checked");
}
