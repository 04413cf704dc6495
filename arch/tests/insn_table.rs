//! Runs the data-driven instruction table `insn_cases.txt`: every line's
//! bytes through `analyze`, compared with the expected decision, and every
//! out-of-line case through `slot_code` at several slot distances, checked
//! by decoding the copy back.

// Test code: a failed unwrap/expect/panic is a failed test.

use arch::insn::{Analysis, Emulation, Execution, LoopKind, Refusal, Tail, analyze, slot_code};
use iced_x86::{Decoder, DecoderOptions};

const BASE: u64 = 0xffff_ffff_8100_0000;

struct Case {
    line: usize,
    code: Vec<u8>,
    offset: i64,
    expected: String,
    comment: String,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let (body, comment) = match raw.split_once('#') {
            Some((b, c)) => (b, c.trim().to_string()),
            None => (raw, String::new()),
        };
        if body.trim().is_empty() {
            continue;
        }
        let (lhs, rhs) = body
            .split_once("=>")
            .unwrap_or_else(|| panic!("insn_cases.txt:{line}: missing '=>' in {raw:?}"));
        let mut code = Vec::new();
        let mut offset = 0i64;
        for tok in lhs.split_whitespace() {
            if let Some(o) = tok.strip_prefix('@') {
                offset = o
                    .parse()
                    .unwrap_or_else(|e| panic!("insn_cases.txt:{line}: bad offset {tok:?}: {e}"));
            } else {
                let b = u8::from_str_radix(tok, 16)
                    .unwrap_or_else(|e| panic!("insn_cases.txt:{line}: bad hex byte {tok:?}: {e}"));
                code.push(b);
            }
        }
        let expected = rhs.split_whitespace().collect::<Vec<_>>().join(" ");
        cases.push(Case {
            line,
            code,
            offset,
            expected,
            comment,
        });
    }
    cases
}

fn rel(target: u64, addr: u64) -> String {
    let d = target.wrapping_sub(addr) as i64;
    if d >= 0 {
        format!("+{d}")
    } else {
        format!("{d}")
    }
}

/// The table's notation for a decision.
fn describe(addr: u64, r: &Result<Analysis, Refusal>) -> String {
    let a = match r {
        Err(e) => return format!("refuse {e:?}"),
        Ok(a) => a,
    };
    match a.exec {
        Execution::OutOfLine {
            boostable,
            rip_relative,
        } => {
            let mut s = String::from("ool");
            if boostable {
                s.push_str(" boost");
            }
            if rip_relative {
                s.push_str(" riprel");
            }
            s
        }
        Execution::Emulate(e) => {
            let body = match e {
                Emulation::CallRel { target } => format!("call {}", rel(target, addr)),
                Emulation::JmpRel { target } => format!("jmp {}", rel(target, addr)),
                Emulation::Jcc { cond, target } => {
                    format!("jcc {} {}", cond.suffix(), rel(target, addr))
                }
                Emulation::Loop { kind, target, ecx } => {
                    let k = match kind {
                        LoopKind::Loop => "loop",
                        LoopKind::Loope => "loope",
                        LoopKind::Loopne => "loopne",
                        LoopKind::Jrcxz => "jrcxz",
                    };
                    format!(
                        "loop {k} {}{}",
                        rel(target, addr),
                        if ecx { " ecx" } else { "" }
                    )
                }
                Emulation::Ret { pop } => format!("ret {pop}"),
                Emulation::CallReg { reg } => format!("callreg {}", reg.name()),
                Emulation::JmpReg { reg } => format!("jmpreg {}", reg.name()),
                Emulation::Cli => "cli".into(),
                Emulation::Sti => "sti".into(),
                Emulation::Pushf => "pushf".into(),
                Emulation::Popf => "popf".into(),
            };
            format!("emulate {body}")
        }
    }
}

