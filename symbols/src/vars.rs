//! Variables: globals and statics by name (C names and Rust paths), the
//! parameters and locals in scope at a pc with their DWARF locations
//! (location lists included), and Rust enum variant parts.
//!
//! Locations are kept as DWARF expressions ([`LocExpr`]) and evaluated on
//! demand against a [`LocContext`] (registers of the selected frame, its CFA,
//! target memory), giving a [`Place`].

use std::collections::HashMap;

use gimli::{AttributeValue, constants};

use crate::dwarf::{DwarfIndex, Unit};
use crate::elf::{Elf, Reader};
use crate::error::{Error, Result};
use crate::registers::Register;
use crate::slide::Slide;
use crate::types::{Field, Lang, TypeId, ref_attr, string_attr, udata};

/// A global or static variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Its name, namespace-qualified for Rust (`kernel::workloads::NEXT_PID`).
    pub name: String,
    /// Its address.
    pub address: u64,
    /// Its type (`None` if DWARF does not say).
    pub ty: Option<TypeId>,
}

/// A DWARF location expression, with what is needed to evaluate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocExpr {
    bytes: Vec<u8>,
    frame_base: Option<Vec<u8>>,
    encoding: gimli::Encoding,
    /// The image's slide when the bytes were read: `DW_OP_addr` operands
    /// in `bytes` are link addresses.
    slide: Slide,
}

/// Where a variable is at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarLocation {
    /// A location expression valid at that pc.
    Expr(LocExpr),
    /// A constant value (`DW_AT_const_value`), little-endian bytes.
    Const(Vec<u8>),
    /// No location at that pc (optimized out).
    OptimizedOut,
}

/// A parameter or local variable in scope at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalVar {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: Option<TypeId>,
    /// True for formal parameters.
    pub is_param: bool,
    /// Where it is at the pc.
    pub location: VarLocation,
    /// Nesting depth of its scope: 0 is the function, deeper blocks higher.
    pub depth: u32,
    /// 0 for the function itself, N for the Nth inlined call inside it
    /// (innermost highest): gdb shows those as separate frames.
    pub inline_level: u32,
}

/// The variables in scope at a pc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The function's name (the concrete one, not an inlined callee).
    pub function: Option<String>,
    /// Variables, innermost scope first (a name lookup takes the first match).
    pub vars: Vec<LocalVar>,
}

impl Scope {
    /// The variable called `name` (innermost wins).
    pub fn find(&self, name: &str) -> Option<&LocalVar> {
        self.vars.iter().find(|v| v.name == name)
    }
}

/// The result of evaluating a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// In memory at this address.
    Memory(u64),
    /// In a register (DWARF number).
    Register(Register),
    /// Not stored anywhere, but its value is known (`DW_OP_stack_value`).
    Value(u64),
    /// Constant bytes (`DW_OP_implicit_value`, `DW_AT_const_value`).
    Bytes(Vec<u8>),
    /// Made of pieces: (place, size in bytes) each.
    Pieces(Vec<(Place, u64)>),
    /// Optimized out.
    OptimizedOut,
}

/// What evaluating a location needs from the target (the selected frame).
pub trait LocContext {
    /// A register of the frame by DWARF number (`None` if unknown).
    fn register(&mut self, reg: Register) -> Option<u64>;
    /// The frame's canonical frame address (`None` if unknown).
    fn cfa(&mut self) -> Option<u64>;
    /// Reads `size` (1..=8) bytes little-endian (`None` if unreadable).
    fn read(&mut self, address: u64, size: u8) -> Option<u64>;
}

/// A DWARF `DW_TAG_variant_part` of a Rust enum (or `Option`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantPart {
    /// The discriminant member (offset, type); `None` for single-variant enums.
    pub discriminant: Option<Field>,
    /// The variants.
    pub variants: Vec<Variant>,
}

/// One variant of a [`VariantPart`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The discriminant value selecting it; `None` = the default variant.
    pub discr_value: Option<u64>,
    /// The member holding the variant's data (named like the variant, e.g. `Some`).
    pub field: Field,
}

