//! The library on a small C program compiled with `gcc -g -O2` during the
//! test: inline chains, `static` functions with the same name in two files,
//! parameters, struct/enum/array types, lines, CFI, compressed sections.

mod common;

use symbols::{Elf, LocationSource, ParamLocation, Register, Registers, TypeKind};

fn elf() -> Elf {
    Elf::open(common::fixture()).expect("open fixture")
}

/// The line of `needle` in a fixture source file (1-based).
fn line_of(file: &str, needle: &str) -> u32 {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cprog")
            .join(file),
    )
    .expect("read fixture source");
    src.lines()
        .position(|l| l.contains(needle))
        .expect("needle in source") as u32
        + 1
}

#[test]
fn duplicate_static_functions_give_all_candidates() {
    let elf = elf();
    let syms = elf.lookup("helper");
    assert_eq!(syms.len(), 2, "{syms:?}");
    assert!(syms.iter().all(|s| !s.is_global && s.size > 0));
    assert_ne!(syms[0].address, syms[1].address);
    let fns = elf.functions_named("helper").expect("helper");
    let mut files: Vec<String> = fns
        .iter()
        .map(|f| {
            let frames = elf.frames(f.entry).expect("frames");
            frames
                .last()
                .and_then(|fr| fr.location.clone())
                .expect("location")
                .file
        })
        .collect();
    files.sort();
    assert!(
        files[0].ends_with("/a.c") && files[1].ends_with("/b.c"),
        "{files:?}"
    );
    for f in &fns {
        assert_eq!(f.params.len(), 1);
        assert_eq!(f.params[0].name, "x");
        assert_eq!(f.params[0].type_name, "int");
    }
}

#[test]
fn inline_chain_is_innermost_first() {
    let elf = elf();
    let sym = elf.lookup("call_a")[0];
    let helper_a = elf
        .lookup("helper")
        .into_iter()
        .find(|s| {
            elf.frames(s.address)
                .expect("frames")
                .last()
                .and_then(|f| f.location.clone())
                .is_some_and(|l| l.file.ends_with("a.c"))
        })
        .expect("helper in a.c");
    let _ = sym;
    let square_line = line_of("common.h", "int y = x * x;");
    let helper_line = line_of("a.c", "return square(x) + 1;");
    let mut found = false;
    for addr in helper_a.address..helper_a.address + helper_a.size {
        let frames = elf.frames(addr).expect("frames");
        if frames.len() == 2
            && frames[0]
                .location
                .as_ref()
                .is_some_and(|l| l.line == square_line)
        {
            assert_eq!(frames[0].function.as_deref(), Some("square"));
            assert!(frames[0].inlined);
            assert_eq!(frames[1].function.as_deref(), Some("helper"));
            assert!(!frames[1].inlined);
            let call = frames[1].location.as_ref().expect("call site");
            assert!(call.file.ends_with("a.c"), "{call:?}");
            assert_eq!(call.line, helper_line);
            found = true;
            break;
        }
    }
    assert!(
        found,
        "no address of helper (a.c) shows square inlined at common.h:{square_line}"
    );
}

#[test]
fn names_resolve_both_ways() {
    let elf = elf();
    let s = elf.lookup("spawn_task");
    assert_eq!(s.len(), 1);
    assert!(s[0].is_global);
    let so = elf.symbolize(s[0].address + 3).expect("symbolize");
    assert_eq!(so.symbol.name, "spawn_task");
    assert_eq!(so.offset, 3);
    assert_eq!(so.to_string(), "spawn_task+0x3");
    assert_eq!(
        elf.function_bounds(s[0].address + 1),
        Some(s[0].address..s[0].address + s[0].size)
    );
    let names: Vec<&str> = elf.names_with_prefix("call_").collect();
    assert_eq!(names, ["call_a", "call_b"]);
    let mut sorted: Vec<&str> = elf.names_with_prefix("").collect();
    let n = sorted.len();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "prefix iterator yields distinct names");
    assert!(sorted.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert!(elf.lookup("no_such_function").is_empty());
    assert!(matches!(
        elf.functions_named("no_such_function"),
        Err(symbols::Error::NoSuchSymbol(_))
    ));
}

