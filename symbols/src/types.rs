//! The type model: what the shell renders and compiles fetch programs from.

use gimli::{AttributeValue, DwAt, constants};

use crate::dwarf::{DwarfIndex, Unit};
use crate::elf::{Elf, Reader};
use crate::error::{Error, Result};

/// A handle on a DWARF type: its global `.debug_info` offset. Stable for the
/// life of the file; resolve it with [`Elf::type_info`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeId(pub u64);

/// The source language of the unit a type comes from (for rendering names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// C (and assembly): `struct foo`, `int *`.
    C,
    /// Rust: names as rustc writes them (`&str`, `*const u8`).
    Rust,
    /// Anything else.
    Other,
}

/// How a base type's bits are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseEncoding {
    /// Two's complement signed integer.
    Signed,
    /// Unsigned integer.
    Unsigned,
    /// `char` / `signed char`.
    SignedChar,
    /// `unsigned char` / `u8` in some producers.
    UnsignedChar,
    /// `bool` / `_Bool`.
    Bool,
    /// IEEE float.
    Float,
    /// Rust `char` (UTF-32) and other encodings (the DW_ATE value).
    Other(u8),
}

/// `const`, `volatile`, and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualifier {
    /// `const`.
    Const,
    /// `volatile`.
    Volatile,
    /// `restrict`.
    Restrict,
    /// `_Atomic`.
    Atomic,
}

/// A struct or union member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Member name (`None` for anonymous members).
    pub name: Option<String>,
    /// Byte offset from the start of the aggregate.
    pub offset: u64,
    /// Member type.
    pub ty: Option<TypeId>,
    /// For bit fields: width in bits.
    pub bit_size: Option<u64>,
    /// For bit fields: offset in bits from `offset * 8`.
    pub bit_offset: Option<u64>,
}

/// What a type is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeKind {
    /// `void` / `()`-less unspecified type.
    Void,
    /// Integers, floats, bools, chars.
    Base(BaseEncoding),
    /// Pointers and references (`&T`, `*const T`, `T *`); `None` = `void *`.
    Pointer {
        /// What it points to.
        pointee: Option<TypeId>,
    },
    /// A struct (or class). Rust `&str` and `&[T]` are structs with fields
    /// `data_ptr` and `length`: see [`Type::slice_parts`].
    Struct {
        /// Members in declaration order.
        fields: Vec<Field>,
    },
    /// A union.
    Union {
        /// Members.
        fields: Vec<Field>,
    },
    /// An enumeration.
    Enum {
        /// The integer type underneath, if DWARF says.
        underlying: Option<TypeId>,
        /// Enumerators with their values.
        values: Vec<(String, i128)>,
    },
    /// An array; one entry in `counts` per dimension (`None` = unknown/flexible).
    Array {
        /// Element type.
        element: Option<TypeId>,
        /// Element counts per dimension.
        counts: Vec<Option<u64>>,
    },
    /// A typedef.
    Typedef {
        /// The aliased type.
        target: Option<TypeId>,
    },
    /// A qualified type.
    Qualified {
        /// Which qualifier.
        qualifier: Qualifier,
        /// The qualified type (`None` = `void`).
        target: Option<TypeId>,
    },
    /// A function type.
    Function {
        /// Return type (`None` = void).
        return_type: Option<TypeId>,
        /// Parameter types.
        params: Vec<Option<TypeId>>,
    },
    /// Something else (the DWARF tag name, e.g. `DW_TAG_variant_part`).
    Other(String),
}

/// One DWARF type, with references to others by [`TypeId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// This type's handle.
    pub id: TypeId,
    /// Its name, if it has one (`task_regs`, `u64`, `&str`).
    pub name: Option<String>,
    /// Size in bytes, if known (pointers are 8).
    pub size: Option<u64>,
    /// The kind and its details.
    pub kind: TypeKind,
    /// The language of the defining unit.
    pub lang: Lang,
}