/// One operation of a location expression, decoded for compilers (the
/// in-kernel condition compiler turns these into register and memory reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocOp {
    /// `DW_OP_regN`: the value is in the register.
    Reg(Register),
    /// `DW_OP_bregN off`: push register + offset.
    Breg(Register, i64),
    /// `DW_OP_fbreg off`: push frame base + offset.
    Fbreg(i64),
    /// `DW_OP_call_frame_cfa`.
    CallFrameCfa,
    /// `DW_OP_addr`, `DW_OP_constN`, `DW_OP_litN`: push a constant.
    Const(u64),
    /// `DW_OP_plus_uconst`.
    PlusConst(u64),
    /// `DW_OP_plus`.
    Plus,
    /// `DW_OP_minus`.
    Minus,
    /// `DW_OP_deref` / `DW_OP_deref_size N`.
    Deref(u8),
    /// `DW_OP_stack_value`: the top is the value, not its address.
    StackValue,
}

impl LocExpr {
    /// The operations of the location (`Err`: an operation outside
    /// [`LocOp`], named).
    pub fn ops(&self) -> std::result::Result<Vec<LocOp>, String> {
        decode_ops(&self.bytes, self.encoding, self.slide)
    }

    /// The operations of the function's frame base, if it has one.
    pub fn frame_base_ops(&self) -> Option<std::result::Result<Vec<LocOp>, String>> {
        self.frame_base
            .as_deref()
            .map(|b| decode_ops(b, self.encoding, self.slide))
    }

    /// Evaluates the location against `ctx`.
    pub fn evaluate(&self, ctx: &mut dyn LocContext) -> std::result::Result<Place, String> {
        eval_expr(
            &self.bytes,
            self.frame_base.as_deref(),
            self.encoding,
            self.slide,
            ctx,
            0,
        )
    }
}

fn decode_ops(
    bytes: &[u8],
    encoding: gimli::Encoding,
    slide: Slide,
) -> std::result::Result<Vec<LocOp>, String> {
    use gimli::Operation as O;
    let mut r = gimli::EndianSlice::new(bytes, gimli::LittleEndian);
    let mut out = Vec::new();
    while !gimli::Reader::is_empty(&r) {
        let op = O::parse(&mut r, encoding).map_err(|e| format!("bad DWARF location: {e}"))?;
        out.push(match op {
            O::Register { register } => LocOp::Reg(Register(register.0)),
            O::RegisterOffset {
                register,
                offset,
                base_type,
            } if base_type.0 == 0 => LocOp::Breg(Register(register.0), offset),
            O::FrameOffset { offset } => LocOp::Fbreg(offset),
            O::CallFrameCFA => LocOp::CallFrameCfa,
            O::Address { address } => LocOp::Const(slide.to_runtime(address)),
            O::UnsignedConstant { value } => LocOp::Const(value),
            O::SignedConstant { value } => LocOp::Const(value as u64),
            O::PlusConstant { value } => LocOp::PlusConst(value),
            O::Plus => LocOp::Plus,
            O::Minus => LocOp::Minus,
            O::Deref {
                size, space: false, ..
            } => LocOp::Deref(size),
            O::StackValue => LocOp::StackValue,
            O::EntryValue { .. } => {
                return Err("the value is only known at function entry (DW_OP_entry_value)".into());
            }
            O::Piece { .. } => return Err("the value is split into pieces".into()),
            other => return Err(format!("unsupported DWARF operation {other:?}")),
        });
    }
    Ok(out)
}