#[test]
fn parameters_with_types_and_entry_locations() {
    let elf = elf();
    let f = elf
        .functions_named("spawn_task")
        .expect("spawn_task")
        .remove(0);
    assert!(f.has_dwarf);
    assert_eq!(f.return_type_name, "long int");
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
                "const struct task_regs *",
                ParamLocation::Register(Register::RDX)
            ),
            ("stack_size", "u64", ParamLocation::Register(Register::RCX)),
            ("parent_tid", "int *", ParamLocation::Register(Register::R8)),
            ("child_tid", "int *", ParamLocation::Register(Register::R9)),
        ]
    );

    let sum8 = elf.functions_named("sum8").expect("sum8").remove(0);
    let locs: Vec<ParamLocation> = sum8.params.iter().map(|p| p.location).collect();
    assert_eq!(locs[6], ParamLocation::Stack { offset: 8 });
    assert_eq!(locs[7], ParamLocation::Stack { offset: 16 });
    assert_eq!(locs[5], ParamLocation::Register(Register::R9));

    let scale = elf.functions_named("scale").expect("scale").remove(0);
    let locs: Vec<ParamLocation> = scale.params.iter().map(|p| p.location).collect();
    assert_eq!(
        locs,
        [
            ParamLocation::Register(Register::xmm(0)),
            ParamLocation::Register(Register::RDI),
            ParamLocation::Register(Register::xmm(1)),
        ]
    );
    assert_eq!(scale.return_type_name, "double");
    assert!(
        scale
            .params
            .iter()
            .all(|p| p.source == LocationSource::Dwarf || p.source == LocationSource::Abi)
    );
}

#[test]
fn struct_enum_array_and_typedef_types() {
    let elf = elf();
    let f = elf
        .functions_named("spawn_task")
        .expect("spawn_task")
        .remove(0);
    let ptr = elf
        .resolve(f.params[2].ty.expect("regs type"))
        .expect("resolve");
    let TypeKind::Pointer {
        pointee: Some(pointee),
    } = ptr.kind
    else {
        panic!("regs is not a pointer: {ptr:?}");
    };
    let st = elf.resolve(pointee).expect("struct");
    assert_eq!(st.name.as_deref(), Some("task_regs"));
    assert_eq!(st.size, Some(48));
    let fields: Vec<(Option<&str>, u64, String)> = st
        .fields()
        .iter()
        .map(|f| (f.name.as_deref(), f.offset, elf.type_name(f.ty)))
        .collect();
    assert_eq!(
        fields,
        [
            (Some("ip"), 0, "long unsigned int".to_string()),
            (Some("flags"), 8, "int".to_string()),
            (Some("color"), 12, "enum color".to_string()),
            (Some("name"), 16, "char [16]".to_string()),
            (Some("next"), 32, "struct task_regs *".to_string()),
            (Some("callback"), 40, "int (*)(void *)".to_string()),
        ]
    );
    let color = elf
        .resolve(st.field("color").and_then(|f| f.ty).expect("color"))
        .expect("enum");
    let TypeKind::Enum { values, .. } = color.kind else {
        panic!("not an enum: {color:?}");
    };
    assert_eq!(
        values,
        [
            ("RED".to_string(), 1),
            ("GREEN".to_string(), 2),
            ("BLUE".to_string(), 40)
        ]
    );
    let name = elf
        .type_info(st.field("name").and_then(|f| f.ty).expect("name"))
        .expect("array");
    assert_eq!(name.size, Some(16));
    assert!(matches!(name.kind, TypeKind::Array { ref counts, .. } if counts == &[Some(16)]));
    // The typedef u64 resolves to its base type.
    let u64_ty = f.params[0].ty.expect("u64");
    assert!(matches!(
        elf.type_info(u64_ty).expect("typedef").kind,
        TypeKind::Typedef { .. }
    ));
    let base = elf.resolve(u64_ty).expect("base");
    assert_eq!(base.name.as_deref(), Some("long unsigned int"));
    assert_eq!(base.size, Some(8));
}

