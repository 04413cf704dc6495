//! Maps and aggregations computed in the kernel: the aggregation part of
//! `kprobe|jprobe|kretprobe ... AGG`, and `maps`, `print @N`, `clear @N`,
//! `zero @N`, `interval S print @N`, maps printed at `quit`.
//!
//! Grammar (after the probe's location and captures, before `if EXPR`):
//!
//! ```text
//! AGG  = count [by KEYS] [budget=BYTES]
//!      | sum|min|max|avg|stats|hist EXPR [by KEYS] [budget=BYTES]
//!      | lhist EXPR MIN MAX STEP [by KEYS] [budget=BYTES]
//! KEYS = KEY [, KEY]...           (at most 4 parts, 96 bytes)
//! KEY  = EXPR | EXPR:string | EXPR:stringN    (a string of at most N bytes, default 64)
//! ```
//!
//! Every expression is compiled at the probe's address into the kernel's
//! bytecode (`expr::compile`, as `if EXPR`): arguments by name, fields
//! through pointers, registers, `$task`, `$cpu`, and in kretprobes `ret`
//! and `$duration`. The map is named `@ID` after its probe.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use proto::agg::{
    AggError, AggFn, AggSpec, EntryRow, FN_NAMES, KeyKind, KeyPart, KeyValue, MAX_KEY_STR, MapRow,
    hist_bounds,
};
use serde::Serialize;

use crate::cmd::Invocation;
use crate::cmd::parse::number;
use crate::events::Bucket;
use crate::output::Output;
use crate::session::{Session, Shared};

/// Default bound of a `:string` key part.
pub const DEFAULT_STRING_KEY: u8 = 64;

/// What the shell knows of a map it set: the text the user gave.
#[derive(Debug, Clone, Default)]
pub struct MapDef {
    pub location: String,
    /// The function's name (`count`, `lhist`, ...).
    pub func: String,
    /// The probe's predicate (`if EXPR`), if any.
    pub pred: Option<String>,
    pub value: Option<String>,
    pub keys: Vec<String>,
}

/// Maps set by this shell, by probe id (the kernel's `maps` is the list;
/// this adds the expressions' text for rendering).
static BOOK: Mutex<BTreeMap<u32, MapDef>> = Mutex::new(BTreeMap::new());

fn book() -> std::sync::MutexGuard<'static, BTreeMap<u32, MapDef>> {
    BOOK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remembers the definition of the map of probe `id`.
pub fn remember(id: u32, def: MapDef) {
    book().insert(id, def);
}

/// `@ID: count() by path:string64` for a map this shell set.
pub fn describe(id: u32) -> Option<String> {
    let b = book();
    let d = b.get(&id)?;
    let what = match &d.value {
        Some(v) => format!("{}({v})", d.func),
        None => format!("{}()", d.func),
    };
    let by = if d.keys.is_empty() {
        String::new()
    } else {
        format!(" by {}", d.keys.join(", "))
    };
    let cond = d
        .pred
        .as_ref()
        .map(|p| format!(" if {p}"))
        .unwrap_or_default();
    Some(format!("@{id}: {what}{by}{cond}"))
}

/// An aggregation parsed from the words of a probe command, before
/// compiling.
#[derive(Debug, Clone, PartialEq)]
pub struct AggText {
    pub func: AggFn,
    pub value: Option<String>,
    /// `(expression, string bound)`.
    pub keys: Vec<(String, Option<u8>)>,
    pub budget: Option<u32>,
}

