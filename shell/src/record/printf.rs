//! Per-probe output formats: `... printf "open %s -> %d" path ret`, the
//! subset of bpftrace's `printf` that makes sense for one line per event.
//!
//! The kernel captures values (the probe's capture layout); the shell
//! formats them. A format is checked when the probe is set (conversions,
//! argument count, names, number-vs-string), so an event never fails to
//! format; a value the kernel could not read shows as its text
//! (`<fault@0x10>`) whatever the conversion.
//!
//! Format: `%d %i %u %x %X %o %c %s %p %%` with flags `- 0 + space #`,
//! a width and a precision (`%-20s`, `%08x`, `%.3s`); C length modifiers
//! (`%ld`, `%llu`, `%zx`, `%hhd`) are accepted and ignored. Escapes `\n`
//! `\t` `\\` `\"`; a trailing `\n` is dropped (each event is one line).
//!
//! Arguments are expressions over the captured values, separated by
//! spaces or commas: a capture label (`path`, `regs->ip`, `*parent_tid`),
//! `ret`, `$duration` (ns when the TSC rate is known, else cycles),
//! `$task`, `$comm`, `$cpu`, `$probe`, `$tsc`, `$func`, `$arg0`..`$arg5`
//! (or `%rdi`..`%r9`: the argument registers at the hit), integer
//! literals, `( )`, unary `- ~ !`, and the binary operators
//! `* / % + - << >> & ^ | == != < <= > >= && ||` with C precedence.
//! Strings can only be printed (`%s`), not computed with.

use std::fmt::Write as _;

use serde::Serialize;

use crate::events::EventView;

/// A checked format and its arguments.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Format {
    /// The format as given (escapes unprocessed).
    pub format: String,
    /// The argument expressions as given.
    pub args: Vec<String>,
    #[serde(skip)]
    pieces: Vec<Piece>,
    #[serde(skip)]
    exprs: Vec<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Conv(Spec),
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Spec {
    minus: bool,
    zero: bool,
    plus: bool,
    space: bool,
    alt: bool,
    width: Option<usize>,
    precision: Option<usize>,
    conv: char,
}

impl Spec {
    fn wants_number(&self) -> bool {
        self.conv != 's'
    }
    fn text(&self) -> String {
        format!("%{}", self.conv)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(i128),
    Name(String),
    Unary(char, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
}

/// What a name is, for checking a format when the probe is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Text,
}

/// One value at formatting time.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i128),
    Str(String),
    /// Not available (a fault, an optimized-out value): shown as its text.
    Missing(String),
}

const CONVERSIONS: &str = "%d %i %u %x %X %o %c %s %p %%";

/// A printf's format and its argument words.
pub type PrintfWords = (String, Vec<String>);

/// Splits `... printf "FMT" ARGS...` off a probe command's words (the
/// `if EXPR` part already removed): returns the words before `printf` and
/// the format with its argument words.
pub fn split(args: &[String]) -> anyhow::Result<(Vec<String>, Option<PrintfWords>)> {
    let Some(i) = args.iter().position(|a| a == "printf") else {
        return Ok((args.to_vec(), None));
    };
    let Some(fmt) = args.get(i + 1) else {
        anyhow::bail!(
            "printf needs a format: printf \"FORMAT\" ARGS... (e.g. printf \"open %s -> %d\" path ret)"
        );
    };
    Ok((
        args[..i].to_vec(),
        Some((fmt.clone(), args[i + 2..].to_vec())),
    ))
}

/// The names a printf's arguments use that are not built in (`$...`,
/// `ret`, registers): capture labels the probe must capture.
pub fn capture_names(f: &Format) -> Vec<String> {
    let mut out = Vec::new();
    for e in &f.exprs {
        names_in(e, &mut out);
    }
    out.retain(|n| builtin(n).is_none());
    out
}

