//! The fetch program of capture probes: what to read at a probe hit besides
//! the argument registers.
//!
//! A program is at most [`MAX_OPS`] operations. Each reads a value at
//! `base + offset`, where the base is a register, one of the six SysV argument
//! registers, or the result of an earlier operation (so `p->name` is two ops:
//! read `p` at `arg0+OFF`, then a string at `$0+OFF2`). A capture can also
//! copy up to [`MAX_STACK`] bytes of stack above the return address (the
//! stack-passed arguments). All reads are fault-safe in the kernel: a bad
//! address yields a fault marker in the record, never a crash.
//!
//! # Text form (the wire form inside monitor commands)
//!
//! A capture is zero or more space-separated tokens:
//!
//! ```text
//! stack=N                      copy N (<= 64) bytes above the return address
//! fetch=OP[,OP...]             the fetch program, up to 8 ops
//!
//! OP     = KIND@BASE[+OFF|-OFF]
//! KIND   = u8 | u16 | u32 | u64 | strN        (N = max string bytes, 1..=64)
//! BASE   = argI (I = 0..5, rdi rsi rdx rcx r8 r9) | %REG (rax..r15, rip)
//!        | $J   (result of op J, J < this op's index)
//! OFF    = decimal or 0x-hex
//! ```
//!
//! Example: `stack=16 fetch=u64@arg2+0x10,str32@$0+8`.
//! The text form is both what a gdb user types and what the shell generates
//! (see [`CaptureSpec`]'s `Display`), and it round-trips exactly.

use core::fmt;

/// Most operations in one fetch program.
pub const MAX_OPS: usize = 8;
/// Most bytes one string fetch reads (without the NUL).
pub const MAX_STRING: usize = 64;
/// Most stack bytes one capture copies.
pub const MAX_STACK: usize = 64;

/// A general-purpose register (plus rip) in gdb's x86_64 register order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reg {
    Rax = 0,
    Rbx,
    Rcx,
    Rdx,
    Rsi,
    Rdi,
    Rbp,
    Rsp,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
    Rip,
}

const REG_NAMES: [(&str, Reg); 17] = [
    ("rax", Reg::Rax),
    ("rbx", Reg::Rbx),
    ("rcx", Reg::Rcx),
    ("rdx", Reg::Rdx),
    ("rsi", Reg::Rsi),
    ("rdi", Reg::Rdi),
    ("rbp", Reg::Rbp),
    ("rsp", Reg::Rsp),
    ("r8", Reg::R8),
    ("r9", Reg::R9),
    ("r10", Reg::R10),
    ("r11", Reg::R11),
    ("r12", Reg::R12),
    ("r13", Reg::R13),
    ("r14", Reg::R14),
    ("r15", Reg::R15),
    ("rip", Reg::Rip),
];

impl Reg {
    /// The register's name without `%` (`"rdi"`).
    pub fn name(self) -> &'static str {
        REG_NAMES
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("?", |(n, _)| n)
    }

    /// Looks a register up by name (without `%`).
    pub fn from_name(name: &str) -> Option<Reg> {
        REG_NAMES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }

    /// From the numeric code used in binary encodings.
    pub fn from_code(code: u8) -> Option<Reg> {
        REG_NAMES.get(usize::from(code)).map(|(_, r)| *r)
    }

    /// The SysV argument register `i` (0..6): rdi, rsi, rdx, rcx, r8, r9.
    pub fn arg(i: u8) -> Option<Reg> {
        [Reg::Rdi, Reg::Rsi, Reg::Rdx, Reg::Rcx, Reg::R8, Reg::R9]
            .get(usize::from(i))
            .copied()
    }
}

/// What one operation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchKind {
    U8,
    U16,
    U32,
    U64,
    /// A NUL-terminated string of at most this many bytes (1..=[`MAX_STRING`]).
    Str(u8),
}

