//! Compile a probe's ARGS (`name`, `name->field`, `*name`, `name:string`,
//! `$arg3`, `%rdi`; default: every DWARF parameter) into proto's fetch
//! program, and keep the layout that says how to render each result.

use proto::fetch::{Base, CaptureSpec, FetchKind, FetchOp, MAX_STACK, MAX_STRING};
use serde::Serialize;
use symbols::{BaseEncoding, Elf, Function, Param, ParamLocation, Register, TypeId, TypeKind};

/// Where a captured value comes from in an event record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Argument register `i` (rdi, rsi, rdx, rcx, r8, r9).
    Arg(u8),
    /// Bytes `off..off+8` of the copied stack (offset 0 = entry rsp + 8).
    Stack(u8),
    /// Fetch result `j`.
    Result(u8),
}

/// How to show a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "as")]
pub enum Shape {
    Unsigned {
        size: u8,
        hex: bool,
    },
    Signed {
        size: u8,
    },
    Bool,
    Char,
    Pointer,
    /// A string result; `len` is where a Rust `&str` keeps its length.
    Str {
        len: Option<Source>,
    },
}

/// One named item of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub label: String,
    pub type_name: String,
    pub source: Source,
    pub shape: Shape,
}

/// What a probe captures and how its event is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Layout {
    #[serde(skip)]
    pub spec: CaptureSpec,
    pub items: Vec<Item>,
    /// How the return value of a kretprobe is shown.
    pub ret: Option<Shape>,
    pub ret_type: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    #[error("`{name}` is not a parameter of {func}({params}): use one of those, $argN or %reg")]
    NoParam {
        name: String,
        func: String,
        params: String,
    },
    #[error("`{0}`: parameter is not available at the function entry (optimized out)")]
    Unavailable(String),
    #[error("`{item}`: {why}")]
    Bad { item: String, why: String },
    #[error("the capture needs more than {max} fetch operations: capture fewer items")]
    TooMany { max: usize },
    #[error(
        "`{0}` is not an argument register: use %rdi %rsi %rdx %rcx %r8 %r9 (other registers are not recorded)"
    )]
    Register(String),
}

const ARG_REGS: [&str; 6] = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"];

fn arg_index(r: Register) -> Option<u8> {
    Register::ARGS.iter().position(|a| *a == r).map(|i| i as u8)
}

/// The shape of a value of type `ty` (unknown types: hex).
pub fn shape_of(elf: &Elf, ty: Option<TypeId>, label: &str) -> Shape {
    let hexish = {
        let l = label.to_ascii_lowercase();
        let last = l.rsplit("->").next().unwrap_or(&l);
        [
            "flag", "mask", "addr", "ptr", "bits", "mode", "start", "base", "phys", "virt",
        ]
        .iter()
        .any(|k| last.contains(k))
            || ["ip", "sp", "pc", "va", "pa", "rip", "rsp"].contains(&last)
    };
    let Some(id) = ty else {
        return Shape::Unsigned { size: 8, hex: true };
    };
    let Ok(t) = elf.resolve(id) else {
        return Shape::Unsigned { size: 8, hex: true };
    };
    let size = t.size.unwrap_or(8).clamp(1, 8) as u8;
    match &t.kind {
        TypeKind::Base(BaseEncoding::Signed) => Shape::Signed { size },
        TypeKind::Base(BaseEncoding::Bool) => Shape::Bool,
        TypeKind::Base(BaseEncoding::SignedChar | BaseEncoding::UnsignedChar) if size == 1 => {
            Shape::Char
        }
        TypeKind::Base(_) => Shape::Unsigned { size, hex: hexish },
        TypeKind::Enum { .. } => Shape::Unsigned { size, hex: false },
        TypeKind::Pointer { pointee } => {
            if is_char(elf, *pointee) {
                Shape::Str { len: None }
            } else {
                Shape::Pointer
            }
        }
        _ => Shape::Unsigned { size, hex: true },
    }
}

fn is_char(elf: &Elf, ty: Option<TypeId>) -> bool {
    let Some(id) = ty else { return false };
    // C `char`, Rust `u8`/`i8` (DWARF says unsigned/signed of size 1).
    elf.resolve(id).is_ok_and(|t| {
        matches!(
            t.kind,
            TypeKind::Base(
                BaseEncoding::SignedChar
                    | BaseEncoding::UnsignedChar
                    | BaseEncoding::Signed
                    | BaseEncoding::Unsigned
            )
        ) && t.size == Some(1)
    })
}