/// Copy `a` to slots at several distances and check the copies by decoding.
fn check_slots(a: &Analysis) -> Result<(), String> {
    let orig = Decoder::with_ip(64, a.insn(), a.addr, DecoderOptions::NONE).decode();
    let riprel = orig.is_ip_rel_memory_operand();
    let eip = orig.memory_base() == iced_x86::Register::EIP;
    for delta in [
        64i64,
        -64,
        4096,
        1 << 20,
        -(1 << 20),
        (1 << 31) - 4096,
        -(1 << 31) + 4096,
    ] {
        let slot = a.addr.wrapping_add(delta as u64);
        let slot_next = slot.wrapping_add(a.len as u64);
        let reachable = !riprel
            || eip
            || i32::try_from(orig.ip_rel_memory_address().wrapping_sub(slot_next) as i64).is_ok();
        for tail in [Tail::Trap, Tail::JmpBack, Tail::StiJmpBack] {
            if !reachable {
                if slot_code(a, slot, tail) != Err(Refusal::RipRelOutOfRange) {
                    return Err(format!(
                        "slot at {delta:+#x}: unreachable RIP-relative target was not refused"
                    ));
                }
                continue;
            }
            let s = slot_code(a, slot, tail)
                .map_err(|e| format!("slot at {delta:+#x} {tail:?}: {e:?}"))?;
            let mut dec = Decoder::with_ip(64, s.as_bytes(), slot, DecoderOptions::NONE);
            let copy = dec.decode();
            if copy.code() != orig.code() || copy.len() != orig.len() {
                return Err(format!(
                    "slot at {delta:+#x}: copy decodes as {:?} len {}",
                    copy.code(),
                    copy.len()
                ));
            }
            if riprel && copy.ip_rel_memory_address() != orig.ip_rel_memory_address() {
                return Err(format!(
                    "slot at {delta:+#x}: RIP-relative target {:#x}, original {:#x}",
                    copy.ip_rel_memory_address(),
                    orig.ip_rel_memory_address()
                ));
            }
            if !riprel && s.as_bytes()[..a.insn().len()] != *a.insn() {
                return Err(format!(
                    "slot at {delta:+#x}: non-RIP-relative instruction bytes changed"
                ));
            }
            let t = dec.decode();
            match tail {
                Tail::Trap => {
                    if t.code() != iced_x86::Code::Int3 || s.len as usize != a.insn().len() + 1 {
                        return Err(format!(
                            "slot at {delta:+#x}: tail is {:?}, not int3",
                            t.code()
                        ));
                    }
                    if s.tail_trap_rip(slot) != slot + a.len as u64 + 1 {
                        return Err("tail_trap_rip is not the address after the int3".into());
                    }
                }
                Tail::JmpBack | Tail::StiJmpBack => {
                    let t = if tail == Tail::StiJmpBack {
                        if t.code() != iced_x86::Code::Sti {
                            return Err(format!(
                                "slot at {delta:+#x}: {:?} where sti belongs",
                                t.code()
                            ));
                        }
                        dec.decode()
                    } else {
                        t
                    };
                    let end = if tail == Tail::StiJmpBack { 6 } else { 5 };
                    if s.len as usize != a.insn().len() + end {
                        return Err(format!("slot at {delta:+#x}: code length {}", s.len));
                    }
                    if !t.is_jmp_short_or_near() || t.near_branch_target() != a.next_ip() {
                        return Err(format!(
                            "slot at {delta:+#x}: tail {:?} -> {:#x}, want jmp -> {:#x}",
                            t.code(),
                            t.near_branch_target(),
                            a.next_ip()
                        ));
                    }
                }
            }
            if s.map_rip(a, slot, slot) != Some(a.addr)
                || s.map_rip(a, slot, slot + a.len as u64) != Some(a.next_ip())
            {
                return Err("map_rip does not map the slot back to the original".into());
            }
        }
    }
    // Out of reach: RIP-relative displacements and the jmp back must be refused
    // (EIP-relative addresses wrap at 32 bits and are always reachable).
    let far = a.addr.wrapping_add(1 << 33);
    if riprel && !eip && slot_code(a, far, Tail::Trap) != Err(Refusal::RipRelOutOfRange) {
        return Err("RIP-relative copy 8 GB away was not refused".into());
    }
    if !riprel && slot_code(a, far, Tail::Trap).is_err() {
        return Err("non-RIP-relative copy with an int3 tail must work at any distance".into());
    }
    if slot_code(a, far, Tail::JmpBack) != Err(Refusal::RipRelOutOfRange)
        || slot_code(a, far, Tail::StiJmpBack) != Err(Refusal::RipRelOutOfRange)
    {
        return Err("jmp back from 8 GB away was not refused".into());
    }
    Ok(())
}