impl FetchKind {
    /// Bytes read for fixed-width kinds; the limit for strings.
    pub fn size(self) -> usize {
        match self {
            FetchKind::U8 => 1,
            FetchKind::U16 => 2,
            FetchKind::U32 => 4,
            FetchKind::U64 => 8,
            FetchKind::Str(n) => usize::from(n),
        }
    }
}

/// Where the address of a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// A register of the probed context.
    Reg(Reg),
    /// SysV argument `i` (0..6).
    Arg(u8),
    /// The value of an earlier op's result (for a string: its address).
    Result(u8),
}

/// One read: `kind` at `base + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchOp {
    pub kind: FetchKind,
    pub base: Base,
    pub offset: i64,
}

impl FetchOp {
    /// A read of `kind` at `base + offset`.
    pub const fn new(kind: FetchKind, base: Base, offset: i64) -> Self {
        FetchOp { kind, base, offset }
    }
}

/// Why a fetch program or capture was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// More than [`MAX_OPS`] operations.
    TooManyOps,
    /// An op's kind is not u8/u16/u32/u64/strN.
    BadKind,
    /// A string limit outside 1..=[`MAX_STRING`].
    BadStringLimit,
    /// A base that is not argI, %reg or $J.
    BadBase,
    /// `argI` with I > 5.
    BadArgIndex,
    /// `$J` that does not name an earlier op.
    ForwardResult,
    /// The offset is not a number.
    BadOffset,
    /// The op is missing its `@`.
    MissingAt,
    /// `stack=N` with N > [`MAX_STACK`] or not a number.
    BadStackSize,
    /// A capture token other than `stack=` / `fetch=`.
    UnknownToken,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FetchError::TooManyOps => "too many fetch ops: at most 8, split the capture",
            FetchError::BadKind => "bad fetch kind: use u8, u16, u32, u64 or strN (e.g. str32)",
            FetchError::BadStringLimit => "bad string limit: strN needs N in 1..=64",
            FetchError::BadBase => "bad fetch base: use argI (0..5), %reg (e.g. %rdi) or $J",
            FetchError::BadArgIndex => "bad argument index: argI needs I in 0..=5",
            FetchError::ForwardResult => "bad result reference: $J must name an earlier op",
            FetchError::BadOffset => "bad fetch offset: use +N or -N (decimal or 0x-hex)",
            FetchError::MissingAt => "bad fetch op: write KIND@BASE[+OFF], e.g. u64@arg0+8",
            FetchError::BadStackSize => "bad stack size: stack=N needs N in 0..=64",
            FetchError::UnknownToken => "unknown capture token: use stack=N or fetch=OP,...",
        };
        f.write_str(s)
    }
}

/// A validated fetch program (at most [`MAX_OPS`] ops, results only refer
/// backwards, limits in range). `Copy`, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchProgram {
    ops: [FetchOp; MAX_OPS],
    len: u8,
}

impl Default for FetchProgram {
    fn default() -> Self {
        Self::new()
    }
}