impl Type {
    /// The member called `name` (structs and unions).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields()
            .iter()
            .find(|f| f.name.as_deref() == Some(name))
    }

    /// Members of a struct or union (empty otherwise).
    pub fn fields(&self) -> &[Field] {
        match &self.kind {
            TypeKind::Struct { fields } | TypeKind::Union { fields } => fields,
            _ => &[],
        }
    }

    /// For Rust `&str`, `&[T]`, `&mut [T]`: the `data_ptr` and `length` fields.
    pub fn slice_parts(&self) -> Option<(&Field, &Field)> {
        let ptr = self.field("data_ptr")?;
        let len = self.field("length")?;
        (self.fields().len() == 2).then_some((ptr, len))
    }

    /// True for Rust `&str` (and `&mut str`).
    pub fn is_rust_str(&self) -> bool {
        self.slice_parts().is_some() && matches!(self.name.as_deref(), Some("&str" | "&mut str"))
    }
}

pub(crate) fn udata(v: &AttributeValue<Reader>) -> Option<u64> {
    v.udata_value()
}

fn sdata(v: &AttributeValue<Reader>) -> Option<i128> {
    match v {
        AttributeValue::Sdata(x) => Some(i128::from(*x)),
        AttributeValue::Udata(x) => Some(i128::from(*x)),
        AttributeValue::Data1(x) => Some(i128::from(*x)),
        AttributeValue::Data2(x) => Some(i128::from(*x)),
        AttributeValue::Data4(x) => Some(i128::from(*x)),
        AttributeValue::Data8(x) => Some(i128::from(*x)),
        _ => None,
    }
}

/// A reference attribute as a global offset.
pub(crate) fn ref_attr(
    unit: &Unit,
    entry: &gimli::DebuggingInformationEntry<Reader>,
    at: DwAt,
) -> Option<TypeId> {
    match entry.attr_value(at)? {
        AttributeValue::UnitRef(o) => o
            .to_debug_info_offset(&unit.header)
            .map(|g| TypeId(g.0 as u64)),
        AttributeValue::DebugInfoRef(o) => Some(TypeId(o.0 as u64)),
        _ => None,
    }
}

pub(crate) fn string_attr(
    dw: &DwarfIndex,
    unit: &Unit,
    entry: &gimli::DebuggingInformationEntry<Reader>,
    at: DwAt,
) -> Option<String> {
    let v = entry.attr_value(at)?;
    let s = dw.dwarf.attr_string(unit, v).ok()?;
    Some(s.inner().to_string_lossy().into_owned())
}

pub(crate) fn unit_lang(unit: &Unit) -> Lang {
    let Ok(root) = unit.entry(unit.header.root_offset()) else {
        return Lang::Other;
    };
    match root.attr_value(constants::DW_AT_language) {
        Some(AttributeValue::Language(l)) => match l {
            constants::DW_LANG_Rust => Lang::Rust,
            constants::DW_LANG_C
            | constants::DW_LANG_C89
            | constants::DW_LANG_C99
            | constants::DW_LANG_C11
            | constants::DW_LANG_C17
            | constants::DW_LANG_Mips_Assembler => Lang::C,
            _ => Lang::Other,
        },
        _ => Lang::Other,
    }
}

fn children(
    unit: &Unit,
    offset: gimli::UnitOffset,
    mut f: impl FnMut(&gimli::DebuggingInformationEntry<Reader>),
) -> std::result::Result<(), gimli::Error> {
    let mut tree = unit.entries_tree(Some(offset))?;
    let root = tree.root()?;
    let mut iter = root.children();
    while let Some(child) = iter.next()? {
        f(child.entry());
    }
    Ok(())
}

fn member_offset(entry: &gimli::DebuggingInformationEntry<Reader>, unit: &Unit) -> u64 {
    match entry.attr_value(constants::DW_AT_data_member_location) {
        Some(AttributeValue::Exprloc(expr)) => {
            let mut ops = expr.operations(unit.encoding());
            match ops.next() {
                Ok(Some(gimli::Operation::PlusConstant { value })) => value,
                _ => 0,
            }
        }
        Some(v) => udata(&v).unwrap_or(0),
        None => 0,
    }
}

