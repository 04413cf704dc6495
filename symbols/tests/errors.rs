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