impl FetchProgram {
    /// The empty program.
    pub const fn new() -> Self {
        FetchProgram {
            ops: [FetchOp::new(FetchKind::U8, Base::Arg(0), 0); MAX_OPS],
            len: 0,
        }
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[FetchOp] {
        self.ops.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// No operations.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an op after validating it (the builder for the host side).
    pub fn push(&mut self, op: FetchOp) -> Result<&mut Self, FetchError> {
        let idx = usize::from(self.len);
        validate_op(&op, idx)?;
        let slot = self.ops.get_mut(idx).ok_or(FetchError::TooManyOps)?;
        *slot = op;
        self.len += 1;
        Ok(self)
    }

    /// Parses the comma-separated op list of `fetch=`.
    pub fn parse(text: &str) -> Result<FetchProgram, FetchError> {
        let mut prog = FetchProgram::new();
        if text.is_empty() {
            return Ok(prog);
        }
        for op in text.split(',') {
            prog.push(parse_op(op)?)?;
        }
        Ok(prog)
    }
}

fn validate_op(op: &FetchOp, idx: usize) -> Result<(), FetchError> {
    if idx >= MAX_OPS {
        return Err(FetchError::TooManyOps);
    }
    if let FetchKind::Str(n) = op.kind
        && (n == 0 || usize::from(n) > MAX_STRING)
    {
        return Err(FetchError::BadStringLimit);
    }
    match op.base {
        Base::Arg(i) if i > 5 => Err(FetchError::BadArgIndex),
        Base::Result(j) if usize::from(j) >= idx => Err(FetchError::ForwardResult),
        _ => Ok(()),
    }
}

fn parse_op(text: &str) -> Result<FetchOp, FetchError> {
    let (kind, rest) = text.split_once('@').ok_or(FetchError::MissingAt)?;
    let kind = match kind {
        "u8" => FetchKind::U8,
        "u16" => FetchKind::U16,
        "u32" => FetchKind::U32,
        "u64" => FetchKind::U64,
        k => {
            let n = k.strip_prefix("str").ok_or(FetchError::BadKind)?;
            let n: u8 = n.parse().map_err(|_| FetchError::BadStringLimit)?;
            FetchKind::Str(n)
        }
    };
    let split = rest.find(['+', '-']).unwrap_or(rest.len());
    let (base, off) = rest.split_at(split);
    let base = if let Some(i) = base.strip_prefix("arg") {
        Base::Arg(i.parse().map_err(|_| FetchError::BadArgIndex)?)
    } else if let Some(r) = base.strip_prefix('%') {
        Base::Reg(Reg::from_name(r).ok_or(FetchError::BadBase)?)
    } else if let Some(j) = base.strip_prefix('$') {
        Base::Result(j.parse().map_err(|_| FetchError::BadBase)?)
    } else {
        return Err(FetchError::BadBase);
    };
    let offset = if off.is_empty() {
        0
    } else {
        parse_offset(off).ok_or(FetchError::BadOffset)?
    };
    Ok(FetchOp { kind, base, offset })
}

/// `+N` / `-N`, decimal or 0x-hex.
fn parse_offset(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'+' => (false, s.get(1..)?),
        b'-' => (true, s.get(1..)?),
        _ => return None,
    };
    let mag = crate::command::parse_u64(digits)?;
    let mag = i64::try_from(mag).ok()?;
    Some(if neg { -mag } else { mag })
}

impl fmt::Display for FetchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FetchKind::U8 => f.write_str("u8")?,
            FetchKind::U16 => f.write_str("u16")?,
            FetchKind::U32 => f.write_str("u32")?,
            FetchKind::U64 => f.write_str("u64")?,
            FetchKind::Str(n) => write!(f, "str{n}")?,
        }
        match self.base {
            Base::Reg(r) => write!(f, "@%{}", r.name())?,
            Base::Arg(i) => write!(f, "@arg{i}")?,
            Base::Result(j) => write!(f, "@${j}")?,
        }
        if self.offset > 0 {
            write!(f, "+{:#x}", self.offset)?;
        } else if self.offset < 0 {
            write!(f, "-{:#x}", self.offset.unsigned_abs())?;
        }
        Ok(())
    }
}

impl fmt::Display for FetchProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.ops().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{op}")?;
        }
        Ok(())
    }
}

/// What a capture probe records besides the argument registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureSpec {
    /// Bytes of stack above the return address to copy (0..=[`MAX_STACK`]).
    pub stack_bytes: u8,
    pub program: FetchProgram,
}

impl CaptureSpec {
    /// Nothing beyond the argument registers.
    pub fn is_empty(&self) -> bool {
        self.stack_bytes == 0 && self.program.is_empty()
    }

