//! Outer frames against stock gdb: the kernel stopped three frames deep
//! (`sum8` called by `call_sum8` called by `math_worker`; `fib` three
//! levels into its recursion), at the functions' first instruction
//! (`break *FUNC`: gdb's `break FUNC` lands after the prologue inside an
//! inlined `wrapping_add`, and kdbg's `frame N` counts physical frames). gdb stops there, answers `frame N`, `info
//! frame`, `info args` and `info locals` for frames 0..2 and disconnects,
//! leaving the kernel stopped; kdbg attaches to the same stop (`--stopped`)
//! and must agree: the same functions and pcs (`bt`, `up`), the same CFA and
//! caller pc (`info frame`), the same parameters and locals with the same
//! values (`info args`, `info locals` and `print NAME` in the selected
//! frame: location lists at that frame's pc, registers unwound by CFI).

use std::time::Duration;

use serde_json::Value;
use tests::Qemu;
use tests::kdbg::KdbgJson;

const BOOT: Duration = Duration::from_secs(60);
const FRAMES: usize = 3;

/// What gdb said about one frame.
#[derive(Debug, Default)]
struct GdbFrame {
    function: String,
    pc: u64,
    cfa: u64,
    caller_pc: u64,
    args: Vec<(String, String)>,
    locals: Vec<(String, String)>,
}

/// `name = value` lines (`No arguments.`/`No locals.` are empty).
fn vars(section: &str) -> Vec<(String, String)> {
    section
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .filter(|(n, _)| !n.starts_with(' ') && !n.contains(' '))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn hex_after(text: &str, key: &str) -> u64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("no `{key}` in gdb's answer:\n{text}"));
    let rest = &text[at + key.len()..];
    let digits: String = rest
        .trim_start()
        .trim_start_matches("0x")
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&digits, 16).unwrap_or_else(|_| panic!("no number after `{key}`: {text}"))
}

/// The last `::` component, without a Rust hash or a generic tail.
fn short(name: &str) -> String {
    let n = name.split('<').next().unwrap_or(name);
    n.rsplit("::")
        .find(|c| !(c.len() == 17 && c.starts_with('h')))
        .unwrap_or(n)
        .to_string()
}

/// gdb's view of frames 0..FRAMES after `setup`; leaves the kernel stopped.
fn gdb_frames(vm: &mut Qemu, setup: &[&str]) -> Vec<GdbFrame> {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let mut cmds: Vec<String> = setup.iter().map(|s| s.to_string()).collect();
    for n in 0..FRAMES {
        for (tag, cmd) in [
            ("frame", format!("frame {n}")),
            ("info", "info frame".to_string()),
            ("args", "info args".to_string()),
            ("locals", "info locals".to_string()),
        ] {
            cmds.push(format!("echo @@{n} {tag}\\n"));
            cmds.push(cmd);
        }
    }
    cmds.push("echo @@end\\n".into());
    cmds.push("delete".into());
    cmds.push("disconnect".into());
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = tests::gdb::batch_within(
        &vm.config().kernel.clone(),
        addr,
        &[],
        &refs,
        Duration::from_secs(120),
    );
    assert!(out.contains("@@end"), "gdb did not get through:\n{out}");
    let mut frames: Vec<GdbFrame> = (0..FRAMES).map(|_| GdbFrame::default()).collect();
    let section = |n: usize, tag: &str| -> String {
        let start = format!("@@{n} {tag}\n");
        let at = out
            .find(&start)
            .unwrap_or_else(|| panic!("no {start} in gdb's output:\n{out}"));
        let rest = &out[at + start.len()..];
        rest[..rest.find("@@").unwrap_or(rest.len())].to_string()
    };
    for (n, f) in frames.iter_mut().enumerate() {
        let fr = section(n, "frame");
        let first = fr
            .lines()
            .find(|l| l.starts_with('#'))
            .unwrap_or_else(|| panic!("gdb's frame {n}: {fr}"));
        // `#1  0xffff... in kernel::workloads::fib (n=8) at ...` or `#0  fib (n=7) at ...`.
        let body = first[first.find(' ').unwrap_or(0)..].trim();
        let func = match body.find(" in ") {
            Some(i) if body.starts_with("0x") => &body[i + 4..],
            _ => body,
        };
        f.function = short(func.split(" (").next().unwrap_or(func));
        let info = section(n, "info");
        f.pc = hex_after(&info, "rip = ");
        f.cfa = hex_after(&info, "frame at ");
        f.caller_pc = hex_after(&info, "saved rip = ");
        f.args = vars(&section(n, "args"));
        f.locals = vars(&section(n, "locals"));
    }
    frames
}

/// gdb's answers and kdbg's, normalized the way print_gdb.rs documents
/// (no Rust hashes, the last component of `<sym+off>`).
fn same_value(gdb: &str, kdbg: &str) -> bool {
    let norm = |s: &str| -> String {
        let mut out = String::new();
        let mut rest = s.trim();
        while let Some(i) = rest.find("::h") {
            let tail = &rest[i + 3..];
            if tail.len() >= 16 && tail[..16].chars().all(|c| c.is_ascii_hexdigit()) {
                out.push_str(&rest[..i]);
                rest = &tail[16..];
            } else {
                out.push_str(&rest[..i + 3]);
                rest = tail;
            }
        }
        out.push_str(rest);
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    norm(gdb) == norm(kdbg)
}

fn kdbg_vars(v: &Value, key: &str) -> Vec<(String, String)> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {v}"))
        .iter()
        .map(|x| {
            let text = x["text"].as_str().or(x["value"].as_str()).unwrap_or("");
            (
                x["name"].as_str().unwrap_or("").to_string(),
                text.to_string(),
            )
        })
        .collect()
}

