//! The library on the reference kernel's ELF (`target/kdbg/kernel` or
//! `$KDBG_KERNEL`). These tests fail, with instructions, when it is missing.

mod common;

use symbols::{Elf, LocationSource, ParamLocation, Register, TypeKind};

fn kernel() -> Elf {
    Elf::open(common::kernel()).expect("open the reference kernel")
}

#[test]
fn workload_functions_resolve_both_ways() {
    let elf = kernel();
    assert!(elf.has_dwarf(), "the reference kernel must carry DWARF");
    for name in ["spawn_task", "sys_open", "sum8", "fib", "handle_request"] {
        let syms = elf.lookup(name);
        assert_eq!(syms.len(), 1, "{name}: {syms:?}");
        let s = syms[0];
        assert_eq!(s.kind, symbols::SymbolKind::Function);
        assert!(s.size > 0);
        let back = elf.symbolize(s.address + 1).expect("symbolize");
        assert_eq!(back.symbol.name, name);
        assert_eq!(back.offset, 1);
        let frames = elf.frames(s.address).expect("frames");
        let outer = frames.last().expect("a frame");
        assert_eq!(outer.function.as_deref(), Some(name));
        let loc = outer.location.as_ref().expect("a source location");
        assert!(loc.file.ends_with("workloads/mod.rs"), "{name}: {loc:?}");
        // file:line -> the function again.
        let hits = elf
            .line_addresses("workloads/mod.rs", loc.line)
            .expect("line -> addresses");
        assert!(
            hits.iter().any(|h| s.contains(h.address)),
            "{name}: {hits:?}"
        );
    }
}

#[test]
fn rust_names_in_every_form() {
    let elf = kernel();
    // Find a mangled Rust function and look it up by its three names.
    let s = elf
        .symbols()
        .find(|s| s.name.starts_with("_ZN") && s.demangled().contains("workloads") && s.size > 0)
        .expect("a mangled kernel::workloads function");
    let short = s.demangled().into_owned();
    let long = format!("{}", rustc_demangle::demangle(s.name));
    for key in [s.name.to_string(), short.clone(), long] {
        assert!(
            elf.lookup(&key).iter().any(|c| c.address == s.address),
            "{key}"
        );
    }
    let prefix: String = short.chars().take(12).collect();
    assert!(
        elf.names_with_prefix(&prefix).any(|n| n == short),
        "{short}"
    );
}

#[test]
fn spawn_task_parameters_names_types_and_entry_locations() {
    let elf = kernel();
    let f = elf
        .functions_named("spawn_task")
        .expect("spawn_task")
        .remove(0);
    assert!(f.has_dwarf);
    assert_eq!(f.return_type_name, "i64");
    let got: Vec<(&str, &str, ParamLocation)> = f
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.type_name.as_str(), p.location))
        .collect();
    assert_eq!(
        got,
        [
            ("clone_flags", "u64", ParamLocation::Register(Register::RDI)),
            ("stack_start", "u64", ParamLocation::Register(Register::RSI)),
            (
                "regs",
                "*const kernel::workloads::TaskRegs",
                ParamLocation::Register(Register::RDX)
            ),
            ("stack_size", "u64", ParamLocation::Register(Register::RCX)),
            (
                "parent_tid",
                "*mut i32",
                ParamLocation::Register(Register::R8)
            ),
            (
                "child_tid",
                "*mut i32",
                ParamLocation::Register(Register::R9)
            ),
        ]
    );
    assert!(f.params.iter().all(|p| p.source == LocationSource::Dwarf));
    let sys_open = elf.functions_named("sys_open").expect("sys_open").remove(0);
    let names: Vec<(&str, &str)> = sys_open
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.type_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [("path", "*const u8"), ("flags", "u32"), ("mode", "u32")]
    );
    let sum8 = elf.functions_named("sum8").expect("sum8").remove(0);
    assert_eq!(sum8.params[6].location, ParamLocation::Stack { offset: 8 });
    assert_eq!(sum8.params[7].location, ParamLocation::Stack { offset: 16 });
}

