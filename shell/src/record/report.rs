//! `kdbg report FILE [--json] [hist PROBE [WHAT] | count [PROBE] [by FIELD]]`:
//! a recording rendered as the live session showed it, or added up.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use super::agg::{self, Agg};
use super::file::{self, Entry, Recording};
use crate::events::EventView;
use crate::output::Output;
use crate::render::Render;

pub const USAGE: &str =
    "usage: kdbg report FILE [--json] [hist PROBE [lat|ret|ARG] | count [PROBE] [by FIELD]]";

/// The CLI entry: prints to stdout, returns the exit status.
pub fn run(argv: &[String]) -> Result<i32> {
    let json = argv.iter().any(|a| a == "--json");
    let words: Vec<&String> = argv.iter().filter(|a| *a != "--json").collect();
    if let Some(f) = words.iter().find(|w| w.starts_with('-')) {
        bail!("kdbg report has no option `{f}`; {USAGE}");
    }
    let Some((file, rest)) = words.split_first() else {
        bail!("{USAGE}");
    };
    let rec = file::read(Path::new(file.as_str()))?;
    let rest: Vec<&str> = rest.iter().map(|s| s.as_str()).collect();
    let out = match rest.as_slice() {
        [] => report(&rec, json),
        ["hist", probe, what @ ..] if what.len() <= 1 => {
            hist(&rec, probe, what.first().copied(), json)?
        }
        ["count", tail @ ..] => count(&rec, tail, json)?,
        _ => bail!("{USAGE}"),
    };
    // A closed pipe (`kdbg report f | head`) is not an error.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(0)
}

fn probe_line(p: &Value) -> String {
    let mut s = format!(
        "probe #{} {} {}",
        p["id"],
        p["kind"].as_str().unwrap_or("?"),
        p["location"].as_str().unwrap_or("?")
    );
    if let Some(f) = p["printf"]["format"].as_str() {
        let args: Vec<&str> = p["printf"]["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        s.push_str(&format!(" printf \"{f}\" {}", args.join(" ")));
    }
    s.trim_end().to_string()
}

fn totals(rec: &Recording) -> (u64, u64, BTreeMap<u32, u64>) {
    let mut events = 0;
    let mut drops = 0;
    let mut per: BTreeMap<u32, u64> = BTreeMap::new();
    for e in &rec.entries {
        match e {
            Entry::Event(..) => events += 1,
            Entry::Drops { probe, new, .. } => {
                drops += new;
                *per.entry(*probe).or_default() += new;
            }
            Entry::Probe(..) => {}
        }
    }
    (events, drops, per)
}

fn ending(rec: &Recording) -> &'static str {
    if rec.end.is_some() {
        "complete"
    } else if rec.cut_short {
        "cut short: kdbg stopped while writing its last line"
    } else {
        "without its end line: kdbg stopped before `record off` or the end of the session"
    }
}

/// Every entry in order: events as the live session printed them, drops
/// where the kernel reported them.
pub fn report(rec: &Recording, json: bool) -> String {
    let (events, drops, per) = totals(rec);
    let mut out = String::new();
    if json {
        out.push_str(&rec.header_line);
        out.push('\n');
        for e in &rec.entries {
            let line = match e {
                Entry::Event(_, l) | Entry::Probe(_, l) => l,
                Entry::Drops { line, .. } => line,
            };
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(
            &json!({
                "type": "report",
                "events": events,
                "drops": drops,
                "drops_by_probe": per.iter().map(|(p, n)| json!({"probe": p, "dropped": n})).collect::<Vec<_>>(),
                "complete": rec.end.is_some(),
                "cut_short": rec.cut_short,
            })
            .to_string(),
        );
        out.push('\n');
        return out;
    }
    let h = &rec.header;
    let k = &h["kernel"];
    let id = match (k["build_id"].as_str(), k["elf_fnv1a64"].as_str()) {
        (Some(b), _) => format!("build id {b}"),
        (None, Some(f)) => format!("ELF fnv1a64 {f}"),
        _ => "unknown ELF".into(),
    };
    out.push_str(&format!(
        "# recording by kdbg {} of {} ({id})\n",
        h["kdbg"].as_str().unwrap_or("?"),
        k["symbols"].as_str().unwrap_or("an unnamed kernel"),
    ));
    for p in h["probes"].as_array().into_iter().flatten() {
        out.push_str(&format!("# {}\n", probe_line(p)));
    }
    for e in &rec.entries {
        match e {
            Entry::Event(v, _) => out.push_str(&crate::events::text(v)),
            Entry::Drops {
                probe,
                new,
                dropped,
                ..
            } => out.push_str(&format!(
                "# dropped {new} events of probe #{probe} here (kernel ring full; {dropped} in total)"
            )),
            Entry::Probe(p, _) => out.push_str(&format!("# set {}", probe_line(p))),
        }
        out.push('\n');
    }
    let by: Vec<String> = per.iter().map(|(p, n)| format!("#{p}: {n}")).collect();
    out.push_str(&format!(
        "# {events} events, {drops} dropped{}; recording {}\n",
        if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        },
        ending(rec)
    ));
    out
}