#[test]
fn source_lines_to_addresses() {
    let elf = elf();
    let line = line_of("a.c", "return square(x) + 1;");
    let hits = elf.line_addresses("a.c", line).expect("a.c line");
    let helper_a = elf
        .lookup("helper")
        .into_iter()
        .find(|s| hits.iter().any(|h| s.contains(h.address)))
        .expect("a hit inside helper (a.c)");
    assert!(
        hits.iter()
            .all(|h| h.file.ends_with("/a.c") && h.line == line)
    );
    assert!(helper_a.contains(hits[0].address));
    // The inlined function's line has code in several places (every inlined copy).
    let sq = line_of("common.h", "int y = x * x;");
    let copies = elf
        .line_addresses("cprog/common.h", sq)
        .expect("common.h line");
    assert!(copies.len() >= 3, "{copies:?}");
    // A line without code moves to the next line that has code.
    let comment = line_of("common.h", "/* Fixture for");
    let next = elf
        .line_addresses("common.h", comment)
        .expect("next line with code");
    assert!(next[0].line > comment);
    assert!(matches!(
        elf.line_addresses("nonexistent.c", 1),
        Err(symbols::Error::NoSuchFile(_))
    ));
}

#[test]
fn cfi_unwinds_from_function_entry() {
    let elf = elf();
    let sum8 = elf.lookup("sum8")[0];
    assert!(elf.has_cfi(sum8.address));
    let sp = 0x7fff_0000u64;
    let ret = 0x1234_5678u64;
    let mut regs = Registers::new();
    regs.set(Register::RIP, Some(sum8.address));
    regs.set(Register::RSP, Some(sp));
    regs.set(Register::RBX, Some(77));
    let caller = elf
        .unwind_step(&regs, true, &mut |a| (a == sp).then_some(ret))
        .expect("caller frame");
    assert_eq!(caller.pc(), Some(ret));
    assert_eq!(caller.sp(), Some(sp + 8));
    assert_eq!(
        caller.get(Register::RBX),
        Some(77),
        "callee-saved registers carry over"
    );
    // No CFI: the outermost frame.
    let mut nowhere = Registers::new();
    nowhere.set(Register::RIP, Some(0x10));
    nowhere.set(Register::RSP, Some(sp));
    assert_eq!(elf.unwind_step(&nowhere, true, &mut |_| Some(0)), None);
}

#[test]
fn compressed_debug_sections_read_the_same() {
    let plain = elf();
    let variants = [
        common::build("prog-gz", &["-gz=zlib"]),
        common::objcopy("prog-zstd", &["--compress-debug-sections=zstd"]),
        common::objcopy("prog-zdebug", &["--compress-debug-sections=zlib-gnu"]),
    ];
    let f = plain
        .functions_named("spawn_task")
        .expect("spawn_task")
        .remove(0);
    let text = common::text_range(&plain);
    for v in &variants {
        let z = Elf::open(v).expect("open compressed");
        assert!(z.has_dwarf(), "{}", v.display());
        let g = z
            .functions_named("spawn_task")
            .expect("spawn_task")
            .remove(0);
        assert_eq!(g.params.len(), f.params.len());
        for (a, b) in g.params.iter().zip(&f.params) {
            assert_eq!(
                (&a.name, &a.type_name, a.location),
                (&b.name, &b.type_name, b.location)
            );
        }
        for addr in (text.start..text.end).step_by(7) {
            let a = z.frames(addr).expect("frames");
            let b = plain.frames(addr).expect("frames");
            let strip = |f: Vec<symbols::Frame>| -> Vec<(Option<String>, Option<u32>)> {
                f.into_iter()
                    .map(|f| (f.function, f.location.map(|l| l.line)))
                    .collect()
            };
            assert_eq!(strip(a), strip(b), "{} at {addr:#x}", v.display());
        }
    }
}

