//! `file:line` -> addresses, against gdb over every line of several source
//! files of the reference kernel (`target/kdbg/kernel` or `$KDBG_KERNEL`).
//!
//! Two references, both from one gdb run per file:
//! - `break FILE:N` then `info breakpoints`: gdb's set of locations (every
//!   inlined or generic copy). Ours must be the same set, except where gdb
//!   moved a location past a function's prologue (a line whose code starts a
//!   function): there ours is the function's entry and gdb's is inside it.
//! - `info line FILE:N`: the first address of the line in each unit, or of
//!   the next line with code ("contains no code"), or "out of range". Ours
//!   must contain every one of those addresses (for the same line), and be an
//!   error exactly when gdb finds no line at or after N.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use symbols::Elf;

/// Files with plain, generic and inlined code (every copy of an inlined
/// function is a location).
const FILES: [&str; 4] = [
    "kernel/src/workloads/mod.rs",
    "kernel/src/workloads/truth.rs",
    "arch/src/port.rs",
    "probes/src/kretprobe.rs",
];

#[derive(Debug, Default)]
struct GdbLine {
    /// (address, exact) from `info line`.
    info: Vec<(u64, bool)>,
    out_of_range: bool,
    /// Locations of `break`, with the line gdb reports for each.
    breaks: BTreeSet<(u64, u32)>,
}

fn hex_after(s: &str, key: &str) -> Option<u64> {
    let rest = &s[s.find(key)? + key.len()..];
    let rest = rest.trim_start().trim_start_matches("0x");
    let end = rest
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(rest.len());
    u64::from_str_radix(&rest[..end], 16).ok()
}

/// Starts gdb on `file`'s lines `1..=lines` (all files' gdbs run at once).
fn gdb(kernel: &std::path::Path, file: &str, lines: u32) -> std::process::Child {
    // `-ex` commands, not a script: an error ("No line N") must not end it.
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx"]);
    for c in [
        "set pagination off",
        "set confirm off",
        "set breakpoint pending off",
    ] {
        cmd.args(["-ex", c]);
    }
    for n in 1..=lines {
        cmd.args(["-ex", &format!("echo @@ {n}\\n")]);
        cmd.args(["-ex", &format!("info line {file}:{n}")]);
        cmd.args(["-ex", &format!("echo @@B {n}\\n")]);
        cmd.args(["-ex", &format!("break {file}:{n}")]);
    }
    cmd.args(["-ex", "echo @@END\\n", "-ex", "info breakpoints"]);
    cmd.arg(kernel)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run gdb (install gdb)")
}

/// Parses what [`gdb`] printed.
fn parse(file: &str, child: std::process::Child) -> BTreeMap<u32, GdbLine> {
    let out = child.wait_with_output().expect("gdb output");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut map: BTreeMap<u32, GdbLine> = BTreeMap::new();
    // Breakpoint number -> asked line.
    let mut bp_line: BTreeMap<u32, u32> = BTreeMap::new();
    let mut cur = 0u32;
    let mut in_break = false;
    let mut in_table = false;
    for l in text.lines() {
        if let Some(n) = l.strip_prefix("@@B ") {
            cur = n.trim().parse().expect("line number");
            in_break = true;
            continue;
        }
        if let Some(n) = l.strip_prefix("@@ ") {
            cur = n.trim().parse().expect("line number");
            in_break = false;
            continue;
        }
        if l.starts_with("@@END") {
            in_table = true;
            continue;
        }
        if in_table {
            // "1       breakpoint     keep y   0x...  in f at file:N" or
            // "1.3                         y   0x...  in f at file:N".
            let mut words = l.split_whitespace();
            let Some(id) = words.next() else { continue };
            let num = id.split_once('.').map_or(id, |(a, _)| a);
            let Ok(num) = num.parse::<u32>() else {
                continue;
            };
            let Some(addr) = l.split_whitespace().find_map(|w| {
                w.strip_prefix("0x")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
            }) else {
                continue; // <MULTIPLE> header
            };
            let Some(asked) = bp_line.get(&num) else {
                continue;
            };
            let at_line = l
                .rsplit_once(':')
                .and_then(|(_, n)| n.trim().parse::<u32>().ok())
                .unwrap_or(0);
            map.entry(*asked)
                .or_default()
                .breaks
                .insert((addr, at_line));
            continue;
        }
        if in_break {
            // "Breakpoint 7 at 0x...: file ..., line N." / "(K locations)"
            if let Some(rest) = l.strip_prefix("Breakpoint ")
                && let Some(num) = rest.split_whitespace().next()
                && let Ok(num) = num.parse::<u32>()
            {
                bp_line.insert(num, cur);
            }
            continue;
        }
        let e = map.entry(cur).or_default();
        if l.contains("is out of range for") {
            e.out_of_range = true;
        } else if l.starts_with("Line ") && l.contains(&format!("of \"{file}\"")) {
            if let Some(a) = hex_after(l, "starts at address") {
                e.info.push((a, true));
            } else if let Some(a) = hex_after(l, "is at address") {
                e.info.push((a, false));
            }
        }
    }
    map
}