    /// Applies one capture token (`stack=N` or `fetch=...`). Returns
    /// `Ok(false)` when the token is not a capture token at all.
    pub fn apply_token(&mut self, token: &str) -> Result<bool, FetchError> {
        if let Some(n) = token.strip_prefix("stack=") {
            let n = crate::command::parse_u64(n).ok_or(FetchError::BadStackSize)?;
            if n > MAX_STACK as u64 {
                return Err(FetchError::BadStackSize);
            }
            self.stack_bytes = n as u8;
            Ok(true)
        } else if let Some(p) = token.strip_prefix("fetch=") {
            self.program = FetchProgram::parse(p)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Parses a whole capture (space-separated tokens).
    pub fn parse(text: &str) -> Result<CaptureSpec, FetchError> {
        let mut spec = CaptureSpec::default();
        for tok in text.split_ascii_whitespace() {
            if !spec.apply_token(tok)? {
                return Err(FetchError::UnknownToken);
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for CaptureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.stack_bytes > 0 {
            write!(f, "stack={}", self.stack_bytes)?;
            sep = " ";
        }
        if !self.program.is_empty() {
            write!(f, "{sep}fetch={}", self.program)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let spec = CaptureSpec::parse("stack=16 fetch=u64@arg2+0x10,str32@$0+8,u8@%rsp-8").unwrap();
        assert_eq!(spec.stack_bytes, 16);
        let ops = spec.program.ops();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0], FetchOp::new(FetchKind::U64, Base::Arg(2), 16));
        assert_eq!(ops[1], FetchOp::new(FetchKind::Str(32), Base::Result(0), 8));
        assert_eq!(ops[2], FetchOp::new(FetchKind::U8, Base::Reg(Reg::Rsp), -8));
        let text = spec.to_string();
        assert_eq!(CaptureSpec::parse(&text).unwrap(), spec);
    }

    #[test]
    fn builder_validates() {
        let mut p = FetchProgram::new();
        assert_eq!(
            p.push(FetchOp::new(FetchKind::U64, Base::Result(0), 0))
                .unwrap_err(),
            FetchError::ForwardResult
        );
        p.push(FetchOp::new(FetchKind::U64, Base::Arg(0), 0))
            .unwrap();
        p.push(FetchOp::new(FetchKind::Str(64), Base::Result(0), 0))
            .unwrap();
        assert_eq!(
            p.push(FetchOp::new(FetchKind::Str(65), Base::Arg(0), 0))
                .unwrap_err(),
            FetchError::BadStringLimit
        );
        for _ in 2..MAX_OPS {
            p.push(FetchOp::new(FetchKind::U8, Base::Arg(1), 0))
                .unwrap();
        }
        assert_eq!(
            p.push(FetchOp::new(FetchKind::U8, Base::Arg(1), 0))
                .unwrap_err(),
            FetchError::TooManyOps
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            ("fetch=u64arg0", FetchError::MissingAt),
            ("fetch=u7@arg0", FetchError::BadKind),
            ("fetch=str0@arg0", FetchError::BadStringLimit),
            ("fetch=str99@arg0", FetchError::BadStringLimit),
            ("fetch=u8@arg6", FetchError::BadArgIndex),
            ("fetch=u8@%xyz", FetchError::BadBase),
            ("fetch=u8@$0", FetchError::ForwardResult),
            ("fetch=u8@arg0+zz", FetchError::BadOffset),
            ("stack=65", FetchError::BadStackSize),
            ("bogus", FetchError::UnknownToken),
        ];
        for (text, err) in cases {
            assert_eq!(CaptureSpec::parse(text).unwrap_err(), err, "{text}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_u64;
        let alphabet = b"u8163264str@arg%$+-0x,= stackfetchrdi";
        for _ in 0..20_000 {
            let mut buf = [0u8; 24];
            let len = (seed % 24) as usize;
            for b in buf.iter_mut().take(len) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = alphabet[(seed % alphabet.len() as u64) as usize];
            }
            if let Ok(s) = core::str::from_utf8(&buf[..len])
                && let Ok(spec) = CaptureSpec::parse(s)
            {
                assert_eq!(CaptureSpec::parse(&spec.to_string()).unwrap(), spec);
            }
        }
    }
}