#[test]
fn unoptimised_code_falls_back_to_the_abi_at_entry() {
    // At -O0 DWARF places parameters in frame slots that the prologue fills:
    // at the entry pc they are still where the SysV ABI put them.
    let elf = Elf::open(common::build("prog-O0", &["-O0"])).expect("open -O0 build");
    let f = elf
        .functions_named("spawn_task")
        .expect("spawn_task")
        .remove(0);
    let regs: Vec<(ParamLocation, LocationSource)> =
        f.params.iter().map(|p| (p.location, p.source)).collect();
    let want: Vec<(ParamLocation, LocationSource)> = Register::ARGS
        .iter()
        .map(|r| (ParamLocation::Register(*r), LocationSource::Abi))
        .collect();
    assert_eq!(regs, want);
    let sum8 = elf.functions_named("sum8").expect("sum8").remove(0);
    assert_eq!(sum8.params[6].location, ParamLocation::Stack { offset: 8 });
    assert_eq!(sum8.params[7].location, ParamLocation::Stack { offset: 16 });
    let scale = elf.functions_named("scale").expect("scale").remove(0);
    assert_eq!(
        scale.params[0].location,
        ParamLocation::Register(Register::xmm(0))
    );
    assert_eq!(
        scale.params[1].location,
        ParamLocation::Register(Register::RDI)
    );
    assert_eq!(
        scale.params[2].location,
        ParamLocation::Register(Register::xmm(1))
    );
}

#[test]
fn cfi_unwinds_through_a_frame_pointer_frame() {
    use object::{Object, ObjectSection};
    let path = common::build("prog-O0", &["-O0"]);
    let elf = Elf::open(&path).expect("open -O0 build");
    let f = elf.lookup("spawn_task")[0];
    // The -O0 prologue is `push %rbp; mov %rsp,%rbp`: check, then unwind
    // from just after it, where the CFA is rbp + 16.
    let bytes = std::fs::read(&path).expect("read");
    let obj = object::File::parse(&*bytes).expect("parse");
    let text = obj.section_by_name(".text").expect(".text");
    let code = text
        .data_range(f.address, 4)
        .expect("range")
        .expect("bytes");
    assert_eq!(code, [0x55, 0x48, 0x89, 0xe5], "unexpected prologue");
    let (rbp, ret, old_rbp) = (0x7fff_1000u64, 0x4242u64, 0x7fff_2000u64);
    let mut regs = Registers::new();
    regs.set(Register::RIP, Some(f.address + 4));
    regs.set(Register::RSP, Some(rbp));
    regs.set(Register::RBP, Some(rbp));
    let mem = |a: u64| match a {
        a if a == rbp => Some(old_rbp),
        a if a == rbp + 8 => Some(ret),
        _ => None,
    };
    let caller = elf
        .unwind_step(&regs, true, &mut |a| mem(a))
        .expect("caller");
    assert_eq!(caller.pc(), Some(ret));
    assert_eq!(caller.sp(), Some(rbp + 16));
    assert_eq!(caller.get(Register::RBP), Some(old_rbp));
    // A return address inside main: the caller's caller lookup uses pc - 1.
    let main = elf.lookup("main")[0];
    let mut r2 = Registers::new();
    r2.set(Register::RIP, Some(main.address + main.size));
    r2.set(Register::RSP, Some(0x1000));
    r2.set(Register::RBP, Some(0x2000));
    assert!(
        elf.unwind_step(&r2, false, &mut |_| Some(7)).is_some(),
        "pc-1 lookup stays inside main"
    );
}

#[test]
fn types_by_name() {
    let elf = elf();
    let ids = elf.types_named("struct task_regs").expect("lookup");
    assert!(!ids.is_empty());
    for id in &ids {
        let t = elf.type_info(*id).expect("type");
        assert_eq!(t.name.as_deref(), Some("task_regs"));
        assert_eq!(t.size, Some(48));
    }
    assert_eq!(
        elf.types_named("task_regs").expect("plain").len(),
        ids.len()
    );
    assert!(
        elf.types_named("union task_regs")
            .expect("lookup")
            .is_empty()
    );
    let u64s = elf.types_named("u64").expect("typedef");
    assert!(matches!(
        elf.type_info(u64s[0]).expect("u64").kind,
        TypeKind::Typedef { .. }
    ));
    let color = elf.types_named("enum color").expect("enum");
    assert!(!color.is_empty());
    assert!(elf.types_named("no_such_type").expect("lookup").is_empty());
}