#[test]
fn insn_case_table() {
    let text = include_str!("insn_cases.txt");
    let cases = parse(text);
    assert!(cases.len() > 150, "table has only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut slots_checked = 0;
    for c in &cases {
        let addr = BASE.wrapping_add(c.offset as u64);
        let got = analyze(&c.code, BASE, addr);
        let desc = describe(addr, &got);
        if desc != c.expected {
            failures.push(format!(
                "line {}: {:02x?} @{}: expected `{}`, got `{}`  # {}",
                c.line, c.code, c.offset, c.expected, desc, c.comment
            ));
            continue;
        }
        if let Ok(a) = &got {
            let one = c.code.len() as i64 - c.offset;
            if a.len as i64 != one {
                failures.push(format!(
                    "line {}: length {} but the case has {} bytes after the offset",
                    c.line, a.len, one
                ));
            }
            if a.addr != addr
                || a.insn() != &c.code[c.offset as usize..c.offset as usize + a.len as usize]
            {
                failures.push(format!(
                    "line {}: Analysis does not carry the original bytes/address",
                    c.line
                ));
            }
            match a.exec {
                Execution::OutOfLine { .. } => {
                    slots_checked += 1;
                    if let Err(e) = check_slots(a) {
                        failures.push(format!("line {}: {e}  # {}", c.line, c.comment));
                    }
                }
                Execution::Emulate(_) => {
                    if slot_code(a, addr + 4096, Tail::Trap) != Err(Refusal::Emulated) {
                        failures.push(format!(
                            "line {}: slot_code accepted an emulated instruction",
                            c.line
                        ));
                    }
                }
            }
        }
    }
    println!(
        "{} cases, {} out-of-line cases copied to slots",
        cases.len(),
        slots_checked
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn reads_through_other_probes_saved_bytes() {
    // push %rbp; mov %rsp,%rbp; mov 0x10(%rip),%rax; pop %rbp; ret
    let code = [
        0x55, 0x48, 0x89, 0xe5, 0x48, 0x8b, 0x05, 0x10, 0, 0, 0, 0x5d, 0xc3,
    ];
    // With another probe's int3 still over the load at offset 4, the walk
    // sees an int3 there and a fake boundary at offset 5: this is why the
    // caller must pass the saved original bytes.
    let mut armed = code;
    armed[4] = 0xcc;
    assert_eq!(analyze(&armed, BASE, BASE + 4), Err(Refusal::Int3));
    assert!(analyze(&armed, BASE, BASE + 5).is_ok());
    // The caller passes the saved originals: every boundary is found.
    let boundaries: Vec<u64> = (0..code.len() as u64)
        .filter(|o| analyze(&code, BASE, BASE + o).is_ok())
        .collect();
    assert_eq!(boundaries, vec![0, 1, 4, 11, 12]);
    for o in [2, 3, 5, 6, 7, 8, 9, 10] {
        assert_eq!(
            analyze(&code, BASE, BASE + o),
            Err(Refusal::NotBoundary),
            "offset {o}"
        );
    }
}

#[test]
fn every_refusal_has_a_distinct_reason() {
    use Refusal::*;
    let all = [
        NotBoundary,
        PastEnd,
        OutsideText,
        Blacklisted,
        Undecodable,
        Int3,
        IntN,
        Into,
        Int1,
        Ud,
        Iret,
        FarTransfer,
        IndirectMemBranch,
        MovToSs,
        PopSs,
        RipRelOutOfRange,
        SystemTransfer,
        Halt,
        Transactional,
        OperandSize16,
        UnsupportedBranch,
        Emulated,
    ];
    let mut reasons: Vec<&str> = all.iter().map(|r| r.reason()).collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
}