fn names_in(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Num(_) => {}
        Expr::Name(n) => {
            if !out.contains(n) {
                out.push(n.clone())
            }
        }
        Expr::Unary(_, a) => names_in(a, out),
        Expr::Binary(_, a, b) => {
            names_in(a, out);
            names_in(b, out);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Ret,
    Duration,
    Task,
    Comm,
    Cpu,
    Probe,
    Tsc,
    Func,
    Arg(usize),
}

const REGS: [&str; 6] = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"];

fn builtin(name: &str) -> Option<Builtin> {
    Some(match name {
        "ret" | "retval" | "$retval" | "$ret" => Builtin::Ret,
        "$duration" => Builtin::Duration,
        "$task" | "tid" | "$tid" => Builtin::Task,
        "$comm" | "comm" => Builtin::Comm,
        "$cpu" | "cpu" => Builtin::Cpu,
        "$probe" => Builtin::Probe,
        "$tsc" => Builtin::Tsc,
        "$func" | "func" => Builtin::Func,
        _ => {
            if let Some(n) = name
                .strip_prefix("$arg")
                .or_else(|| name.strip_prefix("arg"))
                && let Ok(i) = n.parse::<usize>()
                && i < 6
            {
                return Some(Builtin::Arg(i));
            }
            let reg = name.strip_prefix('%').or_else(|| name.strip_prefix('$'))?;
            return REGS.iter().position(|r| *r == reg).map(Builtin::Arg);
        }
    })
}

/// The builtin names, for error messages.
pub const BUILTINS: &str =
    "ret, $duration, $task, $comm, $cpu, $probe, $tsc, $func, $arg0..$arg5, %rdi..%r9";

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(o) => return Err(format!("`\\{o}` is not an escape: use \\n \\t \\\\ \\\"")),
            None => return Err("the format ends in a lone `\\`".into()),
        }
    }
    if out.ends_with('\n') {
        out.pop();
    }
    Ok(out)
}

