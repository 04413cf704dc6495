//! info sym|line|args|breakpoints, ptype, threads, thread.

use anyhow::{Result, anyhow, bail};
use symbols::{ParamLocation, Register, TypeKind};

use super::locate::resolve_all;
use super::state::address_of;
use crate::cmd::Invocation;
use crate::cmd::parse::number;
use crate::output::*;
use crate::regs::RegisterFile;
use crate::session::Session;

pub fn info(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    let (topic, rest) = args.split_first().ok_or_else(|| {
        anyhow!(
            "usage: info sym ADDR | info line LOC | info args | info breakpoints | info registers [REG...] | info threads"
        )
    })?;
    // gdb's names: info registers / all-registers / threads.
    if let Some(r) = crate::exec::postmortem::info_gdb(s, topic, rest) {
        return r;
    }
    match topic.as_str() {
        "sym" | "symbol" => {
            let [loc] = rest else {
                bail!("usage: info sym ADDR")
            };
            let (addr, _) = address_of(s, loc)?;
            let mut frames = Vec::new();
            if let Ok(elf) = s.shared.elf()
                && let Ok(fr) = elf.frames(addr)
                && fr.len() > 1
            {
                frames = fr[..fr.len() - 1]
                    .iter()
                    .map(|f| {
                        let name = f
                            .demangled
                            .clone()
                            .or(f.function.clone())
                            .unwrap_or_default();
                        match &f.location {
                            Some(l) => format!("{name} at {}:{}", l.file, l.line),
                            None => name,
                        }
                    })
                    .collect();
            }
            Ok(Output::Symbol {
                addr,
                symbol: s.shared.symbolize_opt(addr),
                source: s.shared.source_of(addr),
                frames,
            })
        }
        "line" => {
            let [loc] = rest else {
                bail!("usage: info line LOC")
            };
            // Every location (inlined and generic copies) of a file:line.
            let all = resolve_all(&s.shared, loc)?;
            let first = all.first().map(|r| r.addr).unwrap_or(0);
            let src = s.shared.source_of(first);
            Ok(Output::Lines {
                location: src.unwrap_or_else(|| loc.clone()),
                addrs: all
                    .iter()
                    .map(|r| (r.addr, s.shared.describe(r.addr)))
                    .collect(),
            })
        }
        "args" | "locals" | "local" => {
            if s.running() {
                // The registers of a running CPU are stale the moment they
                // are read (as `regs` and `bt`, which need a stop).
                bail!("`info {topic}` needs the kernel stopped: use `interrupt` (or Ctrl-C) first");
            }
            if !s.connected() {
                bail!(
                    "`info {topic}` needs a stopped kernel to read: connect with --connect or --kernel"
                );
            }
            if topic == "args" {
                match super::inspect::info_args_dwarf(s)? {
                    Some(out) => Ok(out),
                    None if s.frame_level == 0 => info_args(s),
                    None => bail!(
                        "no debug information for frame {}: `info args` there needs DWARF",
                        s.frame_level
                    ),
                }
            } else {
                super::inspect::info_vars(s, false)
            }
        }
        "frame" => super::stepping::info_frame(s),
        "skip" => super::stepping::info_skip(s),
        "breakpoints" | "break" | "b" => Ok(Output::Breakpoints {
            breakpoints: crate::exec::conditions::with_counts(
                s,
                s.breakpoints.values().map(|b| b.info.clone()).collect(),
            ),
        }),
        t => bail!(
            "unknown info topic `{t}`: use sym, line, args, breakpoints, registers or threads"
        ),
    }
}