impl Elf {
    /// The type behind `id`.
    pub fn type_info(&self, id: TypeId) -> Result<Type> {
        let dw = self.state.dwarf()?;
        let (unit, off) = dw.unit_for(id.0 as usize).ok_or(Error::NoSuchType(id.0))?;
        let entry = unit.entry(off).map_err(|_| Error::NoSuchType(id.0))?;
        let lang = unit_lang(&unit);
        let name = string_attr(dw, &unit, &entry, constants::DW_AT_name);
        let mut size = entry
            .attr_value(constants::DW_AT_byte_size)
            .as_ref()
            .and_then(udata);
        let target = ref_attr(&unit, &entry, constants::DW_AT_type);
        let fields = |union: bool| -> Result<Vec<Field>> {
            let mut fields = Vec::new();
            children(&unit, off, |c| {
                if c.tag() != constants::DW_TAG_member {
                    return;
                }
                let bit_size = c
                    .attr_value(constants::DW_AT_bit_size)
                    .as_ref()
                    .and_then(udata);
                let mut offset = if union { 0 } else { member_offset(c, &unit) };
                let mut bit_offset = None;
                if let Some(bits) = c
                    .attr_value(constants::DW_AT_data_bit_offset)
                    .as_ref()
                    .and_then(udata)
                {
                    offset = bits / 8;
                    bit_offset = Some(bits % 8);
                }
                fields.push(Field {
                    name: string_attr(dw, &unit, c, constants::DW_AT_name),
                    offset,
                    ty: ref_attr(&unit, c, constants::DW_AT_type),
                    bit_size,
                    bit_offset,
                });
            })
            .map_err(|e| Error::dwarf(&self.state.path, e))?;
            Ok(fields)
        };
        let kind = match entry.tag() {
            constants::DW_TAG_base_type => {
                let enc = match entry.attr_value(constants::DW_AT_encoding) {
                    Some(AttributeValue::Encoding(e)) => e,
                    _ => constants::DwAte(0),
                };
                TypeKind::Base(match enc {
                    constants::DW_ATE_signed => BaseEncoding::Signed,
                    constants::DW_ATE_unsigned => BaseEncoding::Unsigned,
                    constants::DW_ATE_signed_char => BaseEncoding::SignedChar,
                    constants::DW_ATE_unsigned_char => BaseEncoding::UnsignedChar,
                    constants::DW_ATE_boolean => BaseEncoding::Bool,
                    constants::DW_ATE_float => BaseEncoding::Float,
                    e => BaseEncoding::Other(e.0),
                })
            }
            constants::DW_TAG_unspecified_type => TypeKind::Void,
            constants::DW_TAG_pointer_type
            | constants::DW_TAG_reference_type
            | constants::DW_TAG_rvalue_reference_type => {
                size.get_or_insert(8);
                TypeKind::Pointer { pointee: target }
            }
            constants::DW_TAG_structure_type | constants::DW_TAG_class_type => TypeKind::Struct {
                fields: fields(false)?,
            },
            constants::DW_TAG_union_type => TypeKind::Union {
                fields: fields(true)?,
            },
            constants::DW_TAG_enumeration_type => {
                let mut values = Vec::new();
                children(&unit, off, |c| {
                    if c.tag() == constants::DW_TAG_enumerator
                        && let Some(n) = string_attr(dw, &unit, c, constants::DW_AT_name)
                    {
                        let v = c
                            .attr_value(constants::DW_AT_const_value)
                            .as_ref()
                            .and_then(sdata)
                            .unwrap_or(0);
                        values.push((n, v));
                    }
                })
                .map_err(|e| Error::dwarf(&self.state.path, e))?;
                TypeKind::Enum {
                    underlying: target,
                    values,
                }
            }
            constants::DW_TAG_array_type => {
                let mut counts = Vec::new();
                children(&unit, off, |c| {
                    if c.tag() != constants::DW_TAG_subrange_type {
                        return;
                    }
                    let count = c
                        .attr_value(constants::DW_AT_count)
                        .as_ref()
                        .and_then(udata)
                        .or_else(|| {
                            let ub = c
                                .attr_value(constants::DW_AT_upper_bound)
                                .as_ref()
                                .and_then(udata)?;
                            let lb = c
                                .attr_value(constants::DW_AT_lower_bound)
                                .as_ref()
                                .and_then(udata)
                                .unwrap_or(0);
                            (ub + 1).checked_sub(lb)
                        });
                    counts.push(count);
                })
                .map_err(|e| Error::dwarf(&self.state.path, e))?;
                if size.is_none()
                    && let Some(el) = target
                    && let Some(es) = self.byte_size(el, 0)
                    && counts.iter().all(Option::is_some)
                {
                    size = counts
                        .iter()
                        .flatten()
                        .try_fold(es, |acc, n| acc.checked_mul(*n));
                }
                TypeKind::Array {
                    element: target,
                    counts,
                }
            }
            constants::DW_TAG_typedef => TypeKind::Typedef { target },
            constants::DW_TAG_const_type => TypeKind::Qualified {
                qualifier: Qualifier::Const,
                target,
            },
            constants::DW_TAG_volatile_type => TypeKind::Qualified {
                qualifier: Qualifier::Volatile,
                target,
            },
            constants::DW_TAG_restrict_type => TypeKind::Qualified {
                qualifier: Qualifier::Restrict,
                target,
            },
            constants::DW_TAG_atomic_type => TypeKind::Qualified {
                qualifier: Qualifier::Atomic,
                target,
            },
            constants::DW_TAG_subroutine_type => {
                let mut params = Vec::new();
                children(&unit, off, |c| {
                    if c.tag() == constants::DW_TAG_formal_parameter {
                        params.push(ref_attr(&unit, c, constants::DW_AT_type));
                    }
                })
                .map_err(|e| Error::dwarf(&self.state.path, e))?;
                TypeKind::Function {
                    return_type: target,
                    params,
                }
            }
            t => TypeKind::Other(t.static_string().unwrap_or("DW_TAG_?").to_string()),
        };
        Ok(Type {
            id,
            name,
            size,
            kind,
            lang,
        })
    }