/// Splits `items` (the words after the location) at the first
/// aggregation function: `(captures, aggregation)`.
pub fn split_agg(items: &[String]) -> Result<(Vec<String>, Option<AggText>)> {
    let Some(at) = items.iter().position(|w| FN_NAMES.contains(&w.as_str())) else {
        return Ok((items.to_vec(), None));
    };
    let before = items[..at].to_vec();
    let func_word = items[at].as_str();
    let mut rest: Vec<String> = Vec::new();
    let mut budget = None;
    for w in &items[at + 1..] {
        if let Some(b) = w.strip_prefix("budget=") {
            let v = number(b)?;
            if v > u64::from(proto::agg::MAX_BUDGET) {
                bail!("{}", AggError::BudgetTooLarge);
            }
            budget = Some(v as u32);
        } else {
            rest.push(w.clone());
        }
    }
    let (val_words, key_words) = match rest.iter().position(|w| w == "by") {
        Some(i) => (rest[..i].to_vec(), Some(rest[i + 1..].join(" "))),
        None => (rest, None),
    };
    let mut val_words = val_words;
    let func = if func_word == "lhist" {
        if val_words.len() < 4 {
            bail!(
                "usage: lhist EXPR MIN MAX STEP (a linear histogram of [MIN, MAX) in steps of STEP)"
            );
        }
        let nums = val_words.split_off(val_words.len() - 3);
        let int = |s: &str| -> Result<i64> {
            let (neg, m) = match s.strip_prefix('-') {
                Some(m) => (true, m),
                None => (false, s),
            };
            let v = i64::try_from(number(m)?).map_err(|_| anyhow!("`{s}` is too large"))?;
            Ok(if neg { -v } else { v })
        };
        AggFn::Lhist {
            min: int(&nums[0])?,
            max: int(&nums[1])?,
            step: number(&nums[2])?,
        }
    } else {
        AggFn::parse(func_word).map_err(|e| anyhow!("{e}"))?
    };
    let value = (!val_words.is_empty()).then(|| val_words.join(" "));
    if let AggFn::Lhist { min, max, step } = func {
        proto::agg::AggFn::parse(&format!("lhist:{min}:{max}:{step}"))
            .ok()
            .filter(|f| f.buckets() > 0)
            .ok_or_else(|| anyhow!("{}", AggError::BadLhist))?;
    }
    match (func.needs_value(), &value) {
        (true, None) => bail!(
            "{} needs a value: {} EXPR [by KEY]",
            func.name(),
            func.name()
        ),
        (false, Some(v)) => bail!("count takes no value (`{v}`): count [by KEY]"),
        _ => {}
    }
    let mut keys = Vec::new();
    if let Some(k) = key_words {
        if k.trim().is_empty() {
            bail!("`by` needs a key: by EXPR[, EXPR...] (EXPR:string for a string)");
        }
        for part in split_top_commas(&k) {
            keys.push(key_part(part.trim())?);
        }
        if keys.len() > proto::agg::MAX_KEY_PARTS {
            bail!("{}", AggError::TooManyKeys);
        }
        let bytes: usize = keys.iter().map(|(_, b)| b.map_or(8, usize::from)).sum();
        if bytes > proto::agg::MAX_KEY_BYTES {
            bail!("{} (this key: {bytes} bytes)", AggError::KeyTooLarge);
        }
    }
    Ok((
        before,
        Some(AggText {
            func,
            value,
            keys,
            budget,
        }),
    ))
}

/// `EXPR`, `EXPR:string`, `EXPR:stringN`.
fn key_part(text: &str) -> Result<(String, Option<u8>)> {
    if text.is_empty() {
        bail!("an empty key part: by EXPR[, EXPR...]");
    }
    if let Some(i) = text.rfind(":string") {
        let expr = text[..i].trim().to_string();
        let n = &text[i + ":string".len()..];
        let bound = if n.is_empty() {
            DEFAULT_STRING_KEY
        } else {
            let n = n.trim_start_matches('[').trim_end_matches(']');
            match number(n) {
                Ok(v) if (1..=MAX_KEY_STR as u64).contains(&v) => v as u8,
                _ => bail!(
                    "`{text}`: a string key's bound is 1..={MAX_KEY_STR} bytes (EXPR:string32)"
                ),
            }
        };
        return Ok((expr, Some(bound)));
    }
    Ok((text.to_string(), None))
}

