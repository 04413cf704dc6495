//! Compiles an expression into the kernel's bytecode ([`proto::bytecode`])
//! for one code address: breakpoint conditions and probe predicates run in
//! the kernel at that address, with the trap frame's registers and
//! fault-safe memory reads, and no host in the loop.
//!
//! The same language as `print` (one parser, the evaluator's name lookup,
//! types and member offsets); what differs is that values are not read but
//! turned into code:
//! - parameters and locals: their DWARF location at that pc, compiled into
//!   register reads, CFA arithmetic (from the CFI row at the pc) and loads;
//! - globals: their address; registers: `$rdi`...; `$task`, `$cpu` (and for
//!   return probes `ret`/`$retval`, `$duration`);
//! - convenience variables and history (`$1`, `$x`): their value now, as a
//!   constant;
//! - C operators over integers and pointers (pointer arithmetic scaled),
//!   `&& || ! ?:`, casts, members through `.` and `->`, indexing,
//!   `container_of`, `sizeof`; string equality `p == "text"` for C strings,
//!   byte arrays and Rust `&str`.
//!
//! Refused with the reason: floats, assignments, helper calls, bit fields,
//! Rust enum variants, whole structs as values, variables optimized out at
//! the pc or held in DWARF pieces, programs over the verifier's limits.

use proto::bytecode::{self, Program, Writer, op};
use symbols::{Elf, LocOp, Register, VarLocation};

use crate::Error;
use crate::ast::{BinOp, Expr, ExprKind, UnOp};
use crate::eval::{Env, Evaluator, Frame, Loc, Value};
use crate::lex::Span;
use crate::ty::{AggKind, Ty};

/// What a compiled expression may name besides the program's variables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// A return probe: `ret`/`$retval` (the return value) and `$duration`.
    pub ret: bool,
}

/// The frame the evaluator sees while compiling: only the pc (for the
/// scope); nothing can be read.
struct PcOnly(u64);

impl Frame for PcOnly {
    fn register(&mut self, dwarf: u16) -> Option<u64> {
        (dwarf == 16).then_some(self.0)
    }
    fn cfa(&mut self) -> Option<u64> {
        None
    }
    fn read(&mut self, addr: u64, _len: usize) -> Result<Vec<u8>, String> {
        Err(format!(
            "memory at {addr:#x} cannot be read while compiling a condition"
        ))
    }
    fn write(&mut self, _addr: u64, _data: &[u8]) -> Result<(), String> {
        Err("conditions cannot write".into())
    }
    fn write_register(&mut self, _dwarf: u16, _value: u64) -> Result<(), String> {
        Err("conditions cannot write".into())
    }
}

/// Where a compiled operand is: its value, or its address, on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Value,
    Addr,
}

struct Item {
    ty: Ty,
    at: At,
}

/// A base address for offset arithmetic through the evaluator (members are
/// located at `FAKE_BASE + offset`).
const FAKE_BASE: u64 = 0x4000_0000_0000;

/// The gdb register number (the bytecode's) of a DWARF register.
fn gdb_reg(r: Register) -> Option<u8> {
    Some(match r.0 {
        0 => 0,
        1 => 3,
        2 => 2,
        3 => 1,
        n @ 4..=16 => n as u8,
        49 => 17,
        51 => 18,
        52 => 19,
        _ => return None,
    })
}

/// Compiles `text` as a condition at `pc`.
pub fn compile(
    elf: &Elf,
    env: &mut Env,
    pc: u64,
    text: &str,
    cx: Context,
) -> Result<Program, Error> {
    let mut frame = PcOnly(pc);
    let ev = Evaluator::new(elf, Some(&mut frame), env);
    let e = ev.parse(text)?;
    let mut c = Compiler {
        ev,
        elf,
        pc,
        w: Writer::new(),
        cx,
    };
    c.rvalue(&e)?;
    c.w.finish()
        .map_err(|err| Error::msg(format!("cannot run this in the kernel: {err}")))
}

struct Compiler<'a> {
    ev: Evaluator<'a>,
    elf: &'a Elf,
    pc: u64,
    w: Writer,
    cx: Context,
}

fn unsupported(sp: Span, what: &str) -> Error {
    Error::at(sp, format!("{what} cannot be evaluated in the kernel"))
}

