//! kprobe, jprobe, kretprobe, probes, enable/disable/delete.

use anyhow::{Result, anyhow, bail};
use proto::command::{Command as Mon, IdList, Loc, ProbeAction};
use proto::reply::{ErrorRow, OkIdRow, ProbeRow, ProbeType};

use super::locate::{check_code, resolve};
use crate::capture::{self, Layout};
use crate::cmd::Invocation;
use crate::cmd::parse::{number, split_options};
use crate::events::ProbeDef;
use crate::output::{Output, ProbeInfo};
use crate::session::Session;

/// The probe id from an `ok id=N` reply.
fn new_id(reply: &str) -> Result<u32> {
    if let Some(row) = reply.lines().find_map(|l| OkIdRow::parse(l).ok()) {
        return Ok(row.id);
    }
    bail!(
        "the stub did not answer a probe id (reply: `{}`)",
        reply.trim()
    )
}

fn layout_for(
    s: &Session,
    func_addr: u64,
    func_name: &str,
    items: &[String],
    ret: bool,
) -> Result<Layout> {
    let Ok(elf) = s.shared.elf() else {
        return Ok(capture::compile_raw(items, ret)?);
    };
    let f = elf
        .function_at(func_addr)
        .map_err(|e| anyhow!("cannot read the prototype of {func_name}: {e}"))?;
    if !f.has_dwarf {
        return Ok(capture::compile_raw(items, ret)?);
    }
    Ok(capture::compile(&elf, &f, items, ret)?)
}

fn register(s: &Session, def: ProbeDef) -> Output {
    let info = ProbeInfo {
        id: def.id,
        kind: def.kind.to_string(),
        location: def.location.clone(),
        addr: def.addr,
        enabled: true,
        hits: 0,
        nmissed: 0,
        filtered: 0,
        faults: 0,
        path: "-".into(),
        maxactive: None,
        captures: def.layout.items.iter().map(|i| i.label.clone()).collect(),
        map: None,
    };
    // A new probe's counts start at zero, whatever an earlier probe of
    // the same id left.
    s.shared.display.store().reset_probe(def.id);
    s.shared.display.drops().reset(def.id);
    if let Some(e) = s.shared.display.record_probe(&def) {
        s.shared.recording_failed(&e);
    }
    s.shared.probes.insert(def);
    Output::ProbeSet { probe: info }
}

/// Send a probe-setting command, holding back events of the probe until
/// the shell knows how to render them.
fn set_probe(s: &Session, cmd: &str, make: impl FnOnce(u32) -> ProbeDef) -> Result<Output> {
    s.shared.probes.begin_registering();
    let out = s
        .monitor(cmd)
        .and_then(|reply| new_id(&reply))
        .map(|id| register(s, make(id)));
    s.shared.flush_orphans();
    out
}

pub fn kprobe(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let (args, cond) = crate::exec::conditions::split_if_inv(inv);
    let (args, printf) = crate::record::printf::split(&args)?;
    let usage = "usage: kprobe LOC [AGG | printf \"FMT\" ARGS...] [if EXPR] (a symbol, symbol+offset, 0xADDRESS or file:line; AGG: count, sum, hist, ... see `help kprobe`)";
    let Some((loc, rest)) = args.split_first() else {
        bail!("{usage}");
    };
    let (extra, agg) = crate::exec::maps::split_agg(rest)?;
    if let Some(w) = extra.first() {
        bail!(
            "unknown aggregation function `{w}`: use count, sum, min, max, avg, stats, hist or lhist ({usage})"
        );
    }
    if agg.is_some() && printf.is_some() {
        bail!("an aggregating probe prints nothing per hit: use AGG or printf, not both");
    }
    let printf = match printf {
        Some((f, a)) => Some(printf_format(&f, &a, &Layout::default(), false)?),
        None => None,
    };
    let r = resolve(&s.shared, loc)?;
    check_code(&s.shared, &r)?;
    let pred = match &cond {
        Some(text) => Some(crate::exec::conditions::predicate(s, r.addr, text, false)?),
        None => None,
    };
    let spec = match &agg {
        Some(a) => Some(crate::exec::maps::compile(s, r.addr, a, false)?),
        None => None,
    };
    let insn = s.shared.insn_at(r.addr);
    let cmd = Mon::Kprobe {
        loc: Loc::Addr(r.addr),
        pred,
        agg: spec,
    }
    .to_string();
    let location = r.name.clone();
    let out = set_probe(s, &cmd, |id| ProbeDef {
        id,
        kind: "kprobe",
        location: r.name,
        addr: r.addr,
        layout: Layout::default(),
        insn: insn.as_ref().map(|i| i.text.clone()),
        insn_args: insn.map(|i| i.arg_regs).unwrap_or_default(),
        printf,
    })?;
    Ok(remember_map(out, &location, agg.as_ref(), cond.as_deref()))
}

