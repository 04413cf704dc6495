//! Printing values like gdb's `print` (C syntax).
//!
//! Differences from gdb (documented in docs/EXPRESSIONS.md): Rust enums print
//! as `Variant(...)`/`Variant{...}` (gdb's Rust style, without the path),
//! `&str` as a string literal and slices as `{a, b, ...}` (the elements),
//! `<sym+0x4>` offsets are hex.

use crate::Error;
use crate::eval::{Evaluator, Loc, Value};
use crate::lex::Span;
use crate::ty::{AggKind, IntKind, Ty};

/// A print format letter (`/x` ...), or the natural format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// As the type says.
    #[default]
    Natural,
    /// `x` hexadecimal.
    Hex,
    /// `d` signed decimal.
    Dec,
    /// `u` unsigned decimal.
    Unsigned,
    /// `o` octal.
    Octal,
    /// `t` binary.
    Binary,
    /// `c` character.
    Char,
    /// `a` address with symbol.
    Address,
    /// `s` string.
    Str,
    /// `z` zero-padded hex.
    Zero,
}

impl Format {
    /// From a format letter.
    pub fn from_letter(c: char) -> Option<Format> {
        Some(match c {
            'x' => Format::Hex,
            'd' => Format::Dec,
            'u' => Format::Unsigned,
            'o' => Format::Octal,
            't' => Format::Binary,
            'c' => Format::Char,
            'a' => Format::Address,
            's' => Format::Str,
            'z' => Format::Zero,
            _ => return None,
        })
    }
}

/// Elements printed before `...` (gdb's `print elements`).
pub const ELEMENT_LIMIT: usize = 200;
/// Identical elements collapsed into `<repeats N times>` from this many.
pub const REPEAT_THRESHOLD: usize = 10;

/// Formats `v`. `top` is true for the value `print` shows (pointers get
/// their type in front: `(struct Request *) 0x...`).
pub fn format_value(
    ev: &mut Evaluator<'_>,
    v: &Value,
    fmt: Format,
    top: bool,
) -> Result<String, Error> {
    let mut out = String::new();
    write_value(ev, v, fmt, top, 0, &mut out)?;
    Ok(out)
}

const SP: Span = Span { start: 0, end: 0 };

fn char_repr(c: u64, quote: char) -> String {
    match c {
        0 => "\\000".into(),
        7 => "\\a".into(),
        8 => "\\b".into(),
        9 => "\\t".into(),
        10 => "\\n".into(),
        11 => "\\v".into(),
        12 => "\\f".into(),
        13 => "\\r".into(),
        27 => "\\033".into(),
        c if c == quote as u64 => format!("\\{quote}"),
        92 => "\\\\".into(),
        32..=126 => (c as u8 as char).to_string(),
        c if c < 256 => format!("\\{c:03o}"),
        c => char::from_u32(c as u32).map_or(format!("\\u{{{c:x}}}"), |ch| ch.to_string()),
    }
}

/// A byte string as gdb prints it (`"abc"`, with escapes).
pub fn string_repr(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        s.push_str(&char_repr(u64::from(*b), '"'));
    }
    s.push('"');
    s
}

/// A float as gdb prints it: `%g` with 9 (`float`) or 17 (`double`)
/// significant digits (`1.5`, `0.10000000000000001`, `1e+20`), `inf`,
/// `-nan(0x8000000000000)` with the mantissa bits.
pub fn float_text(f: f64, bits: u64, single: bool) -> String {
    if f.is_nan() {
        let (neg, mant) = if single {
            (bits >> 31 & 1 == 1, bits & 0x7f_ffff)
        } else {
            (bits >> 63 == 1, bits & 0xf_ffff_ffff_ffff)
        };
        return format!("{}nan({mant:#x})", if neg { "-" } else { "" });
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf".into() } else { "inf".into() };
    }
    let p: usize = if single { 9 } else { 17 };
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // `%.{p-1}e` gives the rounded mantissa and the exponent `%g` decides on.
    let e = format!("{:.*e}", p - 1, f);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let x: i32 = exp.parse().unwrap_or(0);
    let strip = |t: &str| -> String {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t.to_string()
        }
    };
    if x < -4 || x >= p as i32 {
        format!(
            "{}e{}{:02}",
            strip(mant),
            if x < 0 { '-' } else { '+' },
            x.unsigned_abs()
        )
    } else {
        let decimals = (p as i32 - 1 - x).max(0) as usize;
        strip(&format!("{f:.decimals$}"))
    }
}