fn probe_id(s: &str) -> Result<u32> {
    let n = crate::cmd::parse::number(s.trim_start_matches('#'))?;
    u32::try_from(n).map_err(|_| anyhow!("bad probe id `{s}`"))
}

fn known(rec: &Recording, probe: u32) -> Option<String> {
    let from_header = rec.header["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(rec.entries.iter().filter_map(|e| match e {
            Entry::Probe(p, _) => Some(p),
            _ => None,
        }))
        .find(|p| p["id"] == probe)
        .and_then(|p| p["kind"].as_str().map(String::from));
    from_header.or_else(|| {
        rec.events()
            .find(|v| v.probe == probe)
            .map(|v| v.kind.to_string())
    })
}

/// `hist PROBE [WHAT]` over every event of the recording.
pub fn hist(rec: &Recording, probe: &str, what: Option<&str>, json: bool) -> Result<String> {
    let id = probe_id(probe)?;
    let Some(kind) = known(rec, id) else {
        bail!("the recording has no probe #{id}");
    };
    let mut a = Agg::default();
    for v in rec.events() {
        a.add(v);
    }
    let h = agg::hist(a.probe(id), id, &kind, what)?;
    let r = Render { json, color: false };
    Ok(format!(
        "{}\n",
        r.output(
            "report",
            &Output::Hist {
                probe: id,
                what: h.what,
                unit: h.unit,
                buckets: h.buckets,
                events: h.events,
                values: h.values,
            },
        )
    ))
}

/// The key of one event for `count ... by FIELD` (`None`: the event has
/// no such field).
fn key(v: &EventView, by: &str) -> Option<String> {
    Some(match by {
        "probe" => format!("#{}", v.probe),
        "ret" | "retval" => v.ret.as_ref()?.text.clone(),
        "task" | "$task" => v.task.to_string(),
        "comm" | "$comm" => v
            .task_name
            .clone()
            .unwrap_or_else(|| format!("task{}", v.task)),
        "cpu" | "$cpu" => v.cpu.to_string(),
        "function" | "func" | "$func" => v.function.clone(),
        "printf" => v.printf.clone()?,
        arg => v.args.iter().find(|a| a.name == arg)?.text.clone(),
    })
}

