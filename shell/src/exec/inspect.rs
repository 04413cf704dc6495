//! Asking questions: `print`, `whatis`, `ptype EXPR`, `set var`, `display`,
//! `info locals`, `list`, over the `expr` crate, in the selected frame.
//!
//! The selected frame is [`ShellFrame`]: frame 0 of the stop (registers from
//! the stub) unless `Session::selected_regs` holds the CFI-unwound registers
//! of another frame (set by `frame N`/`up`/`down`).

use anyhow::{Result, anyhow, bail};
use expr::{Env, Evaluator, Format, Frame, Ty, Value, format_value};
use serde::Serialize;
use symbols::{Elf, Register, Registers};

use crate::cmd::Invocation;
use crate::output::Output;
use crate::regs::RegisterFile;
use crate::session::{Session, Shared, lock};

/// A `display` expression.
#[derive(Clone, Debug)]
pub struct Display {
    pub id: u32,
    pub expr: String,
    pub format: Format,
    pub letter: Option<char>,
}

/// Expression state kept by the session (shared with the event thread,
/// which shows `display`s at each stop).
#[derive(Debug, Default)]
pub struct ExprState {
    pub env: Env,
    pub displays: Vec<Display>,
    pub next_display: u32,
    /// Registers of the selected frame when it is not frame 0 (DWARF
    /// numbers 0..=16); `None` = frame 0 from the stub.
    pub selected: Option<Registers>,
    /// The selected frame's inline level (0 = the concrete function, N =
    /// the Nth inlined call at its pc); `None` = the innermost.
    pub inline_level: Option<u32>,
    /// `set language c|rust`; `None` = auto (the selected frame's).
    pub language: Option<bool>,
    /// Last `list` position (file, next line).
    pub list_at: Option<(String, u32)>,
}

/// A value as `print` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValueView {
    /// `$N` (absent for void results).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<usize>,
    pub expr: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<u64>,
}

/// One variable of `info locals` / `info args`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VarView {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub value: String,
}

/// The selected frame over the stub connection.
pub struct ShellFrame<'a> {
    shared: &'a Shared,
    regs: Option<RegisterFile>,
    unwound: Option<Registers>,
    inline_level: Option<u32>,
    cfa: Option<Option<u64>>,
    running: bool,
}