fn parse_format(text: &str) -> Result<Vec<Piece>, String> {
    let s = unescape(text)?;
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        if it.peek() == Some(&'%') {
            it.next();
            lit.push('%');
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = it.peek() {
            match f {
                '-' => spec.minus = true,
                '0' => spec.zero = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '#' => spec.alt = true,
                _ => break,
            }
            it.next();
        }
        let digits = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                it.next();
            }
            n
        };
        spec.width = digits(&mut it);
        if it.peek() == Some(&'.') {
            it.next();
            spec.precision = Some(digits(&mut it).unwrap_or(0));
        }
        if spec.width.is_some_and(|w| w > 256) || spec.precision.is_some_and(|p| p > 256) {
            return Err("a width or precision above 256 is not supported".into());
        }
        while let Some(&l) = it.peek() {
            if matches!(l, 'h' | 'l' | 'z' | 'j' | 't' | 'L') {
                it.next();
            } else {
                break;
            }
        }
        let Some(conv) = it.next() else {
            return Err(format!(
                "the format ends inside a conversion (`%` at the end): write %% for a percent sign; conversions: {CONVERSIONS}"
            ));
        };
        if !"diuxXocsp".contains(conv) {
            return Err(format!(
                "`%{conv}` is not a conversion printf knows: use {CONVERSIONS}"
            ));
        }
        spec.conv = conv;
        if !lit.is_empty() {
            pieces.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        pieces.push(Piece::Conv(spec));
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

// ---- expressions ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(i128),
    Name(String),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

const OPS: [&str; 21] = [
    "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "%", "&", "|", "^", "<",
    ">", "~", "!", "=",
];

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    // An operand may start here (so `%rdi` and `*p` are names, not operators).
    let operand_next = |out: &Vec<Tok>| {
        matches!(
            out.last(),
            None | Some(Tok::Op(_)) | Some(Tok::Open) | Some(Tok::Comma)
        )
    };
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '(' || c == ')' || c == ',' {
            out.push(match c {
                '(' => Tok::Open,
                ')' => Tok::Close,
                _ => Tok::Comma,
            });
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i] as char).is_ascii_alphanumeric() {
                i += 1;
            }
            let t = &s[start..i];
            let v = crate::cmd::parse::number(t).map_err(|e| e.to_string())?;
            out.push(Tok::Num(i128::from(v)));
            continue;
        }
        // `%rdi` after a space is a register even where an operator could
        // be (`n %rdi` is two arguments; `n % rdi` is a remainder).
        let reg_after_space = c == '%'
            && i > 0
            && (b[i - 1] as char).is_whitespace()
            && REGS.iter().any(|r| {
                s[i + 1..].starts_with(r)
                    && !s[i + 1 + r.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            });
        let sigil = ((c == '%' || c == '*') && operand_next(&out)) || reg_after_space;
        if c.is_ascii_alphabetic() || c == '_' || c == '$' || sigil {
            let start = i;
            i += 1;
            let ident = |i: &mut usize| {
                while *i < b.len() && ((b[*i] as char).is_ascii_alphanumeric() || b[*i] == b'_') {
                    *i += 1;
                }
            };
            ident(&mut i);
            // Member paths, as capture labels write them: p->a.b
            loop {
                if s[i..].starts_with("->")
                    && s[i + 2..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                {
                    i += 2;
                } else if s[i..].starts_with('.')
                    && s[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                {
                    i += 1;
                } else {
                    break;
                }
                ident(&mut i);
            }
            out.push(Tok::Name(s[start..i].to_string()));
            continue;
        }
        let Some(op) = OPS.iter().find(|o| s[i..].starts_with(**o)) else {
            return Err(format!("unexpected `{c}`"));
        };
        if *op == "=" {
            return Err("`=` assigns nothing here: compare with ==".into());
        }
        out.push(Tok::Op(op));
        i += op.len();
    }
    Ok(out)
}

fn prec(op: &str) -> Option<u8> {
    Some(match op {
        "*" | "/" | "%" => 10,
        "+" | "-" => 9,
        "<<" | ">>" => 8,
        "<" | "<=" | ">" | ">=" => 7,
        "==" | "!=" => 6,
        "&" => 5,
        "^" => 4,
        "|" => 3,
        "&&" => 2,
        "||" => 1,
        _ => return None,
    })
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Name(n)) => Ok(Expr::Name(n)),
            Some(Tok::Open) => {
                let e = self.expr(0)?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("a `(` is not closed".into()),
                }
            }
            Some(Tok::Op(o @ ("-" | "~" | "!"))) => {
                let c = o.chars().next().unwrap_or('-');
                Ok(Expr::Unary(c, Box::new(self.primary()?)))
            }
            Some(t) => Err(format!("expected a value, found {}", tok_text(&t))),
            None => Err("an expression ends early".into()),
        }
    }
    fn expr(&mut self, min: u8) -> Result<Expr, String> {
        let mut lhs = self.primary()?;
        while let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            let Some(p) = prec(op) else { break };
            if p < min {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(p + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("`{n}`"),
        Tok::Name(n) => format!("`{n}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::Open => "`(`".into(),
        Tok::Close => "`)`".into(),
        Tok::Comma => "`,`".into(),
    }
}

/// Expressions separated by commas or by juxtaposition (`path ret`).
fn parse_args(words: &[String]) -> Result<(Vec<Expr>, Vec<String>), String> {
    let text = words.join(" ");
    let toks = lex(&text)?;
    let mut p = Parser { toks, pos: 0 };
    let mut exprs = Vec::new();
    let mut start_pos = 0;
    let mut texts = Vec::new();
    let spans = token_spans(&text);
    while p.peek().is_some() {
        if p.peek() == Some(&Tok::Comma) {
            p.pos += 1;
            start_pos = p.pos;
            continue;
        }
        let e = p.expr(0)?;
        if let Some(t @ (Tok::Close | Tok::Op(_))) = p.peek() {
            return Err(format!("unexpected {}", tok_text(t)));
        }
        let (a, b) = (
            spans.get(start_pos).map(|s| s.0).unwrap_or(0),
            spans
                .get(p.pos.saturating_sub(1))
                .map(|s| s.1)
                .unwrap_or(text.len()),
        );
        texts.push(text.get(a..b).unwrap_or_default().to_string());
        exprs.push(e);
        start_pos = p.pos;
    }
    Ok((exprs, texts))
}

/// Byte spans of the tokens `lex` makes (same walk, positions only).
fn token_spans(s: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    // Lex once and find each token's text in order.
    let Ok(toks) = lex(s) else { return spans };
    let mut at = 0;
    for t in &toks {
        let needle = match t {
            Tok::Num(_) => None,
            Tok::Name(n) => Some(n.clone()),
            Tok::Op(o) => Some(o.to_string()),
            Tok::Open => Some("(".into()),
            Tok::Close => Some(")".into()),
            Tok::Comma => Some(",".into()),
        };
        let rest = &s[at..];
        let skip = rest.len() - rest.trim_start().len();
        let begin = at + skip;
        let len = match needle {
            Some(n) => n.len(),
            None => s[begin..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(s.len() - begin),
        };
        spans.push((begin, begin + len));
        at = begin + len;
    }
    spans
}

impl Format {
    /// Parses a format and its argument words; `kind_of` says what each
    /// name is for this probe (`None`: not available, with the list of
    /// names that are in `names_help`).
    pub fn parse(
        format: &str,
        args: &[String],
        kind_of: &dyn Fn(&str) -> Option<Kind>,
        names_help: &str,
    ) -> Result<Format, String> {
        let pieces = parse_format(format).map_err(|e| format!("printf: {e}"))?;
        let (exprs, texts) = parse_args(args).map_err(|e| format!("printf arguments: {e}"))?;
        let convs: Vec<&Spec> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Conv(s) => Some(s),
                Piece::Lit(_) => None,
            })
            .collect();
        if convs.len() != exprs.len() {
            let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
            return Err(format!(
                "printf: the format has {} but {} given",
                plural(convs.len(), "conversion"),
                match exprs.len() {
                    0 => "no argument was".to_string(),
                    1 => "1 argument was".to_string(),
                    n => format!("{n} arguments were"),
                }
            ));
        }
        for ((spec, e), text) in convs.iter().zip(&exprs).zip(&texts) {
            let k = check(e, kind_of, names_help)?;
            if k == Kind::Text && spec.wants_number() {
                return Err(format!(
                    "printf: {} needs a number, but `{text}` is a string (use %s)",
                    spec.text()
                ));
            }
        }
        Ok(Format {
            format: format.to_string(),
            args: texts,
            pieces,
            exprs,
        })
    }

    /// The line for one event.
    pub fn render(&self, v: &EventView, raw_args: &[u64; 6]) -> String {
        let mut out = String::new();
        let mut args = self.exprs.iter();
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Conv(spec) => {
                    let val = args
                        .next()
                        .map(|e| eval(e, v, raw_args))
                        .unwrap_or(Val::Missing(String::new()));
                    out.push_str(&convert(spec, &val));
                }
            }
        }
        out
    }
}

