//! `print` against stock gdb: for each stop of tests/data/print_gdb.txt, gdb
//! sets a breakpoint, waits for the hit, evaluates every case, and
//! disconnects (the kernel stays stopped); kdbg attaches to the same stop
//! and evaluates the same cases. Normalized answers must be equal, and
//! equal to gdb's recorded answer where the table has one. Then bad input:
//! one clear error line each, and the kernel keeps running.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::Qemu;
use tests::kdbg::KdbgJson;

const BOOT: Duration = Duration::from_secs(60);

struct Case {
    line: usize,
    lang_c: bool,
    /// The kdbg/gdb command (`print EXPR`, `print/x EXPR`, `whatis EXPR`).
    command: String,
    /// gdb's command when it spells the question differently (a kdbg
    /// helper such as `container_of` against gdb's arithmetic).
    gdb_command: Option<String>,
    recorded: Option<String>,
}

struct Stop {
    func: String,
    cases: Vec<Case>,
}

fn table() -> Vec<Stop> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/print_gdb.txt");
    let text = std::fs::read_to_string(path).expect("tests/data/print_gdb.txt");
    let mut stops: Vec<Stop> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(f) = l.strip_prefix('@') {
            stops.push(Stop {
                func: f.trim().to_string(),
                cases: Vec::new(),
            });
            continue;
        }
        let (case, answer) = l
            .split_once(" => ")
            .unwrap_or_else(|| panic!("print_gdb.txt:{}: no ` => ` in `{l}`", i + 1));
        let (lang_c, case) = match case.strip_prefix("c:") {
            Some(rest) => (true, rest.trim()),
            None => (false, case.trim()),
        };
        let command_of = |case: &str| {
            if case.starts_with("whatis ") {
                case.to_string()
            } else if let Some(rest) = case.strip_prefix('/') {
                let (f, e) = rest.split_once(' ').expect("/F EXPR");
                format!("print/{f} {e}")
            } else {
                format!("print {case}")
            }
        };
        let (command, gdb_command) = match case.split_once(" ~~ ") {
            Some((mine, gdbs)) => (command_of(mine.trim()), Some(command_of(gdbs.trim()))),
            None => (command_of(case), None),
        };
        let stop = stops
            .last_mut()
            .unwrap_or_else(|| panic!("print_gdb.txt:{}: case before any `@ FUNC`", i + 1));
        stop.cases.push(Case {
            line: i + 1,
            lang_c,
            command,
            gdb_command,
            recorded: (answer.trim() != "*").then(|| answer.trim().to_string()),
        });
    }
    stops
}