impl<'a> ShellFrame<'a> {
    /// Frame 0 (or the selected frame) of the stopped kernel; registers
    /// are fetched on first use.
    pub fn new(shared: &'a Shared, selected: Option<Registers>, running: bool) -> ShellFrame<'a> {
        ShellFrame {
            shared,
            regs: None,
            unwound: selected,
            inline_level: None,
            cfa: None,
            running,
        }
    }

    fn file(&mut self) -> Option<&RegisterFile> {
        if self.running && self.shared.running() {
            return None;
        }
        if self.regs.is_none() {
            let g = self.shared.with_link(|c| c.read_registers().ok())??;
            self.regs = RegisterFile::parse_g(&g).ok();
        }
        self.regs.as_ref()
    }

    fn gprs(&mut self) -> Option<Registers> {
        if let Some(u) = &self.unwound {
            return Some(u.clone());
        }
        let f = self.file()?.clone();
        let mut r = Registers::new();
        // g order: rax rbx rcx rdx rsi rdi rbp rsp r8..r15; DWARF: rax rdx rcx rbx ...
        let dwarf_of_g = [0u16, 3, 2, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        for (i, d) in dwarf_of_g.iter().enumerate() {
            r.set(Register(*d), Some(f.gpr[i]));
        }
        r.set(Register::RIP, Some(f.rip));
        Some(r)
    }
}

/// gdb's `g` index of a DWARF register 0..=16.
fn g_index(dwarf: u16) -> Option<usize> {
    const G_OF_DWARF: [usize; 17] = [0, 3, 2, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    G_OF_DWARF.get(dwarf as usize).copied()
}

impl Frame for ShellFrame<'_> {
    fn inline_level(&mut self) -> Option<u32> {
        self.inline_level
    }

    fn lookup_pc(&mut self) -> Option<u64> {
        let pc = self.pc()?;
        Some(if self.unwound.is_some() {
            pc.saturating_sub(1)
        } else {
            pc
        })
    }

    fn register(&mut self, dwarf: u16) -> Option<u64> {
        match dwarf {
            0..=16 => self.gprs()?.get(Register(dwarf)),
            49 => self.file().map(|f| u64::from(f.eflags)),
            50..=55 => {
                // DWARF es cs ss ds fs gs; g order cs ss ds es fs gs.
                let idx = [3usize, 0, 1, 2, 4, 5][(dwarf - 50) as usize];
                self.file().map(|f| u64::from(f.segments[idx]))
            }
            58 => self.file()?.fs_base,
            59 => self.file()?.gs_base,
            _ => None,
        }
    }

    fn cfa(&mut self) -> Option<u64> {
        if let Some(c) = self.cfa {
            return c;
        }
        let regs = self.gprs()?;
        let shared = self.shared;
        let elf = shared.elf().ok()?;
        let mut read = |a: u64| {
            let b = shared.with_link(|c| c.read_memory(a, 8).ok())??;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        let c = elf
            .unwind_step(&regs, self.unwound.is_none(), &mut read)
            .and_then(|r| r.sp());
        self.cfa = Some(c);
        c
    }

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.shared
            .with_link(|c| c.read_memory(addr, len).map_err(|e| e.to_string()))
            .ok_or("not connected")?
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), String> {
        self.shared
            .with_link(|c| c.write_memory(addr, data).map_err(|e| e.to_string()))
            .ok_or("not connected")?
    }

    fn write_register(&mut self, dwarf: u16, value: u64) -> Result<(), String> {
        if self.unwound.is_some() {
            return Err("registers of outer frames are read-only (select frame 0)".into());
        }
        let idx = match dwarf {
            0..=16 => g_index(dwarf).ok_or("unknown register")?,
            49 => 17,
            _ => return Err("only general registers, rip and eflags can be written".into()),
        };
        let shared = self.shared;
        let r = shared.with_link(|c| -> Result<(), String> {
            let g = c.read_registers().map_err(|e| e.to_string())?;
            let mut bytes = g.into_bytes();
            let (off, n) = if idx == 17 {
                (0x88 * 2, 8)
            } else {
                (idx * 16, 16)
            };
            if bytes.len() < off + n {
                return Err("register dump too short".into());
            }
            let le = value.to_le_bytes();
            let hex: String = le[..n / 2].iter().map(|b| format!("{b:02x}")).collect();
            bytes[off..off + n].copy_from_slice(hex.as_bytes());
            let req = format!("G{}", String::from_utf8_lossy(&bytes));
            let r = c.request_str(&req).map_err(|e| e.to_string())?;
            if r == "OK" {
                Ok(())
            } else {
                Err(format!("the stub refused the register write ({r})"))
            }
        });
        self.regs = None;
        r.ok_or("not connected")?
    }
}

/// Runs `f` with an evaluator over the selected frame (or no frame when
/// not connected).
pub fn with_eval<T>(
    s: &Session,
    f: impl FnOnce(&mut Evaluator<'_>) -> Result<T, expr::Error>,
    input: &str,
) -> Result<T> {
    with_eval_shared(&s.shared, s.connected(), s.running(), f, input)
}

fn with_eval_shared<T>(
    shared: &Shared,
    connected: bool,
    running: bool,
    f: impl FnOnce(&mut Evaluator<'_>) -> Result<T, expr::Error>,
    input: &str,
) -> Result<T> {
    let elf = shared.elf()?;
    let mut state = lock(&shared.expr);
    let selected = state.selected.clone();
    let mut frame = ShellFrame::new(shared, selected, running);
    frame.inline_level = state.inline_level;
    let mut frame_ref: Option<&mut dyn Frame> = if connected { Some(&mut frame) } else { None };
    let pc = frame_ref.as_mut().and_then(|f| f.pc());
    let rust = state
        .language
        .unwrap_or_else(|| elf.lang_at(pc) == symbols::Lang::Rust);
    let mut ev = Evaluator::new(&elf, frame_ref, &mut state.env);
    ev.rust = rust;
    f(&mut ev).map_err(|e| anyhow!("{}", e.render(input)))
}

fn parse_format(m: Option<&str>, cmd: &str) -> Result<(Format, Option<char>)> {
    let Some(m) = m else {
        return Ok((Format::Natural, None));
    };
    let mut chars = m.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => match Format::from_letter(c) {
            Some(f) => Ok((f, Some(c))),
            None => bail!("bad format /{m}: use one of x d u o t c a s z ({cmd}/x EXPR)"),
        },
        _ => bail!("bad format /{m}: one letter, x d u o t c a s z ({cmd}/x EXPR)"),
    }
}

fn expr_text(inv: &Invocation, usage: &str) -> Result<String> {
    let t = inv.text();
    if t.trim().is_empty() {
        bail!("usage: {usage}");
    }
    Ok(t)
}

/// Evaluates and formats `text`; records it in the history when `record`.
fn show(
    ev: &mut Evaluator<'_>,
    text: &str,
    fmt: Format,
    record: bool,
) -> Result<ValueView, expr::Error> {
    let e = ev.parse(text)?;
    let v = ev.eval(&e)?;
    let shown = format_value(ev, &v, fmt, true)?;
    let type_name = v.ty.display_name(ev.rust);
    let address = v.address();
    let number = if record && v.ty != Ty::Void {
        // History keeps a snapshot of the contents.
        let snap = match ev.bytes(&v, e.span) {
            Ok(b) => Value {
                ty: v.ty.clone(),
                loc: expr::Loc::Bytes(b),
            },
            Err(_) => v.clone(),
        };
        let snap = if matches!(v.ty, Ty::Func { .. }) {
            v
        } else {
            snap
        };
        Some(ev.env.record(snap))
    } else {
        None
    };
    Ok(ValueView {
        number,
        expr: text.to_string(),
        type_name,
        text: shown,
        address,
    })
}

/// `print[/FMT] EXPR`.
pub fn print(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let text = expr_text(inv, "print[/FMT] EXPR")?;
    if crate::exec::maps::is_map_name(&text) {
        return crate::exec::maps::print_map(s, &text);
    }
    let (fmt, _) = parse_format(inv.modifier.as_deref(), "print")?;
    let value = with_eval(s, |ev| show(ev, &text, fmt, true), &text)?;
    Ok(Output::Value { value })
}

/// `whatis EXPR|TYPE`.
pub fn whatis(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let text = expr_text(inv, "whatis EXPR|TYPE")?;
    let name = with_eval(
        s,
        |ev| {
            if let Ok(t) = Ty::from_name(ev.elf, text.trim()) {
                return Ok(t.display_name(ev.rust));
            }
            let e = ev.parse(&text)?;
            Ok(ev.type_of(&e)?.display_name(ev.rust))
        },
        &text,
    )?;
    Ok(Output::Ptype {
        text: format!("type = {name}"),
    })
}

/// `ptype EXPR` (the expression's type, expanded).
pub fn ptype_expr(s: &Session, text: &str) -> Result<Output> {
    let out = with_eval(
        s,
        |ev| {
            let e = ev.parse(text)?;
            let t = ev.type_of(&e)?;
            Ok(if ev.rust {
                expand_type_rust(ev.elf, &t)
            } else {
                expand_type(ev.elf, &t)
            })
        },
        text,
    )?;
    Ok(Output::Ptype { text: out })
}

/// gdb's Rust `ptype`: `type = struct Path {\n  a: u64,\n}`, enums with
/// their variants.
fn expand_type_rust(elf: &Elf, t: &Ty) -> String {
    let Ty::Agg { id, name, .. } = t else {
        return format!("type = {}", t.rust_name());
    };
    let Ok(info) = elf.type_info(*id) else {
        return format!("type = {name}");
    };
    if let Ok(Some(part)) = elf.variant_part(*id) {
        let mut s = format!("type = enum {name} {{\n");
        for v in &part.variants {
            let vn = v.field.name.clone().unwrap_or_default();
            let fields = v
                .field
                .ty
                .and_then(|t| elf.type_info(t).ok())
                .map(|t| t.fields().to_vec())
                .unwrap_or_default();
            let tuple = fields
                .iter()
                .all(|f| f.name.as_deref().is_some_and(|n| n.starts_with("__")));
            let parts: Vec<String> = fields
                .iter()
                .map(|f| {
                    let ft = Ty::from_dwarf(elf, f.ty).rust_name();
                    if tuple {
                        ft
                    } else {
                        format!("{}: {ft}", f.name.as_deref().unwrap_or("?"))
                    }
                })
                .collect();
            match (fields.is_empty(), tuple) {
                (true, _) => s.push_str(&format!("  {vn},\n")),
                (false, true) => s.push_str(&format!("  {vn}({}),\n", parts.join(", "))),
                (false, false) => s.push_str(&format!("  {vn}{{{}}},\n", parts.join(", "))),
            }
        }
        s.push('}');
        return s;
    }
    let kw = if matches!(info.kind, symbols::TypeKind::Union { .. }) {
        "union"
    } else {
        "struct"
    };
    let mut s = format!("type = {kw} {name} {{\n");
    for f in info.fields() {
        let ft = Ty::from_dwarf(elf, f.ty).rust_name();
        s.push_str(&format!("  {}: {ft},\n", f.name.as_deref().unwrap_or("?")));
    }
    s.push('}');
    s
}

/// `type = struct X {\n    u64 a;\n ...} *`.
fn expand_type(elf: &Elf, t: &Ty) -> String {
    let mut stars = String::new();
    let mut base = t;
    while let Ty::Ptr { pointee, .. } = base {
        stars.push('*');
        base = pointee;
    }
    match base {
        Ty::Agg { id, name, .. } => {
            let Ok(info) = elf.type_info(*id) else {
                return format!("type = {}", t.name());
            };
            let mut s = format!("type = {name} {{\n");
            if let Ok(Some(part)) = elf.variant_part(*id) {
                for v in &part.variants {
                    let vn = v.field.name.clone().unwrap_or_default();
                    s.push_str(&format!("    {vn}({}),\n", elf.type_name(v.field.ty)));
                }
            }
            for f in info.fields() {
                let ft = Ty::from_dwarf(elf, f.ty);
                let n = f.name.as_deref().unwrap_or("");
                match &ft {
                    Ty::Array { elem, len } => s.push_str(&format!(
                        "    {} {n}[{}];\n",
                        elem.name(),
                        len.map(|l| l.to_string()).unwrap_or_default()
                    )),
                    _ => {
                        let tn = ft.name();
                        let sep = if tn.ends_with('*') { "" } else { " " };
                        match f.bit_size {
                            Some(b) => s.push_str(&format!("    {tn}{sep}{n} : {b};\n")),
                            None => s.push_str(&format!("    {tn}{sep}{n};\n")),
                        }
                    }
                }
            }
            s.push('}');
            if !stars.is_empty() {
                s.push(' ');
                s.push_str(&stars);
            }
            s
        }
        Ty::Int {
            kind: expr::IntKind::Enum(id),
            name,
            ..
        } => {
            let values = match elf.type_info(*id).map(|t| t.kind) {
                Ok(symbols::TypeKind::Enum { values, .. }) => values,
                _ => Vec::new(),
            };
            let list: Vec<String> = values.iter().map(|(n, v)| format!("{n} = {v}")).collect();
            format!(
                "type = {name} {{{}}}{}",
                list.join(", "),
                if stars.is_empty() {
                    String::new()
                } else {
                    format!(" {stars}")
                }
            )
        }
        _ => format!("type = {}", t.name()),
    }
}

/// `set var LVALUE = EXPR` (and `set $x = EXPR`).
pub fn set(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let mut args = inv.args.clone();
    if let [what, value] = args.as_slice()
        && what == "step-library"
    {
        return super::stepping::set_step_library(s, value);
    }
    if args.first().is_some_and(|a| a == "substitute-path") {
        return crate::exec::linux::substitute_path(s, &args[1..]);
    }
    if args.first().is_some_and(|a| a == "language" || a == "lang") {
        let mut st = lock(&s.shared.expr);
        st.language = match args.get(1).map(String::as_str) {
            Some("c") => Some(false),
            Some("rust") => Some(true),
            Some("auto") | Some("local") => None,
            _ => bail!("usage: set language c|rust|auto"),
        };
        return Ok(Output::None);
    }
    let mut text = inv.text();
    if args.first().is_some_and(|a| a == "var" || a == "variable") {
        args.remove(0);
        text = text
            .split_once(char::is_whitespace)
            .map(|(_, r)| r.trim().to_string())
            .unwrap_or_default();
    }
    if text.trim().is_empty() || !text.contains('=') {
        bail!("usage: set var LVALUE = EXPR (or set $name = EXPR)");
    }
    let value = with_eval(
        s,
        |ev| {
            let e = ev.parse(&text)?;
            if !matches!(e.kind, expr::ExprKind::Assign(..)) {
                return Err(expr::Error::at(
                    e.span,
                    "expected an assignment: LVALUE = EXPR",
                ));
            }
            let v = ev.eval(&e)?;
            let text_v = format_value(ev, &v, Format::Natural, true)?;
            Ok(ValueView {
                number: None,
                expr: text.clone(),
                type_name: v.ty.display_name(ev.rust),
                text: text_v,
                address: v.address(),
            })
        },
        &text,
    )?;
    if s.shared.display.render().json {
        return Ok(Output::Value { value });
    }
    Ok(Output::None)
}

/// Evaluates the displays (at a stop, or for `display` without arguments).
pub fn display_lines(shared: &Shared, connected: bool) -> Vec<(u32, String, String)> {
    let displays = lock(&shared.expr).displays.clone();
    let mut out = Vec::new();
    for d in displays {
        let fmt_tag = d.letter.map(|c| format!("/{c} ")).unwrap_or_default();
        let r = with_eval_shared(
            shared,
            connected,
            false,
            |ev| show(ev, &d.expr, d.format, false),
            &d.expr,
        );
        let text = match r {
            Ok(v) => v.text,
            Err(e) => format!("<error: {e}>"),
        };
        out.push((d.id, format!("{fmt_tag}{}", d.expr), text));
    }
    out
}

/// Text for the displays at a stop (`1: x = 5` per line).
pub fn displays_text(shared: &Shared) -> Option<String> {
    if lock(&shared.expr).displays.is_empty() {
        return None;
    }
    let lines: Vec<String> = display_lines(shared, true)
        .into_iter()
        .map(|(id, e, t)| format!("{id}: {e} = {t}"))
        .collect();
    Some(lines.join("\n"))
}

/// `display[/FMT] [EXPR]`.
pub fn display(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let (format, letter) = parse_format(inv.modifier.as_deref(), "display")?;
    let text = inv.text();
    if !text.trim().is_empty() {
        // Check it parses and evaluates now.
        let t = text.clone();
        with_eval(s, |ev| show(ev, &t, format, false).map(|_| ()), &text)?;
        let mut st = lock(&s.shared.expr);
        st.next_display += 1;
        let id = st.next_display;
        st.displays.push(Display {
            id,
            expr: text.clone(),
            format,
            letter,
        });
    }
    let items = display_lines(&s.shared, s.connected() && !s.running())
        .into_iter()
        .filter(|(id, _, _)| {
            text.trim().is_empty()
                || Some(*id) == lock(&s.shared.expr).displays.last().map(|d| d.id)
        })
        .map(|(id, expr, text)| DisplayView { id, expr, text })
        .collect();
    Ok(Output::Displays { displays: items })
}

/// One `display` line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DisplayView {
    pub id: u32,
    pub expr: String,
    pub text: String,
}

/// `undisplay [N...]`.
pub fn undisplay(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let mut st = lock(&s.shared.expr);
    if inv.args.is_empty() {
        let n = st.displays.len();
        st.displays.clear();
        return Ok(Output::Message {
            text: format!("deleted {n} display(s)"),
        });
    }
    let mut ids = Vec::new();
    for a in &inv.args {
        let id: u32 = a
            .parse()
            .map_err(|_| anyhow!("`{a}` is not a display number: `display` lists them"))?;
        if !st.displays.iter().any(|d| d.id == id) {
            bail!("no display {id}: `display` lists them");
        }
        ids.push(id);
    }
    st.displays.retain(|d| !ids.contains(&d.id));
    Ok(Output::Message {
        text: format!(
            "deleted display {}",
            ids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// `info locals` / `info args` with values, in the selected frame.
pub fn info_vars(s: &Session, params: bool) -> Result<Output> {
    if s.running() {
        bail!(
            "`info {}` needs the kernel stopped: use `interrupt` (or Ctrl-C) first",
            if params { "args" } else { "locals" }
        );
    }
    let (function, vars) = with_eval(
        s,
        |ev| {
            let scope = ev.scope().clone();
            let level = ev.frame_inline_level();
            let mut out = Vec::new();
            for v in scope
                .vars
                .iter()
                .filter(|v| v.is_param == params && v.inline_level == level)
            {
                let value = match ev.local(v, expr::Span::default()) {
                    Ok(val) => match format_value(ev, &val, Format::Natural, false) {
                        Ok(t) => t,
                        Err(e) => format!("<error: {}>", e.message),
                    },
                    Err(e) => format!("<error: {}>", e.message),
                };
                out.push(VarView {
                    name: v.name.clone(),
                    type_name: Ty::from_dwarf(ev.elf, v.ty).display_name(ev.rust),
                    value,
                });
            }
            Ok((scope.function.clone(), out))
        },
        "",
    )?;
    Ok(Output::Locals {
        function: function.unwrap_or_else(|| "??".into()),
        params,
        vars,
    })
}

/// Where a located value is, for `info args` (`rdi`, `memory 0x...`).
fn describe_loc(loc: &expr::Loc) -> String {
    match loc {
        expr::Loc::Reg(r) => Register(*r).name(),
        expr::Loc::Mem(a) => format!("memory {a:#x}"),
        expr::Loc::Bits { addr, .. } => format!("memory {addr:#x}"),
        expr::Loc::Bytes(_) => "computed".into(),
        expr::Loc::OptimizedOut => "optimized out".into(),
    }
}

/// `info args` in the selected frame from DWARF: each parameter's
/// location-list entry at that frame's pc, evaluated over its unwound
/// registers (as `print NAME` there). `None` when the function at the pc
/// has no DWARF (the caller falls back to the ABI's entry registers).
pub fn info_args_dwarf(s: &Session) -> Result<Option<Output>> {
    let r = with_eval(
        s,
        |ev| {
            let scope = ev.scope().clone();
            let Some(function) = scope.function.clone() else {
                return Ok(None);
            };
            let level = ev.frame_inline_level();
            let mut args = Vec::new();
            for v in scope
                .vars
                .iter()
                .filter(|v| v.is_param && v.inline_level == level)
            {
                let ty = Ty::from_dwarf(ev.elf, v.ty);
                let (json, text, location) = match ev.local(v, expr::Span::default()) {
                    Ok(val) => {
                        let location = describe_loc(&val.loc);
                        match format_value(ev, &val, Format::Natural, false) {
                            Ok(t) => {
                                let (json, t) = arg_json(ev, &val, t);
                                (json, t, location)
                            }
                            Err(e) => (
                                serde_json::Value::Null,
                                format!("<error: {}>", e.message),
                                location,
                            ),
                        }
                    }
                    Err(e) => (
                        serde_json::Value::Null,
                        format!("<error: {}>", e.message),
                        "unknown".into(),
                    ),
                };
                args.push(crate::output::ArgInfo {
                    name: v.name.clone(),
                    type_name: ty.display_name(ev.rust),
                    location,
                    value: json,
                    text,
                });
            }
            Ok(Some(Output::Args {
                function,
                args,
                note: None,
            }))
        },
        "",
    )?;
    Ok(r)
}

/// The JSON value of an argument (numbers as numbers, strings as strings;
/// byte pointers read as C strings, their text gaining the string as
/// gdb's `char *`), and its text.
fn arg_json(ev: &mut Evaluator<'_>, v: &Value, text: String) -> (serde_json::Value, String) {
    let sp = expr::Span::default();
    match &v.ty {
        Ty::Int {
            kind: expr::IntKind::Bool,
            ..
        } => match ev.scalar(v, sp) {
            Ok(x) => (serde_json::Value::Bool(x != 0), text),
            Err(_) => (serde_json::Value::Null, text),
        },
        Ty::Int { signed, .. } => match ev.scalar(v, sp) {
            Ok(x) if *signed => ((x as i64).into(), text),
            Ok(x) => (x.into(), text),
            Err(_) => (serde_json::Value::Null, text),
        },
        Ty::Ptr { pointee, .. } => {
            let Ok(a) = ev.scalar(v, sp) else {
                return (serde_json::Value::Null, text);
            };
            let bytes = matches!(**pointee, Ty::Int { size: 1, .. });
            if bytes && a != 0 && !text.contains('"') {
                let mut out = Vec::new();
                for chunk in 0..4u64 {
                    let Ok(b) = ev.read(a + chunk * 64, 64, sp) else {
                        break;
                    };
                    match b.iter().position(|c| *c == 0) {
                        Some(z) => {
                            out.extend_from_slice(&b[..z]);
                            break;
                        }
                        None => out.extend(b),
                    }
                }
                let q = crate::events::quote(&out);
                return (
                    String::from_utf8_lossy(&out).into_owned().into(),
                    format!("{text} {q}"),
                );
            }
            (a.into(), text)
        }
        Ty::Float { .. } | Ty::Agg { .. } | Ty::Array { .. } => {
            let t = text.trim_matches('"').to_string();
            (t.into(), text)
        }
        _ => (serde_json::Value::Null, text),
    }
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceLine {
    pub line: u32,
    pub text: String,
    pub current: bool,
}

/// `list [LOC]`: ten lines around a location (default: the stop, then on).
pub fn list(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let arg = inv.args.join(" ");
    let (file, center, current) = if arg.trim().is_empty() {
        let prev = lock(&s.shared.expr).list_at.clone();
        match prev {
            Some((f, next)) => (f, next + 5, None),
            None => {
                if !s.connected() || s.running() {
                    bail!("usage: list LOC (or stop the kernel to list around the pc)");
                }
                let pc = s.registers()?.rip;
                let (f, l) = source_line(s, pc)?;
                (f, l, Some(l))
            }
        }
    } else if let Some((f, l)) = arg.rsplit_once(':')
        && let Ok(n) = l.trim().parse::<u32>()
    {
        let elf = s.shared.elf()?;
        let hits = elf.line_addresses(f.trim(), n).unwrap_or_default();
        drop(elf);
        match hits.first() {
            Some(h) => {
                let (file, _) = source_line(s, h.address)?;
                (file, n, None)
            }
            None => (f.trim().to_string(), n, None),
        }
    } else {
        let r = super::locate::resolve(&s.shared, arg.trim())?;
        let (f, l) = source_line(s, r.addr)?;
        (f, l + 1, None)
    };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        anyhow!(
            "cannot read the source file {file}: {e} (build on this machine, or the source moved)"
        )
    })?;
    let all: Vec<&str> = text.lines().collect();
    let first = center.saturating_sub(5).max(1);
    let last = (first + 9).min(all.len() as u32);
    if first > all.len() as u32 {
        bail!(
            "line {first} is past the end of {file} ({} lines)",
            all.len()
        );
    }
    let lines = (first..=last)
        .map(|n| SourceLine {
            line: n,
            text: all.get(n as usize - 1).unwrap_or(&"").to_string(),
            current: Some(n) == current,
        })
        .collect();
    lock(&s.shared.expr).list_at = Some((file.clone(), last + 1 - 5 + 5));
    Ok(Output::Source { file, lines })
}

fn source_line(s: &Session, addr: u64) -> Result<(String, u32)> {
    let elf = s.shared.elf()?;
    let loc = elf
        .location(addr)
        .ok()
        .flatten()
        .ok_or_else(|| anyhow!("no line information for {addr:#x}"))?;
    Ok((loc.file, loc.line))
}

/// An address from an expression (for `x`, `write`, `info sym`): the
/// value of a pointer or integer, or the address of an lvalue (arrays,
/// structs, functions).
pub fn address_of_expr(s: &Session, text: &str) -> Result<(u64, String)> {
    with_eval(
        s,
        |ev| {
            let e = ev.parse(text)?;
            let v = ev.eval(&e)?;
            let a = match &v.ty {
                Ty::Int { .. } | Ty::Ptr { .. } => ev.scalar(&v, e.span)?,
                _ => v.address().ok_or_else(|| {
                    expr::Error::at(e.span, "value is not in memory and not a pointer")
                })?,
            };
            Ok((a, text.to_string()))
        },
        text,
    )
}

/// Completion inside an expression word: members after `->`/`.`,
/// registers after `$`, else locals, globals and symbols. Returns whole
/// words (the text before the completed name included).
pub fn complete_expr(shared: &Shared, word: &str) -> Vec<String> {
    let frag_start = word
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_' || *c == ':' || *c == '$')
        .last()
        .map_or(word.len(), |(i, _)| i);
    let (prefix, frag) = word.split_at(frag_start);
    let mut names: Vec<String> = Vec::new();
    if let Some(reg) = frag.strip_prefix('$') {
        names.extend(
            expr::eval::REGISTER_NAMES
                .iter()
                .filter(|r| r.starts_with(reg))
                .map(|r| format!("${r}")),
        );
        // Helpers and the per-CPU index.
        names.extend(
            ["str(", "per_cpu(", "cpu"]
                .iter()
                .filter(|h| h.starts_with(reg))
                .map(|h| format!("${h}")),
        );
    } else if let Some(base) = prefix
        .strip_suffix("->")
        .or_else(|| prefix.strip_suffix('.'))
    {
        // The base expression is the text after the last space-free operator start.
        let base_start = base
            .char_indices()
            .rev()
            .find(|(_, c)| matches!(c, '(' | ',' | '=' | '+' | '!' | '&' | '*' | '|' | '<' | '>'))
            .map_or(0, |(i, _)| i + 1);
        let base_expr = &base[base_start..];
        let connected = shared.with_link(|_| ()).is_some();
        let members = with_eval_shared(
            shared,
            connected,
            false,
            |ev| {
                let e = ev.parse(base_expr)?;
                let mut t = ev.type_of(&e)?;
                if let Ty::Ptr { pointee, .. } = t {
                    t = *pointee;
                }
                Ok(ev.member_names(&t))
            },
            base_expr,
        )
        .unwrap_or_default();
        names.extend(members.into_iter().filter(|m| m.starts_with(frag)));
    } else if !frag.is_empty() {
        if let Ok(elf) = shared.elf() {
            names.extend(elf.global_names_with_prefix(frag).into_iter().take(200));
            names.extend(elf.names_with_prefix(frag).take(200).map(str::to_string));
        }
        if let Some(sel) = lock(&shared.expr).selected.clone()
            && let Some(pc) = sel.pc()
            && let Ok(elf) = shared.elf()
            && let Ok(scope) = elf.scope_at(pc)
        {
            names.extend(
                scope
                    .vars
                    .into_iter()
                    .map(|v| v.name)
                    .filter(|n| n.starts_with(frag)),
            );
        }
    }
    names.sort();
    names.dedup();
    names.into_iter().map(|n| format!("{prefix}{n}")).collect()
}
