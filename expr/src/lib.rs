//! kdbg's expression language: C-like expressions over the DWARF types of
//! the kernel, evaluated on the host against a stopped frame.
//!
//! ```text
//! text --lex/parse--> Expr (AST with spans) --Evaluator--> Value --format--> "{id = 3, ...}"
//! ```
//!
//! - [`parse`] gives the syntax tree ([`Expr`]); it needs only a callback that
//!   says which names are types (for `(Request *)p`).
//! - [`Ty`] is the type model, built from `symbols` DWARF types
//!   ([`Ty::from_dwarf`]) or from names in casts ([`Ty::from_name`]).
//! - [`Evaluator`] evaluates an [`Expr`] in the selected frame ([`Frame`]:
//!   pc, registers by DWARF number, CFA, memory), with parameters and locals
//!   from DWARF location lists, globals, registers and convenience variables
//!   ([`Env`]). [`Evaluator::type_of`] types an expression without reading
//!   memory (for `whatis`, `ptype`, and for compilers of the same language).
//! - [`format::format_value`] prints values like gdb (`/x`, `/d`, ...).
//!
//! Errors ([`Error`]) carry the span of the offending part of the input.

pub mod ast;
pub mod compile;
pub mod eval;
pub mod format;
pub mod lex;
pub mod ty;

pub use ast::{BinOp, Expr, ExprKind, TypeName, UnOp, parse};
pub use eval::{Env, Evaluator, Frame, Loc, Value, register_number};
pub use format::{Format, format_value};
pub use lex::Span;
pub use ty::{AggKind, IntKind, Ty};

/// An error with the part of the input it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What went wrong (one line).
    pub message: String,
    /// Where (None when not tied to a part of the input).
    pub span: Option<Span>,
}

impl Error {
    /// An error at `span`.
    pub fn at(span: Span, message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            span: Some(span),
        }
    }
    /// An error without a position.
    pub fn msg(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            span: None,
        }
    }
    /// One line for users: the message, and where in `input` (column and the
    /// text) when the error is about a part of a longer input.
    pub fn render(&self, input: &str) -> String {
        match self.span {
            Some(s)
                if s.end <= input.len() && s.end > 0 && !(s.start == 0 && s.end == input.len()) =>
            {
                let text = &input[s.start..s.end];
                if text.is_empty() {
                    format!("{} (at column {})", self.message, s.start + 1)
                } else {
                    format!("{} (at column {}: '{}')", self.message, s.start + 1, text)
                }
            }
            _ => self.message.clone(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Edit distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `candidates` to `name`, if close enough to suggest.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let max = (name.len() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
