//! The evaluator: an [`Expr`] in the selected frame to a [`Value`].

use std::collections::HashMap;

use symbols::{Elf, LocContext, Place, Register, Scope, VarLocation};

use crate::ast::{BinOp, Expr, ExprKind, TypeName, UnOp};
use crate::lex::Span;
use crate::ty::{AggKind, IntKind, Ty};
use crate::{Error, suggest};

/// What evaluation needs from the target: the selected frame's registers
/// (by DWARF number: 0 rax .. 16 rip, 49 eflags, 50.. segments), its CFA,
/// and memory. The shell implements it over the stub (frame 0 from the
/// stop, or the frame `frame N` selected, with CFI-unwound registers).
pub trait Frame {
    /// The frame's pc.
    fn pc(&mut self) -> Option<u64> {
        self.register(16)
    }
    /// The pc that picks blocks and location-list entries: the pc in
    /// frame 0, `pc - 1` (inside the call) in outer frames, as gdb's
    /// `get_frame_address_in_block`.
    fn lookup_pc(&mut self) -> Option<u64> {
        self.pc()
    }
    /// The selected inline frame at the pc: 0 = the concrete function, N =
    /// the Nth inlined call (`None` = the innermost). Names of deeper
    /// inlined calls are not in scope.
    fn inline_level(&mut self) -> Option<u32> {
        None
    }
    /// A register by DWARF number (`None` if unknown in this frame).
    fn register(&mut self, dwarf: u16) -> Option<u64>;
    /// The frame's canonical frame address.
    fn cfa(&mut self) -> Option<u64>;
    /// Reads `len` bytes at `addr` (an error message if unreadable).
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String>;
    /// Writes `data` at `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), String>;
    /// Writes a register of the frame.
    fn write_register(&mut self, dwarf: u16, value: u64) -> Result<(), String>;
}

/// The DWARF number of a register name (`rdi`, `pc`, `sp`, `fp`, `eflags`, `cs`...).
pub fn register_number(name: &str) -> Option<u16> {
    Some(match name {
        "pc" | "rip" => 16,
        "sp" => 7,
        "fp" => 6,
        "eflags" | "rflags" => 49,
        "es" => 50,
        "cs" => 51,
        "ss" => 52,
        "ds" => 53,
        "fs" => 54,
        "gs" => 55,
        "fs_base" => 58,
        "gs_base" => 59,
        other => {
            return Register::from_name(other)
                .filter(|r| r.0 <= 16)
                .map(|r| r.0);
        }
    })
}

/// The register names `$` completion offers.
pub const REGISTER_NAMES: [&str; 26] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "pc", "sp", "fp", "eflags", "cs", "ss", "ds", "es", "fs",
];

/// Where a value is.
#[derive(Clone, Debug, PartialEq)]
pub enum Loc {
    /// In target memory (an lvalue).
    Mem(u64),
    /// In a register of the frame (an lvalue).
    Reg(u16),
    /// A bit field in memory.
    Bits {
        /// Address of the containing bytes.
        addr: u64,
        /// Bit offset from `addr`.
        bit: u64,
        /// Width.
        bits: u64,
    },
    /// Known contents, not in the target (results, history, constants).
    Bytes(Vec<u8>),
    /// Optimized out.
    OptimizedOut,
}

/// A typed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Its type.
    pub ty: Ty,
    /// Where it is.
    pub loc: Loc,
}

impl Value {
    /// A scalar constant of type `ty`.
    pub fn scalar(ty: Ty, v: u64) -> Value {
        let n = (ty.size() as usize).min(8);
        Value {
            loc: Loc::Bytes(v.to_le_bytes()[..n].to_vec()),
            ty,
        }
    }
    /// The address, for values in memory.
    pub fn address(&self) -> Option<u64> {
        match self.loc {
            Loc::Mem(a) => Some(a),
            _ => None,
        }
    }
}

/// Session state the language uses: value history (`$1`, `$`, `$$2`),
/// user variables (`$x`), and `$_` (the last address `x` examined).
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// Printed values, `$1` first (snapshots: contents, not locations).
    pub history: Vec<Value>,
    /// `$name` variables.
    pub vars: HashMap<String, Value>,
}

impl Env {
    /// Records a printed value; returns its number (`$N`).
    pub fn record(&mut self, v: Value) -> usize {
        self.history.push(v);
        self.history.len()
    }
}

/// Evaluates expressions in one frame.
pub struct Evaluator<'a> {
    /// Symbols and types.
    pub elf: &'a Elf,
    /// The selected frame (`None`: no target; only constants, types, sizes).
    pub frame: Option<&'a mut dyn Frame>,
    /// History and user variables.
    pub env: &'a mut Env,
    /// When true, memory is not read and nothing is written (types only).
    pub types_only: bool,
    /// Rust syntax for values and type names, as gdb in a Rust frame
    /// (`Path {a: 1}`, `[1, 2]`, `*mut T`, comparisons are `bool`).
    pub rust: bool,
    scope: Option<Scope>,
}

struct LocCtx<'f, 'a> {
    frame: &'f mut Option<&'a mut dyn Frame>,
}

impl LocContext for LocCtx<'_, '_> {
    fn register(&mut self, reg: Register) -> Option<u64> {
        self.frame.as_mut()?.register(reg.0)
    }
    fn cfa(&mut self) -> Option<u64> {
        self.frame.as_mut()?.cfa()
    }
    fn read(&mut self, address: u64, size: u8) -> Option<u64> {
        let b = self.frame.as_mut()?.read(address, usize::from(size)).ok()?;
        let mut w = [0u8; 8];
        w[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
        Some(u64::from_le_bytes(w))
    }
}

fn sext(v: u64, size: u64) -> i64 {
    if size >= 8 {
        return v as i64;
    }
    let sh = 64 - size * 8;
    ((v << sh) as i64) >> sh
}

fn trunc(v: u64, size: u64) -> u64 {
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (size * 8)) - 1)
    }
}

fn le(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(w)
}