/// `count [PROBE] [by FIELD]`: events per probe, or per value of a field.
pub fn count(rec: &Recording, args: &[&str], json: bool) -> Result<String> {
    let (probe, by) = match args {
        [] => (None, "probe"),
        ["by", f] => (None, *f),
        [p] => (Some(probe_id(p)?), "probe"),
        [p, "by", f] => (Some(probe_id(p)?), *f),
        _ => bail!("usage: kdbg report FILE count [PROBE] [by FIELD]"),
    };
    if let Some(p) = probe
        && known(rec, p).is_none()
    {
        bail!("the recording has no probe #{p}");
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut events = 0u64;
    let mut fields: Vec<String> = Vec::new();
    for v in rec.events().filter(|v| probe.is_none_or(|p| p == v.probe)) {
        events += 1;
        for a in &v.args {
            if !fields.contains(&a.name) {
                fields.push(a.name.clone());
            }
        }
        if let Some(k) = key(v, by) {
            *counts.entry(k).or_default() += 1;
        }
    }
    if counts.is_empty() && events > 0 {
        bail!(
            "the events have no field `{by}`: use probe, ret, task, comm, cpu, function, printf{}{}",
            if fields.is_empty() { "" } else { " or " },
            fields.join(", ")
        );
    }
    let mut rows: Vec<(String, u64)> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if json {
        return Ok(format!(
            "{}\n",
            json!({
                "type": "count",
                "probe": probe,
                "by": by,
                "events": events,
                "rows": rows.iter().map(|(k, n)| json!({"key": k, "count": n})).collect::<Vec<_>>(),
            })
        ));
    }
    let title = match probe {
        Some(p) => format!("@count[#{p} by {by}]: {events} events"),
        None => format!("@count[by {by}]: {events} events"),
    };
    let table = crate::render::table(
        &[by, "count"],
        &rows
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect::<Vec<_>>(),
    );
    Ok(format!("{title}\n{}\n", table.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Layout;
    use crate::events::{ProbeDef, sample};
    use crate::record::file::Recorder;

    fn ev(seq: u64, path: &str, ret: i64) -> EventView {
        EventView {
            seq,
            probe: 1,
            kind: "kretprobe",
            time: Some(seq as f64),
            tsc: seq,
            task: 4,
            task_name: Some("opener".into()),
            function: "sys_open".into(),
            addr: 0x100,
            args: vec![sample::path_arg(path)],
            ret: Some(sample::ret(ret)),
            duration_ns: Some(1000.0 * seq as f64),
            duration_tsc: Some(2000 * seq),
            printf: (seq == 2).then(|| format!("open {path} -> {ret}")),
            ..EventView::default()
        }
    }

    fn recording() -> Recording {
        let d = std::env::temp_dir().join(format!("kdbg-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("r.ndjson");
        let def = ProbeDef {
            id: 1,
            kind: "kretprobe",
            location: "sys_open".into(),
            addr: 0x100,
            layout: Layout::default(),
            insn: None,
            insn_args: Vec::new(),
            printf: None,
        };
        let mut r = Recorder::create(
            &path,
            json!({"symbols": "target/kdbg/kernel", "build_id": null, "elf_fnv1a64": "00ff"}),
            json!({}),
            &[std::sync::Arc::new(def)],
        )
        .unwrap();
        r.event(&ev(1, "/etc/passwd", 3)).unwrap();
        r.event(&ev(2, "/etc/missing", -2)).unwrap();
        r.drops_at(1, 7, 2).unwrap();
        r.event(&ev(3, "/etc/passwd", 4)).unwrap();
        r.finish().unwrap();
        file::read(&path).unwrap()
    }

    /// The text report: expected output.
    #[test]
    fn text_report() {
        let rec = recording();
        let want = "\
# recording by kdbg 0.1.0 of target/kdbg/kernel (ELF fnv1a64 00ff)
# probe #1 kretprobe sys_open
[1.000000 cpu0 opener] #1 sys_open(path=\"/etc/passwd\") = 3 1.0us
open /etc/missing -> -2
# dropped 7 events of probe #1 here (kernel ring full; 7 in total)
[3.000000 cpu0 opener] #1 sys_open(path=\"/etc/passwd\") = 4 3.0us
# 3 events, 7 dropped (#1: 7); recording complete
";
        assert_eq!(
            report(&rec, false),
            want.replace("0.1.0", env!("CARGO_PKG_VERSION"))
        );
        let j = report(&rec, true);
        let lines: Vec<Value> = j
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["recording", "event", "event", "drops", "event", "report"]
        );
        assert_eq!(lines[5]["events"], 3);
        assert_eq!(lines[5]["drops"], 7);
        assert_eq!(lines[3]["after_seq"], 2);
    }

    #[test]
    fn hist_and_count() {
        let rec = recording();
        let h = hist(&rec, "1", Some("ret"), false).unwrap();
        assert!(
            h.starts_with("@ret[#1] (value): 3 values of all 3 events"),
            "{h}"
        );
        let lat = hist(&rec, "1", None, true).unwrap();
        let v: Value = serde_json::from_str(lat.trim()).unwrap();
        assert_eq!(
            (v["what"].as_str(), v["events"].as_u64()),
            (Some("lat"), Some(3))
        );
        assert_eq!(
            hist(&rec, "9", None, false).unwrap_err().to_string(),
            "the recording has no probe #9"
        );
        let c = count(&rec, &["1", "by", "path"], false).unwrap();
        assert_eq!(
            c,
            "@count[#1 by path]: 3 events\npath            count\n\"/etc/passwd\"   2\n\"/etc/missing\"  1\n"
        );
        let c = count(&rec, &[], true).unwrap();
        let v: Value = serde_json::from_str(c.trim()).unwrap();
        assert_eq!(v["rows"], json!([{"key": "#1", "count": 3}]));
        let e = count(&rec, &["by", "nope"], false).unwrap_err().to_string();
        assert_eq!(
            e,
            "the events have no field `nope`: use probe, ret, task, comm, cpu, function, printf or path"
        );
    }
}