fn info_args(s: &mut Session) -> Result<Output> {
    let regs = s.registers()?;
    // Shapes from DWARF (elf locked only here), then values (memory reads
    // for strings go through the client).
    let (fname, entry, params) = {
        let elf = s.shared.elf()?;
        let f = elf
            .function_at(regs.rip)
            .map_err(|e| anyhow!("no function at {:#x}: {e}", regs.rip))?;
        let params: Vec<(symbols::Param, crate::capture::Shape, bool)> = f
            .params
            .iter()
            .map(|p| {
                let is_str =
                    p.ty.and_then(|t| elf.resolve(t).ok())
                        .is_some_and(|t| t.is_rust_str());
                (
                    p.clone(),
                    crate::capture::shape_of(&elf, p.ty, &p.name),
                    is_str,
                )
            })
            .collect();
        (f.name.clone(), f.entry, params)
    };
    let at_entry = entry == regs.rip;
    let mut args = Vec::new();
    for (p, shape, rust_str) in params {
        let value = match p.location {
            ParamLocation::Register(r) => {
                reg_value(&regs, r).map(|v| render_value(s, v, &shape, None))
            }
            ParamLocation::RegisterPair(a, b) => match (reg_value(&regs, a), reg_value(&regs, b)) {
                (Some(x), Some(y)) if rust_str => Some(render_value(
                    s,
                    x,
                    &crate::capture::Shape::Str { len: None },
                    Some(y),
                )),
                (Some(x), Some(y)) => {
                    Some((serde_json::json!([x, y]), format!("{{{x:#x}, {y:#x}}}")))
                }
                _ => None,
            },
            ParamLocation::Stack { offset } => regs
                .get("rsp")
                .and_then(|sp| {
                    let a = sp.checked_add_signed(offset)?;
                    let b = s.client().ok()?.read_memory(a, 8).ok()?;
                    Some(u64::from_le_bytes(b.try_into().ok()?))
                })
                .filter(|_| at_entry)
                .map(|v| render_value(s, v, &shape, None)),
            ParamLocation::Unavailable => None,
        };
        let (value, text) =
            value.unwrap_or_else(|| (serde_json::Value::Null, "<unavailable>".into()));
        args.push(ArgInfo {
            name: p.name.clone(),
            type_name: p.type_name.clone(),
            location: p.location.to_string(),
            value,
            text,
        });
    }
    Ok(Output::Args {
        function: fname,
        args,
        note: (!at_entry).then(|| {
            format!(
                "(stopped at {}, not at the entry: registers may no longer hold the arguments)",
                s.shared.describe(regs.rip)
            )
        }),
    })
}

/// A value as events show it (JSON value, text); strings are read from the
/// target.
fn render_value(
    s: &Session,
    v: u64,
    shape: &crate::capture::Shape,
    len: Option<u64>,
) -> (serde_json::Value, String) {
    if let crate::capture::Shape::Str { .. } = shape
        && v != 0
    {
        let want = len.map_or(64, |l| l.min(256) as usize);
        if let Ok(mut c) = s.client()
            && let Ok(bytes) = c.read_memory(v, want)
        {
            let n = if len.is_some() {
                bytes.len()
            } else {
                bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len())
            };
            let text = String::from_utf8_lossy(&bytes[..n]).into_owned();
            return (
                text.into(),
                format!("{v:#x} {}", crate::events::quote(&bytes[..n])),
            );
        }
        return (serde_json::Value::Null, format!("{v:#x} <fault>"));
    }
    crate::events::render_number(v, shape, &*s.shared)
}

fn reg_value(r: &RegisterFile, reg: Register) -> Option<u64> {
    r.get(&reg.name())
}

/// The layout of a struct, union or enum (fields with offsets and sizes).
fn layout_text(elf: &symbols::Elf, t: &symbols::Type) -> String {
    let name = t.name.clone().unwrap_or_else(|| "<anonymous>".into());
    let size = t.size.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
    match &t.kind {
        TypeKind::Struct { .. } | TypeKind::Union { .. } => {
            let kw = if matches!(t.kind, TypeKind::Union { .. }) {
                "union"
            } else {
                "struct"
            };
            let mut out = format!("{kw} {name} {{   // {size} bytes");
            for f in t.fields() {
                let fsize =
                    f.ty.and_then(|id| elf.resolve(id).ok())
                        .and_then(|t| t.size)
                        .map(|s| format!(" ({s} bytes)"))
                        .unwrap_or_default();
                out.push_str(&format!(
                    "\n    /* {:>4} */ {}: {},{fsize}",
                    f.offset,
                    f.name.clone().unwrap_or_else(|| "<anon>".into()),
                    elf.type_name(f.ty)
                ));
            }
            out.push_str("\n}");
            out
        }
        TypeKind::Enum { values, .. } => {
            let mut out = format!("enum {name} {{   // {size} bytes");
            for (n, v) in values {
                out.push_str(&format!("\n    {n} = {v},"));
            }
            out.push_str("\n}");
            out
        }
        _ => format!("{}   // {size} bytes", elf.type_name(Some(t.id))),
    }
}

