//! The language on the host: parsing, typing, evaluation against a fake
//! frame (a register file and a sparse memory), formatting, and the error
//! messages. The symbols are a small ELF without DWARF (`/bin/true`): the
//! C and Rust base types are built in.

use std::collections::HashMap;

use expr::{Env, Evaluator, ExprKind, Format, Frame, format_value, parse};
use symbols::Elf;

/// Registers by DWARF number and a sparse byte memory.
struct FakeFrame {
    regs: HashMap<u16, u64>,
    mem: HashMap<u64, u8>,
}

impl FakeFrame {
    fn new() -> FakeFrame {
        let mut f = FakeFrame {
            regs: HashMap::new(),
            mem: HashMap::new(),
        };
        f.regs.insert(7, 0x1000); // rsp
        f.regs.insert(5, 0x2000); // rdi
        f.regs.insert(49, 0x246); // eflags: PF ZF IF
        for (i, v) in [10u32, 20, 30, 40].iter().enumerate() {
            for (j, b) in v.to_le_bytes().iter().enumerate() {
                f.mem.insert(0x2000 + (i * 4 + j) as u64, *b);
            }
        }
        for (i, b) in b"hello\0".iter().enumerate() {
            f.mem.insert(0x3000 + i as u64, *b);
        }
        for (i, b) in 0x2000u64.to_le_bytes().iter().enumerate() {
            f.mem.insert(0x1008 + i as u64, *b);
        }
        f
    }
}

impl Frame for FakeFrame {
    fn register(&mut self, dwarf: u16) -> Option<u64> {
        self.regs.get(&dwarf).copied()
    }
    fn cfa(&mut self) -> Option<u64> {
        Some(0x1010)
    }
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        (0..len as u64)
            .map(|i| self.mem.get(&(addr + i)).copied().ok_or("unmapped".into()))
            .collect()
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), String> {
        for (i, b) in data.iter().enumerate() {
            let a = addr + i as u64;
            if !self.mem.contains_key(&a) {
                return Err("unmapped".into());
            }
            self.mem.insert(a, *b);
        }
        Ok(())
    }
    fn write_register(&mut self, dwarf: u16, value: u64) -> Result<(), String> {
        self.regs.insert(dwarf, value);
        Ok(())
    }
}

fn elf() -> Elf {
    let path = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("/bin/true");
    let elf = Elf::open(path).expect("open /bin/true");
    let _ = elf.take_notice();
    elf
}

fn eval_with(
    elf: &Elf,
    frame: &mut FakeFrame,
    env: &mut Env,
    text: &str,
    fmt: Format,
) -> Result<String, String> {
    let mut ev = Evaluator::new(elf, Some(frame), env);
    let e = ev.parse(text).map_err(|e| e.render(text))?;
    let v = ev.eval(&e).map_err(|e| e.render(text))?;
    format_value(&mut ev, &v, fmt, true).map_err(|e| e.render(text))
}

fn p(text: &str) -> Result<String, String> {
    let elf = elf();
    let mut frame = FakeFrame::new();
    let mut env = Env::default();
    eval_with(&elf, &mut frame, &mut env, text, Format::Natural)
}

#[test]
fn precedence_and_associativity_are_c() {
    let e = parse("1 + 2 * 3 - 4", &|_| false).unwrap();
    let ExprKind::Binary(expr::BinOp::Sub, l, _) = e.kind else {
        panic!("{e:?}")
    };
    assert!(matches!(l.kind, ExprKind::Binary(expr::BinOp::Add, _, _)));
    assert_eq!(p("1 + 2 * 3 - 4").unwrap(), "3");
    assert_eq!(p("(1 + 2) * 3").unwrap(), "9");
    assert_eq!(p("1 << 2 + 1").unwrap(), "8");
    assert_eq!(p("7 & 3 == 3").unwrap(), "1");
    assert_eq!(p("1 ? 2 : 0 ? 3 : 4").unwrap(), "2");
    assert_eq!(p("!0 + !5").unwrap(), "1");
    assert_eq!(p("-7 / 2").unwrap(), "-3");
    assert_eq!(p("-7 % 3").unwrap(), "-1");
    assert_eq!(p("~0").unwrap(), "-1");
    assert_eq!(p("0xff ^ 0x0f").unwrap(), "240");
    assert_eq!(p("1 && 0 || 1").unwrap(), "1");
}