impl<'a> Evaluator<'a> {
    /// An evaluator over `frame` (or none) with `env`.
    pub fn new(elf: &'a Elf, frame: Option<&'a mut dyn Frame>, env: &'a mut Env) -> Evaluator<'a> {
        Evaluator {
            elf,
            frame,
            env,
            types_only: false,
            rust: false,
            scope: None,
        }
    }

    /// Parses `input` with this evaluator's type names.
    pub fn parse(&self, input: &str) -> Result<Expr, Error> {
        let elf = self.elf;
        crate::parse(input, &|n| is_type_name(elf, n))
    }

    /// Evaluates an expression.
    pub fn eval(&mut self, e: &Expr) -> Result<Value, Error> {
        self.eval_inner(e)
    }

    /// The type of an expression, without reading target memory.
    pub fn type_of(&mut self, e: &Expr) -> Result<Ty, Error> {
        let saved = self.types_only;
        self.types_only = true;
        let r = self.eval_inner(e).map(|v| v.ty);
        self.types_only = saved;
        r
    }

    /// The variables in scope at the frame's pc.
    pub fn scope(&mut self) -> &Scope {
        if self.scope.is_none() {
            let pc = self.frame.as_mut().and_then(|f| f.lookup_pc());
            let mut s = pc
                .and_then(|pc| self.elf.scope_at(pc).ok())
                .unwrap_or_default();
            if let Some(l) = self.frame.as_mut().and_then(|f| f.inline_level()) {
                s.vars.retain(|v| v.inline_level <= l);
            }
            self.scope = Some(s);
        }
        self.scope.get_or_insert_with(Scope::default)
    }

    /// The inline level `info args`/`info locals` show: the selected
    /// frame's, else the innermost at the pc.
    pub fn frame_inline_level(&mut self) -> u32 {
        if let Some(l) = self.frame.as_mut().and_then(|f| f.inline_level()) {
            return l;
        }
        self.scope()
            .vars
            .iter()
            .map(|v| v.inline_level)
            .max()
            .unwrap_or(0)
    }

    /// The value of a parameter or local of the frame (for `info locals`).
    pub fn local(&mut self, var: &symbols::LocalVar, span: Span) -> Result<Value, Error> {
        let ty = Ty::from_dwarf(self.elf, var.ty);
        let loc = match &var.location {
            VarLocation::OptimizedOut => Loc::OptimizedOut,
            VarLocation::Const(b) => Loc::Bytes(b.clone()),
            VarLocation::Expr(le) => {
                if self.types_only {
                    return Ok(Value {
                        ty,
                        loc: Loc::OptimizedOut,
                    });
                }
                let mut ctx = LocCtx {
                    frame: &mut self.frame,
                };
                let place = le
                    .evaluate(&mut ctx)
                    .map_err(|m| Error::at(span, format!("cannot locate '{}': {m}", var.name)))?;
                self.place_loc(place, ty.size(), span)?
            }
        };
        Ok(Value { ty, loc })
    }

    fn place_loc(&mut self, place: Place, size: u64, span: Span) -> Result<Loc, Error> {
        Ok(match place {
            Place::Memory(a) => Loc::Mem(a),
            Place::Register(r) => Loc::Reg(r.0),
            Place::Value(v) => Loc::Bytes(v.to_le_bytes()[..(size.min(8) as usize)].to_vec()),
            Place::Bytes(b) => Loc::Bytes(b),
            Place::OptimizedOut => Loc::OptimizedOut,
            Place::Pieces(ps) => {
                let mut out = Vec::new();
                for (p, n) in ps {
                    let part = self.place_loc(p, n, span)?;
                    let v = Value {
                        ty: Ty::Array {
                            elem: Box::new(Ty::int(1, false)),
                            len: Some(n),
                        },
                        loc: part,
                    };
                    if v.loc == Loc::OptimizedOut {
                        return Ok(Loc::OptimizedOut);
                    }
                    out.extend(self.bytes(&v, span)?);
                }
                out.resize(size as usize, 0);
                Loc::Bytes(out)
            }
        })
    }

    fn frame(&mut self, span: Span, what: &str) -> Result<&mut dyn Frame, Error> {
        match self.frame.as_deref_mut() {
            Some(f) => Ok(f),
            None => Err(Error::at(
                span,
                format!("{what} needs a stopped kernel (not connected, or running)"),
            )),
        }
    }

    /// Reads target memory (zeros in types-only mode).
    pub fn read(&mut self, addr: u64, len: usize, span: Span) -> Result<Vec<u8>, Error> {
        if self.types_only {
            return Ok(vec![0; len]);
        }
        if len > 1 << 20 {
            return Err(Error::at(
                span,
                format!("value of {len} bytes is too large to read"),
            ));
        }
        let f = self.frame(span, "reading memory")?;
        f.read(addr, len)
            .map_err(|_| Error::at(span, format!("memory at {addr:#x} is not readable")))
    }

    /// The contents of a value.
    pub fn bytes(&mut self, v: &Value, span: Span) -> Result<Vec<u8>, Error> {
        let size = v.ty.size() as usize;
        if self.types_only {
            return Ok(vec![0; size.min(1 << 20)]);
        }
        match &v.loc {
            Loc::Mem(a) => self.read(*a, size, span),
            Loc::Reg(r) => {
                if self.types_only {
                    return Ok(vec![0; size]);
                }
                let r = *r;
                let f = self.frame(span, "reading registers")?;
                let val = f.register(r).ok_or_else(|| {
                    Error::at(
                        span,
                        format!("register {} is not available in this frame", reg_name(r)),
                    )
                })?;
                let mut b = val.to_le_bytes().to_vec();
                b.resize(size, 0);
                Ok(b)
            }
            Loc::Bits { addr, bit, bits } => {
                let nbytes = ((bit + bits).div_ceil(8)).min(8) as usize;
                let raw = le(&self.read(*addr, nbytes, span)?);
                let mask = if *bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                let mut x = (raw >> bit) & mask;
                if v.ty.is_signed() && *bits < 64 && x >> (bits - 1) & 1 == 1 {
                    x |= !mask;
                }
                let mut b = x.to_le_bytes().to_vec();
                b.resize(size, 0);
                Ok(b)
            }
            Loc::Bytes(b) => {
                let mut b = b.clone();
                b.resize(size, 0);
                Ok(b)
            }
            Loc::OptimizedOut => Err(Error::at(span, "value has been optimized out")),
        }
    }

    /// A scalar's value, zero- or sign-extended to 64 bits.
    pub fn scalar(&mut self, v: &Value, span: Span) -> Result<u64, Error> {
        match &v.ty {
            Ty::Int { size, signed, .. } => {
                let b = self.bytes(v, span)?;
                let raw = le(&b);
                Ok(if *signed {
                    sext(raw, u64::from(*size)) as u64
                } else {
                    trunc(raw, u64::from(*size))
                })
            }
            Ty::Ptr { .. } => Ok(le(&self.bytes(v, span)?)),
            Ty::Func { .. } => v
                .address()
                .ok_or_else(|| Error::at(span, "function has no address")),
            Ty::Array { .. } => v
                .address()
                .ok_or_else(|| Error::at(span, "array is not in memory: it has no address")),
            Ty::Float { name, .. } => Err(Error::at(
                span,
                format!("{name} is not an integer here: cast it first (e.g. (long)x or x as i64)"),
            )),
            other => Err(Error::at(
                span,
                format!("{} is not a number", describe_ty(other)),
            )),
        }
    }

    /// A float type of `size` bytes named for the language (`double`/`f64`).
    fn float_ty(&self, size: u8) -> Ty {
        let name = match (size, self.rust) {
            (4, false) => "float",
            (4, true) => "f32",
            (_, false) => "double",
            (_, true) => "f64",
        };
        Ty::Float {
            size,
            name: name.into(),
        }
    }

    /// A number's value as a double (integers converted as C does).
    pub fn float_of(&mut self, v: &Value, span: Span) -> Result<f64, Error> {
        match &v.ty {
            Ty::Float { size, .. } => {
                let raw = le(&self.bytes(v, span)?);
                Ok(if *size == 4 {
                    f64::from(f32::from_bits(raw as u32))
                } else {
                    f64::from_bits(raw)
                })
            }
            Ty::Int { .. } => {
                let x = self.scalar(v, span)?;
                Ok(if v.ty.is_signed() {
                    x as i64 as f64
                } else {
                    x as f64
                })
            }
            other => Err(Error::at(
                span,
                format!("{} is not a number", describe_ty(other)),
            )),
        }
    }

    fn eval_inner(&mut self, e: &Expr) -> Result<Value, Error> {
        let sp = e.span;
        match &e.kind {
            ExprKind::Int(v) => {
                let ty = if *v <= i32::MAX as u64 {
                    Ty::c_int()
                } else if *v <= u32::MAX as u64 {
                    Ty::int(4, false)
                } else if *v <= i64::MAX as u64 {
                    Ty::long()
                } else {
                    Ty::ulong()
                };
                Ok(Value::scalar(ty, *v))
            }
            ExprKind::Float(f) => Ok(float_value(self.float_ty(8), *f)),
            ExprKind::Char(v) => Ok(Value::scalar(Ty::int(1, true), *v)),
            ExprKind::Str(s) => {
                let mut b = s.clone();
                b.push(0);
                Ok(Value {
                    ty: Ty::Array {
                        elem: Box::new(Ty::int(1, true)),
                        len: Some(b.len() as u64),
                    },
                    loc: Loc::Bytes(b),
                })
            }
            ExprKind::Name(n) => self.name(n, sp),
            ExprKind::Dollar(n) => self.dollar(n, sp),
            ExprKind::Unary(op, x) => self.unary(*op, x, sp),
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r, sp),
            ExprKind::Cond(c, a, b) => {
                let cv = self.eval_inner(c)?;
                let t = self.truth(&cv, c.span)?;
                if self.types_only {
                    let _ = self.eval_inner(b)?;
                    return self.eval_inner(a);
                }
                if t {
                    self.eval_inner(a)
                } else {
                    self.eval_inner(b)
                }
            }
            ExprKind::Cast(t, x) => {
                let ty = self.type_from_name(t)?;
                let v = self.eval_inner(x)?;
                self.cast(v, ty, sp)
            }
            ExprKind::SizeofType(t) => {
                let ty = self.type_from_name(t)?;
                Ok(Value::scalar(Ty::ulong(), ty.size()))
            }
            ExprKind::SizeofExpr(x) => {
                let ty = self.type_of(x)?;
                Ok(Value::scalar(Ty::ulong(), ty.size()))
            }
            ExprKind::Member {
                base,
                name,
                name_span,
                arrow,
            } => {
                let mut b = self.eval_inner(base)?;
                if *arrow {
                    match &b.ty {
                        Ty::Ptr { .. } => b = self.deref(b, base.span)?,
                        other => {
                            return Err(Error::at(
                                base.span,
                                format!(
                                    "'->' needs a pointer, but this is {}: use '.'",
                                    describe_ty(other)
                                ),
                            ));
                        }
                    }
                } else if matches!(b.ty, Ty::Ptr { .. }) {
                    // gdb accepts `p.x` on pointers too.
                    b = self.deref(b, base.span)?;
                }
                self.member(b, name, *name_span)
            }
            ExprKind::Index(a, i) => {
                let av = self.eval_inner(a)?;
                let iv = self.eval_inner(i)?;
                self.index(av, iv, a.span, i.span)
            }
            ExprKind::Assign(l, r) => self.assign(l, r, sp),
            ExprKind::ContainerOf(p, t, member) => {
                let pv = self.eval_inner(p)?;
                let addr = match pv.ty {
                    Ty::Ptr { .. } => self.scalar(&pv, p.span)?,
                    _ => {
                        return Err(Error::at(
                            p.span,
                            "container_of needs a pointer as its first argument",
                        ));
                    }
                };
                let ty = self.type_from_name(t)?;
                let Ty::Agg { id, .. } = &ty else {
                    return Err(Error::at(
                        t.span,
                        format!("container_of needs a struct type, not {}", ty.name()),
                    ));
                };
                let info = self
                    .elf
                    .type_info(*id)
                    .map_err(|e| Error::at(t.span, e.to_string()))?;
                let Some(f) = info.field(member) else {
                    return Err(self.no_member(&ty, member, sp));
                };
                let off = f.offset;
                Ok(Value::scalar(Ty::ptr_to(ty), addr.wrapping_sub(off)))
            }
            ExprKind::Call(name, args) => self.call(name, args, sp),
        }
    }