fn int_text(raw: u64, size: u64, signed: bool, fmt: Format) -> String {
    let bits = size * 8;
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let u = raw & mask;
    match fmt {
        Format::Hex | Format::Address => format!("{u:#x}"),
        Format::Zero => format!("0x{u:0w$x}", w = (size * 2) as usize),
        Format::Octal => {
            if u == 0 {
                "0".into()
            } else {
                format!("0{u:o}")
            }
        }
        Format::Binary => format!("{u:b}"),
        Format::Unsigned => u.to_string(),
        Format::Dec => {
            let sh = 64 - bits.min(64);
            (((u << sh) as i64) >> sh).to_string()
        }
        Format::Char => {
            let c = if signed {
                ((u << 56) as i64 >> 56) as u64
            } else {
                u & 0xff
            };
            format!(
                "{} '{}'",
                if signed {
                    (c as i64).to_string()
                } else {
                    c.to_string()
                },
                char_repr(u & 0xff, '\'')
            )
        }
        _ => {
            if signed {
                let sh = 64 - bits.min(64);
                (((u << sh) as i64) >> sh).to_string()
            } else {
                u.to_string()
            }
        }
    }
}

fn symbol_suffix(ev: &Evaluator<'_>, addr: u64) -> String {
    if addr == 0 {
        return String::new();
    }
    match ev.elf.symbolize(addr) {
        Some(s) if s.offset < s.symbol.size.max(1) => {
            if s.offset == 0 {
                format!(" <{}>", s.symbol.demangled())
            } else {
                format!(" <{}+{}>", s.symbol.demangled(), s.offset)
            }
        }
        _ => String::new(),
    }
}

fn eflags_text(v: u64) -> String {
    const FLAGS: [(u32, &str); 18] = [
        (0, "CF"),
        (1, ""),
        (2, "PF"),
        (4, "AF"),
        (6, "ZF"),
        (7, "SF"),
        (8, "TF"),
        (9, "IF"),
        (10, "DF"),
        (11, "OF"),
        (14, "NT"),
        (16, "RF"),
        (17, "VM"),
        (18, "AC"),
        (19, "VIF"),
        (20, "VIP"),
        (21, "ID"),
        (12, ""),
    ];
    let mut s = String::from("[ ");
    for (bit, name) in FLAGS {
        if !name.is_empty() && v >> bit & 1 == 1 {
            s.push_str(name);
            s.push(' ');
        }
    }
    s.push(']');
    s
}