fn eval_expr(
    bytes: &[u8],
    frame_base: Option<&[u8]>,
    encoding: gimli::Encoding,
    slide: Slide,
    ctx: &mut dyn LocContext,
    depth: u32,
) -> std::result::Result<Place, String> {
    use gimli::EvaluationResult as R;
    if depth > 4 {
        return Err("location expression nests too deeply".into());
    }
    let reader = gimli::EndianSlice::new(bytes, gimli::LittleEndian);
    let mut eval = gimli::Expression(reader).evaluation(encoding);
    let err = |e: gimli::Error| format!("bad DWARF location expression: {e}");
    let mut res = eval.evaluate().map_err(err)?;
    loop {
        res = match res {
            R::Complete => break,
            R::RequiresMemory { address, size, .. } => {
                let v = ctx
                    .read(address, size)
                    .ok_or_else(|| format!("memory at {address:#x} is not readable"))?;
                eval.resume_with_memory(gimli::Value::Generic(v))
                    .map_err(err)?
            }
            R::RequiresRegister { register, .. } => {
                let r = Register(register.0);
                let v = ctx
                    .register(r)
                    .ok_or_else(|| format!("register {r} is not known in this frame"))?;
                eval.resume_with_register(gimli::Value::Generic(v))
                    .map_err(err)?
            }
            R::RequiresFrameBase => {
                let fb = frame_base.ok_or("the function has no frame base")?;
                let base = match eval_expr(fb, None, encoding, slide, ctx, depth + 1)? {
                    Place::Memory(a) | Place::Value(a) => a,
                    Place::Register(r) => ctx
                        .register(r)
                        .ok_or_else(|| format!("register {r} is not known in this frame"))?,
                    _ => return Err("unsupported frame base".into()),
                };
                eval.resume_with_frame_base(base).map_err(err)?
            }
            R::RequiresCallFrameCfa => {
                let cfa = ctx.cfa().ok_or("the frame's CFA is not known")?;
                eval.resume_with_call_frame_cfa(cfa).map_err(err)?
            }
            R::RequiresRelocatedAddress(a) => eval
                .resume_with_relocated_address(slide.to_runtime(a))
                .map_err(err)?,
            R::RequiresEntryValue(_) => return Ok(Place::OptimizedOut),
            other => return Err(format!("unsupported DWARF location operation ({other:?})")),
        };
    }
    let pieces = eval.result();
    let one = |loc: &gimli::Location<gimli::EndianSlice<'_, gimli::LittleEndian>>| match loc {
        gimli::Location::Empty => Place::OptimizedOut,
        gimli::Location::Register { register } => Place::Register(Register(register.0)),
        gimli::Location::Address { address } => Place::Memory(*address),
        gimli::Location::Value { value } => Place::Value(match *value {
            gimli::Value::Generic(v) | gimli::Value::U64(v) => v,
            gimli::Value::I64(v) => v as u64,
            gimli::Value::U32(v) => u64::from(v),
            gimli::Value::I32(v) => v as i64 as u64,
            gimli::Value::U16(v) => u64::from(v),
            gimli::Value::I16(v) => v as i64 as u64,
            gimli::Value::U8(v) => u64::from(v),
            gimli::Value::I8(v) => v as i64 as u64,
            gimli::Value::F32(v) => u64::from(v.to_bits()),
            gimli::Value::F64(v) => v.to_bits(),
        }),
        gimli::Location::Bytes { value } => Place::Bytes(value.slice().to_vec()),
        gimli::Location::ImplicitPointer { .. } => Place::OptimizedOut,
    };
    match pieces.as_slice() {
        [] => Ok(Place::OptimizedOut),
        [p] if p.size_in_bits.is_none() => Ok(one(&p.location)),
        ps => Ok(Place::Pieces(
            ps.iter()
                .map(|p| (one(&p.location), p.size_in_bits.unwrap_or(64) / 8))
                .collect(),
        )),
    }
}

fn children_of(
    unit: &Unit,
    offset: gimli::UnitOffset,
) -> std::result::Result<Vec<gimli::UnitOffset>, gimli::Error> {
    let mut out = Vec::new();
    let mut tree = unit.entries_tree(Some(offset))?;
    let root = tree.root()?;
    let mut iter = root.children();
    while let Some(child) = iter.next()? {
        out.push(child.entry().offset());
    }
    Ok(out)
}