    fn type_from_name(&mut self, t: &TypeName) -> Result<Ty, Error> {
        let mut ty = Ty::from_name(self.elf, &t.base).map_err(|e| Error::at(t.span, e.message))?;
        for _ in 0..t.ptr {
            ty = Ty::ptr_to(ty);
        }
        Ok(ty)
    }

    fn name(&mut self, n: &str, sp: Span) -> Result<Value, Error> {
        if let Some(var) = self.scope().find(n).cloned() {
            return self.local(&var, sp);
        }
        if let Ok(gs) = self.elf.globals_named(n)
            && let Some(g) = gs.first()
        {
            return Ok(Value {
                ty: Ty::from_dwarf(self.elf, g.ty),
                loc: Loc::Mem(g.address),
            });
        }
        match n {
            "true" => {
                return Ok(Value::scalar(
                    crate::ty::builtin("bool").unwrap_or(Ty::c_int()),
                    1,
                ));
            }
            "false" => {
                return Ok(Value::scalar(
                    crate::ty::builtin("bool").unwrap_or(Ty::c_int()),
                    0,
                ));
            }
            "NULL" => return Ok(Value::scalar(Ty::ptr_to(Ty::Void), 0)),
            _ => {}
        }
        let syms = self.elf.lookup(n);
        if let Some(s) = syms.first() {
            if s.kind == symbols::SymbolKind::Function {
                let f = self.elf.function_at(s.address).ok();
                let rust = match &f {
                    Some(f) if f.has_dwarf => {
                        let args: Vec<String> =
                            f.params.iter().map(|p| p.type_name.clone()).collect();
                        crate::ty::rust_fn_name(
                            &args,
                            f.return_type.map(|_| f.return_type_name.clone()),
                        )
                    }
                    _ => "fn ()".to_string(),
                };
                let name = match f {
                    Some(f) if f.has_dwarf => {
                        let args: Vec<String> =
                            f.params.iter().map(|p| p.type_name.clone()).collect();
                        format!(
                            "{} ({})",
                            f.return_type_name,
                            if args.is_empty() {
                                "void".to_string()
                            } else {
                                args.join(", ")
                            }
                        )
                    }
                    _ => "<text variable, no debug info>".to_string(),
                };
                return Ok(Value {
                    ty: Ty::Func { name, rust },
                    loc: Loc::Mem(s.address),
                });
            }
            return Err(Error::at(
                sp,
                format!("'{n}' has unknown type; cast it to its declared type (e.g. *(u64 *)&{n})"),
            ));
        }
        // Did you mean: locals, then globals/functions with a close name.
        let mut cands: Vec<String> = self.scope().vars.iter().map(|v| v.name.clone()).collect();
        let prefix: String = n.chars().take(2).collect();
        cands.extend(self.elf.global_names_with_prefix(&prefix));
        cands.extend(
            self.elf
                .names_with_prefix(&prefix)
                .take(2000)
                .map(str::to_string),
        );
        let hint = suggest(n, cands.iter().map(String::as_str))
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        Err(Error::at(
            sp,
            format!("no symbol '{n}' in the current context{hint}"),
        ))
    }