/// Keeps the text of an aggregating probe's map for rendering it, and
/// names the map in the result.
fn remember_map(
    mut out: Output,
    location: &str,
    agg: Option<&crate::exec::maps::AggText>,
    cond: Option<&str>,
) -> Output {
    if let (Output::ProbeSet { probe }, Some(a)) = (&mut out, agg) {
        crate::exec::maps::remember(
            probe.id,
            crate::exec::maps::MapDef {
                location: location.to_string(),
                func: a.func.name().to_string(),
                pred: cond.map(str::to_string),
                value: a.value.clone(),
                keys: a
                    .keys
                    .iter()
                    .map(|(k, b)| match b {
                        Some(n) => format!("{k}:string{n}"),
                        None => k.clone(),
                    })
                    .collect(),
            },
        );
        probe.map = crate::exec::maps::describe(probe.id);
        probe.captures.clear();
    }
    out
}

/// A probe's `printf "FMT" ARGS...` checked against what it captures.
fn printf_format(
    fmt: &str,
    args: &[String],
    layout: &Layout,
    ret: bool,
) -> Result<crate::record::printf::Format> {
    use crate::record::printf::{BUILTINS, Format, Kind};
    let kind_of = |n: &str| -> Option<Kind> {
        if n == "ret" || n == "$duration" {
            return ret.then_some(Kind::Number);
        }
        let item = layout.items.iter().find(|i| i.label == n)?;
        Some(match item.shape {
            capture::Shape::Str { .. } => Kind::Text,
            _ => Kind::Number,
        })
    };
    let mut names: Vec<String> = layout.items.iter().map(|i| i.label.clone()).collect();
    names.push(BUILTINS.to_string());
    Format::parse(fmt, args, &kind_of, &names.join(", ")).map_err(|e| anyhow!(e))
}

