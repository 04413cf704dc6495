//! Maps and aggregations computed in the kernel: the wire form of an
//! aggregating probe (what it aggregates, by which key, in how much memory)
//! and the rows that list and print maps.
//!
//! A probe command (`kprobe`, `jprobe`, `kretprobe`) with `agg=` makes an
//! aggregating probe: every hit (that passes `if=`) updates the probe's map
//! in the kernel and sends no event. Tokens:
//!
//! ```text
//! agg=count|sum|min|max|avg|stats|hist|lhist:MIN:MAX:STEP
//! val=HEX               the value (bytecode); not with count
//! key=HEX               an integer key part (bytecode, one word)
//! key=strN:HEX          a string key part: the program gives the address,
//!                       at most N bytes (1..=64) up to a NUL are the key
//! budget=BYTES          the map's memory, fixed at creation (default 256 KiB)
//! ```
//!
//! Up to [`MAX_KEY_PARTS`] key parts, at most [`MAX_KEY_BYTES`] bytes
//! together (8 per integer part, N per `strN` part). The map is named by
//! its probe's id; `maps`, `map print|clear|zero ID` read and reset it.
//!
//! Rows:
//!
//! ```text
//! map id=N fn=FN keys=int,str64,... entries=N capacity=N map_full=N faults=N bytes=N
//! entry id=N key=PART,PART,... count=N sum=N min=N max=N [b=K:N,K:N,...]
//! ```
//!
//! `key=` parts are `0x`-hex words or `s` + the string's bytes in hex
//! (`-` when the map has no key). `sum`, `min`, `max` are the signed
//! 64-bit values (decimal, may be negative); `b=` lists the non-empty
//! buckets of `hist` (K = the signed bit length of the value: 0 for 0, n
//! for [2^(n-1), 2^n), -n for the negatives of the same magnitudes) or
//! `lhist` (K = 0 below MIN, i+1 for [MIN+i*STEP, MIN+(i+1)*STEP), last
//! at or above MAX).

use core::fmt;

use crate::bytecode::{self, Program};
use crate::command::parse_u64;
use crate::reply::Row;

/// Most key parts (`by a, b, c, d`).
pub const MAX_KEY_PARTS: usize = 4;
/// Most bytes of one key (8 per integer part, N per `strN` part).
pub const MAX_KEY_BYTES: usize = 96;
/// Longest string key part.
pub const MAX_KEY_STR: usize = 64;
/// Default map memory.
pub const DEFAULT_BUDGET: u32 = 256 * 1024;
/// Largest memory budget of one map.
pub const MAX_BUDGET: u32 = 4 * 1024 * 1024;
/// Most buckets of a linear histogram (plus the two outside the range).
pub const MAX_LHIST_BUCKETS: u64 = 1024;
/// Buckets of a power-of-two histogram: signed bit lengths -64..=64.
pub const HIST_BUCKETS: usize = 129;

/// The aggregation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Stats,
    /// Power-of-two histogram.
    Hist,
    /// Linear histogram of `[min, max)` in steps of `step`.
    Lhist {
        min: i64,
        max: i64,
        step: u64,
    },
}

/// The names, in the order help texts list them.
pub const FN_NAMES: [&str; 8] = [
    "count", "sum", "min", "max", "avg", "stats", "hist", "lhist",
];

