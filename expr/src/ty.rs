//! The type model the evaluator works with.

use symbols::{BaseEncoding, Elf, Lang, TypeId, TypeKind};

use crate::Error;

/// What kind of integer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntKind {
    /// A plain integer.
    Int,
    /// `char` (printed with its character).
    Char,
    /// `bool` / `_Bool`.
    Bool,
    /// Rust `char` (UTF-32).
    RustChar,
    /// A C-like enum (printed with its enumerator).
    Enum(TypeId),
    /// `$eflags` (printed as flags).
    Eflags,
}

/// What kind of aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggKind {
    /// struct (Rust structs, tuples, `&str`, slices).
    Struct,
    /// union.
    Union,
    /// A Rust enum with a DWARF variant part (`Option`, data-carrying enums).
    RustEnum,
}

/// A type.
#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    /// `void`.
    Void,
    /// Integers, chars, bools, C enums.
    Int {
        /// Size in bytes (1, 2, 4, 8, 16).
        size: u8,
        /// Signed.
        signed: bool,
        /// Rendering.
        kind: IntKind,
        /// Its name (`u64`, `int`, `enum color`).
        name: String,
    },
    /// Floating point.
    Float {
        /// 4 or 8.
        size: u8,
        /// `f64`, `double`.
        name: String,
    },
    /// Pointers and references.
    Ptr {
        /// The pointee.
        pointee: Box<Ty>,
        /// The DWARF name (`*const u8`, `&Request`), if any.
        name: Option<String>,
    },
    /// Arrays.
    Array {
        /// Element type.
        elem: Box<Ty>,
        /// Element count (`None` = flexible/unknown).
        len: Option<u64>,
    },
    /// Structs, unions, Rust enums: kept by DWARF id (members read on demand).
    Agg {
        /// The DWARF type.
        id: TypeId,
        /// Which.
        kind: AggKind,
        /// Size in bytes.
        size: u64,
        /// Rendered name (`struct Request`, `kernel::workloads::Request`).
        name: String,
    },
    /// A function (the type of a function name).
    Func {
        /// Rendered name, C style (`u64 (u64)`).
        name: String,
        /// Rendered name, Rust style (`fn (u64) -> u64`).
        rust: String,
    },
}

impl Ty {
    /// A C integer type.
    pub fn int(size: u8, signed: bool) -> Ty {
        let name = match (size, signed) {
            (1, true) => "char",
            (1, false) => "unsigned char",
            (2, true) => "short",
            (2, false) => "unsigned short",
            (4, true) => "int",
            (4, false) => "unsigned int",
            (8, true) => "long",
            _ => "unsigned long",
        };
        Ty::Int {
            size,
            signed,
            kind: if size == 1 {
                IntKind::Char
            } else {
                IntKind::Int
            },
            name: name.to_string(),
        }
    }

    /// `long` (registers, pointer differences).
    pub fn long() -> Ty {
        Ty::int(8, true)
    }

    /// `unsigned long` (sizeof).
    pub fn ulong() -> Ty {
        Ty::int(8, false)
    }

    /// `int` (comparisons, literals).
    pub fn c_int() -> Ty {
        Ty::int(4, true)
    }

    /// A pointer to `t`.
    pub fn ptr_to(t: Ty) -> Ty {
        Ty::Ptr {
            pointee: Box::new(t),
            name: None,
        }
    }

    /// Size in bytes (`void` and functions: 1, as gdb).
    pub fn size(&self) -> u64 {
        match self {
            Ty::Void | Ty::Func { .. } => 1,
            Ty::Int { size, .. } | Ty::Float { size, .. } => u64::from(*size),
            Ty::Ptr { .. } => 8,
            Ty::Array { elem, len } => elem.size().saturating_mul(len.unwrap_or(0)),
            Ty::Agg { size, .. } => *size,
        }
    }

    /// True for integers, enums, bools, chars and pointers.
    pub fn is_scalar(&self) -> bool {
        matches!(self, Ty::Int { .. } | Ty::Ptr { .. })
    }

    /// True for signed integers.
    pub fn is_signed(&self) -> bool {
        matches!(self, Ty::Int { signed: true, .. })
    }

