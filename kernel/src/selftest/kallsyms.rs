//! `kallsyms`: the in-image symbol table resolves the workloads both ways,
//! and the blacklist covers what it must.

use alloc::format;

use super::{Case, Suite, TestResult};
use crate::check;
use crate::kallsyms::{self as ks, Located};
use crate::workloads::{self as w, insn};

pub static SUITE: Suite = Suite {
    name: "kallsyms",
    cases: &[
        Case {
            name: "table_present",
            run: table_present,
        },
        Case {
            name: "workloads_resolve",
            run: workloads_resolve,
        },
        Case {
            name: "function_offset_format",
            run: function_offset_format,
        },
        Case {
            name: "blacklist",
            run: blacklist,
        },
    ],
};

fn table_present() -> TestResult {
    let t = ks::table().ok_or("no kallsyms table in the image (xtask did not patch .kallsyms)")?;
    check!(t.len() > 100, "only {} symbols", t.len());
    let mut prev = 0;
    for s in t.iter() {
        check!(s.start >= prev, "not sorted at {}", s.name);
        prev = s.start;
    }
    Ok(())
}

/// (name, address) of every workload.
pub fn workload_addresses() -> [(&'static str, u64); 17] {
    [
        ("spawn_task", w::spawn_task as *const () as u64),
        ("sys_open", w::sys_open as *const () as u64),
        ("sum8", w::sum8 as *const () as u64),
        ("fib", w::fib as *const () as u64),
        ("nest", w::nest as *const () as u64),
        ("handle_request", w::handle_request as *const () as u64),
        ("hot_loop", w::hot_loop as *const () as u64),
        ("bench_target", w::bench_target as *const () as u64),
        ("insn_rip_load", insn::insn_rip_load as *const () as u64),
        ("insn_rip_store", insn::insn_rip_store as *const () as u64),
        ("insn_pushf_popf", insn::insn_pushf_popf as *const () as u64),
        ("insn_cli_sti", insn::insn_cli_sti as *const () as u64),
        ("insn_call_rel32", insn::insn_call_rel32 as *const () as u64),
        ("insn_jcc_rel8", insn::insn_jcc_rel8 as *const () as u64),
        ("insn_jcc_rel32", insn::insn_jcc_rel32 as *const () as u64),
        ("insn_ret_imm16", insn::insn_ret_imm16 as *const () as u64),
        ("insn_loop", insn::insn_loop as *const () as u64),
    ]
}

fn workloads_resolve() -> TestResult {
    for (name, addr) in workload_addresses() {
        let s = ks::lookup(addr).ok_or(format!("{name} at {addr:#x} not found"))?;
        check!(
            s.name == name && s.start == addr,
            "{addr:#x} resolved to {}+{:#x}, want {name}",
            s.name,
            addr - s.start
        );
        check!(s.size > 0, "{name} has size 0");
        let inside =
            ks::lookup(addr + s.size - 1).ok_or(format!("{name}'s last byte not found"))?;
        check!(
            inside.name == name,
            "{name}'s last byte resolved to {}",
            inside.name
        );
        let found = ks::find(name).ok_or(format!("find({name}) failed"))?;
        check!(
            found.start == addr,
            "find({name}) = {:#x}, want {addr:#x}",
            found.start
        );
    }
    Ok(())
}

fn function_offset_format() -> TestResult {
    let addr = w::sum8 as *const () as u64;
    let text = format!("{}", Located(addr + 3));
    check!(text == "sum8+0x3", "got `{text}`");
    let text = format!("{}", Located(8));
    check!(text == "0x8", "unknown address formatted as `{text}`");
    Ok(())
}

fn blacklist() -> TestResult {
    use crate::blacklist::{is_blacklisted, is_text, noprobe_range, text_range};
    let sum8 = w::sum8 as *const () as u64;
    check!(
        is_text(sum8) && !is_blacklisted(sum8),
        "sum8 must be probe-able"
    );
    let nop = noprobe_range();
    check!(
        !nop.is_empty() && text_range().start <= nop.start && nop.end <= text_range().end,
        "noprobe range {nop:x?} not inside text"
    );
    for (what, addr) in [
        ("memcpy", crate::intrinsics::memcpy as *const () as u64),
        ("the trap entry", arch::trap::stub_address(3)),
        (
            "the scheduler switch",
            crate::sched::switch as *const () as u64,
        ),
        (
            "the UART driver",
            arch::uart::Uart::write_byte as *const () as u64,
        ),
        (
            "the probe core hook",
            probes::hooks::breakpoint as *const () as u64,
        ),
        ("the stub hook", stub::hooks::breakpoint as *const () as u64),
    ] {
        check!(
            is_blacklisted(addr),
            "{what} at {} is not blacklisted",
            Located(addr)
        );
    }
    check!(
        is_blacklisted(0x1000),
        "an address outside text must be refused"
    );
    Ok(())
}
