//! The capture compiler against real DWARF: a C fixture compiled with gcc
//! (`-g -O1`), its functions' ARGS compiled into proto's fetch programs.

use std::path::PathBuf;
use std::process::Command;

use shell::capture::{CaptureError, Shape, Source, compile};
use symbols::Elf;

/// Built once per test binary (tests run in parallel: one builds, the
/// others wait).
fn fixture() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("capture-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("capture");
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/capture.c");
            let st = Command::new("gcc")
                .args(["-g", "-O1", "-fno-inline", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .expect("gcc is needed for this test (apt-get install gcc)");
            assert!(st.success());
            out
        })
        .clone()
}

fn func(elf: &Elf, name: &str) -> symbols::Function {
    elf.functions_named(name).unwrap().remove(0)
}

#[test]
fn default_capture_is_every_parameter_with_strings_fetched() {
    let elf = Elf::open(fixture()).unwrap();
    let f = func(&elf, "open_file");
    let l = compile(&elf, &f, &[], true).unwrap();
    let names: Vec<&str> = l.items.iter().map(|i| i.label.as_str()).collect();
    assert_eq!(names, ["path", "flags", "mode"]);
    assert_eq!(l.items[0].shape, Shape::Str { len: None });
    assert_eq!(l.items[0].source, Source::Result(0));
    assert_eq!(l.spec.to_string(), "fetch=str64@arg0");
    assert_eq!(l.items[1].source, Source::Arg(1));
    assert_eq!(l.items[1].shape, Shape::Unsigned { size: 4, hex: true });
    assert_eq!(l.items[2].shape, Shape::Signed { size: 4 });
    assert_eq!(l.ret, Some(Shape::Signed { size: 8 }));
}

#[test]
fn fields_derefs_registers_and_stack_arguments() {
    let elf = Elf::open(fixture()).unwrap();
    let f = func(&elf, "handle");
    let items: Vec<String> = [
        "r->id",
        "r->name->text",
        "r->name->len",
        "*r",
        "seventh",
        "$arg3",
        "%rsi",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let l = compile(&elf, &f, &items, false).unwrap();
    // r->id: u64 at arg0+0; r->name->text: pointer at arg0+8, then pointer
    // at $1+0 and the string it points to; r->name->len: pointer again, u32
    // at +8; *r: the first 8 bytes (struct: size clamps to u64).
    assert_eq!(
        l.spec.to_string(),
        "stack=8 fetch=u64@arg0,u64@arg0+0x8,u64@$1,str64@$2,u64@arg0+0x8,u32@$4+0x8,u64@arg0"
    );
    let src: Vec<Source> = l.items.iter().map(|i| i.source).collect();
    assert_eq!(
        src,
        [
            Source::Result(0),
            Source::Result(3),
            Source::Result(5),
            Source::Result(6),
            Source::Stack(0),
            Source::Arg(3),
            Source::Arg(1)
        ]
    );
    assert_eq!(l.items[1].shape, Shape::Str { len: None });
    assert_eq!(l.items[2].shape, Shape::Signed { size: 4 });
}

#[test]
fn member_paths_and_strings() {
    let elf = Elf::open(fixture()).unwrap();
    let f = func(&elf, "handle");
    let items: Vec<String> = ["r->name->text:string", "r->tag", "r->flags"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let l = compile(&elf, &f, &items, false).unwrap();
    // tag is a char array inside the struct: read in place as a string.
    assert_eq!(
        l.spec.to_string(),
        "fetch=u64@arg0+0x8,u64@$0,str64@$1,str64@arg0+0x14,u32@arg0+0x10"
    );
    assert_eq!(l.items[0].label, "r->name->text");
    assert_eq!(l.items[1].shape, Shape::Str { len: None });
    let e = compile(&elf, &f, &["r.id".to_string()], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("use ->"), "{e}");
    let e = compile(&elf, &f, &["r->flags:string".to_string()], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a pointer"), "{e}");
}

#[test]
fn bad_items_say_what_is_wrong() {
    let elf = Elf::open(fixture()).unwrap();
    let f = func(&elf, "handle");
    let one = |s: &str| compile(&elf, &f, &[s.to_string()], false).unwrap_err();
    let e = one("nosuch");
    assert!(matches!(e, CaptureError::NoParam { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("handle(r, a1, a2, a3, a4, a5, seventh)"),
        "{e}"
    );
    let e = one("r->nofield").to_string();
    assert!(
        e.contains("no field `nofield`") && e.contains("id, name, flags, tag"),
        "{e}"
    );
    let e = one("*a1").to_string();
    assert!(e.contains("not a pointer"), "{e}");
    let e = one("%rbx").to_string();
    assert!(e.contains("not an argument register"), "{e}");
    let e = one("$arg9").to_string();
    assert!(e.contains("$arg0 .. $arg5"), "{e}");
}