impl Compiler<'_> {
    /// Keeps the value on the stack in its type's canonical 64-bit form
    /// (sign or zero extended from its size).
    fn norm(&mut self, ty: &Ty) {
        if let Ty::Int { size, signed, .. } = ty
            && *size < 8
        {
            self.w.ext(size * 8, *signed);
        }
    }

    /// Compiles `e` and leaves a scalar value on the stack.
    fn rvalue(&mut self, e: &Expr) -> Result<Ty, Error> {
        let it = self.expr(e)?;
        self.load(it, e.span)
    }

    fn load(&mut self, it: Item, sp: Span) -> Result<Ty, Error> {
        if it.at == At::Value {
            return Ok(it.ty);
        }
        match &it.ty {
            Ty::Int { size, signed, .. } => {
                if *size > 8 {
                    return Err(unsupported(sp, "a 128-bit integer"));
                }
                self.w.load(*size, *signed);
                Ok(it.ty)
            }
            Ty::Ptr { .. } => {
                self.w.load(8, false);
                Ok(it.ty)
            }
            // Arrays decay to a pointer to their first element.
            Ty::Array { elem, .. } => Ok(Ty::ptr_to((**elem).clone())),
            Ty::Func { .. } => Ok(Ty::ptr_to(it.ty)),
            Ty::Float { .. } => Err(unsupported(sp, "floating point")),
            Ty::Agg { name, .. } => Err(Error::at(
                sp,
                format!("{name} is not a number: compare one of its members"),
            )),
            Ty::Void => Err(Error::at(sp, "void has no value")),
        }
    }

    fn expr(&mut self, e: &Expr) -> Result<Item, Error> {
        let sp = e.span;
        match &e.kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Char(_)
            | ExprKind::SizeofType(_)
            | ExprKind::SizeofExpr(_) => {
                let v = self.ev.eval(e)?;
                self.constant(v, sp)
            }
            ExprKind::Str(_) => Err(Error::at(
                sp,
                "a string can only be compared (== or !=) in a condition",
            )),
            ExprKind::Name(n) => self.name(e, n, sp),
            ExprKind::Dollar(n) => self.dollar(e, n, sp),
            ExprKind::Unary(o, x) => self.unary(*o, x, sp),
            ExprKind::Binary(o, l, r) => self.binary(*o, l, r, sp),
            ExprKind::Cond(c, a, b) => {
                let ty = self.ev.type_of(e)?;
                self.truth(c)?;
                let l_else = self.w.jump(op::JZ);
                self.rvalue(a)?;
                let l_end = self.w.jump(op::JMP);
                self.w.bind(l_else);
                self.rvalue(b)?;
                self.w.bind(l_end);
                Ok(Item { ty, at: At::Value })
            }
            ExprKind::Cast(_, x) => {
                let ty = self.ev.type_of(e)?;
                self.rvalue(x)?;
                if !ty.is_scalar() {
                    return Err(Error::at(sp, format!("cannot cast to {} here", ty.name())));
                }
                self.norm(&ty);
                Ok(Item { ty, at: At::Value })
            }
            ExprKind::Member {
                base,
                name,
                name_span,
                arrow,
            } => {
                let agg = if *arrow {
                    match self.rvalue(base)? {
                        Ty::Ptr { pointee, .. } => *pointee,
                        t => {
                            return Err(Error::at(
                                base.span,
                                format!("{} is not a pointer: use '.'", t.name()),
                            ));
                        }
                    }
                } else {
                    let it = self.expr(base)?;
                    if it.at != At::Addr {
                        return Err(Error::at(
                            base.span,
                            "members of values held in registers cannot be read in the kernel",
                        ));
                    }
                    it.ty
                };
                let (off, ty) = self.member_offset(&agg, name, *name_span)?;
                if off != 0 {
                    self.w.konst(off).op(op::ADD);
                }
                Ok(Item { ty, at: At::Addr })
            }
            ExprKind::Index(a, i) => {
                let base = self.expr(a)?;
                let elem = match &base.ty {
                    Ty::Array { elem, .. } if base.at == At::Addr => (**elem).clone(),
                    Ty::Ptr { pointee, .. } => {
                        let p = (**pointee).clone();
                        self.load(base, a.span)?;
                        p
                    }
                    t => {
                        return Err(Error::at(a.span, format!("cannot index {}", t.name())));
                    }
                };
                self.rvalue(i)?;
                let size = elem.size();
                if size != 1 {
                    self.w.konst(size).op(op::MUL);
                }
                self.w.op(op::ADD);
                Ok(Item {
                    ty: elem,
                    at: At::Addr,
                })
            }
            ExprKind::ContainerOf(p, tn, member) => {
                let ty = self.ev.type_of(e)?;
                let Ty::Ptr { pointee, .. } = &ty else {
                    return Err(Error::at(sp, format!("container_of: {tn} is not a type")));
                };
                let (off, _) = self.member_offset(pointee, member, sp)?;
                self.rvalue(p)?;
                if off != 0 {
                    self.w.konst(off).op(op::SUB);
                }
                Ok(Item { ty, at: At::Value })
            }
            ExprKind::Assign(..) => Err(Error::at(sp, "a condition cannot assign")),
            ExprKind::Call(f, _) => Err(unsupported(sp, &format!("the helper ${f}"))),
        }
    }

    fn constant(&mut self, v: Value, sp: Span) -> Result<Item, Error> {
        match &v.loc {
            Loc::Bytes(b) => {
                let mut w = [0u8; 8];
                let n = b.len().min(8);
                w[..n].copy_from_slice(&b[..n]);
                let raw = u64::from_le_bytes(w);
                self.w.konst(raw);
                self.norm(&v.ty);
                Ok(Item {
                    ty: v.ty,
                    at: At::Value,
                })
            }
            Loc::Mem(a) => {
                self.w.konst(*a);
                Ok(Item {
                    ty: v.ty,
                    at: At::Addr,
                })
            }
            Loc::Reg(r) => {
                let g = gdb_reg(Register(*r)).ok_or_else(|| {
                    Error::at(sp, format!("register {r} is not in the trap frame"))
                })?;
                self.w.reg(g);
                self.norm(&v.ty);
                Ok(Item {
                    ty: v.ty,
                    at: At::Value,
                })
            }
            Loc::Bits { .. } => Err(unsupported(sp, "a bit field")),
            Loc::OptimizedOut => Err(Error::at(sp, "the value is optimized out here")),
        }
    }

    fn name(&mut self, e: &Expr, n: &str, sp: Span) -> Result<Item, Error> {
        if self.cx.ret && n == "ret" && self.ev.scope().find(n).is_none() {
            self.w.ctx(bytecode::CTX_RET);
            return Ok(Item {
                ty: Ty::long(),
                at: At::Value,
            });
        }
        let Some(var) = self.ev.scope().find(n).cloned() else {
            // Globals, functions, true/false/NULL: the evaluator's answer.
            let v = self.ev.eval(e)?;
            return self.constant(v, sp);
        };
        let ty = Ty::from_dwarf(self.elf, var.ty);
        let ops = match &var.location {
            VarLocation::OptimizedOut => {
                return Err(Error::at(
                    sp,
                    format!("'{n}' is optimized out at {:#x}", self.pc),
                ));
            }
            VarLocation::Const(b) => {
                let v = Value {
                    ty,
                    loc: Loc::Bytes(b.clone()),
                };
                return self.constant(v, sp);
            }
            VarLocation::Expr(le) => {
                let ops = le.ops().map_err(|m| {
                    Error::at(sp, format!("cannot locate '{n}' in the kernel: {m}"))
                })?;
                let fb = match le.frame_base_ops() {
                    Some(r) => Some(r.map_err(|m| {
                        Error::at(sp, format!("cannot locate '{n}' in the kernel: {m}"))
                    })?),
                    None => None,
                };
                (ops, fb)
            }
        };
        let (ops, fb) = ops;
        let at = self.location(&ops, fb.as_deref(), n, sp)?;
        if at == At::Value {
            self.norm(&ty);
        }
        Ok(Item { ty, at })
    }

    /// Compiles a DWARF location: `At::Addr` when it leaves an address,
    /// `At::Value` for a register or a computed value.
    fn location(
        &mut self,
        ops: &[LocOp],
        frame_base: Option<&[LocOp]>,
        n: &str,
        sp: Span,
    ) -> Result<At, Error> {
        let reg = |r: Register| {
            gdb_reg(r).ok_or_else(|| {
                Error::at(
                    sp,
                    format!("'{n}' lives in register {r}, which the trap frame does not hold"),
                )
            })
        };
        if let [LocOp::Reg(r)] = ops {
            self.w.reg(reg(*r)?);
            return Ok(At::Value);
        }
        let mut at = At::Addr;
        for o in ops {
            match o {
                LocOp::Reg(_) => {
                    return Err(Error::at(
                        sp,
                        format!("'{n}' has a location kdbg cannot compile"),
                    ));
                }
                LocOp::Breg(r, off) => {
                    self.w.reg(reg(*r)?).konst(*off as u64).op(op::ADD);
                }
                LocOp::Fbreg(off) => {
                    let fb = frame_base.ok_or_else(|| {
                        Error::at(
                            sp,
                            format!("'{n}' is relative to a frame base the function does not have"),
                        )
                    })?;
                    match fb {
                        [LocOp::Reg(r)] => {
                            self.w.reg(reg(*r)?);
                        }
                        _ => {
                            if self.location(fb, None, n, sp)? != At::Addr {
                                return Err(Error::at(sp, "unsupported frame base"));
                            }
                        }
                    }
                    self.w.konst(*off as u64).op(op::ADD);
                }
                LocOp::CallFrameCfa => {
                    let (r, off) = self.elf.cfa_rule(self.pc).ok_or_else(|| {
                        Error::at(
                            sp,
                            format!(
                                "no call frame information at {:#x} to locate '{n}'",
                                self.pc
                            ),
                        )
                    })?;
                    self.w.reg(reg(r)?).konst(off as u64).op(op::ADD);
                }
                LocOp::Const(v) => {
                    self.w.konst(*v);
                }
                LocOp::PlusConst(v) => {
                    self.w.konst(*v).op(op::ADD);
                }
                LocOp::Plus => {
                    self.w.op(op::ADD);
                }
                LocOp::Minus => {
                    self.w.op(op::SUB);
                }
                LocOp::Deref(size) => {
                    self.w.load((*size).clamp(1, 8), false);
                }
                LocOp::StackValue => at = At::Value,
            }
        }
        Ok(at)
    }

    fn dollar(&mut self, e: &Expr, n: &str, sp: Span) -> Result<Item, Error> {
        let ctx = match n {
            "task" => Some(bytecode::CTX_TASK),
            "cpu" => Some(bytecode::CTX_CPU),
            "retval" if self.cx.ret => Some(bytecode::CTX_RET),
            "duration" if self.cx.ret => Some(bytecode::CTX_DURATION),
            "retval" | "duration" => {
                return Err(Error::at(
                    sp,
                    format!("${n} exists only in return probes (kretprobe ... if EXPR)"),
                ));
            }
            _ => None,
        };
        if let Some(c) = ctx {
            self.w.ctx(c);
            let ty = if c == bytecode::CTX_RET {
                Ty::long()
            } else {
                Ty::ulong()
            };
            return Ok(Item { ty, at: At::Value });
        }
        if let Some(r) = bytecode::reg_number(n) {
            self.w.reg(r);
            let ty = if matches!(n, "pc" | "rip" | "sp" | "rsp" | "fp" | "rbp") {
                Ty::ulong()
            } else {
                Ty::long()
            };
            return Ok(Item { ty, at: At::Value });
        }
        // History and convenience variables: their value now.
        let v = self.ev.eval(e)?;
        self.constant(v, sp)
    }

    /// `(offset, type)` of member `name` of aggregate `agg`.
    fn member_offset(&mut self, agg: &Ty, name: &str, sp: Span) -> Result<(u64, Ty), Error> {
        if let Ty::Agg {
            kind: AggKind::RustEnum,
            ..
        } = agg
        {
            return Err(unsupported(sp, "a Rust enum's variant"));
        }
        let v = self.ev.member(
            Value {
                ty: agg.clone(),
                loc: Loc::Mem(FAKE_BASE),
            },
            name,
            sp,
        )?;
        match v.loc {
            Loc::Mem(a) => Ok((a.wrapping_sub(FAKE_BASE), v.ty)),
            Loc::Bits { .. } => Err(unsupported(sp, "a bit field")),
            _ => Err(unsupported(sp, "this member")),
        }
    }

    /// Compiles `e` as a truth value (0 or non-zero) on the stack.
    fn truth(&mut self, e: &Expr) -> Result<(), Error> {
        self.rvalue(e)?;
        Ok(())
    }

    fn unary(&mut self, o: UnOp, x: &Expr, sp: Span) -> Result<Item, Error> {
        match o {
            UnOp::Deref => match self.rvalue(x)? {
                Ty::Ptr { pointee, .. } if *pointee == Ty::Void => {
                    Err(Error::at(sp, "cannot dereference void *: cast it first"))
                }
                Ty::Ptr { pointee, .. } => Ok(Item {
                    ty: *pointee,
                    at: At::Addr,
                }),
                t => Err(Error::at(
                    sp,
                    format!("cannot dereference {}: cast it first", t.name()),
                )),
            },
            UnOp::AddrOf => {
                let it = self.expr(x)?;
                if it.at != At::Addr {
                    return Err(Error::at(
                        sp,
                        "cannot take the address of a value in a register",
                    ));
                }
                Ok(Item {
                    ty: Ty::ptr_to(it.ty),
                    at: At::Value,
                })
            }
            UnOp::LNot => {
                self.rvalue(x)?;
                self.w.op(op::LNOT);
                Ok(Item {
                    ty: Ty::c_int(),
                    at: At::Value,
                })
            }
            UnOp::Neg | UnOp::Not | UnOp::Plus => {
                let ty = promote(&self.rvalue(x)?, sp)?;
                match o {
                    UnOp::Neg => {
                        self.w.op(op::NEG);
                    }
                    UnOp::Not => {
                        self.w.op(op::NOT);
                    }
                    _ => {}
                }
                self.norm(&ty);
                Ok(Item { ty, at: At::Value })
            }
        }
    }

    fn binary(&mut self, o: BinOp, l: &Expr, r: &Expr, sp: Span) -> Result<Item, Error> {
        let int = Item {
            ty: Ty::c_int(),
            at: At::Value,
        };
        match o {
            BinOp::LAnd | BinOp::LOr => {
                // a && b: a; ne0; dup; jz end; pop; b; ne0; end:
                self.rvalue(l)?;
                self.w.konst(0).op(op::NE).op(op::DUP);
                let end = self.w.jump(if o == BinOp::LAnd { op::JZ } else { op::JNZ });
                self.w.op(op::POP);
                self.rvalue(r)?;
                self.w.konst(0).op(op::NE);
                self.w.bind(end);
                return Ok(int);
            }
            BinOp::Eq | BinOp::Ne => {
                if let ExprKind::Str(s) = &r.kind {
                    return self.str_eq(l, s, o == BinOp::Ne, sp);
                }
                if let ExprKind::Str(s) = &l.kind {
                    return self.str_eq(r, s, o == BinOp::Ne, sp);
                }
            }
            _ => {}
        }
        let lt = self.rvalue(l)?;
        let rt = self.rvalue(r)?;
        let lp = matches!(lt, Ty::Ptr { .. });
        let rp = matches!(rt, Ty::Ptr { .. });
        // Pointer arithmetic.
        if matches!(o, BinOp::Add | BinOp::Sub) && (lp || rp) {
            let elem = |t: &Ty| match t {
                Ty::Ptr { pointee, .. } => pointee.size().max(1),
                _ => 1,
            };
            if lp && rp {
                if o == BinOp::Add {
                    return Err(Error::at(sp, "cannot add two pointers"));
                }
                self.w.op(op::SUB);
                let size = elem(&lt);
                if size != 1 {
                    self.w.konst(size).op(op::DIVS);
                }
                return Ok(Item {
                    ty: Ty::long(),
                    at: At::Value,
                });
            }
            let (size, ty) = if lp { (elem(&lt), lt) } else { (elem(&rt), rt) };
            if size != 1 {
                // Scale the integer operand (top of stack when the pointer
                // is on the left; below it otherwise).
                if !lp {
                    self.w.op(op::SWAP);
                }
                self.w.konst(size).op(op::MUL);
            }
            self.w.op(if o == BinOp::Add { op::ADD } else { op::SUB });
            return Ok(Item { ty, at: At::Value });
        }
        let common = if lp || rp {
            Ty::ulong()
        } else {
            common_type(&promote(&lt, l.span)?, &promote(&rt, r.span)?)
        };
        let signed = common.is_signed();
        let code = match o {
            BinOp::Add => op::ADD,
            BinOp::Sub => op::SUB,
            BinOp::Mul => op::MUL,
            BinOp::Div => {
                if signed {
                    op::DIVS
                } else {
                    op::DIVU
                }
            }
            BinOp::Rem => {
                if signed {
                    op::REMS
                } else {
                    op::REMU
                }
            }
            BinOp::Shl => op::SHL,
            BinOp::Shr => {
                if lt.is_signed() {
                    op::SHRS
                } else {
                    op::SHRU
                }
            }
            BinOp::BitAnd => op::AND,
            BinOp::BitOr => op::OR,
            BinOp::BitXor => op::XOR,
            BinOp::Eq => op::EQ,
            BinOp::Ne => op::NE,
            BinOp::Lt => pick(signed, op::LTS, op::LTU),
            BinOp::Le => pick(signed, op::LES, op::LEU),
            BinOp::Gt => pick(signed, op::GTS, op::GTU),
            BinOp::Ge => pick(signed, op::GES, op::GEU),
            BinOp::LAnd | BinOp::LOr => return Err(Error::at(sp, "internal: logic op")),
        };
        // Operands of a common type narrower than 64 bits compare and
        // compute correctly in their canonical 64-bit forms only if both
        // are in that type's form.
        self.w.op(code);
        let is_cmp = (op::EQ..=op::GEU).contains(&code);
        if is_cmp {
            return Ok(int);
        }
        let ty = if matches!(o, BinOp::Shl | BinOp::Shr) {
            promote(&lt, l.span)?
        } else {
            common
        };
        self.norm(&ty);
        Ok(Item { ty, at: At::Value })
    }

    /// `x == "text"` / `x != "text"`: C strings (`char *`, `*const u8`),
    /// byte arrays, and Rust `&str`.
    fn str_eq(&mut self, x: &Expr, s: &[u8], ne: bool, sp: Span) -> Result<Item, Error> {
        if s.len() > bytecode::MAX_STR {
            return Err(Error::at(
                sp,
                format!(
                    "string of {} bytes is too long to compare in the kernel (at most {})",
                    s.len(),
                    bytecode::MAX_STR
                ),
            ));
        }
        let it = self.expr(x)?;
        match &it.ty {
            Ty::Agg { name, .. } if name.ends_with("str") && it.at == At::Addr => {
                let (len_off, _) = self.member_offset(&it.ty, "length", x.span)?;
                let (ptr_off, _) = self.member_offset(&it.ty, "data_ptr", x.span)?;
                self.w.op(op::DUP).konst(len_off).op(op::ADD).load(8, false);
                self.w.konst(s.len() as u64).op(op::EQ);
                let l_false = self.w.jump(op::JZ);
                self.w.konst(ptr_off).op(op::ADD).load(8, false);
                self.w.streq(s, false);
                let l_end = self.w.jump(op::JMP);
                self.w.bind(l_false);
                self.w.op(op::POP).konst(0);
                self.w.bind(l_end);
            }
            Ty::Array { elem, .. } if elem.size() == 1 && it.at == At::Addr => {
                self.w.streq(s, true);
            }
            Ty::Ptr { pointee, .. } if pointee.size() == 1 => {
                self.load(it, x.span)?;
                self.w.streq(s, true);
            }
            t => {
                return Err(Error::at(
                    x.span,
                    format!(
                        "cannot compare {} with a string: use a char pointer, a byte array or &str",
                        t.name()
                    ),
                ));
            }
        }
        if ne {
            self.w.op(op::LNOT);
        }
        Ok(Item {
            ty: Ty::c_int(),
            at: At::Value,
        })
    }
}