    /// Size in bytes of a type, following typedefs, qualifiers and array
    /// dimensions (depth-limited: damaged DWARF can make cycles).
    fn byte_size(&self, id: TypeId, depth: u32) -> Option<u64> {
        if depth > 16 {
            return None;
        }
        let dw = self.state.dwarf().ok()?;
        let (unit, off) = dw.unit_for(id.0 as usize)?;
        let entry = unit.entry(off).ok()?;
        if let Some(s) = entry
            .attr_value(constants::DW_AT_byte_size)
            .as_ref()
            .and_then(udata)
        {
            return Some(s);
        }
        let target = ref_attr(&unit, &entry, constants::DW_AT_type);
        match entry.tag() {
            constants::DW_TAG_pointer_type
            | constants::DW_TAG_reference_type
            | constants::DW_TAG_rvalue_reference_type => Some(8),
            constants::DW_TAG_typedef
            | constants::DW_TAG_const_type
            | constants::DW_TAG_volatile_type
            | constants::DW_TAG_restrict_type
            | constants::DW_TAG_atomic_type => self.byte_size(target?, depth + 1),
            constants::DW_TAG_array_type => {
                let el = self.byte_size(target?, depth + 1)?;
                let mut total = el;
                children(&unit, off, |c| {
                    if c.tag() == constants::DW_TAG_subrange_type {
                        let n = c
                            .attr_value(constants::DW_AT_count)
                            .as_ref()
                            .and_then(udata)
                            .or_else(|| {
                                c.attr_value(constants::DW_AT_upper_bound)
                                    .as_ref()
                                    .and_then(udata)
                                    .map(|u| u.saturating_add(1))
                            })
                            .unwrap_or(0);
                        total = total.saturating_mul(n);
                    }
                })
                .ok()?;
                Some(total)
            }
            _ => None,
        }
    }

    /// Types defined with this name: plain (`task_regs`, `TaskRegs`), Rust
    /// path (`kernel::workloads::TaskRegs`), or C tagged (`struct
    /// task_regs`, `union u`, `enum color`). Declarations without a body
    /// are left out. The first call indexes every unit (seconds on a
    /// vmlinux); later calls are hash lookups.
    pub fn types_named(&self, name: &str) -> Result<Vec<TypeId>> {
        let dw = self.state.dwarf()?;
        let index = dw.type_names.get_or_init(|| dw.build_type_names());
        let name = name.trim();
        let (want, plain) = match name.split_once(' ') {
            Some(("struct", rest)) => (Some("struct"), rest.trim()),
            Some(("union", rest)) => (Some("union"), rest.trim()),
            Some(("enum", rest)) => (Some("enum"), rest.trim()),
            _ => (None, name),
        };
        let mut out = Vec::new();
        for off in index.get(plain).into_iter().flatten() {
            let id = TypeId(*off);
            if let Some(kind) = want {
                let Ok(t) = self.type_info(id) else { continue };
                let ok = matches!(
                    (kind, &t.kind),
                    ("struct", TypeKind::Struct { .. })
                        | ("union", TypeKind::Union { .. })
                        | ("enum", TypeKind::Enum { .. })
                );
                if !ok {
                    continue;
                }
            }
            out.push(id);
        }
        Ok(out)
    }