/// The capture items a printf needs that `items` lacks (all of them when
/// `items` is empty: a printf probe captures what it prints).
fn printf_items(fmt: &str, args: &[String], items: &[String]) -> Result<Vec<String>> {
    use crate::record::printf::{Format, Kind, capture_names};
    let any = |_: &str| Some(Kind::Number);
    let f = Format::parse(fmt, args, &any, "").map_err(|e| anyhow!(e))?;
    let label = |i: &String| {
        i.strip_suffix(":string")
            .or_else(|| i.strip_suffix(":str"))
            .unwrap_or(i)
            .to_string()
    };
    let have: Vec<String> = items.iter().map(label).collect();
    let mut out = items.to_vec();
    for n in capture_names(&f) {
        if !have.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// `jprobe FUNC [ARGS...]`.
pub fn jprobe(s: &mut Session, inv: &Invocation) -> Result<Output> {
    entry_probe(s, &inv.args, false)
}

/// `kretprobe FUNC [maxactive=N] [ARGS...]`.
pub fn kretprobe(s: &mut Session, inv: &Invocation) -> Result<Output> {
    entry_probe(s, &inv.args, true)
}

/// jprobe and kretprobe: a function entry plus a capture.
fn entry_probe(s: &mut Session, args: &[String], ret: bool) -> Result<Output> {
    let usage = if ret {
        "usage: kretprobe FUNC [maxactive=N] [ARGS...] [printf \"FMT\" ARGS...] [if EXPR]"
    } else {
        "usage: jprobe FUNC [ARGS...] [printf \"FMT\" ARGS...] [if EXPR]"
    };
    let dry_run = args.iter().any(|a| a == "--dry-run");
    let args: Vec<String> = args.iter().filter(|a| *a != "--dry-run").cloned().collect();
    let (args, cond) = crate::exec::conditions::split_if(&args);
    let (args, printf) = crate::record::printf::split(&args)?;
    let (func, rest) = args.split_first().ok_or_else(|| anyhow!(usage))?;
    let (rest, agg) = crate::exec::maps::split_agg(rest)?;
    let (opts, mut items) = split_options(&rest);
    if agg.is_some() && (!items.is_empty() || printf.is_some()) {
        bail!(
            "an aggregating probe records no events, so it captures and prints nothing: drop `{}` (use it in the aggregation or its key)",
            if items.is_empty() {
                "printf".to_string()
            } else {
                items.join(" ")
            }
        );
    }
    if let Some((f, a)) = &printf {
        items = printf_items(f, a, &items)?;
    }
    let mut maxactive = None;
    for (k, v) in opts {
        match k.as_str() {
            "maxactive" if ret => {
                let n = number(&v)?;
                maxactive =
                    Some(u32::try_from(n).map_err(|_| anyhow!("maxactive={n} is too large"))?);
            }
            _ => bail!("unknown option `{k}=`; {usage}"),
        }
    }
    let r = resolve(&s.shared, func)?;
    check_code(&s.shared, &r)?;
    if r.func_start.is_some_and(|f| f != r.addr) {
        bail!(
            "{} is not a function entry: {} probes go on a function's first instruction (use kprobe for other places)",
            r.name,
            if ret { "kretprobe" } else { "jprobe" }
        );
    }
    let pred = match &cond {
        Some(text) => Some(crate::exec::conditions::predicate(s, r.addr, text, ret)?),
        None => None,
    };
    let spec = match &agg {
        Some(a) => Some(crate::exec::maps::compile(s, r.addr, a, ret)?),
        None => None,
    };
    // Aggregation is for hot and recursive functions: room for 64 calls
    // in flight unless the user says otherwise.
    if ret && agg.is_some() && maxactive.is_none() {
        maxactive = Some(64);
    }
    // An aggregating probe captures nothing (its map has what it needs).
    let layout = if agg.is_some() {
        Ok(Layout::default())
    } else {
        layout_for(s, r.addr, &r.name, &items, ret)
    }
    .map_err(|e| {
        // `kretprobe f median ret`: a bare word that is no parameter was
        // probably meant as an aggregation function.
        match items.first() {
            Some(w)
                if items.len() > 1
                    && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && e.to_string().contains("is not a parameter") =>
            {
                anyhow!(
                    "{e}; as an aggregation: unknown aggregation function `{w}` (use count, sum, min, max, avg, stats, hist or lhist)"
                )
            }
            _ => e,
        }
    })?;
    let printf = match &printf {
        Some((f, a)) => Some(printf_format(f, a, &layout, ret)?),
        None => None,
    };
    let cmd = if ret {
        Mon::Kretprobe {
            func: Loc::Addr(r.addr),
            maxactive,
            capture: layout.spec,
            pred,
            agg: spec,
        }
    } else {
        Mon::Jprobe {
            func: Loc::Addr(r.addr),
            capture: layout.spec,
            pred,
            agg: spec,
        }
    };
    if dry_run {
        let items: Vec<String> = layout
            .items
            .iter()
            .map(|i| {
                format!(
                    "{} ({}) <- {:?} as {:?}",
                    i.label, i.type_name, i.source, i.shape
                )
            })
            .collect();
        return Ok(Output::Message {
            text: format!(
                "monitor {cmd}
  {}",
                items.join("\n  ")
            ),
        });
    }
    let location = r.name.clone();
    let out = set_probe(s, &cmd.to_string(), |id| ProbeDef {
        id,
        kind: if ret { "kretprobe" } else { "jprobe" },
        location: r.name,
        addr: r.addr,
        layout,
        insn: None,
        insn_args: Vec::new(),
        printf,
    })?;
    let out = remember_map(out, &location, agg.as_ref(), cond.as_deref());
    s.refresh_tasks();
    Ok(out)
}

/// Bring the probe book in line with the kernel's listing: probes set by
/// someone else (gdb's `monitor`, an earlier session) are adopted, with
/// the capture layout their listed capture tokens and DWARF give; probes
/// gone from the kernel are retired. Returns the listing.
pub fn sync(s: &Session) -> Result<String> {
    let text = s.monitor("probes")?;
    let rows: Vec<ProbeRow> = text
        .lines()
        .filter_map(|l| ProbeRow::parse(l).ok())
        .collect();
    let gone: Vec<u32> = s
        .shared
        .probes
        .ids()
        .into_iter()
        .filter(|id| !rows.iter().any(|r| r.id == *id))
        .collect();
    s.shared.probes.retire(&gone);
    for p in rows.iter().filter(|r| s.shared.probes.get(r.id).is_none()) {
        s.shared.probes.insert(adopted(s, p));
    }
    Ok(text)
}

/// What the shell knows of a probe it did not set.
fn adopted(s: &Session, p: &ProbeRow) -> ProbeDef {
    let location = if p.sym == "-" {
        format!("{:#x}", p.addr)
    } else if p.sym_offset == 0 {
        p.sym.to_string()
    } else {
        format!("{}+{:#x}", p.sym, p.sym_offset)
    };
    let (kind, layout, insn) = match p.kind {
        ProbeType::Kprobe => ("kprobe", Layout::default(), s.shared.insn_at(p.addr)),
        ProbeType::Jprobe | ProbeType::Kretprobe => {
            let ret = p.kind == ProbeType::Kretprobe;
            let elf = s.shared.elf().ok();
            let func = elf.as_ref().and_then(|e| e.function_at(p.addr).ok());
            let dwarf = elf.as_deref().zip(func.as_ref());
            let layout = capture::from_spec(dwarf, &p.capture, ret);
            (if ret { "kretprobe" } else { "jprobe" }, layout, None)
        }
    };
    ProbeDef {
        id: p.id,
        kind,
        location,
        addr: p.addr,
        layout,
        insn: insn.as_ref().map(|i| i.text.clone()),
        insn_args: insn.map(|i| i.arg_regs).unwrap_or_default(),
        printf: None,
    }
}

/// `probes`.
pub fn list(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let verbose = inv.args.iter().any(|a| a == "-v");
    if let Some(a) = inv.args.iter().find(|a| *a != "-v") {
        bail!("`probes` takes no argument `{a}` (only -v)");
    }
    let text = sync(s)?;
    let mut probes = Vec::new();
    for line in text.lines() {
        let Ok(p) = ProbeRow::parse(line) else {
            continue;
        };
        let def = s.shared.probes.get(p.id);
        let def = def.as_ref();
        probes.push(ProbeInfo {
            id: p.id,
            kind: p.kind.as_str().to_string(),
            location: def.map(|d| d.location.clone()).unwrap_or_else(|| {
                if p.sym_offset == 0 {
                    p.sym.to_string()
                } else {
                    format!("{}+{:#x}", p.sym, p.sym_offset)
                }
            }),
            addr: p.addr,
            enabled: p.enabled,
            hits: p.hits,
            nmissed: p.nmissed,
            filtered: p.filtered,
            faults: p.faults,
            path: match p.not_optimized {
                Some(why) if verbose => format!("{} (not optimized: {why})", p.path.as_str()),
                _ => p.path.as_str().to_string(),
            },
            maxactive: (p.maxactive > 0).then_some(p.maxactive),
            captures: def
                .map(|d| d.layout.items.iter().map(|i| i.label.clone()).collect())
                .unwrap_or_default(),
            map: crate::exec::maps::describe(p.id),
        });
    }
    Ok(Output::Probes { probes })
}

pub fn ids(args: &[String]) -> Result<Vec<u32>> {
    if args.is_empty() {
        bail!("give at least one probe id (`probes` lists them)");
    }
    args.iter()
        .map(|a| {
            let n = number(a.trim_start_matches('#'))?;
            u32::try_from(n).map_err(|_| anyhow!("bad probe id `{a}`: `probes` lists them"))
        })
        .collect()
}

/// `enable ID...`.
pub fn enable(s: &mut Session, inv: &Invocation) -> Result<Output> {
    change(s, ProbeAction::Enable, &inv.args)
}

/// `disable ID...`.
pub fn disable(s: &mut Session, inv: &Invocation) -> Result<Output> {
    change(s, ProbeAction::Disable, &inv.args)
}

/// `delete ID...` and `delete break N...`.
pub fn delete(s: &mut Session, inv: &Invocation) -> Result<Output> {
    match inv.args.split_first() {
        Some((w, rest)) if w == "break" || w == "b" => crate::exec::run::delete_breaks(s, rest),
        _ => change(s, ProbeAction::Delete, &inv.args),
    }
}

fn change(s: &mut Session, action: ProbeAction, args: &[String]) -> Result<Output> {
    let mut ids = ids(args)?;
    // `delete 13 13` deletes #13 once.
    let mut seen = std::collections::HashSet::new();
    ids.retain(|i| seen.insert(*i));
    let verb = match action {
        ProbeAction::Enable => "enabled",
        ProbeAction::Disable => "disabled",
        ProbeAction::Delete => "deleted",
    };
    // The stub answers one row per id, in order: `ok id=N` or an error.
    let mut done = Vec::new();
    let mut failed: Vec<(u32, String)> = Vec::new();
    for chunk in ids.chunks(proto::command::MAX_IDS) {
        let mut list = IdList::new();
        for id in chunk {
            list.push(*id).map_err(|e| anyhow!("{e}"))?;
        }
        let reply = s
            .client()?
            .monitor(&Mon::Probe { action, ids: list }.to_string())?;
        let mut rows = reply.lines().filter(|l| !l.trim().is_empty());
        for id in chunk {
            match rows.next() {
                Some(l) => match ErrorRow::parse(l) {
                    Ok(e) => failed.push((*id, e.msg.to_string())),
                    Err(_) => done.push(*id),
                },
                None => failed.push((*id, "the stub did not answer for it".into())),
            }
        }
    }
    if action == ProbeAction::Delete {
        s.shared.probes.retire(&done);
    }
    if !failed.is_empty() {
        let not: Vec<String> = failed
            .iter()
            .map(|(id, why)| format!("#{id}: {why}"))
            .collect();
        let done: Vec<String> = done.iter().map(|i| format!("#{i}")).collect();
        bail!(
            "{}{} (`probes` lists them)",
            if done.is_empty() {
                String::new()
            } else {
                format!("{verb} {}; not ", done.join(", "))
            },
            not.join("; ")
        );
    }
    Ok(Output::ProbesChanged {
        action: verb.into(),
        ids: done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_replies() {
        assert_eq!(new_id("ok id=7\n").unwrap(), 7);
        assert!(new_id("probe id=1").is_err());
        assert_eq!(ids(&["1".into(), "#2".into()]).unwrap(), vec![1, 2]);
        assert!(ids(&[]).is_err());
        assert!(
            ids(&["x".into()])
                .unwrap_err()
                .to_string()
                .contains("bad number")
        );
    }
}