fn write_value(
    ev: &mut Evaluator<'_>,
    v: &Value,
    fmt: Format,
    top: bool,
    depth: u32,
    out: &mut String,
) -> Result<(), Error> {
    if v.loc == Loc::OptimizedOut {
        out.push_str("<optimized out>");
        return Ok(());
    }
    if depth > 12 {
        out.push_str("{...}");
        return Ok(());
    }
    // Aggregates and arrays in memory: one read for the whole value, then
    // members from those bytes (one round trip instead of one per member).
    if let Loc::Mem(_) = v.loc
        && matches!(v.ty, Ty::Agg { .. } | Ty::Array { .. })
        && v.ty.size() > 0
        && v.ty.size() <= 1 << 16
    {
        match ev.bytes(v, SP) {
            Ok(b) => {
                let fetched = Value {
                    ty: v.ty.clone(),
                    loc: Loc::Bytes(b),
                };
                return write_value(ev, &fetched, fmt, top, depth, out);
            }
            Err(e) if !top => {
                out.push_str(&format!("<error: {}>", e.message));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    match &v.ty {
        Ty::Void => out.push_str("void"),
        Ty::Int {
            size, signed, kind, ..
        } => {
            let raw = match ev.scalar(v, SP) {
                Ok(r) => r,
                Err(e) if !top => {
                    out.push_str(&format!("<error: {}>", e.message));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let size = u64::from(*size);
            if fmt != Format::Natural {
                out.push_str(&int_text(raw, size, *signed, fmt));
                return Ok(());
            }
            match kind {
                IntKind::Bool => out.push_str(match raw {
                    0 => "false",
                    1 => "true",
                    _ => "",
                }),
                IntKind::Char => out.push_str(&int_text(raw, size, *signed, Format::Char)),
                IntKind::RustChar => {
                    out.push_str(&format!("{raw} '{}'", char_repr(raw & 0xffff_ffff, '\'')))
                }
                IntKind::Eflags => out.push_str(&eflags_text(raw)),
                IntKind::Enum(id) => {
                    let values = match ev.elf.type_info(*id).map(|t| t.kind) {
                        Ok(symbols::TypeKind::Enum { values, .. }) => values,
                        _ => Vec::new(),
                    };
                    let x = if *signed {
                        i128::from(raw as i64)
                    } else {
                        i128::from(raw)
                    };
                    match values.iter().find(|(_, val)| *val == x) {
                        Some((n, _)) if ev.rust => {
                            // gdb: `kernel::workloads::inspect::Color::Green`.
                            match ev.elf.qualified_type_name(*id) {
                                Some(q) => out.push_str(&format!("{q}::{n}")),
                                None => out.push_str(n),
                            }
                        }
                        Some((n, _)) => out.push_str(n),
                        None => out.push_str(&int_text(raw, size, *signed, Format::Natural)),
                    }
                }
                IntKind::Int => out.push_str(&int_text(raw, size, *signed, Format::Natural)),
            }
            if matches!(kind, IntKind::Bool) && raw > 1 {
                out.push_str(&raw.to_string());
            }
        }
        Ty::Float { size, .. } => {
            let b = ev.bytes(v, SP)?;
            let mut w = [0u8; 8];
            w[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
            let bits = u64::from_le_bytes(w);
            let f = if *size == 4 {
                f64::from(f32::from_bits(bits as u32))
            } else {
                f64::from_bits(bits)
            };
            if fmt == Format::Natural {
                out.push_str(&float_text(f, bits, *size == 4));
            } else {
                out.push_str(&int_text(bits, u64::from(*size), true, fmt));
            }
        }
        Ty::Ptr { pointee, .. } => {
            let a = match ev.scalar(v, SP) {
                Ok(a) => a,
                Err(e) if !top => {
                    out.push_str(&format!("<error: {}>", e.message));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if !matches!(fmt, Format::Natural | Format::Address | Format::Str) {
                out.push_str(&int_text(a, 8, false, fmt));
                return Ok(());
            }
            if top && fmt != Format::Address {
                out.push_str(&format!("({}) ", v.ty.display_name(ev.rust)));
            }
            out.push_str(&format!("{a:#x}"));
            let is_char = matches!(
                **pointee,
                Ty::Int {
                    kind: IntKind::Char,
                    size: 1,
                    ..
                }
            );
            if (is_char || fmt == Format::Str) && a != 0 {
                if top && fmt != Format::Address {
                    // gdb does not show the type for char pointers.
                    out.clear();
                    out.push_str(&format!("{a:#x}"));
                }
                out.push_str(&format!(" {}", read_c_string(ev, a)));
            } else {
                out.push_str(&symbol_suffix(ev, a));
            }
        }
        Ty::Func { .. } => {
            let a = v.address().unwrap_or(0);
            let name = v.ty.display_name(ev.rust);
            out.push_str(&format!("{{{name}}} {a:#x}{}", symbol_suffix(ev, a)));
        }
        Ty::Array { elem, len } => {
            let n = len.unwrap_or(0) as usize;
            let is_char = matches!(
                **elem,
                Ty::Int {
                    kind: IntKind::Char,
                    size: 1,
                    ..
                }
            );
            if is_char && matches!(fmt, Format::Natural | Format::Str) {
                let b = ev.bytes(v, SP)?;
                out.push_str(&char_array_repr(&b));
                return Ok(());
            }
            let es = elem.size() as usize;
            let all = match ev.bytes(v, SP) {
                Ok(b) => b,
                Err(e) if !top => {
                    out.push_str(&format!("<error: {}>", e.message));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let mut items: Vec<String> = Vec::new();
            for i in 0..n.min(ELEMENT_LIMIT) {
                let ev_item = Value {
                    ty: (**elem).clone(),
                    loc: match v.loc {
                        Loc::Mem(a) => Loc::Mem(a + (i * es) as u64),
                        _ => Loc::Bytes(all.get(i * es..(i + 1) * es).unwrap_or(&[]).to_vec()),
                    },
                };
                // Elements are read from the bytes already fetched.
                let item = Value {
                    ty: ev_item.ty.clone(),
                    loc: if matches!(ev_item.ty, Ty::Agg { .. }) {
                        ev_item.loc
                    } else {
                        Loc::Bytes(all.get(i * es..(i + 1) * es).unwrap_or(&[]).to_vec())
                    },
                };
                let mut s = String::new();
                write_value(ev, &item, fmt, false, depth + 1, &mut s)?;
                items.push(s);
            }
            out.push(if ev.rust { '[' } else { '{' });
            out.push_str(&collapse(&items));
            if n > ELEMENT_LIMIT {
                out.push_str("...");
            }
            out.push(if ev.rust { ']' } else { '}' });
        }
        Ty::Agg { id, kind, .. } => {
            let info = ev
                .elf
                .type_info(*id)
                .map_err(|e| Error::msg(e.to_string()))?;
            if *kind == AggKind::RustEnum {
                let (name, field) = ev.active_variant(v, SP)?;
                // gdb: the variant's path (`core::option::Option<u32>::Some`).
                let path = field
                    .as_ref()
                    .and_then(|f| f.ty)
                    .and_then(|t| ev.elf.qualified_type_name(t))
                    .filter(|p| p.ends_with(&name))
                    .unwrap_or(name);
                out.push_str(&path);
                if let Some(f) = field {
                    let inner = ev.field_value(v, &f, SP)?;
                    write_variant_payload(ev, &inner, fmt, depth, out)?;
                }
                return Ok(());
            }
            if info.slice_parts().is_some() {
                return write_slice(ev, v, &info, fmt, top, depth, out);
            }
            let fields = info.fields().to_vec();
            if ev.rust {
                return write_rust_struct(ev, v, &fields, fmt, depth, out);
            }
            if fields.is_empty() {
                out.push_str("{<No data fields>}");
                return Ok(());
            }
            out.push('{');
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Some(n) = &f.name {
                    out.push_str(n);
                    out.push_str(" = ");
                }
                match ev.field_value(v, f, SP) {
                    Ok(fv) => write_value(ev, &fv, fmt, false, depth + 1, out)?,
                    Err(e) => out.push_str(&format!("<error: {}>", e.message)),
                }
            }
            out.push('}');
        }
    }
    Ok(())
}

fn is_tuple(fields: &[symbols::Field]) -> bool {
    !fields.is_empty()
        && fields
            .iter()
            .all(|f| f.name.as_deref().is_some_and(|n| n.starts_with("__")))
}

/// gdb's Rust syntax: `Path {a: 1, b: 2}`, `(1, 2)`, `Path(1, 2)`.
fn write_rust_struct(
    ev: &mut Evaluator<'_>,
    v: &Value,
    fields: &[symbols::Field],
    fmt: Format,
    depth: u32,
    out: &mut String,
) -> Result<(), Error> {
    let name = v.ty.name();
    let tuple = is_tuple(fields);
    if !name.starts_with('(') {
        out.push_str(&name);
    }
    if fields.is_empty() {
        return Ok(());
    }
    out.push_str(if tuple { "(" } else { " {" });
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if !tuple {
            out.push_str(f.name.as_deref().unwrap_or("?"));
            out.push_str(": ");
        }
        match ev.field_value(v, f, SP) {
            Ok(fv) => write_value(ev, &fv, fmt, false, depth + 1, out)?,
            Err(e) => out.push_str(&format!("<error: {}>", e.message)),
        }
    }
    out.push(if tuple { ')' } else { '}' });
    Ok(())
}

/// `Some(5)`, `Rect{w: 3, h: 4}`, `None`.
fn write_variant_payload(
    ev: &mut Evaluator<'_>,
    inner: &Value,
    fmt: Format,
    depth: u32,
    out: &mut String,
) -> Result<(), Error> {
    let Ty::Agg { id, .. } = &inner.ty else {
        return Ok(());
    };
    let info = ev
        .elf
        .type_info(*id)
        .map_err(|e| Error::msg(e.to_string()))?;
    let fields = info.fields().to_vec();
    if fields.is_empty() {
        return Ok(());
    }
    let tuple = fields
        .iter()
        .all(|f| f.name.as_deref().is_some_and(|n| n.starts_with("__")));
    out.push(if tuple { '(' } else { '{' });
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if !tuple {
            out.push_str(f.name.as_deref().unwrap_or("?"));
            out.push_str(": ");
        }
        let fv = ev.field_value(inner, f, SP)?;
        write_value(ev, &fv, fmt, false, depth + 1, out)?;
    }
    out.push(if tuple { ')' } else { '}' });
    Ok(())
}

fn write_slice(
    ev: &mut Evaluator<'_>,
    v: &Value,
    info: &symbols::Type,
    fmt: Format,
    top: bool,
    depth: u32,
    out: &mut String,
) -> Result<(), Error> {
    let Some((pf, lf)) = info.slice_parts().map(|(p, l)| (p.clone(), l.clone())) else {
        return Ok(());
    };
    let pv = ev.field_value(v, &pf, SP)?;
    let lv = ev.field_value(v, &lf, SP)?;
    let p = ev.scalar(&pv, SP)?;
    let n = ev.scalar(&lv, SP)?;
    if info.is_rust_str() && fmt == Format::Natural {
        let take = n.min(ELEMENT_LIMIT as u64) as usize;
        match ev.read(p, take, SP) {
            Ok(b) => {
                out.push_str(&string_repr(&b));
                if n as usize > take {
                    out.push_str("...");
                }
            }
            Err(e) if !top => out.push_str(&format!("<error: {}>", e.message)),
            Err(e) => return Err(e),
        }
        return Ok(());
    }
    let elem = match &pv.ty {
        Ty::Ptr { pointee, .. } => (**pointee).clone(),
        _ => Ty::int(1, false),
    };
    let shown = n.min(ELEMENT_LIMIT as u64);
    if ev.rust {
        // gdb: `&[u32] [1, 2, 3]`.
        out.push_str(&info.name.clone().unwrap_or_default());
        out.push(' ');
    }
    let arr = Value {
        ty: Ty::Array {
            elem: Box::new(elem),
            len: Some(shown),
        },
        loc: Loc::Mem(p),
    };
    let mut s = String::new();
    write_value(ev, &arr, fmt, top, depth + 1, &mut s)?;
    if n > shown && s.ends_with('}') {
        s.pop();
        s.push_str("...}");
    }
    out.push_str(&s);
    Ok(())
}

/// gdb's `<repeats N times>` for runs of identical elements.
fn collapse(items: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let mut j = i;
        while j < items.len() && items[j] == items[i] {
            j += 1;
        }
        let run = j - i;
        if run >= REPEAT_THRESHOLD {
            parts.push(format!("{} <repeats {run} times>", items[i]));
            i = j;
        } else {
            parts.push(items[i].clone());
            i += 1;
        }
    }
    parts.join(", ")
}

/// A char array as gdb prints it: the string up to the trailing NULs, with
/// runs of NULs as `'\000' <repeats N times>`.
pub fn char_array_repr(b: &[u8]) -> String {
    // gdb drops the array's final NUL (print null-stop off keeps the rest).
    let b = match b.last() {
        Some(0) => &b[..b.len() - 1],
        _ => b,
    };
    let mut segs: Vec<String> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < b.len().min(ELEMENT_LIMIT) {
        let mut j = i;
        while j < b.len() && b[j] == b[i] {
            j += 1;
        }
        if j - i > 8 {
            if !cur.is_empty() {
                segs.push(string_repr(&cur));
                cur.clear();
            }
            segs.push(format!(
                "'{}' <repeats {} times>",
                char_repr(u64::from(b[i]), '\''),
                j - i
            ));
            i = j;
        } else {
            cur.push(b[i]);
            i += 1;
        }
    }
    if !cur.is_empty() || segs.is_empty() {
        segs.push(string_repr(&cur));
    }
    let mut s = segs.join(", ");
    if b.len() > ELEMENT_LIMIT {
        s.push_str("...");
    }
    s
}

/// Reads a NUL-terminated string (at most 200 bytes) as gdb shows it after
/// a `char *`: `"text"`, or `<error: ...>`.
pub fn read_c_string(ev: &mut Evaluator<'_>, addr: u64) -> String {
    let mut bytes = Vec::new();
    let mut at = addr;
    while bytes.len() < ELEMENT_LIMIT {
        let chunk = match ev.read(at, 16, SP) {
            Ok(c) => c,
            Err(_) => {
                // Byte by byte up to the unreadable one.
                let mut part = Vec::new();
                for k in 0..16 {
                    match ev.read(at + k, 1, SP) {
                        Ok(x) => part.extend(x),
                        Err(_) => break,
                    }
                }
                if part.is_empty() {
                    if bytes.is_empty() {
                        return format!("<error: Cannot access memory at address {at:#x}>");
                    }
                    break;
                }
                part
            }
        };
        if let Some(z) = chunk.iter().position(|c| *c == 0) {
            bytes.extend_from_slice(&chunk[..z]);
            return string_repr(&bytes);
        }
        at += chunk.len() as u64;
        bytes.extend(chunk);
    }
    bytes.truncate(ELEMENT_LIMIT);
    format!("{}...", string_repr(&bytes))
}
