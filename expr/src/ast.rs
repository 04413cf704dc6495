//! The syntax tree and the parser (C precedence and associativity).

use crate::Error;
use crate::lex::{Span, Tok, Token, lex};

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `+x`
    Plus,
    /// `~x`
    Not,
    /// `!x`
    LNot,
    /// `*x`
    Deref,
    /// `&x`
    AddrOf,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Shl,
    Shr,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    BitAnd,
    BitXor,
    BitOr,
    LAnd,
    LOr,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::BitAnd => "&",
            BinOp::BitXor => "^",
            BinOp::BitOr => "|",
            BinOp::LAnd => "&&",
            BinOp::LOr => "||",
        }
    }
    fn from_punct(p: &str) -> Option<(BinOp, u8)> {
        Some(match p {
            "||" => (BinOp::LOr, 1),
            "&&" => (BinOp::LAnd, 2),
            "|" => (BinOp::BitOr, 3),
            "^" => (BinOp::BitXor, 4),
            "&" => (BinOp::BitAnd, 5),
            "==" => (BinOp::Eq, 6),
            "!=" => (BinOp::Ne, 6),
            "<" => (BinOp::Lt, 7),
            "<=" => (BinOp::Le, 7),
            ">" => (BinOp::Gt, 7),
            ">=" => (BinOp::Ge, 7),
            "<<" => (BinOp::Shl, 8),
            ">>" => (BinOp::Shr, 8),
            "+" => (BinOp::Add, 9),
            "-" => (BinOp::Sub, 9),
            "*" => (BinOp::Mul, 10),
            "/" => (BinOp::Div, 10),
            "%" => (BinOp::Rem, 10),
            _ => return None,
        })
    }
}

/// A type as written in a cast, `sizeof` or `container_of`:
/// `struct Request`, `unsigned long`, `u32`, `kernel::workloads::Request`,
/// followed by `ptr` stars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeName {
    /// The base name, words joined by one space.
    pub base: String,
    /// Number of `*`.
    pub ptr: u32,
    /// Where.
    pub span: Span,
}

impl std::fmt::Display for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)?;
        if self.ptr > 0 {
            f.write_str(" ")?;
            for _ in 0..self.ptr {
                f.write_str("*")?;
            }
        }
        Ok(())
    }
}

/// An expression node.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is in the input.
    pub span: Span,
}

/// The expression forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// Integer literal.
    Int(u64),
    /// Floating-point literal (`double` / `f64`; suffixed literals are a
    /// cast of this).
    Float(f64),
    /// Character literal.
    Char(u64),
    /// String literal.
    Str(Vec<u8>),
    /// A variable, function or path.
    Name(String),
    /// `$reg`, `$N`, `$`, `$$N`, `$_`, `$user`.
    Dollar(String),
    /// Unary operator.
    Unary(UnOp, Box<Expr>),
    /// Binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `lhs = rhs`.
    Assign(Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `(type) x`.
    Cast(TypeName, Box<Expr>),
    /// `sizeof(type)`.
    SizeofType(TypeName),
    /// `sizeof x`.
    SizeofExpr(Box<Expr>),
    /// `x.member` (`arrow` false) or `x->member`.
    Member {
        /// The aggregate (or pointer for `->`).
        base: Box<Expr>,
        /// The member name (or tuple index as text).
        name: String,
        /// Where the member name is.
        name_span: Span,
        /// `->`.
        arrow: bool,
    },
    /// `x[i]`.
    Index(Box<Expr>, Box<Expr>),
    /// `container_of(ptr, type, member)`.
    ContainerOf(Box<Expr>, TypeName, String),
    /// `$str(p, n)`, `$strlen`-style helpers and other `$fn(args)` calls.
    Call(String, Vec<Expr>),
}

const C_TYPE_WORDS: [&str; 12] = [
    "unsigned", "signed", "int", "long", "short", "char", "void", "_Bool", "float", "double",
    "const", "volatile",
];

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    is_type: &'a dyn Fn(&str) -> bool,
}