#[test]
fn integer_types_follow_c_conversions() {
    assert_eq!(p("(unsigned char)300").unwrap(), "44 ','");
    assert_eq!(p("(unsigned short)65537").unwrap(), "1");
    assert_eq!(p("(int)4294967295").unwrap(), "-1");
    assert_eq!(p("(unsigned int)-1").unwrap(), "4294967295");
    assert_eq!(p("(u8)257 + 1").unwrap(), "2");
    assert_eq!(p("4294967295 + 1").unwrap(), "0");
    assert_eq!(p("4294967296 + 1").unwrap(), "4294967297");
    assert_eq!(p("-1 < (unsigned int)1").unwrap(), "0");
    assert_eq!(p("sizeof(long)").unwrap(), "8");
    assert_eq!(p("sizeof(u16)").unwrap(), "2");
    assert_eq!(p("sizeof 1").unwrap(), "4");
    assert_eq!(p("'A' + 1").unwrap(), "66");
    assert_eq!(p("(char)66").unwrap(), "66 'B'");
}

#[test]
fn registers_memory_and_pointer_arithmetic() {
    assert_eq!(p("$rsp").unwrap(), "(void *) 0x1000");
    assert_eq!(p("$rdi").unwrap(), "8192");
    assert_eq!(p("$eflags").unwrap(), "[ PF ZF IF ]");
    assert_eq!(p("*(u32 *)$rdi").unwrap(), "10");
    assert_eq!(p("((u32 *)$rdi)[3]").unwrap(), "40");
    assert_eq!(p("*((u32 *)$rdi + 2)").unwrap(), "30");
    assert_eq!(p("(u32 *)$rdi + 2").unwrap(), "(u32 *) 0x2008");
    assert_eq!(p("(u64 *)$rdi + 1 - (u64 *)$rdi").unwrap(), "1");
    assert_eq!(p("**(u32 **)($rsp + 8)").unwrap(), "10");
    assert_eq!(p("(char *)0x3000").unwrap(), "0x3000 \"hello\"");
    assert_eq!(p("$str((char *)0x3000, 3)").unwrap(), "\"hel\"");
    assert_eq!(p("&*(u32 *)$rdi").unwrap(), "(u32 *) 0x2000");
}

#[test]
fn formats() {
    let elf = elf();
    let mut f = FakeFrame::new();
    let mut env = Env::default();
    let mut fm = |t: &str, c: char| {
        eval_with(&elf, &mut f, &mut env, t, Format::from_letter(c).unwrap()).unwrap()
    };
    assert_eq!(fm("255", 'x'), "0xff");
    assert_eq!(fm("-1", 'x'), "0xffffffff");
    assert_eq!(fm("8", 'o'), "010");
    assert_eq!(fm("10", 't'), "1010");
    assert_eq!(fm("65", 'c'), "65 'A'");
    assert_eq!(fm("-1", 'u'), "4294967295");
    assert_eq!(fm("(u8)5", 'z'), "0x05");
    assert_eq!(fm("(char)-1", 'd'), "-1");
}

#[test]
fn history_and_convenience_variables() {
    let elf = elf();
    let mut f = FakeFrame::new();
    let mut env = Env::default();
    let mut ev = Evaluator::new(&elf, Some(&mut f), &mut env);
    for t in ["6 * 7", "$1 + 1", "$ + $$"] {
        let e = ev.parse(t).unwrap();
        let v = ev.eval(&e).unwrap();
        ev.env.record(v);
    }
    let e = ev.parse("$3").unwrap();
    let v = ev.eval(&e).unwrap();
    assert_eq!(
        format_value(&mut ev, &v, Format::Natural, true).unwrap(),
        "85"
    );
    let e = ev.parse("$x = $2 * 2").unwrap();
    ev.eval(&e).unwrap();
    let e = ev.parse("$x - 1").unwrap();
    let v = ev.eval(&e).unwrap();
    assert_eq!(
        format_value(&mut ev, &v, Format::Natural, true).unwrap(),
        "85"
    );
    // Unset convenience variables are void, as in gdb.
    let e = ev.parse("$nothing").unwrap();
    let v = ev.eval(&e).unwrap();
    assert_eq!(
        format_value(&mut ev, &v, Format::Natural, true).unwrap(),
        "void"
    );
}