/// The index of global variables, built in one pass over every unit.
pub(crate) struct VarIndex {
    /// Name (plain and namespace-qualified) -> DIE offsets of variables
    /// with a static address.
    names: HashMap<String, Vec<u64>>,
    /// Name -> DIE offset of a top-level declaration (`extern`) without
    /// any definition in DWARF: a C variable the linker script defines
    /// (Linux's `jiffies`, an alias of `jiffies_64`). Its address is the
    /// symbol table's.
    decls: HashMap<String, u64>,
}

impl DwarfIndex {
    /// Builds the [`VarIndex`].
    pub(crate) fn build_var_names(&self) -> VarIndex {
        use gimli::constants as c;
        let mut map: HashMap<String, Vec<u64>> = HashMap::new();
        let mut decls: HashMap<String, u64> = HashMap::new();
        let mut headers = self.dwarf.units();
        while let Ok(Some(header)) = headers.next() {
            let Ok(unit) = self.dwarf.unit(header) else {
                continue;
            };
            let mut cursor = unit.entries();
            // (depth, qualified name) of enclosing namespaces/types; None for
            // a scope variables in which are not globals (functions).
            let mut scopes: Vec<(isize, Option<String>)> = Vec::new();
            while let Ok(Some(entry)) = cursor.next_dfs() {
                let depth = entry.depth();
                while scopes.last().is_some_and(|(d, _)| *d >= depth) {
                    scopes.pop();
                }
                let tag = entry.tag();
                let name = entry
                    .attr_value(c::DW_AT_name)
                    .and_then(|v| self.dwarf.attr_string(&unit, v).ok())
                    .map(|n| n.inner().to_string_lossy().into_owned())
                    .or_else(|| {
                        // A C definition of a variable declared `extern`
                        // (`init_task`): its name is on the declaration.
                        if tag != c::DW_TAG_variable {
                            return None;
                        }
                        let Some(AttributeValue::UnitRef(r)) =
                            entry.attr_value(c::DW_AT_specification)
                        else {
                            return None;
                        };
                        let d = unit.entry(r).ok()?;
                        d.attr_value(c::DW_AT_name)
                            .and_then(|v| self.dwarf.attr_string(&unit, v).ok())
                            .map(|n| n.inner().to_string_lossy().into_owned())
                    });
                let outer = scopes.last().map(|(_, s)| s.clone());
                let qualified = match (&outer, &name) {
                    (Some(Some(o)), Some(n)) => Some(format!("{o}::{n}")),
                    (None, Some(n)) => Some(n.clone()),
                    _ => None,
                };
                if tag == c::DW_TAG_variable
                    && let Some(AttributeValue::Exprloc(e)) = entry.attr_value(c::DW_AT_location)
                    && matches!(
                        e.operations(unit.encoding()).next(),
                        Ok(Some(gimli::Operation::Address { .. }))
                    )
                    && let Some(off) = entry.offset().to_debug_info_offset(&unit.header)
                {
                    let off = off.0 as u64;
                    // Function statics (C) live in the function's scope: by plain name only.
                    if let Some(q) = &qualified
                        && name.as_ref() != Some(q)
                    {
                        map.entry(q.clone()).or_default().push(off);
                    }
                    if let Some(n) = name.clone() {
                        map.entry(n).or_default().push(off);
                    }
                } else if tag == c::DW_TAG_variable
                    && scopes.is_empty()
                    && entry.attr(c::DW_AT_declaration).is_some()
                    && let Some(n) = &name
                    && let Some(off) = entry.offset().to_debug_info_offset(&unit.header)
                {
                    decls.entry(n.clone()).or_insert(off.0 as u64);
                }
                if entry.has_children() {
                    let scope = match tag {
                        c::DW_TAG_namespace
                        | c::DW_TAG_structure_type
                        | c::DW_TAG_union_type
                        | c::DW_TAG_enumeration_type => qualified,
                        c::DW_TAG_compile_unit => None,
                        _ => None,
                    };
                    if tag == c::DW_TAG_compile_unit {
                        continue;
                    }
                    scopes.push((depth, scope));
                }
            }
        }
        decls.retain(|n, _| !map.contains_key(n));
        VarIndex { names: map, decls }
    }
}