/// Parses `input`. `is_type` says whether a name is a type (for casts:
/// `(Request *)p`); C keywords and `struct X` are recognised without it.
pub fn parse(input: &str, is_type: &dyn Fn(&str) -> bool) -> Result<Expr, Error> {
    let toks = lex(input)?;
    let mut p = Parser {
        toks,
        pos: 0,
        is_type,
    };
    if p.peek() == &Tok::End {
        return Err(Error::at(Span::new(0, 0), "expected an expression"));
    }
    let e = p.assign()?;
    if p.peek() != &Tok::End {
        let t = p.toks[p.pos].clone();
        return Err(Error::at(
            t.span,
            format!("unexpected {} after the expression", describe(&t.tok)),
        ));
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Int(v) | Tok::TypedInt(v, _) => format!("number {v}"),
        Tok::Float(v, _) => format!("number {v}"),
        Tok::Char(_) => "character literal".into(),
        Tok::Str(_) => "string".into(),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Dollar(s) => format!("'${s}'"),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::End => "end of input".into(),
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }
    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }
    fn span(&self) -> Span {
        self.toks[self.pos].span
    }
    fn prev_span(&self) -> Span {
        self.toks[self.pos.saturating_sub(1)].span
    }
    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Tok::Punct(q) if *q == p) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, p: &str, what: &str) -> Result<Span, Error> {
        if self.eat(p) {
            return Ok(self.prev_span());
        }
        let t = &self.toks[self.pos];
        Err(Error::at(
            t.span,
            format!("expected '{p}' {what}, found {}", describe(&t.tok)),
        ))
    }

    fn assign(&mut self) -> Result<Expr, Error> {
        let lhs = self.cond()?;
        if self.eat("=") {
            let rhs = self.assign()?;
            let span = lhs.span.to(rhs.span);
            return Ok(Expr {
                kind: ExprKind::Assign(Box::new(lhs), Box::new(rhs)),
                span,
            });
        }
        for (op, bin) in [
            ("+=", BinOp::Add),
            ("-=", BinOp::Sub),
            ("*=", BinOp::Mul),
            ("/=", BinOp::Div),
            ("<<=", BinOp::Shl),
            (">>=", BinOp::Shr),
        ] {
            if self.eat(op) {
                let rhs = self.assign()?;
                let span = lhs.span.to(rhs.span);
                let value = Expr {
                    kind: ExprKind::Binary(bin, Box::new(lhs.clone()), Box::new(rhs)),
                    span,
                };
                return Ok(Expr {
                    kind: ExprKind::Assign(Box::new(lhs), Box::new(value)),
                    span,
                });
            }
        }
        Ok(lhs)
    }

    fn cond(&mut self) -> Result<Expr, Error> {
        let c = self.binary(1)?;
        if self.eat("?") {
            let a = self.assign()?;
            self.expect(":", "in '?:'")?;
            let b = self.cond()?;
            let span = c.span.to(b.span);
            return Ok(Expr {
                kind: ExprKind::Cond(Box::new(c), Box::new(a), Box::new(b)),
                span,
            });
        }
        Ok(c)
    }

    fn binary(&mut self, min: u8) -> Result<Expr, Error> {
        let mut lhs = self.cast_as()?;
        while let Tok::Punct(p) = self.peek() {
            let Some((op, prec)) = BinOp::from_punct(p) else {
                break;
            };
            if prec < min {
                break;
            }
            self.bump();
            let rhs = self.binary(prec + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        Ok(lhs)
    }

    /// A unary expression and Rust `as` casts after it (`x as u32`,
    /// `-x as u8 as char`, `p as *const u8`): tighter than every binary
    /// operator, looser than the unary ones, left to right.
    fn cast_as(&mut self) -> Result<Expr, Error> {
        let mut e = self.unary()?;
        while matches!(self.peek(), Tok::Ident(s) if s == "as") {
            let as_span = self.span();
            self.bump();
            let mut ptr = 0;
            let start = self.span();
            loop {
                if matches!(self.peek(), Tok::Punct("*"))
                    && matches!(self.peek_at(1), Tok::Ident(k) if k == "const" || k == "mut")
                {
                    self.bump();
                    self.bump();
                    ptr += 1;
                } else if matches!(self.peek(), Tok::Punct("&")) {
                    self.bump();
                    if matches!(self.peek(), Tok::Ident(k) if k == "mut") {
                        self.bump();
                    }
                    ptr += 1;
                } else {
                    break;
                }
            }
            // One Rust type name (`u32`, `f64`, `kernel::workloads::Request`):
            // `x as u32 * 2` multiplies.
            let Tok::Ident(base) = self.peek().clone() else {
                let t = self.toks[self.pos].clone();
                return Err(Error::at(
                    as_span.to(t.span),
                    format!(
                        "expected a type after 'as' (e.g. x as u32), found {}",
                        describe(&t.tok)
                    ),
                ));
            };
            self.bump();
            let t = TypeName {
                base,
                ptr,
                span: start.to(self.prev_span()),
            };
            let span = e.span.to(t.span);
            e = Expr {
                kind: ExprKind::Cast(t, Box::new(e)),
                span,
            };
        }
        Ok(e)
    }

    /// At `(`: is a type name inside?
    fn looks_like_type(&self, at: usize) -> bool {
        match self.peek_at(at) {
            Tok::Ident(s) if C_TYPE_WORDS.contains(&s.as_str()) => true,
            Tok::Ident(s) if s == "struct" || s == "union" || s == "enum" => true,
            Tok::Ident(s) => {
                // `(Name)` / `(Name *)` where Name is a type.
                let mut k = at + 1;
                while matches!(self.peek_at(k), Tok::Punct("*")) {
                    k += 1;
                }
                matches!(self.peek_at(k), Tok::Punct(")")) && (self.is_type)(s)
            }
            _ => false,
        }
    }

    fn type_name(&mut self) -> Result<TypeName, Error> {
        let start = self.span();
        let mut words: Vec<String> = Vec::new();
        loop {
            match self.peek().clone() {
                Tok::Ident(s) if s == "const" || s == "volatile" => {
                    self.bump();
                }
                Tok::Ident(s) if s == "struct" || s == "union" || s == "enum" => {
                    self.bump();
                    let Tok::Ident(n) = self.peek().clone() else {
                        return Err(Error::at(
                            self.span(),
                            format!("expected a name after '{s}'"),
                        ));
                    };
                    self.bump();
                    words.push(format!("{s} {n}"));
                    break;
                }
                Tok::Ident(s) if C_TYPE_WORDS.contains(&s.as_str()) => {
                    self.bump();
                    words.push(s);
                }
                Tok::Ident(s) if words.is_empty() => {
                    self.bump();
                    words.push(s);
                    break;
                }
                _ => break,
            }
        }
        if words.is_empty() {
            return Err(Error::at(self.span(), "expected a type name"));
        }
        let mut ptr = 0;
        loop {
            if self.eat("*") {
                ptr += 1;
            } else if matches!(self.peek(), Tok::Ident(s) if s == "const" || s == "volatile") {
                self.bump();
            } else {
                break;
            }
        }
        Ok(TypeName {
            base: words.join(" "),
            ptr,
            span: start.to(self.prev_span()),
        })
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        let start = self.span();
        let op = match self.peek() {
            Tok::Punct("-") => Some(UnOp::Neg),
            Tok::Punct("+") => Some(UnOp::Plus),
            Tok::Punct("~") => Some(UnOp::Not),
            Tok::Punct("!") => Some(UnOp::LNot),
            Tok::Punct("*") => Some(UnOp::Deref),
            Tok::Punct("&") => Some(UnOp::AddrOf),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let e = self.unary()?;
            let span = start.to(e.span);
            return Ok(Expr {
                kind: ExprKind::Unary(op, Box::new(e)),
                span,
            });
        }
        if matches!(self.peek(), Tok::Punct("++" | "--")) {
            return Err(Error::at(
                start,
                "'++' and '--' are not supported: use 'set var x = x + 1'",
            ));
        }
        if matches!(self.peek(), Tok::Ident(s) if s == "sizeof") {
            self.bump();
            if matches!(self.peek(), Tok::Punct("(")) && self.looks_like_type(1) {
                self.bump();
                let t = self.type_name()?;
                let end = self.expect(")", "after the type in sizeof")?;
                return Ok(Expr {
                    kind: ExprKind::SizeofType(t),
                    span: start.to(end),
                });
            }
            let e = self.unary()?;
            let span = start.to(e.span);
            return Ok(Expr {
                kind: ExprKind::SizeofExpr(Box::new(e)),
                span,
            });
        }
        if matches!(self.peek(), Tok::Punct("(")) && self.looks_like_type(1) {
            self.bump();
            let t = self.type_name()?;
            self.expect(")", "after the type in a cast")?;
            let e = self.unary()?;
            let span = start.to(e.span);
            return Ok(Expr {
                kind: ExprKind::Cast(t, Box::new(e)),
                span,
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, Error> {
        let mut e = self.primary()?;
        loop {
            if self.eat("[") {
                let i = self.assign()?;
                let end = self.expect("]", "after the index")?;
                let span = e.span.to(end);
                e = Expr {
                    kind: ExprKind::Index(Box::new(e), Box::new(i)),
                    span,
                };
            } else if matches!(self.peek(), Tok::Punct("." | "->")) {
                let arrow = matches!(self.bump().tok, Tok::Punct("->"));
                let t = self.bump();
                let name = match t.tok {
                    Tok::Ident(n) => n,
                    Tok::Int(n) => n.to_string(),
                    other => {
                        return Err(Error::at(
                            t.span,
                            format!(
                                "expected a member name after '{}', found {}",
                                if arrow { "->" } else { "." },
                                describe(&other)
                            ),
                        ));
                    }
                };
                let span = e.span.to(t.span);
                e = Expr {
                    kind: ExprKind::Member {
                        base: Box::new(e),
                        name,
                        name_span: t.span,
                        arrow,
                    },
                    span,
                };
            } else if matches!(self.peek(), Tok::Punct("(")) {
                return Err(Error::at(
                    self.span(),
                    "calling functions in the target is not supported",
                ));
            } else if matches!(self.peek(), Tok::Punct("++" | "--")) {
                return Err(Error::at(
                    self.span(),
                    "'++' and '--' are not supported: use 'set var x = x + 1'",
                ));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let t = self.bump();
        let kind = match t.tok {
            Tok::Int(v) => ExprKind::Int(v),
            Tok::TypedInt(v, ty) => {
                // `1u`, `2u8`: the literal converted to the suffix's type.
                let lit = Expr {
                    kind: ExprKind::Int(v),
                    span: t.span,
                };
                ExprKind::Cast(
                    TypeName {
                        base: ty.to_string(),
                        ptr: 0,
                        span: t.span,
                    },
                    Box::new(lit),
                )
            }
            Tok::Float(v, ty) => {
                let lit = Expr {
                    kind: ExprKind::Float(v),
                    span: t.span,
                };
                match ty {
                    None => lit.kind,
                    Some(ty) => ExprKind::Cast(
                        TypeName {
                            base: ty.to_string(),
                            ptr: 0,
                            span: t.span,
                        },
                        Box::new(lit),
                    ),
                }
            }
            Tok::Char(v) => ExprKind::Char(v),
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Ident(n) if n == "container_of" => {
                self.expect("(", "after container_of")?;
                let p = self.assign()?;
                self.expect(",", "after the pointer in container_of(ptr, type, member)")?;
                let ty = self.type_name()?;
                self.expect(",", "after the type in container_of(ptr, type, member)")?;
                let m = self.bump();
                let Tok::Ident(member) = m.tok else {
                    return Err(Error::at(m.span, "expected a member name in container_of"));
                };
                let end = self.expect(")", "to close container_of")?;
                return Ok(Expr {
                    kind: ExprKind::ContainerOf(Box::new(p), ty, member),
                    span: t.span.to(end),
                });
            }
            Tok::Ident(n) => ExprKind::Name(n),
            Tok::Dollar(n) => {
                if matches!(self.peek(), Tok::Punct("(")) && !n.is_empty() {
                    self.bump();
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.assign()?);
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",", "between arguments")?;
                        }
                    }
                    return Ok(Expr {
                        kind: ExprKind::Call(n, args),
                        span: t.span.to(self.prev_span()),
                    });
                }
                ExprKind::Dollar(n)
            }
            Tok::Punct("(") => {
                let e = self.assign()?;
                let end = self.expect(")", "to close '('")?;
                return Ok(Expr {
                    kind: e.kind,
                    span: t.span.to(end),
                });
            }
            other => {
                return Err(Error::at(
                    t.span,
                    format!("expected an expression, found {}", describe(&other)),
                ));
            }
        };
        Ok(Expr { kind, span: t.span })
    }
}