/// The documented normalization: no Rust hashes, `<sym+off>` with the last
/// path component of the symbol, single spaces.
fn normalize(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix('$')
        .and_then(|r| r.split_once(" = ").map(|(_, v)| v))
        .unwrap_or(s);
    let mut out = String::new();
    let mut rest = s;
    // Drop `::h` + 16 hex digits.
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
    // `<a::b::c+4>` -> `<c+4>`.
    let mut res = String::new();
    let mut it = out.as_str();
    while let Some(i) = it.find(" <") {
        res.push_str(&it[..i + 2]);
        let after = &it[i + 2..];
        let end = after.find('>').unwrap_or(after.len());
        let sym = &after[..end];
        let (name, off) = match sym.find('+') {
            Some(p) => (&sym[..p], &sym[p..]),
            None => (sym, ""),
        };
        res.push_str(name.rsplit("::").next().unwrap_or(name));
        res.push_str(off);
        it = &after[end..];
    }
    res.push_str(it);
    res.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// gdb's answers to `cases` at a breakpoint on `func`; leaves the kernel
/// stopped there (`disconnect`).
fn gdb_answers(vm: &mut Qemu, func: &str, cases: &[Case]) -> Vec<Option<String>> {
    let addr = vm.wait_for_stub_port(BOOT).expect("stub port");
    let kernel = vm.config().kernel.clone();
    let out_path = std::env::temp_dir().join(format!("kdbg-print-gdb-{}.txt", std::process::id()));
    let out = File::create(&out_path).expect("gdb output file");
    let mut c = Command::new("gdb");
    c.args(["-batch", "-nx", "-q"]);
    let mut ex = |s: String| {
        c.arg("-ex").arg(s);
    };
    for pre in [
        "set pagination off",
        "set confirm off",
        "set width 0",
        "set remotetimeout 20",
    ] {
        ex(pre.into());
    }
    ex(format!("target remote {addr}"));
    ex(format!("break {func}"));
    ex("continue".into());
    for (i, case) in cases.iter().enumerate() {
        ex(if case.lang_c {
            "set language c".into()
        } else {
            "set language auto".into()
        });
        ex(format!("echo @@{i}\\n"));
        ex(case
            .gdb_command
            .clone()
            .unwrap_or_else(|| case.command.clone()));
    }
    ex("set language auto".into());
    ex("echo @@end\\n".into());
    ex("delete".into());
    ex("disconnect".into());
    c.arg(kernel.as_os_str());
    c.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    let mut child = c.spawn().expect("gdb is installed (apt-get install gdb)");
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("wait for gdb").is_none() {
        assert!(Instant::now() < deadline, "gdb did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&out_path).expect("gdb output");
    let _ = std::fs::remove_file(&out_path);
    assert!(
        !text.contains("internal-error") && !text.contains("Fatal signal"),
        "gdb itself failed:\n{text}"
    );
    assert!(text.contains("@@end"), "gdb did not get through:\n{text}");
    let mut answers = vec![None; cases.len()];
    let mut cur: Option<usize> = None;
    for l in text.lines() {
        if let Some(n) = l.strip_prefix("@@") {
            cur = n.parse().ok();
            continue;
        }
        if let Some(i) = cur
            && answers[i].is_none()
            && (l.starts_with('$') || l.starts_with("type = "))
        {
            answers[i] = Some(l.to_string());
        } else if let Some(i) = cur
            && answers[i].is_none()
            && !l.starts_with("Warning: the current language")
        {
            answers[i] = Some(format!("ERROR {l}"));
        }
    }
    answers
}

fn kdbg_answer(k: &mut KdbgJson, command: &str) -> String {
    let v = k.run(command);
    if v["ok"] != true {
        return format!("ERROR {}", v["error"].as_str().unwrap_or(&v.to_string()));
    }
    match v["type"].as_str() {
        Some("value") => v["value"]["text"].as_str().unwrap_or("").to_string(),
        Some("ptype") => v["text"].as_str().unwrap_or("").to_string(),
        _ => format!("UNEXPECTED {v}"),
    }
}

#[test]
fn print_agrees_with_gdb_at_the_same_stop() {
    let stops = table();
    let total: usize = stops.iter().map(|s| s.cases.len()).sum();
    assert!(total >= 60, "the table has {total} cases, want at least 60");
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("tasks started", BOOT).expect("boot");
    let mut failures = Vec::new();
    for stop in &stops {
        let gdb = gdb_answers(&mut vm, &stop.func, &stop.cases);
        let mut k = KdbgJson::start(&vm, &["--stopped", "--keep-going"]);
        for (case, g) in stop.cases.iter().zip(gdb) {
            let g = g.unwrap_or_else(|| "NO ANSWER".into());
            let lang = if case.lang_c { "c" } else { "auto" };
            k.run(&format!("set language {lang}"));
            let mine = kdbg_answer(&mut k, &case.command);
            let (gn, mn) = (normalize(&g), normalize(&mine));
            if gn != mn {
                failures.push(format!(
                    "print_gdb.txt:{} @{} `{}`:\n   gdb:  {g}\n   kdbg: {mine}",
                    case.line, stop.func, case.command
                ));
            } else if let Some(r) = &case.recorded
                && normalize(r) != mn
            {
                failures.push(format!(
                    "print_gdb.txt:{} @{} `{}`: the table says {r}, gdb and kdbg say {mine}",
                    case.line, stop.func, case.command
                ));
            }
        }
        k.ok("continue", "running");
        let errors: Vec<String> = k
            .seen
            .iter()
            .filter(|v| {
                v["ok"] == false
                    && !v["command"]
                        .as_str()
                        .is_some_and(|c| c == "print" || c == "whatis")
            })
            .map(|v| v.to_string())
            .collect();
        let st = k.finish();
        assert!(st.success(), "kdbg failed ({st}): {errors:?}");
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    vm.assert_still_running(Duration::from_millis(300));
}

#[test]
fn bad_expressions_are_one_clear_error_each_and_the_kernel_runs_on() {
    let mut vm = Qemu::boot("serve kdbg.quiet").expect("boot");
    vm.wait_for_console("tasks started", BOOT).expect("boot");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    k.ok("break sample_walk", "breakpoint");
    let mark = k.mark();
    k.wait_stop(mark);
    let cases: &[(&str, &str)] = &[
        ("print (1 +", "expected an expression, found end of input"),
        ("print 1 +* 2)", "unexpected ')' after the expression"),
        (
            "print nosuch_variable",
            "no symbol 'nosuch_variable' in the current context",
        ),
        (
            "print (*s).idd",
            "no member 'idd' in kernel::workloads::inspect::Sample (did you mean 'id'?)",
        ),
        (
            "print SAMPLE.valeus",
            "no member 'valeus' in kernel::workloads::inspect::Sample (did you mean 'values'?)",
        ),
        ("print *SAMPLE.id", "cannot dereference u32: cast it first"),
        (
            "print SAMPLE + 1",
            "operator '+' needs numbers, but this is kernel::workloads::inspect::Sample",
        ),
        (
            "print *(u64 *)0xdead000000",
            "memory at 0xdead000000 is not readable",
        ),
        ("print PRIMES[1] / 0", "division by zero"),
        ("print PRIMES[1] % (PRIMES[0] - 2)", "division by zero"),
        (
            "print 1 << 99",
            "shift count 99 is out of range for a 32-bit value",
        ),
        (
            "print PRIMES[12]",
            "index 12 is out of bounds (the array has 12 elements)",
        ),
        (
            "print (struct NoSuchType *)0",
            "no type named 'struct NoSuchType'",
        ),
        ("set var PRIMES[0] + 1 = 3", "not an lvalue"),
        ("whatis nosuch.member", "no symbol 'nosuch'"),
        ("x/2gx nosuch_symbol + 8", "no symbol 'nosuch_symbol'"),
        ("print/q 1", "bad format /q"),
        // `as` casts, floats, string literals, suffixes.
        ("print PRIMES[1] as", "expected a type after 'as'"),
        ("print PRIMES[1] as nosuch", "no type named 'nosuch'"),
        ("print SAMPLE as u32", "cannot cast"),
        (
            "print SAMPLE.ratio % 2",
            "operator '%' needs integers, but this is f64",
        ),
        (
            "print ~SAMPLE.ratio",
            "operator '~' needs an integer, not f64",
        ),
        ("print &SAMPLE + 1.5", "cannot add f64 to a pointer"),
        (
            "print PRIMES[SAMPLE.ratio]",
            "array index must be an integer",
        ),
        ("print 1.5e", "invalid number '1.5e'"),
        ("print 12q", "invalid number '12q'"),
        ("print \"abc", "unterminated quote"),
        ("print \"a\\qb\"", "unknown escape '\\q'"),
        // Per-CPU data (arrays indexed by CPU; one CPU online).
        (
            "print $per_cpu(arch::trap::IST_BASE, 3)",
            "cpu 3 is not online (online: 0)",
        ),
        (
            "print $per_cpu(arch::trap::IST_BASE, 16)",
            "cpu 16 is out of range (the array has 16 elements)",
        ),
        (
            "print $per_cpu(PRIMES[0], 0)",
            "$per_cpu needs a per-CPU array",
        ),
        ("print $per_cpu()", "usage: $per_cpu(VAR [, CPU])"),
    ];
    for (cmd, want) in cases {
        let v = k.run(cmd);
        assert_eq!(v["ok"], false, "`{cmd}` should fail: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(
            e.contains(want),
            "`{cmd}`: want `{want}` in the error, got `{e}`"
        );
        assert!(!e.contains('\n'), "`{cmd}`: one line, got `{e}`");
    }
    // Still answering, then the kernel runs on.
    let v = k.ok("print (*s).id + 1", "value");
    assert_eq!(v["value"]["text"], "2", "{v}");
    // $cpu and $per_cpu: this CPU's element of a per-CPU array.
    let v = k.ok("print $cpu", "value");
    assert_eq!(v["value"]["text"], "0", "{v}");
    let direct = k.ok("print arch::trap::IST_BASE[0]", "value");
    for cmd in [
        "print $per_cpu(arch::trap::IST_BASE, 0)",
        "print $per_cpu(arch::trap::IST_BASE)",
        "print arch::trap::IST_BASE[$cpu]",
    ] {
        let v = k.ok(cmd, "value");
        assert_eq!(v["value"]["text"], direct["value"]["text"], "{cmd}: {v}");
        assert_eq!(
            v["value"]["address"], direct["value"]["address"],
            "{cmd}: {v}"
        );
    }
    k.ok("delete break 1", "message");
    k.ok("continue", "running");
    // The exit status counts the failed commands (--keep-going).
    let _ = k.finish();
    vm.assert_still_running(Duration::from_millis(500));
}

#[test]
fn normalization_is_what_the_table_documents() {
    assert_eq!(
        normalize("$3 = (*mut a::b::S) 0x10 <a::b::SAMPLE::h62b930c23e19883d+8>"),
        "(*mut a::b::S) 0x10 <SAMPLE+8>"
    );
    assert_eq!(normalize("  [1,   2]  "), "[1, 2]");
    assert_eq!(normalize("x::hello"), "x::hello");
}

/// Two CPUs: `$cpu` is the CPU that stopped (the one `threads` shows
/// running the current task), `$per_cpu(VAR)` its element.
#[test]
fn per_cpu_helpers_at_two_cpus() {
    let mut vm = Qemu::boot_with("serve kdbg.quiet", |c| c.smp = 2).expect("boot");
    vm.wait_for_console("tasks started", BOOT).expect("boot");
    let mut k = KdbgJson::start(&vm, &["--keep-going"]);
    k.ok("break fib", "breakpoint");
    let mark = k.mark();
    k.wait_stop(mark);
    let online = k.run("print arch::percpu::ONLINE");
    let cpu = k.ok("print $cpu", "value");
    let n: u64 = cpu["value"]["text"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{cpu}"));
    let threads = k.ok("threads", "threads");
    let current = threads["threads"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["current"] == true))
        .unwrap_or_else(|| panic!("no current task: {threads}"));
    assert_eq!(current["cpu"], n, "{threads} / {online}");
    let direct = k.ok(&format!("print arch::trap::IST_BASE[{n}]"), "value");
    let mine = k.ok("print $per_cpu(arch::trap::IST_BASE)", "value");
    assert_eq!(
        mine["value"]["address"], direct["value"]["address"],
        "{mine}"
    );
    // Both CPUs' elements exist, a third CPU is not online.
    for c in 0..2 {
        k.ok(
            &format!("print $per_cpu(arch::trap::IST_BASE, {c})"),
            "value",
        );
    }
    let e = k.run("print $per_cpu(arch::trap::IST_BASE, 2)");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("cpu 2 is not online (online: 0, 1)")),
        "{e} / {online}"
    );
    k.ok("delete break 1", "message");
    k.ok("continue", "running");
    let _ = k.finish();
    vm.assert_still_running(Duration::from_millis(300));
}