impl Elf {
    /// Globals and statics called `name`: a C name, a Rust path
    /// (`kernel::workloads::NEXT_PID`) or its last component (`NEXT_PID`).
    pub fn globals_named(&self, name: &str) -> Result<Vec<Global>> {
        let dw = self.state.dwarf()?;
        let index = dw.var_names.get_or_init(|| dw.build_var_names());
        let mut out: Vec<Global> = Vec::new();
        for off in index.names.get(name.trim()).into_iter().flatten() {
            let Some((unit, uoff)) = dw.unit_for(*off as usize) else {
                continue;
            };
            let Ok(entry) = unit.entry(uoff) else {
                continue;
            };
            let Some(AttributeValue::Exprloc(e)) = entry.attr_value(constants::DW_AT_location)
            else {
                continue;
            };
            let Ok(Some(gimli::Operation::Address { address })) =
                e.operations(unit.encoding()).next()
            else {
                continue;
            };
            if out.iter().any(|g| g.address == address) {
                continue;
            }
            // A C definition of a variable declared `extern` elsewhere
            // (`init_task`) has its type on the declaration it specifies.
            let ty = ref_attr(&unit, &entry, constants::DW_AT_type).or_else(|| {
                let (su, so) = self.origin(dw, &unit, &entry)?;
                let se = su.entry(so).ok()?;
                ref_attr(&su, &se, constants::DW_AT_type)
            });
            out.push(Global {
                name: name.trim().to_string(),
                address,
                ty,
            });
        }
        // Declared in DWARF, defined by the linker (`jiffies`): the symbol
        // table's address, the declaration's type (as gdb types it).
        if out.is_empty()
            && let Some(off) = index.decls.get(name.trim())
            && let Some((unit, uoff)) = dw.unit_for(*off as usize)
            && let Ok(entry) = unit.entry(uoff)
            && let Some(sym) = self
                .state
                .symtab()
                .lookup(name.trim())
                .into_iter()
                .find(|s| s.kind != crate::SymbolKind::Function)
        {
            out.push(Global {
                name: name.trim().to_string(),
                address: sym.address,
                ty: ref_attr(&unit, &entry, constants::DW_AT_type),
            });
        }
        Ok(out)
    }

    /// The source language of the unit covering `pc`; for no pc (or no unit
    /// there), the language of the program (Rust when it has Rust units
    /// with code, else C).
    pub fn lang_at(&self, pc: Option<u64>) -> Lang {
        let Ok(dw) = self.state.dwarf() else {
            return Lang::C;
        };
        if let Some(pc) = pc
            && let Some(u) = dw.ctx.find_dwarf_and_unit(pc).skip_all_loads()
        {
            return crate::types::unit_lang(u.unit);
        }
        if self.lookup("rust_begin_unwind").is_empty() {
            Lang::C
        } else {
            Lang::Rust
        }
    }