struct Builder<'a> {
    elf: &'a Elf,
    func: &'a Function,
    spec: CaptureSpec,
    items: Vec<Item>,
}

impl Builder<'_> {
    fn op(&mut self, op: FetchOp) -> Result<u8, CaptureError> {
        let idx = self.spec.program.len() as u8;
        self.spec
            .program
            .push(op)
            .map_err(|_| CaptureError::TooMany {
                max: proto::fetch::MAX_OPS,
            })?;
        Ok(idx)
    }

    fn need_stack(&mut self, off: u8) -> Result<(), CaptureError> {
        let end = off as usize + 8;
        if end > MAX_STACK {
            return Err(CaptureError::Bad {
                item: "stack argument".into(),
                why: format!("lies beyond the {MAX_STACK} stack bytes a probe copies"),
            });
        }
        self.spec.stack_bytes = self.spec.stack_bytes.max(end as u8);
        Ok(())
    }

    fn param(&self, name: &str) -> Result<&Param, CaptureError> {
        self.func
            .params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| CaptureError::NoParam {
                name: name.to_string(),
                func: self.func.name.clone(),
                params: self
                    .func
                    .params
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The value of a parameter: its register, or its stack slot.
    fn value_source(&mut self, p: &Param) -> Result<Source, CaptureError> {
        match p.location {
            ParamLocation::Register(r) | ParamLocation::RegisterPair(r, _) => arg_index(r)
                .map(Source::Arg)
                .ok_or_else(|| CaptureError::Unavailable(p.name.clone())),
            ParamLocation::Stack { offset } if (8..=64).contains(&offset) => {
                let off = (offset - 8) as u8;
                self.need_stack(off)?;
                Ok(Source::Stack(off))
            }
            _ => Err(CaptureError::Unavailable(p.name.clone())),
        }
    }

    /// A fetch base that holds the parameter's value (an address).
    fn value_base(&mut self, p: &Param) -> Result<Base, CaptureError> {
        match p.location {
            ParamLocation::Register(r) | ParamLocation::RegisterPair(r, _) => arg_index(r)
                .map(Base::Arg)
                .ok_or_else(|| CaptureError::Unavailable(p.name.clone())),
            ParamLocation::Stack { offset } => {
                let j = self.op(FetchOp::new(
                    FetchKind::U64,
                    Base::Reg(proto::fetch::Reg::Rsp),
                    offset,
                ))?;
                Ok(Base::Result(j))
            }
            ParamLocation::Unavailable => Err(CaptureError::Unavailable(p.name.clone())),
        }
    }

    /// Default rendering of one parameter (strings fetched too).
    fn whole_param(&mut self, p: &Param) -> Result<(), CaptureError> {
        let ty = p.ty.and_then(|t| self.elf.resolve(t).ok());
        // Rust &str: pointer and length in a register pair.
        if let (Some(t), ParamLocation::RegisterPair(a, b)) = (&ty, p.location)
            && t.is_rust_str()
            && let (Some(ai), Some(bi)) = (arg_index(a), arg_index(b))
        {
            let j = self.op(FetchOp::new(
                FetchKind::Str(MAX_STRING as u8),
                Base::Arg(ai),
                0,
            ))?;
            self.items.push(Item {
                label: p.name.clone(),
                type_name: p.type_name.clone(),
                source: Source::Result(j),
                shape: Shape::Str {
                    len: Some(Source::Arg(bi)),
                },
            });
            return Ok(());
        }
        let shape = shape_of(self.elf, p.ty, &p.name);
        if let Shape::Str { .. } = shape {
            let base = self.value_base(p)?;
            let j = self.op(FetchOp::new(FetchKind::Str(MAX_STRING as u8), base, 0))?;
            self.items.push(Item {
                label: p.name.clone(),
                type_name: p.type_name.clone(),
                source: Source::Result(j),
                shape,
            });
            return Ok(());
        }
        let source = self.value_source(p)?;
        self.items.push(Item {
            label: p.name.clone(),
            type_name: p.type_name.clone(),
            source,
            shape,
        });
        Ok(())
    }

    fn item(&mut self, text: &str) -> Result<(), CaptureError> {
        if let Some(item) = raw_item(text)? {
            self.items.push(item);
            return Ok(());
        }
        if let Some(name) = text
            .strip_suffix(":string")
            .or_else(|| text.strip_suffix(":str"))
        {
            if let Some(pos) = name.find(['-', '.']) {
                return self.path(name, &name[..pos], &name[pos..], true);
            }
            let p = self.param(name)?.clone();
            let base = self.value_base(&p)?;
            let j = self.op(FetchOp::new(FetchKind::Str(MAX_STRING as u8), base, 0))?;
            let len = match p.location {
                ParamLocation::RegisterPair(_, b) => arg_index(b).map(Source::Arg),
                _ => None,
            };
            self.items.push(Item {
                label: name.to_string(),
                type_name: p.type_name.clone(),
                source: Source::Result(j),
                shape: Shape::Str { len },
            });
            return Ok(());
        }
        if let Some(name) = text.strip_prefix('*') {
            let p = self.param(name)?.clone();
            let pointee = self.pointee(&p, text)?;
            let base = self.value_base(&p)?;
            let size = pointee
                .and_then(|t| self.elf.resolve(t).ok())
                .and_then(|t| t.size)
                .unwrap_or(8);
            let j = self.op(FetchOp::new(kind_for(size), base, 0))?;
            self.items.push(Item {
                label: text.to_string(),
                type_name: self.elf.type_name(pointee),
                source: Source::Result(j),
                shape: shape_of(self.elf, pointee, name),
            });
            return Ok(());
        }
        if let Some(pos) = text.find(['-', '.']) {
            return self.path(text, &text[..pos], &text[pos..], false);
        }
        let p = self.param(text)?.clone();
        self.whole_param(&p)
    }

    /// `p->a->b`, `p->a.b`: walk pointers (one load each) and members
    /// (offsets), then read the last member (a string when `want_string`
    /// or when its type is a C string).
    fn path(
        &mut self,
        label: &str,
        name: &str,
        rest: &str,
        want_string: bool,
    ) -> Result<(), CaptureError> {
        let bad = |why: String| CaptureError::Bad {
            item: label.to_string(),
            why,
        };
        // Split `->a.b->c` into (deref?, field) steps.
        let mut steps = Vec::new();
        let mut r = rest;
        while !r.is_empty() {
            let (deref, tail) = if let Some(t) = r.strip_prefix("->") {
                (true, t)
            } else if let Some(t) = r.strip_prefix('.') {
                (false, t)
            } else {
                return Err(bad("write fields as p->field or p->inner.field".into()));
            };
            let end = tail.find(['-', '.']).unwrap_or(tail.len());
            let field = &tail[..end];
            if field.is_empty() {
                return Err(bad("a field name is missing".into()));
            }
            steps.push((deref, field.to_string()));
            r = &tail[end..];
        }
        let p = self.param(name)?.clone();
        // The current value: in a register (the parameter) or in memory at
        // base+offset; `ty` is its type.
        let mut base = self.value_base(&p)?;
        let mut offset: i64 = 0;
        let mut in_memory = false;
        let mut ty = p.ty;
        for (deref, field) in &steps {
            let resolved = ty.and_then(|t| self.elf.resolve(t).ok());
            let target = if *deref {
                let pointee = match resolved.map(|t| t.kind) {
                    Some(TypeKind::Pointer { pointee }) => pointee,
                    _ => return Err(bad(format!("`{field}`: `->` needs a pointer"))),
                };
                if in_memory {
                    let j = self.op(FetchOp::new(FetchKind::U64, base, offset))?;
                    base = Base::Result(j);
                }
                offset = 0;
                in_memory = true;
                pointee
            } else {
                if !in_memory {
                    return Err(bad(format!("`.{field}` needs a struct in memory: use ->")));
                }
                ty
            };
            let st = target
                .and_then(|t| self.elf.resolve(t).ok())
                .ok_or_else(|| bad("the pointed-to type is unknown".into()))?;
            let f = st.field(field).ok_or_else(|| {
                bad(format!(
                    "no field `{field}` in {}; fields: {}",
                    st.name.clone().unwrap_or_else(|| "the struct".into()),
                    st.fields()
                        .iter()
                        .filter_map(|f| f.name.as_deref())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            offset += f.offset as i64;
            ty = f.ty;
        }
        let last = steps.last().map(|s| s.1.clone()).unwrap_or_default();
        let resolved = ty.and_then(|t| self.elf.resolve(t).ok());
        let mut shape = shape_of(self.elf, ty, &last);
        let is_array = matches!(
            resolved.as_ref().map(|t| &t.kind),
            Some(TypeKind::Array { .. })
        );
        if want_string && !is_array {
            if !matches!(
                resolved.as_ref().map(|t| &t.kind),
                Some(TypeKind::Pointer { .. }) | None
            ) {
                return Err(bad(format!(
                    "`{last}` is not a pointer: it cannot be a string"
                )));
            }
            shape = Shape::Str { len: None };
        }
        let j = if is_array && (want_string || is_char_array(self.elf, resolved.as_ref())) {
            shape = Shape::Str { len: None };
            self.op(FetchOp::new(FetchKind::Str(MAX_STRING as u8), base, offset))?
        } else if let Shape::Str { .. } = shape {
            let ptr = self.op(FetchOp::new(FetchKind::U64, base, offset))?;
            self.op(FetchOp::new(
                FetchKind::Str(MAX_STRING as u8),
                Base::Result(ptr),
                0,
            ))?
        } else {
            let size = resolved.and_then(|t| t.size).unwrap_or(8);
            self.op(FetchOp::new(kind_for(size), base, offset))?
        };
        self.items.push(Item {
            label: label.to_string(),
            type_name: self.elf.type_name(ty),
            source: Source::Result(j),
            shape,
        });
        Ok(())
    }

    fn pointee(&self, p: &Param, item: &str) -> Result<Option<TypeId>, CaptureError> {
        match p.ty.and_then(|t| self.elf.resolve(t).ok()).map(|t| t.kind) {
            Some(TypeKind::Pointer { pointee }) => Ok(pointee),
            None => Ok(None),
            Some(_) => Err(CaptureError::Bad {
                item: item.to_string(),
                why: format!("`{}` is a {}, not a pointer", p.name, p.type_name),
            }),
        }
    }
}

fn is_char_array(elf: &Elf, t: Option<&symbols::Type>) -> bool {
    match t.map(|t| &t.kind) {
        Some(TypeKind::Array { element, .. }) => is_char(elf, *element),
        _ => false,
    }
}

fn kind_for(size: u64) -> FetchKind {
    match size {
        1 => FetchKind::U8,
        2 => FetchKind::U16,
        3 | 4 => FetchKind::U32,
        _ => FetchKind::U64,
    }
}

/// Compile ARGS for `func`. `want_ret` adds the return value's shape.
pub fn compile(
    elf: &Elf,
    func: &Function,
    items: &[String],
    want_ret: bool,
) -> Result<Layout, CaptureError> {
    let mut b = Builder {
        elf,
        func,
        spec: CaptureSpec::default(),
        items: Vec::new(),
    };
    if items.is_empty() {
        for p in &func.params {
            // A parameter that cannot be captured is skipped by default
            // (shown as <unavailable>), never an error.
            if let Err(e) = b.whole_param(p) {
                match e {
                    CaptureError::TooMany { .. } => break,
                    _ => b.items.push(Item {
                        label: p.name.clone(),
                        type_name: p.type_name.clone(),
                        source: Source::Arg(u8::MAX),
                        shape: Shape::Pointer,
                    }),
                }
            }
        }
    } else {
        for it in items {
            b.item(it)?;
        }
    }
    let (ret, ret_type) = if want_ret {
        let shape = if func.return_type.is_some() {
            shape_of(elf, func.return_type, "ret")
        } else {
            Shape::Signed { size: 8 }
        };
        (Some(shape), Some(func.return_type_name.clone()))
    } else {
        (None, None)
    };
    Ok(Layout {
        spec: b.spec,
        items: b.items,
        ret,
        ret_type,
    })
}

/// `$argN` or `%reg` (no symbols needed).
fn raw_item(text: &str) -> Result<Option<Item>, CaptureError> {
    let arg = if let Some(n) = text.strip_prefix("$arg") {
        Some(
            n.parse::<u8>()
                .ok()
                .filter(|i| *i < 6)
                .ok_or_else(|| CaptureError::Bad {
                    item: text.to_string(),
                    why: "use $arg0 .. $arg5".into(),
                })?,
        )
    } else if let Some(r) = text.strip_prefix('%') {
        Some(
            ARG_REGS
                .iter()
                .position(|a| *a == r)
                .ok_or_else(|| CaptureError::Register(text.to_string()))? as u8,
        )
    } else {
        None
    };
    Ok(arg.map(|i| Item {
        label: text.to_string(),
        type_name: "u64".into(),
        source: Source::Arg(i),
        shape: Shape::Unsigned { size: 8, hex: true },
    }))
}

/// Items without symbols or DWARF: `$argN` and `%reg` only; default: the
/// six argument registers.
pub fn compile_raw(items: &[String], want_ret: bool) -> Result<Layout, CaptureError> {
    let mut out = Vec::new();
    if items.is_empty() {
        for (i, r) in ARG_REGS.iter().enumerate() {
            out.push(Item {
                label: format!("%{r}"),
                type_name: "u64".into(),
                source: Source::Arg(i as u8),
                shape: Shape::Unsigned { size: 8, hex: true },
            });
        }
    }
    for it in items {
        match raw_item(it)? {
            Some(item) => out.push(item),
            None => {
                return Err(CaptureError::Bad {
                    item: it.clone(),
                    why: "no DWARF for this function: only $argN and %reg can be captured".into(),
                });
            }
        }
    }
    Ok(Layout {
        spec: CaptureSpec::default(),
        items: out,
        ret: want_ret.then_some(Shape::Signed { size: 8 }),
        ret_type: None,
    })
}

/// The layout of a capture someone else set (gdb's `monitor jprobe ...`,
/// an earlier session), from the capture tokens the kernel lists for it:
/// what `jprobe FUNC` would capture when the tokens are exactly that;
/// otherwise the register parameters (by their DWARF names when known),
/// then one item per fetch result, named after the parameter it reads
/// when it reads one directly (`str64@arg0` -> `path`), else after the
/// operation itself (`u32@$0+0x8`).
pub fn from_spec(dwarf: Option<(&Elf, &Function)>, spec: &CaptureSpec, want_ret: bool) -> Layout {
    let default = match dwarf {
        Some((elf, f)) if f.has_dwarf => compile(elf, f, &[], want_ret).ok(),
        _ => None,
    };
    let mut layout = match default {
        Some(l) if l.spec == *spec => return l,
        Some(l) => l,
        None => compile_raw(&[], want_ret).unwrap_or_default(),
    };
    layout.items.retain(|i| match i.source {
        Source::Arg(_) => true,
        Source::Stack(off) => usize::from(off) + 8 <= usize::from(spec.stack_bytes),
        Source::Result(_) => false,
    });
    for (j, op) in spec.program.ops().iter().enumerate() {
        let (shape, type_name) = match op.kind {
            FetchKind::Str(_) => (Shape::Str { len: None }, "string"),
            FetchKind::U8 => (Shape::Unsigned { size: 1, hex: true }, "u8"),
            FetchKind::U16 => (Shape::Unsigned { size: 2, hex: true }, "u16"),
            FetchKind::U32 => (Shape::Unsigned { size: 4, hex: true }, "u32"),
            FetchKind::U64 => (Shape::Unsigned { size: 8, hex: true }, "u64"),
        };
        let direct = match op.base {
            Base::Arg(i) if op.offset == 0 => layout
                .items
                .iter()
                .position(|it| it.source == Source::Arg(i)),
            _ => None,
        };
        let item = Item {
            label: direct.map_or_else(|| op.to_string(), |p| layout.items[p].label.clone()),
            type_name: type_name.into(),
            source: Source::Result(j as u8),
            shape,
        };
        match direct {
            // The string the parameter points to replaces its address.
            Some(p) if matches!(op.kind, FetchKind::Str(_)) => layout.items[p] = item,
            _ => layout.items.push(item),
        }
    }
    layout.spec = *spec;
    layout
}

/// `rdi` for argument register 0, ... `r9` for 5.
pub fn arg_reg_name(i: u8) -> Option<&'static str> {
    ARG_REGS.get(usize::from(i)).copied()
}