/// Compares kdbg with gdb at the stop gdb left; returns the differences and
/// the frames' argument values as kdbg printed them.
fn compare(vm: &Qemu, gdb: &[GdbFrame], what: &str) -> (Vec<String>, Vec<Vec<(String, String)>>) {
    let mut diffs = Vec::new();
    let mut seen_args = Vec::new();
    let mut k = KdbgJson::start(vm, &["--stopped", "--keep-going"]);
    let bt = k.ok("bt", "backtrace");
    let frames = bt["frames"].as_array().expect("frames");
    for (n, g) in gdb.iter().enumerate() {
        let f = &frames[n];
        let fun = short(f["function"].as_str().unwrap_or(""));
        if fun != g.function || f["pc"] != g.pc {
            diffs.push(format!(
                "{what} bt #{n}: gdb {} {:#x}, kdbg {fun} {}",
                g.function, g.pc, f["pc"]
            ));
        }
    }
    for (n, g) in gdb.iter().enumerate() {
        // frame 0, then `up` twice (the selected frame moves).
        let sel = if n == 0 {
            k.ok("frame 0", "frame")
        } else {
            k.ok("up", "frame")
        };
        assert_eq!(sel["frame"]["level"], n, "{sel}");
        if sel["frame"]["pc"] != g.pc {
            diffs.push(format!("{what} up to #{n}: gdb pc {:#x}, kdbg {sel}", g.pc));
        }
        let info = k.ok("info frame", "frame");
        let fr = &info["frame"];
        if fr["cfa"] != g.cfa || fr["caller_pc"] != g.caller_pc {
            diffs.push(format!(
                "{what} info frame #{n}: gdb frame at {:#x} saved rip {:#x}, kdbg cfa {} caller {}",
                g.cfa, g.caller_pc, fr["cfa"], fr["caller_pc"]
            ));
        }
        let args = kdbg_vars(&k.ok("info args", "args"), "args");
        let locals = kdbg_vars(&k.ok("info locals", "locals"), "vars");
        for (label, gv, kv) in [("args", &g.args, &args), ("locals", &g.locals, &locals)] {
            let mut gs = gv.clone();
            let mut ks = kv.clone();
            gs.sort();
            ks.sort();
            let names = |v: &[(String, String)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
            if names(&gs) != names(&ks) || gs.iter().zip(&ks).any(|(a, b)| !same_value(&a.1, &b.1))
            {
                diffs.push(format!(
                    "{what} info {label} #{n} ({}):\n   gdb:  {gs:?}\n   kdbg: {ks:?}",
                    g.function
                ));
            }
        }
        for (name, gval) in g.args.iter().chain(&g.locals) {
            let p = k.run(&format!("print {name}"));
            let mine = if p["ok"] == true {
                p["value"]["text"].as_str().unwrap_or("").to_string()
            } else {
                format!("ERROR {}", p["error"])
            };
            if !same_value(gval, &mine) {
                diffs.push(format!("{what} #{n} print {name}: gdb {gval}, kdbg {mine}"));
            }
        }
        seen_args.push(args);
    }
    // Back down to frame 0: print uses the stop's registers again.
    let d = k.ok("down 2", "frame");
    assert_eq!(d["frame"]["level"], 0, "{d}");
    k.ok("continue", "running");
    for v in k.seen.iter().filter(|v| v["ok"] == false) {
        diffs.push(format!("{what}: kdbg refused: {v}"));
    }
    let _ = k.finish();
    (diffs, seen_args)
}

fn value_of(args: &[(String, String)], name: &str) -> u64 {
    args.iter()
        .find(|a| a.0 == name)
        .and_then(|a| a.1.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {args:?}"))
}

#[test]
fn outer_frames_agree_with_gdb_three_frames_deep() {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("tasks started", BOOT).expect("boot");

    // sum8 <- call_sum8 <- math_worker.
    let g = gdb_frames(&mut vm, &["break *kernel::workloads::sum8", "continue"]);
    assert_eq!(
        g.iter().map(|f| f.function.as_str()).collect::<Vec<_>>(),
        ["sum8", "call_sum8", "math_worker"],
        "{g:?}"
    );
    let (d, args) = compare(&vm, &g, "sum8");
    assert!(d.is_empty(), "kdbg and gdb differ:\n{}", d.join("\n"));
    // call_sum8(i, i + 1, ..., i + 7) passed its own arguments on.
    let a = value_of(&args[1], "a");
    for (k, n) in ["b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        assert_eq!(value_of(&args[1], n), a + k as u64 + 1, "{:?}", args[1]);
        assert_eq!(value_of(&args[0], n), a + k as u64 + 1, "{:?}", args[0]);
    }

    // fib(7) <- fib(8) <- fib(9): the same function three times, n kept
    // in a callee-saved register across the recursive call.
    let g = gdb_frames(
        &mut vm,
        &[
            "break kernel::workloads::fib if n == 9",
            "continue",
            "delete",
            "break kernel::workloads::fib",
            "continue",
            "continue",
        ],
    );
    assert!(g.iter().all(|f| f.function == "fib"), "{g:?}");
    let (d, args) = compare(&vm, &g, "fib");
    assert!(d.is_empty(), "kdbg and gdb differ:\n{}", d.join("\n"));
    for (n, want) in [(0, 7), (1, 8), (2, 9)] {
        assert_eq!(value_of(&args[n], "n"), want, "frame {n}: {:?}", args[n]);
    }

    vm.assert_still_running(Duration::from_millis(300));
}