    /// The name as gdb's `whatis` shows it.
    pub fn name(&self) -> String {
        match self {
            Ty::Void => "void".into(),
            Ty::Int { name, .. } | Ty::Float { name, .. } | Ty::Func { name, .. } => name.clone(),
            Ty::Agg { name, .. } => name.clone(),
            Ty::Ptr {
                name: Some(n),
                pointee: _,
            } => n.clone(),
            Ty::Ptr {
                pointee,
                name: None,
            } => {
                if let Ty::Func { name, .. } = &**pointee {
                    // `u64 (u64)` -> `u64 (*)(u64)`
                    if let Some(i) = name.find('(') {
                        return format!("{}(*){}", &name[..i], &name[i..]);
                    }
                }
                let inner = pointee.name();
                if inner.ends_with('*') {
                    format!("{inner}*")
                } else {
                    format!("{inner} *")
                }
            }
            Ty::Array { elem, len } => match len {
                Some(n) => format!("{} [{n}]", elem.name()),
                None => format!("{} []", elem.name()),
            },
        }
    }

    /// The name in gdb's Rust syntax (`*mut T`, `[u16; 4]`, `()`, `fn (u64) -> u64`).
    pub fn rust_name(&self) -> String {
        match self {
            Ty::Void => "()".into(),
            Ty::Func { rust, .. } => rust.clone(),
            Ty::Ptr { pointee, .. } => format!("*mut {}", pointee.rust_name()),
            Ty::Array { elem, len } => match len {
                Some(n) => format!("[{}; {n}]", elem.rust_name()),
                None => format!("[{}]", elem.rust_name()),
            },
            other => other.name(),
        }
    }

    /// [`Ty::rust_name`] or [`Ty::name`].
    pub fn display_name(&self, rust: bool) -> String {
        if rust { self.rust_name() } else { self.name() }
    }

    /// Builds the type for a DWARF type id (`None` = void).
    pub fn from_dwarf(elf: &Elf, id: Option<TypeId>) -> Ty {
        Ty::from_dwarf_depth(elf, id, 0, None)
    }

    fn from_dwarf_depth(elf: &Elf, id: Option<TypeId>, depth: u32, alias: Option<String>) -> Ty {
        let Some(id) = id else { return Ty::Void };
        if depth > 24 {
            return Ty::Void;
        }
        let Ok(t) = elf.type_info(id) else {
            return Ty::Void;
        };
        let size = t.size.unwrap_or(0);
        match &t.kind {
            TypeKind::Typedef { target } => {
                let alias = alias.or_else(|| t.name.clone());
                Ty::from_dwarf_depth(elf, *target, depth + 1, alias)
            }
            TypeKind::Qualified { target, .. } => {
                Ty::from_dwarf_depth(elf, *target, depth + 1, alias)
            }
            TypeKind::Void => Ty::Void,
            TypeKind::Base(enc) => {
                let name = alias.or_else(|| t.name.clone()).unwrap_or_default();
                let (signed, kind) = match enc {
                    BaseEncoding::Signed => (true, IntKind::Int),
                    BaseEncoding::Unsigned => (false, IntKind::Int),
                    BaseEncoding::SignedChar => (true, IntKind::Char),
                    BaseEncoding::UnsignedChar => (false, IntKind::Char),
                    BaseEncoding::Bool => (false, IntKind::Bool),
                    BaseEncoding::Float => {
                        return Ty::Float {
                            size: size as u8,
                            name,
                        };
                    }
                    // DW_ATE_UTF: Rust char.
                    BaseEncoding::Other(0x10) => (false, IntKind::RustChar),
                    BaseEncoding::Other(_) => (false, IntKind::Int),
                };
                Ty::Int {
                    size: size.clamp(1, 16) as u8,
                    signed,
                    kind,
                    name,
                }
            }
            TypeKind::Pointer { pointee } => Ty::Ptr {
                pointee: Box::new(Ty::from_dwarf_depth(elf, *pointee, depth + 1, None)),
                name: alias.or_else(|| t.name.clone()),
            },
            TypeKind::Enum { underlying, .. } => {
                let signed = underlying
                    .and_then(|u| elf.resolve(u).ok())
                    .is_some_and(|u| {
                        matches!(
                            u.kind,
                            TypeKind::Base(BaseEncoding::Signed | BaseEncoding::SignedChar)
                        )
                    });
                Ty::Int {
                    size: size.clamp(1, 8) as u8,
                    signed,
                    kind: IntKind::Enum(id),
                    name: alias.unwrap_or_else(|| agg_name(elf, id, t.lang)),
                }
            }
            TypeKind::Struct { fields } => {
                let kind = if t.lang == Lang::Rust
                    && fields.is_empty()
                    && elf.variant_part(id).ok().flatten().is_some()
                {
                    AggKind::RustEnum
                } else {
                    AggKind::Struct
                };
                Ty::Agg {
                    id,
                    kind,
                    size,
                    name: alias.unwrap_or_else(|| agg_name(elf, id, t.lang)),
                }
            }
            TypeKind::Union { .. } => Ty::Agg {
                id,
                kind: AggKind::Union,
                size,
                name: alias.unwrap_or_else(|| agg_name(elf, id, t.lang)),
            },
            TypeKind::Array { element, counts } => {
                let mut ty = Ty::from_dwarf_depth(elf, *element, depth + 1, None);
                for c in counts.iter().rev() {
                    ty = Ty::Array {
                        elem: Box::new(ty),
                        len: *c,
                    };
                }
                ty
            }
            TypeKind::Function {
                return_type,
                params,
            } => {
                let args: Vec<String> = params.iter().map(|p| elf.type_name(*p)).collect();
                Ty::Func {
                    rust: rust_fn_name(&args, return_type.map(|r| elf.type_name(Some(r)))),
                    name: format!(
                        "{} ({})",
                        elf.type_name(*return_type),
                        if args.is_empty() {
                            "void".to_string()
                        } else {
                            args.join(", ")
                        }
                    ),
                }
            }
            TypeKind::Other(_) => Ty::Void,
        }
    }