impl AggFn {
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
            AggFn::Stats => "stats",
            AggFn::Hist => "hist",
            AggFn::Lhist { .. } => "lhist",
        }
    }

    /// `count`, `hist`, `lhist:0:20:1`, ...
    pub fn parse(text: &str) -> Result<AggFn, AggError> {
        Ok(match text {
            "count" => AggFn::Count,
            "sum" => AggFn::Sum,
            "min" => AggFn::Min,
            "max" => AggFn::Max,
            "avg" => AggFn::Avg,
            "stats" => AggFn::Stats,
            "hist" => AggFn::Hist,
            t => {
                let Some(rest) = t.strip_prefix("lhist:") else {
                    return Err(AggError::UnknownFunction);
                };
                let mut it = rest.split(':');
                let min = it.next().and_then(parse_i64).ok_or(AggError::BadLhist)?;
                let max = it.next().and_then(parse_i64).ok_or(AggError::BadLhist)?;
                let step = it.next().and_then(parse_u64).ok_or(AggError::BadLhist)?;
                if it.next().is_some() {
                    return Err(AggError::BadLhist);
                }
                AggFn::Lhist { min, max, step }
            }
        })
    }

    /// Whether the function takes a value (`count` does not).
    pub fn needs_value(self) -> bool {
        self != AggFn::Count
    }

    /// Buckets of a histogram (0 for the others); `lhist` includes the two
    /// outside the range.
    pub fn buckets(self) -> usize {
        match self {
            AggFn::Hist => HIST_BUCKETS,
            AggFn::Lhist { min, max, step } => lhist_inner(min, max, step).map_or(0, |n| n + 2),
            _ => 0,
        }
    }
}

/// Buckets inside `[min, max)`, when the range is valid.
fn lhist_inner(min: i64, max: i64, step: u64) -> Option<usize> {
    if step == 0 || min >= max {
        return None;
    }
    let span = (max as i128 - min as i128) as u128;
    let n = span.div_ceil(u128::from(step));
    if n > u128::from(MAX_LHIST_BUCKETS) {
        return None;
    }
    usize::try_from(n).ok()
}

impl fmt::Display for AggFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggFn::Lhist { min, max, step } => write!(f, "lhist:{min}:{max}:{step}"),
            other => f.write_str(other.name()),
        }
    }
}

fn parse_i64(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(m) => {
            let v = parse_u64(m)?;
            if v > 1u64 << 63 {
                None
            } else {
                Some((v as i64).wrapping_neg())
            }
        }
        None => i64::try_from(parse_u64(s)?).ok(),
    }
}

/// One part of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The program's value.
    Int,
    /// The NUL-terminated string at the program's value, at most N bytes.
    Str(u8),
}

impl KeyKind {
    /// Bytes the part takes in a key.
    pub fn size(self) -> usize {
        match self {
            KeyKind::Int => 8,
            KeyKind::Str(n) => usize::from(n),
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Int => f.write_str("int"),
            KeyKind::Str(n) => write!(f, "str{n}"),
        }
    }
}

/// A key part: its kind and the program computing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPart {
    pub kind: KeyKind,
    pub prog: Program,
}

/// What an aggregating probe computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggSpec {
    pub func: AggFn,
    pub value: Option<Program>,
    keys: [Option<KeyPart>; MAX_KEY_PARTS],
    nkeys: u8,
    /// Bytes of kernel memory for the map (entries follow from it).
    pub budget: u32,
}

/// Why an aggregation was refused. `Display` says what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggError {
    UnknownFunction,
    BadLhist,
    /// The function needs a value (`sum`, `hist`, ...).
    MissingValue(&'static str),
    /// `count` takes no value.
    UnexpectedValue,
    TooManyKeys,
    KeyTooLarge,
    /// `key=str:HEX`: a string key part without a bound.
    StringWithoutBound,
    /// `key=strN` with N = 0 or N > [`MAX_KEY_STR`].
    BadStringBound,
    BudgetTooLarge,
    /// `val=`, `key=` or `budget=` without `agg=`.
    NoFunction,
    Program(bytecode::HexProgramError),
    BadNumber,
}

