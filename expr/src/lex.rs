//! Tokens with byte spans.

use crate::Error;

/// A byte range in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// From `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// An integer literal (decimal, 0x, 0o, 0b) without a suffix.
    Int(u64),
    /// An integer literal with a C or Rust suffix (`1u`, `2UL`, `3u8`):
    /// its value and the type the suffix gives (`unsigned int`, `u8`).
    TypedInt(u64, &'static str),
    /// A floating-point literal (`1.5`, `1e3`, `.5`, `2.5f`, `1.0f32`) and
    /// its suffix's type, if any (`float`, `f32`, `f64`).
    Float(f64, Option<&'static str>),
    /// A character literal: its value.
    Char(u64),
    /// A string literal: its bytes (no NUL).
    Str(Vec<u8>),
    /// A name or a `::` path (`kernel::workloads::NEXT_PID`).
    Ident(String),
    /// `$name`, `$1`, `$`, `$$`, `$$3`, `$_`: the text after `$`.
    Dollar(String),
    /// An operator or punctuation.
    Punct(&'static str),
    /// End of input.
    End,
}

/// A token and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Where.
    pub span: Span,
}

const PUNCTS: [&str; 38] = [
    "<<=", ">>=", "->", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "++", "--", "+=", "-=",
    "*=", "/=", "+", "-", "*", "/", "%", "&", "|", "^", "~", "!", "<", ">", "?", ":", "(", ")",
    "[", "]", ".", ",", "=",
];

fn escape(bytes: &[u8], i: &mut usize, start: usize) -> Result<u64, Error> {
    // bytes[*i] is the char after the backslash.
    let c = *bytes
        .get(*i)
        .ok_or_else(|| Error::at(Span::new(start, *i), "unterminated escape"))?;
    *i += 1;
    Ok(match c {
        b'n' => 10,
        b't' => 9,
        b'r' => 13,
        b'0' => 0,
        b'a' => 7,
        b'b' => 8,
        b'f' => 12,
        b'v' => 11,
        b'e' => 27,
        b'\\' => 92,
        b'\'' => 39,
        b'"' => 34,
        b'x' => {
            let s = *i;
            while *i < bytes.len() && bytes[*i].is_ascii_hexdigit() && *i - s < 2 {
                *i += 1;
            }
            let t = std::str::from_utf8(&bytes[s..*i]).unwrap_or("");
            u64::from_str_radix(t, 16)
                .map_err(|_| Error::at(Span::new(start, *i), "bad \\x escape"))?
        }
        other => {
            return Err(Error::at(
                Span::new(start, *i),
                format!("unknown escape '\\{}'", other as char),
            ));
        }
    })
}

/// A float literal: value, suffix type, end.
type FloatLit = (f64, Option<&'static str>, usize);

/// A decimal floating-point literal at `i`: its value, suffix type and end;
/// `None` when the text there is an integer.
fn float_literal(input: &str, i: usize) -> Result<Option<FloatLit>, Error> {
    let b = input.as_bytes();
    let digits = |mut j: usize| {
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        j
    };
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X' | b'b' | b'B' | b'o' | b'O')) {
        return Ok(None);
    }
    let mut j = digits(i);
    let mut is_float = false;
    // `3.` and `3.5`, but not `3..` nor `3.field` / `3.method`.
    if b.get(j) == Some(&b'.')
        && !b
            .get(j + 1)
            .is_some_and(|c| *c == b'.' || c.is_ascii_alphabetic() || *c == b'_')
    {
        is_float = true;
        j = digits(j + 1);
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let mut k = j + 1;
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        if b.get(k).is_some_and(u8::is_ascii_digit) {
            is_float = true;
            j = digits(k);
        }
    }
    let mut end = j;
    let mut ty = None;
    for (suf, t) in [
        ("f32", "f32"),
        ("f64", "f64"),
        ("f", "float"),
        ("F", "float"),
        ("l", "double"),
        ("L", "double"),
    ] {
        if input[j..].starts_with(suf)
            && !b
                .get(j + suf.len())
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            if !is_float && !suf.starts_with('f') {
                break;
            }
            is_float = true;
            ty = Some(t);
            end = j + suf.len();
            break;
        }
    }
    if !is_float {
        return Ok(None);
    }
    if b.get(end)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        let mut k = end;
        while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
            k += 1;
        }
        return Err(Error::at(
            Span::new(i, k),
            format!("invalid number '{}'", &input[i..k]),
        ));
    }
    let text: String = input[i..j].chars().filter(|c| *c != '_').collect();
    let v: f64 = text.parse().map_err(|_| {
        Error::at(
            Span::new(i, end),
            format!("invalid number '{}'", &input[i..end]),
        )
    })?;
    Ok(Some((v, ty, end)))
}