    /// A type from its name as written in a cast: DWARF types first
    /// (`u32`, `Request`, `struct Request`, `kernel::workloads::Request`),
    /// then the C base types (`unsigned long`, `char`, `int`).
    pub fn from_name(elf: &Elf, name: &str) -> Result<Ty, Error> {
        let builtin = builtin(name);
        if let Some(t) = &builtin
            && matches!(name, "int" | "long" | "char" | "unsigned" | "unsigned int")
        {
            return Ok(t.clone());
        }
        if let Ok(ids) = elf.types_named(name)
            && let Some(id) = ids.first()
        {
            return Ok(Ty::from_dwarf(elf, Some(*id)));
        }
        // `struct Request` for a Rust struct named `Request`.
        if let Some(plain) = name
            .strip_prefix("struct ")
            .or_else(|| name.strip_prefix("union "))
            .or_else(|| name.strip_prefix("enum "))
            && let Ok(ids) = elf.types_named(plain.trim())
            && let Some(id) = ids.first()
        {
            return Ok(Ty::from_dwarf(elf, Some(*id)));
        }
        builtin.ok_or_else(|| Error::msg(format!("no type named '{name}'")))
    }
}

/// `fn (A, B) -> R` (no arrow for unit/void).
pub fn rust_fn_name(args: &[String], ret: Option<String>) -> String {
    let mut s = format!("fn ({})", args.join(", "));
    if let Some(r) = ret.filter(|r| r != "void" && r != "()") {
        s.push_str(" -> ");
        s.push_str(&r);
    }
    s
}

/// gdb's name for an aggregate: `struct x` in C, the path in Rust.
fn agg_name(elf: &Elf, id: TypeId, lang: Lang) -> String {
    if lang == Lang::Rust
        && let Some(q) = elf.qualified_type_name(id)
    {
        return q;
    }
    elf.type_name(Some(id))
}

/// The C and Rust base types by name.
pub fn builtin(name: &str) -> Option<Ty> {
    let words: Vec<&str> = name.split_whitespace().collect();
    let canonical = words.join(" ");
    let t = |size, signed| Some(Ty::int(size, signed));
    let named = |size: u8, signed: bool, n: &str| {
        Some(Ty::Int {
            size,
            signed,
            kind: IntKind::Int,
            name: n.to_string(),
        })
    };
    match canonical.as_str() {
        "void" => Some(Ty::Void),
        "char" | "signed char" => t(1, true),
        "unsigned char" => t(1, false),
        "short" | "short int" | "signed short" => t(2, true),
        "unsigned short" | "unsigned short int" => t(2, false),
        "int" | "signed" | "signed int" => t(4, true),
        "unsigned" | "unsigned int" => t(4, false),
        "long" | "long int" | "long long" | "long long int" | "signed long" => t(8, true),
        "unsigned long" | "unsigned long int" | "unsigned long long" => t(8, false),
        "u8" => named(1, false, "u8"),
        "i8" => named(1, true, "i8"),
        "u16" => named(2, false, "u16"),
        "i16" => named(2, true, "i16"),
        "u32" => named(4, false, "u32"),
        "i32" => named(4, true, "i32"),
        "u64" => named(8, false, "u64"),
        "i64" => named(8, true, "i64"),
        "usize" => named(8, false, "usize"),
        "isize" => named(8, true, "isize"),
        "bool" | "_Bool" => Some(Ty::Int {
            size: 1,
            signed: false,
            kind: IntKind::Bool,
            name: canonical.clone(),
        }),
        "double" | "f64" => Some(Ty::Float {
            size: 8,
            name: canonical.clone(),
        }),
        "float" | "f32" => Some(Ty::Float {
            size: 4,
            name: canonical.clone(),
        }),
        _ => None,
    }
}
