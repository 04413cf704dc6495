//! Renderers: text (tables; colour only on a tty) and NDJSON (one object
//! per command result and per event; see shell/SCHEMA.md).

use serde_json::json;

use crate::events::{self, EventView};
use crate::output::*;
use crate::regs::GPR_NAMES;

#[derive(Debug, Clone, Copy, Default)]
pub struct Render {
    pub json: bool,
    pub color: bool,
}

impl Render {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }

    /// A command's result (possibly empty text).
    pub fn output(&self, command: &str, o: &Output) -> String {
        if self.json {
            let mut v = serde_json::to_value(o)
                .unwrap_or_else(|e| json!({"type": "none", "error": e.to_string()}));
            if let Some(m) = v.as_object_mut() {
                m.insert("command".into(), command.into());
                m.insert("ok".into(), true.into());
            }
            return v.to_string();
        }
        text(self, o)
    }

    /// A failed command.
    pub fn error(&self, command: &str, where_: Option<&str>, msg: &str) -> String {
        if self.json {
            let mut v = json!({"type": "error", "command": command, "ok": false, "error": msg});
            if let Some(w) = where_ {
                v["at"] = w.into();
            }
            return v.to_string();
        }
        match where_ {
            Some(w) => format!("{w}: {} {msg}", self.red("error:")),
            None => format!("{} {msg}", self.red("error:")),
        }
    }

    pub fn event(&self, v: &EventView) -> String {
        if self.json {
            let mut o = serde_json::to_value(v).unwrap_or_default();
            if let Some(m) = o.as_object_mut() {
                m.insert("type".into(), "event".into());
            }
            return o.to_string();
        }
        let line = events::text(v);
        if self.color && v.printf.is_none() {
            // Colour the bracketed prefix dim.
            if let Some(end) = line.find("] ") {
                return format!("{}{}", self.dim(&line[..=end]), &line[end + 1..]);
            }
        }
        line
    }

    /// A notice (kernel stopped, connection lost, drops).
    pub fn notice(&self, kind: &str, text: &str, extra: serde_json::Value) -> String {
        if self.json {
            let mut v = json!({"type": kind, "text": text});
            if let (Some(m), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                m.extend(e);
            }
            return v.to_string();
        }
        self.yellow(text)
    }
}

/// Left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
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

fn probe_rows(probes: &[ProbeInfo]) -> String {
    // Predicate counters only when some probe has them.
    let pred = probes.iter().any(|p| p.filtered > 0 || p.faults > 0);
    let rows: Vec<Vec<String>> = probes
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.kind.clone(),
                p.location.clone(),
                format!("{:#x}", p.addr),
                if p.enabled { "yes".into() } else { "no".into() },
                p.hits.to_string(),
                p.nmissed.to_string(),
            ]
            .into_iter()
            .chain(pred.then(|| p.filtered.to_string()))
            .chain(pred.then(|| p.faults.to_string()))
            .chain([p.path.clone(), p.captures.join(" ")])
            .collect()
        })
        .collect();
    let mut header = vec![
        "ID", "TYPE", "LOCATION", "ADDRESS", "ENABLED", "HITS", "NMISSED",
    ];
    if pred {
        header.extend(["FILTERED", "FAULTS"]);
    }
    header.extend(["PATH", "CAPTURES"]);
    table(&header, &rows)
}

