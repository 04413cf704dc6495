//! Golden tests of the event renderers: a recorded event stream (record
//! lines as the stub sends them) rendered as text and as NDJSON, compared
//! with the snapshot files under tests/golden/ (reviewed in the diff).
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p shell --test golden`.

use std::path::PathBuf;

use proto::event::{Event, EventKind, FetchResult, Record};
use shell::capture::{Item, Layout, Shape, Source};
use shell::events::{self, Clock, Names, ProbeDef};
use shell::render::Render;

struct FixedNames;

impl Names for FixedNames {
    fn task_name(&self, task: u32) -> Option<String> {
        match task {
            1 => Some("init".into()),
            2 => Some("worker-2".into()),
            _ => None,
        }
    }
    fn symbol_at(&self, addr: u64) -> Option<String> {
        (addr == 0x20_1000).then(|| "boot_regs".into())
    }
    fn symbolize(&self, addr: u64) -> Option<String> {
        (0x10_0000..0x10_1000)
            .contains(&addr)
            .then(|| format!("text+{:#x}", addr - 0x10_0000))
    }
}

fn item(label: &str, ty: &str, source: Source, shape: Shape) -> Item {
    Item {
        label: label.into(),
        type_name: ty.into(),
        source,
        shape,
    }
}

fn probes() -> Vec<ProbeDef> {
    let hex = Shape::Unsigned { size: 8, hex: true };
    let dec = Shape::Unsigned {
        size: 8,
        hex: false,
    };
    vec![
        ProbeDef {
            id: 3,
            kind: "jprobe",
            location: "spawn_task".into(),
            addr: 0x10_0100,
            layout: Layout {
                items: vec![
                    item("clone_flags", "u64", Source::Arg(0), hex.clone()),
                    item("stack_start", "u64", Source::Arg(1), hex.clone()),
                    item("regs", "*const TaskRegs", Source::Arg(2), Shape::Pointer),
                    item("stack_size", "u64", Source::Arg(3), dec.clone()),
                    item("parent_tid", "*mut i32", Source::Arg(4), Shape::Pointer),
                    item("child_tid", "*mut i32", Source::Arg(5), Shape::Pointer),
                ],
                ..Default::default()
            },
            insn: None,
            insn_args: vec![],
            printf: None,
        },
        ProbeDef {
            id: 4,
            kind: "kretprobe",
            location: "sys_open".into(),
            addr: 0x10_0200,
            layout: Layout {
                items: vec![
                    item(
                        "path",
                        "*const u8",
                        Source::Result(0),
                        Shape::Str { len: None },
                    ),
                    item(
                        "flags",
                        "u32",
                        Source::Arg(1),
                        Shape::Unsigned { size: 4, hex: true },
                    ),
                    item(
                        "mode",
                        "u32",
                        Source::Arg(2),
                        Shape::Unsigned {
                            size: 4,
                            hex: false,
                        },
                    ),
                ],
                ret: Some(Shape::Signed { size: 8 }),
                ret_type: Some("i64".into()),
                ..Default::default()
            },
            insn: None,
            insn_args: vec![],
            printf: None,
        },
        ProbeDef {
            id: 5,
            kind: "kprobe",
            location: "sys_open+0x4".into(),
            addr: 0x10_0204,
            layout: Layout::default(),
            insn: Some("mov     rbx,rdi".into()),
            insn_args: vec![0],
            printf: None,
        },
        ProbeDef {
            id: 6,
            kind: "jprobe",
            location: "handle_request".into(),
            addr: 0x10_0300,
            layout: Layout {
                items: vec![
                    item(
                        "req->name",
                        "*const u8",
                        Source::Result(1),
                        Shape::Str { len: None },
                    ),
                    item("*len", "i32", Source::Result(2), Shape::Signed { size: 4 }),
                    item("ok", "bool", Source::Arg(2), Shape::Bool),
                    item(
                        "name",
                        "&str",
                        Source::Result(3),
                        Shape::Str {
                            len: Some(Source::Arg(4)),
                        },
                    ),
                ],
                ..Default::default()
            },
            insn: None,
            insn_args: vec![],
            printf: None,
        },
    ]
}

/// The recorded stream: what the stub sent in `stream record` mode.
fn stream() -> Vec<Record> {
    let mut out = Vec::new();
    let mut e = Event::new(3, EventKind::JprobeEntry);
    e.cpu = 0;
    e.task = 2;
    e.tsc = 12_345_678_000;
    e.ip = 0x10_0100;
    e.args = [0x11, 0xffff_8000, 0x20_1000, 4096, 0x1a2b30, 0];
    out.push(Record::Event(e));

    let mut r = Event::new(4, EventKind::KretprobeReturn);
    r.task = 1;
    r.tsc = 12_400_000_000;
    r.ip = 0x10_0200;
    r.args = [0x1688e6, 0, 0o644, 0, 0, 0];
    r.ret = Some((-2i64) as u64);
    r.duration = Some(3100);
    r.push_string(0x1688e6, b"/etc/missing").unwrap();
    out.push(Record::Event(r));

    let mut ok = Event::new(4, EventKind::KretprobeReturn);
    ok.task = 7;
    ok.tsc = 12_500_000_000;
    ok.ip = 0x10_0200;
    ok.args = [0x1688f0, 2, 0, 0, 0, 0];
    ok.ret = Some(5);
    ok.duration = Some(1_250_000);
    ok.push_string(0x1688f0, b"/etc/pass\"wd\n").unwrap();
    out.push(Record::Event(ok));

    let mut k = Event::new(5, EventKind::Kprobe);
    k.tsc = 13_000_000_000;
    k.ip = 0x10_0204;
    k.args = [0x1688e6, 1, 2, 3, 4, 5];
    out.push(Record::Event(k));

    let mut c = Event::new(6, EventKind::Capture);
    c.task = 2;
    c.tsc = 14_000_000_000;
    c.ip = 0x10_0300;
    c.args = [0x30_0000, 0, 1, 0, 5, 0];
    c.push_result(FetchResult::Value(0x30_0040)).unwrap();
    c.push_result(FetchResult::Fault { addr: 0x30_0040 })
        .unwrap();
    c.push_result(FetchResult::Value(0xffff_fff6)).unwrap();
    c.push_string(0x30_0100, b"hello, world").unwrap();
    out.push(Record::Event(c));

    out.push(Record::Drops {
        probe_id: 3,
        dropped: 17,
    });
    out
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, got: &str) {
    let path = dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() || !path.exists() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        got, want,
        "{name} differs; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff"
    );
}

fn render_stream(lines: &str, r: Render) -> String {
    let defs = probes();
    let clock = Clock {
        tsc_hz: Some(1_000_000_000),
        base: None,
        kernel_boot: None,
    };
    let mut out = String::new();
    let mut seq = 0;
    for line in lines.lines() {
        match events::classify(line) {
            events::Line::Record(rec) => match *rec {
                Record::Event(ev) => {
                    seq += 1;
                    let def = defs.iter().find(|d| d.id == ev.probe_id);
                    let v = events::view(seq, &ev, def, &FixedNames, clock);
                    out.push_str(&r.event(&v));
                }
                Record::Drops { probe_id, dropped } => {
                    out.push_str(&format!("drops probe={probe_id} dropped={dropped}"));
                }
            },
            events::Line::BadRecord(e) => out.push_str(&format!("bad record: {e}")),
            events::Line::Text(t) => out.push_str(&format!("text: {t}")),
        }
        out.push('\n');
    }
    out
}

#[test]
fn golden_event_stream() {
    let mut lines = String::new();
    for rec in stream() {
        let mut buf = [0u8; 1024];
        let n = rec.encode_line(&mut buf).unwrap();
        lines.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    // A damaged record and a console line, as a noisy line would bring.
    let mut bad = lines.lines().next().unwrap().to_string();
    bad.replace_range(bad.len() - 2.., "00");
    lines.push_str(&bad);
    lines.push('\n');
    lines.push_str("event id=3 kind=jprobe-entry (text mode line)\n");
    check("stream1.records", &lines);
    let recorded = std::fs::read_to_string(dir().join("stream1.records")).unwrap();
    check(
        "stream1.txt",
        &render_stream(
            &recorded,
            Render {
                json: false,
                color: false,
            },
        ),
    );
    check(
        "stream1.ndjson",
        &render_stream(
            &recorded,
            Render {
                json: true,
                color: false,
            },
        ),
    );
}

#[test]
fn ndjson_lines_parse() {
    let recorded = std::fs::read_to_string(dir().join("stream1.ndjson")).unwrap_or_default();
    for line in recorded.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["type"], "event");
        assert!(v["probe"].is_u64());
    }
}

/// Command results through both renderers (tables, regs, hist, bt, errors).
#[test]
fn golden_command_results() {
    use shell::output::*;
    let probes = Output::Probes {
        probes: vec![
            ProbeInfo {
                id: 1,
                kind: "jprobe".into(),
                location: "spawn_task".into(),
                addr: 0x16fcf0,
                enabled: true,
                hits: 18,
                nmissed: 0,
                filtered: 0,
                faults: 0,
                path: "boosted".into(),
                maxactive: None,
                captures: vec!["clone_flags".into(), "regs->ip".into()],
                map: None,
            },
            ProbeInfo {
                id: 2,
                kind: "kretprobe".into(),
                location: "sys_open".into(),
                addr: 0x16fda0,
                enabled: false,
                hits: 8,
                nmissed: 1,
                filtered: 5,
                faults: 1,
                path: "emulated".into(),
                maxactive: Some(10),
                captures: vec!["path".into()],
                map: None,
            },
        ],
    };
    let mut regs = shell::regs::RegisterFile::default();
    for (i, r) in regs.gpr.iter_mut().enumerate() {
        *r = 0x1000 * i as u64;
    }
    regs.rip = 0x16fcf0;
    regs.eflags = 0x246;
    let regs = Output::Regs {
        flags: shell::regs::decode_eflags(regs.eflags),
        regs,
        location: "spawn_task".into(),
        verbose: false,
    };
    let hist = Output::Hist {
        probe: 2,
        what: "lat".into(),
        unit: "ns".into(),
        buckets: events::histogram(&[20_000, 25_000, 30_000, 70_000, 300_000]),
        events: 5,
        values: 5,
    };
    let bt = Output::Backtrace {
        frames: vec![
            FrameInfo {
                level: 0,
                pc: 0x16fda5,
                function: "sys_open".into(),
                source: Some("kernel/src/workloads/mod.rs:126".into()),
                inlined: false,
                how: "cfi".into(),
            },
            FrameInfo {
                level: 1,
                pc: 0x1691af,
                function: "kernel::workloads::call_sys_open".into(),
                source: Some("kernel/src/workloads/mod.rs:292".into()),
                inlined: true,
                how: "kretprobe".into(),
            },
        ],
    };
    let mut text = String::new();
    let mut json = String::new();
    for (name, o) in [
        ("probes", &probes),
        ("regs", &regs),
        ("hist", &hist),
        ("bt", &bt),
    ] {
        text.push_str(&format!(
            "> {name}\n{}\n",
            Render::default().output(name, o)
        ));
        json.push_str(
            &Render {
                json: true,
                color: false,
            }
            .output(name, o),
        );
        json.push('\n');
    }
    let r = Render::default();
    text.push_str(&format!(
        "{}\n",
        r.error(
            "kprobe",
            Some("s.kdbg:3"),
            "unknown symbol `sys_opn`: did you mean sys_open?"
        )
    ));
    json.push_str(
        &Render {
            json: true,
            color: false,
        }
        .error("kprobe", Some("s.kdbg:3"), "unknown symbol `sys_opn`"),
    );
    json.push('\n');
    check("commands.txt", &text);
    check("commands.ndjson", &json);
}