impl fmt::Display for AggError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggError::UnknownFunction => write!(
                f,
                "unknown aggregation function: use count, sum, min, max, avg, stats, hist or lhist"
            ),
            AggError::BadLhist => write!(
                f,
                "lhist needs MIN MAX STEP with MIN < MAX, STEP > 0 and at most {MAX_LHIST_BUCKETS} buckets"
            ),
            AggError::MissingValue(func) => write!(f, "{func} needs a value to aggregate"),
            AggError::UnexpectedValue => f.write_str("count takes no value (count [by KEY])"),
            AggError::TooManyKeys => write!(f, "a key has at most {MAX_KEY_PARTS} parts"),
            AggError::KeyTooLarge => write!(
                f,
                "key too large: at most {MAX_KEY_BYTES} bytes (8 per integer part, N per string part of at most N bytes)"
            ),
            AggError::StringWithoutBound => write!(
                f,
                "a string key needs a bound: strN with N <= {MAX_KEY_STR} (key=str64:HEX)"
            ),
            AggError::BadStringBound => {
                write!(f, "a string key's bound is 1..={MAX_KEY_STR} bytes")
            }
            AggError::BudgetTooLarge => write!(
                f,
                "map budget too large: at most {MAX_BUDGET} bytes ({} MiB)",
                MAX_BUDGET >> 20
            ),
            AggError::NoFunction => f.write_str("val=, key= and budget= need agg=FN"),
            AggError::Program(e) => write!(f, "aggregation program {e}"),
            AggError::BadNumber => f.write_str("bad number: use decimal or 0x-hex"),
        }
    }
}

impl AggSpec {
    /// An aggregation of `func` with no key and the default budget.
    pub const fn new(func: AggFn) -> AggSpec {
        AggSpec {
            func,
            value: None,
            keys: [None; MAX_KEY_PARTS],
            nkeys: 0,
            budget: DEFAULT_BUDGET,
        }
    }

    /// Adds a key part.
    pub fn push_key(&mut self, part: KeyPart) -> Result<(), AggError> {
        let slot = self
            .keys
            .get_mut(usize::from(self.nkeys))
            .ok_or(AggError::TooManyKeys)?;
        *slot = Some(part);
        self.nkeys += 1;
        if self.key_bytes() > MAX_KEY_BYTES {
            return Err(AggError::KeyTooLarge);
        }
        Ok(())
    }

    /// The key parts, in order.
    pub fn keys(&self) -> impl Iterator<Item = &KeyPart> {
        self.keys.iter().flatten()
    }

    /// Bytes of one key.
    pub fn key_bytes(&self) -> usize {
        self.keys().map(|k| k.kind.size()).sum()
    }

    /// Checks the whole spec (what parsing the tokens checks too).
    pub fn validate(&self) -> Result<(), AggError> {
        if let AggFn::Lhist { min, max, step } = self.func
            && lhist_inner(min, max, step).is_none()
        {
            return Err(AggError::BadLhist);
        }
        match (self.func.needs_value(), self.value.is_some()) {
            (true, false) => return Err(AggError::MissingValue(self.func.name())),
            (false, true) => return Err(AggError::UnexpectedValue),
            _ => {}
        }
        if self.key_bytes() > MAX_KEY_BYTES {
            return Err(AggError::KeyTooLarge);
        }
        if self.budget > MAX_BUDGET {
            return Err(AggError::BudgetTooLarge);
        }
        Ok(())
    }