/// `ptype FUNC`, `ptype FUNC:PARAM`, `ptype TYPE` (`TaskRegs`,
/// `kernel::workloads::Request`, `struct foo`).
pub fn ptype(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    if args.is_empty() {
        bail!("usage: ptype FUNC | ptype FUNC:PARAM | ptype TYPE");
    }
    let name = inv.text();
    let (func, param) = match name.rsplit_once(':') {
        Some((f, p)) if !p.is_empty() && !f.ends_with(':') && !f.contains(' ') => (f, Some(p)),
        _ => (name.as_str(), None),
    };
    let elf = s.shared.elf()?;
    let fs = elf.functions_named(func).unwrap_or_default();
    let Some(f) = fs.first() else {
        // Not a function: a variable or expression first, as gdb
        // (`ptype s` is the local `s`, not a type that happens to be `s`).
        if let Ok(out) = super::inspect::ptype_expr(s, &name) {
            return Ok(out);
        }
        // Then a type.
        let ids = elf.types_named(&name).unwrap_or_default();
        let Some(id) = ids.first() else {
            drop(elf);
            // Not a type either: an expression (`ptype req->inner`, `ptype $rsp`).
            if let Ok(out) = super::inspect::ptype_expr(s, &name) {
                return Ok(out);
            }
            let e = super::locate::unknown_symbol(&s.shared, &name);
            bail!("{e} (no function or type of that name)");
        };
        let t = elf
            .type_info(*id)
            .map_err(|e| anyhow!("cannot read type `{name}`: {e}"))?;
        let t = elf.resolve(t.id).unwrap_or(t);
        let mut text = layout_text(&elf, &t);
        // The same type appears once per compilation unit: count the
        // distinct layouts only.
        let mut distinct: Vec<String> = ids
            .iter()
            .filter_map(|i| elf.type_info(*i).ok())
            .map(|t| layout_text(&elf, &elf.resolve(t.id).unwrap_or(t)))
            .collect();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            text.push_str(&format!(
                "\n({} different types have this name; this is the first: give the full path)",
                distinct.len()
            ));
        }
        return Ok(Output::Ptype { text });
    };
    let mut text = String::new();
    match param {
        None => {
            let params: Vec<String> = f
                .params
                .iter()
                .map(|p| format!("{}: {}", p.name, p.type_name))
                .collect();
            text.push_str(&format!(
                "fn {}({}) -> {}",
                f.name,
                params.join(", "),
                f.return_type_name
            ));
            if !f.has_dwarf {
                text.push_str("\n(no DWARF for this function: prototype unknown)");
            }
        }
        Some(p) => {
            let prm = f.params.iter().find(|x| x.name == p).ok_or_else(|| {
                anyhow!(
                    "{} has no parameter `{p}` (it has: {})",
                    f.name,
                    f.params
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            text.push_str(&format!("{}: {}", prm.name, prm.type_name));
            let mut ty = prm.ty.and_then(|t| elf.resolve(t).ok());
            if let Some(TypeKind::Pointer { pointee }) = ty.as_ref().map(|t| t.kind.clone()) {
                ty = pointee.and_then(|t| elf.resolve(t).ok());
            }
            if let Some(t) = ty.filter(|t| {
                matches!(
                    t.kind,
                    TypeKind::Struct { .. } | TypeKind::Union { .. } | TypeKind::Enum { .. }
                )
            }) {
                text.push('\n');
                text.push_str(&layout_text(&elf, &t));
            }
        }
    }
    Ok(Output::Ptype { text })
}

/// `threads`.
pub fn threads(s: &mut Session, inv: &Invocation) -> Result<Output> {
    inv.no_args()?;
    let mut threads = Vec::new();
    if let Ok(text) = s.monitor("tasks") {
        for line in text.lines() {
            if let Ok(t) = proto::reply::TaskRow::parse(line) {
                threads.push(ThreadInfo {
                    id: u64::from(t.id),
                    name: t.name.to_string(),
                    state: t.state.to_string(),
                    current: t.current,
                    selected: s.selected_thread == Some(u64::from(t.id)),
                    cpu: t.cpu,
                });
            }
        }
    }
    if threads.is_empty() {
        let ids = s.client()?.thread_ids()?;
        for tid in ids {
            let name = s.client()?.thread_extra_info(tid).unwrap_or_default();
            let id = crate::session::task_of_tid(tid).unwrap_or(0);
            threads.push(ThreadInfo {
                id,
                name,
                state: "-".into(),
                current: false,
                selected: s.selected_thread == Some(id),
                cpu: None,
            });
        }
    }
    s.shared
        .display
        .learn_tasks(threads.iter().map(|th| (th.id as u32, th.name.clone())));
    Ok(Output::Threads { threads })
}

pub fn thread(s: &mut Session, inv: &Invocation) -> Result<Output> {
    let args = inv.args.as_slice();
    if let Some((first, rest)) = args.split_first()
        && first == "apply"
    {
        return crate::exec::postmortem::thread_apply(s, rest);
    }
    let [n] = args else {
        bail!("usage: thread N (`threads` lists them)")
    };
    let id = number(n)?;
    let tid = crate::session::tid_of_task(id);
    // The stub accepts any id in `Hg` and fails only at the next register
    // read, which would leave every later command failing: check first.
    if !s.client()?.thread_ids()?.contains(&tid) {
        bail!("no task {id}: `threads` lists them");
    }
    s.client()?
        .select_thread(tid)
        .map_err(|e| anyhow!("cannot select thread {id}: {e} (`threads` lists them)"))?;
    s.selected_thread = Some(id);
    s.reset_frame();
    let r = s.registers()?;
    Ok(Output::Message {
        text: format!(
            "thread {id} selected: at {} ({:#x})",
            s.shared.describe(r.rip),
            r.rip
        ),
    })
}