fn check(e: &Expr, kind_of: &dyn Fn(&str) -> Option<Kind>, help: &str) -> Result<Kind, String> {
    match e {
        Expr::Num(_) => Ok(Kind::Number),
        Expr::Name(n) => match builtin(n) {
            Some(Builtin::Comm | Builtin::Func) => Ok(Kind::Text),
            Some(b @ (Builtin::Ret | Builtin::Duration)) => kind_of(if b == Builtin::Ret {
                "ret"
            } else {
                "$duration"
            })
            .ok_or_else(|| format!("printf: `{n}` is only known at a return: use a kretprobe")),
            Some(_) => Ok(Kind::Number),
            None => kind_of(n).ok_or_else(|| {
                format!("printf: `{n}` is not a value this probe captures: use {help}")
            }),
        },
        Expr::Unary(_, a) => operand(a, kind_of, help),
        Expr::Binary(_, a, b) => {
            operand(a, kind_of, help)?;
            operand(b, kind_of, help)
        }
    }
}

fn operand(e: &Expr, kind_of: &dyn Fn(&str) -> Option<Kind>, help: &str) -> Result<Kind, String> {
    match check(e, kind_of, help)? {
        Kind::Number => Ok(Kind::Number),
        Kind::Text => Err(format!(
            "printf: `{}` is a string: it can be printed with %s but not computed with",
            match e {
                Expr::Name(n) => n.as_str(),
                _ => "the value",
            }
        )),
    }
}