    /// Applies one token of a probe command: `Ok(false)` when it is not an
    /// aggregation token. `spec` starts as `None` and is made by `agg=`
    /// (the other tokens may come before it: they are kept in `pending`).
    pub fn apply_token(
        spec: &mut Option<AggSpec>,
        pending: &mut AggSpec,
        token: &str,
    ) -> Result<bool, AggError> {
        if let Some(f) = token.strip_prefix("agg=") {
            let func = AggFn::parse(f)?;
            pending.func = func;
            *spec = Some(*pending);
        } else if let Some(h) = token.strip_prefix("val=") {
            pending.value = Some(bytecode::from_hex(h).map_err(AggError::Program)?);
        } else if let Some(k) = token.strip_prefix("key=") {
            let (kind, hex) = match k.split_once(':') {
                Some((s, hex)) if s.starts_with("str") => {
                    let n = &s[3..];
                    if n.is_empty() {
                        return Err(AggError::StringWithoutBound);
                    }
                    let n = parse_u64(n).ok_or(AggError::BadStringBound)?;
                    if n == 0 || n > MAX_KEY_STR as u64 {
                        return Err(AggError::BadStringBound);
                    }
                    (KeyKind::Str(n as u8), hex)
                }
                Some(_) => return Err(AggError::Program(bytecode::HexProgramError::BadHex)),
                None => (KeyKind::Int, k),
            };
            let prog = bytecode::from_hex(hex).map_err(AggError::Program)?;
            pending.push_key(KeyPart { kind, prog })?;
        } else if let Some(b) = token.strip_prefix("budget=") {
            let v = parse_u64(b).ok_or(AggError::BadNumber)?;
            pending.budget = u32::try_from(v).unwrap_or(u32::MAX);
            if v > u64::from(MAX_BUDGET) {
                return Err(AggError::BudgetTooLarge);
            }
        } else {
            return Ok(false);
        }
        if let Some(s) = spec.as_mut() {
            let func = s.func;
            *s = *pending;
            s.func = func;
        }
        Ok(true)
    }

    /// After the last token: a spec (validated), or an error when
    /// aggregation tokens came without `agg=`.
    pub fn finish(spec: Option<AggSpec>, pending: &AggSpec) -> Result<Option<AggSpec>, AggError> {
        match spec {
            Some(s) => {
                s.validate()?;
                Ok(Some(s))
            }
            None if pending.value.is_some()
                || pending.nkeys > 0
                || pending.budget != DEFAULT_BUDGET =>
            {
                Err(AggError::NoFunction)
            }
            None => Ok(None),
        }
    }
}

impl fmt::Display for AggSpec {
    /// The tokens: `agg=FN [val=HEX] [key=...]... [budget=N]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agg={}", self.func)?;
        if let Some(v) = &self.value {
            write!(f, " val={}", bytecode::Hex(v))?;
        }
        for k in self.keys() {
            match k.kind {
                KeyKind::Int => write!(f, " key={}", bytecode::Hex(&k.prog))?,
                KeyKind::Str(n) => write!(f, " key=str{n}:{}", bytecode::Hex(&k.prog))?,
            }
        }
        if self.budget != DEFAULT_BUDGET {
            write!(f, " budget={}", self.budget)?;
        }
        Ok(())
    }
}

/// `map id=N fn=FN keys=... entries=N capacity=N map_full=N faults=N bytes=N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRow<'a> {
    pub id: u32,
    pub func: AggFn,
    /// `int,str64,...` (`-`: no key).
    pub keys: &'a str,
    pub entries: u64,
    pub capacity: u64,
    /// Inserts refused because the map was full.
    pub map_full: u64,
    /// Hits whose key or value could not be read (not counted).
    pub faults: u64,
    /// Kernel memory of the map.
    pub bytes: u64,
}

impl<'a> MapRow<'a> {
    pub fn parse(line: &'a str) -> Option<MapRow<'a>> {
        let r = Row::parse(line).filter(|r| r.kind == "map")?;
        Some(MapRow {
            id: u32::try_from(r.num("id")?).ok()?,
            func: AggFn::parse(r.get("fn")?).ok()?,
            keys: r.get("keys")?,
            entries: r.num("entries")?,
            capacity: r.num("capacity")?,
            map_full: r.num("map_full")?,
            faults: r.num("faults").unwrap_or(0),
            bytes: r.num("bytes").unwrap_or(0),
        })
    }
}

impl fmt::Display for MapRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "map id={} fn={} keys={} entries={} capacity={} map_full={} faults={} bytes={}",
            self.id,
            self.func,
            self.keys,
            self.entries,
            self.capacity,
            self.map_full,
            self.faults,
            self.bytes
        )
    }
}

/// Writes the `keys=` value of a spec's key kinds.
pub struct KeyKinds<'a>(pub &'a [KeyKind]);

impl fmt::Display for KeyKinds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

