//! Functions: bounds, parameters with their entry locations, return type.

use gimli::{AttributeValue, Operation, constants};

use crate::dwarf::{DwarfIndex, Unit};
use crate::elf::{Elf, Reader};
use crate::error::{Error, Result};
use crate::registers::Register;
use crate::types::{BaseEncoding, TypeId, TypeKind, ref_attr, string_attr};

/// Where a parameter's value is at the function's entry pc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamLocation {
    /// In a register (the low part for 9..16-byte values, see `RegisterPair`).
    Register(Register),
    /// In two registers: low 8 bytes in the first.
    RegisterPair(Register, Register),
    /// In memory at `rsp + offset`, rsp as at the entry pc (pointing at the
    /// return address, so the first stack argument is at `rsp + 8`).
    Stack {
        /// Offset from the entry rsp.
        offset: i64,
    },
    /// Not available at entry (optimized out, or an expression kdbg does not model).
    Unavailable,
}

impl std::fmt::Display for ParamLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamLocation::Register(r) => write!(f, "{r}"),
            ParamLocation::RegisterPair(a, b) => write!(f, "{a}:{b}"),
            ParamLocation::Stack { offset } => write!(f, "[rsp{offset:+}]"),
            ParamLocation::Unavailable => f.write_str("<unavailable>"),
        }
    }
}

/// Where a [`ParamLocation`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationSource {
    /// DWARF's location (list entry covering the entry pc, or a register).
    Dwarf,
    /// The SysV ABI classification (DWARF said nothing usable at entry).
    Abi,
}

/// A formal parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name (`argN` if DWARF has none).
    pub name: String,
    /// Its type, if known.
    pub ty: Option<TypeId>,
    /// The type rendered (`u64`, `struct task_regs *`, `?`).
    pub type_name: String,
    /// Where it lives at the entry pc.
    pub location: ParamLocation,
    /// Where that answer came from.
    pub source: LocationSource,
}

/// A function with its prototype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Display name (demangled, no hash).
    pub name: String,
    /// The raw symbol/linkage name, if any.
    pub linkage_name: Option<String>,
    /// Entry address.
    pub entry: u64,
    /// End address (exclusive) of the entry range, if known.
    pub end: Option<u64>,
    /// Parameters in order (empty if unknown without DWARF).
    pub params: Vec<Param>,
    /// Return type (`None` = void or unknown; see `has_dwarf`).
    pub return_type: Option<TypeId>,
    /// The return type rendered.
    pub return_type_name: String,
    /// False if this came from the symbol table only (no DWARF for it).
    pub has_dwarf: bool,
}

/// A concrete parameter DIE: (its abstract origin, its location).
type Concrete = (Option<u64>, Option<AttributeValue<Reader>>);

enum Decoded {
    Reg(Register),
    Pair(Register, Register),
    Mem { base: Register, offset: i64 },
    FrameBase(i64),
    Other,
}

fn decode(expr: gimli::Expression<Reader>, unit: &Unit) -> Decoded {
    let mut ops = expr.operations(unit.encoding());
    let first = match ops.next() {
        Ok(Some(op)) => op,
        _ => return Decoded::Other,
    };
    let second = ops.next().ok().flatten();
    let ends = |op: &Option<Operation<Reader>>| matches!(op, None | Some(Operation::Piece { .. }));
    // Two 8-byte register pieces (`&str`, `&[T]`, 16-byte structs).
    if let (
        Operation::Register { register: a },
        Some(Operation::Piece {
            size_in_bits: 64, ..
        }),
    ) = (&first, &second)
    {
        let third = ops.next().ok().flatten();
        let fourth = ops.next().ok().flatten();
        if let (
            Some(Operation::Register { register: b }),
            Some(Operation::Piece {
                size_in_bits: 64, ..
            }),
        ) = (third, fourth)
        {
            return Decoded::Pair(Register(a.0), Register(b.0));
        }
    }
    match first {
        Operation::Register { register } if ends(&second) => Decoded::Reg(Register(register.0)),
        Operation::RegisterOffset {
            register, offset, ..
        } if ends(&second) => Decoded::Mem {
            base: Register(register.0),
            offset,
        },
        Operation::FrameOffset { offset } if ends(&second) => Decoded::FrameBase(offset),
        Operation::EntryValue { expression } if matches!(second, Some(Operation::StackValue)) => {
            match decode(gimli::Expression(expression), unit) {
                Decoded::Reg(r) => Decoded::Reg(r),
                _ => Decoded::Other,
            }
        }
        _ => Decoded::Other,
    }
}