fn value_of_json(v: &serde_json::Value, text: &str) -> Val {
    if let Some(i) = v.as_i64() {
        Val::Int(i128::from(i))
    } else if let Some(u) = v.as_u64() {
        Val::Int(i128::from(u))
    } else if let Some(b) = v.as_bool() {
        Val::Int(i128::from(b))
    } else if let Some(s) = v.as_str() {
        Val::Str(s.to_string())
    } else {
        Val::Missing(text.to_string())
    }
}

fn lookup(name: &str, v: &EventView, raw: &[u64; 6]) -> Val {
    match builtin(name) {
        Some(Builtin::Ret) => match &v.ret {
            Some(r) => value_of_json(&r.value, &r.text),
            None => Val::Missing("<no ret>".into()),
        },
        Some(Builtin::Duration) => match (v.duration_ns, v.duration_tsc) {
            (Some(ns), _) => Val::Int(ns.round() as i128),
            (None, Some(t)) => Val::Int(i128::from(t)),
            _ => Val::Missing("<no duration>".into()),
        },
        Some(Builtin::Task) => Val::Int(i128::from(v.task)),
        Some(Builtin::Comm) => Val::Str(
            v.task_name
                .clone()
                .unwrap_or_else(|| format!("task{}", v.task)),
        ),
        Some(Builtin::Cpu) => Val::Int(i128::from(v.cpu)),
        Some(Builtin::Probe) => Val::Int(i128::from(v.probe)),
        Some(Builtin::Tsc) => Val::Int(i128::from(v.tsc)),
        Some(Builtin::Func) => Val::Str(v.function.clone()),
        Some(Builtin::Arg(i)) => Val::Int(i128::from(raw.get(i).copied().unwrap_or(0))),
        None => match v.args.iter().find(|a| a.name == name) {
            Some(a) => value_of_json(&a.value, &a.text),
            None => Val::Missing(format!("<no {name}>")),
        },
    }
}

fn eval(e: &Expr, v: &EventView, raw: &[u64; 6]) -> Val {
    let int = |e: &Expr| match eval(e, v, raw) {
        Val::Int(i) => Ok(i),
        Val::Str(s) => Err(Val::Missing(format!("\"{s}\""))),
        m @ Val::Missing(_) => Err(m),
    };
    match e {
        Expr::Num(n) => Val::Int(*n),
        Expr::Name(n) => lookup(n, v, raw),
        Expr::Unary(op, a) => match int(a) {
            Ok(x) => Val::Int(match op {
                '-' => x.wrapping_neg(),
                '~' => !(x as i64) as i128,
                _ => i128::from(x == 0),
            }),
            Err(m) => m,
        },
        Expr::Binary(op, a, b) => {
            let (x, y) = match (int(a), int(b)) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(m), _) | (_, Err(m)) => return m,
            };
            let sh = |y: i128| u32::try_from(y.clamp(0, 127)).unwrap_or(0);
            Val::Int(match *op {
                "+" => x.wrapping_add(y),
                "-" => x.wrapping_sub(y),
                "*" => x.wrapping_mul(y),
                "/" | "%" if y == 0 => return Val::Missing("<division by zero>".into()),
                "/" => x.wrapping_div(y),
                "%" => x.wrapping_rem(y),
                "<<" => x.wrapping_shl(sh(y)),
                ">>" => x.wrapping_shr(sh(y)),
                "&" => x & y,
                "|" => x | y,
                "^" => x ^ y,
                "<" => i128::from(x < y),
                "<=" => i128::from(x <= y),
                ">" => i128::from(x > y),
                ">=" => i128::from(x >= y),
                "==" => i128::from(x == y),
                "!=" => i128::from(x != y),
                "&&" => i128::from(x != 0 && y != 0),
                _ => i128::from(x != 0 || y != 0),
            })
        }
    }
}

fn pad(spec: &Spec, body: String, numeric: bool) -> String {
    let Some(w) = spec.width else { return body };
    let len = body.chars().count();
    if len >= w {
        return body;
    }
    let fill = w - len;
    if spec.minus {
        format!("{body}{}", " ".repeat(fill))
    } else if spec.zero && numeric && spec.precision.is_none() {
        // Zeros go after a sign or 0x prefix.
        let split = if body.starts_with(['-', '+', ' ']) {
            1
        } else if body.starts_with("0x") || body.starts_with("0X") {
            2
        } else {
            0
        };
        format!("{}{}{}", &body[..split], "0".repeat(fill), &body[split..])
    } else {
        format!("{}{body}", " ".repeat(fill))
    }
}