/// A key part's value as it is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyValue<'a> {
    Int(u64),
    /// The string's bytes (without the NUL).
    Str(&'a [u8]),
}

/// The aggregate of one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub count: u64,
    pub sum: i64,
    pub min: i64,
    pub max: i64,
}

/// Writes one `entry` row. `buckets` gives the non-empty histogram
/// buckets `(K, count)` (nothing for the other functions).
pub fn write_entry(
    f: &mut dyn fmt::Write,
    id: u32,
    key: &mut dyn Iterator<Item = KeyValue<'_>>,
    stats: Stats,
    buckets: &mut dyn Iterator<Item = (i32, u64)>,
) -> fmt::Result {
    write!(f, "entry id={id} key=")?;
    let mut any = false;
    for (i, part) in key.enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        any = true;
        match part {
            KeyValue::Int(v) => write!(f, "{v:#x}")?,
            KeyValue::Str(s) => {
                f.write_str("s")?;
                for b in s {
                    write!(f, "{b:02x}")?;
                }
            }
        }
    }
    if !any {
        f.write_str("-")?;
    }
    write!(
        f,
        " count={} sum={} min={} max={}",
        stats.count, stats.sum, stats.min, stats.max
    )?;
    let mut first = true;
    for (k, n) in buckets {
        f.write_str(if first { " b=" } else { "," })?;
        first = false;
        write!(f, "{k}:{n}")?;
    }
    f.write_str("\n")
}

/// One `entry` row as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRow<'a> {
    pub id: u32,
    key: &'a str,
    pub stats: Stats,
    buckets: &'a str,
}