/// rsp-relative offset of the frame base at the entry pc.
fn frame_base_at_entry(fb: Option<AttributeValue<Reader>>, unit: &Unit) -> Option<i64> {
    let Some(AttributeValue::Exprloc(expr)) = fb else {
        return None;
    };
    let mut ops = expr.operations(unit.encoding());
    match ops.next().ok().flatten()? {
        Operation::CallFrameCFA => Some(8),
        Operation::Register { register } if register.0 == 7 => Some(0),
        Operation::RegisterOffset {
            register, offset, ..
        } if register.0 == 7 => Some(offset),
        _ => None,
    }
}

/// The ABI's place for each parameter, from the type sizes and classes.
struct AbiState {
    int: usize,
    sse: u16,
    stack: i64,
}

impl AbiState {
    fn place(&mut self, class: AbiClass, size: u64) -> ParamLocation {
        let words = size.div_ceil(8).max(1) as usize;
        match class {
            AbiClass::Integer if words <= 2 && self.int + words <= 6 => {
                let a = Register::ARGS[self.int];
                self.int += words;
                if words == 2 {
                    ParamLocation::RegisterPair(a, Register::ARGS[self.int - 1])
                } else {
                    ParamLocation::Register(a)
                }
            }
            AbiClass::Sse if self.sse < 8 => {
                self.sse += 1;
                ParamLocation::Register(Register::xmm(self.sse - 1))
            }
            _ => {
                let at = self.stack;
                self.stack += (words as i64) * 8;
                ParamLocation::Stack { offset: at }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum AbiClass {
    Integer,
    Sse,
    Memory,
}

impl Elf {
    fn abi_class(&self, ty: Option<TypeId>) -> (AbiClass, u64) {
        let Some(t) = ty.and_then(|id| self.resolve(id).ok()) else {
            return (AbiClass::Integer, 8);
        };
        let size = t.size.unwrap_or(8);
        match t.kind {
            TypeKind::Base(BaseEncoding::Float) if size <= 8 => (AbiClass::Sse, size),
            TypeKind::Base(BaseEncoding::Float) => (AbiClass::Memory, size),
            TypeKind::Struct { .. } | TypeKind::Union { .. } | TypeKind::Array { .. } => {
                if size > 16 {
                    (AbiClass::Memory, size)
                } else {
                    (AbiClass::Integer, size)
                }
            }
            _ => (AbiClass::Integer, size),
        }
    }

    /// The function containing `address` (usually its entry), with
    /// parameters and return type from DWARF; from the symbol table only
    /// (no parameters, `has_dwarf == false`) when DWARF does not cover it.
    pub fn function_at(&self, address: u64) -> Result<Function> {
        let sym = self.state.symtab().function_containing(address);
        let from_symtab = || {
            sym.map(|s| Function {
                name: s.demangled().into_owned(),
                linkage_name: Some(s.name.to_string()),
                entry: s.address,
                end: (s.size > 0).then(|| s.address + s.size),
                params: Vec::new(),
                return_type: None,
                return_type_name: "?".to_string(),
                has_dwarf: false,
            })
            .ok_or(Error::NoFunction(address))
        };
        let dw = match self.state.dwarf() {
            Ok(dw) => dw,
            Err(Error::NoDwarf { .. }) => return from_symtab(),
            Err(e) => return Err(e),
        };
        match self.dwarf_function(dw, address, sym.map(|s| s.address))? {
            Some(mut f) => {
                if let Some(s) = sym {
                    f.linkage_name.get_or_insert_with(|| s.name.to_string());
                    if f.end.is_none() && s.size > 0 {
                        f.end = Some(s.address + s.size);
                    }
                }
                Ok(f)
            }
            None => from_symtab(),
        }
    }

    /// Every function named `name` (raw, demangled, with or without Rust
    /// hash): several for `static` functions defined in several files.
    pub fn functions_named(&self, name: &str) -> Result<Vec<Function>> {
        let syms = self.lookup(name);
        if syms.is_empty() {
            return Err(Error::NoSuchSymbol(name.to_string()));
        }
        syms.iter()
            .filter(|s| s.kind == crate::SymbolKind::Function || s.kind == crate::SymbolKind::Label)
            .map(|s| self.function_at(s.address))
            .collect()
    }

    fn dwarf_function(
        &self,
        dw: &DwarfIndex,
        address: u64,
        sym_entry: Option<u64>,
    ) -> Result<Option<Function>> {
        let path = &self.state.path;
        let unit_ref = match dw.ctx.find_dwarf_and_unit(address).skip_all_loads() {
            Some(u) => u,
            None => return Ok(None),
        };
        let mut frames = dw
            .ctx
            .find_frames(address)
            .skip_all_loads()
            .map_err(|e| Error::dwarf(path, e))?;
        let mut outer = None;
        while let Some(f) = frames.next().map_err(|e| Error::dwarf(path, e))? {
            outer = f.dw_die_offset;
        }
        let Some(die_off) = outer else {
            return Ok(None);
        };
        let unit_start = unit_ref.unit.header.offset().0;
        let unit = dw.unit_at(unit_start).map_err(|e| Error::dwarf(path, e))?;
        let die = unit.entry(die_off).map_err(|e| Error::dwarf(path, e))?;
        let entry_pc = match die.attr_value(constants::DW_AT_low_pc) {
            Some(v) => dw.dwarf.attr_address(&unit, v).ok().flatten(),
            None => None,
        };
        let entry_pc = entry_pc.or(sym_entry).unwrap_or(address);
        let end = match die.attr_value(constants::DW_AT_high_pc) {
            Some(AttributeValue::Udata(len)) => Some(entry_pc + len),
            Some(v) => dw.dwarf.attr_address(&unit, v).ok().flatten(),
            None => None,
        };
        // Names and types live in the abstract instance / declaration.
        let mut origin: Option<(std::sync::Arc<Unit>, gimli::UnitOffset)> = None;
        for at in [
            constants::DW_AT_abstract_origin,
            constants::DW_AT_specification,
        ] {
            if let Some(id) = ref_attr(&unit, &die, at) {
                origin = dw.unit_for(id.0 as usize);
                if origin.is_some() {
                    break;
                }
            }
        }
        let (name_unit, name_off) = match &origin {
            Some((u, o)) => (u.clone(), *o),
            None => (unit.clone(), die_off),
        };
        let name_die = name_unit
            .entry(name_off)
            .map_err(|e| Error::dwarf(path, e))?;
        let linkage = string_attr(dw, &name_unit, &name_die, constants::DW_AT_linkage_name);
        let plain = string_attr(dw, &name_unit, &name_die, constants::DW_AT_name);
        let name = match (&linkage, &plain) {
            (Some(l), _) => crate::names::demangle(l).into_owned(),
            (None, Some(p)) => p.clone(),
            (None, None) => "??".to_string(),
        };
        let return_type = ref_attr(&name_unit, &name_die, constants::DW_AT_type)
            .or_else(|| ref_attr(&unit, &die, constants::DW_AT_type));

        // Declared parameters (abstract if there is one), in order.
        struct Declared {
            key: Option<u64>,
            name: Option<String>,
            ty: Option<TypeId>,
            /// The location, when the declaring DIE is the concrete one.
            location: Option<AttributeValue<Reader>>,
        }
        let mut declared: Vec<Declared> = Vec::new();
        collect_params(&name_unit, name_off, |c| {
            let key = c
                .offset()
                .to_debug_info_offset(&name_unit.header)
                .map(|o| o.0 as u64);
            declared.push(Declared {
                key,
                name: string_attr(dw, &name_unit, c, constants::DW_AT_name),
                ty: ref_attr(&name_unit, c, constants::DW_AT_type),
                location: c.attr_value(constants::DW_AT_location),
            });
        })
        .map_err(|e| Error::dwarf(path, e))?;
        // Concrete parameters (with locations), matched by abstract origin.
        let mut concrete: Vec<Concrete> = Vec::new();
        if origin.is_some() {
            collect_params(&unit, die_off, |c| {
                concrete.push((
                    ref_attr(&unit, c, constants::DW_AT_abstract_origin).map(|t| t.0),
                    c.attr_value(constants::DW_AT_location),
                ));
            })
            .map_err(|e| Error::dwarf(path, e))?;
        }
        let frame_base = frame_base_at_entry(die.attr_value(constants::DW_AT_frame_base), &unit);
        let mut abi = AbiState {
            int: 0,
            sse: 0,
            stack: 8,
        };
        // Rust and C return aggregates > 16 bytes through a hidden pointer in rdi.
        if let Some(rt) = return_type
            && matches!(self.abi_class(Some(rt)), (AbiClass::Memory, _))
        {
            abi.int = 1;
        }
        let mut params = Vec::new();
        for (i, d) in declared.iter().enumerate() {
            let loc_attr = if origin.is_some() {
                concrete
                    .iter()
                    .find(|c| c.0.is_some() && c.0 == d.key)
                    .and_then(|c| c.1.clone())
            } else {
                d.location.clone()
            };
            let (class, size) = self.abi_class(d.ty);
            let abi_loc = abi.place(class, size);
            let dwarf_loc =
                loc_attr.and_then(|a| self.entry_location(dw, &unit, a, entry_pc, frame_base));
            let (location, source) = match dwarf_loc {
                Some((loc, list)) => {
                    // A single (whole-function) memory location is the
                    // frame slot written by the prologue: at entry the value is
                    // still where the ABI put it.
                    if !list
                        && matches!(loc, ParamLocation::Stack { .. })
                        && !matches!(abi_loc, ParamLocation::Stack { .. })
                    {
                        (abi_loc, LocationSource::Abi)
                    } else {
                        (loc, LocationSource::Dwarf)
                    }
                }
                None => (abi_loc, LocationSource::Abi),
            };
            params.push(Param {
                name: d.name.clone().unwrap_or_else(|| format!("arg{i}")),
                ty: d.ty,
                type_name: self.type_name(d.ty),
                location,
                source,
            });
        }
        Ok(Some(Function {
            name,
            linkage_name: linkage,
            entry: entry_pc,
            end,
            params,
            return_type,
            return_type_name: self.type_name(return_type),
            has_dwarf: true,
        }))
    }

    /// Decodes a `DW_AT_location` at `pc`. The bool is true if it came from a
    /// location list (valid at that pc only).
    fn entry_location(
        &self,
        dw: &DwarfIndex,
        unit: &Unit,
        attr: AttributeValue<Reader>,
        pc: u64,
        frame_base: Option<i64>,
    ) -> Option<(ParamLocation, bool)> {
        let (expr, list) = match attr {
            AttributeValue::Exprloc(e) => (e, false),
            other => {
                let mut iter = dw.dwarf.attr_locations(unit, other).ok()??;
                let mut found = None;
                while let Ok(Some(entry)) = iter.next() {
                    if entry.range.begin <= pc && pc < entry.range.end {
                        found = Some(entry.data);
                        break;
                    }
                }
                (found?, true)
            }
        };
        let loc = match decode(expr, unit) {
            Decoded::Reg(r) => ParamLocation::Register(r),
            Decoded::Pair(a, b) => ParamLocation::RegisterPair(a, b),
            Decoded::Mem { base, offset } if base == Register::RSP => {
                ParamLocation::Stack { offset }
            }
            Decoded::FrameBase(off) => ParamLocation::Stack {
                offset: frame_base? + off,
            },
            _ => return None,
        };
        Some((loc, list))
    }
}

fn collect_params(
    unit: &Unit,
    offset: gimli::UnitOffset,
    mut f: impl FnMut(&gimli::DebuggingInformationEntry<Reader>),
) -> std::result::Result<(), gimli::Error> {
    let mut tree = unit.entries_tree(Some(offset))?;
    let root = tree.root()?;
    let mut iter = root.children();
    while let Some(child) = iter.next()? {
        if child.entry().tag() == constants::DW_TAG_formal_parameter {
            f(child.entry());
        }
    }
    Ok(())
}