    fn dollar(&mut self, n: &str, sp: Span) -> Result<Value, Error> {
        // History: `$`, `$N`, `$$`, `$$N`.
        let hist = |env: &Env, idx: Option<usize>| -> Result<Value, Error> {
            match idx
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| env.history.get(i))
            {
                Some(v) => Ok(v.clone()),
                None if env.history.is_empty() => Err(Error::at(
                    sp,
                    "the value history is empty: print something first",
                )),
                None => Err(Error::at(
                    sp,
                    format!(
                        "history has only {} values ($1..${})",
                        env.history.len(),
                        env.history.len()
                    ),
                )),
            }
        };
        let len = self.env.history.len();
        if n.is_empty() {
            return hist(self.env, Some(len));
        }
        if let Some(rest) = n.strip_prefix('$') {
            let back: usize = if rest.is_empty() {
                1
            } else {
                rest.parse()
                    .map_err(|_| Error::at(sp, "bad history reference"))?
            };
            return hist(self.env, len.checked_sub(back));
        }
        if let Ok(i) = n.parse::<usize>() {
            return hist(self.env, Some(i));
        }
        if let Some(v) = self.env.vars.get(n) {
            return Ok(v.clone());
        }
        if let Some(r) = register_number(n) {
            let ty = match r {
                16 => Ty::ptr_to(Ty::Func {
                    name: "void ()".into(),
                    rust: "fn ()".into(),
                }),
                6 | 7 => Ty::ptr_to(Ty::Void),
                49 => Ty::Int {
                    size: 4,
                    signed: false,
                    kind: IntKind::Eflags,
                    name: "i386_eflags".into(),
                },
                50..=55 => Ty::c_int(),
                _ => Ty::long(),
            };
            if self.frame.is_none() {
                return Err(Error::at(
                    sp,
                    format!("${n} needs a stopped kernel (not connected)"),
                ));
            }
            return Ok(Value {
                ty,
                loc: Loc::Reg(r),
            });
        }
        if n == "cpu" {
            let c = self.this_cpu(sp)?;
            return Ok(Value::scalar(Ty::c_int(), c));
        }
        if n == "_" || n == "__" || n.starts_with("_") {
            return Ok(Value {
                ty: Ty::Void,
                loc: Loc::Bytes(Vec::new()),
            });
        }
        // gdb: an unset convenience variable is void.
        if n.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Ok(Value {
                ty: Ty::Void,
                loc: Loc::Bytes(Vec::new()),
            });
        }
        Err(Error::at(sp, format!("no register or variable '${n}'")))
    }

    fn call(&mut self, name: &str, args: &[Expr], sp: Span) -> Result<Value, Error> {
        match name {
            "str" => {
                let (p, n) = match args {
                    [p] => (p, None),
                    [p, n] => (p, Some(n)),
                    _ => return Err(Error::at(sp, "usage: $str(POINTER [, MAX_BYTES])")),
                };
                let pv = self.eval_inner(p)?;
                let addr = match pv.ty {
                    Ty::Ptr { .. } | Ty::Int { .. } => self.scalar(&pv, p.span)?,
                    Ty::Array { .. } => pv.address().unwrap_or(0),
                    _ => return Err(Error::at(p.span, "$str needs a pointer")),
                };
                let max = match n {
                    Some(n) => {
                        let nv = self.eval_inner(n)?;
                        self.scalar(&nv, n.span)?
                    }
                    None => 200,
                };
                if max > 4096 {
                    return Err(Error::at(sp, "$str reads at most 4096 bytes"));
                }
                let mut out = Vec::new();
                let mut at = addr;
                while (out.len() as u64) < max {
                    let chunk = (max - out.len() as u64).min(64) as usize;
                    let b = self.read(at, chunk, p.span).or_else(|e| {
                        // Shorter read at a page end.
                        let mut one = Vec::new();
                        for k in 0..chunk as u64 {
                            match self.read(at + k, 1, p.span) {
                                Ok(x) => one.extend(x),
                                Err(_) if !one.is_empty() || !out.is_empty() => break,
                                Err(_) => return Err(e.clone()),
                            }
                        }
                        Ok(one)
                    })?;
                    if b.is_empty() {
                        break;
                    }
                    if let Some(z) = b.iter().position(|c| *c == 0) {
                        out.extend_from_slice(&b[..z]);
                        break;
                    }
                    at += b.len() as u64;
                    out.extend(b);
                }
                let n = out.len() as u64;
                Ok(Value {
                    ty: Ty::Array {
                        elem: Box::new(Ty::int(1, true)),
                        len: Some(n),
                    },
                    loc: Loc::Bytes(out),
                })
            }
            "per_cpu" => {
                let (var, cpu) = match args {
                    [v] => (v, None),
                    [v, c] => (v, Some(c)),
                    _ => return Err(Error::at(sp, "usage: $per_cpu(VAR [, CPU])")),
                };
                let vv = self.eval_inner(var)?;
                let Ty::Array {
                    len: Some(len),
                    elem,
                } = &vv.ty
                else {
                    return Err(Error::at(
                        var.span,
                        format!(
                            "$per_cpu needs a per-CPU array ([T; MAX_CPUS], indexed by CPU), not {}",
                            describe_ty(&vv.ty)
                        ),
                    ));
                };
                let (len, elem) = (*len, (**elem).clone());
                let n = match cpu {
                    Some(c) => {
                        let cv = self.eval_inner(c)?;
                        if !matches!(cv.ty, Ty::Int { .. }) {
                            return Err(Error::at(c.span, "the CPU must be an integer"));
                        }
                        self.scalar(&cv, c.span)?
                    }
                    None => self.this_cpu(sp)?,
                };
                let csp = cpu.map_or(sp, |c| c.span);
                if n >= len {
                    return Err(Error::at(
                        csp,
                        format!("cpu {n} is out of range (the array has {len} elements)"),
                    ));
                }
                if !self.types_only
                    && let Some(mask) = self.online_cpus(csp)?
                    && mask & (1u64 << n.min(63)) == 0
                {
                    return Err(Error::at(
                        csp,
                        format!("cpu {n} is not online (online: {})", cpu_list(mask)),
                    ));
                }
                self.index(vv, Value::scalar(Ty::ulong(), n), var.span, csp)
                    .map(|v| Value {
                        ty: elem,
                        loc: v.loc,
                    })
            }
            other => Err(Error::at(
                sp,
                format!(
                    "no helper '${other}' (helpers: $str(p, n), $per_cpu(VAR [, CPU]), $cpu, container_of(p, type, member))"
                ),
            )),
        }
    }

    /// The kernel's online CPUs as a bit mask (`arch::percpu::ONLINE`),
    /// `None` when the kernel has no such variable.
    fn online_cpus(&mut self, sp: Span) -> Result<Option<u64>, Error> {
        let Some(g) = self
            .elf
            .globals_named("arch::percpu::ONLINE")
            .ok()
            .and_then(|g| g.first().cloned())
        else {
            return Ok(None);
        };
        let b = self.read(g.address, 4, sp)?;
        Ok(Some(le(&b)))
    }

    /// `$cpu`: the CPU that stopped: the CPU owning the stub
    /// (`stub::allstop::OWNER`, the one that trapped while the others are
    /// parked), else the only online CPU.
    fn this_cpu(&mut self, sp: Span) -> Result<u64, Error> {
        if self.types_only {
            return Ok(0);
        }
        let mask = self.online_cpus(sp)?;
        if let Some(g) = self
            .elf
            .globals_named("stub::allstop::OWNER")
            .ok()
            .and_then(|g| g.first().cloned())
        {
            let owner = le(&self.read(g.address, 8, sp)?);
            if owner < 64 && mask.is_none_or(|m| m >> owner & 1 == 1) {
                return Ok(owner);
            }
        }
        match mask {
            Some(m) if m.count_ones() == 1 => Ok(u64::from(m.trailing_zeros())),
            Some(m) => Err(Error::at(
                sp,
                format!(
                    "no CPU owns the stub ({} online: {}): name one, $per_cpu(VAR, N)",
                    m.count_ones(),
                    cpu_list(m)
                ),
            )),
            None => Err(Error::at(
                sp,
                "this kernel has no per-CPU data kdbg knows (arch::percpu::ONLINE)",
            )),
        }
    }

    /// Truth value (`!= 0`).
    fn truth(&mut self, v: &Value, sp: Span) -> Result<bool, Error> {
        if matches!(v.ty, Ty::Float { .. }) {
            return Ok(self.float_of(v, sp)? != 0.0);
        }
        Ok(self.scalar(v, sp)? != 0)
    }

    /// The value `p` points to.
    pub fn deref(&mut self, v: Value, sp: Span) -> Result<Value, Error> {
        match &v.ty {
            Ty::Ptr { pointee, .. } => {
                if matches!(**pointee, Ty::Void) {
                    return Err(Error::at(
                        sp,
                        format!(
                            "cannot dereference a void pointer ({}): cast it first",
                            v.ty.name()
                        ),
                    ));
                }
                let a = self.scalar(&v, sp)?;
                Ok(Value {
                    ty: (**pointee).clone(),
                    loc: Loc::Mem(a),
                })
            }
            Ty::Array { elem, .. } => {
                let a = self.scalar(&v, sp)?;
                Ok(Value {
                    ty: (**elem).clone(),
                    loc: Loc::Mem(a),
                })
            }
            Ty::Func { .. } => Ok(v),
            other => Err(Error::at(
                sp,
                format!("cannot dereference {}: cast it first", describe_ty(other)),
            )),
        }
    }

    fn no_member(&self, ty: &Ty, name: &str, sp: Span) -> Error {
        let names = self.member_names(ty);
        let hint = suggest(name, names.iter().map(String::as_str))
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        Error::at(sp, format!("no member '{name}' in {}{hint}", ty.name()))
    }

    /// Member names of an aggregate (for errors and completion).
    pub fn member_names(&self, ty: &Ty) -> Vec<String> {
        let Ty::Agg { id, kind, .. } = ty else {
            return Vec::new();
        };
        if *kind == AggKind::RustEnum {
            return self
                .elf
                .variant_part(*id)
                .ok()
                .flatten()
                .map(|p| {
                    p.variants
                        .iter()
                        .filter_map(|v| v.field.name.clone())
                        .collect()
                })
                .unwrap_or_default();
        }
        self.elf
            .type_info(*id)
            .map(|t| t.fields().iter().filter_map(|f| f.name.clone()).collect())
            .unwrap_or_default()
    }

    /// `v.name`.
    pub fn member(&mut self, v: Value, name: &str, sp: Span) -> Result<Value, Error> {
        let Ty::Agg { id, kind, .. } = &v.ty else {
            return Err(Error::at(
                sp,
                format!(
                    "{} has no members: it is not a struct or union",
                    describe_ty(&v.ty)
                ),
            ));
        };
        let (id, kind) = (*id, *kind);
        if kind == AggKind::RustEnum {
            // `opt.Some` : the variant's data (if it is the active one).
            let (active, field) = self.active_variant(&v, sp)?;
            match field {
                Some(f) if f.name.as_deref() == Some(name) => {
                    return self.field_value(&v, &f, sp);
                }
                _ => {
                    let names = self.member_names(&v.ty);
                    if names.iter().any(|n| n == name) {
                        return Err(Error::at(
                            sp,
                            format!("variant '{name}' is not the active one ({active})"),
                        ));
                    }
                    return Err(self.no_member(&v.ty, name, sp));
                }
            }
        }
        let info = self
            .elf
            .type_info(id)
            .map_err(|e| Error::at(sp, e.to_string()))?;
        // Tuple fields: `.0` is `__0`.
        let want = if name.chars().all(|c| c.is_ascii_digit()) {
            format!("__{name}")
        } else {
            name.to_string()
        };
        if let Some(f) = info.field(&want).or_else(|| info.field(name)).cloned() {
            return self.field_value(&v, &f, sp);
        }
        // Anonymous members.
        for f in info
            .fields()
            .iter()
            .filter(|f| f.name.is_none())
            .cloned()
            .collect::<Vec<_>>()
        {
            let inner = self.field_value(&v, &f, sp)?;
            if matches!(inner.ty, Ty::Agg { .. })
                && let Ok(x) = self.member(inner, name, sp)
            {
                return Ok(x);
            }
        }
        Err(self.no_member(&v.ty, name, sp))
    }

    /// The value of field `f` of aggregate `v`.
    pub fn field_value(&mut self, v: &Value, f: &symbols::Field, sp: Span) -> Result<Value, Error> {
        let ty = Ty::from_dwarf(self.elf, f.ty);
        if let Some(bits) = f.bit_size {
            let bit = f.bit_offset.unwrap_or(0);
            return match v.loc {
                Loc::Mem(a) => Ok(Value {
                    ty,
                    loc: Loc::Bits {
                        addr: a + f.offset,
                        bit,
                        bits,
                    },
                }),
                _ => {
                    let b = self.bytes(v, sp)?;
                    let start = f.offset as usize;
                    let raw = le(b.get(start..).unwrap_or(&[]));
                    let mask = if bits >= 64 {
                        u64::MAX
                    } else {
                        (1 << bits) - 1
                    };
                    Ok(Value::scalar(ty, (raw >> bit) & mask))
                }
            };
        }
        let loc = match &v.loc {
            Loc::Mem(a) => Loc::Mem(a.wrapping_add(f.offset)),
            Loc::OptimizedOut => Loc::OptimizedOut,
            _ => {
                let b = self.bytes(v, sp)?;
                let s = f.offset as usize;
                let e = (s + ty.size() as usize).min(b.len());
                Loc::Bytes(b.get(s..e).unwrap_or(&[]).to_vec())
            }
        };
        Ok(Value { ty, loc })
    }

    /// For a Rust enum: the active variant's name and its data field.
    pub fn active_variant(
        &mut self,
        v: &Value,
        sp: Span,
    ) -> Result<(String, Option<symbols::Field>), Error> {
        let Ty::Agg { id, .. } = &v.ty else {
            return Err(Error::at(sp, "not an enum"));
        };
        let part = self
            .elf
            .variant_part(*id)
            .map_err(|e| Error::at(sp, e.to_string()))?
            .ok_or_else(|| Error::at(sp, "enum without variant part"))?;
        let discr = match &part.discriminant {
            Some(d) => {
                let dv = self.field_value(v, d, sp)?;
                Some(self.scalar(&dv, sp)?)
            }
            None => None,
        };
        let chosen = part
            .variants
            .iter()
            .find(|x| x.discr_value.is_some() && x.discr_value == discr.map(|d| trunc(d, 8)))
            .or_else(|| part.variants.iter().find(|x| x.discr_value.is_none()))
            .or_else(|| {
                if part.variants.len() == 1 {
                    part.variants.first()
                } else {
                    None
                }
            });
        match chosen {
            Some(x) => Ok((
                x.field.name.clone().unwrap_or_default(),
                Some(x.field.clone()),
            )),
            None => Ok((
                format!("<invalid discriminant {}>", discr.unwrap_or(0)),
                None,
            )),
        }
    }

    fn index(&mut self, a: Value, i: Value, asp: Span, isp: Span) -> Result<Value, Error> {
        let idx = match i.ty {
            Ty::Int { .. } => self.scalar(&i, isp)? as i64,
            _ => {
                return Err(Error::at(
                    isp,
                    format!("array index must be an integer, not {}", describe_ty(&i.ty)),
                ));
            }
        };
        match &a.ty {
            Ty::Array { elem, len } => {
                if let Some(n) = len
                    && (idx < 0 || idx as u64 >= *n)
                {
                    return Err(Error::at(
                        isp,
                        format!("index {idx} is out of bounds (the array has {n} elements)"),
                    ));
                }
                let es = elem.size();
                match &a.loc {
                    Loc::Mem(base) => Ok(Value {
                        ty: (**elem).clone(),
                        loc: Loc::Mem(base.wrapping_add((idx as u64).wrapping_mul(es))),
                    }),
                    _ => {
                        let b = self.bytes(&a, asp)?;
                        let s = idx as usize * es as usize;
                        Ok(Value {
                            ty: (**elem).clone(),
                            loc: Loc::Bytes(b.get(s..s + es as usize).unwrap_or(&[]).to_vec()),
                        })
                    }
                }
            }
            Ty::Ptr { pointee, .. } => {
                if matches!(**pointee, Ty::Void) {
                    return Err(Error::at(
                        asp,
                        "cannot subscript a void pointer: cast it first",
                    ));
                }
                let p = self.scalar(&a, asp)?;
                Ok(Value {
                    ty: (**pointee).clone(),
                    loc: Loc::Mem(p.wrapping_add((idx as u64).wrapping_mul(pointee.size()))),
                })
            }
            Ty::Agg { id, .. } => {
                // Rust slices and &str: data_ptr[i], bounds-checked.
                let info = self
                    .elf
                    .type_info(*id)
                    .map_err(|e| Error::at(asp, e.to_string()))?;
                let Some((pf, lf)) = info.slice_parts().map(|(p, l)| (p.clone(), l.clone())) else {
                    return Err(Error::at(
                        asp,
                        format!("cannot subscript {}", describe_ty(&a.ty)),
                    ));
                };
                let pv = self.field_value(&a, &pf, asp)?;
                let lv = self.field_value(&a, &lf, asp)?;
                let n = self.scalar(&lv, asp)?;
                if !self.types_only && (idx < 0 || idx as u64 >= n) {
                    return Err(Error::at(
                        isp,
                        format!("index {idx} is out of bounds (the slice has {n} elements)"),
                    ));
                }
                let elem = match &pv.ty {
                    Ty::Ptr { pointee, .. } => (**pointee).clone(),
                    _ => Ty::int(1, false),
                };
                let p = self.scalar(&pv, asp)?;
                Ok(Value {
                    loc: Loc::Mem(p.wrapping_add(idx as u64 * elem.size())),
                    ty: elem,
                })
            }
            other => Err(Error::at(
                asp,
                format!("cannot subscript {}", describe_ty(other)),
            )),
        }
    }

    fn unary(&mut self, op: UnOp, x: &Expr, sp: Span) -> Result<Value, Error> {
        if op == UnOp::AddrOf {
            let v = self.eval_inner(x)?;
            return match (&v.loc, &v.ty) {
                (Loc::Mem(a), Ty::Func { .. }) => Ok(Value::scalar(Ty::ptr_to(v.ty.clone()), *a)),
                (Loc::Mem(a), _) => Ok(Value::scalar(Ty::ptr_to(v.ty.clone()), *a)),
                (Loc::Reg(r), _) => Err(Error::at(
                    x.span,
                    format!(
                        "cannot take the address of a value in register {}",
                        reg_name(*r)
                    ),
                )),
                (Loc::Bits { .. }, _) => {
                    Err(Error::at(x.span, "cannot take the address of a bit field"))
                }
                (Loc::OptimizedOut, _) => Err(Error::at(x.span, "value has been optimized out")),
                (Loc::Bytes(_), _) => Err(Error::at(
                    x.span,
                    "cannot take the address of a value that is not in memory",
                )),
            };
        }
        let v = self.eval_inner(x)?;
        if op == UnOp::Deref {
            return self.deref(v, x.span);
        }
        let is_bool = matches!(
            v.ty,
            Ty::Int {
                kind: IntKind::Bool,
                ..
            }
        );
        if op == UnOp::LNot && self.rust && !is_bool && matches!(v.ty, Ty::Int { .. }) {
            // Rust's `!` on integers is bitwise.
            let ty = promote(&v.ty);
            let a = self.scalar(&v, x.span)?;
            return Ok(Value::scalar(ty.clone(), trunc(!a, ty.size())));
        }
        if let Ty::Float { name, .. } = &v.ty {
            match op {
                UnOp::Neg | UnOp::Plus => {
                    let f = self.float_of(&v, x.span)?;
                    let f = if op == UnOp::Neg { -f } else { f };
                    return Ok(float_value(v.ty.clone(), f));
                }
                UnOp::LNot if !self.rust => {}
                _ => {
                    return Err(Error::at(
                        sp,
                        format!(
                            "operator '{}' needs an integer, not {name}",
                            if op == UnOp::Not { "~" } else { "!" }
                        ),
                    ));
                }
            }
        }
        if op == UnOp::LNot {
            let t = self.truth(&v, x.span)?;
            if self.rust {
                return Ok(Value::scalar(self.bool_ty(), u64::from(!t)));
            }
            return Ok(Value::scalar(Ty::c_int(), u64::from(!t)));
        }
        let Ty::Int { .. } = v.ty else {
            return Err(Error::at(
                x.span,
                format!(
                    "operator '{}' needs an integer, not {}",
                    match op {
                        UnOp::Neg => "-",
                        UnOp::Plus => "+",
                        _ => "~",
                    },
                    describe_ty(&v.ty)
                ),
            ));
        };
        let ty = promote(&v.ty);
        let a = self.scalar(&v, x.span)?;
        let r = match op {
            UnOp::Neg => a.wrapping_neg(),
            UnOp::Not => !a,
            _ => a,
        };
        let _ = sp;
        Ok(Value::scalar(ty.clone(), trunc(r, ty.size())))
    }

    fn binary(&mut self, op: BinOp, l: &Expr, r: &Expr, sp: Span) -> Result<Value, Error> {
        if matches!(op, BinOp::LAnd | BinOp::LOr) {
            let lv = self.eval_inner(l)?;
            let lt = self.truth(&lv, l.span)?;
            if !self.types_only && (op == BinOp::LAnd && !lt || op == BinOp::LOr && lt) {
                return Ok(Value::scalar(self.bool_ty(), u64::from(lt)));
            }
            let rv = self.eval_inner(r)?;
            let rt = self.truth(&rv, r.span)?;
            return Ok(Value::scalar(self.bool_ty(), u64::from(rt)));
        }
        let lv = self.eval_inner(l)?;
        let rv = self.eval_inner(r)?;
        let decay = |v: Value| -> Value {
            match (&v.ty, &v.loc) {
                (Ty::Array { elem, .. }, Loc::Mem(a)) => {
                    Value::scalar(Ty::ptr_to((**elem).clone()), *a)
                }
                _ => v,
            }
        };
        let lv = decay(lv);
        let rv = decay(rv);
        let lp = matches!(lv.ty, Ty::Ptr { .. });
        let rp = matches!(rv.ty, Ty::Ptr { .. });
        // Pointer arithmetic.
        if lp || rp {
            for (v, e) in [(&lv, l), (&rv, r)] {
                if let Ty::Float { name, .. } = &v.ty {
                    return Err(Error::at(
                        e.span,
                        if matches!(op, BinOp::Add | BinOp::Sub) {
                            format!("cannot add {name} to a pointer")
                        } else {
                            format!("cannot use {name} with a pointer: cast it to an integer")
                        },
                    ));
                }
            }
            let a = self.scalar(&lv, l.span)?;
            let b = self.scalar(&rv, r.span)?;
            let scale = |t: &Ty| match t {
                Ty::Ptr { pointee, .. } => match **pointee {
                    Ty::Void => 1,
                    ref p => p.size().max(1),
                },
                _ => 1,
            };
            return match op {
                BinOp::Add | BinOp::Sub if lp && !rp => {
                    let Ty::Int { .. } = rv.ty else {
                        return Err(Error::at(
                            r.span,
                            format!("cannot add {} to a pointer", describe_ty(&rv.ty)),
                        ));
                    };
                    let off = b.wrapping_mul(scale(&lv.ty));
                    let v = if op == BinOp::Add {
                        a.wrapping_add(off)
                    } else {
                        a.wrapping_sub(off)
                    };
                    Ok(Value::scalar(lv.ty.clone(), v))
                }
                BinOp::Add if rp && !lp => {
                    let off = a.wrapping_mul(scale(&rv.ty));
                    Ok(Value::scalar(rv.ty.clone(), b.wrapping_add(off)))
                }
                BinOp::Sub if lp && rp => {
                    let (sa, sb) = (scale(&lv.ty), scale(&rv.ty));
                    if sa != sb {
                        return Err(Error::at(
                            sp,
                            format!(
                                "cannot subtract pointers to different types ({} and {})",
                                lv.ty.name(),
                                rv.ty.name()
                            ),
                        ));
                    }
                    Ok(Value::scalar(
                        Ty::long(),
                        ((a.wrapping_sub(b) as i64) / sa as i64) as u64,
                    ))
                }
                BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => Ok(
                    Value::scalar(self.bool_ty(), u64::from(compare(op, a, b, false))),
                ),
                _ => Err(Error::at(
                    sp,
                    format!(
                        "operator '{}' cannot be applied to a pointer: cast it to an integer first",
                        op.symbol()
                    ),
                )),
            };
        }
        let lf = matches!(lv.ty, Ty::Float { .. });
        let rf = matches!(rv.ty, Ty::Float { .. });
        if (lf || rf)
            && matches!(lv.ty, Ty::Int { .. } | Ty::Float { .. })
            && matches!(rv.ty, Ty::Int { .. } | Ty::Float { .. })
        {
            return self.float_binary(op, &lv, &rv, l, r, sp);
        }
        for (v, e) in [(&lv, l), (&rv, r)] {
            if !matches!(v.ty, Ty::Int { .. }) {
                return Err(Error::at(
                    e.span,
                    format!(
                        "operator '{}' needs numbers, but this is {}",
                        op.symbol(),
                        describe_ty(&v.ty)
                    ),
                ));
            }
        }
        let a = self.scalar(&lv, l.span)?;
        let b = self.scalar(&rv, r.span)?;
        if matches!(op, BinOp::Shl | BinOp::Shr) {
            let ty = promote(&lv.ty);
            let bits = ty.size() * 8;
            let count = if rv.ty.is_signed() {
                b as i64
            } else {
                b.min(i64::MAX as u64) as i64
            };
            if !self.types_only && (count < 0 || count as u64 >= bits) {
                return Err(Error::at(
                    r.span,
                    format!(
                        "shift count {count} is out of range for a {bits}-bit value (0..{})",
                        bits - 1
                    ),
                ));
            }
            let c = (count as u64).min(63) as u32;
            let v = if op == BinOp::Shl {
                a << c
            } else if ty.is_signed() {
                (sext(a, ty.size()) >> c) as u64
            } else {
                trunc(a, ty.size()) >> c
            };
            return Ok(Value::scalar(ty.clone(), trunc(v, ty.size())));
        }
        let ty = common(&lv.ty, &rv.ty);
        let signed = ty.is_signed();
        let size = ty.size();
        let (a, b) = if signed {
            (sext(a, size) as u64, sext(b, size) as u64)
        } else {
            (trunc(a, size), trunc(b, size))
        };
        let v = match op {
            BinOp::Add => a.wrapping_add(b),
            BinOp::Sub => a.wrapping_sub(b),
            BinOp::Mul => a.wrapping_mul(b),
            BinOp::Div | BinOp::Rem => {
                if b == 0 {
                    if self.types_only {
                        0
                    } else {
                        return Err(Error::at(r.span, "division by zero"));
                    }
                } else if signed {
                    let (x, y) = (a as i64, b as i64);
                    (if op == BinOp::Div {
                        x.wrapping_div(y)
                    } else {
                        x.wrapping_rem(y)
                    }) as u64
                } else if op == BinOp::Div {
                    a / b
                } else {
                    a % b
                }
            }
            BinOp::BitAnd => a & b,
            BinOp::BitOr => a | b,
            BinOp::BitXor => a ^ b,
            _ => {
                return Ok(Value::scalar(
                    self.bool_ty(),
                    u64::from(compare(op, a, b, signed)),
                ));
            }
        };
        Ok(Value::scalar(ty.clone(), trunc(v, size)))
    }

    /// `+ - * /` and comparisons with a floating-point operand: the other
    /// converted, the result in the wider float type (C's conversions).
    fn float_binary(
        &mut self,
        op: BinOp,
        lv: &Value,
        rv: &Value,
        l: &Expr,
        r: &Expr,
        sp: Span,
    ) -> Result<Value, Error> {
        let ty = match (&lv.ty, &rv.ty) {
            (Ty::Float { size: a, .. }, Ty::Float { size: b, .. }) => {
                if b > a {
                    rv.ty.clone()
                } else {
                    lv.ty.clone()
                }
            }
            (Ty::Float { .. }, _) => lv.ty.clone(),
            _ => rv.ty.clone(),
        };
        let a = self.float_of(lv, l.span)?;
        let b = self.float_of(rv, r.span)?;
        let v = match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => {
                let t = match op {
                    BinOp::Lt => a < b,
                    BinOp::Le => a <= b,
                    BinOp::Gt => a > b,
                    BinOp::Ge => a >= b,
                    BinOp::Eq => a == b,
                    _ => a != b,
                };
                return Ok(Value::scalar(self.bool_ty(), u64::from(t)));
            }
            _ => {
                return Err(Error::at(
                    sp,
                    format!(
                        "operator '{}' needs integers, but this is {}",
                        op.symbol(),
                        ty.display_name(self.rust)
                    ),
                ));
            }
        };
        Ok(float_value(ty, v))
    }

    /// Converts `v` to `ty` (C casts).
    pub fn cast(&mut self, v: Value, ty: Ty, sp: Span) -> Result<Value, Error> {
        match (&ty, &v.ty) {
            (Ty::Float { .. }, Ty::Int { .. } | Ty::Float { .. }) => {
                let f = self.float_of(&v, sp)?;
                Ok(float_value(ty, f))
            }
            (Ty::Int { kind, .. }, Ty::Float { .. }) => {
                let f = self.float_of(&v, sp)?;
                // Toward zero, then wrapped to the type as gdb (and C on
                // x86) do: (unsigned char)300.5 is 44, -1.0 as u8 is 255.
                let x = if *kind == IntKind::Bool {
                    u64::from(f != 0.0)
                } else if !ty.is_signed() && ty.size() == 8 && f >= 9_223_372_036_854_775_808.0 {
                    f as u64
                } else {
                    f as i64 as u64
                };
                Ok(Value::scalar(ty.clone(), trunc(x, ty.size())))
            }
            (
                Ty::Int { .. } | Ty::Ptr { .. },
                Ty::Int { .. } | Ty::Ptr { .. } | Ty::Func { .. } | Ty::Array { .. },
            ) => {
                let x = self.scalar(&v, sp)?;
                Ok(Value::scalar(ty.clone(), trunc(x, ty.size())))
            }
            (Ty::Void, _) => Ok(Value {
                ty,
                loc: Loc::Bytes(Vec::new()),
            }),
            (Ty::Agg { .. }, _) if ty.size() == v.ty.size() => Ok(Value { ty, loc: v.loc }),
            _ => Err(Error::at(
                sp,
                format!("cannot cast {} to {}", describe_ty(&v.ty), ty.name()),
            )),
        }
    }

    fn assign(&mut self, l: &Expr, r: &Expr, sp: Span) -> Result<Value, Error> {
        let rv = self.eval_inner(r)?;
        if let ExprKind::Dollar(n) = &l.kind
            && register_number(n).is_none()
            && !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit() || c == '$')
        {
            // Convenience variable: a snapshot of the value.
            let bytes = if self.types_only {
                vec![0; rv.ty.size() as usize]
            } else {
                self.bytes(&rv, r.span)?
            };
            let v = Value {
                ty: rv.ty.clone(),
                loc: Loc::Bytes(bytes),
            };
            if !self.types_only {
                self.env.vars.insert(n.clone(), v.clone());
            }
            return Ok(v);
        }
        let lv = self.eval_inner(l)?;
        let numeric = |t: &Ty| t.is_scalar() || matches!(t, Ty::Float { .. });
        let rv = if numeric(&lv.ty) && numeric(&rv.ty) && rv.ty != lv.ty {
            self.cast(rv, lv.ty.clone(), r.span)?
        } else if lv.ty.size() != rv.ty.size() {
            return Err(Error::at(
                sp,
                format!("cannot assign {} to {}", describe_ty(&rv.ty), lv.ty.name()),
            ));
        } else {
            rv
        };
        if self.types_only {
            return Ok(lv);
        }
        let data = self.bytes(&rv, r.span)?;
        match lv.loc {
            Loc::Mem(a) => {
                let f = self.frame(sp, "writing memory")?;
                f.write(a, &data)
                    .map_err(|_| Error::at(l.span, format!("memory at {a:#x} is not writable")))?;
                Ok(Value {
                    ty: lv.ty,
                    loc: Loc::Mem(a),
                })
            }
            Loc::Reg(reg) => {
                let f = self.frame(sp, "writing registers")?;
                f.write_register(reg, le(&data)).map_err(|m| {
                    Error::at(
                        l.span,
                        format!("cannot write register {}: {m}", reg_name(reg)),
                    )
                })?;
                Ok(Value {
                    ty: lv.ty,
                    loc: Loc::Bytes(data),
                })
            }
            Loc::Bits { addr, bit, bits } => {
                let nbytes = ((bit + bits).div_ceil(8)).min(8) as usize;
                let raw = le(&self.read(addr, nbytes, l.span)?);
                let mask = if bits >= 64 {
                    u64::MAX
                } else {
                    ((1u64 << bits) - 1) << bit
                };
                let new = (raw & !mask) | ((le(&data) << bit) & mask);
                let f = self.frame(sp, "writing memory")?;
                f.write(addr, &new.to_le_bytes()[..nbytes]).map_err(|_| {
                    Error::at(l.span, format!("memory at {addr:#x} is not writable"))
                })?;
                Ok(Value {
                    ty: lv.ty,
                    loc: Loc::Bytes(data),
                })
            }
            Loc::Bytes(_) | Loc::OptimizedOut => Err(Error::at(
                l.span,
                "left side of '=' is not an lvalue (a variable, member, element or *pointer)",
            )),
        }
    }
}