/// Splits at commas outside parentheses and brackets.
fn split_top_commas(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Compiles an aggregation at `addr` (`ret`: a return probe).
pub fn compile(s: &Session, addr: u64, agg: &AggText, ret: bool) -> Result<AggSpec> {
    let elf = s.shared.elf()?;
    let mut state = crate::session::lock(&s.shared.expr);
    let mut one = |text: &str, what: &str| {
        expr::compile::compile(
            &elf,
            &mut state.env,
            addr,
            text,
            expr::compile::Context { ret },
        )
        .map_err(|e| anyhow!("cannot use `{text}` as {what}: {}", e.render(text)))
    };
    let mut spec = AggSpec::new(agg.func);
    if let Some(v) = &agg.value {
        spec.value = Some(one(v, "a value")?);
    }
    for (k, bound) in &agg.keys {
        let prog = one(k, "a key")?;
        let kind = match bound {
            Some(n) => KeyKind::Str(*n),
            None => KeyKind::Int,
        };
        spec.push_key(KeyPart { kind, prog })
            .map_err(|e| anyhow!("{e}"))?;
    }
    if let Some(b) = agg.budget {
        spec.budget = b;
    }
    spec.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(spec)
}

/// One map as the shell shows it (`--json`: see shell/SCHEMA.md).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MapView {
    /// `@ID`.
    pub name: String,
    pub probe: u32,
    /// The probe's location, when this shell set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub func: String,
    /// The aggregated expression (not for count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The key expressions (or their kinds for a map set elsewhere).
    pub keys: Vec<String>,
    /// The probe's predicate (`if EXPR`), when this shell set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lhist: Option<LhistRange>,
    pub entries: u64,
    pub capacity: u64,
    pub map_full: u64,
    pub faults: u64,
    pub bytes: u64,
    /// Only from `print`: one per key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<MapEntry>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LhistRange {
    pub min: i64,
    pub max: i64,
    pub step: u64,
}

/// One key of a map and its aggregate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MapEntry {
    /// One value per key part: a number or a string.
    pub key: Vec<serde_json::Value>,
    /// The key as the text form shows it.
    pub key_text: String,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Bucket>>,
}

fn view_of(row: &MapRow<'_>) -> MapView {
    let def = book().get(&row.id).cloned();
    let keys = match &def {
        Some(d) => d.keys.clone(),
        None if row.keys == "-" => Vec::new(),
        None => row.keys.split(',').map(str::to_string).collect(),
    };
    MapView {
        name: format!("@{}", row.id),
        probe: row.id,
        location: def.as_ref().map(|d| d.location.clone()),
        func: row.func.name().to_string(),
        pred: def.as_ref().and_then(|d| d.pred.clone()),
        value: def.and_then(|d| d.value),
        keys,
        lhist: match row.func {
            AggFn::Lhist { min, max, step } => Some(LhistRange { min, max, step }),
            _ => None,
        },
        entries: row.entries,
        capacity: row.capacity,
        map_full: row.map_full,
        faults: row.faults,
        bytes: row.bytes,
        rows: None,
    }
}

/// An integer key part as a JSON value and text: signed when it looks
/// signed, hex when it looks like an address.
fn int_key(v: u64, task: bool, shared: &Shared) -> (serde_json::Value, String) {
    let s = v as i64;
    let text = if s.unsigned_abs() >= 1 << 40 {
        format!("{v:#x}")
    } else {
        s.to_string()
    };
    let text = match (task, shared.display.task_name(v as u32)) {
        (true, Some(name)) => format!("{text} ({name})"),
        _ => text,
    };
    let json = if s < 0 && s.unsigned_abs() < 1 << 40 {
        serde_json::json!(s)
    } else {
        serde_json::json!(v)
    };
    (json, text)
}

