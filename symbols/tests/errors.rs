//! Bad input: each error says what is wrong and what to do.

mod common;

use symbols::{Elf, Error};

#[test]
fn missing_file() {
    let err = Elf::open("/nonexistent/vmlinux").expect_err("error");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/vmlinux") && msg.contains("check the path"),
        "{msg}"
    );
}

#[test]
fn not_an_elf() {
    let p = common::scratch_file(
        "text.txt",
        b"this is a text file, not an ELF image at all, really....................",
    );
    let err = Elf::open(&p).expect_err("error");
    assert!(matches!(err, Error::NotElf { .. }), "{err:?}");
    assert!(err.to_string().contains("not an ELF file"));
    let short = common::scratch_file("short", b"\x7fELF");
    assert!(matches!(Elf::open(&short), Err(Error::NotElf { .. })));
    let empty = common::scratch_file("empty", b"");
    assert!(matches!(Elf::open(&empty), Err(Error::NotElf { .. })));
}

#[test]
fn not_x86_64() {
    let mut bytes = std::fs::read(common::fixture()).expect("fixture");
    bytes[18] = 183; // EM_AARCH64
    bytes[19] = 0;
    let p = common::scratch_file("aarch64.elf", &bytes);
    let err = Elf::open(&p).expect_err("error");
    assert!(
        matches!(err, Error::NotX86_64 { ref machine, .. } if machine == "AArch64"),
        "{err:?}"
    );
    assert!(err.to_string().contains("only debugs x86_64"));
    let mut bytes = std::fs::read(common::fixture()).expect("fixture");
    bytes[4] = 1; // ELFCLASS32
    bytes[18] = 3; // EM_386
    let p = common::scratch_file("i386.elf", &bytes);
    assert!(
        matches!(Elf::open(&p), Err(Error::NotX86_64 { ref machine, .. }) if machine == "i386")
    );
}

#[test]
fn no_dwarf_degrades_to_the_symbol_table_and_says_so_once() {
    let p = common::objcopy("prog-stripped-debug", &["--strip-debug"]);
    let elf = Elf::open(&p).expect("a file without DWARF still opens");
    assert!(!elf.has_dwarf());
    let note = elf.take_notice().expect("a notice");
    assert!(note.contains("no DWARF"), "{note}");
    assert_eq!(elf.take_notice(), None, "said only once");
    // The symbol table still answers.
    let s = elf.lookup("spawn_task")[0];
    assert_eq!(
        elf.symbolize(s.address + 2).expect("symbolize").to_string(),
        "spawn_task+0x2"
    );
    let f = elf
        .function_at(s.address)
        .expect("function from the symbol table");
    assert!(!f.has_dwarf && f.params.is_empty());
    let frames = elf.frames(s.address).expect("frames");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].function.as_deref(), Some("spawn_task"));
    assert!(frames[0].location.is_none());
    // DWARF-only queries say why they cannot answer.
    let err = elf.line_addresses("main.c", 10).expect_err("error");
    assert!(matches!(err, Error::NoDwarf { .. }));
    assert!(err.to_string().contains("rebuild with debug info"), "{err}");
    assert!(matches!(
        elf.type_info(symbols::TypeId(0x10)),
        Err(Error::NoDwarf { .. })
    ));
    assert!(matches!(
        elf.location(s.address),
        Err(Error::NoDwarf { .. })
    ));
}

#[test]
fn bad_queries() {
    let elf = Elf::open(common::fixture()).expect("fixture");
    assert!(matches!(
        elf.function_at(0x10),
        Err(Error::NoFunction(0x10))
    ));
    assert!(matches!(
        elf.type_info(symbols::TypeId(u64::MAX / 2)),
        Err(Error::NoSuchType(_))
    ));
    assert!(elf.frames(0x10).expect("frames").is_empty());
    assert_eq!(elf.symbolize(0), None);
}

/// Truncated and corrupted files give errors or empty answers, never a panic.
#[test]
fn damaged_files_never_panic() {
    let good = std::fs::read(common::fixture()).expect("fixture");
    let probe = |name: &str, bytes: &[u8]| {
        let p = common::scratch_file(name, bytes);
        let Ok(elf) = Elf::open(&p) else { return };
        let _ = elf.take_notice();
        let range = elf.section_range(".text").unwrap_or(0x1000..0x1400);
        let names: Vec<String> = elf.names_with_prefix("").map(str::to_string).collect();
        for n in names.iter().take(50) {
            for s in elf.lookup(n) {
                let _ = elf.function_at(s.address).map(|f| {
                    for p in f.params {
                        if let Some(t) = p.ty {
                            let _ = elf.resolve(t);
                            let _ = elf.type_name(Some(t));
                        }
                    }
                });
            }
        }
        let mut session = symbols::binutils::Session::new(
            &elf,
            symbols::binutils::Options {
                functions: true,
                inlines: true,
                demangle: true,
                ..Default::default()
            },
        );
        for a in (range.start..range.end).step_by(13) {
            let _ = elf.frames(a);
            let _ = elf.symbolize(a);
            let _ = session.format(&format!("{a:#x}"));
            let mut regs = symbols::Registers::new();
            regs.set(symbols::Register::RIP, Some(a));
            regs.set(symbols::Register::RSP, Some(0x1000));
            let _ = elf.unwind_step(&regs, true, &mut |_| Some(0));
        }
        let _ = elf.line_addresses("main.c", 30);
    };
    for cut in [
        64,
        1000,
        good.len() / 4,
        good.len() / 2,
        good.len() - 4096,
        good.len() - 1,
    ] {
        probe(&format!("cut-{cut}"), &good[..cut]);
    }
    // Flip bytes all over the file (DWARF, symbol table, headers).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..8 {
        let mut bad = good.clone();
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = 64 + (x as usize) % (bad.len() - 64);
            bad[i] ^= (x >> 32) as u8 | 1;
        }
        probe(&format!("flip-{round}"), &bad);
    }
}