impl Evaluator<'_> {
    /// The type of comparisons: `bool` in Rust, `int` in C.
    fn bool_ty(&self) -> Ty {
        if self.rust {
            crate::ty::builtin("bool").unwrap_or_else(Ty::c_int)
        } else {
            Ty::c_int()
        }
    }
}

/// CPU numbers of a mask: `0, 1, 3`.
fn cpu_list(mask: u64) -> String {
    (0..64)
        .filter(|i| mask >> i & 1 == 1)
        .map(|i: u64| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A float of type `ty` (4 or 8 bytes) holding `f` (rounded to `f32`).
fn float_value(ty: Ty, f: f64) -> Value {
    let bytes = if ty.size() == 4 {
        (f as f32).to_bits().to_le_bytes().to_vec()
    } else {
        f.to_bits().to_le_bytes().to_vec()
    };
    Value {
        ty,
        loc: Loc::Bytes(bytes),
    }
}

/// Is `name` a type name (for casts)?
pub fn is_type_name(elf: &Elf, name: &str) -> bool {
    crate::ty::builtin(name).is_some() || elf.types_named(name).is_ok_and(|v| !v.is_empty())
}

fn reg_name(r: u16) -> String {
    match r {
        49 => "eflags".into(),
        50 => "es".into(),
        51 => "cs".into(),
        52 => "ss".into(),
        53 => "ds".into(),
        54 => "fs".into(),
        55 => "gs".into(),
        58 => "fs_base".into(),
        59 => "gs_base".into(),
        r => Register(r).name(),
    }
}

fn describe_ty(t: &Ty) -> String {
    match t {
        Ty::Void => "void".into(),
        Ty::Agg {
            kind: AggKind::RustEnum,
            name,
            ..
        } => format!("enum {name}"),
        Ty::Agg { name, .. } => name.clone(),
        other => other.name(),
    }
}

fn promote(t: &Ty) -> Ty {
    match t {
        Ty::Int { size, kind, .. }
            if *size < 4
                || matches!(
                    kind,
                    IntKind::Bool | IntKind::Char | IntKind::Enum(_) | IntKind::RustChar
                ) =>
        {
            if *size < 4 {
                Ty::c_int()
            } else {
                Ty::int(*size, t.is_signed())
            }
        }
        _ => t.clone(),
    }
}

/// The usual arithmetic conversions.
fn common(a: &Ty, b: &Ty) -> Ty {
    let (a, b) = (promote(a), promote(b));
    if a == b {
        return a;
    }
    let (sa, sb) = (a.size(), b.size());
    if sa > sb {
        return a;
    }
    if sb > sa {
        return b;
    }
    // Same size: unsigned wins.
    if !a.is_signed() { a } else { b }
}

fn compare(op: BinOp, a: u64, b: u64, signed: bool) -> bool {
    let o = if signed {
        (a as i64).cmp(&(b as i64))
    } else {
        a.cmp(&b)
    };
    use std::cmp::Ordering::*;
    match op {
        BinOp::Eq => o == Equal,
        BinOp::Ne => o != Equal,
        BinOp::Lt => o == Less,
        BinOp::Le => o != Greater,
        BinOp::Gt => o == Greater,
        BinOp::Ge => o != Less,
        _ => false,
    }
}