#[test]
fn assignment_writes_through_the_type_size() {
    let elf = elf();
    let mut f = FakeFrame::new();
    let mut env = Env::default();
    eval_with(
        &elf,
        &mut f,
        &mut env,
        "*(u16 *)($rdi + 4) = 0x1234",
        Format::Natural,
    )
    .unwrap();
    assert_eq!(f.mem[&0x2004], 0x34);
    assert_eq!(f.mem[&0x2005], 0x12);
    assert_eq!(
        f.mem[&0x2006], 0,
        "the u16 write must not touch the next bytes"
    );
    eval_with(&elf, &mut f, &mut env, "$rax = 5", Format::Natural).unwrap();
    assert_eq!(f.regs[&0], 5);
    let e = eval_with(&elf, &mut f, &mut env, "3 = 4", Format::Natural).unwrap_err();
    assert!(e.contains("not an lvalue"), "{e}");
}

#[test]
fn errors_are_precise_and_positioned() {
    let cases: &[(&str, &str)] = &[
        ("1 +", "expected an expression, found end of input"),
        ("(1 + 2", "expected ')' to close '('"),
        (
            "1 2",
            "unexpected number 2 after the expression (at column 3: '2')",
        ),
        ("1 / 0", "division by zero (at column 5: '0')"),
        ("5 % (2 - 2)", "division by zero"),
        (
            "1 << 32",
            "shift count 32 is out of range for a 32-bit value (0..31)",
        ),
        ("1 << -1", "shift count -1 is out of range"),
        (
            "(long)1 << 64",
            "shift count 64 is out of range for a 64-bit value",
        ),
        ("*5", "cannot dereference int: cast it first"),
        ("*(void *)$rsp", "cannot dereference a void pointer"),
        (
            "*(u64 *)0xdead000000",
            "memory at 0xdead000000 is not readable",
        ),
        (
            "nosuch_thing_at_all",
            "no symbol 'nosuch_thing_at_all' in the current context",
        ),
        ("(struct NoSuch *)0", "no type named 'struct NoSuch'"),
        ("5->x", "'->' needs a pointer, but this is int"),
        ("5.x", "int has no members"),
        ("$1", "the value history is empty"),
        ("'ab'", "unterminated character literal"),
        ("\"abc", "unterminated string literal"),
        ("0x", "invalid number '0x'"),
        ("99999999999999999999", "does not fit in 64 bits"),
        ("1 @ 2", "unexpected character '@'"),
        ("x++", "'++' and '--' are not supported"),
        ("f(1)", "calling functions in the target is not supported"),
        ("$nosuchhelper(1)", "no helper '$nosuchhelper'"),
    ];
    for (text, want) in cases {
        let e = p(text).unwrap_err();
        assert!(e.contains(want), "`{text}`: want `{want}`, got `{e}`");
        assert!(!e.contains('\n'), "`{text}`: one line: {e}");
    }
}

#[test]
fn types_without_reading_memory() {
    let elf = elf();
    let mut env = Env::default();
    // No frame at all: types and sizes still work; reads are refused.
    let mut ev = Evaluator::new(&elf, None, &mut env);
    let e = ev.parse("*(u64 *)0x1234 + 1").unwrap();
    assert_eq!(ev.type_of(&e).unwrap().name(), "u64");
    let e = ev.parse("(u32 *)0 + 1").unwrap();
    assert_eq!(ev.type_of(&e).unwrap().name(), "u32 *");
    let e = ev.parse("1 == 2").unwrap();
    assert_eq!(ev.type_of(&e).unwrap().name(), "int");
    let e = ev.parse("*(u64 *)0x1234").unwrap();
    let v = ev.eval(&e).unwrap();
    let err = format_value(&mut ev, &v, Format::Natural, true).unwrap_err();
    assert!(err.message.contains("needs a stopped kernel"), "{err:?}");
}