fn text(r: &Render, o: &Output) -> String {
    match o {
        Output::None | Output::Quit => String::new(),
        Output::Recording { recording } => crate::exec::record::text(recording),
        Output::Message { text } | Output::Help { text } | Output::Ptype { text } => {
            text.trim_end().to_string()
        }
        Output::Monitor { text } => text.trim_end().to_string(),
        Output::Value { value } => match value.number {
            Some(n) => format!("${n} = {}", value.text),
            None => value.text.clone(),
        },
        Output::Displays { displays } => displays
            .iter()
            .map(|d| format!("{}: {} = {}", d.id, d.expr, d.text))
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Locals { vars, params, .. } => {
            if vars.is_empty() {
                if *params {
                    "No arguments.".into()
                } else {
                    "No locals.".into()
                }
            } else {
                vars.iter()
                    .map(|v| format!("{} = {}", v.name, v.value))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        Output::Source { lines, .. } => lines
            .iter()
            .map(|l| {
                format!(
                    "{}{:<8}{}",
                    if l.current { ">" } else { " " },
                    l.line,
                    l.text
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Why { why } => crate::exec::postmortem::render_why(why),
        Output::PostMortem { postmortem } => {
            crate::exec::postmortem::render_postmortem(r, postmortem)
        }
        Output::Dmesg { dmesg } => crate::exec::postmortem::render_dmesg(dmesg),
        Output::Linux { lx } => crate::exec::linux::render(lx),
        Output::CoreDumped { core } => crate::coredump::dump::render_dumped(core),
        Output::ThreadApply { results } => crate::exec::postmortem::render_thread_apply(r, results),
        Output::ProbeSet { probe } => {
            let mut s = format!(
                "{} {} {} at {} ({:#x})",
                r.green(&format!("probe #{}", probe.id)),
                "set:",
                probe.kind,
                probe.location,
                probe.addr
            );
            if let Some(m) = &probe.map {
                s.push_str(&format!(
                    ", aggregating {m} in the kernel (no events: `print @{}`)",
                    probe.id
                ));
            } else if !probe.captures.is_empty() {
                s.push_str(&format!(" capturing {}", probe.captures.join(", ")));
            }
            s
        }
        Output::Probes { probes } => {
            if probes.is_empty() {
                "no probes".into()
            } else {
                probe_rows(probes)
            }
        }
        Output::ProbesChanged { action, ids } => {
            let ids: Vec<String> = ids.iter().map(|i| format!("#{i}")).collect();
            format!("{action} {}", ids.join(" "))
        }
        Output::Events {
            events,
            kept,
            ring,
            received,
            filter,
        } => {
            let mut lines: Vec<String> = events.iter().map(|e| r.event(e)).collect();
            let mut summary = format!(
                "{} shown from the last {kept} kept, {received} received",
                events.len()
            );
            if !filter.is_empty() {
                summary.push_str(&format!(
                    " (filter:{}{})",
                    filter
                        .probe
                        .map(|p| format!(" probe={p}"))
                        .unwrap_or_default(),
                    filter
                        .task
                        .map(|t| format!(" task={t}"))
                        .unwrap_or_default()
                ));
            }
            if let Some(c) = ring {
                summary.push_str(&format!(
                    "; kernel ring: size {}, produced {}, delivered {}, dropped {}",
                    c.size, c.produced, c.delivered, c.dropped
                ));
            }
            lines.push(r.dim(&summary));
            lines.join("\n")
        }
        Output::Maps { maps } => {
            if maps.is_empty() {
                "no maps: aggregate with e.g. `kretprobe sys_open count by path:string`".into()
            } else {
                let rows: Vec<Vec<String>> = maps
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.clone(),
                            m.location
                                .clone()
                                .unwrap_or_else(|| format!("#{}", m.probe)),
                            match &m.value {
                                Some(v) => format!("{}({v})", m.func),
                                None => format!("{}()", m.func),
                            },
                            if m.keys.is_empty() {
                                "-".into()
                            } else {
                                m.keys.join(", ")
                            },
                            format!("{}/{}", m.entries, m.capacity),
                            m.map_full.to_string(),
                            m.faults.to_string(),
                            m.bytes.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "MAP",
                        "PROBE",
                        "AGGREGATE",
                        "BY",
                        "ENTRIES",
                        "MAP_FULL",
                        "FAULTS",
                        "BYTES",
                    ],
                    &rows,
                )
            }
        }
        Output::Map { map } => crate::exec::maps::map_text(map),
        Output::Hist {
            probe,
            what,
            unit,
            buckets,
            events,
            values,
        } => {
            if buckets.is_empty() {
                format!("no events of probe #{probe} yet")
            } else {
                events::histogram_text(
                    &format!(
                        "@{what}[#{probe}] ({unit}): {values} values of all {events} events since the probe was set"
                    ),
                    buckets,
                )
                .trim_end()
                .to_string()
            }
        }
        Output::Waited {
            wanted, received, ..
        } => {
            format!("{received} events arrived (waited for {wanted})")
        }
        Output::WaitedStop {
            already_stopped, ..
        } => if *already_stopped {
            "the kernel was already stopped"
        } else {
            "the kernel is stopped"
        }
        .to_string(),
        Output::Breakpoint { breakpoint: b } => format!(
            "{} at {} ({:#x}){}",
            r.green(&format!("{} {}", b.kind, b.id)),
            b.location,
            b.addr,
            match (&b.condition, b.temporary) {
                (Some(c), true) => format!(" (temporary) if {c}"),
                (Some(c), false) => format!(" if {c}"),
                (None, true) => " (temporary)".into(),
                (None, false) => String::new(),
            }
        ),
        Output::Breakpoints { breakpoints } => {
            if breakpoints.is_empty() {
                return "no breakpoints".into();
            }
            let rows: Vec<Vec<String>> = breakpoints
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.kind.clone(),
                        format!("{:#x}", b.addr),
                        b.location.clone(),
                        if b.temporary {
                            "temp".into()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect();
            let mut text = table(&["NUM", "TYPE", "ADDRESS", "WHAT", ""], &rows);
            for b in breakpoints {
                let lines = crate::exec::conditions::detail_lines(b);
                if !lines.is_empty() {
                    text.push_str(&format!("\nbreakpoint {}:\n{}", b.id, lines.join("\n")));
                }
            }
            text
        }
        Output::Running => "running".into(),
        Output::Stopped { stop } => stop_text(r, stop),
        Output::Stepped { stop, step } => stepped_text(stop, step),
        Output::Frame { frame } => frame_text(frame),
        Output::Regs {
            regs,
            flags,
            location,
            verbose,
        } => {
            let mut s = String::new();
            for (i, name) in GPR_NAMES.iter().enumerate() {
                s.push_str(&format!("{name:<4}{:#018x}", regs.gpr[i]));
                s.push_str(if i % 3 == 2 { "\n" } else { "   " });
            }
            let mut s = s.trim_end().to_string();
            s.push_str(&format!("\n\nrip {:#018x}  {}\n", regs.rip, location));
            s.push_str(&format!(
                "eflags {:#010x}  [ {} ]",
                regs.eflags,
                flags.join(" ")
            ));
            if *verbose {
                s.push('\n');
                let segs: Vec<String> = regs
                    .segments_named()
                    .iter()
                    .map(|(n, v)| format!("{n} {v:#06x}"))
                    .collect();
                s.push_str(&segs.join("  "));
                if let (Some(fs), Some(gs)) = (regs.fs_base, regs.gs_base) {
                    s.push_str(&format!("\nfs_base {fs:#018x}  gs_base {gs:#018x}"));
                }
                for pair in regs.system.chunks(3) {
                    let row: Vec<String> =
                        pair.iter().map(|(n, v)| format!("{n} {v:#018x}")).collect();
                    s.push_str(&format!("\n{}", row.join("  ")));
                }
                if let Some(m) = regs.mxcsr {
                    s.push_str(&format!("\nmxcsr {m:#010x}"));
                }
                for (i, x) in regs.xmm.iter().enumerate() {
                    s.push_str(&format!("\nxmm{i:<2} {x:#034x}"));
                }
            }
            s
        }
        Output::Memory { rows } => rows
            .iter()
            .map(|row| {
                let addr = match &row.label {
                    Some(l) => format!("{:#018x} <{l}>:", row.addr),
                    None => format!("{:#018x}:", row.addr),
                };
                format!("{addr}  {}", row.values.join("  "))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Written { addr, size, value } => {
            format!("wrote {value:#x} ({size} bytes) at {addr:#x}")
        }
        Output::Disas { lines } => {
            let mut out = Vec::new();
            // Columns line up across the listing: marks, address, <symbol+off>:, bytes.
            let mark_w = lines
                .iter()
                .map(|l| l.marks.join(",").len())
                .max()
                .unwrap_or(0);
            let loc_w = lines.iter().map(|l| l.location.len()).max().unwrap_or(0);
            for l in lines {
                if let Some(src) = &l.source {
                    out.push(r.dim(src));
                }
                let marks = l.marks.join(",");
                let loc = format!("<{}>:", l.location);
                out.push(format!(
                    "{marks:>mark_w$} {:#x} {loc:<w$}  {:<24} {}",
                    l.insn.addr,
                    l.insn.bytes,
                    l.insn.text,
                    w = loc_w + 3,
                ));
            }
            out.join("\n")
        }
        Output::Backtrace { frames } => frames
            .iter()
            .map(|f| {
                let mut s = format!("#{:<2} {:#018x} in {}", f.level, f.pc, f.function);
                if f.inlined {
                    s.push_str(" [inlined]");
                }
                if let Some(src) = &f.source {
                    s.push_str(&format!(" at {src}"));
                }
                if f.how == "kretprobe" {
                    s.push_str(" [via kretprobe trampoline]");
                }
                s
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Symbol {
            addr,
            symbol,
            source,
            frames,
        } => {
            let mut s = match symbol {
                Some(n) => format!("{addr:#x} is {n}"),
                None => format!("no symbol matches {addr:#x}"),
            };
            if let Some(src) = source {
                s.push_str(&format!(" at {src}"));
            }
            for f in frames {
                s.push_str(&format!("\n  inlined: {f}"));
            }
            s
        }
        Output::Lines { location, addrs } => {
            if addrs.is_empty() {
                return format!("no code for {location}");
            }
            addrs
                .iter()
                .map(|(a, s)| format!("{location} is at {a:#x} <{s}>"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Output::Args {
            function,
            args,
            note,
        } => {
            let mut s = format!("{function}:");
            if args.is_empty() {
                s.push_str(" no parameters");
            }
            for a in args {
                s.push_str(&format!(
                    "\n  {} {} = {}   ({})",
                    a.type_name, a.name, a.text, a.location
                ));
            }
            if let Some(n) = note {
                s.push_str(&format!("\n{}", r.dim(n)));
            }
            s
        }
        Output::Threads { threads } => {
            let rows: Vec<Vec<String>> = threads
                .iter()
                .map(|t| {
                    vec![
                        if t.selected {
                            "*".into()
                        } else {
                            String::new()
                        },
                        t.id.to_string(),
                        t.name.clone(),
                        t.state.clone(),
                        match (t.current, t.cpu) {
                            (true, Some(c)) => format!("running on cpu {c}"),
                            (true, None) => "running on cpu".into(),
                            (false, Some(c)) => format!("on cpu {c}"),
                            (false, None) => String::new(),
                        },
                    ]
                })
                .collect();
            table(&["S", "ID", "NAME", "STATE", ""], &rows)
        }
    }
}

pub fn stop_text(r: &Render, s: &StopInfo) -> String {
    let mut t = format!(
        "{} {} at {} ({:#x})",
        r.yellow("stopped:"),
        s.reason,
        s.location,
        s.rip
    );
    if let Some(task) = s.task {
        t.push_str(&format!(" task {task}"));
        if let Some(n) = &s.task_name {
            t.push_str(&format!(" ({n})"));
        }
    }
    if let Some(src) = &s.source {
        t.push_str(&format!("\n  {src}"));
    }
    if let Some(i) = &s.insn {
        t.push_str(&format!("\n  => {:#x}: {i}", s.rip));
    }
    t
}

/// A source step's stop as gdb prints it: `LINE\tTEXT`, with the frame
/// line first when the function changed; `finish` adds where it ran out of
/// and the value.
pub fn stepped_text(stop: &StopInfo, step: &crate::output::StepView) -> String {
    let mut t = String::new();
    if let Some(i) = &step.interrupted {
        t.push_str(&interrupted_text(stop, &step.command, i));
    }
    if let Some(from) = &step.run_till {
        t.push_str(&format!("Run till exit from {from}\n"));
    }
    let line_text = match (step.line, &step.text, &step.file) {
        (Some(l), Some(text), _) => Some(format!("{l}\t{text}")),
        (Some(l), None, Some(f)) => Some(format!("{f}:{l}")),
        _ => None,
    };
    if step.function_changed || line_text.is_none() {
        match (&step.file, step.line) {
            (Some(f), Some(l)) => t.push_str(&format!("{} at {f}:{l}\n", step.function)),
            _ => t.push_str(&format!("{} ({:#x})\n", stop.location, stop.rip)),
        }
    }
    if let Some(l) = line_text {
        t.push_str(&l);
    } else if let Some(i) = &stop.insn {
        t.push_str(&format!("=> {:#x}: {i}", stop.rip));
    }
    if let Some(v) = &step.value {
        t.push_str(&format!(
            "\nValue returned: ({}) {v}",
            step.value_type.as_deref().unwrap_or("?")
        ));
    }
    t.trim_end().to_string()
}

/// What an interrupted `step`/`next`/`finish` says before the stop: its
/// task, that task's state, the line it was stepping, and the task the CPU
/// stopped in.
fn interrupted_text(stop: &StopInfo, command: &str, i: &crate::output::StepInterrupted) -> String {
    let task = |id: Option<u64>, name: &Option<String>| match (id, name) {
        (Some(id), Some(n)) => format!("task {id} ({n})"),
        (Some(id), None) => format!("task {id}"),
        _ => "its task".to_string(),
    };
    let state = match i.task_state.as_deref() {
        Some("sleeping") => " is sleeping (blocked)",
        Some("ready") => " is waiting for a CPU",
        Some("running") if i.task == stop.task => " is stopped here",
        Some("running") => " is running on another CPU",
        _ => "",
    };
    let at = match (&i.file, i.line) {
        (Some(f), Some(l)) => format!("{f}:{l} in {}", i.function),
        _ => i.function.clone(),
    };
    let mut t = format!(
        "interrupted: the `{command}` did not finish; the step's {}{state}; it was at {at}\n",
        task(i.task, &i.task_name)
    );
    if i.task != stop.task {
        t.push_str(&format!(
            "the CPU stopped in {}:\n",
            task(stop.task, &stop.task_name)
        ));
    }
    t
}

/// `frame`/`up`/`down` (`#N function at file:line` + the line) and
/// `info frame` (CFA, caller, saved registers).
pub fn frame_text(f: &crate::output::FrameView) -> String {
    let mut t = format!("#{}  {:#x} in {}", f.level, f.pc, f.function);
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        t.push_str(&format!(" at {file}:{line}"));
        if let Some(text) = &f.text {
            t.push_str(&format!("\n{line}\t{text}"));
        }
    }
    if let Some(saved) = &f.saved {
        t.push_str(&format!(
            "\nStack level {}, frame at {}:",
            f.level,
            f.cfa.map_or("?".into(), |c| format!("{c:#x}"))
        ));
        t.push_str(&format!("\n rip = {:#x}", f.pc));
        if let Some(c) = &f.caller {
            t.push_str(&format!(
                "; saved rip = {}",
                f.caller_pc.map_or("?".into(), |p| format!("{p:#x}"))
            ));
            t.push_str(&format!("\n caller: {c}"));
        }
        if let Some(sp) = f.sp {
            t.push_str(&format!("\n rsp = {sp:#x}"));
        }
        if let Some(cfa) = f.cfa {
            t.push_str(&format!("\n Saved registers:\n  rip at {:#x}", cfa - 8));
        }
        for (name, v) in saved.iter().filter(|(n, _)| n != "rip") {
            t.push_str(&format!("\n  {name} (caller's value) = {v:#x}"));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{StepInterrupted, StepView};

    #[test]
    fn an_interrupted_step_names_its_sleeping_task_and_where_the_cpu_stopped() {
        let stop = StopInfo {
            reason: "interrupted".into(),
            task: Some(3),
            task_name: Some("idle".into()),
            rip: 0x1234,
            location: "kernel::sched::idle+0x12".into(),
            source: None,
            insn: Some("hlt".into()),
            stop: Default::default(),
        };
        let step = StepView {
            command: "next".into(),
            function: "kernel::sched::idle".into(),
            function_changed: true,
            file: None,
            line: None,
            text: None,
            frame: None,
            run_till: None,
            value: None,
            value_type: None,
            other_task_hits: 0,
            stub_steps: 3,
            round_trips: 9,
            interrupted: Some(StepInterrupted {
                task: Some(0),
                task_name: Some("main".into()),
                task_state: Some("sleeping".into()),
                function: "kernel::serve::run".into(),
                file: Some("kernel/src/serve.rs".into()),
                line: Some(30),
            }),
        };
        assert_eq!(
            stepped_text(&stop, &step),
            "interrupted: the `next` did not finish; the step's task 0 (main) is sleeping (blocked); it was at kernel/src/serve.rs:30 in kernel::serve::run\n\
             the CPU stopped in task 3 (idle):\n\
             kernel::sched::idle+0x12 (0x1234)\n\
             => 0x1234: hlt"
        );
    }
}