fn convert(spec: &Spec, v: &Val) -> String {
    let i = match v {
        Val::Missing(t) => return pad(spec, t.clone(), false),
        Val::Str(s) => {
            let s: String = match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            };
            return pad(spec, s, false);
        }
        Val::Int(i) => *i,
    };
    let u = i as u64;
    let mut body = String::new();
    match spec.conv {
        'd' | 'i' => {
            if i >= 0 {
                if spec.plus {
                    body.push('+');
                } else if spec.space {
                    body.push(' ');
                }
            }
            let _ = write!(body, "{i}");
        }
        'u' => {
            let _ = write!(body, "{u}");
        }
        'x' | 'p' => {
            let _ = write!(
                body,
                "{}{u:x}",
                if spec.alt || spec.conv == 'p' {
                    "0x"
                } else {
                    ""
                }
            );
        }
        'X' => {
            let _ = write!(body, "{}{u:X}", if spec.alt { "0X" } else { "" });
        }
        'o' => {
            let _ = write!(body, "{}{u:o}", if spec.alt { "0" } else { "" });
        }
        'c' => body.push(char::from((u & 0xff) as u8)),
        _ => {
            let _ = write!(body, "{i}");
        }
    }
    pad(spec, body, spec.conv != 'c')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ValueView, sample};

    fn kinds(n: &str) -> Option<Kind> {
        match n {
            "path" => Some(Kind::Text),
            "flags" | "mode" | "n" | "regs->ip" | "*parent_tid" | "ret" | "$duration" => {
                Some(Kind::Number)
            }
            _ => None,
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn fmt(f: &str, args: &str) -> Result<Format, String> {
        Format::parse(f, &words(args), &kinds, "path, flags, mode")
    }

    fn open_event(path: &str, ret: i64) -> EventView {
        let arg = |name: &str, value: serde_json::Value, text: &str| ValueView {
            name: name.into(),
            type_name: "t".into(),
            value,
            text: text.into(),
        };
        EventView {
            seq: 1,
            probe: 2,
            kind: "kretprobe",
            tsc: 99,
            task: 3,
            task_name: Some("opener".into()),
            function: "sys_open".into(),
            addr: 0x1000,
            args: vec![
                arg("path", path.into(), ""),
                arg("flags", 1.into(), "0x1"),
                arg("mode", 0o644.into(), "420"),
                arg("regs->ip", serde_json::Value::Null, "<fault@0x10>"),
            ],
            ret: Some(sample::ret(ret)),
            duration_ns: Some(1234.4),
            duration_tsc: Some(2468),
            ..EventView::default()
        }
    }

    /// Expected outputs of formats over one event.
    #[test]
    fn renders_bpftrace_formats() {
        let ev = open_event("/etc/missing", -2);
        let raw = [0x10, 0x20, 0x30, 0, 0, 0xff];
        let cases: &[(&str, &str, &str)] = &[
            ("open %s -> %d", "path ret", "open /etc/missing -> -2"),
            ("open %s -> %d\\n", "path, ret", "open /etc/missing -> -2"),
            ("%-14s|%5d|", "path ret", "/etc/missing  |   -2|"),
            ("%.4s", "path", "/etc"),
            (
                "%x %#x %X %o %#o",
                "flags flags 255 mode mode",
                "1 0x1 FF 644 0644",
            ),
            (
                "%08x|%-4u|%+d|% d",
                "mode flags flags flags",
                "000001a4|1   |+1| 1",
            ),
            ("%u", "ret", "18446744073709551614"),
            ("%ld %llu %zx %hhd", "flags flags mode flags", "1 1 1a4 1"),
            ("%d%%", "flags * 100 / 4", "25%"),
            ("%d", "(ret + 2) * -3 == 0 && !0", "1"),
            ("%d", "1 << 4 | 3 ^ 1", "18"),
            ("%d %d", "ret -1", "-3 %d"),
            (
                "%s on cpu%d by %s[%d] in %s",
                "path $cpu $comm $task $func",
                "/etc/missing on cpu0 by opener[3] in sys_open",
            ),
            ("%d ns, %d", "$duration $probe", "1234 ns, 2"),
            ("%p %d %c", "%rdi $arg1 65", "0x10 32 A"),
            ("%x", "%r9 & 0xf0", "f0"),
            (
                "[%s] [%d]",
                "regs->ip regs->ip",
                "[<fault@0x10>] [<fault@0x10>]",
            ),
            ("%d", "flags / 0", "<division by zero>"),
            ("tab\\there \\\"q\\\" \\\\", "", "tab\there \"q\" \\"),
        ];
        for (f, a, want) in cases {
            // `ret -1` is one expression (a subtraction): two conversions,
            // one argument is an error; use a comma for two.
            if *a == "ret -1" {
                assert_eq!(
                    fmt(f, a).unwrap_err(),
                    "printf: the format has 2 conversions but 1 argument was given"
                );
                let got = fmt(f, "ret, -1").unwrap().render(&ev, &raw);
                assert_eq!(got, "-2 -1");
                continue;
            }
            let got = fmt(f, a)
                .unwrap_or_else(|e| panic!("{f} {a}: {e}"))
                .render(&ev, &raw);
            assert_eq!(got, *want, "format {f:?} args {a:?}");
        }
    }

    /// One clear error per bad input.
    #[test]
    fn refuses_bad_formats() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "%q",
                "n",
                "printf: `%q` is not a conversion printf knows: use %d %i %u %x %X %o %c %s %p %%",
            ),
            (
                "100%",
                "",
                "printf: the format ends inside a conversion (`%` at the end): write %% for a percent sign; conversions: %d %i %u %x %X %o %c %s %p %%",
            ),
            (
                "%d %d",
                "n",
                "printf: the format has 2 conversions but 1 argument was given",
            ),
            (
                "%d",
                "",
                "printf: the format has 1 conversion but no argument was given",
            ),
            (
                "%d",
                "n n",
                "printf: the format has 1 conversion but 2 arguments were given",
            ),
            (
                "%d",
                "path",
                "printf: %d needs a number, but `path` is a string (use %s)",
            ),
            (
                "%d",
                "path + 1",
                "printf: `path` is a string: it can be printed with %s but not computed with",
            ),
            (
                "%s",
                "nope",
                "printf: `nope` is not a value this probe captures: use path, flags, mode",
            ),
            ("%d", "(n", "printf arguments: a `(` is not closed"),
            (
                "%d",
                "n = 1",
                "printf arguments: `=` assigns nothing here: compare with ==",
            ),
            (
                "\\q",
                "",
                "printf: `\\q` is not an escape: use \\n \\t \\\\ \\\"",
            ),
            (
                "%999d",
                "n",
                "printf: a width or precision above 256 is not supported",
            ),
            ("%d", "n )", "printf arguments: unexpected `)`"),
        ];
        for (f, a, want) in cases {
            assert_eq!(fmt(f, a).unwrap_err(), *want, "format {f:?} args {a:?}");
        }
        let only_ret = |n: &str| (n == "n").then_some(Kind::Number);
        assert_eq!(
            Format::parse("%d", &words("ret"), &only_ret, "n").unwrap_err(),
            "printf: `ret` is only known at a return: use a kretprobe"
        );
    }

    #[test]
    fn splits_and_names() {
        let w = words("path:string flags printf x y z");
        let (rest, p) = split(&w).unwrap();
        assert_eq!(rest, words("path:string flags"));
        assert_eq!(p, Some(("x".into(), words("y z"))));
        assert!(
            split(&words("a printf"))
                .unwrap_err()
                .to_string()
                .contains("printf needs a format")
        );
        let f = fmt("%s %d %d %x", "path regs->ip ret + n %rdi").unwrap();
        assert_eq!(capture_names(&f), vec!["path", "regs->ip", "n"]);
        assert_eq!(f.args, vec!["path", "regs->ip", "ret + n", "%rdi"]);
    }
}