    /// Names of globals (plain and qualified) starting with `prefix`, sorted.
    pub fn global_names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let Ok(dw) = self.state.dwarf() else {
            return Vec::new();
        };
        let index = dw.var_names.get_or_init(|| dw.build_var_names());
        let mut v: Vec<String> = index
            .names
            .keys()
            .chain(index.decls.keys())
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The parameters and locals in scope at `pc`, with their locations at
    /// that pc. Empty (no error) where DWARF does not cover `pc`.
    pub fn scope_at(&self, pc: u64) -> Result<Scope> {
        let dw = self.state.dwarf()?;
        let path = &self.state.path;
        let Some(unit_ref) = dw.ctx.find_dwarf_and_unit(pc).skip_all_loads() else {
            return Ok(Scope::default());
        };
        let unit_start = unit_ref.unit.header.offset().0;
        let unit = dw.unit_at(unit_start).map_err(|e| Error::dwarf(path, e))?;
        let mut frames = dw
            .ctx
            .find_frames(pc)
            .skip_all_loads()
            .map_err(|e| Error::dwarf(path, e))?;
        let mut outer = None;
        while let Some(f) = frames.next().map_err(|e| Error::dwarf(path, e))? {
            outer = f.dw_die_offset;
        }
        let Some(sub) = outer else {
            return Ok(Scope::default());
        };
        let die = unit.entry(sub).map_err(|e| Error::dwarf(path, e))?;
        let frame_base = match die.attr_value(constants::DW_AT_frame_base) {
            Some(AttributeValue::Exprloc(e)) => Some(e.0.inner().slice().to_vec()),
            _ => None,
        };
        let mut scope = Scope::default();
        // Walk down the blocks containing pc; collect per level.
        let mut levels: Vec<Vec<LocalVar>> = Vec::new();
        let mut at = sub;
        let func_name = self.die_name(dw, &unit, sub);
        let mut inline_level = 0;
        for depth in 0..32u32 {
            let mut here = Vec::new();
            let mut next = None;
            let mut next_inline = false;
            for c in children_of(&unit, at).map_err(|e| Error::dwarf(path, e))? {
                let Ok(e) = unit.entry(c) else { continue };
                match e.tag() {
                    constants::DW_TAG_formal_parameter | constants::DW_TAG_variable => {
                        if let Some(mut v) =
                            self.local_var(dw, &unit, &e, pc, frame_base.as_deref(), depth)
                        {
                            v.inline_level = inline_level;
                            here.push(v);
                        }
                    }
                    constants::DW_TAG_lexical_block | constants::DW_TAG_inlined_subroutine
                        if next.is_none() =>
                    {
                        if let Ok(mut ranges) = dw.dwarf.die_ranges(&unit, &e) {
                            while let Ok(Some(r)) = ranges.next() {
                                if r.begin <= pc && pc < r.end {
                                    next = Some(c);
                                    if e.tag() == constants::DW_TAG_inlined_subroutine {
                                        next_inline = true;
                                    }
                                    break;
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            levels.push(here);
            if next_inline {
                inline_level += 1;
            }
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        for level in levels.into_iter().rev() {
            scope.vars.extend(level);
        }
        scope.function = func_name;
        Ok(scope)
    }

    fn die_name(&self, dw: &DwarfIndex, unit: &Unit, off: gimli::UnitOffset) -> Option<String> {
        let e = unit.entry(off).ok()?;
        let (u, o) = self.origin(dw, unit, &e)?;
        let d = u.entry(o).ok()?;
        let linkage = string_attr(dw, &u, &d, constants::DW_AT_linkage_name);
        match linkage {
            Some(l) => Some(crate::names::demangle(&l).into_owned()),
            None => string_attr(dw, &u, &d, constants::DW_AT_name),
        }
    }

    /// The DIE that holds names and types: the abstract origin (or
    /// specification) if any, else the DIE itself.
    fn origin(
        &self,
        dw: &DwarfIndex,
        unit: &Unit,
        e: &gimli::DebuggingInformationEntry<Reader>,
    ) -> Option<(std::sync::Arc<Unit>, gimli::UnitOffset)> {
        for at in [
            constants::DW_AT_abstract_origin,
            constants::DW_AT_specification,
        ] {
            if let Some(id) = ref_attr(unit, e, at)
                && let Some(found) = dw.unit_for(id.0 as usize)
            {
                return Some(found);
            }
        }
        e.offset()
            .to_debug_info_offset(&unit.header)
            .and_then(|g| dw.unit_for(g.0))
    }

    fn local_var(
        &self,
        dw: &DwarfIndex,
        unit: &Unit,
        e: &gimli::DebuggingInformationEntry<Reader>,
        pc: u64,
        frame_base: Option<&[u8]>,
        depth: u32,
    ) -> Option<LocalVar> {
        let (ou, oo) = self.origin(dw, unit, e)?;
        let od = ou.entry(oo).ok()?;
        let name = string_attr(dw, &ou, &od, constants::DW_AT_name)?;
        let ty = ref_attr(&ou, &od, constants::DW_AT_type)
            .or_else(|| ref_attr(unit, e, constants::DW_AT_type));
        let encoding = unit.encoding();
        let expr = |ex: gimli::Expression<Reader>| {
            VarLocation::Expr(LocExpr {
                bytes: ex.0.inner().slice().to_vec(),
                frame_base: frame_base.map(<[u8]>::to_vec),
                encoding,
                slide: self.state.slide.get(),
            })
        };
        let location = match e.attr_value(constants::DW_AT_location) {
            Some(AttributeValue::Exprloc(ex)) => expr(ex),
            Some(other) => {
                let mut found = VarLocation::OptimizedOut;
                if let Ok(Some(mut iter)) = dw.dwarf.attr_locations(unit, other) {
                    while let Ok(Some(entry)) = iter.next() {
                        if entry.range.begin <= pc && pc < entry.range.end {
                            found = expr(entry.data);
                            break;
                        }
                    }
                }
                found
            }
            None => match e.attr_value(constants::DW_AT_const_value) {
                Some(AttributeValue::Block(b)) => VarLocation::Const(b.inner().slice().to_vec()),
                Some(AttributeValue::Sdata(v)) => VarLocation::Const(v.to_le_bytes().to_vec()),
                Some(v) => match udata(&v) {
                    Some(x) => VarLocation::Const(x.to_le_bytes().to_vec()),
                    None => VarLocation::OptimizedOut,
                },
                None => VarLocation::OptimizedOut,
            },
        };
        Some(LocalVar {
            name,
            ty,
            is_param: e.tag() == constants::DW_TAG_formal_parameter,
            location,
            depth,
            inline_level: 0,
        })
    }

    /// The variant part of a Rust enum type (`None` for other types).
    pub fn variant_part(&self, id: TypeId) -> Result<Option<VariantPart>> {
        let dw = self.state.dwarf()?;
        let path = &self.state.path;
        let (unit, off) = dw.unit_for(id.0 as usize).ok_or(Error::NoSuchType(id.0))?;
        let kids = children_of(&unit, off).map_err(|e| Error::dwarf(path, e))?;
        let Some(vp) = kids.into_iter().find(|c| {
            unit.entry(*c)
                .is_ok_and(|e| e.tag() == constants::DW_TAG_variant_part)
        }) else {
            return Ok(None);
        };
        let vpe = unit.entry(vp).map_err(|e| Error::dwarf(path, e))?;
        let discr_die = match vpe.attr_value(constants::DW_AT_discr) {
            Some(AttributeValue::UnitRef(o)) => Some(o),
            _ => None,
        };
        let member = |c: &gimli::DebuggingInformationEntry<Reader>| Field {
            name: string_attr(dw, &unit, c, constants::DW_AT_name),
            offset: match c.attr_value(constants::DW_AT_data_member_location) {
                Some(v) => udata(&v).unwrap_or(0),
                None => 0,
            },
            ty: ref_attr(&unit, c, constants::DW_AT_type),
            bit_size: None,
            bit_offset: None,
        };
        let mut part = VariantPart {
            discriminant: None,
            variants: Vec::new(),
        };
        for c in children_of(&unit, vp).map_err(|e| Error::dwarf(path, e))? {
            let Ok(e) = unit.entry(c) else { continue };
            match e.tag() {
                constants::DW_TAG_member if Some(c) == discr_die || discr_die.is_none() => {
                    part.discriminant = Some(member(&e));
                }
                constants::DW_TAG_variant => {
                    let discr_value =
                        e.attr_value(constants::DW_AT_discr_value)
                            .and_then(|v| match v {
                                AttributeValue::Sdata(x) => Some(x as u64),
                                other => udata(&other),
                            });
                    let inner = children_of(&unit, c).map_err(|e| Error::dwarf(path, e))?;
                    for m in inner {
                        let Ok(me) = unit.entry(m) else { continue };
                        if me.tag() == constants::DW_TAG_member {
                            part.variants.push(Variant {
                                discr_value,
                                field: member(&me),
                            });
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Some(part))
    }
}