#[test]
fn suggestions() {
    assert_eq!(expr::suggest("nme", ["id", "name", "inner"]), Some("name"));
    assert_eq!(expr::suggest("xyz", ["id", "name"]), None);
    assert_eq!(expr::edit_distance("kitten", "sitting"), 3);
}

#[test]
fn char_arrays_print_like_gdb() {
    assert_eq!(expr::format::char_array_repr(b"hi\0"), "\"hi\"");
    assert_eq!(
        expr::format::char_array_repr(b"ab\0\0\0\0\0\0\0\0\0\0\0"),
        "\"ab\", '\\000' <repeats 10 times>"
    );
    assert_eq!(expr::format::string_repr(b"a\"\n"), "\"a\\\"\\n\"");
}

fn p_rust(text: &str) -> Result<String, String> {
    let elf = elf();
    let mut frame = FakeFrame::new();
    let mut env = Env::default();
    let mut ev = Evaluator::new(&elf, Some(&mut frame), &mut env);
    ev.rust = true;
    let e = ev.parse(text).map_err(|e| e.render(text))?;
    let v = ev.eval(&e).map_err(|e| e.render(text))?;
    format_value(&mut ev, &v, Format::Natural, true).map_err(|e| e.render(text))
}

fn whatis(text: &str, rust: bool) -> String {
    let elf = elf();
    let mut env = Env::default();
    let mut ev = Evaluator::new(&elf, None, &mut env);
    ev.rust = rust;
    let e = ev.parse(text).unwrap();
    ev.type_of(&e).unwrap().display_name(rust)
}

#[test]
fn integer_suffixes_give_c_and_rust_types() {
    assert_eq!(p("-1 < 1u").unwrap(), "0");
    assert_eq!(p("-1 < 1").unwrap(), "1");
    assert_eq!(p("(short)-1 < (unsigned short)1").unwrap(), "1");
    assert_eq!(p("5U - 10").unwrap(), "4294967291");
    assert_eq!(p("-5 / 2U").unwrap(), "2147483645");
    assert_eq!(p("-1 == 4294967295U").unwrap(), "1");
    assert_eq!(p("-1L < 1U").unwrap(), "1");
    assert_eq!(whatis("1u", false), "unsigned int");
    assert_eq!(whatis("1UL", false), "unsigned long");
    assert_eq!(whatis("1l", false), "long");
    assert_eq!(whatis("4294967296u", false), "unsigned long");
    assert_eq!(whatis("7u8", true), "u8");
    assert_eq!(p_rust("-1i32 < 1u32").unwrap(), "false");
    assert!(p("1q").unwrap_err().contains("invalid number '1q'"));
}

#[test]
fn rust_as_casts() {
    assert_eq!(p_rust("300 as u8").unwrap(), "44");
    assert_eq!(p_rust("-1 as u32").unwrap(), "4294967295");
    assert_eq!(p_rust("7 as u8 as i64 * 2").unwrap(), "14");
    assert_eq!(p_rust("65 as char").unwrap(), "65 'A'");
    assert_eq!(p_rust("2.9 as i32").unwrap(), "2");
    assert_eq!(p_rust("-1.0 as u8").unwrap(), "255");
    assert_eq!(p_rust("7 as f64 / 2.0").unwrap(), "3.5");
    assert_eq!(p_rust("$rdi as *const u32").unwrap(), "(*mut u32) 0x2000");
    assert_eq!(p_rust("*($rdi as *const u32)").unwrap(), "10");
    assert_eq!(whatis("1 as f32", true), "f32");
    assert_eq!(whatis("0 as *mut u8", true), "*mut u8");
    let e = p_rust("1 as").unwrap_err();
    assert!(e.contains("expected a type after 'as'"), "{e}");
    let e = p_rust("1 as nosuchtype").unwrap_err();
    assert!(e.contains("no type named 'nosuchtype'"), "{e}");
}