    /// The namespace-qualified name of a type (`kernel::workloads::Request`)
    /// as gdb shows Rust types; the plain name when it has no namespace.
    pub fn qualified_type_name(&self, id: TypeId) -> Option<String> {
        let dw = self.state.dwarf().ok()?;
        let index = dw.type_names.get_or_init(|| dw.build_type_names());
        let rev = dw.type_qualified.get_or_init(|| {
            let mut m: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
            for (name, offs) in index {
                for o in offs {
                    let e = m.entry(*o).or_default();
                    if name.len() > e.len() {
                        *e = name.clone();
                    }
                }
            }
            m
        });
        rev.get(&id.0).cloned()
    }

    /// Follows typedefs and qualifiers to the underlying type (`None` = void).
    pub fn resolve(&self, id: TypeId) -> Result<Type> {
        let mut t = self.type_info(id)?;
        for _ in 0..16 {
            match t.kind {
                TypeKind::Typedef { target: Some(next) }
                | TypeKind::Qualified {
                    target: Some(next), ..
                } => t = self.type_info(next)?,
                _ => break,
            }
        }
        Ok(t)
    }

    /// A readable name for a type: C style for C (`struct task_regs *`,
    /// `unsigned int [4]`), rustc's names for Rust (`&str`, `*const u8`).
    /// `None` means `void`.
    pub fn type_name(&self, id: Option<TypeId>) -> String {
        self.type_name_depth(id, 0)
    }

    fn type_name_depth(&self, id: Option<TypeId>, depth: u32) -> String {
        let Some(id) = id else {
            return "void".to_string();
        };
        if depth > 8 {
            return "...".to_string();
        }
        let Ok(t) = self.type_info(id) else {
            return "?".to_string();
        };
        let c = t.lang != Lang::Rust;
        match (&t.kind, &t.name) {
            (TypeKind::Struct { .. }, Some(n)) if c => format!("struct {n}"),
            (TypeKind::Union { .. }, Some(n)) if c => format!("union {n}"),
            (TypeKind::Enum { .. }, Some(n)) if c => format!("enum {n}"),
            (_, Some(n)) => n.clone(),
            (TypeKind::Pointer { pointee: Some(p) }, None)
                if matches!(
                    self.type_info(*p).map(|t| t.kind),
                    Ok(TypeKind::Function { .. })
                ) =>
            {
                let Ok(TypeKind::Function {
                    return_type,
                    params,
                }) = self.type_info(*p).map(|t| t.kind)
                else {
                    return "?".to_string();
                };
                let args: Vec<String> = params
                    .iter()
                    .map(|a| self.type_name_depth(*a, depth + 1))
                    .collect();
                format!(
                    "{} (*)({})",
                    self.type_name_depth(return_type, depth + 1),
                    if args.is_empty() {
                        "void".to_string()
                    } else {
                        args.join(", ")
                    }
                )
            }
            (TypeKind::Pointer { pointee }, None) => {
                let inner = self.type_name_depth(*pointee, depth + 1);
                if inner.ends_with('*') {
                    format!("{inner}*")
                } else {
                    format!("{inner} *")
                }
            }
            (TypeKind::Qualified { qualifier, target }, None) => {
                let q = match qualifier {
                    Qualifier::Const => "const",
                    Qualifier::Volatile => "volatile",
                    Qualifier::Restrict => "restrict",
                    Qualifier::Atomic => "_Atomic",
                };
                let inner = self.type_name_depth(*target, depth + 1);
                if inner.ends_with('*') {
                    format!("{inner} {q}")
                } else {
                    format!("{q} {inner}")
                }
            }
            (TypeKind::Array { element, counts }, None) => {
                let mut s = self.type_name_depth(*element, depth + 1);
                s.push(' ');
                for c in counts {
                    match c {
                        Some(n) => s.push_str(&format!("[{n}]")),
                        None => s.push_str("[]"),
                    }
                }
                s
            }
            (TypeKind::Struct { .. }, None) => "struct {...}".to_string(),
            (TypeKind::Union { .. }, None) => "union {...}".to_string(),
            (TypeKind::Enum { .. }, None) => "enum {...}".to_string(),
            (TypeKind::Function { .. }, None) => "function".to_string(),
            (TypeKind::Void, None) => "void".to_string(),
            _ => "?".to_string(),
        }
    }
}