#[test]
fn struct_parameter_fields_and_offsets() {
    let elf = kernel();
    let f = elf
        .functions_named("spawn_task")
        .expect("spawn_task")
        .remove(0);
    let regs = elf.resolve(f.params[2].ty.expect("type")).expect("pointer");
    let TypeKind::Pointer { pointee: Some(p) } = regs.kind else {
        panic!("regs is not a pointer: {regs:?}");
    };
    let st = elf.resolve(p).expect("TaskRegs");
    assert_eq!(st.name.as_deref(), Some("TaskRegs"));
    assert_eq!(st.size, Some(24));
    let fields: Vec<(&str, u64, String)> = st
        .fields()
        .iter()
        .map(|f| {
            (
                f.name.as_deref().unwrap_or("?"),
                f.offset,
                elf.type_name(f.ty),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("ip", 0, "u64".to_string()),
            ("sp", 8, "u64".to_string()),
            ("flags", 16, "u64".to_string())
        ]
    );

    // A nested struct and a string pointer.
    let h = elf
        .functions_named("handle_request")
        .expect("handle_request")
        .remove(0);
    let req = elf.resolve(h.params[0].ty.expect("type")).expect("pointer");
    let TypeKind::Pointer { pointee: Some(p) } = req.kind else {
        panic!("req is not a pointer");
    };
    let st = elf.resolve(p).expect("Request");
    let id = st.field("id").expect("id");
    let name = st.field("name").expect("name");
    let inner = st.field("inner").expect("inner");
    assert_eq!((id.offset, name.offset, inner.offset), (0, 8, 16));
    assert_eq!(elf.type_name(name.ty), "*const u8");
    let inner_t = elf
        .resolve(inner.ty.expect("inner type"))
        .expect("RequestInner");
    let offs: Vec<(Option<&str>, u64)> = inner_t
        .fields()
        .iter()
        .map(|f| (f.name.as_deref(), f.offset))
        .collect();
    assert_eq!(offs, [(Some("lo"), 0), (Some("hi"), 4)]);
}

#[test]
fn rust_str_and_slices_are_recognised() {
    let elf = kernel();
    // Any function taking a &str: find one through the DWARF of a few candidates.
    let mut seen = false;
    for s in elf
        .symbols()
        .filter(|s| s.kind == symbols::SymbolKind::Function)
        .take(4000)
    {
        let Ok(f) = elf.function_at(s.address) else {
            continue;
        };
        for p in &f.params {
            if p.type_name == "&str" {
                let t = elf.resolve(p.ty.expect("type")).expect("&str");
                assert!(t.is_rust_str(), "{t:?}");
                let (ptr, len) = t.slice_parts().expect("slice parts");
                assert_eq!((ptr.offset, len.offset), (0, 8));
                // Passed in two registers: pointer, then length.
                assert!(
                    matches!(p.location, ParamLocation::RegisterPair(..)),
                    "{}: {} at {:?}",
                    f.name,
                    p.name,
                    p.location
                );
                seen = true;
            }
        }
        if seen {
            break;
        }
    }
    assert!(
        seen,
        "no function with a &str parameter found in the kernel"
    );
}

#[test]
fn kernel_cfi_unwinds_fib_from_entry() {
    let elf = kernel();
    let fib = elf.lookup("fib")[0];
    assert!(elf.has_cfi(fib.address), "the kernel has no CFI for fib");
    let sp = 0x20_0000u64;
    let mut regs = symbols::Registers::new();
    regs.set(Register::RIP, Some(fib.address));
    regs.set(Register::RSP, Some(sp));
    let ret = fib.address + 0x20;
    let caller = elf
        .unwind_step(&regs, true, &mut |a| (a == sp).then_some(ret))
        .expect("caller");
    assert_eq!(caller.pc(), Some(ret));
    assert_eq!(caller.sp(), Some(sp + 8));
}

#[test]
fn rust_types_by_name_and_path() {
    let elf = kernel();
    let plain = elf.types_named("TaskRegs").expect("lookup");
    let path = elf
        .types_named("kernel::workloads::TaskRegs")
        .expect("lookup");
    assert!(!plain.is_empty() && !path.is_empty());
    assert!(path.iter().all(|id| plain.contains(id)));
    let t = elf.type_info(path[0]).expect("TaskRegs");
    assert_eq!(t.size, Some(24));
    assert_eq!(t.fields().len(), 3);
}

/// `Elf::set_slide` (a KASLR kernel): every address handed out or taken
/// moves by the slide, names, lines, DWARF and CFI answer the same, and
/// going back to 0 restores the link addresses.
#[test]
fn a_slide_moves_every_symbolic_address() {
    const D: u64 = 0x4a0_0000;
    let elf = kernel();
    let s0 = elf.lookup("spawn_task")[0];
    let pc0 = s0.address + 4;
    let frames0 = elf.frames(pc0).expect("frames");
    let loc0 = elf.location(pc0).expect("location").expect("a line");
    let f0 = elf.function_at(s0.address).expect("function");
    let hits0 = elf
        .line_addresses("workloads/mod.rs", loc0.line)
        .expect("line");
    let bytes0 = elf.read_at(s0.address, 16).expect("bytes").to_vec();
    let g0 = elf.globals_named("NEXT_PID").expect("global");
    let rows0 = elf
        .line_rows_in(s0.address, s0.address + s0.size)
        .expect("rows");
    let cfa0 = elf.cfa_rule(pc0);
    let text0 = elf.section_range(".text").expect(".text");
    assert!(!g0.is_empty() && !rows0.is_empty() && !hits0.is_empty());

    elf.set_slide(D);
    assert_eq!(elf.slide(), D);
    let s1 = elf.lookup("spawn_task")[0];
    assert_eq!(s1.address, s0.address + D);
    let pc1 = pc0 + D;
    let back = elf.symbolize(pc1).expect("symbolize");
    assert_eq!((back.symbol.name, back.offset), (s0.name, 4));
    assert_eq!(
        elf.function_bounds(pc1),
        Some(s1.address..s1.address + s0.size)
    );
    assert_eq!(elf.frames(pc1).expect("frames"), frames0);
    assert_eq!(elf.location(pc1).expect("location"), Some(loc0.clone()));
    let f1 = elf.function_at(s1.address).expect("function");
    assert_eq!(f1.entry, f0.entry + D);
    assert_eq!(f1.params, f0.params);
    let hits1: Vec<u64> = elf
        .line_addresses("workloads/mod.rs", loc0.line)
        .expect("line")
        .iter()
        .map(|h| h.address)
        .collect();
    let want: Vec<u64> = hits0.iter().map(|h| h.address + D).collect();
    assert_eq!(hits1, want);
    assert_eq!(elf.read_at(s1.address, 16), Some(&bytes0[..]));
    assert!(elf.is_text(s1.address));
    // Nothing is at the link address any more (unless the slid image
    // covers it).
    assert!(elf.read_at(text0.start, 1).is_none());
    let g1 = elf.globals_named("NEXT_PID").expect("global");
    assert_eq!(g1[0].address, g0[0].address + D);
    let rows1 = elf
        .line_rows_in(s1.address, s1.address + s1.size)
        .expect("rows");
    assert_eq!(rows1.len(), rows0.len());
    for (a, b) in rows0.iter().zip(&rows1) {
        assert_eq!((a.start + D, a.len, a.line), (b.start, b.len, b.line));
    }
    assert_eq!(elf.cfa_rule(pc1), cfa0);
    assert!(cfa0.is_some() || !elf.has_cfi(pc0));
    assert_eq!(
        elf.section_range(".text"),
        Some(text0.start + D..text0.end + D)
    );

    elf.set_slide(0);
    assert_eq!(elf.lookup("spawn_task")[0].address, s0.address);
    assert_eq!(elf.frames(pc0).expect("frames"), frames0);
}