fn entry_of(e: &EntryRow<'_>, func: AggFn, view: &MapView, shared: &Shared) -> MapEntry {
    let mut key = Vec::new();
    let mut texts = Vec::new();
    let mut i = 0;
    e.key_parts(&mut |p| {
        let task = view.keys.get(i).is_some_and(|k| k.trim() == "$task");
        i += 1;
        match p {
            Some(KeyValue::Int(v)) => {
                let (j, t) = int_key(v, task, shared);
                key.push(j);
                texts.push(t);
            }
            Some(KeyValue::Str(s)) => {
                let t = String::from_utf8_lossy(s).into_owned();
                key.push(serde_json::json!(t));
                texts.push(t);
            }
            None => {
                key.push(serde_json::Value::Null);
                texts.push("?".into());
            }
        }
    });
    let st = e.stats;
    let stat = |f: fn(&proto::agg::Stats) -> i64| (st.count > 0).then(|| f(&st));
    let mut m = MapEntry {
        key,
        key_text: texts.join(", "),
        count: st.count,
        sum: None,
        min: None,
        max: None,
        avg: None,
        buckets: None,
    };
    match func {
        AggFn::Count => {}
        AggFn::Sum => m.sum = Some(st.sum),
        AggFn::Min => m.min = stat(|s| s.min),
        AggFn::Max => m.max = stat(|s| s.max),
        AggFn::Avg => m.avg = stat(|s| s.sum / s.count as i64),
        AggFn::Stats => {
            m.sum = Some(st.sum);
            m.min = stat(|s| s.min);
            m.max = stat(|s| s.max);
            m.avg = stat(|s| s.sum / s.count as i64);
        }
        AggFn::Hist => {
            let got: BTreeMap<i32, u64> = e.buckets().collect();
            m.buckets = Some(match (got.keys().next(), got.keys().next_back()) {
                (Some(&lo), Some(&hi)) => (lo..=hi)
                    .map(|k| {
                        let (low, high) = hist_bounds(k);
                        Bucket {
                            low,
                            high,
                            count: got.get(&k).copied().unwrap_or(0),
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            });
        }
        AggFn::Lhist { min, max, step } => {
            let got: BTreeMap<i32, u64> = e.buckets().collect();
            let n = func.buckets().saturating_sub(2) as i32;
            let mut out = Vec::new();
            if let (Some(&lo), Some(&hi)) = (got.keys().next(), got.keys().next_back()) {
                for k in lo..=hi {
                    let (low, high) = if k == 0 {
                        (i64::MIN as i128, min as i128)
                    } else if k > n {
                        (max as i128, i64::MAX as i128)
                    } else {
                        let low = min as i128 + (k as i128 - 1) * step as i128;
                        (low, (low + step as i128).min(max as i128))
                    };
                    out.push(Bucket {
                        low,
                        high,
                        count: got.get(&k).copied().unwrap_or(0),
                    });
                }
            }
            m.buckets = Some(out);
        }
    }
    m
}

/// The map `@id` with its entries, read from the kernel.
pub fn read_map(shared: &Shared, reply: &str) -> Result<MapView> {
    let mut lines = reply.lines();
    let row = lines.by_ref().find_map(MapRow::parse).ok_or_else(|| {
        anyhow!(
            "the stub did not answer a map row (reply: `{}`)",
            reply.trim()
        )
    })?;
    let mut view = view_of(&row);
    let mut rows: Vec<MapEntry> = lines
        .filter_map(EntryRow::parse)
        .map(|e| entry_of(&e, row.func, &view, shared))
        .collect();
    // Largest first (counts as sorted tables); ties by key.
    rows.sort_by(|a, b| {
        let v = |m: &MapEntry| match row.func {
            AggFn::Sum => m.sum.unwrap_or(0),
            AggFn::Min => m.min.unwrap_or(0),
            AggFn::Max => m.max.unwrap_or(0),
            AggFn::Avg => m.avg.unwrap_or(0),
            _ => m.count as i64,
        };
        v(b).cmp(&v(a)).then_with(|| a.key_text.cmp(&b.key_text))
    });
    view.rows = Some(rows);
    Ok(view)
}

/// The probe id of `@N` (or `N`, `#N`).
pub fn map_id(word: &str) -> Result<u32> {
    let w = word.trim();
    let n = w
        .strip_prefix('@')
        .or_else(|| w.strip_prefix('#'))
        .unwrap_or(w);
    let id = number(n)
        .map_err(|_| anyhow!("bad map name `{word}`: maps are @ID (`maps` lists them)"))?;
    u32::try_from(id).map_err(|_| anyhow!("bad map name `{word}`"))
}

/// Is `text` a map name (`@3`) for `print`?
pub fn is_map_name(text: &str) -> bool {
    let t = text.trim();
    t.len() > 1 && t.starts_with('@') && t[1..].bytes().all(|b| b.is_ascii_digit())
}

fn monitor_map(s: &Session, action: &str, id: u32) -> Result<String> {
    s.monitor(&format!("map {action} {id}"))
        .map_err(|e| anyhow!("@{id}: {e}"))
}

/// `print @N`.
pub fn print_map(s: &Session, text: &str) -> Result<Output> {
    let id = map_id(text)?;
    let reply = monitor_map(s, "print", id)?;
    Ok(Output::Map {
        map: read_map(&s.shared, &reply)?,
    })
}

/// `maps`.
pub fn maps(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    let reply = s.monitor("maps")?;
    let maps = reply
        .lines()
        .filter_map(MapRow::parse)
        .map(|r| view_of(&r))
        .collect();
    Ok(Output::Maps { maps })
}

/// `clear @N...`: removes every key.
pub fn clear(s: &mut Session, inv: &Invocation) -> Result<Output> {
    reset(s, inv, "clear", "cleared")
}

/// `zero @N...`: keeps the keys, zeroes the values.
pub fn zero(s: &mut Session, inv: &Invocation) -> Result<Output> {
    reset(s, inv, "zero", "zeroed")
}

fn reset(s: &Session, inv: &Invocation, action: &str, done: &str) -> Result<Output> {
    if inv.args.is_empty() {
        bail!("usage: {action} @ID... (`maps` lists them)");
    }
    let ids = inv
        .args
        .iter()
        .map(|a| map_id(a))
        .collect::<Result<Vec<u32>>>()?;
    for id in &ids {
        monitor_map(s, action, *id)?;
    }
    Ok(Output::Message {
        text: format!(
            "{done} {}",
            ids.iter()
                .map(|i| format!("@{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The running `interval` printer, if any.
static INTERVAL: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);

/// `interval S print @N...` | `interval off`.
pub fn interval(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let usage = "usage: interval SECONDS print @ID... | interval off";
    let stop_old = || {
        if let Some(f) = INTERVAL.lock().unwrap_or_else(|e| e.into_inner()).take() {
            f.store(true, Ordering::Release);
        }
    };
    match inv.args.as_slice() {
        [off] if off == "off" => {
            stop_old();
            Ok(Output::Message {
                text: "interval printing off".into(),
            })
        }
        [secs, p, maps @ ..] if p == "print" && !maps.is_empty() => {
            let secs: f64 = secs
                .parse()
                .map_err(|_| anyhow!("bad interval `{secs}`: seconds, e.g. 1 or 0.5; {usage}"))?;
            if !(0.1..=3600.0).contains(&secs) {
                bail!("the interval is 0.1 to 3600 seconds");
            }
            let ids = maps
                .iter()
                .map(|a| map_id(a))
                .collect::<Result<Vec<u32>>>()?;
            // Check the maps exist now: one clear error instead of silence.
            for id in &ids {
                monitor_map(s, "print", *id)?;
            }
            stop_old();
            let flag = Arc::new(AtomicBool::new(false));
            *INTERVAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(flag.clone());
            let shared = s.shared.clone();
            let period = Duration::from_secs_f64(secs);
            let names = ids
                .iter()
                .map(|i| format!("@{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            std::thread::spawn(move || {
                loop {
                    let mut slept = Duration::ZERO;
                    while slept < period {
                        if flag.load(Ordering::Acquire) {
                            return;
                        }
                        let step = Duration::from_millis(50).min(period - slept);
                        std::thread::sleep(step);
                        slept += step;
                    }
                    for id in &ids {
                        let reply = shared.with_link(|c| c.monitor(&format!("map print {id}")));
                        let Some(Ok(reply)) = reply else {
                            return;
                        };
                        if reply
                            .lines()
                            .any(|l| proto::reply::ErrorRow::parse(l).is_ok())
                        {
                            return;
                        }
                        if let Ok(view) = read_map(&shared, &reply) {
                            let r = shared.display.render();
                            shared.print_async(r.output("interval", &Output::Map { map: view }));
                        }
                    }
                }
            });
            Ok(Output::Message {
                text: format!("printing {names} every {secs} s (`interval off` ends it)"),
            })
        }
        _ => bail!("{usage}"),
    }
}

/// Every map in the kernel, printed (at `quit`). Errors are ignored: the
/// session is ending.
pub fn print_all_async(s: &Session) {
    let Ok(reply) = s.monitor("maps") else {
        return;
    };
    if let Some(f) = INTERVAL.lock().unwrap_or_else(|e| e.into_inner()).take() {
        f.store(true, Ordering::Release);
    }
    for row in reply.lines().filter_map(MapRow::parse) {
        if let Ok(text) = s.monitor(&format!("map print {}", row.id))
            && let Ok(view) = read_map(&s.shared, &text)
        {
            let r = s.shared.display.render();
            s.shared
                .print_async(r.output("quit", &Output::Map { map: view }));
        }
    }
}

/// The text form of one map.
pub fn map_text(m: &MapView) -> String {
    let what = match (&m.value, m.func.as_str()) {
        (_, "count") => "count()".to_string(),
        (Some(v), f) => format!("{f}({v})"),
        (None, f) => format!("{f}()"),
    };
    let by = if m.keys.is_empty() {
        String::new()
    } else {
        format!(" by {}", m.keys.join(", "))
    };
    let at = m
        .location
        .as_deref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    let at = match &m.pred {
        Some(p) => format!("{at} if {p}"),
        None => at,
    };
    let mut out = format!("{}: {what}{by}{at}", m.name);
    if m.value.as_deref().is_some_and(|v| v.contains("$duration")) {
        out.push_str(" (TSC ticks)");
    }
    let mut notes = Vec::new();
    if m.map_full > 0 {
        notes.push(format!(
            "map full: {} inserts refused ({} of {} entries)",
            m.map_full, m.entries, m.capacity
        ));
    }
    if m.faults > 0 {
        notes.push(format!("{} hits whose key or value faulted", m.faults));
    }
    if !notes.is_empty() {
        out.push_str(&format!(" [{}]", notes.join("; ")));
    }
    let Some(rows) = &m.rows else {
        return out;
    };
    if rows.is_empty() {
        out.push_str("\n  (empty)");
        return out;
    }
    match m.func.as_str() {
        "hist" | "lhist" => {
            for e in rows {
                let b = e.buckets.clone().unwrap_or_default();
                if !m.keys.is_empty() {
                    out.push('\n');
                    out.push_str(&format!("{}[{}]:", m.name, e.key_text));
                }
                out.push('\n');
                out.push_str(histogram_rows(&b).trim_end());
            }
        }
        "count" | "sum" | "min" | "max" | "avg" => {
            let col = m.func.to_uppercase();
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|e| {
                    let v = match m.func.as_str() {
                        "count" => Some(e.count as i64),
                        "sum" => e.sum,
                        "min" => e.min,
                        "max" => e.max,
                        _ => e.avg,
                    };
                    vec![
                        v.map_or("-".into(), |v| v.to_string()),
                        if m.keys.is_empty() {
                            String::new()
                        } else {
                            e.key_text.clone()
                        },
                    ]
                })
                .collect();
            let key = key_header(&m.keys);
            out.push('\n');
            out.push_str(&right_table(&[&col, &key], &table));
        }
        _ => {
            // stats
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|e| {
                    let o = |v: Option<i64>| v.map_or("-".into(), |v| v.to_string());
                    vec![
                        e.count.to_string(),
                        o(e.avg),
                        o(e.sum),
                        o(e.min),
                        o(e.max),
                        e.key_text.clone(),
                    ]
                })
                .collect();
            let key = key_header(&m.keys);
            out.push('\n');
            out.push_str(&right_table(
                &["COUNT", "AVG", "SUM", "MIN", "MAX", &key],
                &table,
            ));
        }
    }
    out
}

/// Histogram rows as the `hist` command draws them; an `lhist`'s
/// outside buckets read `(..., MIN)` and `[MAX, ...)`.
fn histogram_rows(buckets: &[Bucket]) -> String {
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    let mut s = String::new();
    for b in buckets {
        let bar = "@".repeat(((b.count * 52).div_ceil(max)) as usize);
        let range = match (b.low == i64::MIN as i128, b.high == i64::MAX as i128) {
            (true, _) => format!("(..., {})", b.high),
            (_, true) => format!("[{}, ...)", b.low),
            _ => format!("[{}, {})", b.low, b.high),
        };
        s.push_str(&format!("{range:<24} {:>8} |{bar:<52}|\n", b.count));
    }
    s
}

/// The key column's title: the key expressions without `:stringN`.
fn key_header(keys: &[String]) -> String {
    keys.iter()
        .map(|k| match k.rfind(":string") {
            Some(i) => &k[..i],
            None => k.as_str(),
        })
        .collect::<Vec<_>>()
        .join(", ")
        .to_uppercase()
}

/// Numbers right-aligned, the last column (the key) left-aligned.
fn right_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:>width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    for r in rows {
        out.push(line(r.clone()));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn splits_aggregations() {
        let (cap, a) = split_agg(&w("count by path:string")).unwrap();
        assert!(cap.is_empty());
        let a = a.unwrap();
        assert_eq!(a.func, AggFn::Count);
        assert_eq!(a.keys, vec![("path".to_string(), Some(64))]);
        let (_, a) = split_agg(&w("hist $duration")).unwrap();
        assert_eq!(a.unwrap().value.as_deref(), Some("$duration"));
        let (_, a) = split_agg(&w("lhist n 0 20 1")).unwrap();
        let a = a.unwrap();
        assert_eq!(
            a.func,
            AggFn::Lhist {
                min: 0,
                max: 20,
                step: 1
            }
        );
        assert_eq!(a.value.as_deref(), Some("n"));
        let (_, a) = split_agg(&w("sum stack_size by $task budget=4096")).unwrap();
        let a = a.unwrap();
        assert_eq!(a.budget, Some(4096));
        assert_eq!(a.keys, vec![("$task".to_string(), None)]);
        let (_, a) = split_agg(&w("stats n * 2 by f(a, b), x:string16")).unwrap();
        let a = a.unwrap();
        assert_eq!(a.value.as_deref(), Some("n * 2"));
        assert_eq!(
            a.keys,
            vec![("f(a, b)".to_string(), None), ("x".to_string(), Some(16))]
        );
        let (cap, a) = split_agg(&w("path:string flags")).unwrap();
        assert_eq!(cap.len(), 2);
        assert!(a.is_none());
        for (bad, want) in [
            ("sum", "needs a value"),
            ("count n", "count takes no value"),
            ("lhist n 0 20", "usage: lhist"),
            ("lhist n 20 0 1", "MIN < MAX"),
            ("count by", "needs a key"),
            ("count by a, b, c, d, e", "at most 4 parts"),
            ("count by a:string, b:string", "key too large"),
            ("count by a:string0", "bound is 1..=64"),
            ("count budget=99999999", "budget too large"),
        ] {
            let e = split_agg(&w(bad)).unwrap_err().to_string();
            assert!(e.contains(want), "`{bad}`: {e}");
        }
    }

    #[test]
    fn renders_tables_and_histograms() {
        let mut m = MapView {
            name: "@1".into(),
            probe: 1,
            location: Some("sys_open".into()),
            func: "count".into(),
            value: None,
            keys: vec!["path:string64".into()],
            pred: Some("ret < 0".into()),
            lhist: None,
            entries: 2,
            capacity: 10,
            map_full: 3,
            faults: 0,
            bytes: 100,
            rows: Some(vec![
                MapEntry {
                    key: vec![serde_json::json!("/etc/b")],
                    key_text: "/etc/b".into(),
                    count: 12,
                    sum: None,
                    min: None,
                    max: None,
                    avg: None,
                    buckets: None,
                },
                MapEntry {
                    key: vec![serde_json::json!("/a")],
                    key_text: "/a".into(),
                    count: 3,
                    sum: None,
                    min: None,
                    max: None,
                    avg: None,
                    buckets: None,
                },
            ]),
        };
        assert_eq!(
            map_text(&m),
            "@1: count() by path:string64 at sys_open if ret < 0 [map full: 3 inserts refused (2 of 10 entries)]\n  COUNT  PATH\n     12  /etc/b\n      3  /a"
        );
        m.func = "hist".into();
        m.keys.clear();
        m.pred = None;
        m.map_full = 0;
        m.value = Some("$duration".into());
        m.rows = Some(vec![MapEntry {
            key: vec![],
            key_text: String::new(),
            count: 3,
            sum: None,
            min: None,
            max: None,
            avg: None,
            buckets: Some(vec![
                Bucket {
                    low: 4,
                    high: 8,
                    count: 2,
                },
                Bucket {
                    low: 8,
                    high: 16,
                    count: 1,
                },
            ]),
        }]);
        let t = map_text(&m);
        assert!(
            t.starts_with("@1: hist($duration) at sys_open (TSC ticks)\n[4, 8)"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 3, "{t}");
    }

    #[test]
    fn lhist_open_ends() {
        let t = histogram_rows(&[
            Bucket {
                low: i64::MIN as i128,
                high: -20,
                count: 1,
            },
            Bucket {
                low: 0,
                high: i64::MAX as i128,
                count: 2,
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("(..., -20) "), "{t}");
        assert!(lines[1].starts_with("[0, ...) "), "{t}");
        assert_eq!(lines[0].find('|'), lines[1].find('|'), "{t}");
    }

    #[test]
    fn map_names() {
        assert_eq!(map_id("@3").unwrap(), 3);
        assert_eq!(map_id("#4").unwrap(), 4);
        assert!(map_id("@x").is_err());
        assert!(is_map_name("@12"));
        assert!(!is_map_name("@"));
        assert!(!is_map_name("a@2"));
    }
}