#[test]
fn floats_compute_and_print_like_gdb() {
    assert_eq!(p("1.5").unwrap(), "1.5");
    assert_eq!(p("0.1").unwrap(), "0.10000000000000001");
    assert_eq!(p("(float)0.1").unwrap(), "0.100000001");
    assert_eq!(p("0.1f + 0.2f").unwrap(), "0.300000012");
    assert_eq!(p("10 / 4.0").unwrap(), "2.5");
    assert_eq!(p("1e20").unwrap(), "1e+20");
    assert_eq!(p("1.0 / 3").unwrap(), "0.33333333333333331");
    assert_eq!(p("1e-5").unwrap(), "1.0000000000000001e-05");
    assert_eq!(p("123456789012345678.0").unwrap(), "1.2345678901234568e+17");
    assert_eq!(p("0.0001").unwrap(), "0.0001");
    assert_eq!(p("100000000.0").unwrap(), "100000000");
    assert_eq!(p("3.").unwrap(), "3");
    assert_eq!(p(".5").unwrap(), "0.5");
    assert_eq!(p("-2.5").unwrap(), "-2.5");
    assert_eq!(p("1.0 / 0").unwrap(), "inf");
    assert_eq!(p("-(1.0 / 0)").unwrap(), "-inf");
    assert_eq!(p("0.0 / 0.0").unwrap(), "-nan(0x8000000000000)");
    assert_eq!(p("(int)2.9").unwrap(), "2");
    assert_eq!(p("(int)-2.9").unwrap(), "-2");
    assert_eq!(p("(unsigned char)300.5").unwrap(), "44 ','");
    assert_eq!(p("2.5 > 2").unwrap(), "1");
    assert_eq!(p("1.5 == 1.5").unwrap(), "1");
    assert_eq!(p("!0.0").unwrap(), "1");
    assert_eq!(p("2.0 && 0").unwrap(), "0");
    assert_eq!(p("1 ? 2.5 : 3").unwrap(), "2.5");
    assert_eq!(p_rust("1.0 / 3.0").unwrap(), "0.33333333333333331");
    assert_eq!(p_rust("2.5 > 2").unwrap(), "true");
    assert_eq!(whatis("1.5", false), "double");
    assert_eq!(whatis("1.5f", false), "float");
    assert_eq!(whatis("1 + 1.5f", false), "float");
    assert_eq!(whatis("1.5", true), "f64");
    assert_eq!(whatis("1.5f32", true), "f32");
    // Tuple fields stay fields.
    assert!(parse("x.0.1", &|_| false).is_ok());
    let elf = elf();
    let mut frame = FakeFrame::new();
    let mut env = Env::default();
    assert_eq!(
        eval_with(&elf, &mut frame, &mut env, "1.5", Format::Hex).unwrap(),
        "0x3ff8000000000000"
    );
    for (text, want) in [
        ("5.0 % 2", "operator '%' needs integers, but this is double"),
        (
            "1.5 << 1",
            "operator '<<' needs integers, but this is double",
        ),
        ("~1.5", "operator '~' needs an integer, not double"),
        ("(char *)0 + 1.5", "cannot add double to a pointer"),
        ("1.5e", "invalid number"),
    ] {
        let e = p(text).unwrap_err();
        assert!(e.contains(want), "`{text}`: want `{want}`, got `{e}`");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn string_literals() {
    assert_eq!(p("\"a b\"").unwrap(), "\"a b\"");
    assert_eq!(p("\"a\\tb\\n\"").unwrap(), "\"a\\tb\\n\"");
    assert_eq!(p("sizeof(\"a b\")").unwrap(), "4");
    assert_eq!(p("\"xy\"[1]").unwrap(), "121 'y'");
    assert_eq!(whatis("\"a b\"", false), "char [4]");
    let e = p("\"abc").unwrap_err();
    assert!(e.contains("unterminated string literal"), "{e}");
}

#[test]
fn per_cpu_needs_the_kernels_per_cpu_data() {
    let e = p("$cpu").unwrap_err();
    assert!(e.contains("no per-CPU data"), "{e}");
    let e = p("$per_cpu(1, 0)").unwrap_err();
    assert!(e.contains("$per_cpu needs a per-CPU array"), "{e}");
    let e = p("$per_cpu()").unwrap_err();
    assert!(e.contains("usage: $per_cpu(VAR [, CPU])"), "{e}");
}