impl<'a> EntryRow<'a> {
    pub fn parse(line: &'a str) -> Option<EntryRow<'a>> {
        let r = Row::parse(line).filter(|r| r.kind == "entry")?;
        Some(EntryRow {
            id: u32::try_from(r.num("id")?).ok()?,
            key: r.get("key")?,
            stats: Stats {
                count: r.num("count")?,
                sum: parse_i64(r.get("sum")?)?,
                min: parse_i64(r.get("min")?)?,
                max: parse_i64(r.get("max")?)?,
            },
            buckets: r.get("b").unwrap_or(""),
        })
    }

    /// Calls `f` with each key part (`None` for a malformed part).
    pub fn key_parts(&self, f: &mut dyn FnMut(Option<KeyValue<'_>>)) {
        if self.key == "-" {
            return;
        }
        let mut buf = [0u8; MAX_KEY_STR];
        for part in self.key.split(',') {
            if let Some(hex) = part.strip_prefix('s') {
                let n = hex.len() / 2;
                let ok = hex.len() % 2 == 0
                    && n <= buf.len()
                    && (0..n).all(|i| {
                        let v = hex
                            .get(2 * i..2 * i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok());
                        if let (Some(v), Some(slot)) = (v, buf.get_mut(i)) {
                            *slot = v;
                            true
                        } else {
                            false
                        }
                    });
                f(ok.then(|| KeyValue::Str(buf.get(..n).unwrap_or(&[]))));
            } else {
                f(parse_u64(part).map(KeyValue::Int));
            }
        }
    }

    /// The non-empty buckets `(K, count)`, in the row's order.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + 'a {
        self.buckets.split(',').filter_map(|b| {
            let (k, n) = b.split_once(':')?;
            let k = parse_i64(k).and_then(|k| i32::try_from(k).ok())?;
            Some((k, parse_u64(n)?))
        })
    }
}

/// The power-of-two bucket of `v` (as a signed value): its signed bit
/// length, -64..=64.
#[inline]
pub fn hist_key(v: i64) -> i32 {
    let b = 64 - v.unsigned_abs().leading_zeros() as i32;
    if v < 0 { -b } else { b }
}

/// `[low, high)` of power-of-two bucket `k` (the shell's `hist`).
pub fn hist_bounds(k: i32) -> (i128, i128) {
    match k {
        0 => (0, 1),
        k if k > 0 => (1i128 << (k - 1), 1i128 << k),
        k => (-(1i128 << (-k)) + 1, -(1i128 << (-k - 1)) + 1),
    }
}

/// The linear bucket of `v`: 0 below `min`, `i + 1` inside, `n + 1` at or
/// above `max` (`n` = inner buckets).
#[inline]
pub fn lhist_index(v: i64, min: i64, max: i64, step: u64, n: usize) -> usize {
    if v < min {
        0
    } else if v >= max {
        n + 1
    } else {
        let off = (v as i128 - min as i128) as u128 / u128::from(step.max(1));
        (off as usize).min(n.saturating_sub(1)) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(code: &[u8]) -> Program {
        Program::verify(code).unwrap()
    }

    #[test]
    fn functions_round_trip() {
        for t in [
            "count",
            "sum",
            "min",
            "max",
            "avg",
            "stats",
            "hist",
            "lhist:0:20:1",
            "lhist:-5:5:2",
        ] {
            assert_eq!(AggFn::parse(t).unwrap().to_string(), t);
        }
        assert_eq!(AggFn::parse("median"), Err(AggError::UnknownFunction));
        assert_eq!(AggFn::parse("lhist:1:2"), Err(AggError::BadLhist));
        assert_eq!(AggFn::parse("lhist:x:2:1"), Err(AggError::BadLhist));
        assert_eq!(
            AggFn::parse("lhist:0:20:1").unwrap().buckets(),
            22,
            "20 inside, 2 outside"
        );
        assert_eq!(AggFn::parse("lhist:0:10:3").unwrap().buckets(), 6);
    }

    fn apply(tokens: &[&str]) -> Result<Option<AggSpec>, AggError> {
        let mut spec = None;
        let mut pending = AggSpec::new(AggFn::Count);
        for t in tokens {
            assert!(AggSpec::apply_token(&mut spec, &mut pending, t)?);
        }
        AggSpec::finish(spec, &pending)
    }

    #[test]
    fn tokens_and_refusals() {
        let s = apply(&["agg=count", "key=050500", "key=str64:050400"])
            .unwrap()
            .unwrap();
        assert_eq!(s.key_bytes(), 72);
        assert_eq!(s.to_string(), "agg=count key=050500 key=str64:050400");
        let s = apply(&["val=050500", "agg=hist", "budget=4096"])
            .unwrap()
            .unwrap();
        assert_eq!(s.value, Some(prog(&[5, 5, 0])));
        assert_eq!(s.budget, 4096);
        assert_eq!(s.to_string(), "agg=hist val=050500 budget=4096");
        assert_eq!(apply(&["agg=sum"]), Err(AggError::MissingValue("sum")));
        assert_eq!(
            apply(&["agg=count", "val=050500"]),
            Err(AggError::UnexpectedValue)
        );
        assert_eq!(
            apply(&["agg=count", "key=str:050500"]),
            Err(AggError::StringWithoutBound)
        );
        assert_eq!(
            apply(&["agg=count", "key=str65:050500"]),
            Err(AggError::BadStringBound)
        );
        assert_eq!(
            apply(&["agg=count", "key=str64:050500", "key=str64:050500"]),
            Err(AggError::KeyTooLarge)
        );
        assert_eq!(
            apply(&[
                "agg=count",
                "key=050500",
                "key=050500",
                "key=050500",
                "key=050500",
                "key=050500"
            ]),
            Err(AggError::TooManyKeys)
        );
        assert_eq!(
            apply(&["agg=count", "budget=99999999"]),
            Err(AggError::BudgetTooLarge)
        );
        assert_eq!(apply(&["val=050500"]), Err(AggError::NoFunction));
        assert_eq!(apply(&["agg=nope"]), Err(AggError::UnknownFunction));
        assert!(matches!(
            apply(&["agg=count", "key=zz"]),
            Err(AggError::Program(_))
        ));
        let mut spec = None;
        let mut pending = AggSpec::new(AggFn::Count);
        assert_eq!(
            AggSpec::apply_token(&mut spec, &mut pending, "stack=8"),
            Ok(false)
        );
    }

    #[test]
    fn rows_round_trip() {
        let row = MapRow {
            id: 3,
            func: AggFn::Lhist {
                min: -2,
                max: 20,
                step: 2,
            },
            keys: "int,str16",
            entries: 5,
            capacity: 100,
            map_full: 7,
            faults: 1,
            bytes: 4096,
        };
        let text = row.to_string();
        assert_eq!(MapRow::parse(&text), Some(row));
        assert_eq!(MapRow::parse("probe id=1"), None);
        assert_eq!(MapRow::parse("map id=x"), None);

        let mut line = String::new();
        let key = [KeyValue::Int(0x2a), KeyValue::Str(b"/etc/a b")];
        write_entry(
            &mut line,
            3,
            &mut key.iter().copied(),
            Stats {
                count: 4,
                sum: -10,
                min: -7,
                max: 3,
            },
            &mut [(-3, 1u64), (0, 2), (64, 1)].into_iter(),
        )
        .unwrap();
        assert_eq!(
            line,
            "entry id=3 key=0x2a,s2f6574632f612062 count=4 sum=-10 min=-7 max=3 b=-3:1,0:2,64:1\n"
        );
        let e = EntryRow::parse(&line).unwrap();
        assert_eq!(e.stats.sum, -10);
        assert_eq!(e.stats.min, -7);
        let mut parts = Vec::new();
        e.key_parts(&mut |p| {
            parts.push(match p {
                Some(KeyValue::Int(v)) => format!("{v}"),
                Some(KeyValue::Str(s)) => String::from_utf8_lossy(s).into_owned(),
                None => "?".into(),
            })
        });
        assert_eq!(parts, ["42", "/etc/a b"]);
        assert_eq!(e.buckets().collect::<Vec<_>>(), [(-3, 1), (0, 2), (64, 1)]);
        let mut empty = String::new();
        write_entry(
            &mut empty,
            1,
            &mut core::iter::empty(),
            Stats::default(),
            &mut core::iter::empty(),
        )
        .unwrap();
        let e = EntryRow::parse(&empty).unwrap();
        let mut n = 0;
        e.key_parts(&mut |_| n += 1);
        assert_eq!(n, 0);
        assert_eq!(e.buckets().count(), 0);
        // Garbage never panics.
        for g in [
            "entry",
            "entry id=1 key=szz count=1 sum=1 min=1 max=1 b=x:y,1",
        ] {
            if let Some(e) = EntryRow::parse(g) {
                e.key_parts(&mut |_| {});
                let _ = e.buckets().count();
            }
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(hist_key(0), 0);
        assert_eq!(hist_key(1), 1);
        assert_eq!(hist_key(3), 2);
        assert_eq!(hist_key(4), 3);
        assert_eq!(hist_key(-1), -1);
        assert_eq!(hist_key(-2), -2);
        assert_eq!(hist_key(i64::MIN), -64);
        assert_eq!(hist_key(i64::MAX), 63);
        for v in [-100i64, -3, -2, -1, 0, 1, 2, 3, 100, 1 << 40] {
            let (lo, hi) = hist_bounds(hist_key(v));
            assert!(lo <= v as i128 && (v as i128) < hi, "{v}: [{lo}, {hi})");
        }
        assert_eq!(lhist_index(-1, 0, 20, 1, 20), 0);
        assert_eq!(lhist_index(0, 0, 20, 1, 20), 1);
        assert_eq!(lhist_index(19, 0, 20, 1, 20), 20);
        assert_eq!(lhist_index(20, 0, 20, 1, 20), 21);
        assert_eq!(lhist_index(9, 0, 10, 3, 4), 4);
        assert_eq!(lhist_index(i64::MAX, i64::MIN, i64::MAX, u64::MAX, 1), 2);
    }
}