fn pick(signed: bool, s: u8, u: u8) -> u8 {
    if signed { s } else { u }
}

/// C integer promotion (pointers stay pointers).
fn promote(t: &Ty, sp: Span) -> Result<Ty, Error> {
    match t {
        Ty::Int { size, signed, .. } if *size < 4 || (*size == 4 && *signed) => {
            let _ = signed;
            Ok(Ty::c_int())
        }
        Ty::Int { size, .. } if *size > 8 => Err(unsupported(sp, "a 128-bit integer")),
        Ty::Int { .. } | Ty::Ptr { .. } => Ok(t.clone()),
        Ty::Float { .. } => Err(unsupported(sp, "floating point")),
        other => Err(Error::at(sp, format!("{} is not a number", other.name()))),
    }
}

/// The usual arithmetic conversions of two promoted integer types.
fn common_type(a: &Ty, b: &Ty) -> Ty {
    let (sa, sb) = (a.size(), b.size());
    let size = sa.max(sb) as u8;
    let signed = match sa.cmp(&sb) {
        std::cmp::Ordering::Equal => a.is_signed() && b.is_signed(),
        std::cmp::Ordering::Greater => a.is_signed(),
        std::cmp::Ordering::Less => b.is_signed(),
    };
    Ty::int(size, signed)
}