#[test]
fn every_line_of_several_files_resolves_as_gdb_does() {
    let kernel = common::kernel();
    let elf = Elf::open(&kernel).expect("open the reference kernel");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut multi = 0;
    let mut compared = 0;
    let runs: Vec<(&str, u32, std::process::Child)> = FILES
        .iter()
        .map(|file| {
            let source = std::fs::read_to_string(root.join(file)).expect("read source");
            let lines = source.lines().count() as u32;
            (*file, lines, gdb(&kernel, file, lines + 2))
        })
        .collect();
    for (file, lines, child) in runs {
        let g = parse(file, child);
        for n in 1..=lines + 2 {
            let gl = g.get(&n);
            let ours = elf.line_addresses(file, n);
            let gdb_has = gl.is_some_and(|x| !x.info.is_empty());
            let Ok(hits) = ours else {
                if gdb_has {
                    problems.push(format!("{file}:{n}: ours {ours:?}, gdb {gl:?}"));
                }
                continue;
            };
            let Some(gl) = gl.filter(|_| gdb_has) else {
                problems.push(format!("{file}:{n}: ours {hits:x?}, gdb has no code"));
                continue;
            };
            checked += 1;
            let at: BTreeSet<u64> = hits.iter().map(|h| h.address).collect();
            if at.len() > 1 {
                multi += 1;
            }
            let line = hits[0].line;
            if hits.iter().any(|h| h.line != line) {
                problems.push(format!("{file}:{n}: mixed lines {hits:x?}"));
            }
            // Exact line iff gdb says the line itself has code.
            let exact = gl.info.iter().any(|(_, e)| *e);
            if exact != (line == n) {
                problems.push(format!("{file}:{n}: ours line {line}, gdb {:x?}", gl.info));
            }
            // Every address gdb's `info line` names for that line is ours.
            for (a, _) in &gl.info {
                let their_line = elf.location(*a).ok().flatten().map(|l| l.line);
                if their_line == Some(line) && !at.contains(a) {
                    problems.push(format!(
                        "{file}:{n}: gdb info line {a:#x} missing from {at:x?}"
                    ));
                }
            }
            // Each of ours is a statement of that line in that file.
            for h in &hits {
                let loc = elf.location(h.address).ok().flatten();
                if loc.as_ref().map(|l| l.line) != Some(line)
                    || !loc.is_some_and(|l| l.file.ends_with(file))
                {
                    problems.push(format!("{file}:{n}: {:#x} is not line {line}", h.address));
                }
                if elf.function_symbol(h.address).is_none() {
                    problems.push(format!("{file}:{n}: {:#x} in no function", h.address));
                }
            }
            // gdb's `break` locations: the same set, but for prologue skips.
            let at_entry = hits.iter().any(|h| {
                elf.function_symbol(h.address)
                    .is_some_and(|s| s.address == h.address)
            });
            let theirs: BTreeSet<u64> = gl.breaks.iter().map(|(a, _)| *a).collect();
            if !theirs.is_empty() {
                compared += 1;
            }
            if !at_entry && !theirs.is_empty() && theirs != at {
                problems.push(format!("{file}:{n}: break ours {at:x?}, gdb {theirs:x?}"));
            }
            if at_entry && theirs.len() != at.len() && !theirs.is_empty() {
                problems.push(format!(
                    "{file}:{n}: break ours {} locations {at:x?}, gdb {} {theirs:x?}",
                    at.len(),
                    theirs.len()
                ));
            }
        }
    }
    eprintln!(
        "{checked} lines with code, {multi} with several locations, {compared} compared with gdb's break"
    );
    assert!(
        compared > 200,
        "only {compared} lines compared with gdb's break"
    );
    assert!(checked > 300, "only {checked} lines with code checked");
    assert!(multi > 10, "only {multi} lines with several locations");
    assert!(
        problems.is_empty(),
        "{} of {checked} lines disagree with gdb:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