/// Splits `input` into tokens (the last is [`Tok::End`]).
pub fn lex(input: &str) -> Result<Vec<Token>, Error> {
    let b = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // A float: digits with a '.' or an exponent (not after '.' or
        // '->': `pair.0.1` is two tuple fields), or '.' then a digit.
        let after_member = matches!(
            out.last(),
            Some(Token {
                tok: Tok::Punct("." | "->"),
                ..
            })
        );
        // `.5` only where an operand may start (not `x.0`, `f().1`).
        let operand_may_start = match out.last() {
            None => true,
            Some(t) => matches!(t.tok, Tok::Punct(p) if p != ")" && p != "]"),
        };
        if !after_member
            && (c.is_ascii_digit()
                || c == b'.' && operand_may_start && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            && let Some((v, ty, j)) = float_literal(input, i)?
        {
            out.push(Token {
                tok: Tok::Float(v, ty),
                span: Span::new(start, j),
            });
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            let (radix, mut j) = match (c, b.get(i + 1)) {
                (b'0', Some(b'x' | b'X')) => (16, i + 2),
                (b'0', Some(b'o' | b'O')) => (8, i + 2),
                (b'0', Some(b'b' | b'B')) => (2, i + 2),
                _ => (10, i),
            };
            let ds = j;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let text: String = input[ds..j].chars().filter(|c| *c != '_').collect();
            // C/Rust suffixes (u, l, ul, ull, u64, i32, usize...).
            let digits_end = text
                .char_indices()
                .find(|(_, ch)| !ch.is_digit(radix))
                .map_or(text.len(), |(k, _)| k);
            let (digits, suffix) = text.split_at(digits_end);
            let rust_suffix = [
                "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "usize", "isize",
            ]
            .into_iter()
            .find(|r| *r == suffix);
            let c_suffix = match suffix.to_ascii_lowercase().as_str() {
                "" => Some(""),
                "u" => Some("u"),
                "l" | "ll" => Some("l"),
                "ul" | "lu" | "ull" | "llu" => Some("ul"),
                _ => None,
            };
            let radix_c = radix == 10 && digits.len() > 1 && digits.starts_with('0');
            let (digits, radix) = if radix_c {
                (&digits[1..], 8)
            } else {
                (digits, radix)
            };
            if digits.is_empty() && !radix_c || rust_suffix.is_none() && c_suffix.is_none() {
                return Err(Error::at(
                    Span::new(start, j),
                    format!("invalid number '{}'", &input[start..j]),
                ));
            }
            let v = u64::from_str_radix(if digits.is_empty() { "0" } else { digits }, radix)
                .map_err(|_| {
                    Error::at(
                        Span::new(start, j),
                        format!("number '{}' does not fit in 64 bits", &input[start..j]),
                    )
                })?;
            let tok = match (rust_suffix, c_suffix) {
                (Some(r), _) => Tok::TypedInt(v, r),
                (None, Some("u")) if v <= u64::from(u32::MAX) => Tok::TypedInt(v, "unsigned int"),
                (None, Some("l")) if v <= i64::MAX as u64 => Tok::TypedInt(v, "long"),
                (None, Some("u" | "l" | "ul")) => Tok::TypedInt(v, "unsigned long"),
                _ => Tok::Int(v),
            };
            out.push(Token {
                tok,
                span: Span::new(start, j),
            });
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            loop {
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                // `a::b` paths.
                if b.get(j) == Some(&b':')
                    && b.get(j + 1) == Some(&b':')
                    && b.get(j + 2)
                        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                {
                    j += 2;
                    continue;
                }
                break;
            }
            out.push(Token {
                tok: Tok::Ident(input[i..j].to_string()),
                span: Span::new(start, j),
            });
            i = j;
            continue;
        }
        if c == b'$' {
            let mut j = i + 1;
            if b.get(j) == Some(&b'$') {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            } else {
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
            }
            out.push(Token {
                tok: Tok::Dollar(input[i + 1..j].to_string()),
                span: Span::new(start, j),
            });
            i = j;
            continue;
        }
        if c == b'\'' {
            let mut j = i + 1;
            let v = match b.get(j) {
                Some(b'\\') => {
                    j += 1;
                    escape(b, &mut j, start)?
                }
                Some(_) => {
                    let ch = input[j..].chars().next().unwrap_or('\0');
                    j += ch.len_utf8();
                    u64::from(ch)
                }
                None => return Err(Error::at(Span::new(start, j), "unterminated character")),
            };
            if b.get(j) != Some(&b'\'') {
                return Err(Error::at(
                    Span::new(start, j),
                    "unterminated character literal",
                ));
            }
            out.push(Token {
                tok: Tok::Char(v),
                span: Span::new(start, j + 1),
            });
            i = j + 1;
            continue;
        }
        if c == b'"' {
            let mut j = i + 1;
            let mut s = Vec::new();
            loop {
                match b.get(j) {
                    None => {
                        return Err(Error::at(
                            Span::new(start, j),
                            "unterminated string literal",
                        ));
                    }
                    Some(b'"') => break,
                    Some(b'\\') => {
                        j += 1;
                        let v = escape(b, &mut j, start)?;
                        s.push(v as u8);
                    }
                    Some(x) => {
                        s.push(*x);
                        j += 1;
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                span: Span::new(start, j + 1),
            });
            i = j + 1;
            continue;
        }
        let Some(p) = PUNCTS.iter().find(|p| input[i..].starts_with(**p)) else {
            let ch = input[i..].chars().next().unwrap_or('?');
            return Err(Error::at(
                Span::new(start, start + ch.len_utf8()),
                format!("unexpected character '{ch}'"),
            ));
        };
        out.push(Token {
            tok: Tok::Punct(p),
            span: Span::new(start, start + p.len()),
        });
        i += p.len();
    }
    out.push(Token {
        tok: Tok::End,
        span: Span::new(b.len(), b.len()),
    });
    Ok(out)
}
